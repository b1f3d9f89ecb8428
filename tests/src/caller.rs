//! One filesystem operation run as another caller (uid, gid and
//! supplementary groups), the way a user's process would: in a forked
//! child that drops to those ids and makes the system calls itself. Any
//! mount can be probed this way, the kernel's ext4 and our FUSE servers
//! alike, so their answers compare errno by errno.
//!
//! The child makes only system calls on memory prepared before the fork
//! (no allocation: the parent is a multi-threaded test harness).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Who makes the call. Needs root to become anyone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub name: &'static str,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// What is asked of a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `stat(2)`: the walk to it and its attributes.
    Stat,
    /// `open(O_RDONLY)` and one `read(2)`.
    Read,
    /// `open(O_DIRECTORY)` and `getdents64(2)` to the end; the names.
    List,
    /// `chdir(2)` into it.
    Chdir,
    /// `access(2)` with this mask (`R_OK`, `W_OK`, `X_OK`).
    Access(i32),
    /// `open(2)` with these flags, then close.
    Open(i32),
    /// `readlink(2)`.
    Readlink,
    /// `getxattr(2)` of this name.
    Getxattr(&'static str),
    /// `listxattr(2)`; the names.
    Listxattr,
}

/// What the operation answered: 0 or the errno, and for `List` and
/// `Listxattr` the names (sorted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub errno: i32,
    pub names: Vec<String>,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.errno == 0 {
            f.write_str("ok")?;
        } else {
            f.write_str(&errno_name(self.errno))?;
        }
        // Long listings are summed up; `==` still compares every name.
        match self.names.len() {
            0 => {}
            n @ 13.. => write!(f, " [{n} names]")?,
            _ => write!(f, " [{}]", self.names.join(" "))?,
        }
        Ok(())
    }
}

/// `EACCES`, `EBADMSG`, ... for the errnos the tests meet.
pub fn errno_name(e: i32) -> String {
    let n = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::EACCES => "EACCES",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::EROFS => "EROFS",
        libc::ERANGE => "ERANGE",
        libc::ENODATA => "ENODATA",
        libc::EBADMSG => "EBADMSG",
        libc::EUCLEAN => "EUCLEAN",
        libc::ELOOP => "ELOOP",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        _ => return format!("errno {e}"),
    };
    n.to_string()
}

/// Reply buffer of the child: errno, then names (NUL-separated).
const REPLY: usize = 64 << 10;

/// Run `op` on `path` as `caller`; panics only if the fork or the pipe
/// fails.
pub fn run_as(caller: &Caller, path: &Path, op: Op) -> Outcome {
    let cpath = CString::new(path.as_os_str().as_bytes()).expect("path without NUL");
    let cname = match op {
        Op::Getxattr(n) => Some(CString::new(n).expect("name without NUL")),
        _ => None,
    };
    let groups: Vec<libc::gid_t> = caller.groups.clone();
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let (rd, wr) = (fds[0], fds[1]);
    // SAFETY: the child only makes system calls on memory prepared above
    // and exits with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: see above; every pointer is live and NUL-terminated.
        unsafe {
            libc::close(rd);
            let mut out = [0u8; REPLY];
            let n = child(caller, &groups, &cpath, cname.as_deref(), op, &mut out);
            let mut done = 0;
            while done < n {
                let w = libc::write(wr, out[done..].as_ptr().cast(), n - done);
                if w <= 0 {
                    break;
                }
                done += w as usize;
            }
            libc::_exit(0);
        }
    }
    // SAFETY: the parent's copy of the write end; the read end is ours.
    unsafe { libc::close(wr) };
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: reading into a live local buffer.
        let n = unsafe { libc::read(rd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n as usize]);
    }
    // SAFETY: our own descriptor and child.
    unsafe {
        libc::close(rd);
        let mut st = 0;
        libc::waitpid(pid, &mut st, 0);
    }
    assert!(
        reply.len() >= 4,
        "the probe child died ({op:?} on {path:?})"
    );
    let errno = i32::from_le_bytes(reply[..4].try_into().unwrap());
    let mut names: Vec<String> = reply[4..]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    names.sort();
    Outcome { errno, names }
}

/// The child's side: become the caller, make the call, fill `out` with
/// the errno and names; returns the bytes used.
///
/// # Safety
/// Called only in the forked child, with live NUL-terminated strings.
unsafe fn child(
    caller: &Caller,
    groups: &[libc::gid_t],
    path: &CString,
    name: Option<&std::ffi::CStr>,
    op: Op,
    out: &mut [u8; REPLY],
) -> usize {
    let err = || *libc::__errno_location();
    let put = |out: &mut [u8; REPLY], e: i32| {
        out[..4].copy_from_slice(&e.to_le_bytes());
        4
    };
    if libc::setgroups(groups.len(), groups.as_ptr()) != 0
        || libc::setresgid(caller.gid, caller.gid, caller.gid) != 0
        || libc::setresuid(caller.uid, caller.uid, caller.uid) != 0
    {
        // Not a filesystem answer: the harness could not become the caller.
        return put(out, -1);
    }
    let p = path.as_ptr();
    let mut scratch = [0u8; 8192];
    match op {
        Op::Stat => {
            let mut st: libc::stat = std::mem::zeroed();
            put(
                out,
                if libc::stat(p, &mut st) == 0 {
                    0
                } else {
                    err()
                },
            )
        }
        Op::Read => {
            let fd = libc::open(p, libc::O_RDONLY);
            if fd < 0 {
                return put(out, err());
            }
            let n = libc::read(fd, scratch.as_mut_ptr().cast(), scratch.len());
            let e = if n < 0 { err() } else { 0 };
            libc::close(fd);
            put(out, e)
        }
        Op::List => {
            let fd = libc::open(p, libc::O_RDONLY | libc::O_DIRECTORY);
            if fd < 0 {
                return put(out, err());
            }
            let mut at = 4;
            loop {
                let n = libc::syscall(
                    libc::SYS_getdents64,
                    fd,
                    scratch.as_mut_ptr(),
                    scratch.len(),
                );
                if n < 0 {
                    let e = err();
                    libc::close(fd);
                    put(out, e);
                    return at;
                }
                if n == 0 {
                    break;
                }
                // struct linux_dirent64: ino u64, off i64, reclen u16,
                // type u8, name NUL-terminated.
                let mut off = 0usize;
                while off < n as usize {
                    let reclen = u16::from_ne_bytes([scratch[off + 16], scratch[off + 17]]);
                    let name = &scratch[off + 19..off + reclen as usize];
                    let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                    if at + len < out.len() {
                        out[at..at + len].copy_from_slice(&name[..len]);
                        out[at + len] = 0;
                        at += len + 1;
                    }
                    off += reclen as usize;
                }
            }
            libc::close(fd);
            put(out, 0);
            at
        }
        Op::Chdir => put(out, if libc::chdir(p) == 0 { 0 } else { err() }),
        Op::Access(mask) => put(out, if libc::access(p, mask) == 0 { 0 } else { err() }),
        Op::Open(flags) => {
            let fd = libc::open(p, flags);
            if fd < 0 {
                return put(out, err());
            }
            libc::close(fd);
            put(out, 0)
        }
        Op::Readlink => {
            let n = libc::readlink(p, scratch.as_mut_ptr().cast(), scratch.len());
            put(out, if n < 0 { err() } else { 0 })
        }
        Op::Getxattr(_) => {
            let n = name.map_or(-1, |name| {
                libc::getxattr(p, name.as_ptr(), scratch.as_mut_ptr().cast(), scratch.len())
            });
            put(out, if n < 0 { err() } else { 0 })
        }
        Op::Listxattr => {
            let n = libc::listxattr(p, scratch.as_mut_ptr().cast(), scratch.len());
            if n < 0 {
                return put(out, err());
            }
            let n = n as usize;
            out[4..4 + n].copy_from_slice(&scratch[..n]);
            put(out, 0);
            4 + n
        }
    }
}
