//! Getting a `/dev/fuse` connection mounted on Linux — mount(2) directly
//! as root, `fusermount3` (the `_FUSE_COMMFD` protocol) otherwise — and
//! taking it down again without ever touching a mount that is not ours.
//!
//! A mount is recognised as ours by /proc/self/mountinfo: a mount on the
//! mount point, of our type (`fuse.SUBTYPE`), that was not there before
//! we mounted (its id is not among those noted then). Unmounting checks
//! that the mount on top of the mount point is ours: if it went away
//! already, or something was mounted over it since (a tmpfs on top of
//! ours), it is left alone, so unmounting by path never hits someone
//! else's mount. Noting what was there *before* lets a watcher forked
//! before mount(2) recognise the mount however early the server dies.

use std::fs::File;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use ext4_engine::mount_opts::MountOptions;

use crate::os::io_msg;

/// What a server asks of the mount.
#[derive(Clone, Debug)]
pub struct MountSpec {
    /// What /proc/mounts shows as the source (fsname= or the SOURCE path).
    pub fsname: String,
    /// The filesystem type is `fuse.SUBTYPE`.
    pub subtype: String,
    /// Absolute path of the mount point.
    pub mountpoint: PathBuf,
    pub allow_other: bool,
    pub nosuid: bool,
    pub nodev: bool,
    pub noexec: bool,
    pub noatime: bool,
    pub max_read: Option<u32>,
    pub read_only: bool,
    /// `fuseblk` on this block device, of this block size (root only):
    /// the kernel then sends `DESTROY` at unmount and `umount` returns
    /// once it is answered, after the volume is closed.
    pub blkdev: Option<(PathBuf, u32)>,
}

impl MountSpec {
    /// The mount `-o` options ask for, under `fsname`; `subtype` unless
    /// `subtype=` names another; `read_only` when the volume is (asked
    /// for, or found unwritable).
    pub fn new(
        common: &MountOptions,
        fsname: String,
        mountpoint: PathBuf,
        subtype: &str,
        read_only: bool,
    ) -> MountSpec {
        MountSpec {
            fsname,
            subtype: common.subtype.clone().unwrap_or_else(|| subtype.into()),
            mountpoint,
            allow_other: common.allow_other(),
            nosuid: common.nosuid(),
            nodev: common.nodev(),
            noexec: common.noexec(),
            noatime: common.noatime(),
            max_read: common.max_read,
            read_only,
            blkdev: None,
        }
    }

    /// `fuse.SUBTYPE`, or `fuseblk.SUBTYPE` on a block device.
    pub fn fstype(&self) -> String {
        let kind = if self.blkdev.is_some() {
            "fuseblk"
        } else {
            "fuse"
        };
        format!("{kind}.{}", self.subtype)
    }
}

/// How the mount is made (which decides how to undo it), and how to
/// recognise it.
#[derive(Clone, Debug)]
pub struct Mounted {
    mountpoint: PathBuf,
    fstype: String,
    by_fusermount: bool,
    /// Ids of the mounts on the mount point before ours.
    before: Vec<u64>,
}

/// What became of a mount we made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whereabouts {
    /// On top of its mount point: ours to unmount.
    OnTop,
    /// Still mounted, but something else was mounted over it.
    Covered,
    /// Not mounted any more.
    Gone,
}

impl Mounted {
    /// The mount `spec` is about to make (call before [`mount`]).
    pub fn expected(spec: &MountSpec) -> Mounted {
        Mounted {
            mountpoint: spec.mountpoint.clone(),
            fstype: spec.fstype(),
            by_fusermount: !nix::unistd::geteuid().is_root(),
            before: mounts_at(&spec.mountpoint)
                .into_iter()
                .map(|(id, _)| id)
                .collect(),
        }
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    pub fn whereabouts(&self) -> Whereabouts {
        let stack = mounts_at(&self.mountpoint);
        let ours =
            |(id, fstype): &(u64, String)| !self.before.contains(id) && *fstype == self.fstype;
        match stack.last() {
            Some(top) if ours(top) => Whereabouts::OnTop,
            _ if stack.iter().any(ours) => Whereabouts::Covered,
            _ => Whereabouts::Gone,
        }
    }

    /// Detach the mount (lazily, as libfuse does, so a busy mount still goes
    /// away from the namespace and the kernel ends the connection) if it is
    /// still on top of its mount point. A mount already gone is `Ok`; one
    /// covered by another mount is left in place (unmounting by path would
    /// take the other one) and is an error saying so.
    pub fn unmount(&self) -> io::Result<()> {
        match self.whereabouts() {
            Whereabouts::Gone => return Ok(()),
            Whereabouts::Covered => {
                return Err(io::Error::other(format!(
                    "{}: another filesystem is mounted over ours; leaving both in place",
                    self.mountpoint.display()
                )))
            }
            Whereabouts::OnTop => {}
        }
        let p = &self.mountpoint;
        if !self.by_fusermount {
            return match nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH) {
                // Gone between the check and the call.
                Err(nix::Error::EINVAL) => Ok(()),
                r => r.map_err(io::Error::from),
            };
        }
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

/// The ids and types of the mounts stacked on `path`, bottom first (per
/// /proc/self/mountinfo: a mount over another one has it as parent).
fn mounts_at(path: &Path) -> Vec<(u64, String)> {
    let Ok(info) = std::fs::read("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let want = path.as_os_str().as_bytes();
    // (id, parent, type) of every mount on `path`; the type follows the
    // " - " that ends the optional fields.
    let here: Vec<(u64, u64, String)> = info
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let mut f = line.split(|&b| b == b' ');
            let id = std::str::from_utf8(f.next()?).ok()?.parse().ok()?;
            let parent = std::str::from_utf8(f.next()?).ok()?.parse().ok()?;
            let mp = f.nth(2)?;
            let fstype = f.skip_while(|&x| x != b"-").nth(1)?;
            (unescape_mountinfo(mp) == want)
                .then(|| (id, parent, String::from_utf8_lossy(fstype).into_owned()))
        })
        .collect();
    // Bottom: the one whose parent is not on `path`; then each one's child.
    let mut stack: Vec<(u64, String)> = Vec::new();
    let mut cur = here
        .iter()
        .find(|(_, p, _)| !here.iter().any(|(i, _, _)| i == p));
    while let Some((id, _, fstype)) = cur {
        if stack.iter().any(|(i, _)| i == id) || stack.len() > here.len() {
            break;
        }
        stack.push((*id, fstype.clone()));
        cur = here.iter().find(|(_, p, _)| p == id);
    }
    stack
}

/// Whether `path` is already a mount point (per /proc/self/mountinfo).
pub fn is_mountpoint(path: &Path) -> bool {
    !mounts_at(path).is_empty()
}

/// `path` made absolute, checked to be a directory nothing is mounted on.
pub fn check_mountpoint(path: &Path) -> Result<PathBuf, String> {
    let mp = path.display();
    let abs = std::fs::canonicalize(path).map_err(|e| format!("{mp}: {}", io_msg(&e)))?;
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
    let mut f = if spec.read_only {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    for (on, flag) in [
        (spec.nosuid, MsFlags::MS_NOSUID),
        (spec.nodev, MsFlags::MS_NODEV),
        (spec.noexec, MsFlags::MS_NOEXEC),
        (spec.noatime, MsFlags::MS_NOATIME),
    ] {
        if on {
            f |= flag;
        }
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

/// Mount a FUSE connection on `spec.mountpoint`: the `/dev/fuse`
/// descriptor to serve, and the mount.
pub fn mount(spec: &MountSpec) -> io::Result<(File, Mounted)> {
    let mounted = Mounted::expected(spec);
    let file = if mounted.by_fusermount {
        if spec.blkdev.is_some() {
            return Err(io::Error::other(
                "a fuseblk mount (-o blkdev) needs root: mount(2) on a block device",
            ));
        }
        mount_fusermount(spec)?
    } else {
        mount_direct(spec)?
    };
    Ok((file, mounted))
}

fn mount_direct(spec: &MountSpec) -> io::Result<File> {
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/fuse")
        .map_err(|e| io::Error::new(e.kind(), format!("/dev/fuse: {}", io_msg(&e))))?;
    let mut data = format!(
        "fd={},rootmode=40000,user_id={},group_id={}",
        dev.as_raw_fd(),
        nix::unistd::getuid(),
        nix::unistd::getgid()
    );
    if spec.allow_other {
        data.push_str(",allow_other");
    }
    if let Some(n) = spec.max_read {
        data.push_str(&format!(",max_read={n}"));
    }
    // Always: the kernel checks permissions (and ACLs, with FUSE_POSIX_ACL)
    // for every caller, whatever the options say.
    data.push_str(",default_permissions");
    // fuseblk's source is the device the kernel claims.
    let source = match &spec.blkdev {
        Some((dev, size)) => {
            data.push_str(&format!(",blksize={size}"));
            dev.to_string_lossy().into_owned()
        }
        None => spec.fsname.clone(),
    };
    nix::mount::mount(
        Some(source.as_str()),
        &spec.mountpoint,
        Some(spec.fstype().as_str()),
        flags(spec),
        Some(data.as_str()),
    )
    .map_err(|e| explain(spec, e))?;
    Ok(dev)
}

/// fusermount3 takes `-o` options with commas escaped by backslashes.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace(',', "\\,")
}

fn mount_fusermount(spec: &MountSpec) -> io::Result<File> {
    let mut opts = vec![if spec.read_only { "ro" } else { "rw" }.to_string()];
    opts.push(if spec.nosuid { "nosuid" } else { "suid" }.into());
    opts.push(if spec.nodev { "nodev" } else { "dev" }.into());
    opts.push(if spec.noexec { "noexec" } else { "exec" }.into());
    if spec.noatime {
        opts.push("noatime".into());
    }
    opts.push(format!("fsname={}", escape(&spec.fsname)));
    opts.push(format!("subtype={}", escape(&spec.subtype)));
    if spec.allow_other {
        opts.push("allow_other".into());
    }
    if let Some(n) = spec.max_read {
        opts.push(format!("max_read={n}"));
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
        Ok(Some(fd)) => Ok(File::from(fd)),
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
