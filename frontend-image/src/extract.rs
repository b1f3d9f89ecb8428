//! `extract`: copy a file or a tree out of the image.
//!
//! Everything is created relative to directory descriptors that were opened
//! with `O_NOFOLLOW`, and names are checked before use, so whatever names
//! and links the image holds, nothing is written outside DEST: a name with
//! '/' or equal to "." / ".." is refused, an existing symlink in DEST is
//! never followed (opening it as a directory fails, and files are created
//! with `O_EXCL | O_NOFOLLOW` after unlinking whatever was there).

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::ExitCode;

use ext4_engine::{Attr, Error, FileType, Timestamp, Whence, ROOT_INO};
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

struct Ctx<'a> {
    vol: &'a Vol,
    /// The directory all recorded hard-link paths are relative to.
    root: RawFd,
    as_root: bool,
    /// Inode -> path (relative to `root`) of its first extracted name.
    links: HashMap<u32, Vec<Vec<u8>>>,
    dirs_seen: HashSet<u32>,
    warned_ns: HashSet<Vec<u8>>,
    warned_dev: bool,
    errors: u64,
    buf: Vec<u8>,
    pb: ProgressBar,
    bytes: u64,
    items: u64,
}

impl Ctx<'_> {
    fn error(&mut self, path: &[u8], msg: impl std::fmt::Display) {
        self.errors += 1;
        let line = format!("{}: {msg}", show(path));
        self.pb.suspend(|| crate::warn(line));
    }

    fn note(&self, msg: impl std::fmt::Display) {
        let line = msg.to_string();
        self.pb.suspend(|| crate::warn(line));
    }

    fn reports(&mut self, path: &[u8]) {
        for r in self.vol.take_reports() {
            self.error(path, format_args!("damage skipped: {r}"));
        }
    }

    fn tick(&mut self) {
        self.items += 1;
        self.pb.inc(1);
        if self.items.is_multiple_of(64) {
            self.pb.set_message(HumanBytes(self.bytes).to_string());
        }
    }

    /// Extract the children of directory inode `ino` into `fd`.
    fn fill_dir(
        &mut self,
        fd: RawFd,
        ino: u32,
        rel: &mut Vec<Vec<u8>>,
        ipath: &[u8],
        depth: usize,
    ) {
        let vol = self.vol;
        let r = for_each_child(vol, ino, |e| -> Result<(), ()> {
            self.entry(fd, rel, ipath, e, depth);
            Ok(())
        });
        if let Err(e) = r {
            self.error(ipath, e);
        }
        self.reports(ipath);
    }

    fn entry(&mut self, dfd: RawFd, rel: &mut Vec<Vec<u8>>, ipath: &[u8], e: Ent, depth: usize) {
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
        let linkable = attr.kind != FileType::Directory && attr.nlink > 1;
        if linkable {
            if let Some(first) = self.links.get(&e.ino).cloned() {
                if let Err(err) = self.hardlink(&first, dfd, &cn) {
                    self.error(
                        &path,
                        format_args!(
                            "cannot hard-link to {}: {}",
                            show(&first.join(&b'/')),
                            io_msg(&err)
                        ),
                    );
                }
                return;
            }
        }
        let done = match attr.kind {
            FileType::Directory => {
                self.dir(dfd, &cn, rel, &path, &attr, depth);
                return;
            }
            FileType::Regular => self.file(dfd, &cn, &path, &attr),
            FileType::Symlink => self.symlink(dfd, &cn, &path, &attr),
            FileType::Fifo | FileType::CharDevice | FileType::BlockDevice => {
                self.node(dfd, &cn, &path, &attr)
            }
            FileType::Socket => {
                self.note(format_args!("{}: socket ignored", show(&path)));
                false
            }
        };
        if done && linkable {
            let mut p = rel.clone();
            p.push(name.to_vec());
            self.links.insert(e.ino, p);
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

    fn dir(
        &mut self,
        dfd: RawFd,
        cn: &CStr,
        rel: &mut Vec<Vec<u8>>,
        path: &[u8],
        attr: &Attr,
        depth: usize,
    ) {
        if depth >= MAX_DEPTH {
            return self.error(path, "directories nested too deep; not extracted");
        }
        if !self.dirs_seen.insert(attr.ino) {
            return self.error(
                path,
                format_args!(
                    "directory inode {} was already extracted (directory loop)",
                    attr.ino
                ),
            );
        }
        // Owner-only until the contents are in; the real mode comes last.
        match mkdirat(dfd, cn, 0o700) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return self.error(path, format_args!("cannot create: {}", io_msg(&e))),
        }
        let fd = match openat(
            dfd,
            cn,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        ) {
            Ok(fd) => fd,
            Err(e) => {
                let why = match e.raw_os_error() {
                    Some(libc::ELOOP) | Some(libc::ENOTDIR) => {
                        "exists in the destination and is not a directory (not followed)".into()
                    }
                    _ => io_msg(&e),
                };
                return self.error(path, format_args!("cannot open: {why}"));
            }
        };
        rel.push(cn.to_bytes().to_vec());
        self.fill_dir(fd.as_raw_fd(), attr.ino, rel, path, depth + 1);
        rel.pop();
        self.finish(Target::Fd(fd.as_raw_fd()), path, attr);
    }

    fn file(&mut self, dfd: RawFd, cn: &CStr, path: &[u8], attr: &Attr) -> bool {
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        let fd = match replace(dfd, cn, || openat(dfd, cn, flags, 0o600)) {
            Ok(fd) => fd,
            Err(e) => {
                self.error(path, format_args!("cannot create: {}", io_msg(&e)));
                return false;
            }
        };
        let file = File::from(fd);
        if let Err(msg) = self.copy(&file, attr) {
            self.error(path, msg);
            self.reports(path);
            return false;
        }
        self.reports(path);
        self.finish(Target::Fd(file.as_raw_fd()), path, attr);
        true
    }

    /// Copy the data ranges of the file, leaving its holes unwritten.
    fn copy(&mut self, file: &File, attr: &Attr) -> Result<(), String> {
        let size = attr.size;
        let ino = attr.ino;
        // End of the last byte written: the length needs setting only when
        // the file ends in a hole (saves a syscall per small file).
        let mut end = 0u64;
        // Fully allocated (the common case): no need to look for holes.
        if attr.blocks.saturating_mul(512) >= size {
            end = self.copy_range(file, ino, 0, size)?;
        } else {
            let mut off = 0u64;
            while off < size {
                let data = match self.vol.seek(ino, off, Whence::Data) {
                    Ok(d) => d,
                    Err(Error::NoSuchOffset) => break,
                    Err(e) => return Err(format!("finding data at byte {off}: {e}")),
                };
                let hole = self
                    .vol
                    .seek(ino, data, Whence::Hole)
                    .map_err(|e| format!("finding a hole at byte {data}: {e}"))?
                    .min(size);
                end = self.copy_range(file, ino, data, hole)?;
                off = hole.max(data + 1);
            }
        }
        if end != size {
            file.set_len(size)
                .map_err(|e| format!("cannot set the length: {}", io_msg(&e)))?;
        }
        Ok(())
    }

    /// Copy bytes `from..to`; returns where the copy ended.
    fn copy_range(&mut self, file: &File, ino: u32, from: u64, to: u64) -> Result<u64, String> {
        let mut pos = from;
        while pos < to {
            let want = (to - pos).min(CHUNK as u64) as usize;
            let n = self
                .vol
                .read(ino, pos, &mut self.buf[..want])
                .map_err(|e| format!("read at byte {pos}: {e}"))?;
            if n == 0 {
                break;
            }
            file.write_all_at(&self.buf[..n], pos)
                .map_err(|e| format!("write at byte {pos}: {}", io_msg(&e)))?;
            pos += n as u64;
            self.bytes += n as u64;
        }
        Ok(pos)
    }

    fn symlink(&mut self, dfd: RawFd, cn: &CStr, path: &[u8], attr: &Attr) -> bool {
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
        self.finish(Target::At(dfd, cn), path, attr);
        true
    }

    fn node(&mut self, dfd: RawFd, cn: &CStr, path: &[u8], attr: &Attr) -> bool {
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
            if !self.warned_dev {
                self.warned_dev = true;
                self.note("device nodes are skipped: creating them needs root");
            }
            return false;
        }
        if let Err(e) = replace(dfd, cn, || mknodat(dfd, cn, ty | 0o600, dev)) {
            self.error(path, format_args!("cannot create: {}", io_msg(&e)));
            return false;
        }
        self.finish(Target::At(dfd, cn), path, attr);
        true
    }

    /// Ownership, xattrs, mode, times — in that order: chown clears setuid
    /// bits and file capabilities, and times must come after everything
    /// that touches the inode.
    fn finish(&mut self, t: Target<'_>, path: &[u8], attr: &Attr) {
        if self.as_root {
            if let Err(e) = t.chown(attr.uid, attr.gid) {
                self.error(path, format_args!("cannot set owner: {}", io_msg(&e)));
            }
        }
        self.xattrs(t, path, attr.ino);
        if attr.kind != FileType::Symlink {
            if let Err(e) = t.chmod(attr.mode & 0o7777) {
                self.error(path, format_args!("cannot set mode: {}", io_msg(&e)));
            }
        }
        if let Err(e) = t.times(attr) {
            self.error(path, format_args!("cannot set times: {}", io_msg(&e)));
        }
    }

    fn xattrs(&mut self, t: Target<'_>, path: &[u8], ino: u32) {
        let names = match self.vol.listxattr(ino) {
            Ok(n) => n,
            Err(e) => return self.error(path, format_args!("cannot list xattrs: {e}")),
        };
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
                        if self.warned_ns.insert(ns.clone()) {
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
    }
}

/// Let deep trees keep one descriptor per level open.
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

pub fn run(vol: &Vol, path: &[u8], dest: &Path) -> CmdResult {
    let ino = resolve(vol, path)?;
    let attr = vol
        .getattr(ino)
        .map_err(|e| Fail::Problem(format!("{}: {e}", show(path))))?;
    raise_fd_limit();
    let d = dest.display();
    let pb = if ino == ROOT_INO {
        let st = vol.statfs();
        crate::check::bar(st.inodes.saturating_sub(st.inodes_free), "extracting")
    } else {
        crate::check::bar(0, "extracting")
    };
    let mut ctx = Ctx {
        vol,
        root: -1,
        // SAFETY: geteuid has no preconditions.
        as_root: unsafe { libc::geteuid() } == 0,
        links: HashMap::new(),
        dirs_seen: HashSet::new(),
        warned_ns: HashSet::new(),
        warned_dev: false,
        errors: 0,
        buf: vec![0u8; CHUNK],
        pb,
        bytes: 0,
        items: 0,
    };
    // Deep trees recurse: give the walk a stack to match MAX_DEPTH.
    let result = std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(256 << 20)
            .spawn_scoped(s, || -> Result<(), Fail> {
                if attr.kind == FileType::Directory {
                    let created = match std::fs::create_dir(dest) {
                        Ok(()) => true,
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
                        Err(_) => {
                            std::fs::create_dir_all(dest).map_err(|e| {
                                Fail::Problem(format!("cannot create {d}: {}", io_msg(&e)))
                            })?;
                            true
                        }
                    };
                    let fd = open_dir(dest)
                        .map_err(|e| Fail::Problem(format!("cannot open {d}: {}", io_msg(&e))))?;
                    ctx.root = fd.as_raw_fd();
                    ctx.dirs_seen.insert(ino);
                    ctx.fill_dir(fd.as_raw_fd(), ino, &mut Vec::new(), path, 0);
                    // An existing DEST keeps its own attributes.
                    if created {
                        ctx.finish(Target::Fd(fd.as_raw_fd()), path, &attr);
                    }
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
                    ctx.root = fd.as_raw_fd();
                    let e = Ent { ino, name };
                    let dir = parent.as_os_str().as_bytes().to_vec();
                    ctx.entry(fd.as_raw_fd(), &mut Vec::new(), &dir, e, 0);
                }
                Ok(())
            })
            .map_err(|e| Fail::Problem(format!("cannot start the extraction: {e}")))?
            .join()
            .unwrap_or_else(|_| Err(Fail::Problem("the extraction panicked".into())))
    });
    ctx.pb.finish_and_clear();
    result?;
    Ok(if ctx.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
