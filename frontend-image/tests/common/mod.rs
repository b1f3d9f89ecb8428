//! Helpers shared by this crate's integration tests (the rest come from
//! the ext4-tests crate).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

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
