//! Where FUSE requests come from and replies go: `/dev/fuse` in production,
//! a `SOCK_SEQPACKET` socket pair in tests (one `recv` returns one whole
//! request, exactly like a read of `/dev/fuse`).

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::abi::FUSE_DEV_IOC_MAGIC;

/// One end of a FUSE connection.
pub trait Channel: Send + Sync {
    /// Receive one whole request into `buf`. Returns the request's full
    /// length, which is larger than `buf.len()` when it did not fit (only a
    /// misbehaving peer does that). `Ok(0)` means the peer went away.
    fn receive(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Send one reply (or notification), gathered from `parts`, in one message.
    fn send(&self, parts: &[IoSlice<'_>]) -> io::Result<()>;
    /// A channel for one more worker thread on the same connection.
    fn worker(&self) -> io::Result<Arc<dyn Channel>>;
}

fn writev_all(fd: BorrowedFd<'_>, parts: &[IoSlice<'_>]) -> io::Result<()> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let n = nix::sys::uio::writev(fd, parts).map_err(io::Error::from)?;
    // Both /dev/fuse and a SEQPACKET socket take a message whole or not at all.
    if n != total {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short write of a FUSE reply",
        ));
    }
    Ok(())
}

/// A `/dev/fuse` descriptor.
pub struct DevFuse {
    file: File,
    /// Poll this long for the next request before sleeping (see [`DevFuse::spin`]).
    spin: Option<Duration>,
}

impl DevFuse {
    pub fn open() -> io::Result<DevFuse> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open("/dev/fuse")?;
        Ok(DevFuse { file, spin: None })
    }

    pub fn from_file(file: File) -> DevFuse {
        DevFuse { file, spin: None }
    }

    /// Wait for each request by polling for up to `window` before sleeping.
    /// A request that finds its reader asleep pays for waking an idle CPU,
    /// which in a virtual machine is several microseconds of the caller's
    /// latency on every round trip; a polling reader takes it at once. The
    /// poll yields the CPU to anything else runnable, and the descriptor
    /// becomes non-blocking (it is this reader's own clone).
    pub fn spin(&mut self, window: Duration) -> io::Result<()> {
        let fd = self.file.as_raw_fd();
        // SAFETY: fcntl flag calls on a descriptor this value owns.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        self.spin = Some(window);
        Ok(())
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// `FUSE_DEV_IOC_CLONE`: a new descriptor served by the same connection,
    /// so workers do not all queue on one file's reply list.
    pub fn clone_session(&self) -> io::Result<DevFuse> {
        let clone = DevFuse::open()?;
        let source: u32 = self.file.as_raw_fd() as u32;
        let request = nix::request_code_read!(FUSE_DEV_IOC_MAGIC, 0, core::mem::size_of::<u32>());
        // SAFETY: the ioctl reads one u32 (the source descriptor) from the pointer.
        let r = unsafe { libc::ioctl(clone.file.as_raw_fd(), request as _, &source as *const u32) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(clone)
    }
}

impl Channel for DevFuse {
    fn receive(&self, buf: &mut [u8]) -> io::Result<usize> {
        let read =
            |buf: &mut [u8]| nix::unistd::read(self.file.as_raw_fd(), buf).map_err(io::Error::from);
        match self.spin {
            Some(window) => receive_polling(self.file.as_fd(), window, buf, read),
            None => read(buf),
        }
    }
    fn send(&self, parts: &[IoSlice<'_>]) -> io::Result<()> {
        writev_all(self.file.as_fd(), parts)
    }
    fn worker(&self) -> io::Result<Arc<dyn Channel>> {
        Ok(Arc::new(self.clone_session()?))
    }
}

/// Receive with `try_read`, a non-blocking read of `fd`: retried (yielding
/// the CPU between tries) for up to `window` while it finds nothing, then
/// after sleeping in poll(2) until `fd` is readable. Another reader can
/// take the request a sleeper was woken for; it then polls and sleeps again.
fn receive_polling(
    fd: BorrowedFd<'_>,
    window: Duration,
    buf: &mut [u8],
    mut try_read: impl FnMut(&mut [u8]) -> io::Result<usize>,
) -> io::Result<usize> {
    let mut idle_since: Option<Instant> = None;
    loop {
        match try_read(buf) {
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {}
            r => return r,
        }
        let since = *idle_since.get_or_insert_with(Instant::now);
        if since.elapsed() < window {
            std::thread::yield_now();
            continue;
        }
        let mut pfd = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
        match nix::poll::poll(&mut pfd, nix::poll::PollTimeout::NONE) {
            // Readable, or the connection ended: the next read says which.
            Ok(_) | Err(nix::errno::Errno::EINTR) => idle_since = None,
            Err(e) => return Err(e.into()),
        }
    }
}

/// One end of an `AF_UNIX`/`SOCK_SEQPACKET` pair standing in for `/dev/fuse`.
/// Worker threads share the socket: each `recv` still takes one whole message.
#[derive(Clone)]
pub struct SeqPacket {
    fd: Arc<OwnedFd>,
}

impl SeqPacket {
    pub fn pair() -> io::Result<(SeqPacket, SeqPacket)> {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        Ok((SeqPacket { fd: Arc::new(a) }, SeqPacket { fd: Arc::new(b) }))
    }

    /// Wrap a descriptor the caller owns.
    ///
    /// # Safety
    /// `fd` must be an open `SOCK_SEQPACKET` socket nobody else closes.
    pub unsafe fn from_raw_fd(fd: i32) -> SeqPacket {
        SeqPacket {
            fd: Arc::new(OwnedFd::from_raw_fd(fd)),
        }
    }

    /// Shut both directions down, so a server blocked in `receive` sees EOF.
    pub fn shutdown(&self) {
        let _ = nix::sys::socket::shutdown(self.fd.as_raw_fd(), nix::sys::socket::Shutdown::Both);
    }
}

impl Channel for SeqPacket {
    fn receive(&self, buf: &mut [u8]) -> io::Result<usize> {
        // MSG_TRUNC makes recv report the message's real length even when it
        // was cut, which is how an oversized request is told apart.
        // SAFETY: buf is valid for writes of buf.len() bytes.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
    fn send(&self, parts: &[IoSlice<'_>]) -> io::Result<()> {
        writev_all(self.fd.as_fd(), parts)
    }
    fn worker(&self) -> io::Result<Arc<dyn Channel>> {
        Ok(Arc::new(self.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CPU time this thread has used.
    fn thread_cpu() -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: ts is a valid timespec to write.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    fn recv_nowait(s: &SeqPacket, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for writes of buf.len() bytes.
        let n = unsafe {
            libc::recv(
                s.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    #[test]
    fn polling_receive_takes_waiting_and_late_requests_and_sleeps_when_idle() {
        let (a, b) = SeqPacket::pair().unwrap();
        let window = Duration::from_micros(50);
        let mut buf = [0u8; 16];
        let recv =
            |buf: &mut [u8]| receive_polling(b.fd.as_fd(), window, buf, |buf| recv_nowait(&b, buf));
        // Already waiting: taken on the first try.
        a.send(&[IoSlice::new(b"now")]).unwrap();
        assert_eq!(recv(&mut buf).unwrap(), 3);
        // Arriving long after the window: the reader slept in poll(2) and
        // woke for it, having used next to no CPU meanwhile.
        let late = std::thread::spawn({
            let a = a.clone();
            move || {
                std::thread::sleep(Duration::from_millis(300));
                a.send(&[IoSlice::new(b"later")]).unwrap();
            }
        });
        let cpu = thread_cpu();
        assert_eq!(recv(&mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"later");
        let used = thread_cpu() - cpu;
        assert!(
            used < Duration::from_millis(100),
            "spun while idle: {used:?}"
        );
        late.join().unwrap();
        // The peer gone: EOF, not a spin forever.
        a.shutdown();
        assert_eq!(recv(&mut buf).unwrap(), 0);
    }

    #[test]
    fn seqpacket_keeps_messages_whole_and_reports_cut_ones() {
        let (a, b) = SeqPacket::pair().unwrap();
        a.send(&[IoSlice::new(b"abc"), IoSlice::new(b"def")])
            .unwrap();
        a.send(&[IoSlice::new(&[7u8; 200])]).unwrap();
        let mut buf = [0u8; 100];
        assert_eq!(b.receive(&mut buf).unwrap(), 6);
        assert_eq!(&buf[..6], b"abcdef");
        // Cut to the buffer, but the real length is reported.
        assert_eq!(b.receive(&mut buf).unwrap(), 200);
        a.shutdown();
        assert_eq!(b.receive(&mut buf).unwrap(), 0);
    }
}
