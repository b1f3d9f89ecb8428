//! Block cache cost: a hit, a miss (every read evicts a clean buffer and
//! fills it from an in-memory device), the same read straight from the
//! device as a baseline, and a long cold scan over a promoted hot working
//! set (the hot set's device reads after the scan are counted and printed).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use ext4_engine::test_support::BlockCache;
use ext4_engine::{BlockDevice, IoError};

const BS: u32 = 4096;

/// A read-only memory device that counts reads. Unlike `MemDevice` it
/// takes no lock (its bytes never change), so the parallel numbers show
/// the cache's own contention, not the device's: the cache asks the
/// device's size on every request, and `MemDevice::size` takes its lock.
struct Counting {
    data: Vec<u8>,
    reads: AtomicU64,
}

impl BlockDevice for Counting {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let s = usize::try_from(offset).map_err(|_| IoError::EIO)?;
        let e = s.checked_add(buf.len()).ok_or(IoError::EIO)?;
        buf.copy_from_slice(self.data.get(s..e).ok_or(IoError::EIO)?);
        Ok(())
    }
    fn write_at(&self, _offset: u64, _buf: &[u8]) -> Result<(), IoError> {
        Err(IoError::EIO)
    }
    fn flush(&self) -> Result<(), IoError> {
        Ok(())
    }
    fn size(&self) -> u64 {
        self.data.len() as u64
    }
    fn read_only(&self) -> bool {
        true
    }
}

fn device(blocks: u64) -> Counting {
    let data = (0..blocks * BS as u64).map(|i| (i % 251) as u8).collect();
    Counting {
        data,
        reads: AtomicU64::new(0),
    }
}

fn print_stats<D: BlockDevice>(what: &str, c: &BlockCache<D>) {
    let s = c.stats();
    println!(
        "{what}: hits {} misses {} ({:.1}% hits), {} MiB read from the device",
        s.hits,
        s.misses,
        100.0 * s.hits as f64 / (s.hits + s.misses).max(1) as f64,
        s.bytes_read >> 20
    );
}

fn hit_and_miss(c: &mut Criterion) {
    let mut g = c.benchmark_group("block_cache");

    // Hits: a 32 MiB cache (fuse2fs' default) holding the 1024 blocks read.
    let cache = BlockCache::new(device(16384), BS, 32 << 20);
    let mut buf = vec![0u8; BS as usize];
    for b in 0..1024 {
        cache.read(b, &mut buf).unwrap();
    }
    let mut i = 0u64;
    g.bench_function("hit read_with (no copy)", |bn| {
        bn.iter(|| {
            i = (i + 7) % 1024;
            cache.read_with(black_box(i), |d| d[17]).unwrap()
        })
    });
    g.bench_function("hit read (4 KiB copy)", |bn| {
        bn.iter(|| {
            i = (i + 7) % 1024;
            cache.read(black_box(i), &mut buf).unwrap();
        })
    });
    print_stats("hits", &cache);

    // Misses: 64 buffers, reading 16384 distinct blocks round robin, so
    // every read evicts the least recently used buffer and fills it.
    let cache = BlockCache::new(device(16384), BS, 64 * BS as usize);
    let mut j = 0u64;
    g.bench_function("miss read (evict + fill + copy)", |bn| {
        bn.iter(|| {
            j = (j + 1) % 16384;
            cache.read(black_box(j), &mut buf).unwrap();
        })
    });
    print_stats("misses", &cache);

    // Baseline: the same read straight from the device.
    let dev = device(16384);
    g.bench_function("device read (baseline)", |bn| {
        bn.iter(|| {
            j = (j + 1) % 16384;
            dev.read_blocks(black_box(j), BS, &mut buf).unwrap();
        })
    });
    g.finish();
}

fn cold_scan(c: &mut Criterion) {
    // 1 MiB of buffers (256), a hot set of 48 blocks read 60 times each
    // (so each is promoted once), then per iteration a scan of 4096 cold
    // blocks followed by one pass over the hot set.
    let hot: Vec<u64> = (0..48).map(|k| k * 331 + 3).collect();
    let cache = BlockCache::new(device(32768), BS, 1 << 20);
    let mut buf = vec![0u8; BS as usize];
    for _ in 0..60 {
        for &b in &hot {
            cache.read(b, &mut buf).unwrap();
        }
    }
    let mut next_cold = 16384u64;
    let mut hot_reads = 0u64;
    let mut passes = 0u64;
    c.bench_function("block_cache/cold scan of 4096 blocks + hot pass", |bn| {
        bn.iter(|| {
            for _ in 0..4096 {
                cache.read(next_cold, &mut buf).unwrap();
                next_cold = 16384 + (next_cold - 16384 + 1) % 16384;
            }
            let before = cache.device().reads.load(Ordering::Relaxed);
            for &b in &hot {
                cache.read(b, &mut buf).unwrap();
            }
            hot_reads += cache.device().reads.load(Ordering::Relaxed) - before;
            passes += 1;
        })
    });
    println!(
        "cold scan: {} device reads for the hot set over {} passes of {} blocks after a 4096-block scan",
        hot_reads,
        passes,
        hot.len()
    );
    print_stats("cold scan", &cache);
}

/// CPU time this thread has run, in ns (Linux schedstat), if available.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

fn parallel_hits(_c: &mut Criterion) {
    // Not a criterion measurement: hits per second from 1, 2 and 4 threads
    // on one cache (the machine has 2 cores), to see the locks' contention.
    // Wall-clock rates need idle cores; the CPU time per hit does not: it
    // stays flat as threads are added unless they contend (lock words or
    // counters bouncing between cores).
    let cache = Arc::new(BlockCache::new(device(4096), BS, 32 << 20));
    let mut buf = vec![0u8; BS as usize];
    for b in 0..1024 {
        cache.read(b, &mut buf).unwrap();
    }
    println!(
        "parallel hits: {} buffers in {} shards",
        cache.buffer_count(),
        cache.shard_count()
    );
    for threads in [1u64, 2, 4] {
        let per = 2_000_000 / threads;
        let t0 = Instant::now();
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let c = cache.clone();
                std::thread::spawn(move || {
                    let cpu0 = thread_cpu_ns();
                    let mut x = t * 97;
                    for _ in 0..per {
                        x = (x + 13) % 1024;
                        black_box(c.read_with(x, |d| d[5]).unwrap());
                    }
                    cpu0.zip(thread_cpu_ns()).map(|(a, b)| b - a)
                })
            })
            .collect();
        let cpu: Option<u64> = hs.into_iter().map(|h| h.join().unwrap()).sum();
        let dt = t0.elapsed();
        let cpu = cpu.map_or("?".to_string(), |c| {
            format!("{:.0}", c as f64 / (per * threads) as f64)
        });
        println!(
            "parallel read_with hits, {threads} thread(s): {:.1} M/s total ({:.0} ns per hit per thread), {cpu} ns CPU per hit",
            (per * threads) as f64 / dt.as_secs_f64() / 1e6,
            dt.as_nanos() as f64 / per as f64
        );
    }
}

criterion_group!(benches, hit_and_miss, cold_scan, parallel_hits);
criterion_main!(benches);
