//! Decoding of `params` objects with SPDK's rules (spec §1.13): strict by default (unknown
//! member, wrong JSON type or missing required member → the method's decode error), relaxed
//! for a few methods (unknown members ignored). Numbers must be JSON numbers in range;
//! booleans must be `true`/`false`; `null` counts as a wrong type.

use serde_json::{Map, Value};

use super::RpcError;

/// A `params` object being decoded; every accessor records the member as known.
pub struct Params {
    map: Map<String, Value>,
    known: Vec<&'static str>,
    present: bool,
    err: RpcError,
}

impl Params {
    /// `params` (absent = empty); anything but an object is a decode failure (`err`).
    pub fn new(params: Option<Value>, err: RpcError) -> Result<Self, RpcError> {
        let (map, present) = match params {
            None => (Map::new(), false),
            Some(Value::Object(m)) => (m, true),
            Some(_) => return Err(err),
        };
        Ok(Self {
            map,
            known: Vec::new(),
            present,
            err,
        })
    }

    /// Whether a `params` member was sent at all.
    pub fn present(&self) -> bool {
        self.present
    }

    fn fail<T>(&self) -> Result<T, RpcError> {
        Err(self.err.clone())
    }

    pub fn value(&mut self, k: &'static str) -> Option<Value> {
        self.known.push(k);
        self.map.get(k).cloned()
    }

    pub fn str(&mut self, k: &'static str) -> Result<Option<String>, RpcError> {
        match self.value(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => self.fail(),
        }
    }

    pub fn u64(&mut self, k: &'static str) -> Result<Option<u64>, RpcError> {
        match self.value(k) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) => Ok(Some(v)),
                None => self.fail(),
            },
            Some(_) => self.fail(),
        }
    }

    pub fn u32(&mut self, k: &'static str) -> Result<Option<u32>, RpcError> {
        match self.u64(k)? {
            None => Ok(None),
            Some(v) => u32::try_from(v).map(Some).or_else(|_| self.fail()),
        }
    }

    pub fn u16(&mut self, k: &'static str) -> Result<Option<u16>, RpcError> {
        match self.u64(k)? {
            None => Ok(None),
            Some(v) => u16::try_from(v).map(Some).or_else(|_| self.fail()),
        }
    }

    pub fn i32(&mut self, k: &'static str) -> Result<Option<i32>, RpcError> {
        match self.value(k) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_i64().and_then(|v| i32::try_from(v).ok()) {
                Some(v) => Ok(Some(v)),
                None => self.fail(),
            },
            Some(_) => self.fail(),
        }
    }

    pub fn bool(&mut self, k: &'static str) -> Result<Option<bool>, RpcError> {
        match self.value(k) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(_) => self.fail(),
        }
    }

    /// A UUID string (well-formed 8-4-4-4-12 hex).
    pub fn uuid(&mut self, k: &'static str) -> Result<Option<[u8; 16]>, RpcError> {
        match self.str(k)? {
            None => Ok(None),
            Some(s) => match parse_uuid(&s) {
                Some(u) => Ok(Some(u)),
                None => self.fail(),
            },
        }
    }

    /// A nested object, decoded with the same error.
    pub fn object(&mut self, k: &'static str) -> Result<Option<Params>, RpcError> {
        match self.value(k) {
            None => Ok(None),
            Some(v @ Value::Object(_)) => Params::new(Some(v), self.err.clone()).map(Some),
            Some(_) => self.fail(),
        }
    }

    /// Accepts members that must be absent, `false` or `0` (features we do not have).
    pub fn off(&mut self, keys: &[&'static str]) -> Result<(), RpcError> {
        for &k in keys {
            match self.value(k) {
                None | Some(Value::Bool(false)) => {}
                Some(Value::Number(n)) if n.as_u64() == Some(0) => {}
                Some(_) => return self.fail(),
            }
        }
        Ok(())
    }

    /// Marks members as known whatever their value (accepted and ignored).
    pub fn ignore(&mut self, keys: &[&'static str]) {
        self.known.extend_from_slice(keys);
    }

    pub fn req<T>(&self, v: Option<T>) -> Result<T, RpcError> {
        v.ok_or_else(|| self.err.clone())
    }

    /// Strict end of decoding: any member not asked for is an error.
    pub fn finish(self) -> Result<(), RpcError> {
        if self.map.keys().all(|k| self.known.contains(&k.as_str())) {
            Ok(())
        } else {
            Err(self.err)
        }
    }
}

/// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (either case).
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let hex: Vec<u8> = b.iter().copied().filter(|&c| c != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let hi = (hex[2 * i] as char).to_digit(16)?;
        let lo = (hex[2 * i + 1] as char).to_digit(16)?;
        *o = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// Lower-case 8-4-4-4-12.
pub fn format_uuid(u: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A random (version 4) UUID from the kernel's generator.
pub fn random_uuid() -> [u8; 16] {
    let mut u = [0u8; 16];
    if rustix::rand::getrandom(&mut u, rustix::rand::GetRandomFlags::empty()).is_err() {
        // Fall back to time and a counter: unique enough for names within one process.
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        u[..8].copy_from_slice(&t.to_le_bytes());
        u[8..].copy_from_slice(
            &N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .to_le_bytes(),
        );
    }
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn uuid_round_trip() {
        let u = random_uuid();
        assert_eq!(parse_uuid(&format_uuid(&u)), Some(u));
        assert_eq!(parse_uuid("not-a-uuid"), None);
    }

    #[test]
    fn strict_decoding_rejects_unknown_and_mistyped_members() {
        let e = RpcError::decode_failed();
        let mut p = Params::new(Some(json!({"a": 1, "b": "x"})), e.clone()).expect("object");
        assert_eq!(p.u64("a"), Ok(Some(1)));
        assert_eq!(p.finish(), Err(e.clone()));
        let mut p = Params::new(Some(json!({"a": "4096"})), e.clone()).expect("object");
        assert!(p.u64("a").is_err());
        assert!(Params::new(Some(json!([1])), e).is_err());
    }
}
