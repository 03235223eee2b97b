//! Golden metadata made by the Linux kernel's dm-thin (CONVENTIONS §12).
//!
//! Each [`KernelFixture`] is a guest script in `tests/fixtures/kernel/<name>.sh` (with
//! `common.sh` prepended) run on a zero-filled 8 MiB metadata disk and a 64 MiB data disk, and
//! the numbers the result must show: devices and their mapped-block counts, distinct data
//! blocks, the held metadata snapshot, internal nodes. `cargo xtask kernel-fixtures` makes them
//! and saves `tests/fixtures/kernel/<name>.tmeta.gz`; the tests make them afresh too, and check
//! both with Debian's `thin_check`/`thin_dump`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::dm_tools::{self, NODE_INTERNAL};
use crate::guest_image::{io_err, GuestError};
use crate::qemu::{Guest, GuestRun};

pub const META_BYTES: u64 = 8 << 20;
pub const DATA_BYTES: u64 = 64 << 20;
/// 128 sectors.
pub const DATA_BLOCK_BYTES: u64 = 64 << 10;
pub const COMMON_SCRIPT: &str = include_str!("../fixtures/kernel/common.sh");

/// What a fixture's metadata must contain.
#[derive(Debug)]
pub struct Expected {
    /// (thin dev id, mapped blocks) for every device, in the live metadata.
    pub devices: &'static [(u64, u64)],
    /// Distinct data blocks referenced by all devices together.
    pub distinct_data_blocks: u64,
    /// (dev id, mapped blocks) in the held metadata snapshot, if one is held.
    pub metadata_snap: Option<&'static [(u64, u64)]>,
    /// Devices whose mapping tree root must be an internal node.
    pub internal_roots: &'static [u64],
}

#[derive(Debug)]
pub struct KernelFixture {
    pub name: &'static str,
    pub script: &'static str,
    pub expected: Expected,
    /// Whether `cargo xtask kernel-fixtures` also saves the data disk (~65 KiB gzipped: 64 MiB
    /// of mostly zeroes), for tests that read thin contents back.
    pub keep_data: bool,
}

pub const FIXTURES: &[KernelFixture] = &[
    KernelFixture {
        name: "thin-plain",
        script: include_str!("../fixtures/kernel/thin-plain.sh"),
        expected: Expected {
            devices: &[(0, 15)],
            distinct_data_blocks: 15,
            metadata_snap: None,
            internal_roots: &[],
        },
        keep_data: true,
    },
    KernelFixture {
        name: "snap-chain",
        script: include_str!("../fixtures/kernel/snap-chain.sh"),
        expected: Expected {
            devices: &[(0, 16), (1, 16), (2, 16), (3, 16)],
            distinct_data_blocks: 16 + 4 + 2 + 1,
            metadata_snap: None,
            internal_roots: &[],
        },
        keep_data: true,
    },
    KernelFixture {
        name: "held-metadata-snap",
        script: include_str!("../fixtures/kernel/held-metadata-snap.sh"),
        expected: Expected {
            devices: &[(0, 12), (1, 2)],
            distinct_data_blocks: 14,
            metadata_snap: Some(&[(0, 8)]),
            internal_roots: &[],
        },
        keep_data: false,
    },
    KernelFixture {
        name: "internal-nodes",
        script: include_str!("../fixtures/kernel/internal-nodes.sh"),
        expected: Expected {
            devices: &[(0, 400)],
            distinct_data_blocks: 400,
            metadata_snap: None,
            internal_roots: &[0],
        },
        keep_data: false,
    },
];

/// `tests/fixtures/kernel/`.
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join("kernel")
}

/// The checked-in metadata image of `name`.
pub fn fixture_path(name: &str) -> PathBuf {
    fixture_dir().join(format!("{name}.tmeta.gz"))
}

/// The checked-in data image of `name`, kept only for fixtures with `keep_data`.
pub fn data_fixture_path(name: &str) -> PathBuf {
    fixture_dir().join(format!("{name}.tdata.gz"))
}

/// Creates a zero-filled (sparse) file of `bytes`.
pub fn zero_file(path: &Path, bytes: u64) -> Result<(), GuestError> {
    let f = std::fs::File::create(path).map_err(io_err(format!("creating {}", path.display())))?;
    f.set_len(bytes)
        .map_err(io_err(format!("sizing {}", path.display())))
}

/// Runs `fixture`'s script in the guest against fresh `meta.bin`/`data.bin` in `dir`.
/// Returns the run; the files stay in `dir`. A failing script is an error.
pub fn make(fixture: &KernelFixture, dir: &Path) -> Result<GuestRun, String> {
    let meta = dir.join("meta.bin");
    let data = dir.join("data.bin");
    zero_file(&meta, META_BYTES).map_err(|e| e.to_string())?;
    zero_file(&data, DATA_BYTES).map_err(|e| e.to_string())?;
    let run = Guest::new()
        .disk(&meta, "meta")
        .disk(&data, "data")
        .script(format!("{COMMON_SCRIPT}\n{}", fixture.script))
        .timeout(Duration::from_secs(150))
        .run()
        .map_err(|e| e.to_string())?;
    if run.exit_code != 0 {
        return Err(format!(
            "fixture {} script failed:\n{}",
            fixture.name,
            run.report()
        ));
    }
    Ok(run)
}

fn mapped_counts(s: &dm_tools::DumpSummary) -> Vec<(u64, u64)> {
    s.devices
        .iter()
        .map(|(id, d)| (*id, d.mappings.len() as u64))
        .collect()
}

/// Checks metadata image `meta` against `expected` with Debian's thin_check and thin_dump.
/// Returns a one-line description on success.
pub fn verify(name: &str, expected: &Expected, meta: &Path) -> Result<String, String> {
    let fail = |what: String| format!("{name}: {what}");
    crate::debian::thin_check_ok(meta).map_err(|e| fail(format!("thin_check failed: {e}")))?;
    let xml = crate::debian::thin_dump(meta).map_err(|e| fail(e.to_string()))?;
    let live = dm_tools::summarize_dump(&xml).map_err(&fail)?;
    for (id, dev) in &live.devices {
        if dev.mapped_blocks_attr != dev.mappings.len() as u64 {
            return Err(fail(format!(
                "dev {id}: mapped_blocks={} but {} mappings listed",
                dev.mapped_blocks_attr,
                dev.mappings.len()
            )));
        }
    }
    if mapped_counts(&live) != expected.devices {
        return Err(fail(format!(
            "devices (id, mapped) {:?}, expected {:?}\n{xml}",
            mapped_counts(&live),
            expected.devices
        )));
    }
    let distinct = live.distinct_data_blocks().len() as u64;
    if distinct != expected.distinct_data_blocks {
        return Err(fail(format!(
            "{distinct} distinct data blocks, expected {}",
            expected.distinct_data_blocks
        )));
    }
    if live.data_block_size != 128 || live.nr_data_blocks != DATA_BYTES / DATA_BLOCK_BYTES {
        return Err(fail(format!(
            "data_block_size {} nr_data_blocks {}",
            live.data_block_size, live.nr_data_blocks
        )));
    }
    let bytes = std::fs::read(meta).map_err(|e| fail(e.to_string()))?;
    let held_root = dm_tools::held_root(&bytes).map_err(&fail)?;
    match (expected.metadata_snap, held_root) {
        (None, 0) => {}
        (Some(want), held) if held != 0 => {
            let xml =
                crate::debian::thin_dump_metadata_snap(meta).map_err(|e| fail(e.to_string()))?;
            let snap = dm_tools::summarize_dump(&xml).map_err(&fail)?;
            if mapped_counts(&snap) != want {
                return Err(fail(format!(
                    "metadata snapshot devices {:?}, expected {want:?}",
                    mapped_counts(&snap)
                )));
            }
        }
        (want, got) => {
            return Err(fail(format!(
                "metadata snapshot: expected {want:?}, superblock held_root is {got}"
            )))
        }
    }
    if !expected.internal_roots.is_empty() {
        for &dev in expected.internal_roots {
            let flags = dm_tools::device_root_flags(&bytes, dev).map_err(&fail)?;
            if flags != NODE_INTERNAL {
                return Err(fail(format!(
                    "dev {dev}: root node flags {flags}, not internal"
                )));
            }
        }
    }
    Ok(format!(
        "{name}: thin_check ok; devices {:?}; {distinct} data blocks; held_root {held_root}",
        expected.devices
    ))
}

/// Writes `bytes` gzip-compressed to `path`.
pub fn save_gz(path: &Path, bytes: &[u8]) -> Result<(), GuestError> {
    let file =
        std::fs::File::create(path).map_err(io_err(format!("creating {}", path.display())))?;
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::best());
    gz.write_all(bytes)
        .and_then(|_| gz.finish().map(|_| ()))
        .map_err(io_err(format!("writing {}", path.display())))
}

/// Reads a gzip-compressed file.
pub fn load_gz(path: &Path) -> Result<Vec<u8>, GuestError> {
    let file = std::fs::File::open(path).map_err(io_err(format!("opening {}", path.display())))?;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut out)
        .map_err(io_err(format!("decompressing {}", path.display())))?;
    Ok(out)
}
