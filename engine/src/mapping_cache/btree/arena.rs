//! The B+tree proper: leaves and inner nodes in an arena, descent, and
//! insertion and deletion with splits, merges and rebalancing.

use alloc::vec::Vec;

use super::*;

/// Root-to-leaf path of a descent: inner node and chosen child per level.
pub(super) struct Path {
    node: [u32; MAX_HEIGHT],
    idx: [u8; MAX_HEIGHT],
    leaf: u32,
}

/// A tree of height >= 1 in its own arena.
#[derive(Clone)]
pub(super) struct Tree {
    pub(super) leaves: Vec<Leaf>,
    pub(super) inners: Vec<Inner>,
    pub(super) free_leaf: u32,
    pub(super) free_inner: u32,
    pub(super) nfree_leaf: usize,
    pub(super) nfree_inner: usize,
    pub(super) root: u32,
    /// Levels including the leaf level; 1 means the root is a leaf.
    pub(super) height: usize,
}

/// Grow an arena by an eighth (at least 4 nodes): memory stays close to
/// what is used, and realloc of large blocks is cheap.
fn grow<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact((v.len() / 8).max(4));
    }
}

impl Tree {
    pub(super) fn leaf_root(recs: &[Mapping]) -> Tree {
        let mut leaf = EMPTY_LEAF;
        leaf.recs[..recs.len()].copy_from_slice(recs);
        let mut leaves = Vec::with_capacity(4);
        leaves.push(leaf);
        Tree {
            leaves,
            inners: Vec::new(),
            free_leaf: NIL,
            free_inner: NIL,
            nfree_leaf: 0,
            nfree_inner: 0,
            root: 0,
            height: 1,
        }
    }

    /// Bulk load from sorted records (at least one): nodes filled evenly,
    /// arenas sized exactly.
    pub(super) fn build(recs: &[Mapping]) -> Tree {
        let groups = |n: usize, cap: usize| n.div_ceil(cap).max(1);
        let nleaves = groups(recs.len(), LEAF_RECS);
        let mut leaves = Vec::with_capacity(nleaves);
        let mut level: Vec<(u64, u32)> = Vec::with_capacity(nleaves);
        let mut start = 0;
        for i in 0..nleaves {
            let end = recs.len() * (i + 1) / nleaves;
            let mut leaf = EMPTY_LEAF;
            leaf.recs[..end - start].copy_from_slice(&recs[start..end]);
            leaf.prev = if i == 0 { NIL } else { (i - 1) as u32 };
            leaf.next = if i + 1 == nleaves {
                NIL
            } else {
                (i + 1) as u32
            };
            level.push((recs[start].offset, i as u32));
            leaves.push(leaf);
            start = end;
        }
        let mut inner_count = 0;
        let mut n = nleaves;
        while n > 1 {
            n = groups(n, INNER_KEYS);
            inner_count += n;
        }
        let mut inners = Vec::with_capacity(inner_count);
        let mut height = 1;
        while level.len() > 1 {
            let ng = groups(level.len(), INNER_KEYS);
            let mut up = Vec::with_capacity(ng);
            let mut start = 0;
            for g in 0..ng {
                let end = level.len() * (g + 1) / ng;
                let mut node = EMPTY_INNER;
                for (j, &(k, c)) in level[start..end].iter().enumerate() {
                    node.keys[j] = k;
                    node.child[j] = c;
                }
                up.push((level[start].0, inners.len() as u32));
                inners.push(node);
                start = end;
            }
            level = up;
            height += 1;
        }
        Tree {
            leaves,
            inners,
            free_leaf: NIL,
            free_inner: NIL,
            nfree_leaf: 0,
            nfree_inner: 0,
            root: level[0].1,
            height,
        }
    }

    pub(super) fn memory_bytes(&self) -> usize {
        self.leaves.capacity() * LEAF_BYTES + self.inners.capacity() * INNER_BYTES
    }

    /// Whether the arenas are mostly free space and worth rebuilding.
    pub(super) fn sparse(&self) -> bool {
        let cap = self.leaves.capacity() + self.inners.capacity();
        let used = self.leaves.len() - self.nfree_leaf + self.inners.len() - self.nfree_inner;
        cap >= 32 && used * 2 < cap
    }

    pub(super) fn alloc_leaf(&mut self) -> u32 {
        if self.free_leaf != NIL {
            let id = self.free_leaf;
            self.free_leaf = self.leaves[id as usize].next;
            self.nfree_leaf -= 1;
            self.leaves[id as usize] = EMPTY_LEAF;
            id
        } else {
            grow(&mut self.leaves);
            self.leaves.push(EMPTY_LEAF);
            (self.leaves.len() - 1) as u32
        }
    }

    pub(super) fn free_leaf(&mut self, id: u32) {
        let l = &mut self.leaves[id as usize];
        *l = EMPTY_LEAF;
        l.next = self.free_leaf;
        self.free_leaf = id;
        self.nfree_leaf += 1;
    }

    pub(super) fn alloc_inner(&mut self) -> u32 {
        if self.free_inner != NIL {
            let id = self.free_inner;
            self.free_inner = self.inners[id as usize].child[0];
            self.nfree_inner -= 1;
            self.inners[id as usize] = EMPTY_INNER;
            id
        } else {
            grow(&mut self.inners);
            self.inners.push(EMPTY_INNER);
            (self.inners.len() - 1) as u32
        }
    }

    pub(super) fn free_inner(&mut self, id: u32) {
        let n = &mut self.inners[id as usize];
        *n = EMPTY_INNER;
        n.child[0] = self.free_inner;
        self.free_inner = id;
        self.nfree_inner += 1;
    }

    /// The leaf whose records are the right place for `q`.
    #[inline]
    pub(super) fn find_leaf(&self, q: u64) -> u32 {
        let mut node = self.root;
        for _ in 1..self.height {
            let inner = &self.inners[node as usize];
            node = inner.child[inner.pick(q)];
        }
        node
    }

    pub(super) fn descend(&self, q: u64) -> Path {
        let mut p = Path {
            node: [NIL; MAX_HEIGHT],
            idx: [0; MAX_HEIGHT],
            leaf: NIL,
        };
        let mut node = self.root;
        for l in 0..self.height - 1 {
            let inner = &self.inners[node as usize];
            let i = inner.pick(q);
            p.node[l] = node;
            p.idx[l] = i as u8;
            node = inner.child[i];
        }
        p.leaf = node;
        p
    }

    /// Last record starting at or before `q`, and first starting after it.
    #[inline]
    pub(super) fn pred_succ(&self, q: u64) -> (Option<Mapping>, Option<Mapping>) {
        let leaf = &self.leaves[self.find_leaf(q) as usize];
        let r = leaf.rank(q);
        let pred = if r > 0 { Some(leaf.recs[r - 1]) } else { None };
        let succ = if r < LEAF_RECS && leaf.recs[r].offset != KEY_INVALID {
            Some(leaf.recs[r])
        } else if leaf.next != NIL {
            Some(self.leaves[leaf.next as usize].recs[0])
        } else {
            None
        };
        (pred, succ)
    }

    /// The node at `level` of `path` now starts at `key`: fix the keys of
    /// its ancestors for which it is (part of) the first child.
    pub(super) fn update_key(&mut self, path: &Path, level: usize, key: u64) {
        for l in (0..level).rev() {
            let i = path.idx[l] as usize;
            self.inners[path.node[l] as usize].keys[i] = key;
            if i != 0 {
                break;
            }
        }
    }

    /// Whether the node at `level` of `path` is the last one of its level.
    pub(super) fn rightmost(&self, path: &Path, level: usize) -> bool {
        (0..level).all(|l| path.idx[l] as usize + 1 == self.inners[path.node[l] as usize].nr())
    }

    /// Inserts a record whose offset is not in the tree.
    pub(super) fn insert(&mut self, rec: Mapping) {
        if self.height >= MAX_HEIGHT {
            let mut all = self.records();
            let at = all.partition_point(|r| r.offset < rec.offset);
            all.insert(at, rec);
            *self = Tree::build(&all);
            return;
        }
        let path = self.descend(rec.offset);
        let leaf_level = self.height - 1;
        let id = path.leaf as usize;
        let nr = self.leaves[id].nr();
        let pos = self.leaves[id].rank(rec.offset);
        if nr < LEAF_RECS {
            let leaf = &mut self.leaves[id];
            leaf.recs.copy_within(pos..nr, pos + 1);
            leaf.recs[pos] = rec;
            if pos == 0 {
                self.update_key(&path, leaf_level, rec.offset);
            }
            return;
        }
        let new = self.alloc_leaf();
        let (old, nw) = if id < new as usize {
            let (a, b) = self.leaves.split_at_mut(new as usize);
            (&mut a[id], &mut b[0])
        } else {
            let (a, b) = self.leaves.split_at_mut(id);
            (&mut b[0], &mut a[new as usize])
        };
        let keep = LEAF_RECS.div_ceil(2);
        let mut first_changed = false;
        if pos == LEAF_RECS && old.next == NIL {
            // Appending at the very end: spill into an empty node so that
            // sequentially built forks end up with full leaves.
            nw.recs[0] = rec;
        } else if pos < keep {
            let from = keep - 1;
            nw.recs[..LEAF_RECS - from].copy_from_slice(&old.recs[from..]);
            old.recs[from..].fill(EMPTY_REC);
            old.recs.copy_within(pos..from, pos + 1);
            old.recs[pos] = rec;
            first_changed = pos == 0;
        } else {
            nw.recs[..LEAF_RECS - keep].copy_from_slice(&old.recs[keep..]);
            old.recs[keep..].fill(EMPTY_REC);
            let p = pos - keep;
            nw.recs.copy_within(p..LEAF_RECS - keep, p + 1);
            nw.recs[p] = rec;
        }
        nw.prev = path.leaf;
        nw.next = old.next;
        old.next = new;
        let after = nw.next;
        let new_key = nw.recs[0].offset;
        if after != NIL {
            self.leaves[after as usize].prev = new;
        }
        if first_changed {
            self.update_key(&path, leaf_level, rec.offset);
        }
        self.insert_into_parent(&path, leaf_level, new_key, new);
    }

    /// Node `id` (starting at `key`) was split off the node at `level` of
    /// `path` and goes right after it in the parent.
    pub(super) fn insert_into_parent(
        &mut self,
        path: &Path,
        mut level: usize,
        mut key: u64,
        mut id: u32,
    ) {
        loop {
            if level == 0 {
                let old_root = self.root;
                let old_key = if self.height == 1 {
                    self.leaves[old_root as usize].recs[0].offset
                } else {
                    self.inners[old_root as usize].keys[0]
                };
                let r = self.alloc_inner();
                let root = &mut self.inners[r as usize];
                root.keys[0] = old_key;
                root.child[0] = old_root;
                root.keys[1] = key;
                root.child[1] = id;
                self.root = r;
                self.height += 1;
                return;
            }
            let l = level - 1;
            let parent = path.node[l] as usize;
            let pos = path.idx[l] as usize + 1;
            let nr = self.inners[parent].nr();
            if nr < INNER_KEYS {
                let n = &mut self.inners[parent];
                n.keys.copy_within(pos..nr, pos + 1);
                n.child.copy_within(pos..nr, pos + 1);
                n.keys[pos] = key;
                n.child[pos] = id;
                return;
            }
            let at_end = pos == INNER_KEYS && self.rightmost(path, l);
            let new = self.alloc_inner();
            let (old, nw) = {
                let (a, b) = self.inners.split_at_mut(parent.max(new as usize));
                if parent < new as usize {
                    (&mut a[parent], &mut b[0])
                } else {
                    (&mut b[0], &mut a[new as usize])
                }
            };
            let keep = INNER_KEYS.div_ceil(2);
            if at_end {
                nw.keys[0] = key;
                nw.child[0] = id;
            } else if pos < keep {
                let from = keep - 1;
                nw.keys[..INNER_KEYS - from].copy_from_slice(&old.keys[from..]);
                nw.child[..INNER_KEYS - from].copy_from_slice(&old.child[from..]);
                old.keys[from..].fill(KEY_INVALID);
                old.child[from..].fill(NIL);
                old.keys.copy_within(pos..from, pos + 1);
                old.child.copy_within(pos..from, pos + 1);
                old.keys[pos] = key;
                old.child[pos] = id;
            } else {
                let m = INNER_KEYS - keep;
                nw.keys[..m].copy_from_slice(&old.keys[keep..]);
                nw.child[..m].copy_from_slice(&old.child[keep..]);
                old.keys[keep..].fill(KEY_INVALID);
                old.child[keep..].fill(NIL);
                let p = pos - keep;
                nw.keys.copy_within(p..m, p + 1);
                nw.child.copy_within(p..m, p + 1);
                nw.keys[p] = key;
                nw.child[p] = id;
            }
            key = nw.keys[0];
            id = new;
            level = l;
        }
    }

    /// Overwrites the record starting at `old_off` with `rec`, which must
    /// keep its place in the order (its offset may move within the gap).
    pub(super) fn replace(&mut self, old_off: u64, rec: Mapping) {
        let path = self.descend(old_off);
        let leaf = &mut self.leaves[path.leaf as usize];
        let r = leaf.rank(old_off);
        if r == 0 || leaf.recs[r - 1].offset != old_off {
            debug_assert!(false, "replace of a missing record");
            return;
        }
        leaf.recs[r - 1] = rec;
        if r == 1 && rec.offset != old_off {
            self.update_key(&path, self.height - 1, rec.offset);
        }
    }

    /// Deletes the record starting at `off` and rebalances.
    pub(super) fn delete(&mut self, off: u64) {
        let path = self.descend(off);
        let id = path.leaf as usize;
        let leaf = &mut self.leaves[id];
        let nr = leaf.nr();
        let r = leaf.rank(off);
        if r == 0 || leaf.recs[r - 1].offset != off {
            debug_assert!(false, "delete of a missing record");
            return;
        }
        let pos = r - 1;
        leaf.recs.copy_within(pos + 1..nr, pos);
        leaf.recs[nr - 1] = EMPTY_REC;
        let nr = nr - 1;
        if self.height == 1 {
            return;
        }
        let leaf_level = self.height - 1;
        if pos == 0 && nr > 0 {
            let k = self.leaves[id].recs[0].offset;
            self.update_key(&path, leaf_level, k);
        }
        if nr >= LEAF_RECS / 2 {
            return;
        }
        let l = leaf_level - 1;
        let parent = path.node[l] as usize;
        let i = path.idx[l] as usize;
        let pnr = self.inners[parent].nr();
        if nr == 0 {
            self.unlink_leaf(path.leaf);
            self.free_leaf(path.leaf);
            self.remove_from_inner(&path, l, i);
            return;
        }
        if i > 0 {
            let prev = self.inners[parent].child[i - 1];
            let pn = self.leaves[prev as usize].nr();
            if pn + nr <= LEAF_RECS {
                let moved = self.leaves[id].recs;
                self.leaves[prev as usize].recs[pn..pn + nr].copy_from_slice(&moved[..nr]);
                self.unlink_leaf(path.leaf);
                self.free_leaf(path.leaf);
                self.remove_from_inner(&path, l, i);
                return;
            }
        }
        if i + 1 < pnr {
            let next = self.inners[parent].child[i + 1];
            let nn = self.leaves[next as usize].nr();
            if nr + nn <= LEAF_RECS {
                let moved = self.leaves[next as usize].recs;
                self.leaves[id].recs[nr..nr + nn].copy_from_slice(&moved[..nn]);
                self.unlink_leaf(next);
                self.free_leaf(next);
                self.remove_from_inner(&path, l, i + 1);
            }
        }
    }

    pub(super) fn unlink_leaf(&mut self, id: u32) {
        let (prev, next) = {
            let l = &self.leaves[id as usize];
            (l.prev, l.next)
        };
        if prev != NIL {
            self.leaves[prev as usize].next = next;
        }
        if next != NIL {
            self.leaves[next as usize].prev = prev;
        }
    }

    /// Removes child `i` of the inner node at `level` of `path`, then
    /// rebalances that node (merge with a sibling, free, collapse the root).
    pub(super) fn remove_from_inner(&mut self, path: &Path, mut level: usize, mut i: usize) {
        loop {
            let id = path.node[level] as usize;
            let n = &mut self.inners[id];
            let nr = n.nr();
            n.keys.copy_within(i + 1..nr, i);
            n.child.copy_within(i + 1..nr, i);
            n.keys[nr - 1] = KEY_INVALID;
            n.child[nr - 1] = NIL;
            let nr = nr - 1;
            if i == 0 && nr > 0 {
                let k = n.keys[0];
                self.update_key(path, level, k);
            }
            if level == 0 {
                // A root with a single child hands the root over to it.
                while self.height > 1 && self.inners[self.root as usize].nr() == 1 {
                    let old = self.root;
                    self.root = self.inners[old as usize].child[0];
                    self.free_inner(old);
                    self.height -= 1;
                }
                return;
            }
            if nr >= INNER_KEYS / 2 {
                return;
            }
            let pl = level - 1;
            let parent = path.node[pl] as usize;
            let j = path.idx[pl] as usize;
            let pnr = self.inners[parent].nr();
            if nr == 0 {
                self.free_inner(id as u32);
                level = pl;
                i = j;
                continue;
            }
            if j > 0 {
                let prev = self.inners[parent].child[j - 1] as usize;
                let pn = self.inners[prev].nr();
                if pn + nr <= INNER_KEYS {
                    let moved = self.inners[id].clone();
                    let p = &mut self.inners[prev];
                    p.keys[pn..pn + nr].copy_from_slice(&moved.keys[..nr]);
                    p.child[pn..pn + nr].copy_from_slice(&moved.child[..nr]);
                    self.free_inner(id as u32);
                    level = pl;
                    i = j;
                    continue;
                }
            }
            if j + 1 < pnr {
                let next = self.inners[parent].child[j + 1] as usize;
                let nn = self.inners[next].nr();
                if nr + nn <= INNER_KEYS {
                    let moved = self.inners[next].clone();
                    let me = &mut self.inners[id];
                    me.keys[nr..nr + nn].copy_from_slice(&moved.keys[..nn]);
                    me.child[nr..nr + nn].copy_from_slice(&moved.child[..nn]);
                    self.free_inner(next as u32);
                    level = pl;
                    i = j + 1;
                    continue;
                }
            }
            return;
        }
    }

    pub(super) fn first_leaf(&self) -> u32 {
        let mut node = self.root;
        for _ in 1..self.height {
            node = self.inners[node as usize].child[0];
        }
        node
    }

    pub(super) fn last_leaf(&self) -> u32 {
        let mut node = self.root;
        for _ in 1..self.height {
            let n = &self.inners[node as usize];
            node = n.child[n.nr() - 1];
        }
        node
    }

    pub(super) fn records(&self) -> Vec<Mapping> {
        let mut out = Vec::new();
        let mut id = self.first_leaf();
        while id != NIL {
            let l = &self.leaves[id as usize];
            out.extend_from_slice(&l.recs[..l.nr()]);
            id = l.next;
        }
        out
    }
}
