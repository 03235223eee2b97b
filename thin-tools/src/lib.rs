//! dm-thin metadata tools built on `thin-core`.
//!
//! * [`ir`] — the event model of a pool (superblock, devices, mapping runs) and the visitor
//!   trait that dump, restore and format conversion share;
//! * [`xml`] — the `thin_dump`/`thin_restore` XML format: a writer byte-identical to Debian
//!   0.9 and a streaming, strict parser;
//! * [`human_readable`] — `thin_dump -f human_readable` output, byte-identical to 0.9;
//! * [`getopt`] — GNU `getopt_long` command-line rules, as the 0.9 tools parse them;
//! * [`meta_open`] — opening metadata read-only with 0.9's error messages.
#![forbid(unsafe_code)]

pub mod commands;
pub mod dump;
pub mod getopt;
pub mod human_readable;
pub mod ir;
pub mod meta_open;
pub mod xml;
