//! Hashed directories: lookups must walk the hash tree (a few blocks per
//! name), not scan the directory, and must find every name the kernel's
//! mke2fs put there and nothing else.

use std::path::Path;

use ext4_engine::FileDevice;
use ext4_engine::{InodeNo, OpenOptions, Volume};
use ext4_tests::oracle::{debugfs, mke2fs, KernelMount};
use ext4_tests::util::{require_e2fsprogs, require_kernel_ext4};

/// An empty image filled by the kernel's ext4 (mke2fs -d is slow for big
/// directories), so the hash tree is the kernel's own.
fn build(img: &Path, entries: usize, extra: &str) {
    let n = (entries + 64).to_string();
    let mut args = vec!["-t", "ext4", "-b", "1024", "-N", &n];
    if !extra.is_empty() {
        args.extend(["-O", extra]);
    }
    mke2fs(img, &args, None, "128M");
    let m = KernelMount::mount(img, false, "").expect("mount rw");
    let big = m.path().join("big");
    std::fs::create_dir(&big).unwrap();
    for i in 0..entries {
        // Long names make many leaf blocks, and a two-level tree.
        std::fs::write(
            big.join(format!("entry-with-a-rather-long-name-{i:08}")),
            b"",
        )
        .unwrap();
    }
    m.unmount().expect("unmount");
}

fn check(extra: &str, entries: usize) {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    let tmp = std::env::temp_dir().join(format!(
        "ext4-htree-{}-{}",
        std::process::id(),
        extra.replace(',', "_")
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let img = tmp.join("img");
    build(&img, entries, extra);

    // The oracle: debugfs says the directory is indexed and how deep.
    let dump = debugfs(&img, "htree_dump /big").unwrap();
    assert!(
        dump.contains("Indirect levels: 1"),
        "expected a two-level hash tree, debugfs says:\n{}",
        &dump[..dump.len().min(400)]
    );

    let vol = Volume::open(
        FileDevice::open(&img, true).unwrap(),
        &OpenOptions::default(),
    )
    .unwrap();
    let big = vol.lookup_ino(InodeNo::ROOT, b"big").unwrap();
    let size = vol.getattr(big).unwrap().size;
    let dir_blocks = size / 1024;
    assert!(
        dir_blocks > 500,
        "directory too small to tell a scan from a tree walk: {dir_blocks} blocks"
    );

    let before = vol.cache_stats();
    let probes = 200;
    for i in (0..entries).step_by(entries / probes) {
        let name = format!("entry-with-a-rather-long-name-{i:08}");
        vol.lookup_ino(big, name.as_bytes())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let after = vol.cache_stats();
    assert!(
        after.hits + after.misses > before.hits + before.misses,
        "the block cache counted no reads"
    );
    let per_lookup =
        ((after.hits + after.misses) - (before.hits + before.misses)) as f64 / probes as f64;
    // Root + one interior node + one leaf, plus the directory inode and its
    // extent blocks: far below the hundreds of blocks a scan reads.
    assert!(
        per_lookup < 12.0,
        "{per_lookup} block reads per lookup in a {dir_blocks}-block directory"
    );

    // Names that are not there are not found, and every name is found.
    assert!(vol
        .lookup_ino(big, b"entry-with-a-rather-long-name-x")
        .is_err());
    let mut seen = 0usize;
    vol.readdir(big, 0, &mut |e| {
        if e.name != b"." && e.name != b".." {
            seen += 1;
        }
        true
    })
    .unwrap();
    assert_eq!(seen, entries);
    assert!(
        vol.take_reports().is_empty(),
        "damage reported on a clean image"
    );
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn htree_lookup_reads_few_blocks() {
    check("", 20_000);
}

#[test]
fn htree_lookup_with_metadata_csum_and_large_dir() {
    check("metadata_csum,large_dir", 20_000);
}
