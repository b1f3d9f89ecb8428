//! The metadata block cache: a bounded write-back cache of filesystem blocks
//! between the engine and its [`BlockDevice`] (see docs/block-cache.md).
//!
//! Memory: `budget / block_size` buffers are allocated when the cache is
//! created (or its block size changes) and never again; requests only pin
//! and copy. When every buffer is pinned (or dirty with a failing device),
//! requests go straight to the device instead of failing.
//!
//! Locking, from outside in:
//! - `table` (a reader-writer lock) is taken shared by every operation and
//!   exclusively only by [`BlockCache::set_block_size`], which replaces all
//!   buffers. Shared holders never wait for each other, and spin's
//!   `RwLock` does not make new readers wait for a waiting writer, so
//!   nested reads from inside a `read_with` closure cannot deadlock.
//! - `Table::index` (a spin mutex) guards the hash table and the
//!   replacement lists. It is held only for lookups and list moves, never
//!   across device I/O or a caller's closure.
//! - each buffer's `data` lock guards its bytes; I/O on a buffer happens
//!   under it. A buffer is pinned (`refs > 0`) by whoever uses it, and a
//!   pinned buffer is never given to another block. Pins are taken only
//!   under the index lock, so "unpinned" seen under that lock stays true
//!   until the lock is released.
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
use core::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

use crate::device::BlockDevice;
use crate::error::{errno, IoError};
use index::Index;

/// Smallest block size the cache accepts.
pub const MIN_BLOCK_SIZE: u32 = 512;
/// Largest block size the cache accepts (ext4's largest).
pub const MAX_BLOCK_SIZE: u32 = 65536;
/// Budget ceiling (fuse2fs' `cache_size` ceiling).
pub const MAX_BUDGET: usize = 1 << 31;
/// How many dirty victims one request may write back while looking for a
/// buffer before it gives up and goes to the device directly.
const MAX_WRITEBACKS: usize = 4;

const UPTODATE: u64 = 1;
const DIRTY: u64 = 2;
const FLAGS: u64 = UPTODATE | DIRTY;
/// One step of the generation kept in the state word above the flags.
const GEN_ONE: u64 = 4;

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
    data: spin::RwLock<Box<[u8]>>,
}

struct Table {
    /// 0 when the block size given was invalid (then there are no buffers
    /// and block operations fail with EINVAL).
    block_size: u32,
    bufs: Vec<Buf>,
    index: spin::Mutex<Index>,
}

impl Table {
    fn new(block_size: u32, budget: usize) -> Table {
        let valid = valid_block_size(block_size);
        let bs = if valid { block_size } else { 0 };
        // At most 2 GiB / 512 = 4 Mi buffers: fits u32 with room for NIL.
        let n = if valid { budget / bs as usize } else { 0 };
        let bufs = (0..n)
            .map(|_| Buf {
                refs: AtomicU32::new(0),
                block: AtomicU64::new(0),
                state: AtomicU64::new(0),
                err: AtomicI32::new(0),
                data: spin::RwLock::new(vec![0u8; bs as usize].into_boxed_slice()),
            })
            .collect();
        Table {
            block_size: bs,
            bufs,
            index: spin::Mutex::new(Index::new(n as u32)),
        }
    }
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

pub struct BlockCache<D: BlockDevice> {
    dev: D,
    budget: usize,
    table: spin::RwLock<Table>,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
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
        let budget = budget_bytes.min(MAX_BUDGET);
        BlockCache {
            dev,
            budget,
            table: spin::RwLock::new(Table::new(block_size, budget)),
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
        }
    }

    pub fn device(&self) -> &D {
        &self.dev
    }

    pub fn block_size(&self) -> u32 {
        self.table.read().block_size
    }

    pub fn budget_bytes(&self) -> usize {
        self.budget
    }

    /// Number of buffers the budget bought at the current block size.
    pub fn buffer_count(&self) -> usize {
        self.table.read().bufs.len()
    }

    /// Number of buffers holding data not yet on the device.
    pub fn dirty_count(&self) -> usize {
        let t = self.table.read();
        t.bufs
            .iter()
            .filter(|b| b.state.load(Ordering::Acquire) & DIRTY != 0)
            .count()
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
        }
    }

    /// Whole blocks: `buf.len()` must be a multiple of the block size.
    pub fn read(&self, block: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let t = self.table.read();
        let bs = self.whole_blocks(&t, block, buf.len())?;
        for (k, chunk) in buf.chunks_exact_mut(bs).enumerate() {
            self.read_block(&t, block + k as u64, chunk)?;
        }
        Ok(())
    }

    /// One block, no copy out: calls `f` with the cached block's bytes.
    ///
    /// `f` may read through the cache again (`read`, `read_with`,
    /// `read_bytes`, `flush`, `invalidate*`), the same block included: only
    /// this buffer's shared data lock and a pin are held while `f` runs. It
    /// must not `write` the block it is reading (that waits for `f` to
    /// return) nor call `set_block_size` (which waits for every user).
    /// When no buffer can be had, the block is read into a temporary.
    pub fn read_with<R>(&self, block: u64, f: impl FnOnce(&[u8]) -> R) -> Result<R, IoError> {
        let t = self.table.read();
        let bs = self.whole_blocks(&t, block, t.block_size as usize)?;
        let Some(pin) = self.pin(&t, block) else {
            let mut tmp = vec![0u8; bs];
            self.direct_read(bs, block, &mut tmp)?;
            return Ok(f(&tmp));
        };
        {
            let d = pin.buf.data.read();
            if pin.uptodate() {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(f(&d));
            }
        }
        let mut d = pin.buf.data.write();
        if pin.uptodate() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.fill(bs, block, &pin, &mut d)?;
        }
        let d = d.downgrade();
        Ok(f(&d))
    }

    /// Write-back: the blocks are copied into buffers and marked dirty; a
    /// block that can get no buffer is written through.
    pub fn write(&self, block: u64, buf: &[u8]) -> Result<(), IoError> {
        let t = self.table.read();
        let bs = self.whole_blocks(&t, block, buf.len())?;
        self.check_writable()?;
        for (k, chunk) in buf.chunks_exact(bs).enumerate() {
            self.write_block(&t, block + k as u64, chunk)?;
        }
        Ok(())
    }

    /// Byte-granular read: the blocks it touches are flushed and dropped,
    /// then the bytes come straight from the device.
    pub fn read_bytes(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        if buf.is_empty() {
            return Ok(());
        }
        let t = self.table.read();
        if let Some((first, end)) = byte_blocks(&t, offset, buf.len())? {
            self.flush_in(&t, first, end)?;
            self.drop_clean(&t, first, end);
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
        let t = self.table.read();
        let range = byte_blocks(&t, offset, buf.len())?;
        if let Some((first, end)) = range {
            self.flush_in(&t, first, end)?;
            self.drop_clean(&t, first, end);
        }
        let r = self.dev.write_at(offset, buf);
        // A read racing with this write may have cached the old bytes.
        if let Some((first, end)) = range {
            self.drop_clean(&t, first, end);
        }
        self.count_write(r, buf.len())
    }

    /// Write every dirty buffer, then flush the device. Fails if any
    /// write-back failed (those buffers stay dirty and are retried by the
    /// next flush).
    pub fn flush(&self) -> Result<(), IoError> {
        let t = self.table.read();
        let r = self.flush_in(&t, 0, u64::MAX);
        drop(t);
        let f = self.dev.flush();
        r.and(f)
    }

    /// Write the dirty buffers of blocks `block..block+count` (no device
    /// flush).
    pub fn flush_range(&self, block: u64, count: u64) -> Result<(), IoError> {
        let t = self.table.read();
        let (first, end) = block_range(block, count);
        self.flush_in(&t, first, end)
    }

    /// Drop every buffer, discarding dirty contents.
    pub fn invalidate(&self) {
        let t = self.table.read();
        self.drop_range(&t, 0, u64::MAX, false);
    }

    /// Drop the buffers of blocks `block..block+count`, discarding dirty
    /// contents (for freed, discarded or zeroed blocks).
    pub fn invalidate_range(&self, block: u64, count: u64) {
        let t = self.table.read();
        let (first, end) = block_range(block, count);
        self.drop_range(&t, first, end, false);
    }

    /// Flush, drop every buffer and carve the budget into buffers of the new
    /// size. If the flush fails nothing changes. Must not be called from
    /// inside a `read_with` closure.
    pub fn set_block_size(&self, block_size: u32) -> Result<(), IoError> {
        if !valid_block_size(block_size) {
            return Err(EINVAL);
        }
        let mut t = self.table.write();
        self.flush_in(&t, 0, u64::MAX)?;
        // Free the old buffers before allocating the new ones, so memory
        // stays within the budget.
        *t = Table::new(0, 0);
        *t = Table::new(block_size, self.budget);
        Ok(())
    }

    // ---- internals ----

    /// Check a whole-block request; returns the block size as usize.
    fn whole_blocks(&self, t: &Table, block: u64, len: usize) -> Result<usize, IoError> {
        let bs = t.block_size as usize;
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
        Ok(bs)
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

    /// Find or make a buffer for `block` under the index lock.
    fn claim(&self, t: &Table, block: u64) -> Claim {
        let mut ix = t.index.lock();
        if let Some(i) = ix.find(block) {
            ix.touch(i);
            let b = &t.bufs[i as usize];
            b.refs.fetch_add(1, Ordering::Acquire);
            return Claim::Ready(i, b.state.load(Ordering::Acquire) & !FLAGS);
        }
        let pick = ix.victim(|i| {
            let b = &t.bufs[i as usize];
            // A dirty buffer whose write-back failed must keep its data.
            b.refs.load(Ordering::Acquire) == 0
                && (b.state.load(Ordering::Acquire) & DIRTY == 0
                    || b.err.load(Ordering::Relaxed) == 0)
        });
        let Some(i) = pick else {
            return Claim::NoBuffer;
        };
        let b = &t.bufs[i as usize];
        b.refs.fetch_add(1, Ordering::Acquire);
        let s = b.state.load(Ordering::Acquire);
        if s & DIRTY != 0 {
            return Claim::Writeback(i, s & !FLAGS);
        }
        // Unpinned and clean: nobody can change the state word now.
        let gen = (s & !FLAGS).wrapping_add(GEN_ONE);
        b.state.store(gen, Ordering::Release);
        b.err.store(0, Ordering::Relaxed);
        b.block.store(block, Ordering::Relaxed);
        ix.assign(i, block);
        Claim::Ready(i, gen)
    }

    /// A pinned buffer for `block`, or `None` when none can be had.
    fn pin<'t>(&self, t: &'t Table, block: u64) -> Option<Pin<'t>> {
        for _ in 0..MAX_WRITEBACKS {
            match self.claim(t, block) {
                Claim::Ready(i, gen) => {
                    return Some(Pin {
                        buf: &t.bufs[i as usize],
                        gen,
                    })
                }
                Claim::Writeback(i, gen) => {
                    let pin = Pin {
                        buf: &t.bufs[i as usize],
                        gen,
                    };
                    // A failure is recorded on the buffer, which is then
                    // skipped as a victim.
                    let _ = self.writeback(t, &pin);
                }
                Claim::NoBuffer => return None,
            }
        }
        None
    }

    fn direct_read(&self, bs: usize, block: u64, out: &mut [u8]) -> Result<(), IoError> {
        self.misses.fetch_add(1, Ordering::Relaxed);
        self.dev.read_blocks(block, bs as u32, out)?;
        self.bytes_read.fetch_add(bs as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Read `block` into the pinned buffer's bytes `d` (write-locked).
    fn fill(&self, bs: usize, block: u64, pin: &Pin, d: &mut [u8]) -> Result<(), IoError> {
        self.misses.fetch_add(1, Ordering::Relaxed);
        self.dev.read_blocks(block, bs as u32, d)?;
        self.bytes_read.fetch_add(bs as u64, Ordering::Relaxed);
        pin.set_flags(UPTODATE);
        Ok(())
    }

    fn read_block(&self, t: &Table, block: u64, out: &mut [u8]) -> Result<(), IoError> {
        let bs = out.len();
        let Some(pin) = self.pin(t, block) else {
            return self.direct_read(bs, block, out);
        };
        {
            let d = pin.buf.data.read();
            if pin.uptodate() {
                out.copy_from_slice(&d);
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        }
        let mut d = pin.buf.data.write();
        if pin.uptodate() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.fill(bs, block, &pin, &mut d)?;
        }
        out.copy_from_slice(&d);
        Ok(())
    }

    fn write_block(&self, t: &Table, block: u64, src: &[u8]) -> Result<(), IoError> {
        let Some(pin) = self.pin(t, block) else {
            let r = self.dev.write_blocks(block, src.len() as u32, src);
            // A read racing with this write may have cached the old block.
            self.drop_clean(t, block, block + 1);
            return self.count_write(r, src.len());
        };
        let mut d = pin.buf.data.write();
        d.copy_from_slice(src);
        // If an invalidate took the buffer meanwhile, the write counts as
        // done before it and is discarded with it.
        pin.set_flags(UPTODATE | DIRTY);
        Ok(())
    }

    /// Write a pinned dirty buffer back. The shared data lock keeps writers
    /// out, so clearing `dirty` afterwards cannot hide a newer write.
    fn writeback(&self, t: &Table, pin: &Pin) -> Result<(), IoError> {
        let b = pin.buf;
        let d = b.data.read();
        let s = b.state.load(Ordering::Acquire);
        if s & !FLAGS != pin.gen || s & DIRTY == 0 {
            return Ok(());
        }
        let block = b.block.load(Ordering::Relaxed);
        let r = self.dev.write_blocks(block, t.block_size, &d);
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

    /// Pin buffer `i` if it is dirty and holds a block in `first..end`.
    fn pin_dirty<'t>(&self, t: &'t Table, i: u32, first: u64, end: u64) -> Option<Pin<'t>> {
        let b = &t.bufs[i as usize];
        let ix = t.index.lock();
        let block = ix.block_of(i)?;
        let s = b.state.load(Ordering::Acquire);
        if !(first..end).contains(&block) || s & DIRTY == 0 {
            return None;
        }
        b.refs.fetch_add(1, Ordering::Acquire);
        Some(Pin {
            buf: b,
            gen: s & !FLAGS,
        })
    }

    /// Write back the dirty buffers of blocks `first..end`; the first error
    /// is returned after trying them all.
    fn flush_in(&self, t: &Table, first: u64, end: u64) -> Result<(), IoError> {
        let mut result = Ok(());
        let mut one = |i: u32| {
            if let Some(pin) = self.pin_dirty(t, i, first, end) {
                let r = self.writeback(t, &pin);
                if result.is_ok() {
                    result = r;
                }
            }
        };
        let n = t.bufs.len() as u64;
        if end - first < n {
            // Few blocks: look each up rather than scanning every buffer.
            for block in first..end {
                let found = t.index.lock().find(block);
                if let Some(i) = found {
                    one(i);
                }
            }
        } else {
            for (i, b) in t.bufs.iter().enumerate() {
                // Cheap pre-check; pin_dirty checks again under the lock.
                if b.state.load(Ordering::Relaxed) & DIRTY != 0 {
                    one(i as u32);
                }
            }
        }
        result
    }

    /// Drop the buffers of blocks `first..end`; with `keep_dirty`, dirty
    /// ones stay (byte-granular I/O drops only what it made stale).
    fn drop_range(&self, t: &Table, first: u64, end: u64, keep_dirty: bool) {
        let mut ix = t.index.lock();
        let drop_one = |ix: &mut Index, i: u32| {
            let b = &t.bufs[i as usize];
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
        };
        let n = t.bufs.len() as u64;
        if end - first < n {
            for block in first..end {
                if let Some(i) = ix.find(block) {
                    drop_one(&mut ix, i);
                }
            }
        } else {
            for i in 0..n as u32 {
                if ix.block_of(i).is_some_and(|b| (first..end).contains(&b)) {
                    drop_one(&mut ix, i);
                }
            }
        }
    }

    fn drop_clean(&self, t: &Table, first: u64, end: u64) {
        self.drop_range(t, first, end, true);
    }

    /// The cached bytes of `block` and whether they are dirty, if it is
    /// cached up to date; does not count as an access (tests only).
    #[cfg(test)]
    fn peek(&self, block: u64) -> Option<(Vec<u8>, bool)> {
        let t = self.table.read();
        let i = t.index.lock().find(block)?;
        let b = &t.bufs[i as usize];
        let d = b.data.read();
        let s = b.state.load(Ordering::Acquire);
        (s & UPTODATE != 0).then(|| (d.to_vec(), s & DIRTY != 0))
    }
}

/// The blocks a byte range touches, as `first..end`, or `None` when there
/// are no buffers to consider.
fn byte_blocks(t: &Table, offset: u64, len: usize) -> Result<Option<(u64, u64)>, IoError> {
    let last = offset.checked_add(len as u64 - 1).ok_or(IoError::EIO)?;
    if t.bufs.is_empty() {
        return Ok(None);
    }
    let bs = t.block_size as u64;
    Ok(Some((offset / bs, last / bs + 1)))
}
