//! The `Volume` API: everything a frontend asks of an ext4 filesystem, keyed
//! by inode number. One `Volume` is shared by all worker threads: it is
//! `Send + Sync`, and its caches synchronise themselves.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use zerocopy::FromBytes;

use crate::allocator::Allocator;
use crate::attr::{Attr, FileType, StatFs, Timestamp};
use crate::block_cache::{BlockCache, CacheStats, Mark};
use crate::device::BlockDevice;
use crate::error::{Error, IoError, Object, Result};
use crate::features::{compat, incompat};
use crate::group_desc::{self, GroupDesc};
use crate::inode::{self, Inode};
use crate::inode_cache::{InodeCache, InodeCacheStats};
use crate::journal::overlay::{Overlaid, Overlay};
use crate::journal::{self, ReplayStats};
use crate::mapping_cache::MappingCache;
use crate::name_index::{NameIndexStats, NameIndexes};
use crate::numbers::{InodeNo, PhysBlock};
use crate::superblock::{RawSuperblock, Superblock, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE};
use crate::txn::{Commit, Txns, WriteHome};

/// A volume's block cache: over its device through the journal replay
/// overlay (empty unless the journal was replayed in memory, which makes
/// the volume read-only).
pub type VolumeCache<D> = BlockCache<Overlaid<D>>;

/// Settings fixed when a volume is opened.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Byte budget of the metadata block cache (fuse2fs' default: 32 MiB).
    pub cache_bytes: usize,
    /// Byte budget of the extent mapping cache.
    pub mapping_cache_bytes: usize,
    /// Byte budget of the decoded-inode cache (lookups and `getattr`s of
    /// recently used inodes skip the checksum and decode). A volume's
    /// caches hold at most the sum of the three budgets.
    pub inode_cache_bytes: usize,
    /// Byte budget of the name indexes of big directories without a hash
    /// tree ([`crate::name_index`]); 0 scans them for every lookup.
    pub name_index_bytes: usize,
    /// Treat checksum mismatches as valid (for salvaging damaged images).
    pub ignore_checksums: bool,
    /// Open read-only even if the device is writable. `false` opens
    /// read-write, or fails naming what prevents it
    /// ([`crate::writable::refusal`]).
    pub read_only: bool,
    /// What a request does with a damaged block it could do without.
    pub on_damage: OnDamage,
    /// What to do with a journal that needs recovery.
    pub recovery: Recovery,
    /// Byte budget of the replay plan of a journal that needs recovery
    /// (32 bytes per logged block); a journal needing more is refused,
    /// naming the options that raise it.
    pub replay_budget: usize,
    /// `statfs` counts every block of the filesystem as its size, as the
    /// kernel's `minixdf` mount option does, instead of leaving out the
    /// metadata overhead (`bsddf`, the default).
    pub minixdf: bool,
    /// The clock for timestamps the engine sets (create, write, setattr
    /// with "now", mount and write times in the superblock).
    pub now: fn() -> Timestamp,
    /// Byte budget of the journal writer's log buffer, where a committing
    /// transaction's blocks are copied while the next one changes them:
    /// with a journal, a transaction holds at most this much (and at most
    /// a quarter of the journal); it commits early rather than grow.
    pub journal_buffer_bytes: usize,
    /// Seconds a transaction may stay uncommitted before
    /// [`Volume::commit_if_due`] commits it (the kernel's `commit=`,
    /// default 5).
    pub commit_interval: u32,
}

/// The default [`OpenOptions::commit_interval`], as the kernel's.
pub const DEFAULT_COMMIT_INTERVAL: u32 = 5;

/// What a request does with a damaged block it could do without (a block
/// of a directory being listed or searched). Either way, what is skipped
/// is reported ([`Volume::take_reports`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnDamage {
    /// Skip it and go on: the salvage view (`ext4-image`).
    #[default]
    Skip,
    /// Fail where the kernel's ext4 fails, skip where it skips (the FUSE
    /// servers): a listing of a directory the kernel reads as a hash tree
    /// (indexed, or one block long, on a `dir_index` filesystem) fails on
    /// a block whose checksum is wrong, a linear one skips it; a lookup
    /// fails on a block it reads whose checksum is wrong and on a damaged
    /// entry bearing the name (not on other damaged entries it passes
    /// over), and a hash tree whose index
    /// is malformed (not merely failing its checksum) is searched
    /// linearly, as the kernel does.
    AsKernel,
}

/// What [`Volume::open`] does with a journal that needs recovery.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Recovery {
    /// Replay it as the kernel does at mount: onto the device when opened
    /// read-write, in memory (the image untouched) when read-only. Damage
    /// that makes the kernel refuse the mount makes the open fail.
    #[default]
    Replay,
    /// Ignore it (the kernel's `norecovery`): the volume reads as the
    /// device holds it, without the journal's newest changes.
    Skip,
}

/// The default [`OpenOptions::replay_budget`]: a journal of a million
/// logged blocks (4 GiB of 4 KiB blocks).
pub const DEFAULT_REPLAY_BUDGET: usize = 32 << 20;

/// How the journal was recovered when the volume was opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replay {
    pub stats: ReplayStats,
    /// In memory (the image untouched) rather than onto the device.
    pub in_memory: bool,
}

/// The system clock where there is one; the epoch otherwise (a `no_std`
/// user supplies its own in [`OpenOptions::now`]).
pub fn system_now() -> Timestamp {
    #[cfg(any(feature = "std", test))]
    {
        if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            return Timestamp {
                sec: d.as_secs() as i64,
                nsec: d.subsec_nanos(),
            };
        }
    }
    Timestamp { sec: 0, nsec: 0 }
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            cache_bytes: 32 << 20,
            mapping_cache_bytes: 16 << 20,
            // About 11,000 inodes of 256 bytes.
            inode_cache_bytes: 4 << 20,
            // About 1,000,000 entries (names of ~20 bytes) at once.
            name_index_bytes: 8 << 20,
            ignore_checksums: false,
            read_only: true,
            on_damage: OnDamage::Skip,
            recovery: Recovery::Replay,
            replay_budget: DEFAULT_REPLAY_BUDGET,
            minixdf: false,
            now: system_now,
            journal_buffer_bytes: journal::writer::DEFAULT_BUFFER_BYTES,
            commit_interval: DEFAULT_COMMIT_INTERVAL,
        }
    }
}

/// One entry handed out by [`Volume::readdir`].
#[derive(Clone, Copy, Debug)]
pub struct DirEntry<'a> {
    pub ino: InodeNo,
    pub name: &'a [u8],
    /// From the entry's `file_type` byte; `None` when the filesystem has no
    /// `filetype` feature (ask `getattr`).
    pub kind: Option<FileType>,
    /// The cookie that resumes the listing just after this entry.
    pub next: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whence {
    Data,
    Hole,
}

/// Something worth telling the user about the volume as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Warning {
    /// The journal holds transactions not yet applied, and recovery was
    /// skipped (`norecovery`): the newest changes are missing.
    NeedsRecovery,
    /// The journal needed recovery and was replayed.
    Replayed(Replay),
    /// The superblock checksum is wrong (and checksums are ignored).
    SuperblockChecksum,
    /// `ro_compat` has bits this engine does not know.
    UnknownRoCompat(u32),
    /// The filesystem was not cleanly unmounted or has recorded errors.
    NotClean,
    /// Directories use case-insensitive names; lookups compare exactly.
    Casefold,
}

impl core::fmt::Display for Warning {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Warning::NeedsRecovery => write!(f, "the journal needs recovery and norecovery was given: the journal is ignored, so the newest changes are missing (and the rest may be inconsistent)"),
            Warning::Replayed(r) if r.stats.transactions == 0 => write!(
                f,
                "the journal was marked as needing recovery but holds no committed transaction: nothing to replay"
            ),
            Warning::Replayed(r) => write!(
                f,
                "the journal needed recovery: replayed {} transaction{} ({} blocks) {}",
                r.stats.transactions,
                if r.stats.transactions == 1 { "" } else { "s" },
                r.stats.blocks,
                if r.in_memory { "in memory; the image itself is unchanged" } else { "onto the device" }
            ),
            Warning::SuperblockChecksum => write!(f, "the superblock checksum does not match (ignored)"),
            Warning::UnknownRoCompat(b) => write!(f, "unknown read-only-compatible features {b:#x}: opened read-only"),
            Warning::NotClean => write!(f, "the filesystem was not cleanly unmounted or has errors recorded; run e2fsck"),
            Warning::Casefold => write!(f, "case-insensitive directories are looked up case-sensitively"),
        }
    }
}

/// Read and parse the superblock of `dev`.
pub(crate) fn read_superblock(dev: &impl BlockDevice) -> Result<Superblock> {
    let mut bytes = vec![0u8; SUPERBLOCK_SIZE];
    if dev.size() < SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE as u64 {
        return Err(Error::NotExt4);
    }
    dev.read_at(SUPERBLOCK_OFFSET, &mut bytes)?;
    let raw = RawSuperblock::read_from_bytes(&bytes).map_err(|_| Error::NotExt4)?;
    Superblock::parse(&raw, &bytes, dev.size())
}

/// Counters summed from the group descriptors at open (as the kernel's
/// ext4 does at mount) and kept up to date by every allocation and free.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) free_blocks: AtomicU64,
    pub(crate) free_inodes: AtomicU64,
    pub(crate) overhead_blocks: u64,
}

/// How many recent damage reports a volume keeps for the frontend to log.
const REPORTS: usize = 64;

pub struct Volume<D: BlockDevice> {
    sb: Superblock,
    /// Damage found while serving requests that did not fail because of it
    /// (a skipped directory block, a fallback from a broken hash tree).
    reports: spin::Mutex<heapless::Deque<Error, REPORTS>>,
    /// Whether `reports` may hold something: frontends ask after every
    /// request, and reports are rare, so the usual answer is one load.
    reports_waiting: AtomicBool,
    /// Over the device through the replay overlay (when the journal was
    /// replayed in memory), so every read sees the recovered filesystem.
    cache: VolumeCache<D>,
    mapcache: MappingCache,
    icache: InodeCache,
    names: NameIndexes,
    opts: OpenOptions,
    /// Refuses writes: opened read-only, or turned so by an abort.
    read_only: AtomicBool,
    /// Opened read-write (stays set after an abort, so close restores the
    /// superblock's state as far as it can).
    rw: bool,
    /// `s_state` as found at open, written back at a clean close.
    mount_state: u16,
    /// Closed cleanly: nothing more to write.
    closed: AtomicBool,
    /// Why the volume turned read-only after opening read-write.
    abort_reason: spin::Mutex<Option<Error>>,
    warnings: Vec<Warning>,
    counts: Counts,
    replay: Option<Replay>,
    txns: Txns,
    commit_log: Box<dyn Commit<D>>,
    alloc: Allocator,
    ilocks: crate::write::InodeLocks,
    orphans: crate::write::orphan::Orphans,
    /// `ro_compat` features the write path turned on (`large_file`), for
    /// the superblock at the next commit.
    added_ro_compat: core::sync::atomic::AtomicU32,
    /// New files that may still become inline (`inline_data`).
    fresh: crate::write::inline::FreshInodes,
    /// Told of every range of blocks freed ([`Volume::set_on_free`]).
    on_free: Option<Box<dyn Fn(u64, u64) + Send + Sync>>,
}

impl<D: BlockDevice> Volume<D> {
    /// Open the filesystem on `dev`. A journal that needs recovery is
    /// replayed as [`OpenOptions::recovery`] says.
    pub fn open(dev: D, opts: &OpenOptions) -> Result<Self> {
        Self::open_with_journal(dev, None, opts)
    }

    /// [`Volume::open`] for a filesystem whose journal is on the external
    /// device `journal` (the kernel's `journal_path=`); it is read only
    /// when the journal needs recovery.
    pub fn open_with_journal(
        dev: D,
        journal: Option<Box<dyn BlockDevice>>,
        opts: &OpenOptions,
    ) -> Result<Self> {
        let sb = read_superblock(&dev)?;
        if !sb.needs_recovery() || opts.recovery == Recovery::Skip {
            return Self::assemble(Overlaid::new(dev, None), opts, None);
        }
        if !opts.read_only && !dev.read_only() {
            // As the kernel at a read-write mount.
            let stats = journal::recover(
                &dev,
                journal.as_deref(),
                journal::Policy::Kernel,
                opts.replay_budget,
            )?
            .map(|r| r.stats)
            .unwrap_or_default();
            let replay = Replay {
                stats,
                in_memory: false,
            };
            return Self::assemble(Overlaid::new(dev, None), opts, Some(replay));
        }
        let plan = {
            let small = OpenOptions {
                cache_bytes: 256 << 10,
                mapping_cache_bytes: 64 << 10,
                inode_cache_bytes: 16 << 10,
                recovery: Recovery::Skip,
                ..opts.clone()
            };
            let raw = Volume::assemble(Overlaid::new(&dev, None), &small, None)?;
            journal::replay::make_plan(&raw, journal.as_deref(), opts.replay_budget)?
        };
        if let Some(p) = plan.problem() {
            return Err(p.into());
        }
        let replay = Replay {
            stats: plan.stats,
            in_memory: true,
        };
        let overlay = Overlay::new(sb.block_size, plan.blocks, journal);
        let vol = Self::assemble(Overlaid::new(dev, Some(overlay)), opts, Some(replay))?;
        if vol.sb.block_size != sb.block_size {
            return Err(Error::corrupt(
                Object::Superblock,
                "the journal's copy of the superblock has another block size",
            ));
        }
        Ok(vol)
    }

    /// Build the volume on `dev` (through the overlay, if any): read and
    /// check the superblock, set up the caches, count.
    pub(crate) fn assemble(
        dev: Overlaid<D>,
        opts: &OpenOptions,
        replay: Option<Replay>,
    ) -> Result<Self> {
        let mut sb = read_superblock(&dev)?;
        let sb_state = sb.state;
        let sb_uuid = sb.uuid;
        let opts_seed = {
            let t = (opts.now)();
            (t.sec as u32) ^ t.nsec
        };
        let mut warnings = Vec::new();
        if !sb.checksum_ok {
            if !opts.ignore_checksums {
                return Err(Error::Checksum {
                    object: Object::Superblock,
                });
            }
            warnings.push(Warning::SuperblockChecksum);
        }
        let unknown_ro = sb.ro_compat & !crate::features::ro_compat::KNOWN;
        if unknown_ro != 0 {
            warnings.push(Warning::UnknownRoCompat(unknown_ro));
        }
        if let Some(r) = replay {
            // The logged copy of the superblock still says so.
            sb.incompat &= !incompat::RECOVER;
            warnings.push(Warning::Replayed(r));
        }
        if sb.needs_recovery() {
            warnings.push(Warning::NeedsRecovery);
        }
        if sb.state & 1 == 0 || sb.state & 2 != 0 {
            warnings.push(Warning::NotClean);
        }
        if sb.has_incompat(incompat::CASEFOLD) {
            warnings.push(Warning::Casefold);
        }
        if !opts.read_only {
            crate::writable::check_writable(&sb, &dev)?;
        }
        let cache = BlockCache::new(dev, sb.block_size, opts.cache_bytes);
        let txns = Txns::new(cache.buffer_count());
        if !opts.read_only && txns.limit() < crate::txn::MIN_LIMIT {
            return Err(Error::Unsupported {
                what: "a read-write volume needs a block cache of at least 256 blocks (raise cache_bytes)",
            });
        }
        let icache = InodeCache::new(opts.inode_cache_bytes, sb.inode_size);
        let mut vol = Volume {
            sb,
            reports: spin::Mutex::new(heapless::Deque::new()),
            reports_waiting: AtomicBool::new(false),
            cache,
            mapcache: MappingCache::new(opts.mapping_cache_bytes),
            icache,
            names: NameIndexes::new(opts.name_index_bytes),
            opts: opts.clone(),
            read_only: AtomicBool::new(true),
            rw: !opts.read_only,
            mount_state: sb_state,
            closed: AtomicBool::new(false),
            abort_reason: spin::Mutex::new(None),
            warnings,
            counts: Counts::default(),
            replay,
            txns,
            commit_log: Box::new(WriteHome),
            alloc: Allocator::new(crate::checksum::crc32c(opts_seed, &sb_uuid)),
            ilocks: crate::write::InodeLocks::new(),
            orphans: Default::default(),
            added_ro_compat: core::sync::atomic::AtomicU32::new(0),
            fresh: crate::write::inline::FreshInodes::new(),
            on_free: None,
        };
        vol.counts = vol.count()?;
        if vol.rw {
            vol.read_only.store(false, Ordering::Release);
            // The journal is found and checked before the mount writes
            // anything; the mount itself goes home directly (as the
            // kernel's superblock writes do), everything after it through
            // the journal — the cleanup of orphans a crash left first, as
            // the kernel's mount does.
            let journal = if vol.sb.has_compat(compat::HAS_JOURNAL) {
                match journal::writer::JournalWriter::open(&vol, opts.journal_buffer_bytes) {
                    Ok(j) => Some(j),
                    Err(e) => {
                        vol.closed.store(true, Ordering::Release);
                        return Err(e);
                    }
                }
            } else {
                None
            };
            let r = vol
                .orphan_setup()
                .and_then(|_| vol.mount_rw(journal.is_some()));
            if let Err(e) = r {
                vol.closed.store(true, Ordering::Release);
                return Err(e);
            }
            if let Some(j) = journal {
                // The superblock joins every commit beside the credits.
                vol.txns.cap_limit(j.max_blocks() - 1);
                vol.commit_log = Box::new(j);
            }
            if let Err(e) = vol.orphan_cleanup() {
                vol.closed.store(true, Ordering::Release);
                return Err(e);
            }
        }
        Ok(vol)
    }

    pub fn sb(&self) -> &Superblock {
        &self.sb
    }
    /// The on-disk superblock as the volume sees it now (through the block
    /// cache and a journal replayed in memory): every field, for `info`.
    pub fn raw_superblock(&self) -> Result<RawSuperblock> {
        let bs = self.sb.block_size as u64;
        let off = (SUPERBLOCK_OFFSET % bs) as usize;
        self.cache_read_with(PhysBlock(SUPERBLOCK_OFFSET / bs), |b| {
            RawSuperblock::read_from_bytes(&b[off..off + SUPERBLOCK_SIZE])
                .map_err(|_| Error::NotExt4)
        })?
    }
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }
    pub fn read_only(&self) -> bool {
        self.read_only.load(Ordering::Acquire)
    }
    /// Whether the volume was opened read-write (it may have turned
    /// read-only since, after an error: [`Volume::abort_reason`]).
    pub fn is_rw_mounted(&self) -> bool {
        self.rw
    }
    /// The error that turned a read-write volume read-only, if any.
    pub fn abort_reason(&self) -> Option<Error> {
        self.abort_reason.lock().clone()
    }
    pub(crate) fn went_read_only(&self, why: Error) {
        self.read_only.store(true, Ordering::Release);
        self.icache.clear();
        self.mapcache.forget_all();
        let mut r = self.abort_reason.lock();
        if r.is_none() {
            *r = Some(why);
        }
    }
    /// Read-only after a clean close (no reason to report).
    pub(crate) fn went_read_only_quietly(&self) {
        self.read_only.store(true, Ordering::Release);
    }
    pub(crate) fn txns(&self) -> &Txns {
        &self.txns
    }
    pub(crate) fn commit_log(&self) -> &dyn Commit<D> {
        &*self.commit_log
    }
    /// Replace how transactions commit (the journal writer installs
    /// itself here, before the first write).
    pub fn set_commit(&mut self, c: Box<dyn Commit<D>>) {
        self.commit_log = c;
    }
    pub(crate) fn block_cache(&self) -> &VolumeCache<D> {
        &self.cache
    }
    pub(crate) fn counts(&self) -> &Counts {
        &self.counts
    }
    pub(crate) fn inode_locks(&self) -> &crate::write::InodeLocks {
        &self.ilocks
    }
    pub(crate) fn allocator(&self) -> &Allocator {
        &self.alloc
    }
    pub(crate) fn orphans(&self) -> &crate::write::orphan::Orphans {
        &self.orphans
    }
    pub(crate) fn orphans_mut(&mut self) -> &mut crate::write::orphan::Orphans {
        &mut self.orphans
    }
    pub(crate) fn added_ro_compat(&self) -> &core::sync::atomic::AtomicU32 {
        &self.added_ro_compat
    }
    pub(crate) fn fresh_inodes(&self) -> &crate::write::inline::FreshInodes {
        &self.fresh
    }
    pub(crate) fn mount_state(&self) -> u16 {
        self.mount_state
    }
    pub(crate) fn mark_closed(&self) -> bool {
        self.closed.swap(true, Ordering::AcqRel)
    }
    /// The time now, from [`OpenOptions::now`].
    pub fn now(&self) -> Timestamp {
        (self.opts.now)()
    }
    /// The device as it is on disk. A journal replayed in memory is not
    /// in it: read through [`Volume::read_device`] to see what the volume
    /// sees, and ask [`Volume::replayed_in`] before reading file data
    /// from the device any other way.
    pub fn device(&self) -> &D {
        self.cache.device().inner()
    }
    /// Read `buf.len()` bytes of the device at byte `offset` as the volume
    /// sees them: blocks replayed in memory read as their logged copies.
    pub fn read_device(&self, offset: u64, buf: &mut [u8]) -> core::result::Result<(), IoError> {
        self.cache.device().read_at(offset, buf)
    }
    /// How the journal was recovered at open, if it needed recovery and
    /// was replayed.
    pub fn replay(&self) -> Option<&Replay> {
        self.replay.as_ref()
    }
    /// Whether any of `count` blocks from `first` reads from the journal
    /// replayed in memory rather than from the device (a reader that goes
    /// to the device itself must then go through the volume).
    pub fn replayed_in(&self, first: PhysBlock, count: u64) -> bool {
        self.cache
            .device()
            .overlay()
            .is_some_and(|o| o.covers(first, count))
    }
    /// Blocks replayed in memory (0 when nothing is).
    pub fn replayed_blocks(&self) -> usize {
        self.cache.device().overlay().map_or(0, |o| o.len())
    }
    /// The extent mapping cache (what the kernel may mirror under iomap).
    pub fn mapcache(&self) -> &MappingCache {
        &self.mapcache
    }
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }
    pub fn inode_cache_stats(&self) -> InodeCacheStats {
        self.icache.stats()
    }
    pub fn name_index_stats(&self) -> NameIndexStats {
        self.names.stats()
    }
    /// The name indexes of big directories; whoever changes a directory's
    /// entries calls [`NameIndexes::forget`] on it.
    pub fn name_indexes(&self) -> &NameIndexes {
        &self.names
    }
    /// Forget the cached decoded copy of inode `ino`: whoever changes an
    /// inode record calls this once the change is in the block cache.
    pub fn invalidate_inode(&self, ino: InodeNo) {
        self.icache.invalidate(ino);
        // A directory that grew, shrank, was deleted or whose number was
        // reused: its name index no longer describes it.
        self.names.forget(ino);
    }
    /// Hook: `f(start, len)` is called with every range of blocks freed,
    /// as it is freed (a FUSE iomap server tells the kernel to drop them
    /// from the block device's cache).
    pub fn set_on_free(&mut self, f: Box<dyn Fn(u64, u64) + Send + Sync>) {
        self.on_free = Some(f);
    }

    pub(crate) fn freed(&self, start: u64, len: u64) {
        if let Some(f) = &self.on_free {
            f(start, len);
        }
    }

    pub fn options(&self) -> &OpenOptions {
        &self.opts
    }
    /// Record damage that did not fail the current request; the oldest
    /// report is dropped when the queue is full.
    pub(crate) fn report(&self, e: Error) {
        let mut q = self.reports.lock();
        if q.is_full() {
            q.pop_front();
        }
        let _ = q.push_back(e);
        self.reports_waiting.store(true, Ordering::Release);
    }

    /// Take the damage reports gathered since the last call (to log them).
    pub fn take_reports(&self) -> Vec<Error> {
        if !self.reports_waiting.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut q = self.reports.lock();
        // Cleared under the lock: a report pushed after this sets it again.
        self.reports_waiting.store(false, Ordering::Relaxed);
        let mut out = Vec::with_capacity(q.len());
        while let Some(e) = q.pop_front() {
            out.push(e);
        }
        out
    }

    pub(crate) fn check_csums(&self) -> bool {
        !self.opts.ignore_checksums
    }

    /// Whether requests fail on damage as the kernel does
    /// ([`OnDamage::AsKernel`]).
    pub(crate) fn fails_as_kernel(&self) -> bool {
        self.opts.on_damage == OnDamage::AsKernel
    }

    /// Run `f` on metadata block `blk` through the block cache.
    pub(crate) fn cache_read_with<R>(
        &self,
        blk: PhysBlock,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        self.cache_read_marked(blk, |b, _| f(b))
    }

    /// [`Volume::cache_read_with`], with the buffer's check [`Mark`].
    pub(crate) fn cache_read_marked<R>(
        &self,
        blk: PhysBlock,
        f: impl FnOnce(&[u8], &Mark) -> R,
    ) -> Result<R> {
        if blk.0 >= self.sb.blocks_count {
            return Err(Error::corrupt(
                Object::Block(blk),
                "block number is past the end of the filesystem",
            ));
        }
        Ok(self.cache.read_marked(blk.0, f)?)
    }

    /// Read and check group descriptor `g`. Only a `metadata_csum`
    /// checksum is enforced: a wrong `uninit_bg` crc16 is what `tune2fs`
    /// leaves behind when it turns the feature on, and both the kernel
    /// (read-only) and `e2fsck` accept it.
    pub fn group_desc(&self, g: u32) -> Result<GroupDesc> {
        let (gd, ok) = self.group_desc_unchecked(g)?;
        if !ok && self.check_csums() && self.sb.metadata_csum() {
            return Err(Error::Checksum {
                object: Object::GroupDesc(g),
            });
        }
        gd.validate(&self.sb, g)?;
        Ok(gd)
    }

    /// Group descriptor `g` and whether its checksum matches, unvalidated.
    pub fn group_desc_unchecked(&self, g: u32) -> Result<(GroupDesc, bool)> {
        if g >= self.sb.group_count {
            return Err(Error::corrupt(
                Object::GroupDesc(g),
                "group number out of range",
            ));
        }
        let dpb = self.sb.descs_per_block();
        let blk = PhysBlock(self.sb.desc_block(g / dpb));
        let off = ((g % dpb) * self.sb.desc_size) as usize;
        let size = self.sb.desc_size as usize;
        self.cache_read_with(blk, |b| {
            let bytes = &b[off..off + size];
            (
                GroupDesc::parse(&self.sb, bytes),
                group_desc::checksum_ok(&self.sb, g, bytes),
            )
        })
    }

    /// Where inode `ino`'s record lives: (block, byte offset in block).
    pub fn inode_location(&self, ino: InodeNo) -> Result<(PhysBlock, usize)> {
        if ino.0 == 0 || ino.0 > self.sb.inodes_count {
            return Err(Error::corrupt(
                Object::Inode(ino),
                "inode number out of range",
            ));
        }
        let g = (ino.0 - 1) / self.sb.inodes_per_group;
        let idx = ((ino.0 - 1) % self.sb.inodes_per_group) as u64;
        let gd = self.group_desc(g)?;
        let byte = idx * self.sb.inode_size as u64;
        let bs = self.sb.block_size as u64;
        Ok((gd.inode_table + byte / bs, (byte % bs) as usize))
    }

    /// The raw on-disk record of inode `ino`.
    pub fn inode_bytes(&self, ino: InodeNo) -> Result<Vec<u8>> {
        let (blk, off) = self.inode_location(ino)?;
        let size = self.sb.inode_size as usize;
        self.cache_read_with(blk, |b| b[off..off + size].to_vec())
    }

    /// Read, check and decode inode `ino`, from the block cache (never
    /// from the inode cache: `fsck` verifies what is on disk).
    pub fn inode(&self, ino: InodeNo) -> Result<Inode> {
        let (blk, off) = self.inode_location(ino)?;
        let size = self.sb.inode_size as usize;
        self.cache_read_with(blk, |b| {
            let bytes = &b[off..off + size];
            if self.check_csums() && !inode::checksum_ok(&self.sb, ino, bytes) {
                return Err(Error::Checksum {
                    object: Object::Inode(ino),
                });
            }
            Inode::parse(&self.sb, ino, bytes)
        })?
    }

    /// An inode that a directory entry or the caller refers to: it must be
    /// in use. Through the inode cache, which keeps only inodes that passed
    /// [`Volume::check_live`], so a hit needs no checks and a damaged inode
    /// fails the same way on every request.
    pub(crate) fn live_inode(&self, ino: InodeNo) -> Result<Arc<Inode>> {
        self.icache.get_or_load(ino, || {
            let inode = self.inode(ino)?;
            self.check_live(&inode)?;
            Ok(inode)
        })
    }

    /// What [`Volume::live_inode`] requires of a decoded inode.
    fn check_live(&self, inode: &Inode) -> Result<()> {
        let ino = inode.ino;
        if inode.links_count == 0 && inode.mode == 0 {
            return Err(Error::corrupt(
                Object::Inode(ino),
                "inode is not in use (deleted)",
            ));
        }
        // No links: deleted (ESTALE, as the kernel's iget answers), unless
        // a frontend still holds it open and the engine keeps it.
        if inode.links_count == 0 && !self.orphans().is_kept(ino) {
            return Err(Error::Stale);
        }
        let Some(kind) = inode.kind else {
            return Err(Error::corrupt(
                Object::Inode(ino),
                "unknown file type in i_mode",
            ));
        };
        self.check_block_root(inode, kind)
    }

    /// Whether `i_block` of `inode` (of type `kind`) holds a block map
    /// (extent root or block pointers): not inline data, device numbers or
    /// a fast symlink's target.
    pub(crate) fn has_block_map(&self, inode: &Inode, kind: FileType) -> bool {
        if inode.has_flag(crate::inode::flags::INLINE_DATA) {
            return false;
        }
        match kind {
            FileType::Regular | FileType::Directory => true,
            FileType::Symlink => !self.is_fast_symlink(inode),
            _ => false,
        }
    }

    /// Check the start of the block map held in `i_block`, as the kernel
    /// does when it loads an inode: a damaged root fails every operation on
    /// the inode, `stat` included.
    fn check_block_root(&self, inode: &Inode, kind: FileType) -> Result<()> {
        if !self.has_block_map(inode, kind) {
            return Ok(());
        }
        if inode.has_flag(crate::inode::flags::EXTENTS) {
            crate::extent::Node::parse(&inode.block, None, Object::Inode(inode.ino))?;
            return Ok(());
        }
        for i in 0..15 {
            let b = PhysBlock(inode.block_word(i) as u64);
            if b.0 != 0 && !self.blocks_in_fs(b, 1) {
                return Err(Error::corrupt(
                    Object::Inode(inode.ino),
                    "block pointer in i_block points outside the filesystem",
                ));
            }
        }
        Ok(())
    }

    pub fn getattr(&self, ino: InodeNo) -> Result<Attr> {
        self.live_inode(ino)?.attr(&self.sb)
    }

    pub fn statfs(&self) -> StatFs {
        let sb = &self.sb;
        let c = &self.counts;
        let cluster_ratio = (sb.cluster_size / sb.block_size) as u64;
        let free = c.free_blocks.load(Ordering::Relaxed) * cluster_ratio;
        // The kernel keeps 2% (at most 4096 clusters) back for extent-tree
        // growth on extent filesystems, on top of the root reserve.
        let resv = if sb.has_incompat(incompat::EXTENTS) {
            ((sb.blocks_count / cluster_ratio) / 50).min(4096) * cluster_ratio
        } else {
            0
        };
        let fsid_words =
            |i: usize| u64::from_le_bytes(sb.uuid[i..i + 8].try_into().unwrap_or([0; 8]));
        StatFs {
            block_size: sb.block_size,
            blocks: if self.opts.minixdf {
                sb.blocks_count
            } else {
                sb.blocks_count.saturating_sub(c.overhead_blocks)
            },
            blocks_free: free,
            blocks_available: free.saturating_sub(sb.r_blocks_count + resv),
            inodes: sb.inodes_count as u64,
            inodes_free: c.free_inodes.load(Ordering::Relaxed),
            name_max: 255,
            fsid: fsid_words(0) ^ fsid_words(8),
        }
    }

    /// Sum the group descriptors' free counts and the metadata overhead,
    /// as the kernel's ext4 does at mount. A bad descriptor counts as zero.
    fn count(&self) -> Result<Counts> {
        let sb = &self.sb;
        let (mut free_blocks, mut free_inodes) = (0u64, 0u64);
        let itb =
            (sb.inodes_per_group as u64 * sb.inode_size as u64).div_ceil(sb.block_size as u64);
        let cluster_ratio = (sb.cluster_size / sb.block_size) as u64;
        let mut overhead_clusters = (sb.first_data_block as u64).div_ceil(cluster_ratio);
        for g in 0..sb.group_count {
            if let Ok((gd, _)) = self.group_desc_unchecked(g) {
                free_blocks += gd.free_blocks as u64;
                free_inodes += gd.free_inodes as u64;
            }
            overhead_clusters += sb.group_has_super(g) as u64 + self.group_desc_blocks(g) + itb + 2;
        }
        if sb.overhead_clusters != 0 {
            overhead_clusters = sb.overhead_clusters as u64;
        } else if sb.has_compat(compat::HAS_JOURNAL) && sb.journal_inum != 0 {
            if let Ok(j) = self.inode(InodeNo(sb.journal_inum)) {
                overhead_clusters += (j.size >> (sb.log_block_size + 10)).div_ceil(cluster_ratio);
            }
        }
        Ok(Counts {
            free_blocks: AtomicU64::new(free_blocks),
            free_inodes: AtomicU64::new(free_inodes),
            overhead_blocks: overhead_clusters * cluster_ratio,
        })
    }

    /// Descriptor-table blocks stored in group `g`, as the kernel counts
    /// them for `statfs` (reserved GDT blocks are not included).
    fn group_desc_blocks(&self, g: u32) -> u64 {
        let sb = &self.sb;
        let dpb = sb.descs_per_block();
        let meta_group = g / dpb;
        if !sb.has_incompat(incompat::META_BG) || meta_group < sb.first_meta_bg {
            if !sb.group_has_super(g) {
                return 0;
            }
            return if sb.has_incompat(incompat::META_BG) {
                sb.first_meta_bg as u64
            } else {
                sb.desc_blocks() as u64
            };
        }
        let first = meta_group * dpb;
        (g == first || g == first + 1 || g == first + dpb - 1) as u64
    }
}

/// A read-write volume dropped without [`Volume::close`] is closed here,
/// best effort (errors cannot be reported from a drop: call `close`).
impl<D: BlockDevice> Drop for Volume<D> {
    fn drop(&mut self) {
        let _ = self.close();
    }
}
