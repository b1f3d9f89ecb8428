//! Hashed directory (htree / `dir_index`) lookups: descend the index by the
//! name's hash to the one leaf that can hold it, O(depth) blocks per lookup.

use alloc::vec::Vec;

use heapless::Vec as HVec;

use crate::block_cache::Mark;
use crate::blockmap::Run;
use crate::checksum::crc32c;
use crate::device::BlockDevice;
use crate::dx_hash::{dx_hash, HashVersion};
use crate::error::{Error, Object, Result};
use crate::features::incompat;
use crate::inode::Inode;
use crate::numbers::{FileBlock, InodeNo, PhysBlock};
use crate::superblock::FLAG_UNSIGNED_HASH;
use crate::volume::Volume;

/// Root info starts after the "." (12 bytes) and ".." (12 bytes) entries.
pub(crate) const ROOT_INFO_OFFSET: usize = 24;
/// Interior nodes start with an empty 8-byte entry header.
pub(crate) const NODE_ENTRIES_OFFSET: usize = 8;
/// The kernel allows 2 levels (3 with `large_dir`): indirect levels < this.
pub(crate) const MAX_LEVELS: usize = 3;
/// Leaves of one hash-collision run a lookup reads before it turns to the
/// directory's name index ([`crate::name_index`]).
pub const COLLISION_LEAVES: usize = 4;

/// Where a lookup stands in one index node.
#[derive(Clone, Copy)]
struct Frame {
    /// Logical block of the node.
    lblk: u32,
    /// Index of the entry followed.
    at: u16,
    count: u16,
    /// Byte offset of the entry array in the node.
    entries: usize,
}

pub(crate) fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}
pub(crate) fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

/// Block number field of a dx entry: the kernel uses the low 28 bits.
pub(crate) fn entry_block(b: &[u8], entries: usize, i: usize) -> u32 {
    le32(b, entries + i * 8 + 4) & 0x0fff_ffff
}
/// A child of an index node: its block and the lowest and highest hash
/// its index entry allows.
type Child = (u32, u32, u32);

pub(crate) fn entry_hash(b: &[u8], entries: usize, i: usize) -> u32 {
    if i == 0 {
        0
    } else {
        le32(b, entries + i * 8)
    }
}

impl<D: BlockDevice> Volume<D> {
    /// Map one logical block of a directory to its physical block.
    pub(crate) fn dir_pblk(&self, dir: &Inode, lblk: u32) -> Result<PhysBlock> {
        match self.map_block(dir, FileBlock(lblk))? {
            Run::Mapped { pblk, .. } => Ok(pblk),
            Run::Hole { .. } => Err(Error::corrupt(
                Object::DirBlock {
                    dir: dir.ino,
                    lblk: FileBlock(lblk),
                },
                "hash tree points at a hole",
            )),
        }
    }

    /// Verify a dx node's tail checksum (`metadata_csum`).
    fn dx_checksum_ok(&self, dir: &Inode, b: &[u8], entries: usize) -> bool {
        if !self.sb().metadata_csum() || !self.check_csums() {
            return true;
        }
        let limit = le16(b, entries) as usize;
        let count = le16(b, entries + 2) as usize;
        let tail = entries + limit * 8;
        if tail + 8 > b.len() {
            return false;
        }
        let mut c = crc32c(dir.csum_seed, &b[..entries + count * 8]);
        c = crc32c(c, &b[tail..tail + 4]);
        // ... and the checksum field itself, as zeros.
        c = crc32c(c, &[0u8; 4]);
        c == le32(b, tail + 4)
    }

    /// The number of entries a dx node of this kind may hold.
    pub(crate) fn dx_limit(&self, entries: usize) -> usize {
        let bs = self.sb().block_size as usize;
        let tail = if self.sb().metadata_csum() { 8 } else { 0 };
        (bs - entries - tail) / 8
    }

    /// Check an index node's header: returns (offset of the entry array,
    /// entry count, indirect levels for the root). With a `mark`, the
    /// checksum is verified once per cached copy of the block.
    pub(crate) fn dx_header(
        &self,
        dir: &Inode,
        b: &[u8],
        root: bool,
        obj: Object,
        mark: Option<&Mark>,
    ) -> Result<(usize, usize, u8)> {
        let bad = |what| Err(Error::corrupt(obj, what));
        let (entries, levels) = if root {
            if le32(b, ROOT_INFO_OFFSET) != 0 {
                return bad("hash tree root info has a nonzero reserved field");
            }
            let info_len = b[ROOT_INFO_OFFSET + 5] as usize;
            if info_len != 8 {
                return bad("hash tree root info has the wrong length");
            }
            (ROOT_INFO_OFFSET + info_len, b[ROOT_INFO_OFFSET + 6])
        } else {
            (NODE_ENTRIES_OFFSET, 0)
        };
        let limit = le16(b, entries) as usize;
        let count = le16(b, entries + 2) as usize;
        if limit != self.dx_limit(entries) {
            return bad("hash tree node has the wrong entry limit");
        }
        if count == 0 || count > limit {
            return bad("hash tree node entry count is 0 or over its limit");
        }
        // The result depends on the bytes, the seed and where the entries
        // start (root or interior node); the high bits keep it apart from
        // a leaf's tag.
        let tag = (0x100 | entries as u64) << 32 | dir.csum_seed as u64;
        if !mark.is_some_and(|m| m.is(tag)) {
            if !self.dx_checksum_ok(dir, b, entries) {
                return Err(Error::Checksum { object: obj });
            }
            if let Some(m) = mark {
                m.set(tag);
            }
        }
        Ok((entries, count, levels))
    }

    /// Read index node `lblk`, check it, and find the entry for `hash`.
    fn dx_node(
        &self,
        dir: &Inode,
        lblk: u32,
        root: bool,
        hash: u32,
    ) -> Result<(Frame, u32, Option<u8>)> {
        let obj = Object::DirBlock {
            dir: dir.ino,
            lblk: FileBlock(lblk),
        };
        let pblk = self.dir_pblk(dir, lblk)?;
        self.cache_read_marked(pblk, |b, mark| -> Result<(Frame, u32, Option<u8>)> {
            let (entries, count, levels) = self.dx_header(dir, b, root, obj, Some(mark))?;
            // Last entry whose hash is <= the target (entry 0 covers from 0).
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
            let frame = Frame {
                lblk,
                at: at as u16,
                count: count as u16,
                entries,
            };
            Ok((frame, entry_block(b, entries, at), root.then_some(levels)))
        })?
    }

    /// The hash function this hashed directory's names are filed under.
    pub(crate) fn dx_hash_version(&self, dir: &Inode) -> Result<HashVersion> {
        let pblk = self.dir_pblk(dir, 0)?;
        let version = self.cache_read_with(pblk, |b| b[ROOT_INFO_OFFSET + 4])?;
        let unsigned = self.sb().flags & FLAG_UNSIGNED_HASH != 0;
        HashVersion::from_disk(version)
            .map(|v| v.with_unsigned(unsigned))
            .ok_or(Error::corrupt(
                Object::DirBlock {
                    dir: dir.ino,
                    lblk: FileBlock(0),
                },
                "hash tree uses an unknown hash",
            ))
    }

    /// Visit every index node of the tree, checking each (header, limit,
    /// checksum, ascending hashes, children inside the directory); `leaf`
    /// is called with each leaf block number and the hashes its index entry
    /// allows, lowest and highest (the next entry's hash: colliding names
    /// may continue into the next leaf).
    pub(crate) fn dx_walk(&self, dir: &Inode, leaf: &mut dyn FnMut(u32, u32, u32)) -> Result<()> {
        let nblocks = dir.size.div_ceil(self.sb().block_size as u64);
        let max_levels = if self.sb().has_incompat(incompat::LARGEDIR) {
            MAX_LEVELS
        } else {
            2
        };
        // (node lblk, levels below it); at most one pending list per level.
        let mut stack: Vec<(u32, usize)> = Vec::new();
        let mut root_levels = None;
        stack.push((0, 0));
        let mut visited = 0u64;
        while let Some((lblk, below)) = stack.pop() {
            visited += 1;
            if visited > nblocks {
                return Err(Error::corrupt(
                    Object::Inode(dir.ino),
                    "hash tree visits more nodes than the directory has blocks",
                ));
            }
            let root = root_levels.is_none();
            let obj = Object::DirBlock {
                dir: dir.ino,
                lblk: FileBlock(lblk),
            };
            let pblk = self.dir_pblk(dir, lblk)?;
            let kids = self.cache_read_with(pblk, |b| -> Result<(Vec<Child>, u8)> {
                let (entries, count, levels) = self.dx_header(dir, b, root, obj, None)?;
                let mut kids = Vec::with_capacity(count);
                let mut prev = 0u32;
                for i in 0..count {
                    let h = entry_hash(b, entries, i);
                    if i > 1 && h < prev {
                        return Err(Error::corrupt(
                            obj,
                            "hash tree entries are not in hash order",
                        ));
                    }
                    prev = h;
                    let c = entry_block(b, entries, i);
                    if c == 0 || c as u64 >= nblocks {
                        return Err(Error::corrupt(
                            obj,
                            "hash tree entry points outside the directory",
                        ));
                    }
                    // Bit 0 of a stored hash flags a collision run.
                    let hi = if i + 1 < count {
                        entry_hash(b, entries, i + 1) & !1
                    } else {
                        0xffff_fffe
                    };
                    kids.push((c, h & !1, hi));
                }
                Ok((kids, levels))
            })??;
            let below = if root {
                let levels = kids.1 as usize;
                if levels >= max_levels {
                    return Err(Error::corrupt(
                        obj,
                        "hash tree is deeper than the filesystem allows",
                    ));
                }
                root_levels = Some(levels);
                levels
            } else {
                below
            };
            for (c, lo, hi) in kids.0 {
                if below == 0 {
                    leaf(c, lo, hi);
                } else {
                    stack.push((c, below - 1));
                }
            }
        }
        Ok(())
    }

    /// Look `name` up through the hash tree: `Ok(None)` when it is not
    /// there, `Err(Corrupt)` when the tree is damaged (the caller falls
    /// back to a linear scan).
    pub(crate) fn dx_lookup(&self, dir: &Inode, name: &[u8]) -> Result<Option<InodeNo>> {
        let obj = Object::DirBlock {
            dir: dir.ino,
            lblk: FileBlock(0),
        };
        let version = self.dx_hash_version(dir)?;
        let (hash, _minor) = dx_hash(name, version, self.sb().hash_seed);

        let max_levels = if self.sb().has_incompat(incompat::LARGEDIR) {
            MAX_LEVELS
        } else {
            2
        };
        let mut frames: HVec<Frame, MAX_LEVELS> = HVec::new();
        let (frame, mut child, levels) = self.dx_node(dir, 0, true, hash)?;
        let levels = levels.unwrap_or(0) as usize;
        if levels >= max_levels {
            return Err(Error::corrupt(
                obj,
                "hash tree is deeper than the filesystem allows",
            ));
        }
        let _ = frames.push(frame);
        for _ in 0..levels {
            let (f, c, _) = self.dx_node(dir, child, false, hash)?;
            let _ = frames.push(f);
            child = c;
        }
        let nblocks = dir.size.div_ceil(self.sb().block_size as u64);
        // Names whose hashes collide may continue into following leaves;
        // each step moves to a later index entry, so this ends. A run
        // longer than a few leaves (hostile names, or a weak hash) would
        // make every lookup in it a scan of the run: past that, the
        // directory gets a name index, which later lookups use directly.
        let mut leaves = 0;
        loop {
            leaves += 1;
            if leaves > COLLISION_LEAVES {
                return self.scan_lookup(dir, name);
            }
            if child as u64 >= nblocks {
                return Err(Error::corrupt(
                    obj,
                    "hash tree points past the end of the directory",
                ));
            }
            if let Some(ino) = self.linear_lookup(dir, name, child as u64, child as u64 + 1)? {
                return Ok(Some(ino));
            }
            match self.dx_next_leaf(dir, &mut frames, hash)? {
                Some(next) => child = next,
                None => return Ok(None),
            }
        }
    }

    /// The leaf (logical block) where `name` belongs by its hash: where an
    /// insert must put it to keep the index consistent.
    pub(crate) fn dx_leaf(&self, dir: &Inode, name: &[u8]) -> Result<u32> {
        let version = self.dx_hash_version(dir)?;
        let (hash, _minor) = dx_hash(name, version, self.sb().hash_seed);
        let max_levels = if self.sb().has_incompat(incompat::LARGEDIR) {
            MAX_LEVELS
        } else {
            2
        };
        let (_, mut child, levels) = self.dx_node(dir, 0, true, hash)?;
        let levels = levels.unwrap_or(0) as usize;
        if levels >= max_levels {
            return Err(Error::corrupt(
                Object::DirBlock {
                    dir: dir.ino,
                    lblk: FileBlock(0),
                },
                "hash tree is deeper than the filesystem allows",
            ));
        }
        for _ in 0..levels {
            child = self.dx_node(dir, child, false, hash)?.1;
        }
        Ok(child)
    }

    /// Advance to the next leaf if it continues the run of `hash` (its
    /// first hash, low bit cleared, equals ours), as `ext4_htree_next_block`.
    fn dx_next_leaf(
        &self,
        dir: &Inode,
        frames: &mut HVec<Frame, MAX_LEVELS>,
        hash: u32,
    ) -> Result<Option<u32>> {
        // Find the deepest frame with an entry after the one followed.
        let mut level = frames.len();
        loop {
            if level == 0 {
                return Ok(None);
            }
            level -= 1;
            if frames[level].at + 1 < frames[level].count {
                break;
            }
        }
        frames[level].at += 1;
        let f = frames[level];
        let pblk = self.dir_pblk(dir, f.lblk)?;
        let (bhash, mut child) = self.cache_read_with(pblk, |b| {
            (
                entry_hash(b, f.entries, f.at as usize),
                entry_block(b, f.entries, f.at as usize),
            )
        })?;
        if bhash & !1 != hash {
            return Ok(None);
        }
        // Descend along first entries to the leaf.
        for l in level + 1..frames.len() {
            let (mut nf, _, _) = self.dx_node(dir, child, false, 0)?;
            nf.at = 0;
            let pb = self.dir_pblk(dir, child)?;
            child = self.cache_read_with(pb, |b| entry_block(b, nf.entries, 0))?;
            frames[l] = nf;
        }
        Ok(Some(child))
    }
}
