//! Extended attributes as ext4 stores them: parsing of the two entry regions
//! (inside a large inode, and in an xattr block), their checksum and hashes,
//! and the mapping between on-disk name indexes and full names.
//!
//! API:
//! - [`parse_ibody`]: entries of the region after `i_extra_isize` in an inode;
//!   no magic there means "no in-inode xattrs" (an empty list), as in the kernel;
//! - [`block_header`] / [`parse_block`]: an xattr block's header (magic,
//!   `h_blocks == 1`) and entries; [`verify_block_checksum`] and
//!   [`block_checksum`] for `metadata_csum`;
//! - [`XattrEntry`]: name index, name suffix, value; a value either lies in the
//!   region ([`XattrValue::Inline`]) or in an `ea_inode`
//!   ([`XattrValue::EaInode`]), which the caller reads and checks itself
//!   (feature bit, inode number range, `EA_INODE_FL`, size);
//! - [`full_name`] / [`split_name`]: index + suffix <-> "user.foo" etc.;
//!   [`find`] looks a full name up in parsed entries;
//! - [`entry_hash`], [`entry_hash_signed`], [`block_hash`]: the hashes the
//!   kernel stores in `e_hash`/`h_hash` (needed by writers, not by readers:
//!   the kernel does not check them when reading).
//!
//! Every offset and size is bounds-checked against the region with the same
//! rules as the kernel's `ext4_xattr_check_entries`; a violation is
//! `Error::Corrupt` naming the inode (in-inode) or block (xattr block).
//! Index 7 ("system.", used for `system.data` of inline-data inodes) and
//! index 8 are mapped to names, but the kernel never lists `system.data`:
//! callers listing xattrs should hide it.

use alloc::vec::Vec;
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

use crate::checksum::crc32c;
use crate::error::{Error, Object, Result};
use crate::numbers::{InodeNo, PhysBlock};

/// Magic of both the in-inode header and the xattr block header.
pub const XATTR_MAGIC: u32 = 0xEA02_0000;
/// The kernel refuses any entry claiming a larger value (`EXT4_XATTR_SIZE_MAX`).
pub const VALUE_SIZE_MAX: u32 = 1 << 24;

/// Header of an xattr block (32 bytes).
#[derive(Clone, Copy, Debug, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawBlockHeader {
    pub h_magic: U32,
    /// Number of inodes sharing this block.
    pub h_refcount: U32,
    /// Always 1 (multi-block xattrs were never implemented).
    pub h_blocks: U32,
    pub h_hash: U32,
    pub h_checksum: U32,
    pub h_reserved: [U32; 3],
}

/// Header of the in-inode xattr region (just the magic).
#[derive(Clone, Copy, Debug, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawIbodyHeader {
    pub h_magic: U32,
}

/// Fixed part of an entry (16 bytes), followed by `e_name_len` name bytes and
/// padding to a multiple of 4.
#[derive(Clone, Copy, Debug, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawEntry {
    pub e_name_len: u8,
    pub e_name_index: u8,
    /// Value offset: from the first entry (in-inode) or the block start.
    pub e_value_offs: U16,
    /// Non-zero: the value is the content of this inode (`ea_inode`).
    pub e_value_inum: U32,
    pub e_value_size: U32,
    pub e_hash: U32,
}

const BLOCK_HEADER_LEN: usize = core::mem::size_of::<RawBlockHeader>();
const ENTRY_LEN: usize = core::mem::size_of::<RawEntry>();
/// Offset of `h_checksum` in the block header.
const CHECKSUM_OFFSET: usize = 16;

/// One parsed attribute. `name` is the suffix after the index's prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XattrEntry<'a> {
    pub index: u8,
    pub name: &'a [u8],
    pub value: XattrValue<'a>,
    /// `e_hash` as stored (0 for in-inode entries without an ea_inode).
    pub hash: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XattrValue<'a> {
    /// The value bytes, inside the parsed region.
    Inline(&'a [u8]),
    /// The value is the first `size` bytes of inode `ino`.
    EaInode { ino: InodeNo, size: u32 },
}

impl XattrValue<'_> {
    /// Length of the value in bytes.
    pub fn len(&self) -> u32 {
        match self {
            // Bounded by the region, itself at most a block.
            XattrValue::Inline(v) => v.len() as u32,
            XattrValue::EaInode { size, .. } => *size,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Parses the in-inode xattr region: the inode's bytes from
/// `128 + i_extra_isize` to the inode size. A region too short for the magic,
/// or without it, holds no xattrs.
pub fn parse_ibody(region: &[u8], ino: InodeNo) -> Result<Vec<XattrEntry<'_>>> {
    let obj = Object::Inode(ino);
    let Ok((hdr, rest)) = RawIbodyHeader::ref_from_prefix(region) else {
        return Ok(Vec::new());
    };
    if hdr.h_magic.get() != XATTR_MAGIC {
        return Ok(Vec::new());
    }
    // Entries and value offsets both start right after the magic.
    parse_entries(rest, 0, obj)
}

/// Checks an xattr block's header: magic and `h_blocks == 1`.
pub fn block_header(block: &[u8], block_nr: PhysBlock) -> Result<&RawBlockHeader> {
    let obj = Object::Block(block_nr);
    let (hdr, _) = RawBlockHeader::ref_from_prefix(block)
        .map_err(|_| Error::corrupt(obj, "xattr block shorter than its header"))?;
    if hdr.h_magic.get() != XATTR_MAGIC {
        return Err(Error::corrupt(obj, "xattr block magic"));
    }
    if hdr.h_blocks.get() != 1 {
        return Err(Error::corrupt(obj, "xattr block h_blocks is not 1"));
    }
    Ok(hdr)
}

/// Parses an xattr block (the whole block, as read from the device). The
/// checksum is not checked here: see [`verify_block_checksum`].
pub fn parse_block(block: &[u8], block_nr: PhysBlock) -> Result<Vec<XattrEntry<'_>>> {
    block_header(block, block_nr)?;
    parse_entries(block, BLOCK_HEADER_LEN, Object::Block(block_nr))
}

/// The `metadata_csum` checksum of an xattr block: crc32c over the
/// little-endian block number, then the block with `h_checksum` taken as zero.
/// `None` if the block is too short to have a header.
pub fn block_checksum(block: &[u8], block_nr: PhysBlock, csum_seed: u32) -> Option<u32> {
    if block.len() < BLOCK_HEADER_LEN {
        return None;
    }
    let crc = crc32c(csum_seed, &block_nr.0.to_le_bytes());
    let crc = crc32c(crc, &block[..CHECKSUM_OFFSET]);
    let crc = crc32c(crc, &[0; 4]);
    Some(crc32c(crc, &block[CHECKSUM_OFFSET + 4..]))
}

/// Whether the block's stored `h_checksum` matches [`block_checksum`].
/// `csum_seed` is the filesystem's checksum seed (`s_checksum_seed`, or
/// crc32c(~0, uuid)).
pub fn verify_block_checksum(block: &[u8], block_nr: PhysBlock, csum_seed: u32) -> bool {
    let Some(crc) = block_checksum(block, block_nr, csum_seed) else {
        return false;
    };
    let stored = &block[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 4];
    stored == crc.to_le_bytes()
}

/// Walks the entry table of `region` starting at `first`; value offsets are
/// relative to the start of `region`. Mirrors the kernel's checks: every
/// entry and the 4-byte terminator lie inside the region, names contain no
/// NUL, sizes are at most [`VALUE_SIZE_MAX`], and an inline value (with its
/// padding) lies after the terminator and inside the region.
fn parse_entries(region: &[u8], first: usize, obj: Object) -> Result<Vec<XattrEntry<'_>>> {
    let end = region.len();
    // Pass 1: find the terminator, so values can be checked not to overlap
    // the table. Each step advances at least 16 bytes: bounded by the region.
    let mut pos = first;
    let mut count = 0usize;
    loop {
        let word = region
            .get(pos..pos + 4)
            .ok_or(Error::corrupt(obj, "xattr entries run past the end"))?;
        if word == [0; 4] {
            break;
        }
        let (raw, _) = RawEntry::ref_from_prefix(&region[pos..])
            .map_err(|_| Error::corrupt(obj, "xattr entry runs past the end"))?;
        pos += entry_len(raw.e_name_len);
        count += 1;
    }
    let table_end = pos + 4;

    // Pass 2: decode and check each entry.
    let mut out = Vec::with_capacity(count);
    let mut pos = first;
    for _ in 0..count {
        // Pass 1 established these positions; the checks cannot fail.
        let (raw, _) = RawEntry::ref_from_prefix(&region[pos..])
            .map_err(|_| Error::corrupt(obj, "xattr entry runs past the end"))?;
        let name_start = pos + ENTRY_LEN;
        let name = region
            .get(name_start..name_start + usize::from(raw.e_name_len))
            .ok_or(Error::corrupt(obj, "xattr name runs past the end"))?;
        if name.contains(&0) {
            return Err(Error::corrupt(obj, "xattr name contains NUL"));
        }
        let size = raw.e_value_size.get();
        if size > VALUE_SIZE_MAX {
            return Err(Error::corrupt(obj, "xattr value size too large"));
        }
        let inum = raw.e_value_inum.get();
        let value = if inum != 0 {
            XattrValue::EaInode {
                ino: InodeNo(inum),
                size,
            }
        } else if size == 0 {
            XattrValue::Inline(&[])
        } else {
            let offs = usize::from(raw.e_value_offs.get());
            let size = size as usize;
            if offs < table_end {
                return Err(Error::corrupt(obj, "xattr value overlaps the entry table"));
            }
            // Padded size <= 2^24 + 3: no overflow in usize.
            if offs > end || pad4(size) > end - offs {
                return Err(Error::corrupt(obj, "xattr value runs past the end"));
            }
            XattrValue::Inline(&region[offs..offs + size])
        };
        out.push(XattrEntry {
            index: raw.e_name_index,
            name,
            value,
            hash: raw.e_hash.get(),
        });
        pos += entry_len(raw.e_name_len);
    }
    Ok(out)
}

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

/// Bytes an entry occupies in the table, padding included.
fn entry_len(name_len: u8) -> usize {
    pad4(ENTRY_LEN + usize::from(name_len))
}

/// Name prefixes by on-disk index, longest first among those sharing a start
/// so [`split_name`] can take the first match.
const PREFIXES: [(u8, &[u8]); 7] = [
    (2, b"system.posix_acl_access"),
    (3, b"system.posix_acl_default"),
    (8, b"system.richacl"),
    (1, b"user."),
    (4, b"trusted."),
    (6, b"security."),
    (7, b"system."),
];

/// The prefix of on-disk name index `index`, if known.
pub fn prefix(index: u8) -> Option<&'static [u8]> {
    PREFIXES.iter().find(|(i, _)| *i == index).map(|(_, p)| *p)
}

/// The full attribute name ("user.foo") of an entry; `None` for indexes this
/// engine does not expose (e.g. 5 lustre, 9 encryption context).
pub fn full_name(index: u8, name: &[u8]) -> Option<Vec<u8>> {
    let p = prefix(index)?;
    let mut full = Vec::with_capacity(p.len() + name.len());
    full.extend_from_slice(p);
    full.extend_from_slice(name);
    Some(full)
}

/// Splits a full name into (index, suffix) the way e2fsprogs does: the ACL
/// and richacl names win over the generic "system." prefix. `None` if no
/// prefix matches (such a name cannot exist on ext4).
pub fn split_name(full: &[u8]) -> Option<(u8, &[u8])> {
    PREFIXES
        .iter()
        .find(|(_, p)| full.starts_with(p))
        .map(|(i, p)| (*i, &full[p.len()..]))
}

/// The entry named `full` among `entries`, if any.
#[allow(dead_code)] // for the write path (replace or remove a name)
pub fn find<'e, 'a>(entries: &'e [XattrEntry<'a>], full: &[u8]) -> Option<&'e XattrEntry<'a>> {
    let (index, name) = split_name(full)?;
    entries.iter().find(|e| e.index == index && e.name == name)
}

/// `e_hash` of an entry whose value is `value` (for an ea_inode value, pass
/// the ea_inode's stored hash as 4 little-endian bytes). Name bytes are taken
/// unsigned, as kernels since 6.2 write them.
pub fn entry_hash(name: &[u8], value: &[u8]) -> u32 {
    hash_value(
        name.iter().fold(0, |h, &b| name_step(h, u32::from(b))),
        value,
    )
}

/// The older `e_hash` that sign-extended name bytes >= 0x80 (x86 kernels
/// before 6.2); the kernel accepts either when it checks.
#[allow(dead_code)] // for the write path, which must accept either
pub fn entry_hash_signed(name: &[u8], value: &[u8]) -> u32 {
    hash_value(
        name.iter()
            .fold(0, |h, &b| name_step(h, b as i8 as i32 as u32)),
        value,
    )
}

fn name_step(h: u32, c: u32) -> u32 {
    (h << 5) ^ (h >> 27) ^ c
}

/// Mixes in the value as little-endian words, zero-padded to 4 bytes.
fn hash_value(mut h: u32, value: &[u8]) -> u32 {
    for chunk in value.chunks(4) {
        let mut w = [0u8; 4];
        w[..chunk.len()].copy_from_slice(chunk);
        h = (h << 16) ^ (h >> 16) ^ u32::from_le_bytes(w);
    }
    h
}

/// `h_hash` of an xattr block from its entries' hashes in table order; 0 if
/// any entry hash is 0 (the kernel's convention for "not shareable").
pub fn block_hash(entry_hashes: impl IntoIterator<Item = u32>) -> u32 {
    let mut h = 0u32;
    for e in entry_hashes {
        if e == 0 {
            return 0;
        }
        h = (h << 16) ^ (h >> 16) ^ e;
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};
    use std::vec;

    #[test]
    fn layouts() {
        assert_eq!(size_of::<RawBlockHeader>(), 32);
        assert_eq!(offset_of!(RawBlockHeader, h_refcount), 4);
        assert_eq!(offset_of!(RawBlockHeader, h_blocks), 8);
        assert_eq!(offset_of!(RawBlockHeader, h_hash), 12);
        assert_eq!(offset_of!(RawBlockHeader, h_checksum), CHECKSUM_OFFSET);
        assert_eq!(offset_of!(RawBlockHeader, h_reserved), 20);
        assert_eq!(size_of::<RawIbodyHeader>(), 4);
        assert_eq!(size_of::<RawEntry>(), 16);
        assert_eq!(offset_of!(RawEntry, e_name_index), 1);
        assert_eq!(offset_of!(RawEntry, e_value_offs), 2);
        assert_eq!(offset_of!(RawEntry, e_value_inum), 4);
        assert_eq!(offset_of!(RawEntry, e_value_size), 8);
        assert_eq!(offset_of!(RawEntry, e_hash), 12);
    }

    /// Test input: (index, name, value or ea_inode number with size).
    enum V<'a> {
        In(&'a [u8]),
        Ea(u32, u32),
    }

    /// Lays entries out as ext4 does: the table from `first`, values packed
    /// downward from the end of `area`, offsets relative to `area` start.
    fn lay_out(area: &mut [u8], first: usize, entries: &[(u8, &[u8], V)]) {
        let mut pos = first;
        let mut vend = area.len();
        for (index, name, v) in entries {
            let (offs, inum, size) = match v {
                V::In(val) if !val.is_empty() => {
                    vend -= pad4(val.len());
                    area[vend..vend + val.len()].copy_from_slice(val);
                    (vend as u16, 0, val.len() as u32)
                }
                V::In(_) => (0, 0, 0),
                V::Ea(ino, size) => (0, *ino, *size),
            };
            area[pos] = name.len() as u8;
            area[pos + 1] = *index;
            area[pos + 2..pos + 4].copy_from_slice(&offs.to_le_bytes());
            area[pos + 4..pos + 8].copy_from_slice(&inum.to_le_bytes());
            area[pos + 8..pos + 12].copy_from_slice(&size.to_le_bytes());
            area[pos + 12..pos + 16].copy_from_slice(&0x1234u32.to_le_bytes());
            area[pos + 16..pos + 16 + name.len()].copy_from_slice(name);
            pos += entry_len(name.len() as u8);
        }
        assert!(pos + 4 <= vend, "test entries do not fit");
    }

    fn sample_entries() -> Vec<(u8, &'static [u8], V<'static>)> {
        vec![
            (1, b"a", V::In(b"hi")),
            (1, b"empty", V::In(b"")),
            (
                2,
                b"",
                V::In(&[1, 0, 0, 0, 1, 0, 6, 0, 4, 0, 4, 0, 0x20, 0, 4, 0]),
            ),
            (6, b"selinux", V::In(b"system_u:object_r:etc_t:s0\0")),
            (1, b"big", V::Ea(77, 70000)),
        ]
    }

    fn sample_block(size: usize) -> Vec<u8> {
        let mut b = vec![0u8; size];
        b[0..4].copy_from_slice(&XATTR_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        lay_out(&mut b, 32, &sample_entries());
        b
    }

    fn sample_ibody(size: usize) -> Vec<u8> {
        let mut r = vec![0u8; size];
        r[0..4].copy_from_slice(&XATTR_MAGIC.to_le_bytes());
        lay_out(&mut r[4..], 0, &sample_entries());
        r
    }

    fn check_sample(got: &[XattrEntry]) {
        let want = sample_entries();
        assert_eq!(got.len(), want.len());
        for (g, (index, name, v)) in got.iter().zip(&want) {
            assert_eq!((g.index, g.name), (*index, *name));
            match (g.value, v) {
                (XattrValue::Inline(a), V::In(b)) => assert_eq!(a, *b),
                (XattrValue::EaInode { ino, size }, V::Ea(i, s)) => {
                    assert_eq!((ino.0, size), (*i, *s))
                }
                _ => panic!("value kind differs"),
            }
        }
    }

    #[test]
    fn parses_handmade_regions() {
        check_sample(&parse_block(&sample_block(1024), PhysBlock(9)).unwrap());
        // 160 bytes: the sample fills the region exactly.
        check_sample(&parse_ibody(&sample_ibody(160), InodeNo(12)).unwrap());
        // No magic, or too short for one: no xattrs.
        assert_eq!(parse_ibody(&[0; 96], InodeNo(12)).unwrap(), vec![]);
        assert_eq!(parse_ibody(&[0, 0, 2], InodeNo(12)).unwrap(), vec![]);
        assert_eq!(parse_ibody(&[], InodeNo(12)).unwrap(), vec![]);
        let block = sample_block(1024);
        let e = parse_block(&block, PhysBlock(9)).unwrap();
        assert_eq!(find(&e, b"user.hi"), None);
        assert_eq!(
            find(&e, b"user.a").unwrap().value,
            XattrValue::Inline(b"hi")
        );
        assert_eq!(find(&e, b"system.posix_acl_access").unwrap().index, 2);
        assert_eq!(find(&e, b"security.selinux").unwrap().name, b"selinux");
    }

    fn corrupt_what(r: Result<Vec<XattrEntry>>) -> &'static str {
        match r {
            Err(Error::Corrupt { what, .. }) => what,
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn rejects_bad_blocks() {
        let good = sample_block(1024);
        let mut b = good.clone();
        b[0] ^= 1;
        assert_eq!(
            corrupt_what(parse_block(&b, PhysBlock(9))),
            "xattr block magic"
        );
        let mut b = good.clone();
        b[8] = 2;
        assert_eq!(
            corrupt_what(parse_block(&b, PhysBlock(9))),
            "xattr block h_blocks is not 1"
        );
        assert!(parse_block(&good[..31], PhysBlock(9)).is_err());
        // First entry's value offset pointed into the table.
        let mut b = good.clone();
        b[32 + 2..32 + 4].copy_from_slice(&40u16.to_le_bytes());
        assert_eq!(
            corrupt_what(parse_block(&b, PhysBlock(9))),
            "xattr value overlaps the entry table"
        );
        // Value (with padding) past the end.
        let mut b = good.clone();
        b[32 + 2..32 + 4].copy_from_slice(&1022u16.to_le_bytes());
        assert_eq!(
            corrupt_what(parse_block(&b, PhysBlock(9))),
            "xattr value runs past the end"
        );
        let mut b = good.clone();
        b[32 + 8..32 + 12].copy_from_slice(&(VALUE_SIZE_MAX + 1).to_le_bytes());
        assert_eq!(
            corrupt_what(parse_block(&b, PhysBlock(9))),
            "xattr value size too large"
        );
        // NUL in a name.
        let mut b = good.clone();
        b[32 + 16] = 0;
        assert_eq!(
            corrupt_what(parse_block(&b, PhysBlock(9))),
            "xattr name contains NUL"
        );
        // A table with no terminator: every byte after the header non-zero.
        let mut b = good.clone();
        b[32..].fill(0x11);
        assert!(parse_block(&b, PhysBlock(9)).is_err());
        // Error names the block.
        assert_eq!(
            parse_block(&b[..40], PhysBlock(77)).unwrap_err(),
            Error::corrupt(
                Object::Block(PhysBlock(77)),
                "xattr entry runs past the end"
            )
        );
        // In-inode: magic but nothing else.
        assert_eq!(
            parse_ibody(&XATTR_MAGIC.to_le_bytes(), InodeNo(5)).unwrap_err(),
            Error::corrupt(Object::Inode(InodeNo(5)), "xattr entries run past the end")
        );
    }

    #[test]
    fn checksum_round_trip() {
        let mut b = sample_block(1024);
        let c = block_checksum(&b, PhysBlock(1234), 0xdead_beef).unwrap();
        b[16..20].copy_from_slice(&c.to_le_bytes());
        assert!(verify_block_checksum(&b, PhysBlock(1234), 0xdead_beef));
        assert!(!verify_block_checksum(&b, PhysBlock(1235), 0xdead_beef));
        assert!(!verify_block_checksum(&b, PhysBlock(1234), 0xdead_beee));
        b[500] ^= 4;
        assert!(!verify_block_checksum(&b, PhysBlock(1234), 0xdead_beef));
        assert!(!verify_block_checksum(&b[..20], PhysBlock(1234), 0));
    }

    #[test]
    fn names_map_both_ways() {
        let cases: [(u8, &[u8], &[u8]); 8] = [
            (1, b"foo", b"user.foo"),
            (2, b"", b"system.posix_acl_access"),
            (3, b"", b"system.posix_acl_default"),
            (4, b"x", b"trusted.x"),
            (6, b"selinux", b"security.selinux"),
            (7, b"data", b"system.data"),
            (8, b"", b"system.richacl"),
            (1, b"", b"user."),
        ];
        for (index, name, full) in cases {
            assert_eq!(full_name(index, name).unwrap(), full);
            assert_eq!(split_name(full), Some((index, name)));
        }
        for unknown in [0u8, 5, 9, 10, 255] {
            assert_eq!(full_name(unknown, b"x"), None);
        }
        assert_eq!(split_name(b"foo.bar"), None);
        assert_eq!(split_name(b"user"), None);
    }

    #[test]
    fn hashes() {
        // Name and value mixing, worked by hand: "a" -> 0x61; then one
        // value word 0x00006968 ("hi" padded): (0x61 << 16) ^ 0 ^ 0x6968.
        assert_eq!(entry_hash(b"a", b"hi"), 0x0061_6968);
        assert_eq!(entry_hash(b"\xff", b""), 0xff);
        assert_eq!(entry_hash_signed(b"\xff", b""), 0xffff_ffff);
        assert_eq!(block_hash([1, 2]), (1 << 16) ^ 2);
        assert_eq!(block_hash([1, 0, 2]), 0);
    }

    #[test]
    fn byte_flips_never_panic() {
        use ext4_tests::damage::xattr_flips;
        xattr_flips(&sample_block(1024), true, 20_000, 1);
        xattr_flips(&sample_block(4096), true, 5_000, 2);
        xattr_flips(&sample_ibody(160), false, 20_000, 3);
        xattr_flips(&sample_ibody(200), false, 5_000, 4);
    }
}
