//! Inline-data directories (`inline_data`), written as the kernel's ext4
//! keeps them: `i_block` holds the parent's inode number and then entries
//! (56 bytes), the value of `system.data` in the inode body more entries;
//! there are no "." and ".." entries, and `i_size` is 60 plus the value's
//! length. A new directory starts inline when its inode body has room for
//! `system.data` (`ext4_try_create_inline_dir`); a full one first grows
//! an empty `system.data` to all the room its body has
//! (`ext4_update_inline_dir`), then moves into a block
//! (`ext4_convert_inline_dir`).
//!
//! Entries are addressed by offset in the two areas taken as one: 0..56
//! in `i_block`, 56.. in `system.data`. Every change is made to the
//! caller's decoded inode (its `i_block` and body); the caller writes the
//! inode in the same handle. Memory: one inode body.

use alloc::vec::Vec;

use crate::attr::FileType;
use crate::device::BlockDevice;
use crate::dir::{Entries, HEADER_LEN};
use crate::error::{Error, Object, Result};
use crate::features::incompat;
use crate::inline::{DATA_NAME, SYSTEM_INDEX};
use crate::inode::{flags, Inode};
use crate::numbers::{FileBlock, InodeNo, PhysBlock};
use crate::txn::Handle;
use crate::volume::Volume;
use crate::writable::Cred;

use super::dir::{dirent_type, put_entry, rec_len, rec_len_to_disk, Found, Slot};
use super::xattr::{ibody_room, ibody_set};

/// Bytes of entries in `i_block` (after the parent's number).
const HEAD: usize = 56;
/// `i_size` of an inline directory with an empty `system.data`.
pub(crate) const MIN_INLINE_DIR: u64 = 60;

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// The two entry areas of `bytes` (`i_block`'s, then `system.data`'s).
fn areas(len: usize) -> [(usize, usize); 2] {
    [(0, HEAD), (HEAD, len)]
}

/// `i_block` of a new inline directory under `parent`: the parent's
/// number and one empty entry over the rest.
pub(crate) fn new_inline_dir_block(parent: InodeNo) -> [u8; 60] {
    let mut b = [0u8; 60];
    b[0..4].copy_from_slice(&parent.0.to_le_bytes());
    b[8..10].copy_from_slice(&(HEAD as u16).to_le_bytes());
    b
}

impl<D: BlockDevice> Volume<D> {
    /// Both entry areas of inline directory `dir` as one buffer.
    fn inline_dir_bytes(&self, dir: &Inode) -> Result<Vec<u8>> {
        let (_, mut head, tail) = self.inline_dir(dir)?;
        head.extend_from_slice(&tail);
        Ok(head)
    }

    /// Put `bytes` (both areas) back into `dir`: `i_block`, the value of
    /// `system.data`, `i_size`.
    fn store_inline_dir(&self, dir: &mut Inode, bytes: &[u8]) -> Result<()> {
        let region = self.ibody_region(dir);
        let tail = &bytes[HEAD..];
        let region = ibody_set(&region, dir.ino, SYSTEM_INDEX, DATA_NAME, Some(tail))?.ok_or(
            Error::corrupt(
                Object::Inode(dir.ino),
                "inline directory no longer fits its inode",
            ),
        )?;
        dir.set_ibody(region);
        dir.block[4..].copy_from_slice(&bytes[..HEAD]);
        dir.size = MIN_INLINE_DIR + tail.len() as u64;
        Ok(())
    }

    /// Call `f` with every entry of `bytes` (checked) and the offset of
    /// the entry before it in its area; stops at the first `Some`.
    fn scan_inline<R>(
        &self,
        dir: &Inode,
        bytes: &[u8],
        mut f: impl FnMut(usize, &crate::dir::Entry<'_>, Option<usize>) -> Option<R>,
    ) -> Result<Option<R>> {
        let obj = Object::Inode(dir.ino);
        for (lo, hi) in areas(bytes.len()) {
            let mut prev = None;
            for e in Entries::new(&bytes[lo..hi], 0, self.sb().inodes_count, obj) {
                let e = e?;
                if let Some(r) = f(lo + e.offset, &e, prev) {
                    return Ok(Some(r));
                }
                prev = Some(lo + e.offset);
            }
        }
        Ok(None)
    }

    /// Where `name` is in inline directory `dir`.
    pub(crate) fn inline_find(&self, dir: &Inode, name: &[u8]) -> Result<Option<Found>> {
        let bytes = self.inline_dir_bytes(dir)?;
        self.scan_inline(dir, &bytes, |at, e, prev| {
            (e.inode != 0 && e.name == name).then_some(Found {
                lblk: FileBlock(0),
                pblk: PhysBlock(0),
                offset: at,
                prev,
                ino: InodeNo(e.inode),
                inline: true,
            })
        })
    }

    /// Room for an entry named `name` in inline directory `dir`: a slot,
    /// or [`Slot::NewBlock`] when it is full.
    pub(crate) fn inline_slot(&self, dir: &Inode, name: &[u8]) -> Result<Slot> {
        let need = rec_len(name.len());
        let bytes = self.inline_dir_bytes(dir)?;
        let at = self.scan_inline(dir, &bytes, |at, e, _| {
            let used = if e.inode == 0 {
                0
            } else {
                rec_len(e.name.len())
            };
            (e.rec_len - used >= need).then_some(at)
        })?;
        Ok(at.map_or(Slot::NewBlock, |offset| Slot::Inline { offset }))
    }

    /// Put `name -> ino` at `offset` (from [`Volume::inline_slot`]).
    pub(crate) fn inline_place(
        &self,
        dir: &mut Inode,
        offset: usize,
        name: &[u8],
        ino: InodeNo,
        kind: FileType,
    ) -> Result<()> {
        let mut b = self.inline_dir_bytes(dir)?;
        let ft = self.dirent_ft(kind);
        let bs = self.sb().block_size as usize;
        let need = rec_len(name.len());
        let changed = || {
            Error::corrupt(
                Object::Inode(dir.ino),
                "inline directory entry changed under the directory lock",
            )
        };
        if offset + HEADER_LEN > b.len() {
            return Err(changed());
        }
        let rec = u16::from_le_bytes([b[offset + 4], b[offset + 5]]) as usize;
        let cur = le32(&b, offset);
        let used = if cur == 0 {
            0
        } else {
            rec_len(b[offset + 6] as usize)
        };
        let end = if offset < HEAD { HEAD } else { b.len() };
        if offset + rec > end || rec < used + need {
            return Err(changed());
        }
        if cur == 0 {
            put_entry(&mut b, offset, ino.0, rec, name, ft, bs);
        } else {
            b[offset + 4..offset + 6].copy_from_slice(&rec_len_to_disk(used, bs).to_le_bytes());
            put_entry(&mut b, offset + used, ino.0, rec - used, name, ft, bs);
        }
        self.store_inline_dir(dir, &b)?;
        self.dir_changed(dir.ino);
        Ok(())
    }

    /// The areas of `dir`, checked to still hold entry `at` there.
    fn inline_entry_at(&self, dir: &Inode, at: &Found) -> Result<Vec<u8>> {
        let b = self.inline_dir_bytes(dir)?;
        let o = at.offset;
        if o + HEADER_LEN > b.len() || le32(&b, o) != at.ino.0 {
            return Err(Error::corrupt(
                Object::Inode(dir.ino),
                "inline directory entry changed under the directory lock",
            ));
        }
        Ok(b)
    }

    /// Remove entry `at` (from [`Volume::inline_find`]): merged into the
    /// entry before it, or emptied when first in its area (the kernel's
    /// `ext4_generic_delete_entry`).
    pub(crate) fn inline_remove(&self, dir: &mut Inode, at: &Found) -> Result<()> {
        let mut b = self.inline_entry_at(dir, at)?;
        let o = at.offset;
        let rec = u16::from_le_bytes([b[o + 4], b[o + 5]]) as usize;
        match at.prev {
            Some(p) => {
                let prec = u16::from_le_bytes([b[p + 4], b[p + 5]]) as usize;
                b[p + 4..p + 6].copy_from_slice(&((prec + rec) as u16).to_le_bytes());
                b[o..o + HEADER_LEN].fill(0);
            }
            None => b[o..o + 4].fill(0),
        }
        self.store_inline_dir(dir, &b)?;
        self.dir_changed(dir.ino);
        Ok(())
    }

    /// Point entry `at` at `ino` of `kind` (`ext4_setent`).
    pub(crate) fn inline_set(
        &self,
        dir: &mut Inode,
        at: &Found,
        ino: InodeNo,
        kind: FileType,
    ) -> Result<()> {
        let mut b = self.inline_entry_at(dir, at)?;
        let o = at.offset;
        b[o..o + 4].copy_from_slice(&ino.0.to_le_bytes());
        b[o + 7] = self.dirent_ft(kind);
        self.store_inline_dir(dir, &b)?;
        self.dir_changed(dir.ino);
        Ok(())
    }

    /// Whether inline directory `dir` names nothing.
    pub(crate) fn inline_is_empty(&self, dir: &Inode) -> Result<bool> {
        let bytes = self.inline_dir_bytes(dir)?;
        Ok(self
            .scan_inline(dir, &bytes, |_, e, _| (e.inode != 0).then_some(()))?
            .is_none())
    }

    /// Make inline directory `dir` bigger, in the caller's handle, as the
    /// kernel's `ext4_update_inline_dir` does: only while `system.data`
    /// is empty, grown to all the room its body has, the new bytes one
    /// empty entry. Returns false (nothing changed) when that is not
    /// possible or gains no room for an entry; the directory then moves
    /// into a block.
    pub(crate) fn grow_inline_dir(&self, dir: &mut Inode) -> Result<bool> {
        let mut b = self.inline_dir_bytes(dir)?;
        if b.len() > HEAD {
            return Ok(false);
        }
        let region = self.ibody_region(dir);
        let new = ibody_room(&region, dir.ino, SYSTEM_INDEX, DATA_NAME)?;
        if new <= rec_len(1) {
            return Ok(false);
        }
        b.resize(HEAD + new, 0);
        b[HEAD + 4..HEAD + 6].copy_from_slice(&(new as u16).to_le_bytes());
        self.store_inline_dir(dir, &b)?;
        Ok(true)
    }

    /// Credits of [`Volume::grow_inline_dir`] or
    /// [`Volume::inline_dir_to_block`] on `dir`: the inode, a first map
    /// step on an empty map and its undo, the new block.
    pub(crate) fn grow_inline_credits(&self, dir: &Inode) -> Result<usize> {
        let mut probe = dir.clone();
        self.empty_map(&mut probe);
        Ok(1 + self.map_credits(&probe)? + self.undo_map_credits(&probe)? + 1)
    }

    /// Give `inode` (inline until now) an empty block map: an extent
    /// root, or zeroed block pointers without `extent`.
    fn empty_map(&self, inode: &mut Inode) {
        inode.flags &= !flags::INLINE_DATA;
        if self.sb().has_incompat(incompat::EXTENTS) {
            inode.flags |= flags::EXTENTS;
            super::extent::empty_root(&mut inode.block);
        } else {
            inode.block = [0; 60];
        }
    }

    /// Move full inline directory `dir` into a block of its own, in the
    /// caller's handle (`ext4_convert_inline_dir`): "." and "..", then the
    /// entries as they were, the last one reaching the end of the leaf;
    /// `system.data` removed, the map (an extent root, or a block map
    /// without `extent`) given the block. Credits: a map step and its
    /// undo, the block. ENOSPC changes nothing.
    pub(crate) fn inline_dir_to_block(
        &self,
        h: &mut Handle<'_, D>,
        dir: &mut Inode,
        cred: &Cred,
    ) -> Result<()> {
        let (parent, mut bytes, tail) = self.inline_dir(dir)?;
        bytes.extend_from_slice(&tail);
        // Checked before anything changes.
        self.scan_inline(dir, &bytes, |_, _, _| None::<()>)?;
        let area = self.leaf_area();
        if 24 + bytes.len() > area {
            return Err(Error::corrupt(
                Object::Inode(dir.ino),
                "inline directory is larger than a directory block",
            ));
        }
        let mut next = dir.clone();
        let region = self.ibody_region(&next);
        let region = ibody_set(&region, next.ino, SYSTEM_INDEX, DATA_NAME, None)?.unwrap_or(region);
        next.set_ibody(region);
        self.empty_map(&mut next);
        let (b, _) = self.map_hole(h, &mut next, 0, 1, false, cred)?;
        let ft = self.dirent_ft(FileType::Directory);
        let bs = self.sb().block_size as usize;
        let me = next.clone();
        let ino = next.ino;
        h.create(b, |x| {
            self.init_dir_block(&me, x);
            put_entry(x, 0, ino.0, 12, b".", ft, bs);
            put_entry(x, 12, parent.0, 12, b"..", ft, bs);
            x[24..24 + bytes.len()].copy_from_slice(&bytes);
            // The last entry reaches the end of the leaf.
            let mut at = 12;
            let mut o = 24;
            while o < 24 + bytes.len() {
                at = o;
                o += u16::from_le_bytes([x[o + 4], x[o + 5]]) as usize;
            }
            let rec = area - at;
            x[at + 4..at + 6].copy_from_slice(&rec_len_to_disk(rec, bs).to_le_bytes());
            self.seal_leaf(&me, x);
        })?;
        next.size = bs as u64;
        *dir = next;
        self.dir_changed(dir.ino);
        Ok(())
    }

    /// The file type byte entries get (0 without `filetype`).
    pub(crate) fn dirent_ft(&self, kind: FileType) -> u8 {
        if self.sb().has_incompat(incompat::FILETYPE) {
            dirent_type(kind)
        } else {
            0
        }
    }
}
