//! A confined server can no longer unmount (that needs CAP_SYS_ADMIN, or
//! running fusermount3). When it made the mount itself, it leaves that job
//! to a small child forked before confinement, which keeps the privileges,
//! parses nothing and only waits on a pipe:
//!
//! - the server writes [`KEEP`] when the mount already went away (someone
//!   ran umount): the watcher exits without touching anything;
//! - anything else — the server exiting on SIGTERM, or dying on a denied
//!   system call, a crash, SIGKILL — closes the pipe without that byte, and
//!   the watcher detaches the mount, so no dead mount is left behind.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::log;
use crate::mount::Mounted;

/// "The mount is already gone; leave it."
pub const KEEP: u8 = b'k';

/// Fork the watcher. Returns the pipe end the server keeps (close-on-exec).
/// Call while single-threaded.
pub fn spawn(mounted: &Mounted) -> Result<OwnedFd, String> {
    let (r, w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: single-threaded (no workers or signal thread yet), so the
    // child may run arbitrary code.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Parent { .. } => Ok(w),
        nix::unistd::ForkResult::Child => {
            drop(w);
            // Above all the /dev/fuse descriptors: held here, they would
            // keep the connection alive after the server died.
            let keep: Vec<RawFd> = [Some(r.as_raw_fd()), log::sink_fd()]
                .into_iter()
                .flatten()
                .collect();
            crate::inherited::close_stray(&keep);
            let mut b = [0u8; 1];
            let got = loop {
                match nix::unistd::read(r.as_raw_fd(), &mut b) {
                    Err(nix::Error::EINTR) => continue,
                    Ok(1) => break Some(b[0]),
                    _ => break None,
                }
            };
            if got != Some(KEEP) {
                log::debug(format_args!(
                    "the server ended: unmounting {}",
                    mounted.mountpoint().display()
                ));
                match mounted.unmount() {
                    // EINVAL: no longer a mount point; someone unmounted
                    // it just before the server died.
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                    Err(e) => {
                        log::error(format_args!(
                            "unmounting {}: {e}",
                            mounted.mountpoint().display()
                        ));
                        std::process::exit(1);
                    }
                }
            }
            std::process::exit(0);
        }
    }
}

/// Tell the watcher to leave the mount alone (it is already gone).
pub fn keep(w: &OwnedFd) {
    let _ = nix::unistd::write(w, &[KEEP]);
}
