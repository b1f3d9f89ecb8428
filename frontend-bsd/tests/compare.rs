//! The side-by-side test: the same image mounted by the kernel's ext4 and by
//! `ext4-fuse-bsd` (through the kernel's FUSE) must look the same to every
//! system call: names, types, stat fields, contents, symlink targets,
//! xattrs, directory entries and statfs.

#![cfg(target_os = "linux")]

mod common;

use common::*;

fn compare(flavor: Flavor) {
    if !can_mount() {
        return;
    }
    let work = tempfile::Builder::new()
        .prefix("bsd-img-")
        .tempdir()
        .unwrap();
    let img = make_image(work.path(), flavor);
    let k = KernelMount::new(&img);
    let mut f = FuseMount::mount(&img, "");
    let want = walk(k.path());
    let got = walk(f.path());
    assert!(want.len() > 3000, "the walk saw only {} files", want.len());
    sanity(&want);
    assert_same(&format!("{flavor:?}"), &want, &got);
    // The root is ext4 inode 2 on both sides.
    assert_eq!(got[std::path::Path::new("")].ino, 2);
    // statfs, except the block size pair FUSE reports the same way.
    assert_eq!(statvfs(k.path()), statvfs(f.path()), "statvfs");
    assert!(f.alive(), "server died: {}", f.stderr());
    let st = f.finish().expect("server did not exit after unmount");
    assert!(st.success(), "server exit {st}: {}", f.stderr());
}

#[test]
fn ext4_matches_kernel() {
    compare(Flavor::Ext4);
}

#[test]
fn ext2_1k_blocks_matches_kernel() {
    compare(Flavor::Ext2);
}

#[test]
fn inline_data_matches_kernel() {
    compare(Flavor::InlineData);
}

/// The oracle's view has what the tree was built with, so the comparison
/// covers it.
fn sanity(t: &Tree) {
    use std::path::Path;
    let x = &t[Path::new("xattr/file")].xattrs;
    let names: Vec<&[u8]> = x.iter().map(|(n, _)| n.as_slice()).collect();
    for n in [&b"user.big"[..], b"user.small", b"user.empty", b"trusted.t"] {
        assert!(
            names.contains(&n),
            "xattr/file lacks {:?}: {names:?}",
            String::from_utf8_lossy(n)
        );
    }
    if std::process::Command::new("setfacl")
        .arg("--version")
        .output()
        .is_ok()
    {
        let a = &t[Path::new("xattr/acl")].xattrs;
        assert!(
            a.iter().any(|(n, _)| n == b"system.posix_acl_access"),
            "no ACL: {a:?}"
        );
    }
    assert_eq!(
        t[Path::new("special/bigdev")].rdev,
        libc::makedev(300, 70000)
    );
    assert_eq!(t[Path::new("hard/b")].nlink, 3);
    assert_eq!(t[Path::new("hard/b")].ino, t[Path::new("hard/sub/c")].ino);
    assert_eq!(
        t[Path::new("times/before1970")].mtime,
        (-1_000_000, 250_000_000)
    );
    assert_eq!(t[Path::new("times/ns")].mtime, (1_234_567_890, 987_654_321));
    assert_eq!(
        t[Path::new("times/after2038")].mtime,
        (2_500_000_000, 999_999_999)
    );
    // (mke2fs -d drops the trailing hole when inline_data is on.)
    assert!(t[Path::new("sparse")].size >= (5 << 20) + 8192);
    assert_eq!(
        t[Path::new("many")].entries.as_ref().map(Vec::len),
        Some(3000)
    );
}
