//! A bdev on a regular file or a block device (`bdev_aio_create`). Deallocate punches holes
//! (regular files) so space really returns to the filesystem.
//!
//! ## I/O engines ([`IoEngine`])
//!
//! Data moves through **io_uring where the kernel allows it, else positional I/O**
//! (`pread`/`pwrite`/`fdatasync`). At open each bdev tries to set up a small ring of its own
//! ([`RING_ENTRIES`] entries) and to register its file with it (a fixed file: no file-table
//! lookup per request). Where that fails (a kernel without io_uring, `ENOSYS`/`EPERM`,
//! `/proc/sys/kernel/io_uring_disabled`, a seccomp filter) one `info!` line says so, once per
//! process, and the bdev uses positional I/O. [`IoEngine::Uring`] makes the open fail
//! instead; [`IoEngine::Positional`] never tries. [`FileBdev::engine`] tells which is in use.
//!
//! The [`Bdev`] trait stays synchronous: every call submits its requests and waits for all
//! of their completions before it returns, so the ring is empty between calls. One call
//! batches several requests into one submission where it can: [`Bdev::read_segments`] (a
//! thin volume's data blocks of one request) goes to the kernel as one `io_uring_enter`.
//!
//! With the default [`IoEngine::Auto`] only [`Bdev::read_segments`] batches of two or more
//! segments on an `O_DIRECT` bdev go through the ring; single requests (a read, a write, a
//! flush, a fallocate) and batches of cached data use positional I/O.
//! [`IoEngine::Uring`] sends everything through the ring.
//! Why: `bdev_bench` (both engines in the same run; Linux 6.18, ext4 on a virtio disk, two
//! shared vCPUs) measured a single 4 KiB read of cached data at about 1.3–1.4× the cost of
//! `pread` through io_uring, and a buffered 4 KiB write at 3–13× (the kernel hands such
//! writes to io_uring's worker threads), while a 128 KiB `O_DIRECT` read of a thin volume,
//! whose two or three data-block pieces go to the disk in one submission, took 0.65–0.72×
//! the time of reading them one after the other, whereas a batch of cached buffered reads
//! cost about 1.1–1.2× its positional cost (so those stay positional).
//!
//! Invariants:
//! * a buffer handed to the kernel stays borrowed until the kernel completed its request:
//!   requests are queued through a `Batch` that borrows the buffers and that is consumed
//!   by waiting for every completion (also after an error);
//! * never more requests in flight than the ring's submission entries (≤ its completion
//!   entries: the completion queue cannot overflow);
//! * every completion is checked: its tag must name a request in flight, its byte count
//!   must not exceed what was asked; short transfers are resubmitted for the rest,
//!   `EINTR`/`EAGAIN` completions are retried (at most `MAX_RETRIES` times), any other
//!   `-errno` becomes [`BdevError::Io`] naming the bdev, the operation and the offset;
//! * a read that meets the end of a regular file (the file shrank under the bdev) fills the
//!   rest with zeroes, on both engines; on a block device it is an error;
//! * a ring whose `io_uring_enter` fails with anything but `EINTR`/`EAGAIN`/`EBUSY` is
//!   dropped after its requests in flight completed, and the bdev goes on with positional
//!   I/O (if they never complete the process aborts rather than let the kernel write into
//!   memory that has been given back).
//!
//! Optionally with `O_DIRECT` ([`FileBdev::open_direct`]): I/O bypasses the page cache, so a
//! completed write is on the device (its volatile cache aside) and the host's memory is not
//! spent caching a volume. Direct I/O needs block-aligned memory; the bdev moves data
//! through an aligned bounce buffer of its own (one copy, as the page cache costs too), on
//! either engine.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use std::fs::{File, OpenOptions};
use std::marker::PhantomData;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use io_uring::{opcode, types, IoUring};
use rustix::fs::FallocateFlags;
use rustix::io::Errno;

use super::{check_range, Bdev, BdevError};

/// How a [`FileBdev`] moves data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoEngine {
    /// io_uring where the kernel allows it, else positional I/O (the default).
    Auto,
    /// io_uring; opening fails where the kernel refuses it.
    Uring,
    /// Positional I/O (`pread`/`pwrite`/`fdatasync`), no ring.
    Positional,
}

/// File-backed bdev.
#[derive(Debug)]
pub struct FileBdev {
    name: String,
    file: File,
    block_size: u32,
    num_blocks: u64,
    uuid: [u8; 16],
    /// With `O_DIRECT`: the bounce buffer (aligned window inside, see [`Bounce`]).
    direct: Option<Bounce>,
    /// A regular file (a read past its end returns zeroes), not a block device.
    regular: bool,
    /// The io_uring engine; `None`: positional I/O.
    ring: Option<Ring>,
    /// Single requests go through the ring too ([`IoEngine::Uring`]); otherwise only
    /// [`Bdev::read_segments`] batches of two or more with `O_DIRECT` do ([`IoEngine::Auto`],
    /// see the module notes).
    ring_singles: bool,
}

/// Bytes moved per direct I/O call.
const BOUNCE_BYTES: usize = 1 << 20;
/// Alignment of direct I/O memory (covers 512- and 4096-byte logical blocks).
const DIRECT_ALIGN: usize = 4096;
/// Submission entries of a bdev's ring (and the most requests in flight).
pub const RING_ENTRIES: u32 = 64;
/// Most bytes one request asks for (a longer transfer is resubmitted for the rest).
const MAX_OP_BYTES: usize = 1 << 30;
/// `EINTR`/`EAGAIN` completions tolerated per request before it fails.
const MAX_RETRIES: u32 = 1000;
/// How long a broken ring's requests in flight may take to complete before the process
/// aborts (see the module invariants).
const BROKEN_RING_DRAIN: Duration = Duration::from_secs(30);

/// A heap buffer with a `DIRECT_ALIGN`-aligned window of `BOUNCE_BYTES`.
#[derive(Debug)]
struct Bounce {
    mem: Vec<u8>,
    off: usize,
}

impl Bounce {
    fn new() -> Self {
        let mem = vec![0u8; BOUNCE_BYTES + DIRECT_ALIGN];
        let addr = mem.as_ptr() as usize;
        let off = addr.next_multiple_of(DIRECT_ALIGN) - addr;
        Self { mem, off }
    }

    fn window(&mut self, n: usize) -> &mut [u8] {
        &mut self.mem[self.off..self.off + n]
    }
}

/// What one request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Read,
    Write,
    /// `fdatasync`.
    Fsync,
    /// `fallocate` with these mode flags over `len` bytes at `off`.
    Fallocate(i32),
}

impl OpKind {
    fn verb(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Write => "write",
            OpKind::Fsync => "fdatasync",
            OpKind::Fallocate(_) => "fallocate",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpState {
    /// Not (or no longer) with the kernel; more to do.
    Queued,
    /// Pushed to the submission queue; its completion has not been reaped.
    InFlight,
    /// Finished (successfully or not).
    Done,
}

/// One request of a [`Batch`].
#[derive(Debug, Clone, Copy)]
struct Op {
    kind: OpKind,
    /// The buffer's address (provenance exposed), for reads and writes. An address rather
    /// than a pointer so that the reused list keeps [`FileBdev`] `Send`; the [`Batch`] that
    /// queued the op borrows the buffer until the op is done.
    addr: usize,
    /// Bytes of the transfer (of the range, for fallocate).
    len: usize,
    /// File offset in bytes.
    off: u64,
    /// Bytes transferred so far.
    done: usize,
    retries: u32,
    state: OpState,
}

/// What a completion means for its op.
enum Outcome {
    Done,
    /// Submit again (the rest of a short transfer, or after `EINTR`/`EAGAIN`).
    Again,
    Failed(String),
}

impl Op {
    /// Bytes the next submission of this op asks for.
    fn chunk(&self) -> usize {
        (self.len - self.done).min(MAX_OP_BYTES)
    }

    /// The submission entry for the rest of this op, tagged with its index.
    fn sqe(&self, idx: usize) -> io_uring::squeue::Entry {
        let fd = types::Fixed(0);
        // `chunk() <= MAX_OP_BYTES < u32::MAX`.
        let n = self.chunk() as u32;
        let at = self.off + self.done as u64;
        let entry = match self.kind {
            OpKind::Read => {
                let p = std::ptr::with_exposed_provenance_mut::<u8>(self.addr + self.done);
                opcode::Read::new(fd, p, n).offset(at).build()
            }
            OpKind::Write => {
                let p = std::ptr::with_exposed_provenance::<u8>(self.addr + self.done);
                opcode::Write::new(fd, p, n).offset(at).build()
            }
            OpKind::Fsync => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
            OpKind::Fallocate(mode) => opcode::Fallocate::new(fd, self.len as u64)
                .offset(self.off)
                .mode(mode)
                .build(),
        };
        entry.user_data(idx as u64)
    }

    /// Applies the completion result `res` (bytes or `-errno`).
    fn complete(&mut self, res: i32, regular: bool) -> Outcome {
        if res < 0 {
            // Any value may come back: compare raw numbers, never build a typed errno from it.
            let errno = res.checked_neg().unwrap_or(i32::MAX);
            let retry = [Errno::INTR, Errno::AGAIN].map(Errno::raw_os_error);
            if retry.contains(&errno) && self.retries < MAX_RETRIES {
                self.retries += 1;
                return Outcome::Again;
            }
            return Outcome::Failed(std::io::Error::from_raw_os_error(errno).to_string());
        }
        if matches!(self.kind, OpKind::Fsync | OpKind::Fallocate(_)) {
            return Outcome::Done;
        }
        let asked = self.chunk();
        let got = res as usize;
        if got > asked {
            return Outcome::Failed(format!(
                "the kernel reported {got} bytes for a {asked}-byte request"
            ));
        }
        if got == 0 {
            if self.kind == OpKind::Read && regular {
                let rest = self.len - self.done;
                let p = std::ptr::with_exposed_provenance_mut::<u8>(self.addr + self.done);
                // SAFETY: `[addr, addr + len)` is a `&mut [u8]` the op's `Batch` borrows
                // exclusively until the batch is consumed, which has not happened (we are
                // reaping its completions); the kernel is done with this request, so nothing
                // else accesses `[addr + done, addr + len)`.
                unsafe { std::ptr::write_bytes(p, 0, rest) };
                self.done = self.len;
                return Outcome::Done;
            }
            return Outcome::Failed(match self.kind {
                OpKind::Read => "unexpected end of the device".into(),
                _ => "the kernel wrote 0 bytes".into(),
            });
        }
        self.done += got;
        if self.done < self.len {
            Outcome::Again
        } else {
            Outcome::Done
        }
    }
}

/// A bdev's io_uring: the file registered as fixed file 0.
struct Ring {
    uring: IoUring,
    /// The kernel has `IORING_OP_FALLOCATE`.
    fallocate: bool,
    /// The requests of the current [`Batch`] (empty between calls; kept for its capacity).
    ops: Vec<Op>,
    /// `io_uring_enter` failed for good: the owner drops this ring.
    broken: bool,
    /// `io_uring_enter` calls so far (tests check that a batch is one submission).
    enters: u64,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("sq_entries", &self.uring.params().sq_entries())
            .field("fallocate", &self.fallocate)
            .finish()
    }
}

/// Counters of one [`Batch::run`].
struct Progress {
    /// Ops `[0, next)` were submitted at least once.
    next: usize,
    /// Ops before `next` back in `Queued` state.
    requeued: usize,
    in_flight: usize,
    err: Option<BdevError>,
}

fn transient(e: &std::io::Error) -> bool {
    let transient = [Errno::INTR, Errno::AGAIN, Errno::BUSY].map(Errno::raw_os_error);
    e.raw_os_error().is_some_and(|n| transient.contains(&n))
}

impl Ring {
    /// Sets up a ring for `file`: checks the opcodes we use, registers the file.
    fn setup(file: &File) -> std::io::Result<Ring> {
        // Cooperative task running (5.19) saves interrupts; older kernels refuse the flag.
        let uring = match IoUring::builder().setup_coop_taskrun().build(RING_ENTRIES) {
            Ok(u) => u,
            Err(_) => IoUring::new(RING_ENTRIES)?,
        };
        let mut probe = io_uring::Probe::new();
        uring.submitter().register_probe(&mut probe)?;
        for (code, what) in [
            (opcode::Read::CODE, "READ"),
            (opcode::Write::CODE, "WRITE"),
            (opcode::Fsync::CODE, "FSYNC"),
        ] {
            if !probe.is_supported(code) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    format!("the kernel's io_uring lacks IORING_OP_{what}"),
                ));
            }
        }
        uring.submitter().register_files(&[file.as_raw_fd()])?;
        Ok(Ring {
            uring,
            fallocate: probe.is_supported(opcode::Fallocate::CODE),
            ops: Vec::with_capacity(RING_ENTRIES as usize),
            broken: false,
            enters: 0,
        })
    }

    /// An empty batch whose buffers live for `'b`.
    fn batch<'b>(&mut self) -> Batch<'_, 'b> {
        self.ops.clear();
        Batch {
            ring: self,
            _bufs: PhantomData,
        }
    }

    /// Pushes queued ops while the ring has room.
    fn queue(&mut self, p: &mut Progress) {
        let depth = self.uring.params().sq_entries() as usize;
        let Ring { uring, ops, .. } = self;
        let mut sq = uring.submission();
        while p.in_flight < depth {
            let idx = if p.requeued > 0 {
                match ops[..p.next]
                    .iter()
                    .position(|o| o.state == OpState::Queued)
                {
                    Some(i) => i,
                    None => {
                        p.requeued = 0;
                        continue;
                    }
                }
            } else if p.next < ops.len() {
                p.next
            } else {
                break;
            };
            let sqe = ops[idx].sqe(idx);
            // SAFETY: the entry names fixed file 0 (registered at setup) and, for reads and
            // writes, a range inside a buffer the current `Batch` borrows (shared for
            // writes, exclusive for reads) until every op of the batch completed: `run`
            // returns only when nothing is in flight, and the batch cannot be dropped
            // before `run` returns.
            if unsafe { sq.push(&sqe) }.is_err() {
                break;
            }
            if idx == p.next {
                p.next += 1;
            } else {
                p.requeued -= 1;
            }
            ops[idx].state = OpState::InFlight;
            p.in_flight += 1;
        }
    }

    /// Takes every available completion.
    fn reap(&mut self, p: &mut Progress, name: &str, regular: bool) {
        let Ring {
            uring, ops, broken, ..
        } = self;
        for cqe in uring.completion() {
            let tag = cqe.user_data();
            let op = usize::try_from(tag)
                .ok()
                .and_then(|i| ops.get_mut(i))
                .filter(|o| o.state == OpState::InFlight);
            let Some(op) = op else {
                *broken = true;
                p.err.get_or_insert_with(|| {
                    BdevError::Io(format!(
                        "{name}: io_uring completion for no request in flight (tag {tag})"
                    ))
                });
                continue;
            };
            p.in_flight -= 1;
            op.state = OpState::Done;
            match op.complete(cqe.result(), regular) {
                Outcome::Done => {}
                Outcome::Again => {
                    op.state = OpState::Queued;
                    p.requeued += 1;
                }
                Outcome::Failed(why) => {
                    let (verb, len, off) = (op.kind.verb(), op.len, op.off);
                    p.err.get_or_insert_with(|| {
                        BdevError::Io(format!(
                            "{name}: {verb} of {len} bytes at byte {off} failed (io_uring): {why}"
                        ))
                    });
                }
            }
        }
    }

    /// `io_uring_enter` failed with `e` for good: waits (polling the completion queue) for
    /// the requests the kernel took, then marks the ring broken.
    fn drain_broken(&mut self, p: &mut Progress, e: &std::io::Error, name: &str, regular: bool) {
        self.broken = true;
        log::error!("{name}: io_uring_enter failed: {e}; this bdev falls back to positional I/O");
        p.err
            .get_or_insert_with(|| BdevError::Io(format!("{name}: io_uring_enter failed: {e}")));
        // Entries still in the submission queue never reached the kernel.
        let unseen = self.uring.submission().len();
        let start = Instant::now();
        loop {
            self.reap(p, name, regular);
            if p.in_flight <= unseen {
                return;
            }
            if start.elapsed() > BROKEN_RING_DRAIN {
                log::error!(
                    "{name}: {} io_uring requests never completed; aborting rather than \
                     handing their buffers back while the kernel may still use them",
                    p.in_flight - unseen
                );
                std::process::abort();
            }
            // Completions are posted as the thread returns from any system call.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Requests queued on a ring, run together: one submission, then waiting for all. `'b` is
/// the life of the buffers: they stay borrowed while the batch lives, and the batch lives
/// until all its requests completed.
struct Batch<'r, 'b> {
    ring: &'r mut Ring,
    _bufs: PhantomData<&'b mut [u8]>,
}

impl<'b> Batch<'_, 'b> {
    fn push(&mut self, kind: OpKind, addr: usize, len: usize, off: u64) {
        self.ring.ops.push(Op {
            kind,
            addr,
            len,
            off,
            done: 0,
            retries: 0,
            state: OpState::Queued,
        });
    }

    /// Reads `buf.len()` bytes at byte `off`.
    fn read(&mut self, off: u64, buf: &'b mut [u8]) {
        let addr = buf.as_mut_ptr().expose_provenance();
        self.push(OpKind::Read, addr, buf.len(), off);
    }

    /// Writes `data` at byte `off`.
    fn write(&mut self, off: u64, data: &'b [u8]) {
        let addr = data.as_ptr().expose_provenance();
        self.push(OpKind::Write, addr, data.len(), off);
    }

    fn fsync(&mut self) {
        self.push(OpKind::Fsync, 0, 0, 0);
    }

    fn fallocate(&mut self, flags: FallocateFlags, off: u64, len: u64) {
        // A range of a checked LBA range: it fits the address space of any 64-bit host.
        self.push(OpKind::Fallocate(flags.bits() as i32), 0, len as usize, off);
    }

    /// Submits every request and waits for all of them; the first failure wins (the others
    /// still complete before this returns).
    fn run(self, name: &str, regular: bool) -> Result<(), BdevError> {
        let ring = &mut *self.ring;
        let mut p = Progress {
            next: 0,
            requeued: 0,
            in_flight: 0,
            err: None,
        };
        loop {
            if p.err.is_none() {
                ring.queue(&mut p);
            }
            if p.in_flight == 0 {
                break;
            }
            ring.enters += 1;
            match ring.uring.submit_and_wait(p.in_flight) {
                Ok(_) => {}
                Err(e) if transient(&e) => {
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        std::thread::yield_now();
                    }
                }
                Err(e) => {
                    ring.drain_broken(&mut p, &e, name, regular);
                    break;
                }
            }
            ring.reap(&mut p, name, regular);
        }
        p.err.map_or(Ok(()), Err)
    }
}

impl Drop for Batch<'_, '_> {
    fn drop(&mut self) {
        self.ring.ops.clear();
    }
}

/// Whether the info line about io_uring being unavailable was logged (once per process).
static FALLBACK_LOGGED: AtomicBool = AtomicBool::new(false);

/// Why io_uring is off, from the sysctl, for the messages.
fn uring_sysctl_hint() -> String {
    match std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        Ok(s) if s.trim() != "0" => {
            format!(" (kernel.io_uring_disabled = {})", s.trim())
        }
        _ => String::new(),
    }
}

fn pos_err(name: &str, verb: &str, len: usize, off: u64, e: &std::io::Error) -> BdevError {
    BdevError::Io(format!(
        "{name}: {verb} of {len} bytes at byte {off} failed: {e}"
    ))
}

/// `pread` until `buf` is full; the end of a regular file reads as zeroes.
fn pread_full(file: &File, buf: &mut [u8], off: u64, regular: bool) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) if regular => {
                buf[done..].fill(0);
                return Ok(());
            }
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "unexpected end of the device",
                ))
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl FileBdev {
    /// Opens `path` (which must exist) with `block_size`-byte blocks ([`IoEngine::Auto`]).
    pub fn open(
        name: &str,
        path: &Path,
        block_size: u32,
        uuid: [u8; 16],
    ) -> Result<Self, BdevError> {
        Self::open_with_engine(name, path, block_size, uuid, false, IoEngine::Auto)
    }

    /// Opens `path` with `O_DIRECT` (see the module notes; [`IoEngine::Auto`]). Fails with a
    /// clear error where the filesystem refuses direct I/O (tmpfs, for one).
    pub fn open_direct(
        name: &str,
        path: &Path,
        block_size: u32,
        uuid: [u8; 16],
    ) -> Result<Self, BdevError> {
        Self::open_with_engine(name, path, block_size, uuid, true, IoEngine::Auto)
    }

    /// Opens `path`, with `O_DIRECT` when `direct`, moving data with `engine`.
    pub fn open_with_engine(
        name: &str,
        path: &Path,
        block_size: u32,
        uuid: [u8; 16],
        direct: bool,
        engine: IoEngine,
    ) -> Result<Self, BdevError> {
        if block_size != 512 && block_size != 4096 {
            return Err(BdevError::Io(format!(
                "block size {block_size} is not 512 or 4096"
            )));
        }
        let mut opts = OpenOptions::new();
        opts.read(true).write(true);
        if direct {
            opts.custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32);
        }
        let file = opts.open(path).map_err(|e| {
            if direct && e.kind() == std::io::ErrorKind::InvalidInput {
                BdevError::Io(format!(
                    "{}: the filesystem does not support O_DIRECT",
                    path.display()
                ))
            } else {
                BdevError::Io(format!("{}: {e}", path.display()))
            }
        })?;
        Self::from_file(name, file, block_size, uuid, direct, engine)
    }

    /// A bdev on an open `file` (`direct`: it was opened with `O_DIRECT`).
    fn from_file(
        name: &str,
        mut file: File,
        block_size: u32,
        uuid: [u8; 16],
        direct: bool,
        engine: IoEngine,
    ) -> Result<Self, BdevError> {
        let io = |e: std::io::Error| BdevError::Io(format!("{name}: {e}"));
        let regular = file.metadata().map_err(io)?.file_type().is_file();
        let len = std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0)).map_err(io)?;
        let ring = match engine {
            IoEngine::Positional => None,
            IoEngine::Uring => Some(Ring::setup(&file).map_err(|e| {
                BdevError::Io(format!(
                    "{name}: io_uring unavailable: {e}{}",
                    uring_sysctl_hint()
                ))
            })?),
            IoEngine::Auto => match Ring::setup(&file) {
                Ok(r) => Some(r),
                Err(e) => {
                    if !FALLBACK_LOGGED.swap(true, Ordering::Relaxed) {
                        log::info!(
                            "io_uring unavailable ({e}{}): file bdevs use positional I/O",
                            uring_sysctl_hint()
                        );
                    }
                    None
                }
            },
        };
        Ok(FileBdev {
            name: name.into(),
            file,
            block_size,
            num_blocks: len / u64::from(block_size),
            uuid,
            direct: direct.then(Bounce::new),
            regular,
            ring,
            ring_singles: engine == IoEngine::Uring,
        })
    }

    /// Whether the file is open with `O_DIRECT`.
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// The engine in use: [`IoEngine::Uring`] (everything through the ring),
    /// [`IoEngine::Auto`] (a ring for [`Bdev::read_segments`] batches, positional I/O for
    /// single requests) or [`IoEngine::Positional`] (no ring).
    pub fn engine(&self) -> IoEngine {
        match (&self.ring, self.ring_singles) {
            (None, _) => IoEngine::Positional,
            (Some(_), true) => IoEngine::Uring,
            (Some(_), false) => IoEngine::Auto,
        }
    }

    fn offset(&self, lba: u64, bytes: usize) -> Result<u64, BdevError> {
        let bs = u64::from(self.block_size);
        if !(bytes as u64).is_multiple_of(bs) {
            return Err(BdevError::Io(
                "transfer is not a whole number of blocks".into(),
            ));
        }
        check_range(lba, bytes as u64 / bs, self.num_blocks)?;
        Ok(lba * bs)
    }

    /// Drops a ring that failed for good (its requests completed): positional I/O from now.
    fn settle<T>(&mut self, r: Result<T, BdevError>) -> Result<T, BdevError> {
        if self.ring.as_ref().is_some_and(|r| r.broken) {
            self.ring = None;
        }
        r
    }

    /// Reads `buf.len()` bytes at byte `off` (a checked range).
    fn read_bytes(&mut self, off: u64, buf: &mut [u8]) -> Result<(), BdevError> {
        let FileBdev {
            name,
            file,
            direct,
            regular,
            ring,
            ring_singles,
            ..
        } = self;
        let (name, regular) = (name.as_str(), *regular);
        match (ring.as_mut().filter(|_| *ring_singles), direct.as_mut()) {
            (Some(ring), None) => {
                let mut b = ring.batch();
                b.read(off, buf);
                b.run(name, regular)
            }
            (None, None) => pread_full(file, buf, off, regular)
                .map_err(|e| pos_err(name, "read", buf.len(), off, &e)),
            (ring, Some(bounce)) => {
                let mut ring = ring;
                for (i, chunk) in buf.chunks_mut(BOUNCE_BYTES).enumerate() {
                    let at = off + (i * BOUNCE_BYTES) as u64;
                    let w = bounce.window(chunk.len());
                    match ring.as_deref_mut() {
                        Some(ring) => {
                            let mut b = ring.batch();
                            b.read(at, w);
                            b.run(name, regular)?;
                        }
                        None => pread_full(file, w, at, regular)
                            .map_err(|e| pos_err(name, "read", chunk.len(), at, &e))?,
                    }
                    chunk.copy_from_slice(bounce.window(chunk.len()));
                }
                Ok(())
            }
        }
    }

    /// Writes `data` at byte `off` (a checked range).
    fn write_bytes(&mut self, off: u64, data: &[u8]) -> Result<(), BdevError> {
        let FileBdev {
            name,
            file,
            direct,
            ring,
            ring_singles,
            ..
        } = self;
        let name = name.as_str();
        match (ring.as_mut().filter(|_| *ring_singles), direct.as_mut()) {
            (Some(ring), None) => {
                let mut b = ring.batch();
                b.write(off, data);
                b.run(name, false)
            }
            (None, None) => file
                .write_all_at(data, off)
                .map_err(|e| pos_err(name, "write", data.len(), off, &e)),
            (ring, Some(bounce)) => {
                let mut ring = ring;
                for (i, chunk) in data.chunks(BOUNCE_BYTES).enumerate() {
                    let at = off + (i * BOUNCE_BYTES) as u64;
                    let w = bounce.window(chunk.len());
                    w.copy_from_slice(chunk);
                    match ring.as_deref_mut() {
                        Some(ring) => {
                            let mut b = ring.batch();
                            b.write(at, w);
                            b.run(name, false)?;
                        }
                        None => file
                            .write_all_at(w, at)
                            .map_err(|e| pos_err(name, "write", chunk.len(), at, &e))?,
                    }
                }
                Ok(())
            }
        }
    }

    fn sync(&mut self) -> Result<(), BdevError> {
        match self.ring.as_mut().filter(|_| self.ring_singles) {
            Some(ring) => {
                let mut b = ring.batch();
                b.fsync();
                b.run(&self.name, false)
            }
            None => self
                .file
                .sync_data()
                .map_err(|e| BdevError::Io(format!("{}: fdatasync failed: {e}", self.name))),
        }
    }

    /// `fallocate(flags)` over a checked block range; `Err` when the file refuses it.
    fn fallocate(&mut self, flags: FallocateFlags, lba: u64, count: u64) -> Result<(), BdevError> {
        let bs = u64::from(self.block_size);
        match self
            .ring
            .as_mut()
            .filter(|r| r.fallocate && self.ring_singles)
        {
            Some(ring) => {
                let mut b = ring.batch();
                b.fallocate(flags, lba * bs, count * bs);
                b.run(&self.name, false)
            }
            None => rustix::fs::fallocate(&self.file, flags, lba * bs, count * bs)
                .map_err(|e| BdevError::Io(format!("{}: fallocate failed: {e}", self.name))),
        }
    }

    /// Reads segments through one ring submission (the bounce buffer holds as many as fit
    /// with `O_DIRECT`). The ranges are checked.
    fn ring_read_segments(&mut self, segs: &mut [(u64, &mut [u8])]) -> Result<(), BdevError> {
        let bs = u64::from(self.block_size);
        let FileBdev {
            name,
            direct,
            regular,
            ring,
            ..
        } = self;
        let (name, regular) = (name.as_str(), *regular);
        let Some(ring) = ring.as_mut() else {
            return Err(BdevError::Io(format!("{name}: no io_uring")));
        };
        let Some(bounce) = direct.as_mut() else {
            let mut b = ring.batch();
            for (lba, buf) in segs.iter_mut() {
                b.read(*lba * bs, buf);
            }
            return b.run(name, regular);
        };
        // O_DIRECT: pack consecutive segments into the bounce window, each at an aligned
        // place; one submission per window.
        let mut i = 0;
        while i < segs.len() {
            let (mut j, mut used) = (i, 0usize);
            while j < segs.len() && used + segs[j].1.len() <= BOUNCE_BYTES {
                used = (used + segs[j].1.len()).next_multiple_of(DIRECT_ALIGN);
                j += 1;
            }
            if j == i {
                // Larger than the window: chunk by chunk.
                let (lba, buf) = &mut segs[i];
                for (k, chunk) in buf.chunks_mut(BOUNCE_BYTES).enumerate() {
                    let w = bounce.window(chunk.len());
                    let mut b = ring.batch();
                    b.read(*lba * bs + (k * BOUNCE_BYTES) as u64, w);
                    b.run(name, regular)?;
                    chunk.copy_from_slice(bounce.window(chunk.len()));
                }
                i += 1;
                continue;
            }
            {
                let mut rest = bounce.window(used);
                let mut b = ring.batch();
                for (lba, buf) in &segs[i..j] {
                    let (piece, r) = rest.split_at_mut(buf.len());
                    b.read(*lba * bs, piece);
                    let pad = buf.len().next_multiple_of(DIRECT_ALIGN) - buf.len();
                    let skip = pad.min(r.len());
                    rest = &mut r[skip..];
                }
                b.run(name, regular)?;
            }
            let w = bounce.window(used);
            let mut at = 0;
            for (_, buf) in &mut segs[i..j] {
                let n = buf.len();
                buf.copy_from_slice(&w[at..at + n]);
                at = (at + n).next_multiple_of(DIRECT_ALIGN);
            }
            i = j;
        }
        Ok(())
    }
}

impl Bdev for FileBdev {
    fn name(&self) -> &str {
        &self.name
    }
    fn block_size(&self) -> u32 {
        self.block_size
    }
    fn num_blocks(&self) -> u64 {
        self.num_blocks
    }
    fn uuid(&self) -> [u8; 16] {
        self.uuid
    }
    fn rescan(&mut self) -> Result<u64, BdevError> {
        let len = std::io::Seek::seek(&mut self.file, std::io::SeekFrom::End(0))
            .map_err(|e| BdevError::Io(format!("{}: {e}", self.name)))?;
        self.num_blocks = len / u64::from(self.block_size);
        Ok(self.num_blocks)
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), BdevError> {
        let off = self.offset(lba, buf.len())?;
        let r = self.read_bytes(off, buf);
        self.settle(r)
    }
    fn read_segments(&mut self, segs: &mut [(u64, &mut [u8])]) -> Result<(), BdevError> {
        for (lba, buf) in segs.iter() {
            self.offset(*lba, buf.len())?;
        }
        let batch = segs.len() >= 2 && self.direct.is_some();
        if self.ring.is_none() || !(batch || self.ring_singles) {
            for (lba, buf) in segs.iter_mut() {
                self.read(*lba, buf)?;
            }
            return Ok(());
        }
        let r = self.ring_read_segments(segs);
        self.settle(r)
    }
    fn write(&mut self, lba: u64, data: &[u8], fua: bool) -> Result<(), BdevError> {
        let off = self.offset(lba, data.len())?;
        let mut r = self.write_bytes(off, data);
        if fua && r.is_ok() {
            r = self.sync();
        }
        self.settle(r)
    }
    fn flush(&mut self) -> Result<(), BdevError> {
        let r = self.sync();
        self.settle(r)
    }
    fn write_zeroes(&mut self, lba: u64, count: u64) -> Result<(), BdevError> {
        check_range(lba, count, self.num_blocks)?;
        let flags = FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE;
        let r = self.fallocate(flags, lba, count);
        if self.settle(r).is_ok() {
            return Ok(());
        }
        // Not supported here (some filesystems, block devices): write zeroes (through
        // `write`, so that direct I/O goes through the aligned buffer).
        let bs = u64::from(self.block_size);
        let chunk = vec![0u8; 1 << 20];
        let per = chunk.len() as u64 / bs;
        let mut at = lba;
        while at < lba + count {
            let n = per.min(lba + count - at);
            self.write(at, &chunk[..(n * bs) as usize], false)?;
            at += n;
        }
        Ok(())
    }
    fn deallocate(&mut self, lba: u64, count: u64) -> Result<(), BdevError> {
        check_range(lba, count, self.num_blocks)?;
        let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        let r = self.fallocate(flags, lba, count);
        if self.settle(r).is_ok() {
            return Ok(());
        }
        self.write_zeroes(lba, count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_bdev_round_trip_and_hole_punching() {
        let dir = std::env::temp_dir().join(format!("fbdev-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        File::create(&path).unwrap().set_len(1 << 20).unwrap();
        let mut b = FileBdev::open("f0", &path, 4096, [0; 16]).unwrap();
        assert_eq!(b.num_blocks(), 256);
        b.write(10, &[5u8; 8192], true).unwrap();
        let mut r = [0u8; 8192];
        b.read(10, &mut r).unwrap();
        assert!(r.iter().all(|&x| x == 5));
        b.deallocate(10, 1).unwrap();
        b.read(10, &mut r).unwrap();
        assert!(r[..4096].iter().all(|&x| x == 0) && r[4096..].iter().all(|&x| x == 5));
        b.write_zeroes(11, 1).unwrap();
        b.read(11, &mut r[..4096]).unwrap();
        assert!(r[..4096].iter().all(|&x| x == 0));
        assert!(matches!(
            b.read(255, &mut r),
            Err(BdevError::OutOfRange { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn direct_io_round_trips_through_the_aligned_buffer() {
        let dir = std::env::temp_dir().join(format!("fbdev-direct-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        File::create(&path).unwrap().set_len(8 << 20).unwrap();
        let mut b = FileBdev::open_direct("f0", &path, 512, [0; 16]).unwrap();
        assert!(b.is_direct());
        let fl = rustix::fs::fcntl_getfl(&b.file).unwrap();
        assert!(
            fl.contains(rustix::fs::OFlags::DIRECT),
            "opened without O_DIRECT"
        );
        // Larger than the bounce buffer, at an odd sector: several chunks, unaligned memory.
        let len = BOUNCE_BYTES + 3 * 512;
        let data: Vec<u8> = (0..len).map(|i| (i * 31 + i / 512) as u8).collect();
        b.write(7, &data, true).unwrap();
        let mut back = vec![0u8; len + 1];
        b.read(7, &mut back[1..]).unwrap();
        assert!(
            back[1..] == data[..],
            "direct read returns the direct write"
        );
        b.write_zeroes(8, 2).unwrap();
        b.read(7, &mut back[1..]).unwrap();
        assert!(back[1 + 512..1 + 1536].iter().all(|&x| x == 0));
        drop(b);
        // What went down is on the file for a buffered reader too.
        let mut plain = FileBdev::open("f1", &path, 512, [0; 16]).unwrap();
        let mut r = vec![0u8; 512];
        plain.read(7, &mut r).unwrap();
        assert_eq!(r, data[..512]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod engine_tests {
    use super::*;

    /// A scratch directory, removed on drop.
    struct Tmp(std::path::PathBuf);
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn tmp(name: &str, bytes: u64) -> (Tmp, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("fbdev-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let path = dir.join("f");
        File::create(&path)
            .and_then(|f| f.set_len(bytes))
            .expect("scratch file");
        (Tmp(dir), path)
    }

    fn pattern(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| seed.wrapping_add((i / 509) as u8 ^ i as u8))
            .collect()
    }

    /// Opens with `engine`; a forced io_uring that the kernel refuses fails the test.
    fn open(path: &Path, bs: u32, direct: bool, engine: IoEngine) -> FileBdev {
        let b = FileBdev::open_with_engine("f", path, bs, [0; 16], direct, engine).unwrap_or_else(
            |e| panic!("opening with {engine:?} failed (does this kernel refuse io_uring?): {e}"),
        );
        if engine != IoEngine::Auto {
            assert_eq!(b.engine(), engine, "the engine asked for is the one in use");
        }
        b
    }

    const FORCED: [IoEngine; 2] = [IoEngine::Uring, IoEngine::Positional];

    #[test]
    fn round_trips_on_both_engines() {
        for engine in FORCED {
            let (_t, path) = tmp(&format!("rt-{engine:?}"), 4 << 20);
            let mut b = open(&path, 4096, false, engine);
            assert_eq!(b.num_blocks(), 1024);
            let data = pattern(1, 3 << 20); // several bounce-sized pieces' worth
            b.write(17, &data, false).expect("write");
            b.write(2, &pattern(2, 4096), true).expect("fua write");
            b.flush().expect("flush");
            let mut r = vec![0u8; data.len()];
            b.read(17, &mut r).expect("read");
            assert!(r == data, "{engine:?}: read returns the write");
            let mut one = vec![0u8; 4096];
            b.read(2, &mut one).expect("read");
            assert_eq!(one, pattern(2, 4096));
            b.write_zeroes(18, 2).expect("write zeroes");
            b.deallocate(20, 1).expect("deallocate");
            b.read(17, &mut r[..5 * 4096]).expect("read");
            assert_eq!(&r[..4096], &data[..4096]);
            assert!(
                r[4096..4 * 4096].iter().all(|&x| x == 0),
                "zeroed and punched"
            );
            assert_eq!(&r[4 * 4096..5 * 4096], &data[4 * 4096..5 * 4096]);
            assert!(matches!(
                b.read(1023, &mut r[..8192]),
                Err(BdevError::OutOfRange { .. })
            ));
            assert_eq!(b.engine(), engine, "no error dropped the ring");
            drop(b);
            // What one engine wrote, the other reads.
            let other = if engine == IoEngine::Uring {
                IoEngine::Positional
            } else {
                IoEngine::Uring
            };
            let mut b = open(&path, 512, false, other);
            let mut r2 = vec![0u8; 4096];
            b.read(17 * 8, &mut r2).expect("read");
            assert_eq!(r2, data[..4096]);
        }
    }

    #[test]
    fn auto_batches_through_io_uring_and_does_single_requests_positionally() {
        let (_t, path) = tmp("auto", 1 << 20);
        let available =
            FileBdev::open_with_engine("f", &path, 4096, [0; 16], false, IoEngine::Uring).is_ok();
        let mut auto = open(&path, 4096, false, IoEngine::Auto);
        let want = if available {
            IoEngine::Auto
        } else {
            IoEngine::Positional
        };
        assert_eq!(
            auto.engine(),
            want,
            "Auto keeps a ring where the kernel allows it"
        );
        assert_eq!(
            FileBdev::open("f", &path, 4096, [0; 16])
                .expect("open")
                .engine(),
            want,
            "open means Auto"
        );
        let data = pattern(8, 1 << 20);
        auto.write(0, &data, true).expect("write");
        let enters = |b: &FileBdev| b.ring.as_ref().map(|r| r.enters);
        let before = enters(&auto);
        let mut one = vec![0u8; 4096];
        auto.read(3, &mut one).expect("read");
        auto.read_segments(&mut [(4, &mut one[..])])
            .expect("one segment");
        assert_eq!(enters(&auto), before, "single requests do not use the ring");
        check_segments(&mut auto, &data, &[(1, 1), (2, 1), (200, 3)]);
        assert_eq!(enters(&auto), before, "cached batches do not use the ring");
        // With O_DIRECT a batch is one submission.
        let mut direct = open(&path, 4096, true, IoEngine::Auto);
        let before = enters(&direct);
        direct.read(3, &mut one).expect("read");
        assert_eq!(
            enters(&direct),
            before,
            "single requests do not use the ring"
        );
        check_segments(&mut direct, &data, &[(1, 1), (2, 1), (200, 3)]);
        if let Some(before) = before {
            assert_eq!(
                enters(&direct),
                Some(before + 1),
                "a batch is one submission"
            );
        }
    }

    #[test]
    fn reads_past_the_end_of_a_shrunk_file_are_zeroes() {
        for engine in FORCED {
            let (_t, path) = tmp(&format!("eof-{engine:?}"), 64 << 10);
            let mut b = open(&path, 4096, false, engine);
            let data = pattern(3, 64 << 10);
            b.write(0, &data, false).expect("write");
            // The file shrinks under the bdev, to mid-block.
            let keep = 6 * 4096 + 1000;
            OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(keep as u64))
                .expect("truncate");
            let mut r = vec![0xEEu8; 64 << 10];
            b.read(0, &mut r).expect("read across the end");
            assert_eq!(&r[..keep], &data[..keep], "{engine:?}");
            assert!(
                r[keep..].iter().all(|&x| x == 0),
                "{engine:?}: zeroes past the end"
            );
            let (mut x, mut y) = (vec![0xEEu8; 4096], vec![0xEEu8; 8192]);
            let mut segs = [(5u64, &mut x[..]), (10u64, &mut y[..])];
            b.read_segments(&mut segs).expect("segments across the end");
            assert_eq!(&x[..], &data[5 * 4096..6 * 4096]);
            assert!(y.iter().all(|&v| v == 0), "{engine:?}: wholly past the end");
        }
    }

    /// Reads `segs` (lba, blocks) with `read_segments` and checks them against `data`.
    fn check_segments(b: &mut FileBdev, data: &[u8], segs: &[(u64, usize)]) {
        let bs = b.block_size() as usize;
        let mut bufs: Vec<Vec<u8>> = segs.iter().map(|&(_, n)| vec![0xEE; n * bs]).collect();
        let mut list: Vec<(u64, &mut [u8])> = segs
            .iter()
            .zip(bufs.iter_mut())
            .map(|(&(lba, _), buf)| (lba, &mut buf[..]))
            .collect();
        b.read_segments(&mut list).expect("read_segments");
        for (&(lba, n), buf) in segs.iter().zip(&bufs) {
            let at = lba as usize * bs;
            assert!(
                buf[..] == data[at..at + n * bs],
                "{:?}: segment at LBA {lba} ({n} blocks)",
                b.engine()
            );
        }
    }

    #[test]
    fn read_segments_adjacent_far_apart_and_more_than_the_ring_holds() {
        for engine in FORCED {
            let (_t, path) = tmp(&format!("segs-{engine:?}"), 8 << 20);
            let mut b = open(&path, 4096, false, engine);
            let data = pattern(4, 8 << 20);
            b.write(0, &data, false).expect("write");
            // Adjacent (0, 1), far apart (1000, 2047: the last block), overlapping reads of
            // the same block, a long one.
            let segs = [
                (0, 1),
                (1, 1),
                (1000, 2),
                (2047, 1),
                (5, 16),
                (1000, 1),
                (300, 256),
            ];
            let enters = b.ring.as_ref().map(|r| r.enters);
            check_segments(&mut b, &data, &segs);
            if let Some(before) = enters {
                let after = b.ring.as_ref().map_or(0, |r| r.enters);
                assert_eq!(after, before + 1, "one submission for all the segments");
            }
            // More segments than ring entries: several rounds of one batch.
            let many: Vec<(u64, usize)> = (0..150u64).map(|i| ((i * 13) % 2040, 2)).collect();
            check_segments(&mut b, &data, &many);
            // Nothing is read when one segment is out of range.
            let mut a = vec![0xEEu8; 4096];
            let mut z = vec![0u8; 8192];
            let mut bad = [(3u64, &mut a[..]), (2047u64, &mut z[..])];
            assert!(matches!(
                b.read_segments(&mut bad),
                Err(BdevError::OutOfRange { .. })
            ));
            assert!(a.iter().all(|&x| x == 0xEE), "checked before any I/O");
            b.read_segments(&mut []).expect("no segments");
        }
    }

    #[test]
    fn direct_io_through_io_uring() {
        let (_t, path) = tmp("direct-uring", 8 << 20);
        let mut b = open(&path, 512, true, IoEngine::Uring);
        assert!(b.is_direct());
        let fl = rustix::fs::fcntl_getfl(&b.file).expect("fcntl");
        assert!(
            fl.contains(rustix::fs::OFlags::DIRECT),
            "opened without O_DIRECT"
        );
        // Larger than the bounce buffer, at an odd sector, from unaligned memory.
        let len = BOUNCE_BYTES + 3 * 512;
        let data = pattern(5, len);
        b.write(7, &data, true).expect("direct write");
        let mut back = vec![0u8; len + 1];
        b.read(7, &mut back[1..]).expect("direct read");
        assert!(
            back[1..] == data[..],
            "direct read returns the direct write"
        );
        b.write_zeroes(8, 2).expect("write zeroes");
        b.read(7, &mut back[1..]).expect("direct read");
        assert!(back[1 + 512..1 + 1536].iter().all(|&x| x == 0));
        // Segments through the bounce buffer: 512-byte ones (packed at aligned places),
        // adjacent, far apart, one larger than the bounce buffer, more than fit at once.
        let whole = pattern(6, 8 << 20);
        b.write(0, &whole, false).expect("direct write");
        let segs = [
            (1, 1),
            (2, 1),
            (3, 7),
            (16383, 1),
            (100, BOUNCE_BYTES / 512 + 3),
            (9000, 1024),
            (12000, 1500),
            (5, 1),
        ];
        check_segments(&mut b, &whole, &segs);
        assert_eq!(b.engine(), IoEngine::Uring);
        drop(b);
        // What went down is on the file for a buffered positional reader too.
        let mut plain = open(&path, 512, false, IoEngine::Positional);
        let mut r = vec![0u8; 4096];
        plain.read(40, &mut r).expect("read");
        assert_eq!(r, whole[40 * 512..40 * 512 + 4096]);
    }

    #[test]
    fn kernel_errors_are_errors_not_panics() {
        for engine in FORCED {
            let (_t, path) = tmp(&format!("ro-{engine:?}"), 1 << 20);
            std::fs::write(&path, pattern(7, 1 << 20)).expect("fill");
            let ro = File::open(&path).expect("open read-only");
            let mut b = FileBdev::from_file("ro", ro, 4096, [0; 16], false, engine)
                .unwrap_or_else(|e| panic!("{engine:?} refused (io_uring unavailable?): {e}"));
            assert_eq!(b.engine(), engine);
            let mut r = vec![0u8; 8192];
            b.read(3, &mut r).expect("reading works");
            assert_eq!(r, pattern(7, 1 << 20)[3 * 4096..5 * 4096]);
            for res in [
                b.write(3, &r, false),
                b.write(3, &r, true),
                b.write_zeroes(0, 4),
            ] {
                match res {
                    Err(BdevError::Io(m)) => assert!(
                        m.contains("ro: write of") && m.contains("Bad file descriptor"),
                        "{engine:?}: a clear message, got {m:?}"
                    ),
                    other => panic!("{engine:?}: writing a read-only file gave {other:?}"),
                }
            }
            assert_eq!(
                b.engine(),
                engine,
                "a failed request leaves the ring in use"
            );
            b.read(3, &mut r).expect("reading still works");
        }
    }

    /// An op over `buf` with `done` bytes already moved.
    fn op(kind: OpKind, buf: &mut [u8], done: usize) -> Op {
        Op {
            kind,
            addr: buf.as_mut_ptr().expose_provenance(),
            len: buf.len(),
            off: 0,
            done,
            retries: 0,
            state: OpState::InFlight,
        }
    }

    #[test]
    fn completions_short_interrupted_and_bogus() {
        let mut buf = vec![0xEEu8; 8192];
        let neg = |e: Errno| -e.raw_os_error();
        // Short: the rest is resubmitted, from where it stopped.
        let mut o = op(OpKind::Read, &mut buf, 0);
        assert!(matches!(o.complete(3000, true), Outcome::Again));
        assert_eq!((o.done, o.chunk()), (3000, 8192 - 3000));
        assert!(matches!(o.complete(5192, true), Outcome::Done));
        // EINTR and EAGAIN are retried, a bounded number of times.
        let mut o = op(OpKind::Write, &mut buf, 0);
        assert!(matches!(o.complete(neg(Errno::INTR), true), Outcome::Again));
        assert!(matches!(
            o.complete(neg(Errno::AGAIN), true),
            Outcome::Again
        ));
        o.retries = MAX_RETRIES;
        assert!(matches!(
            o.complete(neg(Errno::AGAIN), true),
            Outcome::Failed(_)
        ));
        // Any other errno fails with its text; so do a byte count above the request, a
        // write that moved nothing, and the end of a block device.
        let mut o = op(OpKind::Read, &mut buf, 0);
        match o.complete(neg(Errno::IO), true) {
            Outcome::Failed(m) => assert!(m.contains("Input/output error"), "{m}"),
            _ => panic!("EIO must fail"),
        }
        assert!(matches!(o.complete(8193, true), Outcome::Failed(_)));
        assert!(matches!(o.complete(i32::MIN, true), Outcome::Failed(_)));
        assert!(matches!(
            op(OpKind::Write, &mut buf, 0).complete(0, true),
            Outcome::Failed(_)
        ));
        assert!(matches!(
            op(OpKind::Read, &mut buf, 0).complete(0, false),
            Outcome::Failed(_)
        ));
        // The end of a regular file: the rest reads as zeroes.
        let mut o = op(OpKind::Read, &mut buf, 100);
        assert!(matches!(o.complete(0, true), Outcome::Done));
        assert_eq!(o.done, 8192);
        assert!(buf[..100].iter().all(|&x| x == 0xEE) && buf[100..].iter().all(|&x| x == 0));
    }
}
