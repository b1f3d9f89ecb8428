//! A FUSE server's mount, from start to end, for both servers: a busy
//! mount point is refused (mounting over a tmpfs would hide it); a mount
//! someone put over ours is never unmounted when the server ends (a tmpfs
//! on top keeps its files); a server killed with SIGKILL leaves no dead
//! "Transport endpoint is not connected" mount; `errors=panic` stops the
//! server at the first damage and the mount goes with it. Judged by
//! /proc/self/mountinfo and by the tmpfs' own files.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ext4_tests::fuse::{is_mounted, FuseServer};
use ext4_tests::oracle::{debugfs_damage, mke2fs, Scratch};
use ext4_tests::util::{built_binary, require_e2fsprogs, require_fuse};

fn servers() -> [(&'static str, PathBuf); 2] {
    [
        ("ext4-fuse", built_binary("ext4-fuse", "ext4-fuse")),
        (
            "ext4-fuse-bsd",
            built_binary("ext4-fuse-bsd", "ext4-fuse-bsd"),
        ),
    ]
}

fn sh(args: &[&str]) {
    let st = Command::new(args[0]).args(&args[1..]).status().unwrap();
    assert!(st.success(), "{args:?}");
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Unmounts everything still on `p`, lazily, whatever happens.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for _ in 0..4 {
            if !is_mounted(&self.0) {
                break;
            }
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

fn image(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("good"), b"fine\n").unwrap();
    std::fs::write(src.join("bad"), vec![7u8; 100_000]).unwrap();
    let img = dir.join("disk.img");
    mke2fs(&img, &["-t", "ext4"], Some(&src), "8M");
    img
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a pid we started.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
}

#[test]
fn busy_foreign_and_dead_mounts() {
    if !require_e2fsprogs() || !require_fuse() {
        return;
    }
    let dir = Scratch::new("mount-lifecycle");
    let img = image(dir.path());
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let _cleanup = Cleanup(mnt.clone());
    let m = mnt.to_str().unwrap();
    let mut bad = Vec::new();
    for (name, bin) in servers() {
        // A busy mount point: refused, and the tmpfs keeps its file.
        sh(&["mount", "-t", "tmpfs", "tmpfs", m]);
        std::fs::write(mnt.join("mine"), b"tmpfs\n").unwrap();
        let log = dir.path().join("busy.log");
        let mut child = Command::new(&bin)
            .arg(&img)
            .arg(&mnt)
            .arg("-f")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        // A server that mounted over the tmpfs serves on: give it a while.
        let start = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break Some(st);
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let err = std::fs::read_to_string(&log).unwrap_or_default();
        if status.and_then(|s| s.code()) != Some(1) || !err.contains("busy") {
            bad.push(format!("{name} on a busy mount point: {status:?}, {err:?}"));
            // Ours went on top of the tmpfs: take it off.
            if std::fs::read(mnt.join("mine")).is_err() {
                let _ = Command::new("umount").arg("-l").arg(m).status();
            }
        }
        if std::fs::read(mnt.join("mine")).ok().as_deref() != Some(b"tmpfs\n".as_slice()) {
            bad.push(format!(
                "{name}: the tmpfs under the mount point lost its file"
            ));
        }
        sh(&["umount", m]);

        // A tmpfs mounted over ours: the server ending (SIGTERM) must not
        // take it down.
        let s = FuseServer::mount(&bin, &img, "").unwrap();
        let smnt = s.path().to_path_buf();
        let sm = smnt.to_str().unwrap().to_string();
        sh(&["mount", "-t", "tmpfs", "tmpfs", &sm]);
        std::fs::write(smnt.join("mine"), b"on top\n").unwrap();
        signal(s.pid().unwrap(), libc::SIGTERM);
        std::thread::sleep(Duration::from_millis(500));
        if std::fs::read(smnt.join("mine")).ok().as_deref() != Some(b"on top\n".as_slice()) {
            bad.push(format!(
                "{name}: ending the server unmounted the tmpfs mounted over it"
            ));
        }
        // Then both go: the tmpfs, and our mount the server left (it was
        // covered; unmounting it would have taken the tmpfs along).
        for _ in 0..2 {
            let _ = Command::new("umount").arg("-l").arg(&sm).status();
        }
        drop(s);

        // SIGKILL: no dead mount left behind.
        let mut s = FuseServer::mount(&bin, &img, "").unwrap();
        let smnt = s.path().to_path_buf();
        signal(s.pid().unwrap(), libc::SIGKILL);
        let _ = s.wait_exit();
        let start = Instant::now();
        while is_mounted(&smnt) && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if is_mounted(&smnt) {
            bad.push(format!("{name}: a dead mount is left after SIGKILL"));
        }
        drop(s);
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// fuse2fs' `errors=panic`: the first damage stops the server, and no
/// mount is left; without it the damaged file fails alone.
#[test]
fn errors_panic_stops_at_the_first_damage() {
    if !require_e2fsprogs() || !require_fuse() {
        return;
    }
    let dir = Scratch::new("errors-panic");
    let img = image(dir.path());
    debugfs_damage(&img, &["sif /bad block[0] 0x12345678".into()]);
    let mut bad = Vec::new();
    for (name, bin) in servers() {
        let s = FuseServer::mount(&bin, &img, "errors=continue").unwrap();
        let read_bad = std::fs::read(s.path().join("bad"));
        let read_good = std::fs::read(s.path().join("good"));
        if read_bad.is_ok() || read_good.is_err() {
            bad.push(format!(
                "{name} errors=continue: bad {read_bad:?}, good {read_good:?}"
            ));
        }
        s.unmount().unwrap();

        let mut s = FuseServer::mount(&bin, &img, "errors=panic").unwrap();
        let mnt = s.path().to_path_buf();
        let _ = std::fs::read(mnt.join("bad"));
        let st = s.wait_exit();
        wait_until("the mount to go", || !is_mounted(&mnt));
        let log = s.stderr();
        if st.is_none_or(|st| st.success()) || !log.contains("errors=panic") {
            bad.push(format!("{name} errors=panic: ended {st:?}, log {log:?}"));
        }
        drop(s);
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// For each server: mount the image in `dir` with a damaged file, the
/// server detached (no -f: it exits 0 once mounted) with `-o opts(name)`
/// if any, read the damaged file, unmount; `logged(name)` then returns the
/// line the log got, which must name the damage.
fn damage_logged_after_detaching(
    dir: &Path,
    opts: impl Fn(&str) -> Option<String>,
    mut logged: impl FnMut(&str) -> String,
) {
    let img = image(dir);
    debugfs_damage(&img, &["sif /bad block[0] 0x12345678".into()]);
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let _cleanup = Cleanup(mnt.clone());
    let mut bad = Vec::new();
    for (name, bin) in servers() {
        let mut cmd = Command::new(&bin);
        cmd.arg(&img).arg(&mnt);
        if let Some(o) = opts(name) {
            cmd.arg("-o").arg(o);
        }
        let st = cmd.status().unwrap();
        assert!(st.success() && is_mounted(&mnt), "{name}: {st}");
        let read = std::fs::read(mnt.join("bad"));
        sh(&["umount", mnt.to_str().unwrap()]);
        let line = logged(name);
        if read.is_ok() || !line.contains("corrupt") {
            bad.push(format!("{name}: read {read:?}, logged {line:?}"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// What the server logs reaches the user once it has detached from the
/// terminal: with `-o logfile=`, the failed read of a damaged file names
/// the inode in that file (stderr is /dev/null by then), for both servers.
#[test]
fn damage_reaches_the_log_file_after_detaching() {
    if !require_e2fsprogs() || !require_fuse() {
        return;
    }
    let dir = Scratch::new("logfile");
    let log = |name: &str| dir.path().join(format!("{name}.log"));
    damage_logged_after_detaching(
        dir.path(),
        |name| Some(format!("logfile={}", log(name).display())),
        |name| {
            let mut text = String::new();
            wait_until("the log line", || {
                text = std::fs::read_to_string(log(name)).unwrap_or_default();
                text.contains(" on inode ")
            });
            text
        },
    );
}

/// Without `-o logfile=`, a detached server's lines go to syslog: the
/// damage reaches a log daemon listening on /dev/log (played here by the
/// test, when the machine runs none), in syslog's own line format.
#[test]
fn damage_reaches_syslog_after_detaching() {
    if !require_e2fsprogs() || !require_fuse() {
        return;
    }
    let dev_log = Path::new("/dev/log");
    if dev_log.exists() {
        ext4_tests::util::skip("a log daemon owns /dev/log: its lines cannot be read here");
        return;
    }
    let daemon = std::os::unix::net::UnixDatagram::bind(dev_log).unwrap();
    struct Unlink<'a>(&'a Path);
    impl Drop for Unlink<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.0);
        }
    }
    let _unlink = Unlink(dev_log);
    daemon
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let dir = Scratch::new("syslog");
    damage_logged_after_detaching(
        dir.path(),
        |_| None,
        |name| {
            // <facility|priority>PROGRAM[PID]: message, as syslog(3) sends.
            let prefix = format!(">{name}[");
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(20) {
                let mut buf = [0u8; 4096];
                if let Ok(n) = daemon.recv(&mut buf) {
                    let got = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if got.starts_with('<') && got.contains(&prefix) && got.contains(" on inode ") {
                        return got;
                    }
                }
            }
            String::new()
        },
    );
}
