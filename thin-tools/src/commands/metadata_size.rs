//! `thin_metadata_size`: 0.9's estimate of the metadata device size for a pool.
//!
//! estimate = (1 + 2·pool_sectors / block_sectors / 252 + max_thins) 4 KiB blocks, where 252
//! is the mappings a 4 KiB leaf holds (nodes are counted twice as they are about half full).
//! Sizes take a unit suffix (`bskKmMgGtTpPeEzZyY` or a prefix of a unit name); the result is
//! printed in sectors unless `-u` says otherwise, an integer when it is one, else with two
//! decimals (or in `%.2e` when the fraction is below 0.01), exactly as 0.9's printf does.
//! Integer arithmetic wraps and unit factors overflow as 0.9's `unsigned long long` does.

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use crate::getopt::{self, Arg, Item, Long};
use crate::meta_open;

const UNIT_CHARS: &str = "bskKmMgGtTpPeEzZyY";
const UNIT_NAMES: [&str; 18] = [
    "bytes",
    "sectors",
    "kibibytes",
    "kilobytes",
    "mebibytes",
    "megabytes",
    "gibibytes",
    "gigabytes",
    "tebibytes",
    "terabytes",
    "pebibytes",
    "petabytes",
    "ebibytes",
    "exabytes",
    "zebibytes",
    "zetabytes",
    "yobibytes",
    "yottabytes",
];
const SECTORS: usize = 1;
const MAPPINGS_PER_BLOCK: u64 = (4096 - 64) / 16;

fn factors() -> [u64; 18] {
    let mut f = [0u64; 18];
    f[..4].copy_from_slice(&[1, 512, 1024, 1000]);
    for u in (4..18).step_by(2) {
        f[u] = f[u - 2].wrapping_mul(1024);
        f[u + 1] = f[u - 1].wrapping_mul(1000);
    }
    f
}

/// One character from the unit letters, or a prefix of a unit name (first match).
fn unit_index(s: &str) -> Option<usize> {
    if s.chars().count() == 1 {
        return UNIT_CHARS.chars().position(|c| s.starts_with(c));
    }
    UNIT_NAMES.iter().position(|n| n.starts_with(s))
}

/// `printf("%0.2e")`.
fn c_exp(r: f64) -> String {
    let s = format!("{r:.2e}");
    match s.split_once('e') {
        Some((m, e)) => {
            let (sign, digits) = match e.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', e),
            };
            format!("{m}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

/// How 0.9 prints the number.
pub fn format_value(r: f64) -> String {
    let t = r.floor();
    if r == t {
        // (unsigned long long) of a double as gcc does it on x86-64: values at or above
        // 2^64 (a unit factor that overflowed to 0 gives infinity) come out as 0.
        if (0.0..18_446_744_073_709_551_616.0).contains(&r) {
            format!("{}", r as u64)
        } else {
            "0".to_string()
        }
    } else if r - t < 1e-2 {
        c_exp(r)
    } else {
        format!("{r:.2}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Numeric {
    No,
    Plain,
    Short,
    Long,
}

struct State {
    unit_idx: usize,
    n: [u64; 3],
    s: [String; 3],
    numeric: Numeric,
}

/// atoll over the leading digits (saturating like strtoll).
fn leading_value(digits: &str) -> u64 {
    if digits.is_empty() {
        return 0;
    }
    digits
        .parse::<u64>()
        .map_or(i64::MAX as u64, |v| v.min(i64::MAX as u64))
}

const BLOCK: usize = 0;
const POOL: usize = 1;
const THINS: usize = 2;

fn check_size(st: &mut State, o: usize, arg: &str) -> Result<(), &'static str> {
    if st.n[o] != 0 {
        return Err("option already given!");
    }
    let f = factors();
    let split = arg.find(|c: char| !c.is_ascii_digit()).unwrap_or(arg.len());
    let (digits, unit) = arg.split_at(split);
    let idx = if unit.is_empty() {
        None
    } else {
        Some(unit_index(unit).ok_or("Invalid unit specifier!")?)
    };
    let r = leading_value(digits).wrapping_mul(f[idx.unwrap_or(SECTORS)]);
    st.n[o] = if idx.is_none() || o != THINS {
        r / f[SECTORS]
    } else {
        r
    };
    let shown = idx.unwrap_or(st.unit_idx);
    st.s[o] = if o != THINS || idx.is_some() {
        format!("{digits}{}", UNIT_NAMES[shown])
    } else {
        digits.to_string()
    };
    Ok(())
}

fn usage(prog: &str, w: &mut dyn Write) {
    let line = |a: &str, b: String, c: &str| format!("\t{a:<4}{b:<44}{c}\n");
    let units = |b: &str, mandatory: bool| {
        if mandatory {
            format!("{b}{{{UNIT_CHARS}}}")
        } else {
            format!("{b}[{UNIT_CHARS}]")
        }
    };
    let mut s =
        format!("Thin Provisioning Metadata Device Size Calculator.\nUsage: {prog} [options]\n");
    s += &line(
        "-b",
        units("--block-size BLOCKSIZE", false),
        "Block size of thin provisioned devices.",
    );
    s += &line(
        "-s",
        units("--pool-size SIZE", false),
        "Size of pool device.",
    );
    s += &line(
        "-m",
        units("--max-thins #MAXTHINS", false),
        "Maximum sum of all thin devices and snapshots.",
    );
    s += &line("-u", units("--unit ", true), "Output unit specifier.");
    s += &line(
        "-n",
        "--numeric-only [short|long]".to_string(),
        "Output numeric value only (optionally with short/long unit identifier).",
    );
    s += &line("-h", "--help".to_string(), "This help.");
    s += &line(
        "-V",
        "--version".to_string(),
        "Print thin provisioning tools version.",
    );
    let _ = w.write_all(s.as_bytes());
}

/// Runs the tool with explicit output streams; returns the exit code.
pub fn run_with(args: &[OsString], out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    const LONGS: &[Long] = &[
        Long {
            name: "block-size",
            arg: Arg::Required,
            id: 'b',
        },
        Long {
            name: "pool-size",
            arg: Arg::Required,
            id: 's',
        },
        Long {
            name: "max-thins",
            arg: Arg::Required,
            id: 'm',
        },
        Long {
            name: "unit",
            arg: Arg::Required,
            id: 'u',
        },
        Long {
            name: "numeric-only",
            arg: Arg::Optional,
            id: 'n',
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
    ];
    let (prog, rest) = getopt::strings(args);
    let abort = |err: &mut dyn Write, msg: &str| {
        let _ = writeln!(err, "{prog} - {msg}");
        1
    };
    let parsed = getopt::parse(&rest, "b:s:m:u:n::hV", LONGS);
    let mut st = State {
        unit_idx: SECTORS,
        n: [0; 3],
        s: Default::default(),
        numeric: Numeric::No,
    };
    for item in parsed.items {
        let res = match item {
            Item::Opt('b', v) => check_size(&mut st, BLOCK, v.as_deref().unwrap_or("")),
            Item::Opt('s', v) => check_size(&mut st, POOL, v.as_deref().unwrap_or("")),
            Item::Opt('m', v) => check_size(&mut st, THINS, v.as_deref().unwrap_or("")),
            Item::Opt('u', v) => match unit_index(v.as_deref().unwrap_or("")) {
                Some(i) => {
                    st.unit_idx = i;
                    Ok(())
                }
                None => Err("output unit specifier invalid!"),
            },
            Item::Opt('n', v) => {
                if st.numeric != Numeric::No {
                    Err("-n already given!")
                } else {
                    match v {
                        None => {
                            st.numeric = Numeric::Plain;
                            Ok(())
                        }
                        Some(a) if !a.is_empty() && "long".starts_with(a.as_str()) => {
                            st.numeric = Numeric::Long;
                            Ok(())
                        }
                        Some(a) if !a.is_empty() && "short".starts_with(a.as_str()) => {
                            st.numeric = Numeric::Short;
                            Ok(())
                        }
                        Some(_) => Err("-n invalid option argument"),
                    }
                }
            }
            Item::Opt('h', _) => {
                usage(&prog, out);
                return 0;
            }
            Item::Opt('V', _) => {
                let _ = writeln!(out, "{}", meta_open::VERSION);
                return 0;
            }
            Item::Opt(..) => Ok(()),
            Item::Bad(msg) => {
                let _ = writeln!(err, "{prog}: {msg}");
                return 1;
            }
        };
        if let Err(msg) = res {
            return abort(err, msg);
        }
    }
    let [b, s, m] = st.n;
    let problem = if b == 0 {
        Some("block size required!")
    } else if s == 0 {
        Some("pool size required!")
    } else if m == 0 {
        Some("max thins required!")
    } else if b & (b - 1) != 0 {
        Some("block size must be 2^^N")
    } else if s <= b {
        Some("pool size must be larger than block size")
    } else {
        None
    };
    if let Some(p) = problem {
        return abort(err, p);
    }
    let blocks = s.wrapping_mul(2).checked_div(b).unwrap_or(0) / MAPPINGS_PER_BLOCK;
    let mut r = 1.0 + blocks.wrapping_add(m) as f64;
    r *= (8 * 512) as f64;
    r /= factors()[st.unit_idx] as f64;
    let mut line = String::new();
    if st.numeric == Numeric::No {
        line += &format!("{prog} - ");
    }
    line += &format_value(r);
    match st.numeric {
        Numeric::No => {
            line += &format!(
                " {} estimated metadata area size for \"--block-size={} --pool-size={} --max-thins={}\"",
                UNIT_NAMES[st.unit_idx], st.s[BLOCK], st.s[POOL], st.s[THINS]
            );
        }
        Numeric::Plain => {}
        Numeric::Short => line += &UNIT_CHARS[st.unit_idx..st.unit_idx + 1],
        Numeric::Long => line += UNIT_NAMES[st.unit_idx],
    }
    line.push('\n');
    match out.write_all(line.as_bytes()).and_then(|_| out.flush()) {
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
    ExitCode::from(run_with(&args, &mut stdout.lock(), &mut stderr.lock()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_like_printf() {
        assert_eq!(format_value(1066024.0), "1066024");
        assert_eq!(format_value(520.5195), "520.52");
        assert_eq!(format_value(1.001), "1.00e+00");
        assert_eq!(format_value(0.0051), "5.10e-03");
    }

    #[test]
    fn unit_lookup() {
        assert_eq!(unit_index("k"), Some(2));
        assert_eq!(unit_index("K"), Some(3));
        assert_eq!(unit_index("kilo"), Some(3));
        assert_eq!(unit_index("ki"), Some(2));
        assert_eq!(unit_index(""), Some(0));
        assert_eq!(unit_index("x"), None);
    }
}
