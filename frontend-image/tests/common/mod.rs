//! Helpers shared by this crate's integration tests (the rest come from
//! the ext4-tests crate).

use std::collections::BTreeMap;
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

/// GNU tar's options for listing owners, xattrs and ACLs.
#[allow(dead_code)] // used by some of the tests that share this module
pub const TAR_META: &[&str] = &["--xattrs", "--acls", "--numeric-owner"];

/// GNU tar's verbose listing, one entry per member: name -> the member's
/// line without its name, plus its ACL and xattr lines. A hard link's
/// entry is its target's (which name of a set is archived first depends
/// on the walk order); ACL qualifiers are numbers (GNU tar writes names
/// the host knows).
#[allow(dead_code)] // used by some of the tests that share this module
pub fn listing(archive: &Path) -> BTreeMap<String, String> {
    let o = cmd("tar")
        .args(TAR_META)
        .args(["-tvv", "--full-time", "-f"])
        .arg(archive)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "tar -tvv {}: {}",
        archive.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(extra) = line.strip_prefix("  ") {
            let name = current.as_ref().expect("an entry before its details");
            let extra = numeric_acl(extra);
            out.get_mut(name).unwrap().push_str(&format!("\n{extra}"));
            continue;
        }
        // mode owner size date time name
        let fields: Vec<&str> = line.splitn(6, char::is_whitespace).collect();
        let mut parts = line.split_whitespace();
        let mode = parts.next().unwrap();
        let owner = parts.next().unwrap();
        let size = parts.next().unwrap();
        let date = parts.next().unwrap();
        let time = parts.next().unwrap();
        let head_len = line.find(time).unwrap() + time.len() + 1;
        // Times without a fraction are padded to the width of those with.
        let rest = line[head_len..].trim_start();
        assert!(fields.len() == 6, "listing line {line:?}");
        if mode.starts_with('h') {
            let (name, target) = rest.split_once(" link to ").expect("link line");
            let entry = out
                .get(target)
                .unwrap_or_else(|| panic!("link {name} to {target}, not listed before"))
                .clone();
            out.insert(name.to_string(), entry);
            current = Some(name.to_string());
        } else {
            out.insert(
                rest.to_string(),
                format!("{mode} {owner} {size} {date} {time}"),
            );
            current = Some(rest.to_string());
        }
    }
    out
}

/// `a: user:bob:r--,...` with named qualifiers turned into numbers.
fn numeric_acl(line: &str) -> String {
    let Some(acl) = line.strip_prefix("a: ") else {
        return line.to_string();
    };
    let entries: Vec<String> = acl
        .split(',')
        .map(|e| {
            let parts: Vec<&str> = e.split(':').collect();
            let (kind_at, qual_at) = if parts[0] == "default" {
                (1, 2)
            } else {
                (0, 1)
            };
            let q = parts[qual_at];
            if q.is_empty() || q.bytes().all(|b| b.is_ascii_digit()) {
                return e.to_string();
            }
            let db = if parts[kind_at] == "user" {
                "passwd"
            } else {
                "group"
            };
            let o = Command::new("getent").args([db, q]).output().unwrap();
            let id = String::from_utf8_lossy(&o.stdout)
                .split(':')
                .nth(2)
                .unwrap_or_else(|| panic!("getent {db} {q}"))
                .to_string();
            let mut parts: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
            parts[qual_at] = id;
            parts.join(":")
        })
        .collect();
    format!("a: {}", entries.join(","))
}

/// `e2fsck -fn IMG` exits 0, or the test fails showing its output.
#[allow(dead_code)] // used by some of the tests that share this module
pub fn fsck_clean(img: &Path, what: &str) {
    let o = cmd("e2fsck").arg("-fn").arg(img).output().unwrap();
    assert!(
        o.status.success(),
        "{what}: e2fsck -fn {}: {}\n{}",
        img.display(),
        o.status,
        String::from_utf8_lossy(&o.stdout)
    );
}
