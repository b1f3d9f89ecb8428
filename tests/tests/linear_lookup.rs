//! Lookups in big linear directories (no hash tree: what `mke2fs -d`, ext2
//! and directories that grew before `dir_index` have), on every row of the
//! feature matrix: every name `debugfs ls` lists is found, with the inode
//! number it gives, looked up in directory order, in reverse and in random
//! order; names that are not there are not found; and the directory
//! blocks read per lookup stay bounded (counted through the block cache,
//! not timed). A listing resumed at every cookie reads each block about
//! once, and lists what debugfs lists, in its order.
//!
//! Building: `mke2fs -d` (e2fsprogs 1.47.0) scans a linear directory for
//! every name it adds, so a 100,000-entry directory would take it about
//! half an hour per image (measured: 10,000 entries 11 s, 20,000 58 s).
//! So the image is made by outside tools in steps, each fast:
//! `mke2fs -d` writes the row's filesystem with the directory's first
//! names, `e2fsck -fyD` indexes it, the kernel's ext4 adds the other names
//! (through the hash tree), `tune2fs -O ^dir_index` + `e2fsck -fyD` rewrite
//! it linear and `tune2fs -O dir_index` restores the row's features (the
//! directory stays linear, as one that grew before the feature was on);
//! then the kernel removes and adds names, leaving holes and reused slots
//! as a directory in use has. `e2fsck -fn` must pass. Where the kernel
//! cannot mount the block size (64 KiB blocks on 4 KiB pages), `mke2fs -d`
//! writes a smaller directory directly (said loudly).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use ext4_engine::FileDevice;
use ext4_engine::{inode_flags, Error, InodeNo, OpenOptions, Volume};
use ext4_tests::image::{matrix_spec, ImageSpec};
use ext4_tests::oracle::{assert_fsck_clean, debugfs_ls, mke2fs_version, KernelMount};
use ext4_tests::rng::Rng;
use ext4_tests::util::{cached_build, fnv64, require_e2fsprogs, require_kernel_ext4, run, run_ok};

/// Entries the kernel-built directory gets (before removals).
const ENTRIES: usize = 100_000;
/// What `mke2fs -d` writes itself: the first names (all of them where the
/// kernel cannot help).
const MKE2FS_ENTRIES: usize = 1_000;
/// mke2fs -d's time grows with the square of this: 8,000 took ~1 minute.
const MKE2FS_ONLY_ENTRIES: usize = 5_000;
/// Names the kernel removes, then adds, in the finished directory.
const REMOVED: usize = 2_000;
const ADDED: usize = 300;
/// Bumped when the way images are built changes (invalidates the cache).
const BUILD_VERSION: u32 = 1;

/// Names of varied lengths (4 to ~60 bytes), like a man page directory's.
fn names(count: usize, seed: u64) -> Vec<String> {
    let mut r = Rng::new(seed);
    let syll = [
        "ab", "ex", "ker", "lo", "man", "qu", "ri", "st", "tar", "un", "vi", "zo", "get", "set",
        "x", "py",
    ];
    let ext = ["", ".1", ".1.gz", ".3perl.gz", ".txt", ".py", ".h", "-dev"];
    (0..count)
        .map(|i| {
            let mut s = String::new();
            for _ in 0..r.range(1, 12) {
                s.push_str(r.pick::<&str>(&syll));
            }
            // The index keeps names unique.
            format!("{s}{i:x}{}", *r.pick::<&str>(&ext))
        })
        .collect()
}

/// Room for the inodes: a group has at most 8 x block size of them, and
/// with bigalloc a group spans 8 x block size clusters (512 MiB here).
fn image_size_mib(spec: &ImageSpec) -> u64 {
    let per_group = 8 * spec.block_size as u64;
    let groups = (ENTRIES + ADDED + 1000) as u64 / per_group + 1;
    let group_bytes = per_group * spec.cluster_size.unwrap_or(spec.block_size) as u64;
    spec.size_mib.max(512).max((groups * group_bytes) >> 20)
}

fn mke2fs(spec: &ImageSpec, src: &Path, img: &Path, inodes: u64) {
    let mut c = spec.mke2fs(inodes);
    c.arg("-d")
        .arg(src)
        .arg(img)
        .arg(format!("{}M", image_size_mib(spec)));
    run_ok(&mut c);
}

/// `e2fsck -fyD`: rebuild (and, with dir_index, index) every directory.
fn rehash(img: &Path) {
    e2fsck(img, "-fyD");
}

/// `e2fsck FLAGS IMG`: 0 or 1 (something fixed or rebuilt) is success.
fn e2fsck(img: &Path, flags: &str) {
    let mut c = Command::new("e2fsck");
    c.arg(flags).arg(img);
    let out = run(&mut c);
    let code = out.status.code().unwrap_or(-1);
    assert!(
        code == 0 || code == 1,
        "e2fsck {flags} exited {code}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn tune2fs(img: &Path, features: &str) {
    run_ok(Command::new("tune2fs").arg("-O").arg(features).arg(img));
}

/// The image of `spec` with `/big` linear and big, from the cache or
/// built now.
fn build(spec: &ImageSpec) -> PathBuf {
    let key = fnv64(
        format!(
            "{BUILD_VERSION}|{ENTRIES}|{MKE2FS_ONLY_ENTRIES}|{spec:?}|{}",
            mke2fs_version()
        )
        .as_bytes(),
    );
    let row = format!("linear-{}", spec.name);
    let dir = cached_build(&row, key, |dir| fill(spec, dir));
    dir.join("image.img")
}

/// Build the image of `spec` into the cache directory `dir`.
fn fill(spec: &ImageSpec, dir: &Path) {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("big")).unwrap();
    let all = names(ENTRIES, 15);
    let tmp = dir.join("image.tmp");
    if !spec.kernel_mountable() {
        eprintln!(
            "\n*** NOTE: {}: the kernel cannot mount {}-byte blocks; /big has the {MKE2FS_ONLY_ENTRIES} \
             entries mke2fs -d writes in reasonable time, not {ENTRIES} ***\n",
            spec.name, spec.block_size
        );
        for n in &all[..MKE2FS_ONLY_ENTRIES] {
            std::fs::write(src.join("big").join(n), b"").unwrap();
        }
        mke2fs(spec, &src, &tmp, (MKE2FS_ONLY_ENTRIES + 1000) as u64);
    } else {
        for n in &all[..MKE2FS_ENTRIES] {
            std::fs::write(src.join("big").join(n), b"").unwrap();
        }
        mke2fs(spec, &src, &tmp, (ENTRIES + ADDED + 1000) as u64);
        rehash(&tmp);
        {
            let m = KernelMount::mount(&tmp, false, "").expect("kernel mount");
            let big = m.path().join("big");
            for n in &all[MKE2FS_ENTRIES..] {
                std::fs::write(big.join(n), b"").unwrap();
            }
            m.unmount().expect("unmount");
        }
        // tune2fs changes dir_index only on a filesystem checked since its
        // last mount; rehash's check counted only while the mount fell in
        // the same second, so the build failed on a loaded machine.
        e2fsck(&tmp, "-fy");
        tune2fs(&tmp, "^dir_index");
        rehash(&tmp);
        tune2fs(&tmp, "dir_index");
        let m = KernelMount::mount(&tmp, false, "").expect("kernel mount");
        let big = m.path().join("big");
        let mut r = Rng::new(7);
        for _ in 0..REMOVED {
            let _ = std::fs::remove_file(big.join(r.pick(&all)));
        }
        for n in names(ADDED, 16) {
            std::fs::write(big.join(format!("added-{n}")), b"").unwrap();
        }
        m.unmount().expect("unmount");
    }
    assert_fsck_clean(&tmp);
    let _ = std::fs::remove_dir_all(&src);
    std::fs::rename(&tmp, dir.join("image.img")).unwrap();
}

fn open(img: &Path, name_index_bytes: usize) -> Volume<FileDevice> {
    let opts = OpenOptions {
        name_index_bytes,
        ..OpenOptions::default()
    };
    Volume::open(FileDevice::open(img, true).unwrap(), &opts).unwrap()
}

/// Block reads (hits and misses) the volume's cache has served.
fn reads(v: &Volume<FileDevice>) -> u64 {
    let s = v.cache_stats();
    s.hits + s.misses
}

/// Look every `(ino, name)` up in `order`; returns the block reads.
fn lookups(v: &Volume<FileDevice>, dir: InodeNo, list: &[(u64, Vec<u8>)], order: &[usize]) -> u64 {
    let before = reads(v);
    for &i in order {
        let (ino, name) = &list[i];
        match v.lookup_ino(dir, name) {
            Ok(got) => assert_eq!(
                got.0 as u64,
                *ino,
                "{}: engine and debugfs disagree",
                String::from_utf8_lossy(name)
            ),
            Err(e) => panic!("{}: {e}", String::from_utf8_lossy(name)),
        }
    }
    reads(v) - before
}

fn check(name: &str) {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    let spec = matrix_spec(name);
    let img = build(spec);
    let ls = debugfs_ls(&img, "/big").expect("debugfs ls /big");
    let list: Vec<(u64, Vec<u8>)> = ls.into_iter().map(|e| (e.ino, e.name)).collect();
    let min = if spec.kernel_mountable() {
        ENTRIES - REMOVED
    } else {
        MKE2FS_ONLY_ENTRIES
    };
    assert!(list.len() >= min, "debugfs lists {} entries", list.len());

    let v = open(&img, OpenOptions::default().name_index_bytes);
    let dir = v.lookup_ino(InodeNo::ROOT, b"big").unwrap();
    let attr = v.getattr(dir).unwrap();
    let nblocks = attr.size / spec.block_size as u64;
    let raw = v.inode(dir).unwrap();
    assert!(
        !raw.has_flag(inode_flags::INDEX),
        "/big has a hash tree: the test needs a linear directory"
    );

    // A listing resumed after every 97 entries: what debugfs lists, in its
    // order, each block read about once (plus the block each resume
    // starts in and its block map).
    let before = reads(&v);
    let (mut cookie, mut listed, mut calls) = (0u64, Vec::new(), 0u64);
    loop {
        let mut n = 0;
        calls += 1;
        v.readdir(dir, cookie, &mut |e| {
            if n == 97 {
                return false;
            }
            n += 1;
            cookie = e.next;
            listed.push((e.ino.0 as u64, e.name.to_vec()));
            true
        })
        .unwrap();
        if n < 97 {
            break;
        }
    }
    let readdir_reads = reads(&v) - before;
    assert_eq!(listed, list, "readdir and debugfs ls list differently");
    assert!(
        readdir_reads <= 2 * nblocks + 3 * calls,
        "a resumed listing read {readdir_reads} blocks for {nblocks} blocks in {calls} calls"
    );

    // Every order, through the name index (the first lookup builds it).
    let n = list.len();
    let forward: Vec<usize> = (0..n).collect();
    let reverse: Vec<usize> = (0..n).rev().collect();
    let mut random = forward.clone();
    let mut r = Rng::new(name.len() as u64);
    for i in (1..n).rev() {
        random.swap(i, r.below(i as u64 + 1) as usize);
    }
    // (The root may have an index of its own, where blocks are big.)
    let before = v.name_index_stats();
    let first = lookups(&v, dir, &list, &random[..1]);
    assert!(
        first <= nblocks + nblocks / 8 + 16,
        "the first lookup read {first} blocks of {nblocks}"
    );
    for (what, order) in [
        ("random", &random),
        ("directory", &forward),
        ("reverse", &reverse),
    ] {
        let got = lookups(&v, dir, &list, order);
        let per = got as f64 / n as f64;
        eprintln!("{name}: {what} order: {per:.2} block reads per lookup ({nblocks} blocks)");
        assert!(
            per <= 3.0,
            "{what} order: {per:.2} block reads per lookup in a {nblocks}-block directory"
        );
    }
    let st = v.name_index_stats();
    assert_eq!(st.builds - before.builds, 1, "{st:?}");
    assert_eq!(
        st.entries - before.entries,
        n,
        "the index holds every entry"
    );

    // Names that are not there: absent ones, and the removed ones.
    let present: HashSet<&[u8]> = list.iter().map(|(_, n)| n.as_slice()).collect();
    let mut absent: Vec<Vec<u8>> = names(300, 99)
        .into_iter()
        .map(|n| format!("absent-{n}").into_bytes())
        .collect();
    absent.extend(
        names(ENTRIES, 15)
            .into_iter()
            .map(String::into_bytes)
            .filter(|n| !present.contains(n.as_slice()))
            .take(300),
    );
    if spec.kernel_mountable() {
        assert!(absent.len() > 300, "no removed names to look for");
    }
    let before = reads(&v);
    for a in &absent {
        assert!(
            matches!(v.lookup_ino(dir, a), Err(Error::NotFound)),
            "{} found",
            String::from_utf8_lossy(a)
        );
    }
    let per = (reads(&v) - before) as f64 / absent.len() as f64;
    assert!(per <= 3.0, "{per:.2} block reads per absent name");
    assert!(
        v.take_reports().is_empty(),
        "damage reported on a clean image"
    );

    // No room for the index: the kernel's rule, a scan from the block of
    // the last hit. In directory order that reads each block about once.
    let v = open(&img, 64 << 10);
    let dir = v.lookup_ino(InodeNo::ROOT, b"big").unwrap();
    let got = lookups(&v, dir, &list, &forward);
    let per = got as f64 / n as f64;
    eprintln!("{name}: directory order without an index: {per:.2} block reads per lookup");
    assert!(
        per <= 3.0,
        "directory order without an index: {per:.2} block reads per lookup"
    );
    assert!(!v.name_indexes().has_index(dir), "no room, yet an index");
    // Other orders still find everything (a sample: each is a scan).
    lookups(&v, dir, &list, &random[..200]);
    lookups(&v, dir, &list, &reverse[..200]);
    // And with no budget at all.
    let v = open(&img, 0);
    let dir = v.lookup_ino(InodeNo::ROOT, b"big").unwrap();
    lookups(&v, dir, &list, &random[..200]);
    assert_eq!(v.name_index_stats().bytes, 0);
}

macro_rules! rows {
    ($($module:ident => $name:literal),* $(,)?) => {
        $(
            #[test]
            fn $module() {
                // The big profile has the ext4 row's features.
                if $name != "ext4-big" {
                    check($name)
                }
            }
        )*
    };
}

ext4_tests::with_matrix_images!(rows);
