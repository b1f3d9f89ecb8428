//! Typed numbers: an inode number, a physical block of the filesystem and a
//! logical block of a file are different things, and in the write path
//! passing one where another is meant is silent corruption. The newtypes
//! make that a compile error; `.0` is the raw value where arithmetic needs
//! it.

use core::fmt;
use core::ops::Add;

/// An inode number as on disk (1-based; 0 is never an inode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct InodeNo(pub u32);

/// A block of the filesystem, counted from the start of the device in
/// filesystem blocks (`s_log_block_size`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PhysBlock(pub u64);

/// A block of a file: its byte offset divided by the block size. ext4 keeps
/// logical block numbers in 32 bits (extents and block maps alike).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FileBlock(pub u32);

impl InodeNo {
    /// The root directory.
    pub const ROOT: InodeNo = InodeNo(2);
}

impl PhysBlock {
    /// `self + n`, `None` on overflow.
    pub fn checked_add(self, n: u64) -> Option<PhysBlock> {
        self.0.checked_add(n).map(PhysBlock)
    }

    /// The block's first byte on the device, `None` past `u64`.
    pub fn byte_offset(self, block_size: u32) -> Option<u64> {
        self.0.checked_mul(block_size as u64)
    }
}

/// The block `n` blocks further on (a block within a run).
impl Add<u64> for PhysBlock {
    type Output = PhysBlock;
    fn add(self, n: u64) -> PhysBlock {
        PhysBlock(self.0 + n)
    }
}

impl FileBlock {
    /// How many logical blocks a file can address (`0..COUNT`).
    pub const COUNT: u64 = 1 << 32;

    /// Logical block `n`, `None` past the last one.
    pub fn at(n: u64) -> Option<FileBlock> {
        u32::try_from(n).ok().map(FileBlock)
    }

    /// The number widened, for arithmetic in blocks or bytes.
    pub fn get(self) -> u64 {
        self.0 as u64
    }

    /// `self + n`, `None` past the last 32-bit logical block.
    pub fn checked_add(self, n: u64) -> Option<FileBlock> {
        FileBlock::at(self.get() + n)
    }
}

impl fmt::Display for InodeNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
impl fmt::Display for PhysBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
impl fmt::Display for FileBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn additions_stop_at_their_ranges() {
        assert_eq!(
            FileBlock(u32::MAX - 1).checked_add(1),
            Some(FileBlock(u32::MAX))
        );
        assert_eq!(FileBlock(u32::MAX).checked_add(1), None);
        assert_eq!(PhysBlock(u64::MAX).checked_add(1), None);
        assert_eq!(PhysBlock(7).checked_add(3), Some(PhysBlock(10)));
        assert_eq!(FileBlock::at(FileBlock::COUNT), None);
        assert_eq!(
            FileBlock::at(FileBlock::COUNT - 1),
            Some(FileBlock(u32::MAX))
        );
        assert_eq!(PhysBlock(3).byte_offset(4096), Some(12288));
        assert_eq!(PhysBlock(u64::MAX).byte_offset(1024), None);
    }
}
