//! The FUSE filesystem: `fuser::Filesystem` over an engine `Volume`, using
//! only what FreeBSD's fusefs speaks (plain READDIR, no READDIRPLUS, no
//! passthrough, LSEEK only from protocol 7.24 on; of the notifications
//! only `FUSE_NOTIFY_INVAL_INODE`, which FreeBSD's fusefs has since 7.23).
//!
//! Node ids are ext4 inode numbers ([`ext4_fuse_common::nodes`]); the
//! kernel's references to them (lookups, open files) are counted by
//! [`ext4_fuse_common::fs::Fs`], which also does every write request,
//! shared with `ext4-fuse`. What to answer (permissions, open flags, xattr
//! namespaces and sizes, cache timeouts, errnos) is the engine's request
//! policy.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ext4_engine::policy::{self, Caller, ShownIds, XattrReply};
use ext4_engine::{Attr, FileType as Kind, SetAttr, SetTime, Timestamp};
use ext4_engine::{BlockDevice, Error, InodeNo, Volume, Whence};
use ext4_fuse_common::fs::{kills_privileges, Fs};
use ext4_fuse_common::{log, nodes};
use fuser::{
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType,
    Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, Notifier,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
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
    fs: Fs<D>,
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
    /// Where invalidations go once the session exists
    /// ([`Ext4Fs::invalidations`]); before (and in the protocol test)
    /// none is sent.
    invalidations: Invalidations,
}

/// Most batches of invalidations waiting for their thread; past that
/// the attribute timeout covers them.
const INVALIDATIONS_QUEUED: usize = 64;

/// `FUSE_NOTIFY_INVAL_INODE` for attributes the server changed on its own.
/// Attributes only (offset -1): no page of the file is touched.
///
/// On Linux they go out before the reply, from the request's own thread,
/// as ext4-fuse sends them: the kernel takes no lock there that the
/// requester holds, and a program sees the new attributes as soon as its
/// call returns. On FreeBSD they go from a thread of their own: its
/// fusefs locks the vnode to invalidate it, and the requester may still
/// hold that lock while it waits for the answer, which fuser's one request
/// loop (one thread there) could then never give.
#[derive(Clone, Default)]
pub struct Invalidations(Arc<OnceLock<Sink>>);

enum Sink {
    /// Linux: sent at once.
    Now(Notifier),
    /// FreeBSD: queued for the invalidation thread.
    Queued(SyncSender<Vec<InodeNo>>),
}

fn invalidate(notifier: &Notifier, ino: InodeNo) {
    let Ok(node) = nodes::ino_to_nodeid(ino) else {
        return;
    };
    if let Err(e) = notifier.inval_inode(INodeNo(node), -1, 0) {
        log::debug(format_args!("invalidating inode {ino}: {e}"));
    }
}

impl Invalidations {
    /// Start sending through the session's notifier.
    pub fn start(&self, notifier: Notifier) -> std::io::Result<()> {
        if cfg!(target_os = "linux") {
            let _ = self.0.set(Sink::Now(notifier));
            return Ok(());
        }
        let (tx, rx) = sync_channel::<Vec<InodeNo>>(INVALIDATIONS_QUEUED);
        std::thread::Builder::new()
            .name("invalidate".into())
            .spawn(move || {
                for ino in rx.into_iter().flatten() {
                    invalidate(&notifier, ino);
                }
            })?;
        let _ = self.0.set(Sink::Queued(tx));
        Ok(())
    }

    fn send(&self, inos: Vec<InodeNo>) {
        match (inos.is_empty(), self.0.get()) {
            (false, Some(Sink::Now(n))) => inos.into_iter().for_each(|i| invalidate(n, i)),
            (false, Some(Sink::Queued(tx))) => {
                let _ = tx.try_send(inos);
            }
            _ => {}
        }
    }
}

/// Our highest protocol minor (what `fuser` answers INIT with).
pub const SERVER_MINOR: u32 = 40;

impl<D: BlockDevice + 'static> Ext4Fs<D> {
    pub fn new(fs: Fs<D>, cfg: FsConfig) -> Self {
        Ext4Fs {
            ttl: policy::timeouts(fs.read_only()).attr,
            fs,
            cfg,
            minor: AtomicU32::new(0),
            no_open: AtomicBool::new(false),
            no_opendir: AtomicBool::new(false),
            invalidations: Invalidations::default(),
        }
    }

    /// The handle to start the invalidations with, once the session
    /// (which the filesystem moves into) gives its notifier
    /// ([`Invalidations::start`]).
    pub fn invalidations(&self) -> Invalidations {
        self.invalidations.clone()
    }

    /// Before the reply: tell the kernel which inodes' cached attributes
    /// the request made stale behind its back (set-ID bits the server
    /// dropped, [`Fs::take_stale`]), as ext4-fuse does ([`Invalidations`]).
    fn invalidate_stale(&self) {
        self.invalidations.send(self.fs.take_stale());
    }

    pub fn volume(&self) -> &Volume<D> {
        self.fs.volume()
    }

    /// The volume with what the mount keeps beside it.
    pub fn served(&self) -> &Fs<D> {
        &self.fs
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
        log::skipped(self.volume().take_reports());
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
            .volume()
            .lookup(dir, name.as_bytes())
            .map_err(|e| self.fail("lookup", dir, &e))?;
        // The root is known to the kernel by FUSE's id 1 (and `fuser`
        // reports a node's id as its st_ino in an entry reply).
        let node = nodes::ino_to_nodeid(a.ino).map_err(|e| self.fail("lookup", dir, &e))?;
        self.fs.entry(&a);
        Ok((self.file_attr(&a, node), a.generation))
    }

    /// An entry reply for a node just made (`a`), which the kernel holds.
    fn reply_entry(&self, reply: ReplyEntry, what: &str, dir: InodeNo, r: Result<Attr, Error>) {
        match r.and_then(|a| nodes::ino_to_nodeid(a.ino).map(|n| (a, n))) {
            Ok((a, node)) => reply.entry(
                &self.ttl,
                &self.file_attr(&a, node),
                Generation(u64::from(a.generation)),
            ),
            Err(e) => reply.error(self.fail(what, dir, &e)),
        }
    }

    /// Answer a request that changes nothing it returns.
    fn reply_done(&self, reply: ReplyEmpty, what: &str, ino: InodeNo, r: Result<(), Error>) {
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail(what, ino, &e)),
        }
    }

    /// A write request the engine does not serve yet: `EROFS` on a
    /// read-only mount, else `EOPNOTSUPP`.
    fn not_yet(&self) -> Errno {
        if self.fs.read_only() {
            Errno::EROFS
        } else {
            Errno::EOPNOTSUPP
        }
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
        self.volume()
            .read(ino, offset, &mut buf[..n])
            .map_err(|e| self.fail_as(policy::Request::Read, "read", ino, &e))
    }

    fn readlink_inner(&self, ino: InodeNo) -> Result<Vec<u8>, Errno> {
        let mut t = self
            .volume()
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

/// A FUSE time to set, in the engine's terms.
fn set_time(t: TimeOrNow) -> SetTime {
    match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(t) => SetTime::At(timestamp(t)),
    }
}

fn timestamp(t: SystemTime) -> Timestamp {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timestamp {
            sec: d.as_secs() as i64,
            nsec: d.subsec_nanos(),
        },
        Err(e) => {
            // Before 1970: whole seconds down, nanoseconds up.
            let d = e.duration();
            let (mut sec, mut nsec) = (-(d.as_secs() as i64), d.subsec_nanos());
            if nsec > 0 {
                sec -= 1;
                nsec = 1_000_000_000 - nsec;
            }
            Timestamp { sec, nsec }
        }
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
        // The umask comes with each request and the engine applies it,
        // unless the directory has a default ACL (as the kernel's ext4).
        if offered.contains(InitFlags::FUSE_DONT_MASK) {
            let _ = config.add_capabilities(InitFlags::FUSE_DONT_MASK);
        }
        self.no_open.store(
            offered.contains(InitFlags::FUSE_NO_OPEN_SUPPORT),
            Ordering::Relaxed,
        );
        self.no_opendir.store(
            offered.contains(InitFlags::FUSE_NO_OPENDIR_SUPPORT),
            Ordering::Relaxed,
        );
        // No FUSE_HANDLE_KILLPRIV_V2 (ext4-fuse asks for it): fuser hands
        // setattr no FATTR_KILL_SUIDGID, and FreeBSD's fusefs (7.23-7.29)
        // has none. The kernel drops set-ID bits and capabilities itself
        // then (asking GETXATTR security.capability before writes), and
        // writes, truncations, chown, fallocate and copy_file_range drop
        // them here too, by the shared rule (Linux's FUSE keeps the
        // set-group-ID bit of a file its writer's group may not execute,
        // where the kernel's ext4 drops it for a writer outside the
        // group).
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
        let r = self.volume().getattr(ino);
        self.drain();
        match r {
            // st_ino is the ext4 inode number, the root's included.
            Ok(a) => reply.attr(&self.ttl, &self.file_attr(&a, u64::from(a.ino.0))),
            Err(e) => reply.error(self.fail("getattr", ino, &e)),
        }
    }

    fn readlink(&self, _req: &Request, node: INodeNo, reply: ReplyData) {
        let r = self.ino(node).and_then(|ino| {
            let t = self.readlink_inner(ino)?;
            self.fs.accessed(ino);
            Ok(t)
        });
        self.drain();
        match r {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, node: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let flags = sys::linux_open_flags(flags.0);
        // The kernel sends OPEN for regular files only.
        if self.fs.read_only() {
            if let Err(e) = policy::check_open(flags, Kind::Regular, 0, true) {
                return reply.error(Errno::from_i32(sys::host_errno(policy::Request::Other, &e)));
            }
            // A read-only mount needs nothing per open file: where the
            // kernel can do without OPEN, one ENOSYS saves two requests
            // per open() from now on (OPEN and RELEASE).
            if self.no_open.load(Ordering::Relaxed) {
                return reply.error(Errno::ENOSYS);
            }
        }
        let ino = match self.ino(node) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        // Every change goes through this mount: the kernel's cache of a
        // file stays valid across opens.
        match self.fs.open(ino, flags) {
            Ok(o) if o.keep_cache => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(self.fail("open", ino, &e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        node: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        READ_BUF.with_borrow_mut(|buf| {
            let r = self.ino(node).and_then(|ino| {
                let n = self.read_inner(ino, offset, size, buf)?;
                if !sys::no_atime(flags.0) {
                    self.fs.accessed(ino);
                }
                Ok(n)
            });
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
        // Nothing waits in the server for a close(): writes reach the
        // engine as they come. ENOSYS makes Linux and FreeBSD stop sending
        // FLUSH, a synchronous round trip in every close().
        reply.error(Errno::ENOSYS);
    }

    fn fsync(
        &self,
        _req: &Request,
        node: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // One transaction covers the volume: any sync commits everything.
        self.reply_done(reply, "fsync", InodeNo(node.0 as u32), self.fs.sync());
    }

    fn opendir(&self, _req: &Request, node: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let flags = sys::linux_open_flags(flags.0);
        if let Err(e) = policy::check_open(flags, Kind::Directory, 0, self.fs.read_only()) {
            return reply.error(Errno::from_i32(sys::host_errno(policy::Request::Other, &e)));
        }
        let r = self.ino(node).and_then(|ino| {
            self.volume()
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
        let r = self.volume().readdir(ino, offset, &mut |e| {
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
        self.fs.accessed(ino);
        let mut rest = &names[..];
        for (child, len, kind, next) in batch {
            let (name, tail) = rest.split_at(len);
            rest = tail;
            let kind = match kind {
                Some(k) => k,
                // No `filetype` feature: ask the inode (a damaged one is
                // still listed; looking it up reports the damage).
                None => self
                    .volume()
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
        node: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.reply_done(reply, "fsyncdir", InodeNo(node.0 as u32), self.fs.sync());
    }

    fn statfs(&self, _req: &Request, _node: INodeNo, reply: ReplyStatfs) {
        let s = self.fs.statfs();
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
            .and_then(|()| self.volume().getxattr(ino, name.as_bytes()));
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
        let r = self.volume().listxattr(ino);
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
            .volume()
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
        let r = self.volume().seek(ino, off, w);
        self.drain();
        match r {
            Ok(o) => match i64::try_from(o) {
                Ok(o) => reply.offset(o),
                Err(_) => reply.error(Errno::EOVERFLOW),
            },
            Err(e) => reply.error(self.fail("lseek", ino, &e)),
        }
    }

    fn destroy(&mut self) {
        // The unmount: leave the image clean.
        if let Err(e) = self.fs.close() {
            log::error(format_args!(
                "closing the filesystem: {e}; run e2fsck on it before the next mount"
            ));
        }
    }

    fn forget(&self, _req: &Request, node: INodeNo, nlookup: u64) {
        if let Ok(ino) = self.ino(node) {
            self.fs.forget(ino, nlookup);
        }
    }

    fn release(
        &self,
        _req: &Request,
        node: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if let Ok(ino) = self.ino(node) {
            self.fs.release(ino);
        }
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let dir = match self.ino(parent) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        let flags = sys::linux_open_flags(flags);
        let r = self
            .fs
            .create(&caller(req), dir, name.as_bytes(), mode, umask, Some(flags))
            .and_then(|a| nodes::ino_to_nodeid(a.ino).map(|n| (a, n)));
        match r {
            Ok((a, node)) => reply.created(
                &self.ttl,
                &self.file_attr(&a, node),
                Generation(u64::from(a.generation)),
                FileHandle(0),
                FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply.error(self.fail("create", dir, &e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let dir = match self.ino(parent) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        let r = self.fs.mknod(
            &caller(req),
            dir,
            name.as_bytes(),
            mode,
            sys::rdev_parts(rdev),
            umask,
        );
        self.reply_entry(reply, "mknod", dir, r);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let dir = match self.ino(parent) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        let r = self.fs.unlink(&caller(req), dir, name.as_bytes());
        self.reply_done(reply, "unlink", dir, r);
    }

    fn setattr(
        &self,
        req: &Request,
        node: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let ino = match self.ino(node) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        if flags.is_some() {
            // chflags(2): the inode flags are not written yet.
            return reply.error(self.not_yet());
        }
        let set = SetAttr {
            mode: mode.map(|m| (m & 0o7777) as u16),
            uid,
            gid,
            size,
            atime: atime.map(set_time),
            mtime: mtime.map(set_time),
            ctime: ctime.map(timestamp),
        };
        // fuser shows no FATTR_KILL_SUIDGID: the kernel's rule for when it
        // would be set (a change of owner; a truncation without
        // CAP_FSETID).
        let kill = set.uid.is_some()
            || set.gid.is_some()
            || (set.size.is_some() && kills_privileges(&caller(req)));
        let r = self.fs.setattr(&caller(req), ino, &set, kill);
        self.invalidate_stale();
        match r {
            Ok(a) => reply.attr(&self.ttl, &self.file_attr(&a, u64::from(a.ino.0))),
            Err(e) => reply.error(self.fail("setattr", ino, &e)),
        }
    }

    fn write(
        &self,
        req: &Request,
        node: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let ino = match self.ino(node) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        let r = self.fs.write(
            &caller(req),
            ino,
            offset,
            data,
            kills_privileges(&caller(req)),
        );
        self.invalidate_stale();
        match r {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(self.fail("write", ino, &e)),
        }
    }

    fn copy_file_range(
        &self,
        req: &Request,
        node_in: INodeNo,
        _fh_in: FileHandle,
        offset_in: u64,
        node_out: INodeNo,
        _fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let (from, to) = match (self.ino(node_in), self.ino(node_out)) {
            (Ok(f), Ok(t)) => (f, t),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        let r =
            self.fs
                .copy_file_range(&caller(req), (from, offset_in), (to, offset_out), len, true);
        self.invalidate_stale();
        match r {
            Ok(n) => reply.written(n.min(u64::from(u32::MAX)) as u32),
            Err(e) => reply.error(self.fail("copy_file_range", to, &e)),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let dir = match self.ino(parent) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        let r = self
            .fs
            .mkdir(&caller(req), dir, name.as_bytes(), mode, umask);
        self.reply_entry(reply, "mkdir", dir, r);
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let dir = match self.ino(parent) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        let r = self.fs.rmdir(&caller(req), dir, name.as_bytes());
        self.reply_done(reply, "rmdir", dir, r);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        let dir = match self.ino(parent) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        let r = self.fs.symlink(
            &caller(req),
            dir,
            link_name.as_bytes(),
            target.as_os_str().as_bytes(),
        );
        self.reply_entry(reply, "symlink", dir, r);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (from, to) = match (self.ino(parent), self.ino(newparent)) {
            (Ok(f), Ok(t)) => (f, t),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        let r = self.fs.rename(
            &caller(req),
            (from, name.as_bytes()),
            (to, newname.as_bytes()),
            flags.bits(),
        );
        self.reply_done(reply, "rename", from, r);
    }

    fn link(
        &self,
        req: &Request,
        node: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let (ino, dir) = match (self.ino(node), self.ino(newparent)) {
            (Ok(i), Ok(d)) => (i, d),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        let r = self.fs.link(&caller(req), ino, dir, newname.as_bytes());
        self.reply_entry(reply, "link", dir, r);
    }

    fn setxattr(
        &self,
        req: &Request,
        node: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let ino = match self.ino(node) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        let r = self
            .fs
            .setxattr(&caller(req), ino, name.as_bytes(), value, flags as u32);
        self.reply_done(reply, "setxattr", ino, r);
    }

    fn removexattr(&self, _req: &Request, node: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let ino = match self.ino(node) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        let r = self.fs.removexattr(ino, name.as_bytes());
        self.reply_done(reply, "removexattr", ino, r);
    }

    fn fallocate(
        &self,
        req: &Request,
        node: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let ino = match self.ino(node) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        let r = self
            .fs
            .fallocate(&caller(req), ino, (mode as u32, offset, length), true);
        self.invalidate_stale();
        self.reply_done(reply, "fallocate", ino, r);
    }
}
