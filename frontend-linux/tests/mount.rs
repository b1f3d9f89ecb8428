//! `ext4-fuse` as a user meets it: one clear line for the usual mistakes,
//! and a damaged inode that fails alone, as the kernel's ext4 fails it.
//! (Whole-tree comparisons with the kernel are in `matrix.rs`.)

use std::fs;
use std::path::Path;
use std::process::Command;

use ext4_tests::fuse::FuseServer;
use ext4_tests::oracle::{self, KernelMount};
use ext4_tests::util::{require_e2fsprogs, require_fuse, require_kernel_ext4};

const BIN: &str = env!("CARGO_BIN_EXE_ext4-fuse");

fn mke2fs(img: &Path, src: Option<&Path>) {
    oracle::mke2fs(img, &["-t", "ext4"], src, "8M");
}

/// One line on stderr and a failing status for the usual mistakes; none of
/// these needs root.
#[test]
fn clear_errors() {
    if !require_e2fsprogs() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.img");
    fs::write(&junk, vec![0x5a; 1 << 20]).unwrap();
    let img = dir.path().join("ok.img");
    mke2fs(&img, None);
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let missing = dir.path().join("missing.img");
    let (img, mnt, junk, missing) = (
        img.to_str().unwrap(),
        mnt.to_str().unwrap(),
        junk.to_str().unwrap(),
        missing.to_str().unwrap(),
    );
    let cases: [(&[&str], &str); 5] = [
        (&[missing, mnt], "No such file or directory"),
        (&[junk, mnt], "not an ext2/ext3/ext4 filesystem"),
        (&[img, "/"], "busy"),
        (
            &[img, mnt, "-o", "errors=sometimes"],
            "must be continue, remount-ro or panic",
        ),
        (
            &[img, mnt, "-o", "nonsense"],
            "unknown mount option 'nonsense'",
        ),
    ];
    for (args, want) in cases {
        let out = Command::new(BIN).args(args).arg("-f").output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert_eq!(
            err.lines().count(),
            1,
            "{args:?}: expected one line, got {err:?}"
        );
        assert!(
            err.starts_with("ext4-fuse: ") && err.contains(want),
            "{args:?}: {err:?}"
        );
    }
}

/// A damaged inode fails its own operations with the kernel's errno
/// (EUCLEAN), is named in a log line, and the rest of the mount works.
#[test]
fn corrupt_inode_fails_alone() {
    if !require_e2fsprogs() || !require_kernel_ext4() || !require_fuse() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("good"), b"fine\n").unwrap();
    fs::write(src.join("bad"), vec![7u8; 100_000]).unwrap();
    let img = dir.path().join("disk.img");
    mke2fs(&img, Some(&src));
    // Overwrite the extent header's magic in i_block.
    oracle::debugfs_damage(&img, &["sif /bad block[0] 0x12345678".into()]);

    let kernel = KernelMount::ro(&img).unwrap();
    let fuse = FuseServer::mount(Path::new(BIN), &img, "").unwrap();
    let errno = |p: &Path| {
        fs::read(p)
            .map(|_| 0)
            .unwrap_or_else(|e| e.raw_os_error().unwrap_or(-1))
    };
    let (ek, ef) = (
        errno(&kernel.path().join("bad")),
        errno(&fuse.path().join("bad")),
    );
    assert_eq!(
        ek,
        libc::EUCLEAN,
        "the kernel's answer changed: pick another corruption"
    );
    assert_eq!(ef, ek);
    assert_eq!(fs::read(fuse.path().join("good")).unwrap(), b"fine\n");
    // (The kernel already refuses to stat it: ext4_iget checks the extent
    // header. The engine checks it on first use, so only reads are compared.)
    let bad_ino = fs::read_dir(kernel.path())
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.file_name() == "bad")
        .map(|e| std::os::unix::fs::DirEntryExt::ino(&e))
        .unwrap();
    let (status, stderr) = fuse.unmount().unwrap();
    assert!(status.success());
    assert!(
        stderr
            .lines()
            .any(|l| l.contains(&format!("inode {bad_ino}")) && l.contains("corrupt")),
        "no log line names inode {bad_ino}: {stderr:?}"
    );
}
