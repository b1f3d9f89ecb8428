//! jbd2 on disk, as the kernel's `include/linux/jbd2.h` lays it out: every
//! field big-endian (unlike the rest of ext4). One zerocopy type per block
//! kind, the tag layouts, and the checksum of each block kind, shared by
//! recovery and by the journal writer.
//!
//! The log is a ring of blocks after the journal superblock. A transaction
//! is one or more descriptor blocks (each followed by the blocks its tags
//! describe, in order) and revoke blocks, closed by a commit block; every
//! one of those starts with a [`Header`] carrying the transaction id.

use zerocopy::big_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::checksum::{crc32_be, crc32c};
use crate::numbers::PhysBlock;

pub const MAGIC: u32 = 0xC03B_3998;

/// `h_blocktype` values.
pub mod blocktype {
    pub const DESCRIPTOR: u32 = 1;
    pub const COMMIT: u32 = 2;
    /// A version 1 superblock (no fields past `s_errno`, no features).
    pub const SUPERBLOCK_V1: u32 = 3;
    pub const SUPERBLOCK_V2: u32 = 4;
    pub const REVOKE: u32 = 5;
}
pub use blocktype::{SUPERBLOCK_V1, SUPERBLOCK_V2};

/// Journal feature bits (`s_feature_*`; only a version 2 superblock has them).
pub mod feature {
    /// compat: transactions carry a crc32 of their blocks (checksum v1).
    pub const COMPAT_CHECKSUM: u32 = 0x1;
    pub const INCOMPAT_REVOKE: u32 = 0x1;
    /// Block numbers are 64 bits (tags carry `blocknr_high`, revoke
    /// records are 8 bytes).
    pub const INCOMPAT_64BIT: u32 = 0x2;
    pub const INCOMPAT_ASYNC_COMMIT: u32 = 0x4;
    pub const INCOMPAT_CSUM_V2: u32 = 0x8;
    pub const INCOMPAT_CSUM_V3: u32 = 0x10;
    pub const INCOMPAT_FAST_COMMIT: u32 = 0x20;
    /// What the kernel's jbd2 knows (`JBD2_KNOWN_INCOMPAT_FEATURES`); it
    /// knows no ro_compat feature.
    pub const KNOWN_INCOMPAT: u32 = INCOMPAT_REVOKE
        | INCOMPAT_64BIT
        | INCOMPAT_ASYNC_COMMIT
        | INCOMPAT_CSUM_V2
        | INCOMPAT_CSUM_V3
        | INCOMPAT_FAST_COMMIT;
}

/// Descriptor tag flags.
pub mod tag_flag {
    /// The logged block began with [`super::MAGIC`]; its first four bytes
    /// were zeroed in the log and are restored on replay.
    pub const ESCAPE: u16 = 1;
    /// No 16-byte UUID follows this tag (every tag but the first).
    pub const SAME_UUID: u16 = 2;
    pub const DELETED: u16 = 4;
    pub const LAST_TAG: u16 = 8;
}

/// `s_checksum_type` (and a v1 commit block's `h_chksum_type`).
pub mod csum_type {
    /// Checksum v1: crc32 (big-endian) of the transaction's blocks.
    pub const CRC32: u8 = 1;
    pub const MD5: u8 = 2;
    pub const SHA1: u8 = 3;
    /// Checksum v2/v3.
    pub const CRC32C: u8 = 4;
}
pub const CSUM_CRC32C: u8 = csum_type::CRC32C;
/// `h_chksum_size` of a checksum v1 commit block.
pub const CRC32_CHKSUM_SIZE: u8 = 4;

/// The smallest journal the kernel accepts (`JBD2_MIN_JOURNAL_BLOCKS`).
pub const MIN_JOURNAL_BLOCKS: u32 = 1024;
/// Fast-commit blocks when `s_num_fc_blks` is 0
/// (`JBD2_DEFAULT_FAST_COMMIT_BLOCKS`).
pub const DEFAULT_FAST_COMMIT_BLOCKS: u32 = 256;

/// `journal_header_t`: the first 12 bytes of every journal metadata block.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Header {
    pub magic: U32,
    pub blocktype: U32,
    pub sequence: U32,
}
pub const HEADER_SIZE: usize = 12;

impl Header {
    /// Read the header at the start of `block` (`None` if it is shorter).
    pub fn of(block: &[u8]) -> Option<Header> {
        Header::read_from_prefix(block).ok().map(|(h, _)| h)
    }
    pub fn new(blocktype: u32, sequence: u32) -> Header {
        Header {
            magic: MAGIC.into(),
            blocktype: blocktype.into(),
            sequence: sequence.into(),
        }
    }
}

/// `journal_superblock_t`: the journal's first block.
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct JournalSuperblock {
    pub magic: U32,
    pub blocktype: U32,
    pub header_sequence: U32,
    pub blocksize: U32,
    /// Length of the journal in blocks.
    pub maxlen: U32,
    /// First block of the log (after the superblock).
    pub first: U32,
    /// First transaction expected in the log.
    pub sequence: U32,
    /// First block of the live log; 0 when the journal is empty.
    pub start: U32,
    pub errno: U32,
    // Version 2 from here on.
    pub feature_compat: U32,
    pub feature_incompat: U32,
    pub feature_ro_compat: U32,
    pub uuid: [u8; 16],
    pub nr_users: U32,
    pub dynsuper: U32,
    pub max_transaction: U32,
    pub max_trans_data: U32,
    pub checksum_type: u8,
    pub padding2: [u8; 3],
    /// Fast-commit blocks at the end of the journal (0: the default 256).
    pub num_fc_blks: U32,
    /// Where the log ended at the last clean unmount.
    pub head: U32,
    pub padding: [U32; 40],
    pub checksum: U32,
    /// UUIDs of the filesystems sharing an external journal.
    pub users: [u8; 16 * 48],
}
/// Size of the structure, and what its checksum covers.
pub const SIZE: usize = 1024;
/// Where the version 2 fields start.
pub const V2_FIELDS: usize = 0x24;
/// Where `s_checksum` lies.
pub const CHECKSUM_OFFSET: usize = 0xFC;

impl JournalSuperblock {
    pub fn is_v2(&self) -> bool {
        self.blocktype.get() == SUPERBLOCK_V2
    }
    /// Feature words; a version 1 superblock has none, whatever its bytes.
    pub fn compat(&self) -> u32 {
        if self.is_v2() {
            self.feature_compat.get()
        } else {
            0
        }
    }
    pub fn incompat(&self) -> u32 {
        if self.is_v2() {
            self.feature_incompat.get()
        } else {
            0
        }
    }
    pub fn ro_compat(&self) -> u32 {
        if self.is_v2() {
            self.feature_ro_compat.get()
        } else {
            0
        }
    }
    pub fn has_csum(&self) -> bool {
        self.incompat() & (feature::INCOMPAT_CSUM_V2 | feature::INCOMPAT_CSUM_V3) != 0
    }
    /// How the log of this journal is written: tag layout and checksums.
    pub fn log_format(&self) -> LogFormat {
        LogFormat::new(self.compat(), self.incompat(), self.uuid)
    }
}

/// The superblock checksum of the 1024 bytes `raw`: crc32c from ~0 with
/// `s_checksum` taken as zero.
pub fn checksum(raw: &[u8; SIZE]) -> u32 {
    let c = crc32c(!0, &raw[..CHECKSUM_OFFSET]);
    let c = crc32c(c, &[0; 4]);
    crc32c(c, &raw[CHECKSUM_OFFSET + 4..])
}

/// `journal_block_tag3_t`: a descriptor tag under checksum v3 (16 bytes).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Tag3 {
    pub blocknr: U32,
    pub flags: U32,
    pub blocknr_high: U32,
    pub checksum: U32,
}

/// `journal_block_tag_t`: a descriptor tag without checksum v3. On disk it
/// is cut short: 8 bytes (`blocknr`, `checksum`, `flags`), 12 with 64-bit
/// block numbers (`blocknr_high`), and checksum v2 adds 2 bytes of padding
/// after either (10 or 14).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Tag {
    pub blocknr: U32,
    /// Low 16 bits of the block's checksum under checksum v2.
    pub checksum: U16,
    pub flags: U16,
    pub blocknr_high: U32,
}

/// Offsets shared by both tag layouts: the kernel reads `blocknr` at 0,
/// `blocknr_high` at 8 and the flags as a be16 at 6 for either layout (for
/// [`Tag3`] that is the low half of its be32 `flags`).
const TAG_FLAGS16: usize = 6;
const TAG_HIGH: usize = 8;
/// The UUID that follows a tag without [`tag_flag::SAME_UUID`].
pub const TAG_UUID_SIZE: usize = 16;

/// `jbd2_journal_block_tail`: the last 4 bytes of a descriptor or revoke
/// block under checksum v2/v3.
pub const TAIL_SIZE: usize = 4;

/// `jbd2_journal_revoke_header_t`.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RevokeHeader {
    pub header: Header,
    /// Bytes of the block in use, this header included.
    pub count: U32,
}
pub const REVOKE_HEADER_SIZE: usize = 16;

/// `struct commit_header`.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct CommitHeader {
    pub header: Header,
    /// [`csum_type`] of `chksum[0]` under checksum v1; 0 otherwise.
    pub chksum_type: u8,
    pub chksum_size: u8,
    pub padding: [u8; 2],
    /// `chksum[0]`: the v1 crc32 or the v2/v3 crc32c of the block.
    pub chksum: [U32; 8],
    pub commit_sec: U64,
    pub commit_nsec: U32,
}
pub const COMMIT_HEADER_SIZE: usize = 60;
const COMMIT_CHKSUM_OFFSET: usize = 16;

/// How one journal's log is encoded: what its feature bits imply for tag
/// sizes, block numbers and checksums.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogFormat {
    pub bit64: bool,
    /// Checksum v1 (`COMPAT_CHECKSUM`): a crc32 over each transaction.
    pub csum_v1: bool,
    pub csum_v2: bool,
    pub csum_v3: bool,
    pub async_commit: bool,
    /// crc32c(~0, journal UUID): where every v2/v3 block checksum starts.
    pub seed: u32,
}

impl LogFormat {
    pub fn new(compat: u32, incompat: u32, uuid: [u8; 16]) -> LogFormat {
        LogFormat {
            bit64: incompat & feature::INCOMPAT_64BIT != 0,
            csum_v1: compat & feature::COMPAT_CHECKSUM != 0,
            csum_v2: incompat & feature::INCOMPAT_CSUM_V2 != 0,
            csum_v3: incompat & feature::INCOMPAT_CSUM_V3 != 0,
            async_commit: incompat & feature::INCOMPAT_ASYNC_COMMIT != 0,
            seed: crc32c(!0, &uuid),
        }
    }

    /// Whether descriptor, revoke and commit blocks and tags carry crc32c.
    pub fn csum_v2_or_v3(&self) -> bool {
        self.csum_v2 || self.csum_v3
    }

    /// Bytes of one descriptor tag (`journal_tag_bytes`): 16 under v3,
    /// else 8, +4 with 64-bit block numbers, +2 under v2.
    pub fn tag_bytes(&self) -> usize {
        if self.csum_v3 {
            return core::mem::size_of::<Tag3>();
        }
        let mut n = core::mem::size_of::<Tag>();
        if self.csum_v2 {
            n += 2;
        }
        if !self.bit64 {
            n -= 4;
        }
        n
    }

    /// Bytes at the end of a descriptor or revoke block that hold its
    /// checksum tail (0 without checksum v2/v3).
    pub fn tail_bytes(&self) -> usize {
        if self.csum_v2_or_v3() {
            TAIL_SIZE
        } else {
            0
        }
    }

    /// Bytes of one revoke record.
    pub fn revoke_record_bytes(&self) -> usize {
        if self.bit64 {
            8
        } else {
            4
        }
    }

    /// The tags of descriptor block `block`, in order, as the kernel walks
    /// them (`count_tags`): while a whole tag fits before the tail, up to
    /// and including the one flagged [`tag_flag::LAST_TAG`].
    pub fn tags<'a>(&self, block: &'a [u8]) -> Tags<'a> {
        Tags {
            block,
            at: HEADER_SIZE,
            end: block.len().saturating_sub(self.tail_bytes()),
            fmt: *self,
            done: false,
        }
    }

    /// Byte size of `n` tags written with UUIDs as the kernel writes them
    /// (a UUID after the first tag only), for a writer sizing its block.
    pub fn tags_size(&self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        n * self.tag_bytes() + TAG_UUID_SIZE
    }

    /// Encode a tag for `blocknr` with `flags` and (v2/v3) the logged
    /// block's checksum `csum` into `out` (`tag_bytes()` long).
    pub fn write_tag(&self, out: &mut [u8], blocknr: PhysBlock, flags: u16, csum: u32) {
        let blocknr = blocknr.0;
        out.fill(0);
        out[..4].copy_from_slice(&(blocknr as u32).to_be_bytes());
        if self.csum_v3 {
            out[4..8].copy_from_slice(&(flags as u32).to_be_bytes());
            out[12..16].copy_from_slice(&csum.to_be_bytes());
        } else {
            out[4..6].copy_from_slice(&(csum as u16).to_be_bytes());
            out[6..8].copy_from_slice(&flags.to_be_bytes());
        }
        if self.bit64 {
            out[TAG_HIGH..TAG_HIGH + 4].copy_from_slice(&((blocknr >> 32) as u32).to_be_bytes());
        }
    }

    /// Checksum of a descriptor or revoke block: crc32c from the seed over
    /// the block with its tail taken as zero.
    pub fn tail_checksum(&self, block: &[u8]) -> u32 {
        let n = block.len().saturating_sub(TAIL_SIZE);
        crc32c(crc32c(self.seed, &block[..n]), &[0; TAIL_SIZE])
    }
    /// Whether `block`'s tail holds its checksum (always true without v2/v3).
    pub fn tail_ok(&self, block: &[u8]) -> bool {
        if !self.csum_v2_or_v3() || block.len() < TAIL_SIZE {
            return !self.csum_v2_or_v3();
        }
        be32(block, block.len() - TAIL_SIZE) == Some(self.tail_checksum(block))
    }
    /// Store `block`'s checksum in its tail (for a writer).
    pub fn set_tail(&self, block: &mut [u8]) {
        let c = self.tail_checksum(block);
        let n = block.len() - TAIL_SIZE;
        block[n..].copy_from_slice(&c.to_be_bytes());
    }

    /// Checksum of a commit block: crc32c from the seed over the whole
    /// block with `chksum[0]` taken as zero.
    pub fn commit_checksum(&self, block: &[u8]) -> u32 {
        let a = COMMIT_CHKSUM_OFFSET;
        let c = crc32c(self.seed, &block[..a.min(block.len())]);
        let c = crc32c(c, &[0; 4]);
        crc32c(c, block.get(a + 4..).unwrap_or(&[]))
    }
    /// Whether commit block `block` carries its checksum (v2/v3 only).
    pub fn commit_ok(&self, block: &[u8]) -> bool {
        !self.csum_v2_or_v3()
            || be32(block, COMMIT_CHKSUM_OFFSET) == Some(self.commit_checksum(block))
    }
    /// Whether only the commit header made it to disk with its checksum,
    /// the rest of the block reading as zeros to the checksum (the kernel
    /// accepts such an "incomplete commit block").
    pub fn commit_ok_partial(&self, block: &[u8]) -> bool {
        if !self.csum_v2_or_v3() || block.len() < COMMIT_HEADER_SIZE {
            return false;
        }
        let a = COMMIT_CHKSUM_OFFSET;
        let c = crc32c(self.seed, &block[..a]);
        let c = crc32c(c, &[0; 4]);
        let mut c = crc32c(c, &block[a + 4..COMMIT_HEADER_SIZE]);
        // The zeros after the header, in pieces.
        let zeros = [0u8; 256];
        let mut left = block.len() - COMMIT_HEADER_SIZE;
        while left > 0 {
            let n = left.min(zeros.len());
            c = crc32c(c, &zeros[..n]);
            left -= n;
        }
        be32(block, a) == Some(c)
    }
    /// Store a commit block's checksum (v2/v3) in `chksum[0]`.
    pub fn set_commit_checksum(&self, block: &mut [u8]) {
        let c = self.commit_checksum(block);
        block[COMMIT_CHKSUM_OFFSET..COMMIT_CHKSUM_OFFSET + 4].copy_from_slice(&c.to_be_bytes());
    }

    /// Checksum of a logged block `data` of transaction `sequence`, as a
    /// v3 tag stores it (v2 keeps its low 16 bits).
    pub fn block_checksum(&self, sequence: u32, data: &[u8]) -> u32 {
        crc32c(crc32c(self.seed, &sequence.to_be_bytes()), data)
    }
}

/// One descriptor tag, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TagInfo {
    /// The filesystem block the logged block belongs at.
    pub blocknr: PhysBlock,
    pub flags: u16,
    /// Stored checksum: 32 bits under v3, 16 under v2, 0 otherwise.
    pub checksum: u32,
}

impl TagInfo {
    pub fn escaped(&self) -> bool {
        self.flags & tag_flag::ESCAPE != 0
    }
    /// Whether `data` (the logged block of transaction `sequence`) matches
    /// the tag's checksum; always true without checksum v2/v3.
    pub fn checksum_ok(&self, fmt: &LogFormat, sequence: u32, data: &[u8]) -> bool {
        let c = fmt.block_checksum(sequence, data);
        if fmt.csum_v3 {
            self.checksum == c
        } else if fmt.csum_v2 {
            self.checksum == c & 0xFFFF
        } else {
            true
        }
    }
}

/// Iterator over a descriptor block's tags; see [`LogFormat::tags`].
pub struct Tags<'a> {
    block: &'a [u8],
    at: usize,
    end: usize,
    fmt: LogFormat,
    done: bool,
}

impl Iterator for Tags<'_> {
    type Item = TagInfo;
    fn next(&mut self) -> Option<TagInfo> {
        let n = self.fmt.tag_bytes();
        if self.done || self.at + n > self.end {
            return None;
        }
        let t = &self.block[self.at..self.at + n];
        let lo = be32(t, 0).unwrap_or(0) as u64;
        let hi = if self.fmt.bit64 {
            be32(t, TAG_HIGH).unwrap_or(0) as u64
        } else {
            0
        };
        let flags = u16::from_be_bytes([t[TAG_FLAGS16], t[TAG_FLAGS16 + 1]]);
        let checksum = if self.fmt.csum_v3 {
            be32(t, 12).unwrap_or(0)
        } else if self.fmt.csum_v2 {
            u16::from_be_bytes([t[4], t[5]]) as u32
        } else {
            0
        };
        self.at += n;
        if flags & tag_flag::SAME_UUID == 0 {
            self.at += TAG_UUID_SIZE;
        }
        if flags & tag_flag::LAST_TAG != 0 {
            self.done = true;
        }
        Some(TagInfo {
            blocknr: PhysBlock(lo | hi << 32),
            flags,
            checksum,
        })
    }
}

/// The block numbers a revoke block lists, or `None` when its `r_count`
/// claims more than the block holds before its tail (the kernel fails
/// recovery with EINVAL then).
pub fn revoke_records<'a>(fmt: &LogFormat, block: &'a [u8]) -> Option<RevokeRecords<'a>> {
    let count = be32(block, HEADER_SIZE)? as usize;
    if count > block.len().saturating_sub(fmt.tail_bytes()) {
        return None;
    }
    Some(RevokeRecords {
        block,
        at: REVOKE_HEADER_SIZE,
        end: count,
        len: fmt.revoke_record_bytes(),
    })
}

/// Iterator over a revoke block's records; see [`revoke_records`].
pub struct RevokeRecords<'a> {
    block: &'a [u8],
    at: usize,
    end: usize,
    len: usize,
}

impl Iterator for RevokeRecords<'_> {
    type Item = PhysBlock;
    fn next(&mut self) -> Option<PhysBlock> {
        if self.at + self.len > self.end {
            return None;
        }
        let r = &self.block[self.at..self.at + self.len];
        self.at += self.len;
        Some(PhysBlock(if self.len == 8 {
            u64::from_be_bytes(r.try_into().unwrap_or([0; 8]))
        } else {
            be32(r, 0).unwrap_or(0) as u64
        }))
    }
}

/// A commit block's fields recovery looks at.
#[derive(Clone, Copy, Debug)]
pub struct CommitInfo {
    pub chksum_type: u8,
    pub chksum_size: u8,
    /// `chksum[0]`.
    pub chksum: u32,
    pub commit_sec: u64,
}

impl CommitInfo {
    pub fn of(block: &[u8]) -> Option<CommitInfo> {
        let (c, _) = CommitHeader::read_from_prefix(block).ok()?;
        Some(CommitInfo {
            chksum_type: c.chksum_type,
            chksum_size: c.chksum_size,
            chksum: c.chksum[0].get(),
            commit_sec: c.commit_sec.get(),
        })
    }
}

/// The checksum v1 running crc32 (big-endian, no final inversion), which
/// starts at `!0` for each transaction and runs over its descriptor blocks
/// and logged blocks.
pub fn v1_update(crc: u32, block: &[u8]) -> u32 {
    crc32_be(crc, block)
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Transaction ids compare modulo 2^32 (`tid_gt`): `a` is after `b` when
/// the distance from `b` to `a` is less than half the range.
pub fn tid_gt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}
/// `tid_geq`.
pub fn tid_geq(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) >= 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layout() {
        assert_eq!(size_of::<JournalSuperblock>(), SIZE);
        assert_eq!(offset_of!(JournalSuperblock, errno), 0x20);
        assert_eq!(offset_of!(JournalSuperblock, feature_compat), V2_FIELDS);
        assert_eq!(offset_of!(JournalSuperblock, uuid), 0x30);
        assert_eq!(offset_of!(JournalSuperblock, nr_users), 0x40);
        assert_eq!(offset_of!(JournalSuperblock, checksum_type), 0x50);
        assert_eq!(offset_of!(JournalSuperblock, num_fc_blks), 0x54);
        assert_eq!(offset_of!(JournalSuperblock, head), 0x58);
        assert_eq!(offset_of!(JournalSuperblock, checksum), CHECKSUM_OFFSET);
        assert_eq!(offset_of!(JournalSuperblock, users), 0x100);

        assert_eq!(size_of::<Header>(), HEADER_SIZE);
        assert_eq!(offset_of!(Header, sequence), 8);

        assert_eq!(size_of::<Tag3>(), 16);
        assert_eq!(offset_of!(Tag3, flags), 4);
        assert_eq!(offset_of!(Tag3, blocknr_high), TAG_HIGH);
        assert_eq!(offset_of!(Tag3, checksum), 12);
        assert_eq!(size_of::<Tag>(), 12);
        assert_eq!(offset_of!(Tag, checksum), 4);
        assert_eq!(offset_of!(Tag, flags), TAG_FLAGS16);
        assert_eq!(offset_of!(Tag, blocknr_high), TAG_HIGH);

        assert_eq!(size_of::<RevokeHeader>(), REVOKE_HEADER_SIZE);
        assert_eq!(offset_of!(RevokeHeader, count), 12);

        assert_eq!(size_of::<CommitHeader>(), COMMIT_HEADER_SIZE);
        assert_eq!(offset_of!(CommitHeader, chksum_type), 12);
        assert_eq!(offset_of!(CommitHeader, chksum_size), 13);
        assert_eq!(offset_of!(CommitHeader, chksum), COMMIT_CHKSUM_OFFSET);
        assert_eq!(offset_of!(CommitHeader, commit_sec), 48);
        assert_eq!(offset_of!(CommitHeader, commit_nsec), 56);
    }

    fn fmt(compat: u32, incompat: u32) -> LogFormat {
        LogFormat::new(compat, incompat, [7; 16])
    }

    #[test]
    fn tag_sizes_follow_the_features() {
        use feature::*;
        assert_eq!(fmt(0, 0).tag_bytes(), 8);
        assert_eq!(fmt(0, INCOMPAT_64BIT).tag_bytes(), 12);
        assert_eq!(fmt(0, INCOMPAT_CSUM_V2).tag_bytes(), 10);
        assert_eq!(fmt(0, INCOMPAT_CSUM_V2 | INCOMPAT_64BIT).tag_bytes(), 14);
        assert_eq!(fmt(0, INCOMPAT_CSUM_V3).tag_bytes(), 16);
        assert_eq!(fmt(0, INCOMPAT_CSUM_V3 | INCOMPAT_64BIT).tag_bytes(), 16);
        assert_eq!(fmt(COMPAT_CHECKSUM, 0).tail_bytes(), 0);
        assert_eq!(fmt(0, INCOMPAT_CSUM_V3).tail_bytes(), 4);
        assert_eq!(fmt(0, INCOMPAT_64BIT).revoke_record_bytes(), 8);
        assert_eq!(fmt(0, 0).revoke_record_bytes(), 4);
    }

    /// Tags written by `write_tag` read back through `tags` in every
    /// layout, UUIDs skipped, the walk stopping at LAST_TAG.
    #[test]
    fn tags_round_trip_in_every_layout() {
        use feature::*;
        for incompat in [
            0,
            INCOMPAT_64BIT,
            INCOMPAT_CSUM_V2,
            INCOMPAT_CSUM_V2 | INCOMPAT_64BIT,
            INCOMPAT_CSUM_V3,
            INCOMPAT_CSUM_V3 | INCOMPAT_64BIT,
        ] {
            let f = fmt(0, incompat);
            let mut block = [0u8; 1024];
            let n = f.tag_bytes();
            let blocks = [0x1_2345_6789u64, 7, 0xFFFF_FFFF];
            let mut at = HEADER_SIZE;
            for (i, &b) in blocks.iter().enumerate() {
                let mut flags = if i == 0 { 0 } else { tag_flag::SAME_UUID };
                if i == blocks.len() - 1 {
                    flags |= tag_flag::LAST_TAG | tag_flag::ESCAPE;
                }
                f.write_tag(&mut block[at..at + n], PhysBlock(b), flags, 0xABCD_1234);
                at += n + if i == 0 { TAG_UUID_SIZE } else { 0 };
            }
            // A tag after LAST_TAG is not read.
            f.write_tag(
                &mut block[at..at + n],
                PhysBlock(99),
                tag_flag::SAME_UUID,
                0,
            );
            let got: alloc::vec::Vec<TagInfo> = f.tags(&block).collect();
            assert_eq!(got.len(), 3, "{incompat:#x}");
            let mask = if f.bit64 { u64::MAX } else { 0xFFFF_FFFF };
            for (t, &b) in got.iter().zip(&blocks) {
                assert_eq!(t.blocknr, PhysBlock(b & mask), "{incompat:#x}");
            }
            assert!(got[2].escaped() && !got[1].escaped());
            let want = if f.csum_v3 {
                0xABCD_1234
            } else if f.csum_v2 {
                0x1234
            } else {
                0
            };
            assert_eq!(got[0].checksum, want);
        }
    }

    /// Tags that run to the end of the block stop before the tail, never
    /// reading past it.
    #[test]
    fn tags_stop_before_the_tail() {
        let f = fmt(0, feature::INCOMPAT_CSUM_V3);
        let mut block = [0u8; 1024];
        for t in block[HEADER_SIZE..].chunks_mut(16) {
            if t.len() == 16 {
                f.write_tag(t, PhysBlock(5), tag_flag::SAME_UUID, 0);
            }
        }
        // (1024 - 12 - 4) / 16 whole tags fit before the tail.
        assert_eq!(f.tags(&block).count(), (1024 - 12 - 4) / 16);
        assert_eq!(f.tags(&block[..10]).count(), 0);
    }

    #[test]
    fn revoke_records_stop_at_the_count() {
        let f = fmt(0, feature::INCOMPAT_64BIT);
        let mut block = [0u8; 1024];
        block[12..16].copy_from_slice(&(16u32 + 3 * 8 + 5).to_be_bytes());
        for (i, r) in block[16..].chunks_mut(8).take(4).enumerate() {
            r.copy_from_slice(&(i as u64 + 100).to_be_bytes());
        }
        let got: alloc::vec::Vec<u64> = revoke_records(&f, &block).unwrap().map(|b| b.0).collect();
        assert_eq!(got, [100, 101, 102]);
        block[12..16].copy_from_slice(&1021u32.to_be_bytes());
        assert!(revoke_records(&fmt(0, feature::INCOMPAT_CSUM_V3), &block).is_none());
        assert!(revoke_records(&f, &block).is_some());
    }

    #[test]
    fn block_checksums_verify_what_they_set() {
        let f = fmt(0, feature::INCOMPAT_CSUM_V3);
        let mut block = [0x5Au8; 1024];
        f.set_tail(&mut block);
        assert!(f.tail_ok(&block));
        block[100] ^= 1;
        assert!(!f.tail_ok(&block));
        let mut commit = [0u8; 1024];
        commit[..12].copy_from_slice(Header::new(blocktype::COMMIT, 9).as_bytes());
        f.set_commit_checksum(&mut commit);
        assert!(f.commit_ok(&commit) && f.commit_ok_partial(&commit));
        commit[500] = 1;
        assert!(!f.commit_ok(&commit) && f.commit_ok_partial(&commit));
        // Without v2/v3 there is nothing to check.
        assert!(fmt(0, 0).tail_ok(&block) && fmt(0, 0).commit_ok(&commit));
    }

    #[test]
    fn tids_wrap() {
        assert!(tid_gt(1, 0) && tid_gt(0, u32::MAX) && !tid_gt(u32::MAX, 0));
        assert!(tid_geq(5, 5) && tid_geq(2, u32::MAX - 3) && !tid_geq(u32::MAX - 3, 2));
    }
}
