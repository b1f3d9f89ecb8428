//! Logical-to-physical block mapping of a file: extent trees of any depth
//! and the ext2/3 indirect map. Every pointer read from disk is checked to
//! lie inside the filesystem before it is followed.

use alloc::vec::Vec;

use crate::device::BlockDevice;
use crate::error::{Error, Object, Result};
use crate::extent::{self, Extent, Node};
use crate::inode::{flags, Inode};
use crate::volume::Volume;

/// Logical blocks addressable by a file: ext4 logical block numbers are u32.
pub const MAX_LBLK: u64 = 1 << 32;

/// Where `find_leaf` ended: a leaf node (in `i_block` when `block` is
/// None) covering logical blocks `lo..hi`.
struct Leaf {
    block: Option<u64>,
    lo: u64,
    hi: u64,
}

/// What lies at a logical block, and how far the same answer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Run {
    /// `len` blocks starting at `pblk` (unwritten ones read as zeros).
    Mapped {
        pblk: u64,
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
    pub fn map_block(&self, inode: &Inode, lblk: u64) -> Result<Run> {
        if lblk >= MAX_LBLK {
            return Ok(Run::Hole { len: 1 });
        }
        if inode.has_flag(flags::INLINE_DATA) {
            return Err(Error::corrupt(
                Object::Inode(inode.ino),
                "inline-data inode has no block map",
            ));
        }
        if inode.has_flag(flags::EXTENTS) {
            self.map_extent(inode, lblk as u32)
        } else {
            self.map_indirect(inode, lblk as u32)
        }
    }

    /// Whether `len` blocks at `pblk` lie inside the filesystem's data area.
    pub(crate) fn blocks_in_fs(&self, pblk: u64, len: u64) -> bool {
        let sb = self.sb();
        pblk >= sb.first_data_block as u64
            && pblk != 0
            && pblk.checked_add(len).is_some_and(|e| e <= sb.blocks_count)
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
                    node.key(0) as u64,
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
        blk: u64,
        depth: u16,
        f: impl FnOnce(&Node<'_>) -> Result<R>,
    ) -> Result<R> {
        let seed = inode.csum_seed;
        self.cache_read_with(blk, |bytes| {
            if self.sb().metadata_csum() && self.check_csums() && !extent::checksum_ok(bytes, seed)
            {
                return Err(Error::Checksum {
                    object: Object::Block(blk),
                });
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
    pub fn map_leaf(&self, inode: &Inode, lblk: u64) -> Result<(u64, Vec<Run>)> {
        if lblk >= MAX_LBLK || inode.has_flag(flags::INLINE_DATA) {
            return Ok((lblk, alloc::vec![self.map_block(inode, lblk)?]));
        }
        if !inode.has_flag(flags::EXTENTS) {
            return self.indirect_leaf(inode, lblk);
        }
        let leaf = match self.find_leaf(inode, lblk as u32)? {
            Err(hole) => return Ok((lblk, alloc::vec![hole])),
            Ok(l) => l,
        };
        self.with_leaf(inode, &leaf, |node, obj| {
            let mut runs = Vec::with_capacity(node.entries * 2 + 1);
            let mut pos = leaf.lo;
            for i in 0..node.entries {
                let e = node.extent(i);
                self.check_extent(&e, obj)?;
                if (e.lblk as u64) < pos || e.end() > leaf.hi {
                    return Err(Error::corrupt(
                        obj,
                        "extents overlap or leave their parent's range",
                    ));
                }
                if (e.lblk as u64) > pos {
                    runs.push(Run::Hole {
                        len: e.lblk as u64 - pos,
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
            Ok((leaf.lo, runs))
        })
    }

    /// The runs of the pointer table (i_block's direct slots, or one
    /// indirect block) that holds `lblk`'s pointer.
    fn indirect_leaf(&self, inode: &Inode, lblk: u64) -> Result<(u64, Vec<Run>)> {
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
        // table's worth of runs.
        while pos < end.min(MAX_LBLK) {
            let r = self.map_block(inode, pos)?;
            let len = r.len().min(end - pos);
            runs.push(match r {
                Run::Mapped {
                    pblk, unwritten, ..
                } => Run::Mapped {
                    pblk,
                    len,
                    unwritten,
                },
                Run::Hole { .. } => Run::Hole { len },
            });
            pos += len;
        }
        Ok((start, runs))
    }

    fn first_key(&self, node: &Node<'_>) -> u64 {
        if node.entries == 0 {
            MAX_LBLK
        } else {
            node.key(0) as u64
        }
    }

    /// In an index node: the child block to descend into for `lblk`, with
    /// `limit` lowered to the next sibling's key.
    fn search_node(
        &self,
        node: &Node<'_>,
        lblk: u32,
        limit: &mut u64,
        ino: u32,
    ) -> Result<Option<(u64, u64)>> {
        if node.depth == 0 {
            return Ok(None);
        }
        let Some(i) = node.search(lblk) else {
            return Ok(None);
        };
        if i + 1 < node.entries {
            let next = node.key(i + 1) as u64;
            if next <= node.key(i) as u64 {
                return Err(Error::corrupt(
                    Object::Inode(ino),
                    "extent index entries are not in order",
                ));
            }
            *limit = (*limit).min(next);
        }
        let (_, child) = node.index(i);
        if !self.blocks_in_fs(child, 1) {
            return Err(Error::corrupt(
                Object::Inode(ino),
                "extent index points outside the filesystem",
            ));
        }
        Ok(Some((child, node.key(i) as u64)))
    }

    fn leaf_run(&self, node: &Node<'_>, lblk: u32, limit: u64, obj: Object) -> Result<Run> {
        match node.search(lblk) {
            None => Ok(Run::Hole {
                len: limit.min(self.first_key(node)) - lblk as u64,
            }),
            Some(i) => {
                let e = node.extent(i);
                self.check_extent(&e, obj)?;
                let next = if i + 1 < node.entries {
                    node.key(i + 1) as u64
                } else {
                    limit
                };
                if next < e.end() && i + 1 < node.entries {
                    return Err(Error::corrupt(obj, "extents overlap"));
                }
                if (lblk as u64) < e.end() {
                    let skip = (lblk - e.lblk) as u64;
                    Ok(Run::Mapped {
                        pblk: e.pblk + skip,
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
    fn map_indirect(&self, inode: &Inode, lblk: u32) -> Result<Run> {
        let ino = inode.ino;
        let p = (self.sb().block_size / 4) as u64;
        let l = lblk as u64;
        if l < 12 {
            return self.pointer_run(|i| inode.block_word(i), 12, l as usize, Object::Inode(ino));
        }
        // (which i_block slot, levels below it, offset within its span)
        let mut rel = l - 12;
        let spans = [p, p * p, p * p * p];
        let mut level = 0;
        while level < 3 && rel >= spans[level] {
            rel -= spans[level];
            level += 1;
        }
        if level == 3 {
            return Ok(Run::Hole { len: MAX_LBLK - l });
        }
        let mut blk = inode.block_word(12 + level) as u64;
        let mut span = spans[level];
        let mut obj = Object::Inode(ino);
        loop {
            // span: blocks covered by the subtree under `blk`.
            if blk == 0 {
                return Ok(Run::Hole { len: span - rel });
            }
            if !self.blocks_in_fs(blk, 1) {
                return Err(Error::corrupt(
                    obj,
                    "indirect block pointer points outside the filesystem",
                ));
            }
            let child_span = span / p;
            let idx = (rel / child_span) as usize;
            let b = blk;
            if child_span == 1 {
                return self.cache_read_with(b, |bytes| {
                    self.pointer_run(|i| word(bytes, i), bytes.len() / 4, idx, Object::Block(b))
                })?;
            }
            blk = self.cache_read_with(b, |bytes| word(bytes, idx) as u64)?;
            rel %= child_span;
            span = child_span;
            obj = Object::Block(b);
        }
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
        if !self.blocks_in_fs(first, len as u64) {
            return Err(Error::corrupt(
                obj,
                "block pointer points outside the filesystem",
            ));
        }
        Ok(Run::Mapped {
            pblk: first,
            len: len as u64,
            unwritten: false,
        })
    }
}

fn word(bytes: &[u8], i: usize) -> u32 {
    let b = &bytes[i * 4..i * 4 + 4];
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}
