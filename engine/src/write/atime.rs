//! Access times: when a read of a file, a listing of a directory or a
//! readlink updates the inode's atime, as the kernel's
//! `atime_needs_update` decides (`relatime`, `strictatime`, `noatime`,
//! `nodiratime`, the `noatime` inode flag), and the update, which changes
//! nothing else (no ctime, as `touch_atime`).

use crate::attr::{FileType, Timestamp};
use crate::device::BlockDevice;
use crate::error::Result;
use crate::inode::{flags, Inode};
use crate::numbers::InodeNo;
use crate::volume::Volume;

use super::fmap::INODE_CREDITS;

/// The mount's atime rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AtimeMode {
    /// `relatime` (the kernel's default): only when the atime is not after
    /// the mtime or the ctime, or is a day old.
    #[default]
    Relative,
    /// `strictatime`: on every access.
    Strict,
    /// `noatime`: never.
    Never,
}

/// When accesses update atimes: the mount's rule and `nodiratime`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AtimeRule {
    pub mode: AtimeMode,
    /// `nodiratime`: never for directories.
    pub nodiratime: bool,
}

/// A day: `relatime` updates an atime at least this old.
const RELATIME_SECS: i64 = 24 * 60 * 60;

impl AtimeRule {
    /// Whether an access to `inode` at `now` updates its atime (the
    /// kernel's `atime_needs_update` with `relatime_need_update`).
    pub fn needs_update(&self, inode: &Inode, now: Timestamp) -> bool {
        if inode.has_flag(flags::NOATIME) {
            return false;
        }
        if self.nodiratime && inode.kind == Some(FileType::Directory) {
            return false;
        }
        let due = match self.mode {
            AtimeMode::Never => false,
            AtimeMode::Strict => true,
            AtimeMode::Relative => {
                inode.mtime >= inode.atime
                    || inode.ctime >= inode.atime
                    || now.sec - inode.atime.sec >= RELATIME_SECS
            }
        };
        due && inode.atime != now
    }
}

impl<D: BlockDevice> Volume<D> {
    /// An access to `ino` (a read, a listing, a readlink): set its atime
    /// to now when `rule` says so. Nothing on a read-only volume.
    pub fn touch_atime(&self, ino: InodeNo, rule: AtimeRule) -> Result<()> {
        if self.read_only() || rule.mode == AtimeMode::Never {
            return Ok(());
        }
        // Most accesses change nothing: decide before any lock or handle.
        let now = self.now();
        if !rule.needs_update(&*self.live_inode(ino)?, now) {
            return Ok(());
        }
        let _locks = self.inode_locks().lock(&[ino]);
        let mut inode = self.inode_for_write(ino)?;
        if !rule.needs_update(&inode, now) {
            return Ok(());
        }
        inode.atime = now;
        let mut h = self.begin(INODE_CREDITS)?;
        if let Err(e) = self.write_inode(&mut h, &mut inode, false) {
            return Err(h.abort(e));
        }
        Ok(())
    }
}
