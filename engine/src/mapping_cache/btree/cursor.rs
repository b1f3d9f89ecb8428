//! Positions on a fork's records and in-order iteration, across leaves by
//! their links.

use super::fork::{ForkTree, Repr};
use super::*;

impl ForkTree {
    /// A cursor on the record covering `off`, or else the first after it.
    pub fn cursor(&self, off: u64) -> Cursor<'_> {
        let q = off.min(KEY_INVALID - 1);
        let pos = match &self.repr {
            Repr::Small(v) => {
                let r = v.iter().map(|m| (m.offset <= q) as usize).sum::<usize>();
                if r > 0 && v[r - 1].covers(off) {
                    Some((0, r - 1))
                } else if r < v.len() {
                    Some((0, r))
                } else {
                    None
                }
            }
            Repr::Tree(t) => {
                let id = t.find_leaf(q);
                let leaf = &t.leaves[id as usize];
                let r = leaf.rank(q);
                if r > 0 && leaf.recs[r - 1].covers(off) {
                    Some((id, r - 1))
                } else if r < leaf.nr() {
                    Some((id, r))
                } else if leaf.next != NIL {
                    Some((leaf.next, 0))
                } else {
                    None
                }
            }
        };
        Cursor { fork: self, pos }
    }

    pub fn cursor_first(&self) -> Cursor<'_> {
        let pos = match &self.repr {
            Repr::Small(v) if v.is_empty() => None,
            Repr::Small(_) => Some((0, 0)),
            Repr::Tree(t) => Some((t.first_leaf(), 0)),
        };
        Cursor { fork: self, pos }
    }

    pub fn cursor_last(&self) -> Cursor<'_> {
        let pos = match &self.repr {
            Repr::Small(v) => v.len().checked_sub(1).map(|i| (0, i)),
            Repr::Tree(t) => {
                let id = t.last_leaf();
                Some((id, t.leaves[id as usize].nr() - 1))
            }
        };
        Cursor { fork: self, pos }
    }

    /// All records in order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            cur: self.cursor_first(),
        }
    }
}

/// A position on one record of a fork; moves across leaves by their links.
#[derive(Clone)]
pub struct Cursor<'a> {
    fork: &'a ForkTree,
    /// (leaf id, index); the leaf id is 0 for a small fork. `None` = off
    /// either end.
    pos: Option<(u32, usize)>,
}

impl<'a> Cursor<'a> {
    /// The record under the cursor.
    pub fn get(&self) -> Option<Mapping> {
        let (id, i) = self.pos?;
        match &self.fork.repr {
            Repr::Small(v) => v.get(i).copied(),
            Repr::Tree(t) => Some(t.leaves[id as usize].recs[i]),
        }
    }

    /// Moves to the next record; returns it.
    pub fn next_rec(&mut self) -> Option<Mapping> {
        let (id, i) = self.pos?;
        self.pos = match &self.fork.repr {
            Repr::Small(v) => (i + 1 < v.len()).then_some((0, i + 1)),
            Repr::Tree(t) => {
                let l = &t.leaves[id as usize];
                if i + 1 < l.nr() {
                    Some((id, i + 1))
                } else if l.next != NIL {
                    Some((l.next, 0))
                } else {
                    None
                }
            }
        };
        self.get()
    }

    /// Moves to the previous record; returns it.
    pub fn prev_rec(&mut self) -> Option<Mapping> {
        let (id, i) = self.pos?;
        self.pos = match &self.fork.repr {
            Repr::Small(_) => i.checked_sub(1).map(|j| (0, j)),
            Repr::Tree(t) => {
                if i > 0 {
                    Some((id, i - 1))
                } else {
                    let p = t.leaves[id as usize].prev;
                    (p != NIL).then(|| (p, t.leaves[p as usize].nr() - 1))
                }
            }
        };
        self.get()
    }
}

/// In-order iterator over a fork's records.
pub struct Iter<'a> {
    cur: Cursor<'a>,
}

impl Iterator for Iter<'_> {
    type Item = Mapping;
    fn next(&mut self) -> Option<Mapping> {
        let m = self.cur.get()?;
        self.cur.next_rec();
        Some(m)
    }
}
