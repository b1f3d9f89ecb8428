//! Block and inode allocation: bitmaps, group descriptor counts and flags,
//! the volume's free counters, every checksum they carry, and the kernel's
//! placement policy (docs/transactions.md, ../shared/docs/write-path.md).
//!
//! - Blocks: first fit from a goal (a file's previous block, or its
//!   inode's group as the kernel's `ext4_inode_to_goal_block` picks it),
//!   wrapping around the groups; blocks freed by the running transaction
//!   are skipped (busy); `s_r_blocks_count` and the kernel's 2% extent
//!   reserve kept back from callers not entitled to them.
//! - Inodes: files in their directory's group (its flex group), new
//!   directories spread by a simplified Orlov (`find_group_orlov`).
//! - `BLOCK_UNINIT` / `INODE_UNINIT` groups get their bitmap built when
//!   first used; `bg_itable_unused` follows the highest inode in use.
//!
//! Locking: one allocator lock around each find-and-mark (bitmap, then
//! descriptor); the free counters are atomics read by `statfs` without it.

use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::device::BlockDevice;
use crate::error::{Error, Object, Result};
use crate::features::{incompat, ro_compat};
use crate::group_desc::{bitmap_checksum, GroupDesc, BG_BLOCK_UNINIT, BG_INODE_UNINIT};
use crate::layout;
use crate::numbers::{InodeNo, PhysBlock};
use crate::txn::Handle;
use crate::volume::Volume;
use crate::writable::Cred;

/// Credits an allocation or free of one run inside one group may use:
/// its bitmap block and its descriptor block (the superblock joins at
/// commit outside the handles). Callers budget with it; nothing in the
/// engine reads it yet.
#[allow(dead_code)]
pub const ALLOC_CREDITS: usize = 2;
/// Credits of an inode allocation: inode bitmap, descriptor, and the block
/// bitmap of a `BLOCK_UNINIT` group (initialised with it, as the kernel).
pub const INODE_ALLOC_CREDITS: usize = 3;

/// The flex group size at which the kernel puts regular files' data one
/// group after their flex group's first (`EXT4_FLEX_SIZE_DIR_ALLOC_SCHEME`).
const FLEX_SIZE_DIR_ALLOC_SCHEME: u32 = 4;

const ENOSPC: Error = Error::NoSpace;

/// Allocator state of a volume.
pub(crate) struct Allocator {
    lock: spin::Mutex<()>,
    /// Generation numbers of new inodes.
    generation: AtomicU32,
}

impl Allocator {
    pub(crate) fn new(seed: u32) -> Allocator {
        Allocator {
            lock: spin::Mutex::new(()),
            generation: AtomicU32::new(seed),
        }
    }

    pub(crate) fn next_generation(&self) -> u32 {
        // An odd step visits every value before repeating.
        self.generation
            .fetch_add(0x9E37_79B9, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9)
    }
}

/// Whether bit `i` of `map` is set.
fn test_bit(map: &[u8], i: u32) -> bool {
    map[(i / 8) as usize] & (1 << (i % 8)) != 0
}

/// Set (or clear) bits `from..to` of `map`.
fn set_bits(map: &mut [u8], from: u32, to: u32, on: bool) {
    for i in from..to {
        let (byte, bit) = ((i / 8) as usize, 1u8 << (i % 8));
        if on {
            map[byte] |= bit;
        } else {
            map[byte] &= !bit;
        }
    }
}

/// First clear bit of `map` in `from..to`.
fn find_zero(map: &[u8], from: u32, to: u32) -> Option<u32> {
    let mut i = from;
    while i < to {
        if i.is_multiple_of(8) && i + 8 <= to && map[(i / 8) as usize] == 0xff {
            i += 8;
            continue;
        }
        if !test_bit(map, i) {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Length of the clear run at `at` in `map`, at most `max`, below `to`.
fn zero_run(map: &[u8], at: u32, max: u32, to: u32) -> u32 {
    let mut n = 0;
    while n < max && at + n < to && !test_bit(map, at + n) {
        n += 1;
    }
    n
}

impl<D: BlockDevice> Volume<D> {
    fn group_of_block(&self, b: u64) -> u32 {
        let sb = self.sb();
        ((b.saturating_sub(sb.first_data_block as u64)) / sb.blocks_per_group as u64) as u32
    }

    /// Blocks per cluster (1 without `bigalloc`).
    pub(crate) fn cluster_ratio(&self) -> u64 {
        let sb = self.sb();
        (sb.cluster_size / sb.block_size) as u64
    }

    fn cluster_bits(&self) -> u32 {
        self.cluster_ratio().trailing_zeros()
    }

    /// Clusters in group `g` (the last group may be shorter): the bits of
    /// its block bitmap that describe the filesystem.
    fn clusters_in_group(&self, g: u32) -> u32 {
        let sb = self.sb();
        let total = (sb.blocks_count - sb.first_data_block as u64).div_ceil(self.cluster_ratio());
        (total - g as u64 * sb.clusters_per_group as u64).min(sb.clusters_per_group as u64) as u32
    }

    fn flex_size(&self) -> u32 {
        let sb = self.sb();
        if sb.has_incompat(incompat::FLEX_BG) && sb.log_groups_per_flex < 31 {
            1 << sb.log_groups_per_flex
        } else {
            1
        }
    }

    fn uninit_flags_apply(&self) -> bool {
        let sb = self.sb();
        sb.has_ro_compat(ro_compat::GDT_CSUM) || sb.metadata_csum()
    }

    /// Change descriptor `g` in place: `f` edits the decoded form, which is
    /// stored back with its checksum.
    pub(crate) fn modify_gd(
        &self,
        h: &mut Handle<'_, D>,
        g: u32,
        f: impl FnOnce(&mut GroupDesc),
    ) -> Result<()> {
        let sb = self.sb();
        let dpb = sb.descs_per_block();
        let blk = sb.desc_block(g / dpb);
        let off = ((g % dpb) * sb.desc_size) as usize;
        let size = sb.desc_size as usize;
        h.modify(PhysBlock(blk), |b| {
            let bytes = &mut b[off..off + size];
            let mut gd = GroupDesc::parse(sb, bytes);
            f(&mut gd);
            gd.store(sb, g, bytes);
        })
    }

    /// The block bitmap group `g` would have on disk if it were
    /// initialised now (for a `BLOCK_UNINIT` group): the clusters of its
    /// own and its flex group's metadata (superblock backup, descriptor
    /// blocks wherever `meta_bg` puts them, bitmaps, inode tables), and
    /// the padding past its last cluster.
    fn uninit_block_bitmap(&self, g: u32) -> Result<Vec<u8>> {
        let sb = self.sb();
        let bs = sb.block_size as usize;
        let mut map = vec![0u8; bs];
        let first = sb.group_first_block(g);
        let n = self.clusters_in_group(g) as u64;
        let bits = self.cluster_bits();
        let end = first + (n << bits);
        let mut mark = |s: u64, e: u64| {
            let s = s.max(first);
            let e = e.min(end);
            if s < e {
                let (a, b) = ((s - first) >> bits, (e - 1 - first) >> bits);
                set_bits(&mut map, a as u32, b as u32 + 1, true);
            }
        };
        for (s, e) in layout::super_ranges(sb, g) {
            mark(s, e);
        }
        let flex = self.flex_size();
        let start = g & !(flex - 1);
        for g2 in start..(start + flex).min(sb.group_count) {
            let gd = self.group_desc(g2)?;
            for (s, e) in layout::table_ranges(sb, &gd) {
                mark(s, e);
            }
        }
        set_bits(&mut map, n as u32, bs as u32 * 8, true);
        Ok(map)
    }

    /// The block bitmap of group `g` as bytes (built for `BLOCK_UNINIT`).
    fn block_bitmap(&self, g: u32, gd: &GroupDesc) -> Result<Vec<u8>> {
        if self.uninit_flags_apply() && gd.flags & BG_BLOCK_UNINIT != 0 {
            return self.uninit_block_bitmap(g);
        }
        self.cache_read_with(gd.block_bitmap, |b| b.to_vec())
    }

    /// Write group `g`'s block bitmap from scratch if it is `BLOCK_UNINIT`
    /// and clear the flag (the descriptor's counts are already right).
    fn init_block_bitmap(&self, h: &mut Handle<'_, D>, g: u32, gd: &GroupDesc) -> Result<()> {
        if !(self.uninit_flags_apply() && gd.flags & BG_BLOCK_UNINIT != 0) {
            return Ok(());
        }
        let map = self.uninit_block_bitmap(g)?;
        let sb = self.sb();
        h.create(gd.block_bitmap, |b| b.copy_from_slice(&map))?;
        let csum = bitmap_checksum(sb, &map, sb.clusters_per_group);
        self.modify_gd(h, g, |d| {
            d.flags &= !BG_BLOCK_UNINIT;
            d.block_bitmap_csum = csum;
        })
    }

    /// How many of `want` clusters the caller may take now: free clusters
    /// less the root reserve (unless `cred` may use it) and the kernel's
    /// extent reserve (2% of the clusters, at most 4096, unless the
    /// clusters are for metadata of a tree that must grow). 0 means ENOSPC.
    fn grantable(&self, want: u64, cred: &Cred, metadata: bool) -> u64 {
        let sb = self.sb();
        let free = self.counts().free_blocks.load(Ordering::Acquire);
        let bits = self.cluster_bits();
        let mut keep = 0;
        if !cred.may_use_reserved(sb) {
            keep += sb.r_blocks_count >> bits;
        }
        if !metadata && sb.has_incompat(incompat::EXTENTS) {
            keep += ((sb.blocks_count >> bits) / 50).min(4096);
        }
        free.saturating_sub(keep).min(want)
    }

    /// Allocate up to `want` contiguous blocks, first fit from `goal`:
    /// returns the first block and how many (at least 1), or ENOSPC with
    /// nothing changed. Two credits of `h` per call. Under `bigalloc` whole
    /// clusters are allocated: the run starts at a cluster's first block
    /// and its length is a multiple of the cluster (the caller owns all of
    /// it; file data goes through [`Volume::alloc_clusters`] instead).
    pub fn alloc_blocks(
        &self,
        h: &mut Handle<'_, D>,
        goal: PhysBlock,
        want: u32,
        cred: &Cred,
        metadata: bool,
    ) -> Result<(PhysBlock, u32)> {
        let r = self.cluster_ratio();
        let clusters = (want.max(1) as u64).div_ceil(r) as u32;
        let (start, n) = self.alloc_clusters(h, goal, clusters, cred, metadata, u64::MAX)?;
        Ok((start, (n as u64 * r).min(u32::MAX as u64) as u32))
    }

    /// Allocate up to `want` contiguous clusters (blocks without
    /// `bigalloc`), first fit from the cluster of `goal`, below block
    /// `limit` (block-mapped files address 32-bit blocks only): returns
    /// the first block of the first cluster and how many clusters (at
    /// least 1), or ENOSPC with nothing changed. Two credits of `h`.
    pub fn alloc_clusters(
        &self,
        h: &mut Handle<'_, D>,
        goal: PhysBlock,
        want: u32,
        cred: &Cred,
        metadata: bool,
        limit: u64,
    ) -> Result<(PhysBlock, u32)> {
        let sb = self.sb();
        let _g = self.allocator().lock.lock();
        let want = self.grantable(want.max(1) as u64, cred, metadata) as u32;
        if want == 0 {
            return Err(ENOSPC);
        }
        let top = sb.blocks_count.min(limit);
        if top <= sb.first_data_block as u64 {
            return Err(ENOSPC);
        }
        let goal = goal.0.clamp(sb.first_data_block as u64, top - 1);
        let bits = self.cluster_bits();
        let groups = (self.group_of_block(top - 1) + 1).min(sb.group_count);
        let g0 = self.group_of_block(goal).min(groups - 1);
        // The first run found shorter than `want`: taken only when no run
        // of the whole length turns up within `LOOKAHEAD` more groups, as
        // the kernel's allocator prefers a free extent of the requested
        // length (a file written whole then lies in one piece, not split
        // around a backup superblock).
        const LOOKAHEAD: u32 = 8;
        // A run this long is taken as found even when shorter than `want`
        // (a large fallocate asks for more than any group holds): no
        // search past it.
        const ENOUGH: u32 = 2048;
        let mut short: Option<(u32, GroupDesc, u32, u32)> = None;
        for k in 0..=groups {
            if short.is_some() && k > LOOKAHEAD {
                break;
            }
            let g = (g0 + k) % groups;
            let gd = self.group_desc(g)?;
            if gd.free_blocks == 0 {
                continue;
            }
            let first = sb.group_first_block(g);
            let mut n = self.clusters_in_group(g);
            if first + ((n as u64) << bits) > top {
                n = ((top - first) >> bits) as u32;
            }
            // The goal's own group first from the goal, the rest (and the
            // goal group again, last) from their start.
            let mut from = if k == 0 {
                ((goal.saturating_sub(first)) >> bits) as u32
            } else {
                0
            };
            let map = self.block_bitmap(g, &gd)?;
            while let Some((at, len)) = self.find_run(&map, first, from, n, want) {
                if len == want || len >= ENOUGH {
                    return self.take_clusters(h, g, &gd, at, len);
                }
                if short.is_none() {
                    short = Some((g, gd, at, len));
                }
                from = at + len;
            }
        }
        match short {
            Some((g, gd, at, len)) => self.take_clusters(h, g, &gd, at, len),
            None => Err(ENOSPC),
        }
    }

    /// Mark clusters `at..at+len` of group `g` in use (initialising its
    /// bitmap first if it was never used): the block they start at.
    fn take_clusters(
        &self,
        h: &mut Handle<'_, D>,
        g: u32,
        gd: &GroupDesc,
        at: u32,
        len: u32,
    ) -> Result<(PhysBlock, u32)> {
        self.init_block_bitmap(h, g, gd)?;
        self.mark_clusters(h, g, at, len, true)?;
        let start = self.sb().group_first_block(g) + ((at as u64) << self.cluster_bits());
        // Never read from the device again: a stale cached copy of a
        // block freed earlier must not shadow what is written now.
        self.block_cache()
            .invalidate_range(start, (len as u64) << self.cluster_bits());
        Ok((PhysBlock(start), len))
    }

    /// First free run of clusters in `map` (group starting at block
    /// `first`, `n` clusters) at or after cluster `from`, skipping busy
    /// blocks: `(cluster index, len)`.
    fn find_run(&self, map: &[u8], first: u64, from: u32, n: u32, want: u32) -> Option<(u32, u32)> {
        let bits = self.cluster_bits();
        let abs = |c: u32| first + ((c as u64) << bits);
        let mut i = from;
        while i < n {
            let at = find_zero(map, i, n)?;
            let len = zero_run(map, at, want, n);
            match self.txns().busy_until(abs(at), (len as u64) << bits) {
                None => return Some((at, len)),
                Some(end) => {
                    // Keep the part before the first busy cluster, if any.
                    let mut ok = 0;
                    while ok < len && self.txns().busy_until(abs(at + ok), 1 << bits).is_none() {
                        ok += 1;
                    }
                    if ok > 0 {
                        return Some((at, ok));
                    }
                    let next = (end.saturating_sub(first) >> bits) as u32;
                    i = next.max(at + 1);
                }
            }
        }
        None
    }

    /// Set (`on`) or clear bits `at..at+len` (clusters) of group `g`'s
    /// block bitmap and move the descriptor's and the volume's free counts.
    fn mark_clusters(
        &self,
        h: &mut Handle<'_, D>,
        g: u32,
        at: u32,
        len: u32,
        on: bool,
    ) -> Result<()> {
        let sb = self.sb();
        let gd = self.group_desc(g)?;
        let bad = h.modify(gd.block_bitmap, |b| {
            // Every bit must be in the state we expect: anything else is a
            // damaged bitmap, and nothing is changed.
            if (at..at + len).any(|i| test_bit(b, i) == on) {
                return None;
            }
            set_bits(b, at, at + len, on);
            Some(bitmap_checksum(sb, b, sb.clusters_per_group))
        })?;
        let Some(csum) = bad else {
            return Err(Error::corrupt(
                Object::GroupDesc(g),
                if on {
                    "block bitmap marks a free-counted block in use"
                } else {
                    "freeing a block the block bitmap marks free"
                },
            ));
        };
        self.modify_gd(h, g, |d| {
            if on {
                d.free_blocks = d.free_blocks.saturating_sub(len);
            } else {
                d.free_blocks += len;
            }
            d.block_bitmap_csum = csum;
        })?;
        let c = &self.counts().free_blocks;
        if on {
            c.fetch_sub(len as u64, Ordering::AcqRel);
        } else {
            c.fetch_add(len as u64, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Free `len` blocks at `start` (they may span groups; under
    /// `bigalloc` the clusters holding them): bitmap bits, counts, busy
    /// until the running transaction commits, and dropped from the block
    /// cache. [`ALLOC_CREDITS`] per group spanned.
    pub fn free_blocks(&self, h: &mut Handle<'_, D>, start: PhysBlock, len: u64) -> Result<()> {
        let sb = self.sb();
        if len == 0 {
            return Ok(());
        }
        if !self.blocks_in_fs(start, len) {
            return Err(Error::corrupt(
                Object::Block(start),
                "freeing blocks outside the filesystem",
            ));
        }
        let bits = self.cluster_bits();
        let fdb = sb.first_data_block as u64;
        // Whole clusters: from the one holding `start` to the one holding
        // the last block.
        let last = start.0 + len - 1;
        let start = fdb + ((start.0 - fdb) >> bits << bits);
        let end = (fdb + ((((last - fdb) >> bits) + 1) << bits)).min(sb.blocks_count);
        let _g = self.allocator().lock.lock();
        let mut b = start;
        while b < end {
            let g = self.group_of_block(b);
            let first = sb.group_first_block(g);
            let group_end = first + ((self.clusters_in_group(g) as u64) << bits);
            let n = (end.min(group_end) - b).div_ceil(1 << bits);
            let gd = self.group_desc(g)?;
            self.init_block_bitmap(h, g, &gd)?;
            self.mark_clusters(h, g, ((b - first) >> bits) as u32, n as u32, false)?;
            self.txns().add_busy(b, n << bits);
            b += n << bits;
        }
        // Revoke records for what the journal's live log holds of them
        // (whole clusters), decided before their buffers go.
        self.commit_log()
            .forget(self.block_cache(), start, end - start);
        self.block_cache().invalidate_range(start, end - start);
        self.freed(start, end - start);
        Ok(())
    }

    /// The first free inode (bit index) of group `g` at or after `from`,
    /// read in place (no copy); `INODE_UNINIT` groups are all free.
    fn free_inode_in(&self, gd: &GroupDesc, from: u32) -> Result<Option<u32>> {
        let ipg = self.sb().inodes_per_group;
        if self.uninit_flags_apply() && gd.flags & BG_INODE_UNINIT != 0 {
            return Ok((from < ipg).then_some(from));
        }
        self.cache_read_with(gd.inode_bitmap, |b| find_zero(b, from, ipg))
    }

    /// Allocate an inode for a new object in directory `parent`: `dir`
    /// picks the group as the kernel does for directories. Marks the
    /// bitmap and counts; the caller writes the record. ENOSPC when no
    /// inode is free. [`INODE_ALLOC_CREDITS`] credits.
    pub fn alloc_inode(
        &self,
        h: &mut Handle<'_, D>,
        parent: InodeNo,
        dir: bool,
    ) -> Result<InodeNo> {
        let sb = self.sb();
        let n = sb.group_count;
        let pg = (parent.0.saturating_sub(1)) / sb.inodes_per_group % n;
        let flex = self.flex_size();
        let _g = self.allocator().lock.lock();
        if self.counts().free_inodes.load(Ordering::Acquire) == 0 {
            return Err(ENOSPC);
        }
        // Candidates in order (the kernel's `find_group_other`): with flex
        // groups, the directory's flex group, then every group from the
        // next flex group on; without, groups from the directory's with
        // free inodes and blocks, then any with free inodes. Directories
        // start where `dir_start` says.
        let start = if dir {
            self.dir_start(pg, parent == InodeNo::ROOT)?
        } else if flex > 1 {
            pg & !(flex - 1)
        } else {
            pg
        };
        let first = if flex > 1 { flex.min(n - start) } else { 0 };
        for k in 0..first + 2 * n {
            let (g, strict) = if k < first {
                (start + k, false)
            } else {
                let j = k - first;
                let base = if flex > 1 { start + flex } else { start };
                ((base + j % n) % n, flex == 1 && j < n)
            };
            let gd = self.group_desc(g)?;
            if gd.free_inodes == 0 || (strict && gd.free_blocks == 0) {
                continue;
            }
            // Reserved inodes of group 0 are marked in use by mke2fs; skip
            // them anyway in case the bitmap is damaged there.
            let from = if g == 0 { sb.first_ino - 1 } else { 0 };
            let Some(idx) = self.free_inode_in(&gd, from)? else {
                continue;
            };
            self.mark_inode(h, g, &gd, idx, dir)?;
            return Ok(InodeNo(g * sb.inodes_per_group + idx + 1));
        }
        Err(ENOSPC)
    }

    fn mark_inode(
        &self,
        h: &mut Handle<'_, D>,
        g: u32,
        gd: &GroupDesc,
        idx: u32,
        dir: bool,
    ) -> Result<()> {
        let sb = self.sb();
        let uninit = self.uninit_flags_apply();
        let was_uninit = uninit && gd.flags & BG_INODE_UNINIT != 0;
        let ipg = sb.inodes_per_group;
        let bs = sb.block_size;
        let csum = if was_uninit {
            h.create(gd.inode_bitmap, |b| {
                set_bits(b, ipg, bs * 8, true);
                set_bits(b, idx, idx + 1, true);
                bitmap_checksum(sb, b, ipg)
            })?
        } else {
            h.modify(gd.inode_bitmap, |b| {
                set_bits(b, idx, idx + 1, true);
                bitmap_checksum(sb, b, ipg)
            })?
        };
        // The kernel initialises an uninitialised block bitmap with the
        // group's first inode.
        self.init_block_bitmap(h, g, gd)?;
        self.modify_gd(h, g, |d| {
            d.free_inodes = d.free_inodes.saturating_sub(1);
            if dir {
                d.used_dirs += 1;
            }
            d.flags &= !BG_INODE_UNINIT;
            if uninit {
                let used = ipg - d.itable_unused.min(ipg);
                if idx + 1 > used {
                    d.itable_unused = ipg - (idx + 1);
                }
            }
            d.inode_bitmap_csum = csum;
        })?;
        self.counts().free_inodes.fetch_sub(1, Ordering::AcqRel);
        Ok(())
    }

    /// Free inode `ino` in its bitmap and counts (the record is the
    /// caller's). [`ALLOC_CREDITS`] credits.
    pub fn free_inode(&self, h: &mut Handle<'_, D>, ino: InodeNo, dir: bool) -> Result<()> {
        let sb = self.sb();
        if ino.0 < sb.first_ino || ino.0 > sb.inodes_count {
            return Err(Error::corrupt(
                Object::Inode(ino),
                "freeing a reserved or out-of-range inode",
            ));
        }
        let _g = self.allocator().lock.lock();
        let g = (ino.0 - 1) / sb.inodes_per_group;
        let idx = (ino.0 - 1) % sb.inodes_per_group;
        let gd = self.group_desc(g)?;
        let csum = h.modify(gd.inode_bitmap, |b| {
            if !test_bit(b, idx) {
                return None;
            }
            set_bits(b, idx, idx + 1, false);
            Some(bitmap_checksum(sb, b, sb.inodes_per_group))
        })?;
        let Some(csum) = csum else {
            return Err(Error::corrupt(
                Object::Inode(ino),
                "freeing an inode the inode bitmap marks free",
            ));
        };
        self.modify_gd(h, g, |d| {
            d.free_inodes += 1;
            if dir {
                d.used_dirs = d.used_dirs.saturating_sub(1);
            }
            d.inode_bitmap_csum = csum;
        })?;
        self.counts().free_inodes.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Where a new directory's inode search starts (a simplified
    /// `find_group_orlov`): top-level directories go to the flex group with
    /// the fewest directories among those with at least average free
    /// inodes and blocks; others stay in their parent's flex group while
    /// it has a quarter of the average free, as files do.
    fn dir_start(&self, pg: u32, top: bool) -> Result<u32> {
        let n = self.sb().group_count;
        let flex = self.flex_size();
        let nflex = n.div_ceil(flex);
        let avg_inodes = self.counts().free_inodes.load(Ordering::Relaxed) / nflex as u64;
        let avg_blocks = self.counts().free_blocks.load(Ordering::Relaxed) / nflex as u64;
        let mut best: Option<(u64, u32)> = None;
        for f in 0..nflex {
            let (mut fi, mut fb, mut dirs) = (0u64, 0u64, 0u64);
            for g in f * flex..((f + 1) * flex).min(n) {
                let gd = self.group_desc(g)?;
                fi += gd.free_inodes as u64;
                fb += gd.free_blocks as u64;
                dirs += gd.used_dirs as u64;
            }
            let near = !top && f == pg / flex;
            let div = if near { 4 } else { 1 };
            if fi == 0 || fi < avg_inodes / div || fb < avg_blocks / div {
                continue;
            }
            if near {
                return Ok(f * flex);
            }
            if best.is_none_or(|(d, _)| dirs < d) {
                best = Some((dirs, f));
            }
        }
        Ok(best.map_or(pg / flex, |(_, f)| f) * flex)
    }

    /// Where a file's first data block should go when it has no earlier
    /// block (the kernel's `ext4_inode_to_goal_block` under delalloc): the
    /// start of its inode's group, or with flex groups of 4 or more the
    /// flex group's first group for directories and the next for files.
    pub fn inode_goal(&self, ino: InodeNo, regular: bool) -> PhysBlock {
        let sb = self.sb();
        let mut g = (ino.0.saturating_sub(1)) / sb.inodes_per_group;
        let flex = self.flex_size();
        if flex >= FLEX_SIZE_DIR_ALLOC_SCHEME {
            g &= !(flex - 1);
            if regular && g + 1 < sb.group_count {
                g += 1;
            }
        }
        PhysBlock(sb.group_first_block(g))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_helpers() {
        let mut m = [0u8; 4];
        set_bits(&mut m, 3, 12, true);
        assert_eq!(m, [0xf8, 0x0f, 0, 0]);
        assert_eq!(find_zero(&m, 0, 32), Some(0));
        assert_eq!(find_zero(&m, 3, 32), Some(12));
        assert_eq!(zero_run(&m, 12, 100, 32), 20);
        assert_eq!(zero_run(&m, 12, 5, 32), 5);
        set_bits(&mut m, 4, 6, false);
        assert_eq!(m[0], 0xc8);
        let full = [0xffu8; 4];
        assert_eq!(find_zero(&full, 0, 32), None);
    }
}
