//! Transactions (docs/transactions.md): every write operation runs inside a
//! [`Handle`] that joins the one running transaction with a bound on the
//! metadata blocks it may change (its credits); the transaction commits as
//! a whole, only while no handle is open, through the [`Commit`] seam
//! (the jbd2 writer, or home writes without a journal).
//!
//! Memory: the running transaction's pinned buffers never exceed
//! [`Txns::limit`] (a quarter of the block cache's buffers, and with a
//! journal what one transaction may take of it): a handle that would pass
//! it waits for the open handles to end and commits first.

use alloc::vec::Vec;

use crate::device::BlockDevice;
use crate::error::{Error, IoError, Result};
use crate::numbers::PhysBlock;
use crate::volume::{Volume, VolumeCache};

/// How a committing transaction's blocks become durable: the seam the
/// journal plugs into ([`crate::journal::writer::JournalWriter`]), with
/// [`WriteHome`] where there is no journal.
///
/// `commit` gets the transaction's metadata blocks, sorted, while no
/// handle is open; their bytes are read with
/// [`crate::block_cache::BlockCache::with_txn_block`] or
/// [`crate::block_cache::BlockCache::txn_freeze`], and each is let go of
/// with [`crate::block_cache::BlockCache::txn_written`] (written home) or
/// `txn_freeze` then [`crate::block_cache::BlockCache::txn_logged`]
/// (logged; checkpoint writes it home later). `release` lets the next
/// transaction begin: call it as soon as the buffers may change again
/// (after frozen copies are taken); the caller calls it on return if the
/// implementation did not. File data written straight to the device
/// before the commit must be durable before any of these blocks is
/// (ordered mode). `commit` returns once the transaction is durable, and
/// with an empty `blocks` once every earlier commit is.
pub trait Commit<D: BlockDevice>: Send + Sync {
    fn commit(
        &self,
        cache: &VolumeCache<D>,
        blocks: &[PhysBlock],
        release: &mut dyn FnMut(),
    ) -> Result<(), IoError>;

    /// Blocks `start..start+len` are being freed by the running
    /// transaction, before their buffers are dropped (a journal writes
    /// revoke records for the ones its live log holds).
    fn forget(&self, _cache: &VolumeCache<D>, _start: u64, _len: u64) {}

    /// Most metadata blocks one transaction may change (a journal takes a
    /// quarter of its log at most).
    fn limit(&self) -> usize {
        usize::MAX
    }

    /// Write home what committed transactions changed and give their log
    /// space back. Safe to call from any thread at any time.
    fn checkpoint(&self, _cache: &VolumeCache<D>) -> Result<(), IoError> {
        Ok(())
    }

    /// At a clean close, after the last commit: everything home and the
    /// journal marked empty; later commits write their blocks home.
    fn close(&self, _cache: &VolumeCache<D>) -> Result<(), IoError> {
        Ok(())
    }

    /// After [`Commit::close`] for a freeze: commits go through the
    /// journal again, starting a fresh log.
    fn reopen(&self) {}

    /// Whether commits go through a journal (then the superblock says
    /// `needs_recovery` while the volume is mounted).
    fn journaled(&self) -> bool {
        false
    }
}

/// Commit without a journal: flush the data written so far, write every
/// block home, flush again. A crash in between can leave a half-written
/// transaction (what `e2fsck` repairs); the journal removes that window.
/// New handles wait until the blocks are home.
pub struct WriteHome;

impl<D: BlockDevice> Commit<D> for WriteHome {
    fn commit(
        &self,
        cache: &VolumeCache<D>,
        blocks: &[PhysBlock],
        _release: &mut dyn FnMut(),
    ) -> Result<(), IoError> {
        if blocks.is_empty() {
            return Ok(());
        }
        // Ordered mode: data blocks the new metadata points at first.
        cache.device().flush()?;
        let mut result = Ok(());
        for b in blocks {
            let r = cache.txn_written(b.0);
            if result.is_ok() {
                result = r;
            }
        }
        result?;
        cache.device().flush()
    }
}

/// The smallest transaction limit a read-write volume accepts: room for
/// the largest single handle the operations begin (an extent insert in a
/// five-level tree with its allocations, and the inodes around it).
pub const MIN_LIMIT: usize = 64;

/// The running transaction's bookkeeping.
#[derive(Default)]
struct State {
    /// Open handles.
    handles: usize,
    /// Credits reserved by open handles and not yet used.
    reserved: usize,
    /// Blocks pinned by the running transaction (each once).
    blocks: Vec<PhysBlock>,
    /// A commit is under way or waiting for handles to end: no new handle
    /// may begin.
    committing: bool,
    /// The running transaction was aborted: the volume is read-only.
    aborted: bool,
    /// Number of the running transaction (counted from 0 at open): the
    /// busy extents it freed carry it.
    seq: u64,
    /// When the running transaction changed its first block (seconds of
    /// [`crate::volume::OpenOptions::now`]), for the `commit=` interval.
    started: Option<i64>,
}

/// Transactions of one volume.
pub(crate) struct Txns {
    state: spin::Mutex<State>,
    /// Most blocks one transaction may pin.
    limit: usize,
    /// Blocks freed by transactions not yet durable, as `(start, len,
    /// transaction)`: not handed out again until their transaction has
    /// committed (the kernel's busy extents). Bounded by what one
    /// transaction frees (a journal's commit runs while the next one
    /// frees).
    busy: spin::Mutex<Vec<(u64, u64, u64)>>,
}

impl Txns {
    pub(crate) fn new(cache_buffers: usize) -> Txns {
        Txns {
            state: spin::Mutex::new(State::default()),
            // A quarter: the buffers are split into hashed shards, and a
            // transaction must never fill any one shard with pinned
            // buffers; readers need the rest.
            limit: cache_buffers / 4,
            busy: spin::Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Lower the limit (to the journal's).
    pub(crate) fn cap_limit(&mut self, n: usize) {
        self.limit = self.limit.min(n);
    }

    /// Whether `start..start+len` overlaps a block freed by the running
    /// transaction; returns the end of the overlapping busy range.
    pub(crate) fn busy_until(&self, start: u64, len: u64) -> Option<u64> {
        let busy = self.busy.lock();
        busy.iter()
            .filter(|&&(s, l, _)| s < start + len && start < s + l)
            .map(|&(s, l, _)| s + l)
            .max()
    }

    pub(crate) fn add_busy(&self, start: u64, len: u64) {
        // A handle is open: the running transaction cannot change.
        let seq = self.state.lock().seq;
        let mut busy = self.busy.lock();
        if let Some(last) = busy.last_mut() {
            if last.0 + last.1 == start && last.2 == seq {
                last.1 += len;
                return;
            }
        }
        busy.push((start, len, seq));
    }

    /// Transaction `seq` (and every one before) is durable: its freed
    /// blocks may be handed out again.
    fn commit_done(&self, seq: u64) {
        self.busy.lock().retain(|&(_, _, s)| s > seq);
    }
}

/// One operation's membership in the running transaction. Ends on drop.
pub struct Handle<'v, D: BlockDevice> {
    vol: &'v Volume<D>,
    credits: usize,
    /// Blocks this handle pinned first (added to the transaction at end).
    pinned: Vec<PhysBlock>,
}

impl<D: BlockDevice> Volume<D> {
    /// Begin a handle that may change at most `credits` metadata blocks.
    /// Waits for (or runs) a commit when the running transaction has no
    /// room left for them.
    pub fn begin(&self, credits: usize) -> Result<Handle<'_, D>> {
        if self.read_only() {
            return Err(Error::ReadOnly);
        }
        let t = self.txns();
        if credits > t.limit() {
            return Err(Error::Unsupported {
                what: "an operation needs more metadata blocks than one transaction may hold (raise cache_bytes, or give the filesystem a larger journal)",
            });
        }
        loop {
            let mut st = t.state.lock();
            if st.aborted {
                return Err(Error::ReadOnly);
            }
            if !st.committing {
                if st.blocks.len() + st.reserved + credits <= t.limit() {
                    st.handles += 1;
                    st.reserved += credits;
                    return Ok(Handle {
                        vol: self,
                        credits,
                        pinned: Vec::new(),
                    });
                }
                st.committing = true;
                drop(st);
                // This thread commits once the open handles end.
                self.commit_locked()?;
                continue;
            }
            drop(st);
            core::hint::spin_loop();
        }
    }

    /// Commit the running transaction: wait for open handles to end, write
    /// the superblock's counters into it, and make every block durable
    /// through the [`Commit`] seam. Frontends call it for `fsync`,
    /// `syncfs` and unmount. A failure aborts: the volume turns read-only
    /// and reports the error.
    pub fn commit(&self) -> Result<()> {
        if self.read_only() && !self.is_rw_mounted() {
            return Ok(());
        }
        let t = self.txns();
        loop {
            let mut st = t.state.lock();
            if st.aborted {
                return Err(Error::ReadOnly);
            }
            if !st.committing {
                st.committing = true;
                drop(st);
                return self.commit_locked();
            }
            drop(st);
            core::hint::spin_loop();
        }
    }

    /// The commit itself, with `committing` set by the caller: once the
    /// open handles end, the superblock's counters join the transaction,
    /// and the [`Commit`] seam makes it durable, letting the next
    /// transaction begin as early as it can.
    fn commit_locked(&self) -> Result<()> {
        let t = self.txns();
        // Wait for the open handles to end.
        loop {
            let st = t.state.lock();
            if st.handles == 0 {
                break;
            }
            drop(st);
            core::hint::spin_loop();
        }
        let nothing = t.state.lock().blocks.is_empty();
        // The superblock's counters join the transaction (no handle is
        // open, so this is the last change).
        let mut r = if nothing {
            Ok(())
        } else {
            self.write_super_counts()
        };
        let (blocks, seq) = {
            let mut st = t.state.lock();
            let mut blocks = core::mem::take(&mut st.blocks);
            blocks.sort_unstable();
            let seq = st.seq;
            if !blocks.is_empty() {
                st.seq += 1;
            }
            (blocks, seq)
        };
        let release = |t: &Txns| {
            let mut st = t.state.lock();
            if st.committing {
                st.committing = false;
                st.started = None;
            }
        };
        if r.is_ok() {
            r = self
                .commit_log()
                .commit(self.block_cache(), &blocks, &mut || release(t))
                .map_err(Error::Io);
        }
        release(t);
        match r {
            Ok(()) => {
                if !blocks.is_empty() {
                    t.commit_done(seq);
                }
                Ok(())
            }
            Err(e) => {
                // The failed transaction's buffers hold changes that never
                // became durable; what the next one changed meanwhile goes
                // too.
                for b in &blocks {
                    self.block_cache().invalidate_range(b.0, 1);
                }
                self.abort(e.clone());
                Err(e)
            }
        }
    }

    /// Commit if the running transaction's first change is at least
    /// `secs` seconds old (by [`crate::volume::OpenOptions::now`]): the
    /// kernel's `commit=` interval, for a frontend to call from a timer
    /// (every second or so). Returns whether it committed.
    pub fn commit_if_older(&self, secs: u64) -> Result<bool> {
        let started = self.txns().state.lock().started;
        let Some(at) = started else {
            return Ok(false);
        };
        if self.now().sec.saturating_sub(at) < secs as i64 {
            return Ok(false);
        }
        self.commit()?;
        Ok(true)
    }

    /// [`Volume::commit_if_older`] with the interval the volume was
    /// opened with ([`crate::volume::OpenOptions::commit_interval`]).
    pub fn commit_if_due(&self) -> Result<bool> {
        self.commit_if_older(self.options().commit_interval as u64)
    }

    /// Checkpoint the journal: write home what committed transactions
    /// changed and free their log space (nothing without a journal). The
    /// committing thread does this itself when the log passes half full;
    /// a frontend may call it from a background thread to keep that off
    /// the write path. Handles and commits go on meanwhile. A failure
    /// aborts, as a failed commit does.
    pub fn checkpoint(&self) -> Result<()> {
        if self.read_only() {
            return Ok(());
        }
        self.commit_log()
            .checkpoint(self.block_cache())
            .map_err(|e| {
                let e = Error::Io(e);
                self.abort(e.clone());
                e
            })
    }

    /// Abort the running transaction: its changed blocks are discarded,
    /// the decoded caches dropped, and the volume turns read-only (as the
    /// kernel does when jbd2 aborts). The image keeps its last committed
    /// state.
    pub(crate) fn abort(&self, why: Error) {
        let t = self.txns();
        let blocks = {
            let mut st = t.state.lock();
            st.aborted = true;
            core::mem::take(&mut st.blocks)
        };
        for b in blocks {
            self.block_cache().invalidate_range(b.0, 1);
        }
        self.went_read_only(why);
    }

    /// Stop writing after damage was found (the kernel's
    /// `errors=remount-ro` and `errors=panic`): the running transaction
    /// is discarded as in an abort, and the volume turns read-only,
    /// reporting `why` ([`Volume::abort_reason`]). What was committed
    /// before stays.
    pub fn stop_writing(&self, why: Error) {
        if self.is_rw_mounted() && !self.read_only() {
            self.abort(why);
        }
    }

    /// Add a block pinned outside any handle (the superblock at commit).
    pub(crate) fn txn_add(&self, b: PhysBlock) {
        self.txns().state.lock().blocks.push(b);
    }
}

impl<'v, D: BlockDevice> Handle<'v, D> {
    pub fn volume(&self) -> &'v Volume<D> {
        self.vol
    }

    /// Change metadata block `b` in place under its buffer lock (read from
    /// the device first if not cached). Recomputing the checksum the
    /// change touches is the caller's part of `f`.
    pub fn modify<R>(&mut self, b: PhysBlock, f: impl FnOnce(&mut [u8]) -> R) -> Result<R> {
        self.change(b, false, f)
    }

    /// A newly allocated metadata block: zeroed in the cache, never read
    /// from the device, then `f` fills it.
    pub fn create<R>(&mut self, b: PhysBlock, f: impl FnOnce(&mut [u8]) -> R) -> Result<R> {
        self.change(b, true, f)
    }

    fn change<R>(
        &mut self,
        b: PhysBlock,
        fresh: bool,
        f: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R> {
        if b.0 >= self.vol.sb().blocks_count {
            return Err(Error::corrupt(
                crate::error::Object::Block(b),
                "block number is past the end of the filesystem",
            ));
        }
        let (r, new) = self.vol.block_cache().modify(b.0, fresh, f)?;
        if new {
            debug_assert!(
                self.pinned.len() < self.credits,
                "handle used more blocks than its {} credits",
                self.credits
            );
            self.pinned.push(b);
        }
        Ok(r)
    }

    /// Abort the running transaction (a change step failed half-way).
    pub fn abort(self, why: Error) -> Error {
        self.vol.abort(why.clone());
        why
    }
}

impl<D: BlockDevice> Drop for Handle<'_, D> {
    fn drop(&mut self) {
        let t = self.vol.txns();
        let mut st = t.state.lock();
        st.handles -= 1;
        st.reserved -= self.credits;
        if !st.aborted {
            if st.started.is_none() && !self.pinned.is_empty() {
                st.started = Some(self.vol.now().sec);
            }
            st.blocks.append(&mut self.pinned);
            return;
        }
        drop(st);
        // Aborted meanwhile: this handle's changes go with the rest.
        for b in self.pinned.drain(..) {
            self.vol.block_cache().invalidate_range(b.0, 1);
        }
    }
}
