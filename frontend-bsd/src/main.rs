//! `ext4-fuse-bsd SOURCE MOUNTPOINT [-o opts] [-f]`: mount an ext2/3/4
//! image or disk through FUSE, read-write unless -o ro (FreeBSD's fusefs, or Linux).

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
use ext4_fuse_common::fs::{Closer, Durability, Fs};
use ext4_fuse_common::{cli, daemon, log};
use fuser::Session;

const NAME: &str = "ext4-fuse-bsd";

#[derive(Parser, Debug)]
#[command(
    name = NAME,
    version,
    about = "Mount an ext2/ext3/ext4 filesystem through FUSE (FreeBSD fusefs or Linux), read-write unless -o ro",
    after_help = concat!(
        "  push_symlinks_in     prefix absolute symlink targets with the mount point\n",
        "  intr                 let signals interrupt waiting requests (FreeBSD)\n",
        "  private, noprivate, neglect_shares  FreeBSD mount_fusefs options\n",
        "\nExit status: 0 mounted (and, with -f, unmounted cleanly), 1 mounting or\n",
        "serving failed, 2 a bad argument or option."
    )
)]
struct Cli {
    /// Image file or disk device (e.g. /dev/ada0p2, /dev/md0, disk.img)
    source: PathBuf,
    /// Directory to mount on (an existing directory nothing is mounted on)
    mountpoint: PathBuf,
    /// Mount options, comma-separated (listed below)
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
    cli::failure(NAME, &msg.to_string())
}

fn main() -> ExitCode {
    let args = std::env::args().skip(1);
    let cli: Cli = match cli::parse_with_help(NAME, args, ext4_engine::mount_opts::HELP) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut opts = MountOpts::default();
    for o in &cli.options {
        if let Err(e) = opts.parse(o) {
            return cli::usage_error(NAME, &format!("{e} (see --help)"));
        }
    }
    opts.common.debug |= cli.debug;
    let foreground = cli.foreground || opts.common.debug;
    log::init(NAME);
    log::set_debug(opts.common.debug);
    log::stop_on_damage(opts.common.errors == Some(ext4_engine::mount_opts::OnErrors::Panic));
    log::install_facade();
    if let Some(f) = &opts.common.logfile {
        if let Err(e) = log::use_file(Path::new(f)) {
            return fail(format!("logfile={f}: {e}"));
        }
    }

    let mountpoint = match checked_mountpoint(&cli.mountpoint) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let dev = match sys::open_source(&cli.source, &opts.common) {
        Ok(d) => d,
        Err(e) => return fail(format!("{}: {e}", cli.source.display())),
    };
    let journal = |p: &str| -> Result<Box<dyn BlockDevice>, String> {
        sys::open_device(Path::new(p), true).map(|d| Box::new(d) as Box<dyn BlockDevice>)
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

    // SAFETY: getuid/getgid have no preconditions.
    let me = unsafe { (libc::getuid(), libc::getgid()) };
    let (uid, gid) = opts.common.shown_ids(me);
    let cfg = FsConfig {
        uid,
        gid,
        symlink_prefix: server_pushes_symlinks(&opts)
            .then(|| mountpoint.as_os_str().as_bytes().to_vec()),
    };
    let read_only = vol.read_only();
    let durability = Durability::from_options(&opts.common, &vol);
    let served =
        Fs::new(vol, durability, ShownIds { uid, gid }).with_atime(opts.common.atime_rule());
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

    let served = match serve(fs, &opts, &cli.source, &mountpoint, config, report) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error(format_args!("session ended: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// The mount point made absolute, checked to be a directory nothing is
/// mounted on (mounting over another mount would hide it).
#[cfg(target_os = "linux")]
fn checked_mountpoint(p: &Path) -> Result<PathBuf, String> {
    ext4_fuse_common::mount::check_mountpoint(p)
}

#[cfg(not(target_os = "linux"))]
fn checked_mountpoint(p: &Path) -> Result<PathBuf, String> {
    match p.canonicalize() {
        Ok(p) if p.is_dir() => Ok(p),
        Ok(p) => Err(format!("{}: not a directory", p.display())),
        Err(e) => Err(format!(
            "{}: {}",
            p.display(),
            ext4_fuse_common::os::io_msg(&e)
        )),
    }
}

/// Signals go to one waiting thread. Block them before any thread exists.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set before it is read.
    let sigs = unsafe {
        let mut s: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut s);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut s, sig);
        }
        s
    };
    // SAFETY: sigs is a valid, initialised set.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &sigs, std::ptr::null_mut()) };
    sigs
}

fn wait_signal(sigs: &libc::sigset_t) -> libc::c_int {
    let mut sig: libc::c_int = 0;
    // SAFETY: sigs and sig are valid for the call.
    while unsafe { libc::sigwait(sigs, &mut sig) } != 0 {}
    sig
}

/// Start the periodic commit (after the signal mask: a thread started
/// before it would take the signals' default actions); what closes the
/// volume from another thread.
fn start_committing(fs: &Ext4Fs<sys::Device>) -> Result<Closer<sys::Device>, String> {
    fs.served()
        .start_committer()
        .map_err(|e| format!("cannot start the commit thread: {e}"))?;
    Ok(fs.served().closer())
}

/// Close the volume cleanly, saying so if that fails.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn close(c: &Closer<sys::Device>) {
    if let Err(e) = c.close() {
        log::error(format_args!(
            "closing the filesystem: {e}; run e2fsck on it before the next mount"
        ));
    }
}

fn ready(report: Option<std::os::fd::OwnedFd>) {
    if let Some(fd) = report {
        daemon::detach_stdio();
        // The parent exits 0 on this byte.
        let _ = std::fs::File::from(fd).write_all(&[0]);
    }
}

/// On Linux the mount is made by the shared code: refused on a busy mount
/// point, watched so that a server ending any way (SIGKILL too) leaves no
/// dead mount, and unmounted only while it is ours. `Err`: mounting
/// failed; `Ok(Err)`: serving did.
#[cfg(target_os = "linux")]
fn serve(
    fs: Ext4Fs<sys::Device>,
    opts: &MountOpts,
    source: &Path,
    mountpoint: &Path,
    config: fuser::Config,
    report: Option<std::os::fd::OwnedFd>,
) -> Result<std::io::Result<()>, String> {
    use ext4_fuse_common::{mount, os, watcher};
    let c = &opts.common;
    let fsname = c
        .fsname
        .clone()
        .unwrap_or_else(|| os::default_fsname(source));
    let spec = mount::MountSpec::new(
        c,
        fsname,
        mountpoint.to_path_buf(),
        ext4_fuse_bsd::SUBTYPE,
        fs.volume().read_only(),
    );
    let sigs = block_signals();
    let closer = start_committing(&fs)?;
    // Forked while single-threaded and before mount(2): no moment is left
    // when a killed server would leave its mount behind.
    let watch = watcher::spawn(&mount::Mounted::expected(&spec))?;
    let (fuse, _mounted) = mount::mount(&spec).map_err(|e| e.to_string())?;
    let acl = config.acl;
    let invalidations = fs.invalidations();
    let session = Session::from_fd(fs, fuse.into(), acl, config).map_err(|e| {
        // Dropping `watch` makes the watcher unmount.
        format!("cannot mount on {}: {e}", mountpoint.display())
    })?;
    invalidations
        .start(session.notifier())
        .map_err(|e| format!("cannot start the invalidation thread: {e}"))?;
    let mp = mountpoint.to_path_buf();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let sig = wait_signal(&sigs);
            // Exiting is the unmount: the watcher takes the mount down,
            // once the volume is closed cleanly.
            log::info(format_args!("signal {sig}: unmounting {}", mp.display()));
            close(&closer);
            std::process::exit(0);
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    ready(report);
    let r = session.run();
    // The kernel ended the session: the mount is gone already.
    if r.is_ok() {
        watch.keep();
    }
    Ok(r)
}

#[cfg(not(target_os = "linux"))]
fn serve(
    fs: Ext4Fs<sys::Device>,
    _opts: &MountOpts,
    _source: &Path,
    mountpoint: &Path,
    config: fuser::Config,
    report: Option<std::os::fd::OwnedFd>,
) -> Result<std::io::Result<()>, String> {
    let sigs = block_signals();
    // The unmount ends the session, whose end (DESTROY) closes the volume.
    let _ = start_committing(&fs)?;
    let invalidations = fs.invalidations();
    let mut session = Session::new(fs, mountpoint, &config)
        .map_err(|e| format!("cannot mount on {}: {e}", mountpoint.display()))?;
    invalidations
        .start(session.notifier())
        .map_err(|e| format!("cannot start the invalidation thread: {e}"))?;
    let mut unmounter = session.unmount_callable();
    let mp = mountpoint.to_path_buf();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let sig = wait_signal(&sigs);
            log::info(format_args!("signal {sig}: unmounting {}", mp.display()));
            if let Err(e) = unmounter.unmount() {
                log::warn(format_args!("unmount {}: {e}", mp.display()));
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    ready(report);
    Ok(session.run())
}
