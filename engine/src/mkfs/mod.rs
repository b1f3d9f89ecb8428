//! Laying out a new, empty filesystem (`ext4-image mkfs`), as `mke2fs`
//! lays it out: ext2, ext3 and ext4 with mke2fs.conf's feature sets for
//! each type, edited with `-O`.
//!
//! The layout follows libext2fs's decisions step by step so that the image
//! equals `mke2fs -E lazy_itable_init=0` given the same UUID, hash seed
//! and time: superblock and descriptor copies in the sparse_super groups,
//! with `resize_inode` followed by the descriptor blocks reserved for
//! growing (`calc_reserved_gdt_blocks`) and the resize inode listing
//! them; bitmaps and inode tables in their group, or packed
//! at the start of each flex group (`ext2fs_allocate_group_table`); the
//! root directory and lost+found (16 KiB, at least two blocks) in the first
//! free blocks; the journal (size by the filesystem's size, as
//! `ext2fs_default_journal_size`) in extent runs from the middle group
//! (more than four under a depth-1 tree: 1 GiB journals), or block-mapped
//! right after lost+found without extents (up to the triple-indirect
//! block). Sizes mke2fs refuses are refused: more than 2^32 blocks without
//! `64bit`, more groups than 32 bits count. With group
//! descriptor checksums, groups nothing was allocated in keep
//! `BLOCK_UNINIT`, all but group 0 `INODE_UNINIT`, and their bitmaps are
//! not written; inode tables read as zeros (`ITABLE_ZEROED`).
//!
//! The device must read as zeros (a new sparse file): only metadata blocks
//! are written, so inode tables and the journal cost nothing. Memory: a few
//! blocks, and a few words per group.

pub mod grow;
mod journal;
mod resize_inode;
mod tables;
mod used;

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use zerocopy::{FromZeros, IntoBytes};

use crate::checksum::crc32c;
use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::extent::Extent;
use crate::features::{self, compat, incompat, ro_compat};
use crate::group_desc::{self, RawGroupDesc};
use crate::inode::{self, RawInode};
use crate::numbers::{FileBlock, InodeNo, PhysBlock};
use crate::superblock::{RawSuperblock, Superblock, MAGIC, SUPERBLOCK_OFFSET};
use crate::write::dir::put_entry;
use crate::write::extent::{extent_bytes, header, MAX_LEN};
use used::Used;

/// The filesystem types of mke2fs.conf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsType {
    Ext2,
    Ext3,
    Ext4,
}

impl FsType {
    pub fn parse(s: &str) -> Option<FsType> {
        match s {
            "ext2" => Some(FsType::Ext2),
            "ext3" => Some(FsType::Ext3),
            "ext4" => Some(FsType::Ext4),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FsType::Ext2 => "ext2",
            FsType::Ext3 => "ext3",
            FsType::Ext4 => "ext4",
        }
    }
}

/// Feature words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    pub compat: u32,
    pub incompat: u32,
    pub ro_compat: u32,
}

/// Features this layout knows how to make.
pub const LAID_OUT: Features = Features {
    compat: compat::HAS_JOURNAL | compat::EXT_ATTR | compat::DIR_INDEX | compat::RESIZE_INODE,
    incompat: incompat::FILETYPE
        | incompat::EXTENTS
        | incompat::BIT64
        | incompat::FLEX_BG
        | incompat::CSUM_SEED
        | incompat::LARGEDIR
        | incompat::INLINE_DATA,
    ro_compat: ro_compat::SPARSE_SUPER
        | ro_compat::LARGE_FILE
        | ro_compat::HUGE_FILE
        | ro_compat::GDT_CSUM
        | ro_compat::DIR_NLINK
        | ro_compat::EXTRA_ISIZE
        | ro_compat::METADATA_CSUM,
};

impl Features {
    /// mke2fs.conf's `base_features` plus the type's `features`
    /// (Debian's and e2fsprogs' 1.47 defaults).
    pub fn of(t: FsType) -> Features {
        let mut f = Features {
            compat: compat::EXT_ATTR | compat::DIR_INDEX | compat::RESIZE_INODE,
            incompat: incompat::FILETYPE,
            ro_compat: ro_compat::SPARSE_SUPER | ro_compat::LARGE_FILE,
        };
        if t != FsType::Ext2 {
            f.compat |= compat::HAS_JOURNAL;
        }
        if t == FsType::Ext4 {
            f.incompat |= incompat::EXTENTS | incompat::FLEX_BG | incompat::BIT64;
            f.ro_compat |= ro_compat::HUGE_FILE
                | ro_compat::METADATA_CSUM
                | ro_compat::DIR_NLINK
                | ro_compat::EXTRA_ISIZE;
        }
        f
    }

    /// Apply an `mke2fs -O` list: names separated by commas, `^name` to
    /// remove one, `none` to start from nothing.
    pub fn edit(&mut self, list: &str) -> core::result::Result<(), String> {
        for item in list.split([',', ' ']).filter(|s| !s.is_empty()) {
            if item == "none" || item == "clear" {
                *self = Features {
                    compat: 0,
                    incompat: 0,
                    ro_compat: 0,
                };
                continue;
            }
            let (off, name) = match item.strip_prefix(['^', '-']) {
                Some(n) => (true, n),
                None => (false, item.strip_prefix('+').unwrap_or(item)),
            };
            let (word, bit) = features::by_name(name)
                .ok_or_else(|| alloc::format!("unknown feature {name:?}"))?;
            let w = match word {
                0 => &mut self.compat,
                1 => &mut self.incompat,
                _ => &mut self.ro_compat,
            };
            if off {
                *w &= !bit;
            } else {
                *w |= bit;
            }
        }
        Ok(())
    }

    /// The features as mke2fs settles them (metadata_csum replaces
    /// uninit_bg), or why this layout cannot make them.
    pub fn settle(mut self) -> core::result::Result<Features, String> {
        if self.ro_compat & ro_compat::METADATA_CSUM != 0 {
            self.ro_compat &= !ro_compat::GDT_CSUM;
        }
        let extra = Features {
            compat: self.compat & !LAID_OUT.compat,
            incompat: self.incompat & !LAID_OUT.incompat,
            ro_compat: self.ro_compat & !LAID_OUT.ro_compat,
        };
        let names = features::names(extra.compat, extra.incompat, extra.ro_compat);
        if !names.is_empty() {
            return Err(alloc::format!(
                "cannot lay out {} yet (use mke2fs for those)",
                names.join(", ")
            ));
        }
        if self.incompat & incompat::BIT64 != 0 && self.incompat & incompat::EXTENTS == 0 {
            return Err("64bit needs extent (as mke2fs requires)".into());
        }
        if self.incompat & incompat::CSUM_SEED != 0
            && self.ro_compat & ro_compat::METADATA_CSUM == 0
        {
            return Err("metadata_csum_seed needs metadata_csum".into());
        }
        if self.compat & compat::RESIZE_INODE != 0 && self.ro_compat & ro_compat::SPARSE_SUPER == 0
        {
            return Err(
                "resize_inode needs sparse_super (as mke2fs requires; add ^resize_inode)".into(),
            );
        }
        if self.incompat & incompat::INLINE_DATA != 0 && self.compat & compat::EXT_ATTR == 0 {
            return Err("inline_data needs ext_attr".into());
        }
        Ok(self)
    }

    fn has_compat(&self, f: u32) -> bool {
        self.compat & f != 0
    }
    fn has_incompat(&self, f: u32) -> bool {
        self.incompat & f != 0
    }
    fn has_ro_compat(&self, f: u32) -> bool {
        self.ro_compat & f != 0
    }
    /// Group descriptor checksums (and so uninit groups).
    fn group_csum(&self) -> bool {
        self.has_ro_compat(ro_compat::METADATA_CSUM | ro_compat::GDT_CSUM)
    }
}

/// What to make; [`MkfsOptions::new`] fills in mke2fs's defaults.
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
    pub features: Features,
    /// Groups per flex group (mke2fs `-G`), with `flex_bg`.
    pub flex_bg_size: u32,
    /// Journal blocks (mke2fs `-J size=`); by the filesystem's size if unset.
    pub journal_blocks: Option<u32>,
    /// Owner of the root directory (mke2fs `-E root_owner=`).
    pub root_owner: (u32, u32),
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
    /// mke2fs's defaults for a `t` filesystem of `size` bytes (mke2fs.conf:
    /// 256-byte inodes, block size and inode ratio by size class, 5%
    /// reserved, flex groups of 16).
    pub fn new(t: FsType, size: u64, uuid: [u8; 16], time: i64) -> MkfsOptions {
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
            features: Features::of(t),
            flex_bg_size: 16,
            journal_blocks: None,
            root_owner: (0, 0),
        }
    }

    /// mke2fs's ext2 defaults.
    pub fn ext2(size: u64, uuid: [u8; 16], time: i64) -> MkfsOptions {
        MkfsOptions::new(FsType::Ext2, size, uuid, time)
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

/// `ext2fs_default_journal_size`: journal blocks for a filesystem of
/// `blocks` blocks, `None` below 2048 blocks (too small for a journal).
pub fn default_journal_blocks(blocks: u64) -> Option<u32> {
    Some(match blocks {
        0..2048 => return None,
        2048..32768 => 1024,
        32768..262144 => 4096,
        262144..524288 => 8192,
        524288..4194304 => 16384,
        4194304..8388608 => 32768,
        8388608..16777216 => 65536,
        16777216..33554432 => 131072,
        _ => 262144,
    })
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
    pub desc_size: u32,
    pub desc_blocks: u32,
    /// The resize inode is made (`resize_inode`, unless mke2fs would drop
    /// it for this size), and the descriptor blocks reserved after the
    /// descriptors in every copy for growing.
    pub resize_inode: bool,
    pub reserved_gdt_blocks: u32,
    /// Blocks reserved for root.
    pub reserved_blocks: u64,
    /// Backups in groups 0, 1 and powers of 3, 5, 7 only.
    pub sparse_super: bool,
}

impl Geometry {
    pub fn has_super(&self, g: u32) -> bool {
        !self.sparse_super || has_super(g)
    }
    fn group_first(&self, g: u32) -> u64 {
        self.first_data_block as u64 + g as u64 * self.blocks_per_group as u64
    }
    /// Blocks in group `g`.
    fn group_len(&self, g: u32) -> u64 {
        (self.blocks_count - self.group_first(g)).min(self.blocks_per_group as u64)
    }
    fn group_last(&self, g: u32) -> u64 {
        self.group_first(g) + self.group_len(g) - 1
    }
    fn group_of(&self, b: u64) -> u32 {
        ((b - self.first_data_block as u64) / self.blocks_per_group as u64) as u32
    }
    /// Blocks the superblock copy and descriptors (and the reserved ones)
    /// take at the group's start.
    fn super_blocks(&self, g: u32) -> u64 {
        if self.has_super(g) {
            1 + self.desc_blocks as u64 + self.reserved_gdt_blocks as u64
        } else {
            0
        }
    }
}

/// mke2fs's cap on blocks per group (`EXT2_MAX_BLOCKS_PER_GROUP`).
const MAX_PER_GROUP: u32 = (1 << 16) - 8;
/// `s_default_mount_opts` bits.
const DEFM_XATTR_USER: u32 = 0x0004;
const DEFM_ACL: u32 = 0x0008;
const FIRST_INO: u32 = 11;
const ROOT_INO: u32 = 2;
const RESIZE_INO: u32 = 7;
const JOURNAL_INO: u32 = 8;
const LPF_INO: u32 = 11;
/// Group descriptor flags.
const BG_INODE_UNINIT: u16 = 0x1;
const BG_BLOCK_UNINIT: u16 = 0x2;
const BG_INODE_ZEROED: u16 = 0x4;

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
    let bit64 = o.features.has_incompat(incompat::BIT64);
    let desc_size: u32 = if bit64 { 64 } else { 32 };
    let first_data_block = (bs == 1024) as u32;
    // One bitmap block, and counts that fit the descriptors' 16 bits.
    let mut bpg = (bs * 8).min(MAX_PER_GROUP);
    // Bytes per inode are at least a block (mke2fs).
    let ratio = o.inode_ratio.max(bs) as u64;
    // Without 64bit, block numbers are 32-bit; group numbers always are
    // (mke2fs refuses both, `TooBig`).
    let all_blocks = o.size / bs as u64;
    if (!bit64 && all_blocks > u32::MAX as u64)
        || all_blocks >= 1u64 << (bs.trailing_zeros() + 3 + 32)
    {
        return Err(Error::TooBig);
    }
    let all_blocks = all_blocks.min(1u64 << 48);
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
        // Inode numbers are 32-bit: mke2fs caps its count with 64bit,
        // and refuses it without.
        let want = match o.inodes {
            Some(n) => n,
            None => {
                let n = blocks * bs as u64 / ratio;
                if n > u32::MAX as u64 && bit64 {
                    u32::MAX as u64
                } else {
                    n
                }
            }
        };
        if want > u32::MAX as u64 {
            return Err(Error::InvalidArgument);
        }
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
        // Whole inode table blocks, a multiple of 8; fewer while the total
        // exceeds 32 bits (ext2fs_initialize's ipg_retry).
        let round = |ipg: u64| (ipg.div_ceil(per_block) * per_block).max(8) as u32 & !7;
        while round(ipg) as u64 * groups as u64 > u32::MAX as u64 && ipg > 1 {
            ipg -= 1;
        }
        let ipg = round(ipg);
        let itb = (ipg as u64 * isz as u64).div_ceil(bs as u64) as u32;
        let desc_blocks = groups.div_ceil(bs / desc_size);
        // mke2fs drops resize_inode past 32-bit block counts, and for
        // meta_bg when descriptors and reserve would take more than 3/4
        // of a group (which it then turns on; not laid out here).
        let mut resize_inode =
            o.features.has_compat(compat::RESIZE_INODE) && all_blocks <= u32::MAX as u64;
        let mut rsv = if resize_inode {
            reserved_gdt_blocks(
                blocks,
                first_data_block,
                bpg,
                bs / desc_size,
                desc_blocks,
                bs,
            )
        } else {
            0
        };
        if rsv + desc_blocks > bpg * 3 / 4 {
            resize_inode = false;
            rsv = 0;
        }
        let geo = Geometry {
            block_size: bs,
            first_data_block,
            blocks_count: blocks,
            blocks_per_group: bpg,
            groups,
            inodes_per_group: ipg,
            itable_blocks: itb,
            desc_size,
            desc_blocks,
            resize_inode,
            reserved_gdt_blocks: rsv,
            reserved_blocks: reserved,
            sparse_super: o.features.has_ro_compat(ro_compat::SPARSE_SUPER),
        };
        let last = groups - 1;
        let overhead = 2 + itb as u64 + geo.super_blocks(last);
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

/// Descriptor blocks to reserve for growing (`calc_reserved_gdt_blocks`):
/// room for 1024 times the filesystem's blocks, or 2^32 - 1 if fewer, at
/// most as many as a block has addresses (the resize inode's
/// double-indirect block lists them).
fn reserved_gdt_blocks(
    blocks: u64,
    first_data_block: u32,
    bpg: u32,
    descs_per_block: u32,
    desc_blocks: u32,
    bs: u32,
) -> u32 {
    let max_blocks = if blocks < u32::MAX as u64 / 1024 {
        blocks * 1024
    } else {
        u32::MAX as u64
    };
    let groups = (max_blocks - first_data_block as u64).div_ceil(bpg as u64);
    let need = groups.div_ceil(descs_per_block as u64) as u32;
    need.saturating_sub(desc_blocks).min(bs / 4)
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

/// Blocks lost+found gets: 16 KiB, and at least two blocks (mke2fs) — one
/// fewer with inline_data, where mke2fs makes it inline and then expands
/// it block by block as many times as it otherwise would.
fn lpf_blocks(bs: u32, inline: bool) -> u32 {
    (16384 / bs).clamp(2, 12) - inline as u32
}

/// What was made.
#[derive(Clone, Copy, Debug)]
pub struct Made {
    pub geometry: Geometry,
    pub features: Features,
    pub free_blocks: u64,
    pub free_inodes: u64,
    /// Journal blocks (0: no journal).
    pub journal_blocks: u32,
}

/// A directory's blocks as laid out: where its blocks are and its
/// `i_block`.
struct DirBlocks {
    blocks: Vec<u64>,
    i_block: [u8; 60],
}

/// `i_block` for `blocks` (physical, in file order): an extent root of
/// contiguous runs, or the first twelve direct pointers.
fn map_blocks(blocks: &[u64], extents: bool) -> Result<[u8; 60]> {
    let mut ib = [0u8; 60];
    if extents {
        let mut runs: Vec<Extent> = Vec::new();
        for (l, &b) in blocks.iter().enumerate() {
            match runs.last_mut() {
                Some(e) if e.pblk.0 + e.len as u64 == b && e.len < MAX_LEN => e.len += 1,
                _ => runs.push(Extent {
                    lblk: FileBlock(l as u32),
                    len: 1,
                    pblk: PhysBlock(b),
                    unwritten: false,
                }),
            }
        }
        if runs.len() > 4 {
            return Err(Error::NoSpace);
        }
        header(&mut ib, runs.len(), 4, 0);
        for (i, e) in runs.iter().enumerate() {
            ib[12 + i * 12..24 + i * 12].copy_from_slice(&extent_bytes(e));
        }
    } else {
        if blocks.len() > 12 {
            return Err(Error::NoSpace);
        }
        for (i, &b) in blocks.iter().enumerate() {
            ib[i * 4..i * 4 + 4].copy_from_slice(&(b as u32).to_le_bytes());
        }
    }
    Ok(ib)
}

/// Lay out an empty filesystem on `dev`, which reads as zeros.
pub fn mkfs<D: BlockDevice>(dev: &D, o: &MkfsOptions) -> Result<Made> {
    let mut f = o.features;
    let geo = geometry(o)?;
    let bs = geo.block_size as usize;
    let ipg = geo.inodes_per_group;
    if ipg < FIRST_INO {
        return Err(Error::InvalidArgument);
    }
    let csum = f.group_csum();
    let meta_csum = f.has_ro_compat(ro_compat::METADATA_CSUM);
    let extents = f.has_incompat(incompat::EXTENTS);
    let flex = if f.has_incompat(incompat::FLEX_BG) {
        o.flex_bg_size
    } else {
        0
    };
    if flex != 0 && (!flex.is_power_of_two() || flex < 2) {
        return Err(Error::InvalidArgument);
    }

    // Superblock and descriptor copies, then the tables (ext2fs_initialize,
    // ext2fs_allocate_tables).
    let mut used = Used::new(geo.blocks_count, geo.first_data_block as u64);
    for g in 0..geo.groups {
        used.mark(geo.group_first(g), geo.super_blocks(g));
    }
    let mut tables = tables::place(&geo, flex, &mut used)?;
    // Overhead as mke2fs 1.47 records it: every block used so far, the
    // journal and block 0 before a 1 KiB first group.
    let table_overhead = used.count(0, geo.blocks_count);

    // The root directory and lost+found, in the first free blocks
    // (ext2fs_mkdir, ext2fs_expand_dir).
    let inline = f.has_incompat(incompat::INLINE_DATA);
    let lpf_n = lpf_blocks(geo.block_size, inline);
    let mut last = geo.group_first(0);
    let mut dir_block = |used: &mut Used, touched: &mut [bool]| -> Result<u64> {
        let b = used.new_block(last).ok_or(Error::NoSpace)?;
        used.mark(b, 1);
        touched[geo.group_of(b) as usize] = true;
        last = b;
        Ok(b)
    };
    let root_block = dir_block(&mut used, &mut tables.touched)?;
    let mut lpf = Vec::new();
    for _ in 0..lpf_n {
        lpf.push(dir_block(&mut used, &mut tables.touched)?);
    }
    // The resize inode's double-indirect block, from mke2fs's goal past
    // group 0's tables as they would lie without flex_bg
    // (ext2fs_create_resize_inode, after the directories, before the
    // journal).
    let resize_dind = if geo.resize_inode {
        let goal = geo.first_data_block as u64
            + geo.desc_blocks as u64
            + geo.reserved_gdt_blocks as u64
            + 2
            + geo.itable_blocks as u64;
        let b = used.new_block(goal).ok_or(Error::NoSpace)?;
        used.mark(b, 1);
        tables.touched[geo.group_of(b) as usize] = true;
        Some(b)
    } else {
        f.compat &= !compat::RESIZE_INODE;
        None
    };
    // Its size needs large_file with 4 KiB blocks (ext2fs_inode_size_set
    // turns the feature on).
    if resize_dind.is_some() && resize_inode::size(geo.block_size) >= 1 << 31 {
        f.ro_compat |= ro_compat::LARGE_FILE;
    }
    let root = DirBlocks {
        blocks: vec![root_block],
        i_block: map_blocks(&[root_block], extents)?,
    };
    let lpf = DirBlocks {
        i_block: map_blocks(&lpf, extents)?,
        blocks: lpf,
    };

    // The journal, if the filesystem is big enough for one (mke2fs drops
    // the feature otherwise).
    let mut journal = None;
    if f.has_compat(compat::HAS_JOURNAL) {
        match o
            .journal_blocks
            .or_else(|| default_journal_blocks(geo.blocks_count))
        {
            None => f.compat &= !compat::HAS_JOURNAL,
            Some(n) => {
                let j = if extents {
                    let free = |g: u32| {
                        let first = geo.group_first(g);
                        geo.group_len(g) - used.count(first, first + geo.group_len(g))
                    };
                    let goal = journal::midpoint_goal(&geo, flex, free);
                    journal::with_extents(&geo, &mut used, &mut tables.touched, goal, n)?
                } else {
                    journal::block_mapped(&geo, &mut used, &mut tables.touched, n)?
                };
                journal = Some(j);
            }
        }
    }
    let overhead = table_overhead
        + journal.as_ref().map_or(0, |j| j.blocks as u64)
        + geo.first_data_block as u64;

    // Group descriptors: counts and flags.
    let last_group = geo.groups - 1;
    let mut descs: Vec<RawGroupDesc> = Vec::with_capacity(geo.groups as usize);
    let (mut free_blocks, mut free_inodes) = (0u64, 0u64);
    for g in 0..geo.groups {
        let gi = g as usize;
        let first = geo.group_first(g);
        let len = geo.group_len(g);
        let free = len - used.count(first, first + len);
        let used_inodes = if g == 0 { FIRST_INO } else { 0 };
        let fi = ipg - used_inodes;
        let mut d = new_desc(
            (
                tables.block_bitmap[gi],
                tables.inode_bitmap[gi],
                tables.inode_table[gi],
            ),
            free,
            fi,
        );
        d.used_dirs_count_lo = (if g == 0 { 2u16 } else { 0 }).into();
        // The inode tables read as zeros (the device does): the kernel
        // need not zero them (mke2fs -E lazy_itable_init=0 says the same).
        let mut flags = BG_INODE_ZEROED;
        if csum {
            if g != 0 {
                flags |= BG_INODE_UNINIT;
            }
            if g != last_group && !tables.touched[gi] {
                flags |= BG_BLOCK_UNINIT;
            }
            d.itable_unused_lo = (fi as u16).into();
            d.itable_unused_hi = ((fi >> 16) as u16).into();
        }
        d.flags = flags.into();
        descs.push(d);
        free_blocks += free;
        free_inodes += fi as u64;
    }

    let mut raw = superblock(o, &f, &geo, free_blocks, free_inodes, overhead);
    if let Some(j) = &journal {
        raw.journal_inum = JOURNAL_INO.into();
        raw.jnl_backup_type = 1; // EXT3_JNL_BACKUP_BLOCKS
        for (i, w) in j.i_block.chunks_exact(4).enumerate() {
            raw.jnl_blocks[i] = u32::from_le_bytes([w[0], w[1], w[2], w[3]]).into();
        }
        let size = j.blocks as u64 * bs as u64;
        raw.jnl_blocks[15] = ((size >> 32) as u32).into();
        raw.jnl_blocks[16] = (size as u32).into();
    }
    // Checked as any image's superblock is, before anything relies on it.
    let sb = Superblock::parse(&raw, raw.as_bytes(), dev.size())?;

    // Bitmaps (not written for uninit groups, as mke2fs), then the
    // descriptors' checksums.
    let mut bitmap = vec![0u8; bs];
    let bits = geo.block_size * 8;
    for g in 0..geo.groups {
        let gi = g as usize;
        let flags = descs[gi].flags.get();
        if !csum || flags & BG_BLOCK_UNINIT == 0 {
            let first = geo.group_first(g);
            let len = geo.group_len(g);
            bitmap.fill(0);
            for (s, e) in used.each(first, first + len) {
                set_bits(&mut bitmap, (s - first) as u32, (e - first) as u32);
            }
            set_bits(&mut bitmap, len as u32, bits);
            dev.write_blocks(tables.block_bitmap[gi], geo.block_size, &bitmap)?;
            if meta_csum {
                let c = group_desc::bitmap_checksum(&sb, &bitmap, geo.blocks_per_group);
                descs[gi].block_bitmap_csum_lo = (c as u16).into();
                descs[gi].block_bitmap_csum_hi = ((c >> 16) as u16).into();
            }
        }
        if !csum || flags & BG_INODE_UNINIT == 0 {
            bitmap.fill(0);
            set_bits(&mut bitmap, 0, if g == 0 { FIRST_INO } else { 0 });
            set_bits(&mut bitmap, ipg, bits);
            dev.write_blocks(tables.inode_bitmap[gi], geo.block_size, &bitmap)?;
            if meta_csum {
                let c = group_desc::bitmap_checksum(&sb, &bitmap, ipg);
                descs[gi].inode_bitmap_csum_lo = (c as u16).into();
                descs[gi].inode_bitmap_csum_hi = ((c >> 16) as u16).into();
            }
        }
    }
    let ds = geo.desc_size as usize;
    let mut desc_bytes = vec![0u8; geo.desc_blocks as usize * bs];
    for (g, d) in descs.iter().enumerate() {
        let at = g * ds;
        let b = &mut desc_bytes[at..at + ds];
        b.copy_from_slice(&d.as_bytes()[..ds]);
        if let Some(c) = group_desc::expected_checksum(&sb, g as u32, b) {
            b[0x1E..0x20].copy_from_slice(&c.to_le_bytes());
        }
    }

    // Directory blocks.
    let tail = meta_csum;
    let area = if tail { bs - 12 } else { bs };
    let inode_seed = |ino: u32| {
        crc32c(
            crc32c(sb.csum_seed, &ino.to_le_bytes()),
            &0u32.to_le_bytes(),
        )
    };
    let seal = |b: &mut [u8], ino: u32| {
        if tail {
            put_entry(b, bs - 12, 0, 12, b"", 0, bs);
            b[bs - 5] = 0xDE;
            let c = crc32c(inode_seed(ino), &b[..bs - 12]);
            b[bs - 4..].copy_from_slice(&c.to_le_bytes());
        }
    };
    let ft = if f.has_incompat(incompat::FILETYPE) {
        2
    } else {
        0
    };
    let mut block = vec![0u8; bs];
    put_entry(&mut block, 0, ROOT_INO, 12, b".", ft, bs);
    put_entry(&mut block, 12, ROOT_INO, 12, b"..", ft, bs);
    put_entry(&mut block, 24, LPF_INO, area - 24, b"lost+found", ft, bs);
    seal(&mut block, ROOT_INO);
    dev.write_blocks(root.blocks[0], geo.block_size, &block)?;
    block.fill(0);
    put_entry(&mut block, 0, LPF_INO, 12, b".", ft, bs);
    if inline {
        // What expanding an inline directory leaves: both dot entries
        // short, an empty entry for the rest.
        put_entry(&mut block, 12, ROOT_INO, 12, b"..", ft, bs);
        put_entry(&mut block, 24, 0, area - 24, b"", 0, bs);
    } else {
        put_entry(&mut block, 12, ROOT_INO, area - 12, b"..", ft, bs);
    }
    seal(&mut block, LPF_INO);
    dev.write_blocks(lpf.blocks[0], geo.block_size, &block)?;
    block.fill(0);
    put_entry(&mut block, 0, 0, area, b"", 0, bs);
    seal(&mut block, LPF_INO);
    for &b in &lpf.blocks[1..] {
        dev.write_blocks(b, geo.block_size, &block)?;
    }

    // The journal: its superblock and indirect blocks.
    if let Some(j) = &journal {
        dev.write_blocks(
            j.first,
            geo.block_size,
            &journal::superblock(geo.block_size, j.blocks, o.uuid),
        )?;
        for (at, words) in &j.indirect {
            block.fill(0);
            for (i, w) in words.iter().enumerate() {
                block[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
            }
            dev.write_blocks(*at, geo.block_size, &block)?;
        }
        if let Some((at, entries)) = &j.leaf {
            block.fill(0);
            header(&mut block, entries.len(), (bs - 12) / 12, 0);
            for (i, e) in entries.iter().enumerate() {
                block[12 + i * 12..24 + i * 12].copy_from_slice(e);
            }
            if meta_csum {
                let off = 12 + (bs - 12) / 12 * 12;
                let c = crc32c(inode_seed(JOURNAL_INO), &block[..off]);
                block[off..off + 4].copy_from_slice(&c.to_le_bytes());
            }
            dev.write_blocks(*at, geo.block_size, &block)?;
        }
    }

    // Inodes 1-11, in group 0's first inode table block(s).
    let isz = o.inode_size as usize;
    let mut inodes = vec![0u8; (LPF_INO as usize * isz).div_ceil(bs) * bs];
    let t = o.time as u32;
    let ext_fl = if extents { inode::flags::EXTENTS } else { 0 };
    let mut put_inode = |ino: u32, r: Option<&RawInode>, xattr_area: bool| {
        let at = (ino as usize - 1) * isz;
        let rec = &mut inodes[at..at + isz];
        if let Some(r) = r {
            let bytes = r.as_bytes();
            let n = bytes.len().min(isz);
            rec[..n].copy_from_slice(&bytes[..n]);
        }
        if xattr_area && isz > 164 {
            rec[160..164].copy_from_slice(&0xEA02_0000u32.to_le_bytes());
        }
        // Reserved inodes carry checksums too (mke2fs).
        if let Some((c, hi)) = inode::expected_checksum(&sb, InodeNo(ino), rec) {
            rec[0x7C..0x7E].copy_from_slice(&(c as u16).to_le_bytes());
            if hi {
                rec[0x82..0x84].copy_from_slice(&((c >> 16) as u16).to_le_bytes());
            }
        }
    };
    for ino in 3..FIRST_INO {
        let made = (ino == JOURNAL_INO && journal.is_some())
            || (ino == RESIZE_INO && resize_dind.is_some());
        if !made {
            put_inode(ino, None, false);
        }
    }
    let new_inode =
        |mode: u16, links: u16, size: u64, blocks_512: u64, flags: u32, ib: &[u8; 60]| {
            let mut i = RawInode::new_zeroed();
            i.mode = mode.into();
            i.links_count = links.into();
            i.size_lo = (size as u32).into();
            i.size_high = ((size >> 32) as u32).into();
            i.blocks_lo = (blocks_512 as u32).into();
            i.flags = flags.into();
            i.atime = t.into();
            i.ctime = t.into();
            i.mtime = t.into();
            i.block = *ib;
            if isz > 128 {
                // The large inode's extra fields (mke2fs: all 32 bytes).
                i.extra_isize = 32u16.into();
                i.crtime = t.into();
            }
            i
        };
    // The bad blocks inode (1) is empty but for its times (mke2fs).
    let mut bad = RawInode::new_zeroed();
    bad.atime = t.into();
    bad.ctime = t.into();
    bad.mtime = t.into();
    put_inode(1, Some(&bad), false);
    let mut r = new_inode(
        0o040755,
        3,
        bs as u64,
        (bs / 512) as u64,
        ext_fl,
        &root.i_block,
    );
    r.uid = (o.root_owner.0 as u16).into();
    r.uid_high = ((o.root_owner.0 >> 16) as u16).into();
    r.gid = (o.root_owner.1 as u16).into();
    r.gid_high = ((o.root_owner.1 >> 16) as u16).into();
    put_inode(ROOT_INO, Some(&r), false);
    let n = lpf.blocks.len() as u64;
    let r = new_inode(
        0o040700,
        2,
        n * bs as u64,
        n * (bs / 512) as u64,
        ext_fl,
        &lpf.i_block,
    );
    // Expanding the inline directory leaves its empty in-inode xattr area
    // behind (the header's magic), as mke2fs's does.
    put_inode(LPF_INO, Some(&r), inline);
    if let Some(j) = &journal {
        let r = new_inode(
            0o100600,
            1,
            j.blocks as u64 * bs as u64,
            j.blocks_512,
            ext_fl,
            &j.i_block,
        );
        put_inode(JOURNAL_INO, Some(&r), false);
    }
    if let Some(dind) = resize_dind {
        let reserve = resize_inode::Reserve {
            block_size: geo.block_size,
            first_data_block: geo.first_data_block as u64,
            blocks_per_group: geo.blocks_per_group as u64,
            sparse_super: geo.sparse_super,
            desc_blocks: geo.desc_blocks as u64,
            reserved: geo.reserved_gdt_blocks as u64,
            groups: geo.groups,
        };
        let blocks_512 = resize_inode::write_blocks(dev, &reserve, dind)?;
        let mut i_block = [0u8; 60];
        i_block[13 * 4..14 * 4].copy_from_slice(&(dind as u32).to_le_bytes());
        let r = new_inode(
            0o100600,
            1,
            resize_inode::size(geo.block_size),
            blocks_512,
            0,
            &i_block,
        );
        put_inode(RESIZE_INO, Some(&r), false);
    }
    dev.write_blocks(tables.inode_table[0], geo.block_size, &inodes)?;

    // Superblock and descriptors: the primary, then each backup. As
    // mke2fs (ext2fs_flush), backups say "not clean": only the primary's
    // state is the filesystem's.
    for g in (0..geo.groups).filter(|&g| geo.has_super(g)) {
        raw.block_group_nr = (g.min(u16::MAX as u32) as u16).into();
        raw.state = (if g == 0 { 1u16 } else { 0 }).into();
        if meta_csum {
            raw.checksum = crc32c(!0, &raw.as_bytes()[..1020]).into();
        }
        let first = geo.group_first(g);
        let sb_at = if g == 0 {
            SUPERBLOCK_OFFSET
        } else {
            first * bs as u64
        };
        dev.write_at(sb_at, raw.as_bytes())?;
        let desc_at = if g == 0 {
            SUPERBLOCK_OFFSET / bs as u64 + 1
        } else {
            first + 1
        };
        dev.write_blocks(desc_at, geo.block_size, &desc_bytes)?;
    }
    dev.flush()?;
    Ok(Made {
        geometry: geo,
        features: f,
        free_blocks,
        free_inodes,
        journal_blocks: journal.map_or(0, |j| j.blocks),
    })
}

/// A descriptor of a new group: where its bitmaps and inode table are
/// (`(block bitmap, inode bitmap, inode table)`), its free counts.
fn new_desc((bb, ib, it): (u64, u64, u64), free_blocks: u64, free_inodes: u32) -> RawGroupDesc {
    let mut d = RawGroupDesc::new_zeroed();
    d.block_bitmap_lo = (bb as u32).into();
    d.block_bitmap_hi = ((bb >> 32) as u32).into();
    d.inode_bitmap_lo = (ib as u32).into();
    d.inode_bitmap_hi = ((ib >> 32) as u32).into();
    d.inode_table_lo = (it as u32).into();
    d.inode_table_hi = ((it >> 32) as u32).into();
    d.free_blocks_count_lo = (free_blocks as u16).into();
    d.free_blocks_count_hi = ((free_blocks >> 16) as u16).into();
    d.free_inodes_count_lo = (free_inodes as u16).into();
    d.free_inodes_count_hi = ((free_inodes >> 16) as u16).into();
    d
}

fn set_bits(map: &mut [u8], from: u32, to: u32) {
    for b in from..to.min(map.len() as u32 * 8) {
        map[(b / 8) as usize] |= 1 << (b % 8);
    }
}

fn superblock(
    o: &MkfsOptions,
    f: &Features,
    geo: &Geometry,
    free_blocks: u64,
    free_inodes: u64,
    overhead: u64,
) -> RawSuperblock {
    let mut s = RawSuperblock::new_zeroed();
    let log = geo.block_size.trailing_zeros() - 10;
    let inodes = geo.groups * geo.inodes_per_group;
    let t = o.time as u32;
    s.inodes_count = inodes.into();
    s.blocks_count_lo = (geo.blocks_count as u32).into();
    s.blocks_count_hi = ((geo.blocks_count >> 32) as u32).into();
    s.r_blocks_count_lo = (geo.reserved_blocks as u32).into();
    s.r_blocks_count_hi = ((geo.reserved_blocks >> 32) as u32).into();
    s.free_blocks_count_lo = (free_blocks as u32).into();
    s.free_blocks_count_hi = ((free_blocks >> 32) as u32).into();
    s.free_inodes_count = (free_inodes as u32).into();
    s.first_data_block = geo.first_data_block.into();
    s.reserved_gdt_blocks = (geo.reserved_gdt_blocks as u16).into();
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
    s.feature_compat = f.compat.into();
    s.feature_incompat = f.incompat.into();
    s.feature_ro_compat = f.ro_compat.into();
    s.uuid = o.uuid;
    s.volume_name = o.label;
    for (i, w) in o.hash_seed.chunks_exact(4).enumerate() {
        s.hash_seed[i] = u32::from_le_bytes([w[0], w[1], w[2], w[3]]).into();
    }
    s.def_hash_version = 1; // half_md4
    if f.has_incompat(incompat::BIT64) {
        s.desc_size = (geo.desc_size as u16).into();
    }
    // mke2fs.conf's default_mntopts: acl, user_xattr.
    s.default_mount_opts = (DEFM_XATTR_USER | DEFM_ACL).into();
    s.mkfs_time = t.into();
    s.overhead_clusters = (overhead as u32).into();
    if o.inode_size > 128 {
        s.min_extra_isize = 32u16.into();
        s.want_extra_isize = 32u16.into();
    }
    // Directory hashes as x86's signed char computes them, like mke2fs.
    s.flags = 1u32.into();
    if f.has_incompat(incompat::FLEX_BG) {
        s.log_groups_per_flex = o.flex_bg_size.trailing_zeros() as u8;
    }
    if f.has_ro_compat(ro_compat::METADATA_CSUM) {
        s.checksum_type = 1; // crc32c
    }
    if f.has_incompat(incompat::CSUM_SEED) {
        s.checksum_seed = crc32c(!0, &o.uuid).into();
    }
    // mke2fs starts the lifetime write count at 1 KiB for ext4 features.
    if f.has_incompat(incompat::FLEX_BG)
        || f.has_ro_compat(
            ro_compat::HUGE_FILE
                | ro_compat::GDT_CSUM
                | ro_compat::DIR_NLINK
                | ro_compat::METADATA_CSUM
                | ro_compat::EXTRA_ISIZE,
        )
    {
        s.kbytes_written = 1u64.into();
    }
    let hi = ((o.time >> 32) & 0xff) as u8;
    s.wtime_hi = hi;
    s.mkfs_time_hi = hi;
    s.lastcheck_hi = hi;
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backups_follow_sparse_super() {
        let with: Vec<u32> = (0..100).filter(|&g| has_super(g)).collect();
        assert_eq!(with, [0, 1, 3, 5, 7, 9, 25, 27, 49, 81]);
    }

    #[test]
    fn lost_found_is_16k_and_two_blocks() {
        assert_eq!(lpf_blocks(1024, false), 12);
        assert_eq!(lpf_blocks(4096, false), 4);
        assert_eq!(lpf_blocks(65536, false), 2);
        assert_eq!(lpf_blocks(4096, true), 3);
    }

    #[test]
    fn feature_lists_edit_like_mke2fs() {
        let mut f = Features::of(FsType::Ext4);
        f.edit("^has_journal,inline_data").unwrap();
        assert!(!f.has_compat(compat::HAS_JOURNAL));
        assert!(f.has_incompat(incompat::INLINE_DATA));
        assert!(f.edit("warp_drive").is_err());
        let mut g = Features::of(FsType::Ext2);
        assert!(g.has_compat(compat::RESIZE_INODE));
        g.edit("^sparse_super").unwrap();
        assert!(g
            .settle()
            .unwrap_err()
            .contains("resize_inode needs sparse_super"));
        g.edit("^resize_inode").unwrap();
        assert!(g.settle().is_ok());
        let mut h = Features::of(FsType::Ext4);
        h.edit("uninit_bg").unwrap();
        assert!(!h.settle().unwrap().has_ro_compat(ro_compat::GDT_CSUM));
    }
}
