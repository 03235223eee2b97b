//! A RAM-backed bdev (`bdev_malloc_create`).

use super::{check_range, Bdev, BdevError};

/// Asks the kernel to back `buf` with transparent huge pages (SPDK keeps its buffers in
/// huge pages): random 4 KiB accesses across a large bdev then miss the TLB far less. Only
/// the 2 MiB-aligned interior is advised; failure (THP off) is harmless.
fn advise_huge_pages(buf: &mut [u8]) {
    const HUGE: usize = 2 << 20;
    let start = buf.as_mut_ptr() as usize;
    let aligned = start.next_multiple_of(HUGE);
    let end = (start + buf.len()) & !(HUGE - 1);
    if end <= aligned {
        return;
    }
    // SAFETY: [aligned, end) lies inside `buf`, which this function borrows mutably, and
    // MADV_HUGEPAGE only changes how the kernel backs the pages, never their contents.
    let r = unsafe {
        rustix::mm::madvise(
            aligned as *mut std::ffi::c_void,
            end - aligned,
            rustix::mm::Advice::LinuxHugepage,
        )
    };
    if let Err(e) = r {
        log::debug!("madvise(MADV_HUGEPAGE): {e}");
    }
}

/// RAM bdev; deallocated and never-written blocks read as zeroes.
#[derive(Debug)]
pub struct Malloc {
    name: String,
    block_size: u32,
    data: Vec<u8>,
    uuid: [u8; 16],
}

impl Malloc {
    /// `num_blocks` blocks of `block_size` bytes (512 or 4096).
    pub fn new(
        name: &str,
        num_blocks: u64,
        block_size: u32,
        uuid: [u8; 16],
    ) -> Result<Self, BdevError> {
        if block_size != 512 && block_size != 4096 {
            return Err(BdevError::Io(format!(
                "block size {block_size} is not 512 or 4096"
            )));
        }
        let len = num_blocks
            .checked_mul(u64::from(block_size))
            .and_then(|l| usize::try_from(l).ok())
            .ok_or_else(|| BdevError::Io("size too large".into()))?;
        let mut data = vec![0; len];
        advise_huge_pages(&mut data);
        Ok(Malloc {
            name: name.into(),
            block_size,
            data,
            uuid,
        })
    }

    fn span(&self, lba: u64, bytes: usize) -> Result<std::ops::Range<usize>, BdevError> {
        let bs = u64::from(self.block_size);
        if !(bytes as u64).is_multiple_of(bs) {
            return Err(BdevError::Io(
                "transfer is not a whole number of blocks".into(),
            ));
        }
        check_range(lba, bytes as u64 / bs, self.num_blocks())?;
        let start = (lba * bs) as usize;
        Ok(start..start + bytes)
    }
}

impl Bdev for Malloc {
    fn name(&self) -> &str {
        &self.name
    }
    fn block_size(&self) -> u32 {
        self.block_size
    }
    fn num_blocks(&self) -> u64 {
        self.data.len() as u64 / u64::from(self.block_size)
    }
    fn uuid(&self) -> [u8; 16] {
        self.uuid
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), BdevError> {
        let r = self.span(lba, buf.len())?;
        buf.copy_from_slice(&self.data[r]);
        Ok(())
    }
    fn write(&mut self, lba: u64, data: &[u8], _fua: bool) -> Result<(), BdevError> {
        let r = self.span(lba, data.len())?;
        self.data[r].copy_from_slice(data);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), BdevError> {
        Ok(())
    }
    fn write_zeroes(&mut self, lba: u64, count: u64) -> Result<(), BdevError> {
        check_range(lba, count, self.num_blocks())?;
        let bs = u64::from(self.block_size);
        self.data[(lba * bs) as usize..((lba + count) * bs) as usize].fill(0);
        Ok(())
    }
    fn deallocate(&mut self, lba: u64, count: u64) -> Result<(), BdevError> {
        self.write_zeroes(lba, count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_was_written_and_checks_ranges() {
        let mut m = Malloc::new("m0", 16, 512, [1; 16]).unwrap();
        m.write(3, &[7u8; 1024], false).unwrap();
        let mut b = [0u8; 1536];
        m.read(2, &mut b).unwrap();
        assert!(b[..512].iter().all(|&x| x == 0) && b[512..].iter().all(|&x| x == 7));
        m.deallocate(3, 1).unwrap();
        m.read(3, &mut b[..512]).unwrap();
        assert!(b[..512].iter().all(|&x| x == 0));
        assert!(matches!(
            m.read(15, &mut b[..1024]),
            Err(BdevError::OutOfRange { .. })
        ));
        assert!(m.write(0, &[0u8; 100], false).is_err());
    }
}
