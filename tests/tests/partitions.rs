//! Whole-disk images, as `sfdisk` (MBR, with an extended partition and a
//! logical one) and `sgdisk` (GPT) make them, with ext4 filesystems made
//! by `mke2fs -E offset=` inside partitions: every program opens the
//! partition asked for (`partition=N`, or `offset=BYTES`) and shows
//! exactly what the kernel's ext4 shows of it through `losetup -o
//! --sizelimit`; without either it refuses, naming the partitions that
//! hold ext2/3/4; a partition without one is refused by number.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use ext4_tests::fuse::{compare_with_kernel, fuse_fields};
use ext4_tests::oracle::{mke2fs, LoopDevice, Scratch};
use ext4_tests::snapshot::Report;
use ext4_tests::util::{
    built_binary, require_e2fsprogs, require_fuse, require_kernel_ext4, require_tool, run_ok,
};

const MIB: u64 = 1 << 20;

fn can_run() -> bool {
    require_e2fsprogs()
        && require_kernel_ext4()
        && require_fuse()
        && require_tool("sfdisk", "fdisk")
        && require_tool("sgdisk", "gdisk")
}

/// A disk image of `size` MiB with a partition table written by
/// `table(path)` and ext4 made in the partitions at `fs` (start, len).
fn disk(
    dir: &Path,
    name: &str,
    size: u64,
    table: impl Fn(&Path),
    fs: &[(u64, u64)],
) -> std::path::PathBuf {
    let img = dir.join(name);
    std::fs::File::create(&img)
        .unwrap()
        .set_len(size * MIB)
        .unwrap();
    table(&img);
    let src = dir.join("src");
    if !src.exists() {
        std::fs::create_dir_all(src.join("d")).unwrap();
        std::fs::write(src.join("hello"), b"hello from a partition\n").unwrap();
        std::fs::write(src.join("d/big"), vec![0x5a; 300_000]).unwrap();
    }
    for &(start, len) in fs {
        let off = format!("offset={start}");
        // The size in 1k blocks: mke2fs writes only that much from offset.
        let blocks = format!("{}", len / 1024);
        mke2fs(&img, &["-t", "ext4", "-E", &off], Some(&src), &blocks);
    }
    img
}

fn sfdisk(img: &Path, script: &str) {
    let mut c = Command::new("sfdisk")
        .arg("-q")
        .arg(img)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(c.wait().unwrap().success(), "sfdisk");
}

#[test]
fn partitioned_disks_match_the_kernel() {
    if !can_run() {
        return;
    }
    let dir = Scratch::new("partitions");
    // GPT: 1 (ext4, 8 MiB at 1 MiB), 2 (no filesystem).
    let gpt = disk(
        dir.path(),
        "gpt.img",
        16,
        |img| {
            let mut c = Command::new("sgdisk");
            // -o: a new, empty GPT first.
            c.args([
                "-o",
                "-n",
                "1:2048:+8M",
                "-t",
                "1:8300",
                "-n",
                "2:0:+4M",
                "-t",
                "2:8300",
            ])
            .arg(img);
            run_ok(&mut c);
        },
        &[(MIB, 8 * MIB)],
    );
    // MBR: 1 primary (no filesystem), 2 extended holding logical 5 (ext4).
    let mbr = disk(
        dir.path(),
        "mbr.img",
        16,
        |img| {
            sfdisk(
                img,
                "label: dos\nstart=2048, size=2048, type=83\nstart=6144, size=26624, type=5\nstart=8192, size=16384, type=83\n",
            )
        },
        &[(4 * MIB, 8 * MIB)],
    );
    let mut report = Report::new("partitions vs losetup -o + the kernel's ext4");
    let image = built_binary("ext4-image", "ext4-image");
    for (img, n, ext, other) in [(&gpt, "1", MIB, "2"), (&mbr, "5", 4 * MIB, "1")] {
        let lo = LoopDevice::attach_range(img, Some((ext, 8 * MIB)), true).unwrap();
        for (bin, name) in [
            (built_binary("ext4-fuse", "ext4-fuse"), "ext4-fuse"),
            (
                built_binary("ext4-fuse-bsd", "ext4-fuse-bsd"),
                "ext4-fuse-bsd",
            ),
        ] {
            for opts in [format!("partition={n}"), format!("offset={ext}")] {
                let what = format!("{name} -o {opts} on {}", img.display());
                let fields = fuse_fields(name == "ext4-fuse");
                let paths =
                    compare_with_kernel(&bin, &what, lo.path(), img, &opts, &fields, &mut report);
                if paths < 3 {
                    report.fail(&what, &format!("only {paths} paths compared"));
                }
            }
        }
        // ext4-image reads the same bytes.
        let out = Command::new(&image)
            .args(["--partition", n])
            .arg(img)
            .args(["cat", "/hello"])
            .output()
            .unwrap();
        if out.stdout != b"hello from a partition\n" {
            report.fail(
                &format!("ext4-image --partition {n}"),
                &String::from_utf8_lossy(&out.stderr),
            );
        }
        // Without a choice: refused, naming the ext partition.
        let bare = Command::new(&image).arg(img).arg("info").output().unwrap();
        let err = String::from_utf8_lossy(&bare.stderr);
        if bare.status.code() != Some(2)
            || !err.contains(&format!("partition {n} ("))
            || !err.contains("--partition N")
        {
            report.fail(&format!("ext4-image {} info", img.display()), &err);
        }
        // A partition with no filesystem.
        let none = Command::new(&image)
            .args(["--partition", other])
            .arg(img)
            .arg("info")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&none.stderr);
        if !err.contains(&format!("partition {other} holds no ext2/ext3/ext4")) {
            report.fail(&format!("ext4-image --partition {other}"), &err);
        }
        drop(lo);
    }
    report.finish();
}
