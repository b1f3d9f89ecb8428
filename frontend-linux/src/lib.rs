//! `ext4-fuse`: the Linux FUSE frontend of the ext4 engine. It speaks the
//! FUSE wire protocol itself (no FUSE crate knows the iomap opcodes it will
//! need), over an injectable [`channel::Channel`] so tests can play the
//! kernel over a socket pair.

pub mod abi;
pub mod backend;
pub mod channel;
pub mod inherited;
pub mod iomap_setup;
pub mod loopdev;
pub mod options;
pub mod sandbox;
pub mod session;
pub mod uring;

/// Log lines (stderr, syslog once detached, or `-o logfile=`), shared with
/// `ext4-fuse-bsd`.
pub use ext4_fuse_common::log;

/// Mounting and unmounting only our own mount, and the watcher that
/// leaves no dead mount: shared with `ext4-fuse-bsd`.
pub use ext4_fuse_common::{mount, watcher};

/// The mount's type is `fuse.ext4-fuse` unless `subtype=` names another.
pub const SUBTYPE: &str = "ext4-fuse";
