//! What a FUSE iomap server asks of the engine when the kernel writes file
//! data itself (`../shared/docs/iomap-protocol.md`, "Writes"):
//!
//! - at `IOMAP_BEGIN` for a write: [`Volume::map_for_write`] maps a range,
//!   allocating its holes (unwritten extents, goal-directed after the
//!   file's previous block; block-mapped files get written blocks zeroed
//!   on the device first, as they have no unwritten state);
//! - at `IOMAP_IOEND`: [`Volume::io_end`] converts the range the kernel
//!   wrote to written (split at the edges, neighbours merged) and raises
//!   the on-disk size for appends, in the same handles;
//! - at `IOMAP_END` after a short write: [`Volume::release_past_size`]
//!   gives back blocks mapped past the on-disk size that no data reached.
//!
//! Truncate, punch, zero range, collapse and insert go through
//! [`Volume::setattr_metadata`] and [`Volume::fallocate_metadata`]: the
//! kernel zeroes partial blocks itself.

use alloc::vec::Vec;

use crate::attr::FileType;
use crate::blockmap::Run;
use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::inode::flags;
use crate::numbers::{FileBlock, InodeNo, PhysBlock};
use crate::volume::Volume;
use crate::writable::Cred;

use super::fmap::INODE_CREDITS;

/// Most runs one [`Volume::map_for_write`] answer holds (the kernel asks
/// again for the rest).
pub const MAX_WRITE_RUNS: usize = 16;

/// One piece of a write mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteRun {
    pub lblk: FileBlock,
    /// Blocks.
    pub len: u32,
    pub pblk: PhysBlock,
    /// Reads as zeros until converted: answer `UNWRITTEN`; the kernel
    /// writes, then `IOEND` converts.
    pub unwritten: bool,
    /// Allocated by this call: answer `NEW`.
    pub new: bool,
}

/// The answer of [`Volume::map_for_write`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteMap {
    /// The file's bytes live in the inode (inline data) and the write fits
    /// there: serve it with [`Volume::write`] (answer `INLINE`).
    Inline,
    /// Runs in order from the block holding the start of the range, each
    /// following the one before (at least one, at most
    /// [`MAX_WRITE_RUNS`]; they may end before the range does).
    Runs(Vec<WriteRun>),
}

impl<D: BlockDevice> Volume<D> {
    /// Map bytes `pos..pos+count` of regular file `ino` for a write the
    /// caller (the kernel) will do: written blocks as they are, unwritten
    /// ones as they are, holes allocated — as unwritten extents
    /// goal-directed after the file's previous block, or for block-mapped
    /// files as written blocks zeroed on the device before they are mapped.
    /// An inline file whose data would grow past the inode is moved into a
    /// block first; one that still fits answers [`WriteMap::Inline`]. EFBIG
    /// at or past the largest file size (the range is cut there); ENOSPC
    /// only when not even the first block could be mapped. The size does
    /// not change ([`Volume::io_end`] raises it).
    pub fn map_for_write(
        &self,
        ino: InodeNo,
        pos: u64,
        count: u64,
        cred: &Cred,
    ) -> Result<WriteMap> {
        let _locks = self.inode_locks().lock(&[ino]);
        let mut inode = self.inode_for_write(ino)?;
        if inode.kind != Some(FileType::Regular) {
            return Err(Error::InvalidArgument);
        }
        self.writable_file(&inode)?;
        self.appending_only(&inode, Some(pos))?;
        let max = self.max_size_of(&inode);
        if pos >= max {
            return Err(Error::FileTooBig);
        }
        let end = pos.saturating_add(count.max(1)).min(max);
        if inode.has_flag(flags::INLINE_DATA) {
            if end <= self.max_inline(&inode)? {
                return Ok(WriteMap::Inline);
            }
            self.convert_inline(&mut inode, cred)?;
        } else if self.may_inline(&inode)? {
            let room = self.max_inline(&inode)?;
            if end <= room && inode.size <= room {
                return Ok(WriteMap::Inline);
            }
        }
        // Written to blocks from now on: never inline (as the kernel).
        self.fresh_inodes().forget(ino);
        let bs = self.sb().block_size as u64;
        let (first, last) = (pos / bs, end.div_ceil(bs));
        let extents = inode.has_flag(flags::EXTENTS);
        let mut runs: Vec<WriteRun> = Vec::new();
        let mut l = first;
        while l < last && runs.len() < MAX_WRITE_RUNS {
            let run = match self.map_block_at(&inode, l)? {
                Run::Mapped {
                    pblk,
                    len,
                    unwritten,
                } => WriteRun {
                    lblk: FileBlock(l as u32),
                    len: len.min(last - l) as u32,
                    pblk,
                    unwritten,
                    new: false,
                },
                Run::Hole { len } => {
                    let want = len.min(last - l);
                    let credits = self.map_credits(&inode)? + self.undo_map_credits(&inode)?;
                    let mut h = self.begin(credits)?;
                    let (pblk, n) = match self.map_hole(&mut h, &mut inode, l, want, extents, cred)
                    {
                        Ok(x) => x,
                        Err(Error::NoSpace) if !runs.is_empty() => break,
                        Err(e) => return Err(e),
                    };
                    if !extents {
                        // No unwritten state: zeros before the map points
                        // at them (ordered: data before the commit).
                        if let Err(e) = self.write_zeros(pblk.0 * bs, n as u64 * bs) {
                            let r = self.unmap_step(&mut h, &mut inode, l, l + n as u64, cred);
                            if let Err(e2) = r {
                                return Err(h.abort(e2));
                            }
                            return Err(e);
                        }
                    }
                    if let Err(e) = self.write_inode(&mut h, &mut inode, false) {
                        return Err(h.abort(e));
                    }
                    WriteRun {
                        lblk: FileBlock(l as u32),
                        len: n,
                        pblk,
                        unwritten: extents,
                        new: true,
                    }
                }
            };
            l += run.len as u64;
            runs.push(run);
        }
        Ok(WriteMap::Runs(runs))
    }

    /// `IOMAP_IOEND` after the kernel wrote bytes `pos..pos+len` of `ino`:
    /// the blocks they cover become written (split at the edges, merged
    /// with their neighbours), and with `new_size` (an append) the on-disk
    /// size is raised to it — never lowered — in the handles that convert,
    /// so a crash never leaves a size over unconverted data or converted
    /// data past the size. A failed I/O must not be reported here: its
    /// range stays unwritten and reads as zeros. Returns the on-disk size.
    pub fn io_end(
        &self,
        ino: InodeNo,
        pos: u64,
        len: u64,
        new_size: Option<u64>,
        cred: &Cred,
    ) -> Result<u64> {
        let _locks = self.inode_locks().lock(&[ino]);
        let mut inode = self.inode_for_write(ino)?;
        if inode.kind != Some(FileType::Regular) {
            return Err(Error::InvalidArgument);
        }
        self.writable_file(&inode)?;
        self.appending_only(&inode, new_size)?;
        if let Some(s) = new_size {
            if s > self.max_size_of(&inode) {
                return Err(Error::FileTooBig);
            }
            self.need_large_file(s)?;
        }
        let bs = self.sb().block_size as u64;
        let (from, to) = (pos / bs, pos.saturating_add(len).div_ceil(bs));
        if inode.has_flag(flags::EXTENTS) && to > from {
            self.convert_to_written(&mut inode, from, to, new_size, cred)?;
        }
        if let Some(s) = new_size {
            if s > inode.size {
                inode.size = s;
                let mut h = self.begin(INODE_CREDITS)?;
                if let Err(e) = self.write_inode(&mut h, &mut inode, false) {
                    return Err(h.abort(e));
                }
            }
        }
        Ok(inode.size)
    }

    /// `IOMAP_END` after a short write: unmap the blocks of bytes
    /// `pos..pos+len` that lie wholly past the on-disk size (allocated for
    /// the write, never reached by data). Blocks below the size stay.
    pub fn release_past_size(&self, ino: InodeNo, pos: u64, len: u64, cred: &Cred) -> Result<()> {
        let _locks = self.inode_locks().lock(&[ino]);
        let mut inode = self.inode_for_write(ino)?;
        if inode.kind != Some(FileType::Regular) || inode.has_flag(flags::INLINE_DATA) {
            return Ok(());
        }
        let bs = self.sb().block_size as u64;
        let from = (pos / bs).max(inode.size.div_ceil(bs));
        let to = pos.saturating_add(len).div_ceil(bs);
        if from < to {
            self.unmap_range(&mut inode, from, to, cred)?;
        }
        Ok(())
    }
}
