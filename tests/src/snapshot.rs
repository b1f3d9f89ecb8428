//! Comparable pictures of a directory tree: one walked on the host (a kernel
//! mount or the generated source tree) with lstat/statx/llistxattr/lseek,
//! one walked through the engine's `Volume` API from `InodeNo::ROOT`; and a diff
//! that says path, field, expected, got.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ffi::CString;
use std::fmt::Write as _;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ext4_engine::InodeNo;
use ext4_engine::{Attr, FileType};
use ext4_engine::{BlockDevice, Error};
use ext4_engine::{Volume, Whence};

use crate::tree::{open_noatime, Time};
use crate::util::{fnv64, ContentHasher, CHUNK};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Char,
    Block,
    Fifo,
    Socket,
    Unknown,
}

impl Kind {
    pub fn from_mode(mode: u32) -> Kind {
        match mode & 0o170000 {
            0o100000 => Kind::File,
            0o040000 => Kind::Dir,
            0o120000 => Kind::Symlink,
            0o020000 => Kind::Char,
            0o060000 => Kind::Block,
            0o010000 => Kind::Fifo,
            0o140000 => Kind::Socket,
            _ => Kind::Unknown,
        }
    }

    fn from_engine(t: FileType) -> Kind {
        match t {
            FileType::Regular => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            FileType::CharDevice => Kind::Char,
            FileType::BlockDevice => Kind::Block,
            FileType::Fifo => Kind::Fifo,
            FileType::Socket => Kind::Socket,
        }
    }
}

pub type Xattrs = BTreeMap<Vec<u8>, Vec<u8>>;

/// One path's worth of facts. Values that could not be obtained are
/// `Err(message)`: they show up in diffs instead of aborting the walk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub blocks: u64,
    pub blksize: u32,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
    pub btime: Option<Time>,
    pub rdev: (u32, u32),
    pub ino: u64,
    /// FS_IOC_GETVERSION on the kernel side; regular files and dirs only.
    pub generation: Option<u32>,
    /// Inode flags (kernel: FS_IOC_GETFLAGS; engine: raw); files/dirs only.
    pub flags: Option<u32>,
    pub link: Option<Result<Vec<u8>, String>>,
    pub xattrs: Result<Xattrs, String>,
    /// [`ContentHasher`] of regular files.
    pub content: Option<Result<u64, String>>,
    /// SEEK_DATA/SEEK_HOLE data ranges of regular files.
    pub data_map: Option<Result<Vec<(u64, u64)>, String>>,
}

#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Keyed by absolute path inside the tree: `/`, `/a`, `/a/b`.
    pub entries: BTreeMap<Vec<u8>, Entry>,
    /// Problems that are not one field of one path (walk errors,
    /// inconsistencies between API calls).
    pub errors: Vec<String>,
}

impl Snapshot {
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(path.as_bytes())
    }

    /// Drop `paths` and everything below them.
    pub fn without(mut self, paths: &[&str]) -> Snapshot {
        self.entries.retain(|p, _| {
            !paths.iter().any(|x| {
                let x = x.as_bytes();
                p.as_slice() == x
                    || (p.starts_with(x) && p.get(x.len()) == Some(&b'/') && x != b"/")
            })
        });
        self
    }
}

/// Every comparable field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    Kind,
    Mode,
    Nlink,
    Uid,
    Gid,
    Size,
    Blocks,
    Blksize,
    Atime,
    Mtime,
    Ctime,
    Btime,
    Rdev,
    Ino,
    Generation,
    Flags,
    Link,
    Xattrs,
    Content,
    DataMap,
}

pub const ALL_FIELDS: &[Field] = &[
    Field::Kind,
    Field::Mode,
    Field::Nlink,
    Field::Uid,
    Field::Gid,
    Field::Size,
    Field::Blocks,
    Field::Blksize,
    Field::Atime,
    Field::Mtime,
    Field::Ctime,
    Field::Btime,
    Field::Rdev,
    Field::Ino,
    Field::Generation,
    Field::Flags,
    Field::Link,
    Field::Xattrs,
    Field::Content,
    Field::DataMap,
];

/// What a generated source tree and an image built from it must agree on.
/// Directory sizes are layout, not content; ctime/btime/ino/blocks are
/// assigned by mke2fs.
pub const SOURCE_FIELDS: &[Field] = &[
    Field::Kind,
    Field::Mode,
    Field::Nlink,
    Field::Uid,
    Field::Gid,
    Field::Size,
    Field::Atime,
    Field::Mtime,
    Field::Rdev,
    Field::Link,
    Field::Xattrs,
    Field::Content,
];

/// The ext4 flags every kernel since 4.x shows through FS_IOC_GETFLAGS
/// (EXT4_FL_USER_VISIBLE of that era); newer kernels show a superset.
const OLD_VISIBLE_FLAGS: u32 = 0x705B_DFFF;

fn show_bytes(b: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(b))
}

fn show_xattrs(x: &Xattrs) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in x.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let head: String = v.iter().take(8).map(|b| format!("{b:02x}")).collect();
        let _ = write!(
            s,
            "{}: {}B {}{} #{:08x}",
            show_bytes(k),
            v.len(),
            head,
            if v.len() > 8 { ".." } else { "" },
            fnv64(v) as u32
        );
    }
    s.push('}');
    s
}

fn show<T: std::fmt::Debug>(r: &Result<T, String>, f: impl Fn(&T) -> String) -> String {
    match r {
        Ok(v) => f(v),
        Err(e) => format!("ERROR({e})"),
    }
}

impl Entry {
    /// The field rendered for comparison and display.
    pub fn field(&self, f: Field) -> String {
        match f {
            Field::Kind => format!("{:?}", self.kind),
            Field::Mode => format!("{:o}", self.mode),
            Field::Nlink => self.nlink.to_string(),
            Field::Uid => self.uid.to_string(),
            Field::Gid => self.gid.to_string(),
            Field::Size => self.size.to_string(),
            Field::Blocks => self.blocks.to_string(),
            Field::Blksize => self.blksize.to_string(),
            Field::Atime => self.atime.to_string(),
            Field::Mtime => self.mtime.to_string(),
            Field::Ctime => self.ctime.to_string(),
            Field::Btime => self.btime.map_or("none".into(), |t| t.to_string()),
            Field::Rdev => format!("{}:{}", self.rdev.0, self.rdev.1),
            Field::Ino => self.ino.to_string(),
            Field::Generation => format!("{:?}", self.generation),
            Field::Flags => self.flags.map_or("none".into(), |f| format!("{f:#x}")),
            Field::Link => self
                .link
                .as_ref()
                .map_or("none".into(), |l| show(l, |v| show_bytes(v))),
            Field::Xattrs => show(&self.xattrs, show_xattrs),
            Field::Content => self
                .content
                .as_ref()
                .map_or("none".into(), |c| show(c, |h| format!("{h:016x}"))),
            Field::DataMap => self
                .data_map
                .as_ref()
                .map_or("none".into(), |m| show(m, |v| format!("{v:?}"))),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Difference {
    pub path: String,
    pub field: String,
    pub expected: String,
    pub got: String,
}

/// How to compare two snapshots.
#[derive(Clone, Debug)]
pub struct Compare<'a> {
    pub fields: &'a [Field],
    /// Directory sizes are layout: skip them (source-tree comparisons).
    pub ignore_dir_size: bool,
    /// Paths (and their subtrees) present on one side only by design.
    pub ignore_paths: &'a [&'a str],
}

fn flags_agree(kernel: Option<u32>, engine: Option<u32>) -> bool {
    match (kernel, engine) {
        // The kernel shows a masked subset of the raw flags.
        (Some(k), Some(e)) => k & !e == 0 && (k ^ e) & OLD_VISIBLE_FLAGS == 0,
        (a, b) => a == b,
    }
}

/// Differences between `expected` and `got` (all of them; cap on display).
pub fn diff(expected: &Snapshot, got: &Snapshot, cmp: &Compare<'_>) -> Vec<Difference> {
    let expected = expected.clone().without(cmp.ignore_paths);
    let got_s = got.clone().without(cmp.ignore_paths);
    let mut out = Vec::new();
    for e in &expected.errors {
        out.push(Difference {
            path: "(expected side)".into(),
            field: "walk error".into(),
            expected: String::new(),
            got: e.clone(),
        });
    }
    for e in &got_s.errors {
        out.push(Difference {
            path: "(walk)".into(),
            field: "error".into(),
            expected: "none".into(),
            got: e.clone(),
        });
    }
    let paths: BTreeSet<&Vec<u8>> = expected
        .entries
        .keys()
        .chain(got_s.entries.keys())
        .collect();
    for p in paths {
        let path = String::from_utf8_lossy(p).into_owned();
        let (e, g) = match (expected.entries.get(p), got_s.entries.get(p)) {
            (Some(e), Some(g)) => (e, g),
            (Some(e), None) => {
                out.push(Difference {
                    path,
                    field: "presence".into(),
                    expected: format!("{:?}", e.kind),
                    got: "missing".into(),
                });
                continue;
            }
            (None, Some(g)) => {
                out.push(Difference {
                    path,
                    field: "presence".into(),
                    expected: "absent".into(),
                    got: format!("{:?}", g.kind),
                });
                continue;
            }
            (None, None) => unreachable!(),
        };
        for &f in cmp.fields {
            if f == Field::Size && cmp.ignore_dir_size && e.kind == Kind::Dir {
                continue;
            }
            let same = if f == Field::Flags {
                flags_agree(e.flags, g.flags)
            } else {
                e.field(f) == g.field(f)
            };
            if !same {
                out.push(Difference {
                    path: path.clone(),
                    field: format!("{f:?}"),
                    expected: e.field(f),
                    got: g.field(f),
                });
            }
        }
    }
    out
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let c: String = s.chars().take(n).collect();
        format!("{c}…")
    }
}

/// Readable listing of at most `cap` differences, plus a per-field count.
pub fn format_diffs(title: &str, diffs: &[Difference], cap: usize) -> String {
    let mut s = format!("=== {title}: {} difference(s)\n", diffs.len());
    let mut by_field: BTreeMap<&str, usize> = BTreeMap::new();
    for d in diffs {
        *by_field.entry(&d.field).or_default() += 1;
    }
    if !diffs.is_empty() {
        let _ = writeln!(s, "    by field: {by_field:?}");
    }
    for d in diffs.iter().take(cap) {
        let _ = writeln!(
            s,
            "  {}  [{}]\n      expected: {}\n      got:      {}",
            clip(&d.path, 160),
            d.field,
            clip(&d.expected, 400),
            clip(&d.got, 400)
        );
    }
    if diffs.len() > cap {
        let _ = writeln!(s, "  ... {} more", diffs.len() - cap);
    }
    s
}

/// Collects the outcome of several comparisons and fails once, at the end,
/// with all of them: one run shows everything that is wrong with an image.
pub struct Report {
    title: String,
    text: String,
    failures: usize,
}

impl Report {
    pub fn new(title: &str) -> Report {
        Report {
            title: title.to_string(),
            text: String::new(),
            failures: 0,
        }
    }

    pub fn note(&mut self, line: &str) {
        let _ = writeln!(self.text, "{line}");
    }

    pub fn section(&mut self, title: &str, diffs: Vec<Difference>, compared: usize) {
        let _ = writeln!(self.text, "--- {title}: {compared} path(s) compared");
        if !diffs.is_empty() {
            self.failures += diffs.len();
            self.text.push_str(&format_diffs(title, &diffs, 40));
        }
    }

    pub fn fail(&mut self, title: &str, message: &str) {
        self.failures += 1;
        let _ = writeln!(self.text, "=== {title}: FAILED\n  {message}");
    }

    pub fn failures(&self) -> usize {
        self.failures
    }

    /// Print everything; panic if anything differed.
    pub fn finish(self) {
        println!("##### {}\n{}", self.title, self.text);
        if self.failures > 0 {
            panic!(
                "{}: {} difference(s)/failure(s)\n{}",
                self.title, self.failures, self.text
            );
        }
    }
}

// ---------------------------------------------------------------- host side

/// Which expensive parts of a snapshot to take.
#[derive(Clone, Copy, Debug)]
pub struct WalkOptions {
    pub content: bool,
    pub data_map: bool,
    /// Ask the kernel for FS_IOC_GETVERSION / FS_IOC_GETFLAGS.
    pub ioctls: bool,
}

impl Default for WalkOptions {
    fn default() -> Self {
        WalkOptions {
            content: true,
            data_map: true,
            ioctls: true,
        }
    }
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

fn host_xattrs(p: &Path) -> Result<Xattrs, String> {
    let c = cpath(p);
    let mut names = vec![0u8; 64 * 1024];
    // SAFETY: valid path and buffer of the given length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n < 0 {
        return Err(format!("llistxattr: {}", io::Error::last_os_error()));
    }
    names.truncate(n as usize);
    let mut out = Xattrs::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cn = CString::new(name).unwrap();
        let mut val = vec![0u8; 128 * 1024];
        // SAFETY: valid strings and buffer.
        let n =
            unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), val.as_mut_ptr().cast(), val.len()) };
        if n < 0 {
            return Err(format!(
                "lgetxattr {}: {}",
                show_bytes(name),
                io::Error::last_os_error()
            ));
        }
        val.truncate(n as usize);
        out.insert(name.to_vec(), val);
    }
    Ok(out)
}

/// Data ranges by SEEK_DATA/SEEK_HOLE.
pub fn host_data_map(f: &File, size: u64) -> Result<Vec<(u64, u64)>, String> {
    let fd = f.as_raw_fd();
    let mut map = Vec::new();
    let mut off = 0u64;
    while off < size {
        // SAFETY: plain lseek on an open descriptor.
        let d = unsafe { libc::lseek(fd, off as libc::off_t, libc::SEEK_DATA) };
        if d < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break;
            }
            return Err(format!("SEEK_DATA at {off}: {e}"));
        }
        // SAFETY: as above.
        let h = unsafe { libc::lseek(fd, d, libc::SEEK_HOLE) };
        if h < 0 {
            return Err(format!("SEEK_HOLE at {d}: {}", io::Error::last_os_error()));
        }
        let (d, h) = (d as u64, h as u64);
        if h <= d || d < off {
            return Err(format!(
                "lseek went backwards: data {d}, hole {h}, from {off}"
            ));
        }
        map.push((d, h));
        off = h;
    }
    Ok(map)
}

/// Hash `size` bytes read by `read_at`, visiting only the chunks that
/// overlap `map`'s data ranges.
fn hash_ranges(
    size: u64,
    map: &[(u64, u64)],
    mut read_at: impl FnMut(u64, &mut [u8]) -> Result<(), String>,
) -> Result<u64, String> {
    let mut h = ContentHasher::new();
    let mut buf = vec![0u8; CHUNK];
    for &(d, e) in map {
        let first = d / CHUNK as u64;
        let last = e.min(size).div_ceil(CHUNK as u64);
        for c in first..last {
            let start = c * CHUNK as u64;
            let n = (size - start).min(CHUNK as u64) as usize;
            read_at(start, &mut buf[..n])?;
            h.chunk(c, &buf[..n]);
        }
    }
    Ok(h.finish(size))
}

fn host_content(f: &File, size: u64, map: &[(u64, u64)]) -> Result<u64, String> {
    hash_ranges(size, map, |off, buf| {
        f.read_exact_at(buf, off)
            .map_err(|e| format!("read at {off}: {e}"))
    })
}

fn ioctl_u32(f: &File, req: libc::c_ulong) -> Option<u32> {
    let mut v: libc::c_long = 0;
    // SAFETY: FS_IOC_GET* write one long (the kernel writes an int for the
    // 32-bit variants; a long has room for it).
    let r = unsafe { libc::ioctl(f.as_raw_fd(), req as _, &mut v) };
    (r == 0).then_some(v as u32)
}

const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
const FS_IOC_GETVERSION: libc::c_ulong = 0x8008_7601;

/// statx one path (not following symlinks) into an [`Entry`].
pub fn host_entry(p: &Path, opts: WalkOptions) -> io::Result<Entry> {
    let c = cpath(p);
    // SAFETY: zeroed statx is a valid out-buffer.
    let mut sx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out-buffer.
    let r = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_BASIC_STATS | libc::STATX_BTIME,
            &mut sx,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let t = |x: libc::statx_timestamp| Time {
        sec: x.tv_sec,
        nsec: x.tv_nsec,
    };
    let mode = sx.stx_mode as u32;
    let kind = Kind::from_mode(mode);
    let mut e = Entry {
        kind,
        mode,
        nlink: sx.stx_nlink as u64,
        uid: sx.stx_uid,
        gid: sx.stx_gid,
        size: sx.stx_size,
        blocks: sx.stx_blocks,
        blksize: sx.stx_blksize,
        atime: t(sx.stx_atime),
        mtime: t(sx.stx_mtime),
        ctime: t(sx.stx_ctime),
        btime: (sx.stx_mask & libc::STATX_BTIME != 0).then(|| t(sx.stx_btime)),
        rdev: (sx.stx_rdev_major, sx.stx_rdev_minor),
        ino: sx.stx_ino,
        generation: None,
        flags: None,
        link: None,
        xattrs: host_xattrs(p),
        content: None,
        data_map: None,
    };
    match kind {
        Kind::Symlink => {
            e.link = Some(
                std::fs::read_link(p)
                    .map(|t| t.as_os_str().as_bytes().to_vec())
                    .map_err(|x| x.to_string()),
            )
        }
        Kind::File | Kind::Dir => {
            let f = open_noatime(p);
            if opts.ioctls {
                if let Ok(f) = &f {
                    e.generation = ioctl_u32(f, FS_IOC_GETVERSION);
                    e.flags = ioctl_u32(f, FS_IOC_GETFLAGS);
                }
            }
            if kind == Kind::File && (opts.content || opts.data_map) {
                let r = f.map_err(|x| x.to_string()).and_then(|f| {
                    let map = host_data_map(&f, e.size)?;
                    let content = if opts.content {
                        Some(host_content(&f, e.size, &map))
                    } else {
                        None
                    };
                    Ok((map, content))
                });
                match r {
                    Ok((map, content)) => {
                        e.content = content;
                        if opts.data_map {
                            e.data_map = Some(Ok(map));
                        }
                    }
                    Err(x) => {
                        e.content = opts.content.then(|| Err(x.clone()));
                        e.data_map = opts.data_map.then_some(Err(x));
                    }
                }
            }
        }
        _ => {}
    }
    Ok(e)
}

/// Walk the tree under `root` on the host (no symlinks followed, no mount
/// points crossed into: the tree is one filesystem by construction).
///
/// Besides each path's facts it checks that the three ways the kernel
/// answers agree with each other (recorded as errors): readdir's inode
/// number and type, a plain `lstat` (which a FUSE mount may answer from
/// attributes cached by LOOKUP/READDIRPLUS) and `statx` with birth time
/// (which makes it ask the server).
pub fn host_snapshot(root: &Path, opts: WalkOptions) -> Snapshot {
    let mut snap = Snapshot::default();
    // (path, host path, readdir's (d_ino, type) for it)
    type Item = (Vec<u8>, PathBuf, Option<(u64, Option<Kind>)>);
    let mut queue: VecDeque<Item> = VecDeque::new();
    queue.push_back((b"/".to_vec(), root.to_path_buf(), None));
    while let Some((path, host, dirent)) = queue.pop_front() {
        let shown = String::from_utf8_lossy(&path).into_owned();
        let lstat = std::fs::symlink_metadata(&host);
        let e = match host_entry(&host, opts) {
            Ok(e) => e,
            Err(x) => {
                snap.errors.push(format!("{shown}: statx: {x}"));
                continue;
            }
        };
        match lstat {
            Ok(m) => {
                if let Some(what) = lstat_disagrees(&m, &e) {
                    snap.errors
                        .push(format!("{shown}: lstat and statx disagree on {what}"));
                }
            }
            Err(x) => snap.errors.push(format!("{shown}: lstat: {x}")),
        }
        if let Some((d_ino, d_kind)) = dirent {
            if d_ino != e.ino || d_kind.is_some_and(|k| k != e.kind) {
                snap.errors.push(format!(
                    "{shown}: readdir says inode {d_ino} {d_kind:?}, stat says inode {} {:?}",
                    e.ino, e.kind
                ));
            }
        }
        if e.kind == Kind::Dir {
            match std::fs::read_dir(&host) {
                Ok(rd) => {
                    for de in rd {
                        match de {
                            Ok(de) => {
                                let mut child = path.clone();
                                if child != b"/" {
                                    child.push(b'/');
                                }
                                child.extend_from_slice(de.file_name().as_bytes());
                                // d_type (std only stats when it is DT_UNKNOWN).
                                use std::os::unix::fs::DirEntryExt;
                                let kind = de.file_type().ok().map(|t| kind_of(&t));
                                queue.push_back((child, de.path(), Some((de.ino(), kind))));
                            }
                            Err(x) => snap.errors.push(format!("{shown}: readdir: {x}")),
                        }
                    }
                }
                Err(x) => snap.errors.push(format!("{shown}: opendir: {x}")),
            }
        }
        snap.entries.insert(path, e);
    }
    snap
}

fn kind_of(t: &std::fs::FileType) -> Kind {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        Kind::Dir
    } else if t.is_file() {
        Kind::File
    } else if t.is_symlink() {
        Kind::Symlink
    } else if t.is_char_device() {
        Kind::Char
    } else if t.is_block_device() {
        Kind::Block
    } else if t.is_fifo() {
        Kind::Fifo
    } else if t.is_socket() {
        Kind::Socket
    } else {
        Kind::Unknown
    }
}

/// The first field where `lstat` and `statx` differ, if any.
fn lstat_disagrees(m: &std::fs::Metadata, e: &Entry) -> Option<&'static str> {
    use std::os::unix::fs::MetadataExt;
    let time = |sec: i64, nsec: i64, t: &Time| sec == t.sec && nsec == i64::from(t.nsec);
    let checks = [
        ("mode", m.mode() == e.mode),
        ("nlink", m.nlink() == e.nlink),
        ("uid", m.uid() == e.uid),
        ("gid", m.gid() == e.gid),
        ("size", m.size() == e.size),
        ("blocks", m.blocks() == e.blocks),
        ("inode", m.ino() == e.ino),
        ("rdev", m.rdev() == libc::makedev(e.rdev.0, e.rdev.1) as u64),
        ("mtime", time(m.mtime(), m.mtime_nsec(), &e.mtime)),
        ("ctime", time(m.ctime(), m.ctime_nsec(), &e.ctime)),
    ];
    checks.iter().find(|(_, ok)| !ok).map(|(what, _)| *what)
}

// -------------------------------------------------------------- engine side

/// How many entries one readdir call may hand out, like one FUSE buffer.
const READDIR_BATCH: usize = 100;
/// Files up to this size are read entirely, independent of `seek`.
pub const FULL_READ_LIMIT: u64 = 64 << 20;
/// Request sizes cycled through when reading, to catch offset arithmetic
/// that only works for aligned requests.
const READ_SIZES: &[usize] = &[65536, 1, 4095, 131_079, 1 << 20, 3000, 512];

pub struct DirListing {
    pub entries: Vec<(Vec<u8>, InodeNo, Option<FileType>)>,
}

/// List a directory through `readdir`, resuming from cookies in batches the
/// way a FUSE server does; bounded against cookies that never advance.
pub fn engine_list_dir<D: BlockDevice>(
    vol: &Volume<D>,
    dir: InodeNo,
    batch: usize,
) -> Result<DirListing, String> {
    let mut entries = Vec::new();
    let mut cookie = 0u64;
    let mut seen_cookies = std::collections::HashSet::new();
    loop {
        let mut got = 0usize;
        let mut next = cookie;
        vol.readdir(dir, cookie, &mut |e| {
            if got == batch {
                return false;
            }
            entries.push((e.name.to_vec(), e.ino, e.kind));
            next = e.next;
            got += 1;
            true
        })
        .map_err(|e| format!("readdir({dir}, cookie {cookie}): {e}"))?;
        if got < batch {
            return Ok(DirListing { entries });
        }
        if !seen_cookies.insert(next) || entries.len() > 10_000_000 {
            return Err(format!(
                "readdir({dir}) does not advance (cookie {next} repeats)"
            ));
        }
        cookie = next;
    }
}

fn engine_xattrs<D: BlockDevice>(vol: &Volume<D>, ino: InodeNo) -> Result<Xattrs, String> {
    let names = vol.listxattr(ino).map_err(|e| format!("listxattr: {e}"))?;
    let mut out = Xattrs::new();
    for n in names {
        let v = vol
            .getxattr(ino, &n)
            .map_err(|e| format!("getxattr {}: {e}", show_bytes(&n)))?;
        if out.insert(n.clone(), v).is_some() {
            return Err(format!("listxattr lists {} twice", show_bytes(&n)));
        }
    }
    Ok(out)
}

/// Read exactly `buf.len()` bytes at `off` (short only at EOF, which is an
/// error here because callers stay within the size).
fn engine_read_exact<D: BlockDevice>(
    vol: &Volume<D>,
    ino: InodeNo,
    off: u64,
    buf: &mut [u8],
) -> Result<(), String> {
    let mut done = 0;
    while done < buf.len() {
        let n = vol
            .read(ino, off + done as u64, &mut buf[done..])
            .map_err(|e| format!("read at {}: {e}", off + done as u64))?;
        if n == 0 {
            return Err(format!(
                "read at {} returned 0 before the file size",
                off + done as u64
            ));
        }
        if n > buf.len() - done {
            return Err(format!(
                "read at {} claims {n} bytes into a {}-byte buffer",
                off + done as u64,
                buf.len() - done
            ));
        }
        done += n;
    }
    Ok(())
}

/// Content hash through plain sequential reads of varying sizes. Also
/// checks the EOF contract: reads at and past the size return 0.
fn engine_content_full<D: BlockDevice>(
    vol: &Volume<D>,
    ino: InodeNo,
    size: u64,
) -> Result<u64, String> {
    let mut h = ContentHasher::new();
    let mut chunk = vec![0u8; CHUNK];
    let mut fill = 0usize;
    let mut chunk_index = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    let mut i = 0usize;
    while off < size {
        let want = READ_SIZES[i % READ_SIZES.len()];
        i += 1;
        let n = vol
            .read(ino, off, &mut buf[..want])
            .map_err(|e| format!("read({off}, {want}): {e}"))?;
        if n > want {
            return Err(format!("read({off}, {want}) claims {n} bytes"));
        }
        let expect = (size - off).min(want as u64) as usize;
        if n != expect {
            return Err(format!(
                "read({off}, {want}) returned {n}, expected {expect} (size {size})"
            ));
        }
        let mut data = &buf[..n];
        while !data.is_empty() {
            let take = (CHUNK - fill).min(data.len());
            chunk[fill..fill + take].copy_from_slice(&data[..take]);
            fill += take;
            data = &data[take..];
            if fill == CHUNK {
                h.chunk(chunk_index, &chunk);
                chunk_index += 1;
                fill = 0;
            }
        }
        off += n as u64;
    }
    if fill > 0 {
        h.chunk(chunk_index, &chunk[..fill]);
    }
    for past in [size, size + 1, size + 70_000] {
        match vol.read(ino, past, &mut buf[..4096]) {
            Ok(0) => {}
            Ok(n) => {
                return Err(format!(
                    "read at {past} (size {size}) returned {n} bytes, expected 0"
                ))
            }
            Err(e) => {
                return Err(format!(
                    "read at {past} (size {size}): {e}, expected 0 bytes"
                ))
            }
        }
    }
    Ok(h.finish(size))
}

/// Data ranges through `Volume::seek`.
pub fn engine_data_map<D: BlockDevice>(
    vol: &Volume<D>,
    ino: InodeNo,
    size: u64,
) -> Result<Vec<(u64, u64)>, String> {
    let mut map = Vec::new();
    let mut off = 0u64;
    while off < size {
        let d = match vol.seek(ino, off, Whence::Data) {
            Ok(d) => d,
            Err(Error::NoSuchOffset) => break,
            Err(e) => return Err(format!("seek(DATA, {off}): {e}")),
        };
        let h = vol
            .seek(ino, d, Whence::Hole)
            .map_err(|e| format!("seek(HOLE, {d}): {e}"))?;
        if d < off || h <= d || h > size {
            return Err(format!(
                "seek from {off}: data {d}, hole {h}, size {size}: inconsistent"
            ));
        }
        map.push((d, h));
        off = h;
        if map.len() > 10_000_000 {
            return Err("seek map does not end".into());
        }
    }
    match vol.seek(ino, size, Whence::Data) {
        Err(Error::NoSuchOffset) => Ok(map),
        other => Err(format!(
            "seek(DATA, size={size}) = {other:?}, expected NoSuchOffset"
        )),
    }
}

fn engine_content<D: BlockDevice>(vol: &Volume<D>, ino: InodeNo, size: u64) -> Result<u64, String> {
    if size <= FULL_READ_LIMIT {
        return engine_content_full(vol, ino, size);
    }
    // Too large to read whole in a test: read what `seek` calls data. If
    // seek hides data, the hash misses it and differs.
    let map = engine_data_map(vol, ino, size)?;
    hash_ranges(size, &map, |off, buf| engine_read_exact(vol, ino, off, buf))
}

/// Content hash and data map of one inode (shared by its hard links).
type FileFacts = (
    Option<Result<u64, String>>,
    Option<Result<Vec<(u64, u64)>, String>>,
);

fn entry_from_attr<D: BlockDevice>(
    vol: &Volume<D>,
    a: &Attr,
    opts: WalkOptions,
    cache: &mut HashMap<InodeNo, FileFacts>,
    errors: &mut Vec<String>,
    path: &str,
) -> Entry {
    let t = |x: ext4_engine::Timestamp| Time {
        sec: x.sec,
        nsec: x.nsec,
    };
    let kind = Kind::from_engine(a.kind);
    if a.mode & 0o170000 != a.kind.mode_bits() {
        errors.push(format!(
            "{path}: getattr mode {:o} disagrees with kind {:?}",
            a.mode, a.kind
        ));
    }
    let makedev = libc::makedev(a.rdev_major, a.rdev_minor);
    if a.rdev_linux() != makedev {
        errors.push(format!(
            "{path}: Attr::rdev_linux() = {:#x}, makedev({}, {}) = {makedev:#x}",
            a.rdev_linux(),
            a.rdev_major,
            a.rdev_minor
        ));
    }
    let file_or_dir = matches!(kind, Kind::File | Kind::Dir);
    let mut e = Entry {
        kind,
        mode: a.mode,
        nlink: a.nlink as u64,
        uid: a.uid,
        gid: a.gid,
        size: a.size,
        blocks: a.blocks,
        blksize: a.blksize,
        atime: t(a.atime),
        mtime: t(a.mtime),
        ctime: t(a.ctime),
        btime: a.crtime.map(t),
        rdev: (a.rdev_major, a.rdev_minor),
        ino: a.ino.0 as u64,
        generation: (opts.ioctls && file_or_dir).then_some(a.generation),
        flags: (opts.ioctls && file_or_dir).then_some(a.flags),
        link: None,
        xattrs: engine_xattrs(vol, a.ino),
        content: None,
        data_map: None,
    };
    match kind {
        Kind::Symlink => {
            let l = vol.readlink(a.ino).map_err(|x| format!("readlink: {x}"));
            if let Ok(l) = &l {
                if l.len() as u64 != a.size {
                    errors.push(format!(
                        "{path}: readlink gives {} bytes, size is {}",
                        l.len(),
                        a.size
                    ));
                }
            }
            e.link = Some(l);
        }
        Kind::File => {
            let (c, m) = cache
                .entry(a.ino)
                .or_insert_with(|| {
                    let c = opts.content.then(|| engine_content(vol, a.ino, a.size));
                    let m = opts.data_map.then(|| engine_data_map(vol, a.ino, a.size));
                    (c, m)
                })
                .clone();
            e.content = c;
            e.data_map = m;
        }
        _ => {
            if vol.readlink(a.ino).is_ok() {
                errors.push(format!("{path}: readlink succeeds on a {kind:?}"));
            }
        }
    }
    e
}

/// Walk the volume from `InodeNo::ROOT` via readdir/lookup/getattr/read/
/// readlink/listxattr/getxattr/seek. Inconsistencies between calls (lookup
/// vs readdir vs getattr, batched vs one-shot listings, `.`/`..`) are
/// recorded in `errors`.
pub fn engine_snapshot<D: BlockDevice>(vol: &Volume<D>, opts: WalkOptions) -> Snapshot {
    let mut snap = Snapshot::default();
    let mut cache = HashMap::new();
    let root = match vol.getattr(InodeNo::ROOT) {
        Ok(a) => a,
        Err(e) => {
            snap.errors.push(format!("getattr(InodeNo::ROOT): {e}"));
            return snap;
        }
    };
    let root_entry = entry_from_attr(vol, &root, opts, &mut cache, &mut snap.errors, "/");
    if root.kind != FileType::Directory {
        snap.errors.push(format!("root inode is a {:?}", root.kind));
    }
    snap.entries.insert(b"/".to_vec(), root_entry);
    let mut visited_dirs = std::collections::HashSet::from([InodeNo::ROOT]);
    let mut queue: VecDeque<(Vec<u8>, InodeNo, InodeNo)> =
        VecDeque::from([(b"/".to_vec(), InodeNo::ROOT, InodeNo::ROOT)]);
    while let Some((path, dir, parent)) = queue.pop_front() {
        let spath = String::from_utf8_lossy(&path).into_owned();
        let listing = match engine_list_dir(vol, dir, READDIR_BATCH) {
            Ok(l) => l,
            Err(e) => {
                snap.errors.push(format!("{spath}: {e}"));
                continue;
            }
        };
        // The same listing in one call must agree with the batched one.
        match engine_list_dir(vol, dir, usize::MAX) {
            Ok(one) => {
                let a: BTreeSet<_> = listing
                    .entries
                    .iter()
                    .map(|(n, i, _)| (n.clone(), *i))
                    .collect();
                let b: BTreeSet<_> = one
                    .entries
                    .iter()
                    .map(|(n, i, _)| (n.clone(), *i))
                    .collect();
                if a != b || one.entries.len() != listing.entries.len() {
                    snap.errors.push(format!(
                        "{spath}: readdir in batches of {READDIR_BATCH} gives {} entries, in one call {} (sets differ: {})",
                        listing.entries.len(),
                        one.entries.len(),
                        a != b
                    ));
                }
            }
            Err(e) => snap.errors.push(format!("{spath}: one-shot {e}")),
        }
        let mut names = std::collections::HashSet::new();
        for (name, ino, dkind) in listing.entries {
            if !names.insert(name.clone()) {
                snap.errors.push(format!(
                    "{spath}: readdir lists {} twice",
                    show_bytes(&name)
                ));
                continue;
            }
            if name == b"." || name == b".." {
                let want = if name == b"." { dir } else { parent };
                if ino != want {
                    snap.errors.push(format!(
                        "{spath}: readdir entry {} -> inode {ino}, expected {want}",
                        show_bytes(&name)
                    ));
                }
                continue;
            }
            let mut child = path.clone();
            if child != b"/" {
                child.push(b'/');
            }
            child.extend_from_slice(&name);
            let cpath = String::from_utf8_lossy(&child).into_owned();
            let attr = match vol.getattr(ino) {
                Ok(a) => a,
                Err(e) => {
                    snap.errors.push(format!("{cpath}: getattr({ino}): {e}"));
                    continue;
                }
            };
            match vol.lookup(dir, &name) {
                Ok(l) if l == attr => {}
                Ok(l) => snap.errors.push(format!(
                    "{cpath}: lookup gives {l:?}\n        but getattr({ino}) gives {attr:?}"
                )),
                Err(e) => snap.errors.push(format!("{cpath}: lookup: {e}")),
            }
            if attr.ino != ino {
                snap.errors.push(format!(
                    "{cpath}: readdir says inode {ino}, getattr says {}",
                    attr.ino
                ));
            }
            if let Some(k) = dkind {
                if k != attr.kind {
                    snap.errors.push(format!(
                        "{cpath}: readdir type {k:?}, getattr type {:?}",
                        attr.kind
                    ));
                }
            }
            let e = entry_from_attr(vol, &attr, opts, &mut cache, &mut snap.errors, &cpath);
            if attr.kind == FileType::Directory {
                if visited_dirs.insert(ino) {
                    queue.push_back((child.clone(), ino, dir));
                } else {
                    snap.errors
                        .push(format!("{cpath}: directory inode {ino} reached twice"));
                }
            }
            snap.entries.insert(child, e);
        }
        if snap.entries.len() > 5_000_000 {
            snap.errors
                .push("more than 5,000,000 paths: giving up".into());
            break;
        }
    }
    // Damage the engine tolerated silently (falling back, say, from a hash
    // tree to a linear scan). Images here are e2fsck-clean, so any is wrong.
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in vol.take_reports() {
        *counts.entry(format!("{r} [{r:?}]")).or_default() += 1;
    }
    for (r, n) in counts {
        snap.errors.push(format!("engine reported damage (take_reports, {n}x; the queue is bounded) on an e2fsck-clean image: {r}"));
    }
    snap
}

/// Walk a path from the root by `lookup`, component by component.
pub fn engine_resolve<D: BlockDevice>(vol: &Volume<D>, path: &str) -> Result<Attr, Error> {
    let mut a = vol.getattr(InodeNo::ROOT)?;
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        a = vol.lookup(a.ino, comp.as_bytes())?;
    }
    Ok(a)
}

/// All bytes of a file through the engine (for files small enough).
pub fn engine_read_all<D: BlockDevice>(
    vol: &Volume<D>,
    ino: InodeNo,
    size: u64,
) -> Result<Vec<u8>, String> {
    let mut v = vec![0u8; usize::try_from(size).map_err(|_| "too large")?];
    engine_read_exact(vol, ino, 0, &mut v)?;
    Ok(v)
}

/// Offset of the first byte where the engine's reading of a file differs
/// from `expected` (for reports).
pub fn first_difference<D: BlockDevice>(
    vol: &Volume<D>,
    ino: InodeNo,
    expected: &[u8],
) -> Option<(u64, String)> {
    match engine_read_all(vol, ino, expected.len() as u64) {
        Err(e) => Some((0, e)),
        Ok(got) => got.iter().zip(expected).position(|(a, b)| a != b).map(|i| {
            let ctx = |v: &[u8]| {
                v[i..(i + 16).min(v.len())]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            };
            (
                i as u64,
                format!("expected {} got {}", ctx(expected), ctx(&got)),
            )
        }),
    }
}
