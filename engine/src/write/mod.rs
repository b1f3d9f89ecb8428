//! Write operations on extent-mapped files and their directories, each
//! following docs/transactions.md: lock the inodes, read and check, begin a
//! handle, allocate (undone logically if a later step fails), change in
//! place, end the handle.
//!
//! - [`extent`]: extent tree insert and tail removal.
//! - [`dir`]: directory entry room, insert, remove.
//! - [`htree`]: hash-tree directories (indexing, splits, lookups).
//! - [`namespace`]: create, mknod, mkdir, symlink, link, unlink, rmdir,
//!   rename.
//! - [`orphan`]: the orphan list and file, release of unlinked inodes.
//! - [`xattr`]: extended attribute and ACL writes.
//! - here: inode records, inode locks, and the operations `write`,
//!   `truncate`, `setattr`.

pub mod dir;
pub mod extent;
pub mod htree;
pub mod namespace;
pub mod orphan;
pub mod xattr;

use alloc::vec;
use alloc::vec::Vec;

use crate::attr::{Attr, FileType, Timestamp};
use crate::blockmap::Run;
use crate::device::BlockDevice;
use crate::error::{Error, Object, Result};
use crate::extent::Extent;
use crate::features::ro_compat;
use crate::inode::{flags, Inode};
use crate::numbers::{InodeNo, PhysBlock};
use crate::txn::Handle;
use crate::volume::Volume;
use crate::writable::Cred;
use dir::Slot;

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

/// Credits of writing one inode record.
const INODE_CREDITS: usize = 1;
/// Most blocks one handle of `write` allocates (an extent's length).
const WRITE_CHUNK_BLOCKS: u32 = extent::MAX_LEN;
/// Bytes of file data the engine's write path writes to the device at once.
const DATA_IO_BYTES: usize = 1 << 20;
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
        h.modify(PhysBlock(blk), |b| {
            inode.store(sb, &mut b[off..off + size], fresh)
        })??;
        self.invalidate_inode(inode.ino);
        Ok(())
    }

    /// The mappings of `ino` changed: the mapping cache drops them.
    fn mapping_changed(&self, ino: u32) {
        self.mapcache().forget_inode(ino as u64);
    }

    /// The inode to change: read and checked from the block cache (the
    /// caller holds its lock, so it stays current until written).
    fn inode_for_write(&self, ino: InodeNo) -> Result<Inode> {
        Ok((*self.live_inode(ino.0)?).clone())
    }

    fn writable_file(&self, inode: &Inode) -> Result<()> {
        if inode.has_flag(flags::INLINE_DATA) {
            return Err(Error::Unsupported {
                what: "writing inline-data files",
            });
        }
        if !inode.has_flag(flags::EXTENTS) {
            return Err(Error::Unsupported {
                what: "writing block-mapped (non-extent) files",
            });
        }
        if inode.has_flag(flags::ENCRYPT) || inode.has_flag(flags::VERITY) {
            return Err(Error::Unsupported {
                what: "writing encrypted or verity files",
            });
        }
        if inode.has_flag(flags::IMMUTABLE) || inode.has_flag(flags::APPEND) {
            return Err(Error::Unsupported {
                what: "writing immutable or append-only files",
            });
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
    /// mapped by its extent tree: allocate, fill, insert; ENOSPC changes
    /// nothing. Credits: allocation, the block, an extent insert.
    fn grow_dir(&self, h: &mut Handle<'_, D>, dir: &mut Inode, cred: &Cred) -> Result<Slot> {
        let bs = self.sb().block_size as u64;
        let lblk = dir.size.div_ceil(bs) as u32;
        let goal = match lblk.checked_sub(1).map(|l| self.map_block(dir, l as u64)) {
            Some(Ok(Run::Mapped { pblk, .. })) => PhysBlock(pblk + 1),
            _ => self.inode_goal(InodeNo(dir.ino), false),
        };
        let (b, _) = self.alloc_blocks(h, goal, 1, cred, false)?;
        let ext = Extent {
            lblk,
            len: 1,
            pblk: b.0,
            unwritten: false,
        };
        if let Err(e) = self.insert_extent(h, dir, ext, cred) {
            self.free_blocks(h, b, 1)?;
            return Err(e);
        }
        let d = &*dir;
        h.create(b, |x| self.init_dir_block(d, x))?;
        dir.size = (lblk as u64 + 1) * bs;
        dir.blocks_512 += bs / 512;
        self.mapping_changed(dir.ino);
        Ok(Slot::At {
            lblk,
            pblk: b.0,
            offset: 0,
        })
    }

    /// Free an inode with no links: its blocks (from the end, a handle per
    /// extent; the inode is on the orphan list meanwhile, so a crash
    /// cannot leak them), its xattr block reference, then the inode itself
    /// (off the orphan list, `dtime` set, as the kernel leaves a deleted
    /// record).
    pub fn free_inode_now(&self, inode: &mut Inode) -> Result<()> {
        self.truncate_blocks(inode, 0)?;
        let credits = 2 + 2 + 1 + INODE_CREDITS + orphan::ORPHAN_CREDITS;
        let mut h = self.begin(credits)?;
        let r = (|| {
            if inode.file_acl != 0 {
                self.drop_xattr_block(&mut h, inode)?;
            }
            let ino = InodeNo(inode.ino);
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
        let blk = inode.file_acl;
        if !self.blocks_in_fs(blk, 1) {
            return Err(Error::corrupt(
                Object::Inode(inode.ino),
                "xattr block lies outside the filesystem",
            ));
        }
        let refs = self.cache_read_with(blk, |b| u32::from_le_bytes([b[4], b[5], b[6], b[7]]))?;
        if refs <= 1 {
            self.free_blocks(h, PhysBlock(blk), 1)?;
        } else {
            let seed = self.sb().csum_seed;
            let csum = self.sb().metadata_csum();
            h.modify(PhysBlock(blk), |b| {
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
            .saturating_sub(self.sb().block_size as u64 / 512);
        Ok(())
    }

    /// Remove every block mapped at or past logical block `from`, one
    /// extent per handle, from the end (each step leaves a consistent,
    /// shorter file), writing the inode after each.
    fn truncate_blocks(&self, inode: &mut Inode, from: u32) -> Result<()> {
        if inode.has_flag(flags::INLINE_DATA) || !inode.has_flag(flags::EXTENTS) {
            let mapped = inode.blocks_512 != 0 && !inode.has_flag(flags::INLINE_DATA);
            if mapped && inode.file_acl == 0 {
                return Err(Error::Unsupported {
                    what: "freeing the blocks of block-mapped (non-extent) files",
                });
            }
            return Ok(());
        }
        loop {
            let credits = extent::remove_credits(self.extent_depth(inode)?) + INODE_CREDITS;
            let mut h = self.begin(credits)?;
            match self.remove_last_extent(&mut h, inode, from) {
                Ok(false) => return Ok(()),
                Ok(true) => {}
                Err(e) => return Err(h.abort(e)),
            }
            self.mapping_changed(inode.ino);
            if let Err(e) = self.write_inode(&mut h, inode, false) {
                return Err(h.abort(e));
            }
        }
    }

    /// Write `data` at `offset` of regular file `ino` (the engine's own
    /// data path): holes get blocks allocated goal-directed (after the
    /// file's previous block) and written whole, zero-filled around the
    /// data; data goes straight to the device, bypassing the block cache,
    /// before the extents that point at it are committed (ordered mode).
    /// Extends the size; sets mtime and ctime. Returns the bytes written:
    /// all of them, or an error (ENOSPC may come after a prefix was
    /// written; then the size covers exactly that prefix and the count
    /// is returned).
    pub fn write(&self, ino: InodeNo, offset: u64, data: &[u8], cred: &Cred) -> Result<usize> {
        let _locks = self.inode_locks().lock(&[ino]);
        let mut inode = self.inode_for_write(ino)?;
        match inode.kind {
            Some(FileType::Regular) => {}
            Some(FileType::Directory) => return Err(Error::IsDir),
            _ => return Err(Error::InvalidArgument),
        }
        self.writable_file(&inode)?;
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(Error::FileTooBig)?;
        if end > self.sb().max_file_size(true) {
            return Err(Error::FileTooBig);
        }
        if end > i32::MAX as u64 && !self.sb().has_ro_compat(ro_compat::LARGE_FILE) {
            return Err(Error::FileTooBig);
        }
        if data.is_empty() {
            return Ok(0);
        }
        let bs = self.sb().block_size as u64;
        let mut done = 0usize;
        while done < data.len() {
            let pos = offset + done as u64;
            let lblk = pos / bs;
            let run = self.map_block(&inode, lblk)?;
            let r = match run {
                Run::Mapped {
                    unwritten: true, ..
                } => Err(Error::Unsupported {
                    what: "writing into unwritten (preallocated) extents",
                }),
                Run::Mapped { pblk, len, .. } => {
                    let room = (len * bs - pos % bs) as usize;
                    let n = room.min(data.len() - done);
                    self.overwrite(&inode, pblk * bs + pos % bs, &data[done..done + n])
                        .map(|_| n)
                }
                Run::Hole { len } => self.write_hole(&mut inode, pos, len, &data[done..], cred),
            };
            match r {
                Ok(n) => done += n,
                Err(Error::NoSpace) if done > 0 => break,
                Err(e) => {
                    if done > 0 {
                        self.touch_written(&mut inode, offset + done as u64)?;
                    }
                    return Err(e);
                }
            }
        }
        self.touch_written(&mut inode, offset + done as u64)?;
        Ok(done)
    }

    /// After a write that ended at byte `end`: size (if extended), mtime
    /// and ctime, in one handle.
    fn touch_written(&self, inode: &mut Inode, end: u64) -> Result<()> {
        let now = self.now();
        let mut h = self.begin(INODE_CREDITS)?;
        inode.size = inode.size.max(end);
        inode.mtime = now;
        inode.ctime = now;
        if let Err(e) = self.write_inode(&mut h, inode, false) {
            return Err(h.abort(e));
        }
        Ok(())
    }

    /// Overwrite bytes of blocks the file already owns, in place.
    fn overwrite(&self, inode: &Inode, at: u64, bytes: &[u8]) -> Result<()> {
        let _ = inode;
        for (k, piece) in bytes.chunks(DATA_IO_BYTES).enumerate() {
            self.device()
                .write_at(at + (k * DATA_IO_BYTES) as u64, piece)?;
        }
        Ok(())
    }

    /// Fill (part of) a hole of `hole` blocks at byte `pos` with the start
    /// of `data`: one handle allocates a run, the data is written to it
    /// (whole blocks), the extent is inserted and the size raised over
    /// what was written. Returns the bytes consumed.
    fn write_hole(
        &self,
        inode: &mut Inode,
        pos: u64,
        hole: u64,
        data: &[u8],
        cred: &Cred,
    ) -> Result<usize> {
        let bs = self.sb().block_size as u64;
        let lblk = pos / bs;
        let last = (pos + data.len() as u64 - 1) / bs;
        let want = (last - lblk + 1).min(hole).min(WRITE_CHUNK_BLOCKS as u64) as u32;
        let credits = 2 + extent::insert_credits(self.extent_depth(inode)?) + INODE_CREDITS;
        let mut h = self.begin(credits)?;
        let goal = match lblk.checked_sub(1).map(|l| self.map_block(inode, l)) {
            Some(Ok(Run::Mapped { pblk, .. })) => PhysBlock(pblk + 1),
            _ => match self.last_extent(inode)? {
                Some(e) if e.lblk as u64 <= lblk => PhysBlock(e.pblk + (lblk - e.lblk as u64)),
                _ => self.inode_goal(InodeNo(inode.ino), true),
            },
        };
        let (start, got) = self.alloc_blocks(&mut h, goal, want, cred, false)?;
        // The bytes of the allocated blocks: data, zeros around it.
        let within = (pos % bs) as usize;
        let span = got as usize * bs as usize;
        let n = (span - within).min(data.len());
        if let Err(e) = self.write_new_blocks(start, within, &data[..n], span) {
            self.free_blocks(&mut h, start, got as u64)?;
            return Err(e);
        }
        let ext = Extent {
            lblk: lblk as u32,
            len: got,
            pblk: start.0,
            unwritten: false,
        };
        if let Err(e) = self.insert_extent(&mut h, inode, ext, cred) {
            self.free_blocks(&mut h, start, got as u64)?;
            return Err(e);
        }
        self.mapping_changed(inode.ino);
        inode.blocks_512 += got as u64 * (bs / 512);
        inode.size = inode.size.max(pos + n as u64);
        if let Err(e) = self.write_inode(&mut h, inode, false) {
            return Err(h.abort(e));
        }
        Ok(n)
    }

    /// Write `data` at byte `within` of the `span` bytes starting at block
    /// `start`, zeros elsewhere, in pieces of at most [`DATA_IO_BYTES`].
    fn write_new_blocks(
        &self,
        start: PhysBlock,
        within: usize,
        data: &[u8],
        span: usize,
    ) -> Result<()> {
        let bs = self.sb().block_size as u64;
        let base = start.0 * bs;
        let mut buf: Vec<u8> = Vec::new();
        let mut at = 0usize;
        while at < span {
            let len = DATA_IO_BYTES.min(span - at);
            let (lo, hi) = (within, within + data.len());
            if at >= lo && at + len <= hi {
                // Entirely data: no copy.
                self.device()
                    .write_at(base + at as u64, &data[at - lo..at - lo + len])?;
            } else {
                buf.clear();
                buf.resize(len, 0);
                let s = lo.max(at);
                let e = hi.min(at + len);
                if s < e {
                    buf[s - at..e - at].copy_from_slice(&data[s - lo..e - lo]);
                }
                self.device().write_at(base + at as u64, &buf)?;
            }
            at += len;
        }
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

    fn truncate_locked(&self, inode: &mut Inode, size: u64) -> Result<()> {
        match inode.kind {
            Some(FileType::Regular) => {}
            Some(FileType::Directory) => return Err(Error::IsDir),
            _ => return Err(Error::InvalidArgument),
        }
        self.writable_file(inode)?;
        if size > self.sb().max_file_size(true) {
            return Err(Error::FileTooBig);
        }
        if size > i32::MAX as u64 && !self.sb().has_ro_compat(ro_compat::LARGE_FILE) {
            return Err(Error::FileTooBig);
        }
        let bs = self.sb().block_size as u64;
        if size < inode.size {
            // Zero the tail of the new last block, so a later extension
            // reads zeros there (the kernel's `ext4_block_truncate_page`).
            if !size.is_multiple_of(bs) {
                if let Run::Mapped {
                    pblk,
                    unwritten: false,
                    ..
                } = self.map_block(inode, size / bs)?
                {
                    let zeros = vec![0u8; (bs - size % bs) as usize];
                    self.device().write_at(pblk * bs + size % bs, &zeros)?;
                }
            }
            let from = size.div_ceil(bs).min(u32::MAX as u64) as u32;
            return self.truncate_down(inode, size, from);
        }
        inode.size = size;
        Ok(())
    }

    /// Shrink `inode` to `size`, freeing its blocks from `from` on, as the
    /// kernel does it crash-safe: the new size and the inode on the
    /// orphan list first (a crash mid-way is finished by the next
    /// read-write open), then a handle per extent, then off the list.
    fn truncate_down(&self, inode: &mut Inode, size: u64, from: u32) -> Result<()> {
        let ino = InodeNo(inode.ino);
        let mapped = self
            .last_extent(inode)?
            .is_some_and(|e| e.end() > from as u64);
        // An unlinked inode is an orphan already (and stays one).
        let orphan = mapped && inode.links_count > 0 && !self.is_orphan(ino);
        if orphan {
            let mut h = self.begin(orphan::ORPHAN_CREDITS + INODE_CREDITS)?;
            inode.size = size;
            let r = self
                .orphan_add(&mut h, ino)
                .and_then(|_| self.write_inode(&mut h, inode, false));
            if let Err(e) = r {
                return Err(h.abort(e));
            }
        }
        inode.size = size;
        self.truncate_blocks(inode, from)?;
        if orphan {
            let mut h = self.begin(orphan::ORPHAN_CREDITS)?;
            if let Err(e) = self.orphan_del(&mut h, ino) {
                return Err(h.abort(e));
            }
        }
        Ok(())
    }

    /// Change attributes of `ino` (`chmod`, `chown`, `truncate`, `utimens`)
    /// with the kernel's rules: any change sets ctime to now unless an
    /// explicit ctime is given; a size change also sets mtime to now
    /// (unless given). Permission checks are the caller's. Returns the
    /// new attributes.
    pub fn setattr(&self, ino: InodeNo, set: &SetAttr) -> Result<Attr> {
        let _locks = self.inode_locks().lock(&[ino]);
        let mut inode = self.inode_for_write(ino)?;
        let now = self.now();
        let when = |t: SetTime| match t {
            SetTime::Now => now,
            SetTime::At(t) => t,
        };
        if let Some(size) = set.size {
            if size != inode.size {
                self.truncate_locked(&mut inode, size)?;
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
            inode.ctime = c;
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
