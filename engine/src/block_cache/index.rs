//! Which block each buffer holds, and in what order buffers are reused.
//!
//! Everything lives in arrays sized once in [`Index::new`]: a chained hash
//! table (bucket heads plus a `hash_next` link per buffer) and one
//! most-recently-used list per priority level (intrusive `prev`/`next`
//! links). No operation allocates, and the number of hash entries can never
//! exceed the number of buffers.
//!
//! Priorities: a buffer starts at level 0 and climbs one level every
//! [`PROMOTE_EVERY`] accesses. Victims are taken from the least recently
//! used end of level 0 first, so a long scan of blocks touched once only
//! recycles level-0 buffers and leaves promoted (hot) ones alone. Levels
//! above 0 may hold at most `cap` buffers together; when a promotion goes
//! over that, the promoted buffer used least recently (whatever its level)
//! drops back to level 0, so metadata that was hot long ago cannot hold the
//! cache forever.

use alloc::vec;
use alloc::vec::Vec;

pub(super) const NIL: u32 = u32::MAX;
/// Number of priority levels (0 = new or demoted, `LEVELS - 1` = hottest).
pub(super) const LEVELS: usize = 4;
/// Accesses per one-level promotion.
pub(super) const PROMOTE_EVERY: u8 = 50;

#[derive(Clone, Copy)]
struct Node {
    block: u64,
    /// Value of the access clock at the last access (orders promoted buffers
    /// of different levels when one must be demoted).
    last: u64,
    hash_next: u32,
    prev: u32,
    next: u32,
    level: u8,
    accesses: u8,
    hashed: bool,
}

pub(super) struct Index {
    nodes: Vec<Node>,
    buckets: Vec<u32>,
    bits: u32,
    /// Most recently used end of each level's list.
    head: [u32; LEVELS],
    /// Least recently used end.
    tail: [u32; LEVELS],
    len: [u32; LEVELS],
    /// Most buffers levels 1.. may hold together.
    cap: u32,
    clock: u64,
}

impl Index {
    pub(super) fn new(n: u32) -> Self {
        let nb = (n as usize).saturating_mul(2).next_power_of_two().max(1);
        let free = Node {
            block: 0,
            last: 0,
            hash_next: NIL,
            prev: NIL,
            next: NIL,
            level: 0,
            accesses: 0,
            hashed: false,
        };
        let mut ix = Index {
            nodes: vec![free; n as usize],
            buckets: vec![NIL; nb],
            bits: nb.trailing_zeros(),
            head: [NIL; LEVELS],
            tail: [NIL; LEVELS],
            len: [0; LEVELS],
            // Keep at least a quarter (and at least one buffer) for level 0,
            // where new blocks arrive.
            cap: n - (n / 4).max(1).min(n),
            clock: 0,
        };
        for i in 0..n {
            ix.push_lru(i, 0);
        }
        ix
    }

    fn bucket(&self, block: u64) -> usize {
        if self.bits == 0 {
            return 0;
        }
        // Fibonacci hashing: consecutive block numbers spread over buckets.
        (block.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - self.bits)) as usize
    }

    pub(super) fn find(&self, block: u64) -> Option<u32> {
        let mut i = self.buckets[self.bucket(block)];
        while i != NIL {
            let n = &self.nodes[i as usize];
            if n.block == block {
                return Some(i);
            }
            i = n.hash_next;
        }
        None
    }

    /// The block buffer `i` holds, if it holds one.
    pub(super) fn block_of(&self, i: u32) -> Option<u64> {
        let n = &self.nodes[i as usize];
        n.hashed.then_some(n.block)
    }

    fn hash_insert(&mut self, i: u32, block: u64) {
        let b = self.bucket(block);
        let n = &mut self.nodes[i as usize];
        n.block = block;
        n.hashed = true;
        n.hash_next = self.buckets[b];
        self.buckets[b] = i;
    }

    fn hash_remove(&mut self, i: u32) {
        if !self.nodes[i as usize].hashed {
            return;
        }
        let b = self.bucket(self.nodes[i as usize].block);
        let next = self.nodes[i as usize].hash_next;
        if self.buckets[b] == i {
            self.buckets[b] = next;
        } else {
            let mut p = self.buckets[b];
            while p != NIL {
                let pn = self.nodes[p as usize].hash_next;
                if pn == i {
                    self.nodes[p as usize].hash_next = next;
                    break;
                }
                p = pn;
            }
        }
        let n = &mut self.nodes[i as usize];
        n.hashed = false;
        n.hash_next = NIL;
    }

    fn unlink(&mut self, i: u32) {
        let Node {
            prev, next, level, ..
        } = self.nodes[i as usize];
        let l = level as usize;
        if prev == NIL {
            self.head[l] = next;
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next == NIL {
            self.tail[l] = prev;
        } else {
            self.nodes[next as usize].prev = prev;
        }
        self.len[l] -= 1;
        let n = &mut self.nodes[i as usize];
        n.prev = NIL;
        n.next = NIL;
    }

    fn push_mru(&mut self, i: u32, level: usize) {
        let old = self.head[level];
        {
            let n = &mut self.nodes[i as usize];
            n.level = level as u8;
            n.prev = NIL;
            n.next = old;
        }
        if old == NIL {
            self.tail[level] = i;
        } else {
            self.nodes[old as usize].prev = i;
        }
        self.head[level] = i;
        self.len[level] += 1;
    }

    fn push_lru(&mut self, i: u32, level: usize) {
        let old = self.tail[level];
        {
            let n = &mut self.nodes[i as usize];
            n.level = level as u8;
            n.next = NIL;
            n.prev = old;
        }
        if old == NIL {
            self.head[level] = i;
        } else {
            self.nodes[old as usize].next = i;
        }
        self.tail[level] = i;
        self.len[level] += 1;
    }

    fn tick(&mut self, i: u32) {
        self.clock += 1;
        self.nodes[i as usize].last = self.clock;
    }

    /// Record an access to buffer `i`: it becomes the most recently used of
    /// its level, and every `PROMOTE_EVERY`th access moves it up a level.
    pub(super) fn touch(&mut self, i: u32) {
        self.tick(i);
        let n = &mut self.nodes[i as usize];
        n.accesses = n.accesses.saturating_add(1);
        let mut level = n.level as usize;
        if n.accesses >= PROMOTE_EVERY {
            n.accesses = 0;
            if level + 1 < LEVELS && self.cap > 0 {
                level += 1;
            }
        }
        self.unlink(i);
        self.push_mru(i, level);
        if self.protected() > self.cap {
            self.demote_oldest();
        }
    }

    fn protected(&self) -> u32 {
        self.len[1..].iter().sum()
    }

    /// Move the least recently used buffer of levels 1.. to level 0.
    fn demote_oldest(&mut self) {
        let mut pick = NIL;
        for l in 1..LEVELS {
            let t = self.tail[l];
            if t != NIL
                && (pick == NIL || self.nodes[t as usize].last < self.nodes[pick as usize].last)
            {
                pick = t;
            }
        }
        if pick != NIL {
            self.unlink(pick);
            self.nodes[pick as usize].accesses = 0;
            self.push_mru(pick, 0);
        }
    }

    /// Give buffer `i` to `block` (the caller has made sure nobody uses it
    /// and that `block` is not already present).
    pub(super) fn assign(&mut self, i: u32, block: u64) {
        self.hash_remove(i);
        self.hash_insert(i, block);
        self.unlink(i);
        self.nodes[i as usize].accesses = 1;
        self.push_mru(i, 0);
        self.tick(i);
    }

    /// Forget what buffer `i` holds; it becomes the first to be reused.
    pub(super) fn unhash(&mut self, i: u32) {
        self.hash_remove(i);
        self.unlink(i);
        self.nodes[i as usize].accesses = 0;
        self.push_lru(i, 0);
    }

    /// The first buffer accepted by `ok`, from the least recently used end
    /// of level 0 upwards.
    pub(super) fn victim(&self, mut ok: impl FnMut(u32) -> bool) -> Option<u32> {
        for l in 0..LEVELS {
            let mut i = self.tail[l];
            while i != NIL {
                if ok(i) {
                    return Some(i);
                }
                i = self.nodes[i as usize].prev;
            }
        }
        None
    }

    #[cfg(test)]
    pub(super) fn level_of(&self, i: u32) -> u8 {
        self.nodes[i as usize].level
    }

    /// Check the links against each other (tests only).
    #[cfg(test)]
    pub(super) fn check(&self) {
        let n = self.nodes.len();
        let mut seen = vec![false; n];
        for l in 0..LEVELS {
            let mut count = 0;
            let mut prev = NIL;
            let mut i = self.head[l];
            while i != NIL {
                assert!(!seen[i as usize], "buffer {i} on two lists");
                seen[i as usize] = true;
                let nd = &self.nodes[i as usize];
                assert_eq!(nd.level as usize, l);
                assert_eq!(nd.prev, prev);
                prev = i;
                i = nd.next;
                count += 1;
            }
            assert_eq!(self.tail[l], prev);
            assert_eq!(self.len[l], count);
        }
        assert!(seen.iter().all(|&s| s), "buffer on no list");
        assert!(self.protected() <= self.cap);
        let mut hashed = 0;
        for (b, &head) in self.buckets.iter().enumerate() {
            let mut i = head;
            while i != NIL {
                let nd = &self.nodes[i as usize];
                assert!(nd.hashed);
                assert_eq!(self.bucket(nd.block), b);
                assert_eq!(self.find(nd.block), Some(i), "duplicate block");
                hashed += 1;
                i = nd.hash_next;
            }
        }
        assert_eq!(hashed, self.nodes.iter().filter(|n| n.hashed).count());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promotion_every_50_accesses_and_cap() {
        let mut ix = Index::new(8); // cap = 6
        ix.assign(0, 100);
        for _ in 0..(PROMOTE_EVERY - 2) {
            ix.touch(0);
        }
        assert_eq!(ix.level_of(0), 0);
        ix.touch(0);
        assert_eq!(ix.level_of(0), 1);
        for _ in 0..PROMOTE_EVERY as usize * 10 {
            ix.touch(0);
        }
        assert_eq!(ix.level_of(0), (LEVELS - 1) as u8);
        ix.check();
        // Promote seven more: the cap (6) demotes the oldest promoted one.
        for b in 1..8u32 {
            ix.assign(b, 100 + b as u64);
            for _ in 0..PROMOTE_EVERY {
                ix.touch(b);
            }
            ix.check();
        }
        assert_eq!(ix.level_of(0), 0, "buffer 0 was promoted longest ago");
        assert_eq!(ix.level_of(7), 1);
    }

    #[test]
    fn victims_come_from_level_zero_lru_first() {
        let mut ix = Index::new(8);
        for b in 0..8u32 {
            ix.assign(b, b as u64);
        }
        for _ in 0..PROMOTE_EVERY {
            ix.touch(0);
        }
        // Buffer 0 is hot; buffer 1 is the LRU of level 0.
        assert_eq!(ix.victim(|_| true), Some(1));
        assert_eq!(ix.victim(|i| i != 1), Some(2));
        assert_eq!(ix.victim(|i| i == 0), Some(0));
        ix.unhash(5);
        assert_eq!(ix.victim(|_| true), Some(5));
        assert_eq!(ix.find(5), None);
        assert_eq!(ix.find(6), Some(6));
        ix.check();
    }

    #[test]
    fn hash_chains_survive_many_reassignments() {
        let mut ix = Index::new(5);
        for k in 0..1000u64 {
            let i = (k % 5) as u32;
            ix.assign(i, k * 7919);
            assert_eq!(ix.find(k * 7919), Some(i));
            if k % 3 == 0 {
                ix.unhash(i);
                assert_eq!(ix.find(k * 7919), None);
            }
        }
        ix.check();
        let empty = Index::new(0);
        assert_eq!(empty.find(0), None);
        assert_eq!(empty.victim(|_| true), None);
        empty.check();
    }
}
