//! The checker: walks every structure from the superblock (and the held metadata snapshot),
//! validates each block and node, recomputes every metadata and data reference count and
//! compares them with the space maps — what upstream `thin_check` 1.x verifies.
//!
//! Invariants of the walk: each node is validated and descended into once (the first time a
//! reference to it is met) while every reference is counted; descent is capped at
//! [`MAX_DEPTH`]; errors are collected, not returned at the first one.

use crate::block::{Block, BlockDevice, BLOCK_SIZE};
use crate::checksum::BlockKind;
use crate::pdata::btree::MAX_DEPTH;
use crate::pdata::cache::Cache;
use crate::pdata::sm::{self, IndexEntry, SmRoot, ENTRIES_PER_BITMAP, MAX_METADATA_BITMAPS};
use crate::pdata::{node, PdError};
use crate::thin::details::{BlockTime, DeviceDetails, DETAILS_SIZE};
use crate::thin::superblock::{self, Superblock};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use hashbrown::HashMap;

/// How bad an issue is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The metadata is damaged.
    Fatal,
    /// Wasted space or a shape the kernel tolerates (a leak, an under-full node).
    NonFatal,
    /// An advisory space-map hint (`nr_free`, `none_free_before`) that disagrees with the
    /// bitmap. Nobody validates hints (Debian's 0.9 `thin_restore` leaves them off by one),
    /// so tools do not fail on these; our own writer is held to them in tests.
    Hint,
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// How bad.
    pub severity: Severity,
    /// The block concerned, if any.
    pub block: Option<u64>,
    /// What is wrong.
    pub message: String,
}

/// What to check.
#[derive(Debug, Clone, Copy)]
pub struct CheckOptions {
    /// Stop after the superblock.
    pub super_block_only: bool,
    /// Check the top-level trees only (no mappings, no space maps).
    pub skip_mappings: bool,
    /// Check the held metadata snapshot instead of the live trees (no space maps).
    pub metadata_snap: bool,
    /// Cache capacity in blocks.
    pub cache_blocks: usize,
    /// Use this block as the top-level mapping tree root instead of the superblock's.
    pub override_mapping_root: Option<u64>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            super_block_only: false,
            skip_mappings: false,
            metadata_snap: false,
            cache_blocks: 1024,
            override_mapping_root: None,
        }
    }
}

/// Result of a check.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Everything found, in the order found.
    pub issues: Vec<Issue>,
    /// The superblock, if it could be read.
    pub superblock: Option<Superblock>,
    /// Devices in the mapping tree.
    pub nr_devices: u64,
    /// Sum of mappings over devices.
    pub nr_mappings: u64,
    /// Free metadata blocks by the space map root (`nr_blocks - nr_allocated`).
    pub metadata_free_blocks: u64,
}

impl CheckReport {
    /// No issue at all.
    pub fn is_clean(&self) -> bool {
        self.issues.is_empty()
    }
    /// At least one fatal issue.
    pub fn has_fatal(&self) -> bool {
        self.issues.iter().any(|i| i.severity == Severity::Fatal)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Leaves {
    /// Values reference nothing.
    Plain,
    /// Bottom-level mapping leaves: count data references.
    Mapping,
    /// Top-level leaves: values are device tree roots; count those references.
    Top,
}

struct Checker<'a, D: BlockDevice> {
    cache: Cache<&'a mut D>,
    issues: Vec<Issue>,
    nr_meta: u64,
    nr_data: u64,
    meta_expected: Vec<u32>,
    /// Expected data counts, 2 bits per block (3 = 3 or more; the excess in the overflow).
    data_expected: Vec<u64>,
    data_overflow: HashMap<u64, u32>,
    /// Whether data references are counted (not for `--metadata-snap`).
    count_data: bool,
    /// Node → (entries below it, height) for nodes already walked.
    memo: HashMap<u64, (u64, u32)>,
    buf_pool: Vec<Box<Block>>,
}

impl<'a, D: BlockDevice> Checker<'a, D> {
    fn fatal(&mut self, block: Option<u64>, message: String) {
        self.issues.push(Issue {
            severity: Severity::Fatal,
            block,
            message,
        });
    }
    fn hint(&mut self, block: Option<u64>, message: String) {
        self.issues.push(Issue {
            severity: Severity::Hint,
            block,
            message,
        });
    }
    fn non_fatal(&mut self, block: Option<u64>, message: String) {
        self.issues.push(Issue {
            severity: Severity::NonFatal,
            block,
            message,
        });
    }

    fn meta_ref(&mut self, b: u64, what: &str) -> bool {
        if b >= self.nr_meta {
            self.fatal(
                Some(b),
                format!(
                    "{what} at block {b} is beyond the metadata device ({} blocks)",
                    self.nr_meta
                ),
            );
            return false;
        }
        self.meta_expected[b as usize] = self.meta_expected[b as usize].saturating_add(1);
        true
    }

    fn data_ref(&mut self, b: u64, leaf: u64) {
        if b >= self.nr_data {
            self.fatal(
                Some(leaf),
                format!(
                    "mapping to data block {b} beyond the data device ({} blocks)",
                    self.nr_data
                ),
            );
            return;
        }
        if !self.count_data {
            return;
        }
        let (w, shift) = ((b / 32) as usize, 2 * (b % 32));
        let c = (self.data_expected[w] >> shift) & 3;
        if c == 3 {
            *self.data_overflow.entry(b).or_insert(0) += 1;
        } else {
            self.data_expected[w] += 1 << shift;
        }
    }

    fn data_expected(&self, b: u64) -> u32 {
        let c = ((self.data_expected[(b / 32) as usize] >> (2 * (b % 32))) & 3) as u32;
        if c == 3 {
            c + self.data_overflow.get(&b).copied().unwrap_or(0)
        } else {
            c
        }
    }

    fn read_block(&mut self, b: u64, kind: BlockKind) -> Result<Box<Block>, PdError> {
        let mut buf = self
            .buf_pool
            .pop()
            .unwrap_or_else(|| Box::new([0u8; BLOCK_SIZE]));
        match self.cache.read_into(b, kind, &mut buf) {
            Ok(()) => Ok(buf),
            Err(e) => {
                self.buf_pool.push(buf);
                Err(e)
            }
        }
    }

    /// Walks the tree at `root` (whose reference the caller counted). Returns the number of
    /// entries and the height, or `None` if it is damaged. `visit` sees the leaf entries of
    /// nodes walked for the first time.
    #[allow(clippy::too_many_arguments)]
    fn tree(
        &mut self,
        root: u64,
        is_root: bool,
        value_size: usize,
        leaves: Leaves,
        lo: u64,
        hi: Option<u64>,
        depth: usize,
        visit: &mut dyn FnMut(u64, &[u8]),
    ) -> Option<(u64, u32)> {
        if let Some(&r) = self.memo.get(&root) {
            return Some(r);
        }
        if depth >= MAX_DEPTH {
            self.fatal(
                Some(root),
                format!("btree deeper than {MAX_DEPTH} levels (or a cycle) at block {root}"),
            );
            return None;
        }
        let buf = match self.read_block(root, BlockKind::Node) {
            Ok(b) => b,
            Err(e) => {
                self.fatal(Some(root), format!("{e}"));
                return None;
            }
        };
        let r = self.check_node(
            root, &buf, is_root, value_size, leaves, lo, hi, depth, visit,
        );
        self.buf_pool.push(buf);
        if let Some(r) = r {
            self.memo.insert(root, r);
        }
        r
    }

    #[allow(clippy::too_many_arguments)]
    fn check_node(
        &mut self,
        b: u64,
        buf: &Block,
        is_root: bool,
        value_size: usize,
        leaves: Leaves,
        lo: u64,
        hi: Option<u64>,
        depth: usize,
        visit: &mut dyn FnMut(u64, &[u8]),
    ) -> Option<(u64, u32)> {
        let n = node::nr_entries(buf);
        let max = node::max_entries(buf);
        let leaf = node::is_leaf(buf);
        if !max.is_multiple_of(3) {
            self.fatal(
                Some(b),
                format!("max entries is not divisible by 3: {max} (block {b})"),
            );
        }
        let want_vs = if leaf { value_size } else { 8 };
        if node::value_size(buf) != want_vs {
            self.fatal(
                Some(b),
                format!(
                    "value size mismatch: expected {want_vs}, got {} (block {b})",
                    node::value_size(buf)
                ),
            );
            return None;
        }
        if !is_root && n < max / 3 {
            self.non_fatal(
                Some(b),
                format!(
                    "too few entries in btree_node: {n}, expected at least {} (block {b})",
                    max / 3
                ),
            );
        }
        if !leaf && n == 0 {
            self.fatal(
                Some(b),
                format!("internal node with no entries (block {b})"),
            );
            return None;
        }
        for i in 0..n {
            let k = node::key(buf, i);
            if i > 0 && node::key(buf, i - 1) >= k {
                self.fatal(
                    Some(b),
                    format!(
                        "keys are out of order, {} <= {k} (block {b})",
                        node::key(buf, i - 1)
                    ),
                );
                return None;
            }
            if k < lo || hi.is_some_and(|h| k >= h) {
                self.fatal(
                    Some(b),
                    format!("key {k} outside the range its parent gives (block {b})"),
                );
                return None;
            }
        }
        if leaf {
            for i in 0..n {
                let v = node::value(buf, i);
                if leaves != Leaves::Plain {
                    let raw = u64::from_le_bytes([v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]]);
                    if leaves == Leaves::Mapping {
                        self.data_ref(BlockTime::unpack(raw).block, b);
                    } else {
                        self.meta_ref(raw, "thin device mapping tree");
                    }
                }
                visit(node::key(buf, i), v);
            }
            return Some((n as u64, 0));
        }
        let mut total = 0u64;
        let mut height = None;
        let mut ok = true;
        for i in 0..n {
            let child = node::value_u64(buf, i);
            let clo = node::key(buf, i);
            let chi = if i + 1 < n {
                Some(node::key(buf, i + 1))
            } else {
                hi
            };
            if !self.meta_ref(child, "btree node") {
                ok = false;
                continue;
            }
            match self.tree(child, false, value_size, leaves, clo, chi, depth + 1, visit) {
                Some((c, h)) => {
                    total += c;
                    if *height.get_or_insert(h) != h {
                        self.fatal(
                            Some(b),
                            format!("leaves at different depths below block {b}"),
                        );
                        ok = false;
                    }
                }
                None => ok = false,
            }
        }
        ok.then(|| (total, height.unwrap_or(0) + 1))
    }

    /// Visits the leaf entries of a tree already validated by [`Checker::tree`].
    fn collect(&mut self, root: u64, visit: &mut dyn FnMut(u64, &[u8])) {
        let mut stack = vec![(root, 0usize)];
        while let Some((b, depth)) = stack.pop() {
            if depth >= MAX_DEPTH {
                return;
            }
            let Ok(buf) = self.read_block(b, BlockKind::Node) else {
                return;
            };
            let n = node::nr_entries(&buf);
            if node::is_leaf(&buf) {
                for i in 0..n {
                    visit(node::key(&buf, i), node::value(&buf, i));
                }
            } else {
                for i in (0..n).rev() {
                    stack.push((node::value_u64(&buf, i), depth + 1));
                }
            }
            self.buf_pool.push(buf);
        }
    }

    /// Walks a whole tree rooted at a superblock or value pointer (counting that reference).
    fn rooted_tree(
        &mut self,
        root: u64,
        value_size: usize,
        leaves: Leaves,
        what: &str,
        visit: &mut dyn FnMut(u64, &[u8]),
    ) -> Option<(u64, u32)> {
        if !self.meta_ref(root, what) {
            return None;
        }
        self.tree(root, true, value_size, leaves, 0, None, 0, visit)
    }

    /// Walks the mapping and details trees of a superblock; returns device → (root, mappings).
    fn thin_trees(&mut self, sb: &Superblock, label: &str, skip_mappings: bool) -> (u64, u64) {
        // Validate and count first; then read the entries (shared with another superblock's
        // trees, they were not revisited by the counting walk).
        let top_ok = self
            .rooted_tree(
                sb.data_mapping_root,
                8,
                Leaves::Top,
                "top-level mapping tree",
                &mut |_, _| {},
            )
            .is_some();
        let details_ok = self
            .rooted_tree(
                sb.device_details_root,
                DETAILS_SIZE,
                Leaves::Plain,
                "device details tree",
                &mut |_, _| {},
            )
            .is_some();
        let mut top: Vec<(u64, u64)> = Vec::new();
        if top_ok {
            self.collect(sb.data_mapping_root, &mut |k, v| {
                top.push((
                    k,
                    u64::from_le_bytes([v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]]),
                ));
            });
        }
        let mut details: BTreeMap<u64, DeviceDetails> = BTreeMap::new();
        if details_ok {
            self.collect(sb.device_details_root, &mut |k, v| {
                details.insert(k, DeviceDetails::unpack(v));
            });
        }
        if !top_ok || !details_ok {
            return (top.len() as u64, 0);
        }
        let mut nr_mappings = 0;
        for &(id, _) in &top {
            if !details.contains_key(&id) {
                self.fatal(
                    None,
                    format!("{label}: device {id} is in the mapping tree but has no details"),
                );
            }
        }
        for id in details.keys() {
            if !top.iter().any(|(t, _)| t == id) {
                self.fatal(
                    None,
                    format!("{label}: device {id} has details but no mapping tree"),
                );
            }
        }
        if skip_mappings {
            return (top.len() as u64, 0);
        }
        for &(id, root) in &top {
            // The reference to `root` was counted with the top-level leaf holding it.
            if root >= self.nr_meta {
                continue;
            }
            match self.tree(root, true, 8, Leaves::Mapping, 0, None, 0, &mut |_, _| {}) {
                Some((count, _)) => {
                    nr_mappings += count;
                    if let Some(d) = details.get(&id) {
                        if d.mapped_blocks != count {
                            self.fatal(
                                Some(root),
                                format!("{label}: device {id}: unexpected number of mappings: details say {}, tree has {count}", d.mapped_blocks),
                            );
                        }
                    }
                }
                None => self.fatal(
                    Some(root),
                    format!("{label}: device {id}: mapping tree is damaged"),
                ),
            }
        }
        (top.len() as u64, nr_mappings)
    }

    /// Walks one space map's own structures (counting their blocks); returns its index
    /// entries and overflow counts.
    fn space_map_structs(
        &mut self,
        root: &SmRoot,
        meta: bool,
    ) -> Option<(Vec<IndexEntry>, BTreeMap<u64, u32>)> {
        let name = if meta { "metadata" } else { "data" };
        let nb = sm::nr_bitmaps(root.nr_blocks);
        let entries: Vec<IndexEntry>;
        if meta {
            if nb as usize > MAX_METADATA_BITMAPS {
                self.fatal(
                    Some(0),
                    format!(
                        "metadata space map has {} blocks, more than the format allows",
                        root.nr_blocks
                    ),
                );
                return None;
            }
            if !self.meta_ref(root.bitmap_root, "metadata space map index") {
                return None;
            }
            match self.read_block(root.bitmap_root, BlockKind::Index) {
                Ok(b) => {
                    entries = (0..nb as usize)
                        .map(|i| sm::index_block_entry(&b, i))
                        .collect();
                    self.buf_pool.push(b);
                }
                Err(e) => {
                    self.fatal(
                        Some(root.bitmap_root),
                        format!("metadata space map index: {e}"),
                    );
                    return None;
                }
            }
        } else {
            let mut found: Vec<(u64, IndexEntry)> = Vec::new();
            self.rooted_tree(
                root.bitmap_root,
                sm::INDEX_ENTRY_SIZE,
                Leaves::Plain,
                "data space map index tree",
                &mut |k, v| {
                    found.push((k, IndexEntry::unpack(v)));
                },
            )?;
            if found.len() as u64 != nb
                || found.iter().enumerate().any(|(i, (k, _))| *k != i as u64)
            {
                self.fatal(
                    Some(root.bitmap_root),
                    format!(
                        "data space map index has {} entries, expected 0..{nb}",
                        found.len()
                    ),
                );
                return None;
            }
            entries = found.into_iter().map(|(_, e)| e).collect();
        }
        for e in &entries {
            self.meta_ref(e.blocknr, &format!("{name} space map bitmap"));
        }
        let mut overflow = BTreeMap::new();
        self.rooted_tree(
            root.ref_count_root,
            4,
            Leaves::Plain,
            &format!("{name} reference count tree"),
            &mut |k, v| {
                overflow.insert(k, u32::from_le_bytes([v[0], v[1], v[2], v[3]]));
            },
        )?;
        Some((entries, overflow))
    }

    /// Compares a space map's counts with the expected ones.
    fn compare_space_map(
        &mut self,
        root: &SmRoot,
        entries: &[IndexEntry],
        overflow: &BTreeMap<u64, u32>,
        meta: bool,
    ) {
        let name = if meta { "metadata" } else { "data" };
        let mut threes: hashbrown::HashSet<u64> = hashbrown::HashSet::new();
        for (i, e) in entries.iter().enumerate() {
            let bm = match self.read_block(e.blocknr, BlockKind::Bitmap) {
                Ok(b) => b,
                Err(err) => {
                    self.fatal(
                        Some(e.blocknr),
                        format!("{name} space map bitmap {i}: {err}"),
                    );
                    continue;
                }
            };
            let base = i as u64 * ENTRIES_PER_BITMAP;
            let mut first_free = None;
            let mut free = 0u32;
            let mut ent = 0u64;
            while ent < ENTRIES_PER_BITMAP {
                let b = base + ent;
                // Fast path: a whole word of free entries where none is expected in use.
                if ent.is_multiple_of(32)
                    && b + 32 <= root.nr_blocks
                    && sm::bitmap_word(&bm, (ent / 32) as usize) == 0
                {
                    let none_expected = if meta {
                        self.meta_expected[b as usize..b as usize + 32]
                            .iter()
                            .all(|&c| c == 0)
                    } else {
                        // Bitmaps start at multiples of 16320, itself a multiple of 32.
                        self.data_expected[(b / 32) as usize] == 0
                    };
                    if none_expected {
                        free += 32;
                        first_free.get_or_insert(ent);
                        ent += 32;
                        continue;
                    }
                }
                ent += 1;
                let v = sm::bitmap_get(&bm, ent - 1);
                let ent = ent - 1;
                if b >= root.nr_blocks {
                    if v != 0 {
                        self.fatal(
                            Some(e.blocknr),
                            format!(
                                "{name} bitmap {i} marks block {b} beyond the end ({})",
                                root.nr_blocks
                            ),
                        );
                    }
                    continue;
                }
                if v == 0 {
                    free += 1;
                    first_free.get_or_insert(ent);
                }
                let actual = match v {
                    3 => match overflow.get(&b) {
                        Some(&c) => {
                            threes.insert(b);
                            c
                        }
                        None => {
                            self.fatal(
                                Some(b),
                                format!(
                                    "{name} block {b} has bitmap count 3 but no overflow entry"
                                ),
                            );
                            continue;
                        }
                    },
                    v => v,
                };
                let expected = if meta {
                    self.meta_expected[b as usize]
                } else {
                    self.data_expected(b)
                };
                if actual != expected {
                    if actual == 1 && expected == 0 {
                        self.non_fatal(Some(b), format!("{name} reference counts differ for block {b}, expected 0, but got 1 (leaked)"));
                    } else {
                        self.fatal(Some(b), format!("{name} reference counts differ for block {b}, expected {expected}, but got {actual}"));
                    }
                }
            }
            if let Some(ff) = first_free {
                if e.nr_free == 0 {
                    self.hint(
                        Some(e.blocknr),
                        format!("{name} index entry {i} says no free blocks but {free} are free"),
                    );
                }
                if u64::from(e.none_free_before) > ff {
                    self.hint(
                        Some(e.blocknr),
                        format!(
                            "{name} index entry {i}: none_free_before {} is past free entry {ff}",
                            e.none_free_before
                        ),
                    );
                }
            }
            self.buf_pool.push(bm);
        }
        for (&b, &c) in overflow {
            if !threes.contains(&b) {
                self.fatal(
                    Some(b),
                    format!(
                        "{name} block {b} has an overflow entry but its bitmap count is below 3"
                    ),
                );
            }
            if c < 3 {
                self.fatal(
                    Some(b),
                    format!("{name} overflow count {c} for block {b} is below 3"),
                );
            }
        }
    }
}

/// Checks the metadata on `dev`.
pub fn check<D: BlockDevice>(dev: &mut D, opts: &CheckOptions) -> CheckReport {
    let mut report = CheckReport::default();
    let nr_dev_blocks = dev.nr_blocks();
    let mut sb_buf = Box::new([0u8; BLOCK_SIZE]);
    if let Err(e) = dev.read_block(0, &mut sb_buf) {
        report.issues.push(Issue {
            severity: Severity::Fatal,
            block: Some(0),
            message: format!("superblock: {e}"),
        });
        return report;
    }
    let sb = match Superblock::parse(&sb_buf, 0) {
        Ok(mut sb) => {
            if let Some(root) = opts.override_mapping_root {
                sb.data_mapping_root = root;
            }
            sb
        }
        Err(e) => {
            let what = if superblock::is_zeroed(&sb_buf) {
                String::from("superblock is all zero (not formatted)")
            } else {
                format!("superblock is corrupt: {e}")
            };
            report.issues.push(Issue {
                severity: Severity::Fatal,
                block: Some(0),
                message: what,
            });
            return report;
        }
    };
    report.superblock = Some(sb.clone());
    let msm = sb.metadata_sm_root;
    report.metadata_free_blocks = msm.nr_blocks.saturating_sub(msm.nr_allocated);
    if opts.super_block_only {
        return report;
    }
    if msm.nr_blocks > nr_dev_blocks {
        report.issues.push(Issue {
            severity: Severity::Fatal,
            block: Some(0),
            message: format!(
                "metadata space map has {} blocks but the device only {nr_dev_blocks}",
                msm.nr_blocks
            ),
        });
        return report;
    }
    // Every data bitmap is a metadata block: a larger data space map cannot be genuine (and
    // would make the expected-count table absurdly large).
    let nr_data = sb.data_sm_root.nr_blocks;
    if nr_data > nr_dev_blocks.saturating_mul(ENTRIES_PER_BITMAP) {
        report.issues.push(Issue {
            severity: Severity::Fatal,
            block: Some(0),
            message: format!("data space map claims {nr_data} blocks, more than the metadata device can describe"),
        });
        return report;
    }
    let nr_meta = if opts.metadata_snap || opts.skip_mappings {
        nr_dev_blocks
    } else {
        msm.nr_blocks
    };
    let data_table = if opts.skip_mappings || opts.metadata_snap {
        0
    } else {
        nr_data as usize
    };
    let mut ck = Checker {
        cache: Cache::new(dev, opts.cache_blocks),
        issues: Vec::new(),
        nr_meta,
        nr_data,
        meta_expected: vec![0u32; nr_meta as usize],
        data_expected: vec![0u64; data_table.div_ceil(32)],
        count_data: !(opts.skip_mappings || opts.metadata_snap),
        data_overflow: HashMap::new(),
        memo: HashMap::new(),
        buf_pool: Vec::new(),
    };
    if opts.metadata_snap {
        if sb.held_root == 0 {
            ck.fatal(None, String::from("no metadata snapshot is held"));
        } else {
            match ck.read_block(sb.held_root, BlockKind::Superblock) {
                Ok(b) => {
                    let held = Superblock::decode(&b);
                    let (d, m) = ck.thin_trees(&held, "metadata snap", false);
                    report.nr_devices = d;
                    report.nr_mappings = m;
                }
                Err(e) => ck.fatal(
                    Some(sb.held_root),
                    format!("metadata snapshot superblock: {e}"),
                ),
            }
        }
        report.issues = ck.issues;
        return report;
    }
    ck.meta_ref(0, "superblock");
    let (d, m) = ck.thin_trees(&sb, "live", opts.skip_mappings);
    report.nr_devices = d;
    report.nr_mappings = m;
    if opts.skip_mappings {
        report.issues = ck.issues;
        return report;
    }
    if sb.held_root != 0 && ck.meta_ref(sb.held_root, "metadata snapshot") {
        match ck.read_block(sb.held_root, BlockKind::Superblock) {
            Ok(b) => {
                let held = Superblock::decode(&b);
                ck.thin_trees(&held, "metadata snap", false);
            }
            Err(e) => ck.fatal(
                Some(sb.held_root),
                format!("metadata snapshot superblock: {e}"),
            ),
        }
    }
    let meta = ck.space_map_structs(&msm, true);
    let data = ck.space_map_structs(&sb.data_sm_root, false);
    if let Some((entries, overflow)) = data {
        ck.compare_space_map(&sb.data_sm_root, &entries, &overflow, false);
    }
    if let Some((entries, overflow)) = meta {
        ck.compare_space_map(&msm, &entries, &overflow, true);
    }
    report.issues = ck.issues;
    report
}
