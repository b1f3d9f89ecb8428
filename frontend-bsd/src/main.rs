//! `ext4-fuse-bsd SOURCE MOUNTPOINT [-o opts] [-f]`: mount an ext2/3/4
//! image or disk through FUSE (FreeBSD's fusefs, or Linux), read-write
//! unless `-o ro`.

use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use ext4_engine::policy::ShownIds;
use ext4_engine::BlockDevice;
use ext4_fuse_bsd::fs::{Ext4Fs, FsConfig};
use ext4_fuse_bsd::options::MountOpts;
use ext4_fuse_bsd::{mount_config, server_pushes_symlinks, sys};
use ext4_fuse_common::fs::{Durability, Fs};
use ext4_fuse_common::{daemon, log};
use fuser::Session;

const NAME: &str = "ext4-fuse-bsd";

#[derive(Parser, Debug)]
#[command(
    name = NAME,
    version,
    about = "Mount an ext2/ext3/ext4 filesystem through FUSE (FreeBSD fusefs or Linux), read-write unless -o ro"
)]
struct Cli {
    /// Image file or disk device (e.g. /dev/ada0p2, /dev/md0, disk.img)
    source: PathBuf,
    /// Directory to mount on
    mountpoint: PathBuf,
    /// Mount options, comma-separated: ro (read-write is the default; a
    /// filesystem or device that cannot be written mounts read-only with a
    /// warning), rw, sync, async, dirsync, commit=SECONDS (default 5),
    /// errors=continue|remount-ro|panic (default: the superblock's),
    /// allow_other, default_permissions
    /// (always on: permissions are checked for every user), fsname=,
    /// subtype=, uid=, gid=, cache_size=N[k|m|g], name_index_size=N[k|m|g],
    /// logfile=PATH (log lines go there instead of stderr or syslog),
    /// norecovery, journal_path=,
    /// replay_budget=N[k|m|g], debug,
    /// push_symlinks_in, intr, max_read=, private, noprivate, neglect_shares,
    /// nosuid, nodev, noexec, noatime (and their positive forms)
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,
    /// Stay in the foreground
    #[arg(short = 'f')]
    foreground: bool,
    /// Debug output (same as -o debug; implies -f)
    #[arg(short = 'd')]
    debug: bool,
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "{NAME}: {msg}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut opts = MountOpts::default();
    for o in &cli.options {
        if let Err(e) = opts.parse(o) {
            return fail(e);
        }
    }
    opts.common.debug |= cli.debug;
    let foreground = cli.foreground || opts.common.debug;
    log::init(NAME);
    log::set_debug(opts.common.debug);
    log::install_facade();
    if let Some(f) = &opts.common.logfile {
        if let Err(e) = log::use_file(Path::new(f)) {
            return fail(format!("logfile={f}: {e}"));
        }
    }

    let mountpoint = match cli.mountpoint.canonicalize() {
        Ok(p) if p.is_dir() => p,
        Ok(p) => return fail(format!("{}: not a directory", p.display())),
        Err(e) => return fail(format!("{}: {e}", cli.mountpoint.display())),
    };
    let dev = match sys::open_device(&cli.source, opts.common.read_only) {
        Ok(d) => d,
        Err(e) => return fail(format!("{}: {e}", cli.source.display())),
    };
    let journal = |p: &str| -> Result<Box<dyn BlockDevice>, String> {
        sys::open_device(Path::new(p), true)
            .map(|d| Box::new(d) as Box<dyn BlockDevice>)
            .map_err(|e| e.to_string())
    };
    let vol = match opts.common.open_volume(dev, journal) {
        Ok(o) => {
            if let Some(why) = &o.read_only_because {
                log::warn(format_args!(
                    "{}: mounted read-only: {why}",
                    cli.source.display()
                ));
            }
            o.volume
        }
        Err(e) => return fail(format!("{}: {e}", cli.source.display())),
    };
    for w in vol.warnings() {
        log::warn(format_args!("{}: {w}", cli.source.display()));
    }

    let cfg = FsConfig {
        uid: opts.common.uid,
        gid: opts.common.gid,
        symlink_prefix: server_pushes_symlinks(&opts)
            .then(|| mountpoint.as_os_str().as_bytes().to_vec()),
    };
    let read_only = vol.read_only();
    let durability = Durability::from_options(&opts.common, &vol);
    let shown = ShownIds {
        uid: opts.common.uid,
        gid: opts.common.gid,
    };
    let served = Fs::new(vol, durability, shown);
    let fs = Ext4Fs::new(served, cfg);
    let config = mount_config(&opts, &cli.source, read_only);

    // Daemonize before any thread exists; the parent waits for the child
    // to report the mount, so the exit status says whether it worked.
    let report = if foreground {
        None
    } else {
        match daemon::daemonize() {
            Ok(fd) => Some(fd),
            Err(e) => return fail(format!("cannot fork: {e}")),
        }
    };

    // Signals go to one waiting thread, which unmounts.
    let sigs = signal_set();
    // SAFETY: sigs is a valid, initialised set.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &sigs, std::ptr::null_mut()) };

    // After the signal mask: a thread started before it would take the
    // signals' default actions.
    if let Err(e) = fs.served().start_committer() {
        return fail(format!("cannot start the commit thread: {e}"));
    }
    let mut session = match Session::new(fs, &mountpoint, &config) {
        Ok(s) => s,
        Err(e) => return fail(format!("cannot mount on {}: {e}", mountpoint.display())),
    };
    let mut unmounter = session.unmount_callable();
    let mp = mountpoint.clone();
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut sig: libc::c_int = 0;
            // SAFETY: sigs and sig are valid for the call.
            while unsafe { libc::sigwait(&sigs, &mut sig) } != 0 {}
            log::info(format_args!("signal {sig}: unmounting {}", mp.display()));
            if let Err(e) = unmounter.unmount() {
                log::warn(format_args!(
                    "unmount {}: {e}; detaching lazily",
                    mp.display()
                ));
                lazy_unmount(&mp);
            }
        });
    if let Err(e) = spawned {
        return fail(format!("cannot start the signal thread: {e}"));
    }

    if let Some(fd) = report {
        daemon::detach_stdio();
        // The parent exits 0 on this byte.
        let mut f = std::fs::File::from(fd);
        let _ = f.write_all(&[0]);
    }
    match session.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error(format_args!("session ended: {e}"));
            ExitCode::FAILURE
        }
    }
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set before it is read.
    unsafe {
        let mut s: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut s);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut s, sig);
        }
        s
    }
}

/// Last resort when a clean unmount fails (busy): detach now, let the
/// kernel finish with open files.
fn lazy_unmount(mp: &Path) {
    let Ok(c) = CString::new(mp.as_os_str().as_bytes()) else {
        return;
    };
    #[cfg(target_os = "linux")]
    // SAFETY: c is a valid path string.
    let r = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    #[cfg(target_os = "freebsd")]
    // SAFETY: c is a valid path string.
    let r = unsafe { libc::unmount(c.as_ptr(), libc::MNT_FORCE) };
    #[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
    let r = {
        let _ = c;
        -1
    };
    if r != 0 {
        log::error(format_args!(
            "cannot unmount {}: {}",
            mp.display(),
            std::io::Error::last_os_error()
        ));
    }
}
