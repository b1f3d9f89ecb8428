//! The jbd2 journal writer: the [`Commit`] seam of a volume whose
//! filesystem has a journal. Every transaction's metadata blocks go to the
//! log before their home locations, in ordered mode, laid out as the
//! kernel's jbd2 writes them, so that the kernel's ext4 and `e2fsck`
//! recover a crash of ours as they recover their own.
//!
//! A commit, with no handle open:
//! 1. **freeze**: every block is copied out of the block cache into the
//!    log buffer (escaped when it starts with the jbd2 magic number), and
//!    its buffer moves from the running transaction to the committing one
//!    (never written home until the commit is durable); revoke records for
//!    the blocks the transaction freed; descriptor tags with checksums;
//!    the commit block. Then the next transaction may begin: it changes
//!    the cached buffers, never the frozen copies.
//! 2. **write**: the log blocks at the head of the ring (wrapping from its
//!    end to `s_first`), a device flush (which also makes the file data
//!    written so far durable: ordered mode), the commit block, a flush.
//!    The buffers become ordinary dirty buffers.
//!
//! A **checkpoint** writes the dirty buffers home, finds the oldest
//! transaction whose blocks are not all home ([`Live::hold`]), flushes the
//! device, and moves the journal superblock's `s_start`/`s_sequence` there.
//! The committing thread runs one when the log passes half full (and
//! before a commit that would not fit); [`crate::volume::Volume::checkpoint`]
//! runs one from any thread. Transactions are at most a quarter of the
//! ring, so a commit always fits after one (see `make_room`).
//!
//! Memory, fixed at open: the log buffer (one transaction's log blocks,
//! at most [`crate::volume::OpenOptions::journal_buffer_bytes`]), the
//! live-log bookkeeping ([`Live`], four entries per block a transaction
//! may hold), the journal's map ([`Ring`]).
//!
//! Locks, outermost first: `io` (one commit at a time, from freeze to
//! durable), `sb` (the journal superblock and the tail), `state` (head,
//! live log), then the block cache's. A checkpoint takes `state` and `sb`
//! but not `io`, so it runs beside commits.

use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use zerocopy::{FromBytes, FromZeros, IntoBytes};

use super::format::{
    self, blocktype, feature, tag_flag, tid_gt, Header, JournalSuperblock, LogFormat, HEADER_SIZE,
    REVOKE_HEADER_SIZE, TAG_UUID_SIZE,
};
use super::live::{Live, LiveTxn};
use super::log::Log;
use super::ring::Ring;
use super::JournalError;
use crate::attr::Timestamp;
use crate::device::BlockDevice;
use crate::error::{errno, IoError, Result};
use crate::features::{compat, incompat};
use crate::numbers::PhysBlock;
use crate::txn::{Commit, WriteHome};
use crate::volume::{Volume, VolumeCache};

/// Default [`crate::volume::OpenOptions::journal_buffer_bytes`]: a
/// quarter of the default block cache, as much as a transaction may pin
/// there.
pub const DEFAULT_BUFFER_BYTES: usize = 8 << 20;
/// Durable transactions the live log may hold before a checkpoint.
const TXN_CAP: usize = 1024;
/// Fast-commit tag that starts a fast commit (`EXT4_FC_TAG_HEAD`).
const FC_TAG_HEAD: u16 = 9;

/// How blocks pack into descriptor and revoke blocks.
#[derive(Clone, Copy, Debug)]
struct Layout {
    block_size: usize,
    tag_bytes: usize,
    tail: usize,
    tags_per_desc: usize,
    records_per_revoke: usize,
}

impl Layout {
    fn new(fmt: &LogFormat, block_size: usize) -> Layout {
        let tail = fmt.tail_bytes();
        let tag_bytes = fmt.tag_bytes();
        Layout {
            block_size,
            tag_bytes,
            tail,
            // The first tag of a descriptor carries the UUID after it.
            tags_per_desc: (block_size - HEADER_SIZE - tail - TAG_UUID_SIZE) / tag_bytes,
            records_per_revoke: (block_size - REVOKE_HEADER_SIZE - tail)
                / fmt.revoke_record_bytes(),
        }
    }

    /// Log blocks of a transaction of `blocks` blocks and `revokes`
    /// revoke records: revoke blocks, descriptors, copies, commit block.
    fn log_blocks(&self, blocks: usize, revokes: usize) -> usize {
        revokes.div_ceil(self.records_per_revoke) + blocks.div_ceil(self.tags_per_desc) + blocks + 1
    }

    /// The most blocks a transaction may hold so that its log blocks,
    /// with as many revoke records as the live log can track (four per
    /// block, [`Live`]'s room), fit in `room` log blocks.
    fn max_blocks(&self, room: usize) -> usize {
        let (mut lo, mut hi) = (0usize, room);
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if self.log_blocks(mid, 4 * mid) <= room {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    }
}

/// The journal superblock as last written, and the tail it records.
struct Sb {
    /// The journal's first block, as read at open (the superblock is its
    /// first 1024 bytes; the rest is written back unchanged).
    block: Vec<u8>,
    /// `s_start` is 0 on disk: the journal is empty, and the first commit
    /// must record where it starts before its commit block is durable.
    empty: bool,
    /// The tail on disk (when not `empty`): the oldest live transaction
    /// and where it starts.
    tail_tid: u32,
    tail: u32,
}

/// Where the next transaction goes, and what the live log holds.
struct State {
    /// The log position after the last durable transaction.
    head: u32,
    /// The id of the next transaction to commit.
    next_tid: u32,
    live: Live,
}

/// What one commit builds, under `io`.
struct Io {
    /// The committing transaction's log blocks.
    buf: Vec<u8>,
    /// Its revoke records.
    revokes: Vec<u64>,
    /// The blocks it froze into the log.
    frozen: Vec<u64>,
}

pub struct JournalWriter {
    ring: Ring,
    fmt: LogFormat,
    layout: Layout,
    uuid: [u8; 16],
    /// The journal superblock is version 2 (has feature words).
    v2: bool,
    /// Feature words written while the journal is in use (`FAST_COMMIT`
    /// aside).
    compat: u32,
    incompat: u32,
    /// The filesystem uses fast commits: the ring stops short of their
    /// area, and the journal superblock says so while the log is live.
    fast_commit: bool,
    /// Most blocks one transaction may hold.
    limit: usize,
    now: fn() -> Timestamp,
    io: spin::Mutex<Io>,
    sb: spin::Mutex<Sb>,
    state: spin::Mutex<State>,
    aborted: AtomicBool,
    /// Closed cleanly: commits write home from now on.
    closed: AtomicBool,
}

impl JournalWriter {
    /// Open the journal of the read-write volume `vol` for writing (after
    /// any recovery: the journal must be empty), with a log buffer of
    /// `buffer_bytes`. The journal's features are kept, but for checksum
    /// v3 where the filesystem has `metadata_csum` and 64-bit block
    /// numbers where it is `64bit`, as the kernel sets them at mount.
    pub fn open<D: BlockDevice>(vol: &Volume<D>, buffer_bytes: usize) -> Result<JournalWriter> {
        let fs = vol.sb();
        if fs.journal_inum == 0 {
            return Err(JournalError::Superblock(
                "the journal is on an external device, which this version does not write",
            )
            .into());
        }
        let log = Log::open(vol, None)?;
        let jsb = &log.sb;
        if jsb.start.get() != 0 {
            return Err(
                JournalError::Superblock("the journal holds transactions to replay").into(),
            );
        }
        let bs = log.block_size;
        let v2 = jsb.is_v2();
        let (mut compat_f, mut inc) = (jsb.compat(), jsb.incompat());
        // Neither is produced here; the kernel clears both at mount too
        // (fast commits are set again below when the filesystem uses them).
        inc &= !(feature::INCOMPAT_ASYNC_COMMIT | feature::INCOMPAT_FAST_COMMIT);
        if v2 && fs.metadata_csum() {
            inc = (inc & !feature::INCOMPAT_CSUM_V2) | feature::INCOMPAT_CSUM_V3;
            compat_f &= !feature::COMPAT_CHECKSUM;
        }
        if v2 && fs.has_incompat(incompat::BIT64) {
            inc |= feature::INCOMPAT_64BIT;
        }
        if inc & feature::INCOMPAT_64BIT == 0 && fs.blocks_count > u32::MAX as u64 {
            return Err(JournalError::Superblock(
                "a version 1 journal cannot log blocks past 2^32",
            )
            .into());
        }
        let maxlen = jsb.maxlen.get();
        let fast_commit = v2 && fs.has_compat(compat::FAST_COMMIT);
        let end = if fast_commit {
            let fc = match jsb.num_fc_blks.get() {
                0 => format::DEFAULT_FAST_COMMIT_BLOCKS,
                n => n,
            };
            maxlen.saturating_sub(fc)
        } else {
            maxlen
        };
        if end < log.first.saturating_add(format::MIN_JOURNAL_BLOCKS / 4) {
            return Err(JournalError::Superblock(
                "the journal is too small to write (its fast-commit area leaves too little log)",
            )
            .into());
        }
        let fmt = LogFormat::new(compat_f, inc, jsb.uuid);
        let ring = Ring::new(&log, end)?;
        let layout = Layout::new(&fmt, bs);
        // A quarter of the ring, as jbd2; and what the buffer holds.
        let room = (ring.blocks() as usize / 4).min(buffer_bytes / bs);
        let limit = layout.max_blocks(room);
        if limit < crate::txn::MIN_LIMIT {
            return Err(JournalError::Superblock(
                "the journal (or journal_buffer) is too small for a transaction of 64 blocks",
            )
            .into());
        }
        let dev = vol.device();
        let mut block = vec![0u8; bs];
        dev.read_blocks(ring.superblock(), bs as u32, &mut block)?;
        if fast_commit {
            reset_fast_commits(&log, end, dev)?;
        }
        let first_tid = jsb.sequence.get().wrapping_add(1);
        let head = log.first;
        let buf_blocks = layout.log_blocks(limit, 4 * limit);
        Ok(JournalWriter {
            fmt,
            layout,
            uuid: jsb.uuid,
            v2,
            compat: compat_f,
            incompat: inc,
            fast_commit,
            limit,
            now: vol.options().now,
            io: spin::Mutex::new(Io {
                buf: vec![0u8; buf_blocks * bs],
                revokes: Vec::with_capacity(4 * limit),
                frozen: Vec::with_capacity(limit),
            }),
            sb: spin::Mutex::new(Sb {
                block,
                empty: true,
                tail_tid: first_tid,
                tail: head,
            }),
            state: spin::Mutex::new(State {
                head,
                // As the kernel: one id is skipped after the last
                // transaction the superblock names.
                next_tid: first_tid,
                live: Live::new(4 * limit, TXN_CAP),
            }),
            ring,
            aborted: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        })
    }

    /// Most blocks one transaction may hold (its superblock included).
    pub fn max_blocks(&self) -> usize {
        self.limit
    }

    /// Blocks of the ring not used by live transactions.
    fn free(&self, sb: &Sb, st: &State) -> usize {
        let used = if sb.empty {
            0
        } else {
            self.ring.distance(sb.tail, st.head)
        };
        self.ring.blocks() as usize - used as usize
    }

    /// Make room for a transaction of `blocks` blocks: checkpoint when the
    /// log or the live-log bookkeeping lacks it. The committing thread
    /// checkpoints after any commit that leaves the log over half full, so
    /// the log then holds at most half the ring from before the previous
    /// checkpoint plus what came since; a checkpoint here frees all but
    /// the transactions that blocks of this one were logged by since that
    /// one (see [`Live::hold`]), which leaves room for a quarter.
    fn make_room<D: BlockDevice>(
        &self,
        cache: &VolumeCache<D>,
        blocks: usize,
    ) -> Result<(), IoError> {
        for _ in 0..3 {
            let fits = {
                let sb = self.sb.lock();
                let st = self.state.lock();
                let need = self.layout.log_blocks(blocks, st.live.pending_revokes());
                self.free(&sb, &st) > need
                    && st.live.blocks() + blocks <= st.live.cap()
                    && st.live.txn_room()
            };
            if fits {
                return Ok(());
            }
            self.checkpoint_now(cache)?;
        }
        // Not reachable by the bounds above; never overwrite the tail.
        Err(IoError {
            errno: errno::ENOSPC,
        })
    }

    /// Build the committing transaction `tid`'s log blocks in the buffer,
    /// freezing its blocks; returns how many log blocks.
    fn build<D: BlockDevice>(
        &self,
        cache: &VolumeCache<D>,
        blocks: &[PhysBlock],
        tid: u32,
        io: &mut Io,
    ) -> Result<usize, IoError> {
        let Io {
            buf,
            revokes,
            frozen,
        } = io;
        let l = self.layout;
        let bs = l.block_size;
        self.state.lock().live.take_revokes(revokes);
        frozen.clear();
        let mut pos = 0usize;
        // Revoke records first (where jbd2 puts them too).
        let rec = self.fmt.revoke_record_bytes();
        for chunk in revokes.chunks(l.records_per_revoke) {
            let b = &mut buf[pos * bs..(pos + 1) * bs];
            b.fill(0);
            b[..HEADER_SIZE].copy_from_slice(Header::new(blocktype::REVOKE, tid).as_bytes());
            let count = REVOKE_HEADER_SIZE + chunk.len() * rec;
            b[HEADER_SIZE..REVOKE_HEADER_SIZE].copy_from_slice(&(count as u32).to_be_bytes());
            for (k, &blk) in chunk.iter().enumerate() {
                let at = REVOKE_HEADER_SIZE + k * rec;
                if rec == 8 {
                    b[at..at + 8].copy_from_slice(&blk.to_be_bytes());
                } else {
                    b[at..at + 4].copy_from_slice(&(blk as u32).to_be_bytes());
                }
            }
            if l.tail != 0 {
                self.fmt.set_tail(b);
            }
            pos += 1;
        }
        let first_desc = pos;
        // Descriptors, each followed by the copies its tags describe.
        let mut desc: Option<usize> = None;
        let mut ntags = 0usize;
        let mut tag_at = 0usize;
        let mut last_tag = (0usize, PhysBlock(0), 0u16, 0u32);
        for &b in blocks {
            if desc.is_none() || ntags == l.tags_per_desc {
                if let Some(d) = desc {
                    self.close_desc(&mut buf[d * bs..(d + 1) * bs], last_tag);
                }
                let d = &mut buf[pos * bs..(pos + 1) * bs];
                d.fill(0);
                d[..HEADER_SIZE]
                    .copy_from_slice(Header::new(blocktype::DESCRIPTOR, tid).as_bytes());
                desc = Some(pos);
                pos += 1;
                ntags = 0;
                tag_at = HEADER_SIZE;
            }
            let slot = pos * bs;
            let copied = cache.txn_freeze(b.0, |d| buf[slot..slot + bs].copy_from_slice(d));
            if copied.is_none() {
                // Freed (and dropped) since it was changed: not logged.
                continue;
            }
            let data = &mut buf[slot..slot + bs];
            let mut flags = 0u16;
            if data[..4] == format::MAGIC.to_be_bytes() {
                data[..4].fill(0);
                flags |= tag_flag::ESCAPE;
            }
            let csum = self.fmt.block_checksum(tid, data);
            if ntags > 0 {
                flags |= tag_flag::SAME_UUID;
            }
            let d0 = desc.unwrap_or(0) * bs;
            let t = d0 + tag_at;
            self.fmt
                .write_tag(&mut buf[t..t + l.tag_bytes], b, flags, csum);
            last_tag = (tag_at, b, flags, csum);
            tag_at += l.tag_bytes;
            if ntags == 0 {
                buf[t + l.tag_bytes..t + l.tag_bytes + TAG_UUID_SIZE].copy_from_slice(&self.uuid);
                tag_at += TAG_UUID_SIZE;
            }
            ntags += 1;
            pos += 1;
            frozen.push(b.0);
        }
        if let Some(d) = desc {
            if ntags == 0 {
                // Only blocks that were dropped: no descriptor.
                pos -= 1;
            } else {
                self.close_desc(&mut buf[d * bs..(d + 1) * bs], last_tag);
            }
        }
        // The commit block.
        let crc = if self.fmt.csum_v1 {
            buf[first_desc * bs..pos * bs]
                .chunks(bs)
                .fold(!0u32, format::v1_update)
        } else {
            0
        };
        let now = (self.now)();
        let c = &mut buf[pos * bs..(pos + 1) * bs];
        c.fill(0);
        let mut h = format::CommitHeader::new_zeroed();
        h.header = Header::new(blocktype::COMMIT, tid);
        if self.fmt.csum_v1 {
            h.chksum_type = format::csum_type::CRC32;
            h.chksum_size = format::CRC32_CHKSUM_SIZE;
            h.chksum[0] = crc.into();
        }
        h.commit_sec = (now.sec as u64).into();
        h.commit_nsec = now.nsec.into();
        c[..format::COMMIT_HEADER_SIZE].copy_from_slice(h.as_bytes());
        if self.fmt.csum_v2_or_v3() {
            self.fmt.set_commit_checksum(c);
        }
        pos += 1;
        // The live log now has these copies (checked for room before).
        let mut st = self.state.lock();
        for &b in frozen.iter() {
            if !st.live.logged(b, tid) {
                return Err(IoError {
                    errno: errno::ENOSPC,
                });
            }
        }
        Ok(pos)
    }

    /// Finish a descriptor: its last tag flagged, its checksum tail.
    fn close_desc(&self, d: &mut [u8], last: (usize, PhysBlock, u16, u32)) {
        let (at, b, flags, csum) = last;
        let n = self.layout.tag_bytes;
        self.fmt
            .write_tag(&mut d[at..at + n], b, flags | tag_flag::LAST_TAG, csum);
        if self.layout.tail != 0 {
            self.fmt.set_tail(d);
        }
    }

    /// Write the journal superblock: live with its tail at `tail` (tid,
    /// position), or empty (`None`) expecting transaction `next_tid`.
    fn write_sb(
        &self,
        dev: &dyn BlockDevice,
        sb: &mut Sb,
        tail: Option<(u32, u32)>,
        next_tid: u32,
    ) -> Result<(), IoError> {
        let Ok((mut jsb, _)) = JournalSuperblock::read_from_prefix(&sb.block[..]) else {
            return Err(IoError::EIO);
        };
        match tail {
            Some((tid, at)) => {
                jsb.sequence = tid.into();
                jsb.start = at.into();
            }
            None => {
                jsb.sequence = next_tid.into();
                jsb.start = 0.into();
            }
        }
        if self.v2 {
            let fc = if tail.is_some() && self.fast_commit {
                feature::INCOMPAT_FAST_COMMIT
            } else {
                // As the kernel: a clean journal does not claim fast
                // commits (older kernels can mount it).
                0
            };
            jsb.feature_compat = self.compat.into();
            jsb.feature_incompat = (self.incompat | fc).into();
            if self.fmt.csum_v2_or_v3() {
                jsb.checksum_type = format::CSUM_CRC32C;
                let bytes: &[u8; format::SIZE] =
                    jsb.as_bytes().try_into().map_err(|_| IoError::EIO)?;
                jsb.checksum = format::checksum(bytes).into();
            }
        }
        sb.block[..format::SIZE].copy_from_slice(jsb.as_bytes());
        dev.write_blocks(
            self.ring.superblock(),
            self.layout.block_size as u32,
            &sb.block,
        )
    }

    /// Write the built transaction (`n` log blocks at `start`) and make it
    /// durable: log blocks, flush, commit block, flush.
    fn write_log(
        &self,
        dev: &dyn BlockDevice,
        buf: &[u8],
        tid: u32,
        start: u32,
        n: usize,
    ) -> Result<(), IoError> {
        let bs = self.layout.block_size;
        {
            let mut sb = self.sb.lock();
            if sb.empty {
                // Recovery must find this transaction: the tail goes down
                // with the log blocks, durable before the commit block.
                self.write_sb(dev, &mut sb, Some((tid, start)), tid)?;
                sb.empty = false;
                sb.tail_tid = tid;
                sb.tail = start;
            }
        }
        self.ring.write(dev, start, &buf[..(n - 1) * bs])?;
        // Ordered mode too: the file data written so far goes down here.
        dev.flush()?;
        self.ring.write(
            dev,
            self.ring.add(start, (n - 1) as u32),
            &buf[(n - 1) * bs..n * bs],
        )?;
        dev.flush()
    }

    /// The checkpoint (see the module's doc): home writes, the tail found,
    /// a flush, the journal superblock moved forward.
    fn checkpoint_now<D: BlockDevice>(&self, cache: &VolumeCache<D>) -> Result<(), IoError> {
        if self.aborted.load(Ordering::Acquire) {
            return Err(IoError::EIO);
        }
        cache.flush_range(0, u64::MAX)?;
        let (tid, at) = {
            let mut st = self.state.lock();
            match st.live.hold(cache) {
                None => (st.next_tid, st.head),
                Some(t) if t == st.next_tid => (t, st.head),
                Some(t) => match st.live.start_of(t) {
                    Some(at) => (t, at),
                    // Held by a transaction no longer tracked: leave the
                    // tail where it is.
                    None => return Ok(()),
                },
            }
        };
        let dev = cache.device();
        dev.flush()?;
        let mut sb = self.sb.lock();
        if !sb.empty && tid_gt(tid, sb.tail_tid) {
            self.write_sb(dev, &mut sb, Some((tid, at)), tid)?;
            dev.flush()?;
            sb.tail_tid = tid;
            sb.tail = at;
        }
        // What the tail on disk has passed is out of the live log.
        let passed = if sb.empty { tid } else { sb.tail_tid };
        self.state.lock().live.prune(passed);
        Ok(())
    }

    fn fail<T>(&self, e: IoError) -> Result<T, IoError> {
        self.aborted.store(true, Ordering::Release);
        Err(e)
    }
}

impl<D: BlockDevice> Commit<D> for JournalWriter {
    fn commit(
        &self,
        cache: &VolumeCache<D>,
        blocks: &[PhysBlock],
        release: &mut dyn FnMut(),
    ) -> Result<(), IoError> {
        if self.closed.load(Ordering::Acquire) {
            return WriteHome.commit(cache, blocks, release);
        }
        // One commit at a time: this also waits for the previous one to
        // be durable, which an empty commit (fsync with nothing new) is for.
        let mut io = self.io.lock();
        if self.aborted.load(Ordering::Acquire) {
            return Err(IoError::EIO);
        }
        if blocks.is_empty() && self.state.lock().live.pending_revokes() == 0 {
            return Ok(());
        }
        if let Err(e) = self.make_room(cache, blocks.len()) {
            return self.fail(e);
        }
        let (tid, start) = {
            let st = self.state.lock();
            (st.next_tid, st.head)
        };
        let n = match self.build(cache, blocks, tid, &mut io) {
            Ok(n) => n,
            Err(e) => return self.fail(e),
        };
        // The copies are taken: the next transaction may begin.
        release();
        if let Err(e) = self.write_log(cache.device(), &io.buf, tid, start, n) {
            return self.fail(e);
        }
        for &b in &io.frozen {
            cache.txn_logged(b);
        }
        let checkpoint = {
            let sb = self.sb.lock();
            let mut st = self.state.lock();
            st.head = self.ring.add(start, n as u32);
            st.next_tid = tid.wrapping_add(1);
            st.live.committed(
                LiveTxn {
                    tid,
                    start,
                    len: n as u32,
                },
                &io.revokes,
            );
            let used = self.ring.blocks() as usize - self.free(&sb, &st);
            used > self.ring.blocks() as usize / 2
                || st.live.blocks() > st.live.cap() / 2
                || st.live.txns() > st.live.txn_cap() / 2
        };
        drop(io);
        if checkpoint {
            if let Err(e) = self.checkpoint_now(cache) {
                return self.fail(e);
            }
        }
        Ok(())
    }

    fn forget(&self, _cache: &VolumeCache<D>, start: u64, len: u64) {
        if !self.closed.load(Ordering::Acquire) {
            self.state.lock().live.forget(start, len);
        }
    }

    fn limit(&self) -> usize {
        self.limit
    }

    fn checkpoint(&self, cache: &VolumeCache<D>) -> Result<(), IoError> {
        if self.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        self.checkpoint_now(cache).or_else(|e| self.fail(e))
    }

    fn close(&self, cache: &VolumeCache<D>) -> Result<(), IoError> {
        let _io = self.io.lock();
        if self.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        if self.aborted.load(Ordering::Acquire) {
            return Err(IoError::EIO);
        }
        // No transaction runs: everything goes home, and the log is empty.
        let dev = cache.device();
        cache.flush_range(0, u64::MAX).or_else(|e| self.fail(e))?;
        dev.flush().or_else(|e| self.fail(e))?;
        if cache.dirty_count() != 0 {
            return self.fail(IoError::EIO);
        }
        let next = self.state.lock().next_tid;
        let mut sb = self.sb.lock();
        self.write_sb(dev, &mut sb, None, next)
            .and_then(|_| dev.flush())
            .or_else(|e| self.fail(e))?;
        sb.empty = true;
        self.closed.store(true, Ordering::Release);
        Ok(())
    }

    fn reopen(&self) {
        let _io = self.io.lock();
        if self.aborted.load(Ordering::Acquire) || !self.closed.load(Ordering::Acquire) {
            return;
        }
        // The log is empty on disk: nothing in it is live any more, and
        // the next commit writes the tail before its blocks.
        let mut st = self.state.lock();
        let next = st.next_tid;
        st.live.prune(next);
        self.closed.store(false, Ordering::Release);
    }

    fn journaled(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
    }
}

/// The fast-commit area must hold nothing the kernel or `e2fsck` could
/// replay after our transactions: its fast commits are all older than the
/// log (recovery refuses to open over pending ones), and the kernel would
/// skip them by their transaction id, but `e2fsck` (1.47) fails its
/// replay on a stale head tag. So a stale area's first block is zeroed,
/// which both read as "no fast commits".
fn reset_fast_commits<D: BlockDevice>(
    log: &Log<'_, D>,
    end: u32,
    dev: &dyn BlockDevice,
) -> Result<()> {
    let first = end as u64 + 1;
    if first >= log.total_len as u64 {
        return Ok(());
    }
    let at = log.location(first)?;
    let mut block = vec![0u8; log.block_size];
    dev.read_at(at, &mut block)?;
    if u16::from_le_bytes([block[0], block[1]]) == FC_TAG_HEAD {
        block.fill(0);
        dev.write_at(at, &block)?;
    }
    Ok(())
}
