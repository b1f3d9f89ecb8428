//! The `Volume` API: everything a frontend asks of an ext4 filesystem, keyed
//! by inode number. One `Volume` is shared by all worker threads.

use alloc::vec::Vec;

use crate::attr::{Attr, FileType, StatFs};
use crate::device::BlockDevice;
use crate::error::{Error, Result};

/// Root directory inode.
pub const ROOT_INO: u32 = 2;

/// Settings fixed when a volume is opened.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Byte budget of the metadata block cache (fuse2fs' default: 32 MiB).
    pub cache_bytes: usize,
    /// Byte budget of the extent mapping cache.
    pub mapping_cache_bytes: usize,
    /// Treat checksum mismatches as valid (for salvaging damaged images).
    pub ignore_checksums: bool,
    /// Open read-only even if the device is writable.
    pub read_only: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            cache_bytes: 32 << 20,
            mapping_cache_bytes: 16 << 20,
            ignore_checksums: false,
            read_only: true,
        }
    }
}

/// One entry handed out by [`Volume::readdir`].
#[derive(Clone, Copy, Debug)]
pub struct DirEntry<'a> {
    pub ino: u32,
    pub name: &'a [u8],
    /// From the entry's `file_type` byte; `None` when the filesystem has no
    /// `filetype` feature (ask `getattr`).
    pub kind: Option<FileType>,
    /// The cookie that resumes the listing just after this entry.
    pub next: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whence {
    Data,
    Hole,
}

pub struct Volume<D: BlockDevice> {
    _dev: D,
}

impl<D: BlockDevice> Volume<D> {
    pub fn open(dev: D, opts: &OpenOptions) -> Result<Self> {
        let _ = opts;
        let _ = dev;
        Err(Error::Unsupported { what: "volume not yet implemented" })
    }
    pub fn getattr(&self, ino: u32) -> Result<Attr> {
        let _ = ino;
        Err(Error::Unsupported { what: "todo" })
    }
    /// Look `name` up in directory `dir`; returns the child's attributes.
    pub fn lookup(&self, dir: u32, name: &[u8]) -> Result<Attr> {
        let _ = (dir, name);
        Err(Error::Unsupported { what: "todo" })
    }
    /// List directory `dir` from `cookie` (0 = start). `f` returns `false`
    /// to stop; the entry it refused is not consumed.
    pub fn readdir(&self, dir: u32, cookie: u64, f: &mut dyn FnMut(&DirEntry<'_>) -> bool) -> Result<()> {
        let _ = (dir, cookie, f);
        Err(Error::Unsupported { what: "todo" })
    }
    /// Read file bytes at `offset`; returns the count, short only at EOF.
    pub fn read(&self, ino: u32, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let _ = (ino, offset, buf);
        Err(Error::Unsupported { what: "todo" })
    }
    pub fn readlink(&self, ino: u32) -> Result<Vec<u8>> {
        let _ = ino;
        Err(Error::Unsupported { what: "todo" })
    }
    /// Full name, e.g. `user.foo`, `security.selinux`, `system.posix_acl_access`.
    pub fn getxattr(&self, ino: u32, name: &[u8]) -> Result<Vec<u8>> {
        let _ = (ino, name);
        Err(Error::Unsupported { what: "todo" })
    }
    pub fn listxattr(&self, ino: u32) -> Result<Vec<Vec<u8>>> {
        let _ = ino;
        Err(Error::Unsupported { what: "todo" })
    }
    pub fn statfs(&self) -> StatFs {
        unimplemented!()
    }
    /// `lseek` with SEEK_DATA / SEEK_HOLE: the offset found, or
    /// `Error::NoSuchOffset` (ENXIO) past the end.
    pub fn seek(&self, ino: u32, offset: u64, whence: Whence) -> Result<u64> {
        let _ = (ino, offset, whence);
        Err(Error::Unsupported { what: "todo" })
    }
}
