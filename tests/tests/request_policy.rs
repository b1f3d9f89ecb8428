//! The request policy against the kernel's ext4: the same cases (caller,
//! object, operation) run against the kernel's read-only loop mount of an
//! image and against both FUSE servers mounting it, with and without
//! `default_permissions`; every answer must be the kernel's, errno by
//! errno (and the names, for listings and listxattr).
//!
//! - Permissions: a tree made by `mke2fs -d` from a source with modes,
//!   owners, groups and POSIX ACLs, probed by root, by `nobody`, by a
//!   member of a group through a supplementary group, and by one whose
//!   primary group it is.
//! - Open flags and xattr namespaces on a read-only mount.
//! - Damage: images whose directory blocks, inodes, extent blocks and
//!   xattr blocks are broken byte by byte, with and without
//!   `metadata_csum` (EBADMSG for a checksum, EUCLEAN for corruption,
//!   EIO for a file read, where the kernel says so).
//!
//! Run as root (mounts, setresuid); every case prints in a table.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use ext4_engine::policy::{self, ShownIds};
use ext4_engine::{FileDevice, InodeNo, OpenOptions, Volume};
use ext4_tests::caller::{run_as, Caller, Op, Outcome};
use ext4_tests::fuse::FuseServer;
use ext4_tests::oracle::{debugfs, debugfs_blocks, mke2fs, KernelMount, Scratch};
use ext4_tests::util::{
    built_binary, have_tool, require_e2fsprogs, require_fuse, require_kernel_ext4, run_ok, skip,
};

/// The FUSE mount options probed: without `default_permissions` each
/// server must enforce permissions all the same.
const CONFIGS: [&str; 2] = ["allow_other", "allow_other,default_permissions"];

fn callers() -> Vec<Caller> {
    vec![
        Caller {
            name: "root",
            uid: 0,
            gid: 0,
            groups: vec![],
        },
        Caller {
            name: "nobody",
            uid: 65534,
            gid: 65534,
            groups: vec![],
        },
        Caller {
            name: "member",
            uid: 4000,
            gid: 4000,
            groups: vec![5000],
        },
        Caller {
            name: "primary",
            uid: 4001,
            gid: 5000,
            groups: vec![],
        },
    ]
}

/// The permission cases: (path, operation). Every caller runs each.
fn permission_cases() -> Vec<(&'static str, Op)> {
    use Op::*;
    let mut v = Vec::new();
    for p in [
        "pub/r644",
        "pub/r600",
        "pub/g640",
        "pub/g604",
        "pub/x700",
        "pub/own400",
        "acl_r",
        "acl_deny",
        "acl_grp",
    ] {
        v.push((p, Read));
        v.push((p, Access(libc::R_OK)));
    }
    for p in ["pub/x700", "pub/x755"] {
        v.push((p, Access(libc::X_OK)));
    }
    for p in ["pub", "priv", "gdir", "xdir", "acl_dir"] {
        v.push((p, List));
        v.push((p, Chdir));
        v.push((p, Access(libc::X_OK)));
    }
    for p in [
        "priv/r644",
        "gdir/r644",
        "xdir/r644",
        "acl_dir/r644",
        "priv/missing",
    ] {
        v.push((p, Stat));
        v.push((p, Read));
        v.push((p, Access(libc::R_OK)));
    }
    v.push(("pub/link", Readlink));
    v.push(("pub/link", Read));
    // Read-only mount: the writes the kernel refuses before any permission.
    v.push(("pub/r644", Access(libc::W_OK)));
    v.push(("pub/r644", Open(libc::O_WRONLY)));
    v.push(("pub/r644", Open(libc::O_RDWR)));
    v.push(("pub/r644", Open(libc::O_RDONLY | libc::O_TRUNC)));
    v.push(("pub", Open(libc::O_RDONLY | libc::O_DIRECTORY)));
    // Xattr namespaces: trusted.* is root's alone; user.* needs read
    // permission; security.* anyone may read.
    for p in ["pub/r644", "pub/r600"] {
        v.push((p, Getxattr("user.a")));
        v.push((p, Getxattr("trusted.t")));
        v.push((p, Getxattr("security.s")));
        v.push((p, Getxattr("user.absent")));
        v.push((p, Listxattr));
    }
    v
}

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn setfacl(p: &Path, acl: &str) {
    run_ok(Command::new("setfacl").args(["-m", acl]).arg(p));
}

fn setfattr(p: &Path, name: &str, value: &str) {
    run_ok(
        Command::new("setfattr")
            .args(["-n", name, "-v", value])
            .arg(p),
    );
}

/// The source tree of the permission image.
fn permission_tree(src: &Path) {
    let node = |rel: &str, is_dir: bool, mode: u32, uid: u32, gid: u32| {
        let p = src.join(rel);
        if is_dir {
            std::fs::create_dir(&p).unwrap();
        } else {
            std::fs::write(&p, format!("{rel}\n")).unwrap();
        }
        chown(&p, uid, gid);
        chmod(&p, mode);
    };
    let file = |rel: &str, mode, uid, gid| node(rel, false, mode, uid, gid);
    let dir = |rel: &str, mode, uid, gid| node(rel, true, mode, uid, gid);
    dir("pub", 0o755, 0, 0);
    file("pub/r644", 0o644, 0, 0);
    file("pub/r600", 0o600, 0, 0);
    file("pub/g640", 0o640, 0, 5000);
    // The group may not, others may: a member of the group is refused.
    file("pub/g604", 0o604, 0, 5000);
    file("pub/x700", 0o700, 0, 0);
    file("pub/x755", 0o755, 0, 0);
    file("pub/own400", 0o400, 65534, 65534);
    symlink("r600", src.join("pub/link")).unwrap();
    for p in ["pub/r644", "pub/r600"] {
        let p = src.join(p);
        setfattr(&p, "user.a", "1");
        setfattr(&p, "trusted.t", "2");
        setfattr(&p, "security.s", "3");
    }
    dir("priv", 0o700, 0, 0);
    file("priv/r644", 0o644, 0, 0);
    dir("gdir", 0o750, 0, 5000);
    file("gdir/r644", 0o644, 0, 0);
    // Search without read: files inside reachable, the listing not.
    dir("xdir", 0o711, 0, 0);
    file("xdir/r644", 0o644, 0, 0);
    file("acl_r", 0o600, 0, 0);
    setfacl(&src.join("acl_r"), "u:65534:r");
    // A named entry denying what the others' bits would allow.
    file("acl_deny", 0o644, 0, 0);
    setfacl(&src.join("acl_deny"), "u:65534:-");
    file("acl_grp", 0o600, 0, 0);
    setfacl(&src.join("acl_grp"), "g:5000:r");
    dir("acl_dir", 0o700, 0, 0);
    file("acl_dir/r644", 0o644, 0, 0);
    setfacl(&src.join("acl_dir"), "u:65534:rx");
}

/// One column of the table: a mount and its answers.
struct Column {
    name: String,
    answers: Vec<Outcome>,
}

/// Run every (caller, case) on the mount at `root`.
fn probe(root: &Path, callers: &[Caller], cases: &[(&str, Op)]) -> Vec<Outcome> {
    let mut v = Vec::new();
    for c in callers {
        for (path, op) in cases {
            v.push(run_as(c, &root.join(path), *op));
        }
    }
    v
}

/// Print the table and return the rows where a column differs from the
/// kernel's.
fn table(
    title: &str,
    callers: &[Caller],
    cases: &[(&str, Op)],
    kernel: &[Outcome],
    cols: &[Column],
) -> Vec<String> {
    let mut bad = Vec::new();
    println!("\n{title}");
    let mut head = format!(
        "{:<9} {:<30} {:<24} {:<24}",
        "caller", "path", "op", "kernel"
    );
    for c in cols {
        head += &format!(" {:<24}", c.name);
    }
    println!("{head}");
    let mut i = 0;
    for c in callers {
        for (path, op) in cases {
            let k = &kernel[i];
            let mut line = format!(
                "{:<9} {:<30} {:<24} {:<24}",
                c.name,
                path,
                format!("{op:?}"),
                k.to_string()
            );
            for col in cols {
                let a = &col.answers[i];
                let mark = if a == k { "" } else { " <-- DIFFERS" };
                line += &format!(" {:<24}", format!("{a}{mark}"));
                if a != k {
                    bad.push(format!(
                        "{}: {} {path} {op:?}: kernel {k}, got {a}",
                        col.name, c.name
                    ));
                }
            }
            println!("{line}");
            i += 1;
        }
    }
    bad
}

fn can_run() -> bool {
    if !require_e2fsprogs() || !require_kernel_ext4() || !require_fuse() {
        return false;
    }
    for t in ["setfacl", "setfattr"] {
        if !have_tool(t) {
            skip(&format!("`{t}` not found (install acl and attr)"));
            return false;
        }
    }
    true
}

fn servers() -> [(&'static str, PathBuf); 2] {
    [
        ("ext4-fuse", built_binary("ext4-fuse", "ext4-fuse")),
        (
            "ext4-fuse-bsd",
            built_binary("ext4-fuse-bsd", "ext4-fuse-bsd"),
        ),
    ]
}

/// A scratch directory holding `src/`, filled by `fill`.
fn source(stem: &str, fill: fn(&Path)) -> (Scratch, PathBuf) {
    let dir = Scratch::new(stem);
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    fill(&src);
    (dir, src)
}

/// The kernel's answers, from a read-only loop mount of `img`.
fn on_kernel(img: &Path, callers: &[Caller], cases: &[(&str, Op)]) -> Vec<Outcome> {
    let m = KernelMount::mount(img, true, "nosuid,nodev").expect("kernel mount");
    probe(m.path(), callers, cases)
}

/// A server's answers on `img` mounted with `opts`, and its log.
fn on_server(
    (name, bin): &(&str, PathBuf),
    img: &Path,
    opts: &str,
    callers: &[Caller],
    cases: &[(&str, Op)],
) -> (Column, String) {
    let s = FuseServer::mount(bin, img, opts).unwrap_or_else(|e| panic!("{name} -o {opts}: {e}"));
    let answers = probe(s.path(), callers, cases);
    let (_, log) = s.unmount().unwrap_or_else(|e| panic!("{name}: {e}"));
    let name = match opts {
        "" => name.to_string(),
        _ => format!("{name} -o {opts}"),
    };
    (Column { name, answers }, log)
}

/// The engine's own permission check, [`Volume::access`], as `access(2)`
/// walks a path: search permission on each directory, then `mask` on the
/// object. Unlike a FUSE request it sees every supplementary group. The
/// FUSE servers leave these checks to the kernel (`default_permissions`),
/// so this is where the policy itself meets the kernel's answers.
fn engine_access(vol: &Volume<FileDevice>, c: &Caller, path: &str, mask: i32) -> Outcome {
    let caller = policy::Caller {
        uid: c.uid,
        gid: c.gid,
        groups: &c.groups,
    };
    let check = |ino, mask| vol.access(ino, &caller, mask, ShownIds::default());
    let mut ino = InodeNo::ROOT;
    let mut walk = || {
        for name in path.split('/') {
            check(ino, policy::may::EXEC)?;
            ino = vol.lookup_ino(ino, name.as_bytes())?;
        }
        check(ino, mask as u32)
    };
    Outcome {
        errno: walk().err().map_or(0, |e| e.errno()),
        names: Vec::new(),
    }
}

fn assert_none_differ(bad: &[String]) {
    assert!(
        bad.is_empty(),
        "differs from the kernel:\n{}",
        bad.join("\n")
    );
}

#[test]
fn permissions_open_flags_and_xattrs_answer_as_the_kernel() {
    if !can_run() {
        return;
    }
    let (dir, src) = source("request-policy", permission_tree);
    let img = dir.path().join("policy.img");
    mke2fs(&img, &["-t", "ext4", "-b", "4096"], Some(&src), "16M");

    let callers = callers();
    let cases = permission_cases();
    let kernel = on_kernel(&img, &callers, &cases);
    let mut cols = Vec::new();
    for server in servers() {
        for opts in CONFIGS {
            cols.push(on_server(&server, &img, opts, &callers, &cases).0);
        }
    }
    let mut bad = table(
        "permissions, open flags, xattrs",
        &callers,
        &cases,
        &kernel,
        &cols,
    );

    // The access(2) cases once more, through the engine's policy.
    let vol = Volume::open(
        FileDevice::open(&img, true).unwrap(),
        &OpenOptions::default(),
    )
    .unwrap();
    let access: Vec<(&str, Op)> = cases
        .iter()
        .copied()
        .filter(|(_, op)| matches!(op, Op::Access(_)))
        .collect();
    let mut kernel_access = Vec::new();
    let mut engine = Vec::new();
    for (i, c) in callers.iter().enumerate() {
        for (j, &(path, op)) in cases.iter().enumerate() {
            if let Op::Access(mask) = op {
                kernel_access.push(kernel[i * cases.len() + j].clone());
                engine.push(engine_access(&vol, c, path, mask));
            }
        }
    }
    let engine = Column {
        name: "engine Volume::access".into(),
        answers: engine,
    };
    bad.extend(table(
        "access(2), by the engine's policy",
        &callers,
        &access,
        &kernel_access,
        &[engine],
    ));
    assert_none_differ(&bad);
}

/// Byte offset of inode `ino`'s record in the image (`debugfs imap`).
fn inode_offset(img: &Path, ino: &str, bs: u64) -> u64 {
    let out = debugfs(img, &format!("imap {ino}")).unwrap();
    let loc = out.split("located at block ").nth(1).unwrap();
    let (blk, off) = loc.trim().split_once(", offset 0x").unwrap();
    blk.parse::<u64>().unwrap() * bs + u64::from_str_radix(off.trim(), 16).unwrap()
}

fn patch(img: &Path, at: u64, f: impl FnOnce(&mut [u8; 4])) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(img)
        .unwrap();
    let mut b = [0u8; 4];
    file.read_exact_at(&mut b, at).unwrap();
    f(&mut b);
    file.write_all_at(&b, at).unwrap();
}

/// The source of the damage images: small directories (one block), a
/// three-block one, files with an inode to break, an extent tree block
/// (a sparse file of twelve extents), an xattr block.
fn damage_tree(src: &Path) {
    for d in ["d1", "d2"] {
        std::fs::create_dir_all(src.join(d)).unwrap();
        std::fs::write(src.join(d).join("a"), b"a\n").unwrap();
    }
    std::fs::create_dir_all(src.join("d3")).unwrap();
    for i in 0..300 {
        std::fs::write(src.join(format!("d3/file_with_a_long_name_{i}")), b"").unwrap();
    }
    std::fs::write(src.join("f1"), b"f1\n").unwrap();
    std::fs::write(src.join("ok"), b"fine\n").unwrap();
    let f = std::fs::File::create(src.join("f2")).unwrap();
    for i in 0..12u64 {
        use std::os::unix::fs::FileExt;
        f.write_all_at(&[b'Z'; 4096], i * 8192).unwrap();
    }
    std::fs::write(src.join("f3"), b"f3\n").unwrap();
    setfattr(
        &src.join("f3"),
        "user.big",
        &format!("0x{}", "ab".repeat(2000)),
    );
}

/// Break the image: with `csum`, checksums (a name byte of d1's and d2's
/// block and of d3's second block, f1's inode, f2's extent tree block,
/// f3's xattr block); without, structure (a record length in d1, an
/// inode number out of range in d2 and in d3's second block, f1's extent
/// header magic, f2's tree block magic).
fn break_image(img: &Path, csum: bool) -> [String; 2] {
    const BS: u64 = 4096;
    let block = |p: &str, i: usize| debugfs_blocks(img, p).unwrap()[i] * BS;
    let d1 = block("/d1", 0);
    let d2 = block("/d2", 0);
    let d3 = block("/d3", 1);
    let names = first_two_names(img, d3);
    let f1 = inode_offset(img, "/f1", BS);
    let tree = debugfs(img, "ex /f2").unwrap();
    let f2_node: u64 = tree
        .lines()
        .find(|l| l.trim_start().starts_with("0/ 1"))
        .and_then(|l| l.split_whitespace().nth(7))
        .and_then(|b| b.parse().ok())
        .expect("f2 has a depth-1 extent tree");
    let f2 = f2_node * BS;
    let stat = debugfs(img, "stat /f3").unwrap();
    let acl: u64 = stat
        .split("File ACL: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!(acl != 0, "f3 keeps its xattr in a block");
    if csum {
        // "." and ".." take 24 bytes; the third entry's name starts at 32.
        patch(img, d1 + 32, |b| b[0] ^= 1);
        patch(img, d2 + 32, |b| b[0] ^= 1);
        patch(img, d3 + 8, |b| b[0] ^= 1);
        patch(img, f1 + 8, |b| b[0] ^= 1);
        patch(img, f2 + 12 + 12, |b| b[0] ^= 1);
        patch(img, acl * BS + 40, |b| b[0] ^= 1);
    } else {
        patch(img, d1 + 24 + 4, |b| {
            b[..2].copy_from_slice(&5u16.to_le_bytes())
        });
        patch(img, d2 + 24, |b| *b = 0x7fff_ffffu32.to_le_bytes());
        patch(img, d3, |b| *b = 0x7fff_ffffu32.to_le_bytes());
        patch(img, f1 + 0x28, |b| {
            b[..2].copy_from_slice(&0x1234u16.to_le_bytes())
        });
        patch(img, f2, |b| {
            b[..2].copy_from_slice(&0x1234u16.to_le_bytes())
        });
    }
    names
}

/// The names of the first two entries of the directory block at byte
/// `at`: lookups that reach d3's broken second block.
fn first_two_names(img: &Path, at: u64) -> [String; 2] {
    use std::os::unix::fs::FileExt;
    let mut b = vec![0u8; 4096];
    std::fs::File::open(img)
        .unwrap()
        .read_exact_at(&mut b, at)
        .unwrap();
    let name =
        |off: usize| String::from_utf8(b[off + 8..off + 8 + b[off + 6] as usize].to_vec()).unwrap();
    let second = u16::from_le_bytes([b[4], b[5]]) as usize;
    [name(0), name(second)]
}

/// `d3_names`: the first two names in d3's broken block.
fn damage_cases(d3_names: &[String; 2]) -> Vec<(String, Op)> {
    use Op::*;
    let mut cases: Vec<(String, Op)> = [
        ("d1", List),
        ("d1/a", Stat),
        ("d2", List),
        ("d2/a", Stat),
        ("d3", List),
    ]
    .map(|(p, op)| (p.to_string(), op))
    .to_vec();
    for n in d3_names {
        cases.push((format!("d3/{n}"), Stat));
    }
    for (p, op) in [
        ("f1", Stat),
        ("f2", Stat),
        ("f2", Read),
        ("f3", Getxattr("user.big")),
        ("f3", Listxattr),
        ("ok", Read),
    ] {
        cases.push((p.to_string(), op));
    }
    cases
}

#[test]
fn damaged_objects_fail_as_on_the_kernel() {
    if !can_run() {
        return;
    }
    let (dir, src) = source("request-policy-damage", damage_tree);
    let root = &callers()[..1];
    let mut bad = Vec::new();
    for (name, features, csum) in [
        ("metadata_csum", "metadata_csum", true),
        ("no checksums", "^metadata_csum", false),
    ] {
        let img = dir.path().join(format!("damage-{csum}.img"));
        mke2fs(
            &img,
            &["-t", "ext4", "-b", "4096", "-O", features],
            Some(&src),
            "32M",
        );
        let cases = damage_cases(&break_image(&img, csum));
        let cases: Vec<(&str, Op)> = cases.iter().map(|(p, op)| (p.as_str(), *op)).collect();
        let kernel = on_kernel(&img, root, &cases);
        let mut cols = Vec::new();
        for server in servers() {
            let (col, log) = on_server(&server, &img, "", root, &cases);
            // The damage reaches the user: the server's log names what
            // failed a request and what the engine skipped to answer one
            // (a listing that left out a bad block).
            let failed = log.lines().any(|l| {
                l.contains(" on inode ") && (l.contains("corrupt") || l.contains("checksum"))
            });
            if !failed || !log.contains("damage skipped: ") {
                bad.push(format!(
                    "{} on {name}: the log does not name both the failures and the skipped damage: {log:?}",
                    col.name
                ));
            }
            cols.push(col);
        }
        bad.extend(table(
            &format!("damaged image, {name}"),
            root,
            &cases,
            &kernel,
            &cols,
        ));
    }
    assert_none_differ(&bad);
}
