//! NVMe, NVMe-oF and NVMe/TCP wire structures. No I/O happens here.
//!
//! Every structure follows the same shape (CONVENTIONS §2):
//! * a `#[repr(C)]` zerocopy layout (`*Raw`) whose size and field offsets are asserted at
//!   compile time against the byte offsets of `spec/nvme-tcp-target.md`;
//! * a zero-copy view (`*View<T: AsRef<[u8]>>`) with `new_checked`, `check_len`, getters and,
//!   for `T: AsMut<[u8]>`, `set_*`;
//! * a parsed struct with `parse(&[u8])` and `emit(&mut [u8])` plus `Display`.
//!
//! Invariants:
//! * Nothing in this module panics on any input: every length and offset coming from the wire
//!   is validated, failures are typed errors ([`WireError`], [`pdu::FatalError`]).
//! * All multi-byte fields are little-endian (`zerocopy::little_endian`), fields are `u8`,
//!   `u16`, `u32` or `u64`, never `usize`.
//! * View getters never panic even on a view built with `new_unchecked` over a short buffer:
//!   they read as zero (and setters do nothing) when the buffer is too short.

#![forbid(unsafe_code)]

pub mod admin;
pub mod cqe;
pub mod fabrics;
pub mod features;
pub mod identify;
pub mod io;
pub mod log;
pub mod pdu;
pub mod registers;
pub mod sgl;
pub mod sqe;
pub mod status;

use zerocopy::little_endian::{U16, U32, U64};

/// Errors from parsing or emitting a fixed NVMe structure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The buffer is shorter than the structure.
    #[error("{structure}: truncated: need {need} bytes, got {got}")]
    Truncated {
        structure: &'static str,
        need: u64,
        got: u64,
    },
    /// The buffer is longer than the structure allows.
    #[error("{structure}: oversized: at most {max} bytes, got {got}")]
    Oversized {
        structure: &'static str,
        max: u64,
        got: u64,
    },
    /// A field holds a value this implementation does not accept.
    #[error("{structure}: invalid {field} ({value:#x}) at byte {offset}")]
    InvalidField {
        structure: &'static str,
        field: &'static str,
        /// Byte offset of the field within the structure (what an NVMe error location or a
        /// Connect IPO reports).
        offset: u32,
        value: u64,
    },
}

pub(crate) fn check_min_len(
    structure: &'static str,
    buf: &[u8],
    need: usize,
) -> Result<(), WireError> {
    if buf.len() < need {
        return Err(WireError::Truncated {
            structure,
            need: need as u64,
            got: buf.len() as u64,
        });
    }
    Ok(())
}

pub(crate) fn check_exact_len(
    structure: &'static str,
    buf: &[u8],
    len: usize,
) -> Result<(), WireError> {
    check_min_len(structure, buf, len)?;
    if buf.len() > len {
        return Err(WireError::Oversized {
            structure,
            max: len as u64,
            got: buf.len() as u64,
        });
    }
    Ok(())
}

/// Reads a whole fixed layout from a buffer of exactly its size.
pub(crate) fn read_exact<R: zerocopy::FromBytes>(
    structure: &'static str,
    bytes: &[u8],
) -> Result<R, WireError> {
    check_exact_len(structure, bytes, core::mem::size_of::<R>())?;
    R::read_from_bytes(bytes).map_err(|_| WireError::Truncated {
        structure,
        need: core::mem::size_of::<R>() as u64,
        got: bytes.len() as u64,
    })
}

/// Reads a fixed layout from the start of a buffer at least its size.
pub(crate) fn read_prefix<R: zerocopy::FromBytes>(
    structure: &'static str,
    bytes: &[u8],
) -> Result<R, WireError> {
    R::read_from_prefix(bytes)
        .map(|(r, _)| r)
        .map_err(|_| WireError::Truncated {
            structure,
            need: core::mem::size_of::<R>() as u64,
            got: bytes.len() as u64,
        })
}

/// Copies `src` into the prefix of `dst`, failing (never panicking) when `dst` is too short.
pub(crate) fn write_prefix(
    structure: &'static str,
    dst: &mut [u8],
    src: &[u8],
) -> Result<(), WireError> {
    match dst.get_mut(..src.len()) {
        Some(d) => {
            d.copy_from_slice(src);
            Ok(())
        }
        None => Err(WireError::Truncated {
            structure,
            need: src.len() as u64,
            got: dst.len() as u64,
        }),
    }
}

/// Uniform native access to a zerocopy field: lets the view macros treat `u8` and the
/// little-endian wrappers alike.
pub(crate) trait LeField {
    type Native: Copy + Default;
    fn get_native(&self) -> Self::Native;
    fn set_native(&mut self, value: Self::Native);
}

impl LeField for u8 {
    type Native = u8;
    fn get_native(&self) -> u8 {
        *self
    }
    fn set_native(&mut self, value: u8) {
        *self = value;
    }
}

macro_rules! le_field {
    ($le:ty, $native:ty) => {
        impl LeField for $le {
            type Native = $native;
            fn get_native(&self) -> $native {
                self.get()
            }
            fn set_native(&mut self, value: $native) {
                self.set(value)
            }
        }
    };
}
le_field!(U16, u16);
le_field!(U32, u32);
le_field!(U64, u64);

/// Declares a zero-copy view over a zerocopy layout type.
macro_rules! define_view {
    ($(#[$m:meta])* $view:ident, $raw:ty, $name:expr) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $view<T: AsRef<[u8]>> {
            buffer: T,
        }

        impl<T: AsRef<[u8]>> $view<T> {
            /// Size of the structure in bytes.
            pub const LEN: usize = core::mem::size_of::<$raw>();

            /// Wraps a buffer without checking its length (getters read zero past the end).
            pub const fn new_unchecked(buffer: T) -> Self {
                Self { buffer }
            }

            /// Wraps a buffer, checking that it holds the whole structure.
            pub fn new_checked(buffer: T) -> Result<Self, $crate::wire::WireError> {
                let view = Self { buffer };
                view.check_len()?;
                Ok(view)
            }

            /// Checks that the buffer holds the whole structure.
            pub fn check_len(&self) -> Result<(), $crate::wire::WireError> {
                $crate::wire::check_min_len($name, self.buffer.as_ref(), Self::LEN)
            }

            /// Returns the wrapped buffer.
            pub fn into_inner(self) -> T {
                self.buffer
            }

            /// The structure's bytes (the whole wrapped buffer).
            pub fn as_bytes(&self) -> &[u8] {
                self.buffer.as_ref()
            }

            #[allow(dead_code)]
            fn raw(&self) -> Option<&$raw> {
                <$raw as zerocopy::FromBytes>::ref_from_prefix(self.buffer.as_ref())
                    .ok()
                    .map(|(r, _)| r)
            }
        }

        impl<T: AsRef<[u8]> + AsMut<[u8]>> $view<T> {
            #[allow(dead_code)]
            fn raw_mut(&mut self) -> Option<&mut $raw> {
                <$raw as zerocopy::FromBytes>::mut_from_prefix(self.buffer.as_mut())
                    .ok()
                    .map(|(r, _)| r)
            }
        }
    };
}

/// Getters and `set_*` for scalar fields of a view's layout.
macro_rules! view_accessors {
    ($view:ident; $( $(#[$m:meta])* $field:ident / $set:ident : $ty:ty ;)* ) => {
        impl<T: AsRef<[u8]>> $view<T> {
            $(
                $(#[$m])*
                #[inline]
                pub fn $field(&self) -> $ty {
                    self.raw()
                        .map_or(<$ty>::default(), |r| $crate::wire::LeField::get_native(&r.$field))
                }
            )*
        }
        impl<T: AsRef<[u8]> + AsMut<[u8]>> $view<T> {
            $(
                #[doc = concat!("Sets `", stringify!($field), "`.")]
                #[inline]
                pub fn $set(&mut self, value: $ty) {
                    if let Some(r) = self.raw_mut() {
                        $crate::wire::LeField::set_native(&mut r.$field, value)
                    }
                }
            )*
        }
    };
}

/// Getters (`&[u8]`) and `set_*` (copy, truncating or zero-padding) for byte-array fields.
macro_rules! view_bytes {
    ($view:ident; $( $(#[$m:meta])* $field:ident / $set:ident ;)* ) => {
        impl<T: AsRef<[u8]>> $view<T> {
            $(
                $(#[$m])*
                #[inline]
                pub fn $field(&self) -> &[u8] {
                    self.raw().map_or(&[][..], |r| &r.$field[..])
                }
            )*
        }
        impl<T: AsRef<[u8]> + AsMut<[u8]>> $view<T> {
            $(
                #[doc = concat!("Sets `", stringify!($field), "`: copies `value`, zero-fills the rest, truncates if longer.")]
                #[inline]
                pub fn $set(&mut self, value: &[u8]) {
                    if let Some(r) = self.raw_mut() {
                        $crate::wire::fill_bytes(&mut r.$field, value, 0);
                    }
                }
            )*
        }
    };
}

/// Asserts at compile time the size of a layout and the offsets of its fields.
macro_rules! assert_layout {
    ($raw:ty, $size:expr; $($field:ident @ $off:expr),* $(,)?) => {
        const _: () = assert!(core::mem::size_of::<$raw>() == $size);
        $( const _: () = assert!(core::mem::offset_of!($raw, $field) == $off); )*
    };
}

pub(crate) use {assert_layout, define_view, view_accessors, view_bytes};

/// Copies `src` into `dst`, truncating, and fills the remainder with `pad`.
pub(crate) fn fill_bytes(dst: &mut [u8], src: &[u8], pad: u8) {
    let n = src.len().min(dst.len());
    let (head, tail) = dst.split_at_mut(n);
    if let Some(s) = src.get(..n) {
        head.copy_from_slice(s);
    }
    tail.fill(pad);
}

/// An ASCII string field padded with spaces (SN, MN, FR).
pub(crate) fn space_padded<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [b' '; N];
    fill_bytes(&mut out, s.as_bytes(), b' ');
    out
}

/// A NUL-terminated string field, always leaving at least one NUL at the end.
pub(crate) fn nul_padded<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0u8; N];
    let n = s.len().min(N.saturating_sub(1));
    fill_bytes(&mut out, s.as_bytes().get(..n).unwrap_or_default(), 0);
    out
}

/// Reads a NUL-terminated string field. The last byte is treated as a terminator whatever
/// it holds ("force NUL termination"), so at most `N - 1` bytes are returned.
pub(crate) fn nul_terminated(bytes: &[u8]) -> &[u8] {
    let usable = bytes
        .get(..bytes.len().saturating_sub(1))
        .unwrap_or_default();
    match usable.iter().position(|&b| b == 0) {
        Some(end) => usable.get(..end).unwrap_or_default(),
        None => usable,
    }
}

/// Trims trailing spaces and NULs of a padded ASCII field for display.
pub(crate) fn trim_padded(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    let end = bytes
        .iter()
        .rposition(|&b| b != b' ' && b != 0)
        .map_or(0, |p| p + 1);
    String::from_utf8_lossy(bytes.get(..end).unwrap_or_default())
}

#[cfg(test)]
pub(crate) mod testutil {
    /// Writes a little-endian value at `off` in a test fixture buffer.
    pub fn put(buf: &mut [u8], off: usize, bytes: &[u8]) {
        buf[off..off + bytes.len()].copy_from_slice(bytes);
    }
    pub fn put16(buf: &mut [u8], off: usize, v: u16) {
        put(buf, off, &v.to_le_bytes())
    }
    pub fn put32(buf: &mut [u8], off: usize, v: u32) {
        put(buf, off, &v.to_le_bytes())
    }
    pub fn put64(buf: &mut [u8], off: usize, v: u64) {
        put(buf, off, &v.to_le_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_terminated_forces_termination() {
        assert_eq!(nul_terminated(b"abc\0def"), b"abc");
        assert_eq!(nul_terminated(b"abcd"), b"abc");
        assert_eq!(nul_terminated(b""), b"");
        assert_eq!(nul_padded::<4>("abcdef"), *b"abc\0");
        assert_eq!(space_padded::<4>("ab"), *b"ab  ");
        assert_eq!(trim_padded(b"ab  \0"), "ab");
    }

    #[test]
    fn exact_len_errors() {
        assert!(matches!(
            check_exact_len("x", &[0; 3], 4),
            Err(WireError::Truncated {
                need: 4,
                got: 3,
                ..
            })
        ));
        assert!(matches!(
            check_exact_len("x", &[0; 5], 4),
            Err(WireError::Oversized { max: 4, got: 5, .. })
        ));
        assert!(check_exact_len("x", &[0; 4], 4).is_ok());
    }
}

/// Every parser over arbitrary bytes: errors are fine, panics are not.
#[cfg(test)]
mod never_panic {
    use super::*;
    use proptest::prelude::*;

    fn all_parsers(b: &[u8]) {
        let _ = sqe::Sqe::parse(b);
        let _ = cqe::Cqe::parse(b);
        let _ = sgl::SglDescriptor::parse(b);
        let _ = fabrics::ConnectCommand::parse(b);
        let _ = fabrics::ConnectData::parse(b);
        let _ = fabrics::PropertyCommand::parse(b);
        let _ = identify::IdentifyController::parse(b);
        let _ = identify::IdentifyNamespace::parse(b);
        let _ = identify::NsList::parse(b);
        let _ = identify::NsIdDescriptorList::parse(b);
        let _ = identify::IndependentNamespace::parse(b);
        let _ = log::ErrorLogEntry::parse(b);
        let _ = log::SmartLog::parse(b);
        let _ = log::FirmwareSlotLog::parse(b);
        let _ = log::CommandEffectsLog::parse(b);
        let _ = log::DiscoveryLogHeader::parse(b);
        let _ = log::DiscoveryLogEntry::parse(b);
        let _ = io::DsmRange::parse(b);
        let _ = pdu::CommonHeader::parse(b);
        let _ = pdu::TermReq::parse(b);
        for cfg in [pdu::RxConfig::controller(), pdu::RxConfig::host()] {
            let _ = pdu::Pdu::parse(b, &cfg);
        }
        // Views over short buffers read zero and ignore writes.
        let mut owned = b.to_vec();
        let mut v = sqe::SqeView::new_unchecked(&mut owned[..]);
        v.set_cdw15(1);
        let _ = v.cdw15();
        let iv = identify::IdentifyControllerView::new_unchecked(b);
        let _ = (iv.sn(), iv.nn(), iv.subnqn());
        if let Ok(s) = sqe::Sqe::parse(b.get(..64).unwrap_or_default()) {
            let dsm = io::DsmCommand::from_sqe(&s);
            if let Ok(it) = dsm.parse_ranges(b) {
                it.for_each(drop);
            }
            let _ = io::RwCommand::from_sqe(&s).data_len(b.first().copied().unwrap_or(0));
            let glp = log::GetLogPageCommand::from_sqe(&s);
            let _ = glp.validate();
            let mut out = vec![0u8; b.len().min(512)];
            let _ = log::log_window(b, glp.lpo, &mut out);
        }
    }

    proptest! {
        #[test]
        fn short_inputs(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            all_parsers(&b);
        }

        #[test]
        fn exact_size_inputs(len in prop_oneof![Just(16usize), Just(64), Just(512), Just(1024), Just(4096)],
                             seed in proptest::collection::vec(any::<u8>(), 1..64)) {
            let b: Vec<u8> = (0..len).map(|i| seed[i % seed.len()].wrapping_mul(i as u8 | 1)).collect();
            all_parsers(&b);
        }
    }
}
