//! Recovery in memory: the volume reads as if the journal had been
//! replayed while the image is left untouched.
//!
//! [`Overlaid`] is the device under the block cache: every read of the
//! volume — metadata through the cache, file data read directly, checks —
//! goes through it, so a block the plan replays reads as its newest logged
//! copy wherever it is read from. Only the plan (32 bytes per replayed
//! block) is kept; the copies are read from the log when asked for.
//!
//! Writes are refused while anything is replayed in memory: a volume
//! opened that way is read-only (a read-write open replays to the device
//! instead, see [`super::replay`]).

use alloc::boxed::Box;
use alloc::vec::Vec;

use super::format::MAGIC;
use super::scan::LoggedBlock;
use crate::device::BlockDevice;
use crate::error::{errno, IoError};
use crate::numbers::PhysBlock;

/// The replayed blocks, and where their copies are.
pub struct Overlay {
    block_size: u64,
    /// Sorted by target, one per block.
    blocks: Vec<LoggedBlock>,
    /// The external journal device the copies are on; `None` when they
    /// are on the filesystem's own device.
    journal: Option<Box<dyn BlockDevice>>,
}

impl Overlay {
    pub fn new(
        block_size: u32,
        blocks: Vec<LoggedBlock>,
        journal: Option<Box<dyn BlockDevice>>,
    ) -> Overlay {
        debug_assert!(blocks.windows(2).all(|w| w[0].target < w[1].target));
        Overlay {
            block_size: block_size as u64,
            blocks,
            journal,
        }
    }
    pub fn len(&self) -> usize {
        self.blocks.len()
    }
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }
    /// Bytes the plan takes.
    pub fn memory_bytes(&self) -> usize {
        self.blocks.capacity() * core::mem::size_of::<LoggedBlock>()
    }

    /// Whether any of `count` blocks from `first` is replayed.
    pub fn covers(&self, first: PhysBlock, count: u64) -> bool {
        let i = self.blocks.partition_point(|b| b.target < first);
        self.blocks
            .get(i)
            .is_some_and(|b| b.target.0 - first.0 < count)
    }

    /// Replace the parts of `buf` (bytes `offset..` of the filesystem
    /// device, already read from it) that replayed blocks cover.
    fn patch(&self, dev: &dyn BlockDevice, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        if buf.is_empty() {
            return Ok(());
        }
        let bs = self.block_size;
        let end = offset + buf.len() as u64;
        let first = PhysBlock(offset / bs);
        let mut i = self.blocks.partition_point(|b| b.target < first);
        let src_dev = self.journal.as_deref().unwrap_or(dev);
        while let Some(b) = self.blocks.get(i) {
            let start = b.target.0.saturating_mul(bs);
            if start >= end {
                break;
            }
            // The overlap of the block with the request.
            let lo = start.max(offset);
            let hi = start.saturating_add(bs).min(end);
            let dst = &mut buf[(lo - offset) as usize..(hi - offset) as usize];
            let within = lo - start;
            src_dev.read_at(b.src + within, dst)?;
            if b.escaped() && within < 4 {
                let magic = MAGIC.to_be_bytes();
                for (k, d) in dst.iter_mut().enumerate().take((4 - within) as usize) {
                    *d = magic[within as usize + k];
                }
            }
            i += 1;
        }
        Ok(())
    }
}

/// A device read through the replay overlay (when there is one).
pub struct Overlaid<D> {
    dev: D,
    overlay: Option<Overlay>,
}

impl<D: BlockDevice> Overlaid<D> {
    pub fn new(dev: D, overlay: Option<Overlay>) -> Self {
        Overlaid {
            dev,
            overlay: overlay.filter(|o| !o.is_empty()),
        }
    }
    /// The device itself, as it is on disk.
    pub fn inner(&self) -> &D {
        &self.dev
    }
    pub fn overlay(&self) -> Option<&Overlay> {
        self.overlay.as_ref()
    }
}

impl<D: BlockDevice> BlockDevice for Overlaid<D> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.dev.read_at(offset, buf)?;
        match &self.overlay {
            Some(o) => o.patch(&self.dev, offset, buf),
            None => Ok(()),
        }
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        if self.overlay.is_some() {
            return Err(IoError {
                errno: errno::EROFS,
            });
        }
        self.dev.write_at(offset, buf)
    }
    fn flush(&self) -> Result<(), IoError> {
        self.dev.flush()
    }
    fn size(&self) -> u64 {
        self.dev.size()
    }
    fn read_only(&self) -> bool {
        self.overlay.is_some() || self.dev.read_only()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::MemDevice;
    use alloc::vec;

    /// Every byte range of an overlaid device reads as a model: the device
    /// with the replayed blocks written over it (escaped magic restored).
    #[test]
    fn reads_of_any_range_see_the_replayed_blocks() {
        const BS: usize = 64;
        let mut disk = vec![0u8; 16 * BS];
        for (i, b) in disk.iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        // Copies of blocks 2 (escaped: its first four bytes zeroed in the
        // log), 3 and 9, kept in blocks 12..15 of the same device.
        let copies = [(2u64, 12usize, true), (3, 13, false), (9, 15, false)];
        let copy = |target: u64| -> alloc::vec::Vec<u8> {
            (0..BS).map(|i| (200 + target as usize + i) as u8).collect()
        };
        for &(target, src, escaped) in &copies {
            disk[src * BS..src * BS + BS].copy_from_slice(&copy(target));
            if escaped {
                disk[src * BS..src * BS + 4].fill(0);
            }
        }
        let mut model = disk.clone();
        for &(target, _, escaped) in &copies {
            let t = target as usize * BS;
            model[t..t + BS].copy_from_slice(&copy(target));
            if escaped {
                model[t..t + 4].copy_from_slice(&MAGIC.to_be_bytes());
            }
        }
        let blocks = copies
            .iter()
            .map(|&(t, s, e)| LoggedBlock::new(PhysBlock(t), (s * BS) as u64, e))
            .collect();
        let dev = Overlaid::new(
            MemDevice::from_vec(disk),
            Some(Overlay::new(BS as u32, blocks, None)),
        );
        for off in 0..12 * BS {
            for len in [1, 2, 3, 5, BS - 1, BS, BS + 3, 3 * BS] {
                if off + len > 16 * BS {
                    continue;
                }
                let mut buf = vec![0u8; len];
                dev.read_at(off as u64, &mut buf).unwrap();
                assert_eq!(buf, model[off..off + len], "read of {len} at {off}");
            }
        }
        let o = dev.overlay().unwrap();
        assert!(
            o.covers(PhysBlock(0), 3) && !o.covers(PhysBlock(4), 5) && o.covers(PhysBlock(4), 6)
        );
        assert!(!o.covers(PhysBlock(10), u64::MAX) && o.covers(PhysBlock(9), 1));
        // Read-only while anything is replayed in memory.
        assert!(dev.read_only());
        assert_eq!(dev.write_at(0, &[1]).unwrap_err().errno, errno::EROFS);
    }
}
