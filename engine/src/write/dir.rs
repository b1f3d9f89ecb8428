//! Directory entry edits: find room for a name (linear directories: any
//! block, or a new block at the end; hash-tree directories: the one leaf
//! the name hashes to), insert, and remove. Leaf blocks keep their
//! `metadata_csum` tail. The caller holds the directory's inode lock.

use crate::attr::FileType;
use crate::blockmap::Run;
use crate::checksum::crc32c;
use crate::device::BlockDevice;
use crate::dir::{has_tail, rec_len_from_disk, Entries, HEADER_LEN, TAIL_LEN};
use crate::error::{Error, Object, Result};
use crate::features::incompat;
use crate::inode::{flags, Inode};
use crate::numbers::{FileBlock, InodeNo, PhysBlock};
use crate::txn::Handle;
use crate::volume::Volume;

/// Where a new entry goes.
#[derive(Clone, Copy, Debug)]
pub enum Slot {
    /// Inside existing block `lblk` (at `pblk`): the entry at `offset` is
    /// empty (`inode` 0) and long enough, or has room after its name.
    At {
        lblk: FileBlock,
        pblk: PhysBlock,
        offset: usize,
    },
    /// In an inline-data directory, the entry at `offset` of its areas
    /// (see [`super::inline_dir`]).
    Inline { offset: usize },
    /// The directory needs one more block at its end (linear), or an
    /// inline-data directory more room.
    NewBlock,
    /// The hash-tree leaf the name belongs to is full: it must be split.
    Split,
}

/// An entry found by name.
#[derive(Clone, Copy, Debug)]
pub struct Found {
    pub lblk: FileBlock,
    pub pblk: PhysBlock,
    pub offset: usize,
    /// The entry before it in the same block, if any.
    pub prev: Option<usize>,
    pub ino: InodeNo,
    /// In an inline-data directory (`offset` and `prev` in its areas;
    /// `lblk` and `pblk` unused).
    pub inline: bool,
}

/// Bytes an entry with a name of `len` needs.
pub fn rec_len(name_len: usize) -> usize {
    (HEADER_LEN + name_len + 3) & !3
}

pub(crate) fn rec_len_to_disk(len: usize, bs: usize) -> u16 {
    if bs >= 65536 && len == bs {
        // 64 KiB blocks store a whole-block record as 65535 (or 0).
        return 65535;
    }
    len as u16
}

pub(crate) fn put_entry(
    b: &mut [u8],
    off: usize,
    ino: u32,
    rec: usize,
    name: &[u8],
    ft: u8,
    bs: usize,
) {
    b[off..off + 4].copy_from_slice(&ino.to_le_bytes());
    b[off + 4..off + 6].copy_from_slice(&rec_len_to_disk(rec, bs).to_le_bytes());
    b[off + 6] = name.len() as u8;
    b[off + 7] = ft;
    b[off + 8..off + 8 + name.len()].copy_from_slice(name);
}

/// The file type byte of a directory entry.
pub fn dirent_type(kind: FileType) -> u8 {
    match kind {
        FileType::Regular => 1,
        FileType::Directory => 2,
        FileType::CharDevice => 3,
        FileType::BlockDevice => 4,
        FileType::Fifo => 5,
        FileType::Socket => 6,
        FileType::Symlink => 7,
    }
}

impl<D: BlockDevice> Volume<D> {
    /// The leaf's checksum tail, recomputed (`metadata_csum`).
    pub(crate) fn seal_leaf(&self, dir: &Inode, b: &mut [u8]) {
        if !self.sb().metadata_csum() || !has_tail(b) {
            return;
        }
        let n = b.len();
        let c = crc32c(dir.csum_seed, &b[..n - TAIL_LEN]);
        b[n - 4..].copy_from_slice(&c.to_le_bytes());
    }

    /// Bytes of a leaf block that hold entries.
    pub(crate) fn leaf_area(&self) -> usize {
        let bs = self.sb().block_size as usize;
        if self.sb().metadata_csum() {
            bs - TAIL_LEN
        } else {
            bs
        }
    }

    /// Check a leaf before changing it: checksum and entries.
    pub(crate) fn scan_leaf<R>(
        &self,
        dir: &Inode,
        lblk: FileBlock,
        pblk: PhysBlock,
        f: impl FnMut(&crate::dir::Entry<'_>, Option<usize>) -> Option<R>,
    ) -> Result<Option<R>> {
        let mut f = f;
        // Checked once per cached copy (the mark), as reads do.
        self.cache_read_marked(pblk, |b, mark| -> Result<Option<R>> {
            self.check_leaf_once(dir, b, lblk, mark)?;
            let obj = Object::DirBlock { dir: dir.ino, lblk };
            let area = if self.sb().metadata_csum() {
                if !has_tail(b) {
                    return Err(Error::corrupt(obj, "directory block has no checksum tail"));
                }
                &b[..b.len() - TAIL_LEN]
            } else {
                crate::dir::entry_area(b)
            };
            let mut prev = None;
            for e in Entries::new(area, 0, self.sb().inodes_count, obj) {
                let e = e?;
                if let Some(r) = f(&e, prev) {
                    return Ok(Some(r));
                }
                prev = Some(e.offset);
            }
            Ok(None)
        })?
    }

    pub(crate) fn dir_blocks(&self, dir: &Inode) -> u32 {
        dir.size.div_ceil(self.sb().block_size as u64) as u32
    }

    /// Whether `dir` is a hash-tree directory the writer must respect.
    fn indexed(&self, dir: &Inode) -> bool {
        self.is_dx(dir)
    }

    /// Find room for an entry named `name` in `dir`, changing nothing.
    pub fn find_slot(&self, dir: &Inode, name: &[u8]) -> Result<Slot> {
        if dir.has_flag(flags::ENCRYPT) || dir.has_flag(flags::CASEFOLD) {
            return Err(Error::Unsupported {
                what: "adding names to encrypted or case-insensitive directories",
            });
        }
        if dir.has_flag(flags::INLINE_DATA) {
            return self.inline_slot(dir, name);
        }
        let need = rec_len(name.len());
        let (lo, hi) = if self.indexed(dir) {
            let leaf = self.dx_leaf(dir, name)?;
            if leaf == 0 || leaf >= self.dir_blocks(dir) {
                return Err(Error::corrupt(
                    Object::DirBlock {
                        dir: dir.ino,
                        lblk: FileBlock(0),
                    },
                    "hash tree points past the end of the directory",
                ));
            }
            (leaf, leaf + 1)
        } else {
            (0, self.dir_blocks(dir))
        };
        // The last block first: a directory filled in order has room only
        // there, which keeps appending names O(1) per name.
        let order = hi
            .checked_sub(1)
            .into_iter()
            .chain(lo..hi.saturating_sub(1));
        for lblk in order.map(FileBlock) {
            let pblk = match self.map_block(dir, lblk)? {
                Run::Mapped {
                    pblk,
                    unwritten: false,
                    ..
                } => pblk,
                _ => {
                    return Err(Error::corrupt(
                        Object::DirBlock { dir: dir.ino, lblk },
                        "directory has a hole or an unwritten block",
                    ))
                }
            };
            let found = self.scan_leaf(dir, lblk, pblk, |e, _| {
                let used = if e.inode == 0 {
                    0
                } else {
                    rec_len(e.name.len())
                };
                (e.rec_len - used >= need).then_some(e.offset)
            })?;
            if let Some(offset) = found {
                return Ok(Slot::At { lblk, pblk, offset });
            }
        }
        if self.indexed(dir) {
            return Ok(Slot::Split);
        }
        Ok(Slot::NewBlock)
    }

    /// Fill a new directory block with one empty entry (and the tail).
    pub(crate) fn init_dir_block(&self, dir: &Inode, b: &mut [u8]) {
        let bs = b.len();
        let area = self.leaf_area();
        put_entry(b, 0, 0, area, &[], 0, bs);
        if self.sb().metadata_csum() {
            let t = bs - TAIL_LEN;
            b[t..t + 4].fill(0);
            b[t + 4..t + 6].copy_from_slice(&(TAIL_LEN as u16).to_le_bytes());
            b[t + 6] = 0;
            b[t + 7] = 0xDE;
            self.seal_leaf(dir, b);
        }
    }

    /// Put the entry `name -> ino` at `slot` (an [`Slot::At`] or
    /// [`Slot::Inline`] from [`Volume::find_slot`] on the same, still
    /// locked, directory; an inline directory changes in `dir`, which the
    /// caller writes). One credit.
    pub fn place_entry(
        &self,
        h: &mut Handle<'_, D>,
        dir: &mut Inode,
        slot: Slot,
        name: &[u8],
        ino: InodeNo,
        kind: FileType,
    ) -> Result<()> {
        let (lblk, pblk, offset) = match slot {
            Slot::At { lblk, pblk, offset } => (lblk, pblk, offset),
            Slot::Inline { offset } => return self.inline_place(dir, offset, name, ino, kind),
            _ => return Err(Error::InvalidArgument),
        };
        let dir = &*dir;
        let bs = self.sb().block_size as usize;
        let ft = if self.sb().has_incompat(incompat::FILETYPE) {
            dirent_type(kind)
        } else {
            0
        };
        let need = rec_len(name.len());
        let ok = h.modify(pblk, |b| {
            let cur_ino =
                u32::from_le_bytes([b[offset], b[offset + 1], b[offset + 2], b[offset + 3]]);
            let rec = rec_len_from_disk(u16::from_le_bytes([b[offset + 4], b[offset + 5]]), bs);
            let used = if cur_ino == 0 {
                0
            } else {
                rec_len(b[offset + 6] as usize)
            };
            if offset + rec > bs || rec < used + need {
                return false;
            }
            if cur_ino == 0 {
                put_entry(b, offset, ino.0, rec, name, ft, bs);
            } else {
                b[offset + 4..offset + 6].copy_from_slice(&rec_len_to_disk(used, bs).to_le_bytes());
                put_entry(b, offset + used, ino.0, rec - used, name, ft, bs);
            }
            self.seal_leaf(dir, b);
            true
        })?;
        self.leaf_edited(dir.ino, lblk, ok)
    }

    /// Find the entry `name` in `dir` (where it is, and the entry before).
    pub fn find_entry(&self, dir: &Inode, name: &[u8]) -> Result<Option<Found>> {
        if dir.has_flag(flags::INLINE_DATA) {
            return self.inline_find(dir, name);
        }
        // The leaf the name hashes to first; colliding or damaged trees
        // fall back to every block (found the same either way).
        let mut ranges = heapless::Vec::<(u32, u32), 2>::new();
        if self.indexed(dir) {
            if let Ok(l) = self.dx_leaf(dir, name) {
                if l > 0 && l < self.dir_blocks(dir) {
                    let _ = ranges.push((l, l + 1));
                }
            }
        }
        let _ = ranges.push((0, self.dir_blocks(dir)));
        for (lo, hi) in ranges {
            for lblk in (lo..hi).map(FileBlock) {
                let pblk = match self.map_block(dir, lblk)? {
                    Run::Mapped { pblk, .. } => pblk,
                    Run::Hole { .. } => continue,
                };
                if self.indexed(dir) {
                    let node =
                        self.cache_read_with(pblk, |b| crate::dir::is_dx_node(b, lblk.get()))?;
                    if node {
                        continue;
                    }
                }
                let f = self.scan_leaf(dir, lblk, pblk, |e, prev| {
                    (e.inode != 0 && e.name == name).then_some(Found {
                        lblk,
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
            }
        }
        Ok(None)
    }

    /// Remove the entry `at` (from [`Volume::find_entry`] on the same,
    /// still locked, directory): merged into the entry before it, or
    /// emptied when first in its block (an inline directory changes in
    /// `dir`, which the caller writes). One credit.
    pub fn remove_entry(&self, h: &mut Handle<'_, D>, dir: &mut Inode, at: &Found) -> Result<()> {
        if at.inline {
            return self.inline_remove(dir, at);
        }
        let bs = self.sb().block_size as usize;
        let ok = h.modify(at.pblk, |b| {
            let o = at.offset;
            let ino = u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
            if ino != at.ino.0 {
                return false;
            }
            let rec = rec_len_from_disk(u16::from_le_bytes([b[o + 4], b[o + 5]]), bs);
            match at.prev {
                Some(p) => {
                    let prec = rec_len_from_disk(u16::from_le_bytes([b[p + 4], b[p + 5]]), bs);
                    b[p + 4..p + 6].copy_from_slice(&rec_len_to_disk(prec + rec, bs).to_le_bytes());
                    b[o..o + HEADER_LEN].fill(0);
                }
                None => b[o..o + 4].fill(0),
            }
            self.seal_leaf(dir, b);
            true
        })?;
        self.leaf_edited(dir.ino, at.lblk, ok)
    }

    /// After an edit of `dir`'s leaf block `lblk` that found the entry it
    /// expected (`ok`): the name index learns of the change. An entry that
    /// moved under the directory lock is damage, never a retry.
    pub(crate) fn leaf_edited(&self, dir: InodeNo, lblk: FileBlock, ok: bool) -> Result<()> {
        if !ok {
            return Err(Error::corrupt(
                Object::DirBlock { dir, lblk },
                "directory entry changed under the directory lock",
            ));
        }
        self.dir_changed(dir);
        Ok(())
    }

    /// Directory `dir`'s entries changed: its name index (if it has one)
    /// describes the old bytes and is dropped; the next lookup that needs
    /// one builds it again.
    pub(crate) fn dir_changed(&self, dir: InodeNo) {
        self.name_indexes().forget(dir);
    }
}
