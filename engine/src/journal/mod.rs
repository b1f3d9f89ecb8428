//! The jbd2 journal: its on-disk format, recovery — replaying the
//! transactions a crash left in the log, as the kernel's jbd2 does at
//! mount and `e2fsck` does before a check — and the writer that logs a
//! read-write volume's transactions.
//!
//! - [`format`]: the on-disk structures and their checksums (shared with
//!   the journal writer);
//! - [`log`]: where the log lives (the journal inode or an external
//!   device), its superblock checked as the kernel checks it;
//! - [`scan`]: the recovery passes, which turn the log into a replay plan:
//!   for every filesystem block, the log block holding its newest copy;
//! - [`overlay`]: the plan applied in memory, between the block cache and
//!   the device, for read-only opens that must not touch the image;
//! - [`replay`]: the plan written to the device, then the journal marked
//!   empty and `needs_recovery` cleared (read-write opens, `recover`);
//! - [`fast_commit`]: whether the fast-commit area holds commits to
//!   replay (they are not replayed; see there);
//! - [`writer`]: the journal writer, how a read-write volume's
//!   transactions commit (with [`ring`], where the log blocks are, and
//!   [`live`], what the live log holds).

mod fast_commit;
#[doc(hidden)]
pub mod format;
mod info;
mod live;
pub(crate) mod log;
pub(crate) mod overlay;
pub(crate) mod replay;
mod ring;
mod scan;
pub(crate) mod writer;

use core::fmt;

use crate::error::IoError;
use crate::numbers::PhysBlock;

pub use info::JournalInfo;
pub use replay::{recover, Policy, Recovered};
pub use scan::ReplayStats;

/// Why the journal cannot be replayed (or read). Log block numbers are
/// counted from the journal's start, as `debugfs logdump` prints them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalError {
    /// The journal superblock, or the inode or device holding the
    /// journal, is unusable.
    Superblock(&'static str),
    /// The journal uses jbd2 features this engine does not know.
    UnknownFeatures { incompat: u32, ro_compat: u32 },
    /// Reading log block `block` failed.
    Io { block: u32, err: IoError },
    /// Log block `block` lies past the journal or in a hole of its inode.
    BadLogBlock { block: u32 },
    /// A descriptor or revoke block of transaction `tid` whose checksum
    /// does not match, where the kernel gives up.
    Checksum {
        tid: u32,
        block: u32,
        what: &'static str,
    },
    /// The copy of filesystem block `target` logged by transaction `tid`
    /// (at block `at` of the journal's device) does not match its tag's
    /// checksum.
    TagChecksum {
        tid: u32,
        at: PhysBlock,
        target: PhysBlock,
    },
    /// Transaction `tid` holds a descriptor or revoke block that fails its
    /// checksum, and its commit block (at log block `commit`) is not older
    /// than the one before, so the blocks are not stale leftovers.
    DamagedTransaction { tid: u32, commit: u32 },
    /// A revoke block whose count runs past the block.
    RevokeCount { tid: u32, block: u32 },
    /// The commit block of transaction `tid` fails its checksum: the
    /// transactions before it are replayable, it and the rest are not.
    CorruptTransaction { tid: u32 },
    /// The log runs around the whole journal without ending.
    Endless,
    /// A logged block belongs past the end of the device.
    TargetPastDevice { tid: u32, target: PhysBlock },
    /// Replaying in memory would need more than the replay budget.
    TooLarge { blocks: u64, need: u64, budget: u64 },
    /// The journal is on an external device that was not given.
    ExternalNeeded { uuid: [u8; 16], dev: u32 },
    /// The external journal given is not this filesystem's.
    WrongExternal(&'static str),
    /// The fast-commit area holds commits newer than the log's last
    /// transaction; replaying the log alone would lose them.
    FastCommit,
}

impl JournalError {
    pub fn errno(&self) -> i32 {
        use crate::error::errno::*;
        match self {
            JournalError::Io { err, .. } => err.errno,
            JournalError::TooLarge { .. } => ENOMEM,
            JournalError::UnknownFeatures { .. } | JournalError::FastCommit => EOPNOTSUPP,
            JournalError::ExternalNeeded { .. } | JournalError::WrongExternal(_) => EINVAL,
            _ => EUCLEAN,
        }
    }
}

pub(crate) fn uuid_str(u: &[u8; 16]) -> alloc::string::String {
    let h = |r: core::ops::Range<usize>| {
        u[r].iter()
            .map(|b| alloc::format!("{b:02x}"))
            .collect::<alloc::string::String>()
    };
    alloc::format!(
        "{}-{}-{}-{}-{}",
        h(0..4),
        h(4..6),
        h(6..8),
        h(8..10),
        h(10..16)
    )
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalError::Superblock(what) => write!(f, "journal: {what}"),
            JournalError::UnknownFeatures { incompat, ro_compat } => write!(
                f,
                "journal: unknown jbd2 features (incompat {incompat:#x}, ro_compat {ro_compat:#x}); \
                 it cannot be replayed"
            ),
            JournalError::Io { block, err } => {
                write!(f, "journal: reading log block {block} failed (errno {})", err.errno)
            }
            JournalError::BadLogBlock { block } => write!(
                f,
                "journal: log block {block} is past the journal or not mapped by its inode"
            ),
            JournalError::Checksum { tid, block, what } => write!(
                f,
                "journal: the {what} at log block {block} (transaction {tid}) fails its checksum"
            ),
            JournalError::TagChecksum { tid, at, target } => write!(
                f,
                "journal: the copy of block {target} logged by transaction {tid} (at block {at} \
                 of the journal's device) fails its checksum"
            ),
            JournalError::DamagedTransaction { tid, commit } => write!(
                f,
                "journal: transaction {tid} (committed at log block {commit}) holds a descriptor \
                 or revoke block that fails its checksum"
            ),
            JournalError::RevokeCount { tid, block } => write!(
                f,
                "journal: the revoke block at log block {block} (transaction {tid}) claims more \
                 records than it holds"
            ),
            JournalError::CorruptTransaction { tid } => write!(
                f,
                "journal: transaction {tid} is corrupt (its commit block fails its checksum)"
            ),
            JournalError::Endless => {
                write!(f, "journal: the log runs around the whole journal without ending")
            }
            JournalError::TargetPastDevice { tid, target } => write!(
                f,
                "journal: transaction {tid} logs block {target}, past the end of the device"
            ),
            JournalError::TooLarge {
                blocks,
                need,
                budget,
            } => write!(
                f,
                "journal: replaying its {blocks} logged blocks in memory needs {} KiB, more than \
                 the replay budget of {} KiB; raise it (mount option replay_budget=SIZE, \
                 ext4-image --replay-budget SIZE), or recover the image first",
                need.div_ceil(1024),
                budget / 1024
            ),
            JournalError::ExternalNeeded { uuid, dev } => write!(
                f,
                "the journal is on an external device (journal UUID {}, device number {}:{}); \
                 give it with journal_path=PATH (ext4-image --journal PATH)",
                uuid_str(uuid),
                // The kernel's new_encode_dev.
                (dev >> 8) & 0xfff,
                (dev & 0xff) | ((dev >> 12) & 0xfff00)
            ),
            JournalError::WrongExternal(what) => write!(f, "external journal: {what}"),
            JournalError::FastCommit => write!(
                f,
                "journal: the fast-commit area (feature fast_commit) holds commits to replay, \
                 which this version cannot replay; recover the image with the kernel (a \
                 read-write mount) or e2fsck first"
            ),
        }
    }
}
