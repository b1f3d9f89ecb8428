//! `ext4-image mkfs --from DIR` against the kernel: for several feature
//! rows, the kernel's mount of the image shows the source tree (the
//! generated test tree: names, types, modes, owners, sizes, bytes,
//! xattrs, ACLs, hard links, symlinks, device nodes, nanosecond times,
//! where the holes are) and `e2fsck -fn` is clean. And reproducibility:
//! the same tree made twice in different orders, built under different
//! umasks with the same `-U` and timestamp, gives byte-identical images.

mod common;

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{cmd, first_difference, fsck_clean, listing, scratch};
use std::fs::File;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;

use ext4_tests::image::{source_tree, SourceTree};
use ext4_tests::oracle::KernelMount;
use ext4_tests::snapshot::{
    diff, format_diffs, host_snapshot, Compare, Field, Kind, Snapshot, WalkOptions, SOURCE_FIELDS,
};
use ext4_tests::tree::{Profile, TreeParams};
use ext4_tests::util::{built_binary, require_e2fsprogs, require_kernel_ext4};

const UUID: &str = "01234567-89ab-cdef-0123-456789abcdef";
const TIME: &str = "1700000000";

fn mkfs(img: &Path, args: &[&str], umask: u32) -> Output {
    mkfs_as(img, args, umask, None)
}

/// Run ext4-image mkfs with `umask`, as user and group `uid` if given.
fn mkfs_as(img: &Path, args: &[&str], umask: u32, uid: Option<u32>) -> Output {
    let mut c = Command::new(built_binary("ext4-image", "ext4-image"));
    c.arg("mkfs").arg(img).args(args);
    // SAFETY: umask, setgroups, setgid and setuid are async-signal-safe.
    unsafe {
        c.pre_exec(move || {
            libc::umask(umask);
            if let Some(u) = uid {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(u) != 0
                    || libc::setuid(u) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    c.output().unwrap()
}

fn mkfs_ok(img: &Path, args: &[&str], umask: u32) {
    mkfs_ok_as(img, args, umask, None)
}

fn mkfs_ok_as(img: &Path, args: &[&str], umask: u32, uid: Option<u32>) {
    let o = mkfs_as(img, args, umask, uid);
    assert!(
        o.status.success(),
        "ext4-image mkfs {} {args:?}: {}",
        img.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn path(name: &str) -> PathBuf {
    scratch("mkfs-from").join(name)
}

/// Feature rows: the three types, 1 and 4 KiB blocks, inline data,
/// block-mapped files on ext4, uninit_bg.
const ROWS: &[(&str, &[&str])] = &[
    ("ext2", &["-t", "ext2", "-b", "4096"]),
    ("ext3", &["-t", "ext3", "-b", "1024"]),
    ("ext4", &["-t", "ext4", "-b", "4096"]),
    ("ext4-1k", &["-t", "ext4", "-b", "1024"]),
    (
        "ext4-inline",
        &["-t", "ext4", "-b", "4096", "-O", "inline_data"],
    ),
    (
        "ext4-noextent",
        &[
            "-t",
            "ext4",
            "-b",
            "1024",
            "-O",
            "^extent,^64bit,^metadata_csum,uninit_bg",
        ],
    ),
];

#[test]
fn kernel_mount_shows_the_source_tree() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    let tree = source_tree(&TreeParams::new(Profile::Small, 1024));
    let src = path("tree");
    copy_with_planned_times(&tree, &src);
    let mut failures = Vec::new();
    for (name, args) in ROWS {
        let img = path(&format!("{name}.img"));
        let mut all = vec!["256m"];
        all.extend_from_slice(args);
        failures.extend(build_and_compare(&tree, &src, &img, name, &all));
        let _ = fs::remove_file(&img);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The small source tree for `block`-byte blocks copied to `tree_dir`
/// (with its planned times), a world-writable `work_dir` (the builds run
/// as nobody) and GNU tar's archive of the tree in it: (tree, its copy,
/// the work directory, the archive).
fn tree_and_gnu_tar(
    block: u32,
    tree_dir: &str,
    work_dir: &str,
) -> (std::sync::Arc<SourceTree>, PathBuf, PathBuf, PathBuf) {
    let tree = source_tree(&TreeParams::new(Profile::Small, block));
    let src = path(tree_dir);
    copy_with_planned_times(&tree, &src);
    let work = path(work_dir);
    let _ = fs::remove_dir_all(&work);
    fs::create_dir(&work).unwrap();
    fs::set_permissions(&work, fs::Permissions::from_mode(0o777)).unwrap();
    let gnu = work.join("gnu.tar");
    gnu_tar(&src, &gnu);
    (tree, src, work, gnu)
}

/// Every feature row again from GNU tar's archive of the tree, each image
/// built by an ordinary user (nobody): the kernel's mount equals the
/// source tree and `e2fsck -fn` is clean.
#[test]
fn kernel_mount_shows_the_gnu_tar_of_the_tree() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    const NOBODY: u32 = 65534;
    let (tree, src, work, gnu) = tree_and_gnu_tar(1024, "tree-rows-tar", "rows-as-user");
    let mut failures = Vec::new();
    for (name, args) in ROWS {
        let img = work.join(format!("{name}.img"));
        let mut all = vec!["256m"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-q", "-U", UUID, "--timestamp", TIME, "--from-tar"]);
        all.push(gnu.to_str().unwrap());
        mkfs_ok_as(&img, &all, 0o022, Some(NOBODY));
        failures.extend(compare_with_source(&tree, &src, &img, name, true));
        let _ = fs::remove_file(&img);
    }
    let _ = fs::remove_dir_all(&work);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// GNU tar's PAX archive of `src` with xattrs, ACLs, sparse files and
/// numeric owners.
fn gnu_tar(src: &Path, out: &Path) {
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(src)
            .args([
                "--format=posix",
                "--xattrs",
                "--xattrs-include=*",
                "--acls",
                "-S",
                "--numeric-owner",
                "-cf",
            ])
            .arg(out)
            .arg("."),
    );
}

/// Build `img` from `src` with `args` (SIZE first), check it with e2fsck
/// and compare the kernel's read-only mount with the source; the
/// differences, formatted, if any.
fn build_and_compare(
    tree: &SourceTree,
    src: &Path,
    img: &Path,
    name: &str,
    args: &[&str],
) -> Option<String> {
    planned_times(tree, src);
    let from = src.to_str().unwrap();
    let mut all = args.to_vec();
    all.extend_from_slice(&["-q", "-U", UUID, "--timestamp", TIME, "--from", from]);
    mkfs_ok(img, &all, 0o022);
    compare_with_source(tree, src, img, name, false)
}

/// e2fsck `img`, then compare the kernel's read-only mount of it with the
/// source tree at `src` (sockets left out if `no_sockets`: tar has none).
fn compare_with_source(
    tree: &SourceTree,
    src: &Path,
    img: &Path,
    name: &str,
    no_sockets: bool,
) -> Option<String> {
    let opts = WalkOptions {
        content: true,
        data_map: true,
        ioctls: false,
    };
    let mut fields = SOURCE_FIELDS.to_vec();
    fields.push(Field::DataMap);
    fsck_clean(img, name);
    // Our reads left the source's times alone (O_NOATIME); the walk
    // below does not, so each build takes it anew.
    let mut expected = planned(tree, host_snapshot(src, opts));
    if no_sockets {
        expected.entries.retain(|_, e| e.kind != Kind::Socket);
    }
    let m = KernelMount::mount(img, true, "").expect("kernel mount");
    let mut got = host_snapshot(m.path(), opts);
    m.unmount().expect("unmount");
    got.entries.remove(b"/".as_slice());
    let cmp = Compare {
        fields: &fields,
        ignore_dir_size: true,
        ignore_paths: &["/lost+found"],
    };
    let d = diff(&expected, &got, &cmp);
    (!d.is_empty()).then(|| format_diffs(&format!("row {name}: source vs kernel mount"), &d, 20))
}

/// dumpe2fs -h's number for `field`.
fn dumpe2fs_number(img: &Path, field: &str) -> u64 {
    let o = cmd("dumpe2fs").arg("-h").arg(img).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim_start_matches(':').trim().parse().ok())
        .unwrap_or_else(|| panic!("dumpe2fs -h {}: no {field}", img.display()))
}

#[test]
fn size_auto_holds_the_tree_with_the_margin() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    let tree = source_tree(&TreeParams::new(Profile::Small, 1024));
    let src = path("tree-auto");
    copy_with_planned_times(&tree, &src);
    let mut failures = Vec::new();
    for (fs_type, margin, least, most) in [
        ("ext2", "0", 0, 15),
        ("ext4", "0", 0, 15),
        ("ext4", "25", 18, 45),
    ] {
        let img = path(&format!("auto-{fs_type}-{margin}.img"));
        let name = format!("auto -t {fs_type} --margin {margin}");
        failures.extend(build_and_compare(
            &tree,
            &src,
            &img,
            &name,
            &["auto", "-t", fs_type, "--margin", margin],
        ));
        // Free blocks (the 5% reserve included) near the margin asked.
        let free =
            dumpe2fs_number(&img, "Free blocks") * 100 / dumpe2fs_number(&img, "Block count");
        assert!(
            (least..=most).contains(&free),
            "{name}: {free}% of the blocks free, wanted {least}-{most}%"
        );
        let _ = fs::remove_file(&img);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // A small tree gets 1 KiB blocks (mke2fs.conf's "small"), unless a
    // symlink's target needs a bigger block (the kernel stores it, with
    // its NUL, in one block).
    let small = path("tree-long-link");
    fs::create_dir_all(&small).unwrap();
    let target = "d/".repeat(700);
    std::os::unix::fs::symlink(&target, small.join("long")).unwrap();
    let img = path("auto-long-link.img");
    let o = mkfs(
        &img,
        &["auto", "-q", "--from", small.to_str().unwrap()],
        0o022,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    fsck_clean(&img, "auto with a 1400-byte symlink");
    assert_eq!(dumpe2fs_number(&img, "Block size"), 2048);
    {
        let m = KernelMount::ro(&img).unwrap();
        assert_eq!(
            fs::read_link(m.path().join("long")).unwrap(),
            Path::new(&target)
        );
    }
    let _ = fs::remove_file(&img);
    let o = mkfs(&path("no-from.img"), &["auto"], 0o022);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("needs --from"));
    let o = mkfs(&path("stdin.img"), &["auto", "--from-tar", "-"], 0o022);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("standard input") && e.contains("give a size"),
        "{e}"
    );
}

fn export_tar(img: &Path, out: &Path) {
    let f = File::create(out).unwrap();
    let o = Command::new(built_binary("ext4-image", "ext4-image"))
        .arg("tar")
        .arg(img)
        .stdout(f)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "ext4-image tar {}: {}",
        img.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// GNU tar's archive of the tree, built by an ordinary user (nobody),
/// holds the tree as the kernel sees it; and image -> `ext4-image tar` ->
/// `mkfs --from-tar` -> `ext4-image tar` gives the same GNU tar listing.
#[test]
fn from_tar_as_a_user_and_round_trip() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    const NOBODY: u32 = 65534;
    let (tree, src, work, gnu) = tree_and_gnu_tar(4096, "tree-tar", "as-user");
    let (a, b) = (work.join("a.img"), work.join("b.img"));
    let args = |t: &Path| fixed_args("256m", "--from-tar", t);
    let strs = |v: &Vec<String>| v.iter().map(String::clone).collect::<Vec<_>>();
    let aa = strs(&args(&gnu));
    mkfs_ok_as(
        &a,
        &aa.iter().map(String::as_str).collect::<Vec<_>>(),
        0o022,
        Some(NOBODY),
    );
    let mut failures = Vec::new();
    failures.extend(compare_with_source(
        &tree,
        &src,
        &a,
        "GNU tar as nobody",
        true,
    ));
    let (ta, tb) = (work.join("a.tar"), work.join("b.tar"));
    export_tar(&a, &ta);
    let ab = strs(&args(&ta));
    mkfs_ok_as(
        &b,
        &ab.iter().map(String::as_str).collect::<Vec<_>>(),
        0o077,
        Some(NOBODY),
    );
    failures.extend(compare_with_source(&tree, &src, &b, "round trip", true));
    export_tar(&b, &tb);
    // SIZE auto from a tar file: the stream read once for the size, then
    // again to build; a quarter left free (the 5% reserve included).
    // 4 KiB blocks: the tree's 3000-byte symlinks need them.
    let c = work.join("auto.img");
    let mut ac = vec!["auto", "-b", "4096", "--margin", "25", "-q", "--from-tar"];
    ac.push(gnu.to_str().unwrap());
    mkfs_ok_as(&c, &ac, 0o022, Some(NOBODY));
    failures.extend(compare_with_source(
        &tree,
        &src,
        &c,
        "auto from GNU tar",
        true,
    ));
    let free = dumpe2fs_number(&c, "Free blocks") * 100 / dumpe2fs_number(&c, "Block count");
    assert!(
        (18..=45).contains(&free),
        "auto from tar: {free}% free, wanted 18-45%"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The same members with the same details (a directory's order on
    // disk may differ: linear directories list in insertion order, which
    // followed each stream).
    assert_eq!(
        listing(&ta),
        listing(&tb),
        "GNU tar lists the round trip differently"
    );
    let _ = fs::remove_dir_all(&work);
}

/// A private copy of the generated tree with every atime and mtime as
/// planned (walks of the shared tree update directory atimes).
fn copy_with_planned_times(tree: &SourceTree, dst: &Path) {
    let _ = fs::remove_dir_all(dst);
    run_ok(Command::new("cp").arg("-a").arg(&tree.src).arg(dst));
    planned_times(tree, dst);
}

/// Set every atime and mtime in the copy at `dst` as planned.
fn planned_times(tree: &SourceTree, dst: &Path) {
    for n in tree.plan.nodes.iter().rev().filter(|n| !n.late) {
        let owner = tree.plan.inode_node(n);
        let p = std::ffi::CString::new(dst.join(&n.path).into_os_string().into_vec()).unwrap();
        let t = |t: ext4_tests::tree::Time| libc::timespec {
            tv_sec: t.sec,
            tv_nsec: t.nsec as i64,
        };
        let times = [t(owner.atime), t(owner.mtime)];
        // SAFETY: a valid path and two timespecs.
        let r = unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                p.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        assert_eq!(
            r,
            0,
            "utimensat {}: {}",
            n.path,
            std::io::Error::last_os_error()
        );
    }
}

/// `snap` with each path's planned atime and mtime, the root left out.
fn planned(tree: &SourceTree, mut snap: Snapshot) -> Snapshot {
    for n in &tree.plan.nodes {
        let owner = tree.plan.inode_node(n);
        if let Some(e) = snap.entries.get_mut(format!("/{}", n.path).as_bytes()) {
            e.atime = owner.atime;
            e.mtime = owner.mtime;
        }
    }
    snap.entries.remove(b"/".as_slice());
    snap
}

/// `SIZE -b 4096 -q -U UUID --timestamp TIME FLAG SRC`.
fn fixed_args(size: &str, flag: &str, src: &Path) -> Vec<String> {
    [
        size,
        "-b",
        "4096",
        "-q",
        "-U",
        UUID,
        "--timestamp",
        TIME,
        flag,
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([src.to_str().unwrap().to_string()])
    .collect()
}

fn run_ok(c: &mut Command) {
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn same_tree_any_order_any_umask_same_image() {
    if !require_e2fsprogs() {
        return;
    }
    let tree = source_tree(&TreeParams::new(Profile::Small, 4096));
    // B on tmpfs where there is one: its directories list entries in
    // creation order, unlike ext4's hash order, so the builds see the
    // names in different orders.
    let shm = Path::new("/dev/shm");
    let b = if shm.is_dir() {
        shm.join(format!("ext4-image-mkfs-from-{}", std::process::id()))
    } else {
        path("order-b")
    };
    let a = path("order-a");
    for d in [&a, &b] {
        let _ = fs::remove_dir_all(d);
    }
    // A: cp's order (the source's directory order); B: GNU tar's name
    // order, extracted under another umask.
    let _ = fs::remove_dir_all(&b);
    run_ok(Command::new("cp").arg("-a").arg(&tree.src).arg(&a));
    fs::create_dir(&b).unwrap();
    run_ok(Command::new("sh").arg("-c").arg(format!(
        "tar -C '{}' --sort=name -S --xattrs --xattrs-include='*' --acls -cf - . \
         | (umask 077; tar -C '{}' -xpf - --xattrs --xattrs-include='*' --acls --numeric-owner)",
        tree.src.display(),
        b.display()
    )));
    // GNU tar leaves sockets out: the same tree means without them.
    run_ok(Command::new("find").arg(&a).args(["-type", "s", "-delete"]));
    // The same times on both (copying changed atimes and ctimes).
    for d in [&a, &b] {
        run_ok(Command::new("sh").arg("-c").arg(format!(
            "find '{}' -depth -exec touch -h -d @1600000000.123456789 {{}} +",
            d.display()
        )));
    }
    let (ia, ib) = (path("order-a.img"), path("order-b.img"));
    let args = |src: &Path| fixed_args("128m", "--from", src);
    let aa = args(&a);
    let ab = args(&b);
    mkfs_ok(
        &ia,
        &aa.iter().map(String::as_str).collect::<Vec<_>>(),
        0o022,
    );
    mkfs_ok(
        &ib,
        &ab.iter().map(String::as_str).collect::<Vec<_>>(),
        0o077,
    );
    fsck_clean(&ia, "order-a");
    assert_eq!(
        first_difference(&ia, &ib),
        None,
        "two builds of the same tree differ"
    );
    for p in [ia, ib] {
        let _ = fs::remove_file(p);
    }
    for d in [&a, &b] {
        let _ = fs::remove_dir_all(d);
    }
}

/// Hostile tar streams end with one clear error, never a panic or memory
/// that grows with what the stream claims: a GNU sparse map claiming 2^63
/// regions (twice that overflows), and a 17 MiB extended header.
#[test]
fn hostile_tar_streams_fail_cleanly() {
    let dir = scratch("hostile-tar");
    let sparse_map = |b: &mut tar::Builder<Vec<u8>>| {
        b.append_pax_extensions([
            ("GNU.sparse.major", b"1".as_slice()),
            ("GNU.sparse.minor", b"0".as_slice()),
            ("GNU.sparse.name", b"f".as_slice()),
            ("GNU.sparse.realsize", b"100".as_slice()),
        ])
        .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_path("f").unwrap();
        h.set_size(512);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        let mut map = b"9223372036854775808\n".to_vec();
        map.resize(512, b'7');
        b.append(&h, map.as_slice()).unwrap();
    };
    let big_header = |b: &mut tar::Builder<Vec<u8>>| {
        let v = vec![b'x'; 17 << 20];
        b.append_pax_extensions([("SCHILY.xattr.user.big", v.as_slice())])
            .unwrap();
    };
    type Build = fn(&mut tar::Builder<Vec<u8>>);
    let cases: [(&str, Build, &str); 2] = [
        ("sparse", sparse_map, "sparse map"),
        ("header", big_header, "over 16 MiB"),
    ];
    for (name, build, says) in cases {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        let t = dir.join(format!("{name}.tar"));
        std::fs::write(&t, b.into_inner().unwrap()).unwrap();
        let img = dir.join(format!("{name}.img"));
        let o = mkfs(&img, &["64m", "--from-tar", t.to_str().unwrap()], 0o022);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.code() == Some(1) || o.status.code() == Some(2),
            "{name}: {} {err}",
            o.status
        );
        assert!(
            err.contains(says) && !err.contains("panicked"),
            "{name}: {err}"
        );
    }
    // GNU tar's archive cut inside its member, and a stream that is not
    // tar at all: refused, without a hint about the image's checksums.
    let src = dir.join("one");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), vec![b'x'; 5000]).unwrap();
    let whole = cmd("tar")
        .args(["--format=pax", "-cf", "-", "-C"])
        .arg(&src)
        .arg("f")
        .output()
        .unwrap()
        .stdout;
    let cut_at = whole.len().min(3000);
    for (name, bytes, says) in [
        ("cut", &whole[..cut_at], "truncated"),
        ("not-tar", &[b'x'; 2048][..], "not a tar stream"),
    ] {
        let t = dir.join(format!("{name}.tar"));
        fs::write(&t, bytes).unwrap();
        let o = mkfs(
            &dir.join("cut.img"),
            &["8m", "--from-tar", t.to_str().unwrap()],
            0o022,
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{name}: {err}");
        assert!(
            err.contains(says) && !err.contains("ignore-checksums"),
            "{name}: {err}"
        );
    }
}

/// Members GNU tar cannot describe in a ustar header: a file over 8 GiB
/// (sparse here, so it costs no disk; archived whole, zeros and all) in
/// `--format=pax`, where its size is a PAX `size` record and the header
/// says 0; owners and a time past the octal fields in `--format=gnu`,
/// where they are base-256 numbers. The kernel's mount of the image shows
/// the file's size and bytes and the owners and time as GNU tar lists them.
#[test]
fn from_tar_sizes_and_numbers_past_ustar() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    let src = path("past-ustar");
    let _ = fs::remove_dir_all(&src);
    fs::create_dir_all(&src).unwrap();
    let big = src.join("big");
    let size = (8u64 << 30) + 8192;
    {
        use std::os::unix::fs::FileExt;
        let f = File::create(&big).unwrap();
        f.set_len(size).unwrap();
        f.write_all_at(b"first bytes", 0).unwrap();
        f.write_all_at(b"past 8 GiB", (8 << 30) + 100).unwrap();
    }
    fs::write(src.join("ids"), b"owned far away\n").unwrap();
    let img = path("past-ustar.img");
    let ids_tar = src.join("ids.tar");
    let o = cmd("tar")
        .args(["--format=gnu", "--owner=u:3000000", "--group=g:3000001"])
        .args(["--mtime=@9000000000", "-cf"])
        .arg(&ids_tar)
        .arg("-C")
        .arg(&src)
        .arg("ids")
        .output()
        .unwrap();
    assert!(o.status.success(), "tar --format=gnu: {o:?}");
    let mut tar = cmd("tar")
        .args(["--format=pax", "-cf", "-", "-C"])
        .arg(&src)
        .arg("big")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let o = Command::new(built_binary("ext4-image", "ext4-image"))
        .args(["mkfs".as_ref(), img.as_os_str()])
        .args(["64m", "-q", "--from-tar", "-"])
        .stdin(tar.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(tar.wait().unwrap().success(), "tar --format=pax failed");
    assert!(
        o.status.success(),
        "mkfs --from-tar - (pax): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    fsck_clean(&img, "pax");
    let gnu = path("past-ustar-gnu.img");
    let listed = String::from_utf8_lossy(
        &cmd("tar")
            .args(["-tv", "--numeric-owner", "--full-time", "-f"])
            .arg(&ids_tar)
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(listed.contains("3000000/3000001"), "{listed}");
    mkfs_ok(
        &gnu,
        &["8m", "-q", "--from-tar", ids_tar.to_str().unwrap()],
        0o022,
    );
    fsck_clean(&gnu, "gnu");
    {
        let m = KernelMount::mount(&img, true, "").expect("kernel mount");
        let got = m.path().join("big");
        assert_eq!(fs::metadata(&got).unwrap().len(), size);
        if let Some(d) = first_difference(&big, &got) {
            panic!("big: the mount's bytes differ from the source's {d}");
        }
        m.unmount().expect("unmount");
    }
    {
        use std::os::unix::fs::MetadataExt;
        let m = KernelMount::mount(&gnu, true, "").expect("kernel mount");
        let st = fs::metadata(m.path().join("ids")).unwrap();
        assert_eq!(
            (st.uid(), st.gid(), st.mtime()),
            (3000000, 3000001, 9000000000)
        );
        assert_eq!(fs::read(m.path().join("ids")).unwrap(), b"owned far away\n");
        m.unmount().expect("unmount");
    }
    let _ = fs::remove_dir_all(&src);
    let _ = fs::remove_file(&img);
    let _ = fs::remove_file(&gnu);
}
