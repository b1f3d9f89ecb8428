//! Command line and `-o` mount options, in the style of fuse2fs and mount(8),
//! so `ext4-fuse` works from /etc/fstab through `mount.fuse3`.

use std::path::PathBuf;

use clap::Parser;

use crate::iomap_setup::IomapMode;
use crate::session::ReaddirPlus;
use crate::uring::UringMode;
use ext4_engine::mount_opts::{number, split_list, MountOptions, OptionError};

/// A mount option taking `auto`, `on` or `off` (`iomap=`, `uring=`,
/// `readdirplus=`; `1`/`yes` and `0`/`no` too): `auto` lets the kernel's
/// offer decide.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AutoOnOff {
    #[default]
    Auto,
    On,
    Off,
}

impl AutoOnOff {
    pub fn parse(v: &str) -> Option<AutoOnOff> {
        match v {
            "auto" => Some(AutoOnOff::Auto),
            "on" | "1" | "yes" => Some(AutoOnOff::On),
            "off" | "0" | "no" => Some(AutoOnOff::Off),
            _ => None,
        }
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "ext4-fuse",
    version,
    about = "Mount an ext2/ext3/ext4 filesystem (image file or block device) through FUSE, read-write unless -o ro",
    after_help = "  threads=N            FUSE worker threads (default: 2 per CPU, 4..16); with\n                       FUSE over io_uring spread over the CPUs' queues\n  \
        spin=USEC            one worker polls this long for the next request before\n                       sleeping (default 50; 0: never), which spares a client\n                       waiting on it the wake-up of an idle CPU\n  \
        iomap=auto|on|off    let the kernel do file I/O itself (FUSE iomap) when it\n                       offers it (auto, the default); on: fail without it. Off\n                       with offset=/partition= and for a replayed journal\n  \
        uring=auto|on|off    serve requests through one io_uring queue per CPU (FUSE\n                       over io_uring, Linux 6.14+ with the fuse module's\n                       enable_uring=Y) when the kernel offers it (auto, the\n                       default); on: fail without it; off: /dev/fuse only\n  \
        writeback_cache      the kernel gathers writes in its page cache and sends\n                       them later (off by default: random writes were slower)\n  \
        blkdev               mount as fuseblk on a loop device of the image (root\n                       only): umount returns once the image is closed and\n                       clean (a plain FUSE mount's umount returns before)\n  \
        readdirplus=auto|on|off  listings carry each entry's attributes: auto (the\n                       default) lets the kernel choose per listing chunk; on:\n                       always; off: never (a LOOKUP per entry used)\n  \
        setuid=NAME          user the server switches to once started (default\n                       nobody; mount.fuse3's option of the same name)\n  \
        nosandbox            keep the server's privileges: no user switch, capability\n                       drop or system call filter (for debugging)\n  \
        stats                at the end, log how many requests of each kind the\n                       kernel sent and the server's CPU time for them\n\n\
        Exit status: 0 mounted (and, with -f, unmounted cleanly), 1 mounting or\n\
        serving failed, 2 a bad argument or option."
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
    pub uring: UringMode,
    /// `setuid=`: who the server becomes once started (`None`: nobody).
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
    /// `blkdev`: mount as `fuseblk` on a loop device of the image, so that
    /// `umount` returns once the volume is closed (root only).
    pub blkdev: bool,
    /// `stats`: count requests and the server's CPU time per opcode and
    /// log the table at the end of the session.
    pub stats: bool,
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
    let cli: Cli = ext4_fuse_common::cli::try_parse_with_help(
        "ext4-fuse",
        args,
        ext4_engine::mount_opts::HELP,
    )?;
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
    // The kernel does iomap file I/O on a block device holding only the
    // filesystem: not on a part of an image.
    if o.common.offset.is_some() || o.common.partition.is_some() {
        if o.iomap == IomapMode::On {
            return Err(clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                "iomap=on cannot serve a filesystem inside a larger image (offset=, partition=)\n",
            ));
        }
        o.iomap = IomapMode::Off;
    }
    Ok(o)
}

pub use ext4_fuse_common::cli::is_help;

fn apply(o: &mut Options, opt: &str) -> Result<(), OptionError> {
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
        ("blkdev", None) => o.blkdev = true,
        ("stats", None) => o.stats = true,
        // Not `user=`: mount(8) takes that for its own option.
        ("setuid", Some(v)) if !v.is_empty() => o.user = Some(v.to_string()),
        ("setuid", _) => {
            return Err(OptionError(
                "mount option setuid needs a value (setuid=NAME)".into(),
            ))
        }
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
        ("uring", Some(v)) => {
            o.uring = UringMode::parse(v).ok_or_else(|| {
                OptionError(format!("mount option uring={v}: must be auto, on or off"))
            })?;
        }
        ("uring", None) => {
            return Err(OptionError(
                "mount option uring needs a value (uring=auto|on|off)".into(),
            ))
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

        let o = p(&["a", "b", "-o", "setuid=daemon,nosandbox,user"]).unwrap();
        assert_eq!((o.user.as_deref(), o.nosandbox), (Some("daemon"), true));
        assert!(!o.stats);
        assert!(p(&["a", "b", "-o", "stats"]).unwrap().stats);
        assert!(p(&["a", "b", "-o", "user=daemon"])
            .unwrap_err()
            .contains("setuid=NAME"));
        let o = p(&["a", "b"]).unwrap();
        assert_eq!((o.user, o.nosandbox), (None, false));
    }

    #[test]
    fn errors_are_clear() {
        let e = |a: &[&str]| p(a).unwrap_err();
        assert!(e(&["a", "b", "-o", "errors=maybe"]).contains("continue, remount-ro or panic"));
        assert!(e(&["a", "b", "-o", "frobnicate"]).contains("unknown mount option 'frobnicate'"));
        assert!(e(&["a", "b", "-o", "threads=0"]).contains("1..256"));
        assert!(e(&["a", "b", "-o", "threads"]).contains("needs a value"));
        assert!(e(&["a", "b", "-o", "iomap=maybe"]).contains("auto, on or off"));
        assert!(e(&["a", "b", "-o", "readdirplus=some"]).contains("auto, on or off"));
        assert!(e(&["a", "b", "-o", "uring=some"]).contains("auto, on or off"));
        assert!(e(&["a", "b", "-o", "uring"]).contains("needs a value"));
        assert_eq!(p(&["a", "b"]).unwrap().uring, UringMode::Auto);
        assert_eq!(
            p(&["a", "b", "-o", "uring=on"]).unwrap().uring,
            UringMode::On
        );
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
        assert!(e(&["a", "b", "-o", "setuid="]).contains("needs a value"));
        assert_eq!(
            p(&["a", "b", "-o", "partition=2"]).unwrap().iomap,
            IomapMode::Off
        );
        assert!(e(&["a", "b", "-o", "offset=1m,iomap=on"]).contains("iomap=on"));
        assert!(e(&["a", "b", "-o", "nosandbox=1"]).contains("unknown"));
        // FreeBSD-only names are not silently accepted here.
        assert!(e(&["a", "b", "-o", "push_symlinks_in"]).contains("unknown"));
        assert!(p(&["a"]).is_err());
    }
}
