//! Recovery on the device: the plan's blocks written home, the device
//! flushed, then the journal marked empty and `needs_recovery` cleared —
//! what the kernel does when it mounts read-write and what
//! `e2fsck -E journal_only` does, so the image needs no recovery after.
//!
//! The two differ only when recovery finds damage, and [`Policy`] picks
//! one: the kernel refuses the mount (we then write nothing), while
//! e2fsck replays what is intact, empties the journal anyway and marks the
//! filesystem for a full check.

use alloc::vec;
use alloc::vec::Vec;

use zerocopy::{FromBytes, IntoBytes};

use super::fast_commit::{self, Area};
use super::format::{self, JournalSuperblock};
use super::log::Log;
use super::overlay::Overlaid;
use super::scan::{self, Plan, ReplayStats};
use super::JournalError;
use crate::checksum::crc32c;
use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::features::{compat, incompat};
use crate::superblock::{RawSuperblock, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE};
use crate::volume::{OpenOptions, Recovery, Volume};

/// What to do when recovery finds damage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// As the kernel at mount: refuse (and leave the image untouched).
    Kernel,
    /// As `e2fsck -E journal_only`: replay what is intact, empty the
    /// journal, and mark the filesystem not clean (or with errors) so a
    /// full check follows.
    E2fsck,
}

/// What [`recover`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    pub stats: ReplayStats,
    /// The damage found (policy `E2fsck` only; `Kernel` refuses instead).
    pub problem: Option<JournalError>,
    /// Whether the filesystem was marked for a full check.
    pub marked: bool,
}

/// `s_state` bits.
const STATE_VALID: u16 = 1;
const STATE_ERROR: u16 = 2;

/// Plan recovery of the filesystem on `vol` (opened without replay): find
/// the journal, run the passes, and refuse fast commits it cannot replay.
pub(crate) fn make_plan<D: BlockDevice>(
    vol: &Volume<D>,
    journal: Option<&dyn BlockDevice>,
    budget: usize,
) -> Result<Plan> {
    let log = Log::open(vol, journal)?;
    let dev_blocks = vol.device().size() / vol.sb().block_size as u64;
    let plan = scan::plan(&log, dev_blocks, budget)?;
    if plan.replayable
        && vol.sb().has_compat(compat::FAST_COMMIT)
        && log.fc.is_some()
        && fast_commit::scan(&log, plan.stats.end_tid, vol.sb().inode_size as usize)? != Area::Stale
    {
        return Err(JournalError::FastCommit.into());
    }
    Ok(plan)
}

/// Recover the filesystem on `dev` in place: replay its journal (on the
/// external device `journal` if it has one), flush, empty the journal and
/// clear `needs_recovery`. `Ok(None)` when it needs no recovery. `budget`
/// bounds the plan's memory as for an in-memory replay.
pub fn recover<D: BlockDevice>(
    dev: &D,
    journal: Option<&dyn BlockDevice>,
    policy: Policy,
    budget: usize,
) -> Result<Option<Recovered>> {
    let opts = OpenOptions {
        // Only the journal inode and its map are read.
        cache_bytes: 256 << 10,
        mapping_cache_bytes: 64 << 10,
        inode_cache_bytes: 16 << 10,
        recovery: Recovery::Skip,
        ..OpenOptions::default()
    };
    // Not `Volume::open`, which recovers.
    let vol = Volume::assemble(Overlaid::new(dev, None), &opts, None)?;
    if !vol.sb().needs_recovery() {
        return Ok(None);
    }
    let plan = make_plan(&vol, journal, budget)?;
    if policy == Policy::Kernel {
        if let Some(p) = plan.problem() {
            return Err(p.into());
        }
    }
    let log = Log::open(&vol, journal)?;
    let jdev = log.device();
    let bs = vol.sb().block_size;
    write_blocks(dev, jdev, bs, &plan)?;
    dev.flush()?;

    // The journal superblock: empty, and (after a clean replay) expecting
    // the transaction after the last one.
    let jsb_at = log.superblock_location()?;
    let mut raw = vec![0u8; format::SIZE];
    jdev.read_at(jsb_at, &mut raw)?;
    let mut jsb = JournalSuperblock::read_from_bytes(&raw)
        .map_err(|_| JournalError::Superblock("journal block too small"))?;
    let recovered_ok = plan.replayable && plan.error.is_none();
    if recovered_ok {
        jsb.sequence = plan.stats.end_tid.wrapping_add(1).into();
    }
    jsb.start = 0.into();
    // An error the journal recorded (its errno, or a corrupt commit)
    // becomes the filesystem's, as both the kernel and e2fsck do.
    let journal_error = jsb.errno.get() != 0 || plan.failed_commit.is_some();
    jsb.errno = 0.into();
    if jsb.has_csum() {
        let bytes: &[u8; format::SIZE] = jsb.as_bytes().try_into().expect("1024 bytes");
        jsb.checksum = format::checksum(bytes).into();
    }
    jdev.write_at(jsb_at, jsb.as_bytes())?;
    jdev.flush()?;

    // The filesystem superblock, as replayed.
    let mut bytes = vec![0u8; SUPERBLOCK_SIZE];
    dev.read_at(SUPERBLOCK_OFFSET, &mut bytes)?;
    let mut sb = RawSuperblock::read_from_bytes(&bytes).map_err(|_| Error::NotExt4)?;
    let mut marked = false;
    sb.feature_incompat = (sb.feature_incompat.get() & !incompat::RECOVER).into();
    let mut state = sb.state.get();
    if !recovered_ok {
        state &= !STATE_VALID;
        marked = true;
    }
    if journal_error {
        state |= STATE_ERROR;
        marked = true;
    }
    sb.state = state.into();
    if vol.sb().metadata_csum() {
        sb.checksum = crc32c(!0, &sb.as_bytes()[..SUPERBLOCK_SIZE - 4]).into();
    }
    dev.write_at(SUPERBLOCK_OFFSET, sb.as_bytes())?;
    dev.flush()?;
    Ok(Some(Recovered {
        stats: plan.stats,
        problem: plan.problem(),
        marked,
    }))
}

/// Write every planned block home, runs of blocks consecutive both in the
/// log and on the device in one request each (up to 1 MiB).
fn write_blocks<D: BlockDevice>(
    dev: &D,
    jdev: &dyn BlockDevice,
    bs: u32,
    plan: &Plan,
) -> Result<()> {
    let bs = bs as usize;
    let max = (1usize << 20).max(bs) / bs;
    let mut buf: Vec<u8> = vec![0u8; max * bs];
    let blocks = &plan.blocks;
    let mut i = 0;
    while i < blocks.len() {
        let mut n = 1;
        while i + n < blocks.len()
            && n < max
            && blocks[i + n].target.0 == blocks[i].target.0 + n as u64
            && blocks[i + n].src == blocks[i].src + (n * bs) as u64
        {
            n += 1;
        }
        let chunk = &mut buf[..n * bs];
        jdev.read_at(blocks[i].src, chunk)?;
        for (k, b) in blocks[i..i + n].iter().enumerate() {
            if b.escaped() {
                chunk[k * bs..k * bs + 4].copy_from_slice(&format::MAGIC.to_be_bytes());
            }
        }
        dev.write_blocks(blocks[i].target.0, bs as u32, chunk)
            .map_err(Error::Io)?;
        i += n;
    }
    Ok(())
}
