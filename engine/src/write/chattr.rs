//! `chattr`: the inode flags a user reads (`FS_IOC_GETFLAGS`) and changes
//! (`FS_IOC_SETFLAGS`), as the kernel's `ext4_fileattr_get`/`_set` do.
//! Who may change them (the owner; `CAP_LINUX_IMMUTABLE` for immutable
//! and append-only) is the caller's to check, as the kernel's VFS does;
//! what the flags then forbid is the request policy's
//! ([`crate::policy`]).

use crate::attr::Attr;
use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::inode::flags;
use crate::numbers::InodeNo;
use crate::volume::Volume;

use super::namespace::mask_flags;
use super::INODE_CREDITS;

/// What `FS_IOC_GETFLAGS` shows (`EXT4_FL_USER_VISIBLE`).
pub const USER_VISIBLE: u32 = 0x705B_DFFF;
/// What `FS_IOC_SETFLAGS` may change (`EXT4_FL_USER_MODIFIABLE`).
pub const USER_MODIFIABLE: u32 = 0x604B_C0FF;
/// Flags whose change needs more than a new flag word (DAX, case
/// folding, a migration to extents): not done here.
const NEEDS_WORK: u32 = 0x0200_0000 | flags::CASEFOLD | flags::EXTENTS;
/// `EXT4_JOURNAL_DATA_FL`: switching a file to data journaling is refused
/// with EPERM, as the kernel's ext4 (6.18, default `data=ordered` with
/// delayed allocation) answers `chattr +j`.
const JOURNAL_DATA: u32 = 0x4000;

impl<D: BlockDevice> Volume<D> {
    /// The flags `FS_IOC_GETFLAGS` answers for `ino`.
    pub fn get_flags(&self, ino: InodeNo) -> Result<u32> {
        Ok(self.getattr(ino)?.flags & USER_VISIBLE)
    }

    /// `FS_IOC_SETFLAGS`: the user-modifiable flags of `ino` become those
    /// of `new` (as far as its type keeps them: `EXT4_REG_FLMASK`,
    /// `EXT4_OTHER_FLMASK`), its ctime now. EOPNOTSUPP for a flag not
    /// visible to users or one whose change is more than the flag word;
    /// EPERM for data journaling and for any other change of an immutable
    /// inode than clearing immutable.
    pub fn set_flags(&self, ino: InodeNo, new: u32) -> Result<Attr> {
        if new & !USER_VISIBLE != 0 {
            return Err(Error::Unsupported {
                what: "inode flags that are not user-visible",
            });
        }
        let _locks = self.inode_locks().lock(&[ino]);
        let mut inode = self.inode_for_write(ino)?;
        let old = inode.flags;
        let new = mask_flags(inode.mode, new);
        if (old ^ new) & JOURNAL_DATA != 0 {
            return Err(Error::NotPermitted);
        }
        if (old ^ new) & NEEDS_WORK != 0 {
            return Err(Error::Unsupported {
                what: "changing the journal-data, DAX, casefold or extents flag",
            });
        }
        if old & flags::IMMUTABLE != 0
            && new & flags::IMMUTABLE != 0
            && old & USER_VISIBLE & !flags::IMMUTABLE != new & !flags::IMMUTABLE
        {
            return Err(Error::NotPermitted);
        }
        inode.flags = (new & USER_MODIFIABLE) | (old & !USER_MODIFIABLE);
        inode.ctime = self.now();
        let mut h = self.begin(INODE_CREDITS)?;
        if let Err(e) = self.write_inode(&mut h, &mut inode, false) {
            return Err(h.abort(e));
        }
        drop(h);
        inode.attr(self.sb())
    }
}

/// ext4 flags and their `FS_XFLAG_*` twins (`FS_IOC_FSGETXATTR`, as the
/// kernel's `fileattr_fill_flags` pairs them).
const XFLAGS: [(u32, u32); 7] = [
    (flags::IMMUTABLE, 0x8),
    (flags::APPEND, 0x10),
    (flags::SYNC, 0x20),
    (flags::NOATIME, 0x40),
    (flags::NODUMP, 0x80),
    (flags::PROJINHERIT, 0x200),
    (0x0200_0000, 0x8000),
];

/// The `fsx_xflags` of an inode with ext4 flags `flags`.
pub fn xflags_of(flags: u32) -> u32 {
    XFLAGS
        .iter()
        .filter(|(f, _)| flags & f != 0)
        .fold(0, |acc, (_, x)| acc | x)
}

/// `old` flags changed as `fsx_xflags` `xflags` asks (`FS_IOC_FSSETXATTR`):
/// the flags with an xflag twin follow it, the others stay.
pub fn flags_with_xflags(old: u32, xflags: u32) -> u32 {
    XFLAGS.iter().fold(
        old,
        |acc, &(f, x)| {
            if xflags & x != 0 {
                acc | f
            } else {
                acc & !f
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xflags_round_trip() {
        let f = flags::IMMUTABLE | flags::NODUMP | flags::EXTENTS;
        assert_eq!(xflags_of(f), 0x8 | 0x80);
        assert_eq!(flags_with_xflags(f, 0x10), flags::APPEND | flags::EXTENTS);
    }
}
