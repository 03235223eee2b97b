//! `thin_dump -f human_readable`: a plain-text rendering, byte-identical to Debian 0.9's.
//!
//! Layout (each line ends with `\n`):
//! ```text
//! begin superblock: "<uuid>", <time>, <transaction>, <flags>, <version>, <data_block_size>, <nr_data_blocks>[, <metadata_snap>]
//! device: <dev_id>
//! mapped_blocks: <n>
//! transaction: <n>
//! creation time: <n>
//! snap time: <n>
//!     (<thin_first>..<thin_last>) -> (<data_first>..<data_last>), <time>   one per run (bounds inclusive)
//!     <thin> -> <data>, <time>                                             one per single mapping
//! <empty line after each device>
//! end superblock
//! ```
//! As in the XML writer, absent `flags`/`version` print as 0/1, the uuid is written as is
//! (0.9 does not escape it here either) and runs are merged with [`RunMerger`].

use std::io::Write;

use anyhow::Result;

use crate::ir::{Device, Map, Metadata, MetadataVisitor, RunMerger, Superblock, Visit};

/// Writes events in 0.9's human-readable format.
pub struct HumanReadableWriter<W: Write> {
    out: W,
    merger: RunMerger,
}

impl<W: Write> HumanReadableWriter<W> {
    pub fn new(out: W) -> Self {
        HumanReadableWriter {
            out,
            merger: RunMerger::new(),
        }
    }

    pub fn into_inner(self) -> W {
        self.out
    }

    fn write_run(&mut self, m: &Map) -> std::io::Result<()> {
        if m.len == 1 {
            writeln!(
                self.out,
                "    {} -> {}, {}",
                m.thin_begin, m.data_begin, m.time
            )
        } else {
            // RunMerger and the parser guarantee begin + len does not overflow.
            let last = m.len.saturating_sub(1);
            writeln!(
                self.out,
                "    ({}..{}) -> ({}..{}), {}",
                m.thin_begin,
                m.thin_begin.saturating_add(last),
                m.data_begin,
                m.data_begin.saturating_add(last),
                m.time
            )
        }
    }

    fn flush_run(&mut self) -> std::io::Result<()> {
        match self.merger.finish() {
            Some(run) => self.write_run(&run),
            None => Ok(()),
        }
    }
}

impl<W: Write> MetadataVisitor for HumanReadableWriter<W> {
    fn superblock_b(&mut self, sb: &Superblock) -> Result<Visit> {
        write!(
            self.out,
            "begin superblock: \"{}\", {}, {}, {}, {}, {}, {}",
            sb.uuid,
            sb.time,
            sb.transaction,
            sb.flags.unwrap_or(0),
            sb.version.unwrap_or(1),
            sb.data_block_size,
            sb.nr_data_blocks
        )?;
        if let Some(snap) = sb.metadata_snap {
            write!(self.out, ", {snap}")?;
        }
        writeln!(self.out)?;
        Ok(Visit::Continue)
    }

    fn superblock_e(&mut self) -> Result<Visit> {
        self.flush_run()?;
        writeln!(self.out, "end superblock")?;
        Ok(Visit::Continue)
    }

    fn device_b(&mut self, d: &Device) -> Result<Visit> {
        self.flush_run()?;
        writeln!(
            self.out,
            "device: {}\nmapped_blocks: {}\ntransaction: {}\ncreation time: {}\nsnap time: {}",
            d.dev_id, d.mapped_blocks, d.transaction, d.creation_time, d.snap_time
        )?;
        Ok(Visit::Continue)
    }

    fn device_e(&mut self) -> Result<Visit> {
        self.flush_run()?;
        writeln!(self.out)?;
        Ok(Visit::Continue)
    }

    fn map(&mut self, m: &Map) -> Result<Visit> {
        if let Some(run) = self.merger.push(m) {
            self.write_run(&run)?;
        }
        Ok(Visit::Continue)
    }

    fn eof(&mut self) -> Result<Visit> {
        self.flush_run()?;
        self.out.flush()?;
        Ok(Visit::Continue)
    }
}

/// `md` in 0.9's human-readable format.
pub fn to_human_readable_string(md: &Metadata) -> String {
    let mut w = HumanReadableWriter::new(Vec::new());
    // Writing to a Vec cannot fail and the writer raises no errors of its own.
    let _ = md.walk(&mut w);
    String::from_utf8_lossy(&w.into_inner()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::read_xml_str;

    #[test]
    fn worked_example_matches_debian_09() {
        let xml = "<superblock uuid=\"\" time=\"2\" transaction=\"7\" flags=\"0\" version=\"2\" data_block_size=\"128\" nr_data_blocks=\"1024\">
  <device dev_id=\"0\" mapped_blocks=\"4\" transaction=\"0\" creation_time=\"0\" snap_time=\"2\">
    <range_mapping origin_begin=\"0\" data_begin=\"0\" length=\"3\" time=\"0\"/>
    <single_mapping origin_block=\"10\" data_block=\"7\" time=\"0\"/>
  </device>
  <device dev_id=\"7\" mapped_blocks=\"0\" transaction=\"5\" creation_time=\"2\" snap_time=\"2\">
  </device>
</superblock>
";
        // Captured from Debian 0.9.0 `thin_dump -f human_readable` of this pool restored.
        let expected = "begin superblock: \"\", 2, 7, 0, 2, 128, 1024
device: 0
mapped_blocks: 4
transaction: 0
creation time: 0
snap time: 2
    (0..2) -> (0..2), 0
    10 -> 7, 0

device: 7
mapped_blocks: 0
transaction: 5
creation time: 2
snap time: 2

end superblock
";
        let md = read_xml_str(xml).unwrap();
        assert_eq!(to_human_readable_string(&md), expected);
        // Same text when fed one mapping at a time.
        let mut singles = md.clone();
        singles.devices[0].mappings = vec![
            Map::single(0, 0, 0),
            Map::single(1, 1, 0),
            Map::single(2, 2, 0),
            Map::single(10, 7, 0),
        ];
        assert_eq!(to_human_readable_string(&singles), expected);
    }
}
