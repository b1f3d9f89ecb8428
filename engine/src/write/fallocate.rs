//! `fallocate(2)` as the kernel's ext4 (6.18) answers it, checks in the
//! VFS's order then ext4's, errnos included (the engine's tests compare
//! the table with the running kernel): allocate (holes become unwritten
//! extents; the size grows unless `KEEP_SIZE`), `PUNCH_HOLE|KEEP_SIZE`,
//! `ZERO_RANGE` (whole blocks become unwritten, partial edge blocks are
//! allocated and zeroed), `COLLAPSE_RANGE` and `INSERT_RANGE`
//! (cluster-aligned; extents shifted). Block-mapped files support only
//! punching, as in the kernel. Every mode that passes the VFS's checks sets
//! mtime and ctime, even when ext4 then refuses it (the kernel's
//! `file_modified` comes first).
//!
//! Two entry points: [`Volume::fallocate`] zeroes the partial blocks at the
//! edges of a punch or zero range through the engine's data path (plain
//! FUSE, the image tool); [`Volume::fallocate_metadata`] changes metadata
//! only (under FUSE iomap the kernel zeroes those bytes itself).

use crate::attr::FileType;
use crate::blockmap::Run;
use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::inode::{flags, Inode};
use crate::numbers::{FileBlock, InodeNo};
use crate::volume::Volume;
use crate::writable::Cred;

use super::data::inode_is_blockmapped;
use super::extent::{Progress, Shift};
use super::fmap::INODE_CREDITS;
use super::Edges;

/// `fallocate` mode bits (Linux `FALLOC_FL_*`).
pub mod falloc {
    pub const KEEP_SIZE: u32 = 0x01;
    pub const PUNCH_HOLE: u32 = 0x02;
    pub const NO_HIDE_STALE: u32 = 0x04;
    pub const COLLAPSE_RANGE: u32 = 0x08;
    pub const ZERO_RANGE: u32 = 0x10;
    pub const INSERT_RANGE: u32 = 0x20;
    pub const UNSHARE_RANGE: u32 = 0x40;
    pub const WRITE_ZEROES: u32 = 0x80;
    /// The bits the VFS knows.
    pub const KNOWN: u32 = KEEP_SIZE
        | PUNCH_HOLE
        | NO_HIDE_STALE
        | COLLAPSE_RANGE
        | ZERO_RANGE
        | INSERT_RANGE
        | UNSHARE_RANGE
        | WRITE_ZEROES;
}

/// The kernel rounds a punch past EOF up to the page holding EOF.
const PAGE_SIZE: u64 = 4096;

const NOT_SUPPORTED: Error = Error::Unsupported {
    what: "this fallocate mode (the kernel's ext4 refuses it too)",
};

impl<D: BlockDevice> Volume<D> {
    /// `fallocate(ino, mode, offset, len)` with the partial blocks at the
    /// edges of a punch or zero range zeroed by the engine (plain FUSE,
    /// image tool).
    pub fn fallocate(
        &self,
        ino: InodeNo,
        mode: u32,
        offset: u64,
        len: u64,
        cred: &Cred,
    ) -> Result<()> {
        self.fallocate_with(ino, mode, offset, len, Edges::Engine, cred)
    }

    /// `fallocate` changing metadata only: the caller (the kernel, under
    /// FUSE iomap) zeroes the partial edge blocks of a punch or zero range.
    pub fn fallocate_metadata(
        &self,
        ino: InodeNo,
        mode: u32,
        offset: u64,
        len: u64,
        cred: &Cred,
    ) -> Result<()> {
        self.fallocate_with(ino, mode, offset, len, Edges::Kernel, cred)
    }

    fn fallocate_with(
        &self,
        ino: InodeNo,
        mode: u32,
        offset: u64,
        len: u64,
        edges: Edges,
        cred: &Cred,
    ) -> Result<()> {
        use falloc::*;
        // The VFS (`vfs_fallocate`).
        if len == 0 || offset > i64::MAX as u64 || len > i64::MAX as u64 {
            return Err(Error::InvalidArgument);
        }
        if mode & !KNOWN != 0 {
            return Err(NOT_SUPPORTED);
        }
        let keep = mode & KEEP_SIZE != 0;
        let op = mode & !KEEP_SIZE;
        match op {
            0 | UNSHARE_RANGE | ZERO_RANGE => {}
            PUNCH_HOLE if keep => {}
            COLLAPSE_RANGE | INSERT_RANGE | WRITE_ZEROES if !keep => {}
            _ => return Err(NOT_SUPPORTED),
        }
        let _locks = self.inode_locks().lock(&[ino]);
        let mut inode = self.inode_for_write(ino)?;
        if inode.has_flag(flags::IMMUTABLE) || (op != 0 && inode.has_flag(flags::APPEND)) {
            return Err(Error::NotPermitted);
        }
        match inode.kind {
            Some(FileType::Regular) => {}
            Some(FileType::Directory) => return Err(Error::IsDir),
            Some(FileType::Fifo) => return Err(Error::IllegalSeek),
            _ => return Err(Error::NoDevice),
        }
        let end = offset.checked_add(len).ok_or(Error::FileTooBig)?;
        if end > self.sb().max_file_size(true) {
            return Err(Error::FileTooBig);
        }
        // ext4 (`ext4_fallocate`): modes it never supports first.
        if op == UNSHARE_RANGE || op == WRITE_ZEROES {
            return Err(NOT_SUPPORTED);
        }
        self.writable_file(&inode)?;
        self.convert_inline(&mut inode, cred)?;
        // `file_modified`: the times change whatever follows.
        let now = self.now();
        inode.mtime = now;
        inode.ctime = now;
        self.store_inode(&mut inode)?;
        if inode_is_blockmapped(&inode) && op != PUNCH_HOLE {
            return Err(NOT_SUPPORTED);
        }
        match op {
            PUNCH_HOLE => self.punch_hole(&mut inode, offset, end, edges, cred),
            COLLAPSE_RANGE => self.collapse_range(&mut inode, offset, len, cred),
            INSERT_RANGE => self.insert_range(&mut inode, offset, len, cred),
            ZERO_RANGE => self.zero_range(&mut inode, offset, end, keep, edges, cred),
            _ => self.allocate_range(&mut inode, offset, end, keep, cred),
        }
    }

    /// Write `inode` in a handle of its own.
    pub(crate) fn store_inode(&self, inode: &mut Inode) -> Result<()> {
        let mut h = self.begin(INODE_CREDITS)?;
        if let Err(e) = self.write_inode(&mut h, inode, false) {
            return Err(h.abort(e));
        }
        Ok(())
    }

    /// Allocate the holes of logical blocks `from..to` as unwritten
    /// extents (one run per handle); with `new_size`, each handle raises
    /// the size over what it allocated, up to `new_size` (as the kernel's
    /// `ext4_alloc_file_blocks`: after ENOSPC the size covers what was
    /// allocated). Existing blocks are left as they are.
    fn allocate_unwritten(
        &self,
        inode: &mut Inode,
        from: u64,
        to: u64,
        new_size: Option<u64>,
        cred: &Cred,
    ) -> Result<()> {
        let bs = self.sb().block_size as u64;
        let to = to.min(FileBlock::COUNT);
        let mut l = from;
        while l < to {
            let hole = match self.map_block_at(inode, l)? {
                Run::Mapped { len, .. } => {
                    l += len;
                    continue;
                }
                Run::Hole { len } => len.min(to - l),
            };
            let mut h = self.begin(self.map_credits(inode)?)?;
            let (_, n) = self.map_hole(&mut h, inode, l, hole, true, cred)?;
            l += n as u64;
            if let Some(s) = new_size {
                inode.size = inode.size.max(s.min(l * bs));
            }
            if let Err(e) = self.write_inode(&mut h, inode, false) {
                return Err(h.abort(e));
            }
        }
        Ok(())
    }

    /// Set logical blocks `from..to` to the unwritten (or written) state,
    /// one step per handle.
    fn set_state_range(
        &self,
        inode: &mut Inode,
        from: u64,
        to: u64,
        unwritten: bool,
        cred: &Cred,
    ) -> Result<()> {
        let mut at = from;
        loop {
            let mut h = self.begin(self.unmap_credits(inode)?)?;
            let r = match self.set_state_step(&mut h, inode, at, to, unwritten, cred) {
                Ok(r) => r,
                Err(e) => return Err(h.abort(e)),
            };
            self.mapping_changed(inode.ino);
            if let Err(e) = self.write_inode(&mut h, inode, false) {
                return Err(h.abort(e));
            }
            match r {
                Progress::At(x) => at = x,
                Progress::Done => return Ok(()),
            }
        }
    }

    /// The default mode (and `KEEP_SIZE`): bytes `offset..end` get blocks.
    fn allocate_range(
        &self,
        inode: &mut Inode,
        offset: u64,
        end: u64,
        keep: bool,
        cred: &Cred,
    ) -> Result<()> {
        let bs = self.sb().block_size as u64;
        let new_size = (!keep && end > inode.size).then_some(end);
        if let Some(s) = new_size {
            self.need_large_file(s)?;
        }
        self.allocate_unwritten(inode, offset / bs, end.div_ceil(bs), new_size, cred)?;
        if let Some(s) = new_size {
            if inode.size < s {
                inode.size = s;
                self.store_inode(inode)?;
            }
        }
        Ok(())
    }

    /// Zero the partial blocks at the edges of bytes `offset..end` (the
    /// kernel's `ext4_zero_partial_blocks`), where written.
    fn zero_edges(&self, inode: &Inode, offset: u64, end: u64) -> Result<()> {
        let bs = self.sb().block_size as u64;
        let first = offset.div_ceil(bs) * bs;
        let last = end / bs * bs;
        if first > last {
            // Both edges in one block.
            return self.zero_written(inode, offset, end);
        }
        if offset < first {
            self.zero_written(inode, offset, first)?;
        }
        if last < end {
            self.zero_written(inode, last, end)?;
        }
        Ok(())
    }

    /// `PUNCH_HOLE`: the whole blocks of `offset..end` unmapped (the range
    /// cut at EOF rounded up to its page), the partial edge blocks zeroed.
    fn punch_hole(
        &self,
        inode: &mut Inode,
        offset: u64,
        end: u64,
        edges: Edges,
        cred: &Cred,
    ) -> Result<()> {
        if offset >= inode.size {
            return Ok(());
        }
        let bs = self.sb().block_size as u64;
        let end = end.min(inode.size.div_ceil(PAGE_SIZE) * PAGE_SIZE);
        if edges == Edges::Engine {
            self.zero_edges(inode, offset, end)?;
        }
        let (first, stop) = (offset.div_ceil(bs), end / bs);
        if first < stop {
            self.unmap_range(inode, first, stop, cred)?;
        }
        Ok(())
    }

    /// `ZERO_RANGE`: partial edge blocks allocated (and zeroed), whole
    /// blocks turned unwritten (holes allocated unwritten), the size grown
    /// unless `keep`.
    fn zero_range(
        &self,
        inode: &mut Inode,
        offset: u64,
        end: u64,
        keep: bool,
        edges: Edges,
        cred: &Cred,
    ) -> Result<()> {
        let bs = self.sb().block_size as u64;
        let new_size = (!keep && end > inode.size).then_some(end);
        if let Some(s) = new_size {
            self.need_large_file(s)?;
        }
        if !(offset | end).is_multiple_of(bs) {
            self.allocate_unwritten(inode, offset / bs, end.div_ceil(bs), new_size, cred)?;
        }
        let (first, stop) = (offset.div_ceil(bs), end / bs);
        if first < stop {
            self.set_state_range(inode, first, stop, true, cred)?;
            self.allocate_unwritten(inode, first, stop, new_size, cred)?;
        }
        if let Some(s) = new_size {
            if inode.size < s {
                inode.size = s;
                self.store_inode(inode)?;
            }
        }
        if edges == Edges::Engine {
            self.zero_edges(inode, offset, end)?;
        }
        Ok(())
    }

    /// Alignment that collapse and insert require: the cluster.
    fn range_aligned(&self, offset: u64, len: u64) -> bool {
        (offset | len).is_multiple_of(self.sb().cluster_size as u64)
    }

    /// `COLLAPSE_RANGE`: bytes `offset..offset+len` removed, what follows
    /// moved down, the size reduced.
    fn collapse_range(&self, inode: &mut Inode, offset: u64, len: u64, cred: &Cred) -> Result<()> {
        if !self.range_aligned(offset, len) {
            return Err(Error::InvalidArgument);
        }
        if offset + len >= inode.size {
            return Err(Error::InvalidArgument);
        }
        let bs = self.sb().block_size as u64;
        let (start, by) = (offset / bs, len / bs);
        self.unmap_range(inode, start, start + by, cred)?;
        self.shift_range(inode, start + by, by, Shift::Left)?;
        inode.size -= len;
        self.store_inode(inode)
    }

    /// `INSERT_RANGE`: a hole of `len` bytes inserted at `offset`, what
    /// follows moved up, the size grown.
    fn insert_range(&self, inode: &mut Inode, offset: u64, len: u64, cred: &Cred) -> Result<()> {
        if !self.range_aligned(offset, len) {
            return Err(Error::InvalidArgument);
        }
        if len > self.sb().max_file_size(true) - inode.size {
            return Err(Error::FileTooBig);
        }
        if offset >= inode.size {
            return Err(Error::InvalidArgument);
        }
        let bs = self.sb().block_size as u64;
        let (start, by) = (offset / bs, len / bs);
        if let Some(e) = self.last_extent(inode)? {
            if e.end() + by > FileBlock::COUNT {
                return Err(Error::FileTooBig);
            }
        }
        self.need_large_file(inode.size + len)?;
        // The size first, as the kernel does (nothing past it is lost if
        // a later step fails).
        inode.size += len;
        self.store_inode(inode)?;
        // An extent across `start` is cut there.
        if let Some(e) = self.extent_before(inode, FileBlock(start as u32))? {
            if e.lblk.get() < start && start < e.end() {
                let mut h = self.begin(self.unmap_credits(inode)?)?;
                let r = self
                    .split_at(&mut h, inode, &e, start, cred)
                    .and_then(|_| self.write_inode(&mut h, inode, false));
                if let Err(e) = r {
                    return Err(h.abort(e));
                }
            }
        }
        self.shift_range(inode, start, by, Shift::Right)
    }

    /// Shift the extents at or past `start` by `by` blocks, a leaf per
    /// handle.
    fn shift_range(&self, inode: &mut Inode, start: u64, by: u64, dir: Shift) -> Result<()> {
        let mut cursor = None;
        loop {
            let mut h = self.begin(self.unmap_credits(inode)?)?;
            let r = match self.shift_step(&mut h, inode, start, by, dir, cursor) {
                Ok(r) => r,
                Err(e) => return Err(h.abort(e)),
            };
            self.mapping_changed(inode.ino);
            if let Err(e) = self.write_inode(&mut h, inode, false) {
                return Err(h.abort(e));
            }
            match r {
                Progress::At(c) => cursor = Some(c),
                Progress::Done => return Ok(()),
            }
        }
    }
}
