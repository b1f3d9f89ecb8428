//! No dead mount behind a server that ended. When a server makes its
//! mount itself, a small child forked just before mounting (so that no
//! moment is left when a killed server would leave the mount) keeps the
//! right to unmount (a confined `ext4-fuse` loses it), parses nothing and only
//! waits on a pipe:
//!
//! - the server writes [`KEEP`] when the mount already went away (someone
//!   ran umount): the watcher exits without touching anything;
//! - anything else — the server exiting on SIGTERM, or dying on a denied
//!   system call, a crash, SIGKILL — closes the pipe without that byte,
//!   and the watcher unmounts, if the mount on top of the mount point is
//!   still ours (see [`Mounted::unmount`]): no "Transport endpoint is not
//!   connected" mount is left, and no one else's mount is touched.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::log;
use crate::mount::{Mounted, Whereabouts};

/// "The mount is already gone; leave it."
pub const KEEP: u8 = b'k';

/// The server's end of the pipe to its watcher.
pub struct Watcher(OwnedFd);

/// Fork the watcher of the mount about to be made
/// ([`Mounted::expected`]). It closes every descriptor but its pipe and
/// the log's: a `/dev/fuse` descriptor held by the watcher would keep the
/// connection alive after the server died. Call while single-threaded.
pub fn spawn(mounted: &Mounted) -> Result<Watcher, String> {
    let (r, w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: single-threaded (no workers or signal thread yet), so the
    // child may run arbitrary code.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Parent { .. } => Ok(Watcher(w)),
        nix::unistd::ForkResult::Child => {
            drop(w);
            let keep: Vec<RawFd> = [Some(r.as_raw_fd()), log::sink_fd()]
                .into_iter()
                .flatten()
                .collect();
            crate::os::close_stray(&keep);
            // Not the server's signals: a Ctrl-C for the server must not
            // end the one process that cleans up after it.
            // SAFETY: plain syscall.
            unsafe { libc::setsid() };
            let mut b = [0u8; 1];
            let got = loop {
                match nix::unistd::read(r.as_raw_fd(), &mut b) {
                    Err(nix::Error::EINTR) => continue,
                    Ok(1) => break Some(b[0]),
                    _ => break None,
                }
            };
            if got != Some(KEEP) && mounted.whereabouts() != Whereabouts::Gone {
                log::debug(format_args!(
                    "the server ended: unmounting {}",
                    mounted.mountpoint().display()
                ));
                if let Err(e) = mounted.unmount() {
                    log::error(format_args!(
                        "unmounting {}: {e}",
                        mounted.mountpoint().display()
                    ));
                    std::process::exit(1);
                }
            }
            std::process::exit(0);
        }
    }
}

impl Watcher {
    /// Tell the watcher to leave the mount alone (it is already gone).
    pub fn keep(&self) {
        let _ = nix::unistd::write(&self.0, &[KEEP]);
    }
}
