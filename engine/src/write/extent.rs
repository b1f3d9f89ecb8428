//! Extent tree edits: insert an extent (merging with its neighbour, leaf
//! and index splits, depth growth) and remove a file's tail (trim the last
//! extent, free emptied nodes, back to an empty root). Nodes are edited in
//! place: the root in the inode's `i_block` (written with the inode by the
//! caller), tree blocks under their buffer lock with their checksum tail.
//! The caller holds the inode's lock, so nothing else changes its tree.

use alloc::vec::Vec;

use crate::device::BlockDevice;
use crate::error::{Error, Object, Result};
use crate::extent::{Extent, Node, INIT_MAX_LEN, MAGIC};
use crate::inode::Inode;
use crate::numbers::PhysBlock;
use crate::txn::Handle;
use crate::volume::Volume;
use crate::writable::Cred;

/// The kernel builds at most this many levels below the root.
pub const MAX_DEPTH: u16 = 5;
/// Longest written extent.
pub const MAX_LEN: u32 = INIT_MAX_LEN as u32;

/// Credits of one [`Volume::insert_extent`] in a tree of `depth`: per
/// level the node, a split's new block and its allocation (bitmap and
/// descriptor), one more level for growth, and the inode.
pub fn insert_credits(depth: u16) -> usize {
    4 * (depth as usize + 2) + 1
}

/// Credits of one [`Volume::remove_last_extent`] in a tree of `depth`:
/// the path's nodes, the freed run (two groups at most) and each freed
/// node's allocation, and the inode.
pub fn remove_credits(depth: u16) -> usize {
    3 * (depth as usize + 1) + 4 + 1
}

fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn entries(b: &[u8]) -> usize {
    le16(b, 2) as usize
}
fn max(b: &[u8]) -> usize {
    le16(b, 4) as usize
}
fn depth(b: &[u8]) -> u16 {
    le16(b, 6)
}
fn set_entries(b: &mut [u8], n: usize) {
    b[2..4].copy_from_slice(&(n as u16).to_le_bytes());
}
fn key(b: &[u8], i: usize) -> u32 {
    le32(b, 12 + i * 12)
}
fn entry(b: &[u8], i: usize) -> [u8; 12] {
    let mut e = [0u8; 12];
    e.copy_from_slice(&b[12 + i * 12..24 + i * 12]);
    e
}
fn put(b: &mut [u8], i: usize, e: &[u8; 12]) {
    b[12 + i * 12..24 + i * 12].copy_from_slice(e);
}
/// Insert `e` at `i`, shifting later entries right (the caller checked room).
fn insert_at(b: &mut [u8], i: usize, e: &[u8; 12]) {
    let n = entries(b);
    b.copy_within(12 + i * 12..12 + n * 12, 24 + i * 12);
    put(b, i, e);
    set_entries(b, n + 1);
}
fn remove_at(b: &mut [u8], i: usize) {
    let n = entries(b);
    b.copy_within(24 + i * 12..12 + n * 12, 12 + i * 12);
    b[12 + (n - 1) * 12..24 + (n - 1) * 12].fill(0);
    set_entries(b, n - 1);
}
fn header(b: &mut [u8], n: usize, max: usize, depth: u16) {
    b[0..2].copy_from_slice(&MAGIC.to_le_bytes());
    set_entries(b, n);
    b[4..6].copy_from_slice(&(max as u16).to_le_bytes());
    b[6..8].copy_from_slice(&depth.to_le_bytes());
    b[8..12].fill(0);
}
fn extent_bytes(e: &Extent) -> [u8; 12] {
    let mut r = [0u8; 12];
    r[0..4].copy_from_slice(&e.lblk.to_le_bytes());
    let len = e.len as u16 + if e.unwritten { INIT_MAX_LEN } else { 0 };
    r[4..6].copy_from_slice(&len.to_le_bytes());
    r[6..8].copy_from_slice(&((e.pblk >> 32) as u16).to_le_bytes());
    r[8..12].copy_from_slice(&(e.pblk as u32).to_le_bytes());
    r
}
fn index_bytes(key: u32, child: u64) -> [u8; 12] {
    let mut r = [0u8; 12];
    r[0..4].copy_from_slice(&key.to_le_bytes());
    r[4..8].copy_from_slice(&(child as u32).to_le_bytes());
    r[8..10].copy_from_slice(&((child >> 32) as u16).to_le_bytes());
    r
}
fn decode_extent(e: &[u8; 12]) -> Extent {
    let raw = le16(e, 4);
    let (len, unwritten) = if raw > INIT_MAX_LEN {
        ((raw - INIT_MAX_LEN) as u32, true)
    } else {
        (raw as u32, false)
    };
    Extent {
        lblk: le32(e, 0),
        len,
        pblk: le32(e, 8) as u64 | (le16(e, 6) as u64) << 32,
        unwritten,
    }
}
fn index_child(e: &[u8; 12]) -> u64 {
    le32(e, 4) as u64 | (le16(e, 8) as u64) << 32
}

/// Whether `b` continues `a` logically and physically, in the same state,
/// and the two fit one extent (they can merge).
fn adjoins(a: &Extent, b: &Extent) -> bool {
    a.unwritten == b.unwritten
        && a.end() == b.lblk as u64
        && a.pblk + a.len as u64 == b.pblk
        && a.len + b.len <= MAX_LEN
}

/// An empty extent root (depth 0, room for four extents) in `i_block`.
pub fn empty_root(block: &mut [u8; 60]) {
    block.fill(0);
    header(block, 0, 4, 0);
}

/// Where a node of the path lives.
#[derive(Clone, Copy, Debug)]
enum At {
    Root,
    Block(u64),
}

/// One step of a root-to-leaf path: the node, and the entry followed
/// (index nodes) or found (leaf; `None` when the key precedes them all).
#[derive(Clone, Copy, Debug)]
struct Step {
    at: At,
    pos: Option<usize>,
    entries: usize,
    max: usize,
}

impl<D: BlockDevice> Volume<D> {
    /// Bytes of an extent tree block with room for `max` entries and the
    /// checksum tail.
    fn node_max(&self) -> usize {
        (self.sb().block_size as usize - 12) / 12
    }

    /// Seal a tree block: its checksum tail (with `metadata_csum`).
    fn seal(&self, inode: &Inode, b: &mut [u8]) {
        if !self.sb().metadata_csum() {
            return;
        }
        let off = 12 + max(b) * 12;
        if off + 4 <= b.len() {
            let c = crate::checksum::crc32c(inode.csum_seed, &b[..off]);
            b[off..off + 4].copy_from_slice(&c.to_le_bytes());
        }
    }

    /// Read a tree block checked at `depth` (checksum, header).
    fn read_node<R>(
        &self,
        inode: &Inode,
        blk: u64,
        d: u16,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        if !self.blocks_in_fs(blk, 1) {
            return Err(Error::corrupt(
                Object::Inode(inode.ino),
                "extent index points outside the filesystem",
            ));
        }
        self.cache_read_with(blk, |b| {
            if self.sb().metadata_csum()
                && self.check_csums()
                && !crate::extent::checksum_ok(b, inode.csum_seed)
            {
                return Err(Error::Checksum {
                    object: Object::Block(blk),
                });
            }
            Node::parse(b, Some(d), Object::Block(blk))?;
            Ok(f(b))
        })?
    }

    /// The path from the root to the leaf for `lblk` (`None`: the
    /// rightmost leaf).
    fn extent_path(&self, inode: &Inode, lblk: Option<u32>) -> Result<Vec<Step>> {
        let root = Node::parse(&inode.block, None, Object::Inode(inode.ino))?;
        if root.depth > MAX_DEPTH {
            return Err(Error::Unsupported {
                what: "writing an extent tree deeper than the kernel builds",
            });
        }
        let pick = |b: &[u8]| -> Option<usize> {
            let n = entries(b);
            match lblk {
                None => n.checked_sub(1),
                Some(l) => (0..n).rev().find(|&i| key(b, i) <= l),
            }
        };
        let mut path = Vec::with_capacity(root.depth as usize + 1);
        let b = &inode.block[..];
        let mut step = Step {
            at: At::Root,
            pos: pick(b),
            entries: entries(b),
            max: max(b),
        };
        let mut d = root.depth;
        let mut child =
            (d > 0 && step.entries > 0).then(|| index_child(&entry(b, step.pos.unwrap_or(0))));
        while d > 0 {
            if step.pos.is_none() {
                step.pos = Some(0);
            }
            path.push(step);
            let Some(blk) = child else {
                return Err(Error::corrupt(
                    Object::Inode(inode.ino),
                    "extent index node has no entries",
                ));
            };
            d -= 1;
            let (s, c) = self.read_node(inode, blk, d, |b| {
                let pos = pick(b);
                let c = (d > 0 && entries(b) > 0).then(|| index_child(&entry(b, pos.unwrap_or(0))));
                (
                    Step {
                        at: At::Block(blk),
                        pos,
                        entries: entries(b),
                        max: max(b),
                    },
                    c,
                )
            })?;
            step = s;
            child = c;
        }
        path.push(step);
        Ok(path)
    }

    /// Run `f` on a node of the path in place.
    fn edit_node<R>(
        &self,
        h: &mut Handle<'_, D>,
        inode: &mut Inode,
        at: At,
        f: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R> {
        match at {
            At::Root => Ok(f(&mut inode.block)),
            At::Block(blk) => {
                let ino = &*inode;
                h.modify(PhysBlock(blk), |b| {
                    let r = f(b);
                    self.seal(ino, b);
                    r
                })
            }
        }
    }

    /// Insert `ext` (not overlapping anything mapped) into `inode`'s tree,
    /// merging with the extent before or after it when contiguous. Blocks
    /// for splits are allocated first, near `ext`; ENOSPC then changes
    /// nothing. Updates `inode.block` and `inode.blocks_512`; the caller
    /// writes the inode. At most [`insert_credits`] credits.
    pub fn insert_extent(
        &self,
        h: &mut Handle<'_, D>,
        inode: &mut Inode,
        ext: Extent,
        cred: &Cred,
    ) -> Result<()> {
        let path = self.extent_path(inode, Some(ext.lblk))?;
        let leaf = *path.last().unwrap_or(&Step {
            at: At::Root,
            pos: None,
            entries: 0,
            max: 4,
        });
        // Merge with the extent before.
        if let Some(p) = leaf.pos {
            let done = self.edit_node(h, inode, leaf.at, |b| {
                let mut e = decode_extent(&entry(b, p));
                if adjoins(&e, &ext) {
                    e.len += ext.len;
                    put(b, p, &extent_bytes(&e));
                    return true;
                }
                false
            })?;
            if done {
                return Ok(());
            }
        }
        // Merge with the extent after (same leaf only).
        let next = leaf.pos.map_or(0, |p| p + 1);
        if next < leaf.entries {
            let first = next == 0;
            let done = self.edit_node(h, inode, leaf.at, |b| {
                let mut e = decode_extent(&entry(b, next));
                if adjoins(&ext, &e) {
                    e.lblk = ext.lblk;
                    e.pblk = ext.pblk;
                    e.len += ext.len;
                    put(b, next, &extent_bytes(&e));
                    return true;
                }
                false
            })?;
            if done {
                if first {
                    self.fix_keys(h, inode, &path, ext.lblk)?;
                }
                return Ok(());
            }
        }
        // New blocks the insert may need, allocated before any change:
        // one per full node from the leaf up, and one to grow the root.
        let mut need = 0;
        for s in path.iter().rev() {
            if s.entries < s.max {
                break;
            }
            need += 1;
        }
        let mut spare = Vec::with_capacity(need);
        let mut goal = PhysBlock(ext.pblk.saturating_sub(1));
        for _ in 0..need {
            match self.alloc_blocks(h, goal, 1, cred, true) {
                Ok((b, _)) => {
                    goal = PhysBlock(b.0 + 1);
                    spare.push(b.0);
                }
                Err(e) => {
                    for b in spare {
                        self.free_blocks(h, PhysBlock(b), 1)?;
                    }
                    return Err(e);
                }
            }
        }
        let mut item = extent_bytes(&ext);
        let mut item_key = ext.lblk;
        let mut level = path.len() - 1;
        loop {
            let s = path[level];
            let pos = s.pos.map_or(0, |p| p + 1);
            if s.entries < s.max {
                self.edit_node(h, inode, s.at, |b| insert_at(b, pos, &item))?;
                if pos == 0 && level == path.len() - 1 {
                    self.fix_keys(h, inode, &path[..=level], item_key)?;
                }
                return Ok(());
            }
            let new = spare.pop().ok_or(Error::corrupt(
                Object::Inode(inode.ino),
                "extent tree changed during an insert",
            ))?;
            inode.blocks_512 += self.sb().block_size as u64 / 512;
            if let At::Root = s.at {
                // Grow: the root's entries move to a new block one level
                // down, the root keeps one index entry to it.
                let d = depth(&inode.block);
                let mut moved: Vec<[u8; 12]> =
                    (0..s.entries).map(|i| entry(&inode.block, i)).collect();
                moved.insert(pos, item);
                let first_key = le32(&moved[0], 0);
                self.new_node(h, inode, new, &moved, d)?;
                let root = &mut inode.block;
                root[12..].fill(0);
                header(root, 1, 4, d + 1);
                put(root, 0, &index_bytes(first_key.min(item_key), new));
                return Ok(());
            }
            // Split: entries after the insert point move to the new block
            // (an append starts the new block with the new entry alone,
            // so sequential files fill their leaves).
            let (right, right_key) = self.edit_node(h, inode, s.at, |b| {
                let n = entries(b);
                let mut all: Vec<[u8; 12]> = (0..n).map(|i| entry(b, i)).collect();
                all.insert(pos, item);
                let cut = if pos == n { n } else { all.len() / 2 };
                for (i, e) in all[..cut].iter().enumerate() {
                    put(b, i, e);
                }
                for i in cut..n {
                    b[12 + i * 12..24 + i * 12].fill(0);
                }
                set_entries(b, cut);
                let right: Vec<[u8; 12]> = all[cut..].to_vec();
                let k = le32(&right[0], 0);
                (right, k)
            })?;
            let node_depth = match s.at {
                At::Block(blk) => self.cache_read_with(blk, depth)?,
                At::Root => 0,
            };
            self.new_node(h, inode, new, &right, node_depth)?;
            if pos == 0 && level == path.len() - 1 {
                self.fix_keys(h, inode, &path[..=level], item_key)?;
            }
            item = index_bytes(right_key, new);
            item_key = right_key;
            level -= 1;
        }
    }

    /// Fill newly allocated tree block `blk` with `entries` at `depth`.
    fn new_node(
        &self,
        h: &mut Handle<'_, D>,
        inode: &Inode,
        blk: u64,
        entries: &[[u8; 12]],
        depth: u16,
    ) -> Result<()> {
        let node_max = self.node_max();
        h.create(PhysBlock(blk), |b| {
            header(b, entries.len(), node_max, depth);
            for (i, e) in entries.iter().enumerate() {
                put(b, i, e);
            }
            self.seal(inode, b);
        })
    }

    /// After the first key of the leaf at the end of `path` became `k`,
    /// lower the index keys above it that must not exceed it (the kernel's
    /// `ext4_ext_correct_indexes`).
    fn fix_keys(
        &self,
        h: &mut Handle<'_, D>,
        inode: &mut Inode,
        path: &[Step],
        k: u32,
    ) -> Result<()> {
        for lvl in (0..path.len().saturating_sub(1)).rev() {
            let s = path[lvl];
            let p = s.pos.unwrap_or(0);
            self.edit_node(h, inode, s.at, |b| {
                if key(b, p) > k {
                    b[12 + p * 12..16 + p * 12].copy_from_slice(&k.to_le_bytes());
                }
            })?;
            if p != 0 {
                break;
            }
        }
        Ok(())
    }

    /// The last extent of the file, if any.
    pub fn last_extent(&self, inode: &Inode) -> Result<Option<Extent>> {
        let path = self.extent_path(inode, None)?;
        let leaf = path[path.len() - 1];
        let Some(p) = leaf.pos else {
            return Ok(None);
        };
        Ok(Some(match leaf.at {
            At::Root => decode_extent(&entry(&inode.block, p)),
            At::Block(b) => self.cache_read_with(b, |x| decode_extent(&entry(x, p)))?,
        }))
    }

    /// Remove what the file maps at or past logical block `from`, one
    /// extent per call, from the end: trims or removes the last extent,
    /// frees its blocks, and frees tree blocks left empty (an emptied tree
    /// becomes an empty root). Returns `false` when nothing at or past
    /// `from` remains. Updates `inode.block` and `inode.blocks_512`; the
    /// caller writes the inode. At most [`remove_credits`] credits.
    pub fn remove_last_extent(
        &self,
        h: &mut Handle<'_, D>,
        inode: &mut Inode,
        from: u32,
    ) -> Result<bool> {
        let path = self.extent_path(inode, None)?;
        let leaf = path[path.len() - 1];
        let Some(p) = leaf.pos else {
            return Ok(false);
        };
        let e = match leaf.at {
            At::Root => decode_extent(&entry(&inode.block, p)),
            At::Block(b) => self.cache_read_with(b, |x| decode_extent(&entry(x, p)))?,
        };
        if e.end() <= from as u64 {
            return Ok(false);
        }
        if !self.blocks_in_fs(e.pblk, e.len as u64) {
            return Err(Error::corrupt(
                Object::Inode(inode.ino),
                "extent points outside the filesystem",
            ));
        }
        let bs512 = self.sb().block_size as u64 / 512;
        if e.lblk < from {
            let keep = from - e.lblk;
            self.free_blocks(h, PhysBlock(e.pblk + keep as u64), (e.len - keep) as u64)?;
            inode.blocks_512 = inode
                .blocks_512
                .saturating_sub((e.len - keep) as u64 * bs512);
            let t = Extent { len: keep, ..e };
            self.edit_node(h, inode, leaf.at, |b| put(b, p, &extent_bytes(&t)))?;
            return Ok(true);
        }
        self.free_blocks(h, PhysBlock(e.pblk), e.len as u64)?;
        inode.blocks_512 = inode.blocks_512.saturating_sub(e.len as u64 * bs512);
        // Remove the entry, then every node it leaves empty, upwards.
        let mut lvl = path.len() - 1;
        loop {
            let s = path[lvl];
            let pos = if lvl == path.len() - 1 {
                p
            } else {
                s.pos.unwrap_or(0)
            };
            let left = self.edit_node(h, inode, s.at, |b| {
                remove_at(b, pos);
                entries(b)
            })?;
            match s.at {
                At::Root => {
                    if left == 0 {
                        empty_root(&mut inode.block);
                    }
                    return Ok(true);
                }
                At::Block(blk) if left == 0 => {
                    self.free_blocks(h, PhysBlock(blk), 1)?;
                    inode.blocks_512 = inode.blocks_512.saturating_sub(bs512);
                    lvl -= 1;
                }
                At::Block(_) => return Ok(true),
            }
        }
    }

    /// Depth of `inode`'s extent tree.
    pub fn extent_depth(&self, inode: &Inode) -> Result<u16> {
        Ok(Node::parse(&inode.block, None, Object::Inode(inode.ino))?.depth)
    }
}
