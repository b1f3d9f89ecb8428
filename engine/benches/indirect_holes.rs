//! Hole walks of block-mapped (`^extent`, ext3 layout) files: what
//! FIEMAP (and `ext4-image map`) asks of `iomap_begin` from EOF up to
//! maxbytes for a one-block file, and the whole-file `mappings()` walk of a
//! sparse 5 GiB file, on 4 KiB and 1 KiB blocks. Prints answers and time
//! per walk (a fresh volume each time: cold mapping cache), then criterion
//! times the past-EOF walk.
//!
//! The images are built once with `mke2fs -t ext3 -d` and cached under
//! `target/ext4-bench-images/`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;

use common::{iomap_walk, FileDev};
use criterion::{criterion_group, criterion_main, Criterion};
use ext4_engine::{InodeNo, OpenOptions, Volume};

const DEV: u32 = 1;
/// Walks stop here (the old per-pointer-block answers ran to ~1M).
const MAX_ANSWERS: u64 = 4_000_000;
/// Bump when the image recipe changes.
const IMAGE_VERSION: u32 = 1;

fn image(bs: u32) -> PathBuf {
    let name = format!("indirect-holes-{bs}-v{IMAGE_VERSION}");
    let bs_arg = bs.to_string();
    common::cached_image(&name, &["-t", "ext3", "-b", &bs_arg], "32M", |src| {
        let block = vec![0x5au8; bs as usize];
        File::create(src.join("one"))
            .and_then(|f| f.write_all_at(&block, 0))
            .expect("write one");
        let f = File::create(src.join("sparse")).expect("create sparse");
        for off in [0u64, 50 << 20, 3 << 30, (4 << 30) + (256 << 20)] {
            f.write_all_at(&block, off).expect("write sparse");
        }
        f.set_len(5 << 30).expect("extend sparse");
    })
}

fn open(img: &Path) -> Volume<FileDev> {
    common::open(img, &OpenOptions::default())
}

fn ino(vol: &Volume<FileDev>, name: &str) -> (InodeNo, u64) {
    let a = vol.lookup(InodeNo::ROOT, name.as_bytes()).expect("lookup");
    (a.ino, a.size)
}

/// `iomap_begin` from `from` to maxbytes; the number of answers.
fn past_eof(vol: &Volume<FileDev>, ino: InodeNo, from: u64) -> u64 {
    iomap_walk(vol, ino, from, vol.maxbytes(), MAX_ANSWERS)
}

fn whole(vol: &Volume<FileDev>, ino: InodeNo) -> u64 {
    let mut n = 0;
    vol.mappings(ino, DEV, &mut |_| {
        n += 1;
        n < MAX_ANSWERS
    })
    .expect("mappings");
    n
}

fn timed(f: impl FnOnce() -> u64) -> (u64, Duration) {
    let t = Instant::now();
    let n = f();
    (n, t.elapsed())
}

fn bench(c: &mut Criterion) {
    for bs in [4096u32, 1024] {
        let img = image(bs);
        let vol = open(&img);
        let (one, one_size) = ino(&vol, "one");
        let (sparse, _) = ino(&vol, "sparse");
        drop(vol);
        let eof = one_size.div_ceil(bs as u64) * bs as u64;
        let (n, t) = timed(|| past_eof(&open(&img), one, eof));
        println!(
            "indirect_holes bench: {bs}-byte blocks, one-block file, EOF to maxbytes: {n} answers in {t:.2?}"
        );
        let (n, t) = timed(|| whole(&open(&img), sparse));
        println!(
            "indirect_holes bench: {bs}-byte blocks, sparse 5 GiB file, mappings(): {n} answers in {t:.2?}"
        );
    }
    let img = image(4096);
    let (one, size) = ino(&open(&img), "one");
    let mut g = c.benchmark_group("indirect_holes");
    g.sample_size(10);
    g.bench_function("4k one-block file, EOF to maxbytes, fresh volume", |b| {
        b.iter(|| past_eof(&open(&img), one, size.div_ceil(4096) * 4096))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
