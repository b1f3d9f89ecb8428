//! The iomap opcodes (`docs/iomap.md`): the kernel asks
//! where file bytes live and does the I/O itself. Answers come from the
//! engine (`Volume::iomap_begin`, `iomap_config`), are checked against the
//! kernel's rules (`ext4_engine::iomap::kernel_check`) before they leave,
//! and the kernel's mapping cache is filled with `UPSERT_MAPPINGS`
//! notifications.
//!
//! The server mirrors what it put into the kernel's cache (pushes and
//! cached `begin` replies) in an engine `MappingCache` with the kernel's
//! budget: both follow the same rules, so the mirror bounds each push so
//! that the kernel never drops the inode it was just given, which is what
//! makes a `RETRY_CACHE` answer true. The mirror cannot see the kernel's
//! own LRU order; when it has dropped an inode the kernel may still hold,
//! the first push to that inode invalidates the kernel's copy first.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;

use ext4_engine::errno;
use ext4_engine::inode_flags as iflags;
use ext4_engine::iomap::{ioend, kernel_check, mflags, op, IomapConfig};
use ext4_engine::mapping_cache::{Fork, Lookup, MapType, Mapping, MappingCache, NULL_ADDR};
use ext4_engine::{policy, InodeNo};
use ext4_engine::{Attr, FileType, WriteMap, WriteRun};
use zerocopy::IntoBytes;

use super::{notify, ReplyBuf, Request, Session};
use crate::abi::{self, attr_flags, notify_code};
use crate::backend::Backend;
use crate::channel::Channel;
use crate::log;

/// Every `opflags` bit of the series; anything else is refused.
pub const KNOWN_OPFLAGS: u32 = op::WRITE
    | op::ZERO
    | op::REPORT
    | op::FAULT
    | op::DIRECT
    | op::NOWAIT
    | op::OVERWRITE_ONLY
    | op::UNSHARE
    | op::DAX
    | op::ATOMIC
    | op::DONTCACHE
    | op::SWAPFILE
    | op::WRITEBACK;

/// What one B+tree leaf of the kernel's cache costs at worst per added
/// record: pushes stop while a whole new node still fits.
const NODE_BYTES: usize = 256;

/// Counters of the iomap path (for the log and the benchmark).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IomapStats {
    pub begin: u64,
    pub retry_cache: u64,
    pub upserts: u64,
    pub invals: u64,
    pub dev_invals: u64,
    pub end: u64,
    pub config: u64,
}

#[derive(Default)]
pub(super) struct State {
    /// Device cookie of the registered backing device; 0 = iomap not in use
    /// (the connection may have negotiated it, but no inode is flagged).
    dev: AtomicU32,
    shutdown: AtomicBool,
    /// Untorn single-block writes (`FUSE_ATTR_ATOMIC`): the kernel and the
    /// block device can do them ([`Session::allow_atomic_writes`]).
    atomic: AtomicBool,
    /// The kernel's mapping cache as far as this server filled it; set by
    /// `IOMAP_CONFIG` when pushes are on.
    mirror: OnceLock<MappingCache>,
    /// What `IOMAP_CONFIG` answered.
    config: OnceLock<IomapConfig>,
    begin: AtomicU64,
    retry_cache: AtomicU64,
    upserts: AtomicU64,
    invals: AtomicU64,
    dev_invals: AtomicU64,
    end: AtomicU64,
    config_calls: AtomicU64,
}

/// The mapping of a [`WriteMap`]'s first run, with the runs after it that
/// continue it on the device in the same state.
fn write_mapping(runs: &[WriteRun], bs: u64, dev: u32) -> Mapping {
    let first = runs[0];
    let mut len = u64::from(first.len);
    for r in &runs[1..] {
        let follows = u64::from(r.lblk.0) == u64::from(first.lblk.0) + len
            && r.pblk.0 == first.pblk.0 + len
            && (r.unwritten, r.new) == (first.unwritten, first.new);
        if !follows {
            break;
        }
        len += u64::from(r.len);
    }
    Mapping {
        offset: u64::from(first.lblk.0) * bs,
        length: len * bs,
        addr: first.pblk.0 * bs,
        kind: if first.unwritten {
            MapType::Unwritten
        } else {
            MapType::Mapped
        },
        flags: if first.new { mflags::NEW } else { 0 },
        dev,
    }
}

fn io(m: &Mapping) -> abi::IomapIo {
    abi::IomapIo::from_mapping(m)
}

/// The `fuse_attr.flags` of an iomap regular file: iomap, exclusive (no one
/// else changes this filesystem under the mount), and the ext4 flags the
/// VFS enforces.
pub fn attr_flags_for(a: &Attr) -> u32 {
    let mut f = attr_flags::IOMAP | attr_flags::EXCLUSIVE;
    if a.flags & iflags::SYNC != 0 {
        f |= attr_flags::SYNC;
    }
    if a.flags & iflags::IMMUTABLE != 0 {
        f |= attr_flags::IMMUTABLE;
    }
    if a.flags & iflags::APPEND != 0 {
        f |= attr_flags::APPEND;
    }
    f
}

impl<B: Backend> Session<B> {
    /// Start serving file data through iomap on the device registered as
    /// `dev` (the backing id from `FUSE_DEV_IOC_BACKING_OPEN`). Only after
    /// `FUSE_INIT` granted `FUSE_IOMAP`; before any other request is served.
    pub fn activate_iomap(&self, dev: u32) -> Result<(), &'static str> {
        let granted = self
            .negotiated()
            .is_some_and(|n| n.flags & abi::init_flags::IOMAP != 0);
        if !granted {
            return Err("the kernel did not grant FUSE_IOMAP");
        }
        if dev == abi::IOMAP_DEV_NULL {
            return Err("device cookie 0 is the null device");
        }
        self.iomap.dev.store(dev, Ordering::Release);
        if !self.backend.read_only() {
            self.backend.set_kernel_writes_data();
        }
        Ok(())
    }

    /// Whether file data goes through iomap (regular files carry
    /// `FUSE_ATTR_IOMAP`).
    pub fn iomap_active(&self) -> bool {
        self.iomap.dev.load(Ordering::Acquire) != abi::IOMAP_DEV_NULL
    }

    pub fn iomap_stats(&self) -> IomapStats {
        let s = &self.iomap;
        IomapStats {
            begin: s.begin.load(Ordering::Relaxed),
            retry_cache: s.retry_cache.load(Ordering::Relaxed),
            upserts: s.upserts.load(Ordering::Relaxed),
            invals: s.invals.load(Ordering::Relaxed),
            dev_invals: s.dev_invals.load(Ordering::Relaxed),
            end: s.end.load(Ordering::Relaxed),
            config: s.config_calls.load(Ordering::Relaxed),
        }
    }

    pub(super) fn is_shut_down(&self) -> bool {
        self.iomap.shutdown.load(Ordering::Acquire)
    }

    /// Whether the kernel's iomap opcodes may be used on this connection.
    fn iomap_granted(&self) -> bool {
        self.negotiated()
            .is_some_and(|n| n.flags & abi::init_flags::IOMAP != 0)
    }

    /// `fuse_attr.flags` for `a`.
    pub(super) fn attr_flags(&self, a: &Attr) -> u32 {
        if a.kind != FileType::Regular || !self.iomap_active() {
            return 0;
        }
        let mut f = attr_flags_for(a);
        if self.atomic_file(a) {
            f |= attr_flags::ATOMIC;
        }
        f
    }

    /// Offer untorn single-block writes (`FUSE_ATTR_ATOMIC` on
    /// extent-mapped regular files): only when the kernel's iomap can do
    /// atomic writes and the block device takes a whole filesystem block
    /// in one atomic write (`iomap_setup::atomic_writes`), and the volume
    /// is writable. After [`Session::activate_iomap`].
    pub fn allow_atomic_writes(&self) {
        if self.iomap_active() && !self.backend.read_only() {
            self.iomap.atomic.store(true, Ordering::Release);
        }
    }

    /// Whether [`Session::allow_atomic_writes`] took effect.
    pub fn atomic_writes_allowed(&self) -> bool {
        self.iomap.atomic.load(Ordering::Acquire)
    }

    /// Whether writes to `a` may be atomic: as the kernel's ext4, only
    /// extent-mapped files (an indirect-mapped or inline file has no
    /// single-extent answer to give).
    fn atomic_file(&self, a: &Attr) -> bool {
        self.iomap.atomic.load(Ordering::Acquire)
            && a.flags & iflags::EXTENTS != 0
            && a.flags & iflags::INLINE_DATA == 0
    }

    /// Whether a READ of this inode is one the server must not serve: the
    /// kernel reads iomap files itself, except inline data.
    pub(super) fn read_is_iomap_violation(&self, ino: InodeNo) -> Result<bool, i32> {
        if !self.iomap_active() {
            return Ok(false);
        }
        let a = self
            .backend
            .getattr(ino)
            .map_err(|e| self.fail_as(policy::Request::Read, "read", ino, e))?;
        Ok(a.kind == FileType::Regular && a.flags & iflags::INLINE_DATA == 0)
    }

    /// Opcodes of the iomap series; `None` if `op` is not one of them.
    pub(super) fn dispatch_iomap(
        &self,
        req: &Request<'_>,
        ch: &dyn Channel,
        out: &mut ReplyBuf,
    ) -> Option<Result<(), i32>> {
        use crate::abi::opcode::*;
        let op = req.header.opcode;
        if !matches!(
            op,
            FREEZE_FS
                | UNFREEZE_FS
                | SHUTDOWN_FS
                | IOMAP_CONFIG
                | IOMAP_IOEND
                | IOMAP_BEGIN
                | IOMAP_END
        ) {
            return None;
        }
        if !self.iomap_granted() {
            return Some(Err(errno::ENOSYS));
        }
        Some(match op {
            IOMAP_BEGIN => self.do_iomap_begin(req, ch, out),
            IOMAP_END => self.do_iomap_end(req),
            IOMAP_IOEND => self.do_iomap_ioend(req, out),
            IOMAP_CONFIG => self.do_iomap_config(req, out),
            FREEZE_FS => req.arg::<abi::U64In>().and_then(|_| {
                self.backend
                    .freeze()
                    .map_err(|e| self.fail("freeze", InodeNo::ROOT, e))
            }),
            UNFREEZE_FS => {
                self.backend.thaw();
                Ok(())
            }
            SHUTDOWN_FS => req.arg::<abi::U64In>().map(|a| {
                log::error(format_args!(
                    "the kernel shut the filesystem down (flags {:#x}); nothing more is written \
                     (what was committed is in the journal), every further request fails",
                    a.value
                ));
                self.iomap.shutdown.store(true, Ordering::Release);
                self.backend.shut_down();
            }),
            _ => Err(errno::ENOSYS),
        })
    }

    fn iomap_dev(&self) -> Result<u32, i32> {
        match self.iomap.dev.load(Ordering::Acquire) {
            // No inode carries FUSE_ATTR_IOMAP: the kernel has no business
            // asking.
            abi::IOMAP_DEV_NULL => Err(errno::EINVAL),
            d => Ok(d),
        }
    }

    /// The inode a request names, checked against the `attr_ino` the
    /// kernel sends with it (the `ino` this server put in `fuse_attr`).
    fn iomap_ino(req: &Request<'_>, attr_ino: u64) -> Result<InodeNo, i32> {
        let ino = req.ino()?;
        if attr_ino != u64::from(ino.0) {
            return Err(errno::EINVAL);
        }
        Ok(ino)
    }

    fn do_iomap_begin(
        &self,
        req: &Request<'_>,
        ch: &dyn Channel,
        out: &mut ReplyBuf,
    ) -> Result<(), i32> {
        self.iomap.begin.fetch_add(1, Ordering::Relaxed);
        let args: abi::IomapBeginIn = req.arg()?;
        let ino = Self::iomap_ino(req, args.attr_ino)?;
        if args.reserved != 0 || args.opflags & !KNOWN_OPFLAGS != 0 {
            return Err(errno::EINVAL);
        }
        let dev = self.iomap_dev()?;
        if args.opflags & op::ATOMIC != 0 {
            self.check_atomic(ino, &args)?;
        }
        if args.opflags & (op::WRITES | op::WRITEBACK) != 0 {
            return self.do_iomap_begin_write(req, ch, ino, &args, dev, out);
        }
        let (read, write) = self
            .backend
            .iomap_begin(ino, args.pos, args.count, args.opflags, dev)
            .map_err(|e| self.fail("iomap_begin", ino, e))?;
        self.check_answer(ino, &read, args.pos, false)?;
        self.check_answer(ino, &write, args.pos, true)?;

        let cacheable = matches!(
            read.kind,
            MapType::Mapped | MapType::Unwritten | MapType::Hole
        );
        let mut reply = (read, write);
        // Pushes serve the page cache (buffered reads, faults); reports and
        // direct I/O take the answer as it is.
        if cacheable && args.opflags & (op::REPORT | op::DIRECT) == 0 {
            if let Some((start, end)) = self.push_from(ch, ino, read, usize::MAX) {
                // The kernel's cache now covers `pos`: it looks again.
                let retry = Mapping {
                    offset: start,
                    length: end - start,
                    addr: NULL_ADDR,
                    kind: MapType::RetryCache,
                    flags: 0,
                    dev: abi::IOMAP_DEV_NULL,
                };
                reply = (retry, Mapping { ..retry });
                self.iomap.retry_cache.fetch_add(1, Ordering::Relaxed);
            }
        }
        if reply.0.kind != MapType::RetryCache && cacheable {
            // The kernel caches what it is answered: so does the mirror.
            if let Some(m) = self.iomap.mirror.get() {
                let _ = m.upsert(ino, Fork::Read, read);
            }
        }
        out.push(
            abi::IomapBeginOut {
                read: io(&reply.0),
                write: io(&reply.1),
            }
            .as_bytes(),
        );
        Ok(())
    }

    /// `IOMAP_BEGIN` of a write: `ZERO` answers where the bytes are now
    /// (a hole or unwritten range needs no zeroing, so nothing is
    /// allocated); `WRITE`, `UNSHARE` and writeback map the range,
    /// allocating its holes (unwritten and `NEW`). The write mapping is a
    /// pure overwrite: the kernel writes where the read mapping points.
    fn do_iomap_begin_write(
        &self,
        req: &Request<'_>,
        ch: &dyn Channel,
        ino: InodeNo,
        args: &abi::IomapBeginIn,
        dev: u32,
        out: &mut ReplyBuf,
    ) -> Result<(), i32> {
        if self.backend.read_only() {
            return Err(errno::EROFS);
        }
        let bs = self.iomap_block_size()?;
        let zero_only = args.opflags & (op::WRITE | op::UNSHARE | op::WRITEBACK) == 0;
        let read = if zero_only {
            let read_ops = args.opflags & !(op::WRITES | op::WRITEBACK);
            self.backend
                .iomap_begin(ino, args.pos, args.count, read_ops, dev)
                .map_err(|e| self.fail("iomap_begin", ino, e))?
                .0
        } else {
            let map = self
                .backend
                .map_for_write(&req.caller(), ino, args.pos, args.count)
                .map_err(|e| self.fail("iomap_begin", ino, e))?;
            match map {
                WriteMap::Runs(runs) if !runs.is_empty() => {
                    // Runs past the answer may be new too: the kernel
                    // asks for them next, answered as they are then.
                    if let (Some(a), Some(z)) = (
                        runs.iter().find(|r| r.new),
                        runs.iter().rev().find(|r| r.new),
                    ) {
                        let from = u64::from(a.lblk.0) * bs;
                        let to = (u64::from(z.lblk.0) + u64::from(z.len)) * bs;
                        self.allocated(ch, ino, from, to - from);
                    }
                    write_mapping(&runs, bs, dev)
                }
                WriteMap::Runs(_) => return Err(errno::ENOSPC),
                // Served by the server: the read path's INLINE answer.
                WriteMap::Inline if args.opflags & op::WRITEBACK == 0 => {
                    let read_ops = args.opflags & !(op::WRITES | op::WRITEBACK);
                    self.backend
                        .iomap_begin(ino, args.pos, args.count, read_ops, dev)
                        .map_err(|e| self.fail("iomap_begin", ino, e))?
                        .0
                }
                // Writeback of inline data is an error to the kernel.
                WriteMap::Inline => return Err(errno::EIO),
            }
        };
        let write = Mapping {
            addr: NULL_ADDR,
            kind: MapType::PureOverwrite,
            flags: 0,
            dev: abi::IOMAP_DEV_NULL,
            ..read
        };
        self.check_answer(ino, &read, args.pos, false)?;
        self.check_answer(ino, &write, args.pos, true)?;
        out.push(
            abi::IomapBeginOut {
                read: io(&read),
                write: io(&write),
            }
            .as_bytes(),
        );
        Ok(())
    }

    /// Blocks were allocated in bytes `offset..offset+length` of `ino`:
    /// what the kernel's cache may hold there (a hole) is out of date.
    /// The kernel drops its cache only after the I/O ends, so tell it now
    /// when the mirror says it holds any of this inode.
    fn allocated(&self, ch: &dyn Channel, ino: InodeNo, offset: u64, length: u64) {
        let Some(mirror) = self.iomap.mirror.get() else {
            return;
        };
        if mirror.seq(ino).is_none() {
            return;
        }
        let id = u64::from(ino.0);
        let inval = abi::IomapInvalMappingsOut {
            nodeid: id,
            attr_ino: id,
            read: abi::FuseRange { offset, length },
            write: abi::FuseRange::default(),
        };
        if notify(ch, notify_code::IOMAP_INVAL_MAPPINGS, &inval).is_err() {
            mirror.forget_inode(ino);
            return;
        }
        self.iomap.invals.fetch_add(1, Ordering::Relaxed);
        mirror.remove(ino, Fork::Read, offset, length);
    }

    /// Freed blocks: `DEV_INVAL` for each range, so that the kernel's
    /// cache of the device never writes a stale copy over blocks that
    /// hold file data next.
    pub(super) fn send_dev_invals(&self, ch: &dyn Channel) {
        if !self.iomap_active() || self.backend.read_only() {
            return;
        }
        let dev = self.iomap.dev.load(Ordering::Acquire);
        for (offset, length) in self.backend.take_freed() {
            let inval = abi::IomapDevInvalOut {
                dev,
                reserved: 0,
                range: abi::FuseRange { offset, length },
            };
            if notify(ch, notify_code::IOMAP_DEV_INVAL, &inval).is_err() {
                return;
            }
            self.iomap.dev_invals.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The kernel dropped its cached mappings of `ino` itself (truncate,
    /// fallocate): so does the mirror.
    pub(super) fn kernel_dropped(&self, ino: InodeNo) {
        if let Some(m) = self.iomap.mirror.get() {
            m.forget_inode(ino);
        }
    }

    /// An atomic write is one block-aligned filesystem block of a file
    /// flagged `FUSE_ATTR_ATOMIC` (the limits this server offers: one
    /// block, whose answer is always one mapping covering all of it).
    fn check_atomic(&self, ino: InodeNo, args: &abi::IomapBeginIn) -> Result<(), i32> {
        let bs = self.iomap_block_size()?;
        let a = self
            .backend
            .getattr(ino)
            .map_err(|e| self.fail("iomap_begin", ino, e))?;
        if !self.atomic_file(&a) || !args.pos.is_multiple_of(bs) || args.count != bs {
            return Err(errno::EINVAL);
        }
        Ok(())
    }

    fn iomap_block_size(&self) -> Result<u64, i32> {
        match self.iomap.config.get() {
            Some(c) => Ok(c.block_size as u64),
            None => Ok(self.backend.iomap_config().ok_or(errno::EIO)?.block_size as u64),
        }
    }

    /// Refuse to send an answer the kernel would reject as corruption.
    fn check_answer(&self, ino: InodeNo, m: &Mapping, pos: u64, write: bool) -> Result<(), i32> {
        let cfg = match self.iomap.config.get() {
            Some(c) => *c,
            None => self.backend.iomap_config().ok_or(errno::EIO)?,
        };
        kernel_check(m, pos, cfg.block_size as u64, cfg.maxbytes, write).map_err(|why| {
            log::error(format_args!(
                "iomap_begin on inode {ino} at {pos}: refusing to send {m:?}: {why}"
            ));
            errno::EUCLEAN
        })
    }

    /// Open of an iomap file: push its first mappings into the kernel's
    /// cache, unless the mirror says they are there already.
    pub(super) fn push_on_open(&self, ch: &dyn Channel, ino: InodeNo) {
        if !self.iomap_active() || self.config.iomap_open_push == 0 {
            return;
        }
        let Some(mirror) = self.iomap.mirror.get() else {
            return;
        };
        if matches!(mirror.lookup(ino, Fork::Read, 0), Lookup::Hit(..)) {
            return;
        }
        let Ok(a) = self.backend.getattr(ino) else {
            return;
        };
        if a.kind != FileType::Regular || a.flags & iflags::INLINE_DATA != 0 || a.size == 0 {
            return;
        }
        let Ok(dev) = self.iomap_dev() else {
            return;
        };
        let Ok((first, _)) = self.backend.iomap_begin(ino, 0, a.size, 0, dev) else {
            return;
        };
        if self.check_answer(ino, &first, 0, false).is_err() {
            return;
        }
        self.push_from(ch, ino, first, self.config.iomap_open_push);
    }

    /// Push `first` and the mappings after it, up to `limit` records, the
    /// end of the file, the per-inode share of the kernel's cache budget,
    /// or the configured window. Returns the file range pushed; `None` if
    /// nothing was (pushes off, no budget, a notification failed).
    fn push_from(
        &self,
        ch: &dyn Channel,
        ino: InodeNo,
        first: Mapping,
        limit: usize,
    ) -> Option<(u64, u64)> {
        let mirror = self.iomap.mirror.get()?;
        let limit = limit.min(self.config.iomap_push_window);
        if limit == 0 {
            return None;
        }
        let cfg = self.iomap.config.get()?;
        let bs = cfg.block_size as u64;
        let a = self.backend.getattr(ino).ok()?;
        let eof = a.size.div_ceil(bs).saturating_mul(bs);
        if first.offset >= eof {
            return None;
        }
        let key = ino;
        // Regular files only: their node id is the inode number.
        let id = u64::from(ino.0);
        // Half the budget per inode: the kernel drops an inode that alone
        // exceeds its budget, and evicts others (older) before this one.
        let share = mirror.budget_bytes() / 2;
        let inode_bytes = |m: &MappingCache| {
            m.with_inode(key, |c| c.memory_bytes())
                .map_or(0, |b| b + ext4_engine::mapping_cache::INODE_OVERHEAD)
        };
        if inode_bytes(mirror) + NODE_BYTES > share {
            return None;
        }
        if mirror.seq(key).is_none() {
            // The mirror knows nothing of this inode; the kernel might
            // still hold an older, larger set: start it from empty too.
            let inval = abi::IomapInvalMappingsOut {
                nodeid: id,
                attr_ino: id,
                read: abi::FuseRange {
                    offset: 0,
                    length: abi::IOMAP_INVAL_TO_EOF,
                },
                write: abi::FuseRange::default(),
            };
            notify(ch, notify_code::IOMAP_INVAL_MAPPINGS, &inval).ok()?;
            self.iomap.invals.fetch_add(1, Ordering::Relaxed);
        }
        let dev = self.iomap.dev.load(Ordering::Acquire);
        let mut m = first;
        let mut pushed = 0usize;
        loop {
            let write = Mapping {
                addr: NULL_ADDR,
                kind: MapType::PureOverwrite,
                flags: 0,
                dev: abi::IOMAP_DEV_NULL,
                ..m
            };
            let up = abi::IomapUpsertMappingsOut {
                nodeid: id,
                attr_ino: id,
                read: io(&m),
                write: io(&write),
            };
            if notify(ch, notify_code::IOMAP_UPSERT_MAPPINGS, &up).is_err() {
                // The kernel may or may not have it: forget the inode on
                // both sides rather than guess.
                mirror.forget_inode(key);
                return None;
            }
            self.iomap.upserts.fetch_add(1, Ordering::Relaxed);
            let _ = mirror.upsert(key, Fork::Read, m);
            pushed += 1;
            let next = m.end();
            if pushed >= limit || next >= eof || inode_bytes(mirror) + NODE_BYTES > share {
                break;
            }
            let Ok((n, _)) = self.backend.iomap_begin(ino, next, eof - next, 0, dev) else {
                break;
            };
            if n.offset != next
                || !matches!(n.kind, MapType::Mapped | MapType::Unwritten | MapType::Hole)
                || kernel_check(&n, next, bs, cfg.maxbytes, false).is_err()
            {
                break;
            }
            // The kernel holds the rest already (an earlier push from
            // further on): a random reader does not re-send the file tail.
            if matches!(mirror.lookup(key, Fork::Read, next), Lookup::Hit(c, _) if c.end() >= n.end())
            {
                break;
            }
            m = n;
        }
        // Only what the kernel still holds counts (the mirror would have
        // dropped the inode had the push overrun the budget).
        matches!(
            mirror.lookup(key, Fork::Read, first.offset),
            Lookup::Hit(..)
        )
        .then_some((first.offset, m.end()))
    }

    fn do_iomap_end(&self, req: &Request<'_>) -> Result<(), i32> {
        self.iomap.end.fetch_add(1, Ordering::Relaxed);
        let args: abi::IomapEndIn = req.arg()?;
        Self::iomap_ino(req, args.attr_ino)?;
        let ino = Self::iomap_ino(req, args.attr_ino)?;
        if args.reserved != 0 || args.opflags & !KNOWN_OPFLAGS != 0 {
            return Err(errno::EINVAL);
        }
        // Reads allocate nothing; a short write leaves the blocks it
        // allocated and did not reach: those past the on-disk size go.
        let written = args.written.max(0) as u64;
        let Some(map) = args.map.mapping() else {
            return Err(errno::EINVAL);
        };
        if args.opflags & op::WRITE == 0 || written >= args.count || map.flags & mflags::NEW == 0 {
            return Ok(());
        }
        let bs = self.iomap_block_size()?;
        let from = args
            .pos
            .saturating_add(written)
            .div_ceil(bs)
            .saturating_mul(bs)
            .max(map.offset);
        if from < map.end() {
            self.backend
                .release_past_size(&req.caller(), ino, from, map.end() - from)
                .map_err(|e| self.fail("iomap_end", ino, e))?;
        }
        Ok(())
    }

    /// The kernel wrote `pos..pos+written` (page-cache writeback or
    /// direct I/O): convert it to written, raise the on-disk size for an
    /// append, answer that size. A failed I/O leaves the range unwritten
    /// (it reads as zeros, never as stale blocks).
    fn do_iomap_ioend(&self, req: &Request<'_>, out: &mut ReplyBuf) -> Result<(), i32> {
        let args: abi::IomapIoendIn = req.arg()?;
        let ino = Self::iomap_ino(req, args.attr_ino)?;
        if args.pad != 0 {
            return Err(errno::EINVAL);
        }
        if self.backend.read_only() {
            return Err(errno::EROFS);
        }
        let bs = self.iomap_block_size()?;
        let (start, end) = (
            args.pos / bs * bs,
            args.pos
                .saturating_add(args.written)
                .div_ceil(bs)
                .saturating_mul(bs),
        );
        // The kernel drops its cached mappings of the range after an
        // ioend.
        if let Some(m) = self.iomap.mirror.get() {
            m.remove(ino, Fork::Read, start, end - start);
        }
        let newsize = if args.error != 0 {
            log::error(format_args!(
                "inode {ino}: the kernel's write of {} bytes at {} failed (errno {}); the range stays unwritten",
                args.written,
                args.pos,
                -args.error
            ));
            self.backend
                .getattr(ino)
                .map_err(|e| self.fail("iomap_ioend", ino, e))?
                .size
        } else {
            let append = args.flags & ioend::APPEND != 0;
            let new_size = append.then(|| args.pos.saturating_add(args.written));
            self.backend
                .io_end(&req.caller(), ino, args.pos, args.written, new_size)
                .map_err(|e| self.fail("iomap_ioend", ino, e))?
        };
        out.push(abi::IomapIoendOut { newsize }.as_bytes());
        Ok(())
    }

    fn do_iomap_config(&self, req: &Request<'_>, out: &mut ReplyBuf) -> Result<(), i32> {
        use abi::iomap_config as f;
        self.iomap.config_calls.fetch_add(1, Ordering::Relaxed);
        let args: abi::IomapConfigIn = req.arg()?;
        if args.zero != 0 || args.padding != [0; 5] {
            return Err(errno::EINVAL);
        }
        let Some(c) = self.backend.iomap_config() else {
            return Err(errno::ENOSYS);
        };
        let mut c = c;
        if args.maxbytes > 0 {
            c.maxbytes = c.maxbytes.min(args.maxbytes as u64);
        }
        let mut o = abi::IomapConfigOut {
            flags: f::ALL & args.flags,
            ..Default::default()
        };
        let sid = self.config.iomap_sid.as_bytes();
        let n = sid.len().min(o.s_id.len() - 1);
        o.s_id[..n].copy_from_slice(&sid[..n]);
        o.s_uuid = c.uuid;
        o.s_uuid_len = 16;
        o.s_blocksize = c.block_size;
        o.s_max_links = c.max_links;
        o.s_time_gran = c.time_gran;
        o.s_time_min = c.time_min;
        o.s_time_max = c.time_max;
        o.s_maxbytes = c.maxbytes.min(i64::MAX as u64) as i64;
        // The kernel's cache: the smaller of its limit and ours.
        let mut cache = self.config.iomap_cache_bytes;
        if args.cache_maxbytes != 0 {
            cache = cache.min(args.cache_maxbytes);
        }
        o.cache_maxbytes = cache;
        let _ = self.iomap.config.set(c);
        if args.flags & f::CACHE_MAXBYTES != 0 && cache > 0 && self.config.iomap_push_window > 0 {
            let _ = self.iomap.mirror.set(MappingCache::new(cache as usize));
        }
        out.push(o.as_bytes());
        Ok(())
    }
}
