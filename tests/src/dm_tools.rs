//! Summaries of metadata made by other parties (the kernel, Debian's tools), for tests that
//! check it: a per-device view of a `thin_dump`, and two facts read from a raw image through
//! thin-core. Running the tools themselves is [`crate::debian`]'s job; parsing the XML is
//! `thin_tools::xml`'s.

use std::collections::{BTreeMap, BTreeSet};

use thin_core::checksum::BlockKind;
use thin_core::pdata::{btree, node};
use thin_core::thin::{OpenOptions, Pool, Superblock};
use thin_core::MemDevice;
use thin_tools::xml::read_xml_str;

/// What one `<device>` of a dump holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceSummary {
    /// The `mapped_blocks` attribute.
    pub mapped_blocks_attr: u64,
    /// Virtual → data block, from the single and range mappings.
    pub mappings: BTreeMap<u64, u64>,
}

/// What a `thin_dump` XML holds, in numbers.
#[derive(Clone, Debug, Default)]
pub struct DumpSummary {
    pub transaction: u64,
    pub data_block_size: u64,
    pub nr_data_blocks: u64,
    /// The superblock's `metadata_snap` attribute, if present (thin_dump 0.9 omits it).
    pub metadata_snap: Option<u64>,
    pub devices: BTreeMap<u64, DeviceSummary>,
}

impl DumpSummary {
    /// Distinct data blocks referenced by any device.
    pub fn distinct_data_blocks(&self) -> BTreeSet<u64> {
        self.devices
            .values()
            .flat_map(|d| d.mappings.values().copied())
            .collect()
    }
}

/// Summarises `thin_dump` XML (parsed by our XML reader, so malformed input is an error).
pub fn summarize_dump(xml: &str) -> Result<DumpSummary, String> {
    let md = read_xml_str(xml).map_err(|e| format!("thin_dump XML: {e}"))?;
    let mut s = DumpSummary {
        transaction: md.superblock.transaction,
        data_block_size: u64::from(md.superblock.data_block_size),
        nr_data_blocks: md.superblock.nr_data_blocks,
        metadata_snap: md.superblock.metadata_snap,
        devices: BTreeMap::new(),
    };
    for d in &md.devices {
        let id = u64::from(d.device.dev_id);
        let dev = s.devices.entry(id).or_default();
        dev.mapped_blocks_attr = d.device.mapped_blocks;
        for r in &d.mappings {
            for i in 0..r.len {
                let v = r.thin_begin.checked_add(i).ok_or("origin overflows")?;
                let b = r.data_begin.checked_add(i).ok_or("data block overflows")?;
                if dev.mappings.insert(v, b).is_some() {
                    return Err(format!("dev {id}: block {v} mapped twice"));
                }
            }
        }
    }
    Ok(s)
}

/// The superblock's `held_root` (a.k.a. `metadata_snap`): 0 if no metadata snapshot is held.
/// thin_dump 0.9 does not print it, so it is read from the validated superblock.
pub fn held_root(meta: &[u8]) -> Result<u64, String> {
    let block: &[u8; 4096] = meta
        .get(..4096)
        .and_then(|b| b.try_into().ok())
        .ok_or("image shorter than one block")?;
    Ok(Superblock::parse(block, 0)
        .map_err(|e| e.to_string())?
        .held_root)
}

/// B-tree node flags: 1 = internal, 2 = leaf.
pub const NODE_INTERNAL: u32 = node::INTERNAL;
pub const NODE_LEAF: u32 = node::LEAF;

/// The flags of the root node of thin device `dev`'s mapping tree, read through thin-core.
pub fn device_root_flags(meta: &[u8], dev: u64) -> Result<u32, String> {
    let mut pool = Pool::open(
        MemDevice::from_image(meta),
        OpenOptions {
            read_only: true,
            ..OpenOptions::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let top = pool.superblock().data_mapping_root;
    let tm = pool.tm();
    let root = btree::lookup_u64(&mut tm.cache, top, dev)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("device {dev} not in the top-level tree"))?;
    tm.cache
        .read(root, BlockKind::Node, node::flags)
        .map_err(|e| e.to_string())
}
