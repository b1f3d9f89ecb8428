//! One fork's records in an in-memory B+tree (the shape of the kernel's
//! incore extent tree): fixed-size nodes in an arena addressed by `u32`
//! indices, inner nodes of 16 keys + 16 children, leaves of 7 records with
//! links to their neighbours. A fork of at most 7 records is instead a plain
//! array sized to its count.
//!
//! - [`arena`]: the nodes in their arena, descent, insertion and deletion
//!   with splits, merges and rebalancing;
//! - [`fork`]: [`ForkTree`], one fork's records (a small array or a tree)
//!   and the add/remove/upsert rules;
//! - [`check`]: the invariant checker the tests run after every change;
//! - [`cursor`]: positions and in-order iteration across leaf links.

use super::record::{MapType, Mapping, NULL_ADDR, OFFSET_LIMIT};

mod arena;
mod check;
mod cursor;
mod fork;

pub use cursor::{Cursor, Iter};
pub use fork::{Find, ForkTree, Shape};

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

// Offsets handed to the tree are below the marker (validated records), so
// OFFSET_LIMIT and KEY_INVALID must be the same boundary.
const _: () = assert!(OFFSET_LIMIT == KEY_INVALID);
