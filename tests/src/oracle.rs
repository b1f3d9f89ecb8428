//! Outside oracles: e2fsprogs' `debugfs` (parsed), `e2fsck -fn`, and the
//! kernel's ext4 through loop devices and mounts that clean up after
//! themselves, even when the test panics.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::tree::Time;
use crate::util::{describe, run, run_ok, target_dir};

fn debugfs_cmd(img: &Path, write: bool) -> Command {
    let mut c = Command::new("debugfs");
    // No pager, whatever the environment says; times in UTC.
    c.env("DEBUGFS_PAGER", "__none__")
        .env("PAGER", "__none__")
        .env("TZ", "UTC");
    if write {
        c.arg("-w");
    }
    c.arg(img);
    c
}

/// Quote a path for debugfs' command parser.
pub fn dq(path: &str) -> String {
    assert!(!path.contains('"'), "debugfs cannot quote {path:?}");
    format!("\"{path}\"")
}

/// Run one debugfs request; returns stdout. debugfs reports failures on
/// stderr with exit code 0, so any stderr line but its banner is an error.
pub fn debugfs(img: &Path, request: &str) -> Result<String, String> {
    debugfs_request(img, request, false)
}

/// [`debugfs`] with the image opened for writing (`-w`), for requests that
/// change it (`sif`, `ssv`, `write`, `ea_set`, ...).
pub fn debugfs_w(img: &Path, request: &str) -> Result<String, String> {
    debugfs_request(img, request, true)
}

fn debugfs_request(img: &Path, request: &str, write: bool) -> Result<String, String> {
    let mut c = debugfs_cmd(img, write);
    c.arg("-R").arg(request);
    let out = run(&mut c);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errs: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
        .collect();
    if !out.status.success() || !errs.is_empty() {
        return Err(format!("`{}`: {}", describe(&c), errs.join(" | ")));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Run a list of requests in one debugfs process (`-f`); returns each
/// request's output. Fails if any request reported an error.
pub fn debugfs_script(img: &Path, requests: &[String], write: bool) -> Result<Vec<String>, String> {
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    let script = tempfile_path("debugfs-script");
    std::fs::write(&script, requests.join("\n") + "\n").map_err(|e| e.to_string())?;
    let mut c = debugfs_cmd(img, write);
    c.arg("-f").arg(&script);
    let out = run(&mut c);
    let _ = std::fs::remove_file(&script);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let errs: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
        .collect();
    if !out.status.success() || !errs.is_empty() {
        return Err(format!(
            "debugfs -f ({} requests): {}",
            requests.len(),
            errs.iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join(" | ")
        ));
    }
    // With -f, debugfs echoes each request as "debugfs: <request>".
    let mut outputs: Vec<String> = Vec::new();
    for line in stdout.lines() {
        if let Some(_req) = line.strip_prefix("debugfs: ") {
            outputs.push(String::new());
        } else if let Some(last) = outputs.last_mut() {
            last.push_str(line);
            last.push('\n');
        }
    }
    if outputs.len() != requests.len() {
        return Err(format!(
            "debugfs -f: {} requests but {} echoed",
            requests.len(),
            outputs.len()
        ));
    }
    Ok(outputs)
}

/// Run a debugfs script that needs no image (`dx_hash`, say); returns
/// stdout as bytes (it may echo names that are not UTF-8).
pub fn debugfs_raw_script(script: &[u8]) -> Vec<u8> {
    let path = tempfile_path("debugfs-raw-script");
    std::fs::write(&path, script).expect("write the debugfs script");
    let mut c = Command::new("debugfs");
    c.env("DEBUGFS_PAGER", "__none__").env("PAGER", "__none__");
    c.arg("-f").arg(&path);
    let out = run(&mut c);
    let _ = std::fs::remove_file(&path);
    out.stdout
}

/// Damage an image with `debugfs -w` requests (one process). debugfs
/// complains on stderr about the damage it is asked to make (a bad MMP
/// magic on close, say), so only its exit status counts here.
pub fn debugfs_damage(img: &Path, requests: &[String]) {
    let script = tempfile_path("debugfs-damage");
    std::fs::write(&script, requests.join("\n") + "\n").expect("write the debugfs script");
    let mut c = debugfs_cmd(img, true);
    c.arg("-f").arg(&script);
    let out = run(&mut c);
    let _ = std::fs::remove_file(&script);
    assert!(
        out.status.success(),
        "`{}`: {}",
        describe(&c),
        String::from_utf8_lossy(&out.stderr)
    );
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh, unique path under the target directory's scratch area.
pub fn tempfile_path(stem: &str) -> PathBuf {
    let d = target_dir().join("ext4-test-tmp");
    std::fs::create_dir_all(&d).expect("create scratch dir");
    d.join(format!(
        "{stem}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A scratch directory under [`tempfile_path`], created now and removed
/// with everything in it when dropped (also when the test fails).
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(stem: &str) -> Scratch {
        let p = tempfile_path(stem);
        std::fs::create_dir_all(&p).expect("create scratch dir");
        Scratch(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `debugfs stat`, parsed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DebugfsStat {
    pub ino: u64,
    /// "regular", "directory", "symlink", "character special", ...
    pub kind: String,
    /// Permission bits (`i_mode & 07777`).
    pub perm: u32,
    pub flags: u32,
    pub generation: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub links: u64,
    pub blockcount: u64,
    pub atime: Option<Time>,
    pub mtime: Option<Time>,
    pub ctime: Option<Time>,
    pub crtime: Option<Time>,
    pub device: Option<(u32, u32)>,
    pub fast_link: Option<Vec<u8>>,
    /// name -> value length as debugfs prints it (ACLs in ext4's on-disk
    /// format, so their lengths are not the xattr-API lengths).
    pub xattrs: BTreeMap<String, usize>,
}

fn after<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let i = text.find(key)?;
    text[i + key.len()..].split_whitespace().next()
}

fn num<T: std::str::FromStr>(s: Option<&str>) -> Option<T> {
    s?.parse().ok()
}

fn hex(s: Option<&str>) -> Option<u32> {
    u32::from_str_radix(s?.trim_start_matches("0x"), 16).ok()
}

/// Decode debugfs' "0xLO:EXTRA" (or "0xLO" for 128-byte inodes): seconds
/// are the signed low word plus the two epoch bits times 2^32, nanoseconds
/// the extra word shifted right by two (ext4's documented encoding).
pub fn decode_time(s: &str) -> Option<Time> {
    let s = s.trim_start_matches("0x");
    let (lo, extra) = match s.split_once(':') {
        Some((lo, ex)) => (
            u32::from_str_radix(lo, 16).ok()?,
            u32::from_str_radix(ex, 16).ok()?,
        ),
        None => (u32::from_str_radix(s, 16).ok()?, 0),
    };
    Some(Time {
        sec: lo as i32 as i64 + (((extra & 3) as i64) << 32),
        nsec: extra >> 2,
    })
}

pub fn parse_stat(out: &str) -> Result<DebugfsStat, String> {
    let mut st = DebugfsStat::default();
    let mut lines = out.lines().peekable();
    let mut seen_inode = false;
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("Inode:") && t.contains("Type:") {
            seen_inode = true;
            st.ino = num(after(t, "Inode:")).ok_or("Inode")?;
            let ty = &t[t.find("Type:").unwrap() + 5..];
            let ty = ty.split("Mode:").next().unwrap_or("").trim();
            st.kind = ty.to_string();
            st.perm = u32::from_str_radix(after(t, "Mode:").ok_or("Mode")?, 8)
                .map_err(|e| e.to_string())?;
            st.flags = hex(after(t, "Flags:")).ok_or("Flags")?;
        } else if t.starts_with("Generation:") {
            st.generation = num(after(t, "Generation:")).ok_or("Generation")?;
        } else if t.starts_with("User:") {
            // debugfs prints ids as signed ints.
            st.uid = num::<i64>(after(t, "User:")).ok_or("User")? as u32;
            st.gid = num::<i64>(after(t, "Group:")).ok_or("Group")? as u32;
            st.size = num(after(t, "Size:")).ok_or("Size")?;
        } else if t.starts_with("Links:") {
            st.links = num(after(t, "Links:")).ok_or("Links")?;
            st.blockcount = num(after(t, "Blockcount:")).ok_or("Blockcount")?;
        } else if let Some((k, rest)) = t.split_once(": ") {
            let v = rest.split_whitespace().next().unwrap_or("");
            match k {
                "atime" => st.atime = decode_time(v),
                "mtime" => st.mtime = decode_time(v),
                "ctime" => st.ctime = decode_time(v),
                "crtime" => st.crtime = decode_time(v),
                "Device major/minor number" | "(New-style) Device major/minor number" => {
                    let (a, b) = v.split_once(':').ok_or("device")?;
                    st.device = Some((
                        a.parse().map_err(|_| "major")?,
                        b.parse().map_err(|_| "minor")?,
                    ));
                }
                "Fast link dest" => {
                    let r = rest.trim_end();
                    let r = r
                        .strip_prefix('"')
                        .and_then(|r| r.strip_suffix('"'))
                        .unwrap_or(r);
                    st.fast_link = Some(r.as_bytes().to_vec());
                }
                _ => {}
            }
        }
        if t.starts_with("Extended attributes:") {
            while let Some(l) = lines.peek() {
                if !l.starts_with("  ") {
                    break;
                }
                let l = lines.next().unwrap().trim();
                // "name (len)" or "name (len) = value"
                if let Some(open) = l.find(" (") {
                    let name = &l[..open];
                    let len: usize = l[open + 2..]
                        .split(')')
                        .next()
                        .and_then(|n| n.parse().ok())
                        .ok_or("xattr len")?;
                    st.xattrs.insert(name.to_string(), len);
                }
            }
        }
    }
    if !seen_inode {
        return Err(format!("no inode in debugfs stat output: {out:?}"));
    }
    Ok(st)
}

pub fn debugfs_stat(img: &Path, path: &str) -> Result<DebugfsStat, String> {
    parse_stat(&debugfs(img, &format!("stat {}", dq(path)))?)
}

/// One line of `debugfs ls -l`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LsEntry {
    pub ino: u64,
    /// Full mode, type bits included.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub name: Vec<u8>,
}

/// Parse `ls -l`: `ino mode (ft) uid gid size date time name`, where the
/// name is everything after the time column (it may contain spaces).
pub fn parse_ls(out: &str) -> Result<Vec<LsEntry>, String> {
    let mut v = Vec::new();
    for line in out.lines() {
        if line.trim().is_empty() {
            continue;
        }
        // Unused slots (inode 0) of directory blocks, shown as blank rows.
        if line.split_whitespace().next() == Some("0") {
            continue;
        }
        let mut rest = line;
        let mut toks = Vec::new();
        for _ in 0..8 {
            let t = rest.trim_start();
            let end = t.find(' ').unwrap_or(t.len());
            toks.push(&t[..end]);
            rest = &t[end..];
        }
        let name = rest.strip_prefix(' ').unwrap_or(rest);
        let bad = || format!("cannot parse debugfs ls line {line:?}");
        v.push(LsEntry {
            ino: toks[0].parse().map_err(|_| bad())?,
            mode: u32::from_str_radix(toks[1], 8).map_err(|_| bad())?,
            uid: toks[3].parse::<i64>().map_err(|_| bad())? as u32,
            gid: toks[4].parse::<i64>().map_err(|_| bad())? as u32,
            size: toks[5].parse().map_err(|_| bad())?,
            name: unescape(name),
        });
    }
    Ok(v)
}

/// debugfs prints bytes outside printable ASCII (and the backslash) as
/// `\xNN`; undo that.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') && i + 4 <= b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 2..i + 4], 16) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

pub fn debugfs_ls(img: &Path, dir: &str) -> Result<Vec<LsEntry>, String> {
    parse_ls(&debugfs(img, &format!("ls -l {}", dq(dir)))?)
}

/// `debugfs dump`: the file's bytes as e2fsprogs reads them.
pub fn debugfs_dump(img: &Path, path: &str) -> Result<Vec<u8>, String> {
    let out = tempfile_path("dump");
    debugfs(img, &format!("dump {} {}", dq(path), out.display()))?;
    let r = std::fs::read(&out).map_err(|e| format!("reading dump of {path}: {e}"));
    let _ = std::fs::remove_file(&out);
    r
}

/// Depth of a file's extent tree per `debugfs ex` (0: extents in the inode).
pub fn debugfs_extent_depth(img: &Path, path: &str) -> Result<u32, String> {
    let out = debugfs(img, &format!("ex {}", dq(path)))?;
    // Rows start with "level/max_depth", e.g. " 1/ 2".
    for line in out.lines().skip(1) {
        let t = line.trim_start();
        if let Some((_, rest)) = t.split_once('/') {
            if let Some(d) = rest.split_whitespace().next().and_then(|d| d.parse().ok()) {
                return Ok(d);
            }
        }
    }
    Err(format!("no extent rows for {path}: {out:?}"))
}

/// Number of extents (leaf rows) `debugfs ex` lists for a file.
pub fn debugfs_extent_count(img: &Path, path: &str) -> Result<usize, String> {
    let out = debugfs(img, &format!("ex {}", dq(path)))?;
    let mut n = 0;
    for line in out.lines().skip(1) {
        let t = line.trim_start();
        if let Some((lvl, rest)) = t.split_once('/') {
            let (Ok(lvl), Some(Ok(max))) = (
                lvl.trim().parse::<u32>(),
                rest.split_whitespace().next().map(str::parse::<u32>),
            ) else {
                continue;
            };
            if lvl == max {
                n += 1;
            }
        }
    }
    Ok(n)
}

/// `mke2fs -F -q ARGS [-d SRC] IMG SIZE`, which must succeed (it panics
/// with mke2fs' own words otherwise).
pub fn mke2fs(img: &Path, args: &[&str], src: Option<&Path>, size: &str) {
    let mut c = Command::new("mke2fs");
    c.args(["-F", "-q"]).args(args);
    if let Some(src) = src {
        c.arg("-d").arg(src);
    }
    run_ok(c.arg(img).arg(size));
}

/// `e2fsck -fn`: exit code and output.
pub fn e2fsck_check(img: &Path) -> (i32, String) {
    let mut c = Command::new("e2fsck");
    c.arg("-fn").arg(img);
    let out = run(&mut c);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// `e2fsck -fyD`: rebuild every directory as a hash tree (mke2fs -d
/// writes linear ones). Panics unless it exits 0 (nothing to do) or 1
/// (directories rebuilt).
pub fn e2fsck_index_dirs(img: &Path) {
    let mut c = Command::new("e2fsck");
    c.arg("-fyD").arg(img);
    let out = run(&mut c);
    let code = out.status.code().unwrap_or(-1);
    assert!(
        code == 0 || code == 1,
        "`{}` exited {code}: {}",
        describe(&c),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The physical blocks of `path`, in logical order (`debugfs blocks`).
pub fn debugfs_blocks(img: &Path, path: &str) -> Result<Vec<u64>, String> {
    let out = debugfs(img, &format!("blocks {}", dq(path)))?;
    out.split_whitespace()
        .map(|w| {
            w.parse()
                .map_err(|_| format!("debugfs blocks {path}: {w:?}"))
        })
        .collect()
}

/// Panic unless `e2fsck -fn` finds the image clean.
pub fn assert_fsck_clean(img: &Path) {
    let (code, text) = e2fsck_check(img);
    assert_eq!(
        code,
        0,
        "e2fsck -fn {} exited {code}:\n{text}",
        img.display()
    );
}

/// An attached loop device, detached on drop.
pub struct LoopDevice {
    dev: PathBuf,
    attached: bool,
}

impl LoopDevice {
    pub fn attach(img: &Path, read_only: bool) -> io::Result<LoopDevice> {
        Self::attach_range(img, None, read_only)
    }

    /// `losetup -o OFFSET --sizelimit LEN`: the `(offset, len)` bytes of
    /// `img` (a partition of a disk image) as a device of their own.
    pub fn attach_range(
        img: &Path,
        range: Option<(u64, u64)>,
        read_only: bool,
    ) -> io::Result<LoopDevice> {
        let mut c = Command::new("losetup");
        c.arg("-f").arg("--show");
        if read_only {
            c.arg("-r");
        }
        if let Some((off, len)) = range {
            c.arg("-o").arg(off.to_string());
            c.arg("--sizelimit").arg(len.to_string());
        }
        c.arg(img);
        let out = run(&mut c);
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "`{}`: {}",
                describe(&c),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        Ok(LoopDevice {
            dev,
            attached: true,
        })
    }

    pub fn path(&self) -> &Path {
        &self.dev
    }

    /// `loop3` for `/dev/loop3` (the name under /sys/fs/ext4).
    pub fn name(&self) -> String {
        self.dev.file_name().unwrap().to_string_lossy().into_owned()
    }

    pub fn detach(mut self) -> io::Result<()> {
        self.detach_inner()
    }

    fn detach_inner(&mut self) -> io::Result<()> {
        if !self.attached {
            return Ok(());
        }
        let mut last = String::new();
        for i in 0..20 {
            let out = run(Command::new("losetup").arg("-d").arg(&self.dev));
            if out.status.success() {
                self.attached = false;
                return Ok(());
            }
            last = String::from_utf8_lossy(&out.stderr).into_owned();
            std::thread::sleep(std::time::Duration::from_millis(50 * (i + 1)));
        }
        Err(io::Error::other(format!(
            "losetup -d {}: {last}",
            self.dev.display()
        )))
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        if let Err(e) = self.detach_inner() {
            eprintln!("WARNING: {e}");
        }
    }
}

/// Run `sh -ec script` with the kernel's read-write mount of `img` as the
/// working directory (a tree written by the kernel), then unmount.
pub fn kernel_write(img: &Path, script: &str) {
    let m = KernelMount::mount(img, false, "").expect("kernel mount rw");
    crate::util::sh(m.path(), script);
    m.unmount().expect("unmount");
}

/// The tree the kernel's read-only mount of `img` shows.
pub fn kernel_snapshot(
    img: &Path,
    opts: crate::snapshot::WalkOptions,
) -> crate::snapshot::Snapshot {
    let m = KernelMount::mount(img, true, "").expect("kernel mount");
    let s = crate::snapshot::host_snapshot(m.path(), opts);
    m.unmount().expect("unmount");
    s
}

/// The kernel's ext4 mounting an image on a loop device; unmounts, detaches
/// and removes the mount point on drop (also while unwinding from a panic).
pub struct KernelMount {
    dir: PathBuf,
    lo: Option<LoopDevice>,
    mounted: bool,
}

impl KernelMount {
    /// Mount read-only with `-t ext4` (the ext4 driver also serves ext2/3
    /// images, and it is the oracle here).
    pub fn ro(img: &Path) -> io::Result<KernelMount> {
        Self::mount(img, true, "")
    }

    pub fn mount(img: &Path, read_only: bool, options: &str) -> io::Result<KernelMount> {
        sweep_dead_processes();
        let lo = LoopDevice::attach(img, read_only)?;
        let dir = target_dir().join("ext4-test-mnt").join(format!(
            "m-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let mut m = KernelMount {
            dir,
            lo: Some(lo),
            mounted: false,
        };
        let mut opts = String::from(if read_only { "ro" } else { "rw" });
        if !options.is_empty() {
            opts.push(',');
            opts.push_str(options);
        }
        let mut c = Command::new("mount");
        c.arg("-t")
            .arg("ext4")
            .arg("-o")
            .arg(&opts)
            .arg(m.lo.as_ref().unwrap().path())
            .arg(&m.dir);
        let out = run(&mut c);
        if !out.status.success() {
            let dmesg = run(Command::new("dmesg").arg("--notime")).stdout;
            let dmesg = String::from_utf8_lossy(&dmesg);
            let tail: Vec<&str> = dmesg.lines().rev().take(3).collect();
            return Err(io::Error::other(format!(
                "`{}` failed: {} (kernel: {})",
                describe(&c),
                String::from_utf8_lossy(&out.stderr).trim(),
                tail.join(" | ")
            )));
        }
        m.mounted = true;
        Ok(m)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn loop_name(&self) -> String {
        self.lo.as_ref().map(|l| l.name()).unwrap_or_default()
    }

    /// Unmount now, reporting failure (drop only warns).
    pub fn unmount(mut self) -> io::Result<()> {
        self.cleanup()
    }

    fn cleanup(&mut self) -> io::Result<()> {
        if self.mounted {
            let mut ok = false;
            let mut last = String::new();
            for i in 0..20 {
                let out = run(Command::new("umount").arg(&self.dir));
                if out.status.success() {
                    ok = true;
                    break;
                }
                last = String::from_utf8_lossy(&out.stderr).into_owned();
                std::thread::sleep(std::time::Duration::from_millis(50 * (i + 1)));
            }
            if !ok {
                // Last resort so the next test is not wedged; the loop
                // device goes away when the lazy unmount completes.
                let _ = run(Command::new("umount").arg("-l").arg(&self.dir));
                self.mounted = false;
                return Err(io::Error::other(format!(
                    "umount {}: {last}",
                    self.dir.display()
                )));
            }
            self.mounted = false;
        }
        if let Some(lo) = self.lo.take() {
            lo.detach()?;
        }
        let _ = std::fs::remove_dir(&self.dir);
        Ok(())
    }
}

impl Drop for KernelMount {
    fn drop(&mut self) {
        if let Err(e) = self.cleanup() {
            eprintln!("WARNING: cleaning up kernel mount: {e}");
        }
    }
}

/// Whether scratch name `<stem>-<pid>-<n>` belongs to a process that is gone.
fn owner_dead(name: &str) -> bool {
    let mut parts = name.rsplit('-');
    let _n = parts.next();
    match parts.next().and_then(|p| p.parse::<u32>().ok()) {
        Some(pid) => pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists(),
        None => false,
    }
}

/// Drop guards cannot run when a test process is killed (SIGKILL, a broken
/// pipe in the harness): once per process, unmount, detach and delete what
/// dead test processes left under our scratch directories.
pub fn sweep_dead_processes() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let mnt_root = target_dir().join("ext4-test-mnt");
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        for line in mounts.lines() {
            let mut f = line.split_whitespace();
            let (Some(src), Some(dir)) = (f.next(), f.next()) else {
                continue;
            };
            let dir = Path::new(dir);
            let ours = dir
                .parent()
                .is_some_and(|p| p.canonicalize().ok() == mnt_root.canonicalize().ok());
            if !ours || !owner_dead(&dir.file_name().unwrap_or_default().to_string_lossy()) {
                continue;
            }
            eprintln!(
                "cleaning up stale mount {} ({src}) of a dead test process",
                dir.display()
            );
            let _ = run(Command::new("umount").arg(dir));
            if src.starts_with("/dev/loop") {
                let _ = run(Command::new("losetup").arg("-d").arg(src));
            }
            let _ = std::fs::remove_dir(dir);
        }
        for d in [mnt_root, target_dir().join("ext4-test-tmp")] {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let stem = name.split('.').next().unwrap_or("");
                if owner_dead(stem) {
                    let _ = std::fs::remove_dir(e.path());
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    });
}

/// `mke2fs -V` first line, for cache keys.
pub fn mke2fs_version() -> String {
    let out = run(Command::new("mke2fs").arg("-V"));
    let s =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    s.lines().next().unwrap_or("").to_string()
}

/// Run a command that must succeed (re-exported for tests).
pub fn must(c: &mut Command) -> String {
    run_ok(c)
}
