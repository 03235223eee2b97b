//! Copy-on-write B-trees in the dm-thin persistent-data format.
//!
//! Invariants kept by every mutation here (and checked by the checker):
//! - keys strictly increase within a node; an internal key is a lower bound of its child;
//! - all leaves are at the same depth; internal nodes have value size 8;
//! - every non-root node keeps at least `max_entries / 3` entries (insert splits full nodes
//!   in two halves; remove rebalances a child with its siblings before descending whenever
//!   the child could otherwise drop below that);
//! - nodes reached from the committed state are never written: every node on a modified path
//!   is shadowed first, and when a shadowed node was shared, everything it references gets one
//!   more reference (child nodes, data blocks, or subtree roots, according to [`Refs`]).
//!
//! Descent is capped at [`MAX_DEPTH`] levels; deeper (or cyclic) trees are reported as
//! corruption. Walks use explicit stacks, never recursion.

use crate::block::{Block, BlockDevice, BLOCK_SIZE};
use crate::checksum::BlockKind;
use crate::pdata::cache::Cache;
use crate::pdata::node;
use crate::pdata::tm::{Tm, Which};
use crate::pdata::PdError;
use alloc::boxed::Box;
use alloc::vec::Vec;

/// No valid tree is this deep (fan-out ≥ 84 and at most 4,161,600 metadata blocks give ≤ 5).
pub const MAX_DEPTH: usize = 16;

/// What a tree's leaf values reference, which decides what sharing and freeing must count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refs {
    /// Values reference nothing.
    None,
    /// Values are u64 whose bits 63..24 are a block of the data space map.
    DataBlock,
    /// Values are u64 roots of trees whose values are [`Refs::DataBlock`].
    Subtree,
}

fn new_buf() -> Box<Block> {
    Box::new([0u8; BLOCK_SIZE])
}

fn rd_u64(v: &[u8]) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&v[..8]);
    u64::from_le_bytes(x)
}

fn inc_value<D: BlockDevice>(tm: &mut Tm<D>, refs: Refs, v: &[u8]) -> Result<(), PdError> {
    match refs {
        Refs::None => Ok(()),
        Refs::DataBlock => tm.inc(Which::Data, rd_u64(v) >> 24),
        Refs::Subtree => tm.inc(Which::Meta, rd_u64(v)),
    }
}

fn dec_value<D: BlockDevice>(tm: &mut Tm<D>, refs: Refs, v: &[u8]) -> Result<(), PdError> {
    match refs {
        Refs::None => Ok(()),
        Refs::DataBlock => tm.dec(Which::Data, rd_u64(v) >> 24),
        Refs::Subtree => delete(tm, Refs::DataBlock, rd_u64(v)),
    }
}

fn same_target(refs: Refs, a: &[u8], b: &[u8]) -> bool {
    match refs {
        Refs::None => true,
        Refs::DataBlock => rd_u64(a) >> 24 == rd_u64(b) >> 24,
        Refs::Subtree => rd_u64(a) == rd_u64(b),
    }
}

/// After copying a shared node, everything it references gained a referrer.
fn inc_children<D: BlockDevice>(tm: &mut Tm<D>, refs: Refs, b: &Block) -> Result<(), PdError> {
    let n = node::nr_entries(b);
    if node::is_leaf(b) {
        if refs != Refs::None {
            for i in 0..n {
                inc_value(tm, refs, node::value(b, i))?;
            }
        }
    } else {
        for i in 0..n {
            tm.inc(Which::Meta, node::value_u64(b, i))?;
        }
    }
    Ok(())
}

/// Shadows node `b` into `buf`, returning its writable location.
fn shadow_node<D: BlockDevice>(
    tm: &mut Tm<D>,
    refs: Refs,
    b: u64,
    buf: &mut Block,
) -> Result<u64, PdError> {
    let (loc, shared) = tm.shadow(b, BlockKind::Node)?;
    tm.cache.read_into(loc, BlockKind::Node, buf)?;
    if shared {
        inc_children(tm, refs, buf)?;
    }
    Ok(loc)
}

fn check_shape(b: &Block, loc: u64, leaf_vs: usize) -> Result<(), PdError> {
    let expected = if node::is_leaf(b) { leaf_vs } else { 8 };
    if node::value_size(b) != expected {
        return Err(PdError::ValueSize {
            block: loc,
            expected: expected as u32,
            found: node::value_size(b) as u32,
        });
    }
    if !node::is_leaf(b) && node::nr_entries(b) == 0 {
        return Err(PdError::BadNode {
            block: loc,
            reason: "internal node with no entries",
        });
    }
    Ok(())
}

/// Creates an empty tree (one leaf) for values of `value_size` bytes.
pub fn empty<D: BlockDevice>(tm: &mut Tm<D>, value_size: u32) -> Result<u64, PdError> {
    let b = tm.new_block()?;
    let mut buf = new_buf();
    node::init(&mut buf, true, value_size);
    tm.cache.write(b, BlockKind::Node, &buf)?;
    Ok(b)
}

/// Looks `key` up; copies its value into `out` (whose length is the value size).
pub fn lookup<D: BlockDevice>(
    cache: &mut Cache<D>,
    root: u64,
    key: u64,
    out: &mut [u8],
) -> Result<bool, PdError> {
    enum Step {
        Found,
        Missing,
        Child(u64),
    }
    let mut b = root;
    for _ in 0..MAX_DEPTH {
        let step = cache.read(b, BlockKind::Node, |d| -> Result<Step, PdError> {
            check_shape(d, b, out.len())?;
            if node::is_leaf(d) {
                Ok(match node::find_exact(d, key) {
                    Some(i) => {
                        out.copy_from_slice(node::value(d, i));
                        Step::Found
                    }
                    None => Step::Missing,
                })
            } else {
                Ok(match node::lower_bound(d, key) {
                    Some(i) => Step::Child(node::value_u64(d, i)),
                    None => Step::Missing,
                })
            }
        })??;
        match step {
            Step::Found => return Ok(true),
            Step::Missing => return Ok(false),
            Step::Child(c) => b = c,
        }
    }
    Err(PdError::TooDeep { block: b })
}

/// Looks up a u64 value.
pub fn lookup_u64<D: BlockDevice>(
    cache: &mut Cache<D>,
    root: u64,
    key: u64,
) -> Result<Option<u64>, PdError> {
    let mut v = [0u8; 8];
    Ok(lookup(cache, root, key, &mut v)?.then(|| u64::from_le_bytes(v)))
}

/// Looks up a u64 value and reports whether any node on the path from `root` down (root
/// included) has more than one referrer.
pub fn lookup_shared<D: BlockDevice>(
    tm: &mut Tm<D>,
    root: u64,
    key: u64,
) -> Result<Option<(u64, bool)>, PdError> {
    let mut b = root;
    let mut shared = false;
    for _ in 0..MAX_DEPTH {
        if !shared && tm.count(Which::Meta, b)? > 1 {
            shared = true;
        }
        let step = tm.cache.read(
            b,
            BlockKind::Node,
            |d| -> Result<Option<Result<u64, u64>>, PdError> {
                check_shape(d, b, 8)?;
                if node::is_leaf(d) {
                    Ok(node::find_exact(d, key).map(|i| Ok(node::value_u64(d, i))))
                } else {
                    Ok(node::lower_bound(d, key).map(|i| Err(node::value_u64(d, i))))
                }
            },
        )??;
        match step {
            None => return Ok(None),
            Some(Ok(v)) => return Ok(Some((v, shared))),
            Some(Err(child)) => b = child,
        }
    }
    Err(PdError::TooDeep { block: b })
}

/// The first entry with key `>= key`: its key, value copied into `out`.
pub fn lookup_ge<D: BlockDevice>(
    cache: &mut Cache<D>,
    root: u64,
    key: u64,
    out: &mut [u8],
) -> Result<Option<u64>, PdError> {
    // Path of (internal node, child index taken).
    let mut path: Vec<(u64, usize)> = Vec::with_capacity(MAX_DEPTH);
    let mut b = root;
    let mut leftmost = false;
    loop {
        if path.len() > MAX_DEPTH {
            return Err(PdError::TooDeep { block: b });
        }
        enum Step {
            Found(u64),
            Exhausted,
            Child(usize, u64),
        }
        let step = cache.read(b, BlockKind::Node, |d| -> Result<Step, PdError> {
            check_shape(d, b, out.len())?;
            let n = node::nr_entries(d);
            if node::is_leaf(d) {
                let i = if leftmost {
                    0
                } else {
                    match node::lower_bound(d, key) {
                        Some(i) if node::key(d, i) == key => i,
                        Some(i) => i + 1,
                        None => 0,
                    }
                };
                if i < n {
                    out.copy_from_slice(node::value(d, i));
                    Ok(Step::Found(node::key(d, i)))
                } else {
                    Ok(Step::Exhausted)
                }
            } else {
                let i = if leftmost {
                    0
                } else {
                    node::lower_bound(d, key).unwrap_or(0)
                };
                Ok(Step::Child(i, node::value_u64(d, i)))
            }
        })??;
        match step {
            Step::Found(k) if k < key => {
                return Err(PdError::BadNode {
                    block: b,
                    reason: "keys out of order",
                });
            }
            Step::Found(k) => return Ok(Some(k)),
            Step::Child(i, c) => {
                path.push((b, i));
                b = c;
            }
            Step::Exhausted => {
                // Climb to the nearest ancestor with a next child, then go leftmost.
                loop {
                    let Some((p, i)) = path.pop() else {
                        return Ok(None);
                    };
                    let next = cache.read(p, BlockKind::Node, |d| {
                        (i + 1 < node::nr_entries(d)).then(|| node::value_u64(d, i + 1))
                    })?;
                    if let Some(c) = next {
                        path.push((p, i + 1));
                        b = c;
                        leftmost = true;
                        break;
                    }
                }
            }
        }
    }
}

/// Inserts or overwrites `key`. Returns the new root and whether the key is new. When an
/// existing value is overwritten with one referencing something else, the old reference is
/// dropped (the caller hands over its reference to the new value).
pub fn insert<D: BlockDevice>(
    tm: &mut Tm<D>,
    refs: Refs,
    root: u64,
    key: u64,
    val: &[u8],
) -> Result<(u64, bool), PdError> {
    insert_with(tm, refs, root, key, val, true)
}

/// [`insert`], choosing whether an overwritten value's reference is dropped. Multi-level
/// trees update the pointer to a lower-level root with `drop_old == false`: the old root was
/// already released when it was shadowed.
pub fn insert_with<D: BlockDevice>(
    tm: &mut Tm<D>,
    refs: Refs,
    root: u64,
    key: u64,
    val: &[u8],
    drop_old: bool,
) -> Result<(u64, bool), PdError> {
    let vs = val.len();
    let mut pbuf = new_buf();
    let mut cbuf = new_buf();
    let root = shadow_node(tm, refs, root, &mut pbuf)?;
    check_shape(&pbuf, root, vs)?;
    if needs_split(&pbuf, key) {
        split_beneath(tm, &mut pbuf)?;
    }
    let mut cur = root;
    for _ in 0..MAX_DEPTH {
        if node::is_leaf(&pbuf) {
            let inserted = match node::find_exact(&pbuf, key) {
                Some(i) => {
                    let mut old = [0u8; 32];
                    let old = &mut old[..vs];
                    old.copy_from_slice(node::value(&pbuf, i));
                    if drop_old && !same_target(refs, old, val) {
                        dec_value(tm, refs, old)?;
                    }
                    node::set_value(&mut pbuf, i, val);
                    false
                }
                None => {
                    let pos = node::lower_bound(&pbuf, key).map_or(0, |i| i + 1);
                    node::insert_at(&mut pbuf, pos, key, val);
                    true
                }
            };
            tm.cache.write(cur, BlockKind::Node, &pbuf)?;
            return Ok((root, inserted));
        }
        let i = match node::lower_bound(&pbuf, key) {
            Some(i) => i,
            None => {
                node::set_key(&mut pbuf, 0, key);
                0
            }
        };
        let child = node::value_u64(&pbuf, i);
        let c = shadow_node(tm, refs, child, &mut cbuf)?;
        check_shape(&cbuf, c, vs)?;
        if c != child {
            node::set_value_u64(&mut pbuf, i, c);
        }
        let mut next = c;
        if needs_split(&cbuf, key) {
            let r = tm.new_block()?;
            let mut rbuf = new_buf();
            split_into(&mut cbuf, &mut rbuf);
            let rk = node::key(&rbuf, 0);
            node::insert_at(&mut pbuf, i + 1, rk, &r.to_le_bytes());
            if key >= rk {
                tm.cache.write(c, BlockKind::Node, &cbuf)?;
                next = r;
                cbuf = rbuf;
            } else {
                tm.cache.write(r, BlockKind::Node, &rbuf)?;
            }
        }
        tm.cache.write(cur, BlockKind::Node, &pbuf)?;
        cur = next;
        core::mem::swap(&mut pbuf, &mut cbuf);
    }
    Err(PdError::TooDeep { block: cur })
}

fn needs_split(b: &Block, key: u64) -> bool {
    node::nr_entries(b) >= node::max_entries(b)
        && !(node::is_leaf(b) && node::find_exact(b, key).is_some())
}

/// Moves the upper half of `left` into the fresh node `right`.
fn split_into(left: &mut Block, right: &mut Block) {
    let n = node::nr_entries(left);
    node::init(right, node::is_leaf(left), node::value_size(left) as u32);
    node::append_from(right, left, n / 2, n);
    node::remove_range(left, n / 2, n);
}

/// Splits a full root into two new children; the root becomes internal with two entries.
fn split_beneath<D: BlockDevice>(tm: &mut Tm<D>, root: &mut Block) -> Result<(), PdError> {
    let n = node::nr_entries(root);
    let (l, r) = (tm.new_block()?, tm.new_block()?);
    let mut lbuf = new_buf();
    let mut rbuf = new_buf();
    let (leaf, vs) = (node::is_leaf(root), node::value_size(root) as u32);
    node::init(&mut lbuf, leaf, vs);
    node::init(&mut rbuf, leaf, vs);
    node::append_from(&mut lbuf, root, 0, n / 2);
    node::append_from(&mut rbuf, root, n / 2, n);
    tm.cache.write(l, BlockKind::Node, &lbuf)?;
    tm.cache.write(r, BlockKind::Node, &rbuf)?;
    node::init(root, false, 8);
    node::insert_at(root, 0, node::key(&lbuf, 0), &l.to_le_bytes());
    node::insert_at(root, 1, node::key(&rbuf, 0), &r.to_le_bytes());
    Ok(())
}

/// Removes `key`. Returns the new root and whether it was present; the value's reference is
/// dropped.
pub fn remove<D: BlockDevice>(
    tm: &mut Tm<D>,
    refs: Refs,
    root: u64,
    key: u64,
) -> Result<(u64, bool), PdError> {
    let (root, n) = remove_some(tm, refs, root, key, key.saturating_add(1))?;
    Ok((root, n > 0))
}

/// Removes every key in `[begin, end)`. Returns the new root and how many were removed.
pub fn remove_range<D: BlockDevice>(
    tm: &mut Tm<D>,
    refs: Refs,
    mut root: u64,
    begin: u64,
    end: u64,
) -> Result<(u64, u64), PdError> {
    let mut total = 0;
    loop {
        let (r, n) = remove_some(tm, refs, root, begin, end)?;
        root = r;
        if n == 0 {
            return Ok((root, total));
        }
        total += n;
        tm.maybe_apply()?;
    }
}

/// Removes the keys of `[begin, end)` that lie in the first leaf holding any of them (as many
/// as the leaf can lose while staying a third full). Returns the new root and the count.
fn remove_some<D: BlockDevice>(
    tm: &mut Tm<D>,
    refs: Refs,
    root: u64,
    begin: u64,
    end: u64,
) -> Result<(u64, u64), PdError> {
    let mut probe = [0u8; 32];
    let vs = leaf_value_size(&mut tm.cache, root)?;
    if vs > probe.len() {
        return Err(PdError::BadNode {
            block: root,
            reason: "value size too large",
        });
    }
    let k = match lookup_ge(&mut tm.cache, root, begin, &mut probe[..vs])? {
        Some(k) if k < end => k,
        _ => return Ok((root, 0)),
    };
    let mut pbuf = new_buf();
    let mut cbuf = new_buf();
    let root = shadow_node(tm, refs, root, &mut pbuf)?;
    let mut cur = root;
    for _ in 0..2 * MAX_DEPTH {
        check_shape(&pbuf, cur, vs)?;
        if node::is_leaf(&pbuf) {
            let n = node::nr_entries(&pbuf);
            let start = match node::lower_bound(&pbuf, k) {
                Some(i) if node::key(&pbuf, i) == k => i,
                Some(i) => i + 1,
                None => 0,
            };
            let keep = if cur == root {
                0
            } else {
                node::max_entries(&pbuf) / 3
            };
            let limit = n.saturating_sub(keep).max(1);
            let mut j = start;
            while j < n && node::key(&pbuf, j) < end && j - start < limit {
                let mut v = [0u8; 32];
                v[..vs].copy_from_slice(node::value(&pbuf, j));
                dec_value(tm, refs, &v[..vs])?;
                j += 1;
            }
            node::remove_range(&mut pbuf, start, j);
            tm.cache.write(cur, BlockKind::Node, &pbuf)?;
            return Ok((root, (j - start) as u64));
        }
        if cur == root && node::nr_entries(&pbuf) == 1 {
            // A root with one child: pull the child up (the tree gets one level shorter).
            let child = node::value_u64(&pbuf, 0);
            let c = shadow_node(tm, refs, child, &mut cbuf)?;
            pbuf.copy_from_slice(&cbuf[..]);
            tm.cache.write(cur, BlockKind::Node, &pbuf)?;
            tm.dec(Which::Meta, c)?;
            tm.cache.forget(c);
            continue;
        }
        let i = node::lower_bound(&pbuf, k).unwrap_or(0);
        rebalance(tm, refs, &mut pbuf, i)?;
        if cur == root && node::nr_entries(&pbuf) == 1 {
            tm.cache.write(cur, BlockKind::Node, &pbuf)?;
            continue;
        }
        let i = node::lower_bound(&pbuf, k).unwrap_or(0);
        let child = node::value_u64(&pbuf, i);
        let c = shadow_node(tm, refs, child, &mut cbuf)?;
        if c != child {
            node::set_value_u64(&mut pbuf, i, c);
        }
        tm.cache.write(cur, BlockKind::Node, &pbuf)?;
        cur = c;
        core::mem::swap(&mut pbuf, &mut cbuf);
    }
    Err(PdError::TooDeep { block: cur })
}

fn leaf_value_size<D: BlockDevice>(cache: &mut Cache<D>, root: u64) -> Result<usize, PdError> {
    let mut b = root;
    for _ in 0..MAX_DEPTH {
        let (leaf, vs, first) = cache.read(b, BlockKind::Node, |d| {
            let first =
                (node::nr_entries(d) > 0 && !node::is_leaf(d)).then(|| node::value_u64(d, 0));
            (node::is_leaf(d), node::value_size(d), first)
        })?;
        if leaf {
            return Ok(vs);
        }
        b = first.ok_or(PdError::BadNode {
            block: b,
            reason: "internal node with no entries",
        })?;
    }
    Err(PdError::TooDeep { block: b })
}

/// Before descending into child `i` of `parent` to remove, makes sure the child keeps at
/// least a third of its capacity afterwards, borrowing from or merging with its siblings.
fn rebalance<D: BlockDevice>(
    tm: &mut Tm<D>,
    refs: Refs,
    parent: &mut Block,
    i: usize,
) -> Result<(), PdError> {
    let n = node::nr_entries(parent);
    if n < 2 {
        return Ok(());
    }
    let (child_nr, child_max) =
        tm.cache
            .read(node::value_u64(parent, i), BlockKind::Node, |d| {
                (node::nr_entries(d), node::max_entries(d))
            })?;
    let t = child_max / 3;
    if child_nr > t + 1 {
        return Ok(());
    }
    let (first, cnt) = if i == 0 {
        (0, 2)
    } else if i == n - 1 {
        (n - 2, 2)
    } else {
        (i - 1, 3)
    };
    let mut locs = [0u64; 3];
    let mut bufs = [new_buf(), new_buf(), new_buf()];
    for j in 0..cnt {
        let old = node::value_u64(parent, first + j);
        locs[j] = shadow_node(tm, refs, old, &mut bufs[j])?;
        if locs[j] != old {
            node::set_value_u64(parent, first + j, locs[j]);
        }
    }
    let (leaf, vs) = (node::is_leaf(&bufs[0]), node::value_size(&bufs[0]));
    for j in 1..cnt {
        if node::is_leaf(&bufs[j]) != leaf || node::value_size(&bufs[j]) != vs {
            return Err(PdError::BadNode {
                block: locs[j],
                reason: "siblings of different kinds",
            });
        }
    }
    let max = node::max_entries(&bufs[0]);
    for j in 1..cnt {
        if node::max_entries(&bufs[j]) != max {
            return Err(PdError::BadNode {
                block: locs[j],
                reason: "siblings of different capacity",
            });
        }
    }
    let total: usize = bufs[..cnt].iter().map(|b| node::nr_entries(b)).sum();
    let mut k = cnt;
    while k > 1 && total < k * (t + 1) {
        k -= 1;
    }
    if total > k * max {
        return Err(PdError::BadNode {
            block: locs[0],
            reason: "siblings overfull",
        });
    }
    // Gather, then deal the entries out evenly over the first k nodes.
    let mut keys: Vec<u64> = Vec::with_capacity(total);
    let mut vals: Vec<u8> = Vec::with_capacity(total * vs);
    for b in &bufs[..cnt] {
        for e in 0..node::nr_entries(b) {
            keys.push(node::key(b, e));
            vals.extend_from_slice(node::value(b, e));
        }
    }
    let mut pos = 0;
    for j in 0..k {
        let want = total / k + usize::from(j < total % k);
        let b = &mut bufs[j];
        let nr = node::nr_entries(b);
        node::remove_range(b, 0, nr);
        for e in pos..pos + want {
            node::insert_at(b, e - pos, keys[e], &vals[e * vs..(e + 1) * vs]);
        }
        pos += want;
        tm.cache.write(locs[j], BlockKind::Node, b)?;
        if j > 0 {
            if let Some(&k0) = keys.get(pos - want) {
                node::set_key(parent, first + j, k0);
            }
        }
    }
    for &loc in &locs[k..cnt] {
        tm.dec(Which::Meta, loc)?;
        tm.cache.forget(loc);
    }
    node::remove_range(parent, first + k, first + cnt);
    Ok(())
}

/// Drops one reference to the tree at `root`: shared nodes are just decremented, exclusive
/// ones are freed after dropping what they reference.
pub fn delete<D: BlockDevice>(tm: &mut Tm<D>, refs: Refs, root: u64) -> Result<(), PdError> {
    let mut stack: Vec<(u64, Refs, usize)> = Vec::new();
    stack.push((root, refs, 0));
    while let Some((b, refs, depth)) = stack.pop() {
        if depth > 2 * MAX_DEPTH {
            return Err(PdError::TooDeep { block: b });
        }
        if tm.count(Which::Meta, b)? > 1 {
            tm.dec(Which::Meta, b)?;
            continue;
        }
        let mut buf = new_buf();
        tm.cache.read_into(b, BlockKind::Node, &mut buf)?;
        let n = node::nr_entries(&buf);
        if !node::is_leaf(&buf) {
            for i in 0..n {
                stack.push((node::value_u64(&buf, i), refs, depth + 1));
            }
        } else {
            match refs {
                Refs::None => {}
                Refs::DataBlock => {
                    if node::value_size(&buf) != 8 {
                        return Err(PdError::ValueSize {
                            block: b,
                            expected: 8,
                            found: node::value_size(&buf) as u32,
                        });
                    }
                    for i in 0..n {
                        tm.dec(Which::Data, node::value_u64(&buf, i) >> 24)?;
                    }
                }
                Refs::Subtree => {
                    for i in 0..n {
                        stack.push((node::value_u64(&buf, i), Refs::DataBlock, depth + 1));
                    }
                }
            }
        }
        tm.dec(Which::Meta, b)?;
        tm.cache.forget(b);
        tm.maybe_apply()?;
    }
    Ok(())
}

/// Visits every entry in key order; `f` returns `false` to stop early.
pub fn walk<D: BlockDevice>(
    cache: &mut Cache<D>,
    root: u64,
    value_size: usize,
    mut f: impl FnMut(u64, &[u8]) -> bool,
) -> Result<(), PdError> {
    let mut stack: Vec<(u64, usize)> = Vec::new();
    stack.push((root, 0));
    let mut children: Vec<u64> = Vec::new();
    // Within one tree no node has two parents; meeting one twice means a damaged tree (and
    // without this check, a node listing the same child many times makes the walk explode).
    let mut seen: hashbrown::HashSet<u64> = hashbrown::HashSet::new();
    while let Some((b, depth)) = stack.pop() {
        if depth >= MAX_DEPTH {
            return Err(PdError::TooDeep { block: b });
        }
        if !seen.insert(b) {
            return Err(PdError::BadNode {
                block: b,
                reason: "node reached twice within one tree",
            });
        }
        children.clear();
        let go_on = cache.read(b, BlockKind::Node, |d| -> Result<bool, PdError> {
            check_shape(d, b, value_size)?;
            let n = node::nr_entries(d);
            if node::is_leaf(d) {
                for i in 0..n {
                    if !f(node::key(d, i), node::value(d, i)) {
                        return Ok(false);
                    }
                }
            } else {
                for i in (0..n).rev() {
                    children.push(node::value_u64(d, i));
                }
            }
            Ok(true)
        })??;
        if !go_on {
            return Ok(());
        }
        stack.extend(children.iter().map(|&c| (c, depth + 1)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemDevice;
    use alloc::collections::BTreeMap;
    use std::vec;

    fn xorshift(s: &mut u64) -> u64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    /// Checks node shape invariants; returns the number of entries.
    fn check_tree(tm: &mut Tm<MemDevice>, root: u64) -> usize {
        let mut stack = vec![(root, 0usize, 0u64, u64::MAX)];
        let mut leaf_depth = None;
        let mut count = 0;
        while let Some((b, depth, lo, hi)) = stack.pop() {
            let mut buf = new_buf();
            tm.cache.read_into(b, BlockKind::Node, &mut buf).unwrap();
            let n = node::nr_entries(&buf);
            assert!(node::keys_ascending(&buf));
            if b != root {
                assert!(n >= node::max_entries(&buf) / 3, "underfull node {b}: {n}");
            }
            for i in 0..n {
                let k = node::key(&buf, i);
                assert!(k >= lo && k < hi, "key {k} outside [{lo},{hi})");
            }
            if node::is_leaf(&buf) {
                assert_eq!(*leaf_depth.get_or_insert(depth), depth);
                count += n;
            } else {
                for i in 0..n {
                    let chi = if i + 1 < n {
                        node::key(&buf, i + 1)
                    } else {
                        hi
                    };
                    stack.push((node::value_u64(&buf, i), depth + 1, node::key(&buf, i), chi));
                }
            }
        }
        count
    }

    #[test]
    fn random_inserts_and_removes_match_a_model() {
        let mut tm = Tm::format(MemDevice::new(4096), 64, 4096, 1000).unwrap();
        let mut root = empty(&mut tm, 8).unwrap();
        let mut model = BTreeMap::new();
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        for round in 0..6 {
            for _ in 0..3000 {
                let k = xorshift(&mut s) % 20_000;
                let v = xorshift(&mut s);
                let (r, new) = insert(&mut tm, Refs::None, root, k, &v.to_le_bytes()).unwrap();
                root = r;
                assert_eq!(new, model.insert(k, v).is_none());
            }
            for _ in 0..2500 {
                let k = xorshift(&mut s) % 20_000;
                let (r, gone) = remove(&mut tm, Refs::None, root, k).unwrap();
                root = r;
                assert_eq!(gone, model.remove(&k).is_some());
            }
            let lo = xorshift(&mut s) % 20_000;
            let (r, n) = remove_range(&mut tm, Refs::None, root, lo, lo + 700).unwrap();
            root = r;
            let doomed: Vec<u64> = model.range(lo..lo + 700).map(|(k, _)| *k).collect();
            assert_eq!(n as usize, doomed.len());
            for k in doomed {
                model.remove(&k);
            }
            assert_eq!(check_tree(&mut tm, root), model.len(), "round {round}");
            let mut seen = Vec::new();
            walk(&mut tm.cache, root, 8, |k, v| {
                seen.push((k, u64::from_le_bytes(v.try_into().unwrap())));
                true
            })
            .unwrap();
            assert_eq!(
                seen,
                model.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>()
            );
            for probe in [0u64, 5, 777, 19_999, 30_000] {
                let mut v = [0u8; 8];
                let got = lookup_ge(&mut tm.cache, root, probe, &mut v).unwrap();
                assert_eq!(got, model.range(probe..).next().map(|(k, _)| *k));
            }
            // Commit and reopen every round.
            tm.pre_commit().unwrap();
            tm.post_commit();
        }
        // Everything removed: the tree shrinks back to a lone leaf.
        let (r, _) = remove_range(&mut tm, Refs::None, root, 0, u64::MAX).unwrap();
        assert_eq!(check_tree(&mut tm, r), 0);
    }
}
