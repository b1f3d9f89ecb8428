//! Mount options and process behaviour: uid/gid overrides, push_symlinks_in,
//! refusals with a clear message, daemon mode, clean unmount on signals, a
//! block device source; what the mounts show is compared with the kernel's
//! ext4 reading of the same image.

#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ext4_tests::fuse::{compare_with_kernel, fuse_fields, is_mounted, FuseServer};
use ext4_tests::image::{build_image, matrix_spec};
use ext4_tests::oracle::{debugfs_dump, debugfs_w, KernelMount, LoopDevice};
use ext4_tests::snapshot::{diff, host_snapshot, Compare, Report, WalkOptions};
use ext4_tests::util::{require_e2fsprogs, require_fuse, require_kernel_ext4};

const BIN: &str = env!("CARGO_BIN_EXE_ext4-fuse-bsd");

fn can_run() -> bool {
    require_e2fsprogs() && require_kernel_ext4() && require_fuse()
}

/// The cached matrix image these tests mount (read-only, shared).
fn image() -> PathBuf {
    build_image(matrix_spec("ext4")).path
}

fn mount(source: &Path, opts: &str) -> FuseServer {
    FuseServer::mount(Path::new(BIN), source, opts).unwrap_or_else(|e| panic!("mount: {e}"))
}

#[test]
fn uid_gid_overrides() {
    if !can_run() {
        return;
    }
    let img = image();
    let k = KernelMount::ro(&img).expect("kernel mount");
    let f = mount(&img, "uid=4321,gid=8765,allow_other,default_permissions");
    let walk = WalkOptions {
        ioctls: false,
        ..WalkOptions::default()
    };
    let mut want = host_snapshot(k.path(), walk);
    for e in want.entries.values_mut() {
        e.uid = 4321;
        e.gid = 8765;
    }
    let got = host_snapshot(f.path(), walk);
    let fields = fuse_fields(false);
    let cmp = Compare {
        fields: &fields,
        ignore_dir_size: false,
        ignore_paths: &[],
    };
    let mut report = Report::new("uid/gid override");
    report.section(
        "ext4-fuse-bsd -o uid,gid vs the kernel's ext4 with those owners",
        diff(&want, &got, &cmp),
        want.entries.len(),
    );
    report.finish();
}

#[test]
fn push_symlinks_in_prefixes_absolute_targets() {
    if !can_run() {
        return;
    }
    let f = mount(
        &image(),
        "push_symlinks_in,intr,max_read=65536,nosuid,private",
    );
    let abs = std::fs::read_link(f.path().join("links/absolute")).unwrap();
    assert_eq!(abs, f.path().join("etc/hostname"));
    // Relative targets stay as they are.
    assert_eq!(
        std::fs::read_link(f.path().join("links/to-file")).unwrap(),
        Path::new("../files/size-100")
    );
}

fn refused(args: &[&str], needle: &str) {
    let out = Command::new(BIN).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} was accepted");
    assert!(err.contains(needle), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
}

#[test]
fn clear_refusals() {
    if !can_run() {
        return;
    }
    let img = image();
    let w = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let m = mnt.path().to_str().unwrap();
    let i = img.to_str().unwrap();
    refused(
        &[i, m, "-o", "errors=sometimes"],
        "continue, remount-ro or panic",
    );
    refused(
        &[i, m, "-o", "ro,frobnicate"],
        "unknown mount option 'frobnicate'",
    );
    refused(&[i, m, "-o", "cache_size=lots"], "not a size");
    refused(&["/nonexistent.img", m], "No such file");
    let junk = w.path().join("junk.img");
    std::fs::write(&junk, vec![0u8; 1 << 20]).unwrap();
    refused(&[junk.to_str().unwrap(), m], "not an ext2/ext3/ext4");
    // A journal that needs recovery (the flag alone here: an empty log) is
    // replayed, so the volume mounts; so it does under norecovery.
    let dirty = w.path().join("dirty.img");
    std::fs::copy(&img, &dirty).unwrap();
    debugfs_w(&dirty, "feature needs_recovery").unwrap();
    for opts in ["", "norecovery"] {
        let f = mount(&dirty, opts);
        assert_eq!(
            std::fs::read(f.path().join("files/size-4096")).unwrap(),
            debugfs_dump(&img, "/files/size-4096").unwrap()
        );
        let (st, log) = f.unmount().expect("unmount");
        assert!(st.success(), "exit {st}: {log}");
        assert!(log.contains("journal"), "no word of the journal: {log}");
    }
    refused(
        &[dirty.to_str().unwrap(), m, "-o", "journal_dev=2065"],
        "journal_path=",
    );
}

/// Pid of the ext4-fuse-bsd process serving `mnt`.
fn server_pid(mnt: &Path) -> Option<i32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
        if args.first().is_some_and(|a| a.ends_with(b"ext4-fuse-bsd"))
            && args.contains(&mnt.as_os_str().as_encoded_bytes())
        {
            return Some(pid);
        }
    }
    None
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(20), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills and unmounts whatever a daemon test left behind.
struct DaemonGuard<'a>(&'a Path);

impl Drop for DaemonGuard<'_> {
    fn drop(&mut self) {
        if let Some(pid) = server_pid(self.0) {
            // SAFETY: plain syscall.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if is_mounted(self.0) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
}

#[test]
fn daemon_mode_reports_success_and_sigterm_unmounts() {
    if !can_run() {
        return;
    }
    let img = image();
    let mnt = tempfile::tempdir().unwrap();
    let _g = DaemonGuard(mnt.path());
    let st = Command::new(BIN)
        .arg(&img)
        .arg(mnt.path())
        .args(["-o", "ro"])
        .status()
        .unwrap();
    assert!(st.success(), "daemon start: {st}");
    // The parent only exits 0 once the child has mounted.
    assert!(is_mounted(mnt.path()));
    assert_eq!(
        std::fs::read(mnt.path().join("files/size-100")).unwrap(),
        debugfs_dump(&img, "/files/size-100").unwrap(),
        "read through the daemon"
    );
    let pid = server_pid(mnt.path()).expect("server process");
    // SAFETY: plain syscall.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    wait_until("unmount after SIGTERM", || !is_mounted(mnt.path()));
    wait_until("server exit", || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z ") || s.is_empty())
            .unwrap_or(true)
    });
}

#[test]
fn sigint_in_foreground_unmounts_and_exits_zero() {
    if !can_run() {
        return;
    }
    let mut f = mount(&image(), "");
    let pid = f.pid().expect("server pid") as i32;
    // SAFETY: plain syscall.
    unsafe { libc::kill(pid, libc::SIGINT) };
    wait_until("unmount after SIGINT", || !is_mounted(f.path()));
    let st = f.wait_exit().expect("server exit after SIGINT");
    assert!(st.success(), "exit {st}: {}", f.stderr());
}

#[test]
fn block_device_source_is_sized_by_ioctl() {
    if !can_run() {
        return;
    }
    let img = image();
    let lo = LoopDevice::attach(&img, true).expect("losetup");
    let mut report = Report::new("ext4-fuse-bsd on a loop device vs the kernel's ext4");
    compare_with_kernel(
        Path::new(BIN),
        "ext4 on a loop device",
        &img,
        lo.path(),
        "",
        &fuse_fields(false),
        &mut report,
    );
    report.finish();
}
