//! `ext4-image tar` against GNU tar and the kernel's ext4, on the
//! feature-matrix images:
//!
//! - GNU tar's listing of our stream (`tar -tvv --xattrs --acls
//!   --numeric-owner --full-time`: types, modes with the ACL `+`, owners,
//!   sizes, device numbers, mtimes to the nanosecond, link targets, ACL
//!   text, xattr names and sizes) equals its listing of the archive GNU tar
//!   itself makes of the kernel's read-only mount of the image;
//! - our stream extracted as root by GNU tar (`-x --xattrs --acls
//!   --xattrs-include='*' --numeric-owner -S`) is the kernel's mount: kinds,
//!   modes, link counts, owners, sizes, mtimes, device numbers, symlink
//!   targets, xattrs (ACLs included), contents and holes;
//! - the atimes and ctimes (which GNU tar does not restore) as Python's
//!   `tarfile` reads them from our PAX records equal the kernel's.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{cmd, listing, scratch, TAR_META};
use ext4_tests::image::{build_image, matrix_spec};
use ext4_tests::oracle::KernelMount;
use ext4_tests::snapshot::{
    diff, host_snapshot, Compare, Field, Report, WalkOptions, SOURCE_FIELDS,
};
use ext4_tests::util::{built_binary, have_tool, require_e2fsprogs, require_kernel_ext4, skip};

fn tool() -> PathBuf {
    built_binary("ext4-image", "ext4-image")
}

fn gnu_tar() -> bool {
    let out = Command::new("tar").arg("--version").output();
    match out {
        Ok(o) if String::from_utf8_lossy(&o.stdout).contains("GNU tar") => true,
        _ => {
            skip("GNU tar not found");
            false
        }
    }
}

/// `ext4-image tar IMG [PATH] > out`; panics unless it exits 0.
fn export(img: &Path, path: &str, out: &Path) {
    let o = Command::new(tool())
        .args(["tar".as_ref(), img.as_os_str(), path.as_ref()])
        .stdout(fs::File::create(out).unwrap())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "ext4-image tar {} {path}: {}\n{}",
        img.display(),
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Atime and ctime of every member as Python's tarfile reads our PAX
/// records: name -> ((sec, nsec), (sec, nsec)).
type PaxTimes = BTreeMap<String, ((i64, u32), (i64, u32))>;

fn python_times(archive: &Path) -> Option<PaxTimes> {
    if !have_tool("python3") {
        skip("python3 not found: atimes and ctimes of the stream not checked");
        return None;
    }
    const SCRIPT: &str = r#"
import sys, tarfile, decimal, math
decimal.getcontext().prec = 40
def t(v):
    d = decimal.Decimal(v)
    s = math.floor(d)
    return "%d %d" % (s, int((d - s) * 10**9))
with tarfile.open(sys.argv[1]) as tf:
    for m in tf:
        h = m.pax_headers
        print("%s\t%s\t%s" % (m.name, t(h["atime"]), t(h["ctime"])))
"#;
    let o = Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(archive)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "python3 tarfile: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let pair = |s: &str| {
        let (a, b) = s.split_once(' ').unwrap();
        (a.parse().unwrap(), b.parse().unwrap())
    };
    let mut out = PaxTimes::new();
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let v: Vec<&str> = line.split('\t').collect();
        out.insert(v[0].to_string(), (pair(v[1]), pair(v[2])));
    }
    Some(out)
}

fn check_image(name: &str) {
    if !require_e2fsprogs() || !require_kernel_ext4() || !gnu_tar() {
        return;
    }
    let img = build_image(matrix_spec(name));
    let dir = scratch("tar").join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let ours = dir.join("ours.tar");
    export(&img.path, "/", &ours);

    let mut report = Report::new(&format!("ext4-image tar of {name}"));
    let m = KernelMount::ro(&img.path).expect("kernel mount");

    // GNU tar's own archive of the kernel's view, listed the same way.
    let theirs = dir.join("gnu.tar");
    let o = cmd("tar")
        .args(["--format=posix", "-S", "-C"])
        .arg(m.path())
        .args(TAR_META)
        .arg("-cf")
        .arg(&theirs)
        .arg(".")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "GNU tar -c of the mount: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (want, got) = (listing(&theirs), listing(&ours));
    let mut diffs = Vec::new();
    for name in want.keys().chain(got.keys()) {
        let (w, g) = (want.get(name), got.get(name));
        if w != g
            && !diffs
                .iter()
                .any(|d: &ext4_tests::snapshot::Difference| &d.path == name)
        {
            diffs.push(ext4_tests::snapshot::Difference {
                path: name.clone(),
                field: "tar -tvv".into(),
                expected: format!("{w:?}"),
                got: format!("{g:?}"),
            });
        }
    }
    report.section(
        "GNU tar listing: ours vs GNU tar of the kernel mount",
        diffs,
        want.len(),
    );

    // Extracted by GNU tar as root: the kernel's tree.
    let x = dir.join("x");
    fs::create_dir_all(&x).unwrap();
    let o = cmd("tar")
        .args(TAR_META)
        .args(["--xattrs-include=*", "-S", "-x", "-C"])
        .arg(&x)
        .arg("-f")
        .arg(&ours)
        .output()
        .unwrap();
    if !o.status.success() {
        report.fail("GNU tar -x", &String::from_utf8_lossy(&o.stderr));
    }
    let opts = WalkOptions {
        content: true,
        data_map: true,
        ioctls: false,
    };
    let mut kernel = host_snapshot(m.path(), opts);
    // A tar stream has no sockets (GNU tar leaves them out too).
    kernel
        .entries
        .retain(|_, e| e.kind != ext4_tests::snapshot::Kind::Socket);
    let extracted = host_snapshot(&x, opts);
    // Holes compare where the extracting filesystem's block is the
    // image's (a hole is whole blocks on both).
    let host_bs = fs::metadata(&x).map(|md| std::os::unix::fs::MetadataExt::blksize(&md));
    // What a tree rebuilt from the source keeps, but the atime (GNU tar
    // sets it to the time of extraction; the PAX check below covers it).
    let mut fields: Vec<Field> = SOURCE_FIELDS
        .iter()
        .copied()
        .filter(|&f| f != Field::Atime)
        .collect();
    if host_bs.ok() == Some(img.spec.block_size as u64) {
        fields.push(Field::DataMap);
    } else {
        report.note("holes not compared: the host's block size is not the image's");
    }
    let cmp = Compare {
        fields: &fields,
        ignore_dir_size: true,
        ignore_paths: &[],
    };
    let n = kernel.entries.len();
    report.section(
        "GNU tar -x of ours vs the kernel mount",
        diff(&kernel, &extracted, &cmp),
        n,
    );

    if let Some(times) = python_times(&ours) {
        let mut diffs = Vec::new();
        for (path, e) in &kernel.entries {
            let p = String::from_utf8_lossy(path);
            let member = if p == "/" {
                ".".to_string()
            } else {
                format!(".{p}")
            };
            let want = ((e.atime.sec, e.atime.nsec), (e.ctime.sec, e.ctime.nsec));
            let got = times.get(&member).copied();
            if got != Some(want) {
                diffs.push(ext4_tests::snapshot::Difference {
                    path: p.into_owned(),
                    field: "atime, ctime".into(),
                    expected: format!("{want:?}"),
                    got: format!("{got:?}"),
                });
            }
        }
        report.section("PAX atime/ctime (Python tarfile) vs the kernel", diffs, n);
    }
    drop(m);
    let _ = fs::remove_dir_all(&dir);
    report.finish();
}

macro_rules! image_tests {
    ($($f:ident => $name:literal,)*) => {$(
        #[test]
        fn $f() {
            check_image($name);
        }
    )*};
}

// Every matrix image the kernel can mount (ext4-64k's blocks are larger
// than a page).
image_tests! {
    ext2 => "ext2",
    ext2_1k_128 => "ext2-1k-128",
    ext3 => "ext3",
    ext4 => "ext4",
    ext4_64bit_csum => "ext4-64bit-csum",
    ext4_inline => "ext4-inline",
    ext4_bigalloc => "ext4-bigalloc",
    ext4_noextent => "ext4-noextent",
    ext4_1k => "ext4-1k",
    ext4_largedir => "ext4-largedir",
}

/// A subtree, and a single file, as `tar -C` of the kernel's mount names
/// them; a closed pipe ends the stream quietly.
#[test]
fn subtree_file_and_closed_pipe() {
    if !require_e2fsprogs() || !gnu_tar() {
        return;
    }
    let img = build_image(matrix_spec("ext4"));
    let dir = scratch("tar").join("subtree");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    // The first directory below the root with entries, and a file in it.
    let root = listing_of_image(&img.path, "/");
    let sub = root
        .iter()
        .find(|n| n.ends_with('/') && n.matches('/').count() == 2 && *n != "./lost+found/")
        .expect("a subdirectory")
        .trim_start_matches('.')
        .trim_end_matches('/')
        .to_string();
    let names = listing_of_image(&img.path, &sub);
    assert_eq!(names.first().map(String::as_str), Some("./"), "{names:?}");
    let full = root.iter().filter_map(|n| {
        n.strip_prefix(&format!(".{sub}/"))
            .map(|r| format!("./{r}"))
    });
    let mut full: Vec<String> = full.collect();
    full.sort();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(
        sorted, full,
        "the subtree's names are the tree's below {sub}"
    );

    let file = root
        .iter()
        .find(|n| !n.ends_with('/') && n.starts_with(&format!(".{sub}/")))
        .expect("a file")
        .trim_start_matches('.')
        .to_string();
    let one = listing_of_image(&img.path, &file);
    assert_eq!(one, vec![file.rsplit('/').next().unwrap().to_string()]);

    // A reader that stops at once: no message, no panic.
    let mut child = Command::new(tool())
        .args(["tar".as_ref(), img.path.as_os_str()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    // Ended quietly: an exit status, or SIGPIPE as `ls | head` ends ls.
    use std::os::unix::process::ExitStatusExt;
    assert!(
        o.stderr.is_empty() && (o.status.code().is_some() || o.status.signal() == Some(13)),
        "closed pipe: {} {:?}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Member names of `ext4-image tar IMG PATH` as GNU tar lists them.
fn listing_of_image(img: &Path, path: &str) -> Vec<String> {
    let out = scratch("tar").join("names.tar");
    export(img, path, &out);
    let o = cmd("tar").arg("-tf").arg(&out).output().unwrap();
    assert!(o.status.success());
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(String::from)
        .collect()
}
