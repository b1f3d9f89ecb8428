//! `Volume::lookup` + `Volume::getattr`, the two requests a FUSE tree walk
//! without readdirplus sends for every entry, on a warm volume (block
//! cache holding every directory and inode-table block; the OS page cache
//! holding the image), one thread and two threads.
//!
//! The image (`mke2fs -d`, 4 KiB blocks, metadata_csum) holds 20
//! directories of 200 empty files each and is cached under
//! `target/ext4-bench-images/`. Per-call times are printed before
//! criterion's own runs.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

mod common;

use common::FileDev;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ext4_engine::{InodeNo, OpenOptions, Volume};

const DIRS: usize = 20;
const FILES: usize = 200;
/// Bump when the image recipe changes.
const IMAGE_VERSION: u32 = 1;

fn name_of(d: usize, f: usize) -> (String, String) {
    (format!("dir{d:02}"), format!("file-{d:02}-{f:04}.txt"))
}

fn image() -> PathBuf {
    let name = format!("lookup-{DIRS}x{FILES}-v{IMAGE_VERSION}");
    common::cached_image(&name, &["-t", "ext4", "-b", "4096"], "64M", |src| {
        for d in 0..DIRS {
            let (dn, _) = name_of(d, 0);
            std::fs::create_dir_all(src.join(&dn)).expect("create source dir");
            for f in 0..FILES {
                std::fs::write(src.join(&dn).join(name_of(d, f).1), b"")
                    .expect("create source file");
            }
        }
    })
}

/// (directory inode, file names) of every directory.
fn names(vol: &Volume<FileDev>) -> Vec<(InodeNo, Vec<Vec<u8>>)> {
    (0..DIRS)
        .map(|d| {
            let (dn, _) = name_of(d, 0);
            let dino = vol
                .lookup(InodeNo::ROOT, dn.as_bytes())
                .expect("lookup dir")
                .ino;
            let files = (0..FILES).map(|f| name_of(d, f).1.into_bytes()).collect();
            (dino, files)
        })
        .collect()
}

/// One pass over every file: lookup (which stats the child) then getattr,
/// as a kernel without readdirplus asks. Returns the calls made.
fn pass(vol: &Volume<FileDev>, names: &[(InodeNo, Vec<Vec<u8>>)]) -> u64 {
    let mut n = 0;
    for (dino, files) in names {
        for f in files {
            let a = vol.lookup(*dino, f).expect("lookup");
            black_box(vol.getattr(a.ino).expect("getattr"));
            n += 1;
        }
    }
    n
}

/// `getattr` alone on every file (inode numbers looked up beforehand).
fn getattrs(vol: &Volume<FileDev>, inos: &[InodeNo]) -> Duration {
    let mut v: Vec<Duration> = (0..7)
        .map(|_| {
            let t = Instant::now();
            for &i in inos {
                black_box(vol.getattr(i).expect("getattr"));
            }
            t.elapsed() / inos.len() as u32
        })
        .collect();
    v.sort();
    v[3]
}

fn per_pair(vol: &Volume<FileDev>, names: &[(InodeNo, Vec<Vec<u8>>)], threads: usize) -> Duration {
    let mut v: Vec<Duration> = (0..7)
        .map(|_| {
            let t = Instant::now();
            let n = std::thread::scope(|s| {
                let hs: Vec<_> = (0..threads).map(|_| s.spawn(|| pass(vol, names))).collect();
                hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
            });
            t.elapsed() * threads as u32 / n as u32
        })
        .collect();
    v.sort();
    v[3]
}

fn variants() -> Vec<(&'static str, OpenOptions)> {
    vec![
        ("default", OpenOptions::default()),
        // inode-cache-off
        (
            "inode cache off",
            OpenOptions {
                inode_cache_bytes: 0,
                ..OpenOptions::default()
            },
        ),
        (
            "one set (misses)",
            OpenOptions {
                inode_cache_bytes: ext4_engine::test_support::InodeCache::entry_bytes(256)
                    * ext4_engine::test_support::INODE_CACHE_WAYS,
                ..OpenOptions::default()
            },
        ),
        // inode-cache-off-end
    ]
}

fn bench(c: &mut Criterion) {
    let img = image();
    for (what, opts) in variants() {
        let vol = common::open(&img, &opts);
        let names = names(&vol);
        pass(&vol, &names);
        let inos: Vec<InodeNo> = names
            .iter()
            .flat_map(|(d, fs)| fs.iter().map(|f| vol.lookup(*d, f).expect("lookup").ino))
            .collect();
        println!(
            "inode_lookup bench: {what:<16} getattr alone: {:>6.0} ns",
            getattrs(&vol, &inos).as_nanos()
        );
        for threads in [1, 2] {
            let t = per_pair(&vol, &names, threads);
            println!(
                "inode_lookup bench: {what:<16} {threads} thread(s): {:>6.0} ns per lookup+getattr (wall time x threads / calls)",
                t.as_nanos()
            );
        }
    }
    let vol = common::open(&img, &OpenOptions::default());
    let names = names(&vol);
    let n = pass(&vol, &names);
    let mut g = c.benchmark_group("inode_lookup");
    g.throughput(Throughput::Elements(n));
    g.sample_size(20);
    g.bench_function("warm lookup+getattr, every file", |b| {
        b.iter(|| pass(&vol, &names))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
