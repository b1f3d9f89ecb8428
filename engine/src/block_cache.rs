//! The metadata block cache: a bounded write-back cache of filesystem blocks
//! between the engine and its [`BlockDevice`] (see docs/block-cache.md).
//!
//! Memory: `budget / block_size` buffers are allocated when the cache is
//! created (or its block size changes) and never again; requests only pin
//! and copy. When every buffer is pinned (or dirty with a failing device),
//! requests go straight to the device instead of failing.
//!
//! Shards: the buffers are split into up to [`MAX_SHARDS`] shards (a power
//! of two, at least [`MIN_PER_SHARD`] buffers each, so a small cache is one
//! shard), and a block belongs to the shard its number hashes to. Each shard
//! has its own lock, hash table, replacement lists and hit counters, so
//! requests for blocks of different shards touch no common memory and
//! threads scale; replacement (priorities, promotion every 50 accesses, the
//! cap on promoted buffers) works within a shard.
//!
//! Locking, from outside in:
//! - each shard (a reader-writer lock) is taken shared by every operation
//!   on its blocks, and exclusively only by [`BlockCache::set_block_size`],
//!   which takes all of them (all or none, so it never holds one while
//!   waiting for another) and replaces all buffers. Shared holders never
//!   wait for each other, and spin's `RwLock` does not make new readers
//!   wait for a waiting writer, so nested reads from inside a `read_with`
//!   closure cannot deadlock.
//! - a shard's `index` (a spin mutex) guards its hash table and
//!   replacement lists. It is held only for lookups and list moves, never
//!   across device I/O or a caller's closure.
//! - each buffer's `data` lock guards its bytes; I/O on a buffer happens
//!   under it. A buffer is pinned (`refs > 0`) by whoever uses it, and a
//!   pinned buffer is never given to another block. Pins are taken only
//!   under the index lock of the buffer's shard, so "unpinned" seen under
//!   that lock stays true until the lock is released.
//! - each buffer's `state` word holds the `uptodate`/`dirty` flags plus a
//!   generation that changes whenever the buffer stops holding its block
//!   (invalidated or reused). Flag updates are compare-and-swap on the
//!   generation seen when pinning, so a write racing with an invalidate is
//!   either kept whole or discarded whole, never half-applied to a buffer
//!   that now belongs to something else.

mod index;
#[cfg(test)]
mod tests;

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::device::BlockDevice;
use crate::error::{errno, IoError};
use index::Index;

/// Smallest block size the cache accepts.
pub const MIN_BLOCK_SIZE: u32 = 512;
/// Largest block size the cache accepts (ext4's largest).
pub const MAX_BLOCK_SIZE: u32 = 65536;
/// Budget ceiling (fuse2fs' `cache_size` ceiling).
pub const MAX_BUDGET: usize = 1 << 31;
/// Most shards the buffers are split into.
pub const MAX_SHARDS: usize = 16;
/// Fewest buffers per shard: below `2 * MIN_PER_SHARD` buffers the cache is
/// one shard, and replacement is exactly the single-list policy.
pub const MIN_PER_SHARD: usize = 64;
/// How many dirty victims one request may write back while looking for a
/// buffer before it gives up and goes to the device directly.
const MAX_WRITEBACKS: usize = 4;

const UPTODATE: u64 = 1;
const DIRTY: u64 = 2;
/// Changed by a transaction that has not committed: never evicted, never
/// written back by eviction or `flush`, until [`BlockCache::txn_written`] or
/// [`BlockCache::txn_release`] lets go of it (docs/transactions.md).
const TXN: u64 = 4;
/// Frozen into the log by a committing transaction whose commit block is
/// not durable yet ([`BlockCache::txn_freeze`]): never evicted or written
/// home until [`BlockCache::txn_logged`]. The next transaction may change
/// the buffer meanwhile (it then holds `TXN` too).
const LOGGED: u64 = 8;
/// Held back from write-back and eviction.
const PINNED: u64 = TXN | LOGGED;
const FLAGS: u64 = UPTODATE | DIRTY | TXN | LOGGED;
/// One step of the generation kept in the state word above the flags.
const GEN_ONE: u64 = 16;
/// How often a transaction change retries when every buffer of its shard
/// is in use by a reader at that moment.
const MODIFY_TRIES: usize = 64;

const EINVAL: IoError = IoError {
    errno: errno::EINVAL,
};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Bytes read from the device (buffer fills, direct and byte reads).
    pub bytes_read: u64,
    /// Bytes written to the device.
    pub bytes_written: u64,
    /// Block reads answered from an up-to-date buffer.
    pub hits: u64,
    /// Block reads that had to go to the device.
    pub misses: u64,
    /// Device writes that failed.
    pub write_errors: u64,
}

struct Buf {
    refs: AtomicU32,
    /// The block this buffer holds; changed only while unpinned, under the
    /// index lock, so a pinned buffer's block is stable.
    block: AtomicU64,
    state: AtomicU64,
    /// errno of the last failed write-back, 0 if none.
    err: AtomicI32,
    /// The tag of the last check the bytes passed ([`Mark`]), 0 if none.
    /// Cleared whenever the bytes change: on claim (no pins), and under the
    /// data write lock in `fill` and `write_block`; set only under the data
    /// read lock, so a mark always describes the bytes beside it.
    mark: AtomicU64,
    data: spin::RwLock<Box<[u8]>>,
}

/// What a [`BlockCache::read_marked`] caller may know about the bytes it
/// is given: whether they already passed a check with the same tag since
/// they were read or written (e.g. a directory block's checksum under one
/// directory's seed), so the check need not run again on every hit. A
/// block read into a temporary carries no mark.
pub struct Mark<'a>(Option<&'a AtomicU64>);

impl Mark<'_> {
    /// Whether the bytes passed the check tagged `tag` (never for 0).
    pub fn is(&self, tag: u64) -> bool {
        tag != 0 && self.0.is_some_and(|m| m.load(Ordering::Acquire) == tag)
    }
    /// Record that the bytes passed the check tagged `tag`.
    pub fn set(&self, tag: u64) {
        if let Some(m) = self.0 {
            m.store(tag, Ordering::Release);
        }
    }
}

/// One shard's buffers and index. Buffer numbers in the index are local
/// to the shard.
struct Shard {
    /// How many shards were in use when this was carved (the same in every
    /// shard): a request that picked its shard with another count retries.
    count: usize,
    /// 0 when the block size given was invalid (then there are no buffers
    /// and block operations fail with EINVAL).
    block_size: u32,
    bufs: Vec<Buf>,
    index: spin::Mutex<Index>,
}

impl Shard {
    fn new(count: usize, block_size: u32, n: usize) -> Shard {
        let bufs = (0..n)
            .map(|_| Buf {
                refs: AtomicU32::new(0),
                block: AtomicU64::new(0),
                state: AtomicU64::new(0),
                err: AtomicI32::new(0),
                mark: AtomicU64::new(0),
                data: spin::RwLock::new(vec![0u8; block_size as usize].into_boxed_slice()),
            })
            .collect();
        Shard {
            count,
            block_size,
            bufs,
            // At most 2 GiB / 512 = 4 Mi buffers: fits u32 with room for NIL.
            index: spin::Mutex::new(Index::new(n as u32)),
        }
    }
}

/// How many shards `n` buffers make: a power of two up to `MAX_SHARDS`
/// with at least `min_per` buffers in each.
fn shard_count(n: usize, min_per: usize) -> usize {
    let mut s = 1;
    while s < MAX_SHARDS && n / (2 * s) >= min_per.max(1) {
        s *= 2;
    }
    s
}

/// The shard of `block` among `count` (a power of two). A different mix
/// from the index's bucket hash (which takes the top bits of another
/// product), so a shard's blocks still spread over all its buckets.
fn shard_of(block: u64, count: usize) -> usize {
    let x = (block ^ (block >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    ((x ^ (x >> 32)) as usize) & (count - 1)
}

/// Buffers for `budget` bytes of `block_size` blocks, split into shards:
/// the `MAX_SHARDS` slots, those past the count in use left empty.
fn carve(block_size: u32, budget: usize, min_per: usize) -> (Vec<Shard>, usize) {
    let valid = valid_block_size(block_size);
    let bs = if valid { block_size } else { 0 };
    let n = if valid { budget / bs as usize } else { 0 };
    let count = shard_count(n, min_per);
    // Shard s gets n*(s+1)/count - n*s/count buffers: sizes differ by at
    // most one, and none is empty (n >= count unless n is 0).
    let shards = (0..MAX_SHARDS)
        .map(|s| {
            let len = if s < count {
                n * (s + 1) / count - n * s / count
            } else {
                0
            };
            Shard::new(count, bs, len)
        })
        .collect();
    (shards, count)
}

/// Per-shard hit and miss counters, each on its own pair of cache lines
/// (the unit some CPUs fetch) so threads hitting different shards do not
/// share one.
#[derive(Default)]
#[repr(align(128))]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
}

/// A pin on a buffer, released on drop.
struct Pin<'a> {
    buf: &'a Buf,
    /// Generation (state word without flags) when pinned.
    gen: u64,
}

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        self.buf.refs.fetch_sub(1, Ordering::Release);
    }
}

impl Pin<'_> {
    /// Set `flags` if the buffer still holds the block it was pinned for.
    fn set_flags(&self, flags: u64) -> bool {
        let gen = self.gen;
        self.buf
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (s & !FLAGS == gen).then_some(s | flags)
            })
            .is_ok()
    }
    fn uptodate(&self) -> bool {
        self.buf.state.load(Ordering::Acquire) & UPTODATE != 0
    }
}

enum Claim {
    Ready(u32, u64),
    /// A dirty victim, pinned: write it back and ask again.
    Writeback(u32, u64),
    NoBuffer,
}

type ShardRef<'a> = spin::RwLockReadGuard<'a, Shard>;

/// A shard's lock, alone on its cache lines: its lock word and index are
/// written on every hit, and must not share a line with another shard's.
#[repr(align(128))]
struct Slot(spin::RwLock<Shard>);

pub struct BlockCache<D: BlockDevice> {
    dev: D,
    budget: usize,
    min_per_shard: usize,
    /// Shards in use (the same as every shard's `count`, changed only
    /// while all shards are held exclusively).
    count: AtomicUsize,
    /// Block size and total buffers, for answers that need no shard.
    block_size: AtomicU32,
    total: AtomicUsize,
    /// Always `MAX_SHARDS` slots.
    shards: Vec<Slot>,
    counters: Vec<Counters>,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    write_errors: AtomicU64,
}

/// A power of two from 512 to 64 KiB.
fn valid_block_size(bs: u32) -> bool {
    bs.is_power_of_two() && (MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&bs)
}

/// Blocks `first..first+count` as a half-open range, saturating.
fn block_range(first: u64, count: u64) -> (u64, u64) {
    (first, first.saturating_add(count))
}

impl<D: BlockDevice> BlockCache<D> {
    /// budget_bytes: memory for buffers, reserved up front (clamped to
    /// 2 GiB); a budget smaller than one block means no buffers (everything
    /// goes direct). A block size that is not a power of two in 512..=65536 makes every block
    /// operation fail with EINVAL until [`Self::set_block_size`] fixes it.
    pub fn new(dev: D, block_size: u32, budget_bytes: usize) -> Self {
        Self::with_min_per_shard(dev, block_size, budget_bytes, MIN_PER_SHARD)
    }

    /// [`Self::new`] with another least shard size (tests split small
    /// caches into many shards with it).
    pub fn with_min_per_shard(
        dev: D,
        block_size: u32,
        budget_bytes: usize,
        min_per_shard: usize,
    ) -> Self {
        let budget = budget_bytes.min(MAX_BUDGET);
        let (shards, count) = carve(block_size, budget, min_per_shard);
        let total = shards.iter().map(|s| s.bufs.len()).sum();
        let bs = shards[0].block_size;
        BlockCache {
            dev,
            budget,
            min_per_shard,
            count: AtomicUsize::new(count),
            block_size: AtomicU32::new(bs),
            total: AtomicUsize::new(total),
            shards: shards
                .into_iter()
                .map(|s| Slot(spin::RwLock::new(s)))
                .collect(),
            counters: (0..MAX_SHARDS).map(|_| Counters::default()).collect(),
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
        }
    }

    pub fn device(&self) -> &D {
        &self.dev
    }

    pub fn block_size(&self) -> u32 {
        self.block_size.load(Ordering::Acquire)
    }

    pub fn budget_bytes(&self) -> usize {
        self.budget
    }

    /// Number of buffers the budget bought at the current block size.
    pub fn buffer_count(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// Number of shards the buffers are split into.
    pub fn shard_count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Number of buffers holding data not yet on the device.
    pub fn dirty_count(&self) -> usize {
        let mut n = 0;
        self.each_shard(|_, sh| {
            n += sh
                .bufs
                .iter()
                .filter(|b| b.state.load(Ordering::Acquire) & DIRTY != 0)
                .count();
        });
        n
    }

    pub fn stats(&self) -> CacheStats {
        let (mut hits, mut misses) = (0, 0);
        for c in &self.counters {
            hits += c.hits.load(Ordering::Relaxed);
            misses += c.misses.load(Ordering::Relaxed);
        }
        CacheStats {
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            hits,
            misses,
            write_errors: self.write_errors.load(Ordering::Relaxed),
        }
    }

    /// Whole blocks: `buf.len()` must be a multiple of the block size.
    pub fn read(&self, block: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let bs = self.whole_blocks(block, buf.len())?;
        for (k, chunk) in buf.chunks_exact_mut(bs).enumerate() {
            let b = block + k as u64;
            let (sh, sid) = self.shard(b);
            check_bs(&sh, bs)?;
            self.read_block(&sh, sid, b, chunk)?;
        }
        Ok(())
    }

    /// One block, no copy out: calls `f` with the cached block's bytes.
    ///
    /// `f` may read through the cache again (`read`, `read_with`,
    /// `read_bytes`, `flush`, `invalidate*`), the same block included: only
    /// this buffer's shared data lock, its shard's shared lock and a pin
    /// are held while `f` runs. It must not `write` the block it is reading
    /// (that waits for `f` to return) nor call `set_block_size` (which
    /// waits for every user). When no buffer can be had, the block is read
    /// into a temporary.
    pub fn read_with<R>(&self, block: u64, f: impl FnOnce(&[u8]) -> R) -> Result<R, IoError> {
        self.read_marked(block, |d, _| f(d))
    }

    /// [`BlockCache::read_with`], also handing `f` the buffer's [`Mark`].
    pub fn read_marked<R>(
        &self,
        block: u64,
        f: impl FnOnce(&[u8], &Mark) -> R,
    ) -> Result<R, IoError> {
        let (sh, sid) = self.shard(block);
        let bs = sh.block_size as usize;
        self.check_range(bs, block, bs)?;
        let Some(pin) = self.pin(&sh, block) else {
            let mut tmp = vec![0u8; bs];
            self.direct_read(sid, bs, block, &mut tmp)?;
            return Ok(f(&tmp, &Mark(None)));
        };
        let mark = Mark(Some(&pin.buf.mark));
        {
            let d = pin.buf.data.read();
            if pin.uptodate() {
                self.counters[sid].hits.fetch_add(1, Ordering::Relaxed);
                return Ok(f(&d, &mark));
            }
        }
        let mut d = pin.buf.data.write();
        if pin.uptodate() {
            self.counters[sid].hits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.fill(sid, bs, block, &pin, &mut d)?;
        }
        let d = d.downgrade();
        Ok(f(&d, &mark))
    }

    /// Write-back: the blocks are copied into buffers and marked dirty; a
    /// block that can get no buffer is written through.
    pub fn write(&self, block: u64, buf: &[u8]) -> Result<(), IoError> {
        let bs = self.whole_blocks(block, buf.len())?;
        self.check_writable()?;
        for (k, chunk) in buf.chunks_exact(bs).enumerate() {
            let b = block + k as u64;
            let (sh, _) = self.shard(b);
            check_bs(&sh, bs)?;
            self.write_block(&sh, b, chunk)?;
        }
        Ok(())
    }

    /// Byte-granular read: the blocks it touches are flushed and dropped,
    /// then the bytes come straight from the device.
    pub fn read_bytes(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        if buf.is_empty() {
            return Ok(());
        }
        if let Some((first, end)) = self.byte_blocks(offset, buf.len())? {
            self.flush_in(first, end)?;
            self.drop_range(first, end, true);
        }
        self.dev.read_at(offset, buf)?;
        self.bytes_read
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Byte-granular write: the blocks it touches are flushed and dropped,
    /// then the bytes go straight to the device.
    pub fn write_bytes(&self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        if buf.is_empty() {
            return Ok(());
        }
        self.check_writable()?;
        let range = self.byte_blocks(offset, buf.len())?;
        if let Some((first, end)) = range {
            self.flush_in(first, end)?;
            self.drop_range(first, end, true);
        }
        let r = self.dev.write_at(offset, buf);
        // A read racing with this write may have cached the old bytes.
        if let Some((first, end)) = range {
            self.drop_range(first, end, true);
        }
        self.count_write(r, buf.len())
    }

    /// Write every dirty buffer, then flush the device. Fails if any
    /// write-back failed (those buffers stay dirty and are retried by the
    /// next flush).
    pub fn flush(&self) -> Result<(), IoError> {
        let r = self.flush_in(0, u64::MAX);
        let f = self.dev.flush();
        r.and(f)
    }

    /// Write the dirty buffers of blocks `block..block+count` (no device
    /// flush).
    pub fn flush_range(&self, block: u64, count: u64) -> Result<(), IoError> {
        let (first, end) = block_range(block, count);
        self.flush_in(first, end)
    }

    /// Drop every buffer, discarding dirty contents.
    pub fn invalidate(&self) {
        self.drop_range(0, u64::MAX, false);
    }

    /// Drop the buffers of blocks `block..block+count`, discarding dirty
    /// contents (for freed, discarded or zeroed blocks).
    pub fn invalidate_range(&self, block: u64, count: u64) {
        let (first, end) = block_range(block, count);
        self.drop_range(first, end, false);
    }

    /// Change `block` in place for a transaction: under the buffer's write
    /// lock, `f` edits the cached bytes (read from the device first unless
    /// cached, or zeroed without a read when `fresh`: a newly allocated
    /// block). The buffer is then dirty and pinned to the running
    /// transaction (never evicted or written back until
    /// [`Self::txn_written`] / [`Self::txn_release`]). Returns `f`'s result
    /// and whether this call pinned the buffer (false when the transaction
    /// already held it). Fails with ENOMEM only when every buffer of the
    /// block's shard stays pinned (the transaction limit keeps that from
    /// happening, docs/transactions.md), and with the read error when the
    /// block cannot be read.
    pub fn modify<R>(
        &self,
        block: u64,
        fresh: bool,
        f: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<(R, bool), IoError> {
        let bs = self.whole_blocks(block, self.block_size() as usize)?;
        self.check_writable()?;
        let (sh, sid) = self.shard(block);
        check_bs(&sh, bs)?;
        let mut tries = 0;
        let pin = loop {
            if let Some(p) = self.pin(&sh, block) {
                break p;
            }
            tries += 1;
            if tries >= MODIFY_TRIES {
                return Err(IoError {
                    errno: errno::ENOMEM,
                });
            }
            core::hint::spin_loop();
        };
        let mut d = pin.buf.data.write();
        if fresh {
            d.fill(0);
            pin.set_flags(UPTODATE);
        } else if !pin.uptodate() {
            self.fill(sid, bs, block, &pin, &mut d)?;
        }
        pin.buf.mark.store(0, Ordering::Relaxed);
        let r = f(&mut d);
        let gen = pin.gen;
        let old = pin
            .buf
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (s & !FLAGS == gen).then_some(s | UPTODATE | DIRTY | TXN)
            })
            // Invalidated while being changed: only a block freed by the
            // same transaction can be, and then the change is moot.
            .map_err(|_| IoError::EIO)?;
        Ok((r, old & TXN == 0))
    }

    /// Run `f` on the bytes of `block` if it is pinned to the running
    /// transaction (`None` when it is not cached so: freed and invalidated
    /// since it was changed). For a journal that logs the blocks.
    pub fn with_txn_block<R>(&self, block: u64, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let (sh, _) = self.shard(block);
        let pin = self.pin_txn(&sh, block)?;
        let d = pin.buf.data.read();
        let s = pin.buf.state.load(Ordering::Acquire);
        (s & !FLAGS == pin.gen && s & TXN != 0).then(|| f(&d))
    }

    /// Commit without a journal: write `block` home if the transaction holds
    /// it, then it is clean and unpinned. A failed write leaves it dirty
    /// (no longer pinned, so a later flush retries it) and is reported.
    pub fn txn_written(&self, block: u64) -> Result<(), IoError> {
        let (sh, _) = self.shard(block);
        let Some(pin) = self.pin_txn(&sh, block) else {
            return Ok(());
        };
        let b = pin.buf;
        let d = b.data.read();
        let r = self.dev.write_blocks(block, sh.block_size, &d);
        let gen = pin.gen;
        let clear = if r.is_ok() { TXN | DIRTY } else { TXN };
        let _ = b
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (s & !FLAGS == gen).then_some(s & !clear)
            });
        match r {
            Ok(()) => b.err.store(0, Ordering::Relaxed),
            Err(e) => b.err.store(e.errno, Ordering::Relaxed),
        }
        self.count_write(r, d.len())
    }

    /// Let go of `block` after its transaction committed through a journal:
    /// it stays dirty, an ordinary buffer that write-back (checkpoint) may
    /// now write home.
    pub fn txn_release(&self, block: u64) {
        let (sh, _) = self.shard(block);
        if let Some(pin) = self.pin_txn(&sh, block) {
            let gen = pin.gen;
            let _ = pin
                .buf
                .state
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                    (s & !FLAGS == gen).then_some(s & !TXN)
                });
        };
    }

    /// Journal commit, first step (no handle open): hand `f` the bytes of
    /// `block` if the transaction holds it, and move it from the running
    /// transaction to the committing one (`LOGGED`): still never written
    /// home or evicted, but the next transaction may change it, which the
    /// copy `f` took does not see. `None` when the transaction no longer
    /// holds it (freed and invalidated since it was changed).
    pub fn txn_freeze<R>(&self, block: u64, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let (sh, _) = self.shard(block);
        let pin = self.pin_txn(&sh, block)?;
        let d = pin.buf.data.read();
        let gen = pin.gen;
        let s = pin.buf.state.load(Ordering::Acquire);
        if s & !FLAGS != gen || s & TXN == 0 {
            return None;
        }
        let r = f(&d);
        // Under the data lock: no change can slip in between the copy and
        // the flag (changes take the write lock).
        let _ = pin
            .buf
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (s & !FLAGS == gen).then_some((s & !TXN) | LOGGED)
            });
        Some(r)
    }

    /// Journal commit, last step: the commit block of the transaction that
    /// froze `block` is durable, so its buffer may be written home
    /// (checkpoint) like any dirty buffer, unless the next transaction
    /// holds it now.
    pub fn txn_logged(&self, block: u64) {
        let (sh, _) = self.shard(block);
        let ix = sh.index.lock();
        let Some(i) = ix.find(block) else { return };
        let b = &sh.bufs[i as usize];
        let _ = b
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (s & LOGGED != 0).then_some(s & !LOGGED)
            });
    }

    /// Whether `block` is cached with contents not yet written home (dirty,
    /// held by a transaction, or frozen into the log): the checkpoint asks
    /// this after writing back.
    pub fn is_dirty(&self, block: u64) -> bool {
        let (sh, _) = self.shard(block);
        let ix = sh.index.lock();
        ix.find(block).is_some_and(|i| {
            sh.bufs[i as usize].state.load(Ordering::Acquire) & (DIRTY | PINNED) != 0
        })
    }

    /// Number of buffers pinned to the running transaction.
    pub fn txn_count(&self) -> usize {
        let mut n = 0;
        self.each_shard(|_, sh| {
            n += sh
                .bufs
                .iter()
                .filter(|b| b.state.load(Ordering::Acquire) & TXN != 0)
                .count();
        });
        n
    }

    /// Pin the buffer of `block` if it is cached and held by a transaction.
    fn pin_txn<'t>(&self, sh: &'t Shard, block: u64) -> Option<Pin<'t>> {
        let ix = sh.index.lock();
        let i = ix.find(block)?;
        let b = &sh.bufs[i as usize];
        let s = b.state.load(Ordering::Acquire);
        if s & TXN == 0 {
            return None;
        }
        b.refs.fetch_add(1, Ordering::Acquire);
        Some(Pin {
            buf: b,
            gen: s & !FLAGS,
        })
    }

    /// Flush, drop every buffer and carve the budget into buffers of the new
    /// size. If the flush fails nothing changes. Must not be called from
    /// inside a `read_with` closure.
    pub fn set_block_size(&self, block_size: u32) -> Result<(), IoError> {
        if !valid_block_size(block_size) {
            return Err(EINVAL);
        }
        let mut all = self.lock_all();
        let mut result = Ok(());
        for sh in all.iter() {
            let r = self.flush_shard(sh, 0, u64::MAX);
            if result.is_ok() {
                result = r;
            }
        }
        result?;
        // Free the old buffers before allocating the new ones, so memory
        // stays within the budget.
        for sh in all.iter_mut() {
            **sh = Shard::new(1, 0, 0);
        }
        let (shards, count) = carve(block_size, self.budget, self.min_per_shard);
        let total = shards.iter().map(|s| s.bufs.len()).sum();
        for (slot, sh) in all.iter_mut().zip(shards) {
            **slot = sh;
        }
        self.count.store(count, Ordering::Release);
        self.total.store(total, Ordering::Release);
        self.block_size.store(block_size, Ordering::Release);
        Ok(())
    }

    // ---- internals ----

    /// The shard of `block`, held shared, and its number.
    fn shard(&self, block: u64) -> (ShardRef<'_>, usize) {
        loop {
            let count = self.count.load(Ordering::Acquire);
            let s = shard_of(block, count);
            let sh = self.shards[s].0.read();
            // Only set_block_size changes the count, holding every shard.
            if sh.count == count {
                return (sh, s);
            }
        }
    }

    /// Every shard held exclusively, taken all or none so that no shard
    /// is held while waiting for another (a reader inside a `read_with`
    /// closure may be waiting for the one held).
    fn lock_all(&self) -> Vec<spin::RwLockWriteGuard<'_, Shard>> {
        loop {
            let mut held = Vec::with_capacity(self.shards.len());
            for s in &self.shards {
                match s.0.try_write() {
                    Some(g) => held.push(g),
                    None => break,
                }
            }
            if held.len() == self.shards.len() {
                return held;
            }
            drop(held);
            core::hint::spin_loop();
        }
    }

    /// Call `f` on every shard that has buffers, each held shared in turn.
    fn each_shard(&self, mut f: impl FnMut(usize, &Shard)) {
        for (i, s) in self.shards.iter().enumerate() {
            let sh = s.0.read();
            if !sh.bufs.is_empty() {
                f(i, &sh);
            }
        }
    }

    /// Check a whole-block request; returns the block size as usize.
    fn whole_blocks(&self, block: u64, len: usize) -> Result<usize, IoError> {
        let bs = self.block_size() as usize;
        self.check_range(bs, block, len)?;
        Ok(bs)
    }

    fn check_range(&self, bs: usize, block: u64, len: usize) -> Result<(), IoError> {
        if len.checked_rem(bs) != Some(0) {
            return Err(EINVAL);
        }
        let end = block
            .checked_add((len / bs) as u64)
            .and_then(|e| e.checked_mul(bs as u64))
            .ok_or(IoError::EIO)?;
        if end > self.dev.size() {
            return Err(IoError::EIO);
        }
        Ok(())
    }

    fn check_writable(&self) -> Result<(), IoError> {
        if self.dev.read_only() {
            return Err(IoError {
                errno: errno::EROFS,
            });
        }
        Ok(())
    }

    fn count_write(&self, r: Result<(), IoError>, len: usize) -> Result<(), IoError> {
        match r {
            Ok(()) => {
                self.bytes_written.fetch_add(len as u64, Ordering::Relaxed);
            }
            Err(_) => {
                self.write_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        r
    }

    /// Find or make a buffer for `block` under its shard's index lock.
    fn claim(&self, sh: &Shard, block: u64) -> Claim {
        let mut ix = sh.index.lock();
        if let Some(i) = ix.find(block) {
            ix.touch(i);
            let b = &sh.bufs[i as usize];
            b.refs.fetch_add(1, Ordering::Acquire);
            return Claim::Ready(i, b.state.load(Ordering::Acquire) & !FLAGS);
        }
        let pick = ix.victim(|i| {
            let b = &sh.bufs[i as usize];
            // A dirty buffer whose write-back failed must keep its data.
            let st = b.state.load(Ordering::Acquire);
            b.refs.load(Ordering::Acquire) == 0
                && st & PINNED == 0
                && (st & DIRTY == 0 || b.err.load(Ordering::Relaxed) == 0)
        });
        let Some(i) = pick else {
            return Claim::NoBuffer;
        };
        let b = &sh.bufs[i as usize];
        b.refs.fetch_add(1, Ordering::Acquire);
        let s = b.state.load(Ordering::Acquire);
        if s & DIRTY != 0 {
            return Claim::Writeback(i, s & !FLAGS);
        }
        // Unpinned and clean: nobody can change the state word now.
        let gen = (s & !FLAGS).wrapping_add(GEN_ONE);
        b.state.store(gen, Ordering::Release);
        b.err.store(0, Ordering::Relaxed);
        b.mark.store(0, Ordering::Relaxed);
        b.block.store(block, Ordering::Relaxed);
        ix.assign(i, block);
        Claim::Ready(i, gen)
    }

    /// A pinned buffer for `block`, or `None` when none can be had.
    fn pin<'t>(&self, sh: &'t Shard, block: u64) -> Option<Pin<'t>> {
        for _ in 0..MAX_WRITEBACKS {
            match self.claim(sh, block) {
                Claim::Ready(i, gen) => {
                    return Some(Pin {
                        buf: &sh.bufs[i as usize],
                        gen,
                    })
                }
                Claim::Writeback(i, gen) => {
                    let pin = Pin {
                        buf: &sh.bufs[i as usize],
                        gen,
                    };
                    // A failure is recorded on the buffer, which is then
                    // skipped as a victim.
                    let _ = self.writeback(sh, &pin);
                }
                Claim::NoBuffer => return None,
            }
        }
        None
    }

    fn direct_read(
        &self,
        sid: usize,
        bs: usize,
        block: u64,
        out: &mut [u8],
    ) -> Result<(), IoError> {
        self.counters[sid].misses.fetch_add(1, Ordering::Relaxed);
        self.dev.read_blocks(block, bs as u32, out)?;
        self.bytes_read.fetch_add(bs as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Read `block` into the pinned buffer's bytes `d` (write-locked).
    fn fill(
        &self,
        sid: usize,
        bs: usize,
        block: u64,
        pin: &Pin,
        d: &mut [u8],
    ) -> Result<(), IoError> {
        self.counters[sid].misses.fetch_add(1, Ordering::Relaxed);
        pin.buf.mark.store(0, Ordering::Relaxed);
        self.dev.read_blocks(block, bs as u32, d)?;
        self.bytes_read.fetch_add(bs as u64, Ordering::Relaxed);
        pin.set_flags(UPTODATE);
        Ok(())
    }

    fn read_block(
        &self,
        sh: &Shard,
        sid: usize,
        block: u64,
        out: &mut [u8],
    ) -> Result<(), IoError> {
        let bs = out.len();
        let Some(pin) = self.pin(sh, block) else {
            return self.direct_read(sid, bs, block, out);
        };
        {
            let d = pin.buf.data.read();
            if pin.uptodate() {
                out.copy_from_slice(&d);
                self.counters[sid].hits.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        }
        let mut d = pin.buf.data.write();
        if pin.uptodate() {
            self.counters[sid].hits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.fill(sid, bs, block, &pin, &mut d)?;
        }
        out.copy_from_slice(&d);
        Ok(())
    }

    fn write_block(&self, sh: &Shard, block: u64, src: &[u8]) -> Result<(), IoError> {
        let Some(pin) = self.pin(sh, block) else {
            let r = self.dev.write_blocks(block, src.len() as u32, src);
            // A read racing with this write may have cached the old block.
            self.drop_in(sh, block, block + 1, true);
            return self.count_write(r, src.len());
        };
        let mut d = pin.buf.data.write();
        pin.buf.mark.store(0, Ordering::Relaxed);
        d.copy_from_slice(src);
        // If an invalidate took the buffer meanwhile, the write counts as
        // done before it and is discarded with it.
        pin.set_flags(UPTODATE | DIRTY);
        Ok(())
    }

    /// Write a pinned dirty buffer back. The shared data lock keeps writers
    /// out, so clearing `dirty` afterwards cannot hide a newer write.
    fn writeback(&self, sh: &Shard, pin: &Pin) -> Result<(), IoError> {
        let b = pin.buf;
        let d = b.data.read();
        let s = b.state.load(Ordering::Acquire);
        if s & !FLAGS != pin.gen || s & DIRTY == 0 || s & PINNED != 0 {
            return Ok(());
        }
        let block = b.block.load(Ordering::Relaxed);
        let r = self.dev.write_blocks(block, sh.block_size, &d);
        match r {
            Ok(()) => {
                let gen = pin.gen;
                let _ = b
                    .state
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                        (s & !FLAGS == gen).then_some(s & !DIRTY)
                    });
                b.err.store(0, Ordering::Relaxed);
            }
            Err(e) => b.err.store(e.errno, Ordering::Relaxed),
        }
        self.count_write(r, d.len())
    }

    /// Pin buffer `i` of `sh` if it is dirty and holds a block in `first..end`.
    fn pin_dirty<'t>(&self, sh: &'t Shard, i: u32, first: u64, end: u64) -> Option<Pin<'t>> {
        let b = &sh.bufs[i as usize];
        let ix = sh.index.lock();
        let block = ix.block_of(i)?;
        let s = b.state.load(Ordering::Acquire);
        if !(first..end).contains(&block) || s & DIRTY == 0 || s & PINNED != 0 {
            return None;
        }
        b.refs.fetch_add(1, Ordering::Acquire);
        Some(Pin {
            buf: b,
            gen: s & !FLAGS,
        })
    }

    /// Write back the dirty buffers of `sh` holding blocks in `first..end`
    /// (every buffer looked at); the first error after trying them all.
    fn flush_shard(&self, sh: &Shard, first: u64, end: u64) -> Result<(), IoError> {
        let mut result = Ok(());
        for (i, b) in sh.bufs.iter().enumerate() {
            // Cheap pre-check; pin_dirty checks again under the lock.
            if b.state.load(Ordering::Relaxed) & DIRTY == 0 {
                continue;
            }
            if let Some(pin) = self.pin_dirty(sh, i as u32, first, end) {
                let r = self.writeback(sh, &pin);
                if result.is_ok() {
                    result = r;
                }
            }
        }
        result
    }

    /// Write back the dirty buffers of blocks `first..end`; the first error
    /// is returned after trying them all.
    fn flush_in(&self, first: u64, end: u64) -> Result<(), IoError> {
        let mut result = Ok(());
        let mut keep = |r: Result<(), IoError>| {
            if result.is_ok() {
                result = r;
            }
        };
        if end - first < self.buffer_count() as u64 {
            // Few blocks: look each up rather than scanning every buffer.
            for block in first..end {
                let (sh, _) = self.shard(block);
                let found = sh.index.lock().find(block);
                let pin = found.and_then(|i| self.pin_dirty(&sh, i, first, end));
                if let Some(pin) = &pin {
                    keep(self.writeback(&sh, pin));
                }
            }
        } else {
            self.each_shard(|_, sh| keep(self.flush_shard(sh, first, end)));
        }
        result
    }

    /// Drop the buffers of `sh` holding blocks in `first..end` (looked up
    /// one by one: for short ranges); with `keep_dirty`, dirty ones stay.
    fn drop_in(&self, sh: &Shard, first: u64, end: u64, keep_dirty: bool) {
        let mut ix = sh.index.lock();
        for block in first..end {
            if let Some(i) = ix.find(block) {
                drop_one(sh, &mut ix, i, keep_dirty);
            }
        }
    }

    /// Drop the buffers of blocks `first..end`; with `keep_dirty`, dirty
    /// ones stay (byte-granular I/O drops only what it made stale).
    fn drop_range(&self, first: u64, end: u64, keep_dirty: bool) {
        if end - first < self.buffer_count() as u64 {
            for block in first..end {
                let (sh, _) = self.shard(block);
                self.drop_in(&sh, block, block + 1, keep_dirty);
            }
            return;
        }
        self.each_shard(|_, sh| {
            let mut ix = sh.index.lock();
            for i in 0..sh.bufs.len() as u32 {
                if ix.block_of(i).is_some_and(|b| (first..end).contains(&b)) {
                    drop_one(sh, &mut ix, i, keep_dirty);
                }
            }
        });
    }

    /// The blocks a byte range touches, as `first..end`, or `None` when
    /// there are no buffers to consider.
    fn byte_blocks(&self, offset: u64, len: usize) -> Result<Option<(u64, u64)>, IoError> {
        let last = offset.checked_add(len as u64 - 1).ok_or(IoError::EIO)?;
        if self.buffer_count() == 0 {
            return Ok(None);
        }
        let bs = self.block_size() as u64;
        Ok(Some((offset / bs, last / bs + 1)))
    }

    /// The cached bytes of `block` and whether they are dirty, if it is
    /// cached up to date; does not count as an access (tests only).
    #[cfg(test)]
    fn peek(&self, block: u64) -> Option<(Vec<u8>, bool)> {
        let (sh, _) = self.shard(block);
        let i = sh.index.lock().find(block)?;
        let b = &sh.bufs[i as usize];
        let d = b.data.read();
        let s = b.state.load(Ordering::Acquire);
        (s & UPTODATE != 0).then(|| (d.to_vec(), s & DIRTY != 0))
    }
}

/// The block size a request was checked against must still be the shard's
/// (it differs only if `set_block_size` ran in between).
fn check_bs(sh: &Shard, bs: usize) -> Result<(), IoError> {
    if sh.block_size as usize != bs {
        return Err(EINVAL);
    }
    Ok(())
}

/// Drop buffer `i` of `sh` (its index locked as `ix`) unless `keep_dirty`
/// and it is dirty.
fn drop_one(sh: &Shard, ix: &mut Index, i: u32, keep_dirty: bool) {
    let b = &sh.bufs[i as usize];
    let dropped = b
        .state
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
            if keep_dirty && s & DIRTY != 0 {
                None
            } else {
                Some((s & !FLAGS).wrapping_add(GEN_ONE))
            }
        })
        .is_ok();
    if dropped {
        b.err.store(0, Ordering::Relaxed);
        ix.unhash(i);
    }
}
