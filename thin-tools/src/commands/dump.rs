//! `thin_dump [-f xml|human_readable] [-r] [-m[block]] [-o file] [--dev-id id]… [--skip-mappings] META`
//!
//! Command line, usage text, `-h`/`-V`, usage errors and exit codes as Debian's 0.9 (GNU
//! `getopt_long` rules, see [`crate::getopt`]): the metadata snapshot block is an optional
//! argument, so only `-m5` / `--metadata-snap=5` name one (`-m 5 META` takes `5` as the
//! input); `-m0` means the snapshot the superblock holds; numbers are read like `strtoull`.
//! Unlike 0.9, an `-o` file that cannot be created is an error (0.9 silently writes nothing).

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};

use thin_core::thin::pool::read_superblock;
use thin_core::thin::reader::{Reader, Source};
use thin_core::thin::PoolError;

use crate::dump::{dump, DumpOptions};
use crate::getopt::{self, Arg, Item, Long};
use crate::human_readable::HumanReadableWriter;
use crate::ir::MetadataVisitor;
use crate::meta_open;
use crate::xml::XmlWriter;

fn usage(prog: &str, w: &mut dyn Write) {
    let _ = writeln!(
        w,
        "Usage: {prog} [options] {{device|file}}\n\
         Options:\n  {{-h|--help}}\n  {{-f|--format}} {{xml|human_readable|custom}}\n  \
         {{-r|--repair}}\n  {{-m|--metadata-snap}} [block#]\n  {{-o <xml file>}}\n  \
         {{--dev-id}} <dev-id>\n  {{--skip-mappings}}\n  {{-V|--version}}"
    );
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Xml,
    HumanReadable,
}

/// The parsed command line.
#[derive(Debug, PartialEq, Eq)]
pub struct Args {
    /// As given; checked (like 0.9) once the input is known to be there.
    pub format: String,
    pub repair: bool,
    /// `None`: live trees; `Some(None)`: the held snapshot; `Some(Some(b))`: the one at `b`.
    pub metadata_snap: Option<Option<u64>>,
    pub output: Option<String>,
    pub dev_ids: Vec<u64>,
    pub skip_mappings: bool,
    pub input: String,
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    /// Dump with these arguments.
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
        name: "metadata-snap",
        arg: Arg::Optional,
        id: 'm',
    },
    Long {
        name: "output",
        arg: Arg::Required,
        id: 'o',
    },
    Long {
        name: "format",
        arg: Arg::Required,
        id: 'f',
    },
    Long {
        name: "repair",
        arg: Arg::No,
        id: 'r',
    },
    Long {
        name: "dev-id",
        arg: Arg::Required,
        id: '1',
    },
    Long {
        name: "skip-mappings",
        arg: Arg::No,
        id: '2',
    },
    Long {
        name: "version",
        arg: Arg::No,
        id: 'V',
    },
];

/// Parses argv (with argv[0]) the way 0.9's thin_dump does, options acted on in order.
pub fn parse_args(args: &[OsString]) -> Parse {
    let (prog, rest) = getopt::strings(args);
    let parsed = getopt::parse(&rest, "hm::o:f:rV", LONGS);
    let usage_s = || {
        let mut v = Vec::new();
        usage(&prog, &mut v);
        String::from_utf8_lossy(&v).into_owned()
    };
    let mut a = Args {
        format: "xml".into(),
        repair: false,
        metadata_snap: None,
        output: None,
        dev_ids: Vec::new(),
        skip_mappings: false,
        input: String::new(),
    };
    for item in parsed.items {
        match item {
            Item::Opt('h', _) => return Parse::Out(usage_s()),
            Item::Opt('V', _) => return Parse::Out(format!("{}\n", meta_open::VERSION)),
            Item::Opt('f', v) => a.format = v.unwrap_or_default(),
            Item::Opt('r', _) => a.repair = true,
            Item::Opt('m', None) => a.metadata_snap = Some(None),
            Item::Opt('m', Some(v)) => match getopt::strtoull(&v) {
                Some(0) => a.metadata_snap = Some(None),
                Some(b) => a.metadata_snap = Some(Some(b)),
                None => {
                    return Parse::Fail(format!("couldn't parse <metadata-snap>\n{}", usage_s()))
                }
            },
            Item::Opt('o', v) => a.output = v,
            Item::Opt('1', v) => match v.as_deref().and_then(getopt::strtoull) {
                Some(id) => a.dev_ids.push(id),
                None => return Parse::Fail(format!("couldn't parse <dev-id>\n{}", usage_s())),
            },
            Item::Opt('2', _) => a.skip_mappings = true,
            Item::Opt(..) => {}
            Item::Bad(msg) => return Parse::Fail(format!("{prog}: {msg}\n{}", usage_s())),
        }
    }
    match parsed.operands.into_iter().next() {
        Some(input) => {
            a.input = input;
            Parse::Run(a)
        }
        None => Parse::Fail(format!("No input file provided.\n{}", usage_s())),
    }
}

fn go(a: Args, out: &mut dyn Write) -> Result<()> {
    let format = match a.format.as_str() {
        "xml" => Format::Xml,
        "human_readable" => Format::HumanReadable,
        other => return Err(anyhow!("unknown format '{other}'")),
    };
    let source = match a.metadata_snap {
        None => Source::Live,
        Some(at) => Source::MetadataSnap(at),
    };
    let mut dev = meta_open::open_device(&a.input).map_err(|e| anyhow!(e))?;
    // 0.9 refuses -m (whatever block it names) when the superblock holds no snapshot.
    if a.metadata_snap.is_some() && read_superblock(&mut dev).is_ok_and(|sb| sb.held_root == 0) {
        bail!("{}", meta_open::describe(&PoolError::NoMetadataSnap));
    }
    let mut reader = Reader::open(dev, meta_open::CACHE_BLOCKS, source)
        .map_err(|e| anyhow!(meta_open::describe(&e)))?;
    let mut file;
    let sink: &mut dyn Write = match &a.output {
        Some(p) => {
            file = File::create(p).map_err(|e| anyhow!("{p}: {e}"))?;
            &mut file
        }
        None => out,
    };
    let sink = BufWriter::with_capacity(1 << 20, sink);
    let opts = DumpOptions {
        dev_ids: a.dev_ids,
        skip_mappings: a.skip_mappings,
        repair: a.repair,
    };
    let mut visitor: Box<dyn MetadataVisitor + '_> = match format {
        Format::Xml => Box::new(XmlWriter::new(sink)),
        Format::HumanReadable => Box::new(HumanReadableWriter::new(sink)),
    };
    dump(
        &mut reader,
        a.metadata_snap.is_some(),
        &opts,
        visitor.as_mut(),
    )
}

/// Runs the tool with explicit output streams; returns the exit code.
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
    match go(a, out) {
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
        let argv: Vec<OsString> = std::iter::once("/usr/sbin/thin_dump")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect();
        parse_args(&argv)
    }

    fn run_args(args: &[&str]) -> Args {
        match p(args) {
            Parse::Run(a) => a,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    fn fail_first_line(args: &[&str]) -> String {
        match p(args) {
            Parse::Fail(s) => s.lines().next().unwrap_or_default().to_string(),
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn metadata_snap_argument_is_optional_and_attached() {
        assert_eq!(run_args(&["-m5", "m"]).metadata_snap, Some(Some(5)));
        assert_eq!(
            run_args(&["--metadata-snap=5", "m"]).metadata_snap,
            Some(Some(5))
        );
        assert_eq!(run_args(&["-m0", "m"]).metadata_snap, Some(None));
        let a = run_args(&["-m", "5", "m"]);
        assert_eq!((a.metadata_snap, a.input.as_str()), (Some(None), "5"));
        assert_eq!(run_args(&["--m", "m"]).metadata_snap, Some(None));
        assert_eq!(
            fail_first_line(&["-mx", "m"]),
            "couldn't parse <metadata-snap>"
        );
    }

    #[test]
    fn other_options() {
        let a = run_args(&[
            "--skip-m",
            "--dev-id",
            "1x",
            "--dev-id=7",
            "-rf",
            "human_readable",
            "--output",
            "o.xml",
            "m",
            "m2",
        ]);
        assert_eq!(
            a,
            Args {
                format: "human_readable".into(),
                repair: true,
                metadata_snap: None,
                output: Some("o.xml".into()),
                dev_ids: vec![1, 7],
                skip_mappings: true,
                input: "m".into(),
            }
        );
        // The format is only checked once the input is known.
        assert_eq!(run_args(&["-f", "bad", "m"]).format, "bad");
        assert_eq!(fail_first_line(&["-f", "bad"]), "No input file provided.");
        assert_eq!(
            fail_first_line(&["--dev-id", "x", "m"]),
            "couldn't parse <dev-id>"
        );
        assert_eq!(
            fail_first_line(&["--dev"]),
            "thin_dump: option '--dev-id' requires an argument"
        );
        assert_eq!(
            fail_first_line(&["--help=3"]),
            "thin_dump: option '--help' doesn't allow an argument"
        );
        assert_eq!(p(&["-V", "-x"]), Parse::Out("0.9.0\n".into()));
        let Parse::Out(u) = p(&["-h"]) else { panic!() };
        assert!(u.contains("  {-m|--metadata-snap} [block#]\n  {-o <xml file>}\n"));
    }

    #[test]
    fn run_with_checks_format_before_the_input() {
        let argv: Vec<OsString> = ["thin_dump", "-f", "custom", "/nonexistent"]
            .iter()
            .map(OsString::from)
            .collect();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(run_with(&argv, &mut out, &mut err), 1);
        assert_eq!(err, b"unknown format 'custom'\n");
        assert!(out.is_empty());
    }
}
