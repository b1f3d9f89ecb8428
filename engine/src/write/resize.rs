//! Removing a file's blocks: a range unmapped in steps (one handle each,
//! from the end, every step a consistent shorter map), and `truncate`
//! (down: the blocks past the new size, then the size; up: the size).

use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::features::ro_compat;
use crate::inode::{flags, Inode};
use crate::numbers::FileBlock;
use crate::volume::Volume;
use crate::writable::Cred;

use super::extent::Progress;

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
        if inode.has_flag(flags::INLINE_DATA) {
            return Ok(());
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
            self.unmap_range(inode, size.div_ceil(bs), FileBlock::COUNT, cred)?;
        }
        inode.size = size;
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
