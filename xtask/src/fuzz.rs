//! `cargo xtask fuzz-smoke [--seconds N] [TARGET]...`: builds the cargo-fuzz targets in
//! `fuzz/` and runs each for a bounded time on a scratch copy of its seed corpus (so runs do
//! not add files to the repository). Prints executions per target; fails if a target fails.
//!
//! cargo-fuzz needs nightly flags; on the stable toolchain `RUSTC_BOOTSTRAP=1` enables them.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;

pub const TARGETS: &[&str] = &[
    "metadata_open_check",
    "btree_node",
    "xml_restore",
    "pdu_stream",
    "rpc_request",
];

pub fn fuzz_smoke(args: &[String]) -> Result<()> {
    let mut seconds = 20u64;
    let mut targets: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => seconds = it.next().context("--seconds needs a value")?.parse()?,
            t if TARGETS.contains(&t) => targets.push(t.into()),
            other => bail!("fuzz-smoke: unknown argument {other} (targets: {TARGETS:?})"),
        }
    }
    if targets.is_empty() {
        targets = TARGETS.iter().map(|s| s.to_string()).collect();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let fuzz = root.join("fuzz");
    if Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        bail!("cargo-fuzz is missing: install it with `cargo install cargo-fuzz --locked`");
    }
    let status = Command::new("cargo")
        .args(["fuzz", "build", "-O"])
        .current_dir(&fuzz)
        .env("RUSTC_BOOTSTRAP", "1")
        .status()?;
    if !status.success() {
        bail!("cargo fuzz build failed");
    }
    let scratch = root.join("build").join("fuzz-corpus");
    let mut failed = Vec::new();
    for t in &targets {
        let work = scratch.join(t);
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;
        for e in std::fs::read_dir(fuzz.join("corpus").join(t))? {
            let e = e?;
            std::fs::copy(e.path(), work.join(e.file_name()))?;
        }
        let out = Command::new("cargo")
            .args(["fuzz", "run", "-O", t])
            .arg(&work)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg("-rss_limit_mb=2048")
            .current_dir(&fuzz)
            .env("RUSTC_BOOTSTRAP", "1")
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        let runs = err
            .lines()
            .rev()
            .find(|l| l.starts_with("Done "))
            .unwrap_or("no summary")
            .to_string();
        println!("{t:<22} {runs}");
        if !out.status.success() {
            eprintln!(
                "{}",
                err.lines()
                    .rev()
                    .take(40)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            failed.push(t.clone());
        }
    }
    if !failed.is_empty() {
        bail!("fuzz targets failed: {failed:?} (crash inputs are under fuzz/artifacts/)");
    }
    Ok(())
}
