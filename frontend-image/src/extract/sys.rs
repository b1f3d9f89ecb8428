//! Thin wrappers over the system calls extract makes: the `*at` family
//! (everything relative to a directory descriptor), metadata on a
//! descriptor or a name, and the kernel's copies between files.

use super::*;

pub(super) fn cerr() -> io::Error {
    io::Error::last_os_error()
}

pub(super) fn ok_or_errno(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(cerr())
    } else {
        Ok(())
    }
}

pub(super) fn cname(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

// Thin wrappers over the *at system calls. SAFETY (all of them): every
// pointer passed is a NUL-terminated string or a live array owned by the
// caller for the duration of the call, and descriptors are owned by the
// caller.
pub(super) fn openat(
    dir: RawFd,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC, mode) };
    if fd < 0 {
        return Err(cerr());
    }
    // SAFETY: `fd` was just returned by openat and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(super) fn mkdirat(dir: RawFd, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    ok_or_errno(unsafe { libc::mkdirat(dir, name.as_ptr(), mode) })
}

pub(super) fn symlinkat(target: &CStr, dir: RawFd, name: &CStr) -> io::Result<()> {
    ok_or_errno(unsafe { libc::symlinkat(target.as_ptr(), dir, name.as_ptr()) })
}

pub(super) fn mknodat(
    dir: RawFd,
    name: &CStr,
    mode: libc::mode_t,
    dev: libc::dev_t,
) -> io::Result<()> {
    ok_or_errno(unsafe { libc::mknodat(dir, name.as_ptr(), mode, dev) })
}

pub(super) fn unlinkat(dir: RawFd, name: &CStr) -> io::Result<()> {
    ok_or_errno(unsafe { libc::unlinkat(dir, name.as_ptr(), 0) })
}

pub(super) fn linkat(odir: RawFd, oname: &CStr, ndir: RawFd, nname: &CStr) -> io::Result<()> {
    ok_or_errno(unsafe { libc::linkat(odir, oname.as_ptr(), ndir, nname.as_ptr(), 0) })
}

pub(super) fn timespecs(a: &Attr) -> [libc::timespec; 2] {
    let ts = |t: Timestamp| libc::timespec {
        tv_sec: t.sec as libc::time_t,
        tv_nsec: t.nsec.min(999_999_999) as _,
    };
    [ts(a.atime), ts(a.mtime)]
}

/// What metadata calls act on: an open descriptor, or a name in a
/// directory (symlinks and special files, never opened).
#[derive(Clone, Copy)]
pub(super) enum Target<'a> {
    Fd(RawFd),
    At(RawFd, &'a CStr),
}

impl Target<'_> {
    pub(super) fn chown(self, uid: u32, gid: u32) -> io::Result<()> {
        ok_or_errno(match self {
            Target::Fd(fd) => unsafe { libc::fchown(fd, uid, gid) },
            Target::At(d, n) => unsafe {
                libc::fchownat(d, n.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW)
            },
        })
    }
    pub(super) fn chmod(self, mode: u32) -> io::Result<()> {
        ok_or_errno(match self {
            Target::Fd(fd) => unsafe { libc::fchmod(fd, mode as libc::mode_t) },
            Target::At(d, n) => unsafe {
                libc::fchmodat(
                    d,
                    n.as_ptr(),
                    mode as libc::mode_t,
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            },
        })
    }
    pub(super) fn times(self, a: &Attr) -> io::Result<()> {
        let t = timespecs(a);
        ok_or_errno(match self {
            Target::Fd(fd) => unsafe { libc::futimens(fd, t.as_ptr()) },
            Target::At(d, n) => unsafe {
                libc::utimensat(d, n.as_ptr(), t.as_ptr(), libc::AT_SYMLINK_NOFOLLOW)
            },
        })
    }
    pub(super) fn setxattr(self, name: &CStr, value: &[u8]) -> io::Result<()> {
        let v = value.as_ptr() as *const libc::c_void;
        ok_or_errno(match self {
            Target::Fd(fd) => unsafe { libc::fsetxattr(fd, name.as_ptr(), v, value.len(), 0) },
            Target::At(d, n) => {
                // No *at form exists: go through the directory's descriptor
                // in /proc, with the l- variant so `n` itself is not followed.
                let mut p = format!("/proc/self/fd/{d}/").into_bytes();
                p.extend_from_slice(n.to_bytes());
                let p = cname(&p)?;
                unsafe { libc::lsetxattr(p.as_ptr(), name.as_ptr(), v, value.len(), 0) }
            }
        })
    }
}

/// Run `make`; if the name exists, remove it (never a directory) and retry once.
pub(super) fn replace<T>(
    dir: RawFd,
    name: &CStr,
    make: impl Fn() -> io::Result<T>,
) -> io::Result<T> {
    match make() {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            unlinkat(dir, name).map_err(|u| {
                if matches!(u.raw_os_error(), Some(libc::EISDIR) | Some(libc::EPERM)) {
                    io::Error::new(io::ErrorKind::AlreadyExists, "exists as a directory")
                } else {
                    u
                }
            })?;
            make()
        }
        r => r,
    }
}

/// `copy_file_range` from `src` at `off_in` to `dst` at `off_out`.
pub(super) fn copy_file_range(
    src: RawFd,
    off_in: u64,
    dst: RawFd,
    off_out: u64,
    len: usize,
) -> io::Result<usize> {
    let mut i = off_in as libc::loff_t;
    let mut o = off_out as libc::loff_t;
    // SAFETY: both offsets are live locals; the descriptors are the caller's.
    let n = unsafe { libc::copy_file_range(src, &mut i, dst, &mut o, len, 0) };
    if n < 0 {
        Err(cerr())
    } else {
        Ok(n as usize)
    }
}

/// `sendfile` from `src` at `off_in` to `dst` at `off_out` (which it seeks to).
pub(super) fn sendfile(
    src: RawFd,
    off_in: u64,
    dst: RawFd,
    off_out: u64,
    len: usize,
) -> io::Result<usize> {
    // SAFETY: lseek and sendfile take plain values and a live local offset.
    unsafe {
        if libc::lseek(dst, off_out as libc::off_t, libc::SEEK_SET) < 0 {
            return Err(cerr());
        }
        let mut i = off_in as libc::off_t;
        let n = libc::sendfile(dst, src, &mut i, len);
        if n < 0 {
            Err(cerr())
        } else {
            Ok(n as usize)
        }
    }
}

/// Whether an error means "this kind of copy is not possible between these
/// files" (so try the next kind), rather than a failed read or write.
pub(super) fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EXDEV)
            | Some(libc::EINVAL)
            | Some(libc::ENOSYS)
            | Some(libc::EOPNOTSUPP)
            | Some(libc::EBADF)
    )
}
