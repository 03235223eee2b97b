//! One module per tool; each parses its own command line (the options of Debian's
//! thin-provisioning-tools) and returns the process exit code.

use std::ffi::OsString;
use std::process::ExitCode;

pub mod check;
pub mod delta;
pub mod dump;
pub mod ls;
pub mod metadata_size;
pub mod repair;
pub mod restore;
pub mod rmap;
pub mod trim;

/// Tool names as users type them (`thin_check` …) and as `thin <tool>` subcommands.
pub const TOOLS: &[(&str, fn(Vec<OsString>) -> ExitCode)] = &[
    ("thin_check", check::run),
    ("thin_dump", dump::run),
    ("thin_restore", restore::run),
    ("thin_repair", repair::run),
    ("thin_ls", ls::run),
    ("thin_delta", delta::run),
    ("thin_rmap", rmap::run),
    ("thin_trim", trim::run),
    ("thin_metadata_size", metadata_size::run),
];

/// Finds a tool by `thin_x`, `x` or `x` with dashes (`metadata-size`).
pub fn find(name: &str) -> Option<fn(Vec<OsString>) -> ExitCode> {
    let norm = name.replace('-', "_");
    TOOLS
        .iter()
        .find(|(n, _)| *n == norm || n.strip_prefix("thin_") == Some(norm.as_str()))
        .map(|(_, f)| *f)
}
