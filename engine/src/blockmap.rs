//! Logical-to-physical block mapping of a file: extent trees of any depth
//! and the ext2/3 indirect map. Every pointer read from disk is checked to
//! lie inside the filesystem before it is followed.

use alloc::vec::Vec;

use crate::device::BlockDevice;
use crate::error::{Error, Object, Result};
use crate::extent::{self, Extent, Node};
use crate::inode::{flags, Inode};
use crate::numbers::{FileBlock, InodeNo, PhysBlock};
use crate::volume::Volume;

/// Logical blocks addressable by a file: ext4 logical block numbers are u32.
const MAX_LBLK: u64 = FileBlock::COUNT;

/// High word of an extent tree block's check [`Mark`](crate::block_cache::Mark)
/// tag (the low word is the inode's checksum seed); directory blocks use
/// other high words, so a block reused as another kind is checked again.
const EXTENT_MARK: u64 = 0x200;

/// Where `find_leaf` ended: a leaf node (in `i_block` when `block` is
/// None) covering logical blocks `lo..hi`.
struct Leaf {
    block: Option<PhysBlock>,
    lo: u64,
    hi: u64,
}

/// What lies at a logical block, and how far the same answer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Run {
    /// `len` blocks starting at `pblk` (unwritten ones read as zeros).
    Mapped {
        pblk: PhysBlock,
        len: u64,
        unwritten: bool,
    },
    /// `len` blocks of hole.
    Hole { len: u64 },
}

impl Run {
    pub fn len(&self) -> u64 {
        match *self {
            Run::Mapped { len, .. } | Run::Hole { len } => len,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<D: BlockDevice> Volume<D> {
    /// The run of blocks that starts at logical block `lblk` of `inode`.
    pub fn map_block(&self, inode: &Inode, lblk: FileBlock) -> Result<Run> {
        if inode.has_flag(flags::INLINE_DATA) {
            return Err(Error::corrupt(
                Object::Inode(inode.ino),
                "inline-data inode has no block map",
            ));
        }
        if inode.has_flag(flags::EXTENTS) {
            self.map_extent(inode, lblk.0)
        } else {
            self.map_indirect(inode, lblk.0)
        }
    }

    /// [`Volume::map_block`] for a block number computed from a byte
    /// offset: past the last logical block, a file is a hole.
    pub(crate) fn map_block_at(&self, inode: &Inode, lblk: u64) -> Result<Run> {
        match FileBlock::at(lblk) {
            Some(l) => self.map_block(inode, l),
            None => Ok(Run::Hole { len: 1 }),
        }
    }

    /// Whether `len` blocks at `pblk` lie inside the filesystem's data area.
    pub(crate) fn blocks_in_fs(&self, pblk: PhysBlock, len: u64) -> bool {
        let sb = self.sb();
        pblk.0 >= sb.first_data_block as u64
            && pblk.0 != 0
            && pblk
                .0
                .checked_add(len)
                .is_some_and(|e| e <= sb.blocks_count)
    }

    fn map_extent(&self, inode: &Inode, lblk: u32) -> Result<Run> {
        match self.find_leaf(inode, lblk)? {
            Err(hole) => Ok(hole),
            Ok(leaf) => self.with_leaf(inode, &leaf, |node, obj| {
                self.leaf_run(node, lblk, leaf.hi, obj)
            }),
        }
    }

    /// Descend the extent tree to the leaf whose range covers `lblk`, or
    /// the hole when `lblk` precedes every entry of an index node.
    fn find_leaf(&self, inode: &Inode, lblk: u32) -> Result<core::result::Result<Leaf, Run>> {
        let ino = inode.ino;
        let root = Node::parse(&inode.block, None, Object::Inode(ino))?;
        if root.depth == 0 {
            return Ok(Ok(Leaf {
                block: None,
                lo: 0,
                hi: MAX_LBLK,
            }));
        }
        // `hi` is the first logical block the current subtree cannot cover:
        // the next sibling's key at each level above; `lo` the key followed.
        let mut hi = MAX_LBLK;
        let mut lo = 0u64;
        let Some((mut child, key)) = self.search_node(&root, lblk, &mut hi, ino)? else {
            return Ok(Err(Run::Hole {
                len: hi.min(self.first_key(&root)) - lblk as u64,
            }));
        };
        lo = lo.max(key);
        let mut depth = root.depth;
        // Depth strictly decreases, so this takes at most MAX_DEPTH steps.
        while depth > 1 {
            let expect = depth - 1;
            let blk = child;
            let step = self.with_node(inode, blk, expect, |node| {
                let mut h = hi;
                Ok((
                    self.search_node(node, lblk, &mut h, ino)?,
                    h,
                    node.key(0).get(),
                ))
            })?;
            match step {
                (Some((c, key)), h, _) => {
                    child = c;
                    hi = h;
                    lo = lo.max(key);
                }
                (None, h, first) => {
                    return Ok(Err(Run::Hole {
                        len: h.min(first) - lblk as u64,
                    }))
                }
            }
            depth = expect;
        }
        Ok(Ok(Leaf {
            block: Some(child),
            lo,
            hi,
        }))
    }

    /// Run `f` on a checked tree block at the expected depth.
    fn with_node<R>(
        &self,
        inode: &Inode,
        blk: PhysBlock,
        depth: u16,
        f: impl FnOnce(&Node<'_>) -> Result<R>,
    ) -> Result<R> {
        let seed = inode.csum_seed;
        // Verified once per cached copy: every lookup in a big directory
        // maps its blocks through this node.
        let tag = EXTENT_MARK << 32 | seed as u64;
        self.cache_read_marked(blk, |bytes, mark| {
            if self.sb().metadata_csum() && self.check_csums() && !mark.is(tag) {
                if !extent::checksum_ok(bytes, seed) {
                    return Err(Error::Checksum {
                        object: Object::Block(blk),
                    });
                }
                mark.set(tag);
            }
            let node = Node::parse(bytes, Some(depth), Object::Block(blk))?;
            f(&node)
        })?
    }

    /// Run `f` on a leaf found by `find_leaf`.
    fn with_leaf<R>(
        &self,
        inode: &Inode,
        leaf: &Leaf,
        f: impl FnOnce(&Node<'_>, Object) -> Result<R>,
    ) -> Result<R> {
        match leaf.block {
            None => f(
                &Node::parse(&inode.block, None, Object::Inode(inode.ino))?,
                Object::Inode(inode.ino),
            ),
            Some(blk) => self.with_node(inode, blk, 0, |node| f(node, Object::Block(blk))),
        }
    }

    /// Every run of the on-disk leaf (extent leaf or pointer block) that
    /// covers `lblk`, from the start of that leaf's range to its end, holes
    /// included: what a mapping cache loads on a miss, one leaf at a time.
    /// Returns the first logical block of the first run.
    pub fn map_leaf(&self, inode: &Inode, lblk: FileBlock) -> Result<(FileBlock, Vec<Run>)> {
        if inode.has_flag(flags::INLINE_DATA) {
            return Ok((lblk, alloc::vec![self.map_block(inode, lblk)?]));
        }
        if !inode.has_flag(flags::EXTENTS) {
            return self.indirect_leaf(inode, lblk);
        }
        let leaf = match self.find_leaf(inode, lblk.0)? {
            Err(hole) => return Ok((lblk, alloc::vec![hole])),
            Ok(l) => l,
        };
        self.with_leaf(inode, &leaf, |node, obj| {
            let mut runs = Vec::with_capacity(node.entries * 2 + 1);
            let mut pos = leaf.lo;
            for i in 0..node.entries {
                let e = node.extent(i);
                self.check_extent(&e, obj)?;
                if e.lblk.get() < pos || e.end() > leaf.hi {
                    return Err(Error::corrupt(
                        obj,
                        "extents overlap or leave their parent's range",
                    ));
                }
                if e.lblk.get() > pos {
                    runs.push(Run::Hole {
                        len: e.lblk.get() - pos,
                    });
                }
                runs.push(Run::Mapped {
                    pblk: e.pblk,
                    len: e.len as u64,
                    unwritten: e.unwritten,
                });
                pos = e.end();
            }
            if pos < leaf.hi {
                runs.push(Run::Hole { len: leaf.hi - pos });
            }
            // `lo` is a key read from the tree or 0: below 2^32.
            Ok((FileBlock(leaf.lo as u32), runs))
        })
    }

    /// The runs of the pointer table (i_block's direct slots, or one
    /// indirect block) that holds `lblk`'s pointer.
    fn indirect_leaf(&self, inode: &Inode, lblk: FileBlock) -> Result<(FileBlock, Vec<Run>)> {
        let lblk = lblk.get();
        let p = (self.sb().block_size / 4) as u64;
        let (start, end) = if lblk < 12 {
            (0, 12)
        } else {
            let s = 12 + (lblk - 12) / p * p;
            (s, s + p)
        };
        let mut runs = Vec::new();
        let mut pos = start;
        // Each run covers at least one pointer, so this reads at most one
        // table's worth of runs. A hole may run on past the table (zero
        // pointers above it): it is kept whole, so a missing subtree is one
        // cached mapping, and it ends the table.
        while pos < end.min(MAX_LBLK) {
            let r = self.map_block_at(inode, pos)?;
            let r = match r {
                Run::Mapped {
                    pblk,
                    len,
                    unwritten,
                } => Run::Mapped {
                    pblk,
                    len: len.min(end - pos),
                    unwritten,
                },
                hole => hole,
            };
            runs.push(r);
            pos += r.len();
        }
        // `start` is at most `lblk`, which is below 2^32.
        Ok((FileBlock(start as u32), runs))
    }

    fn first_key(&self, node: &Node<'_>) -> u64 {
        if node.entries == 0 {
            MAX_LBLK
        } else {
            node.key(0).get()
        }
    }

    /// In an index node: the child block to descend into for `lblk`, with
    /// `limit` lowered to the next sibling's key.
    fn search_node(
        &self,
        node: &Node<'_>,
        lblk: u32,
        limit: &mut u64,
        ino: InodeNo,
    ) -> Result<Option<(PhysBlock, u64)>> {
        if node.depth == 0 {
            return Ok(None);
        }
        let Some(i) = node.search(FileBlock(lblk)) else {
            return Ok(None);
        };
        if i + 1 < node.entries {
            let next = node.key(i + 1).get();
            if next <= node.key(i).get() {
                return Err(Error::corrupt(
                    Object::Inode(ino),
                    "extent index entries are not in order",
                ));
            }
            *limit = (*limit).min(next);
        }
        let (key, child) = node.index(i);
        if !self.blocks_in_fs(child, 1) {
            return Err(Error::corrupt(
                Object::Inode(ino),
                "extent index points outside the filesystem",
            ));
        }
        Ok(Some((child, key.get())))
    }

    fn leaf_run(&self, node: &Node<'_>, lblk: u32, limit: u64, obj: Object) -> Result<Run> {
        match node.search(FileBlock(lblk)) {
            None => Ok(Run::Hole {
                len: limit.min(self.first_key(node)) - lblk as u64,
            }),
            Some(i) => {
                let e = node.extent(i);
                self.check_extent(&e, obj)?;
                let next = if i + 1 < node.entries {
                    node.key(i + 1).get()
                } else {
                    limit
                };
                if next < e.end() && i + 1 < node.entries {
                    return Err(Error::corrupt(obj, "extents overlap"));
                }
                if (lblk as u64) < e.end() {
                    let skip = (lblk - e.lblk.0) as u64;
                    Ok(Run::Mapped {
                        pblk: PhysBlock(e.pblk.0 + skip),
                        len: e.len as u64 - skip,
                        unwritten: e.unwritten,
                    })
                } else {
                    Ok(Run::Hole {
                        len: next.max(lblk as u64 + 1) - lblk as u64,
                    })
                }
            }
        }
    }

    pub(crate) fn check_extent(&self, e: &Extent, obj: Object) -> Result<()> {
        if e.len == 0 {
            return Err(Error::corrupt(obj, "extent has zero length"));
        }
        if e.end() > MAX_LBLK {
            return Err(Error::corrupt(
                obj,
                "extent runs past the largest logical block",
            ));
        }
        if !self.blocks_in_fs(e.pblk, e.len as u64) {
            return Err(Error::corrupt(obj, "extent points outside the filesystem"));
        }
        Ok(())
    }

    /// ext2/3 block map: 12 direct pointers, then single, double and
    /// triple indirect blocks of `block_size / 4` pointers each.
    ///
    /// A hole runs from `lblk` to the next logical block that a non-zero
    /// pointer at any level could map, as one answer: the rest of the
    /// subtree under the zero pointer found, then every following zero
    /// pointer of that table and of the tables above it (a missing double
    /// indirect block is one hole, not a hole per pointer block). Work is
    /// bounded whatever the blocks hold: one descent (at most four pointer
    /// tables) and one scan of each table on the way back up.
    fn map_indirect(&self, inode: &Inode, lblk: u32) -> Result<Run> {
        let ino = inode.ino;
        let p = (self.sb().block_size / 4) as u64;
        let l = lblk as u64;
        let to_end = MAX_LBLK - l;
        // The i_block slot that covers `l` and the offset into its subtree.
        let (slot, mut rel) = if l < 12 {
            (l as usize, 0)
        } else {
            let mut rel = l - 12;
            let mut slot = 12;
            while slot < 15 && rel >= top_span(slot, p) {
                rel -= top_span(slot, p);
                slot += 1;
            }
            if slot == 15 {
                return Ok(Run::Hole { len: to_end });
            }
            (slot, rel)
        };
        if l < 12 && inode.block_word(slot) != 0 {
            return self.pointer_run(|i| inode.block_word(i), 12, slot, Object::Inode(ino));
        }
        // The pointers followed so far: (table: None for i_block, index,
        // blocks under that pointer).
        let mut path: [(Option<PhysBlock>, usize, u64); 4] = [(None, 0, 0); 4];
        let mut depth = 0;
        let mut span = top_span(slot, p);
        let mut ptr = PhysBlock(inode.block_word(slot) as u64);
        let mut table = None;
        let mut idx = slot;
        loop {
            // `span`: blocks under `ptr` (entry `idx` of `table`); `rel`:
            // `l`'s offset in them.
            path[depth] = (table, idx, span);
            depth += 1;
            let obj = table.map_or(Object::Inode(ino), Object::Block);
            if ptr.0 == 0 {
                let len = span - rel + self.zeros_after(inode, &path[..depth], p)?;
                return Ok(Run::Hole {
                    len: len.min(to_end),
                });
            }
            if !self.blocks_in_fs(ptr, 1) {
                return Err(Error::corrupt(
                    obj,
                    "indirect block pointer points outside the filesystem",
                ));
            }
            let child_span = span / p;
            let ci = (rel / child_span) as usize;
            let b = ptr;
            if child_span == 1 {
                let run = self.cache_read_with(b, |bytes| {
                    self.pointer_run(|i| word(bytes, i), bytes.len() / 4, ci, Object::Block(b))
                })??;
                return match run {
                    Run::Hole { len } if ci as u64 + len == p => {
                        let len = len + self.zeros_after(inode, &path[..depth], p)?;
                        Ok(Run::Hole {
                            len: len.min(to_end),
                        })
                    }
                    r => Ok(r),
                };
            }
            // Depth is at most 4: the spans shrink by `p` each step.
            ptr = PhysBlock(self.cache_read_with(b, |bytes| word(bytes, ci) as u64)?);
            table = Some(b);
            idx = ci;
            rel %= child_span;
            span = child_span;
        }
    }

    /// Blocks covered by the zero pointers that follow the entries of
    /// `path` (innermost last), climbing while a table's zeros run to its
    /// end: the tail of a hole that begins at or under `path`'s last entry.
    fn zeros_after(
        &self,
        inode: &Inode,
        path: &[(Option<PhysBlock>, usize, u64)],
        p: u64,
    ) -> Result<u64> {
        let mut total = 0u64;
        for &(table, idx, span) in path.iter().rev() {
            let (blocks, to_end) = match table {
                None => {
                    let mut blocks = 0;
                    let mut slot = idx + 1;
                    while slot < 15 && inode.block_word(slot) == 0 {
                        blocks += top_span(slot, p);
                        slot += 1;
                    }
                    (blocks, slot == 15)
                }
                Some(b) => self.cache_read_with(b, |bytes| {
                    let n = bytes.len() / 4;
                    let zeros = (idx + 1..n).take_while(|&i| word(bytes, i) == 0).count();
                    (zeros as u64 * span, idx + 1 + zeros == n)
                })?,
            };
            total += blocks;
            if !to_end {
                break;
            }
        }
        Ok(total)
    }

    /// The run starting at pointer `idx` of a table of `n` block pointers
    /// (`ptr(i)` reads one): consecutive physical blocks, or consecutive
    /// zero pointers.
    fn pointer_run(
        &self,
        ptr: impl Fn(usize) -> u32,
        n: usize,
        idx: usize,
        obj: Object,
    ) -> Result<Run> {
        let first = ptr(idx) as u64;
        let mut len = 1usize;
        if first == 0 {
            while idx + len < n && ptr(idx + len) == 0 {
                len += 1;
            }
            return Ok(Run::Hole { len: len as u64 });
        }
        while idx + len < n && ptr(idx + len) as u64 == first + len as u64 {
            len += 1;
        }
        if !self.blocks_in_fs(PhysBlock(first), len as u64) {
            return Err(Error::corrupt(
                obj,
                "block pointer points outside the filesystem",
            ));
        }
        Ok(Run::Mapped {
            pblk: PhysBlock(first),
            len: len as u64,
            unwritten: false,
        })
    }
}

/// Blocks under `i_block[slot]`: one for a direct pointer, then `p`,
/// `p^2` and `p^3` for the single, double and triple indirect pointers.
fn top_span(slot: usize, p: u64) -> u64 {
    match slot {
        0..=11 => 1,
        12 => p,
        13 => p * p,
        _ => p * p * p,
    }
}

fn word(bytes: &[u8], i: usize) -> u32 {
    let b = &bytes[i * 4..i * 4 + 4];
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}
