//! `thin_restore -i XML -o META [--transaction-id N] [--data-block-size N] [--nr-data-blocks N]
//! [-q] [--force]`
//!
//! Builds fresh metadata from XML (trees built bottom-up). The output must exist (a file or
//! device; its size is the metadata size). Unlike Debian's 0.9, output that already holds
//! valid metadata is refused unless `--force` is given: restoring over a live pool's
//! metadata is an easy way to lose it.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufReader, IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use clap::Parser;
use thin_core::file::FileDevice;
use thin_core::thin::pool::read_superblock;
use thin_core::thin::restore::{RestoreHeader, Restorer};
use thin_core::thin::DeviceDetails;

use crate::ir::{Device, Map, MetadataVisitor, Superblock, Visit};
use crate::xml::parse_xml;

#[derive(Parser, Debug)]
#[command(
    name = "thin_restore",
    version,
    about = "Build thin-pool metadata from XML"
)]
struct Args {
    /// Input XML.
    #[arg(short = 'i', long = "input")]
    input: Option<PathBuf>,
    /// Output metadata device or file (must exist).
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
    /// Override the transaction id.
    #[arg(long = "transaction-id")]
    transaction_id: Option<u64>,
    /// Override the data block size (sectors).
    #[arg(long = "data-block-size")]
    data_block_size: Option<u32>,
    /// Override the number of data blocks.
    #[arg(long = "nr-data-blocks")]
    nr_data_blocks: Option<u64>,
    /// No progress output.
    #[arg(short = 'q', long = "quiet")]
    quiet: bool,
    /// Overwrite output that already holds valid metadata.
    #[arg(long = "force")]
    force: bool,
}

struct Feed<'a> {
    out: Option<FileDevice>,
    args: &'a Args,
    r: Option<Restorer<FileDevice>>,
}

impl Feed<'_> {
    fn restorer(&mut self) -> Result<&mut Restorer<FileDevice>> {
        self.r
            .as_mut()
            .ok_or_else(|| anyhow!("element outside <superblock>"))
    }
}

impl MetadataVisitor for Feed<'_> {
    fn superblock_b(&mut self, sb: &Superblock) -> Result<Visit> {
        let dev = self
            .out
            .take()
            .ok_or_else(|| anyhow!("more than one <superblock>"))?;
        let h = RestoreHeader {
            time: sb.time,
            transaction_id: self.args.transaction_id.unwrap_or(sb.transaction),
            data_block_size: self.args.data_block_size.unwrap_or(sb.data_block_size),
            nr_data_blocks: self.args.nr_data_blocks.unwrap_or(sb.nr_data_blocks),
            flags: sb.flags.unwrap_or(0),
        };
        self.r = Some(Restorer::new(dev, h, 4096).map_err(|e| anyhow!("{e}"))?);
        Ok(Visit::Continue)
    }
    fn superblock_e(&mut self) -> Result<Visit> {
        let r = self
            .r
            .take()
            .ok_or_else(|| anyhow!("</superblock> without <superblock>"))?;
        r.finish()
            .map_err(|e| anyhow!("{e}"))?
            .close()
            .map_err(|e| anyhow!("{e}"))?;
        Ok(Visit::Continue)
    }
    fn device_b(&mut self, d: &Device) -> Result<Visit> {
        let details = DeviceDetails {
            mapped_blocks: d.mapped_blocks,
            transaction_id: d.transaction,
            creation_time: d.creation_time,
            snapshotted_time: d.snap_time,
        };
        self.restorer()?
            .begin_device(u64::from(d.dev_id), details)
            .map_err(|e| anyhow!("{e}"))?;
        Ok(Visit::Continue)
    }
    fn device_e(&mut self) -> Result<Visit> {
        self.restorer()?.end_device().map_err(|e| anyhow!("{e}"))?;
        Ok(Visit::Continue)
    }
    fn map(&mut self, m: &Map) -> Result<Visit> {
        let r = self.restorer()?;
        for k in 0..m.len {
            r.map(m.thin_begin + k, m.data_begin + k, m.time)
                .map_err(|e| anyhow!("{e}"))?;
        }
        Ok(Visit::Continue)
    }
    fn eof(&mut self) -> Result<Visit> {
        if self.r.is_some() {
            bail!("input ends inside <superblock>");
        }
        Ok(Visit::Continue)
    }
}

/// Counts bytes read, for the progress bar.
struct Progress<R> {
    inner: R,
    bar: Option<indicatif::ProgressBar>,
}

impl<R: Read> Read for Progress<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(b) = &self.bar {
            b.inc(n as u64);
        }
        Ok(n)
    }
}

fn go(a: &Args) -> Result<()> {
    let input = a
        .input
        .as_ref()
        .ok_or_else(|| anyhow!("No input file provided."))?;
    let output = a
        .output
        .as_ref()
        .ok_or_else(|| anyhow!("No output file provided."))?;
    let file = File::open(input).map_err(|e| anyhow!("{}: {e}", input.display()))?;
    let mut dev = FileDevice::open(output).map_err(|e| anyhow!("{}: {e}", output.display()))?;
    if !a.force && read_superblock(&mut dev).is_ok() {
        bail!(
            "{} already holds valid metadata; use --force to overwrite it",
            output.display()
        );
    }
    let bar = (!a.quiet && std::io::stderr().is_terminal()).then(|| {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        indicatif::ProgressBar::new(len)
    });
    let reader = BufReader::with_capacity(
        1 << 20,
        Progress {
            inner: file,
            bar: bar.clone(),
        },
    );
    let mut feed = Feed {
        out: Some(dev),
        args: a,
        r: None,
    };
    parse_xml(reader, &mut feed).map_err(|e| anyhow!("{}: {e}", input.display()))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if feed.out.is_some() {
        bail!("{}: no <superblock> in the input", input.display());
    }
    Ok(())
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
    match go(&a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::from(1)
        }
    }
}
