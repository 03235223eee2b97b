//! `thin_restore -i XML -o META [--transaction-id N] [--data-block-size N] [--nr-data-blocks N]
//! [-q] [--force]`
//!
//! Builds fresh metadata from XML (trees built bottom-up). The output must exist (a file or
//! device; its size is the metadata size). Unlike Debian's 0.9, output that already holds
//! valid metadata is refused unless `--force` is given: restoring over a live pool's
//! metadata is an easy way to lose it. (`--force` is not in the usage text, which is 0.9's
//! byte for byte; the refusal message names it.)
//!
//! Command line, usage text, `-h`/`-V`, usage errors, the checks of the input and output
//! paths (output first, as 0.9) and exit codes as Debian's 0.9 (GNU `getopt_long` rules, see
//! [`crate::getopt`]; numbers read like `boost::lexical_cast`). A progress bar is drawn on
//! stderr when it is a terminal, unless `-q`.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufReader, IsTerminal, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use thin_core::file::FileDevice;
use thin_core::thin::pool::read_superblock;
use thin_core::thin::restore::{RestoreHeader, Restorer};
use thin_core::thin::DeviceDetails;

use crate::getopt::{self, Arg, Item, Long};
use crate::ir::{Device, Map, MetadataVisitor, Superblock, Visit};
use crate::meta_open;
use crate::xml::parse_xml;

fn usage(prog: &str, w: &mut dyn Write) {
    let _ = writeln!(
        w,
        "Usage: {prog} [options]\n\
         Options:\n  {{-h|--help}}\n  {{-i|--input}} <input xml file>\n  \
         {{-o|--output}} <output device or file>\n  {{--transaction-id}} <natural>\n  \
         {{--data-block-size}} <natural>\n  {{--nr-data-blocks}} <natural>\n  \
         {{-q|--quiet}}\n  {{-V|--version}}"
    );
}

const NO_OUTPUT: &str = "Output file does not exist.

The output file should either be a block device,
or an existing file.  The file needs to be large
enough to hold the metadata.";

/// The parsed command line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Args {
    pub input: String,
    pub output: String,
    pub transaction_id: Option<u64>,
    pub data_block_size: Option<u32>,
    pub nr_data_blocks: Option<u64>,
    pub quiet: bool,
    /// Overwrite output that already holds valid metadata.
    pub force: bool,
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    /// Restore with these arguments.
    Run(Args),
    /// Print this to stdout and exit 0 (`-h`, `-V`).
    Out(String),
    /// Print this to stderr and exit 1.
    Fail(String),
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
        name: "quiet",
        arg: Arg::No,
        id: 'q',
    },
    Long {
        name: "version",
        arg: Arg::No,
        id: 'V',
    },
    Long {
        name: "force",
        arg: Arg::No,
        id: 'F',
    },
];

/// Parses argv (with argv[0]) the way 0.9's thin_restore does, options acted on in order.
pub fn parse_args(args: &[OsString]) -> Parse {
    let (prog, rest) = getopt::strings(args);
    let parsed = getopt::parse(&rest, "hi:o:qV", LONGS);
    let usage_s = || {
        let mut v = Vec::new();
        usage(&prog, &mut v);
        String::from_utf8_lossy(&v).into_owned()
    };
    let bad =
        |what: &str, v: &str| Parse::Fail(format!("Couldn't parse {what}: '{v}'\n{}", usage_s()));
    let (mut input, mut output) = (None, None);
    let mut a = Args::default();
    for item in parsed.items {
        match item {
            Item::Opt('h', _) => return Parse::Out(usage_s()),
            Item::Opt('V', _) => return Parse::Out(format!("{}\n", meta_open::VERSION)),
            Item::Opt('i', v) => input = v,
            Item::Opt('o', v) => output = v,
            Item::Opt('q', _) => a.quiet = true,
            Item::Opt('F', _) => a.force = true,
            Item::Opt('1', v) => {
                let v = v.unwrap_or_default();
                match getopt::lexical_u64(&v) {
                    Some(n) => a.transaction_id = Some(n),
                    None => return bad("transaction id", &v),
                }
            }
            Item::Opt('2', v) => {
                let v = v.unwrap_or_default();
                match getopt::lexical_u64(&v).and_then(|n| u32::try_from(n).ok()) {
                    Some(n) => a.data_block_size = Some(n),
                    None => return bad("data block size", &v),
                }
            }
            Item::Opt('3', v) => {
                let v = v.unwrap_or_default();
                match getopt::lexical_u64(&v) {
                    Some(n) => a.nr_data_blocks = Some(n),
                    None => return bad("nr data blocks", &v),
                }
            }
            Item::Opt(..) => {}
            Item::Bad(msg) => return Parse::Fail(format!("{prog}: {msg}\n{}", usage_s())),
        }
    }
    if !parsed.operands.is_empty() {
        return Parse::Fail(usage_s());
    }
    let Some(input) = input else {
        return Parse::Fail(format!("No input file provided.\n\n{}", usage_s()));
    };
    let Some(output) = output else {
        return Parse::Fail(format!("No output file provided.\n\n{}", usage_s()));
    };
    a.input = input;
    a.output = output;
    Parse::Run(a)
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
    // 0.9 checks the output path first, then the input.
    match std::fs::metadata(&a.output) {
        Err(_) => bail!("{NO_OUTPUT}"),
        Ok(m) if !(m.file_type().is_file() || m.file_type().is_block_device()) => {
            bail!("bad path")
        }
        Ok(_) => {}
    }
    match std::fs::metadata(&a.input) {
        Err(_) => bail!("Couldn't stat file"),
        Ok(m) if !m.file_type().is_file() => bail!("Not a regular file"),
        Ok(_) => {}
    }
    let (input, output) = (Path::new(&a.input), Path::new(&a.output));
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
    let parsed = parse_xml(reader, &mut feed);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    parsed.map_err(|e| anyhow!("{}: {e}", input.display()))?;
    if feed.out.is_some() {
        bail!("{}: no <superblock> in the input", input.display());
    }
    Ok(())
}

/// Runs the tool with explicit output streams; returns the exit code. The progress bar, when
/// shown, goes to the process's stderr (only when that is a terminal).
pub fn run_with(args: &[OsString], out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let a = match parse_args(args) {
        Parse::Run(a) => a,
        Parse::Out(s) => {
            let _ = out.write_all(s.as_bytes());
            return 0;
        }
        Parse::Fail(s) => {
            let _ = err.write_all(s.as_bytes());
            return 1;
        }
    };
    match go(&a) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(err, "{e:#}");
            1
        }
    }
}

/// Runs the tool.
pub fn run(args: Vec<OsString>) -> ExitCode {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    ExitCode::from(run_with(&args, &mut stdout.lock(), &mut stderr.lock()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Parse {
        let argv: Vec<OsString> = std::iter::once("thin_restore")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect();
        parse_args(&argv)
    }

    fn fail_text(args: &[&str]) -> String {
        match p(args) {
            Parse::Fail(s) => s,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn options_and_abbreviations() {
        let Parse::Run(a) = p(&[
            "--i", "x.xml", "-om", "--tr", "+7", "--d=128", "--n", "-1", "--qu", "--force",
        ]) else {
            panic!()
        };
        assert_eq!(
            a,
            Args {
                input: "x.xml".into(),
                output: "m".into(),
                transaction_id: Some(7),
                data_block_size: Some(128),
                nr_data_blocks: Some(u64::MAX),
                quiet: true,
                force: true,
            }
        );
    }

    #[test]
    fn errors_like_0_9() {
        let usage = match p(&["--help"]) {
            Parse::Out(u) => u,
            other => panic!("{other:?}"),
        };
        assert!(usage.starts_with("Usage: thin_restore [options]\nOptions:\n  {-h|--help}\n"));
        assert!(!usage.contains("force"));
        assert_eq!(p(&["-V"]), Parse::Out("0.9.0\n".into()));
        assert_eq!(
            fail_text(&["-o", "m"]),
            format!("No input file provided.\n\n{usage}")
        );
        assert_eq!(
            fail_text(&["-i", "x"]),
            format!("No output file provided.\n\n{usage}")
        );
        assert_eq!(fail_text(&["-i", "x", "-o", "m", "extra"]), usage);
        assert_eq!(
            fail_text(&["-i", "x", "-o", "m", "--transaction-id", " 5"]),
            format!("Couldn't parse transaction id: ' 5'\n{usage}")
        );
        assert!(fail_text(&["--data-block-size", "1x"])
            .starts_with("Couldn't parse data block size: '1x'\n"));
        assert!(
            fail_text(&["--nr-data-blocks", ""]).starts_with("Couldn't parse nr data blocks: ''\n")
        );
        assert_eq!(
            fail_text(&["-x"]),
            format!("thin_restore: invalid option -- 'x'\n{usage}")
        );
    }

    #[test]
    fn run_with_checks_output_then_input() {
        let run = |v: &[&str]| {
            let argv: Vec<OsString> = v.iter().map(OsString::from).collect();
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let code = run_with(&argv, &mut out, &mut err);
            assert!(out.is_empty());
            (code, String::from_utf8(err).unwrap())
        };
        let (code, err) = run(&["thin_restore", "-i", "/nonexistent", "-o", "/nonexistent"]);
        assert_eq!((code, err), (1, format!("{NO_OUTPUT}\n")));
        let dir = std::env::temp_dir();
        let d = dir.to_str().unwrap();
        assert_eq!(
            run(&["thin_restore", "-i", "/nonexistent", "-o", d]),
            (1, "bad path\n".to_string())
        );
    }
}
