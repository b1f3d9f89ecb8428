//! The log ring as the journal writer sees it: log positions from
//! `s_first` up to the end of the ring (`s_maxlen`, less the fast-commit
//! area when the filesystem uses one), wrapping back to `s_first`, and
//! where each log block lies on the device (the journal inode's extents or
//! block map, looked up once at open).
//!
//! Memory: one [`Piece`] per physically contiguous piece of the journal,
//! at most [`MAX_PIECES`] (an ext3 journal has one per 1024 blocks at
//! most; a journal in more pieces is refused for writing).

use alloc::vec::Vec;

use super::log::Log;
use super::JournalError;
use crate::device::BlockDevice;
use crate::error::{IoError, Result};

/// Most pieces a journal written to may be in.
pub const MAX_PIECES: usize = 1 << 16;

/// Log blocks `log..log+len` lie at device blocks `dev..dev+len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Piece {
    log: u32,
    dev: u64,
    len: u32,
}

#[derive(Debug)]
pub struct Ring {
    pub block_size: usize,
    /// First log block (`s_first`).
    pub first: u32,
    /// End of the ring (exclusive): the log wraps from here to `first`.
    pub end: u32,
    /// Every journal block from 0 (the superblock) to `s_maxlen`.
    pieces: Vec<Piece>,
}

impl Ring {
    /// Map the journal of `log` (in an inode of its filesystem) for
    /// writing, with the ring ending at `end`.
    pub fn new<D: BlockDevice>(log: &Log<'_, D>, end: u32) -> Result<Ring> {
        let bs = log.block_size as u64;
        let maxlen = log.sb.maxlen.get();
        let mut pieces: Vec<Piece> = Vec::new();
        for n in 0..maxlen {
            let dev = log.location(n as u64)? / bs;
            match pieces.last_mut() {
                Some(p) if p.dev + p.len as u64 == dev => p.len += 1,
                _ => {
                    if pieces.len() == MAX_PIECES {
                        return Err(JournalError::Superblock(
                            "the journal inode is in too many pieces to be written (over 65536)",
                        )
                        .into());
                    }
                    pieces.push(Piece {
                        log: n,
                        dev,
                        len: 1,
                    });
                }
            }
        }
        Ok(Ring {
            block_size: log.block_size,
            first: log.first,
            end,
            pieces,
        })
    }

    /// Blocks in the ring.
    pub fn blocks(&self) -> u32 {
        self.end - self.first
    }

    /// The log position `n` blocks after `at` (both in the ring).
    pub fn add(&self, at: u32, n: u32) -> u32 {
        let off = (at - self.first) as u64 + n as u64;
        self.first + (off % self.blocks() as u64) as u32
    }

    /// How many blocks from `from` forward to `to`.
    pub fn distance(&self, from: u32, to: u32) -> u32 {
        if to >= from {
            to - from
        } else {
            self.blocks() - (from - to)
        }
    }

    /// The device block of journal block `n`, and how many journal blocks
    /// from `n` on follow it contiguously on the device.
    fn locate(&self, n: u32) -> (u64, u32) {
        let i = self.pieces.partition_point(|p| p.log + p.len <= n);
        let p = self.pieces[i];
        (p.dev + (n - p.log) as u64, p.len - (n - p.log))
    }

    /// Device block of the journal superblock.
    pub fn superblock(&self) -> u64 {
        self.locate(0).0
    }

    /// Write `data` (whole blocks) to the log from position `at` on,
    /// wrapping at the ring's end, one device request per contiguous piece.
    pub fn write(&self, dev: &dyn BlockDevice, at: u32, data: &[u8]) -> Result<(), IoError> {
        let bs = self.block_size;
        let mut pos = at;
        let mut rest = data;
        while !rest.is_empty() {
            let (blk, contiguous) = self.locate(pos);
            let to_end = self.end - pos;
            let n = (contiguous.min(to_end) as usize).min(rest.len() / bs);
            dev.write_blocks(blk, bs as u32, &rest[..n * bs])?;
            rest = &rest[n * bs..];
            pos = self.add(pos, n as u32);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::MemDevice;
    use alloc::vec;

    fn ring(pieces: Vec<Piece>, first: u32, end: u32) -> Ring {
        Ring {
            block_size: 1024,
            first,
            end,
            pieces,
        }
    }

    #[test]
    fn positions_wrap_inside_the_ring() {
        let r = ring(
            vec![Piece {
                log: 0,
                dev: 100,
                len: 20,
            }],
            1,
            17,
        );
        assert_eq!(r.blocks(), 16);
        assert_eq!(r.add(15, 1), 16);
        assert_eq!(r.add(16, 1), 1);
        assert_eq!(r.add(10, 16), 10);
        assert_eq!(r.add(10, 40), 2);
        assert_eq!(r.distance(5, 9), 4);
        assert_eq!(r.distance(9, 5), 12);
        assert_eq!(r.distance(7, 7), 0);
    }

    /// A write that crosses a piece boundary and the ring's end lands on
    /// the right device blocks, in order.
    #[test]
    fn writes_follow_pieces_and_wrap() {
        let r = ring(
            vec![
                Piece {
                    log: 0,
                    dev: 10,
                    len: 6,
                },
                Piece {
                    log: 6,
                    dev: 30,
                    len: 4,
                },
            ],
            1,
            10,
        );
        assert_eq!(r.superblock(), 10);
        assert_eq!(r.locate(7).0, 31);
        let dev = MemDevice::new(64 << 10);
        let data: Vec<u8> = (0..5u8).flat_map(|k| [k + 1; 1024]).collect();
        // Positions 8, 9, then 1, 2, 3.
        r.write(&dev, 8, &data).unwrap();
        let got = |blk: u64| {
            let mut b = [0u8; 1024];
            dev.read_at(blk * 1024, &mut b).unwrap();
            b[0]
        };
        assert_eq!(
            [got(32), got(33), got(11), got(12), got(13)],
            [1, 2, 3, 4, 5]
        );
        assert_eq!(got(14), 0);
    }
}
