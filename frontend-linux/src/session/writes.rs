//! Handlers of the write requests: decoding the wire and replying; what
//! to do is `ext4_fuse_common::fs` (shared with `ext4-fuse-bsd`), through
//! the engine's request policy.

use zerocopy::IntoBytes;

use super::{ReplyBuf, Request, Session};
use crate::abi::{self, fattr, fopen};
use crate::backend::{Backend, Make};
use ext4_engine::{errno, Attr, InodeNo, SetAttr, SetTime, Timestamp};

/// `fsync_flags` bit: only the data (`fdatasync`).
const FSYNC_FDATASYNC: u32 = 1;

impl<B: Backend> Session<B> {
    /// Whether the kernel left dropping set-ID bits and capabilities to
    /// us (`FUSE_HANDLE_KILLPRIV_V2`).
    fn killpriv(&self) -> bool {
        self.negotiated()
            .is_some_and(|n| n.flags & abi::init_flags::HANDLE_KILLPRIV_V2 != 0)
    }

    /// An entry reply for `a`, which the kernel will hold.
    fn push_entry(&self, out: &mut ReplyBuf, a: &Attr) -> Result<(), i32> {
        let e = self.entry_out(a).map_err(|e| e.errno())?;
        self.backend.entry(a);
        out.push(e.as_bytes());
        Ok(())
    }

    pub(super) fn do_create(&self, req: &Request<'_>, out: &mut ReplyBuf) -> Result<(), i32> {
        let parent = req.ino()?;
        let args: abi::CreateIn = req.arg()?;
        let name = req.name_at(core::mem::size_of::<abi::CreateIn>())?;
        let a = self
            .backend
            .create(
                &req.caller(),
                parent,
                name,
                args.mode,
                args.umask,
                Some(args.flags),
            )
            .map_err(|e| self.fail("create", parent, e))?;
        self.push_entry(out, &a)?;
        push_open(out);
        Ok(())
    }

    /// `TMPFILE`: `CREATE`'s arguments (the name, "/", means nothing),
    /// answered as `CREATE` is.
    pub(super) fn do_tmpfile(&self, req: &Request<'_>, out: &mut ReplyBuf) -> Result<(), i32> {
        let parent = req.ino()?;
        let args: abi::CreateIn = req.arg()?;
        let a = self
            .backend
            .tmpfile(&req.caller(), parent, args.mode, args.umask)
            .map_err(|e| self.fail("tmpfile", parent, e))?;
        self.push_entry(out, &a)?;
        push_open(out);
        Ok(())
    }

    pub(super) fn do_mknod(&self, req: &Request<'_>, out: &mut ReplyBuf) -> Result<(), i32> {
        let args: abi::MknodIn = req.arg()?;
        let name = req.name_at(core::mem::size_of::<abi::MknodIn>())?;
        let what = Make::Node {
            mode: args.mode,
            rdev: ext4_fuse_common::os::linux_decode_dev(args.rdev),
            umask: args.umask,
        };
        self.make(req, "mknod", name, what, out)
    }

    pub(super) fn do_mkdir(&self, req: &Request<'_>, out: &mut ReplyBuf) -> Result<(), i32> {
        let args: abi::MkdirIn = req.arg()?;
        let name = req.name_at(core::mem::size_of::<abi::MkdirIn>())?;
        let what = Make::Dir {
            mode: args.mode,
            umask: args.umask,
        };
        self.make(req, "mkdir", name, what, out)
    }

    /// `SYMLINK`: the new name, then the target, each NUL-terminated.
    pub(super) fn do_symlink(&self, req: &Request<'_>, out: &mut ReplyBuf) -> Result<(), i32> {
        let name = req.name_at(0)?;
        let target = req.name_at(name.len() + 1)?;
        self.make(req, "symlink", name, Make::Symlink { target }, out)
    }

    pub(super) fn do_link(&self, req: &Request<'_>, out: &mut ReplyBuf) -> Result<(), i32> {
        let args: abi::LinkIn = req.arg()?;
        let name = req.name_at(core::mem::size_of::<abi::LinkIn>())?;
        let ino = super::nodeid_to_ino(args.oldnodeid)?;
        self.make(req, "link", name, Make::Link { ino }, out)
    }

    fn make(
        &self,
        req: &Request<'_>,
        op: &str,
        name: &[u8],
        what: Make<'_>,
        out: &mut ReplyBuf,
    ) -> Result<(), i32> {
        let parent = req.ino()?;
        let a = self
            .backend
            .make(&req.caller(), parent, name, what)
            .map_err(|e| self.fail(op, parent, e))?;
        self.push_entry(out, &a)
    }

    pub(super) fn do_rmdir(&self, req: &Request<'_>) -> Result<(), i32> {
        let parent = req.ino()?;
        let name = req.name_at(0)?;
        self.backend
            .rmdir(&req.caller(), parent, name)
            .map_err(|e| self.fail("rmdir", parent, e))
    }

    /// `RENAME` and `RENAME2`: the arguments, then both names.
    pub(super) fn do_rename(&self, req: &Request<'_>) -> Result<(), i32> {
        let from_dir = req.ino()?;
        let (newdir, flags, at) = if req.header.opcode == abi::opcode::RENAME2 {
            let a: abi::Rename2In = req.arg()?;
            (a.newdir, a.flags, core::mem::size_of::<abi::Rename2In>())
        } else {
            let a: abi::RenameIn = req.arg()?;
            (a.newdir, 0, core::mem::size_of::<abi::RenameIn>())
        };
        let from = req.name_at(at)?;
        let to = req.name_at(at + from.len() + 1)?;
        let to_dir = super::nodeid_to_ino(newdir)?;
        self.backend
            .rename(&req.caller(), (from_dir, from), (to_dir, to), flags)
            .map_err(|e| self.fail("rename", from_dir, e))
    }

    /// `SETXATTR` (without `FUSE_SETXATTR_EXT`): size and flags, the
    /// name, the value.
    pub(super) fn do_setxattr(&self, req: &Request<'_>) -> Result<(), i32> {
        let ino = req.ino()?;
        let args: abi::SetxattrIn = req.arg()?;
        let at = core::mem::size_of::<abi::SetxattrIn>();
        let name = req.name_at(at)?;
        let start = at + name.len() + 1;
        let value = req
            .body
            .get(start..start + args.size as usize)
            .ok_or(errno::EINVAL)?;
        self.backend
            .setxattr(&req.caller(), ino, name, value, args.flags)
            .map_err(|e| self.fail("setxattr", ino, e))
    }

    pub(super) fn do_removexattr(&self, req: &Request<'_>) -> Result<(), i32> {
        let ino = req.ino()?;
        let name = req.name_at(0)?;
        self.backend
            .removexattr(ino, name)
            .map_err(|e| self.fail("removexattr", ino, e))
    }

    pub(super) fn do_fallocate(&self, req: &Request<'_>) -> Result<(), i32> {
        let ino = req.ino()?;
        let a: abi::FallocateIn = req.arg()?;
        // The kernel drops its cached mappings of the file around it.
        self.kernel_dropped(ino);
        self.backend
            .fallocate(
                &req.caller(),
                ino,
                (a.mode, a.offset, a.length),
                self.killpriv(),
            )
            .map_err(|e| self.fail("fallocate", ino, e))
    }

    pub(super) fn do_unlink(&self, req: &Request<'_>) -> Result<(), i32> {
        let parent = req.ino()?;
        let name = req.name_at(0)?;
        self.backend
            .unlink(&req.caller(), parent, name)
            .map_err(|e| self.fail("unlink", parent, e))
    }

    pub(super) fn do_setattr(&self, req: &Request<'_>, out: &mut ReplyBuf) -> Result<(), i32> {
        let ino = req.ino()?;
        let args: abi::SetattrIn = req.arg()?;
        let set = set_attr(&args);
        if set.size.is_some() {
            // The kernel drops its cached mappings on truncate.
            self.kernel_dropped(ino);
        }
        let kill = args.valid & fattr::KILL_SUIDGID != 0;
        let a = self
            .backend
            .setattr(&req.caller(), ino, &set, kill)
            .map_err(|e| self.fail("setattr", ino, e))?;
        let (secs, nsecs) = self.valid();
        out.push(
            abi::AttrOut {
                attr_valid: secs,
                attr_valid_nsec: nsecs,
                dummy: 0,
                attr: self.fuse_attr(&a),
            }
            .as_bytes(),
        );
        Ok(())
    }

    pub(super) fn do_write(&self, req: &Request<'_>, out: &mut ReplyBuf) -> Result<(), i32> {
        let ino = req.ino()?;
        let args: abi::WriteIn = req.arg()?;
        let data = req
            .body
            .get(core::mem::size_of::<abi::WriteIn>()..)
            .and_then(|d| d.get(..args.size as usize))
            .ok_or(errno::EINVAL)?;
        let n = self
            .backend
            .write(
                &req.caller(),
                ino,
                args.offset,
                data,
                args.write_flags & abi::write_flags::KILL_SUIDGID != 0,
            )
            .map_err(|e| self.fail("write", ino, e))?;
        out.push(
            abi::WriteOut {
                size: n as u32,
                padding: 0,
            }
            .as_bytes(),
        );
        Ok(())
    }

    pub(super) fn do_copy_file_range(
        &self,
        req: &Request<'_>,
        out: &mut ReplyBuf,
    ) -> Result<(), i32> {
        let from = req.ino()?;
        let args: abi::CopyFileRangeIn = req.arg()?;
        if args.flags != 0 {
            return Err(errno::EINVAL);
        }
        let to = super::nodeid_to_ino(args.nodeid_out)?;
        let n = self
            .backend
            .copy_file_range(
                &req.caller(),
                (from, args.off_in),
                (to, args.off_out),
                args.len,
                self.killpriv(),
            )
            .map_err(|e| self.fail("copy_file_range", to, e))?;
        // The reply's count is 32 bits; the kernel asks no more at once.
        out.push(
            abi::WriteOut {
                size: n.min(u64::from(u32::MAX)) as u32,
                padding: 0,
            }
            .as_bytes(),
        );
        Ok(())
    }

    /// `FSYNC`, `FSYNCDIR`, `SYNCFS`: one transaction covers the volume,
    /// so any of them commits everything.
    pub(super) fn do_fsync(&self, req: &Request<'_>) -> Result<(), i32> {
        let ino = req.ino().unwrap_or(InodeNo::ROOT);
        if req.header.opcode != abi::opcode::SYNCFS {
            let args: abi::FsyncIn = req.arg()?;
            let _datasync = args.fsync_flags & FSYNC_FDATASYNC != 0;
        }
        self.backend.sync().map_err(|e| self.fail("fsync", ino, e))
    }

    pub(super) fn do_release(&self, req: &Request<'_>) -> Result<(), i32> {
        if req.header.opcode == abi::opcode::RELEASE {
            self.backend.release(req.ino()?);
        }
        Ok(())
    }

    /// `FORGET` and `BATCH_FORGET` (no reply).
    pub(super) fn do_forget(&self, req: &Request<'_>) {
        if req.header.opcode == abi::opcode::FORGET {
            if let (Ok(ino), Ok(f)) = (req.ino(), req.arg::<abi::ForgetIn>()) {
                self.backend.forget(ino, f.nlookup);
            }
            return;
        }
        let Ok(b) = req.arg::<abi::BatchForgetIn>() else {
            return;
        };
        let head = core::mem::size_of::<abi::BatchForgetIn>();
        let one = core::mem::size_of::<abi::ForgetOne>();
        for i in 0..b.count as usize {
            let Some(rec) = req.body.get(head + i * one..head + (i + 1) * one) else {
                break;
            };
            let Ok((f, _)) = <abi::ForgetOne as zerocopy::FromBytes>::read_from_prefix(rec) else {
                break;
            };
            if let Ok(ino) = super::nodeid_to_ino(f.nodeid) {
                self.backend.forget(ino, f.nlookup);
            }
        }
    }
}

/// The open half of a `CREATE` or `TMPFILE` answer.
fn push_open(out: &mut ReplyBuf) {
    out.push(
        abi::OpenOut {
            fh: 0,
            open_flags: fopen::KEEP_CACHE,
            backing_id: 0,
        }
        .as_bytes(),
    );
}

/// What a `SETATTR` asks for, in the engine's terms. The kernel sends
/// `UTIME_NOW` as the `*_NOW` bits and leaves `UTIME_OMIT`ted times out.
pub fn set_attr(a: &abi::SetattrIn) -> SetAttr {
    let v = a.valid;
    let time = |set: u32, now: u32, sec: u64, nsec: u32| {
        if v & now != 0 {
            Some(SetTime::Now)
        } else if v & set != 0 {
            Some(SetTime::At(Timestamp {
                sec: sec as i64,
                nsec,
            }))
        } else {
            None
        }
    };
    SetAttr {
        mode: (v & fattr::MODE != 0).then_some((a.mode & 0o7777) as u16),
        uid: (v & fattr::UID != 0).then_some(a.uid),
        gid: (v & fattr::GID != 0).then_some(a.gid),
        size: (v & fattr::SIZE != 0).then_some(a.size),
        atime: time(fattr::ATIME, fattr::ATIME_NOW, a.atime, a.atimensec),
        mtime: time(fattr::MTIME, fattr::MTIME_NOW, a.mtime, a.mtimensec),
        ctime: (v & fattr::CTIME != 0).then_some(Timestamp {
            sec: a.ctime as i64,
            nsec: a.ctimensec,
        }),
    }
}
