//! What the FUSE session needs from a filesystem. `Volume` is the real one;
//! the trait exists so the session's protocol handling can be tested with a
//! small in-memory tree, independently of the engine.

use ext4_engine::iomap::IomapConfig;
use ext4_engine::mapping_cache::Mapping;
use ext4_engine::policy::{Caller, ShownIds};
use ext4_engine::{Attr, StatFs};
use ext4_engine::{BlockDevice, Error, InodeNo, Result};
use ext4_engine::{DirEntry, Volume, Whence};

pub trait Backend: Send + Sync {
    fn getattr(&self, ino: InodeNo) -> Result<Attr>;
    fn lookup(&self, dir: InodeNo, name: &[u8]) -> Result<Attr>;
    /// As [`Volume::readdir`]: `f` returns `false` to stop, and the entry it
    /// refused is not consumed.
    fn readdir(
        &self,
        dir: InodeNo,
        cookie: u64,
        f: &mut dyn FnMut(&DirEntry<'_>) -> bool,
    ) -> Result<()>;
    fn read(&self, ino: InodeNo, offset: u64, buf: &mut [u8]) -> Result<usize>;
    fn readlink(&self, ino: InodeNo) -> Result<Vec<u8>>;
    fn getxattr(&self, ino: InodeNo, name: &[u8]) -> Result<Vec<u8>>;
    fn listxattr(&self, ino: InodeNo) -> Result<Vec<Vec<u8>>>;
    fn statfs(&self) -> StatFs;
    fn seek(&self, ino: InodeNo, offset: u64, whence: Whence) -> Result<u64>;
    /// Damage met while serving requests that still succeeded (a skipped
    /// directory block, say), to be logged.
    fn take_reports(&self) -> Vec<Error> {
        Vec::new()
    }
    /// As [`Volume::iomap_begin`]: the read and write mappings covering
    /// `pos`. A backend without iomap answers `Unsupported`.
    fn iomap_begin(
        &self,
        _ino: InodeNo,
        _pos: u64,
        _count: u64,
        _opflags: u32,
        _dev: u32,
    ) -> Result<(Mapping, Mapping)> {
        Err(Error::Unsupported { what: "iomap" })
    }
    /// Whether nothing may be written (the policy's `EROFS` answers).
    fn read_only(&self) -> bool {
        true
    }
    /// As [`Volume::access`]: may `caller` access `ino` as `mask` asks.
    fn access(&self, ino: InodeNo, caller: &Caller, mask: u32, ids: ShownIds) -> Result<()>;
    /// As [`Volume::iomap_config`]; `None` without iomap.
    fn iomap_config(&self) -> Option<IomapConfig> {
        None
    }
}

impl<D: BlockDevice> Backend for Volume<D> {
    fn getattr(&self, ino: InodeNo) -> Result<Attr> {
        Volume::getattr(self, ino)
    }
    fn lookup(&self, dir: InodeNo, name: &[u8]) -> Result<Attr> {
        Volume::lookup(self, dir, name)
    }
    fn readdir(
        &self,
        dir: InodeNo,
        cookie: u64,
        f: &mut dyn FnMut(&DirEntry<'_>) -> bool,
    ) -> Result<()> {
        Volume::readdir(self, dir, cookie, f)
    }
    fn read(&self, ino: InodeNo, offset: u64, buf: &mut [u8]) -> Result<usize> {
        Volume::read(self, ino, offset, buf)
    }
    fn readlink(&self, ino: InodeNo) -> Result<Vec<u8>> {
        Volume::readlink(self, ino)
    }
    fn getxattr(&self, ino: InodeNo, name: &[u8]) -> Result<Vec<u8>> {
        Volume::getxattr(self, ino, name)
    }
    fn listxattr(&self, ino: InodeNo) -> Result<Vec<Vec<u8>>> {
        Volume::listxattr(self, ino)
    }
    fn statfs(&self) -> StatFs {
        Volume::statfs(self)
    }
    fn seek(&self, ino: InodeNo, offset: u64, whence: Whence) -> Result<u64> {
        Volume::seek(self, ino, offset, whence)
    }
    fn take_reports(&self) -> Vec<Error> {
        Volume::take_reports(self)
    }
    fn iomap_begin(
        &self,
        ino: InodeNo,
        pos: u64,
        count: u64,
        opflags: u32,
        dev: u32,
    ) -> Result<(Mapping, Mapping)> {
        Volume::iomap_begin(self, ino, pos, count, opflags, dev)
    }
    fn iomap_config(&self) -> Option<IomapConfig> {
        Some(Volume::iomap_config(self))
    }
    fn read_only(&self) -> bool {
        Volume::read_only(self)
    }
    fn access(&self, ino: InodeNo, caller: &Caller, mask: u32, ids: ShownIds) -> Result<()> {
        Volume::access(self, ino, caller, mask, ids)
    }
}
