//! The FUSE session: reads requests from a [`Channel`], answers them from a
//! [`Backend`]. One `Session` is shared by every worker thread; each worker
//! owns its request and reply buffers, so the data path allocates nothing.
//!
//! Adding an opcode is one arm in [`Session::dispatch`] and one handler
//! method in the room for what it touches: `entries.rs` (lookup, readdir),
//! `attrs.rs` (getattr, statx, statfs, access), `files.rs` (open, read,
//! readlink, lseek), `xattrs.rs`, `mappings.rs` (the iomap opcodes),
//! `writes.rs` (the write requests, node lifetime, sync). `FUSE_INIT` flags (both words) are
//! negotiated from one 64-bit "wanted" set ([`Config::wanted_flags`],
//! [`negotiate`] in `init.rs`); the reply buffer is `reply.rs`, the
//! per-opcode counters `stats.rs`.

use std::io::{self, IoSlice};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use ext4_engine::{errno, policy, Error, InodeNo};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::abi::{opcode, InHeader, OutHeader};
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

pub use ext4_fuse_common::nodes::{ino_to_nodeid, nodeid_to_ino};

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
    fn ino(&self) -> Result<InodeNo, i32> {
        nodeid_to_ino(self.header.nodeid)
    }
    /// Who sent it (FUSE carries no supplementary groups).
    fn caller(&self) -> policy::Caller<'static> {
        policy::Caller {
            uid: self.header.uid,
            gid: self.header.gid,
            groups: &[],
        }
    }
}

fn opcode_name(op: u32) -> &'static str {
    match op {
        opcode::LOOKUP => "LOOKUP",
        opcode::FORGET => "FORGET",
        opcode::GETATTR => "GETATTR",
        opcode::SETATTR => "SETATTR",
        opcode::SYMLINK => "SYMLINK",
        opcode::MKNOD => "MKNOD",
        opcode::MKDIR => "MKDIR",
        opcode::UNLINK => "UNLINK",
        opcode::RMDIR => "RMDIR",
        opcode::RENAME => "RENAME",
        opcode::RENAME2 => "RENAME2",
        opcode::LINK => "LINK",
        opcode::WRITE => "WRITE",
        opcode::CREATE => "CREATE",
        opcode::TMPFILE => "TMPFILE",
        opcode::SETXATTR => "SETXATTR",
        opcode::REMOVEXATTR => "REMOVEXATTR",
        opcode::FALLOCATE => "FALLOCATE",
        opcode::COPY_FILE_RANGE => "COPY_FILE_RANGE",
        opcode::FSYNC => "FSYNC",
        opcode::FSYNCDIR => "FSYNCDIR",
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
    iomap: mappings::State,
    stats: RequestStats,
}

impl<B: Backend> Session<B> {
    pub fn new(backend: B, config: Config) -> Self {
        Session {
            backend,
            config,
            init: OnceLock::new(),
            iomap: mappings::State::default(),
            stats: RequestStats::default(),
        }
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
        // Blocks freed by the request leave the kernel's cache of the
        // device before the answer (they may hold file data next).
        self.send_dev_invals(ch);
        // Attributes the request changed behind the kernel's back, also
        // before the answer, so the caller's next stat sees them: only
        // attributes (off < 0), for which the kernel takes no page lock
        // the request's writer may hold.
        for ino in self.backend.take_stale() {
            if let Ok(nodeid) = ext4_fuse_common::nodes::ino_to_nodeid(ino) {
                let inval = crate::abi::NotifyInvalInode {
                    ino: nodeid,
                    off: -1,
                    len: 0,
                };
                if let Err(e) = notify(ch, crate::abi::notify_code::INVAL_INODE, &inval) {
                    log::debug(format_args!("invalidating inode {ino}: {e}"));
                }
            }
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
        // Counted in for FREEZE_FS: waits while the filesystem is frozen.
        let _change = is_change(req).then(|| Change::begin(&self.backend));
        if let Some(r) = self.dispatch_iomap(req, ch, out) {
            return Some(r);
        }
        Some(match req.header.opcode {
            opcode::INIT => self.do_init(req, out),
            opcode::LOOKUP => self.logged(self.do_lookup(req, out)),
            opcode::FORGET | opcode::BATCH_FORGET => {
                self.do_forget(req);
                return None;
            }
            opcode::INTERRUPT | opcode::NOTIFY_REPLY => return None,
            opcode::GETATTR => self.do_getattr(req, out),
            opcode::STATX => self.do_statx(req, out),
            opcode::READLINK => self.do_readlink(req, out),
            opcode::OPEN => self.do_open(req, ch, out, false),
            opcode::OPENDIR => self.do_open(req, ch, out, true),
            opcode::READ => self.do_read(req, out),
            opcode::READDIR => self.logged(self.do_readdir(req, out, false)),
            opcode::READDIRPLUS => self.logged(self.do_readdir(req, out, true)),
            // Nothing waits in the server for a close(): writes reach the
            // engine as they come. ENOSYS tells the kernel to stop sending
            // FLUSH, a blocking round trip in every close().
            opcode::FLUSH => Err(errno::ENOSYS),
            opcode::RELEASE | opcode::RELEASEDIR => self.do_release(req),
            opcode::FSYNC | opcode::FSYNCDIR | opcode::SYNCFS => self.do_fsync(req),
            opcode::GETXATTR => self.do_getxattr(req, out),
            opcode::LISTXATTR => self.do_listxattr(req, out),
            opcode::STATFS => self.do_statfs(out),
            opcode::ACCESS => self.do_access(req),
            opcode::LSEEK => self.do_lseek(req, out),
            opcode::DESTROY => {
                // The unmount: nothing more will come; leave the image clean.
                self.backend
                    .close()
                    .map_err(|e| self.fail("unmount", InodeNo::ROOT, e))
            }
            opcode::CREATE => self.do_create(req, out),
            opcode::MKNOD => self.do_mknod(req, out),
            opcode::MKDIR => self.do_mkdir(req, out),
            opcode::SYMLINK => self.do_symlink(req, out),
            opcode::LINK => self.do_link(req, out),
            opcode::UNLINK => self.do_unlink(req),
            opcode::RMDIR => self.do_rmdir(req),
            opcode::RENAME | opcode::RENAME2 => self.do_rename(req),
            opcode::SETATTR => self.do_setattr(req, out),
            opcode::WRITE => self.do_write(req, out),
            opcode::COPY_FILE_RANGE => self.do_copy_file_range(req, out),
            opcode::SETXATTR => self.do_setxattr(req),
            opcode::REMOVEXATTR => self.do_removexattr(req),
            opcode::FALLOCATE => self.do_fallocate(req),
            opcode::TMPFILE => self.do_tmpfile(req, out),
            opcode::IOCTL => self.do_ioctl(req, out),
            _ => Err(errno::ENOSYS),
        })
    }

    /// Turn an engine error into an errno, logging the ones that mean the
    /// disk or the filesystem is damaged (the error names the object).
    fn fail(&self, op: &str, ino: InodeNo, e: Error) -> i32 {
        self.fail_as(policy::Request::Other, op, ino, e)
    }

    /// The errno `request` answers with for `e` (the engine's policy),
    /// logging damage.
    pub(super) fn fail_as(
        &self,
        request: policy::Request,
        op: &str,
        ino: InodeNo,
        e: Error,
    ) -> i32 {
        log::failure(op, ino, &e);
        policy::errno_for(request, &e)
    }

    /// Log damage the engine worked around during a directory operation.
    fn logged(&self, r: Result<(), i32>) -> Result<(), i32> {
        log::skipped(self.backend.take_reports());
        r
    }

    /// The owner and group callers are shown (`uid=`, `gid=`).
    fn shown(&self) -> policy::ShownIds {
        policy::ShownIds {
            uid: self.config.uid,
            gid: self.config.gid,
        }
    }

    fn valid(&self) -> (u64, u32) {
        (
            self.config.timeout.as_secs(),
            self.config.timeout.subsec_nanos(),
        )
    }
}

/// Whether `req` may change the filesystem (so a freeze holds it): the
/// write requests, and the iomap ones that allocate or convert.
fn is_change(req: &Request<'_>) -> bool {
    use ext4_engine::iomap::op;
    match req.header.opcode {
        opcode::CREATE
        | opcode::MKNOD
        | opcode::MKDIR
        | opcode::SYMLINK
        | opcode::LINK
        | opcode::UNLINK
        | opcode::RMDIR
        | opcode::RENAME
        | opcode::RENAME2
        | opcode::SETATTR
        | opcode::WRITE
        | opcode::COPY_FILE_RANGE
        | opcode::SETXATTR
        | opcode::REMOVEXATTR
        | opcode::FALLOCATE
        | opcode::TMPFILE
        | opcode::IOCTL
        | opcode::IOMAP_END
        | opcode::IOMAP_IOEND => true,
        opcode::IOMAP_BEGIN => req
            .arg::<crate::abi::IomapBeginIn>()
            .is_ok_and(|a| a.opflags & (op::WRITES | op::WRITEBACK) != 0),
        _ => false,
    }
}

/// A change under way (`Backend::begin_change`); ends on drop.
struct Change<'a, B: Backend>(&'a B);

impl<'a, B: Backend> Change<'a, B> {
    fn begin(b: &'a B) -> Self {
        b.begin_change();
        Change(b)
    }
}

impl<B: Backend> Drop for Change<'_, B> {
    fn drop(&mut self) {
        self.0.end_change();
    }
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

mod attrs;
mod config;
mod entries;
mod files;
mod init;
mod mappings;
mod reply;
mod stats;
mod writes;
mod xattrs;

pub use config::{Config, ReaddirPlus};
pub use init::{negotiate, Negotiated};
pub use mappings::{attr_flags_for, IomapStats, KNOWN_OPFLAGS};
pub use reply::ReplyBuf;
pub use stats::OpStats;
use stats::{stat_slot, thread_cpu_ns, RequestStats};

#[doc(hidden)]
pub mod test_kernel;
#[cfg(test)]
mod tests;
