//! Where each group's fixed metadata lies: superblock backups, descriptor
//! tables (with the blocks reserved for growing them), bitmaps and inode
//! tables, placed as `mke2fs` and `e2fsck` place them.

use heapless::Vec as HVec;

use crate::features::{incompat, ro_compat};
use crate::group_desc::{GroupDesc, BG_BLOCK_UNINIT};
use crate::superblock::Superblock;

/// Block ranges (`start..end`) of group `g`'s superblock backup and
/// descriptor blocks, clipped to the filesystem.
pub(crate) fn super_ranges(sb: &Superblock, g: u32) -> HVec<(u64, u64), 3> {
    let mut out = HVec::new();
    let bigalloc = sb.cluster_size > sb.block_size;
    let mut first = sb.group_first_block(g);
    // With 1 KiB blocks under bigalloc the first data block is 0 but the
    // superblock is still block 1.
    if g == 0 && sb.block_size == 1024 && bigalloc {
        first = 1;
    }
    let has_super = sb.group_has_super(g);
    let meta_bg = sb.has_incompat(incompat::META_BG);
    let old_desc = if meta_bg {
        sb.first_meta_bg as u64
    } else {
        sb.desc_blocks() as u64 + sb.reserved_gdt_blocks as u64
    };
    if has_super {
        // Group 0 also owns everything before its superblock (block 0).
        let start = if g == 0 {
            sb.first_data_block as u64
        } else {
            first
        };
        let _ = out.push((start, first + 1));
    }
    let dpb = sb.descs_per_block();
    if !meta_bg || g / dpb < sb.first_meta_bg {
        if has_super && old_desc > 0 {
            let _ = out.push((first + 1, first + 1 + old_desc));
        }
    } else {
        let r = g % dpb;
        if r == 0 || r == 1 || r == dpb - 1 {
            let b = first + has_super as u64;
            let _ = out.push((b, b + 1));
        }
    }
    for r in out.iter_mut() {
        r.0 = r.0.min(sb.blocks_count);
        r.1 = r.1.min(sb.blocks_count);
    }
    out
}

/// Blocks of one group's inode table.
pub(super) fn itable_blocks(sb: &Superblock) -> u64 {
    (sb.inodes_per_group as u64 * sb.inode_size as u64).div_ceil(sb.block_size as u64)
}

/// Ranges of group `g`'s own bitmaps and inode table.
pub(crate) fn table_ranges(sb: &Superblock, gd: &GroupDesc) -> [(u64, u64); 3] {
    [
        (gd.block_bitmap.0, gd.block_bitmap.0 + 1),
        (gd.inode_bitmap.0, gd.inode_bitmap.0 + 1),
        (gd.inode_table.0, gd.inode_table.0 + itable_blocks(sb)),
    ]
}

/// Whether the descriptor's uninit flags mean anything (only with group
/// descriptor checksums).
pub(super) fn uninit_flags_apply(sb: &Superblock) -> bool {
    sb.has_ro_compat(ro_compat::GDT_CSUM) || sb.metadata_csum()
}

/// Whether group `g` has no block bitmap on disk (it is implied).
pub(super) fn block_uninit(sb: &Superblock, gd: &GroupDesc) -> bool {
    uninit_flags_apply(sb) && gd.flags & BG_BLOCK_UNINIT != 0
}

/// Cluster index (from the first data block) of block `b`, if it is in
/// the filesystem's data area.
pub(super) fn cluster_of(sb: &Superblock, b: u64) -> Option<u64> {
    let fdb = sb.first_data_block as u64;
    if b < fdb || b >= sb.blocks_count {
        return None;
    }
    Some((b - fdb) >> cluster_bits(sb))
}

pub(super) fn cluster_bits(sb: &Superblock) -> u32 {
    (sb.cluster_size / sb.block_size).trailing_zeros()
}

/// Clusters `a..b` covering blocks `start..end` (clipped to the filesystem).
pub(super) fn clusters_of(sb: &Superblock, start: u64, end: u64) -> Option<(u64, u64)> {
    let fdb = sb.first_data_block as u64;
    let start = start.max(fdb);
    let end = end.min(sb.blocks_count);
    if start >= end {
        return None;
    }
    let s = cluster_bits(sb);
    Some(((start - fdb) >> s, ((end - 1 - fdb) >> s) + 1))
}

/// Clusters in the filesystem.
pub(super) fn total_clusters(sb: &Superblock) -> u64 {
    (sb.blocks_count - sb.first_data_block as u64).div_ceil(1 << cluster_bits(sb))
}

/// Clusters `a..b` of group `g`.
pub(super) fn group_clusters(sb: &Superblock, g: u32) -> (u64, u64) {
    let a = g as u64 * sb.clusters_per_group as u64;
    (
        a,
        (a + sb.clusters_per_group as u64).min(total_clusters(sb)),
    )
}

/// First block of cluster `c`.
pub(super) fn block_of(sb: &Superblock, c: u64) -> u64 {
    sb.first_data_block as u64 + (c << cluster_bits(sb))
}
