//! The Volume's extended attribute operations: in-inode entries first, then
//! the xattr block, with values in `ea_inode`s read through the block map.

use alloc::vec;
use alloc::vec::Vec;

use super::format::{self as xattr, XattrValue};
use crate::acl;
use crate::device::BlockDevice;
use crate::error::{Error, Object, Result};
use crate::features::incompat;
use crate::inode::{flags, Inode};
use crate::numbers::{InodeNo, PhysBlock};
use crate::volume::Volume;

/// Index of `system.` names; `system.data` (inline data) is never listed.
const SYSTEM_INDEX: u8 = 7;
const ACL_ACCESS: u8 = 2;
const ACL_DEFAULT: u8 = 3;

/// One attribute with its value resolved.
struct Resolved {
    index: u8,
    name: Vec<u8>,
    value: Vec<u8>,
}

impl<D: BlockDevice> Volume<D> {
    /// The extended attributes of `inode` (only `want` if given), with
    /// values resolved when `values` is set.
    fn xattrs(
        &self,
        inode: &Inode,
        want: Option<(u8, &[u8])>,
        values: bool,
    ) -> Result<Vec<Resolved>> {
        let mut out = Vec::new();
        let mut add = |index: u8, name: &[u8], value: &XattrValue<'_>| -> Result<()> {
            if let Some((wi, wn)) = want {
                if wi != index || wn != name {
                    return Ok(());
                }
            }
            let value = match *value {
                _ if !values => Vec::new(),
                XattrValue::Inline(v) => v.to_vec(),
                XattrValue::EaInode { ino, size } => self.ea_inode_value(inode.ino, ino, size)?,
            };
            out.push(Resolved {
                index,
                name: name.to_vec(),
                value,
            });
            Ok(())
        };
        if !inode.ibody().is_empty() {
            for e in xattr::parse_ibody(inode.ibody(), inode.ino)? {
                add(e.index, e.name, &e.value)?;
            }
        }
        self.with_xattr_block(inode, |b, blk| {
            for e in xattr::parse_block(b, blk)? {
                add(e.index, e.name, &e.value)?;
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Call `f` with the xattr block of `inode` (if it has one), checked:
    /// inside the filesystem, its checksum (unless checksums are ignored).
    pub(crate) fn with_xattr_block<R>(
        &self,
        inode: &Inode,
        f: impl FnOnce(&[u8], PhysBlock) -> Result<R>,
    ) -> Result<Option<R>> {
        if inode.file_acl == 0 {
            return Ok(None);
        }
        let blk = PhysBlock(inode.file_acl);
        if !self.blocks_in_fs(blk, 1) {
            return Err(Error::corrupt(
                Object::Inode(inode.ino),
                "xattr block lies outside the filesystem",
            ));
        }
        let seed = self.sb().csum_seed;
        let check = self.sb().metadata_csum() && self.check_csums();
        self.cache_read_with(blk, |b| -> Result<R> {
            if check && !xattr::verify_block_checksum(b, blk, seed) {
                return Err(Error::Checksum {
                    object: Object::Block(blk),
                });
            }
            f(b, blk)
        })?
        .map(Some)
    }

    /// The value stored in EA inode `ea_ino` for an attribute of `owner`.
    fn ea_inode_value(&self, owner: InodeNo, ea_ino: InodeNo, size: u32) -> Result<Vec<u8>> {
        let bad = |what| Error::corrupt(Object::Inode(owner), what);
        if !self.sb().has_incompat(incompat::EA_INODE) {
            return Err(bad(
                "xattr value in an EA inode without the ea_inode feature",
            ));
        }
        if ea_ino == owner || ea_ino.0 < self.sb().first_ino {
            return Err(bad("xattr value refers to an invalid EA inode"));
        }
        let ea = self.live_inode(ea_ino)?;
        if !ea.has_flag(flags::EA_INODE) {
            return Err(Error::corrupt(
                Object::Inode(ea_ino),
                "inode holding an xattr value lacks the EA_INODE flag",
            ));
        }
        if ea.size != size as u64 {
            return Err(Error::corrupt(
                Object::Inode(ea_ino),
                "EA inode size does not match the xattr entry",
            ));
        }
        let mut v = vec![0u8; size as usize];
        let n = self.read_inode(&ea, 0, &mut v)?;
        v.truncate(n);
        Ok(v)
    }

    /// Full name, e.g. `user.foo`, `security.selinux`, `system.posix_acl_access`.
    /// POSIX ACLs come back in the Linux xattr format.
    pub fn getxattr(&self, ino: InodeNo, name: &[u8]) -> Result<Vec<u8>> {
        let inode = self.live_inode(ino)?;
        let Some((index, suffix)) = xattr::split_name(name) else {
            return Err(Error::NoData);
        };
        if index == SYSTEM_INDEX && suffix == b"data" {
            return Err(Error::NoData);
        }
        let found = self.xattrs(&inode, Some((index, suffix)), true)?;
        let a = found.into_iter().next().ok_or(Error::NoData)?;
        if a.index == ACL_ACCESS || a.index == ACL_DEFAULT {
            // An ACL with no entries is no ACL at all, as the kernel answers.
            let v = acl::disk_to_xattr(&a.value, ino)?;
            return if v.is_empty() {
                Err(Error::NoData)
            } else {
                Ok(v)
            };
        }
        Ok(a.value)
    }

    /// Full names of all attributes.
    pub fn listxattr(&self, ino: InodeNo) -> Result<Vec<Vec<u8>>> {
        let inode = self.live_inode(ino)?;
        let mut names = Vec::new();
        for a in self.xattrs(&inode, None, false)? {
            if a.index == SYSTEM_INDEX && a.name == b"data" {
                continue;
            }
            if let Some(full) = xattr::full_name(a.index, &a.name) {
                names.push(full);
            }
        }
        Ok(names)
    }
}
