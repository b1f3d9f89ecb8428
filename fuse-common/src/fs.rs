//! The volume as both FUSE servers serve it: what a mount keeps besides
//! the engine's `Volume` (the kernel's references to nodes, open files,
//! the durability options) and every write request, through the engine's
//! request policy, written once. Each server only decodes its wire format
//! and calls these.
//!
//! - Node lifetime: the kernel holds a node from each entry reply until it
//!   forgets it (`FORGET`/`BATCH_FORGET`), and an open file until its
//!   `RELEASE`. [`Nodes`] counts both, so that an inode whose last name
//!   goes while it is held is known to be held.
//! - Durability: `fsync`, `fdatasync`, `syncfs` and unmount commit and
//!   flush the device ([`Fs::sync`]); `-o sync` does so after every change,
//!   `-o dirsync` after every change to a directory; `commit=N` commits
//!   what is pending every N seconds ([`Fs::start_committer`]).
//! - Damage found by a write follows `errors=` ([`OnErrors`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use ext4_engine::mount_opts::{MountOptions, OnErrors, DEFAULT_COMMIT_SECS};
use ext4_engine::policy::{self, Caller, ShownIds, Subject};
use ext4_engine::{
    inode_flags, AtimeRule, Attr, BlockDevice, Error, FileType, InodeNo, OpenFiles, Result,
    SetAttr, StatFs, Volume, WriteMap,
};

use crate::log;

/// What a mount does about durability and errors, from its options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Durability {
    /// `-o sync`: commit after every change.
    pub sync: bool,
    /// `-o dirsync`: commit after every change to a directory.
    pub dirsync: bool,
    /// `commit=N`: most seconds a change waits for its commit.
    pub commit_every: Duration,
    /// `errors=`.
    pub on_error: OnErrors,
}

impl Durability {
    /// From the mount options, `errors=` defaulting to the superblock's.
    pub fn from_options<D: BlockDevice>(o: &MountOptions, vol: &Volume<D>) -> Durability {
        Durability {
            sync: o.sync,
            dirsync: o.dirsync,
            commit_every: Duration::from_secs(u64::from(
                o.commit_secs.unwrap_or(DEFAULT_COMMIT_SECS),
            )),
            on_error: o.on_error(vol),
        }
    }
}

impl Default for Durability {
    fn default() -> Self {
        Durability {
            sync: false,
            dirsync: false,
            commit_every: Duration::from_secs(u64::from(DEFAULT_COMMIT_SECS)),
            on_error: OnErrors::Continue,
        }
    }
}

/// How many references the kernel holds to one inode.
#[derive(Clone, Copy, Debug, Default)]
struct Held {
    /// Entry replies not yet forgotten (the kernel's `nlookup`).
    lookups: u64,
    /// Open files not yet released.
    opens: u64,
}

const NODE_SHARDS: usize = 16;

/// The kernel's references to inodes: lookups and open files. Bounded by
/// what the kernel keeps (its inode cache), not by the image.
#[derive(Default)]
pub struct Nodes {
    shards: [Mutex<HashMap<InodeNo, Held>>; NODE_SHARDS],
}

impl Nodes {
    fn shard(&self, ino: InodeNo) -> std::sync::MutexGuard<'_, HashMap<InodeNo, Held>> {
        let i = (ino.0 as usize).wrapping_mul(0x9E37_79B9) >> 8;
        // A poisoned shard still holds consistent counts (plain integers).
        self.shards[i % NODE_SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// An entry reply naming `ino` is on its way to the kernel.
    pub fn looked_up(&self, ino: InodeNo) {
        self.shard(ino).entry(ino).or_default().lookups += 1;
    }

    /// The kernel forgot `n` lookups of `ino`; `true` when nothing holds
    /// it any more.
    pub fn forget(&self, ino: InodeNo, n: u64) -> bool {
        let mut s = self.shard(ino);
        let Some(h) = s.get_mut(&ino) else {
            return false;
        };
        h.lookups = h.lookups.saturating_sub(n);
        let gone = h.lookups == 0 && h.opens == 0;
        if gone {
            s.remove(&ino);
        }
        gone
    }

    pub fn opened(&self, ino: InodeNo) {
        self.shard(ino).entry(ino).or_default().opens += 1;
    }

    /// An open file of `ino` was released; `true` when nothing holds it
    /// any more.
    pub fn released(&self, ino: InodeNo) -> bool {
        let mut s = self.shard(ino);
        let Some(h) = s.get_mut(&ino) else {
            return false;
        };
        h.opens = h.opens.saturating_sub(1);
        let gone = h.lookups == 0 && h.opens == 0;
        if gone {
            s.remove(&ino);
        }
        gone
    }

    /// Whether the kernel holds `ino` (a node it may still send requests
    /// for, or an open file).
    pub fn is_held(&self, ino: InodeNo) -> bool {
        self.shard(ino)
            .get(&ino)
            .is_some_and(|h| h.lookups > 0 || h.opens > 0)
    }

    /// (lookups, opens) of `ino`, for tests.
    pub fn counts(&self, ino: InodeNo) -> (u64, u64) {
        self.shard(ino)
            .get(&ino)
            .map_or((0, 0), |h| (h.lookups, h.opens))
    }
}

/// The engine asks, when an inode's last name goes, whether the kernel
/// still holds it: then it stays (an orphan) until [`Fs::forget`] or
/// [`Fs::release`] lets go of it.
struct KernelHolds(Arc<Nodes>);

impl OpenFiles for KernelHolds {
    fn is_open(&self, ino: InodeNo) -> bool {
        self.0.is_held(ino)
    }
}

/// Whether a write or truncation by `caller` drops privileges, for
/// requests that carry no kill flag (the kernel's rule, by which
/// `FUSE_HANDLE_KILLPRIV_V2` sets it): a caller without `CAP_FSETID`,
/// which a FUSE request shows as any uid but 0. A change of owner always
/// does.
pub fn kills_privileges(caller: &Caller) -> bool {
    !caller.is_root()
}

/// What the kernel may keep of a file it opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    /// Keep the page cache from earlier opens (`FOPEN_KEEP_CACHE`): only
    /// where nothing but the kernel's own writes can change the file.
    pub keep_cache: bool,
}

/// Most bytes `copy_file_range` moves per engine call.
const COPY_CHUNK: usize = 1 << 20;

/// Most inodes [`Fs::take_stale`] keeps between two calls.
pub const STALE_MAX: usize = 256;

/// What [`Fs::take_stale`] hands out.
#[derive(Default)]
struct Stale {
    any: AtomicBool,
    inos: Mutex<Vec<InodeNo>>,
}

impl Stale {
    fn push(&self, ino: InodeNo) {
        let mut v = self.inos.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() < STALE_MAX && !v.contains(&ino) {
            v.push(ino);
        }
        self.any.store(true, Ordering::Release);
    }
}

/// The periodic committer's stop signal.
#[derive(Default)]
struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

/// The volume a FUSE server serves, with what the mount keeps beside it.
pub struct Fs<D: BlockDevice> {
    vol: Arc<Volume<D>>,
    nodes: Arc<Nodes>,
    durability: Durability,
    atime: AtimeRule,
    stale: Stale,
    ids: ShownIds,
    closer: Closer<D>,
    kernel: Arc<KernelData>,
    freeze: Freeze,
}

/// `FUSE_FREEZE_FS` (the kernel's `freeze_fs`, as for `fsfreeze -f`): no
/// change begins until the thaw. Write requests count themselves in
/// ([`Fs::begin_change`]); a freeze waits for those in flight, commits
/// and checkpoints; later ones wait for the thaw. Inodes the kernel lets
/// go of meanwhile are freed at the thaw (the kernel's ext4 holds their
/// eviction too).
#[derive(Default)]
struct Freeze {
    state: Mutex<FreezeState>,
    changed: Condvar,
}

#[derive(Default)]
struct FreezeState {
    frozen: bool,
    /// Changes under way.
    changing: usize,
    /// Inodes to free at the thaw; at most what the kernel held.
    unheld: Vec<InodeNo>,
}

/// Most freed ranges kept for [`Fs::take_freed`]; past it, the whole
/// device is reported.
const FREED_RANGES: usize = 256;

/// FUSE iomap: the kernel writes file data and zeroes the partial blocks
/// of truncate, punch and zero range itself; the block ranges freed since
/// it last asked, for it to drop from its cache of the device.
#[derive(Default)]
struct KernelData {
    on: AtomicBool,
    freed: Mutex<Vec<(u64, u64)>>,
    overflow: AtomicBool,
}

impl KernelData {
    fn freed(&self, start: u64, len: u64) {
        if !self.on.load(Ordering::Acquire) {
            return;
        }
        let mut f = self.freed.lock().unwrap_or_else(|p| p.into_inner());
        let full = f.len() >= FREED_RANGES;
        match f.last_mut() {
            Some((s, l)) if *s + *l == start => *l += len,
            _ if full => self.overflow.store(true, Ordering::Release),
            _ => f.push((start, len)),
        }
    }
}

/// Closes the volume once, from whichever thread gets there first (the
/// end of the session, `DESTROY`, a signal), and stops the periodic
/// commit.
pub struct Closer<D: BlockDevice> {
    vol: Arc<Volume<D>>,
    stop: Arc<Stop>,
    closed: Arc<AtomicBool>,
}

impl<D: BlockDevice> Clone for Closer<D> {
    fn clone(&self) -> Self {
        Closer {
            vol: self.vol.clone(),
            stop: self.stop.clone(),
            closed: self.closed.clone(),
        }
    }
}

impl<D: BlockDevice> Closer<D> {
    /// Close the volume cleanly (commit, mark the filesystem clean,
    /// flush). Once; later calls do nothing.
    pub fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.stop_committer();
        self.vol.close()
    }

    fn stop_committer(&self) {
        *self.stop.stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.stop.wake.notify_all();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl<D: BlockDevice + 'static> Fs<D> {
    pub fn new(mut vol: Volume<D>, durability: Durability, ids: ShownIds) -> Fs<D> {
        let nodes = Arc::new(Nodes::default());
        vol.set_open_files(Box::new(KernelHolds(nodes.clone())));
        let kernel = Arc::new(KernelData::default());
        let k = kernel.clone();
        vol.set_on_free(Box::new(move |start, len| k.freed(start, len)));
        let vol = Arc::new(vol);
        Fs {
            closer: Closer {
                vol: vol.clone(),
                stop: Arc::default(),
                closed: Arc::default(),
            },
            vol,
            nodes,
            durability,
            atime: AtimeRule::default(),
            stale: Stale::default(),
            ids,
            kernel,
            freeze: Freeze::default(),
        }
    }

    /// A change (a write request) begins: waits while the filesystem is
    /// frozen. Pair with [`Fs::end_change`].
    pub fn begin_change(&self) {
        let mut st = self.freeze.state.lock().unwrap_or_else(|p| p.into_inner());
        while st.frozen {
            st = self
                .freeze
                .changed
                .wait(st)
                .unwrap_or_else(|p| p.into_inner());
        }
        st.changing += 1;
    }

    /// A change begun with [`Fs::begin_change`] ended.
    pub fn end_change(&self) {
        let mut st = self.freeze.state.lock().unwrap_or_else(|p| p.into_inner());
        st.changing = st.changing.saturating_sub(1);
        // Only a freeze waits for changes to end (a wake is a system call).
        if st.frozen {
            self.freeze.changed.notify_all();
        }
    }

    /// Freeze: hold new changes, wait for those under way, then commit,
    /// write everything home and mark the journal empty and the
    /// filesystem clean, as the kernel's ext4 does (the image on the
    /// device is then complete, needs no recovery, and stays as it is
    /// until [`Fs::thaw`]). A failure thaws again and is reported (the
    /// kernel's freeze then fails).
    pub fn freeze(&self) -> Result<()> {
        {
            let mut st = self.freeze.state.lock().unwrap_or_else(|p| p.into_inner());
            if st.frozen {
                return Ok(());
            }
            st.frozen = true;
            while st.changing > 0 {
                st = self
                    .freeze
                    .changed
                    .wait(st)
                    .unwrap_or_else(|p| p.into_inner());
            }
        }
        let r = self.sync().and_then(|()| self.vol.freeze());
        if r.is_err() {
            self.thaw();
        }
        r
    }

    /// Thaw: `needs_recovery` again, then held changes go on; inodes let
    /// go of meanwhile are freed.
    pub fn thaw(&self) {
        if let Err(e) = self.vol.unfreeze() {
            // The volume turned read-only: the held changes fail.
            log::error(format_args!("thaw: {e}"));
        }
        let unheld = {
            let mut st = self.freeze.state.lock().unwrap_or_else(|p| p.into_inner());
            st.frozen = false;
            self.freeze.changed.notify_all();
            core::mem::take(&mut st.unheld)
        };
        for ino in unheld {
            self.unheld(ino);
        }
    }

    /// [`Fs::begin_change`] unless frozen (then `false`, and no change).
    fn try_begin_change(&self) -> bool {
        let mut st = self.freeze.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.frozen {
            return false;
        }
        st.changing += 1;
        true
    }

    /// `FUSE_SHUTDOWN_FS` (the device is going away): nothing more is
    /// written, not even the running transaction's changes, which are
    /// dropped; what was committed stays in the journal for the next
    /// mount's recovery. Every later change fails.
    pub fn shut_down(&self) {
        self.vol.stop_writing(Error::Io(ext4_engine::IoError::EIO));
        self.closer.stop_committer();
    }

    /// From now on the kernel does every file data write (FUSE iomap):
    /// truncate, punch, zero range and fallocate change metadata only.
    pub fn set_kernel_writes_data(&self) {
        self.kernel.on.store(true, Ordering::Release);
    }

    fn kernel_writes_data(&self) -> bool {
        self.kernel.on.load(Ordering::Acquire)
    }

    /// Under FUSE iomap: the byte ranges of the device freed since the
    /// last call (the whole device when there were too many to keep),
    /// for the kernel to drop from its cache of the device.
    pub fn take_freed(&self) -> Vec<(u64, u64)> {
        let bs = u64::from(self.vol.sb().block_size);
        let mut f = self.kernel.freed.lock().unwrap_or_else(|p| p.into_inner());
        if self.kernel.overflow.swap(false, Ordering::AcqRel) {
            f.clear();
            return vec![(0, self.vol.sb().blocks_count * bs)];
        }
        f.drain(..).map(|(s, l)| (s * bs, l * bs)).collect()
    }

    /// Inodes whose attributes this server changed without the kernel
    /// asking for that change (set-ID bits a write dropped), since the
    /// last call: the kernel's cached attributes of these are stale
    /// (`FUSE_NOTIFY_INVAL_INODE`, which both frontends send after the
    /// reply). At most [`STALE_MAX`]; past that the attribute timeout
    /// covers the rest.
    pub fn take_stale(&self) -> Vec<InodeNo> {
        if !self.stale.any.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        core::mem::take(&mut *self.stale.inos.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// When accesses update atimes (the mount's `relatime`, `strictatime`,
    /// `noatime`, `nodiratime`; `relatime` by default).
    pub fn with_atime(mut self, rule: AtimeRule) -> Fs<D> {
        self.atime = rule;
        self
    }

    /// `ino` was read, listed or its link read (`READ`, `READDIR`,
    /// `READDIRPLUS`, `READLINK`): its atime by the mount's rule. The
    /// kernel's FUSE never updates atimes itself (its inodes are
    /// `S_NOATIME`) and refetches the atime after such a request; it only
    /// asks what its caches miss, so a read the page cache serves changes
    /// no atime (under `strictatime` too). A failure is logged, never the
    /// access's: the kernel's `touch_atime` fails no read either.
    pub fn accessed(&self, ino: InodeNo) {
        // The kernel's touch_atime skips a frozen filesystem.
        if !self.try_begin_change() {
            return;
        }
        if let Err(e) = self.vol.touch_atime(ino, self.atime) {
            log::failure("atime", ino, &e);
        }
        self.end_change();
    }

    pub fn volume(&self) -> &Volume<D> {
        &self.vol
    }

    pub fn nodes(&self) -> &Nodes {
        &self.nodes
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    pub fn read_only(&self) -> bool {
        self.vol.read_only()
    }

    /// Commit what is pending every `commit=` seconds, in a thread of its
    /// own, until [`Fs::close`] (a read-write volume only).
    pub fn start_committer(&self) -> std::io::Result<()> {
        if self.vol.read_only() {
            return Ok(());
        }
        let vol = self.vol.clone();
        let stop = self.closer.stop.clone();
        let every = self.durability.commit_every;
        std::thread::Builder::new()
            .name("commit".into())
            .spawn(move || loop {
                let stopped = stop.stopped.lock().unwrap_or_else(|p| p.into_inner());
                let (stopped, _) = stop
                    .wake
                    .wait_timeout(stopped, every)
                    .unwrap_or_else(|p| p.into_inner());
                if *stopped || vol.read_only() {
                    return;
                }
                drop(stopped);
                if let Err(e) = vol.commit() {
                    log::error(format_args!(
                        "periodic commit failed, the volume is read-only now: {e}"
                    ));
                    return;
                }
            })
            .map(|_| ())
    }

    /// Close the volume cleanly (unmount, `DESTROY`, a signal): commit,
    /// mark the filesystem clean, flush. Once; later calls do nothing.
    pub fn close(&self) -> Result<()> {
        self.closer.close()
    }

    /// What closes the volume from another thread (a signal's).
    pub fn closer(&self) -> Closer<D> {
        self.closer.clone()
    }

    /// Make everything acknowledged so far durable: commit the running
    /// transaction and flush the device (file data written in place is
    /// in no transaction).
    pub fn sync(&self) -> Result<()> {
        if self.vol.read_only() {
            return match self.vol.abort_reason() {
                // Writes were acknowledged that will never reach the disk.
                Some(e) if !self.closer.is_closed() => Err(e),
                _ => Ok(()),
            };
        }
        self.vol.commit()?;
        self.vol.device().flush().map_err(Error::Io)
    }

    /// After a change: `-o sync` (or `dirsync` for a directory change)
    /// makes it durable before the answer.
    fn changed<T>(&self, r: Result<T>, dir: bool) -> Result<T> {
        let r = r.map_err(|e| self.on_error(e))?;
        if self.durability.sync || (dir && self.durability.dirsync) {
            self.sync()?;
        }
        Ok(r)
    }

    /// The kernel's `ext4_should_retry_alloc`: blocks freed by the running
    /// transaction are only reused once it has committed, so an
    /// allocation that finds no room commits and tries once more.
    fn retry_on_full<T>(&self, op: impl Fn() -> Result<T>) -> Result<T> {
        match op() {
            Err(Error::NoSpace) => {
                self.vol.commit()?;
                op()
            }
            r => r,
        }
    }

    /// `errors=`: damage found by a request while mounted read-write.
    fn on_error(&self, e: Error) -> Error {
        if !matches!(e, Error::Corrupt { .. } | Error::Checksum { .. }) || self.vol.read_only() {
            return e;
        }
        match self.durability.on_error {
            OnErrors::Continue => {}
            OnErrors::RemountRo => {
                log::error(format_args!(
                    "errors=remount-ro: the filesystem is damaged ({e}); no more writes"
                ));
                self.vol.stop_writing(e.clone());
            }
            OnErrors::Panic => {
                log::error(format_args!(
                    "errors=panic: the filesystem is damaged ({e}); stopping the server"
                ));
                self.vol.stop_writing(e.clone());
                std::process::exit(1);
            }
        }
        e
    }

    /// The attributes and access ACL of `ino` as the policy sees them.
    fn subject_of(&self, ino: InodeNo) -> Result<(Attr, Option<Vec<u8>>)> {
        let a = self.ids.apply(self.vol.getattr(ino)?);
        let acl = match self.vol.getxattr(ino, b"system.posix_acl_access") {
            Ok(v) => Some(v),
            Err(Error::NoData) => None,
            Err(e) => return Err(e),
        };
        Ok((a, acl))
    }

    fn with_subject<T>(&self, ino: InodeNo, f: impl FnOnce(&Subject) -> Result<T>) -> Result<T> {
        let (a, acl) = self.subject_of(ino)?;
        f(&Subject::new(&a, acl.as_deref()))
    }

    /// An entry reply naming `a` goes to the kernel: it holds the node now.
    pub fn entry(&self, a: &Attr) {
        self.nodes.looked_up(a.ino);
    }

    /// `FORGET`: the kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: InodeNo, n: u64) {
        if self.nodes.forget(ino, n) {
            self.unheld(ino);
        }
    }

    /// Nothing of the kernel's holds `ino` any more.
    fn unheld(&self, ino: InodeNo) {
        // An inode whose last name went while it was held is freed now.
        if self.vol.read_only() {
            return;
        }
        {
            let mut st = self.freeze.state.lock().unwrap_or_else(|p| p.into_inner());
            if st.frozen {
                if !st.unheld.contains(&ino) {
                    st.unheld.push(ino);
                }
                return;
            }
            st.changing += 1;
        }
        self.release_now(ino);
        self.end_change();
    }

    fn release_now(&self, ino: InodeNo) {
        if let Err(e) = self.vol.release(ino) {
            log::failure("release", ino, &e);
        }
    }

    /// `OPEN` of `ino` with `flags` (Linux numbering): the policy's open
    /// checks; the file is held until its `RELEASE`.
    pub fn open(&self, ino: InodeNo, flags: u32) -> Result<Opened> {
        let a = self.vol.getattr(ino)?;
        policy::check_open(flags, a.kind, a.flags, self.vol.read_only())?;
        self.nodes.opened(ino);
        // Every change reaches the image through this mount, and the
        // kernel drops the pages a server-side change replaces (truncate,
        // copy_file_range, fallocate): its cache stays valid across opens.
        Ok(Opened { keep_cache: true })
    }

    /// `RELEASE` of an open file of `ino`.
    pub fn release(&self, ino: InodeNo) {
        if self.nodes.released(ino) {
            self.unheld(ino);
        }
    }

    /// `CREATE` (with `open_flags`, opening it) or `MKNOD` of a regular
    /// file: `mode` less `umask` unless `parent` has a default ACL (the
    /// kernel leaves both to a server that takes POSIX ACLs).
    pub fn create(
        &self,
        caller: &Caller,
        parent: InodeNo,
        name: &[u8],
        mode: u32,
        umask: u32,
        open_flags: Option<u32>,
    ) -> Result<Attr> {
        let mode = (mode & 0o7777) as u16;
        let a = self.make(
            caller,
            parent,
            |cred| self.vol.create(parent, name, mode, cred),
            umask,
        )?;
        if open_flags.is_some() {
            self.nodes.opened(a.ino);
        }
        Ok(a)
    }

    /// `TMPFILE` (Linux `O_TMPFILE`): a regular file in `parent` with no
    /// name, open (held until its `RELEASE` and `FORGET`; `LINK` may name
    /// it meanwhile), made as [`Fs::create`] makes one.
    pub fn tmpfile(&self, caller: &Caller, parent: InodeNo, mode: u32, umask: u32) -> Result<Attr> {
        let mode = (mode & 0o7777) as u16;
        let a = self.make(
            caller,
            parent,
            |cred| self.vol.tmpfile(parent, mode, cred),
            umask,
        )?;
        self.nodes.opened(a.ino);
        Ok(a)
    }

    /// `UNLINK` of `name` in `parent`.
    pub fn unlink(&self, caller: &Caller, parent: InodeNo, name: &[u8]) -> Result<()> {
        if self.check_removal(caller, parent, name)?.kind == FileType::Directory {
            return Err(Error::IsDir);
        }
        let r = self.vol.unlink(parent, name);
        self.changed(r, true)
    }

    /// The policy's checks before `name` leaves `parent` (unlink, rmdir,
    /// rename away or over): its attributes.
    fn check_removal(&self, caller: &Caller, parent: InodeNo, name: &[u8]) -> Result<Attr> {
        let ro = self.vol.read_only();
        let victim = self.vol.lookup(parent, name)?;
        self.with_subject(parent, |d| {
            self.with_subject(victim.ino, |v| policy::check_delete(caller, d, v, ro))
        })?;
        Ok(victim)
    }

    /// `MKNOD`: a regular file, device, FIFO or socket (`mode` with its
    /// type bits; `rdev` as (major, minor)).
    pub fn mknod(
        &self,
        caller: &Caller,
        parent: InodeNo,
        name: &[u8],
        mode: u32,
        rdev: (u32, u32),
        umask: u32,
    ) -> Result<Attr> {
        self.make(
            caller,
            parent,
            |cred| {
                self.vol
                    .mknod(parent, name, (mode & 0o177777) as u16, rdev, cred)
            },
            umask,
        )
    }

    /// `MKDIR`.
    pub fn mkdir(
        &self,
        caller: &Caller,
        parent: InodeNo,
        name: &[u8],
        mode: u32,
        umask: u32,
    ) -> Result<Attr> {
        self.make(
            caller,
            parent,
            |cred| self.vol.mkdir(parent, name, (mode & 0o7777) as u16, cred),
            umask,
        )
    }

    /// `SYMLINK`: `name` in `parent` pointing to `target`.
    pub fn symlink(
        &self,
        caller: &Caller,
        parent: InodeNo,
        name: &[u8],
        target: &[u8],
    ) -> Result<Attr> {
        self.make(
            caller,
            parent,
            |cred| self.vol.symlink(parent, name, target, cred),
            0,
        )
    }

    /// A new node in `parent` by `op`, after the policy's checks.
    fn make(
        &self,
        caller: &Caller,
        parent: InodeNo,
        op: impl Fn(&ext4_engine::Cred) -> Result<Attr>,
        umask: u32,
    ) -> Result<Attr> {
        let ro = self.vol.read_only();
        self.with_subject(parent, |d| policy::check_dir_change(d, false, ro))?;
        let cred = policy::cred_creating(caller, umask);
        let r = self.retry_on_full(|| op(&cred));
        let a = self.changed(r, true)?;
        self.entry(&a);
        Ok(a)
    }

    /// `LINK`: a new name `name` in `parent` for `ino`.
    pub fn link(
        &self,
        caller: &Caller,
        ino: InodeNo,
        parent: InodeNo,
        name: &[u8],
    ) -> Result<Attr> {
        // The kernel's may_linkat: nothing immutable or append-only.
        self.with_subject(ino, |s| {
            if s.flags & (inode_flags::IMMUTABLE | inode_flags::APPEND) != 0 {
                return Err(Error::NotPermitted);
            }
            Ok(())
        })?;
        self.make(
            caller,
            parent,
            |cred| self.vol.link(ino, parent, name, cred),
            0,
        )
    }

    /// `RMDIR` of `name` in `parent`.
    pub fn rmdir(&self, caller: &Caller, parent: InodeNo, name: &[u8]) -> Result<()> {
        self.check_removal(caller, parent, name)?;
        let r = self.vol.rmdir(parent, name);
        self.changed(r, true)
    }

    /// `RENAME`/`RENAME2` (`flags`: `RENAME_NOREPLACE`, `RENAME_EXCHANGE`).
    pub fn rename(
        &self,
        caller: &Caller,
        (from_dir, from): (InodeNo, &[u8]),
        (to_dir, to): (InodeNo, &[u8]),
        flags: u32,
    ) -> Result<()> {
        let ro = self.vol.read_only();
        self.check_removal(caller, from_dir, from)?;
        match self.check_removal(caller, to_dir, to) {
            Ok(_) => {}
            Err(Error::NotFound) => {
                self.with_subject(to_dir, |d| policy::check_dir_change(d, false, ro))?
            }
            Err(e) => return Err(e),
        }
        let cred = policy::cred(caller);
        let r = self.retry_on_full(|| self.vol.rename(from_dir, from, to_dir, to, flags, &cred));
        self.changed(r, true)
    }

    /// `SETXATTR` (`flags`: `XATTR_CREATE`, `XATTR_REPLACE`); POSIX ACLs
    /// change the mode as the kernel's do.
    pub fn setxattr(
        &self,
        caller: &Caller,
        ino: InodeNo,
        name: &[u8],
        value: &[u8],
        flags: u32,
    ) -> Result<()> {
        self.xattr_change(ino)?;
        let cred = policy::cred(caller);
        let r = self.retry_on_full(|| self.vol.setxattr(ino, name, value, flags, &cred));
        self.changed(r, false)
    }

    /// `REMOVEXATTR`.
    pub fn removexattr(&self, ino: InodeNo, name: &[u8]) -> Result<()> {
        self.xattr_change(ino)?;
        let r = self.vol.removexattr(ino, name);
        self.changed(r, false)
    }

    /// The kernel's `xattr_permission` for a change: not on a read-only
    /// volume, nor an immutable or append-only inode.
    fn xattr_change(&self, ino: InodeNo) -> Result<()> {
        let ro = self.vol.read_only();
        self.with_subject(ino, |s| {
            policy::check_change(s, ro)?;
            if s.flags & inode_flags::APPEND != 0 {
                return Err(Error::NotPermitted);
            }
            Ok(())
        })
    }

    /// `FS_IOC_GETFLAGS` (`lsattr`): the inode's user-visible flags.
    pub fn get_flags(&self, ino: InodeNo) -> Result<u32> {
        self.vol.get_flags(ino)
    }

    /// `FS_IOC_SETFLAGS` (`chattr`). Who may (the owner; for immutable and
    /// append-only `CAP_LINUX_IMMUTABLE`) the kernel checked before it
    /// asked, as for any filesystem; what the flags forbid afterwards is
    /// the policy's.
    pub fn set_flags(&self, ino: InodeNo, flags: u32) -> Result<()> {
        if self.vol.read_only() {
            return Err(Error::ReadOnly);
        }
        let r = self.vol.set_flags(ino, flags).map(|_| ());
        self.changed(r, false)
    }

    /// `FALLOCATE` with `mode` (`falloc::*`) over `len` bytes at `offset`.
    /// `killpriv`: the mount handles `FUSE_HANDLE_KILLPRIV_V2`.
    pub fn fallocate(
        &self,
        caller: &Caller,
        ino: InodeNo,
        (mode, offset, len): (u32, u64, u64),
        killpriv: bool,
    ) -> Result<()> {
        self.check_change(caller, ino, Self::kill_uncarried(caller, killpriv))?;
        let cred = policy::cred(caller);
        let r = self.retry_on_full(|| {
            if self.kernel_writes_data() {
                self.vol.fallocate_metadata(ino, mode, offset, len, &cred)
            } else {
                self.vol.fallocate(ino, mode, offset, len, &cred)
            }
        });
        self.changed(r, false)
    }

    /// `SETATTR`: the policy's rules for who may change what, then the
    /// change (a size change truncates or extends).
    ///
    /// `kill` (`FATTR_KILL_SUIDGID`, with `FUSE_HANDLE_KILLPRIV_V2`): the
    /// kernel leaves it to the server to take away what a truncation or a
    /// change of owner takes away ([`Fs::drop_privileges`]).
    pub fn setattr(
        &self,
        caller: &Caller,
        ino: InodeNo,
        set: &SetAttr,
        kill: bool,
    ) -> Result<Attr> {
        let ro = self.vol.read_only();
        let dropped = self.with_subject(ino, |s| {
            policy::check_setattr(caller, s, set, ro)?;
            Ok(kill
                .then(|| policy::mode_without_setid(caller, s))
                .flatten())
        })?;
        let mut set = *set;
        if set.mode.is_none() {
            set.mode = dropped;
        }
        let r = if kill {
            self.drop_capabilities(ino)
        } else {
            Ok(())
        };
        let r = r.and_then(|()| {
            if set == SetAttr::default() {
                self.vol.getattr(ino)
            } else if self.kernel_writes_data() {
                self.vol.setattr_metadata(ino, &set)
            } else {
                self.vol.setattr(ino, &set)
            }
        });
        self.changed(r, false).map(|a| self.ids.apply(a))
    }

    /// `WRITE` of `data` at `offset`: the count written. `kill`
    /// (`FUSE_WRITE_KILL_SUIDGID`): first take away what a write takes
    /// away ([`Fs::drop_privileges`]).
    pub fn write(
        &self,
        caller: &Caller,
        ino: InodeNo,
        offset: u64,
        data: &[u8],
        kill: bool,
    ) -> Result<usize> {
        self.check_change(caller, ino, kill)?;
        let r = self.write_all(caller, ino, offset, data);
        self.changed(r, false)
    }

    /// The policy's checks before the contents of `ino` change; then, when
    /// `kill`, what the change takes away ([`Fs::drop_privileges`]).
    fn check_change(&self, caller: &Caller, ino: InodeNo, kill: bool) -> Result<()> {
        let ro = self.vol.read_only();
        let dropped = self.with_subject(ino, |s| {
            policy::check_change(s, ro)?;
            Ok(kill
                .then(|| policy::mode_without_setid(caller, s))
                .flatten())
        })?;
        if kill {
            let r = self.drop_privileges(ino, dropped);
            self.changed(r, false)?;
        }
        Ok(())
    }

    /// For `FALLOCATE` and `COPY_FILE_RANGE`, which carry no kill flag:
    /// whether to drop privileges ourselves. With
    /// `FUSE_HANDLE_KILLPRIV_V2` (`killpriv`) the kernel leaves that to
    /// the server.
    fn kill_uncarried(caller: &Caller, killpriv: bool) -> bool {
        killpriv && kills_privileges(caller)
    }

    /// What the kernel's VFS takes away from a file when it is written,
    /// truncated or given to another owner, and leaves to a FUSE server
    /// that handles it (`FUSE_HANDLE_KILLPRIV_V2`, which spares the
    /// `GETXATTR security.capability` the kernel otherwise asks before
    /// every write): the set-ID bits the policy's rule drops (`mode`, from
    /// [`policy::mode_without_setid`]) and the file's capabilities.
    fn drop_privileges(&self, ino: InodeNo, mode: Option<u16>) -> Result<()> {
        if let Some(mode) = mode {
            let set = SetAttr {
                mode: Some(mode),
                ..SetAttr::default()
            };
            self.vol.setattr(ino, &set)?;
            self.stale.push(ino);
        }
        self.drop_capabilities(ino)
    }

    /// Remove `security.capability` of `ino`, if it has one.
    fn drop_capabilities(&self, ino: InodeNo) -> Result<()> {
        match self.vol.removexattr(ino, policy::CAPABILITY_XATTR) {
            Ok(()) | Err(Error::NoData) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Write `data` at `offset` of `ino`, committing once to reuse what the
    /// running transaction freed when the volume is full: the count written
    /// (short, or ENOSPC, only when it stays full).
    fn write_all(&self, caller: &Caller, ino: InodeNo, offset: u64, data: &[u8]) -> Result<usize> {
        let cred = policy::cred(caller);
        let first = self.vol.write(ino, offset, data, &cred);
        let done = match first {
            Ok(n) if n == data.len() => return Ok(n),
            Ok(n) => n,
            Err(Error::NoSpace) => 0,
            Err(e) => return Err(e),
        };
        // Full (short because full): the rest once more after a commit.
        let rest = self.vol.commit().and_then(|()| {
            self.vol
                .write(ino, offset + done as u64, &data[done..], &cred)
        });
        match rest {
            Ok(n) => Ok(done + n),
            Err(_) if done > 0 => Ok(done),
            Err(e) => Err(e),
        }
    }

    /// FUSE iomap `IOMAP_BEGIN` for a write the kernel will do: bytes
    /// `pos..pos+count` of `ino` mapped, holes allocated (unwritten, or
    /// zeroed written blocks for block-mapped files), committing once to
    /// reuse what the running transaction freed when the volume is full.
    /// The kernel checked the caller's right to write at open.
    pub fn map_for_write(
        &self,
        caller: &Caller,
        ino: InodeNo,
        pos: u64,
        count: u64,
    ) -> Result<WriteMap> {
        if self.vol.read_only() {
            return Err(Error::ReadOnly);
        }
        let cred = policy::cred(caller);
        let r = self.retry_on_full(|| self.vol.map_for_write(ino, pos, count, &cred));
        self.changed(r, false)
    }

    /// FUSE iomap `IOMAP_IOEND`: the kernel wrote `pos..pos+len` of `ino`;
    /// convert it to written and raise the on-disk size to `new_size`
    /// (appends). Returns the on-disk size.
    pub fn io_end(
        &self,
        caller: &Caller,
        ino: InodeNo,
        pos: u64,
        len: u64,
        new_size: Option<u64>,
    ) -> Result<u64> {
        if self.vol.read_only() {
            return Err(Error::ReadOnly);
        }
        let cred = policy::cred(caller);
        let r = self.vol.io_end(ino, pos, len, new_size, &cred);
        self.changed(r, false)
    }

    /// FUSE iomap `IOMAP_END` after a short write: give back the blocks of
    /// `pos..pos+len` past the on-disk size that no data reached.
    pub fn release_past_size(
        &self,
        caller: &Caller,
        ino: InodeNo,
        pos: u64,
        len: u64,
    ) -> Result<()> {
        if self.vol.read_only() {
            return Err(Error::ReadOnly);
        }
        let cred = policy::cred(caller);
        let r = self.vol.release_past_size(ino, pos, len, &cred);
        self.changed(r, false)
    }

    /// `COPY_FILE_RANGE`: `len` bytes of `from` at `from_off` to `to` at
    /// `to_off`, through the engine in bounded pieces; the count copied
    /// (short at the source's end). `killpriv`: as for [`Fs::fallocate`].
    pub fn copy_file_range(
        &self,
        caller: &Caller,
        (from, from_off): (InodeNo, u64),
        (to, to_off): (InodeNo, u64),
        len: u64,
        killpriv: bool,
    ) -> Result<u64> {
        self.check_change(caller, to, Self::kill_uncarried(caller, killpriv))?;
        let mut buf = vec![0u8; COPY_CHUNK.min(len as usize)];
        let mut done = 0u64;
        while done < len {
            let want = ((len - done) as usize).min(buf.len());
            let n = self.vol.read(from, from_off + done, &mut buf[..want])?;
            if n == 0 {
                break;
            }
            let r = self.write_all(caller, to, to_off + done, &buf[..n]);
            let w = self.changed(r, false)?;
            done += w as u64;
            if w < n {
                break;
            }
        }
        Ok(done)
    }

    /// `FSYNC`/`FSYNCDIR`/`SYNCFS`: everything acknowledged is durable
    /// (the engine has one transaction for the whole volume, so a file's
    /// sync is the volume's).
    pub fn fsync(&self) -> Result<()> {
        self.sync()
    }

    /// `STATFS`, with the counts as they are now.
    pub fn statfs(&self) -> StatFs {
        self.vol.statfs()
    }
}

impl<D: BlockDevice> Drop for Fs<D> {
    fn drop(&mut self) {
        self.closer.stop_committer();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_count_lookups_and_opens() {
        let n = Nodes::default();
        let i = InodeNo(12);
        n.looked_up(i);
        n.looked_up(i);
        n.opened(i);
        assert_eq!(n.counts(i), (2, 1));
        assert!(!n.forget(i, 2));
        assert!(n.is_held(i));
        assert!(n.released(i));
        assert!(!n.is_held(i));
        // Forgetting what was never looked up is harmless.
        assert!(!n.forget(InodeNo(13), 5));
    }
}
