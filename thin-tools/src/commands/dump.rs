//! `thin_dump [-f xml|human_readable] [-r] [-m [block]] [-o file] [--dev-id id]… [--skip-mappings] META`

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Result};
use clap::Parser;
use thin_core::file::FileDevice;

use crate::dump::{dump, open_reader, DumpOptions};
use crate::human_readable::HumanReadableWriter;
use crate::ir::MetadataVisitor;
use crate::xml::XmlWriter;

#[derive(Parser, Debug)]
#[command(
    name = "thin_dump",
    version,
    about = "Dump thin-pool metadata as XML or text"
)]
struct Args {
    /// Output format.
    #[arg(short = 'f', long = "format", default_value = "xml", value_parser = ["xml", "human_readable"])]
    format: String,
    /// Dump what can be read from damaged metadata.
    #[arg(short = 'r', long = "repair")]
    repair: bool,
    /// Dump the held metadata snapshot (optionally the one at BLOCK).
    #[arg(short = 'm', long = "metadata-snap", num_args = 0..=1, require_equals = true, default_missing_value = "0", value_name = "BLOCK")]
    metadata_snap: Option<u64>,
    /// Write to FILE instead of standard output.
    #[arg(short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// Only this device (repeatable).
    #[arg(long = "dev-id")]
    dev_id: Vec<u64>,
    /// Devices without mappings.
    #[arg(long = "skip-mappings")]
    skip_mappings: bool,
    /// Metadata device or file.
    input: PathBuf,
}

fn go(a: Args) -> Result<()> {
    let dev =
        FileDevice::open_read_only(&a.input).map_err(|e| anyhow!("{}: {e}", a.input.display()))?;
    let snap = a.metadata_snap.map(|b| if b == 0 { None } else { Some(b) });
    let mut reader = open_reader(dev, snap)?;
    let out: Box<dyn Write> = match &a.output {
        Some(p) => Box::new(File::create(p).map_err(|e| anyhow!("{}: {e}", p.display()))?),
        None => Box::new(io::stdout().lock()),
    };
    let out = BufWriter::with_capacity(1 << 20, out);
    let opts = DumpOptions {
        dev_ids: a.dev_id,
        skip_mappings: a.skip_mappings,
        repair: a.repair,
    };
    let mut visitor: Box<dyn MetadataVisitor> = if a.format == "xml" {
        Box::new(XmlWriter::new(out))
    } else {
        Box::new(HumanReadableWriter::new(out))
    };
    dump(&mut reader, snap.is_some(), &opts, visitor.as_mut())
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
    match go(a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::from(1)
        }
    }
}
