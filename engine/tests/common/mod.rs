//! What the image-based engine tests share: whether an e2fsprogs tool is
//! installed, building an image from a source tree with `mke2fs -d`,
//! indexing its directories with `e2fsck -D`, and where a file's blocks are
//! (`debugfs blocks`).

// Each test uses only some of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// Whether `tool` runs (tests that need it are skipped without it).
pub fn have(tool: &str) -> bool {
    Command::new(tool).arg("-V").output().is_ok()
}

/// `mke2fs -F -q <args> -d <src> <img> <size>`, which must succeed.
pub fn mke2fs(args: &[&str], src: &Path, img: &Path, size: &str) {
    let out = Command::new("mke2fs")
        .args(["-F", "-q"])
        .args(args)
        .arg("-d")
        .arg(src)
        .arg(img)
        .arg(size)
        .output()
        .expect("mke2fs");
    assert!(
        out.status.success(),
        "mke2fs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `e2fsck -fyD`: mke2fs -d writes linear directories, this indexes them.
pub fn index_dirs(img: &Path) {
    let out = Command::new("e2fsck")
        .args(["-f", "-y", "-D"])
        .arg(img)
        .output()
        .expect("e2fsck");
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "e2fsck -D: {out:?}"
    );
}

/// The physical blocks of `path`, in logical order (`debugfs blocks`).
pub fn blocks(img: &Path, path: &str) -> Vec<u64> {
    let out = Command::new("debugfs")
        .args(["-R", &format!("blocks {path}")])
        .arg(img)
        .output()
        .expect("debugfs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|w| w.parse().unwrap())
        .collect()
}
