//! `thin_trim`: discard the data blocks the pool does not use.
//!
//! The data space map is read directly (index tree, then each bitmap, 32 entries per word so
//! runs of free blocks are found a word at a time); every maximal run of blocks with count 0
//! is discarded, in units of the data block size. Discarding is `fallocate(PUNCH_HOLE |
//! KEEP_SIZE)`, which frees the range of a regular file and discards (or zeroes) a block
//! device's. Unlike 0.9, regular files are accepted (0.9 refuses them) and the free runs
//! before the first and after the last used block are discarded too (0.9 skips them).
//! Refuses metadata flagged NEEDS_CHECK.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::process::ExitCode;

use rustix::fs::{fallocate, FallocateFlags};
use thin_core::checksum::BlockKind;
use thin_core::pdata::btree;
use thin_core::pdata::sm::{self, IndexEntry, ENTRIES_PER_BITMAP};
use thin_core::thin::reader::Source;

use crate::getopt::{self, Arg, Item, Long};
use crate::meta_open;

fn usage(prog: &str, w: &mut dyn Write) {
    let _ = writeln!(
        w,
        "Usage: {prog} [options] --metadata-dev {{device|file}} --data-dev {{device|file}}\n\
         Options:\n  {{-h|--help}}\n  {{-V|--version}}"
    );
}

/// Calls `f(begin, end)` for every maximal run of free data blocks, in order.
pub fn free_runs(
    metadata: &str,
    mut f: impl FnMut(u64, u64) -> Result<(), String>,
) -> Result<(u64, u32), String> {
    let mut r = meta_open::open_reader(metadata, Source::Live)?;
    let sb = r.superblock().clone();
    if sb.needs_check() {
        return Err("metadata has NEEDS_CHECK set; run thin_check (and thin_repair) first".into());
    }
    let nr_blocks = sb.data_sm_root.nr_blocks;
    let corrupt = || "corrupt metadata, please use thin_check for details".to_string();
    let mut index: Vec<IndexEntry> = Vec::new();
    let mut keys_ok = true;
    btree::walk(r.cache(), sb.data_sm_root.bitmap_root, 16, |k, v| {
        keys_ok &= k == index.len() as u64;
        index.push(IndexEntry::unpack(v));
        keys_ok
    })
    .map_err(|e| format!("{e}"))?;
    if !keys_ok || (index.len() as u64) < sm::nr_bitmaps(nr_blocks) {
        return Err(corrupt());
    }
    let mut run_start: Option<u64> = None;
    for (i, ie) in index.iter().enumerate() {
        let base = i as u64 * ENTRIES_PER_BITMAP;
        if base >= nr_blocks {
            break;
        }
        let limit = ENTRIES_PER_BITMAP.min(nr_blocks - base);
        let words: Vec<u64> = r
            .cache()
            .read(ie.blocknr, BlockKind::Bitmap, |b| {
                (0..limit.div_ceil(32) as usize)
                    .map(|w| sm::bitmap_word(b, w))
                    .collect()
            })
            .map_err(|e| format!("{e}"))?;
        for (w, word) in words.into_iter().enumerate() {
            let first = base + 32 * w as u64;
            let n = (limit - 32 * w as u64).min(32);
            if word == 0 && n == 32 {
                run_start.get_or_insert(first);
                continue;
            }
            for e in 0..n {
                let b = first + e;
                if (word >> (2 * e)) & 3 == 0 {
                    run_start.get_or_insert(b);
                } else if let Some(s) = run_start.take() {
                    f(s, b)?;
                }
            }
        }
    }
    if let Some(s) = run_start {
        f(s, nr_blocks)?;
    }
    Ok((nr_blocks, sb.data_block_size))
}

fn trim(metadata: &str, data: &str) -> Result<(), String> {
    // Validate the metadata before touching the data device.
    let (nr_blocks, bs) = free_runs(metadata, |_, _| Ok(()))?;
    let block_bytes = u64::from(bs) * 512;
    let expected = nr_blocks
        .checked_mul(block_bytes)
        .ok_or("data device size overflows")?;
    let file = OpenOptions::new()
        .write(true)
        .open(data)
        .map_err(|_| format!("Couldn't open data device '{data}'"))?;
    let meta = file
        .metadata()
        .map_err(|_| "Couldn't stat data device".to_string())?;
    let ft = meta.file_type();
    let size = if ft.is_block_device() {
        use std::io::Seek;
        let mut f = &file;
        f.seek(std::io::SeekFrom::End(0))
            .map_err(|_| "Couldn't get data device size".to_string())?
    } else if ft.is_file() {
        meta.len()
    } else {
        return Err("Data device is neither a block device nor a regular file".into());
    };
    if size < expected || (ft.is_block_device() && size != expected) {
        return Err("Data device is not the expected size".into());
    }
    free_runs(metadata, |b, e| {
        let off = b * block_bytes;
        let len = (e - b) * block_bytes;
        fallocate(
            &file,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            off,
            len,
        )
        .map_err(|err| format!("discard of data blocks {b}..{e} failed: {err}"))
    })?;
    file.sync_all()
        .map_err(|e| format!("syncing the data device: {e}"))?;
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
            name: "version",
            arg: Arg::No,
            id: 'V',
        },
        Long {
            name: "metadata-dev",
            arg: Arg::Required,
            id: 'M',
        },
        Long {
            name: "data-dev",
            arg: Arg::Required,
            id: 'D',
        },
        Long {
            name: "pool-inactive",
            arg: Arg::No,
            id: 'P',
        },
    ];
    let (prog, rest) = getopt::strings(args);
    let parsed = getopt::parse(&rest, "hV", LONGS);
    let (mut metadata, mut data) = (None, None);
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
            Item::Opt('M', v) => metadata = v,
            Item::Opt('D', v) => data = v,
            Item::Opt(..) => {}
            Item::Bad(msg) => {
                let _ = writeln!(err, "{prog}: {msg}");
                usage(&prog, err);
                return 1;
            }
        }
    }
    let (Some(metadata), Some(data)) = (metadata, data) else {
        usage(&prog, err);
        return 1;
    };
    match trim(&metadata, &data) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(err, "{e}");
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
