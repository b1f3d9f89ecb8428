//! Images laid out by the kernel's own ext4: interleaved appends that
//! fragment files into deep extent trees, fallocate (unwritten extents,
//! KEEP_SIZE, punch, zero, collapse, insert), htree directories with
//! deletions, files past 4 GiB with holes, inline data growing out of the
//! inode. After unmounting (e2fsck -fn must be clean) the image is mounted
//! read-only again and the engine must read exactly what the kernel reads.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ext4_tests::checks::{debugfs_compare, FlagsView, Sample};
use ext4_tests::kwimage::{kw_fragment, kw_mkfs, kw_populate, random_bytes as bytes, KwPlan};
use ext4_tests::open_engine;
use ext4_tests::oracle::{
    assert_fsck_clean, debugfs_extent_count, debugfs_extent_depth, tempfile_path, KernelMount,
};
use ext4_tests::rng::Rng;
use ext4_tests::snapshot::{
    diff, engine_read_all, engine_snapshot, host_snapshot, Compare, Difference, Report,
    WalkOptions, ALL_FIELDS,
};
use ext4_tests::tree::{set_times, set_xattr, Time};
use ext4_tests::util::{require_e2fsprogs, require_kernel_ext4};

/// Removes the scratch image however the test ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn mkfs(block_size: u32, features: &str, size: &str) -> Scratch {
    let img = tempfile_path("kernel-written").with_extension("img");
    kw_mkfs(&img, block_size, features, size);
    Scratch(img)
}

fn t(sec: i64, nsec: u32) -> Time {
    Time { sec, nsec }
}

/// Everything else, through a normal (delalloc) mount.
fn workload(img: &Path, block_size: u32) {
    let m = KernelMount::mount(img, false, "").expect("mount rw");
    let root = m.path();
    let mut rng = Rng::new(11);

    // fallocate in its forms, files past 4 GiB with holes.
    kw_populate(root);

    // Hash-tree directories: many entries, then deletions, then more.
    let h = root.join("htree");
    fs::create_dir(&h).unwrap();
    let a = h.join("a");
    fs::create_dir(&a).unwrap();
    for i in 0..5000 {
        let pad = "p".repeat(rng.below(30) as usize);
        fs::write(
            a.join(format!("entry-{i:05}-{pad}")),
            if i % 97 == 0 { &b"data"[..] } else { &b""[..] },
        )
        .unwrap();
    }
    let names: Vec<_> = fs::read_dir(&a)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for (i, n) in names.iter().enumerate() {
        if i % 3 == 0 {
            fs::remove_file(n).unwrap();
        }
    }
    for i in 0..500 {
        fs::create_dir(a.join(format!("late-dir-{i}"))).unwrap();
    }
    let b = h.join("b");
    fs::create_dir(&b).unwrap();
    for i in 0..3000 {
        std::os::unix::fs::symlink(format!("target-{i}"), b.join(format!("s{i}"))).unwrap();
    }

    // Deep path, links, special files, xattrs, owners, times.
    let mut d = root.join("deep");
    for i in 0..30 {
        d = d.join(format!("level-{i:02}"));
    }
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("leaf"), b"bottom").unwrap();
    let misc = root.join("misc");
    fs::create_dir(&misc).unwrap();
    std::os::unix::fs::symlink("short", misc.join("fast")).unwrap();
    let long = "L".repeat((block_size as usize - 1).min(4000));
    std::os::unix::fs::symlink(&long, misc.join("slow")).unwrap();
    fs::write(misc.join("linked"), b"one inode, three names").unwrap();
    fs::hard_link(misc.join("linked"), misc.join("linked-2")).unwrap();
    fs::hard_link(misc.join("linked"), h.join("linked-3")).unwrap();
    let c = std::ffi::CString::new(misc.join("fifo").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid path.
    assert_eq!(
        unsafe { libc::mknod(c.as_ptr(), libc::S_IFIFO | 0o640, 0) },
        0
    );
    let c = std::ffi::CString::new(misc.join("dev").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid path.
    assert_eq!(
        unsafe {
            libc::mknod(
                c.as_ptr(),
                libc::S_IFCHR | 0o600,
                libc::makedev(300, 70_000),
            )
        },
        0
    );
    let x = misc.join("xattrs");
    fs::write(&x, b"attrs").unwrap();
    set_xattr(&x, "user.small", b"v").unwrap();
    set_xattr(&x, "trusted.t", b"tv").unwrap();
    set_xattr(&x, "user.big", &bytes(&mut rng, block_size as usize - 200)).unwrap();
    let times = [
        (
            "linked",
            t(-1_000_000_000, 123_456_789),
            t(4_102_444_800, 999_999_999),
        ),
        ("xattrs", t(2_147_483_648, 1), t(-2_147_483_648, 0)),
        ("fifo", t(15_032_385_535, 0), t(0, 500)),
    ];
    for (name, at, mt) in times {
        set_times(&misc.join(name), at, mt).unwrap();
    }
    let c = std::ffi::CString::new(misc.join("xattrs").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid path.
    unsafe {
        assert_eq!(libc::chown(c.as_ptr(), 4_000_000_000, 70_000), 0);
        assert_eq!(libc::chmod(c.as_ptr(), 0o6755), 0);
    }
    // A dirty fsync'd file and a renamed one, for good measure.
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(misc.join("synced"))
        .unwrap();
    f.write_all_at(&bytes(&mut rng, 100_000), 0).unwrap();
    f.sync_all().unwrap();
    drop(f);
    fs::rename(misc.join("synced"), misc.join("renamed")).unwrap();
    m.unmount().expect("unmount");
}

/// Small-file and small-directory life cycle on an inline_data volume.
fn inline_workload(img: &Path) {
    let m = KernelMount::mount(img, false, "").expect("mount rw");
    let root = m.path();
    let mut rng = Rng::new(13);
    for n in [0usize, 1, 59, 60, 61, 100, 150] {
        fs::write(root.join(format!("inline-{n}")), bytes(&mut rng, n)).unwrap();
    }
    let grow = root.join("grows");
    fs::write(&grow, bytes(&mut rng, 30)).unwrap();
    let mut f = OpenOptions::new().append(true).open(&grow).unwrap();
    std::io::Write::write_all(&mut f, &bytes(&mut rng, 5000)).unwrap();
    drop(f);
    fs::create_dir(root.join("small-dir")).unwrap();
    for i in 0..3 {
        fs::write(root.join("small-dir").join(format!("f{i}")), b"x").unwrap();
    }
    fs::create_dir(root.join("grown-dir")).unwrap();
    for i in 0..300 {
        fs::write(root.join("grown-dir").join(format!("name-{i:03}")), b"").unwrap();
    }
    let x = root.join("inline-100");
    set_xattr(&x, "user.a", b"value").unwrap();
    std::os::unix::fs::symlink("t".repeat(80), root.join("link-80")).unwrap();
    m.unmount().expect("unmount");
}

/// Mount read-only, walk with the kernel and the engine, compare.
fn compare(img: &Path, name: &str, sample: Sample) {
    assert_fsck_clean(img);
    let mut report = Report::new(&format!("kernel-written image {name}"));
    let m = KernelMount::ro(img).expect("mount ro");
    let k = host_snapshot(m.path(), WalkOptions::default());
    let vol = match open_engine(img) {
        Ok(v) => v,
        Err(e) => {
            report.fail("open", &e);
            return report.finish();
        }
    };
    let mut e = engine_snapshot(&vol, WalkOptions::default());
    let errors = std::mem::take(&mut e.errors);
    let n = errors.len();
    report.section(
        "engine API consistency",
        errors
            .into_iter()
            .map(|x| Difference {
                path: "(walk)".into(),
                field: "error".into(),
                expected: String::new(),
                got: x,
            })
            .collect(),
        n,
    );
    let cmp = Compare {
        fields: ALL_FIELDS,
        ignore_dir_size: false,
        ignore_paths: &[],
    };
    report.section("engine vs kernel", diff(&k, &e, &cmp), k.entries.len());
    let read = |_: &str, x: &ext4_tests::snapshot::Entry| {
        engine_read_all(&vol, ext4_engine::InodeNo(x.ino as u32), x.size)
    };
    let (diffs, checks) = debugfs_compare(img, &e, &sample, FlagsView::Raw, &read);
    report.section("engine vs debugfs", diffs, checks);
    drop(m);
    report.finish();
}

fn sample_paths(stat: &[&str], ls: &[&str], dump: &[&str]) -> Sample {
    let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
    Sample {
        stat: v(stat),
        ls: v(ls),
        dump: v(dump),
    }
}

fn check_depth(img: &Path, path: &str, min_depth: u32) {
    let depth = debugfs_extent_depth(img, path).unwrap();
    let n = debugfs_extent_count(img, path).unwrap();
    println!("{path}: extent tree depth {depth}, {n} extents");
    assert!(
        depth >= min_depth,
        "{path}: extent depth {depth} < {min_depth} ({n} extents): the workload did not fragment"
    );
}

fn kernel_written(block_size: u32, size: &'static str, rounds: usize) {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    let img = mkfs(block_size, "", size);
    let plan = KwPlan {
        block_size,
        size,
        frag_files: 3,
        frag_rounds: rounds,
    };
    kw_fragment(&img.0, &plan);
    workload(&img.0, block_size);
    assert_fsck_clean(&img.0);
    for f in ["/frag/f0", "/frag/f1", "/frag/f2"] {
        check_depth(&img.0, f, 2);
    }
    let dumps = [
        "/frag/f0",
        "/frag/f2",
        "/falloc/unwritten",
        "/falloc/unwritten-split",
        "/falloc/keep-size",
        "/falloc/punched",
        "/falloc/zero-range",
        "/falloc/collapse",
        "/falloc/insert",
        "/falloc/punched-many",
        "/falloc/unwritten-patchwork",
        "/misc/renamed",
    ];
    let mut stat: Vec<&str> = dumps.to_vec();
    stat.extend([
        "/",
        "/big/sparse-6g",
        "/big/unwritten-5g",
        "/htree/a",
        "/htree/b",
        "/misc/slow",
        "/misc/fast",
        "/misc/dev",
        "/misc/xattrs",
        "/misc/linked",
    ]);
    let sample = sample_paths(
        &stat,
        &["/", "/htree/a", "/htree/b", "/misc", "/falloc"],
        &dumps,
    );
    compare(&img.0, &format!("ext4 {block_size}-byte blocks"), sample);
}

#[test]
fn kernel_written_4k() {
    // 1,400 single-block extents per file push a 4 KiB tree to depth 2.
    kernel_written(4096, "2G", 1500);
}

#[test]
fn kernel_written_1k() {
    // With 1 KiB blocks, 4 KiB appends and 84 extents per leaf, a few
    // hundred rounds give depth 2.
    kernel_written(1024, "1G", 450);
}

#[test]
fn kernel_written_inline() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    let img = mkfs(4096, "inline_data", "256M");
    inline_workload(&img.0);
    let files = [
        "/inline-0",
        "/inline-1",
        "/inline-59",
        "/inline-60",
        "/inline-61",
        "/inline-100",
        "/inline-150",
        "/grows",
    ];
    let mut stat = files.to_vec();
    stat.extend(["/small-dir", "/grown-dir", "/link-80"]);
    let sample = sample_paths(&stat, &["/", "/small-dir", "/grown-dir"], &files);
    compare(&img.0, "ext4 inline_data", sample);
}
