//! FUSE over io_uring (`-o uring=`) on this kernel, whose fuse module has
//! it behind the `enable_uring` parameter: the transport follows the
//! parameter from one mount to the next, `uring=on` without it fails with
//! one line, and a mount served through the rings shows the kernel's ext4's
//! tree. Which transport served is read from the kernel, not the server:
//! the server's io_uring descriptors in /proc and their completion counts
//! (`CqTail` in fdinfo).
//!
//! The whole read-only and read-write suites also run a second time with
//! `uring=on` (scripts/test-uring.sh).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

use ext4_tests::fuse::{fuse_fields, is_mounted, FuseServer};
use ext4_tests::image::{build_image, MATRIX};
use ext4_tests::oracle::KernelMount;
use ext4_tests::snapshot::{diff, host_snapshot, Compare, Report, WalkOptions};
use ext4_tests::util::{require_e2fsprogs, require_fuse, require_kernel_ext4, skip};

const BIN: &str = env!("CARGO_BIN_EXE_ext4-fuse");
const PARAM: &str = "/sys/module/fuse/parameters/enable_uring";

/// The module parameter, put back as it was when dropped; the tests that
/// set it take turns.
struct Param(String, #[allow(dead_code)] MutexGuard<'static, ()>);

static TURN: Mutex<()> = Mutex::new(());

impl Param {
    fn save() -> Option<Param> {
        let turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
        let was = fs::read_to_string(PARAM).ok()?;
        Some(Param(was.trim().into(), turn))
    }
    fn set(&self, on: bool) {
        fs::write(PARAM, if on { "Y" } else { "N" }).unwrap();
    }
}

impl Drop for Param {
    fn drop(&mut self) {
        let _ = fs::write(PARAM, &self.0);
    }
}

/// The server's io_uring descriptors and the completions each has posted.
fn rings(pid: u32) -> Vec<u64> {
    let mut out = Vec::new();
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return out;
    };
    for fd in fds.flatten() {
        let target = fs::read_link(fd.path()).unwrap_or_default();
        if target.to_string_lossy() != "anon_inode:[io_uring]" {
            continue;
        }
        let info = fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        let tail = info
            .lines()
            .find_map(|l| l.strip_prefix("CqTail:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        out.push(tail);
    }
    out
}

/// The server's rings once all `want` are set up: the server makes them
/// after answering FUSE_INIT, which is after the mount shows up, so a
/// check made straight after mounting can see none yet.
fn rings_when_ready(pid: u32, want: usize) -> Vec<u64> {
    let start = std::time::Instant::now();
    loop {
        let r = rings(pid);
        if r.len() >= want || start.elapsed() > std::time::Duration::from_secs(10) {
            return r;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn possible_cpus() -> usize {
    ext4_fuse::uring::possible_cpus().unwrap()
}

/// Walk the FUSE mount and the kernel's mount of `img`; every difference
/// goes to `report`. Returns the entries compared.
fn walk_both(fuse: &Path, kernel: &Path, title: &str, report: &mut Report) -> usize {
    let walk = WalkOptions {
        ioctls: false,
        ..WalkOptions::default()
    };
    let want = host_snapshot(kernel, walk);
    let got = host_snapshot(fuse, walk);
    let fields = fuse_fields(true);
    let cmp = Compare {
        fields: &fields,
        ignore_dir_size: false,
        ignore_paths: &[],
    };
    report.section(title, diff(&want, &got, &cmp), want.entries.len());
    want.entries.len()
}

#[test]
fn transport_follows_enable_uring() {
    if !(require_e2fsprogs() && require_kernel_ext4() && require_fuse()) {
        return;
    }
    let Some(param) = Param::save() else {
        skip("this kernel's fuse module has no enable_uring parameter (FUSE over io_uring needs 6.14+)");
        return;
    };
    let spec = MATRIX.iter().find(|s| s.name == "ext4").unwrap();
    let img = build_image(spec);
    let kernel = KernelMount::ro(&img.path).unwrap();
    let mut report = Report::new("ext4-fuse over io_uring vs the kernel's ext4");

    // Disabled: `on` refuses in one line that says how to enable it and
    // mounts nothing; `auto` serves /dev/fuse.
    param.set(false);
    let dir = tempfile::tempdir().unwrap();
    let mnt: PathBuf = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let out = Command::new(BIN)
        .arg(&img.path)
        .arg(&mnt)
        .args(["-f", "-o", "ro,uring=on"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "uring=on while disabled: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(err.contains("enable_uring"), "says how to enable it: {err}");
    assert!(!is_mounted(&mnt), "uring=on left a mount behind");

    let s = FuseServer::mount(Path::new(BIN), &img.path, "uring=auto").unwrap();
    walk_both(
        s.path(),
        kernel.path(),
        "enable_uring=N, uring=auto",
        &mut report,
    );
    // Checked after the walk: rings, had any been made, would exist by now.
    assert_eq!(
        rings(s.pid().unwrap()),
        Vec::<u64>::new(),
        "rings while disabled"
    );
    let (st, log) = s.unmount().unwrap();
    assert!(st.success(), "{st}: {log}");

    // Enabled: `threads=` spread over the queues, one ring per entry, at
    // least one entry per possible CPU; the walk's requests are served
    // through them.
    param.set(true);
    let cpus = possible_cpus();
    for (opts, entries) in [
        ("uring=auto,threads=1".to_string(), 1),
        (format!("uring=on,threads={}", 2 * cpus), 2),
        (format!("uring=on,threads={}", 2 * cpus + 1), 3),
    ] {
        let opts = opts.as_str();
        let s = FuseServer::mount(Path::new(BIN), &img.path, opts).unwrap();
        let pid = s.pid().unwrap();
        let before = rings_when_ready(pid, cpus * entries);
        assert_eq!(before.len(), cpus * entries, "{opts}: rings {before:?}");
        let n = walk_both(
            s.path(),
            kernel.path(),
            &format!("enable_uring=Y, {opts}"),
            &mut report,
        );
        let served: u64 = rings(pid).iter().sum::<u64>() - before.iter().sum::<u64>();
        println!("{opts}: {n} entries walked, {served} requests through the rings");
        assert!(
            served as usize >= n,
            "{opts}: only {served} ring completions for a walk of {n} entries"
        );
        let (st, log) = s.unmount().unwrap();
        assert!(st.success(), "{opts}: {st}: {log}");
    }

    // And off again: the next mount is back on /dev/fuse.
    param.set(false);
    let s = FuseServer::mount(Path::new(BIN), &img.path, "").unwrap();
    fs::read_dir(s.path()).unwrap().for_each(drop);
    assert!(rings(s.pid().unwrap()).is_empty());
    let (st, log) = s.unmount().unwrap();
    assert!(st.success(), "{st}: {log}");
    drop(param);
    report.finish();
}

/// A read-write mount through the rings: writes, fsync and unmount reach
/// the image (`e2fsck -fn` clean, the kernel reads what was written), and
/// unmounting or kill -9 leaves no server, ring or dead mount behind
/// (the next mount replays the journal).
#[test]
fn writes_through_the_rings() {
    if !(require_e2fsprogs() && require_kernel_ext4() && require_fuse()) {
        return;
    }
    let Some(param) = Param::save() else {
        skip("this kernel's fuse module has no enable_uring parameter");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("rw.img");
    ext4_tests::oracle::mke2fs(&img, &["-t", "ext4"], None, "256M");
    param.set(true);
    let s = FuseServer::mount_rw(Path::new(BIN), &img, "uring=on").unwrap();
    let pid = s.pid().unwrap();
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i * 7 + i / 4096) as u8)
        .collect();
    for i in 0..50 {
        let d = s.path().join(format!("d{}", i % 5));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(format!("f{i}")), &data[..(i * 60_000) % data.len()]).unwrap();
    }
    fs::write(s.path().join("big"), &data).unwrap();
    fs::File::open(s.path().join("big"))
        .unwrap()
        .sync_all()
        .unwrap();
    fs::rename(s.path().join("d0"), s.path().join("moved")).unwrap();
    fs::remove_file(s.path().join("d1/f1")).unwrap();
    let served: u64 = rings(pid).iter().sum();
    assert!(served > 150, "only {served} requests through the rings");
    let (st, log) = s.unmount().unwrap();
    assert!(st.success(), "{st}: {log}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the server is still running after unmount"
    );

    // A killed server: its watcher takes the mount down, and the rings
    // and threads go with the process.
    let opts = format!("uring=on,threads={}", 2 * possible_cpus());
    let mut s = FuseServer::mount_rw(Path::new(BIN), &img, &opts).unwrap();
    let pid = s.pid().unwrap();
    assert_eq!(
        rings_when_ready(pid, 2 * possible_cpus()).len(),
        2 * possible_cpus()
    );
    {
        use std::io::Write;
        let mut f = fs::File::create(s.path().join("after-kill")).unwrap();
        f.write_all(b"x").unwrap();
        f.sync_all().unwrap();
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(s.wait_exit().is_some(), "the killed server did not go");
    let start = std::time::Instant::now();
    while is_mounted(s.path()) {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "a dead mount is left after kill -9"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    drop(s);
    // The next mount replays what the killed one journaled (the fsynced file).
    let s = FuseServer::mount_rw(Path::new(BIN), &img, "uring=on").unwrap();
    assert_eq!(fs::read(s.path().join("after-kill")).unwrap(), b"x");
    let (st, log) = s.unmount().unwrap();
    assert!(st.success(), "{st}: {log}");
    drop(param);
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&img)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "e2fsck -fn: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let k = KernelMount::ro(&img).unwrap();
    assert_eq!(fs::read(k.path().join("big")).unwrap(), data);
    for i in 0..50 {
        let dirname = match i % 5 {
            0 => "moved".to_string(),
            n => format!("d{n}"),
        };
        let p = k.path().join(dirname).join(format!("f{i}"));
        if i == 1 {
            assert!(!p.exists());
        } else {
            assert_eq!(
                fs::read(&p).unwrap(),
                &data[..(i * 60_000) % data.len()],
                "{p:?}"
            );
        }
    }
}
