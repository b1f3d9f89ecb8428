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

use ext4_engine::{Attr, BlockDevice, FilePiece, FileType, InodeNo, Timestamp};
use indicatif::{HumanBytes, ProgressBar};

use crate::cat::CHUNK;
use crate::list::{for_each_child, Ent};
use crate::{io_msg, resolve, show, CmdResult, Fail, Vol};

mod copy;
mod links;
mod metadata;
mod pool;
mod sys;
mod walk;

use copy::*;
use pool::*;
use sys::*;

/// Deepest directory nesting followed (Linux paths stop at 4096 bytes, so
/// a real tree is never deeper than about 2048 levels).
const MAX_DEPTH: usize = 2048;

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    if !p.ends_with(b"/") {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

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
    ino: InodeNo,
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

/// What a directory's listing gathers: files for the next batch, and
/// subdirectories, queued when the listing ends.
#[derive(Default)]
struct Listing {
    batch: Vec<FileJob>,
    subdirs: Vec<Task>,
}

struct Extraction<'a> {
    vol: &'a Vol,
    jobs: usize,
    image: RawFd,
    /// Where the filesystem starts in `image` (`--offset`, a partition).
    image_base: u64,
    /// Bytes in the filesystem's device (block device, file or window).
    image_size: u64,
    /// The directory all recorded hard-link paths are relative to.
    root: RawFd,
    as_root: bool,
    links: Mutex<HashMap<InodeNo, Link>>,
    dirs_seen: Mutex<HashSet<InodeNo>>,
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

impl Extraction<'_> {
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
    let pb = if ino == InodeNo::ROOT {
        let st = vol.statfs();
        crate::check::bar(st.inodes.saturating_sub(st.inodes_free), "extracting")
    } else {
        crate::check::bar(0, "extracting")
    };
    let extraction = Extraction {
        vol,
        jobs,
        image: vol.device().file().as_raw_fd(),
        image_base: vol.device().base(),
        image_size: vol.device().size(),
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
    extraction.push(task);
    let result = std::thread::scope(|s| {
        // Every worker on its own thread, so a panic is seen by join here.
        let mut handles = Vec::new();
        for _ in 0..jobs {
            match std::thread::Builder::new().spawn_scoped(s, || extraction.work()) {
                Ok(h) => handles.push(h),
                // Fewer workers is slower, not wrong.
                Err(_) => break,
            }
        }
        if handles.is_empty() {
            extraction.work();
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
    extraction.pb.finish_and_clear();
    drop(top);
    result?;
    Ok(if extraction.errors.load(Ordering::Relaxed) == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
