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
    /// `ibody` was replaced ([`Inode::set_ibody`]): [`Inode::store`] writes it.
    ibody_dirty: bool,
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

/// A time as the kernel's ext4 keeps one it is given
/// (`timestamp_truncate` with the limits it sets at mount): seconds
/// clamped to what the records hold (signed 32 bits; with records of 256
/// bytes and more, two epoch bits more: 1901 to 2446), nanoseconds
/// dropped when clamped or when records have no room for them.
pub fn clamp_time(sb: &Superblock, t: Timestamp) -> Timestamp {
    // Room for i_atime_extra (ending at 0x90) decides, as in
    // ext4_fill_super.
    let extra = sb.inode_size as usize >= 0x90;
    let min = i32::MIN as i64;
    let max = if extra {
        (1i64 << 34) - 1 + min
    } else {
        i32::MAX as i64
    };
    let sec = t.sec.clamp(min, max);
    let nsec = if !extra || sec == min || sec == max {
        0
    } else {
        t.nsec
    };
    Timestamp { sec, nsec }
}

/// Encode a timestamp as the kernel does (`ext4_encode_extra_time`): the
/// low 32 bits of the seconds, and in the extra word two epoch bits and
/// the nanoseconds.
fn encode_time(t: Timestamp) -> (u32, u32) {
    let lo = t.sec as u32;
    let epoch = ((t.sec - (lo as i32 as i64)) >> 32) as u32 & 3;
    (lo, epoch | (t.nsec.min(999_999_999) << 2))
}

impl Inode {
    /// A new in-memory inode (not yet on disk): mode, owner, all times
    /// `now`, one link, the given flags, no blocks, a zeroed `i_block`
    /// (an extent root is the caller's), the superblock's wanted
    /// `i_extra_isize` in records larger than 128 bytes.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        sb: &Superblock,
        ino: InodeNo,
        mode: u16,
        uid: u32,
        gid: u32,
        now: Timestamp,
        generation: u32,
        flags: u32,
    ) -> Inode {
        let extra_isize = if sb.inode_size as usize > GOOD_OLD_INODE_SIZE {
            let want = if sb.want_extra_isize != 0 {
                sb.want_extra_isize
            } else {
                32
            };
            want.min((sb.inode_size as usize - GOOD_OLD_INODE_SIZE) as u16) & !3
        } else {
            0
        };
        let mut csum_seed = crc32c(sb.csum_seed, &ino.0.to_le_bytes());
        csum_seed = crc32c(csum_seed, &generation.to_le_bytes());
        let fits = extra_isize as usize + GOOD_OLD_INODE_SIZE >= 0x98;
        Inode {
            ino,
            mode,
            kind: FileType::from_mode(mode),
            uid,
            gid,
            size: 0,
            links_count: 1,
            blocks_512: 0,
            flags,
            generation,
            file_acl: 0,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: fits.then_some(now),
            dtime: 0,
            extra_isize,
            projid: 0,
            block: [0; 60],
            csum_seed,
            ibody: alloc::vec::Vec::new(),
            ibody_dirty: false,
        }
    }

    /// Write this inode's fields into its on-disk record `bytes`
    /// (`inode_size` long), then the checksum. With `fresh` the record is
    /// zeroed first (a newly allocated inode); otherwise fields this type
    /// does not hold (`i_version`, …) and `i_dtime` (the orphan list's)
    /// are kept. The in-inode xattr area is written when
    /// [`Inode::set_ibody`] replaced it, else kept.
    /// `i_blocks` follows the kernel's `huge_file` rules (and may set or
    /// clear `HUGE_FILE_FL` in `self.flags`); EFBIG when it cannot be
    /// stored. Timestamps' extra words and `i_crtime`/`i_projid` are
    /// written only where `i_extra_isize` makes room for them.
    pub fn store(&mut self, sb: &Superblock, bytes: &mut [u8], fresh: bool) -> Result<()> {
        if bytes.len() < GOOD_OLD_INODE_SIZE {
            return Err(Error::corrupt(Object::Inode(self.ino), "short record"));
        }
        if self.ibody_dirty
            && GOOD_OLD_INODE_SIZE + self.extra_isize as usize + self.ibody.len() != bytes.len()
        {
            return Err(Error::corrupt(
                Object::Inode(self.ino),
                "in-inode xattr area does not fit the record",
            ));
        }
        // i_blocks first: it may change the flags.
        let (blocks_lo, blocks_hi) = self.encode_blocks(sb)?;
        if fresh {
            bytes.fill(0);
        }
        let mut rec = [0u8; 160];
        let n = bytes.len().min(160);
        rec[..n].copy_from_slice(&bytes[..n]);
        let raw = RawInode::mut_from_bytes(&mut rec)
            .map_err(|_| Error::corrupt(Object::Inode(self.ino), "short record"))?;
        let large = bytes.len() > GOOD_OLD_INODE_SIZE;
        if large {
            raw.extra_isize = self.extra_isize.into();
        }
        let room = |end: usize| large && GOOD_OLD_INODE_SIZE + self.extra_isize as usize >= end;
        raw.mode = self.mode.into();
        raw.uid = (self.uid as u16).into();
        raw.uid_high = ((self.uid >> 16) as u16).into();
        raw.gid = (self.gid as u16).into();
        raw.gid_high = ((self.gid >> 16) as u16).into();
        raw.size_lo = (self.size as u32).into();
        raw.size_high = ((self.size >> 32) as u32).into();
        raw.links_count = self.links_count.into();
        raw.blocks_lo = blocks_lo.into();
        raw.blocks_high = blocks_hi.into();
        raw.flags = self.flags.into();
        raw.block = self.block;
        raw.generation = self.generation.into();
        raw.file_acl_lo = (self.file_acl as u32).into();
        raw.file_acl_high = ((self.file_acl >> 32) as u16).into();
        // `i_dtime` is the orphan list's link while the inode is an orphan:
        // only the orphan code changes it in place (under its lock), so a
        // decoded copy written back never undoes a concurrent change to
        // the list. A fresh record starts from the decoded value.
        if fresh {
            raw.dtime = self.dtime.into();
        }
        let (a, ax) = encode_time(self.atime);
        let (c, cx) = encode_time(self.ctime);
        let (m, mx) = encode_time(self.mtime);
        raw.atime = a.into();
        raw.ctime = c.into();
        raw.mtime = m.into();
        if room(0x88) {
            raw.ctime_extra = cx.into();
        }
        if room(0x8C) {
            raw.mtime_extra = mx.into();
        }
        if room(0x90) {
            raw.atime_extra = ax.into();
        }
        if let (true, Some(t)) = (room(0x98), self.crtime) {
            let (t, tx) = encode_time(t);
            raw.crtime = t.into();
            raw.crtime_extra = tx.into();
        }
        if room(0xA0) {
            raw.projid = self.projid.into();
        }
        bytes[..n].copy_from_slice(&rec[..n]);
        if self.ibody_dirty && large {
            let at = GOOD_OLD_INODE_SIZE + self.extra_isize as usize;
            bytes[at..].copy_from_slice(&self.ibody);
            self.ibody_dirty = false;
        }
        if let Some((c, has_hi)) = expected_checksum(sb, self.ino, bytes) {
            bytes[CHECKSUM_LO..CHECKSUM_LO + 2].copy_from_slice(&(c as u16).to_le_bytes());
            if has_hi {
                bytes[CHECKSUM_HI..CHECKSUM_HI + 2]
                    .copy_from_slice(&((c >> 16) as u16).to_le_bytes());
            }
        }
        Ok(())
    }

    /// `i_blocks` as stored (`ext4_inode_blocks_set`): low and high words.
    fn encode_blocks(&mut self, sb: &Superblock) -> Result<(u32, u16)> {
        let b = self.blocks_512;
        if b <= u32::MAX as u64 {
            self.flags &= !flags::HUGE_FILE;
            return Ok((b as u32, 0));
        }
        if !sb.has_ro_compat(ro_compat::HUGE_FILE) {
            return Err(Error::FileTooBig);
        }
        if b <= 0xffff_ffff_ffff {
            self.flags &= !flags::HUGE_FILE;
            return Ok((b as u32, (b >> 32) as u16));
        }
        let fs = b >> (sb.log_block_size + 10 - 9);
        if fs > 0xffff_ffff_ffff {
            return Err(Error::FileTooBig);
        }
        self.flags |= flags::HUGE_FILE;
        Ok((fs as u32, (fs >> 32) as u16))
    }

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
            ibody_dirty: false,
        })
    }

    pub fn has_flag(&self, f: u32) -> bool {
        self.flags & f != 0
    }

    /// The in-inode extended attribute area.
    pub fn ibody(&self) -> &[u8] {
        &self.ibody
    }

    /// Replace the in-inode extended attribute area (same length, as built
    /// by the xattr region writer); the next [`Inode::store`] writes it.
    pub fn set_ibody(&mut self, region: alloc::vec::Vec<u8>) {
        self.ibody = region;
        self.ibody_dirty = true;
    }

    /// Bytes the in-inode extended attribute area has in a record of
    /// `inode_size` bytes (0 for 128-byte records).
    pub fn ibody_len(&self, inode_size: usize) -> usize {
        inode_size.saturating_sub(GOOD_OLD_INODE_SIZE + self.extra_isize as usize)
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

    fn sb() -> Superblock {
        let mut raw = crate::superblock::small_raw();
        raw.feature_ro_compat = (ro_compat::METADATA_CSUM | ro_compat::HUGE_FILE).into();
        raw.want_extra_isize = 32u16.into();
        let b = zerocopy::IntoBytes::as_bytes(&raw).to_vec();
        Superblock::parse(&raw, &b, 1 << 30).unwrap()
    }

    #[test]
    fn given_times_clamp_as_the_kernel_keeps_them() {
        let t = |sec, nsec| Timestamp { sec, nsec };
        let mut raw = crate::superblock::small_raw();
        for (isz, max) in [(256u16, 15_032_385_535i64), (128, i32::MAX as i64)] {
            raw.inode_size = isz.into();
            let b = zerocopy::IntoBytes::as_bytes(&raw).to_vec();
            let sb = Superblock::parse(&raw, &b, 1 << 30).unwrap();
            let keep = if isz > 128 { 5 } else { 0 };
            assert_eq!(clamp_time(&sb, t(7, 5)), t(7, keep));
            assert_eq!(clamp_time(&sb, t(20_000_000_000, 5)), t(max, 0));
            assert_eq!(clamp_time(&sb, t(-3_000_000_000, 5)), t(i32::MIN as i64, 0));
        }
    }

    #[test]
    fn store_round_trips_through_parse() {
        let sb = sb();
        let t = |sec, nsec| Timestamp { sec, nsec };
        let mut i = Inode::new(
            &sb,
            InodeNo(12),
            0o100644,
            70000,
            80000,
            t(-5, 7),
            99,
            flags::EXTENTS,
        );
        i.size = 5 << 32 | 17;
        i.links_count = 3;
        i.blocks_512 = 1 << 40;
        i.atime = t(1 << 33, 999_999_999);
        i.mtime = t(-(1 << 31), 1);
        i.block[0] = 0x0a;
        i.file_acl = 5;
        let mut rec = [0xAAu8; 256];
        i.store(&sb, &mut rec, true).unwrap();
        assert!(checksum_ok(&sb, InodeNo(12), &rec));
        let back = Inode::parse(&sb, InodeNo(12), &rec).unwrap();
        assert_eq!((back.mode, back.uid, back.gid), (0o100644, 70000, 80000));
        assert_eq!((back.size, back.links_count), (i.size, 3));
        assert_eq!(back.blocks_512, 1 << 40);
        assert_eq!(back.atime, i.atime);
        assert_eq!(back.mtime, i.mtime);
        assert_eq!(back.ctime, t(-5, 7));
        assert_eq!(back.crtime, Some(t(-5, 7)));
        assert_eq!(back.file_acl, i.file_acl);
        assert_eq!(back.generation, 99);
        assert_eq!(back.csum_seed, i.csum_seed);
        assert_eq!(back.extra_isize, 32);
        assert_eq!(&rec[160..], &[0u8; 96][..], "fresh records are zeroed");
        // Past 48 bits i_blocks counts filesystem blocks.
        i.blocks_512 = 1 << 48;
        i.store(&sb, &mut rec, false).unwrap();
        assert!(i.has_flag(flags::HUGE_FILE));
        assert_eq!(
            Inode::parse(&sb, InodeNo(12), &rec).unwrap().blocks_512,
            1 << 48
        );
        i.blocks_512 = 8;
        i.store(&sb, &mut rec, false).unwrap();
        assert!(!i.has_flag(flags::HUGE_FILE));
        assert_eq!(Inode::parse(&sb, InodeNo(12), &rec).unwrap().blocks_512, 8);
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
