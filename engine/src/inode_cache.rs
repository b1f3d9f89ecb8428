//! A bounded cache of decoded inodes, so that the lookups and `getattr`s of
//! a tree walk do not find the group descriptor, verify the inode's
//! checksum and decode the record again for every request.
//!
//! Only inodes that were read, checksum-verified (unless the volume ignores
//! checksums, which is fixed at open) and decoded without error are kept:
//! a damaged inode is read from disk every time and fails the same way every
//! time. `fsck` never reads through this cache.
//!
//! Shape: a set-associative table of [`WAYS`] entries per set, the set
//! chosen by a hash of the inode number, each set behind its own spin lock
//! (held for a handful of compares and one reference-count increment, never
//! across I/O), with second-chance replacement within a set. Entries are
//! shared `Arc<Inode>`s, so a hit copies nothing.
//!
//! Memory: the number of sets is fixed at creation from the byte budget
//! and a per-entry charge computed from the inode record size (which the
//! superblock bounds to the block size), so the cache holds at most
//! `budget` bytes whatever the image claims: the sets themselves plus at
//! most `WAYS` decoded inodes per set, each at most its charge.
//!
//! Invalidation: [`InodeCache::invalidate`] drops one inode and bumps its
//! set's generation; a load that started before the bump does not insert
//! its (possibly stale) result, so a writer that invalidates after landing
//! its change can never be overtaken by a reader's older copy.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::mem::size_of;

use crate::error::Result;
use crate::inode::Inode;
use crate::numbers::InodeNo;

/// Entries per set.
pub const WAYS: usize = 8;
/// Budget ceiling (the block cache's): the sets are allocated up front.
pub const MAX_BUDGET: usize = 1 << 31;

/// Counters of an inode cache (summed over its sets when asked).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InodeCacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Inodes held now.
    pub entries: usize,
    /// Most inodes the budget allows.
    pub capacity: usize,
}

struct SetInner {
    /// Inode numbers; 0 (never a valid inode) marks a free way.
    keys: [u32; WAYS],
    vals: [Option<Arc<Inode>>; WAYS],
    /// Second-chance bits, one per way.
    referenced: u8,
    /// Next way the replacement hand looks at.
    hand: u8,
    /// Bumped by every invalidation in this set.
    generation: u32,
    hits: u32,
    misses: u32,
}

/// One set on its own cache lines, so threads hitting different sets do
/// not bounce a shared line.
#[repr(align(64))]
struct Set(spin::Mutex<SetInner>);

impl Set {
    fn new() -> Self {
        Set(spin::Mutex::new(SetInner {
            keys: [0; WAYS],
            vals: Default::default(),
            referenced: 0,
            hand: 0,
            generation: 0,
            hits: 0,
            misses: 0,
        }))
    }
}

impl SetInner {
    fn find(&self, ino: u32) -> Option<usize> {
        self.keys.iter().position(|&k| k == ino)
    }

    /// A way for a new entry: a free one, else the first not referenced
    /// since the hand last passed (at most two turns of the hand).
    fn victim(&mut self) -> usize {
        if let Some(w) = self.find(0) {
            return w;
        }
        loop {
            let w = self.hand as usize % WAYS;
            self.hand = ((w + 1) % WAYS) as u8;
            if self.referenced & (1 << w) == 0 {
                return w;
            }
            self.referenced &= !(1 << w);
        }
    }
}

/// See the module documentation.
pub struct InodeCache {
    sets: Vec<Set>,
    budget: usize,
    entry_bytes: usize,
}

impl InodeCache {
    /// What one cached inode counts against the budget: the shared
    /// allocation (two reference counts and the decoded inode), its copy of
    /// the in-inode xattr area (at most the record), and its share of a set.
    pub fn entry_bytes(inode_size: u32) -> usize {
        2 * size_of::<usize>() + size_of::<Inode>() + inode_size as usize + size_of::<Set>() / WAYS
    }

    /// A cache of at most `budget_bytes` for inode records of
    /// `inode_size` bytes. A budget below one set's worth disables it;
    /// one above [`MAX_BUDGET`] is cut to it.
    pub fn new(budget_bytes: usize, inode_size: u32) -> Self {
        let budget_bytes = budget_bytes.min(MAX_BUDGET);
        let entry_bytes = Self::entry_bytes(inode_size);
        let nsets = budget_bytes / (entry_bytes * WAYS);
        let mut sets = Vec::with_capacity(nsets);
        sets.resize_with(nsets, Set::new);
        InodeCache {
            sets,
            budget: budget_bytes,
            entry_bytes,
        }
    }

    pub fn budget_bytes(&self) -> usize {
        self.budget
    }

    /// The most this cache can hold: its sets, full. Never above the budget.
    pub fn max_memory_bytes(&self) -> usize {
        self.sets.len() * WAYS * self.entry_bytes
    }

    pub fn capacity(&self) -> usize {
        self.sets.len() * WAYS
    }

    fn set(&self, ino: u32) -> Option<&Set> {
        if self.sets.is_empty() {
            return None;
        }
        // Multiplicative hash, then a multiply-shift range reduction: no
        // power-of-two set count needed, neighbouring inodes spread out.
        let h = ino.wrapping_mul(0x9E37_79B1) as u64;
        let i = (h * self.sets.len() as u64) >> 32;
        self.sets.get(i as usize)
    }

    /// The cached inode `ino`, if any.
    pub fn get(&self, ino: InodeNo) -> Option<Arc<Inode>> {
        let ino = ino.0;
        let mut s = self.set(ino)?.0.lock();
        match s.find(ino).filter(|_| ino != 0) {
            Some(w) => {
                s.referenced |= 1 << w;
                s.hits = s.hits.wrapping_add(1);
                s.vals[w].clone()
            }
            None => {
                s.misses = s.misses.wrapping_add(1);
                None
            }
        }
    }

    /// The cached inode `ino`, or `load()`'s, which is kept when it
    /// succeeds (errors are returned and not remembered).
    pub fn get_or_load(
        &self,
        ino: InodeNo,
        load: impl FnOnce() -> Result<Inode>,
    ) -> Result<Arc<Inode>> {
        let ino = ino.0;
        let Some(set) = self.set(ino).filter(|_| ino != 0) else {
            return load().map(Arc::new);
        };
        let generation = {
            let mut s = set.0.lock();
            if let Some(w) = s.find(ino) {
                s.referenced |= 1 << w;
                s.hits = s.hits.wrapping_add(1);
                if let Some(v) = &s.vals[w] {
                    return Ok(v.clone());
                }
            }
            s.misses = s.misses.wrapping_add(1);
            s.generation
        };
        // Read from disk without the lock.
        let inode = Arc::new(load()?);
        let evicted = {
            let mut s = set.0.lock();
            if s.generation != generation {
                // Invalidated meanwhile: this copy may predate the change.
                return Ok(inode);
            }
            if let Some(w) = s.find(ino) {
                // Another thread loaded it first: share its copy.
                if let Some(v) = &s.vals[w] {
                    return Ok(v.clone());
                }
            }
            let w = s.victim();
            s.keys[w] = ino;
            s.referenced |= 1 << w;
            s.vals[w].replace(inode.clone())
        };
        // Freed outside the lock.
        drop(evicted);
        Ok(inode)
    }

    /// Forget inode `ino` (its record changed or is about to), and make
    /// loads of its set that started earlier not insert their result.
    pub fn invalidate(&self, ino: InodeNo) {
        let ino = ino.0;
        let Some(set) = self.set(ino) else { return };
        let old = {
            let mut s = set.0.lock();
            s.generation = s.generation.wrapping_add(1);
            match s.find(ino).filter(|_| ino != 0) {
                Some(w) => {
                    s.keys[w] = 0;
                    s.referenced &= !(1 << w);
                    s.vals[w].take()
                }
                None => None,
            }
        };
        drop(old);
    }

    /// Forget every inode.
    pub fn clear(&self) {
        for set in &self.sets {
            let old: [Option<Arc<Inode>>; WAYS] = {
                let mut s = set.0.lock();
                s.generation = s.generation.wrapping_add(1);
                s.keys = [0; WAYS];
                s.referenced = 0;
                core::mem::take(&mut s.vals)
            };
            drop(old);
        }
    }

    pub fn stats(&self) -> InodeCacheStats {
        let mut st = InodeCacheStats {
            capacity: self.capacity(),
            ..Default::default()
        };
        for set in &self.sets {
            let s = set.0.lock();
            st.hits += s.hits as u64;
            st.misses += s.misses as u64;
            st.entries += s.keys.iter().filter(|&&k| k != 0).count();
        }
        st
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Error, Object};
    use crate::superblock::{small_raw, Superblock};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use zerocopy::IntoBytes;

    fn sb() -> Superblock {
        let raw = small_raw();
        let bytes = raw.as_bytes().to_vec();
        Superblock::parse(&raw, &bytes, 1 << 30).unwrap()
    }

    fn inode(ino: u32, size: u64) -> Inode {
        let sb = sb();
        let mut rec = [0u8; 256];
        rec[0..2].copy_from_slice(&0o100644u16.to_le_bytes());
        rec[4..8].copy_from_slice(&(size as u32).to_le_bytes());
        rec[0x80..0x82].copy_from_slice(&32u16.to_le_bytes());
        Inode::parse(&sb, InodeNo(ino), &rec).unwrap()
    }

    #[test]
    fn hit_after_load_and_errors_not_kept() {
        let c = InodeCache::new(1 << 20, 256);
        assert!(c.capacity() > 0);
        let loads = AtomicUsize::new(0);
        let load = |ino: u32| {
            loads.fetch_add(1, Ordering::Relaxed);
            Ok(inode(ino, ino as u64 * 10))
        };
        for _ in 0..3 {
            assert_eq!(c.get_or_load(InodeNo(5), || load(5)).unwrap().size, 50);
        }
        assert_eq!(loads.load(Ordering::Relaxed), 1);
        let bad = || Err(Error::corrupt(Object::Inode(InodeNo(9)), "bad"));
        for _ in 0..3 {
            assert!(c.get_or_load(InodeNo(9), bad).is_err());
        }
        assert!(c.get(InodeNo(9)).is_none());
        c.invalidate(InodeNo(5));
        assert!(c.get(InodeNo(5)).is_none());
        assert_eq!(c.get_or_load(InodeNo(5), || load(5)).unwrap().size, 50);
        assert_eq!(loads.load(Ordering::Relaxed), 2);
        let st = c.stats();
        assert_eq!(st.entries, 1);
        c.clear();
        assert_eq!(c.stats().entries, 0);
    }

    #[test]
    fn stays_within_capacity_and_keeps_hot_entries() {
        let c = InodeCache::new(64 << 10, 256);
        let cap = c.capacity();
        assert!(cap >= WAYS && c.max_memory_bytes() <= 64 << 10);
        for ino in 1..=(cap as u32 * 20) {
            // Inode 1 is touched between every insertion: second chance
            // keeps it.
            c.get_or_load(InodeNo(1), || Ok(inode(1, 1))).unwrap();
            c.get_or_load(InodeNo(ino), || Ok(inode(ino, 0))).unwrap();
            assert!(c.stats().entries <= cap);
        }
        assert!(c.get(InodeNo(1)).is_some());
    }

    #[test]
    fn invalidate_during_load_is_not_overtaken() {
        let c = InodeCache::new(1 << 20, 256);
        let r = c.get_or_load(InodeNo(7), || {
            // A writer lands its change and invalidates while this reader
            // is reading the old record.
            c.invalidate(InodeNo(7));
            Ok(inode(7, 1))
        });
        assert_eq!(r.unwrap().size, 1);
        assert!(
            c.get(InodeNo(7)).is_none(),
            "stale copy inserted after invalidate"
        );
    }

    #[test]
    fn zero_budget_and_inode_zero() {
        let c = InodeCache::new(0, 256);
        assert_eq!(c.capacity(), 0);
        assert_eq!(
            c.get_or_load(InodeNo(3), || Ok(inode(3, 4))).unwrap().size,
            4
        );
        assert!(c.get(InodeNo(3)).is_none());
        let c = InodeCache::new(1 << 20, 256);
        c.get_or_load(InodeNo(0), || Ok(inode(0, 4))).unwrap();
        assert_eq!(c.stats().entries, 0);
    }

    #[test]
    fn threads_share_one_copy() {
        let c = InodeCache::new(1 << 20, 256);
        let loads = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..4u32 {
                let (c, loads) = (&c, &loads);
                s.spawn(move || {
                    for i in 0..2000u32 {
                        let ino = 1 + (i * 7 + t) % 500;
                        let got = c
                            .get_or_load(InodeNo(ino), || {
                                loads.fetch_add(1, Ordering::Relaxed);
                                Ok(inode(ino, ino as u64))
                            })
                            .unwrap();
                        assert_eq!((got.ino, got.size), (InodeNo(ino), ino as u64));
                    }
                });
            }
        });
        // 500 inodes fit: each loaded once, give or take concurrent misses.
        assert!(loads.load(Ordering::Relaxed) < 500 + 4 * 64);
    }
}
