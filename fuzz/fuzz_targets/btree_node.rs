//! One block parsed as every metadata block type. Invariant: validation never panics, and a
//! node that validates can be read entry by entry without panicking.
#![no_main]
use libfuzzer_sys::fuzz_target;
use thin_core::checksum::BlockKind;
use thin_core::pdata::{cache, node, sm};
use thin_core::thin::Superblock;

fuzz_target!(|data: &[u8]| {
    let mut b = [0u8; 4096];
    b[..data.len().min(4096)].copy_from_slice(&data[..data.len().min(4096)]);
    let _ = Superblock::parse(&b, 0);
    if cache::validate(&b, thin_core::checksum::stored_blocknr(&b), BlockKind::Node).is_ok() {
        for i in 0..node::nr_entries(&b) {
            let _ = node::key(&b, i);
            let _ = node::value(&b, i);
        }
        let _ = node::keys_ascending(&b);
    }
    for e in 0..sm::ENTRIES_PER_BITMAP {
        let _ = sm::bitmap_get(&b, e);
    }
    for i in 0..sm::MAX_METADATA_BITMAPS {
        let _ = sm::index_block_entry(&b, i);
    }
});
