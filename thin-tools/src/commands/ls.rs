//! `thin_ls`: one line per thin device with its mapped, exclusive and shared space.
//!
//! A data block is *shared* when more than one mapping (of any device) points at it; the
//! count comes from a 2-bit-per-data-block table filled by walking every device, so memory is
//! bounded by `nr_data_blocks / 4` bytes. As in 0.9, shared = details' `mapped_blocks` −
//! exclusive, and human-readable sizes round the way 0.9 does ([`human_size`]).

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use thin_core::thin::reader::Source;

use crate::getopt::{self, Arg, Item, Long};
use crate::meta_open;

const FIELDS: &[&str] = &[
    "DEV",
    "MAPPED_BLOCKS",
    "EXCLUSIVE_BLOCKS",
    "SHARED_BLOCKS",
    "MAPPED_SECTORS",
    "EXCLUSIVE_SECTORS",
    "SHARED_SECTORS",
    "MAPPED_BYTES",
    "EXCLUSIVE_BYTES",
    "SHARED_BYTES",
    "MAPPED",
    "EXCLUSIVE",
    "SHARED",
    "TRANSACTION",
    "CREATE_TIME",
    "SNAP_TIME",
];

const DEFAULT_FIELDS: &[&str] = &["DEV", "MAPPED", "CREATE_TIME", "SNAP_TIME"];

/// Parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LsOptions {
    pub path: String,
    pub metadata_snap: bool,
    pub headers: bool,
    /// Indexes into the field list.
    pub fields: Vec<usize>,
}

fn usage(prog: &str, w: &mut dyn Write) {
    let _ = write!(
        w,
        "Usage: {prog} [options] {{metadata device}}\n\
         Options:\n  {{-h|--help}}\n  {{-m|--metadata-snap}}\n  {{--no-headers}}\n  \
         {{-o|--format <fields>}}\n  {{-V|--version}}\n\n\
         where <fields> is a comma separated list from:\n"
    );
    for f in FIELDS {
        let _ = writeln!(w, "  {f}");
    }
}

/// `a,b,c` → field indexes; a trailing comma is allowed, an empty name is not (as 0.9).
fn parse_fields(s: &str) -> Option<Vec<usize>> {
    let body = s.strip_suffix(',').unwrap_or(s);
    if body.is_empty() {
        return Some(Vec::new());
    }
    body.split(',')
        .map(|t| FIELDS.iter().position(|f| *f == t))
        .collect()
}

/// Formats a size given in sectors as 0.9's `thin_ls` does: bytes while they fit in 1 MiB by
/// whole KiB steps, then one more rounded step if the value still exceeds 8192 of its unit.
pub fn human_size(sectors: u64) -> String {
    const UNITS: [&str; 7] = ["", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut n = sectors.wrapping_mul(512);
    let mut i = 0;
    while n > 1024 * 1024 {
        n /= 1024;
        i += 1;
    }
    if n > 8 * 1024 {
        // Round half away from zero; n ≤ 2^20 so the division is exact enough.
        n = (n + 512) / 1024;
        i += 1;
    }
    format!("{n}{}", UNITS[i])
}

/// Two bits per data block: seen once, seen more than once.
struct SeenTable {
    bits: Vec<u64>,
    nr_blocks: u64,
}

impl SeenTable {
    fn new(nr_blocks: u64) -> Result<Self, String> {
        let words = usize::try_from(nr_blocks.div_ceil(32))
            .map_err(|_| "too many data blocks".to_string())?;
        let mut bits = Vec::new();
        bits.try_reserve_exact(words)
            .map_err(|_| format!("cannot allocate a table for {nr_blocks} data blocks"))?;
        bits.resize(words, 0);
        Ok(SeenTable { bits, nr_blocks })
    }
    fn slot(&self, b: u64) -> Option<(usize, u32)> {
        (b < self.nr_blocks).then(|| ((b / 32) as usize, 2 * (b % 32) as u32))
    }
    fn inc(&mut self, b: u64) -> bool {
        let Some((w, s)) = self.slot(b) else {
            return false;
        };
        let v = (self.bits[w] >> s) & 3;
        let nv = if v == 0 { 1 } else { 3 };
        self.bits[w] = (self.bits[w] & !(3 << s)) | (nv << s);
        true
    }
    fn exclusive(&self, b: u64) -> bool {
        self.slot(b)
            .is_some_and(|(w, s)| (self.bits[w] >> s) & 3 == 1)
    }
}

const DAMAGED: &str = "metadata contains errors (run thin_check for details).";

/// Rows of the table, values already formatted, one per device.
fn collect_rows(opts: &LsOptions) -> Result<Vec<Vec<String>>, String> {
    let source = if opts.metadata_snap {
        Source::MetadataSnap(None)
    } else {
        Source::Live
    };
    let mut r = meta_open::open_reader(&opts.path, source)?;
    let sb = r.superblock().clone();
    let devices = r.devices().map_err(|e| meta_open::describe(&e))?;
    let bs = u64::from(sb.data_block_size);
    let need_excl = opts.fields.iter().any(|&f| {
        matches!(
            FIELDS[f],
            "EXCLUSIVE_BLOCKS"
                | "SHARED_BLOCKS"
                | "EXCLUSIVE_SECTORS"
                | "SHARED_SECTORS"
                | "EXCLUSIVE_BYTES"
                | "SHARED_BYTES"
                | "EXCLUSIVE"
                | "SHARED"
        )
    });
    let mut excl = vec![0u64; devices.len()];
    if need_excl {
        let mut table = SeenTable::new(sb.data_sm_root.nr_blocks)?;
        for (id, _) in &devices {
            let mut bad = false;
            r.walk_mappings(*id, |_, bt| {
                bad = !table.inc(bt.block);
                !bad
            })
            .map_err(|e| meta_open::describe(&e))?;
            if bad {
                return Err(DAMAGED.to_string());
            }
        }
        for (n, (id, _)) in devices.iter().enumerate() {
            let mut count = 0u64;
            r.walk_mappings(*id, |_, bt| {
                if table.exclusive(bt.block) {
                    count += 1;
                }
                true
            })
            .map_err(|e| meta_open::describe(&e))?;
            excl[n] = count;
        }
    }
    let mut rows = Vec::with_capacity(devices.len());
    for (n, (id, d)) in devices.iter().enumerate() {
        let mapped = d.mapped_blocks;
        let ex = excl[n];
        let shared = mapped.wrapping_sub(ex);
        let row = opts
            .fields
            .iter()
            .map(|&f| match FIELDS[f] {
                "DEV" => id.to_string(),
                "MAPPED_BLOCKS" => mapped.to_string(),
                "EXCLUSIVE_BLOCKS" => ex.to_string(),
                "SHARED_BLOCKS" => shared.to_string(),
                "MAPPED_SECTORS" => mapped.wrapping_mul(bs).to_string(),
                "EXCLUSIVE_SECTORS" => ex.wrapping_mul(bs).to_string(),
                "SHARED_SECTORS" => shared.wrapping_mul(bs).to_string(),
                "MAPPED_BYTES" => mapped.wrapping_mul(bs).wrapping_mul(512).to_string(),
                "EXCLUSIVE_BYTES" => ex.wrapping_mul(bs).wrapping_mul(512).to_string(),
                "SHARED_BYTES" => shared.wrapping_mul(bs).wrapping_mul(512).to_string(),
                "MAPPED" => human_size(mapped.wrapping_mul(bs)),
                "EXCLUSIVE" => human_size(ex.wrapping_mul(bs)),
                "SHARED" => human_size(shared.wrapping_mul(bs)),
                "TRANSACTION" => d.transaction_id.to_string(),
                "CREATE_TIME" => d.creation_time.to_string(),
                _ => d.snapshotted_time.to_string(),
            })
            .collect();
        rows.push(row);
    }
    Ok(rows)
}

/// Right-justified columns, each followed by one space.
fn render(rows: &[Vec<String>], out: &mut dyn Write) -> std::io::Result<()> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            write!(out, "{c:>w$} ", w = widths[i])?;
        }
        writeln!(out)?;
    }
    Ok(())
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
            name: "metadata-snap",
            arg: Arg::No,
            id: 'm',
        },
        Long {
            name: "no-headers",
            arg: Arg::No,
            id: 'n',
        },
        Long {
            name: "format",
            arg: Arg::Required,
            id: 'o',
        },
        Long {
            name: "version",
            arg: Arg::No,
            id: 'V',
        },
    ];
    let (prog, rest) = getopt::strings(args);
    let parsed = getopt::parse(&rest, "hmo:V", LONGS);
    let mut opts = LsOptions {
        path: String::new(),
        metadata_snap: false,
        headers: true,
        fields: DEFAULT_FIELDS
            .iter()
            .filter_map(|d| FIELDS.iter().position(|f| f == d))
            .collect(),
    };
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
            Item::Opt('m', _) => opts.metadata_snap = true,
            Item::Opt('n', _) => opts.headers = false,
            Item::Opt('o', v) => match parse_fields(v.as_deref().unwrap_or("")) {
                Some(f) => opts.fields = f,
                None => {
                    let _ = writeln!(err, "unknown field");
                    return 1;
                }
            },
            Item::Opt(..) => {}
            Item::Bad(msg) => {
                let _ = writeln!(err, "{prog}: {msg}");
                usage(&prog, err);
                return 1;
            }
        }
    }
    let Some(path) = parsed.operands.first() else {
        let _ = writeln!(err, "No input file provided.");
        usage(&prog, err);
        return 1;
    };
    opts.path = path.clone();
    let mut rows = match collect_rows(&opts) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(err, "{e}");
            return 1;
        }
    };
    if opts.fields.is_empty() {
        return 0;
    }
    if opts.headers {
        rows.insert(
            0,
            opts.fields.iter().map(|&f| FIELDS[f].to_string()).collect(),
        );
    }
    match render(&rows, out).and_then(|_| out.flush()) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(err, "{prog}: writing output: {e}");
            1
        }
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

    #[test]
    fn human_sizes_round_like_09() {
        let bytes = |b: u64| human_size(b / 512);
        assert_eq!(bytes(0), "0");
        assert_eq!(bytes(4096), "4096");
        assert_eq!(bytes(8192), "8192");
        assert_eq!(bytes(12288), "12KiB");
        assert_eq!(bytes(8388608), "8192KiB");
        assert_eq!(bytes(8912896), "9MiB");
        assert_eq!(bytes(537395200), "513MiB");
        assert_eq!(bytes(8590458880), "8192MiB");
        assert_eq!(bytes(8590983168), "8GiB");
        assert_eq!(bytes(10485760000), "10GiB");
    }

    #[test]
    fn field_lists() {
        assert_eq!(parse_fields("DEV,"), Some(vec![0]));
        assert_eq!(parse_fields(""), Some(vec![]));
        assert_eq!(parse_fields(",DEV"), None);
        assert_eq!(parse_fields("DEV,MAPPED"), Some(vec![0, 10]));
        assert_eq!(parse_fields("dev"), None);
    }
}
