//! The e2fsprogs corpus of damaged and unusual images: each one either
//! mounts or is refused cleanly (an exit status and a message, no panic),
//! and a walk of every mount (readdir, stat, read, readlink, xattrs) never
//! kills or hangs the server.

#![cfg(target_os = "linux")]

mod common;

use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use common::*;

const CORPUS: &str = "/work/shared/corpus/e2fsprogs";
/// Bounds on one walk, so a huge (or looping) tree cannot stall the run.
const MAX_FILES: usize = 5000;
const MAX_READ: u64 = 1 << 20;
const WALK_TIMEOUT: Duration = Duration::from_secs(60);

fn corpus_dir() -> PathBuf {
    // The corpus lives beside the repository; allow pointing elsewhere.
    std::env::var_os("EXT4_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let here = Path::new(env!("CARGO_MANIFEST_DIR"));
            let rel = here.join("../../shared/corpus/e2fsprogs");
            if rel.is_dir() {
                rel
            } else {
                PathBuf::from(CORPUS)
            }
        })
}

/// Touch everything reachable; errors are expected and ignored. Returns
/// how many files were visited.
fn rough_walk(root: &Path) -> usize {
    let mut seen = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        if seen >= MAX_FILES {
            break;
        }
        seen += 1;
        let Ok(md) = fs::symlink_metadata(&p) else {
            continue;
        };
        let ft = md.file_type();
        if ft.is_dir() {
            if let Ok(rd) = fs::read_dir(&p) {
                for e in rd.flatten() {
                    stack.push(e.path());
                }
            }
        } else if ft.is_file() {
            if let Ok(f) = fs::File::open(&p) {
                let mut sink = Vec::new();
                let _ = f.take(MAX_READ).read_to_end(&mut sink);
            }
        } else if ft.is_symlink() {
            let _ = fs::read_link(&p);
        }
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        let mut buf = vec![0u8; 65536];
        // SAFETY: buffer valid for its length.
        let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            for name in buf[..n as usize]
                .split(|&b| b == 0)
                .filter(|s| !s.is_empty())
            {
                let cn = CString::new(name).unwrap();
                let mut v = vec![0u8; 65536];
                // SAFETY: buffer valid for its length.
                unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
            }
        }
    }
    seen
}

#[derive(Debug)]
enum Outcome {
    Walked(usize),
    Refused(String),
}

fn try_image(gz: &Path, work: &Path) -> Result<Outcome, String> {
    let img = work.join(gz.file_stem().unwrap());
    let out = Command::new("gzip")
        .arg("-dc")
        .arg(gz)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err("gunzip failed".into());
    }
    fs::write(&img, &out.stdout).map_err(|e| e.to_string())?;
    let res = match FuseMount::start(&img, "norecovery") {
        Started::Refused(st, err) => {
            if err.contains("panicked") || st.code().is_none() {
                return Err(format!("refused badly ({st}): {err}"));
            }
            if err.trim().is_empty() {
                return Err(format!("refused without a message ({st})"));
            }
            Outcome::Refused(err.lines().next().unwrap_or("").to_string())
        }
        Started::Mounted(mut m) => {
            let root = m.path().to_path_buf();
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(rough_walk(&root));
            });
            let seen = match rx.recv_timeout(WALK_TIMEOUT) {
                Ok(n) => n,
                Err(_) => return Err(format!("walk hung: {}", m.stderr())),
            };
            if !m.alive() {
                return Err(format!("server died during the walk: {}", m.stderr()));
            }
            let st = m.finish();
            let err = m.stderr();
            if err.contains("panicked") {
                return Err(format!("server panicked: {err}"));
            }
            match st {
                Some(s) if s.success() => {}
                other => return Err(format!("server exit {other:?} after unmount: {err}")),
            }
            Outcome::Walked(seen)
        }
    };
    let _ = fs::remove_file(&img);
    Ok(res)
}

#[test]
fn corpus_mounts_or_refuses_and_never_dies() {
    if !can_mount() {
        return;
    }
    let dir = corpus_dir();
    let Ok(rd) = fs::read_dir(&dir) else {
        eprintln!("skipping: no corpus at {}", dir.display());
        return;
    };
    let mut images: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".img.gz"))
        .collect();
    images.sort();
    // A sample: every image by default, every Nth with EXT4_CORPUS_STRIDE=N.
    let stride: usize = std::env::var("EXT4_CORPUS_STRIDE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    let work = tempfile::Builder::new()
        .prefix("bsd-corpus-")
        .tempdir()
        .unwrap();
    let (mut walked, mut refused, mut failures) = (0, 0, Vec::new());
    for gz in images.iter().step_by(stride) {
        let name = gz.file_name().unwrap().to_string_lossy().to_string();
        match try_image(gz, work.path()) {
            Ok(Outcome::Walked(n)) => {
                walked += 1;
                eprintln!("{name}: mounted, walked {n} files");
            }
            Ok(Outcome::Refused(msg)) => {
                refused += 1;
                eprintln!("{name}: refused: {msg}");
            }
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    eprintln!("{walked} mounted and walked, {refused} refused cleanly");
    assert!(
        failures.is_empty(),
        "{} images broke the server:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(walked > 0, "no corpus image mounted at all");
}
