//! A small GNU `getopt_long` work-alike, so that the tools accept exactly the command lines
//! Debian's 0.9 tools accept: options and operands may be mixed (operands are collected),
//! `--` ends the options, long options may be abbreviated to a unique prefix and take their
//! argument as `--opt=value` or `--opt value`, short options cluster (`-hV`) and take theirs
//! as `-bVALUE` or `-b VALUE`, and an *optional* argument is only ever attached (`-m5`,
//! `--metadata-snap=5`).
//!
//! The tools handle the items in order, so the first bad option or bad value stops them at
//! the same point as the C++ tools, which act on each option as `getopt_long` returns it.

/// Whether an option takes an argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    No,
    Required,
    Optional,
}

/// A long option: name, argument kind and the id reported for it.
#[derive(Debug, Clone, Copy)]
pub struct Long {
    pub name: &'static str,
    pub arg: Arg,
    pub id: char,
}

/// One parsed item, in command-line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// An option (short ones report their letter as id) with its argument, if any.
    Opt(char, Option<String>),
    /// What `getopt_long` prints (without the program prefix) before returning `'?'`.
    Bad(String),
}

/// Parsed command line: items in order, then the operands.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    pub items: Vec<Item>,
    pub operands: Vec<String>,
}

fn short_kind(shorts: &str, c: char) -> Option<Arg> {
    let b: Vec<char> = shorts.chars().collect();
    let i = b.iter().position(|&x| x == c && x != ':')?;
    Some(match (b.get(i + 1), b.get(i + 2)) {
        (Some(':'), Some(':')) => Arg::Optional,
        (Some(':'), _) => Arg::Required,
        _ => Arg::No,
    })
}

/// Parses `args` (without argv[0]).
pub fn parse(args: &[String], shorts: &str, longs: &[Long]) -> Parsed {
    let mut p = Parsed::default();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "--" {
            p.operands.extend(args[i..].iter().cloned());
            break;
        }
        if let Some(body) = a.strip_prefix("--") {
            let (name, attached) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let exact = longs.iter().find(|l| l.name == name);
            let cands: Vec<&Long> = match exact {
                Some(l) => vec![l],
                None => longs.iter().filter(|l| l.name.starts_with(name)).collect(),
            };
            // Abbreviations naming several options of the same meaning are not ambiguous.
            let unique = cands
                .first()
                .filter(|f| cands.iter().all(|c| c.id == f.id && c.arg == f.arg));
            let Some(l) = unique else {
                p.items.push(Item::Bad(if cands.is_empty() {
                    format!("unrecognized option '--{name}'")
                } else {
                    // glibc lists the candidates in option-table order.
                    let list: Vec<String> =
                        cands.iter().map(|c| format!("'--{}'", c.name)).collect();
                    format!(
                        "option '--{name}' is ambiguous; possibilities: {}",
                        list.join(" ")
                    )
                }));
                continue;
            };
            match (l.arg, attached) {
                (Arg::No, Some(_)) => p.items.push(Item::Bad(format!(
                    "option '--{}' doesn't allow an argument",
                    l.name
                ))),
                (Arg::No, None) => p.items.push(Item::Opt(l.id, None)),
                (Arg::Optional, v) => p.items.push(Item::Opt(l.id, v)),
                (Arg::Required, Some(v)) => p.items.push(Item::Opt(l.id, Some(v))),
                (Arg::Required, None) => match args.get(i) {
                    Some(v) => {
                        i += 1;
                        p.items.push(Item::Opt(l.id, Some(v.clone())));
                    }
                    None => p.items.push(Item::Bad(format!(
                        "option '--{}' requires an argument",
                        l.name
                    ))),
                },
            }
            continue;
        }
        if a.len() > 1 && a.starts_with('-') {
            let chars: Vec<char> = a.chars().skip(1).collect();
            let mut j = 0;
            while j < chars.len() {
                let c = chars[j];
                j += 1;
                match short_kind(shorts, c) {
                    None => p.items.push(Item::Bad(format!("invalid option -- '{c}'"))),
                    Some(Arg::No) => p.items.push(Item::Opt(c, None)),
                    Some(kind) => {
                        let rest: String = chars[j..].iter().collect();
                        j = chars.len();
                        if !rest.is_empty() {
                            p.items.push(Item::Opt(c, Some(rest)));
                        } else if kind == Arg::Optional {
                            p.items.push(Item::Opt(c, None));
                        } else if let Some(v) = args.get(i) {
                            i += 1;
                            p.items.push(Item::Opt(c, Some(v.clone())));
                        } else {
                            p.items
                                .push(Item::Bad(format!("option requires an argument -- '{c}'")));
                        }
                    }
                }
            }
            continue;
        }
        p.operands.push(a.clone());
    }
    p
}

/// argv (with argv[0]) as strings; argv[0] reduced to its file name.
pub fn strings(args: &[std::ffi::OsString]) -> (String, Vec<String>) {
    let prog = args
        .first()
        .map(|a| {
            std::path::Path::new(a)
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let rest = args
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    (prog, rest)
}

/// `boost::lexical_cast<uint64_t>` rules: optional sign (a minus wraps), then digits only.
pub fn lexical_u64(s: &str) -> Option<u64> {
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

/// C `strtoull(s, &end, 10)` with the check "at least one digit was read": leading white
/// space and a sign are skipped (a minus wraps), trailing junk is ignored, overflow gives
/// `u64::MAX`.
pub fn strtoull(s: &str) -> Option<u64> {
    let t = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let n = t.bytes().take_while(u8::is_ascii_digit).count();
    if n == 0 {
        return None;
    }
    let v = t[..n].parse::<u64>().unwrap_or(u64::MAX);
    Some(if neg && v != u64::MAX {
        v.wrapping_neg()
    } else {
        v
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    const LONGS: &[Long] = &[
        Long {
            name: "verbose",
            arg: Arg::No,
            id: 'v',
        },
        Long {
            name: "region",
            arg: Arg::Required,
            id: 'r',
        },
        Long {
            name: "metadata-snap",
            arg: Arg::Optional,
            id: 'm',
        },
    ];

    #[test]
    fn mixes_operands_abbreviations_and_clusters() {
        let p = parse(
            &s(&[
                "file", "--verb", "--reg", "1..2", "-hm5", "-m", "x", "--", "-h",
            ]),
            "hm::",
            LONGS,
        );
        assert_eq!(
            p.items,
            vec![
                Item::Opt('v', None),
                Item::Opt('r', Some("1..2".into())),
                Item::Opt('h', None),
                Item::Opt('m', Some("5".into())),
                Item::Opt('m', None),
            ]
        );
        assert_eq!(p.operands, s(&["file", "x", "-h"]));
    }

    #[test]
    fn reports_bad_options_in_place() {
        let p = parse(&s(&["-x", "--nope", "--verbose=1", "--region"]), "h", LONGS);
        assert_eq!(p.items.len(), 4);
        assert!(p.items.iter().all(|i| matches!(i, Item::Bad(_))));
    }

    #[test]
    fn ambiguous_abbreviations_list_candidates_in_table_order() {
        const L: &[Long] = &[
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
        ];
        let p = parse(&s(&["--s", "--sk"]), "", L);
        assert_eq!(
            p.items,
            vec![
                Item::Bad(
                    "option '--s' is ambiguous; possibilities: '--super-block-only' '--skip-mappings'"
                        .into()
                ),
                Item::Opt('2', None),
            ]
        );
    }

    #[test]
    fn number_parsers_follow_boost_and_strtoull() {
        assert_eq!(lexical_u64("5"), Some(5));
        assert_eq!(lexical_u64("+5"), Some(5));
        assert_eq!(lexical_u64("-1"), Some(u64::MAX));
        for bad in ["", " 5", "1x", "x", "-", "99999999999999999999"] {
            assert_eq!(lexical_u64(bad), None, "{bad:?}");
        }
        assert_eq!(strtoull("1x"), Some(1));
        assert_eq!(strtoull(" 7"), Some(7));
        assert_eq!(strtoull("-1"), Some(u64::MAX));
        assert_eq!(strtoull("99999999999999999999"), Some(u64::MAX));
        for bad in ["", "x", "-", " "] {
            assert_eq!(strtoull(bad), None, "{bad:?}");
        }
    }
}
