//! Our tools against Debian's thin-provisioning-tools 0.9 on the same metadata, same run.
//!
//! Run by hand (not in CI); it takes minutes and a few GiB of disk for the large size:
//!
//! ```text
//! cargo build --release -p thin-tools --bin thin
//! cargo run --release -p e2e-tests --example tools_bench -- [--sizes 1m,10m] [--dir DIR] [--thin PATH]
//! ```
//!
//! For each size a pool is generated (`1m`: ≈1M mappings over 10 devices, `10m`: ≈10M over
//! 100; thins and snapshots that share then diverge), written as XML by our writer and
//! restored by Debian's `thin_restore`. Then `thin_check`, `thin_dump`, `thin_restore` and
//! `thin_repair` run, Debian's and ours (`thin <tool>` from `target/release`), on the same
//! files. Wall time and peak RSS come from `/usr/bin/time -f "%e %M"` (GNU time); without it,
//! the child's `VmHWM` is polled from `/proc/<pid>/status` (peak may then be missed for very
//! short runs). A tool of ours that is not there yet (exits saying "not implemented") is
//! printed as `n/a`; one that fails is printed as `FAIL(rc)`.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use e2e_tests::debian;
use e2e_tests::xmlgen::{self, GenConfig};
use thin_tools::xml::write_xml;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

#[derive(Clone, Debug)]
enum Outcome {
    Ran { secs: f64, peak_kib: u64 },
    Missing,
    Failed(Option<i32>, String),
}

fn config(size: &str) -> Option<GenConfig> {
    match size {
        "1m" => Some(GenConfig::large(42)),
        "10m" => Some(GenConfig {
            nr_thins: 40,
            nr_snapshots: 60,
            mappings_per_thin: 100_000,
            min_data_blocks: 1 << 23,
            ..GenConfig::large(43)
        }),
        _ => None,
    }
}

/// Runs `prog args`, stdout to `stdout_to`, measuring wall time and peak RSS.
fn measure(
    prog: &Path,
    args: &[&std::ffi::OsStr],
    stdout_to: &Path,
    dir: &Path,
) -> Result<Outcome> {
    let gnu_time = Path::new("/usr/bin/time");
    let out = File::create(stdout_to)?;
    let err_path = dir.join("stderr.txt");
    let err = File::create(&err_path)?;
    let timing = dir.join("time.txt");
    let start = Instant::now();
    let (status, polled_peak) = if gnu_time.is_file() {
        let st = Command::new(gnu_time)
            .arg("-f")
            .arg("%e %M")
            .arg("-o")
            .arg(&timing)
            .arg(prog)
            .args(args)
            .stdout(out)
            .stderr(err)
            .status()?;
        (st, None)
    } else {
        let mut child = Command::new(prog)
            .args(args)
            .stdout(out)
            .stderr(err)
            .spawn()?;
        let status_file = format!("/proc/{}/status", child.id());
        let mut peak = 0u64;
        let st = loop {
            if let Ok(s) = std::fs::read_to_string(&status_file) {
                for line in s.lines() {
                    if let Some(v) = line.strip_prefix("VmHWM:") {
                        let kib = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
                        peak = peak.max(kib);
                    }
                }
            }
            if let Some(st) = child.try_wait()? {
                break st;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        (st, Some(peak))
    };
    let wall = start.elapsed().as_secs_f64();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    if !status.success() {
        if stderr.contains("not implemented") {
            return Ok(Outcome::Missing);
        }
        let tail: String = stderr.lines().take(3).collect::<Vec<_>>().join(" | ");
        return Ok(Outcome::Failed(status.code(), tail));
    }
    let (secs, peak_kib) = match polled_peak {
        Some(p) => (wall, p),
        None => {
            let t = std::fs::read_to_string(&timing)?;
            // GNU time may print a "Command exited…" line first; the numbers are last.
            let last = t.lines().last().unwrap_or("");
            let mut it = last.split_whitespace();
            let secs = it.next().and_then(|s| s.parse().ok()).unwrap_or(wall);
            let kib = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            (secs, kib)
        }
    };
    Ok(Outcome::Ran { secs, peak_kib })
}

fn cell(o: &Outcome) -> String {
    match o {
        Outcome::Ran { secs, peak_kib } => {
            format!("{secs:>8.2}s {:>7.1}MiB", *peak_kib as f64 / 1024.0)
        }
        Outcome::Missing => format!("{:>19}", "n/a"),
        Outcome::Failed(rc, _) => format!("{:>19}", format!("FAIL({rc:?})")),
    }
}

fn ratio(deb: &Outcome, ours: &Outcome) -> String {
    match (deb, ours) {
        (Outcome::Ran { secs: d, .. }, Outcome::Ran { secs: o, .. }) if *o > 0.0 => {
            format!("{:>7.2}x", d / o)
        }
        (Outcome::Ran { .. }, Outcome::Ran { .. }) => format!("{:>8}", "inf"),
        _ => format!("{:>8}", "n/a"),
    }
}

fn main() -> Result<()> {
    let mut sizes = vec!["1m".to_string(), "10m".to_string()];
    let mut dir_arg: Option<PathBuf> = None;
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut thin = manifest.join("../target/release/thin");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--sizes" => {
                sizes = args
                    .next()
                    .ok_or("--sizes needs a value")?
                    .split(',')
                    .map(String::from)
                    .collect()
            }
            "--dir" => dir_arg = Some(args.next().ok_or("--dir needs a value")?.into()),
            "--thin" => thin = args.next().ok_or("--thin needs a value")?.into(),
            _ => return Err(format!("unknown argument {a}; see the file header for usage").into()),
        }
    }
    if !thin.is_file() {
        return Err(format!(
            "{} not found: cargo build --release -p thin-tools --bin thin",
            thin.display()
        )
        .into());
    }
    let tmp = debian::temp_dir()?;
    let dir = dir_arg.unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    println!(
        "Debian thin-provisioning-tools {}; ours: {}",
        debian::version()?,
        thin.display()
    );

    let mut rows: Vec<(String, String, Outcome, Outcome)> = Vec::new();
    for size in &sizes {
        let cfg = config(size).ok_or_else(|| format!("unknown size {size} (1m or 10m)"))?;
        let t = Instant::now();
        let md = xmlgen::generate(&cfg);
        let xml = dir.join(format!("{size}.xml"));
        write_xml(&md, BufWriter::new(File::create(&xml)?))?;
        let bytes = xmlgen::metadata_bytes_for(&md);
        println!(
            "{size}: {} devices, {} mappings, XML {:.1} MiB, generated in {:.1}s",
            md.devices.len(),
            md.nr_mappings(),
            std::fs::metadata(&xml)?.len() as f64 / (1 << 20) as f64,
            t.elapsed().as_secs_f64()
        );
        drop(md);
        let meta = debian::zeroed_metadata_file(&dir, &format!("{size}.meta"), bytes)?;
        let out_deb = debian::zeroed_metadata_file(&dir, &format!("{size}.out-debian"), bytes)?;
        let out_ours = debian::zeroed_metadata_file(&dir, &format!("{size}.out-ours"), bytes)?;
        let sink = dir.join("stdout.txt");
        // The metadata under test: Debian's own restore.
        debian::thin_restore(&xml, &meta)?;

        let m = meta.as_os_str();
        let (x, od, oo) = (xml.as_os_str(), out_deb.as_os_str(), out_ours.as_os_str());
        let cases: Vec<(
            &str,
            &'static str,
            Vec<&std::ffi::OsStr>,
            Vec<&std::ffi::OsStr>,
        )> = vec![
            ("check", "thin_check", vec![m], vec!["check".as_ref(), m]),
            ("dump", "thin_dump", vec![m], vec!["dump".as_ref(), m]),
            (
                "restore",
                "thin_restore",
                vec!["-i".as_ref(), x, "-o".as_ref(), od],
                vec!["restore".as_ref(), "-i".as_ref(), x, "-o".as_ref(), oo],
            ),
            (
                "repair",
                "thin_repair",
                vec!["-i".as_ref(), m, "-o".as_ref(), od],
                vec!["repair".as_ref(), "-i".as_ref(), m, "-o".as_ref(), oo],
            ),
        ];
        for (name, tool, deb_args, our_args) in cases {
            let deb = measure(&debian::tool_path(tool)?, &deb_args, &sink, &dir)?;
            let ours = measure(&thin, &our_args, &sink, &dir)?;
            for (who, o) in [("debian", &deb), ("ours", &ours)] {
                if let Outcome::Failed(rc, msg) = o {
                    eprintln!("{size} {name} ({who}) failed, status {rc:?}: {msg}");
                }
            }
            println!(
                "  {name:<8} debian {}   ours {}   {}",
                cell(&deb),
                cell(&ours),
                ratio(&deb, &ours)
            );
            rows.push((size.clone(), name.to_string(), deb, ours));
        }
        for f in [&xml, &meta, &out_deb, &out_ours] {
            let _ = std::fs::remove_file(f);
        }
    }

    println!();
    println!(
        "{:<5} {:<8} | {:>19} | {:>19} | {:>8}",
        "size", "tool", "debian time  peak", "ours time  peak", "speedup"
    );
    println!("{}", "-".repeat(70));
    for (size, name, deb, ours) in &rows {
        println!(
            "{size:<5} {name:<8} | {} | {} | {}",
            cell(deb),
            cell(ours),
            ratio(deb, ours)
        );
    }
    println!("(speedup = debian time / our time; peak = maximum resident set size)");
    Ok(())
}
