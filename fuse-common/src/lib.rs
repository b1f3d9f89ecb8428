//! What the two FUSE servers, `ext4-fuse` (Linux) and `ext4-fuse-bsd`
//! (FreeBSD's fusefs, on `fuser`), do the same way at the operating
//! system's edge, written once:
//!
//! - [`nodes`]: FUSE node ids <-> ext4 inode numbers;
//! - [`log`]: where log lines go (stderr while attached, syslog once
//!   detached, or a file named with `-o logfile=`), and the lines for a
//!   failed request and for damage the engine skipped;
//! - [`daemon`]: going to the background once the mount is up;
//! - [`mount`] (Linux): mounting, the busy mount point check, and
//!   unmounting only our own mount; [`watcher`]: no dead mount after the
//!   server ended, however it ended;
//! - [`cli`]: the command-line conventions of every mount program (exit
//!   codes, one-line usage errors);
//! - [`os`]: the OS's words for an error, closing leaked descriptors.
//!
//! What both decide about a request (permissions, open flags, xattr
//! namespaces and sizes, cache timeouts, errnos) is the engine's
//! [`ext4_engine::policy`].

pub mod cli;
pub mod daemon;
pub mod log;
#[cfg(target_os = "linux")]
pub mod mount;
pub mod nodes;
pub mod os;
#[cfg(target_os = "linux")]
pub mod watcher;
