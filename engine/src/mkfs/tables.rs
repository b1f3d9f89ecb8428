//! Where each group's block bitmap, inode bitmap and inode table go, as
//! `ext2fs_allocate_group_table` places them: in their own group after the
//! superblock copy, or with `flex_bg` packed per flex group (block bitmaps
//! of the flex group together, then inode bitmaps, then inode tables,
//! each run starting where the previous group's left off).

use alloc::vec;
use alloc::vec::Vec;

use super::used::Used;
use super::Geometry;
use crate::error::{Error, Result};

pub(super) struct Tables {
    pub block_bitmap: Vec<u64>,
    pub inode_bitmap: Vec<u64>,
    pub inode_table: Vec<u64>,
    /// Groups a table block was allocated in (with flex_bg this clears
    /// their `BLOCK_UNINIT`, as libext2fs's allocation statistics do).
    pub touched: Vec<bool>,
}

/// Place every group's tables; `flex` is groups per flex group (0: none).
/// `used` already holds the superblock and descriptor copies.
pub(super) fn place(geo: &Geometry, flex: u32, used: &mut Used) -> Result<Tables> {
    let n = geo.groups as usize;
    let mut t = Tables {
        block_bitmap: vec![0; n],
        inode_bitmap: vec![0; n],
        inode_table: vec![0; n],
        touched: vec![false; n],
    };
    let itb = geo.itable_blocks as u64;
    let last_group = geo.groups - 1;
    for g in 0..geo.groups {
        let gi = g as usize;
        let mut group_blk = geo.group_first(g);
        let mut last_blk = geo.group_last(g);
        let mut start_blk = group_blk;
        let last_grp = if flex > 0 {
            (g | (flex - 1)).min(last_group)
        } else {
            g
        };
        let rem = (last_grp - g + 1) as u64;
        let mut table_offset = flex as u64;
        if flex > 0 {
            let mut prev = 0;
            if !g.is_multiple_of(flex) {
                prev = t.block_bitmap[gi - 1] + 1;
            } else if last_grp == last_group {
                // The last flex group keeps its tables contiguous.
                table_offset = (last_grp & (flex - 1)) as u64;
                table_offset = if table_offset == 0 {
                    flex as u64
                } else {
                    table_offset + 1
                };
            }
            start_blk = flexbg_offset(geo, flex, g, prev, rem, 1, used);
            last_blk = geo.group_last(last_grp);
        }
        let b = bitmap_block(used, start_blk, group_blk, last_blk)?;
        t.block_bitmap[gi] = b;
        if flex > 0 {
            t.touched[geo.group_of(b) as usize] = true;
            let prev = if !g.is_multiple_of(flex) {
                t.inode_bitmap[gi - 1] + 1
            } else {
                b + table_offset
            };
            start_blk = flexbg_offset(geo, flex, g, prev, rem, 1, used);
        }
        let b = bitmap_block(used, start_blk, group_blk, last_blk)?;
        t.inode_bitmap[gi] = b;
        if flex > 0 {
            t.touched[geo.group_of(b) as usize] = true;
            let prev = if !g.is_multiple_of(flex) {
                t.inode_table[gi - 1] + itb
            } else {
                b + table_offset
            };
            group_blk = flexbg_offset(geo, flex, g, prev, rem, itb, used);
        }
        let b = used
            .get_free(group_blk, last_blk, itb)
            .ok_or(Error::NoSpace)?;
        used.mark(b, itb);
        t.inode_table[gi] = b;
        if flex > 0 {
            for gr in geo.group_of(b)..=geo.group_of(b + itb - 1) {
                t.touched[gr as usize] = true;
            }
        }
    }
    Ok(t)
}

/// A bitmap block: the first free one from `start`, else from the
/// group's start, up to `last`.
fn bitmap_block(used: &mut Used, start: u64, group_first: u64, last: u64) -> Result<u64> {
    let b = used
        .get_free(start, last, 1)
        .or_else(|| used.get_free(group_first, last, 1))
        .ok_or(Error::NoSpace)?;
    used.mark(b, 1);
    Ok(b)
}

/// libext2fs's `flexbg_offset`: where to look for `elem`-block tables of
/// group `g`, preferring right after the previous group's (`start`).
fn flexbg_offset(
    geo: &Geometry,
    flex: u32,
    g: u32,
    start: u64,
    rem: u64,
    elem: u64,
    used: &Used,
) -> u64 {
    let size = (rem * elem).min(geo.blocks_per_group as u64 / 4);
    if start != 0 && start < geo.blocks_count {
        if let Some(b) = used.get_free(start, start + size, elem) {
            return b;
        }
    }
    let first = geo.group_first(flex * (g / flex));
    let last_grp = (g | (flex - 1)).min(geo.groups - 1);
    let last_blk = geo.group_last(last_grp);
    used.get_free(first, last_blk, size)
        .or_else(|| used.get_free(first, last_blk, elem))
        .or_else(|| used.get_free(0, last_blk, elem))
        .unwrap_or(0)
}
