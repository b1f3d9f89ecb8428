//! pjdfstest, the POSIX filesystem suite (crate `pjdfstest`, configuration
//! `tests/data/pjdfstest.toml`), on the kernel's ext4 (a loop mount) and
//! on both read-write FUSE servers, each on a copy of the same fresh image,
//! in one run: every test the kernel passes must pass on each server, and
//! every image must pass `e2fsck -fn` afterwards.
//!
//! One test cannot run on any FUSE mount: `link::link_count_max` asks
//! `pathconf(_PC_LINK_MAX)`, which glibc answers from the filesystem's
//! `f_type` (ext4's magic gives 65000, FUSE's magic "unknown"), so
//! pjdfstest skips it there. The same question is asked directly instead:
//! link one file until `link(2)` fails, on each mount, and compare the
//! count and the errno with the kernel's.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use ext4_tests::fuse::FuseServer;
use ext4_tests::oracle::{e2fsck_check, mke2fs, KernelMount, Scratch};
use ext4_tests::util::{
    built_binary, have_tool, require_e2fsprogs, require_fuse, require_kernel_ext4, run, skip,
};

/// Tests that cannot pass on a FUSE mount for a reason outside the server,
/// and what stands in for them.
const FUSE_CANNOT: &[(&str, &str)] = &[(
    "link::link_count_max",
    "glibc's pathconf(_PC_LINK_MAX) knows no limit for FUSE's f_type; \
     checked by link_max() instead",
)];

/// The users the configuration names as dummies.
const DUMMY_USERS: &[&str] = &["nobody", "pjdtest"];

fn ready() -> bool {
    if !(require_e2fsprogs() && require_kernel_ext4() && require_fuse()) {
        return false;
    }
    if !have_tool("pjdfstest") {
        skip("`pjdfstest` not found (scripts/install-test-deps.sh)");
        return false;
    }
    for u in DUMMY_USERS {
        if !run(Command::new("id").arg(u)).status.success() {
            skip(&format!(
                "no user `{u}` for pjdfstest (scripts/install-test-deps.sh)"
            ));
            return false;
        }
    }
    true
}

/// Each test's outcome ("ok", "FAILED", "skipped") by name, from
/// pjdfstest's report (one line per test: the name, then the outcome).
fn outcomes(report: &str) -> BTreeMap<String, String> {
    report
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let name = w.next()?;
            let outcome = w.last()?;
            (name.contains("::") && matches!(outcome, "ok" | "FAILED" | "skipped"))
                .then(|| (name.to_string(), outcome.to_string()))
        })
        .collect()
}

/// Run pjdfstest in a new directory of the mount at `root`: its report.
/// `tag` tells apart runs at the same time.
///
/// It works through a symbolic link in /tmp, of the same length on every
/// mount: the paths it makes must fit a socket's `sun_path` (108 bytes),
/// and pjdfstest 0.2's `create_path_max` underflows (panics with
/// "capacity overflow") when the part of PATH_MAX left after its base path
/// is a multiple of half NAME_MAX, so the path's length is chosen to avoid
/// that.
fn pjdfstest(root: &Path, tag: char) -> String {
    let dir = root.join("pjd");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    let mut link = format!("/tmp/ext4-pjd-{}-{tag}", std::process::id());
    // pjdfstest works two temporary directories (".tmpXXXXXX") down.
    while (4095 - (link.len() + 2 * 11)) % 127 == 0 {
        link.push('x');
    }
    let link = PathBuf::from(link);
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(&dir, &link).unwrap();
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/pjdfstest.toml");
    let out = run(Command::new("pjdfstest")
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(&link)
        .current_dir(&dir));
    let _ = fs::remove_file(&link);
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Link one new file until `link(2)` fails: how many links it then has,
/// and the errno.
fn link_max(root: &Path) -> (u64, Option<i32>) {
    let dir = root.join("links");
    fs::create_dir(&dir).unwrap();
    let file = dir.join("f");
    fs::write(&file, b"").unwrap();
    let mut n = 1u64;
    loop {
        match fs::hard_link(&file, dir.join(n.to_string())) {
            Ok(()) => n += 1,
            Err(e) => return (n, e.raw_os_error()),
        }
        assert!(n <= 70_000, "no limit on links");
    }
}

fn summary(report: &str) -> &str {
    report
        .lines()
        .rev()
        .find(|l| l.starts_with("Summary:"))
        .unwrap_or("(no summary: pjdfstest did not finish)")
}

/// What one mount gave.
struct Outcome {
    name: &'static str,
    report: String,
    /// [`link_max`]'s answer.
    links: (u64, Option<i32>),
    /// `e2fsck -fn` afterwards: exit code and words.
    fsck: (i32, String),
    took: std::time::Duration,
}

/// pjdfstest and [`link_max`] on a copy of `fresh` mounted by the kernel
/// (`bin` None) or by a server.
fn run_on(name: &'static str, bin: Option<PathBuf>, fresh: &Path, tag: char) -> Outcome {
    let t = Instant::now();
    let img = fresh.with_file_name(format!("{name}.img"));
    fs::copy(fresh, &img).unwrap();
    let (report, links) = match bin {
        None => {
            let m = KernelMount::mount(&img, false, "").unwrap();
            let r = (pjdfstest(m.path(), tag), link_max(m.path()));
            m.unmount().unwrap();
            r
        }
        Some(bin) => {
            let s = FuseServer::mount_rw(&bin, &img, "allow_other").unwrap();
            let r = (pjdfstest(s.path(), tag), link_max(s.path()));
            let (st, err) = s.unmount().unwrap();
            assert!(st.success(), "{name}: {st} {err}");
            r
        }
    };
    Outcome {
        name,
        report,
        links,
        fsck: e2fsck_check(&img),
        took: t.elapsed(),
    }
}

#[test]
fn servers_pass_what_the_kernel_passes() {
    if !ready() {
        return;
    }
    let scratch = Scratch::new("pjdfstest");
    let fresh = scratch.path().join("fresh.img");
    mke2fs(&fresh, &["-t", "ext4", "-b", "4096"], None, "1G");
    let t = Instant::now();
    // The three mounts at once: most of the time is spent waiting (the
    // suite's naps, a FUSE round trip per link).
    let mut runs: Vec<Outcome> = std::thread::scope(|sc| {
        let fresh = &fresh;
        let handles = [
            sc.spawn(move || run_on("kernel", None, fresh, 'k')),
            sc.spawn(move || {
                let bin = built_binary("ext4-fuse", "ext4-fuse");
                run_on("ext4-fuse", Some(bin), fresh, 'l')
            }),
            sc.spawn(move || {
                let bin = built_binary("ext4-fuse-bsd", "ext4-fuse-bsd");
                run_on("ext4-fuse-bsd", Some(bin), fresh, 'b')
            }),
        ];
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &runs {
        eprintln!("{:<14} {} ({:.1?})", r.name, summary(&r.report), r.took);
    }
    eprintln!("all three: {:.1?}", t.elapsed());
    let kernel = runs.remove(0);
    assert_eq!(
        kernel.fsck.0, 0,
        "kernel image: e2fsck -fn:\n{}",
        kernel.fsck.1
    );
    let kout = outcomes(&kernel.report);
    let kpassed: Vec<&String> = kout
        .iter()
        .filter(|(_, o)| *o == "ok")
        .map(|(n, _)| n)
        .collect();
    assert!(
        kpassed.len() > 300,
        "the kernel passes only {} tests: pjdfstest or its setup is broken\n{}",
        kpassed.len(),
        summary(&kernel.report)
    );
    let klinks = kernel.links;
    assert_eq!(klinks.1, Some(libc::EMLINK), "kernel: {klinks:?}");

    let mut failures = Vec::new();
    for r in &runs {
        let name = r.name;
        if r.fsck.0 != 0 {
            failures.push(format!(
                "{name}: e2fsck -fn exit {}:\n{}",
                r.fsck.0, r.fsck.1
            ));
        }
        if r.links != klinks {
            failures.push(format!(
                "{name}: one file takes {:?} links (count, errno), the kernel's {klinks:?}",
                r.links
            ));
        }
        let out = outcomes(&r.report);
        let missing: Vec<String> = kpassed
            .iter()
            .filter(|t| out.get(t.as_str()).map(String::as_str) != Some("ok"))
            .filter(|t| !FUSE_CANNOT.iter().any(|(n, _)| *n == t.as_str()))
            .map(|t| {
                format!(
                    "  {t}: {}",
                    out.get(t.as_str()).map_or("not run", String::as_str)
                )
            })
            .collect();
        if !missing.is_empty() {
            failures.push(format!(
                "{name}: {} tests the kernel passes do not pass ({}):\n{}\n{}",
                missing.len(),
                summary(&r.report),
                missing.join("\n"),
                failed_details(&r.report)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// pjdfstest's words about each failed test (the assertion, without the
/// backtrace).
fn failed_details(report: &str) -> String {
    let mut out = Vec::new();
    let mut lines = report.lines();
    while let Some(l) = lines.next() {
        if l.split_whitespace().last() != Some("FAILED") {
            continue;
        }
        out.push(l.trim_end().to_string());
        for l in lines.by_ref() {
            if l.starts_with("Backtrace") || l.trim().is_empty() {
                break;
            }
            out.push(format!("    {l}"));
        }
    }
    out.join("\n")
}
