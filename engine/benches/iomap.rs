//! `Volume::iomap_begin` on a 10,000-extent file: a cold volume (fresh
//! `Volume`: empty block cache and mapping cache; the OS page cache holds
//! the image) against a warm one (mapping cache filled by a walk), with
//! sequential (FIEMAP-style walk) and random positions, plus a mapping
//! cache budget too small for the file.
//!
//! The image is built once with `mke2fs -d` from a sparse file holding one
//! 4 KiB block at every other block (10,000 extents, an extent tree of
//! depth 2) and cached under `target/ext4-bench-images/`. Per-call times
//! are printed before criterion's own runs.

use std::fs::File;
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;

use common::{iomap_walk, randoms, FileDev};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ext4_engine::{InodeNo, OpenOptions, Volume};

const EXTENTS: u64 = 10_000;
const BS: u64 = 4096;
const DEV: u32 = 1;
const RANDOM_CALLS: usize = 10_000;
/// Calls timed with a cache budget too small for the file.
const TINY_CALLS: u64 = 1_000;
/// Bump when the image recipe changes.
const IMAGE_VERSION: u32 = 1;

/// Build (once) the image with the 10,000-extent file `/frag`.
fn image() -> PathBuf {
    let name = format!("iomap-10k-v{IMAGE_VERSION}");
    common::cached_image(&name, &["-t", "ext4", "-b", "4096"], "256M", |src| {
        let f = File::create(src.join("frag")).expect("create source file");
        // Data at every other block: logical gaps keep every block its own
        // extent whatever the allocator does.
        let mut block = vec![0u8; BS as usize];
        let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..EXTENTS {
            for w in block.chunks_mut(8) {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                w.copy_from_slice(&s.to_le_bytes());
            }
            f.write_all_at(&block, 2 * i * BS)
                .expect("write source file");
        }
    })
}

fn open(img: &Path, budget: usize) -> Volume<FileDev> {
    let opts = OpenOptions {
        mapping_cache_bytes: budget,
        ..OpenOptions::default()
    };
    common::open(img, &opts)
}

/// The file's inode and size.
fn target(vol: &Volume<FileDev>) -> (InodeNo, u64) {
    let a = vol.lookup(InodeNo::ROOT, b"frag").expect("lookup /frag");
    (a.ino, a.size)
}

/// A FIEMAP-style walk by `iomap_begin`; returns the number of calls.
fn walk(vol: &Volume<FileDev>, ino: InodeNo, size: u64) -> u64 {
    iomap_walk(vol, ino, 0, size, u64::MAX)
}

fn probe(vol: &Volume<FileDev>, ino: InodeNo, positions: &[u64]) {
    for &p in positions {
        black_box(vol.iomap_begin(ino, p, BS, 0, DEV).expect("iomap_begin"));
    }
}

/// Median of `runs` timings of `f` (each on its own fresh state from
/// `setup`), divided by `calls`.
fn per_call<S>(
    runs: usize,
    calls: u64,
    mut setup: impl FnMut() -> S,
    mut f: impl FnMut(&S),
) -> Duration {
    let mut v: Vec<Duration> = (0..runs)
        .map(|_| {
            let s = setup();
            let t = Instant::now();
            f(&s);
            t.elapsed()
        })
        .collect();
    v.sort();
    v[runs / 2] / calls as u32
}

fn summary(img: &Path) {
    let vol = open(img, 16 << 20);
    let (ino, size) = target(&vol);
    let calls = walk(&vol, ino, size);
    let mut mappings = 0u64;
    let mut extents = 0u64;
    vol.mappings(ino, DEV, &mut |m| {
        mappings += 1;
        extents += u64::from(m.kind.has_addr());
        true
    })
    .expect("mappings");
    println!(
        "iomap bench: /frag is {size} bytes; the whole-file walk yields {mappings} mappings ({extents} mapped, {} holes) in {calls} iomap_begin calls; cache holds {} bytes",
        mappings - extents,
        vol.mapcache().memory_bytes()
    );
    let pos = randoms(RANDOM_CALLS, size, 42);
    let fresh = || open(img, 16 << 20);
    let warm = || {
        let v = open(img, 16 << 20);
        walk(&v, ino, size);
        v
    };
    let tiny = || open(img, 4096);
    let rows = [
        (
            "cold, first call",
            per_call(21, 1, fresh, |v| {
                black_box(v.iomap_begin(ino, 0, BS, 0, DEV).unwrap());
            }),
        ),
        (
            "cold, sequential walk",
            per_call(7, calls, fresh, |v| {
                walk(v, ino, size);
            }),
        ),
        (
            "cold, random",
            per_call(7, RANDOM_CALLS as u64, fresh, |v| probe(v, ino, &pos)),
        ),
        (
            "warm, sequential walk",
            per_call(7, calls, warm, |v| {
                walk(v, ino, size);
            }),
        ),
        (
            "warm, random",
            per_call(7, RANDOM_CALLS as u64, warm, |v| probe(v, ino, &pos)),
        ),
        // Every call reloads a whole leaf here: a slice of the walk is enough.
        (
            "4 KiB cache budget, sequential walk",
            per_call(3, TINY_CALLS, tiny, |v| {
                iomap_walk(v, ino, 0, size, TINY_CALLS);
            }),
        ),
        (
            "4 KiB cache budget, random",
            per_call(3, TINY_CALLS, tiny, |v| {
                probe(v, ino, &pos[..TINY_CALLS as usize])
            }),
        ),
    ];
    for (what, t) in rows {
        println!("iomap bench: {what:<38} {:>9.0} ns/call", t.as_nanos());
    }
}

fn bench(c: &mut Criterion) {
    let img = image();
    summary(&img);
    let vol = open(&img, 16 << 20);
    let (ino, size) = target(&vol);
    let calls = walk(&vol, ino, size);
    let pos = randoms(RANDOM_CALLS, size, 7);

    let mut g = c.benchmark_group("iomap_begin");
    g.sample_size(10);
    g.throughput(Throughput::Elements(calls));
    g.bench_function("cold/sequential", |b| {
        b.iter_batched(
            || open(&img, 16 << 20),
            |v| walk(&v, ino, size),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("warm/sequential", |b| b.iter(|| walk(&vol, ino, size)));
    g.throughput(Throughput::Elements(RANDOM_CALLS as u64));
    g.bench_function("cold/random", |b| {
        b.iter_batched(
            || open(&img, 16 << 20),
            |v| probe(&v, ino, &pos),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("warm/random", |b| b.iter(|| probe(&vol, ino, &pos)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
