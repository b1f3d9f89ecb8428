//! Edits are crash-safe like a mount's writes: `ext4-image put` of a tree
//! killed (SIGKILL) at a random moment leaves an image that the kernel's
//! ext4 mounts (replaying the journal) with `e2fsck -fn` clean after, in
//! which every file holds a prefix of its source's bytes (never stale or
//! foreign data); the same crashed image opened read-write by the next
//! `ext4-image` edit (its own replay) is clean after that edit too.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{cmd, fsck_clean, scratch};
use ext4_tests::oracle::KernelMount;
use ext4_tests::rng::Rng;
use ext4_tests::util::{built_binary, require_e2fsprogs, require_kernel_ext4};

/// Every regular file under `root` (the mount) holds a prefix of the
/// source file of the same relative path under `src`; their number.
fn prefixes_of_source(root: &Path, src: &Path, rel: &Path) -> usize {
    let mut n = 0;
    for e in fs::read_dir(root.join(rel)).unwrap() {
        let e = e.unwrap();
        let r = rel.join(e.file_name());
        let t = e.file_type().unwrap();
        if t.is_dir() {
            n += prefixes_of_source(root, src, &r);
        } else if t.is_file() {
            let got = fs::read(root.join(&r)).unwrap();
            let want = fs::read(src.join(&r)).unwrap();
            assert!(
                got.len() <= want.len() && got[..] == want[..got.len()],
                "{}: {} bytes that are not a prefix of the source's {}",
                r.display(),
                got.len(),
                want.len()
            );
            n += 1;
        }
    }
    n
}

#[test]
fn put_killed_at_random_moments_leaves_a_consistent_image() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    let dir = scratch("edit-crash");
    let src = dir.join("tree");
    let mut rng = Rng::new(7);
    for d in 0..12 {
        fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
        for f in 0..25 {
            let len = 1 + rng.below(400_000) as usize;
            let data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            fs::write(src.join(format!("d{d}/f{f}")), data).unwrap();
        }
    }
    let bin = built_binary("ext4-image", "ext4-image");
    let base = dir.join("base.img");
    let o = cmd("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-J", "size=8"])
        .arg(&base)
        .arg("256M")
        .output()
        .unwrap();
    assert!(o.status.success());
    for round in 0..4u64 {
        let img = dir.join(format!("crash-{round}.img"));
        fs::copy(&base, &img).unwrap();
        let mut child = Command::new(&bin)
            .arg(&img)
            .args(["--commit", "0", "put", "-q"])
            .arg(&src)
            .arg("/tree")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(30 + rng.below(600)));
        let _ = child.kill();
        let status = child.wait().unwrap();
        // The kernel replays the journal; the tree must then be clean.
        let kimg = dir.join(format!("crash-{round}-kernel.img"));
        fs::copy(&img, &kimg).unwrap();
        let files = {
            let m =
                KernelMount::mount(&kimg, false, "").expect("kernel mount of the crashed image");
            let n = if m.path().join("tree").is_dir() {
                prefixes_of_source(&m.path().join("tree"), &src, Path::new(""))
            } else {
                0
            };
            m.unmount().unwrap();
            n
        };
        fsck_clean(&kimg, &format!("round {round}, replayed by the kernel"));
        // The next edit replays it itself.
        let o = Command::new(&bin)
            .arg(&img)
            .args(["mkdir", "-p", "/after/crash"])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "round {round}: the edit after the crash: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        fsck_clean(&img, &format!("round {round}, replayed by ext4-image"));
        eprintln!("round {round}: put ended by {status}; {files} files (each a prefix of its source) after the kernel's replay");
        let _ = fs::remove_file(&img);
        let _ = fs::remove_file(&kimg);
    }
}
