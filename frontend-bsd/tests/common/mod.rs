//! For `protocol.rs`: a generated source tree, an image made from it by
//! `mke2fs -d`, and a tree walker that records what `stat`, `readdir`,
//! `read`, `readlink` and the xattr calls say about every file (the form
//! its protocol-level walk is compared in).

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, DirEntryExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use ext4_tests::oracle::{debugfs_script, mke2fs};
use ext4_tests::tree::{set_times, set_xattr, Time};

/// Known bytes for file `seed`.
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

/// `set_times` with (seconds, nanoseconds) pairs.
fn times(p: &Path, atime: (i64, u32), mtime: (i64, u32)) {
    let t = |(sec, nsec)| Time { sec, nsec };
    set_times(p, t(atime), t(mtime)).unwrap();
}

fn mknod(p: &Path, mode: u32, major: u32, minor: u32) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid path.
    let r = unsafe { libc::mknod(c.as_ptr(), mode, libc::makedev(major, minor)) };
    assert_eq!(r, 0, "mknod {}", p.display());
}

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
}

/// The tree every image is made from.
fn make_tree(root: &Path) {
    let w = |rel: &str, data: &[u8]| {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
        p
    };
    w("empty", b"");
    w("one", b"x");
    for (i, len) in [4095usize, 4096, 4097, 100_000, (1 << 20) + 3]
        .iter()
        .enumerate()
    {
        w(&format!("sizes/f{len}"), &pattern(*len, i as u32));
    }
    // Sparse: data, a 5 MiB hole, data, a hole to the end.
    let sp = root.join("sparse");
    {
        let mut f = fs::File::create(&sp).unwrap();
        f.write_all(&pattern(5000, 7)).unwrap();
        use std::io::Seek;
        f.seek(std::io::SeekFrom::Start(5 << 20)).unwrap();
        f.write_all(&pattern(8192, 8)).unwrap();
        f.set_len(12 << 20).unwrap();
    }
    // Links.
    symlink("one", root.join("link-short")).unwrap();
    symlink(
        "/".to_string() + &"long/".repeat(40) + "target",
        root.join("link-long"),
    )
    .unwrap();
    symlink("x".repeat(1000), root.join("link-1000")).unwrap();
    symlink("sizes/f4096", root.join("link-file")).unwrap();
    let hl = w("hard/a", &pattern(3000, 9));
    fs::create_dir_all(root.join("hard/sub")).unwrap();
    fs::hard_link(&hl, root.join("hard/b")).unwrap();
    fs::hard_link(&hl, root.join("hard/sub/c")).unwrap();
    // Xattrs: small ones in the inode, a big one that needs a block.
    let xf = w("xattr/file", b"xattrs here");
    set_xattr(&xf, "user.small", b"v").unwrap();
    set_xattr(&xf, "user.empty", b"").unwrap();
    set_xattr(&xf, "user.big", &pattern(700, 3)).unwrap();
    set_xattr(&xf, "trusted.t", b"trusted value").unwrap();
    let xd = root.join("xattr/dir");
    fs::create_dir_all(&xd).unwrap();
    set_xattr(&xd, "user.on-a-dir", b"dir value").unwrap();
    let acl = w("xattr/acl", b"acl");
    let _ = Command::new("setfacl")
        .args(["-m", "u:1234:r,g:5678:rw"])
        .arg(&acl)
        .status();
    let _ = Command::new("setfacl")
        .args(["-d", "-m", "u:1234:rx"])
        .arg(&xd)
        .status();
    // Special files.
    fs::create_dir_all(root.join("special")).unwrap();
    mknod(&root.join("special/fifo"), libc::S_IFIFO | 0o640, 0, 0);
    mknod(&root.join("special/null"), libc::S_IFCHR | 0o666, 1, 3);
    mknod(&root.join("special/loop0"), libc::S_IFBLK | 0o660, 7, 0);
    mknod(
        &root.join("special/bigdev"),
        libc::S_IFCHR | 0o600,
        300,
        70000,
    );
    let _sock = std::os::unix::net::UnixListener::bind(root.join("special/socket")).unwrap();
    // Nested directories.
    let mut deep = root.join("deep");
    for i in 0..8 {
        deep = deep.join(format!("level{i}"));
        fs::create_dir_all(&deep).unwrap();
        fs::write(deep.join("file"), format!("depth {i}\n")).unwrap();
    }
    // A directory big enough for a hash tree.
    let big = root.join("many");
    fs::create_dir_all(&big).unwrap();
    for i in 0..3000 {
        fs::write(
            big.join(format!("entry-{i:05}-{}", "n".repeat(i % 40))),
            i.to_string(),
        )
        .unwrap();
    }
    // Modes, owners, times.
    let m = w("modes/setuid", b"#!/bin/sh\n");
    fs::set_permissions(&m, fs::Permissions::from_mode(0o4755)).unwrap();
    let m = w("modes/none", b"");
    fs::set_permissions(&m, fs::Permissions::from_mode(0o000)).unwrap();
    let m = w("modes/owned", b"owned");
    chown(&m, 1234, 5678);
    let t = w("times/ns", b"t");
    times(
        &t,
        (1_600_000_000, 123_456_789),
        (1_234_567_890, 987_654_321),
    );
    let t = w("times/after2038", b"t");
    times(&t, (4_102_444_800, 5), (2_500_000_000, 999_999_999));
    let t = w("times/before1970", b"t");
    times(&t, (-86_400, 0), (-1_000_000, 250_000_000));
    fs::set_permissions(root.join("special"), fs::Permissions::from_mode(0o1777)).unwrap();
}

/// The generated tree under `dir` (made on first use; it goes away with
/// `dir`, so nothing outlives the test).
pub fn source_tree(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    if !src.exists() {
        fs::create_dir(&src).unwrap();
        make_tree(&src);
    }
    src
}

/// Build an image of the source tree in `dir`.
pub fn make_image(dir: &Path) -> PathBuf {
    let img = dir.join("ext4.img");
    mke2fs(
        &img,
        &["-t", "ext4", "-b", "4096"],
        Some(&source_tree(dir)),
        "64M",
    );
    // mke2fs -d keeps whole seconds only: write nanoseconds and epoch bits
    // (bits 0-1 of the *_extra fields) so both readers decode them.
    let extra = |ns: u32, epoch: u32| format!("{:#x}", (ns << 2) | epoch);
    let cmds = [
        format!("sif /times/ns mtime_extra {}", extra(987_654_321, 0)),
        format!("sif /times/ns atime_extra {}", extra(123_456_789, 0)),
        format!("sif /times/ns ctime_extra {}", extra(1, 0)),
        format!(
            "sif /times/before1970 mtime_extra {}",
            extra(250_000_000, 0)
        ),
        format!("sif /times/after2038 mtime_extra {}", extra(999_999_999, 1)),
        format!("sif /times/after2038 atime_extra {}", extra(5, 1)),
    ];
    debugfs_script(&img, &cmds, true).unwrap();
    img
}

/// What one file looks like from user space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rec {
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub blocks: u64,
    pub blksize: u64,
    pub atime: (i64, i64),
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    pub rdev: u64,
    pub ino: u64,
    pub content: Option<Vec<u8>>,
    pub target: Option<Vec<u8>>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// (name, d_ino, d_type) for a directory, sorted, without . and ..
    pub entries: Option<Vec<(Vec<u8>, u64, u8)>>,
}

pub type Tree = BTreeMap<PathBuf, Rec>;

pub fn dtype(ft: fs::FileType) -> u8 {
    if ft.is_dir() {
        4
    } else if ft.is_symlink() {
        10
    } else if ft.is_file() {
        8
    } else if ft.is_fifo() {
        1
    } else if ft.is_char_device() {
        2
    } else if ft.is_block_device() {
        6
    } else if ft.is_socket() {
        12
    } else {
        0
    }
}

fn xattrs(p: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 65536];
    // SAFETY: buffer valid for its length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(
        n >= 0,
        "listxattr {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
    let mut out = Vec::new();
    for name in buf[..n as usize]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
    {
        let cn = CString::new(name).unwrap();
        let mut v = vec![0u8; 65536];
        // SAFETY: buffer valid for its length.
        let m = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        let v = if m < 0 {
            format!("error {}", std::io::Error::last_os_error()).into_bytes()
        } else {
            v[..m as usize].to_vec()
        };
        out.push((name.to_vec(), v));
    }
    out.sort();
    out
}

pub fn record(p: &Path) -> Rec {
    let md = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
    let ft = md.file_type();
    let content = ft.is_file().then(|| {
        let mut v = Vec::new();
        fs::File::open(p)
            .and_then(|mut f| f.read_to_end(&mut v))
            .unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
        v
    });
    let target = ft
        .is_symlink()
        .then(|| fs::read_link(p).unwrap().as_os_str().as_bytes().to_vec());
    let entries = ft.is_dir().then(|| {
        let mut v: Vec<_> = fs::read_dir(p)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().as_bytes().to_vec(),
                    e.ino(),
                    dtype(e.file_type().unwrap()),
                )
            })
            .collect();
        v.sort();
        v
    });
    Rec {
        mode: md.mode(),
        nlink: md.nlink(),
        uid: md.uid(),
        gid: md.gid(),
        size: md.size(),
        blocks: md.blocks(),
        blksize: md.blksize(),
        atime: (md.atime(), md.atime_nsec()),
        mtime: (md.mtime(), md.mtime_nsec()),
        ctime: (md.ctime(), md.ctime_nsec()),
        rdev: md.rdev(),
        ino: md.ino(),
        content,
        target,
        xattrs: xattrs(p),
        entries,
    }
}

/// Record every file under `root` (the root itself as "").
pub fn walk(root: &Path) -> Tree {
    let mut out = Tree::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let r = record(&root.join(&rel));
        if let Some(es) = &r.entries {
            for (name, _, _) in es {
                stack.push(rel.join(OsStr::from_bytes(name)));
            }
        }
        out.insert(rel, r);
    }
    out
}

/// Every difference between two trees, one line each.
pub fn diff(want: &Tree, got: &Tree) -> Vec<String> {
    let mut d = Vec::new();
    for (p, w) in want {
        match got.get(p) {
            None => d.push(format!("{}: missing", p.display())),
            Some(g) if g != w => {
                macro_rules! cmp {
                    ($($f:ident),*) => {$(
                        if w.$f != g.$f {
                            let (ws, gs) = (format!("{:?}", w.$f), format!("{:?}", g.$f));
                            let cut = |s: &str| s.chars().take(200).collect::<String>();
                            d.push(format!("{}: {} kernel {} ours {}", p.display(),
                                stringify!($f), cut(&ws), cut(&gs)));
                        }
                    )*};
                }
                cmp!(
                    mode, nlink, uid, gid, size, blocks, blksize, atime, mtime, ctime, rdev, ino,
                    content, target, xattrs, entries
                );
            }
            Some(_) => {}
        }
    }
    for p in got.keys() {
        if !want.contains_key(p) {
            d.push(format!("{}: extra", p.display()));
        }
    }
    d
}

pub fn assert_same(what: &str, want: &Tree, got: &Tree) {
    let d = diff(want, got);
    assert!(
        d.is_empty(),
        "{what}: {} differences (of {} files):\n{}",
        d.len(),
        want.len(),
        d.iter().take(60).cloned().collect::<Vec<_>>().join("\n")
    );
}
