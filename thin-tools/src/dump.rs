//! Dumping metadata as visitor events (the XML and human-readable writers consume them).

use anyhow::{anyhow, Result};
use thin_core::thin::reader::{Reader, Source};
use thin_core::BlockDevice;

use crate::ir::{Device, Map, MetadataVisitor, Superblock, Visit};

/// What to dump.
#[derive(Debug, Clone, Default)]
pub struct DumpOptions {
    /// Only these devices (all when empty).
    pub dev_ids: Vec<u64>,
    /// Devices without their mappings.
    pub skip_mappings: bool,
    /// Keep going past devices whose trees are damaged (they are dumped as far as readable).
    pub repair: bool,
}

/// Emits the pool `reader` sees as visitor events.
pub fn dump<D: BlockDevice>(
    reader: &mut Reader<D>,
    snap: bool,
    opts: &DumpOptions,
    out: &mut dyn MetadataVisitor,
) -> Result<()> {
    let sb = reader.superblock().clone();
    let live = reader.live_superblock().clone();
    let header = Superblock {
        uuid: String::new(),
        time: sb.time,
        transaction: sb.trans_id,
        flags: Some(sb.flags),
        version: Some(sb.version),
        data_block_size: sb.data_block_size,
        // A metadata snapshot has no space maps: 0.9 reports 0 data blocks for it.
        nr_data_blocks: if snap { 0 } else { live.data_sm_root.nr_blocks },
        metadata_snap: None,
    };
    if out.superblock_b(&header)? == Visit::Stop {
        return Ok(());
    }
    let devices = reader.devices().map_err(|e| anyhow!("{e}"))?;
    // A progress bar over devices on stderr, only when it is a terminal.
    let bar = std::io::IsTerminal::is_terminal(&std::io::stderr())
        .then(|| indicatif::ProgressBar::new(devices.len() as u64));
    for (id, d) in devices {
        if let Some(b) = &bar {
            b.inc(1);
        }
        if !opts.dev_ids.is_empty() && !opts.dev_ids.contains(&id) {
            continue;
        }
        let dev = Device {
            dev_id: u32::try_from(id)
                .map_err(|_| anyhow!("device id {id} does not fit the XML format"))?,
            mapped_blocks: d.mapped_blocks,
            transaction: d.transaction_id,
            creation_time: d.creation_time,
            snap_time: d.snapshotted_time,
        };
        if out.device_b(&dev)? == Visit::Stop {
            return Ok(());
        }
        if !opts.skip_mappings {
            let mut err = None;
            let r = reader.walk_mappings(id, |v, bt| {
                match out.map(&Map::single(v, bt.block, bt.time)) {
                    Ok(Visit::Continue) => true,
                    Ok(Visit::Stop) => false,
                    Err(e) => {
                        err = Some(e);
                        false
                    }
                }
            });
            if let Some(e) = err {
                return Err(e);
            }
            match r {
                Ok(()) => {}
                Err(e) if opts.repair => eprintln!("device {id}: mappings truncated: {e}"),
                Err(e) => return Err(anyhow!("device {id}: {e}")),
            }
        }
        out.device_e()?;
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    out.superblock_e()?;
    out.eof()?;
    Ok(())
}

/// Opens a reader for the live trees or a metadata snapshot.
pub fn open_reader<D: BlockDevice>(dev: D, snap: Option<Option<u64>>) -> Result<Reader<D>> {
    let source = match snap {
        None => Source::Live,
        Some(at) => Source::MetadataSnap(at),
    };
    Reader::open(dev, 4096, source).map_err(|e| anyhow!("{e}"))
}
