//! The JSON-RPC 2.0 transport: a Unix stream socket, a stream of JSON values without
//! delimiters, one compact ASCII response line per request (spec §1).
//!
//! Invariants:
//! * nothing read from a socket can panic the server: every value is validated and every
//!   failure becomes a JSON-RPC error (or, for malformed JSON, a parse error and a close);
//! * a connection buffers at most [`MAX_REQUEST_BYTES`] of one unfinished request;
//! * at most [`MAX_CONNECTIONS`] connections are served at once;
//! * responses are pure ASCII and every success carries `result`.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use log::{info, warn};
use serde_json::{json, Value};

use super::RpcError;

/// Default socket path, as SPDK's.
pub const DEFAULT_SOCKET: &str = "/var/tmp/spdk.sock";
/// Largest request accepted (SPDK: 256 KiB receive buffer; we allow more).
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
/// Concurrent connections (SPDK's limit).
pub const MAX_CONNECTIONS: usize = 64;
const POLL: Duration = Duration::from_millis(50);

/// What the server calls for each request.
pub trait Handler: Send + Sync + 'static {
    /// Runs `method` with `params` (`None` when absent or `null`).
    fn call(&self, method: &str, params: Option<Value>) -> Result<Value, RpcError>;
    /// Called after the response to a request has been written (e.g. `spdk_kill_instance`).
    fn after_response(&self, _method: &str) {}
}

/// A running RPC server.
pub struct RpcServer {
    path: PathBuf,
    lock_path: PathBuf,
    _lock: std::fs::File,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error("RPC Unix domain socket path {0} in use")]
    InUse(PathBuf),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> ServerError {
    move |source| ServerError::Io { context, source }
}

impl RpcServer {
    /// Takes `<path>.lock`, replaces a stale socket, binds with mode 0600 and serves on a
    /// thread of its own.
    pub fn start(path: &Path, handler: Arc<dyn Handler>) -> Result<Self, ServerError> {
        let lock_path = PathBuf::from(format!("{}.lock", path.display()));
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(format!("{}", lock_path.display())))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .map_err(|_| ServerError::InUse(path.to_owned()))?;
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).map_err(io_err(format!("{}", path.display())))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err(format!("chmod {}", path.display())))?;
        listener
            .set_nonblocking(true)
            .map_err(io_err("nonblocking".into()))?;
        info!("JSON-RPC server listening on {}", path.display());
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("rpc".into())
            .spawn(move || accept_loop(&listener, &handler, &stop2))
            .map_err(io_err("spawning the RPC thread".into()))?;
        Ok(Self {
            path: path.to_owned(),
            lock_path,
            _lock: lock,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops accepting, lets open connections end, removes the socket and lock files.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
            let _ = std::fs::remove_file(&self.path);
            let _ = std::fs::remove_file(&self.lock_path);
        }
    }
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(listener: &UnixListener, handler: &Arc<dyn Handler>, stop: &Arc<AtomicBool>) {
    let live = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((s, _)) => {
                if live.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                    warn!("RPC: too many connections, refusing one");
                    continue;
                }
                live.fetch_add(1, Ordering::Relaxed);
                let (h, st, lv) = (handler.clone(), stop.clone(), live.clone());
                let r = std::thread::Builder::new()
                    .name("rpc-conn".into())
                    .spawn(move || {
                        serve_conn(s, h.as_ref(), &st);
                        lv.fetch_sub(1, Ordering::Relaxed);
                    });
                if let Err(e) = r {
                    warn!("RPC: cannot spawn a connection thread: {e}");
                    live.fetch_sub(1, Ordering::Relaxed);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(e) => {
                warn!("RPC accept: {e}");
                std::thread::sleep(POLL);
            }
        }
    }
}

/// What came out of the buffer.
enum Next {
    Value(Value),
    NeedMore,
    Malformed,
}

/// Takes one complete JSON value off the front of `buf` (leading whitespace skipped).
fn next_value(buf: &mut Vec<u8>) -> Next {
    let mut it = serde_json::Deserializer::from_slice(buf).into_iter::<Value>();
    match it.next() {
        None => {
            buf.clear();
            Next::NeedMore
        }
        Some(Ok(v)) => {
            let off = it.byte_offset();
            buf.drain(..off);
            Next::Value(v)
        }
        Some(Err(e)) if e.is_eof() => Next::NeedMore,
        Some(Err(_)) => Next::Malformed,
    }
}

fn serve_conn(mut s: UnixStream, h: &dyn Handler, stop: &AtomicBool) {
    if s.set_read_timeout(Some(Duration::from_millis(200)))
        .is_err()
    {
        return;
    }
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut input_len = 0;
    loop {
        let step = process_bytes(&mut buf, &chunk[..input_len], h);
        for line in &step.responses {
            let mut l = String::with_capacity(line.len() + 1);
            l.push_str(line);
            l.push('\n');
            if s.write_all(l.as_bytes()).and_then(|()| s.flush()).is_err() {
                return;
            }
        }
        for m in &step.methods {
            h.after_response(m);
        }
        if !step.keep_open {
            return;
        }
        input_len = 0;
        match s.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => input_len = n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// What [`process_bytes`] produced.
#[derive(Debug, Default)]
pub struct Processed {
    /// Responses, one ASCII JSON line each (without the newline), in request order.
    pub responses: Vec<String>,
    /// Methods whose responses are in `responses` or that were notifications, for
    /// [`Handler::after_response`].
    pub methods: Vec<String>,
    /// `false` when the stream is malformed or a request is too large: close after answering.
    pub keep_open: bool,
}

/// Feeds `input` (the next chunk of a connection's byte stream) into the connection buffer
/// and answers every complete request in it, in order. The connection loop and the fuzz
/// target share this.
pub fn process_bytes(buf: &mut Vec<u8>, input: &[u8], h: &dyn Handler) -> Processed {
    buf.extend_from_slice(input);
    let mut out = Processed {
        keep_open: true,
        ..Processed::default()
    };
    loop {
        match next_value(buf) {
            Next::Value(v) => {
                let (resp, methods) = handle_value(v, h);
                if let Some(r) = resp {
                    out.responses.push(ascii_json(&r));
                }
                out.methods.extend(methods);
            }
            Next::NeedMore => break,
            Next::Malformed => {
                out.responses.push(ascii_json(&parse_error()));
                out.keep_open = false;
                return out;
            }
        }
    }
    if buf.len() > MAX_REQUEST_BYTES {
        out.responses.push(ascii_json(&parse_error()));
        out.keep_open = false;
    }
    out
}

fn parse_error() -> Value {
    json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "Parse error"}})
}

fn error_response(id: Value, e: &RpcError) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": e.code, "message": e.message}})
}

/// Handles a top-level value: a request or a batch. Returns the response (none for
/// notifications) and the methods that ran.
fn handle_value(v: Value, h: &dyn Handler) -> (Option<Value>, Vec<String>) {
    match v {
        Value::Object(_) => {
            let (r, m) = handle_request(v, h);
            (r, m.into_iter().collect())
        }
        Value::Array(items) if items.is_empty() => (
            Some(error_response(Value::Null, &RpcError::invalid_request())),
            vec![],
        ),
        Value::Array(items) => {
            let mut out = Vec::new();
            let mut methods = Vec::new();
            for it in items {
                let (r, m) = handle_request(it, h);
                out.extend(r);
                methods.extend(m);
            }
            ((!out.is_empty()).then_some(Value::Array(out)), methods)
        }
        _ => (
            Some(error_response(Value::Null, &RpcError::invalid_request())),
            vec![],
        ),
    }
}

fn handle_request(v: Value, h: &dyn Handler) -> (Option<Value>, Option<String>) {
    let Value::Object(mut obj) = v else {
        return (
            Some(error_response(Value::Null, &RpcError::invalid_request())),
            None,
        );
    };
    let bad = || {
        (
            Some(error_response(Value::Null, &RpcError::invalid_request())),
            None,
        )
    };
    if obj
        .keys()
        .any(|k| !matches!(k.as_str(), "jsonrpc" | "method" | "id" | "params"))
    {
        return bad();
    }
    match obj.get("jsonrpc") {
        None => {}
        Some(Value::String(s)) if s == "2.0" => {}
        Some(_) => return bad(),
    }
    let method = match obj.remove("method") {
        Some(Value::String(m)) => m,
        _ => return bad(),
    };
    let id = obj.remove("id");
    match &id {
        None | Some(Value::Null | Value::String(_) | Value::Number(_)) => {}
        Some(_) => return bad(),
    }
    let params = match obj.remove("params") {
        None | Some(Value::Null) => None,
        Some(p @ (Value::Object(_) | Value::Array(_))) => Some(p),
        Some(_) => {
            return (
                id.map(|id| error_response(id, &RpcError::invalid_request())),
                None,
            )
        }
    };
    let r = h.call(&method, params);
    let Some(id) = id else {
        return (None, Some(method)); // a notification: no answer
    };
    let resp = match r {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(e) => error_response(id, &e),
    };
    (Some(resp), Some(method))
}

/// Writes `v` compactly, non-ASCII escaped, followed by a newline.
/// Compact JSON with every non-ASCII character as a `\uXXXX` escape. serde_json only
/// emits non-ASCII inside strings, so escaping each such character is always valid.
pub fn ascii_json(v: &Value) -> String {
    let raw = v.to_string();
    if raw.is_ascii() {
        return raw;
    }
    let mut out = String::with_capacity(raw.len() + 16);
    for c in raw.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_framing_handles_split_and_concatenated_values() {
        let mut buf = br#"  {"a": 1}{"b":"#.to_vec();
        assert!(matches!(next_value(&mut buf), Next::Value(_)));
        assert!(matches!(next_value(&mut buf), Next::NeedMore));
        buf.extend_from_slice(b" 2}\n");
        assert!(matches!(next_value(&mut buf), Next::Value(_)));
        assert!(matches!(next_value(&mut buf), Next::NeedMore));
        assert!(buf.is_empty());
        let mut bad = b"{\"a\" 1}".to_vec();
        assert!(matches!(next_value(&mut bad), Next::Malformed));
    }

    #[test]
    fn responses_are_ascii() {
        let v = json!({"s": "é😀"});
        let s = ascii_json(&v);
        assert!(s.is_ascii());
        let back: Value = serde_json::from_str(&s).expect("valid JSON");
        assert_eq!(back, v);
    }
}
