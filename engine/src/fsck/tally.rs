//! What the global checks learn while groups are walked (from several
//! threads at once): which clusters something claims, and for each inode
//! of the current window its link count, the directory entries naming it
//! and, for directories, who links them and what their `..` says.
//!
//! Everything here is allocated when a pass starts, sized from the
//! superblock's validated counts and cut into windows so that it never
//! exceeds the budget fixed in `CheckOptions`.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};

const RELAXED: Ordering = Ordering::Relaxed;

/// A bitmap over `base..base + len` (cluster or inode numbers).
pub(super) struct Bits {
    base: u64,
    len: u64,
    words: Vec<AtomicU64>,
}

impl Bits {
    pub(super) fn new(base: u64, len: u64) -> Bits {
        let mut words = Vec::new();
        words.resize_with(len.div_ceil(64) as usize, || AtomicU64::new(0));
        Bits { base, len, words }
    }

    /// Bytes a bitmap of `len` bits takes.
    pub(super) fn cost(len: u64) -> u64 {
        len.div_ceil(64) * 8
    }

    pub(super) fn get(&self, i: u64) -> bool {
        if i < self.base || i - self.base >= self.len {
            return false;
        }
        let k = i - self.base;
        self.words[(k / 64) as usize].load(RELAXED) & (1 << (k % 64)) != 0
    }

    /// The 64 bits from `i`, when `i` starts a word of the window.
    pub(super) fn word(&self, i: u64) -> Option<u64> {
        let k = i.checked_sub(self.base)?;
        if k % 64 != 0 {
            return None;
        }
        Some(self.words.get((k / 64) as usize)?.load(RELAXED))
    }

    /// Set `a..b` (clipped to the window). Returns how many of those bits
    /// were already set and the first of them.
    pub(super) fn set_range(&self, a: u64, b: u64) -> (u64, Option<u64>) {
        let lo = a.max(self.base);
        let hi = b.min(self.base + self.len);
        let (mut dups, mut first) = (0u64, None);
        let mut k = lo;
        while k < hi {
            let off = k - self.base;
            let bit = off % 64;
            let n = (64 - bit).min(hi - k);
            let mask = if n == 64 {
                !0
            } else {
                ((1u64 << n) - 1) << bit
            };
            let prev = self.words[(off / 64) as usize].fetch_or(mask, RELAXED);
            let both = prev & mask;
            if both != 0 {
                dups += both.count_ones() as u64;
                if first.is_none() {
                    first = Some(k - bit + both.trailing_zeros() as u64);
                }
            }
            k += n;
        }
        (dups, first)
    }
}

/// Inode flags kept per inode of the window.
pub(super) mod flag {
    /// In use as `e2fsck` counts it: reserved, or a nonzero link count.
    pub const USED: u8 = 1;
    pub const DIR: u8 = 2;
    /// Could not be decoded: its counts are unknown, say nothing about it.
    pub const BAD: u8 = 4;
    /// Named by more than one entry other than `.` and `..`.
    pub const MULTI: u8 = 8;
    /// Not expected in any directory (journal, quota, EA inodes, ...).
    pub const HIDDEN: u8 = 16;
    /// Marked in the inode bitmap.
    pub const MARKED: u8 = 32;
    /// Pass 3 memo: the parent chain reaches the root.
    pub const REACHED: u8 = 64;
    /// Pass 3 memo: the parent chain does not reach the root.
    pub const LOST: u8 = 128;
}

/// Per-inode state of inodes `first..first + n`.
pub(super) struct Inodes {
    pub first: u32,
    pub n: u32,
    pub links: Vec<AtomicU16>,
    /// Entries naming the inode (`.` and `..` included), saturating.
    pub refs: Vec<AtomicU16>,
    pub flags: Vec<AtomicU8>,
    /// The first directory found naming it (other than by `.`/`..`).
    pub parent: Vec<AtomicU32>,
    /// What the directory's own `..` entry names.
    pub dotdot: Vec<AtomicU32>,
}

/// Bytes of state per inode of a window.
pub(super) const INODE_COST: u64 = 2 + 2 + 1 + 4 + 4;

impl Inodes {
    pub(super) fn new(first: u32, n: u32) -> Inodes {
        let v16 = || {
            let mut v = Vec::new();
            v.resize_with(n as usize, || AtomicU16::new(0));
            v
        };
        let v32 = || {
            let mut v = Vec::new();
            v.resize_with(n as usize, || AtomicU32::new(0));
            v
        };
        let mut flags = Vec::new();
        flags.resize_with(n as usize, || AtomicU8::new(0));
        Inodes {
            first,
            n,
            links: v16(),
            refs: v16(),
            flags,
            parent: v32(),
            dotdot: v32(),
        }
    }

    pub(super) fn idx(&self, ino: u32) -> Option<usize> {
        let k = ino.checked_sub(self.first)?;
        (k < self.n).then_some(k as usize)
    }

    #[cfg(test)]
    fn flags(&self, ino: u32) -> u8 {
        self.idx(ino).map_or(0, |i| self.flags[i].load(RELAXED))
    }

    /// Record a scanned inode.
    pub(super) fn found(&self, ino: u32, links: u16, fl: u8) {
        if let Some(i) = self.idx(ino) {
            self.links[i].store(links, RELAXED);
            self.flags[i].fetch_or(fl, RELAXED);
        }
    }

    /// Directory `dir` has an entry naming `ino`: `.` (0), `..` (1) or a
    /// name (2).
    pub(super) fn entry(&self, dir: u32, ino: u32, which: u8) {
        if which == 1 {
            if let Some(d) = self.idx(dir) {
                self.dotdot[d].store(ino, RELAXED);
            }
        }
        let Some(i) = self.idx(ino) else { return };
        let _ = self.refs[i].fetch_update(RELAXED, RELAXED, |v| v.checked_add(1));
        if which == 2
            && self.parent[i]
                .compare_exchange(0, dir, RELAXED, RELAXED)
                .is_err()
        {
            self.flags[i].fetch_or(flag::MULTI, RELAXED);
        }
    }
}

/// Clusters claimed in the window `first..first + n` (cluster indexes
/// counted from the first data block).
pub(super) struct Clusters {
    /// Metadata and everything inodes map (data, extent and indirect blocks).
    pub claimed: Bits,
    /// Extended-attribute blocks, which inodes may share.
    pub xattr: Bits,
}

/// Who claims a multiply-claimed cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Owner {
    /// Metadata of this group (superblock, descriptors, bitmaps, table).
    Meta(u32),
    Inode(u32),
}

/// Multiply-claimed clusters (the first `DUP_LIST`), and once the owners
/// pass has run, who claims each (at most `OWNER_LIST` per cluster).
pub(super) struct Dups {
    clusters: spin::Mutex<Vec<u64>>,
    owners: spin::Mutex<Vec<(u64, Owner)>>,
}

const DUP_LIST: usize = 32;
const OWNER_LIST: usize = 8;

impl Dups {
    pub(super) fn new() -> Dups {
        Dups {
            clusters: spin::Mutex::new(Vec::new()),
            owners: spin::Mutex::new(Vec::new()),
        }
    }

    /// Note cluster `c` as multiply claimed; false if the list is full.
    pub(super) fn note(&self, c: u64) -> bool {
        let mut v = self.clusters.lock();
        if v.contains(&c) {
            return true;
        }
        if v.len() >= DUP_LIST {
            return false;
        }
        v.push(c);
        true
    }

    /// The noted clusters, sorted.
    pub(super) fn list(&self) -> Vec<u64> {
        let mut v = self.clusters.lock().clone();
        v.sort_unstable();
        v
    }

    pub(super) fn owner(&self, c: u64, o: Owner) {
        let mut v = self.owners.lock();
        if !v.contains(&(c, o)) && v.iter().filter(|x| x.0 == c).count() < OWNER_LIST {
            v.push((c, o));
        }
    }

    /// Owners found, by cluster.
    pub(super) fn owners(&self) -> Vec<(u64, Owner)> {
        let mut v = self.owners.lock().clone();
        v.sort_unstable();
        v
    }
}

pub(super) struct Tally {
    pub inodes: Option<Inodes>,
    pub clusters: Option<Clusters>,
    /// Some inode or mapping could not be walked: blocks it may own are
    /// not claimed, so "in use but unclaimed" is not reported.
    pub claims_incomplete: AtomicBool,
    /// Some directory could not be read to its end: entries may be missing,
    /// so link counts and connectivity are not reported.
    pub dirs_incomplete: AtomicBool,
}

impl Tally {
    pub(super) fn empty() -> Tally {
        Tally {
            inodes: None,
            clusters: None,
            claims_incomplete: AtomicBool::new(false),
            dirs_incomplete: AtomicBool::new(false),
        }
    }
    pub(super) fn lose_claims(&self) {
        self.claims_incomplete.store(true, RELAXED);
    }
    pub(super) fn lose_dirs(&self) {
        self.dirs_incomplete.store(true, RELAXED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_range_reports_overlaps() {
        let b = Bits::new(100, 300);
        assert_eq!(b.set_range(90, 170), (0, None));
        assert!(b.get(100) && b.get(169) && !b.get(170) && !b.get(99));
        assert_eq!(b.set_range(160, 260), (10, Some(160)));
        assert_eq!(b.set_range(0, 1000), (160, Some(100)));
        assert!(b.get(399) && !b.get(400));
        assert_eq!(b.word(100), Some(!0));
        assert_eq!(b.word(101), None);
        let c = Bits::new(0, 64);
        assert_eq!(c.set_range(0, 64), (0, None));
        assert_eq!(c.set_range(63, 64), (1, Some(63)));
    }

    #[test]
    fn entries_count_and_link_parents() {
        let t = Inodes::new(11, 10);
        t.entry(12, 13, 2);
        t.entry(13, 13, 0);
        t.entry(13, 12, 1);
        t.entry(14, 13, 2);
        t.entry(12, 99, 2);
        assert_eq!(t.refs[2].load(RELAXED), 3);
        assert_eq!(t.parent[2].load(RELAXED), 12);
        assert_eq!(t.dotdot[2].load(RELAXED), 12);
        assert!(t.flags(13) & flag::MULTI != 0);
        assert_eq!(t.flags(99), 0);
    }
}
