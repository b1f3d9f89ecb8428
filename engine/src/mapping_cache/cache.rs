//! The mapping caches of all inodes under one byte budget, least recently
//! used inodes dropped first.

use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicU64, Ordering};

use hashbrown::HashMap;
use spin::RwLock;

use super::inode_mappings::InodeMappings;
use super::record::{BadRecord, MapType, Mapping};
use super::{Fork, Lookup};
use crate::error::{Error, Object};
use crate::numbers::InodeNo;

struct Entry {
    cache: InodeMappings,
    /// Last use. Lookups store into it under the shared lock.
    stamp: AtomicU64,
    /// The stamp under which the entry sits in the LRU index.
    indexed: u64,
    /// What this inode counts against the budget.
    bytes: usize,
}

/// Budget charge of an inode besides its forks: its hash table slot (with
/// load-factor slack) and its LRU index entry (with B-tree node slack).
pub const INODE_OVERHEAD: usize =
    2 * core::mem::size_of::<(InodeNo, Entry)>() + 3 * core::mem::size_of::<(u64, InodeNo)>();

struct State {
    inodes: HashMap<InodeNo, Entry>,
    /// (stamp, ino), oldest first. Lookups cannot reorder it under a shared
    /// lock, so it is lazy: eviction re-files an entry whose stamp moved.
    lru: BTreeSet<(u64, InodeNo)>,
    /// Use clock. Changes take two ticks (their own odd stamp, then an even
    /// one lookups share), so a lookup always ranks after earlier changes.
    tick: u64,
    used: usize,
    /// Counter start for a re-created inode: above every counter value a
    /// dropped inode had, so a stale cookie can never match again.
    seq_floor: u64,
}

/// The extent mapping caches of all inodes. Lookups take the lock shared,
/// changes exclusive. `memory_bytes()` never exceeds `budget_bytes()` once
/// a call returns: the least recently used inodes are dropped to make room,
/// and an inode that alone would not fit is simply not cached.
pub struct MappingCache {
    state: RwLock<State>,
    budget: usize,
}

fn corrupt(ino: InodeNo, e: BadRecord) -> Error {
    Error::Corrupt {
        object: Object::Inode(ino),
        what: e.0,
    }
}

impl State {
    fn drop_entry(&mut self, ino: InodeNo) {
        if let Some(e) = self.inodes.remove(&ino) {
            self.lru.remove(&(e.indexed, ino));
            self.used -= e.bytes;
            self.seq_floor = self.seq_floor.max(e.cache.seq().wrapping_add(1));
        }
    }

    fn evict(&mut self, budget: usize) {
        while self.used > budget {
            let Some((s, ino)) = self.lru.pop_first() else {
                break;
            };
            let Some(e) = self.inodes.get_mut(&ino) else {
                continue;
            };
            let actual = e.stamp.load(Ordering::Relaxed);
            if actual != s {
                // Used since it was filed: file it again (at most once per
                // entry per pass, as nothing can touch it now).
                e.indexed = actual;
                self.lru.insert((actual, ino));
                continue;
            }
            self.lru.insert((s, ino));
            self.drop_entry(ino);
        }
    }
}

impl MappingCache {
    pub fn new(budget_bytes: usize) -> Self {
        MappingCache {
            state: RwLock::new(State {
                inodes: HashMap::new(),
                lru: BTreeSet::new(),
                tick: 0,
                used: 0,
                seq_floor: 0,
            }),
            budget: budget_bytes,
        }
    }

    pub fn budget_bytes(&self) -> usize {
        self.budget
    }

    /// Bytes counted against the budget: fork storage plus a fixed charge
    /// per cached inode.
    pub fn memory_bytes(&self) -> usize {
        self.state.read().used
    }

    pub fn cached_inodes(&self) -> usize {
        self.state.read().inodes.len()
    }

    /// The mapping covering `off`, or a miss naming the next mapping. An
    /// inode that is not cached misses in both forks (never `NoFork`: its
    /// write fork may have been dropped, not known absent).
    pub fn lookup(&self, ino: InodeNo, fork: Fork, off: u64) -> Lookup {
        let st = self.state.read();
        match st.inodes.get(&ino) {
            None => Lookup::Miss { next: None },
            Some(e) => {
                if e.stamp.load(Ordering::Relaxed) != st.tick {
                    e.stamp.store(st.tick, Ordering::Relaxed);
                }
                e.cache.lookup(fork, off)
            }
        }
    }

    /// The inode's counter, if it is cached: compare with a `Hit` cookie.
    pub fn seq(&self, ino: InodeNo) -> Option<u64> {
        self.state.read().inodes.get(&ino).map(|e| e.cache.seq())
    }

    /// Runs `f` on an inode's cache under the shared lock (for walks such as
    /// SEEK_DATA or FIEMAP over the cached mappings).
    pub fn with_inode<R>(&self, ino: InodeNo, f: impl FnOnce(&InodeMappings) -> R) -> Option<R> {
        let st = self.state.read();
        st.inodes.get(&ino).map(|e| f(&e.cache))
    }

    /// Runs one change under the exclusive lock, then settles the budget.
    fn change<R>(
        &self,
        ino: InodeNo,
        create: bool,
        f: impl FnOnce(&mut InodeMappings) -> R,
    ) -> Option<R> {
        let mut st = self.state.write();
        let st = &mut *st;
        st.tick += 1;
        let stamp = st.tick;
        st.tick += 1;
        let e = match st.inodes.get_mut(&ino) {
            Some(e) => {
                st.lru.remove(&(e.indexed, ino));
                e
            }
            None if create && INODE_OVERHEAD <= self.budget => {
                st.used += INODE_OVERHEAD;
                st.inodes.entry(ino).or_insert(Entry {
                    cache: InodeMappings::with_seq(st.seq_floor),
                    stamp: AtomicU64::new(stamp),
                    indexed: stamp,
                    bytes: INODE_OVERHEAD,
                })
            }
            None => return None,
        };
        e.indexed = stamp;
        e.stamp.store(stamp, Ordering::Relaxed);
        st.lru.insert((stamp, ino));
        let r = f(&mut e.cache);
        let bytes = INODE_OVERHEAD + e.cache.memory_bytes();
        st.used = st.used - e.bytes + bytes;
        e.bytes = bytes;
        // An inode with nothing cached is worth nothing; one that alone
        // exceeds the budget cannot stay.
        if e.cache.is_empty() || bytes > self.budget {
            st.drop_entry(ino);
        }
        st.evict(self.budget);
        Some(r)
    }

    /// Checks what `add`/`upsert` would store; `Ok(false)` when storing it
    /// is a no-op for an inode that is not cached.
    fn precheck(fork: Fork, rec: &Mapping) -> Result<bool, BadRecord> {
        if rec.length == 0 {
            return Ok(false);
        }
        rec.validate()?;
        match (fork, rec.kind) {
            (Fork::Read, MapType::PureOverwrite) => {
                Err(BadRecord("pure-overwrite mapping in the read fork"))
            }
            (Fork::Write, MapType::PureOverwrite) => Ok(false),
            _ => Ok(true),
        }
    }

    /// Adds a mapping into a hole of the fork (overlap: `Error::Corrupt`,
    /// nothing changed). May silently not cache it when over budget.
    pub fn add(&self, ino: InodeNo, fork: Fork, rec: Mapping) -> Result<(), Error> {
        let create = Self::precheck(fork, &rec).map_err(|e| corrupt(ino, e))?;
        self.change(ino, create, |c| c.add(fork, rec))
            .unwrap_or(Ok(()))
            .map_err(|e| corrupt(ino, e))
    }

    /// Forgets a file range of one fork.
    pub fn remove(&self, ino: InodeNo, fork: Fork, off: u64, len: u64) {
        self.change(ino, false, |c| c.remove(fork, off, len));
    }

    /// Replaces whatever the fork holds over `rec`'s range with `rec`.
    pub fn upsert(&self, ino: InodeNo, fork: Fork, rec: Mapping) -> Result<(), Error> {
        let create = Self::precheck(fork, &rec).map_err(|e| corrupt(ino, e))?;
        self.change(ino, create, |c| c.upsert(fork, rec))
            .unwrap_or(Ok(()))
            .map_err(|e| corrupt(ino, e))
    }

    /// Drops everything cached for an inode (evicted, deleted, reloaded).
    pub fn forget_inode(&self, ino: InodeNo) {
        self.state.write().drop_entry(ino);
    }

    /// Drops every inode's mappings (the volume turned read-only after an
    /// abort: the cached mappings may describe discarded changes).
    pub fn forget_all(&self) {
        let mut st = self.state.write();
        let inos: alloc::vec::Vec<InodeNo> = st.inodes.keys().copied().collect();
        for ino in inos {
            st.drop_entry(ino);
        }
    }

    /// Verifies every fork and the budget bookkeeping.
    pub fn check_invariants(&self) -> Result<(), String> {
        let st = self.state.read();
        let mut sum = 0;
        for (ino, e) in &st.inodes {
            e.cache
                .check_invariants()
                .map_err(|m| format!("inode {ino}: {m}"))?;
            if e.bytes != INODE_OVERHEAD + e.cache.memory_bytes() {
                return Err(format!(
                    "inode {ino}: charged {} bytes, holds {}",
                    e.bytes,
                    e.cache.memory_bytes()
                ));
            }
            if !st.lru.contains(&(e.indexed, *ino)) {
                return Err(format!("inode {ino} missing from the LRU index"));
            }
            sum += e.bytes;
        }
        if st.lru.len() != st.inodes.len() {
            return Err(format!(
                "LRU index has {} entries for {} inodes",
                st.lru.len(),
                st.inodes.len()
            ));
        }
        if sum != st.used {
            return Err(format!("used {} but inodes hold {sum}", st.used));
        }
        if st.used > self.budget {
            return Err(format!("used {} over budget {}", st.used, self.budget));
        }
        Ok(())
    }
}
