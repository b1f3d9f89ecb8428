//! Hash-tree directory writes, as the kernel's `dir_index` code makes
//! them: a one-block linear directory that outgrows its block becomes a
//! hash tree (`make_indexed_dir`: the root in block 0, its names split
//! over two leaves); a full leaf is split at the median hash, size-wise
//! (`do_split`); a full index node is split in half, and a full root gets
//! a new level below it (`ext4_dx_add_entry`), up to two levels of index
//! nodes, three with `large_dir`. Removal leaves leaves in place, as the
//! kernel does. Every node and leaf keeps its `metadata_csum` tail.
//!
//! Each room-making step is one handle and leaves a valid tree; the
//! operation that adds the name runs after them ([`Volume::make_room`]).
//! Memory: a few block-sized buffers per step.

use alloc::vec;
use alloc::vec::Vec;

use heapless::Vec as HVec;

use crate::checksum::crc32c;
use crate::device::BlockDevice;
use crate::dir::Entries;
use crate::dx_hash::{dx_hash, HashVersion};
use crate::error::{Error, Object, Result};
use crate::features::{compat, incompat};
use crate::htree::{
    entry_block, entry_hash, le16, MAX_LEVELS, NODE_ENTRIES_OFFSET, ROOT_INFO_OFFSET,
};
use crate::inode::{flags, Inode};
use crate::numbers::{FileBlock, InodeNo, PhysBlock};
use crate::superblock::FLAG_UNSIGNED_HASH;
use crate::txn::Handle;
use crate::volume::Volume;
use crate::writable::Cred;

use super::dir::{put_entry, rec_len, rec_len_to_disk, Found, Slot};

/// Entries of the root start after ".", ".." and the root info.
const ROOT_ENTRIES: usize = ROOT_INFO_OFFSET + 8;
/// Most room-making steps one insert may need: an added level, a split per
/// index level, a leaf split, and spares for hash collisions.
const MAX_ROOM_STEPS: usize = 16;

/// One index node on the path from the root to a leaf.
#[derive(Clone, Copy, Debug)]
struct Node {
    lblk: u32,
    pblk: PhysBlock,
    /// Offset of the node's count/limit header (its entry array).
    entries: usize,
    count: usize,
    limit: usize,
    /// The entry followed.
    at: usize,
}

/// The path a hash takes through the tree.
struct Path {
    nodes: HVec<Node, MAX_LEVELS>,
    leaf: u32,
}

/// A live entry of a leaf, for a split.
struct Live {
    offset: usize,
    /// Its record length (with the slack after it): what the kernel weighs.
    size: usize,
    hash: u32,
}

fn set16(b: &mut [u8], o: usize, v: u16) {
    b[o..o + 2].copy_from_slice(&v.to_le_bytes());
}
fn set32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}

/// Insert `(hash, block)` into the entry array at `entries` after entry
/// `at` (the kernel's `dx_insert_block`); the caller checked for room.
fn dx_insert(b: &mut [u8], entries: usize, at: usize, hash: u32, block: u32) {
    let count = le16(b, entries + 2) as usize;
    let from = entries + (at + 1) * 8;
    let end = entries + count * 8;
    b.copy_within(from..end, from + 8);
    set32(b, from, hash);
    set32(b, from + 4, block);
    set16(b, entries + 2, (count + 1) as u16);
}

/// Where the kernel's `do_split` splits `map` (sorted by hash): moving
/// entries from the end while less than half a block moved, or half of
/// them by count when that moves everything.
fn split_point(map: &[Live], bs: usize) -> usize {
    let count = map.len();
    let mut size = 0;
    let mut moved = 0;
    let mut stopped_at = None;
    for i in (0..count).rev() {
        if size + map[i].size / 2 > bs / 2 {
            stopped_at = Some(i);
            break;
        }
        size += map[i].size;
        moved += 1;
    }
    match stopped_at {
        Some(i) if i > 0 => count - moved,
        _ => count / 2,
    }
}

impl<D: BlockDevice> Volume<D> {
    fn max_dx_levels(&self) -> usize {
        if self.sb().has_incompat(incompat::LARGEDIR) {
            MAX_LEVELS
        } else {
            2
        }
    }

    /// The hash `name` is filed under in hashed directory `dir`.
    pub(crate) fn dx_name_hash(&self, dir: &Inode, name: &[u8]) -> Result<u32> {
        let version = self.dx_hash_version(dir)?;
        Ok(dx_hash(name, version, self.sb().hash_seed).0)
    }

    /// Recompute an index node's `metadata_csum` tail (entry array at
    /// `entries`).
    fn seal_dx(&self, dir: &Inode, b: &mut [u8], entries: usize) {
        if !self.sb().metadata_csum() {
            return;
        }
        let limit = le16(b, entries) as usize;
        let count = le16(b, entries + 2) as usize;
        let tail = entries + limit * 8;
        if tail + 8 > b.len() || count > limit {
            return;
        }
        b[tail..tail + 4].fill(0);
        let mut c = crc32c(dir.csum_seed, &b[..entries + count * 8]);
        c = crc32c(c, &b[tail..tail + 4]);
        c = crc32c(c, &[0u8; 4]);
        set32(b, tail + 4, c);
    }

    /// Follow `hash` from the root to its leaf, checking every node.
    fn dx_path(&self, dir: &Inode, hash: u32) -> Result<Path> {
        let nblocks = self.dir_blocks(dir);
        let max = self.max_dx_levels();
        let mut nodes: HVec<Node, MAX_LEVELS> = HVec::new();
        let mut lblk = 0u32;
        let mut levels = 0usize;
        loop {
            let root = nodes.is_empty();
            let obj = Object::DirBlock {
                dir: dir.ino,
                lblk: FileBlock(lblk),
            };
            let pblk = self.dir_pblk(dir, lblk)?;
            let (entries, count, lv, at, child) =
                self.cache_read_marked(pblk, |b, mark| -> Result<_> {
                    let (entries, count, lv) = self.dx_header(dir, b, root, obj, Some(mark))?;
                    let (mut lo, mut hi) = (1usize, count);
                    while lo < hi {
                        let mid = (lo + hi) / 2;
                        if entry_hash(b, entries, mid) <= hash {
                            lo = mid + 1;
                        } else {
                            hi = mid;
                        }
                    }
                    let at = lo - 1;
                    Ok((entries, count, lv, at, entry_block(b, entries, at)))
                })??;
            if root {
                levels = lv as usize;
                if levels >= max {
                    return Err(Error::corrupt(
                        obj,
                        "hash tree is deeper than the filesystem allows",
                    ));
                }
            }
            if child == 0 || child >= nblocks || nodes.iter().any(|n| n.lblk == child) {
                return Err(Error::corrupt(
                    obj,
                    "hash tree entry points outside the directory or back into the tree",
                ));
            }
            let node = Node {
                lblk,
                pblk,
                entries,
                count,
                limit: self.dx_limit(entries),
                at,
            };
            nodes
                .push(node)
                .map_err(|_| Error::corrupt(obj, "hash tree is too deep"))?;
            if nodes.len() > levels {
                return Ok(Path { nodes, leaf: child });
            }
            lblk = child;
        }
    }

    /// Find `name` in hashed directory `dir`: its leaf, then the leaves
    /// that continue a run of its hash (`Ok(None)`: not there).
    pub(crate) fn dx_find(&self, dir: &Inode, name: &[u8]) -> Result<Option<Found>> {
        let hash = self.dx_name_hash(dir, name)?;
        let mut path = self.dx_path(dir, hash)?;
        let nblocks = self.dir_blocks(dir);
        let mut leaf = path.leaf;
        // Each step moves to a later index entry: bounded by the blocks.
        for _ in 0..nblocks {
            let pblk = self.dir_pblk(dir, leaf)?;
            let f = self.scan_leaf(dir, FileBlock(leaf), pblk, |e, prev| {
                (e.inode != 0 && e.name == name).then_some(Found {
                    lblk: FileBlock(leaf),
                    pblk,
                    offset: e.offset,
                    prev,
                    ino: InodeNo(e.inode),
                    inline: false,
                })
            })?;
            if f.is_some() {
                return Ok(f);
            }
            // The next leaf, if it continues this hash.
            let Some(k) = path.nodes.iter().rposition(|n| n.at + 1 < n.count) else {
                return Ok(None);
            };
            path.nodes[k].at += 1;
            let n = path.nodes[k];
            let (h, mut child) = self.cache_read_with(n.pblk, |b| {
                (
                    entry_hash(b, n.entries, n.at),
                    entry_block(b, n.entries, n.at),
                )
            })?;
            if h & !1 != hash {
                return Ok(None);
            }
            for j in k + 1..path.nodes.len() {
                let obj = Object::DirBlock {
                    dir: dir.ino,
                    lblk: FileBlock(child),
                };
                if child == 0 || child >= nblocks {
                    return Err(Error::corrupt(
                        obj,
                        "hash tree entry points outside the directory",
                    ));
                }
                let pblk = self.dir_pblk(dir, child)?;
                let (entries, count, next) = self.cache_read_with(pblk, |b| -> Result<_> {
                    let (entries, count, _) = self.dx_header(dir, b, false, obj, None)?;
                    Ok((entries, count, entry_block(b, entries, 0)))
                })??;
                path.nodes[j] = Node {
                    lblk: child,
                    pblk,
                    entries,
                    count,
                    limit: self.dx_limit(entries),
                    at: 0,
                };
                child = next;
            }
            if child == 0 || child >= nblocks {
                return Err(Error::corrupt(
                    Object::DirBlock {
                        dir: dir.ino,
                        lblk: FileBlock(n.lblk),
                    },
                    "hash tree entry points outside the directory",
                ));
            }
            leaf = child;
        }
        Ok(None)
    }

    /// Make room for an entry named `name` in `dir`, in steps of their own
    /// handles when needed: a new block for a linear directory, which
    /// becomes a hash tree when it outgrows its only block (`dir_index`);
    /// leaf and index splits, or a new level, for a hash tree. Returns
    /// where the entry goes; `dir` follows every step. ENOSPC: no block,
    /// or a full tree at its deepest.
    pub(crate) fn make_room(&self, dir: &mut Inode, name: &[u8], cred: &Cred) -> Result<Slot> {
        for _ in 0..MAX_ROOM_STEPS {
            match self.find_slot(dir, name)? {
                s @ (Slot::At { .. } | Slot::Inline { .. }) => return Ok(s),
                Slot::NewBlock if dir.has_flag(flags::INLINE_DATA) => {
                    self.grow_inline(dir, cred)?;
                }
                Slot::NewBlock => {
                    let one = self.dir_blocks(dir) == 1;
                    if !(one
                        && self.sb().has_compat(compat::DIR_INDEX)
                        && self.index_dir(dir, cred)?)
                    {
                        self.grow_linear(dir, cred)?;
                    }
                }
                Slot::Split => self.dx_make_room(dir, name, cred)?,
            }
        }
        Err(Error::NoSpace)
    }

    /// Credits of a room-making step that adds `blocks` blocks.
    fn room_credits(&self, dir: &Inode, blocks: usize) -> Result<usize> {
        let per = self.map_credits(dir)? + 1;
        Ok(blocks * per + self.undo_map_credits(dir)? + 4 + 1)
    }

    /// Run one step in its own handle; the directory inode is written at
    /// its end. A step that fails before changing anything (ENOSPC) ends
    /// its handle cleanly; a failure after aborts.
    fn room_step(
        &self,
        dir: &mut Inode,
        credits: usize,
        f: impl FnOnce(&mut Handle<'_, D>, &mut Inode) -> Result<bool>,
    ) -> Result<()> {
        let mut h = self.begin(credits)?;
        let before = dir.clone();
        match f(&mut h, dir) {
            Ok(_) => {}
            Err(e) if matches!(e, Error::NoSpace) => {
                *dir = before;
                return Err(e);
            }
            Err(e) => return Err(h.abort(e)),
        }
        if let Err(e) = self.write_inode(&mut h, dir, false) {
            return Err(h.abort(e));
        }
        self.dir_changed(dir.ino);
        Ok(())
    }

    /// A full inline-data directory gets more room: a bigger
    /// `system.data` while its body has room, else a block of its own.
    fn grow_inline(&self, dir: &mut Inode, cred: &Cred) -> Result<()> {
        let credits = self.grow_inline_credits(dir)?;
        self.room_step(dir, credits, |h, dir| {
            if !self.grow_inline_dir(dir)? {
                self.inline_dir_to_block(h, dir, cred)?;
            }
            Ok(true)
        })
    }

    /// A linear directory gets one more (empty) block.
    fn grow_linear(&self, dir: &mut Inode, cred: &Cred) -> Result<()> {
        let credits = self.room_credits(dir, 1)?;
        self.room_step(dir, credits, |h, dir| {
            self.grow_dir(h, dir, cred)?;
            Ok(true)
        })
    }

    /// Allocate `n` blocks and map them at the end of `dir`, like file
    /// data (extent or block map, clusters); size and block count follow.
    /// ENOSPC changes nothing. Returns (logical, physical) of each.
    fn append_blocks(
        &self,
        h: &mut Handle<'_, D>,
        dir: &mut Inode,
        n: usize,
        cred: &Cred,
    ) -> Result<HVec<(u32, u64), 2>> {
        let bs = self.sb().block_size as u64;
        let first = dir.size.div_ceil(bs);
        if first + n as u64 > u32::MAX as u64 {
            return Err(Error::NoSpace);
        }
        let mut got: HVec<(u32, u64), 2> = HVec::new();
        for k in 0..n as u64 {
            match self.map_hole(h, dir, first + k, 1, false, cred) {
                Ok((b, _)) => {
                    let _ = got.push(((first + k) as u32, b.0));
                }
                Err(e) => {
                    if k > 0 {
                        // The block mapped before goes again (it ends
                        // the map: one removal without a split).
                        self.unmap_step(h, dir, first, first + k, cred)?;
                    }
                    return Err(e);
                }
            }
        }
        dir.size = (first + n as u64) * bs;
        Ok(got)
    }

    /// A leaf block holding `names` (packed in order, the last reaching
    /// the end of the entry area), with its tail.
    fn build_leaf(&self, dir: &Inode, block: &[u8], names: &[&Live]) -> Vec<u8> {
        let bs = self.sb().block_size as usize;
        let area = self.leaf_area();
        let mut b = vec![0u8; bs];
        self.init_dir_block(dir, &mut b);
        let mut at = 0usize;
        for (k, e) in names.iter().enumerate() {
            let name_len = block[e.offset + 6] as usize;
            let need = rec_len(name_len);
            let rec = if k + 1 == names.len() {
                area - at
            } else {
                need
            };
            b[at..at + 8].copy_from_slice(&block[e.offset..e.offset + 8]);
            b[at + 8..at + 8 + name_len]
                .copy_from_slice(&block[e.offset + 8..e.offset + 8 + name_len]);
            b[at + 4..at + 6].copy_from_slice(&rec_len_to_disk(rec, bs).to_le_bytes());
            at += need;
        }
        self.seal_leaf(dir, &mut b);
        b
    }

    /// The live entries of leaf bytes `block` (entries from `from`), with
    /// their hashes; the one ending the area weighs `extra` more (the
    /// kernel weighs entries as they lie in the block it splits).
    fn live_entries(
        &self,
        dir: &Inode,
        block: &[u8],
        lblk: u32,
        from: usize,
        extra: usize,
    ) -> Result<Vec<Live>> {
        let version = self.dx_hash_version_for(dir)?;
        let area = self.leaf_area().min(block.len());
        let obj = Object::DirBlock {
            dir: dir.ino,
            lblk: FileBlock(lblk),
        };
        let mut out = Vec::new();
        for e in Entries::new(&block[..area], from, self.sb().inodes_count, obj) {
            let e = e?;
            if e.inode == 0 || e.name.is_empty() {
                continue;
            }
            let last = e.offset + e.rec_len >= area;
            out.push(Live {
                offset: e.offset,
                size: e.rec_len + if last { extra } else { 0 },
                hash: dx_hash(e.name, version, self.sb().hash_seed).0,
            });
        }
        Ok(out)
    }

    /// The hash version of `dir`: its root's, or for a directory being
    /// indexed, the filesystem's default.
    fn dx_hash_version_for(&self, dir: &Inode) -> Result<HashVersion> {
        if self.is_dx(dir) {
            return self.dx_hash_version(dir);
        }
        let unsigned = self.sb().flags & FLAG_UNSIGNED_HASH != 0;
        HashVersion::from_disk(self.sb().def_hash_version)
            .map(|v| v.with_unsigned(unsigned))
            .ok_or(Error::Unsupported {
                what: "indexing a directory with the filesystem's default hash (unknown version)",
            })
    }

    /// Split `map` as `do_split` does: the sorted map, the split index,
    /// and the index entry's hash (with the collision bit when equal
    /// hashes lie on both sides).
    fn split_map(&self, mut map: Vec<Live>) -> Result<(Vec<Live>, usize, u32)> {
        if map.len() < 2 {
            return Err(Error::NoSpace);
        }
        map.sort_by_key(|e| e.hash);
        let split = split_point(&map, self.sb().block_size as usize);
        let hash2 = map[split].hash;
        let continued = (map[split - 1].hash == hash2) as u32;
        Ok((map, split, hash2 + continued))
    }

    /// Leaf bytes of `lblk` at `pblk`, checked.
    fn leaf_bytes(&self, dir: &Inode, lblk: u32, pblk: PhysBlock) -> Result<Vec<u8>> {
        self.cache_read_marked(pblk, |b, mark| -> Result<Vec<u8>> {
            self.check_leaf_once(dir, b, FileBlock(lblk), mark)?;
            Ok(b.to_vec())
        })?
    }

    /// Turn one-block linear directory `dir` into a hash tree: the root
    /// in block 0 ("." and ".." stay), its other names split over two new
    /// leaves. `false` when block 0 is not laid out as the kernel makes
    /// it (or the default hash is unknown): the caller grows it linearly.
    fn index_dir(&self, dir: &mut Inode, cred: &Cred) -> Result<bool> {
        if dir.has_flag(flags::INDEX) || dir.has_flag(flags::INLINE_DATA) {
            return Ok(false);
        }
        let Some(def) = HashVersion::from_disk(self.sb().def_hash_version) else {
            return Ok(false);
        };
        let bs = self.sb().block_size as usize;
        let pblk0 = self.dir_pblk(dir, 0)?;
        let block = self.leaf_bytes(dir, 0, pblk0)?;
        let area = self.leaf_area();
        let obj = Object::DirBlock {
            dir: dir.ino,
            lblk: FileBlock(0),
        };
        let mut it = Entries::new(&block[..area], 0, self.sb().inodes_count, obj);
        let (Some(Ok(dot)), Some(Ok(dotdot))) = (it.next(), it.next()) else {
            return Ok(false);
        };
        if dot.offset != 0 || dot.rec_len != 12 || dot.name != b"." || dotdot.name != b".." {
            return Ok(false);
        }
        let (dot_ft, dotdot_ino, dotdot_ft) = (dot.file_type, dotdot.inode, dotdot.file_type);
        let from = 12 + dotdot.rec_len;
        // In the kernel the names move to a block of their own first, the
        // last one reaching that block's end: `from` bytes more.
        let map = self.live_entries(dir, &block, 0, from, from)?;
        let Ok((map, split, hash2)) = self.split_map(map) else {
            return Ok(false);
        };
        let keep: Vec<&Live> = {
            let mut k: Vec<&Live> = map[..split].iter().collect();
            k.sort_by_key(|e| e.offset);
            k
        };
        let moved: Vec<&Live> = map[split..].iter().collect();
        let leaf1 = self.build_leaf(dir, &block, &keep);
        let leaf2 = self.build_leaf(dir, &block, &moved);
        let mut root = vec![0u8; bs];
        put_entry(&mut root, 0, dir.ino.0, 12, b".", dot_ft, bs);
        put_entry(&mut root, 12, dotdot_ino, bs - 12, b"..", dotdot_ft, bs);
        root[ROOT_INFO_OFFSET + 4] = def.to_disk();
        root[ROOT_INFO_OFFSET + 5] = 8;
        set16(&mut root, ROOT_ENTRIES, self.dx_limit(ROOT_ENTRIES) as u16);
        set16(&mut root, ROOT_ENTRIES + 2, 2);
        set32(&mut root, ROOT_ENTRIES + 4, 1);
        set32(&mut root, ROOT_ENTRIES + 8, hash2);
        set32(&mut root, ROOT_ENTRIES + 12, 2);
        let d = dir.clone();
        self.seal_dx(&d, &mut root, ROOT_ENTRIES);
        let credits = self.room_credits(dir, 2)?;
        self.room_step(dir, credits, |h, dir| {
            let got = self.append_blocks(h, dir, 2, cred)?;
            let (b1, b2) = (got[0], got[1]);
            if (b1.0, b2.0) != (1, 2) {
                return Err(Error::corrupt(obj, "directory grew at an unexpected block"));
            }
            h.create(PhysBlock(b1.1), |x| x.copy_from_slice(&leaf1))?;
            h.create(PhysBlock(b2.1), |x| x.copy_from_slice(&leaf2))?;
            h.modify(pblk0, |x| x.copy_from_slice(&root))?;
            dir.flags |= flags::INDEX;
            Ok(true)
        })?;
        Ok(true)
    }

    /// One step toward room for `name` in hash-tree `dir`: split its full
    /// leaf, or the index node above that is full (the highest one whose
    /// parent has room), or add a level under a full root.
    fn dx_make_room(&self, dir: &mut Inode, name: &[u8], cred: &Cred) -> Result<()> {
        let hash = self.dx_name_hash(dir, name)?;
        let path = self.dx_path(dir, hash)?;
        let deepest = path.nodes.len() - 1;
        let d = path.nodes[deepest];
        if d.count < d.limit {
            return self.dx_split_leaf(dir, &path, cred);
        }
        let mut k = deepest;
        while k > 0 && path.nodes[k - 1].count >= path.nodes[k - 1].limit {
            k -= 1;
        }
        if k == 0 {
            if path.nodes.len() >= self.max_dx_levels() {
                // The kernel's "Directory index full!".
                return Err(Error::NoSpace);
            }
            return self.dx_add_level(dir, &path, cred);
        }
        self.dx_split_node(dir, &path, k, cred)
    }

    /// An index node's first bytes: the fake entry spanning the block.
    fn init_dx_node(&self, b: &mut [u8]) {
        let bs = b.len();
        b[..8].fill(0);
        b[4..6].copy_from_slice(&rec_len_to_disk(bs, bs).to_le_bytes());
    }

    /// The root is full: its entries move to a new index node below it,
    /// the root keeps one entry pointing there, one more level.
    fn dx_add_level(&self, dir: &mut Inode, path: &Path, cred: &Cred) -> Result<()> {
        let root = path.nodes[0];
        let bytes = self.cache_read_with(root.pblk, |b| b.to_vec())?;
        let credits = self.room_credits(dir, 1)?;
        self.room_step(dir, credits, |h, dir| {
            let got = self.append_blocks(h, dir, 1, cred)?;
            let (nl, np) = got[0];
            let d = dir.clone();
            h.create(PhysBlock(np), |b| {
                self.init_dx_node(b);
                let e = NODE_ENTRIES_OFFSET;
                b[e..e + root.count * 8]
                    .copy_from_slice(&bytes[root.entries..root.entries + root.count * 8]);
                set16(b, e, self.dx_limit(e) as u16);
                set16(b, e + 2, root.count as u16);
                self.seal_dx(&d, b, e);
            })?;
            h.modify(root.pblk, |b| {
                set16(b, root.entries + 2, 1);
                set32(b, root.entries + 4, nl);
                b[ROOT_INFO_OFFSET + 6] += 1;
                self.seal_dx(&d, b, root.entries);
            })?;
            Ok(true)
        })
    }

    /// Split full index node `path.nodes[k]` in half; its parent (with
    /// room) gets an entry for the new node.
    fn dx_split_node(&self, dir: &mut Inode, path: &Path, k: usize, cred: &Cred) -> Result<()> {
        let node = path.nodes[k];
        let parent = path.nodes[k - 1];
        let bytes = self.cache_read_with(node.pblk, |b| b.to_vec())?;
        let icount1 = node.count / 2;
        let icount2 = node.count - icount1;
        let hash2 = entry_hash(&bytes, node.entries, icount1);
        let credits = self.room_credits(dir, 1)?;
        self.room_step(dir, credits, |h, dir| {
            let got = self.append_blocks(h, dir, 1, cred)?;
            let (nl, np) = got[0];
            let d = dir.clone();
            h.create(PhysBlock(np), |b| {
                self.init_dx_node(b);
                let e = NODE_ENTRIES_OFFSET;
                let src = node.entries + icount1 * 8;
                b[e..e + icount2 * 8].copy_from_slice(&bytes[src..src + icount2 * 8]);
                set16(b, e, self.dx_limit(e) as u16);
                set16(b, e + 2, icount2 as u16);
                self.seal_dx(&d, b, e);
            })?;
            h.modify(node.pblk, |b| {
                set16(b, node.entries + 2, icount1 as u16);
                self.seal_dx(&d, b, node.entries);
            })?;
            h.modify(parent.pblk, |b| {
                dx_insert(b, parent.entries, parent.at, hash2, nl);
                self.seal_dx(&d, b, parent.entries);
            })?;
            Ok(true)
        })
    }

    /// Split the full leaf of `path` (its parent has room): the entries
    /// from the median hash on move to a new leaf at the directory's end.
    fn dx_split_leaf(&self, dir: &mut Inode, path: &Path, cred: &Cred) -> Result<()> {
        let parent = path.nodes[path.nodes.len() - 1];
        let lblk = path.leaf;
        let pblk = self.dir_pblk(dir, lblk)?;
        let block = self.leaf_bytes(dir, lblk, pblk)?;
        let map = self.live_entries(dir, &block, lblk, 0, 0)?;
        let (map, split, hash2) = self.split_map(map)?;
        let mut keep: Vec<&Live> = map[..split].iter().collect();
        keep.sort_by_key(|e| e.offset);
        let moved: Vec<&Live> = map[split..].iter().collect();
        let old = self.build_leaf(dir, &block, &keep);
        let new = self.build_leaf(dir, &block, &moved);
        let credits = self.room_credits(dir, 1)?;
        self.room_step(dir, credits, |h, dir| {
            let got = self.append_blocks(h, dir, 1, cred)?;
            let (nl, np) = got[0];
            let d = dir.clone();
            h.create(PhysBlock(np), |b| b.copy_from_slice(&new))?;
            h.modify(pblk, |b| b.copy_from_slice(&old))?;
            h.modify(parent.pblk, |b| {
                dx_insert(b, parent.entries, parent.at, hash2, nl);
                self.seal_dx(&d, b, parent.entries);
            })?;
            Ok(true)
        })
    }

    /// Point ".." of directory `dir` (block 0's second entry, in a linear
    /// block or a hash-tree root) at `parent`. One credit.
    pub(crate) fn set_dotdot(
        &self,
        h: &mut Handle<'_, D>,
        dir: &mut Inode,
        parent: InodeNo,
    ) -> Result<()> {
        if dir.has_flag(flags::INLINE_DATA) {
            // The parent's number leads `i_block`; the caller writes it.
            dir.block[0..4].copy_from_slice(&parent.0.to_le_bytes());
            self.dir_changed(dir.ino);
            return Ok(());
        }
        let dir = &*dir;
        let pblk = self.dir_pblk(dir, 0)?;
        let obj = Object::DirBlock {
            dir: dir.ino,
            lblk: FileBlock(0),
        };
        let dx = self.is_dx(dir);
        // Checked before the change: "." then "..".
        let ok = self.cache_read_marked(pblk, |b, mark| -> Result<bool> {
            if !dx {
                self.check_leaf_once(dir, b, FileBlock(0), mark)?;
            }
            let area = if dx { b } else { crate::dir::entry_area(b) };
            let mut it = Entries::new(area, 0, self.sb().inodes_count, obj);
            Ok(matches!(
                (it.next(), it.next()),
                (Some(Ok(d)), Some(Ok(dd))) if d.name == b"." && dd.name == b".." && dd.offset == 12
            ))
        })??;
        if !ok {
            return Err(Error::corrupt(
                obj,
                "directory block 0 does not start with \".\" and \"..\"",
            ));
        }
        h.modify(pblk, |b| {
            set32(b, 12, parent.0);
            if dx {
                self.seal_dx(dir, b, ROOT_ENTRIES);
            } else {
                self.seal_leaf(dir, b);
            }
        })?;
        self.dir_changed(dir.ino);
        Ok(())
    }

    /// Whether directory `dir` holds nothing but "." and "..". Damaged
    /// blocks count as not empty (the kernel refuses to remove them).
    pub(crate) fn dir_is_empty(&self, dir: &Inode) -> Result<bool> {
        if dir.has_flag(flags::INLINE_DATA) {
            return self.inline_is_empty(dir);
        }
        let dx = self.is_dx(dir);
        for lblk in 0..self.dir_blocks(dir) {
            let pblk = match self.map_block(dir, FileBlock(lblk))? {
                crate::blockmap::Run::Mapped { pblk, .. } => pblk,
                crate::blockmap::Run::Hole { .. } => continue,
            };
            if dx {
                let node =
                    self.cache_read_with(pblk, |b| crate::dir::is_dx_node(b, lblk as u64))?;
                if node {
                    continue;
                }
            }
            let other = self.scan_leaf(dir, FileBlock(lblk), pblk, |e, _| {
                (e.inode != 0 && e.name != b"." && e.name != b"..").then_some(())
            })?;
            if other.is_some() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(size: usize, hash: u32) -> Live {
        Live {
            offset: 0,
            size,
            hash,
        }
    }

    #[test]
    fn split_point_is_size_wise_like_do_split() {
        // Sixteen 64-byte entries in a 1 KiB block: moving stops once
        // half the block would be passed, here after 8.
        let map: Vec<Live> = (0..16).map(|i| live(64, i)).collect();
        assert_eq!(split_point(&map, 1024), 8);
        // One huge entry last: it moves alone.
        let mut map: Vec<Live> = (0..4).map(|i| live(12, i)).collect();
        map.push(live(900, 9));
        assert_eq!(split_point(&map, 1024), 4);
        // Everything together is under half a block: split by count.
        let map: Vec<Live> = (0..6).map(|i| live(12, i)).collect();
        assert_eq!(split_point(&map, 1024), 3);
        // Moving stops only at the first entry: split by count.
        let mut map = vec![live(600, 0)];
        map.extend((1..11).map(|i| live(40, i)));
        assert_eq!(split_point(&map, 1024), 5);
    }

    #[test]
    fn dx_insert_keeps_order() {
        let mut b = vec![0u8; 64];
        set16(&mut b, 8, 6);
        set16(&mut b, 10, 2);
        set32(&mut b, 12, 1);
        set32(&mut b, 16, 100);
        set32(&mut b, 20, 2);
        dx_insert(&mut b, 8, 0, 50, 3);
        assert_eq!(le16(&b, 10), 3);
        assert_eq!(entry_block(&b, 8, 1), 3);
        assert_eq!(entry_hash(&b, 8, 1), 50);
        assert_eq!(entry_hash(&b, 8, 2), 100);
        assert_eq!(entry_block(&b, 8, 2), 2);
    }
}
