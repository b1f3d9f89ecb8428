//! fuse2fs' options with a meaning for us, against the real thing:
//! `minixdf` reports the block count the kernel's ext4 reports with its
//! own `minixdf` (and the default the kernel's default, `bsddf`);
//! `max_read=` reaches the kernel's FUSE mount (/proc/mounts shows it).

use ext4_tests::fuse::{statvfs, FuseServer};
use ext4_tests::oracle::{mke2fs, KernelMount, Scratch};
use ext4_tests::util::{built_binary, require_e2fsprogs, require_fuse, require_kernel_ext4};

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
