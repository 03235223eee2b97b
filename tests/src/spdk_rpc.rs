//! SPDK's own client, `spdk-rpc` (PyPI `spdk`, installed by `scripts/setup.sh`), run against a
//! daemon's JSON-RPC socket, optionally with one of our `--plugin` modules from `scripts/`.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Runs `spdk-rpc -s SOCK [--plugin MODULE] args…`; returns (exit status, stdout).
pub fn raw(sock: &Path, plugin: Option<&str>, args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new("spdk-rpc");
    cmd.arg("-s").arg(sock);
    if let Some(module) = plugin {
        let scripts = crate::guest_image::workspace_root().join("scripts");
        assert!(
            scripts.join(format!("{module}.py")).is_file(),
            "plugin module {module} missing from {}",
            scripts.display()
        );
        cmd.env("PYTHONPATH", &scripts).args(["--plugin", module]);
    }
    let out = cmd
        .args(args)
        .output()
        .expect("run spdk-rpc (scripts/setup.sh installs it: python3 -m pip install spdk)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if let Some(module) = plugin {
        assert!(
            !stdout.contains(&format!("Module {module}")),
            "the plugin did not load: {stdout}"
        );
    }
    (out.status.code().unwrap_or(-1), stdout)
}

/// A call that must succeed; its trimmed stdout.
pub fn ok(sock: &Path, plugin: Option<&str>, args: &[&str]) -> String {
    let (rc, out) = raw(sock, plugin, args);
    assert_eq!(rc, 0, "spdk-rpc {args:?} failed:\n{out}");
    out.trim().to_owned()
}

/// A call that must succeed and print JSON.
pub fn json(sock: &Path, plugin: Option<&str>, args: &[&str]) -> Value {
    let out = ok(sock, plugin, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("spdk-rpc {args:?}: {e}\n{out}"))
}

/// A call that must fail: exit status 1 and SPDK's error object (printed after
/// `response:`) as (code, message).
pub fn err(sock: &Path, plugin: Option<&str>, args: &[&str]) -> (i64, String) {
    let (rc, out) = raw(sock, plugin, args);
    assert_eq!(rc, 1, "spdk-rpc {args:?} should fail:\n{out}");
    let tail = out
        .split("response:")
        .nth(1)
        .unwrap_or_else(|| panic!("no error response in:\n{out}"));
    let v: Value = serde_json::from_str(tail.trim()).expect("error object");
    (
        v["code"].as_i64().expect("code"),
        v["message"].as_str().expect("message").to_owned(),
    )
}

/// Our daemon started empty (`--no-default-pool`, as `spdk_tgt` starts), its JSON-RPC
/// socket at `dir/sock_name`, plus `extra` arguments.
pub struct Daemon {
    /// The process (stopped on drop).
    pub inner: crate::ours::Daemon,
    pub sock: std::path::PathBuf,
    /// The NVMe/TCP port it listens on.
    pub port: u16,
}

impl Daemon {
    pub fn start(dir: &Path, sock_name: &str, extra: &[&std::ffi::OsStr]) -> Self {
        let sock = dir.join(sock_name);
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "--no-default-pool".as_ref(),
            "-r".as_ref(),
            sock.as_os_str(),
        ];
        args.extend_from_slice(extra);
        let inner = crate::ours::Daemon::start(&args);
        let port = inner.port;
        Daemon { inner, sock, port }
    }
}

/// Reads one response line (up to `\n`, not included) from a raw JSON-RPC socket. A read
/// interrupted by EINTR is read again: a socket with a receive timeout returns it after the
/// process was stopped and continued, even without signal handlers.
pub fn read_line_bytes(s: &mut impl std::io::Read) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Ok(1) if b[0] != b'\n' => buf.push(b[0]),
            Ok(_) => return buf,
            Err(e) => panic!("reading the response: {e}"),
        }
    }
}
