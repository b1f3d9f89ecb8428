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

/// What [`Volume::xattrs`] does with the values.
#[derive(Clone, Copy, PartialEq)]
enum Values {
    /// Names only.
    Skip,
    /// Read them, EA inodes checked as the kernel checks them on access.
    Read,
    /// The offline check: inline values read, EA inode references held to
    /// e2fsck's rules only (their values are not read).
    Check,
}

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
        values: Values,
    ) -> Result<Vec<Resolved>> {
        let mut out = Vec::new();
        let mut add = |index: u8, name: &[u8], value: &XattrValue<'_>| -> Result<()> {
            if let Some((wi, wn)) = want {
                if wi != index || wn != name {
                    return Ok(());
                }
            }
            let value = match (values, *value) {
                (Values::Skip, _) => Vec::new(),
                (_, XattrValue::Inline(v)) => v.to_vec(),
                (Values::Read, XattrValue::EaInode { ino, size }) => {
                    self.ea_inode_value(inode.ino, ino, size)?
                }
                (Values::Check, XattrValue::EaInode { ino, .. }) => {
                    self.ea_inode_ref_e2fsck(inode.ino, ino)?;
                    Vec::new()
                }
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

    /// e2fsck's rules for an entry whose value lives in EA inode `ea_ino`
    /// (pass 1, check_large_ea_inode): a non-reserved inode number within
    /// the filesystem, and an inode flagged EA_INODE. Unlike the kernel on
    /// access, e2fsck asks neither for the ea_inode feature nor for a value
    /// size equal to the inode's (nor a non-zero one).
    fn ea_inode_ref_e2fsck(&self, owner: InodeNo, ea_ino: InodeNo) -> Result<()> {
        let sb = self.sb();
        if ea_ino.0 < sb.first_ino || ea_ino.0 > sb.inodes_count || ea_ino == owner {
            return Err(Error::corrupt(
                Object::Inode(owner),
                "xattr value refers to an invalid EA inode",
            ));
        }
        let ea = self.live_inode(ea_ino)?;
        if !ea.has_flag(flags::EA_INODE) {
            return Err(Error::corrupt(
                Object::Inode(ea_ino),
                "inode holding an xattr value lacks the EA_INODE flag",
            ));
        }
        Ok(())
    }

    /// Whether an in-inode xattr of `inode` keeps its value in an EA inode
    /// (the offline check; an xattr block's entries are not looked at).
    pub(crate) fn refers_to_ea_inodes(&self, inode: &Inode) -> bool {
        xattr::parse_ibody(inode.ibody(), inode.ino).is_ok_and(|v| {
            v.iter()
                .any(|e| matches!(e.value, XattrValue::EaInode { .. }))
        })
    }

    /// The offline check of `inode`'s xattrs: both areas parsed, inline
    /// values (ACLs decoded) read, EA inode references held to e2fsck's
    /// rules.
    pub(crate) fn check_xattr_values(&self, inode: &Inode) -> Result<()> {
        for a in self.xattrs(inode, None, Values::Check)? {
            if a.index == ACL_ACCESS || a.index == ACL_DEFAULT {
                acl::disk_to_xattr(&a.value, inode.ino)?;
            }
        }
        Ok(())
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
        let found = self.xattrs(&inode, Some((index, suffix)), Values::Read)?;
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
        for a in self.xattrs(&inode, None, Values::Skip)? {
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
