//! A file's block map for writing, whatever its kind: allocating blocks for
//! a hole (goal-directed, cluster-aware) and mapping them, and removing
//! what a range maps, dispatched to the extent tree ([`super::extent`]) or
//! the indirect map ([`super::indirect`]). Each call is one bounded step
//! inside the caller's handle; the credits functions say how many blocks
//! a step may change.

use crate::blockmap::Run;
use crate::device::BlockDevice;
use crate::error::Result;
use crate::extent::Extent;
use crate::inode::{flags, Inode};
use crate::numbers::{FileBlock, PhysBlock};
use crate::txn::Handle;
use crate::volume::Volume;
use crate::writable::Cred;

use super::extent::{self, Progress};
use super::indirect;

/// Credits of writing one inode record.
pub const INODE_CREDITS: usize = 1;

impl<D: BlockDevice> Volume<D> {
    /// Credits of one [`Volume::map_hole`] step on `inode`.
    pub(crate) fn map_credits(&self, inode: &Inode) -> Result<usize> {
        if inode.has_flag(flags::EXTENTS) {
            Ok(2 + extent::insert_credits(self.extent_depth(inode)?) + INODE_CREDITS)
        } else {
            Ok(indirect::ALLOC_STEP_CREDITS + INODE_CREDITS)
        }
    }

    /// Credits of one [`Volume::unmap_step`] (or extent state step) on
    /// `inode`.
    pub(crate) fn unmap_credits(&self, inode: &Inode) -> Result<usize> {
        if inode.has_flag(flags::EXTENTS) {
            Ok(extent::step_credits(self.extent_depth(inode)?) + INODE_CREDITS)
        } else {
            Ok(indirect::REMOVE_STEP_CREDITS + INODE_CREDITS)
        }
    }

    /// Credits of unmapping, in the same handle, a run just mapped by
    /// [`Volume::map_hole`] (a removal without a split).
    pub(crate) fn undo_map_credits(&self, inode: &Inode) -> Result<usize> {
        if inode.has_flag(flags::EXTENTS) {
            Ok(extent::remove_credits(self.extent_depth(inode)?) + INODE_CREDITS)
        } else {
            Ok(indirect::UNDO_ALLOC_CREDITS + INODE_CREDITS)
        }
    }

    /// Where new data for logical block `l` of extent-mapped `inode` should
    /// go (the kernel's `ext4_ext_find_goal`): continuing the extent at or
    /// before it as if the file were contiguous, or before the first one,
    /// or in the inode's group.
    fn extent_goal(&self, inode: &Inode, l: u64) -> Result<PhysBlock> {
        let near = match self.extent_before(inode, FileBlock(l as u32))? {
            Some(e) => Some(e),
            None => self.first_extent(inode)?,
        };
        Ok(match near {
            Some(e) if e.lblk.get() <= l => PhysBlock(e.pblk.0 + (l - e.lblk.get())),
            Some(e) => PhysBlock(e.pblk.0.saturating_sub(e.lblk.get() - l)),
            None => self.inode_goal(
                inode.ino,
                inode.kind == Some(crate::attr::FileType::Regular),
            ),
        })
    }

    /// The file's first extent.
    fn first_extent(&self, inode: &Inode) -> Result<Option<Extent>> {
        match self.map_block(inode, FileBlock(0))? {
            Run::Mapped {
                pblk,
                len,
                unwritten,
            } => Ok(Some(Extent {
                lblk: FileBlock(0),
                len: len as u32,
                pblk,
                unwritten,
            })),
            Run::Hole { len } if len < FileBlock::COUNT => {
                Ok(self.extent_before(inode, FileBlock(len as u32))?)
            }
            Run::Hole { .. } => Ok(None),
        }
    }

    /// Under `bigalloc`: the block logical block `l` must use when another
    /// block of its logical cluster is mapped already (its physical
    /// cluster is then the file's, at the same offset: the kernel's
    /// `get_implied_cluster_alloc`), and how many blocks from `l` stay in
    /// that cluster.
    fn implied_cluster(&self, inode: &Inode, l: u64) -> Result<Option<(PhysBlock, u64)>> {
        let r = self.cluster_ratio();
        if r == 1 {
            return Ok(None);
        }
        let c0 = l / r * r;
        let mut at = c0;
        while at < c0 + r {
            match self.map_block_at(inode, at)? {
                Run::Mapped { pblk, .. } => {
                    let base = pblk.0 - (at - c0);
                    return Ok(Some((PhysBlock(base + (l - c0)), c0 + r - l)));
                }
                Run::Hole { len } => at += len.max(1),
            }
        }
        Ok(None)
    }

    /// Allocate and map blocks for the hole at logical block `l` (at most
    /// `want` of them, which the caller keeps inside the hole): written,
    /// or `unwritten` (extent files only: block-mapped files have no such
    /// state, their new blocks must be written before the commit). Goal:
    /// after the file's previous block. Returns the physical run mapped
    /// (at least one block). ENOSPC changes nothing. Updates `inode`'s map
    /// and `i_blocks`; the caller writes the inode. [`Volume::map_credits`].
    pub(crate) fn map_hole(
        &self,
        h: &mut Handle<'_, D>,
        inode: &mut Inode,
        l: u64,
        want: u64,
        unwritten: bool,
        cred: &Cred,
    ) -> Result<(PhysBlock, u32)> {
        if !inode.has_flag(flags::EXTENTS) {
            let want = want.min(u32::MAX as u64) as u32;
            let r = self.ind_alloc(h, inode, l, want, cred)?;
            // The read path's cached hole there is gone (the plain data
            // path's callers say so too; iomap's `map_for_write` relies
            // on this).
            self.mapping_changed(inode.ino);
            return Ok(r);
        }
        let want = want.min(extent::max_len(unwritten) as u64).max(1);
        let unit = self.sb().cluster_size as u64 / 512;
        let r = self.cluster_ratio();
        let (start, n, fresh) = match self.implied_cluster(inode, l)? {
            Some((p, room)) => (p, want.min(room), None),
            None => {
                // The hole may end inside a logical cluster that maps
                // blocks after it: that cluster is not ours to allocate
                // (its blocks go where its mapped blocks are).
                let mut want = want;
                let last_cluster = (l + want - 1) / r * r;
                if r > 1
                    && last_cluster > l / r * r
                    && self.mapped_in(inode, last_cluster, last_cluster + r)?
                {
                    want = last_cluster - l;
                }
                let goal = self.extent_goal(inode, l)?;
                let off = l % r;
                let clusters = (off + want).div_ceil(r).min(u32::MAX as u64) as u32;
                let goal = PhysBlock(goal.0.saturating_sub(off));
                let (c, k) = self.alloc_clusters(h, goal, clusters, cred, false, u64::MAX)?;
                let n = want.min(k as u64 * r - off);
                (PhysBlock(c.0 + off), n, Some((c, k)))
            }
        };
        let ext = Extent {
            lblk: FileBlock(l as u32),
            len: n as u32,
            pblk: start,
            unwritten,
        };
        if let Err(e) = self.insert_extent(h, inode, ext, cred) {
            if let Some((c, k)) = fresh {
                self.free_blocks(h, c, k as u64 * r)?;
            }
            return Err(e);
        }
        if let Some((_, k)) = fresh {
            inode.blocks_512 += k as u64 * unit;
        }
        self.mapping_changed(inode.ino);
        Ok((start, n as u32))
    }

    /// One step of unmapping logical blocks `from..to` of `inode` (from
    /// the end), freeing what only they used. Returns where the rest
    /// ends, or `Done`. [`Volume::unmap_credits`].
    pub(crate) fn unmap_step(
        &self,
        h: &mut Handle<'_, D>,
        inode: &mut Inode,
        from: u64,
        to: u64,
        cred: &Cred,
    ) -> Result<Progress> {
        let r = if inode.has_flag(flags::EXTENTS) {
            self.remove_extent_step(h, inode, from, to, cred)?
        } else {
            self.ind_remove_step(h, inode, from, to)?
        };
        if r != Progress::Done {
            self.mapping_changed(inode.ino);
        }
        Ok(r)
    }
}
