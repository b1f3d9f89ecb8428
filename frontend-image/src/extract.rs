//! `extract`: copy a file or a tree out of the image.
//!
//! Everything is created relative to directory descriptors that were opened
//! with `O_NOFOLLOW`, and names are checked before use, so whatever names
//! and links the image holds, nothing is written outside DEST: a name with
//! '/' or equal to "." / ".." is refused, an existing symlink in DEST is
//! never followed (opening it as a directory fails, and files are created
//! with `O_EXCL | O_NOFOLLOW` after unlinking whatever was there).
//!
//! A pool of worker threads (`-j`) shares the work: listing a directory
//! (which makes its subdirectories, symlinks, nodes and hard links), and
//! batches of regular files. A directory gets its mode and times only when
//! everything under it is done, so what its children do cannot change them.
//! File data is copied by the kernel from the image to the new file where
//! the block map says it lives (`copy_file_range`, else `sendfile`), and
//! holes and unwritten extents are left unwritten.

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use ext4_engine::blockmap::{Run, MAX_LBLK};
use ext4_engine::inode::{flags as iflags, Inode};
use ext4_engine::{Attr, BlockDevice, FileType, PhysBlock, Timestamp, ROOT_INO};
use indicatif::{HumanBytes, ProgressBar};

use crate::cat::CHUNK;
use crate::list::{for_each_child, Ent};
use crate::{io_msg, resolve, show, CmdResult, Fail, Vol};

/// Deepest directory nesting followed (Linux paths stop at 4096 bytes, so
/// a real tree is never deeper than about 2048 levels).
const MAX_DEPTH: usize = 2048;

fn cerr() -> io::Error {
    io::Error::last_os_error()
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(cerr())
    } else {
        Ok(())
    }
}

fn cname(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

// Thin wrappers over the *at system calls. SAFETY (all of them): every
// pointer passed is a NUL-terminated string or a live array owned by the
// caller for the duration of the call, and descriptors are owned by the
// caller.

fn openat(dir: RawFd, name: &CStr, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC, mode) };
    if fd < 0 {
        return Err(cerr());
    }
    // SAFETY: `fd` was just returned by openat and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn mkdirat(dir: RawFd, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    check(unsafe { libc::mkdirat(dir, name.as_ptr(), mode) })
}

fn symlinkat(target: &CStr, dir: RawFd, name: &CStr) -> io::Result<()> {
    check(unsafe { libc::symlinkat(target.as_ptr(), dir, name.as_ptr()) })
}

fn mknodat(dir: RawFd, name: &CStr, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
    check(unsafe { libc::mknodat(dir, name.as_ptr(), mode, dev) })
}

fn unlinkat(dir: RawFd, name: &CStr) -> io::Result<()> {
    check(unsafe { libc::unlinkat(dir, name.as_ptr(), 0) })
}

fn linkat(odir: RawFd, oname: &CStr, ndir: RawFd, nname: &CStr) -> io::Result<()> {
    check(unsafe { libc::linkat(odir, oname.as_ptr(), ndir, nname.as_ptr(), 0) })
}

fn timespecs(a: &Attr) -> [libc::timespec; 2] {
    let ts = |t: Timestamp| libc::timespec {
        tv_sec: t.sec as libc::time_t,
        tv_nsec: t.nsec.min(999_999_999) as _,
    };
    [ts(a.atime), ts(a.mtime)]
}

/// What metadata calls act on: an open descriptor, or a name in a
/// directory (symlinks and special files, never opened).
#[derive(Clone, Copy)]
enum Target<'a> {
    Fd(RawFd),
    At(RawFd, &'a CStr),
}

impl Target<'_> {
    fn chown(self, uid: u32, gid: u32) -> io::Result<()> {
        check(match self {
            Target::Fd(fd) => unsafe { libc::fchown(fd, uid, gid) },
            Target::At(d, n) => unsafe {
                libc::fchownat(d, n.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW)
            },
        })
    }
    fn chmod(self, mode: u32) -> io::Result<()> {
        check(match self {
            Target::Fd(fd) => unsafe { libc::fchmod(fd, mode as libc::mode_t) },
            Target::At(d, n) => unsafe {
                libc::fchmodat(
                    d,
                    n.as_ptr(),
                    mode as libc::mode_t,
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            },
        })
    }
    fn times(self, a: &Attr) -> io::Result<()> {
        let t = timespecs(a);
        check(match self {
            Target::Fd(fd) => unsafe { libc::futimens(fd, t.as_ptr()) },
            Target::At(d, n) => unsafe {
                libc::utimensat(d, n.as_ptr(), t.as_ptr(), libc::AT_SYMLINK_NOFOLLOW)
            },
        })
    }
    fn setxattr(self, name: &CStr, value: &[u8]) -> io::Result<()> {
        let v = value.as_ptr() as *const libc::c_void;
        check(match self {
            Target::Fd(fd) => unsafe { libc::fsetxattr(fd, name.as_ptr(), v, value.len(), 0) },
            Target::At(d, n) => {
                // No *at form exists: go through the directory's descriptor
                // in /proc, with the l- variant so `n` itself is not followed.
                let mut p = format!("/proc/self/fd/{d}/").into_bytes();
                p.extend_from_slice(n.to_bytes());
                let p = cname(&p)?;
                unsafe { libc::lsetxattr(p.as_ptr(), name.as_ptr(), v, value.len(), 0) }
            }
        })
    }
}

/// Run `make`; if the name exists, remove it (never a directory) and retry once.
fn replace<T>(dir: RawFd, name: &CStr, make: impl Fn() -> io::Result<T>) -> io::Result<T> {
    match make() {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            unlinkat(dir, name).map_err(|u| {
                if matches!(u.raw_os_error(), Some(libc::EISDIR) | Some(libc::EPERM)) {
                    io::Error::new(io::ErrorKind::AlreadyExists, "exists as a directory")
                } else {
                    u
                }
            })?;
            make()
        }
        r => r,
    }
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    if !p.ends_with(b"/") {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// `copy_file_range` from `src` at `off_in` to `dst` at `off_out`.
fn copy_file_range(
    src: RawFd,
    off_in: u64,
    dst: RawFd,
    off_out: u64,
    len: usize,
) -> io::Result<usize> {
    let mut i = off_in as libc::loff_t;
    let mut o = off_out as libc::loff_t;
    // SAFETY: both offsets are live locals; the descriptors are the caller's.
    let n = unsafe { libc::copy_file_range(src, &mut i, dst, &mut o, len, 0) };
    if n < 0 {
        Err(cerr())
    } else {
        Ok(n as usize)
    }
}

/// `sendfile` from `src` at `off_in` to `dst` at `off_out` (which it seeks to).
fn sendfile(src: RawFd, off_in: u64, dst: RawFd, off_out: u64, len: usize) -> io::Result<usize> {
    // SAFETY: lseek and sendfile take plain values and a live local offset.
    unsafe {
        if libc::lseek(dst, off_out as libc::off_t, libc::SEEK_SET) < 0 {
            return Err(cerr());
        }
        let mut i = off_in as libc::off_t;
        let n = libc::sendfile(dst, src, &mut i, len);
        if n < 0 {
            Err(cerr())
        } else {
            Ok(n as usize)
        }
    }
}

/// Whether an error means "this kind of copy is not possible between these
/// files" (so try the next kind), rather than a failed read or write.
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EXDEV)
            | Some(libc::EINVAL)
            | Some(libc::ENOSYS)
            | Some(libc::EOPNOTSUPP)
            | Some(libc::EBADF)
    )
}

/// How mapped file data is copied from the image: in the kernel
/// (`copy_file_range`, else `sendfile`: no copy through our memory, and on
/// filesystems that share extents no copy at all), else read + write.
const COPY_RANGE: u8 = 0;
const SENDFILE: u8 = 1;
const READ_WRITE: u8 = 2;

/// Mapped runs shorter than this go through the read + write path: for a
/// few KiB the kernel's splice set-up costs more than the copy it saves.
const KERNEL_COPY_MIN: u64 = 64 << 10;

/// Regular files handed to another worker together (a batch ends at this
/// many files or bytes), so a directory of many small files is shared out
/// without a queue operation per file, and big files travel alone.
const BATCH_FILES: usize = 32;
const BATCH_BYTES: u64 = 4 << 20;

/// A directory being filled. Its attributes are applied once nothing more
/// can happen inside it or below it (so its times are the image's), which
/// `pending` counts: its own listing, plus each subdirectory, batch of
/// files and waiting hard link queued under it.
struct DirNode {
    fd: OwnedFd,
    /// Its inode in the image.
    ino: u32,
    /// Its name in the parent (unused for the top).
    name: Vec<u8>,
    parent: Option<Arc<DirNode>>,
    /// Path in the image, for messages.
    path: Vec<u8>,
    /// What to apply when done; `None` for a DEST that already existed.
    attr: Option<Attr>,
    depth: usize,
    pending: AtomicUsize,
    /// Nobody else can reach inside until it is done: this run made it
    /// (owner-only) or one of its parents. Files in it are created with
    /// their final permission bits, which then need no chmod.
    private: bool,
}

impl DirNode {
    fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Path components of `name` in this directory, from the top.
    fn rel(&self, name: &[u8]) -> Vec<Vec<u8>> {
        let mut v = vec![name.to_vec()];
        let mut n = self;
        while let Some(p) = &n.parent {
            v.push(n.name.clone());
            n = p;
        }
        v.reverse();
        v
    }
}

struct FileJob {
    name: CString,
    path: Vec<u8>,
    attr: Attr,
    /// It has other names: they are linked to it once it is made.
    linked: bool,
}

enum Task {
    /// List an open directory.
    Fill(Arc<DirNode>),
    /// Open directory `name` (already made in `parent`, by this run when
    /// `made`) and list it.
    Dir {
        parent: Arc<DirNode>,
        name: CString,
        path: Vec<u8>,
        attr: Attr,
        made: bool,
    },
    /// Create and fill regular files in `dir`.
    Files(Arc<DirNode>, Vec<FileJob>),
    /// One entry (extracting a single non-directory).
    Entry(Arc<DirNode>, Ent, Vec<u8>),
}

/// A name of a multiply-linked inode met while its first name was still
/// being extracted.
struct Waiter {
    dir: Arc<DirNode>,
    name: CString,
    path: Vec<u8>,
}

enum Link {
    /// Being extracted; names met meanwhile wait here.
    Busy(Vec<Waiter>),
    /// Extracted under this path (components from the top).
    Done(Vec<Vec<u8>>),
}

#[derive(Default)]
struct Queue {
    tasks: Vec<Task>,
    /// Workers running a task (which may queue more).
    busy: usize,
}

/// What a directory's listing gathers: files for the next batch, and
/// subdirectories, queued when the listing ends.
#[derive(Default)]
struct Listing {
    batch: Vec<FileJob>,
    subdirs: Vec<Task>,
}

/// Marks the end of a task when dropped, also while unwinding.
struct Done<'c, 'v>(&'c Ctx<'v>);

impl Drop for Done<'_, '_> {
    fn drop(&mut self) {
        self.0.task_done();
    }
}

/// Per worker: one buffer, reused for every file.
struct Worker {
    buf: Vec<u8>,
}

struct Ctx<'a> {
    vol: &'a Vol,
    jobs: usize,
    image: RawFd,
    /// Bytes in the image (block device or file).
    image_size: u64,
    bs: u64,
    /// The directory all recorded hard-link paths are relative to.
    root: RawFd,
    as_root: bool,
    links: Mutex<HashMap<u32, Link>>,
    dirs_seen: Mutex<HashSet<u32>>,
    warned_ns: Mutex<HashSet<Vec<u8>>>,
    warned_dev: AtomicBool,
    copy_mode: AtomicU8,
    errors: AtomicU64,
    pb: ProgressBar,
    bytes: AtomicU64,
    items: AtomicU64,
    queue: Mutex<Queue>,
    wake: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking worker is reported by the join; the data stays usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Ctx<'_> {
    fn error(&self, path: &[u8], msg: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let line = format!("{}: {msg}", show(path));
        self.pb.suspend(|| crate::warn(line));
    }

    fn note(&self, msg: impl std::fmt::Display) {
        let line = msg.to_string();
        self.pb.suspend(|| crate::warn(line));
    }

    /// Damage the engine skipped. The volume keeps one queue, so with
    /// several workers a report may be printed under the path of a file
    /// extracted at the same time as the damaged one.
    fn reports(&self, path: &[u8]) {
        for r in self.vol.take_reports() {
            self.error(path, format_args!("damage skipped: {r}"));
        }
    }

    fn tick(&self) {
        let n = self.items.fetch_add(1, Ordering::Relaxed) + 1;
        self.pb.inc(1);
        if n.is_multiple_of(64) {
            let b = self.bytes.load(Ordering::Relaxed);
            self.pb.set_message(HumanBytes(b).to_string());
        }
    }

    // ---- the pool ----

    fn push(&self, t: Task) {
        lock(&self.queue).tasks.push(t);
        self.wake.notify_one();
    }

    /// Whether work queued for other workers is plentiful enough that a
    /// batch is better done at once by whoever made it (bounds the queue).
    fn saturated(&self) -> bool {
        self.jobs == 1 || lock(&self.queue).tasks.len() >= 2 * self.jobs
    }

    /// Take tasks until none is queued and no worker can queue more. Tasks
    /// are taken newest first, so the walk stays depth-first and the
    /// directories open at once stay few.
    fn work(&self) {
        let mut w = Worker {
            buf: vec![0u8; CHUNK],
        };
        loop {
            let task = {
                let mut q = lock(&self.queue);
                loop {
                    if let Some(t) = q.tasks.pop() {
                        q.busy += 1;
                        break t;
                    }
                    if q.busy == 0 {
                        self.wake.notify_all();
                        return;
                    }
                    q = self.wake.wait(q).unwrap_or_else(|p| p.into_inner());
                }
            };
            let done = Done(self);
            self.run_task(&mut w, task);
            drop(done);
        }
    }

    /// A task ended (returned or panicked). A panic drops the queued work,
    /// so the other workers stop instead of waiting forever for this one.
    fn task_done(&self) {
        let mut q = lock(&self.queue);
        q.busy -= 1;
        if std::thread::panicking() {
            q.tasks.clear();
        }
        if q.busy == 0 && q.tasks.is_empty() {
            self.wake.notify_all();
        }
    }

    fn run_task(&self, w: &mut Worker, t: Task) {
        match t {
            Task::Fill(node) => {
                self.fill_dir(w, &node);
                self.release(node);
            }
            Task::Dir {
                parent,
                name,
                path,
                attr,
                made,
            } => self.open_dir(w, parent, &name, path, attr, made),
            Task::Files(dir, files) => self.files(w, dir, files),
            Task::Entry(dir, e, ipath) => {
                let mut l = Listing::default();
                self.entry(w, &dir, e, &ipath, &mut l);
                self.flush(w, &dir, &mut l.batch);
                self.release(dir);
            }
        }
    }

    /// One piece of work under `node` is done; when it was the last, the
    /// directory gets its attributes and its parent is told, and so on up.
    fn release(&self, mut node: Arc<DirNode>) {
        loop {
            if node.pending.fetch_sub(1, Ordering::AcqRel) != 1 {
                return;
            }
            if let Some(a) = &node.attr {
                self.finish(Target::Fd(node.fd()), &node.path, a, None);
            }
            match node.parent.clone() {
                Some(p) => node = p,
                None => return,
            }
        }
    }

    // ---- directories ----

    /// Open directory `name` in `parent` (made there by its lister) and list it.
    fn open_dir(
        &self,
        w: &mut Worker,
        parent: Arc<DirNode>,
        cn: &CStr,
        path: Vec<u8>,
        attr: Attr,
        made: bool,
    ) {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        let fd = match openat(parent.fd(), cn, flags, 0) {
            Ok(fd) => fd,
            Err(e) => {
                let why = match e.raw_os_error() {
                    Some(libc::ELOOP) | Some(libc::ENOTDIR) => {
                        "exists in the destination and is not a directory (not followed)".into()
                    }
                    _ => io_msg(&e),
                };
                self.error(&path, format_args!("cannot open: {why}"));
                return self.release(parent);
            }
        };
        let node = Arc::new(DirNode {
            fd,
            ino: attr.ino,
            name: cn.to_bytes().to_vec(),
            depth: parent.depth + 1,
            private: made || parent.private,
            parent: Some(parent),
            path,
            attr: Some(attr),
            pending: AtomicUsize::new(1),
        });
        self.fill_dir(w, &node);
        self.release(node);
    }

    /// Extract the children of `node`: subdirectories and batches of
    /// files are queued, everything else is made here.
    fn fill_dir(&self, w: &mut Worker, node: &Arc<DirNode>) {
        let mut l = Listing::default();
        let r = for_each_child(self.vol, node.ino, |e| -> Result<(), ()> {
            self.entry(w, node, e, &node.path, &mut l);
            Ok(())
        });
        self.flush(w, node, &mut l.batch);
        // Newest first off the stack: queued last to first, the
        // subdirectories are walked in listing order, which for images
        // made by mke2fs -d is the order of their data on disk.
        if !l.subdirs.is_empty() {
            let mut q = lock(&self.queue);
            q.tasks.extend(l.subdirs.into_iter().rev());
            drop(q);
            self.wake.notify_all();
        }
        if let Err(e) = r {
            self.error(&node.path, e);
        }
        self.reports(&node.path);
    }

    fn entry(&self, w: &mut Worker, dir: &Arc<DirNode>, e: Ent, ipath: &[u8], l: &mut Listing) {
        let name = &e.name[..];
        if name == b"." || name == b".." {
            return;
        }
        let path = join(ipath, name);
        if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
            self.error(
                &path,
                format_args!(
                    "refusing an entry named {:?} in {}: such a name could write outside the destination",
                    show(name),
                    show(ipath)
                ),
            );
            return;
        }
        let attr = match self.vol.getattr(e.ino) {
            Ok(a) => a,
            Err(err) => return self.error(&path, err),
        };
        self.tick();
        let Ok(cn) = cname(name) else { return };
        let linked = attr.kind != FileType::Directory && attr.nlink > 1;
        if linked && !self.first_name(dir, &cn, &path, e.ino) {
            return;
        }
        match attr.kind {
            FileType::Directory => self.subdir(dir, cn, path, attr, &mut l.subdirs),
            FileType::Regular => {
                let batch = &mut l.batch;
                batch.push(FileJob {
                    name: cn,
                    path,
                    attr,
                    linked,
                });
                // Saturating: sizes come from the image (near 2^64 on a
                // damaged one).
                let bytes = batch
                    .iter()
                    .fold(0u64, |a, f| a.saturating_add(f.attr.size));
                if batch.len() >= BATCH_FILES || bytes >= BATCH_BYTES {
                    self.flush(w, dir, batch);
                }
            }
            _ => {
                let ok = self.make(w, dir, &cn, &path, &attr);
                if linked {
                    self.link_done(w, dir.clone(), cn, ok, &attr);
                }
            }
        }
    }

    /// Hand a batch of files to the pool, or do it now when the pool has
    /// plenty queued.
    fn flush(&self, w: &mut Worker, dir: &Arc<DirNode>, batch: &mut Vec<FileJob>) {
        if batch.is_empty() {
            return;
        }
        let files = std::mem::take(batch);
        dir.pending.fetch_add(1, Ordering::AcqRel);
        if self.saturated() {
            self.files(w, dir.clone(), files);
        } else {
            self.push(Task::Files(dir.clone(), files));
        }
    }

    fn files(&self, w: &mut Worker, dir: Arc<DirNode>, files: Vec<FileJob>) {
        for f in files {
            let ok = self.file(w, &dir, &f.name, &f.path, &f.attr);
            if f.linked {
                self.link_done(w, dir.clone(), f.name, ok, &f.attr);
            }
        }
        self.release(dir);
    }

    /// Make directory `cn` in `dir` and queue its listing.
    fn subdir(
        &self,
        dir: &Arc<DirNode>,
        cn: CString,
        path: Vec<u8>,
        attr: Attr,
        out: &mut Vec<Task>,
    ) {
        if dir.depth >= MAX_DEPTH {
            return self.error(&path, "directories nested too deep; not extracted");
        }
        if !lock(&self.dirs_seen).insert(attr.ino) {
            return self.error(
                &path,
                format_args!(
                    "directory inode {} was already extracted (directory loop)",
                    attr.ino
                ),
            );
        }
        // Owner-only until the contents are in; the real mode comes last.
        let made = match mkdirat(dir.fd(), &cn, 0o700) {
            Ok(()) => true,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => false,
            Err(e) => return self.error(&path, format_args!("cannot create: {}", io_msg(&e))),
        };
        dir.pending.fetch_add(1, Ordering::AcqRel);
        out.push(Task::Dir {
            parent: dir.clone(),
            name: cn,
            path,
            attr,
            made,
        });
    }

    // ---- hard links ----

    /// For an inode with several names: whether this name is to be
    /// extracted (the first one met); otherwise it is linked to the first,
    /// now or, if that is still being made, when it is done.
    fn first_name(&self, dir: &Arc<DirNode>, cn: &CStr, path: &[u8], ino: u32) -> bool {
        let mut links = lock(&self.links);
        match links.get_mut(&ino) {
            None => {
                links.insert(ino, Link::Busy(Vec::new()));
                true
            }
            Some(Link::Busy(waiting)) => {
                // The directory stays unfinished until the link is in.
                dir.pending.fetch_add(1, Ordering::AcqRel);
                waiting.push(Waiter {
                    dir: dir.clone(),
                    name: cn.to_owned(),
                    path: path.to_vec(),
                });
                false
            }
            Some(Link::Done(first)) => {
                let first = first.clone();
                drop(links);
                self.link(&first, dir.fd(), cn, path);
                false
            }
        }
    }

    /// The first name of a multiply-linked inode was made (`ok`) or not:
    /// link the names that waited for it, or let the next of them be made
    /// in its place (as a later name would have been).
    fn link_done(
        &self,
        w: &mut Worker,
        mut dir: Arc<DirNode>,
        mut cn: CString,
        mut ok: bool,
        attr: &Attr,
    ) {
        loop {
            let mut links = lock(&self.links);
            let waiting = match links.remove(&attr.ino) {
                Some(Link::Busy(v)) => v,
                Some(done) => {
                    links.insert(attr.ino, done);
                    return;
                }
                None => return,
            };
            if ok {
                let first = dir.rel(cn.to_bytes());
                links.insert(attr.ino, Link::Done(first.clone()));
                drop(links);
                for wt in waiting {
                    self.link(&first, wt.dir.fd(), &wt.name, &wt.path);
                    self.release(wt.dir);
                }
                return;
            }
            let mut waiting = waiting.into_iter();
            let Some(next) = waiting.next() else { return };
            links.insert(attr.ino, Link::Busy(waiting.collect()));
            drop(links);
            ok = self.make(w, &next.dir, &next.name, &next.path, attr);
            let d = next.dir.clone();
            (dir, cn) = (next.dir, next.name);
            self.release(d);
        }
    }

    fn link(&self, first: &[Vec<u8>], dfd: RawFd, name: &CStr, path: &[u8]) {
        if let Err(err) = self.hardlink(first, dfd, name) {
            self.error(
                path,
                format_args!(
                    "cannot hard-link to {}: {}",
                    show(&first.join(&b'/')),
                    io_msg(&err)
                ),
            );
        }
    }

    fn hardlink(&self, first: &[Vec<u8>], dfd: RawFd, name: &CStr) -> io::Result<()> {
        let (last, parents) = first
            .split_last()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        let mut cur: Option<OwnedFd> = None;
        for c in parents {
            let at = cur.as_ref().map_or(self.root, |f| f.as_raw_fd());
            let fd = openat(
                at,
                &cname(c)?,
                libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            )?;
            cur = Some(fd);
        }
        let at = cur.as_ref().map_or(self.root, |f| f.as_raw_fd());
        let last = cname(last)?;
        replace(dfd, name, || linkat(at, &last, dfd, name))
    }

    // ---- non-directories ----

    /// Make a non-directory; whether it was made.
    fn make(&self, w: &mut Worker, dir: &DirNode, cn: &CStr, path: &[u8], attr: &Attr) -> bool {
        let dfd = dir.fd();
        match attr.kind {
            FileType::Regular => self.file(w, dir, cn, path, attr),
            FileType::Symlink => self.symlink(dfd, cn, path, attr),
            FileType::Fifo | FileType::CharDevice | FileType::BlockDevice => {
                self.node(dfd, cn, path, attr)
            }
            FileType::Socket => {
                self.note(format_args!("{}: socket ignored", show(path)));
                false
            }
            FileType::Directory => false,
        }
    }

    fn file(&self, w: &mut Worker, dir: &DirNode, cn: &CStr, path: &[u8], attr: &Attr) -> bool {
        let dfd = dir.fd();
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        // Where nobody else can look yet, the file starts with its final
        // permission bits (so it usually needs no chmod); elsewhere it
        // starts owner-only, as its contents are not its owner's yet.
        let mode = if dir.private {
            attr.mode & 0o777
        } else {
            0o600
        };
        let fd = match replace(dfd, cn, || openat(dfd, cn, flags, mode as libc::mode_t)) {
            Ok(fd) => fd,
            Err(e) => {
                self.error(path, format_args!("cannot create: {}", io_msg(&e)));
                return false;
            }
        };
        let file = File::from(fd);
        if let Err(msg) = self.copy(w, &file, attr) {
            self.error(path, msg);
            self.reports(path);
            return false;
        }
        self.reports(path);
        self.finish(
            Target::Fd(file.as_raw_fd()),
            path,
            attr,
            file.metadata().ok().as_ref(),
        );
        true
    }

    /// Copy the file's data, leaving its holes (and unwritten extents,
    /// which read as zeros) unwritten.
    fn copy(&self, w: &mut Worker, file: &File, attr: &Attr) -> Result<(), String> {
        let size = attr.size;
        if size == 0 {
            return Ok(());
        }
        let inode = self
            .vol
            .inode(attr.ino)
            .map_err(|e| format!("cannot read the inode: {e}"))?;
        // End of the last byte written: the length needs setting only when
        // the file ends in a hole (saves a syscall per small file).
        let mut end = 0u64;
        if inode.has_flag(iflags::INLINE_DATA) || inode.has_flag(iflags::ENCRYPT) {
            // No block map: the engine reads it (or says why it cannot).
            end = self.copy_read(w, file, &inode, 0, size)?;
        } else {
            let bs = self.bs;
            // Blocks past MAX_LBLK cannot be mapped: they read as a hole.
            let blocks = size.div_ceil(bs).min(MAX_LBLK);
            let mut lblk = 0u64;
            // Pointer blocks reused under many slots map far more blocks
            // than exist (an indirect block pointing at itself under a
            // 1 TiB size: 16 GiB written from a 128 KiB image): no valid
            // file maps more blocks than the filesystem has.
            let mut mapped = 0u64;
            while lblk < blocks {
                let run = self
                    .vol
                    .map_block(&inode, lblk)
                    .map_err(|e| format!("mapping byte {}: {e}", lblk * bs))?;
                let len = run.len().max(1);
                if let Run::Mapped { len, .. } = run {
                    mapped = mapped.saturating_add(len);
                    if mapped > self.vol.sb().blocks_count {
                        return Err(format!(
                            "inode {}: block map maps more blocks than the filesystem has",
                            attr.ino
                        ));
                    }
                }
                if let Run::Mapped {
                    pblk,
                    unwritten: false,
                    ..
                } = run
                {
                    let from = lblk * bs;
                    let to = lblk.saturating_add(len).saturating_mul(bs).min(size);
                    end = self.copy_mapped(w, file, &inode, pblk, from, to)?;
                }
                lblk = lblk.saturating_add(len);
            }
        }
        if end != size {
            file.set_len(size)
                .map_err(|e| format!("cannot set the length: {}", io_msg(&e)))?;
        }
        Ok(())
    }

    /// Copy file bytes `from..to`, which live at block `pblk` of the image
    /// onwards; returns where the copy ended.
    fn copy_mapped(
        &self,
        w: &mut Worker,
        file: &File,
        inode: &Inode,
        pblk: u64,
        from: u64,
        to: u64,
    ) -> Result<u64, String> {
        // A run past the end of the image (a damaged map) goes through the
        // engine, which says what is wrong; the kernel would only return
        // short, or EINVAL for offsets past i64, and make us give up on
        // copying in the kernel for every later file.
        let src = pblk.checked_mul(self.bs).filter(|s| {
            s.checked_add(to - from)
                .is_some_and(|e| e <= self.image_size)
        });
        let small = to - from < KERNEL_COPY_MIN;
        // Blocks of a journal replayed in memory (file data under
        // data=journal) are not in the image: the engine reads them.
        let replayed = self
            .vol
            .replayed_in(PhysBlock(pblk), (to - from).div_ceil(self.bs));
        let (Some(src), false) = (
            src,
            small || replayed || self.copy_mode.load(Ordering::Relaxed) == READ_WRITE,
        ) else {
            return self.copy_read(w, file, inode, from, to);
        };
        let dst = file.as_raw_fd();
        let mut pos = from;
        while pos < to {
            let mode = self.copy_mode.load(Ordering::Relaxed);
            let want = (to - pos).min(1 << 30) as usize;
            let r = match mode {
                COPY_RANGE => copy_file_range(self.image, src + (pos - from), dst, pos, want),
                SENDFILE => sendfile(self.image, src + (pos - from), dst, pos, want),
                _ => break,
            };
            match r {
                Ok(0) => break,
                Ok(n) => {
                    pos += n as u64;
                    self.bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if unsupported(&e) => {
                    let _ = self.copy_mode.compare_exchange(
                        mode,
                        mode + 1,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
                // The engine's read path below says what is wrong (a
                // short image, a read error) or meets the same write error.
                Err(_) => break,
            }
        }
        if pos < to {
            return self.copy_read(w, file, inode, pos, to);
        }
        Ok(to)
    }

    /// Copy file bytes `from..to` through the engine and our buffer;
    /// returns where the copy ended.
    fn copy_read(
        &self,
        w: &mut Worker,
        file: &File,
        inode: &Inode,
        from: u64,
        to: u64,
    ) -> Result<u64, String> {
        let mut pos = from;
        while pos < to {
            let want = (to - pos).min(w.buf.len() as u64) as usize;
            let n = self
                .vol
                .read_inode(inode, pos, &mut w.buf[..want])
                .map_err(|e| format!("read at byte {pos}: {e}"))?;
            if n == 0 {
                break;
            }
            file.write_all_at(&w.buf[..n], pos)
                .map_err(|e| format!("write at byte {pos}: {}", io_msg(&e)))?;
            pos += n as u64;
            self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(pos)
    }

    fn symlink(&self, dfd: RawFd, cn: &CStr, path: &[u8], attr: &Attr) -> bool {
        let target = match self.vol.readlink(attr.ino).map(|t| cname(&t)) {
            Ok(Ok(t)) if t.as_bytes().is_empty() => {
                self.error(path, "symlink target is empty; not created");
                return false;
            }
            Ok(Ok(t)) => t,
            Ok(Err(_)) => {
                self.error(path, "symlink target contains a NUL byte");
                return false;
            }
            Err(e) => {
                self.error(path, format_args!("cannot read link: {e}"));
                return false;
            }
        };
        if let Err(e) = replace(dfd, cn, || symlinkat(&target, dfd, cn)) {
            self.error(path, format_args!("cannot create: {}", io_msg(&e)));
            return false;
        }
        self.finish(Target::At(dfd, cn), path, attr, None);
        true
    }

    fn node(&self, dfd: RawFd, cn: &CStr, path: &[u8], attr: &Attr) -> bool {
        let (ty, dev) = match attr.kind {
            FileType::CharDevice => (
                libc::S_IFCHR,
                libc::makedev(attr.rdev_major, attr.rdev_minor),
            ),
            FileType::BlockDevice => (
                libc::S_IFBLK,
                libc::makedev(attr.rdev_major, attr.rdev_minor),
            ),
            _ => (libc::S_IFIFO, 0),
        };
        if ty != libc::S_IFIFO && !self.as_root {
            if !self.warned_dev.swap(true, Ordering::Relaxed) {
                self.note("device nodes are skipped: creating them needs root");
            }
            return false;
        }
        if let Err(e) = replace(dfd, cn, || mknodat(dfd, cn, ty | 0o600, dev)) {
            self.error(path, format_args!("cannot create: {}", io_msg(&e)));
            return false;
        }
        self.finish(Target::At(dfd, cn), path, attr, None);
        true
    }

    /// Ownership, xattrs, mode, times — in that order: chown clears setuid
    /// bits and file capabilities, and times must come after everything
    /// that touches the inode. `made` is what a regular file this run just
    /// created got at creation (fstat, so umask, setgid directories and
    /// default ACLs are accounted for): owner and mode are then set only
    /// where they differ, which for most files saves two inode updates.
    fn finish(&self, t: Target<'_>, path: &[u8], attr: &Attr, made: Option<&std::fs::Metadata>) {
        if self.as_root && made.is_none_or(|m| m.uid() != attr.uid || m.gid() != attr.gid) {
            if let Err(e) = t.chown(attr.uid, attr.gid) {
                self.error(path, format_args!("cannot set owner: {}", io_msg(&e)));
            }
        }
        // An ACL written as an xattr rewrites the mode's group bits; a new
        // file was made without setuid/setgid/sticky bits, so a chown
        // cleared none.
        let had_xattrs = self.xattrs(t, path, attr.ino);
        let mode_differs = made.is_none_or(|m| m.mode() & 0o7777 != attr.mode & 0o7777);
        if attr.kind != FileType::Symlink && (had_xattrs || mode_differs) {
            if let Err(e) = t.chmod(attr.mode & 0o7777) {
                self.error(path, format_args!("cannot set mode: {}", io_msg(&e)));
            }
        }
        if let Err(e) = t.times(attr) {
            self.error(path, format_args!("cannot set times: {}", io_msg(&e)));
        }
    }

    /// Copy the inode's xattrs; whether it has any (some may have failed).
    fn xattrs(&self, t: Target<'_>, path: &[u8], ino: u32) -> bool {
        let names = match self.vol.listxattr(ino) {
            Ok(n) => n,
            Err(e) => {
                self.error(path, format_args!("cannot list xattrs: {e}"));
                return true;
            }
        };
        let any = !names.is_empty();
        for n in names {
            let value = match self.vol.getxattr(ino, &n) {
                Ok(v) => v,
                Err(e) => {
                    self.error(path, format_args!("cannot read xattr {}: {e}", show(&n)));
                    continue;
                }
            };
            let Ok(cn) = cname(&n) else { continue };
            if let Err(e) = t.setxattr(&cn, &value) {
                let ns = n.split(|&b| b == b'.').next().unwrap_or(&[]).to_vec();
                match e.raw_os_error() {
                    Some(libc::EPERM) | Some(libc::EOPNOTSUPP) | Some(libc::EACCES) => {
                        if lock(&self.warned_ns).insert(ns.clone()) {
                            self.note(format_args!(
                                "the destination does not accept {}.* attributes ({}); they are skipped",
                                show(&ns),
                                io_msg(&e)
                            ));
                        }
                    }
                    Some(libc::ENOSPC) | Some(libc::E2BIG) | Some(libc::ERANGE) => self.error(
                        path,
                        format_args!(
                            "the destination cannot store xattr {} ({} bytes): {}",
                            show(&n),
                            value.len(),
                            io_msg(&e)
                        ),
                    ),
                    _ => self.error(
                        path,
                        format_args!("cannot set xattr {}: {}", show(&n), io_msg(&e)),
                    ),
                }
            }
        }
        any
    }
}

/// Let many directories and files be open at once (one per directory
/// being filled, per worker path of the walk).
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct we own.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max.min(1 << 16);
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

fn open_dir(p: &Path) -> io::Result<OwnedFd> {
    let c = cname(p.as_os_str().as_bytes())?;
    openat(libc::AT_FDCWD, &c, libc::O_RDONLY | libc::O_DIRECTORY, 0)
}

/// Most worker threads accepted by `-j`.
pub const MAX_JOBS: usize = 64;

pub fn run(vol: &Vol, path: &[u8], dest: &Path, jobs: Option<usize>) -> CmdResult {
    let ino = resolve(vol, path)?;
    let attr = vol
        .getattr(ino)
        .map_err(|e| Fail::Problem(format!("{}: {e}", show(path))))?;
    raise_fd_limit();
    let d = dest.display();
    let jobs = jobs
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
        .clamp(1, MAX_JOBS);
    // The top: DEST for a directory (its contents go in it), else the
    // directory the one non-directory goes in.
    let (top, task) = if attr.kind == FileType::Directory {
        let created = match std::fs::create_dir(dest) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(_) => {
                std::fs::create_dir_all(dest)
                    .map_err(|e| Fail::Problem(format!("cannot create {d}: {}", io_msg(&e))))?;
                true
            }
        };
        let fd = open_dir(dest)
            .map_err(|e| Fail::Problem(format!("cannot open {d}: {}", io_msg(&e))))?;
        let top = Arc::new(DirNode {
            fd,
            ino,
            name: Vec::new(),
            parent: None,
            path: path.to_vec(),
            // An existing DEST keeps its own attributes.
            attr: created.then_some(attr),
            depth: 0,
            pending: AtomicUsize::new(1),
            // Reachable by others (an existing or a new DEST, made with
            // the umask's mode): files in it start owner-only.
            private: false,
        });
        (top.clone(), Task::Fill(top))
    } else {
        let (parent, name): (&Path, Vec<u8>) = if dest.is_dir() {
            let base = path
                .rsplit(|&b| b == b'/')
                .find(|c| !c.is_empty())
                .unwrap_or(b"")
                .to_vec();
            (dest, base)
        } else {
            let name = dest
                .file_name()
                .map(|n| n.as_bytes().to_vec())
                .unwrap_or_default();
            let parent = dest
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            (parent, name)
        };
        let fd = open_dir(parent).map_err(|e| {
            Fail::Problem(format!("cannot open {}: {}", parent.display(), io_msg(&e)))
        })?;
        let dir = parent.as_os_str().as_bytes().to_vec();
        let top = Arc::new(DirNode {
            fd,
            ino,
            name: Vec::new(),
            parent: None,
            path: dir.clone(),
            attr: None,
            depth: 0,
            pending: AtomicUsize::new(1),
            // Reachable by others (an existing or a new DEST, made with
            // the umask's mode): files in it start owner-only.
            private: false,
        });
        (top.clone(), Task::Entry(top, Ent { ino, name }, dir))
    };
    let pb = if ino == ROOT_INO {
        let st = vol.statfs();
        crate::check::bar(st.inodes.saturating_sub(st.inodes_free), "extracting")
    } else {
        crate::check::bar(0, "extracting")
    };
    let ctx = Ctx {
        vol,
        jobs,
        image: vol.device().file().as_raw_fd(),
        image_size: vol.device().size(),
        bs: vol.sb().block_size as u64,
        root: top.fd(),
        // SAFETY: geteuid has no preconditions.
        as_root: unsafe { libc::geteuid() } == 0,
        links: Mutex::new(HashMap::new()),
        dirs_seen: Mutex::new(HashSet::from([ino])),
        warned_ns: Mutex::new(HashSet::new()),
        warned_dev: AtomicBool::new(false),
        copy_mode: AtomicU8::new(COPY_RANGE),
        errors: AtomicU64::new(0),
        pb,
        bytes: AtomicU64::new(0),
        items: AtomicU64::new(0),
        queue: Mutex::new(Queue::default()),
        wake: Condvar::new(),
    };
    ctx.push(task);
    let result = std::thread::scope(|s| {
        // Every worker on its own thread, so a panic is seen by join here.
        let mut handles = Vec::new();
        for _ in 0..jobs {
            match std::thread::Builder::new().spawn_scoped(s, || ctx.work()) {
                Ok(h) => handles.push(h),
                // Fewer workers is slower, not wrong.
                Err(_) => break,
            }
        }
        if handles.is_empty() {
            ctx.work();
        }
        let mut panicked = false;
        for h in handles {
            panicked |= h.join().is_err();
        }
        if panicked {
            Err(Fail::Problem("the extraction panicked".into()))
        } else {
            Ok(())
        }
    });
    ctx.pb.finish_and_clear();
    drop(top);
    result?;
    Ok(if ctx.errors.load(Ordering::Relaxed) == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
