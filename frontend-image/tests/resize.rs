//! `ext4-image resize IMAGE SIZE` (grow) against `resize2fs`: images made
//! with and without `resize_inode` (by mke2fs, for several rows, and by
//! `ext4-image mkfs --from`), grown by us and, on a copy, by resize2fs to
//! the same block count: the superblock's counts (blocks, inodes, free
//! blocks, free inodes, reserved blocks, reserved descriptor blocks)
//! must be equal, `e2fsck -fn`
//! clean; the kernel's mount of ours shows the same tree as before and
//! can fill the new space (fallocate), `e2fsck -fn` clean after. What it
//! refuses (shrinking, more groups than the descriptor
//! blocks hold) fails with exit 1 and leaves the file as it was.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{cmd, fsck_clean, scratch};
use ext4_tests::oracle::{kernel_snapshot, kernel_write, mke2fs, KernelMount};
use ext4_tests::snapshot::{diff, format_diffs, Compare, WalkOptions, SOURCE_FIELDS};
use ext4_tests::util::{built_binary, require_e2fsprogs, require_kernel_ext4};

fn tool(img: &Path, args: &[&str]) -> std::process::Output {
    Command::new(built_binary("ext4-image", "ext4-image"))
        .arg(img)
        .args(args)
        .output()
        .unwrap()
}

fn counts(img: &Path) -> Vec<(String, String)> {
    let o = cmd("dumpe2fs").arg("-h").arg(img).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    [
        "Block count",
        "Inode count",
        "Free blocks",
        "Free inodes",
        "Reserved block count",
        "Reserved GDT blocks",
    ]
    .iter()
    .map(|f| {
        let v = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{f}:")))
            .unwrap_or("?")
            .trim()
            .to_string();
        (f.to_string(), v)
    })
    .collect()
}

fn snapshot(img: &Path) -> ext4_tests::snapshot::Snapshot {
    let opts = WalkOptions {
        content: true,
        data_map: false,
        ioctls: false,
    };
    kernel_snapshot(img, opts)
}

/// Grow `img` to `to` with ours and a copy with resize2fs; compare.
fn grow_and_compare(dir: &Path, img: &Path, name: &str, to: &str) {
    let before = snapshot(img);
    let o = tool(img, &["resize", to]);
    assert!(
        o.status.success(),
        "{name}: resize {to}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    fsck_clean(img, &format!("{name} grown by ext4-image"));
    no_questions(img, name);
    let ours = counts(img);
    let blocks = &ours[0].1;
    let theirs_img = dir.join(format!("{name}-resize2fs.img"));
    // The image as it was: ours extended the file, resize2fs gets the same.
    let len = fs::metadata(img).unwrap().len();
    let orig = dir.join(format!("{name}-orig.img"));
    fs::copy(&orig, &theirs_img).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&theirs_img)
        .unwrap()
        .set_len(len)
        .unwrap();
    let o = cmd("resize2fs")
        .arg("-f")
        .arg(&theirs_img)
        .arg(blocks)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{name}: resize2fs: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    fsck_clean(&theirs_img, &format!("{name} grown by resize2fs"));
    assert_eq!(
        ours,
        counts(&theirs_img),
        "{name}: ext4-image (left) and resize2fs (right)"
    );
    let _ = fs::remove_file(&theirs_img);
    // The tree is as it was, and the new space is usable.
    let after = snapshot(img);
    let cmp = Compare {
        fields: SOURCE_FIELDS,
        ignore_dir_size: false,
        ignore_paths: &[],
    };
    let d = diff(&before, &after, &cmp);
    assert!(
        d.is_empty(),
        "{}",
        format_diffs(&format!("{name}: the tree before and after"), &d, 20)
    );
    {
        let m = KernelMount::mount(img, false, "").unwrap();
        let st = nix_statvfs(m.path());
        // Nearly all the free space, in one file (block-mapped files
        // cannot fallocate: 512 MiB written instead).
        let want = st.0 * st.1 * 9 / 10;
        let f = m.path().join("fill");
        let o = Command::new("fallocate")
            .arg("-l")
            .arg(want.to_string())
            .arg(&f)
            .output()
            .unwrap();
        if !o.status.success() {
            let mib = (want >> 20).min(512);
            let o = Command::new("dd")
                .args(["if=/dev/zero", "bs=1M", "status=none", "conv=fsync"])
                .arg(format!("count={mib}"))
                .arg(format!("of={}", f.display()))
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "{name}: dd: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        m.unmount().unwrap();
    }
    fsck_clean(
        img,
        &format!("{name} grown by ext4-image and filled by the kernel"),
    );
    eprintln!("{name}: grown to {blocks} blocks; counts equal to resize2fs's: {ours:?}");
}

/// e2fsck -fn asks nothing: some problems it finds (an invalid resize
/// inode) leave its exit status 0 when it may not fix them.
fn no_questions(img: &Path, name: &str) {
    let o = cmd("e2fsck").arg("-fn").arg(img).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!out.contains("? no"), "{name}: e2fsck -fn:\n{out}");
}

/// (available blocks, block size) of a mounted filesystem.
fn nix_statvfs(p: &Path) -> (u64, u64) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: an all-zero statvfs is valid for statvfs to fill.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out pointer.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
    (s.f_bavail as u64, s.f_frsize as u64)
}

#[test]
fn grow_matches_resize2fs() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    let dir = scratch("resize");
    // Rows without "-O resize_inode" are made without it; with it, new
    // backup groups (3, 5, 7 and 9 here) get reserved descriptor blocks
    // that the resize inode must list (e2fsck checks the list), and the
    // 1 KiB row needs 8 descriptor blocks where it had 1: 7 reserved
    // ones become descriptor blocks, in group 0 and every backup.
    let rows: &[(&str, &[&str], &str, &str)] = &[
        (
            "ext4-rsv",
            &["-t", "ext4", "-b", "4096", "-O", "resize_inode"],
            "256M",
            "2G",
        ),
        (
            "ext3-rsv-1k",
            &["-t", "ext3", "-b", "1024", "-O", "resize_inode"],
            "64M",
            "1G",
        ),
        ("ext4", &["-t", "ext4", "-b", "4096"], "256M", "2G"),
        ("ext4-1k", &["-t", "ext4", "-b", "1024"], "40M", "100M"),
        (
            "ext4-partial",
            &["-t", "ext4", "-b", "4096"],
            "130M",
            "1001M",
        ),
        ("ext2", &["-t", "ext2", "-b", "4096"], "100M", "3G"),
        ("ext3", &["-t", "ext3", "-b", "4096"], "130M", "2500M"),
        (
            "ext4-32bit",
            &[
                "-t",
                "ext4",
                "-b",
                "4096",
                "-O",
                "^64bit,^metadata_csum,uninit_bg",
            ],
            "200M",
            "1500M",
        ),
    ];
    // A small tree in each, written by the kernel.
    for (name, args, from, to) in rows {
        let img = dir.join(format!("{name}.img"));
        let mut all = vec![];
        if !args.contains(&"resize_inode") {
            all.extend_from_slice(&["-O", "^resize_inode"]);
        }
        all.extend_from_slice(args);
        mke2fs(&img, &all, None, from);
        kernel_write(
            &img,
            "mkdir -p a/b; head -c 3000000 /dev/urandom > a/big; echo hi > a/b/f; ln -s ../big a/b/l",
        );
        fs::copy(&img, dir.join(format!("{name}-orig.img"))).unwrap();
        grow_and_compare(dir, &img, name, to);
        let _ = fs::remove_file(&img);
        let _ = fs::remove_file(dir.join(format!("{name}-orig.img")));
    }
    // An image made by ext4-image mkfs --from, which reserves descriptor
    // blocks as mke2fs does (resize_inode): 12 GiB needs two descriptor
    // blocks where 300 MiB has one.
    let src = dir.join("tree");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/f"), vec![7u8; 100_000]).unwrap();
    let img = dir.join("mkfs.img");
    let o = Command::new(built_binary("ext4-image", "ext4-image"))
        .arg("mkfs")
        .arg(&img)
        .args(["300m", "-q", "-b", "4096"])
        .arg("--from")
        .arg(&src)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    fs::copy(&img, dir.join("mkfs-orig.img")).unwrap();
    grow_and_compare(dir, &img, "mkfs", "12g");
}

#[test]
fn refusals_leave_the_image_alone() {
    if !require_e2fsprogs() {
        return;
    }
    let dir = scratch("resize");
    let img = dir.join("refuse.img");
    let check = |args: &[&str], opts: &[&str], size: &str, says: &str| {
        let o = cmd("mke2fs")
            .args(["-q", "-F", "-t", "ext4"])
            .args(opts)
            .arg(&img)
            .arg(size)
            .output()
            .unwrap();
        assert!(o.status.success());
        let before = fs::read(&img).unwrap();
        let o = tool(&img, args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(
            fs::read(&img).unwrap() == before,
            "{args:?} changed the image"
        );
    };
    // Past the descriptor blocks in place and the reserved ones.
    check(
        &["resize", "200g"],
        &["-b", "1024"],
        "64M",
        "the reserved ones too",
    );
    check(
        &["resize", "32m"],
        &["-O", "^resize_inode"],
        "64M",
        "not bigger",
    );
    // 1 KiB blocks, 64-byte descriptors: one descriptor block, 16 groups.
    check(
        &["resize", "1g"],
        &["-O", "^resize_inode", "-b", "1024"],
        "64M",
        "resize2fs",
    );
}
