//! `thin_repair -i IN -o OUT [--transaction-id N] [--data-block-size N] [--nr-data-blocks N]`:
//! salvages damaged metadata into fresh metadata on OUT (see `thin_core::thin::repair`).
//!
//! Options and exit codes are Debian 0.9's: 0 on success, 1 on any failure (usage errors
//! included). OUT must exist (a block device or a file large enough); like 0.9 it may hold
//! anything, valid metadata included — it is overwritten. Unlike 0.9, IN and OUT may not be
//! the same file: the salvage reads IN while OUT is being written. The command line is
//! parsed with GNU `getopt_long` rules ([`crate::getopt`]); usage errors print 0.9's
//! messages and usage text.

use std::ffi::OsString;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use thin_core::file::FileDevice;
use thin_core::thin::repair::{repair, RepairOptions, RepairReport};

use crate::getopt::{self, Arg, Item, Long};
use crate::meta_open;

/// The parsed command line.
#[derive(Debug, Default)]
struct Args {
    input: Option<PathBuf>,
    output: Option<PathBuf>,
    transaction_id: Option<u64>,
    data_block_size: Option<u32>,
    nr_data_blocks: Option<u64>,
}

const LONGS: &[Long] = &[
    Long {
        name: "help",
        arg: Arg::No,
        id: 'h',
    },
    Long {
        name: "input",
        arg: Arg::Required,
        id: 'i',
    },
    Long {
        name: "output",
        arg: Arg::Required,
        id: 'o',
    },
    Long {
        name: "transaction-id",
        arg: Arg::Required,
        id: '1',
    },
    Long {
        name: "data-block-size",
        arg: Arg::Required,
        id: '2',
    },
    Long {
        name: "nr-data-blocks",
        arg: Arg::Required,
        id: '3',
    },
    Long {
        name: "version",
        arg: Arg::No,
        id: 'V',
    },
];

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
pub fn run(argv: Vec<OsString>) -> ExitCode {
    let (prog, rest) = getopt::strings(&argv);
    let parsed = getopt::parse(&rest, "hi:o:V", LONGS);
    let mut args = Args::default();
    let bad = |what: &str, v: &str| {
        eprintln!("Couldn't parse {what}: '{v}'");
        fail(USAGE)
    };
    for item in parsed.items {
        match item {
            Item::Opt('h', _) => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            Item::Opt('V', _) => {
                println!("{}", meta_open::VERSION);
                return ExitCode::SUCCESS;
            }
            Item::Opt('i', v) => args.input = v.map(PathBuf::from),
            Item::Opt('o', v) => args.output = v.map(PathBuf::from),
            Item::Opt('1', v) => {
                let v = v.unwrap_or_default();
                match getopt::lexical_u64(&v) {
                    Some(n) => args.transaction_id = Some(n),
                    None => return bad("transaction id", &v),
                }
            }
            Item::Opt('2', v) => {
                let v = v.unwrap_or_default();
                match getopt::lexical_u64(&v).and_then(|n| u32::try_from(n).ok()) {
                    Some(n) => args.data_block_size = Some(n),
                    None => return bad("data block size", &v),
                }
            }
            Item::Opt('3', v) => {
                let v = v.unwrap_or_default();
                match getopt::lexical_u64(&v) {
                    Some(n) => args.nr_data_blocks = Some(n),
                    None => return bad("nr data blocks", &v),
                }
            }
            Item::Opt(..) => {}
            Item::Bad(msg) => {
                eprintln!("{prog}: {msg}");
                return fail(USAGE);
            }
        }
    }
    let Some(input) = args.input else {
        eprintln!("no input file provided");
        return fail(USAGE);
    };
    let Some(output) = args.output else {
        eprintln!("No output file provided.");
        return fail(USAGE);
    };
    if !output.exists() {
        return fail(NO_OUTPUT);
    }
    match std::fs::metadata(&input) {
        Err(_) => return fail("Couldn't stat file"),
        Ok(m) if !(m.file_type().is_file() || m.file_type().is_block_device()) => {
            return fail("bad path")
        }
        Ok(_) => {}
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
