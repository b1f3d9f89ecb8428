//! Write operations, each following docs/transactions.md: lock the
//! inodes, read and check, begin a handle, allocate (undone logically if a
//! later step fails), change in place, end the handle.
//!
//! - [`extent`]: extent tree edits (insert, split, delete, range removal,
//!   written/unwritten state, shifts).
//! - [`indirect`]: the ext2/3 block map's edits.
//! - [`fmap`]: a file's map whatever its kind: allocating for a hole
//!   (goal, clusters), unmapping a range.
//! - [`data`]: the engine's own data path (`write`, zeroing partial blocks).
//! - [`inline`]: inline data (in `i_block` and the in-inode xattr region);
//!   [`inline_dir`]: inline-data directories.
//! - [`resize`]: truncation and range removal in steps.
//! - [`fallocate`]: `fallocate(2)`'s modes.
//! - [`map_write`]: what a FUSE iomap server calls (map for a write,
//!   `IOEND` conversion and on-disk size).
//! - [`dir`]: directory entry room, insert, remove.
//! - [`htree`]: hash-tree directories (indexing, splits, lookups).
//! - [`namespace`]: create, mknod, mkdir, symlink, link, unlink, rmdir,
//!   rename.
//! - [`orphan`]: the orphan list and file, release of unlinked inodes.
//! - [`atime`]: access times (`relatime`, `strictatime`, `noatime`).
//! - [`xattr`]: extended attribute and ACL writes (the in-inode region
//!   inline data's `system.data` lives in too).
//! - here: inode records, inode locks, freeing an inode, and the
//!   operations `truncate`, `setattr`.

pub mod atime;
pub mod chattr;
pub mod data;
pub mod dir;
pub mod extent;
pub mod fallocate;
pub mod fmap;
pub mod htree;
pub mod indirect;
pub mod inline;
pub mod inline_dir;
pub mod map_write;
pub mod namespace;
pub mod orphan;
pub mod resize;
pub mod xattr;

pub use atime::{AtimeMode, AtimeRule};
pub use fallocate::falloc;
pub use map_write::{WriteMap, WriteRun, MAX_WRITE_RUNS};
pub use resize::Edges;

use alloc::vec::Vec;

use crate::attr::{Attr, FileType, Timestamp};
use crate::device::BlockDevice;
use crate::error::{Error, Object, Result};
use crate::inode::{flags, Inode};
use crate::numbers::{FileBlock, InodeNo, PhysBlock};
use crate::txn::Handle;
use crate::volume::Volume;
use crate::writable::Cred;
use dir::Slot;
use fmap::INODE_CREDITS;

/// Inode locks: a fixed set of mutexes an inode number hashes to (two
/// inodes may share one). Operations take the inodes they change in
/// inode-number order, before any handle (docs/transactions.md).
pub(crate) struct InodeLocks {
    shards: Vec<spin::Mutex<()>>,
    /// Taken (before any inode lock) by renames between two directories,
    /// so that the ancestry a rename checks cannot change meanwhile.
    rename: spin::Mutex<()>,
}

const INODE_LOCKS: usize = 64;

impl InodeLocks {
    pub(crate) fn new() -> InodeLocks {
        InodeLocks {
            shards: (0..INODE_LOCKS).map(|_| spin::Mutex::new(())).collect(),
            rename: spin::Mutex::new(()),
        }
    }

    /// The lock of renames between directories.
    pub(crate) fn rename_lock(&self) -> spin::MutexGuard<'_, ()> {
        self.rename.lock()
    }

    fn slot(ino: InodeNo) -> usize {
        (ino.0 as usize).wrapping_mul(0x9E37_79B9) >> 7 & (INODE_LOCKS - 1)
    }

    /// Add `ino`'s lock to `guards` (holding the locks of `held`) without
    /// ever waiting out of order: already held, taken in order, or tried.
    /// `false`: it is busy and would be out of order (drop everything and
    /// lock all at once).
    pub(crate) fn try_add<'a>(
        &'a self,
        guards: &mut Vec<spin::MutexGuard<'a, ()>>,
        held: &[InodeNo],
        ino: InodeNo,
    ) -> bool {
        let s = Self::slot(ino);
        if held.iter().any(|&h| Self::slot(h) == s) {
            return true;
        }
        if held.iter().all(|&h| Self::slot(h) < s) {
            guards.push(self.shards[s].lock());
            return true;
        }
        match self.shards[s].try_lock() {
            Some(g) => {
                guards.push(g);
                true
            }
            None => false,
        }
    }

    /// Lock the inodes of `inos` (any order, repeats allowed).
    pub(crate) fn lock(&self, inos: &[InodeNo]) -> Vec<spin::MutexGuard<'_, ()>> {
        let mut slots: Vec<usize> = inos.iter().map(|&i| Self::slot(i)).collect();
        slots.sort_unstable();
        slots.dedup();
        slots.iter().map(|&s| self.shards[s].lock()).collect()
    }
}

/// A time to set: now, or a given time (`utimensat`'s `UTIME_NOW`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetTime {
    Now,
    At(Timestamp),
}

/// What `setattr` changes; `None` leaves a field alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// Permission bits and set-id/sticky bits (`07777`); the file type
    /// never changes.
    pub mode: Option<u16>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Truncate or extend (regular files).
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
    /// An explicit change time; otherwise any change sets it to now.
    pub ctime: Option<Timestamp>,
}

const S_IFMT: u16 = 0xF000;

fn valid_name(name: &[u8]) -> Result<()> {
    if name.len() > 255 {
        return Err(Error::NameTooLong);
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(Error::InvalidArgument);
    }
    Ok(())
}

impl<D: BlockDevice> Volume<D> {
    /// Write `inode` into its on-disk record in place (checksum included)
    /// and drop the decoded copies (inode cache; the mapping cache when
    /// `mapping_changed`). One credit; `fresh` zeroes the record first (a
    /// newly allocated inode).
    pub fn write_inode(&self, h: &mut Handle<'_, D>, inode: &mut Inode, fresh: bool) -> Result<()> {
        let (blk, off) = self.inode_location(inode.ino)?;
        let size = self.sb().inode_size as usize;
        let sb = self.sb();
        h.modify(blk, |b| inode.store(sb, &mut b[off..off + size], fresh))??;
        self.invalidate_inode(inode.ino);
        Ok(())
    }

    /// The mappings of `ino` changed: the mapping cache drops them.
    fn mapping_changed(&self, ino: InodeNo) {
        self.mapcache().forget_inode(ino);
    }

    /// The inode to change: read and checked from the block cache (the
    /// caller holds its lock, so it stays current until written).
    fn inode_for_write(&self, ino: InodeNo) -> Result<Inode> {
        Ok((*self.live_inode(ino)?).clone())
    }

    /// Whether the data of `inode` may change at all: not encrypted or
    /// verity (EOPNOTSUPP), not immutable (EPERM, as the kernel's VFS
    /// refuses it). An append-only file only grows: its callers check
    /// that ([`Volume::appending_only`]).
    fn writable_file(&self, inode: &Inode) -> Result<()> {
        if inode.has_flag(flags::ENCRYPT) || inode.has_flag(flags::VERITY) {
            return Err(Error::Unsupported {
                what: "writing encrypted or verity files",
            });
        }
        if inode.has_flag(flags::IMMUTABLE) {
            return Err(Error::NotPermitted);
        }
        if inode.has_flag(flags::INLINE_DATA) && inode.has_flag(flags::EXTENTS) {
            return Err(Error::corrupt(
                Object::Inode(inode.ino),
                "inode has both inline data and extents",
            ));
        }
        Ok(())
    }

    fn dir_for_write(&self, dir: InodeNo) -> Result<Inode> {
        let d = self.inode_for_write(dir)?;
        if d.kind != Some(FileType::Directory) {
            return Err(Error::NotDir);
        }
        if d.links_count == 0 {
            return Err(Error::NotFound);
        }
        Ok(d)
    }

    /// Add a block to the end of directory `dir` (a fresh empty leaf),
    /// mapped like file data (extent or block map, clusters): allocate,
    /// map, fill; ENOSPC changes nothing. Credits: a map step, the block.
    fn grow_dir(&self, h: &mut Handle<'_, D>, dir: &mut Inode, cred: &Cred) -> Result<Slot> {
        let bs = self.sb().block_size as u64;
        let lblk = dir.size.div_ceil(bs);
        let l = FileBlock::at(lblk).ok_or(Error::FileTooBig)?;
        let (b, _) = self.map_hole(h, dir, lblk, 1, false, cred)?;
        let d = &*dir;
        h.create(b, |x| self.init_dir_block(d, x))?;
        dir.size = (lblk + 1) * bs;
        Ok(Slot::At {
            lblk: l,
            pblk: b,
            offset: 0,
        })
    }

    /// Free an inode with no links: its blocks (from the end, a handle per
    /// extent; the inode is on the orphan list meanwhile, so a crash
    /// cannot leak them), its xattr block reference, then the inode itself
    /// (off the orphan list, `dtime` set, as the kernel leaves a deleted
    /// record).
    pub fn free_inode_now(&self, inode: &mut Inode) -> Result<()> {
        self.fresh_inodes().forget(inode.ino);
        self.unmap_range(inode, 0, FileBlock::COUNT, &Cred::ROOT)?;
        let credits = 2 + 2 + 1 + INODE_CREDITS + orphan::ORPHAN_CREDITS;
        let mut h = self.begin(credits)?;
        let r = (|| {
            if inode.file_acl != 0 {
                self.drop_xattr_block(&mut h, inode)?;
            }
            let ino = inode.ino;
            self.orphan_del(&mut h, ino)?;
            inode.dtime = self.now().sec as u32;
            self.patch_dtime(&mut h, ino, inode.dtime)?;
            inode.size = 0;
            inode.links_count = 0;
            self.write_inode(&mut h, inode, false)?;
            let dir = inode.kind == Some(FileType::Directory);
            self.free_inode(&mut h, ino, dir)
        })();
        if let Err(e) = r {
            return Err(h.abort(e));
        }
        self.mapping_changed(inode.ino);
        Ok(())
    }

    /// Drop `inode`'s reference to its xattr block: freed with the last
    /// reference, else its refcount lowered (and its checksum redone).
    pub(crate) fn drop_xattr_block(&self, h: &mut Handle<'_, D>, inode: &mut Inode) -> Result<()> {
        let blk = PhysBlock(inode.file_acl);
        if !self.blocks_in_fs(blk, 1) {
            return Err(Error::corrupt(
                Object::Inode(inode.ino),
                "xattr block lies outside the filesystem",
            ));
        }
        let refs = self.cache_read_with(blk, |b| u32::from_le_bytes([b[4], b[5], b[6], b[7]]))?;
        if refs <= 1 {
            self.free_blocks(h, blk, 1)?;
        } else {
            let seed = self.sb().csum_seed;
            let csum = self.sb().metadata_csum();
            h.modify(blk, |b| {
                b[4..8].copy_from_slice(&(refs - 1).to_le_bytes());
                if csum {
                    if let Some(c) = crate::xattr::block_checksum(b, blk, seed) {
                        b[0x10..0x14].copy_from_slice(&c.to_le_bytes());
                    }
                }
            })?;
        }
        inode.file_acl = 0;
        inode.blocks_512 = inode
            .blocks_512
            .saturating_sub(self.sb().cluster_size as u64 / 512);
        Ok(())
    }

    /// Truncate regular file `ino` to `size` (down: blocks past it freed,
    /// the last partial block's tail zeroed; up: a sparse extension).
    /// Sets mtime and ctime when the size changes.
    pub fn truncate(&self, ino: InodeNo, size: u64) -> Result<()> {
        self.setattr(
            ino,
            &SetAttr {
                size: Some(size),
                ..SetAttr::default()
            },
        )
        .map(|_| ())
    }

    /// EPERM for a change of append-only `inode`'s data other than
    /// bytes added at its end from `offset` (`None`: not an append).
    fn appending_only(&self, inode: &Inode, offset: Option<u64>) -> Result<()> {
        if inode.has_flag(flags::APPEND) && offset.is_none_or(|o| o < inode.size) {
            return Err(Error::NotPermitted);
        }
        Ok(())
    }

    fn truncate_locked(&self, inode: &mut Inode, size: u64, edges: Edges) -> Result<()> {
        match inode.kind {
            Some(FileType::Regular) => {}
            Some(FileType::Directory) => return Err(Error::IsDir),
            _ => return Err(Error::InvalidArgument),
        }
        self.writable_file(inode)?;
        self.appending_only(inode, None)?;
        self.resize(inode, size, edges, &Cred::ROOT)
    }

    /// Change attributes of `ino` (`chmod`, `chown`, `truncate`, `utimens`)
    /// with the kernel's rules: any change sets ctime to now unless an
    /// explicit ctime is given; a size change also sets mtime to now
    /// (unless given). Permission checks are the caller's. Returns the
    /// new attributes.
    pub fn setattr(&self, ino: InodeNo, set: &SetAttr) -> Result<Attr> {
        self.setattr_with(ino, set, Edges::Engine)
    }

    /// [`Volume::setattr`] changing metadata only: a truncate down leaves
    /// the tail of the new last block to the caller (under FUSE iomap the
    /// kernel zeroed it before it asked).
    pub fn setattr_metadata(&self, ino: InodeNo, set: &SetAttr) -> Result<Attr> {
        self.setattr_with(ino, set, Edges::Kernel)
    }

    fn setattr_with(&self, ino: InodeNo, set: &SetAttr, edges: Edges) -> Result<Attr> {
        let _locks = self.inode_locks().lock(&[ino]);
        let mut inode = self.inode_for_write(ino)?;
        let now = self.now();
        // Given times are kept as the kernel keeps them (clamped).
        let when = |t: SetTime| match t {
            SetTime::Now => now,
            SetTime::At(t) => crate::inode::clamp_time(self.sb(), t),
        };
        if let Some(size) = set.size {
            if size != inode.size {
                self.truncate_locked(&mut inode, size, edges)?;
                inode.mtime = now;
                inode.ctime = now;
            }
        }
        let mut h = self.begin(INODE_CREDITS + 2 + crate::allocator::ALLOC_CREDITS)?;
        if let Some(m) = set.mode {
            inode.mode = (inode.mode & S_IFMT) | (m & 0o7777);
            // The access ACL follows the new permission bits.
            if let Err(e) = self.chmod_acl(&mut h, &mut inode, &Cred::ROOT) {
                if e == Error::NoSpace {
                    return Err(e);
                }
                return Err(h.abort(e));
            }
        }
        if let Some(u) = set.uid {
            inode.uid = u;
        }
        if let Some(g) = set.gid {
            inode.gid = g;
        }
        if let Some(t) = set.atime {
            inode.atime = when(t);
        }
        if let Some(t) = set.mtime {
            inode.mtime = when(t);
        }
        let changed = set.mode.is_some()
            || set.uid.is_some()
            || set.gid.is_some()
            || set.size.is_some()
            || set.atime.is_some()
            || set.mtime.is_some();
        if let Some(c) = set.ctime {
            inode.ctime = crate::inode::clamp_time(self.sb(), c);
        } else if changed {
            inode.ctime = now;
        }
        if let Err(e) = self.write_inode(&mut h, &mut inode, false) {
            return Err(h.abort(e));
        }
        drop(h);
        inode.attr(self.sb())
    }
}
