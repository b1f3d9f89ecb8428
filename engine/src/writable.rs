//! Read-write volumes: which features the engine keeps consistent when it
//! writes ([`WRITABLE`]), the superblock's mount state (as the kernel's
//! ext4 keeps it), and a clean close.

use core::sync::atomic::Ordering;

use zerocopy::FromBytes;

use crate::checksum::crc32c;
use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::features::{compat, incompat, ro_compat};
use crate::numbers::PhysBlock;
use crate::superblock::{RawSuperblock, Superblock, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE};
use crate::volume::Volume;

/// Who asks for a change: decides whether the root-reserved blocks may be
/// used (the kernel: `s_def_resuid`, `s_def_resgid`, or
/// `CAP_SYS_RESOURCE`), and owns what it creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cred {
    pub uid: u32,
    pub gid: u32,
    /// The caller holds `CAP_SYS_RESOURCE` (root usually does).
    pub cap_resource: bool,
    /// The caller's umask, applied to a new object's mode only when its
    /// directory has no default ACL (the kernel's `posix_acl_create`). A
    /// frontend whose kernel already applied it passes 0.
    pub umask: u16,
}

impl Cred {
    /// Root with every capability.
    pub const ROOT: Cred = Cred {
        uid: 0,
        gid: 0,
        cap_resource: true,
        umask: 0,
    };

    /// An ordinary user.
    pub fn user(uid: u32, gid: u32) -> Cred {
        Cred {
            uid,
            gid,
            cap_resource: false,
            umask: 0,
        }
    }

    /// The same caller with `umask`.
    pub fn with_umask(self, umask: u16) -> Cred {
        Cred {
            umask: umask & 0o777,
            ..self
        }
    }

    pub fn may_use_reserved(&self, sb: &Superblock) -> bool {
        self.cap_resource
            || self.uid == sb.def_resuid as u32
            || (sb.def_resgid != 0 && self.gid == sb.def_resgid as u32)
    }
}

/// A feature bit in one of the three superblock words.
#[derive(Clone, Copy, Debug)]
pub enum Word {
    Compat(u32),
    Incompat(u32),
    RoCompat(u32),
}

/// The features a read-write open allows: the write path keeps every one
/// of them consistent (tested against `e2fsck -fn` and the kernel). Any
/// other bit refuses a read-write open with the reason from [`REFUSED`].
/// Extend this table as the write path learns a feature.
pub const WRITABLE: &[Word] = &[
    // Every transaction goes through the journal (journal::writer).
    Word::Compat(compat::HAS_JOURNAL),
    // Never written: full commits only, the area left as it is but for
    // a stale head (journal::writer).
    Word::Compat(compat::FAST_COMMIT),
    Word::Compat(compat::EXT_ATTR),
    Word::Compat(compat::RESIZE_INODE),
    Word::Compat(compat::DIR_INDEX),
    Word::Compat(compat::DIR_PREALLOC),
    Word::Compat(compat::SPARSE_SUPER2),
    Word::Compat(compat::STABLE_INODES),
    // Orphans go to the orphan file while it has room (else the list);
    // a crash's are cleaned up at the next read-write open.
    Word::Compat(compat::ORPHAN_FILE),
    Word::Incompat(incompat::FILETYPE),
    Word::Incompat(incompat::EXTENTS),
    Word::Incompat(incompat::META_BG),
    Word::Incompat(incompat::INLINE_DATA),
    Word::Incompat(incompat::BIT64),
    Word::Incompat(incompat::FLEX_BG),
    Word::Incompat(incompat::CSUM_SEED),
    // Three-level hash trees and directories past 2 GiB (`i_size_high`).
    Word::Incompat(incompat::LARGEDIR),
    Word::RoCompat(ro_compat::SPARSE_SUPER),
    Word::RoCompat(ro_compat::LARGE_FILE),
    Word::RoCompat(ro_compat::HUGE_FILE),
    Word::RoCompat(ro_compat::GDT_CSUM),
    Word::RoCompat(ro_compat::DIR_NLINK),
    Word::RoCompat(ro_compat::EXTRA_ISIZE),
    Word::RoCompat(ro_compat::METADATA_CSUM),
    Word::RoCompat(ro_compat::ORPHAN_PRESENT),
    // Only with extents and whole-cluster groups (see [`refusal`]).
    Word::RoCompat(ro_compat::BIGALLOC),
];

/// Why a known feature still refuses a read-write open.
pub const REFUSED: &[(&str, &str)] = &[
    (
        "needs_recovery",
        "the journal holds transactions to replay first",
    ),
    (
        "bigalloc",
        "clusters without extents, or groups that are not whole clusters, are not written",
    ),
    ("quota", "quota usage would go stale"),
    ("project", "project quota usage would go stale"),
    (
        "ea_inode",
        "extended attributes in inodes are not written yet",
    ),
    ("encrypt", "encrypted names and contents are not written"),
    (
        "casefold",
        "case-insensitive names are not hashed for writing",
    ),
    ("verity", "verity files are not protected from writes yet"),
    ("mmp", "multi-mount protection is not updated"),
    ("read-only", "the filesystem is marked read-only"),
    (
        "shared_blocks",
        "blocks shared between files cannot be written",
    ),
    ("snapshot", "snapshots are not supported"),
    (
        "external journal",
        "a journal on another device is replayed (journal_path=) but not written; \
         open read-only, or move the journal into the filesystem with tune2fs",
    ),
];

fn allowed(sb: &Superblock) -> (u32, u32, u32) {
    let (mut c, mut i, mut r) = (0, 0, 0);
    for w in WRITABLE {
        match *w {
            Word::Compat(b) => c |= b,
            Word::Incompat(b) => i |= b,
            Word::RoCompat(b) => r |= b,
        }
    }
    (sb.compat & !c, sb.incompat & !i, sb.ro_compat & !r)
}

/// Why `sb` cannot be opened read-write, or `None` when it can.
pub fn refusal(sb: &Superblock) -> Option<Error> {
    let refuse = |feature: &'static str| {
        let why = REFUSED
            .iter()
            .find(|(n, _)| *n == feature)
            .map_or("not supported for writing", |(_, w)| *w);
        Some(Error::NotWritable { feature, why })
    };
    if sb.needs_recovery() {
        return refuse("needs_recovery");
    }
    let (c, i, r) = allowed(sb);
    // Bits nobody named yet are "unknown" to `names`.
    if let Some(name) = crate::features::names(c, i & !incompat::RECOVER, r).first() {
        return refuse(name);
    }
    let unnamed = (c & !compat::KNOWN) | (i & !incompat::SUPPORTED) | (r & !ro_compat::KNOWN);
    if unnamed != 0 {
        return refuse("unknown feature bits");
    }
    if sb.has_ro_compat(ro_compat::BIGALLOC) {
        let ratio = sb.cluster_size / sb.block_size;
        if !sb.has_incompat(incompat::EXTENTS)
            || sb.clusters_per_group as u64 * ratio as u64 != sb.blocks_per_group as u64
        {
            return refuse("bigalloc");
        }
    }
    if sb.has_compat(compat::HAS_JOURNAL) && sb.journal_inum == 0 {
        return refuse("external journal");
    }
    None
}

/// Why a volume on `dev` cannot be opened read-write, or `None` when it
/// can: a device opened without write access ([`Error::ReadOnly`]), or a
/// feature [`refusal`] names. A journal that needs recovery is no reason:
/// a read-write open replays it first.
pub fn device_refusal<D: BlockDevice>(dev: &D) -> Result<Option<Error>> {
    if dev.read_only() {
        return Ok(Some(Error::ReadOnly));
    }
    let mut sb = crate::volume::read_superblock(dev)?;
    sb.incompat &= !incompat::RECOVER;
    Ok(refusal(&sb))
}

/// What a read-write open requires of the device and the features.
pub(crate) fn check_writable<D: BlockDevice>(sb: &Superblock, dev: &D) -> Result<()> {
    if dev.read_only() {
        return Err(Error::ReadOnly);
    }
    match refusal(sb) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `s_state` bit: cleanly unmounted.
pub const STATE_VALID: u16 = 1;
/// The kernel's `EXT4_DFL_MAX_MNT_COUNT`, set when `s_max_mnt_count` is 0.
const DFL_MAX_MNT_COUNT: u16 = 20;

fn set_time(lo: &mut zerocopy::little_endian::U32, hi: &mut u8, sec: i64) {
    *lo = (sec as u32).into();
    *hi = ((sec >> 32) & 0xff) as u8;
}

impl<D: BlockDevice> Volume<D> {
    /// Edit the primary superblock in place (outside any handle: at mount,
    /// commit and close, while no handle is open), then its checksum and
    /// `s_wtime`.
    fn edit_super(&self, f: impl FnOnce(&mut RawSuperblock)) -> Result<()> {
        let bs = self.sb().block_size as u64;
        let blk = SUPERBLOCK_OFFSET / bs;
        let off = (SUPERBLOCK_OFFSET % bs) as usize;
        let now = self.now().sec;
        let csum = self.sb().metadata_csum();
        let (r, new) = self.block_cache().modify(blk, false, |b| {
            let bytes = &mut b[off..off + SUPERBLOCK_SIZE];
            let Ok(raw) = RawSuperblock::mut_from_bytes(bytes) else {
                return;
            };
            f(raw);
            set_time(&mut raw.wtime, &mut raw.wtime_hi, now);
            if csum {
                let c = crc32c(!0, &bytes[..SUPERBLOCK_SIZE - 4]);
                bytes[SUPERBLOCK_SIZE - 4..].copy_from_slice(&c.to_le_bytes());
            }
        })?;
        if new {
            self.txn_add(PhysBlock(blk));
        }
        Ok(r)
    }

    /// What the kernel's ext4 does to the superblock at a read-write mount
    /// (`ext4_setup_super`): one more mount, the mount time, and
    /// `needs_recovery` while the journal is in use — or, without a
    /// journal, "not clean" until a clean close (e2fsck then checks a
    /// crashed image, as it does the kernel's no-journal mounts).
    pub(crate) fn mount_rw(&self, journaled: bool) -> Result<()> {
        let now = self.now().sec;
        self.edit_super(|raw| {
            if raw.max_mnt_count.get() == 0 {
                raw.max_mnt_count = DFL_MAX_MNT_COUNT.into();
            }
            raw.mnt_count = raw.mnt_count.get().wrapping_add(1).into();
            set_time(&mut raw.mtime, &mut raw.mtime_hi, now);
            if journaled {
                raw.feature_incompat = (raw.feature_incompat.get() | incompat::RECOVER).into();
            } else {
                raw.state = (raw.state.get() & !STATE_VALID).into();
            }
            // The orphan file may hold orphans while mounted (cleared at
            // a clean close), as the kernel marks it.
            if raw.feature_compat.get() & compat::ORPHAN_FILE != 0 {
                let r = raw.feature_ro_compat.get() | ro_compat::ORPHAN_PRESENT;
                raw.feature_ro_compat = r.into();
            }
        })?;
        self.commit()
    }

    /// Whether `ro_compat` feature `f` is on: in the superblock as opened,
    /// or turned on since by the write path.
    pub fn has_ro_compat_now(&self, f: u32) -> bool {
        self.sb().has_ro_compat(f) || self.added_ro_compat().load(Ordering::Acquire) & f != 0
    }

    /// Turn `ro_compat` feature `f` on: the superblock gets it with the
    /// next commit (which also holds the change that needed it).
    pub(crate) fn add_ro_compat(&self, f: u32) {
        self.added_ro_compat().fetch_or(f, Ordering::AcqRel);
    }

    /// Write the free counters into the superblock (at each commit; the
    /// kernel writes them when it writes the superblock), with any feature
    /// the write path turned on.
    pub(crate) fn write_super_counts(&self) -> Result<()> {
        let fb = self.counts().free_blocks.load(Ordering::Acquire);
        let fi = self.counts().free_inodes.load(Ordering::Acquire);
        let cluster_ratio = (self.sb().cluster_size / self.sb().block_size) as u64;
        let fb = fb * cluster_ratio;
        let bit64 = self.sb().has_incompat(incompat::BIT64);
        let last_orphan = self.orphans().head();
        let added = self.added_ro_compat().load(Ordering::Acquire);
        self.edit_super(|raw| {
            raw.last_orphan = last_orphan.into();
            if added != 0 {
                raw.feature_ro_compat = (raw.feature_ro_compat.get() | added).into();
            }
            raw.free_blocks_count_lo = (fb as u32).into();
            if bit64 {
                raw.free_blocks_count_hi = ((fb >> 32) as u32).into();
            }
            raw.free_inodes_count = (fi as u32).into();
        })
    }

    /// Close a read-write volume cleanly: commit, checkpoint and empty the
    /// journal, clear `needs_recovery`, restore the superblock's state as
    /// found at open (clean, unless it had errors), flush the device. Afterwards the volume is read-only. Reports the error that
    /// turned the volume read-only earlier, if one did (then only what was
    /// committed before it is on the device). Read-only volumes: nothing.
    pub fn close(&self) -> Result<()> {
        if !self.is_rw_mounted() || self.mark_closed() {
            return Ok(());
        }
        if let Some(e) = self.abort_reason() {
            let _ = self.block_cache().flush();
            return Err(e);
        }
        let orphans_left = self.orphans_at_close()?;
        self.commit()?;
        // The journal checkpointed and marked empty; from here on commits
        // write home, as the kernel writes the superblock at unmount.
        if let Err(e) = self.commit_log().close(self.block_cache()) {
            let e = Error::Io(e);
            self.abort(e.clone());
            return Err(e);
        }
        let state = self.mount_state();
        self.edit_super(|raw| {
            raw.state = state.into();
            if !orphans_left {
                let r = raw.feature_ro_compat.get() & !ro_compat::ORPHAN_PRESENT;
                raw.feature_ro_compat = r.into();
            }
            raw.feature_incompat = (raw.feature_incompat.get() & !incompat::RECOVER).into();
        })?;
        self.commit()?;
        self.block_cache().flush()?;
        self.went_read_only_quietly();
        Ok(())
    }

    /// The kernel's ext4 freeze (`ext4_freeze`): commit, write everything
    /// home, empty the journal and clear `needs_recovery`, so the device
    /// holds a clean filesystem as it stands (a snapshot of it needs no
    /// recovery). The caller lets no change begin until
    /// [`Volume::unfreeze`]; commits meanwhile write home.
    pub fn freeze(&self) -> Result<()> {
        if !self.is_rw_mounted() || self.read_only() {
            return Ok(());
        }
        self.commit()?;
        if !self.commit_log().journaled() {
            return self.block_cache().flush().map_err(Error::Io);
        }
        if let Err(e) = self.commit_log().close(self.block_cache()) {
            let e = Error::Io(e);
            self.abort(e.clone());
            return Err(e);
        }
        // The journal is empty on the device before the flag goes.
        self.edit_super(|raw| {
            raw.feature_incompat = (raw.feature_incompat.get() & !incompat::RECOVER).into();
        })?;
        self.commit()?;
        self.block_cache().flush().map_err(Error::Io)
    }

    /// The thaw after [`Volume::freeze`]: `needs_recovery` again (home,
    /// before any transaction can need it), then commits go through the
    /// journal.
    pub fn unfreeze(&self) -> Result<()> {
        if !self.is_rw_mounted()
            || self.read_only()
            || !self.sb().has_compat(compat::HAS_JOURNAL)
            || self.commit_log().journaled()
        {
            return Ok(());
        }
        self.edit_super(|raw| {
            raw.feature_incompat = (raw.feature_incompat.get() | incompat::RECOVER).into();
        })?;
        self.commit()?;
        self.block_cache().flush().map_err(Error::Io)?;
        self.commit_log().reopen();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    fn sb_with(c: u32, i: u32, r: u32) -> Superblock {
        let mut raw = crate::superblock::small_raw();
        raw.feature_compat = c.into();
        raw.feature_incompat = i.into();
        raw.feature_ro_compat = r.into();
        raw.desc_size = 64u16.into();
        raw.journal_inum = 8.into();
        let b = raw.as_bytes().to_vec();
        Superblock::parse(&raw, &b, 1 << 30).unwrap()
    }

    #[test]
    fn ext4_defaults_are_writable_and_others_are_named() {
        let ext4 = sb_with(
            compat::HAS_JOURNAL | compat::EXT_ATTR | compat::RESIZE_INODE | compat::DIR_INDEX,
            incompat::FILETYPE | incompat::EXTENTS | incompat::BIT64 | incompat::FLEX_BG,
            ro_compat::SPARSE_SUPER
                | ro_compat::LARGE_FILE
                | ro_compat::HUGE_FILE
                | ro_compat::DIR_NLINK
                | ro_compat::EXTRA_ISIZE
                | ro_compat::METADATA_CSUM,
        );
        assert!(refusal(&ext4).is_none());
        let quota = sb_with(0, incompat::EXTENTS, ro_compat::QUOTA);
        assert!(matches!(
            refusal(&quota),
            Some(Error::NotWritable {
                feature: "quota",
                ..
            })
        ));
        // ext2 and ext3 (block maps), inline data and meta_bg write too.
        let ext2 = sb_with(0, incompat::FILETYPE, ro_compat::SPARSE_SUPER);
        assert!(refusal(&ext2).is_none());
        let ext3 = sb_with(compat::HAS_JOURNAL, incompat::FILETYPE, 0);
        assert!(refusal(&ext3).is_none());
        let inline = sb_with(
            0,
            incompat::EXTENTS | incompat::INLINE_DATA | incompat::META_BG,
            0,
        );
        assert!(refusal(&inline).is_none());
        // bigalloc needs extents.
        let clusters = {
            let mut raw = crate::superblock::small_raw();
            raw.feature_incompat = incompat::FILETYPE.into();
            raw.feature_ro_compat = ro_compat::BIGALLOC.into();
            raw.log_cluster_size = 4u32.into();
            raw.clusters_per_group = 512u32.into();
            let b = raw.as_bytes().to_vec();
            Superblock::parse(&raw, &b, 1 << 30).unwrap()
        };
        assert!(matches!(
            refusal(&clusters),
            Some(Error::NotWritable {
                feature: "bigalloc",
                ..
            })
        ));
        let unknown = sb_with(0, incompat::EXTENTS, 1 << 30);
        assert!(refusal(&unknown).is_some());
        let mut raw = crate::superblock::small_raw();
        raw.feature_compat = compat::HAS_JOURNAL.into();
        raw.feature_incompat = incompat::EXTENTS.into();
        raw.desc_size = 64u16.into();
        let b = raw.as_bytes().to_vec();
        let external = Superblock::parse(&raw, &b, 1 << 30).unwrap();
        assert!(matches!(
            refusal(&external),
            Some(Error::NotWritable {
                feature: "external journal",
                ..
            })
        ));
    }
}
