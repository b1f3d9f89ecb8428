//! Descriptors handed over by a privileged mount helper (`ext4-fuse-mount`,
//! or anything following libfuse's convention): `ext4-fuse /dev/fd/M
//! /dev/fd/N` serves the already-open image or device M on the
//! already-mounted `/dev/fuse` descriptor N, and never opens a path itself.
//!
//! Also the one way both modes open a volume, so the helper's early check
//! and the server agree on what is an acceptable source.

use std::fs::File;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use ext4_engine::mount_opts::MountOptions;
use ext4_engine::{BlockDevice, FileDevice, Volume};
use nix::sys::stat::{fstat, major, minor, SFlag};

use crate::channel::DevFuse;
use crate::log;

/// /dev/fuse is the misc character device 10:229 on every Linux.
pub const FUSE_MAJOR: u64 = 10;
pub const FUSE_MINOR: u64 = 229;

/// The descriptor number in `/dev/fd/N`, if `path` is spelled that way.
pub fn fd_number(path: &Path) -> Option<RawFd> {
    let s = path.to_str()?;
    let n = s.strip_prefix("/dev/fd/")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || n.len() > 9 {
        return None;
    }
    n.parse().ok()
}

/// Take ownership of inherited descriptor `fd`, checking it is open, and
/// mark it close-on-exec (the server runs no programs; a helper it might
/// start must not inherit the image).
pub fn take(fd: RawFd, what: &str) -> Result<OwnedFd, String> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    // 0..2 are stdio: a "/dev/fd/1" mountpoint is a mistake, not a handover.
    if fd < 3 {
        return Err(format!(
            "/dev/fd/{fd}: {what} cannot be standard input, output or error"
        ));
    }
    fcntl(fd, FcntlArg::F_GETFD).map_err(|e| format!("/dev/fd/{fd}: {what}: {}", e.desc()))?;
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map_err(|e| format!("/dev/fd/{fd}: {}", e.desc()))?;
    // SAFETY: the descriptor is open (F_GETFD succeeded), was handed to this
    // process for exactly this use, and nothing else in it owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub use ext4_fuse_common::os::{close_stray, io_msg};

/// Whether `fd` is a `/dev/fuse` descriptor (a character device 10:229).
pub fn check_fuse(fd: BorrowedFd<'_>, name: &str) -> Result<(), String> {
    let st = fstat(fd.as_raw_fd()).map_err(|e| format!("{name}: {}", e.desc()))?;
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    let (maj, min) = (major(st.st_rdev), minor(st.st_rdev));
    if kind != SFlag::S_IFCHR || (maj, min) != (FUSE_MAJOR, FUSE_MINOR) {
        let what = match kind {
            SFlag::S_IFCHR => format!("a character device {maj}:{min}"),
            SFlag::S_IFBLK => "a block device".to_string(),
            SFlag::S_IFDIR => "a directory".to_string(),
            SFlag::S_IFREG => "a regular file".to_string(),
            SFlag::S_IFIFO => "a pipe".to_string(),
            SFlag::S_IFSOCK => "a socket".to_string(),
            _ => "something else".to_string(),
        };
        return Err(format!(
            "{name}: not a FUSE device ({what}; expected /dev/fuse, {FUSE_MAJOR}:{FUSE_MINOR}, already mounted)"
        ));
    }
    Ok(())
}

/// Open the volume on an already-open image or device; `name` prefixes
/// every message. Applies the journal policy and logs engine warnings.
pub fn open_volume(
    file: File,
    name: &str,
    common: &MountOptions,
) -> Result<Volume<FileDevice>, String> {
    ext4_fuse_common::os::check_source(&file).map_err(|e| format!("{name}: {e}"))?;
    let dev = FileDevice::from_file(file, true).map_err(|e| format!("{name}: {}", io_msg(&e)))?;
    let dev = match common.locate(&dev).map_err(|e| format!("{name}: {e}"))? {
        Some((start, len)) => dev
            .window(start, len)
            .map_err(|e| format!("{name}: {}", io_msg(&e)))?,
        None => dev,
    };
    let volume = common
        .open_volume(dev, journal_device)
        .map_err(|e| format!("{name}: {e}"))?;
    for w in volume.warnings() {
        log::error(format_args!("{name}: warning: {w}"));
    }
    Ok(volume)
}

/// The external journal device of `journal_path=`, read-only (it is only
/// read, to replay it in memory).
fn journal_device(path: &str) -> Result<Box<dyn BlockDevice>, String> {
    let dev = FileDevice::open(Path::new(path), true).map_err(|e| io_msg(&e))?;
    Ok(Box::new(dev))
}

/// The already-mounted `/dev/fuse` descriptor `/dev/fd/N`, checked.
pub fn fuse_fd(n: RawFd) -> Result<DevFuse, String> {
    let fd = take(n, "the mount point descriptor")?;
    check_fuse(fd.as_fd(), &format!("/dev/fd/{n}"))?;
    Ok(DevFuse::from_file(File::from(fd)))
}

/// The volume on the already-open image or device `/dev/fd/M`.
pub fn source_fd(m: RawFd, common: &MountOptions) -> Result<Volume<FileDevice>, String> {
    let fd = take(m, "the source descriptor")?;
    let name = common
        .fsname
        .clone()
        .unwrap_or_else(|| format!("/dev/fd/{m}"));
    open_volume(File::from(fd), &name, common)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_paths() {
        assert_eq!(fd_number(Path::new("/dev/fd/3")), Some(3));
        assert_eq!(fd_number(Path::new("/dev/fd/123")), Some(123));
        assert_eq!(fd_number(Path::new("/dev/fd/")), None);
        assert_eq!(fd_number(Path::new("/dev/fd/3a")), None);
        assert_eq!(fd_number(Path::new("/dev/fd/-1")), None);
        assert_eq!(fd_number(Path::new("/dev/fd/99999999999")), None);
        assert_eq!(fd_number(Path::new("/mnt/x")), None);
    }

    #[test]
    fn fuse_check_refuses_other_devices() {
        let null = File::open("/dev/null").unwrap();
        let e = check_fuse(null.as_fd(), "/dev/fd/9").unwrap_err();
        assert!(
            e.contains("not a FUSE device (a character device 1:3"),
            "{e}"
        );
        let dir = File::open("/").unwrap();
        assert!(check_fuse(dir.as_fd(), "x")
            .unwrap_err()
            .contains("a directory"));
        if let Ok(f) = File::open("/dev/fuse") {
            check_fuse(f.as_fd(), "/dev/fuse").unwrap();
        }
    }
}
