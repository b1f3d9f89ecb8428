//! Inline data of regular files (`inline_data`), written as the kernel's
//! ext4 keeps it: the first 60 bytes in `i_block`, the rest in the value
//! of `system.data` in the inode body, `i_size` bytes in all (the value
//! holds exactly `i_size - 60` bytes, bytes past `i_size` in `i_block` are
//! zero). A file becomes inline when it is written while still empty (the
//! kernel inlines a new file's first small write) and the write ends
//! within the inline room; it grows out of the inode into a block
//! (extent-mapped, or block-mapped without `extent`) when a write or a
//! truncate goes past that room.

use alloc::vec;
use alloc::vec::Vec;

use crate::device::BlockDevice;
use crate::error::{Error, Object, Result};
use crate::features::incompat;
use crate::inline::{DATA_NAME, SYSTEM_INDEX};
use crate::inode::{flags, Inode};
use crate::numbers::InodeNo;
use crate::volume::Volume;
use crate::writable::Cred;

use super::fmap::INODE_CREDITS;
use super::xattr::{ibody_get, ibody_room, ibody_set};

/// Bytes of inline data in `i_block`.
const IN_BLOCK: usize = 60;
/// How many freshly created inodes are remembered as "may become inline"
/// (the kernel keeps that state in its in-memory inode; an inode that
/// falls out of this set simply stays block-mapped).
const FRESH: usize = 1024;

/// Regular files created by this volume that have not been written to
/// blocks yet (the kernel's `EXT4_STATE_MAY_INLINE_DATA`): only these may
/// become inline, as only new inodes do in the kernel.
pub(crate) struct FreshInodes {
    ring: spin::Mutex<heapless::Deque<InodeNo, FRESH>>,
}

impl FreshInodes {
    pub(crate) fn new() -> FreshInodes {
        FreshInodes {
            ring: spin::Mutex::new(heapless::Deque::new()),
        }
    }

    pub(crate) fn add(&self, ino: InodeNo) {
        let mut r = self.ring.lock();
        if r.is_full() {
            r.pop_front();
        }
        let _ = r.push_back(ino);
    }

    fn contains(&self, ino: InodeNo) -> bool {
        self.ring.lock().iter().any(|&i| i == ino)
    }

    pub(crate) fn forget(&self, ino: InodeNo) {
        let mut r = self.ring.lock();
        let n = r.len();
        for _ in 0..n {
            if let Some(i) = r.pop_front() {
                if i != ino {
                    let _ = r.push_back(i);
                }
            }
        }
    }
}

impl<D: BlockDevice> Volume<D> {
    /// The inode's in-inode xattr region, as long as the record makes it.
    pub(crate) fn ibody_region(&self, inode: &Inode) -> Vec<u8> {
        let len = inode.ibody_len(self.sb().inode_size as usize);
        let mut r = inode.ibody().to_vec();
        r.resize(len, 0);
        r
    }

    /// Most bytes `inode` can hold inline (the kernel's
    /// `ext4_get_max_inline_size`): `i_block` plus the largest
    /// `system.data` value its body has room for; 0 when it has none.
    pub(crate) fn max_inline(&self, inode: &Inode) -> Result<u64> {
        if !self.sb().has_incompat(incompat::INLINE_DATA) {
            return Ok(0);
        }
        let region = self.ibody_region(inode);
        let room = ibody_room(&region, inode.ino, SYSTEM_INDEX, DATA_NAME)?;
        if room == 0 && !inode.has_flag(flags::INLINE_DATA) {
            return Ok(0);
        }
        Ok((IN_BLOCK + room) as u64)
    }

    /// Whether `inode`, not inline, may become inline on its next write:
    /// a regular file of an `inline_data` filesystem created by this
    /// volume and never written to blocks, that maps no block (the
    /// kernel's freshly created inodes).
    pub(crate) fn may_inline(&self, inode: &Inode) -> Result<bool> {
        if !self.sb().has_incompat(incompat::INLINE_DATA)
            || inode.has_flag(flags::INLINE_DATA)
            || inode.kind != Some(crate::attr::FileType::Regular)
            || !self.fresh_inodes().contains(inode.ino)
        {
            return Ok(false);
        }
        let xattr_units = if inode.file_acl != 0 {
            self.sb().cluster_size as u64 / 512
        } else {
            0
        };
        if inode.blocks_512 != xattr_units {
            return Ok(false);
        }
        let empty = if inode.has_flag(flags::EXTENTS) {
            self.extent_depth(inode)? == 0 && self.last_extent(inode)?.is_none()
        } else {
            inode.block.iter().all(|&b| b == 0)
        };
        Ok(empty)
    }

    /// The inline bytes of `inode` (`i_size` of them), checked.
    fn inline_data(&self, inode: &Inode) -> Result<Vec<u8>> {
        let size = inode.size as usize;
        let region = self.ibody_region(inode);
        let tail = ibody_get(&region, inode.ino, SYSTEM_INDEX, DATA_NAME)?.unwrap_or_default();
        if inode.size > (IN_BLOCK + tail.len()) as u64 {
            return Err(Error::corrupt(
                Object::Inode(inode.ino),
                "inline data is shorter than the file size",
            ));
        }
        let mut all = inode.block.to_vec();
        all.extend_from_slice(&tail);
        all.truncate(size);
        Ok(all)
    }

    /// Store `bytes` as `inode`'s inline data (in memory: the caller
    /// writes the inode): `i_block`, `system.data` and the size. `None`
    /// when they do not fit.
    fn put_inline(&self, inode: &mut Inode, bytes: &[u8]) -> Result<Option<()>> {
        let region = self.ibody_region(inode);
        let tail = &bytes[bytes.len().min(IN_BLOCK)..];
        let Some(region) = ibody_set(&region, inode.ino, SYSTEM_INDEX, DATA_NAME, Some(tail))?
        else {
            return Ok(None);
        };
        inode.set_ibody(region);
        inode.block = [0; 60];
        let head = bytes.len().min(IN_BLOCK);
        inode.block[..head].copy_from_slice(&bytes[..head]);
        inode.size = bytes.len() as u64;
        Ok(Some(()))
    }

    /// The engine's write for inline (or may-inline) files: `Some(n)` when
    /// the write was done in the inode; `None` when the caller writes
    /// blocks (the file was not inline, or was moved out of the inode into
    /// a block first because the write goes past its room).
    pub(crate) fn write_inline(
        &self,
        inode: &mut Inode,
        offset: u64,
        data: &[u8],
        cred: &Cred,
    ) -> Result<Option<usize>> {
        let inline = inode.has_flag(flags::INLINE_DATA);
        if !inline && !self.may_inline(inode)? {
            return Ok(None);
        }
        let end = offset + data.len() as u64;
        let max = self.max_inline(inode)?;
        if end > max || (!inline && inode.size > max) {
            if inline {
                self.convert_inline(inode, cred)?;
            }
            // Written to blocks now: never inline again (as the kernel).
            self.fresh_inodes().forget(inode.ino);
            return Ok(None);
        }
        let mut bytes = if inline {
            self.inline_data(inode)?
        } else {
            vec![0u8; inode.size as usize]
        };
        if bytes.len() < end as usize {
            bytes.resize(end as usize, 0);
        }
        bytes[offset as usize..end as usize].copy_from_slice(data);
        let mut next = inode.clone();
        if !inline {
            next.flags = (next.flags & !flags::EXTENTS) | flags::INLINE_DATA;
        }
        if self.put_inline(&mut next, &bytes)?.is_none() {
            return Ok(None);
        }
        let now = self.now();
        next.mtime = now;
        next.ctime = now;
        let mut h = self.begin(INODE_CREDITS)?;
        if let Err(e) = self.write_inode(&mut h, &mut next, false) {
            return Err(h.abort(e));
        }
        *inode = next;
        Ok(Some(data.len()))
    }

    /// Move an inline file's bytes out of the inode into a block (the
    /// kernel's `ext4_convert_inline_data`): `system.data` removed, the
    /// map (an extent root, or the indirect map without `extent`) given a
    /// first block holding the bytes, zero-padded. Nothing changes on
    /// ENOSPC.
    pub(crate) fn convert_inline(&self, inode: &mut Inode, cred: &Cred) -> Result<()> {
        self.fresh_inodes().forget(inode.ino);
        if !inode.has_flag(flags::INLINE_DATA) {
            return Ok(());
        }
        let bytes = self.inline_data(inode)?;
        let mut next = inode.clone();
        let region = self.ibody_region(&next);
        let region = ibody_set(&region, next.ino, SYSTEM_INDEX, DATA_NAME, None)?.unwrap_or(region);
        next.set_ibody(region);
        next.flags &= !flags::INLINE_DATA;
        if self.sb().has_incompat(incompat::EXTENTS) {
            next.flags |= flags::EXTENTS;
            super::extent::empty_root(&mut next.block);
        } else {
            next.block = [0; 60];
        }
        let credits = self.map_credits(&next)? + self.undo_map_credits(&next)?;
        let mut h = self.begin(credits)?;
        if !bytes.is_empty() {
            let bs = self.sb().block_size as usize;
            let (start, _) = self.map_hole(&mut h, &mut next, 0, 1, false, cred)?;
            if let Err(e) = self.write_new_blocks(start, 0, &bytes, bs) {
                // Nothing of `next` is written: give the block back.
                let r = self.unmap_step(&mut h, &mut next, 0, 1, cred);
                if let Err(e2) = r {
                    return Err(h.abort(e2));
                }
                return Err(e);
            }
        }
        if let Err(e) = self.write_inode(&mut h, &mut next, false) {
            return Err(h.abort(e));
        }
        self.mapping_changed(next.ino);
        *inode = next;
        Ok(())
    }

    /// Truncate an inline file to `size` (in memory; the caller writes the
    /// inode): down keeps it inline with the bytes past `size` dropped;
    /// up stays inline within the room its `system.data` already has and
    /// converts to a block past it (the kernel's rule).
    pub(crate) fn truncate_inline(&self, inode: &mut Inode, size: u64, cred: &Cred) -> Result<()> {
        let mut bytes = self.inline_data(inode)?;
        let region = self.ibody_region(inode);
        let have = ibody_get(&region, inode.ino, SYSTEM_INDEX, DATA_NAME)?.map_or(0, |v| v.len());
        if size > (IN_BLOCK + have) as u64 {
            self.convert_inline(inode, cred)?;
            inode.size = size;
            return Ok(());
        }
        bytes.resize(size as usize, 0);
        let mut next = inode.clone();
        if self.put_inline(&mut next, &bytes)?.is_none() {
            return Err(Error::corrupt(
                Object::Inode(inode.ino),
                "inline data no longer fits its inode",
            ));
        }
        *inode = next;
        Ok(())
    }
}
