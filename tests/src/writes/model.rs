//! The model of a tree the write tests change: every inode (type, mode,
//! owner, times, contents, symlink target, device number, xattrs incl.
//! ACLs; for files, what each block should be: hole, written, unwritten)
//! and every directory's names; link counts follow from the names.
//! [`Op`]s are applied to the engine and to the model, the model
//! predicting each outcome, errors included, the way the kernel's ext4
//! answers (rename's order of checks is the VFS's; `fallocate`'s errnos
//! are checked against the running kernel by `tests/tests/engine_file_ops.rs`).

use std::collections::BTreeMap;

use ext4_engine::errno;
use ext4_engine::falloc;
use ext4_engine::BlockDevice;
use ext4_engine::Volume;
use ext4_engine::{Cred, Error, InodeNo, SetAttr, SetTime};
use ext4_engine::{FileType, Timestamp};
use ext4_engine::{RENAME_EXCHANGE, RENAME_NOREPLACE};
use ext4_engine::{XATTR_CREATE, XATTR_REPLACE};

use super::clock;

/// The directories every image starts with (besides the root).
pub const DIRS: &[&str] = &["", "d1", "d2"];
/// A file every image starts with, and its contents.
pub const SEED_FILE: &str = "seed";

pub fn seed_contents() -> Vec<u8> {
    (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect()
}

/// What a block of a file should be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum St {
    Hole,
    /// Written (FIEMAP without `UNWRITTEN`).
    Data,
    /// Allocated, reading as zeros (FIEMAP `UNWRITTEN`).
    Unwritten,
    /// Allocated, written or unwritten (the kernel and the engine may
    /// differ, e.g. the partial edge blocks of a zero range).
    Alloc,
    /// Not known (after ENOSPC).
    Any,
}

impl St {
    /// Whether `got` (hole, data or unwritten) agrees with this.
    pub fn admits(self, got: St) -> bool {
        match self {
            St::Any => true,
            St::Alloc => got != St::Hole,
            s => s == got,
        }
    }
}

/// What the model needs to know of the filesystem.
#[derive(Clone, Copy, Debug, Default)]
pub struct Geometry {
    pub bs: u64,
    pub cluster: u64,
    /// New files are extent-mapped.
    pub extents: bool,
    /// `inline_data`: small files live in their inode (no blocks).
    pub inline: bool,
    /// The largest size (`s_maxbytes`, extent files).
    pub max_size: u64,
}

/// What an inode holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    File(Vec<u8>),
    Dir,
    Symlink(Vec<u8>),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
    Socket,
}

/// One inode of the model.
#[derive(Clone, Debug)]
pub struct Node {
    pub body: Body,
    /// Permission and set-id bits (`07777`).
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub crtime: Option<Timestamp>,
    /// Full names to values; ACLs in the xattr (`getfattr`) format.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Regular files: block states by logical block (past the end:
    /// holes).
    pub blocks: Vec<St>,
    /// Regular files mapped by indirect blocks (no unwritten state, no
    /// fallocate but punch).
    pub blockmapped: bool,
}

impl Node {
    pub fn st(&self, b: u64) -> St {
        self.blocks.get(b as usize).copied().unwrap_or(St::Hole)
    }

    /// Set blocks `from..to` with `f(old)`.
    fn map_states(&mut self, from: u64, to: u64, f: impl Fn(St) -> St) {
        if to > self.blocks.len() as u64 {
            self.blocks.resize(to as usize, St::Hole);
        }
        for b in from..to {
            let s = &mut self.blocks[b as usize];
            *s = f(*s);
        }
    }

    fn set_states(&mut self, from: u64, to: u64, st: St) {
        self.map_states(from, to, |_| st);
    }

    /// Bytes `from..to` of this file were written (outside [`apply`]):
    /// their blocks (of `bs` bytes) hold data.
    pub fn note_written(&mut self, from: u64, to: u64, bs: u64) {
        if to > from {
            self.set_states(from / bs, to.div_ceil(bs), St::Data);
        }
    }

    /// A regular file's bytes.
    pub fn data(&self) -> &[u8] {
        match &self.body {
            Body::File(d) => d,
            _ => &[],
        }
    }

    fn data_mut(&mut self) -> &mut Vec<u8> {
        match &mut self.body {
            Body::File(d) => d,
            _ => panic!("not a file"),
        }
    }

    /// A regular file's size.
    pub fn size(&self) -> u64 {
        self.data().len() as u64
    }

    pub fn is_dir(&self) -> bool {
        self.body == Body::Dir
    }
    pub fn kind(&self) -> FileType {
        match self.body {
            Body::File(_) => FileType::Regular,
            Body::Dir => FileType::Directory,
            Body::Symlink(_) => FileType::Symlink,
            Body::Char(..) => FileType::CharDevice,
            Body::Block(..) => FileType::BlockDevice,
            Body::Fifo => FileType::Fifo,
            Body::Socket => FileType::Socket,
        }
    }
}

/// What the tree must look like.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub nodes: BTreeMap<InodeNo, Node>,
    /// Each directory's names (without "." and "..").
    pub dirs: BTreeMap<InodeNo, BTreeMap<Vec<u8>, InodeNo>>,
    /// Each directory's parent (the root's is itself).
    pub parent: BTreeMap<InodeNo, InodeNo>,
    /// 256-byte (or larger) inodes: birth times exist.
    pub large_inodes: bool,
    pub block_size: u32,
    pub geo: Geometry,
}

pub const ROOT: InodeNo = InodeNo::ROOT;
const ACL_ACCESS: &[u8] = b"system.posix_acl_access";
const ACL_DEFAULT: &[u8] = b"system.posix_acl_default";

impl Model {
    /// The tree as the engine finds it (a walk from the root).
    pub fn load<D: BlockDevice>(vol: &Volume<D>) -> Model {
        let sb = vol.sb();
        let geo = Geometry {
            bs: sb.block_size as u64,
            cluster: sb.cluster_size as u64,
            extents: sb.has_incompat(ext4_engine::features::incompat::EXTENTS),
            inline: sb.has_incompat(ext4_engine::features::incompat::INLINE_DATA),
            max_size: sb.max_file_size(true),
        };
        let mut m = Model {
            large_inodes: sb.inode_size > 128,
            block_size: sb.block_size,
            geo,
            ..Model::default()
        };
        let mut queue = vec![ROOT];
        m.parent.insert(ROOT, ROOT);
        while let Some(d) = queue.pop() {
            m.load_node(vol, d);
            let mut names = BTreeMap::new();
            vol.readdir(d, 0, &mut |e| {
                if e.name != b"." && e.name != b".." {
                    names.insert(e.name.to_vec(), e.ino);
                }
                true
            })
            .expect("readdir of the starting tree");
            for &ino in names.values() {
                if !m.nodes.contains_key(&ino) {
                    if vol.getattr(ino).unwrap().kind == FileType::Directory {
                        m.parent.insert(ino, d);
                        queue.push(ino);
                    } else {
                        m.load_node(vol, ino);
                    }
                }
            }
            m.dirs.insert(d, names);
        }
        m
    }

    fn load_node<D: BlockDevice>(&mut self, vol: &Volume<D>, ino: InodeNo) {
        let a = vol.getattr(ino).expect("getattr of the starting tree");
        let body = match a.kind {
            FileType::Regular => {
                let mut data = vec![0u8; a.size as usize];
                vol.read(ino, 0, &mut data).unwrap();
                Body::File(data)
            }
            FileType::Directory => Body::Dir,
            FileType::Symlink => Body::Symlink(vol.readlink(ino).unwrap()),
            FileType::CharDevice => Body::Char(a.rdev_major, a.rdev_minor),
            FileType::BlockDevice => Body::Block(a.rdev_major, a.rdev_minor),
            FileType::Fifo => Body::Fifo,
            FileType::Socket => Body::Socket,
        };
        let mut xattrs = BTreeMap::new();
        for n in vol.listxattr(ino).unwrap() {
            let v = vol.getxattr(ino, &n).unwrap();
            xattrs.insert(n, v);
        }
        // `mke2fs -d` writes every block of the starting files.
        let blocks = match a.kind {
            FileType::Regular => vec![St::Data; a.size.div_ceil(self.geo.bs) as usize],
            _ => Vec::new(),
        };
        self.nodes.insert(
            ino,
            Node {
                body,
                mode: (a.mode & 0o7777) as u16,
                uid: a.uid,
                gid: a.gid,
                atime: a.atime,
                mtime: a.mtime,
                ctime: a.ctime,
                crtime: a.crtime,
                xattrs,
                blocks,
                blockmapped: !self.geo.extents,
            },
        );
    }

    /// Every path below the root (`/a`, `/a/b`; a file with several
    /// links has several) and the inode it names.
    pub fn paths(&self) -> BTreeMap<Vec<u8>, InodeNo> {
        let mut out = BTreeMap::new();
        let mut queue = vec![(Vec::new(), ROOT)];
        while let Some((path, d)) = queue.pop() {
            for (name, &child) in &self.dirs[&d] {
                let mut p = path.clone();
                p.push(b'/');
                p.extend_from_slice(name);
                if self.nodes[&child].is_dir() {
                    queue.push((p.clone(), child));
                }
                out.insert(p, child);
            }
        }
        out
    }

    /// Link count of `ino` as ext4 keeps it.
    pub fn nlink(&self, ino: InodeNo) -> u64 {
        if self.nodes[&ino].is_dir() {
            let subdirs = self.dirs[&ino]
                .values()
                .filter(|i| self.nodes[i].is_dir())
                .count() as u64;
            2 + subdirs
        } else {
            self.dirs
                .values()
                .flat_map(|d| d.values())
                .filter(|&&i| i == ino)
                .count() as u64
        }
    }

    /// The directory an op's `dir` index picks.
    pub fn dir_at(&self, i: u8) -> InodeNo {
        let d = self.dir_list();
        d[i as usize % d.len()]
    }

    /// Directories, in inode order.
    pub fn dir_list(&self) -> Vec<InodeNo> {
        self.dirs.keys().copied().collect()
    }

    /// Every (directory, name, inode), in order.
    pub fn entries(&self) -> Vec<(InodeNo, Vec<u8>, InodeNo)> {
        let mut v = Vec::new();
        for (&d, names) in &self.dirs {
            for (n, &i) in names {
                v.push((d, n.clone(), i));
            }
        }
        v
    }

    /// Regular files, in inode order.
    pub fn files(&self) -> Vec<InodeNo> {
        self.nodes
            .iter()
            .filter(|(_, n)| matches!(n.body, Body::File(_)))
            .map(|(&i, _)| i)
            .collect()
    }

    pub fn data_mut(&mut self, ino: InodeNo) -> &mut Vec<u8> {
        self.nodes.get_mut(&ino).unwrap().data_mut()
    }

    /// Whether `anc` is `dir` or above it.
    fn is_ancestor(&self, anc: InodeNo, mut dir: InodeNo) -> bool {
        loop {
            if dir == anc {
                return true;
            }
            if dir == ROOT {
                return false;
            }
            dir = self.parent[&dir];
        }
    }

    fn touch_dir(&mut self, d: InodeNo, now: Timestamp) {
        let n = self.nodes.get_mut(&d).unwrap();
        n.mtime = now;
        n.ctime = now;
    }

    fn remove_name(&mut self, d: InodeNo, name: &[u8]) {
        let ino = self.dirs.get_mut(&d).unwrap().remove(name).unwrap();
        let still = self.dirs.values().any(|x| x.values().any(|&i| i == ino));
        if !still {
            self.nodes.remove(&ino);
            self.dirs.remove(&ino);
            self.parent.remove(&ino);
        }
    }

    /// A new node in `d` from `mode` (type and permission bits) and the
    /// directory's default ACL, as the kernel's `posix_acl_create`.
    fn new_node(&self, d: InodeNo, body: Body, mode: u16, umask: u16, now: Timestamp) -> Node {
        let parent = &self.nodes[&d];
        let sgid = parent.mode & 0o2000 != 0;
        let is_dir = body == Body::Dir;
        let is_link = matches!(body, Body::Symlink(_));
        let mut perm = mode & 0o7777;
        let mut xattrs = BTreeMap::new();
        if !is_link {
            match parent.xattrs.get(ACL_DEFAULT) {
                Some(def) => {
                    let mut acl = acl_parse(def);
                    let equiv = create_masq(&mut acl, &mut perm);
                    if !equiv {
                        xattrs.insert(ACL_ACCESS.to_vec(), acl_bytes(&acl));
                    }
                    if is_dir {
                        xattrs.insert(ACL_DEFAULT.to_vec(), def.clone());
                    }
                }
                None => perm &= !umask,
            }
        }
        if is_dir && sgid {
            perm |= 0o2000;
        }
        Node {
            body,
            mode: perm,
            uid: 0,
            gid: if sgid { parent.gid } else { 0 },
            atime: now,
            mtime: now,
            ctime: now,
            crtime: self.large_inodes.then_some(now),
            xattrs,
            blocks: Vec::new(),
            blockmapped: !self.geo.extents,
        }
    }
}

// ------------------------------------------------------------- POSIX ACLs
// The kernel's rules, written from its documentation (acl(5)) for the
// model; the engine's are checked against a kernel mount separately.

/// (tag, perm, id) entries of an ACL in the xattr format.
pub fn acl_parse(v: &[u8]) -> Vec<(u16, u16, u32)> {
    v[4..]
        .chunks(8)
        .map(|c| {
            (
                u16::from_le_bytes([c[0], c[1]]),
                u16::from_le_bytes([c[2], c[3]]),
                u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            )
        })
        .collect()
}

pub fn acl_bytes(acl: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for &(t, p, i) in acl {
        v.extend_from_slice(&t.to_le_bytes());
        v.extend_from_slice(&p.to_le_bytes());
        v.extend_from_slice(&i.to_le_bytes());
    }
    v
}

const USER_OBJ: u16 = 1;
const USER: u16 = 2;
const GROUP_OBJ: u16 = 4;
const GROUP: u16 = 8;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

/// acl(5), "object creation": the mode's owner/group-class/other bits and
/// the inherited ACL's owner, mask (else group) and other entries are
/// intersected. Returns whether the ACL is equivalent to the mode.
fn create_masq(acl: &mut [(u16, u16, u32)], perm: &mut u16) -> bool {
    let mut m = *perm & 0o777;
    let has_mask = acl.iter().any(|e| e.0 == MASK);
    let named = acl.iter().any(|e| e.0 == USER || e.0 == GROUP);
    for e in acl.iter_mut() {
        let (shift, class) = match e.0 {
            USER_OBJ => (6, true),
            OTHER => (0, true),
            MASK => (3, true),
            GROUP_OBJ if !has_mask => (3, true),
            _ => (0, false),
        };
        if class {
            e.1 &= (m >> shift) & 7;
            m = (m & !(7 << shift)) | ((m >> shift) & e.1 & 7) << shift;
        }
    }
    *perm = (*perm & !0o777) | m;
    !has_mask && !named
}

/// The permission bits an ACL stands for, and whether that says all of it.
fn acl_mode(acl: &[(u16, u16, u32)]) -> (u16, bool) {
    let get = |t: u16| acl.iter().find(|e| e.0 == t).map(|e| e.1);
    let u = get(USER_OBJ).unwrap_or(0);
    let o = get(OTHER).unwrap_or(0);
    let g = get(MASK).or(get(GROUP_OBJ)).unwrap_or(0);
    let equiv = get(MASK).is_none() && !acl.iter().any(|e| e.0 == USER || e.0 == GROUP);
    (u << 6 | g << 3 | o, equiv)
}

/// An ACL from `seed`: owner, some named users and groups (with a mask),
/// other; sorted as a valid ACL is.
pub fn make_acl(seed: u8) -> Vec<(u16, u16, u32)> {
    let s = seed as u32;
    let mut acl = vec![(USER_OBJ, (s % 8) as u16, u32::MAX)];
    for k in 0..(s % 3) {
        acl.push((USER, ((s >> 2) + k) as u16 % 8, 1000 + k * 7 + s % 5));
    }
    acl.push((GROUP_OBJ, ((s >> 3) % 8) as u16, u32::MAX));
    for k in 0..((s >> 4) % 2) {
        acl.push((GROUP, ((s >> 1) + k) as u16 % 8, 50 + k));
    }
    // Named entries need a mask; without them it is optional.
    if acl.len() > 2 || s & 1 == 1 {
        acl.push((MASK, ((s >> 5) % 8) as u16, u32::MAX));
    }
    acl.push((OTHER, ((s >> 6) % 8) as u16, u32::MAX));
    acl
}

// ------------------------------------------------------------ operations

/// One step of a random sequence. Indices pick among what exists (modulo
/// its count); names come from a small set so that they collide.
#[derive(Clone, Debug)]
pub enum Op {
    Create {
        dir: u8,
        name: u16,
        pad: u8,
        mode: u16,
        umask: bool,
    },
    Mkdir {
        dir: u8,
        name: u16,
        mode: u16,
        umask: bool,
    },
    Mknod {
        dir: u8,
        name: u16,
        kind: u8,
        major: u16,
        minor: u32,
    },
    Symlink {
        dir: u8,
        name: u16,
        len: u16,
        seed: u8,
    },
    Link {
        node: u16,
        dir: u8,
        name: u16,
    },
    Unlink {
        entry: u16,
    },
    Rmdir {
        entry: u16,
    },
    Rename {
        entry: u16,
        dir: u8,
        name: u16,
        flags: u8,
    },
    Write {
        file: u16,
        off: u32,
        len: u32,
        seed: u8,
    },
    Truncate {
        file: u16,
        size: u32,
    },
    Chmod {
        node: u16,
        mode: u16,
    },
    Chown {
        node: u16,
        uid: u16,
        gid: u16,
    },
    Utimes {
        node: u16,
        atime: i32,
        mtime: i32,
        nsec: u32,
    },
    SetXattr {
        node: u16,
        ns: u8,
        name: u8,
        len: u16,
        seed: u8,
        flags: u8,
    },
    RemoveXattr {
        node: u16,
        ns: u8,
        name: u8,
    },
    SetAcl {
        node: u16,
        default: bool,
        seed: u8,
    },
    /// `count` new files in one directory (hash-tree splits).
    Many {
        dir: u8,
        count: u16,
        prefix: u8,
    },
    /// Unlink every `step`-th name of a directory (hash-tree removal).
    Prune {
        dir: u8,
        step: u8,
    },
    /// `fallocate` with `FALLOC_MODES[mode % len]`; `aligned` rounds the
    /// offset and length down to the cluster (collapse and insert need it).
    Fallocate {
        file: u16,
        mode: u8,
        off: u32,
        len: u32,
        aligned: bool,
    },
    Commit,
}

/// `fallocate` modes a random sequence picks from: the supported ones
/// mostly, and some the kernel refuses.
pub const FALLOC_MODES: &[u32] = &[
    0,
    falloc::KEEP_SIZE,
    falloc::PUNCH_HOLE | falloc::KEEP_SIZE,
    falloc::PUNCH_HOLE | falloc::KEEP_SIZE,
    falloc::ZERO_RANGE,
    falloc::ZERO_RANGE | falloc::KEEP_SIZE,
    falloc::COLLAPSE_RANGE,
    falloc::INSERT_RANGE,
    falloc::PUNCH_HOLE,
    falloc::COLLAPSE_RANGE | falloc::KEEP_SIZE,
    falloc::UNSHARE_RANGE | falloc::KEEP_SIZE,
];

/// The errno the kernel answers `fallocate(mode, off, len)` on file `f`
/// with, and whether the times change (every mode that passes the VFS's
/// checks sets mtime and ctime, even when ext4 then refuses it).
pub fn falloc_expect(f: &Node, geo: &Geometry, mode: u32, off: u64, len: u64) -> (i32, bool) {
    use falloc::*;
    if len == 0 || off > i64::MAX as u64 || len > i64::MAX as u64 {
        return (errno::EINVAL, false);
    }
    if mode & !KNOWN != 0 {
        return (errno::EOPNOTSUPP, false);
    }
    let keep = mode & KEEP_SIZE != 0;
    let op = mode & !KEEP_SIZE;
    let ok_combo = match op {
        0 | UNSHARE_RANGE | ZERO_RANGE => true,
        PUNCH_HOLE => keep,
        COLLAPSE_RANGE | INSERT_RANGE | WRITE_ZEROES => !keep,
        _ => false,
    };
    if !ok_combo {
        return (errno::EOPNOTSUPP, false);
    }
    if off + len > geo.max_size {
        return (errno::EFBIG, false);
    }
    if op == UNSHARE_RANGE || op == WRITE_ZEROES {
        return (errno::EOPNOTSUPP, false);
    }
    let size = f.size();
    if f.blockmapped && op != PUNCH_HOLE {
        return (errno::EOPNOTSUPP, true);
    }
    let aligned = (off | len).is_multiple_of(geo.cluster);
    match op {
        COLLAPSE_RANGE if !aligned || off + len >= size => (errno::EINVAL, true),
        INSERT_RANGE if !aligned => (errno::EINVAL, true),
        INSERT_RANGE if len > geo.max_size - size => (errno::EFBIG, true),
        INSERT_RANGE if off >= size => (errno::EINVAL, true),
        _ => (0, true),
    }
}

/// Apply a successful `fallocate` to file `f`, as the kernel's ext4 does.
fn falloc_apply(f: &mut Node, geo: &Geometry, mode: u32, off: u64, len: u64) {
    use falloc::*;
    let bs = geo.bs;
    let keep = mode & KEEP_SIZE != 0;
    let op = mode & !KEEP_SIZE;
    let end = off + len;
    let size = f.size();
    let grow = |f: &mut Node| {
        if !keep && end > f.size() {
            f.data_mut().resize(end as usize, 0);
        }
    };
    match op {
        0 => {
            f.map_states(off / bs, end.div_ceil(bs), |s| match s {
                St::Hole => St::Unwritten,
                s => s,
            });
            grow(f);
        }
        PUNCH_HOLE => {
            if off >= size {
                return;
            }
            let end = end.min(size.div_ceil(4096) * 4096);
            let zero_to = end.min(size) as usize;
            f.data_mut()[off as usize..zero_to].fill(0);
            let (first, stop) = (off.div_ceil(bs), end / bs);
            if first < stop {
                f.set_states(first, stop, St::Hole);
            }
        }
        ZERO_RANGE => {
            let zero_to = end.min(size) as usize;
            if (off as usize) < zero_to {
                f.data_mut()[off as usize..zero_to].fill(0);
            }
            let (first, stop) = (off.div_ceil(bs), end / bs);
            // Partial edge blocks: allocated, and the kernel may write
            // them while zeroing.
            f.map_states(off / bs, end.div_ceil(bs), |s| match s {
                St::Hole | St::Unwritten => St::Alloc,
                s => s,
            });
            if first < stop {
                f.set_states(first, stop, St::Unwritten);
            }
            grow(f);
        }
        COLLAPSE_RANGE => {
            f.data_mut().drain(off as usize..end as usize);
            let (a, b) = ((off / bs) as usize, (end / bs) as usize);
            if f.blocks.len() > a {
                let b = b.min(f.blocks.len());
                f.blocks.drain(a..b);
            }
        }
        INSERT_RANGE => {
            let at = off as usize;
            f.data_mut()
                .splice(at..at, std::iter::repeat_n(0u8, len as usize));
            let a = (off / bs) as usize;
            if f.blocks.len() > a {
                let n = (len / bs) as usize;
                f.blocks.splice(a..a, std::iter::repeat_n(St::Hole, n));
            }
        }
        _ => {}
    }
}

/// After an outcome the model cannot predict (ENOSPC part-way): take file
/// `ino`'s size and bytes from the engine, and forget the states of
/// blocks `from..to`.
fn resync<D: BlockDevice>(
    vol: &Volume<D>,
    f: &mut Node,
    ino: InodeNo,
    from: u64,
    to: u64,
) -> Result<(), String> {
    let a = vol.getattr(ino).map_err(|e| format!("getattr: {e}"))?;
    let mut buf = vec![0u8; a.size as usize];
    let n = vol
        .read(ino, 0, &mut buf)
        .map_err(|e| format!("read: {e}"))?;
    buf.truncate(n);
    *f.data_mut() = buf;
    f.map_states(from, to, |_| St::Any);
    Ok(())
}

pub fn bytes_of(seed: u8, off: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (seed as u32)
                .wrapping_mul(31)
                .wrapping_add((off as usize + i) as u32 * 13) as u8
                | 1
        })
        .collect()
}

pub fn name_of(name: u16, pad: u8) -> Vec<u8> {
    let mut n = format!("f{name}");
    while n.len() < pad as usize % 200 + 1 {
        n.push('x');
    }
    n.into_bytes()
}

fn xattr_name(ns: u8, name: u8) -> Vec<u8> {
    let prefix = ["user.", "trusted.", "security."][ns as usize % 3];
    format!("{prefix}a{}", name % 6).into_bytes()
}

fn pick<T: Clone>(v: &[T], i: u16) -> Option<T> {
    (!v.is_empty()).then(|| v[i as usize % v.len()].clone())
}

/// Whether an entry may be the target of destructive operations
/// (e2fsck wants `lost+found` in the root).
fn protected(d: InodeNo, name: &[u8]) -> bool {
    d == ROOT && name == b"lost+found"
}

/// The outcome `got` must be `want` (Ok, or that error); ENOSPC is
/// accepted for anything that may allocate (then the model stays).
fn expect<T>(
    what: &str,
    got: Result<T, Error>,
    want: Result<(), Error>,
) -> Result<Option<T>, String> {
    match (got, want) {
        (Ok(v), Ok(())) => Ok(Some(v)),
        (Err(Error::NoSpace), Ok(())) => Ok(None),
        (Err(e), Err(w)) if e == w => Ok(None),
        (Err(e), Err(w)) if std::mem::discriminant(&e) == std::mem::discriminant(&w) => Ok(None),
        (Ok(_), Err(w)) => Err(format!("{what}: succeeded, the kernel answers {w:?}")),
        (Err(e), w) => Err(format!("{what}: {e:?}, expected {w:?}")),
    }
}

/// Apply `op` to the engine and the model (`step`: the clock's tick this
/// operation runs at).
pub fn apply<D: BlockDevice>(
    vol: &Volume<D>,
    m: &mut Model,
    op: &Op,
    step: u64,
) -> Result<(), String> {
    clock::set(step);
    let now = clock::at(step);
    let cred = Cred::ROOT;
    let dirs = m.dir_list();
    let pick_dir = |i: u8| dirs[i as usize % dirs.len()];
    match *op {
        Op::Create {
            dir,
            name,
            pad,
            mode,
            umask,
        } => {
            let d = pick_dir(dir);
            let name = name_of(name, pad);
            let umask = if umask { 0o022 } else { 0 };
            let want = if m.dirs[&d].contains_key(&name) {
                Err(Error::Exists)
            } else {
                Ok(())
            };
            let r = vol.create(d, &name, mode & 0o7777, &cred.with_umask(umask));
            if let Some(a) = expect(&format!("create {name:?}"), r, want)? {
                let n = m.new_node(d, Body::File(Vec::new()), mode, umask, now);
                m.nodes.insert(a.ino, n);
                m.dirs.get_mut(&d).unwrap().insert(name, a.ino);
                m.touch_dir(d, now);
            }
        }
        Op::Mkdir {
            dir,
            name,
            mode,
            umask,
        } => {
            let d = pick_dir(dir);
            let name = name_of(name, 3);
            let umask = if umask { 0o027 } else { 0 };
            let want = if m.dirs[&d].contains_key(&name) {
                Err(Error::Exists)
            } else {
                Ok(())
            };
            let r = vol.mkdir(d, &name, mode & 0o7777, &cred.with_umask(umask));
            if let Some(a) = expect(&format!("mkdir {name:?}"), r, want)? {
                let n = m.new_node(d, Body::Dir, mode & 0o1777, umask, now);
                m.nodes.insert(a.ino, n);
                m.dirs.insert(a.ino, BTreeMap::new());
                m.parent.insert(a.ino, d);
                m.dirs.get_mut(&d).unwrap().insert(name, a.ino);
                m.touch_dir(d, now);
            }
        }
        Op::Mknod {
            dir,
            name,
            kind,
            major,
            minor,
        } => {
            let d = pick_dir(dir);
            let name = name_of(name, 5);
            let (major, minor) = (major as u32 % 4096, minor % (1 << 20));
            let (mode, body) = match kind % 4 {
                0 => (0o020640, Body::Char(major, minor)),
                1 => (0o060600, Body::Block(major, minor)),
                2 => (0o010644, Body::Fifo),
                _ => (0o140755, Body::Socket),
            };
            let want = if m.dirs[&d].contains_key(&name) {
                Err(Error::Exists)
            } else {
                Ok(())
            };
            let r = vol.mknod(d, &name, mode, (major, minor), &cred);
            if let Some(a) = expect(&format!("mknod {name:?}"), r, want)? {
                let n = m.new_node(d, body, mode, 0, now);
                m.nodes.insert(a.ino, n);
                m.dirs.get_mut(&d).unwrap().insert(name, a.ino);
                m.touch_dir(d, now);
            }
        }
        Op::Symlink {
            dir,
            name,
            len,
            seed,
        } => {
            let d = pick_dir(dir);
            let name = name_of(name, 7);
            let len = len as usize % (m.block_size as usize - 1) + 1;
            let target = bytes_of(seed, 0, len);
            let want = if m.dirs[&d].contains_key(&name) {
                Err(Error::Exists)
            } else {
                Ok(())
            };
            let r = vol.symlink(d, &name, &target, &cred);
            if let Some(a) = expect(&format!("symlink {name:?}"), r, want)? {
                let n = m.new_node(d, Body::Symlink(target), 0o777, 0, now);
                m.nodes.insert(a.ino, n);
                m.dirs.get_mut(&d).unwrap().insert(name, a.ino);
                m.touch_dir(d, now);
            }
        }
        Op::Link { node, dir, name } => {
            let targets: Vec<InodeNo> = m
                .nodes
                .iter()
                .filter(|(_, n)| !n.is_dir())
                .map(|(&i, _)| i)
                .collect();
            let Some(ino) = pick(&targets, node) else {
                return Ok(());
            };
            let d = pick_dir(dir);
            let name = name_of(name, 11);
            let want = if m.dirs[&d].contains_key(&name) {
                Err(Error::Exists)
            } else {
                Ok(())
            };
            let r = vol.link(ino, d, &name, &cred);
            if expect(&format!("link {name:?}"), r, want)?.is_some() {
                m.dirs.get_mut(&d).unwrap().insert(name, ino);
                m.touch_dir(d, now);
                m.nodes.get_mut(&ino).unwrap().ctime = now;
            }
        }
        Op::Unlink { entry } => {
            let es: Vec<_> = m
                .entries()
                .into_iter()
                .filter(|(_, _, i)| !m.nodes[i].is_dir())
                .collect();
            let Some((d, name, ino)) = pick(&es, entry) else {
                return Ok(());
            };
            vol.unlink(d, &name)
                .map_err(|e| format!("unlink {name:?}: {e}"))?;
            m.remove_name(d, &name);
            m.touch_dir(d, now);
            if let Some(n) = m.nodes.get_mut(&ino) {
                n.ctime = now;
            }
        }
        Op::Rmdir { entry } => {
            let es: Vec<_> = m
                .entries()
                .into_iter()
                .filter(|(d, n, i)| m.nodes[i].is_dir() && !protected(*d, n))
                .collect();
            let Some((d, name, ino)) = pick(&es, entry) else {
                return Ok(());
            };
            let want = if m.dirs[&ino].is_empty() {
                Ok(())
            } else {
                Err(Error::NotEmpty)
            };
            let r = vol.rmdir(d, &name);
            if expect(&format!("rmdir {name:?}"), r, want)?.is_some() {
                m.remove_name(d, &name);
                m.touch_dir(d, now);
            }
        }
        Op::Rename {
            entry,
            dir,
            name,
            flags,
        } => {
            let es: Vec<_> = m
                .entries()
                .into_iter()
                .filter(|(d, n, _)| !protected(*d, n))
                .collect();
            let Some((d1, n1, src)) = pick(&es, entry) else {
                return Ok(());
            };
            let d2 = pick_dir(dir);
            let n2 = name_of(name, 3);
            if protected(d2, &n2) {
                return Ok(());
            }
            let flags = [0, RENAME_NOREPLACE, RENAME_EXCHANGE][flags as usize % 3];
            let exchange = flags == RENAME_EXCHANGE;
            let dst = m.dirs[&d2].get(&n2).copied();
            let s_dir = m.nodes[&src].is_dir();
            let d_dir = dst.is_some_and(|t| m.nodes[&t].is_dir());
            // The VFS's order of checks.
            let want = if flags == RENAME_NOREPLACE && dst.is_some() {
                Err(Error::Exists)
            } else if exchange && dst.is_none() {
                Err(Error::NotFound)
            } else if d1 != d2 && s_dir && m.is_ancestor(src, d2) {
                Err(Error::InvalidArgument)
            } else if d1 != d2 && d_dir && m.is_ancestor(dst.unwrap(), d1) {
                Err(if exchange {
                    Error::InvalidArgument
                } else {
                    Error::NotEmpty
                })
            } else if dst == Some(src) {
                Ok(())
            } else if !exchange && dst.is_some() && s_dir && !d_dir {
                Err(Error::NotDir)
            } else if !exchange && dst.is_some() && !s_dir && d_dir {
                Err(Error::IsDir)
            } else if !exchange && d_dir && !m.dirs[&dst.unwrap()].is_empty() {
                Err(Error::NotEmpty)
            } else {
                Ok(())
            };
            let r = vol.rename(d1, &n1, d2, &n2, flags, &cred);
            let what = format!("rename {n1:?} -> {n2:?} flags {flags}");
            if expect(&what, r, want)?.is_some() && dst != Some(src) {
                if exchange {
                    let t = dst.unwrap();
                    m.dirs.get_mut(&d1).unwrap().insert(n1.clone(), t);
                    m.dirs.get_mut(&d2).unwrap().insert(n2.clone(), src);
                    if s_dir {
                        m.parent.insert(src, d2);
                    }
                    if d_dir {
                        m.parent.insert(t, d1);
                    }
                    m.nodes.get_mut(&t).unwrap().ctime = now;
                } else {
                    if dst.is_some() {
                        m.remove_name(d2, &n2);
                        if let Some(t) = dst.filter(|t| m.nodes.contains_key(t)) {
                            m.nodes.get_mut(&t).unwrap().ctime = now;
                        }
                    }
                    m.dirs.get_mut(&d1).unwrap().remove(&n1);
                    m.dirs.get_mut(&d2).unwrap().insert(n2.clone(), src);
                    if s_dir {
                        m.parent.insert(src, d2);
                    }
                }
                m.nodes.get_mut(&src).unwrap().ctime = now;
                m.touch_dir(d1, now);
                m.touch_dir(d2, now);
            }
        }
        Op::Write {
            file,
            off,
            len,
            seed,
        } => {
            let Some(ino) = pick(&m.files(), file) else {
                return Ok(());
            };
            let bs = m.geo.bs;
            let data = bytes_of(seed, off, len as usize);
            let f = m.nodes.get_mut(&ino).unwrap();
            let n = match vol.write(ino, off as u64, &data, &cred) {
                Ok(n) => n,
                Err(Error::NoSpace) => {
                    // Nothing was written, or inline data moved out: the
                    // engine says what is there now.
                    let size = f.size();
                    resync(vol, f, ino, 0, size.div_ceil(bs))?;
                    0
                }
                Err(e) => return Err(format!("write {ino} at {off}+{len}: {e}")),
            };
            if n > 0 {
                let end = off as usize + n;
                let d = f.data_mut();
                if d.len() < end {
                    d.resize(end, 0);
                }
                d[off as usize..end].copy_from_slice(&data[..n]);
                f.set_states(off as u64 / bs, (end as u64).div_ceil(bs), St::Data);
                f.mtime = now;
                f.ctime = now;
            }
        }
        Op::Truncate { file, size } => {
            let Some(ino) = pick(&m.files(), file) else {
                return Ok(());
            };
            let bs = m.geo.bs;
            let f = m.nodes.get_mut(&ino).unwrap();
            match vol.truncate(ino, size as u64) {
                Ok(()) => {}
                Err(Error::NoSpace) => {
                    // Inline data that had to move into a block.
                    let old = f.size();
                    resync(vol, f, ino, 0, old.div_ceil(bs))?;
                    return Ok(());
                }
                Err(e) => return Err(format!("truncate {ino} to {size}: {e}")),
            }
            let changed = f.size() != size as u64;
            if (size as u64) < f.size() {
                let from = (size as u64).div_ceil(bs);
                let to = f.blocks.len() as u64;
                if from < to {
                    f.set_states(from, to, St::Hole);
                }
            }
            f.data_mut().resize(size as usize, 0);
            if changed {
                f.mtime = now;
            }
            f.ctime = now;
        }
        Op::Fallocate {
            file,
            mode,
            off,
            len,
            aligned,
        } => {
            let Some(ino) = pick(&m.files(), file) else {
                return Ok(());
            };
            let geo = m.geo;
            let bs = geo.bs;
            let mode = FALLOC_MODES[mode as usize % FALLOC_MODES.len()];
            let (mut off, mut len) = (off as u64, len as u64);
            if aligned {
                off = off / geo.cluster * geo.cluster;
                len = len / geo.cluster * geo.cluster;
            }
            let f = m.nodes.get_mut(&ino).unwrap();
            let (want, times) = falloc_expect(f, &geo, mode, off, len);
            let r = vol.fallocate(ino, mode, off, len, &cred);
            let what = format!("fallocate {ino} mode {mode:#x} {off}+{len}");
            match r {
                Ok(()) if want == 0 => falloc_apply(f, &geo, mode, off, len),
                Err(Error::NoSpace) if want == 0 => {
                    let to = (off + len).max(f.size()).div_ceil(bs);
                    let from = (off / bs).min(f.size() / bs);
                    resync(vol, f, ino, from, to.max(f.blocks.len() as u64))?;
                }
                Err(e) if e.errno() == want => {}
                Ok(()) => {
                    return Err(format!(
                        "{what}: succeeded, the kernel answers errno {want}"
                    ))
                }
                Err(e) => {
                    return Err(format!(
                        "{what}: {e} (errno {}), the kernel answers errno {want}",
                        e.errno()
                    ))
                }
            }
            if times {
                f.mtime = now;
                f.ctime = now;
            }
        }
        Op::Chmod { node, mode } => {
            let targets: Vec<InodeNo> = m
                .nodes
                .iter()
                .filter(|(_, n)| !matches!(n.body, Body::Symlink(_)))
                .map(|(&i, _)| i)
                .collect();
            let Some(ino) = pick(&targets, node) else {
                return Ok(());
            };
            let mode = mode & 0o7777;
            let set = SetAttr {
                mode: Some(mode),
                ..SetAttr::default()
            };
            vol.setattr(ino, &set)
                .map_err(|e| format!("chmod {ino}: {e}"))?;
            let n = m.nodes.get_mut(&ino).unwrap();
            n.mode = mode;
            n.ctime = now;
            if let Some(v) = n.xattrs.get(ACL_ACCESS) {
                // acl(5): chmod sets the owner, other and mask (else group)
                // entries from the mode.
                let mut acl = acl_parse(v);
                let has_mask = acl.iter().any(|e| e.0 == MASK);
                for e in acl.iter_mut() {
                    match e.0 {
                        USER_OBJ => e.1 = (mode >> 6) & 7,
                        OTHER => e.1 = mode & 7,
                        MASK => e.1 = (mode >> 3) & 7,
                        GROUP_OBJ if !has_mask => e.1 = (mode >> 3) & 7,
                        _ => {}
                    }
                }
                n.xattrs.insert(ACL_ACCESS.to_vec(), acl_bytes(&acl));
            }
        }
        Op::Chown { node, uid, gid } => {
            let all: Vec<InodeNo> = m.nodes.keys().copied().collect();
            let Some(ino) = pick(&all, node) else {
                return Ok(());
            };
            let (uid, gid) = (uid as u32 * 1000 + 7, gid as u32 * 999 + 70000);
            let set = SetAttr {
                uid: Some(uid),
                gid: Some(gid),
                ..SetAttr::default()
            };
            vol.setattr(ino, &set)
                .map_err(|e| format!("chown {ino}: {e}"))?;
            let n = m.nodes.get_mut(&ino).unwrap();
            n.uid = uid;
            n.gid = gid;
            n.ctime = now;
        }
        Op::Utimes {
            node,
            atime,
            mtime,
            nsec,
        } => {
            let all: Vec<InodeNo> = m.nodes.keys().copied().collect();
            let Some(ino) = pick(&all, node) else {
                return Ok(());
            };
            let t = |s: i32| Timestamp {
                sec: s as i64,
                nsec: nsec % 1_000_000_000,
            };
            let set = SetAttr {
                atime: Some(SetTime::At(t(atime))),
                mtime: Some(SetTime::At(t(mtime))),
                ..SetAttr::default()
            };
            vol.setattr(ino, &set)
                .map_err(|e| format!("utimes {ino}: {e}"))?;
            let n = m.nodes.get_mut(&ino).unwrap();
            n.atime = t(atime);
            n.mtime = t(mtime);
            n.ctime = now;
        }
        Op::SetXattr {
            node,
            ns,
            name,
            len,
            seed,
            flags,
        } => {
            let all: Vec<InodeNo> = m.nodes.keys().copied().collect();
            let Some(ino) = pick(&all, node) else {
                return Ok(());
            };
            let name = xattr_name(ns, name);
            let len = match len % 8 {
                7 => len as usize % 5000,
                _ => len as usize % 300,
            };
            let value = bytes_of(seed, 0, len);
            let flags = [0, XATTR_CREATE, XATTR_REPLACE][flags as usize % 3];
            let n = &m.nodes[&ino];
            let exists = n.xattrs.contains_key(&name);
            let user_ok =
                !name.starts_with(b"user.") || matches!(n.body, Body::File(_) | Body::Dir);
            let want = if !user_ok {
                Err(Error::NotPermitted)
            } else if flags == XATTR_REPLACE && !exists {
                Err(Error::NoData)
            } else if flags == XATTR_CREATE && exists {
                Err(Error::Exists)
            } else {
                Ok(())
            };
            let r = vol.setxattr(ino, &name, &value, flags, &cred);
            if expect(&format!("setxattr {name:?} ({len} bytes)"), r, want)?.is_some() {
                let n = m.nodes.get_mut(&ino).unwrap();
                if n.xattrs.get(&name) != Some(&value) {
                    n.ctime = now;
                }
                n.xattrs.insert(name, value);
            }
        }
        Op::RemoveXattr { node, ns, name } => {
            let all: Vec<InodeNo> = m.nodes.keys().copied().collect();
            let Some(ino) = pick(&all, node) else {
                return Ok(());
            };
            let name = xattr_name(ns, name);
            let n = &m.nodes[&ino];
            let user_ok =
                !name.starts_with(b"user.") || matches!(n.body, Body::File(_) | Body::Dir);
            let want = if !user_ok {
                Err(Error::NotPermitted)
            } else if !n.xattrs.contains_key(&name) {
                Err(Error::NoData)
            } else {
                Ok(())
            };
            let r = vol.removexattr(ino, &name);
            if expect(&format!("removexattr {name:?}"), r, want)?.is_some() {
                let n = m.nodes.get_mut(&ino).unwrap();
                n.xattrs.remove(&name);
                n.ctime = now;
            }
        }
        Op::SetAcl {
            node,
            default,
            seed,
        } => {
            let all: Vec<InodeNo> = m.nodes.keys().copied().collect();
            let Some(ino) = pick(&all, node) else {
                return Ok(());
            };
            let acl = make_acl(seed);
            let value = acl_bytes(&acl);
            let name = if default { ACL_DEFAULT } else { ACL_ACCESS };
            let n = &m.nodes[&ino];
            let want = if matches!(n.body, Body::Symlink(_)) {
                Err(Error::Unsupported { what: "" })
            } else if default && !n.is_dir() {
                Err(Error::PermissionDenied)
            } else {
                Ok(())
            };
            let r = vol.setxattr(ino, name, &value, 0, &cred);
            if expect(&format!("set ACL {name:?} {acl:?}"), r, want)?.is_some() {
                let n = m.nodes.get_mut(&ino).unwrap();
                let old = n.xattrs.get(name).cloned();
                if default {
                    n.xattrs.insert(name.to_vec(), value.clone());
                } else {
                    let (bits, equiv) = acl_mode(&acl);
                    let mode = (n.mode & !0o777) | bits;
                    if mode != n.mode {
                        n.ctime = now;
                    }
                    n.mode = mode;
                    if equiv {
                        if n.xattrs.remove(name).is_some() {
                            n.ctime = now;
                        }
                    } else {
                        n.xattrs.insert(name.to_vec(), value.clone());
                    }
                }
                if n.xattrs.get(name) != old.as_ref() {
                    n.ctime = now;
                }
            }
        }
        Op::Many { dir, count, prefix } => {
            let d = pick_dir(dir);
            for i in 0..count {
                let name =
                    format!("m{prefix}-{i:05}-{}", "z".repeat((i % 40) as usize)).into_bytes();
                if m.dirs[&d].contains_key(&name) {
                    continue;
                }
                match vol.create(d, &name, 0o600, &cred) {
                    Ok(a) => {
                        let n = m.new_node(d, Body::File(Vec::new()), 0o600, 0, now);
                        m.nodes.insert(a.ino, n);
                        m.dirs.get_mut(&d).unwrap().insert(name, a.ino);
                        m.touch_dir(d, now);
                    }
                    Err(Error::NoSpace) => break,
                    Err(e) => return Err(format!("many: create {name:?}: {e}")),
                }
            }
        }
        Op::Prune { dir, step } => {
            let d = pick_dir(dir);
            let step = step as usize % 4 + 2;
            let names: Vec<(Vec<u8>, InodeNo)> =
                m.dirs[&d].iter().map(|(n, &i)| (n.clone(), i)).collect();
            for (k, (name, ino)) in names.into_iter().enumerate() {
                if k % step != 0 || m.nodes[&ino].is_dir() {
                    continue;
                }
                vol.unlink(d, &name)
                    .map_err(|e| format!("prune {name:?}: {e}"))?;
                m.remove_name(d, &name);
                m.touch_dir(d, now);
                if let Some(n) = m.nodes.get_mut(&ino) {
                    n.ctime = now;
                }
            }
        }
        Op::Commit => vol.commit().map_err(|e| format!("commit: {e}"))?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_model_follows_acl5() {
        // u::rwx g::r-x m::r-x o::r-x inherited by mode 0666: the file
        // gets u::rw- m::r-- o::r--, group-class bits r--.
        let mut acl = vec![
            (USER_OBJ, 7, u32::MAX),
            (USER, 7, 9),
            (GROUP_OBJ, 5, u32::MAX),
            (MASK, 5, u32::MAX),
            (OTHER, 5, u32::MAX),
        ];
        let mut perm = 0o666;
        assert!(!create_masq(&mut acl, &mut perm));
        assert_eq!(perm, 0o644);
        assert_eq!(acl[0].1, 6);
        assert_eq!(acl[2].1, 5, "the owning group entry is masked, not changed");
        assert_eq!(acl[3].1, 4);
        let (bits, equiv) = acl_mode(&acl);
        assert_eq!((bits, equiv), (0o644, false));
        let min = vec![
            (USER_OBJ, 6, u32::MAX),
            (GROUP_OBJ, 4, u32::MAX),
            (OTHER, 0, u32::MAX),
        ];
        assert_eq!(acl_mode(&min), (0o640, true));
    }
}
