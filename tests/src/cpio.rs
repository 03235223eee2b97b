//! A writer for "newc" cpio archives (the initramfs format the kernel unpacks), so building the
//! guest image needs neither root nor the `cpio` tool.
//!
//! Invariants: entries are written in path order, parents before children; every file is
//! owned by root with mtime 0, so the same inputs give byte-identical archives.

use std::collections::BTreeMap;
use std::io::{self, Write};

/// One archive member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

/// An in-memory tree of entries keyed by absolute-looking path ("bin/busybox", no leading /).
#[derive(Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `entry` at `path`, creating missing parent directories. A later insert replaces an
    /// earlier one at the same path.
    pub fn insert(&mut self, path: &str, entry: Entry) {
        let path = path.trim_matches('/');
        let mut parent = String::new();
        for comp in path
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |(_, p)| p)
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(comp);
            self.entries.entry(parent.clone()).or_insert(Entry::Dir);
        }
        self.entries.insert(path.to_string(), entry);
    }

    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(path.trim_matches('/'))
    }

    /// Writes the archive, ending with the `TRAILER!!!` member.
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        for (ino, (path, entry)) in (1u32..).zip(&self.entries) {
            let (mode, data, rdev): (u32, &[u8], (u32, u32)) = match entry {
                Entry::Dir => (S_IFDIR | 0o755, &[], (0, 0)),
                Entry::File { data, mode } => (S_IFREG | (mode & 0o7777), data, (0, 0)),
                Entry::Symlink(target) => (S_IFLNK | 0o777, target.as_bytes(), (0, 0)),
                Entry::CharDev { major, minor } => (S_IFCHR | 0o600, &[], (*major, *minor)),
            };
            let nlink = if matches!(entry, Entry::Dir) { 2 } else { 1 };
            write_member(out, ino, mode, nlink, path, data, rdev)?;
        }
        write_member(out, 0, 0, 1, "TRAILER!!!", &[], (0, 0))
    }
}

fn pad4(out: &mut impl Write, len: usize) -> io::Result<()> {
    let pad = (4 - len % 4) % 4;
    out.write_all(&[0u8; 3][..pad])
}

fn write_member(
    out: &mut impl Write,
    ino: u32,
    mode: u32,
    nlink: u32,
    name: &str,
    data: &[u8],
    rdev: (u32, u32),
) -> io::Result<()> {
    let filesize = u32::try_from(data.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "cpio member over 4 GiB"))?;
    let namesize = name.len() + 1;
    let header = format!(
        "070701{ino:08X}{mode:08X}{uid:08X}{gid:08X}{nlink:08X}{mtime:08X}{filesize:08X}\
         {maj:08X}{min:08X}{rmaj:08X}{rmin:08X}{namesize:08X}{check:08X}",
        uid = 0,
        gid = 0,
        mtime = 0,
        maj = 0,
        min = 0,
        rmaj = rdev.0,
        rmin = rdev.1,
        check = 0,
    );
    debug_assert_eq!(header.len(), 110);
    out.write_all(header.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    pad4(out, 110 + namesize)?;
    out.write_all(data)?;
    pad4(out, data.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_aligned_and_parents_created() {
        let mut a = Archive::new();
        a.insert(
            "/bin/x",
            Entry::File {
                data: b"abcde".to_vec(),
                mode: 0o755,
            },
        );
        assert!(a.contains("bin"));
        let mut out = Vec::new();
        a.write_to(&mut out).expect("write to Vec");
        assert_eq!(out.len() % 4, 0);
        assert!(out.starts_with(b"070701"));
        // "bin" (dir), then "bin/x", then the trailer.
        let text = String::from_utf8_lossy(&out);
        let bin = text.find("bin\0").expect("bin dir");
        let x = text.find("bin/x\0").expect("bin/x");
        let trailer = text.find("TRAILER!!!\0").expect("trailer");
        assert!(bin < x && x < trailer);
    }
}
