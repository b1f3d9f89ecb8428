//! fuse2fs' options with a meaning for us, against the real thing:
//! `minixdf` reports the block count the kernel's ext4 reports with its
//! own `minixdf` (and the default the kernel's default, `bsddf`);
//! `max_read=` reaches the kernel's FUSE mount (/proc/mounts shows it);
//! `fakeroot` lets the ordinary user running the server edit root's files
//! and leaves on disk exactly what fuse2fs run the same way leaves.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use ext4_tests::fuse::{is_mounted, statvfs, FuseServer};
use ext4_tests::oracle::{debugfs_stat, mke2fs, KernelMount, Scratch};
use ext4_tests::util::{
    built_binary, require_e2fsprogs, require_fuse, require_kernel_ext4, require_tool,
};

#[test]
fn minixdf_and_max_read() {
    if !require_e2fsprogs() || !require_kernel_ext4() || !require_fuse() {
        return;
    }
    let dir = Scratch::new("fuse2fs-options");
    let img = dir.path().join("disk.img");
    mke2fs(&img, &["-t", "ext4"], None, "16M");
    let mut bad = Vec::new();
    for opt in ["minixdf", "bsddf"] {
        let k = KernelMount::mount(&img, true, opt).unwrap();
        let want = statvfs(k.path());
        drop(k);
        for name in ["ext4-fuse", "ext4-fuse-bsd"] {
            let bin = built_binary(name, name);
            let s = FuseServer::mount(&bin, &img, opt).unwrap();
            let got = statvfs(s.path());
            // [f_bsize, f_frsize, f_blocks, ...]: the block count.
            if got[2] != want[2] {
                bad.push(format!(
                    "{name} -o {opt}: f_blocks {} (kernel {})",
                    got[2], want[2]
                ));
            }
            s.unmount().unwrap();
        }
    }
    for name in ["ext4-fuse", "ext4-fuse-bsd"] {
        let bin = built_binary(name, name);
        let s = FuseServer::mount(&bin, &img, "max_read=65536").unwrap();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let line = mounts
            .lines()
            .find(|l| l.split(' ').nth(1) == s.path().to_str())
            .unwrap_or("")
            .to_string();
        if !line.contains("max_read=65536") {
            bad.push(format!("{name} -o max_read=65536: {line}"));
        }
        s.unmount().unwrap();
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// /dev/fuse opened by everyone for the test's length, as distributions
/// ship it (fusermount3 opens it with the caller's rights); mode restored
/// after.
struct OpenDevFuse(u32);

impl OpenDevFuse {
    fn new() -> OpenDevFuse {
        let mode = std::fs::metadata("/dev/fuse").unwrap().permissions().mode();
        let all = std::fs::Permissions::from_mode(0o666);
        std::fs::set_permissions("/dev/fuse", all).unwrap();
        OpenDevFuse(mode & 0o7777)
    }
}

impl Drop for OpenDevFuse {
    fn drop(&mut self) {
        let _ = std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(self.0));
    }
}

/// As the user `nobody`: mount `img` on `mnt` with `server -o fakeroot`,
/// append to root's 0644 file, make it 0600, create a file, unmount.
/// Returns what failed, if anything.
fn edit_as_nobody(server: &Path, img: &Path, mnt: &Path) -> Option<String> {
    let script = format!(
        "set -e; {server} {img} {mnt} -o fakeroot; trap 'fusermount3 -u {mnt}' EXIT; \
         echo more >> {mnt}/f; chmod 600 {mnt}/f; touch {mnt}/new",
        server = server.display(),
        img = img.display(),
        mnt = mnt.display(),
    );
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
        ])
        .arg(&script)
        .output()
        .unwrap();
    // fusermount3 -u returns before a detached server has closed the image.
    for _ in 0..200 {
        if !is_mounted(mnt) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
}

/// fuse2fs' `fakeroot` gives the unprivileged user running the server
/// root's rights over the image's files; ours does the same (by showing
/// every file as that user's, so the kernel's permission checks agree).
/// The same edits through fuse2fs and through each server must leave the
/// same owners, modes and sizes on disk, and a clean image.
#[test]
fn fakeroot_edits_as_fuse2fs_does() {
    if !require_e2fsprogs()
        || !require_fuse()
        || !require_tool("fuse2fs", "fuse2fs")
        || !require_tool("setpriv", "util-linux")
        || !require_tool("fusermount3", "fuse3")
    {
        return;
    }
    let dir = Scratch::new("fakeroot");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"root's\n").unwrap();
    std::fs::set_permissions(src.join("f"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let fresh = dir.path().join("fresh.img");
    mke2fs(&fresh, &["-t", "ext4"], Some(&src), "8M");
    let _dev = OpenDevFuse::new();
    let mut seen = Vec::new();
    let mut bad = Vec::new();
    for name in ["fuse2fs", "ext4-fuse", "ext4-fuse-bsd"] {
        let bin = if name == "fuse2fs" {
            Path::new("fuse2fs").to_path_buf()
        } else {
            built_binary(name, name)
        };
        let img = dir.path().join(format!("{name}.img"));
        std::fs::copy(&fresh, &img).unwrap();
        std::fs::set_permissions(&img, std::fs::Permissions::from_mode(0o666)).unwrap();
        let mnt = dir.path().join(format!("{name}.mnt"));
        std::fs::create_dir(&mnt).unwrap();
        std::fs::set_permissions(&mnt, std::fs::Permissions::from_mode(0o777)).unwrap();
        if let Some(err) = edit_as_nobody(&bin, &img, &mnt) {
            bad.push(format!("{name}: {err}"));
            if is_mounted(&mnt) {
                let _ = Command::new("umount").arg("-l").arg(&mnt).status();
            }
            continue;
        }
        let f = debugfs_stat(&img, "/f").unwrap();
        let new = debugfs_stat(&img, "/new").unwrap();
        let got = format!(
            "f: mode {:o} owner {}:{} size {}; new: mode {:o} owner {}:{}",
            f.perm, f.uid, f.gid, f.size, new.perm, new.uid, new.gid
        );
        let (code, out) = ext4_tests::oracle::e2fsck_check(&img);
        if code != 0 {
            bad.push(format!("{name}: e2fsck -fn exit {code}: {out}"));
        }
        seen.push((name, got));
    }
    if let Some((_, want)) = seen.iter().find(|(n, _)| *n == "fuse2fs") {
        for (name, got) in &seen {
            if got != want {
                bad.push(format!("{name}: {got}\n  fuse2fs: {want}"));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
