//! The request policy: what every frontend decides the same way about a
//! request, decided here once and as the kernel's ext4 decides it.
//!
//! - [`permission`]: may a caller (uid, gid, supplementary groups) read,
//!   write or search an inode, by its mode bits, its POSIX ACL and root's
//!   overrides (`generic_permission` with `posix_acl_permission`), on a
//!   read-only volume (`EROFS`) and for immutable inodes (`EPERM`).
//!   [`Volume::access`] applies it to an inode, [`ShownIds`] to what a
//!   frontend shows.
//! - [`check_open`]: the open flags a volume refuses before any permission
//!   (writes and `O_TRUNC` on a read-only volume).
//! - [`xattr_visible`], [`check_getxattr`], [`xattr_list`]: `trusted.*` is
//!   only a privileged caller's; [`xattr_reply`]: the size-0 probe and
//!   `ERANGE` protocol of `getxattr`/`listxattr`.
//! - write requests: [`cred`] (who creates, and whether the reserved
//!   blocks are theirs), [`check_change`] (an inode's contents or
//!   attributes), [`check_dir_change`] (a directory's entries),
//!   [`check_delete`] (the sticky bit, and what may not lose a name),
//!   [`check_setattr`] (who may change which attribute);
//! - [`timeouts`]: how long a kernel may cache entries and attributes.
//! - [`errno_for`]: the errno a request answers with for an engine error
//!   (a damaged object gives `EBADMSG` or `EUCLEAN` as the kernel does; a
//!   read of file data fails with `EIO`, as the kernel's page cache
//!   reports any error under it); [`worth_logging`]: which errors are
//!   damage to report.
//!
//! What happens to a request that meets a damaged block it could do without
//! (a listing, a lookup) is the volume's [`crate::OnDamage`].
//!
//! The FUSE servers let the kernel check permissions too (they mount with
//! `default_permissions` and accept `FUSE_POSIX_ACL`); FUSE requests carry
//! only the caller's uid and primary gid, so where the kernel asks the
//! server (`ACCESS`), the groups it can check are those.

use alloc::vec::Vec;
use core::time::Duration;

use crate::attr::{Attr, FileType};
use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::inode::flags;
use crate::numbers::InodeNo;
use crate::volume::Volume;
use crate::writable::Cred;
use crate::write::{SetAttr, SetTime};

/// Who makes a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller<'a> {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (FUSE requests carry none).
    pub groups: &'a [u32],
}

impl Caller<'_> {
    /// The superuser, with every capability the kernel checks here
    /// (`CAP_DAC_OVERRIDE`, `CAP_DAC_READ_SEARCH`, `CAP_SYS_ADMIN`).
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    fn in_group(&self, g: u32) -> bool {
        self.gid == g || self.groups.contains(&g)
    }
}

/// `access(2)` mask bits, which are also the kernel's `MAY_*` bits.
pub mod may {
    pub const READ: u32 = 4;
    pub const WRITE: u32 = 2;
    pub const EXEC: u32 = 1;
}

/// What a permission check looks at: the inode as presented to the caller
/// (owner and group after any `uid=`/`gid=` override), and its access ACL
/// in the xattr form (`system.posix_acl_access`), if it has one.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    pub uid: u32,
    pub gid: u32,
    /// Full `st_mode`.
    pub mode: u32,
    pub kind: FileType,
    /// ext4 inode flags (`IMMUTABLE` refuses writes).
    pub flags: u32,
    pub acl: Option<&'a [u8]>,
}

impl<'a> Subject<'a> {
    pub fn new(a: &Attr, acl: Option<&'a [u8]>) -> Self {
        Subject {
            uid: a.uid,
            gid: a.gid,
            mode: a.mode,
            kind: a.kind,
            flags: a.flags,
            acl,
        }
    }
}

/// May `caller` access `s` as `mask` (`may::*`) asks? The kernel's
/// `inode_permission`: writes on a read-only volume (`EROFS`, for regular
/// files, directories and symlinks) and to immutable inodes (`EPERM`)
/// first, then the owner's bits, the ACL (when the group bits are not all
/// clear) or the group's or others' bits (`EACCES`), and root's overrides.
pub fn permission(caller: &Caller, s: &Subject, mask: u32, read_only: bool) -> Result<()> {
    let mask = mask & (may::READ | may::WRITE | may::EXEC);
    if mask & may::WRITE != 0 {
        if read_only
            && matches!(
                s.kind,
                FileType::Regular | FileType::Directory | FileType::Symlink
            )
        {
            return Err(Error::ReadOnly);
        }
        if s.flags & flags::IMMUTABLE != 0 {
            return Err(Error::NotPermitted);
        }
    }
    if mode_or_acl_allows(caller, s, mask)? {
        return Ok(());
    }
    if caller.is_root() {
        // CAP_DAC_OVERRIDE: anything on a directory; on anything else,
        // anything but executing a file nobody may execute.
        let dir = s.kind == FileType::Directory;
        if dir || mask & may::EXEC == 0 || s.mode & 0o111 != 0 {
            return Ok(());
        }
    }
    Err(Error::PermissionDenied)
}

/// The owner's bits, else the ACL, else the group's or others' bits
/// (`acl_permission_check`).
fn mode_or_acl_allows(caller: &Caller, s: &Subject, mask: u32) -> Result<bool> {
    let mode = s.mode;
    if caller.uid == s.uid {
        return Ok((mode >> 6) & mask == mask);
    }
    if let Some(acl) = s.acl.filter(|_| mode & 0o070 != 0) {
        if let Some(ok) = acl_allows(caller, s, acl, mask)? {
            return Ok(ok);
        }
    }
    let bits = if caller.in_group(s.gid) {
        mode >> 3
    } else {
        mode
    };
    Ok(bits & mask == mask)
}

/// `posix_acl_permission` on an ACL in the xattr form: `None` for an ACL
/// with no entries (none at all), an error for one that does not parse.
fn acl_allows(caller: &Caller, s: &Subject, acl: &[u8], mask: u32) -> Result<Option<bool>> {
    let entries = crate::acl::xattr_entries(acl)?;
    if entries.is_empty() {
        return Ok(None);
    }
    let mask_perm = entries
        .iter()
        .find(|e| e.0 == crate::acl::ACL_MASK)
        .map(|e| e.1 as u32);
    let masked = |perm: u32| perm & mask_perm.unwrap_or(7);
    let mut found = false;
    for &(tag, perm, id) in &entries {
        let perm = perm as u32;
        match tag {
            crate::acl::ACL_USER_OBJ if caller.uid == s.uid => {
                return Ok(Some(perm & mask == mask))
            }
            crate::acl::ACL_USER if caller.uid == id => {
                return Ok(Some(masked(perm) & mask == mask))
            }
            crate::acl::ACL_GROUP_OBJ if caller.in_group(s.gid) => {
                found = true;
                if masked(perm) & mask == mask {
                    return Ok(Some(true));
                }
            }
            crate::acl::ACL_GROUP if caller.in_group(id) => {
                found = true;
                if masked(perm) & mask == mask {
                    return Ok(Some(true));
                }
            }
            crate::acl::ACL_OTHER => {
                return Ok(Some(!found && perm & mask == mask));
            }
            _ => {}
        }
    }
    Ok(Some(false))
}

/// Owner and group as a caller is shown them: a frontend's `uid=`/`gid=`
/// options report every inode as theirs, and permissions follow what is
/// shown, as the kernel's own checks (`default_permissions`) would.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShownIds {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl ShownIds {
    /// `a` with the owner and group the caller is shown.
    pub fn apply(&self, mut a: Attr) -> Attr {
        a.uid = self.uid.unwrap_or(a.uid);
        a.gid = self.gid.unwrap_or(a.gid);
        a
    }
}

/// [`permission`] for an inode whose attributes and access ACL value
/// (`system.posix_acl_access`, `NoData` when it has none) a backend gave.
pub fn access_with(
    attr: Result<Attr>,
    acl: Result<Vec<u8>>,
    caller: &Caller,
    mask: u32,
    read_only: bool,
    ids: ShownIds,
) -> Result<()> {
    let a = ids.apply(attr?);
    let acl = match acl {
        Ok(v) => Some(v),
        Err(Error::NoData) => None,
        Err(e) => return Err(e),
    };
    permission(caller, &Subject::new(&a, acl.as_deref()), mask, read_only)
}

impl<D: BlockDevice> Volume<D> {
    /// May `caller` access inode `ino` as `mask` (`may::*`) asks? See
    /// [`permission`]; `ids` are the owner and group the caller is shown.
    pub fn access(&self, ino: InodeNo, caller: &Caller, mask: u32, ids: ShownIds) -> Result<()> {
        access_with(
            self.getattr(ino),
            self.getxattr(ino, b"system.posix_acl_access"),
            caller,
            mask,
            self.read_only(),
            ids,
        )
    }
}

/// `open(2)` flags (Linux numbering) a volume refuses for an inode of
/// `kind` with ext4 inode flags `iflags` before any permission check:
/// writing a directory (`EISDIR`); on a read-only volume any write or
/// `O_TRUNC` of a regular file (`EROFS`), as the kernel's VFS refuses them
/// on a read-only mount; writing or truncating an immutable file, and
/// writing an append-only one but with `O_APPEND` or truncating it
/// (`EPERM`, the VFS's `may_open`).
pub fn check_open(open_flags: u32, kind: FileType, iflags: u32, read_only: bool) -> Result<()> {
    const O_ACCMODE: u32 = 0o3;
    const O_TRUNC: u32 = 0o1000;
    const O_APPEND: u32 = 0o2000;
    let writes = open_flags & O_ACCMODE != 0;
    if kind == FileType::Directory && writes {
        return Err(Error::IsDir);
    }
    let file = matches!(kind, FileType::Regular | FileType::Directory);
    let trunc = open_flags & O_TRUNC != 0 && kind == FileType::Regular;
    if read_only && file && (writes || trunc) {
        return Err(Error::ReadOnly);
    }
    if iflags & flags::IMMUTABLE != 0 && (writes || trunc) {
        return Err(Error::NotPermitted);
    }
    if iflags & flags::APPEND != 0 && ((writes && open_flags & O_APPEND == 0) || trunc) {
        return Err(Error::NotPermitted);
    }
    Ok(())
}

/// The engine's view of a request's caller: the owner of what it
/// creates, and whether it may use the root-reserved blocks (root holds
/// `CAP_SYS_RESOURCE`). No umask: requests that create carry their own
/// ([`cred_creating`]).
pub fn cred(caller: &Caller) -> Cred {
    Cred {
        uid: caller.uid,
        gid: caller.gid,
        cap_resource: caller.is_root(),
        umask: 0,
    }
}

/// [`cred`] for a request that creates with the caller's `umask`, which a
/// kernel that takes POSIX ACLs leaves to the server: the engine applies
/// it unless the directory has a default ACL.
pub fn cred_creating(caller: &Caller, umask: u32) -> Cred {
    Cred {
        umask: (umask & 0o777) as u16,
        ..cred(caller)
    }
}

/// May the contents of `s` change (write, truncate, allocate)? `EROFS` on
/// a read-only volume, `EPERM` for an immutable inode. (An append-only
/// file is only ever opened for appending, which [`check_open`] sees.)
pub fn check_change(s: &Subject, read_only: bool) -> Result<()> {
    if read_only {
        return Err(Error::ReadOnly);
    }
    if s.flags & flags::IMMUTABLE != 0 {
        return Err(Error::NotPermitted);
    }
    Ok(())
}

/// May entries of directory `dir` be added (`removing` false) or removed?
/// `EROFS` on a read-only volume; `EPERM` in an immutable directory, and
/// for removals in an append-only one (the kernel's `may_delete`; the
/// permission bits are the kernel's to check, with every group of the
/// caller).
pub fn check_dir_change(dir: &Subject, removing: bool, read_only: bool) -> Result<()> {
    check_change(dir, read_only)?;
    if removing && dir.flags & flags::APPEND != 0 {
        return Err(Error::NotPermitted);
    }
    Ok(())
}

/// May `caller` remove (unlink, rmdir, rename away or over) `victim` from
/// `dir`? [`check_dir_change`], then `EPERM` for an immutable or
/// append-only victim, and in a sticky directory for anyone but root, the
/// directory's owner and the victim's owner (`check_sticky`).
pub fn check_delete(
    caller: &Caller,
    dir: &Subject,
    victim: &Subject,
    read_only: bool,
) -> Result<()> {
    check_dir_change(dir, true, read_only)?;
    if victim.flags & (flags::IMMUTABLE | flags::APPEND) != 0 {
        return Err(Error::NotPermitted);
    }
    const S_ISVTX: u32 = 0o1000;
    if dir.mode & S_ISVTX != 0
        && !caller.is_root()
        && caller.uid != dir.uid
        && caller.uid != victim.uid
    {
        return Err(Error::NotPermitted);
    }
    Ok(())
}

/// May `caller` change the attributes `set` asks of `s`? The kernel's
/// rules (`notify_change`, `setattr_prepare`), as far as a caller's uid
/// decides them:
///
/// - `EROFS` on a read-only volume;
/// - an immutable inode changes nothing, an append-only one neither its
///   mode, owner, size nor explicit times (`EPERM`);
/// - only root gives a file away (`uid`), only the owner or root changes
///   its group, mode or sets explicit times (`EPERM`) — but anyone may
///   clear the set-user-ID and set-group-ID bits, which is what the
///   kernel asks on behalf of a writer or of `chown` (`file_remove_privs`);
/// - times set to now are the kernel's to allow (the owner, or whoever may
///   write the file).
///
/// Group membership (`chgrp` to a group the owner is in, keeping
/// set-group-ID on `chmod`) needs the caller's supplementary groups,
/// which FUSE requests do not carry: the kernel decides it
/// (`default_permissions` is always on).
pub fn check_setattr(caller: &Caller, s: &Subject, set: &SetAttr, read_only: bool) -> Result<()> {
    let times_now =
        matches!(set.atime, Some(SetTime::Now)) || matches!(set.mtime, Some(SetTime::Now));
    let times_set =
        matches!(set.atime, Some(SetTime::At(_))) || matches!(set.mtime, Some(SetTime::At(_)));
    let anything = set.mode.is_some()
        || set.uid.is_some()
        || set.gid.is_some()
        || set.size.is_some()
        || times_now
        || times_set
        || set.ctime.is_some();
    if !anything {
        return Ok(());
    }
    if read_only {
        return Err(Error::ReadOnly);
    }
    const SETID: u32 = 0o6000;
    let old = s.mode & 0o7777;
    let only_drops_setid = set.mode.is_some_and(|m| {
        let m = u32::from(m) & 0o7777;
        m & !SETID == old & !SETID && m & SETID & !old == 0
    });
    let owner_attrs = (set.mode.is_some() && !only_drops_setid)
        || set.uid.is_some_and(|u| u != s.uid)
        || set.gid.is_some_and(|g| g != s.gid)
        || times_set;
    if s.flags & flags::IMMUTABLE != 0 {
        return Err(Error::NotPermitted);
    }
    if s.flags & flags::APPEND != 0 && (owner_attrs || set.size.is_some()) {
        return Err(Error::NotPermitted);
    }
    if caller.is_root() {
        return Ok(());
    }
    if set.uid.is_some_and(|u| u != s.uid) {
        return Err(Error::NotPermitted);
    }
    let owner = caller.uid == s.uid;
    if !owner && owner_attrs {
        return Err(Error::NotPermitted);
    }
    Ok(())
}

/// The xattr that holds a file's capabilities (`setcap`), which a write,
/// truncation or change of owner takes away.
pub const CAPABILITY_XATTR: &[u8] = b"security.capability";

/// The set-ID bits a write, truncation or change of owner of `s` by
/// `caller` takes away, as the kernel's VFS does
/// (`setattr_should_drop_suidgid`): set-user-ID always; set-group-ID when
/// the group may execute (without group execute it marks mandatory
/// locking, and stays) or when the caller is neither in the file's group
/// nor root. Directories keep both. The mode's permission bits after
/// (`07777`), or `None` when nothing changes. The kernel decides whether
/// the caller holds `CAP_FSETID` (which keeps both bits on a write or
/// truncation) before it asks a FUSE server to drop them
/// (`FUSE_HANDLE_KILLPRIV_V2`).
pub fn mode_without_setid(caller: &Caller, s: &Subject) -> Option<u16> {
    const SUID: u32 = 0o4000;
    const SGID: u32 = 0o2000;
    const GROUP_EXEC: u32 = 0o010;
    if s.kind == FileType::Directory {
        return None;
    }
    let old = s.mode & 0o7777;
    let mut new = old & !SUID;
    if old & SGID != 0 && (old & GROUP_EXEC != 0 || !(caller.is_root() || caller.in_group(s.gid))) {
        new &= !SGID;
    }
    (new != old).then_some(new as u16)
}

/// Whether `caller` sees xattr `name` in a listing: `trusted.*` only the
/// superuser (`CAP_SYS_ADMIN`), as ext4 lists them.
pub fn xattr_visible(name: &[u8], caller: &Caller) -> bool {
    !name.starts_with(b"trusted.") || caller.is_root()
}

/// Whether `caller` may read xattr `name` at all: `trusted.*` of anyone
/// else is `ENODATA`, as the kernel's VFS answers.
pub fn check_getxattr(name: &[u8], caller: &Caller) -> Result<()> {
    if xattr_visible(name, caller) {
        Ok(())
    } else {
        Err(Error::NoData)
    }
}

/// The body of a `listxattr` answer: the names `caller` may see, each
/// NUL-terminated.
pub fn xattr_list(names: &[Vec<u8>], caller: &Caller) -> Vec<u8> {
    let mut out = Vec::new();
    for n in names.iter().filter(|n| xattr_visible(n, caller)) {
        out.extend_from_slice(n);
        out.push(0);
    }
    out
}

/// Largest xattr value or list the kernel passes (`XATTR_SIZE_MAX`).
pub const XATTR_SIZE_MAX: usize = 65536;

/// How a `getxattr`/`listxattr` of `data` is answered to a caller whose
/// buffer holds `size` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XattrReply<'a> {
    /// `size` was 0: the caller asks how big the answer is.
    Size(u32),
    /// The bytes themselves.
    Data(&'a [u8]),
}

/// The size-0 probe and `ERANGE` protocol: the length when asked, the
/// bytes when they fit, `ERANGE` when the buffer is too small; more than
/// the kernel passes at all is `E2BIG`.
pub fn xattr_reply(data: &[u8], size: u32) -> Result<XattrReply<'_>> {
    if data.len() > XATTR_SIZE_MAX {
        return Err(Error::TooBig);
    }
    if size == 0 {
        return Ok(XattrReply::Size(data.len() as u32));
    }
    if data.len() > size as usize {
        return Err(Error::Range);
    }
    Ok(XattrReply::Data(data))
}

/// How long a kernel may cache what it was told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub entry: Duration,
    pub attr: Duration,
    /// How long "no such name" is cached.
    pub negative: Duration,
}

/// On a read-only volume nothing can change behind the kernel's back: a
/// year. A writable one gets libfuse's default second, which fuse2fs keeps.
pub fn timeouts(read_only: bool) -> Timeouts {
    let t = if read_only {
        Duration::from_secs(365 * 86400)
    } else {
        Duration::from_secs(1)
    };
    Timeouts {
        entry: t,
        attr: t,
        negative: t,
    }
}

/// The kinds of request whose errno differs from [`Error::errno`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Reading file data (`READ`): the kernel reads through its page
    /// cache, which reports any failure underneath as `EIO`.
    Read,
    /// Everything else.
    Other,
}

/// The errno `request` answers with when the engine fails with `e`
/// (Linux numbering).
pub fn errno_for(request: Request, e: &Error) -> i32 {
    match (request, e) {
        (Request::Read, Error::Corrupt { .. } | Error::Checksum { .. }) => crate::error::errno::EIO,
        _ => e.errno(),
    }
}

/// Whether an error means the image or the device is damaged (or holds
/// what the engine cannot read), which the user must hear about, rather
/// than an answer such as "no such file".
pub fn worth_logging(e: &Error) -> bool {
    matches!(
        e,
        Error::Corrupt { .. } | Error::Checksum { .. } | Error::Io(_) | Error::Unsupported { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(uid: u32, gid: u32, mode: u32, acl: Option<&[u8]>) -> Subject<'_> {
        Subject {
            uid,
            gid,
            mode: FileType::Regular.mode_bits() | mode,
            kind: FileType::Regular,
            flags: 0,
            acl,
        }
    }

    fn caller(uid: u32, gid: u32, groups: &[u32]) -> Caller<'_> {
        Caller { uid, gid, groups }
    }

    /// An ACL in the xattr form from (tag, perm, id) entries.
    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut v = 2u32.to_le_bytes().to_vec();
        for &(t, p, id) in entries {
            v.extend_from_slice(&t.to_le_bytes());
            v.extend_from_slice(&p.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        v
    }

    #[test]
    fn mode_bits_owner_group_other_and_root() {
        let s = subject(10, 20, 0o640, None);
        let r = may::READ;
        assert_eq!(permission(&caller(10, 1, &[]), &s, r, true), Ok(()));
        assert_eq!(permission(&caller(11, 20, &[]), &s, r, true), Ok(()));
        assert_eq!(permission(&caller(11, 1, &[20]), &s, r, true), Ok(()));
        assert_eq!(
            permission(&caller(11, 1, &[]), &s, r, true),
            Err(Error::PermissionDenied)
        );
        assert_eq!(permission(&caller(0, 0, &[]), &s, r, true), Ok(()));
        // Root executes only what someone may execute.
        assert_eq!(
            permission(&caller(0, 0, &[]), &s, may::EXEC, true),
            Err(Error::PermissionDenied)
        );
        // The owner's bits decide for the owner, even when others may more.
        let s = subject(10, 20, 0o047, None);
        assert_eq!(
            permission(&caller(10, 20, &[]), &s, r, true),
            Err(Error::PermissionDenied)
        );
        assert_eq!(
            permission(&caller(0, 0, &[]), &s, may::WRITE, true),
            Err(Error::ReadOnly)
        );
    }

    #[test]
    fn acl_named_entries_and_the_mask() {
        use crate::acl::*;
        let a = acl(&[
            (ACL_USER_OBJ, 6, u32::MAX),
            (ACL_USER, 4, 65534),
            (ACL_USER, 0, 7),
            (ACL_GROUP_OBJ, 0, u32::MAX),
            (ACL_GROUP, 4, 5000),
            (ACL_MASK, 4, u32::MAX),
            (ACL_OTHER, 4, u32::MAX),
        ]);
        let s = subject(0, 0, 0o644, Some(&a));
        let r = may::READ;
        assert_eq!(permission(&caller(65534, 1, &[]), &s, r, true), Ok(()));
        // A named entry denies what the others' bits allow.
        assert_eq!(
            permission(&caller(7, 1, &[]), &s, r, true),
            Err(Error::PermissionDenied)
        );
        assert_eq!(permission(&caller(8, 1, &[5000]), &s, r, true), Ok(()));
        assert_eq!(permission(&caller(9, 1, &[]), &s, r, true), Ok(()));
        // In the owning group, whose entry denies: others' bits do not help.
        assert_eq!(
            permission(&caller(9, 0, &[]), &s, r, true),
            Err(Error::PermissionDenied)
        );
        // The mask limits named entries.
        let m = acl(&[
            (ACL_USER_OBJ, 6, u32::MAX),
            (ACL_USER, 6, 65534),
            (ACL_GROUP_OBJ, 0, u32::MAX),
            (ACL_MASK, 4, u32::MAX),
            (ACL_OTHER, 0, u32::MAX),
        ]);
        let s = subject(0, 0, 0o640, Some(&m));
        assert_eq!(
            permission(&caller(65534, 1, &[]), &s, may::READ | may::WRITE, false),
            Err(Error::PermissionDenied)
        );
        // Group bits all clear: the ACL is not consulted.
        let s = subject(0, 0, 0o604, Some(&m));
        assert_eq!(permission(&caller(65534, 1, &[]), &s, r, true), Ok(()));
    }

    #[test]
    fn open_flags_on_a_read_only_volume() {
        let (ro, rw) = (true, false);
        let reg = FileType::Regular;
        assert_eq!(check_open(0, reg, 0, ro), Ok(()));
        assert_eq!(check_open(1, reg, 0, ro), Err(Error::ReadOnly));
        assert_eq!(check_open(2, reg, 0, ro), Err(Error::ReadOnly));
        assert_eq!(check_open(0o1000, reg, 0, ro), Err(Error::ReadOnly));
        assert_eq!(check_open(0o1000, reg, 0, rw), Ok(()));
        assert_eq!(check_open(1, FileType::Directory, 0, rw), Err(Error::IsDir));
        assert_eq!(check_open(0o1000, FileType::Fifo, 0, ro), Ok(()));
        // Immutable: no writing; append-only: appending only.
        let (imm, app) = (flags::IMMUTABLE, flags::APPEND);
        assert_eq!(check_open(0, reg, imm, rw), Ok(()));
        assert_eq!(check_open(1, reg, imm, rw), Err(Error::NotPermitted));
        assert_eq!(check_open(1, reg, app, rw), Err(Error::NotPermitted));
        assert_eq!(check_open(1 | 0o2000, reg, app, rw), Ok(()));
        assert_eq!(check_open(0o1000, reg, app, rw), Err(Error::NotPermitted));
    }

    #[test]
    fn who_may_change_what() {
        let s = subject(10, 20, 0o4755, None);
        let owner = caller(10, 20, &[]);
        let other = caller(11, 20, &[]);
        let root = caller(0, 0, &[]);
        let set = |f: fn(&mut SetAttr)| {
            let mut a = SetAttr::default();
            f(&mut a);
            a
        };
        let chmod = set(|a| a.mode = Some(0o700));
        let give = set(|a| a.uid = Some(11));
        let chgrp = set(|a| a.gid = Some(30));
        let utimes = set(|a| a.mtime = Some(SetTime::At(crate::Timestamp { sec: 1, nsec: 0 })));
        let touch = set(|a| a.mtime = Some(SetTime::Now));
        let kill_suid = set(|a| a.mode = Some(0o755));
        for (req, owner_ok) in [
            (&chmod, true),
            (&give, false),
            (&chgrp, true),
            (&utimes, true),
        ] {
            let want = if owner_ok {
                Ok(())
            } else {
                Err(Error::NotPermitted)
            };
            assert_eq!(check_setattr(&owner, &s, req, false), want, "{req:?}");
            assert_eq!(
                check_setattr(&other, &s, req, false),
                Err(Error::NotPermitted)
            );
            assert_eq!(check_setattr(&root, &s, req, false), Ok(()));
            assert_eq!(check_setattr(&root, &s, req, true), Err(Error::ReadOnly));
        }
        // What the kernel asks for any writer.
        assert_eq!(check_setattr(&other, &s, &kill_suid, false), Ok(()));
        assert_eq!(check_setattr(&other, &s, &touch, false), Ok(()));
        let mut imm = s;
        imm.flags = flags::IMMUTABLE;
        assert_eq!(
            check_setattr(&root, &imm, &touch, false),
            Err(Error::NotPermitted)
        );
        let mut app = s;
        app.flags = flags::APPEND;
        assert_eq!(
            check_setattr(&root, &app, &chmod, false),
            Err(Error::NotPermitted)
        );
        assert_eq!(check_setattr(&root, &app, &touch, false), Ok(()));
        assert_eq!(check_setattr(&owner, &s, &SetAttr::default(), true), Ok(()));
    }

    #[test]
    fn sticky_directories_and_flags() {
        let mut dir = subject(10, 20, 0o1777, None);
        dir.kind = FileType::Directory;
        let victim = subject(11, 20, 0o644, None);
        let ok = |uid| check_delete(&caller(uid, 99, &[]), &dir, &victim, false);
        assert_eq!(ok(10), Ok(()));
        assert_eq!(ok(11), Ok(()));
        assert_eq!(ok(0), Ok(()));
        assert_eq!(ok(12), Err(Error::NotPermitted));
        let mut app = dir;
        app.flags = flags::APPEND;
        assert_eq!(check_dir_change(&app, false, false), Ok(()));
        assert_eq!(
            check_dir_change(&app, true, false),
            Err(Error::NotPermitted)
        );
        assert_eq!(check_dir_change(&dir, false, true), Err(Error::ReadOnly));
    }

    #[test]
    fn xattr_namespaces_and_sizes() {
        let (root, user) = (caller(0, 0, &[]), caller(1, 1, &[]));
        let names = [b"user.a".to_vec(), b"trusted.t".to_vec()];
        assert_eq!(xattr_list(&names, &root), b"user.a\0trusted.t\0");
        assert_eq!(xattr_list(&names, &user), b"user.a\0");
        assert_eq!(check_getxattr(b"trusted.t", &user), Err(Error::NoData));
        assert_eq!(xattr_reply(b"abc", 0), Ok(XattrReply::Size(3)));
        assert_eq!(xattr_reply(b"abc", 2), Err(Error::Range));
        assert_eq!(xattr_reply(b"abc", 3), Ok(XattrReply::Data(b"abc")));
    }

    #[test]
    fn damage_errnos() {
        use crate::error::errno::*;
        use crate::error::Object;
        use crate::numbers::InodeNo;
        let csum = Error::Checksum {
            object: Object::Inode(InodeNo(12)),
        };
        let bad = Error::corrupt(Object::Inode(InodeNo(12)), "x");
        assert_eq!(errno_for(Request::Other, &csum), EBADMSG);
        assert_eq!(errno_for(Request::Other, &bad), EUCLEAN);
        assert_eq!(errno_for(Request::Read, &csum), EIO);
        assert_eq!(errno_for(Request::Read, &Error::IsDir), EISDIR);
    }
}
