//! Small things about the operating system both servers and the helper
//! need: the OS's own words for an error, and closing what a caller leaked.

use std::io;
use std::os::fd::RawFd;

/// The OS message without Rust's " (os error N)" suffix.
pub fn io_msg(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Close every descriptor above stderr but `keep`: whatever the caller
/// leaked into this process (a socket, a directory) would otherwise stay
/// usable by a confined server, or keep a FUSE connection alive in a
/// watcher. Call single-threaded.
#[cfg(target_os = "linux")]
pub fn close_stray(keep: &[RawFd]) {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|&f| f > 2).collect();
    keep.sort_unstable();
    let mut lo: RawFd = 3;
    for k in keep.into_iter().chain([RawFd::MAX]) {
        if lo < k {
            // SAFETY: close_range takes plain numbers; nothing in this
            // process opened those descriptors.
            unsafe { libc::syscall(libc::SYS_close_range, lo as u32, (k - 1) as u32, 0u32) };
        }
        lo = k.saturating_add(1);
    }
}

/// Whether `file` can hold a filesystem: an image file or a disk (a block
/// device; on FreeBSD disks are character devices). `Err` says what it is
/// instead.
pub fn check_source(file: &std::fs::File) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let t = file.metadata().map_err(|e| io_msg(&e))?.file_type();
    let disk = t.is_block_device() || (cfg!(target_os = "freebsd") && t.is_char_device());
    if t.is_file() || disk {
        Ok(())
    } else if t.is_dir() {
        Err("is a directory, not an image file or block device".into())
    } else {
        Err("not an image file or block device".into())
    }
}

/// The source shown in the mount table when no `fsname=` is given: the
/// path as given, made absolute (as the kernel's own mounts show theirs).
pub fn default_fsname(source: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let abs = std::fs::canonicalize(source).unwrap_or_else(|_| source.to_path_buf());
    String::from_utf8_lossy(abs.as_os_str().as_bytes()).into_owned()
}

/// (major, minor) of a device number in Linux's 32-bit encoding, as the
/// kernel sends it in `MKNOD` (`new_decode_dev`).
pub fn linux_decode_dev(dev: u32) -> (u32, u32) {
    ((dev & 0xfff00) >> 8, (dev & 0xff) | ((dev >> 12) & 0xfff00))
}
