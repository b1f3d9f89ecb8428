//! What the FUSE session needs from a filesystem. `Fs` (the volume with
//! what a mount keeps beside it, shared with `ext4-fuse-bsd`) is the real
//! one; the trait exists so the session's protocol handling can be tested
//! with a small in-memory tree, independently of the engine. The write
//! requests default to `EROFS`: a read-only backend needs none of them.

use ext4_engine::iomap::IomapConfig;
use ext4_engine::mapping_cache::Mapping;
use ext4_engine::policy::{self, Caller, ShownIds};
use ext4_engine::{Attr, FileType, SetAttr, StatFs, WriteMap};
use ext4_engine::{BlockDevice, Error, InodeNo, Result};
use ext4_engine::{DirEntry, Whence};
use ext4_fuse_common::fs::Fs;

pub trait Backend: Send + Sync {
    fn getattr(&self, ino: InodeNo) -> Result<Attr>;
    fn lookup(&self, dir: InodeNo, name: &[u8]) -> Result<Attr>;
    /// As [`ext4_engine::Volume::readdir`]: `f` returns `false` to stop, and the entry it
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
    /// As [`ext4_engine::Volume::iomap_begin`]: the read and write mappings covering
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
    /// As [`Fs::map_for_write`]: `IOMAP_BEGIN` of a write.
    fn map_for_write(
        &self,
        _caller: &Caller,
        _ino: InodeNo,
        _pos: u64,
        _count: u64,
    ) -> Result<WriteMap> {
        Err(Error::ReadOnly)
    }
    /// As [`Fs::io_end`]: `IOMAP_IOEND`; the on-disk size.
    fn io_end(
        &self,
        _caller: &Caller,
        _ino: InodeNo,
        _pos: u64,
        _len: u64,
        _new_size: Option<u64>,
    ) -> Result<u64> {
        Err(Error::ReadOnly)
    }
    /// As [`Fs::release_past_size`]: `IOMAP_END` after a short write.
    fn release_past_size(
        &self,
        _caller: &Caller,
        _ino: InodeNo,
        _pos: u64,
        _len: u64,
    ) -> Result<()> {
        Ok(())
    }
    /// As [`Fs::set_kernel_writes_data`]: iomap is in use.
    fn set_kernel_writes_data(&self) {}
    /// As [`Fs::take_freed`]: device byte ranges freed since last asked.
    fn take_freed(&self) -> Vec<(u64, u64)> {
        Vec::new()
    }
    /// Whether nothing may be written (the policy's `EROFS` answers).
    fn read_only(&self) -> bool {
        true
    }
    /// As [`ext4_engine::Volume::access`]: may `caller` access `ino` as `mask` asks.
    fn access(&self, ino: InodeNo, caller: &Caller, mask: u32, ids: ShownIds) -> Result<()>;
    /// As [`ext4_engine::Volume::iomap_config`]; `None` without iomap.
    fn iomap_config(&self) -> Option<IomapConfig> {
        None
    }

    // Node lifetime and the write requests: see `ext4_fuse_common::fs`.

    /// `ino` was read, listed or its link read: its atime, by the mount's
    /// rule.
    fn accessed(&self, _ino: InodeNo) {}
    /// Inodes whose attributes changed without the kernel's asking (see
    /// `Fs::take_stale`).
    fn take_stale(&self) -> Vec<InodeNo> {
        Vec::new()
    }
    /// An entry reply naming `a` goes to the kernel.
    fn entry(&self, _a: &Attr) {}
    /// `FORGET`: `n` references to `ino` dropped.
    fn forget(&self, _ino: InodeNo, _n: u64) {}
    /// `OPEN` with `flags`: whether the kernel may keep its page cache.
    fn open(&self, ino: InodeNo, flags: u32) -> Result<bool> {
        let _ = ino;
        policy::check_open(flags, FileType::Regular, 0, self.read_only())?;
        Ok(true)
    }
    fn release(&self, _ino: InodeNo) {}
    fn create(
        &self,
        _caller: &Caller,
        _parent: InodeNo,
        _name: &[u8],
        _mode: u32,
        _umask: u32,
        _open_flags: Option<u32>,
    ) -> Result<Attr> {
        Err(Error::ReadOnly)
    }
    /// `FS_IOC_GETFLAGS`.
    fn get_flags(&self, _ino: InodeNo) -> Result<u32> {
        Err(Error::Unsupported {
            what: "inode flags",
        })
    }
    /// `FS_IOC_SETFLAGS`.
    fn set_flags(&self, _ino: InodeNo, _flags: u32) -> Result<()> {
        Err(Error::ReadOnly)
    }
    /// `O_TMPFILE`: an open regular file with no name.
    fn tmpfile(&self, _caller: &Caller, _parent: InodeNo, _mode: u32, _umask: u32) -> Result<Attr> {
        Err(Error::ReadOnly)
    }
    fn unlink(&self, _caller: &Caller, _parent: InodeNo, _name: &[u8]) -> Result<()> {
        Err(Error::ReadOnly)
    }
    /// `MKNOD`, `MKDIR`, `SYMLINK`, `LINK`: the new node's attributes.
    fn make(
        &self,
        _caller: &Caller,
        _parent: InodeNo,
        _name: &[u8],
        _what: Make<'_>,
    ) -> Result<Attr> {
        Err(Error::ReadOnly)
    }
    fn rmdir(&self, _caller: &Caller, _parent: InodeNo, _name: &[u8]) -> Result<()> {
        Err(Error::ReadOnly)
    }
    fn rename(
        &self,
        _caller: &Caller,
        _from: (InodeNo, &[u8]),
        _to: (InodeNo, &[u8]),
        _flags: u32,
    ) -> Result<()> {
        Err(Error::ReadOnly)
    }
    fn setxattr(
        &self,
        _caller: &Caller,
        _ino: InodeNo,
        _name: &[u8],
        _value: &[u8],
        _flags: u32,
    ) -> Result<()> {
        Err(Error::ReadOnly)
    }
    fn removexattr(&self, _ino: InodeNo, _name: &[u8]) -> Result<()> {
        Err(Error::ReadOnly)
    }
    /// `FALLOCATE` of (mode, offset, len); `killpriv`: the mount handles
    /// `FUSE_HANDLE_KILLPRIV_V2` (see `Fs::fallocate`).
    fn fallocate(
        &self,
        _caller: &Caller,
        _ino: InodeNo,
        _range: (u32, u64, u64),
        _killpriv: bool,
    ) -> Result<()> {
        Err(Error::ReadOnly)
    }
    /// `SETATTR`; `kill`: `FATTR_KILL_SUIDGID` (see `Fs::setattr`).
    fn setattr(
        &self,
        _caller: &Caller,
        _ino: InodeNo,
        _set: &SetAttr,
        _kill: bool,
    ) -> Result<Attr> {
        Err(Error::ReadOnly)
    }
    /// `WRITE`; `kill`: `FUSE_WRITE_KILL_SUIDGID` (see `Fs::write`).
    fn write(
        &self,
        _caller: &Caller,
        _ino: InodeNo,
        _offset: u64,
        _data: &[u8],
        _kill: bool,
    ) -> Result<usize> {
        Err(Error::ReadOnly)
    }
    /// `killpriv`: as for `fallocate`.
    fn copy_file_range(
        &self,
        _caller: &Caller,
        _from: (InodeNo, u64),
        _to: (InodeNo, u64),
        _len: u64,
        _killpriv: bool,
    ) -> Result<u64> {
        Err(Error::ReadOnly)
    }
    /// `FSYNC`, `FSYNCDIR`, `SYNCFS`: everything acknowledged is durable.
    fn sync(&self) -> Result<()> {
        Ok(())
    }
    /// Unmount or `DESTROY`: close the volume cleanly.
    fn close(&self) -> Result<()> {
        Ok(())
    }
    /// As [`Fs::begin_change`]: a write request begins (waits while frozen).
    fn begin_change(&self) {}
    /// As [`Fs::end_change`].
    fn end_change(&self) {}
    /// As [`Fs::freeze`]: `FREEZE_FS`.
    fn freeze(&self) -> Result<()> {
        Ok(())
    }
    /// As [`Fs::thaw`]: `UNFREEZE_FS`.
    fn thaw(&self) {}
    /// As [`Fs::shut_down`]: `SHUTDOWN_FS`.
    fn shut_down(&self) {}
}

/// What a `MKNOD`, `MKDIR`, `SYMLINK` or `LINK` makes.
#[derive(Clone, Copy, Debug)]
pub enum Make<'a> {
    Node {
        mode: u32,
        rdev: (u32, u32),
        umask: u32,
    },
    Dir {
        mode: u32,
        umask: u32,
    },
    Symlink {
        target: &'a [u8],
    },
    Link {
        ino: InodeNo,
    },
}

/// The read requests go to the volume; the rest through [`Fs`].
impl<D: BlockDevice + 'static> Backend for Fs<D> {
    fn getattr(&self, ino: InodeNo) -> Result<Attr> {
        self.volume().getattr(ino)
    }
    fn lookup(&self, dir: InodeNo, name: &[u8]) -> Result<Attr> {
        self.volume().lookup(dir, name)
    }
    fn readdir(
        &self,
        dir: InodeNo,
        cookie: u64,
        f: &mut dyn FnMut(&DirEntry<'_>) -> bool,
    ) -> Result<()> {
        self.volume().readdir(dir, cookie, f)
    }
    fn read(&self, ino: InodeNo, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.volume().read(ino, offset, buf)
    }
    fn readlink(&self, ino: InodeNo) -> Result<Vec<u8>> {
        self.volume().readlink(ino)
    }
    fn getxattr(&self, ino: InodeNo, name: &[u8]) -> Result<Vec<u8>> {
        self.volume().getxattr(ino, name)
    }
    fn listxattr(&self, ino: InodeNo) -> Result<Vec<Vec<u8>>> {
        self.volume().listxattr(ino)
    }
    fn statfs(&self) -> StatFs {
        Fs::statfs(self)
    }
    fn seek(&self, ino: InodeNo, offset: u64, whence: Whence) -> Result<u64> {
        self.volume().seek(ino, offset, whence)
    }
    fn take_reports(&self) -> Vec<Error> {
        self.volume().take_reports()
    }
    fn iomap_begin(
        &self,
        ino: InodeNo,
        pos: u64,
        count: u64,
        opflags: u32,
        dev: u32,
    ) -> Result<(Mapping, Mapping)> {
        self.volume().iomap_begin(ino, pos, count, opflags, dev)
    }
    fn iomap_config(&self) -> Option<IomapConfig> {
        Some(self.volume().iomap_config())
    }
    fn map_for_write(
        &self,
        caller: &Caller,
        ino: InodeNo,
        pos: u64,
        count: u64,
    ) -> Result<WriteMap> {
        Fs::map_for_write(self, caller, ino, pos, count)
    }
    fn io_end(
        &self,
        caller: &Caller,
        ino: InodeNo,
        pos: u64,
        len: u64,
        new_size: Option<u64>,
    ) -> Result<u64> {
        Fs::io_end(self, caller, ino, pos, len, new_size)
    }
    fn release_past_size(&self, caller: &Caller, ino: InodeNo, pos: u64, len: u64) -> Result<()> {
        Fs::release_past_size(self, caller, ino, pos, len)
    }
    fn set_kernel_writes_data(&self) {
        Fs::set_kernel_writes_data(self)
    }
    fn take_freed(&self) -> Vec<(u64, u64)> {
        Fs::take_freed(self)
    }
    fn read_only(&self) -> bool {
        Fs::read_only(self)
    }
    fn access(&self, ino: InodeNo, caller: &Caller, mask: u32, ids: ShownIds) -> Result<()> {
        self.volume().access(ino, caller, mask, ids)
    }
    fn accessed(&self, ino: InodeNo) {
        Fs::accessed(self, ino)
    }
    fn take_stale(&self) -> Vec<InodeNo> {
        Fs::take_stale(self)
    }
    fn entry(&self, a: &Attr) {
        Fs::entry(self, a)
    }
    fn forget(&self, ino: InodeNo, n: u64) {
        Fs::forget(self, ino, n)
    }
    fn open(&self, ino: InodeNo, flags: u32) -> Result<bool> {
        Fs::open(self, ino, flags).map(|o| o.keep_cache)
    }
    fn release(&self, ino: InodeNo) {
        Fs::release(self, ino)
    }
    fn create(
        &self,
        caller: &Caller,
        parent: InodeNo,
        name: &[u8],
        mode: u32,
        umask: u32,
        open_flags: Option<u32>,
    ) -> Result<Attr> {
        Fs::create(self, caller, parent, name, mode, umask, open_flags)
    }
    fn tmpfile(&self, caller: &Caller, parent: InodeNo, mode: u32, umask: u32) -> Result<Attr> {
        Fs::tmpfile(self, caller, parent, mode, umask)
    }
    fn get_flags(&self, ino: InodeNo) -> Result<u32> {
        Fs::get_flags(self, ino)
    }
    fn set_flags(&self, ino: InodeNo, flags: u32) -> Result<()> {
        Fs::set_flags(self, ino, flags)
    }
    fn unlink(&self, caller: &Caller, parent: InodeNo, name: &[u8]) -> Result<()> {
        Fs::unlink(self, caller, parent, name)
    }
    fn make(&self, caller: &Caller, parent: InodeNo, name: &[u8], what: Make<'_>) -> Result<Attr> {
        match what {
            Make::Node { mode, rdev, umask } => {
                Fs::mknod(self, caller, parent, name, mode, rdev, umask)
            }
            Make::Dir { mode, umask } => Fs::mkdir(self, caller, parent, name, mode, umask),
            Make::Symlink { target } => Fs::symlink(self, caller, parent, name, target),
            Make::Link { ino } => Fs::link(self, caller, ino, parent, name),
        }
    }
    fn rmdir(&self, caller: &Caller, parent: InodeNo, name: &[u8]) -> Result<()> {
        Fs::rmdir(self, caller, parent, name)
    }
    fn rename(
        &self,
        caller: &Caller,
        from: (InodeNo, &[u8]),
        to: (InodeNo, &[u8]),
        flags: u32,
    ) -> Result<()> {
        Fs::rename(self, caller, from, to, flags)
    }
    fn setxattr(
        &self,
        caller: &Caller,
        ino: InodeNo,
        name: &[u8],
        value: &[u8],
        flags: u32,
    ) -> Result<()> {
        Fs::setxattr(self, caller, ino, name, value, flags)
    }
    fn removexattr(&self, ino: InodeNo, name: &[u8]) -> Result<()> {
        Fs::removexattr(self, ino, name)
    }
    fn fallocate(
        &self,
        caller: &Caller,
        ino: InodeNo,
        range: (u32, u64, u64),
        killpriv: bool,
    ) -> Result<()> {
        Fs::fallocate(self, caller, ino, range, killpriv)
    }
    fn setattr(&self, caller: &Caller, ino: InodeNo, set: &SetAttr, kill: bool) -> Result<Attr> {
        Fs::setattr(self, caller, ino, set, kill)
    }
    fn write(
        &self,
        caller: &Caller,
        ino: InodeNo,
        offset: u64,
        data: &[u8],
        kill: bool,
    ) -> Result<usize> {
        Fs::write(self, caller, ino, offset, data, kill)
    }
    fn copy_file_range(
        &self,
        caller: &Caller,
        from: (InodeNo, u64),
        to: (InodeNo, u64),
        len: u64,
        killpriv: bool,
    ) -> Result<u64> {
        Fs::copy_file_range(self, caller, from, to, len, killpriv)
    }
    fn sync(&self) -> Result<()> {
        Fs::sync(self)
    }
    fn close(&self) -> Result<()> {
        Fs::close(self)
    }
    fn begin_change(&self) {
        Fs::begin_change(self)
    }
    fn end_change(&self) {
        Fs::end_change(self)
    }
    fn freeze(&self) -> Result<()> {
        Fs::freeze(self)
    }
    fn thaw(&self) {
        Fs::thaw(self)
    }
    fn shut_down(&self) {
        Fs::shut_down(self)
    }
}
