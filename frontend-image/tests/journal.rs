//! `ext4-image` on images whose journal needs recovery (left so by the
//! kernel itself, `ext4_tests::crash`): every command reads them as
//! recovered (in memory, the image untouched), `--norecovery` as the
//! device holds them, `info` says which, `recover` writes the replay into
//! the image as `e2fsck -E journal_only` would, and `extract` copies what
//! the kernel reads after its own replay.

mod common;

use std::fs;

use std::process::Output;

use common::{cmd, scratch};
use ext4_tests::crash::{crash_image, crash_spec, kernel_replayed};
use ext4_tests::oracle::{e2fsck_check, KernelMount};
use ext4_tests::snapshot::{diff, host_snapshot, Compare, Field, WalkOptions};
use ext4_tests::util::{fnv64, require_e2fsprogs, require_kernel_ext4};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ext4-image");

fn tool(args: &[&str]) -> Output {
    cmd(BIN).args(args).output().expect("run ext4-image")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn info_json(args: &[&str]) -> Value {
    let o = tool(args);
    assert!(o.status.success(), "{args:?}: {}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn can_run() -> bool {
    require_e2fsprogs() && require_kernel_ext4()
}

/// `extract` of an image whose file data is partly in the journal
/// (data=journal) copies what the kernel reads after its replay.
#[test]
fn extract_reads_the_replayed_view() {
    if !can_run() {
        return;
    }
    let spec = crash_spec("data-journal-4k");
    let img = crash_image(spec);
    let kernel = kernel_replayed(spec);
    let dest = scratch("journal").join("extract");
    let before = fnv64(&fs::read(&img.path).unwrap());
    let o = tool(&[
        img.path.to_str().unwrap(),
        "extract",
        "/",
        dest.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "extract: {}", text(&o));
    assert!(
        text(&o).contains("replayed"),
        "no word of the replay: {}",
        text(&o)
    );
    assert_eq!(
        fnv64(&fs::read(&img.path).unwrap()),
        before,
        "the image was written"
    );
    let m = KernelMount::ro(&kernel.path).expect("kernel mount");
    let walk = WalkOptions {
        ioctls: false,
        data_map: false,
        ..WalkOptions::default()
    };
    let want = host_snapshot(m.path(), walk);
    let got = host_snapshot(&dest, walk);
    let fields = [
        Field::Kind,
        Field::Mode,
        Field::Uid,
        Field::Gid,
        Field::Size,
        Field::Mtime,
        Field::Link,
        Field::Xattrs,
        Field::Content,
    ];
    let d = diff(
        &want,
        &got,
        &Compare {
            fields: &fields,
            ignore_dir_size: true,
            ignore_paths: &["/", "/lost+found"],
        },
    );
    m.unmount().unwrap();
    assert!(d.is_empty(), "extract vs the kernel's replay: {d:#?}");
}

/// `info` says the journal needs recovery and was replayed in memory (or
/// ignored, with --norecovery); `recover` replays it into the image, which
/// `e2fsck -fn` then passes and `info` finds clean; a second `recover` has
/// nothing to do.
#[test]
fn info_and_recover() {
    if !can_run() {
        return;
    }
    let img = crash_image(crash_spec("csum-32bit-1k"));
    let work = scratch("journal");
    let copy = work.join("recover.img");
    fs::copy(&img.path, &copy).unwrap();
    let c = copy.to_str().unwrap();

    let j = &info_json(&[c, "info", "--json"])["journal"];
    assert_eq!(j["needs_recovery"], true, "{j}");
    assert_eq!(j["replay"]["in_memory"], true, "{j}");
    let transactions = j["replay"]["transactions"].as_u64().unwrap();
    assert!(transactions > 0, "{j}");
    let j = &info_json(&[c, "--norecovery", "info", "--json"])["journal"];
    assert_eq!(j["needs_recovery"], true, "{j}");
    assert!(j["replay"].is_null(), "{j}");
    let o = tool(&[c, "info"]);
    assert!(text(&o).contains("Journal state:"), "{}", text(&o));
    // The last fsynced files are in the journal only.
    let o = tool(&[c, "ls", "/last-synced"]);
    assert!(text(&o).contains("f7"), "{}", text(&o));
    let o = tool(&[c, "--norecovery", "ls", "/last-synced"]);
    assert!(!text(&o).contains("f7"), "{}", text(&o));

    assert!(!tool(&[c, "--norecovery", "recover"]).status.success());
    let o = tool(&[c, "recover", "--json"]);
    assert!(o.status.success(), "recover: {}", text(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["transactions"].as_u64(), Some(transactions), "{r}");
    assert_eq!(r["marked_for_check"], false, "{r}");
    let (code, out) = e2fsck_check(&copy);
    assert_eq!(code, 0, "e2fsck -fn after recover: {out}");
    let j = &info_json(&[c, "info", "--json"])["journal"];
    assert_eq!(j["needs_recovery"], false, "{j}");
    assert_eq!(j["start"], 0, "{j}");
    let o = tool(&[c, "recover"]);
    assert!(
        o.status.success() && text(&o).contains("needs no recovery"),
        "{}",
        text(&o)
    );
    let o = tool(&[c, "ls", "/last-synced"]);
    assert!(
        text(&o).contains("f7") && !text(&o).contains("warning"),
        "{}",
        text(&o)
    );
}

/// A journal damaged where the kernel refuses to mount: every command
/// refuses it too, naming the damage and --norecovery (which opens it);
/// `recover` replays what is intact as e2fsck does, marks the filesystem
/// for a full check and exits 1. A replay plan over its budget is refused
/// naming the option that raises it.
#[test]
fn damaged_journals_and_budgets() {
    if !require_e2fsprogs() {
        return;
    }
    let corpus = ext4_tests::util::corpus_dir()
        .map(|d| d.join("j_corrupt_journal_block.img.gz"))
        .filter(|c| c.exists());
    let work = scratch("journal");
    if let Some(corpus) = corpus {
        let img = work.join("damaged.img");
        let out = cmd("gzip").arg("-dc").arg(&corpus).output().unwrap();
        fs::write(&img, out.stdout).unwrap();
        let i = img.to_str().unwrap();
        let o = tool(&[i, "ls", "/"]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(
            text(&o).contains("fails its checksum") && text(&o).contains("--norecovery"),
            "{}",
            text(&o)
        );
        assert!(tool(&[i, "--norecovery", "ls", "/"]).status.success());
        let o = tool(&[i, "recover"]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains("e2fsck -f"), "{}", text(&o));
        assert!(tool(&[i, "ls", "/"]).status.success());
    }
    if require_kernel_ext4() {
        let img = crash_image(crash_spec("csum-64bit-4k"));
        let i = img.path.to_str().unwrap();
        let o = tool(&[i, "--replay-budget", "1k", "ls", "/"]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains("--replay-budget"), "{}", text(&o));
        assert!(tool(&[i, "--replay-budget", "1m", "ls", "/"])
            .status
            .success());
    }
}
