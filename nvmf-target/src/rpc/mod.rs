//! SPDK-compatible JSON-RPC management (`spdk-rpc` drives the target unchanged).
//!
//! [`server`] is the transport (Unix socket, stream of JSON values, ASCII responses);
//! [`params`] decodes `params` objects the way SPDK's decoders do (strict or relaxed);
//! [`methods`] owns the registry of bdevs, lvstores (thin pools) and lvols, and applies
//! NVMe-oF changes to the running target through [`crate::TargetHandle::with_state`];
//! [`config`] replays start-up configurations, persists the daemon's own and reconciles it
//! with the pools.
//!
//! Invariants:
//! * every error a client sees is one of SPDK's code/message pairs (spec §1.9);
//! * a bdev is in exactly one place: the registry, or a namespace of the running target
//!   (then it is "claimed"); removing the namespace gives it back.

pub mod config;
pub mod methods;
pub mod params;
pub mod server;

pub use methods::Rpc;
pub use server::{RpcServer, DEFAULT_SOCKET};

/// A JSON-RPC error: SPDK's code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    pub code: i32,
    pub message: String,
}

/// errno values SPDK puts into `error.code` (negated), with glibc's `strerror` text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Errno {
    Perm = 1,
    NoEnt = 2,
    NoMem = 12,
    Acces = 13,
    Busy = 16,
    Exist = 17,
    NoDev = 19,
    Inval = 22,
    NoSpc = 28,
    NotSup = 95,
}

impl Errno {
    pub fn text(self) -> &'static str {
        match self {
            Errno::Perm => "Operation not permitted",
            Errno::NoEnt => "No such file or directory",
            Errno::NoMem => "Cannot allocate memory",
            Errno::Acces => "Permission denied",
            Errno::Busy => "Device or resource busy",
            Errno::Exist => "File exists",
            Errno::NoDev => "No such device",
            Errno::Inval => "Invalid argument",
            Errno::NoSpc => "No space left on device",
            Errno::NotSup => "Operation not supported",
        }
    }

    fn from_raw(n: i32) -> Option<Self> {
        Some(match n {
            1 => Errno::Perm,
            2 => Errno::NoEnt,
            12 => Errno::NoMem,
            13 => Errno::Acces,
            16 => Errno::Busy,
            17 => Errno::Exist,
            19 => Errno::NoDev,
            22 => Errno::Inval,
            28 => Errno::NoSpc,
            95 => Errno::NotSup,
            _ => return None,
        })
    }
}

impl RpcError {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    /// `-errno` / `strerror(errno)`.
    pub fn errno(e: Errno) -> Self {
        Self::new(-(e as i32), e.text())
    }
    /// `-32602` with the strerror text (lvol failures after validation).
    pub fn params_errno(e: Errno) -> Self {
        Self::new(-32602, e.text())
    }
    /// `-32603` with the strerror text (`bdev_lvol_delete` failures).
    pub fn internal_errno(e: Errno) -> Self {
        Self::new(-32603, e.text())
    }
    pub fn invalid_request() -> Self {
        Self::new(-32600, "Invalid request")
    }
    pub fn method_not_found() -> Self {
        Self::new(-32601, "Method not found")
    }
    pub fn invalid_params() -> Self {
        Self::new(-32602, "Invalid parameters")
    }
    pub fn internal() -> Self {
        Self::new(-32603, "Internal error")
    }
    /// What SPDK's bdev and lvol modules answer when decoding fails.
    pub fn decode_failed() -> Self {
        Self::new(-32603, "spdk_json_decode_object failed")
    }
    /// An OS error as `-errno` + strerror (falls back to -EINVAL style for unknown ones).
    pub fn io(e: &std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(n) => match Errno::from_raw(n) {
                Some(en) => Self::errno(en),
                None => Self::new(-n, e.to_string()),
            },
            None => Self::new(-(Errno::Inval as i32), e.to_string()),
        }
    }
}
