//! The superblock: its on-disk layout and the validated summary the rest of
//! the engine uses.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::checksum::crc32c;
use crate::error::{Error, Object, Result};
use crate::features::{compat, incompat, ro_compat};

pub const SUPERBLOCK_OFFSET: u64 = 1024;
pub const SUPERBLOCK_SIZE: usize = 1024;
pub const MAGIC: u16 = 0xEF53;

/// `struct ext4_super_block`, 1024 bytes.
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawSuperblock {
    pub inodes_count: U32,
    pub blocks_count_lo: U32,
    pub r_blocks_count_lo: U32,
    pub free_blocks_count_lo: U32,
    pub free_inodes_count: U32,
    pub first_data_block: U32,
    pub log_block_size: U32,
    pub log_cluster_size: U32,
    pub blocks_per_group: U32,
    pub clusters_per_group: U32,
    pub inodes_per_group: U32,
    pub mtime: U32,
    pub wtime: U32,
    pub mnt_count: U16,
    pub max_mnt_count: U16,
    pub magic: U16,
    pub state: U16,
    pub errors: U16,
    pub minor_rev_level: U16,
    pub lastcheck: U32,
    pub checkinterval: U32,
    pub creator_os: U32,
    pub rev_level: U32,
    pub def_resuid: U16,
    pub def_resgid: U16,
    pub first_ino: U32,
    pub inode_size: U16,
    pub block_group_nr: U16,
    pub feature_compat: U32,
    pub feature_incompat: U32,
    pub feature_ro_compat: U32,
    pub uuid: [u8; 16],
    pub volume_name: [u8; 16],
    pub last_mounted: [u8; 64],
    pub algorithm_usage_bitmap: U32,
    pub prealloc_blocks: u8,
    pub prealloc_dir_blocks: u8,
    pub reserved_gdt_blocks: U16,
    pub journal_uuid: [u8; 16],
    pub journal_inum: U32,
    pub journal_dev: U32,
    pub last_orphan: U32,
    pub hash_seed: [U32; 4],
    pub def_hash_version: u8,
    pub jnl_backup_type: u8,
    pub desc_size: U16,
    pub default_mount_opts: U32,
    pub first_meta_bg: U32,
    pub mkfs_time: U32,
    pub jnl_blocks: [U32; 17],
    pub blocks_count_hi: U32,
    pub r_blocks_count_hi: U32,
    pub free_blocks_count_hi: U32,
    pub min_extra_isize: U16,
    pub want_extra_isize: U16,
    pub flags: U32,
    pub raid_stride: U16,
    pub mmp_update_interval: U16,
    pub mmp_block: U64,
    pub raid_stripe_width: U32,
    pub log_groups_per_flex: u8,
    pub checksum_type: u8,
    pub encryption_level: u8,
    pub reserved_pad: u8,
    pub kbytes_written: U64,
    pub snapshot_inum: U32,
    pub snapshot_id: U32,
    pub snapshot_r_blocks_count: U64,
    pub snapshot_list: U32,
    pub error_count: U32,
    pub first_error_time: U32,
    pub first_error_ino: U32,
    pub first_error_block: U64,
    pub first_error_func: [u8; 32],
    pub first_error_line: U32,
    pub last_error_time: U32,
    pub last_error_ino: U32,
    pub last_error_line: U32,
    pub last_error_block: U64,
    pub last_error_func: [u8; 32],
    pub mount_opts: [u8; 64],
    pub usr_quota_inum: U32,
    pub grp_quota_inum: U32,
    pub overhead_clusters: U32,
    pub backup_bgs: [U32; 2],
    pub encrypt_algos: [u8; 4],
    pub encrypt_pw_salt: [u8; 16],
    pub lpf_ino: U32,
    pub prj_quota_inum: U32,
    pub checksum_seed: U32,
    pub wtime_hi: u8,
    pub mtime_hi: u8,
    pub mkfs_time_hi: u8,
    pub lastcheck_hi: u8,
    pub first_error_time_hi: u8,
    pub last_error_time_hi: u8,
    pub first_error_errcode: u8,
    pub last_error_errcode: u8,
    pub encoding: U16,
    pub encoding_flags: U16,
    pub orphan_file_inum: U32,
    pub reserved: [U32; 94],
    pub checksum: U32,
}

/// `s_flags` bits.
#[allow(dead_code)] // the engine only asks for the unsigned flag
pub const FLAG_SIGNED_HASH: u32 = 0x1;
pub const FLAG_UNSIGNED_HASH: u32 = 0x2;

/// The validated superblock: everything derived once at open.
#[derive(Clone, Debug)]
pub struct Superblock {
    pub block_size: u32,
    pub log_block_size: u32,
    pub cluster_size: u32,
    pub blocks_count: u64,
    pub r_blocks_count: u64,
    pub free_blocks_count: u64,
    pub inodes_count: u32,
    pub free_inodes_count: u32,
    pub first_data_block: u32,
    pub blocks_per_group: u32,
    pub clusters_per_group: u32,
    pub inodes_per_group: u32,
    pub group_count: u32,
    pub inode_size: u32,
    pub first_ino: u32,
    pub rev_level: u32,
    pub desc_size: u32,
    pub first_meta_bg: u32,
    pub compat: u32,
    pub incompat: u32,
    pub ro_compat: u32,
    pub uuid: [u8; 16],
    pub volume_name: [u8; 16],
    pub last_mounted: [u8; 64],
    pub hash_seed: [u32; 4],
    pub def_hash_version: u8,
    pub flags: u32,
    pub state: u16,
    pub errors: u16,
    pub creator_os: u32,
    pub mkfs_time: i64,
    pub mtime: i64,
    pub wtime: i64,
    pub lastcheck: i64,
    pub mnt_count: u16,
    pub max_mnt_count: i16,
    pub journal_inum: u32,
    pub journal_uuid: [u8; 16],
    /// Device number of an external journal (`s_journal_dev`).
    pub journal_dev: u32,
    pub last_orphan: u32,
    /// Quota files: user, group, project (0: none).
    pub quota_inums: [u32; 3],
    pub orphan_file_inum: u32,
    /// The MMP block (`mmp` feature).
    pub mmp_block: u64,
    pub prealloc_dir_blocks: u8,
    pub min_extra_isize: u16,
    pub want_extra_isize: u16,
    pub log_groups_per_flex: u8,
    pub reserved_gdt_blocks: u16,
    pub backup_bgs: [u32; 2],
    pub overhead_clusters: u32,
    pub def_resuid: u16,
    pub def_resgid: u16,
    pub default_mount_opts: u32,
    pub encoding: u16,
    pub checksum_type: u8,
    /// The seed of every metadata checksum (`s_checksum_seed` or crc32c of the UUID).
    pub csum_seed: u32,
    pub checksum_ok: bool,
    pub stored_checksum: u32,
}

fn time(lo: U32, hi: u8) -> i64 {
    lo.get() as i64 | ((hi as i64) << 32)
}

impl Superblock {
    /// Validate a raw superblock read from byte 1024 of a device of
    /// `device_size` bytes. Only refuses what makes the volume unreadable;
    /// a bad checksum is recorded, and the caller decides.
    pub fn parse(raw: &RawSuperblock, bytes: &[u8], device_size: u64) -> Result<Superblock> {
        let bad = |what| Err(Error::corrupt(Object::Superblock, what));
        if raw.magic.get() != MAGIC {
            return Err(Error::NotExt4);
        }
        let incompat = raw.feature_incompat.get();
        let unknown = incompat & !incompat::SUPPORTED;
        if unknown != 0 {
            return Err(Error::UnknownIncompat { bits: unknown });
        }
        let log_block_size = raw.log_block_size.get();
        if log_block_size > 6 {
            return bad("block size is larger than 64 KiB");
        }
        let block_size = 1024u32 << log_block_size;
        let ro_compat = raw.feature_ro_compat.get();
        let bigalloc = ro_compat & ro_compat::BIGALLOC != 0;
        let cluster_size = if bigalloc {
            let l = raw.log_cluster_size.get();
            if l < log_block_size || l > 29 {
                return bad("cluster size is smaller than the block size or too large");
            }
            1024u32 << l
        } else {
            block_size
        };
        let bit64 = incompat & incompat::BIT64 != 0;
        let hi = |v: U32| if bit64 { (v.get() as u64) << 32 } else { 0 };
        let blocks_count = raw.blocks_count_lo.get() as u64 | hi(raw.blocks_count_hi);
        let r_blocks_count = raw.r_blocks_count_lo.get() as u64 | hi(raw.r_blocks_count_hi);
        let free_blocks_count =
            raw.free_blocks_count_lo.get() as u64 | hi(raw.free_blocks_count_hi);
        let first_data_block = raw.first_data_block.get();
        let blocks_per_group = raw.blocks_per_group.get();
        let inodes_per_group = raw.inodes_per_group.get();
        let clusters_per_group = if bigalloc {
            raw.clusters_per_group.get()
        } else {
            blocks_per_group
        };
        if blocks_per_group == 0 || blocks_per_group > block_size.saturating_mul(8) && !bigalloc {
            return bad("blocks per group is 0 or more than a bitmap block can describe");
        }
        if clusters_per_group == 0 || clusters_per_group > block_size.saturating_mul(8) {
            return bad("clusters per group is 0 or more than a bitmap block can describe");
        }
        if inodes_per_group == 0 || inodes_per_group > block_size.saturating_mul(8) {
            return bad("inodes per group is 0 or more than a bitmap block can describe");
        }
        if blocks_count <= first_data_block as u64 {
            return bad("block count is not past the first data block");
        }
        if block_size == 1024 && first_data_block != 1 && !bigalloc
            || block_size > 1024 && first_data_block != 0
        {
            return bad("first data block does not match the block size");
        }
        // The whole filesystem must fit on the device: anything past its end
        // is a lie the image tells, and would turn into failed reads later.
        match blocks_count.checked_mul(block_size as u64) {
            Some(bytes) if bytes <= device_size => {}
            Some(bytes) => {
                return Err(Error::Truncated {
                    device: device_size,
                    filesystem: bytes,
                })
            }
            None => return bad("block count times the block size overflows"),
        }
        let group_count64 =
            (blocks_count - first_data_block as u64).div_ceil(blocks_per_group as u64);
        let Ok(group_count) = u32::try_from(group_count64) else {
            return bad("too many block groups");
        };
        let inodes_count = raw.inodes_count.get();
        if (group_count as u64) * (inodes_per_group as u64) != inodes_count as u64 {
            return bad("inode count does not equal groups times inodes per group");
        }
        let rev_level = raw.rev_level.get();
        let (inode_size, first_ino) = if rev_level == 0 {
            (128, 11)
        } else {
            (raw.inode_size.get() as u32, raw.first_ino.get())
        };
        if inode_size < 128 || inode_size > block_size || !inode_size.is_power_of_two() {
            return bad("inode size is not a power of two between 128 and the block size");
        }
        if first_ino < 11 || first_ino > inodes_count {
            return bad("first non-reserved inode is out of range");
        }
        let desc_size = if bit64 {
            let d = raw.desc_size.get() as u32;
            if !(64..=1024).contains(&d) || !d.is_power_of_two() {
                return bad("64bit descriptor size is not a power of two between 64 and 1024");
            }
            d
        } else {
            32
        };
        let csum_seed = if incompat & incompat::CSUM_SEED != 0 {
            raw.checksum_seed.get()
        } else {
            crc32c(!0, &raw.uuid)
        };
        let metadata_csum = ro_compat & ro_compat::METADATA_CSUM != 0;
        let stored_checksum = raw.checksum.get();
        let checksum_ok =
            !metadata_csum || crc32c(!0, &bytes[..SUPERBLOCK_SIZE - 4]) == stored_checksum;
        let mut hash_seed = [0u32; 4];
        for (d, s) in hash_seed.iter_mut().zip(raw.hash_seed.iter()) {
            *d = s.get();
        }
        Ok(Superblock {
            block_size,
            log_block_size,
            cluster_size,
            blocks_count,
            r_blocks_count,
            free_blocks_count,
            inodes_count,
            free_inodes_count: raw.free_inodes_count.get(),
            first_data_block,
            blocks_per_group,
            clusters_per_group,
            inodes_per_group,
            group_count,
            inode_size,
            first_ino,
            rev_level,
            desc_size,
            first_meta_bg: raw.first_meta_bg.get(),
            compat: raw.feature_compat.get(),
            incompat,
            ro_compat,
            uuid: raw.uuid,
            volume_name: raw.volume_name,
            last_mounted: raw.last_mounted,
            hash_seed,
            def_hash_version: raw.def_hash_version,
            flags: raw.flags.get(),
            state: raw.state.get(),
            errors: raw.errors.get(),
            creator_os: raw.creator_os.get(),
            mkfs_time: time(raw.mkfs_time, raw.mkfs_time_hi),
            mtime: time(raw.mtime, raw.mtime_hi),
            wtime: time(raw.wtime, raw.wtime_hi),
            lastcheck: time(raw.lastcheck, raw.lastcheck_hi),
            mnt_count: raw.mnt_count.get(),
            max_mnt_count: raw.max_mnt_count.get() as i16,
            journal_inum: raw.journal_inum.get(),
            journal_uuid: raw.journal_uuid,
            journal_dev: raw.journal_dev.get(),
            last_orphan: raw.last_orphan.get(),
            quota_inums: [
                raw.usr_quota_inum.get(),
                raw.grp_quota_inum.get(),
                raw.prj_quota_inum.get(),
            ],
            orphan_file_inum: raw.orphan_file_inum.get(),
            mmp_block: raw.mmp_block.get(),
            prealloc_dir_blocks: raw.prealloc_dir_blocks,
            min_extra_isize: raw.min_extra_isize.get(),
            want_extra_isize: raw.want_extra_isize.get(),
            log_groups_per_flex: raw.log_groups_per_flex,
            reserved_gdt_blocks: raw.reserved_gdt_blocks.get(),
            backup_bgs: [raw.backup_bgs[0].get(), raw.backup_bgs[1].get()],
            overhead_clusters: raw.overhead_clusters.get(),
            def_resuid: raw.def_resuid.get(),
            def_resgid: raw.def_resgid.get(),
            default_mount_opts: raw.default_mount_opts.get(),
            encoding: raw.encoding.get(),
            checksum_type: raw.checksum_type,
            csum_seed,
            checksum_ok,
            stored_checksum,
        })
    }

    pub fn has_compat(&self, f: u32) -> bool {
        self.compat & f != 0
    }
    pub fn has_incompat(&self, f: u32) -> bool {
        self.incompat & f != 0
    }
    pub fn has_ro_compat(&self, f: u32) -> bool {
        self.ro_compat & f != 0
    }
    pub fn metadata_csum(&self) -> bool {
        self.has_ro_compat(ro_compat::METADATA_CSUM)
    }
    pub fn needs_recovery(&self) -> bool {
        self.has_incompat(incompat::RECOVER) && self.has_compat(compat::HAS_JOURNAL)
    }

    /// Whether group `g` holds a superblock backup (and descriptor copies).
    pub fn group_has_super(&self, g: u32) -> bool {
        if g == 0 {
            return true;
        }
        if self.has_compat(compat::SPARSE_SUPER2) {
            return g == self.backup_bgs[0] || g == self.backup_bgs[1];
        }
        if g <= 1 || !self.has_ro_compat(ro_compat::SPARSE_SUPER) {
            return true;
        }
        if g & 1 == 0 {
            return false;
        }
        let power_of = |base: u32| {
            let mut n = g;
            while n.is_multiple_of(base) {
                n /= base;
            }
            n == 1
        };
        power_of(3) || power_of(5) || power_of(7)
    }

    /// First block of group `g`.
    pub fn group_first_block(&self, g: u32) -> u64 {
        self.first_data_block as u64 + g as u64 * self.blocks_per_group as u64
    }

    pub fn descs_per_block(&self) -> u32 {
        self.block_size / self.desc_size
    }

    /// Block that holds descriptor block `i` (the `i`-th block of the table).
    pub fn desc_block(&self, i: u32) -> u64 {
        let meta_bg = self.has_incompat(incompat::META_BG);
        if !meta_bg || i < self.first_meta_bg {
            // Right after the block holding the primary superblock (block 1
            // with 1 KiB blocks, even under bigalloc where the first data
            // block is 0; block 0 otherwise).
            return (SUPERBLOCK_OFFSET / self.block_size as u64) + 1 + i as u64;
        }
        // meta_bg: descriptor block i lives in the first group of its meta
        // group, after that group's superblock backup if it has one.
        let g = i * self.descs_per_block();
        self.group_first_block(g) + self.group_has_super(g) as u64
    }

    /// Blocks used by the descriptor table in a group with a superblock
    /// (non-meta_bg layout).
    pub fn desc_blocks(&self) -> u32 {
        self.group_count.div_ceil(self.descs_per_block())
    }

    /// The volume label, without its NUL padding.
    pub fn label(&self) -> &[u8] {
        let n = self.volume_name.iter().position(|&b| b == 0).unwrap_or(16);
        &self.volume_name[..n]
    }

    /// Largest file size in bytes the kernel's ext4 allows with these
    /// features: `ext4_max_size` for extent files, `ext4_max_bitmap_size`
    /// for block-mapped ones (the count of 512-byte sectors, indirect blocks
    /// included, must fit `i_blocks`).
    pub fn max_file_size(&self, extents: bool) -> u64 {
        let bits = self.log_block_size as u64 + 10;
        let huge = self.has_ro_compat(ro_compat::HUGE_FILE);
        let lfs = i64::MAX as u64;
        if extents {
            let mut upper = lfs;
            if !huge {
                upper = (((1u64 << 32) - 1) >> (bits - 9)) << bits;
            }
            let res = ((1u64 << 32) - 1) << bits;
            return res.min(upper);
        }
        let ppb = 1u64 << (bits - 2);
        let mut upper = if huge {
            ((1u64 << 48) - 1) >> (bits - 9)
        } else {
            ((1u64 << 32) - 1) >> (bits - 9)
        };
        let mut res = 12 + ppb + ppb * ppb + ppb * ppb * ppb;
        let meta = 1 + (1 + ppb) + (1 + ppb + ppb * ppb);
        if res + meta > upper {
            res = upper;
            upper -= 12;
            let mut meta = 1;
            upper -= ppb;
            if upper < ppb * ppb {
                meta += 1 + upper.div_ceil(ppb);
            } else {
                meta += 1 + ppb;
                upper -= ppb * ppb;
                meta += 1 + upper.div_ceil(ppb) + upper.div_ceil(ppb * ppb);
            }
            res -= meta;
        }
        (res << bits).min(lfs)
    }
}

/// For unit tests: the smallest superblock that parses (one group of 8192
/// 1 KiB blocks, 64 inodes of 256 bytes, no features).
#[cfg(test)]
pub(crate) fn small_raw() -> RawSuperblock {
    use zerocopy::FromZeros;
    let mut raw = RawSuperblock::new_zeroed();
    raw.magic = MAGIC.into();
    raw.blocks_count_lo = 8192u32.into();
    raw.blocks_per_group = 8192u32.into();
    raw.inodes_per_group = 64u32.into();
    raw.inodes_count = 64u32.into();
    raw.first_data_block = 1u32.into();
    raw.rev_level = 1u32.into();
    raw.inode_size = 256u16.into();
    raw.first_ino = 11u32.into();
    raw
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layout_matches_ext4_super_block() {
        assert_eq!(size_of::<RawSuperblock>(), 1024);
        assert_eq!(offset_of!(RawSuperblock, magic), 0x38);
        assert_eq!(offset_of!(RawSuperblock, feature_compat), 0x5C);
        assert_eq!(offset_of!(RawSuperblock, uuid), 0x68);
        assert_eq!(offset_of!(RawSuperblock, hash_seed), 0xEC);
        assert_eq!(offset_of!(RawSuperblock, desc_size), 0xFE);
        assert_eq!(offset_of!(RawSuperblock, blocks_count_hi), 0x150);
        assert_eq!(offset_of!(RawSuperblock, flags), 0x160);
        assert_eq!(offset_of!(RawSuperblock, log_groups_per_flex), 0x174);
        assert_eq!(offset_of!(RawSuperblock, first_error_func), 0x1A8);
        assert_eq!(offset_of!(RawSuperblock, mount_opts), 0x200);
        assert_eq!(offset_of!(RawSuperblock, backup_bgs), 0x24C);
        assert_eq!(offset_of!(RawSuperblock, checksum_seed), 0x270);
        assert_eq!(offset_of!(RawSuperblock, encoding), 0x27C);
        assert_eq!(offset_of!(RawSuperblock, orphan_file_inum), 0x280);
        assert_eq!(offset_of!(RawSuperblock, checksum), 0x3FC);
    }

    #[test]
    fn sparse_super_groups() {
        let groups: alloc::vec::Vec<u32> = (0..100).filter(|&g| sparse_has_super(g)).collect();
        assert_eq!(groups, [0, 1, 3, 5, 7, 9, 25, 27, 49, 81]);
    }

    fn sparse_has_super(g: u32) -> bool {
        let mut raw = small_raw();
        raw.feature_ro_compat = ro_compat::SPARSE_SUPER.into();
        let bytes = raw.as_bytes().to_vec();
        let sb = Superblock::parse(&raw, &bytes, 1 << 30).unwrap();
        sb.group_has_super(g)
    }
}
