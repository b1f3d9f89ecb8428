//! Directory checksums are verified once per cached copy of a block (the
//! block cache's check marks), never skipped for bytes read again from the
//! device: a hashed directory on a `metadata_csum` image (mke2fs -d,
//! indexed by e2fsck -D) is looked up, its blocks' stored checksums are
//! then damaged on the device underneath the volume, and once other lookups have evicted them from a
//! small block cache the same lookups must see the damage. Block numbers
//! come from `debugfs blocks`.
//!
//! Needs `mke2fs`, `e2fsck` and `debugfs` (e2fsprogs).

use std::path::{Path, PathBuf};

use ext4_engine::{
    BlockDevice, Error, FileBlock, InodeNo, MemDevice, Object, OpenOptions, PhysBlock, Volume,
};
use ext4_tests::oracle::{debugfs, debugfs_blocks, e2fsck_index_dirs, mke2fs};
use ext4_tests::util::require_e2fsprogs;

const FILES: usize = 300;
const BS: u64 = 4096;

/// Names long enough that a directory of `FILES` needs several blocks
/// (and so gets a hash tree).
fn name(f: usize) -> String {
    format!("a-file-with-a-longish-name-{f:04}")
}

/// Directories `a` and `b` of `FILES` files each.
fn image(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    let img = dir.join("image.img");
    let _ = std::fs::remove_dir_all(&src);
    for d in ["a", "b"] {
        std::fs::create_dir_all(src.join(d)).unwrap();
        for f in 0..FILES {
            std::fs::write(src.join(d).join(name(f)), b"").unwrap();
        }
    }
    mke2fs(
        &img,
        &["-t", "ext4", "-b", "4096", "-O", "metadata_csum"],
        Some(&src),
        "16M",
    );
    // mke2fs -d writes linear directories; e2fsck -D indexes them.
    e2fsck_index_dirs(&img);
    img
}

/// The physical blocks of `path`, in logical order.
fn blocks(img: &Path, path: &str) -> Vec<u64> {
    debugfs_blocks(img, path).unwrap()
}

/// A volume with a 16-buffer block cache and no inode cache, so lookups
/// elsewhere evict a directory's blocks quickly.
fn open(img: &Path) -> Volume<MemDevice> {
    let opts = OpenOptions {
        cache_bytes: 16 * BS as usize,
        inode_cache_bytes: 0,
        ..OpenOptions::default()
    };
    Volume::open(MemDevice::from_vec(std::fs::read(img).unwrap()), &opts).unwrap()
}

/// Flip the byte at `at` on the device, under the volume's cache.
fn flip(v: &Volume<MemDevice>, at: u64) {
    let mut b = [0u8; 1];
    v.device().read_at(at, &mut b).unwrap();
    b[0] ^= 0xff;
    v.device().write_at(at, &b).unwrap();
}

/// Look up every file of `b` (and getattr it) a few times: enough distinct
/// blocks, each used repeatedly, to push `a`'s blocks out of the cache.
fn churn(v: &Volume<MemDevice>, b: InodeNo) {
    for _ in 0..20 {
        for f in 0..FILES {
            v.lookup(b, name(f).as_bytes()).unwrap();
        }
    }
}

fn setup(name: &str) -> Option<(PathBuf, Volume<MemDevice>, InodeNo, InodeNo)> {
    if !require_e2fsprogs() {
        return None;
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let img = image(&dir);
    let v = open(&img);
    let a = v.lookup_ino(InodeNo::ROOT, b"a").unwrap();
    let b = v.lookup_ino(InodeNo::ROOT, b"b").unwrap();
    Some((img, v, a, b))
}

#[test]
fn damaged_leaf_checksums_are_seen_after_eviction() {
    let Some((img, v, a, _b)) = setup("dir-marks-leaf") else {
        return;
    };
    let leaves = &blocks(&img, "/a")[1..];
    assert!(
        leaves.len() >= 2,
        "a hashed directory with leaves: {leaves:?}"
    );
    // Twice: the second lookup is answered with marks set. Few accesses,
    // so that the cache's replacement does not protect these blocks.
    let probe = [0, FILES / 2, FILES - 1];
    for _ in 0..2 {
        for f in probe {
            v.lookup(a, name(f).as_bytes()).unwrap();
        }
    }
    // The stored checksum sits in the last 4 bytes of a leaf.
    for &l in leaves {
        flip(&v, l * BS + BS - 1);
    }
    // Still cached: the bytes checked are the ones kept.
    v.lookup(a, name(0).as_bytes()).unwrap();
    let b = v.lookup_ino(InodeNo::ROOT, b"b").unwrap();
    churn(&v, b);
    let misses = v.cache_stats().misses;
    for f in probe {
        let r = v.lookup(a, name(f).as_bytes());
        assert!(
            r.is_err(),
            "{} found through a leaf with a bad checksum",
            name(f)
        );
    }
    assert!(v.cache_stats().misses > misses, "a's blocks were evicted");
    assert!(v.take_reports().iter().any(|e| matches!(
        e,
        Error::Checksum {
            object: Object::DirBlock { lblk, .. }
        } if lblk.0 > 0
    )));
}

#[test]
fn damaged_root_checksum_is_seen_after_eviction() {
    let Some((img, v, a, b)) = setup("dir-marks-root") else {
        return;
    };
    let root = blocks(&img, "/a")[0];
    for _ in 0..2 {
        v.lookup(a, name(1).as_bytes()).unwrap();
    }
    // The dx root's checksum follows its entry limit: the tail is at
    // 0x20 (root entries) + limit * 8, checksum 4 bytes in.
    let mut lim = [0u8; 2];
    v.device().read_at(root * BS + 0x20, &mut lim).unwrap();
    let tail = 0x20 + u16::from_le_bytes(lim) as u64 * 8;
    flip(&v, root * BS + tail + 4);
    churn(&v, b);
    let _ = v.take_reports();
    let misses = v.cache_stats().misses;
    // A bad root sends the lookup to a linear scan, which still finds the
    // name; the damage is reported.
    v.lookup(a, name(1).as_bytes()).unwrap();
    assert!(v.cache_stats().misses > misses, "a's blocks were evicted");
    let reports = v.take_reports();
    assert!(
        reports.iter().any(|e| matches!(
            e,
            Error::Checksum {
                object: Object::DirBlock {
                    lblk: FileBlock(0),
                    ..
                }
            }
        )),
        "{reports:?}"
    );
}

/// Extent tree blocks are verified once per cached copy as well (the skip
/// itself shows only as CPU time), never skipped for bytes read again: a
/// linear directory whose blocks `mke2fs -d` placed between its files'
/// data (so its extents need a tree block) is looked up, the tree block's
/// stored checksum is damaged underneath, and once evicted every lookup in
/// the directory fails on it (its blocks are mapped through that node).
#[test]
fn damaged_extent_block_checksum_is_seen_after_eviction() {
    if !require_e2fsprogs() {
        return;
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dir-marks-extent");
    let src = dir.join("src");
    let img = dir.join("image.img");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::create_dir_all(src.join("b")).unwrap();
    for f in 0..2 * FILES {
        std::fs::write(src.join("a").join(name(f)), [7u8; BS as usize]).unwrap();
    }
    for f in 0..FILES {
        std::fs::write(src.join("b").join(name(f)), b"").unwrap();
    }
    mke2fs(
        &img,
        &["-t", "ext4", "-b", "4096", "-O", "metadata_csum"],
        Some(&src),
        "32M",
    );
    let stat = debugfs(&img, "stat /a").unwrap();
    let Some(at) = stat.find("(ETB0):") else {
        panic!("/a has no extent tree block:\n{stat}");
    };
    let etb: u64 = stat[at + 7..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let v = open(&img);
    let a = v.lookup_ino(InodeNo::ROOT, b"a").unwrap();
    let b = v.lookup_ino(InodeNo::ROOT, b"b").unwrap();
    for _ in 0..2 {
        v.lookup(a, name(1).as_bytes()).unwrap();
    }
    // The checksum follows eh_max 12-byte entries after the 12-byte header.
    let mut max = [0u8; 2];
    v.device().read_at(etb * BS + 4, &mut max).unwrap();
    let tail = 12 + u16::from_le_bytes(max) as u64 * 12;
    flip(&v, etb * BS + tail);
    // Still cached: the bytes checked are the ones kept.
    v.lookup(a, name(1).as_bytes()).unwrap();
    churn(&v, b);
    let r = v.lookup(a, name(1).as_bytes());
    assert!(
        matches!(r, Err(Error::Checksum { object: Object::Block(blk) }) if blk == PhysBlock(etb)),
        "{r:?}"
    );
}
