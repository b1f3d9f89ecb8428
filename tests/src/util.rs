//! Plumbing shared by the helpers: where caches live, file locks, running
//! outside tools, loud skips, hashing.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The cargo target directory (`CARGO_TARGET_DIR`, else the workspace's),
/// canonical: mount points under it are looked up in /proc/self/mountinfo,
/// which shows resolved paths (no `..`, no symlinks).
pub fn target_dir() -> PathBuf {
    let d = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("target"),
    };
    d.canonicalize().unwrap_or(d)
}

/// The e2fsprogs corpus of corrupt and unusual images
/// (`shared/corpus/e2fsprogs`, with its `MANIFEST.tsv`): `EXT4_CORPUS`
/// if set, else `shared/` beside the repository (as CI clones it) or
/// beside the directory holding it (a git worktree one level deeper).
/// `None`, after a loud [`skip`], when it is nowhere.
pub fn corpus_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("EXT4_CORPUS") {
        return Some(PathBuf::from(d));
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for up in ["..", "../.."] {
        let d = workspace.join(up).join("shared/corpus/e2fsprogs");
        if d.join("MANIFEST.tsv").is_file() {
            return Some(d.canonicalize().unwrap_or(d));
        }
    }
    skip("the e2fsprogs corpus (shared/corpus/e2fsprogs beside the repository) is missing; set EXT4_CORPUS");
    None
}

/// Where built trees and images are cached between tests and runs.
pub fn cache_dir() -> PathBuf {
    let d = target_dir().join("ext4-test-images");
    std::fs::create_dir_all(&d).expect("create image cache dir");
    d
}

/// Whether cache entry `entry` is `{name}-{16 hex digits}`: a build of
/// `name` under some key, and not of a name `name` is a prefix of (building
/// `ext4` must not remove `ext4-inline`'s image while a test uses it).
pub fn is_build_of(entry: &str, name: &str) -> bool {
    entry
        .strip_prefix(name)
        .and_then(|r| r.strip_prefix('-'))
        .is_some_and(|k| k.len() == 16 && k.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The cache directory of `name` for `key` (what the build depends on),
/// built by `build` once: under a lock, so parallel tests and processes
/// wait for one build, and with the directories of older keys removed.
pub fn cached_build(name: &str, key: u64, build: impl FnOnce(&Path)) -> PathBuf {
    let cache = cache_dir();
    let dir = cache.join(format!("{name}-{key:016x}"));
    let _lock = FileLock::acquire(&cache.join(format!(".lock-{name}"))).expect("lock");
    if dir.join("DONE").exists() {
        return dir;
    }
    for e in std::fs::read_dir(&cache).into_iter().flatten().flatten() {
        if is_build_of(&e.file_name().to_string_lossy(), name) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    std::fs::create_dir_all(&dir).unwrap();
    let t = std::time::Instant::now();
    build(&dir);
    std::fs::write(dir.join("DONE"), "").unwrap();
    eprintln!("built {} in {:.1?}", dir.display(), t.elapsed());
    dir
}

/// An exclusive `flock` on a file, held until drop. flock locks belong to
/// the open file description, so two threads of one process exclude each
/// other as well as two processes do.
pub struct FileLock {
    _file: File,
}

impl FileLock {
    pub fn acquire(path: &Path) -> io::Result<FileLock> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        loop {
            // SAFETY: plain syscall on a descriptor we own.
            let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if r == 0 {
                return Ok(FileLock { _file: file });
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Render a command line for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        let a = a.to_string_lossy();
        if a.contains(' ') || a.is_empty() {
            s.push_str(&format!("'{a}'"));
        } else {
            s.push_str(&a);
        }
    }
    s
}

/// Run a command, capturing its output.
pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null());
    match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!("cannot run `{}`: {e}", describe(cmd)),
    }
}

/// Run `sh -ec script` in `dir`, which must succeed.
pub fn sh(dir: &Path, script: &str) {
    run_ok(Command::new("sh").arg("-ec").arg(script).current_dir(dir));
}

/// Run a command that must succeed; returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    if !out.status.success() {
        panic!(
            "`{}` failed ({}):\nstdout:\n{}\nstderr:\n{}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A binary of the workspace built beside the running test:
/// `target/<profile>/deps/<test>` -> `target/<profile>/<name>`.
pub fn built_binary(name: &str, package: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} is not built: `cargo test --workspace` builds it, or `cargo build -p {package}`",
        p.display()
    );
    p
}

/// Whether an executable is on `PATH` (or in the sbin directories, which
/// non-login root shells sometimes lack).
pub fn have_tool(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            ["/sbin", "/usr/sbin", "/bin", "/usr/bin"]
                .iter()
                .map(PathBuf::from),
        )
        .any(|d| d.join(name).is_file())
}

/// Print a skip notice nobody can miss. With `EXT4_TESTS_REQUIRE_ALL=1`
/// (set it on CI machines that have everything) a skip is a failure.
pub fn skip(reason: &str) {
    let line = format!("SKIPPED: {reason}");
    eprintln!("\n********************************************************************");
    eprintln!("{line}");
    eprintln!("********************************************************************\n");
    println!("{line}");
    if std::env::var_os("EXT4_TESTS_REQUIRE_ALL").is_some_and(|v| v == "1") {
        panic!("{line} (EXT4_TESTS_REQUIRE_ALL=1 forbids skipping)");
    }
}

/// e2fsprogs present? Prints a skip line when not.
pub fn require_e2fsprogs() -> bool {
    for t in ["mke2fs", "debugfs", "e2fsck"] {
        if !have_tool(t) {
            skip(&format!("`{t}` not found (install e2fsprogs)"));
            return false;
        }
    }
    true
}

/// A tool present? Prints a skip line naming its package when not.
pub fn require_tool(tool: &str, package: &str) -> bool {
    if have_tool(tool) {
        return true;
    }
    skip(&format!("`{tool}` not found (install {package})"));
    false
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Root, loop devices and the kernel's ext4 driver: what mounting an image
/// needs. Prints a skip line when something is missing.
pub fn require_kernel_ext4() -> bool {
    if !is_root() {
        skip("kernel ext4 comparison needs root (mount, losetup)");
        return false;
    }
    if !Path::new("/dev/loop-control").exists() {
        skip("no /dev/loop-control: loop devices unavailable");
        return false;
    }
    for t in ["mount", "umount", "losetup"] {
        if !have_tool(t) {
            skip(&format!("`{t}` not found"));
            return false;
        }
    }
    let has_ext4 = |s: &str| {
        s.lines()
            .any(|l| l.split_whitespace().last() == Some("ext4"))
    };
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !has_ext4(&fs) {
        let _ = Command::new("modprobe").arg("ext4").output();
        let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
        if !has_ext4(&fs) {
            skip("the kernel has no ext4 driver (/proc/filesystems)");
            return false;
        }
    }
    true
}

/// Root and /dev/fuse: what mounting our FUSE servers needs. Prints a skip
/// line when something is missing.
pub fn require_fuse() -> bool {
    if !is_root() {
        skip("FUSE mounts need root here (the tests mount with mount(2))");
        return false;
    }
    if !Path::new("/dev/fuse").exists() {
        skip("no /dev/fuse (load the fuse module)");
        return false;
    }
    true
}

/// The system page size: the kernel's ext4 cannot mount blocks larger.
pub fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v > 0 {
        v as u32
    } else {
        4096
    }
}

/// FNV-1a, for cache keys that must be stable across runs and toolchains.
pub fn fnv64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Size of the chunks the content hash is defined over.
pub const CHUNK: usize = 64 * 1024;

/// Hash of file contents defined so that holes cost nothing: the hash of
/// (chunk index, chunk bytes) over every 64 KiB chunk that is not all zero,
/// plus the file size. Two files have the same hash iff (with overwhelming
/// probability) they read back the same bytes, however their holes are laid
/// out, so a reader may skip regions it knows are holes.
#[derive(Clone, Debug)]
pub struct ContentHasher {
    a: u64,
    b: u64,
    last_chunk: Option<u64>,
}

impl Default for ContentHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl ContentHasher {
    pub fn new() -> Self {
        ContentHasher {
            a: 0x243f_6a88_85a3_08d3,
            b: 0x1319_8a2e_0370_7344,
            last_chunk: None,
        }
    }

    fn mix(&mut self, w: u64) {
        self.a = (self.a ^ w)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
        self.b = self
            .b
            .wrapping_add(w)
            .wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
            .rotate_left(31)
            ^ self.a;
    }

    /// Feed the whole chunk number `index` (shorter only as the file's last
    /// chunk). Chunks must come in increasing order; repeats are ignored.
    pub fn chunk(&mut self, index: u64, data: &[u8]) {
        if self.last_chunk.is_some_and(|l| index <= l) {
            return;
        }
        self.last_chunk = Some(index);
        if data.iter().all(|&b| b == 0) {
            return;
        }
        self.mix(index ^ 0xa5a5_a5a5_0000_0000);
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            self.mix(u64::from_le_bytes(w.try_into().unwrap()));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(last) ^ ((rest.len() as u64) << 56));
        }
    }

    pub fn finish(mut self, size: u64) -> u64 {
        self.mix(size);
        self.mix(0x1234_5678);
        self.a ^ self.b.rotate_left(17)
    }
}

#[cfg(test)]
mod tests {
    use super::is_build_of;

    #[test]
    fn builds_of_a_name_not_of_longer_names() {
        assert!(is_build_of("img-ext2-0123456789abcdef", "img-ext2"));
        assert!(!is_build_of("img-ext2-1k-128-0123456789abcdef", "img-ext2"));
        assert!(!is_build_of("img-ext4-inline-0123456789abcdef", "img-ext4"));
        assert!(!is_build_of("img-ext2-partial", "img-ext2"));
    }
}
