//! `cargo xtask <command>`: project automation (set-up, guest images, QEMU runs, benchmarks).
use anyhow::{bail, Context, Result};

mod firmware;
mod fuzz;

const HELP: &str = "cargo xtask <command>

commands:
  help                 this text
  guest-image [--force] [--dir DIR]
                       build the Linux test guest (kernel + initramfs) into build/guest/,
                       reusing it if its recipe has not changed
  guest-run SCRIPT [--disk FILE:SERIAL]... [--net] [--timeout SECS]
                       boot the guest, run SCRIPT in it, print its stdout and exit with its code
  kernel-fixtures [NAME]...
                       remake tests/fixtures/kernel/<NAME>.tmeta.gz with the kernel's dm-thin
                       in the guest (all fixtures if no NAME), checking each with thin_check
  fuzz-smoke [--seconds N] [TARGET]...
                       build the cargo-fuzz targets and run each for N seconds (default 20)
  firmware [--board x86_64|riscv64|all] [--timeout SECS]
                       build virtio-test for each board, boot it twice under QEMU (commit, stop
                       uncommitted; reopen and verify), then check the disk images on the host
                       (thin_check, thin-core check, thin_dump, data patterns)";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("help") | Some("--help") => {
            println!("{HELP}");
            Ok(())
        }
        Some("guest-image") => guest_image(&args[1..]),
        Some("guest-run") => guest_run(&args[1..]),
        Some("kernel-fixtures") => kernel_fixtures(&args[1..]),
        Some("fuzz-smoke") => fuzz::fuzz_smoke(&args[1..]),
        Some("firmware") => firmware::run(&args[1..]),
        Some(other) => bail!("unknown xtask command: {other}\n\n{HELP}"),
    }
}

fn guest_image(args: &[String]) -> Result<()> {
    use e2e_tests::guest_image;
    let mut force = false;
    let mut dir = guest_image::default_dir();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--force" => force = true,
            "--dir" => dir = it.next().context("--dir needs a value")?.into(),
            other => bail!("guest-image: unknown argument {other}"),
        }
    }
    let image = if force {
        std::fs::create_dir_all(&dir)?;
        guest_image::build(&dir)?
    } else {
        guest_image::ensure(&dir)?
    };
    println!("kernel:    {}", image.kernel.display());
    println!("initramfs: {}", image.initramfs.display());
    println!("release:   {}", image.kernel_release);
    Ok(())
}

fn guest_run(args: &[String]) -> Result<()> {
    use e2e_tests::qemu::Guest;
    let mut guest = Guest::new();
    let mut script = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--disk" => {
                let spec = it.next().context("--disk needs FILE:SERIAL")?;
                let (file, serial) = spec.rsplit_once(':').context("--disk needs FILE:SERIAL")?;
                guest = guest.disk(file, serial);
            }
            "--net" => guest = guest.network(true),
            "--timeout" => {
                let secs: u64 = it.next().context("--timeout needs seconds")?.parse()?;
                guest = guest.timeout(std::time::Duration::from_secs(secs));
            }
            path if script.is_none() => script = Some(path.to_string()),
            other => bail!("guest-run: unexpected argument {other}"),
        }
    }
    let path = script.context("guest-run needs a SCRIPT file")?;
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let run = guest.script(text).run()?;
    print!("{}", run.stdout);
    eprint!("{}", run.stderr);
    eprintln!(
        "guest: exit code {}, boot {:.1?}, total {:.1?}",
        run.exit_code, run.boot_time, run.total_time
    );
    std::process::exit(run.exit_code);
}

fn kernel_fixtures(names: &[String]) -> Result<()> {
    use e2e_tests::kernel_fixtures::{self as kf, FIXTURES};
    for name in names {
        if !FIXTURES.iter().any(|f| f.name == name) {
            bail!("no kernel fixture {name}");
        }
    }
    for f in FIXTURES {
        if !names.is_empty() && !names.iter().any(|n| n == f.name) {
            continue;
        }
        let dir = e2e_tests::ScratchDir::new("kernel-fixture")?;
        let run = kf::make(f, dir.path()).map_err(anyhow::Error::msg)?;
        let meta = dir.path().join("meta.bin");
        println!(
            "{}",
            kf::verify(f.name, &f.expected, &meta).map_err(anyhow::Error::msg)?
        );
        let out = kf::fixture_path(f.name);
        kf::save_gz(&out, &std::fs::read(&meta)?)?;
        let data_out = kf::data_fixture_path(f.name);
        if f.keep_data {
            kf::save_gz(&data_out, &std::fs::read(dir.path().join("data.bin"))?)?;
            let len = std::fs::metadata(&data_out)?.len();
            println!("  saved {} ({len} bytes)", data_out.display());
        } else if data_out.exists() {
            std::fs::remove_file(&data_out)?;
        }
        println!(
            "  saved {} ({} bytes; guest {:.1?})",
            out.display(),
            std::fs::metadata(&out)?.len(),
            run.total_time
        );
    }
    Ok(())
}
