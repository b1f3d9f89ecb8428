//! The server seen from a FreeBSD-like kernel. A socketpair stands in for
//! /dev/fuse: this test offers protocol 7.23, then 7.29, with the INIT flags
//! FreeBSD's fusefs offers, and checks the INIT reply only takes flags that
//! were offered and FreeBSD knows. Then it walks a whole image with
//! hand-encoded LOOKUP/GETATTR/OPENDIR/READDIR/OPEN/READ/READLINK/
//! LISTXATTR/GETXATTR/STATFS/ACCESS messages (never READDIRPLUS), checks
//! every reply is exactly what that protocol minor defines (sizes, flags, no
//! unsolicited notifications), and compares what it learned with the
//! kernel's ext4 reading of the same image.

#![cfg(target_os = "linux")]

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::thread::JoinHandle;

use common::*;
use ext4_engine::{OpenOptions, Volume};
use ext4_fuse_bsd::fs::{Ext4Fs, FsConfig};
use ext4_tests::fuse::statvfs;
use ext4_tests::oracle::KernelMount;
use ext4_tests::util::{require_e2fsprogs, require_kernel_ext4};
use fuser::{Session, SessionACL};

// Opcodes.
const LOOKUP: u32 = 1;
const FORGET: u32 = 2;
const GETATTR: u32 = 3;
const READLINK: u32 = 5;
const OPEN: u32 = 14;
const READ: u32 = 15;
const STATFS: u32 = 17;
const RELEASE: u32 = 18;
const GETXATTR: u32 = 22;
const LISTXATTR: u32 = 23;
const INIT: u32 = 26;
const OPENDIR: u32 = 27;
const READDIR: u32 = 28;
const RELEASEDIR: u32 = 29;
const ACCESS: u32 = 34;
const DESTROY: u32 = 38;
const LSEEK: u32 = 46;

// INIT flags, as FreeBSD's fuse_kernel.h numbers them.
const ASYNC_READ: u32 = 1 << 0;
const POSIX_LOCKS: u32 = 1 << 1;
const EXPORT_SUPPORT: u32 = 1 << 4;
const BIG_WRITES: u32 = 1 << 5;
const WRITEBACK_CACHE: u32 = 1 << 16;
const NO_OPEN_SUPPORT: u32 = 1 << 17;
const NO_OPENDIR_SUPPORT: u32 = 1 << 24;

/// What FreeBSD's fusefs offers in FUSE_INIT at each minor.
fn freebsd_offer(minor: u32) -> u32 {
    let base = ASYNC_READ | POSIX_LOCKS | EXPORT_SUPPORT | BIG_WRITES | WRITEBACK_CACHE;
    if minor >= 29 {
        base | NO_OPEN_SUPPORT | NO_OPENDIR_SUPPORT
    } else {
        base
    }
}

/// The INIT flag bits a fuse_kernel.h of this minor defines at all.
fn known_flags(minor: u32) -> u32 {
    let top = match minor {
        ..=22 => 16,
        23 => 17,
        24 => 18,
        25 => 19,
        26 => 21,
        27 => 22,
        28 => 24,
        _ => 25,
    };
    (1u32 << top) - 1
}

const FOPEN_DIRECT_IO: u32 = 1;
const FOPEN_KEEP_CACHE: u32 = 2;
const FOPEN_NONSEEKABLE: u32 = 4;

const OUT_HEADER: usize = 16;
const ATTR_SIZE: usize = 88;
const ENTRY_OUT: usize = 40 + ATTR_SIZE;
const ATTR_OUT: usize = 16 + ATTR_SIZE;
const READ_SIZE: u32 = 65536;

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

#[derive(Debug, Clone)]
struct FAttr {
    ino: u64,
    size: u64,
    blocks: u64,
    atime: (i64, i64),
    mtime: (i64, i64),
    ctime: (i64, i64),
    mode: u32,
    nlink: u32,
    uid: u32,
    gid: u32,
    rdev: u32,
    blksize: u32,
}

fn parse_attr(b: &[u8]) -> FAttr {
    assert_eq!(b.len(), ATTR_SIZE);
    assert_eq!(
        le32(b, 84),
        0,
        "fuse_attr.flags/padding must be 0 below 7.32"
    );
    FAttr {
        ino: le64(b, 0),
        size: le64(b, 8),
        blocks: le64(b, 16),
        atime: (le64(b, 24) as i64, le32(b, 48) as i64),
        mtime: (le64(b, 32) as i64, le32(b, 52) as i64),
        ctime: (le64(b, 40) as i64, le32(b, 56) as i64),
        mode: le32(b, 60),
        nlink: le32(b, 64),
        uid: le32(b, 68),
        gid: le32(b, 72),
        rdev: le32(b, 76),
        blksize: le32(b, 80),
    }
}

/// The FreeBSD-like kernel end of the session.
struct Kernel {
    fd: OwnedFd,
    unique: u64,
    minor: u32,
    server: Option<JoinHandle<std::io::Result<()>>>,
    requests: u64,
}

fn send(fd: &OwnedFd, msg: &[u8]) {
    // SAFETY: valid buffer for its length.
    let n = unsafe { libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    assert_eq!(
        n as usize,
        msg.len(),
        "send: {}",
        std::io::Error::last_os_error()
    );
}

fn recv(fd: &OwnedFd, flags: i32) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 1 << 20];
    // SAFETY: valid buffer for its length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

fn message(opcode: u32, unique: u64, node: u64, body: &[u8]) -> Vec<u8> {
    let len = 40 + body.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_le_bytes());
    m.extend_from_slice(&opcode.to_le_bytes());
    m.extend_from_slice(&unique.to_le_bytes());
    m.extend_from_slice(&node.to_le_bytes());
    m.extend_from_slice(&0u32.to_le_bytes()); // uid
    m.extend_from_slice(&0u32.to_le_bytes()); // gid
    m.extend_from_slice(&4242u32.to_le_bytes()); // pid
    m.extend_from_slice(&0u32.to_le_bytes()); // padding
    m.extend_from_slice(body);
    m
}

struct InitReply {
    len: usize,
    major: u32,
    minor: u32,
    flags: u32,
    max_write: u32,
    time_gran: u32,
}

impl Kernel {
    /// Start a server on `img` and send FUSE_INIT at 7.`minor`.
    fn start(img: &std::path::Path, minor: u32) -> (Kernel, InitReply) {
        let mut fds = [0; 2];
        // SAFETY: fds has room for two descriptors.
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        assert_eq!(r, 0);
        // SAFETY: fresh descriptors we own.
        let (ours, theirs) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // A hung server fails the test instead of blocking it.
        let tv = libc::timeval {
            tv_sec: 20,
            tv_usec: 0,
        };
        // SAFETY: valid option buffer.
        unsafe {
            libc::setsockopt(
                ours.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        // fuse_init_in as FreeBSD sends it: major, minor, max_readahead, flags.
        let mut body = Vec::new();
        body.extend_from_slice(&7u32.to_le_bytes());
        body.extend_from_slice(&minor.to_le_bytes());
        body.extend_from_slice(&65536u32.to_le_bytes());
        body.extend_from_slice(&freebsd_offer(minor).to_le_bytes());
        send(&ours, &message(INIT, 1, 0, &body));

        let dev = ext4_engine::FileDevice::open(img, true).unwrap();
        let vol = Volume::open(dev, &OpenOptions::default()).unwrap();
        let served = ext4_fuse_common::fs::Fs::new(vol, Default::default(), Default::default());
        let fs = Ext4Fs::new(served, FsConfig::default());
        let server = std::thread::spawn(move || {
            let s = Session::from_fd(fs, theirs, SessionACL::All, fuser::Config::default())?;
            s.run()
        });
        let r = recv(&ours, 0).expect("no INIT reply");
        assert!(r.len() >= OUT_HEADER);
        assert_eq!(le32(&r, 0) as usize, r.len());
        assert_eq!(le32(&r, 4), 0, "INIT failed");
        assert_eq!(le64(&r, 8), 1);
        let b = &r[OUT_HEADER..];
        let init = InitReply {
            len: b.len(),
            major: le32(b, 0),
            minor: le32(b, 4),
            flags: le32(b, 12),
            max_write: if b.len() >= 24 { le32(b, 20) } else { 0 },
            time_gran: if b.len() >= 28 { le32(b, 24) } else { 0 },
        };
        let k = Kernel {
            fd: ours,
            unique: 1,
            minor,
            server: Some(server),
            requests: 0,
        };
        (k, init)
    }

    /// Send a request; return (errno, body) of its reply.
    fn call(&mut self, opcode: u32, node: u64, body: &[u8]) -> (i32, Vec<u8>) {
        assert_ne!(opcode, 44, "READDIRPLUS is never sent to a FreeBSD server");
        self.unique += 1;
        self.requests += 1;
        send(&self.fd, &message(opcode, self.unique, node, body));
        let r = recv(&self.fd, 0).unwrap_or_else(|| panic!("no reply to opcode {opcode}"));
        assert!(r.len() >= OUT_HEADER);
        assert_eq!(le32(&r, 0) as usize, r.len(), "reply length field");
        assert_eq!(
            le64(&r, 8),
            self.unique,
            "a reply to another request, or a notification (unique 0), which FreeBSD was not asked to take"
        );
        let err = le32(&r, 4) as i32;
        assert!(err <= 0 && err > -4096, "bad error field {err}");
        if err != 0 {
            assert_eq!(r.len(), OUT_HEADER, "an error reply carries no body");
        }
        (-err, r[OUT_HEADER..].to_vec())
    }

    fn ok(&mut self, opcode: u32, node: u64, body: &[u8]) -> Vec<u8> {
        let (e, b) = self.call(opcode, node, body);
        assert_eq!(e, 0, "opcode {opcode} on node {node} failed: errno {e}");
        b
    }

    /// Fire-and-forget (FORGET has no reply).
    fn forget(&mut self, node: u64, n: u64) {
        self.unique += 1;
        send(
            &self.fd,
            &message(FORGET, self.unique, node, &n.to_le_bytes()),
        );
    }

    fn getattr(&mut self, node: u64) -> FAttr {
        let b = self.ok(GETATTR, node, &[0u8; 16]);
        assert_eq!(b.len(), ATTR_OUT, "fuse_attr_out size");
        parse_attr(&b[16..])
    }

    fn lookup(&mut self, parent: u64, name: &[u8]) -> Result<(u64, FAttr), i32> {
        let mut body = name.to_vec();
        body.push(0);
        let (e, b) = self.call(LOOKUP, parent, &body);
        if e != 0 {
            return Err(e);
        }
        assert_eq!(b.len(), ENTRY_OUT, "fuse_entry_out size");
        Ok((le64(&b, 0), parse_attr(&b[40..])))
    }

    /// `None`: the server answered ENOSYS to an OPEN/OPENDIR this kernel
    /// offered to do without (FUSE_NO_OPEN[DIR]_SUPPORT); FreeBSD then
    /// treats the open as done, with handle 0, and sends no RELEASE.
    fn open(&mut self, op: u32, node: u64) -> Option<u64> {
        let (e, b) = self.call(op, node, &[0u8; 8]); // flags O_RDONLY
        let no_op = if op == OPEN {
            NO_OPEN_SUPPORT
        } else {
            NO_OPENDIR_SUPPORT
        };
        if e == libc::ENOSYS && freebsd_offer(self.minor) & no_op != 0 {
            return None;
        }
        assert_eq!(e, 0, "opcode {op} on node {node} failed: errno {e}");
        assert_eq!(b.len(), 16, "fuse_open_out size");
        let flags = le32(&b, 8);
        assert_eq!(
            flags & !(FOPEN_DIRECT_IO | FOPEN_KEEP_CACHE | FOPEN_NONSEEKABLE),
            0,
            "open flags {flags:#x} beyond what FreeBSD knows"
        );
        Some(le64(&b, 0))
    }

    fn release(&mut self, op: u32, node: u64, fh: Option<u64>) {
        let Some(fh) = fh else {
            return;
        };
        let mut body = fh.to_le_bytes().to_vec();
        body.extend_from_slice(&[0u8; 16]);
        let b = self.ok(op, node, &body);
        assert!(b.is_empty());
    }

    fn read_in(fh: u64, offset: u64, size: u32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&fh.to_le_bytes());
        b.extend_from_slice(&offset.to_le_bytes());
        b.extend_from_slice(&size.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes()); // read_flags
        b.extend_from_slice(&0u64.to_le_bytes()); // lock_owner
        b.extend_from_slice(&0u32.to_le_bytes()); // flags
        b.extend_from_slice(&0u32.to_le_bytes()); // padding
        b
    }

    fn read_all(&mut self, node: u64) -> Vec<u8> {
        let h = self.open(OPEN, node);
        let fh = h.unwrap_or(0);
        let mut out = Vec::new();
        loop {
            let b = self.ok(READ, node, &Self::read_in(fh, out.len() as u64, READ_SIZE));
            assert!(
                b.len() <= READ_SIZE as usize,
                "read reply longer than asked"
            );
            out.extend_from_slice(&b);
            if b.len() < READ_SIZE as usize {
                break;
            }
        }
        self.release(RELEASE, node, h);
        out
    }

    /// (name, ino, type) of every entry, "." and ".." included.
    fn readdir(&mut self, node: u64) -> Vec<(Vec<u8>, u64, u8)> {
        let h = self.open(OPENDIR, node);
        let fh = h.unwrap_or(0);
        let mut out = Vec::new();
        let mut offset = 0u64;
        loop {
            let b = self.ok(READDIR, node, &Self::read_in(fh, offset, 4096));
            assert!(b.len() <= 4096);
            if b.is_empty() {
                break;
            }
            let mut at = 0;
            while at < b.len() {
                let ino = le64(&b, at);
                let off = le64(&b, at + 8);
                let namelen = le32(&b, at + 16) as usize;
                let typ = le32(&b, at + 20);
                assert!((1..=255).contains(&namelen));
                assert!(typ < 16);
                let name = b[at + 24..at + 24 + namelen].to_vec();
                at += (24 + namelen).next_multiple_of(8);
                assert!(off > offset || out.is_empty(), "offsets must move forward");
                offset = off;
                out.push((name, ino, typ as u8));
            }
            assert_eq!(at, b.len(), "dirent padding");
        }
        self.release(RELEASEDIR, node, h);
        out
    }

    fn xattr_in(size: u32, name: Option<&[u8]>) -> Vec<u8> {
        let mut b = size.to_le_bytes().to_vec();
        b.extend_from_slice(&0u32.to_le_bytes());
        if let Some(n) = name {
            b.extend_from_slice(n);
            b.push(0);
        }
        b
    }

    /// Ask for the size, then the value, as FreeBSD's extattr calls do.
    fn xattr_call(&mut self, op: u32, node: u64, name: Option<&[u8]>) -> Result<Vec<u8>, i32> {
        let (e, b) = self.call(op, node, &Self::xattr_in(0, name));
        if e != 0 {
            return Err(e);
        }
        assert_eq!(b.len(), 8, "fuse_getxattr_out size");
        let size = le32(&b, 0);
        if size == 0 {
            return Ok(Vec::new());
        }
        if size > 1 {
            // A buffer one byte short must give ERANGE.
            let (e, _) = self.call(op, node, &Self::xattr_in(size - 1, name));
            assert_eq!(e, libc::ERANGE);
        }
        let b = self.ok(op, node, &Self::xattr_in(size, name));
        assert_eq!(b.len(), size as usize);
        Ok(b)
    }

    fn xattrs(&mut self, node: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
        let list = self.xattr_call(LISTXATTR, node, None).unwrap();
        let mut out = Vec::new();
        for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
            let v = self
                .xattr_call(GETXATTR, node, Some(name))
                .unwrap_or_else(|e| format!("error {e}").into_bytes());
            out.push((name.to_vec(), v));
        }
        out.sort();
        out
    }

    /// Nothing may arrive that was not asked for.
    fn assert_quiet(&self) {
        assert!(
            recv(&self.fd, libc::MSG_DONTWAIT).is_none(),
            "the server sent an unsolicited message"
        );
    }

    fn finish(mut self) {
        self.assert_quiet();
        self.unique += 1;
        send(&self.fd, &message(DESTROY, self.unique, 0, &[]));
        let r = recv(&self.fd, 0).expect("DESTROY reply");
        assert_eq!(le32(&r, 4), 0);
        let res = self.server.take().unwrap().join().expect("server panicked");
        assert!(res.is_ok(), "session ended with {res:?}");
    }
}

fn rec(a: &FAttr) -> Rec {
    let major = (a.rdev >> 8) & 0xfff;
    let minor = (a.rdev & 0xff) | ((a.rdev >> 12) & 0xfff00);
    Rec {
        mode: a.mode,
        nlink: u64::from(a.nlink),
        uid: a.uid,
        gid: a.gid,
        size: a.size,
        blocks: a.blocks,
        blksize: u64::from(a.blksize),
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        rdev: libc::makedev(major, minor),
        ino: a.ino,
        content: None,
        target: None,
        xattrs: Vec::new(),
        entries: None,
    }
}

/// Walk the image through the protocol, the way a FreeBSD kernel would.
fn walk_protocol(k: &mut Kernel) -> Tree {
    let mut out = Tree::new();
    let root = k.getattr(1);
    assert_eq!(root.ino, 2, "st_ino of the root is ext4's inode 2");
    let mut stack = vec![(PathBuf::new(), 1u64, root)];
    while let Some((path, node, attr)) = stack.pop() {
        let mut r = rec(&attr);
        // GETATTR agrees with what LOOKUP said.
        let again = k.getattr(node);
        assert_eq!(rec(&again), r, "{}: GETATTR vs LOOKUP", path.display());
        r.xattrs = k.xattrs(node);
        match attr.mode & libc::S_IFMT {
            libc::S_IFREG => r.content = Some(k.read_all(node)),
            libc::S_IFLNK => r.target = Some(k.ok(READLINK, node, &[])),
            libc::S_IFDIR => {
                let mut entries = Vec::new();
                for (name, ino, typ) in k.readdir(node) {
                    if name == b"." || name == b".." {
                        continue;
                    }
                    let (child, cattr) = k
                        .lookup(node, &name)
                        .unwrap_or_else(|e| panic!("lookup {name:?}: errno {e}"));
                    assert_eq!(child, ino, "node id = inode number");
                    assert_eq!(cattr.ino, ino);
                    assert_eq!(u32::from(typ), (cattr.mode & libc::S_IFMT) >> 12);
                    entries.push((name.clone(), ino, typ));
                    let p = path.join(std::ffi::OsStr::new(
                        std::str::from_utf8(&name).expect("test names are UTF-8"),
                    ));
                    stack.push((p, child, cattr));
                }
                entries.sort();
                r.entries = Some(entries);
            }
            _ => {}
        }
        if node != 1 {
            k.forget(node, 1);
        }
        out.insert(path, r);
    }
    out
}

fn statfs_fields(k: &mut Kernel) -> [u64; 8] {
    let b = k.ok(STATFS, 1, &[]);
    assert_eq!(b.len(), 80, "fuse_statfs_out size");
    let bsize = u64::from(le32(&b, 40));
    let frsize = u64::from(le32(&b, 48));
    [
        bsize,
        frsize,
        le64(&b, 0),
        le64(&b, 8),
        le64(&b, 16),
        le64(&b, 24),
        le64(&b, 32),
        u64::from(le32(&b, 44)),
    ]
}

fn lseek_in(offset: u64, whence: i32) -> Vec<u8> {
    let mut b = 0u64.to_le_bytes().to_vec();
    b.extend_from_slice(&offset.to_le_bytes());
    b.extend_from_slice(&(whence as u32).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b
}

fn kernel_lseek(p: &std::path::Path, off: i64, whence: i32) -> Result<i64, i32> {
    let f = std::fs::File::open(p).unwrap();
    // SAFETY: plain syscall on an open descriptor.
    let r = unsafe { libc::lseek(f.as_raw_fd(), off, whence) };
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap())
    } else {
        Ok(r)
    }
}

fn session(minor: u32) {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    let work = tempfile::Builder::new()
        .prefix("bsd-img-")
        .tempdir()
        .unwrap();
    let img = make_image(work.path());
    let km = KernelMount::ro(&img).expect("kernel mount");
    let want = walk(km.path());

    let (mut k, init) = Kernel::start(&img, minor);
    assert_eq!(k.minor, minor);
    assert_eq!(init.major, 7);
    assert!(
        init.minor >= minor,
        "server minor {} below ours",
        init.minor
    );
    // FreeBSD accepts exactly sizeof(fuse_init_out) (64) or the 7.22 size.
    assert!(
        init.len == 64 || init.len == 24,
        "INIT reply body of {} bytes is refused by FreeBSD",
        init.len
    );
    let offered = freebsd_offer(minor);
    assert_eq!(
        init.flags & !offered,
        0,
        "INIT reply takes flags that were not offered: {:#x}",
        init.flags & !offered
    );
    assert_eq!(init.flags & !known_flags(minor), 0);
    assert!(init.max_write >= 4096);
    assert!((1..=1_000_000_000).contains(&init.time_gran));

    let mut got = walk_protocol(&mut k);
    // Linux's stat() reports a block special file's st_blksize from the
    // device it names (whatever the filesystem says): not a server answer.
    for (p, r) in got.iter_mut() {
        if r.mode & libc::S_IFMT == libc::S_IFBLK {
            if let Some(w) = want.get(p) {
                r.blksize = w.blksize;
            }
        }
    }
    assert_same(&format!("protocol 7.{minor}"), &want, &got);
    assert_eq!(statfs_fields(&mut k), statvfs(km.path()), "statfs");

    // Errors are the host's errno numbers.
    assert_eq!(k.lookup(1, b"no-such-name").unwrap_err(), libc::ENOENT);
    let (file, _) = k.lookup(1, b"one").unwrap();
    assert_eq!(
        k.xattr_call(GETXATTR, file, Some(b"user.absent"))
            .unwrap_err(),
        libc::ENODATA
    );
    let mut acc = (libc::R_OK as u32).to_le_bytes().to_vec();
    acc.extend_from_slice(&[0; 4]);
    assert_eq!(k.call(ACCESS, file, &acc).0, 0);
    let mut acc = (libc::W_OK as u32).to_le_bytes().to_vec();
    acc.extend_from_slice(&[0; 4]);
    assert_eq!(k.call(ACCESS, file, &acc).0, libc::EROFS);

    // FUSE_LSEEK exists from 7.24 on: answered then, refused below.
    let (sparse, _) = k.lookup(1, b"sparse").unwrap();
    let kp = km.path().join("sparse");
    for (off, whence) in [
        (0, libc::SEEK_DATA),
        (0, libc::SEEK_HOLE),
        (6000, libc::SEEK_DATA),
        ((5 << 20) + 100, libc::SEEK_HOLE),
        ((12 << 20) - 1, libc::SEEK_DATA),
        (20 << 20, libc::SEEK_DATA),
    ] {
        let (e, b) = k.call(LSEEK, sparse, &lseek_in(off as u64, whence));
        if minor < 24 {
            assert_eq!(e, libc::ENOSYS, "LSEEK answered at 7.{minor}");
            continue;
        }
        let want = kernel_lseek(&kp, off, whence);
        let got = if e == 0 {
            assert_eq!(b.len(), 8);
            Ok(le64(&b, 0) as i64)
        } else {
            Err(e)
        };
        assert_eq!(got, want, "lseek({off}, {whence})");
    }
    assert!(k.requests > 10_000, "only {} requests", k.requests);
    k.finish();
}

#[test]
fn freebsd_7_23_session() {
    session(23);
}

#[test]
fn freebsd_7_29_session() {
    session(29);
}
