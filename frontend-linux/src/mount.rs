//! Getting a `/dev/fuse` connection mounted: mount(2) directly as root,
//! `fusermount3` (the `_FUSE_COMMFD` protocol) otherwise.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::channel::DevFuse;

pub const FSTYPE: &str = "fuse.ext4-fuse";
pub const SUBTYPE: &str = "ext4-fuse";

#[derive(Clone, Debug)]
pub struct MountSpec {
    /// What /proc/mounts shows as the source (fsname= or the SOURCE path).
    pub fsname: String,
    /// Absolute path of the mount point.
    pub mountpoint: PathBuf,
    pub allow_other: bool,
    pub nosuid: bool,
    pub nodev: bool,
    pub noexec: bool,
    pub read_only: bool,
}

impl MountSpec {
    /// The mount `-o` options ask for, under `fsname`; `read_only` when
    /// the volume is (asked for, or found unwritable).
    pub fn new(
        common: &ext4_engine::mount_opts::MountOptions,
        fsname: String,
        mountpoint: PathBuf,
        read_only: bool,
    ) -> MountSpec {
        MountSpec {
            fsname,
            mountpoint,
            allow_other: common.allow_other,
            nosuid: common.nosuid(),
            nodev: common.nodev(),
            noexec: common.noexec(),
            read_only,
        }
    }
}

/// How the mount was made, which decides how to undo it.
#[derive(Clone, Debug)]
pub enum Mounted {
    Kernel(PathBuf),
    Fusermount(PathBuf),
}

impl Mounted {
    pub fn mountpoint(&self) -> &Path {
        match self {
            Mounted::Kernel(p) | Mounted::Fusermount(p) => p,
        }
    }

    /// Detach the mount (lazily, as libfuse does, so a busy mount still goes
    /// away from the namespace and the kernel ends the connection).
    pub fn unmount(&self) -> io::Result<()> {
        match self {
            Mounted::Kernel(p) => {
                nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH).map_err(io::Error::from)
            }
            Mounted::Fusermount(p) => {
                let st = Command::new("fusermount3")
                    .arg("-u")
                    .arg("-q")
                    .arg("-z")
                    .arg("--")
                    .arg(p)
                    .status()?;
                if st.success() {
                    Ok(())
                } else {
                    Err(io::Error::other(format!("fusermount3 -u failed ({st})")))
                }
            }
        }
    }
}

/// Whether `path` is already a mount point (per /proc/self/mountinfo).
pub fn is_mountpoint(path: &Path) -> bool {
    let Ok(info) = std::fs::read("/proc/self/mountinfo") else {
        return false;
    };
    info.split(|&b| b == b'\n').any(|line| {
        line.split(|&b| b == b' ')
            .nth(4)
            .is_some_and(|mp| unescape_mountinfo(mp) == path.as_os_str().as_bytes())
    })
}

/// `path` made absolute, checked to be a directory nothing is mounted on.
pub fn check_mountpoint(path: &Path) -> Result<PathBuf, String> {
    let mp = path.display();
    let abs = std::fs::canonicalize(path)
        .map_err(|e| format!("{mp}: {}", crate::inherited::io_msg(&e)))?;
    if !abs.is_dir() {
        return Err(format!("{mp}: not a directory"));
    }
    if is_mountpoint(&abs) {
        return Err(format!(
            "{mp}: mount point is busy (something is already mounted there)"
        ));
    }
    Ok(abs)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\'
            && i + 3 < s.len()
            && s[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((s[i + 1] - b'0') * 64 + (s[i + 2] - b'0') * 8 + (s[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

fn flags(spec: &MountSpec) -> nix::mount::MsFlags {
    use nix::mount::MsFlags;
    let mut f = MsFlags::empty();
    if spec.read_only {
        f |= MsFlags::MS_RDONLY;
    }
    if spec.nosuid {
        f |= MsFlags::MS_NOSUID;
    }
    if spec.nodev {
        f |= MsFlags::MS_NODEV;
    }
    if spec.noexec {
        f |= MsFlags::MS_NOEXEC;
    }
    f
}

fn explain(spec: &MountSpec, e: nix::Error) -> io::Error {
    let mp = spec.mountpoint.display();
    let msg = match e {
        nix::Error::EBUSY => format!("{mp}: mount point is busy"),
        nix::Error::ENODEV => "the kernel has no FUSE support (try: modprobe fuse)".to_string(),
        nix::Error::EPERM => format!("{mp}: mounting needs root (or fusermount3)"),
        e => format!("{mp}: mount failed: {}", e.desc()),
    };
    io::Error::other(msg)
}

/// Mount a FUSE connection on `spec.mountpoint`.
pub fn mount(spec: &MountSpec) -> io::Result<(DevFuse, Mounted)> {
    if nix::unistd::geteuid().is_root() {
        mount_direct(spec)
    } else {
        mount_fusermount(spec)
    }
}

fn mount_direct(spec: &MountSpec) -> io::Result<(DevFuse, Mounted)> {
    let dev = DevFuse::open().map_err(|e| io::Error::new(e.kind(), format!("/dev/fuse: {e}")))?;
    let mut data = format!(
        "fd={},rootmode=40000,user_id={},group_id={}",
        dev.fd().as_raw_fd(),
        nix::unistd::getuid(),
        nix::unistd::getgid()
    );
    if spec.allow_other {
        data.push_str(",allow_other");
    }
    // Always: the kernel checks permissions (and ACLs, with FUSE_POSIX_ACL)
    // for every caller, whatever the options say.
    data.push_str(",default_permissions");
    nix::mount::mount(
        Some(spec.fsname.as_str()),
        &spec.mountpoint,
        Some(FSTYPE),
        flags(spec),
        Some(data.as_str()),
    )
    .map_err(|e| explain(spec, e))?;
    Ok((dev, Mounted::Kernel(spec.mountpoint.clone())))
}

/// fusermount3 takes `-o` options with commas escaped by backslashes.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace(',', "\\,")
}

fn mount_fusermount(spec: &MountSpec) -> io::Result<(DevFuse, Mounted)> {
    let mut opts = vec![if spec.read_only { "ro" } else { "rw" }.to_string()];
    opts.push(if spec.nosuid { "nosuid" } else { "suid" }.into());
    opts.push(if spec.nodev { "nodev" } else { "dev" }.into());
    opts.push(if spec.noexec { "noexec" } else { "exec" }.into());
    opts.push(format!("fsname={}", escape(&spec.fsname)));
    opts.push(format!("subtype={SUBTYPE}"));
    if spec.allow_other {
        opts.push("allow_other".into());
    }
    opts.push("default_permissions".into());

    let (ours, theirs) = UnixStream::pair()?;
    // fusermount3 inherits its end; the process is still single-threaded
    // here, so clearing close-on-exec cannot leak it into another exec.
    nix::fcntl::fcntl(
        theirs.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )?;
    let mut child = Command::new("fusermount3")
        .arg("-o")
        .arg(opts.join(","))
        .arg("--")
        .arg(&spec.mountpoint)
        .env("_FUSE_COMMFD", theirs.as_raw_fd().to_string())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run fusermount3: {e}")))?;
    drop(theirs);
    let fd = receive_fd(&ours);
    let status = child.wait()?;
    match fd {
        Ok(Some(fd)) => {
            let file = File::from(fd);
            Ok((
                DevFuse::from_file(file),
                Mounted::Fusermount(spec.mountpoint.clone()),
            ))
        }
        // fusermount3 has already said why on stderr.
        _ => Err(io::Error::other(format!(
            "{}: fusermount3 failed ({status})",
            spec.mountpoint.display()
        ))),
    }
}

/// Read the `/dev/fuse` descriptor fusermount3 passes with SCM_RIGHTS.
fn receive_fd(sock: &UnixStream) -> io::Result<Option<OwnedFd>> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor for us.
                return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
    }
    Ok(None)
}

/// `fsname` default: the source path as given, made absolute.
pub fn default_fsname(source: &Path) -> String {
    let abs = std::fs::canonicalize(source).unwrap_or_else(|_| source.to_path_buf());
    String::from_utf8_lossy(OsStr::new(abs.as_os_str()).as_bytes()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_unescape() {
        assert_eq!(unescape_mountinfo(b"/mnt/a\\040b"), b"/mnt/a b");
        assert_eq!(unescape_mountinfo(b"/x\\134y"), b"/x\\y");
        assert_eq!(unescape_mountinfo(b"/trailing\\04"), b"/trailing\\04");
        assert!(is_mountpoint(Path::new("/")));
        assert!(!is_mountpoint(Path::new("/surely/not/mounted")));
    }

    #[test]
    fn escapes_commas() {
        assert_eq!(escape("a,b\\c"), "a\\,b\\\\c");
    }
}
