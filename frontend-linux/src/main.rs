//! `ext4-fuse SOURCE MOUNTPOINT [-o opts] [-f] [-d]`: mount an ext4 image or
//! block device read-only through FUSE.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use ext4_engine::file_device::FileDevice;
use ext4_engine::volume::{OpenOptions, Volume, Warning};
use ext4_fuse::channel::{Channel, DevFuse};
use ext4_fuse::iomap;
use ext4_fuse::log;
use ext4_fuse::mount::{self, MountSpec, Mounted};
use ext4_fuse::options::{self, Options};
use ext4_fuse::session::{Config, Session};
use nix::sys::signal::{SigSet, Signal};

fn main() -> ExitCode {
    let opts = match options::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) if options::is_help(&e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's own message starts with "error: "; keep it to one line.
            let msg = e.to_string();
            let first = msg
                .lines()
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ");
            eprintln!("ext4-fuse: {first}");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            log::error(format_args!("{msg}"));
            ExitCode::FAILURE
        }
    }
}

fn default_threads() -> usize {
    // Readahead keeps several reads in flight even on one core; blocking
    // device reads are what the extra threads wait on.
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cpus * 2).clamp(4, 16)
}

fn open_volume(opts: &Options) -> Result<Volume<FileDevice>, String> {
    let src = opts.source.display();
    let meta = std::fs::metadata(&opts.source).map_err(|e| format!("{src}: {}", io_msg(&e)))?;
    if meta.is_dir() {
        return Err(format!(
            "{src}: is a directory, not an image file or block device"
        ));
    }
    let dev = FileDevice::open(&opts.source, true).map_err(|e| format!("{src}: {}", io_msg(&e)))?;
    let mut vo = OpenOptions {
        read_only: true,
        ..OpenOptions::default()
    };
    if let Some(n) = opts.common.cache_size {
        vo.cache_bytes = n;
    }
    let volume = Volume::open(dev, &vo).map_err(|e| format!("{src}: {e}"))?;
    opts.common
        .journal_policy(volume.warnings())
        .map_err(|e| format!("{src}: {e}"))?;
    for w in volume.warnings() {
        if *w != Warning::NeedsRecovery {
            log::error(format_args!("{src}: warning: {w}"));
        }
    }
    Ok(volume)
}

/// The OS message without Rust's " (os error N)" suffix.
fn io_msg(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn check_mountpoint(path: &Path) -> Result<std::path::PathBuf, String> {
    let mp = path.display();
    let abs = std::fs::canonicalize(path).map_err(|e| format!("{mp}: {}", io_msg(&e)))?;
    if !abs.is_dir() {
        return Err(format!("{mp}: not a directory"));
    }
    if mount::is_mountpoint(&abs) {
        return Err(format!(
            "{mp}: mount point is busy (something is already mounted there)"
        ));
    }
    Ok(abs)
}

/// Fork; the parent waits until the child says the mount is serving (one
/// zero byte on the pipe) and exits with the matching status.
fn daemonize() -> Result<OwnedFd, String> {
    let (r, w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: still single-threaded (workers and the signal thread start later).
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Parent { .. } => {
            drop(w);
            let mut b = [1u8; 1];
            let ok = matches!(nix::unistd::read(r.as_raw_fd(), &mut b), Ok(1)) && b[0] == 0;
            std::process::exit(if ok { 0 } else { 1 });
        }
        nix::unistd::ForkResult::Child => {
            drop(r);
            let _ = nix::unistd::setsid();
            Ok(w)
        }
    }
}

/// Detach from the terminal once the mount is up: cwd to /, stdio to
/// /dev/null, logs to syslog.
fn detach_stdio() {
    // Do not keep the directory we were started from busy.
    let _ = std::env::set_current_dir("/");
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
        }
    }
    log::use_syslog();
}

fn run(opts: &Options) -> Result<(), String> {
    log::set_debug(opts.debug());
    // Signals go to one thread that unmounts; block them before anything
    // else so a Ctrl-C during startup cannot leave a dead mount behind.
    let mut signals = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(s);
    }
    signals
        .thread_block()
        .map_err(|e| format!("sigprocmask: {e}"))?;

    let volume = open_volume(opts)?;
    let mountpoint = check_mountpoint(&opts.mountpoint)?;
    let spec = MountSpec {
        fsname: opts
            .common
            .fsname
            .clone()
            .unwrap_or_else(|| mount::default_fsname(&opts.source)),
        mountpoint,
        allow_other: opts.common.allow_other,
        default_permissions: opts.common.default_permissions,
        nosuid: opts.common.nosuid(),
        nodev: opts.common.nodev(),
        noexec: opts.common.noexec(),
    };
    let (fuse, mounted) = mount::mount(&spec).map_err(|e| e.to_string())?;
    // The iomap data path: probe the kernel, open the device it would do
    // file I/O on (a loop device over an image).
    let iomap_prep = match iomap::prepare(opts.iomap, &opts.source, volume.sb().block_size) {
        Ok(p) => p,
        Err(e) => {
            let _ = mounted.unmount();
            return Err(e);
        }
    };
    let ready = if opts.foreground {
        None
    } else {
        match daemonize() {
            Ok(w) => Some(w),
            Err(e) => {
                let _ = mounted.unmount();
                return Err(e);
            }
        }
    };

    let mut config = Config {
        uid: opts.common.uid,
        gid: opts.common.gid,
        iomap: iomap_prep.is_some(),
        ..Config::default()
    };
    if let Some(p) = &iomap_prep {
        config.iomap_sid = p.sid();
    }
    let session = Session::new(volume, config);
    if let Err(e) = session.wait_init(&fuse) {
        let _ = mounted.unmount();
        return Err(format!("FUSE_INIT failed: {e}"));
    }
    // Kept until the session ends: dropping it detaches a loop device.
    let _iomap = match iomap::activate(iomap_prep, &session, &fuse) {
        Ok(a) => a,
        Err(e) => {
            let _ = mounted.unmount();
            return Err(e);
        }
    };
    if let Some(w) = ready {
        detach_stdio();
        let _ = std::fs::File::from(w).write_all(&[0]);
    }

    let signal_mount = mounted.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || on_signal(signals, signal_mount))
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;

    let threads = opts.threads.unwrap_or_else(default_threads);
    let mut channels: Vec<Arc<dyn Channel>> = Vec::with_capacity(threads);
    for _ in 1..threads {
        match fuse.clone_session() {
            Ok(c) => channels.push(Arc::new(c)),
            Err(e) => {
                log::error(format_args!(
                    "FUSE_DEV_IOC_CLONE failed ({e}); using fewer workers"
                ));
                break;
            }
        }
    }
    channels.push(Arc::new(fuse) as Arc<dyn Channel>);
    session
        .run(&channels)
        .map_err(|e| format!("reading /dev/fuse: {e}"))
}

fn on_signal(signals: SigSet, mounted: Mounted) {
    if let Ok(sig) = signals.wait() {
        log::debug(format_args!(
            "{sig}: unmounting {}",
            mounted.mountpoint().display()
        ));
        if let Err(e) = mounted.unmount() {
            log::error(format_args!(
                "unmounting {}: {e}",
                mounted.mountpoint().display()
            ));
            std::process::exit(1);
        }
        std::process::exit(0);
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<DevFuse>();
    check::<Volume<FileDevice>>();
}
