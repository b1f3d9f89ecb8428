//! The multiple-mount protection block (`mmp` feature): a block the owner
//! of the filesystem updates so a second host can tell it is in use.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::checksum::crc32c;

pub const MAGIC: u32 = 0x004D_4D50;
/// Bytes covered by the checksum (everything before it).
pub const CHECKSUM_OFFSET: usize = 1020;

/// `struct mmp_struct`, 1024 bytes at the start of the MMP block.
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawMmp {
    pub magic: U32,
    pub seq: U32,
    pub time: U64,
    pub nodename: [u8; 64],
    pub bdevname: [u8; 32],
    pub check_interval: U16,
    pub pad1: U16,
    pub pad2: [U32; 226],
    pub checksum: U32,
}

/// The checksum `metadata_csum` stores in `checksum`.
pub fn checksum(csum_seed: u32, raw: &[u8]) -> u32 {
    crc32c(csum_seed, &raw[..CHECKSUM_OFFSET])
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layout() {
        assert_eq!(size_of::<RawMmp>(), 1024);
        assert_eq!(offset_of!(RawMmp, nodename), 16);
        assert_eq!(offset_of!(RawMmp, check_interval), 112);
        assert_eq!(offset_of!(RawMmp, checksum), CHECKSUM_OFFSET);
    }
}
