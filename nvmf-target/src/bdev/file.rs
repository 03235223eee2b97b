//! A bdev on a regular file or a block device (`bdev_aio_create`), with positional I/O.
//! Deallocate punches holes (regular files) so space really returns to the filesystem.
//!
//! Optionally with `O_DIRECT` ([`FileBdev::open_direct`]): I/O bypasses the page cache, so a
//! completed write is on the device (its volatile cache aside) and the host's memory is not
//! spent caching a volume. Direct I/O needs block-aligned memory; the bdev moves data
//! through an aligned bounce buffer of its own (one copy, as the page cache costs too).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use rustix::fs::FallocateFlags;

use super::{check_range, Bdev, BdevError};

/// File-backed bdev.
#[derive(Debug)]
pub struct FileBdev {
    name: String,
    file: File,
    block_size: u32,
    num_blocks: u64,
    uuid: [u8; 16],
    /// With `O_DIRECT`: the bounce buffer (aligned window inside, see [`Bounce`]).
    direct: Option<Bounce>,
}

/// Bytes moved per direct I/O call.
const BOUNCE_BYTES: usize = 1 << 20;
/// Alignment of direct I/O memory (covers 512- and 4096-byte logical blocks).
const DIRECT_ALIGN: usize = 4096;

/// A heap buffer with a `DIRECT_ALIGN`-aligned window of `BOUNCE_BYTES`.
#[derive(Debug)]
struct Bounce {
    mem: Vec<u8>,
    off: usize,
}

impl Bounce {
    fn new() -> Self {
        let mem = vec![0u8; BOUNCE_BYTES + DIRECT_ALIGN];
        let addr = mem.as_ptr() as usize;
        let off = addr.next_multiple_of(DIRECT_ALIGN) - addr;
        Self { mem, off }
    }

    fn window(&mut self, n: usize) -> &mut [u8] {
        &mut self.mem[self.off..self.off + n]
    }
}

fn io(e: std::io::Error) -> BdevError {
    BdevError::Io(e.to_string())
}

impl FileBdev {
    /// Opens `path` (which must exist) with `block_size`-byte blocks.
    pub fn open(
        name: &str,
        path: &Path,
        block_size: u32,
        uuid: [u8; 16],
    ) -> Result<Self, BdevError> {
        Self::open_with(name, path, block_size, uuid, false)
    }

    /// Opens `path` with `O_DIRECT` (see the module notes). Fails with a clear error where
    /// the filesystem refuses direct I/O (tmpfs, for one).
    pub fn open_direct(
        name: &str,
        path: &Path,
        block_size: u32,
        uuid: [u8; 16],
    ) -> Result<Self, BdevError> {
        Self::open_with(name, path, block_size, uuid, true)
    }

    fn open_with(
        name: &str,
        path: &Path,
        block_size: u32,
        uuid: [u8; 16],
        direct: bool,
    ) -> Result<Self, BdevError> {
        if block_size != 512 && block_size != 4096 {
            return Err(BdevError::Io(format!(
                "block size {block_size} is not 512 or 4096"
            )));
        }
        let mut opts = OpenOptions::new();
        opts.read(true).write(true);
        if direct {
            opts.custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32);
        }
        let mut file = opts.open(path).map_err(|e| {
            if direct && e.kind() == std::io::ErrorKind::InvalidInput {
                BdevError::Io(format!(
                    "{}: the filesystem does not support O_DIRECT",
                    path.display()
                ))
            } else {
                io(e)
            }
        })?;
        let len = std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0)).map_err(io)?;
        Ok(FileBdev {
            name: name.into(),
            file,
            block_size,
            num_blocks: len / u64::from(block_size),
            uuid,
            direct: direct.then(Bounce::new),
        })
    }

    /// Whether the file is open with `O_DIRECT`.
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    fn offset(&self, lba: u64, bytes: usize) -> Result<u64, BdevError> {
        let bs = u64::from(self.block_size);
        if !(bytes as u64).is_multiple_of(bs) {
            return Err(BdevError::Io(
                "transfer is not a whole number of blocks".into(),
            ));
        }
        check_range(lba, bytes as u64 / bs, self.num_blocks)?;
        Ok(lba * bs)
    }
}

impl Bdev for FileBdev {
    fn name(&self) -> &str {
        &self.name
    }
    fn block_size(&self) -> u32 {
        self.block_size
    }
    fn num_blocks(&self) -> u64 {
        self.num_blocks
    }
    fn uuid(&self) -> [u8; 16] {
        self.uuid
    }
    fn rescan(&mut self) -> Result<u64, BdevError> {
        let len = std::io::Seek::seek(&mut self.file, std::io::SeekFrom::End(0)).map_err(io)?;
        self.num_blocks = len / u64::from(self.block_size);
        Ok(self.num_blocks)
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), BdevError> {
        let off = self.offset(lba, buf.len())?;
        let Some(b) = self.direct.as_mut() else {
            return self.file.read_exact_at(buf, off).map_err(io);
        };
        for (i, chunk) in buf.chunks_mut(BOUNCE_BYTES).enumerate() {
            let w = b.window(chunk.len());
            self.file
                .read_exact_at(w, off + (i * BOUNCE_BYTES) as u64)
                .map_err(io)?;
            chunk.copy_from_slice(w);
        }
        Ok(())
    }
    fn write(&mut self, lba: u64, data: &[u8], fua: bool) -> Result<(), BdevError> {
        let off = self.offset(lba, data.len())?;
        match self.direct.as_mut() {
            None => self.file.write_all_at(data, off).map_err(io)?,
            Some(b) => {
                for (i, chunk) in data.chunks(BOUNCE_BYTES).enumerate() {
                    let w = b.window(chunk.len());
                    w.copy_from_slice(chunk);
                    self.file
                        .write_all_at(w, off + (i * BOUNCE_BYTES) as u64)
                        .map_err(io)?;
                }
            }
        }
        if fua {
            self.file.sync_data().map_err(io)?;
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), BdevError> {
        self.file.sync_data().map_err(io)
    }
    fn write_zeroes(&mut self, lba: u64, count: u64) -> Result<(), BdevError> {
        check_range(lba, count, self.num_blocks)?;
        let bs = u64::from(self.block_size);
        let flags = FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE;
        if rustix::fs::fallocate(&self.file, flags, lba * bs, count * bs).is_ok() {
            return Ok(());
        }
        // Not supported here (some filesystems, block devices): write zeroes (through
        // `write`, so that direct I/O goes through the aligned buffer).
        let chunk = vec![0u8; 1 << 20];
        let per = chunk.len() as u64 / bs;
        let mut at = lba;
        while at < lba + count {
            let n = per.min(lba + count - at);
            self.write(at, &chunk[..(n * bs) as usize], false)?;
            at += n;
        }
        Ok(())
    }
    fn deallocate(&mut self, lba: u64, count: u64) -> Result<(), BdevError> {
        check_range(lba, count, self.num_blocks)?;
        let bs = u64::from(self.block_size);
        let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        if rustix::fs::fallocate(&self.file, flags, lba * bs, count * bs).is_ok() {
            return Ok(());
        }
        self.write_zeroes(lba, count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_bdev_round_trip_and_hole_punching() {
        let dir = std::env::temp_dir().join(format!("fbdev-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        File::create(&path).unwrap().set_len(1 << 20).unwrap();
        let mut b = FileBdev::open("f0", &path, 4096, [0; 16]).unwrap();
        assert_eq!(b.num_blocks(), 256);
        b.write(10, &[5u8; 8192], true).unwrap();
        let mut r = [0u8; 8192];
        b.read(10, &mut r).unwrap();
        assert!(r.iter().all(|&x| x == 5));
        b.deallocate(10, 1).unwrap();
        b.read(10, &mut r).unwrap();
        assert!(r[..4096].iter().all(|&x| x == 0) && r[4096..].iter().all(|&x| x == 5));
        b.write_zeroes(11, 1).unwrap();
        b.read(11, &mut r[..4096]).unwrap();
        assert!(r[..4096].iter().all(|&x| x == 0));
        assert!(matches!(
            b.read(255, &mut r),
            Err(BdevError::OutOfRange { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn direct_io_round_trips_through_the_aligned_buffer() {
        let dir = std::env::temp_dir().join(format!("fbdev-direct-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        File::create(&path).unwrap().set_len(8 << 20).unwrap();
        let mut b = FileBdev::open_direct("f0", &path, 512, [0; 16]).unwrap();
        assert!(b.is_direct());
        let fl = rustix::fs::fcntl_getfl(&b.file).unwrap();
        assert!(
            fl.contains(rustix::fs::OFlags::DIRECT),
            "opened without O_DIRECT"
        );
        // Larger than the bounce buffer, at an odd sector: several chunks, unaligned memory.
        let len = BOUNCE_BYTES + 3 * 512;
        let data: Vec<u8> = (0..len).map(|i| (i * 31 + i / 512) as u8).collect();
        b.write(7, &data, true).unwrap();
        let mut back = vec![0u8; len + 1];
        b.read(7, &mut back[1..]).unwrap();
        assert!(
            back[1..] == data[..],
            "direct read returns the direct write"
        );
        b.write_zeroes(8, 2).unwrap();
        b.read(7, &mut back[1..]).unwrap();
        assert!(back[1 + 512..1 + 1536].iter().all(|&x| x == 0));
        drop(b);
        // What went down is on the file for a buffered reader too.
        let mut plain = FileBdev::open("f1", &path, 512, [0; 16]).unwrap();
        let mut r = vec![0u8; 512];
        plain.read(7, &mut r).unwrap();
        assert_eq!(r, data[..512]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
