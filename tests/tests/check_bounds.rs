//! `check --data` walks a file's runs, not its claimed bytes: a file whose
//! size says 8 TiB but which debugfs shows owning one block is read as one
//! block, not 8 TiB of holes.

use ext4_engine::fsck::CheckOptions;
use ext4_engine::FileDevice;
use ext4_engine::{OpenOptions, Volume};
use ext4_tests::oracle::{debugfs_damage, debugfs_stat, debugfs_w, mke2fs};
use ext4_tests::util::require_e2fsprogs;

#[test]
fn check_data_reads_runs_not_claimed_size() {
    if !require_e2fsprogs() {
        return;
    }
    let tmp = std::env::temp_dir().join(format!("ext4-check-bounds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let img = tmp.join("img");
    let src = tmp.join("f");
    std::fs::write(&src, b"hello").unwrap();
    mke2fs(
        &img,
        &["-t", "ext4", "-b", "1024", "-O", "huge_file"],
        None,
        "32M",
    );
    debugfs_w(&img, &format!("write {} f", src.display())).unwrap();
    debugfs_damage(&img, &["sif /f size 8796093022208".into()]);
    // The oracle: debugfs counts the blocks the file owns.
    let stat = debugfs_stat(&img, "/f").unwrap();
    assert_eq!(stat.size, 8796093022208, "{stat:?}");
    let blockcount = stat.blockcount;

    let vol = Volume::open(
        FileDevice::open(&img, true).unwrap(),
        &OpenOptions::default(),
    )
    .unwrap();
    let mut problems = Vec::new();
    let sum = vol.fsck(&CheckOptions { data: true }, &mut |_| {}, &mut |e| {
        problems.push(e.to_string())
    });
    assert!(problems.is_empty(), "{problems:?}");
    // Data bytes read for /f equal its allocated blocks (512-byte units).
    assert_eq!(
        sum.data_bytes,
        blockcount * 512,
        "check read more than the blocks the file owns"
    );
    let _ = std::fs::remove_dir_all(&tmp);
}
