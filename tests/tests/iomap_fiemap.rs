//! The engine's iomap answers (`Volume::iomap_begin`, `Volume::mappings`,
//! `Volume::iomap_config`) against the kernel's own ext4 reading the same
//! image:
//!
//! - every regular file of the feature-matrix images and of kernel-written
//!   images (deep extent trees, unwritten and punched ranges, extents past
//!   EOF, data past 4 GiB; 1 KiB and 4 KiB blocks): the whole-file walk
//!   equals `FS_IOC_FIEMAP` on a `mount -o loop,ro` after both sides merge
//!   physically contiguous neighbours of one type; the bytes at every mapped
//!   address of the image are the bytes the kernel reads; holes and
//!   unwritten ranges read as zeros; every answer passes `kernel_check`;
//! - `iomap_begin` at random positions agrees with the walk, writes are
//!   refused, inline files answer `Inline`;
//! - `iomap_config` against dumpe2fs and the kernel's limits (EFBIG from
//!   `ftruncate` just past `maxbytes`, timestamp clamping and granularity);
//! - sparse kernel-written block-mapped (`^extent`) files, 1 KiB and 4 KiB
//!   blocks: the walk equals FIEMAP, and a hole under a zero pointer at any
//!   level is one answer, so walks to EOF and to maxbytes take
//!   O(data runs + levels) answers;
//! - the e2fsprogs corpus: no panic, no hang, every answer passes the rules;
//! - a tiny mapping-cache budget: answers still equal the kernel's, memory
//!   stays within the budget.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions as FsOpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ext4_engine::iomap::{kernel_check, op};
use ext4_engine::mapping_cache::{MapType, Mapping, DEV_NULL};
use ext4_engine::FileDevice;
use ext4_engine::{Error, FileType, InodeNo};
use ext4_engine::{OpenOptions, Volume};
use ext4_tests::image::{build_image, matrix_spec};
use ext4_tests::kwimage::{
    clip, engine_segs, kernel_fiemap, kernel_segs, kw_image, merge, random_bytes, segs_differ,
    write_at, KwPlan, KW_1K, KW_4K,
};
use ext4_tests::oracle::{
    debugfs_extent_count, debugfs_extent_depth, mke2fs, tempfile_path, KernelMount,
};
use ext4_tests::rng::Rng;
use ext4_tests::snapshot::engine_resolve;
use ext4_tests::util::{fnv64, page_size, require_e2fsprogs, require_kernel_ext4, run, run_ok};

/// The device cookie handed to the engine (any non-zero value).
const DEV: u32 = 7;
/// `EXT4_INLINE_DATA_FL`.
const EXT4_INLINE_DATA_FL: u32 = 0x1000_0000;
/// Walks stop after this many mappings per file.
const MAX_MAPPINGS: usize = 1_000_000;

// ------------------------------------------------------------ one volume

/// What a file's mappings are checked against.
enum Oracle {
    /// The file on a kernel mount: FIEMAP and the kernel's bytes.
    Kernel(PathBuf),
    /// The generated source file (the kernel cannot mount the image):
    /// bytes only.
    Source(PathBuf),
}

#[derive(Default, Debug)]
struct Stats {
    files: usize,
    mappings: usize,
    kernel_extents: usize,
    past_eof_extents: usize,
    mapped_bytes: u64,
    zero_bytes: u64,
    probes: usize,
    inline_files: usize,
    /// Walk answers starting before the position asked (merged in cache).
    overlapping_answers: usize,
}

struct Checker<'a> {
    vol: &'a Volume<FileDevice>,
    image: File,
    bs: u64,
    maxbytes: u64,
    errs: Vec<String>,
    stats: Stats,
    /// Random `iomap_begin` probes per non-empty file.
    probes: usize,
}

fn read_at(f: &File, off: u64, len: usize) -> Result<Vec<u8>, String> {
    let mut v = vec![0u8; len];
    f.read_exact_at(&mut v, off)
        .map_err(|e| format!("read {len} bytes at {off}: {e}"))?;
    Ok(v)
}

impl<'a> Checker<'a> {
    fn new(vol: &'a Volume<FileDevice>, img: &Path) -> Checker<'a> {
        Checker {
            vol,
            image: File::open(img).expect("open image"),
            bs: vol.sb().block_size as u64,
            maxbytes: vol.maxbytes(),
            errs: Vec::new(),
            stats: Stats::default(),
            probes: 24,
        }
    }

    fn err(&mut self, name: &str, msg: String) {
        self.errs.push(format!("{name}: {msg}"));
    }

    /// Both halves of a `begin` answer by the kernel's rules.
    fn rules(&self, r: &Mapping, w: &Mapping, pos: u64) -> Result<(), String> {
        kernel_check(r, pos, self.bs, self.maxbytes, false)
            .map_err(|e| format!("read mapping {r:?} for pos {pos}: {e}"))?;
        kernel_check(w, pos, self.bs, self.maxbytes, true)
            .map_err(|e| format!("write mapping {w:?} for pos {pos}: {e}"))?;
        if w.kind != MapType::PureOverwrite {
            return Err(format!(
                "write mapping {w:?} of a read-only volume is not a pure overwrite"
            ));
        }
        Ok(())
    }

    /// The engine's whole-file walk, checked for the rules and for tiling
    /// `0..eof` without gaps.
    fn walk(&mut self, name: &str, ino: InodeNo, eof: u64) -> Option<Vec<Mapping>> {
        let mut maps: Vec<Mapping> = Vec::new();
        let mut problems = Vec::new();
        let (bs, maxbytes) = (self.bs, self.maxbytes);
        let mut overlapping = 0;
        let r = self.vol.mappings(ino, DEV, &mut |m| {
            let pos = maps.last().map_or(0, |p| p.offset + p.length);
            overlapping += usize::from(m.offset < pos);
            if let Err(e) = kernel_check(m, pos, bs, maxbytes, false) {
                problems.push(format!("walk answer {m:?} at {pos}: {e}"));
            }
            maps.push(from_pos(m, pos));
            maps.len() < MAX_MAPPINGS
        });
        self.stats.overlapping_answers += overlapping;
        for p in problems.into_iter().take(5) {
            self.err(name, p);
        }
        if let Err(e) = r {
            self.err(name, format!("mappings(): {e}"));
            return None;
        }
        if eof > 0 && maps.first().map(|m| m.offset) != Some(0) {
            self.err(
                name,
                format!("walk does not start at 0: {:?}", maps.first()),
            );
        }
        if maps.len() < MAX_MAPPINGS && maps.last().map_or(0, |m| m.offset + m.length) < eof {
            self.err(
                name,
                format!("walk ends before EOF {eof}: {:?}", maps.last()),
            );
        }
        Some(maps)
    }

    /// `iomap_begin` from `from` up to `limit` (for what lies past EOF).
    fn walk_range(&mut self, name: &str, ino: InodeNo, from: u64, limit: u64) -> Vec<Mapping> {
        let mut out = Vec::new();
        let mut pos = from;
        while pos < limit && out.len() < MAX_MAPPINGS {
            match self.vol.iomap_begin(ino, pos, limit - pos, op::REPORT, DEV) {
                Ok((r, w)) => {
                    if let Err(e) = self.rules(&r, &w, pos) {
                        self.err(name, e);
                        break;
                    }
                    out.push(from_pos(&r, pos));
                    pos = r.offset + r.length;
                }
                Err(e) => {
                    self.err(name, format!("iomap_begin({pos}) past EOF: {e}"));
                    break;
                }
            }
        }
        out
    }

    /// Check one regular file: `ino` in the image, `oracle` outside.
    fn file(&mut self, name: &str, ino: InodeNo, oracle: &Oracle) {
        self.stats.files += 1;
        let attr = match self.vol.getattr(ino) {
            Ok(a) => a,
            Err(e) => return self.err(name, format!("getattr({ino}): {e}")),
        };
        let (path, kernel) = match oracle {
            Oracle::Kernel(p) => (p, true),
            Oracle::Source(p) => (p, false),
        };
        let f = match File::open(path) {
            Ok(f) => f,
            Err(e) => return self.err(name, format!("open {}: {e}", path.display())),
        };
        let size = f.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
        if size != attr.size {
            return self.err(name, format!("size: outside {size}, engine {}", attr.size));
        }
        let bs = self.bs;
        let eof = size.div_ceil(bs) * bs;
        let Some(maps) = self.walk(name, ino, eof) else {
            return;
        };
        self.stats.mappings += maps.len();
        let inline = attr.flags & EXT4_INLINE_DATA_FL != 0;
        if inline {
            self.stats.inline_files += 1;
            let want = if eof == 0 { 0 } else { 1 };
            if maps.len() != want
                || maps
                    .iter()
                    .any(|m| m.offset != 0 || m.kind != MapType::Inline)
            {
                self.err(name, format!("inline file walk: {maps:?}"));
            }
        }

        let mut all = maps.clone();
        if kernel {
            let kexts = match kernel_fiemap(&f) {
                Ok(k) => k,
                Err(e) => return self.err(name, e),
            };
            self.stats.kernel_extents += kexts.len();
            let ksegs = kernel_segs(&kexts, bs);
            let want = merge(&clip(&ksegs, 0, eof));
            let got = merge(&clip(&engine_segs(&maps), 0, eof));
            if let Some(d) = segs_differ(&want, &got) {
                self.err(name, format!("FIEMAP vs engine walk, 0..{eof}: {d}"));
            }
            // Past EOF (fallocate KEEP_SIZE): the engine's iomap_begin
            // answers there too; compare up to just past the kernel's last
            // extent.
            if !inline {
                let kend = ksegs.iter().map(|s| s.end()).max().unwrap_or(0);
                let limit = eof.max(kend).saturating_add(16 * bs).min(self.maxbytes);
                let past = self.walk_range(name, ino, eof, limit);
                let want = merge(&clip(&ksegs, eof, limit));
                let got = merge(&clip(&engine_segs(&past), eof, limit));
                self.stats.past_eof_extents += want.len();
                if let Some(d) = segs_differ(&want, &got) {
                    self.err(
                        name,
                        format!("FIEMAP vs engine past EOF, {eof}..{limit}: {d}"),
                    );
                }
                all.extend(past);
            }
        }
        self.bytes(name, ino, &f, size, &maps);
        self.probe(name, ino, eof, inline, &all);
    }

    /// Bytes at every mapped address equal the outside reading; holes and
    /// unwritten ranges read as zeros (sampled when large).
    fn bytes(&mut self, name: &str, ino: InodeNo, f: &File, size: u64, maps: &[Mapping]) {
        const CH: u64 = 1 << 20;
        for m in maps {
            let end = (m.offset + m.length).min(size);
            if m.offset >= end {
                continue;
            }
            match m.kind {
                MapType::Mapped => {
                    let mut off = m.offset;
                    while off < end {
                        let n = (end - off).min(CH) as usize;
                        let disk = read_at(&self.image, m.addr + (off - m.offset), n);
                        let want = read_at(f, off, n);
                        match (disk, want) {
                            (Ok(d), Ok(w)) if d == w => {}
                            (Ok(d), Ok(w)) => {
                                let i = d.iter().zip(&w).position(|(a, b)| a != b).unwrap_or(0);
                                return self.err(
                                    name,
                                    format!(
                                        "image bytes at {} (mapping {m:?}) differ from the file at offset {} ",
                                        m.addr + (off - m.offset) + i as u64,
                                        off + i as u64
                                    ),
                                );
                            }
                            (Err(e), _) | (_, Err(e)) => return self.err(name, e),
                        }
                        self.stats.mapped_bytes += n as u64;
                        off += n as u64;
                    }
                }
                // Checked below, over runs of neighbours.
                MapType::Hole | MapType::Unwritten => {}
                MapType::Inline => {
                    // The server serves inline bytes itself: its read path
                    // must give the outside bytes.
                    let mut got = vec![0u8; size as usize];
                    let want = read_at(f, 0, size as usize);
                    match (self.vol.read(ino, 0, &mut got), want) {
                        (Ok(n), Ok(w)) if n == w.len() && got == w => {}
                        (r, w) => self.err(
                            name,
                            format!(
                                "inline bytes differ (engine read {:?}, outside {:?})",
                                r.map_err(|e| e.to_string()),
                                w.map(|v| v.len())
                            ),
                        ),
                    }
                }
                k => self.err(name, format!("unexpected mapping type {k:?} in {m:?}")),
            }
        }
        // Holes and unwritten ranges, neighbours joined: read in full up to
        // a budget per file, then the first and last MiB and 8 samples of
        // each run (block-mapped files have a hole per missing indirect
        // block, sparse files gigabytes of hole).
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for m in maps
            .iter()
            .filter(|m| matches!(m.kind, MapType::Hole | MapType::Unwritten))
        {
            let (a, b) = (m.offset.min(size), (m.offset + m.length).min(size));
            match runs.last_mut() {
                Some(r) if r.1 == a => r.1 = b,
                _ if a < b => runs.push((a, b)),
                _ => {}
            }
        }
        let total: u64 = runs.iter().map(|r| r.1 - r.0).sum();
        let mut rng = Rng::new(size ^ ino.0 as u64);
        for (a, b) in runs {
            let mut spots = Vec::new();
            if total <= 16 * CH {
                let mut off = a;
                while off < b {
                    spots.push((off, (b - off).min(CH)));
                    off += CH;
                }
            } else {
                let n = (b - a).min(CH);
                spots.push((a, n));
                spots.push((b - n, n));
                for _ in 0..8 {
                    let o = a + rng.below((b - a).saturating_sub(65536).max(1));
                    spots.push((o, (b - o).min(65536)));
                }
            }
            for (off, n) in spots {
                match read_at(f, off, n as usize) {
                    Ok(v) => {
                        if let Some(i) = v.iter().position(|&x| x != 0) {
                            let at = off + i as u64;
                            let m = maps.iter().find(|m| m.covers(at));
                            return self
                                .err(name, format!("{m:?} but byte {at} reads {:#x}", v[i]));
                        }
                        self.stats.zero_bytes += n;
                    }
                    Err(e) => return self.err(name, e),
                }
            }
        }
    }

    /// Random `iomap_begin` calls: the rules, agreement with the walk
    /// (`all` tiles `0..` its end), refused writes.
    fn probe(&mut self, name: &str, ino: InodeNo, eof: u64, inline: bool, all: &[Mapping]) {
        let bs = self.bs;
        let mut rng = Rng::new(ino.0 as u64 ^ fnv64(name.as_bytes()));
        let covered = all.last().map_or(0, |m| m.offset + m.length);
        let n = if eof == 0 { 4 } else { self.probes };
        let flag_sets = [
            op::REPORT,
            0,
            op::FAULT,
            op::DIRECT,
            op::REPORT | op::NOWAIT,
            op::DIRECT | op::NOWAIT,
        ];
        // Inline files are probed inside EOF only: past it, see
        // `inline_past_eof_answers_cover_pos`.
        let n = if inline && eof == 0 { 0 } else { n };
        for i in 0..n {
            let region = if inline {
                eof
            } else {
                covered.max(eof).max(bs)
            };
            let mut pos = match rng.below(10) {
                _ if inline => rng.below(eof),
                // Somewhere up to the end of what the walks covered.
                0..=5 => rng.below(region),
                // Around a mapping boundary.
                6 | 7 if !all.is_empty() => {
                    let m = rng.pick(all);
                    (m.offset + m.length)
                        .saturating_add_signed(rng.range(-1, 1))
                        .min(region - 1)
                }
                // Past everything, up to maxbytes.
                _ => region + rng.below(self.maxbytes - region),
            };
            if i % 2 == 0 {
                pos = pos / bs * bs;
            }
            let count = 1 + rng.below(4 << 20);
            let flags = *rng.pick(&flag_sets);
            self.stats.probes += 1;
            let (r, w) = match self.vol.iomap_begin(ino, pos, count, flags, DEV) {
                Ok(x) => x,
                Err(e) => {
                    return self.err(
                        name,
                        format!("iomap_begin({pos}, {count}, {flags:#x}): {e}"),
                    )
                }
            };
            if let Err(e) = self.rules(&r, &w, pos) {
                return self.err(name, format!("iomap_begin(opflags {flags:#x}): {e}"));
            }
            if inline && pos < eof && r.kind != MapType::Inline {
                return self.err(name, format!("inline file answers {r:?} at {pos}"));
            }
            // Every walk mapping overlapping the answer must say the same.
            let hi = (r.offset + r.length).min(covered);
            for m in all
                .iter()
                .filter(|m| m.offset < hi && m.offset + m.length > r.offset)
            {
                let same_addr = !r.kind.has_addr()
                    || (r.addr as i128 - r.offset as i128) == (m.addr as i128 - m.offset as i128);
                if m.kind != r.kind || !same_addr {
                    return self.err(
                        name,
                        format!(
                            "iomap_begin({pos}, opflags {flags:#x}) = {r:?} disagrees with the walk's {m:?}"
                        ),
                    );
                }
            }
        }
        // Writes are refused on a read-only volume, wherever they aim.
        for flags in [op::WRITE, op::ZERO, op::UNSHARE, op::WRITE | op::DIRECT] {
            let pos = rng.below(eof.max(bs));
            match self.vol.iomap_begin(ino, pos, bs, flags, DEV) {
                Err(Error::ReadOnly) => {}
                other => {
                    return self.err(
                        name,
                        format!(
                            "iomap_begin({pos}, opflags {flags:#x}) = {other:?}, want ReadOnly"
                        ),
                    )
                }
            }
        }
        // Past maxbytes there is nothing to map.
        if let Ok(x) = self
            .vol
            .iomap_begin(ino, self.maxbytes, bs, op::REPORT, DEV)
        {
            self.err(name, format!("iomap_begin(maxbytes) answered {x:?}"));
        }
    }

    fn finish(self, title: &str) {
        eprintln!("{title}: {:?}", self.stats);
        if !self.errs.is_empty() {
            let shown: Vec<&str> = self.errs.iter().take(30).map(String::as_str).collect();
            panic!(
                "{title}: {} problems:\n  {}",
                self.errs.len(),
                shown.join("\n  ")
            );
        }
    }
}

/// The part of an answer from `pos` on: what the kernel uses of it. (An
/// answer may start before `pos` when the cache merged it with what an
/// earlier answer covered.)
fn from_pos(m: &Mapping, pos: u64) -> Mapping {
    if m.offset < pos && m.covers(pos) {
        m.tail_from(pos)
    } else {
        *m
    }
}

/// Every regular file under `root` (hard links once): (relative path,
/// host inode number).
fn regular_files(root: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(md) = fs::symlink_metadata(&p) else {
                continue;
            };
            if md.is_dir() {
                stack.push(p);
            } else if md.is_file() && seen.insert(md.ino()) {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((format!("/{rel}"), md.ino()));
            }
        }
    }
    out.sort();
    out
}

/// Check every regular file of a kernel-mountable image.
fn check_mounted(img: &Path, title: &str, probes: usize) {
    let m = KernelMount::ro(img).expect("kernel mount");
    let vol = ext4_tests::open_engine(img).expect("engine open");
    let mut c = Checker::new(&vol, img);
    c.probes = probes;
    let t = Instant::now();
    for (path, ino) in regular_files(m.path()) {
        // The kernel's inode numbers are the ext4 ones.
        let ino = InodeNo(u32::try_from(ino).expect("ext4 inode number"));
        let host = m.path().join(path.trim_start_matches('/'));
        let t1 = Instant::now();
        c.file(&path, ino, &Oracle::Kernel(host));
        if t1.elapsed() > Duration::from_millis(500) {
            eprintln!("{title}: {path} took {:.1?}", t1.elapsed());
        }
    }
    eprintln!("{title}: checked in {:.1?}", t.elapsed());
    drop(m);
    c.finish(title);
}

// ------------------------------------------------------- the feature matrix

fn matrix_image(name: &str) {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    let img = build_image(matrix_spec(name));
    if img.spec.kernel_mountable() {
        return check_mounted(&img.path, &format!("iomap on image {name}"), 24);
    }
    // The kernel cannot mount this block size: the source tree is the only
    // outside oracle (bytes, not extents).
    eprintln!(
        "\n*** NOTE: {name}: {}-byte blocks on {}-byte pages: FIEMAP comparison not possible, bytes compared with the source tree ***\n",
        img.spec.block_size,
        page_size()
    );
    let vol = ext4_tests::open_engine(&img.path).expect("engine open");
    let mut c = Checker::new(&vol, &img.path);
    for (path, _) in regular_files(&img.tree.src) {
        let ino = match engine_resolve(&vol, &path) {
            Ok(a) => a.ino,
            Err(e) => {
                c.err(&path, format!("lookup: {e}"));
                continue;
            }
        };
        let host = img.tree.src.join(path.trim_start_matches('/'));
        c.file(&path, ino, &Oracle::Source(host));
    }
    c.finish(&format!("iomap on image {name} (source tree oracle)"));
}

macro_rules! matrix {
    ($($test:ident => $name:literal),* $(,)?) => {
        mod matrix {
            $(
                #[test]
                fn $test() {
                    super::matrix_image($name)
                }
            )*
        }
    };
}

ext4_tests::with_matrix_images!(matrix);

/// Inline-data files asked about offsets at or past EOF (the kernel's
/// FIEMAP and SEEK_DATA/SEEK_HOLE may ask there; its own ext4 answers
/// ENOENT): any error is fine, but an answer must pass the kernel's rules,
/// or the kernel rejects it as corruption.
#[test]
fn inline_past_eof_answers_cover_pos() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    let img = build_image(matrix_spec("ext4-inline"));
    let m = KernelMount::ro(&img.path).expect("kernel mount");
    let vol = ext4_tests::open_engine(&img.path).expect("engine open");
    let c = Checker::new(&vol, &img.path);
    let mut bad = Vec::new();
    let mut inline = 0;
    for (path, ino) in regular_files(m.path()) {
        let ino = InodeNo(ino as u32);
        let a = vol.getattr(ino).unwrap();
        if a.flags & EXT4_INLINE_DATA_FL == 0 {
            continue;
        }
        inline += 1;
        let eof = a.size.div_ceil(c.bs) * c.bs;
        for pos in [eof, eof + 1, eof + c.bs, 1 << 20, c.maxbytes - 1] {
            if let Ok((r, w)) = vol.iomap_begin(ino, pos, c.bs, op::REPORT, DEV) {
                if let Err(e) = c.rules(&r, &w, pos) {
                    bad.push(format!("{path} (size {}): {e}", a.size));
                }
            }
        }
    }
    assert!(inline > 0, "no inline files in the image");
    assert!(
        bad.is_empty(),
        "{} of {} answers past EOF of {inline} inline files break the rules, e.g.\n  {}",
        bad.len(),
        inline * 5,
        bad[..bad.len().min(5)].join("\n  ")
    );
}

fn kernel_written(plan: &KwPlan) {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    let img = kw_image(plan);
    for i in 0..plan.frag_files {
        let p = format!("/frag/f{i}");
        let depth = debugfs_extent_depth(&img, &p).unwrap();
        let n = debugfs_extent_count(&img, &p).unwrap();
        eprintln!("{p}: extent tree depth {depth}, {n} extents");
        assert!(
            depth >= 2,
            "{p}: depth {depth} ({n} extents): not fragmented"
        );
    }
    check_mounted(
        &img,
        &format!(
            "iomap on kernel-written image, {}-byte blocks",
            plan.block_size
        ),
        48,
    );
}

#[test]
fn kernel_written_4k() {
    kernel_written(&KW_4K);
}

#[test]
fn kernel_written_1k() {
    kernel_written(&KW_1K);
}

/// The comparisons must notice a wrong answer: feed the checks engine
/// walks with one mapping altered (an unwritten extent reported mapped, a
/// hole one block short, an address one block off) and expect failures.
#[test]
fn testbed_detects_wrong_mappings() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    let img = kw_image(&KW_1K);
    let m = KernelMount::ro(&img).unwrap();
    let vol = ext4_tests::open_engine(&img).unwrap();
    let bs = vol.sb().block_size as u64;
    let segs_of = |path: &str| {
        let f = File::open(m.path().join(path)).unwrap();
        let eof = f.metadata().unwrap().len().div_ceil(bs) * bs;
        let k = merge(&clip(&kernel_segs(&kernel_fiemap(&f).unwrap(), bs), 0, eof));
        let ino = InodeNo(f.metadata().unwrap().ino() as u32);
        let mut maps = Vec::new();
        vol.mappings(ino, DEV, &mut |x| {
            maps.push(*x);
            true
        })
        .unwrap();
        (k, maps, eof)
    };
    let (k, mut maps, eof) = segs_of("falloc/unwritten-split");
    assert_eq!(
        segs_differ(&k, &merge(&clip(&engine_segs(&maps), 0, eof))),
        None
    );
    let i = maps
        .iter()
        .position(|x| x.kind == MapType::Unwritten)
        .expect("an unwritten mapping");
    maps[i].kind = MapType::Mapped;
    assert!(segs_differ(&k, &merge(&clip(&engine_segs(&maps), 0, eof))).is_some());

    let (k, mut maps, eof) = segs_of("falloc/punched");
    let i = maps
        .iter()
        .position(|x| x.kind == MapType::Hole)
        .expect("a hole");
    // A hole one block short shifts the next extent's start.
    maps[i].length -= bs;
    maps[i + 1].offset -= bs;
    maps[i + 1].length += bs;
    assert!(segs_differ(&k, &merge(&clip(&engine_segs(&maps), 0, eof))).is_some());

    let (k, mut maps, eof) = segs_of("frag/f1");
    let i = maps.len() / 2;
    maps[i].addr += bs;
    assert!(segs_differ(&k, &merge(&clip(&engine_segs(&maps), 0, eof))).is_some());

    // And the byte check notices an address off by one block.
    let mut c = Checker::new(&vol, &img);
    let host = m.path().join("frag/f1");
    c.bytes("f1", InodeNo(0), &File::open(&host).unwrap(), eof, &maps);
    assert_eq!(c.errs.len(), 1, "{:?}", c.errs);
}

// ------------------------------------------- sparse block-mapped files

/// Answers a walk may take on a block-mapped file: a hole under a zero
/// pointer is one answer however many pointer blocks it spans, so a walk
/// costs O(data runs + indirection levels), not one answer per pointer
/// block (1M answers to maxbytes on 4 KiB blocks).
fn answer_bound(runs: usize) -> usize {
    4 * (runs + 4)
}

/// A `^extent` image (ext3 layout: indirect block maps) whose sparse files
/// the kernel wrote: data at 0, 50 MiB, 3 GiB and 4.25 GiB (the last in
/// the triple-indirect subtree on 4 KiB blocks) in a 5 GiB file; data only
/// at 3 GiB; one block in a one-block file; one block at the start of
/// subtrees of every level (holes that end exactly at data). The walk of
/// each equals the kernel's FIEMAP and takes at most `answer_bound`
/// answers, and so does the walk from EOF to maxbytes that FIEMAP asks for.
fn sparse_indirect(bs: u32) {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    let img = tempfile_path(&format!("sparse-indirect-{bs}"));
    let _ = fs::remove_file(&img);
    mke2fs(&img, &["-t", "ext3", "-b", &bs.to_string()], None, "64M");
    let m = KernelMount::mount(&img, false, "").expect("mount rw");
    let root = m.path().to_path_buf();
    let mut rng = Rng::new(bs as u64);
    let b = bs as usize;
    let data = random_bytes(&mut rng, 3 * b);
    let sparse = root.join("sparse");
    write_at(&sparse, 0, &data);
    write_at(&sparse, 50 << 20, &data[..2 * b]);
    write_at(&sparse, 3 << 30, &data[..b]);
    write_at(&sparse, (4 << 30) + (256 << 20), &data[b..3 * b]);
    FsOpenOptions::new()
        .write(true)
        .open(&sparse)
        .unwrap()
        .set_len(5 << 30)
        .unwrap();
    write_at(&root.join("late"), 3 << 30, &data[..b]);
    // One block at the first logical block of subtrees of each level, so
    // every hole ends exactly where a pointer at some level turns non-zero.
    let p = bs as u64 / 4;
    let edges = [
        12,
        12 + p,
        12 + 2 * p,
        12 + p + p * p,
        12 + p + 2 * p * p,
        12 + p + 2 * p * p + p,
    ];
    for lblk in edges {
        write_at(&root.join("edges"), lblk * bs as u64, &data[..b]);
    }
    write_at(&root.join("one"), 0, &data[..b]);
    m.unmount().expect("unmount");

    let m = KernelMount::ro(&img).expect("kernel mount");
    let vol = ext4_tests::open_engine(&img).expect("engine open");
    let mut c = Checker::new(&vol, &img);
    let bsz = bs as u64;
    let mut counts = Vec::new();
    for name in ["sparse", "late", "one", "edges"] {
        let host = m.path().join(name);
        let f = File::open(&host).unwrap();
        let ino = InodeNo(u32::try_from(f.metadata().unwrap().ino()).unwrap());
        let attr = vol.getattr(ino).unwrap();
        assert_eq!(attr.flags & 0x80000, 0, "{name}: uses extents");
        // FIEMAP comparison, bytes, probes, past-EOF answers: the shared
        // checker.
        c.file(&format!("/{name}"), ino, &Oracle::Kernel(host.clone()));
        let runs = kernel_fiemap(&f).expect("FIEMAP").len();
        // Answers counted on a fresh volume: the checker's walks filled
        // the mapping cache, which merges neighbouring holes.
        let vol = ext4_tests::open_engine(&img).expect("engine open");
        let mut walk = 0;
        vol.mappings(ino, DEV, &mut |_| {
            walk += 1;
            walk <= 100_000
        })
        .unwrap();
        // From EOF to maxbytes, as `ext4-image map` and FIEMAP walk it.
        let vol = ext4_tests::open_engine(&img).expect("engine open");
        let eof = attr.size.div_ceil(bsz) * bsz;
        let (mut pos, mut past) = (eof, 0);
        while pos < c.maxbytes && past <= 100_000 {
            let (r, w) = vol
                .iomap_begin(ino, pos, c.maxbytes - pos, op::REPORT, DEV)
                .unwrap();
            if let Err(e) = c.rules(&r, &w, pos) {
                panic!("{name}: past EOF: {e}");
            }
            assert_eq!(r.kind, MapType::Hole, "{name}: data past EOF at {pos}");
            pos = r.offset + r.length;
            past += 1;
        }
        eprintln!("{bs}-byte blocks, {name}: {runs} FIEMAP extents, {walk} answers to EOF, {past} from EOF to maxbytes {}", c.maxbytes);
        counts.push((name, runs, walk, past));
    }
    drop(m);
    c.finish(&format!("sparse block-mapped files, {bs}-byte blocks"));
    for (name, runs, walk, past) in counts {
        assert!(
            walk <= answer_bound(runs) && past <= answer_bound(0),
            "{bs}-byte blocks, {name}: {walk} answers to EOF and {past} past it for {runs} extents (bound {} and {})",
            answer_bound(runs),
            answer_bound(0)
        );
    }
    let _ = fs::remove_file(&img);
}

#[test]
fn sparse_indirect_4k() {
    sparse_indirect(4096);
}

#[test]
fn sparse_indirect_1k() {
    sparse_indirect(1024);
}

// ------------------------------------------------------------ iomap_config

fn dumpe2fs_field(img: &Path, field: &str) -> String {
    let out = run_ok(Command::new("dumpe2fs").arg("-h").arg(img));
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("dumpe2fs -h: no {field:?}"))
        .trim()
        .to_string()
}

fn ftruncate(f: &File, len: u64) -> Result<(), i32> {
    // SAFETY: plain syscall on an open descriptor.
    let r = unsafe { libc::ftruncate(f.as_raw_fd(), len as libc::off_t) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

/// Set mtime, read back what the kernel kept (it clamps to the
/// superblock's range and truncates to its granularity).
fn kernel_keeps_mtime(path: &Path, sec: i64, nsec: i64) -> (i64, i64) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let ts = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        },
    ];
    // SAFETY: valid path and two timespecs.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), 0) };
    assert_eq!(r, 0, "utimensat: {}", std::io::Error::last_os_error());
    let md = fs::metadata(path).unwrap();
    (md.mtime(), md.mtime_nsec())
}

/// `iomap_config` against dumpe2fs (block size) and the kernel's ext4 on a
/// read-write mount of the same kind of filesystem: `ftruncate` to exactly
/// `maxbytes` succeeds and one byte more fails with EFBIG (the kernel's
/// per-file limit: `s_maxbytes` for extent files, `s_bitmap_maxbytes` for
/// block-mapped ones); timestamps past the range are clamped to
/// `time_min`/`time_max`; nanoseconds survive only with `time_gran` 1.
#[test]
fn iomap_config_vs_kernel() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    let cases: &[(&str, u32, &str, u32)] = &[
        ("ext4", 4096, "", 256),
        ("ext4", 1024, "", 256),
        ("ext4", 4096, "^huge_file", 256),
        ("ext4", 4096, "", 128),
        ("ext2", 4096, "", 256),
        ("ext2", 1024, "", 128),
        ("ext3", 4096, "huge_file", 256),
    ];
    let mut errs = Vec::new();
    for &(fs_type, bs, features, isize) in cases {
        let label = format!("{fs_type} -b {bs} -O '{features}' -I {isize}");
        let img = tempfile_path("iomap-config").with_extension("img");
        struct Rm(PathBuf);
        impl Drop for Rm {
            fn drop(&mut self) {
                let _ = fs::remove_file(&self.0);
            }
        }
        let _rm = Rm(img.clone());
        let (b, i) = (bs.to_string(), isize.to_string());
        let mut args = vec!["-t", fs_type, "-b", &b, "-I", &i];
        if !features.is_empty() {
            args.extend(["-O", features]);
        }
        mke2fs(&img, &args, None, "64M");
        let vol = ext4_tests::open_engine(&img).unwrap();
        let cfg = vol.iomap_config();
        let dump_bs: u32 = dumpe2fs_field(&img, "Block size").parse().unwrap();
        if cfg.block_size != dump_bs {
            errs.push(format!(
                "{label}: block size {} vs dumpe2fs {dump_bs}",
                cfg.block_size
            ));
        }
        let dump_isize: u32 = dumpe2fs_field(&img, "Inode size").parse().unwrap();
        if cfg.maxbytes != vol.maxbytes() {
            errs.push(format!(
                "{label}: config maxbytes {} vs maxbytes() {}",
                cfg.maxbytes,
                vol.maxbytes()
            ));
        }
        if !cfg.maxbytes.is_multiple_of(bs as u64) {
            errs.push(format!(
                "{label}: maxbytes {} not block-aligned",
                cfg.maxbytes
            ));
        }
        drop(vol);

        let m = KernelMount::mount(&img, false, "").expect("mount rw");
        let p = m.path().join("f");
        let f = FsOpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        let at = ftruncate(&f, cfg.maxbytes);
        let past = ftruncate(&f, cfg.maxbytes + 1);
        eprintln!(
            "{label}: maxbytes {} (ftruncate there: {at:?}, one past: {past:?}); time {}..{} gran {} (inode size {dump_isize})",
            cfg.maxbytes, cfg.time_min, cfg.time_max, cfg.time_gran
        );
        if at.is_err() || past != Err(libc::EFBIG) {
            // Find the kernel's limit for the report (binary search).
            let (mut lo, mut hi) = (0u64, u64::MAX >> 1);
            while lo + 1 < hi {
                let mid = lo + (hi - lo) / 2;
                if ftruncate(&f, mid).is_ok() {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            errs.push(format!(
                "{label}: engine maxbytes {} but the kernel's limit is {lo} (difference {})",
                cfg.maxbytes,
                cfg.maxbytes as i128 - lo as i128
            ));
        }
        let _ = ftruncate(&f, 0);
        drop(f);
        let (s, _) = kernel_keeps_mtime(&p, 1 << 40, 0);
        if s != cfg.time_max {
            errs.push(format!(
                "{label}: kernel clamps mtime to {s}, engine time_max {}",
                cfg.time_max
            ));
        }
        let (s, _) = kernel_keeps_mtime(&p, -(1 << 40), 0);
        if s != cfg.time_min {
            errs.push(format!(
                "{label}: kernel clamps mtime to {s}, engine time_min {}",
                cfg.time_min
            ));
        }
        let (_, ns) = kernel_keeps_mtime(&p, 1_000_000_000, 123_456_789);
        let gran = if ns == 123_456_789 { 1 } else { 1_000_000_000 };
        if ns != 123_456_789 && ns != 0 {
            errs.push(format!("{label}: kernel kept {ns} ns of 123456789"));
        }
        if gran != cfg.time_gran {
            errs.push(format!(
                "{label}: kernel time granularity {gran} ns, engine {}",
                cfg.time_gran
            ));
        }
        m.unmount().unwrap();
    }
    assert!(
        errs.is_empty(),
        "iomap_config vs kernel:\n  {}",
        errs.join("\n  ")
    );
}

// ------------------------------------------------------------------ corpus

const CORPUS_MAPPINGS_PER_FILE: usize = 100_000;
const CORPUS_IMAGE_SECONDS: u64 = 20;

/// Walk every regular file's mappings through the engine; only what breaks
/// the kernel's rules is returned (errors from the engine are fine).
fn corpus_walk(img: &Path) -> (Vec<String>, usize) {
    let mut bad = Vec::new();
    let mut answers = 0usize;
    let dev = match FileDevice::open(img, true) {
        Ok(d) => d,
        Err(e) => return (vec![format!("open: {e}")], 0),
    };
    let opts = OpenOptions {
        ignore_checksums: true,
        ..OpenOptions::default()
    };
    let Ok(vol) = Volume::open(dev, &opts) else {
        return (bad, 0);
    };
    let bs = vol.sb().block_size as u64;
    let maxbytes = vol.maxbytes();
    let deadline = Instant::now() + Duration::from_secs(CORPUS_IMAGE_SECONDS / 2);
    let inodes = vol.sb().inodes_count.min(200_000);
    for ino in (1..=inodes).map(InodeNo) {
        if Instant::now() > deadline {
            break;
        }
        let Ok(a) = vol.getattr(ino) else { continue };
        if a.kind != FileType::Regular {
            continue;
        }
        let mut n = 0usize;
        let mut last_end = 0u64;
        let _ = vol.mappings(ino, DEV, &mut |m| {
            if let Err(e) = kernel_check(m, last_end, bs, maxbytes, false) {
                bad.push(format!("inode {ino}: walk answer {m:?} at {last_end}: {e}"));
            }
            last_end = m.offset + m.length;
            n += 1;
            n < CORPUS_MAPPINGS_PER_FILE && Instant::now() < deadline
        });
        answers += n;
        let mut rng = Rng::new(ino.0 as u64);
        let eof = a.size.div_ceil(bs) * bs;
        for i in 0..8 {
            let pos = match i {
                0 => 0,
                1 => eof.saturating_sub(1),
                2 => eof,
                3 => maxbytes - 1,
                _ => rng.below(eof.max(bs) * 2),
            };
            if let Ok((r, w)) = vol.iomap_begin(ino, pos, 1 + rng.below(1 << 20), op::REPORT, DEV) {
                answers += 1;
                for (m, write) in [(r, false), (w, true)] {
                    if let Err(e) = kernel_check(&m, pos, bs, maxbytes, write) {
                        bad.push(format!("inode {ino}: iomap_begin({pos}) = {m:?}: {e}"));
                    }
                }
            }
        }
        if bad.len() > 20 {
            break;
        }
    }
    (bad, answers)
}

/// Every e2fsprogs test image: no panic, no hang, no answer against the
/// kernel's rules.
#[test]
fn corpus_never_breaks_the_rules() {
    let Some(dir) = ext4_tests::util::corpus_dir() else {
        return;
    };
    let rd = fs::read_dir(&dir).expect("read the corpus directory");
    let mut imgs: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".img.gz"))
        .collect();
    imgs.sort();
    let scratch = ext4_tests::oracle::Scratch::new("iomap-corpus");
    let tmp = scratch.path();
    let mut failures = Vec::new();
    let mut total = 0usize;
    let t = Instant::now();
    for gz in &imgs {
        let name = gz.file_name().unwrap().to_string_lossy().into_owned();
        let img = tmp.join(name.trim_end_matches(".gz"));
        let out = run(Command::new("gunzip").arg("-c").arg(gz));
        if !out.status.success() {
            failures.push(format!("{name}: gunzip failed"));
            continue;
        }
        fs::write(&img, &out.stdout).unwrap();
        let (tx, rx) = mpsc::channel();
        let p = img.clone();
        // A thread per image: a panic shows as a closed channel, a hang as
        // a timeout (the thread is then abandoned; the process exit ends it).
        std::thread::spawn(move || {
            let r = corpus_walk(&p);
            let _ = tx.send(r);
        });
        match rx.recv_timeout(Duration::from_secs(CORPUS_IMAGE_SECONDS)) {
            Ok((bad, n)) => {
                total += n;
                failures.extend(bad.into_iter().map(|b| format!("{name}: {b}")));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                failures.push(format!("{name}: the engine panicked"));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                failures.push(format!("{name}: no answer within {CORPUS_IMAGE_SECONDS} s"));
            }
        }
        let _ = fs::remove_file(&img);
    }
    eprintln!(
        "corpus: {} images, {total} answers checked in {:.1?}",
        imgs.len(),
        t.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} problems:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

// ----------------------------------------------------------- cache budget

/// Walk a 10,000-extent file through volumes with mapping-cache budgets far
/// below what the file needs: the answers still equal the kernel's FIEMAP
/// and memory never exceeds the budget (plus a small constant).
#[test]
fn tiny_cache_budget_10k_extents() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    let img = kw_image(&KW_4K);
    let m = KernelMount::ro(&img).unwrap();
    let host = m.path().join("frag/f0");
    let f = File::open(&host).unwrap();
    let md = f.metadata().unwrap();
    let ino = InodeNo(md.ino() as u32);
    let kexts = kernel_fiemap(&f).unwrap();
    assert!(
        kexts.len() >= 10_000,
        "frag/f0 has only {} extents",
        kexts.len()
    );
    const SLACK: usize = 256;
    for budget in [0usize, 512, 4096, 64 << 10, 16 << 20] {
        let dev = FileDevice::open(&img, true).unwrap();
        let opts = OpenOptions {
            mapping_cache_bytes: budget,
            ..OpenOptions::default()
        };
        let vol = Volume::open(dev, &opts).unwrap();
        let bs = vol.sb().block_size as u64;
        let eof = md.len().div_ceil(bs) * bs;
        let maxbytes = vol.maxbytes();
        let t = Instant::now();
        let mut peak = 0usize;
        let mut maps = Vec::new();
        let mut bad = Vec::new();
        let cache = vol.mapcache();
        vol.mappings(ino, DEV, &mut |x| {
            peak = peak.max(cache.memory_bytes());
            let pos = maps.last().map_or(0, |p: &Mapping| p.offset + p.length);
            if let Err(e) = kernel_check(x, pos, bs, maxbytes, false) {
                bad.push(format!("{x:?}: {e}"));
            }
            maps.push(*x);
            true
        })
        .unwrap();
        let walk = t.elapsed();
        // Random positions after the walk, with the cache in any state.
        let mut rng = Rng::new(budget as u64);
        for _ in 0..2000 {
            let pos = rng.below(eof);
            let (r, _) = vol.iomap_begin(ino, pos, bs, op::REPORT, DEV).unwrap();
            peak = peak.max(cache.memory_bytes());
            if let Err(e) = kernel_check(&r, pos, bs, maxbytes, false) {
                bad.push(format!("{r:?} at {pos}: {e}"));
            }
            let i = maps.partition_point(|x| x.offset + x.length <= pos);
            let w = maps[i];
            if r.kind != w.kind
                || (r.kind.has_addr()
                    && r.addr as i128 - r.offset as i128 != w.addr as i128 - w.offset as i128)
            {
                bad.push(format!(
                    "iomap_begin({pos}) = {r:?} but the walk said {w:?}"
                ));
            }
        }
        eprintln!(
            "budget {budget}: {} mappings in {walk:.1?}, peak memory {peak} bytes, {} inodes cached",
            maps.len(),
            cache.cached_inodes()
        );
        assert!(
            bad.is_empty(),
            "budget {budget}: {}",
            bad[..bad.len().min(10)].join("\n")
        );
        assert!(
            peak <= budget + SLACK,
            "budget {budget}: memory reached {peak} bytes"
        );
        let want = merge(&clip(&kernel_segs(&kexts, bs), 0, eof));
        let got = merge(&clip(&engine_segs(&maps), 0, eof));
        if let Some(d) = segs_differ(&want, &got) {
            panic!("budget {budget}: FIEMAP vs engine: {d}");
        }
        assert!(maps.iter().all(|x| x.dev == DEV || x.dev == DEV_NULL));
    }
}
