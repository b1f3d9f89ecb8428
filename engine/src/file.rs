//! File contents: reads, symlink targets, SEEK_DATA/SEEK_HOLE.

use alloc::vec;
use alloc::vec::Vec;

use crate::attr::FileType;
use crate::blockmap::{Run, MAX_LBLK};
use crate::device::BlockDevice;
use crate::error::{Error, Object, Result};
use crate::features::incompat;
use crate::inode::{flags, Inode};
use crate::volume::{Volume, Whence};

/// Longest symlink target the kernel's ext4 accepts (a page, with its NUL).
const SYMLINK_MAX: u64 = 4095;

impl<D: BlockDevice> Volume<D> {
    /// Read file bytes at `offset`; returns the count, short only at EOF.
    pub fn read(&self, ino: u32, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let inode = self.live_inode(ino)?;
        match inode.kind {
            Some(FileType::Directory) => return Err(Error::IsDir),
            Some(FileType::Regular) | Some(FileType::Symlink) => {}
            _ => return Err(Error::InvalidArgument),
        }
        self.read_inode(&inode, offset, buf)
    }

    /// Read from an already-decoded inode.
    pub fn read_inode(&self, inode: &Inode, offset: u64, buf: &mut [u8]) -> Result<usize> {
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
            let run = self.map_block(inode, lblk)?;
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
                    let at = pblk * bs + within;
                    self.read_device(at, dst)?;
                }
                _ => dst.fill(0),
            }
            done += take;
        }
        Ok(n)
    }

    pub fn readlink(&self, ino: u32) -> Result<Vec<u8>> {
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
        let n = self.read_inode(&inode, 0, &mut out)?;
        out.truncate(n);
        // The kernel stops a target at the first NUL.
        if let Some(z) = out.iter().position(|&b| b == 0) {
            out.truncate(z);
        }
        Ok(out)
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

    /// `lseek` with SEEK_DATA / SEEK_HOLE. Unwritten extents count as holes
    /// (they read as zeros), as on the kernel's ext4.
    pub fn seek(&self, ino: u32, offset: u64, whence: Whence) -> Result<u64> {
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
        let mut lblk = offset / bs;
        let end = size.div_ceil(bs).min(MAX_LBLK);
        // Pointer blocks reused under many slots map far more blocks than
        // exist, one run at a time (an indirect block pointing at itself
        // under a 1 TiB size: minutes per SEEK_HOLE): stop once the scan
        // passes more mapped blocks than the filesystem has, which no valid
        // file does.
        let mut mapped = 0u64;
        while lblk < end {
            let run = self.map_block(&inode, lblk)?;
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
            if let Run::Mapped { len, .. } = run {
                mapped += len;
                if mapped > self.sb().blocks_count {
                    return Err(Error::corrupt(
                        Object::Inode(ino),
                        "block map maps more blocks than the filesystem has",
                    ));
                }
            }
            lblk += run.len().max(1);
        }
        match whence {
            Whence::Data => Err(Error::NoSuchOffset),
            Whence::Hole => Ok(size),
        }
    }
}
