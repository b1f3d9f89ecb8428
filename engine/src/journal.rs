//! The JBD2 journal superblock (the first block of the journal), which
//! unlike the rest of ext4 is big-endian. Only read for now: replay is a
//! later piece of work.

use zerocopy::big_endian::U32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::checksum::crc32c;

pub const MAGIC: u32 = 0xC03B_3998;
/// `h_blocktype` of a version 1 superblock (no fields past `s_errno`).
pub const SUPERBLOCK_V1: u32 = 3;
/// `h_blocktype` of a version 2 superblock.
pub const SUPERBLOCK_V2: u32 = 4;
/// Incompat features under which the superblock carries a crc32c.
pub const INCOMPAT_CSUM_V2: u32 = 0x8;
pub const INCOMPAT_CSUM_V3: u32 = 0x10;
/// `s_checksum_type` for crc32c.
pub const CSUM_CRC32C: u8 = 4;
/// Size of the structure, and what its checksum covers.
pub const SIZE: usize = 1024;

/// `journal_superblock_t`.
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct JournalSuperblock {
    pub magic: U32,
    pub blocktype: U32,
    pub header_sequence: U32,
    pub blocksize: U32,
    pub maxlen: U32,
    pub first: U32,
    pub sequence: U32,
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
    pub num_fc_blks: U32,
    pub head: U32,
    pub padding: [U32; 40],
    pub checksum: U32,
    pub users: [u8; 16 * 48],
}

/// Where the version 2 fields start.
#[allow(dead_code)] // the layout test's reference; journal replay reads them
pub const V2_FIELDS: usize = 0x24;
/// Where `s_checksum` lies.
pub const CHECKSUM_OFFSET: usize = 0xFC;

impl JournalSuperblock {
    pub fn has_csum(&self) -> bool {
        self.feature_incompat.get() & (INCOMPAT_CSUM_V2 | INCOMPAT_CSUM_V3) != 0
    }
}

/// The superblock checksum of the 1024 bytes `raw`: crc32c from ~0 with
/// `s_checksum` taken as zero, as the kernel's jbd2 computes it.
pub fn checksum(raw: &[u8; SIZE]) -> u32 {
    let c = crc32c(!0, &raw[..CHECKSUM_OFFSET]);
    let c = crc32c(c, &[0; 4]);
    crc32c(c, &raw[CHECKSUM_OFFSET + 4..])
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
        assert_eq!(offset_of!(JournalSuperblock, head), 0x58);
        assert_eq!(offset_of!(JournalSuperblock, checksum), CHECKSUM_OFFSET);
        assert_eq!(offset_of!(JournalSuperblock, users), 0x100);
    }
}
