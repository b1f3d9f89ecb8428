//! Images whose journal needs recovery, made by the kernel itself: an ext4
//! image mounted on a loop device, a workload written (some of it
//! fsynced), then `EXT4_IOC_SHUTDOWN` with `EXT4_GOING_FLAGS_NOLOGFLUSH`
//! (the journal's running transaction is dropped, as by a power cut, and
//! nothing more is written), the image copied as it is at that moment, and
//! the filesystem unmounted. What the image
//! holds is whatever the kernel committed: the tests compare what the
//! engine replays with what the kernel and e2fsck replay from a copy, not
//! with a list written here.
//!
//! Built once per run of the test binary and cached under `target/`
//! (keyed by this file's version, mke2fs and the kernel).

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::kwimage::{kernel_release, random_bytes};
use crate::oracle::{mke2fs_version, KernelMount, LoopDevice};
use crate::rng::Rng;
use crate::tree::{set_times, set_xattr, Time};
use crate::util::{cached_build, fnv64, run, run_ok, FileLock};

/// Bump to rebuild the cached crash images.
pub const CRASH_VERSION: u32 = 6;

/// `EXT4_IOC_SHUTDOWN`: `_IOR('X', 125, __u32)`.
pub const EXT4_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587D;
/// Shut down without flushing the journal: committed transactions stay in
/// the log, the running one is lost.
pub const EXT4_GOING_FLAGS_NOLOGFLUSH: u32 = 2;

/// What is written before the crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Files of every kind with contents, modes, owners, xattrs, links,
    /// renames, unlinks, truncates and a hash-tree directory, some
    /// fsynced, the last few changes not.
    Mixed,
    /// Small fsynced rewrites until the live log wraps around the end of
    /// a small journal.
    Wrap,
    /// A directory's blocks logged, then freed (revoke records) and
    /// reused for file data: replaying the revoked copies would overwrite
    /// the data.
    Revoke,
    /// A few files, a directory, xattrs and links, fsynced: for the small
    /// images that seed the journal fuzz target.
    Small,
    /// On a `fast_commit` filesystem: fsynced files, which the kernel logs
    /// as fast commits; `stale`: then a full commit (syncfs), after which
    /// the fast-commit area holds nothing newer than the log.
    FastCommit { stale: bool },
}

/// One crash image of the matrix.
#[derive(Clone, Copy, Debug)]
pub struct CrashSpec {
    pub name: &'static str,
    pub block_size: u32,
    /// `mke2fs -O` list.
    pub features: &'static str,
    /// Journal size in MiB (`-J size=`).
    pub journal_mib: u32,
    pub size: &'static str,
    /// Extra mount options of the workload's mount.
    pub mount_opts: &'static str,
    pub workload: Workload,
    /// The journal on a separate device (`mke2fs -O journal_dev`).
    pub external: bool,
}

const fn spec(
    name: &'static str,
    block_size: u32,
    features: &'static str,
    journal_mib: u32,
    mount_opts: &'static str,
    workload: Workload,
) -> CrashSpec {
    CrashSpec {
        name,
        block_size,
        features,
        journal_mib,
        size: "48M",
        mount_opts,
        workload,
        external: false,
    }
}

/// The matrix: checksum v3 (`metadata_csum`) and none, 64-bit block
/// numbers on and off, 1 KiB and 4 KiB blocks, a wrapped log, data=journal,
/// revoke records, an external journal.
pub const CRASH_MATRIX: &[CrashSpec] = &[
    spec(
        "csum-64bit-4k",
        4096,
        "metadata_csum,64bit",
        4,
        "",
        Workload::Mixed,
    ),
    spec(
        "nocsum-32bit-1k",
        1024,
        "^metadata_csum,^64bit",
        4,
        "",
        Workload::Mixed,
    ),
    spec(
        "csum-32bit-1k",
        1024,
        "metadata_csum,^64bit",
        4,
        "",
        Workload::Mixed,
    ),
    spec(
        "nocsum-64bit-4k",
        4096,
        "^metadata_csum,64bit",
        4,
        "",
        Workload::Mixed,
    ),
    spec(
        "wrap-1k",
        1024,
        "^metadata_csum,^64bit",
        1,
        "",
        Workload::Wrap,
    ),
    spec(
        "wrap-csum-4k",
        4096,
        "metadata_csum,64bit",
        4,
        "",
        Workload::Wrap,
    ),
    spec(
        "data-journal-4k",
        4096,
        "metadata_csum,64bit",
        8,
        "data=journal",
        Workload::Mixed,
    ),
    spec(
        "data-journal-1k",
        1024,
        "^metadata_csum,^64bit",
        4,
        "data=journal",
        Workload::Mixed,
    ),
    spec(
        "revoke-4k",
        4096,
        "metadata_csum,64bit",
        4,
        "",
        Workload::Revoke,
    ),
    spec(
        "revoke-1k",
        1024,
        "^metadata_csum,^64bit",
        2,
        "",
        Workload::Revoke,
    ),
    spec(
        "fast-commit-stale-4k",
        4096,
        "metadata_csum,64bit,fast_commit",
        4,
        "",
        Workload::FastCommit { stale: true },
    ),
    CrashSpec {
        external: true,
        // A journal device needs 1024 blocks after its superblocks.
        ..spec(
            "external-4k",
            4096,
            "metadata_csum,64bit",
            8,
            "",
            Workload::Mixed,
        )
    },
];

/// Small crash images (4 MiB, a 1 MiB journal) for the journal fuzz
/// target's seeds (`fuzz/seeds/journal/`, made by
/// `cargo test -p ext4-tests --test journal_replay -- --ignored make_fuzz_seeds`).
pub const FUZZ_SEEDS: &[CrashSpec] = &[
    small("seed-csum-1k", "metadata_csum,64bit", "", Workload::Small),
    small(
        "seed-nocsum-1k",
        "^metadata_csum,^64bit",
        "",
        Workload::Small,
    ),
    small(
        "seed-data-journal-1k",
        "metadata_csum,^64bit",
        "data=journal",
        Workload::Small,
    ),
    small(
        "seed-revoke-1k",
        "^metadata_csum,64bit",
        "",
        Workload::Revoke,
    ),
];

const fn small(
    name: &'static str,
    features: &'static str,
    mount_opts: &'static str,
    workload: Workload,
) -> CrashSpec {
    CrashSpec {
        size: "4M",
        ..spec(name, 1024, features, 1, mount_opts, workload)
    }
}

/// Fast commits the engine cannot replay, left pending by the kernel.
pub const FAST_COMMIT_PENDING: CrashSpec = spec(
    "fast-commit-4k",
    4096,
    "metadata_csum,64bit,fast_commit",
    4,
    "",
    Workload::FastCommit { stale: false },
);

pub fn crash_spec(name: &str) -> &'static CrashSpec {
    CRASH_MATRIX
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no crash spec {name}"))
}

/// A built crash image: the filesystem, and its journal device if external.
#[derive(Clone, Debug)]
pub struct CrashImage {
    pub path: PathBuf,
    pub journal: Option<PathBuf>,
}

impl CrashImage {
    /// Copies of the image (and journal) at `dir`, to be replayed by
    /// someone without touching the cached originals.
    pub fn copy_to(&self, dir: &Path, stem: &str) -> CrashImage {
        fs::create_dir_all(dir).unwrap();
        let path = dir.join(format!("{stem}.img"));
        fs::copy(&self.path, &path).unwrap();
        let journal = self.journal.as_ref().map(|j| {
            let p = dir.join(format!("{stem}.journal"));
            fs::copy(j, &p).unwrap();
            p
        });
        CrashImage { path, journal }
    }
}

/// Shut the filesystem mounted at `dir` down as a power cut would.
pub fn shutdown(dir: &Path) {
    let f = File::open(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let flags = EXT4_GOING_FLAGS_NOLOGFLUSH;
    // SAFETY: the ioctl reads one u32 from the pointer.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), EXT4_IOC_SHUTDOWN as _, &flags) };
    assert_eq!(
        r,
        0,
        "EXT4_IOC_SHUTDOWN on {}: {}",
        dir.display(),
        std::io::Error::last_os_error()
    );
}

fn fsync_path(p: &Path) {
    File::open(p)
        .and_then(|f| f.sync_all())
        .unwrap_or_else(|e| panic!("fsync {}: {e}", p.display()));
}

fn t(sec: i64, nsec: u32) -> Time {
    Time { sec, nsec }
}

/// [`Workload::Mixed`] under `root`.
fn mixed(root: &Path, block_size: u32) {
    let mut rng = Rng::new(0x5eed);
    let dirs: Vec<PathBuf> = (0..6).map(|i| root.join(format!("d{i}"))).collect();
    for d in &dirs {
        fs::create_dir(d).unwrap();
    }
    let mut files = Vec::new();
    for i in 0..90 {
        let d = &dirs[i % dirs.len()];
        let p = d.join(format!("file-{i:03}"));
        let len = match i % 5 {
            0 => 0,
            1 => rng.below(100) as usize,
            2 => rng.below(3 * block_size as u64) as usize,
            3 => rng.below(64 << 10) as usize,
            _ => (200 << 10) + rng.below(100 << 10) as usize,
        };
        fs::write(&p, random_bytes(&mut rng, len)).unwrap();
        if i % 3 == 0 {
            fsync_path(&p);
        }
        files.push(p);
    }
    // Modes, owners, times, xattrs (in the inode and in a block).
    for (i, p) in files.iter().enumerate().step_by(4) {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: valid path.
        unsafe {
            libc::chmod(c.as_ptr(), [0o600, 0o644, 0o755, 0o4711, 0o1777][i % 5]);
            libc::chown(c.as_ptr(), 1000 + i as u32, 100 + i as u32);
        }
        set_xattr(p, "user.small", format!("v{i}").as_bytes()).unwrap();
        if i % 8 == 0 {
            // Too big for the inode: in an xattr block.
            set_xattr(p, "user.big", &vec![b'x'; block_size as usize / 2]).unwrap();
        }
        set_times(
            p,
            t(1_600_000_000 + i as i64, 500),
            t(1_500_000_000, i as u32),
        )
        .unwrap();
    }
    fsync_path(&files[0]);
    // Links of every kind.
    let links = root.join("links");
    fs::create_dir(&links).unwrap();
    symlink("file-000", links.join("fast")).unwrap();
    symlink(
        "s".repeat((block_size as usize - 1).min(3000)),
        links.join("slow"),
    )
    .unwrap();
    fs::hard_link(&files[1], links.join("hard-1")).unwrap();
    fs::hard_link(&files[1], links.join("hard-2")).unwrap();
    let c = std::ffi::CString::new(links.join("fifo").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid path.
    assert_eq!(
        unsafe { libc::mknod(c.as_ptr(), libc::S_IFIFO | 0o640, 0) },
        0
    );
    fsync_path(&links);
    // A hash-tree directory.
    let h = root.join("htree");
    fs::create_dir(&h).unwrap();
    for i in 0..1500 {
        fs::write(h.join(format!("entry-{i:05}-{}", "p".repeat(i % 20))), b"").unwrap();
    }
    fsync_path(&h);
    // Renames, unlinks, truncates, overwrites; some fsynced.
    for (i, p) in files.iter().enumerate() {
        match i % 9 {
            0 => fs::rename(p, p.with_extension("renamed")).unwrap(),
            1 if i != 1 => fs::remove_file(p).unwrap(),
            2 => File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_len(rng.below(4096))
                .unwrap(),
            3 => {
                let f = File::options().write(true).open(p).unwrap();
                f.set_len(300 << 10).unwrap();
                std::os::unix::fs::FileExt::write_all_at(&f, b"tail", (300 << 10) - 4).unwrap();
            }
            4 => {
                let f = File::options().write(true).open(p).unwrap();
                std::os::unix::fs::FileExt::write_all_at(&f, &random_bytes(&mut rng, 5000), 1000)
                    .unwrap();
            }
            _ => {}
        }
        if i % 10 == 0 {
            fsync_path(&dirs[i % dirs.len()]);
        }
    }
    for i in (0..1500).step_by(3) {
        fs::remove_file(h.join(format!("entry-{i:05}-{}", "p".repeat(i % 20)))).unwrap();
    }
    fsync_path(&h);
    // Blocks that begin with the jbd2 magic number: logged (data=journal)
    // with their first four bytes zeroed and the tag flagged "escaped".
    let mut magic = Vec::new();
    for _ in 0..4 {
        let mut b = random_bytes(&mut rng, block_size as usize);
        b[..4].copy_from_slice(&0xC03B_3998u32.to_be_bytes());
        magic.extend_from_slice(&b);
    }
    let p = root.join("starts-with-jbd2-magic");
    fs::write(&p, &magic).unwrap();
    fsync_path(&p);
    // The last changes are not fsynced: the running transaction dies.
    fs::write(
        root.join("unsynced"),
        b"lost at the crash, unless committed",
    )
    .unwrap();
    fs::create_dir(root.join("unsynced-dir")).unwrap();
}

/// [`Workload::Small`].
fn small_workload(root: &Path) {
    let mut rng = Rng::new(0x5a11);
    let d = root.join("dir");
    fs::create_dir(&d).unwrap();
    for i in 0..12 {
        let p = d.join(format!("f{i}"));
        fs::write(&p, random_bytes(&mut rng, 300 * i)).unwrap();
        if i % 2 == 0 {
            fsync_path(&p);
        }
    }
    set_xattr(&d.join("f1"), "user.x", b"value").unwrap();
    symlink("f1", d.join("link")).unwrap();
    fs::hard_link(d.join("f2"), d.join("f2-again")).unwrap();
    fs::remove_file(d.join("f3")).unwrap();
    fsync_path(&d);
}

/// [`Workload::Wrap`]: `rounds` fsynced rewrites of a few small files.
fn wrap(root: &Path, rounds: usize) {
    let mut rng = Rng::new(0x3a9);
    for i in 0..rounds {
        let p = root.join(format!("f{:02}", i % 40));
        fs::write(&p, random_bytes(&mut rng, 100 + i % 3000)).unwrap();
        fsync_path(&p);
    }
}

/// [`Workload::Revoke`].
fn revoke(root: &Path, small: bool) {
    let mut rng = Rng::new(0x7e0);
    let d = root.join("doomed");
    fs::create_dir(&d).unwrap();
    let name = |i: usize| format!("entry-with-a-rather-long-name-{i:05}");
    let n = if small { 200 } else { 800 };
    for i in 0..n {
        fs::write(d.join(name(i)), b"").unwrap();
    }
    fsync_path(&d);
    for i in 0..n {
        fs::remove_file(d.join(name(i))).unwrap();
    }
    fs::remove_dir(&d).unwrap();
    fsync_path(root);
    for i in 0..if small { 10 } else { 40 } {
        let p = root.join(format!("reuse-{i:02}"));
        fs::write(&p, random_bytes(&mut rng, 16 << 10)).unwrap();
        fsync_path(&p);
    }
}

/// [`Workload::FastCommit`].
fn fast_commits(root: &Path, stale: bool) {
    let mut rng = Rng::new(0xfc);
    for i in 0..20 {
        let p = root.join(format!("fc-{i:02}"));
        fs::write(&p, random_bytes(&mut rng, 100 + i * 700)).unwrap();
        fsync_path(&p);
    }
    if stale {
        let d = File::open(root).unwrap();
        // SAFETY: plain syscall on an open descriptor.
        assert_eq!(unsafe { libc::syncfs(d.as_raw_fd()) }, 0, "syncfs");
        // Changes in the log only: an xattr change cannot be a fast
        // commit, so the fsync commits in full (and, unlike syncfs, does
        // not write the metadata home).
        for i in 0..5 {
            fs::write(root.join(format!("after-syncfs-{i}")), b"x").unwrap();
        }
        let p = root.join("after-syncfs-0");
        set_xattr(&p, "user.ineligible", b"full commit").unwrap();
        fsync_path(&p);
    }
}

/// The last fsynced changes of every workload: new files and a directory
/// whose metadata is in the journal only (too recent to be checkpointed),
/// so the replay changes what the volume shows.
fn last_synced(root: &Path) {
    let d = root.join("last-synced");
    fs::create_dir(&d).unwrap();
    for i in 0..8 {
        let p = d.join(format!("f{i}"));
        fs::write(&p, format!("fsynced just before the crash: {i}")).unwrap();
        fsync_path(&p);
    }
    fsync_path(&d);
}

/// `debugfs -c logdump` of `img` (with the external journal `journal`).
pub fn logdump(img: &Path, journal: Option<&Path>) -> String {
    let mut c = Command::new("debugfs");
    c.env("DEBUGFS_PAGER", "__none__").arg("-c");
    let req = match journal {
        Some(j) => format!("logdump -f {}", j.display()),
        None => "logdump".to_string(),
    };
    c.arg("-R").arg(req).arg(img);
    String::from_utf8_lossy(&run(&mut c).stdout).into_owned()
}

/// Whether logdump's walk of the live log goes back to a lower block
/// (the log wraps around the journal's end).
pub fn logdump_wraps(dump: &str) -> bool {
    let mut last = 0u64;
    for l in dump.lines() {
        if let Some(b) = l.strip_prefix("Found expected sequence ").and_then(|r| {
            r.rsplit_once(" at block ")
                .and_then(|(_, b)| b.trim().parse::<u64>().ok())
        }) {
            if b < last {
                return true;
            }
            last = b;
        }
    }
    false
}

/// Make `spec`'s crash image at `img` (and `journal`): mkfs, mount on a
/// loop device, workload, shutdown, unmount.
fn make(spec: &CrashSpec, img: &Path, journal: Option<&Path>, wrap_rounds: usize) {
    let bs = spec.block_size.to_string();
    let mut jdev = None;
    let jopt = match journal {
        Some(j) => {
            let _ = fs::remove_file(j);
            run_ok(
                Command::new("mke2fs")
                    .args(["-F", "-q", "-O", "journal_dev", "-b", &bs])
                    .arg(j)
                    .arg(format!("{}M", spec.journal_mib)),
            );
            let lo = LoopDevice::attach(j, false).expect("attach the journal device");
            let opt = format!("device={}", lo.path().display());
            jdev = Some(lo);
            opt
        }
        None => format!("size={}", spec.journal_mib),
    };
    let _ = fs::remove_file(img);
    run_ok(
        Command::new("mke2fs")
            .args([
                "-F",
                "-q",
                "-t",
                "ext4",
                "-b",
                &bs,
                "-O",
                spec.features,
                "-J",
                &jopt,
            ])
            .args(["-E", "lazy_itable_init=0,lazy_journal_init=0"])
            .arg(img)
            .arg(spec.size),
    );
    let mut opts = String::from("commit=300");
    if !spec.mount_opts.is_empty() {
        opts.push(',');
        opts.push_str(spec.mount_opts);
    }
    if let Some(lo) = &jdev {
        opts.push_str(&format!(",journal_path={}", lo.path().display()));
    }
    let m = KernelMount::mount(img, false, &opts).expect("mount the crash image");
    match spec.workload {
        Workload::Mixed => mixed(m.path(), spec.block_size),
        Workload::Wrap => wrap(m.path(), wrap_rounds),
        Workload::Revoke => revoke(m.path(), spec.size == "4M"),
        Workload::FastCommit { stale } => fast_commits(m.path(), stale),
        Workload::Small => small_workload(m.path()),
    }
    if !matches!(spec.workload, Workload::FastCommit { .. }) {
        last_synced(m.path());
    }
    shutdown(m.path());
    // The image as a power cut leaves it: copied now, because unmounting
    // writes the committed metadata home (the block device is synced when
    // its last user closes it), which would leave nothing to replay.
    let cut = img.with_extension("cut");
    fs::copy(img, &cut).unwrap();
    let jcut = journal.map(|j| {
        let c = j.with_extension("cut");
        fs::copy(j, &c).unwrap();
        c
    });
    m.unmount().expect("unmount after the shutdown");
    drop(jdev);
    fs::rename(&cut, img).unwrap();
    if let (Some(c), Some(j)) = (jcut, journal) {
        fs::rename(c, j).unwrap();
    }
}

/// `spec`'s crash image, built once and cached.
pub fn crash_image(spec: &CrashSpec) -> CrashImage {
    let key = fnv64(
        format!(
            "{CRASH_VERSION}|{spec:?}|{}|{}",
            mke2fs_version(),
            kernel_release()
        )
        .as_bytes(),
    );
    let dir = cached_build(&format!("crash-{}", spec.name), key, |dir| {
        let img = dir.join("image.img");
        let journal = spec.external.then(|| dir.join("journal.img"));
        let mut rounds = 700;
        for attempt in 0.. {
            make(spec, &img, journal.as_deref(), rounds);
            let dump = logdump(&img, journal.as_deref());
            let ok = match spec.workload {
                // Where the live log ends at the crash depends on how much
                // was checkpointed: write more until it wraps.
                Workload::Wrap => logdump_wraps(&dump),
                Workload::Revoke => dump.contains("(revoke table)"),
                Workload::Mixed | Workload::FastCommit { .. } | Workload::Small => true,
            };
            if ok {
                break;
            }
            assert!(
                attempt < 6,
                "{}: the kernel's log never showed what the workload is for:\n{dump}",
                spec.name
            );
            rounds += 333;
        }
    });
    CrashImage {
        path: dir.join("image.img"),
        journal: spec.external.then(|| dir.join("journal.img")),
    }
}

/// Escaped tags (flags with bit 0x1) in `debugfs logdump -a` output.
pub fn logdump_escapes(dump: &str) -> usize {
    dump.lines()
        .filter_map(|l| l.rsplit_once("(flags 0x"))
        .filter_map(|(_, f)| u32::from_str_radix(f.trim_end_matches(')'), 16).ok())
        .filter(|f| f & 1 != 0)
        .count()
}

/// `spec`'s crash image after the kernel's own replay (a read-write mount
/// and a clean unmount of a copy), cached beside it: what the kernel
/// reads from it, for comparisons that mount it again read-only.
pub fn kernel_replayed(spec: &CrashSpec) -> CrashImage {
    let img = crash_image(spec);
    let dir = img.path.parent().unwrap().to_path_buf();
    let done = dir.join("KERNEL-DONE");
    let out = CrashImage {
        path: dir.join("kernel.img"),
        journal: img.journal.as_ref().map(|_| dir.join("kernel.journal")),
    };
    let _lock = FileLock::acquire(&dir.join(".lock-kernel")).expect("lock");
    if done.exists() {
        return out;
    }
    let tmp = img.copy_to(&dir, "kernel");
    let lo = tmp
        .journal
        .as_ref()
        .map(|j| LoopDevice::attach(j, false).expect("attach the journal"));
    let opts = lo
        .as_ref()
        .map(|l| format!("journal_path={}", l.path().display()))
        .unwrap_or_default();
    let m = KernelMount::mount(&tmp.path, false, &opts).expect("kernel replay mount");
    m.unmount().expect("unmount");
    drop(lo);
    fs::write(&done, "").unwrap();
    out
}
