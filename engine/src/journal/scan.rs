//! The recovery passes over the log, as the kernel's jbd2 makes them
//! (`fs/jbd2/recovery.c`), turned into a replay plan instead of writes:
//!
//! 1. SCAN walks the log from `s_start`, transaction `s_sequence` on, and
//!    finds where the committed log ends: at the first block whose magic
//!    or sequence is not the next expected, or at a commit block whose
//!    checksum fails. It verifies descriptor, revoke and commit checksums
//!    (v2/v3) or the crc32 of each transaction (v1) as the kernel does.
//! 2. REPLAY walks the committed transactions and records every tag: the
//!    filesystem block, where its copy lies in the log, the transaction,
//!    whether it was escaped, and (v2/v3) whether the copy matches the
//!    tag's checksum.
//! 3. REVOKE reads the revoke blocks REPLAY met and marks every copy a
//!    revoke record of the same or a later transaction covers.
//!
//! The kernel writes each copy in log order, skipping revoked ones and
//! ones whose checksum fails, so a block ends up holding its newest copy
//! that is neither: that copy is what the plan keeps, one per block.
//!
//! Memory: one [`LoggedBlock`] (32 bytes) per tag of the committed log and
//! 16 bytes per revoke block, within a budget fixed by the caller; revoke
//! records are applied to the recorded copies and not kept. Time: each pass reads at most twice the
//! journal's length in blocks, whatever the log claims (a log that goes
//! around without ending is an error, where the kernel would loop).

use alloc::vec;
use alloc::vec::Vec;

use super::format::{self, blocktype, revoke_records, tid_geq, CommitInfo, Header, TagInfo};
use super::log::Log;
use super::JournalError;
use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::numbers::PhysBlock;

/// One logged copy of a filesystem block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoggedBlock {
    /// The filesystem block it belongs at.
    pub target: PhysBlock,
    /// Byte offset of the copy on the journal's device.
    pub src: u64,
    /// The transaction that logged it.
    pub tid: u32,
    /// Its position among all tags of the log, oldest first.
    pub order: u32,
    flags: u8,
}

const ESCAPED: u8 = 1;
/// The copy does not match its tag's checksum.
const BAD: u8 = 2;
const REVOKED: u8 = 4;

impl LoggedBlock {
    /// A copy of `target` at byte `src` of the journal's device (tests).
    #[cfg(test)]
    pub(crate) fn new(target: PhysBlock, src: u64, escaped: bool) -> LoggedBlock {
        LoggedBlock {
            target,
            src,
            tid: 0,
            order: 0,
            flags: if escaped { ESCAPED } else { 0 },
        }
    }

    /// Whether the copy's first four bytes stand for the jbd2 magic
    /// number, which the log cannot hold there.
    pub fn escaped(&self) -> bool {
        self.flags & ESCAPED != 0
    }
}

/// Memory charged per logged block against the replay budget.
pub const BYTES_PER_LOGGED_BLOCK: usize = core::mem::size_of::<LoggedBlock>();

/// What recovery found, for messages and `info`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// The first transaction of the log (`s_sequence`).
    pub first_tid: u32,
    /// The first transaction not replayed (one past the last).
    pub end_tid: u32,
    /// Transactions replayed.
    pub transactions: u32,
    /// Tags of those transactions.
    pub logged: u64,
    /// Revoke records in the scanned log.
    pub revoke_records: u64,
    /// Copies not replayed because a revoke record covers them.
    pub revoked: u64,
    /// Filesystem blocks replayed (one per block, its newest copy).
    pub blocks: u64,
    /// Whether the replayed part of the log wraps around the journal's
    /// end.
    pub wrapped: bool,
    /// Log blocks the replayed transactions take (descriptors, copies,
    /// revoke and commit blocks).
    pub log_blocks: u64,
}

/// What to replay: the outcome of the passes.
#[derive(Debug, Default)]
pub struct Plan {
    pub stats: ReplayStats,
    /// One per filesystem block, sorted by target.
    pub blocks: Vec<LoggedBlock>,
    /// Whether the passes got as far as replaying: false when SCAN failed
    /// (then `blocks` is empty and `error` says why).
    pub replayable: bool,
    /// What made recovery fail: with `replayable`, the rest of the plan
    /// is what the kernel and e2fsck replay before reporting it.
    pub error: Option<JournalError>,
    /// The transaction whose commit block failed its checksum
    /// (`j_failed_commit`): replay stopped before it.
    pub failed_commit: Option<u32>,
    /// `s_sequence` as found.
    #[allow(dead_code)]
    pub sequence: u32,
}

impl Plan {
    /// Nothing to replay (`s_start` is 0: the journal is empty).
    pub fn empty(sequence: u32) -> Plan {
        Plan {
            replayable: true,
            sequence,
            stats: ReplayStats {
                first_tid: sequence,
                end_tid: sequence,
                ..ReplayStats::default()
            },
            ..Plan::default()
        }
    }

    /// Whether the kernel's ext4 would mount after this recovery: no
    /// error and no corrupt transaction.
    #[allow(dead_code)]
    pub fn clean(&self) -> bool {
        self.error.is_none() && self.failed_commit.is_none()
    }

    /// The first reason recovery is not clean.
    pub fn problem(&self) -> Option<JournalError> {
        if let Some(e) = &self.error {
            return Some(e.clone());
        }
        self.failed_commit
            .map(|tid| JournalError::CorruptTransaction { tid })
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pass {
    Scan,
    /// The kernel's REPLAY, which here also notes where the revoke blocks
    /// are (the kernel's REVOKE pass, applied once every copy is known).
    Replay,
}

/// What the passes carry between them (`struct recovery_info`). As in the
/// kernel, an end transaction of 0 means "not found yet".
#[derive(Default)]
struct Info {
    end: u32,
    failed_commit: Option<u32>,
    revoke_records: u64,
    wrapped: bool,
    log_blocks: u64,
}

/// Where REPLAY puts what it finds.
struct Collect {
    blocks: Vec<LoggedBlock>,
    /// The revoke blocks of the replayed transactions: (log block,
    /// transaction).
    revoke_blocks: Vec<(u64, u32)>,
    /// Bytes of `blocks` and `revoke_blocks` allowed.
    budget: usize,
    logged: u64,
    over_budget: bool,
    error: Option<JournalError>,
    revoked: u64,
}

impl Collect {
    /// Bytes of the budget in use.
    fn used(&self) -> usize {
        self.blocks.len() * BYTES_PER_LOGGED_BLOCK
            + self.revoke_blocks.len() * core::mem::size_of::<(u64, u32)>()
    }

    fn fail(&mut self, e: Error) {
        if self.error.is_none() {
            self.error = Some(match e {
                Error::Journal(j) => j,
                Error::Io(err) => JournalError::Io { block: 0, err },
                _ => JournalError::Superblock("the journal inode's block map is damaged"),
            });
        }
    }
}

/// Run the recovery passes over `log` and return the plan. `dev_blocks`
/// is the filesystem device's size in blocks (copies past it are not
/// replayed); `budget` bounds the plan's memory. `Err` only when the plan
/// cannot be made at all (too large for the budget, an I/O error on the
/// journal device before anything was read).
pub fn plan<D: BlockDevice>(log: &Log<'_, D>, dev_blocks: u64, budget: usize) -> Result<Plan> {
    let sequence = log.sb.sequence.get();
    if log.sb.start.get() == 0 {
        return Ok(Plan::empty(sequence));
    }
    let mut w = Walker {
        log,
        buf: vec![0u8; log.block_size],
        data: vec![0u8; log.block_size],
    };
    let mut info = Info::default();
    let mut c = Collect {
        blocks: Vec::new(),
        revoke_blocks: Vec::new(),
        budget,
        logged: 0,
        over_budget: false,
        error: None,
        revoked: 0,
    };
    let failed = |e: Error, info: &Info| -> Result<Plan> {
        let Error::Journal(j) = e else { return Err(e) };
        Ok(Plan {
            replayable: false,
            error: Some(j),
            sequence,
            stats: ReplayStats {
                first_tid: sequence,
                end_tid: sequence,
                revoke_records: info.revoke_records,
                ..ReplayStats::default()
            },
            ..Plan::default()
        })
    };
    if let Err(e) = w.walk(Pass::Scan, &mut info, &mut c) {
        return failed(e, &info);
    }
    // The data of checksummed logs is read in REPLAY: read ahead there.
    log.set_read_ahead(log.fmt.csum_v2_or_v3());
    let replayed = w.walk(Pass::Replay, &mut info, &mut c);
    log.set_read_ahead(false);
    if let Err(e) = replayed {
        return failed(e, &info);
    }
    if c.over_budget {
        return Err(JournalError::TooLarge {
            blocks: c.logged,
            need: c.logged.saturating_mul(BYTES_PER_LOGGED_BLOCK as u64),
            budget: budget as u64,
        }
        .into());
    }
    // Each block's copies together, oldest first; then the revoke
    // records marked on them.
    c.blocks.sort_unstable_by_key(|b| (b.target, b.order));
    for (n, tid) in core::mem::take(&mut c.revoke_blocks) {
        if let Err(e) = log.read(n, &mut w.buf) {
            return failed(e, &info);
        }
        // SCAN checked the count of every revoke block it met.
        for blk in revoke_records(&log.fmt, &w.buf).into_iter().flatten() {
            revoke(&mut c, blk, tid);
        }
    }
    let mut blocks = core::mem::take(&mut c.blocks);
    select(&mut blocks, &mut c, dev_blocks, log.block_size as u64);
    let stats = ReplayStats {
        first_tid: sequence,
        end_tid: info.end,
        transactions: info.end.wrapping_sub(sequence),
        logged: c.logged,
        revoke_records: info.revoke_records,
        revoked: c.revoked,
        blocks: blocks.len() as u64,
        wrapped: info.wrapped,
        log_blocks: info.log_blocks,
    };
    Ok(Plan {
        stats,
        blocks,
        replayable: true,
        error: c.error,
        failed_commit: info.failed_commit,
        sequence,
    })
}

/// Keep, for each block, its newest copy that is neither revoked nor
/// damaged; note the damaged copies a revoke record does not cover (the
/// kernel reports those) and drop copies past the device.
fn select(blocks: &mut Vec<LoggedBlock>, c: &mut Collect, dev_blocks: u64, block_size: u64) {
    let mut w = 0;
    let mut i = 0;
    while i < blocks.len() {
        let target = blocks[i].target;
        let mut keep = None;
        while i < blocks.len() && blocks[i].target == target {
            let b = blocks[i];
            if b.flags & REVOKED == 0 {
                if b.flags & BAD != 0 {
                    if c.error.is_none() {
                        c.error = Some(JournalError::TagChecksum {
                            tid: b.tid,
                            at: PhysBlock(b.src / block_size),
                            target,
                        });
                    }
                } else {
                    keep = Some(b);
                }
            }
            i += 1;
        }
        if let Some(b) = keep {
            if target.0 >= dev_blocks {
                if c.error.is_none() {
                    c.error = Some(JournalError::TargetPastDevice { tid: b.tid, target });
                }
                continue;
            }
            blocks[w] = b;
            w += 1;
        }
    }
    blocks.truncate(w);
    blocks.shrink_to_fit();
}

struct Walker<'l, 'a, D: BlockDevice> {
    log: &'l Log<'a, D>,
    buf: Vec<u8>,
    data: Vec<u8>,
}

impl<D: BlockDevice> Walker<'_, '_, D> {
    /// One pass over the log (`do_one_pass`).
    fn walk(&mut self, pass: Pass, info: &mut Info, c: &mut Collect) -> Result<()> {
        let log = self.log;
        let fmt = log.fmt;
        let mut next_tid = log.sb.sequence.get();
        let mut next = log.sb.start.get() as u64;
        let mut crc32_sum = !0u32;
        let mut need_check_commit_time = false;
        let mut last_commit_time = 0u64;
        // A legitimate log is at most the ring long (plus the block after
        // its end and the tags of a torn descriptor); past twice that it
        // is going around.
        let limit = 2 * log.ring_len() + (log.block_size as u64 / 8) + 8;
        let mut walked = 0u64;
        let mut wrapped = false;
        let mut step = |n: u64| -> Result<()> {
            walked = walked.saturating_add(n);
            if walked > limit {
                return Err(JournalError::Endless.into());
            }
            Ok(())
        };
        loop {
            if pass != Pass::Scan && tid_geq(next_tid, info.end) {
                break;
            }
            let here = next;
            log.read(here, &mut self.buf)?;
            next = log.next(here);
            wrapped |= next < here;
            step(1)?;
            let Some(h) = Header::of(&self.buf) else {
                break;
            };
            if h.magic.get() != format::MAGIC || h.sequence.get() != next_tid {
                break;
            }
            let at = here as u32;
            match h.blocktype.get() {
                blocktype::DESCRIPTOR => {
                    if !fmt.tail_ok(&self.buf) {
                        // SCAN can meet stale blocks of a lazily
                        // initialised journal: judged at the commit.
                        if pass != Pass::Scan {
                            return Err(JournalError::Checksum {
                                tid: next_tid,
                                block: at,
                                what: "descriptor block",
                            }
                            .into());
                        }
                        need_check_commit_time = true;
                    }
                    if pass != Pass::Replay {
                        if pass == Pass::Scan && fmt.csum_v1 && info.end == 0 {
                            // calc_chksums: the transaction's crc32 runs
                            // over its descriptors and logged blocks.
                            crc32_sum = format::v1_update(crc32_sum, &self.buf);
                            let mut io_failed = false;
                            for _ in 0..fmt.tags(&self.buf).count() {
                                let io = next;
                                next = log.next(next);
                                step(1)?;
                                if log.read(io, &mut self.data).is_err() {
                                    io_failed = true;
                                    break;
                                }
                                crc32_sum = format::v1_update(crc32_sum, &self.data);
                            }
                            if io_failed {
                                break;
                            }
                            continue;
                        }
                        let n = fmt.tags(&self.buf).count() as u64;
                        let from = next;
                        next = log.advance(next, n);
                        wrapped |= next < from;
                        step(n)?;
                        continue;
                    }
                    let Walker { buf, data, .. } = self;
                    for tag in fmt.tags(buf) {
                        let io = next;
                        next = log.next(next);
                        wrapped |= next < io;
                        step(1)?;
                        record(log, c, io, tag, next_tid, data);
                    }
                }
                blocktype::COMMIT => {
                    if pass != Pass::Scan {
                        next_tid = next_tid.wrapping_add(1);
                        continue;
                    }
                    let Some(commit) = CommitInfo::of(&self.buf) else {
                        break;
                    };
                    let commit_time = commit.commit_sec;
                    if need_check_commit_time {
                        // A descriptor or revoke block failed its checksum
                        // earlier in this transaction: a commit at least as
                        // new as the last one says the log is damaged; an
                        // older one says the blocks were stale.
                        if commit_time >= last_commit_time {
                            return Err(JournalError::DamagedTransaction {
                                tid: next_tid,
                                commit: at,
                            }
                            .into());
                        }
                        break;
                    }
                    let ok = if fmt.csum_v1 {
                        if info.end != 0 {
                            info.failed_commit = Some(info.end);
                            break;
                        }
                        let matches = crc32_sum == commit.chksum
                            && commit.chksum_type == format::csum_type::CRC32
                            && commit.chksum_size == format::CRC32_CHKSUM_SIZE;
                        let unused = commit.chksum_type == 0
                            && commit.chksum_size == 0
                            && commit.chksum == 0;
                        crc32_sum = !0;
                        matches || unused
                    } else {
                        fmt.commit_ok(&self.buf) || fmt.commit_ok_partial(&self.buf)
                    };
                    if !ok {
                        if commit_time < last_commit_time {
                            break;
                        }
                        info.end = next_tid;
                        if !fmt.async_commit {
                            info.failed_commit = Some(next_tid);
                            break;
                        }
                    }
                    last_commit_time = commit_time;
                    next_tid = next_tid.wrapping_add(1);
                }
                blocktype::REVOKE => {
                    if pass == Pass::Replay {
                        note_revoke_block(c, here, next_tid);
                        continue;
                    }
                    if !fmt.tail_ok(&self.buf) {
                        need_check_commit_time = true;
                    }
                    let Some(records) = revoke_records(&fmt, &self.buf) else {
                        return Err(JournalError::RevokeCount {
                            tid: next_tid,
                            block: at,
                        }
                        .into());
                    };
                    info.revoke_records += records.count() as u64;
                }
                _ => break,
            }
        }
        if pass == Pass::Replay {
            info.wrapped = wrapped;
            // The block that ended the walk is not the log's.
            info.log_blocks = walked.saturating_sub(1);
        }
        if pass == Pass::Scan {
            if info.end == 0 {
                info.end = next_tid;
            }
        } else if info.end != next_tid {
            // The passes disagree on where the log ends (a read error in
            // between): the kernel reports EIO.
            return Err(JournalError::Io {
                block: next as u32,
                err: crate::error::IoError::EIO,
            }
            .into());
        }
        Ok(())
    }
}

/// REPLAY: note one tag's copy at log block `io` of transaction `tid`.
fn record<D: BlockDevice>(
    log: &Log<'_, D>,
    c: &mut Collect,
    io: u64,
    tag: TagInfo,
    tid: u32,
    data: &mut [u8],
) {
    c.logged += 1;
    if c.over_budget || c.used() + BYTES_PER_LOGGED_BLOCK > c.budget {
        // Counted only, for the message.
        c.over_budget = true;
        return;
    }
    let src = match log.location(io) {
        Ok(s) => s,
        Err(e) => {
            // The kernel replays what it can and fails at the end.
            c.fail(e);
            return;
        }
    };
    let mut flags = if tag.escaped() { ESCAPED } else { 0 };
    if log.fmt.csum_v2_or_v3() {
        if let Err(e) = log.read(io, data) {
            c.fail(e);
            return;
        }
        if !tag.checksum_ok(&log.fmt, tid, data) {
            flags |= BAD;
        }
    }
    c.blocks.push(LoggedBlock {
        target: tag.blocknr,
        src,
        tid,
        order: c.logged as u32,
        flags,
    });
}

/// REPLAY: note revoke block `n` of transaction `tid`, to apply once
/// every copy is known.
fn note_revoke_block(c: &mut Collect, n: u64, tid: u32) {
    if c.over_budget || c.used() + core::mem::size_of::<(u64, u32)>() > c.budget {
        c.over_budget = true;
        return;
    }
    c.revoke_blocks.push((n, tid));
}

/// REVOKE: block `blk` is not to be replayed from transaction `tid` or
/// any before it.
fn revoke(c: &mut Collect, blk: PhysBlock, tid: u32) {
    let mut i = c.blocks.partition_point(|b| b.target < blk);
    while let Some(b) = c.blocks.get_mut(i) {
        if b.target != blk {
            break;
        }
        if b.flags & REVOKED == 0 && tid_geq(tid, b.tid) {
            b.flags |= REVOKED;
            c.revoked += 1;
        }
        i += 1;
    }
}
