//! The few things that differ between FreeBSD and Linux: how big a disk
//! device is, errno numbering, and how a device number is packed into the
//! 32-bit `rdev` of a FUSE attribute.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use ext4_engine::mount_opts::MountOptions;
use ext4_engine::FileDevice;
use ext4_engine::IoError;
use ext4_engine::{policy, BlockDevice, Error};
use ext4_fuse_common::os::{check_source, io_msg};

/// The device the server reads: a file or disk, with reads widened to
/// whole sectors where the OS demands it.
pub type Device = Aligned<FileDevice>;

/// Open an image file or a disk device: read-write unless `read_only`,
/// falling back to read-only where writing is not allowed (a
/// write-protected disk, a read-only file or file system), as mount(8)
/// does for write-protected media. `Err` is what is wrong, in the OS's
/// words.
pub fn open_device(path: &Path, read_only: bool) -> Result<Device, String> {
    let msg = |e: io::Error| io_msg(&e);
    let (file, read_only) = open_file(path, read_only).map_err(msg)?;
    check_source(&file)?;
    let ft = file.metadata().map_err(msg)?.file_type();
    if ft.is_block_device() || ft.is_char_device() {
        let size = disk_size(&file).map_err(msg)?;
        let sector = sector_size(&file).map_err(msg)?;
        return Ok(Aligned::new(
            FileDevice::with_size(file, size, read_only),
            sector,
        ));
    }
    Ok(Aligned::new(
        FileDevice::from_file(file, read_only).map_err(msg)?,
        1,
    ))
}

fn open_file(path: &Path, read_only: bool) -> io::Result<(File, bool)> {
    if !read_only {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
        {
            Ok(f) => return Ok((f, false)),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EACCES | libc::EROFS | libc::EPERM)
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok((File::open(path)?, true))
}

/// The device the filesystem is on: all of `path`, or the part `offset=`
/// or `partition=` name; read-write unless `ro` (or not writable).
pub fn open_source(path: &Path, common: &MountOptions) -> Result<Device, String> {
    let dev = open_device(path, common.read_only)?;
    match common.locate(&dev)? {
        Some((start, len)) => Ok(Aligned {
            inner: dev.inner.window(start, len).map_err(|e| io_msg(&e))?,
            sector: dev.sector,
        }),
        None => Ok(dev),
    }
}

/// Whether a reading file was opened with `O_NOATIME` (Linux only), which
/// leaves the atime alone.
pub fn no_atime(host: i32) -> bool {
    #[cfg(target_os = "linux")]
    return host & libc::O_NOATIME != 0;
    #[cfg(not(target_os = "linux"))]
    return {
        let _ = host;
        false
    };
}

/// `open(2)` flags in Linux numbering (the engine's policy speaks it).
pub fn linux_open_flags(host: i32) -> u32 {
    let h = host as u32;
    let mut f = h & libc::O_ACCMODE as u32;
    for (host, linux) in [(libc::O_TRUNC, 0o1000), (libc::O_APPEND, 0o2000)] {
        if h & host as u32 != 0 {
            f |= linux;
        }
    }
    f
}

/// Reads widened to whole `sector`s: FreeBSD's disk devices have no
/// buffer cache under them and refuse unaligned offsets or lengths, while
/// the engine reads file data at any byte.
pub struct Aligned<D> {
    inner: D,
    sector: u64,
}

impl<D: BlockDevice> Aligned<D> {
    pub fn new(inner: D, sector: u64) -> Self {
        Aligned {
            inner,
            sector: sector.max(1),
        }
    }
}

impl<D: BlockDevice> BlockDevice for Aligned<D> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let s = self.sector;
        let len = buf.len() as u64;
        if s == 1 || (offset.is_multiple_of(s) && len.is_multiple_of(s)) {
            return self.inner.read_at(offset, buf);
        }
        let start = offset - offset % s;
        let end = offset.checked_add(len).ok_or(IoError::EIO)?;
        // A device's size is whole sectors; an image file's need not be.
        let wide_end = end
            .div_ceil(s)
            .saturating_mul(s)
            .min(self.inner.size().max(end));
        let mut tmp = vec![0u8; usize::try_from(wide_end - start).map_err(|_| IoError::EIO)?];
        self.inner.read_at(start, &mut tmp)?;
        let at = (offset - start) as usize;
        buf.copy_from_slice(&tmp[at..at + buf.len()]);
        Ok(())
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        let s = self.sector;
        let len = buf.len() as u64;
        if s == 1 || (offset.is_multiple_of(s) && len.is_multiple_of(s)) {
            return self.inner.write_at(offset, buf);
        }
        // Read the whole sectors around it, change, write them back.
        let start = offset - offset % s;
        let end = offset.checked_add(len).ok_or(IoError::EIO)?;
        let wide_end = end.div_ceil(s).saturating_mul(s);
        let mut tmp = vec![0u8; usize::try_from(wide_end - start).map_err(|_| IoError::EIO)?];
        self.inner.read_at(start, &mut tmp)?;
        let at = (offset - start) as usize;
        tmp[at..at + buf.len()].copy_from_slice(buf);
        self.inner.write_at(start, &tmp)
    }
    fn flush(&self) -> Result<(), IoError> {
        self.inner.flush()
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_only(&self) -> bool {
        self.inner.read_only()
    }
}

#[cfg(target_os = "freebsd")]
fn sector_size(file: &File) -> io::Result<u64> {
    use std::os::fd::AsRawFd;
    // _IOR('d', 128, u_int)
    const DIOCGSECTORSIZE: libc::c_ulong = 0x4004_6480;
    let mut size: libc::c_uint = 0;
    // SAFETY: the ioctl writes one u_int into `size`, which outlives the call.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), DIOCGSECTORSIZE, &mut size) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::from(size))
}

/// Linux block devices sit on the page cache: any alignment reads.
#[cfg(not(target_os = "freebsd"))]
fn sector_size(_file: &File) -> io::Result<u64> {
    Ok(1)
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

/// The errno `request` answers the kernel with for `e` (the engine's
/// policy), in this host's numbering. The engine speaks Linux numbers;
/// device errors already carry the host's.
pub fn host_errno(request: policy::Request, e: &Error) -> i32 {
    match e {
        Error::Io(io) => io.errno,
        _ => from_linux_errno(policy::errno_for(request, e)),
    }
}

#[cfg(target_os = "linux")]
pub fn from_linux_errno(n: i32) -> i32 {
    n
}

#[cfg(not(target_os = "linux"))]
pub fn from_linux_errno(n: i32) -> i32 {
    use ext4_engine::errno as lx;
    match n {
        lx::ENAMETOOLONG => libc::ENAMETOOLONG,
        lx::ENOSYS => libc::ENOSYS,
        lx::ENOTEMPTY => libc::ENOTEMPTY,
        lx::ELOOP => libc::ELOOP,
        lx::ENODATA => NO_ATTR,
        lx::EOVERFLOW => libc::EOVERFLOW,
        lx::EOPNOTSUPP => libc::EOPNOTSUPP,
        lx::EUCLEAN => CORRUPT,
        lx::EBADMSG => libc::EBADMSG,
        lx::ESTALE => libc::ESTALE,
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

/// (major, minor) of the `rdev` of a `MKNOD` (Linux's `new_decode_dev`).
#[cfg(not(target_os = "freebsd"))]
pub fn rdev_parts(dev: u32) -> (u32, u32) {
    ext4_fuse_common::os::linux_decode_dev(dev)
}

/// (major, minor) of the `rdev` of a `MKNOD`: the low half of FreeBSD's
/// `makedev` (see [`fuse_rdev`]).
#[cfg(target_os = "freebsd")]
pub fn rdev_parts(dev: u32) -> (u32, u32) {
    ((dev >> 8) & 0xff, dev & 0xffff_00ff)
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
    use ext4_engine::MemDevice;

    /// Fails any read that is not whole 512-byte sectors, as FreeBSD disks do.
    struct Strict(MemDevice);

    impl BlockDevice for Strict {
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
            if !offset.is_multiple_of(512) || !buf.len().is_multiple_of(512) {
                return Err(IoError {
                    errno: libc::EINVAL,
                });
            }
            self.0.read_at(offset, buf)
        }
        fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
            self.0.write_at(offset, buf)
        }
        fn flush(&self) -> Result<(), IoError> {
            Ok(())
        }
        fn size(&self) -> u64 {
            self.0.size()
        }
        fn read_only(&self) -> bool {
            true
        }
    }

    #[test]
    fn aligned_reads_any_byte_range() {
        let data: Vec<u8> = (0..8192u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let dev = Aligned::new(Strict(MemDevice::from_vec(data.clone())), 512);
        let mut b = [0u8; 1];
        assert!(Strict(MemDevice::from_vec(data.clone()))
            .read_at(3, &mut b)
            .is_err());
        for (off, len) in [
            (0, 1),
            (3, 100),
            (511, 2),
            (1000, 3000),
            (8191, 1),
            (0, 8192),
            (4096, 512),
        ] {
            let mut buf = vec![0u8; len];
            dev.read_at(off as u64, &mut buf).unwrap();
            assert_eq!(buf, &data[off..off + len], "{off}+{len}");
        }
        let mut buf = vec![0u8; 2];
        assert!(dev.read_at(8191, &mut buf).is_err(), "past the end");
    }

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
        let other = policy::Request::Other;
        #[cfg(target_os = "linux")]
        assert_eq!(host_errno(other, &Error::NoData), libc::ENODATA);
        #[cfg(target_os = "freebsd")]
        assert_eq!(host_errno(other, &Error::NoData), libc::ENOATTR);
        assert_eq!(host_errno(other, &Error::NotFound), libc::ENOENT);
        assert_eq!(host_errno(other, &Error::NameTooLong), libc::ENAMETOOLONG);
    }
}
