//! A hash tree whose index says that every leaf continues one run of
//! colliding hashes (what names chosen to collide, or a weak hash, make):
//! a lookup of a name with that hash must read the run's leaves only until
//! it turns to the directory's name index, and later lookups use the index
//! directly, so looking the name up again and again is not a scan each
//! time. The tree is `e2fsck -D`'s (from `mke2fs -d`); its root entries'
//! hashes are then rewritten on a copy in memory, with the name's hash from
//! the engine's `dx_hash` (checked by the first lookup finding the name
//! only through the run). Block reads are counted through the block cache.
//!
//! Needs `mke2fs`, `e2fsck` and `debugfs` (e2fsprogs).

use std::path::PathBuf;

use ext4_engine::test_support::{dx_hash, HashVersion, FLAG_UNSIGNED_HASH};
use ext4_engine::{BlockDevice, InodeNo, MemDevice, OpenOptions, Volume};
use ext4_tests::oracle::{debugfs_blocks, e2fsck_index_dirs, mke2fs};
use ext4_tests::util::require_e2fsprogs;

const FILES: usize = 1000;
const BS: u64 = 1024;

fn name(f: usize) -> String {
    format!("a-file-with-a-rather-long-name-to-fill-leaves-{f:05}")
}

#[test]
fn long_collision_runs_turn_to_the_name_index() {
    if !require_e2fsprogs() {
        return;
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dx-collisions");
    let src = dir.join("src");
    let img = dir.join("image.img");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(src.join("d")).unwrap();
    for f in 0..FILES {
        std::fs::write(src.join("d").join(name(f)), b"").unwrap();
    }
    // No metadata_csum: the rewritten root keeps no checksum to fix.
    mke2fs(
        &img,
        &["-t", "ext4", "-b", "1024", "-O", "^metadata_csum"],
        Some(&src),
        "32M",
    );
    e2fsck_index_dirs(&img);
    let root = debugfs_blocks(&img, "/d").unwrap()[0];

    let dev = MemDevice::from_vec(std::fs::read(&img).unwrap());
    let mut blk = vec![0u8; BS as usize];
    dev.read_at(root * BS, &mut blk).unwrap();
    // dx_root: "." (12 bytes), ".." (12), root info (8: hash version at
    // +4), then limit, count and (hash, block) pairs from 0x20.
    let version = HashVersion::from_disk(blk[0x1C]).expect("a known hash");
    let count = u16::from_le_bytes([blk[0x22], blk[0x23]]) as usize;
    assert!(count > 8, "a tree with many leaves: {count}");
    assert_eq!(blk[0x1E], 0, "one level");

    let probe = Volume::open(
        MemDevice::from_vec(std::fs::read(&img).unwrap()),
        &OpenOptions::default(),
    )
    .unwrap();
    let sb = probe.sb();
    let version = version.with_unsigned(sb.flags & FLAG_UNSIGNED_HASH != 0);
    // The name of the highest hash sits in the last leaf; every leaf now
    // claims to continue the run of its hash, so a lookup walks them all.
    let (h, target) = (0..FILES)
        .map(|f| {
            (
                dx_hash(name(f).as_bytes(), version, sb.hash_seed).0,
                name(f),
            )
        })
        .max()
        .unwrap();
    for i in 1..count {
        let at = 0x20 + i * 8;
        blk[at..at + 4].copy_from_slice(&(h | 1).to_le_bytes());
    }
    dev.write_at(root * BS, &blk).unwrap();

    let v = Volume::open(dev, &OpenOptions::default()).unwrap();
    let d = v.lookup_ino(InodeNo::ROOT, b"d").unwrap();
    let blocks = v.getattr(d).unwrap().size / BS;
    let reads = |v: &Volume<MemDevice>| {
        let s = v.cache_stats();
        s.hits + s.misses
    };
    let before = reads(&v);
    v.lookup_ino(d, target.as_bytes())
        .expect("found through the run");
    let first = reads(&v) - before;
    assert!(
        v.name_indexes().has_index(d),
        "the run did not turn to the name index"
    );
    let before = reads(&v);
    for _ in 0..50 {
        v.lookup_ino(d, target.as_bytes()).unwrap();
    }
    let again = (reads(&v) - before) as f64 / 50.0;
    eprintln!("{blocks}-block directory, {count} leaves: first lookup {first} block reads, then {again:.1} per lookup");
    assert!(first <= 2 * blocks, "first lookup: {first} block reads");
    assert!(
        again <= 4.0,
        "{again} block reads per lookup after the first"
    );
}
