//! Log lines: to stderr in the foreground, to syslog once daemonized (stderr
//! is /dev/null then, and a corrupt inode must still leave a trace).
//!
//! Syslog is a datagram socket connected to /dev/log when daemonizing, not
//! the C library's syslog(3): that one opens its socket lazily and reopens
//! it after an error, and a confined server may create no sockets. If the
//! log daemon goes away, lines are dropped rather than reconnected.

use std::fmt;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

static DEBUG: AtomicBool = AtomicBool::new(false);
static SYSLOG: OnceLock<Syslog> = OnceLock::new();

struct Syslog {
    sock: Option<UnixDatagram>,
    pid: u32,
}

pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// Send further log lines to syslog (called after daemonizing). Without a
/// syslog daemon (/dev/log missing) lines are dropped.
pub fn use_syslog() {
    let sock = UnixDatagram::unbound()
        .and_then(|s| s.connect("/dev/log").map(|()| s))
        .ok();
    let _ = SYSLOG.set(Syslog {
        sock,
        pid: std::process::id(),
    });
}

/// The connected syslog socket, if lines go there.
pub fn syslog_fd() -> Option<i32> {
    SYSLOG.get()?.sock.as_ref().map(|s| s.as_raw_fd())
}

fn emit(priority: libc::c_int, args: fmt::Arguments<'_>) {
    match SYSLOG.get() {
        Some(s) => {
            if let Some(sock) = &s.sock {
                let line = format!(
                    "<{}>ext4-fuse[{}]: {args}",
                    libc::LOG_DAEMON | priority,
                    s.pid
                );
                // write(2) rather than send(2): one call fewer to allow.
                // SAFETY: a valid buffer on our own connected socket.
                unsafe { libc::write(sock.as_raw_fd(), line.as_ptr().cast(), line.len()) };
            }
        }
        None => eprintln!("ext4-fuse: {args}"),
    }
}

pub fn error(args: fmt::Arguments<'_>) {
    emit(libc::LOG_ERR, args);
}

pub fn debug(args: fmt::Arguments<'_>) {
    if debug_enabled() {
        emit(libc::LOG_DEBUG, args);
    }
}
