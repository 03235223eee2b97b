//! Streaming PDU framing: bytes in arbitrary chunks in, complete PDUs or a fatal error out.
//!
//! Usage (sans I/O):
//! ```
//! # use nvmf_target::wire::pdu::{PduDecoder, RxConfig};
//! let mut dec = PduDecoder::new(RxConfig::controller());
//! let mut input: &[u8] = &[/* bytes from the socket */];
//! loop {
//!     let used = dec.push(input);
//!     input = &input[used..];
//!     match dec.poll() {
//!         Ok(Some(_pdu)) => { /* handle */ }
//!         Ok(None) => break, // all input consumed, PDU incomplete
//!         Err(e) if e.is_fatal() => { /* send C2HTermReq with dec.offending_header(), close */ break }
//!         Err(_data_digest) => { /* fail that command with 0x022, carry on */ }
//!     }
//! }
//! ```
//!
//! Invariants:
//! * `push` never consumes bytes past the end of the current PDU, so configuration changes
//!   between PDUs (digests after ICReq/ICResp) apply exactly from the next PDU on.
//! * The result sequence does not depend on how the input is chunked.
//! * Memory is one buffer of `RxConfig::max_plen()` bytes, allocated when the configuration
//!   is set; oversized PDUs are refused from their 8-byte common header.
//! * After a fatal error the decoder consumes nothing and keeps returning the error.
//! * The first PDU must be ICReq (controller) / ICResp (host); a second one is a sequence
//!   error (FES 0x02). TermReqs are accepted in every state.

use super::{
    check_common_header, check_header, CommonHeader, FatalError, FatalReason, Fes, Frame, Pdu,
    PduError, PduType, Role, RxConfig, CH_LEN, TERM_MAX_HEADER,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Reading the 8-byte common header.
    Ch,
    /// Reading the rest of the header and its digest.
    Header,
    /// Reading padding, data and data digest.
    Body,
    /// A complete PDU is buffered, waiting for `poll`.
    Ready,
    /// The buffered PDU was handed out; the next `push` starts a new one.
    Delivered,
}

/// Incremental NVMe/TCP PDU decoder for one connection.
#[derive(Debug)]
pub struct PduDecoder {
    cfg: RxConfig,
    buf: Vec<u8>,
    filled: usize,
    target: usize,
    stage: Stage,
    frame: Option<Frame>,
    ic_done: bool,
    fatal: Option<FatalError>,
    /// Total bytes consumed (for diagnostics).
    consumed_total: u64,
}

impl PduDecoder {
    pub fn new(cfg: RxConfig) -> Self {
        let mut d = Self {
            cfg,
            buf: Vec::new(),
            filled: 0,
            target: CH_LEN,
            stage: Stage::Ch,
            frame: None,
            ic_done: false,
            fatal: None,
            consumed_total: 0,
        };
        d.size_buffer();
        d
    }

    fn size_buffer(&mut self) {
        let need = usize::try_from(self.cfg.max_plen())
            .unwrap_or(usize::MAX)
            .max(24 + TERM_MAX_HEADER);
        if self.buf.len() < need {
            self.buf.resize(need, 0);
        }
    }

    /// Current receive configuration.
    pub fn config(&self) -> &RxConfig {
        &self.cfg
    }

    /// Changes the configuration (e.g. the ICD limit once the queue type is known). Takes
    /// effect from the next PDU; do not call in the middle of one.
    pub fn set_config(&mut self, cfg: RxConfig) {
        self.cfg = cfg;
        self.size_buffer();
    }

    /// Whether ICReq (controller) / ICResp (host) was received.
    pub fn ic_done(&self) -> bool {
        self.ic_done
    }

    /// The fatal error, once one happened.
    pub fn fatal_error(&self) -> Option<&FatalError> {
        self.fatal.as_ref()
    }

    /// Bytes consumed since creation.
    pub fn consumed_total(&self) -> u64 {
        self.consumed_total
    }

    /// The header bytes of the PDU being decoded (at most 128, as much as was received):
    /// what a C2HTermReq copies after a fatal error.
    pub fn offending_header(&self) -> &[u8] {
        let hlen = self.frame.map_or(TERM_MAX_HEADER, |f| usize::from(f.hlen));
        let n = self.filled.min(hlen).min(TERM_MAX_HEADER);
        self.buf.get(..n).unwrap_or_default()
    }

    /// The C2HTermReq to send after a fatal error (None while no fatal error happened).
    pub fn term_req(&self) -> Option<super::TermReq<'_>> {
        self.fatal
            .as_ref()
            .map(|e| super::TermReq::c2h_for(e, self.offending_header()))
    }

    fn sequence_error(&self, raw_type: u8) -> Option<FatalError> {
        let t = PduType::from_u8(raw_type)?;
        let (ic, ours) = match self.cfg.role {
            Role::Controller => (PduType::IcReq, t.host_to_controller()),
            Role::Host => (PduType::IcResp, !t.host_to_controller()),
        };
        let is_term = matches!(t, PduType::H2CTermReq | PduType::C2HTermReq);
        if !ours || is_term || (t == ic) != self.ic_done {
            return None;
        }
        Some(FatalError {
            fes: Fes::PduSequenceError,
            fei: 0,
            reason: FatalReason::OutOfSequence,
            pdu_type: raw_type,
        })
    }

    /// Consumes bytes of `input` up to the end of the current PDU (or until a fatal error)
    /// and returns how many were used. Returns 0 while a complete PDU waits for `poll`.
    pub fn push(&mut self, input: &[u8]) -> usize {
        if self.fatal.is_some() || self.stage == Stage::Ready {
            return 0;
        }
        if self.stage == Stage::Delivered {
            self.size_buffer();
            self.filled = 0;
            self.target = CH_LEN;
            self.stage = Stage::Ch;
            self.frame = None;
        }
        let mut used = 0usize;
        loop {
            let rest = input.get(used..).unwrap_or_default();
            let take = self.target.saturating_sub(self.filled).min(rest.len());
            let (Some(dst), Some(src)) = (
                self.buf.get_mut(self.filled..self.filled + take),
                rest.get(..take),
            ) else {
                // Unreachable: the buffer holds max_plen bytes and target <= max_plen.
                break;
            };
            dst.copy_from_slice(src);
            self.filled += take;
            used += take;
            if self.filled < self.target {
                break;
            }
            match self.stage {
                Stage::Ch => {
                    let result = CommonHeader::parse(self.buf.get(..CH_LEN).unwrap_or_default())
                        .map_err(|_| FatalError {
                            fes: Fes::InvalidHeaderField,
                            fei: 4,
                            reason: FatalReason::BadPlen,
                            pdu_type: 0,
                        })
                        .and_then(|ch| {
                            let f = check_common_header(&ch, &self.cfg)?;
                            match self.sequence_error(ch.pdu_type) {
                                Some(e) => Err(e),
                                None => Ok(f),
                            }
                        });
                    match result {
                        Ok(frame) => {
                            self.frame = Some(frame);
                            self.target = frame.header_len() as usize;
                            self.stage = Stage::Header;
                        }
                        Err(e) => {
                            self.fatal = Some(e);
                            break;
                        }
                    }
                }
                Stage::Header => {
                    let Some(frame) = self.frame else { break };
                    if let Err(e) = check_header(
                        &frame,
                        self.buf.get(..self.filled).unwrap_or_default(),
                        &self.cfg,
                    ) {
                        self.fatal = Some(e);
                        break;
                    }
                    self.target = frame.plen as usize;
                    self.stage = Stage::Body;
                }
                Stage::Body => {
                    self.stage = Stage::Ready;
                    break;
                }
                Stage::Ready | Stage::Delivered => break,
            }
        }
        self.consumed_total += used as u64;
        used
    }

    /// Returns the buffered PDU once complete (`Ok(None)` if more bytes are needed), a
    /// non-fatal [`PduError::DataDigest`] (PDU consumed), or the fatal error.
    pub fn poll(&mut self) -> Result<Option<Pdu<'_>>, PduError> {
        if let Some(e) = self.fatal {
            return Err(e.into());
        }
        if self.stage != Stage::Ready {
            return Ok(None);
        }
        self.stage = Stage::Delivered;
        let Some(frame) = self.frame else {
            return Ok(None);
        };
        let whole = self.buf.get(..frame.plen as usize).unwrap_or_default();
        let pdu = Pdu::build(&frame, whole)?;
        match pdu {
            Pdu::IcReq(req) if self.cfg.role == Role::Controller => {
                self.ic_done = true;
                self.cfg.digests = req.digests;
            }
            Pdu::IcResp(resp) if self.cfg.role == Role::Host => {
                self.ic_done = true;
                self.cfg.digests = resp.digests;
            }
            _ => {}
        }
        Ok(Some(pdu))
    }

    /// Feeds all of `input`, calling `on_pdu` for every PDU or data digest error; stops at
    /// (and returns) a fatal error.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        mut on_pdu: impl FnMut(Result<Pdu<'_>, PduError>),
    ) -> Result<(), FatalError> {
        loop {
            let used = self.push(input);
            input = input.get(used..).unwrap_or_default();
            match self.poll() {
                Ok(Some(pdu)) => on_pdu(Ok(pdu)),
                Ok(None) => return Ok(()),
                Err(PduError::Fatal(e)) => return Err(e),
                Err(e) => on_pdu(Err(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{
        C2HData, CapsuleCmd, CapsuleResp, Digests, H2CData, IcReq, IcResp, R2t, TermDir, TermReq,
        TxConfig,
    };
    use super::*;
    use crate::wire::cqe::Cqe;
    use crate::wire::sgl::SglDescriptor;
    use crate::wire::sqe::Sqe;
    use proptest::prelude::*;

    fn emit(p: &Pdu<'_>, tx: &TxConfig) -> Vec<u8> {
        let mut v = vec![0u8; p.wire_len(tx)];
        let n = p.emit(&mut v, tx).unwrap();
        assert_eq!(n, v.len());
        v
    }

    /// Decodes `stream` split at `cuts`, returning a description of every result.
    fn decode_chunked(
        cfg: RxConfig,
        stream: &[u8],
        cuts: &[usize],
    ) -> (Vec<String>, Option<FatalError>) {
        let mut dec = PduDecoder::new(cfg);
        let mut out = Vec::new();
        let mut fatal = None;
        let mut pos = 0;
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
        bounds.push(stream.len());
        bounds.sort_unstable();
        for b in bounds {
            let chunk = &stream[pos..b.max(pos)];
            pos = b.max(pos);
            if let Err(e) = dec.feed(chunk, |r| out.push(format!("{r:?}"))) {
                fatal = Some(e);
                break;
            }
        }
        (out, fatal)
    }

    fn controller_stream(digests: Digests) -> Vec<u8> {
        let tx = TxConfig { digests, pda: 0 };
        let icreq = Pdu::IcReq(IcReq {
            digests,
            ..IcReq::default()
        });
        let mut s = emit(&icreq, &TxConfig::default());
        let mut connect = Sqe::new(0x7F, 1, 0x01);
        connect.sgl = SglDescriptor::in_capsule(1024);
        let data = vec![0x5Au8; 1024];
        s.extend(emit(
            &Pdu::CapsuleCmd(CapsuleCmd {
                sqe: connect,
                data: &data,
            }),
            &tx,
        ));
        s.extend(emit(
            &Pdu::CapsuleCmd(CapsuleCmd {
                sqe: Sqe::new(0x06, 2, 0),
                data: &[],
            }),
            &tx,
        ));
        s.extend(emit(
            &Pdu::H2CData(H2CData {
                cccid: 3,
                ttag: 1,
                datao: 0,
                last: true,
                data: &data[..512],
            }),
            &tx,
        ));
        s.extend(emit(
            &Pdu::TermReq(TermReq {
                dir: TermDir::H2C,
                fes: 2,
                fei: 0,
                header: &[1, 2, 3],
            }),
            &tx,
        ));
        s
    }

    #[test]
    fn decodes_a_session_with_and_without_digests() {
        for d in [
            Digests::NONE,
            Digests::BOTH,
            Digests::from_bits(1),
            Digests::from_bits(2),
        ] {
            let s = controller_stream(d);
            let (out, fatal) = decode_chunked(RxConfig::controller(), &s, &[]);
            assert_eq!(fatal, None, "{d:?}");
            assert_eq!(out.len(), 5, "{out:?}");
            assert!(out.iter().all(|o| o.starts_with("Ok(")));
            // Byte by byte gives the same.
            let cuts: Vec<usize> = (0..s.len()).collect();
            assert_eq!(decode_chunked(RxConfig::controller(), &s, &cuts).0, out);
        }
    }

    #[test]
    fn host_side_session() {
        let d = Digests::BOTH;
        let tx = TxConfig { digests: d, pda: 0 };
        let mut s = emit(
            &Pdu::IcResp(IcResp {
                digests: d,
                maxh2cdata: 8192,
                ..IcResp::default()
            }),
            &TxConfig::default(),
        );
        s.extend(emit(
            &Pdu::R2T(R2t {
                cccid: 1,
                ttag: 2,
                r2to: 0,
                r2tl: 4096,
            }),
            &tx,
        ));
        s.extend(emit(
            &Pdu::C2HData(C2HData {
                cccid: 4,
                datao: 0,
                last: true,
                success: false,
                data: &[7; 4096],
            }),
            &tx,
        ));
        s.extend(emit(
            &Pdu::CapsuleResp(CapsuleResp {
                cqe: Cqe::success(4, 1, 0xFFFF),
            }),
            &tx,
        ));
        let (out, fatal) = decode_chunked(RxConfig::host(), &s, &[1, 100, 129, 200]);
        assert_eq!(fatal, None);
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn sequence_errors() {
        let cmd = emit(
            &Pdu::CapsuleCmd(CapsuleCmd {
                sqe: Sqe::new(0x06, 2, 0),
                data: &[],
            }),
            &TxConfig::default(),
        );
        let (_, fatal) = decode_chunked(RxConfig::controller(), &cmd, &[]);
        assert_eq!(fatal.map(|e| e.fes), Some(Fes::PduSequenceError));
        let ic = emit(&Pdu::IcReq(IcReq::default()), &TxConfig::default());
        let mut two = ic.clone();
        two.extend(&ic);
        let (out, fatal) = decode_chunked(RxConfig::controller(), &two, &[]);
        assert_eq!(out.len(), 1);
        assert_eq!(fatal.map(|e| e.fes), Some(Fes::PduSequenceError));
    }

    #[test]
    fn fatal_error_latches_and_reports_header() {
        let mut s = emit(&Pdu::IcReq(IcReq::default()), &TxConfig::default());
        let bad_at = s.len();
        s.extend([0x04, 0x00, 0x30, 0, 72, 0, 0, 0]); // HLEN 0x30
        s.extend([0u8; 100]);
        let mut dec = PduDecoder::new(RxConfig::controller());
        let mut seen = 0;
        let err = dec.feed(&s, |_| seen += 1).unwrap_err();
        assert_eq!(seen, 1);
        assert_eq!((err.fes, err.fei), (Fes::InvalidHeaderField, 2));
        assert_eq!(dec.consumed_total(), bad_at as u64 + 8);
        assert_eq!(dec.offending_header(), &s[bad_at..bad_at + 8]);
        assert_eq!(dec.push(&[0; 10]), 0);
        assert!(matches!(dec.poll(), Err(PduError::Fatal(_))));
        let term = TermReq::c2h_for(&err, dec.offending_header());
        assert_eq!(dec.term_req(), Some(term));
        let mut out = vec![0u8; term.wire_len()];
        term.emit(&mut out).unwrap();
        assert_eq!(&out[..4], &[3, 0, 24, 0]);
        assert_eq!(out.len(), 32);
    }

    #[test]
    fn data_digest_error_is_not_fatal() {
        let mut s = controller_stream(Digests::BOTH);
        // Corrupt the last byte of the Connect ICD (before its DDGST).
        let pos = 128 + 76 + 1023;
        s[pos] ^= 1;
        let (out, fatal) = decode_chunked(RxConfig::controller(), &s, &[300]);
        assert_eq!(fatal, None);
        assert_eq!(out.len(), 5);
        assert!(out[1].starts_with("Err(DataDigest"), "{}", out[1]);
    }

    #[test]
    fn oversized_plen_refused_from_common_header() {
        let mut s = emit(&Pdu::IcReq(IcReq::default()), &TxConfig::default());
        s.extend([0x06, 0x04, 24, 24, 0xFF, 0xFF, 0xFF, 0x7F]);
        let mut dec = PduDecoder::new(RxConfig::controller());
        let err = dec.feed(&s, |_| {}).unwrap_err();
        assert_eq!(err.fes, Fes::LimitExceeded);
        assert!(dec.buf.len() <= 128 * 1024 + 64);
    }

    fn arb_pdu_stream() -> impl Strategy<Value = (Digests, Vec<u8>)> {
        let item = prop_oneof![
            (
                any::<u16>(),
                any::<u8>(),
                proptest::collection::vec(any::<u8>(), 0..300)
            )
                .prop_map(|(cid, opc, data)| {
                    let mut sqe = Sqe::new(opc, cid, 1);
                    sqe.sgl = SglDescriptor::in_capsule(data.len() as u32);
                    (0u8, sqe.to_bytes().to_vec(), data, 0u32)
                }),
            (
                any::<u16>(),
                any::<u16>(),
                any::<u32>(),
                proptest::collection::vec(any::<u8>(), 1..300)
            )
                .prop_map(|(cid, ttag, off, data)| (
                    1u8,
                    cid.to_le_bytes().to_vec(),
                    data,
                    u32::from(ttag) << 16 | off & 0xFFFF
                )),
            (
                any::<u16>(),
                proptest::collection::vec(any::<u8>(), 0..=128)
            )
                .prop_map(|(fes, hdr)| (2u8, fes.to_le_bytes().to_vec(), hdr, 0)),
        ];
        (0u8..4, proptest::collection::vec(item, 0..8)).prop_map(|(dg, items)| {
            let digests = Digests::from_bits(dg);
            let tx = TxConfig { digests, pda: 0 };
            let mut s = emit(
                &Pdu::IcReq(IcReq {
                    digests,
                    ..IcReq::default()
                }),
                &TxConfig::default(),
            );
            for (kind, a, data, x) in items {
                let p = match kind {
                    0 => Pdu::CapsuleCmd(CapsuleCmd {
                        sqe: Sqe::parse(&a).unwrap(),
                        data: &data,
                    }),
                    1 => Pdu::H2CData(H2CData {
                        cccid: u16::from_le_bytes([a[0], a[1]]),
                        ttag: (x >> 16) as u16,
                        datao: x & 0xFFFF,
                        last: x & 1 == 1,
                        data: &data,
                    }),
                    _ => Pdu::TermReq(TermReq {
                        dir: TermDir::H2C,
                        fes: u16::from_le_bytes([a[0], a[1]]),
                        fei: 0,
                        header: &data,
                    }),
                };
                s.extend(emit(&p, &tx));
            }
            (digests, s)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        #[test]
        fn chunking_does_not_matter((_d, stream) in arb_pdu_stream(), cuts in proptest::collection::vec(any::<usize>(), 0..40)) {
            let whole = decode_chunked(RxConfig::controller(), &stream, &[]);
            prop_assert_eq!(whole.1, None);
            let chunked = decode_chunked(RxConfig::controller(), &stream, &cuts);
            prop_assert_eq!(&whole, &chunked);
        }

        #[test]
        fn decode_then_emit_is_identity((d, stream) in arb_pdu_stream()) {
            let mut dec = PduDecoder::new(RxConfig::controller());
            let mut re = Vec::new();
            let mut first = true;
            dec.feed(&stream, |r| {
                let p = r.unwrap();
                let tx = if first { TxConfig::default() } else { TxConfig { digests: d, pda: 0 } };
                first = false;
                re.extend(emit(&p, &tx));
            }).unwrap();
            prop_assert_eq!(re, stream);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048),
                                       cuts in proptest::collection::vec(any::<usize>(), 0..16),
                                       host in any::<bool>(), dg in 0u8..4, prefix_ic in any::<bool>()) {
            let cfg = if host { RxConfig::host() } else { RxConfig::controller() };
            let mut stream = Vec::new();
            if prefix_ic {
                let d = Digests::from_bits(dg);
                let ic = if host {
                    Pdu::IcResp(IcResp { digests: d, maxh2cdata: 4096, ..IcResp::default() })
                } else {
                    Pdu::IcReq(IcReq { digests: d, ..IcReq::default() })
                };
                stream = emit(&ic, &TxConfig::default());
            }
            stream.extend(&bytes);
            let a = decode_chunked(cfg, &stream, &[]);
            let b = decode_chunked(cfg, &stream, &cuts);
            prop_assert_eq!(a, b);
            let _ = Pdu::parse(&bytes, &cfg);
        }

        #[test]
        fn mutated_valid_streams_never_panic((_d, stream) in arb_pdu_stream(),
                                             flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
                                             cuts in proptest::collection::vec(any::<usize>(), 0..16)) {
            let mut s = stream;
            let len = s.len();
            for (i, x) in flips {
                s[i % len] ^= x;
            }
            let a = decode_chunked(RxConfig::controller(), &s, &[]);
            let b = decode_chunked(RxConfig::controller(), &s, &cuts);
            prop_assert_eq!(a, b);
        }
    }
}
