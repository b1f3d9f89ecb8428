#![cfg(target_os = "linux")]

//! Every image of the feature matrix, mounted by `ext4-fuse-bsd` and by the
//! kernel's ext4 side by side: the whole trees must look the same to every
//! system call (stat fields to the nanosecond, contents, xattrs, symlinks,
//! SEEK_DATA/SEEK_HOLE maps) and statvfs must agree; so must the images
//! the kernel wrote itself. Birth times are left
//! out: the protocol FreeBSD speaks (and `fuser`) has no statx.

use std::path::Path;

use ext4_tests::fuse::{compare_kernel_written, compare_matrix};
use ext4_tests::util::{require_e2fsprogs, require_fuse, require_kernel_ext4};

const BIN: &str = env!("CARGO_BIN_EXE_ext4-fuse-bsd");

fn run(names: &[&str]) {
    if require_e2fsprogs() && require_kernel_ext4() && require_fuse() {
        compare_matrix(Path::new(BIN), names, false);
    }
}

#[test]
fn ext2_ext3() {
    run(&["ext2", "ext2-1k-128", "ext3"]);
}

#[test]
fn ext4_layouts() {
    run(&[
        "ext4",
        "ext4-64bit-csum",
        "ext4-legacy",
        "ext4-1k",
        "ext4-64k",
    ]);
}

#[test]
fn ext4_features() {
    run(&[
        "ext4-inline",
        "ext4-bigalloc",
        "ext4-noextent",
        "ext4-largedir",
    ]);
}

#[test]
fn kernel_written_images() {
    if require_e2fsprogs() && require_kernel_ext4() && require_fuse() {
        compare_kernel_written(Path::new(BIN), false);
    }
}

/// Images the kernel left needing recovery read as the kernel reads them
/// after its replay (the journal replayed in memory); norecovery shows
/// them without it.
#[test]
fn images_needing_recovery() {
    if !(require_e2fsprogs() && require_kernel_ext4() && require_fuse()) {
        return;
    }
    ext4_tests::fuse::compare_crash_images(Path::new(BIN), false);
}
