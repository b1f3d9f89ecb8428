//! The FUSE session: reads requests from a [`Channel`], answers them from a
//! [`Backend`]. One `Session` is shared by every worker thread; each worker
//! owns its request and reply buffers, so the data path allocates nothing.
//!
//! Adding an opcode is one arm in [`Session::dispatch`] and one handler
//! method; `FUSE_INIT` flags (both words) are negotiated from one 64-bit
//! "wanted" set in [`negotiate`].

use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ext4_engine::attr::{Attr, FileType};
use ext4_engine::error::{errno, Error, Object};
use ext4_engine::volume::{Whence, ROOT_INO};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::abi::{self, fopen, init_flags as flag, opcode, InHeader, OutHeader};
use crate::backend::Backend;
use crate::channel::Channel;
use crate::log;

/// Pages per request (`FUSE_MAX_PAGES`): 1 MiB reads and readdirs.
pub const MAX_PAGES: u16 = 256;
const PAGE: usize = 4096;
/// Largest payload of a request or reply on the data path.
pub const MAX_IO: usize = MAX_PAGES as usize * PAGE;
/// Request buffer: the kernel refuses reads into anything smaller than a
/// header plus `fuse_write_in` plus `max_write`.
pub const IN_BUF_SIZE: usize = MAX_IO + PAGE;
const OUT_HEADER: usize = core::mem::size_of::<OutHeader>();
const IN_HEADER: usize = core::mem::size_of::<InHeader>();

const ESTALE: i32 = libc::ESTALE;
const EPROTO: i32 = libc::EPROTO;

/// Settings of a session, fixed at mount time.
#[derive(Clone, Debug)]
pub struct Config {
    /// Entry and attribute cache timeout. Nothing but this server can change
    /// a read-only mount, so it can be long.
    pub timeout: Duration,
    /// Report every inode as owned by this uid / gid.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Offer `FUSE_EXPORT_SUPPORT` (NFS export: lookups of "." and "..").
    pub export_support: bool,
    /// Offer `FUSE_POSIX_ACL`, so the kernel enforces ACLs with
    /// `default_permissions`.
    pub posix_acl: bool,
    /// Kernel's limit of background (readahead) requests in flight.
    pub max_background: u16,
    /// Accept `FUSE_IOMAP` when the kernel offers it. The data path only
    /// switches once [`Session::activate_iomap`] names the device.
    pub iomap: bool,
    /// Largest mapping cache the kernel is asked to keep (`cache_maxbytes`
    /// of `IOMAP_CONFIG`; the kernel's own limit wins if smaller).
    pub iomap_cache_bytes: u32,
    /// Most mappings pushed into the kernel's cache by one `IOMAP_BEGIN`
    /// (0: no pushes at all, every miss is an upcall).
    pub iomap_push_window: usize,
    /// Mappings pushed when an iomap file is opened.
    pub iomap_open_push: usize,
    /// `s_id` for `IOMAP_CONFIG` (the device name, as the kernel shows it).
    pub iomap_sid: String,
    /// Count requests and the server's CPU time per opcode
    /// ([`Session::request_stats`]).
    pub measure: bool,
    /// When the kernel asks for directory listings with attributes.
    pub readdirplus: ReaddirPlus,
}

/// `-o readdirplus=`: which listings carry each entry's attributes
/// (`READDIRPLUS`), saving the kernel a `LOOKUP` per entry it then uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReaddirPlus {
    /// The kernel's adaptive mode: the first chunk of a listing, and the
    /// next ones only after an entry was looked up or stat'ed since.
    #[default]
    Auto,
    /// Every listing.
    On,
    /// None: a `LOOKUP` per entry the client uses.
    Off,
}

impl ReaddirPlus {
    pub fn parse(v: &str) -> Option<ReaddirPlus> {
        match v {
            "auto" => Some(ReaddirPlus::Auto),
            "on" | "1" | "yes" => Some(ReaddirPlus::On),
            "off" | "0" | "no" => Some(ReaddirPlus::Off),
            _ => None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            timeout: Duration::from_secs(365 * 86400),
            uid: None,
            gid: None,
            export_support: true,
            posix_acl: true,
            max_background: 64,
            iomap: false,
            iomap_cache_bytes: 4 << 20,
            iomap_push_window: 1 << 16,
            iomap_open_push: 8,
            iomap_sid: String::from("ext4-fuse"),
            measure: false,
            readdirplus: ReaddirPlus::Auto,
        }
    }
}

impl Config {
    /// The `FUSE_INIT` flags this server would like, both words.
    pub fn wanted_flags(&self) -> u64 {
        let mut want = flag::ASYNC_READ
            | flag::PARALLEL_DIROPS
            | flag::CACHE_SYMLINKS
            | flag::MAX_PAGES
            | flag::ASYNC_DIO
            | flag::NO_OPEN_SUPPORT
            | flag::NO_OPENDIR_SUPPORT
            | flag::INIT_EXT;
        want |= match self.readdirplus {
            ReaddirPlus::Auto => flag::DO_READDIRPLUS | flag::READDIRPLUS_AUTO,
            ReaddirPlus::On => flag::DO_READDIRPLUS,
            ReaddirPlus::Off => 0,
        };
        if self.posix_acl {
            want |= flag::POSIX_ACL;
        }
        if self.export_support {
            want |= flag::EXPORT_SUPPORT;
        }
        if self.iomap {
            want |= flag::IOMAP;
        }
        want
    }
}

/// What `FUSE_INIT` settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub minor: u32,
    /// Granted flags, both words.
    pub flags: u64,
    pub max_readahead: u32,
}

/// Answer a `FUSE_INIT`. `body_len` is how much of `fuse_init_in` the kernel
/// sent (older kernels send 16 bytes, without `flags2`). Returns the reply
/// and, unless the kernel must retry with a lower major, what was agreed.
pub fn negotiate(
    init: &abi::InitIn,
    body_len: usize,
    cfg: &Config,
) -> Result<(abi::InitOut, Option<Negotiated>), i32> {
    let mut out = abi::InitOut {
        major: abi::KERNEL_VERSION,
        minor: abi::KERNEL_MINOR_VERSION,
        ..Default::default()
    };
    if init.major > abi::KERNEL_VERSION {
        // The kernel retries INIT with our major after this answer.
        return Ok((out, None));
    }
    if init.major < abi::KERNEL_VERSION || init.minor < abi::MIN_MINOR_VERSION {
        return Err(EPROTO);
    }
    let mut offered = init.flags as u64;
    if offered & flag::INIT_EXT != 0 && body_len >= 20 {
        offered |= (init.flags2 as u64) << 32;
    }
    let granted = offered & cfg.wanted_flags();
    out.minor = if granted & flag::IOMAP != 0 {
        // A kernel offering iomap speaks the series' protocol version.
        init.minor.min(abi::IOMAP_MINOR_VERSION)
    } else {
        init.minor.min(abi::KERNEL_MINOR_VERSION)
    };
    out.max_readahead = init.max_readahead;
    out.flags = granted as u32;
    out.flags2 = (granted >> 32) as u32;
    out.max_background = cfg.max_background;
    out.congestion_threshold = cfg.max_background / 4 * 3;
    out.max_write = MAX_IO as u32;
    out.time_gran = 1;
    if granted & flag::MAX_PAGES != 0 {
        out.max_pages = MAX_PAGES;
    }
    Ok((
        out,
        Some(Negotiated {
            minor: out.minor,
            flags: granted,
            max_readahead: out.max_readahead,
        }),
    ))
}

/// FUSE node id -> ext4 inode. FUSE's root is 1, ext4's is 2; node id 2 is
/// never handed out (inode 2 always travels as 1), so it is stale.
pub fn nodeid_to_ino(nodeid: u64) -> Result<u32, i32> {
    match nodeid {
        abi::ROOT_ID => Ok(ROOT_INO),
        0 => Err(errno::EINVAL),
        n if n == ROOT_INO as u64 => Err(ESTALE),
        n => u32::try_from(n).map_err(|_| ESTALE),
    }
}

/// ext4 inode -> FUSE node id. Inode 1 (bad blocks) would alias FUSE's root,
/// so a directory entry naming it is corruption.
pub fn ino_to_nodeid(ino: u32) -> Result<u64, Error> {
    match ino {
        ROOT_INO => Ok(abi::ROOT_ID),
        0 | 1 => Err(Error::corrupt(
            Object::Inode(ino),
            "directory entry names a reserved inode",
        )),
        n => Ok(n as u64),
    }
}

/// The reply being built: a fixed buffer with room for the header in front.
pub struct ReplyBuf {
    buf: Vec<u8>,
    len: usize,
}

impl ReplyBuf {
    pub fn new(payload_capacity: usize) -> ReplyBuf {
        ReplyBuf {
            buf: vec![0; OUT_HEADER + payload_capacity],
            len: OUT_HEADER,
        }
    }
    fn reset(&mut self) {
        self.len = OUT_HEADER;
    }
    /// Space left for payload.
    pub fn room(&self) -> usize {
        self.buf.len() - self.len
    }
    pub fn payload_len(&self) -> usize {
        self.len - OUT_HEADER
    }
    /// Append `bytes`; `false` (and nothing appended) if they do not fit.
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        if bytes.len() > self.room() {
            return false;
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
        true
    }
    /// Append `n` zero bytes (record padding).
    fn pad(&mut self, n: usize) -> bool {
        if n > self.room() {
            return false;
        }
        self.buf[self.len..self.len + n].fill(0);
        self.len += n;
        true
    }
    /// The free space after the payload, to be filled in place and then
    /// committed with [`ReplyBuf::commit`].
    pub fn tail(&mut self, n: usize) -> &mut [u8] {
        let end = (self.len + n).min(self.buf.len());
        &mut self.buf[self.len..end]
    }
    /// The payload written so far, for filling in place.
    fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buf[OUT_HEADER..self.len]
    }
    pub fn commit(&mut self, n: usize) {
        self.len = (self.len + n).min(self.buf.len());
    }
    fn finish(&mut self, unique: u64, error: i32) -> &[u8] {
        if error != 0 {
            self.len = OUT_HEADER;
        }
        let h = OutHeader {
            len: self.len as u32,
            error: -error,
            unique,
        };
        self.buf[..OUT_HEADER].copy_from_slice(h.as_bytes());
        &self.buf[..self.len]
    }
}

/// One request: its header and the bytes after it.
pub struct Request<'a> {
    pub header: InHeader,
    pub body: &'a [u8],
}

impl<'a> Request<'a> {
    /// The fixed-size argument at the start of the body.
    fn arg<T: FromBytes>(&self) -> Result<T, i32> {
        T::read_from_prefix(self.body)
            .map(|(t, _)| t)
            .map_err(|_| errno::EINVAL)
    }
    /// A NUL-terminated name at `offset` in the body.
    fn name_at(&self, offset: usize) -> Result<&'a [u8], i32> {
        let rest = self.body.get(offset..).ok_or(errno::EINVAL)?;
        let end = rest.iter().position(|&b| b == 0).ok_or(errno::EINVAL)?;
        Ok(&rest[..end])
    }
    fn ino(&self) -> Result<u32, i32> {
        nodeid_to_ino(self.header.nodeid)
    }
}

fn opcode_name(op: u32) -> &'static str {
    match op {
        opcode::LOOKUP => "LOOKUP",
        opcode::FORGET => "FORGET",
        opcode::GETATTR => "GETATTR",
        opcode::READLINK => "READLINK",
        opcode::OPEN => "OPEN",
        opcode::READ => "READ",
        opcode::STATFS => "STATFS",
        opcode::RELEASE => "RELEASE",
        opcode::GETXATTR => "GETXATTR",
        opcode::LISTXATTR => "LISTXATTR",
        opcode::FLUSH => "FLUSH",
        opcode::INIT => "INIT",
        opcode::OPENDIR => "OPENDIR",
        opcode::READDIR => "READDIR",
        opcode::RELEASEDIR => "RELEASEDIR",
        opcode::ACCESS => "ACCESS",
        opcode::INTERRUPT => "INTERRUPT",
        opcode::DESTROY => "DESTROY",
        opcode::BATCH_FORGET => "BATCH_FORGET",
        opcode::READDIRPLUS => "READDIRPLUS",
        opcode::LSEEK => "LSEEK",
        opcode::STATX => "STATX",
        opcode::SYNCFS => "SYNCFS",
        opcode::FREEZE_FS => "FREEZE_FS",
        opcode::UNFREEZE_FS => "UNFREEZE_FS",
        opcode::SHUTDOWN_FS => "SHUTDOWN_FS",
        opcode::IOMAP_CONFIG => "IOMAP_CONFIG",
        opcode::IOMAP_IOEND => "IOMAP_IOEND",
        opcode::IOMAP_BEGIN => "IOMAP_BEGIN",
        opcode::IOMAP_END => "IOMAP_END",
        _ => "other",
    }
}

pub struct Session<B: Backend> {
    backend: B,
    config: Config,
    init: OnceLock<Negotiated>,
    iomap: iomap::State,
    stats: RequestStats,
}

/// Requests and server CPU time per opcode class, when
/// [`Config::measure`] is on.
struct RequestStats {
    count: [AtomicU64; STAT_SLOTS],
    cpu_ns: [AtomicU64; STAT_SLOTS],
}

impl Default for RequestStats {
    fn default() -> Self {
        RequestStats {
            count: std::array::from_fn(|_| AtomicU64::new(0)),
            cpu_ns: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

const STAT_SLOTS: usize = 64;

/// Slot of an opcode: plain opcodes by number, the iomap series above 54.
fn stat_slot(op: u32) -> usize {
    match op {
        0..=54 => op as usize,
        4089..=4095 => 55 + (op - 4089) as usize,
        _ => STAT_SLOTS - 1,
    }
}

/// Per-opcode request counts and server CPU time (thread time spent in
/// the handler, reply included).
#[derive(Clone, Debug, Default)]
pub struct OpStats {
    pub opcode: u32,
    pub count: u64,
    pub cpu_ns: u64,
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl<B: Backend> Session<B> {
    pub fn new(backend: B, config: Config) -> Self {
        Session {
            backend,
            config,
            init: OnceLock::new(),
            iomap: iomap::State::default(),
            stats: RequestStats::default(),
        }
    }

    /// Requests served so far per opcode, with the server's CPU time
    /// ([`Config::measure`] must be on).
    pub fn request_stats(&self) -> Vec<OpStats> {
        let mut v = Vec::new();
        for op in (0..=54).chain(4089..=4095) {
            let i = stat_slot(op);
            let count = self.stats.count[i].load(Ordering::Relaxed);
            if count > 0 {
                v.push(OpStats {
                    opcode: op,
                    count,
                    cpu_ns: self.stats.cpu_ns[i].load(Ordering::Relaxed),
                });
            }
        }
        v
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// What `FUSE_INIT` agreed, once it has happened.
    pub fn negotiated(&self) -> Option<Negotiated> {
        self.init.get().copied()
    }

    /// Serve requests until `FUSE_INIT` has been answered (requests before
    /// it get EIO, as the kernel never sends any).
    pub fn wait_init(&self, ch: &dyn Channel) -> io::Result<()> {
        let mut inbuf = vec![0u8; IN_BUF_SIZE];
        let mut out = ReplyBuf::new(MAX_IO);
        while self.init.get().is_none() {
            match receive(ch, &mut inbuf)? {
                Some(n) => self.handle(&inbuf, n, ch, &mut out),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the kernel closed the connection before FUSE_INIT",
                    ))
                }
            }
        }
        Ok(())
    }

    /// Serve requests until the connection ends (unmount, or EOF on a socket).
    pub fn serve(&self, ch: &dyn Channel) -> io::Result<()> {
        let mut inbuf = vec![0u8; IN_BUF_SIZE];
        let mut out = ReplyBuf::new(MAX_IO);
        while let Some(n) = receive(ch, &mut inbuf)? {
            self.handle(&inbuf, n, ch, &mut out);
        }
        Ok(())
    }

    /// Serve on every channel, one thread each, until all connections end.
    pub fn run(&self, channels: &[Arc<dyn Channel>]) -> io::Result<()> {
        std::thread::scope(|s| {
            let workers: Vec<_> = channels
                .iter()
                .enumerate()
                .map(|(i, ch)| {
                    std::thread::Builder::new()
                        .name(format!("fuse-worker-{i}"))
                        .spawn_scoped(s, move || self.serve(&**ch))
                })
                .collect::<io::Result<_>>()?;
            let mut result = Ok(());
            for w in workers {
                match w.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => result = Err(e),
                    Err(_) => result = Err(io::Error::other("a worker thread panicked")),
                }
            }
            result
        })
    }

    /// Handle one received message. `n` is its full length (more than
    /// `msg.len()` when it was cut).
    pub fn handle(&self, msg: &[u8], n: usize, ch: &dyn Channel, out: &mut ReplyBuf) {
        let start = if self.config.measure {
            thread_cpu_ns()
        } else {
            0
        };
        let got = n.min(msg.len());
        let Ok((header, _)) = InHeader::read_from_prefix(&msg[..got]) else {
            // Without a header there is no `unique` to answer to.
            log::error(format_args!(
                "dropped a {n}-byte request: shorter than a FUSE header"
            ));
            return;
        };
        out.reset();
        let result = if n > msg.len() {
            log::error(format_args!(
                "request {} of {n} bytes exceeds the {}-byte buffer",
                header.unique,
                msg.len()
            ));
            Some(Err(errno::EIO))
        } else if header.len as usize != n {
            Some(Err(errno::EINVAL))
        } else {
            // Extension headers (total_extlen, in 8-byte units) trail the body.
            match (n - IN_HEADER).checked_sub(header.total_extlen as usize * 8) {
                None => Some(Err(errno::EINVAL)),
                Some(body_len) => {
                    let req = Request {
                        header,
                        body: &msg[IN_HEADER..IN_HEADER + body_len],
                    };
                    if self.init.get().is_none() && header.opcode != opcode::INIT {
                        Some(Err(errno::EIO))
                    } else {
                        self.dispatch(&req, ch, out)
                    }
                }
            }
        };
        if log::debug_enabled() {
            log::debug(format_args!(
                "unique={} op={}({}) nodeid={} len={} -> {:?}",
                header.unique,
                opcode_name(header.opcode),
                header.opcode,
                header.nodeid,
                n,
                result.map(|r| r.map(|_| out.payload_len()))
            ));
        }
        if let Some(r) = result {
            let error = r.err().unwrap_or(0);
            send(ch, out.finish(header.unique, error));
        }
        if self.config.measure {
            let i = stat_slot(header.opcode);
            self.stats.count[i].fetch_add(1, Ordering::Relaxed);
            self.stats.cpu_ns[i].fetch_add(thread_cpu_ns() - start, Ordering::Relaxed);
        }
    }

    /// `None`: the opcode takes no reply.
    fn dispatch(
        &self,
        req: &Request<'_>,
        ch: &dyn Channel,
        out: &mut ReplyBuf,
    ) -> Option<Result<(), i32>> {
        if self.is_shut_down() {
            // After FUSE_SHUTDOWN_FS everything fails; requests that take
            // no reply still take none.
            return match req.header.opcode {
                opcode::FORGET
                | opcode::BATCH_FORGET
                | opcode::INTERRUPT
                | opcode::NOTIFY_REPLY => None,
                _ => Some(Err(errno::EIO)),
            };
        }
        if let Some(r) = self.dispatch_iomap(req, ch, out) {
            return Some(r);
        }
        Some(match req.header.opcode {
            opcode::INIT => self.do_init(req, out),
            opcode::LOOKUP => self.logged(self.do_lookup(req, out)),
            opcode::FORGET | opcode::BATCH_FORGET => return None, // node ids are inode numbers: nothing to drop
            opcode::INTERRUPT | opcode::NOTIFY_REPLY => return None,
            opcode::GETATTR => self.do_getattr(req, out),
            opcode::STATX => self.do_statx(req, out),
            opcode::READLINK => self.do_readlink(req, out),
            opcode::OPEN => self.do_open(req, ch, out, false),
            opcode::OPENDIR => self.do_open(req, ch, out, true),
            opcode::READ => self.do_read(req, out),
            opcode::READDIR => self.logged(self.do_readdir(req, out, false)),
            opcode::READDIRPLUS => self.logged(self.do_readdir(req, out, true)),
            // Nothing to flush on a read-only mount: ENOSYS tells the kernel
            // to stop sending FLUSH, a blocking round trip in every close().
            opcode::FLUSH => Err(errno::ENOSYS),
            opcode::RELEASE | opcode::RELEASEDIR | opcode::FSYNC | opcode::FSYNCDIR => Ok(()),
            opcode::GETXATTR => self.do_getxattr(req, out),
            opcode::LISTXATTR => self.do_listxattr(req, out),
            opcode::STATFS => self.do_statfs(out),
            opcode::ACCESS => self.do_access(req),
            opcode::LSEEK => self.do_lseek(req, out),
            opcode::DESTROY => Ok(()),
            // Nothing is ever dirty on a read-only mount.
            opcode::SYNCFS => Ok(()),
            opcode::SETATTR
            | opcode::SYMLINK
            | opcode::MKNOD
            | opcode::MKDIR
            | opcode::UNLINK
            | opcode::RMDIR
            | opcode::RENAME
            | opcode::RENAME2
            | opcode::LINK
            | opcode::WRITE
            | opcode::CREATE
            | opcode::TMPFILE
            | opcode::SETXATTR
            | opcode::REMOVEXATTR
            | opcode::FALLOCATE
            | opcode::COPY_FILE_RANGE => Err(errno::EROFS),
            _ => Err(errno::ENOSYS),
        })
    }

    /// Turn an engine error into an errno, logging the ones that mean the
    /// disk or the filesystem is damaged (the error names the object).
    fn fail(&self, op: &str, ino: u32, e: Error) -> i32 {
        if matches!(
            e,
            Error::Corrupt { .. }
                | Error::Checksum { .. }
                | Error::Io(_)
                | Error::Unsupported { .. }
        ) {
            log::error(format_args!("{op} on inode {ino}: {e}"));
        }
        e.errno()
    }

    /// Log damage the engine worked around during a directory operation.
    fn logged(&self, r: Result<(), i32>) -> Result<(), i32> {
        for e in self.backend.take_reports() {
            log::error(format_args!("{e} (skipped)"));
        }
        r
    }

    fn valid(&self) -> (u64, u32) {
        (
            self.config.timeout.as_secs(),
            self.config.timeout.subsec_nanos(),
        )
    }

    fn fuse_attr(&self, a: &Attr) -> abi::Attr {
        abi::Attr {
            ino: a.ino as u64,
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

    fn entry_out(&self, a: &Attr) -> Result<abi::EntryOut, Error> {
        let (secs, nsecs) = self.valid();
        Ok(abi::EntryOut {
            nodeid: ino_to_nodeid(a.ino)?,
            generation: a.generation as u64,
            entry_valid: secs,
            attr_valid: secs,
            entry_valid_nsec: nsecs,
            attr_valid_nsec: nsecs,
            attr: self.fuse_attr(a),
        })
    }

    fn do_init(&self, req: &Request<'_>, out: &mut ReplyBuf) -> Result<(), i32> {
        if req.body.len() < abi::INIT_IN_COMPAT_SIZE {
            return Err(errno::EINVAL);
        }
        if self.init.get().is_some() {
            return Err(errno::EIO);
        }
        let mut raw = [0u8; core::mem::size_of::<abi::InitIn>()];
        let len = req.body.len().min(raw.len());
        raw[..len].copy_from_slice(&req.body[..len]);
        let init = abi::InitIn::read_from_bytes(&raw[..]).map_err(|_| errno::EINVAL)?;
        let (reply, agreed) = negotiate(&init, req.body.len(), &self.config)?;
        // Before 7.23 the kernel expects the short (24-byte) init reply.
        let size = if reply.minor < 23 && agreed.is_some() {
            24
        } else {
            core::mem::size_of::<abi::InitOut>()
        };
        out.push(&reply.as_bytes()[..size]);
        if let Some(agreed) = agreed {
            let _ = self.init.set(agreed);
            log::debug(format_args!(
                "INIT: kernel 7.{} flags {:#x}, granted {:#x}",
                init.minor,
                init.flags as u64 | (init.flags2 as u64) << 32,
                agreed.flags
            ));
        }
        Ok(())
    }

    fn do_lookup(&self, req: &Request<'_>, out: &mut ReplyBuf) -> Result<(), i32> {
        let dir = req.ino()?;
        let name = req.name_at(0)?;
        // "." only comes from NFS export (decoding a file handle): it asks
        // whether node `dir` still exists.
        let found = if name == b"." {
            self.backend.getattr(dir).and_then(|a| {
                if a.nlink == 0 {
                    Err(Error::NotFound)
                } else {
                    Ok(a)
                }
            })
        } else {
            self.backend.lookup(dir, name)
        };
        match found.and_then(|a| self.entry_out(&a)) {
            Ok(e) => {
                out.push(e.as_bytes());
                Ok(())
            }
            Err(Error::NotFound) if name != b"." => {
                // Node id 0 with a timeout: the kernel caches the negative entry.
                let (secs, nsecs) = self.valid();
                let e = abi::EntryOut {
                    entry_valid: secs,
                    entry_valid_nsec: nsecs,
                    ..Default::default()
                };
                out.push(e.as_bytes());
                Ok(())
            }
            Err(Error::NotFound) => Err(ESTALE),
            Err(e) => Err(self.fail("lookup", dir, e)),
        }
    }

    fn do_getattr(&self, req: &Request<'_>, out: &mut ReplyBuf) -> Result<(), i32> {
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

    fn do_statx(&self, req: &Request<'_>, out: &mut ReplyBuf) -> Result<(), i32> {
        let ino = req.ino()?;
        let _args: abi::StatxIn = req.arg()?;
        let a = self
            .backend
            .getattr(ino)
            .map_err(|e| self.fail("statx", ino, e))?;
        let (secs, nsecs) = self.valid();
        let t = |t: ext4_engine::attr::Timestamp| abi::SxTime {
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
            ino: a.ino as u64,
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

    fn do_readlink(&self, req: &Request<'_>, out: &mut ReplyBuf) -> Result<(), i32> {
        let ino = req.ino()?;
        let target = self
            .backend
            .readlink(ino)
            .map_err(|e| self.fail("readlink", ino, e))?;
        if !out.push(&target) {
            return Err(errno::ENAMETOOLONG);
        }
        Ok(())
    }

    fn do_open(
        &self,
        req: &Request<'_>,
        ch: &dyn Channel,
        out: &mut ReplyBuf,
        dir: bool,
    ) -> Result<(), i32> {
        let ino = req.ino()?;
        let args: abi::OpenIn = req.arg()?;
        let flags = args.flags as i32;
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            return Err(errno::EROFS);
        }
        // A read-only mount keeps no per-open state. When the kernel can do
        // without OPEN/OPENDIR, ENOSYS makes it stop sending them (and the
        // RELEASEs), keeping its caches as KEEP_CACHE/CACHE_DIR would; a
        // tree read then costs no request per file. Not for iomap files,
        // whose open is when their first mappings are pushed.
        let no_open = if dir {
            flag::NO_OPENDIR_SUPPORT
        } else {
            flag::NO_OPEN_SUPPORT
        };
        let offered = self.negotiated().is_some_and(|n| n.flags & no_open != 0);
        if offered && (dir || !self.iomap_active()) {
            return Err(errno::ENOSYS);
        }
        // Nothing can change a read-only mount behind the kernel's back, so
        // its page cache (and directory cache) stay valid across opens.
        let open_flags = if dir {
            fopen::KEEP_CACHE | fopen::CACHE_DIR
        } else {
            fopen::KEEP_CACHE
        };
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

    fn do_read(&self, req: &Request<'_>, out: &mut ReplyBuf) -> Result<(), i32> {
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
            .map_err(|e| self.fail("read", ino, e))?;
        out.commit(n.min(size));
        Ok(())
    }

    fn do_readdir(&self, req: &Request<'_>, out: &mut ReplyBuf, plus: bool) -> Result<(), i32> {
        let dir = req.ino()?;
        let args: abi::ReadIn = req.arg()?;
        let size = (args.size as usize).min(out.room());
        let base = out.payload_len();
        let limit = base + size;
        if !plus {
            let result = self.backend.readdir(dir, args.offset, &mut |e| {
                let d = abi::Dirent {
                    ino: e.ino as u64,
                    off: e.next,
                    namelen: e.name.len() as u32,
                    typ: e.kind.map_or(0, |k| k.dtype() as u32),
                };
                push_record(out, d.as_bytes(), e.name, limit)
            });
            return result.map_err(|e| self.fail("readdir", dir, e));
        }

        // READDIRPLUS: write the records with blank attributes first, then
        // look each entry up and fill its attributes in place, so that no
        // engine call runs inside another one's callback and nothing is
        // allocated per entry.
        self.backend
            .readdir(dir, args.offset, &mut |e| {
                let d = abi::DirentPlus {
                    entry_out: abi::EntryOut::default(),
                    dirent: abi::Dirent {
                        ino: e.ino as u64,
                        off: e.next,
                        namelen: e.name.len() as u32,
                        typ: e.kind.map_or(0, |k| k.dtype() as u32),
                    },
                };
                push_record(out, d.as_bytes(), e.name, limit)
            })
            .map_err(|e| self.fail("readdirplus", dir, e))?;
        const HEAD: usize = core::mem::size_of::<abi::DirentPlus>();
        let mut at = base;
        while let Some(rec) = out.payload_mut().get_mut(at..) {
            let Ok((d, rest)) = abi::DirentPlus::read_from_prefix(rec) else {
                break;
            };
            let name_len = d.dirent.namelen as usize;
            at += abi::rec_align(HEAD + name_len);
            let Some(name) = rest.get(..name_len) else {
                break;
            };
            // The kernel takes no reference on "." and "..", and an entry
            // whose inode cannot be read is listed without attributes (the
            // error then surfaces on its own lookup, for that file only).
            if name == b"." || name == b".." {
                continue;
            }
            let ino = d.dirent.ino as u32;
            match self.backend.getattr(ino).and_then(|a| self.entry_out(&a)) {
                Ok(e) => rec[..core::mem::size_of::<abi::EntryOut>()].copy_from_slice(e.as_bytes()),
                Err(e) => {
                    self.fail("readdirplus", ino, e);
                }
            }
        }
        Ok(())
    }

    /// The size-0 probe / ERANGE protocol shared by getxattr and listxattr.
    fn xattr_reply(out: &mut ReplyBuf, data: &[u8], size: u32) -> Result<(), i32> {
        if size == 0 {
            out.push(
                abi::GetxattrOut {
                    size: data.len() as u32,
                    padding: 0,
                }
                .as_bytes(),
            );
            return Ok(());
        }
        if data.len() > size as usize {
            return Err(errno::ERANGE);
        }
        if !out.push(data) {
            return Err(errno::E2BIG);
        }
        Ok(())
    }

    fn do_getxattr(&self, req: &Request<'_>, out: &mut ReplyBuf) -> Result<(), i32> {
        let ino = req.ino()?;
        let args: abi::GetxattrIn = req.arg()?;
        let name = req.name_at(core::mem::size_of::<abi::GetxattrIn>())?;
        let value = self
            .backend
            .getxattr(ino, name)
            .map_err(|e| self.fail("getxattr", ino, e))?;
        Self::xattr_reply(out, &value, args.size)
    }

    fn do_listxattr(&self, req: &Request<'_>, out: &mut ReplyBuf) -> Result<(), i32> {
        let ino = req.ino()?;
        let args: abi::GetxattrIn = req.arg()?;
        let names = self
            .backend
            .listxattr(ino)
            .map_err(|e| self.fail("listxattr", ino, e))?;
        let mut list = Vec::new();
        for n in names {
            // ext4 lists trusted.* only to CAP_SYS_ADMIN; uid 0 stands in for it.
            if req.header.uid != 0 && n.starts_with(b"trusted.") {
                continue;
            }
            list.extend_from_slice(&n);
            list.push(0);
        }
        Self::xattr_reply(out, &list, args.size)
    }

    fn do_statfs(&self, out: &mut ReplyBuf) -> Result<(), i32> {
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

    /// Only asked without `default_permissions`; a plain mode-bit check with
    /// the caller's primary ids (the kernel does the real job otherwise).
    fn do_access(&self, req: &Request<'_>) -> Result<(), i32> {
        let ino = req.ino()?;
        let args: abi::AccessIn = req.arg()?;
        let a = self
            .backend
            .getattr(ino)
            .map_err(|e| self.fail("access", ino, e))?;
        let mask = args.mask & 7;
        if mask & libc::W_OK as u32 != 0 {
            return Err(errno::EROFS);
        }
        let (uid, gid) = (
            self.config.uid.unwrap_or(a.uid),
            self.config.gid.unwrap_or(a.gid),
        );
        let allowed = if req.header.uid == 0 {
            // Root may read anything and execute what anyone may execute.
            let any_x = a.mode & 0o111 != 0 || a.kind == FileType::Directory;
            4 | 2 | if any_x { 1 } else { 0 }
        } else if req.header.uid == uid {
            (a.mode >> 6) & 7
        } else if req.header.gid == gid {
            (a.mode >> 3) & 7
        } else {
            a.mode & 7
        };
        if mask & !allowed != 0 {
            return Err(errno::EACCES);
        }
        Ok(())
    }

    fn do_lseek(&self, req: &Request<'_>, out: &mut ReplyBuf) -> Result<(), i32> {
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

/// Append one directory record (`head`, `name`, padding to 8 bytes) if the
/// payload stays within `limit`; `false` (nothing appended) otherwise.
fn push_record(out: &mut ReplyBuf, head: &[u8], name: &[u8], limit: usize) -> bool {
    let rec = abi::rec_align(head.len() + name.len());
    if out.payload_len() + rec > limit {
        return false;
    }
    out.push(head);
    out.push(name);
    out.pad(rec - head.len() - name.len());
    true
}

/// Receive one request; `None` once the connection is gone.
fn receive(ch: &dyn Channel, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        match ch.receive(buf) {
            Ok(0) => return Ok(None),
            Ok(n) => return Ok(Some(n)),
            Err(e) => match e.raw_os_error() {
                // ENOENT: the request was interrupted before we read it.
                Some(libc::ENOENT) | Some(libc::EINTR) | Some(libc::EAGAIN) => continue,
                // ENODEV: unmounted (or the connection was aborted).
                Some(libc::ENODEV) => return Ok(None),
                _ => return Err(e),
            },
        }
    }
}

fn send(ch: &dyn Channel, reply: &[u8]) {
    if let Err(e) = ch.send(&[IoSlice::new(reply)]) {
        // ENOENT: the request was interrupted and the kernel forgot it.
        if e.raw_os_error() != Some(libc::ENOENT) {
            log::error(format_args!("sending a reply failed: {e}"));
        }
    }
}

/// Send an unsolicited notification (`unique` 0, `error` = the code).
pub fn notify<T: IntoBytes + Immutable>(
    ch: &dyn Channel,
    code: i32,
    payload: &T,
) -> io::Result<()> {
    let body = payload.as_bytes();
    let h = OutHeader {
        len: (OUT_HEADER + body.len()) as u32,
        error: code,
        unique: 0,
    };
    ch.send(&[IoSlice::new(h.as_bytes()), IoSlice::new(body)])
}

mod iomap;
pub use iomap::{attr_flags_for, IomapStats, KNOWN_OPFLAGS};

#[cfg(test)]
mod tests;
