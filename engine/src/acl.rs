//! POSIX ACLs: ext4 stores `system.posix_acl_access`/`_default` (xattr name
//! indexes 2 and 3) in a compact form of its own; the Linux xattr interface
//! speaks another. This module translates between the two.
//!
//! - ext4 form: header `{a_version: le32 = 1}`, then entries; the owner-like
//!   tags (USER_OBJ, GROUP_OBJ, MASK, OTHER) are short `{le16 tag, le16 perm}`,
//!   USER and GROUP are long `{le16 tag, le16 perm, le32 id}`.
//! - xattr form: header `{a_version: le32 = 2}`, every entry
//!   `{le16 tag, le16 perm, le32 id}`, id [`ACL_UNDEFINED_ID`] for short tags.
//!
//! API: [`disk_to_xattr`] (on-disk, untrusted: errors are `Error::Corrupt`
//! naming the inode) and [`xattr_to_disk`] (from a caller: errors are
//! `Error::InvalidArgument`). An ACL with no entries means "no ACL", as in
//! the kernel: both directions return an empty vector for it, and a reader
//! should then answer ENODATA.

use alloc::vec::Vec;
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::{Error, Object, Result};
use crate::numbers::InodeNo;

/// `a_version` of ext4's on-disk ACL.
pub const DISK_VERSION: u32 = 1;
/// `a_version` of the Linux xattr ACL.
pub const XATTR_VERSION: u32 = 2;
/// id of entries that have none (owner, owning group, mask, other).
pub const ACL_UNDEFINED_ID: u32 = u32::MAX;

pub const ACL_USER_OBJ: u16 = 0x01;
pub const ACL_USER: u16 = 0x02;
pub const ACL_GROUP_OBJ: u16 = 0x04;
pub const ACL_GROUP: u16 = 0x08;
pub const ACL_MASK: u16 = 0x10;
pub const ACL_OTHER: u16 = 0x20;

/// Header of both forms (only the version value differs).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawHeader {
    pub a_version: U32,
}

/// ext4's short entry, for tags without an id.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawShortEntry {
    pub e_tag: U16,
    pub e_perm: U16,
}

/// ext4's long entry, and every entry of the xattr form.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawEntry {
    pub e_tag: U16,
    pub e_perm: U16,
    pub e_id: U32,
}

const HEADER_LEN: usize = core::mem::size_of::<RawHeader>();
const SHORT_LEN: usize = core::mem::size_of::<RawShortEntry>();
const LONG_LEN: usize = core::mem::size_of::<RawEntry>();

/// Whether `tag` carries an id (long entry on disk).
fn has_id(tag: u16) -> Option<bool> {
    match tag {
        ACL_USER | ACL_GROUP => Some(true),
        ACL_USER_OBJ | ACL_GROUP_OBJ | ACL_MASK | ACL_OTHER => Some(false),
        _ => None,
    }
}

/// Translates the value of an ext4 ACL xattr of inode `ino` into the
/// `system.posix_acl_*` xattr form. Rejects what the kernel's reader rejects:
/// a short or unknown-version header, a size that is not "up to four short
/// entries, or four short plus whole long ones", a truncated entry, an unknown
/// tag.
pub fn disk_to_xattr(disk: &[u8], ino: InodeNo) -> Result<Vec<u8>> {
    let obj = Object::Inode(ino);
    if disk.is_empty() {
        return Ok(Vec::new());
    }
    let (hdr, mut rest) = RawHeader::ref_from_prefix(disk)
        .map_err(|_| Error::corrupt(obj, "ACL shorter than its header"))?;
    if hdr.a_version.get() != DISK_VERSION {
        return Err(Error::corrupt(obj, "ACL version"));
    }
    // The kernel's size rule (ext4_acl_count). Entry sizes are powers of
    // two, so a mask tests divisibility (and works on any toolchain).
    let body = rest.len();
    let size_ok = if body < 4 * SHORT_LEN {
        body & (SHORT_LEN - 1) == 0
    } else {
        (body - 4 * SHORT_LEN) & (LONG_LEN - 1) == 0
    };
    if !size_ok {
        return Err(Error::corrupt(obj, "ACL size"));
    }
    if body == 0 {
        return Ok(Vec::new());
    }
    // Output entries are at most twice the input: bounded by the xattr size.
    let mut out = Vec::with_capacity(HEADER_LEN + body * 2);
    out.extend_from_slice(
        RawHeader {
            a_version: XATTR_VERSION.into(),
        }
        .as_bytes(),
    );
    while !rest.is_empty() {
        let (short, _) = RawShortEntry::ref_from_prefix(rest)
            .map_err(|_| Error::corrupt(obj, "ACL entry truncated"))?;
        let tag = short.e_tag.get();
        let long = has_id(tag).ok_or(Error::corrupt(obj, "ACL entry tag"))?;
        let (id, len) = if long {
            let (e, _) = RawEntry::ref_from_prefix(rest)
                .map_err(|_| Error::corrupt(obj, "ACL entry truncated"))?;
            (e.e_id.get(), LONG_LEN)
        } else {
            (ACL_UNDEFINED_ID, SHORT_LEN)
        };
        let entry = RawEntry {
            e_tag: tag.into(),
            e_perm: short.e_perm,
            e_id: id.into(),
        };
        out.extend_from_slice(entry.as_bytes());
        rest = &rest[len..];
    }
    Ok(out)
}

/// Translates a `system.posix_acl_*` xattr value given by a caller into
/// ext4's on-disk form. Errors (`InvalidArgument`): wrong version, size not a
/// whole number of entries, or an ACL the kernel would refuse as invalid
/// (see [`is_valid`]).
pub fn xattr_to_disk(xattr: &[u8]) -> Result<Vec<u8>> {
    let (hdr, rest) = RawHeader::ref_from_prefix(xattr).map_err(|_| Error::InvalidArgument)?;
    if hdr.a_version.get() != XATTR_VERSION {
        return Err(Error::InvalidArgument);
    }
    let entries = <[RawEntry]>::ref_from_bytes(rest).map_err(|_| Error::InvalidArgument)?;
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    if !is_valid(entries) {
        return Err(Error::InvalidArgument);
    }
    let mut out = Vec::with_capacity(xattr.len());
    out.extend_from_slice(
        RawHeader {
            a_version: DISK_VERSION.into(),
        }
        .as_bytes(),
    );
    for e in entries {
        let tag = e.e_tag.get();
        if has_id(tag).ok_or(Error::InvalidArgument)? {
            out.extend_from_slice(e.as_bytes());
        } else {
            out.extend_from_slice(
                RawShortEntry {
                    e_tag: e.e_tag,
                    e_perm: e.e_perm,
                }
                .as_bytes(),
            );
        }
    }
    Ok(out)
}

/// The entries of an ACL in the xattr form as (tag, permission bits, id),
/// for permission checks; `InvalidArgument` when it does not parse or is
/// not one the kernel accepts ([`is_valid`]).
pub fn xattr_entries(xattr: &[u8]) -> Result<Vec<(u16, u16, u32)>> {
    let (hdr, rest) = RawHeader::ref_from_prefix(xattr).map_err(|_| Error::InvalidArgument)?;
    if hdr.a_version.get() != XATTR_VERSION {
        return Err(Error::InvalidArgument);
    }
    let entries = <[RawEntry]>::ref_from_bytes(rest).map_err(|_| Error::InvalidArgument)?;
    if !entries.is_empty() && !is_valid(entries) {
        return Err(Error::InvalidArgument);
    }
    Ok(entries
        .iter()
        .map(|e| (e.e_tag.get(), e.e_perm.get(), e.e_id.get()))
        .collect())
}

/// The kernel's rule for an ACL it accepts from a caller: permissions within
/// rwx, entries in the order USER_OBJ, USER*, GROUP_OBJ, GROUP*, MASK, OTHER,
/// with exactly one of each owner-like entry, and MASK present exactly when
/// there are USER or GROUP entries. Named entries need a real id. This is also
/// what keeps the on-disk size rule of [`disk_to_xattr`] satisfied.
pub fn is_valid(entries: &[RawEntry]) -> bool {
    // Which tags may come next, as a small state machine.
    #[derive(PartialEq)]
    enum Next {
        UserObj,
        Users,
        Groups,
        Other,
        Done,
    }
    let mut state = Next::UserObj;
    let mut named = false;
    for e in entries {
        if e.e_perm.get() & !7 != 0 {
            return false;
        }
        let id = e.e_id.get();
        state = match (e.e_tag.get(), state) {
            (ACL_USER_OBJ, Next::UserObj) => Next::Users,
            (ACL_USER, Next::Users) if id != ACL_UNDEFINED_ID => {
                named = true;
                Next::Users
            }
            (ACL_GROUP_OBJ, Next::Users) => Next::Groups,
            (ACL_GROUP, Next::Groups) if id != ACL_UNDEFINED_ID => {
                named = true;
                Next::Groups
            }
            (ACL_MASK, Next::Groups) => Next::Other,
            (ACL_OTHER, Next::Other) => Next::Done,
            (ACL_OTHER, Next::Groups) if !named => Next::Done,
            _ => return false,
        };
    }
    state == Next::Done
}

/// One ACL entry, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AclEntry {
    pub tag: u16,
    pub perm: u16,
    pub id: u32,
}

/// The entries of an on-disk ACL of inode `ino` (empty: no ACL).
pub fn parse_disk(disk: &[u8], ino: InodeNo) -> Result<Vec<AclEntry>> {
    let x = disk_to_xattr(disk, ino)?;
    let body = x.get(HEADER_LEN..).unwrap_or(&[]);
    let entries = <[RawEntry]>::ref_from_bytes(body)
        .map_err(|_| Error::corrupt(Object::Inode(ino), "ACL size"))?;
    Ok(entries
        .iter()
        .map(|e| AclEntry {
            tag: e.e_tag.get(),
            perm: e.e_perm.get(),
            id: e.e_id.get(),
        })
        .collect())
}

/// The on-disk form of `acl` (which the caller built from a valid ACL).
pub fn to_disk(acl: &[AclEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + acl.len() * LONG_LEN);
    out.extend_from_slice(&DISK_VERSION.to_le_bytes());
    for e in acl {
        out.extend_from_slice(&e.tag.to_le_bytes());
        out.extend_from_slice(&e.perm.to_le_bytes());
        if has_id(e.tag) == Some(true) {
            out.extend_from_slice(&e.id.to_le_bytes());
        }
    }
    out
}

const S_IRWXO: u16 = 0o7;
const S_IRWXG: u16 = 0o70;
const S_IRWXU: u16 = 0o700;

/// A new object's ACL from its directory's default ACL, and its mode
/// (the kernel's `posix_acl_create_masq`): the requested permission bits
/// and the ACL's owner, group (or mask) and other entries each limit the
/// other. Returns whether the ACL says more than the mode (then it is
/// stored as the access ACL).
pub fn create_masq(acl: &mut [AclEntry], mode: &mut u16) -> bool {
    let mut m = *mode;
    let mut not_equiv = false;
    let (mut group_obj, mut mask_obj) = (None, None);
    for (i, e) in acl.iter_mut().enumerate() {
        match e.tag {
            ACL_USER_OBJ => {
                e.perm &= (m >> 6) | !S_IRWXO;
                m &= (e.perm << 6) | !S_IRWXU;
            }
            ACL_USER | ACL_GROUP => not_equiv = true,
            ACL_GROUP_OBJ => group_obj = Some(i),
            ACL_OTHER => {
                e.perm &= m | !S_IRWXO;
                m &= e.perm | !S_IRWXO;
            }
            ACL_MASK => {
                mask_obj = Some(i);
                not_equiv = true;
            }
            _ => {}
        }
    }
    if let Some(i) = mask_obj.or(group_obj) {
        let e = &mut acl[i];
        e.perm &= (m >> 3) | !S_IRWXO;
        m &= (e.perm << 3) | !S_IRWXG;
    }
    *mode = (*mode & !0o777) | (m & 0o777);
    not_equiv
}

/// `chmod` of an object with access ACL `acl` (the kernel's
/// `__posix_acl_chmod`): the owner and other entries take the mode's
/// bits, the mask (or without one the owning group) the group bits.
pub fn chmod(acl: &mut [AclEntry], mode: u16) {
    let mut target = None;
    for (i, e) in acl.iter_mut().enumerate() {
        match e.tag {
            ACL_USER_OBJ => e.perm = (mode & S_IRWXU) >> 6,
            ACL_OTHER => e.perm = mode & S_IRWXO,
            ACL_MASK => target = Some(i),
            ACL_GROUP_OBJ if target.is_none() => target = Some(i),
            _ => {}
        }
    }
    if let Some(i) = target {
        acl[i].perm = (mode & S_IRWXG) >> 3;
    }
}

/// The permission bits `acl` stands for, and whether it says more than
/// they can (named entries or a mask): the kernel's
/// `posix_acl_equiv_mode`. An ACL that says no more is not stored.
pub fn equiv_mode(acl: &[AclEntry]) -> (u16, bool) {
    let mut mode = 0u16;
    let mut not_equiv = false;
    for e in acl {
        match e.tag {
            ACL_USER_OBJ => mode |= (e.perm & S_IRWXO) << 6,
            ACL_GROUP_OBJ => mode |= (e.perm & S_IRWXO) << 3,
            ACL_OTHER => mode |= e.perm & S_IRWXO,
            ACL_MASK => {
                mode = (mode & !S_IRWXG) | ((e.perm & S_IRWXO) << 3);
                not_equiv = true;
            }
            _ => not_equiv = true,
        }
    }
    (mode, not_equiv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};
    use std::vec;

    #[test]
    fn layouts() {
        assert_eq!(size_of::<RawHeader>(), 4);
        assert_eq!(size_of::<RawShortEntry>(), 4);
        assert_eq!(offset_of!(RawShortEntry, e_perm), 2);
        assert_eq!(size_of::<RawEntry>(), 8);
        assert_eq!(offset_of!(RawEntry, e_perm), 2);
        assert_eq!(offset_of!(RawEntry, e_id), 4);
    }

    fn short(tag: u16, perm: u16) -> Vec<u8> {
        [tag.to_le_bytes(), perm.to_le_bytes()].concat()
    }
    fn long(tag: u16, perm: u16, id: u32) -> Vec<u8> {
        [
            &tag.to_le_bytes()[..],
            &perm.to_le_bytes(),
            &id.to_le_bytes(),
        ]
        .concat()
    }

    /// `u::rw-,u:1234:rwx,g::r--,g:55:r--,m::rwx,o::r--` on disk.
    fn sample_disk() -> Vec<u8> {
        [
            1u32.to_le_bytes().to_vec(),
            short(ACL_USER_OBJ, 6),
            long(ACL_USER, 7, 1234),
            short(ACL_GROUP_OBJ, 4),
            long(ACL_GROUP, 4, 55),
            short(ACL_MASK, 7),
            short(ACL_OTHER, 4),
        ]
        .concat()
    }

    #[test]
    fn translates_the_sample() {
        // The same ACL as getfattr printed it from a kernel mount.
        let want: Vec<u8> = [
            2u32.to_le_bytes().to_vec(),
            long(ACL_USER_OBJ, 6, u32::MAX),
            long(ACL_USER, 7, 1234),
            long(ACL_GROUP_OBJ, 4, u32::MAX),
            long(ACL_GROUP, 4, 55),
            long(ACL_MASK, 7, u32::MAX),
            long(ACL_OTHER, 4, u32::MAX),
        ]
        .concat();
        assert_eq!(disk_to_xattr(&sample_disk(), InodeNo(1)).unwrap(), want);
        assert_eq!(xattr_to_disk(&want).unwrap(), sample_disk());
        // Minimal ACL: three short entries.
        let min = [
            1u32.to_le_bytes().to_vec(),
            short(1, 6),
            short(4, 4),
            short(0x20, 4),
        ]
        .concat();
        let x = disk_to_xattr(&min, InodeNo(1)).unwrap();
        assert_eq!(x.len(), 4 + 3 * 8);
        assert_eq!(xattr_to_disk(&x).unwrap(), min);
        // No entries: no ACL.
        assert_eq!(
            disk_to_xattr(&1u32.to_le_bytes(), InodeNo(1)).unwrap(),
            vec![]
        );
        assert_eq!(disk_to_xattr(&[], InodeNo(1)).unwrap(), vec![]);
        assert_eq!(xattr_to_disk(&2u32.to_le_bytes()).unwrap(), vec![]);
    }

    fn what(r: Result<Vec<u8>>) -> &'static str {
        match r {
            Err(Error::Corrupt {
                object: Object::Inode(InodeNo(42)),
                what,
            }) => what,
            other => panic!("expected Corrupt for inode 42, got {other:?}"),
        }
    }

    #[test]
    fn rejects_bad_disk_acls() {
        let good = sample_disk();
        assert_eq!(
            what(disk_to_xattr(&good[..3], InodeNo(42))),
            "ACL shorter than its header"
        );
        let mut v2 = good.clone();
        v2[0] = 2;
        assert_eq!(what(disk_to_xattr(&v2, InodeNo(42))), "ACL version");
        assert_eq!(
            what(disk_to_xattr(&good[..good.len() - 1], InodeNo(42))),
            "ACL size"
        );
        assert_eq!(what(disk_to_xattr(&good[..6], InodeNo(42))), "ACL size");
        let mut tag = good.clone();
        tag[4] = 0x40;
        assert_eq!(what(disk_to_xattr(&tag, InodeNo(42))), "ACL entry tag");
        // Size rule satisfied, but a long tag where only 4 bytes remain.
        let trunc = [
            1u32.to_le_bytes().to_vec(),
            short(1, 6),
            short(4, 4),
            short(0x20, 4),
            short(ACL_USER, 4),
        ]
        .concat();
        assert_eq!(
            what(disk_to_xattr(&trunc, InodeNo(42))),
            "ACL entry truncated"
        );
    }

    #[test]
    fn validates_caller_acls() {
        let x = disk_to_xattr(&sample_disk(), InodeNo(1)).unwrap();
        let entries = <[RawEntry]>::ref_from_bytes(&x[4..]).unwrap();
        assert!(is_valid(entries));
        // Named entries without a mask.
        let no_mask: Vec<RawEntry> = entries
            .iter()
            .copied()
            .filter(|e| e.e_tag.get() != ACL_MASK)
            .collect();
        assert!(!is_valid(&no_mask));
        // Out of order.
        let mut swapped = entries.to_vec();
        swapped.swap(0, 2);
        assert!(!is_valid(&swapped));
        // Bad permission bits.
        let mut perm = entries.to_vec();
        perm[0].e_perm = 8.into();
        assert!(!is_valid(&perm));
        // Missing OTHER.
        assert!(!is_valid(&entries[..entries.len() - 1]));
        let mut bad = x.clone();
        bad[0] = 1;
        assert_eq!(xattr_to_disk(&bad), Err(Error::InvalidArgument));
        assert_eq!(
            xattr_to_disk(&x[..x.len() - 1]),
            Err(Error::InvalidArgument)
        );
    }

    #[test]
    fn byte_flips_never_panic() {
        let good = sample_disk();
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut buf = good.clone();
        for round in 0..50_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            buf.copy_from_slice(&good);
            let at = (state % good.len() as u64) as usize;
            buf[at] = (state >> 32) as u8;
            let cut = if round % 3 == 0 {
                (state >> 40) as usize % (buf.len() + 1)
            } else {
                buf.len()
            };
            match disk_to_xattr(&buf[..cut], InodeNo(42)) {
                Ok(x) => {
                    assert!(x.is_empty() || (x.len() - 4) % 8 == 0);
                    let _ = xattr_to_disk(&x);
                }
                Err(e) => assert!(e.is_corruption()),
            }
        }
    }
}
