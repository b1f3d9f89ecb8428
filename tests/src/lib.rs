//! Shared helpers for the integration tests: a deterministic tree generator
//! ([`tree`]), images built from it across the feature matrix and cached
//! ([`image`]), outside oracles ([`oracle`]: debugfs, e2fsck, kernel
//! mounts), and comparable snapshots of a tree as the host or the engine
//! sees it ([`snapshot`]), and our FUSE servers mounted beside the
//! kernel's ext4 ([`fuse`]), and one operation run as any caller against
//! any mount ([`caller`]).

pub mod caller;
pub mod checks;
pub mod crash;
pub mod crash_writes;
pub mod crashdev;
pub mod damage;
pub mod fuse;
pub mod image;
pub mod jbuild;
pub mod kwimage;
pub mod oracle;
pub mod rng;
pub mod snapshot;
pub mod tree;
pub mod util;
pub mod writes;

use std::path::Path;

use ext4_engine::FileDevice;
use ext4_engine::{OpenOptions, Volume};

/// Open an image read-only through the engine.
pub fn open_engine(img: &Path) -> Result<Volume<FileDevice>, String> {
    let dev = FileDevice::open(img, true).map_err(|e| format!("opening {}: {e}", img.display()))?;
    Volume::open(dev, &OpenOptions::default())
        .map_err(|e| format!("Volume::open({}): {e}", img.display()))
}
