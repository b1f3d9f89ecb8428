//! Name indexes of big directories that have no hash tree to look names up
//! in: linear directories (what `mke2fs -d`, ext2 and kernels before
//! `dir_index` write, and what a directory stays when it grew past one
//! block before the feature was on), casefolded ones (this engine cannot
//! hash their names as the kernel does), hash trees found damaged, and
//! hash trees whose collision runs span many leaves. Scanning such a
//! directory for every lookup makes a walk that stats each entry quadratic
//! in the directory's size; an index built on the first lookup that would
//! scan answers the next ones, in any order, with one block read.
//!
//! An index maps a keyed hash of each name to where the entry is (byte
//! position in the directory). It holds no names and trusts nothing: a
//! lookup reads the block at each position whose hash matches (through the
//! block cache, where a leaf's checksum is verified once per cached copy)
//! and compares the entry found there. So an index can only miss a name
//! if the directory changed after it was built (see "Changes").
//!
//! Memory: the indexes of a volume share one byte budget fixed at open
//! ([`crate::OpenOptions::name_index_bytes`]). A build first reserves the
//! most its directory could need (every block full of the smallest
//! records), evicting the least recently used indexes; a directory whose
//! bound exceeds the whole budget (or whose positions would not fit 32
//! bits) is never indexed, whatever its inode claims. Once built, the
//! index is shrunk to its real size and the rest of the reservation given
//! back. The names are hashed with a seed chosen at random per volume, so a
//! hostile image cannot pick names that collide in the index.
//!
//! Without an index (no budget for it, another thread building it, a build
//! that failed on damage), a lookup scans as the kernel's ext4 does: from
//! the block of the previous hit in that directory, wrapping around, so
//! lookups in directory order (what `find`, `tar`, `ls -l` do) read each
//! block about once. That cursor is a small budgeted entry of its own.
//!
//! Changes: an index describes the directory's bytes when it was built.
//! Whoever adds, removes or moves an entry of directory `ino` calls
//! [`NameIndexes::forget`] once the change is in the block cache (the
//! write path does, in `dir_changed`, and `Volume::invalidate_inode` for
//! any inode rewritten); a build that started before it is then not kept
//! (its slot is gone, so its result has nowhere to go). The directory is
//! then scanned until [`CALM_LOOKUPS`] lookups pass without a change, and
//! indexed again: filling a directory (a lookup and an insert per name)
//! does not rebuild the index for every name. For big directories that change often, an
//! index can instead be updated in place: it is a sorted array of
//! `(hash, position)` keys, so an insert or removal is a binary search and
//! a shift of the array, with no block read (give [`Names`] `insert` and
//! `remove` and call them under the write lock when writes need it).

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::hash::{BuildHasher, Hasher};
use core::mem::size_of;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use hashbrown::{DefaultHashBuilder, HashMap};

use crate::blockmap::Run;
use crate::device::BlockDevice;
use crate::dir::{names_equal, Entries};
use crate::error::{Error, Object, Result};
use crate::inode::{flags, Inode};
use crate::numbers::{FileBlock, InodeNo};
use crate::volume::Volume;

/// Smaller directories are always scanned (a few hundred entries at most):
/// an index would save next to nothing. In bytes, not blocks: one 64 KiB
/// block holds thousands of names.
pub const MIN_BYTES: u64 = 12 << 10;

/// Lookups a changed directory is scanned for before it is indexed again:
/// a directory being filled (a lookup, then an insert, per new name) would
/// otherwise rebuild its index for every name.
pub const CALM_LOOKUPS: u32 = 64;

/// What one directory's slot costs beyond its keys: the map entry (twice,
/// for the map's spare capacity) and the shared index's header.
const SLOT_CHARGE: usize = 2 * size_of::<(InodeNo, Slot)>() + size_of::<Names>() + 32;

/// The index of one directory: `hash << 32 | position / 4`, sorted, so the
/// entries of one hash are adjacent and in directory order (a damaged
/// directory may repeat a name; the first one wins, as in a scan).
pub struct Names {
    keys: Vec<u64>,
}

impl Names {
    /// Positions (byte offset in the directory / 4) of the entries whose
    /// name hashes to `hash`, in directory order.
    fn positions(&self, hash: u32) -> impl Iterator<Item = u32> + '_ {
        let lo = (hash as u64) << 32;
        let start = self.keys.partition_point(|&k| k < lo);
        self.keys[start..]
            .iter()
            .take_while(move |&&k| (k >> 32) as u32 == hash)
            .map(|&k| k as u32)
    }

    /// Entries indexed.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn charge(&self) -> usize {
        self.keys.capacity() * size_of::<u64>() + SLOT_CHARGE
    }
}

enum State {
    Ready(Arc<Names>),
    /// A build is under way, begun under this generation (its
    /// reservation is the slot's charge).
    Building(u64),
    /// Scanned, not indexed: the block of the last hit, and the lookups
    /// since the directory last changed.
    Cursor(AtomicU64, AtomicU32),
}

struct Slot {
    state: State,
    /// Bytes of the budget this slot holds.
    charge: usize,
    /// Clock value of the last use, for least-recently-used eviction.
    used: AtomicU64,
}

struct Table {
    slots: HashMap<InodeNo, Slot>,
    /// Sum of the slots' charges.
    charged: usize,
}

/// What a lookup in a directory should do.
pub(crate) enum Plan {
    /// Use this index.
    Index(Arc<Names>),
    /// Scan from this block (0 when nothing is known).
    Scan(u64),
    /// Build the index: the reservation is held under this generation.
    Build(u64),
}

/// How a build ended.
enum Outcome {
    Built(Arc<Names>),
    /// The directory's block map is damaged: scan it from now on.
    Damaged,
    /// It could not be read (an I/O error): try again next time.
    Failed,
}

/// Counters of a volume's name indexes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NameIndexStats {
    /// Directories indexed now.
    pub indexes: usize,
    /// Entries in those indexes.
    pub entries: usize,
    /// Bytes of the budget held (indexes, builds under way, cursors).
    pub bytes: usize,
    pub budget: usize,
    /// Indexes built so far.
    pub builds: u64,
    /// Indexes dropped to make room.
    pub evictions: u64,
}

/// The name indexes of one volume, within one budget.
pub struct NameIndexes {
    budget: usize,
    table: spin::RwLock<Table>,
    hasher: DefaultHashBuilder,
    clock: AtomicU64,
    /// Numbers the builds, so that one whose slot was forgotten (and
    /// perhaps taken by a newer build) cannot install its index.
    generation: AtomicU64,
    builds: AtomicU64,
    evictions: AtomicU64,
}

impl NameIndexes {
    pub fn new(budget: usize) -> Self {
        NameIndexes {
            budget,
            table: spin::RwLock::new(Table {
                slots: HashMap::new(),
                charged: 0,
            }),
            hasher: DefaultHashBuilder::default(),
            clock: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            builds: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    /// Directory `ino` changed (entries added, removed or moved, or its
    /// inode rewritten): drop its index; it is scanned (from the start)
    /// until [`CALM_LOOKUPS`] lookups pass without another change.
    /// Inodes never looked up in (files, small directories) have nothing
    /// to drop and get nothing.
    pub fn forget(&self, ino: InodeNo) {
        {
            let mut t = self.table.write();
            let Some(s) = t.slots.remove(&ino) else {
                return;
            };
            t.charged -= s.charge;
        }
        self.insert(ino, cursor(), SLOT_CHARGE);
    }

    /// Forget every directory.
    pub fn clear(&self) {
        let mut t = self.table.write();
        t.slots.clear();
        t.charged = 0;
    }

    pub fn stats(&self) -> NameIndexStats {
        let t = self.table.read();
        let mut st = NameIndexStats {
            bytes: t.charged,
            budget: self.budget,
            builds: self.builds.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            ..NameIndexStats::default()
        };
        for s in t.slots.values() {
            if let State::Ready(n) = &s.state {
                st.indexes += 1;
                st.entries += n.len();
            }
        }
        st
    }

    /// Whether directory `ino` has an index now.
    pub fn has_index(&self, ino: InodeNo) -> bool {
        let t = self.table.read();
        matches!(
            t.slots.get(&ino),
            Some(Slot {
                state: State::Ready(_),
                ..
            })
        )
    }

    /// The hash a name is indexed under (ASCII letters folded in a
    /// casefolded directory, matching [`names_equal`]).
    fn hash(&self, name: &[u8], fold: bool) -> u32 {
        let mut h = self.hasher.build_hasher();
        if fold {
            let mut buf = [0u8; 255];
            let n = name.len().min(buf.len());
            for (d, s) in buf.iter_mut().zip(&name[..n]) {
                *d = s.to_ascii_lowercase();
            }
            h.write(&buf[..n]);
        } else {
            h.write(name);
        }
        (h.finish() >> 32) as u32
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// Decide how to look a name up in directory `ino`, whose index could
    /// need up to `bound` bytes (`None`: it cannot be indexed).
    pub(crate) fn plan(&self, ino: InodeNo, bound: Option<usize>) -> Plan {
        {
            let t = self.table.read();
            if let Some(s) = t.slots.get(&ino) {
                s.used.store(self.tick(), Ordering::Relaxed);
                match &s.state {
                    State::Ready(n) => return Plan::Index(n.clone()),
                    State::Building(_) => return Plan::Scan(0),
                    State::Cursor(c, calm) => {
                        let fits = bound.is_some_and(|b| b + SLOT_CHARGE <= self.budget);
                        if !fits || calm.fetch_add(1, Ordering::Relaxed) + 1 < CALM_LOOKUPS {
                            return Plan::Scan(c.load(Ordering::Relaxed));
                        }
                    }
                }
            }
        }
        // A calm cursor: index the directory (again).
        {
            let mut t = self.table.write();
            if let Some(s) = t.slots.remove(&ino) {
                t.charged -= s.charge;
            }
        }
        let need = match bound {
            Some(b) if b.saturating_add(SLOT_CHARGE) <= self.budget => b + SLOT_CHARGE,
            // Not indexable: keep only a cursor, if there is room for one.
            _ => {
                self.insert(ino, cursor(), SLOT_CHARGE);
                return Plan::Scan(0);
            }
        };
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        if self.insert(ino, State::Building(generation), need) {
            Plan::Build(generation)
        } else {
            Plan::Scan(0)
        }
    }

    /// Add a slot for `ino` charged `charge` bytes, evicting the least
    /// recently used slots (never a build under way) to make room. False
    /// when it cannot fit, or `ino` already has a slot.
    fn insert(&self, ino: InodeNo, state: State, charge: usize) -> bool {
        if charge > self.budget {
            return false;
        }
        let mut t = self.table.write();
        if t.slots.contains_key(&ino) {
            return false;
        }
        while t.charged + charge > self.budget {
            let victim = t
                .slots
                .iter()
                .filter(|(_, s)| !matches!(s.state, State::Building(_)))
                .min_by_key(|(_, s)| s.used.load(Ordering::Relaxed))
                .map(|(&k, _)| k);
            let Some(v) = victim else {
                return false;
            };
            if let Some(s) = t.slots.remove(&v) {
                t.charged -= s.charge;
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        t.charged += charge;
        let used = AtomicU64::new(self.tick());
        t.slots.insert(
            ino,
            Slot {
                state,
                charge,
                used,
            },
        );
        true
    }

    /// End the build of `ino` begun under `generation`; the reservation
    /// is given back, all of it or what the outcome does not keep.
    fn finish(&self, ino: InodeNo, generation: u64, outcome: Outcome) {
        let mut t = self.table.write();
        let Some(s) = t.slots.get_mut(&ino) else {
            return;
        };
        // Only the build that holds the slot: a change forgets the slot,
        // and a build begun after it holds a new one.
        if !matches!(s.state, State::Building(g) if g == generation) {
            return;
        }
        let old = s.charge;
        match outcome {
            Outcome::Built(n) => {
                s.charge = n.charge().min(old);
                s.state = State::Ready(n);
                self.builds.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Damaged => {
                s.charge = SLOT_CHARGE.min(old);
                s.state = cursor();
            }
            Outcome::Failed => {
                t.slots.remove(&ino);
                t.charged -= old;
                return;
            }
        }
        let new = s.charge;
        t.charged -= old - new;
    }

    /// Remember that a scan of `ino` found a name in block `lblk`.
    fn set_cursor(&self, ino: InodeNo, lblk: u64) {
        let t = self.table.read();
        if let Some(Slot {
            state: State::Cursor(c, _),
            ..
        }) = t.slots.get(&ino)
        {
            c.store(lblk, Ordering::Relaxed);
        }
    }
}

fn cursor() -> State {
    State::Cursor(AtomicU64::new(0), AtomicU32::new(0))
}

/// Upper bound of the index of a directory of `nblocks` blocks of `bs`
/// bytes, in bytes; `None` when its positions would not fit 32 bits (a
/// directory of 16 GiB or more).
fn bound_bytes(nblocks: u64, bs: u64) -> Option<usize> {
    if nblocks.checked_mul(bs)? > (u32::MAX as u64 + 1) * 4 {
        return None;
    }
    // Records are at least 12 bytes, except one 8-byte record ending a block.
    let per_block = bs / 12 + 1;
    let n = nblocks.checked_mul(per_block)?;
    usize::try_from(n.checked_mul(size_of::<u64>() as u64)?).ok()
}

impl<D: BlockDevice> Volume<D> {
    /// Look `name` up in a directory that has no hash tree to use:
    /// through its name index when it is big enough to have one, else by
    /// a scan from the block of the last hit.
    pub(crate) fn scan_lookup(&self, dir: &Inode, name: &[u8]) -> Result<Option<InodeNo>> {
        let bs = self.sb().block_size as u64;
        let nblocks = dir.size.div_ceil(bs);
        if dir.size < MIN_BYTES {
            return self.linear_lookup(dir, name, 0, nblocks);
        }
        let names = self.name_indexes();
        match names.plan(dir.ino, bound_bytes(nblocks, bs)) {
            Plan::Index(n) => self.index_lookup(dir, &n, name),
            Plan::Scan(from) => self.cursor_lookup(dir, name, from, nblocks),
            Plan::Build(generation) => {
                let cap = bound_bytes(nblocks, bs).unwrap_or(0) / size_of::<u64>();
                match self.build_names(dir, nblocks, cap) {
                    Ok(n) => {
                        let n = Arc::new(n);
                        names.finish(dir.ino, generation, Outcome::Built(n.clone()));
                        self.index_lookup(dir, &n, name)
                    }
                    Err(e) => {
                        let outcome = if e.is_corruption() {
                            Outcome::Damaged
                        } else {
                            Outcome::Failed
                        };
                        names.finish(dir.ino, generation, outcome);
                        self.cursor_lookup(dir, name, 0, nblocks)
                    }
                }
            }
        }
    }

    /// Scan blocks `from..nblocks`, then `0..from`, as the kernel's
    /// `ext4_find_entry` does, and remember where the name was.
    fn cursor_lookup(
        &self,
        dir: &Inode,
        name: &[u8],
        from: u64,
        nblocks: u64,
    ) -> Result<Option<InodeNo>> {
        let from = if from < nblocks { from } else { 0 };
        let hit = match self.linear_find(dir, name, from, nblocks)? {
            Some(h) => Some(h),
            None => self.linear_find(dir, name, 0, from)?,
        };
        Ok(hit.map(|(ino, lblk)| {
            self.name_indexes().set_cursor(dir.ino, lblk);
            ino
        }))
    }

    /// Read every block of `dir` once and index its names. Any damage
    /// fails the build (the caller then scans, and never indexes the
    /// directory again until it changes).
    fn build_names(&self, dir: &Inode, nblocks: u64, cap: usize) -> Result<Names> {
        let dx = self.is_dx(dir);
        let fold = dir.has_flag(flags::CASEFOLD);
        let bs = self.sb().block_size as u64;
        let indexes = self.name_indexes();
        let mut keys: Vec<u64> = Vec::new();
        keys.try_reserve_exact(cap)
            .map_err(|_| Error::corrupt(Object::Inode(dir.ino), "directory too big to index"))?;
        let mut lblk = 0;
        while lblk < nblocks {
            let (pblk, len) = match self.map_block_at(dir, lblk)? {
                Run::Hole { len } => {
                    lblk += len;
                    continue;
                }
                Run::Mapped { pblk, len, .. } => (pblk, len.min(nblocks - lblk)),
            };
            for i in 0..len {
                let l = lblk + i;
                let r = self.cache_read_marked(pblk + i, |block, mark| -> Result<()> {
                    let Some(area) = self.scan_area(dir, dx, block, l, mark)? else {
                        return Ok(());
                    };
                    let obj = Object::DirBlock {
                        dir: dir.ino,
                        lblk: FileBlock(l as u32),
                    };
                    for e in Entries::new(area, 0, self.sb().inodes_count, obj) {
                        let e = e?;
                        if e.inode == 0 {
                            continue;
                        }
                        if keys.len() == keys.capacity() {
                            // The bound is every block full of the smallest
                            // records: only a bug gets here.
                            return Err(Error::corrupt(obj, "more entries than blocks can hold"));
                        }
                        let pos = ((l * bs + e.offset as u64) / 4) as u32;
                        let h = indexes.hash(e.name, fold);
                        keys.push((h as u64) << 32 | pos as u64);
                    }
                    Ok(())
                });
                // Damage ends the build: the directory is scanned instead,
                // so the one damage policy of a scan (`search_block`:
                // report and skip, or fail as the kernel does) decides
                // every lookup in it.
                r.and_then(|r| r)?;
            }
            lblk += len;
        }
        keys.sort_unstable();
        keys.shrink_to_fit();
        Ok(Names { keys })
    }

    /// Look `name` up through `dir`'s index: read the entry at each
    /// position whose hash matches and compare.
    fn index_lookup(&self, dir: &Inode, names: &Names, name: &[u8]) -> Result<Option<InodeNo>> {
        let dx = self.is_dx(dir);
        let fold = dir.has_flag(flags::CASEFOLD);
        let bs = self.sb().block_size as u64;
        let h = self.name_indexes().hash(name, fold);
        for pos in names.positions(h) {
            let byte = pos as u64 * 4;
            let (l, off) = (byte / bs, (byte % bs) as usize);
            let pblk = match self.map_block_at(dir, l)? {
                Run::Mapped { pblk, .. } => pblk,
                Run::Hole { .. } => continue,
            };
            let found = self.cache_read_marked(pblk, |block, mark| -> Result<Option<InodeNo>> {
                let Some(area) = self.scan_area(dir, dx, block, l, mark)? else {
                    return Ok(None);
                };
                let obj = Object::DirBlock {
                    dir: dir.ino,
                    lblk: FileBlock(l as u32),
                };
                match Entries::new(area, off, self.sb().inodes_count, obj).next() {
                    Some(Ok(e)) if e.inode != 0 && names_equal(e.name, name, fold) => {
                        Ok(Some(InodeNo(e.inode)))
                    }
                    Some(Err(e)) => Err(e),
                    _ => Ok(None),
                }
            });
            match found {
                Ok(Ok(Some(ino))) => return Ok(Some(ino)),
                Ok(Ok(None)) => {}
                Ok(Err(e)) | Err(e) => self.report(e),
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(keys: &[(u32, u32)]) -> Names {
        let mut keys: Vec<u64> = keys
            .iter()
            .map(|&(h, p)| (h as u64) << 32 | p as u64)
            .collect();
        keys.sort_unstable();
        Names { keys }
    }

    #[test]
    fn positions_of_a_hash_in_directory_order() {
        let n = names(&[(7, 30), (3, 1), (7, 2), (u32::MAX, 9), (0, 4), (7, 11)]);
        assert_eq!(n.positions(7).collect::<Vec<_>>(), [2, 11, 30]);
        assert_eq!(n.positions(0).collect::<Vec<_>>(), [4]);
        assert_eq!(n.positions(u32::MAX).collect::<Vec<_>>(), [9]);
        assert_eq!(n.positions(5).count(), 0);
    }

    #[test]
    fn bound_covers_the_smallest_records_and_refuses_huge_directories() {
        assert_eq!(bound_bytes(1, 4096), Some((4096 / 12 + 1) * 8));
        assert_eq!(bound_bytes(1, 65536), Some((65536 / 12 + 1) * 8));
        assert!(bound_bytes(1 << 22, 4096).is_some());
        assert_eq!(bound_bytes(1 << 22, 4096 * 1024), None);
        assert_eq!(bound_bytes(u64::MAX, 4096), None);
    }

    fn ready(ix: &NameIndexes, ino: InodeNo, charge: usize) -> bool {
        let Plan::Build(g) = ix.plan(ino, Some(charge - SLOT_CHARGE)) else {
            return false;
        };
        let n = Names {
            keys: Vec::with_capacity((charge - SLOT_CHARGE) / 8),
        };
        ix.finish(ino, g, Outcome::Built(Arc::new(n)));
        true
    }

    #[test]
    fn budget_holds_and_least_recently_used_goes_first() {
        let unit = SLOT_CHARGE + 800;
        let ix = NameIndexes::new(3 * unit);
        assert!(ready(&ix, InodeNo(10), unit));
        assert!(ready(&ix, InodeNo(11), unit));
        assert!(ready(&ix, InodeNo(12), unit));
        assert_eq!(ix.stats().bytes, 3 * unit);
        // Use 10 again: 11 is now the oldest.
        assert!(matches!(ix.plan(InodeNo(10), Some(800)), Plan::Index(_)));
        assert!(ready(&ix, InodeNo(13), unit));
        let st = ix.stats();
        assert_eq!((st.indexes, st.bytes, st.evictions), (3, 3 * unit, 1));
        assert!(
            ix.has_index(InodeNo(10)) && !ix.has_index(InodeNo(11)) && ix.has_index(InodeNo(13))
        );
        // Too big for the whole budget: never built, scanned with a cursor.
        assert!(matches!(
            ix.plan(InodeNo(14), Some(3 * unit)),
            Plan::Scan(0)
        ));
        ix.set_cursor(InodeNo(14), 5);
        assert!(matches!(
            ix.plan(InodeNo(14), Some(3 * unit)),
            Plan::Scan(5)
        ));
        assert!(ix.stats().bytes <= 3 * unit);
    }

    #[test]
    fn a_build_overtaken_by_a_change_is_not_kept() {
        let ix = NameIndexes::new(1 << 20);
        let Plan::Build(g) = ix.plan(InodeNo(5), Some(64)) else {
            panic!("no build")
        };
        // Meanwhile: another lookup scans; the directory changes.
        assert!(matches!(ix.plan(InodeNo(5), Some(64)), Plan::Scan(0)));
        ix.forget(InodeNo(5));
        // Scanned while it may still be changing, then indexed again.
        for _ in 1..CALM_LOOKUPS {
            assert!(matches!(ix.plan(InodeNo(5), Some(64)), Plan::Scan(0)));
        }
        let Plan::Build(g2) = ix.plan(InodeNo(5), Some(64)) else {
            panic!("no second build")
        };
        ix.finish(
            InodeNo(5),
            g,
            Outcome::Built(Arc::new(Names { keys: Vec::new() })),
        );
        assert!(!ix.has_index(InodeNo(5)), "a stale build was kept");
        ix.finish(
            InodeNo(5),
            g2,
            Outcome::Built(Arc::new(Names { keys: Vec::new() })),
        );
        assert!(ix.has_index(InodeNo(5)));
        ix.forget(InodeNo(5));
        assert!(!ix.has_index(InodeNo(5)));
        assert_eq!(ix.stats().bytes, SLOT_CHARGE);
    }

    #[test]
    fn a_failed_build_leaves_a_cursor_and_gives_the_reservation_back() {
        let ix = NameIndexes::new(1 << 20);
        let Plan::Build(g) = ix.plan(InodeNo(5), Some(100_000)) else {
            panic!("no build")
        };
        assert_eq!(ix.stats().bytes, 100_000 + SLOT_CHARGE);
        ix.finish(InodeNo(5), g, Outcome::Damaged);
        assert_eq!(ix.stats().bytes, SLOT_CHARGE);
        assert!(matches!(ix.plan(InodeNo(5), Some(100_000)), Plan::Scan(0)));
    }

    #[test]
    fn no_budget_no_slots() {
        let ix = NameIndexes::new(0);
        assert!(matches!(ix.plan(InodeNo(5), Some(8)), Plan::Scan(0)));
        ix.set_cursor(InodeNo(5), 3);
        assert!(matches!(ix.plan(InodeNo(5), Some(8)), Plan::Scan(0)));
        assert_eq!(ix.stats().bytes, 0);
    }

    #[test]
    fn folded_hashes_ignore_ascii_case() {
        let ix = NameIndexes::new(0);
        assert_eq!(ix.hash(b"ReadMe.TXT", true), ix.hash(b"readme.txt", true));
        assert_eq!(ix.hash(b"same", false), ix.hash(b"same", false));
    }
}
