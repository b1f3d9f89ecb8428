//! Going to the background once the mount is up, so that the exit status
//! of the command says whether mounting worked.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Fork while the process is still single-threaded. The parent waits for
/// one zero byte on a pipe (the child mounted) and exits 0, or exits 1 if
/// the pipe closes first; the child becomes a session leader and gets the
/// pipe's write end, to write that byte into.
pub fn daemonize() -> std::io::Result<OwnedFd> {
    let mut p = [0 as libc::c_int; 2];
    // SAFETY: p has room for two descriptors.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2() returned two fresh descriptors we now own.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) };
    // SAFETY: the caller guarantees no other thread exists yet, so the
    // child may run Rust code.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        0 => {
            drop(rd);
            // SAFETY: plain syscall.
            unsafe { libc::setsid() };
            Ok(wr)
        }
        _ => {
            drop(wr);
            let mut f = File::from(rd);
            let mut b = [1u8];
            let ok = matches!(f.read(&mut b), Ok(1)) && b[0] == 0;
            std::process::exit(if ok { 0 } else { 1 });
        }
    }
}

/// Leave the terminal: the working directory becomes / (so the directory
/// the server was started from is not kept busy) and stdin, stdout and
/// stderr /dev/null. Log lines then go to syslog (or the log file).
pub fn detach_stdio() {
    let _ = std::env::set_current_dir("/");
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    crate::log::use_syslog();
}
