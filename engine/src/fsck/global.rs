//! The global half of the check, what `e2fsck` does in its passes 1 to 5
//! beyond single objects: every cluster claimed once (by metadata, an
//! inode's mapping or an xattr block), the block bitmaps and free counts
//! equal to what is claimed, each inode's link count equal to the entries
//! naming it, every directory linked once, its `..` naming that parent and
//! its parent chain reaching the root.
//!
//! Memory is bounded by a budget fixed before the walk: per inode 13 bytes,
//! per cluster 2 bits. When the filesystem needs more than the budget, the
//! inode numbers and the clusters are cut into windows of whole groups and
//! the walk is repeated once per window (later walks report nothing new,
//! they only gather). Directory connectivity (loops) is judged only when
//! every inode fits in one window.

use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use super::tally::{flag, Bits, Clusters, Dups, Inodes, Owner, Tally, INODE_COST};
use super::{CheckOptions, CheckSummary, ProblemSink, ROOT_INO};
use crate::device::BlockDevice;
use crate::error::{Error, Object};
use crate::features::{compat, incompat, ro_compat};
use crate::inode::{flags, Inode};
use crate::layout::{self, block_of, clusters_of, group_clusters, super_ranges, table_ranges};
use crate::numbers::{InodeNo, PhysBlock};
use crate::superblock::Superblock;
use crate::volume::Volume;

/// Default byte budget of the global checks' state (one window holds
/// about 4 million inodes and 1 TiB of 4 KiB blocks).
pub const DEFAULT_MEMORY: usize = 64 << 20;

const RELAXED: Ordering = Ordering::Relaxed;

/// Per group, at most this many blocks or inodes are named for each kind
/// of bitmap difference; a summary line stands for the rest.
const LIST: u32 = 8;

/// Link counts above this mean "many" for a directory (`dir_nlink`).
const LINK_MAX: u16 = 65000;

/// The walk's context: where it records what it finds.
pub(super) struct WalkState<'t> {
    pub tally: &'t Tally,
    pub first: bool,
    /// Inodes that no directory names (journal, quota, orphan file).
    hidden: [u32; 5],
    shared_blocks: bool,
    sb: &'t Superblock,
    dups: &'t Dups,
    /// In the owners pass: the multiply-claimed clusters, sorted.
    owners: Option<&'t [u64]>,
    /// `s_prealloc_dir_blocks`: how far a directory may map past its size.
    pub prealloc_dir_blocks: u64,
}

impl WalkState<'_> {
    pub(super) fn hidden(&self, ino: u32, inode_flags: u32) -> bool {
        (ino < self.sb.first_ino && ino != ROOT_INO)
            || self.hidden.contains(&ino)
            // As e2fsck (pass 4, check_ea_inode), whether or not the
            // filesystem has the ea_inode feature.
            || inode_flags & flags::EA_INODE != 0
    }

    pub(super) fn claims(&self, ino: u32) -> BlockClaims<'_> {
        self.claims_in(ino, self.tally.clusters.as_ref(), self.owners)
    }

    /// A claimer that claims nothing (the walk only checks).
    pub(super) fn no_claims(&self) -> BlockClaims<'_> {
        self.claims_in(0, None, None)
    }

    fn claims_in<'a>(
        &'a self,
        ino: u32,
        c: Option<&'a Clusters>,
        owners: Option<&'a [u64]>,
    ) -> BlockClaims<'a> {
        BlockClaims {
            ino,
            list: self.dups,
            owners,
            c,
            sb: self.sb,
            dup_ok: self.shared_blocks,
            bigalloc: self.sb.cluster_size > self.sb.block_size,
            recent: [u64::MAX; 8],
            pos: 0,
            count: 0,
            last: None,
            last_init: None,
            dups: 0,
            first_dup: None,
        }
    }
}

/// Claims one inode's blocks, noting those something else claimed first.
pub(super) struct BlockClaims<'t> {
    ino: u32,
    list: &'t Dups,
    owners: Option<&'t [u64]>,
    c: Option<&'t Clusters>,
    sb: &'t Superblock,
    dup_ok: bool,
    bigalloc: bool,
    /// Clusters this inode claimed last: under bigalloc neighbouring
    /// extents of one file share a cluster, which is no double claim.
    recent: [u64; 8],
    pos: usize,
    /// Clusters claimed (each cluster a file shares with itself once).
    count: u64,
    /// Last logical block mapped, and last one mapped initialized.
    pub last: Option<u64>,
    pub last_init: Option<u64>,
    dups: u64,
    first_dup: Option<u64>,
}

impl BlockClaims<'_> {
    pub(super) fn blocks(&mut self, start: PhysBlock, len: u64) {
        let Some((mut a, mut b)) = clusters_of(self.sb, start.0, start.0.saturating_add(len))
        else {
            return;
        };
        if self.bigalloc {
            let (a0, b0) = (a, b);
            if self.recent.contains(&a) {
                a += 1;
            }
            if b > a && self.recent.contains(&(b - 1)) {
                b -= 1;
            }
            for x in [a0, b0 - 1] {
                self.recent[self.pos] = x;
                self.pos = (self.pos + 1) % self.recent.len();
            }
            if a >= b {
                return;
            }
        }
        self.count += b - a;
        self.own(a, b);
        let Some(c) = self.c else { return };
        let (n, first) = c.claimed.set_range(a, b);
        if n > 0 && !self.dup_ok {
            self.dups += n;
            if let Some(x) = first {
                // Named with all its owners by the owners pass, unless
                // too many are multiply claimed.
                if !self.dups_list_note(x) && self.first_dup.is_none() {
                    self.first_dup = Some(block_of(self.sb, x));
                }
            }
        }
    }

    fn dups_list_note(&self, c: u64) -> bool {
        self.list.note(c)
    }

    /// In the owners pass: record this inode as an owner of the
    /// multiply-claimed clusters in `a..b`.
    fn own(&self, a: u64, b: u64) {
        if let Some(list) = self.owners {
            let from = list.partition_point(|&x| x < a);
            for &x in list[from..].iter().take_while(|&&x| x < b) {
                self.list.owner(x, Owner::Inode(self.ino));
            }
        }
    }

    pub(super) fn xattr(&mut self, blk: PhysBlock) {
        // Every inode sharing an xattr block is charged for it.
        self.count += 1;
        let Some(x) = layout::cluster_of(self.sb, blk.0) else {
            return;
        };
        self.own(x, x + 1);
        if let Some(c) = self.c {
            c.xattr.set_range(x, x + 1);
        }
    }

    /// Logical block `lblk` is mapped (`init`: and not unwritten).
    pub(super) fn mapped(&mut self, lblk: u64, init: bool) {
        self.last = self.last.max(Some(lblk));
        if init {
            self.last_init = self.last_init.max(Some(lblk));
        }
    }

    /// `i_blocks` (in 512-byte units) the claimed clusters account for.
    pub(super) fn sectors(&self) -> u64 {
        self.count * (self.sb.cluster_size as u64 / 512)
    }

    /// Report the inode's multiply-claimed blocks, if any.
    pub(super) fn finish(self, ino: u32, sink: &mut ProblemSink<'_>) {
        if self.dups > 0 {
            sink.put(Error::corrupt(
                Object::Inode(InodeNo(ino)),
                "maps blocks that another inode or filesystem metadata also claims",
            ));
        }
        if let Some(b) = self.first_dup {
            sink.put(Error::corrupt(
                Object::Block(PhysBlock(b)),
                "claimed more than once (the first such block of the inode above)",
            ));
        }
    }
}

/// Groups `a..b`.
type Groups = (u32, u32);

/// How the state is cut into windows of whole groups.
#[derive(Clone, Copy, Debug)]
struct Plan {
    inode_groups: u32,
    cluster_groups: u32,
    passes: u32,
}

fn plan(sb: &Superblock, budget: u64) -> Plan {
    let g = sb.group_count as u64;
    let per_i = sb.inodes_per_group as u64 * INODE_COST;
    let per_c = 2 * Bits::cost(sb.clusters_per_group as u64);
    let (bi, bc) = (g * per_i, g * per_c);
    let (wi, wc) = if bi + bc <= budget {
        (g, g)
    } else if bi <= budget / 2 {
        (g, (budget - bi) / per_c)
    } else if bc <= budget / 2 {
        ((budget - bc) / per_i, g)
    } else {
        (budget / 2 / per_i, budget / 2 / per_c)
    };
    // At least one group of each per window, whatever the budget.
    let (wi, wc) = (wi.clamp(1, g.max(1)), wc.clamp(1, g.max(1)));
    let passes = g.div_ceil(wi).max(g.div_ceil(wc)).max(1);
    Plan {
        inode_groups: wi as u32,
        cluster_groups: wc as u32,
        passes: passes as u32,
    }
}

/// A check in progress. `begin_pass`, then `check_group` for every group
/// (from any number of threads), then `end_pass`, until `begin_pass`
/// answers `None`.
pub struct Checker<'v, D: BlockDevice> {
    vol: &'v Volume<D>,
    opts: CheckOptions,
    plan: Plan,
    /// The pass under way (or next to begin).
    pass: u32,
    started: bool,
    tally: Tally,
    hidden: [u32; 5],
    prealloc_dir_blocks: u64,
    dups: Dups,
    /// The owners pass (after the others, when blocks are multiply
    /// claimed): the clusters whose owners it looks for.
    owners: Option<Vec<u64>>,
}

impl<'v, D: BlockDevice> Checker<'v, D> {
    /// A check of `vol` whose global state never exceeds `memory_bytes`
    /// (beyond one group's worth, the least a window holds).
    pub fn new(vol: &'v Volume<D>, opts: &CheckOptions, memory_bytes: usize) -> Self {
        let sb = vol.sb();
        let mut hidden = [0u32; 5];
        hidden[0] = sb.journal_inum;
        hidden[1..4].copy_from_slice(&sb.quota_inums);
        hidden[4] = sb.orphan_file_inum;
        let prealloc_dir_blocks = sb.prealloc_dir_blocks as u64;
        Checker {
            vol,
            opts: *opts,
            plan: plan(sb, memory_bytes as u64),
            pass: 0,
            started: false,
            tally: Tally::empty(),
            hidden,
            prealloc_dir_blocks,
            dups: Dups::new(),
            owners: None,
        }
    }

    /// Walks of the whole filesystem this check needs.
    pub fn passes(&self) -> u32 {
        let dups = self.owners.is_some() || !self.dups.list().is_empty();
        self.plan.passes + dups as u32
    }

    /// The current pass (0-based).
    pub fn pass(&self) -> u32 {
        self.pass
    }

    /// Bytes of global state a pass holds at most.
    pub fn memory_bytes(&self) -> u64 {
        let sb = self.vol.sb();
        self.plan.inode_groups as u64 * sb.inodes_per_group as u64 * INODE_COST
            + self.plan.cluster_groups as u64 * 2 * Bits::cost(sb.clusters_per_group as u64)
    }

    /// The inode and cluster windows of `pass`, as group ranges.
    fn windows(&self, pass: u32) -> (Option<Groups>, Option<Groups>) {
        let g = self.vol.sb().group_count;
        let win = |per: u32| {
            let a = pass.checked_mul(per).filter(|&a| a < g)?;
            Some((a, a.saturating_add(per).min(g)))
        };
        (win(self.plan.inode_groups), win(self.plan.cluster_groups))
    }

    /// Start the next pass: allocate its windows and claim the metadata
    /// that lies in them. `None` once every pass is done.
    pub fn begin_pass(&mut self, problem: &mut dyn FnMut(&Error)) -> Option<CheckSummary> {
        if self.started {
            self.pass += 1;
        }
        self.started = true;
        if self.pass >= self.plan.passes {
            return self.begin_owners_pass();
        }
        let sb = self.vol.sb();
        let (iw, cw) = self.windows(self.pass);
        let mut t = Tally::empty();
        // Flags learnt so far carry over: a walk that lost something in
        // pass 0 loses it again.
        t.claims_incomplete = self.tally.claims_incomplete.load(RELAXED).into();
        t.dirs_incomplete = self.tally.dirs_incomplete.load(RELAXED).into();
        drop(core::mem::replace(&mut self.tally, Tally::empty()));
        t.inodes = iw.map(|(a, b)| {
            let ipg = sb.inodes_per_group;
            Inodes::new(a * ipg + 1, (b - a) * ipg)
        });
        t.clusters = cw.map(|(a, b)| {
            let c0 = group_clusters(sb, a).0;
            let c1 = group_clusters(sb, b - 1).1;
            Clusters {
                claimed: Bits::new(c0, c1 - c0),
                xattr: Bits::new(c0, c1 - c0),
            }
        });
        self.tally = t;
        let first = self.pass == 0;
        let mut sink = ProblemSink { problem, count: 0 };
        if first && !sb.checksum_ok {
            sink.put(Error::Checksum {
                object: Object::Superblock,
            });
        }
        if first {
            self.vol.check_special(&mut sink);
        }
        if let Some(c) = &self.tally.clusters {
            self.mark_metadata(c, &mut sink, first);
        }
        Some(CheckSummary {
            problems: sink.count,
            ..Default::default()
        })
    }

    /// One more walk when blocks are multiply claimed, to find every owner
    /// of each (e2fsck's pass 1B).
    fn begin_owners_pass(&mut self) -> Option<CheckSummary> {
        if self.pass != self.plan.passes || self.owners.is_some() {
            return None;
        }
        let list = self.dups.list();
        if list.is_empty() {
            return None;
        }
        let sb = self.vol.sb();
        drop(core::mem::replace(&mut self.tally, Tally::empty()));
        for g in 0..sb.group_count {
            let mut ranges: Vec<(u64, u64)> = super_ranges(sb, g).iter().copied().collect();
            if let Ok((gd, _)) = self.vol.group_desc_unchecked(g) {
                if gd.validate(sb, g).is_ok() {
                    ranges.extend(table_ranges(sb, &gd));
                }
            }
            for (a, b) in ranges {
                if let Some((x, y)) = clusters_of(sb, a, b) {
                    for &d in list.iter().filter(|&&d| d >= x && d < y) {
                        self.dups.owner(d, Owner::Meta(g));
                    }
                }
            }
        }
        self.owners = Some(list);
        Some(CheckSummary::default())
    }

    /// Report every owner of each multiply-claimed block.
    fn report_owners(&self, sink: &mut ProblemSink<'_>) {
        let sb = self.vol.sb();
        let owners = self.dups.owners();
        for &c in self.owners.iter().flatten() {
            sink.put(Error::corrupt(
                Object::Block(PhysBlock(block_of(sb, c))),
                "claimed by more than one owner (they follow)",
            ));
            for &(_, o) in owners.iter().filter(|x| x.0 == c) {
                sink.put(match o {
                    Owner::Inode(i) => Error::corrupt(
                        Object::Inode(InodeNo(i)),
                        "claims the multiply-claimed block above",
                    ),
                    Owner::Meta(g) => Error::corrupt(
                        Object::GroupDesc(g),
                        "metadata of this group claims the multiply-claimed block above",
                    ),
                });
            }
        }
    }

    /// Check group `g` (its descriptor, bitmaps and in-use inodes) and
    /// gather what the global checks need. Only the first pass reports.
    pub fn check_group(&self, g: u32, problem: &mut dyn FnMut(&Error)) -> CheckSummary {
        let first = self.pass == 0;
        let walk = self.walk_state(first);
        let mut mute = |_: &Error| {};
        let mut sink = ProblemSink {
            problem: if first { problem } else { &mut mute },
            count: 0,
        };
        let mut sum = CheckSummary {
            groups: 1,
            ..Default::default()
        };
        let opts = CheckOptions {
            data: self.opts.data && first,
        };
        self.vol
            .check_group_inner(g, &opts, &mut sink, &mut sum, &walk);
        if !first {
            return CheckSummary::default();
        }
        sum.problems = sink.count;
        sum
    }

    fn walk_state(&self, first: bool) -> WalkState<'_> {
        let sb = self.vol.sb();
        WalkState {
            tally: &self.tally,
            first,
            hidden: self.hidden,
            shared_blocks: sb.has_ro_compat(ro_compat::SHARED_BLOCKS),
            sb,
            dups: &self.dups,
            owners: self.owners.as_deref(),
            prealloc_dir_blocks: self.prealloc_dir_blocks,
        }
    }

    /// Compare what the pass gathered: bitmaps and free counts of the
    /// groups in the cluster window, link counts and directory structure
    /// of the inodes in the inode window.
    pub fn end_pass(&mut self, problem: &mut dyn FnMut(&Error)) -> CheckSummary {
        let mut sink = ProblemSink { problem, count: 0 };
        if self.owners.is_some() {
            self.report_owners(&mut sink);
            return CheckSummary {
                problems: sink.count,
                ..Default::default()
            };
        }
        let (_, cw) = self.windows(self.pass);
        if let (Some(c), Some((a, b))) = (&self.tally.clusters, cw) {
            for g in a..b {
                self.compare_group_blocks(g, c, &mut sink);
            }
        }
        if let Some(t) = &self.tally.inodes {
            self.compare_inodes(t, &mut sink);
        }
        CheckSummary {
            problems: sink.count,
            ..Default::default()
        }
    }

    /// Claim every group's superblock, descriptor, bitmap and inode table
    /// blocks (those inside the window).
    fn mark_metadata(&self, c: &Clusters, sink: &mut ProblemSink<'_>, report: bool) {
        let sb = self.vol.sb();
        // Under bigalloc metadata blocks share clusters.
        let overlaps_matter = sb.cluster_size == sb.block_size && report;
        let claim =
            |a: u64, b: u64| clusters_of(sb, a, b).map_or(0, |(x, y)| c.claimed.set_range(x, y).0);
        for g in 0..sb.group_count {
            for (a, b) in super_ranges(sb, g) {
                claim(a, b);
            }
        }
        for g in 0..sb.group_count {
            let gd = match self.vol.group_desc_unchecked(g) {
                Ok((gd, _)) if gd.validate(sb, g).is_ok() => gd,
                _ => {
                    self.tally.lose_claims();
                    continue;
                }
            };
            let mut dup = 0;
            for (a, b) in table_ranges(sb, &gd) {
                dup += claim(a, b);
            }
            if dup > 0 && overlaps_matter {
                sink.put(Error::corrupt(
                    Object::GroupDesc(g),
                    "bitmaps or inode table overlap other filesystem metadata",
                ));
            }
        }
        if sb.has_incompat(incompat::MMP) {
            let m = sb.mmp_block;
            claim(m, m.saturating_add(1));
        }
    }

    /// Pass 5 for one group: the on-disk block bitmap against what is
    /// claimed, and the descriptor's free count against both.
    fn compare_group_blocks(&self, g: u32, c: &Clusters, sink: &mut ProblemSink<'_>) {
        let sb = self.vol.sb();
        let Ok((gd, _)) = self.vol.group_desc_unchecked(g) else {
            return;
        };
        if gd.validate(sb, g).is_err() {
            return;
        }
        let (c0, c1) = group_clusters(sb, g);
        let cpg = sb.clusters_per_group as usize;
        let uninit = layout::block_uninit(sb, &gd);
        let disk: Vec<u8> = if uninit {
            // No bitmap on disk: the group's own metadata is implied in use.
            let mut v = vec![0u8; cpg.div_ceil(8)];
            let (g0, g1) = (block_of(sb, c0), block_of(sb, c1));
            let ranges = super_ranges(sb, g);
            for (a, b) in ranges.iter().copied().chain(table_ranges(sb, &gd)) {
                if let Some((x, y)) = clusters_of(sb, a.max(g0), b.min(g1)) {
                    for k in x..y {
                        let i = (k - c0) as usize;
                        v[i / 8] |= 1 << (i % 8);
                    }
                }
            }
            v
        } else {
            match self.vol.cache_read_with(gd.block_bitmap, |b| {
                b[..cpg.div_ceil(8).min(b.len())].to_vec()
            }) {
                Ok(v) => v,
                Err(_) => return, // reported by the group walk
            }
        };
        let bit = |i: usize| disk.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0);
        let complete = !self.tally.claims_incomplete.load(RELAXED);
        let (mut plus, mut minus, mut used, mut shared) = (0u32, 0u32, 0u64, 0u32);
        let mut k = c0;
        while k < c1 {
            // Fast path: 64 clusters that agree with the bitmap at once.
            if k + 64 <= c1 {
                if let (Some(cw), Some(xw)) = (c.claimed.word(k), c.xattr.word(k)) {
                    let i = ((k - c0) / 8) as usize;
                    if let Some(d) = disk.get(i..i + 8) {
                        let d = u64::from_le_bytes(d.try_into().unwrap_or([0; 8]));
                        if (k - c0) % 8 == 0 && cw & xw == 0 && cw | xw == d {
                            used += d.count_ones() as u64;
                            k += 64;
                            continue;
                        }
                    }
                }
            }
            let claimed = c.claimed.get(k);
            let ea = c.xattr.get(k);
            let on = claimed || ea;
            used += on as u64;
            let d = bit((k - c0) as usize);
            let blk = block_of(sb, k);
            if claimed && ea {
                shared += 1;
                if shared <= LIST {
                    sink.put(Error::corrupt(
                        Object::Block(PhysBlock(blk)),
                        "an extended-attribute block also claimed as data or metadata",
                    ));
                }
            }
            if on && !d {
                plus += 1;
                if plus <= LIST {
                    sink.put(Error::corrupt(
                        Object::Block(PhysBlock(blk)),
                        "in use but marked free in the block bitmap",
                    ));
                }
            } else if !on && d && complete {
                minus += 1;
                if minus <= LIST {
                    sink.put(Error::corrupt(
                        Object::Block(PhysBlock(blk)),
                        "marked in use in the block bitmap but nothing uses it",
                    ));
                }
            }
            k += 1;
        }
        if plus > LIST || minus > LIST || shared > LIST {
            sink.put(Error::corrupt(
                Object::GroupDesc(g),
                "more blocks of the group differ from its block bitmap (not listed)",
            ));
        }
        if complete && gd.free_blocks as u64 != (c1 - c0) - used {
            sink.put(Error::corrupt(
                Object::GroupDesc(g),
                "free blocks count does not match the blocks in use",
            ));
        }
        // The last group's bitmap is padded with ones past the end of the
        // filesystem.
        if g + 1 == sb.group_count && !uninit {
            let n = (c1 - c0) as usize;
            if (n..cpg).any(|i| !bit(i)) {
                sink.put(Error::corrupt(
                    Object::GroupDesc(g),
                    "padding at the end of the block bitmap is not set",
                ));
            }
        }
    }

    /// Passes 2 to 4 for the inodes of the window: link counts against
    /// entries, and each directory linked once, from the directory its
    /// `..` names, on a chain that reaches the root.
    fn compare_inodes(&self, t: &Inodes, sink: &mut ProblemSink<'_>) {
        let sb = self.vol.sb();
        let dirs_ok = !self.tally.dirs_incomplete.load(RELAXED);
        let whole = t.first == 1 && t.n == sb.inodes_count;
        if let Some(i) = t.idx(ROOT_INO) {
            if t.flags[i].load(RELAXED) & (flag::USED | flag::BAD) == 0 {
                sink.put(Error::corrupt(
                    Object::Inode(InodeNo::ROOT),
                    "root directory is not in use",
                ));
            }
        }
        for i in 0..t.n as usize {
            let ino = t.first + i as u32;
            let fl = t.flags[i].load(RELAXED);
            let refs = t.refs[i].load(RELAXED);
            if fl & flag::BAD != 0 {
                continue;
            }
            if fl & flag::USED == 0 {
                if refs > 0 && fl & flag::MARKED != 0 && dirs_ok {
                    sink.put(Error::corrupt(
                        Object::Inode(InodeNo(ino)),
                        "named by a directory entry but its link count is 0",
                    ));
                }
                continue;
            }
            if !dirs_ok || fl & flag::HIDDEN != 0 {
                continue;
            }
            let links = t.links[i].load(RELAXED);
            if fl & flag::DIR == 0 {
                if refs == 0 {
                    sink.put(Error::corrupt(
                        Object::Inode(InodeNo(ino)),
                        "in use but no directory entry names it (unattached)",
                    ));
                } else if links != refs {
                    sink.put(Error::corrupt(
                        Object::Inode(InodeNo(ino)),
                        "link count does not match the directory entries naming it",
                    ));
                }
                continue;
            }
            let dotdot = t.dotdot[i].load(RELAXED);
            if ino == ROOT_INO {
                if dotdot != ROOT_INO {
                    sink.put(Error::corrupt(
                        Object::Inode(InodeNo(ino)),
                        "root directory's '..' does not name the root",
                    ));
                }
            } else {
                let parent = t.parent[i].load(RELAXED);
                if parent == 0 {
                    sink.put(Error::corrupt(
                        Object::Inode(InodeNo(ino)),
                        "directory is not linked from any directory (unconnected)",
                    ));
                    continue;
                }
                if fl & flag::MULTI != 0 {
                    sink.put(Error::corrupt(
                        Object::Inode(InodeNo(ino)),
                        "directory is linked from more than one directory entry",
                    ));
                }
                if dotdot != parent {
                    sink.put(Error::corrupt(
                        Object::Inode(InodeNo(ino)),
                        "directory's '..' does not name the directory that links it",
                    ));
                }
                if whole {
                    if let Some(x) = self.reach(t, ino) {
                        sink.put(Error::corrupt(
                            Object::Inode(InodeNo(x)),
                            "directory is in a loop of directories not reachable from the root",
                        ));
                    }
                }
            }
            // dir_nlink: past LINK_MAX subdirectories the count stays 1.
            let want = if refs > LINK_MAX { 1 } else { refs };
            if links != want {
                sink.put(Error::corrupt(
                    Object::Inode(InodeNo(ino)),
                    "directory link count does not match its '.', '..' and subdirectory entries",
                ));
            }
        }
    }

    /// Follow `ino`'s parent chain, memoizing the answer along it. Returns
    /// a directory of the loop the chain ends in, the first time that loop
    /// is found (chains ending in an unconnected directory are reported
    /// there).
    fn reach(&self, t: &Inodes, ino: u32) -> Option<u32> {
        const GREY: u8 = flag::REACHED | flag::LOST;
        let get = |x: u32| t.idx(x).map_or(0, |i| t.flags[i].load(RELAXED));
        let mut cur = ino;
        let mut looped = None;
        let ok = loop {
            let fl = get(cur);
            if cur == ROOT_INO || fl & GREY == flag::REACHED {
                break true;
            }
            if fl & GREY == flag::LOST {
                break false;
            }
            if fl & GREY == GREY {
                looped = Some(cur);
                break false;
            }
            let Some(i) = t.idx(cur) else { break false };
            t.flags[i].fetch_or(GREY, RELAXED);
            let p = t.parent[i].load(RELAXED);
            if p == 0 || get(p) & flag::DIR == 0 {
                break false;
            }
            cur = p;
        };
        // Second walk: turn the grey path into the answer. Every node on
        // it is grey, so this stops where the first walk stopped.
        let mut cur = ino;
        while let Some(i) = t.idx(cur) {
            if t.flags[i].load(RELAXED) & GREY != GREY || cur == ROOT_INO {
                break;
            }
            let clear = if ok { flag::LOST } else { flag::REACHED };
            t.flags[i].fetch_and(!clear, RELAXED);
            cur = t.parent[i].load(RELAXED);
        }
        looped
    }
}

impl<D: BlockDevice> Volume<D> {
    /// Claim the blocks of the resize inode: only its double-indirect
    /// block is its own, the blocks under it are the reserved descriptor
    /// blocks (already claimed as metadata).
    pub(super) fn is_resize_inode(&self, inode: &Inode) -> bool {
        inode.ino == InodeNo(7) && self.sb().has_compat(compat::RESIZE_INODE)
    }
}
