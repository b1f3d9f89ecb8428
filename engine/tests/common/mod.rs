//! What the image-based engine tests share: whether an e2fsprogs tool is
//! installed, and building an image from a source tree with `mke2fs -d`.

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
