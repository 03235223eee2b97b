//! Arbitrary bytes as the NVMe/TCP stream a controller receives, fed in two chunks.
//! Invariants: no panic; the decoder never yields more than it was given.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nvmf_target::wire::pdu::{PduDecoder, RxConfig};

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let mut dec = PduDecoder::new(RxConfig::controller());
    let mut rest = data;
    for chunk in [&data[..split], &data[split..]] {
        let mut input = chunk;
        while !input.is_empty() {
            let n = dec.push(input);
            input = &input[n..];
            loop {
                match dec.poll() {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => break,
                }
            }
            if n == 0 {
                break;
            }
        }
        rest = &rest[chunk.len().min(rest.len())..];
    }
    let _ = rest;
});
