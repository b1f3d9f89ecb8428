//! Growing a filesystem offline (`ext4-image resize`): more blocks in the
//! last group, and new groups, as far as the descriptor blocks already in
//! place have room for their descriptors (without `resize_inode` no
//! blocks are reserved for more, and making room would mean moving what
//! follows them: resize2fs's work, not done here). With `resize_inode`,
//! the reserved descriptor blocks after the descriptors (in group 0 and
//! every backup) become descriptor blocks as more are needed, new backup
//! groups get their reserved blocks too, and the resize inode is laid out
//! anew for what is left, as resize2fs does.
//!
//! Each new group holds its own bitmaps and inode table, after its
//! superblock backup (a valid place with or without `flex_bg`). The order
//! of writes: new groups' tables and bitmaps, the last old group's
//! bitmap, the descriptors (every copy), then the superblocks, primary
//! last; until the primary superblock is written the filesystem is the
//! old one.

use alloc::vec;

use zerocopy::{FromBytes, FromZeros, IntoBytes};

use crate::checksum::crc32c;
use crate::device::BlockDevice;
use crate::error::{Error, Object, Result};
use crate::features::{compat, incompat, ro_compat};
use crate::group_desc::{self, RawGroupDesc, BG_BLOCK_UNINIT, BG_INODE_UNINIT, BG_INODE_ZEROED};
use crate::numbers::InodeNo;
use crate::superblock::{RawSuperblock, Superblock, SUPERBLOCK_OFFSET};

use super::resize_inode::{self, backups_between, Reserve};
use super::{has_super, new_desc, set_bits};

/// What [`grow`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grown {
    pub old_blocks: u64,
    pub new_blocks: u64,
    pub old_groups: u32,
    pub new_groups: u32,
    pub free_blocks: u64,
    pub free_inodes: u64,
}

/// Why a filesystem cannot grow here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A feature this grow does not handle (its name).
    Feature(&'static str),
    /// The journal needs recovery first, or the filesystem has errors.
    NotClean,
    /// Smaller than (or equal to) the filesystem now.
    NotBigger,
    /// The descriptor blocks hold descriptors for groups up to this many
    /// bytes, counting its reserved descriptor blocks (`reserved`: it has
    /// some, resize_inode).
    TooBig { max_bytes: u64, reserved: bool },
}

/// Grow the filesystem on `dev` to `new_size` bytes (the device must be
/// at least that big; a last group too small for its tables plus 50
/// blocks is left out, as mke2fs does).
pub fn grow<D: BlockDevice>(
    dev: &D,
    new_size: u64,
) -> Result<core::result::Result<Grown, Refusal>> {
    let mut raw = RawSuperblock::new_zeroed();
    dev.read_at(SUPERBLOCK_OFFSET, raw.as_mut_bytes())?;
    let sb = Superblock::parse(&raw, raw.as_bytes(), dev.size())?;
    for (on, name) in [
        (sb.has_ro_compat(ro_compat::BIGALLOC), "bigalloc"),
        (sb.has_incompat(incompat::META_BG), "meta_bg"),
        (sb.has_incompat(incompat::MMP), "mmp"),
        (sb.has_compat(compat::SPARSE_SUPER2), "sparse_super2"),
        (
            sb.reserved_gdt_blocks != 0 && !sb.has_compat(compat::RESIZE_INODE),
            "reserved descriptor blocks without resize_inode",
        ),
        (sb.has_incompat(incompat::JOURNAL_DEV), "journal_dev"),
    ] {
        if on {
            return Ok(Err(Refusal::Feature(name)));
        }
    }
    if sb.has_incompat(incompat::RECOVER) || sb.state & 1 == 0 || sb.state & 2 != 0 {
        return Ok(Err(Refusal::NotClean));
    }
    let bs = sb.block_size as u64;
    let bsu = sb.block_size;
    let bpg = sb.blocks_per_group as u64;
    let ipg = sb.inodes_per_group;
    let first_data = sb.first_data_block as u64;
    let ds = sb.desc_size as usize;
    let per_block = sb.block_size as usize / ds;
    let old_groups = sb.group_count;
    let desc_blocks = (old_groups as usize).div_ceil(per_block);
    let itb = (ipg as u64 * sb.inode_size as u64).div_ceil(bs);
    let sparse = sb.has_ro_compat(ro_compat::SPARSE_SUPER);
    let csum = sb.has_ro_compat(ro_compat::METADATA_CSUM | ro_compat::GDT_CSUM);
    let meta_csum = sb.metadata_csum();
    let backup = |g: u32| !sparse || has_super(g);
    // With resize_inode, each backup also has the reserved descriptor
    // blocks after its descriptors.
    let rsv = if sb.has_compat(compat::RESIZE_INODE) {
        sb.reserved_gdt_blocks as u64
    } else {
        0
    };
    let super_blocks = |g: u32| {
        if backup(g) {
            1 + desc_blocks as u64 + rsv
        } else {
            0
        }
    };

    let bit64 = sb.has_incompat(incompat::BIT64);
    let limit = if bit64 { 1u64 << 48 } else { u32::MAX as u64 };
    // Reserved descriptor blocks become descriptor blocks as needed.
    let max_groups = ((desc_blocks + rsv as usize) * per_block) as u64;
    let max_blocks = (first_data + max_groups * bpg).min(limit);
    if new_size / bs > max_blocks {
        return Ok(Err(Refusal::TooBig {
            max_bytes: max_blocks * bs,
            reserved: rsv > 0,
        }));
    }
    let mut new_blocks = new_size / bs;
    // A last group too small for its tables and 50 blocks is left out.
    let rem = (new_blocks - first_data) % bpg;
    let groups_for = |b: u64| (b - first_data).div_ceil(bpg) as u32;
    if rem != 0 && groups_for(new_blocks) > old_groups {
        let last = groups_for(new_blocks) - 1;
        if rem < super_blocks(last) + 2 + itb + 50 {
            new_blocks -= rem;
        }
    }
    if new_blocks <= sb.blocks_count {
        return Ok(Err(Refusal::NotBigger));
    }
    let new_groups = groups_for(new_blocks);
    if new_groups as u64 * ipg as u64 > u32::MAX as u64 {
        return Ok(Err(Refusal::TooBig {
            max_bytes: max_blocks * bs,
            reserved: rsv > 0,
        }));
    }
    let group_first = |g: u32| first_data + g as u64 * bpg;
    let group_len = |g: u32| (new_blocks - group_first(g)).min(bpg);

    // The descriptors as they are, with room for the new ones: the
    // descriptor blocks taken from the reserved ones follow them.
    let new_desc_blocks = (new_groups as usize).div_ceil(per_block);
    let new_rsv = rsv - (new_desc_blocks - desc_blocks) as u64;
    let mut descs = vec![0u8; new_desc_blocks * bs as usize];
    dev.read_blocks(first_data + 1, bsu, &mut descs[..desc_blocks * bs as usize])?;

    // The resize inode, checked before anything is written.
    let resize_inode = if rsv > 0 {
        Some(resize_inode(
            dev,
            &sb,
            &descs[..ds],
            desc_blocks as u64,
            new_groups,
        )?)
    } else {
        None
    };

    let mut added_meta = 0u64;
    let mut bitmap = vec![0u8; bs as usize];
    let bits = bsu * 8;

    // The last old group gains the blocks past its old end.
    let last = old_groups - 1;
    let old_len = sb.blocks_count - group_first(last);
    let grown_len = group_len(last);
    if grown_len > old_len {
        let at = last as usize * ds;
        let mut d = RawGroupDesc::new_zeroed();
        d.as_mut_bytes()[..ds].copy_from_slice(&descs[at..at + ds]);
        if d.flags.get() & BG_BLOCK_UNINIT != 0 {
            return Ok(Err(Refusal::Feature(
                "a last group with an uninitialized block bitmap",
            )));
        }
        // The high half is zero in 32-byte descriptors (not copied).
        let bb = d.block_bitmap_lo.get() as u64 | (d.block_bitmap_hi.get() as u64) << 32;
        // Read from disk: checked before it is written back.
        if bb < first_data || bb >= sb.blocks_count {
            return Err(Error::corrupt(
                Object::GroupDesc(last),
                "block bitmap outside the filesystem",
            ));
        }
        dev.read_blocks(bb, bsu, &mut bitmap)?;
        for b in old_len as u32..grown_len as u32 {
            bitmap[(b / 8) as usize] &= !(1 << (b % 8));
        }
        dev.write_blocks(bb, bsu, &bitmap)?;
        let gained = grown_len - old_len;
        let free = (d.free_blocks_count_lo.get() as u64
            | (d.free_blocks_count_hi.get() as u64) << 16)
            + gained;
        d.free_blocks_count_lo = (free as u16).into();
        d.free_blocks_count_hi = ((free >> 16) as u16).into();
        if meta_csum {
            let c = group_desc::bitmap_checksum(&sb, &bitmap, sb.blocks_per_group);
            d.block_bitmap_csum_lo = (c as u16).into();
            d.block_bitmap_csum_hi = ((c >> 16) as u16).into();
        }
        descs[at..at + ds].copy_from_slice(&d.as_bytes()[..ds]);
    }

    // The new groups: bitmaps, a zeroed inode table, a descriptor.
    let zeros = vec![0u8; (itb as usize).min(256) * bs as usize];
    for g in old_groups..new_groups {
        let first = group_first(g);
        let len = group_len(g);
        let bb = first + super_blocks(g);
        let (ib, it) = (bb + 1, bb + 2);
        let meta = super_blocks(g) + 2 + itb;
        if meta > len {
            return Err(Error::NoSpace);
        }
        let mut left = itb;
        let mut at = it;
        while left > 0 {
            let n = left.min(256);
            dev.write_blocks(at, bsu, &zeros[..(n * bs) as usize])?;
            at += n;
            left -= n;
        }
        let free = len - meta;
        let mut d = new_desc((bb, ib, it), free, ipg);
        bitmap.fill(0);
        set_bits(&mut bitmap, 0, meta as u32);
        set_bits(&mut bitmap, len as u32, bits);
        dev.write_blocks(bb, bsu, &bitmap)?;
        if meta_csum {
            let c = group_desc::bitmap_checksum(&sb, &bitmap, sb.blocks_per_group);
            d.block_bitmap_csum_lo = (c as u16).into();
            d.block_bitmap_csum_hi = ((c >> 16) as u16).into();
        }
        bitmap.fill(0);
        set_bits(&mut bitmap, ipg, bits);
        dev.write_blocks(ib, bsu, &bitmap)?;
        if meta_csum {
            let c = group_desc::bitmap_checksum(&sb, &bitmap, ipg);
            d.inode_bitmap_csum_lo = (c as u16).into();
            d.inode_bitmap_csum_hi = ((c >> 16) as u16).into();
        }
        if csum {
            d.flags = (BG_INODE_ZEROED | BG_INODE_UNINIT).into();
            d.itable_unused_lo = (ipg as u16).into();
            d.itable_unused_hi = ((ipg >> 16) as u16).into();
        }
        let at = g as usize * ds;
        descs[at..at + ds].copy_from_slice(&d.as_bytes()[..ds]);
        added_meta += meta;
    }
    for g in last..new_groups {
        let at = g as usize * ds;
        if let Some(c) = group_desc::expected_checksum(&sb, g, &descs[at..at + ds]) {
            descs[at + 0x1E..at + 0x20].copy_from_slice(&c.to_le_bytes());
        }
    }

    // The resize inode: each reserved descriptor block of group 0 lists
    // its copies in the backup groups (ext2fs_create_resize_inode); the
    // new groups' copies are added.
    if let Some(r) = resize_inode {
        rebuild_resize_inode(dev, &sb, r, new_desc_blocks as u64, new_rsv, new_groups)?;
        raw.reserved_gdt_blocks = (new_rsv as u16).into();
    }

    // The superblock's counts, summed from the descriptors (the
    // superblock's own may lag, as the kernel writes them lazily); the
    // reserve keeps its share.
    let (mut free_blocks, mut free_inodes) = (0u64, 0u64);
    for g in 0..new_groups as usize {
        let mut d = RawGroupDesc::new_zeroed();
        d.as_mut_bytes()[..ds].copy_from_slice(&descs[g * ds..g * ds + ds]);
        free_blocks +=
            d.free_blocks_count_lo.get() as u64 | (d.free_blocks_count_hi.get() as u64) << 16;
        free_inodes +=
            d.free_inodes_count_lo.get() as u64 | (d.free_inodes_count_hi.get() as u64) << 16;
    }
    let reserved =
        (sb.r_blocks_count as u128 * new_blocks as u128 / sb.blocks_count as u128) as u64;
    raw.blocks_count_lo = (new_blocks as u32).into();
    raw.free_blocks_count_lo = (free_blocks as u32).into();
    raw.r_blocks_count_lo = (reserved as u32).into();
    if bit64 {
        raw.blocks_count_hi = ((new_blocks >> 32) as u32).into();
        raw.free_blocks_count_hi = ((free_blocks >> 32) as u32).into();
        raw.r_blocks_count_hi = ((reserved >> 32) as u32).into();
    }
    raw.inodes_count = (new_groups * ipg).into();
    raw.free_inodes_count = (free_inodes as u32).into();
    if raw.overhead_clusters.get() != 0 {
        raw.overhead_clusters = (raw.overhead_clusters.get() + added_meta as u32).into();
    }
    // Checked as any image's superblock is, before anything relies on it.
    Superblock::parse(&raw, raw.as_bytes(), dev.size())?;

    // Descriptors everywhere, then superblocks, the primary last.
    for g in (0..new_groups).filter(|&g| backup(g)) {
        let at = if g == 0 {
            first_data + 1
        } else {
            group_first(g) + 1
        };
        dev.write_blocks(at, bsu, &descs)?;
    }
    dev.flush()?;
    let state = raw.state.get();
    for g in (1..new_groups).filter(|&g| backup(g)) {
        let mut b =
            RawSuperblock::read_from_bytes(raw.as_bytes()).map_err(|_| Error::InvalidArgument)?;
        b.block_group_nr = (g.min(u16::MAX as u32) as u16).into();
        b.state = (state & !1).into();
        if meta_csum {
            b.checksum = crc32c(!0, &b.as_bytes()[..1020]).into();
        }
        dev.write_at(group_first(g) * bs, b.as_bytes())?;
    }
    dev.flush()?;
    if meta_csum {
        raw.checksum = crc32c(!0, &raw.as_bytes()[..1020]).into();
    }
    dev.write_at(SUPERBLOCK_OFFSET, raw.as_bytes())?;
    dev.flush()?;
    Ok(Ok(Grown {
        old_blocks: sb.blocks_count,
        new_blocks,
        old_groups,
        new_groups,
        free_blocks,
        free_inodes,
    }))
}

/// The resize inode (7) as group 0's inode table holds it: where, and its
/// bytes; checked: its double-indirect block maps each reserved
/// descriptor block of group 0 (`ext2fs_create_resize_inode`'s layout),
/// and a reserved block can list the backups of `new_groups` groups.
fn resize_inode<D: BlockDevice>(
    dev: &D,
    sb: &Superblock,
    desc0: &[u8],
    desc_blocks: u64,
    new_groups: u32,
) -> Result<(u64, alloc::vec::Vec<u8>)> {
    let bs = sb.block_size as usize;
    let apb = bs / 4;
    let first_data = sb.first_data_block as u64;
    let corrupt = |what| Error::corrupt(Object::Inode(InodeNo(7)), what);
    let sparse = sb.has_ro_compat(ro_compat::SPARSE_SUPER);
    if backups_between(sparse, 1, new_groups).count() > apb {
        return Err(corrupt(
            "more backup groups than a reserved descriptor block can list",
        ));
    }
    let mut d = RawGroupDesc::new_zeroed();
    d.as_mut_bytes()[..desc0.len()].copy_from_slice(desc0);
    let table = d.inode_table_lo.get() as u64 | (d.inode_table_hi.get() as u64) << 32;
    if table < first_data || table >= sb.blocks_count {
        return Err(Error::corrupt(
            Object::GroupDesc(0),
            "inode table outside the filesystem",
        ));
    }
    let isz = sb.inode_size as u64;
    let at = table * bs as u64 + 6 * isz;
    let mut rec = vec![0u8; isz as usize];
    dev.read_at(at, &mut rec)?;
    // i_block starts at 0x28; the double-indirect pointer is its 14th word.
    let dind = word(&rec, 0x28 / 4 + 13) as u64;
    if dind < first_data || dind >= sb.blocks_count {
        return Err(corrupt(
            "its double-indirect block is outside the filesystem",
        ));
    }
    let mut dind_buf = vec![0u8; bs];
    dev.read_blocks(dind, sb.block_size, &mut dind_buf)?;
    for r in 0..sb.reserved_gdt_blocks as u64 {
        let primary = first_data + 1 + desc_blocks + r;
        if word(&dind_buf, ((desc_blocks + r) % apb as u64) as usize) as u64 != primary {
            return Err(corrupt("it does not map a reserved descriptor block"));
        }
    }
    Ok((at, rec))
}

fn word(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i * 4], b[i * 4 + 1], b[i * 4 + 2], b[i * 4 + 3]])
}

/// The resize inode (7) laid out anew for `new_groups` groups with
/// `desc_blocks` descriptor blocks and `rsv` reserved ones after them, as
/// resize2fs has `ext2fs_create_resize_inode` lay it out after growing
/// (the blocks that became descriptor blocks drop out). `(at, rec)`: the
/// inode, from [`resize_inode`].
fn rebuild_resize_inode<D: BlockDevice>(
    dev: &D,
    sb: &Superblock,
    (at, mut rec): (u64, alloc::vec::Vec<u8>),
    desc_blocks: u64,
    rsv: u64,
    new_groups: u32,
) -> Result<()> {
    let dind = word(&rec, 0x28 / 4 + 13) as u64;
    let reserve = Reserve {
        block_size: sb.block_size,
        first_data_block: sb.first_data_block as u64,
        blocks_per_group: sb.blocks_per_group as u64,
        sparse_super: sb.has_ro_compat(ro_compat::SPARSE_SUPER),
        desc_blocks,
        reserved: rsv,
        groups: new_groups,
    };
    let blocks = resize_inode::write_blocks(dev, &reserve, dind)?;
    rec[0x1C..0x20].copy_from_slice(&(blocks as u32).to_le_bytes());
    rec[0x74..0x76].copy_from_slice(&((blocks >> 32) as u16).to_le_bytes());
    if let Some((c, hi)) = crate::inode::expected_checksum(sb, InodeNo(7), &rec) {
        rec[0x7C..0x7E].copy_from_slice(&(c as u16).to_le_bytes());
        if hi {
            rec[0x82..0x84].copy_from_slice(&((c >> 16) as u16).to_le_bytes());
        }
    }
    dev.write_at(at, &rec)?;
    Ok(())
}
