//! `thin_delta`: the differences between two thin devices, in 0.9's XML.
//!
//! Each device's mappings are read in order and merged into runs (consecutive virtual blocks
//! on consecutive data blocks; times are ignored), then the two run lists are walked
//! together. Every step emits one event for the overlap of the two current runs (or the part
//! of one that the other does not cover); the plain format merges events of the same kind
//! that touch, the `--verbose` format lists each event as a `<range>` inside blocks of one
//! kind. Memory: the two run lists (24 bytes a run).

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use thin_core::thin::reader::Source;

use crate::getopt::{self, Arg, Item, Long};
use crate::meta_open;

/// Parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaOptions {
    pub path: String,
    pub snap1: u64,
    pub snap2: u64,
    pub verbose: bool,
    /// `None`: live trees; `Some(None)`: the held snapshot; `Some(Some(b))`: the one at `b`.
    pub metadata_snap: Option<Option<u64>>,
}

/// A run of mappings: `len` virtual blocks from `vbegin` on data blocks from `dbegin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub vbegin: u64,
    pub dbegin: u64,
    pub len: u64,
}

impl Run {
    fn consume(&mut self, n: u64) {
        let n = n.min(self.len);
        self.vbegin += n;
        self.dbegin += n;
        self.len -= n;
    }
}

/// Builds runs from mappings given in ascending virtual order.
#[derive(Debug, Default)]
pub struct RunBuilder {
    runs: Vec<Run>,
}

impl RunBuilder {
    pub fn push(&mut self, vblock: u64, dblock: u64) {
        if let Some(last) = self.runs.last_mut() {
            if last.vbegin.checked_add(last.len) == Some(vblock)
                && last.dbegin.checked_add(last.len) == Some(dblock)
            {
                last.len += 1;
                return;
            }
        }
        self.runs.push(Run {
            vbegin: vblock,
            dbegin: dblock,
            len: 1,
        });
    }
    pub fn finish(self) -> Vec<Run> {
        self.runs
    }
}

/// Kinds of difference, in 0.9's element names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    LeftOnly,
    RightOnly,
    Different,
    Same,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::LeftOnly => "left_only",
            Kind::RightOnly => "right_only",
            Kind::Different => "different",
            Kind::Same => "same",
        }
    }
}

/// One step of the diff: `len` blocks from `vbegin`; `left`/`right` data blocks where mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub kind: Kind,
    pub vbegin: u64,
    pub left: u64,
    pub right: u64,
    pub len: u64,
}

/// Walks two run lists (each ascending and non-overlapping) and reports every difference.
pub fn diff_runs(left: &[Run], right: &[Run], mut emit: impl FnMut(Event)) {
    let (mut li, mut ri) = (left.iter().copied(), right.iter().copied());
    let (mut l, mut r) = (li.next(), ri.next());
    loop {
        match (l.as_mut(), r.as_mut()) {
            (Some(a), Some(b)) => {
                if a.vbegin < b.vbegin {
                    let n = a.len.min(b.vbegin - a.vbegin);
                    emit(Event {
                        kind: Kind::LeftOnly,
                        vbegin: a.vbegin,
                        left: a.dbegin,
                        right: 0,
                        len: n,
                    });
                    a.consume(n);
                } else if a.vbegin > b.vbegin {
                    let n = b.len.min(a.vbegin - b.vbegin);
                    emit(Event {
                        kind: Kind::RightOnly,
                        vbegin: b.vbegin,
                        left: 0,
                        right: b.dbegin,
                        len: n,
                    });
                    b.consume(n);
                } else {
                    let n = a.len.min(b.len);
                    let kind = if a.dbegin == b.dbegin {
                        Kind::Same
                    } else {
                        Kind::Different
                    };
                    emit(Event {
                        kind,
                        vbegin: a.vbegin,
                        left: a.dbegin,
                        right: b.dbegin,
                        len: n,
                    });
                    a.consume(n);
                    b.consume(n);
                }
                if a.len == 0 {
                    l = li.next();
                }
                if r.as_ref().is_some_and(|b| b.len == 0) {
                    r = ri.next();
                }
            }
            (Some(a), None) => {
                emit(Event {
                    kind: Kind::LeftOnly,
                    vbegin: a.vbegin,
                    left: a.dbegin,
                    right: 0,
                    len: a.len,
                });
                l = li.next();
            }
            (None, Some(b)) => {
                emit(Event {
                    kind: Kind::RightOnly,
                    vbegin: b.vbegin,
                    left: 0,
                    right: b.dbegin,
                    len: b.len,
                });
                r = ri.next();
            }
            (None, None) => break,
        }
    }
}

/// Writes the `<diff>` body (indented two levels) for `left` against `right`.
pub fn write_diff(
    left: &[Run],
    right: &[Run],
    verbose: bool,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let mut res = Ok(());
    let mut put = |s: String| {
        if res.is_ok() {
            res = out.write_all(s.as_bytes());
        }
    };
    if verbose {
        let mut open: Option<Kind> = None;
        diff_runs(left, right, |e| {
            if open != Some(e.kind) {
                if let Some(k) = open {
                    put(format!("    </{}>\n", k.name()));
                }
                put(format!("    <{}>\n", e.kind.name()));
                open = Some(e.kind);
            }
            put(match e.kind {
                Kind::Different => format!(
                    "      <range begin=\"{}\" left_data_begin=\"{}\" right_data_begin=\"{}\" length=\"{}\"/>\n",
                    e.vbegin, e.left, e.right, e.len
                ),
                Kind::RightOnly => format!(
                    "      <range begin=\"{}\" data_begin=\"{}\" length=\"{}\"/>\n",
                    e.vbegin, e.right, e.len
                ),
                _ => format!(
                    "      <range begin=\"{}\" data_begin=\"{}\" length=\"{}\"/>\n",
                    e.vbegin, e.left, e.len
                ),
            });
        });
        if let Some(k) = open {
            put(format!("    </{}>\n", k.name()));
        }
    } else {
        // (kind, begin, end) of the run being merged.
        let mut cur: Option<(Kind, u64, u64)> = None;
        let line = |(k, b, e): (Kind, u64, u64)| {
            format!("    <{} begin=\"{b}\" length=\"{}\"/>\n", k.name(), e - b)
        };
        diff_runs(left, right, |e| {
            match cur.as_mut() {
                Some((k, _, end)) if *k == e.kind && *end == e.vbegin => {
                    *end += e.len;
                    return;
                }
                Some(_) => {
                    if let Some(c) = cur {
                        put(line(c));
                    }
                }
                None => {}
            }
            cur = Some((e.kind, e.vbegin, e.vbegin + e.len));
        });
        if let Some(c) = cur {
            put(line(c));
        }
    }
    res
}

fn usage(prog: &str, w: &mut dyn Write) {
    let _ = writeln!(
        w,
        "Usage: {prog} [options] <device or file>\n\
         Options:\n  {{--thin1, --snap1}}\n  {{--thin2, --snap2}}\n  \
         {{-m, --metadata-snap}} [block#]\n  {{--verbose}}\n  {{-h|--help}}\n  {{-V|--version}}"
    );
}

/// boost::lexical_cast<uint64_t> rules: optional sign (a minus wraps), then digits only.
fn parse_u64(s: &str) -> Option<u64> {
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: u64 = digits.parse().ok()?;
    Some(if neg { v.wrapping_neg() } else { v })
}

fn delta(opts: &DeltaOptions, out: &mut dyn Write) -> Result<(), String> {
    let source = match opts.metadata_snap {
        None => Source::Live,
        Some(at) => Source::MetadataSnap(at),
    };
    let mut r = meta_open::open_reader(&opts.path, source)?;
    let sb = r.superblock().clone();
    let mut sides = Vec::with_capacity(2);
    for (n, id) in [(1, opts.snap1), (2, opts.snap2)] {
        match r.device_root(id) {
            Ok(_) => {}
            Err(thin_core::thin::PoolError::NoSuchDevice(_)) => {
                return Err(format!("Unable to find mapping tree for snap{n} ({id})"));
            }
            Err(e) => return Err(meta_open::describe(&e)),
        }
    }
    for id in [opts.snap1, opts.snap2] {
        let mut b = RunBuilder::default();
        r.walk_mappings(id, |v, bt| {
            b.push(v, bt.block);
            true
        })
        .map_err(|e| meta_open::describe(&e))?;
        sides.push(b.finish());
    }
    let mut head = format!(
        "<superblock uuid=\"\" time=\"{}\" transaction=\"{}\" data_block_size=\"{}\" nr_data_blocks=\"{}",
        sb.time, sb.trans_id, sb.data_block_size, sb.data_sm_root.nr_blocks
    );
    if sb.held_root != 0 {
        head.push_str(&format!("\" metadata_snap=\"{}", sb.held_root));
    }
    head.push_str("\">\n");
    let io = |e: std::io::Error| format!("writing output: {e}");
    out.write_all(head.as_bytes()).map_err(io)?;
    writeln!(
        out,
        "  <diff left=\"{}\" right=\"{}\">",
        opts.snap1, opts.snap2
    )
    .map_err(io)?;
    write_diff(&sides[0], &sides[1], opts.verbose, out).map_err(io)?;
    out.write_all(b"  </diff>\n</superblock>\n").map_err(io)?;
    out.flush().map_err(io)
}

/// Runs the tool with explicit output streams; returns the exit code.
pub fn run_with(args: &[OsString], out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    const LONGS: &[Long] = &[
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
            name: "thin1",
            arg: Arg::Required,
            id: '1',
        },
        Long {
            name: "snap1",
            arg: Arg::Required,
            id: '1',
        },
        Long {
            name: "thin2",
            arg: Arg::Required,
            id: '2',
        },
        Long {
            name: "snap2",
            arg: Arg::Required,
            id: '2',
        },
        Long {
            name: "metadata-snap",
            arg: Arg::Optional,
            id: 'm',
        },
        Long {
            name: "verbose",
            arg: Arg::No,
            id: 'v',
        },
    ];
    let (prog, rest) = getopt::strings(args);
    let parsed = getopt::parse(&rest, "hVm::", LONGS);
    let die = |err: &mut dyn Write, msg: &str| {
        let _ = writeln!(err, "{msg}");
        usage(&prog, err);
        1
    };
    let (mut snap1, mut snap2, mut verbose, mut msnap) = (None, None, false, None);
    for item in parsed.items {
        match item {
            Item::Opt('h', _) => {
                usage(&prog, out);
                return 0;
            }
            Item::Opt('V', _) => {
                let _ = writeln!(out, "{}", meta_open::VERSION);
                return 0;
            }
            Item::Opt(c @ ('1' | '2'), v) => {
                let v = v.unwrap_or_default();
                match parse_u64(&v) {
                    Some(id) if c == '1' => snap1 = Some(id),
                    Some(id) => snap2 = Some(id),
                    None => return die(err, &format!("Couldn't parse thin id {c}: '{v}'")),
                }
            }
            Item::Opt('m', v) => {
                msnap = Some(match v {
                    None => None,
                    Some(v) => match parse_u64(&v) {
                        Some(b) => Some(b),
                        None => {
                            return die(
                                err,
                                &format!("Couldn't parse metadata snapshot block: '{v}'"),
                            )
                        }
                    },
                });
            }
            Item::Opt('v', _) => verbose = true,
            Item::Opt(..) => {}
            Item::Bad(msg) => {
                let _ = writeln!(err, "{prog}: {msg}");
                usage(&prog, err);
                return 1;
            }
        }
    }
    let Some(path) = parsed.operands.first() else {
        return die(err, "No input device provided.");
    };
    let Some(snap1) = snap1 else {
        return die(err, "--snap1 not specified.");
    };
    let Some(snap2) = snap2 else {
        return die(err, "--snap2 not specified.");
    };
    let opts = DeltaOptions {
        path: path.clone(),
        snap1,
        snap2,
        verbose,
        metadata_snap: msnap,
    };
    match delta(&opts, out) {
        Ok(()) => 0,
        Err(e) => die(err, &e),
    }
}

/// Runs the tool.
pub fn run(args: Vec<OsString>) -> ExitCode {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let mut out = std::io::BufWriter::new(stdout.lock());
    ExitCode::from(run_with(&args, &mut out, &mut stderr.lock()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(maps: &[(u64, u64)]) -> Vec<Run> {
        let mut b = RunBuilder::default();
        for &(v, d) in maps {
            b.push(v, d);
        }
        b.finish()
    }

    fn plain(l: &[Run], r: &[Run]) -> String {
        let mut v = Vec::new();
        write_diff(l, r, false, &mut v).expect("write to a Vec");
        String::from_utf8(v).expect("utf8")
    }

    #[test]
    fn residue_after_the_other_side_ends_is_reported() {
        // left: 0..10 on 0..10; right: 0..3 on 0..3 and 5 on 100.
        let l = runs(&(0..10).map(|i| (i, i)).collect::<Vec<_>>());
        let r = runs(&[(0, 0), (1, 1), (2, 2), (5, 100)]);
        assert_eq!(
            plain(&l, &r),
            "    <same begin=\"0\" length=\"3\"/>\n    <left_only begin=\"3\" length=\"2\"/>\n    \
             <different begin=\"5\" length=\"1\"/>\n    <left_only begin=\"6\" length=\"4\"/>\n"
        );
    }

    #[test]
    fn empty_sides() {
        assert_eq!(plain(&[], &[]), "");
        let r = runs(&[(7, 1), (8, 9)]);
        assert_eq!(
            plain(&[], &r),
            "    <right_only begin=\"7\" length=\"2\"/>\n"
        );
    }

    #[test]
    fn ids_parse_like_lexical_cast() {
        assert_eq!(parse_u64("12"), Some(12));
        assert_eq!(parse_u64("+3"), Some(3));
        assert_eq!(parse_u64("-1"), Some(u64::MAX));
        assert_eq!(parse_u64(""), None);
        assert_eq!(parse_u64("1x"), None);
        assert_eq!(parse_u64(" 1"), None);
    }
}
