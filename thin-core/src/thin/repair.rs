//! Salvaging damaged metadata into a fresh pool (what `thin_repair` does).
//!
//! The input is only read. Two ways to find the trees:
//! * the superblock is valid and its roots read: the top-level mapping tree and the details
//!   tree are walked *tolerantly* — a node that fails validation is skipped with everything
//!   below it, every entry of every intact leaf is kept;
//! * the superblock is damaged, a root does not read, or a top-level tree lost nodes: every
//!   metadata block is scanned for valid B-tree nodes (checksum, own block number, sane
//!   header), nodes are classified bottom-up (details leaves have 24-byte values; top-level
//!   leaves have 8-byte values that all point at valid nodes; other 8-byte leaves are mapping
//!   leaves), unreferenced roots become candidates, and the best pair wins: the top-level tree
//!   with most devices then most mappings, and the details tree sharing most device ids
//!   with it.
//!
//! Then each device's mapping tree is walked tolerantly in key order and rebuilt with the
//! [`Restorer`]; `mapped_blocks` is recomputed. A device without details gets regenerated
//! details that treat every mapping as shared (`snapshotted_time` = pool time), which is the
//! safe choice: writes then break sharing instead of overwriting a block another device
//! might still reference.
//!
//! Invariants: emitted keys strictly ascend within a device and lie in the key range their
//! parents give them; descent is capped at [`MAX_DEPTH`] and a node is visited once per tree;
//! mappings beyond the data device and device ids beyond 24 bits are dropped and counted;
//! nothing is written to the input.

use crate::block::{Block, BlockDevice, BLOCK_SIZE};
use crate::checksum::BlockKind;
use crate::pdata::btree::MAX_DEPTH;
use crate::pdata::cache::{self, Cache};
use crate::pdata::sm::MAX_METADATA_BLOCKS;
use crate::pdata::{node, PdError};
use crate::thin::details::{BlockTime, DeviceDetails, DETAILS_SIZE, MAX_DEV_ID, MAX_TIME};
use crate::thin::pool::Pool;
use crate::thin::restore::{RestoreError, RestoreHeader, Restorer};
use crate::thin::superblock::Superblock;
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;
use hashbrown::{HashMap, HashSet};

/// Superblock values the caller supplies (they override what the input says and are
/// required when its superblock is damaged).
#[derive(Debug, Clone, Copy)]
pub struct RepairOptions {
    pub transaction_id: Option<u64>,
    pub data_block_size: Option<u32>,
    pub nr_data_blocks: Option<u64>,
    /// Cache capacity (blocks) for reading the input and for building the output.
    pub cache_blocks: usize,
}

impl Default for RepairOptions {
    fn default() -> Self {
        RepairOptions {
            transaction_id: None,
            data_block_size: None,
            nr_data_blocks: None,
            cache_blocks: 4096,
        }
    }
}

/// A node skipped during the salvage, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub block: u64,
    pub error: PdError,
}

/// What the salvage found and kept.
#[derive(Debug, Clone, Default)]
pub struct RepairReport {
    /// Block 0 validated.
    pub superblock_ok: bool,
    /// The roots came from a scan of every block.
    pub scanned: bool,
    /// Root of the top-level mapping tree used (0: none found).
    pub mapping_root: u64,
    /// Root of the details tree used (0: none found).
    pub details_root: u64,
    /// Devices written to the output.
    pub nr_devices: u64,
    /// Mappings written to the output.
    pub nr_mappings: u64,
    /// Nodes skipped (the first 1000).
    pub damage: Vec<Damage>,
    /// Total nodes skipped.
    pub nr_damaged: u64,
    /// Mappings dropped although their leaf read: data block beyond the data device, key out
    /// of order or outside the parent's range.
    pub dropped_mappings: u64,
    /// Devices in the mapping tree whose details were lost (regenerated).
    pub details_regenerated: Vec<u64>,
    /// Devices whose top-level entry was lost, matched to an unreferenced mapping tree by
    /// their `mapped_blocks`.
    pub devices_matched_by_size: Vec<u64>,
    /// Devices with details but no mapping tree (not written).
    pub details_without_mappings: Vec<u64>,
}

const MAX_DAMAGE_LISTED: usize = 1000;

impl RepairReport {
    fn damaged(&mut self, block: u64, error: PdError) {
        self.nr_damaged += 1;
        if self.damage.len() < MAX_DAMAGE_LISTED {
            self.damage.push(Damage { block, error });
        }
    }
}

/// Superblock fields that could not be recovered and must be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingField {
    TransactionId,
    DataBlockSize,
    NrDataBlocks,
}

impl MissingField {
    /// The name Debian's tools use in their message.
    pub const fn name(self) -> &'static str {
        match self {
            MissingField::TransactionId => "transaction id",
            MissingField::DataBlockSize => "data block size",
            MissingField::NrDataBlocks => "nr data blocks",
        }
    }
}

/// Why a repair failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RepairError {
    /// The superblock is damaged and these values were not given.
    MissingFields(Vec<MissingField>),
    /// Reading the input failed (an I/O error, not damage).
    Input(PdError),
    /// Building the output failed.
    Output(RestoreError),
}

impl From<RestoreError> for RepairError {
    fn from(e: RestoreError) -> Self {
        RepairError::Output(e)
    }
}

impl core::fmt::Display for RepairError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RepairError::MissingFields(v) => {
                for (i, m) in v.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(
                        f,
                        "The following field needs to be provided on the command line due to \
                         corruption in the superblock: {}",
                        m.name()
                    )?;
                }
                Ok(())
            }
            RepairError::Input(e) => write!(f, "reading the input: {e}"),
            RepairError::Output(e) => write!(f, "writing the output: {e}"),
        }
    }
}

fn rd64(v: &[u8]) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&v[..8]);
    u64::from_le_bytes(x)
}

/// An I/O error on the input is fatal; anything else is damage to skip.
fn is_io(e: &PdError) -> bool {
    matches!(e, PdError::Io(crate::block::BlockError::Read { .. }))
}

/// Walks the tree at `root` in key order, skipping nodes that do not validate, and calls
/// `f` with every entry of every intact leaf whose key ascends and lies within the range its
/// parents give. Returns whether the root itself read.
fn salvage_walk<D: BlockDevice, E>(
    cache: &mut Cache<D>,
    root: u64,
    value_size: usize,
    report: &mut RepairReport,
    mut f: impl FnMut(u64, &[u8]) -> Result<(), E>,
) -> Result<Result<bool, E>, PdError> {
    // (block, depth, lowest key allowed, first key not allowed)
    let mut stack: Vec<(u64, usize, u64, Option<u64>)> = vec![(root, 0, 0, None)];
    let mut seen: HashSet<u64> = HashSet::new();
    let mut last: Option<u64> = None;
    let mut buf: Box<Block> = Box::new([0u8; BLOCK_SIZE]);
    let mut root_ok = true;
    while let Some((b, depth, lo, hi)) = stack.pop() {
        let r = if depth >= MAX_DEPTH {
            Err(PdError::TooDeep { block: b })
        } else if !seen.insert(b) {
            Err(PdError::BadNode {
                block: b,
                reason: "node reached twice within one tree",
            })
        } else {
            cache.read_into(b, BlockKind::Node, &mut buf)
        };
        let r = r.and_then(|()| {
            let expected = if node::is_leaf(&buf) { value_size } else { 8 };
            if node::value_size(&buf) != expected {
                return Err(PdError::ValueSize {
                    block: b,
                    expected: expected as u32,
                    found: node::value_size(&buf) as u32,
                });
            }
            Ok(())
        });
        if let Err(e) = r {
            if is_io(&e) {
                return Err(e);
            }
            if depth == 0 {
                root_ok = false;
            }
            report.damaged(b, e);
            continue;
        }
        let n = node::nr_entries(&buf);
        let in_range = |k: u64| k >= lo && hi.is_none_or(|h| k < h);
        if node::is_leaf(&buf) {
            for i in 0..n {
                let k = node::key(&buf, i);
                if !in_range(k) || last.is_some_and(|l| k <= l) {
                    report.dropped_mappings += 1;
                    continue;
                }
                last = Some(k);
                if let Err(e) = f(k, node::value(&buf, i)) {
                    return Ok(Err(e));
                }
            }
        } else {
            // Children in reverse so the lowest key pops first; each gets the key range
            // between its key and the next (clipped to ours).
            let mut next_key = hi;
            for i in (0..n).rev() {
                let k = node::key(&buf, i);
                let child = node::value_u64(&buf, i);
                let child_hi = match (next_key, hi) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                if child_hi.is_none_or(|h| k < h) {
                    stack.push((child, depth + 1, k.max(lo), child_hi));
                }
                next_key = Some(k);
            }
        }
    }
    Ok(Ok(root_ok))
}

/// A valid node found by the scan.
#[derive(Debug, Clone)]
struct NodeInfo {
    leaf: bool,
    value_size: u32,
    /// Internal nodes: children. Leaves that may be top-level leaves: their values.
    refs: Option<Box<[u64]>>,
    /// Newest mapping time below (mapping leaves and trees).
    max_time: u32,
    class: Class,
    /// Entries in the leaves below (devices for top-level trees).
    entries: u64,
    /// Top-level trees: mappings of the devices below.
    mappings: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Unknown,
    Mapping,
    Top,
    Details,
    Other,
}

/// Candidate trees found by a scan.
#[derive(Debug, Default)]
struct ScanResult {
    /// (root, devices, mappings, newest time), best first.
    tops: Vec<(u64, u64, u64, u32)>,
    /// Details-tree roots, most entries first.
    details: Vec<u64>,
    /// Mapping-tree roots no internal node references: (root, mappings, newest time).
    orphans: Vec<(u64, u64, u32)>,
}

fn scan<D: BlockDevice>(cache: &mut Cache<D>) -> Result<ScanResult, PdError> {
    let nr = cache.dev().nr_blocks().min(MAX_METADATA_BLOCKS);
    let mut nodes: HashMap<u64, NodeInfo> = HashMap::new();
    let mut buf: Box<Block> = Box::new([0u8; BLOCK_SIZE]);
    for b in 1..nr {
        cache.dev_mut().read_block(b, &mut buf)?;
        if cache::validate(&buf, b, BlockKind::Node).is_err() {
            continue;
        }
        let n = node::nr_entries(&buf);
        let vs = node::value_size(&buf) as u32;
        let leaf = node::is_leaf(&buf);
        if !node::keys_ascending(&buf) || (!leaf && n == 0) {
            continue;
        }
        let mut info = NodeInfo {
            leaf,
            value_size: vs,
            refs: None,
            max_time: 0,
            class: Class::Unknown,
            entries: n as u64,
            mappings: 0,
        };
        if !leaf {
            info.refs = Some((0..n).map(|i| node::value_u64(&buf, i)).collect());
        } else if vs == 8 {
            let vals: Vec<u64> = (0..n).map(|i| node::value_u64(&buf, i)).collect();
            info.max_time = vals
                .iter()
                .map(|&v| BlockTime::unpack(v).time)
                .max()
                .unwrap_or(0);
            let maybe_top = n > 0
                && node::key(&buf, n - 1) <= MAX_DEV_ID
                && vals.iter().all(|&v| v > 0 && v < nr);
            if maybe_top {
                info.refs = Some(vals.into_boxed_slice());
            }
        }
        nodes.insert(b, info);
    }

    // Leaves first (decided on the scan's facts alone, so the order does not matter).
    let keys: Vec<u64> = nodes.keys().copied().collect();
    let leaf_classes: Vec<(u64, Class)> = keys
        .iter()
        .filter(|b| nodes[*b].leaf)
        .map(|&b| {
            let info = &nodes[&b];
            let is_subtree_root = |v: &u64| {
                nodes
                    .get(v)
                    .is_some_and(|c| !c.leaf || (c.value_size == 8 && c.refs.is_none()))
            };
            let class = match (info.value_size, &info.refs) {
                (24, _) => Class::Details,
                (8, Some(vals)) if vals.iter().all(is_subtree_root) => Class::Top,
                (8, _) => Class::Mapping,
                _ => Class::Other,
            };
            (b, class)
        })
        .collect();
    for (b, class) in leaf_classes {
        if let Some(info) = nodes.get_mut(&b) {
            info.class = class;
            if class != Class::Top {
                info.refs = None;
            }
        }
    }
    // Internal nodes take the class of their (valid) children, level by level.
    let internals: Vec<u64> = keys.iter().copied().filter(|b| !nodes[b].leaf).collect();
    for _ in 0..MAX_DEPTH {
        let mut progress = false;
        for &b in &internals {
            if nodes[&b].class != Class::Unknown {
                continue;
            }
            let children = nodes[&b].refs.clone().unwrap_or_default();
            let mut class = Class::Unknown;
            let (mut entries, mut max_time, mut pending) = (0u64, 0u32, false);
            for c in children.iter() {
                match nodes.get(c) {
                    None => {}
                    Some(ci) if ci.class == Class::Unknown => pending = true,
                    Some(ci) => {
                        if class == Class::Unknown {
                            class = ci.class;
                        }
                        if ci.class == class {
                            entries = entries.saturating_add(ci.entries);
                            max_time = max_time.max(ci.max_time);
                        }
                    }
                }
            }
            if pending {
                continue;
            }
            if class == Class::Unknown {
                class = Class::Other;
            }
            if let Some(info) = nodes.get_mut(&b) {
                info.class = class;
                info.entries = entries;
                info.max_time = max_time;
            }
            progress = true;
        }
        if !progress {
            break;
        }
    }
    // Mappings below each top-level leaf, then summed up the top-level internal nodes.
    let top_leaves: Vec<u64> = keys
        .iter()
        .copied()
        .filter(|b| nodes[b].leaf && nodes[b].class == Class::Top)
        .collect();
    for b in top_leaves {
        let (mut m, mut t) = (0u64, 0u32);
        for v in nodes[&b].refs.clone().unwrap_or_default().iter() {
            if let Some(c) = nodes.get(v).filter(|c| c.class == Class::Mapping) {
                m = m.saturating_add(c.entries);
                t = t.max(c.max_time);
            }
        }
        if let Some(info) = nodes.get_mut(&b) {
            info.mappings = m;
            info.max_time = t;
        }
    }
    for _ in 0..MAX_DEPTH {
        let mut changed = false;
        for &b in &internals {
            if nodes[&b].class != Class::Top {
                continue;
            }
            let (mut m, mut t) = (0u64, 0u32);
            for c in nodes[&b].refs.clone().unwrap_or_default().iter() {
                if let Some(ci) = nodes.get(c).filter(|ci| ci.class == Class::Top) {
                    m = m.saturating_add(ci.mappings);
                    t = t.max(ci.max_time);
                }
            }
            if let Some(info) = nodes.get_mut(&b) {
                if info.mappings != m || info.max_time != t {
                    info.mappings = m;
                    info.max_time = t;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    // Roots: not a child of an internal node of the same class.
    let mut referenced: HashSet<u64> = HashSet::new();
    for &b in &internals {
        let class = nodes[&b].class;
        for c in nodes[&b].refs.iter().flat_map(|r| r.iter()) {
            if nodes.get(c).is_some_and(|ci| ci.class == class) {
                referenced.insert(*c);
            }
        }
    }
    let mut res = ScanResult::default();
    let mut details: Vec<(u64, u64)> = Vec::new();
    for (&b, info) in &nodes {
        if referenced.contains(&b) || info.entries == 0 {
            continue;
        }
        match info.class {
            Class::Top => res
                .tops
                .push((b, info.entries, info.mappings, info.max_time)),
            Class::Details => details.push((b, info.entries)),
            Class::Mapping => res.orphans.push((b, info.entries, info.max_time)),
            _ => {}
        }
    }
    res.tops
        .sort_by(|a, b| (b.1, b.2, b.3, a.0).cmp(&(a.1, a.2, a.3, b.0)));
    details.sort_by(|a, b| (b.1, a.0).cmp(&(a.1, b.0)));
    res.details = details.into_iter().map(|(b, _)| b).collect();
    res.orphans.sort_unstable();
    Ok(res)
}

/// Candidates compared when pairing (the best by size).
const MAX_CANDIDATES: usize = 32;

type Devices = BTreeMap<u64, u64>;
type DetailsMap = BTreeMap<u64, DeviceDetails>;

fn read_top<D: BlockDevice>(
    cache: &mut Cache<D>,
    root: u64,
    report: &mut RepairReport,
) -> Result<(bool, Devices), PdError> {
    let mut devs = Devices::new();
    let ok = salvage_walk(cache, root, 8, report, |k, v| -> Result<(), ()> {
        devs.insert(k, rd64(v));
        Ok(())
    })?
    .unwrap_or(false);
    Ok((ok, devs))
}

fn read_details<D: BlockDevice>(
    cache: &mut Cache<D>,
    root: u64,
    report: &mut RepairReport,
) -> Result<(bool, DetailsMap), PdError> {
    let mut det = DetailsMap::new();
    let ok = salvage_walk(
        cache,
        root,
        DETAILS_SIZE,
        report,
        |k, v| -> Result<(), ()> {
            det.insert(k, DeviceDetails::unpack(v));
            Ok(())
        },
    )?
    .unwrap_or(false);
    Ok((ok, det))
}

/// Salvages what `input` holds into a new pool on `output` (formatted here).
pub fn repair<I: BlockDevice, O: BlockDevice>(
    input: &mut I,
    output: O,
    opts: &RepairOptions,
) -> Result<(Pool<O>, RepairReport), RepairError> {
    let mut report = RepairReport::default();
    let mut sb_buf: Box<Block> = Box::new([0u8; BLOCK_SIZE]);
    input
        .read_block(0, &mut sb_buf)
        .map_err(|e| RepairError::Input(e.into()))?;
    let sb = Superblock::parse(&sb_buf, 0).ok();
    report.superblock_ok = sb.is_some();
    if sb.is_none() {
        let mut missing = Vec::new();
        if opts.transaction_id.is_none() {
            missing.push(MissingField::TransactionId);
        }
        if opts.data_block_size.is_none() {
            missing.push(MissingField::DataBlockSize);
        }
        if opts.nr_data_blocks.is_none() {
            missing.push(MissingField::NrDataBlocks);
        }
        if !missing.is_empty() {
            return Err(RepairError::MissingFields(missing));
        }
    }
    let mut cache = Cache::new(&mut *input, opts.cache_blocks);

    // Trees named by the superblock, read tolerantly.
    let (mut top_root, mut devices, mut det_root, mut details) =
        (0u64, Devices::new(), 0u64, DetailsMap::new());
    let mut need_scan = sb.is_none();
    if let Some(sb) = &sb {
        let before = report.nr_damaged;
        let (ok_t, d) =
            read_top(&mut cache, sb.data_mapping_root, &mut report).map_err(RepairError::Input)?;
        let (ok_d, det) = read_details(&mut cache, sb.device_details_root, &mut report)
            .map_err(RepairError::Input)?;
        need_scan =
            !ok_t || !ok_d || report.nr_damaged > before || det.keys().any(|k| !d.contains_key(k));
        top_root = sb.data_mapping_root;
        det_root = sb.device_details_root;
        devices = d;
        details = det;
    }

    let mut newest = 0u32;
    if need_scan {
        report.scanned = true;
        let found = scan(&mut cache).map_err(RepairError::Input)?;
        // The scan's trees replace the superblock's if they know more devices.
        let mut scratch = RepairReport::default();
        for &(root, _, _, t) in found.tops.iter().take(MAX_CANDIDATES) {
            let (_, d) = read_top(&mut cache, root, &mut scratch).map_err(RepairError::Input)?;
            if d.len() > devices.len() {
                devices = d;
                top_root = root;
                newest = t;
            }
        }
        let score = |det: &DetailsMap| {
            let common = det.keys().filter(|k| devices.contains_key(k)).count();
            let newest_tid = det.values().map(|d| d.transaction_id).max().unwrap_or(0);
            (common, usize::MAX - det.len(), newest_tid)
        };
        let mut best = score(&details);
        for &root in found.details.iter().take(MAX_CANDIDATES) {
            let (_, det) =
                read_details(&mut cache, root, &mut scratch).map_err(RepairError::Input)?;
            let s = score(&det);
            if s > best {
                best = s;
                details = det;
                det_root = root;
            }
        }
        // Devices with details but no top-level entry (a top-level leaf was lost): a mapping
        // tree nobody references whose size is that device's `mapped_blocks` — when both the
        // size and the tree are unique — is that device's tree.
        let used: HashSet<u64> = devices.values().copied().collect();
        let mut by_count: BTreeMap<u64, Vec<(u64, u32)>> = BTreeMap::new();
        for &(root, n, t) in &found.orphans {
            if !used.contains(&root) {
                by_count.entry(n).or_default().push((root, t));
            }
        }
        let mut want: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for (&id, d) in &details {
            if !devices.contains_key(&id) && d.mapped_blocks > 0 {
                want.entry(d.mapped_blocks).or_default().push(id);
            }
        }
        for (n, ids) in want {
            if let (&[id], Some(&[(root, t)])) =
                (ids.as_slice(), by_count.get(&n).map(|v| v.as_slice()))
            {
                devices.insert(id, root);
                report.devices_matched_by_size.push(id);
                newest = newest.max(t);
            }
        }
    }
    report.mapping_root = if devices.is_empty() { 0 } else { top_root };
    report.details_root = if details.is_empty() { 0 } else { det_root };

    let data_block_size = opts
        .data_block_size
        .or(sb.as_ref().map(|s| s.data_block_size))
        .unwrap_or(0);
    let nr_data_blocks = opts
        .nr_data_blocks
        .or(sb.as_ref().map(|s| s.data_sm_root.nr_blocks))
        .unwrap_or(0);
    let transaction_id = opts
        .transaction_id
        .or(sb.as_ref().map(|s| s.trans_id))
        .unwrap_or(0);
    let time = match &sb {
        Some(s) => s.time,
        None => details
            .values()
            .map(|d| d.creation_time.max(d.snapshotted_time))
            .chain(core::iter::once(newest))
            .max()
            .unwrap_or(0)
            .min(MAX_TIME),
    };

    report.details_without_mappings = details
        .keys()
        .filter(|k| !devices.contains_key(k))
        .copied()
        .collect();
    let mut restorer = Restorer::new(
        output,
        RestoreHeader {
            time,
            transaction_id,
            data_block_size,
            nr_data_blocks,
            flags: 0,
        },
        opts.cache_blocks,
    )?;
    for (&id, &root) in &devices {
        if id > MAX_DEV_ID {
            continue;
        }
        let det = match details.get(&id) {
            Some(d) => *d,
            None => {
                report.details_regenerated.push(id);
                DeviceDetails {
                    mapped_blocks: 0,
                    transaction_id,
                    creation_time: 0,
                    snapshotted_time: time,
                }
            }
        };
        let det = DeviceDetails {
            creation_time: det.creation_time.min(MAX_TIME),
            snapshotted_time: det.snapshotted_time.min(MAX_TIME),
            ..det
        };
        restorer.begin_device(id, det)?;
        let mut dropped = 0u64;
        let mut kept = 0u64;
        let r = salvage_walk(&mut cache, root, 8, &mut report, |k, v| {
            let bt = BlockTime::unpack(rd64(v));
            if bt.block >= nr_data_blocks {
                dropped += 1;
                return Ok(());
            }
            kept += 1;
            restorer.map(k, bt.block, bt.time.min(MAX_TIME))
        })
        .map_err(RepairError::Input)?;
        r?;
        report.dropped_mappings += dropped;
        report.nr_mappings += kept;
        report.nr_devices += 1;
        restorer.end_device()?;
    }
    let pool = restorer.finish()?;
    Ok((pool, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemDevice;
    use crate::thin::reader::{Reader, Source};

    fn sample() -> MemDevice {
        let mut r = Restorer::new(
            MemDevice::new(2048),
            RestoreHeader {
                time: 3,
                transaction_id: 9,
                data_block_size: 128,
                nr_data_blocks: 100_000,
                flags: 0,
            },
            256,
        )
        .unwrap();
        for id in [1u64, 5, 7] {
            r.begin_device(
                id,
                DeviceDetails {
                    mapped_blocks: 0,
                    transaction_id: id,
                    creation_time: 1,
                    snapshotted_time: 2,
                },
            )
            .unwrap();
            for v in 0..(600 * id) {
                r.map(v * 2, id * 10_000 + v, (v % 3) as u32).unwrap();
            }
            r.end_device().unwrap();
        }
        r.finish().unwrap().close().unwrap()
    }

    type Contents = Vec<(u64, DeviceDetails, Vec<(u64, BlockTime)>)>;

    fn contents(dev: MemDevice) -> Contents {
        let mut rd = Reader::open(dev, 256, Source::Live).unwrap();
        let devs = rd.devices().unwrap();
        devs.into_iter()
            .map(|(id, d)| {
                let mut m = Vec::new();
                rd.walk_mappings(id, |k, v| {
                    m.push((k, v));
                    true
                })
                .unwrap();
                (id, d, m)
            })
            .collect()
    }

    fn zero_block(dev: &mut MemDevice, b: u64) {
        dev.block_mut(b).unwrap().fill(0);
    }

    #[test]
    fn intact_metadata_round_trips() {
        let mut input = sample();
        let want = contents(input.clone());
        let (pool, rep) =
            repair(&mut input, MemDevice::new(2048), &RepairOptions::default()).unwrap();
        assert!(!rep.scanned && rep.nr_damaged == 0);
        let out = pool.close().unwrap();
        assert_eq!(contents(out), want);
    }

    #[test]
    fn lost_superblock_is_rebuilt_from_a_scan() {
        let mut input = sample();
        let want = contents(input.clone());
        zero_block(&mut input, 0);
        let e = repair(&mut input, MemDevice::new(2048), &RepairOptions::default()).unwrap_err();
        assert_eq!(
            e,
            RepairError::MissingFields(vec![
                MissingField::TransactionId,
                MissingField::DataBlockSize,
                MissingField::NrDataBlocks
            ])
        );
        let opts = RepairOptions {
            transaction_id: Some(9),
            data_block_size: Some(128),
            nr_data_blocks: Some(100_000),
            ..RepairOptions::default()
        };
        let (pool, rep) = repair(&mut input, MemDevice::new(2048), &opts).unwrap();
        assert!(rep.scanned);
        assert_eq!(pool.superblock().time, 2);
        assert_eq!(contents(pool.close().unwrap()), want);
    }

    #[test]
    fn lost_leaf_and_details_are_tolerated() {
        let mut input = sample();
        let want = contents(input.clone());
        let sb = crate::thin::pool::read_superblock(&mut input).unwrap();
        // Device 7's tree root is internal: destroy its second child.
        let mut rd = Reader::open(input.clone(), 64, Source::Live).unwrap();
        let root7 = rd.device_root(7).unwrap();
        let (leaf, lo, hi) = rd
            .cache()
            .read(root7, BlockKind::Node, |b| {
                (node::value_u64(b, 1), node::key(b, 1), node::key(b, 2))
            })
            .unwrap();
        zero_block(&mut input, leaf);
        zero_block(&mut input, sb.device_details_root);
        let (pool, rep) =
            repair(&mut input, MemDevice::new(2048), &RepairOptions::default()).unwrap();
        assert!(rep.scanned);
        assert_eq!(rep.details_regenerated, vec![1, 5, 7]);
        let got = contents(pool.close().unwrap());
        assert_eq!(got.len(), 3);
        for ((id, _, gm), (wid, _, wm)) in got.iter().zip(&want) {
            assert_eq!(id, wid);
            let expect: Vec<_> = wm
                .iter()
                .filter(|(k, _)| *id != 7 || *k < lo || *k >= hi)
                .copied()
                .collect();
            assert_eq!(gm, &expect, "device {id}");
        }
        assert_eq!(got[2].1.snapshotted_time, 3);
    }
}
