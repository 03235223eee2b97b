//! Random operation sequences against a simple model: every lookup must agree, writes must
//! never land on a block another device still sees, the checker must stay clean, and a crash
//! (drop without commit) must reopen to the last commit.

use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};
use thin_core::thin::check::{check, CheckOptions};
use thin_core::thin::{FormatOptions, OpenOptions, Pool, PoolError, WritePlan};
use thin_core::MemDevice;

#[derive(Debug, Clone)]
enum Op {
    Create(u8),
    Snap(u8, u8),
    Write(u8, u16, u32),
    Discard(u8, u16, u16),
    Delete(u8),
    Commit,
    Crash,
    MetaSnap,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0u8..6).prop_map(Op::Create),
        2 => (0u8..6, 0u8..6).prop_map(|(a, b)| Op::Snap(a, b)),
        12 => (0u8..6, 0u16..700, any::<u32>()).prop_map(|(d, v, c)| Op::Write(d, v, c)),
        2 => (0u8..6, 0u16..700, 1u16..300).prop_map(|(d, v, l)| Op::Discard(d, v, l)),
        1 => (0u8..6).prop_map(Op::Delete),
        2 => Just(Op::Commit),
        1 => Just(Op::Crash),
        1 => Just(Op::MetaSnap),
    ]
}

type Model = BTreeMap<u64, BTreeMap<u64, u32>>;

struct World {
    pool: Pool<MemDevice>,
    /// Content of each data block.
    data: HashMap<u64, u32>,
    model: Model,
    committed: Model,
    committed_data: HashMap<u64, u32>,
}

const NR_DATA: u64 = 40_000;

fn verify(w: &mut World) {
    for (&id, maps) in &w.model {
        let got = w.pool.mappings(id, 0, u64::MAX).unwrap();
        assert_eq!(got.len(), maps.len(), "device {id} mapping count");
        for (v, bt) in got {
            let want = maps.get(&v).copied();
            assert_eq!(
                w.data.get(&bt.block).copied(),
                want,
                "device {id} vblock {v} (data block {})",
                bt.block
            );
        }
        assert_eq!(
            w.pool.device_details(id).unwrap().mapped_blocks,
            maps.len() as u64
        );
    }
    assert_eq!(
        w.pool.devices().unwrap(),
        w.model.keys().copied().collect::<Vec<_>>()
    );
}

fn full_check(w: &mut World) {
    w.pool.commit().unwrap();
    w.committed = w.model.clone();
    w.committed_data = w.data.clone();
    let dev = w.pool.tm().cache.dev_mut();
    let report = check(dev, &CheckOptions::default());
    assert!(report.is_clean(), "checker: {:#?}", report.issues);
}

fn apply(w: &mut World, op: &Op) {
    match *op {
        Op::Create(id) => {
            let id = u64::from(id);
            let r = w.pool.create_thin(id);
            match w.model.entry(id) {
                std::collections::btree_map::Entry::Occupied(_) => {
                    assert_eq!(r, Err(PoolError::DeviceExists(id)))
                }
                std::collections::btree_map::Entry::Vacant(e) => {
                    r.unwrap();
                    e.insert(BTreeMap::new());
                }
            }
        }
        Op::Snap(id, origin) => {
            let (id, origin) = (u64::from(id), u64::from(origin));
            let r = w.pool.create_snap(id, origin);
            if w.model.contains_key(&id) {
                assert_eq!(r, Err(PoolError::DeviceExists(id)));
            } else if !w.model.contains_key(&origin) {
                assert_eq!(r, Err(PoolError::NoSuchDevice(origin)));
            } else {
                r.unwrap();
                let m = w.model[&origin].clone();
                w.model.insert(id, m);
            }
        }
        Op::Write(id, v, content) => {
            let (id, v) = (u64::from(id), u64::from(v));
            if !w.model.contains_key(&id) {
                assert_eq!(
                    w.pool.prepare_write(id, v),
                    Err(PoolError::NoSuchDevice(id))
                );
                return;
            }
            let plan = w.pool.prepare_write(id, v).unwrap();
            if let WritePlan::InPlace { data_block } = plan {
                // Nobody else may see this block: not another device, not the committed state.
                for (&other, maps) in &w.model {
                    for &ov in maps.keys() {
                        if other == id && ov == v {
                            continue;
                        }
                        let m = w.pool.lookup(other, ov).unwrap().unwrap();
                        assert_ne!(
                            m.data_block, data_block,
                            "in-place write to {id}/{v} hits {other}/{ov}"
                        );
                    }
                }
            }
            w.data.insert(plan.target(), content);
            w.pool.complete_write(id, v, plan).unwrap();
            w.model.get_mut(&id).unwrap().insert(v, content);
        }
        Op::Discard(id, v, len) => {
            let (id, b, e) = (u64::from(id), u64::from(v), u64::from(v) + u64::from(len));
            match w.model.get_mut(&id) {
                None => assert_eq!(w.pool.discard(id, b, e), Err(PoolError::NoSuchDevice(id))),
                Some(maps) => {
                    let n = w.pool.discard(id, b, e).unwrap();
                    let before = maps.len();
                    maps.retain(|k, _| *k < b || *k >= e);
                    assert_eq!(n as usize, before - maps.len());
                }
            }
        }
        Op::Delete(id) => {
            let id = u64::from(id);
            let r = w.pool.delete(id);
            if w.model.remove(&id).is_some() {
                r.unwrap();
            } else {
                assert_eq!(r, Err(PoolError::NoSuchDevice(id)));
            }
        }
        Op::Commit => full_check(w),
        Op::Crash => {
            let pool = std::mem::replace(&mut w.pool, fresh_pool());
            let dev = pool.into_device();
            w.pool = Pool::open(
                dev,
                OpenOptions {
                    cache_blocks: 64,
                    read_only: false,
                },
            )
            .unwrap();
            w.model = w.committed.clone();
            w.data = w.committed_data.clone();
            verify(w);
        }
        Op::MetaSnap => {
            if w.pool.superblock().held_root == 0 {
                w.pool.reserve_metadata_snap().unwrap();
                w.committed = w.model.clone();
                w.committed_data = w.data.clone();
            } else {
                w.pool.release_metadata_snap().unwrap();
            }
        }
    }
}

fn fresh_pool() -> Pool<MemDevice> {
    Pool::format(
        MemDevice::new(4096),
        FormatOptions {
            data_block_size: 128,
            nr_data_blocks: NR_DATA,
            cache_blocks: 64,
        },
    )
    .unwrap()
}

fn run(ops: &[Op]) {
    let pool = fresh_pool();
    let mut w = World {
        pool,
        data: HashMap::new(),
        model: Model::new(),
        committed: Model::new(),
        committed_data: HashMap::new(),
    };
    for op in ops {
        apply(&mut w, op);
    }
    verify(&mut w);
    full_check(&mut w);
    // Free space adds up: every referenced block is in use, nothing else.
    let mut used = std::collections::HashSet::new();
    for &id in w.model.keys() {
        for (_, bt) in w.pool.mappings(id, 0, u64::MAX).unwrap() {
            used.insert(bt.block);
        }
    }
    let stats = w.pool.stats().unwrap();
    if stats.held_root == 0 {
        assert_eq!(stats.free_data_blocks, NR_DATA - used.len() as u64);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn random_operations_match_the_model(ops in proptest::collection::vec(op(), 1..400)) {
        run(&ops);
    }
}

#[test]
fn snapshot_chain_shares_then_diverges() {
    let mut ops = vec![Op::Create(0)];
    for v in 0..600 {
        ops.push(Op::Write(0, v, v as u32));
    }
    for d in 1..6u8 {
        ops.push(Op::Snap(d, d - 1));
        for v in (0..600).step_by(7 * d as usize) {
            ops.push(Op::Write(d - 1, v, 1000 * d as u32 + v as u32));
            ops.push(Op::Write(d, v + 1, 2000 * d as u32 + v as u32));
        }
        ops.push(Op::Commit);
    }
    ops.push(Op::Delete(2));
    ops.push(Op::Discard(4, 100, 250));
    ops.push(Op::Crash);
    ops.push(Op::Delete(0));
    run(&ops);
}
