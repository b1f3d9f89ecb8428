//! Laying out a new, empty filesystem (`ext4-image mkfs`), as `mke2fs`
//! lays it out.
//!
//! First slice: ext2 with mke2fs's default features but the resize inode
//! (`sparse_super,large_file,filetype,dir_index,ext_attr`): superblock and
//! its sparse_super backups, group descriptors after each, per group a block
//! bitmap, an inode bitmap and an inode table right after them (no flex_bg),
//! the reserved inodes 1-10, the root directory and lost+found (as big as
//! mke2fs makes it: 16 KiB, at least two blocks). ext3/ext4 (journal,
//! flex_bg, checksums, uninit groups, extents) are not laid out yet.
//!
//! The device must read as zeros (a new sparse file): only metadata blocks
//! are written, so inode tables cost nothing. Memory: two blocks, whatever
//! the size.

use alloc::vec;

use zerocopy::{FromZeros, IntoBytes};

use crate::checksum::crc32c;
use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::features::{compat, incompat, ro_compat};
use crate::group_desc::RawGroupDesc;
use crate::inode::RawInode;
use crate::superblock::{RawSuperblock, Superblock, MAGIC, SUPERBLOCK_OFFSET};
use crate::write::dir::put_entry;

/// What to make; [`MkfsOptions::ext2`] fills in mke2fs's defaults.
#[derive(Clone, Debug)]
pub struct MkfsOptions {
    /// Bytes of the device to use.
    pub size: u64,
    pub block_size: u32,
    pub inode_size: u16,
    /// Bytes of filesystem per inode (mke2fs `-i`), unless `inodes` is set.
    pub inode_ratio: u32,
    /// Inodes wanted (mke2fs `-N`); rounded up to fill inode table blocks.
    pub inodes: Option<u64>,
    pub label: [u8; 16],
    pub uuid: [u8; 16],
    pub hash_seed: [u8; 16],
    /// Every time the filesystem records (seconds since the epoch).
    pub time: i64,
    /// Percent of blocks reserved for root (mke2fs `-m`).
    pub reserved_percent: u32,
}

/// mke2fs.conf's size classes: "floppy" below 3 MiB, "small" below 512 MiB.
pub fn default_block_size(size: u64) -> u32 {
    if size < 512 << 20 {
        1024
    } else {
        4096
    }
}

/// mke2fs.conf's inode ratio for the size class.
pub fn default_inode_ratio(size: u64) -> u32 {
    if size < 3 << 20 {
        8192
    } else if size < 512 << 20 {
        4096
    } else {
        16384
    }
}

impl MkfsOptions {
    /// mke2fs's defaults for `size` bytes (mke2fs.conf: 256-byte inodes,
    /// block size and inode ratio by size class, 5% reserved).
    pub fn ext2(size: u64, uuid: [u8; 16], time: i64) -> MkfsOptions {
        MkfsOptions {
            size,
            block_size: default_block_size(size),
            inode_size: 256,
            inode_ratio: default_inode_ratio(size),
            inodes: None,
            label: [0; 16],
            uuid,
            hash_seed: seed_from_uuid(&uuid),
            time,
            reserved_percent: 5,
        }
    }
}

/// A hash seed that follows from the UUID, for reproducible images (the
/// seed only keys directory hashes; it need not be secret once the UUID is
/// fixed by the caller).
pub fn seed_from_uuid(uuid: &[u8; 16]) -> [u8; 16] {
    let mut seed = [0u8; 16];
    let mut c = 0x6d6b_6673u32; // "mkfs"
    for (i, chunk) in seed.chunks_exact_mut(4).enumerate() {
        c = crc32c(c ^ i as u32, uuid);
        chunk.copy_from_slice(&c.to_le_bytes());
    }
    seed
}

/// The shape of the new filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub block_size: u32,
    pub first_data_block: u32,
    pub blocks_count: u64,
    pub blocks_per_group: u32,
    pub groups: u32,
    pub inodes_per_group: u32,
    pub itable_blocks: u32,
    pub desc_blocks: u32,
    /// Blocks reserved for root.
    pub reserved_blocks: u64,
}

const DESC_SIZE: u32 = 32;
/// mke2fs's cap on blocks per group (`EXT2_MAX_BLOCKS_PER_GROUP`).
const MAX_PER_GROUP: u32 = (1 << 16) - 8;
/// `s_default_mount_opts` bits.
const DEFM_XATTR_USER: u32 = 0x0004;
const DEFM_ACL: u32 = 0x0008;
const FIRST_INO: u32 = 11;
const ROOT_INO: u32 = 2;
const LPF_INO: u32 = 11;

/// Geometry as mke2fs's `ext2fs_initialize` computes it: groups of
/// 8 x block size blocks, inodes per group filling whole inode table
/// blocks (a multiple of 8), and a last group too small for its tables
/// plus 50 blocks dropped.
pub fn geometry(o: &MkfsOptions) -> Result<Geometry> {
    let bs = o.block_size;
    if !(1024..=65536).contains(&bs) || !bs.is_power_of_two() {
        return Err(Error::InvalidArgument);
    }
    let isz = o.inode_size as u32;
    if !(128..=bs).contains(&isz) || !isz.is_power_of_two() {
        return Err(Error::InvalidArgument);
    }
    let first_data_block = (bs == 1024) as u32;
    // One bitmap block, and counts that fit the descriptors' 16 bits.
    let mut bpg = (bs * 8).min(MAX_PER_GROUP);
    // Bytes per inode are at least a block (mke2fs).
    let ratio = o.inode_ratio.max(bs) as u64;
    // Without 64bit, block numbers are 32-bit.
    let all_blocks = (o.size / bs as u64).min(u32::MAX as u64);
    let mut blocks = all_blocks;
    // The reserve as mke2fs computes it (in floating point): the percent of
    // every block, scaled down when a last group is dropped, and, as
    // mke2fs, not scaled back up when smaller groups bring blocks back.
    let percent = o.reserved_percent.min(50) as f64;
    let param_reserved = (percent * all_blocks as f64 / 100.0) as u64;
    let mut reserved = param_reserved;
    loop {
        if blocks <= first_data_block as u64 {
            return Err(Error::NoSpace);
        }
        let groups64 = (blocks - first_data_block as u64).div_ceil(bpg as u64);
        let groups = u32::try_from(groups64).map_err(|_| Error::InvalidArgument)?;
        let want = match o.inodes {
            Some(n) => n,
            None => blocks * bs as u64 / ratio,
        };
        let mut ipg = want.div_ceil(groups as u64).max(1);
        if ipg > (bs * 8) as u64 {
            // More inodes than a bitmap block per group: smaller groups,
            // more of them, as mke2fs tries.
            if bpg < 256 + 8 {
                return Err(Error::InvalidArgument);
            }
            bpg -= 8;
            // Every block again: a last group dropped for the old group
            // size may fit the new one.
            blocks = all_blocks;
            continue;
        }
        let per_block = (bs / isz) as u64;
        // At most one bitmap block of inodes per group, and 16-bit counts.
        ipg = ipg.min((bs * 8) as u64).min((1 << 16) - per_block);
        let itb = ipg.div_ceil(per_block);
        let ipg = (itb * per_block) as u32 & !7;
        if ipg == 0 {
            return Err(Error::InvalidArgument);
        }
        let itb = (ipg as u64 * isz as u64).div_ceil(bs as u64) as u32;
        let desc_blocks = groups.div_ceil(bs / DESC_SIZE);
        let geo = Geometry {
            block_size: bs,
            first_data_block,
            blocks_count: blocks,
            blocks_per_group: bpg,
            groups,
            inodes_per_group: ipg,
            itable_blocks: itb,
            desc_blocks,
            reserved_blocks: reserved,
        };
        let last = groups - 1;
        let mut overhead = 2 + itb as u64;
        if has_super(last) {
            overhead += 1 + desc_blocks as u64;
        }
        if overhead > bpg as u64 {
            return Err(Error::InvalidArgument);
        }
        let rem = (blocks - first_data_block as u64) % bpg as u64;
        if groups == 1 && rem != 0 && rem < overhead {
            return Err(Error::NoSpace);
        }
        if rem != 0 && rem < overhead + 50 {
            blocks -= rem;
            let ratio = 100.0 * param_reserved as f64 / all_blocks as f64;
            reserved = (ratio * blocks as f64 / 100.0) as u64;
            continue;
        }
        if (groups as u64) * (ipg as u64) > u32::MAX as u64 {
            return Err(Error::InvalidArgument);
        }
        return Ok(geo);
    }
}

/// sparse_super: groups 0, 1 and powers of 3, 5 and 7 hold backups.
fn has_super(g: u32) -> bool {
    if g <= 1 {
        return true;
    }
    if g.is_multiple_of(2) {
        return false;
    }
    [3u32, 5, 7].iter().any(|&b| {
        let mut n = g;
        while n.is_multiple_of(b) {
            n /= b;
        }
        n == 1
    })
}

/// Blocks lost+found gets: 16 KiB, and at least two blocks (mke2fs).
fn lpf_blocks(bs: u32) -> u32 {
    (16384 / bs).clamp(2, 12)
}

/// Where group `g`'s bitmaps and inode table are, and how many blocks at
/// its start those and the superblock copy take.
struct GroupPlace {
    first: u64,
    block_bitmap: u64,
    inode_bitmap: u64,
    inode_table: u64,
    /// Blocks in the group.
    len: u32,
    /// Blocks used from `first` on (the group's metadata).
    meta: u32,
}

fn place(geo: &Geometry, g: u32) -> GroupPlace {
    let first = geo.first_data_block as u64 + g as u64 * geo.blocks_per_group as u64;
    let len = (geo.blocks_count - first).min(geo.blocks_per_group as u64) as u32;
    let sb = if has_super(g) { 1 + geo.desc_blocks } else { 0 };
    let bb = first + sb as u64;
    GroupPlace {
        first,
        block_bitmap: bb,
        inode_bitmap: bb + 1,
        inode_table: bb + 2,
        len,
        meta: sb + 2 + geo.itable_blocks,
    }
}

/// What was made.
#[derive(Clone, Copy, Debug)]
pub struct Made {
    pub geometry: Geometry,
    pub free_blocks: u64,
    pub free_inodes: u64,
}

/// Lay out an empty ext2 filesystem on `dev`, which reads as zeros.
pub fn mkfs<D: BlockDevice>(dev: &D, o: &MkfsOptions) -> Result<Made> {
    let geo = geometry(o)?;
    let bs = geo.block_size as usize;
    let ipg = geo.inodes_per_group;
    let lpf = lpf_blocks(geo.block_size);
    // Root's block and lost+found's right after group 0's inode table.
    let g0 = place(&geo, 0);
    let root_block = g0.inode_table + geo.itable_blocks as u64;
    let lpf_first = root_block + 1;
    let g0_data = 1 + lpf;
    if g0.meta + g0_data > g0.len {
        return Err(Error::NoSpace);
    }

    // Group descriptors and bitmaps, group by group.
    let mut descs = vec![0u8; geo.desc_blocks as usize * bs];
    let mut bitmap = vec![0u8; bs];
    let (mut free_blocks, mut free_inodes) = (0u64, 0u64);
    for g in 0..geo.groups {
        let p = place(&geo, g);
        let used = p.meta + if g == 0 { g0_data } else { 0 };
        // Block bitmap: the used blocks, then the bits past the group's end.
        bitmap.fill(0);
        set_bits(&mut bitmap, 0, used);
        set_bits(&mut bitmap, p.len, geo.block_size * 8);
        dev.write_blocks(p.block_bitmap, geo.block_size, &bitmap)?;
        // Inode bitmap: inodes 1-11 in group 0; bits past the group's inodes.
        let used_inodes = if g == 0 { FIRST_INO } else { 0 };
        bitmap.fill(0);
        set_bits(&mut bitmap, 0, used_inodes);
        set_bits(&mut bitmap, ipg, geo.block_size * 8);
        dev.write_blocks(p.inode_bitmap, geo.block_size, &bitmap)?;

        let mut d = RawGroupDesc::new_zeroed();
        d.block_bitmap_lo = (p.block_bitmap as u32).into();
        d.inode_bitmap_lo = (p.inode_bitmap as u32).into();
        d.inode_table_lo = (p.inode_table as u32).into();
        d.free_blocks_count_lo = ((p.len - used) as u16).into();
        d.free_inodes_count_lo = ((ipg - used_inodes) as u16).into();
        d.used_dirs_count_lo = (if g == 0 { 2u16 } else { 0 }).into();
        let at = g as usize * DESC_SIZE as usize;
        descs[at..at + DESC_SIZE as usize].copy_from_slice(&d.as_bytes()[..DESC_SIZE as usize]);
        free_blocks += (p.len - used) as u64;
        free_inodes += (ipg - used_inodes) as u64;
    }

    let mut raw = superblock(o, &geo, free_blocks, free_inodes);
    // Checked as any image's superblock is, before anything relies on it.
    Superblock::parse(&raw, raw.as_bytes(), dev.size())?;

    // Root directory and lost+found.
    let mut block = vec![0u8; bs];
    put_entry(&mut block, 0, ROOT_INO, 12, b".", 2, bs);
    put_entry(&mut block, 12, ROOT_INO, 12, b"..", 2, bs);
    put_entry(&mut block, 24, LPF_INO, bs - 24, b"lost+found", 2, bs);
    dev.write_blocks(root_block, geo.block_size, &block)?;
    block.fill(0);
    put_entry(&mut block, 0, LPF_INO, 12, b".", 2, bs);
    put_entry(&mut block, 12, ROOT_INO, bs - 12, b"..", 2, bs);
    dev.write_blocks(lpf_first, geo.block_size, &block)?;
    block.fill(0);
    put_entry(&mut block, 0, 0, bs, b"", 0, bs);
    for i in 1..lpf as u64 {
        dev.write_blocks(lpf_first + i, geo.block_size, &block)?;
    }
    // Both inodes live in group 0's first inode table block(s).
    let isz = o.inode_size as usize;
    let mut inodes = vec![0u8; (LPF_INO as usize * isz).div_ceil(bs) * bs];
    // The bad blocks inode (1) is empty but for its times (mke2fs).
    {
        let t = o.time as u32;
        for field in [8usize, 12, 16] {
            inodes[field..field + 4].copy_from_slice(&t.to_le_bytes());
        }
    }
    let mut dir_inode = |ino: u32, mode: u16, links: u16, first: u64, n: u32| {
        let mut i = RawInode::new_zeroed();
        i.mode = mode.into();
        i.links_count = links.into();
        i.size_lo = (n * geo.block_size).into();
        i.blocks_lo = (n * (geo.block_size / 512)).into();
        let t = o.time as u32;
        i.atime = t.into();
        i.ctime = t.into();
        i.mtime = t.into();
        for k in 0..n as usize {
            let b = (first + k as u64) as u32;
            i.block[k * 4..k * 4 + 4].copy_from_slice(&b.to_le_bytes());
        }
        if isz > 128 {
            // The large inode's extra fields (mke2fs: all 32 bytes).
            i.extra_isize = 32u16.into();
            i.crtime = t.into();
        }
        let at = (ino as usize - 1) * isz;
        let bytes = i.as_bytes();
        let n = bytes.len().min(isz);
        inodes[at..at + n].copy_from_slice(&bytes[..n]);
    };
    dir_inode(ROOT_INO, 0o040755, 3, root_block, 1);
    dir_inode(LPF_INO, 0o040700, 2, lpf_first, lpf);
    dev.write_blocks(g0.inode_table, geo.block_size, &inodes)?;

    // Superblock and descriptors: the primary, then each backup. As
    // mke2fs (ext2fs_flush), backups say "not clean": only the primary's
    // state is the filesystem's.
    for g in (0..geo.groups).filter(|&g| has_super(g)) {
        raw.block_group_nr = (g.min(u16::MAX as u32) as u16).into();
        raw.state = (if g == 0 { 1u16 } else { 0 }).into();
        let p = place(&geo, g);
        let sb_at = if g == 0 {
            SUPERBLOCK_OFFSET
        } else {
            p.first * bs as u64
        };
        dev.write_at(sb_at, raw.as_bytes())?;
        let desc_at = if g == 0 {
            SUPERBLOCK_OFFSET / bs as u64 + 1
        } else {
            p.first + 1
        };
        dev.write_blocks(desc_at, geo.block_size, &descs)?;
    }
    dev.flush()?;
    Ok(Made {
        geometry: geo,
        free_blocks,
        free_inodes,
    })
}

fn set_bits(map: &mut [u8], from: u32, to: u32) {
    for b in from..to.min(map.len() as u32 * 8) {
        map[(b / 8) as usize] |= 1 << (b % 8);
    }
}

fn superblock(
    o: &MkfsOptions,
    geo: &Geometry,
    free_blocks: u64,
    free_inodes: u64,
) -> RawSuperblock {
    let mut s = RawSuperblock::new_zeroed();
    let log = geo.block_size.trailing_zeros() - 10;
    let inodes = geo.groups * geo.inodes_per_group;
    let t = o.time as u32;
    s.inodes_count = inodes.into();
    s.blocks_count_lo = (geo.blocks_count as u32).into();
    s.r_blocks_count_lo = (geo.reserved_blocks as u32).into();
    s.free_blocks_count_lo = (free_blocks as u32).into();
    s.free_inodes_count = (free_inodes as u32).into();
    s.first_data_block = geo.first_data_block.into();
    s.log_block_size = log.into();
    s.log_cluster_size = log.into();
    s.blocks_per_group = geo.blocks_per_group.into();
    s.clusters_per_group = geo.blocks_per_group.into();
    s.inodes_per_group = geo.inodes_per_group.into();
    s.wtime = t.into();
    s.max_mnt_count = u16::MAX.into();
    s.magic = MAGIC.into();
    s.state = 1u16.into(); // cleanly unmounted
    s.errors = 1u16.into(); // continue
    s.lastcheck = t.into();
    s.rev_level = 1u32.into();
    s.first_ino = FIRST_INO.into();
    s.inode_size = o.inode_size.into();
    s.feature_compat = (compat::EXT_ATTR | compat::DIR_INDEX).into();
    s.feature_incompat = incompat::FILETYPE.into();
    s.feature_ro_compat = (ro_compat::SPARSE_SUPER | ro_compat::LARGE_FILE).into();
    s.uuid = o.uuid;
    s.volume_name = o.label;
    for (i, w) in o.hash_seed.chunks_exact(4).enumerate() {
        s.hash_seed[i] = u32::from_le_bytes([w[0], w[1], w[2], w[3]]).into();
    }
    s.def_hash_version = 1; // half_md4
                            // mke2fs.conf's default_mntopts: acl, user_xattr.
    s.default_mount_opts = (DEFM_XATTR_USER | DEFM_ACL).into();
    s.mkfs_time = t.into();
    // Blocks that are never data (mke2fs 1.47 records them): each group's
    // tables and superblock copy, and block 0 before a 1 KiB first group.
    let overhead: u64 = geo.first_data_block as u64
        + (0..geo.groups)
            .map(|g| place(geo, g).meta as u64)
            .sum::<u64>();
    s.overhead_clusters = (overhead as u32).into();
    if o.inode_size > 128 {
        s.min_extra_isize = 32u16.into();
        s.want_extra_isize = 32u16.into();
    }
    // Directory hashes as x86's signed char computes them, like mke2fs.
    s.flags = 1u32.into();
    let hi = ((o.time >> 32) & 0xff) as u8;
    s.wtime_hi = hi;
    s.mkfs_time_hi = hi;
    s.lastcheck_hi = hi;
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn backups_follow_sparse_super() {
        let with: Vec<u32> = (0..100).filter(|&g| has_super(g)).collect();
        assert_eq!(with, [0, 1, 3, 5, 7, 9, 25, 27, 49, 81]);
    }

    #[test]
    fn lost_found_is_16k_and_two_blocks() {
        assert_eq!(lpf_blocks(1024), 12);
        assert_eq!(lpf_blocks(4096), 4);
        assert_eq!(lpf_blocks(65536), 2);
    }
}
