use super::*;
use crate::ir::DeviceMappings;

/// Spec §13's worked example; Debian 0.9 restores and dumps it byte for byte.
const EXAMPLE: &str = r#"<superblock uuid="" time="2" transaction="7" flags="0" version="2" data_block_size="128" nr_data_blocks="1024">
  <device dev_id="0" mapped_blocks="4" transaction="0" creation_time="0" snap_time="2">
    <range_mapping origin_begin="0" data_begin="0" length="3" time="0"/>
    <single_mapping origin_block="10" data_block="7" time="0"/>
  </device>
  <device dev_id="1" mapped_blocks="4" transaction="3" creation_time="1" snap_time="1">
    <range_mapping origin_begin="0" data_begin="0" length="3" time="0"/>
    <single_mapping origin_block="10" data_block="8" time="1"/>
  </device>
  <device dev_id="2" mapped_blocks="4" transaction="5" creation_time="2" snap_time="2">
    <range_mapping origin_begin="0" data_begin="0" length="3" time="0"/>
    <single_mapping origin_block="10" data_block="7" time="0"/>
  </device>
  <device dev_id="7" mapped_blocks="0" transaction="5" creation_time="2" snap_time="2">
  </device>
</superblock>
"#;

#[test]
fn example_round_trips_byte_for_byte() {
    let md = read_xml_str(EXAMPLE).unwrap();
    assert_eq!(md.devices.len(), 4);
    assert_eq!(md.superblock.version, Some(2));
    assert_eq!(md.superblock.metadata_snap, None);
    assert_eq!(md.devices[1].mappings[1], Map::single(10, 8, 1));
    assert_eq!(to_xml_string(&md), EXAMPLE);
}

#[test]
fn writer_merges_single_mappings() {
    let md = read_xml_str(EXAMPLE).unwrap();
    let mut singles = md.clone();
    for d in &mut singles.devices {
        d.mappings = d
            .mappings
            .iter()
            .flat_map(|m| {
                (0..m.len).map(move |k| Map::single(m.thin_begin + k, m.data_begin + k, m.time))
            })
            .collect();
    }
    assert_eq!(singles.devices[0].mappings.len(), 4);
    assert_eq!(to_xml_string(&singles), EXAMPLE);
    assert_eq!(singles.canonical(), md);
}

#[test]
fn writer_splits_on_time_and_discontinuity() {
    let md = Metadata {
        superblock: Superblock {
            data_block_size: 128,
            nr_data_blocks: 100,
            ..Default::default()
        },
        devices: vec![DeviceMappings {
            device: Device::default(),
            mappings: vec![
                Map::single(0, 5, 0),
                Map::single(1, 6, 1),
                Map::single(2, 8, 1),
                Map::single(3, 9, 1),
                Map::single(5, 10, 1),
            ],
        }],
    };
    let expected = r#"<superblock uuid="" time="0" transaction="0" flags="0" version="1" data_block_size="128" nr_data_blocks="100">
  <device dev_id="0" mapped_blocks="0" transaction="0" creation_time="0" snap_time="0">
    <single_mapping origin_block="0" data_block="5" time="0"/>
    <single_mapping origin_block="1" data_block="6" time="1"/>
    <range_mapping origin_begin="2" data_begin="8" length="2" time="1"/>
    <single_mapping origin_block="5" data_block="10" time="1"/>
  </device>
</superblock>
"#;
    assert_eq!(to_xml_string(&md), expected);
}

#[test]
fn optional_attributes() {
    let xml = r#"<superblock uuid="a&amp;b&quot;&lt;&#10;" time="0" transaction="1" data_block_size="128" nr_data_blocks="100" metadata_snap="77">
</superblock>
"#;
    let md = read_xml_str(xml).unwrap();
    assert_eq!(md.superblock.uuid, "a&b\"<\n");
    assert_eq!(md.superblock.flags, None);
    assert_eq!(md.superblock.version, None);
    assert_eq!(md.superblock.metadata_snap, Some(77));
    let out = to_xml_string(&md);
    assert_eq!(
        out,
        "<superblock uuid=\"a&amp;b&quot;&lt;&#10;\" time=\"0\" transaction=\"1\" flags=\"0\" version=\"1\" data_block_size=\"128\" nr_data_blocks=\"100\" metadata_snap=\"77\">\n</superblock>\n"
    );
    let again = read_xml_str(&out).unwrap();
    assert_eq!(again.superblock.uuid, md.superblock.uuid);
    assert_eq!(again.normalized_09().superblock.version, Some(1));
}

#[test]
fn accepts_declaration_comments_and_long_forms() {
    let xml = r#"<?xml version="1.0"?>
<!-- a comment -->
<superblock uuid="" time="0" transaction="1" data_block_size="128" nr_data_blocks="100">
  <device dev_id="3" mapped_blocks="1" transaction="0" creation_time="0" snap_time="0"/>
  <device dev_id="4" mapped_blocks="1" transaction="0" creation_time="0" snap_time="0">
    <single_mapping origin_block="1" data_block="2" time="0"></single_mapping>
    <!-- another -->
  </device>
</superblock>
"#;
    let md = read_xml_str(xml).unwrap();
    assert_eq!(md.devices.len(), 2);
    assert!(md.devices[0].mappings.is_empty());
    assert_eq!(md.devices[1].mappings, vec![Map::single(1, 2, 0)]);
    // A self-closed superblock is a pool without devices.
    let md = read_xml_str(
        r#"<superblock uuid="" time="0" transaction="1" data_block_size="128" nr_data_blocks="0"/>"#,
    )
    .unwrap();
    assert!(md.devices.is_empty());
}

#[test]
fn expands_1x_def_and_ref() {
    let xml = r#"<superblock uuid="" time="1" transaction="2" version="2" data_block_size="128" nr_data_blocks="100">
  <def name="42">
    <range_mapping origin_begin="0" data_begin="10" length="4" time="0"/>
    <single_mapping origin_block="9" data_block="20" time="0"/>
  </def>
  <def name="empty"/>
  <device dev_id="0" mapped_blocks="6" transaction="0" creation_time="0" snap_time="1">
    <ref name="42"/>
    <single_mapping origin_block="10" data_block="30" time="1"/>
  </device>
  <device dev_id="1" mapped_blocks="5" transaction="1" creation_time="1" snap_time="1">
    <ref name="empty"/>
    <ref name="42"/>
  </device>
</superblock>
"#;
    let md = read_xml_str(xml).unwrap();
    let run = Map {
        thin_begin: 0,
        data_begin: 10,
        time: 0,
        len: 4,
    };
    assert_eq!(
        md.devices[0].mappings,
        vec![run, Map::single(9, 20, 0), Map::single(10, 30, 1)]
    );
    assert_eq!(md.devices[1].mappings, vec![run, Map::single(9, 20, 0)]);
}

#[test]
fn visitor_stop_ends_parsing_quietly() {
    struct StopAtSecondDevice(u32);
    impl MetadataVisitor for StopAtSecondDevice {
        fn superblock_b(&mut self, _: &Superblock) -> Result<Visit> {
            Ok(Visit::Continue)
        }
        fn superblock_e(&mut self) -> Result<Visit> {
            panic!("parsing went on after Stop")
        }
        fn device_b(&mut self, _: &Device) -> Result<Visit> {
            self.0 += 1;
            Ok(if self.0 == 2 {
                Visit::Stop
            } else {
                Visit::Continue
            })
        }
        fn device_e(&mut self) -> Result<Visit> {
            Ok(Visit::Continue)
        }
        fn map(&mut self, _: &Map) -> Result<Visit> {
            Ok(Visit::Continue)
        }
        fn eof(&mut self) -> Result<Visit> {
            panic!("parsing went on after Stop")
        }
    }
    let mut v = StopAtSecondDevice(0);
    parse_xml(EXAMPLE.as_bytes(), &mut v).unwrap();
    assert_eq!(v.0, 2);
}

#[test]
fn visitor_errors_are_reported_with_line() {
    struct FailOnMap;
    impl MetadataVisitor for FailOnMap {
        fn superblock_b(&mut self, _: &Superblock) -> Result<Visit> {
            Ok(Visit::Continue)
        }
        fn superblock_e(&mut self) -> Result<Visit> {
            Ok(Visit::Continue)
        }
        fn device_b(&mut self, _: &Device) -> Result<Visit> {
            Ok(Visit::Continue)
        }
        fn device_e(&mut self) -> Result<Visit> {
            Ok(Visit::Continue)
        }
        fn map(&mut self, _: &Map) -> Result<Visit> {
            anyhow::bail!("no space left")
        }
        fn eof(&mut self) -> Result<Visit> {
            Ok(Visit::Continue)
        }
    }
    let err = parse_xml(EXAMPLE.as_bytes(), &mut FailOnMap).unwrap_err();
    assert_eq!(err.line, 3);
    assert!(matches!(err.kind, XmlErrorKind::Visitor(_)));
    assert!(err.to_string().contains("no space left"), "{err}");
}

const SB: &str =
    r#"<superblock uuid="" time="0" transaction="1" data_block_size="128" nr_data_blocks="100">"#;
const DEV: &str =
    r#"  <device dev_id="0" mapped_blocks="0" transaction="0" creation_time="0" snap_time="0">"#;

fn with_mapping(m: &str) -> String {
    format!("{SB}\n{DEV}\n    {m}\n  </device>\n</superblock>\n")
}

fn err_of(xml: &str) -> XmlError {
    match read_xml_str(xml) {
        Ok(md) => panic!("accepted malformed input {xml:?}: {md:?}"),
        Err(e) => e,
    }
}

#[test]
fn malformed_inputs_give_clear_errors() {
    use XmlErrorKind as K;
    type Check = fn(&XmlErrorKind) -> bool;
    let cases: Vec<(String, u64, Check, &str)> = vec![
        (String::new(), 1, |k| matches!(k, K::UnexpectedEof(_)), "no <superblock>"),
        ("   \n  ".into(), 2, |k| matches!(k, K::UnexpectedEof(_)), "no <superblock>"),
        (format!("{SB}\n"), 2, |k| matches!(k, K::UnexpectedEof(_) | K::Syntax(_)), ""),
        (format!("{SB}\n{DEV}\n</superblock>\n"), 3, |k| matches!(k, K::Syntax(_)), "malformed"),
        (format!("{SB}\n  <device dev_id=\"0\"\n"), 2, |k| matches!(k, K::Syntax(_)), "malformed"),
        (format!("{SB}\n  <bogus/>\n</superblock>\n"), 2, |k| matches!(k, K::UnknownElement(_)), "unknown element <bogus>"),
        ("<device/>".into(), 1, |k| matches!(k, K::UnexpectedElement { .. }), "not allowed"),
        (format!("{SB}\n{SB}\n"), 2, |k| matches!(k, K::UnexpectedElement { .. }), "only one"),
        (format!("{SB}\n</superblock>\n{SB}\n</superblock>\n"), 3, |k| matches!(k, K::UnexpectedElement { .. }), "superblock"),
        (format!("{SB}\n  <single_mapping origin_block=\"1\" data_block=\"2\" time=\"0\"/>\n</superblock>"), 2, |k| matches!(k, K::UnexpectedElement { .. }), "outside <device>"),
        (format!("{SB}\n{DEV}\n{DEV}\n"), 3, |k| matches!(k, K::UnexpectedElement { .. }), "device"),
        (r#"<superblock time="0" transaction="1" data_block_size="128" nr_data_blocks="100"/>"#.into(), 1, |k| matches!(k, K::MissingAttribute { attribute: "uuid", .. }), "missing attribute `uuid`"),
        (r#"<superblock uuid="" time="0" transaction="1" data_block_size="128"/>"#.into(), 1, |k| matches!(k, K::MissingAttribute { attribute: "nr_data_blocks", .. }), "nr_data_blocks"),
        (r#"<superblock uuid="" time="0" time="0" transaction="1" data_block_size="128" nr_data_blocks="1"/>"#.into(), 1, |k| matches!(k, K::DuplicateAttribute { attribute: "time", .. }), "duplicate attribute `time`"),
        (r#"<superblock uuid="" color="red" time="0" transaction="1" data_block_size="128" nr_data_blocks="1"/>"#.into(), 1, |k| matches!(k, K::UnknownAttribute { .. }), "unknown attribute `color`"),
        (r#"<superblock uuid="" time="-1" transaction="1" data_block_size="128" nr_data_blocks="1"/>"#.into(), 1, |k| matches!(k, K::InvalidAttribute { attribute: "time", .. }), "\"-1\""),
        (r#"<superblock uuid="" time="" transaction="1" data_block_size="128" nr_data_blocks="1"/>"#.into(), 1, |k| matches!(k, K::InvalidAttribute { .. }), "empty"),
        (r#"<superblock uuid="" time="1 " transaction="1" data_block_size="128" nr_data_blocks="1"/>"#.into(), 1, |k| matches!(k, K::InvalidAttribute { .. }), "decimal"),
        (r#"<superblock uuid="" time="0x10" transaction="1" data_block_size="128" nr_data_blocks="1"/>"#.into(), 1, |k| matches!(k, K::InvalidAttribute { .. }), "decimal"),
        (r#"<superblock uuid="" time="4294967296" transaction="1" data_block_size="128" nr_data_blocks="1"/>"#.into(), 1, |k| matches!(k, K::Overflow { ty: "u32", .. }), "u32"),
        (r#"<superblock uuid="" time="0" transaction="18446744073709551616" data_block_size="128" nr_data_blocks="1"/>"#.into(), 1, |k| matches!(k, K::Overflow { ty: "u64", .. }), "u64"),
        (r#"<superblock uuid="" time="0" transaction=1 data_block_size="128" nr_data_blocks="1"/>"#.into(), 1, |k| matches!(k, K::Syntax(_)), "malformed"),
        (r#"<superblock uuid="&bogus;" time="0" transaction="1" data_block_size="128" nr_data_blocks="1"/>"#.into(), 1, |k| matches!(k, K::Syntax(_)), "uuid"),
        (with_mapping(r#"<single_mapping origin_block="1" data_block="2"/>"#), 3, |k| matches!(k, K::MissingAttribute { attribute: "time", .. }), "<single_mapping>: missing attribute `time`"),
        (with_mapping(r#"<range_mapping origin_begin="1" data_begin="2" length="0" time="0"/>"#), 3, |k| matches!(k, K::InvalidAttribute { attribute: "length", .. }), "length >= 1"),
        (with_mapping(r#"<range_mapping origin_begin="18446744073709551615" data_begin="2" length="2" time="0"/>"#), 3, |k| matches!(k, K::InvalidAttribute { .. }), "overflows"),
        (with_mapping(r#"<range_mapping origin_begin="1" data_begin="18446744073709551615" length="1" time="0"/>"#), 3, |k| matches!(k, K::InvalidAttribute { .. }), "overflows"),
        (with_mapping(r#"<single_mapping origin_block="1" data_block="2" time="16777216000"/>"#), 3, |k| matches!(k, K::Overflow { .. }), "time"),
        (with_mapping(r#"<ref name="nope"/>"#), 3, |k| matches!(k, K::UndefinedRef(_)), "nope"),
        (with_mapping("garbage"), 3, |k| matches!(k, K::UnexpectedText(_)), "garbage"),
        (with_mapping("&amp;"), 3, |k| matches!(k, K::UnexpectedText(_)), "&amp;"),
        (with_mapping("<![CDATA[x]]>"), 3, |k| matches!(k, K::UnexpectedText(_)), "x"),
        (with_mapping(r#"<single_mapping origin_block="1" data_block="2" time="0"><single_mapping origin_block="1" data_block="2" time="0"/></single_mapping>"#), 3, |k| matches!(k, K::UnexpectedElement { .. }), "single_mapping"),
        (format!("{SB}\n  <def name=\"a\"/>\n  <def name=\"a\"/>\n</superblock>"), 3, |k| matches!(k, K::DuplicateDef(_)), "twice"),
        (format!("{SB}\n  <def/>\n</superblock>"), 2, |k| matches!(k, K::MissingAttribute { attribute: "name", .. }), "name"),
        (format!("{SB}\n{DEV}\n  <def name=\"a\"/>\n"), 3, |k| matches!(k, K::UnexpectedElement { .. }), "def"),
        (format!("{SB}\n</superblock>\ntrailing"), 3, |k| matches!(k, K::UnexpectedText(_)), "trailing"),
        (format!("{SB}\n</device>\n"), 2, |k| matches!(k, K::Syntax(_)), "malformed"),
        ("<superblock uuid=\"abc".into(), 1, |k| matches!(k, K::Syntax(_)), "malformed"),
        (
            "<superblock uuid=\"\"\n    time=\"0\"\n    transaction=\"x\" data_block_size=\"128\" nr_data_blocks=\"1\"/>".into(),
            1,
            |k| matches!(k, K::InvalidAttribute { attribute: "transaction", .. }),
            "transaction",
        ),
    ];
    for (xml, line, check, needle) in cases {
        let err = err_of(&xml);
        assert!(check(&err.kind), "{xml:?}: unexpected error kind {err:?}");
        assert_eq!(err.line, line, "{xml:?}: wrong line in {err}");
        assert!(
            err.to_string().contains(needle),
            "{xml:?}: {err} lacks {needle:?}"
        );
    }
}

#[test]
fn invalid_utf8_is_an_error() {
    let mut bytes = SB.as_bytes().to_vec();
    bytes.extend_from_slice(b"\n  <dev\xffice/>\n</superblock>\n");
    assert!(read_xml(&bytes[..]).is_err());
}

/// xorshift64*: deterministic, dependency-free randomness for the mutation test.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn never_panics_on_truncated_or_mutated_input() {
    let src = format!(
        "{}<!-- c -->\n",
        EXAMPLE.replace(
            "  <device dev_id=\"7\"",
            "  <def name=\"d\">\n    <single_mapping origin_block=\"1\" data_block=\"2\" time=\"0\"/>\n  </def>\n  <device dev_id=\"7\""
        )
    );
    let bytes = src.as_bytes();
    for cut in 0..bytes.len() {
        let _ = read_xml(&bytes[..cut]);
    }
    let alphabet: &[u8] = b"<>/=\"'&;!?-[] \n0123456789xabcdefghijklmnopqrstuvwxyz_\xff\x00";
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..20_000 {
        let mut m = bytes.to_vec();
        for _ in 0..1 + rng.below(4) {
            let pos = rng.below(m.len());
            match rng.below(3) {
                0 => m[pos] = alphabet[rng.below(alphabet.len())],
                1 => {
                    m.remove(pos);
                }
                _ => m.insert(pos, alphabet[rng.below(alphabet.len())]),
            }
        }
        if let Ok(md) = read_xml(&m[..]) {
            // Whatever parses must write and re-parse to the same pool.
            assert_eq!(
                read_xml_str(&to_xml_string(&md)).unwrap().canonical(),
                md.canonical()
            );
        }
    }
}
