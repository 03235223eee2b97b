//! The XML format of `thin_dump`/`thin_restore` (spec §11): a writer and a streaming parser,
//! both speaking [`MetadataVisitor`] events.
//!
//! Writer ([`XmlWriter`]) invariants — its output is byte-identical to Debian 0.9 `thin_dump`:
//! * no XML declaration; two spaces of indentation per level; one element per line, `\n` ends;
//! * superblock attributes in the order `uuid time transaction flags version data_block_size
//!   nr_data_blocks [metadata_snap]`; `flags` and `version` are always written (0 and 1 when
//!   absent, as 0.9 does); `metadata_snap` only when present (Debian's dumpers never have one);
//! * mappings are merged into maximal runs ([`RunMerger`]): a run of length 1 is a
//!   `single_mapping`, longer ones `range_mapping`; a device without mappings is an open/close
//!   pair on two lines;
//! * `uuid` is escaped (`& < > "` and `\t \n \r` as character references) so any string round
//!   trips; 0.9 does not escape, which only matters for uuids it never writes.
//!
//! Parser ([`parse_xml`]) invariants:
//! * streaming: memory is bounded by the longest tag, plus the mappings of 1.x `<def>`s;
//! * never panics; every problem is an [`XmlError`] with the 1-based line of the offending tag
//!   (or of the last good event for syntax errors) and a byte offset;
//! * strict: unknown elements, unknown or duplicate attributes, non-whitespace text, numbers
//!   that are not plain unsigned decimals or do not fit their field, zero-length ranges and
//!   ranges whose end overflows `u64` are errors;
//! * accepts the 1.x shared-subtree elements: `<def name="…">` (mapping elements only, inside
//!   the superblock, outside devices) is stored, and each `<ref name="…"/>` inside a device
//!   replays the def's mappings as ordinary `map` events. The cost is the memory of the defs'
//!   mappings (a few bytes per run, as 1.x defs hold whole leaves of ≤ 252 mappings); sharing
//!   itself is not reproduced by a 0.9-style restore, which has no use for it.
//!
//! Domain limits (24-bit device ids and times, 40-bit data blocks, mappings below
//! `nr_data_blocks`) are the restorer's to check, not the parser's.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{BufRead, Write};

use anyhow::Result;
use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

use crate::ir::{
    Device, Map, Metadata, MetadataCollector, MetadataVisitor, RunMerger, Superblock, Visit,
};

// ---------------------------------------------------------------------------------------------
// Writer

/// Writes events as 0.9 `thin_dump` XML. Wrap `out` in a `BufWriter` for files.
pub struct XmlWriter<W: Write> {
    out: W,
    merger: RunMerger,
}

impl<W: Write> XmlWriter<W> {
    pub fn new(out: W) -> Self {
        XmlWriter {
            out,
            merger: RunMerger::new(),
        }
    }

    pub fn into_inner(self) -> W {
        self.out
    }

    fn emit_run(&mut self, m: &Map) -> std::io::Result<()> {
        if m.len == 1 {
            writeln!(
                self.out,
                "    <single_mapping origin_block=\"{}\" data_block=\"{}\" time=\"{}\"/>",
                m.thin_begin, m.data_begin, m.time
            )
        } else {
            writeln!(
                self.out,
                "    <range_mapping origin_begin=\"{}\" data_begin=\"{}\" length=\"{}\" time=\"{}\"/>",
                m.thin_begin, m.data_begin, m.len, m.time
            )
        }
    }

    fn flush_run(&mut self) -> std::io::Result<()> {
        match self.merger.finish() {
            Some(run) => self.emit_run(&run),
            None => Ok(()),
        }
    }
}

/// Escapes an attribute value so that a conforming parser reads back the same string.
pub fn escape_attr(s: &str) -> Cow<'_, str> {
    if !s.contains(['&', '<', '>', '"', '\t', '\n', '\r']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

impl<W: Write> MetadataVisitor for XmlWriter<W> {
    fn superblock_b(&mut self, sb: &Superblock) -> Result<Visit> {
        write!(
            self.out,
            "<superblock uuid=\"{}\" time=\"{}\" transaction=\"{}\" flags=\"{}\" version=\"{}\" \
             data_block_size=\"{}\" nr_data_blocks=\"{}\"",
            escape_attr(&sb.uuid),
            sb.time,
            sb.transaction,
            sb.flags.unwrap_or(0),
            sb.version.unwrap_or(1),
            sb.data_block_size,
            sb.nr_data_blocks
        )?;
        if let Some(snap) = sb.metadata_snap {
            write!(self.out, " metadata_snap=\"{snap}\"")?;
        }
        writeln!(self.out, ">")?;
        Ok(Visit::Continue)
    }

    fn superblock_e(&mut self) -> Result<Visit> {
        self.flush_run()?;
        writeln!(self.out, "</superblock>")?;
        Ok(Visit::Continue)
    }

    fn device_b(&mut self, d: &Device) -> Result<Visit> {
        self.flush_run()?;
        writeln!(
            self.out,
            "  <device dev_id=\"{}\" mapped_blocks=\"{}\" transaction=\"{}\" creation_time=\"{}\" \
             snap_time=\"{}\">",
            d.dev_id, d.mapped_blocks, d.transaction, d.creation_time, d.snap_time
        )?;
        Ok(Visit::Continue)
    }

    fn device_e(&mut self) -> Result<Visit> {
        self.flush_run()?;
        writeln!(self.out, "  </device>")?;
        Ok(Visit::Continue)
    }

    fn map(&mut self, m: &Map) -> Result<Visit> {
        if let Some(run) = self.merger.push(m) {
            self.emit_run(&run)?;
        }
        Ok(Visit::Continue)
    }

    fn eof(&mut self) -> Result<Visit> {
        self.flush_run()?;
        self.out.flush()?;
        Ok(Visit::Continue)
    }
}

/// Writes `md` as 0.9 `thin_dump` XML.
pub fn write_xml<W: Write>(md: &Metadata, out: W) -> Result<()> {
    md.walk(&mut XmlWriter::new(out))
}

/// `md` as 0.9 `thin_dump` XML text.
pub fn to_xml_string(md: &Metadata) -> String {
    let mut w = XmlWriter::new(Vec::new());
    // Writing to a Vec cannot fail and the writer raises no errors of its own.
    let _ = md.walk(&mut w);
    String::from_utf8_lossy(&w.into_inner()).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Parser

/// A parse failure and where it happened.
#[derive(Debug, thiserror::Error)]
#[error("line {line} (byte {offset}): {kind}")]
pub struct XmlError {
    /// 1-based line of the offending tag (of the last good event for syntax errors).
    pub line: u64,
    /// Byte offset into the input near the problem.
    pub offset: u64,
    pub kind: XmlErrorKind,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum XmlErrorKind {
    #[error("malformed XML: {0}")]
    Syntax(String),
    #[error("unknown element <{0}>")]
    UnknownElement(String),
    #[error("element <{element}> is not allowed {context}")]
    UnexpectedElement {
        element: String,
        context: &'static str,
    },
    #[error("unexpected text {0:?}")]
    UnexpectedText(String),
    #[error("<{element}>: missing attribute `{attribute}`")]
    MissingAttribute {
        element: &'static str,
        attribute: &'static str,
    },
    #[error("<{element}>: unknown attribute `{attribute}`")]
    UnknownAttribute {
        element: &'static str,
        attribute: String,
    },
    #[error("<{element}>: duplicate attribute `{attribute}`")]
    DuplicateAttribute {
        element: &'static str,
        attribute: &'static str,
    },
    #[error("<{element}>: attribute `{attribute}`={value:?}: {reason}")]
    InvalidAttribute {
        element: &'static str,
        attribute: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("<{element}>: attribute `{attribute}`={value:?} does not fit in {ty}")]
    Overflow {
        element: &'static str,
        attribute: &'static str,
        value: String,
        ty: &'static str,
    },
    #[error("<ref name={0:?}/> names no <def>")]
    UndefinedRef(String),
    #[error("<def name={0:?}> defined twice")]
    DuplicateDef(String),
    #[error("unexpected end of input: {0}")]
    UnexpectedEof(&'static str),
    #[error("visitor failed: {0:#}")]
    Visitor(anyhow::Error),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ctx {
    /// Before `<superblock>`.
    Top,
    Superblock,
    Def,
    Device,
    /// Inside a non-self-closed mapping or ref element; only its end may follow.
    Leaf,
    /// After `</superblock>`.
    Done,
}

const SUPERBLOCK_ATTRS: [&str; 8] = [
    "uuid",
    "time",
    "transaction",
    "flags",
    "version",
    "data_block_size",
    "nr_data_blocks",
    "metadata_snap",
];
const DEVICE_ATTRS: [&str; 5] = [
    "dev_id",
    "mapped_blocks",
    "transaction",
    "creation_time",
    "snap_time",
];
const SINGLE_ATTRS: [&str; 3] = ["origin_block", "data_block", "time"];
const RANGE_ATTRS: [&str; 4] = ["origin_begin", "data_begin", "length", "time"];
const NAME_ATTRS: [&str; 1] = ["name"];

/// Returns `Ok(Flow::Stop)` from the enclosing function when the visitor says stop.
macro_rules! visit {
    ($e:expr) => {
        match $e {
            Ok(Visit::Continue) => {}
            Ok(Visit::Stop) => return Ok(Flow::Stop),
            Err(e) => return Err(XmlErrorKind::Visitor(e)),
        }
    };
}

enum Flow {
    Continue,
    Stop,
}

struct Parser<'v> {
    visitor: &'v mut dyn MetadataVisitor,
    stack: Vec<Ctx>,
    defs: HashMap<String, Vec<Map>>,
    /// Name and mappings of the `<def>` being read.
    current_def: Option<(String, Vec<Map>)>,
}

/// Parses thin_dump XML from `input`, feeding `visitor`. Stops early without error if the
/// visitor returns [`Visit::Stop`].
pub fn parse_xml<R: BufRead>(input: R, visitor: &mut dyn MetadataVisitor) -> Result<(), XmlError> {
    let mut reader = Reader::from_reader(input);
    // Keep whitespace text events: they carry the newlines we count for line numbers.
    let cfg = reader.config_mut();
    cfg.trim_text(false);
    cfg.check_end_names = true;
    cfg.expand_empty_elements = false;

    let mut p = Parser {
        visitor,
        stack: vec![Ctx::Top],
        defs: HashMap::new(),
        current_def: None,
    };
    let mut buf = Vec::with_capacity(256);
    let mut line: u64 = 1;
    loop {
        buf.clear();
        let start_offset = reader.buffer_position();
        let ev = match reader.read_event_into(&mut buf) {
            Ok(ev) => ev,
            Err(e) => {
                return Err(XmlError {
                    line,
                    offset: reader.error_position(),
                    kind: XmlErrorKind::Syntax(e.to_string()),
                })
            }
        };
        let raw_newlines = match &ev {
            Event::Start(e) | Event::Empty(e) => count_newlines(e),
            Event::End(e) => count_newlines(e),
            Event::Text(e) | Event::Comment(e) | Event::DocType(e) => count_newlines(e),
            Event::CData(e) => count_newlines(e),
            Event::PI(e) => count_newlines(e),
            Event::Decl(_) | Event::GeneralRef(_) | Event::Eof => 0,
        };
        // Text errors point at the first non-blank character, not at the preceding newline.
        let error_line = match &ev {
            Event::Text(t) => {
                let blank = t.len() - t.trim_start().len();
                line.saturating_add(count_newlines(&t[..blank]))
            }
            _ => line,
        };
        let is_eof = matches!(ev, Event::Eof);
        match p.event(ev) {
            Ok(Flow::Continue) => {}
            Ok(Flow::Stop) => return Ok(()),
            Err(kind) => {
                return Err(XmlError {
                    line: error_line,
                    offset: start_offset,
                    kind,
                })
            }
        }
        if is_eof {
            return Ok(());
        }
        line = line.saturating_add(raw_newlines);
    }
}

fn count_newlines(s: &str) -> u64 {
    s.bytes().filter(|&b| b == b'\n').count() as u64
}

/// Parses thin_dump XML into memory.
pub fn read_xml<R: BufRead>(input: R) -> Result<Metadata, XmlError> {
    let mut c = MetadataCollector::new();
    parse_xml(input, &mut c)?;
    // parse_xml only succeeds after a complete superblock.
    c.into_metadata().ok_or(XmlError {
        line: 1,
        offset: 0,
        kind: XmlErrorKind::UnexpectedEof("no <superblock>"),
    })
}

/// Parses thin_dump XML text into memory.
pub fn read_xml_str(s: &str) -> Result<Metadata, XmlError> {
    read_xml(s.as_bytes())
}

impl Parser<'_> {
    fn ctx(&self) -> Ctx {
        self.stack.last().copied().unwrap_or(Ctx::Done)
    }

    fn event(&mut self, ev: Event<'_>) -> Result<Flow, XmlErrorKind> {
        match ev {
            Event::Start(e) => self.element(&e, false),
            Event::Empty(e) => self.element(&e, true),
            Event::End(_) => self.end(),
            Event::Text(t) => {
                if t.bytes().all(|b| b.is_ascii_whitespace()) {
                    Ok(Flow::Continue)
                } else {
                    Err(XmlErrorKind::UnexpectedText(excerpt(&t)))
                }
            }
            Event::GeneralRef(r) => Err(XmlErrorKind::UnexpectedText(format!("&{};", &*r))),
            Event::CData(c) => Err(XmlErrorKind::UnexpectedText(excerpt(&c))),
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {
                Ok(Flow::Continue)
            }
            Event::Eof => match self.ctx() {
                Ctx::Done => {
                    visit!(self.visitor.eof());
                    Ok(Flow::Continue)
                }
                Ctx::Top => Err(XmlErrorKind::UnexpectedEof("no <superblock>")),
                _ => Err(XmlErrorKind::UnexpectedEof("unclosed elements")),
            },
        }
    }

    fn end(&mut self) -> Result<Flow, XmlErrorKind> {
        // quick-xml has checked that the end tag matches the open one.
        let ctx = self.stack.pop().unwrap_or(Ctx::Done);
        match ctx {
            Ctx::Superblock => {
                self.stack.push(Ctx::Done);
                visit!(self.visitor.superblock_e());
            }
            Ctx::Device => visit!(self.visitor.device_e()),
            Ctx::Def => self.finish_def()?,
            Ctx::Leaf => {}
            Ctx::Top | Ctx::Done => {
                return Err(XmlErrorKind::Syntax("unmatched end tag".into()));
            }
        }
        Ok(Flow::Continue)
    }

    fn finish_def(&mut self) -> Result<(), XmlErrorKind> {
        if let Some((name, maps)) = self.current_def.take() {
            if self.defs.contains_key(&name) {
                return Err(XmlErrorKind::DuplicateDef(name));
            }
            self.defs.insert(name, maps);
        }
        Ok(())
    }

    fn element(&mut self, e: &BytesStart<'_>, empty: bool) -> Result<Flow, XmlErrorKind> {
        let name = e.name().into_inner();
        let ctx = self.ctx();
        let unexpected = |context| {
            Err(XmlErrorKind::UnexpectedElement {
                element: name.to_owned(),
                context,
            })
        };
        let flow = match name {
            "superblock" => {
                if ctx != Ctx::Top {
                    return unexpected("here: only one <superblock>, at the top");
                }
                let sb = parse_superblock(e)?;
                self.stack.pop();
                self.stack.push(Ctx::Superblock);
                visit!(self.visitor.superblock_b(&sb));
                if empty {
                    self.stack.pop();
                    self.stack.push(Ctx::Done);
                    visit!(self.visitor.superblock_e());
                }
                Flow::Continue
            }
            "device" => {
                if ctx != Ctx::Superblock {
                    return unexpected("outside <superblock> or inside another element");
                }
                let d = parse_device(e)?;
                visit!(self.visitor.device_b(&d));
                if empty {
                    visit!(self.visitor.device_e());
                } else {
                    self.stack.push(Ctx::Device);
                }
                Flow::Continue
            }
            "single_mapping" | "range_mapping" => {
                let m = if name == "single_mapping" {
                    parse_single(e)?
                } else {
                    parse_range(e)?
                };
                match ctx {
                    Ctx::Device => visit!(self.visitor.map(&m)),
                    Ctx::Def => {
                        if let Some((_, maps)) = &mut self.current_def {
                            maps.push(m);
                        }
                    }
                    _ => return unexpected("outside <device> or <def>"),
                }
                if !empty {
                    self.stack.push(Ctx::Leaf);
                }
                Flow::Continue
            }
            "def" => {
                if ctx != Ctx::Superblock {
                    return unexpected("outside <superblock> or inside another element");
                }
                let name = parse_name(e, "def")?;
                if self.defs.contains_key(&name) {
                    return Err(XmlErrorKind::DuplicateDef(name));
                }
                self.current_def = Some((name, Vec::new()));
                if empty {
                    self.finish_def()?;
                } else {
                    self.stack.push(Ctx::Def);
                }
                Flow::Continue
            }
            "ref" => {
                if ctx != Ctx::Device {
                    return unexpected("outside <device>");
                }
                let name = parse_name(e, "ref")?;
                let Some(maps) = self.defs.get(&name) else {
                    return Err(XmlErrorKind::UndefinedRef(name));
                };
                for m in maps {
                    visit!(self.visitor.map(m));
                }
                if !empty {
                    self.stack.push(Ctx::Leaf);
                }
                Flow::Continue
            }
            other => return Err(XmlErrorKind::UnknownElement(other.to_owned())),
        };
        Ok(flow)
    }
}

fn excerpt(s: &str) -> String {
    let t = s.trim();
    match t.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t.to_owned(),
    }
}

/// The attributes of `e` named in `names`, by index. Unknown and duplicate attributes are
/// errors; values are unescaped and normalised.
fn collect_attrs<'a, const N: usize>(
    e: &'a BytesStart<'_>,
    element: &'static str,
    names: [&'static str; N],
) -> Result<[Option<Cow<'a, str>>; N], XmlErrorKind> {
    let mut vals: [Option<Cow<'a, str>>; N] = std::array::from_fn(|_| None);
    let mut attrs = e.attributes();
    // Duplicates are detected below, where the attribute's name is known for the message.
    attrs.with_checks(false);
    for a in attrs {
        let a = a.map_err(|err| XmlErrorKind::Syntax(format!("<{element}>: {err}")))?;
        let key = a.key.into_inner();
        let Some(i) = names.iter().position(|n| *n == key) else {
            return Err(XmlErrorKind::UnknownAttribute {
                element,
                attribute: key.to_owned(),
            });
        };
        if vals[i].is_some() {
            return Err(XmlErrorKind::DuplicateAttribute {
                element,
                attribute: names[i],
            });
        }
        let v = a
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|err| XmlErrorKind::Syntax(format!("<{element}> `{key}`: {err}")))?;
        vals[i] = Some(v);
    }
    Ok(vals)
}

fn required<'a>(
    v: &'a Option<Cow<'_, str>>,
    element: &'static str,
    attribute: &'static str,
) -> Result<&'a str, XmlErrorKind> {
    v.as_deref()
        .ok_or(XmlErrorKind::MissingAttribute { element, attribute })
}

/// Parses an unsigned decimal integer that must fit in `T`.
fn number<T: TryFrom<u64>>(
    value: &str,
    element: &'static str,
    attribute: &'static str,
) -> Result<T, XmlErrorKind> {
    let invalid = |reason| XmlErrorKind::InvalidAttribute {
        element,
        attribute,
        value: excerpt(value),
        reason,
    };
    let overflow = || XmlErrorKind::Overflow {
        element,
        attribute,
        value: excerpt(value),
        ty: std::any::type_name::<T>(),
    };
    if value.is_empty() {
        return Err(invalid("empty, expected an unsigned decimal integer"));
    }
    let mut n: u64 = 0;
    for b in value.bytes() {
        if !b.is_ascii_digit() {
            return Err(invalid("not an unsigned decimal integer"));
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or_else(overflow)?;
    }
    T::try_from(n).map_err(|_| overflow())
}

fn num_attr<T: TryFrom<u64>>(
    v: &Option<Cow<'_, str>>,
    element: &'static str,
    attribute: &'static str,
) -> Result<T, XmlErrorKind> {
    number(required(v, element, attribute)?, element, attribute)
}

fn opt_num_attr<T: TryFrom<u64>>(
    v: &Option<Cow<'_, str>>,
    element: &'static str,
    attribute: &'static str,
) -> Result<Option<T>, XmlErrorKind> {
    v.as_deref()
        .map(|s| number(s, element, attribute))
        .transpose()
}

fn parse_superblock(e: &BytesStart<'_>) -> Result<Superblock, XmlErrorKind> {
    const E: &str = "superblock";
    let a = collect_attrs(e, E, SUPERBLOCK_ATTRS)?;
    Ok(Superblock {
        uuid: required(&a[0], E, "uuid")?.to_owned(),
        time: num_attr(&a[1], E, "time")?,
        transaction: num_attr(&a[2], E, "transaction")?,
        flags: opt_num_attr(&a[3], E, "flags")?,
        version: opt_num_attr(&a[4], E, "version")?,
        data_block_size: num_attr(&a[5], E, "data_block_size")?,
        nr_data_blocks: num_attr(&a[6], E, "nr_data_blocks")?,
        metadata_snap: opt_num_attr(&a[7], E, "metadata_snap")?,
    })
}

fn parse_device(e: &BytesStart<'_>) -> Result<Device, XmlErrorKind> {
    const E: &str = "device";
    let a = collect_attrs(e, E, DEVICE_ATTRS)?;
    Ok(Device {
        dev_id: num_attr(&a[0], E, "dev_id")?,
        mapped_blocks: num_attr(&a[1], E, "mapped_blocks")?,
        transaction: num_attr(&a[2], E, "transaction")?,
        creation_time: num_attr(&a[3], E, "creation_time")?,
        snap_time: num_attr(&a[4], E, "snap_time")?,
    })
}

fn parse_single(e: &BytesStart<'_>) -> Result<Map, XmlErrorKind> {
    const E: &str = "single_mapping";
    let a = collect_attrs(e, E, SINGLE_ATTRS)?;
    Ok(Map {
        thin_begin: num_attr(&a[0], E, "origin_block")?,
        data_begin: num_attr(&a[1], E, "data_block")?,
        time: num_attr(&a[2], E, "time")?,
        len: 1,
    })
}

fn parse_range(e: &BytesStart<'_>) -> Result<Map, XmlErrorKind> {
    const E: &str = "range_mapping";
    let a = collect_attrs(e, E, RANGE_ATTRS)?;
    let m = Map {
        thin_begin: num_attr(&a[0], E, "origin_begin")?,
        data_begin: num_attr(&a[1], E, "data_begin")?,
        len: num_attr(&a[2], E, "length")?,
        time: num_attr(&a[3], E, "time")?,
    };
    let invalid = |attribute, reason| XmlErrorKind::InvalidAttribute {
        element: E,
        attribute,
        value: m.len.to_string(),
        reason,
    };
    if m.len == 0 {
        return Err(invalid("length", "a range must have length >= 1"));
    }
    if m.thin_begin.checked_add(m.len).is_none() {
        return Err(invalid("length", "origin_begin + length overflows u64"));
    }
    if m.data_begin.checked_add(m.len).is_none() {
        return Err(invalid("length", "data_begin + length overflows u64"));
    }
    Ok(m)
}

fn parse_name(e: &BytesStart<'_>, element: &'static str) -> Result<String, XmlErrorKind> {
    let a = collect_attrs(e, element, NAME_ATTRS)?;
    Ok(required(&a[0], element, "name")?.to_owned())
}

#[cfg(test)]
mod tests;
