//! Log lines: to stderr in the foreground, to syslog once daemonized (stderr
//! is /dev/null then, and a corrupt inode must still leave a trace).

use std::ffi::CString;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

static SYSLOG: AtomicBool = AtomicBool::new(false);
static DEBUG: AtomicBool = AtomicBool::new(false);

pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// Send further log lines to syslog (called after daemonizing).
pub fn use_syslog() {
    static IDENT: &std::ffi::CStr = c"ext4-fuse";
    // SAFETY: IDENT is a static NUL-terminated string, as openlog requires.
    unsafe { libc::openlog(IDENT.as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
    SYSLOG.store(true, Ordering::Relaxed);
}

fn emit(priority: libc::c_int, args: fmt::Arguments<'_>) {
    if SYSLOG.load(Ordering::Relaxed) {
        let line = CString::new(args.to_string().replace('\0', "\\0")).unwrap_or_default();
        // SAFETY: "%s" with one valid C string argument.
        unsafe { libc::syslog(priority, c"%s".as_ptr(), line.as_ptr()) };
    } else {
        eprintln!("ext4-fuse: {args}");
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
