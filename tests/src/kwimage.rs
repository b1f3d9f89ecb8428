//! Kernel-written test images and FIEMAP comparisons shared by the iomap
//! tests (the engine's in `tests/tests/iomap_fiemap.rs`, the Linux
//! frontend's kernel model in `frontend-linux/tests/iomap_model.rs`):
//!
//! - [`kw_image`]: an image written by the kernel's ext4 (fragmented files
//!   with depth-2 extent trees, fallocate in its forms, punched holes,
//!   extents past EOF, data past 4 GiB), built once and cached;
//! - [`kernel_fiemap`] and the [`Seg`] helpers: FIEMAP and iomap answers
//!   reduced to comparable, merged segments.

use std::fs::{self, File, OpenOptions as FsOpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ext4_engine::mapping_cache::{MapType, Mapping, NULL_ADDR};

use crate::oracle::{assert_fsck_clean, mke2fs, mke2fs_version, KernelMount};
use crate::rng::Rng;
use crate::util::{cached_build, fnv64};

// ------------------------------------------------------------ FS_IOC_FIEMAP

pub const FIEMAP_FLAG_SYNC: u32 = 0x1;
pub const FIEMAP_EXTENT_LAST: u32 = 0x1;
pub const FIEMAP_EXTENT_NOT_ALIGNED: u32 = 0x100;
pub const FIEMAP_EXTENT_DATA_INLINE: u32 = 0x200;
pub const FIEMAP_EXTENT_UNWRITTEN: u32 = 0x800;
pub const FIEMAP_EXTENT_MERGED: u32 = 0x1000;
/// `_IOWR('f', 11, struct fiemap)`, the header being 32 bytes.
pub const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
pub const FIEMAP_BATCH: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct FiemapExtent {
    pub fe_logical: u64,
    pub fe_physical: u64,
    pub fe_length: u64,
    pub fe_reserved64: [u64; 2],
    pub fe_flags: u32,
    pub fe_reserved: [u32; 3],
}

#[repr(C)]
pub struct Fiemap {
    pub fm_start: u64,
    pub fm_length: u64,
    pub fm_flags: u32,
    pub fm_mapped_extents: u32,
    pub fm_extent_count: u32,
    pub fm_reserved: u32,
    pub fm_extents: [FiemapExtent; FIEMAP_BATCH],
}

/// Every extent the kernel reports for an open file, from offset 0 on.
pub fn kernel_fiemap(f: &File) -> Result<Vec<FiemapExtent>, String> {
    let mut out = Vec::new();
    let mut start = 0u64;
    // Each round returns at least one extent or ends the walk.
    for _ in 0..100_000 {
        let mut fm = Box::new(Fiemap {
            fm_start: start,
            fm_length: u64::MAX - start,
            fm_flags: FIEMAP_FLAG_SYNC,
            fm_mapped_extents: 0,
            fm_extent_count: FIEMAP_BATCH as u32,
            fm_reserved: 0,
            fm_extents: [FiemapExtent::default(); FIEMAP_BATCH],
        });
        // SAFETY: the buffer is a valid struct fiemap with room for
        // fm_extent_count extents.
        let r = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_FIEMAP as _, &mut *fm as *mut Fiemap) };
        if r != 0 {
            return Err(format!(
                "FS_IOC_FIEMAP: {}",
                std::io::Error::last_os_error()
            ));
        }
        let n = fm.fm_mapped_extents as usize;
        if n == 0 {
            return Ok(out);
        }
        let got = &fm.fm_extents[..n.min(FIEMAP_BATCH)];
        out.extend_from_slice(got);
        let last = got[got.len() - 1];
        if last.fe_flags & FIEMAP_EXTENT_LAST != 0 {
            return Ok(out);
        }
        start = last.fe_logical + last.fe_length;
    }
    Err("FIEMAP did not end".into())
}

// ------------------------------------------------------- comparable segments

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Data,
    Unwritten,
    Inline,
    /// Anything else, with the raw FIEMAP flags or engine type.
    Other(u32),
}

/// A non-hole range of a file as either side reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seg {
    pub off: u64,
    pub len: u64,
    /// Device byte address; `NULL_ADDR` for inline data.
    pub addr: u64,
    pub kind: Kind,
}

impl Seg {
    pub fn end(&self) -> u64 {
        self.off + self.len
    }
}

pub fn engine_segs(maps: &[Mapping]) -> Vec<Seg> {
    maps.iter()
        .filter(|m| m.kind != MapType::Hole)
        .map(|m| Seg {
            off: m.offset,
            len: m.length,
            addr: if m.kind.has_addr() { m.addr } else { NULL_ADDR },
            kind: match m.kind {
                MapType::Mapped => Kind::Data,
                MapType::Unwritten => Kind::Unwritten,
                MapType::Inline => Kind::Inline,
                k => Kind::Other(k as u32),
            },
        })
        .collect()
}

/// FIEMAP extents as segments. An inline extent's length is the file size;
/// it is rounded up to the block, as the engine's `Inline` answer is.
pub fn kernel_segs(exts: &[FiemapExtent], bs: u64) -> Vec<Seg> {
    exts.iter()
        .map(|e| {
            let flags = e.fe_flags & !(FIEMAP_EXTENT_LAST | FIEMAP_EXTENT_MERGED);
            if flags & FIEMAP_EXTENT_DATA_INLINE != 0 {
                return Seg {
                    off: e.fe_logical,
                    len: e.fe_length.div_ceil(bs) * bs,
                    addr: NULL_ADDR,
                    kind: if flags == FIEMAP_EXTENT_DATA_INLINE | FIEMAP_EXTENT_NOT_ALIGNED {
                        Kind::Inline
                    } else {
                        Kind::Other(e.fe_flags)
                    },
                };
            }
            Seg {
                off: e.fe_logical,
                len: e.fe_length,
                addr: e.fe_physical,
                kind: match flags {
                    0 => Kind::Data,
                    FIEMAP_EXTENT_UNWRITTEN => Kind::Unwritten,
                    _ => Kind::Other(e.fe_flags),
                },
            }
        })
        .collect()
}

/// The parts of `segs` inside `lo..hi`.
pub fn clip(segs: &[Seg], lo: u64, hi: u64) -> Vec<Seg> {
    segs.iter()
        .filter_map(|s| {
            let a = s.off.max(lo);
            let b = s.end().min(hi);
            (a < b).then(|| Seg {
                off: a,
                len: b - a,
                addr: if s.addr == NULL_ADDR {
                    NULL_ADDR
                } else {
                    s.addr + (a - s.off)
                },
                kind: s.kind,
            })
        })
        .collect()
}

/// Join neighbours that touch in the file and on the device and have one
/// type: ext4 stores at most 32,768 blocks per extent and the kernel splits
/// indirect maps at indirect-block boundaries, while the engine's cache
/// merges whatever it may; both sides are normalised the same way.
pub fn merge(segs: &[Seg]) -> Vec<Seg> {
    let mut out: Vec<Seg> = Vec::new();
    for &s in segs {
        if let Some(p) = out.last_mut() {
            if p.end() == s.off
                && p.kind == s.kind
                && matches!(s.kind, Kind::Data | Kind::Unwritten)
                && p.addr + p.len == s.addr
            {
                p.len += s.len;
                continue;
            }
        }
        out.push(s);
    }
    out
}

pub fn show_segs(segs: &[Seg], around: usize) -> String {
    let lo = around.saturating_sub(2);
    let hi = (around + 3).min(segs.len());
    let mut s = String::new();
    for (i, g) in segs.iter().enumerate().take(hi).skip(lo) {
        let addr = if g.addr == NULL_ADDR {
            "-".to_string()
        } else {
            g.addr.to_string()
        };
        s.push_str(&format!(
            "\n      [{i}] {:?} {}+{} @ {addr}",
            g.kind, g.off, g.len
        ));
    }
    if segs.is_empty() {
        s.push_str("\n      (none)");
    }
    s
}

/// `None` when equal, else where and how the lists differ.
pub fn segs_differ(kernel: &[Seg], engine: &[Seg]) -> Option<String> {
    if kernel == engine {
        return None;
    }
    let i = kernel
        .iter()
        .zip(engine)
        .position(|(a, b)| a != b)
        .unwrap_or(kernel.len().min(engine.len()));
    Some(format!(
        "{} kernel extents vs {} engine extents, first difference at #{i}\n    kernel:{}\n    engine:{}",
        kernel.len(),
        engine.len(),
        show_segs(kernel, i),
        show_segs(engine, i)
    ))
}

// ------------------------------------------------ kernel-written images

/// Bump to rebuild the cached kernel-written images.
pub const KW_VERSION: u32 = 1;

pub fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// `path` opened for writing, created if missing, never truncated.
fn open_rw(path: &Path) -> File {
    FsOpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn fallocate(path: &Path, mode: i32, off: u64, len: u64) {
    let f = open_rw(path);
    // SAFETY: plain syscall on an open descriptor.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), mode, off as libc::off_t, len as libc::off_t) };
    assert_eq!(
        r,
        0,
        "fallocate({}, {mode:#x}, {off}, {len}): {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

pub fn write_at(path: &Path, off: u64, data: &[u8]) {
    open_rw(path).write_all_at(data, off).unwrap();
}

pub fn random_bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rng.fill(&mut v);
    v
}

/// What a kernel-written image holds besides the layout.
pub struct KwPlan {
    pub block_size: u32,
    pub size: &'static str,
    /// Fragmented files: count, rounds of one 4 KiB append each.
    pub frag_files: usize,
    pub frag_rounds: usize,
}

pub const KW_4K: KwPlan = KwPlan {
    block_size: 4096,
    size: "1G",
    frag_files: 2,
    frag_rounds: 10_500,
};

pub const KW_1K: KwPlan = KwPlan {
    block_size: 1024,
    size: "1G",
    frag_files: 3,
    frag_rounds: 450,
};

/// An empty ext4 volume at `img` (`features`: an `-O` list, may be empty),
/// its inode tables and journal written out now so that no lazy init runs
/// while the kernel writes the workload.
pub fn kw_mkfs(img: &Path, block_size: u32, features: &str, size: &str) {
    let bs = block_size.to_string();
    let mut args = vec!["-t", "ext4", "-b", &bs];
    if !features.is_empty() {
        args.extend(["-O", features]);
    }
    args.extend(["-E", "lazy_itable_init=0,lazy_journal_init=0"]);
    mke2fs(img, &args, None, size);
}

/// Interleaved appends with delayed allocation off and the stream
/// preallocation threshold out of reach, so each 4 KiB append is allocated
/// at write time after the other files' and starts a new extent.
pub fn kw_fragment(img: &Path, plan: &KwPlan) {
    let m = KernelMount::mount(img, false, "nodelalloc").expect("mount rw");
    let knob = PathBuf::from("/sys/fs/ext4")
        .join(m.loop_name())
        .join("mb_stream_req");
    fs::write(&knob, "100000000").unwrap_or_else(|e| panic!("{}: {e}", knob.display()));
    let dir = m.path().join("frag");
    fs::create_dir(&dir).unwrap();
    let mut files: Vec<File> = (0..plan.frag_files)
        .map(|i| {
            FsOpenOptions::new()
                .append(true)
                .create(true)
                .open(dir.join(format!("f{i}")))
                .unwrap()
        })
        .collect();
    let mut rng = Rng::new(99);
    let mut buf = vec![0u8; 4096];
    for _ in 0..plan.frag_rounds {
        for f in &mut files {
            rng.fill(&mut buf);
            std::io::Write::write_all(f, &buf).unwrap();
        }
    }
    drop(files);
    m.unmount().expect("unmount");
}

/// fallocate in its forms, punched holes, extents past EOF, data past
/// 4 GiB.
pub fn kw_workload(img: &Path) {
    let m = KernelMount::mount(img, false, "").expect("mount rw");
    kw_populate(m.path());
    m.unmount().expect("unmount");
}

/// [`kw_workload`]'s files, written under `root` (a kernel ext4 mount):
/// `falloc/*`, `big/sparse-6g`, `big/unwritten-5g`, `small`, `empty`.
pub fn kw_populate(root: &Path) {
    let mut rng = Rng::new(5);
    let fa = root.join("falloc");
    fs::create_dir(&fa).unwrap();
    let keep = libc::FALLOC_FL_KEEP_SIZE;
    let punch = libc::FALLOC_FL_PUNCH_HOLE | keep;

    fallocate(&fa.join("unwritten"), 0, 0, 1 << 20);
    let p = fa.join("unwritten-split");
    fallocate(&p, 0, 0, 2 << 20);
    write_at(&p, 300 << 10, &random_bytes(&mut rng, 10_000));
    write_at(&p, 1_500_000, b"x");
    let p = fa.join("keep-size");
    write_at(&p, 0, &random_bytes(&mut rng, 8192));
    fallocate(&p, keep, 8192, 1 << 20);
    // Past EOF, after a gap: a hole then an unwritten extent beyond EOF.
    let p = fa.join("keep-size-gap");
    write_at(&p, 0, &random_bytes(&mut rng, 5000));
    fallocate(&p, keep, 3 << 20, 1 << 20);
    // Only unwritten blocks, all past EOF (size 0).
    fallocate(&fa.join("keep-size-empty"), keep, 0, 256 << 10);
    let p = fa.join("punched");
    write_at(&p, 0, &random_bytes(&mut rng, 3 << 20));
    fallocate(&p, punch, 100 << 10, 200 << 10);
    fallocate(&p, punch, (1 << 20) + 5, 3 * 4096);
    fallocate(&p, punch, (3 << 20) - 4096, 4096);
    // Many punches: alternating holes across a written file.
    let p = fa.join("punched-many");
    write_at(&p, 0, &random_bytes(&mut rng, 4 << 20));
    for i in 0..200u64 {
        fallocate(&p, punch, i * 20_480 + 1000, 8192);
    }
    let p = fa.join("zero-range");
    write_at(&p, 0, &random_bytes(&mut rng, 1 << 20));
    fallocate(&p, libc::FALLOC_FL_ZERO_RANGE, 200 << 10, 300 << 10);
    let p = fa.join("collapse");
    write_at(&p, 0, &random_bytes(&mut rng, 2 << 20));
    fallocate(&p, libc::FALLOC_FL_COLLAPSE_RANGE, 256 << 10, 512 << 10);
    let p = fa.join("insert");
    write_at(&p, 0, &random_bytes(&mut rng, 1 << 20));
    fallocate(&p, libc::FALLOC_FL_INSERT_RANGE, 512 << 10, 256 << 10);
    // Unwritten and written interleaved by many small writes.
    let p = fa.join("unwritten-patchwork");
    fallocate(&p, 0, 0, 4 << 20);
    for i in 0..300u64 {
        write_at(
            &p,
            i * 13_000,
            &random_bytes(&mut rng, 1 + (i as usize * 37) % 9000),
        );
    }

    let big = root.join("big");
    fs::create_dir(&big).unwrap();
    let p = big.join("sparse-6g");
    write_at(&p, 0, &random_bytes(&mut rng, 4096));
    write_at(&p, (4 << 30) - 2048, &random_bytes(&mut rng, 4096));
    write_at(&p, 5 << 30, &random_bytes(&mut rng, 65536));
    FsOpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(6 << 30)
        .unwrap();
    // Unwritten past 4 GiB, and a hole to the end.
    let p = big.join("unwritten-5g");
    fallocate(&p, 0, (5 << 30) - (1 << 20), 2 << 20);
    write_at(&p, 5 << 30, b"past five");
    FsOpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len((5 << 30) + (8 << 20))
        .unwrap();
    fs::write(root.join("small"), b"a few bytes").unwrap();
    fs::write(root.join("empty"), b"").unwrap();
}

/// A kernel-written image for `plan`, built once and cached under
/// `target/` (keyed by this file's version, mke2fs and the kernel).
pub fn kw_image(plan: &KwPlan) -> PathBuf {
    let key = fnv64(
        format!(
            "{KW_VERSION}|{}|{}|{}|{}|{}|{}",
            plan.block_size,
            plan.size,
            plan.frag_files,
            plan.frag_rounds,
            mke2fs_version(),
            kernel_release()
        )
        .as_bytes(),
    );
    let dir = cached_build(&format!("iomap-kw-{}", plan.block_size), key, |dir| {
        let tmp = dir.join("image.tmp");
        kw_mkfs(&tmp, plan.block_size, "", plan.size);
        kw_fragment(&tmp, plan);
        kw_workload(&tmp);
        assert_fsck_clean(&tmp);
        fs::rename(&tmp, dir.join("image.img")).unwrap();
    });
    dir.join("image.img")
}
