//! `cargo xtask <command>`: project automation (set-up, guest images, QEMU runs, benchmarks).
use anyhow::{bail, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("help") | Some("--help") => {
            println!("cargo xtask <command>\n\ncommands:\n  help    this text");
            Ok(())
        }
        Some(other) => bail!("unknown xtask command: {other}"),
    }
}
