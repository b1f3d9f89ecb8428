#![cfg(target_os = "linux")]

//! Every image of the feature matrix, mounted by `ext4-fuse-bsd` and by the
//! kernel's ext4 side by side: the whole trees must look the same to every
//! system call (stat fields to the nanosecond, contents, xattrs, symlinks,
//! SEEK_DATA/SEEK_HOLE maps) and statvfs must agree. Birth times are left
//! out: the protocol FreeBSD speaks (and `fuser`) has no statx.

use std::path::Path;

use ext4_tests::fuse::{compare_with_kernel, FUSE_FIELDS_NO_STATX};
use ext4_tests::image::{build_image, MATRIX};
use ext4_tests::snapshot::Report;
use ext4_tests::util::{require_e2fsprogs, require_fuse, require_kernel_ext4};

fn compare(names: &[&str]) {
    if !require_e2fsprogs() || !require_kernel_ext4() || !require_fuse() {
        return;
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_ext4-fuse-bsd"));
    let mut report = Report::new("ext4-fuse-bsd vs the kernel's ext4");
    for spec in MATRIX.iter().filter(|s| names.contains(&s.name)) {
        let img = build_image(spec);
        compare_with_kernel(bin, &img, &img.path, "", FUSE_FIELDS_NO_STATX, &mut report);
    }
    report.finish();
}

#[test]
fn ext2_ext3() {
    compare(&["ext2", "ext2-1k-128", "ext3"]);
}

#[test]
fn ext4_layouts() {
    compare(&[
        "ext4",
        "ext4-64bit-csum",
        "ext4-legacy",
        "ext4-1k",
        "ext4-64k",
    ]);
}

#[test]
fn ext4_features() {
    compare(&[
        "ext4-inline",
        "ext4-bigalloc",
        "ext4-noextent",
        "ext4-largedir",
    ]);
}
