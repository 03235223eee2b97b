//! Arbitrary bytes as a JSON-RPC connection stream (split in two chunks), through the
//! server's framing, request validation and SPDK-style parameter decoding. Invariants: no
//! panic; every response is one line of pure ASCII JSON; a malformed stream ends with a
//! parse error and stops.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nvmf_target::rpc::server::{process_bytes, Handler};
use nvmf_target::rpc::params::Params;
use nvmf_target::rpc::RpcError;
use serde_json::Value;

struct Decoder;

impl Handler for Decoder {
    fn call(&self, method: &str, params: Option<Value>) -> Result<Value, RpcError> {
        // Decode like bdev_malloc_create does, so the parameter rules get exercised.
        let mut p = Params::new(params, RpcError::invalid_params())?;
        let name = p.str("name")?;
        let blocks = p.u64("num_blocks")?;
        let bs = p.u32("block_size")?;
        let uuid = p.uuid("uuid")?;
        let _ = p.bool("thin_provision")?;
        p.finish()?;
        Ok(serde_json::json!({ "method": method, "name": name, "n": blocks, "bs": bs, "uuid": uuid.is_some() }))
    }
}

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let mut buf = Vec::new();
    for chunk in [&data[..split], &data[split..]] {
        let step = process_bytes(&mut buf, chunk, &Decoder);
        for line in &step.responses {
            assert!(line.is_ascii() && !line.contains('\n'), "response not one ASCII line: {line:?}");
        }
        if !step.keep_open {
            return;
        }
    }
});
