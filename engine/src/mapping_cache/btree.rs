//! One fork's records in an in-memory B+tree (the shape of the kernel's
//! incore extent tree): fixed-size nodes in an arena addressed by `u32`
//! indices, inner nodes of 16 keys + 16 children, leaves of 7 records with
//! links to their neighbours. A fork of at most 7 records is instead a plain
//! array sized to its count.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use super::record::{BadRecord, MapType, Mapping, NULL_ADDR, OFFSET_LIMIT};

/// Records per leaf.
pub const LEAF_RECS: usize = 7;
/// Keys (and children) per inner node.
pub const INNER_KEYS: usize = 16;
/// The marker in an unused key slot (and in the offset of an unused leaf
/// slot). No record starts there, so it sorts after every real key.
pub const KEY_INVALID: u64 = 1 << 63;
const NIL: u32 = u32::MAX;
/// Deepest tree the fixed-size descent path holds; a tree about to grow past
/// it is rebuilt compactly instead (never happens with sane fill, but the
/// local merge rules alone do not bound the height).
const MAX_HEIGHT: usize = 32;

const EMPTY_REC: Mapping = Mapping {
    offset: KEY_INVALID,
    length: 0,
    addr: NULL_ADDR,
    kind: MapType::Hole,
    flags: 0,
    dev: 0,
};

#[derive(Clone)]
struct Leaf {
    recs: [Mapping; LEAF_RECS],
    prev: u32,
    next: u32,
}

#[derive(Clone)]
struct Inner {
    keys: [u64; INNER_KEYS],
    child: [u32; INNER_KEYS],
}

/// Bytes of one leaf / inner node (both fit the 256-byte node of the design).
pub const LEAF_BYTES: usize = core::mem::size_of::<Leaf>();
pub const INNER_BYTES: usize = core::mem::size_of::<Inner>();
const _: () = assert!(LEAF_BYTES <= 256 && INNER_BYTES <= 256);

const EMPTY_LEAF: Leaf = Leaf {
    recs: [EMPTY_REC; LEAF_RECS],
    prev: NIL,
    next: NIL,
};
const EMPTY_INNER: Inner = Inner {
    keys: [KEY_INVALID; INNER_KEYS],
    child: [NIL; INNER_KEYS],
};

impl Leaf {
    /// Used slots form a prefix, unused ones carry the invalid offset.
    #[inline]
    fn nr(&self) -> usize {
        self.rank(KEY_INVALID - 1)
    }

    /// How many records start at or before `q` (`q < KEY_INVALID`).
    /// Branch-free: seven compares beat a search at this size.
    #[inline]
    fn rank(&self, q: u64) -> usize {
        self.recs.iter().map(|r| (r.offset <= q) as usize).sum()
    }
}

impl Inner {
    #[inline]
    fn nr(&self) -> usize {
        self.rank(KEY_INVALID - 1)
    }

    #[inline]
    fn rank(&self, q: u64) -> usize {
        self.keys.iter().map(|&k| (k <= q) as usize).sum()
    }

    /// The child to descend into for `q`: the last whose key is `<= q`, or
    /// the first when `q` is before every key (only on the leftmost path).
    #[inline]
    fn pick(&self, q: u64) -> usize {
        self.rank(q).saturating_sub(1)
    }
}

/// Root-to-leaf path of a descent: inner node and chosen child per level.
struct Path {
    node: [u32; MAX_HEIGHT],
    idx: [u8; MAX_HEIGHT],
    leaf: u32,
}

/// A tree of height >= 1 in its own arena.
#[derive(Clone)]
struct Tree {
    leaves: Vec<Leaf>,
    inners: Vec<Inner>,
    free_leaf: u32,
    free_inner: u32,
    nfree_leaf: usize,
    nfree_inner: usize,
    root: u32,
    /// Levels including the leaf level; 1 means the root is a leaf.
    height: usize,
}

/// Grow an arena by an eighth (at least 4 nodes): memory stays close to
/// what is used, and realloc of large blocks is cheap.
fn grow<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact((v.len() / 8).max(4));
    }
}

impl Tree {
    fn leaf_root(recs: &[Mapping]) -> Tree {
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
    fn build(recs: &[Mapping]) -> Tree {
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

    fn memory_bytes(&self) -> usize {
        self.leaves.capacity() * LEAF_BYTES + self.inners.capacity() * INNER_BYTES
    }

    /// Whether the arenas are mostly free space and worth rebuilding.
    fn sparse(&self) -> bool {
        let cap = self.leaves.capacity() + self.inners.capacity();
        let used = self.leaves.len() - self.nfree_leaf + self.inners.len() - self.nfree_inner;
        cap >= 32 && used * 2 < cap
    }

    fn alloc_leaf(&mut self) -> u32 {
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

    fn free_leaf(&mut self, id: u32) {
        let l = &mut self.leaves[id as usize];
        *l = EMPTY_LEAF;
        l.next = self.free_leaf;
        self.free_leaf = id;
        self.nfree_leaf += 1;
    }

    fn alloc_inner(&mut self) -> u32 {
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

    fn free_inner(&mut self, id: u32) {
        let n = &mut self.inners[id as usize];
        *n = EMPTY_INNER;
        n.child[0] = self.free_inner;
        self.free_inner = id;
        self.nfree_inner += 1;
    }

    /// The leaf whose records are the right place for `q`.
    #[inline]
    fn find_leaf(&self, q: u64) -> u32 {
        let mut node = self.root;
        for _ in 1..self.height {
            let inner = &self.inners[node as usize];
            node = inner.child[inner.pick(q)];
        }
        node
    }

    fn descend(&self, q: u64) -> Path {
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
    fn pred_succ(&self, q: u64) -> (Option<Mapping>, Option<Mapping>) {
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
    fn update_key(&mut self, path: &Path, level: usize, key: u64) {
        for l in (0..level).rev() {
            let i = path.idx[l] as usize;
            self.inners[path.node[l] as usize].keys[i] = key;
            if i != 0 {
                break;
            }
        }
    }

    /// Whether the node at `level` of `path` is the last one of its level.
    fn rightmost(&self, path: &Path, level: usize) -> bool {
        (0..level).all(|l| path.idx[l] as usize + 1 == self.inners[path.node[l] as usize].nr())
    }

    /// Inserts a record whose offset is not in the tree.
    fn insert(&mut self, rec: Mapping) {
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
    fn insert_into_parent(&mut self, path: &Path, mut level: usize, mut key: u64, mut id: u32) {
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
    fn replace(&mut self, old_off: u64, rec: Mapping) {
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
    fn delete(&mut self, off: u64) {
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

    fn unlink_leaf(&mut self, id: u32) {
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
    fn remove_from_inner(&mut self, path: &Path, mut level: usize, mut i: usize) {
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

    fn first_leaf(&self) -> u32 {
        let mut node = self.root;
        for _ in 1..self.height {
            node = self.inners[node as usize].child[0];
        }
        node
    }

    fn last_leaf(&self) -> u32 {
        let mut node = self.root;
        for _ in 1..self.height {
            let n = &self.inners[node as usize];
            node = n.child[n.nr() - 1];
        }
        node
    }

    fn records(&self) -> Vec<Mapping> {
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

#[derive(Clone)]
enum Repr {
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
    repr: Repr,
    len: usize,
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

    /// Walks the whole structure and reports the first broken invariant:
    /// record order/overlap/length/mergeability, node fill (no empty node,
    /// used slots a prefix, unused slots marked, root with >= 2 children),
    /// keys equal to subtree minima, uniform depth, leaf links, and arena
    /// bookkeeping (every node reachable or free, exactly once).
    pub fn check_invariants(&self) -> Result<(), String> {
        let recs: Vec<Mapping> = match &self.repr {
            Repr::Small(v) => {
                if v.len() > LEAF_RECS {
                    return Err(format!("small fork holds {} records", v.len()));
                }
                v.clone()
            }
            Repr::Tree(t) => check_tree(t)?,
        };
        if recs.len() != self.len {
            return Err(format!("len {} but {} records", self.len, recs.len()));
        }
        for (i, r) in recs.iter().enumerate() {
            if r.length == 0 {
                return Err(format!("record {i} has length 0: {r:?}"));
            }
            r.validate()
                .map_err(|e| format!("record {i} invalid ({}): {r:?}", e.0))?;
            if let Some(n) = recs.get(i + 1) {
                if n.offset <= r.offset {
                    return Err(format!("records {i},{} out of order", i + 1));
                }
                if r.end() > n.offset {
                    return Err(format!("records {i},{} overlap: {r:?} {n:?}", i + 1));
                }
                if r.can_merge(n) {
                    return Err(format!("records {i},{} mergeable: {r:?} {n:?}", i + 1));
                }
            }
        }
        Ok(())
    }
}

fn check_tree(t: &Tree) -> Result<Vec<Mapping>, String> {
    if t.height < 2 || t.height > MAX_HEIGHT {
        return Err(format!("tree of height {}", t.height));
    }
    let mut seen_leaf = vec![false; t.leaves.len()];
    let mut seen_inner = vec![false; t.inners.len()];
    let mut leaves_in_order: Vec<u32> = Vec::new();
    // (node, level, expected min key or None for the root)
    let mut stack: Vec<(u32, usize, Option<u64>)> = vec![(t.root, 0, None)];
    while let Some((id, level, want)) = stack.pop() {
        if level == t.height - 1 {
            let l = t
                .leaves
                .get(id as usize)
                .ok_or_else(|| format!("leaf {id} out of arena"))?;
            if core::mem::replace(&mut seen_leaf[id as usize], true) {
                return Err(format!("leaf {id} reached twice"));
            }
            let nr = l.nr();
            if nr == 0 {
                return Err(format!("empty leaf {id}"));
            }
            if l.recs[nr..].iter().any(|r| *r != EMPTY_REC) {
                return Err(format!(
                    "leaf {id}: used slots not a prefix or unused slot not cleared"
                ));
            }
            if let Some(k) = want {
                if l.recs[0].offset != k {
                    return Err(format!(
                        "leaf {id} starts at {} but its key is {k}",
                        l.recs[0].offset
                    ));
                }
            }
            leaves_in_order.push(id);
        } else {
            let n = t
                .inners
                .get(id as usize)
                .ok_or_else(|| format!("inner {id} out of arena"))?;
            if core::mem::replace(&mut seen_inner[id as usize], true) {
                return Err(format!("inner {id} reached twice"));
            }
            let nr = n.nr();
            if nr == 0 || (level == 0 && nr < 2) {
                return Err(format!("inner {id} at level {level} has {nr} children"));
            }
            if n.keys[nr..].iter().any(|&k| k != KEY_INVALID)
                || n.child[nr..].iter().any(|&c| c != NIL)
            {
                return Err(format!("inner {id}: unused slot not marked"));
            }
            if n.child[..nr].contains(&NIL) {
                return Err(format!("inner {id}: used slot without child"));
            }
            if n.keys[..nr].windows(2).any(|w| w[0] >= w[1]) {
                return Err(format!("inner {id}: keys not ascending"));
            }
            if let Some(k) = want {
                if n.keys[0] != k {
                    return Err(format!(
                        "inner {id} first key {} but parent key {k}",
                        n.keys[0]
                    ));
                }
            }
            for i in (0..nr).rev() {
                stack.push((n.child[i], level + 1, Some(n.keys[i])));
            }
        }
    }
    // Leaf links must be the in-order leaf sequence, both ways.
    for (i, &id) in leaves_in_order.iter().enumerate() {
        let l = &t.leaves[id as usize];
        let want_prev = if i == 0 { NIL } else { leaves_in_order[i - 1] };
        let want_next = leaves_in_order.get(i + 1).copied().unwrap_or(NIL);
        if l.prev != want_prev || l.next != want_next {
            return Err(format!(
                "leaf {id}: links ({}, {}) expected ({want_prev}, {want_next})",
                l.prev, l.next
            ));
        }
    }
    // Free lists hold exactly the unreachable nodes.
    let mut nfree = 0;
    let mut f = t.free_leaf;
    while f != NIL {
        let s = seen_leaf
            .get_mut(f as usize)
            .ok_or("free leaf out of arena")?;
        if core::mem::replace(s, true) {
            return Err(format!("free leaf {f} is in use or listed twice"));
        }
        nfree += 1;
        f = t.leaves[f as usize].next;
    }
    if nfree != t.nfree_leaf || seen_leaf.iter().any(|s| !s) {
        return Err(format!(
            "leaf arena: {nfree} free listed, {} counted, or a leaked leaf",
            t.nfree_leaf
        ));
    }
    let mut nfree = 0;
    let mut f = t.free_inner;
    while f != NIL {
        let s = seen_inner
            .get_mut(f as usize)
            .ok_or("free inner out of arena")?;
        if core::mem::replace(s, true) {
            return Err(format!("free inner {f} is in use or listed twice"));
        }
        nfree += 1;
        f = t.inners[f as usize].child[0];
    }
    if nfree != t.nfree_inner || seen_inner.iter().any(|s| !s) {
        return Err(format!(
            "inner arena: {nfree} free listed, {} counted, or a leaked inner",
            t.nfree_inner
        ));
    }
    let mut recs = Vec::new();
    for &id in &leaves_in_order {
        let l = &t.leaves[id as usize];
        recs.extend_from_slice(&l.recs[..l.nr()]);
    }
    if recs.len() <= LEAF_RECS && leaves_in_order.len() == 1 {
        return Err(String::from("tree of one leaf should be a small fork"));
    }
    Ok(recs)
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

// Offsets handed to the tree are below the marker (validated records), so
// OFFSET_LIMIT and KEY_INVALID must be the same boundary.
const _: () = assert!(OFFSET_LIMIT == KEY_INVALID);
