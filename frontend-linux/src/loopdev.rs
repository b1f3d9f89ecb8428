//! Attaching an image file to a free loop device, so the kernel's iomap
//! layer (which needs a block device) can read it: `/dev/loop-control`
//! `LOOP_CTL_GET_FREE`, then `LOOP_CONFIGURE` read-only, autoclear, with
//! direct I/O when the backing file allows it and the logical block size
//! set to the filesystem's block size. [`LoopDevice`] detaches on drop, so
//! every failure path after attaching releases it; autoclear covers a
//! process that dies without unwinding (the kernel detaches the device
//! once its last opener closes it).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;

pub const LO_FLAGS_READ_ONLY: u32 = 1;
pub const LO_FLAGS_AUTOCLEAR: u32 = 4;
pub const LO_FLAGS_DIRECT_IO: u32 = 16;

/// `struct loop_info64`.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct LoopInfo64 {
    pub lo_device: u64,
    pub lo_inode: u64,
    pub lo_rdevice: u64,
    pub lo_offset: u64,
    pub lo_sizelimit: u64,
    pub lo_number: u32,
    pub lo_encrypt_type: u32,
    pub lo_encrypt_key_size: u32,
    pub lo_flags: u32,
    pub lo_file_name: [u8; 64],
    pub lo_crypt_name: [u8; 64],
    pub lo_encrypt_key: [u8; 32],
    pub lo_init: [u64; 2],
}

/// `struct loop_config`.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct LoopConfig {
    pub fd: u32,
    pub block_size: u32,
    pub info: LoopInfo64,
    pub reserved: [u64; 8],
}

/// How many times a free device is looked for again when another process
/// configures it between `LOOP_CTL_GET_FREE` and `LOOP_CONFIGURE`.
const ATTACH_TRIES: usize = 16;

/// An attached loop device; detached on drop.
#[derive(Debug)]
pub struct LoopDevice {
    dev: File,
    path: PathBuf,
    number: u32,
    direct_io: bool,
    block_size: u32,
    attached: bool,
}

impl LoopDevice {
    /// Attach `image` read-only to a free loop device whose logical block
    /// size is `block_size` (or the largest power of two the device
    /// accepts below it: iomap only needs it to divide the fs block size).
    pub fn attach(image: &Path, block_size: u32) -> io::Result<LoopDevice> {
        Self::attach_as(image, block_size, false)
    }

    /// [`LoopDevice::attach`], read-write when `writable`.
    pub fn attach_as(image: &Path, block_size: u32, writable: bool) -> io::Result<LoopDevice> {
        let backing = OpenOptions::new()
            .read(true)
            .write(writable)
            .custom_flags(libc::O_CLOEXEC)
            .open(image)
            .map_err(|e| with_path(image, e))?;
        let ctl = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open("/dev/loop-control")
            .map_err(|e| with_path(Path::new("/dev/loop-control"), e))?;
        let mut last = io::Error::other("no free loop device");
        for _ in 0..ATTACH_TRIES {
            // SAFETY: LOOP_CTL_GET_FREE takes no argument.
            let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
            if n < 0 {
                return Err(io::Error::other(format!(
                    "/dev/loop-control: no free loop device: {}",
                    io::Error::last_os_error()
                )));
            }
            let path = PathBuf::from(format!("/dev/loop{n}"));
            // The loop device is read-only unless opened for writing too.
            let dev = OpenOptions::new()
                .read(true)
                .write(writable)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)
                .map_err(|e| with_path(&path, e))?;
            match configure(&dev, &backing, block_size, writable) {
                Ok((direct_io, bs)) => {
                    return Ok(LoopDevice {
                        dev,
                        path,
                        number: n as u32,
                        direct_io,
                        block_size: bs,
                        attached: true,
                    })
                }
                // Taken by someone else meanwhile: ask for another.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = e,
                Err(e) => return Err(with_path(&path, e)),
            }
        }
        Err(last)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `loop3` for `/dev/loop3`.
    pub fn name(&self) -> String {
        format!("loop{}", self.number)
    }

    pub fn file(&self) -> &File {
        &self.dev
    }

    pub fn direct_io(&self) -> bool {
        self.direct_io
    }

    /// The logical block size the device was configured with.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Close this descriptor without detaching: autoclear detaches the
    /// device when its last opener closes it.
    pub fn leave_to_autoclear(mut self) {
        self.attached = false;
    }

    /// Detach now, reporting failure (drop only logs it).
    pub fn detach(mut self) -> io::Result<()> {
        self.detach_inner()
    }

    fn detach_inner(&mut self) -> io::Result<()> {
        if !self.attached {
            return Ok(());
        }
        self.attached = false;
        // SAFETY: LOOP_CLR_FD takes no argument. With other openers left
        // (the FUSE connection's backing reference), the kernel defers the
        // detach to the last close, which autoclear already promised.
        let r = unsafe { libc::ioctl(self.dev.as_raw_fd(), LOOP_CLR_FD as _, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            // ENXIO: already detached (autoclear after the last close).
            if e.raw_os_error() != Some(libc::ENXIO) {
                return Err(with_path(&self.path, e));
            }
        }
        Ok(())
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        if let Err(e) = self.detach_inner() {
            crate::log::error(format_args!("detaching {}: {e}", self.path.display()));
        }
    }
}

/// `LOOP_CONFIGURE` with direct I/O first, then without (the backing
/// file's filesystem may not do O_DIRECT, or not at this block size), and
/// with smaller block sizes if the device refuses `block_size`.
fn configure(
    dev: &File,
    backing: &File,
    block_size: u32,
    writable: bool,
) -> io::Result<(bool, u32)> {
    // Then the powers of two the loop driver always takes, largest first.
    let mut sizes = vec![block_size];
    sizes.extend(
        [4096, 2048, 1024, 512]
            .into_iter()
            .filter(|&s| s < block_size),
    );
    let mut last = io::Error::from_raw_os_error(libc::EINVAL);
    for &bs in &sizes {
        for dio in [true, false] {
            let mut flags = LO_FLAGS_AUTOCLEAR;
            if !writable {
                flags |= LO_FLAGS_READ_ONLY;
            }
            if dio {
                flags |= LO_FLAGS_DIRECT_IO;
            }
            let mut cfg = LoopConfig::new_zeroed();
            cfg.fd = backing.as_raw_fd() as u32;
            cfg.block_size = bs;
            cfg.info.lo_flags = flags;
            // SAFETY: LOOP_CONFIGURE reads one `struct loop_config`.
            let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE as _, &cfg) };
            if r == 0 {
                // Older kernels drop direct I/O silently: ask what stuck.
                let dio_on = status_flags(dev).is_ok_and(|f| f & LO_FLAGS_DIRECT_IO != 0);
                return Ok((dio_on, bs));
            }
            last = io::Error::last_os_error();
            if last.raw_os_error() != Some(libc::EINVAL) {
                return Err(last);
            }
        }
    }
    Err(last)
}

fn status_flags(dev: &File) -> io::Result<u32> {
    let mut info = LoopInfo64::new_zeroed();
    // SAFETY: LOOP_GET_STATUS64 fills one `struct loop_info64`.
    let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_GET_STATUS64 as _, &mut info) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info.lo_flags)
}

fn with_path(p: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", p.display()))
}

/// Loop devices whose backing file is `image` (from
/// `/sys/block/loop*/loop/backing_file`), for leak checks.
pub fn devices_backed_by(image: &Path) -> Vec<String> {
    let want = std::fs::canonicalize(image).unwrap_or_else(|_| image.to_path_buf());
    let mut found = Vec::new();
    for e in std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        if let Ok(b) = std::fs::read_to_string(e.path().join("loop/backing_file")) {
            let b = b.trim_end_matches('\n');
            // The kernel appends " (deleted)" once the file is unlinked.
            let b = b.strip_suffix(" (deleted)").unwrap_or(b);
            if Path::new(b) == want {
                found.push(name);
            }
        }
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layouts() {
        assert_eq!(size_of::<LoopInfo64>(), 232);
        assert_eq!(offset_of!(LoopInfo64, lo_number), 40);
        assert_eq!(offset_of!(LoopInfo64, lo_flags), 52);
        assert_eq!(offset_of!(LoopInfo64, lo_file_name), 56);
        assert_eq!(offset_of!(LoopInfo64, lo_init), 216);
        assert_eq!(size_of::<LoopConfig>(), 304);
        assert_eq!(offset_of!(LoopConfig, block_size), 4);
        assert_eq!(offset_of!(LoopConfig, info), 8);
        assert_eq!(offset_of!(LoopConfig, reserved), 240);
    }
}
