//! `ext4-image mkfs` against `mke2fs`: with the same options, the same
//! UUID, mke2fs's hash seed set to ours (`-E hash_seed=`) and mke2fs's
//! clock fixed to our timestamp (`E2FSPROGS_FAKE_TIME`), the two images are
//! byte-identical; `e2fsck -fn` is clean; the kernel mounts ours and writes
//! to it; two runs with the same `-U` and timestamp are byte-identical.

mod common;

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{cmd, scratch};
use ext4_tests::oracle::KernelMount;
use ext4_tests::snapshot::host_data_map;
use ext4_tests::util::{built_binary, require_e2fsprogs, require_kernel_ext4};

const UUID: &str = "01234567-89ab-cdef-0123-456789abcdef";
const TIME: &str = "1700000000";

fn ours(img: &Path, args: &[&str]) -> Output {
    Command::new(built_binary("ext4-image", "ext4-image"))
        .arg("mkfs")
        .arg(img)
        .args(args)
        .output()
        .unwrap()
}

fn ours_ok(img: &Path, args: &[&str]) {
    let o = ours(img, args);
    assert!(
        o.status.success(),
        "ext4-image mkfs {} {args:?}: {}",
        img.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn dumpe2fs_field(img: &Path, field: &str) -> String {
    let o = cmd("dumpe2fs").arg("-h").arg(img).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim_start_matches(':').trim().to_string())
        .unwrap_or_else(|| panic!("dumpe2fs -h {}: no {field}", img.display()))
}

fn fsck_clean(img: &Path) {
    let o = cmd("e2fsck").arg("-fn").arg(img).output().unwrap();
    assert!(
        o.status.success(),
        "e2fsck -fn {}: {}\n{}",
        img.display(),
        o.status,
        String::from_utf8_lossy(&o.stdout)
    );
}

/// Where two (sparse) images first differ, comparing every range either
/// holds data in (holes read as zeros).
fn first_difference(a: &Path, b: &Path) -> Option<String> {
    let (fa, fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    let (la, lb) = (fa.metadata().unwrap().len(), fb.metadata().unwrap().len());
    if la != lb {
        return Some(format!("sizes {la} and {lb}"));
    }
    let mut ranges = host_data_map(&fa, la).unwrap();
    ranges.extend(host_data_map(&fb, lb).unwrap());
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    for (start, end) in ranges {
        let mut at = start;
        while at < end {
            let n = ((end - at) as usize).min(x.len());
            fa.read_exact_at(&mut x[..n], at).unwrap();
            fb.read_exact_at(&mut y[..n], at).unwrap();
            if let Some(i) = x[..n].iter().zip(&y[..n]).position(|(p, q)| p != q) {
                let off = at + i as u64;
                return Some(format!(
                    "first at byte {off} (1 KiB block {}, offset {}): {:#04x} vs {:#04x}",
                    off / 1024,
                    off % 1024,
                    x[i],
                    y[i]
                ));
            }
            at += n as u64;
        }
    }
    None
}

fn path(name: &str) -> PathBuf {
    scratch("mkfs").join(name)
}

/// Sizes, block sizes, inode sizes and counts, labels: the size classes of
/// mke2fs.conf (floppy, small, default), groups dropped at the end, groups
/// made smaller for many inodes, 1 to 64 KiB blocks.
const CASES: &[&[&str]] = &[
    &["2m"],
    &["64m"],
    &["100m", "-N", "200000"],
    &["30m", "-N", "50000", "-b", "4096"],
    &["300m", "-I", "128"],
    &["1g", "-I", "512", "-L", "hello"],
    &["50m", "-b", "2048"],
    &["700m", "-b", "65536"],
    &["4g"],
];

#[test]
fn byte_identical_to_mke2fs() {
    if !require_e2fsprogs() {
        return;
    }
    for (i, args) in CASES.iter().enumerate() {
        let (a, b) = (
            path(&format!("ours-{i}.img")),
            path(&format!("mke2fs-{i}.img")),
        );
        let mut all = vec!["-U", UUID, "--timestamp", TIME, "-q"];
        all.extend_from_slice(args);
        ours_ok(&a, &all);
        fsck_clean(&a);
        let seed = dumpe2fs_field(&a, "Directory Hash Seed");
        let _ = fs::remove_file(&b);
        let o = cmd("mke2fs")
            .env("E2FSPROGS_FAKE_TIME", TIME)
            .args(["-q", "-F", "-t", "ext2", "-O", "^resize_inode", "-U", UUID])
            .arg("-E")
            .arg(format!("hash_seed={seed},nodiscard"))
            .arg(&b)
            .arg(args[0])
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "mke2fs {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        if let Some(msg) = first_difference(&a, &b) {
            panic!("{args:?}: ours vs mke2fs's: {msg}");
        }
        let _ = fs::remove_file(&a);
        let _ = fs::remove_file(&b);
    }
}

#[test]
fn reproducible_and_source_date_epoch() {
    if !require_e2fsprogs() {
        return;
    }
    let (a, b, c) = (path("r1.img"), path("r2.img"), path("r3.img"));
    ours_ok(&a, &["64m", "-U", UUID, "--timestamp", TIME, "-q"]);
    ours_ok(&b, &["64m", "-U", UUID, "--timestamp", TIME, "-q"]);
    assert_eq!(first_difference(&a, &b), None, "two runs differ");
    let o = Command::new(built_binary("ext4-image", "ext4-image"))
        .env("SOURCE_DATE_EPOCH", TIME)
        .args(["mkfs".as_ref(), c.as_os_str()])
        .args(["64m", "-U", UUID, "-q"])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(
        first_difference(&a, &c),
        None,
        "SOURCE_DATE_EPOCH is not --timestamp"
    );
    assert_eq!(
        dumpe2fs_field(&c, "Filesystem created"),
        "Tue Nov 14 22:13:20 2023"
    );
    // Without -U: a random UUID and hash seed each time.
    ours_ok(&b, &["64m", "-q"]);
    ours_ok(&c, &["64m", "-q"]);
    assert_ne!(
        dumpe2fs_field(&b, "Filesystem UUID"),
        dumpe2fs_field(&c, "Filesystem UUID")
    );
    assert_ne!(
        dumpe2fs_field(&b, "Directory Hash Seed"),
        dumpe2fs_field(&c, "Directory Hash Seed")
    );
    fsck_clean(&b);
    for p in [a, b, c] {
        let _ = fs::remove_file(p);
    }
}

#[test]
fn kernel_mounts_and_writes() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    for (name, args) in [
        ("k1.img", ["64m", "-b", "1024"]),
        ("k4.img", ["256m", "-b", "4096"]),
    ] {
        let img = path(name);
        ours_ok(&img, &args);
        {
            let m = KernelMount::mount(&img, false, "").expect("kernel mount");
            let lpf = fs::metadata(m.path().join("lost+found")).unwrap();
            assert!(lpf.is_dir());
            let d = m.path().join("dir/sub");
            fs::create_dir_all(&d).unwrap();
            let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
            fs::write(d.join("file"), &data).unwrap();
            fs::write(m.path().join("lost+found/x"), b"x").unwrap();
            assert_eq!(fs::read(d.join("file")).unwrap(), data);
            m.unmount().expect("unmount");
        }
        fsck_clean(&img);
        let _ = fs::remove_file(&img);
    }
}

#[test]
fn refusals_say_what_to_do() {
    let img = path("refused.img");
    let o = ours(&img, &["64m", "-t", "ext4"]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("only ext2") && e.contains("mke2fs"), "{e}");
    let o = ours(&img, &["64m", "-U", "nonsense"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a UUID"));
    let o = ours(&img, &["100m", "-N", "2000000"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("too many inodes"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
