//! End-to-end tests of the `ext4-image` binary against outside oracles:
//! images are built by `mke2fs -d` from a tree generated here, and every
//! answer is compared with `debugfs`, `dumpe2fs`, `e2fsck -fn`, `getfattr`
//! and the source tree itself.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::cmd;
use ext4_tests::oracle::{self, e2fsck_check, mke2fs};
use ext4_tests::util::corpus_dir;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ext4-image");

fn tool(img: &Path, args: &[&str]) -> Output {
    cmd(BIN)
        .arg(img)
        .args(args)
        .output()
        .expect("run ext4-image")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: Output, what: &str) -> Output {
    assert!(
        o.status.success(),
        "{what} failed: {:?}\nstdout: {}\nstderr: {}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    o
}

fn run_ok(prog: &str, args: &[&str]) -> Output {
    let o = cmd(prog).args(args).output().expect(prog);
    ok(o, &format!("{prog} {args:?}"))
}

/// `mke2fs -t ext4 EXTRA... -d SRC IMG SIZE`.
fn mkfs_ext4(src: &Path, img: &Path, extra: &[&str], size: &str) {
    mke2fs(img, &[&["-t", "ext4"], extra].concat(), Some(src), size);
}

fn debugfs(img: &Path, req: &str) -> String {
    oracle::debugfs(img, req).unwrap()
}

fn debugfs_w(img: &Path, req: &str) {
    oracle::debugfs_w(img, req).unwrap();
}

fn e2fsck(img: &Path) -> (i32, String) {
    e2fsck_check(img)
}

fn scratch() -> &'static Path {
    common::scratch("cli")
}

fn fresh_dir(name: &str) -> PathBuf {
    let d = scratch().join(name);
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn lsetxattr(p: &Path, name: &str, value: &[u8]) {
    let n = CString::new(name).unwrap();
    // SAFETY: valid NUL-terminated strings and a live buffer.
    let r = unsafe {
        libc::lsetxattr(
            c(p).as_ptr(),
            n.as_ptr(),
            value.as_ptr() as *const _,
            value.len(),
            0,
        )
    };
    assert_eq!(r, 0, "setxattr {name} on {}", p.display());
}

fn xattrs(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let cp = c(p);
    let mut names = vec![0u8; 65536];
    // SAFETY: buffers are live and sized as passed.
    let n = unsafe { libc::llistxattr(cp.as_ptr(), names.as_mut_ptr() as *mut _, names.len()) };
    assert!(n >= 0, "listxattr {}", p.display());
    let mut out = BTreeMap::new();
    for name in names[..n as usize]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
    {
        let cn = CString::new(name).unwrap();
        let mut v = vec![0u8; 65536];
        let m =
            unsafe { libc::lgetxattr(cp.as_ptr(), cn.as_ptr(), v.as_mut_ptr() as *mut _, v.len()) };
        assert!(m >= 0);
        v.truncate(m as usize);
        out.insert(String::from_utf8_lossy(name).into_owned(), v);
    }
    out
}

fn mknod(p: &Path, mode: u32, major: u32, minor: u32) {
    // SAFETY: valid path string.
    let r = unsafe { libc::mknod(c(p).as_ptr(), mode, libc::makedev(major, minor)) };
    assert_eq!(r, 0, "mknod {}", p.display());
}

fn lchown(p: &Path, uid: u32, gid: u32) {
    // SAFETY: valid path string.
    assert_eq!(unsafe { libc::lchown(c(p).as_ptr(), uid, gid) }, 0);
}

fn set_mtime(p: &Path, sec: i64) {
    let t = [
        libc::timespec {
            tv_sec: sec,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: sec,
            tv_nsec: 0,
        },
    ];
    // SAFETY: valid path and a two-element array.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c(p).as_ptr(),
            t.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(r, 0);
}

/// Deterministic bytes.
fn pattern(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

const SPARSE_SIZE: u64 = (8 << 20) + 123;
const NS: u32 = 123_456_789;

/// The source tree every image is built from.
fn build_tree(root: &Path) {
    let w = |p: &str, b: &[u8]| fs::write(root.join(p), b).unwrap();
    let mkdir = |p: &str| fs::create_dir_all(root.join(p)).unwrap();
    let chmod =
        |p: &str, m: u32| fs::set_permissions(root.join(p), fs::Permissions::from_mode(m)).unwrap();
    w("hello.txt", b"hello world\n");
    w("bytes.bin", &pattern(300 << 10, 1));
    w("empty", b"");
    {
        let f = fs::File::create(root.join("sparse.bin")).unwrap();
        f.set_len(SPARSE_SIZE).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(&[0xAB; 65536], 4 << 20).unwrap();
        f.write_all_at(b"tail", SPARSE_SIZE - 4).unwrap();
    }
    w("suid", b"#!/bin/true\n");
    chmod("suid", 0o4755);
    w("owned", b"owned by someone else\n");
    chmod("owned", 0o640);
    lchown(&root.join("owned"), 1234, 5678);
    mkdir("sticky");
    chmod("sticky", 0o1777);
    mkdir("sgid");
    w("sgid/inside", b"in a setgid dir\n");
    chmod("sgid", 0o2750);
    mkdir("emptydir");
    let sl =
        |target: &str, name: &str| std::os::unix::fs::symlink(target, root.join(name)).unwrap();
    sl("hello.txt", "s_short");
    sl(&format!("{}/target", "x".repeat(150)), "s_long");
    sl("/etc/passwd", "s_abs");
    sl("nowhere/at/all", "s_dangling");
    mkdir("nested/a/b/c/d/e");
    w("nested/a/b/c/d/e/deep.txt", b"deep\n");
    w("hl1", b"hard linked\n");
    fs::hard_link(root.join("hl1"), root.join("nested/hl2")).unwrap();
    fs::hard_link(root.join("hl1"), root.join("nested/a/hl3")).unwrap();
    lsetxattr(&root.join("hello.txt"), "user.a", b"1");
    lsetxattr(&root.join("hello.txt"), "trusted.t", b"tv");
    lsetxattr(&root.join("bytes.bin"), "user.bin", &[0, 1, 2, 255]);
    lsetxattr(&root.join("nested"), "user.dir", b"d");
    lsetxattr(&root.join("s_short"), "trusted.lnk", b"l");
    w("xbig", b"has a big xattr\n");
    lsetxattr(&root.join("xbig"), "user.big", &pattern(900, 7));
    let fifo = c(&root.join("fifo"));
    // SAFETY: valid path string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o620) }, 0);
    chmod("fifo", 0o620);
    mknod(&root.join("cdev"), libc::S_IFCHR | 0o600, 1, 3);
    mknod(&root.join("bdev"), libc::S_IFBLK | 0o660, 7, 5);
    chmod("cdev", 0o600);
    chmod("bdev", 0o660);
    mkdir("big");
    for i in 0..2000 {
        w(
            &format!("big/file-with-a-longish-name-{i:05}"),
            format!("{i}\n").as_bytes(),
        );
    }
    let _ = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
    set_mtime(&root.join("hello.txt"), 1_500_000_000);
    set_mtime(&root.join("s_short"), 1_400_000_000);
}

struct Image {
    name: &'static str,
    path: PathBuf,
    /// Has nanosecond timestamps (256-byte inodes).
    extra_times: bool,
}

struct Fixture {
    src: PathBuf,
    images: Vec<Image>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let src = fresh_dir("src");
        build_tree(&src);
        let specs: [(&str, &[&str], bool); 3] = [
            (
                "ext4",
                &["-t", "ext4", "-O", "metadata_csum,64bit", "-b", "4096"],
                true,
            ),
            ("ext2-1k", &["-t", "ext2", "-b", "1024"], true),
            (
                "ext4-inline",
                &["-t", "ext4", "-O", "inline_data", "-b", "1024"],
                true,
            ),
        ];
        let mut images = Vec::new();
        for (name, opts, extra_times) in specs {
            let path = scratch().join(format!("{name}.img"));
            mke2fs(&path, &[opts, &["-L", name]].concat(), Some(&src), "64M");
            // mke2fs -d drops nanoseconds: put some in with debugfs.
            debugfs_w(&path, &format!("sif /hello.txt mtime_extra {:#x}", NS << 2));
            images.push(Image {
                name,
                path,
                extra_times,
            });
        }
        Fixture { src, images }
    })
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("bad JSON ({e}): {}", stdout(o)))
}

/// Value of `key:` in debugfs/dumpe2fs output (the next token).
fn field(text: &str, key: &str) -> Option<String> {
    let pat = format!("{key}:");
    let mut from = 0;
    while let Some(i) = text[from..].find(&pat) {
        let at = from + i;
        let before_ok = at == 0 || text.as_bytes()[at - 1].is_ascii_whitespace();
        if before_ok {
            return text[at + pat.len()..]
                .split_whitespace()
                .next()
                .map(|s| s.to_string());
        }
        from = at + pat.len();
    }
    None
}

/// (sec, nsec) from debugfs's `0xSEC:EXTRA` form.
fn dtime(text: &str, key: &str) -> Option<(i64, u64)> {
    let v = field(text, key)?;
    let (s, e) = v
        .trim_start_matches("0x")
        .split_once(':')
        .unwrap_or((&v, "0"));
    let s = u32::from_str_radix(s.trim_start_matches("0x"), 16).ok()? as i32 as i64;
    let e = u32::from_str_radix(e, 16).ok()?;
    Some((s + (((e & 3) as i64) << 32), (e >> 2) as u64))
}

fn ts(v: &Value) -> (i64, u64) {
    (v["sec"].as_i64().unwrap(), v["nsec"].as_u64().unwrap())
}

#[test]
fn info_matches_dumpe2fs() {
    for img in &fixture().images {
        let ours = stdout(&ok(tool(&img.path, &["info"]), "info"));
        let theirs = stdout(&run_ok("dumpe2fs", &["-h", img.path.to_str().unwrap()]));
        let map = |t: &str| -> BTreeMap<String, String> {
            t.lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect()
        };
        let (o, t) = (map(&ours), map(&theirs));
        for key in [
            "Filesystem volume name",
            "Filesystem UUID",
            "Filesystem magic number",
            "Filesystem revision #",
            "Filesystem features",
            "Filesystem flags",
            "Default mount options",
            "Filesystem state",
            "Errors behavior",
            "Filesystem OS type",
            "Inode count",
            "Block count",
            "Reserved block count",
            "Free blocks",
            "Free inodes",
            "First block",
            "Block size",
            "Fragment size",
            "Reserved GDT blocks",
            "Blocks per group",
            "Fragments per group",
            "Inodes per group",
            "Inode blocks per group",
            "Filesystem created",
            "Last mount time",
            "Last write time",
            "Mount count",
            "Maximum mount count",
            "Last checked",
            "Check interval",
            "First inode",
            "Inode size",
            "Journal inode",
            "Default directory hash",
            "Directory Hash Seed",
            "Checksum type",
            "Checksum",
        ] {
            assert_eq!(
                o.get(key),
                t.get(key),
                "{}: field '{key}' differs\nours:\n{ours}\ndumpe2fs:\n{theirs}",
                img.name
            );
        }
        let j = json(&ok(tool(&img.path, &["info", "--json"]), "info --json"));
        assert_eq!(j["block_count"].to_string(), t["Block count"]);
        assert_eq!(j["uuid"].as_str().unwrap(), t["Filesystem UUID"]);
        assert_eq!(j["volume_name"].as_str().unwrap(), img.name);
        assert!(j["warnings"].is_array());
        assert!(j["created"]["sec"].is_i64());
    }
}

/// debugfs `ls -l` lines: name -> (ino, mode, uid, gid, size).
fn debugfs_ls(img: &Path, dir: &str) -> BTreeMap<String, (u64, u64, u64, u64, String)> {
    oracle::debugfs_ls(img, dir)
        .unwrap()
        .into_iter()
        .map(|e| {
            let v = (
                e.ino,
                e.mode as u64,
                e.uid as u64,
                e.gid as u64,
                e.size.to_string(),
            );
            (String::from_utf8_lossy(&e.name).into_owned(), v)
        })
        .collect()
}

#[test]
fn ls_matches_debugfs() {
    for img in &fixture().images {
        for dir in ["/", "/big", "/nested", "/nested/a"] {
            let theirs = debugfs_ls(&img.path, dir);
            assert!(
                theirs.len() > 2,
                "{}: debugfs listed nothing in {dir}",
                img.name
            );
            let o = ok(tool(&img.path, &["ls", "-a", "--json", dir]), "ls --json");
            let mut ours = BTreeMap::new();
            for e in json(&o).as_array().unwrap() {
                ours.insert(
                    e["name"].as_str().unwrap().to_string(),
                    (
                        e["ino"].as_u64().unwrap(),
                        e["mode"].as_u64().unwrap(),
                        e["uid"].as_u64().unwrap(),
                        e["gid"].as_u64().unwrap(),
                        e["size"].to_string(),
                    ),
                );
            }
            assert_eq!(ours, theirs, "{} ls {dir}", img.name);
        }
        // Text mode: one line per entry, link targets shown.
        let o = stdout(&ok(tool(&img.path, &["ls", "-l", "/"]), "ls -l"));
        for (mode, end) in [
            ("lrwxrwxrwx", "s_short -> hello.txt"),
            ("-rwsr-xr-x", " suid"),
            ("drwxrwxrwt", " sticky"),
        ] {
            assert!(
                o.lines().any(|l| l.starts_with(mode) && l.ends_with(end)),
                "no {mode} line ending {end:?}:\n{o}"
            );
        }
        assert!(
            o.lines()
                .any(|l| l.starts_with("crw-------") && l.contains("   1,    3 ")),
            "{o}"
        );
        assert!(!o.lines().any(|l| l.ends_with(" .") || l.ends_with(" ..")));
        let r = stdout(&ok(tool(&img.path, &["ls", "-R", "/nested"]), "ls -R"));
        assert!(r.contains("/nested/a/b/c/d/e:\ndeep.txt\n"), "{r}");
        let f = stdout(&ok(tool(&img.path, &["ls", "-l", "/hello.txt"]), "ls file"));
        assert_eq!(f.lines().count(), 1);
    }
}

#[test]
fn stat_matches_debugfs() {
    let paths = [
        "/hello.txt",
        "/bytes.bin",
        "/sparse.bin",
        "/s_short",
        "/s_long",
        "/cdev",
        "/bdev",
        "/fifo",
        "/nested",
        "/big",
        "/owned",
        "/suid",
        "/xbig",
        "/hl1",
        "/empty",
    ];
    for img in &fixture().images {
        for p in paths {
            let d = debugfs(&img.path, &format!("stat {p}"));
            let j = json(&ok(tool(&img.path, &["stat", "--json", p]), "stat --json"));
            let ctx = format!("{} {p}\n{d}\n{j:#}", img.name);
            let num = |k: &str| field(&d, k).unwrap_or_else(|| panic!("no {k}: {ctx}"));
            assert_eq!(j["ino"].to_string(), num("Inode"), "{ctx}");
            assert_eq!(
                j["permissions"].as_u64().unwrap(),
                u64::from_str_radix(&num("Mode"), 8).unwrap(),
                "{ctx}"
            );
            assert_eq!(
                j["flags"].as_u64().unwrap(),
                u64::from_str_radix(num("Flags").trim_start_matches("0x"), 16).unwrap(),
                "{ctx}"
            );
            for (ours, theirs) in [
                ("generation", "Generation"),
                ("uid", "User"),
                ("gid", "Group"),
                ("size", "Size"),
                ("nlink", "Links"),
                ("blocks", "Blockcount"),
                ("projid", "Project"),
            ] {
                assert_eq!(j[ours].to_string(), num(theirs), "{ours}: {ctx}");
            }
            for t in ["ctime", "atime", "mtime"] {
                let (s, ns) = dtime(&d, t).unwrap();
                let (js, jns) = ts(&j[t]);
                assert_eq!(js, s, "{t} {ctx}");
                if img.extra_times {
                    assert_eq!(jns, ns, "{t} {ctx}");
                }
            }
            if let Some(cr) = dtime(&d, "crtime") {
                assert_eq!(ts(&j["crtime"]), cr, "{ctx}");
            }
            // Extended attribute names.
            let mut theirs = BTreeSet::new();
            if let Some(i) = d.find("Extended attributes:\n") {
                for l in d[i..].lines().skip(1) {
                    if !l.starts_with("  ") {
                        break;
                    }
                    let name = l.trim().split([' ', '(']).next().unwrap().to_string();
                    // Inline data lives in system.data, which is not an
                    // attribute anyone lists.
                    if name != "system.data" {
                        theirs.insert(name);
                    }
                }
            }
            let ours: BTreeSet<String> = j["xattrs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            assert_eq!(ours, theirs, "xattrs {ctx}");
            // The first extents, merged where contiguous as ours are.
            if let Some(i) = d.find("EXTENTS:\n") {
                let mut runs: Vec<(u64, u64, u64)> = Vec::new();
                for item in d[i + 9..].lines().next().unwrap_or("").split(", ") {
                    let Some((l, r)) = item.split_once("):") else {
                        continue;
                    };
                    let l = l.trim_start_matches('(');
                    let r = r.split_whitespace().next().unwrap_or("");
                    let rng = |s: &str| -> Option<(u64, u64)> {
                        match s.split_once('-') {
                            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                            None => s.parse().ok().map(|a| (a, a)),
                        }
                    };
                    let (Some((l0, l1)), Some((p0, _))) = (rng(l), rng(r)) else {
                        continue;
                    };
                    match runs.last_mut() {
                        Some(last) if last.0 + last.1 == l0 && last.2 + last.1 == p0 => {
                            last.1 += l1 - l0 + 1
                        }
                        _ => runs.push((l0, l1 - l0 + 1, p0)),
                    }
                }
                let ours: Vec<(u64, u64, u64)> = j["mapping"]["first"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| {
                        (
                            r["lblk"].as_u64().unwrap(),
                            r["len"].as_u64().unwrap(),
                            r["pblk"].as_u64().unwrap(),
                        )
                    })
                    .collect();
                runs.truncate(ours.len().max(1));
                assert_eq!(ours, runs, "extents {ctx}");
                assert_eq!(j["mapping"]["kind"], "extents");
            }
        }
        // Text form names flags and shows nanoseconds.
        let t = stdout(&ok(tool(&img.path, &["stat", "/hello.txt"]), "stat"));
        assert!(t.contains(&format!(".{NS:09} -- ")), "{t}");
        assert!(t.contains("Extended attributes: "), "{t}");
        let s = json(&ok(
            tool(&img.path, &["stat", "--json", "/sparse.bin"]),
            "stat",
        ));
        assert!(s["mapping"]["holes"].as_u64().unwrap() >= 2, "{s:#}");
        let l = json(&ok(tool(&img.path, &["stat", "--json", "/s_long"]), "stat"));
        assert_eq!(
            l["target"].as_str().unwrap(),
            format!("{}/target", "x".repeat(150))
        );
        let dv = json(&ok(tool(&img.path, &["stat", "--json", "/bdev"]), "stat"));
        assert_eq!(dv["rdev"]["major"], 7);
        assert_eq!(dv["rdev"]["minor"], 5);
    }
}

fn regular_files(root: &Path, rel: &str, out: &mut Vec<String>) {
    for e in fs::read_dir(root.join(rel.trim_start_matches('/'))).unwrap() {
        let e = e.unwrap();
        let p = format!("{rel}/{}", e.file_name().to_str().unwrap());
        let t = e.file_type().unwrap();
        if t.is_dir() {
            regular_files(root, &p, out);
        } else if t.is_file() {
            out.push(p);
        }
    }
}

#[test]
fn cat_matches_debugfs_dump_and_source() {
    let fx = fixture();
    let mut files = Vec::new();
    regular_files(&fx.src, "", &mut files);
    files.retain(|p| !p.starts_with("/big/") || p.ends_with("01999") || p.ends_with("00000"));
    for img in &fx.images {
        let out = fresh_dir(&format!("dump-{}", img.name));
        for p in &files {
            let o = ok(tool(&img.path, &["cat", p]), "cat");
            let want = fs::read(fx.src.join(&p[1..])).unwrap();
            assert!(
                o.stdout == want,
                "{} cat {p}: differs from the source",
                img.name
            );
            let d = out.join("f");
            let _ = fs::remove_file(&d);
            debugfs(&img.path, &format!("dump {p} {}", d.display()));
            let mut dumped = fs::read(&d).unwrap();
            // debugfs dumps an inline-data file's whole inline area: past
            // i_size it must be zeros.
            if dumped.len() > o.stdout.len() && img.name.contains("inline") {
                assert!(dumped[o.stdout.len()..].iter().all(|&b| b == 0));
                dumped.truncate(o.stdout.len());
            }
            assert!(
                dumped == o.stdout,
                "{} cat {p}: differs from debugfs dump",
                img.name
            );
        }
        let e = tool(&img.path, &["cat", "/nested"]);
        assert_eq!(e.status.code(), Some(1));
        assert!(stderr(&e).contains("is a directory"), "{}", stderr(&e));
        let e = tool(&img.path, &["cat", "/s_short"]);
        assert_eq!(e.status.code(), Some(1));
        assert!(stderr(&e).contains("symbolic link"), "{}", stderr(&e));
    }
}

#[test]
fn getfattr_matches_getfattr_on_source() {
    let fx = fixture();
    for img in &fx.images {
        for p in ["/hello.txt", "/bytes.bin", "/xbig", "/nested"] {
            let src = fx.src.join(&p[1..]);
            let theirs = stdout(&run_ok(
                "getfattr",
                &["-d", "-m", "-", "-e", "hex", src.to_str().unwrap()],
            ));
            let ours = stdout(&ok(tool(&img.path, &["getfattr", p]), "getfattr"));
            let body = |t: &str| -> BTreeSet<String> {
                t.lines()
                    .filter(|l| !l.starts_with('#') && !l.is_empty())
                    .map(|l| l.to_string())
                    .collect()
            };
            assert_eq!(body(&ours), body(&theirs), "{} {p}", img.name);
            assert!(
                ours.starts_with(&format!("# file: {}\n", &p[1..])),
                "{ours}"
            );
        }
    }
}

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Compare an extracted tree with the source it was built from.
fn compare_trees(src: &Path, dst: &Path, rel: &str, img: &Image, as_root: bool, seen: &mut u32) {
    let names = |d: &Path| -> BTreeSet<String> {
        fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_str().unwrap().to_string())
            .collect()
    };
    let mut want = names(&src.join(rel));
    let mut got = names(&dst.join(rel));
    want.remove("sock");
    got.remove("lost+found");
    if !as_root {
        want.remove("cdev");
        want.remove("bdev");
    }
    assert_eq!(got, want, "{}: entries of /{rel}", img.name);
    for n in &want {
        let r = if rel.is_empty() {
            n.clone()
        } else {
            format!("{rel}/{n}")
        };
        let (s, d) = (src.join(&r), dst.join(&r));
        let (sm, dm) = (
            fs::symlink_metadata(&s).unwrap(),
            fs::symlink_metadata(&d).unwrap(),
        );
        let ctx = format!("{}: /{r}", img.name);
        assert_eq!(sm.mode() & 0o170000, dm.mode() & 0o170000, "type {ctx}");
        *seen += 1;
        if !sm.file_type().is_symlink() {
            assert_eq!(sm.mode(), dm.mode(), "mode {ctx}");
        }
        if as_root {
            assert_eq!((sm.uid(), sm.gid()), (dm.uid(), dm.gid()), "owner {ctx}");
        }
        let want_ns = if r == "hello.txt" && img.extra_times {
            NS as i64
        } else {
            0
        };
        assert_eq!(
            (dm.mtime(), dm.mtime_nsec()),
            (sm.mtime(), want_ns),
            "mtime {ctx}"
        );
        let mut sx = xattrs(&s);
        if !as_root {
            sx.retain(|k, _| !k.starts_with("trusted."));
        }
        assert_eq!(xattrs(&d), sx, "xattrs {ctx}");
        let ft = sm.file_type();
        if ft.is_dir() {
            compare_trees(src, dst, &r, img, as_root, seen);
        } else if ft.is_symlink() {
            assert_eq!(
                fs::read_link(&s).unwrap(),
                fs::read_link(&d).unwrap(),
                "{ctx}"
            );
        } else if ft.is_file() {
            assert!(
                fs::read(&s).unwrap() == fs::read(&d).unwrap(),
                "bytes {ctx}"
            );
        } else {
            assert_eq!(sm.rdev(), dm.rdev(), "rdev {ctx}");
        }
    }
}

#[test]
fn extract_matches_source_and_rdump() {
    let fx = fixture();
    for img in &fx.images {
        let dst = scratch().join(format!("x-{}", img.name));
        let _ = fs::remove_dir_all(&dst);
        let o = ok(
            tool(&img.path, &["extract", "/", dst.to_str().unwrap()]),
            "extract",
        );
        assert!(
            stderr(&o).contains("/sock: socket ignored"),
            "{}",
            stderr(&o)
        );
        let mut seen = 0;
        compare_trees(&fx.src, &dst, "", img, is_root(), &mut seen);
        assert!(seen > 2000);
        // Hard links share one inode.
        let inos: BTreeSet<(u64, u64)> = ["hl1", "nested/hl2", "nested/a/hl3"]
            .iter()
            .map(|p| {
                let m = fs::metadata(dst.join(p)).unwrap();
                (m.ino(), m.nlink())
            })
            .collect();
        assert_eq!(inos.len(), 1, "{}: hard links {inos:?}", img.name);
        assert_eq!(inos.iter().next().unwrap().1, 3);
        // Holes stay holes.
        let sp = fs::metadata(dst.join("sparse.bin")).unwrap();
        assert_eq!(sp.len(), SPARSE_SIZE);
        assert!(
            sp.blocks() * 512 < 1 << 20,
            "{}: sparse file took {} sectors",
            img.name,
            sp.blocks()
        );
        // The root's own attributes went to the created DEST.
        let rm = fs::metadata(&dst).unwrap();
        assert_eq!(
            rm.mode() & 0o7777,
            fs::metadata(&fx.src).unwrap().mode() & 0o7777
        );

        // debugfs rdump of the same image: same names, types, bytes, targets.
        let rd = fresh_dir(&format!("rdump-{}", img.name));
        debugfs(&img.path, &format!("rdump / {}", rd.display()));
        compare_with_rdump(&rd, &dst, "");

        // Extracting again over the result replaces files and succeeds.
        ok(
            tool(&img.path, &["extract", "/", dst.to_str().unwrap()]),
            "extract again",
        );
        // A single file, to a directory and to a new name.
        let one = fresh_dir(&format!("one-{}", img.name));
        ok(
            tool(
                &img.path,
                &[
                    "extract",
                    "/nested/a/b/c/d/e/deep.txt",
                    one.to_str().unwrap(),
                ],
            ),
            "extract file",
        );
        assert_eq!(fs::read(one.join("deep.txt")).unwrap(), b"deep\n");
        let named = one.join("renamed");
        ok(
            tool(&img.path, &["extract", "/s_abs", named.to_str().unwrap()]),
            "extract link",
        );
        assert_eq!(fs::read_link(&named).unwrap(), Path::new("/etc/passwd"));
        // A subtree: its contents land in DEST.
        let sub = scratch().join(format!("sub-{}", img.name));
        let _ = fs::remove_dir_all(&sub);
        ok(
            tool(&img.path, &["extract", "/nested", sub.to_str().unwrap()]),
            "extract dir",
        );
        assert_eq!(fs::read(sub.join("a/b/c/d/e/deep.txt")).unwrap(), b"deep\n");
        assert_eq!(
            xattrs(&sub).get("user.dir").map(|v| &v[..]),
            Some(&b"d"[..])
        );
    }
}

fn compare_with_rdump(rd: &Path, dst: &Path, rel: &str) {
    for e in fs::read_dir(rd.join(rel)).unwrap() {
        let e = e.unwrap();
        let r = format!("{rel}/{}", e.file_name().to_str().unwrap());
        let r = r.trim_start_matches('/').to_string();
        let (a, b) = (rd.join(&r), dst.join(&r));
        let (am, bm) = (
            fs::symlink_metadata(&a).unwrap(),
            fs::symlink_metadata(&b).unwrap_or_else(|_| panic!("{r} missing from extract")),
        );
        if am.file_type().is_socket() {
            continue;
        }
        assert_eq!(
            am.mode() & 0o170000,
            bm.mode() & 0o170000,
            "type of {r} vs rdump"
        );
        if am.is_dir() {
            compare_with_rdump(rd, dst, &r);
        } else if am.file_type().is_symlink() {
            assert_eq!(
                fs::read_link(&a).unwrap(),
                fs::read_link(&b).unwrap(),
                "{r}"
            );
        } else if am.is_file() {
            let (mut x, y) = (fs::read(&a).unwrap(), fs::read(&b).unwrap());
            // rdump writes an inline-data file's whole inline area (at most
            // 60 bytes in i_block plus the system.data value): zeros past i_size.
            if x.len() > y.len() && x.len() <= 256 && x[y.len()..].iter().all(|&c| c == 0) {
                x.truncate(y.len());
            }
            assert!(x == y, "{r} differs from rdump");
            // rdump drops setuid/setgid bits; the source comparison checks them.
            assert_eq!(am.mode() & 0o777, bm.mode() & 0o777, "mode of {r} vs rdump");
        }
    }
}

use std::os::unix::fs::FileTypeExt;

#[test]
fn extract_as_unprivileged_user() {
    if !is_root() {
        return; // Needs root to switch to another user.
    }
    let fx = fixture();
    let img = &fx.images[0];
    let base = fresh_dir("nonroot");
    lchown(&base, 65534, 65534);
    // The image must be readable by that user.
    let imgcopy = base.join("img");
    fs::copy(&img.path, &imgcopy).unwrap();
    fs::set_permissions(&imgcopy, fs::Permissions::from_mode(0o644)).unwrap();
    let dst = base.join("out");
    let o = cmd("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
        .arg(&imgcopy)
        .arg("extract")
        .arg("/")
        .arg(&dst)
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    // One warning for the trusted namespace, however many files use it.
    assert_eq!(err.matches("trusted.* attributes").count(), 1, "{err}");
    assert_eq!(err.matches("device nodes are skipped").count(), 1, "{err}");
    let mut seen = 0;
    let fake = Image {
        name: img.name,
        path: img.path.clone(),
        extra_times: img.extra_times,
    };
    compare_trees(&fx.src, &dst, "", &fake, false, &mut seen);
    let m = fs::metadata(dst.join("owned")).unwrap();
    assert_eq!(m.uid(), 65534, "chown is skipped, not an error");
}

#[test]
fn check_agrees_with_e2fsck() {
    let fx = fixture();
    for img in &fx.images {
        let (code, text) = e2fsck(&img.path);
        assert_eq!(code, 0, "{}: e2fsck: {text}", img.name);
        let o = tool(&img.path, &["check", "--data"]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}: {}{}",
            img.name,
            stdout(&o),
            stderr(&o)
        );
        assert!(stdout(&o).contains("clean"));
        let j = json(&tool(&img.path, &["check", "--json", "-j", "2"]));
        assert_eq!(j["clean"], true);
        assert!(j["summary"]["inodes"].as_u64().unwrap() > 2000);
    }
    // Damage one inode of the metadata_csum image.
    let img = &fx.images[0];
    let bad = scratch().join("corrupt.img");
    fs::copy(&img.path, &bad).unwrap();
    let imap = debugfs(&bad, "imap /bytes.bin");
    let ino: u64 = debugfs(&bad, "stat /bytes.bin")
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    // "located at block 166, offset 0x0d00"
    let loc = &imap[imap.find("located at block ").expect("imap output") + 17..];
    let (blk, off) = loc.split_once(", offset 0x").unwrap();
    let blk: u64 = blk.trim().parse().unwrap();
    let off = u64::from_str_radix(off.split_whitespace().next().unwrap(), 16).unwrap();
    let bs: u64 = field(&debugfs(&bad, "stats"), "Block size")
        .unwrap()
        .parse()
        .unwrap();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&bad)
        .unwrap();
    let at = blk * bs + off + 0x10; // a byte of i_mtime
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x5a], at).unwrap();
    drop(f);
    assert_ne!(e2fsck(&bad).0, 0, "e2fsck should see the damage");
    let o = tool(&bad, &["check"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o)
            .lines()
            .any(|l| l.starts_with("problem:") && l.contains(&format!("inode {ino}"))),
        "no problem line naming inode {ino}: {}",
        stdout(&o)
    );
    let j = json(&tool(&bad, &["check", "--json"]));
    assert_eq!(j["clean"], false);
    assert!(j["problems"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["object"]["inode"] == ino));
    // Salvage mode reads the file anyway.
    let o = tool(&bad, &["--ignore-checksums", "cat", "/bytes.bin"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(o.stdout == fs::read(fx.src.join("bytes.bin")).unwrap());
    // Without it, the damaged file is named and the rest extracted.
    let dst = scratch().join("x-corrupt");
    let _ = fs::remove_dir_all(&dst);
    let o = tool(&bad, &["extract", "/", dst.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("/bytes.bin: inode"), "{}", stderr(&o));
    assert!(dst.join("hello.txt").exists());
}

#[test]
fn error_messages() {
    let fx = fixture();
    let img = &fx.images[0].path;
    let missing = scratch().join("does-not-exist.img");
    let o = tool(&missing, &["info"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o).trim(),
        format!(
            "ext4-image: cannot open {}: No such file or directory",
            missing.display()
        )
    );
    let junk = scratch().join("junk.img");
    fs::write(&junk, vec![0u8; 1 << 20]).unwrap();
    let o = tool(&junk, &["ls"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o).trim(),
        format!(
            "ext4-image: {} is not an ext2/ext3/ext4 filesystem (bad superblock magic)",
            junk.display()
        )
    );
    let o = tool(img, &["stat", "/nested/nope/x"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o).trim(),
        "ext4-image: no such file or directory: /nested/nope/x (no entry 'nope' in /nested)"
    );
    let o = tool(img, &["ls", "/hello.txt/x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("not a directory: /hello.txt/x (/hello.txt is not a directory)"),
        "{}",
        stderr(&o)
    );
    // Symlinks are not followed in the middle of a path.
    let o = tool(img, &["cat", "/s_short/x"]);
    assert_eq!(o.status.code(), Some(1));
    let o = tool(img, &["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
    let o = tool(img, &["--cache-size", "lots", "info"]);
    assert_eq!(o.status.code(), Some(2));
    ok(
        tool(img, &["--cache-size", "256k", "ls", "/big"]),
        "small cache",
    );
    // An unknown incompat feature is named.
    let inc = scratch().join("incompat.img");
    fs::copy(img, &inc).unwrap();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&inc)
        .unwrap();
    let mut w = [0u8; 4];
    f.read_exact_at(&mut w, 1024 + 0x60).unwrap();
    let v = u32::from_le_bytes(w) | 0x1; // compression
    f.write_all_at(&v.to_le_bytes(), 1024 + 0x60).unwrap();
    drop(f);
    let o = tool(&inc, &["--ignore-checksums", "info"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("compression"), "{}", stderr(&o));
    // --help explains every command with an example.
    let h = stdout(&run_ok(BIN, &["--help"]));
    for c in [
        "info", "ls", "stat", "cat", "getfattr", "extract", "check", "Examples",
    ] {
        assert!(h.contains(c), "{h}");
    }
    let h = stdout(&run_ok(BIN, &["x", "extract", "--help"]));
    assert!(h.contains("Example:"), "{h}");
}

/// Replace every occurrence of `from` with `to` (same length) in a file.
fn patch(img: &Path, from: &[u8], to: &[u8]) -> usize {
    assert_eq!(from.len(), to.len());
    let mut data = fs::read(img).unwrap();
    let mut n = 0;
    let mut i = 0;
    while i + from.len() <= data.len() {
        if &data[i..i + from.len()] == from {
            data[i..i + from.len()].copy_from_slice(to);
            n += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    fs::write(img, data).unwrap();
    n
}

#[test]
fn extract_never_writes_outside_dest() {
    let base = fresh_dir("traversal");
    let outside = base.join("outside");
    fs::create_dir(&outside).unwrap();
    let src = base.join("src");
    fs::create_dir(&src).unwrap();
    // Names rewritten in the image below, each to the same length.
    fs::write(src.join("zzevil_escape1"), b"escaped").unwrap();
    fs::write(src.join("ZQ"), b"dotdot").unwrap();
    fs::write(src.join("plain"), b"fine").unwrap();
    // A symlink to a directory outside, and a directory that will be
    // renamed to the symlink's name, holding a file.
    let ext = outside.to_str().unwrap().to_string();
    std::os::unix::fs::symlink(&ext, src.join("lnk1")).unwrap();
    fs::create_dir(src.join("lnk2")).unwrap();
    fs::write(src.join("lnk2/payload"), b"through the link").unwrap();
    let img = base.join("t.img");
    mkfs_ext4(&src, &img, &["-O", "^metadata_csum,^dir_index"], "8M");
    assert_eq!(patch(&img, b"zzevil_escape1", b"../../../evil1"), 1);
    assert_eq!(patch(&img, b"ZQ", b".."), 1);
    assert_eq!(patch(&img, b"lnk2", b"lnk1"), 1);
    let listing = debugfs(&img, "ls /");
    assert!(listing.contains("../../../evil1"), "{listing}");

    let dst = base.join("a/b/c/dest");
    fs::create_dir_all(&dst).unwrap();
    let o = tool(&img, &["extract", "/", dst.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("refusing an entry named \"../../../evil1\""),
        "{err}"
    );
    assert!(
        err.contains("/lnk1: cannot open: exists in the destination and is not a directory"),
        "{err}"
    );
    assert_eq!(fs::read(dst.join("plain")).unwrap(), b"fine");
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "something was written outside"
    );
    for d in [
        base.clone(),
        base.join("a"),
        base.join("a/b"),
        base.join("a/b/c"),
    ] {
        assert!(!d.join("evil1").exists());
    }
    // A second extraction meets the symlink that is already there.
    let o = tool(&img, &["extract", "/", dst.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    // And a directory symlink planted in DEST beforehand is not followed
    // when extracting a file over it.
    let dst2 = base.join("dest2");
    fs::create_dir(&dst2).unwrap();
    std::os::unix::fs::symlink(&ext, dst2.join("plain")).unwrap();
    let o = tool(&img, &["extract", "/plain", dst2.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    assert_eq!(fs::read(dst2.join("plain")).unwrap(), b"fine");
}

/// Run with a time limit; `None` on timeout (the process is killed).
fn run_limited(mut c: Command, limit: Duration) -> Option<Output> {
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drain the pipes in threads so a chatty child cannot block.
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t1 = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t2 = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(Output {
                status,
                stdout: t1.join().unwrap(),
                stderr: t2.join().unwrap(),
            });
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn corpus_no_panics_no_hangs() {
    let Some(corpus) = corpus_dir() else {
        return;
    };
    let Ok(manifest) = fs::read_to_string(corpus.join("MANIFEST.tsv")) else {
        eprintln!("no MANIFEST.tsv in {}; skipped", corpus.display());
        return;
    };
    let work = fresh_dir("corpus");
    let limit = Duration::from_secs(20);
    let mut table = Vec::new();
    let mut failures = Vec::new();
    for line in manifest.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (file, fsck) = (cols[0], cols.get(1).copied().unwrap_or(""));
        let img = work.join(file.trim_end_matches(".gz"));
        let gz = fs::File::open(corpus.join(file)).unwrap();
        let o = Command::new("gunzip").arg("-c").stdin(gz).output().unwrap();
        fs::write(&img, &o.stdout).unwrap();
        let mut codes = Vec::new();
        // check as e2fsck -fn sees the image (no journal replay); extract
        // reads it replayed in memory.
        for args in [vec!["--norecovery", "check"], vec!["extract", "/", "OUT"]] {
            let out = work.join("out");
            let _ = fs::remove_dir_all(&out);
            let mut c = cmd(BIN);
            c.arg(&img);
            for a in &args {
                if *a == "OUT" {
                    c.arg(&out);
                } else {
                    c.arg(a);
                }
            }
            match run_limited(c, limit) {
                None => {
                    failures.push(format!("{file}: {} timed out", args.join(" ")));
                    codes.push("T".to_string());
                }
                Some(o) => {
                    let code = o.status.code().map_or("sig".to_string(), |c| c.to_string());
                    if o.status.code() == Some(101)
                        || stderr(&o).contains("panicked")
                        || o.status.code().is_none()
                    {
                        failures.push(format!(
                            "{file}: {} panicked/crashed: {}",
                            args.join(" "),
                            stderr(&o)
                        ));
                    }
                    if args.contains(&"check") && fsck == "0" && o.status.code() != Some(0) {
                        failures.push(format!(
                            "{file}: e2fsck -fn is clean but check says {code}: {}{}",
                            stdout(&o),
                            stderr(&o)
                        ));
                    }
                    codes.push(code);
                }
            }
        }
        let _ = fs::remove_file(&img);
        table.push(format!(
            "{file:<45} e2fsck {fsck:>3}  check {:>3}  extract {:>3}",
            codes[0], codes[1]
        ));
    }
    let _ = fs::remove_dir_all(work.join("out"));
    println!("{}", table.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What one extracted entry looks like, read without opening it (so no
/// access time moves before everything is recorded).
#[derive(Debug, PartialEq)]
struct Entry {
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    nlink: u64,
    atime: (i64, i64),
    mtime: (i64, i64),
    rdev: u64,
    xattrs: BTreeMap<String, Vec<u8>>,
    target: Option<PathBuf>,
}

/// Every entry under `root` by relative path, plus the groups of paths
/// that share an inode.
fn snapshot(root: &Path) -> (BTreeMap<String, Entry>, BTreeSet<Vec<String>>) {
    fn walk(
        root: &Path,
        rel: &str,
        out: &mut BTreeMap<String, Entry>,
        inos: &mut BTreeMap<u64, Vec<String>>,
    ) {
        let mut names: Vec<_> = fs::read_dir(root.join(rel))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_str().unwrap().to_string())
            .collect();
        names.sort();
        for n in names {
            let r = if rel.is_empty() {
                n
            } else {
                format!("{rel}/{n}")
            };
            let p = root.join(&r);
            let m = fs::symlink_metadata(&p).unwrap();
            if !m.is_dir() && m.nlink() > 1 {
                inos.entry(m.ino()).or_default().push(r.clone());
            }
            out.insert(
                r.clone(),
                Entry {
                    mode: m.mode(),
                    uid: m.uid(),
                    gid: m.gid(),
                    size: if m.is_dir() { 0 } else { m.len() },
                    nlink: m.nlink(),
                    atime: (m.atime(), m.atime_nsec()),
                    mtime: (m.mtime(), m.mtime_nsec()),
                    rdev: m.rdev(),
                    xattrs: xattrs(&p),
                    target: m
                        .file_type()
                        .is_symlink()
                        .then(|| fs::read_link(&p).unwrap()),
                },
            );
            if m.is_dir() {
                walk(root, &r, out, inos);
            }
        }
    }
    let mut out = BTreeMap::new();
    let mut inos = BTreeMap::new();
    walk(root, "", &mut out, &mut inos);
    (out, inos.into_values().collect())
}

fn contents(root: &Path, snap: &BTreeMap<String, Entry>) -> BTreeMap<String, Vec<u8>> {
    snap.iter()
        .filter(|(_, e)| e.mode & 0o170000 == 0o100000)
        .map(|(r, _)| (r.clone(), fs::read(root.join(r)).unwrap()))
        .collect()
}

/// Extraction with one worker and with several gives the same tree (every
/// attribute, hard-link groups, bytes), equal to `debugfs rdump` and to the
/// source; unwritten extents come out as holes of zeros even when the
/// blocks under them hold old data.
#[test]
fn extract_parallel_equals_serial_and_rdump() {
    let base = fresh_dir("parallel");
    let src = base.join("src");
    fs::create_dir(&src).unwrap();
    // 60 directories up to 4 deep, files of 0 B to ~300 KiB (both copy
    // paths), 40 inodes with 4 names each spread over the directories.
    let mut dirs = vec![String::new()];
    for i in 0..60usize {
        let parent = dirs[(i * 7) % dirs.len()].clone();
        let d = if parent.is_empty() || parent.matches('/').count() >= 3 {
            format!("d{i:02}")
        } else {
            format!("{parent}/d{i:02}")
        };
        fs::create_dir(src.join(&d)).unwrap();
        dirs.push(d);
    }
    for (k, d) in dirs.iter().enumerate() {
        for f in 0..12usize {
            let n = (k * 12 + f) * 2654435761 % 100_003;
            let size = if f == 0 { 70_000 + n * 2 } else { n % 9000 };
            let p = src.join(d).join(format!("f{f:02}"));
            fs::write(&p, pattern(size, (k * 12 + f) as u32)).unwrap();
            fs::set_permissions(
                &p,
                fs::Permissions::from_mode(0o400 + (f as u32 % 8) * 0o11),
            )
            .unwrap();
            if f % 5 == 1 {
                lsetxattr(&p, "user.k", format!("{k}-{f}").as_bytes());
            }
        }
    }
    for l in 0..40usize {
        let first = src
            .join(&dirs[(l * 13) % dirs.len()])
            .join(format!("link{l:02}"));
        fs::write(&first, pattern(1000 + l * 3000, 900 + l as u32)).unwrap();
        for n in 1..4 {
            let other = src
                .join(&dirs[(l * 13 + n * 17) % dirs.len()])
                .join(format!("link{l:02}_{n}"));
            fs::hard_link(&first, other).unwrap();
        }
    }
    std::os::unix::fs::symlink("d00/f01", src.join("sym")).unwrap();
    let fifo = c(&src.join(&dirs[5]).join("fifo"));
    // SAFETY: valid path string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
    {
        // Data, then a hole that becomes unwritten extents below.
        let f = fs::File::create(src.join("prealloc")).unwrap();
        f.write_all_at(&pattern(64 << 10, 5), 0).unwrap();
        f.set_len(1 << 20).unwrap();
    }
    for (k, d) in dirs.iter().enumerate().rev() {
        set_mtime(&src.join(d), 1_600_000_000 + k as i64 * 1000);
    }
    let img = base.join("p.img");
    mkfs_ext4(
        &src,
        &img,
        &["-O", "metadata_csum,64bit", "-b", "4096"],
        "64M",
    );
    // Blocks 16..=255 of /prealloc become unwritten; put old data under
    // some of them, which must not come out.
    debugfs_w(&img, "fallocate /prealloc 16 255");
    let img_file = fs::OpenOptions::new().write(true).open(&img).unwrap();
    for lblk in [16, 100, 255] {
        let out = debugfs(&img, &format!("bmap /prealloc {lblk}"));
        // "6376 (uninit)"
        let pblk: u64 = out
            .split_whitespace()
            .next()
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("bmap: {out}"));
        assert!(out.contains("uninit"), "bmap /prealloc {lblk}: {out}");
        assert!(pblk > 0, "bmap /prealloc {lblk}: {out}");
        img_file.write_all_at(&[0xEE; 4096], pblk * 4096).unwrap();
    }
    drop(img_file);
    assert!(
        debugfs(&img, "stat /prealloc").contains("[u]"),
        "no unwritten extent"
    );
    let src_bytes = fs::read(src.join("prealloc")).unwrap();

    let rd = fresh_dir("parallel-rdump");
    debugfs(&img, &format!("rdump / {}", rd.display()));
    let mut trees = Vec::new();
    for (i, j) in ["1", "4", "4", "2", "4"].iter().enumerate() {
        let dst = base.join(format!("x{i}-j{j}"));
        let o = tool(&img, &["extract", "-j", j, "/", dst.to_str().unwrap()]);
        ok(o, &format!("extract -j {j}"));
        // Before anything reads the files (which may move their atime).
        let (snap, groups) = snapshot(&dst);
        compare_with_rdump(&rd, &dst, "");
        let data = contents(&dst, &snap);
        assert_eq!(data["prealloc"], src_bytes, "-j {j}: unwritten extents");
        let m = fs::metadata(dst.join("prealloc")).unwrap();
        assert!(
            m.blocks() * 512 <= 128 << 10,
            "-j {j}: prealloc took {} sectors",
            m.blocks()
        );
        trees.push((j, snap, groups, data));
    }
    let (_, snap1, groups1, data1) = &trees[0];
    // The source agrees on every name, mode, owner, mtime (seconds:
    // mke2fs -d drops nanoseconds), xattr, byte and link count.
    let (src_snap, src_groups) = snapshot(&src);
    assert_eq!(src_groups, *groups1, "hard-link groups vs source");
    assert_eq!(groups1.len(), 40);
    for (r, e) in &src_snap {
        let x = &snap1[r];
        assert_eq!(
            (e.mode, e.uid, e.gid, e.size, e.nlink, e.mtime.0, &e.xattrs, &e.target),
            (x.mode, x.uid, x.gid, x.size, x.nlink, x.mtime.0, &x.xattrs, &x.target),
            "/{r} vs source"
        );
    }
    assert_eq!(contents(&src, &src_snap), *data1);
    for (j, snap, groups, data) in &trees[1..] {
        assert_eq!(
            snap.keys().collect::<Vec<_>>(),
            snap1.keys().collect::<Vec<_>>(),
            "-j {j}: names"
        );
        for (r, e) in snap1 {
            assert_eq!(&snap[r], e, "-j {j}: /{r}");
        }
        assert_eq!(groups, groups1, "-j {j}: hard-link groups");
        assert!(data == data1, "-j {j}: contents");
    }
}

/// The data segments of a file, as SEEK_DATA / SEEK_HOLE report them:
/// (start, end) byte pairs.
fn data_map(p: &Path) -> Vec<(u64, u64)> {
    let f = fs::File::open(p).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    let size = f.metadata().unwrap().len() as i64;
    let mut segs = Vec::new();
    let mut pos = 0i64;
    while pos < size {
        // SAFETY: plain values on a live descriptor.
        let d = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if d < 0 {
            break;
        }
        let h = unsafe { libc::lseek(fd, d, libc::SEEK_HOLE) };
        assert!(h > d, "SEEK_HOLE {}", p.display());
        segs.push((d as u64, h as u64));
        pos = h;
    }
    segs
}

/// The written extents of `path` in `img` as debugfs `stat` lists them
/// ("(0-3327):6169-9496, (4352-6655[u]):..."), as byte ranges clipped to
/// `size` and merged where they touch; unwritten extents left out.
fn debugfs_written(img: &Path, path: &str, size: u64) -> Vec<(u64, u64)> {
    let out = debugfs(img, &format!("stat {path}"));
    let list = out
        .split("EXTENTS:")
        .nth(1)
        .unwrap_or_else(|| panic!("no extents in: {out}"));
    let mut segs: Vec<(u64, u64)> = Vec::new();
    for item in list.split(", ") {
        let Some(range) = item.trim().strip_prefix('(') else {
            continue;
        };
        let range = range.split(')').next().unwrap();
        // Index nodes are listed as "(ETB0)", unwritten ones end in [u].
        if range.starts_with("ETB") || range.ends_with("[u]") {
            continue;
        }
        let (a, b) = range.split_once('-').unwrap_or((range, range));
        let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
        let (from, to) = (a * 4096, ((b + 1) * 4096).min(size));
        match segs.last_mut() {
            Some(l) if l.1 == from => l.1 = to,
            _ => segs.push((from, to)),
        }
    }
    segs
}

/// Big sparse files, extracted with 1, 2 and 4 workers: their bytes equal
/// `debugfs rdump`'s and the source's, and their holes (SEEK_HOLE) are
/// exactly where the image maps no written extent (debugfs `stat`), the
/// unwritten extent in the middle included, though the blocks under it
/// hold old data. (rdump itself writes holes out as zeros, so its map is
/// no oracle.) Also, as root: a setgid DEST of another group and umask 077
/// change what a new file gets, and owners and modes still come out as
/// the source's (extract skips chown/chmod only where fstat shows them
/// already right).
#[test]
fn extract_big_sparse_files_and_modes() {
    const MIB: u64 = 1 << 20;
    let base = fresh_dir("bigsparse");
    let src = base.join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    // big: data 0..13 MiB, hole to 30 MiB (of which 17..26 MiB becomes
    // an unwritten extent below), data 30..48 MiB. tail: 33 MiB of data,
    // then a hole to 41 MiB (the length is set at the end).
    {
        let f = fs::File::create(src.join("big")).unwrap();
        f.write_all_at(&pattern(13 * MIB as usize, 1), 0).unwrap();
        f.write_all_at(&pattern(18 * MIB as usize, 2), 30 * MIB)
            .unwrap();
        let f = fs::File::create(src.join("sub/tail")).unwrap();
        f.write_all_at(&pattern(33 * MIB as usize + 100, 3), 0)
            .unwrap();
        f.set_len(41 * MIB).unwrap();
    }
    // Small files of several modes and owners, so that skipping chmod
    // and chown where creation already got them right is tested too.
    let root = is_root();
    for (i, mode) in [0o644u32, 0o755, 0o600, 0o2755, 0o4711, 0o1644, 0o444, 0o660]
        .iter()
        .enumerate()
    {
        for d in ["", "sub/"] {
            let p = src.join(format!("{d}f{i}"));
            fs::write(&p, pattern(1000 + i * 5000, i as u32)).unwrap();
            if root {
                let id = if i % 2 == 0 { 0 } else { 1000 + i as u32 };
                lchown(&p, id, id + 7);
            }
            fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).unwrap();
        }
    }
    for p in ["big", "sub/tail", "sub"] {
        set_mtime(&src.join(p), 1_500_000_000);
    }
    let img = base.join("bigsparse.img");
    mkfs_ext4(&src, &img, &["-b", "4096"], "160M");
    debugfs_w(
        &img,
        &format!("fallocate /big {} {}", 17 * 256, 26 * 256 - 1),
    );
    // Old data under the unwritten extent, which must not come out.
    let img_file = fs::OpenOptions::new().write(true).open(&img).unwrap();
    for lblk in [17 * 256, 20 * 256 + 3, 26 * 256 - 1] {
        let out = debugfs(&img, &format!("bmap /big {lblk}"));
        assert!(out.contains("uninit"), "bmap /big {lblk}: {out}");
        let pblk: u64 = out.split_whitespace().next().unwrap().parse().unwrap();
        img_file.write_all_at(&[0xEE; 4096], pblk * 4096).unwrap();
    }
    drop(img_file);
    let sizes = [("big", 48 * MIB), ("sub/tail", 41 * MIB)];
    let maps: Vec<_> = sizes
        .iter()
        .map(|(n, size)| debugfs_written(&img, &format!("/{n}"), *size))
        .collect();
    assert_eq!(maps[0], [(0, 13 * MIB), (30 * MIB, 48 * MIB)], "image map");
    assert_eq!(maps[1], [(0, 33 * MIB + 4096)], "image map");

    let rd = fresh_dir("bigsparse-rdump");
    debugfs(&img, &format!("rdump / {}", rd.display()));
    let (src_snap, _) = snapshot(&src);
    let src_data = contents(&src, &src_snap);
    let mut runs: Vec<(&str, PathBuf, &str)> = ["1", "2", "4"]
        .iter()
        .map(|j| (*j, base.join(format!("x-j{j}")), "022"))
        .collect();
    if root {
        // An existing setgid DEST of another group: new files and
        // directories start in its group.
        let d = base.join("x-setgid");
        fs::create_dir(&d).unwrap();
        lchown(&d, 0, 4242);
        fs::set_permissions(&d, fs::Permissions::from_mode(0o2777)).unwrap();
        runs.push(("2", d, "077"));
    }
    for (j, dst, umask) in &runs {
        let what = format!("extract -j {j} (umask {umask}) into {}", dst.display());
        let o = cmd("sh")
            .arg("-c")
            .arg(format!("umask {umask}; exec \"$@\""))
            .arg("sh")
            .arg(BIN)
            .arg(&img)
            .args(["extract", "-j", j, "/", dst.to_str().unwrap()])
            .output()
            .unwrap();
        ok(o, &what);
        let (snap, _) = snapshot(dst);
        compare_with_rdump(&rd, dst, "");
        for (r, e) in &src_snap {
            let x = &snap[r];
            if r == "sub" {
                assert_eq!(e.mode, x.mode, "{what}: /{r} mode");
                continue;
            }
            assert_eq!(
                (e.mode, e.uid, e.gid, e.size, e.mtime.0, &e.xattrs),
                (x.mode, x.uid, x.gid, x.size, x.mtime.0, &x.xattrs),
                "{what}: /{r} vs source"
            );
        }
        assert!(contents(dst, &snap) == src_data, "{what}: bytes vs source");
        for ((n, _), map) in sizes.iter().zip(&maps) {
            assert_eq!(data_map(&dst.join(n)), *map, "{what}: holes of /{n}");
            let (a, b) = (
                fs::read(dst.join(n)).unwrap(),
                fs::read(rd.join(n)).unwrap(),
            );
            assert!(a == b, "{what}: /{n} differs from rdump");
        }
    }
}

/// What `check` says of directory entries whose inode disagrees with them
/// (its file type, or a deleted inode still marked in use), as e2fsck -fn
/// flags them too; and that a clean image with many entries stays clean.
/// (The check reads an entry's target inode raw and decodes it only when
/// the raw mode or link count call for a report.)
#[test]
fn check_flags_entries_their_inodes_contradict() {
    let base = fresh_dir("targets");
    let src = base.join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    for n in ["a", "b", "c", "d/e"] {
        fs::write(src.join(n), pattern(3000, 7)).unwrap();
    }
    let img = base.join("t.img");
    mkfs_ext4(&src, &img, &["-O", "metadata_csum"], "16M");
    let o = tool(&img, &["check"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let cases = [
        // A FIFO's mode under an entry typed as a regular file.
        (
            "type",
            "sif /a mode 010644",
            "/a",
            "file type does not match",
        ),
        (
            "type-in-dir",
            "sif /d/e mode 0140644",
            "/d/e",
            "file type does not match",
        ),
        // Mode and link count zero, still marked in the bitmap.
        (
            "deleted",
            "sif /b mode 0\nsif /b links_count 0",
            "/b",
            "refers to a deleted inode",
        ),
    ];
    for (name, reqs, path, what) in cases {
        let bad = base.join(format!("{name}.img"));
        fs::copy(&img, &bad).unwrap();
        let ino = debugfs(&bad, &format!("stat {path}"))
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string();
        let reqs: Vec<String> = reqs.lines().map(String::from).collect();
        oracle::debugfs_damage(&bad, &reqs);
        let (code, text) = e2fsck(&bad);
        assert_eq!(code, 4, "{name}: e2fsck: {text}");
        let o = tool(&bad, &["check"]);
        let text = stdout(&o);
        assert_eq!(o.status.code(), Some(1), "{name}: {text}");
        assert!(
            text.lines().any(|l| l.contains(what)),
            "{name}: no problem saying {what:?} (inode {ino}):\n{text}"
        );
    }
}
