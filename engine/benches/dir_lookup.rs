//! `Volume::lookup_ino` in a 100,000-entry directory, warm, names in random
//! order: linear (no hash tree, as `mke2fs -d` writes directories; answered
//! through the name index), the same directory as a hash tree, and the
//! linear one without a name index (a scan per lookup, sampled). Target
//! (issue #15): linear within 2x of the hash tree.
//!
//! Images: `mke2fs -d` takes about half an hour to write a 100,000-entry
//! linear directory (it scans the directory for every name it adds), so
//! they are made in fast steps by outside tools: `mke2fs -d` with the first
//! names, `e2fsck -fyD` (hash tree), the kernel's ext4 adds the rest (the
//! hash-tree image), then `tune2fs -O ^dir_index`, `e2fsck -fyD` and
//! `tune2fs -O dir_index` rewrite it linear (the linear image). Needs root
//! for the kernel mount; cached under `target/ext4-bench-images/`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::FileDev;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ext4_engine::{InodeNo, OpenOptions, Volume};

const ENTRIES: usize = 100_000;
const FIRST: usize = 1_000;
/// Bump when the image recipe changes.
const IMAGE_VERSION: u32 = 1;

fn name(i: usize) -> String {
    // Lengths vary (12 to 34 bytes), as real names do.
    format!("entry-{i:07}-{}", &"abcdefghijklmnopqrstuv"[..i % 23])
}

fn sh(cmd: &mut Command) {
    let out = cmd.output().expect("run tool");
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// (hash-tree image, linear image), built once; `None` without root.
fn images() -> Option<(PathBuf, PathBuf)> {
    let name_v = format!("dir-lookup-{ENTRIES}-v{IMAGE_VERSION}");
    let dir = common::target_dir().join("ext4-bench-images").join(&name_v);
    let (htree, linear) = (dir.join("htree.img"), dir.join("linear.img"));
    if htree.exists() && linear.exists() {
        return Some((htree, linear));
    }
    let uid = Command::new("id").arg("-u").output().expect("id -u");
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        println!("dir_lookup bench: needs root once, to build its images with the kernel's ext4");
        return None;
    }
    let built = common::cached_image(
        &format!("{name_v}/base"),
        &["-t", "ext4", "-b", "4096", "-N", "110000"],
        "512M",
        |src| {
            std::fs::create_dir_all(src.join("big")).unwrap();
            for i in 0..FIRST {
                std::fs::write(src.join("big").join(name(i)), b"").unwrap();
            }
        },
    );
    let tmp = dir.join("image.tmp");
    std::fs::copy(&built, &tmp).unwrap();
    sh(Command::new("e2fsck").arg("-fyD").arg(&tmp));
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    sh(Command::new("mount")
        .args(["-o", "loop"])
        .arg(&tmp)
        .arg(&mnt));
    for i in FIRST..ENTRIES {
        if let Err(e) = std::fs::write(mnt.join("big").join(name(i)), b"") {
            let _ = Command::new("umount").arg(&mnt).status();
            panic!("creating {}: {e}", name(i));
        }
    }
    sh(Command::new("umount").arg(&mnt));
    std::fs::copy(&tmp, &htree).unwrap();
    sh(Command::new("tune2fs").args(["-O", "^dir_index"]).arg(&tmp));
    sh(Command::new("e2fsck").arg("-fyD").arg(&tmp));
    sh(Command::new("tune2fs").args(["-O", "dir_index"]).arg(&tmp));
    std::fs::rename(&tmp, &linear).unwrap();
    Some((htree, linear))
}

fn open(img: &Path, opts: &OpenOptions) -> (Volume<FileDev>, InodeNo) {
    let vol = common::open(img, opts);
    let big = vol.lookup_ino(InodeNo::ROOT, b"big").expect("lookup /big");
    (vol, big)
}

/// Names in a fixed random order.
fn order() -> Vec<Vec<u8>> {
    common::randoms(ENTRIES, ENTRIES as u64, 0x5eed)
        .into_iter()
        .map(|i| name(i as usize).into_bytes())
        .collect()
}

fn pass(vol: &Volume<FileDev>, dir: InodeNo, names: &[Vec<u8>]) {
    for n in names {
        black_box(vol.lookup_ino(dir, n).expect("lookup"));
    }
}

/// Median time per lookup over 5 passes (after one warm-up pass).
fn per_lookup(vol: &Volume<FileDev>, dir: InodeNo, names: &[Vec<u8>]) -> Duration {
    pass(vol, dir, names);
    let mut v: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            pass(vol, dir, names);
            t.elapsed() / names.len() as u32
        })
        .collect();
    v.sort();
    v[2]
}

fn bench(c: &mut Criterion) {
    let Some((htree, linear)) = images() else {
        return;
    };
    let names = order();
    let (hv, hd) = open(&htree, &OpenOptions::default());
    let (lv, ld) = open(&linear, &OpenOptions::default());
    let t = Instant::now();
    lv.lookup_ino(ld, &names[0]).unwrap();
    println!(
        "dir_lookup bench: linear, first lookup (builds the name index): {:.1?}",
        t.elapsed()
    );
    let h = per_lookup(&hv, hd, &names);
    let l = per_lookup(&lv, ld, &names);
    let (nv, nd) = open(
        &linear,
        &OpenOptions {
            name_index_bytes: 0,
            ..OpenOptions::default()
        },
    );
    let s = per_lookup(&nv, nd, &names[..500]);
    println!("dir_lookup bench: {ENTRIES} entries, warm, random order, per lookup:");
    println!("  hash tree           {:>9.0} ns", h.as_nanos());
    println!(
        "  linear, name index  {:>9.0} ns  ({:.2}x the hash tree; target <= 2x)",
        l.as_nanos(),
        l.as_secs_f64() / h.as_secs_f64()
    );
    println!(
        "  linear, scan        {:>9.0} ns  ({:.0}x the hash tree)",
        s.as_nanos(),
        s.as_secs_f64() / h.as_secs_f64()
    );
    let sample = &names[..10_000];
    let mut g = c.benchmark_group("dir_lookup");
    g.throughput(Throughput::Elements(sample.len() as u64));
    g.sample_size(20);
    g.bench_function("hash tree, 10k random names", |b| {
        b.iter(|| pass(&hv, hd, sample))
    });
    g.bench_function("linear + name index, 10k random names", |b| {
        b.iter(|| pass(&lv, ld, sample))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
