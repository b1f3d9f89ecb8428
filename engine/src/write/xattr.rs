//! Extended attribute writes, as the kernel's `ext4_xattr_set_handle`
//! makes them: a value goes into the inode body when it fits there, else
//! into the xattr block (moving out of the other place); the block keeps
//! its entries sorted, each with its hash, the block hash and checksum; a
//! block shared by several inodes is copied before it changes (its
//! refcount lowered), and freed with its last reference. POSIX ACLs
//! (`system.posix_acl_access`/`_default`) are stored in ext4's own format
//! and keep the mode in step (`posix_acl_update_mode`, `posix_acl_chmod`);
//! new objects inherit their directory's default ACL
//! (`posix_acl_create`).
//!
//! Values in `ea_inode`s are not written (the feature refuses a
//! read-write open). Memory: the attributes of one inode (at most an
//! inode body and a block).

use alloc::vec;
use alloc::vec::Vec;

use crate::acl::{self, AclEntry};
use crate::allocator::ALLOC_CREDITS;
use crate::attr::FileType;
use crate::device::BlockDevice;
use crate::error::{Error, Object, Result};
use crate::inode::Inode;
use crate::numbers::{InodeNo, PhysBlock};
use crate::txn::Handle;
use crate::volume::Volume;
use crate::writable::Cred;
use crate::xattr::{self, XattrValue, XATTR_MAGIC};

/// `setxattr` flag: fail if the attribute exists (EEXIST).
pub const XATTR_CREATE: u32 = 1;
/// `setxattr` flag: fail unless the attribute exists (ENODATA).
pub const XATTR_REPLACE: u32 = 2;
/// The largest value the xattr interface passes (`XATTR_SIZE_MAX`).
pub const VALUE_MAX: usize = 65536;
/// The longest full name (`XATTR_NAME_MAX`).
pub const NAME_MAX: usize = 255;

const USER: u8 = 1;
const ACL_ACCESS: u8 = 2;
const ACL_DEFAULT: u8 = 3;
const TRUSTED: u8 = 4;
const SECURITY: u8 = 6;

const BLOCK_HEADER: usize = 32;
const ENTRY: usize = 16;

/// One attribute, its value resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Xattr {
    pub index: u8,
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

fn entry_len(name_len: usize) -> usize {
    pad4(ENTRY + name_len)
}

/// Bytes a set of entries and values needs (table, terminator, values).
fn needs(list: &[Xattr]) -> usize {
    list.iter()
        .map(|x| entry_len(x.name.len()) + pad4(x.value.len()))
        .sum::<usize>()
        + 4
}

/// Lay `list` out in `region`: the table from `first`, values packed down
/// from the end, offsets from `base`. `hashes`: block entries carry
/// theirs. The caller checked that it fits.
fn lay_out(region: &mut [u8], first: usize, base: usize, list: &[Xattr], hashes: bool) {
    let mut pos = first;
    let mut vend = region.len();
    for x in list {
        let offs = if x.value.is_empty() {
            0
        } else {
            vend -= pad4(x.value.len());
            region[vend..vend + x.value.len()].copy_from_slice(&x.value);
            vend - base
        };
        let hash = if hashes {
            xattr::entry_hash(&x.name, &x.value)
        } else {
            0
        };
        region[pos] = x.name.len() as u8;
        region[pos + 1] = x.index;
        region[pos + 2..pos + 4].copy_from_slice(&(offs as u16).to_le_bytes());
        region[pos + 4..pos + 8].fill(0);
        region[pos + 8..pos + 12].copy_from_slice(&(x.value.len() as u32).to_le_bytes());
        region[pos + 12..pos + 16].copy_from_slice(&hash.to_le_bytes());
        region[pos + 16..pos + 16 + x.name.len()].copy_from_slice(&x.name);
        pos += entry_len(x.name.len());
    }
}

/// The in-inode area (`len` bytes) holding `list`; all zero when empty
/// (no magic), as the kernel leaves it.
fn encode_ibody(list: &[Xattr], len: usize) -> Option<Vec<u8>> {
    let mut r = vec![0u8; len];
    if list.is_empty() {
        return Some(r);
    }
    if len < 4 || needs(list) > len - 4 {
        return None;
    }
    r[..4].copy_from_slice(&XATTR_MAGIC.to_le_bytes());
    lay_out(&mut r[4..], 0, 0, list, false);
    Some(r)
}

/// The attributes of an in-inode region `region` of inode `ino`, for a
/// change (values in `ea_inode`s are refused).
fn ibody_list(region: &[u8], ino: InodeNo) -> Result<Vec<Xattr>> {
    if region.is_empty() {
        return Ok(Vec::new());
    }
    xattr::parse_ibody(region, ino)?
        .iter()
        .map(resolve)
        .collect()
}

/// An attribute as found, its value owned (values in `ea_inode`s are
/// refused: the feature is not written).
fn resolve(e: &xattr::XattrEntry<'_>) -> Result<Xattr> {
    match e.value {
        XattrValue::Inline(v) => Ok(Xattr {
            index: e.index,
            name: e.name.to_vec(),
            value: v.to_vec(),
        }),
        XattrValue::EaInode { .. } => Err(Error::Unsupported {
            what: "changing the attributes of an inode with values in EA inodes",
        }),
    }
}

/// The largest value attribute `index`+`name` could have in in-inode
/// region `region` (the room the other entries leave, its own entry
/// included), as the kernel's `get_max_inline_xattr_value_size` counts
/// it. 0 when even the entry does not fit. (Inline data's `system.data`.)
pub(crate) fn ibody_room(region: &[u8], ino: InodeNo, index: u8, name: &[u8]) -> Result<usize> {
    let mut list = ibody_list(region, ino)?;
    list.retain(|x| !(x.index == index && x.name == name));
    let need = 4 + needs(&list) + entry_len(name.len());
    Ok(region.len().saturating_sub(need) & !3)
}

/// The value of attribute `index`+`name` in in-inode region `region`.
pub(crate) fn ibody_get(
    region: &[u8],
    ino: InodeNo,
    index: u8,
    name: &[u8],
) -> Result<Option<Vec<u8>>> {
    Ok(ibody_list(region, ino)?
        .into_iter()
        .find(|x| x.index == index && x.name == name)
        .map(|x| x.value))
}

/// In-inode region `region` with attribute `index`+`name` set to `value`
/// (`None`: removed), every other entry kept in place. `None` when it
/// does not fit (the caller's region is unchanged).
pub(crate) fn ibody_set(
    region: &[u8],
    ino: InodeNo,
    index: u8,
    name: &[u8],
    value: Option<&[u8]>,
) -> Result<Option<Vec<u8>>> {
    let mut list = ibody_list(region, ino)?;
    let at = list.iter().position(|x| x.index == index && x.name == name);
    match (at, value) {
        (Some(i), None) => {
            list.remove(i);
        }
        (None, None) => return Ok(Some(region.to_vec())),
        (at, Some(v)) => {
            let x = Xattr {
                index,
                name: name.to_vec(),
                value: v.to_vec(),
            };
            match at {
                Some(i) => list[i] = x,
                None => list.push(x),
            }
        }
    }
    Ok(encode_ibody(&list, region.len()))
}

/// An xattr block of `bs` bytes at `blk` holding `list` (sorted), with
/// `refcount`, the hashes and the checksum.
fn encode_block(list: &[Xattr], bs: usize, blk: u64, refcount: u32, csum: Option<u32>) -> Vec<u8> {
    let mut b = vec![0u8; bs];
    b[0..4].copy_from_slice(&XATTR_MAGIC.to_le_bytes());
    b[4..8].copy_from_slice(&refcount.to_le_bytes());
    b[8..12].copy_from_slice(&1u32.to_le_bytes());
    lay_out(&mut b, BLOCK_HEADER, 0, list, true);
    let h = xattr::block_hash(list.iter().map(|x| xattr::entry_hash(&x.name, &x.value)));
    b[12..16].copy_from_slice(&h.to_le_bytes());
    if let Some(seed) = csum {
        if let Some(c) = xattr::block_checksum(&b, PhysBlock(blk), seed) {
            b[16..20].copy_from_slice(&c.to_le_bytes());
        }
    }
    b
}

fn fits_block(list: &[Xattr], bs: usize) -> bool {
    BLOCK_HEADER + needs(list) <= bs
}

/// The kernel's order of block entries: index, name length, name.
fn block_order(a: &Xattr, b: &Xattr) -> core::cmp::Ordering {
    (a.index, a.name.len(), &a.name).cmp(&(b.index, b.name.len(), &b.name))
}

/// What a name means for writing: (index, suffix), or the error the
/// kernel answers for it.
fn parse_name(full: &[u8]) -> Result<(u8, &[u8])> {
    if full.len() > NAME_MAX {
        return Err(Error::Range);
    }
    let (index, suffix) = xattr::split_name(full).ok_or(Error::Unsupported {
        what: "extended attributes outside the user, trusted, security and POSIX ACL namespaces",
    })?;
    match index {
        USER | TRUSTED | SECURITY if suffix.is_empty() => Err(Error::InvalidArgument),
        USER | TRUSTED | SECURITY => Ok((index, suffix)),
        ACL_ACCESS | ACL_DEFAULT if suffix.is_empty() => Ok((index, suffix)),
        _ => Err(Error::Unsupported {
            what:
                "extended attributes outside the user, trusted, security and POSIX ACL namespaces",
        }),
    }
}

/// An inode's attributes as found: in its body and in its block.
pub(crate) struct Found {
    pub ibody: Vec<Xattr>,
    pub block: Vec<Xattr>,
    pub refcount: u32,
}

impl<D: BlockDevice> Volume<D> {
    /// The attributes of `inode`, checked, for a change (values in
    /// `ea_inode`s are refused).
    pub(crate) fn xattrs_for_write(&self, inode: &Inode) -> Result<Found> {
        let mut f = Found {
            ibody: ibody_list(inode.ibody(), inode.ino)?,
            block: Vec::new(),
            refcount: 0,
        };
        self.with_xattr_block(inode, |b, blk| {
            f.refcount = xattr::block_header(b, blk)?.h_refcount.get();
            for e in xattr::parse_block(b, blk)? {
                f.block.push(resolve(&e)?);
            }
            Ok(())
        })?;
        Ok(f)
    }

    /// Set extended attribute `name` of `ino` to `value` (`flags`:
    /// [`XATTR_CREATE`], [`XATTR_REPLACE`]), with the kernel's answers:
    /// ERANGE for a name over 255 bytes, E2BIG for a value over 64 KiB,
    /// ENOSPC when it fits neither the inode nor the block, EOPNOTSUPP
    /// outside the user/trusted/security/ACL namespaces, EPERM for
    /// `user.` on what is not a file or directory, EACCES for a default
    /// ACL on a non-directory. POSIX ACLs come in the xattr format and
    /// update the mode (an ACL the mode says all of is not stored).
    /// Permission checks are the caller's.
    pub fn setxattr(
        &self,
        ino: InodeNo,
        name: &[u8],
        value: &[u8],
        flags: u32,
        cred: &Cred,
    ) -> Result<()> {
        if flags & !(XATTR_CREATE | XATTR_REPLACE) != 0 {
            return Err(Error::InvalidArgument);
        }
        if value.len() > VALUE_MAX {
            return Err(Error::TooBig);
        }
        let (index, suffix) = parse_name(name)?;
        let _locks = self.inode_locks().lock(&[ino]);
        let mut inode = self.inode_for_write(ino)?;
        self.xattr_allowed(&inode, index, true)?;
        if index == ACL_ACCESS || index == ACL_DEFAULT {
            let disk = acl::xattr_to_disk(value)?;
            let acl = acl::parse_disk(&disk, inode.ino)?;
            return self.set_acl_locked(&mut inode, index, &acl, flags, cred);
        }
        self.set_locked(&mut inode, index, suffix, Some(value), flags, cred, None)
    }

    /// Remove extended attribute `name` of `ino` (ENODATA when absent).
    pub fn removexattr(&self, ino: InodeNo, name: &[u8]) -> Result<()> {
        let (index, suffix) = parse_name(name)?;
        let _locks = self.inode_locks().lock(&[ino]);
        let mut inode = self.inode_for_write(ino)?;
        self.xattr_allowed(&inode, index, false)?;
        self.set_locked(
            &mut inode,
            index,
            suffix,
            None,
            XATTR_REPLACE,
            &Cred::ROOT,
            None,
        )
    }

    /// The kernel's per-object rules for a namespace.
    fn xattr_allowed(&self, inode: &Inode, index: u8, set: bool) -> Result<()> {
        let kind = inode.kind;
        match index {
            USER if !matches!(kind, Some(FileType::Regular | FileType::Directory)) => {
                Err(Error::NotPermitted)
            }
            ACL_ACCESS | ACL_DEFAULT if kind == Some(FileType::Symlink) => {
                Err(Error::Unsupported {
                    what: "POSIX ACLs on symbolic links",
                })
            }
            ACL_DEFAULT if set && kind != Some(FileType::Directory) => Err(Error::PermissionDenied),
            _ => Ok(()),
        }
    }

    /// Store `acl` (empty: none) as `inode`'s ACL of `index`; an access
    /// ACL first sets the mode's permission bits from it and is dropped
    /// when the mode says all of it (`posix_acl_update_mode`).
    fn set_acl_locked(
        &self,
        inode: &mut Inode,
        index: u8,
        acl: &[AclEntry],
        flags: u32,
        cred: &Cred,
    ) -> Result<()> {
        let mut mode = None;
        let mut store = !acl.is_empty();
        if index == ACL_ACCESS && store {
            let (bits, not_equiv) = acl::equiv_mode(acl);
            mode = Some((inode.mode & !0o777) | bits);
            store = not_equiv;
        }
        let value = store.then(|| acl::to_disk(acl));
        let r = self.set_locked(inode, index, b"", value.as_deref(), flags, cred, mode);
        match r {
            // Removing an ACL that is not there is no error.
            Err(Error::NoData) if value.is_none() && flags & XATTR_REPLACE == 0 => {
                if let Some(m) = mode.filter(|&m| m != inode.mode) {
                    self.set_mode_only(inode, m)?;
                }
                Ok(())
            }
            r => r,
        }
    }

    fn set_mode_only(&self, inode: &mut Inode, mode: u16) -> Result<()> {
        let mut h = self.begin(1)?;
        inode.mode = mode;
        inode.ctime = self.now();
        if let Err(e) = self.write_inode(&mut h, inode, false) {
            return Err(h.abort(e));
        }
        Ok(())
    }

    /// Set (`Some`) or remove (`None`) attribute (index, name) of the
    /// locked `inode`, and its mode if `mode` says so, in one handle.
    #[allow(clippy::too_many_arguments)]
    fn set_locked(
        &self,
        inode: &mut Inode,
        index: u8,
        name: &[u8],
        value: Option<&[u8]>,
        flags: u32,
        cred: &Cred,
        mode: Option<u16>,
    ) -> Result<()> {
        let cur = self.xattrs_for_write(inode)?;
        let is = |x: &Xattr| x.index == index && x.name == name;
        let in_body = cur.ibody.iter().position(is);
        let in_block = cur.block.iter().position(is);
        let exists = in_body.is_some() || in_block.is_some();
        if flags & XATTR_REPLACE != 0 && !exists {
            return Err(Error::NoData);
        }
        if flags & XATTR_CREATE != 0 && exists {
            return Err(Error::Exists);
        }
        if value.is_none() && !exists {
            return Err(Error::NoData);
        }
        let same = match (in_body, in_block, value) {
            (Some(i), _, Some(v)) => cur.ibody[i].value == v,
            (None, Some(i), Some(v)) => cur.block[i].value == v,
            _ => false,
        };
        if same {
            // The kernel leaves an unchanged value (and ctime) alone.
            return match mode.filter(|&m| m != inode.mode) {
                Some(m) => self.set_mode_only(inode, m),
                None => Ok(()),
            };
        }
        let isize = self.sb().inode_size as usize;
        let body_len = inode.ibody_len(isize);
        let bs = self.sb().block_size as usize;
        let mut body = cur.ibody.clone();
        let mut block = cur.block.clone();
        match value {
            None => {
                body.retain(|x| !is(x));
                block.retain(|x| !is(x));
            }
            Some(v) => {
                let x = Xattr {
                    index,
                    name: name.to_vec(),
                    value: v.to_vec(),
                };
                // The inode body first (replacing in place, else at the
                // end), else the block (sorted); out of the other place.
                let mut b2 = body.clone();
                match b2.iter().position(is) {
                    Some(i) => b2[i] = x.clone(),
                    None => b2.push(x.clone()),
                }
                if body_len > 0 && encode_ibody(&b2, body_len).is_some() {
                    body = b2;
                    block.retain(|x| !is(x));
                } else {
                    block.retain(|x| !is(x));
                    let at = block
                        .binary_search_by(|y| block_order(y, &x))
                        .unwrap_or_else(|i| i);
                    block.insert(at, x);
                    if !fits_block(&block, bs) {
                        return Err(Error::NoSpace);
                    }
                    body.retain(|x| !is(x));
                }
            }
        }
        let body_changed = body != cur.ibody;
        let block_changed = block != cur.block;
        let credits = 1 + ALLOC_CREDITS + 2;
        let mut h = self.begin(credits)?;
        // Allocation first: a new block when none is ours alone.
        let new_block =
            if block_changed && !block.is_empty() && (inode.file_acl == 0 || cur.refcount > 1) {
                let goal = self.inode_goal(inode.ino, false);
                Some(self.alloc_blocks(&mut h, goal, 1, cred, false)?.0)
            } else {
                None
            };
        let r = (|| -> Result<()> {
            if body_changed {
                let area = encode_ibody(&body, body_len).ok_or(Error::corrupt(
                    Object::Inode(inode.ino),
                    "in-inode attributes no longer fit",
                ))?;
                inode.set_ibody(area);
            }
            if block_changed {
                self.store_xattr_block(&mut h, inode, &block, cur.refcount, new_block)?;
            }
            if let Some(m) = mode {
                inode.mode = m;
            }
            inode.ctime = self.now();
            self.write_inode(&mut h, inode, false)
        })();
        if let Err(e) = r {
            return Err(h.abort(e));
        }
        Ok(())
    }

    /// Write `list` as `inode`'s xattr block: in place when the block is
    /// its own, else into `new` (allocated by the caller) with the shared
    /// one's refcount lowered; an empty list drops the reference.
    fn store_xattr_block(
        &self,
        h: &mut Handle<'_, D>,
        inode: &mut Inode,
        list: &[Xattr],
        refcount: u32,
        new: Option<PhysBlock>,
    ) -> Result<()> {
        let bs = self.sb().block_size as usize;
        let seed = self.sb().metadata_csum().then_some(self.sb().csum_seed);
        if list.is_empty() {
            return self.drop_xattr_block(h, inode);
        }
        match new {
            Some(b) => {
                let bytes = encode_block(list, bs, b.0, 1, seed);
                h.create(b, |x| x.copy_from_slice(&bytes))?;
                if inode.file_acl != 0 && refcount > 1 {
                    // Copy on write: the others keep the old block.
                    self.drop_xattr_block(h, inode)?;
                }
                inode.file_acl = b.0;
                // A whole cluster under `bigalloc`, as the kernel counts it.
                inode.blocks_512 += self.sb().cluster_size as u64 / 512;
            }
            None => {
                let blk = inode.file_acl;
                let bytes = encode_block(list, bs, blk, 1, seed);
                h.modify(PhysBlock(blk), |x| x.copy_from_slice(&bytes))?;
            }
        }
        Ok(())
    }

    /// The default ACL of directory `dir`, if it has one.
    pub(crate) fn default_acl(&self, dir: &Inode) -> Result<Option<Vec<AclEntry>>> {
        if !self.sb().has_compat(crate::features::compat::EXT_ATTR) {
            return Ok(None);
        }
        let f = match self.xattrs_for_write(dir) {
            Ok(f) => f,
            Err(Error::Unsupported { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(x) = f
            .ibody
            .iter()
            .chain(f.block.iter())
            .find(|x| x.index == ACL_DEFAULT && x.name.is_empty())
        else {
            return Ok(None);
        };
        let acl = acl::parse_disk(&x.value, dir.ino)?;
        Ok((!acl.is_empty()).then_some(acl))
    }

    /// A new object's permission bits and inherited ACLs from directory
    /// `dir` (the kernel's `posix_acl_create`): with a default ACL, the
    /// mode and the ACL limit each other (no umask), directories also
    /// inherit the default ACL itself; without one, the umask applies.
    /// Symbolic links get neither. Returns the mode and the attributes.
    pub(crate) fn inherit(&self, dir: &Inode, mode: u16, cred: &Cred) -> Result<(u16, Vec<Xattr>)> {
        if FileType::from_mode(mode) == Some(FileType::Symlink) {
            return Ok((mode, Vec::new()));
        }
        let Some(default) = self.default_acl(dir)? else {
            return Ok((mode & !(cred.umask & 0o777), Vec::new()));
        };
        let mut m = mode;
        let mut access = default.clone();
        let mut out = Vec::new();
        if acl::create_masq(&mut access, &mut m) {
            out.push(Xattr {
                index: ACL_ACCESS,
                name: Vec::new(),
                value: acl::to_disk(&access),
            });
        }
        if FileType::from_mode(mode) == Some(FileType::Directory) {
            out.push(Xattr {
                index: ACL_DEFAULT,
                name: Vec::new(),
                value: acl::to_disk(&default),
            });
        }
        Ok((m, out))
    }

    /// Place the inherited attributes of a new inode: in its body when
    /// they fit, else in a new block (`block`, allocated by the caller
    /// when [`Volume::new_xattrs_need_block`] said so).
    pub(crate) fn place_new_xattrs(
        &self,
        h: &mut Handle<'_, D>,
        inode: &mut Inode,
        list: &[Xattr],
        block: Option<PhysBlock>,
    ) -> Result<()> {
        if list.is_empty() {
            return Ok(());
        }
        let body_len = inode.ibody_len(self.sb().inode_size as usize);
        if let Some(area) = (body_len > 0)
            .then(|| encode_ibody(list, body_len))
            .flatten()
        {
            inode.set_ibody(area);
            return Ok(());
        }
        let mut sorted = list.to_vec();
        sorted.sort_by(block_order);
        let b = block.ok_or(Error::NoSpace)?;
        self.store_xattr_block(h, inode, &sorted, 0, Some(b))
    }

    /// Whether the inherited attributes of a new inode with `extra_isize`
    /// need a block (they do not fit its body).
    pub(crate) fn new_xattrs_need_block(&self, list: &[Xattr], body_len: usize) -> Result<bool> {
        if list.is_empty() {
            return Ok(false);
        }
        if body_len > 0 && encode_ibody(list, body_len).is_some() {
            return Ok(false);
        }
        if !fits_block(list, self.sb().block_size as usize) {
            return Err(Error::NoSpace);
        }
        Ok(true)
    }

    /// Whether a new directory with inherited attributes `list` and an
    /// in-inode area of `body_len` bytes can be inline (`inline_data`):
    /// an empty `system.data` fits beside what goes into its body (the
    /// kernel's `ext4_try_create_inline_dir`, after the ACLs).
    pub(crate) fn inline_dir_fits(&self, list: &[Xattr], body_len: usize) -> Result<bool> {
        if body_len == 0
            || !self
                .sb()
                .has_incompat(crate::features::incompat::INLINE_DATA)
        {
            return Ok(false);
        }
        let region = (!list.is_empty())
            .then(|| encode_ibody(list, body_len))
            .flatten()
            .unwrap_or_else(|| vec![0u8; body_len]);
        let data = crate::inline::DATA_NAME;
        let system = crate::inline::SYSTEM_INDEX;
        Ok(ibody_set(&region, InodeNo(0), system, data, Some(&[]))?.is_some())
    }

    /// `chmod` keeps the access ACL in step (`posix_acl_chmod`): called
    /// with the inode locked, inside the caller's handle (two credits
    /// and, for a shared block, an allocation).
    pub(crate) fn chmod_acl(
        &self,
        h: &mut Handle<'_, D>,
        inode: &mut Inode,
        cred: &Cred,
    ) -> Result<()> {
        if !self.sb().has_compat(crate::features::compat::EXT_ATTR)
            || inode.kind == Some(FileType::Symlink)
        {
            return Ok(());
        }
        let cur = match self.xattrs_for_write(inode) {
            Ok(c) => c,
            Err(Error::Unsupported { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let is = |x: &Xattr| x.index == ACL_ACCESS && x.name.is_empty();
        let Some(x) = cur.ibody.iter().chain(cur.block.iter()).find(|x| is(x)) else {
            return Ok(());
        };
        let mut a = acl::parse_disk(&x.value, inode.ino)?;
        if a.is_empty() {
            return Ok(());
        }
        acl::chmod(&mut a, inode.mode);
        let value = acl::to_disk(&a);
        let mut body = cur.ibody.clone();
        let mut block = cur.block.clone();
        for y in body.iter_mut().chain(block.iter_mut()).filter(|y| is(y)) {
            y.value = value.clone();
        }
        // Same size: it fits where it was.
        if body != cur.ibody {
            let len = inode.ibody_len(self.sb().inode_size as usize);
            let area = encode_ibody(&body, len).ok_or(Error::corrupt(
                Object::Inode(inode.ino),
                "in-inode attributes no longer fit",
            ))?;
            inode.set_ibody(area);
        }
        if block != cur.block {
            let new = if cur.refcount > 1 {
                let goal = self.inode_goal(inode.ino, false);
                Some(self.alloc_blocks(h, goal, 1, cred, false)?.0)
            } else {
                None
            };
            self.store_xattr_block(h, inode, &block, cur.refcount, new)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x(index: u8, name: &str, v: &[u8]) -> Xattr {
        Xattr {
            index,
            name: name.as_bytes().to_vec(),
            value: v.to_vec(),
        }
    }

    #[test]
    fn regions_round_trip_through_the_parsers() {
        let list = vec![
            x(1, "a", b"hello"),
            x(1, "empty", b""),
            x(6, "selinux", b"label\0"),
        ];
        let body = encode_ibody(&list, 96).unwrap();
        let back = xattr::parse_ibody(&body, InodeNo(12)).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back[0].value, XattrValue::Inline(b"hello"));
        assert_eq!(back[0].hash, 0);
        assert!(encode_ibody(&list, 40).is_none(), "too small a body");
        assert_eq!(encode_ibody(&[], 96).unwrap(), vec![0u8; 96]);
        let mut sorted = list.clone();
        sorted.sort_by(block_order);
        let blk = encode_block(&sorted, 1024, 77, 1, Some(0x1234));
        assert!(xattr::verify_block_checksum(&blk, PhysBlock(77), 0x1234));
        let es = xattr::parse_block(&blk, PhysBlock(77)).unwrap();
        assert_eq!(es.len(), 3);
        for e in &es {
            let XattrValue::Inline(v) = e.value else {
                panic!()
            };
            assert_eq!(e.hash, xattr::entry_hash(e.name, v));
        }
        let hdr = xattr::block_header(&blk, PhysBlock(77)).unwrap();
        assert_eq!(
            hdr.h_hash.get(),
            xattr::block_hash(es.iter().map(|e| e.hash))
        );
        // Sorted by index, name length, name.
        assert_eq!(es[0].name, b"a");
        assert_eq!(es[1].name, b"empty");
        assert_eq!(es[2].index, 6);
    }

    #[test]
    fn block_room_is_exact() {
        // Header 32, one entry of a 1-byte name (20), terminator 4:
        // 968 bytes of value fill a 1 KiB block exactly.
        assert!(fits_block(&[x(1, "a", &[0; 968])], 1024));
        assert!(!fits_block(&[x(1, "a", &[0; 969])], 1024));
    }

    #[test]
    fn names() {
        assert_eq!(parse_name(b"user.x").unwrap(), (1, &b"x"[..]));
        assert_eq!(parse_name(b"user."), Err(Error::InvalidArgument));
        assert!(matches!(
            parse_name(b"system.foo"),
            Err(Error::Unsupported { .. })
        ));
        assert!(matches!(
            parse_name(b"foo.bar"),
            Err(Error::Unsupported { .. })
        ));
        assert!(matches!(
            parse_name(b"system.posix_acl_accessX"),
            Err(Error::Unsupported { .. })
        ));
        assert_eq!(
            parse_name(b"system.posix_acl_default").unwrap(),
            (3, &b""[..])
        );
        let long = [b"user.".as_slice(), &[b'a'; 251]].concat();
        assert_eq!(parse_name(&long), Err(Error::Range));
        assert!(parse_name(&long[..255]).is_ok());
    }

    #[test]
    fn ibody_set_get_remove_round_trip() {
        let region = vec![0u8; 96];
        // 96 - magic 4 - entry 20 - terminator 4 = 68, as the kernel's
        // 128-byte inline limit in 256-byte inodes says.
        assert_eq!(ibody_room(&region, InodeNo(12), 7, b"data").unwrap(), 68);
        let r = ibody_set(&region, InodeNo(12), 7, b"data", Some(&[]))
            .unwrap()
            .unwrap();
        assert_eq!(
            ibody_get(&r, InodeNo(12), 7, b"data").unwrap(),
            Some(vec![])
        );
        let r = ibody_set(&r, InodeNo(12), 1, b"x", Some(b"hello"))
            .unwrap()
            .unwrap();
        let r = ibody_set(&r, InodeNo(12), 7, b"data", Some(&[9u8; 30]))
            .unwrap()
            .unwrap();
        assert_eq!(
            ibody_get(&r, InodeNo(12), 7, b"data").unwrap(),
            Some(vec![9u8; 30])
        );
        assert_eq!(
            ibody_get(&r, InodeNo(12), 1, b"x").unwrap(),
            Some(b"hello".to_vec())
        );
        // The reader accepts what was written.
        assert_eq!(xattr::parse_ibody(&r, InodeNo(12)).unwrap().len(), 2);
        assert!(ibody_set(&r, InodeNo(12), 7, b"data", Some(&[1u8; 60]))
            .unwrap()
            .is_none());
        let r = ibody_set(&r, InodeNo(12), 7, b"data", None)
            .unwrap()
            .unwrap();
        assert_eq!(ibody_get(&r, InodeNo(12), 7, b"data").unwrap(), None);
        assert_eq!(
            ibody_get(&r, InodeNo(12), 1, b"x").unwrap(),
            Some(b"hello".to_vec())
        );
        let r = ibody_set(&r, InodeNo(12), 1, b"x", None).unwrap().unwrap();
        assert_eq!(r, vec![0u8; 96], "no attributes: no magic either");
    }
}
