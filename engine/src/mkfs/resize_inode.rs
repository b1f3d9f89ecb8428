//! The resize inode (7) as `ext2fs_create_resize_inode` lays it out, for
//! `mkfs` (a new one) and `grow` (laid out anew after growing): a
//! block-mapped file whose double-indirect block maps each reserved
//! descriptor block of group 0 (at index `(descriptor blocks + r) %
//! addresses per block`), each of which lists its copies in the backup
//! groups, in group order. The kernel's online resize finds the reserved
//! blocks through it.

use alloc::vec;
use alloc::vec::Vec;

use crate::device::BlockDevice;
use crate::error::Result;

/// Where the reserved descriptor blocks are.
#[derive(Clone, Copy, Debug)]
pub(super) struct Reserve {
    pub block_size: u32,
    pub first_data_block: u64,
    pub blocks_per_group: u64,
    pub sparse_super: bool,
    /// Descriptor blocks in use, and reserved after them.
    pub desc_blocks: u64,
    pub reserved: u64,
    pub groups: u32,
}

/// The inode's `i_size`: what double-indirect mapping can address.
pub(super) fn size(block_size: u32) -> u64 {
    let apb = block_size as u64 / 4;
    (apb * apb + apb + 12) * block_size as u64
}

/// Group numbers with superblock backups (not 0) in `from..to`, in order.
pub(super) fn backups_between(sparse: bool, from: u32, to: u32) -> impl Iterator<Item = u32> {
    (from.max(1)..to).filter(move |&g| !sparse || super::has_super(g))
}

/// Write the double-indirect block `dind` and each reserved block of
/// group 0 (its list of copies); the copies themselves are left as they
/// are. Returns the inode's `i_blocks` in 512-byte units: the
/// double-indirect block, the reserved blocks and their copies.
pub(super) fn write_blocks<D: BlockDevice>(dev: &D, r: &Reserve, dind: u64) -> Result<u64> {
    let bs = r.block_size as usize;
    let apb = (bs / 4) as u64;
    let backups: Vec<u32> = backups_between(r.sparse_super, 1, r.groups).collect();
    let mut dind_buf = vec![0u8; bs];
    let mut list = vec![0u8; bs];
    for k in 0..r.reserved {
        let primary = r.first_data_block + 1 + r.desc_blocks + k;
        let i = ((r.desc_blocks + k) % apb) as usize * 4;
        dind_buf[i..i + 4].copy_from_slice(&(primary as u32).to_le_bytes());
        list.fill(0);
        for (n, &g) in backups.iter().enumerate() {
            let copy = primary + g as u64 * r.blocks_per_group;
            list[n * 4..n * 4 + 4].copy_from_slice(&(copy as u32).to_le_bytes());
        }
        dev.write_blocks(primary, r.block_size, &list)?;
    }
    dev.write_blocks(dind, r.block_size, &dind_buf)?;
    Ok((1 + r.reserved * (1 + backups.len() as u64)) * (bs as u64 / 512))
}
