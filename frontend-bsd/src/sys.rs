//! The few things that differ between FreeBSD and Linux: how big a disk
//! device is, errno numbering, and how a device number is packed into the
//! 32-bit `rdev` of a FUSE attribute.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use ext4_engine::file_device::FileDevice;
use ext4_engine::Error;

/// Open an image file or a disk device read-only.
pub fn open_device(path: &Path) -> io::Result<FileDevice> {
    let file = File::open(path)?;
    let ft = file.metadata()?.file_type();
    if ft.is_block_device() || ft.is_char_device() {
        let size = disk_size(&file)?;
        return Ok(FileDevice::with_size(file, size, true));
    }
    FileDevice::from_file(file, true)
}

/// FreeBSD disks (`/dev/ada0p2`, `/dev/md0`) are character devices whose
/// size only `DIOCGMEDIASIZE` tells.
#[cfg(target_os = "freebsd")]
fn disk_size(file: &File) -> io::Result<u64> {
    use std::os::fd::AsRawFd;
    // _IOR('d', 129, off_t)
    const DIOCGMEDIASIZE: libc::c_ulong = 0x4008_6481;
    let mut size: libc::off_t = 0;
    // SAFETY: the ioctl writes one off_t into `size`, which outlives the call.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), DIOCGMEDIASIZE, &mut size) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    u64::try_from(size).map_err(|_| io::Error::other("negative media size"))
}

/// Linux block devices answer `BLKGETSIZE64`.
#[cfg(target_os = "linux")]
fn disk_size(file: &File) -> io::Result<u64> {
    use std::os::fd::AsRawFd;
    // _IOR(0x12, 114, size_t)
    const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
    let mut size: u64 = 0;
    // SAFETY: the ioctl writes one u64 into `size`, which outlives the call.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64 as _, &mut size) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(size)
}

#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
fn disk_size(file: &File) -> io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut f = file;
    f.seek(SeekFrom::End(0))
}

/// The errno to answer the kernel with, in this host's numbering. The
/// engine speaks Linux numbers; device errors already carry the host's.
pub fn host_errno(e: &Error) -> i32 {
    match e {
        Error::Io(io) => io.errno,
        _ => from_linux_errno(e.errno()),
    }
}

#[cfg(target_os = "linux")]
pub fn from_linux_errno(n: i32) -> i32 {
    n
}

#[cfg(not(target_os = "linux"))]
pub fn from_linux_errno(n: i32) -> i32 {
    use ext4_engine::error::errno as lx;
    match n {
        lx::ENAMETOOLONG => libc::ENAMETOOLONG,
        lx::ENOSYS => libc::ENOSYS,
        lx::ENOTEMPTY => libc::ENOTEMPTY,
        lx::ELOOP => libc::ELOOP,
        lx::ENODATA => NO_ATTR,
        lx::EOVERFLOW => libc::EOVERFLOW,
        lx::EOPNOTSUPP => libc::EOPNOTSUPP,
        lx::EUCLEAN => CORRUPT,
        // The numbers below 35 agree on every Unix.
        n if n < 35 => n,
        _ => libc::EIO,
    }
}

/// "No such attribute": FreeBSD's extattr calls expect ENOATTR.
#[cfg(target_os = "freebsd")]
const NO_ATTR: i32 = libc::ENOATTR;
/// "Structure needs cleaning": FreeBSD calls it EINTEGRITY.
#[cfg(target_os = "freebsd")]
const CORRUPT: i32 = libc::EINTEGRITY;
#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
const NO_ATTR: i32 = libc::ENOATTR;
#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
const CORRUPT: i32 = libc::EIO;

/// `fuse_attr.rdev` as the Linux kernel decodes it (`new_decode_dev`).
#[cfg(not(target_os = "freebsd"))]
pub fn fuse_rdev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

/// FreeBSD copies `fuse_attr.rdev` into its 64-bit `dev_t` unchanged, so
/// send the low half of its `makedev`. That is exact for majors below 256
/// and minors without bits 8-15 (FreeBSD keeps those above bit 32).
#[cfg(target_os = "freebsd")]
pub fn fuse_rdev(major: u32, minor: u32) -> u32 {
    ((major & 0xff) << 8) | (minor & 0xffff_00ff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn rdev_matches_libc_for_small_numbers() {
        for (ma, mi) in [(1u32, 3u32), (8, 1), (259, 7), (4095, 255), (7, 0xfffff)] {
            let want = libc::makedev(ma, mi);
            // new_encode_dev fits in 32 bits for major < 4096, minor < 2^20.
            let got = fuse_rdev(ma, mi);
            let back = libc::makedev((got >> 8) & 0xfff, (got & 0xff) | ((got >> 12) & 0xfff00));
            assert_eq!(back, want, "{ma}:{mi}");
        }
    }

    #[test]
    fn errno_of_missing_xattr() {
        #[cfg(target_os = "linux")]
        assert_eq!(host_errno(&Error::NoData), libc::ENODATA);
        #[cfg(target_os = "freebsd")]
        assert_eq!(host_errno(&Error::NoData), libc::ENOATTR);
        assert_eq!(host_errno(&Error::NotFound), libc::ENOENT);
        assert_eq!(host_errno(&Error::NameTooLong), libc::ENAMETOOLONG);
    }
}
