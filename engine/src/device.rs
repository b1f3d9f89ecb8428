//! Storage under the engine. Everything the engine reads or writes goes
//! through a `BlockDevice`; the engine knows nothing about files or disks.

use alloc::vec;
use alloc::vec::Vec;

use crate::error::IoError;

pub trait BlockDevice: Send + Sync {
    /// Read exactly `buf.len()` bytes at byte `offset`. Reading past the end
    /// of the device is an error (`ENXIO`-like, reported as EIO).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError>;
    /// Write all of `buf` at byte `offset`.
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), IoError>;
    /// Make written data durable.
    fn flush(&self) -> Result<(), IoError>;
    /// Size of the device in bytes.
    fn size(&self) -> u64;
    /// Whether writes are refused.
    fn read_only(&self) -> bool;

    /// Read whole blocks starting at block `block` of size `block_size`.
    fn read_blocks(&self, block: u64, block_size: u32, buf: &mut [u8]) -> Result<(), IoError> {
        let off = block.checked_mul(block_size as u64).ok_or(IoError::EIO)?;
        self.read_at(off, buf)
    }
    /// Write whole blocks starting at block `block` of size `block_size`.
    fn write_blocks(&self, block: u64, block_size: u32, buf: &[u8]) -> Result<(), IoError> {
        let off = block.checked_mul(block_size as u64).ok_or(IoError::EIO)?;
        self.write_at(off, buf)
    }
}

impl<T: BlockDevice + ?Sized> BlockDevice for &T {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        (**self).read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        (**self).write_at(offset, buf)
    }
    fn flush(&self) -> Result<(), IoError> {
        (**self).flush()
    }
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn read_only(&self) -> bool {
        (**self).read_only()
    }
}

impl<T: BlockDevice + ?Sized> BlockDevice for alloc::sync::Arc<T> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        (**self).read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        (**self).write_at(offset, buf)
    }
    fn flush(&self) -> Result<(), IoError> {
        (**self).flush()
    }
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn read_only(&self) -> bool {
        (**self).read_only()
    }
}

impl<T: BlockDevice + ?Sized> BlockDevice for alloc::boxed::Box<T> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        (**self).read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        (**self).write_at(offset, buf)
    }
    fn flush(&self) -> Result<(), IoError> {
        (**self).flush()
    }
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn read_only(&self) -> bool {
        (**self).read_only()
    }
}

/// A device in memory, for tests and for images already loaded.
pub struct MemDevice {
    data: spin::RwLock<Vec<u8>>,
    read_only: bool,
}

impl MemDevice {
    pub fn new(size: usize) -> Self {
        Self::from_vec(vec![0; size])
    }
    pub fn from_vec(data: Vec<u8>) -> Self {
        MemDevice {
            data: spin::RwLock::new(data),
            read_only: false,
        }
    }
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }
    pub fn into_vec(self) -> Vec<u8> {
        self.data.into_inner()
    }
    /// A copy of the contents, for comparing with a model in tests.
    pub fn snapshot(&self) -> Vec<u8> {
        self.data.read().clone()
    }
}

fn range(offset: u64, len: usize, size: usize) -> Result<core::ops::Range<usize>, IoError> {
    let start = usize::try_from(offset).map_err(|_| IoError::EIO)?;
    let end = start.checked_add(len).ok_or(IoError::EIO)?;
    if end > size {
        return Err(IoError::EIO);
    }
    Ok(start..end)
}

impl BlockDevice for MemDevice {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let data = self.data.read();
        let r = range(offset, buf.len(), data.len())?;
        buf.copy_from_slice(&data[r]);
        Ok(())
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        if self.read_only {
            return Err(IoError {
                errno: crate::error::errno::EROFS,
            });
        }
        let mut data = self.data.write();
        let r = range(offset, buf.len(), data.len())?;
        data[r].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&self) -> Result<(), IoError> {
        Ok(())
    }
    fn size(&self) -> u64 {
        self.data.read().len() as u64
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
}
