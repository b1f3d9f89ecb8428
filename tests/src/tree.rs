//! The deterministic source-tree generator. A [`Plan`] is a pure function of
//! [`TreeParams`]: every file's bytes, every mode, owner, time and xattr is
//! known before anything touches the disk. [`materialize`] writes a plan to
//! the host filesystem, where `mke2fs -d` picks it up.
//!
//! Two things cannot go through `mke2fs -d` (e2fsprogs 1.47.0) and are
//! applied to the image afterwards by the image builder, so the plan keeps
//! them apart:
//! - xattr values larger than about a quarter block (libext2fs refuses them
//!   without `ea_inode`): [`Plan::big_xattrs`];
//! - the 50,000-entry directory's children (libext2fs inserts into a linear
//!   directory, quadratic: ~4 minutes): nodes with `late == true`, created
//!   through a kernel mount. They are materialized under a separate root.
//!
//! `mke2fs -d` also stores whole seconds only, in 32 bits; the builder sets
//! every planned atime/mtime exactly afterwards (`debugfs sif`).

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use crate::rng::{segment_bytes, Rng};

/// Bump when the generator's output changes: cached trees and images whose
/// key was made with another version are rebuilt.
pub const GENERATOR_VERSION: u32 = 3;

/// Largest seconds value ext4 can store with 256-byte inodes (year 2446).
pub const MAX_SEC: i64 = (1 << 31) - 1 + 3 * (1 << 32);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Profile {
    /// Fast: a few hundred inodes, ~20 MiB of data. Used by most tests.
    Small,
    /// Small plus a 20 MiB file and a 50,000-entry directory.
    Big,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TreeParams {
    pub profile: Profile,
    pub seed: u64,
    /// Longest symlink target; must stay below the block size.
    pub max_symlink: usize,
    /// Length of the large xattr values applied after mke2fs; must fit in
    /// one xattr block.
    pub big_xattr: usize,
    /// Whether sparse files may end in a hole (see `ImageSpec::tree_params`).
    pub trailing_holes: bool,
}

impl TreeParams {
    /// The parameters for an image with `block_size`-byte blocks.
    pub fn new(profile: Profile, block_size: u32) -> TreeParams {
        let small_blocks = block_size <= 1024;
        TreeParams {
            profile,
            seed: 0x0e47_2024,
            max_symlink: if small_blocks { 1000 } else { 4000 },
            big_xattr: if small_blocks { 600 } else { 3 * 1024 },
            trailing_holes: true,
        }
    }
}

/// Seconds since the epoch and nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time {
    pub sec: i64,
    pub nsec: u32,
}

impl std::fmt::Display for Time {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:09}", self.sec, self.nsec)
    }
}

/// A run of file bytes generated from `seed` (see [`segment_bytes`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub offset: u64,
    pub len: u64,
    pub seed: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeKind {
    Dir,
    /// `size` may exceed the last segment's end: the tail is a hole.
    File {
        size: u64,
        segments: Vec<Segment>,
    },
    Symlink {
        target: Vec<u8>,
    },
    /// Another name for the inode of the file at `target` (a plan path).
    HardLink {
        target: String,
    },
    CharDev {
        major: u32,
        minor: u32,
    },
    BlockDev {
        major: u32,
        minor: u32,
    },
    Fifo,
    Socket,
}

#[derive(Clone, Debug)]
pub struct Node {
    /// Relative, `/`-separated, no leading slash. Never contains `"`, a
    /// newline or a tab (debugfs' command and listing syntax).
    pub path: String,
    pub kind: NodeKind,
    /// Permission bits, including setuid/setgid/sticky.
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: Time,
    pub mtime: Time,
    /// Small xattrs, set on the source tree (mke2fs copies them).
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// Created after mke2fs through a kernel mount (see the module docs).
    pub late: bool,
}

/// A large xattr value applied to the image after mke2fs.
#[derive(Clone, Debug)]
pub struct BigXattr {
    pub path: String,
    pub name: String,
    pub value: Vec<u8>,
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub params: TreeParams,
    /// Parents come before their children; link targets before links.
    pub nodes: Vec<Node>,
    pub big_xattrs: Vec<BigXattr>,
}

impl Plan {
    pub fn node(&self, path: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.path == path)
    }

    /// The node that owns the inode `path` names (follows hard links).
    pub fn inode_node<'a>(&'a self, node: &'a Node) -> &'a Node {
        match &node.kind {
            NodeKind::HardLink { target } => self.node(target).expect("hard link target in plan"),
            _ => node,
        }
    }

    /// Number of inodes the plan needs (plus a margin for lost+found etc.).
    pub fn inode_count(&self) -> u64 {
        self.nodes
            .iter()
            .filter(|n| !matches!(n.kind, NodeKind::HardLink { .. }))
            .count() as u64
    }
}

/// The `system.posix_acl_*` xattr value (the kernel's xattr format:
/// version 2, then `{tag u16, perm u16, id u32}` entries in tag order).
pub fn posix_acl(user: Option<(u32, u16)>, group: Option<(u32, u16)>, perms: [u16; 4]) -> Vec<u8> {
    const UNDEF: u32 = u32::MAX;
    let mut v = 2u32.to_le_bytes().to_vec();
    let mut entry = |tag: u16, perm: u16, id: u32| {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    };
    let [uobj, gobj, mask, other] = perms;
    entry(0x01, uobj, UNDEF);
    if let Some((id, p)) = user {
        entry(0x02, p, id);
    }
    entry(0x04, gobj, UNDEF);
    if let Some((id, p)) = group {
        entry(0x08, p, id);
    }
    if user.is_some() || group.is_some() {
        entry(0x10, mask, UNDEF);
    }
    entry(0x20, other, UNDEF);
    v
}

struct Gen {
    rng: Rng,
    nodes: Vec<Node>,
    big: Vec<BigXattr>,
    params: TreeParams,
}

const UIDS: &[u32] = &[0, 0, 0, 1, 1000, 1000, 65534, 70000, 1 << 20, 4_000_000_000];
const FILE_PERMS: &[u32] = &[
    0o644, 0o644, 0o644, 0o600, 0o755, 0o755, 0o4755, 0o2755, 0o6711, 0o1644, 0o000, 0o777, 0o7777,
    0o440,
];
const DIR_PERMS: &[u32] = &[0o755, 0o755, 0o755, 0o700, 0o1777, 0o2775, 0o555, 0o3777];

impl Gen {
    fn time(&mut self) -> Time {
        let sec = match self.rng.below(8) {
            0 => self.rng.range(-(1 << 31), -1),
            1 => self.rng.range(1 << 31, MAX_SEC),
            2 => *self.rng.pick(&[
                0,
                -1,
                (1 << 31) - 1,
                1 << 31,
                (1 << 32) - 1,
                1 << 32,
                1 << 33,
                MAX_SEC,
                -(1 << 31),
            ]),
            _ => self.rng.range(0, (1 << 31) - 1),
        };
        let nsec = match self.rng.below(4) {
            // The kernel zeroes nanoseconds at the representable extremes
            // (timestamp_truncate), so a plan asking for them is unholdable.
            _ if sec == MAX_SEC || sec == -(1 << 31) => 0,
            0 => 0,
            1 => 999_999_999,
            _ => self.rng.below(1_000_000_000) as u32,
        };
        Time { sec, nsec }
    }

    fn push(&mut self, path: String, kind: NodeKind) -> &mut Node {
        assert!(
            !path.contains(['"', '\n', '\t']),
            "generator name rule: {path}"
        );
        let perm = match kind {
            NodeKind::Dir => *self.rng.pick(DIR_PERMS),
            NodeKind::Symlink { .. } | NodeKind::HardLink { .. } => 0o777,
            _ => *self.rng.pick(FILE_PERMS),
        };
        let (uid, gid) = (*self.rng.pick(UIDS), *self.rng.pick(UIDS));
        let (atime, mtime) = (self.time(), self.time());
        self.nodes.push(Node {
            path,
            kind,
            perm,
            uid,
            gid,
            atime,
            mtime,
            xattrs: Vec::new(),
            late: false,
        });
        self.nodes.last_mut().unwrap()
    }

    fn dir(&mut self, path: &str) -> &mut Node {
        self.push(path.to_string(), NodeKind::Dir)
    }

    fn file(&mut self, path: &str, size: u64) -> &mut Node {
        let seed = self.rng.next_u64();
        let segments = if size == 0 {
            vec![]
        } else {
            vec![Segment {
                offset: 0,
                len: size,
                seed,
            }]
        };
        self.push(path.to_string(), NodeKind::File { size, segments })
    }

    fn sparse(&mut self, path: &str, size: u64, spans: &[(u64, u64)]) -> &mut Node {
        let segments = spans
            .iter()
            .map(|&(offset, len)| Segment {
                offset,
                len,
                seed: self.rng.next_u64(),
            })
            .collect();
        self.push(path.to_string(), NodeKind::File { size, segments })
    }

    fn symlink(&mut self, path: &str, target: Vec<u8>) -> &mut Node {
        self.push(path.to_string(), NodeKind::Symlink { target })
    }

    fn hardlink(&mut self, path: &str, target: &str) {
        self.push(
            path.to_string(),
            NodeKind::HardLink {
                target: target.to_string(),
            },
        );
    }

    fn name(&mut self, max: u64) -> String {
        const CHARS: &[u8] =
            b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+=,~";
        let len = 1 + self.rng.below(max) as usize;
        (0..len).map(|_| *self.rng.pick(CHARS) as char).collect()
    }

    /// A symlink target of exactly `len` bytes.
    fn target(&mut self, len: usize) -> Vec<u8> {
        const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789._-/ ";
        let mut t: Vec<u8> = (0..len).map(|_| *self.rng.pick(CHARS)).collect();
        // No empty components at the ends: keep it a plausible path.
        if let Some(b) = t.first_mut() {
            *b = b'x';
        }
        t
    }

    fn value(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.rng.fill(&mut v);
        v
    }

    /// Log-uniform sizes up to `max`.
    fn random_size(&mut self, max: u64) -> u64 {
        let bits = 64 - max.leading_zeros() as u64;
        let e = self.rng.below(bits + 1);
        let hi = (1u64 << e).min(max);
        self.rng.range((hi / 2) as i64, hi as i64) as u64
    }
}

/// Build the plan for `params`. Pure and deterministic.
pub fn plan(params: &TreeParams) -> Plan {
    let mut g = Gen {
        rng: Rng::new(params.seed),
        nodes: Vec::new(),
        big: Vec::new(),
        params: params.clone(),
    };

    // Regular files of interesting and random sizes.
    g.dir("files");
    for size in [
        0u64,
        1,
        59,
        60,
        61,
        100,
        1000,
        1023,
        1024,
        1025,
        4095,
        4096,
        4097,
        8191,
        8192,
        12289,
        65535,
        65536,
        65537,
        131_089,
        1 << 20,
        (1 << 20) + 3,
    ] {
        g.file(&format!("files/size-{size}"), size);
    }
    g.dir("files/random");
    for i in 0..16 {
        let size = g.random_size(3 << 20);
        g.file(&format!("files/random/r{i:02}"), size);
    }
    g.dir("files/sub");
    g.dir("files/sub/a");
    g.dir("files/sub/a/b");
    for i in 0..5 {
        let size = g.random_size(64 << 10);
        g.file(&format!("files/sub/a/b/f{i}"), size);
    }

    // Sparse files: holes at the start, middle, end; entirely hole; many
    // small segments; data past 4 GiB (logical block numbers above 2^20).
    g.dir("sparse");
    g.sparse(
        "sparse/hole-start",
        (1 << 20) + 5,
        &[(700_000, (1 << 20) + 5 - 700_000)],
    );
    // Without trailing holes, files that would end in one end in a byte.
    let tail = |size: u64| {
        if params.trailing_holes {
            vec![]
        } else {
            vec![(size - 1, 1)]
        }
    };
    g.sparse(
        "sparse/hole-end",
        3 << 20,
        &[vec![(0, 10_000)], tail(3 << 20)].concat(),
    );
    g.sparse(
        "sparse/hole-middle",
        (2 << 20) + 7000,
        &[(0, 5000), (2 << 20, 7000)],
    );
    g.sparse("sparse/all-hole", 10 << 20, &tail(10 << 20));
    let mut spans = Vec::new();
    let mut off = 0u64;
    for _ in 0..40 {
        off += g.rng.below(200_000) + 1;
        let len = g.rng.below(30_000) + 1;
        spans.push((off, len));
        off += len;
    }
    spans.extend(tail(off + 12_345));
    g.sparse("sparse/many-segments", off + 12_345, &spans);
    let g4 = 4u64 << 30;
    g.sparse(
        "sparse/beyond-4g",
        (5 << 30) + 10_000,
        &[(0, 4096), (g4 - 2048, 4096), (5 << 30, 10_000)],
    );

    // Symlinks: fast (< 60 bytes, in the inode) and slow (in a block), the
    // boundary on both sides, dangling, absolute, to dirs and files.
    g.dir("links");
    let mut lens = vec![
        1usize, 2, 10, 30, 58, 59, 60, 61, 62, 100, 255, 500, 1000, 2000, 3000, 4000,
    ];
    lens.retain(|&l| l <= params.max_symlink);
    for len in lens {
        let t = g.target(len);
        g.symlink(&format!("links/len-{len}"), t);
    }
    g.symlink("links/to-file", b"../files/size-100".to_vec());
    g.symlink("links/to-dir", b"../files/sub".to_vec());
    g.symlink("links/absolute", b"/etc/hostname".to_vec());
    g.symlink("links/dangling", b"does/not/exist".to_vec());
    g.symlink("links/dot", b".".to_vec());

    // Hard links: several names across directories.
    g.dir("hard");
    g.dir("hard/sub");
    g.file("hard/orig", 5000);
    g.hardlink("hard/second", "hard/orig");
    g.hardlink("hard/sub/third", "hard/orig");
    g.hardlink("files/hard-fourth", "hard/orig");
    g.file("hard/pair", 0);
    g.hardlink("hard/sub/pair-2", "hard/pair");
    g.file("hard/big", 200_000);
    g.hardlink("hard/sub/big-2", "hard/big");

    // Xattrs: in-inode, spilling to a block, empty values, every namespace
    // that works without an LSM, ACLs; the large values come after mke2fs.
    g.dir("xattr");
    g.file("xattr/few", 10).xattrs = vec![
        ("user.a".into(), b"1".to_vec()),
        ("user.bb".into(), b"hello".to_vec()),
        ("user.empty".into(), vec![]),
    ];
    let many: Vec<(String, Vec<u8>)> = (0..12)
        .map(|i| (format!("user.many.{i:02}"), g.value(10 + i * 3)))
        .collect();
    g.file("xattr/many", 0).xattrs = many;
    let v = g.value(150);
    g.file("xattr/value150", 1).xattrs = vec![("user.v150".into(), v)];
    g.file("xattr/trusted", 100).xattrs = vec![("trusted.t1".into(), b"trusted value".to_vec())];
    g.file("xattr/security", 100).xattrs = vec![("security.ext4test".into(), b"label".to_vec())];
    g.dir("xattr/dir-x").xattrs = vec![("user.on-dir".into(), b"dir value".to_vec())];
    g.symlink("xattr/link-trusted", b"few".to_vec()).xattrs =
        vec![("trusted.on-link".into(), b"lnk".to_vec())];
    let acl = posix_acl(Some((1000, 5)), Some((44, 6)), [7, 5, 7, 4]);
    g.file("xattr/acl-file", 20).xattrs = vec![("system.posix_acl_access".into(), acl)];
    let acl_dir = posix_acl(Some((70000, 7)), None, [7, 5, 7, 5]);
    let acl_def = posix_acl(None, Some((1000, 7)), [7, 5, 7, 0]);
    g.dir("xattr/acl-dir").xattrs = vec![
        ("system.posix_acl_access".into(), acl_dir),
        ("system.posix_acl_default".into(), acl_def),
    ];
    g.file("xattr/big1", 4000);
    g.file("xattr/big2", 0);
    g.dir("xattr/bigdir");
    g.file("xattr/big-and-small", 70).xattrs = vec![("user.small".into(), b"s".to_vec())];
    let bl = params.big_xattr;
    for (path, name, len) in [
        ("xattr/big1", "user.big", bl),
        ("xattr/big2", "user.big", bl - 100),
        ("xattr/big2", "trusted.big", 64),
        ("xattr/bigdir", "user.big-dir", bl - 7),
        ("xattr/big-and-small", "user.big", bl - 200),
    ] {
        let value = g.value(len);
        g.big.push(BigXattr {
            path: path.into(),
            name: name.into(),
            value,
        });
    }

    // Special files.
    g.dir("special");
    for (name, kind) in [
        ("null", NodeKind::CharDev { major: 1, minor: 3 }),
        (
            "tty64",
            NodeKind::CharDev {
                major: 4,
                minor: 64,
            },
        ),
        (
            "char-big",
            NodeKind::CharDev {
                major: 300,
                minor: 70_000,
            },
        ),
        ("sda1", NodeKind::BlockDev { major: 8, minor: 1 }),
        (
            "nvme",
            NodeKind::BlockDev {
                major: 259,
                minor: 100_000,
            },
        ),
        ("fifo", NodeKind::Fifo),
        ("socket", NodeKind::Socket),
    ] {
        g.push(format!("special/{name}"), kind);
    }

    // Deep paths.
    let mut p = String::from("deep");
    g.dir(&p);
    for i in 0..30 {
        p = format!("{p}/d{i:02}");
        g.dir(&p);
    }
    g.file(&format!("{p}/leaf"), 1234);
    g.symlink(&format!("{p}/up"), b"../../../../..".to_vec());

    // A directory of many entries: several blocks, rehashed into an htree
    // by the builder where the image has dir_index.
    g.dir("many");
    let mut seen = std::collections::HashSet::new();
    let mut i = 0;
    while i < 600 {
        let max = if g.rng.chance(1, 10) { 255 } else { 40 };
        let name = g.name(max);
        if name == "." || name == ".." || !seen.insert(name.clone()) {
            continue;
        }
        let path = format!("many/{name}");
        match g.rng.below(20) {
            0 => {
                g.dir(&path);
            }
            1 => {
                g.symlink(&path, b"../files".to_vec());
            }
            _ => {
                let size = g.rng.below(3000);
                g.file(&path, size);
            }
        }
        i += 1;
    }

    // Modes and owners on purpose, beyond the random ones.
    g.dir("modes");
    for perm in [
        0o4755u32, 0o2755, 0o6755, 0o1755, 0o7777, 0o000, 0o444, 0o4000,
    ] {
        g.file(&format!("modes/f{perm:04o}"), 3).perm = perm;
    }
    for perm in [0o1777u32, 0o2775, 0o3770, 0o000] {
        g.dir(&format!("modes/d{perm:04o}")).perm = perm;
    }
    for (i, &uid) in [0u32, 1, 65535, 65536, 2_147_483_648, 4_294_967_294]
        .iter()
        .enumerate()
    {
        let n = g.file(&format!("modes/owner{i}"), 1);
        n.uid = uid;
        n.gid = uid.wrapping_add(i as u32);
    }

    // Names.
    g.dir("names");
    let long = "n".repeat(255);
    for name in [
        "with space",
        "ünïcödé-名前",
        "-dash",
        "...",
        "a'quote",
        "back\\slash",
        "x",
        &long,
    ] {
        g.file(&format!("names/{name}"), 7);
    }
    g.dir("empty-dir");

    if params.profile == Profile::Big {
        g.dir("big");
        g.file("big/twenty", 20 << 20);
        for i in 0..5 {
            let size = g.random_size(8 << 20);
            g.file(&format!("big/r{i}"), size);
        }
        g.dir("big/dir50k");
        for i in 0..50_000 {
            let suffix = g.name(40);
            let path = format!("big/dir50k/e{i:05}-{suffix}");
            let node = match i % 500 {
                7 => g.symlink(&path, b"../twenty".to_vec()),
                1..=4 => {
                    let size = g.rng.below(3000);
                    g.file(&path, size)
                }
                _ => g.file(&path, 0),
            };
            node.late = true;
            if i % 1000 == 3 {
                node.xattrs = vec![("user.k".into(), b"v".to_vec())];
            }
        }
    }

    Plan {
        params: g.params,
        nodes: g.nodes,
        big_xattrs: g.big,
    }
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

fn check(r: libc::c_int, what: &str, p: &Path) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        let e = io::Error::last_os_error();
        Err(io::Error::new(
            e.kind(),
            format!("{what} {}: {e}", p.display()),
        ))
    }
}

/// Write a file's segments and size.
fn write_file(path: &Path, size: u64, segments: &[Segment]) -> io::Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    for s in segments {
        let mut done = 0u64;
        while done < s.len {
            let n = (s.len - done).min(buf.len() as u64) as usize;
            segment_bytes(s.seed, done, &mut buf[..n]);
            f.write_all_at(&buf[..n], s.offset + done)?;
            done += n as u64;
        }
    }
    f.set_len(size)?;
    Ok(())
}

pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let c = cpath(path);
    let n = CString::new(name).unwrap();
    // SAFETY: valid NUL-terminated strings and a valid buffer.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    check(r, &format!("lsetxattr {name}"), path)
}

pub fn set_times(path: &Path, atime: Time, mtime: Time) -> io::Result<()> {
    let c = cpath(path);
    let ts = [
        libc::timespec {
            tv_sec: atime.sec as libc::time_t,
            tv_nsec: atime.nsec as _,
        },
        libc::timespec {
            tv_sec: mtime.sec as libc::time_t,
            tv_nsec: mtime.nsec as _,
        },
    ];
    // SAFETY: valid path and a two-element timespec array.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    check(r, "utimensat", path)
}

fn create(node: &Node, root: &Path) -> io::Result<()> {
    let path = root.join(&node.path);
    let c = cpath(&path);
    let mknod = |fmt: libc::mode_t, dev: libc::dev_t| {
        // SAFETY: valid path.
        let r = unsafe { libc::mknod(c.as_ptr(), fmt | 0o600, dev) };
        check(r, "mknod", &path)
    };
    match &node.kind {
        NodeKind::Dir => fs::create_dir(&path),
        NodeKind::File { size, segments } => write_file(&path, *size, segments),
        NodeKind::Symlink { target } => {
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &path)
        }
        NodeKind::HardLink { target } => fs::hard_link(root.join(target), &path),
        NodeKind::CharDev { major, minor } => mknod(libc::S_IFCHR, libc::makedev(*major, *minor)),
        NodeKind::BlockDev { major, minor } => mknod(libc::S_IFBLK, libc::makedev(*major, *minor)),
        NodeKind::Fifo => mknod(libc::S_IFIFO, 0),
        // A socket bound for real where the path fits in sun_path; mknod
        // makes the same kind of inode otherwise.
        NodeKind::Socket => match std::os::unix::net::UnixListener::bind(&path) {
            Ok(_) => Ok(()),
            Err(_) => mknod(libc::S_IFSOCK, 0),
        },
    }
}

/// Ownership, permissions and xattrs (not times) of one node.
fn set_attrs(node: &Node, root: &Path, notes: &mut Vec<String>) -> io::Result<()> {
    if matches!(node.kind, NodeKind::HardLink { .. }) {
        return Ok(());
    }
    let path = root.join(&node.path);
    for (name, value) in &node.xattrs {
        match set_xattr(&path, name, value) {
            Ok(()) => {}
            // security.* needs no LSM to refuse it; if one does, the tree
            // just lacks that attribute (both sides of every comparison).
            Err(e) if name.starts_with("security.") => {
                notes.push(format!(
                    "NOTE: could not set {name} on {}: {e}; tree built without it",
                    node.path
                ));
            }
            Err(e) => return Err(e),
        }
    }
    let c = cpath(&path);
    // SAFETY: valid path. chown first: it clears setuid/setgid.
    check(
        unsafe { libc::lchown(c.as_ptr(), node.uid, node.gid) },
        "lchown",
        &path,
    )?;
    if !matches!(node.kind, NodeKind::Symlink { .. }) {
        // SAFETY: valid path.
        check(
            unsafe { libc::chmod(c.as_ptr(), node.perm as libc::mode_t) },
            "chmod",
            &path,
        )?;
    }
    Ok(())
}

/// Create `nodes` under `root` with all their attributes and times, in
/// three passes so that creating children, changing owners (which clears
/// setuid) and setting xattrs cannot disturb what an earlier pass set.
/// Returns notes about things the host refused (loud, not fatal).
pub fn apply_nodes<'a>(
    nodes: impl Iterator<Item = &'a Node> + Clone,
    root: &Path,
) -> io::Result<Vec<String>> {
    let mut notes = Vec::new();
    for n in nodes.clone() {
        if let Some(parent) = root.join(&n.path).parent() {
            fs::create_dir_all(parent)?;
        }
        create(n, root)?;
    }
    for n in nodes.clone() {
        set_attrs(n, root, &mut notes)?;
    }
    for n in nodes {
        if !matches!(n.kind, NodeKind::HardLink { .. }) {
            set_times(&root.join(&n.path), n.atime, n.mtime)?;
        }
    }
    Ok(notes)
}

/// Write the plan: early nodes under `src`, late ones under `late`.
pub fn materialize(plan: &Plan, src: &Path, late: &Path) -> io::Result<Vec<String>> {
    fs::create_dir_all(src)?;
    fs::create_dir_all(late)?;
    let mut notes = apply_nodes(plan.nodes.iter().filter(|n| !n.late), src)?;
    notes.extend(apply_nodes(plan.nodes.iter().filter(|n| n.late), late)?);
    verify_host_times(plan, src, late)?;
    Ok(notes)
}

/// The host must have stored every planned time exactly, or the tree is not
/// what the plan says (a host filesystem that clamps times, say).
fn verify_host_times(plan: &Plan, src: &Path, late: &Path) -> io::Result<()> {
    for n in &plan.nodes {
        let owner = plan.inode_node(n);
        let root = if n.late { late } else { src };
        let p = root.join(&n.path);
        let c = cpath(&p);
        // SAFETY: zeroed stat is a valid out-buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid path and out-buffer.
        check(unsafe { libc::lstat(c.as_ptr(), &mut st) }, "lstat", &p)?;
        let got = Time {
            sec: st.st_mtime,
            nsec: st.st_mtime_nsec as u32,
        };
        if got != owner.mtime {
            return Err(io::Error::other(format!(
                "host stored mtime {got} for {} but the plan says {} (host filesystem cannot hold these times)",
                n.path, owner.mtime
            )));
        }
    }
    Ok(())
}

/// Open for reading without touching atime where allowed.
pub fn open_noatime(path: &Path) -> io::Result<File> {
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME | libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => Ok(f),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path),
        Err(e) => Err(e),
    }
}
