//! `thin_restore` (being implemented; until then it says so and fails).

use std::ffi::OsString;
use std::process::ExitCode;

/// Runs the tool.
pub fn run(_args: Vec<OsString>) -> ExitCode {
    eprintln!("thin_restore: not implemented yet");
    ExitCode::from(2)
}
