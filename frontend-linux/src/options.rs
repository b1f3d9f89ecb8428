//! Command line and `-o` mount options, in the style of fuse2fs and mount(8),
//! so `ext4-fuse` works from /etc/fstab through `mount.fuse3`.

use std::path::PathBuf;

use clap::Parser;

use crate::iomap_setup::IomapMode;
use crate::session::ReaddirPlus;
use ext4_engine::mount_opts::{number, split_list, MountOptions, OptionError};

#[derive(Parser, Debug)]
#[command(
    name = "ext4-fuse",
    version,
    about = "Mount an ext2/ext3/ext4 filesystem (image file or block device) through FUSE, read-write unless -o ro",
    after_help = "Mount options (-o, comma-separated):\n  \
        ro, rw               read-only, or read-write (the default, as with fuse2fs and\n                       mount(8)); a filesystem with a feature that cannot be\n                       written, or a device without write access, mounts\n                       read-only with a warning\n  \
        sync, dirsync        every change (sync) or every directory change (dirsync)\n                       is on disk before the call returns\n  \
        commit=SECONDS       commit pending changes at least this often (default 5)\n  \
        errors=continue|remount-ro|panic  what a write that finds the filesystem\n                       damaged does (default: the superblock's setting)\n  \
        allow_other          let other users access the mount\n  \
        default_permissions  accepted: permissions (and POSIX ACLs) are always\n                       checked, by the kernel, for every user\n  \
        fsname=NAME          source name shown in /proc/mounts\n  \
        uid=N, gid=N         report every file as owned by this uid / gid\n  \
        cache_size=N[k|m|g]  metadata cache budget (default 32m, at least 64k)\n  \
        name_index_size=N[k|m|g]  memory for name indexes of big directories that\n                       have no hash tree (default 8m; 0: scan them per lookup)\n  \
        threads=N            FUSE worker threads\n  \
        spin=USEC            one worker polls this long for the next request before\n                       sleeping (default 50; 0: never), which spares a client\n                       waiting on it the wake-up of an idle CPU\n  \
        iomap=auto|on|off    let the kernel do file I/O itself (FUSE iomap) when it\n                       offers it (auto, the default); on: fail without it\n  \
        writeback_cache      the kernel gathers writes in its page cache and sends\n                       them later (off by default: measured no faster here)\n  \
        readdirplus=auto|on|off  listings carry each entry's attributes: auto (the\n                       default) lets the kernel choose per listing chunk; on:\n                       always; off: never (a LOOKUP per entry used)\n  \
        user=NAME            user the server switches to once started (default nobody)\n  \
        nosandbox            keep the server's privileges: no user switch, capability\n                       drop or system call filter (for debugging)\n  \
        norecovery           ignore a journal that needs recovery (as the kernel's\n                       norecovery): the filesystem without the journal's newest\n                       changes; forces read-only. Without it the journal is\n                       replayed: onto the image read-write, in memory with ro\n                       (the image unchanged; file data then served without iomap)\n  \
        journal_path=PATH    the external journal device of a filesystem whose journal\n                       is not in an inode (read to replay it)\n  \
        replay_budget=N[k|m|g]  memory for the plan of a journal replayed in memory,\n                       32 bytes per logged block (default 32m)\n  \
        logfile=PATH         append log lines (damage found, failures) to PATH instead\n                       of stderr, or syslog once detached\n  \
        debug                log every request (implies -f)\n  \
        nosuid, nodev, noexec and their opposites, atime options, and fstab-only\n  \
        options (auto, noauto, user, nofail, _netdev, x-*) are accepted too."
)]
struct Cli {
    /// Image file or block device holding the filesystem.
    source: PathBuf,
    /// Directory to mount it on.
    mountpoint: PathBuf,
    /// Mount options.
    #[arg(short = 'o', value_name = "OPTIONS", action = clap::ArgAction::Append)]
    options: Vec<String>,
    /// Stay in the foreground.
    #[arg(short = 'f')]
    foreground: bool,
    /// Debug: log every request; implies -f.
    #[arg(short = 'd')]
    debug: bool,
}

/// Everything the command line says: the options both frontends share
/// (`common`) and the few only this one has.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub source: PathBuf,
    pub mountpoint: PathBuf,
    pub foreground: bool,
    pub common: MountOptions,
    /// FUSE worker threads.
    pub threads: Option<usize>,
    /// `iomap=`: the kernel's iomap data path.
    pub iomap: IomapMode,
    /// `user=`: who the server becomes once started (`None`: nobody).
    pub user: Option<String>,
    /// `nosandbox`: skip the user switch, capability drop and seccomp.
    pub nosandbox: bool,
    /// `spin=`: microseconds a worker polls for the next request before
    /// sleeping (0: never; `None`: [`DEFAULT_SPIN_US`]).
    pub spin_us: Option<u64>,
    /// `readdirplus=`: listings with attributes.
    pub readdirplus: ReaddirPlus,
    /// `writeback_cache`: let the kernel gather writes in its page cache
    /// (`FUSE_WRITEBACK_CACHE`); off by default (see session/config.rs).
    pub writeback_cache: bool,
}

/// Default `spin=`: long enough to cover a client's turnaround between two
/// requests (a random-read loop), short enough that an idle mount costs
/// nothing.
pub const DEFAULT_SPIN_US: u64 = 50;

impl Options {
    pub fn spin_us(&self) -> u64 {
        self.spin_us.unwrap_or(DEFAULT_SPIN_US)
    }
}

impl Options {
    pub fn debug(&self) -> bool {
        self.common.debug
    }
}

/// Parse the command line (`args` without the program name). `Err` carries
/// the one line to print; clap's help/version come back as `Err` too, and
/// [`is_help`] tells them apart.
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Options, clap::Error> {
    let cli = Cli::try_parse_from(std::iter::once("ext4-fuse".to_string()).chain(args))?;
    let mut o = Options {
        source: cli.source,
        mountpoint: cli.mountpoint,
        ..Default::default()
    };
    o.common.debug = cli.debug;
    for list in &cli.options {
        for opt in split_list(list) {
            apply(&mut o, &opt).map_err(|e| {
                clap::Error::raw(clap::error::ErrorKind::InvalidValue, format!("{e}\n"))
            })?;
        }
    }
    o.foreground = cli.foreground || o.common.debug;
    Ok(o)
}

pub fn is_help(e: &clap::Error) -> bool {
    matches!(
        e.kind(),
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
    )
}

fn apply(o: &mut Options, opt: &str) -> Result<(), OptionError> {
    // `user=NAME` before the shared names: there a bare `user` is the
    // fstab flag, accepted and ignored whatever follows it.
    if let Some(name) = opt.strip_prefix("user=") {
        if name.is_empty() {
            return Err(OptionError(
                "mount option user needs a value (user=NAME)".into(),
            ));
        }
        o.user = Some(name.to_string());
        return Ok(());
    }
    let Some((name, value)) = o.common.apply(opt)? else {
        return Ok(());
    };
    match (name, value) {
        ("threads", Some(v)) => {
            let n: usize = number(name, v)?;
            if n == 0 || n > 256 {
                return Err(OptionError(format!(
                    "mount option threads={n}: must be 1..256"
                )));
            }
            o.threads = Some(n);
        }
        ("nosandbox", None) => o.nosandbox = true,
        ("writeback_cache", None) => o.writeback_cache = true,
        ("spin", Some(v)) => {
            let n: u64 = number(name, v)?;
            if n > 10_000 {
                return Err(OptionError(format!(
                    "mount option spin={n}: must be 0..10000 (microseconds)"
                )));
            }
            o.spin_us = Some(n);
        }
        ("iomap", Some(v)) => {
            o.iomap = IomapMode::parse(v).ok_or_else(|| {
                OptionError(format!("mount option iomap={v}: must be auto, on or off"))
            })?;
        }
        ("readdirplus", Some(v)) => {
            o.readdirplus = ReaddirPlus::parse(v).ok_or_else(|| {
                OptionError(format!(
                    "mount option readdirplus={v}: must be auto, on or off"
                ))
            })?;
        }
        ("readdirplus", None) => {
            return Err(OptionError(
                "mount option readdirplus needs a value (readdirplus=auto|on|off)".into(),
            ))
        }
        ("iomap", None) => {
            return Err(OptionError(
                "mount option iomap needs a value (iomap=auto|on|off)".into(),
            ))
        }
        ("threads", None) => {
            return Err(OptionError(
                "mount option threads needs a value (threads=...)".into(),
            ))
        }
        ("spin", None) => {
            return Err(OptionError(
                "mount option spin needs a value (spin=MICROSECONDS)".into(),
            ))
        }
        _ => return Err(OptionError(format!("unknown mount option '{opt}'"))),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Options, String> {
        parse(args.iter().map(|s| s.to_string())).map_err(|e| e.to_string())
    }

    #[test]
    fn command_line() {
        let o = p(&[
            "disk.img",
            "/mnt",
            "-o",
            "ro,allow_other",
            "-o",
            "uid=1000,threads=3",
            "-f",
        ])
        .unwrap();
        assert_eq!(o.source, PathBuf::from("disk.img"));
        assert_eq!(o.mountpoint, PathBuf::from("/mnt"));
        assert!(o.common.allow_other && o.foreground && !o.debug());
        assert_eq!((o.common.uid, o.threads), (Some(1000), Some(3)));
        assert!(o.common.nosuid() && o.common.nodev());

        let o = p(&["a", "b", "-d"]).unwrap();
        assert!(o.debug() && o.foreground);
        let o = p(&["a", "b", "-o", "debug"]).unwrap();
        assert!(o.debug() && o.foreground);

        let o = p(&["a", "b", "-o", "user=daemon,nosandbox,user"]).unwrap();
        assert_eq!((o.user.as_deref(), o.nosandbox), (Some("daemon"), true));
        let o = p(&["a", "b"]).unwrap();
        assert_eq!((o.user, o.nosandbox), (None, false));
    }

    #[test]
    fn errors_are_clear() {
        let e = |a: &[&str]| p(a).unwrap_err();
        assert!(e(&["a", "b", "-o", "errors=maybe"]).contains("errors=continue"));
        assert!(e(&["a", "b", "-o", "frobnicate"]).contains("unknown mount option 'frobnicate'"));
        assert!(e(&["a", "b", "-o", "threads=0"]).contains("1..256"));
        assert!(e(&["a", "b", "-o", "threads"]).contains("needs a value"));
        assert!(e(&["a", "b", "-o", "iomap=maybe"]).contains("auto, on or off"));
        assert!(e(&["a", "b", "-o", "readdirplus=some"]).contains("auto, on or off"));
        assert_eq!(
            p(&["a", "b", "-o", "readdirplus=on"]).unwrap().readdirplus,
            ReaddirPlus::On
        );
        assert!(e(&["a", "b", "-o", "iomap"]).contains("needs a value"));
        assert!(e(&["a", "b", "-o", "spin"]).contains("needs a value"));
        assert!(e(&["a", "b", "-o", "spin=20000"]).contains("0..10000"));
        assert_eq!(p(&["a", "b"]).unwrap().spin_us(), DEFAULT_SPIN_US);
        assert_eq!(p(&["a", "b", "-o", "spin=0"]).unwrap().spin_us(), 0);
        assert_eq!(p(&["a", "b"]).unwrap().iomap, IomapMode::Auto);
        assert_eq!(
            p(&["a", "b", "-o", "iomap=on"]).unwrap().iomap,
            IomapMode::On
        );
        assert_eq!(
            p(&["a", "b", "-o", "iomap=off"]).unwrap().iomap,
            IomapMode::Off
        );
        assert!(e(&["a", "b", "-o", "user="]).contains("needs a value"));
        assert!(e(&["a", "b", "-o", "nosandbox=1"]).contains("unknown"));
        // FreeBSD-only names are not silently accepted here.
        assert!(e(&["a", "b", "-o", "push_symlinks_in"]).contains("unknown"));
        assert!(p(&["a"]).is_err());
    }
}
