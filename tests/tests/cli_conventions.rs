//! The conventions every mount program promises in its `--help` and the
//! README: `--version` prints `PROGRAM VERSION` and exits 0; a bad
//! argument or option exits 2 before anything is touched; a mount that
//! fails (no such image, not ext4) exits 1; every error is one line
//! starting with the program's name, and a usage error points to --help.

use std::path::Path;
use std::process::Command;

use ext4_tests::fuse::is_mounted;
use ext4_tests::oracle::{mke2fs, Scratch};
use ext4_tests::util::{built_binary, require_e2fsprogs};

const PROGRAMS: [(&str, &str); 3] = [
    ("ext4-fuse", "ext4-fuse"),
    ("ext4-fuse-mount", "ext4-fuse"),
    ("ext4-fuse-bsd", "ext4-fuse-bsd"),
];

/// Runs `name args…`: (exit code, stdout, stderr).
fn run(name: &str, package: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let o = Command::new(built_binary(name, package))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn exit_codes_version_and_one_line_errors() {
    if !require_e2fsprogs() {
        return;
    }
    let dir = Scratch::new("cli");
    let img = dir.path().join("disk.img");
    mke2fs(&img, &["-t", "ext4"], None, "4M");
    let junk = dir.path().join("junk.img");
    std::fs::write(&junk, vec![0u8; 1 << 20]).unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let (img, junk, m) = (
        img.to_str().unwrap(),
        junk.to_str().unwrap(),
        mnt.to_str().unwrap(),
    );
    let missing = dir.path().join("missing.img");
    let missing = missing.to_str().unwrap();
    let mut bad = Vec::new();
    for (name, package) in PROGRAMS {
        let (code, out, err) = run(name, package, &["--version"]);
        let words: Vec<&str> = out.split_whitespace().collect();
        if code != Some(0) || words.len() != 2 || words[0] != name || !err.is_empty() {
            bad.push(format!("{name} --version: {code:?} {out:?} {err:?}"));
        }
        // (args, expected exit code, what the one line must name)
        let cases: [(&[&str], i32, &str); 4] = [
            (&["--frobnicate", img, m], 2, "--help"),
            (&[img, m, "-o", "frobnicate"], 2, "--help"),
            (&[missing, m], 1, missing),
            (&[junk, m], 1, junk),
        ];
        for (args, want, names) in cases {
            let (code, _, err) = run(name, package, args);
            let one_line = err.lines().count() == 1 && err.starts_with(&format!("{name}: "));
            if code != Some(want) || !one_line || !err.contains(names) {
                bad.push(format!(
                    "{name} {args:?}: exit {code:?} (want {want}), stderr {err:?}"
                ));
            }
            if is_mounted(Path::new(m)) {
                let _ = Command::new("umount").arg("-l").arg(m).status();
                bad.push(format!("{name} {args:?}: mounted"));
            }
        }
    }
    let (code, out, _) = run("ext4-image", "ext4-image", &["--version"]);
    if code != Some(0) || !out.starts_with("ext4-image ") {
        bad.push(format!("ext4-image --version: {code:?} {out:?}"));
    }
    let (code, _, _) = run("ext4-image", "ext4-image", &["--frobnicate"]);
    if code != Some(2) {
        bad.push(format!("ext4-image --frobnicate: exit {code:?} (want 2)"));
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
