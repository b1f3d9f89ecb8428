//! Log lines, and where they go: a file named with `-o logfile=` if there
//! is one, else stderr while the server is attached to a terminal, and
//! syslog once it has detached (stderr is /dev/null then, and a damaged
//! inode must still leave a trace).
//!
//! Syslog is a datagram socket connected to /dev/log when detaching, not
//! the C library's syslog(3): that one opens its socket lazily and reopens
//! it after an error, and a confined server may create no sockets. If the
//! log daemon goes away, lines are dropped rather than reconnected. A log
//! file is opened before confinement and only written with write(2).

use std::fmt;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use ext4_engine::{policy, Error, InodeNo};

static DEBUG: AtomicBool = AtomicBool::new(false);
static STOP_ON_DAMAGE: AtomicBool = AtomicBool::new(false);
static PROGRAM: OnceLock<&'static str> = OnceLock::new();
static SINK: OnceLock<Sink> = OnceLock::new();

enum Sink {
    /// `None`: no log daemon; lines are dropped.
    Syslog(Option<UnixDatagram>),
    File(File),
}

/// Name the program in every line (`ext4-fuse: ...`).
pub fn init(program: &'static str) {
    let _ = PROGRAM.set(program);
}

fn program() -> &'static str {
    PROGRAM.get().copied().unwrap_or("ext4-fuse")
}

pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

/// `errors=panic`: after logging the first damage found, stop the server
/// (abort, dumping core where the system keeps cores, as fuse2fs does).
/// The mount then goes away with it (see `watcher`).
pub fn stop_on_damage(on: bool) {
    STOP_ON_DAMAGE.store(on, Ordering::Relaxed);
}

fn damage_found(e: &Error) {
    if e.is_corruption() && STOP_ON_DAMAGE.load(Ordering::Relaxed) {
        error(format_args!(
            "errors=panic: stopping at the first damage found"
        ));
        std::process::abort();
    }
}

pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// Send every further line to `path` (appended), from now on and after
/// detaching: for machines with neither a terminal nor a log daemon.
pub fn use_file(path: &Path) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let _ = SINK.set(Sink::File(f));
    Ok(())
}

/// Send further log lines to syslog (called when detaching), unless they
/// go to a log file. Without a syslog daemon (/dev/log missing) lines are
/// dropped.
pub fn use_syslog() {
    if SINK.get().is_some() {
        return;
    }
    let sock = UnixDatagram::unbound()
        .and_then(|s| s.connect("/dev/log").map(|()| s))
        .ok();
    let _ = SINK.set(Sink::Syslog(sock));
}

/// The descriptor lines are written to once the server is confined (the
/// syslog socket or the log file), for a signal handler's last words.
pub fn sink_fd() -> Option<i32> {
    match SINK.get()? {
        Sink::Syslog(s) => s.as_ref().map(|s| s.as_raw_fd()),
        Sink::File(f) => Some(f.as_raw_fd()),
    }
}

fn emit(priority: libc::c_int, args: fmt::Arguments<'_>) {
    let fd = match SINK.get() {
        None => {
            eprintln!("{}: {args}", program());
            return;
        }
        Some(Sink::Syslog(None)) => return,
        Some(Sink::Syslog(Some(s))) => {
            let line = format!(
                "<{}>{}[{}]: {args}",
                libc::LOG_DAEMON | priority,
                program(),
                std::process::id()
            );
            return write_all(s.as_raw_fd(), line.as_bytes());
        }
        Some(Sink::File(f)) => f.as_raw_fd(),
    };
    let line = format!("{}[{}]: {args}\n", program(), std::process::id());
    write_all(fd, line.as_bytes());
}

/// write(2) rather than send(2) or std's writers: one call the sandbox
/// allows, no locks.
fn write_all(fd: i32, mut b: &[u8]) {
    while !b.is_empty() {
        // SAFETY: a valid buffer on a descriptor this module owns.
        let n = unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) };
        if n <= 0 {
            return;
        }
        b = &b[n as usize..];
    }
}

pub fn error(args: fmt::Arguments<'_>) {
    emit(libc::LOG_ERR, args);
}

pub fn warn(args: fmt::Arguments<'_>) {
    emit(libc::LOG_WARNING, args);
}

pub fn info(args: fmt::Arguments<'_>) {
    emit(libc::LOG_INFO, args);
}

pub fn debug(args: fmt::Arguments<'_>) {
    if debug_enabled() {
        emit(libc::LOG_DEBUG, args);
    }
}

/// A request on inode `ino` failed with `e`: damage and device errors
/// are logged (the error names the object), answers such as "no such
/// file" only when debugging.
pub fn failure(op: &str, ino: InodeNo, e: &Error) {
    if policy::worth_logging(e) {
        error(format_args!("{op} on inode {ino}: {e}"));
        damage_found(e);
    } else {
        debug(format_args!("{op} on inode {ino}: {e}"));
    }
}

/// Damage the engine skipped to keep answering (from
/// `Volume::take_reports`).
pub fn skipped(reports: Vec<Error>) {
    for e in reports {
        error(format_args!("damage skipped: {e}"));
        damage_found(&e);
    }
}

/// Route the `log` facade (which `fuser` logs through) to these sinks.
/// `fuser`'s own warnings (an unmount it retries after us, notes on
/// calls a server leaves unimplemented) are noise unless debugging.
pub fn install_facade() {
    struct Facade;
    impl ::log::Log for Facade {
        fn enabled(&self, m: &::log::Metadata<'_>) -> bool {
            if debug_enabled() {
                return true;
            }
            if m.target().starts_with("fuser") {
                return m.level() <= ::log::Level::Error;
            }
            m.level() <= ::log::Level::Warn
        }
        fn log(&self, r: &::log::Record<'_>) {
            if !self.enabled(r.metadata()) {
                return;
            }
            match r.level() {
                ::log::Level::Error => error(*r.args()),
                ::log::Level::Warn => warn(*r.args()),
                ::log::Level::Info => info(*r.args()),
                _ => emit(libc::LOG_DEBUG, *r.args()),
            }
        }
        fn flush(&self) {}
    }
    if ::log::set_boxed_logger(Box::new(Facade)).is_ok() {
        ::log::set_max_level(::log::LevelFilter::Trace);
    }
}
