//! Runs Debian's thin-provisioning-tools (0.9 on this project's machines) on files.
//!
//! The binaries are looked up in `/usr/sbin` and `/sbin` first (where the Debian package puts
//! them), then on `PATH`, so that a `thin_check` of our own earlier on `PATH` is not mistaken
//! for the reference. A missing binary is an error naming the package to install; tests
//! never skip silently.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use tempfile::TempDir;

/// Debian package that ships the tools.
pub const PACKAGE: &str = "thin-provisioning-tools";

#[derive(Debug)]
pub enum ToolError {
    /// The binary is not installed.
    Missing { tool: &'static str },
    /// The binary could not be started.
    Spawn {
        tool: &'static str,
        error: std::io::Error,
    },
    /// The tool ran and failed.
    Failed {
        command: String,
        status: Option<i32>,
        stdout: String,
        stderr: String,
    },
    /// Local file handling around the tool failed.
    Io(std::io::Error),
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ToolError::Missing { tool } => write!(
                f,
                "`{tool}` not found in /usr/sbin, /sbin or PATH: install Debian's {PACKAGE} \
                 (`apt-get install {PACKAGE}`, or scripts/setup.sh)"
            ),
            ToolError::Spawn { tool, error } => write!(f, "cannot run `{tool}`: {error}"),
            ToolError::Failed {
                command,
                status,
                stdout,
                stderr,
            } => write!(
                f,
                "`{command}` failed (exit status {status:?})\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}"
            ),
            ToolError::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}

impl std::error::Error for ToolError {}

impl From<std::io::Error> for ToolError {
    fn from(e: std::io::Error) -> Self {
        ToolError::Io(e)
    }
}

/// Exit status and output of a tool run.
#[derive(Clone, Debug)]
pub struct ToolOutput {
    /// Exit code; `None` if killed by a signal.
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl ToolOutput {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
}

/// Full path of a Debian tool.
pub fn tool_path(tool: &'static str) -> Result<PathBuf, ToolError> {
    let mut dirs: Vec<PathBuf> = vec!["/usr/sbin".into(), "/sbin".into()];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.into_iter()
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .ok_or(ToolError::Missing { tool })
}

/// Runs `tool args…`, returning its status and output whatever they are.
pub fn run(tool: &'static str, args: &[&std::ffi::OsStr]) -> Result<ToolOutput, ToolError> {
    let path = tool_path(tool)?;
    let out: Output = Command::new(&path)
        .args(args)
        .output()
        .map_err(|error| ToolError::Spawn { tool, error })?;
    Ok(ToolOutput {
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Like [`run`] but a non-zero exit is an error.
pub fn run_ok(tool: &'static str, args: &[&std::ffi::OsStr]) -> Result<ToolOutput, ToolError> {
    let out = run(tool, args)?;
    if out.success() {
        Ok(out)
    } else {
        let mut command = tool.to_owned();
        for a in args {
            command.push(' ');
            command.push_str(&a.to_string_lossy());
        }
        Err(ToolError::Failed {
            command,
            status: out.status,
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }
}

/// `thin_dump -V`, e.g. "0.9.0".
pub fn version() -> Result<String, ToolError> {
    Ok(run_ok("thin_dump", &["-V".as_ref()])?
        .stdout
        .trim()
        .to_owned())
}

/// `thin_restore -i xml -o meta`.
pub fn thin_restore(xml: &Path, meta: &Path) -> Result<(), ToolError> {
    run_ok(
        "thin_restore",
        &[
            "-i".as_ref(),
            xml.as_os_str(),
            "-o".as_ref(),
            meta.as_os_str(),
        ],
    )?;
    Ok(())
}

/// `thin_check meta`: status and output, a failed check included.
pub fn thin_check(meta: &Path) -> Result<ToolOutput, ToolError> {
    run("thin_check", &[meta.as_os_str()])
}

/// `thin_check meta`, a failed check being an error.
pub fn thin_check_ok(meta: &Path) -> Result<ToolOutput, ToolError> {
    run_ok("thin_check", &[meta.as_os_str()])
}

/// `thin_dump --metadata-snap meta` (XML of the held metadata snapshot).
pub fn thin_dump_metadata_snap(meta: &Path) -> Result<String, ToolError> {
    Ok(run_ok("thin_dump", &["--metadata-snap".as_ref(), meta.as_os_str()])?.stdout)
}

/// `thin_dump meta` (XML).
pub fn thin_dump(meta: &Path) -> Result<String, ToolError> {
    Ok(run_ok("thin_dump", &[meta.as_os_str()])?.stdout)
}

/// `thin_dump -f human_readable meta`.
pub fn thin_dump_human(meta: &Path) -> Result<String, ToolError> {
    Ok(run_ok(
        "thin_dump",
        &["-f".as_ref(), "human_readable".as_ref(), meta.as_os_str()],
    )?
    .stdout)
}

/// A fresh temporary directory, removed when dropped.
pub fn temp_dir() -> Result<TempDir, ToolError> {
    Ok(tempfile::Builder::new().prefix("thin-e2e-").tempdir()?)
}

/// Creates `dir/name`, zero-filled (sparse) and `bytes` long, for use as a metadata device.
pub fn zeroed_metadata_file(dir: &Path, name: &str, bytes: u64) -> Result<PathBuf, ToolError> {
    let path = dir.join(name);
    let f = File::create(&path)?;
    f.set_len(bytes)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_names_the_package() {
        let msg = ToolError::Missing { tool: "thin_check" }.to_string();
        assert!(
            msg.contains("apt-get install thin-provisioning-tools"),
            "{msg}"
        );
        assert!(matches!(
            tool_path("thin_no_such_tool"),
            Err(ToolError::Missing { .. })
        ));
    }

    #[test]
    fn zeroed_file_has_the_size() {
        let dir = temp_dir().unwrap();
        let p = zeroed_metadata_file(dir.path(), "m", 1 << 20).unwrap();
        assert_eq!(std::fs::metadata(p).unwrap().len(), 1 << 20);
    }
}
