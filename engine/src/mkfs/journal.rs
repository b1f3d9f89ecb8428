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
use crate::write::extent::{extent_bytes, header, index_bytes, MAX_LEN};

pub(super) struct Journal {
    pub blocks: u32,
    /// Where the journal superblock (the journal's block 0) is.
    pub first: u64,
    pub i_block: [u8; 60],
    /// 512-byte units: the log and its indirect blocks.
    pub blocks_512: u64,
    /// Indirect blocks to write: where, and the block numbers they hold.
    pub indirect: Vec<(u64, Vec<u32>)>,
    /// The extent leaf below a depth-1 root: where, and its extents.
    pub leaf: Option<(u64, Vec<[u8; 12]>)>,
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

/// An extent-mapped journal of `n` blocks from `goal`, in runs of at most
/// 32768 blocks: up to four in the inode's root; more move to one leaf
/// block under a depth-1 root, as `ext2fs_fallocate` grows the tree when
/// the fifth run is inserted (`extent_node_split`): the leaf is allocated
/// then, after that run's blocks, from the block before the first run
/// onwards (1 GiB journals, of filesystems of 128 GiB and more with
/// 4 KiB blocks, have eight runs).
pub(super) fn with_extents(
    geo: &Geometry,
    used: &mut Used,
    touched: &mut [bool],
    goal: u64,
    n: u32,
) -> Result<Journal> {
    let leaf_max = (geo.block_size as usize - 12) / 12;
    let mut runs: Vec<Extent> = Vec::new();
    let mut leaf = None;
    let mut cursor = goal;
    let mut lblk = 0u32;
    let touch = |touched: &mut [bool], b: u64, len: u64| {
        for g in geo.group_of(b)..=geo.group_of(b + len - 1) {
            touched[g as usize] = true;
        }
    };
    while lblk < n {
        let b = used.new_block(cursor).ok_or(Error::NoSpace)?;
        let len = used.free_run(b).min((n - lblk).min(MAX_LEN) as u64) as u32;
        if runs.len() == leaf_max {
            // A second level of the tree is not laid out (a journal
            // this fragmented cannot happen on a new filesystem).
            return Err(Error::FileTooBig);
        }
        used.mark(b, len as u64);
        touch(touched, b, len as u64);
        runs.push(Extent {
            lblk: FileBlock(lblk),
            len,
            pblk: PhysBlock(b),
            unwritten: false,
        });
        if runs.len() == 5 {
            let at = used.new_block(runs[0].pblk.0 - 1).ok_or(Error::NoSpace)?;
            used.mark(at, 1);
            touch(touched, at, 1);
            leaf = Some(at);
        }
        lblk += len;
        cursor = b + len as u64;
    }
    let first = runs.first().ok_or(Error::NoSpace)?.pblk.0;
    let mut i_block = [0u8; 60];
    let entries: Vec<[u8; 12]> = runs.iter().map(extent_bytes).collect();
    for (i, e) in entries.iter().take(4).enumerate() {
        i_block[12 + i * 12..24 + i * 12].copy_from_slice(e);
    }
    if let Some(at) = leaf {
        // The root keeps the bytes of the runs moved out to the leaf
        // beyond its one index entry, as libext2fs leaves them.
        header(&mut i_block, 1, 4, 1);
        i_block[12..24].copy_from_slice(&index_bytes(0, at));
    } else {
        header(&mut i_block, entries.len(), 4, 0);
    }
    Ok(Journal {
        blocks: n,
        first,
        i_block,
        blocks_512: (n as u64 + leaf.is_some() as u64) * (geo.block_size / 512) as u64,
        indirect: Vec::new(),
        leaf: leaf.map(|at| (at, entries)),
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
    // Index in `indirect` of the block open at each depth (1: the one the
    // inode points to) of the current region.
    let mut open = [0usize; 4];
    let mut first = 0;
    for l in 0..n as u64 {
        let b = if l < 12 {
            let b = alloc(used)?;
            words[l as usize] = b as u32;
            b
        } else {
            // Region r (1: indirect, 2: double, 3: triple) and the block's
            // place in it.
            let (mut r, mut k, mut span) = (1usize, l - 12, apb);
            while k >= span {
                if r == 3 {
                    return Err(Error::FileTooBig);
                }
                k -= span;
                r += 1;
                span *= apb;
            }
            // A new map block at each depth whose span starts here, top
            // down, before the block it maps (ext2fs_bmap's order).
            for d in 1..=r {
                let child_span = apb.pow((r - d) as u32 + 1);
                if k.is_multiple_of(child_span) {
                    let m = alloc(used)?;
                    if d == 1 {
                        words[11 + r] = m as u32;
                    } else {
                        indirect[open[d - 1]].1.push(m as u32);
                    }
                    indirect.push((m, Vec::new()));
                    open[d] = indirect.len() - 1;
                }
            }
            let b = alloc(used)?;
            indirect[open[r]].1.push(b as u32);
            b
        };
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
        leaf: None,
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
