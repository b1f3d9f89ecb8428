//! The engine against three outside readings of the same images, for every
//! image of the feature matrix: the generated source tree (what mke2fs was
//! given), the kernel's ext4 (`mount -o loop,ro`), and debugfs.
//!
//! Per image there are two tests:
//! - `<image>::engine`: the engine's view (through `Volume`) compared with
//!   all three oracles, field for field;
//! - `<image>::oracles`: the oracles compared with each other, no engine
//!   involved. If this fails, the test bed is wrong, not the engine.

use std::panic::AssertUnwindSafe;

use ext4_engine::FileDevice;
use ext4_engine::InodeNo;
use ext4_engine::Volume;
use ext4_tests::checks::{debugfs_compare, sample, FlagsView};
use ext4_tests::image::{build_image, matrix_spec, BuiltImage};
use ext4_tests::open_engine;
use ext4_tests::oracle::KernelMount;
use ext4_tests::snapshot::{
    diff, engine_read_all, engine_snapshot, first_difference, host_snapshot, Compare, Report,
    Snapshot, WalkOptions, ALL_FIELDS, SOURCE_FIELDS,
};
use ext4_tests::util::{page_size, require_e2fsprogs, require_kernel_ext4};

/// The generated tree has no root attributes (mke2fs does not copy them)
/// and no lost+found.
const NOT_IN_SOURCE: &[&str] = &["/", "/lost+found"];

fn prepare(name: &str) -> Option<BuiltImage> {
    // Building needs root as well (mknod, chown, mounts).
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return None;
    }
    Some(build_image(matrix_spec(name)))
}

fn kernel_snapshot(img: &BuiltImage, report: &mut Report) -> Option<(KernelMount, Snapshot)> {
    if !img.spec.kernel_mountable() {
        let msg = format!(
            "kernel comparison not possible for {}: {}-byte blocks on {}-byte pages (source tree and debugfs still compared)",
            img.spec.name,
            img.spec.block_size,
            page_size()
        );
        // A platform limit, not a missing tool: loud, but never a failure.
        eprintln!("\n*** NOTE: {msg} ***\n");
        report.note(&format!("SKIPPED part: {msg}"));
        return None;
    }
    match KernelMount::ro(&img.path) {
        Ok(m) => {
            let s = host_snapshot(m.path(), WalkOptions::default());
            Some((m, s))
        }
        Err(e) => {
            report.fail("kernel mount", &e.to_string());
            None
        }
    }
}

fn statfs_section(vol: &Volume<FileDevice>, img: &BuiltImage, report: &mut Report) {
    if !img.spec.kernel_mountable() {
        return;
    }
    let ours = match std::panic::catch_unwind(AssertUnwindSafe(|| vol.statfs())) {
        Ok(s) => s,
        Err(_) => {
            report.fail("statfs", "Volume::statfs panicked");
            return;
        }
    };
    let m = match KernelMount::ro(&img.path) {
        Ok(m) => m,
        Err(e) => return report.fail("kernel mount", &e.to_string()),
    };
    let c = std::ffi::CString::new(m.path().as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: zeroed statvfs is a valid out-buffer; valid path.
    let mut sv: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statvfs(c.as_ptr(), &mut sv) } != 0 {
        return report.fail("statvfs", &std::io::Error::last_os_error().to_string());
    }
    let pairs = [
        ("block_size", sv.f_bsize as u64, ours.block_size as u64),
        ("blocks", sv.f_blocks, ours.blocks),
        ("blocks_free", sv.f_bfree, ours.blocks_free),
        ("blocks_available", sv.f_bavail, ours.blocks_available),
        ("inodes", sv.f_files, ours.inodes),
        ("inodes_free", sv.f_ffree, ours.inodes_free),
        ("name_max", sv.f_namemax, ours.name_max as u64),
        ("fsid", sv.f_fsid, ours.fsid),
    ];
    let diffs = pairs
        .iter()
        .filter(|(_, k, o)| k != o)
        .map(|(f, k, o)| ext4_tests::snapshot::Difference {
            path: "(statfs)".into(),
            field: f.to_string(),
            expected: k.to_string(),
            got: o.to_string(),
        })
        .collect();
    report.section("engine statfs vs kernel statvfs", diffs, 1);
}

fn check_engine(name: &str) {
    let Some(img) = prepare(name) else { return };
    let mut report = Report::new(&format!("engine on image {name} ({})", img.path.display()));
    for n in &img.tree.notes {
        report.note(n);
    }
    let vol = match open_engine(&img.path) {
        Ok(v) => v,
        Err(e) => {
            report.fail("open", &e);
            return report.finish();
        }
    };
    let t = std::time::Instant::now();
    let mut esnap = engine_snapshot(&vol, WalkOptions::default());
    report.note(&format!(
        "engine walk: {} paths in {:.1?}",
        esnap.entries.len(),
        t.elapsed()
    ));
    let errors = std::mem::take(&mut esnap.errors);
    let n = errors.len();
    report.section(
        "engine API consistency (readdir/lookup/getattr/read/readlink)",
        errors
            .into_iter()
            .map(|e| ext4_tests::snapshot::Difference {
                path: "(walk)".into(),
                field: "error".into(),
                expected: String::new(),
                got: e,
            })
            .collect(),
        n,
    );

    let expected = img.tree.expected(&img.spec, WalkOptions::default());
    let cmp = Compare {
        fields: SOURCE_FIELDS,
        ignore_dir_size: true,
        ignore_paths: NOT_IN_SOURCE,
    };
    report.section(
        "engine vs source tree",
        diff(&expected, &esnap, &cmp),
        expected.entries.len(),
    );

    if let Some((m, k)) = kernel_snapshot(&img, &mut report) {
        let cmp = Compare {
            fields: ALL_FIELDS,
            ignore_dir_size: false,
            ignore_paths: &[],
        };
        let mut diffs = diff(&k, &esnap, &cmp);
        // Say where the bytes differ, for the first few files.
        for dif in diffs.iter_mut().filter(|d| d.field == "Content").take(5) {
            let Some(e) = esnap.get(&dif.path) else {
                continue;
            };
            if e.size > 64 << 20 {
                continue;
            }
            if let Ok(want) = std::fs::read(m.path().join(dif.path.trim_start_matches('/'))) {
                if let Some((off, what)) = first_difference(&vol, InodeNo(e.ino as u32), &want) {
                    dif.got
                        .push_str(&format!(" (first difference at offset {off}: {what})"));
                }
            }
        }
        report.section("engine vs kernel", diffs, k.entries.len());
    }

    let s = sample(&img.tree.plan);
    let read = |_: &str, e: &ext4_tests::snapshot::Entry| {
        engine_read_all(&vol, InodeNo(e.ino as u32), e.size)
    };
    let (diffs, checks) = debugfs_compare(&img.path, &esnap, &s, FlagsView::Raw, &read);
    report.section("engine vs debugfs (stat, ls -l, dump)", diffs, checks);

    statfs_section(&vol, &img, &mut report);
    report.finish();
}

fn check_oracles(name: &str) {
    let Some(img) = prepare(name) else { return };
    let mut report = Report::new(&format!("oracles on image {name} ({})", img.path.display()));
    let expected = img.tree.expected(&img.spec, WalkOptions::default());
    if !img.spec.kernel_mountable() {
        // A platform limit, not a missing tool: loud, but never a failure.
        eprintln!(
            "\n*** NOTE: {name}: the kernel cannot mount {}-byte blocks; oracle cross-check not possible ***\n",
            img.spec.block_size
        );
        return;
    }
    let m = KernelMount::ro(&img.path).expect("kernel mount");
    let k = host_snapshot(m.path(), WalkOptions::default());
    let cmp = Compare {
        fields: SOURCE_FIELDS,
        ignore_dir_size: true,
        ignore_paths: NOT_IN_SOURCE,
    };
    report.section(
        "kernel vs source tree",
        diff(&expected, &k, &cmp),
        expected.entries.len(),
    );
    let s = sample(&img.tree.plan);
    let root = m.path().to_path_buf();
    let read = |p: &str, _: &ext4_tests::snapshot::Entry| {
        std::fs::read(root.join(p.trim_start_matches('/'))).map_err(|e| e.to_string())
    };
    let (diffs, checks) = debugfs_compare(&img.path, &k, &s, FlagsView::Masked, &read);
    report.section("kernel vs debugfs (stat, ls -l, dump)", diffs, checks);
    report.finish();
}

macro_rules! matrix {
    ($($module:ident => $name:literal),* $(,)?) => {
        $(
            mod $module {
                #[test]
                fn engine() {
                    super::check_engine($name)
                }
                #[test]
                fn oracles() {
                    super::check_oracles($name)
                }
            }
        )*
    };
}

ext4_tests::with_matrix_images!(matrix);

/// The comparison must notice when the engine reads something else: read a
/// copy of an image with one data byte flipped and one mtime changed
/// through the engine, compare with the kernel's reading of the original,
/// and expect exactly those two differences.
#[test]
fn testbed_detects_differences() {
    let Some(img) = prepare("ext4") else { return };
    let copy = ext4_tests::oracle::tempfile_path("mutated").with_extension("img");
    std::fs::copy(&img.path, &copy).unwrap();
    struct Rm(std::path::PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _rm = Rm(copy.clone());
    let pblk: u64 = ext4_tests::oracle::debugfs(&copy, "bmap /files/size-4096 0")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&copy)
        .unwrap();
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, pblk * 4096 + 100).unwrap();
    f.write_all_at(&[b[0] ^ 0x40], pblk * 4096 + 100).unwrap();
    drop(f);
    ext4_tests::oracle::debugfs_script(&copy, &["sif /modes/f4755 mtime @12345".to_string()], true)
        .unwrap();

    let m = KernelMount::ro(&img.path).unwrap();
    let k = host_snapshot(m.path(), WalkOptions::default());
    let vol = open_engine(&copy).unwrap();
    let mut e = engine_snapshot(&vol, WalkOptions::default());
    e.errors.clear();
    let d = diff(
        &k,
        &e,
        &Compare {
            fields: ALL_FIELDS,
            ignore_dir_size: false,
            ignore_paths: &[],
        },
    );
    let got: Vec<(String, String)> = d
        .iter()
        .map(|d| (d.path.clone(), d.field.clone()))
        .collect();
    let want = vec![
        ("/files/size-4096".to_string(), "Content".to_string()),
        ("/modes/f4755".to_string(), "Mtime".to_string()),
    ];
    assert_eq!(
        got,
        want,
        "{}",
        ext4_tests::snapshot::format_diffs("mutated image", &d, 20)
    );
}
