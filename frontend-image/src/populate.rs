//! `ext4-image mkfs --from DIR`: fill a new image with a directory tree
//! through the engine's write API (the same operations a mount uses, so
//! the journal, allocation and checksums are the engine's): names in byte
//! order (the image does not depend on the order the tree was made in),
//! types, modes, owners, sizes, bytes (holes stay holes, found with
//! SEEK_DATA/SEEK_HOLE), xattrs and POSIX ACLs, hard links, symlinks,
//! device nodes and nanosecond times. Files and directories are read with
//! O_NOATIME where allowed, so a build leaves their atimes alone; reading a
//! symlink's target updates its atime on the host (readlink has no
//! O_NOATIME), after the image recorded the old one.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ext4_engine::{Cred, Error, FileDevice, InodeNo, SetAttr, SetTime, Timestamp, Volume};

/// What was copied.
#[derive(Default)]
pub struct Copied {
    pub entries: u64,
    pub bytes: u64,
    /// Free blocks and inodes left.
    pub free_blocks: u64,
    pub free_inodes: u64,
}

/// Why the copy stopped: the source path and what went wrong.
pub struct CopyError {
    pub path: PathBuf,
    pub what: String,
    /// The image ran out of blocks or inodes.
    pub no_space: bool,
}

pub type R<T> = Result<T, CopyError>;

/// Called after each entry with the running totals (progress).
pub type Progress<'a> = &'a mut dyn FnMut(&Copied);

pub struct Populate<'a> {
    vol: &'a Volume<FileDevice>,
    /// Source (device, inode) of files with more than one link -> their
    /// inode in the image.
    links: HashMap<(u64, u64), InodeNo>,
    root_owner: Option<(u32, u32)>,
    /// The ctime every copied object gets (the build's time).
    now: Timestamp,
    done: Copied,
    buf: Vec<u8>,
    /// `put --force`: an existing directory of the same name is filled
    /// (merged), any other existing object replaced.
    merge: bool,
}

pub const CRED: Cred = Cred::ROOT;
const ACL_ACCESS: &[u8] = b"system.posix_acl_access";
const ACL_DEFAULT: &[u8] = b"system.posix_acl_default";

pub fn at(path: &Path, what: impl std::fmt::Display) -> CopyError {
    CopyError {
        path: path.to_path_buf(),
        what: what.to_string(),
        no_space: false,
    }
}

pub fn engine(path: &Path, op: &str, e: Error) -> CopyError {
    let no_space = e == Error::NoSpace;
    let why = match e {
        Error::NoSpace => "no space left in the image".into(),
        e => e.to_string(),
    };
    CopyError {
        no_space,
        ..at(path, format!("{op}: {why}"))
    }
}

/// What a tree needs in an image, roughly: bytes of blocks (file data as
/// allocated, directories, long symlinks, xattr blocks) and inodes.
#[derive(Default)]
pub struct Estimate {
    pub bytes: u64,
    pub inodes: u64,
    /// The longest symlink target (bytes): it must fit a block.
    pub longest_symlink: u64,
    block: u64,
}

impl Estimate {
    /// Nothing yet but the root's block.
    pub fn new(block_size: u32) -> Estimate {
        let block = block_size as u64;
        Estimate {
            bytes: block,
            inodes: 0,
            longest_symlink: 0,
            block,
        }
    }
    /// A file of `len` bytes with `alloc` of them holding data.
    pub fn file(&mut self, len: u64, alloc: u64) {
        let b = self.block;
        self.bytes += alloc.min(len.next_multiple_of(b)).next_multiple_of(b);
        // Extent tree blocks of big fragmented files, roughly.
        self.bytes += len / (128 * b * b / 12) * b;
    }
    /// A symlink whose target is `len` bytes (a block from 60).
    pub fn symlink(&mut self, len: u64) {
        self.longest_symlink = self.longest_symlink.max(len);
        if len >= 60 {
            self.bytes += self.block;
        }
    }
    /// Xattrs, as (name, value) lengths: a block when they do not fit in
    /// the inode.
    pub fn xattrs(&mut self, xs: impl Iterator<Item = (usize, usize)>) {
        let n: u64 = xs.map(|(n, v)| 16 + n as u64 + v as u64).sum();
        if n > 96 {
            self.bytes += n.next_multiple_of(self.block);
        }
    }
    /// A directory whose entries take `entries` bytes (without `.` and
    /// `..`), with room for a hash tree.
    pub fn dir(&mut self, entries: u64) {
        self.bytes += (24 + entries).next_multiple_of(self.block) * 3 / 2;
    }
}

/// The bytes a directory entry for a name of `len` bytes takes.
pub fn entry_bytes(len: usize) -> u64 {
    (8 + len as u64 + 3) & !3
}

/// Walk `src` (lstat and xattr sizes only) for [`Estimate`] with blocks of
/// `block_size` bytes.
pub fn estimate(src: &Path, block_size: u32) -> R<Estimate> {
    let mut e = Estimate::new(block_size);
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let names = sorted_names(&dir).map_err(|x| at(&dir, x))?;
        let mut entries = 0u64;
        for name in names {
            let p = dir.join(&name);
            entries += entry_bytes(name.len());
            let m = std::fs::symlink_metadata(&p).map_err(|x| at(&p, x))?;
            if !m.is_dir() && m.nlink() > 1 && !seen.insert((m.dev(), m.ino())) {
                continue;
            }
            e.inodes += 1;
            if m.is_dir() {
                stack.push(p.clone());
            } else if m.is_file() {
                e.file(m.len(), m.blocks() * 512);
            } else if m.file_type().is_symlink() {
                e.symlink(m.len());
            }
            let xs = xattrs(&p).map_err(|x| at(&p, x))?;
            e.xattrs(xs.iter().map(|(n, v)| (n.len(), v.len())));
        }
        e.dir(entries);
    }
    Ok(e)
}

pub fn ts(sec: i64, nsec: i64) -> Timestamp {
    Timestamp {
        sec,
        nsec: nsec.clamp(0, 999_999_999) as u32,
    }
}

/// Open `path` for reading without updating its atime when allowed.
fn open_noatime(path: &Path, dir: bool) -> io::Result<File> {
    let extra = if dir { libc::O_DIRECTORY } else { 0 };
    let try_open = |noatime: i32| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | extra | noatime)
            .open(path)
    };
    match try_open(libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => try_open(0),
        r => r,
    }
}

/// The names in directory `path`, sorted by their bytes.
fn sorted_names(path: &Path) -> io::Result<Vec<OsString>> {
    use std::os::fd::IntoRawFd;
    let fd = open_noatime(path, true)?.into_raw_fd();
    // SAFETY: fd is an open directory descriptor we own; fdopendir takes
    // it over and closedir releases it.
    let d = unsafe { libc::fdopendir(fd) };
    if d.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: fdopendir failed, the descriptor is still ours.
        unsafe { libc::close(fd) };
        return Err(e);
    }
    let mut names = Vec::new();
    loop {
        // SAFETY: d is a valid DIR*; errno is cleared to tell the end from
        // an error.
        let ent = unsafe {
            *libc::__errno_location() = 0;
            libc::readdir(d)
        };
        if ent.is_null() {
            let e = io::Error::last_os_error();
            // SAFETY: d is valid and closed once.
            unsafe { libc::closedir(d) };
            if e.raw_os_error().unwrap_or(0) != 0 {
                return Err(e);
            }
            break;
        }
        // SAFETY: d_name is NUL-terminated inside the entry readdir gave.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) }.to_bytes();
        if name != b"." && name != b".." {
            names.push(OsString::from_vec(name.to_vec()));
        }
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// `path`'s xattrs (names and values), not following a symlink.
fn xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    let list = grow(|buf| {
        // SAFETY: c is NUL-terminated; buf's pointer and length match.
        unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) }
    })?;
    let mut out = Vec::new();
    for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cn = CString::new(name)?;
        let value = grow(|buf| {
            // SAFETY: as above.
            unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) }
        })?;
        out.push((name.to_vec(), value));
    }
    out.sort();
    Ok(out)
}

/// Call a size-probing xattr syscall until the buffer is big enough.
fn grow(mut f: impl FnMut(&mut [u8]) -> isize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        let n = f(&mut buf);
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) => {
                let need = f(&mut []);
                if need < 0 {
                    return Err(io::Error::last_os_error());
                }
                buf.resize(need as usize + 1, 0);
            }
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(e),
        }
    }
}

impl<'a> Populate<'a> {
    pub fn new(vol: &'a Volume<FileDevice>, root_owner: Option<(u32, u32)>, now: i64) -> Self {
        Populate {
            vol,
            links: HashMap::new(),
            root_owner,
            now: ts(now, 0),
            done: Copied::default(),
            buf: vec![0u8; 1 << 20],
            merge: false,
        }
    }

    /// Merge into existing directories and replace other existing objects
    /// (`put --force`) instead of failing with EEXIST.
    pub fn merging(mut self, merge: bool) -> Self {
        self.merge = merge;
        self
    }

    /// Copy `src` (a file, a symlink, a special file or a whole tree) into
    /// directory `parent` of the image as `name` (`put`).
    pub fn put(
        mut self,
        src: &Path,
        parent: InodeNo,
        name: &[u8],
        progress: Progress<'_>,
    ) -> R<Copied> {
        let meta = std::fs::symlink_metadata(src).map_err(|e| at(src, e))?;
        if meta.is_file() || meta.is_dir() {
            // Fail before the image changes when the source is unreadable.
            open_noatime(src, meta.is_dir()).map_err(|e| at(src, e))?;
        }
        if let Some(ino) = self.entry(src, parent, OsStr::from_bytes(name), &meta)? {
            if meta.is_dir() {
                self.fill(src, ino, progress)?;
            }
            self.finish(src, ino, &meta, false)?;
        }
        self.done.entries += 1;
        progress(&self.done);
        Ok(self.done)
    }

    /// Copy the tree at `src` into the image's root directory.
    pub fn run(mut self, src: &Path, progress: Progress<'_>) -> R<Copied> {
        let meta = std::fs::symlink_metadata(src).map_err(|e| at(src, e))?;
        if !meta.is_dir() {
            return Err(at(src, "not a directory (--from takes a directory)"));
        }
        self.fill(src, InodeNo::ROOT, progress)?;
        self.finish(src, InodeNo::ROOT, &meta, true)?;
        let st = self.vol.statfs();
        self.done.free_blocks = st.blocks_free;
        self.done.free_inodes = st.inodes_free;
        Ok(self.done)
    }

    fn fill(&mut self, dir: &Path, parent: InodeNo, progress: Progress<'_>) -> R<()> {
        let names = sorted_names(dir).map_err(|e| at(dir, e))?;
        for name in names {
            let path = dir.join(&name);
            let meta = std::fs::symlink_metadata(&path).map_err(|e| at(&path, e))?;
            let ino = self.entry(&path, parent, &name, &meta)?;
            if let Some(ino) = ino {
                if meta.is_dir() {
                    self.fill(&path, ino, progress)?;
                }
                self.finish(&path, ino, &meta, false)?;
            }
            self.done.entries += 1;
            progress(&self.done);
        }
        Ok(())
    }

    /// Create one entry; `None` for a hard link to an inode already copied.
    fn entry(
        &mut self,
        path: &Path,
        parent: InodeNo,
        name: &OsStr,
        meta: &std::fs::Metadata,
    ) -> R<Option<InodeNo>> {
        let vol = self.vol;
        let name_b = name.as_bytes();
        let mode = meta.mode() as u16;
        let ft = meta.file_type();
        let key = (meta.dev(), meta.ino());
        if self.merge {
            if let Some(ino) = self.make_room(path, parent, name_b, ft.is_dir())? {
                return Ok(Some(ino));
            }
        }
        if !ft.is_dir() && meta.nlink() > 1 {
            if let Some(&ino) = self.links.get(&key) {
                vol.link(ino, parent, name_b, &CRED)
                    .map_err(|e| engine(path, "link", e))?;
                return Ok(None);
            }
        }
        let attr = if ft.is_dir() {
            if parent == InodeNo::ROOT && name_b == b"lost+found" {
                // mke2fs made it: fill that one.
                let ino = vol
                    .lookup_ino(parent, name_b)
                    .map_err(|e| engine(path, "lookup", e))?;
                return Ok(Some(ino));
            }
            vol.mkdir(parent, name_b, mode & 0o7777, &CRED)
                .map_err(|e| engine(path, "mkdir", e))?
        } else if ft.is_symlink() {
            let target = std::fs::read_link(path).map_err(|e| at(path, e))?;
            vol.symlink(parent, name_b, target.as_os_str().as_bytes(), &CRED)
                .map_err(|e| engine(path, "symlink", e))?
        } else if ft.is_file() {
            let a = vol
                .create(parent, name_b, mode & 0o7777, &CRED)
                .map_err(|e| engine(path, "create", e))?;
            self.copy_data(path, a.ino, meta.len())?;
            a
        } else {
            let rdev = meta.rdev();
            let dev = (libc::major(rdev), libc::minor(rdev));
            vol.mknod(parent, name_b, mode, dev, &CRED)
                .map_err(|e| engine(path, "mknod", e))?
        };
        if !ft.is_dir() && meta.nlink() > 1 {
            self.links.insert(key, attr.ino);
        }
        Ok(Some(attr.ino))
    }

    /// `put --force`: the existing directory `name` in `parent` when the
    /// source is a directory too (filled, not made), else nothing, with any
    /// other existing object of that name removed first.
    fn make_room(
        &self,
        path: &Path,
        parent: InodeNo,
        name: &[u8],
        dir: bool,
    ) -> R<Option<InodeNo>> {
        let vol = self.vol;
        let ino = match vol.lookup_ino(parent, name) {
            Ok(i) => i,
            Err(Error::NotFound) => return Ok(None),
            Err(e) => return Err(engine(path, "lookup", e)),
        };
        let is_dir = vol.getattr(ino).map_err(|e| engine(path, "stat", e))?.kind
            == ext4_engine::FileType::Directory;
        match (is_dir, dir) {
            (true, true) => Ok(Some(ino)),
            (true, false) => Err(at(
                path,
                "a directory of that name is in the image (rm -r it first)",
            )),
            (false, _) => {
                vol.unlink(parent, name)
                    .map_err(|e| engine(path, "replacing (unlink)", e))?;
                Ok(None)
            }
        }
    }

    /// The bytes of a regular file, its holes left as holes.
    fn copy_data(&mut self, path: &Path, ino: InodeNo, size: u64) -> R<()> {
        if size == 0 {
            return Ok(());
        }
        let f = open_noatime(path, false).map_err(|e| at(path, e))?;
        let mut pos = 0u64;
        while pos < size {
            let data = lseek(&f, pos, libc::SEEK_DATA);
            let start = match data {
                Ok(d) => d,
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
                Err(e) => return Err(at(path, e)),
            };
            let end = lseek(&f, start, libc::SEEK_HOLE)
                .map_err(|e| at(path, e))?
                .min(size);
            let mut off = start;
            while off < end {
                let n = ((end - off) as usize).min(self.buf.len());
                f.read_exact_at(&mut self.buf[..n], off)
                    .map_err(|e| at(path, e))?;
                write_all(self.vol, ino, off, &self.buf[..n], path)?;
                off += n as u64;
                self.done.bytes += n as u64;
            }
            pos = end;
        }
        // A hole at the end: the size alone.
        set_size(self.vol, ino, size, path)
    }

    /// Xattrs and ACLs, then owner, mode and times (after a directory's
    /// entries, which change its times).
    fn finish(&mut self, path: &Path, ino: InodeNo, meta: &std::fs::Metadata, root: bool) -> R<()> {
        let xattrs = xattrs(path).map_err(|e| at(path, format!("reading xattrs: {e}")))?;
        let (uid, gid) = match (root, self.root_owner) {
            (true, Some(o)) => o,
            _ => (meta.uid(), meta.gid()),
        };
        let m = Meta {
            uid,
            gid,
            perm: meta.mode() as u16 & 0o7777,
            atime: ts(meta.atime(), meta.atime_nsec()),
            mtime: ts(meta.mtime(), meta.mtime_nsec()),
            is_link: meta.file_type().is_symlink(),
            xattrs,
        };
        set_meta(self.vol, ino, &m, self.now, path)
    }
}

/// What a source says about an object besides its contents.
pub struct Meta {
    pub uid: u32,
    pub gid: u32,
    /// Permission, set-id and sticky bits.
    pub perm: u16,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub is_link: bool,
    /// Names and values, ACLs in their xattr form.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Give `ino` the xattrs and ACLs of `m` (removing ACLs a default ACL in
/// the image gave it but `m` lacks), then its owner, mode and times; the
/// change time is `now`.
pub fn set_meta(
    vol: &Volume<FileDevice>,
    ino: InodeNo,
    m: &Meta,
    now: Timestamp,
    path: &Path,
) -> R<()> {
    for acl in [ACL_ACCESS, ACL_DEFAULT] {
        if !m.xattrs.iter().any(|(n, _)| n == acl) {
            match vol.removexattr(ino, acl) {
                Ok(()) | Err(Error::NoData) | Err(Error::Unsupported { .. }) => {}
                Err(e) => return Err(engine(path, "removexattr", e)),
            }
        }
    }
    for (name, value) in &m.xattrs {
        vol.setxattr(ino, name, value, 0, &CRED).map_err(|e| {
            engine(
                path,
                &format!("setxattr {}", String::from_utf8_lossy(name)),
                e,
            )
        })?;
    }
    let set = SetAttr {
        uid: Some(m.uid),
        gid: Some(m.gid),
        ctime: Some(now),
        ..SetAttr::default()
    };
    vol.setattr(ino, &set)
        .map_err(|e| engine(path, "chown", e))?;
    let set = SetAttr {
        mode: (!m.is_link).then_some(m.perm),
        atime: Some(SetTime::At(m.atime)),
        mtime: Some(SetTime::At(m.mtime)),
        ctime: Some(now),
        ..SetAttr::default()
    };
    vol.setattr(ino, &set)
        .map_err(|e| engine(path, "chmod/utimes", e))?;
    Ok(())
}

/// Write all of `data` at `off` of `ino`.
pub fn write_all(
    vol: &Volume<FileDevice>,
    ino: InodeNo,
    off: u64,
    data: &[u8],
    path: &Path,
) -> R<()> {
    let mut done = 0;
    while done < data.len() {
        let w = vol
            .write(ino, off + done as u64, &data[done..], &CRED)
            .map_err(|e| engine(path, "write", e))?;
        if w == 0 {
            return Err(at(path, "write: the engine wrote nothing"));
        }
        done += w;
    }
    Ok(())
}

/// Set a regular file's size (a hole at its end).
pub fn set_size(vol: &Volume<FileDevice>, ino: InodeNo, size: u64, path: &Path) -> R<()> {
    let set = SetAttr {
        size: Some(size),
        ..SetAttr::default()
    };
    vol.setattr(ino, &set)
        .map(|_| ())
        .map_err(|e| engine(path, "truncate", e))
}

fn lseek(f: &File, pos: u64, whence: i32) -> io::Result<u64> {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a descriptor we hold open.
    let r = unsafe { libc::lseek(f.as_raw_fd(), pos as libc::off_t, whence) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as u64)
    }
}
