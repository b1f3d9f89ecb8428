//! The invariant checker: walks a whole fork and names the first broken
//! rule (the tests run it after every change).

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use super::arena::Tree;
use super::fork::{ForkTree, Repr};
use super::*;

impl ForkTree {
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
