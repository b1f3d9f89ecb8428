//! `ext4-image mkfs` against `mke2fs`: with the same type and options, the
//! same UUID, mke2fs's hash seed set to ours (`-E hash_seed=`), mke2fs's
//! clock fixed to our timestamp (`E2FSPROGS_FAKE_TIME`), no resize inode
//! and inode tables marked zeroed (`-E lazy_itable_init=0`), the two
//! images are byte-identical but for the superblock's lifetime write count
//! (mke2fs counts its own I/O) and so its checksum, and `dumpe2fs` prints
//! the same but for those two lines; `e2fsck -fn` is clean; the kernel
//! mounts ours and writes to it; two runs with the same `-U` and timestamp
//! are byte-identical.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{cmd, first_difference, first_difference_but, scratch};
use ext4_tests::oracle::KernelMount;
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

fn path(name: &str) -> PathBuf {
    scratch("mkfs").join(name)
}

/// Types and feature edits; sizes, block sizes, inode sizes and counts,
/// labels: the size classes of mke2fs.conf (floppy, small, default),
/// journals of each size class, groups dropped at the end, groups made
/// smaller for many inodes, 1 to 64 KiB blocks, flex groups cut short,
/// block-mapped journals with indirect blocks, inline_data's lost+found.
const CASES: &[(&str, &[&str])] = &[
    ("ext2", &["2m"]),
    ("ext2", &["64m"]),
    ("ext2", &["100m", "-N", "200000"]),
    ("ext2", &["30m", "-N", "50000", "-b", "4096"]),
    ("ext2", &["300m", "-I", "128"]),
    ("ext2", &["1g", "-I", "512", "-L", "hello"]),
    ("ext2", &["50m", "-b", "2048"]),
    ("ext2", &["700m", "-b", "65536"]),
    ("ext2", &["4g"]),
    ("ext3", &["64m"]),
    ("ext3", &["2g"]),
    ("ext3", &["300m", "-b", "4096", "-N", "100000"]),
    ("ext4", &["1m"]),
    ("ext4", &["3m"]),
    ("ext4", &["64m"]),
    ("ext4", &["100m", "-N", "200000"]),
    ("ext4", &["300m", "-b", "4096", "-L", "data"]),
    ("ext4", &["1g"]),
    ("ext4", &["4g"]),
    ("ext4", &["50m", "-b", "2048"]),
    ("ext4", &["700m", "-b", "65536"]),
    ("ext4", &["700m", "-O", "^flex_bg"]),
    ("ext4", &["200m", "-O", "^metadata_csum,uninit_bg"]),
    ("ext4", &["64m", "-O", "^extent,^64bit"]),
    (
        "ext4",
        &["64m", "-O", "inline_data,metadata_csum_seed,large_dir"],
    ),
    ("ext4", &["1g", "-O", "inline_data", "-b", "4096"]),
    ("ext4", &["64m", "-O", "^has_journal", "-I", "128"]),
    ("ext4", &["200m", "-O", "^sparse_super,^resize_inode"]),
    ("ext4", &["300m", "-O", "^resize_inode"]),
    ("ext3", &["100m", "-O", "^resize_inode", "-b", "1024"]),
];

/// Where `img`'s superblock copies are (bytes), from dumpe2fs.
fn superblock_copies(img: &Path) -> Vec<u64> {
    let o = cmd("dumpe2fs").arg(img).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let bs: u64 = dumpe2fs_field(img, "Block size").parse().unwrap();
    text.lines()
        .filter_map(|l| l.split("superblock at ").nth(1))
        .map(|r| r.split(|c: char| !c.is_ascii_digit()).next().unwrap())
        .map(|n| match n.parse::<u64>().unwrap() {
            0 | 1 => 1024,
            b => b * bs,
        })
        .collect()
}

/// dumpe2fs's whole report, but the lines that differ by design.
fn dumpe2fs_but_writes(img: &Path) -> String {
    let o = cmd("dumpe2fs").arg(img).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.starts_with("Lifetime writes:") && !l.starts_with("Checksum:"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Ours and mke2fs's with `-t fs_type args` (mke2fs also given `-E e`)
/// are byte-identical but for the lifetime write counts, and dumpe2fs
/// prints the same; ours passes `e2fsck -fn`.
fn same_as_mke2fs(name: &str, fs_type: &str, args: &[&str], e: &str) {
    let (a, b) = (
        path(&format!("ours-{name}.img")),
        path(&format!("mke2fs-{name}.img")),
    );
    let mut all = vec!["-t", fs_type, "-U", UUID, "--timestamp", TIME, "-q"];
    all.extend_from_slice(args);
    ours_ok(&a, &all);
    fsck_clean(&a);
    let seed = dumpe2fs_field(&a, "Directory Hash Seed");
    // A sparse file of the size (mke2fs discards, so punches, an existing
    // file; a file it creates gets zeros written).
    let _ = fs::remove_file(&b);
    fs::File::create(&b)
        .unwrap()
        .set_len(fs::metadata(&a).unwrap().len())
        .unwrap();
    let o = cmd("mke2fs")
        .env("E2FSPROGS_FAKE_TIME", TIME)
        .args(["-q", "-F", "-t", fs_type, "-U", UUID])
        .arg("-E")
        .arg(format!("hash_seed={seed},lazy_itable_init=0,{e}"))
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
    // s_kbytes_written (0x178) and the checksum (0x3FC) of each copy.
    let skip: Vec<(u64, u64)> = superblock_copies(&a)
        .into_iter()
        .flat_map(|at| [(at + 0x178, at + 0x180), (at + 0x3FC, at + 0x400)])
        .collect();
    assert!(skip.len() >= 2, "{fs_type} {args:?}: no superblock found");
    if let Some(msg) = first_difference_but(&a, &b, &skip) {
        panic!("-t {fs_type} {args:?}: ours vs mke2fs's: {msg}");
    }
    assert_eq!(
        dumpe2fs_but_writes(&a),
        dumpe2fs_but_writes(&b),
        "-t {fs_type} {args:?}: dumpe2fs differs"
    );
    let _ = fs::remove_file(&a);
    let _ = fs::remove_file(&b);
}

#[test]
fn byte_identical_to_mke2fs() {
    if !require_e2fsprogs() {
        return;
    }
    for (i, (fs_type, args)) in CASES.iter().enumerate() {
        same_as_mke2fs(&i.to_string(), fs_type, args, "nodiscard");
    }
}

/// Journals of 1 GiB (filesystems of 128 GiB and more with 4 KiB blocks,
/// 64 GiB with 2 KiB) are eight runs or more of 32768 blocks: an extent tree of
/// depth 1, its leaf placed as libext2fs places it. Block-mapped journals
/// of 128 MiB and more with 1 KiB blocks (ext3 of 16 GiB and more) reach
/// the triple-indirect block. Sparse files: mke2fs discards (punches) the
/// file instead of writing zeros, and leaves the journal unwritten, so
/// neither image costs more than its metadata.
#[test]
fn big_journals_same_as_mke2fs() {
    if !require_e2fsprogs() {
        return;
    }
    for (name, fs_type, args) in [
        ("200g", "ext4", &["200g"][..]),
        ("64g2k", "ext4", &["64g", "-b", "2048", "-O", "^flex_bg"]),
        ("ext3-16g1k", "ext3", &["16g", "-b", "1024"]),
    ] {
        same_as_mke2fs(name, fs_type, args, "lazy_journal_init=1");
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
        ("k1.img", &["64m", "-b", "1024", "-t", "ext2"][..]),
        ("k4.img", &["256m", "-b", "4096", "-t", "ext2"]),
        ("k3.img", &["64m", "-t", "ext3"]),
        ("k4j.img", &["300m", "-b", "4096"]),
        (
            "k4c.img",
            &["64m", "-O", "^metadata_csum,uninit_bg,^flex_bg"],
        ),
        ("k4i.img", &["64m", "-O", "inline_data"]),
    ] {
        let img = path(name);
        ours_ok(&img, args);
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
    let o = ours(&img, &["64m", "-O", "bigalloc,quota"]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("quota, bigalloc") && e.contains("mke2fs"), "{e}");
    // mke2fs's own refusal, and what to add.
    let o = ours(&img, &["64m", "-O", "^sparse_super"]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("needs sparse_super") && e.contains("^resize_inode"),
        "{e}"
    );
    // The host cannot hold the size (a file size limit, with SIGXFSZ
    // ignored: EFBIG): said, and no empty file left behind.
    let _ = fs::remove_file(&img);
    let o = Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 1000; exec \"$0\" mkfs \"$1\" 64m -q")
        .arg(built_binary("ext4-image", "ext4-image"))
        .arg(&img)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("File too large"),
        "{o:?}"
    );
    assert!(!img.exists(), "a failed mkfs left {} behind", img.display());
    let o = ours(&img, &["64m", "-O", "warp_drive"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown feature"));
    let o = ours(&img, &["64m", "-U", "nonsense"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a UUID"));
    // More than 2^32 blocks without 64bit: mke2fs refuses (-n: it only
    // says what it would do), and so do we, before making the file.
    let _ = fs::remove_file(&img);
    fs::File::create(&img).unwrap();
    let o = cmd("mke2fs")
        .args(["-n", "-F", "-t", "ext4", "-O", "^64bit"])
        .arg(&img)
        .arg("17T")
        .output()
        .unwrap();
    assert!(
        !o.status.success()
            && String::from_utf8_lossy(&o.stderr).contains("too big to be expressed"),
        "mke2fs -O ^64bit 17T: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    fs::remove_file(&img).unwrap();
    for args in [&["17t", "-O", "^64bit"][..], &["17t", "-t", "ext3"]] {
        let o = ours(&img, args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(
            e.contains("32-bit block numbers") && e.contains("-O 64bit"),
            "{e}"
        );
        assert!(!img.exists(), "{args:?}: the image was made");
    }
    let o = ours(&img, &["100m", "-N", "2000000"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("too many inodes"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The kernel mounts a 200 GiB image (sparse) whose 1 GiB journal sits
/// under a depth-1 extent tree, logs through it past the first four runs
/// (data=journal: 600 MiB of data goes through the log, its head moves past
/// block 131072), and after a power cut (shutdown without a log flush)
/// replays it on the next mount: every fsynced byte is back, e2fsck -fn is
/// clean.
#[test]
fn kernel_logs_and_replays_a_journal_under_an_extent_tree() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    let img = path("big-journal.img");
    ours_ok(&img, &["200g", "-q"]);
    // 600 MiB in 1 MiB chunks, each different, never all in memory.
    let chunk =
        |i: u32| -> Vec<u8> { (0..1u32 << 20).map(|j| ((i * 7 + j) % 251) as u8).collect() };
    let small: Vec<u8> = (0..100_000u32).map(|i| (i * 13 % 256) as u8).collect();
    {
        let m = KernelMount::mount(&img, false, "data=journal").expect("kernel mount");
        let mut f = fs::File::create(m.path().join("big")).unwrap();
        for i in 0..600 {
            f.write_all(&chunk(i)).unwrap();
        }
        f.sync_all().unwrap();
        drop(f);
        // Logged after 600 MiB of log: in the journal's fifth run or later.
        fs::write(m.path().join("small"), &small).unwrap();
        fs::File::open(m.path().join("small"))
            .unwrap()
            .sync_all()
            .unwrap();
        ext4_tests::crash::shutdown(m.path());
        m.unmount().expect("unmount");
    }
    assert!(
        dumpe2fs_field(&img, "Filesystem features").contains("needs_recovery"),
        "the power cut left nothing to replay"
    );
    {
        let m = KernelMount::mount(&img, false, "").expect("kernel mount after the cut");
        assert_eq!(fs::read(m.path().join("small")).unwrap(), small);
        let mut f = fs::File::open(m.path().join("big")).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 600 << 20);
        let mut got = vec![0u8; 1 << 20];
        for i in 0..600 {
            f.read_exact(&mut got).unwrap();
            assert!(got == chunk(i), "big: MiB {i} differs");
        }
        drop(f);
        m.unmount().expect("unmount");
    }
    fsck_clean(&img);
    let _ = fs::remove_file(&img);
}
