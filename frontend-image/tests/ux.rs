//! The command line behaves as the classic tools it imitates: `ls -lh`
//! compared with GNU `ls -lh` on the tree the image was made from.

mod common;

use std::fs;
use std::path::Path;
use std::process::Output;

use common::{cmd, scratch};
use ext4_tests::oracle::mke2fs;

const BIN: &str = env!("CARGO_BIN_EXE_ext4-image");

fn tool(img: &Path, args: &[&str]) -> Output {
    cmd(BIN)
        .arg(img)
        .args(args)
        .output()
        .expect("run ext4-image")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// name -> size column of an `ls -l`-style listing (size is the 5th field,
/// the name the last).
fn sizes(listing: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = listing
        .lines()
        .filter(|l| !l.starts_with("total"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[f.len() - 1].to_string(), f[4].to_string())
        })
        .collect();
    v.sort();
    v
}

#[test]
fn ls_h_means_human_sizes_as_in_ls() {
    let dir = scratch("ux").join("human");
    let src = dir.join("src");
    fs::create_dir_all(&src).unwrap();
    // Around every rounding edge of ls -h: below 1K, exactly 1K, just
    // above (rounds up), 9.9K/10K, and sparse files in M and G.
    for n in [
        0u64,
        3,
        1023,
        1024,
        1025,
        10137,
        10138,
        10240,
        10241,
        1048575,
        1048576,
        3_000_000,
        1_073_741_825,
    ] {
        let f = fs::File::create(src.join(format!("f{n}"))).unwrap();
        f.set_len(n).unwrap();
    }
    let img = dir.join("h.img");
    mke2fs(&img, &["-t", "ext4"], Some(&src), "8M");

    let ours = tool(&img, &["ls", "-lh", "/"]);
    assert!(ours.status.success(), "ls -lh: {}", text(&ours.stderr));
    let ls = cmd("ls")
        .args(["-lhn", "--time-style=+%s"])
        .arg(&src)
        .output()
        .unwrap();
    let want = sizes(&text(&ls.stdout));
    let got: Vec<_> = sizes(&text(&ours.stdout))
        .into_iter()
        .filter(|(n, _)| n != "lost+found")
        .collect();
    assert_eq!(got, want, "ext4-image ls -lh vs ls -lh");

    // --help is still the help.
    let help = tool(&img, &["ls", "--help"]);
    assert!(help.status.success());
    assert!(text(&help.stdout).contains("Usage:"));
}

/// Run `c` with its standard output a pipe nobody reads any more.
fn into_closed_pipe(mut c: std::process::Command) -> Output {
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    unsafe { libc::close(fds[0]) };
    let w = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fds[1]) };
    c.stdout(w).output().expect("run")
}

#[test]
fn closed_pipe_ends_output_quietly_as_ls() {
    use std::os::unix::process::ExitStatusExt;
    let dir = scratch("ux").join("pipe");
    let src = dir.join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..50 {
        fs::write(src.join(format!("file{i}")), vec![b'x'; 100 * i]).unwrap();
    }
    let img = dir.join("p.img");
    mke2fs(&img, &["-t", "ext4"], Some(&src), "8M");

    // The oracle: what ls does when its reader has gone.
    let mut ls = cmd("ls");
    ls.arg("-lR").arg(&src);
    let ls = into_closed_pipe(ls);
    assert_eq!(
        ls.status.signal(),
        Some(libc::SIGPIPE),
        "ls: {:?}",
        ls.status
    );
    assert!(ls.stderr.is_empty());

    for args in [
        &["info"][..],
        &["info", "--json"],
        &["ls", "-lR", "/"],
        &["ls", "--json", "/"],
        &["stat", "--json", "/file49"],
        &["cat", "/file49"],
        &["map", "--json", "/file49"],
        &["check", "--json"],
        &["check"],
    ] {
        let mut c = cmd(BIN);
        c.arg(&img).args(args);
        let o = into_closed_pipe(c);
        assert_eq!(
            (o.status.signal(), text(&o.stderr)),
            (ls.status.signal(), String::new()),
            "ext4-image {args:?} into a closed pipe: {:?}",
            o.status
        );
    }
}

#[test]
fn checksum_errors_suggest_ignore_checksums() {
    let dir = scratch("ux").join("csum");
    let src = dir.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"hello\n").unwrap();
    let img = dir.join("c.img");
    mke2fs(
        &img,
        &["-t", "ext4", "-O", "metadata_csum"],
        Some(&src),
        "8M",
    );
    ext4_tests::oracle::debugfs_w(&img, "sif /f checksum 0x1234").unwrap();
    // The oracle says the damage is a checksum mismatch and nothing else.
    let (rc, fsck) = ext4_tests::oracle::e2fsck_check(&img);
    assert_eq!(rc, 4, "{fsck}");
    assert!(fsck.contains("checksum does not match inode"), "{fsck}");

    for args in [&["cat", "/f"][..], &["ls", "-l", "/"], &["stat", "/f"]] {
        let o = tool(&img, args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("checksum does not match"), "{args:?}: {err}");
        assert_eq!(
            err.matches("--ignore-checksums").count(),
            1,
            "{args:?}: {err}"
        );
    }
    // And the suggestion works.
    let o = cmd(BIN)
        .args(["--ignore-checksums"])
        .arg(&img)
        .args(["cat", "/f"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(o.stdout, b"hello\n");
}

#[test]
fn ls_l_marks_acls_with_plus_as_ls() {
    let dir = scratch("ux").join("acl");
    let src = dir.join("src");
    fs::create_dir_all(src.join("d-default")).unwrap();
    fs::create_dir_all(src.join("d-plain")).unwrap();
    for f in ["f-named-user", "f-named-group", "f-trivial", "f-plain"] {
        fs::write(src.join(f), b"x").unwrap();
    }
    let setfacl = |args: &[&str], f: &str| {
        let o = cmd("setfacl").args(args).arg(src.join(f)).output().unwrap();
        assert!(
            o.status.success(),
            "setfacl {args:?} {f}: {}",
            text(&o.stderr)
        );
    };
    setfacl(&["-m", "u:1234:r"], "f-named-user");
    setfacl(&["-m", "g:99:rw"], "f-named-group");
    setfacl(&["-m", "u::rw"], "f-trivial");
    setfacl(&["-d", "-m", "u:1234:rx"], "d-default");
    let img = dir.join("a.img");
    mke2fs(&img, &["-t", "ext4"], Some(&src), "8M");

    // mode column (the first field) by name, ours against GNU ls -l.
    let modes = |listing: &str| {
        let mut v: Vec<(String, String)> = listing
            .lines()
            .filter(|l| !l.starts_with("total") && !l.ends_with("lost+found"))
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f[f.len() - 1].to_string(), f[0].to_string())
            })
            .collect();
        v.sort();
        v
    };
    let ours = tool(&img, &["ls", "-l", "/"]);
    assert!(ours.status.success(), "{}", text(&ours.stderr));
    let ls = cmd("ls")
        .args(["-ln", "--time-style=+%s"])
        .arg(&src)
        .output()
        .unwrap();
    let want = modes(&text(&ls.stdout));
    assert!(want.iter().any(|(_, m)| m.ends_with('+')), "{want:?}");
    assert_eq!(modes(&text(&ours.stdout)), want);
}

/// `Label: value` lines as dumpe2fs -h prints them.
fn labelled(out: &str) -> std::collections::BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn truncated_image_is_named_and_info_still_shows_the_superblock() {
    let dir = scratch("ux").join("trunc");
    let src = dir.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    let img = dir.join("t.img");
    mke2fs(&img, &["-t", "ext4", "-b", "4096"], Some(&src), "16M");
    let f = fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.set_len(10 << 20).unwrap();
    drop(f);

    let d = cmd("dumpe2fs").arg("-h").arg(&img).output().unwrap();
    assert!(d.status.success(), "dumpe2fs -h: {}", text(&d.stderr));
    let theirs = labelled(&text(&d.stdout));
    let blocks: u64 = theirs["Block count"].parse().unwrap();
    let bsize: u64 = theirs["Block size"].parse().unwrap();

    let o = tool(&img, &["ls", "/"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        text(&o.stderr).trim_end(),
        format!(
            "ext4-image: cannot open {}: image is shorter than the filesystem ({} of {} bytes)",
            img.display(),
            10 << 20,
            blocks * bsize
        )
    );

    let o = tool(&img, &["info"]);
    assert!(o.status.success(), "info: {}", text(&o.stderr));
    let ours = labelled(&text(&o.stdout));
    for label in [
        "Filesystem UUID",
        "Filesystem features",
        "Block count",
        "Free blocks",
        "Inode count",
        "Free inodes",
        "Block size",
        "Blocks per group",
        "Filesystem created",
        "Journal inode",
    ] {
        assert!(theirs.contains_key(label), "dumpe2fs -h has no {label}");
        assert_eq!(ours.get(label), theirs.get(label), "{label}");
    }
    assert!(text(&o.stdout).contains("Warning: image is shorter than the filesystem"));
    let o = tool(&img, &["info", "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["warnings"].as_array().map(|w| w.len()), Some(1), "{v}");
}

/// `ext4-image check` and `e2fsck -fn` on `img`: (our exit, e2fsck's exit,
/// our output, e2fsck's).
fn both_checks(img: &Path) -> (Option<i32>, i32, String, String) {
    let ours = tool(img, &["check"]);
    let (rc, fsck) = ext4_tests::oracle::e2fsck_check(img);
    (ours.status.code(), rc, text(&ours.stdout), fsck)
}

/// A filesystem with the ea_inode feature whose /f keeps user.big in an EA
/// inode, made by debugfs (whose ea_set leaves i_blocks without the EA
/// inode's quota share; set so e2fsck passes). Returns the image, its
/// block size and /f's inode location (block, offset).
fn ea_inode_image(dir: &Path) -> (std::path::PathBuf, u64, u64, u64) {
    fs::create_dir_all(dir).unwrap();
    let img = dir.join("ea.img");
    let val = dir.join("val");
    fs::write(&val, vec![b'v'; 6000]).unwrap();
    mke2fs(
        &img,
        &[
            "-t",
            "ext4",
            "-O",
            "ea_inode,^metadata_csum",
            "-I",
            "256",
            "-b",
            "4096",
        ],
        None,
        "8M",
    );
    let dbg = |req: &str| ext4_tests::oracle::debugfs_w(&img, req).unwrap();
    let small = dir.join("small");
    fs::write(&small, b"hello\n").unwrap();
    dbg(&format!("write {} f", small.display()));
    dbg(&format!("ea_set -f {} f user.big", val.display()));
    dbg("sif f blocks 16");
    let imap = ext4_tests::oracle::debugfs(&img, "imap f").unwrap();
    let at = imap.split("located at block ").nth(1).unwrap();
    let (blk, off) = at.trim().split_once(", offset 0x").unwrap();
    let off = u64::from_str_radix(off.trim(), 16).unwrap();
    (img, 4096, blk.parse().unwrap(), off)
}

#[test]
fn check_follows_e2fsck_on_ea_inode_references() {
    use std::os::unix::fs::FileExt;
    let dir = scratch("ux").join("ea");
    let (base, bs, blk, off) = ea_inode_image(&dir);
    let (ours, rc, out, fsck) = both_checks(&base);
    assert_eq!((ours, rc), (Some(0), 0), "{out}\n{fsck}");

    // The feature cleared: the reference stays, e2fsck passes it.
    let nofeat = dir.join("nofeat.img");
    fs::copy(&base, &nofeat).unwrap();
    ext4_tests::oracle::debugfs_w(&nofeat, "feature -ea_inode").unwrap();
    let (ours, rc, out, fsck) = both_checks(&nofeat);
    assert_eq!(rc, 0, "e2fsck: {fsck}");
    assert_eq!(ours, Some(0), "ours: {out}");

    // The entry's value size patched to zero (and i_blocks to what e2fsck
    // then counts: the file's own block).
    let zero = dir.join("zero.img");
    fs::copy(&base, &zero).unwrap();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&zero)
        .unwrap();
    let at = blk * bs + off;
    let mut ino = vec![0u8; 256];
    f.read_exact_at(&mut ino, at).unwrap();
    let ibody = 128 + u16::from_le_bytes([ino[128], ino[129]]) as usize;
    assert_eq!(&ino[ibody..ibody + 4], &0xEA02_0000u32.to_le_bytes());
    let e = ibody + 4;
    assert_ne!(&ino[e + 4..e + 8], &[0; 4], "the entry names an EA inode");
    ino[e + 8..e + 12].copy_from_slice(&0u32.to_le_bytes());
    f.write_all_at(&ino, at).unwrap();
    drop(f);
    ext4_tests::oracle::debugfs_w(&zero, "sif f blocks 8").unwrap();
    let (ours, rc, out, fsck) = both_checks(&zero);
    assert_eq!(rc, 0, "e2fsck: {fsck}");
    assert_eq!(ours, Some(0), "ours: {out}");
}

/// GNU/Hurd filesystems: e2fsck 1.47 applies the same file type rule to
/// their directory entries as to Linux ones (pass2.c check_filetype has no
/// creator-OS case), and so does check: clean where e2fsck -fn passes,
/// flagged where it flags.
#[test]
fn check_agrees_with_e2fsck_on_hurd_filesystems() {
    let dir = scratch("ux").join("hurd");
    let src = dir.join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    std::os::unix::fs::symlink("f", src.join("l")).unwrap();

    // As the Hurd's mke2fs makes them (no filetype feature).
    let native = dir.join("native.img");
    mke2fs(&native, &["-o", "hurd"], Some(&src), "8M");
    let (ours, rc, out, fsck) = both_checks(&native);
    assert_eq!((ours, rc), (Some(0), 0), "{out}\n{fsck}");

    // With the filetype feature, creator OS patched to Hurd (byte 72 of
    // the superblock; no metadata_csum to keep its checksum out of it).
    let typed = dir.join("typed.img");
    mke2fs(
        &typed,
        &["-t", "ext4", "-b", "4096", "-O", "^metadata_csum"],
        Some(&src),
        "8M",
    );
    let f = fs::OpenOptions::new().write(true).open(&typed).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &1u32.to_le_bytes(), 1024 + 72).unwrap();
    drop(f);
    let info = text(
        &cmd("dumpe2fs")
            .arg("-h")
            .arg(&typed)
            .output()
            .unwrap()
            .stdout,
    );
    assert!(info.contains("Filesystem OS type:       Hurd"), "{info}");
    let (ours, rc, out, fsck) = both_checks(&typed);
    assert_eq!((ours, rc), (Some(0), 0), "{out}\n{fsck}");

    // An entry whose type contradicts its inode: both flag it.
    let bad = dir.join("bad.img");
    fs::copy(&typed, &bad).unwrap();
    let blocks = ext4_tests::oracle::debugfs(&bad, "blocks /").unwrap();
    let blk: u64 = blocks.split_whitespace().next().unwrap().parse().unwrap();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&bad)
        .unwrap();
    let bs = 4096u64;
    let mut b = vec![0u8; bs as usize];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, blk * bs).unwrap();
    let mut p = 0;
    let mut patched = false;
    while p + 8 <= b.len() {
        let rec = u16::from_le_bytes([b[p + 4], b[p + 5]]) as usize;
        let nl = b[p + 6] as usize;
        if &b[p + 8..p + 8 + nl] == b"f" {
            assert_eq!(b[p + 7], 1, "f is a regular file");
            b[p + 7] = 2;
            patched = true;
        }
        if rec == 0 {
            break;
        }
        p += rec;
    }
    assert!(patched);
    std::os::unix::fs::FileExt::write_all_at(&f, &b, blk * bs).unwrap();
    drop(f);
    let (ours, rc, out, fsck) = both_checks(&bad);
    assert_eq!(rc, 4, "{fsck}");
    assert!(fsck.contains("incorrect filetype"), "{fsck}");
    assert_eq!(ours, Some(1), "{out}");
    assert!(out.contains("file type does not match"), "{out}");
}
