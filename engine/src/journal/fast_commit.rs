//! The fast-commit area (ext4 `fast_commit`, jbd2 `FAST_COMMIT`): the last
//! blocks of the journal, where ext4 logs small logical changes (inode
//! updates, added and removed extents, directory entries) between full
//! commits. Replaying them means re-doing those changes through the
//! filesystem's allocator and trees (the kernel's `ext4_fc_replay`), which
//! a read-only engine without a write path cannot do. So recovery only
//! decides, as the kernel's scan phase (`ext4_fc_replay_scan`) does,
//! whether the area holds fast commits of the transaction after the log's
//! last one; if it does, recovery is refused, naming the feature, rather
//! than silently dropping those changes. A stale area (fast commits of an
//! older transaction, already covered by a full commit) is not replayed by
//! the kernel either, and does not stop recovery.

use alloc::vec;

use super::log::Log;
use crate::checksum::crc32c;
use crate::device::BlockDevice;
use crate::error::Result;

/// Tag numbers (`EXT4_FC_TAG_*`).
pub mod tag {
    pub const ADD_RANGE: u16 = 1;
    pub const DEL_RANGE: u16 = 2;
    pub const CREAT: u16 = 3;
    pub const LINK: u16 = 4;
    pub const UNLINK: u16 = 5;
    pub const INODE: u16 = 6;
    pub const PAD: u16 = 7;
    pub const TAIL: u16 = 8;
    pub const HEAD: u16 = 9;
}
/// Bytes of a tag's header (`struct ext4_fc_tl`: le16 tag, le16 length).
const TL: usize = 4;
/// Fast-commit features this kernel generation knows (none).
const SUPPORTED_FEATURES: u32 = 0;
const NAME_LEN: usize = 255;

/// What the scan found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Area {
    /// No fast commit of the expected transaction: nothing to replay.
    Stale,
    /// Fast commits (this many tags) to replay.
    Pending(u32),
    /// A fast commit of the expected transaction that fails its checks;
    /// the kernel fails recovery on it.
    Corrupt,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// `ext4_fc_value_len_isvalid`.
fn len_ok(tag: u16, len: usize, inode_size: usize) -> bool {
    match tag {
        tag::ADD_RANGE => len == 16,
        tag::DEL_RANGE => len == 12,
        tag::LINK | tag::UNLINK | tag::CREAT => len <= 8 + NAME_LEN,
        tag::INODE => len > 4 && len <= 4 + inode_size,
        tag::PAD => true,
        tag::TAIL => len >= 8,
        tag::HEAD => len == 8,
        _ => false,
    }
}

/// Scan the fast-commit area of `log` for commits of transaction
/// `expected` (the one after the log's last), as the kernel's scan phase
/// does. Reads at most the area's blocks.
pub fn scan<D: BlockDevice>(log: &Log<'_, D>, expected: u32, inode_size: usize) -> Result<Area> {
    let Some((first, last)) = log.fc else {
        return Ok(Area::Stale);
    };
    let bs = log.block_size;
    let mut block = vec![0u8; bs];
    let mut crc = 0u32;
    let mut cur_tag = 0u32;
    let mut num_tags = 0u32;
    let stop = |num_tags: u32| {
        if num_tags > 0 {
            Area::Pending(num_tags)
        } else {
            Area::Corrupt
        }
    };
    for (off, n) in (first..=last).enumerate() {
        if log.read(n as u64, &mut block).is_err() {
            // Past the journal's end (the kernel's area runs one block
            // long) or unreadable: the scan stops there.
            return Ok(if num_tags > 0 {
                Area::Pending(num_tags)
            } else {
                Area::Stale
            });
        }
        if off == 0 && le16(&block, 0) != tag::HEAD {
            return Ok(Area::Stale);
        }
        let mut cur = 0usize;
        while cur + TL <= bs {
            let t = le16(&block, cur);
            let len = le16(&block, cur + 2) as usize;
            let val = cur + TL;
            if len > bs - val || !len_ok(t, len, inode_size) {
                return Ok(stop(num_tags));
            }
            match t {
                tag::ADD_RANGE
                | tag::DEL_RANGE
                | tag::LINK
                | tag::UNLINK
                | tag::CREAT
                | tag::INODE
                | tag::PAD => {
                    cur_tag += 1;
                    crc = crc32c(crc, &block[cur..val + len]);
                }
                tag::TAIL => {
                    cur_tag += 1;
                    crc = crc32c(crc, &block[cur..val + 4]);
                    if le32(&block, val) == expected && le32(&block, val + 4) == crc {
                        num_tags = cur_tag;
                    } else {
                        return Ok(stop(num_tags));
                    }
                    crc = 0;
                }
                tag::HEAD => {
                    if le32(&block, val) & !SUPPORTED_FEATURES != 0 {
                        return Ok(Area::Corrupt);
                    }
                    if le32(&block, val + 4) != expected {
                        return Ok(if num_tags > 0 {
                            Area::Pending(num_tags)
                        } else {
                            Area::Stale
                        });
                    }
                    cur_tag += 1;
                    crc = crc32c(crc, &block[cur..val + len]);
                }
                _ => return Ok(stop(num_tags)),
            }
            cur = val + len;
        }
    }
    Ok(if num_tags > 0 {
        Area::Pending(num_tags)
    } else {
        Area::Stale
    })
}
