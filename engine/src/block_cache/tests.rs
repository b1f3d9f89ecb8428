//! Tests of the block cache against a model (a byte image plus, per block,
//! the contents the device may legitimately hold) over a fake device that
//! counts reads and writes and can be told to fail writes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::time::Duration;
use std::vec;
use std::vec::Vec;

use proptest::prelude::*;

use super::index::PROMOTE_EVERY;
use super::*;
use crate::device::MemDevice;

/// A device in memory that counts calls and can fail writes on demand.
struct FakeDev {
    data: spin::Mutex<Vec<u8>>,
    reads: AtomicU64,
    writes: AtomicU64,
    fail_writes: AtomicBool,
}

impl FakeDev {
    fn new(data: Vec<u8>) -> Self {
        FakeDev {
            data: spin::Mutex::new(data),
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            fail_writes: AtomicBool::new(false),
        }
    }
    fn snapshot(&self) -> Vec<u8> {
        self.data.lock().clone()
    }
    fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }
}

impl BlockDevice for FakeDev {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let d = self.data.lock();
        let s = offset as usize;
        let e = s.checked_add(buf.len()).ok_or(IoError::EIO)?;
        buf.copy_from_slice(d.get(s..e).ok_or(IoError::EIO)?);
        Ok(())
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(IoError::EIO);
        }
        self.writes.fetch_add(1, Ordering::SeqCst);
        let mut d = self.data.lock();
        let s = offset as usize;
        let e = s.checked_add(buf.len()).ok_or(IoError::EIO)?;
        d.get_mut(s..e).ok_or(IoError::EIO)?.copy_from_slice(buf);
        Ok(())
    }
    fn flush(&self) -> Result<(), IoError> {
        Ok(())
    }
    fn size(&self) -> u64 {
        self.data.lock().len() as u64
    }
    fn read_only(&self) -> bool {
        false
    }
}

/// Recognisable contents: every byte depends on the seed, block and offset.
fn pattern(seed: u32, block: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seed.wrapping_mul(131) ^ (block as u32).wrapping_mul(29) ^ (i as u32 * 7)) as u8)
        .collect()
}

fn image(size: usize, bs: usize) -> Vec<u8> {
    (0..size / bs)
        .flat_map(|b| pattern(0xbeef, b as u64, bs))
        .collect()
}

/// Compare byte strings, reporting the first difference (not both dumps).
fn same(got: &[u8], want: &[u8], what: core::fmt::Arguments) {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: contents differ (lengths {} vs {}, first difference at {at:?})",
            got.len(),
            want.len()
        );
    }
}

fn check_links<D: BlockDevice>(c: &BlockCache<D>) {
    let mut total = 0;
    c.each_shard(|s, sh| {
        sh.index.lock().check();
        total += sh.bufs.len();
        assert!(s < c.shard_count(), "buffers in an unused shard {s}");
        // Every cached block lives in the shard its number hashes to.
        let ix = sh.index.lock();
        for i in 0..sh.bufs.len() as u32 {
            if let Some(b) = ix.block_of(i) {
                assert_eq!(shard_of(b, c.shard_count()), s, "block {b} in shard {s}");
            }
        }
    });
    assert_eq!(total, c.buffer_count());
}

// ---------------------------------------------------------------------------
// Model-based property test.

const DEV_SIZE: usize = 16 << 10;

#[derive(Clone, Debug)]
enum Op {
    Read {
        block: u64,
        n: u64,
    },
    ReadWith {
        block: u64,
    },
    /// `read_with` whose closure reads another block through the cache.
    ReadWithNested {
        block: u64,
        other: u64,
    },
    Write {
        block: u64,
        n: u64,
        seed: u32,
    },
    ReadBytes {
        off: u64,
        len: usize,
    },
    WriteBytes {
        off: u64,
        len: usize,
        seed: u32,
    },
    Flush,
    FlushRange {
        block: u64,
        count: u64,
    },
    Invalidate,
    InvalidateRange {
        block: u64,
        count: u64,
    },
    SetBlockSize(u32),
}

fn op() -> impl Strategy<Value = Op> {
    let blk = 0u64..64;
    prop_oneof![
        6 => (blk.clone(), 1u64..4).prop_map(|(block, n)| Op::Read { block, n }),
        3 => blk.clone().prop_map(|block| Op::ReadWith { block }),
        2 => (blk.clone(), blk.clone()).prop_map(|(block, other)| Op::ReadWithNested { block, other }),
        6 => (blk.clone(), 1u64..4, any::<u32>()).prop_map(|(block, n, seed)| Op::Write { block, n, seed }),
        1 => (0u64..DEV_SIZE as u64, 1usize..3000).prop_map(|(off, len)| Op::ReadBytes { off, len }),
        1 => (0u64..DEV_SIZE as u64, 1usize..3000, any::<u32>())
            .prop_map(|(off, len, seed)| Op::WriteBytes { off, len, seed }),
        1 => Just(Op::Flush),
        1 => (blk.clone(), 0u64..8).prop_map(|(block, count)| Op::FlushRange { block, count }),
        1 => Just(Op::Invalidate),
        2 => (blk, 0u64..8).prop_map(|(block, count)| Op::InvalidateRange { block, count }),
        1 => prop::sample::select(vec![512u32, 1024, 2048]).prop_map(Op::SetBlockSize),
    ]
}

struct Model {
    bs: usize,
    /// What every read must return.
    latest: Vec<u8>,
    /// Per block: the contents the device may hold (the last committed
    /// contents, then every write since, any of which an eviction may
    /// have written back).
    allowed: Vec<Vec<Vec<u8>>>,
}

impl Model {
    fn new(latest: Vec<u8>, bs: usize) -> Self {
        let mut m = Model {
            bs,
            latest,
            allowed: Vec::new(),
        };
        m.commit_all();
        m
    }
    fn blocks(&self) -> u64 {
        (self.latest.len() / self.bs) as u64
    }
    fn block(&self, b: u64) -> &[u8] {
        let s = b as usize * self.bs;
        &self.latest[s..s + self.bs]
    }
    fn commit(&mut self, b: u64) {
        self.allowed[b as usize] = vec![self.block(b).to_vec()];
    }
    fn commit_all(&mut self) {
        self.allowed = (0..self.blocks())
            .map(|b| vec![self.block(b).to_vec()])
            .collect();
    }
    fn write(&mut self, off: usize, data: &[u8]) {
        self.latest[off..off + data.len()].copy_from_slice(data);
    }
    /// The blocks are dropped from the cache: the device's contents (which
    /// must be allowed) become the truth.
    fn invalidated(&mut self, dev: &[u8], first: u64, end: u64) {
        for b in first..end.min(self.blocks()) {
            let s = b as usize * self.bs;
            let d = &dev[s..s + self.bs];
            assert!(
                self.allowed[b as usize].iter().any(|a| a == d),
                "block {b}: device holds contents never written"
            );
            self.latest[s..s + self.bs].copy_from_slice(d);
            self.commit(b);
        }
    }
}

fn run_model(budget: usize, min_per_shard: usize, ops: &[Op]) {
    let cache = BlockCache::with_min_per_shard(
        FakeDev::new(image(DEV_SIZE, 512)),
        512,
        budget,
        min_per_shard,
    );
    let mut m = Model::new(cache.device().snapshot(), 512);
    for (step, op) in ops.iter().enumerate() {
        let bs = m.bs;
        let nb = m.blocks();
        let stats0 = cache.stats();
        let reads0 = cache.device().reads();
        match *op {
            Op::Read { block, n } => {
                let block = block % nb;
                let n = n.min(nb - block);
                let cached = cache.peek(block).is_some();
                let mut buf = vec![0u8; n as usize * bs];
                cache.read(block, &mut buf).unwrap();
                let s = block as usize * bs;
                same(
                    &buf,
                    &m.latest[s..s + buf.len()],
                    format_args!("step {step}: {op:?}"),
                );
                let st = cache.stats();
                assert_eq!(st.hits + st.misses - stats0.hits - stats0.misses, n);
                if n == 1 {
                    // A cached block costs no device read; an uncached one
                    // exactly one.
                    assert_eq!(cache.device().reads() - reads0, u64::from(!cached));
                    assert_eq!(st.hits - stats0.hits, u64::from(cached));
                }
            }
            Op::ReadWith { block } => {
                let block = block % nb;
                let cached = cache.peek(block).is_some();
                let got = cache.read_with(block, |d| d.to_vec()).unwrap();
                same(&got, m.block(block), format_args!("step {step}: {op:?}"));
                assert_eq!(cache.device().reads() - reads0, u64::from(!cached));
            }
            Op::ReadWithNested { block, other } => {
                let (block, other) = (block % nb, other % nb);
                let (a, b) = cache
                    .read_with(block, |d| {
                        let mut o = vec![0u8; bs];
                        cache.read(other, &mut o).unwrap();
                        let again = cache.read_with(block, |e| e.to_vec()).unwrap();
                        assert_eq!(again, d);
                        (d.to_vec(), o)
                    })
                    .unwrap();
                same(&a, m.block(block), format_args!("step {step}: {op:?}"));
                same(&b, m.block(other), format_args!("step {step}: {op:?}"));
            }
            Op::Write { block, n, seed } => {
                let block = block % nb;
                let n = n.min(nb - block);
                let data: Vec<u8> = (block..block + n)
                    .flat_map(|b| pattern(seed, b, bs))
                    .collect();
                cache.write(block, &data).unwrap();
                m.write(block as usize * bs, &data);
                for b in block..block + n {
                    let cur = m.block(b).to_vec();
                    m.allowed[b as usize].push(cur);
                }
            }
            Op::ReadBytes { off, len } => {
                let len = len.min(DEV_SIZE - off as usize);
                let mut buf = vec![0u8; len];
                cache.read_bytes(off, &mut buf).unwrap();
                assert_eq!(
                    buf,
                    m.latest[off as usize..off as usize + len],
                    "step {step}"
                );
                for b in off / bs as u64..=(off + len as u64 - 1) / bs as u64 {
                    m.commit(b);
                }
            }
            Op::WriteBytes { off, len, seed } => {
                let len = len.min(DEV_SIZE - off as usize);
                let data = pattern(seed, off, len);
                cache.write_bytes(off, &data).unwrap();
                m.write(off as usize, &data);
                for b in off / bs as u64..=(off + len as u64 - 1) / bs as u64 {
                    m.commit(b);
                }
            }
            Op::Flush => {
                cache.flush().unwrap();
                same(
                    &cache.device().snapshot(),
                    &m.latest,
                    format_args!("step {step}: flush"),
                );
                assert_eq!(cache.dirty_count(), 0);
                m.commit_all();
            }
            Op::FlushRange { block, count } => {
                cache.flush_range(block, count).unwrap();
                for b in block..(block + count).min(nb) {
                    m.commit(b);
                }
            }
            Op::Invalidate => {
                cache.invalidate();
                m.invalidated(&cache.device().snapshot(), 0, nb);
                assert_eq!(cache.dirty_count(), 0);
            }
            Op::InvalidateRange { block, count } => {
                cache.invalidate_range(block, count);
                m.invalidated(&cache.device().snapshot(), block, block + count);
            }
            Op::SetBlockSize(new_bs) => {
                cache.set_block_size(new_bs).unwrap();
                same(
                    &cache.device().snapshot(),
                    &m.latest,
                    format_args!("step {step}: set_block_size"),
                );
                assert_eq!(cache.block_size(), new_bs);
                assert_eq!(cache.buffer_count(), budget / new_bs as usize);
                m.bs = new_bs as usize;
                m.commit_all();
            }
        }
        // The cache's view equals the model, and what is not held dirty in
        // the cache is on the device: nothing dirty was lost.
        let dev = cache.device().snapshot();
        for b in 0..m.blocks() {
            let s = b as usize * m.bs;
            let d = &dev[s..s + m.bs];
            assert!(
                m.allowed[b as usize].iter().any(|a| a == d),
                "step {step} ({op:?}): block {b} on the device was never written"
            );
            match cache.peek(b) {
                Some((data, dirty)) => {
                    same(
                        &data,
                        m.block(b),
                        format_args!("step {step} ({op:?}): cached block {b}"),
                    );
                    if !dirty {
                        same(
                            d,
                            m.block(b),
                            format_args!("step {step} ({op:?}): clean block {b}"),
                        );
                    }
                }
                None => same(
                    d,
                    m.block(b),
                    format_args!("step {step} ({op:?}): lost block {b}"),
                ),
            }
        }
        check_links(&cache);
        assert_eq!(cache.stats().write_errors, 0);
    }
    cache.flush().unwrap();
    same(
        &cache.device().snapshot(),
        &m.latest,
        format_args!("final flush"),
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn matches_model(budget in prop_oneof![0usize..600, 0usize..4096, 0usize..8192], ops in prop::collection::vec(op(), 1..80)) {
        run_model(budget, MIN_PER_SHARD, &ops);
    }

    /// The same with small caches split into up to 16 shards.
    #[test]
    fn matches_model_sharded(budget in 0usize..16384, min_per in 1usize..4, ops in prop::collection::vec(op(), 1..80)) {
        run_model(budget, min_per, &ops);
    }
}

#[test]
fn shards_split_the_budget() {
    assert_eq!(shard_count(0, MIN_PER_SHARD), 1);
    assert_eq!(shard_count(127, MIN_PER_SHARD), 1);
    assert_eq!(shard_count(128, MIN_PER_SHARD), 2);
    // The default 32 MiB of 4 KiB blocks.
    assert_eq!(shard_count(8192, MIN_PER_SHARD), MAX_SHARDS);
    let bs = 4096;
    for (budget, min_per) in [
        (8192 * bs, 64),
        (1000 * bs, 64),
        (37 * bs, 2),
        (5 * bs, 1),
        (0, 1),
    ] {
        let c = BlockCache::with_min_per_shard(MemDevice::new(1 << 20), bs as u32, budget, min_per);
        let n = budget / bs;
        assert_eq!(c.buffer_count(), n);
        let mut sizes = Vec::new();
        c.each_shard(|_, sh| sizes.push(sh.bufs.len()));
        assert_eq!(
            sizes.len(),
            c.shard_count().min(n.max(1)) - usize::from(n == 0)
        );
        let (lo, hi) = (sizes.iter().min(), sizes.iter().max());
        if let (Some(lo), Some(hi)) = (lo, hi) {
            assert!(hi - lo <= 1 && *lo >= min_per, "{budget}: {sizes:?}");
        }
        check_links(&c);
    }
    // Blocks spread over the shards.
    let mut per = [0u32; MAX_SHARDS];
    for b in 0..16384u64 {
        per[shard_of(b, MAX_SHARDS)] += 1;
    }
    assert!(per.iter().all(|&k| (900..1150).contains(&k)), "{per:?}");
}

// ---------------------------------------------------------------------------
// Failing writes.

#[test]
fn failed_writeback_stays_dirty_until_a_later_flush() {
    let bs = 1024;
    let cache = BlockCache::new(FakeDev::new(image(64 * bs, bs)), bs as u32, 4 * bs);
    let new: Vec<u8> = (0..4u64).flat_map(|b| pattern(7, b, bs)).collect();
    cache.write(0, &new).unwrap();
    let before = cache.device().snapshot();

    cache.device().fail_writes.store(true, Ordering::SeqCst);
    assert_eq!(cache.flush(), Err(IoError::EIO));
    assert_eq!(cache.stats().write_errors, 4);
    assert_eq!(cache.dirty_count(), 4);
    assert_eq!(cache.device().snapshot(), before);
    // Reads still see the new data.
    let mut buf = vec![0u8; 4 * bs];
    cache.read(0, &mut buf).unwrap();
    assert_eq!(buf, new);
    // Every buffer is dirty with a failed write-back: a read of another
    // block must not evict them; it goes to the device directly.
    let mut one = vec![0u8; bs];
    cache.read(10, &mut one).unwrap();
    assert_eq!(one, pattern(0xbeef, 10, bs));
    assert_eq!(cache.dirty_count(), 4);
    // A write of another block finds no buffer, is written through, fails.
    assert_eq!(cache.write(11, &one), Err(IoError::EIO));
    // Flushing again still fails and counts again.
    assert!(cache.flush_range(0, 2).is_err());
    assert_eq!(cache.stats().write_errors, 4 + 1 + 2);

    cache.device().fail_writes.store(false, Ordering::SeqCst);
    cache.flush().unwrap();
    assert_eq!(cache.dirty_count(), 0);
    assert_eq!(&cache.device().snapshot()[..4 * bs], &new[..]);
    assert_eq!(cache.stats().write_errors, 7);
    cache.flush().unwrap();
}

#[test]
fn failed_eviction_writeback_keeps_data() {
    let bs = 512;
    let cache = BlockCache::new(FakeDev::new(image(64 * bs, bs)), bs as u32, 2 * bs);
    cache.write(0, &pattern(1, 0, bs)).unwrap();
    cache.write(1, &pattern(1, 1, bs)).unwrap();
    cache.device().fail_writes.store(true, Ordering::SeqCst);
    // Both buffers dirty: the read tries to write them back, fails, and
    // reads around the cache.
    let mut buf = vec![0u8; bs];
    cache.read(5, &mut buf).unwrap();
    assert_eq!(buf, pattern(0xbeef, 5, bs));
    assert_eq!(cache.dirty_count(), 2);
    assert!(cache.stats().write_errors >= 2);
    // read_with falls back to a temporary.
    let v = cache.read_with(6, |d| d.to_vec()).unwrap();
    assert_eq!(v, pattern(0xbeef, 6, bs));
    cache.device().fail_writes.store(false, Ordering::SeqCst);
    cache.flush().unwrap();
    let dev = cache.device().snapshot();
    assert_eq!(&dev[..bs], &pattern(1, 0, bs)[..]);
    assert_eq!(&dev[bs..2 * bs], &pattern(1, 1, bs)[..]);
}

#[test]
fn invalidate_discards_dirty_data() {
    let bs = 512;
    let cache = BlockCache::new(FakeDev::new(image(16 * bs, bs)), bs as u32, 8 * bs);
    cache.write(3, &pattern(9, 3, bs)).unwrap();
    cache.write(4, &pattern(9, 4, bs)).unwrap();
    cache.invalidate_range(3, 1);
    cache.flush().unwrap();
    let dev = cache.device().snapshot();
    assert_eq!(&dev[3 * bs..4 * bs], &pattern(0xbeef, 3, bs)[..]);
    assert_eq!(&dev[4 * bs..5 * bs], &pattern(9, 4, bs)[..]);
}

// ---------------------------------------------------------------------------
// Arguments and edge cases.

#[test]
fn argument_checks() {
    let bs = 1024;
    let cache = BlockCache::new(FakeDev::new(image(8 * bs, bs)), bs as u32, 4 * bs);
    let einval = Err(IoError {
        errno: errno::EINVAL,
    });
    assert_eq!(cache.read(0, &mut [0u8; 100]), einval);
    assert_eq!(cache.write(0, &[0u8; 1500]), einval);
    assert_eq!(cache.read(7, &mut vec![0u8; 2 * bs]), Err(IoError::EIO));
    assert_eq!(cache.read(u64::MAX, &mut vec![0u8; bs]), Err(IoError::EIO));
    assert!(cache.read_with(8, |_| ()).is_err());
    assert_eq!(cache.set_block_size(3000), einval);
    assert_eq!(cache.set_block_size(256), einval);
    assert_eq!(cache.read(0, &mut []), Ok(()));
    cache.invalidate_range(u64::MAX - 1, u64::MAX);
    cache.flush_range(u64::MAX - 1, u64::MAX).unwrap();

    // A bad block size: nothing cached, block calls fail, bytes still work.
    let bad = BlockCache::new(FakeDev::new(image(8 * bs, bs)), 0, usize::MAX);
    assert_eq!(bad.budget_bytes(), MAX_BUDGET);
    assert_eq!(bad.buffer_count(), 0);
    assert_eq!(bad.read(0, &mut vec![0u8; bs]), einval);
    let mut b = [0u8; 10];
    bad.read_bytes(5, &mut b).unwrap();
    assert_eq!(&b[..], &pattern(0xbeef, 0, bs)[5..15]);
    let fixed = BlockCache::new(FakeDev::new(image(8 * bs, bs)), 0, 3 * bs);
    fixed.set_block_size(1024).unwrap();
    assert_eq!(fixed.buffer_count(), 3);
    fixed.read(0, &mut vec![0u8; bs]).unwrap();
}

#[test]
fn read_only_device_refuses_writes() {
    let cache = BlockCache::new(MemDevice::new(8192).read_only(), 1024, 4096);
    let erofs = Err(IoError {
        errno: errno::EROFS,
    });
    assert_eq!(cache.write(0, &[1u8; 1024]), erofs);
    assert_eq!(cache.write_bytes(0, &[1u8; 10]), erofs);
    assert_eq!(cache.dirty_count(), 0);
}

#[test]
fn zero_budget_goes_direct() {
    let bs = 1024;
    let cache = BlockCache::new(FakeDev::new(image(8 * bs, bs)), bs as u32, bs - 1);
    assert_eq!(cache.buffer_count(), 0);
    for _ in 0..3 {
        assert_eq!(
            cache.read_with(2, |d| d.to_vec()).unwrap(),
            pattern(0xbeef, 2, bs)
        );
    }
    cache.write(1, &pattern(5, 1, bs)).unwrap();
    assert_eq!(
        &cache.device().snapshot()[bs..2 * bs],
        &pattern(5, 1, bs)[..]
    );
    let s = cache.stats();
    assert_eq!((s.hits, s.misses), (0, 3));
    assert_eq!(s.bytes_written, bs as u64);
}

#[test]
fn set_block_size_flushes_and_recarves() {
    let cache = BlockCache::new(FakeDev::new(image(16384, 1024)), 1024, 8192);
    assert_eq!(cache.buffer_count(), 8);
    cache.write(2, &pattern(3, 2, 1024)).unwrap();
    cache.set_block_size(4096).unwrap();
    assert_eq!(cache.buffer_count(), 2);
    assert_eq!(cache.block_size(), 4096);
    let mut b = vec![0u8; 4096];
    cache.read(0, &mut b).unwrap();
    assert_eq!(&b[2048..3072], &pattern(3, 2, 1024)[..]);
    // A failing flush keeps the old buffers and the dirty data.
    cache.write(1, &b).unwrap();
    cache.device().fail_writes.store(true, Ordering::SeqCst);
    assert!(cache.set_block_size(1024).is_err());
    assert_eq!(cache.block_size(), 4096);
    assert_eq!(cache.dirty_count(), 1);
    cache.device().fail_writes.store(false, Ordering::SeqCst);
    cache.set_block_size(1024).unwrap();
    assert_eq!(&cache.device().snapshot()[4096..8192], &b[..]);
}

// ---------------------------------------------------------------------------
// Replacement.

/// Device reads needed to read `blocks` once each.
fn reads_for<D: BlockDevice>(
    c: &BlockCache<D>,
    dev_reads: impl Fn() -> u64,
    blocks: impl Iterator<Item = u64>,
) -> u64 {
    let before = dev_reads();
    let mut buf = vec![0u8; c.block_size() as usize];
    for b in blocks {
        c.read(b, &mut buf).unwrap();
    }
    dev_reads() - before
}

#[test]
fn hot_set_survives_cold_scan() {
    let bs = 512;
    let cache = BlockCache::new(FakeDev::new(image(4096 * bs, bs)), bs as u32, 64 * bs);
    let dev = || cache.device().reads();
    let hot = || (0..12u64).map(|b| b * 97 + 5);
    // Make the hot blocks hot: each read PROMOTE_EVERY + 10 times, in rounds.
    for _ in 0..PROMOTE_EVERY as usize + 10 {
        reads_for(&cache, dev, hot());
    }
    assert_eq!(reads_for(&cache, dev, hot()), 0);
    // A long scan of blocks read once each.
    let scanned = reads_for(&cache, dev, 1200..4096);
    assert_eq!(scanned, 4096 - 1200);
    // The hot blocks are all still cached.
    assert_eq!(
        reads_for(&cache, dev, hot()),
        0,
        "hot metadata was evicted by a scan"
    );
    check_links(&cache);
}

#[test]
fn lru_within_a_level() {
    let bs = 512;
    let cache = BlockCache::new(FakeDev::new(image(64 * bs, bs)), bs as u32, 4 * bs);
    let dev = || cache.device().reads();
    assert_eq!(reads_for(&cache, dev, 0..4), 4);
    assert_eq!(reads_for(&cache, dev, [0u64, 2].into_iter()), 0);
    // Block 1 is least recently used: reading 10 evicts it, not 0.
    assert_eq!(reads_for(&cache, dev, [10u64].into_iter()), 1);
    assert_eq!(reads_for(&cache, dev, [0u64, 2, 3, 10].into_iter()), 0);
    assert_eq!(reads_for(&cache, dev, [1u64].into_iter()), 1);
}

// ---------------------------------------------------------------------------
// Threads.

#[test]
fn parallel_readers_and_a_writer() {
    parallel_readers_and_a_writer_with(MIN_PER_SHARD);
}

#[test]
fn parallel_readers_and_a_writer_sharded() {
    parallel_readers_and_a_writer_with(2);
}

fn parallel_readers_and_a_writer_with(min_per_shard: usize) {
    let bs = 512;
    let nblocks = 256u64;
    let cache = Arc::new(BlockCache::with_min_per_shard(
        FakeDev::new(image(nblocks as usize * bs, bs)),
        bs as u32,
        24 * bs,
        min_per_shard,
    ));
    let threads = 4;
    let barrier = Arc::new(Barrier::new(threads + 2));
    let mut handles = Vec::new();
    for t in 0..threads {
        let c = cache.clone();
        let bar = barrier.clone();
        handles.push(std::thread::spawn(move || {
            bar.wait();
            let mut x = 0x9e37_79b9u64 ^ t as u64;
            let mut buf = vec![0u8; bs];
            for i in 0..20_000u64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Readers stay in 0..128 (never written); skewed to a hot set.
                let b = if i % 4 == 0 { x % 128 } else { x % 16 };
                if i % 2 == 0 {
                    c.read(b, &mut buf).unwrap();
                    assert_eq!(buf, pattern(0xbeef, b, bs), "block {b}");
                } else {
                    let ok = c
                        .read_with(b, |d| {
                            let o = (b + 1) % 128;
                            let inner = c
                                .read_with(o, |e| e == &pattern(0xbeef, o, bs)[..])
                                .unwrap();
                            inner && d == &pattern(0xbeef, b, bs)[..]
                        })
                        .unwrap();
                    assert!(ok, "block {b}");
                }
                if i % 5000 == 0 && t == 0 {
                    c.invalidate_range(0, 8);
                }
            }
        }));
    }
    // A writer on blocks 128..256, checking it reads back what it wrote.
    let c = cache.clone();
    let bar = barrier.clone();
    let writer = std::thread::spawn(move || {
        bar.wait();
        for i in 0..5000u32 {
            let b = 128 + (i as u64 * 7) % 128;
            let data = pattern(i, b, bs);
            c.write(b, &data).unwrap();
            let mut back = vec![0u8; bs];
            c.read(b, &mut back).unwrap();
            assert_eq!(back, data);
            if i % 1000 == 999 {
                c.flush().unwrap();
            }
        }
    });
    barrier.wait();
    for h in handles {
        h.join().unwrap();
    }
    writer.join().unwrap();
    cache.flush().unwrap();
    let dev = cache.device().snapshot();
    // The last write to each block is on the device.
    let mut last = std::collections::BTreeMap::new();
    for i in 0..5000u32 {
        last.insert(128 + (i as u64 * 7) % 128, i);
    }
    for (b, i) in last {
        let s = b as usize * bs;
        assert_eq!(&dev[s..s + bs], &pattern(i, b, bs)[..], "block {b}");
    }
    let st = cache.stats();
    assert!(st.hits > st.misses, "{st:?}");
    check_links(&cache);
}

#[test]
fn read_with_holds_no_cache_wide_lock() {
    // While one thread sits inside read_with's closure, another thread must
    // be able to read, write and flush other blocks.
    let bs = 512;
    let cache = Arc::new(BlockCache::new(
        FakeDev::new(image(64 * bs, bs)),
        bs as u32,
        8 * bs,
    ));
    let (done_tx, done_rx) = mpsc::channel();
    let (in_tx, in_rx) = mpsc::channel();
    let c = cache.clone();
    let other = std::thread::spawn(move || {
        in_rx.recv().unwrap();
        let mut buf = vec![0u8; bs];
        for b in 10..30 {
            c.read(b, &mut buf).unwrap();
            c.write(b, &buf).unwrap();
        }
        c.flush().unwrap();
        c.invalidate();
        done_tx.send(()).unwrap();
    });
    let finished = cache
        .read_with(1, |_| {
            in_tx.send(()).unwrap();
            done_rx.recv_timeout(Duration::from_secs(20)).is_ok()
        })
        .unwrap();
    assert!(finished, "another thread was blocked while read_with ran");
    other.join().unwrap();
}

#[test]
fn write_racing_invalidate_is_all_or_nothing() {
    // A write that pinned its buffer just before an invalidate dropped it
    // must not surface later (through an eviction write-back) after reads
    // have already seen the block without it.
    let bs = 512;
    let cache = Arc::new(BlockCache::new(
        FakeDev::new(image(64 * bs, bs)),
        bs as u32,
        4 * bs,
    ));
    let c = cache.clone();
    cache
        .read_with(1, |_| {
            // The writer pins block 1's buffer, then waits for its data lock,
            // which this closure holds shared.
            let writer = std::thread::spawn(move || c.write(1, &pattern(5, 1, bs)).unwrap());
            std::thread::sleep(Duration::from_millis(200));
            cache.invalidate_range(1, 1);
            writer
        })
        .unwrap()
        .join()
        .unwrap();
    // Read around the cache so no buffer is claimed yet.
    let mut seen = vec![0u8; bs];
    cache.read_bytes(bs as u64, &mut seen).unwrap();
    let mut buf = vec![0u8; bs];
    for b in 10..40 {
        cache.read(b, &mut buf).unwrap();
    }
    cache.flush().unwrap();
    cache.invalidate();
    let later = cache.read_with(1, |d| d.to_vec()).unwrap();
    same(&later, &seen, format_args!("block 1 changed with no write"));
}

// ---------------------------------------------------------------------------
// Check marks.

/// A mark set on a buffer's bytes holds while they stay, and is gone once
/// they may differ: rewritten, dropped and read again, evicted and read
/// again, or read into a temporary.
#[test]
fn marks_last_only_as_long_as_the_bytes() {
    let bs = 512;
    let cache = BlockCache::new(FakeDev::new(image(64 * bs, bs)), bs as u32, 8 * bs);
    let marked = |b: u64, tag: u64| cache.read_marked(b, |_, m| m.is(tag)).unwrap();
    let mark = |b: u64, tag: u64| cache.read_marked(b, |_, m| m.set(tag)).unwrap();
    assert!(!marked(3, 7));
    mark(3, 7);
    assert!(marked(3, 7));
    assert!(!marked(3, 8), "another tag is another check");
    assert!(!marked(4, 7), "another block");
    mark(3, 0);
    assert!(!marked(3, 0), "tag 0 never counts as marked");
    mark(3, 7);
    cache.write(3, &pattern(1, 3, bs)).unwrap();
    assert!(!marked(3, 7), "rewritten");
    mark(3, 7);
    cache.flush().unwrap();
    cache.invalidate_range(3, 1);
    assert!(!marked(3, 7), "dropped and read again");
    mark(3, 7);
    // A scan of other blocks evicts block 3.
    for b in 10..40 {
        cache.read_with(b, |_| ()).unwrap();
        cache.read_with(b, |_| ()).unwrap();
    }
    let reads = cache.device().reads();
    assert!(!marked(3, 7), "evicted and read again");
    assert_eq!(cache.device().reads(), reads + 1, "block 3 was evicted");
    // No buffers: every read is a temporary without a mark.
    let direct = BlockCache::new(FakeDev::new(image(8 * bs, bs)), bs as u32, 0);
    direct.read_marked(2, |_, m| m.set(7)).unwrap();
    assert!(!direct.read_marked(2, |_, m| m.is(7)).unwrap());
}

// ------------------------------------------------ transactions (modify, pins)

#[derive(Clone, Debug)]
enum TxOp {
    /// Change one byte of a block in place (`fresh`: a new block, zeroed).
    Modify(u64, u16, u8, bool),
    Read(u64),
    /// Ordinary write-back pressure: a flush of everything.
    Flush,
    /// Commit without a journal: every pinned block written home.
    Commit,
    /// Abort: the pinned blocks dropped.
    Abort,
}

fn tx_op(blocks: u64) -> impl Strategy<Value = TxOp> {
    prop_oneof![
        4 => (0..blocks, 0u16..1024, any::<u8>(), prop::bool::weighted(0.1))
            .prop_map(|(b, o, v, f)| TxOp::Modify(b, o, v, f)),
        4 => (0..blocks).prop_map(TxOp::Read),
        1 => Just(TxOp::Flush),
        1 => Just(TxOp::Commit),
        1 => Just(TxOp::Abort),
    ]
}

/// The cache under transactions against a model: the device never sees a
/// transaction's change before its commit (not through eviction, not
/// through flush), sees all of it after, an abort brings back the last
/// committed bytes, and reads always see the newest bytes.
fn run_tx_model(budget: usize, ops: &[TxOp]) {
    let bs = 1024usize;
    let blocks = 32u64;
    let start = image(blocks as usize * bs, bs);
    let dev = FakeDev::new(start.clone());
    // Shards of at least MIN_PER_SHARD buffers, as a volume's cache: the
    // transaction limit (a quarter of the buffers) keeps pins from filling
    // any one shard.
    let cache = BlockCache::new(&dev, bs as u32, budget);
    let limit = (cache.buffer_count() / 4).max(1);
    let mut committed = start.clone();
    let mut latest = start;
    let mut pinned = std::collections::BTreeSet::new();
    for op in ops {
        match *op {
            TxOp::Modify(b, o, v, fresh) => {
                if !pinned.contains(&b) && pinned.len() >= limit {
                    // The transaction limit: commit first, as `begin` does.
                    for &p in &pinned {
                        cache.txn_written(p).unwrap();
                    }
                    pinned.clear();
                    committed.clone_from(&latest);
                }
                let r = cache.modify(b, fresh, |d| {
                    if fresh {
                        assert!(d.iter().all(|&x| x == 0), "a fresh block starts zeroed");
                    }
                    d[o as usize] = v;
                });
                let (_, new) = r.unwrap();
                assert_eq!(new, pinned.insert(b), "newly pinned iff not pinned before");
                let blk = &mut latest[b as usize * bs..(b as usize + 1) * bs];
                if fresh {
                    blk.fill(0);
                }
                blk[o as usize] = v;
            }
            TxOp::Read(b) => {
                let mut buf = vec![0u8; bs];
                cache.read(b, &mut buf).unwrap();
                same(
                    &buf,
                    &latest[b as usize * bs..(b as usize + 1) * bs],
                    format_args!("read {b}"),
                );
            }
            TxOp::Flush => cache.flush().unwrap(),
            TxOp::Commit => {
                for &p in &pinned {
                    cache.txn_written(p).unwrap();
                }
                pinned.clear();
                committed.clone_from(&latest);
            }
            TxOp::Abort => {
                for &p in &pinned {
                    cache.invalidate_range(p, 1);
                }
                pinned.clear();
                latest.clone_from(&committed);
            }
        }
        assert_eq!(cache.txn_count(), pinned.len());
        // Nothing uncommitted ever reached the device.
        let d = dev.snapshot();
        for b in 0..blocks as usize {
            let r = b * bs..(b + 1) * bs;
            if d[r.clone()] != committed[r.clone()] && d[r.clone()] != latest[r.clone()] {
                panic!("block {b} on the device is neither committed nor newest");
            }
            if pinned.contains(&(b as u64)) && d[r.clone()] != committed[r.clone()] {
                panic!("block {b}: an uncommitted change reached the device");
            }
        }
    }
    cache.flush().unwrap();
    let d = dev.snapshot();
    // Only pinned blocks may still differ (never written without commit).
    for b in 0..blocks as usize {
        let r = b * bs..(b + 1) * bs;
        let want = if pinned.contains(&(b as u64)) {
            &committed[r.clone()]
        } else {
            &latest[r.clone()]
        };
        same(
            &d[r.clone()],
            want,
            format_args!("device block {b} after flush"),
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn transactions_match_model(budget in prop_oneof![4096usize..8192, 8192usize..32768], ops in prop::collection::vec(tx_op(32), 1..120)) {
        run_tx_model(budget, &ops);
    }
}

#[test]
fn modify_with_every_buffer_pinned_fails_cleanly() {
    let dev = MemDevice::new(64 * 1024);
    let cache = BlockCache::new(&dev, 1024, 4096);
    for b in 0..4 {
        cache.modify(b, true, |d| d[0] = 1).unwrap();
    }
    // Four buffers, all pinned: a fifth block cannot be changed.
    let e = cache.modify(10, false, |d| d[0] = 1).unwrap_err();
    assert_eq!(e.errno, errno::ENOMEM);
    // Reads still work (straight from the device).
    let mut buf = vec![0u8; 1024];
    cache.read(20, &mut buf).unwrap();
    assert_eq!(dev.snapshot()[0], 0, "nothing written before commit");
    cache.txn_written(0).unwrap();
    assert_eq!(dev.snapshot()[0], 1);
}
