//! Start-up configuration and the daemon's own persisted configuration (issue 5).
//!
//! * [`parse`] reads SPDK's JSON configuration document (what `spdk-rpc save_config` writes
//!   and `spdk_tgt -c/--json` reads) into [`Entry`]s in replay order: subsystems in SPDK's
//!   dependency order ([`SUBSYSTEM_ORDER`]: bdev before nvmf), entries in file order, batch
//!   arrays flattened.
//! * [`replay`] runs the entries through the same dispatcher as JSON-RPC requests. Strict
//!   (SPDK's default: the first error response aborts start-up) or lenient (log, record,
//!   continue: `--json-ignore-init-errors`, and always for the daemon's own `config.json`).
//!   Creations of lvstores, lvols, snapshots and clones that already exist (brought back by
//!   examining their base bdev) are skipped, so replay is idempotent.
//! * [`Persist`] writes the full configuration (the `save_config` document) to
//!   `<data-dir>/config.json` with [`write_atomic`] after every successful state-changing
//!   method ([`changes_state`]).
//! * [`reconcile`] turns replay failures and the lvstores' inventory (side-table rows
//!   against the pool's thin devices) into [`Finding`]s, which the daemon logs, summarises on
//!   stderr and serves through `framework_get_reconcile_report`.
//!
//! Invariants:
//! * nothing read from a configuration file can panic: every shape error is a
//!   [`ConfigError`] naming the place, every failing entry a [`Failure`] naming the entry;
//! * `config.json` is only ever replaced whole (temporary file, fsync, rename, fsync of the
//!   folder), so a crash leaves the old or the new document, never a mix;
//! * start-up never rewrites `config.json` to drop what could not be restored: the file
//!   changes only after an operator's change, and a copy of it is kept as `config.json.bak`
//!   when start-up found disagreements.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use log::{error, info, warn};
use serde_json::{json, Map, Value};

use super::RpcError;

/// The daemon's persisted configuration inside its data folder.
pub const CONFIG_FILE: &str = "config.json";
/// The copy kept when start-up found disagreements.
pub const BACKUP_FILE: &str = "config.json.bak";

/// Subsystems we serve, in dependency order (as `framework_get_subsystems` lists them).
pub const SUBSYSTEM_ORDER: &[&str] = &["bdev", "nvmf"];

/// SPDK's STARTUP-time tuning methods that configurations saved by a real `spdk_tgt`
/// contain. We have nothing to tune with them: accepted and ignored (logged).
pub const IGNORED_METHODS: &[&str] = &[
    "bdev_set_options",
    "bdev_nvme_set_options",
    "bdev_nvme_set_hotplug",
    "bdev_raid_set_options",
    "bdev_iscsi_set_options",
    "iobuf_set_options",
    "sock_impl_set_options",
    "sock_set_default_impl",
    "accel_set_options",
    "nvmf_set_config",
    "nvmf_set_max_subsystems",
    "nvmf_set_crdt",
];

/// Methods that change nothing (besides every `*_get_*` method).
const READ_ONLY_METHODS: &[&str] = &[
    "spdk_get_version",
    "rpc_get_methods",
    "framework_wait_init",
    "spdk_kill_instance",
    "bdev_wait_for_examine",
    "thin_pool_status",
    "thin_delta",
];

/// Whether a successful call of `method` may have changed the configuration (so the
/// persisted configuration must be rewritten).
pub fn changes_state(method: &str) -> bool {
    !method.contains("_get_") && !READ_ONLY_METHODS.contains(&method)
}

/// One configuration entry: a method call of a subsystem.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub subsystem: String,
    /// Position in its subsystem's `config` array (batch elements share it).
    pub index: usize,
    pub method: String,
    pub params: Option<Value>,
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}] {}", self.subsystem, self.index, self.method)?;
        if let Some(p) = &self.params {
            write!(f, " {p}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not valid JSON: {source}")]
    Json {
        path: String,
        source: serde_json::Error,
    },
    #[error("{path}: {what}")]
    Shape { path: String, what: String },
}

/// Reads and parses configuration file `path`.
pub fn load(path: &Path) -> Result<Vec<Entry>, ConfigError> {
    let origin = path.display().to_string();
    let text = std::fs::read(path).map_err(|source| ConfigError::Io {
        path: origin.clone(),
        source,
    })?;
    parse(&text, &origin)
}

/// Parses a configuration document (`origin` names it in errors) into entries in replay
/// order.
pub fn parse(text: &[u8], origin: &str) -> Result<Vec<Entry>, ConfigError> {
    let shape = |what: String| ConfigError::Shape {
        path: origin.to_owned(),
        what,
    };
    let root: Value = serde_json::from_slice(text).map_err(|source| ConfigError::Json {
        path: origin.to_owned(),
        source,
    })?;
    let Value::Object(root) = root else {
        return Err(shape("the root is not a JSON object".into()));
    };
    let subsystems = match root.get("subsystems") {
        // SPDK warns and starts empty.
        None => {
            warn!("{origin}: no \"subsystems\" member; nothing to load");
            return Ok(Vec::new());
        }
        Some(Value::Array(a)) => a,
        Some(_) => return Err(shape("\"subsystems\" is not an array".into())),
    };
    let mut groups: Vec<(usize, Vec<Entry>)> = Vec::new();
    for (si, s) in subsystems.iter().enumerate() {
        let Value::Object(s) = s else {
            return Err(shape(format!("subsystems[{si}] is not an object")));
        };
        let name = match s.get("subsystem") {
            Some(Value::String(n)) => n.clone(),
            _ => return Err(shape(format!("subsystems[{si}]: no \"subsystem\" name"))),
        };
        let config = match s.get("config") {
            Some(Value::Array(c)) => c.as_slice(),
            Some(Value::Null) => &[],
            _ => {
                return Err(shape(format!(
                    "subsystem {name}: \"config\" must be an array or null"
                )))
            }
        };
        let mut entries = Vec::new();
        for (i, e) in config.iter().enumerate() {
            let at = |what: &str| shape(format!("subsystem {name}, config[{i}]: {what}"));
            match e {
                Value::Object(o) => entries.push(entry(&name, i, o).map_err(|w| at(&w))?),
                Value::Array(batch) => {
                    for b in batch {
                        let Value::Object(o) = b else {
                            return Err(at("a batch element is not an object"));
                        };
                        entries.push(entry(&name, i, o).map_err(|w| at(&w))?);
                    }
                }
                _ => return Err(at("not an object or a batch array")),
            }
        }
        let rank = SUBSYSTEM_ORDER
            .iter()
            .position(|k| *k == name)
            .unwrap_or(SUBSYSTEM_ORDER.len());
        groups.push((rank, entries));
    }
    // Stable: subsystems we do not know keep their file order, after ours.
    groups.sort_by_key(|(rank, _)| *rank);
    Ok(groups.into_iter().flat_map(|(_, e)| e).collect())
}

fn entry(subsystem: &str, index: usize, o: &Map<String, Value>) -> Result<Entry, String> {
    if let Some(k) = o
        .keys()
        .find(|k| !matches!(k.as_str(), "method" | "params"))
    {
        return Err(format!("unknown member \"{k}\""));
    }
    let method = match o.get("method") {
        Some(Value::String(m)) => m.clone(),
        _ => return Err("no \"method\" string".into()),
    };
    let params = match o.get("params") {
        None => None,
        Some(p @ Value::Object(_)) => Some(p.clone()),
        Some(_) => return Err(format!("{method}: \"params\" is not an object")),
    };
    Ok(Entry {
        subsystem: subsystem.to_owned(),
        index,
        method,
        params,
    })
}

/// How to replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayOptions {
    /// Abort at the first failing entry (SPDK's default for `--json`).
    pub stop_on_error: bool,
    /// Replaying the daemon's own `config.json` after a restart (not a user's file).
    pub restart: bool,
}

/// An entry that failed.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub entry: Entry,
    pub error: RpcError,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} failed: {} (code {})",
            self.entry, self.error.message, self.error.code
        )
    }
}

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    /// Entries called successfully.
    pub applied: usize,
    /// Entries not called (ignored methods, other subsystems, objects already present),
    /// with the reason.
    pub skipped: Vec<(Entry, String)>,
    /// Entries that failed (lenient mode).
    pub failures: Vec<Failure>,
    /// Findings noticed during replay (e.g. a namespace whose bdev is missing).
    pub findings: Vec<Finding>,
}

/// A dispatcher: method, params → result.
pub type Call<'a> = dyn FnMut(&str, Option<Value>) -> Result<Value, RpcError> + 'a;

fn str_param<'v>(e: &'v Entry, k: &str) -> Option<&'v str> {
    e.params
        .as_ref()
        .and_then(|p| p.get(k))
        .and_then(Value::as_str)
}

/// The lvstore name of lvol bdev `bdev` (from its `lvs/lvol` alias), if it is one.
fn lvs_of(call: &mut Call<'_>, bdev: &str) -> Option<String> {
    let b = call("bdev_get_bdevs", Some(json!({ "name": bdev }))).ok()?;
    b.get(0)?.get("driver_specific")?.get("lvol")?;
    let alias = b.get(0)?.get("aliases")?.get(0)?.as_str()?;
    alias.split_once('/').map(|(lvs, _)| lvs.to_owned())
}

fn bdev_exists(call: &mut Call<'_>, name: &str) -> bool {
    call("bdev_get_bdevs", Some(json!({ "name": name }))).is_ok()
}

/// Why `e` need not run: an object it would create is already there (brought back by
/// examine when its base bdev was created).
fn already_present(call: &mut Call<'_>, e: &Entry) -> Option<String> {
    match e.method.as_str() {
        "bdev_lvol_create_lvstore" => {
            let name = str_param(e, "lvs_name")?;
            let base = str_param(e, "bdev_name")?;
            let s = call("bdev_lvol_get_lvstores", Some(json!({ "lvs_name": name }))).ok()?;
            (s.get(0)?.get("base_bdev")?.as_str()? == base)
                .then(|| format!("lvstore {name} is already loaded from {base}"))
        }
        "bdev_lvol_create" => {
            let lvol = str_param(e, "lvol_name")?;
            let lvs = match (str_param(e, "lvs_name"), str_param(e, "uuid")) {
                (Some(n), _) => n.to_owned(),
                (None, Some(u)) => {
                    let s = call("bdev_lvol_get_lvstores", Some(json!({ "uuid": u }))).ok()?;
                    s.get(0)?.get("name")?.as_str()?.to_owned()
                }
                (None, None) => return None,
            };
            let alias = format!("{lvs}/{lvol}");
            bdev_exists(call, &alias).then(|| format!("lvol {alias} already exists"))
        }
        "bdev_lvol_snapshot" | "bdev_lvol_clone" => {
            let (src, new) = if e.method == "bdev_lvol_snapshot" {
                (str_param(e, "lvol_name")?, str_param(e, "snapshot_name")?)
            } else {
                (str_param(e, "snapshot_name")?, str_param(e, "clone_name")?)
            };
            let alias = format!("{}/{new}", lvs_of(call, src)?);
            bdev_exists(call, &alias).then(|| format!("lvol {alias} already exists"))
        }
        _ => None,
    }
}

/// Replays `entries` through `call`. Strict mode returns the first failure as `Err`
/// (boxed: it carries the entry).
pub fn replay(
    entries: &[Entry],
    call: &mut Call<'_>,
    opts: ReplayOptions,
) -> Result<Outcome, Box<Failure>> {
    let mut out = Outcome::default();
    for e in entries {
        if !SUBSYSTEM_ORDER.contains(&e.subsystem.as_str()) {
            info!(
                "config: skipping {e}: subsystem {} is not part of this target",
                e.subsystem
            );
            out.skipped
                .push((e.clone(), format!("subsystem {} not served", e.subsystem)));
            continue;
        }
        if IGNORED_METHODS.contains(&e.method.as_str()) {
            info!(
                "config: ignoring {} (SPDK tuning, nothing to tune here)",
                e.method
            );
            out.skipped
                .push((e.clone(), "tuning method ignored".into()));
            continue;
        }
        if let Some(why) = already_present(call, e) {
            info!("config: skipping {}: {why}", e.method);
            out.skipped.push((e.clone(), why));
            continue;
        }
        match call(&e.method, e.params.clone()) {
            Ok(_) => {
                out.applied += 1;
                if e.method == "bdev_malloc_create" {
                    let name = str_param(e, "name").unwrap_or("?");
                    if opts.restart {
                        warn!("config: malloc bdev {name} recreated empty (RAM contents do not survive a restart)");
                    } else {
                        info!("config: malloc bdev {name} created (empty)");
                    }
                }
            }
            Err(error) => {
                error!(
                    "config: {} failed: {} (code {})",
                    e, error.message, error.code
                );
                let f = Failure {
                    entry: e.clone(),
                    error,
                };
                if opts.stop_on_error {
                    return Err(Box::new(f));
                }
                out.findings.push(finding_for_failure(call, &f));
                out.failures.push(f);
            }
        }
    }
    Ok(out)
}

/// A disagreement between the configuration and what could be brought back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `entry_failed`, `namespace_bdev_missing`, `lvol_missing_in_pool`,
    /// `thin_device_without_lvol`, `size_mismatch`.
    pub kind: &'static str,
    /// The object concerned (`lvs0/vol1`, `nqn… nsid 1`, …).
    pub object: String,
    pub detail: String,
}

impl Finding {
    pub fn to_json(&self) -> Value {
        json!({"kind": self.kind, "object": self.object, "detail": self.detail})
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.kind, self.object, self.detail)
    }
}

fn finding_for_failure(call: &mut Call<'_>, f: &Failure) -> Finding {
    let e = &f.entry;
    if e.method == "nvmf_subsystem_add_ns" {
        let ns = e.params.as_ref().and_then(|p| p.get("namespace"));
        let bdev = ns
            .and_then(|n| n.get("bdev_name"))
            .and_then(Value::as_str)
            .unwrap_or("?");
        if !bdev_exists(call, bdev) {
            let nsid = ns.and_then(|n| n.get("nsid")).and_then(Value::as_u64);
            return Finding {
                kind: "namespace_bdev_missing",
                object: format!(
                    "{} nsid {}",
                    str_param(e, "nqn").unwrap_or("?"),
                    nsid.map_or_else(|| "?".to_owned(), |n| n.to_string())
                ),
                detail: format!("bdev {bdev} does not exist; namespace not restored"),
            };
        }
    }
    let object = ["name", "nqn", "lvol_name", "lvs_name", "bdev_name"]
        .iter()
        .find_map(|k| str_param(e, k))
        .unwrap_or(e.method.as_str())
        .to_owned();
    Finding {
        kind: "entry_failed",
        object,
        detail: f.to_string(),
    }
}

/// An lvol row of an lvstore's side table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvolRow {
    pub name: String,
    pub uuid: String,
    pub dev_id: u64,
    pub size_bytes: u64,
    /// End (in bytes) of the highest data block the thin device maps at or beyond
    /// `size_bytes`, if any.
    pub mapped_beyond_end: Option<u64>,
}

/// What an lvstore holds: side-table rows against the pool's thin devices.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LvstoreInventory {
    pub name: String,
    /// Rows loaded (each has its thin device).
    pub lvols: Vec<LvolRow>,
    /// Rows dropped at load because the pool has no such thin device.
    pub dropped: Vec<LvolRow>,
    /// Every thin device of the pool.
    pub devices: Vec<u64>,
}

/// Compares each lvstore's rows with its pool.
pub fn reconcile(stores: &[LvstoreInventory]) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in stores {
        for r in &s.dropped {
            out.push(Finding {
                kind: "lvol_missing_in_pool",
                object: format!("{}/{}", s.name, r.name),
                detail: format!(
                    "lvol {} has no thin device {} in the pool; not served",
                    r.uuid, r.dev_id
                ),
            });
        }
        for d in &s.devices {
            if !s.lvols.iter().any(|l| l.dev_id == *d) {
                out.push(Finding {
                    kind: "thin_device_without_lvol",
                    object: format!("{} thin device {d}", s.name),
                    detail: "the pool holds a thin device no lvol row names (kept, not served)"
                        .into(),
                });
            }
        }
        for l in &s.lvols {
            if let Some(end) = l.mapped_beyond_end {
                out.push(Finding {
                    kind: "size_mismatch",
                    object: format!("{}/{}", s.name, l.name),
                    detail: format!(
                        "lvol size {} B but thin device {} maps data up to {end} B",
                        l.size_bytes, l.dev_id
                    ),
                });
            }
        }
    }
    out
}

/// The report served by `framework_get_reconcile_report`.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Where the configuration came from (`None`: nothing was replayed).
    pub source: Option<String>,
    pub applied: usize,
    pub skipped: usize,
    pub failed: usize,
    pub findings: Vec<Finding>,
    /// The backup kept because of the findings.
    pub backup: Option<PathBuf>,
}

impl Report {
    pub fn to_json(&self) -> Value {
        json!({
            "source": self.source,
            "applied": self.applied,
            "skipped": self.skipped,
            "failed": self.failed,
            "backup": self.backup.as_ref().map(|p| p.display().to_string()),
            "findings": self.findings.iter().map(Finding::to_json).collect::<Vec<_>>(),
        })
    }

    /// One line for stderr at start-up.
    pub fn summary(&self) -> String {
        let src = self.source.as_deref().unwrap_or("(none)");
        let mut s = format!(
            "config {src}: {} entries applied, {} skipped, {} failed; {} disagreement(s)",
            self.applied,
            self.skipped,
            self.failed,
            self.findings.len()
        );
        if !self.findings.is_empty() {
            s.push_str(" (see warnings; framework_get_reconcile_report)");
        }
        if let Some(b) = &self.backup {
            s.push_str(&format!("; previous config kept as {}", b.display()));
        }
        s
    }
}

/// Builds the full configuration document (what `spdk-rpc save_config` prints) through
/// `call`.
pub fn full_config(call: &mut Call<'_>) -> Result<Value, RpcError> {
    let subs = call("framework_get_subsystems", None)?;
    let mut out = Vec::new();
    for s in subs.as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let Some(name) = s.get("subsystem").and_then(Value::as_str) else {
            continue;
        };
        let config = call("framework_get_config", Some(json!({ "name": name })))?;
        out.push(json!({"subsystem": name, "config": config}));
    }
    Ok(json!({ "subsystems": out }))
}

/// Replaces `path` with `data` atomically: a temporary file in the same folder, fsync,
/// rename over `path`, fsync of the folder. On error the old file is untouched and the
/// temporary file removed.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let r = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        File::open(&dir)?.sync_all()
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Writes the configuration to `<data-dir>/config.json` after changes.
#[derive(Debug)]
pub struct Persist {
    path: PathBuf,
    /// The bytes last written (or found at start): identical documents are not rewritten.
    last: Vec<u8>,
}

impl Persist {
    /// Persistence into `data_dir` (created on first write). `current` is what the file
    /// holds now (or nothing).
    pub fn new(data_dir: &Path) -> Self {
        let path = data_dir.join(CONFIG_FILE);
        let last = std::fs::read(&path).unwrap_or_default();
        Self { path, last }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `config` unless the file already holds exactly it.
    pub fn save(&mut self, config: &Value) -> std::io::Result<bool> {
        let mut data = serde_json::to_vec_pretty(config).map_err(std::io::Error::other)?;
        data.push(b'\n');
        if data == self.last {
            return Ok(false);
        }
        if let Some(d) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d)?;
        }
        write_atomic(&self.path, &data)?;
        self.last = data;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(v: Value) -> Vec<u8> {
        v.to_string().into_bytes()
    }

    #[test]
    fn parse_orders_subsystems_bdev_before_nvmf_and_flattens_batches() {
        let text = doc(json!({"subsystems": [
            {"subsystem": "nvmf", "config": [
                {"method": "nvmf_create_transport", "params": {"trtype": "TCP"}},
                {"method": "nvmf_create_subsystem", "params": {"nqn": "n"}}]},
            {"subsystem": "accel", "config": [{"method": "accel_set_options"}]},
            {"subsystem": "bdev", "config": [
                {"method": "bdev_set_options", "params": {}},
                [{"method": "bdev_malloc_create", "params": {"name": "M0"}},
                 {"method": "bdev_malloc_create", "params": {"name": "M1"}}],
                {"method": "bdev_wait_for_examine"}]},
            {"subsystem": "sock", "config": null}],
            "other_root_member": 1}));
        let e = parse(&text, "t").expect("valid");
        let got: Vec<(&str, usize, &str)> = e
            .iter()
            .map(|e| (e.subsystem.as_str(), e.index, e.method.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("bdev", 0, "bdev_set_options"),
                ("bdev", 1, "bdev_malloc_create"),
                ("bdev", 1, "bdev_malloc_create"),
                ("bdev", 2, "bdev_wait_for_examine"),
                ("nvmf", 0, "nvmf_create_transport"),
                ("nvmf", 1, "nvmf_create_subsystem"),
                ("accel", 0, "accel_set_options"),
            ]
        );
        assert_eq!(e[2].params, Some(json!({"name": "M1"})));
        assert_eq!(e[3].params, None);
    }

    #[test]
    fn parse_rejects_bad_shapes_with_a_message() {
        for (text, needle) in [
            (b"{\"subsystems\": [".as_slice(), "not valid JSON"),
            (b"[1]", "root"),
            (b"{\"subsystems\": {}}", "not an array"),
            (b"{\"subsystems\": [{\"config\": []}]}", "no \"subsystem\""),
            (
                b"{\"subsystems\": [{\"subsystem\": \"bdev\", \"config\": 3}]}",
                "array or null",
            ),
            (
                b"{\"subsystems\": [{\"subsystem\": \"bdev\", \"config\": [{\"params\": {}}]}]}",
                "config[0]: no \"method\"",
            ),
            (
                b"{\"subsystems\": [{\"subsystem\": \"bdev\", \"config\": [{\"method\": \"x\", \"params\": 1}]}]}",
                "not an object",
            ),
            (
                b"{\"subsystems\": [{\"subsystem\": \"bdev\", \"config\": [{\"method\": \"x\", \"id\": 1}]}]}",
                "unknown member",
            ),
        ] {
            let e = parse(text, "cfg.json").expect_err("invalid");
            let msg = e.to_string();
            assert!(msg.starts_with("cfg.json: "), "{msg}");
            assert!(msg.contains(needle), "{msg} should contain {needle}");
        }
        assert_eq!(parse(b"{}", "x").expect("no subsystems"), vec![]);
    }

    /// A fake dispatcher: records calls, fails the methods named in `fail`, answers
    /// `bdev_get_bdevs` for names in `bdevs`.
    struct Fake {
        calls: Vec<String>,
        fail: Vec<&'static str>,
        bdevs: Vec<&'static str>,
    }

    impl Fake {
        fn call(&mut self, m: &str, p: Option<Value>) -> Result<Value, RpcError> {
            if m == "bdev_get_bdevs" {
                let n = p.as_ref().and_then(|p| p["name"].as_str()).unwrap_or("");
                return if self.bdevs.contains(&n) {
                    Ok(json!([{"name": n, "aliases": [n],
                               "driver_specific": {"lvol": {}}}]))
                } else {
                    Err(RpcError::new(-19, "No such device"))
                };
            }
            self.calls.push(m.to_owned());
            if self.fail.contains(&m) {
                Err(RpcError::invalid_params())
            } else {
                Ok(json!(true))
            }
        }
    }

    fn entries() -> Vec<Entry> {
        parse(
            &doc(json!({"subsystems": [
                {"subsystem": "nvmf", "config": [
                    {"method": "nvmf_create_subsystem", "params": {"nqn": "n"}},
                    {"method": "nvmf_subsystem_add_ns",
                     "params": {"nqn": "n", "namespace": {"nsid": 3, "bdev_name": "gone"}}},
                    {"method": "nvmf_subsystem_add_host", "params": {"nqn": "n", "host": "h"}}]},
                {"subsystem": "bdev", "config": [
                    {"method": "bdev_aio_create", "params": {"name": "A", "filename": "f"}},
                    {"method": "bdev_lvol_create",
                     "params": {"lvs_name": "lvs", "lvol_name": "there", "size_in_mib": 1}},
                    {"method": "bdev_lvol_create",
                     "params": {"lvs_name": "lvs", "lvol_name": "new", "size_in_mib": 1}},
                    {"method": "bdev_wait_for_examine"}]}]})),
            "t",
        )
        .expect("valid")
    }

    #[test]
    fn replay_runs_bdev_first_skips_present_lvols_and_is_lenient_when_asked() {
        let mut f = Fake {
            calls: vec![],
            fail: vec!["nvmf_subsystem_add_ns"],
            bdevs: vec!["lvs/there"],
        };
        let opts = ReplayOptions {
            stop_on_error: false,
            restart: true,
        };
        let out = replay(&entries(), &mut |m, p| f.call(m, p), opts).expect("lenient");
        assert_eq!(
            f.calls,
            [
                "bdev_aio_create",
                "bdev_lvol_create",
                "bdev_wait_for_examine",
                "nvmf_create_subsystem",
                "nvmf_subsystem_add_ns",
                "nvmf_subsystem_add_host"
            ]
        );
        assert_eq!(out.applied, 5);
        assert_eq!(out.skipped.len(), 1, "lvs/there exists already");
        assert_eq!(out.failures.len(), 1);
        assert_eq!(
            out.findings,
            [Finding {
                kind: "namespace_bdev_missing",
                object: "n nsid 3".into(),
                detail: "bdev gone does not exist; namespace not restored".into(),
            }]
        );
    }

    #[test]
    fn strict_replay_stops_at_the_first_failure() {
        let mut f = Fake {
            calls: vec![],
            fail: vec!["bdev_lvol_create"],
            bdevs: vec![],
        };
        let opts = ReplayOptions {
            stop_on_error: true,
            restart: false,
        };
        let err = replay(&entries(), &mut |m, p| f.call(m, p), opts).expect_err("strict");
        assert_eq!(err.entry.method, "bdev_lvol_create");
        assert_eq!(err.entry.index, 1);
        assert!(
            err.to_string().contains("bdev[1] bdev_lvol_create"),
            "{err}"
        );
        assert_eq!(f.calls, ["bdev_aio_create", "bdev_lvol_create"]);
    }

    #[test]
    fn reconcile_reports_every_disagreement() {
        let row = |name: &str, dev_id, beyond| LvolRow {
            name: name.into(),
            uuid: format!("u-{name}"),
            dev_id,
            size_bytes: 1 << 20,
            mapped_beyond_end: beyond,
        };
        let s = LvstoreInventory {
            name: "lvs".into(),
            lvols: vec![row("ok", 1, None), row("big", 2, Some(3 << 20))],
            dropped: vec![row("lost", 3, None)],
            devices: vec![1, 2, 7],
        };
        let f = reconcile(&[s]);
        let kinds: Vec<(&str, &str)> = f.iter().map(|f| (f.kind, f.object.as_str())).collect();
        assert_eq!(
            kinds,
            [
                ("lvol_missing_in_pool", "lvs/lost"),
                ("thin_device_without_lvol", "lvs thin device 7"),
                ("size_mismatch", "lvs/big"),
            ]
        );
        assert!(reconcile(&[LvstoreInventory::default()]).is_empty());
    }

    #[test]
    fn state_changing_methods() {
        for m in [
            "bdev_malloc_create",
            "bdev_lvol_rename",
            "nvmf_subsystem_add_host",
            "bdev_lvol_resize",
        ] {
            assert!(changes_state(m), "{m}");
        }
        for m in [
            "bdev_get_bdevs",
            "bdev_lvol_get_lvols",
            "nvmf_get_subsystems",
            "framework_get_config",
            "spdk_get_version",
            "bdev_get_iostat",
            "framework_get_reconcile_report",
        ] {
            assert!(!changes_state(m), "{m}");
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cfg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("scratch dir");
        d
    }

    #[test]
    fn atomic_writer_replaces_whole_and_cleans_up_on_failure() {
        let d = scratch("atomic");
        let p = d.join("config.json");
        write_atomic(&p, b"one").expect("write");
        write_atomic(&p, b"two, longer").expect("rewrite");
        assert_eq!(std::fs::read(&p).expect("read"), b"two, longer");
        let names = || -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(&d)
                .expect("list")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(), ["config.json"], "no temporary file left");
        // Renaming over a non-empty folder fails: the old content stays, no temp file.
        let blocker = d.join("blocker");
        std::fs::create_dir_all(blocker.join("x")).expect("mkdir");
        assert!(write_atomic(&blocker, b"nope").is_err());
        assert_eq!(names(), ["blocker", "config.json"]);
        assert!(write_atomic(&d.join("missing/config.json"), b"x").is_err());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn persist_skips_identical_documents() {
        let d = scratch("persist");
        let dir = d.join("data");
        let mut p = Persist::new(&dir);
        let v = json!({"subsystems": []});
        assert!(p.save(&v).expect("first write"));
        assert!(!p.save(&v).expect("same"));
        let mut p2 = Persist::new(&dir);
        assert!(!p2.save(&v).expect("same as on disk"));
        let back = parse(&std::fs::read(p2.path()).expect("read"), "x").expect("parse");
        assert!(back.is_empty());
        let _ = std::fs::remove_dir_all(&d);
    }
}
