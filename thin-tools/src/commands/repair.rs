//! `thin_repair -i IN -o OUT [--transaction-id N] [--data-block-size N] [--nr-data-blocks N]`:
//! salvages damaged metadata into fresh metadata on OUT (see `thin_core::thin::repair`).
//!
//! Options and exit codes are Debian 0.9's: 0 on success, 1 on any failure (usage errors
//! included). OUT must exist (a block device or a file large enough); like 0.9 it may hold
//! anything, valid metadata included — it is overwritten. Unlike 0.9, IN and OUT may not be
//! the same file: the salvage reads IN while OUT is being written.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use thin_core::file::FileDevice;
use thin_core::thin::repair::{repair, RepairOptions, RepairReport};

#[derive(Parser, Debug)]
#[command(name = "thin_repair", version = "0.9.0", disable_version_flag = true)]
struct Args {
    /// Input metadata (binary format).
    #[arg(short = 'i', long = "input")]
    input: Option<PathBuf>,
    /// Output metadata (binary format).
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
    /// Transaction id (required if the input superblock is damaged).
    #[arg(long = "transaction-id")]
    transaction_id: Option<u64>,
    /// Data block size in sectors (required if the input superblock is damaged).
    #[arg(long = "data-block-size")]
    data_block_size: Option<u32>,
    /// Number of data blocks (required if the input superblock is damaged).
    #[arg(long = "nr-data-blocks")]
    nr_data_blocks: Option<u64>,
    /// Print the version.
    #[arg(short = 'V', long = "version")]
    version: bool,
}

const USAGE: &str = "Usage: thin_repair [options] {device|file}
Options:
  {-h|--help}
  {-i|--input} <input metadata (binary format)>
  {-o|--output} <output metadata (binary format)>
  {--transaction-id} <natural>
  {--data-block-size} <natural>
  {--nr-data-blocks} <natural>
  {-V|--version}";

const NO_OUTPUT: &str = "Output file does not exist.

The output file should either be a block device,
or an existing file.  The file needs to be large
enough to hold the metadata.";

fn fail(msg: &str) -> ExitCode {
    eprintln!("{msg}");
    ExitCode::from(1)
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => {
            (x.dev(), x.ino()) == (y.dev(), y.ino()) || (x.rdev() != 0 && x.rdev() == y.rdev())
        }
        _ => false,
    }
}

/// Warnings about what could not be salvaged (stderr; silent when nothing was lost).
fn print_report(r: &RepairReport) {
    if !r.superblock_ok {
        eprintln!("superblock is damaged: values from the command line, roots found by a scan");
    } else if r.scanned {
        eprintln!("the superblock's trees are damaged: roots searched by a scan of every block");
    }
    for d in &r.damage {
        eprintln!("skipped damaged node (block {}): {}", d.block, d.error);
    }
    if r.nr_damaged > r.damage.len() as u64 {
        eprintln!(
            "… and {} more damaged nodes",
            r.nr_damaged - r.damage.len() as u64
        );
    }
    if r.dropped_mappings > 0 {
        eprintln!(
            "dropped {} mappings (out of order, outside their node's key range, or beyond the data device)",
            r.dropped_mappings
        );
    }
    if !r.details_regenerated.is_empty() {
        eprintln!(
            "device details lost (regenerated, all mappings treated as shared) for devices {:?}",
            r.details_regenerated
        );
    }
    if !r.devices_matched_by_size.is_empty() {
        eprintln!(
            "top-level entries lost; mapping trees matched by size to devices {:?}",
            r.devices_matched_by_size
        );
    }
    if !r.details_without_mappings.is_empty() {
        eprintln!(
            "devices with details but no mapping tree (not written): {:?}",
            r.details_without_mappings
        );
    }
    if r.nr_damaged > 0 || r.scanned || !r.details_without_mappings.is_empty() {
        eprintln!(
            "recovered {} devices, {} mappings",
            r.nr_devices, r.nr_mappings
        );
    }
}

/// Runs the tool.
pub fn run(args: Vec<OsString>) -> ExitCode {
    let args = match Args::try_parse_from(&args) {
        Ok(a) => a,
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{}", e.render());
            return fail(USAGE);
        }
    };
    if args.version {
        println!("0.9.0");
        return ExitCode::SUCCESS;
    }
    let Some(input) = args.input else {
        eprintln!("no input file provided");
        return fail(USAGE);
    };
    let Some(output) = args.output else {
        eprintln!("no output file provided");
        return fail(USAGE);
    };
    if !output.exists() {
        return fail(NO_OUTPUT);
    }
    if same_file(&input, &output) {
        return fail(
            "input and output are the same file: repair writes fresh metadata to a separate device",
        );
    }
    let mut indev = match FileDevice::open_read_only(&input) {
        Ok(d) => d,
        Err(e) => return fail(&format!("{}: {e}", input.display())),
    };
    let outdev = match FileDevice::open(&output) {
        Ok(d) => d,
        Err(e) => return fail(&format!("{}: {e}", output.display())),
    };
    let opts = RepairOptions {
        transaction_id: args.transaction_id,
        data_block_size: args.data_block_size,
        nr_data_blocks: args.nr_data_blocks,
        ..RepairOptions::default()
    };
    match repair(&mut indev, outdev, &opts) {
        Ok((pool, report)) => {
            print_report(&report);
            match pool.close() {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => fail(&format!("{}: {e}", output.display())),
            }
        }
        Err(e) => fail(&e.to_string()),
    }
}
