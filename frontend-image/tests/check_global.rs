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
use ext4_tests::oracle::{self, debugfs_damage, e2fsck_check, e2fsck_index_dirs, mke2fs};
use ext4_tests::util::corpus_dir;

use ext4_engine::fsck::{CheckOptions, Checker, DEFAULT_MEMORY};
use ext4_engine::FileDevice;
use ext4_engine::{OpenOptions, Volume};

const BIN: &str = env!("CARGO_BIN_EXE_ext4-image");

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

fn scratch() -> &'static Path {
    common::scratch("check-global")
}

/// A small tree: files, a hard link, nested directories. Made once: tests
/// run in parallel, and one must not build from another's half-made tree.
fn tree() -> PathBuf {
    static TREE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    TREE.get_or_init(make_tree).clone()
}

fn make_tree() -> PathBuf {
    let src = scratch().join("src");
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
    mke2fs(
        &img,
        &[&["-b", "1024", "-N", "256"], args].concat(),
        Some(&tree()),
        "40M",
    );
    assert_eq!(e2fsck(&img), 0, "{name} is clean to begin with");
    img
}

fn e2fsck(img: &Path) -> i32 {
    e2fsck_check(img).0
}

fn debugfs(img: &Path, req: &str) -> String {
    oracle::debugfs(img, req).unwrap()
}

/// Run requests with `debugfs -w`.
fn damage(img: &Path, reqs: &[String]) {
    debugfs_damage(img, reqs);
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

/// `ext4-image check` of `img` as `e2fsck -fn` sees it: without replaying
/// a journal that needs recovery (e2fsck -n skips the replay).
fn check(img: &Path) -> (i32, String) {
    let o = cmd(BIN)
        .arg(img)
        .args(["--norecovery", "check"])
        .output()
        .unwrap();
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

/// Overwrite `bytes` at byte `off` of the journal's first block (its
/// superblock, big-endian).
fn patch_journal_sb(img: &Path, off: u64, bytes: &[u8]) {
    let jb: u64 = debugfs(img, "bmap <8> 0")
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .next_back()
        .expect("journal block 0");
    patch(img, jb * 1024 + off, bytes);
}

fn patch(img: &Path, at: u64, bytes: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = fs::OpenOptions::new().write(true).open(img).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(bytes).unwrap();
}

/// `img` damaged by `how`: e2fsck -fn and check must agree on whether it
/// is damaged (`flagged`), and when it is, check names `object` and says
/// `what`, in one pass or many.
fn agree(base: &Path, name: &str, how: impl FnOnce(&Path), flagged: Option<(&str, &str)>) {
    let img = scratch().join(format!("{name}.img"));
    assert_ne!(img, base, "{name}: pick a name other than the base image's");
    fs::copy(base, &img).unwrap();
    how(&img);
    let (e, etext) = e2fsck_check(&img);
    let (rc, text) = check(&img);
    match flagged {
        None => {
            assert_eq!(e, 0, "{name}: e2fsck -fn lets this pass:\n{etext}");
            assert_eq!(rc, 0, "{name}: check should let it pass too:\n{text}");
        }
        Some((object, what)) => {
            // 12: e2fsck also gives up on the journal or MMP block.
            assert!(e == 4 || e == 12, "{name}: e2fsck -fn exit {e}:\n{etext}");
            assert_eq!(rc, 1, "{name}: check should flag it:\n{text}");
            assert!(
                text.lines()
                    .any(|l| l.starts_with("problem:") && l.contains(object) && l.contains(what)),
                "{name}: no problem line naming {object:?} and saying {what:?}:\n{text}"
            );
            let (whole, _) = engine_problems(&img, DEFAULT_MEMORY);
            let (cut, _) = engine_problems(&img, 1);
            assert_eq!(whole, cut, "{name}: windowed passes differ");
        }
    }
    let _ = fs::remove_file(&img);
}

/// What the superblock points at beyond the inodes: the journal
/// superblock, the MMP block, the quota inode numbers; and directory
/// blocks that are missing or hold a name twice. Each damage is checked
/// against e2fsck's verdict, including damage e2fsck lets pass.
#[test]
fn special_objects_and_directory_blocks_agree_with_e2fsck() {
    // Empty: `mke2fs -d` leaves the quota usage at zero, which e2fsck flags.
    let base = scratch().join("special.img");
    mke2fs(
        &base,
        &["-b", "1024", "-t", "ext4", "-O", "quota"],
        None,
        "40M",
    );
    assert_eq!(e2fsck(&base), 0, "special.img is clean to begin with");
    let ssv = |req: &'static str| move |img: &Path| damage(img, &[req.to_string()]);
    agree(
        &base,
        "quota",
        ssv("ssv usr_quota_inum 7"),
        Some(("superblock", "invalid user quota inode")),
    );
    agree(
        &base,
        "prjquota",
        ssv("ssv prj_quota_inum 99999"),
        Some(("superblock", "invalid project quota inode")),
    );
    // Without the quota feature nobody reads the field.
    let plain = build("plain.img", &["-t", "ext4"]);
    agree(&plain, "quota-unused", ssv("ssv usr_quota_inum 7"), None);

    let j = |off: u64, bytes: &'static [u8]| move |img: &Path| patch_journal_sb(img, off, bytes);
    let journal = Some(("inode 8 ", "journal"));
    agree(&base, "jmagic", j(0, &[0, 0, 0, 0]), journal);
    agree(&base, "jversion", j(4, &[0, 0, 0, 9]), journal);
    agree(&base, "jblocksize", j(0xC, &[0, 0, 0x10, 0]), journal);
    agree(&base, "jmaxlen", j(0x10, &[0, 0x10, 0, 0]), journal);
    agree(&base, "jusers", j(0x40, &[0, 0, 0, 2]), journal);
    // e2fsck -n passes a zero first log block and stray version 2 fields
    // in a version 1 superblock.
    agree(&base, "jfirst", j(0x14, &[0, 0, 0, 0]), None);
    agree(&base, "jv1", j(4, &[0, 0, 0, 3]), None);

    let mmp = build("mmp.img", &["-t", "ext4", "-O", "mmp"]);
    agree(
        &mmp,
        "mmp-magic",
        ssv("set_mmp_value magic 0x1234"),
        Some(("block ", "MMP block has a bad magic number")),
    );

    agree(
        &plain,
        "dirhole",
        |img: &Path| {
            damage(
                img,
                &[
                    "mkdir /h".into(),
                    "expand_dir /h".into(),
                    "expand_dir /h".into(),
                    "punch /h 1 1".into(),
                ],
            )
        },
        Some(("block 1 ", "directory block is not allocated")),
    );
    // Entries written with file types on a filesystem that then lost the
    // filetype feature: e2fsck clears each type byte.
    let typed = build("typed.img", &["-t", "ext2"]);
    agree(
        &typed,
        "filetype-off",
        ssv("feature ^filetype"),
        Some(("directory ", "file type set without the filetype feature")),
    );
    // orphan_present over an orphan file that lists nobody.
    let orphans = build("orphans.img", &["-t", "ext4", "-O", "orphan_file"]);
    agree(
        &orphans,
        "orphan-present",
        ssv("feature orphan_present"),
        Some(("superblock", "orphan file lists no inode")),
    );
    // A hashed directory (e2fsck -D indexes it) under a new hash seed:
    // every leaf's names now hash outside their index ranges.
    let many = scratch().join("many");
    fs::create_dir_all(many.join("d")).unwrap();
    for i in 0..2000 {
        fs::write(many.join(format!("d/a_longer_name_{i}")), b"").unwrap();
    }
    let hashed = scratch().join("hashed.img");
    mke2fs(&hashed, &["-b", "1024", "-t", "ext4"], Some(&many), "40M");
    e2fsck_index_dirs(&hashed);
    assert!(debugfs(&hashed, "htree /d").contains("Root node dump"));
    assert_eq!(check(&hashed).0, 0, "{}", check(&hashed).1);
    agree(
        &hashed,
        "hashseed",
        ssv("ssv hash_seed 01234567-89ab-cdef-0123-456789abcdef"),
        Some(("directory inode ", "hash tree leaf hashes")),
    );
    // A slow symlink whose i_size runs past its target's NUL.
    let target = "t".repeat(100);
    agree(
        &plain,
        "symlink-nul",
        |img: &Path| {
            damage(
                img,
                &[format!("symlink /l {target}"), "sif /l size 300".into()],
            )
        },
        Some(("inode ", "symlink target holds a NUL")),
    );
    // Two entries named alike: rename one in place ("b" to "a"), on an
    // image without checksums so only the name is wrong.
    let nocsum = build("nocsum.img", &["-t", "ext4", "-O", "^metadata_csum"]);
    agree(
        &nocsum,
        "dupname",
        |img: &Path| {
            let blk = blocks(img, "/")[0];
            let mut b = vec![0u8; 1024];
            {
                use std::io::{Read, Seek, SeekFrom};
                let mut f = fs::File::open(img).unwrap();
                f.seek(SeekFrom::Start(blk * 1024)).unwrap();
                f.read_exact(&mut b).unwrap();
            }
            // Entry names in the root: ".", "..", "lost+found", "a", "b", ...
            let at = (0..b.len() - 9)
                .find(|&i| b[i + 6] == 1 && b[i + 8] == b'b')
                .expect("entry b");
            patch(img, blk * 1024 + at as u64 + 8, b"a");
        },
        Some(("directory inode 2 block 0", "same name appears twice")),
    );
}

/// Corpus images flagged because of the checks above name the damage
/// e2fsck names.
#[test]
fn corpus_damage_is_named() {
    let Some(corpus) = corpus_dir() else {
        return;
    };
    let img = scratch().join("corpus-named.img");
    for (file, what) in [
        ("m_mmp_bad_magic", "MMP block has a bad magic number"),
        ("f_quota_invalid_inum", "invalid user quota inode"),
        (
            "j_corrupt_sb_csum",
            "journal superblock checksum does not match",
        ),
        (
            "d_corrupt_journal_nr_users",
            "more than one filesystem as its user",
        ),
        ("f_bad_local_jnl", "more than one filesystem as its user"),
        ("f_dup_de2", "same name appears twice"),
        ("f_holedir3", "directory block is not allocated"),
        (
            "f_extent_interior_start_lblk",
            "does not start at the logical block its index entry names",
        ),
        ("f_short_encrypted_dirent", "shorter than one cipher block"),
        ("f_inlinedir_bad_symlink", "symlink target holds a NUL"),
        ("f_h_reindex", "hash tree leaf hashes"),
        ("f_clear_orphan_file", "orphan file lists no inode"),
        ("f_quota_deallocate_inode", "symlink target holds a NUL"),
    ] {
        let gz = fs::File::open(corpus.join(format!("{file}.img.gz"))).unwrap();
        let o = Command::new("gunzip").arg("-c").stdin(gz).output().unwrap();
        fs::write(&img, &o.stdout).unwrap();
        let (rc, text) = check(&img);
        assert_eq!(rc, 1, "{file}: {text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("problem:") && l.contains(what)),
            "{file}: no problem saying {what:?}:\n{text}"
        );
    }
    let _ = fs::remove_file(&img);
}

/// Every corpus image `e2fsck -fn` passes checks clean; count how many of
/// the others check flags.
#[test]
fn corpus_clean_stays_clean() {
    let Some(corpus) = corpus_dir() else {
        return;
    };
    let manifest = fs::read_to_string(corpus.join("MANIFEST.tsv")).unwrap();
    let img = scratch().join("corpus.img");
    let (mut flagged, mut damaged, mut false_pos) = (0, 0, Vec::new());
    for line in manifest.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (file, fsck) = (cols[0], cols.get(1).copied().unwrap_or(""));
        let gz = fs::File::open(corpus.join(file)).unwrap();
        let o = Command::new("gunzip").arg("-c").stdin(gz).output().unwrap();
        fs::write(&img, &o.stdout).unwrap();
        // As e2fsck -fn, which does not replay a journal.
        let o = Command::new("timeout")
            .arg("60")
            .arg(BIN)
            .arg(&img)
            .args(["--norecovery", "check"])
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
    // Before the global checks: 44 of 87; before the journal, MMP, quota,
    // directory-block, symlink, hash-range and orphan-file checks: 72.
    assert!(flagged >= 85, "only {flagged} of {damaged} flagged");
}
