//! The namespace, as the kernel's `fs/ext4/namei.c` changes it: create,
//! mknod, mkdir, symlink, link, unlink, rmdir and rename (with
//! `RENAME_NOREPLACE` and `RENAME_EXCHANGE`), with its link counts
//! (`dir_nlink`: a directory past 65,000 links counts 1), timestamps
//! (the parents' mtime and ctime, the moved or linked inode's ctime),
//! new objects' modes and default-ACL inheritance, and the orphan list
//! for inodes whose last name goes while they are held open.
//!
//! Every operation follows docs/transactions.md: lock the inodes, read and
//! check, make room in the directory (its own handles, each a valid
//! directory), then one handle that allocates (undone if a later
//! allocation fails) and changes.

use alloc::vec::Vec;

use crate::allocator::{ALLOC_CREDITS, INODE_ALLOC_CREDITS};
use crate::attr::{Attr, FileType};
use crate::device::BlockDevice;
use crate::error::{Error, Object, Result};
use crate::features::{incompat, ro_compat};
use crate::inode::{flags, Inode};
use crate::numbers::{InodeNo, PhysBlock};
use crate::txn::Handle;
use crate::volume::Volume;
use crate::writable::Cred;

use super::dir::{put_entry, Found, Slot};
use super::extent::empty_root;
use super::inline_dir::{new_inline_dir_block, MIN_INLINE_DIR};
use super::orphan::ORPHAN_CREDITS;
use super::xattr::ibody_set;
use super::xattr::Xattr;
use super::{valid_name, INODE_CREDITS};
use crate::inline::{DATA_NAME, SYSTEM_INDEX};

pub const S_IFMT: u16 = 0xF000;
pub const S_IFSOCK: u16 = 0xC000;
pub const S_IFLNK: u16 = 0xA000;
pub const S_IFREG: u16 = 0x8000;
pub const S_IFBLK: u16 = 0x6000;
pub const S_IFDIR: u16 = 0x4000;
pub const S_IFCHR: u16 = 0x2000;
pub const S_IFIFO: u16 = 0x1000;
const S_ISGID: u16 = 0o2000;

/// `rename` flag: fail with EEXIST if the target exists.
pub const RENAME_NOREPLACE: u32 = 1;
/// `rename` flag: swap the two names (both must exist).
pub const RENAME_EXCHANGE: u32 = 2;
/// `rename` flag of overlayfs (a whiteout in place of the source).
pub const RENAME_WHITEOUT: u32 = 4;

/// Most links an inode keeps (`EXT4_LINK_MAX`).
pub const LINK_MAX: u16 = 65000;
/// Longest symlink target the VFS passes (`PATH_MAX` less its NUL).
const SYMLINK_MAX: usize = 4095;

/// Flags new inodes inherit from their directory (`EXT4_FL_INHERITED`):
/// secrm, unrm, compr, sync, nodump, noatime, nocompr, journal_data,
/// notail, dirsync, projinherit, casefold, dax.
const INHERITED: u32 = 0x1
    | 0x2
    | 0x4
    | 0x8
    | 0x40
    | 0x80
    | 0x400
    | 0x4000
    | 0x8000
    | 0x10000
    | 0x2000_0000
    | 0x4000_0000
    | 0x0200_0000;
/// What regular files keep of them (`EXT4_REG_FLMASK`: not dirsync,
/// topdir, casefold, index).
const REG_FLMASK: u32 = !(0x10000 | 0x20000 | 0x4000_0000 | flags::INDEX);
/// What other non-directories keep (`EXT4_OTHER_FLMASK`).
const OTHER_FLMASK: u32 = flags::NODUMP | flags::NOATIME;

/// What a new inode holds.
#[derive(Clone, Copy)]
enum Body<'a> {
    Regular,
    Dir,
    /// A character or block device: (major, minor).
    Device(u32, u32),
    /// A FIFO or a socket.
    Special,
    Symlink(&'a [u8]),
}

/// The flags a new inode of `mode` inherits from `parent_flags`.
fn inherited(parent_flags: u32, mode: u16) -> u32 {
    let f = parent_flags & INHERITED;
    match mode & S_IFMT {
        S_IFDIR => f,
        S_IFREG => f & REG_FLMASK,
        _ => f & OTHER_FLMASK,
    }
}

/// Whether `(major, minor)` fits a Linux `dev_t` (12 and 20 bits).
fn valid_dev(major: u32, minor: u32) -> bool {
    major < 1 << 12 && minor < 1 << 20
}

/// A device number in `i_block` as the kernel stores it: the old 16-bit
/// form in word 0 when both parts fit a byte, else the new 32-bit form
/// in word 1.
fn store_rdev(block: &mut [u8; 60], major: u32, minor: u32) {
    block.fill(0);
    if major < 256 && minor < 256 {
        block[0..4].copy_from_slice(&(major << 8 | minor).to_le_bytes());
    } else {
        let new = (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
        block[4..8].copy_from_slice(&new.to_le_bytes());
    }
}

impl<D: BlockDevice> Volume<D> {
    /// The kernel's `ext4_inc_count`: one more link, but a hash-tree
    /// directory past [`LINK_MAX`] (or counting 1 already) counts 1.
    fn inc_count(&self, inode: &mut Inode) {
        inode.links_count = inode.links_count.saturating_add(1);
        if self.is_dx(inode) && (inode.links_count > LINK_MAX || inode.links_count == 2) {
            inode.links_count = 1;
        }
    }

    /// The kernel's `ext4_dec_count`: a directory counting 1 or 2 stays.
    fn dec_count(&self, inode: &mut Inode) {
        if inode.kind != Some(FileType::Directory) || inode.links_count > 2 {
            inode.links_count = inode.links_count.saturating_sub(1);
        }
    }

    /// Whether `dir` can take no more subdirectories
    /// (`EXT4_DIR_LINK_MAX`): at [`LINK_MAX`] links unless `dir_nlink`
    /// lets a hash-tree directory count 1.
    fn dir_link_max(&self, dir: &Inode) -> bool {
        dir.links_count >= LINK_MAX
            && !(self.sb().has_ro_compat(ro_compat::DIR_NLINK) && self.is_dx(dir))
    }

    /// Look `name` up in locked directory `dir` for a change: where its
    /// entry is (through the hash tree when there is one).
    pub(crate) fn entry_of(&self, dir: &Inode, name: &[u8]) -> Result<Option<Found>> {
        if self.is_dx(dir) {
            match self.dx_find(dir, name) {
                Ok(f) => return Ok(f),
                // A damaged tree: every block, as reads fall back.
                Err(e) if e.is_corruption() => self.report(e),
                Err(e) => return Err(e),
            }
        }
        self.find_entry(dir, name)
    }

    /// Create regular file `name` in directory `parent`: permission bits
    /// `mode & 07777` (less `cred.umask` unless the directory has a
    /// default ACL, which the file inherits), owned by `cred` (the group
    /// of a set-group-ID directory). EEXIST when the name exists; ENOSPC
    /// leaves the namespace as it was.
    pub fn create(&self, parent: InodeNo, name: &[u8], mode: u16, cred: &Cred) -> Result<Attr> {
        self.make_node(parent, name, S_IFREG | (mode & 0o7777), Body::Regular, cred)
    }

    /// Create a special file (`S_IFCHR`, `S_IFBLK`, `S_IFIFO`,
    /// `S_IFSOCK`; `S_IFREG` as [`Volume::create`]) with type and
    /// permission bits `mode`; devices get `rdev` = (major, minor),
    /// stored in the old or new encoding as the kernel does. EPERM for
    /// directories, EINVAL for other types or a device number past
    /// 12/20 bits.
    pub fn mknod(
        &self,
        parent: InodeNo,
        name: &[u8],
        mode: u16,
        rdev: (u32, u32),
        cred: &Cred,
    ) -> Result<Attr> {
        let body = match mode & S_IFMT {
            S_IFREG | 0 => return self.create(parent, name, mode, cred),
            S_IFCHR | S_IFBLK if valid_dev(rdev.0, rdev.1) => Body::Device(rdev.0, rdev.1),
            S_IFCHR | S_IFBLK => return Err(Error::InvalidArgument),
            S_IFIFO | S_IFSOCK => Body::Special,
            S_IFDIR => return Err(Error::NotPermitted),
            _ => return Err(Error::InvalidArgument),
        };
        self.make_node(parent, name, (mode & S_IFMT) | (mode & 0o7777), body, cred)
    }

    /// Create directory `name` in `parent` with `.` and `..`: permission
    /// bits `mode & 01777` (set-group-ID from a set-group-ID parent), the
    /// umask and default ACLs as [`Volume::create`]. The parent gains a
    /// link (`dir_nlink` rules); EMLINK when it cannot.
    pub fn mkdir(&self, parent: InodeNo, name: &[u8], mode: u16, cred: &Cred) -> Result<Attr> {
        self.make_node(parent, name, S_IFDIR | (mode & 0o1777), Body::Dir, cred)
    }

    /// Create symbolic link `name` in `parent` to `target`: in `i_block`
    /// when the target and its NUL fit its 60 bytes, else in a block (the
    /// kernel's rule). ENOENT for an empty target, ENAMETOOLONG past the
    /// block size or `PATH_MAX`.
    pub fn symlink(
        &self,
        parent: InodeNo,
        name: &[u8],
        target: &[u8],
        cred: &Cred,
    ) -> Result<Attr> {
        if target.is_empty() {
            return Err(Error::NotFound);
        }
        if target.len() + 1 > self.sb().block_size as usize || target.len() > SYMLINK_MAX {
            return Err(Error::NameTooLong);
        }
        self.make_node(parent, name, S_IFLNK | 0o777, Body::Symlink(target), cred)
    }

    fn make_node(
        &self,
        parent: InodeNo,
        name: &[u8],
        mode: u16,
        body: Body<'_>,
        cred: &Cred,
    ) -> Result<Attr> {
        valid_name(name)?;
        let _locks = self.inode_locks().lock(&[parent]);
        let mut dir = self.dir_for_write(parent)?;
        if self.entry_of(&dir, name)?.is_some() {
            return Err(Error::Exists);
        }
        let is_dir = matches!(body, Body::Dir);
        if is_dir && self.dir_link_max(&dir) {
            return Err(Error::TooManyLinks);
        }
        let (perm, acls) = self.inherit(&dir, mode, cred)?;
        let mut mode = (mode & S_IFMT) | (perm & 0o7777);
        let gid = if dir.mode & S_ISGID != 0 {
            if is_dir {
                mode |= S_ISGID;
            }
            dir.gid
        } else {
            cred.gid
        };
        let slot = self.make_room(&mut dir, name, cred)?;
        let fast_symlink = matches!(body, Body::Symlink(t) if t.len() < 60);
        let now = self.now();
        let flags = inherited(dir.flags, mode);
        let body_len = Inode::new(self.sb(), InodeNo(0), mode, 0, 0, now, 0, flags)
            .ibody_len(self.sb().inode_size as usize);
        let xattr_block = self.new_xattrs_need_block(&acls, body_len)?;
        // A new directory is inline while its body has room (`inline_data`).
        let inline_dir = is_dir && self.inline_dir_fits(&acls, body_len)?;
        // Blocks of its own: a directory's first, a slow symlink's target.
        let needs_block =
            is_dir && !inline_dir || matches!(body, Body::Symlink(_)) && !fast_symlink;
        // The new inode's map is empty: a first block maps without a tree
        // block (an extent in the root, or a direct pointer).
        let credits = INODE_ALLOC_CREDITS
            + INODE_CREDITS
            + ALLOC_CREDITS
            + 1
            + ALLOC_CREDITS
            + 1
            + 2 * INODE_CREDITS;
        let mut h = self.begin(credits)?;
        let ino = self.alloc_inode(&mut h, parent, is_dir)?;
        // Number and generation decide the checksum seed.
        let gen = self.allocator().next_generation();
        let mut inode = Inode::new(self.sb(), ino, mode, cred.uid, gid, now, gen, flags);
        // Extent-mapped files, directories and slow symlinks where the
        // filesystem has extents (the kernel's `ext4_new_inode`; a fast
        // symlink's target takes `i_block`), block-mapped otherwise.
        let mapped = needs_block || matches!(body, Body::Regular);
        if mapped && self.sb().has_incompat(incompat::EXTENTS) {
            inode.flags |= flags::EXTENTS;
            empty_root(&mut inode.block);
        }
        let data_block = if needs_block {
            match self.map_hole(&mut h, &mut inode, 0, 1, false, cred) {
                Ok((b, _)) => Some(b),
                Err(e) => {
                    self.free_inode(&mut h, ino, is_dir)?;
                    return Err(e);
                }
            }
        } else {
            None
        };
        let xblock = if xattr_block {
            let goal = data_block.map_or(self.inode_goal(ino, false), |b| PhysBlock(b.0 + 1));
            match self.alloc_blocks(&mut h, goal, 1, cred, false) {
                Ok((b, _)) => Some(b),
                Err(e) => {
                    if let Some(b) = data_block {
                        self.free_blocks(&mut h, b, 1)?;
                    }
                    self.free_inode(&mut h, ino, is_dir)?;
                    return Err(e);
                }
            }
        } else {
            None
        };
        let r = self.fill_node(
            &mut h, &mut inode, ino, body, &dir, data_block, xblock, &acls,
        );
        let r = r
            .and_then(|_| self.write_inode(&mut h, &mut inode, true))
            .and_then(|_| {
                self.place_entry(
                    &mut h,
                    &mut dir,
                    slot,
                    name,
                    ino,
                    inode.kind.unwrap_or(FileType::Regular),
                )
            })
            .and_then(|_| {
                dir.mtime = now;
                dir.ctime = now;
                if is_dir {
                    self.inc_count(&mut dir);
                }
                self.write_inode(&mut h, &mut dir, false)
            });
        if let Err(e) = r {
            return Err(h.abort(e));
        }
        drop(h);
        if matches!(body, Body::Regular) && self.sb().has_incompat(incompat::INLINE_DATA) {
            // A new file may become inline on its first write.
            self.fresh_inodes().add(ino);
        }
        self.getattr(ino)
    }

    /// Fill new inode `inode` (number `ino`, its map set up, its first
    /// block `data_block` mapped when it needs one) for `body`: `i_block`
    /// contents or the first block's, its inherited attributes.
    #[allow(clippy::too_many_arguments)]
    fn fill_node(
        &self,
        h: &mut Handle<'_, D>,
        inode: &mut Inode,
        ino: InodeNo,
        body: Body<'_>,
        dir: &Inode,
        data_block: Option<PhysBlock>,
        xblock: Option<PhysBlock>,
        acls: &[Xattr],
    ) -> Result<()> {
        let bs = self.sb().block_size as u64;
        match body {
            Body::Regular | Body::Special => {}
            Body::Device(major, minor) => store_rdev(&mut inode.block, major, minor),
            Body::Symlink(t) if t.len() < 60 => {
                inode.block[..t.len()].copy_from_slice(t);
                inode.size = t.len() as u64;
            }
            Body::Symlink(t) => {
                let b = data_block.ok_or(Error::InvalidArgument)?;
                h.create(b, |x| x[..t.len()].copy_from_slice(t))?;
                inode.size = t.len() as u64;
            }
            Body::Dir if data_block.is_none() => {
                inode.flags |= flags::INLINE_DATA;
                inode.block = new_inline_dir_block(dir.ino);
                inode.size = MIN_INLINE_DIR;
                inode.links_count = 2;
                self.place_new_xattrs(h, inode, acls, xblock)?;
                let region = self.ibody_region(inode);
                let region = ibody_set(&region, ino, SYSTEM_INDEX, DATA_NAME, Some(&[]))?
                    .ok_or(Error::NoSpace)?;
                inode.set_ibody(region);
                return Ok(());
            }
            Body::Dir => {
                let b = data_block.ok_or(Error::InvalidArgument)?;
                let me = inode.clone();
                let ft = self.dirent_ft(FileType::Directory);
                let area = self.leaf_area();
                h.create(b, |x| {
                    self.init_dir_block(&me, x);
                    let bsz = x.len();
                    put_entry(x, 0, ino.0, 12, b".", ft, bsz);
                    put_entry(x, 12, dir.ino.0, area - 12, b"..", ft, bsz);
                    self.seal_leaf(&me, x);
                })?;
                inode.size = bs;
                inode.links_count = 2;
            }
        }
        self.place_new_xattrs(h, inode, acls, xblock)
    }

    /// Make `name` in `parent` a new link to `ino` (not a directory:
    /// EPERM). The inode's ctime and the directory's mtime and ctime
    /// become now. EMLINK at [`LINK_MAX`] links; ENOENT for an inode with
    /// no links left. Returns the inode's attributes.
    pub fn link(&self, ino: InodeNo, parent: InodeNo, name: &[u8], cred: &Cred) -> Result<Attr> {
        valid_name(name)?;
        let _locks = self.inode_locks().lock(&[parent, ino]);
        let mut dir = self.dir_for_write(parent)?;
        let mut inode = self.inode_for_write(ino)?;
        if inode.kind == Some(FileType::Directory) {
            return Err(Error::NotPermitted);
        }
        if inode.links_count == 0 {
            return Err(Error::NotFound);
        }
        if inode.links_count >= LINK_MAX {
            return Err(Error::TooManyLinks);
        }
        if self.entry_of(&dir, name)?.is_some() {
            return Err(Error::Exists);
        }
        let slot = self.make_room(&mut dir, name, cred)?;
        let now = self.now();
        let mut h = self.begin(1 + 2 * INODE_CREDITS)?;
        let kind = inode.kind.unwrap_or(FileType::Regular);
        let r = self
            .place_entry(&mut h, &mut dir, slot, name, ino, kind)
            .and_then(|_| {
                inode.links_count += 1;
                inode.ctime = now;
                self.write_inode(&mut h, &mut inode, false)
            })
            .and_then(|_| {
                dir.mtime = now;
                dir.ctime = now;
                self.write_inode(&mut h, &mut dir, false)
            });
        if let Err(e) = r {
            return Err(h.abort(e));
        }
        drop(h);
        inode.attr(self.sb())
    }

    /// Lock `parent` and the inode its entry `name` names, without waiting
    /// out of order: the directory, the entry and the guards.
    fn lock_entry(
        &self,
        parent: InodeNo,
        name: &[u8],
    ) -> Result<(Vec<spin::MutexGuard<'_, ()>>, Inode, Found)> {
        let locks = self.inode_locks();
        let mut guards = locks.lock(&[parent]);
        let mut dir = self.dir_for_write(parent)?;
        let mut at = self.entry_of(&dir, name)?.ok_or(Error::NotFound)?;
        if !locks.try_add(&mut guards, &[parent], at.ino) {
            drop(guards);
            guards = locks.lock(&[parent, at.ino]);
            dir = self.dir_for_write(parent)?;
            let again = self.entry_of(&dir, name)?.ok_or(Error::NotFound)?;
            if again.ino != at.ino {
                // Replaced meanwhile: the caller may retry.
                return Err(Error::NotFound);
            }
            at = again;
        }
        Ok((guards, dir, at))
    }

    /// Remove the name `name` (not a directory) from `parent`. The inode
    /// loses a link and its ctime becomes now; at zero links it goes on
    /// the orphan list and is freed unless a frontend holds it
    /// ([`Volume::last_link_gone`]; then at [`Volume::release`]).
    pub fn unlink(&self, parent: InodeNo, name: &[u8]) -> Result<()> {
        if name == b"." || name == b".." {
            return Err(Error::InvalidArgument);
        }
        valid_name(name)?;
        let (_guards, mut dir, at) = self.lock_entry(parent, name)?;
        let child = at.ino;
        let mut inode = self.inode_for_write(child)?;
        if inode.kind == Some(FileType::Directory) {
            return Err(Error::IsDir);
        }
        if inode.has_flag(flags::IMMUTABLE) || inode.has_flag(flags::APPEND) {
            return Err(Error::NotPermitted);
        }
        let now = self.now();
        {
            let mut h = self.begin(1 + 2 * INODE_CREDITS + ORPHAN_CREDITS)?;
            let r = self.remove_entry(&mut h, &mut dir, &at).and_then(|_| {
                dir.mtime = now;
                dir.ctime = now;
                self.write_inode(&mut h, &mut dir, false)?;
                inode.links_count = inode.links_count.saturating_sub(1);
                inode.ctime = now;
                if inode.links_count == 0 {
                    self.orphan_add(&mut h, child)?;
                }
                self.write_inode(&mut h, &mut inode, false)
            });
            if let Err(e) = r {
                return Err(h.abort(e));
            }
        }
        if inode.links_count == 0 && !self.last_link_gone(child) {
            self.free_inode_now(&mut inode)?;
        }
        Ok(())
    }

    /// Remove empty directory `name` from `parent` (ENOTDIR for anything
    /// else, ENOTEMPTY unless it holds only "." and "..", EINVAL for
    /// "."). The parent loses a link, its mtime and ctime become now; the
    /// directory is freed, or kept as an orphan while held.
    pub fn rmdir(&self, parent: InodeNo, name: &[u8]) -> Result<()> {
        if name == b"." {
            return Err(Error::InvalidArgument);
        }
        if name == b".." {
            return Err(Error::NotEmpty);
        }
        valid_name(name)?;
        let (_guards, mut dir, at) = self.lock_entry(parent, name)?;
        let child = at.ino;
        let mut inode = self.inode_for_write(child)?;
        if inode.kind != Some(FileType::Directory) {
            return Err(Error::NotDir);
        }
        if child == InodeNo::ROOT {
            return Err(Error::NotPermitted);
        }
        if inode.has_flag(flags::IMMUTABLE) || inode.has_flag(flags::APPEND) {
            return Err(Error::NotPermitted);
        }
        if !self.dir_is_empty(&inode)? {
            return Err(Error::NotEmpty);
        }
        let now = self.now();
        {
            let mut h = self.begin(1 + 2 * INODE_CREDITS + ORPHAN_CREDITS)?;
            let r = self.remove_entry(&mut h, &mut dir, &at).and_then(|_| {
                dir.mtime = now;
                dir.ctime = now;
                self.dec_count(&mut dir);
                self.write_inode(&mut h, &mut dir, false)?;
                inode.links_count = 0;
                inode.size = 0;
                inode.ctime = now;
                self.orphan_add(&mut h, child)?;
                self.write_inode(&mut h, &mut inode, false)
            });
            if let Err(e) = r {
                return Err(h.abort(e));
            }
        }
        if !self.last_link_gone(child) {
            self.free_inode_now(&mut inode)?;
        }
        Ok(())
    }

    /// Set the entry `at` of `dir` to name `ino` of `kind` (the kernel's
    /// `ext4_setent`). One credit.
    fn set_entry(
        &self,
        h: &mut Handle<'_, D>,
        dir: &mut Inode,
        at: &Found,
        ino: InodeNo,
        kind: FileType,
    ) -> Result<()> {
        if at.inline {
            return self.inline_set(dir, at, ino, kind);
        }
        let dir = &*dir;
        let ft = self.dirent_ft(kind);
        let o = at.offset;
        let ok = h.modify(at.pblk, |b| {
            let cur = u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
            if cur != at.ino.0 {
                return false;
            }
            b[o..o + 4].copy_from_slice(&ino.0.to_le_bytes());
            b[o + 7] = ft;
            self.seal_leaf(dir, b);
            true
        })?;
        self.leaf_edited(dir.ino, at.lblk, ok)
    }

    /// Whether directory `anc` is `dir` or one of its ancestors (walking
    /// ".." up to the root; a loop or a damaged chain is corruption).
    fn is_ancestor(&self, anc: InodeNo, mut dir: InodeNo) -> Result<bool> {
        for _ in 0..=u16::MAX {
            if dir == anc {
                return Ok(true);
            }
            if dir == InodeNo::ROOT {
                return Ok(false);
            }
            let up = self.lookup_ino(dir, b"..")?;
            if up == dir {
                return Ok(false);
            }
            dir = up;
        }
        Err(Error::corrupt(
            Object::Inode(dir),
            "\"..\" entries form a loop or a chain too long to be a tree",
        ))
    }

    /// Rename `from_name` in `from_dir` to `to_name` in `to_dir`, as the
    /// kernel does (`flags`: [`RENAME_NOREPLACE`], [`RENAME_EXCHANGE`]):
    /// an existing target is replaced (a directory only by a directory
    /// and only when empty: ENOTDIR, EISDIR, ENOTEMPTY), or with
    /// `RENAME_EXCHANGE` swapped (both must exist). A directory moved to
    /// another parent gets its ".." changed and the parents' link counts
    /// follow; moving one into its own subtree is EINVAL. The same inode
    /// under both names: nothing happens. Times: the parents' mtime and
    /// ctime, the moved (and replaced) inodes' ctime.
    pub fn rename(
        &self,
        from_dir: InodeNo,
        from_name: &[u8],
        to_dir: InodeNo,
        to_name: &[u8],
        flags: u32,
        cred: &Cred,
    ) -> Result<()> {
        if flags & RENAME_WHITEOUT != 0 {
            return Err(Error::Unsupported {
                what: "RENAME_WHITEOUT",
            });
        }
        if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0
            || flags == RENAME_NOREPLACE | RENAME_EXCHANGE
        {
            return Err(Error::InvalidArgument);
        }
        valid_name(from_name)?;
        valid_name(to_name)?;
        let exchange = flags & RENAME_EXCHANGE != 0;
        // Directories move between parents one at a time (the kernel's
        // s_vfs_rename_mutex), so the ancestry checked stays true.
        let _cross = (from_dir != to_dir).then(|| self.inode_locks().rename_lock());
        let locks = self.inode_locks();
        // Lock the parents, find both entries, then lock all four at once
        // and check that nothing moved meanwhile.
        let (mut guards, src, dst) = loop {
            let g = locks.lock(&[from_dir, to_dir]);
            let od = self.dir_for_write(from_dir)?;
            let nd = self.dir_for_write(to_dir)?;
            let src = self.entry_of(&od, from_name)?.ok_or(Error::NotFound)?;
            let dst = self.entry_of(&nd, to_name)?;
            drop(g);
            let mut all = heapless::Vec::<InodeNo, 4>::new();
            let _ = all.push(from_dir);
            let _ = all.push(to_dir);
            let _ = all.push(src.ino);
            if let Some(d) = &dst {
                let _ = all.push(d.ino);
            }
            let g = locks.lock(&all);
            let od = self.dir_for_write(from_dir)?;
            let nd = self.dir_for_write(to_dir)?;
            let src2 = self.entry_of(&od, from_name)?.ok_or(Error::NotFound)?;
            let dst2 = self.entry_of(&nd, to_name)?;
            if src2.ino == src.ino && dst2.map(|d| d.ino) == dst.map(|d| d.ino) {
                break (g, src2, dst2);
            }
        };
        let same_dir = from_dir == to_dir;
        let mut od = self.dir_for_write(from_dir)?;
        let mut nd = if same_dir {
            od.clone()
        } else {
            self.dir_for_write(to_dir)?
        };
        // The VFS's order of checks: flags, ancestry, the same inode,
        // types, emptiness.
        if flags & RENAME_NOREPLACE != 0 && dst.is_some() {
            return Err(Error::Exists);
        }
        if exchange && dst.is_none() {
            return Err(Error::NotFound);
        }
        let mut sinode = self.inode_for_write(src.ino)?;
        let mut dinode = match &dst {
            Some(d) => Some(self.inode_for_write(d.ino)?),
            None => None,
        };
        let s_dir = sinode.kind == Some(FileType::Directory);
        let d_dir = dinode
            .as_ref()
            .is_some_and(|d| d.kind == Some(FileType::Directory));
        if !same_dir {
            // The source must not become its own ancestor; the target
            // must not be an ancestor of the source.
            if s_dir && self.is_ancestor(src.ino, to_dir)? {
                return Err(Error::InvalidArgument);
            }
            if let Some(d) = &dst {
                if d_dir && self.is_ancestor(d.ino, from_dir)? {
                    return Err(if exchange {
                        Error::InvalidArgument
                    } else {
                        Error::NotEmpty
                    });
                }
            }
        }
        if dst.as_ref().is_some_and(|d| d.ino == src.ino) {
            return Ok(());
        }

        if !exchange && dinode.is_some() {
            if s_dir && !d_dir {
                return Err(Error::NotDir);
            }
            if !s_dir && d_dir {
                return Err(Error::IsDir);
            }
        }
        for i in core::iter::once(&sinode).chain(dinode.iter()) {
            if i.has_flag(flags::IMMUTABLE) || i.has_flag(flags::APPEND) {
                return Err(Error::NotPermitted);
            }
        }
        if !exchange && d_dir {
            if let Some(d) = &dinode {
                if !self.dir_is_empty(d)? {
                    return Err(Error::NotEmpty);
                }
            }
        }
        // Link counts of the parents that must grow.
        if !same_dir {
            let grows_new = if exchange {
                s_dir && !d_dir
            } else {
                s_dir && dst.is_none()
            };
            let grows_old = exchange && d_dir && !s_dir;
            if (grows_new && self.dir_link_max(&nd)) || (grows_old && self.dir_link_max(&od)) {
                return Err(Error::TooManyLinks);
            }
        }
        let skind = sinode.kind.unwrap_or(FileType::Regular);
        let now = self.now();
        // Room for a new name first (its own steps); the source entry is
        // found again afterwards (a split may have moved it).
        let slot = if dst.is_none() {
            let slot = self.make_room(&mut nd, to_name, cred)?;
            if same_dir {
                od = nd.clone();
            }
            Some(slot)
        } else {
            None
        };
        let credits = 4 + 4 * INODE_CREDITS + ORPHAN_CREDITS + 2;
        let mut h = self.begin(credits)?;
        let r = (|| -> Result<()> {
            // The new name first, then the old one; in one directory the
            // second change starts from the first (an inline directory
            // changes in the decoded inode).
            match (&dst, exchange) {
                (Some(d), _) => self.set_entry(&mut h, &mut nd, d, src.ino, skind)?,
                (None, _) => {
                    let slot = slot.unwrap_or(Slot::NewBlock);
                    self.place_entry(&mut h, &mut nd, slot, to_name, src.ino, skind)?;
                }
            }
            if same_dir {
                od.clone_from(&nd);
            }
            let s = self.entry_of(&od, from_name)?.ok_or(Error::NotFound)?;
            match (&dst, exchange) {
                (Some(d), true) => {
                    let dk = dinode
                        .as_ref()
                        .and_then(|i| i.kind)
                        .unwrap_or(FileType::Regular);
                    self.set_entry(&mut h, &mut od, &s, d.ino, dk)?;
                }
                _ => self.remove_entry(&mut h, &mut od, &s)?,
            }
            if same_dir {
                nd.clone_from(&od);
            }
            sinode.ctime = now;
            od.mtime = now;
            od.ctime = now;
            nd.mtime = now;
            nd.ctime = now;
            if exchange {
                let di = dinode.as_mut().ok_or(Error::NotFound)?;
                di.ctime = now;
                if !same_dir {
                    if s_dir {
                        self.set_dotdot(&mut h, &mut sinode, to_dir)?;
                    }
                    if d_dir {
                        self.set_dotdot(&mut h, di, from_dir)?;
                    }
                    if s_dir != d_dir {
                        let (shrinks, grows) = if s_dir {
                            (&mut od, &mut nd)
                        } else {
                            (&mut nd, &mut od)
                        };
                        self.dec_count(shrinks);
                        self.inc_count(grows);
                    }
                }
            } else {
                if s_dir {
                    self.set_dotdot(&mut h, &mut sinode, to_dir)?;
                    if same_dir {
                        self.dec_count(&mut nd);
                    } else {
                        self.dec_count(&mut od);
                    }
                    if dinode.is_none() {
                        self.inc_count(&mut nd);
                    }
                }
                if let Some(di) = dinode.as_mut() {
                    di.ctime = now;
                    if d_dir {
                        di.links_count = 0;
                    } else {
                        self.dec_count(di);
                    }
                    if di.links_count == 0 {
                        self.orphan_add(&mut h, di.ino)?;
                    }
                }
            }
            self.write_inode(&mut h, &mut sinode, false)?;
            if let Some(di) = dinode.as_mut() {
                self.write_inode(&mut h, di, false)?;
            }
            if same_dir {
                self.write_inode(&mut h, &mut nd, false)
            } else {
                self.write_inode(&mut h, &mut od, false)?;
                self.write_inode(&mut h, &mut nd, false)
            }
        })();
        if let Err(e) = r {
            return Err(h.abort(e));
        }
        drop(h);
        guards.clear();
        if let Some(mut di) = dinode.filter(|d| d.links_count == 0 && !exchange) {
            let ino = di.ino;
            if !self.last_link_gone(ino) {
                let _locks = self.inode_locks().lock(&[ino]);
                self.free_inode_now(&mut di)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_as_the_kernel_encodes_them() {
        let mut b = [0u8; 60];
        store_rdev(&mut b, 8, 1);
        assert_eq!(u32::from_le_bytes([b[0], b[1], b[2], b[3]]), 0x801);
        assert_eq!(&b[4..8], &[0; 4]);
        store_rdev(&mut b, 259, 70000);
        assert_eq!(&b[0..4], &[0; 4]);
        let new = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        // The reader's decoding gives the numbers back.
        assert_eq!((new & 0xfff00) >> 8, 259);
        assert_eq!((new & 0xff) | ((new >> 12) & 0xfff00), 70000);
        assert!(valid_dev(4095, (1 << 20) - 1));
        assert!(!valid_dev(4096, 0));
    }

    #[test]
    fn inherited_flags_by_type() {
        let parent = flags::NODUMP | flags::SYNC | 0x10000 | flags::INDEX | flags::EXTENTS;
        assert_eq!(
            inherited(parent, S_IFDIR),
            flags::NODUMP | flags::SYNC | 0x10000
        );
        assert_eq!(inherited(parent, S_IFREG), flags::NODUMP | flags::SYNC);
        assert_eq!(inherited(parent, S_IFCHR), flags::NODUMP);
    }
}
