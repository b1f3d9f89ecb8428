//! What the image-based benchmarks share: an image file as a read-only
//! block device (the engine's own file device needs its `std` feature,
//! which benches are not built with) and where to cache built images.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ext4_engine::{BlockDevice, IoError};

pub struct FileDev {
    pub file: File,
    pub size: u64,
}

impl BlockDevice for FileDev {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|_| IoError::EIO)
    }
    fn write_at(&self, _: u64, _: &[u8]) -> Result<(), IoError> {
        Err(IoError::EIO)
    }
    fn flush(&self) -> Result<(), IoError> {
        Ok(())
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn read_only(&self) -> bool {
        true
    }
}

/// The cargo target directory (`CARGO_TARGET_DIR`, else the workspace's).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
    }
}
