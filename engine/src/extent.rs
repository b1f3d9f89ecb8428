//! Extent trees: on-disk layout, validation, and the walk that maps a
//! logical block to the run of blocks around it.

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::checksum::crc32c;
use crate::error::{Error, Object, Result};
use crate::numbers::{FileBlock, PhysBlock};

pub const MAGIC: u16 = 0xF30A;
/// The kernel builds at most 5 levels and refuses to read deeper trees;
/// e2fsprogs reads them (and `e2fsck -fn` passes them), so the engine reads
/// up to this bound, which keeps every walk short.
pub const MAX_DEPTH: u16 = 16;
/// `ee_len` above this marks an unwritten (uninitialised) extent.
pub const INIT_MAX_LEN: u16 = 32768;

#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Header {
    pub magic: U16,
    pub entries: U16,
    pub max: U16,
    pub depth: U16,
    pub generation: U32,
}

#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawIndex {
    pub block: U32,
    pub leaf_lo: U32,
    pub leaf_hi: U16,
    pub unused: U16,
}

#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawExtent {
    pub block: U32,
    pub len: U16,
    pub start_hi: U16,
    pub start_lo: U32,
}

/// A leaf extent, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub lblk: FileBlock,
    pub len: u32,
    pub pblk: PhysBlock,
    pub unwritten: bool,
}

impl Extent {
    /// The first logical block after the extent (up to `FileBlock::COUNT`).
    pub fn end(&self) -> u64 {
        self.lblk.get() + self.len as u64
    }
}

/// One node of the tree (the root in `i_block` or a tree block), checked.
pub struct Node<'a> {
    pub depth: u16,
    pub entries: usize,
    body: &'a [u8],
}

impl<'a> Node<'a> {
    /// Parse and check a node. `expect_depth` is the depth the parent
    /// implies (None for the root). `obj` names the node in errors.
    pub fn parse(bytes: &'a [u8], expect_depth: Option<u16>, obj: Object) -> Result<Node<'a>> {
        let bad = |what| Err(Error::corrupt(obj, what));
        let Ok((h, _)) = Header::read_from_prefix(bytes) else {
            return bad("extent header truncated");
        };
        if h.magic.get() != MAGIC {
            return bad("extent header has a bad magic number");
        }
        let depth = h.depth.get();
        if depth > MAX_DEPTH {
            return bad("extent tree is deeper than 16 levels");
        }
        if let Some(d) = expect_depth {
            if d != depth {
                return bad("extent node depth does not match its parent");
            }
        }
        let max = h.max.get() as usize;
        let entries = h.entries.get() as usize;
        if max == 0 || 12 + max * 12 > bytes.len() {
            return bad("extent header's maximum entry count does not fit the node");
        }
        if entries > max {
            return bad("extent node has more entries than its maximum");
        }
        Ok(Node {
            depth,
            entries,
            body: &bytes[12..12 + entries * 12],
        })
    }

    /// Index entry `i`: the first logical block it covers and the tree
    /// block below it.
    pub fn index(&self, i: usize) -> (FileBlock, PhysBlock) {
        let r = RawIndex::read_from_bytes(&self.body[i * 12..i * 12 + 12])
            .unwrap_or_else(|_| RawIndex::new_zeroed());
        (
            FileBlock(r.block.get()),
            PhysBlock(r.leaf_lo.get() as u64 | (r.leaf_hi.get() as u64) << 32),
        )
    }

    pub fn extent(&self, i: usize) -> Extent {
        let r = RawExtent::read_from_bytes(&self.body[i * 12..i * 12 + 12])
            .unwrap_or_else(|_| RawExtent::new_zeroed());
        let raw_len = r.len.get();
        let (len, unwritten) = if raw_len > INIT_MAX_LEN {
            (raw_len - INIT_MAX_LEN, true)
        } else {
            (raw_len, false)
        };
        Extent {
            lblk: FileBlock(r.block.get()),
            len: len as u32,
            pblk: PhysBlock(r.start_lo.get() as u64 | (r.start_hi.get() as u64) << 32),
            unwritten,
        }
    }

    /// Index of the last entry whose first logical block is <= `lblk`
    /// (entries are sorted by logical block), or None if `lblk` precedes
    /// them all.
    pub fn search(&self, lblk: FileBlock) -> Option<usize> {
        let lblk = lblk.0;
        let key = |i: usize| {
            u32::from_le_bytes([
                self.body[i * 12],
                self.body[i * 12 + 1],
                self.body[i * 12 + 2],
                self.body[i * 12 + 3],
            ])
        };
        let (mut lo, mut hi) = (0usize, self.entries);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if key(mid) <= lblk {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1)
    }

    /// The first logical block of entry `i`.
    pub fn key(&self, i: usize) -> FileBlock {
        FileBlock(u32::from_le_bytes([
            self.body[i * 12],
            self.body[i * 12 + 1],
            self.body[i * 12 + 2],
            self.body[i * 12 + 3],
        ]))
    }
}

/// Offset of the checksum tail in a tree block: after `max` entries.
pub fn tail_offset(block: &[u8]) -> Option<usize> {
    let h = Header::read_from_prefix(block).ok()?.0;
    let off = 12 + h.max.get() as usize * 12;
    (off + 4 <= block.len()).then_some(off)
}

/// Whether a tree block's checksum tail matches (`seed` is the inode's).
pub fn checksum_ok(block: &[u8], seed: u32) -> bool {
    match tail_offset(block) {
        Some(off) => {
            let stored =
                u32::from_le_bytes([block[off], block[off + 1], block[off + 2], block[off + 3]]);
            crc32c(seed, &block[..off]) == stored
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts() {
        assert_eq!(size_of::<Header>(), 12);
        assert_eq!(size_of::<RawIndex>(), 12);
        assert_eq!(size_of::<RawExtent>(), 12);
    }

    #[test]
    fn root_node_search() {
        let mut b = [0u8; 60];
        b[0..2].copy_from_slice(&MAGIC.to_le_bytes());
        b[2..4].copy_from_slice(&2u16.to_le_bytes());
        b[4..6].copy_from_slice(&4u16.to_le_bytes());
        // extents at lblk 10 (len 5) and 100 (len 32769 = unwritten 1)
        b[12..16].copy_from_slice(&10u32.to_le_bytes());
        b[16..18].copy_from_slice(&5u16.to_le_bytes());
        b[20..24].copy_from_slice(&500u32.to_le_bytes());
        b[24..28].copy_from_slice(&100u32.to_le_bytes());
        b[28..30].copy_from_slice(&32769u16.to_le_bytes());
        b[32..36].copy_from_slice(&900u32.to_le_bytes());
        let obj = Object::Inode(crate::numbers::InodeNo(12));
        let n = Node::parse(&b, None, obj).unwrap();
        assert_eq!(n.search(FileBlock(9)), None);
        assert_eq!(n.search(FileBlock(10)), Some(0));
        assert_eq!(n.search(FileBlock(99)), Some(0));
        assert_eq!(n.search(FileBlock(100)), Some(1));
        assert_eq!(
            n.extent(1),
            Extent {
                lblk: FileBlock(100),
                len: 1,
                pblk: PhysBlock(900),
                unwritten: true
            }
        );
        // max 5 entries would not fit in 60 bytes
        b[4..6].copy_from_slice(&5u16.to_le_bytes());
        assert!(Node::parse(&b, None, obj).is_err());
    }
}
