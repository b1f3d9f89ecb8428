//! Handlers of the requests about file contents: `OPEN`/`OPENDIR`,
//! `READ`, `READLINK`, `LSEEK`.

use zerocopy::IntoBytes;

use super::{ReplyBuf, Request, Session};
use crate::abi::{self, fopen, init_flags as flag};
use crate::backend::Backend;
use crate::channel::Channel;
use crate::log;
use ext4_engine::{errno, policy, FileType, Whence};

/// Linux `O_NOATIME`.
const O_NOATIME: u32 = 0o1000000;

impl<B: Backend> Session<B> {
    pub(super) fn do_readlink(&self, req: &Request<'_>, out: &mut ReplyBuf) -> Result<(), i32> {
        let ino = req.ino()?;
        let target = self
            .backend
            .readlink(ino)
            .map_err(|e| self.fail("readlink", ino, e))?;
        if !out.push(&target) {
            return Err(errno::ENAMETOOLONG);
        }
        self.backend.accessed(ino);
        Ok(())
    }

    pub(super) fn do_open(
        &self,
        req: &Request<'_>,
        ch: &dyn Channel,
        out: &mut ReplyBuf,
        dir: bool,
    ) -> Result<(), i32> {
        let ino = req.ino()?;
        let args: abi::OpenIn = req.arg()?;
        // OPEN comes for regular files only, OPENDIR for directories.
        let kind = if dir {
            FileType::Directory
        } else {
            FileType::Regular
        };
        if dir || self.backend.read_only() {
            policy::check_open(args.flags, kind, 0, self.backend.read_only())
                .map_err(|e| e.errno())?;
        }
        // A read-only mount keeps no per-open state. When the kernel can do
        // without OPEN/OPENDIR, ENOSYS makes it stop sending them (and the
        // RELEASEs), keeping its caches as KEEP_CACHE/CACHE_DIR would; a
        // tree read then costs no request per file. Not for iomap files,
        // whose open is when their first mappings are pushed, nor for the
        // files of a writable mount, whose opens the policy checks
        // (append-only and immutable files).
        let no_open = if dir {
            flag::NO_OPENDIR_SUPPORT
        } else {
            flag::NO_OPEN_SUPPORT
        };
        let offered = self.negotiated().is_some_and(|n| n.flags & no_open != 0);
        if offered && (dir || (!self.iomap_active() && self.backend.read_only())) {
            return Err(errno::ENOSYS);
        }
        // Every change reaches the image through this mount, so the
        // kernel's page cache (and directory cache) stay valid across opens.
        let keep = if dir {
            true
        } else {
            self.backend
                .open(ino, args.flags)
                .map_err(|e| self.fail("open", ino, e))?
        };
        let mut open_flags = if keep { fopen::KEEP_CACHE } else { 0 };
        if dir {
            open_flags |= fopen::CACHE_DIR;
        }
        if !dir {
            self.push_on_open(ch, ino);
        }
        out.push(
            abi::OpenOut {
                fh: 0,
                open_flags,
                backing_id: 0,
            }
            .as_bytes(),
        );
        Ok(())
    }

    pub(super) fn do_read(&self, req: &Request<'_>, out: &mut ReplyBuf) -> Result<(), i32> {
        let ino = req.ino()?;
        let args: abi::ReadIn = req.arg()?;
        let size = args.size as usize;
        if size > out.room() {
            return Err(errno::EINVAL);
        }
        if self.read_is_iomap_violation(ino)? {
            // The kernel does iomap files' I/O itself; only inline data
            // comes through here.
            log::error(format_args!(
                "READ of iomap file inode {ino}: refused (the kernel reads it itself)"
            ));
            return Err(errno::EIO);
        }
        // One engine read straight into the reply, after the header.
        let n = self
            .backend
            .read(ino, args.offset, out.tail(size))
            .map_err(|e| self.fail_as(policy::Request::Read, "read", ino, e))?;
        out.commit(n.min(size));
        // The reading file's flags come along: O_NOATIME leaves it alone.
        if args.flags & O_NOATIME == 0 {
            self.backend.accessed(ino);
        }
        Ok(())
    }

    pub(super) fn do_lseek(&self, req: &Request<'_>, out: &mut ReplyBuf) -> Result<(), i32> {
        let ino = req.ino()?;
        let args: abi::LseekIn = req.arg()?;
        let whence = match args.whence as i32 {
            libc::SEEK_DATA => Whence::Data,
            libc::SEEK_HOLE => Whence::Hole,
            // The kernel handles SEEK_SET/CUR/END itself.
            _ => return Err(errno::EINVAL),
        };
        let off = self
            .backend
            .seek(ino, args.offset, whence)
            .map_err(|e| self.fail("lseek", ino, e))?;
        out.push(abi::LseekOut { offset: off }.as_bytes());
        Ok(())
    }
}
