//! Builds the Linux guest the end-to-end tests boot under QEMU: Debian's kernel plus an
//! initramfs holding busybox, dmsetup, nvme-cli (with their shared libraries) and the kernel
//! modules for virtio, dm-thin and NVMe/TCP. Shared by `cargo xtask guest-image` and the tests.
//!
//! How: `apt-get download` the packages into `<dir>/debs/` (kept, so a recipe change does not
//! download again), `dpkg-deb -x` them into a scratch tree, pick files, resolve shared
//! libraries from ELF `DT_NEEDED` and module dependencies from `.modinfo`, and write a newc
//! cpio archive ourselves. Nothing needs root.
//!
//! Invariants:
//! * the image in `<dir>` is reused only if `<dir>/recipe` holds the hash of the current
//!   recipe (package and module lists, binaries, /init text, [`RECIPE_VERSION`]);
//! * outputs are written to temporary names and renamed into place, the recipe file last, so an
//!   interrupted build is never mistaken for a complete one;
//! * guest shared libraries come from the downloaded packages first, the host's only as a
//!   fallback (the host is the same Debian release).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::cpio::{Archive, Entry};
use crate::elf::Elf;

/// Bump when the build logic changes in a way the lists below don't capture.
pub const RECIPE_VERSION: u32 = 2;

/// The kernel metapackage; the image uses the concrete `linux-image-<abi>-amd64` it depends on.
const KERNEL_METAPACKAGE: &str = "linux-image-amd64";

/// Packages downloaded besides the kernel. The libraries are the closure of what nvme-cli and
/// dmsetup link against on Debian 12; any soname not found in them falls back to the host.
const PACKAGES: &[&str] = &[
    "busybox-static",
    "nvme-cli",
    "libnvme1",
    "dmsetup",
    "libdevmapper1.02.1",
    "libc6",
    "libjson-c5",
    "libuuid1",
    "zlib1g",
    "libdbus-1-3",
    "libssl3",
    "libsystemd0",
    "libcap2",
    "libgcrypt20",
    "libgpg-error0",
    "liblz4-1",
    "liblzma5",
    "libzstd1",
    "libselinux1",
    "libpcre2-8-0",
    "libudev1",
];

/// Packages the image cannot do without (the kernel is implied).
const CORE_PACKAGES: &[&str] = &[
    "busybox-static",
    "nvme-cli",
    "libnvme1",
    "dmsetup",
    "libdevmapper1.02.1",
];

/// Kernel modules to load at boot, by module name; their dependencies are added and ordered.
/// crc32c_generic comes first: libcrc32c and nvme-tcp's digests ask the crypto API for crc32c.
const MODULES: &[&str] = &[
    "crc32c_generic",
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "qemu_fw_cfg",
    "dm_mod",
    "dm_bufio",
    "dm_persistent_data",
    "dm_thin_pool",
    "nvme_core",
    "nvme_fabrics",
    "nvme_tcp",
];

/// (path in the unpacked packages, path in the guest).
const BINARIES: &[(&str, &str)] = &[
    ("bin/busybox", "bin/busybox"),
    ("sbin/dmsetup", "sbin/dmsetup"),
    ("usr/sbin/nvme", "usr/sbin/nvme"),
];

const INIT_SCRIPT: &str = include_str!("guest_init.sh");

/// A fixed host identity so `nvme connect` behaves the same on every run.
const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:6f1c3e0a-5b7d-4c2e-9a41-0e2e7e570001";
const HOSTID: &str = "6f1c3e0a-5b7d-4c2e-9a41-0e2e7e570001";

const LIB_DIRS: &[&str] = &[
    "lib/x86_64-linux-gnu",
    "usr/lib/x86_64-linux-gnu",
    "lib64",
    "lib",
    "usr/lib",
];
const HOST_LIB_DIRS: &[&str] = &["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu"];

/// Errors of the guest image builder and the QEMU harness.
#[derive(Debug)]
#[non_exhaustive]
pub enum GuestError {
    /// A host tool is missing; `install` is the command that provides it.
    MissingTool { tool: String, install: String },
    /// A host command ran and failed.
    Command { what: String, detail: String },
    Io {
        context: String,
        source: std::io::Error,
    },
    /// The packages did not contain something the recipe needs.
    Recipe(String),
    /// QEMU did not finish within the timeout; it was killed.
    Timeout {
        after: std::time::Duration,
        console: String,
    },
    /// QEMU exited without the script's end marker on the console.
    NoResult {
        qemu_status: String,
        console: String,
    },
}

impl fmt::Display for GuestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuestError::MissingTool { tool, install } => {
                write!(
                    f,
                    "`{tool}` not found on the host; install it with: {install}"
                )
            }
            GuestError::Command { what, detail } => write!(f, "{what} failed: {detail}"),
            GuestError::Io { context, source } => write!(f, "{context}: {source}"),
            GuestError::Recipe(msg) => write!(f, "guest image recipe: {msg}"),
            GuestError::Timeout { after, console } => write!(
                f,
                "guest did not finish within {after:?}; QEMU killed. Console:\n{console}"
            ),
            GuestError::NoResult {
                qemu_status,
                console,
            } => write!(
                f,
                "QEMU exited ({qemu_status}) without reporting the script's exit code. \
                 Console:\n{console}"
            ),
        }
    }
}

impl std::error::Error for GuestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GuestError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> GuestError {
    let context = context.into();
    move |source| GuestError::Io { context, source }
}

/// Runs a host command, mapping "not found" to [`GuestError::MissingTool`].
pub(crate) fn run_tool(
    cmd: &mut Command,
    tool: &str,
    install: &str,
) -> Result<std::process::Output, GuestError> {
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            GuestError::MissingTool {
                tool: tool.into(),
                install: install.into(),
            }
        } else {
            GuestError::Io {
                context: format!("running {tool}"),
                source: e,
            }
        }
    })?;
    if !out.status.success() {
        return Err(GuestError::Command {
            what: format!("{cmd:?}"),
            detail: format!(
                "{}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(out)
}

/// A built guest: boot `kernel` with `initramfs`.
#[derive(Clone, Debug)]
pub struct GuestImage {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// `uname -r` of the guest kernel, e.g. `6.1.0-48-amd64`.
    pub kernel_release: String,
}

/// The repository root (parent of the `tests/` crate).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// `build/guest/` under the repository root.
pub fn default_dir() -> PathBuf {
    workspace_root().join("build").join("guest")
}

/// FNV-1a, 64-bit: stable across Rust releases, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8], mut h: u64) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The hash of everything that determines the image.
pub fn recipe_hash() -> String {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let mut feed = |s: &str| h = fnv1a(s.as_bytes(), fnv1a(b"\0", h));
    feed(&RECIPE_VERSION.to_string());
    feed(KERNEL_METAPACKAGE);
    PACKAGES.iter().for_each(|p| feed(p));
    MODULES.iter().for_each(|m| feed(m));
    BINARIES.iter().for_each(|(a, b)| {
        feed(a);
        feed(b)
    });
    feed(INIT_SCRIPT);
    feed(HOSTNQN);
    feed(HOSTID);
    format!("{h:016x}")
}

fn paths(dir: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    (
        dir.join("vmlinux"),
        dir.join("initramfs.cpio"),
        dir.join("kernel-release"),
        dir.join("recipe"),
    )
}

/// The image in `dir` if it is complete and was built from the current recipe.
pub fn cached(dir: &Path) -> Option<GuestImage> {
    let (kernel, initramfs, release, recipe) = paths(dir);
    let recorded = fs::read_to_string(&recipe).ok()?;
    if recorded.trim() != recipe_hash() || !kernel.is_file() || !initramfs.is_file() {
        return None;
    }
    let kernel_release = fs::read_to_string(release).ok()?.trim().to_string();
    Some(GuestImage {
        kernel,
        initramfs,
        kernel_release,
    })
}

/// Serialises builds inside one process (tests run in parallel threads).
static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// The cached image in `dir`, built first if missing or stale.
pub fn ensure(dir: &Path) -> Result<GuestImage, GuestError> {
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(image) = cached(dir) {
        return Ok(image);
    }
    build(dir)
}

/// The image in [`default_dir`], built if needed.
pub fn ensure_default() -> Result<GuestImage, GuestError> {
    ensure(&default_dir())
}

/// Builds the image into `dir` unconditionally.
pub fn build(dir: &Path) -> Result<GuestImage, GuestError> {
    let debs = dir.join("debs");
    fs::create_dir_all(&debs).map_err(io_err(format!("creating {}", debs.display())))?;
    let kernel_pkg = download_packages(&debs)?;

    let scratch = dir.join(format!("unpack-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    let result = assemble(dir, &debs, &kernel_pkg, &scratch);
    let _ = fs::remove_dir_all(&scratch);
    result
}

/// The downloaded `.deb` for `package` in `debs`, if any (`<package>_<version>_<arch>.deb`).
fn find_deb(debs: &Path, package: &str) -> Option<PathBuf> {
    let prefix = format!("{package}_");
    let mut found: Vec<PathBuf> = fs::read_dir(debs)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .collect();
    found.sort();
    found.pop()
}

/// Downloads what is not in `debs` yet; returns the concrete kernel package name.
fn download_packages(debs: &Path) -> Result<String, GuestError> {
    let kernel_pkg = match fs::read_dir(debs)
        .map_err(io_err(format!("listing {}", debs.display())))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .find(|n| n.starts_with("linux-image-") && n.ends_with(".deb"))
    {
        Some(name) => name.split('_').next().unwrap_or_default().to_string(),
        None => resolve_kernel_package()?,
    };
    let mut missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| find_deb(debs, p).is_none())
        .collect();
    if find_deb(debs, &kernel_pkg).is_none() {
        missing.push(&kernel_pkg);
    }
    if !missing.is_empty() {
        eprintln!("guest image: apt-get download {}", missing.join(" "));
        let mut batch = apt_download(debs, &missing);
        if batch.is_err() && is_root() {
            // Stale package lists name versions the mirror no longer has.
            eprintln!("guest image: download failed; apt-get update and retry");
            let _ = Command::new("apt-get").args(["update", "-qq"]).status();
            batch = apt_download(debs, &missing);
        }
        if let Err(batch_err) = batch {
            // One stale or unavailable package fails the whole batch: retry one by one. The
            // library packages may be skipped (the host has the same Debian release's
            // libraries); the others may not.
            for pkg in &missing {
                if let Err(e) = apt_download(debs, &[pkg]) {
                    if CORE_PACKAGES.contains(pkg) || *pkg == kernel_pkg {
                        return Err(e);
                    }
                    eprintln!(
                        "guest image: {pkg} not downloadable, using the host's libraries \
                         instead ({batch_err})"
                    );
                }
            }
        }
    }
    Ok(kernel_pkg)
}

fn apt_download(debs: &Path, packages: &[&str]) -> Result<(), GuestError> {
    let mut cmd = Command::new("apt-get");
    cmd.current_dir(debs).arg("download").arg("-q");
    if is_root() {
        // apt drops to the _apt user for downloads, which may not write here.
        cmd.arg("-o").arg("APT::Sandbox::User=root");
    }
    cmd.args(packages);
    run_tool(
        &mut cmd,
        "apt-get",
        "a Debian host with apt (run `apt-get update` first)",
    )
    .map(|_| ())
    .map_err(|e| match e {
        GuestError::Command { what, detail } => GuestError::Command {
            what,
            detail: format!("{detail}\n(hint: run `apt-get update` first)"),
        },
        other => other,
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `linux-image-amd64` → `linux-image-6.1.0-NN-amd64` via `apt-cache depends`.
fn resolve_kernel_package() -> Result<String, GuestError> {
    let out = run_tool(
        Command::new("apt-cache")
            .arg("depends")
            .arg(KERNEL_METAPACKAGE),
        "apt-cache",
        "a Debian host with apt",
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-amd64"))
        .map(str::to_string)
        .ok_or_else(|| {
            GuestError::Recipe(format!(
                "`apt-cache depends {KERNEL_METAPACKAGE}` names no kernel package \
                 (run `apt-get update`): {text}"
            ))
        })
}

fn assemble(
    dir: &Path,
    debs: &Path,
    kernel_pkg: &str,
    scratch: &Path,
) -> Result<GuestImage, GuestError> {
    let root = scratch.join("root");
    fs::create_dir_all(&root).map_err(io_err(format!("creating {}", root.display())))?;
    for pkg in PACKAGES.iter().copied().chain(std::iter::once(kernel_pkg)) {
        let Some(deb) = find_deb(debs, pkg) else {
            if CORE_PACKAGES.contains(&pkg) || pkg == kernel_pkg {
                return Err(GuestError::Recipe(format!("{pkg}: no .deb after download")));
            }
            continue; // a library package: the host's copy is used (see download_packages)
        };
        run_tool(
            Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root),
            "dpkg-deb",
            "apt-get install dpkg",
        )?;
    }

    let mut archive = Archive::new();
    for d in ["dev", "proc", "sys", "tmp", "run", "root", "etc", "usr/bin"] {
        archive.insert(d, Entry::Dir);
    }
    // The kernel opens /dev/console for init's stdio before devtmpfs is mounted.
    archive.insert("dev/console", Entry::CharDev { major: 5, minor: 1 });
    archive.insert(
        "init",
        Entry::File {
            data: INIT_SCRIPT.as_bytes().to_vec(),
            mode: 0o755,
        },
    );
    archive.insert(
        "etc/nvme/hostnqn",
        Entry::File {
            data: format!("{HOSTNQN}\n").into_bytes(),
            mode: 0o644,
        },
    );
    archive.insert(
        "etc/nvme/hostid",
        Entry::File {
            data: format!("{HOSTID}\n").into_bytes(),
            mode: 0o644,
        },
    );
    archive.insert(
        "etc/passwd",
        Entry::File {
            data: b"root:x:0:0:root:/root:/bin/sh\n".to_vec(),
            mode: 0o644,
        },
    );
    archive.insert(
        "etc/group",
        Entry::File {
            data: b"root:x:0:\n".to_vec(),
            mode: 0o644,
        },
    );

    add_binaries(&root, &mut archive)?;
    let kernel_release = add_modules(&root, &mut archive)?;

    let kernel_src = root.join("boot").join(format!("vmlinuz-{kernel_release}"));
    let (kernel, initramfs, release_file, recipe) = paths(dir);

    let tmp_initramfs = dir.join(format!("initramfs.cpio.tmp-{}", std::process::id()));
    let mut bytes = Vec::new();
    archive
        .write_to(&mut bytes)
        .map_err(io_err("writing the cpio archive"))?;
    fs::write(&tmp_initramfs, &bytes)
        .map_err(io_err(format!("writing {}", tmp_initramfs.display())))?;
    let tmp_kernel = dir.join(format!("vmlinux.tmp-{}", std::process::id()));
    let bzimage =
        fs::read(&kernel_src).map_err(io_err(format!("reading {}", kernel_src.display())))?;
    match extract_vmlinux(&bzimage) {
        Ok(vmlinux) => fs::write(&tmp_kernel, vmlinux),
        Err(why) => {
            eprintln!("guest image: booting the bzImage (slower under TCG): {why}");
            fs::write(&tmp_kernel, &bzimage)
        }
    }
    .map_err(io_err(format!("writing {}", tmp_kernel.display())))?;
    fs::rename(&tmp_initramfs, &initramfs).map_err(io_err("renaming the initramfs"))?;
    fs::rename(&tmp_kernel, &kernel).map_err(io_err("renaming the kernel"))?;
    fs::write(&release_file, format!("{kernel_release}\n"))
        .map_err(io_err("writing kernel-release"))?;
    fs::write(&recipe, format!("{}\n", recipe_hash()))
        .map_err(io_err("writing the recipe hash"))?;
    eprintln!(
        "guest image: kernel {kernel_release}, initramfs {} KiB in {}",
        bytes.len() / 1024,
        dir.display()
    );
    Ok(GuestImage {
        kernel,
        initramfs,
        kernel_release,
    })
}

/// The uncompressed kernel ELF inside a bzImage. QEMU boots it directly through its PVH entry
/// note, skipping the firmware's real-mode loader and the in-guest decompression: about 3 s
/// less per boot under TCG. Needs the host's `xz` (Debian compresses the payload with xz).
fn extract_vmlinux(bzimage: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Write;
    // Boot protocol header (Documentation/x86/boot.rst): "HdrS" at 0x202, setup_sects at
    // 0x1f1, payload_offset/payload_length at 0x248/0x24c (relative to the protected-mode code).
    if bzimage.get(0x202..0x206) != Some(b"HdrS") {
        return Err("not a bzImage".into());
    }
    let u32_at = |off: usize| -> Result<usize, String> {
        let b = bzimage
            .get(off..off + 4)
            .ok_or("truncated bzImage header")?;
        usize::try_from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])).map_err(|e| e.to_string())
    };
    let setup_sects = usize::from(*bzimage.get(0x1f1).ok_or("truncated bzImage header")?);
    let start = (setup_sects + 1) * 512 + u32_at(0x248)?;
    let payload = start
        .checked_add(u32_at(0x24c)?)
        .and_then(|end| bzimage.get(start..end))
        .ok_or("payload outside the bzImage")?;
    if !payload.starts_with(b"\xfd7zXZ\0") {
        return Err("payload is not xz-compressed".into());
    }
    let mut child = Command::new("xz")
        .args(["-dc", "--single-stream"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("running xz ({e}); apt-get install xz-utils"))?;
    let mut stdin = child.stdin.take().ok_or("xz stdin")?;
    let payload = payload.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&payload));
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let _ = feeder.join();
    // xz may complain about the padding after the stream; the ELF must be complete anyway.
    let elf = out.stdout;
    if !elf.starts_with(b"\x7fELF") {
        return Err(format!("xz gave no ELF ({})", out.status));
    }
    let note = Elf::parse(&elf)?;
    if note.section(".notes").is_none() && note.section(".note.Xen").is_none() {
        return Err("vmlinux has no note section (no PVH entry)".into());
    }
    Ok(elf)
}

/// Reads `rel` inside `root`, following symlinks (absolute ones relative to `root`, not to the
/// host). Returns the file's bytes and mode.
fn read_in_root(root: &Path, rel: &str) -> Result<(Vec<u8>, u32), GuestError> {
    use std::os::unix::fs::PermissionsExt;
    let mut rel = PathBuf::from(rel.trim_start_matches('/'));
    for _ in 0..32 {
        let p = root.join(&rel);
        let meta = fs::symlink_metadata(&p).map_err(io_err(format!("stat {}", p.display())))?;
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&p).map_err(io_err(format!("readlink {}", p.display())))?;
            rel = if target.is_absolute() {
                target.strip_prefix("/").unwrap_or(&target).to_path_buf()
            } else {
                normalize(&rel.parent().unwrap_or(Path::new("")).join(target))
            };
            continue;
        }
        let data = fs::read(&p).map_err(io_err(format!("reading {}", p.display())))?;
        return Ok((data, meta.permissions().mode()));
    }
    Err(GuestError::Recipe(format!(
        "symlink loop at {}",
        rel.display()
    )))
}

/// Resolves `.` and `..` lexically.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Finds a shared library by soname: in the unpacked packages, then on the host.
fn find_library(root: &Path, soname: &str) -> Result<Vec<u8>, GuestError> {
    for dir in LIB_DIRS {
        let rel = format!("{dir}/{soname}");
        if fs::symlink_metadata(root.join(&rel)).is_ok() {
            return read_in_root(root, &rel).map(|(d, _)| d);
        }
    }
    for dir in HOST_LIB_DIRS {
        let p = Path::new(dir).join(soname);
        if p.exists() {
            return fs::read(&p).map_err(io_err(format!("reading {}", p.display())));
        }
    }
    Err(GuestError::Recipe(format!(
        "shared library {soname} is in neither the downloaded packages nor the host's {HOST_LIB_DIRS:?}"
    )))
}

/// Adds the binaries and the closure of their shared libraries (and the dynamic loader).
fn add_binaries(root: &Path, archive: &mut Archive) -> Result<(), GuestError> {
    let mut pending: Vec<Vec<u8>> = Vec::new();
    for (src, dst) in BINARIES {
        let (data, _) = read_in_root(root, src)?;
        pending.push(data.clone());
        archive.insert(dst, Entry::File { data, mode: 0o755 });
    }
    let mut seen = BTreeSet::new();
    while let Some(data) = pending.pop() {
        let elf = Elf::parse(&data).map_err(GuestError::Recipe)?;
        if let Some(interp) = elf.interp() {
            let interp = interp.to_string();
            if !archive.contains(&interp) {
                let soname = interp.rsplit('/').next().unwrap_or(&interp);
                let lib = find_library(root, soname)?;
                archive.insert(
                    &interp,
                    Entry::File {
                        data: lib.clone(),
                        mode: 0o755,
                    },
                );
                archive.insert(
                    &format!("lib/x86_64-linux-gnu/{soname}"),
                    Entry::File {
                        data: lib,
                        mode: 0o755,
                    },
                );
            }
        }
        for soname in elf.needed().map_err(GuestError::Recipe)? {
            if !seen.insert(soname.clone()) {
                continue;
            }
            let lib = find_library(root, &soname)?;
            pending.push(lib.clone());
            archive.insert(
                &format!("lib/x86_64-linux-gnu/{soname}"),
                Entry::File {
                    data: lib,
                    mode: 0o755,
                },
            );
        }
    }
    Ok(())
}

/// Adds [`MODULES`] and their dependencies, `/etc/e2e/modules` (load order, paths relative to
/// `/lib/modules/<release>/`) and a `modules.dep` for ad-hoc `modprobe`. Returns the release.
fn add_modules(root: &Path, archive: &mut Archive) -> Result<String, GuestError> {
    let modroot = root.join("lib").join("modules");
    let mut releases: Vec<String> = fs::read_dir(&modroot)
        .map_err(io_err(format!("listing {}", modroot.display())))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    releases.sort();
    let release = match releases.as_slice() {
        [one] => one.clone(),
        other => {
            return Err(GuestError::Recipe(format!(
                "expected one kernel in the packages, found {other:?}"
            )))
        }
    };
    let base = modroot.join(&release);

    // Module name (with '_') → path relative to `base`.
    let mut index = BTreeMap::new();
    let mut stack = vec![base.join("kernel")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).map_err(io_err(format!("listing {}", d.display())))? {
            let p = e.map_err(io_err("listing modules"))?.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(name) = p.file_name().and_then(|n| n.to_str()) {
                if let Some(stem) = name.strip_suffix(".ko") {
                    let rel = p
                        .strip_prefix(&base)
                        .unwrap_or(&p)
                        .to_string_lossy()
                        .to_string();
                    index.insert(stem.replace('-', "_"), rel);
                }
            }
        }
    }

    // Depth-first, dependencies before dependants.
    let mut order: Vec<String> = Vec::new();
    let mut deps_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
    fn visit(
        name: &str,
        base: &Path,
        index: &BTreeMap<String, String>,
        deps_of: &mut BTreeMap<String, Vec<String>>,
        order: &mut Vec<String>,
        depth: usize,
    ) -> Result<(), GuestError> {
        let key = name.replace('-', "_");
        if deps_of.contains_key(&key) {
            return Ok(());
        }
        if depth > 32 {
            return Err(GuestError::Recipe(format!(
                "module dependency loop at {name}"
            )));
        }
        let rel = index.get(&key).ok_or_else(|| {
            GuestError::Recipe(format!("kernel module {name} not in the package"))
        })?;
        let data = fs::read(base.join(rel)).map_err(io_err(format!("reading {rel}")))?;
        let deps = Elf::parse(&data)
            .map_err(|e| GuestError::Recipe(format!("{rel}: {e}")))?
            .module_depends();
        deps_of.insert(key.clone(), deps.clone());
        for d in &deps {
            visit(d, base, index, deps_of, order, depth + 1)?;
        }
        order.push(key);
        Ok(())
    }
    for m in MODULES {
        visit(m, &base, &index, &mut deps_of, &mut order, 0)?;
    }

    let mut load_list = String::new();
    let mut modules_dep = String::new();
    for key in &order {
        let rel = &index[key];
        let data = fs::read(base.join(rel)).map_err(io_err(format!("reading {rel}")))?;
        archive.insert(
            &format!("lib/modules/{release}/{rel}"),
            Entry::File { data, mode: 0o644 },
        );
        load_list.push_str(rel);
        load_list.push('\n');
        // modules.dep lists every transitive dependency, loadable right to left.
        let mut closure = BTreeSet::new();
        let mut todo = deps_of[key].clone();
        while let Some(d) = todo.pop() {
            let d = d.replace('-', "_");
            if closure.insert(d.clone()) {
                todo.extend(deps_of.get(&d).cloned().unwrap_or_default());
            }
        }
        let deps: Vec<&str> = order
            .iter()
            .rev()
            .filter(|m| closure.contains(*m))
            .filter_map(|m| index.get(m).map(String::as_str))
            .collect();
        modules_dep.push_str(&format!("{rel}: {}\n", deps.join(" ")));
    }
    archive.insert(
        "etc/e2e/modules",
        Entry::File {
            data: load_list.into_bytes(),
            mode: 0o644,
        },
    );
    archive.insert(
        &format!("lib/modules/{release}/modules.dep"),
        Entry::File {
            data: modules_dep.into_bytes(),
            mode: 0o644,
        },
    );
    Ok(release)
}
