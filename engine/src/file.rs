//! File contents: reads, symlink targets, SEEK_DATA/SEEK_HOLE.

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use crate::attr::FileType;
use crate::blockmap::Run;
use crate::device::BlockDevice;
use crate::error::{Error, Object, Result};
use crate::features::incompat;
use crate::inode::{flags, Inode};
use crate::numbers::{FileBlock, InodeNo};
use crate::volume::{Volume, Whence};

/// Longest symlink target the kernel's ext4 accepts (a page, with its NUL).
const SYMLINK_MAX: u64 = 4095;

impl<D: BlockDevice> Volume<D> {
    /// Read file bytes at `offset`; returns the count, short only at EOF.
    pub fn read(&self, ino: InodeNo, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let inode = self.live_inode(ino)?;
        match inode.kind {
            Some(FileType::Directory) => return Err(Error::IsDir),
            Some(FileType::Regular) | Some(FileType::Symlink) => {}
            _ => return Err(Error::InvalidArgument),
        }
        self.read_inode(&inode, offset, buf)
    }

    /// Read from an already-decoded inode.
    pub(crate) fn read_inode(&self, inode: &Inode, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if offset >= inode.size {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(inode.size - offset) as usize;
        let buf = &mut buf[..n];
        if inode.has_flag(flags::INLINE_DATA) {
            return self.inline_read(inode, offset, buf);
        }
        if inode.has_flag(flags::ENCRYPT) {
            return Err(Error::Unsupported {
                what: "reading encrypted file contents",
            });
        }
        let bs = self.sb().block_size as u64;
        let mut done = 0usize;
        while done < n {
            let pos = offset + done as u64;
            let lblk = pos / bs;
            let within = pos % bs;
            let run = self.map_block_at(inode, lblk)?;
            let avail = run.len().saturating_mul(bs) - within;
            let take = avail.min((n - done) as u64) as usize;
            let dst = &mut buf[done..done + take];
            match run {
                Run::Mapped {
                    pblk,
                    unwritten: false,
                    ..
                } => {
                    // One device read for the whole contiguous piece.
                    let at = pblk.0 * bs + within;
                    self.read_device(at, dst)?;
                }
                _ => dst.fill(0),
            }
            done += take;
        }
        Ok(n)
    }

    pub fn readlink(&self, ino: InodeNo) -> Result<Vec<u8>> {
        let inode = self.live_inode(ino)?;
        if inode.kind != Some(FileType::Symlink) {
            return Err(Error::NotSymlink);
        }
        if inode.has_flag(flags::ENCRYPT) {
            return Err(Error::Unsupported {
                what: "reading encrypted symlink targets",
            });
        }
        let size = inode.size;
        if size == 0 || size > SYMLINK_MAX {
            return Err(Error::corrupt(
                Object::Inode(ino),
                "symlink target length is 0 or over 4095",
            ));
        }
        if self.is_fast_symlink(&inode) {
            if size >= 60 {
                return Err(Error::corrupt(
                    Object::Inode(ino),
                    "fast symlink is longer than i_block",
                ));
            }
            let mut out = inode.block[..size as usize].to_vec();
            // The kernel stops a fast target at the first NUL too.
            if let Some(z) = out.iter().position(|&b| b == 0) {
                out.truncate(z);
            }
            return Ok(out);
        }
        let mut out = vec![0u8; size as usize];
        if inode.has_flag(flags::INLINE_DATA) {
            let n = self.read_inode(&inode, 0, &mut out)?;
            out.truncate(n);
        } else {
            self.read_symlink_blocks(&inode, &mut out)?;
        }
        // The kernel stops a target at the first NUL.
        if let Some(z) = out.iter().position(|&b| b == 0) {
            out.truncate(z);
        }
        Ok(out)
    }

    /// A slow symlink's target through the block cache: the kernel's ext4
    /// (and the engine's `symlink`) write it as a journaled metadata block,
    /// which may not be home on the device until a checkpoint.
    fn read_symlink_blocks(&self, inode: &Inode, out: &mut [u8]) -> Result<()> {
        let bs = self.sb().block_size as usize;
        for (lblk, chunk) in out.chunks_mut(bs).enumerate() {
            match self.map_block_at(inode, lblk as u64)? {
                Run::Mapped {
                    pblk,
                    unwritten: false,
                    ..
                } => self.cache_read_with(pblk, |b| chunk.copy_from_slice(&b[..chunk.len()]))?,
                _ => chunk.fill(0),
            }
        }
        Ok(())
    }

    /// A fast symlink keeps its target in `i_block` and owns no blocks
    /// (beyond an xattr block), as the kernel decides it.
    pub(crate) fn is_fast_symlink(&self, inode: &Inode) -> bool {
        if inode.has_flag(flags::INLINE_DATA) {
            return false;
        }
        if self.sb().has_incompat(incompat::EA_INODE) && inode.has_flag(flags::EA_INODE) {
            return inode.size < 60;
        }
        let ea_blocks = if inode.file_acl != 0 {
            (self.sb().cluster_size >> 9) as u64
        } else {
            0
        };
        inode.blocks_512.saturating_sub(ea_blocks) == 0
    }

    /// Where the contents of regular file `ino` are, piece by piece from
    /// offset 0: device ranges to copy, zeros (holes, unwritten extents),
    /// or bytes to read through [`Volume::read`] (inline data, encrypted
    /// contents). For tools that copy whole files (`ext4-image extract`).
    pub fn file_pieces(&self, ino: InodeNo) -> Result<FilePieces<'_, D>> {
        let inode = self.live_inode(ino)?;
        match inode.kind {
            Some(FileType::Regular) => {}
            Some(FileType::Directory) => return Err(Error::IsDir),
            _ => return Err(Error::InvalidArgument),
        }
        let whole = inode.has_flag(flags::INLINE_DATA) || inode.has_flag(flags::ENCRYPT);
        Ok(FilePieces {
            vol: self,
            inode,
            offset: 0,
            lblk: 0,
            mapped: 0,
            whole,
        })
    }

    /// `lseek` with SEEK_DATA / SEEK_HOLE. Unwritten extents count as holes
    /// (they read as zeros), as on the kernel's ext4.
    pub fn seek(&self, ino: InodeNo, offset: u64, whence: Whence) -> Result<u64> {
        let inode = self.live_inode(ino)?;
        if inode.kind != Some(FileType::Regular) {
            return Err(Error::InvalidArgument);
        }
        let size = inode.size;
        if offset >= size {
            return Err(Error::NoSuchOffset);
        }
        if inode.has_flag(flags::INLINE_DATA) {
            return Ok(match whence {
                Whence::Data => offset,
                Whence::Hole => size,
            });
        }
        let bs = self.sb().block_size as u64;
        for step in RunWalk::new(self, &inode, offset / bs) {
            let (lblk, run) = step?;
            let data = matches!(
                run,
                Run::Mapped {
                    unwritten: false,
                    ..
                }
            );
            if data == (whence == Whence::Data) {
                return Ok((lblk * bs).max(offset).min(size));
            }
        }
        match whence {
            Whence::Data => Err(Error::NoSuchOffset),
            Whence::Hole => Ok(size),
        }
    }
}

/// The runs of a file's block map from a logical block to the end of its
/// size, in order. Pointer blocks reused under many slots map far more
/// blocks than exist, one run at a time (an indirect block pointing at
/// itself under a 1 TiB size: minutes per SEEK_HOLE, 16 GiB extracted from
/// a 128 KiB image): the walk fails once it has passed more mapped blocks
/// than the filesystem has, which no valid file does.
struct RunWalk<'v, D: BlockDevice> {
    vol: &'v Volume<D>,
    inode: &'v Inode,
    lblk: u64,
    end: u64,
    mapped: u64,
}

impl<'v, D: BlockDevice> RunWalk<'v, D> {
    fn new(vol: &'v Volume<D>, inode: &'v Inode, from: u64) -> Self {
        let bs = vol.sb().block_size as u64;
        RunWalk {
            vol,
            inode,
            lblk: from,
            end: inode.size.div_ceil(bs).min(FileBlock::COUNT),
            mapped: 0,
        }
    }
}

impl<D: BlockDevice> Iterator for RunWalk<'_, D> {
    /// The run and the logical block it starts at.
    type Item = Result<(u64, Run)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.lblk >= self.end {
            return None;
        }
        let lblk = self.lblk;
        let run = match self.vol.map_block_at(self.inode, lblk) {
            Ok(r) => r,
            Err(e) => {
                self.lblk = self.end;
                return Some(Err(e));
            }
        };
        if let Run::Mapped { len, .. } = run {
            self.mapped += len;
            if self.mapped > self.vol.sb().blocks_count {
                self.lblk = self.end;
                return Some(Err(Error::corrupt(
                    Object::Inode(self.inode.ino),
                    "block map maps more blocks than the filesystem has",
                )));
            }
        }
        self.lblk += run.len().max(1);
        Some(Ok((lblk, run)))
    }
}

/// Where one piece of a file's contents is, for bulk copies
/// ([`Volume::file_pieces`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilePiece {
    /// File bytes `offset..offset + len` are the device's bytes from
    /// `device_offset` on. File data never passes through the block cache,
    /// so the device is where to copy them from (with `copy_file_range`,
    /// say).
    Device {
        offset: u64,
        len: u64,
        device_offset: u64,
    },
    /// File bytes `offset..offset + len` read as zeros: a hole or an
    /// unwritten extent.
    Zeros { offset: u64, len: u64 },
    /// File bytes `offset..offset + len` that only the engine can produce
    /// (inline data, blocks a journal replayed in memory holds, or contents
    /// it cannot decrypt, for which [`Volume::read`] says why): read them
    /// with [`Volume::read`].
    Engine { offset: u64, len: u64 },
}

/// The pieces of a file's contents in order, covering `0..size`; see
/// [`Volume::file_pieces`].
pub struct FilePieces<'v, D: BlockDevice> {
    vol: &'v Volume<D>,
    inode: Arc<Inode>,
    /// Where the next piece starts.
    offset: u64,
    /// The block map walk; `None` for a file the engine reads whole.
    lblk: u64,
    mapped: u64,
    whole: bool,
}

impl<D: BlockDevice> FilePieces<'_, D> {
    /// The file offset the next piece starts at (where a failed step was
    /// mapping, for messages).
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

impl<D: BlockDevice> Iterator for FilePieces<'_, D> {
    type Item = Result<FilePiece>;

    fn next(&mut self) -> Option<Self::Item> {
        let size = self.inode.size;
        if self.offset >= size {
            return None;
        }
        if self.whole {
            let len = size - self.offset;
            let piece = FilePiece::Engine {
                offset: self.offset,
                len,
            };
            self.offset = size;
            return Some(Ok(piece));
        }
        let mut walk = RunWalk {
            vol: self.vol,
            inode: &self.inode,
            lblk: self.lblk,
            end: 0,
            mapped: self.mapped,
        };
        let bs = self.vol.sb().block_size as u64;
        walk.end = size.div_ceil(bs).min(FileBlock::COUNT);
        let step = walk.next();
        self.lblk = walk.lblk;
        self.mapped = walk.mapped;
        let (lblk, run) = match step {
            None => {
                // Past the last logical block a file is a hole.
                let piece = FilePiece::Zeros {
                    offset: self.offset,
                    len: size - self.offset,
                };
                self.offset = size;
                return Some(Ok(piece));
            }
            Some(Err(e)) => {
                self.offset = size;
                return Some(Err(e));
            }
            Some(Ok(step)) => step,
        };
        let from = lblk * bs;
        let to = lblk
            .saturating_add(run.len().max(1))
            .saturating_mul(bs)
            .min(size);
        self.offset = to;
        Some(Ok(match run {
            // Blocks of a journal replayed in memory (file data under
            // data=journal) are not on the device: the engine reads them.
            Run::Mapped {
                pblk,
                unwritten: false,
                ..
            } if self.vol.replayed_in(pblk, (to - from).div_ceil(bs)) => FilePiece::Engine {
                offset: from,
                len: to - from,
            },
            Run::Mapped {
                pblk,
                unwritten: false,
                ..
            } => FilePiece::Device {
                offset: from,
                len: to - from,
                device_offset: pblk.0.saturating_mul(bs),
            },
            _ => FilePiece::Zeros {
                offset: from,
                len: to - from,
            },
        }))
    }
}
