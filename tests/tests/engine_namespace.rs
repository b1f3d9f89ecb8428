//! The namespace against the kernel's ext4 doing the same: symlinks in
//! `i_block` or in a block, device numbers in the old or new encoding,
//! rename's errors, link-count limits (`dir_nlink`), hash trees three
//! levels deep (`large_dir`) and the kernel's own deep trees changed by
//! the engine; plus what a damaged hash tree and a deleted inode do.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ext4_engine::{
    inode_flags, Cred, Error, FileBlock, InodeNo, MemDevice, OpenOptions, Volume, RENAME_EXCHANGE,
    RENAME_NOREPLACE,
};
use ext4_tests::kwimage::kw_mkfs;
use ext4_tests::oracle::{debugfs, tempfile_path, KernelMount};
use ext4_tests::snapshot::{diff, format_diffs, host_snapshot, Compare, Field, WalkOptions};
use ext4_tests::util::{require_e2fsprogs, require_kernel_ext4};
use ext4_tests::writes::{check_fsck, open_rw, rw_options, write_sparse};

/// An empty image from `mke2fs` (ext4, `bs`, extra features), as bytes.
fn fresh(bs: u32, features: &str, size: &str, extra: &[&str]) -> Vec<u8> {
    let img = tempfile_path("ns-fresh").with_extension("img");
    let mut c = std::process::Command::new("mke2fs");
    c.args(["-F", "-q", "-t", "ext4", "-b", &bs.to_string()]);
    if !features.is_empty() {
        c.arg("-O").arg(features);
    }
    c.args(extra).arg(&img).arg(size);
    ext4_tests::util::run_ok(&mut c);
    let b = std::fs::read(&img).unwrap();
    let _ = std::fs::remove_file(&img);
    b
}

/// A scratch image file removed on drop.
struct Scratch(PathBuf);
impl Scratch {
    fn new(stem: &str, bytes: &[u8]) -> Scratch {
        let p = tempfile_path(stem).with_extension("img");
        write_sparse(&p, bytes).unwrap();
        Scratch(p)
    }
}
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The kernel's read-only mounts of `kimg` and `eimg` show the same
/// `fields` on every path (directory sizes too when `fields` has them).
fn same_to_the_kernel(kimg: &Path, eimg: &Path, fields: &[Field], what: &str) {
    let walk = WalkOptions {
        content: true,
        data_map: false,
        ioctls: fields.contains(&Field::Flags),
    };
    let snap = |img: &Path| {
        let m = KernelMount::ro(img).unwrap();
        let s = host_snapshot(m.path(), walk);
        m.unmount().unwrap();
        s
    };
    let cmp = Compare {
        fields,
        ignore_dir_size: !fields.contains(&Field::Size),
        ignore_paths: &[],
    };
    let d = diff(&snap(kimg), &snap(eimg), &cmp);
    assert!(d.is_empty(), "{}", format_diffs(what, &d, 30));
}

fn errno_of(r: std::io::Result<()>) -> i32 {
    r.err().map_or(0, |e| e.raw_os_error().unwrap_or(-1))
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// Symbolic links of every interesting length, made by the kernel and by
/// the engine on the same kind of image: the same fast/slow choice (the
/// `EXTENTS` flag and the block count), the same target, ENAMETOOLONG at
/// the block size.
#[test]
fn symlinks_fast_and_slow_as_the_kernel() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    for bs in [1024u32, 4096] {
        let lens = [
            1usize,
            2,
            58,
            59,
            60,
            61,
            100,
            bs as usize - 2,
            bs as usize - 1,
            bs as usize,
        ];
        let kimg = Scratch::new("symlink-kernel", &fresh(bs, "", "8M", &[]));
        let mut kres = Vec::new();
        {
            let m = KernelMount::mount(&kimg.0, false, "").unwrap();
            for &l in &lens {
                let t = "t".repeat(l);
                let r = std::os::unix::fs::symlink(&t, m.path().join(format!("l{l}")));
                kres.push(errno_of(r));
            }
            m.unmount().unwrap();
        }
        let (vol, dev) = open_rw(fresh(bs, "", "8M", &[]), &rw_options());
        let mut eres = Vec::new();
        for &l in &lens {
            let t = vec![b't'; l];
            let r = vol.symlink(InodeNo::ROOT, format!("l{l}").as_bytes(), &t, &Cred::ROOT);
            // Read back at once, before any commit or checkpoint takes a
            // slow target's block home.
            if let Ok(a) = &r {
                assert_eq!(vol.readlink(a.ino).unwrap(), t, "target length {l}");
            }
            eres.push(r.err().map_or(0, |e| e.errno()));
        }
        vol.close().unwrap();
        drop(vol);
        assert_eq!(eres, kres, "block size {bs}: results for lengths {lens:?}");
        let eimg = Scratch::new("symlink-engine", &dev.snapshot());
        check_fsck(&eimg.0).unwrap();
        check_fsck(&kimg.0).unwrap();
        let k = ext4_tests::open_engine(&kimg.0).unwrap();
        let e = ext4_tests::open_engine(&eimg.0).unwrap();
        for (&l, &r) in lens.iter().zip(&kres) {
            if r != 0 {
                continue;
            }
            let name = format!("l{l}");
            let ki = k
                .inode(k.lookup_ino(InodeNo::ROOT, name.as_bytes()).unwrap())
                .unwrap();
            let ei = e
                .inode(e.lookup_ino(InodeNo::ROOT, name.as_bytes()).unwrap())
                .unwrap();
            assert_eq!(
                (ei.has_flag(inode_flags::EXTENTS), ei.blocks_512, ei.size),
                (ki.has_flag(inode_flags::EXTENTS), ki.blocks_512, ki.size),
                "block size {bs}, target length {l}: (extents, blocks, size) as the kernel's"
            );
            assert_eq!(e.readlink(ei.ino).unwrap(), vec![b't'; l]);
        }
        // The kernel reads ours.
        let m = KernelMount::ro(&eimg.0).unwrap();
        for (&l, &r) in lens.iter().zip(&kres) {
            if r == 0 {
                let t = std::fs::read_link(m.path().join(format!("l{l}"))).unwrap();
                assert_eq!(t.as_os_str().len(), l);
            }
        }
        m.unmount().unwrap();
    }
}

/// Device nodes made by the kernel and by the engine hold the same
/// `i_block` words: the old 16-bit encoding while both numbers fit a
/// byte, the new one otherwise.
#[test]
fn device_numbers_as_the_kernel() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    let devs = [
        (0u32, 0u32),
        (1, 3),
        (255, 255),
        (256, 0),
        (0, 256),
        (8, 1),
        (259, 70_000),
        (4095, (1 << 20) - 1),
    ];
    let kimg = Scratch::new("mknod-kernel", &fresh(4096, "", "8M", &[]));
    {
        let m = KernelMount::mount(&kimg.0, false, "").unwrap();
        for (i, &(a, b)) in devs.iter().enumerate() {
            for (kind, mode) in [("c", libc::S_IFCHR), ("b", libc::S_IFBLK)] {
                let p = cpath(&m.path().join(format!("{kind}{i}")));
                // SAFETY: a valid path; mknod has no other preconditions.
                let r = unsafe { libc::mknod(p.as_ptr(), mode | 0o640, libc::makedev(a, b)) };
                assert_eq!(r, 0, "kernel mknod {a}:{b}");
            }
        }
        m.unmount().unwrap();
    }
    let (vol, dev) = open_rw(fresh(4096, "", "8M", &[]), &rw_options());
    for (i, &(a, b)) in devs.iter().enumerate() {
        vol.mknod(
            InodeNo::ROOT,
            format!("c{i}").as_bytes(),
            0o20640,
            (a, b),
            &Cred::ROOT,
        )
        .unwrap();
        vol.mknod(
            InodeNo::ROOT,
            format!("b{i}").as_bytes(),
            0o60640,
            (a, b),
            &Cred::ROOT,
        )
        .unwrap();
    }
    assert_eq!(
        vol.mknod(InodeNo::ROOT, b"big", 0o20640, (4096, 0), &Cred::ROOT)
            .err(),
        Some(Error::InvalidArgument)
    );
    assert_eq!(
        vol.mknod(InodeNo::ROOT, b"dir", 0o40755, (0, 0), &Cred::ROOT)
            .err(),
        Some(Error::NotPermitted)
    );
    vol.close().unwrap();
    drop(vol);
    let eimg = Scratch::new("mknod-engine", &dev.snapshot());
    check_fsck(&eimg.0).unwrap();
    let k = ext4_tests::open_engine(&kimg.0).unwrap();
    let e = ext4_tests::open_engine(&eimg.0).unwrap();
    for (i, dev_no) in devs.iter().enumerate() {
        for kind in ["c", "b"] {
            let name = format!("{kind}{i}");
            let kb = k
                .inode_bytes(k.lookup_ino(InodeNo::ROOT, name.as_bytes()).unwrap())
                .unwrap();
            let eb = e
                .inode_bytes(e.lookup_ino(InodeNo::ROOT, name.as_bytes()).unwrap())
                .unwrap();
            assert_eq!(
                &eb[0x28..0x64],
                &kb[0x28..0x64],
                "{name} {dev_no:?}: i_block"
            );
            assert_eq!(&eb[0x20..0x24], &kb[0x20..0x24], "{name}: i_flags");
        }
    }
    let m = KernelMount::ro(&eimg.0).unwrap();
    for (i, &(a, b)) in devs.iter().enumerate() {
        let md = std::fs::symlink_metadata(m.path().join(format!("c{i}"))).unwrap();
        assert_eq!(md.rdev(), libc::makedev(a, b));
    }
    m.unmount().unwrap();
}

/// One rename case: from, to, flags.
type Case = (&'static str, &'static str, u32);

const RENAMES: &[Case] = &[
    ("a", "a/b/x", 0),
    ("a", "a/b", 0),
    ("a/b", "a", 0),
    ("a/b", "a", RENAME_EXCHANGE),
    ("a", "a/b", RENAME_EXCHANGE),
    ("e", "n", 0),
    ("e", "g", 0),
    ("g", "e", 0),
    ("g", "h", 0),
    ("g", "h", RENAME_NOREPLACE),
    ("g", "zz", RENAME_EXCHANGE),
    ("zz", "g", 0),
    ("e", "a/b/c", 0),
    ("s", "n/x", RENAME_EXCHANGE),
    ("n", "a/b/n2", 0),
    ("a/b/n2", "n", RENAME_NOREPLACE),
    ("a/f", "a/f", 0),
    ("g", "g2", RENAME_NOREPLACE),
    ("g2", "a/b/n2/x", 0),
    ("a/b", "e2", 0),
    ("e2", "a", RENAME_EXCHANGE),
    ("e2", "a/f", RENAME_EXCHANGE),
    ("a", "e2/c", 0),
];

/// The same tree, the same renames, on the kernel's mount and through
/// the engine: every answer (success or errno) and the final trees agree.
#[test]
fn rename_as_the_kernel() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    let base = fresh(4096, "", "16M", &[]);
    let kimg = Scratch::new("rename-kernel", &base);
    let mut kres = Vec::new();
    {
        let m = KernelMount::mount(&kimg.0, false, "").unwrap();
        let r = m.path();
        std::fs::create_dir_all(r.join("a/b/c")).unwrap();
        std::fs::create_dir(r.join("e")).unwrap();
        std::fs::create_dir(r.join("n")).unwrap();
        std::fs::write(r.join("n/x"), b"x").unwrap();
        std::fs::write(r.join("a/f"), b"f").unwrap();
        std::fs::write(r.join("g"), b"g").unwrap();
        std::fs::hard_link(r.join("g"), r.join("h")).unwrap();
        std::os::unix::fs::symlink("target", r.join("s")).unwrap();
        for &(from, to, flags) in RENAMES {
            let (a, b) = (cpath(&r.join(from)), cpath(&r.join(to)));
            // SAFETY: valid paths; renameat2 has no other preconditions.
            let rc = unsafe {
                libc::renameat2(
                    libc::AT_FDCWD,
                    a.as_ptr(),
                    libc::AT_FDCWD,
                    b.as_ptr(),
                    flags,
                )
            };
            kres.push(if rc == 0 {
                0
            } else {
                std::io::Error::last_os_error().raw_os_error().unwrap()
            });
        }
        m.unmount().unwrap();
    }
    let (vol, dev) = open_rw(base, &rw_options());
    let c = Cred::ROOT;
    let root = InodeNo::ROOT;
    let a = vol.mkdir(root, b"a", 0o755, &c).unwrap().ino;
    let b = vol.mkdir(a, b"b", 0o755, &c).unwrap().ino;
    vol.mkdir(b, b"c", 0o755, &c).unwrap();
    vol.mkdir(root, b"e", 0o755, &c).unwrap();
    let n = vol.mkdir(root, b"n", 0o755, &c).unwrap().ino;
    let x = vol.create(n, b"x", 0o644, &c).unwrap();
    vol.write(x.ino, 0, b"x", &c).unwrap();
    let f = vol.create(a, b"f", 0o644, &c).unwrap();
    vol.write(f.ino, 0, b"f", &c).unwrap();
    let g = vol.create(root, b"g", 0o644, &c).unwrap();
    vol.write(g.ino, 0, b"g", &c).unwrap();
    vol.link(g.ino, root, b"h", &c).unwrap();
    vol.symlink(root, b"s", b"target", &c).unwrap();
    // Resolve a path by lookups: (parent, last name).
    let split = |p: &str| -> Result<(InodeNo, Vec<u8>), Error> {
        let mut dir = InodeNo::ROOT;
        let parts: Vec<&str> = p.split('/').collect();
        for comp in &parts[..parts.len() - 1] {
            dir = vol.lookup_ino(dir, comp.as_bytes())?;
        }
        Ok((dir, parts[parts.len() - 1].as_bytes().to_vec()))
    };
    let mut eres = Vec::new();
    for &(from, to, flags) in RENAMES {
        let r = split(from).and_then(|(d1, n1)| {
            let (d2, n2) = split(to)?;
            vol.rename(d1, &n1, d2, &n2, flags, &c)
        });
        eres.push(r.err().map_or(0, |e| e.errno()));
    }
    vol.close().unwrap();
    drop(vol);
    let named: Vec<String> = RENAMES
        .iter()
        .zip(kres.iter().zip(&eres))
        .map(|((f, t, fl), (k, e))| format!("{f} -> {t} ({fl}): kernel {k}, engine {e}"))
        .collect();
    assert_eq!(eres, kres, "answers differ:\n{}", named.join("\n"));
    let eimg = Scratch::new("rename-engine", &dev.snapshot());
    check_fsck(&eimg.0).unwrap();
    same_to_the_kernel(
        &kimg.0,
        &eimg.0,
        &[
            Field::Kind,
            Field::Mode,
            Field::Nlink,
            Field::Link,
            Field::Content,
        ],
        "kernel's renames vs ours",
    );
}

/// 65,000 links to a file, then EMLINK, as the kernel answers; a
/// directory with more than 65,000 subdirectories counts 1 link
/// (`dir_nlink`), and keeps 1 as some go, as the kernel's.
#[test]
fn link_limits_as_the_kernel() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    const SUBDIRS: u32 = 65_003;
    let base = fresh(1024, "", "160M", &["-N", "70000", "-I", "128"]);
    let kimg = Scratch::new("links-kernel", &base);
    let (k_emlink, k_nlink, k_after);
    {
        let m = KernelMount::mount(&kimg.0, false, "").unwrap();
        let r = m.path();
        std::fs::create_dir(r.join("l")).unwrap();
        std::fs::write(r.join("l/f"), b"").unwrap();
        for i in 1..65_000 {
            std::fs::hard_link(r.join("l/f"), r.join(format!("l/{i}"))).unwrap();
        }
        k_emlink = errno_of(std::fs::hard_link(r.join("l/f"), r.join("l/over")));
        std::fs::create_dir(r.join("d")).unwrap();
        for i in 0..SUBDIRS {
            std::fs::create_dir(r.join(format!("d/{i}"))).unwrap();
        }
        k_nlink = std::fs::metadata(r.join("d")).unwrap().nlink();
        for i in 0..5 {
            std::fs::remove_dir(r.join(format!("d/{i}"))).unwrap();
        }
        k_after = std::fs::metadata(r.join("d")).unwrap().nlink();
        m.unmount().unwrap();
    }
    let (vol, dev) = open_rw(base, &rw_options());
    let c = Cred::ROOT;
    let l = vol.mkdir(InodeNo::ROOT, b"l", 0o755, &c).unwrap().ino;
    let f = vol.create(l, b"f", 0o644, &c).unwrap().ino;
    for i in 1..65_000 {
        vol.link(f, l, format!("{i}").as_bytes(), &c).unwrap();
    }
    let e_emlink = vol.link(f, l, b"over", &c).err().map_or(0, |e| e.errno());
    let d = vol.mkdir(InodeNo::ROOT, b"d", 0o755, &c).unwrap().ino;
    for i in 0..SUBDIRS {
        vol.mkdir(d, format!("{i}").as_bytes(), 0o755, &c).unwrap();
    }
    let e_nlink = vol.getattr(d).unwrap().nlink as u64;
    for i in 0..5 {
        vol.rmdir(d, format!("{i}").as_bytes()).unwrap();
    }
    let e_after = vol.getattr(d).unwrap().nlink as u64;
    vol.close().unwrap();
    drop(vol);
    assert_eq!(e_emlink, k_emlink, "the 65,001st link");
    assert_eq!(k_emlink, libc::EMLINK);
    assert_eq!(
        (e_nlink, e_after),
        (k_nlink, k_after),
        "past 65,000 subdirectories"
    );
    assert_eq!(k_nlink, 1);
    let eimg = Scratch::new("links-engine", &dev.snapshot());
    check_fsck(&eimg.0).unwrap();
    let m = KernelMount::ro(&eimg.0).unwrap();
    assert_eq!(std::fs::metadata(m.path().join("d")).unwrap().nlink(), 1);
    assert_eq!(
        std::fs::metadata(m.path().join("l/f")).unwrap().nlink(),
        65_000
    );
    m.unmount().unwrap();
}

/// `indirect_levels` of hashed directory `path` as debugfs reads it.
fn htree_levels(img: &Path, path: &str) -> u32 {
    let out = debugfs(img, &format!("htree {path}")).unwrap();
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Indirect levels: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no htree in debugfs output:\n{}",
                &out[..out.len().min(2000)]
            )
        })
}

/// 1 KiB blocks, 255-byte names (three per leaf): with `large_dir` the
/// tree grows to three index levels; without, the engine answers ENOSPC
/// when the two levels are full, as the kernel does. e2fsck and the
/// kernel (every name listed, a sample looked up) agree; then a third of
/// the names go and others move, and they agree again.
#[test]
fn deep_hash_trees() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    for large_dir in [true, false] {
        let features = if large_dir { "large_dir" } else { "" };
        let (vol, dev) = open_rw(fresh(1024, features, "64M", &["-N", "2048"]), &rw_options());
        let c = Cred::ROOT;
        let d = vol.mkdir(InodeNo::ROOT, b"deep", 0o755, &c).unwrap().ino;
        let files: Vec<InodeNo> = (0..4)
            .map(|i| {
                vol.create(InodeNo::ROOT, format!("f{i}").as_bytes(), 0o644, &c)
                    .unwrap()
                    .ino
            })
            .collect();
        let name = |i: u32| format!("{i:07}-{}", "n".repeat(247)).into_bytes();
        let mut count = 0u32;
        // The root's `indirect_levels`, as committed and written home.
        let levels = |v: &Volume<std::sync::Arc<MemDevice>>| -> u8 {
            v.commit().unwrap();
            v.checkpoint().unwrap();
            let inode = v.inode(d).unwrap();
            let ext4_engine::Run::Mapped { pblk, .. } = v.map_block(&inode, FileBlock(0)).unwrap()
            else {
                panic!("no block 0");
            };
            let mut b = [0u8; 1];
            ext4_engine::BlockDevice::read_at(v.device().as_ref(), pblk.0 * 1024 + 24 + 6, &mut b)
                .unwrap();
            b[0]
        };
        loop {
            match vol.link(files[(count % 4) as usize], d, &name(count), &c) {
                Ok(_) => count += 1,
                Err(Error::NoSpace) if !large_dir => break,
                Err(e) => panic!("link {count}: {e}"),
            }
            if large_dir && count.is_multiple_of(512) && levels(&vol) == 2 {
                break;
            }
            assert!(count < 200_000, "the tree never grew");
        }
        assert_eq!(levels(&vol) as u32, if large_dir { 2 } else { 1 });
        vol.close().unwrap();
        drop(vol);
        let img = Scratch::new("deep-htree", &dev.snapshot());
        check_fsck(&img.0).unwrap();
        assert_eq!(htree_levels(&img.0, "deep"), if large_dir { 2 } else { 1 });
        // The kernel lists and finds them.
        {
            let m = KernelMount::ro(&img.0).unwrap();
            let listed = std::fs::read_dir(m.path().join("deep")).unwrap().count();
            assert_eq!(listed as u32, count);
            for i in (0..count).step_by(97) {
                let p = m
                    .path()
                    .join("deep")
                    .join(std::ffi::OsStr::from_bytes(&name(i)));
                std::fs::symlink_metadata(&p).unwrap();
            }
            m.unmount().unwrap();
        }
        // A third go; some move to another directory; new ones come.
        let (vol, dev) = open_rw(dev.snapshot(), &rw_options());
        let other = vol.mkdir(InodeNo::ROOT, b"other", 0o755, &c).unwrap().ino;
        for i in (0..count).step_by(3) {
            vol.unlink(d, &name(i)).unwrap();
        }
        let gone = |i: u32| i.is_multiple_of(3);
        let moved = |i: u32| !gone(i) && i % 7 == 1;
        let renamed = |i: u32| !gone(i) && !moved(i) && i % 11 == 2;
        for i in (0..count).filter(|&i| moved(i)) {
            vol.rename(d, &name(i), other, &name(i), 0, &c).unwrap();
        }
        // A full two-level tree may have no room for a new name (ENOSPC,
        // as the kernel's "index full").
        let mut done = Vec::new();
        for i in (0..count).filter(|&i| renamed(i)) {
            match vol.rename(d, &name(i), d, &name(count + i), 0, &c) {
                Ok(()) => done.push(i),
                Err(Error::NoSpace) if !large_dir => {}
                Err(e) => panic!("large_dir {large_dir}: rename {i}: {e}"),
            }
        }
        assert!(done.len() > 100, "renames within the tree: {}", done.len());
        vol.close().unwrap();
        drop(vol);
        let img = Scratch::new("deep-htree-after", &dev.snapshot());
        check_fsck(&img.0).unwrap();
        let e = ext4_tests::open_engine(&img.0).unwrap();
        let mut want = 0;
        e.readdir(d, 0, &mut |_| {
            want += 1;
            true
        })
        .unwrap();
        let m = KernelMount::ro(&img.0).unwrap();
        let listed = std::fs::read_dir(m.path().join("deep")).unwrap().count();
        assert_eq!(listed + 2, want, "kernel and engine list the same names");
        for &i in done.iter().step_by(5) {
            let p = m
                .path()
                .join("deep")
                .join(std::ffi::OsStr::from_bytes(&name(count + i)));
            std::fs::symlink_metadata(&p).unwrap();
        }
        m.unmount().unwrap();
    }
}

/// The kernel makes a big hashed directory (1 KiB blocks, two index
/// levels); the engine removes, renames and adds thousands of names in
/// it; the kernel sees exactly what the engine does and e2fsck is clean;
/// then the kernel changes it further and e2fsck is still clean.
#[test]
fn kernel_hash_tree_both_ways() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    let img = tempfile_path("kernel-htree").with_extension("img");
    kw_mkfs(&img, 1024, "", "48M");
    {
        let m = KernelMount::mount(&img, false, "").unwrap();
        std::fs::create_dir(m.path().join("big")).unwrap();
        std::fs::create_dir(m.path().join("side")).unwrap();
        for i in 0..12_000 {
            std::fs::write(
                m.path()
                    .join(format!("big/kernel-{i:05}-{}", "p".repeat(i % 50))),
                b"",
            )
            .unwrap();
        }
        m.unmount().unwrap();
    }
    assert_eq!(
        htree_levels(&img, "big"),
        1,
        "the kernel built two index levels"
    );
    let (vol, dev) = open_rw(std::fs::read(&img).unwrap(), &rw_options());
    let c = Cred::ROOT;
    let big = vol.lookup_ino(InodeNo::ROOT, b"big").unwrap();
    let side = vol.lookup_ino(InodeNo::ROOT, b"side").unwrap();
    let kname = |i: usize| format!("kernel-{i:05}-{}", "p".repeat(i % 50)).into_bytes();
    for i in (0..12_000).step_by(3) {
        vol.unlink(big, &kname(i)).unwrap();
    }
    for i in (1..12_000).step_by(6) {
        vol.rename(big, &kname(i), side, format!("moved-{i}").as_bytes(), 0, &c)
            .unwrap();
    }
    for i in 0..3000 {
        vol.create(
            big,
            format!("engine-{i}-{}", "q".repeat(i % 70)).as_bytes(),
            0o600,
            &c,
        )
        .unwrap();
    }
    vol.close().unwrap();
    drop(vol);
    std::fs::write(&img, dev.snapshot()).unwrap();
    check_fsck(&img).unwrap();
    {
        use ext4_tests::snapshot::engine_snapshot;
        let walk = WalkOptions {
            content: false,
            data_map: false,
            ioctls: false,
        };
        let m = KernelMount::ro(&img).unwrap();
        let k = host_snapshot(m.path(), walk);
        m.unmount().unwrap();
        let e = engine_snapshot(&ext4_tests::open_engine(&img).unwrap(), walk);
        let cmp = Compare {
            fields: &[
                Field::Kind,
                Field::Mode,
                Field::Nlink,
                Field::Ino,
                Field::Ctime,
                Field::Mtime,
            ],
            ignore_dir_size: false,
            ignore_paths: &[],
        };
        let d = diff(&k, &e, &cmp);
        assert!(d.is_empty(), "{}", format_diffs("kernel vs engine", &d, 20));
        // The root, lost+found, big, side, and the names.
        assert_eq!(k.entries.len(), 4 + 12_000 - 4000 + 3000);
    }
    {
        let m = KernelMount::mount(&img, false, "").unwrap();
        for i in 0..1000 {
            std::fs::write(m.path().join(format!("big/again-{i}")), b"").unwrap();
        }
        for i in (0..3000).step_by(2) {
            std::fs::remove_file(
                m.path()
                    .join(format!("big/engine-{i}-{}", "q".repeat(i % 70))),
            )
            .unwrap();
        }
        m.unmount().unwrap();
    }
    check_fsck(&img).unwrap();
    let _ = std::fs::remove_file(&img);
}

/// A hash-tree node whose checksum fails: adding a name there is refused
/// with an error naming the directory, and nothing on the device changes;
/// the rest of the volume keeps working.
#[test]
fn damaged_hash_tree_refuses_cleanly() {
    if !require_e2fsprogs() {
        return;
    }
    let (vol, dev) = open_rw(fresh(1024, "", "16M", &[]), &rw_options());
    let c = Cred::ROOT;
    let d = vol.mkdir(InodeNo::ROOT, b"h", 0o755, &c).unwrap().ino;
    for i in 0..600 {
        vol.create(d, format!("name-{i:04}").as_bytes(), 0o644, &c)
            .unwrap();
    }
    vol.close().unwrap();
    drop(vol);
    let mut bytes = dev.snapshot();
    // Block 0 of the directory is its hash-tree root: damage an entry's
    // hash (its checksum no longer matches).
    let probe = Volume::open(MemDevice::from_vec(bytes.clone()), &OpenOptions::default()).unwrap();
    let inode = probe.inode(d).unwrap();
    assert!(inode.has_flag(inode_flags::INDEX));
    let pblk = match probe.map_block(&inode, FileBlock(0)).unwrap() {
        ext4_engine::Run::Mapped { pblk, .. } => pblk,
        _ => panic!("no block 0"),
    };
    bytes[pblk.0 as usize * 1024 + 32 + 8] ^= 0x40;
    drop(probe);
    let (vol, dev) = open_rw(bytes, &rw_options());
    let before = dev.snapshot();
    let r = vol.create(d, b"one-more", 0o644, &c);
    assert!(
        matches!(r, Err(Error::Checksum { .. }) | Err(Error::Corrupt { .. })),
        "a damaged tree refuses new names: {r:?}"
    );
    vol.commit().unwrap();
    assert!(
        dev.snapshot() == before,
        "the refused create changed the device"
    );
    // Elsewhere, all is well.
    vol.create(InodeNo::ROOT, b"elsewhere", 0o644, &c).unwrap();
    assert!(
        vol.lookup_ino(d, b"name-0007").is_ok(),
        "lookups fall back to a scan"
    );
    vol.close().unwrap();
}

/// An inode with no links read by number is gone (ESTALE, as the
/// kernel's iget answers), and a name that still points at it is damage
/// in its directory.
#[test]
fn deleted_inodes_read_as_gone() {
    if !require_e2fsprogs() {
        return;
    }
    let img = tempfile_path("deleted-inode").with_extension("img");
    std::fs::write(&img, fresh(4096, "", "8M", &[])).unwrap();
    let src = tempfile_path("victim-src");
    std::fs::write(&src, b"contents").unwrap();
    let w = ext4_tests::oracle::debugfs_script(
        &img,
        &[
            format!("write {} victim", src.display()),
            "sif victim links_count 0".to_string(),
        ],
        true,
    );
    let _ = std::fs::remove_file(&src);
    w.unwrap();
    let vol = ext4_tests::open_engine(&img).unwrap();
    let ino = vol.lookup_ino(InodeNo::ROOT, b"victim").unwrap();
    assert_eq!(vol.getattr(ino), Err(Error::Stale));
    assert!(matches!(
        vol.lookup(InodeNo::ROOT, b"victim"),
        Err(Error::Corrupt { .. })
    ));
    let _ = std::fs::remove_file(&img);
}

/// Inline-data directories, changed the same way by the kernel and by
/// the engine: after every name added, the directory's size and block
/// count are the kernel's (60 bytes in `i_block`, then `system.data`
/// grown to the room the body has — less an xattr set there first —
/// then a block of its own); an inline directory moved to another
/// parent (its ".." in `i_block`), names renamed into and out of inline
/// directories, an empty inline directory removed. The trees agree, the
/// kernel reads ours, e2fsck is clean on both.
#[test]
fn inline_directories_as_the_kernel() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    let base = fresh(4096, "inline_data", "16M", &["-I", "256"]);
    let names: Vec<String> = (0..14).map(|i| format!("n-{i:02}")).collect();
    let small = [7u8; 8];
    // The kernel's side.
    let kimg = Scratch::new("inline-dir-kernel", &base);
    let mut ksizes = Vec::new();
    {
        let m = KernelMount::mount(&kimg.0, false, "").unwrap();
        let r = m.path();
        let a = r.join("a");
        std::fs::create_dir(&a).unwrap();
        let set = |p: &Path, v: &[u8]| {
            let (p, n) = (cpath(p), CString::new("user.x").unwrap());
            // SAFETY: valid strings and buffer.
            let rc =
                unsafe { libc::setxattr(p.as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
            assert_eq!(rc, 0, "kernel setxattr");
        };
        set(&a, &small);
        let size = |p: &Path| {
            let md = std::fs::metadata(p).unwrap();
            (md.len(), md.blocks())
        };
        ksizes.push(size(&a));
        for n in &names {
            std::fs::write(a.join(n), b"").unwrap();
            ksizes.push(size(&a));
        }
        std::fs::create_dir_all(r.join("b/c")).unwrap();
        std::fs::create_dir(r.join("d")).unwrap();
        std::fs::write(r.join("b/f"), b"").unwrap();
        std::fs::rename(r.join("b/c"), r.join("d/c")).unwrap();
        std::fs::rename(r.join("a/n-00"), r.join("b/m")).unwrap();
        std::fs::rename(r.join("b/f"), r.join("d/f2")).unwrap();
        std::fs::remove_file(r.join("b/m")).unwrap();
        std::fs::create_dir(r.join("d/e")).unwrap();
        std::fs::remove_dir(r.join("d/e")).unwrap();
        for d in ["b", "d", "d/c"] {
            ksizes.push(size(&r.join(d)));
        }
        m.unmount().unwrap();
    }
    // The engine's.
    let (vol, dev) = open_rw(base, &rw_options());
    let c = Cred::ROOT;
    let root = InodeNo::ROOT;
    let dir_size = |v: &Volume<std::sync::Arc<MemDevice>>, i: InodeNo| {
        let at = v.getattr(i).unwrap();
        (at.size, at.blocks)
    };
    let a = vol.mkdir(root, b"a", 0o755, &c).unwrap().ino;
    vol.setxattr(a, b"user.x", &small, 0, &c).unwrap();
    let mut esizes = vec![dir_size(&vol, a)];
    for n in &names {
        vol.create(a, n.as_bytes(), 0o644, &c).unwrap();
        esizes.push(dir_size(&vol, a));
    }
    let b = vol.mkdir(root, b"b", 0o755, &c).unwrap().ino;
    vol.mkdir(b, b"c", 0o755, &c).unwrap();
    let d = vol.mkdir(root, b"d", 0o755, &c).unwrap().ino;
    vol.create(b, b"f", 0o644, &c).unwrap();
    vol.rename(b, b"c", d, b"c", 0, &c).unwrap();
    vol.rename(a, b"n-00", b, b"m", 0, &c).unwrap();
    vol.rename(b, b"f", d, b"f2", 0, &c).unwrap();
    vol.unlink(b, b"m").unwrap();
    vol.mkdir(d, b"e", 0o755, &c).unwrap();
    vol.rmdir(d, b"e").unwrap();
    let dc = vol.lookup_ino(d, b"c").unwrap();
    for i in [b, d, dc] {
        esizes.push(dir_size(&vol, i));
    }
    vol.close().unwrap();
    drop(vol);
    assert_eq!(esizes, ksizes, "(size, blocks) of the directories");
    assert!(
        ksizes[0] == (60, 0) && ksizes.last().unwrap().1 == 0,
        "the kernel made inline directories: {ksizes:?}"
    );
    assert!(
        ksizes.iter().any(|&(s, b)| s > 60 && b == 0),
        "system.data grew: {ksizes:?}"
    );
    assert!(
        ksizes[..=names.len()].iter().any(|&(_, b)| b > 0),
        "a directory moved into a block: {ksizes:?}"
    );
    let eimg = Scratch::new("inline-dir-engine", &dev.snapshot());
    check_fsck(&eimg.0).unwrap();
    check_fsck(&kimg.0).unwrap();
    same_to_the_kernel(
        &kimg.0,
        &eimg.0,
        &[
            Field::Kind,
            Field::Mode,
            Field::Nlink,
            Field::Size,
            Field::Blocks,
            Field::Flags,
            Field::Xattrs,
            Field::Content,
        ],
        "the kernel's inline directories vs ours",
    );
    // ".." of the moved inline directory.
    let e = ext4_tests::open_engine(&eimg.0).unwrap();
    let dc = e
        .lookup_ino(e.lookup_ino(InodeNo::ROOT, b"d").unwrap(), b"c")
        .unwrap();
    assert_eq!(
        e.lookup_ino(dc, b"..").unwrap(),
        e.lookup_ino(InodeNo::ROOT, b"d").unwrap()
    );
}
