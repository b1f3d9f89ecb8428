//! Mapping cache cost at 1, 1k and 1M records against a `BTreeMap<u64,
//! Mapping>` baseline (the plain model with the same merge rules), plus
//! memory per record. Records are 4 KiB mappings with 4 KiB holes between
//! them, so none merge and the record count stays fixed under upserts.

use std::collections::BTreeMap;
use std::hint::black_box;

mod common;

use common::randoms;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ext4_engine::mapping_cache::model::ModelFork;
use ext4_engine::mapping_cache::{Fork, ForkTree, MapType, Mapping, MappingCache};
use ext4_engine::InodeNo;

const SIZES: [u64; 3] = [1, 1_000, 1_000_000];

fn rec(i: u64, gen: u64) -> Mapping {
    Mapping {
        offset: i * 8192,
        length: 4096,
        addr: (i * 8192) ^ (gen << 40),
        kind: MapType::Mapped,
        flags: 0,
        dev: 1,
    }
}

fn build(n: u64) -> (ForkTree, ModelFork) {
    let mut t = ForkTree::new();
    let mut m = ModelFork::new();
    for i in 0..n {
        t.add(rec(i, 0)).unwrap();
        m.map.insert(i * 8192, rec(i, 0));
    }
    (t, m)
}

/// The baseline lookup: last record at or before `off`, if it covers it.
fn btree_lookup(map: &BTreeMap<u64, Mapping>, off: u64) -> Option<Mapping> {
    map.range(..=off)
        .next_back()
        .map(|(_, m)| *m)
        .filter(|m| m.covers(off))
}

fn lookups(c: &mut Criterion) {
    let mut g = c.benchmark_group("lookup");
    for n in SIZES {
        let (t, m) = build(n);
        let offs = randoms(1 << 16, n * 8192, 0x1234_5678);
        let cache = MappingCache::new(usize::MAX);
        for i in 0..n {
            cache.add(InodeNo(7), Fork::Read, rec(i, 0)).unwrap();
        }
        let mut k = 0;
        g.bench_with_input(BenchmarkId::new("fork_tree", n), &n, |b, _| {
            b.iter(|| {
                k = (k + 1) & 0xffff;
                black_box(t.lookup(black_box(offs[k])))
            })
        });
        g.bench_with_input(BenchmarkId::new("btreemap", n), &n, |b, _| {
            b.iter(|| {
                k = (k + 1) & 0xffff;
                black_box(btree_lookup(&m.map, black_box(offs[k])))
            })
        });
        g.bench_with_input(BenchmarkId::new("mapping_cache", n), &n, |b, _| {
            b.iter(|| {
                k = (k + 1) & 0xffff;
                black_box(cache.lookup(InodeNo(7), Fork::Read, black_box(offs[k])))
            })
        });
    }
    g.finish();
}

fn upserts(c: &mut Criterion) {
    let mut g = c.benchmark_group("upsert");
    for n in SIZES {
        let (mut t, mut m) = build(n);
        let idx = randoms(1 << 16, n, 0x8765_4321);
        let cache = MappingCache::new(usize::MAX);
        for i in 0..n {
            cache.add(InodeNo(7), Fork::Read, rec(i, 0)).unwrap();
        }
        // Each upsert replaces one record with a moved copy (new address).
        let mut k = 0u64;
        g.bench_with_input(BenchmarkId::new("fork_tree", n), &n, |b, _| {
            b.iter(|| {
                k += 1;
                t.upsert(rec(idx[(k & 0xffff) as usize], k)).unwrap()
            })
        });
        g.bench_with_input(BenchmarkId::new("btreemap", n), &n, |b, _| {
            b.iter(|| {
                k += 1;
                m.upsert(rec(idx[(k & 0xffff) as usize], k)).unwrap()
            })
        });
        g.bench_with_input(BenchmarkId::new("mapping_cache", n), &n, |b, _| {
            b.iter(|| {
                k += 1;
                cache
                    .upsert(InodeNo(7), Fork::Read, rec(idx[(k & 0xffff) as usize], k))
                    .unwrap()
            })
        });
        assert!(t.check_invariants().is_ok() && t.len() as u64 == n && m.map.len() as u64 == n);
    }
    g.finish();
}

/// Not a timing: prints bytes per record of large forks (what the budget
/// counts: arena capacity included).
fn memory(_: &mut Criterion) {
    let n = 1_000_000u64;
    let (seq, _) = build(n);
    let mut shuffled: Vec<u64> = (0..n).collect();
    let r = randoms(n as usize, u64::MAX, 99);
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, (r[i] % (i as u64 + 1)) as usize);
    }
    let mut perm = ForkTree::new();
    for &i in &shuffled {
        perm.add(rec(i, 0)).unwrap();
    }
    for (name, t) in [("sequential", &seq), ("random", &perm)] {
        println!(
            "memory/{name}: {} records, {:.1} bytes/record ({:.2}x of 32), shape {:?}",
            t.len(),
            t.memory_bytes() as f64 / t.len() as f64,
            t.memory_bytes() as f64 / t.len() as f64 / 32.0,
            t.shape()
        );
    }
}

criterion_group!(benches, memory, lookups, upserts);
criterion_main!(benches);
