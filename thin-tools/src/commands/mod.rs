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

/// A tool's entry point: full argv (argv[0] is the tool name) → exit code.
pub type Tool = fn(Vec<OsString>) -> ExitCode;

/// Tool names as users type them.
pub const TOOLS: &[(&str, Tool)] = &[
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
pub fn find(name: &str) -> Option<Tool> {
    let norm = name.replace('-', "_");
    TOOLS
        .iter()
        .find(|(n, _)| *n == norm || n.strip_prefix("thin_") == Some(norm.as_str()))
        .map(|(_, f)| *f)
}
