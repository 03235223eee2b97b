//! Opening a metadata device for the read-only tools, with the messages Debian's 0.9 tools
//! print for a missing path, something that is neither a file nor a block device, and a
//! requested metadata snapshot that is not there.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use thin_core::file::FileDevice;
use thin_core::thin::reader::{Reader, Source};
use thin_core::thin::PoolError;

/// Metadata cache for the read-only tools, in 4 KiB blocks (16 MiB).
pub const CACHE_BLOCKS: usize = 4096;

/// Opens `path` read-only as a metadata device.
pub fn open_device(path: &str) -> Result<FileDevice, String> {
    let meta = std::fs::metadata(path).map_err(|_| "Couldn't stat path".to_string())?;
    let ft = meta.file_type();
    if !(ft.is_file() || ft.is_block_device()) {
        return Err("bad path".to_string());
    }
    FileDevice::open_read_only(Path::new(path)).map_err(|e| format!("{path}: {e}"))
}

/// Describes a reader error the way the tools report it.
pub fn describe(e: &PoolError) -> String {
    match e {
        PoolError::NoMetadataSnap => "no current metadata snap".to_string(),
        other => other.to_string(),
    }
}

/// Opens a [`Reader`] on `path` (live trees, or the metadata snapshot).
pub fn open_reader(path: &str, source: Source) -> Result<Reader<FileDevice>, String> {
    let dev = open_device(path)?;
    Reader::open(dev, CACHE_BLOCKS, source).map_err(|e| describe(&e))
}

/// What `-V` prints: the Debian release whose command lines and output these tools follow
/// (scripts such as lvm2 compare tool versions).
pub const VERSION: &str = "0.9.0";
