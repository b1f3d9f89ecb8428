//! `check --data` walks a file's runs, not its claimed bytes: a file whose
//! size says 8 TiB but which debugfs shows owning one block is read as one
//! block, not 8 TiB of holes.

use std::process::Command;

use ext4_engine::fsck::CheckOptions;
use ext4_engine::FileDevice;
use ext4_engine::{OpenOptions, Volume};

#[test]
fn check_data_reads_runs_not_claimed_size() {
    let tmp = std::env::temp_dir().join(format!("ext4-check-bounds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let img = tmp.join("img");
    let src = tmp.join("f");
    std::fs::write(&src, b"hello").unwrap();
    let ok = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-b", "1024", "-O", "huge_file"])
        .arg(&img)
        .arg("32M")
        .status()
        .unwrap();
    assert!(ok.success());
    let run = |cmd: String| {
        let out = Command::new("debugfs")
            .args(["-w", "-R", &cmd])
            .arg(&img)
            .output()
            .unwrap();
        assert!(out.status.success(), "debugfs {cmd} failed");
    };
    run(format!("write {} f", src.display()));
    run("sif /f size 8796093022208".to_string());
    // The oracle: debugfs counts the blocks the file owns.
    let stat = Command::new("debugfs")
        .args(["-R", "stat /f"])
        .arg(&img)
        .output()
        .unwrap();
    let stat = String::from_utf8_lossy(&stat.stdout);
    assert!(stat.contains("Size: 8796093022208"), "{stat}");
    let blockcount: u64 = stat
        .split("Blockcount: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .expect("debugfs prints a block count");

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
