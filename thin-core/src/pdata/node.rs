//! B-tree node format (one 4 KiB block).
//!
//! ```text
//! 0x00 csum u32 | 0x04 flags u32 (1 internal, 2 leaf) | 0x08 blocknr u64
//! 0x10 nr_entries u32 | 0x14 max_entries u32 | 0x18 value_size u32 | 0x1c padding u32
//! 0x20 keys[max_entries] u64 | then values[max_entries] of value_size bytes
//! ```
//! Invariants of a node this module hands out as valid: flags is exactly INTERNAL or LEAF,
//! `nr_entries <= max_entries`, `32 + (8 + value_size) * max_entries <= 4096`, internal nodes
//! have value size 8. Every accessor is bounds-safe for such a node; indices past
//! `nr_entries` are a caller bug (`assert!`).

use crate::block::{Block, BLOCK_SIZE};
use crate::pdata::PdError;

/// Node header size.
pub const HEADER_SIZE: usize = 32;
/// `flags` value of an internal node.
pub const INTERNAL: u32 = 1;
/// `flags` value of a leaf.
pub const LEAF: u32 = 2;

const _: () = assert!(HEADER_SIZE + (8 + 8) * 252 <= BLOCK_SIZE);
const _: () = assert!(max_entries_for(4) == 336);
const _: () = assert!(max_entries_for(8) == 252);
const _: () = assert!(max_entries_for(16) == 168);
const _: () = assert!(max_entries_for(24) == 126);

/// The capacity dm-thin gives a node with values of `value_size` bytes: the largest multiple
/// of three that fits.
pub const fn max_entries_for(value_size: u32) -> u32 {
    let fit = (BLOCK_SIZE as u32 - HEADER_SIZE as u32) / (8 + value_size);
    fit / 3 * 3
}

fn rd32(b: &Block, off: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(x)
}
fn rd64(b: &[u8], off: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(x)
}
fn wr32(b: &mut Block, off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
fn wr64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// Node flags.
pub fn flags(b: &Block) -> u32 {
    rd32(b, 4)
}
/// Whether the node is a leaf.
pub fn is_leaf(b: &Block) -> bool {
    flags(b) == LEAF
}
/// Number of live entries.
pub fn nr_entries(b: &Block) -> usize {
    rd32(b, 16) as usize
}
/// Capacity.
pub fn max_entries(b: &Block) -> usize {
    rd32(b, 20) as usize
}
/// Value size in bytes.
pub fn value_size(b: &Block) -> usize {
    rd32(b, 24) as usize
}
fn values_offset(b: &Block) -> usize {
    HEADER_SIZE + 8 * max_entries(b)
}

/// Checks the header of a node read from `location` (checksum and blocknr are checked by the
/// cache before this).
pub fn validate_header(b: &Block, location: u64) -> Result<(), PdError> {
    let bad = |reason| {
        Err(PdError::BadNode {
            block: location,
            reason,
        })
    };
    let f = flags(b);
    if f != INTERNAL && f != LEAF {
        return bad("flags is neither internal nor leaf");
    }
    let max = rd32(b, 20) as u64;
    let vs = rd32(b, 24) as u64;
    if vs == 0 || HEADER_SIZE as u64 + (8 + vs) * max > BLOCK_SIZE as u64 {
        return bad("max_entries too large for block");
    }
    if max < 3 {
        return bad("max_entries below 3");
    }
    if rd32(b, 16) as u64 > max {
        return bad("nr_entries > max_entries");
    }
    if f == INTERNAL && vs != 8 {
        return bad("internal node value size is not 8");
    }
    Ok(())
}

/// Formats an empty node in `b`.
pub fn init(b: &mut Block, leaf: bool, value_size: u32) {
    b.fill(0);
    wr32(b, 4, if leaf { LEAF } else { INTERNAL });
    wr32(b, 16, 0);
    wr32(b, 20, max_entries_for(value_size));
    wr32(b, 24, value_size);
}

fn set_nr(b: &mut Block, n: usize) {
    assert!(n <= max_entries(b));
    wr32(b, 16, n as u32);
}

/// Key `i`.
pub fn key(b: &Block, i: usize) -> u64 {
    assert!(i < nr_entries(b));
    rd64(b, HEADER_SIZE + 8 * i)
}
/// Sets key `i`.
pub fn set_key(b: &mut Block, i: usize, k: u64) {
    assert!(i < nr_entries(b));
    wr64(b, HEADER_SIZE + 8 * i, k)
}
/// Value `i` as bytes.
pub fn value(b: &Block, i: usize) -> &[u8] {
    assert!(i < nr_entries(b));
    let vs = value_size(b);
    let off = values_offset(b) + vs * i;
    &b[off..off + vs]
}
/// Value `i` read as a u64 (for value size 8).
pub fn value_u64(b: &Block, i: usize) -> u64 {
    rd64(value(b, i), 0)
}
/// Sets value `i`.
pub fn set_value(b: &mut Block, i: usize, v: &[u8]) {
    assert!(i < nr_entries(b) && v.len() == value_size(b));
    let off = values_offset(b) + v.len() * i;
    b[off..off + v.len()].copy_from_slice(v);
}
/// Sets value `i` from a u64 (value size 8).
pub fn set_value_u64(b: &mut Block, i: usize, v: u64) {
    set_value(b, i, &v.to_le_bytes())
}

/// Index of the last key `<= k`, or `None` when every key is greater.
pub fn lower_bound(b: &Block, k: u64) -> Option<usize> {
    let n = nr_entries(b);
    let (mut lo, mut hi) = (0usize, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if rd64(b, HEADER_SIZE + 8 * mid) <= k {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo.checked_sub(1)
}

/// Index of `k` if present.
pub fn find_exact(b: &Block, k: u64) -> Option<usize> {
    lower_bound(b, k).filter(|&i| key(b, i) == k)
}

/// Inserts `(k, v)` at position `i`, shifting later entries up.
pub fn insert_at(b: &mut Block, i: usize, k: u64, v: &[u8]) {
    let n = nr_entries(b);
    let vs = value_size(b);
    assert!(i <= n && n < max_entries(b) && v.len() == vs);
    let ko = HEADER_SIZE + 8 * i;
    b.copy_within(ko..HEADER_SIZE + 8 * n, ko + 8);
    let vo = values_offset(b);
    b.copy_within(vo + vs * i..vo + vs * n, vo + vs * (i + 1));
    set_nr(b, n + 1);
    set_key(b, i, k);
    set_value(b, i, v);
}

/// Removes entry `i`, shifting later entries down.
pub fn remove_at(b: &mut Block, i: usize) {
    let n = nr_entries(b);
    let vs = value_size(b);
    assert!(i < n);
    let ko = HEADER_SIZE + 8 * i;
    b.copy_within(ko + 8..HEADER_SIZE + 8 * n, ko);
    let vo = values_offset(b);
    b.copy_within(vo + vs * (i + 1)..vo + vs * n, vo + vs * i);
    set_nr(b, n - 1);
}

/// Removes entries `[i, j)`.
pub fn remove_range(b: &mut Block, i: usize, j: usize) {
    let n = nr_entries(b);
    let vs = value_size(b);
    assert!(i <= j && j <= n);
    let d = j - i;
    b.copy_within(
        HEADER_SIZE + 8 * j..HEADER_SIZE + 8 * n,
        HEADER_SIZE + 8 * i,
    );
    let vo = values_offset(b);
    b.copy_within(vo + vs * j..vo + vs * n, vo + vs * i);
    set_nr(b, n - d);
}

/// Appends entries `[from, to)` of `src` to the end of `dst` (same value size).
pub fn append_from(dst: &mut Block, src: &Block, from: usize, to: usize) {
    let vs = value_size(src);
    assert!(vs == value_size(dst) && from <= to && to <= nr_entries(src));
    let n = nr_entries(dst);
    let cnt = to - from;
    assert!(n + cnt <= max_entries(dst));
    dst[HEADER_SIZE + 8 * n..HEADER_SIZE + 8 * (n + cnt)]
        .copy_from_slice(&src[HEADER_SIZE + 8 * from..HEADER_SIZE + 8 * to]);
    let (dvo, svo) = (values_offset(dst), values_offset(src));
    dst[dvo + vs * n..dvo + vs * (n + cnt)].copy_from_slice(&src[svo + vs * from..svo + vs * to]);
    set_nr(dst, n + cnt);
}

/// Checks that the keys of a node are strictly increasing.
pub fn keys_ascending(b: &Block) -> bool {
    let n = nr_entries(b);
    (1..n).all(|i| key(b, i - 1) < key(b, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_remove_bound() {
        let mut b = [0u8; BLOCK_SIZE];
        init(&mut b, true, 8);
        assert_eq!(max_entries(&b), 252);
        for (i, k) in [10u64, 30, 20].iter().enumerate() {
            let pos = lower_bound(&b, *k).map_or(0, |p| p + 1);
            insert_at(&mut b, pos, *k, &(i as u64).to_le_bytes());
        }
        assert_eq!((key(&b, 0), key(&b, 1), key(&b, 2)), (10, 20, 30));
        assert_eq!(value_u64(&b, 1), 2);
        assert_eq!(lower_bound(&b, 5), None);
        assert_eq!(lower_bound(&b, 25), Some(1));
        assert_eq!(find_exact(&b, 25), None);
        assert_eq!(find_exact(&b, 30), Some(2));
        remove_at(&mut b, 0);
        assert_eq!((nr_entries(&b), key(&b, 0), value_u64(&b, 0)), (2, 20, 2));
        assert!(keys_ascending(&b));
        validate_header(&b, 0).unwrap();
        let mut c = [0u8; BLOCK_SIZE];
        init(&mut c, true, 8);
        append_from(&mut c, &b, 0, 2);
        assert_eq!(key(&c, 1), 30);
        remove_range(&mut c, 0, 2);
        assert_eq!(nr_entries(&c), 0);
    }

    #[test]
    fn header_validation_rejects_garbage() {
        let mut b = [0u8; BLOCK_SIZE];
        init(&mut b, true, 8);
        b[16..20].copy_from_slice(&253u32.to_le_bytes());
        assert!(validate_header(&b, 1).is_err());
        init(&mut b, true, 8);
        b[20..24].copy_from_slice(&1000u32.to_le_bytes());
        assert!(validate_header(&b, 1).is_err());
        init(&mut b, true, 8);
        b[4] = 3;
        assert!(validate_header(&b, 1).is_err());
    }
}
