//! What the two FUSE servers, `ext4-fuse` (Linux) and `ext4-fuse-bsd`
//! (FreeBSD's fusefs, on `fuser`), do the same way at the operating
//! system's edge, written once:
//!
//! - [`nodes`]: FUSE node ids <-> ext4 inode numbers;
//! - [`log`]: where log lines go (stderr while attached, syslog once
//!   detached, or a file named with `-o logfile=`), and the lines for a
//!   failed request and for damage the engine skipped;
//! - [`daemon`]: going to the background once the mount is up;
//! - [`fs`]: the volume as a server serves it — the kernel's references
//!   to nodes, durability options, and every write request through the
//!   engine's request policy.
//!
//! What both decide about a request (permissions, open flags, xattr
//! namespaces and sizes, cache timeouts, errnos) is the engine's
//! [`ext4_engine::policy`].

pub mod daemon;
pub mod fs;
pub mod log;
pub mod nodes;
