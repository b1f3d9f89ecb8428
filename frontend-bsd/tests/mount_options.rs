//! Mount options and process behaviour: uid/gid overrides, push_symlinks_in,
//! refusals with a clear message, daemon mode, clean unmount on signals.

#![cfg(target_os = "linux")]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn image() -> (tempfile::TempDir, std::path::PathBuf) {
    let work = tempfile::Builder::new()
        .prefix("bsd-img-")
        .tempdir()
        .unwrap();
    let img = make_image(work.path(), Flavor::Ext4);
    (work, img)
}

#[test]
fn uid_gid_overrides() {
    if !can_mount() {
        return;
    }
    let (_w, img) = image();
    let k = KernelMount::new(&img);
    let f = FuseMount::mount(&img, "uid=4321,gid=8765,allow_other,default_permissions");
    let mut want = walk(k.path());
    for r in want.values_mut() {
        r.uid = 4321;
        r.gid = 8765;
    }
    assert_same("uid/gid override", &want, &walk(f.path()));
}

#[test]
fn push_symlinks_in_prefixes_absolute_targets() {
    if !can_mount() {
        return;
    }
    let (_w, img) = image();
    let f = FuseMount::mount(&img, "push_symlinks_in,intr,max_read=65536,nosuid,private");
    let long = std::fs::read_link(f.path().join("link-long")).unwrap();
    let want = format!("{}/{}target", f.path().display(), "long/".repeat(40));
    assert_eq!(long.to_string_lossy(), want);
    // Relative targets stay as they are.
    assert_eq!(
        std::fs::read_link(f.path().join("link-short")).unwrap(),
        Path::new("one")
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
    if !can_mount() {
        return;
    }
    let (w, img) = image();
    let mnt = tempfile::tempdir().unwrap();
    let m = mnt.path().to_str().unwrap();
    let i = img.to_str().unwrap();
    refused(&[i, m, "-o", "rw"], "read-only");
    refused(
        &[i, m, "-o", "ro,frobnicate"],
        "unknown mount option 'frobnicate'",
    );
    refused(&[i, m, "-o", "cache_size=lots"], "not a size");
    refused(&["/nonexistent.img", m], "No such file");
    let junk = w.path().join("junk.img");
    std::fs::write(&junk, vec![0u8; 1 << 20]).unwrap();
    refused(&[junk.to_str().unwrap(), m], "not an ext2/ext3/ext4");
    // A journal that needs recovery: refused unless norecovery.
    let dirty = w.path().join("dirty.img");
    std::fs::copy(&img, &dirty).unwrap();
    run(Command::new("debugfs")
        .args(["-w", "-R", "feature needs_recovery"])
        .arg(&dirty));
    refused(&[dirty.to_str().unwrap(), m, "-f"], "norecovery");
    assert!(!mounted(mnt.path(), "fuse"));
    let mut f = FuseMount::mount(&dirty, "norecovery");
    assert!(f.path().join("sizes/f4096").exists());
    assert!(f.finish().is_some_and(|s| s.success()));
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
        if mounted(self.0, "fuse") {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
}

#[test]
fn daemon_mode_reports_success_and_sigterm_unmounts() {
    if !can_mount() {
        return;
    }
    let (_w, img) = image();
    let mnt = tempfile::tempdir().unwrap();
    let _g = DaemonGuard(mnt.path());
    let st = Command::new(BIN)
        .arg(&img)
        .arg(mnt.path())
        .status()
        .unwrap();
    assert!(st.success(), "daemon start: {st}");
    // The parent only exits 0 once the child has mounted.
    assert!(mounted(mnt.path(), "fuse"));
    assert_eq!(
        std::fs::read(mnt.path().join("one")).unwrap(),
        b"x",
        "read through the daemon"
    );
    let pid = server_pid(mnt.path()).expect("server process");
    // SAFETY: plain syscall.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    wait_until("unmount after SIGTERM", || !mounted(mnt.path(), "fuse"));
    wait_until("server exit", || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z ") || s.is_empty())
            .unwrap_or(true)
    });
}

#[test]
fn sigint_in_foreground_unmounts_and_exits_zero() {
    if !can_mount() {
        return;
    }
    let (_w, img) = image();
    let mut f = FuseMount::mount(&img, "");
    let pid = f.child.as_ref().unwrap().id() as i32;
    // SAFETY: plain syscall.
    unsafe { libc::kill(pid, libc::SIGINT) };
    wait_until("unmount after SIGINT", || !mounted(f.path(), "fuse"));
    let st = f.child.take().unwrap().wait().unwrap();
    assert!(st.success(), "exit {st}: {}", f.stderr());
}

/// Detaches a loop device on drop.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[test]
fn block_device_source_is_sized_by_ioctl() {
    if !can_mount() {
        return;
    }
    let (_w, img) = image();
    let out = run(Command::new("losetup")
        .args(["-f", "--show", "-r"])
        .arg(&img));
    let dev = Loop(String::from_utf8(out.stdout).unwrap().trim().to_string());
    let k = KernelMount::new(&img);
    let f = FuseMount::mount(Path::new(&dev.0), "");
    assert_same("loop device", &walk(k.path()), &walk(f.path()));
    assert_eq!(statvfs(k.path()), statvfs(f.path()));
    drop(f);
}
