//! `thin_rmap`: which thin blocks map the data blocks of the given regions.
//!
//! Every device is walked in id order; mappings whose data block lies in a region extend the
//! current run when they continue it on the same device (next data block, next virtual
//! block). The runs are then ordered by first data block, ties kept in walk order, and
//! printed as `data B..E -> thin(D) V..W` (ends exclusive), as 0.9 does.

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use thin_core::thin::reader::Source;

use crate::getopt::{self, Arg, Item, Long};
use crate::meta_open;

/// A half-open range of data blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub begin: u64,
    pub end: u64,
}

/// One output line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RmapRun {
    pub data_begin: u64,
    pub data_end: u64,
    pub dev: u64,
    pub thin_begin: u64,
}

/// Leading whitespace, optional `+`, digits (as `istream >> uint64`); returns value and rest.
fn read_number(s: &str) -> Option<(u64, &str)> {
    let t = s.trim_start();
    let t = t.strip_prefix('+').unwrap_or(t);
    let end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let v = t[..end].parse().ok()?;
    Some((v, &t[end..]))
}

/// Parses `<begin>..<end>` with 0.9's messages (trailing text after `end` is ignored).
pub fn parse_region(s: &str) -> Result<Region, &'static str> {
    let Some((begin, rest)) = read_number(s) else {
        return Err("badly formed region (no dots)");
    };
    let Some(rest) = rest.strip_prefix("..") else {
        return Err("badly formed region (no dots)");
    };
    let Some((end, _)) = read_number(rest) else {
        return Err("badly formed region (couldn't parse numbers)");
    };
    if end <= begin {
        return Err("badly formed region (end <= begin)");
    }
    Ok(Region { begin, end })
}

fn usage(prog: &str, w: &mut dyn Write) {
    let _ = write!(
        w,
        "Usage: {prog} [options] {{device|file}}\nOptions:\n  {{-h|--help}}\n  {{-V|--version}}\n  \
         {{--region <block range>}}*\nWhere:\n  \
         <block range> is of the form <begin>..<one-past-the-end>\n  \
         for example 5..45 denotes blocks 5 to 44 inclusive, but not block 45\n"
    );
}

/// Collects the reverse map of `regions` from the metadata at `path`.
pub fn rmap(path: &str, regions: &[Region]) -> Result<Vec<RmapRun>, String> {
    let mut r = meta_open::open_reader(path, Source::Live)?;
    let devices = r.devices().map_err(|e| meta_open::describe(&e))?;
    let mut runs: Vec<RmapRun> = Vec::new();
    for (dev, _) in devices {
        let mut cur: Option<RmapRun> = None;
        r.walk_mappings(dev, |v, bt| {
            let b = bt.block;
            if !regions.iter().any(|g| g.begin <= b && b < g.end) {
                return true;
            }
            if let Some(c) = cur.as_mut() {
                if b == c.data_end && Some(v) == c.thin_begin.checked_add(c.data_end - c.data_begin)
                {
                    c.data_end += 1;
                    return true;
                }
                runs.push(*c);
            }
            cur = Some(RmapRun {
                data_begin: b,
                data_end: b + 1,
                dev,
                thin_begin: v,
            });
            true
        })
        .map_err(|e| meta_open::describe(&e))?;
        runs.extend(cur);
    }
    cxx_sort(&mut runs);
    Ok(runs)
}

/// Orders runs by first data block exactly as 0.9 does: libstdc++'s `std::sort` (introsort:
/// median-of-three quicksort down to 16 elements, heapsort past 2·log2(n) levels, then
/// insertion sort), which is not stable, so runs starting on the same data block come out
/// in the order that algorithm leaves them.
fn cxx_sort(v: &mut [RmapRun]) {
    let lt = |a: &RmapRun, b: &RmapRun| a.data_begin < b.data_begin;
    if v.len() < 2 {
        return;
    }
    let depth = 2 * (63 - (v.len() as u64).leading_zeros() as usize);
    introsort(v, depth, &lt);
    // Final insertion sort.
    if v.len() > 16 {
        insertion_sort(&mut v[..16], &lt);
        for i in 16..v.len() {
            linear_insert(v, i, &lt);
        }
    } else {
        insertion_sort(v, &lt);
    }
}

type Lt = dyn Fn(&RmapRun, &RmapRun) -> bool;

fn introsort(mut v: &mut [RmapRun], mut depth: usize, lt: &Lt) {
    while v.len() > 16 {
        if depth == 0 {
            heap_sort(v, lt);
            return;
        }
        depth -= 1;
        let n = v.len();
        // Median of v[1], v[mid], v[n-1] moved to v[0].
        let (a, b, c) = (1, n / 2, n - 1);
        let m = if lt(&v[a], &v[b]) {
            if lt(&v[b], &v[c]) {
                b
            } else if lt(&v[a], &v[c]) {
                c
            } else {
                a
            }
        } else if lt(&v[a], &v[c]) {
            a
        } else if lt(&v[b], &v[c]) {
            c
        } else {
            b
        };
        v.swap(0, m);
        // Unguarded partition of v[1..] around v[0].
        let (mut f, mut l) = (1, n);
        let cut = loop {
            while lt(&v[f], &v[0]) {
                f += 1;
            }
            l -= 1;
            while lt(&v[0], &v[l]) {
                l -= 1;
            }
            if f >= l {
                break f;
            }
            v.swap(f, l);
            f += 1;
        };
        let (left, right) = v.split_at_mut(cut);
        introsort(right, depth, lt);
        v = left;
    }
}

fn insertion_sort(v: &mut [RmapRun], lt: &Lt) {
    for i in 1..v.len() {
        if lt(&v[i], &v[0]) {
            v[..=i].rotate_right(1);
        } else {
            linear_insert(v, i, lt);
        }
    }
}

fn linear_insert(v: &mut [RmapRun], mut i: usize, lt: &Lt) {
    let val = v[i];
    while lt(&val, &v[i - 1]) {
        v[i] = v[i - 1];
        i -= 1;
    }
    v[i] = val;
}

fn adjust_heap(v: &mut [RmapRun], mut hole: usize, len: usize, val: RmapRun, lt: &Lt) {
    let top = hole;
    let mut child = hole;
    while child < (len - 1) / 2 {
        child = 2 * (child + 1);
        if lt(&v[child], &v[child - 1]) {
            child -= 1;
        }
        v[hole] = v[child];
        hole = child;
    }
    if len.is_multiple_of(2) && child == (len - 2) / 2 {
        child = 2 * (child + 1);
        v[hole] = v[child - 1];
        hole = child - 1;
    }
    let mut parent = hole.wrapping_sub(1) / 2;
    while hole > top && lt(&v[parent], &val) {
        v[hole] = v[parent];
        hole = parent;
        parent = hole.wrapping_sub(1) / 2;
    }
    v[hole] = val;
}

fn heap_sort(v: &mut [RmapRun], lt: &Lt) {
    let len = v.len();
    let mut parent = (len - 2) / 2;
    loop {
        let val = v[parent];
        adjust_heap(v, parent, len, val, lt);
        if parent == 0 {
            break;
        }
        parent -= 1;
    }
    let mut last = len;
    while last > 1 {
        last -= 1;
        let val = v[last];
        v[last] = v[0];
        adjust_heap(v, 0, last, val, lt);
    }
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
            name: "region",
            arg: Arg::Required,
            id: 'r',
        },
    ];
    let (prog, rest) = getopt::strings(args);
    let parsed = getopt::parse(&rest, "hV", LONGS);
    let mut regions = Vec::new();
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
            Item::Opt('r', v) => match parse_region(v.as_deref().unwrap_or("")) {
                Ok(r) => regions.push(r),
                Err(e) => {
                    // 0.9 prints these without a newline.
                    let _ = write!(err, "{e}");
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
    if regions.is_empty() {
        let _ = writeln!(err, "No regions provided.");
        usage(&prog, err);
        return 1;
    }
    let runs = match rmap(path, &regions) {
        Ok(r) => r,
        Err(e) => {
            let _ = write!(err, "{e}");
            return 1;
        }
    };
    let mut res = Ok(());
    for r in runs {
        res = writeln!(
            out,
            "data {}..{} -> thin({}) {}..{}",
            r.data_begin,
            r.data_end,
            r.dev,
            r.thin_begin,
            r.thin_begin + (r.data_end - r.data_begin)
        );
        if res.is_err() {
            break;
        }
    }
    match res.and_then(|_| out.flush()) {
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
    fn regions_parse_like_09() {
        assert_eq!(parse_region("5..45"), Ok(Region { begin: 5, end: 45 }));
        assert_eq!(parse_region(" 5..6x"), Ok(Region { begin: 5, end: 6 }));
        assert_eq!(parse_region("5"), Err("badly formed region (no dots)"));
        assert_eq!(parse_region("a..b"), Err("badly formed region (no dots)"));
        assert_eq!(
            parse_region("5..x"),
            Err("badly formed region (couldn't parse numbers)")
        );
        assert_eq!(
            parse_region("6..5"),
            Err("badly formed region (end <= begin)")
        );
    }
}
