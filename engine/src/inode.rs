//! Inodes: the on-disk record, its checksum, and the decoded form.

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::attr::{Attr, FileType, Timestamp};
use crate::checksum::crc32c;
use crate::error::{Error, Object, Result};
use crate::features::{incompat, ro_compat};
use crate::numbers::InodeNo;
use crate::superblock::Superblock;

/// `struct ext4_inode`, through `i_projid` (160 bytes). Larger inode
/// records have in-inode extended attributes after `128 + extra_isize`.
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawInode {
    pub mode: U16,
    pub uid: U16,
    pub size_lo: U32,
    pub atime: U32,
    pub ctime: U32,
    pub mtime: U32,
    pub dtime: U32,
    pub gid: U16,
    pub links_count: U16,
    pub blocks_lo: U32,
    pub flags: U32,
    pub version: U32,
    pub block: [u8; 60],
    pub generation: U32,
    pub file_acl_lo: U32,
    pub size_high: U32,
    pub obso_faddr: U32,
    pub blocks_high: U16,
    pub file_acl_high: U16,
    pub uid_high: U16,
    pub gid_high: U16,
    pub checksum_lo: U16,
    pub reserved: U16,
    pub extra_isize: U16,
    pub checksum_hi: U16,
    pub ctime_extra: U32,
    pub mtime_extra: U32,
    pub atime_extra: U32,
    pub crtime: U32,
    pub crtime_extra: U32,
    pub version_hi: U32,
    pub projid: U32,
}

pub const GOOD_OLD_INODE_SIZE: usize = 128;
const CHECKSUM_LO: usize = 0x7C;
const CHECKSUM_HI: usize = 0x82;

/// Inode flags (`EXT4_*_FL`).
pub mod flags {
    pub const SECRM: u32 = 0x1;
    pub const SYNC: u32 = 0x8;
    pub const IMMUTABLE: u32 = 0x10;
    pub const APPEND: u32 = 0x20;
    pub const NODUMP: u32 = 0x40;
    pub const NOATIME: u32 = 0x80;
    pub const ENCRYPT: u32 = 0x800;
    pub const INDEX: u32 = 0x1000;
    pub const HUGE_FILE: u32 = 0x40000;
    pub const EXTENTS: u32 = 0x80000;
    pub const VERITY: u32 = 0x100000;
    pub const EA_INODE: u32 = 0x200000;
    pub const INLINE_DATA: u32 = 0x10000000;
    pub const PROJINHERIT: u32 = 0x20000000;
    pub const CASEFOLD: u32 = 0x40000000;
}

/// A decoded inode, with the bytes of `i_block` and of the in-inode
/// extended attribute area kept for the mapping and xattr code.
#[derive(Clone, Debug)]
pub struct Inode {
    pub ino: InodeNo,
    pub mode: u16,
    pub kind: Option<FileType>,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub links_count: u16,
    /// `i_blocks` in 512-byte units (already scaled for `HUGE_FILE_FL`).
    pub blocks_512: u64,
    pub flags: u32,
    pub generation: u32,
    pub file_acl: u64,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub crtime: Option<Timestamp>,
    pub dtime: u32,
    pub extra_isize: u16,
    pub projid: u32,
    pub block: [u8; 60],
    /// The seed of this inode's metadata checksums (extent blocks,
    /// directory blocks): crc32c of the fs seed, inode number, generation.
    pub csum_seed: u32,
    /// In-inode xattr area (`128 + extra_isize .. inode_size`); at most one
    /// block, since an inode record never exceeds the block size.
    ibody: alloc::vec::Vec<u8>,
}

fn decode_time(base: U32, extra: Option<u32>) -> Timestamp {
    let sec = base.get() as i32 as i64;
    match extra {
        // Two epoch bits extend the signed 32-bit seconds past 2038; the
        // other 30 bits are nanoseconds.
        Some(x) => Timestamp {
            sec: sec + (((x & 3) as i64) << 32),
            nsec: (x >> 2).min(999_999_999),
        },
        None => Timestamp { sec, nsec: 0 },
    }
}

impl Inode {
    /// Decode `bytes` (the whole on-disk record, `inode_size` long).
    /// Checks only what makes the record unusable; the checksum is checked
    /// separately with [`checksum_ok`].
    pub fn parse(sb: &Superblock, ino: InodeNo, bytes: &[u8]) -> Result<Inode> {
        let bad = |what| Err(Error::corrupt(Object::Inode(ino), what));
        let mut rec = [0u8; 160];
        let n = bytes.len().min(160);
        rec[..n].copy_from_slice(&bytes[..n]);
        let raw = RawInode::read_from_bytes(&rec)
            .map_err(|_| Error::corrupt(Object::Inode(ino), "short record"))?;
        let large = bytes.len() > GOOD_OLD_INODE_SIZE;
        let extra_isize = if large { raw.extra_isize.get() } else { 0 };
        if large
            && (GOOD_OLD_INODE_SIZE + extra_isize as usize > bytes.len() || extra_isize % 4 != 0)
        {
            return bad("i_extra_isize runs past the inode record or is misaligned");
        }
        let fits = |end: usize| large && GOOD_OLD_INODE_SIZE + extra_isize as usize >= end;
        let extra = |v: U32, off: usize| fits(off + 4).then(|| v.get());
        let mode = raw.mode.get();
        let file_type = FileType::from_mode(mode);
        let flags = raw.flags.get();
        let size = raw.size_lo.get() as u64
            | if sb.has_incompat(incompat::LARGEDIR) || file_type == Some(FileType::Regular) {
                (raw.size_high.get() as u64) << 32
            } else {
                0
            };
        let mut blocks_512 = raw.blocks_lo.get() as u64;
        if sb.has_ro_compat(ro_compat::HUGE_FILE) {
            blocks_512 |= (raw.blocks_high.get() as u64) << 32;
            if flags & flags::HUGE_FILE != 0 {
                blocks_512 <<= sb.log_block_size + 10 - 9;
            }
        }
        let file_acl = raw.file_acl_lo.get() as u64
            | if sb.has_incompat(incompat::BIT64) {
                (raw.file_acl_high.get() as u64) << 32
            } else {
                0
            };
        let gen = raw.generation.get();
        let mut csum_seed = crc32c(sb.csum_seed, &ino.0.to_le_bytes());
        csum_seed = crc32c(csum_seed, &gen.to_le_bytes());
        let ibody = if large {
            bytes[GOOD_OLD_INODE_SIZE + extra_isize as usize..].to_vec()
        } else {
            alloc::vec::Vec::new()
        };
        Ok(Inode {
            ino,
            mode,
            kind: file_type,
            uid: raw.uid.get() as u32 | (raw.uid_high.get() as u32) << 16,
            gid: raw.gid.get() as u32 | (raw.gid_high.get() as u32) << 16,
            size,
            links_count: raw.links_count.get(),
            blocks_512,
            flags,
            generation: gen,
            file_acl,
            atime: decode_time(raw.atime, extra(raw.atime_extra, 0x8C)),
            mtime: decode_time(raw.mtime, extra(raw.mtime_extra, 0x88)),
            ctime: decode_time(raw.ctime, extra(raw.ctime_extra, 0x84)),
            crtime: fits(0x94).then(|| decode_time(raw.crtime, extra(raw.crtime_extra, 0x94))),
            dtime: raw.dtime.get(),
            extra_isize,
            projid: if fits(0xA0) { raw.projid.get() } else { 0 },
            block: raw.block,
            csum_seed,
            ibody,
        })
    }

    pub fn has_flag(&self, f: u32) -> bool {
        self.flags & f != 0
    }

    /// The in-inode extended attribute area.
    pub fn ibody(&self) -> &[u8] {
        &self.ibody
    }

    /// i_block as fifteen little-endian u32 words.
    pub fn block_word(&self, i: usize) -> u32 {
        let b = &self.block[i * 4..i * 4 + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Device number of a device node: (major, minor).
    pub fn rdev(&self) -> (u32, u32) {
        let old = self.block_word(0);
        if old != 0 {
            ((old >> 8) & 0xff, old & 0xff)
        } else {
            let new = self.block_word(1);
            ((new & 0xfff00) >> 8, (new & 0xff) | ((new >> 12) & 0xfff00))
        }
    }

    pub fn attr(&self, sb: &Superblock) -> Result<Attr> {
        let kind = self.kind.ok_or(Error::corrupt(
            Object::Inode(self.ino),
            "unknown file type in i_mode",
        ))?;
        let (rdev_major, rdev_minor) = match kind {
            FileType::CharDevice | FileType::BlockDevice => self.rdev(),
            _ => (0, 0),
        };
        Ok(Attr {
            ino: self.ino,
            kind,
            mode: self.mode as u32,
            // A directory whose count overflowed (`dir_nlink`) stores 1, which
            // is what the kernel reports too.
            nlink: self.links_count as u32,
            uid: self.uid,
            gid: self.gid,
            size: self.size,
            // For regular files the kernel reports at least the sectors
            // inline bytes would need, so tools do not take the file for
            // fully sparse (directories and symlinks report i_blocks).
            blocks: if self.has_flag(flags::INLINE_DATA) && kind == FileType::Regular {
                self.blocks_512 + self.size.div_ceil(512)
            } else {
                self.blocks_512
            },
            atime: self.atime,
            mtime: self.mtime,
            ctime: self.ctime,
            crtime: self.crtime,
            rdev_major,
            rdev_minor,
            flags: self.flags,
            generation: self.generation,
            blksize: sb.block_size,
        })
    }
}

/// Whether the on-disk record `bytes` of inode `ino` carries a valid
/// checksum. Filesystems without `metadata_csum` always pass.
pub fn checksum_ok(sb: &Superblock, ino: InodeNo, bytes: &[u8]) -> bool {
    match expected_checksum(sb, ino, bytes) {
        None => true,
        Some((c, has_hi)) => {
            let lo = u16::from_le_bytes([bytes[CHECKSUM_LO], bytes[CHECKSUM_LO + 1]]) as u32;
            if has_hi {
                let hi = u16::from_le_bytes([bytes[CHECKSUM_HI], bytes[CHECKSUM_HI + 1]]) as u32;
                (lo | hi << 16) == c
            } else {
                lo == c & 0xffff
            }
        }
    }
}

/// The checksum the record should carry and whether it has the high half.
pub fn expected_checksum(sb: &Superblock, ino: InodeNo, bytes: &[u8]) -> Option<(u32, bool)> {
    if !sb.metadata_csum() || bytes.len() < GOOD_OLD_INODE_SIZE {
        return None;
    }
    let gen = &bytes[0x64..0x68];
    let mut c = crc32c(sb.csum_seed, &ino.0.to_le_bytes());
    c = crc32c(c, gen);
    c = crc32c(c, &bytes[..CHECKSUM_LO]);
    c = crc32c(c, &[0, 0]);
    c = crc32c(c, &bytes[CHECKSUM_LO + 2..GOOD_OLD_INODE_SIZE]);
    let mut has_hi = false;
    if bytes.len() > GOOD_OLD_INODE_SIZE {
        let extra = u16::from_le_bytes([bytes[0x80], bytes[0x81]]) as usize;
        c = crc32c(c, &bytes[GOOD_OLD_INODE_SIZE..CHECKSUM_HI]);
        if GOOD_OLD_INODE_SIZE + extra >= CHECKSUM_HI + 2 {
            has_hi = true;
            c = crc32c(c, &[0, 0]);
            c = crc32c(c, &bytes[CHECKSUM_HI + 2..]);
        } else {
            c = crc32c(c, &bytes[CHECKSUM_HI..]);
        }
    }
    Some((c, has_hi))
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layout_matches_ext4_inode() {
        assert_eq!(size_of::<RawInode>(), 160);
        assert_eq!(offset_of!(RawInode, block), 0x28);
        assert_eq!(offset_of!(RawInode, generation), 0x64);
        assert_eq!(offset_of!(RawInode, checksum_lo), CHECKSUM_LO);
        assert_eq!(offset_of!(RawInode, extra_isize), 0x80);
        assert_eq!(offset_of!(RawInode, checksum_hi), CHECKSUM_HI);
        assert_eq!(offset_of!(RawInode, crtime), 0x90);
        assert_eq!(offset_of!(RawInode, projid), 0x9C);
    }

    #[test]
    fn timestamps_past_2038_and_before_1970() {
        // -1 second with no epoch bits is 1969-12-31T23:59:59.
        assert_eq!(decode_time(U32::new(u32::MAX), Some(0)).sec, -1);
        // Epoch bit 1 moves the signed range up by 2^32 seconds.
        assert_eq!(decode_time(U32::new(0), Some(1)).sec, 1 << 32);
        assert_eq!(decode_time(U32::new(5), Some(7 << 2)).nsec, 7);
    }
}
