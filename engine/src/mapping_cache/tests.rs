//! Tests: the B+tree against a plain `BTreeMap` model with the same merge
//! rules (exact records) and against a per-block array (what each block
//! maps to, independent of any merge rule); `check_invariants()` after every change.

use std::collections::BTreeMap;
use std::vec::Vec;

use proptest::prelude::*;

use super::model::ModelFork;
use super::*;
use crate::error::Error;
use crate::numbers::InodeNo;
use ext4_tests::rng::Rng;

/// Record generator parameters: block size and how many blocks exist.
#[derive(Clone, Copy, Debug)]
struct Dom {
    blk: u64,
    blocks: u64,
    max_len: u64,
}

const SMALL: Dom = Dom {
    blk: 4096,
    blocks: 300,
    max_len: 12,
};
/// Blocks of 2^58 bytes: merges hit the 2^63 length limit all the time.
const HUGE: Dom = Dom {
    blk: 1 << 58,
    blocks: 63,
    max_len: 32,
};

/// A plain mapped record on device 1.
fn mapped(offset: u64, length: u64, addr: u64) -> Mapping {
    Mapping {
        offset,
        length,
        addr,
        kind: MapType::Mapped,
        flags: 0,
        dev: 1,
    }
}

fn rec(d: Dom, ob: u64, lb: u64, kind_sel: u64, shift: u64, flags: u16) -> Mapping {
    let kind = [
        MapType::Mapped,
        MapType::Unwritten,
        MapType::Hole,
        MapType::Delalloc,
        MapType::Mapped,
    ][kind_sel as usize % 5];
    let offset = ob * d.blk;
    let length = lb * d.blk;
    let (addr, dev) = if kind.has_addr() {
        (offset.wrapping_add(shift * d.blk), 1 + (shift == 3) as u32)
    } else {
        (NULL_ADDR, 0)
    };
    Mapping {
        offset,
        length,
        addr,
        kind,
        flags,
        dev,
    }
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Add(Mapping),
    Upsert(Mapping),
    Remove(u64, u64),
    Lookup(u64),
}

fn random_op(r: &mut Rng, d: Dom) -> Op {
    let ob = r.below(d.blocks.min(32).max(d.blocks));
    let lb = 1 + r.below(d.max_len);
    let m = rec(
        d,
        ob.min(if d.blk > 4096 { 31 } else { u64::MAX }),
        lb,
        r.below(5),
        r.below(4),
        (r.below(8) == 0) as u16,
    );
    match r.below(16) {
        0..=4 => Op::Add(m),
        5..=8 => Op::Upsert(m),
        9..=11 => Op::Remove(m.offset, m.length),
        12 => Op::Remove(ob * d.blk, if r.below(2) == 0 { u64::MAX } else { 0 }),
        _ => Op::Lookup(ob * d.blk + r.below(d.blk.min(1 << 20))),
    }
}

fn op_strategy(d: Dom) -> impl Strategy<Value = Op> {
    let first = if d.blk > 4096 { 32 } else { d.blocks };
    (
        0..first,
        1..=d.max_len,
        0..5u64,
        0..4u64,
        0..8u16,
        0..16u8,
        any::<u64>(),
    )
        .prop_map(move |(ob, lb, k, sh, fl, which, extra)| {
            let m = rec(d, ob, lb, k, sh, (fl == 0) as u16);
            match which {
                0..=4 => Op::Add(m),
                5..=8 => Op::Upsert(m),
                9..=11 => Op::Remove(m.offset, m.length),
                12 => Op::Remove(m.offset, if extra % 2 == 0 { u64::MAX } else { 0 }),
                _ => Op::Lookup(m.offset + extra % d.blk),
            }
        })
}

/// What each block maps to: (type, flags, dev, device address of the block).
type BlockMap = BTreeMap<u64, (MapType, u16, u32, u64)>;

fn blocks_of(d: Dom, recs: impl Iterator<Item = Mapping>) -> BlockMap {
    let mut out = BlockMap::new();
    for m in recs {
        for b in m.offset / d.blk..m.end().div_ceil(d.blk) {
            let addr = if m.kind.has_addr() {
                m.addr + (b * d.blk - m.offset)
            } else {
                NULL_ADDR
            };
            out.insert(b, (m.kind, m.flags, m.dev, addr));
        }
    }
    out
}

/// Per-block oracle of one operation (no merge rules involved).
fn block_apply(d: Dom, bm: &mut BlockMap, op: Op) -> bool {
    let remove = |bm: &mut BlockMap, off: u64, len: u64| {
        if len == 0 {
            return;
        }
        let end = off.saturating_add(len);
        // Records start below 2^63, so whatever lies past an end beyond it
        // belongs to a record cut there, whose remainder is forgotten.
        let end = if end >= record::OFFSET_LIMIT {
            u64::MAX
        } else {
            end
        };
        let keys: Vec<u64> = bm
            .range(off / d.blk..)
            .map(|(k, _)| *k)
            .take_while(|k| k.saturating_mul(d.blk) < end)
            .collect();
        for k in keys {
            bm.remove(&k);
        }
    };
    match op {
        Op::Add(m) | Op::Upsert(m) => {
            if m.length == 0 || m.validate().is_err() {
                return m.length == 0;
            }
            if matches!(op, Op::Upsert(_)) {
                remove(bm, m.offset, m.length);
            } else if bm
                .range(m.offset / d.blk..m.end().div_ceil(d.blk))
                .next()
                .is_some()
            {
                return false;
            }
            bm.extend(blocks_of(d, core::iter::once(m)));
            true
        }
        Op::Remove(o, l) => {
            remove(bm, o, l);
            true
        }
        Op::Lookup(_) => true,
    }
}

/// Applies `op` to tree and model, compares everything, runs `check_invariants()`.
fn step(
    d: Dom,
    t: &mut ForkTree,
    model: &mut ModelFork,
    blocks: &mut BlockMap,
    compare_blocks: bool,
    op: Op,
) {
    let block_ok = block_apply(d, blocks, op);
    match op {
        Op::Add(m) => {
            let a = t.add(m).map(|_| ());
            let b = model.add(m);
            assert_eq!(a, b, "add {m:?}");
            assert_eq!(a.is_ok(), block_ok, "add {m:?} against the block oracle");
        }
        Op::Upsert(m) => {
            let a = t.upsert(m).map(|_| ());
            let b = model.upsert(m);
            assert_eq!(a, b, "upsert {m:?}");
        }
        Op::Remove(o, l) => {
            t.remove(o, l);
            model.remove(o, l);
        }
        Op::Lookup(off) => {
            let (hit, next) = model.lookup(off);
            let want = match hit {
                Some(h) => Find::Hit(h),
                None => Find::Miss { next },
            };
            assert_eq!(t.find(off), want, "lookup {off}");
        }
    }
    if let Err(e) = t.check_invariants() {
        panic!("check after {op:?}: {e}");
    }
    assert_eq!(t.len(), model.map.len(), "after {op:?}");
    assert!(
        t.iter().eq(model.map.values().copied()),
        "records differ after {op:?}"
    );
    if compare_blocks {
        assert_eq!(
            *blocks,
            blocks_of(d, t.iter()),
            "block meaning differs after {op:?}"
        );
    }
}

fn run_ops(d: Dom, ops: &[Op]) {
    let mut t = ForkTree::new();
    let mut model = ModelFork::new();
    let mut bm = BlockMap::new();
    for &op in ops {
        step(d, &mut t, &mut model, &mut bm, true, op);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn fork_matches_models(ops in prop::collection::vec(op_strategy(SMALL), 1..300)) {
        run_ops(SMALL, &ops);
    }

    #[test]
    fn fork_matches_models_huge_lengths(ops in prop::collection::vec(op_strategy(HUGE), 1..200)) {
        run_ops(HUGE, &ops);
    }

    #[test]
    fn cursor_walks_match_order(ops in prop::collection::vec(op_strategy(SMALL), 1..400), at in 0..300u64) {
        let mut t = ForkTree::new();
        let mut m = ModelFork::new();
        for &op in &ops {
            let _ = match op { Op::Add(r) => { let _ = m.add(r); t.add(r).map(|_| ()) } Op::Upsert(r) => { let _ = m.upsert(r); t.upsert(r).map(|_| ()) } Op::Remove(o, l) => { m.remove(o, l); t.remove(o, l); Ok(()) } Op::Lookup(_) => Ok(()) };
        }
        let all = m.records();
        let off = at * SMALL.blk;
        let start = all.iter().position(|r| r.end() > off).unwrap_or(all.len());
        let mut c = t.cursor(off);
        let mut fwd = Vec::new();
        while let Some(r) = c.get() { fwd.push(r); c.next_rec(); }
        prop_assert_eq!(&fwd[..], &all[start..]);
        let mut c = t.cursor_last();
        let mut back = Vec::new();
        while let Some(r) = c.get() { back.push(r); c.prev_rec(); }
        back.reverse();
        prop_assert_eq!(back, all);
    }
}

/// A few million random operations against both models, `check_invariants()` after each.
#[test]
fn long_randomized_run() {
    let configs: [(Dom, u64, u64); 4] = [
        (SMALL, 1, 1_200_000),
        (
            Dom {
                blk: 4096,
                blocks: 3000,
                max_len: 4,
            },
            2,
            600_000,
        ),
        (
            Dom {
                blk: 4096,
                blocks: 40,
                max_len: 6,
            },
            3,
            600_000,
        ),
        (HUGE, 4, 600_000),
    ];
    let mut total = 0;
    for (d, seed, n) in configs {
        let mut r = Rng::new(0x9e37_79b9_7f4a_7c15 ^ seed);
        let mut t = ForkTree::new();
        let mut model = ModelFork::new();
        let mut bm = BlockMap::new();
        let mut max_len = 0;
        for i in 0..n {
            let op = random_op(&mut r, d);
            // Comparing with the per-block oracle is O(blocks): sample it.
            step(d, &mut t, &mut model, &mut bm, i % 16 == 0, op);
            max_len = max_len.max(t.len());
            total += 1;
        }
        assert!(
            max_len > 7 || d.blocks < 64,
            "config {d:?} never built a tree"
        );
    }
    assert!(total >= 3_000_000);
}

/// Large forks: shape and memory per record, sequential and random order.
#[test]
fn large_forks_shape_and_memory() {
    let n = 200_000u64;
    let mk = |i: u64| mapped(i * 8192, 4096, i * 8192);
    let mut seq = ForkTree::new();
    for i in 0..n {
        seq.add(mk(i)).unwrap();
    }
    seq.check_invariants().unwrap();
    let s = seq.shape();
    // Appends spill into new leaves: every leaf but the last is full.
    assert_eq!(s.leaves as u64, n.div_ceil(7));
    let per = seq.memory_bytes() as f64 / n as f64;
    std::println!("sequential: {per:.1} bytes/record, {s:?}");
    assert!(per <= 64.0, "sequential {per} bytes/record");

    let mut order: Vec<u64> = (0..n).collect();
    let mut r = Rng::new(7);
    for i in (1..order.len()).rev() {
        order.swap(i, r.below(i as u64 + 1) as usize);
    }
    let mut rnd = ForkTree::new();
    for &i in &order {
        rnd.add(mk(i)).unwrap();
    }
    rnd.check_invariants().unwrap();
    let per = rnd.memory_bytes() as f64 / n as f64;
    std::println!("random: {per:.1} bytes/record, {:?}", rnd.shape());
    assert!(per <= 64.0, "random {per} bytes/record");
    assert!(rnd.iter().eq(seq.iter()));

    // Delete everything one record at a time (random order): nodes merge
    // and free, the root collapses back to a small array.
    for (k, &i) in order.iter().enumerate() {
        rnd.remove(i * 8192, 4096);
        if k % 997 == 0 || rnd.len() < 40 {
            rnd.check_invariants().unwrap();
            // Compaction keeps the arena near what is in use.
            assert!(
                rnd.memory_bytes() <= 128 * rnd.len() + 16 * 1024,
                "{} bytes for {}",
                rnd.memory_bytes(),
                rnd.len()
            );
        }
    }
    assert!(rnd.is_empty());
    assert_eq!(rnd.memory_bytes(), 0);
}

#[test]
fn merges_and_their_limit() {
    let m = mapped;
    let half = 1u64 << 62;
    let mut t = ForkTree::new();
    t.add(m(0, half, 0)).unwrap();
    t.add(m(half, half, half)).unwrap();
    assert_eq!(
        t.iter().collect::<Vec<_>>(),
        [m(0, 1 << 63, 0)],
        "exactly 2^63 merges"
    );
    t.add(m(1 << 63, 4096, 1 << 63)).unwrap_err(); // starts at the marker
    let mut t = ForkTree::new();
    t.add(m(0, 1 << 63, 0)).unwrap();
    t.add(m((1 << 63) - 4096, 4096, 0)).unwrap_err(); // overlap
                                                      // Left + new + right would exceed 2^63: merge left only.
    let mut t = ForkTree::new();
    t.add(m(0, half, 0)).unwrap();
    t.add(m(half + 4096, half, half + 4096)).unwrap();
    t.add(m(half, 4096, half)).unwrap();
    assert_eq!(
        t.iter().collect::<Vec<_>>(),
        [m(0, half + 4096, 0), m(half + 4096, half, half + 4096)]
    );
    t.check_invariants().unwrap();
    // Trimming the front of the left record makes the pair fit: merged.
    t.remove(0, 8192);
    t.check_invariants().unwrap();
    assert_eq!(
        t.iter().collect::<Vec<_>>(),
        [m(8192, 2 * half - 4096, 8192)]
    );
    // Different flags, device, type, or a device gap: never merged.
    let mut t = ForkTree::new();
    t.add(m(0, 4096, 0)).unwrap();
    t.add(Mapping {
        flags: 1,
        ..m(4096, 4096, 4096)
    })
    .unwrap();
    t.add(Mapping {
        dev: 2,
        ..m(8192, 4096, 8192)
    })
    .unwrap();
    t.add(Mapping {
        kind: MapType::Unwritten,
        ..m(12288, 4096, 12288)
    })
    .unwrap();
    t.add(m(16384, 4096, 40960)).unwrap();
    assert_eq!(t.len(), 5);
    // Holes merge when both addresses are null.
    let h = |o| Mapping {
        offset: o,
        length: 4096,
        addr: NULL_ADDR,
        kind: MapType::Hole,
        flags: 0,
        dev: 0,
    };
    let mut t = ForkTree::new();
    t.add(h(0)).unwrap();
    t.add(h(8192)).unwrap();
    t.add(h(4096)).unwrap();
    assert_eq!(
        t.iter().collect::<Vec<_>>(),
        [Mapping {
            length: 12288,
            ..h(0)
        }]
    );
    // Splitting a mapped record advances the right part's address.
    let mut t = ForkTree::new();
    t.add(m(0, 40960, 1 << 20)).unwrap();
    t.remove(8192, 4096);
    assert_eq!(
        t.iter().collect::<Vec<_>>(),
        [m(0, 8192, 1 << 20), m(12288, 28672, (1 << 20) + 12288)]
    );
}

#[test]
fn bad_records_are_errors_not_panics() {
    let c = MappingCache::new(1 << 20);
    let ok = mapped(0, 4096, 0);
    c.add(InodeNo(5), Fork::Read, ok).unwrap();
    for bad in [
        Mapping { offset: 0, ..ok }, // overlap
        Mapping {
            addr: NULL_ADDR,
            offset: 8192,
            ..ok
        }, // mapped without address
        Mapping {
            kind: MapType::Hole,
            offset: 8192,
            ..ok
        }, // hole with address
        Mapping {
            offset: u64::MAX - 10,
            ..ok
        }, // offset overflow / beyond marker
        Mapping {
            offset: 8192,
            addr: u64::MAX - 100,
            ..ok
        }, // device range overflow
        Mapping {
            offset: 8192,
            kind: MapType::PureOverwrite,
            addr: NULL_ADDR,
            ..ok
        }, // read fork
    ] {
        let e = c.add(InodeNo(5), Fork::Read, bad).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{bad:?}: {e:?}");
        let e = c.upsert(InodeNo(5), Fork::Read, bad);
        assert!(e.is_ok() || matches!(e, Err(Error::Corrupt { .. })));
    }
    c.check_invariants().unwrap();
}

#[test]
fn write_fork_absent_and_pure_overwrite() {
    let c = MappingCache::new(1 << 20);
    let rd = mapped(0, 1 << 20, 1 << 30);
    let po = Mapping {
        offset: 0,
        length: 1 << 20,
        addr: NULL_ADDR,
        kind: MapType::PureOverwrite,
        flags: 0,
        dev: 0,
    };
    // Not cached at all: a miss in both forks, never NoFork.
    assert_eq!(
        c.lookup(InodeNo(9), Fork::Write, 0),
        Lookup::Miss { next: None }
    );
    c.upsert(InodeNo(9), Fork::Write, po).unwrap();
    assert_eq!(
        c.seq(InodeNo(9)),
        None,
        "pure overwrite must not create anything"
    );
    c.add(InodeNo(9), Fork::Read, rd).unwrap();
    let s = c.seq(InodeNo(9)).unwrap();
    assert_eq!(c.lookup(InodeNo(9), Fork::Read, 4096), Lookup::Hit(rd, s));
    assert_eq!(c.lookup(InodeNo(9), Fork::Write, 4096), Lookup::NoFork);
    c.upsert(InodeNo(9), Fork::Write, po).unwrap();
    assert_eq!(c.lookup(InodeNo(9), Fork::Write, 4096), Lookup::NoFork);
    assert_eq!(c.seq(InodeNo(9)), Some(s), "a no-op changes nothing");
    let cow = mapped(8192, 4096, 1 << 40);
    c.upsert(InodeNo(9), Fork::Write, cow).unwrap();
    assert!(c.seq(InodeNo(9)).unwrap() > s);
    assert!(matches!(c.lookup(InodeNo(9), Fork::Write, 8192), Lookup::Hit(m, _) if m == cow));
    assert_eq!(
        c.lookup(InodeNo(9), Fork::Write, 0),
        Lookup::Miss { next: Some(cow) }
    );
    // Once present, a pure overwrite is stored like any mapping.
    c.upsert(InodeNo(9), Fork::Write, Mapping { length: 4096, ..po })
        .unwrap();
    assert!(
        matches!(c.lookup(InodeNo(9), Fork::Write, 0), Lookup::Hit(m, _) if m.kind == MapType::PureOverwrite)
    );
    // Emptying the write fork leaves it present: a miss, not NoFork.
    c.remove(InodeNo(9), Fork::Write, 0, u64::MAX);
    assert_eq!(
        c.lookup(InodeNo(9), Fork::Write, 8192),
        Lookup::Miss { next: None }
    );
    c.forget_inode(InodeNo(9));
    assert_eq!(
        c.lookup(InodeNo(9), Fork::Read, 0),
        Lookup::Miss { next: None }
    );
    assert_eq!(c.seq(InodeNo(9)), None);
    c.check_invariants().unwrap();
}

/// Model of one inode's two forks for the cache-level tests.
#[derive(Clone, PartialEq, Debug, Default)]
struct InodeModel {
    read: ModelFork,
    write: Option<ModelFork>,
}

fn random_cache_op(r: &mut Rng, d: Dom) -> (InodeNo, Fork, Op) {
    let ino = InodeNo(1 + r.below(3) as u32);
    let fork = if r.below(2) == 0 {
        Fork::Read
    } else {
        Fork::Write
    };
    let mut op = random_op(r, d);
    if let Op::Add(m) | Op::Upsert(m) = &mut op {
        if fork == Fork::Write && r.below(4) == 0 {
            *m = Mapping {
                kind: MapType::PureOverwrite,
                addr: NULL_ADDR,
                dev: 0,
                ..*m
            };
        }
    }
    if r.below(50) == 0 {
        // Remove exactly everything (not 0..MAX): the same fast path.
        op = Op::Remove(0, d.blk * (d.blocks + d.max_len));
    }
    (ino, fork, op)
}

/// Every change of an inode's content moves its counter forward, whatever
/// path made it (including free-everything), also across drop/re-create.
#[test]
fn seq_bumped_on_every_change() {
    let d = Dom {
        blk: 4096,
        blocks: 60,
        max_len: 8,
    };
    let c = MappingCache::new(usize::MAX);
    let mut models: BTreeMap<InodeNo, InodeModel> = BTreeMap::new();
    let mut last_seq: BTreeMap<InodeNo, u64> = BTreeMap::new();
    let mut r = Rng::new(42);
    let mut fast_paths = 0;
    for _ in 0..200_000 {
        let (ino, fork, op) = random_cache_op(&mut r, d);
        let before = models.get(&ino).cloned().unwrap_or_default();
        let m = models.entry(ino).or_default();
        let res = match op {
            Op::Add(rec) | Op::Upsert(rec) => {
                let up = matches!(op, Op::Upsert(_));
                let want = match fork {
                    _ if rec.length == 0 => Ok(()),
                    Fork::Read if rec.kind == MapType::PureOverwrite => Err(BadRecord("")),
                    Fork::Read => {
                        if up {
                            m.read.upsert(rec)
                        } else {
                            m.read.add(rec)
                        }
                    }
                    Fork::Write if m.write.is_none() && rec.kind == MapType::PureOverwrite => {
                        rec.validate()
                    }
                    Fork::Write => {
                        let w = m.write.get_or_insert_with(ModelFork::new);
                        let r =
                            rec.validate()
                                .and_then(|_| if up { w.upsert(rec) } else { w.add(rec) });
                        if r.is_err() && w.map.is_empty() && before.write.is_none() {
                            m.write = None;
                        }
                        r
                    }
                };
                let got = if up {
                    c.upsert(ino, fork, rec)
                } else {
                    c.add(ino, fork, rec)
                };
                assert_eq!(got.is_ok(), want.is_ok(), "{op:?} {fork:?}");
                got.is_ok()
            }
            Op::Remove(o, l) => {
                let t = match fork {
                    Fork::Read => Some(&mut m.read),
                    Fork::Write => m.write.as_mut(),
                };
                if let Some(t) = t {
                    if !t.map.is_empty()
                        && t.map
                            .values()
                            .all(|x| x.offset >= o && x.end() <= o.saturating_add(l))
                        && l > 0
                    {
                        fast_paths += 1;
                    }
                    t.remove(o, l);
                }
                c.remove(ino, fork, o, l);
                true
            }
            Op::Lookup(off) => {
                let got = c.lookup(ino, fork, off);
                let want = if c.seq(ino).is_none() {
                    Lookup::Miss { next: None }
                } else {
                    match fork {
                        Fork::Write if m.write.is_none() => Lookup::NoFork,
                        _ => {
                            let f = if fork == Fork::Read {
                                &m.read
                            } else {
                                m.write.as_ref().unwrap()
                            };
                            match f.lookup(off) {
                                (Some(h), _) => Lookup::Hit(h, c.seq(ino).unwrap()),
                                (None, next) => Lookup::Miss { next },
                            }
                        }
                    }
                };
                assert_eq!(got, want);
                true
            }
        };
        let _ = res;
        // An inode with nothing cached is dropped: the model forgets too.
        let empty = m.read.map.is_empty() && m.write.as_ref().is_none_or(|w| w.map.is_empty());
        let after = if empty {
            InodeModel::default()
        } else {
            m.clone()
        };
        if empty {
            models.remove(&ino);
        }
        match c.seq(ino) {
            None => assert!(empty, "inode {ino} dropped while holding {after:?}"),
            Some(s) => {
                assert!(!empty);
                let prev = last_seq.get(&ino).copied();
                if after != before {
                    assert!(
                        prev.is_none_or(|p| s > p),
                        "inode {ino} changed by {op:?} ({fork:?}) but seq stayed {s}"
                    );
                } else {
                    assert!(prev.is_none_or(|p| s >= p));
                }
                last_seq.insert(ino, s);
            }
        }
        c.check_invariants().unwrap();
    }
    assert!(
        fast_paths > 100,
        "free-everything path exercised {fast_paths} times"
    );
}

/// The same at the inode level, where nothing is ever dropped: the counter
/// moves iff the content changed.
#[test]
fn inode_seq_moves_iff_content_changes() {
    let d = Dom {
        blk: 4096,
        blocks: 40,
        max_len: 8,
    };
    let mut ic = InodeMappings::new();
    let mut r = Rng::new(99);
    for _ in 0..100_000 {
        let (_, fork, op) = random_cache_op(&mut r, d);
        let before: (Vec<Mapping>, Option<Vec<Mapping>>) = (
            ic.fork(Fork::Read).unwrap().iter().collect(),
            ic.fork(Fork::Write).map(|w| w.iter().collect()),
        );
        let s = ic.seq();
        match op {
            Op::Add(m) => drop(ic.add(fork, m)),
            Op::Upsert(m) => drop(ic.upsert(fork, m)),
            Op::Remove(o, l) => drop(ic.remove(fork, o, l)),
            Op::Lookup(_) => {}
        }
        ic.check_invariants().unwrap();
        let after: (Vec<Mapping>, Option<Vec<Mapping>>) = (
            ic.fork(Fork::Read).unwrap().iter().collect(),
            ic.fork(Fork::Write).map(|w| w.iter().collect()),
        );
        if after != before {
            assert!(
                ic.seq() > s,
                "{op:?} on {fork:?} changed content without a bump"
            );
        } else if !matches!(op, Op::Upsert(_)) {
            assert_eq!(ic.seq(), s, "{op:?} bumped without a change");
        }
    }
}

#[test]
fn free_everything_bumps_seq() {
    let mut ic = InodeMappings::new();
    let m = mapped(0, 4096, 0);
    for i in 0..20u64 {
        ic.add(
            Fork::Read,
            Mapping {
                offset: i * 8192,
                addr: i * 8192,
                ..m
            },
        )
        .unwrap();
    }
    ic.add(Fork::Write, m).unwrap();
    let s = ic.seq();
    assert!(ic.remove(Fork::Read, 0, u64::MAX));
    assert!(ic.fork(Fork::Read).unwrap().is_empty());
    assert!(ic.seq() > s);
    let s = ic.seq();
    assert!(ic.remove(Fork::Write, 0, 4096));
    assert!(ic.seq() > s);
}

#[test]
fn budget_is_never_exceeded() {
    let budget = 48 << 10;
    let c = MappingCache::new(budget);
    let mut r = Rng::new(5);
    for i in 0..200_000u64 {
        let ino = InodeNo(1 + r.below(if i % 1000 < 500 { 20 } else { 400 }) as u32);
        let b = r.below(5000);
        let m = mapped(b * 8192, 4096 * (1 + r.below(2)), b * 8192);
        match r.below(10) {
            0 => c.remove(ino, Fork::Read, m.offset, m.length * 4),
            1 => drop(c.lookup(ino, Fork::Read, m.offset)),
            2 => c.forget_inode(ino),
            _ => c.upsert(ino, Fork::Read, m).unwrap(),
        }
        assert!(
            c.memory_bytes() <= budget,
            "{} over {budget}",
            c.memory_bytes()
        );
        if i % 1000 == 0 {
            c.check_invariants().unwrap();
        }
    }
    c.check_invariants().unwrap();
    // One file with far more extents than fit: it is simply not (fully)
    // cached, and nothing fails.
    let c = MappingCache::new(16 << 10);
    for i in 0..100_000u64 {
        let m = mapped(i * 8192, 4096, i * 8192);
        c.add(InodeNo(77), Fork::Read, m).unwrap();
        assert!(c.memory_bytes() <= 16 << 10);
    }
    c.check_invariants().unwrap();
    // Too small for even one inode: nothing is cached, nothing fails.
    let c = MappingCache::new(10);
    c.add(InodeNo(1), Fork::Read, mapped(0, 4096, 0)).unwrap();
    assert_eq!(c.memory_bytes(), 0);
    assert_eq!(
        c.lookup(InodeNo(1), Fork::Read, 0),
        Lookup::Miss { next: None }
    );
}

#[test]
fn least_recently_used_inode_goes_first() {
    let m = |i: u64| mapped(i * 8192, 4096, i * 8192);
    // Size the budget from what three 20-record inodes take.
    let probe = MappingCache::new(usize::MAX);
    for i in 0..20 {
        probe.add(InodeNo(1), Fork::Read, m(i)).unwrap();
    }
    let one = probe.memory_bytes();
    let c = MappingCache::new(3 * one + one / 2);
    for ino in 1..=3 {
        for i in 0..20 {
            c.add(InodeNo(ino), Fork::Read, m(i)).unwrap();
        }
    }
    assert_eq!(c.cached_inodes(), 3);
    // Use inode 1 (a lookup only), then make room for inode 4: 2 goes.
    assert!(matches!(
        c.lookup(InodeNo(1), Fork::Read, 0),
        Lookup::Hit(..)
    ));
    for i in 0..20 {
        c.add(InodeNo(4), Fork::Read, m(i)).unwrap();
    }
    assert_eq!(c.seq(InodeNo(2)), None, "least recently used inode evicted");
    assert!(
        c.seq(InodeNo(1)).is_some() && c.seq(InodeNo(3)).is_some() && c.seq(InodeNo(4)).is_some()
    );
    // Now 3 is the oldest.
    for i in 0..20 {
        c.add(InodeNo(5), Fork::Read, m(i)).unwrap();
    }
    assert_eq!(c.seq(InodeNo(3)), None);
    assert!(
        c.seq(InodeNo(1)).is_some() && c.seq(InodeNo(4)).is_some() && c.seq(InodeNo(5)).is_some()
    );
    c.check_invariants().unwrap();
    // A re-created inode never reuses a counter value of its past.
    let old = c.seq(InodeNo(1)).unwrap();
    c.forget_inode(InodeNo(1));
    c.add(InodeNo(1), Fork::Read, m(0)).unwrap();
    assert!(c.seq(InodeNo(1)).unwrap() > old);
}

#[test]
fn concurrent_lookups_and_changes() {
    use std::sync::Arc;
    let c = Arc::new(MappingCache::new(256 << 10));
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let c = Arc::clone(&c);
            s.spawn(move || {
                let mut r = Rng::new(t + 11);
                for _ in 0..100_000 {
                    let ino = InodeNo(1 + r.below(8) as u32);
                    if let Lookup::Hit(m, cookie) = c.lookup(ino, Fork::Read, r.below(1000) * 4096)
                    {
                        assert!(m.length > 0);
                        let _ = c.seq(ino).map(|s| s >= cookie);
                    }
                }
            });
        }
        let c = Arc::clone(&c);
        s.spawn(move || {
            let mut r = Rng::new(3);
            for _ in 0..50_000 {
                let b = r.below(1000);
                let m = mapped(b * 4096, 4096, b * 4096 + (r.below(2) << 30));
                c.upsert(InodeNo(1 + r.below(8) as u32), Fork::Read, m)
                    .unwrap();
            }
        });
    });
    c.check_invariants().unwrap();
}

#[test]
fn small_per_inode_cost() {
    std::println!(
        "ForkTree {} B, InodeMappings {} B, per-inode charge {} B",
        core::mem::size_of::<ForkTree>(),
        core::mem::size_of::<InodeMappings>(),
        cache::INODE_OVERHEAD
    );
    assert!(core::mem::size_of::<ForkTree>() <= 40);
    let c = MappingCache::new(usize::MAX);
    c.add(InodeNo(3), Fork::Read, mapped(0, 4096, 0)).unwrap();
    assert_eq!(c.memory_bytes(), cache::INODE_OVERHEAD + 32);
}

#[test]
fn wire_round_trip() {
    let m = Mapping {
        offset: 1,
        length: 2,
        addr: 3,
        kind: MapType::Unwritten,
        flags: 0x81,
        dev: 7,
    };
    let b = m.to_le_bytes();
    assert_eq!(&b[24..26], &[3, 0]);
    assert_eq!(Mapping::from_le_bytes(&b), Ok(m));
    let mut bad = b;
    bad[24] = 9;
    assert!(Mapping::from_le_bytes(&bad).is_err());
}
