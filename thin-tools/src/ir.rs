//! Intermediate representation of thin-pool metadata, shared by dump, restore and repair.
//!
//! A pool is described by a stream of events — `superblock_b`, then for each device
//! `device_b`, its mappings (`map`), `device_e`, then `superblock_e` and `eof` — fed to a
//! [`MetadataVisitor`]. A dumper walks on-disk metadata and emits events; the XML parser emits
//! the same events from text; writers (XML, human readable) and restorers consume them. So
//! repair is "dump into restore" and format conversion is "parse into writer".
//!
//! Invariants a well-formed event stream keeps (the parser guarantees the nesting; the
//! values are checked by whoever gives them meaning, e.g. a restorer):
//! * exactly one `superblock_b` … `superblock_e` pair, then `eof`;
//! * `device_b`/`device_e` pairs only inside it, never nested; `map` only inside a device;
//! * a [`Map`] has `len >= 1` and stands for `len` mappings
//!   `(thin_begin + k) -> (data_begin + k)`, all with the same `time`.
//!
//! Writers merge adjacent mappings into maximal runs themselves ([`RunMerger`]), so a dumper
//! may feed single mappings one by one in ascending virtual order.

use anyhow::Result;

/// The pool-wide values of the superblock as the XML format carries them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Superblock {
    /// Free-form string; Debian's dumpers always write it empty.
    pub uuid: String,
    /// Pool time (incremented by each snapshot).
    pub time: u32,
    /// Pool transaction id.
    pub transaction: u64,
    /// Superblock flags (bit 0 = NEEDS_CHECK); `None` when the XML omits it.
    pub flags: Option<u32>,
    /// Metadata format version; `None` when the XML omits it.
    pub version: Option<u32>,
    /// Data block size in 512-byte sectors.
    pub data_block_size: u32,
    /// Number of blocks of the data device (the data space map's `nr_blocks`).
    pub nr_data_blocks: u64,
    /// Block of the held metadata snapshot, if any.
    pub metadata_snap: Option<u64>,
}

/// One thin device's details.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Device {
    pub dev_id: u32,
    pub mapped_blocks: u64,
    pub transaction: u64,
    pub creation_time: u32,
    /// `snapshotted_time` on disk.
    pub snap_time: u32,
}

/// A run of `len` mappings `(thin_begin + k) -> (data_begin + k)` with one `time`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Map {
    pub thin_begin: u64,
    pub data_begin: u64,
    pub time: u32,
    pub len: u64,
}

impl Map {
    /// A run of one mapping.
    pub fn single(thin_block: u64, data_block: u64, time: u32) -> Self {
        Map {
            thin_begin: thin_block,
            data_begin: data_block,
            time,
            len: 1,
        }
    }

    /// True when `next` continues this run: both blocks advance by exactly `len` and the time
    /// is equal. Never true when an end would overflow `u64`.
    pub fn is_continued_by(&self, next: &Map) -> bool {
        self.time == next.time
            && self.thin_begin.checked_add(self.len) == Some(next.thin_begin)
            && self.data_begin.checked_add(self.len) == Some(next.data_begin)
            && self.len.checked_add(next.len).is_some()
            && next.thin_begin.checked_add(next.len).is_some()
            && next.data_begin.checked_add(next.len).is_some()
    }
}

/// What a visitor wants after an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visit {
    Continue,
    /// Stop feeding events; the producer returns successfully without further events.
    Stop,
}

/// Consumer of metadata events (see the module documentation for the event grammar).
pub trait MetadataVisitor {
    fn superblock_b(&mut self, sb: &Superblock) -> Result<Visit>;
    fn superblock_e(&mut self) -> Result<Visit>;
    fn device_b(&mut self, d: &Device) -> Result<Visit>;
    fn device_e(&mut self) -> Result<Visit>;
    fn map(&mut self, m: &Map) -> Result<Visit>;
    /// End of input; writers flush here.
    fn eof(&mut self) -> Result<Visit>;
}

/// Merges a stream of mappings into maximal runs (see [`Map::is_continued_by`]).
/// Zero-length maps are dropped.
#[derive(Debug, Default)]
pub struct RunMerger {
    pending: Option<Map>,
}

impl RunMerger {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `m`; returns the previous run if `m` does not continue it.
    pub fn push(&mut self, m: &Map) -> Option<Map> {
        if m.len == 0 {
            return None;
        }
        match &mut self.pending {
            Some(run) if run.is_continued_by(m) => {
                // is_continued_by checked the addition.
                run.len += m.len;
                None
            }
            _ => self.pending.replace(*m),
        }
    }

    /// Returns the last run, if any, leaving the merger empty.
    pub fn finish(&mut self) -> Option<Map> {
        self.pending.take()
    }
}

/// A device with its mappings, in the order they were given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceMappings {
    pub device: Device,
    pub mappings: Vec<Map>,
}

impl DeviceMappings {
    /// Number of single mappings (sum of run lengths, saturating).
    pub fn nr_mappings(&self) -> u64 {
        self.mappings
            .iter()
            .fold(0u64, |acc, m| acc.saturating_add(m.len))
    }
}

/// A whole pool held in memory: handy for tests and small pools; tools stream instead.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    pub superblock: Superblock,
    pub devices: Vec<DeviceMappings>,
}

impl Metadata {
    /// Feeds the whole pool to `v` as events, ending with `eof`.
    pub fn walk(&self, v: &mut dyn MetadataVisitor) -> Result<()> {
        if v.superblock_b(&self.superblock)? == Visit::Stop {
            return Ok(());
        }
        for d in &self.devices {
            if v.device_b(&d.device)? == Visit::Stop {
                return Ok(());
            }
            for m in &d.mappings {
                if v.map(m)? == Visit::Stop {
                    return Ok(());
                }
            }
            if v.device_e()? == Visit::Stop {
                return Ok(());
            }
        }
        if v.superblock_e()? == Visit::Stop {
            return Ok(());
        }
        v.eof()?;
        Ok(())
    }

    /// Total number of single mappings over all devices (saturating).
    pub fn nr_mappings(&self) -> u64 {
        self.devices
            .iter()
            .fold(0u64, |acc, d| acc.saturating_add(d.nr_mappings()))
    }

    /// The same pool with every device's mappings merged into maximal runs and zero-length
    /// runs dropped, so two descriptions of the same mappings compare equal.
    pub fn canonical(&self) -> Metadata {
        let devices = self
            .devices
            .iter()
            .map(|d| {
                let mut merger = RunMerger::new();
                let mut mappings = Vec::new();
                for m in &d.mappings {
                    mappings.extend(merger.push(m));
                }
                mappings.extend(merger.finish());
                DeviceMappings {
                    device: d.device.clone(),
                    mappings,
                }
            })
            .collect();
        Metadata {
            superblock: self.superblock.clone(),
            devices,
        }
    }

    /// What Debian 0.9 `thin_restore` followed by `thin_dump` gives back for this pool: the
    /// uuid is dropped, an absent `flags` reads as 0 and an absent `version` as 1,
    /// `metadata_snap` is not dumped, `mapped_blocks` is recomputed from the mappings, and
    /// runs are maximal.
    pub fn normalized_09(&self) -> Metadata {
        let mut md = self.canonical();
        md.superblock.uuid.clear();
        md.superblock.flags = Some(md.superblock.flags.unwrap_or(0));
        md.superblock.version = Some(md.superblock.version.unwrap_or(1));
        md.superblock.metadata_snap = None;
        for d in &mut md.devices {
            d.device.mapped_blocks = d.nr_mappings();
        }
        md
    }
}

/// A visitor that collects the events into a [`Metadata`].
///
/// Events out of grammar (a map outside a device, a second superblock, …) are errors.
#[derive(Debug, Default)]
pub struct MetadataCollector {
    md: Option<Metadata>,
    in_device: bool,
    done: bool,
}

impl MetadataCollector {
    pub fn new() -> Self {
        Self::default()
    }

    /// The collected pool, if a superblock was seen.
    pub fn into_metadata(self) -> Option<Metadata> {
        self.md
    }

    fn md_mut(&mut self, what: &str) -> Result<&mut Metadata> {
        match (&mut self.md, self.done) {
            (Some(md), false) => Ok(md),
            _ => anyhow::bail!("{what} outside a superblock"),
        }
    }
}

impl MetadataVisitor for MetadataCollector {
    fn superblock_b(&mut self, sb: &Superblock) -> Result<Visit> {
        anyhow::ensure!(self.md.is_none(), "second superblock");
        self.md = Some(Metadata {
            superblock: sb.clone(),
            devices: Vec::new(),
        });
        Ok(Visit::Continue)
    }

    fn superblock_e(&mut self) -> Result<Visit> {
        anyhow::ensure!(!self.in_device, "superblock ended inside a device");
        self.md_mut("superblock end")?;
        self.done = true;
        Ok(Visit::Continue)
    }

    fn device_b(&mut self, d: &Device) -> Result<Visit> {
        anyhow::ensure!(!self.in_device, "nested device");
        self.md_mut("device")?.devices.push(DeviceMappings {
            device: d.clone(),
            mappings: Vec::new(),
        });
        self.in_device = true;
        Ok(Visit::Continue)
    }

    fn device_e(&mut self) -> Result<Visit> {
        anyhow::ensure!(self.in_device, "device end without device");
        self.in_device = false;
        Ok(Visit::Continue)
    }

    fn map(&mut self, m: &Map) -> Result<Visit> {
        anyhow::ensure!(self.in_device, "mapping outside a device");
        let md = self.md_mut("mapping")?;
        match md.devices.last_mut() {
            Some(d) => d.mappings.push(*m),
            None => anyhow::bail!("mapping outside a device"),
        }
        Ok(Visit::Continue)
    }

    fn eof(&mut self) -> Result<Visit> {
        Ok(Visit::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merger_builds_maximal_runs() {
        let mut m = RunMerger::new();
        let mut out = Vec::new();
        for (v, d, t) in [
            (0, 0, 0),
            (1, 1, 0),
            (2, 2, 0),
            (3, 3, 1),
            (5, 4, 1),
            (6, 5, 1),
        ] {
            out.extend(m.push(&Map::single(v, d, t)));
        }
        out.extend(m.finish());
        assert_eq!(
            out,
            vec![
                Map {
                    thin_begin: 0,
                    data_begin: 0,
                    time: 0,
                    len: 3
                },
                Map::single(3, 3, 1),
                Map {
                    thin_begin: 5,
                    data_begin: 4,
                    time: 1,
                    len: 2
                },
            ]
        );
    }

    #[test]
    fn merger_never_overflows() {
        let mut m = RunMerger::new();
        let a = Map {
            thin_begin: u64::MAX - 1,
            data_begin: 0,
            time: 0,
            len: 1,
        };
        let b = Map {
            thin_begin: u64::MAX,
            data_begin: 1,
            time: 0,
            len: 1,
        };
        assert!(m.push(&a).is_none());
        // b continues a but its own end would overflow: kept separate.
        assert_eq!(m.push(&b), Some(a));
        assert_eq!(m.finish(), Some(b));
        assert_eq!(m.push(&Map::default()), None);
        assert_eq!(m.finish(), None);
    }

    #[test]
    fn collector_round_trips_walk() {
        let md = Metadata {
            superblock: Superblock {
                time: 3,
                data_block_size: 128,
                nr_data_blocks: 100,
                ..Default::default()
            },
            devices: vec![DeviceMappings {
                device: Device {
                    dev_id: 4,
                    mapped_blocks: 2,
                    ..Default::default()
                },
                mappings: vec![Map::single(1, 2, 3), Map::single(9, 9, 0)],
            }],
        };
        let mut c = MetadataCollector::new();
        md.walk(&mut c).unwrap();
        assert_eq!(c.into_metadata(), Some(md));
    }

    #[test]
    fn collector_rejects_bad_grammar() {
        let mut c = MetadataCollector::new();
        assert!(c.map(&Map::single(0, 0, 0)).is_err());
        assert!(c.device_b(&Device::default()).is_err());
        c.superblock_b(&Superblock::default()).unwrap();
        assert!(c.superblock_b(&Superblock::default()).is_err());
        assert!(c.map(&Map::single(0, 0, 0)).is_err());
        assert!(c.device_e().is_err());
    }
}
