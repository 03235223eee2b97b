//! Deterministic crash simulation: a seeded random workload runs on a recording device; then,
//! for every write of its history, the disk a crash at that point could leave (pending writes
//! all kept, none kept, and a random subset with the last one torn) is reopened and must be
//! clean and exactly the last committed state (or the one being committed, if its superblock
//! reached the disk). Nothing committed may be lost, nothing uncommitted may show.
//!
//! CI runs a bounded slice. Long mode: `THIN_CRASH_SEEDS=200 cargo test --release -p thin-core
//! --test crash_sim -- --nocapture`. A failure prints `SEED=…`.

use std::collections::BTreeMap;

use thin_core::sim::{CrashShape, Op, RecordingDevice, Replayer};
use thin_core::thin::check::{check, CheckOptions};
use thin_core::thin::{FormatOptions, OpenOptions, Pool};
use thin_core::MemDevice;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// dev → vblock → (data block, time), plus the pool's transaction id.
type State = (BTreeMap<u64, BTreeMap<u64, (u64, u32)>>, u64);

fn state_of<D: thin_core::BlockDevice>(pool: &mut Pool<D>) -> State {
    let mut s = BTreeMap::new();
    for id in pool.devices().expect("devices") {
        let m = pool
            .mappings(id, 0, u64::MAX)
            .expect("mappings")
            .into_iter()
            .map(|(v, bt)| (v, (bt.block, bt.time)))
            .collect();
        s.insert(id, m);
    }
    (s, pool.transaction_id())
}

struct Commit {
    /// Log index of its superblock write.
    sb_write: usize,
    state: State,
}

const META_BLOCKS: u64 = 1024;

fn workload(seed: u64, ops: usize) -> (Vec<Op>, Vec<Commit>) {
    let mut rng = Rng(seed | 1);
    let dev = RecordingDevice::new(MemDevice::new(META_BLOCKS));
    let mut pool = Pool::format(
        dev,
        FormatOptions {
            data_block_size: 128,
            nr_data_blocks: 30_000,
            cache_blocks: 24,
        },
    )
    .expect("format");
    let mut commits = vec![Commit {
        sb_write: pool.tm().cache.dev().log.len() - 2,
        state: state_of(&mut pool),
    }];
    let mut ids: Vec<u64> = Vec::new();
    let mut next_id = 0u64;
    let mut trans = 0u64;
    let mut scanned = commits[0].sb_write + 2;
    for _ in 0..ops {
        match rng.below(100) {
            0..=4 => {
                pool.create_thin(next_id).expect("create");
                ids.push(next_id);
                next_id += 1;
            }
            5..=8 if !ids.is_empty() => {
                let origin = ids[rng.below(ids.len() as u64) as usize];
                pool.create_snap(next_id, origin).expect("snap");
                ids.push(next_id);
                next_id += 1;
            }
            9..=70 if !ids.is_empty() => {
                let id = ids[rng.below(ids.len() as u64) as usize];
                let v = rng.below(2000);
                let plan = pool.prepare_write(id, v).expect("prepare");
                pool.complete_write(id, v, plan).expect("complete");
            }
            71..=76 if !ids.is_empty() => {
                let id = ids[rng.below(ids.len() as u64) as usize];
                let b = rng.below(2000);
                pool.discard(id, b, b + rng.below(300)).expect("discard");
            }
            77..=78 if ids.len() > 2 => {
                let i = rng.below(ids.len() as u64) as usize;
                pool.delete(ids.swap_remove(i)).expect("delete");
            }
            79 => {
                if pool.superblock().held_root == 0 {
                    pool.reserve_metadata_snap().expect("reserve");
                } else {
                    pool.release_metadata_snap().expect("release");
                }
            }
            80..=89 => {
                pool.set_transaction_id(trans, trans + 1).expect("trans id");
                trans += 1;
                pool.commit().expect("commit");
            }
            _ => {}
        }
        // Every superblock write followed by a flush is a commit (reserve_metadata_snap
        // makes two); all commits made by one operation carry the state after it.
        let log_len = pool.tm().cache.dev().log.len();
        let new: Vec<usize> = (scanned..log_len.saturating_sub(1))
            .filter(|&i| {
                let log = &pool.tm().cache.dev().log;
                matches!(log[i], Op::Write(0, _)) && matches!(log[i + 1], Op::Flush)
            })
            .collect();
        scanned = log_len.saturating_sub(1);
        if !new.is_empty() {
            let state = state_of(&mut pool);
            commits.extend(new.into_iter().map(|sb_write| Commit {
                sb_write,
                state: state.clone(),
            }));
        }
    }
    let dev = pool.into_device();
    (dev.log, commits)
}

fn verify(seed: u64, at: usize, what: &str, dev: MemDevice, expected: &[&State]) {
    let mut d = dev;
    let report = check(&mut d, &CheckOptions::default());
    assert!(
        report.is_clean(),
        "SEED={seed} crash after op {at} ({what}): checker: {:#?}",
        report.issues
    );
    let mut pool = Pool::open(
        d,
        OpenOptions {
            cache_blocks: 32,
            read_only: true,
        },
    )
    .unwrap_or_else(|e| panic!("SEED={seed} crash after op {at} ({what}): open: {e}"));
    let got = state_of(&mut pool);
    if !expected.iter().any(|e| **e == got) {
        let e = expected[0];
        for (id, m) in &e.0 {
            match got.0.get(id) {
                None => eprintln!("dev {id} missing"),
                Some(g) if g != m => {
                    let diff: Vec<_> = m
                        .iter()
                        .filter(|(k, v)| g.get(k) != Some(v))
                        .take(5)
                        .collect();
                    let extra: Vec<_> = g
                        .iter()
                        .filter(|(k, _)| !m.contains_key(k))
                        .take(5)
                        .collect();
                    eprintln!(
                        "dev {id}: {} vs {} mappings; differing {diff:?} extra {extra:?}",
                        m.len(),
                        g.len()
                    );
                }
                _ => {}
            }
        }
        for id in got.0.keys().filter(|k| !e.0.contains_key(k)) {
            eprintln!("dev {id} unexpected");
        }
    }
    assert!(
        expected.iter().any(|e| **e == got),
        "SEED={seed} crash after op {at} ({what}): state is not a committed one (transaction id {}, expected {:?})",
        got.1,
        expected.iter().map(|e| e.1).collect::<Vec<_>>()
    );
}

/// Returns the number of crash images checked.
fn sweep(seed: u64, ops: usize) -> u64 {
    let (log, commits) = workload(seed, ops);
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut replay = Replayer::new(MemDevice::new(META_BLOCKS));
    let first_done = commits[0].sb_write + 2;
    let mut tried = 0;
    for (i, op) in log.iter().enumerate() {
        replay.step(op);
        if i + 1 < first_done || !matches!(op, Op::Write(..)) {
            continue;
        }
        // The last commit whose superblock is durable, and the one in flight (if its
        // superblock write is among the pending writes).
        let done = commits
            .iter()
            .rposition(|c| c.sb_write + 2 <= i + 1)
            .expect("format commit");
        let in_flight = commits.get(done + 1).filter(|c| c.sb_write <= i);
        let n = replay.nr_pending();
        let sb_pending = in_flight.map(|c| n - 1 - (i - c.sb_write));
        let mut shapes = vec![
            (
                "all pending kept",
                CrashShape {
                    kept: u64::MAX,
                    torn_sectors: 8,
                },
            ),
            (
                "no pending kept",
                CrashShape {
                    kept: 0,
                    torn_sectors: 8,
                },
            ),
        ];
        shapes.push((
            "random subset, last torn",
            CrashShape {
                kept: rng.next(),
                torn_sectors: 1 + rng.below(7) as u8,
            },
        ));
        for (what, shape) in shapes {
            let img = replay.crash_image(shape);
            let sb_kept = sb_pending.is_some_and(|p| p >= 64 || shape.kept & (1 << p) != 0);
            let expected: Vec<&State> = match (in_flight, sb_kept) {
                (Some(c), true) => vec![&c.state],
                _ => vec![&commits[done].state],
            };
            verify(seed, i, what, img, &expected);
            tried += 1;
        }
    }
    tried
}

#[test]
fn every_crash_point_reopens_to_a_committed_state() {
    let seeds: u64 = std::env::var("THIN_CRASH_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let mut total = 0;
    for seed in 1..=seeds {
        total += sweep(seed, 400);
    }
    eprintln!("crash images checked: {total} ({seeds} seeds)");
    assert!(total > 1000);
}
