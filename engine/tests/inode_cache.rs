//! The inode cache against outside measures: a counting global allocator
//! says how much heap the cache holds after a walk that touches more inodes
//! than it can keep (at most its budget, and most of it: the budget is
//! used, not just respected), and `debugfs stat` gives every inode's size,
//! mode and link count, which `getattr` must return whether it hits the
//! cache or reads the disk.
//!
//! Needs `mke2fs` and `debugfs` (e2fsprogs).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};

use ext4_engine::test_support::InodeCache;
use ext4_engine::{InodeNo, MemDevice, OpenOptions, Volume};
use ext4_tests::oracle::{self, mke2fs};
use ext4_tests::util::require_e2fsprogs;

struct Counting;

thread_local! {
    static CUR: Cell<isize> = const { Cell::new(0) };
}

fn add(n: isize) {
    let _ = CUR.try_with(|c| c.set(c.get() + n));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        add(l.size() as isize);
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        add(l.size() as isize);
        System.alloc_zeroed(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        add(-(l.size() as isize));
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        add(new as isize - l.size() as isize);
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn heap() -> isize {
    CUR.with(|c| c.get())
}

const DIRS: usize = 10;
const FILES: usize = 300;

/// An image of `DIRS` directories of `FILES` files each (built once per
/// test binary run).
fn image(dir: &Path, inode_size: u32) -> PathBuf {
    let src = dir.join(format!("src-{inode_size}"));
    let img = dir.join(format!("image-{inode_size}.img"));
    let _ = std::fs::remove_dir_all(&src);
    for d in 0..DIRS {
        let p = src.join(format!("d{d}"));
        std::fs::create_dir_all(&p).unwrap();
        for f in 0..FILES {
            std::fs::write(p.join(format!("f{f}")), vec![b'x'; (d * 7 + f) % 50]).unwrap();
        }
    }
    let isz = inode_size.to_string();
    mke2fs(
        &img,
        &["-t", "ext4", "-b", "4096", "-N", "4096", "-I", &isz],
        Some(&src),
        "32M",
    );
    let _ = std::fs::remove_dir_all(&src);
    img
}

fn open(img: &Path, inode_cache_bytes: usize) -> Volume<MemDevice> {
    let opts = OpenOptions {
        inode_cache_bytes,
        ..OpenOptions::default()
    };
    Volume::open(MemDevice::from_vec(std::fs::read(img).unwrap()), &opts).unwrap()
}

/// Every file's inode number, by lookup.
fn all_inos(v: &Volume<MemDevice>) -> Vec<(String, InodeNo)> {
    let mut out = Vec::new();
    for d in 0..DIRS {
        let dn = format!("d{d}");
        let dino = v.lookup_ino(InodeNo::ROOT, dn.as_bytes()).unwrap();
        out.push((format!("/{dn}"), dino));
        for f in 0..FILES {
            let name = format!("f{f}");
            out.push((
                format!("/{dn}/{name}"),
                v.lookup_ino(dino, name.as_bytes()).unwrap(),
            ));
        }
    }
    out
}

#[test]
fn heap_held_stays_within_the_budget_and_uses_it() {
    if !require_e2fsprogs() {
        return;
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("inode-cache-heap");
    std::fs::create_dir_all(&dir).unwrap();
    for inode_size in [128u32, 256, 1024] {
        let img = image(&dir, inode_size);
        // Room for a few hundred inodes: the walk touches 3,010.
        let budget = 96 << 10;
        let v = open(&img, budget);
        let inos = all_inos(&v);
        let cap = v.inode_cache_stats().capacity;
        assert!(cap > 0 && cap < inos.len() / 4, "capacity {cap}");
        // Fill the cache, then measure what a second full pass adds on
        // top: the cache's entries churn, the heap it holds stays put.
        for (_, ino) in &inos {
            v.getattr(*ino).unwrap();
        }
        let full = heap();
        let entries = v.inode_cache_stats().entries;
        for (_, ino) in &inos {
            v.getattr(*ino).unwrap();
        }
        let after = heap();
        assert!(
            (after - full).abs() < 4096,
            "inode size {inode_size}: heap moved by {} bytes over a second pass",
            after - full
        );
        // What the cached inodes hold: drop them all.
        for (_, ino) in &inos {
            v.invalidate_inode(*ino);
        }
        let held = full - heap();
        assert_eq!(v.inode_cache_stats().entries, 0);
        eprintln!(
            "inode size {inode_size}: {entries} of {cap} entries held {held} bytes (budget {budget}, charge {} each)",
            InodeCache::entry_bytes(inode_size)
        );
        assert!(
            held as usize + cap.div_ceil(8) * 128 <= budget,
            "inode size {inode_size}: cached inodes hold {held} bytes, over the budget {budget} with the sets"
        );
        assert!(
            held as usize > budget / 4,
            "inode size {inode_size}: only {held} bytes held of a {budget}-byte budget"
        );
        let _ = std::fs::remove_file(&img);
    }
}

/// `debugfs stat <ino>`: size, permission bits, link count.
fn debugfs_stat(img: &Path, ino: InodeNo) -> (u64, u16, u16) {
    let st = oracle::debugfs_stat(img, &format!("<{ino}>")).unwrap();
    (st.size, st.perm as u16, st.links as u16)
}

#[test]
fn hits_and_misses_agree_with_debugfs() {
    if !require_e2fsprogs() {
        return;
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("inode-cache-debugfs");
    std::fs::create_dir_all(&dir).unwrap();
    let img = image(&dir, 256);
    // A cache smaller than the tree: hits and misses both.
    let v = open(&img, 64 << 10);
    let inos = all_inos(&v);
    // Every inode is asked for (hits and misses interleave), a sample is
    // compared (debugfs is one process per inode): the first 40 inodes,
    // neighbours in the table, and every 23rd.
    let mut oracle = std::collections::HashMap::new();
    for pass in 0..3 {
        for (i, (path, ino)) in inos.iter().enumerate() {
            let a = v.getattr(*ino).unwrap();
            if i >= 40 && i % 23 != 0 {
                continue;
            }
            let (size, mode, links) = *oracle
                .entry(*ino)
                .or_insert_with(|| debugfs_stat(&img, *ino));
            assert_eq!(
                (a.size, (a.mode & 0o7777) as u16, a.nlink),
                (size, mode, links as u32),
                "pass {pass}: {path} (inode {ino})"
            );
        }
    }
    let st = v.inode_cache_stats();
    assert!(st.hits > 0 && st.misses > 0, "{st:?}");
    let _ = std::fs::remove_file(&img);
}

/// Only successful reads are cached: an inode whose record was damaged on
/// the device fails with the same error on every request, and its
/// neighbours in the same inode-table block stay readable.
#[test]
fn damaged_inode_fails_the_same_way_every_time() {
    if !require_e2fsprogs() {
        return;
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("inode-cache-damage");
    std::fs::create_dir_all(&dir).unwrap();
    let img = image(&dir, 256);
    let v = open(&img, 1 << 20);
    let inos = all_inos(&v);
    let (victim_path, victim) = inos[5].clone();
    let (blk, off) = v.inode_location(victim).unwrap();
    let bs = v.sb().block_size as usize;
    drop(v);
    let mut bytes = std::fs::read(&img).unwrap();
    // i_size_lo: the record's checksum no longer matches.
    bytes[blk.0 as usize * bs + off + 4] ^= 0x40;
    let v = Volume::open(MemDevice::from_vec(bytes), &OpenOptions::default()).unwrap();
    let first = v.getattr(victim).map(|a| a.size).unwrap_err().to_string();
    assert!(first.contains("checksum"), "{victim_path}: {first}");
    for _ in 0..3 {
        for (path, ino) in &inos {
            let r = v.getattr(*ino).map(|a| a.size).map_err(|e| e.to_string());
            if *ino == victim {
                assert_eq!(r, Err(first.clone()), "{path}");
            } else {
                assert!(r.is_ok(), "{path}: {r:?}");
            }
        }
    }
    let _ = std::fs::remove_file(&img);
}
