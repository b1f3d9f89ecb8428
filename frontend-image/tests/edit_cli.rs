//! The edit commands' conventions, on an image made by `mke2fs`: exit 0
//! done, 1 a path problem (one line naming the path and what to do), 2 a
//! bad command line before the image is touched; `--json` prints one
//! object with `ok`, the paths done and the error; `put` refuses to
//! overwrite without --force and merges with it; `e2fsck -fn` is clean
//! after it all, and `debugfs` reads back what the commands wrote.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{cmd, scratch};
use ext4_tests::oracle::debugfs;
use ext4_tests::util::{built_binary, require_e2fsprogs};

fn tool(img: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut c = Command::new(built_binary("ext4-image", "ext4-image"))
        .arg(img)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(stdin).unwrap();
    c.wait_with_output().unwrap()
}

fn ok(img: &Path, args: &[&str]) -> String {
    let o = tool(img, args, b"");
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The exit code and the one-line message of a failing command.
fn fails(img: &Path, args: &[&str]) -> (i32, String) {
    let o = tool(img, args, b"");
    let err = String::from_utf8_lossy(&o.stderr).trim_end().to_string();
    (o.status.code().unwrap_or(-1), err)
}

#[test]
fn exit_codes_messages_json_and_put() {
    if !require_e2fsprogs() {
        return;
    }
    let dir = scratch("edit-cli");
    let img = dir.join("disk.img");
    let o = cmd("mke2fs")
        .args(["-q", "-F", "-t", "ext4"])
        .arg(&img)
        .arg("32M")
        .output()
        .unwrap();
    assert!(o.status.success());

    ok(&img, &["mkdir", "-p", "/a/b"]);
    let (code, err) = fails(&img, &["mkdir", "/x/y"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.starts_with("ext4-image: ") && err.contains("/x") && !err.contains('\n'),
        "{err}"
    );
    let (code, err) = fails(&img, &["rm", "/a"]);
    assert_eq!(code, 1);
    assert!(err.contains("rm /a") && err.contains("rm -r"), "{err}");
    let (code, err) = fails(&img, &["chmod", "u+q", "/a"]);
    assert_eq!(code, 2, "{err}");
    // Names are looked up in the image's own /etc/passwd and /etc/group
    // (none yet), never the host's.
    let (code, err) = fails(&img, &["chown", "root", "/a"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("/etc/passwd") && err.contains("number"),
        "{err}"
    );
    ok(&img, &["mkdir", "/etc"]);
    let o = tool(
        &img,
        &["write", "/etc/passwd"],
        b"root:x:0:0::/root:/bin/sh\nweb.admin:x:1234:2345::/srv:/bin/sh\n",
    );
    assert!(o.status.success());
    let o = tool(
        &img,
        &["write", "/etc/group"],
        b"root:x:0:\nstaff:x:50:web.admin\n",
    );
    assert!(o.status.success());
    for (owner, want) in [
        ("web.admin", (1234, 0)),
        ("web.admin:", (1234, 2345)),
        (":staff", (1234, 50)),
        ("root:staff", (0, 50)),
        ("77.88", (77, 88)),
    ] {
        ok(&img, &["chown", owner, "/a"]);
        let st = ext4_tests::oracle::debugfs_stat(&img, "/a").unwrap();
        assert_eq!((st.uid, st.gid), want, "chown {owner}");
    }
    let (code, err) = fails(&img, &["chown", "nobody", "/a"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no user nobody in the image's /etc/passwd"),
        "{err}"
    );
    let (code, err) = fails(&img, &["chown", ":wheel", "/a"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no group wheel"), "{err}");
    // setfacl's names too; the kernel's getfacl reads the numbers.
    ok(&img, &["setfacl", "-m", "u:web.admin:rw,g:staff:r", "/a"]);
    if ext4_tests::util::require_kernel_ext4() {
        let m = ext4_tests::oracle::KernelMount::ro(&img).unwrap();
        let o = cmd("getfacl")
            .args(["-n", "-c"])
            .arg(m.path().join("a"))
            .output()
            .unwrap();
        let acl = String::from_utf8_lossy(&o.stdout);
        assert!(
            acl.contains("user:1234:rw-") && acl.contains("group:50:r--"),
            "{acl}"
        );
    }
    let (code, err) = fails(&img, &["setfacl", "-m", "u:nobody:r", "/a"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no user nobody"), "{err}");

    // --json: one object per run, on success and on failure.
    let v: serde_json::Value =
        serde_json::from_str(ok(&img, &["touch", "--json", "/a/t1", "/a/t2"]).trim()).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["command"], "touch");
    assert_eq!(v["done"].as_array().unwrap().len(), 2);
    let o = tool(&img, &["rm", "--json", "/nope"], b"");
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(v["error"].as_str().unwrap().contains("/nope"), "{v}");

    // write from standard input, read back by debugfs.
    let o = tool(&img, &["write", "--json", "/a/w"], b"hello\n");
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["result"]["bytes"], 6);
    assert_eq!(debugfs(&img, "cat /a/w").unwrap(), "hello\n");

    // put: a tree; again refused; --force merges and replaces.
    let src = dir.join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/f"), b"one").unwrap();
    let s = src.to_str().unwrap();
    ok(&img, &["put", s, "/a/b"]);
    assert_eq!(debugfs(&img, "cat /a/b/src/d/f").unwrap(), "one");
    let (code, err) = fails(&img, &["put", s, "/a/b"]);
    assert_eq!(code, 1);
    assert!(err.contains("--force"), "{err}");
    fs::write(src.join("d/f"), b"two").unwrap();
    fs::write(src.join("d/g"), b"new").unwrap();
    ok(&img, &["put", "--force", s, "/a/b"]);
    assert_eq!(debugfs(&img, "cat /a/b/src/d/f").unwrap(), "two");
    assert_eq!(debugfs(&img, "cat /a/b/src/d/g").unwrap(), "new");

    ok(&img, &["rm", "-r", "/a/b"]);
    let o = cmd("e2fsck").arg("-fn").arg(&img).output().unwrap();
    assert!(
        o.status.success(),
        "e2fsck -fn: {}",
        String::from_utf8_lossy(&o.stdout)
    );
}
