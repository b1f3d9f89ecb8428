//! The engine's own data path (the plain FUSE frontends and the image
//! tool; under FUSE iomap the kernel writes file data instead): `write`,
//! and zeroing the written parts of partial blocks for truncate, punch and
//! zero range. File data goes straight to the device, bypassing the block
//! cache, before the metadata that points at it is committed (ordered
//! mode: a commit flushes the device first).

use alloc::vec;
use alloc::vec::Vec;

use crate::attr::FileType;
use crate::blockmap::Run;
use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::inode::{flags, Inode};
use crate::numbers::{FileBlock, InodeNo, PhysBlock};
use crate::volume::Volume;
use crate::writable::Cred;

use super::extent::Progress;
use super::fmap::INODE_CREDITS;

/// Bytes of file data written to the device at once.
pub(crate) const DATA_IO_BYTES: usize = 1 << 20;
/// Most blocks one step of `write` maps (the longest extent).
const WRITE_CHUNK_BLOCKS: u64 = super::extent::MAX_LEN as u64;

impl<D: BlockDevice> Volume<D> {
    /// Write `data` at `offset` of regular file `ino` (the engine's own
    /// data path): holes get blocks allocated goal-directed (after the
    /// file's previous block) and written whole, zero-filled around the
    /// data; unwritten extents get their blocks written whole the same way
    /// and then converted to written; written blocks are overwritten in
    /// place. Small files of an `inline_data` filesystem are written into
    /// the inode, and grow out of it into a block when they no longer fit.
    /// Extends the size (past 2 GiB the `large_file` feature is set, as the
    /// kernel does); sets mtime and ctime. A write starting at or past the
    /// largest file size is EFBIG; one crossing it is cut there. Returns
    /// the bytes written: all of them, or an error (ENOSPC may come after
    /// a prefix was written; then the size covers exactly that prefix and
    /// the count is returned).
    pub fn write(&self, ino: InodeNo, offset: u64, data: &[u8], cred: &Cred) -> Result<usize> {
        let _locks = self.inode_locks().lock(&[ino]);
        let mut inode = self.inode_for_write(ino)?;
        match inode.kind {
            Some(FileType::Regular) => {}
            Some(FileType::Directory) => return Err(Error::IsDir),
            _ => return Err(Error::InvalidArgument),
        }
        self.writable_file(&inode)?;
        self.appending_only(&inode, Some(offset))?;
        let max = self.max_size_of(&inode);
        if offset >= max {
            return Err(Error::FileTooBig);
        }
        let data = &data[..data.len().min((max - offset) as usize)];
        if data.is_empty() {
            return Ok(0);
        }
        let end = offset + data.len() as u64;
        self.need_large_file(end)?;
        if let Some(n) = self.write_inline(&mut inode, offset, data, cred)? {
            return Ok(n);
        }
        let bs = self.sb().block_size as u64;
        let mut done = 0usize;
        while done < data.len() {
            let pos = offset + done as u64;
            let lblk = pos / bs;
            let rest = &data[done..];
            let r = match self.map_block_at(&inode, lblk)? {
                Run::Mapped {
                    pblk,
                    len,
                    unwritten: false,
                } => {
                    let room = (len * bs - pos % bs) as usize;
                    let n = room.min(rest.len());
                    self.write_device(pblk.0 * bs + pos % bs, &rest[..n])
                        .map(|_| n)
                }
                Run::Mapped {
                    pblk,
                    len,
                    unwritten: true,
                } => self.write_unwritten(&mut inode, pos, pblk, len, rest, cred),
                Run::Hole { len } => self.write_hole(&mut inode, pos, len, rest, cred),
            };
            match r {
                Ok(n) => done += n,
                Err(Error::NoSpace) if done > 0 => break,
                Err(e) => {
                    if done > 0 {
                        self.touch_written(&mut inode, offset + done as u64)?;
                    }
                    return Err(e);
                }
            }
        }
        self.touch_written(&mut inode, offset + done as u64)?;
        Ok(done)
    }

    /// After a write that ended at byte `end`: size (if extended), mtime
    /// and ctime, in one handle.
    pub(crate) fn touch_written(&self, inode: &mut Inode, end: u64) -> Result<()> {
        let now = self.now();
        let mut h = self.begin(INODE_CREDITS)?;
        inode.size = inode.size.max(end);
        inode.mtime = now;
        inode.ctime = now;
        if let Err(e) = self.write_inode(&mut h, inode, false) {
            return Err(h.abort(e));
        }
        Ok(())
    }

    /// Write `bytes` to the device at byte `at`, in bounded pieces.
    pub(crate) fn write_device(&self, at: u64, bytes: &[u8]) -> Result<()> {
        for (k, piece) in bytes.chunks(DATA_IO_BYTES).enumerate() {
            self.device()
                .write_at(at + (k * DATA_IO_BYTES) as u64, piece)?;
        }
        Ok(())
    }

    /// Fill (part of) a hole of `hole` blocks at byte `pos` with the start
    /// of `data`: one handle maps a run (allocation and map edit), the data
    /// is written to it (whole blocks, zeros around the data) and the size
    /// raised over what was written. A failed data write unmaps the run
    /// again. Returns the bytes consumed.
    fn write_hole(
        &self,
        inode: &mut Inode,
        pos: u64,
        hole: u64,
        data: &[u8],
        cred: &Cred,
    ) -> Result<usize> {
        let bs = self.sb().block_size as u64;
        let lblk = pos / bs;
        let last = (pos + data.len() as u64 - 1) / bs;
        let want = (last - lblk + 1).min(hole).min(WRITE_CHUNK_BLOCKS);
        let credits = self.map_credits(inode)? + self.undo_map_credits(inode)?;
        let mut h = self.begin(credits)?;
        let (start, got) = self.map_hole(&mut h, inode, lblk, want, false, cred)?;
        let within = (pos % bs) as usize;
        let span = got as usize * bs as usize;
        let n = (span - within).min(data.len());
        if let Err(e) = self.write_new_blocks(start, within, &data[..n], span) {
            // Leave no trace: the run goes again.
            let r = self.unmap_step(&mut h, inode, lblk, lblk + got as u64, cred);
            if let Err(e2) = r {
                return Err(h.abort(e2));
            }
            return Err(e);
        }
        inode.size = inode.size.max(pos + n as u64);
        if let Err(e) = self.write_inode(&mut h, inode, false) {
            return Err(h.abort(e));
        }
        Ok(n)
    }

    /// Write into unwritten blocks at byte `pos` (`len` of them from
    /// `pblk`): whole blocks with zeros around the data, then convert them
    /// to written, raising the size with each conversion step. Returns the
    /// bytes consumed.
    fn write_unwritten(
        &self,
        inode: &mut Inode,
        pos: u64,
        pblk: PhysBlock,
        len: u64,
        data: &[u8],
        cred: &Cred,
    ) -> Result<usize> {
        let bs = self.sb().block_size as u64;
        let lblk = pos / bs;
        let last = (pos + data.len() as u64 - 1) / bs;
        let nb = (last - lblk + 1).min(len).min(WRITE_CHUNK_BLOCKS);
        let within = (pos % bs) as usize;
        let span = (nb * bs) as usize;
        let n = (span - within).min(data.len());
        self.write_new_blocks(pblk, within, &data[..n], span)?;
        self.convert_to_written(inode, lblk, lblk + nb, Some(pos + n as u64), cred)?;
        Ok(n)
    }

    /// Convert logical blocks `from..to` of `inode` to written (their data
    /// is on the device), one step per handle; each step raises the size
    /// to cover what it converted, up to `size_to` (when given). A split
    /// that finds no room for a tree block falls back as the kernel's
    /// zeroout does: the rest of that unwritten extent is zeroed on the
    /// device and the whole extent becomes written.
    pub(crate) fn convert_to_written(
        &self,
        inode: &mut Inode,
        from: u64,
        to: u64,
        size_to: Option<u64>,
        cred: &Cred,
    ) -> Result<()> {
        if !inode.has_flag(flags::EXTENTS) {
            return Ok(());
        }
        let bs = self.sb().block_size as u64;
        let mut at = from;
        loop {
            let mut h = self.begin(self.unmap_credits(inode)?)?;
            let r = match self.set_state_step(&mut h, inode, at, to, false, cred) {
                Err(Error::NoSpace) => self.zeroout_convert(&mut h, inode, at, to),
                r => r,
            };
            let next = match r {
                Ok(p) => p,
                Err(e) => return Err(h.abort(e)),
            };
            let done_to = match next {
                Progress::At(x) => x,
                Progress::Done => to,
            };
            if let Some(s) = size_to {
                inode.size = inode.size.max(s.min(done_to * bs));
            }
            self.mapping_changed(inode.ino);
            if let Err(e) = self.write_inode(&mut h, inode, false) {
                return Err(h.abort(e));
            }
            match next {
                Progress::At(x) => at = x,
                Progress::Done => return Ok(()),
            }
        }
    }

    /// The zeroout fallback of [`Volume::convert_to_written`]: the
    /// unwritten extent at `at` has its blocks outside `at..to` zeroed on
    /// the device and becomes written whole (no split, no allocation).
    fn zeroout_convert(
        &self,
        h: &mut crate::txn::Handle<'_, D>,
        inode: &mut Inode,
        at: u64,
        to: u64,
    ) -> Result<Progress> {
        let bs = self.sb().block_size as u64;
        let Some(e) = self.extent_before(inode, FileBlock(at as u32))? else {
            return Err(Error::NoSpace);
        };
        if !e.unwritten || e.end() <= at {
            return Err(Error::NoSpace);
        }
        let zeros = |l0: u64, l1: u64| -> Result<()> {
            if l1 > l0 {
                let p = e.pblk.0 + (l0 - e.lblk.get());
                self.write_zeros(p * bs, (l1 - l0) * bs)?;
            }
            Ok(())
        };
        zeros(e.lblk.get(), at)?;
        zeros(to.min(e.end()), e.end())?;
        self.set_state_step(h, inode, e.lblk.get(), e.end(), false, &Cred::ROOT)?;
        Ok(if e.end() < to {
            Progress::At(e.end())
        } else {
            Progress::Done
        })
    }

    /// Write `len` zero bytes to the device at byte `at`.
    pub(crate) fn write_zeros(&self, at: u64, len: u64) -> Result<()> {
        let piece = vec![0u8; (len.min(DATA_IO_BYTES as u64)) as usize];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(piece.len() as u64) as usize;
            self.device().write_at(at + done, &piece[..n])?;
            done += n as u64;
        }
        Ok(())
    }

    /// Write `data` at byte `within` of the `span` bytes starting at block
    /// `start`, zeros elsewhere, in pieces of at most [`DATA_IO_BYTES`].
    pub(crate) fn write_new_blocks(
        &self,
        start: PhysBlock,
        within: usize,
        data: &[u8],
        span: usize,
    ) -> Result<()> {
        let bs = self.sb().block_size as u64;
        let base = start.0 * bs;
        let mut buf: Vec<u8> = Vec::new();
        let mut at = 0usize;
        while at < span {
            let len = DATA_IO_BYTES.min(span - at);
            let (lo, hi) = (within, within + data.len());
            if at >= lo && at + len <= hi {
                // Entirely data: no copy.
                self.device()
                    .write_at(base + at as u64, &data[at - lo..at - lo + len])?;
            } else {
                buf.clear();
                buf.resize(len, 0);
                let s = lo.max(at);
                let e = hi.min(at + len);
                if s < e {
                    buf[s - at..e - at].copy_from_slice(&data[s - lo..e - lo]);
                }
                self.device().write_at(base + at as u64, &buf)?;
            }
            at += len;
        }
        Ok(())
    }

    /// Zero bytes `from..to` of `inode` where they lie in written blocks
    /// (holes and unwritten blocks read as zeros already): the engine's
    /// data path for the partial blocks at the edges of a truncate, punch
    /// or zero range. Inline files are the caller's.
    pub(crate) fn zero_written(&self, inode: &Inode, from: u64, to: u64) -> Result<()> {
        let bs = self.sb().block_size as u64;
        let mut pos = from;
        while pos < to {
            let lblk = pos / bs;
            let run = self.map_block_at(inode, lblk)?;
            let run_end = ((lblk + run.len().max(1)) * bs).min(to);
            if let Run::Mapped {
                pblk,
                unwritten: false,
                ..
            } = run
            {
                self.write_zeros(pblk.0 * bs + pos % bs, run_end - pos)?;
            }
            pos = run_end;
        }
        Ok(())
    }

    /// Largest size `inode` may have: the extent limit, or the block map's.
    pub(crate) fn max_size_of(&self, inode: &Inode) -> u64 {
        self.sb().max_file_size(!inode_is_blockmapped(inode))
    }
}

/// A file mapped by indirect blocks (neither extents nor inline data).
pub(crate) fn inode_is_blockmapped(inode: &Inode) -> bool {
    !inode.has_flag(flags::EXTENTS) && !inode.has_flag(flags::INLINE_DATA)
}
