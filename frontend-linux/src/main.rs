//! `ext4-fuse SOURCE MOUNTPOINT [-o opts] [-f] [-d]`: mount an ext4 image or
//! block device through FUSE (read-write unless `-o ro`).

use std::io::Write;
use std::os::fd::FromRawFd;
use std::os::unix::fs::FileTypeExt;
use std::process::ExitCode;
use std::sync::Arc;

use ext4_engine::policy::ShownIds;
use ext4_engine::FileDevice;
use ext4_engine::Volume;
use ext4_fuse::channel::{Channel, DevFuse};
use ext4_fuse::inherited::{self, io_msg};
use ext4_fuse::iomap_setup;
use ext4_fuse::log;
use ext4_fuse::loopdev::LoopDevice;
use ext4_fuse::mount::{self, MountSpec, Mounted};
use ext4_fuse::options::{self, Options};
use ext4_fuse::sandbox;
use ext4_fuse::session::{Config, Session};
use ext4_fuse::uring::{self, Queue, UringMode};
use ext4_fuse::watcher;
use ext4_fuse_common::fs::{Durability, Fs};
use ext4_fuse_common::{cli, daemon, os};
use nix::sys::signal::{SigSet, Signal};

fn main() -> ExitCode {
    log::init("ext4-fuse");
    let opts = match options::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) if options::is_help(&e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => return cli::usage_error("ext4-fuse", &cli::one_line(&e)),
    };
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            log::error(format_args!("{msg}"));
            ExitCode::from(cli::EXIT_FAILURE)
        }
    }
}

fn default_threads() -> usize {
    // Readahead keeps several reads in flight even on one core; blocking
    // device reads are what the extra threads wait on.
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cpus * 2).clamp(4, 16)
}

/// `-o blkdev`: a loop device of the image `source` (read-write unless the
/// volume is read-only), its logical block size no more than a page.
fn blkdev_for(source: &std::path::Path, volume: &Volume<FileDevice>) -> Result<LoopDevice, String> {
    let is_file = std::fs::metadata(source).is_ok_and(|m| m.file_type().is_file());
    if !is_file {
        return Err(format!(
            "{}: -o blkdev takes an image file (it mounts fuseblk on a loop device of it)",
            source.display()
        ));
    }
    let size = volume.sb().block_size.min(4096);
    LoopDevice::attach_as(source, size, !volume.read_only())
        .map_err(|e| format!("-o blkdev: attaching a loop device: {e}"))
}

fn open_volume(opts: &Options) -> Result<Volume<FileDevice>, String> {
    let src = opts.source.display().to_string();
    let file = inherited::open_source(&opts.source, opts.common.read_only)
        .map_err(|e| format!("{src}: {}", io_msg(&e)))?;
    inherited::open_volume(file, &src, &opts.common)
}

/// The data path the options and the volume allow, decided before
/// mount(2) so that `-o iomap=on` refused for the volume's own reasons, or
/// on a kernel without iomap, never shows a mount for a moment. What needs
/// the connection (its own probe, the backing device) is
/// [`iomap_setup::prepare`]'s.
fn iomap_mode_for(
    opts: &Options,
    volume: &Volume<FileDevice>,
    given: &iomap_setup::Given,
) -> Result<iomap_setup::IomapMode, String> {
    // One device: the volume is open on the block device the kernel
    // would write through (a device source, or the writable loop device).
    // (Without iomap in the kernel the probe in `prepare` says so, not
    // this.)
    let one_device = matches!(given, iomap_setup::Given::Ready(_))
        || std::fs::metadata(&opts.source).is_ok_and(|m| m.file_type().is_block_device())
        || !iomap_setup::kernel_supports_iomap();
    let mode = iomap_setup::mode_for_source(opts.iomap, &opts.common)
        .and_then(|m| iomap_setup::mode_after_replay(m, volume.replayed_blocks()))
        .and_then(|m| iomap_setup::mode_for_writes(m, volume.read_only(), one_device))?;
    iomap_setup::refuse_early(mode)?;
    Ok(mode)
}

fn run(opts: &Options) -> Result<(), String> {
    log::set_debug(opts.debug());
    if opts.uring == UringMode::On && !uring::kernel_enabled() {
        return Err(format!("uring=on: {}", uring::HOW_TO_ENABLE));
    }
    log::stop_on_damage(opts.common.errors == Some(ext4_engine::mount_opts::OnErrors::Panic));
    if let Some(f) = &opts.common.logfile {
        log::use_file(std::path::Path::new(f)).map_err(|e| format!("logfile={f}: {e}"))?;
    }
    // Signals go to one thread that unmounts; block them before anything
    // else so a Ctrl-C during startup cannot leave a dead mount behind.
    let mut signals = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(s);
    }
    signals
        .thread_block()
        .map_err(|e| format!("sigprocmask: {e}"))?;

    // Descriptors leaked by whoever started us would stay usable after
    // confinement; only the ones named on the command line are kept, and
    // the log file opened above.
    inherited::close_stray(
        &[&opts.source, &opts.mountpoint]
            .iter()
            .filter_map(|p| inherited::fd_number(p))
            .chain(log::sink_fd())
            .collect::<Vec<_>>(),
    );
    // `ext4-fuse SOURCE /dev/fd/N`: a helper already mounted /dev/fuse
    // descriptor N (and usually opened the source as /dev/fd/M).
    let inherited_fuse = inherited::fd_number(&opts.mountpoint);
    let (volume, fuse, mounted, given, iomap_mode) = match inherited_fuse {
        Some(n) => {
            if opts.blkdev {
                return Err(format!(
                    "-o blkdev: /dev/fd/{n} is a mount made already (by a helper); \
                     run ext4-fuse itself as root to mount fuseblk"
                ));
            }
            let fuse = inherited::fuse_fd(n)?;
            let volume = match inherited::fd_number(&opts.source) {
                Some(m) if m == n => {
                    return Err(format!(
                        "/dev/fd/{n}: the same descriptor cannot be source and mount point"
                    ))
                }
                Some(m) => {
                    // A second handle for iomap, whose device it may be.
                    let dup = nix::unistd::dup(m)
                        .map(|fd| {
                            // SAFETY: dup returned a new descriptor we own.
                            unsafe { std::fs::File::from_raw_fd(fd) }
                        })
                        .ok();
                    (inherited::source_fd(m, &opts.common)?, dup)
                }
                None => (open_volume(opts)?, None),
            };
            let (volume, dup) = volume;
            let given = dup.map_or(iomap_setup::Given::Path, iomap_setup::Given::Inherited);
            let iomap_mode = iomap_mode_for(opts, &volume, &given)?;
            (volume, fuse, None, given, iomap_mode)
        }
        None => {
            // The mount point first: a read-write open already counts as a
            // mount of the filesystem.
            let mountpoint = mount::check_mountpoint(&opts.mountpoint)?;
            // Read-write iomap on an image: the volume goes on the
            // writable loop device the kernel will write file data
            // through (-o blkdev makes its own loop device).
            let rw_mode = if opts.blkdev {
                iomap_setup::IomapMode::Off
            } else {
                opts.iomap
            };
            let rw_backing = iomap_setup::writable_backing(rw_mode, &opts.source, &opts.common)?;
            let (volume, given) = match rw_backing {
                Some(b) => {
                    let file = b
                        .reopen_writable()
                        .map_err(|e| format!("{}: {}", b.path().display(), io_msg(&e)))?;
                    let name = opts.source.display().to_string();
                    let volume = inherited::open_volume(file, &name, &opts.common)?;
                    log::debug(format_args!(
                        "read-write iomap: the volume is open on {}",
                        b.describe()
                    ));
                    (volume, iomap_setup::Given::Ready(b))
                }
                None => (open_volume(opts)?, iomap_setup::Given::Path),
            };
            let iomap_mode = iomap_mode_for(opts, &volume, &given)?;
            let fsname = opts
                .common
                .fsname
                .clone()
                .unwrap_or_else(|| os::default_fsname(&opts.source));
            let mut spec = MountSpec::new(
                &opts.common,
                fsname,
                mountpoint,
                ext4_fuse::SUBTYPE,
                volume.read_only(),
            );
            // -o blkdev: a loop device of the image for the kernel to
            // claim; it goes (autoclear) when the unmount releases it.
            let blkdev = if opts.blkdev {
                let lo = blkdev_for(&opts.source, &volume)?;
                spec.blkdev = Some((lo.path().to_path_buf(), lo.block_size()));
                Some(lo)
            } else {
                None
            };
            // Whatever ends this process from here on (a failure, a
            // signal, a denied call once confined, SIGKILL), a watcher
            // forked now, while single-threaded and before mount(2), takes
            // the mount down (see watcher.rs).
            let watch = watcher::spawn(&Mounted::expected(&spec))?;
            let (fuse, mounted) = mount::mount(&spec).map_err(|e| e.to_string())?;
            drop(blkdev);
            (
                volume,
                DevFuse::from_file(fuse),
                Some((mounted, watch)),
                given,
                iomap_mode,
            )
        }
    };
    let (mounted, watch) = match mounted {
        Some((m, w)) => (Some(m), Some(w)),
        None => (None, None),
    };
    let undo = |m: &Option<Mounted>| {
        if let Some(m) = m {
            let _ = m.unmount();
        }
    };
    // The iomap data path: probe the kernel, open the device it would do
    // file I/O on (a loop device over an image).
    let iomap_prep = match iomap_setup::prepare(
        iomap_mode,
        fuse.fd(),
        &opts.source,
        given,
        volume.sb().block_size,
    ) {
        Ok(p) => p,
        Err(e) => {
            undo(&mounted);
            return Err(e);
        }
    };
    // Looked up now: NSS may read files, which the sandbox forbids.
    // The kernel offers iomap only to a server holding CAP_SYS_RAWIO.
    let keep_rawio = iomap_prep.is_some();
    let plan = if opts.nosandbox {
        None
    } else {
        match sandbox::prepare(opts.user.as_deref(), keep_rawio) {
            Ok(p) => Some(p),
            Err(e) => {
                undo(&mounted);
                return Err(e);
            }
        }
    };
    let ready = if opts.foreground {
        None
    } else {
        match daemon::daemonize() {
            Ok(w) => Some(w),
            Err(e) => {
                undo(&mounted);
                return Err(format!("fork: {e}"));
            }
        }
    };

    let (uid, gid) = opts.common.shown_ids((
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    ));
    let mut config = Config {
        uid,
        gid,
        uring: opts.uring != UringMode::Off,
        iomap: iomap_prep.is_some(),
        readdirplus: opts.readdirplus,
        writeback_cache: opts.writeback_cache && !volume.read_only(),
        measure: opts.stats,
        ..Config::default()
    };
    if let Some(p) = &iomap_prep {
        config.iomap_sid = p.sid();
    }
    config.timeout = ext4_engine::policy::timeouts(volume.read_only()).attr;
    let durability = Durability::from_options(&opts.common, &volume);
    let shown = ShownIds { uid, gid };
    let fs = Fs::new(volume, durability, shown).with_atime(opts.common.atime_rule());
    let session = Arc::new(Session::new(fs, config));
    if let Err(e) = session.wait_init(&fuse) {
        undo(&mounted);
        return Err(format!("FUSE_INIT failed: {e}"));
    }
    // Kept until the session ends: dropping it detaches a loop device.
    let _iomap = match iomap_setup::activate(iomap_prep, &session, &fuse) {
        Ok(a) => a,
        Err(e) => {
            // Opened read-write: leave the image clean.
            close(session.backend());
            undo(&mounted);
            return Err(e);
        }
    };

    // FUSE over io_uring: the rings are set up before confinement (which
    // admits io_uring_enter on them only); /dev/fuse keeps one worker for
    // what never travels through a ring (FORGET, INTERRUPT, notifications).
    let agreed = session.negotiated().map_or(0, |n| n.flags);
    let fuse = Arc::new(fuse);
    let queues = if agreed & ext4_fuse::abi::init_flags::OVER_IO_URING != 0 {
        match Queue::for_each_cpu(
            &fuse,
            uring::payload_size(ext4_fuse::session::MAX_IO),
            opts.threads.unwrap_or_else(default_threads),
        ) {
            Ok(q) => q,
            Err(e) if opts.uring == UringMode::On => {
                undo(&mounted);
                return Err(format!("uring=on: cannot set up the rings: {e}"));
            }
            Err(e) => {
                log::error(format_args!(
                    "FUSE over io_uring unavailable ({e}); serving /dev/fuse only"
                ));
                Vec::new()
            }
        }
    } else if opts.uring == UringMode::On {
        undo(&mounted);
        return Err(format!(
            "uring=on: the kernel did not offer FUSE over io_uring. {}",
            uring::HOW_TO_ENABLE
        ));
    } else {
        Vec::new()
    };
    if !queues.is_empty() {
        log::debug(format_args!(
            "FUSE over io_uring: {} queue entries",
            queues.len()
        ));
    }

    // Every descriptor is opened before confinement: clones of /dev/fuse
    // need an open(2). On an inherited descriptor there is no path to
    // open, so all workers read the one descriptor.
    let threads = if queues.is_empty() {
        opts.threads.unwrap_or_else(default_threads)
    } else {
        1
    };
    // One worker polls for requests (spin=), the others sleep, so at most
    // one CPU is kept awake. It needs a descriptor of its own: on a shared
    // one (inherited) every worker would poll.
    let spin = (opts.spin_us() > 0 && inherited_fuse.is_none() && queues.is_empty())
        .then(|| std::time::Duration::from_micros(opts.spin_us()));
    let poll = |c: &mut DevFuse, window| {
        if let Err(e) = c.spin(window) {
            log::error(format_args!(
                "spin={}: {e}; workers only sleep",
                opts.spin_us()
            ));
        }
    };
    let mut fuse = fuse;
    let mut channels: Vec<Arc<dyn Channel>> = Vec::with_capacity(threads);
    for _ in 1..threads {
        if inherited_fuse.is_some() {
            channels.push(fuse.clone());
            continue;
        }
        match fuse.clone_session() {
            Ok(mut c) => {
                if let (Some(w), true) = (spin, channels.is_empty()) {
                    poll(&mut c, w);
                }
                channels.push(Arc::new(c))
            }
            Err(e) => {
                log::error(format_args!(
                    "FUSE_DEV_IOC_CLONE failed ({e}); using fewer workers"
                ));
                break;
            }
        }
    }
    if let (Some(w), true) = (spin, channels.is_empty()) {
        if let Some(f) = Arc::get_mut(&mut fuse) {
            poll(f, w);
        }
    }
    channels.push(fuse as Arc<dyn Channel>);
    let ring_fds: Vec<_> = queues.iter().map(|q| q.ring_fd()).collect();
    channels.extend(queues.into_iter().map(|q| q as Arc<dyn Channel>));

    if ready.is_some() {
        daemon::detach_stdio();
    }
    if let Some(mut plan) = plan {
        plan.allow_rings(&ring_fds);
        if let Err(e) = sandbox::apply(plan) {
            // With a watcher, exiting is the unmount.
            if watch.is_none() {
                undo(&mounted);
            }
            return Err(format!("sandbox: {e}"));
        }
    }
    if let Some(w) = ready {
        let _ = std::fs::File::from(w).write_all(&[0]);
    }

    let served = session.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || on_signal(signals, served.backend()))
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    session
        .backend()
        .start_committer()
        .map_err(|e| format!("cannot start the commit thread: {e}"))?;
    if let Some(what) = std::env::var_os(sandbox::PROBE_ENV) {
        sandbox::run_test_probe(&what.to_string_lossy());
    }

    let result = session
        .run(&channels)
        .map_err(|e| format!("reading /dev/fuse: {e}"));
    // Unmounted (or the connection ended): leave the image clean.
    close(session.backend());
    if opts.stats {
        for line in session.stats_table().lines() {
            log::info(format_args!("stats: {line}"));
        }
    }
    // The connection ended because the mount went away: nothing to undo.
    if let (Some(w), Ok(())) = (&watch, &result) {
        w.keep();
    }
    result
}

/// Close the volume cleanly, saying so if that fails.
fn close(fs: &Fs<FileDevice>) {
    if let Err(e) = fs.close() {
        log::error(format_args!(
            "closing the filesystem: {e}; run e2fsck on it before the next mount"
        ));
    }
}

/// A signal ends the server, the volume closed cleanly first; a mount it
/// made is taken down by its watcher, one made by a helper by the helper.
fn on_signal(signals: SigSet, fs: &Fs<FileDevice>) {
    if let Ok(sig) = signals.wait() {
        log::debug(format_args!("{sig}: closing the filesystem and exiting"));
        close(fs);
        std::process::exit(0);
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<DevFuse>();
    check::<Volume<FileDevice>>();
}
