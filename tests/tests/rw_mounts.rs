//! Read-write mounts of both FUSE servers against the real thing:
//!
//! - the mount's mode: read-write by default, `-o ro`, read-only with one
//!   warning line for a feature the engine cannot write and for
//!   `norecovery`; a clean close on unmount and on SIGTERM (`e2fsck -fn`
//!   exit 0, the superblock's state clean, the kernel reads what was
//!   written);
//! - interop: the same operations through each server and through the
//!   kernel's ext4 on a loop mount of the same fresh image give the same
//!   tree as the kernel then reads it (names, kinds, modes, owners, sizes,
//!   contents, link counts, explicitly set times), and `e2fsck -fn` passes;
//! - a full disk: ENOSPC reaches the writer, nothing is corrupt, deleting
//!   frees the space;
//! - fsx (`tests/data/fsx-rw.toml`): 100,000 random operations on each
//!   server, then `e2fsck -fn` (the long run: `scripts/soak-fsx.sh`).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use ext4_tests::fuse::FuseServer;
use ext4_tests::oracle::{e2fsck_check, mke2fs, KernelMount, Scratch};
use ext4_tests::snapshot::{diff, format_diffs, host_snapshot, Compare, Field, WalkOptions};
use ext4_tests::util::{
    built_binary, have_tool, require_e2fsprogs, require_fuse, require_kernel_ext4, run,
};

fn servers() -> [(&'static str, PathBuf); 2] {
    [
        ("ext4-fuse", built_binary("ext4-fuse", "ext4-fuse")),
        (
            "ext4-fuse-bsd",
            built_binary("ext4-fuse-bsd", "ext4-fuse-bsd"),
        ),
    ]
}

fn ready() -> bool {
    require_e2fsprogs() && require_kernel_ext4() && require_fuse()
}

/// A fresh ext4 image of `size` in `dir`.
fn fresh(dir: &Path, name: &str, size: &str, extra: &[&str]) -> PathBuf {
    let img = dir.join(name);
    let mut args = vec!["-t", "ext4", "-b", "4096"];
    args.extend_from_slice(extra);
    mke2fs(&img, &args, None, size);
    img
}

fn assert_clean(img: &Path, what: &str) {
    let (code, out) = e2fsck_check(img);
    assert_eq!(code, 0, "{what}: e2fsck -fn:\n{out}");
}

/// `s_state` as dumpe2fs reports it.
fn fs_state(img: &Path) -> String {
    let out = run(Command::new("dumpe2fs").arg("-h").arg(img));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Filesystem state:"))
        .unwrap_or("")
        .trim()
        .to_string()
}

/// The mount options of mount point `dir` ("rw,nosuid,...").
fn mount_options(dir: &Path) -> String {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = dir.canonicalize().unwrap();
    info.lines()
        .find(|l| l.split(' ').nth(4) == Some(want.to_str().unwrap()))
        .and_then(|l| l.split(' ').nth(5))
        .unwrap_or("")
        .to_string()
}

#[test]
fn read_write_by_default_read_only_when_asked_or_unwritable() {
    if !ready() {
        return;
    }
    let dir = Scratch::new("rw-modes");
    for (name, bin) in servers() {
        // Default: read-write; the unmount leaves the image clean, and the
        // kernel reads what was written.
        let img = fresh(dir.path(), &format!("{name}.img"), "32M", &[]);
        let s = FuseServer::mount_rw(&bin, &img, "").unwrap();
        assert!(mount_options(s.path()).starts_with("rw"), "{name}");
        fs::write(s.path().join("hello"), b"written through FUSE\n").unwrap();
        let (st, err) = s.unmount().unwrap();
        assert!(st.success(), "{name}: {st} {err}");
        assert!(err.trim().is_empty(), "{name}: stderr {err:?}");
        assert_clean(&img, name);
        assert_eq!(fs_state(&img), "clean", "{name}");
        let k = KernelMount::ro(&img).unwrap();
        assert_eq!(
            fs::read(k.path().join("hello")).unwrap(),
            b"written through FUSE\n"
        );
        k.unmount().unwrap();

        // -o ro: nothing may be written.
        let s = FuseServer::mount(&bin, &img, "").unwrap();
        assert!(mount_options(s.path()).starts_with("ro"), "{name}");
        let e = fs::write(s.path().join("no"), b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{name}");
        s.unmount().unwrap();

        // SIGTERM: the server closes the volume before it goes.
        let mut s = FuseServer::mount_rw(&bin, &img, "").unwrap();
        let mut f = File::create(s.path().join("late")).unwrap();
        f.write_all(&[7u8; 10000]).unwrap();
        drop(f);
        let pid = s.pid().unwrap();
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let st = s.wait_exit().expect("server exits on SIGTERM");
        assert!(st.success(), "{name}: {st}: {}", s.stderr());
        drop(s);
        assert_clean(&img, &format!("{name} after SIGTERM"));
        assert_eq!(fs_state(&img), "clean", "{name} after SIGTERM");
        let k = KernelMount::ro(&img).unwrap();
        assert_eq!(fs::read(k.path().join("late")).unwrap(), vec![7u8; 10000]);
        k.unmount().unwrap();

        // A feature the engine cannot write, and norecovery: read-only,
        // said in one line.
        let quota = fresh(
            dir.path(),
            &format!("{name}-quota.img"),
            "32M",
            &["-O", "quota"],
        );
        for (img, opts, why) in [(&quota, "", "quota"), (&img, "norecovery", "norecovery")] {
            let s = FuseServer::mount_rw(&bin, img, opts).unwrap();
            assert!(mount_options(s.path()).starts_with("ro"), "{name} {why}");
            let e = fs::write(s.path().join("no"), b"x").unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{name} {why}");
            let (_, err) = s.unmount().unwrap();
            let lines: Vec<&str> = err.lines().collect();
            assert_eq!(lines.len(), 1, "{name} {why}: {err:?}");
            assert!(
                lines[0].contains("mounted read-only") && lines[0].contains(why),
                "{name}: {err:?}"
            );
        }
        assert_clean(&quota, name);
    }
}

/// Set atime and mtime of `p` to exact times (seconds, nanoseconds).
fn set_times(p: &Path, atime: (i64, i64), mtime: (i64, i64)) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let ts = [
        libc::timespec {
            tv_sec: atime.0,
            tv_nsec: atime.1,
        },
        libc::timespec {
            tv_sec: mtime.0,
            tv_nsec: mtime.1,
        },
    ];
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), 0) };
    assert_eq!(r, 0, "utimensat {}", p.display());
}

/// The same operations, whoever serves `root`: files created with modes
/// and owners, written sparsely and at offsets, extended and shortened,
/// copied with copy_file_range, hard-unlinked, and given exact times.
fn operations(root: &Path) {
    let p = |n: &str| root.join(n);
    let mut data = Vec::new();
    for i in 0..300_000u32 {
        data.push((i.wrapping_mul(2_654_435_761) >> 13) as u8);
    }
    fs::write(p("plain"), &data[..12345]).unwrap();
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(p("sparse"))
        .unwrap();
    f.write_all_at(&data[..5000], 1 << 20).unwrap();
    f.write_all_at(b"start", 0).unwrap();
    f.set_len(3 << 20).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(p("shrunk"))
        .unwrap();
    f.write_all(&data).unwrap();
    f.set_len(70_001).unwrap();
    drop(f);
    // Overwrite in the middle, then append.
    let f = OpenOptions::new().write(true).open(p("plain")).unwrap();
    f.write_all_at(b"MIDDLE", 6000).unwrap();
    drop(f);
    let mut f = OpenOptions::new().append(true).open(p("plain")).unwrap();
    f.write_all(b"appended").unwrap();
    drop(f);
    // copy_file_range between files.
    let src = File::open(p("shrunk")).unwrap();
    let dst = File::create(p("copied")).unwrap();
    let (mut off_in, mut off_out) = (1000i64, 10i64);
    let n = unsafe {
        libc::copy_file_range(
            std::os::fd::AsRawFd::as_raw_fd(&src),
            &mut off_in,
            std::os::fd::AsRawFd::as_raw_fd(&dst),
            &mut off_out,
            50_000,
            0,
        )
    };
    assert_eq!(
        n,
        50_000,
        "copy_file_range: {}",
        std::io::Error::last_os_error()
    );
    drop((src, dst));
    // Modes, owners, and a file that goes away.
    fs::write(p("gone"), b"soon deleted").unwrap();
    fs::remove_file(p("gone")).unwrap();
    for (name, mode, uid, gid) in [("plain", 0o640, 1000, 100), ("copied", 0o4755, 0, 50)] {
        fs::set_permissions(p(name), fs::Permissions::from_mode(mode)).unwrap();
        std::os::unix::fs::chown(p(name), Some(uid), Some(gid)).unwrap();
    }
    fs::write(p("empty"), b"").unwrap();
    fs::set_permissions(p("empty"), fs::Permissions::from_mode(0o1600)).unwrap();
    // Exact times last (every change before sets them to now).
    for (i, name) in ["plain", "sparse", "shrunk", "copied", "empty"]
        .iter()
        .enumerate()
    {
        let i = i as i64;
        set_times(
            &p(name),
            (1_000_000_000 + i, 123_456_789),
            (1_500_000_000 - i, 987_654_321),
        );
    }
    set_times(&p("lost+found"), (1_600_000_000, 3), (1_600_000_000, 4));
    set_times(root, (1_600_000_000, 1), (1_600_000_000, 2));
}

#[test]
fn interop_with_the_kernel() {
    if !ready() {
        return;
    }
    let dir = Scratch::new("rw-interop");
    let kernel_img = fresh(dir.path(), "kernel.img", "64M", &[]);
    let k = KernelMount::mount(&kernel_img, false, "").unwrap();
    operations(k.path());
    k.unmount().unwrap();
    assert_clean(&kernel_img, "the kernel's");
    let fields = [
        Field::Kind,
        Field::Mode,
        Field::Nlink,
        Field::Uid,
        Field::Gid,
        Field::Size,
        Field::Atime,
        Field::Mtime,
        Field::Content,
        Field::DataMap,
        Field::Link,
        Field::Xattrs,
    ];
    let cmp = Compare {
        fields: &fields,
        ignore_dir_size: false,
        ignore_paths: &[],
    };
    let opts = WalkOptions {
        ioctls: false,
        ..WalkOptions::default()
    };
    let k = KernelMount::ro(&kernel_img).unwrap();
    let want = host_snapshot(k.path(), opts);
    k.unmount().unwrap();
    for (name, bin) in servers() {
        let img = fresh(dir.path(), &format!("{name}.img"), "64M", &[]);
        let s = FuseServer::mount_rw(&bin, &img, "allow_other").unwrap();
        operations(s.path());
        let (st, err) = s.unmount().unwrap();
        assert!(st.success(), "{name}: {err}");
        assert_clean(&img, name);
        let k = KernelMount::ro(&img).unwrap();
        let got = host_snapshot(k.path(), opts);
        k.unmount().unwrap();
        let d = diff(&want, &got, &cmp);
        assert!(
            d.is_empty(),
            "{}",
            format_diffs(&format!("{name}'s tree against the kernel's"), &d, 40)
        );
    }
}

/// Write until ENOSPC through `root`; the bytes written.
fn fill(root: &Path) -> u64 {
    let mut f = File::create(root.join("fill")).unwrap();
    let chunk = vec![0xa5u8; 1 << 20];
    let mut total = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(n) => total += n as u64,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                return total;
            }
        }
    }
}

#[test]
fn full_disk() {
    if !ready() {
        return;
    }
    let dir = Scratch::new("rw-full");
    for (name, bin) in servers() {
        let img = fresh(dir.path(), &format!("{name}.img"), "16M", &[]);
        let s = FuseServer::mount_rw(&bin, &img, "").unwrap();
        let written = fill(s.path());
        assert!(
            written > 8 << 20,
            "{name}: only {written} bytes before ENOSPC"
        );
        // ENOSPC for root too once the reserve is gone.
        let e = fs::write(s.path().join("more"), vec![1u8; 1 << 20]).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{name}: {e}");
        let (st, err) = s.unmount().unwrap();
        assert!(st.success(), "{name}: {err}");
        assert_clean(&img, &format!("{name} full"));
        // What was acknowledged is there; deleting frees the space.
        let s = FuseServer::mount_rw(&bin, &img, "").unwrap();
        let len = fs::metadata(s.path().join("fill")).unwrap().len();
        assert_eq!(len, written, "{name}");
        let before = ext4_tests::fuse::statvfs(s.path());
        fs::remove_file(s.path().join("fill")).unwrap();
        let _ = fs::remove_file(s.path().join("more"));
        // [bsize, frsize, blocks, bfree, bavail, files, ffree, namemax].
        // The inode is freed when the kernel forgets its node (FORGET,
        // queued as it evicts the inode after the unlink), not at the
        // unlink: the space comes back as soon as that arrives.
        let start = std::time::Instant::now();
        let after = loop {
            let after = ext4_tests::fuse::statvfs(s.path());
            if (after[3] - before[3]) * after[1] >= written
                || start.elapsed() > std::time::Duration::from_secs(10)
            {
                break after;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert!(
            (after[3] - before[3]) * after[1] >= written,
            "{name}: {before:?} -> {after:?}"
        );
        fs::write(s.path().join("again"), vec![3u8; 4 << 20]).unwrap();
        s.unmount().unwrap();
        assert_clean(&img, &format!("{name} after deleting"));
    }
}

/// A big buffered write reaches ext4-fuse in requests of up to
/// `max_write` (1 MiB), not one page each: the server asks the kernel for
/// `FUSE_BIG_WRITES`, without which the kernel's FUSE sends every page of
/// a buffered write as its own request (1 GiB + fsync took 5x longer).
/// The requests are counted in the server's debug log (`-o debug`).
#[test]
fn big_writes_arrive_whole() {
    if !ready() {
        return;
    }
    let dir = Scratch::new("rw-bigwrites");
    let (name, bin) = &servers()[0];
    let img = fresh(dir.path(), "big.img", "64M", &[]);
    let s = FuseServer::mount_rw(bin, &img, "debug").unwrap();
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let mut f = File::create(s.path().join("one")).unwrap();
    // One write(2) of 1 MiB at offset 0.
    assert_eq!(f.write(&data).unwrap(), data.len(), "{name}: short write");
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(fs::read(s.path().join("one")).unwrap(), data, "{name}");
    let (st, log) = s.unmount().unwrap();
    assert!(st.success(), "{name}: {log}");
    let writes = log.lines().filter(|l| l.contains(" op=WRITE(")).count();
    assert!(
        (1..=4).contains(&writes),
        "{name}: a 1 MiB write came as {writes} WRITE requests"
    );
    assert_clean(&img, name);
    // The kernel reads what was written.
    let k = KernelMount::ro(&img).unwrap();
    assert_eq!(fs::read(k.path().join("one")).unwrap(), data, "kernel");
}

/// fsx's random operations on one file of each server.
pub fn fsx_run(bin: &Path, dir: &Path, ops: u64, seed: u64) -> Result<(), String> {
    let img = fresh(dir, "fsx.img", "128M", &[]);
    let s = FuseServer::mount_rw(bin, &img, "")?;
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/fsx-rw.toml");
    let out = run(Command::new("fsx")
        .arg("-N")
        .arg(ops.to_string())
        .arg("-S")
        .arg(seed.to_string())
        .arg("-f")
        .arg(&conf)
        .arg("-P")
        .arg(dir)
        .arg(s.path().join("fsx.file")));
    let log =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    s.unmount()?;
    if !out.status.success() {
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        return Err(format!(
            "fsx failed ({}):\n{}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    let (code, fsck) = e2fsck_check(&img);
    if code != 0 {
        return Err(format!("e2fsck -fn after fsx: {fsck}"));
    }
    Ok(())
}

#[test]
fn fsx_100k_operations() {
    if !ready() {
        return;
    }
    if !have_tool("fsx") {
        ext4_tests::util::skip("`fsx` not found (cargo install fsx --locked)");
        return;
    }
    // Both servers at once: the machine has cores to spare for two.
    let results: Vec<(String, Result<(), String>)> = std::thread::scope(|sc| {
        let handles: Vec<_> = servers()
            .into_iter()
            .map(|(name, bin)| {
                sc.spawn(move || {
                    let dir = Scratch::new(&format!("fsx-{name}"));
                    (name.to_string(), fsx_run(&bin, dir.path(), 100_000, 18))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (name, r) in results {
        if let Err(e) = r {
            panic!("{name}: {e}");
        }
    }
}

/// `open(dir, O_TMPFILE | flags, 0640)`: the descriptor, or the errno.
fn open_tmpfile(dir: &Path, flags: i32) -> Result<File, i32> {
    use std::os::fd::FromRawFd;
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_TMPFILE | flags, 0o640) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap());
    }
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Give the open file `f` the name `to`, as `linkat(AT_FDCWD,
/// "/proc/self/fd/N", AT_FDCWD, to, AT_SYMLINK_FOLLOW)` does.
fn link_open_file(f: &File, to: &Path) -> Result<(), i32> {
    let from = format!("/proc/self/fd/{}\0", std::os::fd::AsRawFd::as_raw_fd(f));
    let to = std::ffi::CString::new(to.as_os_str().as_encoded_bytes()).unwrap();
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr().cast(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap())
    }
}

/// O_TMPFILE on `root`: what a program sees, one line per step.
fn tmpfile_steps(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = Vec::new();
    let names = |seen: &mut Vec<String>| {
        let mut n: Vec<String> = fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        seen.push(format!("names {n:?}"));
    };
    // A file with no name, then named through /proc/self/fd.
    let mut f = open_tmpfile(root, libc::O_RDWR).unwrap();
    f.write_all(&[5u8; 14000]).unwrap();
    let m = f.metadata().unwrap();
    seen.push(format!(
        "tmpfile nlink {} mode {:o} size {} blocks {}",
        m.nlink(),
        m.mode(),
        m.size(),
        m.blocks()
    ));
    names(&mut seen);
    seen.push(format!(
        "link {:?}",
        link_open_file(&f, &root.join("named"))
    ));
    seen.push(format!("nlink {}", f.metadata().unwrap().nlink()));
    drop(f);
    seen.push(match fs::read(root.join("named")) {
        Ok(b) => format!(
            "named: {} bytes, all 5: {}",
            b.len(),
            b.iter().all(|&x| x == 5)
        ),
        Err(e) => format!("named: {e}"),
    });
    // O_EXCL: never linkable.
    let f = open_tmpfile(root, libc::O_RDWR | libc::O_EXCL).unwrap();
    seen.push(format!(
        "excl link {:?}",
        link_open_file(&f, &root.join("excl"))
    ));
    drop(f);
    // Written and closed without a name: freed.
    let mut f = open_tmpfile(root, libc::O_WRONLY).unwrap();
    f.write_all(&[9u8; 100_000]).unwrap();
    drop(f);
    // Not for a directory that is not one.
    seen.push(format!(
        "on a file {:?}",
        open_tmpfile(&root.join("named"), libc::O_RDWR).err()
    ));
    names(&mut seen);
    seen
}

/// `Free blocks` and `Free inodes` as dumpe2fs counts them.
fn free_counts(img: &Path) -> Vec<String> {
    let out = run(Command::new("dumpe2fs").arg("-h").arg(img));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("Free blocks:") || l.starts_with("Free inodes:"))
        .map(str::to_string)
        .collect()
}

/// `steps` on the kernel's ext4 and on ext4-fuse (mounted with `opts`),
/// each on a fresh image in `dir`: they must see the same, and both
/// images pass `e2fsck -fn`. The two images (kernel's, ext4-fuse's) and
/// what the kernel showed.
fn same_as_kernel<T: PartialEq + std::fmt::Debug>(
    dir: &Path,
    opts: &str,
    steps: fn(&Path) -> T,
) -> (PathBuf, PathBuf, T) {
    let kimg = fresh(dir, "kernel.img", "32M", &[]);
    let k = KernelMount::mount(&kimg, false, "").unwrap();
    let want = steps(k.path());
    k.unmount().unwrap();
    assert_clean(&kimg, "kernel");
    let [(name, bin), _] = servers();
    let img = fresh(dir, "fuse.img", "32M", &[]);
    let s = FuseServer::mount_rw(&bin, &img, opts).unwrap();
    let got = steps(s.path());
    s.unmount().unwrap();
    assert_eq!(got, want, "{name}: what a program sees, against the kernel");
    assert_clean(&img, name);
    (kimg, img, want)
}

/// O_TMPFILE: ext4-fuse serves it as the kernel's ext4 does (the same
/// steps seen the same way, the same image afterwards by e2fsck and
/// dumpe2fs); FreeBSD's fusefs protocol has no TMPFILE, so
/// ext4-fuse-bsd answers as a filesystem without it (EOPNOTSUPP) and
/// keeps serving.
#[test]
fn tmpfile_as_the_kernel() {
    if !ready() {
        return;
    }
    let dir = Scratch::new("rw-tmpfile");
    let (kimg, img, _) = same_as_kernel(dir.path(), "", tmpfile_steps);
    assert_eq!(free_counts(&img), free_counts(&kimg), "free counts");
    let [_, (bsd, bsd_bin)] = servers();

    let img = fresh(dir.path(), "bsd.img", "32M", &[]);
    let s = FuseServer::mount_rw(&bsd_bin, &img, "").unwrap();
    assert_eq!(
        open_tmpfile(s.path(), libc::O_RDWR).err(),
        Some(libc::EOPNOTSUPP),
        "{bsd}"
    );
    fs::write(s.path().join("after"), b"still serving").unwrap();
    s.unmount().unwrap();
    assert_clean(&img, bsd);
}

/// The script `tests/data/{name}` on the mount at `root` (made
/// world-writable first): its output, with the mount's path taken out.
fn script_steps(name: &str, root: &Path) -> String {
    fs::set_permissions(root, fs::Permissions::from_mode(0o777)).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name);
    let out = run(Command::new("bash").arg(&script).arg(root));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    text.replace(root.to_str().unwrap(), "MNT")
}

/// chattr and lsattr (FS_IOC_GETFLAGS/SETFLAGS, and FS_IOC_FSGETXATTR
/// that the kernel's FUSE asks first) on ext4-fuse as on the kernel's
/// ext4: the same flags shown, the same refusals, and immutable and
/// append-only files and directories refusing what the kernel refuses
/// (writes, appends, truncation, unlink, rename, chmod, times, creation
/// and removal of entries). ext4-fuse-bsd serves no IOCTL (FreeBSD's
/// fusefs sends none): lsattr fails there as on a filesystem without
/// flags.
#[test]
fn chattr_as_the_kernel() {
    if !ready() || !have_tool("chattr") {
        return;
    }
    let dir = Scratch::new("rw-chattr");
    same_as_kernel(dir.path(), "allow_other", |r| {
        script_steps("chattr-steps.sh", r)
    });
    let [_, (bsd, bsd_bin)] = servers();

    let img = fresh(dir.path(), "bsd.img", "32M", &[]);
    let s = FuseServer::mount_rw(&bsd_bin, &img, "").unwrap();
    fs::write(s.path().join("f"), b"x").unwrap();
    let out = run(Command::new("lsattr").arg(s.path().join("f")));
    assert!(!out.status.success(), "{bsd}: lsattr");
    s.unmount().unwrap();
    assert_clean(&img, bsd);
}

/// Modes of new files, directories and FIFOs made under umask 077, in a
/// directory with a default ACL (which replaces the umask) and in one
/// without: each line `name mode`.
fn umask_steps(root: &Path) -> Vec<String> {
    let acl = root.join("acl");
    fs::create_dir(&acl).unwrap();
    let out = run(Command::new("setfacl")
        .args(["-d", "-m", "u::rwx,g::rwx,o::rwx"])
        .arg(&acl));
    assert!(out.status.success(), "setfacl: {out:?}");
    fs::create_dir(root.join("plain")).unwrap();
    // In a shell of its own: the umask is the process's, and other tests
    // of this binary run in parallel threads.
    let out = run(Command::new("sh")
        .arg("-c")
        .arg(
            "umask 077; cd \"$1\" && for d in acl plain; do \
             echo x > $d/file && mkdir $d/dir && mkfifo $d/fifo && \
             stat -c '%n %a' $d/file $d/dir $d/fifo || exit 1; done",
        )
        .arg("sh")
        .arg(root));
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The umask under a default ACL: both servers leave it to the engine
/// (FUSE_DONT_MASK), which ignores it where the directory has a default
/// ACL, as the kernel's ext4 does; elsewhere it applies. Compared with the
/// kernel's ext4 doing the same.
#[test]
fn umask_and_default_acls_as_the_kernel() {
    if !ready() || !have_tool("setfacl") {
        return;
    }
    let dir = Scratch::new("rw-umask");
    both_as_kernel(dir.path(), "", umask_steps);
}

/// `steps` on the kernel's ext4 and on both servers (mounted with
/// `opts`), each on a fresh image in `dir`: each server must show what
/// the kernel showed and leave an image `e2fsck -fn` passes. What the
/// kernel showed.
fn both_as_kernel<T: PartialEq + std::fmt::Debug>(
    dir: &Path,
    opts: &str,
    steps: fn(&Path) -> T,
) -> T {
    let kimg = fresh(dir, "kernel.img", "32M", &[]);
    let k = KernelMount::mount(&kimg, false, "").unwrap();
    let want = steps(k.path());
    k.unmount().unwrap();
    for (name, bin) in servers() {
        let img = fresh(dir, &format!("{name}.img"), "32M", &[]);
        let s = FuseServer::mount_rw(&bin, &img, opts).unwrap();
        let got = steps(s.path());
        s.unmount().unwrap();
        assert_eq!(got, want, "{name}: what a program sees, against the kernel");
        assert_clean(&img, name);
    }
    want
}

/// What writes, truncations (truncate, O_TRUNC), fallocate,
/// copy_file_range and chown by root and by an unprivileged user take
/// away (set-user-ID, set-group-ID by the kernel's rule, security.capability
/// set by setcap), on both servers as on the kernel's ext4
/// (`tests/data/killpriv-steps.sh`). ext4-fuse takes
/// FUSE_HANDLE_KILLPRIV_V2 (the kernel leaves the dropping to it);
/// ext4-fuse-bsd drops by the same shared rule where the kernel's FUSE
/// without it would keep the set-group-ID bit of a file written by a user
/// outside its group.
#[test]
fn killpriv_as_the_kernel() {
    if !ready() || !have_tool("setcap") || !have_tool("getcap") || !have_tool("setpriv") {
        return;
    }
    let dir = Scratch::new("rw-killpriv");
    let want = both_as_kernel(dir.path(), "allow_other", |r| {
        script_steps("killpriv-steps.sh", r)
    });
    assert!(want.contains("n_write 755 "), "the kernel's run:\n{want}");
}

/// `tests/data/atime-steps.py PHASE` on the mount at `root`: its output.
fn atime_phase(root: &Path, phase: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/atime-steps.py");
    let out = run(Command::new("python3").arg(&script).arg(root).arg(phase));
    assert!(out.status.success(), "atime {phase}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The noatime inode flag (`chattr +A`) on `f_flag` of the unmounted
/// `img`, by debugfs (ext4-fuse-bsd serves no chattr).
fn set_noatime_flag(img: &Path) {
    let out = run(Command::new("debugfs")
        .arg("-w")
        .arg("-R")
        .arg("set_inode_field f_flag flags 0x80080")
        .arg(img));
    assert!(out.status.success(), "debugfs: {out:?}");
}

/// Access times under relatime (the default), strictatime, noatime and
/// lazytime: the files, directories and symlink of
/// `tests/data/atime-steps.py` read, listed and readlink'ed on a fresh
/// mount (so that the reads reach the server), one with the noatime inode
/// flag and one read through O_NOATIME; which atimes changed, on both
/// servers as on the kernel's ext4.
#[test]
fn atime_as_the_kernel() {
    if !ready() || !have_tool("python3") {
        return;
    }
    let dir = Scratch::new("rw-atime");
    for opts in ["", "strictatime", "noatime", "lazytime"] {
        let kimg = fresh(dir.path(), "kernel.img", "32M", &[]);
        let k = KernelMount::mount(&kimg, false, "").unwrap();
        atime_phase(k.path(), "setup");
        k.unmount().unwrap();
        set_noatime_flag(&kimg);
        let k = KernelMount::mount(&kimg, false, opts).unwrap();
        let want = atime_phase(k.path(), "read");
        k.unmount().unwrap();
        // The reads reached the filesystem (no cache served them).
        let updated = opts != "noatime";
        assert_eq!(want.contains("f_fresh updated"), updated, "kernel:\n{want}");
        for (name, bin) in servers() {
            let img = fresh(dir.path(), &format!("{name}.img"), "32M", &[]);
            let s = FuseServer::mount_rw(&bin, &img, "").unwrap();
            atime_phase(s.path(), "setup");
            s.unmount().unwrap();
            set_noatime_flag(&img);
            let s = FuseServer::mount_rw(&bin, &img, opts).unwrap();
            let got = atime_phase(s.path(), "read");
            s.unmount().unwrap();
            assert_eq!(got, want, "{name} -o {opts}: atimes against the kernel's");
            assert_clean(&img, name);
        }
    }
}

/// What the server changes on its own reaches the kernel's caches at
/// once: after writes, fallocate and copy_file_range by an unprivileged
/// user dropped set-ID bits (ext4-fuse drops them itself, with
/// FUSE_HANDLE_KILLPRIV_V2), the mode the kernel answers from its
/// attribute cache (statx for STATX_MODE alone) is the new one, as on the
/// kernel's ext4 (`tests/data/stale-steps.sh`; FUSE_NOTIFY_INVAL_INODE).
/// ext4-fuse-bsd (no FUSE_HANDLE_KILLPRIV_V2: the kernel drops what it
/// would itself, the server the rest by the shared rule) notifies the same
/// way through fuser's notifier; without it the kernel would show the old
/// mode until its one-second attribute timeout.
#[test]
fn server_changes_reach_the_kernel_cache() {
    if !ready() || !have_tool("setpriv") || !have_tool("python3") {
        return;
    }
    let dir = Scratch::new("rw-stale");
    let (_, _, want) = same_as_kernel(dir.path(), "allow_other", |r| {
        script_steps("stale-steps.sh", r)
    });
    assert!(
        want.ends_with("w 755 o 747 a 755 c 755\n"),
        "kernel:\n{want}"
    );
    let [_, (bsd, bsd_bin)] = servers();
    let img = fresh(dir.path(), "bsd.img", "32M", &[]);
    let s = FuseServer::mount_rw(&bsd_bin, &img, "allow_other").unwrap();
    let got = script_steps("stale-steps.sh", s.path());
    s.unmount().unwrap();
    assert_eq!(got, want, "{bsd}: what a program sees, against the kernel");
    assert_clean(&img, bsd);
}

/// The loop devices whose backing file is `img` (`losetup -j`).
fn loops_of(img: &Path) -> String {
    let out = run(Command::new("losetup").arg("-j").arg(img));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `-o blkdev`: ext4-fuse mounts `fuseblk` on a loop device of the
/// image, so the kernel sends DESTROY at unmount and `umount` returns only
/// once the server has answered it, after closing the volume: `e2fsck -fn`
/// and dumpe2fs right after `umount` find the image clean, its journal
/// needing no recovery (a plain FUSE mount's `umount` returns before the
/// server has closed the volume). The loop device goes with the mount.
#[test]
fn blkdev_umount_returns_with_the_image_closed() {
    if !ready() {
        return;
    }
    let dir = Scratch::new("rw-blkdev");
    let [(name, bin), _] = servers();
    for round in 0..3 {
        let img = fresh(dir.path(), "blkdev.img", "64M", &[]);
        let s = FuseServer::mount_rw(&bin, &img, "blkdev").unwrap();
        assert!(!loops_of(&img).is_empty(), "{name}: no loop device");
        let d = s.path().join("tree");
        fs::create_dir(&d).unwrap();
        for i in 0..200 {
            fs::write(d.join(format!("f{i}")), vec![i as u8; 3000]).unwrap();
        }
        fs::write(s.path().join("big"), vec![7u8; 8 << 20]).unwrap();
        let (st, err, (fsck, state, features)) = s
            .unmount_then(|| {
                let (code, out) = e2fsck_check(&img);
                let head = run(Command::new("dumpe2fs").arg("-h").arg(&img));
                let head = String::from_utf8_lossy(&head.stdout).into_owned();
                ((code, out), fs_state(&img), head)
            })
            .unwrap();
        assert!(st.success(), "{name}: server exit {st}: {err}");
        assert_eq!(
            fsck.0, 0,
            "round {round}: e2fsck -fn right after umount:\n{}",
            fsck.1
        );
        assert_eq!(state, "clean", "round {round}: state right after umount");
        assert!(
            !features.contains("needs_recovery"),
            "round {round}:\n{features}"
        );
        // The kernel detaches an autoclear loop device a little after its
        // last close.
        let mut left = loops_of(&img);
        for _ in 0..50 {
            if left.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            left = loops_of(&img);
        }
        assert_eq!(left, "", "{name}: loop device left");
    }
}
