//! Running Debian's thin-provisioning-tools on the host and summarising `thin_dump` XML, plus a
//! few raw reads of metadata blocks, for tests that check metadata made by other parties.
//!
//! Invariants: a missing tool is an error naming the install command; XML and metadata are
//! parsed defensively (bad input is an error, never a panic).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use crate::guest_image::{run_tool, GuestError};

pub const TOOLS_INSTALL: &str = "apt-get install thin-provisioning-tools";
pub const METADATA_BLOCK_SIZE: usize = 4096;

/// `thin_check <meta>`; Ok(stdout+stderr) if it exits 0.
pub fn thin_check(meta: &Path) -> Result<String, GuestError> {
    let out = run_tool(
        Command::new("thin_check").arg(meta),
        "thin_check",
        TOOLS_INSTALL,
    )?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// `thin_dump [--metadata-snap] <meta>` → XML.
pub fn thin_dump(meta: &Path, metadata_snap: bool) -> Result<String, GuestError> {
    let mut cmd = Command::new("thin_dump");
    if metadata_snap {
        cmd.arg("--metadata-snap");
    }
    let out = run_tool(cmd.arg(meta), "thin_dump", TOOLS_INSTALL)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `thin_restore -i <xml> -o <meta>` (the output file must exist, sized for the metadata).
pub fn thin_restore(xml: &Path, meta: &Path) -> Result<(), GuestError> {
    run_tool(
        Command::new("thin_restore")
            .arg("-i")
            .arg(xml)
            .arg("-o")
            .arg(meta),
        "thin_restore",
        TOOLS_INSTALL,
    )
    .map(|_| ())
}

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

fn attr(tag: &str, name: &str) -> Option<u64> {
    let pat = format!(" {name}=\"");
    let start = tag.find(&pat)? + pat.len();
    let end = tag[start..].find('"')? + start;
    tag[start..end].parse().ok()
}

fn need(tag: &str, name: &str) -> Result<u64, String> {
    attr(tag, name).ok_or_else(|| format!("attribute {name} missing or not a number in {tag}"))
}

/// Summarises thin_dump's XML (one element per line, as every thin_dump version writes it).
pub fn summarize_dump(xml: &str) -> Result<DumpSummary, String> {
    let mut s = DumpSummary::default();
    let mut current: Option<u64> = None;
    for line in xml.lines().map(str::trim) {
        if line.starts_with("<superblock") {
            s.transaction = need(line, "transaction")?;
            s.data_block_size = need(line, "data_block_size")?;
            s.nr_data_blocks = need(line, "nr_data_blocks")?;
            s.metadata_snap = attr(line, "metadata_snap");
        } else if line.starts_with("<device") {
            let id = need(line, "dev_id")?;
            let dev = s.devices.entry(id).or_default();
            dev.mapped_blocks_attr = need(line, "mapped_blocks")?;
            current = Some(id);
        } else if line.starts_with("</device") {
            current = None;
        } else if line.starts_with("<single_mapping") || line.starts_with("<range_mapping") {
            let id = current.ok_or("mapping outside a device")?;
            let (origin, data, len) = if line.starts_with("<single") {
                (need(line, "origin_block")?, need(line, "data_block")?, 1)
            } else {
                (
                    need(line, "origin_begin")?,
                    need(line, "data_begin")?,
                    need(line, "length")?,
                )
            };
            let dev = s.devices.entry(id).or_default();
            for i in 0..len {
                let v = origin.checked_add(i).ok_or("origin overflows")?;
                let d = data.checked_add(i).ok_or("data block overflows")?;
                if dev.mappings.insert(v, d).is_some() {
                    return Err(format!("dev {id}: block {v} mapped twice"));
                }
            }
        }
    }
    Ok(s)
}

fn le_u32(b: &[u8], off: usize) -> Result<u32, String> {
    b.get(off..off + 4)
        .map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
        .ok_or_else(|| format!("read past the block at {off}"))
}

fn le_u64(b: &[u8], off: usize) -> Result<u64, String> {
    let x = b
        .get(off..off + 8)
        .ok_or_else(|| format!("read past the block at {off}"))?;
    let mut a = [0u8; 8];
    a.copy_from_slice(x);
    Ok(u64::from_le_bytes(a))
}

fn block(meta: &[u8], nr: u64) -> Result<&[u8], String> {
    let start = usize::try_from(nr)
        .ok()
        .and_then(|n| n.checked_mul(METADATA_BLOCK_SIZE))
        .ok_or("block number overflows")?;
    meta.get(start..start + METADATA_BLOCK_SIZE)
        .ok_or_else(|| format!("metadata block {nr} beyond the image"))
}

/// The superblock's `held_root` (a.k.a. `metadata_snap`, spec §4.1): 0 if no metadata
/// snapshot is held. thin_dump 0.9 does not print it, so it is read directly.
pub fn held_root(meta: &[u8]) -> Result<u64, String> {
    le_u64(block(meta, 0)?, 0x38)
}

/// B-tree node flags: 1 = internal, 2 = leaf (spec §5.1).
pub const NODE_INTERNAL: u32 = 1;
pub const NODE_LEAF: u32 = 2;

/// The flags of the root node of thin device `dev`'s mapping tree, found through the
/// superblock's `data_mapping_root` (spec §4, §6.1). Walks down the top-level tree.
pub fn device_root_flags(meta: &[u8], dev: u64) -> Result<u32, String> {
    let sb = block(meta, 0)?;
    let mut node_nr = le_u64(sb, 0x140)?;
    for _depth in 0..8 {
        let node = block(meta, node_nr)?;
        let flags = le_u32(node, 0x04)?;
        let nr_entries = le_u32(node, 0x10)? as usize;
        let max_entries = le_u32(node, 0x14)? as usize;
        if nr_entries > max_entries || 32 + 16 * max_entries > METADATA_BLOCK_SIZE {
            return Err(format!("node {node_nr}: bad entry counts"));
        }
        let keys: Vec<u64> = (0..nr_entries)
            .map(|i| le_u64(node, 32 + 8 * i))
            .collect::<Result<_, _>>()?;
        let value_at = |i: usize| le_u64(node, 32 + 8 * max_entries + 8 * i);
        if flags & NODE_LEAF != 0 {
            let i = keys
                .iter()
                .position(|&k| k == dev)
                .ok_or_else(|| format!("device {dev} not in the top-level tree"))?;
            let root = block(meta, value_at(i)?)?;
            return le_u32(root, 0x04);
        }
        // Internal: the last key <= dev.
        let i = keys
            .iter()
            .rposition(|&k| k <= dev)
            .ok_or_else(|| format!("device {dev} below the first key of node {node_nr}"))?;
        node_nr = value_at(i)?;
    }
    Err("top-level tree deeper than 8".into())
}
