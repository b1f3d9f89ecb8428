//! What the journal costs the engine: the same work on the same `mke2fs`
//! ext4 image with and without `has_journal`, on a file-backed device
//! (an image file under the target directory, every flush an
//! `fdatasync`), in the same run:
//! - small transactions: 500 × (create a file, write 4 KiB, commit), the
//!   engine's side of `create` + `fsync`;
//! - streaming metadata: 100,000 creates in one directory, one commit.
//!
//! Not criterion: each phase runs once on a fresh image copy. The ratio
//! journal / no journal is printed beside the times.
//!   cargo bench -p ext4-engine --bench journal

mod common;

use std::fs::OpenOptions as FileOptions;
use std::path::Path;
use std::time::{Duration, Instant};

use common::FileDev;
use ext4_engine::{Cred, InodeNo, OpenOptions, Volume};

const SMALL: usize = 500;
const FILES: usize = 100_000;
const SIZE: &str = "1G";

fn name(i: usize) -> String {
    format!("file-{i:06}")
}

/// A fresh copy of `base`, opened read-write.
fn open_rw(base: &Path, copy: &Path) -> Volume<FileDev> {
    std::fs::copy(base, copy).expect("copy image");
    let file = FileOptions::new()
        .read(true)
        .write(true)
        .open(copy)
        .expect("open image copy");
    let size = file.metadata().expect("stat image").len();
    let dev = FileDev {
        file,
        size,
        read_only: false,
    };
    let opts = OpenOptions {
        read_only: false,
        ..OpenOptions::default()
    };
    Volume::open(dev, &opts).expect("open read-write")
}

/// (small transactions, streaming creates) on a fresh copy of `base`.
fn phases(base: &Path, copy: &Path) -> [Duration; 2] {
    let cred = Cred::ROOT;
    let root = InodeNo::ROOT;
    let block = vec![0x5au8; 4096];

    let vol = open_rw(base, copy);
    let t = Instant::now();
    for i in 0..SMALL {
        let ino = vol
            .create(root, format!("small-{i}").as_bytes(), 0o644, &cred)
            .expect("create")
            .ino;
        vol.write(ino, 0, &block, &cred).expect("write");
        vol.commit().expect("commit");
    }
    let small = t.elapsed();
    vol.close().expect("close");
    drop(vol);

    let vol = open_rw(base, copy);
    let t = Instant::now();
    for i in 0..FILES {
        vol.create(root, name(i).as_bytes(), 0o644, &cred)
            .expect("create");
    }
    vol.commit().expect("commit");
    let streaming = t.elapsed();
    vol.close().expect("close");
    let _ = std::fs::remove_file(copy);
    [small, streaming]
}

fn main() {
    let dir = common::target_dir().join("ext4-bench-journal");
    std::fs::create_dir_all(&dir).expect("bench dir");
    let mut rows = Vec::new();
    for (label, features) in [("journal", "has_journal"), ("no journal", "^has_journal")] {
        let base = dir.join(format!("{}.img", features.trim_start_matches('^')));
        if !base.exists() {
            ext4_tests::oracle::mke2fs(
                &base,
                &["-t", "ext4", "-O", features, "-N", "200000"],
                None,
                SIZE,
            );
        }
        rows.push((label, phases(&base, &dir.join("copy.img"))));
    }
    println!("engine on an image file ({SIZE} ext4, fdatasync per flush):");
    println!(
        "{:<12} {:>26} {:>26}",
        "",
        format!("{SMALL} x create+4K+commit"),
        format!("{FILES} creates + commit")
    );
    for (label, [small, streaming]) in &rows {
        println!(
            "{label:<12} {:>24.3} s {:>24.3} s",
            small.as_secs_f64(),
            streaming.as_secs_f64()
        );
    }
    let (j, n) = (rows[0].1, rows[1].1);
    println!(
        "{:<12} {:>25.2}x {:>25.2}x",
        "ratio",
        j[0].as_secs_f64() / n[0].as_secs_f64(),
        j[1].as_secs_f64() / n[1].as_secs_f64()
    );
}
