//! Removing a file's blocks: a range unmapped in steps (one handle each,
//! from the end, every step a consistent shorter map), and `truncate`
//! (down: the size, with the inode on the orphan list while the blocks
//! past it go; up: the size).

use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::features::ro_compat;
use crate::inode::{flags, Inode};
use crate::numbers::FileBlock;
use crate::volume::Volume;
use crate::writable::Cred;

use super::extent::Progress;
use super::fmap::INODE_CREDITS;
use super::orphan::ORPHAN_CREDITS;

/// Who writes zeros into the partial blocks at the edges of a truncate,
/// punch or zero range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edges {
    /// The engine, through its own data path (plain FUSE, the image tool).
    Engine,
    /// The caller (under FUSE iomap the kernel zeroes them before it asks):
    /// the engine changes metadata only.
    Kernel,
}

impl<D: BlockDevice> Volume<D> {
    /// Unmap logical blocks `from..to` of `inode`, one step per handle from
    /// the end, writing the inode after each (each step leaves a
    /// consistent, smaller map; `i_blocks` follows).
    pub(crate) fn unmap_range(
        &self,
        inode: &mut Inode,
        from: u64,
        to: u64,
        cred: &Cred,
    ) -> Result<()> {
        // Inline data, device numbers and fast symlink targets map nothing.
        match inode.kind {
            Some(kind) if self.has_block_map(inode, kind) => {}
            _ => return Ok(()),
        }
        let mut to = to.min(FileBlock::COUNT);
        while to > from {
            let mut h = self.begin(self.unmap_credits(inode)?)?;
            let r = match self.unmap_step(&mut h, inode, from, to, cred) {
                Ok(r) => r,
                Err(e) => return Err(h.abort(e)),
            };
            if r == Progress::Done {
                return Ok(());
            }
            if let Err(e) = self.write_inode(&mut h, inode, false) {
                return Err(h.abort(e));
            }
            if let Progress::At(t) = r {
                to = t;
            }
        }
        Ok(())
    }

    /// Truncate regular file `inode` to `size` (down: the written tail of
    /// the new last block zeroed when `edges` says the engine does it, the
    /// blocks past it unmapped, then the size; up: a sparse extension).
    /// The caller writes the inode (times, size) afterwards.
    pub(crate) fn resize(
        &self,
        inode: &mut Inode,
        size: u64,
        edges: super::Edges,
        cred: &Cred,
    ) -> Result<()> {
        if size > self.max_size_of(inode) {
            return Err(Error::FileTooBig);
        }
        self.need_large_file(size)?;
        if inode.has_flag(flags::INLINE_DATA) {
            return self.truncate_inline(inode, size, cred);
        }
        let bs = self.sb().block_size as u64;
        if size < inode.size {
            // Zero the tail of the new last block, so a later extension
            // reads zeros there (the kernel's `ext4_block_truncate_page`).
            if edges == Edges::Engine && !size.is_multiple_of(bs) {
                self.zero_written(inode, size, size.div_ceil(bs) * bs)?;
            }
            return self.truncate_down(inode, size, cred);
        }
        inode.size = size;
        Ok(())
    }

    /// Shrink `inode` to `size`, freeing the blocks past it, crash-safe as
    /// the kernel does it: the new size and the inode on the orphan list
    /// first (a crash mid-way is finished by the next read-write open),
    /// then the steps of [`Volume::unmap_range`], then off the list.
    fn truncate_down(&self, inode: &mut Inode, size: u64, cred: &Cred) -> Result<()> {
        let from = size.div_ceil(self.sb().block_size as u64);
        let ino = inode.ino;
        // An unlinked inode is an orphan already (and stays one).
        let orphan = inode.links_count > 0
            && !self.is_orphan(ino)
            && self.mapped_in(inode, from, FileBlock::COUNT)?;
        inode.size = size;
        if orphan {
            let mut h = self.begin(ORPHAN_CREDITS + INODE_CREDITS)?;
            let r = self
                .orphan_add(&mut h, ino)
                .and_then(|_| self.write_inode(&mut h, inode, false));
            if let Err(e) = r {
                return Err(h.abort(e));
            }
        }
        self.unmap_range(inode, from, FileBlock::COUNT, cred)?;
        if orphan {
            let mut h = self.begin(ORPHAN_CREDITS)?;
            if let Err(e) = self.orphan_del(&mut h, ino) {
                return Err(h.abort(e));
            }
        }
        Ok(())
    }

    /// `size` needs the `large_file` feature (past 2 GiB): set it when
    /// missing, as the kernel does when it writes such an inode (it joins
    /// the next commit with the superblock). Revision 0 filesystems have no
    /// feature words: EFBIG there.
    pub(crate) fn need_large_file(&self, size: u64) -> Result<()> {
        if size <= i32::MAX as u64 || self.has_ro_compat_now(ro_compat::LARGE_FILE) {
            return Ok(());
        }
        if self.sb().rev_level == 0 {
            return Err(Error::FileTooBig);
        }
        self.add_ro_compat(ro_compat::LARGE_FILE);
        Ok(())
    }
}
