//! Runs our binaries the way users do: the multi-call `thin` as `thin_check …` through a
//! symlink, and the `nvmf-target` daemon.

use std::path::PathBuf;
use std::process::Command;

use crate::debian::ToolOutput;

/// The `thin` binary of the running test's profile (`target/<profile>/thin`), built (or
/// brought up to date) once per test process with the cargo that runs the tests.
pub fn thin_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| bin("thin-tools", "thin")).clone()
}

/// The `nvmf-target` daemon binary, built like [`thin_bin`].
pub fn target_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| bin("nvmf-target", "nvmf-target"))
        .clone()
}

/// Builds binary `name` of `package` with the running test's profile and returns its path.
fn bin(package: &str, name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile> directory");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", package, "--bin", name]);
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build");
    assert!(status.success(), "cargo build -p {package} failed");
    let bin = dir.join(name);
    assert!(
        bin.is_file(),
        "{} is missing after cargo build",
        bin.display()
    );
    bin
}

/// A directory of `thin_*` symlinks to the binary, so tools run under their own names.
pub fn tool_path(tool: &str) -> PathBuf {
    let bin = thin_bin();
    let dir = bin.parent().expect("bin dir").join("thin-tool-links");
    std::fs::create_dir_all(&dir).expect("links dir");
    let link = dir.join(tool);
    if std::fs::read_link(&link).ok().as_deref() != Some(bin.as_path()) {
        let _ = std::fs::remove_file(&link);
        // Another test may create it at the same moment; either link is fine.
        let _ = std::os::unix::fs::symlink(&bin, &link);
    }
    link
}

/// Runs our `tool` (e.g. "thin_dump") with `args`.
pub fn run(tool: &str, args: &[&std::ffi::OsStr]) -> ToolOutput {
    let out = Command::new(tool_path(tool))
        .args(args)
        .output()
        .expect("run our tool");
    ToolOutput {
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A running `nvmf-target` daemon, killed (SIGKILL) when dropped.
pub struct Daemon {
    /// The process.
    pub child: std::process::Child,
    /// The NVMe/TCP port it listens on (it was started with `--listen 127.0.0.1:0`).
    pub port: u16,
    /// A private `--data-dir` when the caller named none, so that no test reads or writes
    /// a `./nvmf-data/config.json` shared with others.
    _data: Option<crate::ScratchDir>,
}

impl Daemon {
    /// Starts the daemon with `--listen 127.0.0.1:0` plus `args`, and waits for the
    /// `listening on ADDR` line to learn the port. Its stdout is drained in the background.
    /// Without `--data-dir` in `args` it gets a private temporary one.
    pub fn start(args: &[&std::ffi::OsStr]) -> Daemon {
        Self::start_with(args, std::process::Stdio::null())
    }

    /// [`Daemon::start`] with the daemon's stderr sent to `stderr`.
    pub fn start_with(args: &[&std::ffi::OsStr], stderr: std::process::Stdio) -> Daemon {
        use std::io::{BufRead, BufReader};
        let data = if args.iter().any(|a| *a == "--data-dir") {
            None
        } else {
            Some(crate::ScratchDir::new("nvmf-data").expect("temp data dir"))
        };
        let mut cmd = Command::new(target_bin());
        cmd.args(["--listen", "127.0.0.1:0"]);
        if let Some(d) = &data {
            cmd.arg("--data-dir").arg(d.path());
        }
        let mut child = cmd
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start nvmf-target");
        let out = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(out).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("daemon printed its address")
                .expect("read stdout");
            if let Some(addr) = line.strip_prefix("listening on ") {
                break addr
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .expect("port");
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Daemon {
            child,
            port,
            _data: data,
        }
    }

    /// SIGTERM, then waits for a clean exit (status 0) within `secs` seconds.
    pub fn terminate(mut self, secs: u64) {
        let pid = self.child.id().to_string();
        let st = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -TERM {pid}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                assert!(st.success(), "daemon exit status {st}");
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "daemon did not stop on SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
