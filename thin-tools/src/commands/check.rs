//! `thin_check [-q] [-m] [--super-block-only] [--skip-mappings] [--ignore-non-fatal-errors]
//! [--clear-needs-check-flag] [--override-mapping-root BLOCK] META`
//!
//! Command line, usage text, `-h`/`-V` and usage errors as Debian's 0.9 (GNU `getopt_long`
//! rules, see [`crate::getopt`]). Exit status as 0.9's: 0 when clean, 1 on any error (usage
//! errors and non-fatal problems included, unless `--ignore-non-fatal-errors`). Progress and
//! problems go to stderr, `TRANSACTION_ID=` and `METADATA_FREE_BLOCKS=` to stdout; `-q`
//! silences both (but not usage errors, as in 0.9). Unlike 0.9, `--auto-repair` is refused
//! with a message (0.9 accepts it and only checks): repairs are thin_repair's job.

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use thin_core::file::FileDevice;
use thin_core::thin::check::{check, CheckOptions, Severity};
use thin_core::thin::pool::read_superblock;
use thin_core::thin::{OpenOptions, Pool};

use crate::getopt::{self, Arg, Item, Long};
use crate::meta_open;

fn usage(prog: &str, w: &mut dyn Write) {
    let _ = writeln!(
        w,
        "Usage: {prog} [options] {{device|file}}\n\
         Options:\n  {{-q|--quiet}}\n  {{-h|--help}}\n  {{-V|--version}}\n  \
         {{-m|--metadata-snap}}\n  {{--auto-repair}}\n  {{--override-mapping-root}}\n  \
         {{--clear-needs-check-flag}}\n  {{--ignore-non-fatal-errors}}\n  {{--skip-mappings}}\n  \
         {{--super-block-only}}"
    );
}

/// The parsed command line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Args {
    pub quiet: bool,
    pub metadata_snap: bool,
    pub super_block_only: bool,
    pub skip_mappings: bool,
    pub ignore_non_fatal: bool,
    pub clear_needs_check: bool,
    pub auto_repair: bool,
    pub override_mapping_root: Option<u64>,
    pub input: String,
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    /// Check with these arguments.
    Run(Args),
    /// Print this to stdout and exit 0 (`-h`, `-V`).
    Out(String),
    /// Print this to stderr and exit 1.
    Fail(String),
}

const LONGS: &[Long] = &[
    Long {
        name: "quiet",
        arg: Arg::No,
        id: 'q',
    },
    Long {
        name: "help",
        arg: Arg::No,
        id: 'h',
    },
    Long {
        name: "version",
        arg: Arg::No,
        id: 'V',
    },
    Long {
        name: "super-block-only",
        arg: Arg::No,
        id: '1',
    },
    Long {
        name: "skip-mappings",
        arg: Arg::No,
        id: '2',
    },
    Long {
        name: "auto-repair",
        arg: Arg::No,
        id: '3',
    },
    Long {
        name: "ignore-non-fatal-errors",
        arg: Arg::No,
        id: '4',
    },
    Long {
        name: "clear-needs-check-flag",
        arg: Arg::No,
        id: '5',
    },
    Long {
        name: "override-mapping-root",
        arg: Arg::Required,
        id: '6',
    },
    Long {
        name: "metadata-snap",
        arg: Arg::No,
        id: 'm',
    },
];

/// Parses argv (with argv[0]) the way 0.9's thin_check does, options acted on in order.
pub fn parse_args(args: &[OsString]) -> Parse {
    let (prog, rest) = getopt::strings(args);
    let parsed = getopt::parse(&rest, "qhVm", LONGS);
    let usage_s = || {
        let mut v = Vec::new();
        usage(&prog, &mut v);
        String::from_utf8_lossy(&v).into_owned()
    };
    let mut a = Args::default();
    for item in parsed.items {
        match item {
            Item::Opt('q', _) => a.quiet = true,
            Item::Opt('h', _) => return Parse::Out(usage_s()),
            Item::Opt('V', _) => return Parse::Out(format!("{}\n", meta_open::VERSION)),
            Item::Opt('m', _) => a.metadata_snap = true,
            Item::Opt('1', _) => a.super_block_only = true,
            Item::Opt('2', _) => a.skip_mappings = true,
            Item::Opt('3', _) => a.auto_repair = true,
            Item::Opt('4', _) => a.ignore_non_fatal = true,
            Item::Opt('5', _) => a.clear_needs_check = true,
            Item::Opt('6', v) => {
                match v.as_deref().and_then(getopt::lexical_u64) {
                    Some(b) => a.override_mapping_root = Some(b),
                    None => return Parse::Fail(
                        "bad lexical cast: source type value could not be interpreted as target\n"
                            .into(),
                    ),
                }
            }
            Item::Opt(..) => {}
            Item::Bad(msg) => return Parse::Fail(format!("{prog}: {msg}\n{}", usage_s())),
        }
    }
    if a.clear_needs_check {
        let why = if a.metadata_snap {
            Some("cannot perform fix within metadata snap")
        } else if a.super_block_only || a.skip_mappings {
            Some("cannot perform fix without a full examination")
        } else if a.override_mapping_root.is_some() {
            Some("cannot perform fix with an overridden mapping root")
        } else {
            None
        };
        if let Some(why) = why {
            return Parse::Fail(format!("{why}\n{}", usage_s()));
        }
    }
    match parsed.operands.into_iter().next() {
        Some(input) => {
            a.input = input;
            Parse::Run(a)
        }
        None if a.quiet => Parse::Fail(String::new()),
        None => Parse::Fail(format!("No input file provided.\n{}", usage_s())),
    }
}

fn say(err: &mut dyn Write, quiet: bool, s: &str) {
    if !quiet {
        let _ = writeln!(err, "{s}");
    }
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
    let prog = getopt::strings(args).0;
    let quiet = a.quiet;
    if a.auto_repair {
        let _ = writeln!(
            err,
            "{prog}: --auto-repair is not supported; use thin_repair"
        );
        return 1;
    }
    let partial = a.metadata_snap
        || a.super_block_only
        || a.skip_mappings
        || a.override_mapping_root.is_some();
    let mut dev = match meta_open::open_device(&a.input) {
        Ok(d) => d,
        Err(e) => {
            say(err, quiet, &e);
            return 1;
        }
    };
    if a.metadata_snap && read_superblock(&mut dev).is_ok_and(|sb| sb.held_root == 0) {
        say(err, quiet, "No metadata snapshot found.");
        return 1;
    }
    let opts = CheckOptions {
        super_block_only: a.super_block_only,
        skip_mappings: a.skip_mappings,
        metadata_snap: a.metadata_snap,
        override_mapping_root: a.override_mapping_root,
        ..CheckOptions::default()
    };
    say(err, quiet, "examining superblock");
    if !a.super_block_only {
        say(err, quiet, "examining devices tree");
        say(
            err,
            quiet,
            if a.skip_mappings {
                "examining top level of mapping tree"
            } else {
                "examining mapping tree"
            },
        );
        if !partial {
            say(err, quiet, "checking space map counts");
        }
    }
    let report = check(&mut dev, &opts);
    for i in &report.issues {
        match i.severity {
            Severity::Fatal => say(err, quiet, &format!("  {}", i.message)),
            Severity::NonFatal => say(err, quiet, &format!("  (non-fatal) {}", i.message)),
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
            let _ = writeln!(out, "TRANSACTION_ID={}", sb.trans_id);
            let _ = writeln!(out, "METADATA_FREE_BLOCKS={}", report.metadata_free_blocks);
        }
    }
    if failed {
        return 1;
    }
    if a.clear_needs_check
        && report
            .superblock
            .as_ref()
            .is_some_and(|sb| sb.needs_check())
    {
        let r = FileDevice::open(Path::new(&a.input))
            .map_err(|e| e.to_string())
            .and_then(|dev| Pool::open(dev, OpenOptions::default()).map_err(|e| e.to_string()))
            .and_then(|mut p| p.set_needs_check(false).map_err(|e| e.to_string()));
        if let Err(e) = r {
            let _ = writeln!(err, "{prog}: clearing NEEDS_CHECK failed: {e}");
            return 1;
        }
    }
    0
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
        let argv: Vec<OsString> = std::iter::once("thin_check")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect();
        parse_args(&argv)
    }

    fn fail_first_line(args: &[&str]) -> String {
        match p(args) {
            Parse::Fail(s) => s.lines().next().unwrap_or_default().to_string(),
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn options_abbreviations_and_operands() {
        let Parse::Run(a) = p(&[
            "m",
            "--skip-m",
            "-qm",
            "--ig",
            "--override-mapping-root=+5",
            "extra",
        ]) else {
            panic!()
        };
        assert_eq!(
            a,
            Args {
                quiet: true,
                metadata_snap: true,
                skip_mappings: true,
                ignore_non_fatal: true,
                override_mapping_root: Some(5),
                input: "m".into(),
                ..Args::default()
            }
        );
        assert!(fail_first_line(&["--clear-needs-check-flag=", "m"])
            .contains("option '--clear-needs-check-flag' doesn't allow an argument"));
    }

    #[test]
    fn help_version_and_errors_like_0_9() {
        let Parse::Out(u) = p(&["-h", "-x"]) else {
            panic!()
        };
        assert!(u.starts_with("Usage: thin_check [options] {device|file}\nOptions:\n"));
        assert!(u.ends_with("  {--super-block-only}\n"));
        assert_eq!(p(&["-V"]), Parse::Out("0.9.0\n".into()));
        assert_eq!(
            fail_first_line(&["--s", "m"]),
            "thin_check: option '--s' is ambiguous; possibilities: '--super-block-only' '--skip-mappings'"
        );
        assert_eq!(
            fail_first_line(&["-m5", "m"]),
            "thin_check: invalid option -- '5'"
        );
        assert_eq!(fail_first_line(&[]), "No input file provided.");
        assert_eq!(p(&["-q"]), Parse::Fail(String::new()));
        assert_eq!(
            fail_first_line(&["--override-mapping-root", "1x", "m"]),
            "bad lexical cast: source type value could not be interpreted as target"
        );
        assert_eq!(
            fail_first_line(&["-q", "--clear-needs-check-flag", "-m", "m"]),
            "cannot perform fix within metadata snap"
        );
        assert_eq!(
            fail_first_line(&["--clear-needs-check-flag", "--skip-mappings", "m"]),
            "cannot perform fix without a full examination"
        );
        assert_eq!(
            fail_first_line(&[
                "--clear-needs-check-flag",
                "--override-mapping-root",
                "3",
                "m"
            ]),
            "cannot perform fix with an overridden mapping root"
        );
    }

    #[test]
    fn run_with_reports_missing_input_and_refuses_auto_repair() {
        let argv = |v: &[&str]| -> Vec<OsString> { v.iter().map(OsString::from).collect() };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run_with(
            &argv(&["thin_check", "/nonexistent/meta"]),
            &mut out,
            &mut err,
        );
        assert_eq!(
            (code, out.as_slice(), err.as_slice()),
            (1, &b""[..], &b"Couldn't stat path\n"[..])
        );
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run_with(
            &argv(&["thin_check", "--auto-repair", "/nonexistent/meta"]),
            &mut out,
            &mut err,
        );
        assert_eq!(code, 1);
        assert!(String::from_utf8_lossy(&err).contains("thin_repair"));
    }
}
