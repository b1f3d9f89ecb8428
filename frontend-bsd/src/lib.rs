//! `ext4-fuse-bsd`: a read-only ext4 FUSE server for FreeBSD's fusefs (and
//! Linux), on the `fuser` crate. The binary is a thin wrapper around
//! [`mount_config`] and [`fs::Ext4Fs`]; tests drive `Ext4Fs` directly over
//! a socket standing in for the kernel.

pub mod fs;
pub mod options;
pub mod sys;

use std::path::Path;

use fuser::{Config, MountOption, SessionACL};

use ext4_engine::mount_opts::VfsFlag;

use crate::options::MountOpts;

/// The mount's type is `fuse.ext4-fuse-bsd` unless `subtype=` names another.
pub const SUBTYPE: &str = "ext4-fuse-bsd";

/// The `fuser` session settings for these options. `source` names the
/// mount when no `fsname=` is given.
pub fn mount_config(o: &MountOpts, source: &Path) -> Config {
    let c = &o.common;
    let mut mo = vec![
        MountOption::RO,
        MountOption::FSName(
            c.fsname
                .clone()
                .unwrap_or_else(|| ext4_fuse_common::os::default_fsname(source)),
        ),
        MountOption::Subtype(c.subtype.clone().unwrap_or_else(|| SUBTYPE.into())),
    ];
    // Always, whatever the options say: the kernel checks permissions for
    // every caller (FreeBSD's fusefs honours it too). Without it nothing
    // would: FUSE requests carry no supplementary groups, and a server
    // answering ACCESS alone leaves reads of 0600 files open to anyone
    // allow_other admits.
    mo.push(MountOption::DefaultPermissions);
    if let Some(n) = c.max_read {
        // Both Linux's fuse and FreeBSD's mount_fusefs take max_read=.
        mo.push(MountOption::CUSTOM(format!("max_read={n}")));
    }
    // Set-uid files and device nodes stay inert unless asked for: the image
    // is untrusted (the shared defaults, see `MountOptions::nosuid`).
    if c.nosuid() {
        mo.push(MountOption::NoSuid);
    }
    if c.nodev() {
        mo.push(MountOption::NoDev);
    }
    if !c.nosuid() {
        mo.push(MountOption::Suid);
    }
    if !c.nodev() {
        mo.push(MountOption::Dev);
    }
    for f in &c.vfs_flags {
        mo.push(match f {
            VfsFlag::NoDev => MountOption::NoDev,
            VfsFlag::NoSuid => MountOption::NoSuid,
            VfsFlag::Exec => MountOption::Exec,
            VfsFlag::NoExec => MountOption::NoExec,
            VfsFlag::Atime => MountOption::Atime,
            VfsFlag::NoAtime => MountOption::NoAtime,
        });
    }
    // FreeBSD's kernel does push_symlinks_in and intr itself; on Linux the
    // server prefixes symlinks (see `symlink_prefix`) and requests are
    // always interruptible, and private/neglect_shares have no meaning.
    if cfg!(target_os = "freebsd") {
        if o.push_symlinks_in {
            mo.push(MountOption::CUSTOM("push_symlinks_in".into()));
        }
        if o.intr {
            mo.push(MountOption::CUSTOM("intr".into()));
        }
        for b in &o.bsd_only {
            mo.push(MountOption::CUSTOM(b.clone()));
        }
    }
    let mut cfg = Config::default();
    cfg.mount_options = mo;
    cfg.acl = if c.allow_other() {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    // fuser runs one reader thread except on Linux.
    cfg.n_threads = Some(if cfg!(target_os = "linux") { 2 } else { 1 });
    cfg
}

/// Whether the server itself must prefix absolute symlink targets.
pub fn server_pushes_symlinks(o: &MountOpts) -> bool {
    o.push_symlinks_in && !cfg!(target_os = "freebsd")
}
