//! Extent tree edits. Nodes are edited in place: the root in the inode's
//! `i_block` (written with the inode by the caller), tree blocks under
//! their buffer lock with their checksum tail. The caller holds the inode's
//! lock, so nothing else changes its tree.
//!
//! Primitives: insert an extent (merging with a neighbour, leaf and index
//! splits, depth growth), split one extent in two (each half in its own
//! state), change an extent in place, delete one (emptied nodes freed up to
//! the root, the root pulled down a level when its only child fits in it),
//! and the index keys kept equal to the first key below them (the kernel
//! and `e2fsck` require it exactly).
//!
//! Range operations, one bounded step per call so that each runs in its own
//! handle and leaves a consistent tree: remove what is mapped in a range
//! ([`Volume::remove_extent_step`]), set the written/unwritten state of a
//! range ([`Volume::set_state_step`]), shift the extents at or past a
//! block left or right ([`Volume::shift_step`]).

use alloc::vec::Vec;

use crate::device::BlockDevice;
use crate::error::{Error, Object, Result};
use crate::extent::{Extent, Node, INIT_MAX_LEN, MAGIC};
use crate::inode::Inode;
use crate::numbers::{FileBlock, PhysBlock};
use crate::txn::Handle;
use crate::volume::Volume;
use crate::writable::Cred;

/// The kernel builds at most this many levels below the root.
pub const MAX_DEPTH: u16 = 5;
/// Longest written extent.
pub const MAX_LEN: u32 = INIT_MAX_LEN as u32;
/// Longest unwritten extent (`EXT_UNWRITTEN_MAX_LEN`).
pub const MAX_UNWRITTEN_LEN: u32 = INIT_MAX_LEN as u32 - 1;
/// Entries of the root node in `i_block`.
const ROOT_MAX: usize = 4;

/// Credits of one [`Volume::insert_extent`] in a tree of `depth`: per
/// level the node, a split's new block and its allocation (bitmap and
/// descriptor), one more level for growth, and the inode.
pub fn insert_credits(depth: u16) -> usize {
    4 * (depth as usize + 2) + 1
}

/// Credits of one removal step in a tree of `depth`: the path's nodes,
/// the freed run (two groups at most) and each freed node's allocation,
/// the root's pulled-up child, and the inode.
pub fn remove_credits(depth: u16) -> usize {
    3 * (depth as usize + 1) + 4 + 3 + 1
}

/// Credits of any one step of the range operations here: a split (an
/// insert) and a merge's or a removal's deletion.
pub fn step_credits(depth: u16) -> usize {
    insert_credits(depth) + remove_credits(depth)
}

/// The longest extent in `unwritten` state.
pub fn max_len(unwritten: bool) -> u32 {
    if unwritten {
        MAX_UNWRITTEN_LEN
    } else {
        MAX_LEN
    }
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
fn set_key(b: &mut [u8], i: usize, k: u32) {
    b[12 + i * 12..16 + i * 12].copy_from_slice(&k.to_le_bytes());
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
pub(crate) fn header(b: &mut [u8], n: usize, max: usize, depth: u16) {
    b[0..2].copy_from_slice(&MAGIC.to_le_bytes());
    set_entries(b, n);
    b[4..6].copy_from_slice(&(max as u16).to_le_bytes());
    b[6..8].copy_from_slice(&depth.to_le_bytes());
    b[8..12].fill(0);
}
pub(crate) fn extent_bytes(e: &Extent) -> [u8; 12] {
    let mut r = [0u8; 12];
    r[0..4].copy_from_slice(&e.lblk.0.to_le_bytes());
    let len = e.len as u16 + if e.unwritten { INIT_MAX_LEN } else { 0 };
    r[4..6].copy_from_slice(&len.to_le_bytes());
    r[6..8].copy_from_slice(&((e.pblk.0 >> 32) as u16).to_le_bytes());
    r[8..12].copy_from_slice(&(e.pblk.0 as u32).to_le_bytes());
    r
}
pub(crate) fn index_bytes(key: u32, child: u64) -> [u8; 12] {
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
        lblk: FileBlock(le32(e, 0)),
        len,
        pblk: PhysBlock(le32(e, 8) as u64 | (le16(e, 6) as u64) << 32),
        unwritten,
    }
}
fn index_child(e: &[u8; 12]) -> PhysBlock {
    PhysBlock(le32(e, 4) as u64 | (le16(e, 8) as u64) << 32)
}

/// Whether `b` continues `a` logically and physically, in the same state,
/// and the two fit one extent (they can merge).
fn adjoins(a: &Extent, b: &Extent) -> bool {
    a.unwritten == b.unwritten
        && a.end() == b.lblk.get()
        && a.pblk.0 + a.len as u64 == b.pblk.0
        && a.len + b.len <= max_len(a.unwritten)
}

/// An empty extent root (depth 0, room for four extents) in `i_block`.
pub fn empty_root(block: &mut [u8; 60]) {
    block.fill(0);
    header(block, 0, ROOT_MAX, 0);
}

/// `e` cut to the blocks `from..to` (logical, inside it).
fn piece(e: &Extent, from: u64, to: u64, unwritten: bool) -> Extent {
    Extent {
        lblk: FileBlock(from as u32),
        len: (to - from) as u32,
        pblk: PhysBlock(e.pblk.0 + (from - e.lblk.get())),
        unwritten,
    }
}

/// Where a node of the path lives.
#[derive(Clone, Copy, Debug)]
enum At {
    Root,
    Block(PhysBlock),
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

/// What a range step did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Nothing is left to do in the range.
    Done,
    /// Continue with the range bounded at this logical block (removal
    /// works from the end: the new end; the others from the start: the new
    /// start).
    At(u64),
}

/// Which way [`Volume::shift_step`] moves extents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shift {
    /// Towards block 0 (collapse range).
    Left,
    /// Away from block 0 (insert range).
    Right,
}

impl<D: BlockDevice> Volume<D> {
    /// Entries a tree block has room for.
    fn node_max(&self) -> usize {
        (self.sb().block_size as usize - 12) / 12
    }

    /// `i_blocks` (512-byte units) one tree block accounts for: a whole
    /// cluster under `bigalloc`, as `e2fsck` counts it.
    fn node_units(&self) -> u64 {
        self.sb().cluster_size as u64 / 512
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
        blk: PhysBlock,
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
            if d > 0 && entries(b) == 0 {
                return Err(Error::corrupt(
                    Object::Block(blk),
                    "extent index node has no entries",
                ));
            }
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

    /// Read a node of the path.
    fn node_with<R>(&self, inode: &Inode, at: At, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        match at {
            At::Root => Ok(f(&inode.block)),
            At::Block(b) => self.cache_read_with(b, f),
        }
    }

    /// The extent at the leaf position of `path`, checked.
    fn path_extent(&self, inode: &Inode, path: &[Step]) -> Result<Option<Extent>> {
        let leaf = path[path.len() - 1];
        let Some(p) = leaf.pos else {
            return Ok(None);
        };
        let e = self.node_with(inode, leaf.at, |b| decode_extent(&entry(b, p)))?;
        let obj = match leaf.at {
            At::Root => Object::Inode(inode.ino),
            At::Block(b) => Object::Block(b),
        };
        self.check_extent(&e, obj)?;
        Ok(Some(e))
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
                h.modify(blk, |b| {
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
        let path = self.extent_path(inode, Some(ext.lblk.0))?;
        let leaf = path[path.len() - 1];
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
                if next == 0 {
                    self.set_keys(h, inode, &path, ext.lblk.0)?;
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
        let mut goal = PhysBlock(ext.pblk.0.saturating_sub(1));
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
        let mut item_key = ext.lblk.0;
        let mut level = path.len() - 1;
        loop {
            let s = path[level];
            let pos = s.pos.map_or(0, |p| p + 1);
            if s.entries < s.max {
                self.edit_node(h, inode, s.at, |b| insert_at(b, pos, &item))?;
                if pos == 0 {
                    self.set_keys(h, inode, &path[..=level], item_key)?;
                }
                return Ok(());
            }
            let new = spare.pop().ok_or(Error::corrupt(
                Object::Inode(inode.ino),
                "extent tree changed during an insert",
            ))?;
            inode.blocks_512 += self.node_units();
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
                header(root, 1, ROOT_MAX, d + 1);
                put(root, 0, &index_bytes(first_key, new));
                return Ok(());
            }
            // Split: entries after the insert point move to the new block
            // (an append starts the new block with the new entry alone,
            // so sequential files fill their leaves).
            let (right, right_key, left_key) = self.edit_node(h, inode, s.at, |b| {
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
                (right, le32(&all[cut], 0), le32(&all[0], 0))
            })?;
            let node_depth = match s.at {
                At::Block(blk) => self.cache_read_with(blk, depth)?,
                At::Root => 0,
            };
            self.new_node(h, inode, new, &right, node_depth)?;
            if pos == 0 {
                self.set_keys(h, inode, &path[..=level], left_key)?;
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

    /// The first key of the node at the end of `path` became `k`: set the
    /// index keys above it to `k`, up through the levels where it is the
    /// first entry (the kernel's `ext4_ext_correct_indexes`).
    fn set_keys(
        &self,
        h: &mut Handle<'_, D>,
        inode: &mut Inode,
        path: &[Step],
        k: u32,
    ) -> Result<()> {
        for lvl in (0..path.len().saturating_sub(1)).rev() {
            let s = path[lvl];
            let p = s.pos.unwrap_or(0);
            let same = self.node_with(inode, s.at, |b| key(b, p) == k)?;
            if !same {
                self.edit_node(h, inode, s.at, |b| set_key(b, p, k))?;
            }
            if p != 0 {
                break;
            }
        }
        Ok(())
    }

    /// The last extent of the file, if any.
    pub fn last_extent(&self, inode: &Inode) -> Result<Option<Extent>> {
        let path = self.extent_path(inode, None)?;
        self.path_extent(inode, &path)
    }

    /// The extent that starts at or before logical block `lblk` nearest to
    /// it (it may end before `lblk`), if any.
    pub fn extent_before(&self, inode: &Inode, lblk: FileBlock) -> Result<Option<Extent>> {
        let path = self.extent_path(inode, Some(lblk.0))?;
        self.path_extent(inode, &path)
    }

    /// Replace the extent at the leaf of `path` (in place) by `new`,
    /// keeping the index keys right when its first block moves.
    fn set_extent(
        &self,
        h: &mut Handle<'_, D>,
        inode: &mut Inode,
        path: &[Step],
        new: &Extent,
    ) -> Result<()> {
        let leaf = path[path.len() - 1];
        let p = leaf.pos.ok_or(Error::corrupt(
            Object::Inode(inode.ino),
            "extent tree changed during an edit",
        ))?;
        self.edit_node(h, inode, leaf.at, |b| put(b, p, &extent_bytes(new)))?;
        if p == 0 {
            self.set_keys(h, inode, path, new.lblk.0)?;
        }
        Ok(())
    }

    /// Delete the entry at the leaf position of `path`; nodes it leaves
    /// empty are freed and their index entries deleted in turn; a node
    /// whose first entry went gets its parents' keys corrected; an emptied
    /// tree is an empty root, and a root with a single child that fits in
    /// it takes the child's entries (one level less).
    fn delete_entry(&self, h: &mut Handle<'_, D>, inode: &mut Inode, path: &[Step]) -> Result<()> {
        let mut lvl = path.len() - 1;
        loop {
            let s = path[lvl];
            let pos = s.pos.ok_or(Error::corrupt(
                Object::Inode(inode.ino),
                "extent tree changed during an edit",
            ))?;
            let (left, first) = self.edit_node(h, inode, s.at, |b| {
                remove_at(b, pos);
                (entries(b), (entries(b) > 0).then(|| key(b, 0)))
            })?;
            match s.at {
                At::Root => {
                    if left == 0 {
                        empty_root(&mut inode.block);
                    }
                    break;
                }
                At::Block(blk) if left == 0 => {
                    self.free_blocks(h, blk, 1)?;
                    inode.blocks_512 = inode.blocks_512.saturating_sub(self.node_units());
                    lvl -= 1;
                }
                At::Block(_) => {
                    if let (0, Some(k)) = (pos, first) {
                        self.set_keys(h, inode, &path[..=lvl], k)?;
                    }
                    break;
                }
            }
        }
        self.shrink_root(h, inode)
    }

    /// While the root is an index node with one child whose entries fit in
    /// the root, move them up and free the child.
    fn shrink_root(&self, h: &mut Handle<'_, D>, inode: &mut Inode) -> Result<()> {
        loop {
            let d = depth(&inode.block);
            if d == 0 || entries(&inode.block) != 1 {
                return Ok(());
            }
            let child = index_child(&entry(&inode.block, 0));
            let moved = self.read_node(inode, child, d - 1, |b| {
                (entries(b) <= ROOT_MAX).then(|| (0..entries(b)).map(|i| entry(b, i)).collect())
            })?;
            let Some(moved): Option<Vec<[u8; 12]>> = moved else {
                return Ok(());
            };
            let root = &mut inode.block;
            root[12..].fill(0);
            header(root, moved.len(), ROOT_MAX, d - 1);
            for (i, e) in moved.iter().enumerate() {
                put(root, i, e);
            }
            self.free_blocks(h, child, 1)?;
            inode.blocks_512 = inode.blocks_512.saturating_sub(self.node_units());
        }
    }

    /// Split extent `e` (found by `lblk` = its first block) at logical
    /// block `at` (inside it): `e.lblk..at` in unwritten state `left`,
    /// `at..end` in `right` (`states`). The right half is inserted first (ENOSPC changes
    /// nothing), then the left half is cut in place. At most
    /// [`insert_credits`] credits.
    fn split_extent(
        &self,
        h: &mut Handle<'_, D>,
        inode: &mut Inode,
        e: &Extent,
        at: u64,
        (left, right): (bool, bool),
        cred: &Cred,
    ) -> Result<()> {
        self.insert_extent(h, inode, piece(e, at, e.end(), right), cred)?;
        let path = self.extent_path(inode, Some(e.lblk.0))?;
        match self.path_extent(inode, &path)? {
            Some(f) if f.lblk == e.lblk && f.pblk == e.pblk => {}
            _ => {
                return Err(Error::corrupt(
                    Object::Inode(inode.ino),
                    "extent tree changed during a split",
                ))
            }
        }
        self.set_extent(h, inode, &path, &piece(e, e.lblk.get(), at, left))
    }

    /// Split extent `e` in two at logical block `at` (inside it), both
    /// halves in its state. [`insert_credits`].
    pub(crate) fn split_at(
        &self,
        h: &mut Handle<'_, D>,
        inode: &mut Inode,
        e: &Extent,
        at: u64,
        cred: &Cred,
    ) -> Result<()> {
        self.split_extent(h, inode, e, at, (e.unwritten, e.unwritten), cred)
    }

    /// Merge the extent starting at `lblk` with its neighbours in the same
    /// leaf when they adjoin (the kernel's `ext4_ext_try_to_merge`).
    fn try_merge(&self, h: &mut Handle<'_, D>, inode: &mut Inode, lblk: FileBlock) -> Result<()> {
        let path = self.extent_path(inode, Some(lblk.0))?;
        let leaf = path[path.len() - 1];
        let Some(p) = leaf.pos else { return Ok(()) };
        let Some(mut cur) = self.path_extent(inode, &path)? else {
            return Ok(());
        };
        if cur.lblk != lblk {
            return Ok(());
        }
        let (prev, next) = self.node_with(inode, leaf.at, |b| {
            (
                p.checked_sub(1).map(|i| decode_extent(&entry(b, i))),
                (p + 1 < entries(b)).then(|| decode_extent(&entry(b, p + 1))),
            )
        })?;
        if let Some(mut prev) = prev.filter(|x| adjoins(x, &cur)) {
            prev.len += cur.len;
            let mut at = path.clone();
            let n = at.len() - 1;
            at[n].pos = Some(p - 1);
            self.set_extent(h, inode, &at, &prev)?;
            self.delete_entry(h, inode, &path)?;
            cur = prev;
            // The tree may have changed shape: look again from `cur`.
            return self.try_merge_next(h, inode, cur);
        }
        if let Some(next) = next.filter(|x| adjoins(&cur, x)) {
            cur.len += next.len;
            self.set_extent(h, inode, &path, &cur)?;
            let mut at = path.clone();
            let n = at.len() - 1;
            at[n].pos = Some(p + 1);
            self.delete_entry(h, inode, &at)?;
        }
        Ok(())
    }

    /// Merge `cur` (in the tree) with the extent after it in its leaf.
    fn try_merge_next(&self, h: &mut Handle<'_, D>, inode: &mut Inode, cur: Extent) -> Result<()> {
        let path = self.extent_path(inode, Some(cur.lblk.0))?;
        let leaf = path[path.len() - 1];
        let Some(p) = leaf.pos else { return Ok(()) };
        let next = self.node_with(inode, leaf.at, |b| {
            (p + 1 < entries(b)).then(|| decode_extent(&entry(b, p + 1)))
        })?;
        if let Some(next) = next.filter(|x| adjoins(&cur, x)) {
            let mut m = cur;
            m.len += next.len;
            self.set_extent(h, inode, &path, &m)?;
            let mut at = path.clone();
            let n = at.len() - 1;
            at[n].pos = Some(p + 1);
            self.delete_entry(h, inode, &at)?;
        }
        Ok(())
    }

    /// One step of removing what `inode` maps in logical blocks
    /// `from..to`, from the end: the last extent overlapping the range is
    /// deleted or trimmed (or split first when the range is inside it),
    /// its blocks released (cluster-aware, `i_blocks` kept). Returns the
    /// new end of what is left to remove (`Done` once nothing was left).
    /// At most [`step_credits`].
    pub fn remove_extent_step(
        &self,
        h: &mut Handle<'_, D>,
        inode: &mut Inode,
        from: u64,
        to: u64,
        cred: &Cred,
    ) -> Result<Progress> {
        if to <= from || from >= FileBlock::COUNT {
            return Ok(Progress::Done);
        }
        let last = (to.min(FileBlock::COUNT) - 1) as u32;
        let path = self.extent_path(inode, Some(last))?;
        let Some(e) = self.path_extent(inode, &path)? else {
            return Ok(Progress::Done);
        };
        if e.end() <= from {
            return Ok(Progress::Done);
        }
        let s = e.lblk.get().max(from);
        let t = e.end().min(to);
        if t < e.end() {
            if s > e.lblk.get() {
                // The range ends inside: split there first (same state).
                self.split_extent(h, inode, &e, t, (e.unwritten, e.unwritten), cred)?;
                return Ok(Progress::At(t));
            }
            // Head: the extent now starts at `t`.
            self.set_extent(h, inode, &path, &piece(&e, t, e.end(), e.unwritten))?;
        } else if s > e.lblk.get() {
            // Tail.
            self.set_extent(h, inode, &path, &piece(&e, e.lblk.get(), s, e.unwritten))?;
        } else {
            self.delete_entry(h, inode, &path)?;
        }
        let gone = piece(&e, s, t, e.unwritten);
        self.release_blocks(h, inode, &gone)?;
        Ok(Progress::At(s))
    }

    /// Give back the blocks of `gone`, just unmapped from `inode` (logical
    /// and physical range): their clusters, except a first or last cluster
    /// that another block of the file still maps (`bigalloc`), as the
    /// kernel's partial-cluster rule; `i_blocks` follows.
    pub(crate) fn release_blocks(
        &self,
        h: &mut Handle<'_, D>,
        inode: &mut Inode,
        gone: &Extent,
    ) -> Result<()> {
        let r = self.cluster_ratio();
        let unit = self.sb().cluster_size as u64 / 512;
        if r == 1 {
            self.free_blocks(h, gone.pblk, gone.len as u64)?;
            inode.blocks_512 = inode.blocks_512.saturating_sub(gone.len as u64 * unit);
            return Ok(());
        }
        let (l0, l1) = (gone.lblk.get(), gone.end());
        let p0 = gone.pblk.0;
        let fdb = self.sb().first_data_block as u64;
        let c_first = (p0 - fdb) / r;
        let c_last = (p0 + gone.len as u64 - 1 - fdb) / r;
        let mut from = c_first;
        let mut to = c_last + 1;
        // Blocks of the first and last logical clusters outside `gone`.
        let lc0 = l0 / r * r;
        if self.mapped_in(inode, lc0, l0)?
            || (c_first == c_last && self.mapped_in(inode, l1, lc0 + r)?)
        {
            from += 1;
        }
        if c_last >= from {
            let lc1 = (l1 - 1) / r * r;
            if self.mapped_in(inode, l1, lc1 + r)? {
                to -= 1;
            }
        }
        if to > from {
            self.free_blocks(h, PhysBlock(fdb + from * r), (to - from) * r)?;
            inode.blocks_512 = inode.blocks_512.saturating_sub((to - from) * unit);
        }
        Ok(())
    }

    /// Whether `inode` maps any block in logical `from..to`.
    pub(crate) fn mapped_in(&self, inode: &Inode, from: u64, to: u64) -> Result<bool> {
        let mut l = from;
        let to = to.min(FileBlock::COUNT);
        while l < to {
            match self.map_block_at(inode, l)? {
                crate::blockmap::Run::Mapped { .. } => return Ok(true),
                crate::blockmap::Run::Hole { len } => l += len.max(1),
            }
        }
        Ok(false)
    }

    /// One step of setting logical blocks `from..to` of `inode` to the
    /// `unwritten` state (holes stay holes): the first extent in the range
    /// in the other state is split at the range's edges (one split per
    /// step) or flipped in place, then merged with its neighbours. Returns
    /// where to continue. At most [`step_credits`].
    pub fn set_state_step(
        &self,
        h: &mut Handle<'_, D>,
        inode: &mut Inode,
        from: u64,
        to: u64,
        unwritten: bool,
        cred: &Cred,
    ) -> Result<Progress> {
        let to = to.min(FileBlock::COUNT);
        if from >= to {
            return Ok(Progress::Done);
        }
        let path = self.extent_path(inode, Some(from as u32))?;
        let e = match self.path_extent(inode, &path)? {
            Some(e) if e.end() > from => e,
            _ => {
                // A hole at `from`: skip to what follows it.
                let len = self.map_block_at(inode, from)?.len().max(1);
                return Ok(if from + len < to {
                    Progress::At(from + len)
                } else {
                    Progress::Done
                });
            }
        };
        let t = e.end().min(to);
        let next = if t < to {
            Progress::At(t)
        } else {
            Progress::Done
        };
        if e.unwritten == unwritten {
            return Ok(next);
        }
        if from > e.lblk.get() {
            self.split_extent(h, inode, &e, from, (e.unwritten, e.unwritten), cred)?;
            return Ok(Progress::At(from));
        }
        if t < e.end() {
            self.split_extent(h, inode, &e, t, (unwritten, e.unwritten), cred)?;
        } else {
            let mut f = e;
            f.unwritten = unwritten;
            // An unwritten extent is one block shorter at most.
            if f.len > max_len(unwritten) {
                self.split_extent(
                    h,
                    inode,
                    &e,
                    from + max_len(unwritten) as u64,
                    (e.unwritten, e.unwritten),
                    cred,
                )?;
                return Ok(Progress::At(from));
            }
            self.set_extent(h, inode, &path, &f)?;
        }
        self.try_merge(h, inode, e.lblk)?;
        Ok(next)
    }

    /// One step of shifting every extent that starts at or past logical
    /// block `start` by `by` blocks (nothing may lie in the way: the caller
    /// punched the gap for a left shift and split at `start` for a right
    /// one): the extents of one leaf move, and the index keys above it
    /// follow. Left shifts go leaf by leaf from `start` up (merging with
    /// the extent before where they adjoin), right shifts from the last
    /// leaf down. `cursor` is what the previous step returned (`None` at
    /// first): the first key of the next leaf to move, as it is now.
    pub fn shift_step(
        &self,
        h: &mut Handle<'_, D>,
        inode: &mut Inode,
        start: u64,
        by: u64,
        dir: Shift,
        cursor: Option<u64>,
    ) -> Result<Progress> {
        let clamp = |l: u64| l.min(u32::MAX as u64) as u32;
        let path = match (dir, cursor) {
            (Shift::Left, None) => self.extent_path(inode, Some(clamp(start)))?,
            (_, Some(c)) => self.extent_path(inode, Some(clamp(c)))?,
            (Shift::Right, None) => self.extent_path(inode, None)?,
        };
        let n = path.len() - 1;
        let leaf = path[n];
        // Later left steps land on a leaf none of whose extents moved yet.
        let every = dir == Shift::Left && cursor.is_some();
        let (first, end) = self.node_with(inode, leaf.at, |b| {
            let k = entries(b);
            let first = if every {
                (k > 0).then_some(0)
            } else {
                (0..k).find(|&i| key(b, i) as u64 >= start)
            };
            let end = (k > 0).then(|| decode_extent(&entry(b, k - 1)).end());
            (first, end)
        })?;
        let next_leaf = self.next_leaf_key(inode, &path)?;
        let Some(first) = first else {
            return Ok(match (dir, next_leaf) {
                (Shift::Left, Some(k)) => Progress::At(k),
                _ => Progress::Done,
            });
        };
        let old_first = self.node_with(inode, leaf.at, |b| key(b, first))? as u64;
        let fits = match dir {
            Shift::Left => old_first >= by,
            Shift::Right => end.unwrap_or(0) + by <= FileBlock::COUNT,
        };
        if !fits {
            return Err(match dir {
                Shift::Left => Error::corrupt(
                    Object::Inode(inode.ino),
                    "extent tree changed during a shift",
                ),
                Shift::Right => Error::FileTooBig,
            });
        }
        let new_first = self.edit_node(h, inode, leaf.at, |b| {
            for i in first..entries(b) {
                let v = key(b, i) as u64;
                let nv = match dir {
                    Shift::Left => v - by,
                    Shift::Right => v + by,
                };
                set_key(b, i, nv as u32);
            }
            key(b, 0)
        })?;
        if first == 0 {
            self.set_keys(h, inode, &path, new_first)?;
        }
        Ok(match dir {
            Shift::Left => {
                // After a collapse the first moved extent may continue the
                // one before it.
                self.try_merge(h, inode, FileBlock((old_first - by) as u32))?;
                next_leaf.map_or(Progress::Done, Progress::At)
            }
            Shift::Right if first == 0 && old_first > start && self.has_prev_leaf(&path) => {
                // The leaf before may hold extents past `start` too.
                Progress::At(old_first - 1)
            }
            Shift::Right => Progress::Done,
        })
    }

    /// The first key of the leaf after the leaf of `path`, if there is one.
    fn next_leaf_key(&self, inode: &Inode, path: &[Step]) -> Result<Option<u64>> {
        for s in path[..path.len() - 1].iter().rev() {
            let p = s.pos.unwrap_or(0);
            if p + 1 < s.entries {
                return Ok(Some(self.node_with(inode, s.at, |b| key(b, p + 1))? as u64));
            }
        }
        Ok(None)
    }

    /// Whether a leaf precedes the leaf of `path`.
    fn has_prev_leaf(&self, path: &[Step]) -> bool {
        path[..path.len() - 1]
            .iter()
            .any(|s| s.pos.unwrap_or(0) > 0)
    }

    /// Remove what the file maps at or past logical block `from`, one
    /// extent (or piece of one) per call, from the end. Returns `false`
    /// when nothing at or past `from` remains. Updates `inode.block` and
    /// `inode.blocks_512`; the caller writes the inode. At most
    /// [`step_credits`] credits.
    pub fn remove_last_extent(
        &self,
        h: &mut Handle<'_, D>,
        inode: &mut Inode,
        from: u32,
    ) -> Result<bool> {
        let r = self.remove_extent_step(h, inode, from as u64, FileBlock::COUNT, &Cred::ROOT)?;
        Ok(r != Progress::Done)
    }

    /// Depth of `inode`'s extent tree.
    pub fn extent_depth(&self, inode: &Inode) -> Result<u16> {
        Ok(Node::parse(&inode.block, None, Object::Inode(inode.ino))?.depth)
    }
}
