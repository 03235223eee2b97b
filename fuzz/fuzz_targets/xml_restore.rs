//! Arbitrary XML into the restore path (parser → restorer → metadata on a RAM device).
//! Invariants: no panic; when the restore succeeds the result passes our checker.
#![no_main]
use libfuzzer_sys::fuzz_target;
use thin_tools::ir::MetadataCollector;
use thin_tools::xml::parse_xml;

fuzz_target!(|data: &[u8]| {
    let mut c = MetadataCollector::new();
    if parse_xml(data, &mut c).is_err() {
        return;
    }
    let Some(md) = c.into_metadata() else { return };
    let sb = &md.superblock;
    if sb.nr_data_blocks > 1 << 20 {
        return;
    }
    let h = thin_core::thin::restore::RestoreHeader {
        time: sb.time,
        transaction_id: sb.transaction,
        data_block_size: sb.data_block_size,
        nr_data_blocks: sb.nr_data_blocks,
        flags: sb.flags.unwrap_or(0),
    };
    let Ok(mut r) = thin_core::thin::restore::Restorer::new(thin_core::MemDevice::new(1024), h, 32) else { return };
    for d in &md.devices {
        let det = thin_core::thin::DeviceDetails {
            mapped_blocks: d.device.mapped_blocks,
            transaction_id: d.device.transaction,
            creation_time: d.device.creation_time,
            snapshotted_time: d.device.snap_time,
        };
        if r.begin_device(u64::from(d.device.dev_id), det).is_err() {
            return;
        }
        for m in &d.mappings {
            for k in 0..m.len.min(4096) {
                if r.map(m.thin_begin.saturating_add(k), m.data_begin.saturating_add(k), m.time).is_err() {
                    return;
                }
            }
        }
        if r.end_device().is_err() {
            return;
        }
    }
    if let Ok(pool) = r.finish() {
        let mut dev = pool.into_device();
        let rep = thin_core::thin::check::check(&mut dev, &Default::default());
        assert!(!rep.has_fatal(), "restored metadata fails the checker: {:?}", rep.issues);
    }
});
