//! A stand-in for the kernel's side of FUSE iomap
//! (`docs/iomap.md`). It drives the real session loop over a
//! `SOCK_SEQPACKET` pair the way the kernel drives `/dev/fuse`: `FUSE_INIT`
//! offering `FUSE_IOMAP`, `IOMAP_CONFIG`, lookups, opens, `IOMAP_BEGIN` for
//! buffered, faulting, direct and report operations; it keeps the kernel's
//! per-inode mapping cache (an engine `MappingCache` with the budget the
//! server set: the same rules), applies the server's notifications to it,
//! checks every reply and notification against every rule the kernel
//! applies plus the protocol's own (sizes, uniques, attr flags, honest
//! `RETRY_CACHE`), and does the data I/O itself at the answered addresses
//! on the block device. Violations are collected, not panicked on, so a
//! test can report them all (and a test can expect them when it breaks
//! the server on purpose).

#![allow(dead_code)]

pub mod write;

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Instant;

use ext4_engine::iomap::{kernel_check, op};
use ext4_engine::mapping_cache::{Fork, Lookup, MapType, Mapping, MappingCache};
use ext4_engine::InodeNo;
use ext4_engine::{BlockDevice, FileDevice};
use ext4_engine::{OpenOptions, Volume};
use ext4_fuse::abi::{self, attr_flags, init_flags, notify_code, opcode, InHeader, OutHeader};
use ext4_fuse::session::test_kernel::TestKernel;
use ext4_fuse::session::{Config, Session};
use ext4_fuse_common::fs::{Durability, Fs};
use zerocopy::{FromBytes, IntoBytes};

/// The server's device: the image file, or a test's recording device.
pub type Dev = Box<dyn BlockDevice>;
pub type Server = Session<Fs<Dev>>;

/// Where the model does file data I/O (the kernel's block device).
pub trait DataIo: Send + Sync {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()>;
}

impl DataIo for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }
}

/// A `BlockDevice` as the model's data device (a recording crash device
/// shared with the server).
pub struct DevIo<D: BlockDevice>(pub D);

impl<D: BlockDevice> DataIo for DevIo<D> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.0
            .read_at(offset, buf)
            .map_err(|e| std::io::Error::other(format!("{e:?}")))
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.0
            .write_at(offset, buf)
            .map_err(|e| std::io::Error::other(format!("{e:?}")))
    }
}

const IN_HEADER: usize = core::mem::size_of::<InHeader>();
const OUT_HEADER: usize = core::mem::size_of::<OutHeader>();
/// What the kernel offers as its own cache limit in `IOMAP_CONFIG`.
pub const KERNEL_CACHE_MAXBYTES: u32 = 8 << 20;

/// Counters of what crossed the connection.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    pub requests: HashMap<u32, u64>,
    pub begin: u64,
    pub retry_cache: u64,
    pub cache_hits: u64,
    pub upserts: u64,
    pub invals: u64,
    /// READ requests, and how many of them were for inline data.
    pub reads: u64,
    pub inline_reads: u64,
}

/// A file as the model knows it after a lookup.
#[derive(Clone, Copy, Debug)]
pub struct Node {
    pub nodeid: u64,
    pub attr: abi::Attr,
}

pub struct Model {
    k: TestKernel,
    pub session: Arc<Server>,
    /// The block device (or image) the answered addresses point into.
    pub dev_file: Box<dyn DataIo>,
    pub dev_size: u64,
    pub dev_cookie: u32,
    pub bs: u64,
    pub maxbytes: u64,
    pub cache: MappingCache,
    pub cache_maxbytes: u32,
    pub counters: Counters,
    /// Device byte ranges the server told the kernel to drop.
    pub dev_invals: Vec<(u64, u64)>,
    /// What the write side sent (`write.rs`).
    pub wc: write::WriteCounters,
    pub violations: Vec<String>,
    /// Every upsert received: (inode, read mapping).
    pub upserted: Vec<(u64, Mapping)>,
    /// Inodes the server flagged for iomap.
    iomap_inodes: HashMap<u64, abi::Attr>,
    /// Engine view of the same image, for expected attribute flags (none
    /// on a read-write mount, whose image changes under it: regular files
    /// are then expected to carry IOMAP + EXCLUSIVE only).
    oracle: Option<Volume<FileDevice>>,
    /// What `IOMAP_CONFIG` must answer, from the image before the start.
    want_config: ext4_engine::iomap::IomapConfig,
    /// Wall time spent waiting for replies, and how many.
    pub reply_wait: std::time::Duration,
    /// The server was told to offer atomic writes: regular files may
    /// carry `FUSE_ATTR_ATOMIC`.
    pub atomic: bool,
}

/// The mapping cache key of a FUSE node: node ids of regular files are
/// their inode numbers.
pub fn node_key(nodeid: u64) -> InodeNo {
    InodeNo(u32::try_from(nodeid).expect("node ids are 32-bit inode numbers"))
}

/// A server's view of `img` (read-only, as these models serve it).
pub fn served(img: &std::path::Path) -> Fs<Dev> {
    let dev: Dev = Box::new(FileDevice::open(img, true).unwrap());
    let vol = Volume::open(dev, &OpenOptions::default()).unwrap();
    Fs::new(vol, Durability::default(), Default::default())
}

pub fn open_volume(img: &std::path::Path) -> Volume<FileDevice> {
    let dev = FileDevice::open(img, true).unwrap();
    Volume::open(dev, &OpenOptions::default()).unwrap()
}

impl Model {
    /// Start a server on `img` (its data read through `dev_path`: the loop
    /// device, or the image itself), negotiate, register the device as
    /// `dev_cookie` and ask for the iomap configuration.
    pub fn start(img: &std::path::Path, dev_path: &std::path::Path, cfg: Config) -> Model {
        let dev_file = File::open(dev_path).unwrap();
        let dev_size = device_size(&dev_file);
        let oracle = open_volume(img);
        let want_config = oracle.iomap_config();
        Self::start_with(
            served(img),
            Box::new(dev_file),
            dev_size,
            cfg,
            Some(oracle),
            want_config,
        )
    }

    /// A read-write server on `img`, the model writing file data into the
    /// image itself (the same file the server writes its metadata to).
    pub fn start_rw(img: &std::path::Path, cfg: Config) -> Model {
        let dev = FileDevice::open(img, false).unwrap();
        let dev_file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(img)
            .unwrap();
        let size = device_size(&dev_file);
        Self::start_rw_on(Box::new(dev), Box::new(dev_file), size, cfg)
    }

    /// A read-write server on `dev`, the model doing data I/O on `data`
    /// (the same device, `size` bytes).
    pub fn start_rw_on(dev: Dev, data: Box<dyn DataIo>, size: u64, cfg: Config) -> Model {
        let opts = OpenOptions {
            read_only: false,
            ..Default::default()
        };
        let vol = Volume::open(dev, &opts).unwrap();
        assert!(!vol.read_only(), "the image mounts read-only");
        let want_config = vol.iomap_config();
        let fs = Fs::new(vol, Durability::default(), Default::default());
        Self::start_with(fs, data, size, cfg, None, want_config)
    }

    fn start_with(
        fs: Fs<Dev>,
        dev_file: Box<dyn DataIo>,
        dev_size: u64,
        mut cfg: Config,
        oracle: Option<Volume<FileDevice>>,
        want_config: ext4_engine::iomap::IomapConfig,
    ) -> Model {
        cfg.iomap = true;
        cfg.measure = true;
        let session = Arc::new(Session::new(fs, cfg));
        let mut m = Model {
            k: TestKernel::start(session.clone(), 0, 0),
            session,
            dev_file,
            dev_size,
            dev_cookie: 1,
            bs: 0,
            maxbytes: 0,
            cache: MappingCache::new(0),
            cache_maxbytes: 0,
            counters: Counters::default(),
            wc: Default::default(),
            dev_invals: Vec::new(),
            violations: Vec::new(),
            upserted: Vec::new(),
            iomap_inodes: HashMap::new(),
            oracle,
            want_config,
            reply_wait: Default::default(),
            atomic: false,
        };
        m.init();
        m.session
            .activate_iomap(m.dev_cookie)
            .expect("activate iomap");
        m.config();
        m
    }

    pub fn violation(&mut self, s: String) {
        if self.violations.len() < 1000 {
            self.violations.push(s);
        }
    }

    pub fn assert_clean(&self, what: &str) {
        assert!(
            self.violations.is_empty(),
            "{what}: {} protocol violations:\n  {}",
            self.violations.len(),
            self.violations[..self.violations.len().min(20)].join("\n  ")
        );
    }

    pub fn send_raw(&self, bytes: &[u8]) {
        self.k.send_raw(bytes);
    }

    /// Send a request; returns its unique.
    pub fn request(&mut self, op: u32, nodeid: u64, body: &[u8]) -> u64 {
        *self.counters.requests.entry(op).or_default() += 1;
        self.k.request(op, nodeid, body)
    }

    /// The reply to `unique`, applying every notification that comes
    /// before it (the kernel applies them as the server writes them).
    pub fn reply(&mut self, unique: u64) -> (i32, Vec<u8>) {
        self.reply_to(&[unique]).1
    }

    /// The first reply to any of `uniques` (requests in flight together,
    /// answered in any order): which one, and its errno and body.
    pub fn reply_to(&mut self, uniques: &[u64]) -> (u64, (i32, Vec<u8>)) {
        let t = Instant::now();
        loop {
            let (h, rest, n) = self.k.receive();
            if h.len as usize != n {
                self.violation(format!("header says {} bytes, message has {n}", h.len));
            }
            if h.unique == 0 {
                self.notification(h.error, &rest);
                continue;
            }
            if !uniques.contains(&h.unique) {
                self.violation(format!(
                    "reply to {} while waiting for {uniques:?}",
                    h.unique
                ));
                continue;
            }
            if h.error > 0 || h.error < -4095 {
                self.violation(format!("reply error {} is not a negated errno", h.error));
            }
            if h.error != 0 && !rest.is_empty() {
                self.violation(format!(
                    "error reply {} carries {} bytes",
                    h.error,
                    rest.len()
                ));
            }
            self.reply_wait += t.elapsed();
            return (h.unique, (-h.error, rest));
        }
    }

    pub fn call(&mut self, op: u32, nodeid: u64, body: &[u8]) -> (i32, Vec<u8>) {
        let u = self.request(op, nodeid, body);
        self.reply(u)
    }

    fn notification(&mut self, code: i32, body: &[u8]) {
        match code {
            notify_code::IOMAP_UPSERT_MAPPINGS => {
                self.counters.upserts += 1;
                let Ok(up) = abi::IomapUpsertMappingsOut::read_from_bytes(body) else {
                    self.violation(format!("upsert notification of {} bytes", body.len()));
                    return;
                };
                if up.nodeid != up.attr_ino {
                    self.violation(format!(
                        "upsert nodeid {} attr_ino {}",
                        up.nodeid, up.attr_ino
                    ));
                }
                if !self.iomap_inodes.contains_key(&up.nodeid) {
                    self.violation(format!(
                        "upsert for node {} never seen as an iomap file",
                        up.nodeid
                    ));
                }
                let (Some(read), Some(write)) = (decode(&up.read), decode(&up.write)) else {
                    self.violation(format!("upsert with an unknown type: {up:?}"));
                    return;
                };
                if let Err(e) = kernel_check(&read, read.offset, self.bs, self.maxbytes, false) {
                    self.violation(format!("upserted read mapping {read:?}: {e}"));
                    return;
                }
                if !matches!(
                    read.kind,
                    MapType::Mapped | MapType::Unwritten | MapType::Hole
                ) {
                    self.violation(format!("upserted read mapping of type {:?}", read.kind));
                    return;
                }
                if read.kind.has_addr() && read.dev != self.dev_cookie {
                    self.violation(format!("upserted mapping on device {}", read.dev));
                }
                if write.kind != MapType::PureOverwrite && write.length != 0 {
                    self.violation(format!(
                        "read-only mount upserted a write mapping {write:?}"
                    ));
                }
                self.check_device_range(&read, "upsert");
                if std::env::var_os("KMODEL_TRACE").is_some() {
                    eprintln!("UPSERT {read:?}");
                }
                self.upserted.push((up.nodeid, read));
                if let Err(e) = self.cache.upsert(node_key(up.nodeid), Fork::Read, read) {
                    self.violation(format!("upsert rejected by the cache: {e}"));
                }
                if write.kind != MapType::PureOverwrite && write.length != 0 {
                    let _ = self.cache.upsert(node_key(up.nodeid), Fork::Write, write);
                }
            }
            notify_code::IOMAP_INVAL_MAPPINGS => {
                self.counters.invals += 1;
                if std::env::var_os("KMODEL_TRACE").is_some() {
                    eprintln!("INVAL {body:?}");
                }
                let Ok(inv) = abi::IomapInvalMappingsOut::read_from_bytes(body) else {
                    self.violation(format!("inval notification of {} bytes", body.len()));
                    return;
                };
                for (fork, r) in [(Fork::Read, inv.read), (Fork::Write, inv.write)] {
                    if r.length == 0 {
                        continue;
                    }
                    if r.offset == 0 && r.length == abi::IOMAP_INVAL_TO_EOF && fork == Fork::Read {
                        self.cache.forget_inode(node_key(inv.nodeid));
                    } else {
                        let len = if r.length == abi::IOMAP_INVAL_TO_EOF {
                            u64::MAX - r.offset
                        } else {
                            r.length
                        };
                        self.cache.remove(node_key(inv.nodeid), fork, r.offset, len);
                    }
                }
            }
            notify_code::IOMAP_DEV_INVAL => {
                let Ok(d) = abi::IomapDevInvalOut::read_from_bytes(body) else {
                    self.violation(format!("dev inval notification of {} bytes", body.len()));
                    return;
                };
                let r = d.range;
                if d.dev != self.dev_cookie || d.reserved != 0 {
                    self.violation(format!("dev inval of device {} ({d:?})", d.dev));
                }
                if !r.offset.is_multiple_of(self.bs)
                    || !r.length.is_multiple_of(self.bs)
                    || r.length == 0
                    || r.offset.saturating_add(r.length) > self.dev_size
                {
                    self.violation(format!(
                        "dev inval of {r:?}: unaligned, empty or past the device"
                    ));
                }
                self.dev_invals.push((r.offset, r.length));
            }
            c => self.violation(format!("unexpected notification code {c}")),
        }
    }

    fn init(&mut self) {
        let all = u64::MAX >> 20;
        let init = abi::InitIn {
            major: 7,
            minor: abi::IOMAP_MINOR_VERSION,
            max_readahead: 1 << 20,
            flags: all as u32,
            flags2: (all >> 32) as u32,
            ..Default::default()
        };
        let (err, out) = self.call(opcode::INIT, 0, init.as_bytes());
        assert_eq!(err, 0, "INIT");
        let out = abi::InitOut::read_from_bytes(&out).expect("64-byte init reply");
        let granted = out.flags as u64 | (out.flags2 as u64) << 32;
        assert_ne!(
            granted & init_flags::IOMAP,
            0,
            "FUSE_IOMAP offered but not accepted"
        );
        assert_ne!(granted & init_flags::INIT_EXT, 0);
        assert_eq!(granted & !all, 0, "granted flags that were not offered");
        assert_eq!(out.minor, abi::IOMAP_MINOR_VERSION);
    }

    fn config(&mut self) {
        let cin = abi::IomapConfigIn {
            flags: abi::iomap_config::ALL,
            maxbytes: i64::MAX,
            cache_maxbytes: KERNEL_CACHE_MAXBYTES,
            ..Default::default()
        };
        let (err, out) = self.call(opcode::IOMAP_CONFIG, 0, cin.as_bytes());
        assert_eq!(err, 0, "IOMAP_CONFIG");
        assert_eq!(out.len(), 104, "IOMAP_CONFIG reply size");
        let c = abi::IomapConfigOut::read_from_bytes(&out).unwrap();
        let want = self.want_config;
        assert_eq!(c.flags, abi::iomap_config::ALL);
        assert_eq!(c.s_blocksize, want.block_size);
        assert_eq!(c.s_maxbytes as u64, want.maxbytes);
        assert_eq!(c.s_uuid, want.uuid);
        assert_eq!(c.s_uuid_len, 16);
        assert_eq!(
            (c.s_time_gran, c.s_time_min, c.s_time_max),
            (want.time_gran, want.time_min, want.time_max)
        );
        assert_eq!(c.s_max_links, want.max_links);
        assert!(c.s_id.contains(&0), "s_id not NUL-terminated");
        assert!(
            c.cache_maxbytes <= KERNEL_CACHE_MAXBYTES,
            "cache_maxbytes above the kernel's limit"
        );
        self.bs = c.s_blocksize as u64;
        self.maxbytes = c.s_maxbytes as u64;
        self.cache_maxbytes = c.cache_maxbytes;
        self.cache = MappingCache::new(c.cache_maxbytes as usize);
    }

    /// Attribute rules: regular files carry IOMAP + EXCLUSIVE and the
    /// inode's S/i/a flags; nothing else carries any flag.
    fn check_attr(&mut self, attr: &abi::Attr) {
        let ino = InodeNo(attr.ino as u32);
        let Some(oracle) = &self.oracle else {
            let want = if attr.mode & libc::S_IFMT == libc::S_IFREG {
                attr_flags::IOMAP | attr_flags::EXCLUSIVE
            } else {
                0
            };
            let mut may = attr_flags::SYNC | attr_flags::IMMUTABLE | attr_flags::APPEND;
            if self.atomic && want != 0 {
                may |= attr_flags::ATOMIC;
            }
            if attr.flags & !may != want {
                self.violation(format!(
                    "inode {ino}: fuse_attr.flags {:#x}, expected {want:#x}",
                    attr.flags
                ));
            }
            if attr.flags & attr_flags::IOMAP != 0 {
                self.iomap_inodes.insert(attr.ino, *attr);
            }
            return;
        };
        let Ok(a) = oracle.getattr(ino) else {
            self.violation(format!("attr for inode {ino} the engine cannot read"));
            return;
        };
        let want = if a.kind == ext4_engine::FileType::Regular {
            let mut f = attr_flags::IOMAP | attr_flags::EXCLUSIVE;
            if a.flags & 0x8 != 0 {
                f |= attr_flags::SYNC;
            }
            if a.flags & 0x10 != 0 {
                f |= attr_flags::IMMUTABLE;
            }
            if a.flags & 0x20 != 0 {
                f |= attr_flags::APPEND;
            }
            f
        } else {
            0
        };
        if attr.flags != want {
            self.violation(format!(
                "inode {ino} ({:?}): fuse_attr.flags {:#x}, expected {want:#x}",
                a.kind, attr.flags
            ));
        }
        if attr.flags & attr_flags::IOMAP != 0 {
            self.iomap_inodes.insert(attr.ino, *attr);
        }
    }

    /// Resolve a path (relative to the root) with LOOKUPs.
    pub fn lookup_path(&mut self, path: &str) -> Result<Node, i32> {
        let mut nodeid = abi::ROOT_ID;
        let mut attr = abi::Attr::default();
        for comp in path.split('/').filter(|c| !c.is_empty()) {
            let mut name = comp.as_bytes().to_vec();
            name.push(0);
            let (err, out) = self.call(opcode::LOOKUP, nodeid, &name);
            if err != 0 {
                return Err(err);
            }
            let e = abi::EntryOut::read_from_bytes(&out).expect("128-byte entry");
            if e.nodeid == 0 {
                return Err(libc::ENOENT);
            }
            self.check_attr(&e.attr);
            if e.nodeid != e.attr.ino {
                self.violation(format!(
                    "{path}: nodeid {} but ino {}",
                    e.nodeid, e.attr.ino
                ));
            }
            nodeid = e.nodeid;
            attr = e.attr;
        }
        Ok(Node { nodeid, attr })
    }

    pub fn getattr(&mut self, node: &Node) -> abi::Attr {
        let (err, out) = self.call(
            opcode::GETATTR,
            node.nodeid,
            abi::GetattrIn::default().as_bytes(),
        );
        assert_eq!(err, 0, "GETATTR");
        let a = abi::AttrOut::read_from_bytes(&out).unwrap().attr;
        self.check_attr(&a);
        a
    }

    pub fn open(&mut self, node: &Node) {
        let args = abi::OpenIn {
            flags: libc::O_RDONLY as u32,
            open_flags: 0,
        };
        let (err, out) = self.call(opcode::OPEN, node.nodeid, args.as_bytes());
        assert_eq!(err, 0, "OPEN");
        assert_eq!(out.len(), 16, "OPEN reply size");
    }

    pub fn release(&mut self, node: &Node) {
        let (err, _) = self.call(
            opcode::RELEASE,
            node.nodeid,
            abi::ReleaseIn::default().as_bytes(),
        );
        assert_eq!(err, 0, "RELEASE");
    }

    /// One `IOMAP_BEGIN` upcall with every check applied; `Err(errno)` for
    /// an error reply.
    pub fn begin(
        &mut self,
        node: &Node,
        pos: u64,
        count: u64,
        opflags: u32,
    ) -> Result<(Mapping, Mapping), i32> {
        self.counters.begin += 1;
        let args = abi::IomapBeginIn {
            opflags,
            reserved: 0,
            attr_ino: node.attr.ino,
            pos,
            count,
        };
        let (err, out) = self.call(opcode::IOMAP_BEGIN, node.nodeid, args.as_bytes());
        if err != 0 {
            return Err(err);
        }
        if out.len() != 64 {
            self.violation(format!("IOMAP_BEGIN reply of {} bytes", out.len()));
            return Err(libc::EIO);
        }
        let o = abi::IomapBeginOut::read_from_bytes(&out).unwrap();
        if std::env::var_os("KMODEL_TRACE").is_some() {
            eprintln!("BEGIN({pos}, {count}, {opflags:#x}) = {:?}", o.read);
        }
        let (Some(read), Some(write)) = (decode(&o.read), decode(&o.write)) else {
            self.violation(format!(
                "IOMAP_BEGIN({pos}) answered an unknown type: {o:?}"
            ));
            return Err(libc::EIO);
        };
        for (m, w) in [(&read, false), (&write, true)] {
            if let Err(e) = kernel_check(m, pos, self.bs, self.maxbytes, w) {
                self.violation(format!(
                    "inode {} IOMAP_BEGIN({pos}, {count}, {opflags:#x}) {} = {m:?}: {e}",
                    node.attr.ino,
                    if w { "write" } else { "read" }
                ));
                return Err(libc::EUCLEAN);
            }
        }
        if read.kind == MapType::Delalloc {
            self.violation(format!("delalloc on a read-only mount: {read:?}"));
        }
        if read.kind.has_addr() && read.dev != self.dev_cookie {
            self.violation(format!(
                "mapping on device {} (registered: {})",
                read.dev, self.dev_cookie
            ));
        }
        if read.kind == MapType::RetryCache && opflags & op::REPORT != 0 {
            self.violation("RETRY_CACHE for a report".into());
        }
        self.check_device_range(&read, "IOMAP_BEGIN");
        Ok((read, write))
    }

    /// Mapped ranges must lie inside the device, block-aligned.
    fn check_device_range(&mut self, m: &Mapping, what: &str) {
        if !m.kind.has_addr() {
            return;
        }
        if !m.addr.is_multiple_of(self.bs) {
            self.violation(format!("{what}: unaligned device address {m:?}"));
        }
        if m.addr.saturating_add(m.length) > self.dev_size {
            self.violation(format!(
                "{what}: {m:?} reaches past the {}-byte device",
                self.dev_size
            ));
        }
    }

    /// The read mapping covering `pos`, as the page cache or a fault gets
    /// it: the kernel's cache first, an upcall on a miss (cached after),
    /// one more lookup after `RETRY_CACHE`.
    pub fn cached_mapping(
        &mut self,
        node: &Node,
        pos: u64,
        count: u64,
        opflags: u32,
    ) -> Result<Mapping, i32> {
        if let Lookup::Hit(m, _) = self.cache.lookup(node_key(node.nodeid), Fork::Read, pos) {
            self.counters.cache_hits += 1;
            return Ok(m);
        }
        let (read, _) = self.begin(node, pos, count, opflags)?;
        if read.kind == MapType::RetryCache {
            self.counters.retry_cache += 1;
            return match self.cache.lookup(node_key(node.nodeid), Fork::Read, pos) {
                Lookup::Hit(m, _) => Ok(m),
                _ => {
                    self.violation(format!(
                        "inode {} RETRY_CACHE at {pos} ({read:?}) but the cache has nothing there",
                        node.attr.ino
                    ));
                    Err(libc::EIO)
                }
            };
        }
        if matches!(
            read.kind,
            MapType::Mapped | MapType::Unwritten | MapType::Hole
        ) {
            if let Err(e) = self.cache.upsert(node_key(node.nodeid), Fork::Read, read) {
                self.violation(format!("caching {read:?}: {e}"));
            }
        }
        Ok(read)
    }

    /// The bytes `pos..pos+n` of a file under mapping `m` (which covers
    /// `pos`): from the device, zeros, or (inline) a READ to the server.
    fn data(&mut self, node: &Node, m: &Mapping, pos: u64, n: usize, size: u64) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        // The kernel zeroes everything past EOF itself.
        let valid = size.saturating_sub(pos).min(n as u64) as usize;
        if valid == 0 {
            return buf;
        }
        match m.kind {
            MapType::Mapped => {
                let addr = m.addr + (pos - m.offset);
                if let Err(e) = self.dev_file.read_exact_at(&mut buf[..valid], addr) {
                    self.violation(format!("device read at {addr}+{valid}: {e}"));
                }
            }
            MapType::Hole | MapType::Unwritten => {}
            MapType::Inline => {
                self.counters.reads += 1;
                self.counters.inline_reads += 1;
                let args = abi::ReadIn {
                    offset: pos,
                    size: valid as u32,
                    ..Default::default()
                };
                let (err, out) = self.call(opcode::READ, node.nodeid, args.as_bytes());
                if err != 0 {
                    self.violation(format!(
                        "READ of inline inode {} at {pos}: errno {err}",
                        node.attr.ino
                    ));
                } else {
                    let k = out.len().min(valid);
                    buf[..k].copy_from_slice(&out[..k]);
                }
            }
            k => self.violation(format!("cannot read through a {k:?} mapping")),
        }
        buf
    }

    /// A page-cache read of `off..off+len`: block-aligned ranges, each
    /// mapped through the cache.
    pub fn read_buffered(
        &mut self,
        node: &Node,
        off: u64,
        len: u64,
        opflags: u32,
    ) -> Result<Vec<u8>, i32> {
        let size = node.attr.size;
        let end = off.saturating_add(len).min(size);
        if off >= end {
            return Ok(Vec::new());
        }
        let bs = self.bs;
        let start = off / bs * bs;
        let stop = end.div_ceil(bs) * bs;
        let mut out = Vec::with_capacity((stop - start) as usize);
        let mut pos = start;
        while pos < stop {
            let m = self.cached_mapping(node, pos, stop - pos, opflags)?;
            if !m.covers(pos) {
                self.violation(format!("mapping {m:?} does not cover {pos}"));
                return Err(libc::EIO);
            }
            let upto = m.end().min(stop);
            let d = self.data(node, &m, pos, (upto - pos) as usize, size);
            out.extend_from_slice(&d);
            pos = upto;
        }
        Ok(out[(off - start) as usize..(end - start) as usize].to_vec())
    }

    /// A direct read of an arbitrary range: one upcall per mapping, no cache.
    pub fn read_direct(&mut self, node: &Node, off: u64, len: u64) -> Result<Vec<u8>, i32> {
        let size = node.attr.size;
        let end = off.saturating_add(len).min(size);
        let mut out = Vec::new();
        let mut pos = off;
        while pos < end {
            let (m, _) = self.begin(node, pos, end - pos, op::DIRECT)?;
            if m.kind == MapType::RetryCache {
                self.violation("RETRY_CACHE for a direct read".into());
                return Err(libc::EIO);
            }
            let upto = m.end().min(end);
            let d = self.data(node, &m, pos, (upto - pos) as usize, size);
            out.extend_from_slice(&d);
            pos = upto;
        }
        Ok(out)
    }

    /// FIEMAP's walk: `REPORT` answers from 0 to the end of the last block.
    pub fn report_walk(&mut self, node: &Node) -> Result<Vec<Mapping>, i32> {
        let eof = node.attr.size.div_ceil(self.bs) * self.bs;
        let mut pos = 0;
        let mut maps: Vec<Mapping> = Vec::new();
        while pos < eof {
            let (m, _) = self.begin(node, pos, eof - pos, op::REPORT)?;
            // An answer may start before `pos` (it only has to cover it):
            // the kernel uses the part from `pos` on.
            let m = m.tail_from(pos);
            pos = m.end();
            maps.push(m);
            if maps.len() > 10_000_000 {
                self.violation("report walk does not end".into());
                break;
            }
        }
        Ok(maps)
    }

    /// Every upsert received so far must say what `IOMAP_BEGIN` (a report,
    /// never answered from a push) says over the whole upserted range:
    /// same type, flags and device, and for mapped types the same file to
    /// device translation. (Answers may be longer or shorter than the
    /// upsert: the engine's cache merges neighbours as it loads them.)
    pub fn verify_upserts(&mut self) {
        let ups = std::mem::take(&mut self.upserted);
        for (ino, m) in &ups {
            let Some(attr) = self.iomap_inodes.get(ino).copied() else {
                continue;
            };
            let node = Node { nodeid: *ino, attr };
            let mut pos = m.offset;
            while pos < m.end() {
                let r = match self.begin(&node, pos, m.end() - pos, op::REPORT) {
                    Ok((r, _)) => r.tail_from(pos),
                    Err(e) => {
                        self.violation(format!(
                            "inode {ino}: upserted {m:?}, IOMAP_BEGIN({pos}) fails {e}"
                        ));
                        break;
                    }
                };
                let want = m.tail_from(pos);
                if (r.kind, r.flags, r.dev, r.addr) != (want.kind, want.flags, want.dev, want.addr)
                {
                    self.violation(format!(
                        "inode {ino}: upserted {m:?}, IOMAP_BEGIN({pos}) says {r:?}"
                    ));
                    break;
                }
                pos = r.end();
            }
        }
        self.upserted = ups;
    }

    pub fn server_stats(&self) -> Vec<ext4_fuse::session::OpStats> {
        self.session.request_stats()
    }

    /// End the connection and join the server (its panic fails the test).
    pub fn finish(self) {
        self.k.finish();
    }
}

pub fn decode(io: &abi::IomapIo) -> Option<Mapping> {
    io.mapping()
}

pub fn encode(m: &Mapping) -> abi::IomapIo {
    abi::IomapIo::from_mapping(m)
}

/// Size of a block device or file.
pub fn device_size(f: &File) -> u64 {
    let md = f.metadata().unwrap();
    if md.is_file() {
        return md.len();
    }
    let mut size: u64 = 0;
    // BLKGETSIZE64 = _IOR(0x12, 114, size_t)
    // SAFETY: the ioctl writes one u64.
    let r = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(f),
            0x8008_1272u64 as libc::c_ulong,
            &mut size,
        )
    };
    assert_eq!(r, 0, "BLKGETSIZE64");
    size
}
