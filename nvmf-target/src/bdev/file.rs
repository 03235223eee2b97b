//! A bdev on a regular file or a block device (`bdev_aio_create`), with positional I/O.
//! Deallocate punches holes (regular files) so space really returns to the filesystem.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
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
        if block_size != 512 && block_size != 4096 {
            return Err(BdevError::Io(format!(
                "block size {block_size} is not 512 or 4096"
            )));
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io)?;
        let len = std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0)).map_err(io)?;
        Ok(FileBdev {
            name: name.into(),
            file,
            block_size,
            num_blocks: len / u64::from(block_size),
            uuid,
        })
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
        self.file.read_exact_at(buf, off).map_err(io)
    }
    fn write(&mut self, lba: u64, data: &[u8], fua: bool) -> Result<(), BdevError> {
        let off = self.offset(lba, data.len())?;
        self.file.write_all_at(data, off).map_err(io)?;
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
        // Not supported here (some filesystems, block devices): write zeroes.
        let chunk = vec![0u8; 1 << 20];
        let (mut off, end) = (lba * bs, (lba + count) * bs);
        while off < end {
            let n = (end - off).min(chunk.len() as u64) as usize;
            self.file.write_all_at(&chunk[..n], off).map_err(io)?;
            off += n as u64;
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
}
