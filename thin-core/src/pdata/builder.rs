//! Bottom-up B-tree construction from entries in ascending key order (used by restore).
//!
//! Invariants: nodes are packed full except at the end of each level, where the last two
//! nodes are balanced so that both hold at least a third of their capacity; every level
//! keeps at most two nodes in memory; the result has uniform leaf depth and is accepted by
//! the kernel and `thin_check` like any other tree. Blocks come from the transaction manager
//! (new, count 1); the caller accounts for whatever the leaf values reference.

use crate::block::{Block, BlockDevice, BLOCK_SIZE};
use crate::checksum::BlockKind;
use crate::pdata::node;
use crate::pdata::tm::Tm;
use crate::pdata::PdError;
use alloc::boxed::Box;
use alloc::vec::Vec;

struct Level {
    cur: Box<Block>,
    pending: Option<Box<Block>>,
    /// Whether anything was handed to the level above.
    pushed_up: bool,
}

impl Level {
    fn new(leaf: bool, value_size: u32) -> Level {
        let mut cur = Box::new([0u8; BLOCK_SIZE]);
        node::init(&mut cur, leaf, value_size);
        Level {
            cur,
            pending: None,
            pushed_up: false,
        }
    }
}

/// Builds one tree from ascending `(key, value)` pairs.
#[derive(Default)]
pub struct Builder {
    value_size: u32,
    levels: Vec<Level>,
    last_key: Option<u64>,
}

impl core::fmt::Debug for Builder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Builder")
            .field("levels", &self.levels.len())
            .finish()
    }
}

/// Error for keys that are not strictly ascending.
pub const KEYS_NOT_ASCENDING: &str = "keys given to the tree builder are not ascending";

impl Builder {
    /// A builder for leaves with values of `value_size` bytes.
    pub fn new(value_size: u32) -> Builder {
        Builder {
            value_size,
            levels: alloc::vec![Level::new(true, value_size)],
            last_key: None,
        }
    }

    /// Adds the next entry; keys must strictly increase.
    pub fn push<D: BlockDevice>(
        &mut self,
        tm: &mut Tm<D>,
        key: u64,
        value: &[u8],
    ) -> Result<(), PdError> {
        if self.last_key.is_some_and(|k| k >= key) {
            return Err(PdError::BadNode {
                block: 0,
                reason: KEYS_NOT_ASCENDING,
            });
        }
        self.last_key = Some(key);
        self.push_at(tm, 0, key, value)
    }

    fn push_at<D: BlockDevice>(
        &mut self,
        tm: &mut Tm<D>,
        level: usize,
        key: u64,
        value: &[u8],
    ) -> Result<(), PdError> {
        let full = {
            let l = &self.levels[level];
            node::nr_entries(&l.cur) == node::max_entries(&l.cur)
        };
        if full {
            let fresh = {
                let mut b = Box::new([0u8; BLOCK_SIZE]);
                node::init(
                    &mut b,
                    level == 0,
                    if level == 0 { self.value_size } else { 8 },
                );
                b
            };
            let done = core::mem::replace(&mut self.levels[level].cur, fresh);
            if let Some(prev) = self.levels[level].pending.replace(done) {
                self.emit(tm, level, &prev)?;
            }
        }
        let cur = &mut self.levels[level].cur;
        let n = node::nr_entries(cur);
        node::insert_at(cur, n, key, value);
        Ok(())
    }

    /// Writes a finished node of `level` and hands it to the level above.
    fn emit<D: BlockDevice>(
        &mut self,
        tm: &mut Tm<D>,
        level: usize,
        b: &Block,
    ) -> Result<(), PdError> {
        let loc = tm.new_block()?;
        tm.cache.write(loc, BlockKind::Node, b)?;
        if self.levels.len() == level + 1 {
            self.levels.push(Level::new(false, 8));
        }
        self.levels[level].pushed_up = true;
        self.push_at(tm, level + 1, node::key(b, 0), &loc.to_le_bytes())
    }

    /// Finishes the tree and returns its root.
    pub fn finish<D: BlockDevice>(mut self, tm: &mut Tm<D>) -> Result<u64, PdError> {
        let mut level = 0;
        loop {
            let pending = self.levels[level].pending.take();
            let mut cur =
                core::mem::replace(&mut self.levels[level].cur, Box::new([0u8; BLOCK_SIZE]));
            if pending.is_none() && !self.levels[level].pushed_up {
                // Nothing above: this node is the root (possibly an empty leaf).
                let loc = tm.new_block()?;
                tm.cache.write(loc, BlockKind::Node, &cur)?;
                return Ok(loc);
            }
            if let Some(mut prev) = pending {
                let n = node::nr_entries(&cur);
                if n < node::max_entries(&cur) / 3 {
                    // Balance the last two so neither is under a third full.
                    let total = node::nr_entries(&prev) + n;
                    let keep = total / 2;
                    let mut merged = Box::new([0u8; BLOCK_SIZE]);
                    node::init(
                        &mut merged,
                        node::is_leaf(&prev),
                        node::value_size(&prev) as u32,
                    );
                    let pn = node::nr_entries(&prev);
                    node::append_from(&mut merged, &prev, keep, pn);
                    node::append_from(&mut merged, &cur, 0, n);
                    node::remove_range(&mut prev, keep, pn);
                    cur = merged;
                }
                self.emit(tm, level, &prev)?;
            }
            if node::nr_entries(&cur) > 0 {
                self.emit(tm, level, &cur)?;
            }
            level += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemDevice;
    use crate::pdata::btree;

    #[test]
    fn built_trees_have_every_key_and_valid_shape() {
        for n in [0u64, 1, 251, 252, 253, 300, 504, 505, 20_000, 64_000] {
            let mut tm = Tm::format(MemDevice::new(8192), 64, 8192, 10).unwrap();
            let mut b = Builder::new(8);
            for k in 0..n {
                b.push(&mut tm, k * 2, &(k + 7).to_le_bytes()).unwrap();
            }
            let root = b.finish(&mut tm).unwrap();
            let mut seen = 0u64;
            btree::walk(&mut tm.cache, root, 8, |k, v| {
                assert_eq!(k, seen * 2);
                assert_eq!(u64::from_le_bytes(v.try_into().unwrap()), seen + 7);
                seen += 1;
                true
            })
            .unwrap();
            assert_eq!(seen, n);
            // Still a normal tree: insert and remove work on it.
            let (r, _) =
                btree::insert(&mut tm, btree::Refs::None, root, 1, &1u64.to_le_bytes()).unwrap();
            let (_, gone) = btree::remove(&mut tm, btree::Refs::None, r, 1).unwrap();
            assert!(gone);
        }
        let mut tm = Tm::format(MemDevice::new(1024), 64, 1024, 10).unwrap();
        let mut b = Builder::new(8);
        b.push(&mut tm, 5, &[0; 8]).unwrap();
        assert!(b.push(&mut tm, 5, &[0; 8]).is_err());
    }
}
