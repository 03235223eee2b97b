//! A metadata device backed by a file or block device (`std` feature only).

use crate::block::{check_range, Block, BlockDevice, BlockError, BLOCK_SIZE};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// A file of 4 KiB blocks (its size is rounded down to whole blocks).
#[derive(Debug)]
pub struct FileDevice {
    file: File,
    nr_blocks: u64,
}

impl FileDevice {
    /// Opens an existing file or block device for reading and writing.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Self::from_file(file)
    }

    /// Opens read-only (writes fail).
    pub fn open_read_only(path: &Path) -> io::Result<Self> {
        Self::from_file(File::open(path)?)
    }

    /// Wraps an open file; its size is taken by seeking to the end (works for block devices).
    pub fn from_file(mut file: File) -> io::Result<Self> {
        use std::io::Seek;
        let len = file.seek(io::SeekFrom::End(0))?;
        Ok(FileDevice {
            file,
            nr_blocks: len / BLOCK_SIZE as u64,
        })
    }

    /// Creates (or truncates) a zero-filled file of `nr_blocks` blocks.
    pub fn create(path: &Path, nr_blocks: u64) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        file.set_len(nr_blocks * BLOCK_SIZE as u64)?;
        Ok(FileDevice { file, nr_blocks })
    }
}

impl BlockDevice for FileDevice {
    fn nr_blocks(&self) -> u64 {
        self.nr_blocks
    }
    fn read_block(&mut self, block: u64, buf: &mut Block) -> Result<(), BlockError> {
        check_range(block, self.nr_blocks)?;
        self.file
            .read_exact_at(buf, block * BLOCK_SIZE as u64)
            .map_err(|_| BlockError::Read { block })
    }
    fn write_block(&mut self, block: u64, buf: &Block) -> Result<(), BlockError> {
        check_range(block, self.nr_blocks)?;
        self.file
            .write_all_at(buf, block * BLOCK_SIZE as u64)
            .map_err(|_| BlockError::Write { block })
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        self.file.sync_data().map_err(|_| BlockError::Flush)
    }
}
