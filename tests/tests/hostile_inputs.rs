//! Hostile inputs end to end: every image of the e2fsprogs corpus
//! (`../shared/corpus/e2fsprogs/`) and every regression input of the engine
//! (`engine/tests/regressions/`: crafted loops and lies, inputs the fuzzers
//! found) goes through `ext4-image check`, `ext4-image extract`, and a
//! mount walk by each FUSE server (`ext4-fuse`, `ext4-fuse-bsd`). None of
//! them may
//!
//! - panic: a panic message on stderr, exit status 101, death by a signal;
//!   for a server also dying during the walk, or not exiting with success
//!   after `umount`;
//! - hang: each command and each walk has a time limit, past which the
//!   process is killed and the test fails;
//! - overrun its memory budget: peak RSS (`ru_maxrss` of the tool, `VmHWM`
//!   of the server) must stay within the cache budgets it was given plus
//!   [`FIXED_KIB`].
//!
//! Refusing an image is fine, with a message: many corpus images are
//! damaged beyond opening, and a mount refusal is one line on stderr.
//! Inputs are used as they are stored (gunzipped): a partial image (a fuzz
//! input shorter than its superblock claims) must be handled too.
//!
//! The binaries are the ones cargo builds for the frontends' own tests,
//! beside this test's executable (`cargo test --workspace` builds them; run
//! alone, `cargo build -p ext4-fuse -p ext4-fuse-bsd -p ext4-image` first).

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ext4_tests::fuse::FuseServer;
use ext4_tests::oracle::{sweep_dead_processes, tempfile_path};
use ext4_tests::snapshot::{host_snapshot, Kind, WalkOptions};
use ext4_tests::util::{built_binary as bin, corpus_dir, have_tool, require_fuse, skip};

/// Metadata cache budget given to every program (the smallest the servers
/// accept is 64 KiB; 1 MiB keeps the corpus fast).
const CACHE_KIB: u64 = 1024;
/// The extent mapping cache budget: `ext4-image` gets half the metadata
/// budget (`--cache-size`); the servers keep the engine's default, 16 MiB
/// (no mount option sets it).
const TOOL_MAPPING_KIB: u64 = CACHE_KIB / 2;
const SERVER_MAPPING_KIB: u64 = 16 << 10;
/// Everything that is not cache: the binary's and libc's pages touched
/// (3-4 MiB), thread stacks, the FUSE request and reply buffers (ext4-fuse:
/// one 1 MiB + 4 KiB request buffer per worker, 4 to 16 workers; fuser's
/// buffers in ext4-fuse-bsd), the check's per-group and per-inode tallies
/// and its 1 MiB inode-table chunk, extract's copy buffer, allocator slack.
/// Measured on every input here (test profile): at most 8.6 MiB in all for
/// ext4-image, 7.6 MiB for either server, caches included. 24 MiB leaves
/// room for other machines and builds, while a size or count taken from
/// the image unchecked (a 2^32-entry table, a buffer as large as a claimed
/// file) lands far above it.
const FIXED_KIB: u64 = 24 << 10;
/// Time limits: one `check` or `extract`, and one whole mount walk. The
/// slowest input takes 5 s for check and extract together in the test
/// profile on a busy machine, a walk under 1 s; a map scanned block by
/// block up to its claimed size took minutes (engine/tests/hostile.rs,
/// indirect_self).
const TOOL_LIMIT: Duration = Duration::from_secs(30);
const WALK_LIMIT: Duration = Duration::from_secs(30);
/// Per file, the walk reads this much from the start, this much at the
/// start of each of the first few data ranges, and the last block: enough
/// to make the server map and read every kind of file, bounded whatever
/// sizes the image claims.
const HEAD_READ: usize = 1 << 20;
const RANGE_READ: usize = 64 << 10;
const RANGES_READ: usize = 8;

// ---------------------------------------------------------------------------
// Inputs

struct Input {
    name: String,
    /// `.gz` (gunzipped on use) or raw.
    path: PathBuf,
}

fn regressions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/tests/regressions")
}

/// Every corpus image (`*.img.gz`) and every regression input (any file
/// but the scripts that craft them), sorted by name within each set.
fn inputs() -> Vec<Input> {
    let list = |dir: &Path, keep: &dyn Fn(&str) -> bool| -> Vec<Input> {
        let mut v: Vec<Input> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && keep(&p.file_name().unwrap().to_string_lossy()))
            .map(|p| Input {
                name: p.file_name().unwrap().to_string_lossy().into_owned(),
                path: p,
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    };
    let corpus = match corpus_dir() {
        Some(dir) => list(&dir, &|n| n.ends_with(".img.gz")),
        None => Vec::new(),
    };
    let regressions = list(&regressions_dir(), &|n| !n.ends_with(".sh"));
    assert!(
        regressions.len() >= 10,
        "regression inputs missing from {}",
        regressions_dir().display()
    );
    corpus.into_iter().chain(regressions).collect()
}

/// The input's bytes in a scratch file, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn image(input: &Input) -> Scratch {
        let s = Scratch(tempfile_path("hostile"));
        if input.path.extension().is_some_and(|e| e == "gz") {
            let out = Command::new("gzip")
                .arg("-dc")
                .arg(&input.path)
                .output()
                .expect("gzip must be installed");
            assert!(out.status.success(), "gzip -dc {}", input.path.display());
            std::fs::write(&s.0, out.stdout).unwrap();
        } else {
            std::fs::copy(&input.path, &s.0).unwrap();
        }
        s
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Run every input through `one`, print one line per input, and fail at
/// the end listing every input that broke a rule.
fn for_each_input(what: &str, mut one: impl FnMut(&Input, &Path) -> Result<String, String>) {
    sweep_dead_processes();
    let start = Instant::now();
    let inputs = inputs();
    let mut failures = Vec::new();
    for input in &inputs {
        let img = Scratch::image(input);
        let t = Instant::now();
        match one(input, &img.0) {
            Ok(line) => eprintln!("{what}: {}: {line} ({:.1?})", input.name, t.elapsed()),
            Err(e) => {
                eprintln!("{what}: {}: FAILED: {e}", input.name);
                failures.push(format!("{}: {e}", input.name));
            }
        }
    }
    eprintln!(
        "{what}: {} inputs in {:.1?}, {} failed",
        inputs.len(),
        start.elapsed(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{what}: {} of {} inputs broke a rule:\n{}",
        failures.len(),
        inputs.len(),
        failures.join("\n")
    );
}

fn first_line(s: &str) -> &str {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or("")
}

// ---------------------------------------------------------------------------
// ext4-image check / extract

/// GNU time, which reports the peak RSS of the command alone. (The
/// kernel's `ru_maxrss` of a child we spawn ourselves starts at this test
/// process's own high-water mark, carried over at exec from the address
/// space the child was spawned in; `time` is small and forks.)
const GNU_TIME: &str = "/usr/bin/time";

/// How a time-limited command ended.
struct Ran {
    /// Exit code; `None` when killed at the time limit.
    code: Option<i32>,
    /// "Command terminated by signal N" from time, when so.
    signal: Option<String>,
    stderr: String,
    max_rss_kib: u64,
}

/// Run `prog args` under GNU time (stdout discarded, stderr kept) for at
/// most `limit`; past it, kill the whole process group.
fn run_limited(prog: &Path, args: &[&OsStr], limit: Duration) -> Ran {
    let log = tempfile_path("hostile-stderr");
    let rss = tempfile_path("hostile-rss");
    let mut child = Command::new(GNU_TIME)
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss)
        .arg(prog)
        .args(args)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{GNU_TIME}: {e}"));
    let start = Instant::now();
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        if start.elapsed() > limit {
            // SAFETY: plain syscall; the group is the one made above.
            unsafe { libc::killpg(child.id() as libc::pid_t, libc::SIGKILL) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    let report = std::fs::read_to_string(&rss).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(&rss);
    Ran {
        code,
        signal: report
            .lines()
            .find(|l| l.contains("terminated by signal"))
            .map(str::to_string),
        stderr,
        max_rss_kib: report
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0),
    }
}

/// The verdict on one run of the tool: `Ok(exit code)` or what went wrong.
fn judge_tool(what: &str, ran: &Ran) -> Result<i32, String> {
    let budget = CACHE_KIB + TOOL_MAPPING_KIB + FIXED_KIB;
    let Some(code) = ran.code else {
        return Err(format!("{what}: hung: killed after {TOOL_LIMIT:?}"));
    };
    if let Some(sig) = &ran.signal {
        return Err(format!("{what}: {sig}: {}", ran.stderr));
    }
    if code == 101 || ran.stderr.contains("panicked") {
        return Err(format!("{what}: panicked (exit {code}): {}", ran.stderr));
    }
    if ran.max_rss_kib == 0 || ran.max_rss_kib > budget {
        return Err(format!(
            "{what}: peak RSS {} KiB, budget {budget} KiB",
            ran.max_rss_kib
        ));
    }
    Ok(code)
}

#[test]
fn ext4_image_check_and_extract() {
    if !Path::new(GNU_TIME).is_file() {
        // scripts/install-test-deps.sh installs it.
        skip(&format!(
            "no {GNU_TIME} (Debian package time) to measure peak RSS"
        ));
        return;
    }
    let tool = bin("ext4-image", "ext4-image");
    let cache = format!("{CACHE_KIB}k");
    for_each_input("ext4-image", |_, img| {
        let mut line = String::new();
        let mut peak = 0;
        for sub in ["check", "extract"] {
            let out = tempfile_path("hostile-out");
            let mut args = vec![
                OsStr::new("--cache-size"),
                OsStr::new(&cache),
                img.as_os_str(),
                OsStr::new(sub),
            ];
            if sub == "extract" {
                args.extend([OsStr::new("/"), out.as_os_str()]);
            }
            let ran = run_limited(&tool, &args, TOOL_LIMIT);
            let _ = std::fs::remove_dir_all(&out);
            let code = judge_tool(sub, &ran)?;
            peak = peak.max(ran.max_rss_kib);
            line += &format!("{sub} exit {code}, ");
            if code == 2 {
                line += &format!("({}), ", first_line(&ran.stderr));
            }
        }
        Ok(format!("{line}peak RSS {peak} KiB"))
    });
}

// ---------------------------------------------------------------------------
// Mount walks

/// Touch everything reachable under `root`: lstat/statx, xattrs, symlink
/// targets and SEEK_DATA/SEEK_HOLE maps for every path (the tests' host
/// walk), then bounded reads of every regular file. Errors are expected on
/// damaged images and only counted. Returns (paths, errors).
fn walk(root: &Path) -> (usize, usize) {
    let opts = WalkOptions {
        content: false,
        data_map: true,
        ioctls: false,
    };
    let snap = host_snapshot(root, opts);
    let mut errors = snap.errors.len();
    let mut buf = vec![0u8; HEAD_READ];
    for (path, e) in &snap.entries {
        errors += e.xattrs.is_err() as usize;
        errors += e.link.as_ref().is_some_and(|l| l.is_err()) as usize;
        errors += e.data_map.as_ref().is_some_and(|m| m.is_err()) as usize;
        if e.kind != Kind::File {
            continue;
        }
        let Ok(f) = File::open(root.join(OsStr::from_bytes(&path[1..]))) else {
            errors += 1;
            continue;
        };
        let mut at = vec![(0, HEAD_READ)];
        if let Some(Ok(map)) = &e.data_map {
            at.extend(map.iter().take(RANGES_READ).map(|r| (r.0, RANGE_READ)));
        }
        at.push((e.size.saturating_sub(4096), 4096));
        for (off, len) in at {
            errors += f.read_at(&mut buf[..len], off).is_err() as usize;
        }
    }
    (snap.entries.len(), errors)
}

/// Mount `img` with `server`, walk it within [`WALK_LIMIT`], unmount, and
/// judge: `Ok(summary)` for a clean walk or a clean refusal.
fn mount_walk(server: &Path, img: &Path) -> Result<String, String> {
    let budget = CACHE_KIB + SERVER_MAPPING_KIB + FIXED_KIB;
    // norecovery: show images whose journal needs replaying rather than
    // refusing them, so their trees are walked too.
    let opts = format!("ro,norecovery,cache_size={CACHE_KIB}k");
    let mut fuse = match FuseServer::mount(server, img, &opts) {
        Ok(s) => s,
        Err(e) => {
            // FuseServer says "exited with <status> before mounting:
            // <stderr>"; anything else (a mount that never came up) fails.
            let refusal = e
                .strip_prefix("exited with ")
                .and_then(|r| r.split_once(" before mounting: "));
            let Some((status, stderr)) = refusal else {
                return Err(format!("mount failed: {e}"));
            };
            let stderr = stderr.trim();
            if !status.starts_with("exit status: ")
                || status == "exit status: 101"
                || stderr.contains("panicked")
            {
                return Err(format!("bad refusal ({status}): {stderr}"));
            }
            let lines = stderr.lines().count();
            if lines != 1 {
                return Err(format!(
                    "refusal must be one line on stderr, got {lines}: {stderr:?}"
                ));
            }
            return Ok(format!("refused: {stderr}"));
        }
    };
    let root = fuse.path().to_path_buf();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(walk(&root));
    });
    let (paths, errors) = match rx.recv_timeout(WALK_LIMIT) {
        Ok(r) => r,
        Err(_) => {
            // Killing the server aborts the connection, which frees the
            // walking thread; the drop guard unmounts lazily.
            let log = fuse.stderr();
            if let Some(pid) = fuse.pid() {
                // SAFETY: plain syscall on our own child.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
            return Err(format!("walk hung: killed after {WALK_LIMIT:?}: {log}"));
        }
    };
    if !fuse.alive() {
        return Err(format!("server died during the walk: {}", fuse.stderr()));
    }
    let peak = fuse.peak_rss_kib().unwrap_or(0);
    let (status, log) = fuse.unmount()?;
    if !status.success() || log.contains("panicked") {
        return Err(format!("server exit {status} after umount: {log}"));
    }
    if peak > budget {
        return Err(format!(
            "server peak RSS {peak} KiB over the budget {budget} KiB"
        ));
    }
    Ok(format!(
        "walked {paths} paths ({errors} errors), peak RSS {peak} KiB"
    ))
}

fn walk_all(name: &str) {
    if !require_fuse() || !have_tool("umount") {
        return;
    }
    let server = bin(name, name);
    for_each_input(name, |_, img| mount_walk(&server, img));
}

#[test]
fn ext4_fuse_mount_walk() {
    walk_all("ext4-fuse");
}

#[test]
fn ext4_fuse_bsd_mount_walk() {
    walk_all("ext4-fuse-bsd");
}
