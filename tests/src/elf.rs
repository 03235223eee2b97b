//! Just enough ELF64 (little-endian) reading to assemble the guest image: the `DT_NEEDED`
//! entries of a dynamic executable or library, its `PT_INTERP` path, and a section's bytes
//! (kernel modules keep their `depends=` list in `.modinfo`).
//!
//! Invariants: every offset and length read from the file is bounds-checked against the file
//! before use; malformed input yields `None`/an error string, never a panic.

const SHT_DYNAMIC: u32 = 6;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;

/// A parsed view of an ELF64 little-endian file held in memory.
pub struct Elf<'a> {
    data: &'a [u8],
    sections: Vec<Section>,
    shstrndx: usize,
}

#[derive(Clone, Copy)]
struct Section {
    name: u32,
    kind: u32,
    offset: u64,
    size: u64,
    link: u32,
}

fn u16_at(d: &[u8], off: usize) -> Option<u16> {
    let b = d.get(off..off.checked_add(2)?)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(d: &[u8], off: usize) -> Option<u32> {
    let b = d.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_at(d: &[u8], off: usize) -> Option<u64> {
    let b = d.get(off..off.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_le_bytes(a))
}

/// The NUL-terminated string starting at `off` in `d`.
fn cstr_at(d: &[u8], off: usize) -> Option<&str> {
    let rest = d.get(off..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&rest[..end]).ok()
}

impl<'a> Elf<'a> {
    /// Parses the ELF header and section table. Errors name what was wrong.
    pub fn parse(data: &'a [u8]) -> Result<Self, String> {
        if data.get(0..4) != Some(b"\x7fELF") {
            return Err("not an ELF file".into());
        }
        // EI_CLASS = 2 (64-bit), EI_DATA = 1 (little-endian).
        if data.get(4) != Some(&2) || data.get(5) != Some(&1) {
            return Err("not a 64-bit little-endian ELF file".into());
        }
        let bad = || "truncated ELF header".to_string();
        let shoff = u64_at(data, 0x28).ok_or_else(bad)?;
        let shentsize = u16_at(data, 0x3A).ok_or_else(bad)?;
        let shnum = u16_at(data, 0x3C).ok_or_else(bad)?;
        let shstrndx = u16_at(data, 0x3E).ok_or_else(bad)?;
        if shnum > 0 && shentsize < 64 {
            return Err(format!("section header entry size {shentsize} < 64"));
        }
        let mut sections = Vec::with_capacity(usize::from(shnum));
        for i in 0..u64::from(shnum) {
            let at = shoff
                .checked_add(i * u64::from(shentsize))
                .and_then(|v| usize::try_from(v).ok())
                .ok_or("section header offset overflows")?;
            let sh = data
                .get(at..at.checked_add(64).ok_or("overflow")?)
                .ok_or_else(|| format!("section header {i} lies outside the file"))?;
            sections.push(Section {
                name: u32_at(sh, 0).ok_or_else(bad)?,
                kind: u32_at(sh, 4).ok_or_else(bad)?,
                offset: u64_at(sh, 24).ok_or_else(bad)?,
                size: u64_at(sh, 32).ok_or_else(bad)?,
                link: u32_at(sh, 40).ok_or_else(bad)?,
            });
        }
        Ok(Elf {
            data,
            sections,
            shstrndx: usize::from(shstrndx),
        })
    }

    fn bytes_of(&self, s: &Section) -> Option<&'a [u8]> {
        let start = usize::try_from(s.offset).ok()?;
        let len = usize::try_from(s.size).ok()?;
        self.data.get(start..start.checked_add(len)?)
    }

    fn name_of(&self, s: &Section) -> Option<&'a str> {
        let strtab = self.bytes_of(self.sections.get(self.shstrndx)?)?;
        cstr_at(strtab, usize::try_from(s.name).ok()?)
    }

    /// The bytes of the first section called `name`, if present and inside the file.
    pub fn section(&self, name: &str) -> Option<&'a [u8]> {
        let s = self
            .sections
            .iter()
            .find(|s| self.name_of(s) == Some(name))?;
        self.bytes_of(s)
    }

    /// Sonames from the `DT_NEEDED` entries of the dynamic section (empty for static files).
    pub fn needed(&self) -> Result<Vec<String>, String> {
        let Some(dynamic) = self.sections.iter().find(|s| s.kind == SHT_DYNAMIC) else {
            return Ok(Vec::new());
        };
        let dyn_bytes = self
            .bytes_of(dynamic)
            .ok_or("dynamic section lies outside the file")?;
        let strtab = usize::try_from(dynamic.link)
            .ok()
            .and_then(|i| self.sections.get(i))
            .and_then(|s| self.bytes_of(s))
            .ok_or("dynamic string table missing")?;
        let mut out = Vec::new();
        for entry in dyn_bytes.chunks_exact(16) {
            let tag = u64_at(entry, 0).ok_or("short dynamic entry")?;
            let val = u64_at(entry, 8).ok_or("short dynamic entry")?;
            match tag {
                DT_NULL => break,
                DT_NEEDED => {
                    let name = usize::try_from(val)
                        .ok()
                        .and_then(|off| cstr_at(strtab, off))
                        .ok_or("DT_NEEDED points outside the string table")?;
                    out.push(name.to_string());
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// The program interpreter (`.interp`), e.g. `/lib64/ld-linux-x86-64.so.2`.
    pub fn interp(&self) -> Option<&'a str> {
        cstr_at(self.section(".interp")?, 0)
    }

    /// For a kernel module: the module names listed in `.modinfo` as `depends=a,b`.
    pub fn module_depends(&self) -> Vec<String> {
        let Some(info) = self.section(".modinfo") else {
            return Vec::new();
        };
        info.split(|&b| b == 0)
            .filter_map(|kv| kv.strip_prefix(b"depends="))
            .flat_map(|v| {
                String::from_utf8_lossy(v)
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_garbage_without_panicking() {
        assert!(Elf::parse(b"").is_err());
        assert!(Elf::parse(b"\x7fELF\x02\x01").is_err());
        let mut hdr = vec![0u8; 64];
        hdr[..6].copy_from_slice(b"\x7fELF\x02\x01");
        hdr[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
        hdr[0x3A..0x3C].copy_from_slice(&64u16.to_le_bytes());
        hdr[0x3C..0x3E].copy_from_slice(&3u16.to_le_bytes());
        assert!(Elf::parse(&hdr).is_err());
    }

    #[test]
    fn reads_the_host_shell() {
        // /bin/sh exists on every machine these tests run on (Debian: dash, dynamic).
        let data = std::fs::read("/bin/sh").expect("reading /bin/sh");
        let elf = Elf::parse(&data).expect("/bin/sh is ELF64");
        let needed = elf.needed().expect("DT_NEEDED of /bin/sh");
        assert!(
            needed.iter().any(|n| n.starts_with("libc.so")),
            "{needed:?}"
        );
        assert!(elf.interp().is_some_and(|i| i.contains("ld-linux")));
    }
}
