//! The one file/block-device `BlockDevice` every frontend uses (feature `std`).

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::device::BlockDevice;
use crate::error::{errno, IoError};

pub struct FileDevice {
    file: File,
    /// Where the device starts in the file (`offset=`, a partition).
    base: u64,
    size: u64,
    read_only: bool,
}

fn io_err(e: io::Error) -> IoError {
    IoError {
        errno: e.raw_os_error().unwrap_or(errno::EIO),
    }
}

impl FileDevice {
    /// Open an image file or a block device. Its size is found by seeking to
    /// the end, which works for regular files and Linux block devices.
    pub fn open(path: &Path, read_only: bool) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(!read_only).open(path)?;
        Self::from_file(file, read_only)
    }

    /// Wrap an already-open file (an inherited descriptor, for instance).
    pub fn from_file(mut file: File, read_only: bool) -> io::Result<Self> {
        let size = file.seek(SeekFrom::End(0))?;
        Ok(Self::with_size(file, size, read_only))
    }

    /// Wrap an open file whose size the caller found some other way (for
    /// example `DIOCGMEDIASIZE` on FreeBSD disks, where seeking does not tell).
    pub fn with_size(file: File, size: u64, read_only: bool) -> Self {
        FileDevice {
            file,
            base: 0,
            size,
            read_only,
        }
    }

    /// The `len` bytes from byte `start` of this device, as a device of
    /// their own (a partition, or `offset=`). `Err` when they do not fit.
    pub fn window(self, start: u64, len: u64) -> io::Result<Self> {
        match start.checked_add(len) {
            Some(end) if end <= self.size => Ok(FileDevice {
                base: self.base + start,
                size: len,
                ..self
            }),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the range lies past the end of the device",
            )),
        }
    }

    /// The open file; device byte `x` is its byte `x + base()`.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Where the device starts in [`FileDevice::file`].
    pub fn base(&self) -> u64 {
        self.base
    }
}

impl BlockDevice for FileDevice {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let end = offset.checked_add(buf.len() as u64).ok_or(IoError::EIO)?;
        if end > self.size {
            return Err(IoError::EIO);
        }
        self.file
            .read_exact_at(buf, self.base + offset)
            .map_err(io_err)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        if self.read_only {
            return Err(IoError {
                errno: errno::EROFS,
            });
        }
        let end = offset.checked_add(buf.len() as u64).ok_or(IoError::EIO)?;
        if end > self.size {
            return Err(IoError {
                errno: errno::ENOSPC,
            });
        }
        self.file
            .write_all_at(buf, self.base + offset)
            .map_err(io_err)
    }
    fn flush(&self) -> Result<(), IoError> {
        if self.read_only {
            return Ok(());
        }
        self.file.sync_data().map_err(io_err)
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
}
