//! `check`'s global consistency checks (link counts, directory structure,
//! bitmaps and free counts, multiply-claimed blocks) against `e2fsck -fn`:
//! images built with `mke2fs -d`, damaged with `debugfs -w`, must be
//! flagged by both, naming the inode, block or group concerned; the
//! e2fsprogs corpus images `e2fsck` calls clean must still check clean.
//! The engine is also run with a tiny memory budget (one group per window,
//! many passes) and must find the same problems.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::cmd;
use ext4_tests::oracle::e2fsck_check;

use ext4_engine::check::{CheckOptions, Checker, DEFAULT_MEMORY};
use ext4_engine::file_device::FileDevice;
use ext4_engine::{OpenOptions, Volume};

const BIN: &str = env!("CARGO_BIN_EXE_ext4-image");

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

fn scratch() -> &'static Path {
    common::scratch("check-global")
}

/// A small tree: files, a hard link, nested directories.
fn tree() -> PathBuf {
    let src = scratch().join("src");
    if src.exists() {
        return src;
    }
    fs::create_dir_all(src.join("d1/d2")).unwrap();
    fs::create_dir_all(src.join("d3")).unwrap();
    let data = |n: usize| (0..n).map(|i| (i * 7 % 251) as u8).collect::<Vec<u8>>();
    fs::write(src.join("a"), data(40_000)).unwrap();
    fs::write(src.join("b"), data(9_000)).unwrap();
    fs::write(src.join("d1/f"), data(3_000)).unwrap();
    fs::write(src.join("d1/d2/g"), data(100)).unwrap();
    fs::hard_link(src.join("a"), src.join("d3/a-link")).unwrap();
    src
}

/// Build `name` with `mke2fs -d` (1 KiB blocks, several groups).
fn build(name: &str, args: &[&str]) -> PathBuf {
    let img = scratch().join(name);
    let o = cmd("mke2fs")
        .args(["-q", "-F", "-b", "1024", "-N", "256"])
        .args(args)
        .arg("-d")
        .arg(tree())
        .arg(&img)
        .arg("40M")
        .output()
        .unwrap();
    assert!(o.status.success(), "mke2fs: {}", out(&o));
    assert_eq!(e2fsck(&img), 0, "{name} is clean to begin with");
    img
}

fn e2fsck(img: &Path) -> i32 {
    e2fsck_check(img).0
}

fn debugfs(img: &Path, req: &str) -> String {
    out(&cmd("debugfs").args(["-R", req]).arg(img).output().unwrap())
}

/// Run requests with `debugfs -w`.
fn damage(img: &Path, reqs: &[String]) {
    let f = img.with_extension("cmds");
    fs::write(&f, reqs.join("\n") + "\n").unwrap();
    let o = cmd("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&f)
        .arg(img)
        .output()
        .unwrap();
    assert!(o.status.success(), "debugfs: {}", out(&o));
}

fn ino(img: &Path, path: &str) -> u32 {
    let s = debugfs(img, &format!("stat {path}"));
    let at = s.find("Inode: ").expect("debugfs stat") + 7;
    s[at..].split_whitespace().next().unwrap().parse().unwrap()
}

/// Physical blocks of `path` (data blocks, in file order).
fn blocks(img: &Path, path: &str) -> Vec<u64> {
    debugfs(img, &format!("blocks {path}"))
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// A free block, as debugfs finds it.
fn free_block(img: &Path) -> u64 {
    let s = debugfs(img, "ffb 1 20000");
    s.split_whitespace()
        .filter_map(|w| w.parse().ok())
        .next_back()
        .expect("a free block")
}

fn check(img: &Path) -> (i32, String) {
    let o = cmd(BIN).arg(img).arg("check").output().unwrap();
    (o.status.code().unwrap_or(-1), out(&o))
}

/// Problems the engine reports with `budget` bytes of global state, and
/// how many passes that took.
fn engine_problems(img: &Path, budget: usize) -> (Vec<String>, u32) {
    let vol = Volume::open(
        FileDevice::open(img, true).unwrap(),
        &OpenOptions::default(),
    )
    .unwrap();
    let mut chk = Checker::new(&vol, &CheckOptions::default(), budget);
    let passes = chk.passes();
    let mut v = Vec::new();
    let mut put = |e: &ext4_engine::Error| v.push(e.to_string());
    while chk.begin_pass(&mut put).is_some() {
        for g in 0..vol.sb().group_count {
            chk.check_group(g, &mut put);
        }
        chk.end_pass(&mut put);
    }
    v.sort();
    (v, passes)
}

/// Copy `base`, damage it, and require both e2fsck and check to flag it,
/// check with a line naming `object` and saying `what`.
fn case(base: &Path, name: &str, reqs: &[String], object: &str, what: &str, windowed: bool) {
    let img = scratch().join(format!("{name}.img"));
    fs::copy(base, &img).unwrap();
    damage(&img, reqs);
    assert_eq!(e2fsck(&img), 4, "{name}: e2fsck -fn should flag it");
    let (rc, text) = check(&img);
    assert_eq!(rc, 1, "{name}: check should flag it:\n{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("problem:") && l.contains(object) && l.contains(what)),
        "{name}: no problem line naming {object:?} and saying {what:?}:\n{text}"
    );
    // One window per group: the same problems, found over many passes.
    let (whole, p1) = engine_problems(&img, DEFAULT_MEMORY);
    let (cut, pn) = engine_problems(&img, 1);
    assert_eq!(p1, 1);
    assert!(pn > 1, "a tiny budget takes several passes");
    if windowed {
        assert_eq!(whole, cut, "{name}: windowed passes differ");
    } else {
        assert!(!cut.is_empty());
    }
    let _ = fs::remove_file(&img);
}

#[test]
fn damaged_images_are_flagged_like_e2fsck() {
    let base = build("base.img", &["-t", "ext4"]);
    // Undamaged, in one window or many: clean.
    assert_eq!(check(&base).0, 0, "{}", check(&base).1);
    assert!(engine_problems(&base, DEFAULT_MEMORY).0.is_empty());
    let (v, passes) = engine_problems(&base, 1);
    assert!(v.is_empty() && passes > 1, "{v:?}");

    let a = ino(&base, "/a");
    let b = ino(&base, "/b");
    let f = ino(&base, "/d1/f");
    let d1 = ino(&base, "/d1");
    let d2 = ino(&base, "/d1/d2");
    let s = |x: &str| x.to_string();
    case(
        &base,
        "links",
        &[s("sif /b links_count 3")],
        &format!("inode {b} "),
        "link count does not match the directory entries",
        true,
    );
    case(
        &base,
        "dirlinks",
        &[s("sif /d1 links_count 9")],
        &format!("inode {d1} "),
        "directory link count does not match",
        true,
    );
    let a0 = blocks(&base, "/a")[0];
    case(
        &base,
        "freeb",
        &[format!("freeb {a0}")],
        &format!("block {a0} "),
        "in use but marked free in the block bitmap",
        true,
    );
    let fb = free_block(&base);
    case(
        &base,
        "setb",
        &[format!("setb {fb}")],
        &format!("block {fb} "),
        "marked in use in the block bitmap but nothing uses it",
        true,
    );
    case(
        &base,
        "clri",
        &[s("clri /b")],
        &format!("inode {b} "),
        "marked in use in the inode bitmap but not in use",
        true,
    );
    case(
        &base,
        "freei",
        &[s("freei /b")],
        &format!("inode {b} "),
        "marked free in the inode bitmap",
        true,
    );
    case(
        &base,
        "unlink",
        &[s("unlink /d1/f")],
        &format!("inode {f} "),
        "no directory entry names it",
        true,
    );
    case(
        &base,
        "ln",
        &[s("ln /b /d1/b2")],
        &format!("inode {b} "),
        "link count does not match the directory entries",
        true,
    );
    case(
        &base,
        "unlink-dir",
        &[s("unlink /d1/d2")],
        &format!("inode {d2} "),
        "not linked from any directory",
        true,
    );
    case(
        &base,
        "dir-twice",
        &[s("ln /d1/d2 /d3/d2-again")],
        &format!("inode {d2} "),
        "linked from more than one directory entry",
        true,
    );
    // d1 named only from inside its own subtree: a loop off the root.
    case(
        &base,
        "loop",
        &[s("ln /d1 /d1/d2/back"), s("unlink /d1")],
        "directory is in a loop",
        "not reachable from the root",
        false,
    );
    case(
        &base,
        "dotdot",
        &[s("ln /d1/d2 /d3/d2"), s("unlink /d1/d2")],
        &format!("inode {d2} "),
        "'..' does not name the directory that links it",
        true,
    );
    case(
        &base,
        "free-blocks-count",
        &[
            s("set_bg 1 free_blocks_count 17"),
            s("set_bg 1 checksum calc"),
        ],
        "group descriptor 1 ",
        "free blocks count does not match",
        true,
    );
    case(
        &base,
        "free-inodes-count",
        &[
            s("set_bg 0 free_inodes_count 3"),
            s("set_bg 0 checksum calc"),
        ],
        "group descriptor 0 ",
        "free inodes count does not match",
        true,
    );
    case(
        &base,
        "dirs-count",
        &[
            s("set_bg 0 used_dirs_count 40"),
            s("set_bg 0 checksum calc"),
        ],
        "group descriptor 0 ",
        "directories count does not match",
        true,
    );
    case(
        &base,
        "size",
        &[s("sif /a size 10")],
        &format!("inode {a} "),
        "i_size is smaller than the initialized blocks",
        true,
    );
    case(
        &base,
        "dir-size",
        &[s("sif /d1 size 1500")],
        &format!("inode {d1} "),
        "directory size is not a whole number of blocks",
        true,
    );
    case(
        &base,
        "i_blocks",
        &[s("sif /a blocks 2")],
        &format!("inode {a} "),
        "i_blocks does not match the blocks the inode maps",
        true,
    );
}

#[test]
fn multiply_claimed_blocks_are_flagged_like_e2fsck() {
    // Block-mapped (ext2) files, so debugfs can point one at another's block.
    let base = build("ext2.img", &["-t", "ext2"]);
    assert_eq!(check(&base).0, 0, "{}", check(&base).1);
    let a0 = blocks(&base, "/a")[0];
    let b = ino(&base, "/b");
    let a = ino(&base, "/a");
    let img = scratch().join("dup.img");
    fs::copy(&base, &img).unwrap();
    damage(&img, &[format!("sif /b block[0] {a0}")]);
    assert_eq!(e2fsck(&img), 4);
    let (rc, text) = check(&img);
    assert_eq!(rc, 1, "{text}");
    // Whichever inode claims it second is named at once.
    assert!(
        text.lines().any(|l| (l.contains(&format!("inode {b} "))
            || l.contains(&format!("inode {a} ")))
            && l.contains("also claims")),
        "{text}"
    );
    // The owners pass names every owner of the block (e2fsck's pass 1B).
    let after = text
        .split(&format!(
            "block {a0} is corrupt: claimed by more than one owner"
        ))
        .nth(1)
        .unwrap_or_else(|| panic!("no owners report for block {a0}: {text}"));
    for i in [a, b] {
        assert!(
            after.contains(&format!(
                "inode {i} is corrupt: claims the multiply-claimed block"
            )),
            "inode {i} not named as an owner of block {a0}: {text}"
        );
    }
    let (whole, _) = engine_problems(&img, DEFAULT_MEMORY);
    let (cut, _) = engine_problems(&img, 1);
    assert_eq!(whole, cut);
    // A block pointer past the end of the filesystem.
    let img2 = scratch().join("outside.img");
    fs::copy(&base, &img2).unwrap();
    damage(&img2, &["sif /b block[1] 99999999".to_string()]);
    assert_eq!(e2fsck(&img2), 4);
    let (rc, text) = check(&img2);
    assert_eq!(rc, 1, "{text}");
    assert!(
        text.contains(&format!("inode {b} ")) && text.contains("outside the filesystem"),
        "{text}"
    );
}

#[test]
fn bigalloc_and_inline_images_check_clean() {
    for (name, args) in [
        (
            "bigalloc.img",
            &["-t", "ext4", "-O", "bigalloc", "-C", "16384"][..],
        ),
        ("inline.img", &["-t", "ext4", "-O", "inline_data"][..]),
        ("ext3.img", &["-t", "ext3"][..]),
        (
            "metabg.img",
            &["-t", "ext4", "-O", "meta_bg,^resize_inode"][..],
        ),
    ] {
        let img = build(name, args);
        let (rc, text) = check(&img);
        assert_eq!(rc, 0, "{name}: {text}");
        let (v, _) = engine_problems(&img, 1);
        assert!(v.is_empty(), "{name}: {v:?}");
    }
}

/// Every corpus image `e2fsck -fn` passes checks clean; count how many of
/// the others check flags.
#[test]
fn corpus_clean_stays_clean() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/e2fsprogs");
    let Ok(manifest) = fs::read_to_string(corpus.join("MANIFEST.tsv")) else {
        eprintln!("corpus not found at {}; skipped", corpus.display());
        return;
    };
    let img = scratch().join("corpus.img");
    let (mut flagged, mut damaged, mut false_pos) = (0, 0, Vec::new());
    for line in manifest.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (file, fsck) = (cols[0], cols.get(1).copied().unwrap_or(""));
        let gz = fs::File::open(corpus.join(file)).unwrap();
        let o = Command::new("gunzip").arg("-c").stdin(gz).output().unwrap();
        fs::write(&img, &o.stdout).unwrap();
        let o = Command::new("timeout")
            .arg("60")
            .arg(BIN)
            .arg(&img)
            .arg("check")
            .output()
            .unwrap();
        let rc = o.status.code().unwrap_or(-1);
        if fsck == "0" {
            if rc != 0 {
                false_pos.push(format!("{file}: {}", out(&o)));
            }
        } else {
            damaged += 1;
            flagged += (rc != 0) as u32;
        }
    }
    let _ = fs::remove_file(&img);
    println!("check flags {flagged} of the {damaged} corpus images e2fsck -fn flags");
    assert!(false_pos.is_empty(), "{}", false_pos.join("\n"));
    // Before the global checks: 44 of 87.
    assert!(flagged >= 72, "only {flagged} of {damaged} flagged");
}
