//! The session driven over a `SOCK_SEQPACKET` pair, the way the kernel
//! drives `/dev/fuse`: one message per request, one per reply.

use super::test_kernel::TestKernel;
use super::*;
use crate::abi::{self, fopen, init_flags as flag};
use crate::channel::SeqPacket;
use ext4_engine::DirEntry;
use ext4_engine::{Attr, FileType, Object, StatFs, Timestamp, Whence};
use std::collections::HashMap;

/// A tiny tree: / (2) holds a.txt (12), hard (12 again), sub/ (13),
/// link -> a.txt (14), bad (15, corrupt inode), alias (entry naming inode 2),
/// reserved (entry naming inode 1).
type Entries = Vec<(&'static [u8], u32, FileType)>;

struct Fake {
    dirs: HashMap<u32, Entries>,
}

fn attr(ino: u32, kind: FileType, size: u64) -> Attr {
    Attr {
        ino: InodeNo(ino),
        kind,
        mode: kind.mode_bits() | 0o644,
        nlink: if ino == 12 { 2 } else { 1 },
        uid: 1000,
        gid: 100,
        size,
        blocks: 8,
        atime: Timestamp { sec: -5, nsec: 7 },
        mtime: Timestamp {
            sec: 1_700_000_000,
            nsec: 123_456_789,
        },
        ctime: Timestamp {
            sec: 1_700_000_001,
            nsec: 1,
        },
        crtime: Some(Timestamp {
            sec: 1_600_000_000,
            nsec: 42,
        }),
        rdev_major: 0,
        rdev_minor: 0,
        flags: 0x10,
        generation: 99,
        blksize: 4096,
    }
}

const DATA: &[u8] = b"hello, world";

impl Fake {
    fn new() -> Fake {
        let mut dirs = HashMap::new();
        dirs.insert(
            2,
            vec![
                (&b"."[..], 2, FileType::Directory),
                (&b".."[..], 2, FileType::Directory),
                (&b"a.txt"[..], 12, FileType::Regular),
                (&b"hard"[..], 12, FileType::Regular),
                (&b"sub"[..], 13, FileType::Directory),
                (&b"link"[..], 14, FileType::Symlink),
                (&b"bad"[..], 15, FileType::Regular),
                (&b"alias"[..], 2, FileType::Directory),
                (&b"reserved"[..], 1, FileType::Regular),
            ],
        );
        dirs.insert(
            13,
            vec![
                (&b"."[..], 13, FileType::Directory),
                (&b".."[..], 2, FileType::Directory),
            ],
        );
        Fake { dirs }
    }
}

impl Backend for Fake {
    fn getattr(&self, ino: InodeNo) -> ext4_engine::Result<Attr> {
        let ino = ino.0;
        match ino {
            1 => Ok(attr(1, FileType::Regular, 0)),
            2 | 13 => Ok(attr(ino, FileType::Directory, 4096)),
            12 => Ok(attr(12, FileType::Regular, DATA.len() as u64)),
            14 => Ok(attr(14, FileType::Symlink, 5)),
            15 => Err(Error::corrupt(
                Object::Inode(InodeNo(15)),
                "bad extent header",
            )),
            _ => Err(Error::NotFound),
        }
    }
    fn lookup(&self, dir: InodeNo, name: &[u8]) -> ext4_engine::Result<Attr> {
        let dir = dir.0;
        let entries = self.dirs.get(&dir).ok_or(Error::NotDir)?;
        let &(_, ino, _) = entries
            .iter()
            .find(|(n, _, _)| *n == name)
            .ok_or(Error::NotFound)?;
        self.getattr(InodeNo(ino))
    }
    fn readdir(
        &self,
        dir: InodeNo,
        cookie: u64,
        f: &mut dyn FnMut(&DirEntry<'_>) -> bool,
    ) -> ext4_engine::Result<()> {
        let dir = dir.0;
        let entries = self.dirs.get(&dir).ok_or(Error::NotDir)?;
        for (i, (name, ino, kind)) in entries.iter().enumerate().skip(cookie as usize) {
            if !f(&DirEntry {
                ino: InodeNo(*ino),
                name,
                kind: Some(*kind),
                next: i as u64 + 1,
            }) {
                break;
            }
        }
        Ok(())
    }
    fn read(&self, ino: InodeNo, offset: u64, buf: &mut [u8]) -> ext4_engine::Result<usize> {
        let ino = ino.0;
        if ino != 12 {
            return Err(Error::IsDir);
        }
        let start = (offset as usize).min(DATA.len());
        let n = buf.len().min(DATA.len() - start);
        buf[..n].copy_from_slice(&DATA[start..start + n]);
        Ok(n)
    }
    fn readlink(&self, ino: InodeNo) -> ext4_engine::Result<Vec<u8>> {
        let ino = ino.0;
        if ino == 14 {
            Ok(b"a.txt".to_vec())
        } else {
            Err(Error::NotSymlink)
        }
    }
    fn getxattr(&self, ino: InodeNo, name: &[u8]) -> ext4_engine::Result<Vec<u8>> {
        let ino = ino.0;
        match (ino, name) {
            (12, b"user.color") => Ok(b"blue".to_vec()),
            _ => Err(Error::NoData),
        }
    }
    fn access(
        &self,
        ino: InodeNo,
        caller: &policy::Caller,
        mask: u32,
        ids: policy::ShownIds,
    ) -> ext4_engine::Result<()> {
        // The fake's inodes have no ACLs.
        policy::access_with(
            self.getattr(ino),
            Err(Error::NoData),
            caller,
            mask,
            true,
            ids,
        )
    }
    fn listxattr(&self, ino: InodeNo) -> ext4_engine::Result<Vec<Vec<u8>>> {
        let ino = ino.0;
        if ino == 12 {
            Ok(vec![b"user.color".to_vec(), b"trusted.x".to_vec()])
        } else {
            Ok(vec![])
        }
    }
    fn statfs(&self) -> StatFs {
        StatFs {
            block_size: 4096,
            blocks: 1000,
            blocks_free: 500,
            blocks_available: 450,
            inodes: 256,
            inodes_free: 200,
            name_max: 255,
            fsid: 0,
        }
    }
    fn seek(&self, ino: InodeNo, offset: u64, whence: Whence) -> ext4_engine::Result<u64> {
        let ino = ino.0;
        if ino != 12 || offset >= DATA.len() as u64 {
            return Err(Error::NoSuchOffset);
        }
        Ok(match whence {
            Whence::Data => offset,
            Whence::Hole => DATA.len() as u64,
        })
    }
}

/// The kernel's side of the pair, plus the session it serves.
struct Kernel {
    k: TestKernel,
    session: Arc<Session<Fake>>,
}

impl Kernel {
    fn start(config: Config) -> Kernel {
        let session = Arc::new(Session::new(Fake::new(), config));
        Kernel {
            k: TestKernel::start(session.clone(), 1000, 100),
            session,
        }
    }

    fn send_raw(&self, bytes: &[u8]) {
        self.k.send_raw(bytes);
    }

    fn request(&mut self, op: u32, nodeid: u64, body: &[u8]) -> u64 {
        self.k.request(op, nodeid, body)
    }

    fn reply(&self) -> (OutHeader, Vec<u8>) {
        let (h, body, n) = self.k.receive();
        assert_eq!(h.len as usize, n, "reply header length");
        (h, body)
    }

    /// Send a request and return (errno, payload) of its reply.
    fn call(&mut self, op: u32, nodeid: u64, body: &[u8]) -> (i32, Vec<u8>) {
        let unique = self.request(op, nodeid, body);
        let (h, payload) = self.reply();
        assert_eq!(h.unique, unique);
        (-h.error, payload)
    }

    fn init(&mut self) -> abi::InitOut {
        self.init_offering(u64::MAX >> 20)
    }

    fn init_offering(&mut self, all: u64) -> abi::InitOut {
        let init = abi::InitIn {
            major: 7,
            minor: 45,
            max_readahead: 131072,
            flags: all as u32,
            flags2: (all >> 32) as u32,
            ..Default::default()
        };
        let (err, out) = self.call(opcode::INIT, 0, init.as_bytes());
        assert_eq!(err, 0);
        abi::InitOut::read_from_bytes(&out).unwrap()
    }
}

fn name(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn entry(payload: &[u8]) -> abi::EntryOut {
    assert_eq!(payload.len(), 128);
    abi::EntryOut::read_from_bytes(payload).unwrap()
}

#[test]
fn init_grants_what_was_offered_and_wanted() {
    let mut k = Kernel::start(Config::default());
    let out = k.init();
    assert_eq!(out.major, 7);
    assert_eq!(out.minor, abi::KERNEL_MINOR_VERSION);
    assert_eq!(out.max_pages, MAX_PAGES);
    assert_eq!(out.max_write as usize, MAX_IO);
    assert_eq!(out.max_readahead, 131072);
    assert_eq!(out.time_gran, 1);
    let granted = out.flags as u64 | (out.flags2 as u64) << 32;
    assert_eq!(granted, Config::default().wanted_flags());
    for f in [
        flag::ASYNC_READ,
        flag::BIG_WRITES,
        flag::DONT_MASK,
        flag::PARALLEL_DIROPS,
        flag::DO_READDIRPLUS,
        flag::READDIRPLUS_AUTO,
        flag::CACHE_SYMLINKS,
        flag::POSIX_ACL,
        flag::MAX_PAGES,
        flag::EXPORT_SUPPORT,
        flag::INIT_EXT,
    ] {
        assert_ne!(granted & f, 0, "flag {f:#x}");
    }
    // Never granted on a read-only mount: these would change semantics.
    assert_eq!(
        granted & (flag::WRITEBACK_CACHE | flag::AUTO_INVAL_DATA | flag::IOMAP),
        0
    );
    assert_eq!(k.session.negotiated().unwrap().flags, granted);
}

#[test]
fn readdirplus_modes_ask_for_their_flags() {
    let want = |readdirplus| {
        Config {
            readdirplus,
            ..Config::default()
        }
        .wanted_flags()
            & (flag::DO_READDIRPLUS | flag::READDIRPLUS_AUTO)
    };
    assert_eq!(
        want(ReaddirPlus::Auto),
        flag::DO_READDIRPLUS | flag::READDIRPLUS_AUTO
    );
    assert_eq!(want(ReaddirPlus::On), flag::DO_READDIRPLUS);
    assert_eq!(want(ReaddirPlus::Off), 0);
}

#[test]
fn init_never_grants_unoffered_flags() {
    // A 7.31 kernel: 16-byte init_in style offer without MAX_PAGES or INIT_EXT.
    let cfg = Config::default();
    let init = abi::InitIn {
        major: 7,
        minor: 31,
        max_readahead: 65536,
        flags: flag::ASYNC_READ as u32,
        ..Default::default()
    };
    let (out, agreed) = negotiate(&init, 16, &cfg).unwrap();
    assert_eq!(out.flags as u64, flag::ASYNC_READ);
    assert_eq!(out.flags2, 0);
    assert_eq!(out.max_pages, 0);
    assert_eq!(out.minor, 31);
    assert_eq!(agreed.unwrap().flags, flag::ASYNC_READ);

    // flags2 is ignored unless INIT_EXT is offered, then honoured.
    let init = abi::InitIn {
        major: 7,
        minor: 45,
        flags: 0,
        flags2: 0xffff_ffff,
        ..Default::default()
    };
    assert_eq!(negotiate(&init, 64, &cfg).unwrap().0.flags2, 0);
    let mut cfg2 = cfg.clone();
    cfg2.export_support = false;
    cfg2.posix_acl = false;
    let init = abi::InitIn {
        major: 7,
        minor: 45,
        flags: u32::MAX,
        flags2: u32::MAX,
        ..Default::default()
    };
    let (out, _) = negotiate(&init, 64, &cfg2).unwrap();
    assert_eq!(
        out.flags as u64 & (flag::EXPORT_SUPPORT | flag::POSIX_ACL),
        0
    );
}

#[test]
fn init_version_rules() {
    let cfg = Config::default();
    // A newer major: answer with ours and wait for the retry.
    let init = abi::InitIn {
        major: 8,
        minor: 1,
        ..Default::default()
    };
    let (out, agreed) = negotiate(&init, 64, &cfg).unwrap();
    assert_eq!((out.major, agreed), (7, None));
    assert_eq!(
        negotiate(
            &abi::InitIn {
                major: 6,
                ..Default::default()
            },
            64,
            &cfg
        )
        .unwrap_err(),
        EPROTO
    );
    assert_eq!(
        negotiate(
            &abi::InitIn {
                major: 7,
                minor: 5,
                ..Default::default()
            },
            64,
            &cfg
        )
        .unwrap_err(),
        EPROTO
    );

    let mut k = Kernel::start(cfg);
    // Requests before INIT are refused; a major-8 INIT is answered and retried.
    assert_eq!(k.call(opcode::GETATTR, 1, &[0; 16]).0, errno::EIO);
    let (err, out) = k.call(
        opcode::INIT,
        0,
        abi::InitIn {
            major: 8,
            ..Default::default()
        }
        .as_bytes(),
    );
    assert_eq!(err, 0);
    assert_eq!(abi::InitOut::read_from_bytes(&out).unwrap().major, 7);
    assert!(k.session.negotiated().is_none());
    // A truncated INIT is EINVAL, and the session survives it.
    assert_eq!(k.call(opcode::INIT, 0, &[7, 0, 0, 0]).0, errno::EINVAL);
    k.init();
    assert_eq!(k.call(opcode::GETATTR, 1, &[0; 16]).0, 0);
    // A second INIT is a protocol error.
    assert_eq!(
        k.call(
            opcode::INIT,
            0,
            abi::InitIn {
                major: 7,
                minor: 40,
                ..Default::default()
            }
            .as_bytes()
        )
        .0,
        errno::EIO
    );
}

#[test]
fn malformed_requests_get_errors_not_panics() {
    let mut k = Kernel::start(Config::default());
    k.init();
    // Unknown opcodes, including the iomap ones this session does not speak yet.
    for op in [0, 7, 19, 999, 4094, 4096, u32::MAX] {
        assert_eq!(k.call(op, 1, &[]).0, errno::ENOSYS, "opcode {op}");
    }
    // Writes on a read-only mount.
    assert_eq!(k.call(opcode::MKDIR, 1, &[0; 16]).0, errno::EROFS);
    // Bodies shorter than the opcode's argument struct.
    for op in [
        opcode::READ,
        opcode::OPEN,
        opcode::GETXATTR,
        opcode::LSEEK,
        opcode::ACCESS,
        opcode::READDIR,
        opcode::STATX,
    ] {
        assert_eq!(k.call(op, 12, &[1, 2, 3]).0, errno::EINVAL, "opcode {op}");
    }
    // A name without its NUL.
    assert_eq!(k.call(opcode::LOOKUP, 1, b"a.txt").0, errno::EINVAL);
    let mut body = abi::GetxattrIn {
        size: 100,
        padding: 0,
    }
    .as_bytes()
    .to_vec();
    body.extend_from_slice(b"user.color");
    assert_eq!(k.call(opcode::GETXATTR, 12, &body).0, errno::EINVAL);

    // Header length disagreeing with the message.
    let mut h = InHeader {
        len: 4000,
        opcode: opcode::GETATTR,
        unique: 77,
        nodeid: 1,
        ..Default::default()
    };
    let mut msg = h.as_bytes().to_vec();
    msg.extend_from_slice(&[0; 16]);
    k.send_raw(&msg);
    let (oh, _) = k.reply();
    assert_eq!((oh.unique, -oh.error), (77, errno::EINVAL));
    // Extension length pointing before the body.
    h.len = msg.len() as u32;
    h.total_extlen = 100;
    h.unique = 79;
    msg[..IN_HEADER].copy_from_slice(h.as_bytes());
    k.send_raw(&msg);
    let (oh, _) = k.reply();
    assert_eq!((oh.unique, -oh.error), (79, errno::EINVAL));

    // Shorter than a header: no unique to answer, so it is dropped.
    k.send_raw(&[1, 2, 3, 4, 5]);
    // Larger than the request buffer (a socket cannot carry that much, so
    // hand the session a cut message directly): answered with EIO.
    let big = InHeader {
        len: (IN_BUF_SIZE + 4096) as u32,
        opcode: opcode::WRITE,
        unique: 81,
        nodeid: 12,
        ..Default::default()
    };
    let mut msg = big.as_bytes().to_vec();
    msg.resize(100, 0xaa);
    let (kside, sside) = SeqPacket::pair().unwrap();
    let mut out = ReplyBuf::new(4096);
    k.session.handle(&msg, big.len as usize, &sside, &mut out);
    let mut buf = [0u8; 64];
    let n = kside.receive(&mut buf).unwrap();
    let (oh, _) = OutHeader::read_from_prefix(&buf[..n]).unwrap();
    assert_eq!((oh.len, oh.unique, -oh.error), (16, 81, errno::EIO));

    // The session still answers normally afterwards.
    assert_eq!(k.call(opcode::GETATTR, 1, &[0; 16]).0, 0);
}

#[test]
fn no_reply_opcodes() {
    let mut k = Kernel::start(Config::default());
    k.init();
    k.request(opcode::FORGET, 12, abi::ForgetIn { nlookup: 1 }.as_bytes());
    let mut bf = abi::BatchForgetIn { count: 1, dummy: 0 }
        .as_bytes()
        .to_vec();
    bf.extend_from_slice(
        abi::ForgetOne {
            nodeid: 12,
            nlookup: 3,
        }
        .as_bytes(),
    );
    k.request(opcode::BATCH_FORGET, 0, &bf);
    k.request(
        opcode::INTERRUPT,
        0,
        abi::InterruptIn { unique: 2 }.as_bytes(),
    );
    // The next reply is for the next request: nothing was answered above.
    let (err, _) = k.call(opcode::GETATTR, 1, &[0; 16]);
    assert_eq!(err, 0);
}

#[test]
fn node_ids_are_inode_numbers_with_root_swapped() {
    // The mapping itself is tested in ext4_fuse_common::nodes.
    let mut k = Kernel::start(Config::default());
    k.init();
    let (err, p) = k.call(opcode::LOOKUP, 1, &name("a.txt"));
    assert_eq!(err, 0);
    let a = entry(&p);
    let (err, p) = k.call(opcode::LOOKUP, 1, &name("hard"));
    assert_eq!(err, 0);
    let b = entry(&p);
    // Hard links: one node, one st_ino.
    assert_eq!(
        (a.nodeid, a.attr.ino, b.nodeid, b.attr.ino),
        (12, 12, 12, 12)
    );
    assert_eq!(a.generation, 99);
    // An entry naming inode 2 is the root, node 1; st_ino stays 2 like the kernel's.
    let e = entry(&k.call(opcode::LOOKUP, 1, &name("alias")).1);
    assert_eq!((e.nodeid, e.attr.ino), (1, 2));
    let (err, p) = k.call(opcode::GETATTR, 1, &[0; 16]);
    assert_eq!(err, 0);
    assert_eq!(abi::AttrOut::read_from_bytes(&p).unwrap().attr.ino, 2);
    assert_eq!(k.call(opcode::GETATTR, 2, &[0; 16]).0, ESTALE);
    // Inode 1 would alias the root node: refused as corruption.
    assert_eq!(
        k.call(opcode::LOOKUP, 1, &name("reserved")).0,
        errno::EUCLEAN
    );
    // NFS-export style lookups of "." and "..".
    let e = entry(&k.call(opcode::LOOKUP, 12, &name(".")).1);
    assert_eq!(e.nodeid, 12);
    assert_eq!(k.call(opcode::LOOKUP, 99, &name(".")).0, ESTALE);
    let e = entry(&k.call(opcode::LOOKUP, 13, &name("..")).1);
    assert_eq!(e.nodeid, 1);
}

#[test]
fn lookup_and_attrs() {
    let mut k = Kernel::start(Config::default());
    k.init();
    let e = entry(&k.call(opcode::LOOKUP, 1, &name("a.txt")).1);
    let t = Config::default().timeout.as_secs();
    assert_eq!((e.entry_valid, e.attr_valid), (t, t));
    assert_eq!(e.attr.mode, 0o100644);
    assert_eq!(e.attr.size, DATA.len() as u64);
    assert_eq!(
        (e.attr.uid, e.attr.gid, e.attr.nlink, e.attr.blksize),
        (1000, 100, 2, 4096)
    );
    assert_eq!((e.attr.atime as i64, e.attr.atimensec), (-5, 7));
    assert_eq!(
        (e.attr.mtime, e.attr.mtimensec),
        (1_700_000_000, 123_456_789)
    );
    // Missing names are negative entries the kernel may cache.
    let (err, p) = k.call(opcode::LOOKUP, 1, &name("nope"));
    assert_eq!(err, 0);
    let n = entry(&p);
    assert_eq!((n.nodeid, n.entry_valid), (0, t));
    // A corrupt inode fails that lookup only.
    assert_eq!(k.call(opcode::LOOKUP, 1, &name("bad")).0, errno::EUCLEAN);
    assert_eq!(k.call(opcode::GETATTR, 15, &[0; 16]).0, errno::EUCLEAN);
    assert_eq!(k.call(opcode::GETATTR, 12, &[0; 16]).0, 0);

    // statx carries the birth time and ext4's attribute bits.
    let sx = abi::StatxIn {
        sx_mask: 0xfff,
        ..Default::default()
    };
    let (err, p) = k.call(opcode::STATX, 12, sx.as_bytes());
    assert_eq!(err, 0);
    let s = abi::StatxOut::read_from_bytes(&p).unwrap().stat;
    assert_eq!(s.mask, abi::statx::BASIC_STATS | abi::statx::BTIME);
    assert_eq!(
        s.btime,
        abi::SxTime {
            tv_sec: 1_600_000_000,
            tv_nsec: 42,
            reserved: 0
        }
    );
    assert_eq!(s.attributes, abi::statx::ATTR_IMMUTABLE);
    assert_eq!((s.ino, s.mode, s.nlink), (12, 0o100644, 2));

    // uid=/gid= overrides.
    let cfg = Config {
        uid: Some(0),
        gid: Some(5),
        ..Default::default()
    };
    let mut k = Kernel::start(cfg);
    k.init();
    let e = entry(&k.call(opcode::LOOKUP, 1, &name("a.txt")).1);
    assert_eq!((e.attr.uid, e.attr.gid), (0, 5));
}

/// A kernel that can do without OPEN/OPENDIR gets ENOSYS (it then stops
/// sending them and the RELEASEs); FLUSH always gets ENOSYS.
#[test]
fn open_less_when_offered() {
    let mut k = Kernel::start(Config::default());
    k.init();
    let rd = abi::OpenIn {
        flags: libc::O_RDONLY as u32,
        open_flags: 0,
    };
    let wr = abi::OpenIn {
        flags: libc::O_WRONLY as u32,
        open_flags: 0,
    };
    assert_eq!(k.call(opcode::OPEN, 12, rd.as_bytes()).0, errno::ENOSYS);
    assert_eq!(k.call(opcode::OPENDIR, 1, rd.as_bytes()).0, errno::ENOSYS);
    // Refused before the kernel could take ENOSYS as "opened".
    assert_eq!(k.call(opcode::OPEN, 12, wr.as_bytes()).0, errno::EROFS);
    let flush = abi::FlushIn::default();
    assert_eq!(k.call(opcode::FLUSH, 12, flush.as_bytes()).0, errno::ENOSYS);
}

#[test]
fn read_open_readlink() {
    let mut k = Kernel::start(Config::default());
    k.init_offering((u64::MAX >> 20) & !(flag::NO_OPEN_SUPPORT | flag::NO_OPENDIR_SUPPORT));
    let (err, p) = k.call(
        opcode::OPEN,
        12,
        abi::OpenIn {
            flags: libc::O_RDONLY as u32,
            open_flags: 0,
        }
        .as_bytes(),
    );
    assert_eq!(err, 0);
    let o = abi::OpenOut::read_from_bytes(&p).unwrap();
    assert_eq!(o.open_flags, fopen::KEEP_CACHE);
    assert_eq!(
        k.call(
            opcode::OPEN,
            12,
            abi::OpenIn {
                flags: libc::O_RDWR as u32,
                open_flags: 0
            }
            .as_bytes()
        )
        .0,
        errno::EROFS
    );
    let (err, p) = k.call(opcode::OPENDIR, 1, abi::OpenIn::default().as_bytes());
    assert_eq!(err, 0);
    assert_eq!(
        abi::OpenOut::read_from_bytes(&p).unwrap().open_flags,
        fopen::KEEP_CACHE | fopen::CACHE_DIR
    );

    let read = |k: &mut Kernel, offset: u64, size: u32| {
        k.call(
            opcode::READ,
            12,
            abi::ReadIn {
                offset,
                size,
                ..Default::default()
            }
            .as_bytes(),
        )
    };
    assert_eq!(read(&mut k, 0, 4096), (0, DATA.to_vec()));
    assert_eq!(read(&mut k, 7, 3), (0, b"wor".to_vec()));
    assert_eq!(read(&mut k, 100, 10), (0, vec![]));
    assert_eq!(read(&mut k, 0, MAX_IO as u32), (0, DATA.to_vec()));
    assert_eq!(read(&mut k, 0, MAX_IO as u32 + 1).0, errno::EINVAL);

    assert_eq!(k.call(opcode::READLINK, 14, &[]), (0, b"a.txt".to_vec()));
    assert_eq!(k.call(opcode::READLINK, 12, &[]).0, errno::EINVAL);
    assert_eq!(
        k.call(opcode::RELEASE, 12, abi::ReleaseIn::default().as_bytes())
            .0,
        0
    );
}

fn parse_dirents(p: &[u8], plus: bool) -> Vec<(String, u64, u64, u32, Option<abi::EntryOut>)> {
    let mut v = Vec::new();
    let mut rest = p;
    while !rest.is_empty() {
        let (e, d, hdr) = if plus {
            let (dp, _) = abi::DirentPlus::read_from_prefix(rest).unwrap();
            (Some(dp.entry_out), dp.dirent, 152)
        } else {
            (None, abi::Dirent::read_from_prefix(rest).unwrap().0, 24)
        };
        let name = String::from_utf8(rest[hdr..hdr + d.namelen as usize].to_vec()).unwrap();
        v.push((name, d.ino, d.off, d.typ, e));
        rest = &rest[abi::rec_align(hdr + d.namelen as usize)..];
    }
    v
}

#[test]
fn readdir_pages_through_small_buffers() {
    let mut k = Kernel::start(Config::default());
    k.init();
    for plus in [false, true] {
        let op = if plus {
            opcode::READDIRPLUS
        } else {
            opcode::READDIR
        };
        let mut all = Vec::new();
        let mut off = 0;
        loop {
            // Room for about two entries per call.
            let size = if plus { 340 } else { 70 };
            let (err, p) = k.call(
                op,
                1,
                abi::ReadIn {
                    offset: off,
                    size,
                    ..Default::default()
                }
                .as_bytes(),
            );
            assert_eq!(err, 0);
            assert!(p.len() <= size as usize);
            let got = parse_dirents(&p, plus);
            if got.is_empty() {
                break;
            }
            off = got.last().unwrap().2;
            all.extend(got);
        }
        let names: Vec<_> = all.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [".", "..", "a.txt", "hard", "sub", "link", "bad", "alias", "reserved"]
        );
        let a = &all[2];
        assert_eq!((a.1, a.3), (12, 8));
        assert_eq!(all[4].3, 4);
        assert_eq!(all[5].3, 10);
        if plus {
            // "." and "..": no node; files: full entries; broken ones: none.
            assert_eq!(all[0].4.unwrap().nodeid, 0);
            assert_eq!(all[2].4.unwrap().nodeid, 12);
            assert_eq!(all[2].4.unwrap().attr.size, DATA.len() as u64);
            assert_eq!(all[6].4.unwrap().nodeid, 0);
            assert_eq!(all[7].4.unwrap().nodeid, 1);
            assert_eq!(all[8].4.unwrap().nodeid, 0);
        }
    }
    assert_eq!(
        k.call(
            opcode::READDIR,
            12,
            abi::ReadIn {
                size: 4096,
                ..Default::default()
            }
            .as_bytes()
        )
        .0,
        errno::ENOTDIR
    );
}

#[test]
fn xattrs_probe_and_erange() {
    let mut k = Kernel::start(Config::default());
    k.init();
    let get = |k: &mut Kernel, n: &str, size: u32| {
        let mut body = abi::GetxattrIn { size, padding: 0 }.as_bytes().to_vec();
        body.extend_from_slice(&name(n));
        k.call(opcode::GETXATTR, 12, &body)
    };
    let (err, p) = get(&mut k, "user.color", 0);
    assert_eq!(err, 0);
    assert_eq!(abi::GetxattrOut::read_from_bytes(&p).unwrap().size, 4);
    assert_eq!(get(&mut k, "user.color", 3).0, errno::ERANGE);
    assert_eq!(get(&mut k, "user.color", 4), (0, b"blue".to_vec()));
    assert_eq!(get(&mut k, "user.none", 10).0, errno::ENODATA);

    // uid 1000 does not see trusted.*
    let list = |k: &mut Kernel, size: u32| {
        k.call(
            opcode::LISTXATTR,
            12,
            abi::GetxattrIn { size, padding: 0 }.as_bytes(),
        )
    };
    let (err, p) = list(&mut k, 0);
    assert_eq!(err, 0);
    assert_eq!(abi::GetxattrOut::read_from_bytes(&p).unwrap().size, 11);
    assert_eq!(list(&mut k, 10).0, errno::ERANGE);
    assert_eq!(list(&mut k, 11), (0, b"user.color\0".to_vec()));
    let (err, p) = k.call(
        opcode::LISTXATTR,
        1,
        abi::GetxattrIn {
            size: 0,
            padding: 0,
        }
        .as_bytes(),
    );
    assert_eq!(
        (err, abi::GetxattrOut::read_from_bytes(&p).unwrap().size),
        (0, 0)
    );
}

#[test]
fn statfs_access_lseek() {
    let mut k = Kernel::start(Config::default());
    k.init();
    let (err, p) = k.call(opcode::STATFS, 1, &[]);
    assert_eq!(err, 0);
    let s = abi::Kstatfs::read_from_bytes(&p).unwrap();
    assert_eq!(
        (s.blocks, s.bfree, s.bavail, s.files, s.ffree),
        (1000, 500, 450, 256, 200)
    );
    assert_eq!((s.bsize, s.frsize, s.namelen), (4096, 4096, 255));

    let access = |k: &mut Kernel, mask: i32| {
        k.call(
            opcode::ACCESS,
            12,
            abi::AccessIn {
                mask: mask as u32,
                padding: 0,
            }
            .as_bytes(),
        )
        .0
    };
    assert_eq!(access(&mut k, libc::R_OK), 0);
    assert_eq!(access(&mut k, libc::W_OK), errno::EROFS);
    assert_eq!(access(&mut k, libc::X_OK), errno::EACCES);
    assert_eq!(access(&mut k, libc::F_OK), 0);

    let seek = |k: &mut Kernel, offset: u64, whence: i32| {
        k.call(
            opcode::LSEEK,
            12,
            abi::LseekIn {
                offset,
                whence: whence as u32,
                ..Default::default()
            }
            .as_bytes(),
        )
    };
    let (err, p) = seek(&mut k, 3, libc::SEEK_DATA);
    assert_eq!(
        (err, abi::LseekOut::read_from_bytes(&p).unwrap().offset),
        (0, 3)
    );
    let (err, p) = seek(&mut k, 3, libc::SEEK_HOLE);
    assert_eq!(
        (err, abi::LseekOut::read_from_bytes(&p).unwrap().offset),
        (0, DATA.len() as u64)
    );
    assert_eq!(seek(&mut k, 100, libc::SEEK_DATA).0, errno::ENXIO);
    assert_eq!(seek(&mut k, 0, libc::SEEK_END).0, errno::EINVAL);
}

/// `-o stats`: every request counted under its opcode, most frequent
/// first, and the total the sum of the rows.
#[test]
fn stats_table_counts_each_request() {
    let mut k = Kernel::start(Config {
        measure: true,
        ..Config::default()
    });
    k.init();
    for _ in 0..3 {
        k.call(opcode::LOOKUP, 1, &name("a.txt"));
    }
    k.call(opcode::GETATTR, 12, &[0; 16]);
    // A request is counted after its reply went out (its CPU time
    // includes the reply): the last one may lag the reply a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while k
        .session
        .request_stats()
        .iter()
        .map(|s| s.count)
        .sum::<u64>()
        < 5
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let t = k.session.stats_table();
    let rows: Vec<(String, u64)> = t
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[1].parse().unwrap())
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("LOOKUP".to_string(), 3),
            ("GETATTR".to_string(), 1),
            ("INIT".to_string(), 1),
            ("total".to_string(), 5)
        ],
        "{t}"
    );
}
