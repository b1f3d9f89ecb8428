//! Block group descriptors (32- and 64-byte forms) and their checksums.

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::checksum::{crc16, crc32c};
use crate::error::{Error, Object, Result};
use crate::features::ro_compat;
use crate::numbers::PhysBlock;
use crate::superblock::Superblock;

/// `struct ext4_group_desc` (64 bytes; the first 32 are the old form).
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawGroupDesc {
    pub block_bitmap_lo: U32,
    pub inode_bitmap_lo: U32,
    pub inode_table_lo: U32,
    pub free_blocks_count_lo: U16,
    pub free_inodes_count_lo: U16,
    pub used_dirs_count_lo: U16,
    pub flags: U16,
    pub exclude_bitmap_lo: U32,
    pub block_bitmap_csum_lo: U16,
    pub inode_bitmap_csum_lo: U16,
    pub itable_unused_lo: U16,
    pub checksum: U16,
    pub block_bitmap_hi: U32,
    pub inode_bitmap_hi: U32,
    pub inode_table_hi: U32,
    pub free_blocks_count_hi: U16,
    pub free_inodes_count_hi: U16,
    pub used_dirs_count_hi: U16,
    pub itable_unused_hi: U16,
    pub exclude_bitmap_hi: U32,
    pub block_bitmap_csum_hi: U16,
    pub inode_bitmap_csum_hi: U16,
    pub reserved: U32,
}

pub const BG_INODE_UNINIT: u16 = 0x1;
pub const BG_BLOCK_UNINIT: u16 = 0x2;
/// Set by a writer that has zeroed the group's inode table.
#[allow(dead_code)] // read-only today; the write path sets it
pub const BG_INODE_ZEROED: u16 = 0x4;

const CHECKSUM_OFFSET: usize = 0x1E;

/// A decoded group descriptor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupDesc {
    pub block_bitmap: PhysBlock,
    pub inode_bitmap: PhysBlock,
    pub inode_table: PhysBlock,
    pub free_blocks: u32,
    pub free_inodes: u32,
    pub used_dirs: u32,
    pub flags: u16,
    pub itable_unused: u32,
    pub block_bitmap_csum: u32,
    pub inode_bitmap_csum: u32,
    pub checksum: u16,
}

impl GroupDesc {
    /// Decode descriptor `g` from its `desc_size` bytes.
    pub fn parse(sb: &Superblock, bytes: &[u8]) -> GroupDesc {
        let mut full = [0u8; 64];
        let n = bytes.len().min(64);
        full[..n].copy_from_slice(&bytes[..n]);
        // Reading 64 bytes from a zero-padded copy is always in bounds.
        let raw =
            RawGroupDesc::read_from_bytes(&full).unwrap_or_else(|_| RawGroupDesc::new_zeroed());
        let wide = sb.desc_size >= 64;
        let hi32 = |v: U32| if wide { (v.get() as u64) << 32 } else { 0 };
        let hi16 = |v: U16| if wide { (v.get() as u32) << 16 } else { 0 };
        GroupDesc {
            block_bitmap: PhysBlock(raw.block_bitmap_lo.get() as u64 | hi32(raw.block_bitmap_hi)),
            inode_bitmap: PhysBlock(raw.inode_bitmap_lo.get() as u64 | hi32(raw.inode_bitmap_hi)),
            inode_table: PhysBlock(raw.inode_table_lo.get() as u64 | hi32(raw.inode_table_hi)),
            free_blocks: raw.free_blocks_count_lo.get() as u32 | hi16(raw.free_blocks_count_hi),
            free_inodes: raw.free_inodes_count_lo.get() as u32 | hi16(raw.free_inodes_count_hi),
            used_dirs: raw.used_dirs_count_lo.get() as u32 | hi16(raw.used_dirs_count_hi),
            flags: raw.flags.get(),
            itable_unused: raw.itable_unused_lo.get() as u32 | hi16(raw.itable_unused_hi),
            block_bitmap_csum: raw.block_bitmap_csum_lo.get() as u32
                | hi16(raw.block_bitmap_csum_hi),
            inode_bitmap_csum: raw.inode_bitmap_csum_lo.get() as u32
                | hi16(raw.inode_bitmap_csum_hi),
            checksum: raw.checksum.get(),
        }
    }

    /// Check that the bitmaps and inode table lie inside the filesystem and
    /// away from the superblock area.
    pub fn validate(&self, sb: &Superblock, g: u32) -> Result<()> {
        let itable_blocks =
            (sb.inodes_per_group as u64 * sb.inode_size as u64).div_ceil(sb.block_size as u64);
        let ok = |b: PhysBlock, len: u64| {
            b.0 > sb.first_data_block as u64
                && b.0.checked_add(len).is_some_and(|e| e <= sb.blocks_count)
        };
        if !ok(self.block_bitmap, 1) {
            return Err(Error::corrupt(
                Object::GroupDesc(g),
                "block bitmap lies outside the filesystem",
            ));
        }
        if !ok(self.inode_bitmap, 1) {
            return Err(Error::corrupt(
                Object::GroupDesc(g),
                "inode bitmap lies outside the filesystem",
            ));
        }
        if !ok(self.inode_table, itable_blocks) {
            return Err(Error::corrupt(
                Object::GroupDesc(g),
                "inode table lies outside the filesystem",
            ));
        }
        Ok(())
    }
}

impl GroupDesc {
    /// Write the fields an allocation changes (counts, flags, unused
    /// inode-table tail, bitmap checksums) into the raw descriptor `bytes`
    /// (`desc_size` long, high halves only in 64-byte descriptors), then
    /// its checksum. The locations are never rewritten.
    pub fn store(&self, sb: &Superblock, g: u32, bytes: &mut [u8]) {
        let wide = sb.desc_size >= 64 && bytes.len() >= 64;
        let put16 = |b: &mut [u8], off: usize, v: u32| {
            b[off..off + 2].copy_from_slice(&(v as u16).to_le_bytes());
        };
        put16(bytes, 0x0C, self.free_blocks);
        put16(bytes, 0x0E, self.free_inodes);
        put16(bytes, 0x10, self.used_dirs);
        put16(bytes, 0x12, self.flags as u32);
        put16(bytes, 0x18, self.block_bitmap_csum);
        put16(bytes, 0x1A, self.inode_bitmap_csum);
        put16(bytes, 0x1C, self.itable_unused);
        if wide {
            put16(bytes, 0x2C, self.free_blocks >> 16);
            put16(bytes, 0x2E, self.free_inodes >> 16);
            put16(bytes, 0x30, self.used_dirs >> 16);
            put16(bytes, 0x32, self.itable_unused >> 16);
            put16(bytes, 0x38, self.block_bitmap_csum >> 16);
            put16(bytes, 0x3A, self.inode_bitmap_csum >> 16);
        }
        if let Some(c) = expected_checksum(sb, g, bytes) {
            bytes[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 2].copy_from_slice(&c.to_le_bytes());
        }
    }
}

/// The checksum of a block or inode bitmap as a descriptor stores it
/// (`metadata_csum`; `bits` is clusters or inodes per group): the low half
/// only in 32-byte descriptors.
pub fn bitmap_checksum(sb: &Superblock, bitmap: &[u8], bits: u32) -> u32 {
    let c = crc32c(sb.csum_seed, &bitmap[..(bits / 8) as usize]);
    if sb.desc_size >= 64 {
        c
    } else {
        c & 0xffff
    }
}

/// Whether descriptor `g` (its raw `bytes`) carries a valid checksum.
/// Filesystems with neither `metadata_csum` nor `gdt_csum` always pass.
pub fn checksum_ok(sb: &Superblock, g: u32, bytes: &[u8]) -> bool {
    match expected_checksum(sb, g, bytes) {
        Some(c) => {
            let stored = u16::from_le_bytes([bytes[CHECKSUM_OFFSET], bytes[CHECKSUM_OFFSET + 1]]);
            stored == c
        }
        None => true,
    }
}

/// The checksum descriptor `g` should carry, if the filesystem has one.
pub fn expected_checksum(sb: &Superblock, g: u32, bytes: &[u8]) -> Option<u16> {
    let size = sb.desc_size as usize;
    if bytes.len() < size || size < 32 {
        return None;
    }
    let gle = g.to_le_bytes();
    if sb.metadata_csum() {
        let mut c = crc32c(sb.csum_seed, &gle);
        c = crc32c(c, &bytes[..CHECKSUM_OFFSET]);
        c = crc32c(c, &[0, 0]);
        c = crc32c(c, &bytes[CHECKSUM_OFFSET + 2..size]);
        Some((c & 0xffff) as u16)
    } else if sb.has_ro_compat(ro_compat::GDT_CSUM) {
        let mut c = crc16(!0, &sb.uuid);
        c = crc16(c, &gle);
        c = crc16(c, &bytes[..CHECKSUM_OFFSET]);
        if size > 32 {
            c = crc16(c, &bytes[CHECKSUM_OFFSET + 2..size]);
        }
        Some(c)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn store_round_trips_through_parse() {
        let mut raw = crate::superblock::small_raw();
        raw.feature_ro_compat = ro_compat::METADATA_CSUM.into();
        raw.feature_incompat = crate::features::incompat::BIT64.into();
        raw.desc_size = 64u16.into();
        let sbytes = raw.as_bytes().to_vec();
        let sb = Superblock::parse(&raw, &sbytes, 1 << 30).unwrap();
        let mut bytes = [0u8; 64];
        bytes[0..4].copy_from_slice(&100u32.to_le_bytes());
        let mut gd = GroupDesc::parse(&sb, &bytes);
        gd.free_blocks = 0x1_2345;
        gd.free_inodes = 0x2_0001;
        gd.used_dirs = 7;
        gd.flags = BG_INODE_ZEROED;
        gd.itable_unused = 0x3_0002;
        gd.block_bitmap_csum = 0xdead_beef;
        gd.inode_bitmap_csum = 0xfeed_f00d;
        gd.store(&sb, 5, &mut bytes);
        let back = GroupDesc::parse(&sb, &bytes);
        assert_eq!(back.block_bitmap, PhysBlock(100));
        assert_eq!(
            (
                back.free_blocks,
                back.free_inodes,
                back.used_dirs,
                back.itable_unused
            ),
            (0x1_2345, 0x2_0001, 7, 0x3_0002)
        );
        assert_eq!(back.block_bitmap_csum, 0xdead_beef);
        assert_eq!(back.inode_bitmap_csum, 0xfeed_f00d);
        assert!(checksum_ok(&sb, 5, &bytes));
        assert!(!checksum_ok(&sb, 6, &bytes));
    }

    #[test]
    fn layout_matches_ext4_group_desc() {
        assert_eq!(size_of::<RawGroupDesc>(), 64);
        assert_eq!(offset_of!(RawGroupDesc, flags), 0x12);
        assert_eq!(offset_of!(RawGroupDesc, checksum), 0x1E);
        assert_eq!(offset_of!(RawGroupDesc, block_bitmap_hi), 0x20);
        assert_eq!(offset_of!(RawGroupDesc, itable_unused_hi), 0x32);
        assert_eq!(offset_of!(RawGroupDesc, block_bitmap_csum_hi), 0x38);
    }
}
