//! The journal inode (8) of a new filesystem, placed as
//! `ext2fs_add_journal_inode3` places it: with extents, runs of free
//! blocks from the start of the middle group with the most free blocks
//! (`get_midpoint_journal_block`); block-mapped, block after block from
//! the first free one in group 0, each indirect block before the blocks it
//! maps (`ext2fs_bmap2`'s allocation order). The log is empty: only its
//! superblock is written, the rest reads as zeros.

use alloc::vec;
use alloc::vec::Vec;

use zerocopy::{FromZeros, IntoBytes};

use super::used::Used;
use super::Geometry;
use crate::error::{Error, Result};
use crate::extent::Extent;
use crate::journal::format::{JournalSuperblock, MAGIC, SUPERBLOCK_V2};
use crate::numbers::{FileBlock, PhysBlock};
use crate::write::extent::{extent_bytes, header, MAX_LEN};

pub(super) struct Journal {
    pub blocks: u32,
    /// Where the journal superblock (the journal's block 0) is.
    pub first: u64,
    pub i_block: [u8; 60],
    /// 512-byte units: the log and its indirect blocks.
    pub blocks_512: u64,
    /// Indirect blocks to write: where, and the block numbers they hold.
    pub indirect: Vec<(u64, Vec<u32>)>,
}

/// `get_midpoint_journal_block`: the first block of the group, among the
/// middle one and its neighbours (or the middle flex group's first
/// groups), with the most free blocks. `free(g)` is group `g`'s count now.
pub(super) fn midpoint_goal(geo: &Geometry, flex: u32, free: impl Fn(u32) -> u64) -> u64 {
    let fdb = geo.first_data_block as u64;
    let mid = geo.group_of(((geo.blocks_count - fdb) / 2).max(fdb));
    let mut group = mid;
    let start;
    if flex > 1 && group > flex {
        group &= !(flex - 1);
        while group < geo.groups && free(group) == 0 {
            group += 1;
        }
        if group == geo.groups {
            group = 0;
        }
        start = group;
    } else {
        start = group.saturating_sub(1);
    }
    let end = if group + 1 < geo.groups {
        group + 1
    } else {
        group
    };
    let mut best = start;
    for g in start + 1..=end {
        if free(g) > free(best) {
            best = g;
        }
    }
    geo.group_first(best)
}

/// An extent-mapped journal of `n` blocks from `goal`: at most four
/// extents (the inode's root), each of at most 32768 blocks.
pub(super) fn with_extents(
    geo: &Geometry,
    used: &mut Used,
    touched: &mut [bool],
    goal: u64,
    n: u32,
) -> Result<Journal> {
    let mut i_block = [0u8; 60];
    let mut cursor = goal;
    let (mut lblk, mut count) = (0u32, 0usize);
    let mut first = None;
    while lblk < n {
        let b = used.new_block(cursor).ok_or(Error::NoSpace)?;
        let len = used.free_run(b).min((n - lblk).min(MAX_LEN) as u64) as u32;
        if count == 4 {
            // An extent tree below the inode is not laid out.
            return Err(Error::FileTooBig);
        }
        let e = Extent {
            lblk: FileBlock(lblk),
            len,
            pblk: PhysBlock(b),
            unwritten: false,
        };
        i_block[12 + count * 12..24 + count * 12].copy_from_slice(&extent_bytes(&e));
        count += 1;
        used.mark(b, len as u64);
        for g in geo.group_of(b)..=geo.group_of(b + len as u64 - 1) {
            touched[g as usize] = true;
        }
        first.get_or_insert(b);
        lblk += len;
        cursor = b + len as u64;
    }
    header(&mut i_block, count, 4, 0);
    Ok(Journal {
        blocks: n,
        first: first.ok_or(Error::NoSpace)?,
        i_block,
        blocks_512: n as u64 * (geo.block_size / 512) as u64,
        indirect: Vec::new(),
    })
}

/// A block-mapped journal of `n` blocks (ext3), from the first free block.
pub(super) fn block_mapped(
    geo: &Geometry,
    used: &mut Used,
    touched: &mut [bool],
    n: u32,
) -> Result<Journal> {
    let apb = (geo.block_size / 4) as u64;
    let mut last = geo.first_data_block as u64;
    let mut alloc = |used: &mut Used| -> Result<u64> {
        let b = used.new_block(last).ok_or(Error::NoSpace)?;
        used.mark(b, 1);
        touched[geo.group_of(b) as usize] = true;
        last = b;
        Ok(b)
    };
    let mut words = [0u32; 15];
    let mut indirect: Vec<(u64, Vec<u32>)> = Vec::new();
    // Index in `indirect` of the double-indirect block.
    let mut dind = None;
    let mut first = 0;
    for l in 0..n as u64 {
        if l >= 12 + apb + apb * apb {
            return Err(Error::FileTooBig);
        }
        if l == 12 {
            let ind = alloc(used)?;
            words[12] = ind as u32;
            indirect.push((ind, Vec::new()));
        } else if l >= 12 + apb {
            let k = l - 12 - apb;
            if k == 0 {
                let d = alloc(used)?;
                words[13] = d as u32;
                indirect.push((d, Vec::new()));
                dind = Some(indirect.len() - 1);
            }
            if k.is_multiple_of(apb) {
                let ind = alloc(used)?;
                if let Some(d) = dind {
                    indirect[d].1.push(ind as u32);
                }
                indirect.push((ind, Vec::new()));
            }
        }
        let b = alloc(used)?;
        if l < 12 {
            words[l as usize] = b as u32;
        } else if let Some(last) = indirect.last_mut() {
            last.1.push(b as u32);
        }
        if l == 0 {
            first = b;
        }
    }
    let mut i_block = [0u8; 60];
    for (i, w) in words.iter().enumerate() {
        i_block[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
    }
    Ok(Journal {
        blocks: n,
        first,
        i_block,
        blocks_512: (n as u64 + indirect.len() as u64) * (geo.block_size / 512) as u64,
        indirect,
    })
}

/// The journal superblock of an empty internal journal
/// (`ext2fs_create_journal_superblock2`): version 2, one user, the log from
/// block 1, transaction 1 expected, the filesystem's UUID.
pub(super) fn superblock(block_size: u32, n: u32, uuid: [u8; 16]) -> Vec<u8> {
    let mut j = JournalSuperblock::new_zeroed();
    j.magic = MAGIC.into();
    j.blocktype = SUPERBLOCK_V2.into();
    j.blocksize = block_size.into();
    j.maxlen = n.into();
    j.first = 1u32.into();
    j.sequence = 1u32.into();
    j.nr_users = 1u32.into();
    j.uuid = uuid;
    let mut b = vec![0u8; block_size as usize];
    let bytes = j.as_bytes();
    b[..bytes.len()].copy_from_slice(bytes);
    b
}
