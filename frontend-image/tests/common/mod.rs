//! Helpers shared by this crate's integration tests (the rest come from
//! the ext4-tests crate).

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use ext4_tests::snapshot::host_data_map;

/// `prog` with the sbin directories on PATH (e2fsprogs lives there, and
/// non-login root shells sometimes lack them) and times printed in UTC.
pub fn cmd(prog: &str) -> Command {
    let mut c = Command::new(prog);
    c.env(
        "PATH",
        format!(
            "{}:/usr/sbin:/sbin",
            std::env::var("PATH").unwrap_or_default()
        ),
    )
    .env("TZ", "UTC");
    c
}

/// This process's scratch directory, `<prefix>-<pid>` under the target's
/// test tmpdir, made once; what earlier runs with the same prefix (no
/// longer alive) left there is removed first.
pub fn scratch(prefix: &str) -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        for e in fs::read_dir(base).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.strip_prefix(prefix).and_then(|r| r.strip_prefix('-'));
            if let Some(pid) = pid.filter(|p| p.bytes().all(|b| b.is_ascii_digit())) {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        let d = base.join(format!("{prefix}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    })
}

/// Where two (sparse) images first differ, comparing every range either
/// holds data in (holes read as zeros).
#[allow(dead_code)] // used by some of the tests that share this module
pub fn first_difference(a: &Path, b: &Path) -> Option<String> {
    first_difference_but(a, b, &[])
}

/// The same, ignoring the byte ranges `skip` (start, end).
#[allow(dead_code)] // used by some of the tests that share this module
pub fn first_difference_but(a: &Path, b: &Path, skip: &[(u64, u64)]) -> Option<String> {
    let (fa, fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    let (la, lb) = (fa.metadata().unwrap().len(), fb.metadata().unwrap().len());
    if la != lb {
        return Some(format!("sizes {la} and {lb}"));
    }
    let mut ranges = host_data_map(&fa, la).unwrap();
    ranges.extend(host_data_map(&fb, lb).unwrap());
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    for (start, end) in ranges {
        let mut at = start;
        while at < end {
            let n = ((end - at) as usize).min(x.len());
            fa.read_exact_at(&mut x[..n], at).unwrap();
            fb.read_exact_at(&mut y[..n], at).unwrap();
            let skipped = |i: usize| {
                let off = at + i as u64;
                skip.iter().any(|&(s, e)| (s..e).contains(&off))
            };
            if let Some(i) = (0..n).find(|&i| x[i] != y[i] && !skipped(i)) {
                let off = at + i as u64;
                return Some(format!(
                    "first at byte {off} (1 KiB block {}, offset {}): {:#04x} vs {:#04x}",
                    off / 1024,
                    off % 1024,
                    x[i],
                    y[i]
                ));
            }
            at += n as u64;
        }
    }
    None
}
