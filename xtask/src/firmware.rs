//! `cargo xtask firmware`: builds virtio-test for each board, boots it twice under QEMU (TCG)
//! on the same two disk images — boot 1 commits, does more work and stops without committing;
//! boot 2 verifies the committed state — then checks the images on the host: Debian's
//! `thin_check` and thin-core's checker accept the metadata, `thin_dump` lists exactly the
//! devices and mappings the firmware expects, and the data image holds the expected bytes at
//! the data blocks the dump names.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use e2e_tests::{debian, dm_tools, guest_image::workspace_root};
use thin_core::thin::check::{check, CheckOptions};
use thin_core::MemDevice;

// The firmware's pattern code, compiled here too so the host reads the data image the way the
// firmware wrote it.
#[allow(dead_code)]
#[path = "../../virtio-test/src/pattern.rs"]
mod pattern;

/// Metadata image size (1024 metadata blocks).
const META_BYTES: u64 = 4 << 20;
/// Data image size (1024 data blocks of 64 KiB).
const DATA_BYTES: u64 = 64 << 20;
/// The out-of-space phase's metadata image (256 blocks; the pool starts on 96 of them).
const OOS_META_BYTES: u64 = 1 << 20;
/// The out-of-space phase's data image (256 data blocks; the pool starts on 48 of them).
const OOS_DATA_BYTES: u64 = 16 << 20;
/// Lines boot 2 must print, one per part of the out-of-space phase (`src/oos.rs`).
const OOS_LINES: [&str; 2] = ["oos: data full after ", "oos: metadata full after "];
/// The firmware's data block size.
const DATA_BLOCK_BYTES: u64 = 64 << 10;
/// Firmware exit code for "verified" (virtio-test/src/main.rs).
const FW_OK: u8 = 0;
/// Boot 1 prints this, then halts with work uncommitted; QEMU is killed there.
const STOPPED_LINE: &str = "RESULT stopped";

#[derive(Clone, Copy, Debug)]
enum Board {
    X86_64,
    Riscv64,
}

impl Board {
    fn name(self) -> &'static str {
        match self {
            Board::X86_64 => "x86_64",
            Board::Riscv64 => "riscv64",
        }
    }
    fn target(self) -> &'static str {
        match self {
            Board::X86_64 => "x86_64-unknown-none",
            Board::Riscv64 => "riscv64gc-unknown-none-elf",
        }
    }
    fn qemu(self) -> &'static str {
        match self {
            Board::X86_64 => "qemu-system-x86_64",
            Board::Riscv64 => "qemu-system-riscv64",
        }
    }
    fn machine_args(self) -> &'static [&'static str] {
        match self {
            Board::X86_64 => &[
                "-M",
                "microvm",
                "-device",
                "isa-debug-exit,iobase=0xf4,iosize=0x04",
            ],
            Board::Riscv64 => &["-M", "virt", "-bios", "none", "-smp", "1"],
        }
    }
    /// The firmware's exit code from QEMU's exit status.
    fn decode_exit(self, status: i32) -> Result<u8> {
        let code = match self {
            // isa-debug-exit: QEMU exits with (code << 1) | 1; an even status means the exit
            // device was not used (QEMU quit for another reason).
            Board::X86_64 if status % 2 == 1 => (status - 1) / 2,
            Board::X86_64 => bail!("QEMU exited with {status} without the exit device"),
            Board::Riscv64 => status,
        };
        u8::try_from(code).with_context(|| format!("QEMU exit status {status}"))
    }
}

const HELP: &str = "cargo xtask firmware [--board x86_64|riscv64|all] [--timeout SECS]";

/// Entry point of `cargo xtask firmware`.
pub fn run(args: &[String]) -> Result<()> {
    let mut boards = vec![Board::X86_64, Board::Riscv64];
    let mut timeout = Duration::from_secs(60);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--board" => {
                boards = match it.next().map(String::as_str) {
                    Some("x86_64") => vec![Board::X86_64],
                    Some("riscv64") => vec![Board::Riscv64],
                    Some("all") => vec![Board::X86_64, Board::Riscv64],
                    other => bail!("--board: x86_64, riscv64 or all, not {other:?}\n{HELP}"),
                }
            }
            "--timeout" => {
                let s: u64 = it.next().context("--timeout needs seconds")?.parse()?;
                timeout = Duration::from_secs(s);
            }
            other => bail!("firmware: unknown argument {other}\n{HELP}"),
        }
    }
    // Fail before building if a host tool is missing.
    debian::tool_path("thin_check").map_err(anyhow::Error::msg)?;
    let mut reports = Vec::new();
    for board in boards {
        println!("==> firmware on {}", board.name());
        let report =
            run_board(board, timeout).with_context(|| format!("board {}", board.name()))?;
        reports.push(report);
    }
    println!("\nfirmware results:");
    for r in &reports {
        println!("  {r}");
    }
    Ok(())
}

struct BoardReport {
    board: Board,
    boots: [BootRun; 2],
    devices: usize,
    mappings: usize,
    pattern_sectors: u64,
    oos: Vec<String>,
}

impl std::fmt::Display for BoardReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:8}", self.board.name())?;
        for (i, b) in self.boots.iter().enumerate() {
            write!(
                f,
                " | boot {}: result after {:.2} s, heap peak {} KiB",
                i + 1,
                b.result_time.as_secs_f64(),
                b.heap_peak / 1024
            )?;
        }
        write!(
            f,
            " | host: {} devices, {} mappings, {} pattern sectors verified",
            self.devices, self.mappings, self.pattern_sectors
        )?;
        for l in &self.oos {
            write!(f, "\n{:8} | {l}", "")?;
        }
        Ok(())
    }
}

fn run_board(board: Board, timeout: Duration) -> Result<BoardReport> {
    let elf = build(board)?;
    let dir = workspace_root()
        .join("target")
        .join("firmware")
        .join(board.name());
    std::fs::create_dir_all(&dir)?;
    let meta = dir.join("meta.img");
    let data = dir.join("data.img");
    let oos_meta = dir.join("oos-meta.img");
    let oos_data = dir.join("oos-data.img");
    for (path, len) in [
        (&meta, META_BYTES),
        (&data, DATA_BYTES),
        (&oos_meta, OOS_META_BYTES),
        (&oos_data, OOS_DATA_BYTES),
    ] {
        let f = std::fs::File::create(path).with_context(|| format!("{}", path.display()))?;
        f.set_len(len)?;
    }

    let disks = [&meta, &data, &oos_meta, &oos_data];
    let boot1 = boot(board, &elf, disks, timeout, Some(STOPPED_LINE))?;
    boot1.expect(End::Killed, "boot 1 (commit, then stop uncommitted)")?;
    let boot2 = boot(board, &elf, disks, timeout, None)?;
    boot2.expect(End::Exited(FW_OK), "boot 2 (verify the committed state)")?;
    let oos = oos_checks(&boot2, &oos_meta)?;
    let (devices, mappings, pattern_sectors) = host_checks(&boot2, &meta, &data)?;
    Ok(BoardReport {
        board,
        boots: [boot1, boot2],
        devices,
        mappings,
        pattern_sectors,
        oos,
    })
}

/// Boot 2 printed both out-of-space lines (each ends in `ok`), and the phase's metadata image
/// passes Debian's `thin_check` and thin-core's checker. Returns the lines.
fn oos_checks(boot2: &BootRun, oos_meta: &Path) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for prefix in OOS_LINES {
        let line = boot2
            .lines
            .iter()
            .find(|l| l.starts_with(prefix))
            .with_context(|| format!("boot 2 printed no line starting {prefix:?}"))?;
        ensure!(line.ends_with(", ok"), "out-of-space phase: {line}");
        found.push(line.clone());
    }
    debian::thin_check_ok(oos_meta).map_err(anyhow::Error::msg)?;
    let image = std::fs::read(oos_meta)?;
    let report = check(&mut MemDevice::from_image(&image), &CheckOptions::default());
    ensure!(
        report.is_clean(),
        "thin-core check of {}: {:?}",
        oos_meta.display(),
        report.issues
    );
    println!(
        "  host: out-of-space pool: Debian thin_check and thin-core check clean ({} devices, \
         {} mappings)",
        report.nr_devices, report.nr_mappings
    );
    Ok(found)
}

/// Builds the firmware for `board`; returns the ELF.
fn build(board: Board) -> Result<PathBuf> {
    let root = workspace_root();
    let target_dir = root.join("target").join("firmware");
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        // From the firmware's folder, so its .cargo/config.toml (rustflags) applies.
        .current_dir(root.join("virtio-test"))
        // RUSTFLAGS would replace the config's (static relocation model, needed by the x86_64
        // boot stub), so the firmware build never inherits it.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .args(["build", "--release", "-j1", "--target", board.target()])
        .arg("--target-dir")
        .arg(&target_dir)
        .status()
        .context("running cargo build for the firmware")?;
    ensure!(
        status.success(),
        "firmware build failed for {}",
        board.target()
    );
    Ok(target_dir
        .join(board.target())
        .join("release")
        .join("virtio-test"))
}

/// How a boot ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// The firmware exited through the board's exit device with this code.
    Exited(u8),
    /// We killed QEMU (SIGKILL) on the line we were waiting for.
    Killed,
}

struct BootRun {
    end: End,
    lines: Vec<String>,
    result_time: Duration,
    heap_peak: u64,
}

impl BootRun {
    fn expect(&self, want: End, what: &str) -> Result<()> {
        if self.end != want {
            bail!(
                "{what}: ended {:?}, expected {want:?}; serial:\n{}",
                self.end,
                self.lines.join("\n")
            );
        }
        Ok(())
    }
}

/// Boots the firmware once; with `kill_on`, kills QEMU as soon as a serial line starts so.
fn boot(
    board: Board,
    elf: &Path,
    [meta, data, oos_meta, oos_data]: [&PathBuf; 4],
    timeout: Duration,
    kill_on: Option<&str>,
) -> Result<BootRun> {
    let drive =
        |path: &Path, id: &str| format!("file={},format=raw,if=none,id={id}", path.display());
    let mut cmd = Command::new(board.qemu());
    cmd.args(board.machine_args())
        .args(["-accel", "tcg", "-m", "64M", "-nodefaults", "-no-reboot"])
        .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
        .args(["-global", "virtio-mmio.force-legacy=false"])
        .args(["-drive", &drive(meta, "meta")])
        .args(["-device", "virtio-blk-device,drive=meta,serial=thin-meta"])
        .args(["-drive", &drive(data, "data")])
        .args(["-device", "virtio-blk-device,drive=data,serial=thin-data"])
        .args(["-drive", &drive(oos_meta, "oosmeta")])
        .args(["-device", "virtio-blk-device,drive=oosmeta,serial=oos-meta"])
        .args(["-drive", &drive(oos_data, "oosdata")])
        .args(["-device", "virtio-blk-device,drive=oosdata,serial=oos-data"])
        .arg("-kernel")
        .arg(elf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| {
        format!(
            "starting {} (apt-get install qemu-system-x86 qemu-system-misc, or scripts/setup.sh)",
            board.qemu()
        )
    })?;
    let stdout = child.stdout.take().context("QEMU stdout")?;
    let mut stderr = child.stderr.take().context("QEMU stderr")?;
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let line = line.trim_end_matches('\r').to_owned();
            if tx.send((start.elapsed(), line)).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let mut result_time = None;
    let mut killed = false;
    let status = loop {
        if let Ok((t, line)) = rx.recv_timeout(Duration::from_millis(10)) {
            if line.starts_with("RESULT ") && result_time.is_none() {
                result_time = Some(t);
            }
            if !killed && kill_on.is_some_and(|k| line.starts_with(k)) {
                child.kill()?;
                killed = true;
            }
            lines.push(line);
            continue;
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > timeout {
            child.kill()?;
            child.wait()?;
            bail!(
                "{} timed out after {timeout:?}; serial so far:\n{}",
                board.qemu(),
                lines.join("\n")
            );
        }
    };
    let _ = reader.join();
    lines.extend(rx.try_iter().map(|(_, l)| l));
    let mut err = String::new();
    stderr.read_to_string(&mut err)?;
    let end = if killed {
        End::Killed
    } else {
        let Some(code) = status.code() else {
            bail!("{} killed by a signal; stderr: {err}", board.qemu());
        };
        End::Exited(
            board
                .decode_exit(code)
                .with_context(|| format!("stderr: {err}\nserial:\n{}", lines.join("\n")))?,
        )
    };
    for l in lines.iter().filter(|l| !l.starts_with("expect")) {
        println!("  | {l}");
    }
    let result_time = result_time.with_context(|| {
        format!(
            "no RESULT line on serial; stderr: {err}\n{}",
            lines.join("\n")
        )
    })?;
    let heap_peak = lines
        .iter()
        .find_map(|l| l.strip_prefix("heap-peak "))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("no heap-peak line on serial")?;
    Ok(BootRun {
        end,
        lines,
        result_time,
        heap_peak,
    })
}

/// What boot 2 printed: per (device, virtual block), the data block and FNV of its bytes; per
/// device, its number of mappings.
struct Expectations {
    blocks: BTreeMap<(u64, u64), (u64, u64)>,
    devices: BTreeMap<u64, u64>,
}

fn parse_expectations(lines: &[String]) -> Result<Expectations> {
    let mut e = Expectations {
        blocks: BTreeMap::new(),
        devices: BTreeMap::new(),
    };
    for l in lines {
        let f: Vec<&str> = l.split_whitespace().collect();
        match f.as_slice() {
            ["expect", dev, v, b, h] => {
                let key = (dev.parse()?, v.parse()?);
                let val = (b.parse()?, u64::from_str_radix(h, 16)?);
                ensure!(e.blocks.insert(key, val).is_none(), "duplicate line {l}");
            }
            ["expect-dev", dev, n] => {
                ensure!(
                    e.devices.insert(dev.parse()?, n.parse()?).is_none(),
                    "duplicate line {l}"
                );
            }
            _ => {}
        }
    }
    ensure!(!e.blocks.is_empty(), "boot 2 printed no expectations");
    Ok(e)
}

/// Returns (devices, mappings, pattern sectors) verified.
fn host_checks(boot2: &BootRun, meta: &Path, data: &Path) -> Result<(usize, usize, u64)> {
    let expect = parse_expectations(&boot2.lines)?;

    let out = debian::thin_check_ok(meta).map_err(anyhow::Error::msg)?;
    println!(
        "  host: Debian thin_check accepts the metadata image ({} lines)",
        out.stderr.lines().count()
    );

    let image = std::fs::read(meta)?;
    let mut dev = MemDevice::from_image(&image);
    let report = check(&mut dev, &CheckOptions::default());
    ensure!(
        report.is_clean(),
        "thin-core check of {}: {:?}",
        meta.display(),
        report.issues
    );
    println!(
        "  host: thin-core check clean ({} devices, {} mappings)",
        report.nr_devices, report.nr_mappings
    );

    let xml = debian::thin_dump(meta).map_err(anyhow::Error::msg)?;
    let dump = dm_tools::summarize_dump(&xml).map_err(anyhow::Error::msg)?;
    ensure!(
        dump.transaction == 1,
        "dump transaction {}",
        dump.transaction
    );
    ensure!(
        dump.data_block_size == 128,
        "dump data block size {}",
        dump.data_block_size
    );
    let dump_devs: BTreeMap<u64, u64> = dump
        .devices
        .iter()
        .map(|(id, d)| (*id, d.mappings.len() as u64))
        .collect();
    ensure!(
        dump_devs == expect.devices,
        "thin_dump devices/mapping counts {dump_devs:?}, firmware expects {:?}",
        expect.devices
    );
    let mut file = std::fs::File::open(data)?;
    let mut buf = vec![0u8; DATA_BLOCK_BYTES as usize];
    let mut mappings = 0;
    let mut pattern_sectors = 0;
    for (&id, d) in &dump.devices {
        ensure!(
            d.mapped_blocks_attr == d.mappings.len() as u64,
            "dev {id}: mapped_blocks {} but {} mappings",
            d.mapped_blocks_attr,
            d.mappings.len()
        );
        for (&v, &b) in &d.mappings {
            let Some(&(want_b, want_h)) = expect.blocks.get(&(id, v)) else {
                bail!("thin_dump maps dev {id} block {v}, which the firmware never wrote");
            };
            ensure!(
                b == want_b,
                "dev {id} block {v}: dump says data block {b}, firmware {want_b}"
            );
            file.seek(SeekFrom::Start(b * DATA_BLOCK_BYTES))?;
            file.read_exact(&mut buf)
                .with_context(|| format!("reading data block {b}"))?;
            ensure!(
                pattern::fnv1a64(&buf) == want_h,
                "dev {id} block {v}: data block {b} does not hold the expected bytes"
            );
            for (s, sector) in buf.chunks_exact(pattern::SECTOR_BYTES).enumerate() {
                match pattern::classify(v, s as u32, sector) {
                    pattern::SectorKind::Zero => {}
                    pattern::SectorKind::Pattern { .. } => pattern_sectors += 1,
                    pattern::SectorKind::Bad => {
                        bail!("dev {id} block {v}: data block {b} sector {s} is not a pattern")
                    }
                }
            }
            mappings += 1;
        }
    }
    ensure!(
        mappings == expect.blocks.len(),
        "thin_dump lists {mappings} mappings, firmware expects {}",
        expect.blocks.len()
    );
    println!(
        "  host: thin_dump lists the {} devices and {mappings} mappings; data image holds \
         their patterns ({pattern_sectors} sectors)",
        dump.devices.len()
    );
    Ok((dump.devices.len(), mappings, pattern_sectors))
}
