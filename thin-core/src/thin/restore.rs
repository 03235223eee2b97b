//! Building a pool from a description (dumped XML, a repair): devices with given details and
//! mappings with given data blocks and times. Trees are built bottom-up, packed; data block
//! counts are the number of leaf entries that reference each block.

use crate::block::BlockDevice;
use crate::pdata::builder::Builder;
use crate::pdata::tm::Which;
use crate::thin::details::{BlockTime, DeviceDetails, MAX_DEV_ID, MAX_TIME};
use crate::thin::pool::{FormatOptions, Pool, PoolError};
use crate::thin::superblock::NEEDS_CHECK;

/// Superblock values of the pool being restored.
#[derive(Debug, Clone, Copy)]
pub struct RestoreHeader {
    pub time: u32,
    pub transaction_id: u64,
    pub data_block_size: u32,
    pub nr_data_blocks: u64,
    /// Only NEEDS_CHECK is kept.
    pub flags: u32,
}

/// Why a restore input was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RestoreError {
    /// The pool layer failed (metadata device too small, I/O …).
    Pool(PoolError),
    /// A mapping names a data block beyond the data device.
    DataBlockOutOfRange {
        dev: u64,
        vblock: u64,
        block: u64,
        nr_data_blocks: u64,
    },
    /// Mappings of a device are not in ascending order or repeat.
    NotAscending { dev: u64, vblock: u64 },
    /// A device id is used twice or exceeds 24 bits.
    BadDevice(u64),
    /// A time exceeds 24 bits.
    BadTime(u32),
    /// A mapping or device end without a device begin, or nesting.
    Sequence(&'static str),
}

impl From<PoolError> for RestoreError {
    fn from(e: PoolError) -> Self {
        RestoreError::Pool(e)
    }
}

impl From<crate::pdata::PdError> for RestoreError {
    fn from(e: crate::pdata::PdError) -> Self {
        RestoreError::Pool(e.into())
    }
}

impl core::fmt::Display for RestoreError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RestoreError::Pool(e) => write!(f, "{e}"),
            RestoreError::DataBlockOutOfRange { dev, vblock, block, nr_data_blocks } => write!(
                f,
                "device {dev}, block {vblock}: mapping beyond end of data device ({block} >= {nr_data_blocks})"
            ),
            RestoreError::NotAscending { dev, vblock } => {
                write!(f, "device {dev}: mapping for block {vblock} is out of order or repeated")
            }
            RestoreError::BadDevice(id) => write!(f, "device id {id} repeated or above {MAX_DEV_ID}"),
            RestoreError::BadTime(t) => write!(f, "time {t} exceeds 24 bits"),
            RestoreError::Sequence(s) => write!(f, "{s}"),
        }
    }
}

struct Current {
    id: u64,
    details: DeviceDetails,
    builder: Builder,
    count: u64,
    last: Option<u64>,
}

/// Restores into a metadata device.
pub struct Restorer<D> {
    pool: Pool<D>,
    nr_data_blocks: u64,
    cur: Option<Current>,
}

impl<D> core::fmt::Debug for Restorer<D> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Restorer")
            .field("nr_data_blocks", &self.nr_data_blocks)
            .finish()
    }
}

impl<D: BlockDevice> Restorer<D> {
    /// Formats `dev` for the pool described by `h`.
    pub fn new(dev: D, h: RestoreHeader, cache_blocks: usize) -> Result<Self, RestoreError> {
        if h.time > MAX_TIME {
            return Err(RestoreError::BadTime(h.time));
        }
        let mut pool = Pool::format(
            dev,
            FormatOptions {
                data_block_size: h.data_block_size,
                nr_data_blocks: h.nr_data_blocks,
                cache_blocks,
            },
        )?;
        pool.sb.time = h.time;
        pool.sb.trans_id = h.transaction_id;
        pool.sb.flags = h.flags & NEEDS_CHECK;
        Ok(Restorer {
            pool,
            nr_data_blocks: h.nr_data_blocks,
            cur: None,
        })
    }

    /// Starts device `id`; `mapped_blocks` of `details` is recomputed from the mappings.
    pub fn begin_device(&mut self, id: u64, details: DeviceDetails) -> Result<(), RestoreError> {
        if self.cur.is_some() {
            return Err(RestoreError::Sequence(
                "device begins inside another device",
            ));
        }
        if id > MAX_DEV_ID || self.pool.device_exists(id)? {
            return Err(RestoreError::BadDevice(id));
        }
        if details.creation_time > MAX_TIME || details.snapshotted_time > MAX_TIME {
            return Err(RestoreError::BadTime(
                details.creation_time.max(details.snapshotted_time),
            ));
        }
        self.cur = Some(Current {
            id,
            details,
            builder: Builder::new(8),
            count: 0,
            last: None,
        });
        Ok(())
    }

    /// Adds mapping `vblock → data_block` written at `time` to the current device.
    pub fn map(&mut self, vblock: u64, data_block: u64, time: u32) -> Result<(), RestoreError> {
        let nr = self.nr_data_blocks;
        let cur = self
            .cur
            .as_mut()
            .ok_or(RestoreError::Sequence("mapping outside a device"))?;
        if cur.last.is_some_and(|l| l >= vblock) {
            return Err(RestoreError::NotAscending {
                dev: cur.id,
                vblock,
            });
        }
        if data_block >= nr {
            return Err(RestoreError::DataBlockOutOfRange {
                dev: cur.id,
                vblock,
                block: data_block,
                nr_data_blocks: nr,
            });
        }
        if time > MAX_TIME {
            return Err(RestoreError::BadTime(time));
        }
        cur.last = Some(vblock);
        let tm = &mut self.pool.tm;
        tm.inc_or_claim(Which::Data, data_block)?;
        let v = BlockTime {
            block: data_block,
            time,
        }
        .pack();
        cur.builder.push(tm, vblock, &v.to_le_bytes())?;
        cur.count += 1;
        tm.maybe_apply()?;
        Ok(())
    }

    /// Ends the current device.
    pub fn end_device(&mut self) -> Result<(), RestoreError> {
        let cur = self
            .cur
            .take()
            .ok_or(RestoreError::Sequence("device end without a device"))?;
        if self.pool.device_exists(cur.id)? {
            return Err(RestoreError::BadDevice(cur.id));
        }
        let root = cur.builder.finish(&mut self.pool.tm)?;
        self.pool.insert_device_root(cur.id, root)?;
        let mut d = cur.details;
        d.mapped_blocks = cur.count;
        self.pool.details.insert(cur.id, d);
        Ok(())
    }

    /// Commits and returns the pool.
    pub fn finish(mut self) -> Result<Pool<D>, RestoreError> {
        if self.cur.is_some() {
            return Err(RestoreError::Sequence("input ends inside a device"));
        }
        self.pool.commit()?;
        Ok(self.pool)
    }
}
