//! Hostile images: every e2fsprogs corpus image and every regression input
//! (crafted loops and lies, and inputs the fuzzers found) walked whole and
//! checked, within a heap bound and a time bound; and, on each crafted
//! image, that the damage stays local: the error names the broken object
//! and the other files stay readable.
//!
//! Heap bound: a counting global allocator (per thread, so tests running in
//! parallel do not see each other) measures the peak heap of open + walk +
//! check over what was allocated before the image was opened (the image
//! itself, held by the `MemDevice`). That peak must stay within the cache
//! budgets (`CACHE_BYTES` + `MAPPING_CACHE_BYTES` + `INODE_CACHE_BYTES` +
//! `NAME_INDEX_BYTES`) plus the replay budget of a journal that needs
//! recovery (`REPLAY_BUDGET`) plus `FIXED_BYTES`.

#[path = "../../fuzz/src/jmutate.rs"]
mod jmutate;
#[path = "../../fuzz/src/mutate.rs"]
#[allow(dead_code)]
mod mutate;
#[path = "../../fuzz/src/walk.rs"]
#[allow(dead_code)]
mod walk;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ext4_engine::{Error, FileBlock, InodeNo, MemDevice, Object, Volume, Whence};
use walk::{
    options, Limits, Stats, CACHE_BYTES, INODE_CACHE_BYTES, MAPPING_CACHE_BYTES, NAME_INDEX_BYTES,
    REPLAY_BUDGET,
};

// ---------------------------------------------------------------------------
// Counting allocator

struct Counting;

thread_local! {
    static CUR: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn add(n: usize) {
    let _ = CUR.try_with(|c| {
        let v = c.get() + n;
        c.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
    });
}
fn sub(n: usize) {
    // A block freed on another thread than its allocator's can take a
    // thread's count below zero: saturate.
    let _ = CUR.try_with(|c| c.set(c.get().saturating_sub(n)));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        add(l.size());
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        add(l.size());
        System.alloc_zeroed(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        sub(l.size());
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        add(new);
        sub(l.size());
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Heap this thread holds now; and resets the peak to it.
fn heap_mark() -> usize {
    let cur = CUR.with(|c| c.get());
    PEAK.with(|p| p.set(cur));
    cur
}
fn heap_peak() -> usize {
    PEAK.with(|p| p.get())
}

// ---------------------------------------------------------------------------
// Budgets

// The cache budgets and `options()` are the fuzz targets' (walk.rs).

/// Everything that is neither cache nor image: the walk's own buffers (a
/// 64 KiB read buffer, the names of one directory, the visited set), the
/// check's 1 MiB inode-table chunk, per-request vectors (one block, one
/// xattr value, one leaf's runs) and the allocator's rounding.
const FIXED_BYTES: usize = 8 << 20;
/// Wall time for one image: open, walk and check, with checksums enforced
/// and then ignored (test profile, opt-level 1).
const TIME_BOUND: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Images

fn regressions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/regressions")
}

/// An image file, gunzipped if its name ends in `.gz`.
fn load(path: &Path) -> Vec<u8> {
    if path.extension().is_some_and(|e| e == "gz") {
        let out = Command::new("gzip")
            .arg("-dc")
            .arg(path)
            .output()
            .expect("gzip must be installed to read .gz images");
        assert!(out.status.success(), "gzip -dc {}", path.display());
        out.stdout
    } else {
        std::fs::read(path).unwrap()
    }
}

fn regression(name: &str) -> Vec<u8> {
    load(&regressions_dir().join(name))
}

fn open(img: Vec<u8>) -> Volume<MemDevice> {
    Volume::open(MemDevice::from_vec(img), &options(false)).expect("image opens")
}

/// Resolve an absolute path without following symlinks.
fn path_ino(v: &Volume<MemDevice>, path: &str) -> InodeNo {
    let mut ino = InodeNo::ROOT;
    for c in path.split('/').filter(|c| !c.is_empty()) {
        ino = v
            .lookup_ino(ino, c.as_bytes())
            .unwrap_or_else(|e| panic!("{path}: {c}: {e}"));
    }
    ino
}

fn read_all(v: &Volume<MemDevice>, ino: InodeNo) -> Result<Vec<u8>, Error> {
    let size = v.getattr(ino)?.size as usize;
    let mut buf = vec![0u8; size];
    let n = v.read(ino, 0, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// What one bounded run over an image measured.
#[derive(Debug)]
struct Run {
    opened: [bool; 2],
    stats: Vec<Stats>,
    peak_over_image: usize,
    elapsed: Duration,
}

/// Open (checksums enforced, then ignored), walk and check `img` within
/// the heap and time bounds; panics (naming `name`) when a bound breaks.
fn bounded_run(name: &str, img: &[u8], lim: &Limits) -> Run {
    let start = Instant::now();
    let mut run = Run {
        opened: [false; 2],
        stats: Vec::new(),
        peak_over_image: 0,
        elapsed: Duration::ZERO,
    };
    for (i, ignore) in [false, true].into_iter().enumerate() {
        let data = img.to_vec();
        // The image is in the baseline: the MemDevice holds it, unchanged.
        let base = heap_mark();
        if let Ok(v) = Volume::open(MemDevice::from_vec(data), &options(ignore)) {
            run.opened[i] = true;
            run.stats.push(walk::walk(&v, lim));
        }
        let peak = heap_peak().saturating_sub(base);
        run.peak_over_image = run.peak_over_image.max(peak);
        assert!(
            peak <= CACHE_BYTES
                + MAPPING_CACHE_BYTES
                + INODE_CACHE_BYTES
                + NAME_INDEX_BYTES
                + REPLAY_BUDGET
                + FIXED_BYTES,
            "{name}: peak heap {peak} bytes over the image exceeds the budgets \
             ({CACHE_BYTES} + {MAPPING_CACHE_BYTES} + {INODE_CACHE_BYTES} + \
             {NAME_INDEX_BYTES} + {REPLAY_BUDGET}) + {FIXED_BYTES}"
        );
    }
    run.elapsed = start.elapsed();
    assert!(
        run.elapsed <= TIME_BOUND,
        "{name}: took {:?} (bound {TIME_BOUND:?})",
        run.elapsed
    );
    run
}

// ---------------------------------------------------------------------------
// Every corpus image and every regression input, within the bounds

#[test]
fn corpus_images_walk_within_heap_and_time_bounds() {
    let Some(dir) = ext4_tests::util::corpus_dir() else {
        return;
    };
    let rd = std::fs::read_dir(&dir).expect("read the corpus directory");
    let mut paths: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".img.gz"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty());
    let mut worst = (0usize, String::new());
    let mut slowest = (Duration::ZERO, String::new());
    for p in &paths {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let img = load(p);
        let run = bounded_run(&name, &img, &Limits::default());
        eprintln!(
            "{name}: {} KiB, opened {:?}, peak {} KiB over the image, {:?}",
            img.len() >> 10,
            run.opened,
            run.peak_over_image >> 10,
            run.elapsed
        );
        if run.peak_over_image > worst.0 {
            worst = (run.peak_over_image, name.clone());
        }
        if run.elapsed > slowest.0 {
            slowest = (run.elapsed, name);
        }
    }
    eprintln!(
        "{} images; largest peak {} KiB ({}); slowest {:?} ({})",
        paths.len(),
        worst.0 >> 10,
        worst.1,
        slowest.0,
        slowest.1
    );
}

#[test]
fn regression_inputs_walk_within_heap_and_time_bounds() {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(regressions_dir())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| !p.to_string_lossy().ends_with(".sh"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 10, "regression inputs are missing");
    for p in &paths {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let img = load(p);
        // Also with data checks: every regression input's sizes are what
        // the bounded walk can afford except the ones that lie about size.
        let run = bounded_run(&name, &img, &Limits::default());
        eprintln!(
            "{name}: opened {:?}, peak {} KiB over the image, {:?}",
            run.opened,
            run.peak_over_image >> 10,
            run.elapsed
        );
    }
}

// ---------------------------------------------------------------------------
// Loops and lies, one by one

#[test]
fn directory_cycle_is_bounded_by_the_walk_and_harmless_to_the_engine() {
    let v = open(regression("dir_cycle.img.gz"));
    let a = path_ino(&v, "/a");
    // The entry really names the ancestor.
    assert_eq!(path_ino(&v, "/a/b/c/up"), a);
    assert_eq!(
        path_ino(&v, "/a/b/c/up/b/c/up/b/c/f"),
        path_ino(&v, "/a/b/c/f")
    );
    let st = walk::walk(&v, &Limits::default());
    assert!(st.revisits >= 1, "the walk must notice the cycle: {st:?}");
    assert_eq!(read_all(&v, path_ino(&v, "/file")).unwrap(), b"x\n");
}

#[test]
fn indirect_block_pointing_at_itself_is_bounded() {
    let v = open(regression("indirect_self.img.gz"));
    let big = path_ino(&v, "/big");
    let t = Instant::now();
    let mut problems = Vec::new();
    v.fsck(&Default::default(), &mut |_| {}, &mut |e| {
        problems.push(e.clone())
    });
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "check took {:?}",
        t.elapsed()
    );
    assert!(
        problems
            .iter()
            .any(|e| matches!(e, Error::Corrupt { object: Object::Inode(i), .. } if *i == big)),
        "check must name the file whose map lies: {problems:?}"
    );
    // Reads are bounded per request whatever the map says.
    let mut buf = vec![0u8; 64 << 10];
    let _ = v.read(big, 1 << 30, &mut buf);
    let mut n = 0;
    let _ = v.mappings(big, 1, &mut |_| {
        n += 1;
        n < 1000
    });
    // SEEK_HOLE scanned the 2^30 mapped slots one by one (extract and the
    // FUSE walks hung on it): it stops, naming the file.
    let t = Instant::now();
    assert_eq!(v.seek(big, 0, Whence::Data).unwrap(), 0);
    // Direct blocks 0-4 hold data, block 5 is a hole, the self-pointing
    // indirect block maps everything from block 12 on.
    assert_eq!(v.seek(big, 0, Whence::Hole).unwrap(), 5 << 10);
    assert_eq!(v.seek(big, 5 << 10, Whence::Data).unwrap(), 12 << 10);
    let e = v.seek(big, 12 << 10, Whence::Hole).unwrap_err();
    assert!(
        matches!(e, Error::Corrupt { object: Object::Inode(i), .. } if i == big),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert_eq!(read_all(&v, path_ino(&v, "/file")).unwrap(), b"x\n");
    assert_eq!(
        read_all(&v, path_ino(&v, "/second")).unwrap(),
        vec![b'S'; 3000]
    );
}

#[test]
fn indirect_pointers_at_metadata_fail_alone() {
    let v = open(regression("indirect_meta.img.gz"));
    let big = path_ino(&v, "/big");
    let mut buf = vec![0u8; 4096];
    // Past the 12 direct blocks the pointers come from the superblock and
    // descriptor blocks: either an error naming the damage, or bytes.
    for off in [12 * 1024u64, 300 * 1024, 70_000 * 1024] {
        if let Err(e) = v.read(big, off, &mut buf) {
            assert!(e.is_corruption(), "{e}");
        }
    }
    walk::walk(&v, &Limits::default());
    assert_eq!(read_all(&v, path_ino(&v, "/file")).unwrap(), b"x\n");
}

#[test]
fn extent_tree_pointing_at_itself_fails_with_the_node_named() {
    for img in ["extent_loop.img.gz", "extent_bad.img.gz"] {
        let v = open(regression(img));
        let big = path_ino(&v, "/big");
        let e = read_all(&v, big).unwrap_err();
        match e {
            Error::Corrupt { object, what } => {
                assert!(
                    matches!(object, Object::Block(_) | Object::Inode(_)),
                    "{img}: {object:?}"
                );
                assert!(what.contains("extent"), "{img}: {what}");
            }
            other => panic!("{img}: expected Corrupt, got {other:?}"),
        }
        let msg = format!("{e}");
        assert!(msg.contains("block") || msg.contains("inode"), "{msg}");
        // Other files are unaffected.
        assert_eq!(read_all(&v, path_ino(&v, "/file")).unwrap(), b"x\n");
        assert_eq!(read_all(&v, path_ino(&v, "/a/b/c/f")).unwrap(), b"hi\n");
        walk::walk(&v, &Limits::default());
    }
    // extent_bad: /second's extent runs past the end of the filesystem.
    let v = open(regression("extent_bad.img.gz"));
    let second = path_ino(&v, "/second");
    assert_eq!(
        read_all(&v, second).unwrap_err(),
        Error::corrupt(
            Object::Inode(second),
            "extent points outside the filesystem"
        )
    );
}

#[test]
fn sizes_that_overflow_are_bounded() {
    let v = open(regression("huge_size.img.gz"));
    let file = path_ino(&v, "/file");
    assert_eq!(v.getattr(file).unwrap().size, u64::MAX);
    let mut n = 0;
    let _ = v.mappings(file, 1, &mut |_| {
        n += 1;
        n < 1000
    });
    let mut buf = [0u8; 16];
    let _ = v.read(file, u64::MAX - 8, &mut buf);
    let _ = v.seek(file, u64::MAX - 8, ext4_engine::Whence::Hole);
    let _ = v.iomap_begin(file, u64::MAX - 8, 4096, ext4_engine::iomap::op::REPORT, 1);
    // A directory claiming 4 GiB: listing and lookups end.
    let a = path_ino(&v, "/a");
    let t = Instant::now();
    assert!(v.lookup_ino(a, b"absent").is_err());
    let mut names = 0;
    v.readdir(a, 0, &mut |_| {
        names += 1;
        true
    })
    .unwrap();
    assert!(t.elapsed() < Duration::from_secs(20));
    walk::walk(&v, &Limits::default());
}

#[test]
fn orphan_list_cycle_is_never_followed() {
    let v = open(regression("orphan_cycle.img.gz"));
    let st = walk::walk(&v, &Limits::default());
    assert!(st.dirs >= 4, "{st:?}");
    assert_eq!(read_all(&v, path_ino(&v, "/file")).unwrap(), b"x\n");
}

#[test]
fn hash_tree_lies_are_bounded_and_detected_ones_fall_back_to_linear_lookups() {
    for img in ["htree_loop.img.gz", "htree_levels.img.gz"] {
        let v = open(regression(img));
        let mut names = Vec::new();
        v.readdir(InodeNo::ROOT, 0, &mut |e| {
            names.push(e.name.to_vec());
            true
        })
        .unwrap();
        assert!(names.len() >= 700, "{img}: {} names", names.len());
        let t = Instant::now();
        let mut found = 0;
        for n in names.iter().filter(|n| n.starts_with(b"n")) {
            match v.lookup_ino(InodeNo::ROOT, n) {
                Ok(_) => found += 1,
                Err(e) => assert_eq!(e, Error::NotFound, "{img}"),
            }
        }
        assert!(v.lookup_ino(InodeNo::ROOT, b"absent").is_err());
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{img}: {:?}",
            t.elapsed()
        );
        let reports = v.take_reports();
        if img == "htree_levels.img.gz" {
            // Too many levels is detected: the damage is reported naming
            // the index root, and every name is found by a linear scan.
            assert_eq!(found, 700, "{img}");
            assert!(
                reports.iter().any(|e| matches!(
                    e,
                    Error::Corrupt {
                        object: Object::DirBlock {
                            dir: InodeNo::ROOT,
                            lblk: FileBlock(0)
                        },
                        ..
                    }
                )),
                "{img}: {reports:?}"
            );
        } else {
            // Every root entry naming the same interior node is a tree
            // that looks valid on the lookup path: names under the other
            // nodes are not found (the kernel answers ENOENT too), but the
            // names under that node are, and nothing loops.
            assert!(found > 0 && found < 700, "{img}: found {found}");
        }
        let mut problems = 0;
        v.fsck(&Default::default(), &mut |_| {}, &mut |_| problems += 1);
    }
}

#[test]
fn a_garbage_directory_block_hides_only_its_own_entries() {
    let v = open(regression("dir_garbage.img.gz"));
    let b = path_ino(&v, "/a/b");
    // The block of /a/b is damaged after "." and "..".
    assert!(v.lookup_ino(b, b"c").is_err());
    let reports = v.take_reports();
    assert!(
        reports.iter().any(|e| matches!(
            e,
            Error::Corrupt {
                object: Object::DirBlock {
                    dir,
                    lblk: FileBlock(0)
                },
                ..
            } if *dir == b
        )),
        "{reports:?}"
    );
    assert_eq!(read_all(&v, path_ino(&v, "/file")).unwrap(), b"x\n");
    assert_eq!(
        read_all(&v, path_ino(&v, "/second")).unwrap(),
        vec![b'S'; 3000]
    );
}

#[test]
fn inline_file_iomap_past_eof_covers_the_position_and_fast_symlink_stops_at_nul() {
    use ext4_engine::iomap::{kernel_check, op};
    let v = open(regression("inline_nul.img.gz"));
    let small = path_ino(&v, "/small");
    assert_eq!(read_all(&v, small).unwrap(), b"inline\n");
    let bs = v.sb().block_size as u64;
    for pos in [0, 7, bs, 5 * bs + 3] {
        let (r, w) = v.iomap_begin(small, pos, bs, op::REPORT, 1).unwrap();
        kernel_check(&r, pos, bs, v.maxbytes(), false).unwrap();
        kernel_check(&w, pos, bs, v.maxbytes(), true).unwrap();
    }
    assert_eq!(v.readlink(path_ino(&v, "/link")).unwrap(), b"ab");
}

// ---------------------------------------------------------------------------
// Hostile journals

/// The journal fuzz target's seeds (small images the kernel left needing
/// recovery), each damaged in many ways by the journal mutator (headers,
/// tags past the block, revoke counts, wrapped sequences, cycles, the
/// journal superblock; checksums put right half the time): opening
/// (which replays in memory), walking and `recover` under both policies
/// stay within the heap and time bounds and never panic.
#[test]
fn hostile_journals_stay_within_bounds() {
    use ext4_engine::journal::{self, Policy};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/journal");
    let mut seeds: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    seeds.sort();
    assert!(
        seeds.len() >= 3,
        "journal seeds missing from {}",
        dir.display()
    );
    let lim = Limits {
        read_bytes: 4096,
        check: false,
        ..Limits::default()
    };
    let (mut opened, mut refused, mut total) = (0, 0, 0);
    for seed in &seeds {
        let img = load(seed);
        assert!(
            jmutate::geometry(&img).is_some(),
            "{}: no journal found",
            seed.display()
        );
        for i in 0..150u64 {
            let mut bad = img.clone();
            jmutate::mutate_journal(&mut bad, i * 7919 + 1);
            let name = format!("{} mutation {i}", seed.display());
            let run = bounded_run(&name, &bad, &lim);
            total += 1;
            if run.opened[0] {
                opened += 1;
            } else {
                refused += 1;
            }
            for policy in [Policy::Kernel, Policy::E2fsck] {
                let base = heap_mark();
                let t = Instant::now();
                let dev = MemDevice::from_vec(bad.clone());
                let r = journal::recover(&dev, None, policy, walk::REPLAY_BUDGET);
                let _ = format!("{r:?}");
                let peak = heap_peak().saturating_sub(base);
                assert!(
                    peak <= bad.len() + walk::REPLAY_BUDGET + FIXED_BYTES,
                    "{name}: recover peaked at {peak} bytes"
                );
                assert!(
                    t.elapsed() <= TIME_BOUND,
                    "{name}: recover took {:?}",
                    t.elapsed()
                );
            }
        }
    }
    eprintln!("hostile journals: {total} mutations, {opened} opened, {refused} refused");
    // The mutations must leave some logs replayable and break others, or
    // they exercise only one side.
    assert!(
        opened > total / 10 && refused > total / 10,
        "{opened} opened, {refused} refused"
    );
}
