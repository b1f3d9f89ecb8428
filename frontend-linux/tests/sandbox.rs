//! The confined server (issue #8). Through the privileged helper
//! `ext4-fuse-mount`, and when `ext4-fuse` mounts by itself as root, the
//! process serving requests must run as an unprivileged user with no
//! capabilities, no_new_privs and a seccomp filter (read from
//! /proc/PID/status and every thread's), and still show exactly what the
//! kernel's ext4 shows (the shared whole-tree comparison of
//! `ext4_tests::fuse`). From inside the confined server, opening a path,
//! creating a socket or executing a program ends it with one line naming
//! the call; `-o nosandbox` lets the same probe through, which shows the
//! probe is real. A server handed descriptors that are not a FUSE device or
//! not an ext image refuses with one line and leaves nothing mounted.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ext4_tests::fuse::{compare_with_kernel, fuse_fields, is_mounted, FuseServer};
use ext4_tests::image::{build_image, matrix_spec};
use ext4_tests::snapshot::Report;
use ext4_tests::util::{require_e2fsprogs, require_fuse, require_kernel_ext4, target_dir};

const SERVER: &str = env!("CARGO_BIN_EXE_ext4-fuse");
const HELPER: &str = env!("CARGO_BIN_EXE_ext4-fuse-mount");

fn can_run() -> bool {
    require_e2fsprogs() && require_kernel_ext4() && require_fuse()
}

/// A scratch directory under the target dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let p = target_dir()
            .join("ext4-test-tmp")
            .join(format!("sandbox-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(p.join("mnt")).unwrap();
        Scratch(p)
    }
    fn mnt(&self) -> PathBuf {
        self.0.join("mnt")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let mnt = self.mnt();
        if is_mounted(&mnt) {
            let _ = Command::new("umount").arg("-l").arg(&mnt).status();
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn status_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default()
}

fn field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or("<missing>")
        .trim()
}

fn ppid(pid: u32) -> Option<u32> {
    field(&status_of(pid), "PPid").parse().ok()
}

/// Processes running `bin` whose parent is `parent`.
fn children_running(parent: u32, bin: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let argv0 = cmd.split(|&b| b == 0).next().unwrap_or_default();
        if argv0 == bin.as_bytes() && ppid(pid) == Some(parent) {
            out.push(pid);
        }
    }
    out
}

fn nobody() -> (u32, u32) {
    let u = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    (u.uid.as_raw(), u.gid.as_raw())
}

/// The confinement every server thread must show. Without iomap in this
/// kernel the server keeps no capability at all.
fn assert_confined(pid: u32, what: &str) {
    let (uid, gid) = nobody();
    let tasks: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    assert!(
        tasks.len() >= 2,
        "{what}: expected worker threads, got {tasks:?}"
    );
    for tid in tasks {
        let st = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
        let t = format!("{what}: thread {tid} ({})", field(&st, "Name"));
        assert_eq!(
            field(&st, "Uid"),
            format!("{uid}\t{uid}\t{uid}\t{uid}"),
            "{t}"
        );
        assert_eq!(
            field(&st, "Gid"),
            format!("{gid}\t{gid}\t{gid}\t{gid}"),
            "{t}"
        );
        assert_eq!(field(&st, "Groups"), "", "{t}: supplementary groups");
        for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(field(&st, cap), "0000000000000000", "{t}: {cap}");
        }
        assert_eq!(field(&st, "NoNewPrivs"), "1", "{t}");
        assert_eq!(field(&st, "Seccomp"), "2", "{t}: seccomp filter mode");
    }
    // Only stdio, the image and /dev/fuse (or their clones) are open, and
    // the io_uring queues when the kernel lets servers use them (the
    // default uring=auto then does; test-uring.sh turns it on).
    let rings =
        std::fs::read_to_string(ext4_fuse::uring::ENABLE_PARAM).is_ok_and(|v| v.trim() == "Y");
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        if matches!(e.file_name().to_str(), Some("0" | "1" | "2")) {
            continue;
        }
        let target = std::fs::read_link(e.path()).unwrap_or_default();
        let t = target.to_string_lossy();
        assert!(
            t == "/dev/fuse"
                || t.ends_with(".img")
                || t.starts_with("pipe:")
                || t.starts_with("socket:")
                || (rings && t == "anon_inode:[io_uring]"),
            "{what}: unexpected descriptor {} -> {t}",
            e.file_name().to_string_lossy()
        );
    }
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Mounted through the helper, the serving process is confined, and the
/// tree is the kernel's.
#[test]
fn helper_mount_is_confined_and_equals_the_kernel() {
    if !can_run() {
        return;
    }
    let img = build_image(matrix_spec("ext4"));
    // The helper (-f: it waits for the server, which is its child).
    let fuse = FuseServer::mount(Path::new(HELPER), &img.path, "allow_other").unwrap();
    let helper = fuse.pid().unwrap();
    let server = wait_for("the server process", || {
        children_running(helper, SERVER).first().copied()
    });
    let cmdline = std::fs::read(format!("/proc/{server}/cmdline")).unwrap();
    let args: Vec<_> = cmdline.split(|&b| b == 0).collect();
    assert!(
        args[1].starts_with(b"/dev/fd/") && args[2].starts_with(b"/dev/fd/"),
        "server not started on inherited descriptors: {:?}",
        String::from_utf8_lossy(&cmdline)
    );
    // Serving works after confinement (every worker answers something).
    for _ in 0..3 {
        assert!(std::fs::read_dir(fuse.path()).unwrap().count() > 3);
    }
    assert_confined(server, "helper-started server");
    let (st, log) = fuse.unmount().unwrap();
    assert!(st.success(), "helper exited with {st}: {log}");

    // The shared comparison with the kernel's ext4, through the helper.
    let mut report = Report::new("ext4-fuse-mount vs the kernel's ext4");
    let n = compare_with_kernel(
        Path::new(HELPER),
        img.spec.name,
        &img.path,
        &img.path,
        "",
        &fuse_fields(true),
        &mut report,
    );
    assert!(n > 20, "only {n} paths compared");
    report.finish();
}

/// `ext4-fuse` mounting by itself as root confines itself too; a signal
/// still leaves no mount behind (the privileged watcher unmounts); and
/// `-o nosandbox` really keeps root (the check above can fail).
#[test]
fn self_mounted_server_is_confined_and_unmounts_on_sigterm() {
    if !can_run() {
        return;
    }
    let img = build_image(matrix_spec("ext4"));
    let fuse = FuseServer::mount(Path::new(SERVER), &img.path, "").unwrap();
    let pid = fuse.pid().unwrap();
    assert!(std::fs::read_dir(fuse.path()).unwrap().count() > 3);
    assert_confined(pid, "self-mounted server");
    let mnt = fuse.path().to_path_buf();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_for("unmount after SIGTERM", || {
        (!is_mounted(&mnt)).then_some(())
    });
    drop(fuse);

    let fuse = FuseServer::mount(Path::new(SERVER), &img.path, "nosandbox").unwrap();
    let st = status_of(fuse.pid().unwrap());
    assert_eq!(field(&st, "Uid"), "0\t0\t0\t0");
    assert_eq!(field(&st, "Seccomp"), "0");
    let (st, log) = fuse.unmount().unwrap();
    assert!(st.success(), "{log}");
}

/// Run the helper in the foreground with the test probe; return (helper
/// exit code, everything written to stderr, whether still mounted).
fn probe(tag: &str, what: &str, opts: &str) -> (Option<i32>, String, bool) {
    let img = build_image(matrix_spec("ext4"));
    let dir = Scratch::new(tag);
    let log = dir.0.join("stderr");
    let mut child = Command::new(HELPER)
        .arg(&img.path)
        .arg(dir.mnt())
        .args(["-f", "-o", "ro", "-o", opts])
        .env("EXT4_FUSE_TEST_PROBE", what)
        .stdin(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        // Unconfined, the probe succeeds and the server keeps serving.
        if start.elapsed() > Duration::from_secs(3) && is_mounted(&dir.mnt()) {
            let _ = Command::new("umount").arg(dir.mnt()).status();
        }
        assert!(start.elapsed() < Duration::from_secs(30), "helper hangs");
        std::thread::sleep(Duration::from_millis(20));
    };
    let err = std::fs::read_to_string(&log).unwrap();
    (code, err, is_mounted(&dir.mnt()))
}

#[test]
fn confined_server_cannot_open_connect_or_exec() {
    if !can_run() {
        return;
    }
    for (what, call) in [
        ("open", "(openat)"),
        ("socket", "(socket)"),
        ("exec", "(execve)"),
    ] {
        let (code, err, mounted) = probe(&format!("probe-{what}"), what, "ro");
        let denied: Vec<_> = err
            .lines()
            .filter(|l| l.contains("sandbox: denied system call"))
            .collect();
        assert_eq!(denied.len(), 1, "{what}: {err:?}");
        assert!(denied[0].contains(call), "{what}: {err:?}");
        assert!(
            !err.contains("probe"),
            "{what}: the call went through: {err:?}"
        );
        // The helper saw the server die and took the mount down.
        assert_eq!(code, Some(1), "{what}: {err:?}");
        assert!(!mounted, "{what}: a dead mount was left behind");
    }
    // The same probe without the sandbox: the open succeeds (as root).
    let (code, err, _) = probe("probe-control", "open", "ro,nosandbox");
    assert!(err.contains("probe open: allowed"), "{err:?}");
    assert_eq!(code, Some(0), "{err:?}");
}

/// Loop devices backed by files under `dir`.
fn loops_under(dir: &Path) -> Vec<String> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/sys/block").unwrap().flatten() {
        if let Ok(b) = std::fs::read_to_string(e.path().join("loop/backing_file")) {
            if b.trim().starts_with(&*dir.to_string_lossy()) {
                v.push(b.trim().to_string());
            }
        }
    }
    v
}

/// Mount table lines naming anything under `dir` (other tests mount and
/// unmount in parallel, so only our own paths are looked for).
fn mounts_under(dir: &Path) -> Vec<String> {
    let d = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&d))
        .map(str::to_string)
        .collect()
}

/// `ext4-fuse /dev/fd/3 /dev/fd/4` with the given files on 3 and 4.
fn run_inherited(source: &File, mountpoint: &File) -> (bool, String) {
    let (s, m) = (source.as_raw_fd(), mountpoint.as_raw_fd());
    let mut cmd = Command::new(SERVER);
    cmd.args(["/dev/fd/3", "/dev/fd/4", "-f", "-o", "ro"]);
    // SAFETY: dup2 is async-signal-safe; the descriptors are open.
    unsafe {
        cmd.pre_exec(move || {
            // Via 100/101 so that 3 and 4 cannot overwrite each other.
            if libc::dup2(s, 100) < 0
                || libc::dup2(m, 101) < 0
                || libc::dup2(100, 3) < 0
                || libc::dup2(101, 4) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn inherited_descriptors_are_checked() {
    if !require_e2fsprogs() {
        return;
    }
    let dir = Scratch::new("inherited");
    let junk = dir.0.join("junk.img");
    File::create(&junk)
        .unwrap()
        .write_all(&vec![0x5a; 1 << 20])
        .unwrap();
    let img = build_image(matrix_spec("ext4"));
    let open = |p: &Path| File::open(p).unwrap();

    let mut cases: Vec<(File, File, &str)> = vec![
        (
            open(&img.path),
            open(Path::new("/dev/null")),
            "/dev/fd/4: not a FUSE device (a character device 1:3",
        ),
        (
            open(&img.path),
            open(&junk),
            "/dev/fd/4: not a FUSE device (a regular file",
        ),
        (
            open(&img.path),
            open(&dir.0),
            "/dev/fd/4: not a FUSE device (a directory",
        ),
    ];
    if let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        cases.push((
            open(&junk),
            f,
            "/dev/fd/3: not an ext2/ext3/ext4 filesystem",
        ));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .unwrap();
        cases.push((open(&dir.0), f, "/dev/fd/3: is a directory"));
    }
    for (source, mountpoint, want) in &cases {
        let (ok, err) = run_inherited(source, mountpoint);
        assert!(!ok, "{want}: succeeded");
        assert_eq!(err.lines().count(), 1, "{want}: expected one line: {err:?}");
        assert!(
            err.starts_with("ext4-fuse: ") && err.contains(want),
            "{want}: {err:?}"
        );
    }
    // Through the helper too: refused before anything is mounted.
    if nix::unistd::geteuid().is_root() {
        let out = Command::new(HELPER)
            .arg(&junk)
            .arg(dir.mnt())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert_eq!(err.lines().count(), 1, "{err:?}");
        assert!(err.contains("not an ext2/ext3/ext4 filesystem"), "{err:?}");
        assert!(!is_mounted(&dir.mnt()));
    }
    assert_eq!(
        mounts_under(&dir.0),
        Vec::<String>::new(),
        "a mount was left behind"
    );
    assert_eq!(
        loops_under(&dir.0),
        Vec::<String>::new(),
        "a loop device was left behind"
    );
}

/// The systemd unit's design: the helper runs in a private mount namespace
/// where the whole tree is a read-only bind (ProtectSystem=strict) whose
/// propagation stays shared (MountFlags=shared), and the mount it makes
/// there still appears outside. Modelled with unshare(1) on a shared bind
/// mount standing in for the host's shared root.
#[test]
fn mount_made_in_a_read_only_namespace_reaches_the_host() {
    if !can_run() || !ext4_tests::util::have_tool("unshare") {
        return;
    }
    let img = build_image(matrix_spec("ext4"));
    let dir = Scratch::new("namespace");
    let root = dir.0.join("host");
    let mnt = root.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let sh = |args: &[&str]| {
        let st = Command::new(args[0]).args(&args[1..]).status().unwrap();
        assert!(st.success(), "{args:?}");
    };
    let r = root.to_str().unwrap();
    sh(&["mount", "--bind", r, r]);
    sh(&["mount", "--make-shared", r]);
    let inner = format!(
        "mount --bind {r} {r} && mount -o remount,bind,ro {r} && {HELPER} {} {} -o ro",
        img.path.display(),
        mnt.display()
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "unchanged", "sh", "-c", &inner])
        .output()
        .unwrap();
    let seen = is_mounted(&mnt) && std::fs::read_dir(&mnt).map_or(0, |d| d.count()) > 3;
    // Detach everything before judging (lazily: the propagated copies).
    for p in [&mnt, &root] {
        for _ in 0..4 {
            if !is_mounted(p) {
                break;
            }
            let _ = Command::new("umount").arg("-l").arg(p).status();
        }
    }
    assert!(
        out.status.success(),
        "helper in the namespace: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        seen,
        "the mount made in the namespace is not visible outside"
    );
}
