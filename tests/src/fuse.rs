//! Our FUSE servers as the tests run them: start a frontend binary in the
//! foreground on an image, wait until the kernel lists the mount, and take
//! it down again, reporting how the server ended. Both frontends' tests use
//! this, so a mount is set up and judged the same way for each.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::image::{build_image, MATRIX};
use crate::kwimage::{kw_image, KW_1K, KW_4K};
use crate::oracle::KernelMount;
use crate::snapshot::{diff, host_snapshot, Compare, Field, Report, WalkOptions, ALL_FIELDS};
use crate::util::{page_size, run, target_dir};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Mount options added to every `ext4-fuse` mount the tests make.
pub const EXTRA_OPTS_ENV: &str = "EXT4_TESTS_EXT4_FUSE_OPTS";

/// How long a server may take to mount or to exit after the unmount.
const WAIT: Duration = Duration::from_secs(30);

/// A running FUSE server with its mount; unmounted and killed on drop.
pub struct FuseServer {
    child: Option<Child>,
    mnt: PathBuf,
    log: PathBuf,
    mounted: bool,
}

/// Whether `dir` is a mount point now (its line in /proc/self/mountinfo).
pub fn is_mounted(dir: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    // mountinfo shows resolved paths (no `..`, no symlinks). Resolve the
    // parent only: the mount point itself may be a dead or hung mount.
    let dir = match (dir.parent().map(Path::canonicalize), dir.file_name()) {
        (Some(Ok(p)), Some(name)) => p.join(name),
        _ => dir.to_path_buf(),
    };
    let want = dir.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| m == want)
}

impl FuseServer {
    /// Run `bin SOURCE MNT -f -o ro[,opts]` and wait for the mount: a
    /// read-only mount, as the tests of reading want (the images they
    /// share stay untouched). `Err` carries the server's own words when
    /// it refused or died.
    pub fn mount(bin: &Path, source: &Path, opts: &str) -> Result<FuseServer, String> {
        let ro = if opts.is_empty() {
            "ro".to_string()
        } else {
            format!("ro,{opts}")
        };
        Self::mount_rw(bin, source, &ro)
    }

    /// Run `bin SOURCE MNT -f [-o opts]` (read-write unless `opts` say
    /// `ro`) and wait for the mount.
    pub fn mount_rw(bin: &Path, source: &Path, opts: &str) -> Result<FuseServer, String> {
        // The suites run a second time with FUSE over io_uring
        // (scripts/test-uring.sh): options added to every ext4-fuse mount.
        let extra = std::env::var(EXTRA_OPTS_ENV).unwrap_or_default();
        let joined;
        let opts = if extra.is_empty() || bin.file_name() != Some("ext4-fuse".as_ref()) {
            opts
        } else if opts.is_empty() {
            &extra
        } else {
            joined = format!("{opts},{extra}");
            &joined
        };
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let base = target_dir()
            .join("ext4-test-mnt")
            .join(format!("fuse-{}-{n}", std::process::id()));
        let mnt = base.join("mnt");
        std::fs::create_dir_all(&mnt).map_err(|e| format!("{}: {e}", mnt.display()))?;
        let log = base.join("server.log");
        let err = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut cmd = Command::new(bin);
        cmd.arg(source).arg(&mnt).arg("-f");
        if !opts.is_empty() {
            cmd.arg("-o").arg(opts);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        let mut s = FuseServer {
            child: Some(child),
            mnt,
            log,
            mounted: false,
        };
        let start = Instant::now();
        while !is_mounted(&s.mnt) {
            if let Some(st) = s.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(format!("exited with {st} before mounting: {}", s.stderr()));
            }
            if start.elapsed() > WAIT {
                return Err(format!("not mounted after {WAIT:?}: {}", s.stderr()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        s.mounted = true;
        Ok(s)
    }

    pub fn path(&self) -> &Path {
        &self.mnt
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whatever the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Whether the server process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The server's peak resident set (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Wait for a server that unmounts itself (on a signal, say) to exit;
    /// `None` if it is still running after [`WAIT`] (it is then killed).
    pub fn wait_exit(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let start = Instant::now();
        while start.elapsed() < WAIT {
            if let Ok(Some(st)) = child.try_wait() {
                self.mounted = is_mounted(&self.mnt);
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Unmount the way a user would (`umount`), then wait for the server
    /// to exit on its own. `Err` if either does not happen.
    pub fn unmount(self) -> Result<(ExitStatus, String), String> {
        self.unmount_then(|| ()).map(|(st, err, ())| (st, err))
    }

    /// [`FuseServer::unmount`], running `right_after` as soon as `umount`
    /// returns, before waiting for the server: what `umount` left.
    pub fn unmount_then<T>(
        mut self,
        right_after: impl FnOnce() -> T,
    ) -> Result<(ExitStatus, String, T), String> {
        // "target is busy" can be transient: a process another test thread
        // forks holds copies of our descriptors until it execs.
        let mut tries = 0;
        loop {
            let out = run(Command::new("umount").arg(&self.mnt));
            if out.status.success() {
                break;
            }
            let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
            tries += 1;
            if !err.contains("busy") || tries == 20 {
                return Err(format!("umount {}: {err}", self.mnt.display()));
            }
            std::thread::sleep(Duration::from_millis(25 * tries));
        }
        self.mounted = false;
        let seen = right_after();
        let mut child = self.child.take().expect("server child");
        let start = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(st)) => return Ok((st, self.stderr(), seen)),
                Ok(None) if start.elapsed() < WAIT => std::thread::sleep(Duration::from_millis(10)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "server still running {WAIT:?} after umount: {}",
                        self.stderr()
                    ));
                }
            }
        }
    }
}

impl Drop for FuseServer {
    fn drop(&mut self) {
        if self.mounted {
            // Lazy: a hung server must not wedge the next test.
            let _ = run(Command::new("umount").arg("-l").arg(&self.mnt));
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(base) = self.mnt.parent() {
            let _ = std::fs::remove_dir_all(base);
        }
    }
}

/// What a FUSE mount must show exactly as the kernel's ext4 does:
/// everything but the two ioctl-only fields (FUSE passes no
/// FS_IOC_GETVERSION / GETFLAGS here), and without birth times for a server
/// whose protocol has no `FUSE_STATX` (FreeBSD's fusefs, and `fuser`).
pub fn fuse_fields(statx: bool) -> Vec<Field> {
    ALL_FIELDS
        .iter()
        .copied()
        .filter(|f| !matches!(f, Field::Generation | Field::Flags))
        .filter(|f| statx || *f != Field::Btime)
        .collect()
}

/// [`compare_with_kernel`] on the matrix images named, each mounted from
/// its image file with no options; panics with every difference.
pub fn compare_matrix(bin: &Path, names: &[&str], statx: bool) {
    let mut report = Report::new(&format!("{} vs the kernel's ext4", bin.display()));
    let fields = fuse_fields(statx);
    for spec in MATRIX.iter().filter(|s| names.contains(&s.name)) {
        let img = build_image(spec);
        if !spec.kernel_mountable() {
            report.note(&format!(
                "{}: the kernel cannot mount {}-byte blocks on {}-byte pages; not compared",
                spec.name,
                spec.block_size,
                page_size()
            ));
            continue;
        }
        compare_with_kernel(
            bin,
            spec.name,
            &img.path,
            &img.path,
            "",
            &fields,
            &mut report,
        );
    }
    report.finish();
}

/// [`compare_with_kernel`] on the images the kernel itself wrote
/// ([`crate::kwimage`]: fragmented files with depth-2 extent trees,
/// fallocated and punched ranges, data past 4 GiB), 4 KiB and 1 KiB blocks.
pub fn compare_kernel_written(bin: &Path, statx: bool) {
    let mut report = Report::new(&format!(
        "{} vs the kernel's ext4 on kernel-written images",
        bin.display()
    ));
    let fields = fuse_fields(statx);
    for (name, plan) in [("kernel-written-4k", &KW_4K), ("kernel-written-1k", &KW_1K)] {
        let img = kw_image(plan);
        compare_with_kernel(bin, name, &img, &img, "", &fields, &mut report);
    }
    report.finish();
}

/// Crash images (left needing recovery by the kernel, [`crate::crash`])
/// mounted with `bin` as they are: the journal replayed in memory must
/// read as the kernel reads them after its own replay (file data from the
/// journal under data=journal included). With `-o norecovery` the server
/// must mount them and show them without the replay.
pub fn compare_crash_images(bin: &Path, statx: bool) {
    use crate::crash::{crash_image, crash_spec, kernel_replayed};
    let mut report = Report::new(&format!(
        "{} vs the kernel's ext4 on images needing recovery",
        bin.display()
    ));
    let fields = fuse_fields(statx);
    for name in ["data-journal-4k", "csum-32bit-1k"] {
        let spec = crash_spec(name);
        let img = crash_image(spec);
        let kernel = kernel_replayed(spec);
        compare_with_kernel(bin, name, &kernel.path, &img.path, "", &fields, &mut report);
        match FuseServer::mount(bin, &img.path, "norecovery") {
            Ok(f) => {
                // The last fsynced files are in the journal only.
                let late = f.path().join("last-synced/f7");
                if late.exists() {
                    report.fail(
                        &format!("{name}: norecovery"),
                        "shows a file the journal alone holds",
                    );
                }
                if let Err(e) = f.unmount() {
                    report.fail(&format!("{name}: norecovery unmount"), &e);
                }
            }
            Err(e) => report.fail(&format!("{name}: norecovery mount"), &e),
        }
    }
    // A journal on an external device: refused without it, naming the
    // option; with journal_path= the files only the journal holds read as
    // the kernel's replay has them.
    let spec = crash_spec("external-4k");
    let img = crash_image(spec);
    let kernel = kernel_replayed(spec);
    match FuseServer::mount(bin, &img.path, "") {
        Ok(f) => {
            let _ = f.unmount();
            report.fail("external journal", "mounted without its journal device");
        }
        Err(e) if !e.contains("journal_path=") => report.fail(
            "external journal",
            &format!("refused without naming journal_path=: {e}"),
        ),
        Err(_) => {}
    }
    let journal = img.journal.as_ref().expect("an external journal");
    match FuseServer::mount(
        bin,
        &img.path,
        &format!("journal_path={}", journal.display()),
    ) {
        Ok(f) => {
            for p in ["last-synced/f7", "starts-with-jbd2-magic", "links/slow"] {
                let got = std::fs::read(f.path().join(p)).or_else(|_| {
                    std::fs::read_link(f.path().join(p))
                        .map(|t| t.into_os_string().into_encoded_bytes())
                });
                let want = crate::oracle::debugfs_dump(&kernel.path, &format!("/{p}"));
                if want.is_err() || got.as_ref().ok() != want.as_ref().ok() {
                    report.fail(
                        &format!("external journal: /{p}"),
                        "differs from the kernel's replay",
                    );
                }
            }
            if let Err(e) = f.unmount() {
                report.fail("external journal: unmount", &e);
            }
        }
        Err(e) => report.fail("external journal: journal_path= mount", &e),
    }
    report.finish();
}

/// Mount `img` with the kernel's ext4 and with `bin` (on `source`: the
/// image file itself or a block device holding it) side by side and add
/// every difference of a whole-tree walk (stat fields, contents, xattrs,
/// symlinks, SEEK_DATA/SEEK_HOLE maps; the `fields` given) and of statvfs
/// to `report`. Returns the number of paths compared.
pub fn compare_with_kernel(
    bin: &Path,
    name: &str,
    img: &Path,
    source: &Path,
    opts: &str,
    fields: &[Field],
    report: &mut Report,
) -> usize {
    let kernel = match KernelMount::ro(img) {
        Ok(m) => m,
        Err(e) => {
            report.fail(&format!("{name}: kernel mount"), &e.to_string());
            return 0;
        }
    };
    let mut fuse = match FuseServer::mount(bin, source, opts) {
        Ok(s) => s,
        Err(e) => {
            report.fail(&format!("{name}: {} mount", bin.display()), &e);
            return 0;
        }
    };
    let walk = WalkOptions {
        ioctls: false,
        ..WalkOptions::default()
    };
    let want = host_snapshot(kernel.path(), walk);
    let got = host_snapshot(fuse.path(), walk);
    let cmp = Compare {
        fields,
        ignore_dir_size: false,
        ignore_paths: &[],
    };
    let n = want.entries.len();
    report.section(
        &format!("{name}: {} vs the kernel's ext4", bin.display()),
        diff(&want, &got, &cmp),
        n,
    );
    let (k, f) = (statvfs(kernel.path()), statvfs(fuse.path()));
    if k != f {
        report.fail(
            &format!("{name}: statvfs"),
            &format!("kernel {k:?}, fuse {f:?}"),
        );
    }
    if !fuse.alive() {
        report.fail(
            &format!("{name}: server"),
            &format!("died during the walk: {}", fuse.stderr()),
        );
        return n;
    }
    match fuse.unmount() {
        Ok((st, _)) if st.success() => {}
        Ok((st, log)) => report.fail(
            &format!("{name}: server exit"),
            &format!("{st} after umount: {log}"),
        ),
        Err(e) => report.fail(&format!("{name}: unmount"), &e),
    }
    n
}

/// The statvfs numbers both mounts must agree on: block size and
/// fragment size, block and inode counts, name length.
pub fn statvfs(p: &Path) -> [u64; 8] {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).expect("path without NUL");
    // SAFETY: a zeroed statvfs is a valid out-buffer; the path is valid.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    assert_eq!(rc, 0, "statvfs {}", p.display());
    [
        s.f_bsize,
        s.f_frsize,
        s.f_blocks,
        s.f_bfree,
        s.f_bavail,
        s.f_files,
        s.f_ffree,
        s.f_namemax,
    ]
}
