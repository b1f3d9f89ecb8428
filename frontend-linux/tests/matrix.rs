//! Every image of the feature matrix, mounted by `ext4-fuse` and by the
//! kernel's ext4 side by side: the whole trees must look the same to every
//! system call (stat fields to the nanosecond, birth times through statx,
//! contents, xattrs, symlinks, SEEK_DATA/SEEK_HOLE maps) and statvfs must
//! agree.

use std::path::Path;

use ext4_tests::fuse::{compare_kernel_written, compare_matrix, compare_with_kernel, fuse_fields};
use ext4_tests::image::{build_image, matrix_spec};
use ext4_tests::oracle::LoopDevice;
use ext4_tests::snapshot::Report;
use ext4_tests::util::{require_e2fsprogs, require_fuse, require_kernel_ext4};

const BIN: &str = env!("CARGO_BIN_EXE_ext4-fuse");

fn can_run() -> bool {
    require_e2fsprogs() && require_kernel_ext4() && require_fuse()
}

#[test]
fn ext2_ext3() {
    if can_run() {
        compare_matrix(Path::new(BIN), &["ext2", "ext2-1k-128", "ext3"], true);
    }
}

#[test]
fn ext4_layouts() {
    if can_run() {
        let names = [
            "ext4",
            "ext4-64bit-csum",
            "ext4-legacy",
            "ext4-1k",
            "ext4-64k",
        ];
        compare_matrix(Path::new(BIN), &names, true);
    }
}

#[test]
fn ext4_features() {
    if can_run() {
        let names = [
            "ext4-inline",
            "ext4-bigalloc",
            "ext4-noextent",
            "ext4-largedir",
        ];
        compare_matrix(Path::new(BIN), &names, true);
    }
}

/// The same image through a read-only loop block device instead of the
/// image file.
#[test]
fn block_device_source() {
    if !can_run() {
        return;
    }
    let img = build_image(matrix_spec("ext4-64bit-csum"));
    let lo = LoopDevice::attach(&img.path, true).expect("losetup");
    let mut report = Report::new("ext4-fuse on a loop device vs the kernel's ext4");
    compare_with_kernel(
        Path::new(BIN),
        "ext4-64bit-csum on a loop device",
        &img.path,
        lo.path(),
        "",
        &fuse_fields(true),
        &mut report,
    );
    report.finish();
}

#[test]
fn kernel_written_images() {
    if can_run() {
        compare_kernel_written(Path::new(BIN), true);
    }
}

/// Images the kernel left needing recovery read as the kernel reads them
/// after its replay (the journal replayed in memory); norecovery shows
/// them without it; iomap is refused for them.
#[test]
fn images_needing_recovery() {
    if !(require_e2fsprogs() && require_kernel_ext4() && require_fuse()) {
        return;
    }
    ext4_tests::fuse::compare_crash_images(Path::new(BIN), true);
    let img = ext4_tests::crash::crash_image(ext4_tests::crash::crash_spec("data-journal-4k"));
    match ext4_tests::fuse::FuseServer::mount(Path::new(BIN), &img.path, "iomap=on") {
        Ok(f) => {
            let _ = f.unmount();
            panic!("iomap=on mounted an image whose journal is replayed in memory");
        }
        Err(e) => assert!(e.contains("replayed in memory"), "{e}"),
    }
}
