//! Boots the Linux guest of [`crate::guest_image`] under QEMU (TCG), runs one shell script in
//! it and returns the script's stdout, stderr and exit code.
//!
//! ```no_run
//! use e2e_tests::qemu::Guest;
//! let run = Guest::new()
//!     .disk("/tmp/meta.bin", "meta")
//!     .script("uname -r; ls -l /dev/disk/by-serial/meta")
//!     .run()
//!     .expect("guest ran");
//! assert_eq!(run.exit_code, 0, "{}", run.report());
//! ```
//!
//! Invariants:
//! * QEMU always runs with `-accel tcg` (this machine's /dev/kvm runs no ordinary guests) and is
//!   killed when the timeout passes; a run never outlives its [`Guest::run`] call;
//! * disks appear in the guest as /dev/vda, /dev/vdb, … in the order they were added, and as
//!   /dev/disk/by-serial/<serial>;
//! * the guest network (if enabled) is QEMU user networking; the guest has no default route,
//!   so it can reach only 10.0.2.2 (the host's 127.0.0.1) and nothing beyond.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::guest_image::{self, io_err, GuestError, GuestImage};
use crate::ScratchDir;

const BEGIN: &str = "===E2E-SCRIPT-BEGIN===\n";
const END: &str = "\n===E2E-SCRIPT-END rc=";
const QEMU: &str = "qemu-system-x86_64";
const QEMU_INSTALL: &str = "apt-get install qemu-system-x86";

#[derive(Clone, Debug)]
struct Disk {
    path: PathBuf,
    serial: String,
    read_only: bool,
}

/// One guest boot: configure with the builder methods, then [`Guest::run`].
#[derive(Clone, Debug)]
pub struct Guest {
    image: Option<GuestImage>,
    disks: Vec<Disk>,
    script: String,
    timeout: Duration,
    memory_mib: u32,
    network: bool,
    qemu: PathBuf,
}

/// What came back from the guest.
#[derive(Clone, Debug)]
pub struct GuestRun {
    /// The script's stdout, exactly.
    pub stdout: String,
    /// The script's stderr (second serial port), with `\r\n` turned into `\n`.
    pub stderr: String,
    /// The script's exit code as reported by the guest's /init.
    pub exit_code: i32,
    /// The whole console (kernel log, /init messages, markers), for diagnostics.
    pub console: String,
    /// From starting QEMU until the script started.
    pub boot_time: Duration,
    /// From starting QEMU until it exited.
    pub total_time: Duration,
}

impl GuestRun {
    /// Everything useful for a failure message.
    pub fn report(&self) -> String {
        format!(
            "exit code {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- console ---\n{}",
            self.exit_code, self.stdout, self.stderr, self.console
        )
    }

    /// Panics with [`GuestRun::report`] unless the script exited 0.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert_eq!(self.exit_code, 0, "guest script failed:\n{}", self.report());
        self
    }
}

impl Default for Guest {
    fn default() -> Self {
        Self::new()
    }
}

impl Guest {
    /// A guest with the default image (built on first use), no disks, no network, 512 MiB of
    /// memory, a 120 s timeout and an empty script.
    pub fn new() -> Self {
        Guest {
            image: None,
            disks: Vec::new(),
            script: String::new(),
            timeout: Duration::from_secs(120),
            memory_mib: 512,
            network: false,
            qemu: PathBuf::from(QEMU),
        }
    }

    /// Boots this image instead of the default one.
    pub fn image(mut self, image: GuestImage) -> Self {
        self.image = Some(image);
        self
    }

    /// Adds a raw file as the next virtio-blk disk (/dev/vda, /dev/vdb, …) with this serial.
    pub fn disk(mut self, path: impl AsRef<Path>, serial: &str) -> Self {
        self.disks.push(Disk {
            path: path.as_ref().to_path_buf(),
            serial: serial.to_string(),
            read_only: false,
        });
        self
    }

    /// Like [`Guest::disk`], read-only in the guest.
    pub fn disk_read_only(mut self, path: impl AsRef<Path>, serial: &str) -> Self {
        self.disks.push(Disk {
            path: path.as_ref().to_path_buf(),
            serial: serial.to_string(),
            read_only: true,
        });
        self
    }

    /// The shell script (busybox `sh`) to run; its cwd is a tmpfs.
    pub fn script(mut self, script: impl Into<String>) -> Self {
        self.script = script.into();
        self
    }

    /// How long the whole run (boot, script, power-off) may take before QEMU is killed.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn memory_mib(mut self, memory_mib: u32) -> Self {
        self.memory_mib = memory_mib;
        self
    }

    /// Gives the guest eth0 = 10.0.2.15/24 on QEMU user networking (host = 10.0.2.2).
    pub fn network(mut self, enabled: bool) -> Self {
        self.network = enabled;
        self
    }

    /// The QEMU binary to run (default: `qemu-system-x86_64` from PATH).
    pub fn qemu_binary(mut self, path: impl AsRef<Path>) -> Self {
        self.qemu = path.as_ref().to_path_buf();
        self
    }

    /// Boots, runs the script, powers off. Errors if QEMU is missing, the image cannot be
    /// built, the timeout passes, or the guest never reports an exit code; a script that
    /// fails is not an error here (see [`GuestRun::exit_code`]).
    pub fn run(&self) -> Result<GuestRun, GuestError> {
        let image = match &self.image {
            Some(i) => i.clone(),
            None => guest_image::ensure_default()?,
        };
        let work = ScratchDir::new("e2e-guest")?;
        let script_file = work.path().join("script.sh");
        std::fs::write(&script_file, &self.script)
            .map_err(io_err(format!("writing {}", script_file.display())))?;
        let stderr_file = work.path().join("stderr.txt");

        let mut cmd = Command::new(&self.qemu);
        cmd.args([
            "-accel", "tcg", "-machine", "pc", "-cpu", "max", "-smp", "1",
        ])
        .args(["-m", &self.memory_mib.to_string()])
        .args(["-nodefaults", "-no-reboot", "-display", "none"])
        .arg("-kernel")
        .arg(&image.kernel)
        .arg("-initrd")
        .arg(&image.initramfs)
        .args([
            "-append",
            "console=ttyS0 quiet panic=-1 mitigations=off no_timer_check",
        ])
        .args(["-serial", "stdio"])
        .arg("-serial")
        .arg(format!("file:{}", qemu_escape(&stderr_file)))
        .arg("-fw_cfg")
        .arg(format!(
            "name=opt/e2e/script,file={}",
            qemu_escape(&script_file)
        ));
        for (i, d) in self.disks.iter().enumerate() {
            cmd.arg("-drive").arg(format!(
                "file={},if=none,id=d{i},format=raw,cache=writeback{}",
                qemu_escape(&d.path),
                if d.read_only { ",readonly=on" } else { "" }
            ));
            cmd.arg("-device").arg(format!(
                "virtio-blk-pci,drive=d{i},serial={}",
                d.serial.replace(',', ",,")
            ));
        }
        if self.network {
            cmd.args([
                "-netdev",
                "user,id=n0",
                "-device",
                "virtio-net-pci,netdev=n0",
            ]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());

        let start = Instant::now();
        let mut child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                GuestError::MissingTool {
                    tool: self.qemu.display().to_string(),
                    install: QEMU_INSTALL.into(),
                }
            } else {
                GuestError::Io {
                    context: format!("starting {QEMU}"),
                    source: e,
                }
            }
        })?;

        let console = Arc::new(Mutex::new(Vec::<u8>::new()));
        let began = Arc::new(Mutex::new(None::<Instant>));
        let reader = child.stdout.take().map(|mut out| {
            let console = Arc::clone(&console);
            let began = Arc::clone(&began);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = out.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let mut c = console.lock().unwrap_or_else(|e| e.into_inner());
                    c.extend_from_slice(&buf[..n]);
                    let mut b = began.lock().unwrap_or_else(|e| e.into_inner());
                    if b.is_none() && contains(&c, BEGIN.trim_end().as_bytes()) {
                        *b = Some(Instant::now());
                    }
                }
            })
        });
        let qemu_stderr = child.stderr.take().map(|mut err| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = err.read_to_string(&mut s);
                s
            })
        });

        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if start.elapsed() > self.timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    if let Some(r) = reader {
                        let _ = r.join();
                    }
                    return Err(GuestError::Timeout {
                        after: self.timeout,
                        console: text_of(&console),
                    });
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(GuestError::Io {
                        context: format!("waiting for {QEMU}"),
                        source: e,
                    });
                }
            }
        };
        let total_time = start.elapsed();
        if let Some(r) = reader {
            let _ = r.join();
        }
        let qemu_stderr = qemu_stderr.and_then(|t| t.join().ok()).unwrap_or_default();
        let console = text_of(&console);
        let boot_time = began
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map_or(total_time, |t| t.duration_since(start));

        let Some((stdout, exit_code)) = parse_console(&console) else {
            return Err(GuestError::NoResult {
                qemu_status: format!("{status}; QEMU stderr: {}", qemu_stderr.trim()),
                console,
            });
        };
        let stderr = std::fs::read(&stderr_file)
            .map(|b| String::from_utf8_lossy(&b).replace("\r\n", "\n"))
            .unwrap_or_default();
        Ok(GuestRun {
            stdout,
            stderr,
            exit_code,
            console,
            boot_time,
            total_time,
        })
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn text_of(buf: &Arc<Mutex<Vec<u8>>>) -> String {
    let b = buf.lock().unwrap_or_else(|e| e.into_inner());
    String::from_utf8_lossy(&b).replace("\r\n", "\n")
}

/// QEMU option values escape ',' by doubling it.
fn qemu_escape(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

/// Splits the console into the script's stdout and exit code; `None` without both markers.
pub fn parse_console(console: &str) -> Option<(String, i32)> {
    let begin = console.find(BEGIN)? + BEGIN.len();
    let rest = &console[begin..];
    let end = rest.rfind(END)?;
    let after = &rest[end + END.len()..];
    let digits: String = after.chars().take_while(|c| c.is_ascii_digit()).collect();
    let rc = digits.parse().ok()?;
    Some((rest[..end].to_string(), rc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_markers() {
        let console = "boot\n===E2E-SCRIPT-BEGIN===\nhello\nworld\n\n===E2E-SCRIPT-END rc=3===\n";
        assert_eq!(
            parse_console(console),
            Some(("hello\nworld\n".to_string(), 3))
        );
        let no_newline = "===E2E-SCRIPT-BEGIN===\nx\n===E2E-SCRIPT-END rc=0===\n";
        assert_eq!(parse_console(no_newline), Some(("x".to_string(), 0)));
        assert_eq!(parse_console("===E2E-SCRIPT-BEGIN===\nx"), None);
    }
}
