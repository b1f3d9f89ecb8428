//! The FUSE filesystem: `fuser::Filesystem` over an engine `Volume`, using
//! only what FreeBSD's fusefs speaks (plain READDIR, no READDIRPLUS, no
//! passthrough, no notifications, LSEEK only from protocol 7.24 on).
//!
//! Node ids are ext4 inode numbers ([`ext4_fuse_common::nodes`]); there is
//! no node table: the volume is read-only, so an inode number stays valid,
//! and FORGET has nothing to release. What to answer (permissions, open
//! flags, xattr namespaces and sizes, cache timeouts, errnos) is the
//! engine's request policy, shared with `ext4-fuse`.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ext4_engine::policy::{self, Caller, ShownIds, XattrReply};
use ext4_engine::{Attr, FileType as Kind, Timestamp};
use ext4_engine::{BlockDevice, Error, InodeNo, Volume, Whence};
use ext4_fuse_common::{log, nodes};
use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};

use crate::sys;

/// Longest single read answered; larger requests (which no kernel sends
/// within what was negotiated) get a short read rather than a huge buffer.
pub const MAX_READ: u32 = 16 << 20;

thread_local! {
    /// Each worker's read buffer, kept between READs: a fresh zeroed
    /// vector per request cost an extra pass over every byte read. At most
    /// MAX_READ per worker thread.
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Directory bytes gathered per READDIR (more than any kernel's buffer).
const READDIR_BATCH: usize = 64 << 10;

/// First protocol minor with FUSE_LSEEK.
const LSEEK_MINOR: u32 = 24;

/// What the frontend adds to the engine's answers.
#[derive(Clone, Debug, Default)]
pub struct FsConfig {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Prefix for absolute symlink targets (`push_symlinks_in` where the
    /// kernel does not do it itself).
    pub symlink_prefix: Option<Vec<u8>>,
}

pub struct Ext4Fs<D: BlockDevice + 'static> {
    vol: Volume<D>,
    cfg: FsConfig,
    /// How long the kernel may cache entries and attributes.
    ttl: Duration,
    /// The protocol minor both sides agreed on (0 before INIT).
    minor: AtomicU32,
    /// The kernel offered FUSE_NO_OPEN_SUPPORT / FUSE_NO_OPENDIR_SUPPORT
    /// (Linux, and FreeBSD's fusefs from 7.29 on): an ENOSYS answer to
    /// OPEN / OPENDIR makes it stop sending them (and their RELEASEs),
    /// keeping its caches as with FOPEN_KEEP_CACHE / FOPEN_CACHE_DIR.
    no_open: AtomicBool,
    no_opendir: AtomicBool,
}

/// Our highest protocol minor (what `fuser` answers INIT with).
pub const SERVER_MINOR: u32 = 40;

impl<D: BlockDevice + 'static> Ext4Fs<D> {
    pub fn new(vol: Volume<D>, cfg: FsConfig) -> Self {
        Ext4Fs {
            ttl: policy::timeouts(vol.read_only()).attr,
            vol,
            cfg,
            minor: AtomicU32::new(0),
            no_open: AtomicBool::new(false),
            no_opendir: AtomicBool::new(false),
        }
    }

    pub fn volume(&self) -> &Volume<D> {
        &self.vol
    }

    /// The negotiated protocol minor.
    pub fn minor(&self) -> u32 {
        self.minor.load(Ordering::Relaxed)
    }

    /// FUSE node id -> ext4 inode number.
    fn ino(&self, node: INodeNo) -> Result<InodeNo, Errno> {
        nodes::nodeid_to_ino(node.0).map_err(|e| Errno::from_i32(sys::from_linux_errno(e)))
    }

    /// Turn an engine error into the reply errno, logging damage.
    fn fail(&self, what: &str, ino: InodeNo, e: &Error) -> Errno {
        self.fail_as(policy::Request::Other, what, ino, e)
    }

    fn fail_as(&self, r: policy::Request, what: &str, ino: InodeNo, e: &Error) -> Errno {
        log::failure(what, ino, e);
        Errno::from_i32(sys::host_errno(r, e))
    }

    /// Log damage the engine worked around while answering.
    fn drain(&self) {
        log::skipped(self.vol.take_reports());
    }

    /// The owner and group callers are shown (`uid=`, `gid=`).
    fn shown(&self) -> ShownIds {
        ShownIds {
            uid: self.cfg.uid,
            gid: self.cfg.gid,
        }
    }

    fn file_attr(&self, a: &Attr, node: u64) -> FileAttr {
        let a = &self.shown().apply(*a);
        let perm = (a.mode & 0o7777) as u16;
        let rdev = match a.kind {
            Kind::CharDevice | Kind::BlockDevice => sys::fuse_rdev(a.rdev_major, a.rdev_minor),
            _ => 0,
        };
        FileAttr {
            ino: INodeNo(node),
            size: a.size,
            blocks: a.blocks,
            atime: system_time(a.atime),
            mtime: system_time(a.mtime),
            ctime: system_time(a.ctime),
            crtime: a.crtime.map(system_time).unwrap_or(UNIX_EPOCH),
            kind: file_type(a.kind),
            perm,
            nlink: a.nlink,
            uid: a.uid,
            gid: a.gid,
            rdev,
            blksize: a.blksize,
            flags: 0,
        }
    }

    fn lookup_inner(&self, parent: INodeNo, name: &OsStr) -> Result<(FileAttr, u32), Errno> {
        let dir = self.ino(parent)?;
        let a = self
            .vol
            .lookup(dir, name.as_bytes())
            .map_err(|e| self.fail("lookup", dir, &e))?;
        // The root is known to the kernel by FUSE's id 1 (and `fuser`
        // reports a node's id as its st_ino in an entry reply).
        let node = nodes::ino_to_nodeid(a.ino).map_err(|e| self.fail("lookup", dir, &e))?;
        Ok((self.file_attr(&a, node), a.generation))
    }

    /// Read into `buf` (grown to the request, never shrunk); the count.
    fn read_inner(
        &self,
        ino: InodeNo,
        offset: u64,
        size: u32,
        buf: &mut Vec<u8>,
    ) -> Result<usize, Errno> {
        let n = size.min(MAX_READ) as usize;
        if buf.len() < n {
            buf.resize(n, 0);
        }
        self.vol
            .read(ino, offset, &mut buf[..n])
            .map_err(|e| self.fail_as(policy::Request::Read, "read", ino, &e))
    }

    fn readlink_inner(&self, ino: InodeNo) -> Result<Vec<u8>, Errno> {
        let mut t = self
            .vol
            .readlink(ino)
            .map_err(|e| self.fail("readlink", ino, &e))?;
        if let Some(p) = &self.cfg.symlink_prefix {
            if t.first() == Some(&b'/') {
                let mut full = p.clone();
                full.extend_from_slice(&t);
                t = full;
            }
        }
        Ok(t)
    }
}

fn system_time(t: Timestamp) -> SystemTime {
    let nsec = Duration::from_nanos(u64::from(t.nsec.min(999_999_999)));
    if t.sec >= 0 {
        UNIX_EPOCH + Duration::from_secs(t.sec as u64) + nsec
    } else {
        UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs()) + nsec
    }
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::Regular => FileType::RegularFile,
        Kind::Directory => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::CharDevice => FileType::CharDevice,
        Kind::BlockDevice => FileType::BlockDevice,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
    }
}

/// Answer a getxattr/listxattr by the policy's size protocol.
fn reply_xattr(reply: ReplyXattr, size: u32, data: &[u8]) {
    match policy::xattr_reply(data, size) {
        Ok(XattrReply::Size(n)) => reply.size(n),
        Ok(XattrReply::Data(d)) => reply.data(d),
        Err(e) => reply.error(Errno::from_i32(sys::host_errno(policy::Request::Other, &e))),
    }
}

/// The caller of a request, as FUSE describes it (no supplementary groups).
fn caller(req: &Request) -> Caller<'static> {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        groups: &[],
    }
}

impl<D: BlockDevice + 'static> Filesystem for Ext4Fs<D> {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let v = config.kernel_abi();
        let minor = v.1.min(SERVER_MINOR);
        self.minor.store(minor, Ordering::Relaxed);
        let offered = config.capabilities();
        // The kernel enforces POSIX ACLs too where it can (Linux); FreeBSD
        // never offers it, and checks mode bits (default_permissions).
        if offered.contains(InitFlags::FUSE_POSIX_ACL) {
            let _ = config.add_capabilities(InitFlags::FUSE_POSIX_ACL);
        }
        self.no_open.store(
            offered.contains(InitFlags::FUSE_NO_OPEN_SUPPORT),
            Ordering::Relaxed,
        );
        self.no_opendir.store(
            offered.contains(InitFlags::FUSE_NO_OPENDIR_SUPPORT),
            Ordering::Relaxed,
        );
        // No capability is added to fuser's defaults (async read, big
        // writes, max pages), all of which FreeBSD either knows or never
        // offers; the reply only ever echoes flags the kernel offered.
        log::debug(format_args!(
            "INIT: kernel protocol {}.{}, capabilities {:?}; using minor {minor}",
            v.0,
            v.1,
            config.capabilities()
        ));
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let r = self.lookup_inner(parent, name);
        self.drain();
        match r {
            Ok((attr, generation)) => {
                reply.entry(&self.ttl, &attr, Generation(u64::from(generation)))
            }
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, node: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let ino = match self.ino(node) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        let r = self.vol.getattr(ino);
        self.drain();
        match r {
            // st_ino is the ext4 inode number, the root's included.
            Ok(a) => reply.attr(&self.ttl, &self.file_attr(&a, u64::from(a.ino.0))),
            Err(e) => reply.error(self.fail("getattr", ino, &e)),
        }
    }

    fn readlink(&self, _req: &Request, node: INodeNo, reply: ReplyData) {
        let r = self.ino(node).and_then(|ino| self.readlink_inner(ino));
        self.drain();
        match r {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, node: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        // The kernel sends OPEN for regular files only.
        if let Err(e) = policy::check_open(flags.0 as u32, Kind::Regular, self.vol.read_only()) {
            return reply.error(Errno::from_i32(sys::host_errno(policy::Request::Other, &e)));
        }
        let _ = node;
        // A read-only mount needs nothing per open file: where the kernel
        // can do without OPEN, one ENOSYS saves two requests per open()
        // from now on (OPEN and RELEASE). Write opens were refused above,
        // and later ones are the read-only mount's to refuse.
        if self.no_open.load(Ordering::Relaxed) {
            return reply.error(Errno::ENOSYS);
        }
        // Contents never change under us: let the kernel keep its cache.
        reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
    }

    fn read(
        &self,
        _req: &Request,
        node: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        READ_BUF.with_borrow_mut(|buf| {
            let r = self
                .ino(node)
                .and_then(|ino| self.read_inner(ino, offset, size, buf));
            self.drain();
            match r {
                Ok(n) => reply.data(&buf[..n]),
                Err(e) => reply.error(e),
            }
        })
    }

    fn flush(
        &self,
        _req: &Request,
        _node: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing is ever dirty. ENOSYS makes Linux and FreeBSD stop
        // sending FLUSH, a synchronous round trip in every close().
        reply.error(Errno::ENOSYS);
    }

    fn fsync(
        &self,
        _req: &Request,
        _node: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn opendir(&self, _req: &Request, node: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if let Err(e) = policy::check_open(flags.0 as u32, Kind::Directory, self.vol.read_only()) {
            return reply.error(Errno::from_i32(sys::host_errno(policy::Request::Other, &e)));
        }
        let r = self.ino(node).and_then(|ino| {
            self.vol
                .getattr(ino)
                .map_err(|e| self.fail("opendir", ino, &e))
        });
        match r {
            Ok(a) if a.kind == Kind::Directory => {
                if self.no_opendir.load(Ordering::Relaxed) {
                    reply.error(Errno::ENOSYS)
                } else {
                    reply.opened(FileHandle(0), FopenFlags::empty())
                }
            }
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        node: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let ino = match self.ino(node) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        // Collect a reply's worth first: the engine calls back while it
        // holds a directory block, so no other engine call is made from
        // inside. The offset sent with each entry is the engine's cookie
        // for the entry after it, so a listing resumes exactly where the
        // kernel's buffer filled up.
        // Names go end to end in one buffer; each entry keeps its length.
        let mut batch: Vec<(InodeNo, usize, Option<Kind>, u64)> = Vec::new();
        let mut names: Vec<u8> = Vec::new();
        let mut bytes = 0usize;
        let r = self.vol.readdir(ino, offset, &mut |e| {
            if bytes >= READDIR_BATCH {
                return false;
            }
            bytes += (24 + e.name.len()).next_multiple_of(8);
            names.extend_from_slice(e.name);
            batch.push((e.ino, e.name.len(), e.kind, e.next));
            true
        });
        self.drain();
        if let Err(e) = r {
            return reply.error(self.fail("readdir", ino, &e));
        }
        let mut rest = &names[..];
        for (child, len, kind, next) in batch {
            let (name, tail) = rest.split_at(len);
            rest = tail;
            let kind = match kind {
                Some(k) => k,
                // No `filetype` feature: ask the inode (a damaged one is
                // still listed; looking it up reports the damage).
                None => self
                    .vol
                    .getattr(child)
                    .map(|a| a.kind)
                    .unwrap_or(Kind::Regular),
            };
            let name = OsStr::from_bytes(name);
            if reply.add(INodeNo(u64::from(child.0)), next, file_type(kind), name) {
                break;
            }
        }
        self.drain();
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _node: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _node: INodeNo, reply: ReplyStatfs) {
        let s = self.vol.statfs();
        // FreeBSD takes f_bsize from frsize, Linux takes both: the same value.
        reply.statfs(
            s.blocks,
            s.blocks_free,
            s.blocks_available,
            s.inodes,
            s.inodes_free,
            s.block_size,
            s.name_max,
            s.block_size,
        );
    }

    fn getxattr(&self, req: &Request, node: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let ino = match self.ino(node) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        let r = policy::check_getxattr(name.as_bytes(), &caller(req))
            .and_then(|()| self.vol.getxattr(ino, name.as_bytes()));
        self.drain();
        match r {
            Ok(v) => reply_xattr(reply, size, &v),
            Err(e) => reply.error(self.fail("getxattr", ino, &e)),
        }
    }

    fn listxattr(&self, req: &Request, node: INodeNo, size: u32, reply: ReplyXattr) {
        let ino = match self.ino(node) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        let r = self.vol.listxattr(ino);
        self.drain();
        match r {
            Ok(names) => reply_xattr(reply, size, &policy::xattr_list(&names, &caller(req))),
            Err(e) => reply.error(self.fail("listxattr", ino, &e)),
        }
    }

    fn access(&self, req: &Request, node: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        // Only asked by a kernel that does not check itself (the mount
        // always asks it to); the groups known are the caller's primary.
        let ino = match self.ino(node) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        match self
            .vol
            .access(ino, &caller(req), mask.bits() as u32, self.shown())
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("access", ino, &e)),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        node: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        // A kernel below 7.24 has no FUSE_LSEEK; never answer outside the
        // protocol both sides agreed on.
        if self.minor() < LSEEK_MINOR {
            return reply.error(Errno::ENOSYS);
        }
        let ino = match self.ino(node) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        let Ok(off) = u64::try_from(offset) else {
            return reply.error(Errno::ENXIO);
        };
        let w = match whence {
            libc::SEEK_DATA => Whence::Data,
            libc::SEEK_HOLE => Whence::Hole,
            _ => return reply.error(Errno::EINVAL),
        };
        let r = self.vol.seek(ino, off, w);
        self.drain();
        match r {
            Ok(o) => match i64::try_from(o) {
                Ok(o) => reply.offset(o),
                Err(_) => reply.error(Errno::EOVERFLOW),
            },
            Err(e) => reply.error(self.fail("lseek", ino, &e)),
        }
    }
}
