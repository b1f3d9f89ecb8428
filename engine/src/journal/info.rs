//! What `info` shows of the journal: where it is, its superblock, and
//! whether it needs recovery (and what recovery did at open).

use alloc::vec::Vec;

use super::format::{feature, JournalSuperblock};
use super::log::Log;
use crate::device::BlockDevice;
use crate::error::Result;
use crate::volume::{Replay, Volume};

/// The journal as its superblock describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalInfo {
    /// On an external device rather than in an inode.
    pub external: bool,
    pub block_size: u32,
    /// Length in blocks (`s_maxlen`).
    pub blocks: u32,
    /// First log block (`s_first`).
    pub first: u32,
    /// First transaction expected (`s_sequence`).
    pub sequence: u32,
    /// First block of the live log (`s_start`); 0 when empty.
    pub start: u32,
    pub errno: i32,
    pub compat: u32,
    pub incompat: u32,
    pub ro_compat: u32,
    /// crc32c of the superblock (checksums v2/v3 only).
    pub checksum: Option<u32>,
    /// Fast-commit blocks at the end of the journal.
    pub fast_commit_blocks: Option<u32>,
    /// Whether the filesystem on disk says the journal needs recovery.
    pub needs_recovery: bool,
    /// What recovery did when the volume was opened.
    pub replay: Option<Replay>,
}

impl JournalInfo {
    /// Feature names, as `dumpe2fs` spells them.
    pub fn feature_names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.compat & feature::COMPAT_CHECKSUM != 0 {
            v.push("journal_checksum");
        }
        for (bit, name) in [
            (feature::INCOMPAT_REVOKE, "journal_incompat_revoke"),
            (feature::INCOMPAT_64BIT, "journal_64bit"),
            (feature::INCOMPAT_ASYNC_COMMIT, "journal_async_commit"),
            (feature::INCOMPAT_CSUM_V2, "journal_checksum_v2"),
            (feature::INCOMPAT_CSUM_V3, "journal_checksum_v3"),
            (feature::INCOMPAT_FAST_COMMIT, "journal_fast_commit"),
        ] {
            if self.incompat & bit != 0 {
                v.push(name);
            }
        }
        v
    }
}

impl<D: BlockDevice> Volume<D> {
    /// The journal's superblock and state; `external` is the journal
    /// device of a filesystem whose journal is not in an inode. `Ok(None)`
    /// without a journal.
    pub fn journal_info(&self, external: Option<&dyn BlockDevice>) -> Result<Option<JournalInfo>> {
        let sb = self.sb();
        if !sb.has_compat(crate::features::compat::HAS_JOURNAL) {
            return Ok(None);
        }
        let log = Log::open(self, external)?;
        let j: &JournalSuperblock = &log.sb;
        let fc = j.incompat() & feature::INCOMPAT_FAST_COMMIT != 0;
        Ok(Some(JournalInfo {
            external: log.external,
            block_size: j.blocksize.get(),
            blocks: j.maxlen.get(),
            first: j.first.get(),
            sequence: j.sequence.get(),
            start: j.start.get(),
            errno: j.errno.get() as i32,
            compat: j.compat(),
            incompat: j.incompat(),
            ro_compat: j.ro_compat(),
            checksum: j.has_csum().then(|| j.checksum.get()),
            fast_commit_blocks: fc.then(|| j.maxlen.get() - log.last),
            needs_recovery: self.replay().is_some_and(|r| r.in_memory) || sb.needs_recovery(),
            replay: self.replay().copied(),
        }))
    }
}
