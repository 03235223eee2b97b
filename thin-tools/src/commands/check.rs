//! `thin_check [-q] [-m] [--super-block-only] [--skip-mappings] [--ignore-non-fatal-errors]
//! [--clear-needs-check-flag] [--override-mapping-root BLOCK] META`
//!
//! Exit status as Debian's 0.9: 0 when clean, 1 on any error (non-fatal ones included unless
//! `--ignore-non-fatal-errors`). Progress and problems go to stderr, `TRANSACTION_ID=` and
//! `METADATA_FREE_BLOCKS=` to stdout; `-q` silences both.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use thin_core::file::FileDevice;
use thin_core::thin::check::{check, CheckOptions, Severity};
use thin_core::thin::{OpenOptions, Pool};

#[derive(Parser, Debug)]
#[command(name = "thin_check", version, about = "Validate thin-pool metadata")]
struct Args {
    /// Print nothing; the exit status tells.
    #[arg(short = 'q', long = "quiet")]
    quiet: bool,
    /// Check the held metadata snapshot.
    #[arg(short = 'm', long = "metadata-snap")]
    metadata_snap: bool,
    /// Only check the superblock.
    #[arg(long = "super-block-only")]
    super_block_only: bool,
    /// Check the top level of the mapping tree only.
    #[arg(long = "skip-mappings")]
    skip_mappings: bool,
    /// Exit 0 when only non-fatal problems (leaks, under-full nodes) are found.
    #[arg(long = "ignore-non-fatal-errors")]
    ignore_non_fatal: bool,
    /// Clear NEEDS_CHECK in the superblock after a clean check.
    #[arg(long = "clear-needs-check-flag")]
    clear_needs_check: bool,
    /// Not supported: use thin_repair.
    #[arg(long = "auto-repair")]
    auto_repair: bool,
    /// Check the mapping tree rooted at BLOCK instead of the superblock's.
    #[arg(long = "override-mapping-root", value_name = "BLOCK")]
    override_mapping_root: Option<u64>,
    /// Metadata device or file.
    input: PathBuf,
}

/// Runs the tool.
pub fn run(args: Vec<OsString>) -> ExitCode {
    let a = match Args::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    let say = |s: &str| {
        if !a.quiet {
            eprintln!("{s}");
        }
    };
    if a.auto_repair {
        eprintln!("thin_check: --auto-repair is not supported; use thin_repair");
        return ExitCode::from(1);
    }
    let partial = a.metadata_snap
        || a.super_block_only
        || a.skip_mappings
        || a.override_mapping_root.is_some();
    if a.clear_needs_check && partial {
        eprintln!("thin_check: --clear-needs-check-flag needs a full check");
        return ExitCode::from(1);
    }
    let mut dev = match FileDevice::open_read_only(&a.input) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{}: {e}", a.input.display());
            return ExitCode::from(1);
        }
    };
    let opts = CheckOptions {
        super_block_only: a.super_block_only,
        skip_mappings: a.skip_mappings,
        metadata_snap: a.metadata_snap,
        override_mapping_root: a.override_mapping_root,
        ..CheckOptions::default()
    };
    say("examining superblock");
    if !a.super_block_only {
        say("examining devices tree");
        say(if a.skip_mappings {
            "examining top level of mapping tree"
        } else {
            "examining mapping tree"
        });
        if !partial {
            say("checking space map counts");
        }
    }
    let report = check(&mut dev, &opts);
    for i in &report.issues {
        match i.severity {
            Severity::Fatal => say(&format!("  {}", i.message)),
            Severity::NonFatal => say(&format!("  (non-fatal) {}", i.message)),
            Severity::Hint => {}
        }
    }
    let failed = report.issues.iter().any(|i| match i.severity {
        Severity::Fatal => true,
        Severity::NonFatal => !a.ignore_non_fatal,
        Severity::Hint => false,
    });
    if let Some(sb) = &report.superblock {
        if !a.quiet && !failed {
            println!("TRANSACTION_ID={}", sb.trans_id);
            println!("METADATA_FREE_BLOCKS={}", report.metadata_free_blocks);
        }
    }
    if failed {
        return ExitCode::from(1);
    }
    if a.clear_needs_check
        && report
            .superblock
            .as_ref()
            .is_some_and(|sb| sb.needs_check())
    {
        let r = FileDevice::open(&a.input)
            .map_err(|e| e.to_string())
            .and_then(|dev| Pool::open(dev, OpenOptions::default()).map_err(|e| e.to_string()))
            .and_then(|mut p| p.set_needs_check(false).map_err(|e| e.to_string()));
        if let Err(e) = r {
            eprintln!("thin_check: clearing NEEDS_CHECK failed: {e}");
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}
