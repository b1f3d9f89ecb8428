//! What the benchmarks share: an image file as a read-only block device
//! (the engine's own file device needs its `std` feature, which benches
//! are not built with), images built once with `mke2fs -d` and cached
//! under the target directory, and reproducible pseudo-random numbers.
//! Each bench uses only some of it.
#![allow(dead_code)]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ext4_engine::iomap::op;
use ext4_engine::{BlockDevice, IoError, OpenOptions, Volume};

pub struct FileDev {
    pub file: File,
    pub size: u64,
    pub read_only: bool,
}

impl BlockDevice for FileDev {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|_| IoError::EIO)
    }
    // Writes reach the file only when it was opened for writing (the
    // write benchmarks); a read-only open fails them.
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        self.file
            .write_all_at(buf, offset)
            .map_err(|_| IoError::EIO)
    }
    fn flush(&self) -> Result<(), IoError> {
        self.file.sync_data().map_err(|_| IoError::EIO)
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
}

/// The cargo target directory (`CARGO_TARGET_DIR`, else the workspace's).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
    }
}

/// The image `target/ext4-bench-images/<name>/image.img`, built on first
/// use: `fill` writes the source tree into the directory it is given, then
/// `mke2fs -F -q <args> -d <source> <image> <size>` makes the image. Put a
/// recipe version in `name` so a changed recipe builds a new image.
pub fn cached_image(name: &str, args: &[&str], size: &str, fill: impl FnOnce(&Path)) -> PathBuf {
    let dir = target_dir().join("ext4-bench-images").join(name);
    let img = dir.join("image.img");
    if img.exists() {
        return img;
    }
    let src = dir.join("src");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&src).expect("create bench image dir");
    fill(&src);
    // Built under another name and renamed: an interrupted build leaves
    // no image that looks finished.
    let tmp = dir.join("image.tmp");
    ext4_tests::oracle::mke2fs(&tmp, args, Some(&src), size);
    std::fs::rename(&tmp, &img).expect("rename image");
    let _ = std::fs::remove_dir_all(&src);
    img
}

/// A fresh volume (empty caches) on the image file.
pub fn open(img: &Path, opts: &OpenOptions) -> Volume<FileDev> {
    let file = File::open(img).expect("open image");
    let size = file.metadata().expect("stat image").len();
    let read_only = true;
    Volume::open(
        FileDev {
            file,
            size,
            read_only,
        },
        opts,
    )
    .expect("open volume")
}

/// `n` xorshift numbers below `below` from seed `s`: reproducible inputs
/// without pulling in a RNG crate.
pub fn randoms(n: usize, below: u64, mut s: u64) -> Vec<u64> {
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s % below
        })
        .collect()
}

/// A FIEMAP-style walk by `iomap_begin` (REPORT) from `from` up to `end`,
/// at most `max` calls; returns the number of calls made.
pub fn iomap_walk(
    vol: &Volume<FileDev>,
    ino: ext4_engine::InodeNo,
    from: u64,
    end: u64,
    max: u64,
) -> u64 {
    let (mut pos, mut n) = (from, 0);
    while pos < end && n < max {
        let (m, _) = vol
            .iomap_begin(ino, pos, end - pos, op::REPORT, 1)
            .expect("iomap_begin");
        pos = std::hint::black_box(m.offset + m.length);
        n += 1;
    }
    n
}
