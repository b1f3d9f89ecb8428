//! [`ForkTree`]: one fork's records, a small array or an [`arena`](super::arena)
//! tree, and the rules for adding, removing and replacing them.

use alloc::boxed::Box;
use alloc::vec::Vec;

use super::super::record::BadRecord;
use super::arena::Tree;
use super::*;

#[derive(Clone)]
pub(super) enum Repr {
    /// At most `LEAF_RECS` records, the vector sized to its count.
    Small(Vec<Mapping>),
    /// More records: a real tree (height >= 2 between operations), boxed
    /// so that the many small forks stay small.
    Tree(Box<Tree>),
}

/// The records of one fork: sorted by offset, never overlapping, never
/// empty, no two neighbours mergeable.
#[derive(Clone)]
pub struct ForkTree {
    pub(super) repr: Repr,
    pub(super) len: usize,
}

impl Default for ForkTree {
    fn default() -> Self {
        ForkTree::new()
    }
}

/// Answer of [`ForkTree::find`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Find {
    /// A record covers the offset.
    Hit(Mapping),
    /// None does; `next` is the first record starting after the offset.
    Miss { next: Option<Mapping> },
}

/// Shape statistics (for tests and benchmarks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    pub height: usize,
    pub leaves: usize,
    pub inners: usize,
    pub free_nodes: usize,
}

impl ForkTree {
    pub const fn new() -> ForkTree {
        ForkTree {
            repr: Repr::Small(Vec::new()),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Heap bytes held (arena capacity, not just what is in use).
    pub fn memory_bytes(&self) -> usize {
        match &self.repr {
            Repr::Small(v) => v.capacity() * core::mem::size_of::<Mapping>(),
            Repr::Tree(t) => core::mem::size_of::<Tree>() + t.memory_bytes(),
        }
    }

    pub fn shape(&self) -> Shape {
        match &self.repr {
            Repr::Small(_) => Shape {
                height: 1,
                leaves: 1,
                ..Shape::default()
            },
            Repr::Tree(t) => Shape {
                height: t.height,
                leaves: t.leaves.len() - t.nfree_leaf,
                inners: t.inners.len() - t.nfree_inner,
                free_nodes: t.nfree_leaf + t.nfree_inner,
            },
        }
    }

    /// Drops every record and frees the storage.
    pub fn clear(&mut self) {
        *self = ForkTree::new();
    }

    /// Last record starting at or before `q` and first starting after it.
    #[inline]
    fn pred_succ(&self, q: u64) -> (Option<Mapping>, Option<Mapping>) {
        // Records start below 2^63, so a larger query asks the same as 2^63-1
        // (and must not meet the unused-slot marker).
        let q = q.min(KEY_INVALID - 1);
        match &self.repr {
            Repr::Small(v) => {
                let r = v.iter().map(|m| (m.offset <= q) as usize).sum::<usize>();
                (r.checked_sub(1).map(|i| v[i]), v.get(r).copied())
            }
            Repr::Tree(t) => t.pred_succ(q),
        }
    }

    /// The record covering `off`, or the next one after it.
    #[inline]
    pub fn find(&self, off: u64) -> Find {
        let (pred, succ) = self.pred_succ(off);
        match pred {
            Some(p) if p.covers(off) => Find::Hit(p),
            _ => Find::Miss { next: succ },
        }
    }

    /// The record covering `off`, if any.
    #[inline]
    pub fn lookup(&self, off: u64) -> Option<Mapping> {
        match self.find(off) {
            Find::Hit(m) => Some(m),
            Find::Miss { .. } => None,
        }
    }

    pub fn first(&self) -> Option<Mapping> {
        self.cursor_first().get()
    }

    pub fn last(&self) -> Option<Mapping> {
        self.cursor_last().get()
    }

    fn raw_insert(&mut self, rec: Mapping) {
        self.len += 1;
        match &mut self.repr {
            Repr::Small(v) if v.len() < LEAF_RECS => {
                let at = v.partition_point(|m| m.offset < rec.offset);
                v.reserve_exact(1);
                v.insert(at, rec);
            }
            Repr::Small(v) => {
                let mut t = Tree::leaf_root(v);
                t.insert(rec);
                self.repr = Repr::Tree(Box::new(t));
            }
            Repr::Tree(t) => t.insert(rec),
        }
    }

    fn raw_delete(&mut self, off: u64) {
        self.len -= 1;
        match &mut self.repr {
            Repr::Small(v) => {
                if let Some(i) = v.iter().position(|m| m.offset == off) {
                    v.remove(i);
                }
            }
            Repr::Tree(t) => {
                t.delete(off);
                if t.height == 1 {
                    // Back to a plain array once the root is a leaf.
                    let l = &t.leaves[t.root as usize];
                    let mut v = Vec::with_capacity(l.nr());
                    v.extend_from_slice(&l.recs[..l.nr()]);
                    self.repr = Repr::Small(v);
                }
            }
        }
    }

    fn raw_replace(&mut self, old_off: u64, rec: Mapping) {
        match &mut self.repr {
            Repr::Small(v) => {
                if let Some(m) = v.iter_mut().find(|m| m.offset == old_off) {
                    *m = rec;
                }
            }
            Repr::Tree(t) => t.replace(old_off, rec),
        }
    }

    /// Adds `rec` into a hole, merging with its neighbours when allowed
    /// (both if the merged length fits, else left, else right). Overlap with
    /// a cached record is an error and changes nothing. Returns whether
    /// anything changed (`false` only for an empty record).
    pub fn add(&mut self, rec: Mapping) -> Result<bool, BadRecord> {
        if rec.length == 0 {
            return Ok(false);
        }
        rec.validate()?;
        let (pred, succ) = self.pred_succ(rec.offset);
        if let Some(p) = pred {
            if p.end() > rec.offset {
                return Err(BadRecord("mapping overlaps a cached mapping"));
            }
        }
        if let Some(s) = succ {
            if s.offset < rec.end() {
                return Err(BadRecord("mapping overlaps a cached mapping"));
            }
        }
        let left = pred.filter(|p| p.can_merge(&rec));
        let right = succ.filter(|s| rec.can_merge(s));
        match (left, right) {
            (Some(p), Some(s)) if p.merged(&rec).can_merge(&s) => {
                self.raw_delete(s.offset);
                self.raw_replace(p.offset, p.merged(&rec).merged(&s));
            }
            (Some(p), _) => self.raw_replace(p.offset, p.merged(&rec)),
            (None, Some(s)) => self.raw_replace(s.offset, rec.merged(&s)),
            (None, None) => self.raw_insert(rec),
        }
        Ok(true)
    }

    /// Removes `off..off+len` (to the end of the address space if that
    /// overflows): records inside go, records across the edges are trimmed
    /// or split. A remainder that would start at or beyond 2^63 (only when
    /// the range ends there) is dropped too. Returns whether anything changed.
    pub fn remove(&mut self, off: u64, len: u64) -> bool {
        let changed = self.remove_inner(off, len);
        if let Repr::Tree(t) = &self.repr {
            if changed && t.sparse() {
                // Mostly free arena: rebuild it compact so the memory the
                // budget counts follows the records.
                let mut recs = t.records();
                self.repr = if recs.len() <= LEAF_RECS {
                    recs.shrink_to_fit();
                    Repr::Small(recs)
                } else {
                    Repr::Tree(Box::new(Tree::build(&recs)))
                };
            }
        }
        changed
    }

    fn remove_inner(&mut self, off: u64, len: u64) -> bool {
        if len == 0 || self.len == 0 {
            return false;
        }
        let end = off.saturating_add(len);
        let (Some(first), Some(last)) = (self.first(), self.last()) else {
            return false;
        };
        if off <= first.offset && end >= last.end() {
            // Everything goes: free the fork in one step.
            self.clear();
            return true;
        }
        let mut changed = false;
        let mut left_piece = None;
        let mut right_piece = None;
        let mut q = end - 1;
        // Walk leftwards from the last record starting before `end`.
        while let Some(r) = self.pred_succ(q).0 {
            if r.end() <= off {
                break;
            }
            changed = true;
            // A piece that would start at or beyond 2^63 cannot be keyed:
            // it is forgotten, which a cache may always do.
            let keep_tail = r.end() > end && end < OFFSET_LIMIT;
            if r.offset < off {
                if keep_tail {
                    self.raw_replace(r.offset, r.head_until(off));
                    self.raw_insert(r.tail_from(end));
                    right_piece = Some(end);
                } else {
                    self.raw_replace(r.offset, r.head_until(off));
                }
                left_piece = Some(r.offset);
                break;
            }
            if keep_tail {
                self.raw_replace(r.offset, r.tail_from(end));
                right_piece = Some(end);
            } else {
                self.raw_delete(r.offset);
            }
            if r.offset == 0 {
                break;
            }
            q = r.offset - 1;
        }
        // A trimmed record is shorter, so it may now fit the 2^63 merge limit
        // with its outer neighbour: keep "no mergeable neighbours" true.
        if let Some(o) = right_piece {
            if let (Some(p), Some(s)) = self.pred_succ(o) {
                if p.offset == o && p.can_merge(&s) {
                    self.raw_delete(s.offset);
                    self.raw_replace(o, p.merged(&s));
                }
            }
        }
        if let Some(o) = left_piece {
            if let (Some(p), Some(me)) = (self.pred_succ(o.wrapping_sub(1)).0, self.lookup(o)) {
                if o > 0 && me.offset == o && p.can_merge(&me) {
                    self.raw_delete(o);
                    self.raw_replace(p.offset, p.merged(&me));
                }
            }
        }
        changed
    }

    /// `remove(rec.offset, rec.length)` then `add(rec)`. Returns whether
    /// anything changed (conservatively `true` for any non-empty record).
    pub fn upsert(&mut self, rec: Mapping) -> Result<bool, BadRecord> {
        if rec.length == 0 {
            return Ok(false);
        }
        rec.validate()?;
        let removed = self.remove(rec.offset, rec.length);
        let added = self.add(rec)?;
        Ok(removed || added)
    }
}
