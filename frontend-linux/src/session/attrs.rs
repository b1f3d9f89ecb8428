//! Handlers of the requests about attributes: `GETATTR`, `STATX`,
//! `STATFS`, `ACCESS`, and `IOCTL`'s inode flags (`lsattr`, `chattr`).

use zerocopy::IntoBytes;

use super::{ReplyBuf, Request, Session};
use crate::abi;
use crate::backend::Backend;
use ext4_engine::{chattr, errno, policy, Attr};

impl<B: Backend> Session<B> {
    pub(super) fn fuse_attr(&self, a: &Attr) -> abi::Attr {
        abi::Attr {
            ino: u64::from(a.ino.0),
            size: a.size,
            blocks: a.blocks,
            atime: a.atime.sec as u64,
            mtime: a.mtime.sec as u64,
            ctime: a.ctime.sec as u64,
            atimensec: a.atime.nsec,
            mtimensec: a.mtime.nsec,
            ctimensec: a.ctime.nsec,
            mode: a.mode,
            nlink: a.nlink,
            uid: self.config.uid.unwrap_or(a.uid),
            gid: self.config.gid.unwrap_or(a.gid),
            rdev: abi::encode_dev(a.rdev_major, a.rdev_minor),
            blksize: a.blksize,
            flags: self.attr_flags(a),
        }
    }

    pub(super) fn do_getattr(&self, req: &Request<'_>, out: &mut ReplyBuf) -> Result<(), i32> {
        let ino = req.ino()?;
        let a = self
            .backend
            .getattr(ino)
            .map_err(|e| self.fail("getattr", ino, e))?;
        let (secs, nsecs) = self.valid();
        let reply = abi::AttrOut {
            attr_valid: secs,
            attr_valid_nsec: nsecs,
            dummy: 0,
            attr: self.fuse_attr(&a),
        };
        out.push(reply.as_bytes());
        Ok(())
    }

    pub(super) fn do_statx(&self, req: &Request<'_>, out: &mut ReplyBuf) -> Result<(), i32> {
        let ino = req.ino()?;
        let _args: abi::StatxIn = req.arg()?;
        let a = self
            .backend
            .getattr(ino)
            .map_err(|e| self.fail("statx", ino, e))?;
        let (secs, nsecs) = self.valid();
        let t = |t: ext4_engine::Timestamp| abi::SxTime {
            tv_sec: t.sec,
            tv_nsec: t.nsec,
            reserved: 0,
        };
        let mut mask = abi::statx::BASIC_STATS;
        let mut btime = abi::SxTime::default();
        if let Some(c) = a.crtime {
            mask |= abi::statx::BTIME;
            btime = t(c);
        }
        let mut stat = abi::Statx {
            mask,
            blksize: a.blksize,
            attributes: statx_attributes(a.flags),
            nlink: a.nlink,
            uid: self.config.uid.unwrap_or(a.uid),
            gid: self.config.gid.unwrap_or(a.gid),
            mode: a.mode as u16,
            ino: u64::from(a.ino.0),
            size: a.size,
            blocks: a.blocks,
            attributes_mask: STATX_ATTRIBUTES_MASK,
            atime: t(a.atime),
            btime,
            ctime: t(a.ctime),
            mtime: t(a.mtime),
            rdev_major: a.rdev_major,
            rdev_minor: a.rdev_minor,
            ..Default::default()
        };
        stat.spare0 = 0;
        let reply = abi::StatxOut {
            attr_valid: secs,
            attr_valid_nsec: nsecs,
            flags: 0,
            spare: [0; 2],
            stat,
        };
        out.push(reply.as_bytes());
        Ok(())
    }

    pub(super) fn do_statfs(&self, out: &mut ReplyBuf) -> Result<(), i32> {
        let s = self.backend.statfs();
        let k = abi::Kstatfs {
            blocks: s.blocks,
            bfree: s.blocks_free,
            bavail: s.blocks_available,
            files: s.inodes,
            ffree: s.inodes_free,
            bsize: s.block_size,
            namelen: s.name_max,
            frsize: s.block_size,
            ..Default::default()
        };
        out.push(k.as_bytes());
        Ok(())
    }

    /// Only asked by a kernel that does not check permissions itself (the
    /// mount always asks it to, with `default_permissions`): the engine's
    /// policy, knowing only the caller's primary group.
    pub(super) fn do_access(&self, req: &Request<'_>) -> Result<(), i32> {
        let ino = req.ino()?;
        let args: abi::AccessIn = req.arg()?;
        let caller = policy::Caller {
            uid: req.header.uid,
            gid: req.header.gid,
            groups: &[],
        };
        self.backend
            .access(ino, &caller, args.mask, self.shown())
            .map_err(|e| self.fail("access", ino, e))
    }

    /// `IOCTL`: `FS_IOC_GETFLAGS` and `FS_IOC_SETFLAGS` (what the kernel
    /// sends for `lsattr` and `chattr`, with a 4-byte argument whatever
    /// the command's declared width); any other command is `ENOTTY`, as
    /// the kernel's ext4 answers one it does not know.
    pub(super) fn do_ioctl(&self, req: &Request<'_>, out: &mut ReplyBuf) -> Result<(), i32> {
        use abi::ioctl::*;
        let ino = req.ino()?;
        let args: abi::IoctlIn = req.arg()?;
        let reply = |out: &mut ReplyBuf, data: &[u8]| {
            out.push(abi::IoctlOut::default().as_bytes());
            out.push(data);
        };
        match args.cmd {
            FS_IOC_GETFLAGS | FS_IOC32_GETFLAGS => {
                let f = self
                    .backend
                    .get_flags(ino)
                    .map_err(|e| self.fail("getflags", ino, e))?;
                reply(out, &f.to_le_bytes());
                Ok(())
            }
            FS_IOC_SETFLAGS | FS_IOC32_SETFLAGS => {
                let at = core::mem::size_of::<abi::IoctlIn>();
                let v = req.body.get(at..at + 4).ok_or(errno::EINVAL)?;
                let f = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
                self.backend
                    .set_flags(ino, f)
                    .map_err(|e| self.fail("setflags", ino, e))?;
                reply(out, &[]);
                Ok(())
            }
            FS_IOC_FSGETXATTR => {
                let f = self
                    .backend
                    .get_flags(ino)
                    .map_err(|e| self.fail("fsgetxattr", ino, e))?;
                let x = abi::Fsxattr {
                    xflags: chattr::xflags_of(f),
                    ..Default::default()
                };
                reply(out, x.as_bytes());
                Ok(())
            }
            FS_IOC_FSSETXATTR => {
                let at = core::mem::size_of::<abi::IoctlIn>();
                let (x, _) = req
                    .body
                    .get(at..)
                    .and_then(|b| <abi::Fsxattr as zerocopy::FromBytes>::read_from_prefix(b).ok())
                    .ok_or(errno::EINVAL)?;
                let r = self.backend.get_flags(ino).and_then(|old| {
                    if x.projid != 0 {
                        return Err(ext4_engine::Error::Unsupported {
                            what: "project ids",
                        });
                    }
                    self.backend
                        .set_flags(ino, chattr::flags_with_xflags(old, x.xflags))
                });
                r.map_err(|e| self.fail("fssetxattr", ino, e))?;
                reply(out, &[]);
                Ok(())
            }
            _ => Err(ENOTTY),
        }
    }
}

/// `statx` attribute bits the kernel's ext4 reports, from ext4 inode flags.
fn statx_attributes(flags: u32) -> u64 {
    const MAP: [(u32, u64); 6] = [
        (0x4, abi::statx::ATTR_COMPRESSED),
        (0x10, abi::statx::ATTR_IMMUTABLE),
        (0x20, abi::statx::ATTR_APPEND),
        (0x40, abi::statx::ATTR_NODUMP),
        (0x800, abi::statx::ATTR_ENCRYPTED),
        (0x100000, abi::statx::ATTR_VERITY),
    ];
    MAP.iter()
        .filter(|(fl, _)| flags & fl != 0)
        .fold(0, |acc, (_, bit)| acc | bit)
}

/// The attribute bits ext4 supports (`stx_attributes_mask`).
const STATX_ATTRIBUTES_MASK: u64 = abi::statx::ATTR_COMPRESSED
    | abi::statx::ATTR_IMMUTABLE
    | abi::statx::ATTR_APPEND
    | abi::statx::ATTR_NODUMP
    | abi::statx::ATTR_ENCRYPTED
    | abi::statx::ATTR_VERITY;

/// "Inappropriate ioctl for device".
const ENOTTY: i32 = 25;
