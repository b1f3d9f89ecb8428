//! FUSE over io_uring (`-o uring=`, kernel 6.14+): one queue per CPU with
//! a few entries, each entry an io_uring of its own served by one thread
//! pinned to that CPU. The kernel hands a request to an idle entry of the
//! queue of the CPU that issued it; the reply and the wait for the next
//! request are one `COMMIT_AND_FETCH` submission. More than one entry per
//! queue keeps a slow request (an `fsync`) from holding up the other
//! requests of its CPU, as more than one worker does on `/dev/fuse`.
//!
//! A [`Queue`] is a [`Channel`], so the session serves it with the same
//! loop and handlers as `/dev/fuse`: `receive` commits the previous reply
//! (if any), waits for the next request and lays it out as one contiguous
//! message; `send` puts a reply into the entry's buffers. Notifications
//! (`unique` 0), `FORGET`s and `INTERRUPT`s still travel through
//! `/dev/fuse`, which keeps its own workers.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use io_uring::{opcode, squeue, types, IoUring};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

use crate::abi::{self, uring as u, InHeader, OutHeader};
use crate::channel::{Channel, DevFuse};

const IN_HEADER: usize = core::mem::size_of::<InHeader>();
const OUT_HEADER: usize = core::mem::size_of::<OutHeader>();

/// `-o uring=`: `Auto` uses io_uring queues when the kernel offers them,
/// `On` fails the mount unless it does, `Off` serves `/dev/fuse` only.
pub type UringMode = crate::options::AutoOnOff;

/// The module parameter that lets servers use FUSE over io_uring.
pub const ENABLE_PARAM: &str = "/sys/module/fuse/parameters/enable_uring";

/// What to tell a user whose kernel does not offer it.
pub const HOW_TO_ENABLE: &str = "FUSE over io_uring needs Linux 6.14+ built with \
     CONFIG_FUSE_IO_URING and enabled by root: echo Y > /sys/module/fuse/parameters/enable_uring";

/// Whether the running kernel lets servers register rings now.
pub fn kernel_enabled() -> bool {
    std::fs::read_to_string(ENABLE_PARAM).is_ok_and(|v| v.trim() == "Y")
}

/// The kernel makes one queue per possible CPU (`num_possible_cpus`) and
/// uses the rings only once every queue has an entry.
pub fn possible_cpus() -> io::Result<usize> {
    let list = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    let mut n = 0usize;
    for range in list.trim().split(',').filter(|r| !r.is_empty()) {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("cpu list {list:?}"));
        let (a, b) = range.split_once('-').unwrap_or((range, range));
        let (a, b): (usize, usize) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
        n = n.max(b.checked_add(1).filter(|_| a <= b).ok_or_else(bad)?);
    }
    Ok(n)
}

/// One entry of a CPU's queue, on an io_uring of its own (a header and a
/// payload buffer the kernel fills with a request and reads the reply
/// from).
pub struct Queue {
    qid: u16,
    fuse: Arc<DevFuse>,
    entry: Mutex<Entry>,
}

struct Entry {
    ring: IoUring<squeue::Entry128>,
    /// Shared with the kernel while a command is pending: only touched
    /// between a completion and the next submission (under the mutex).
    headers: Box<u::ReqHeader>,
    payload: Box<[u8]>,
    iov: Box<[libc::iovec; 2]>,
    registered: bool,
    /// The request now in our hands (its `commit_id`), and whether its
    /// reply is in the buffers.
    current: Option<u64>,
    replied: bool,
}

// SAFETY: the raw pointers in `iov` point into this entry's own boxes.
unsafe impl Send for Entry {}

impl Queue {
    /// `threads` entries spread over the queues of every possible CPU on
    /// the connection of `fuse` (at least one each), with payload buffers
    /// of `payload` bytes (at least the negotiated `max_write` and
    /// `max_pages`). Made before the sandbox closes `io_uring_setup`;
    /// [`Queue::ring_fd`] names what it must still allow.
    pub fn for_each_cpu(
        fuse: &Arc<DevFuse>,
        payload: usize,
        threads: usize,
    ) -> io::Result<Vec<Arc<Queue>>> {
        let cpus = possible_cpus()?;
        let qids = u16::try_from(cpus).map_err(|_| io::Error::other("too many CPUs"))?;
        (0..threads.div_ceil(cpus.max(1)).max(1))
            .flat_map(|_| 0..qids)
            .map(|qid| Queue::new(fuse.clone(), qid, payload).map(Arc::new))
            .collect()
    }

    fn new(fuse: Arc<DevFuse>, qid: u16, payload: usize) -> io::Result<Queue> {
        let ring = IoUring::<squeue::Entry128>::builder().build(2)?;
        let mut headers = Box::new(u::ReqHeader::new_zeroed());
        let mut payload = vec![0u8; payload].into_boxed_slice();
        let iov = Box::new([
            libc::iovec {
                iov_base: headers.as_mut_bytes().as_mut_ptr().cast(),
                iov_len: core::mem::size_of::<u::ReqHeader>(),
            },
            libc::iovec {
                iov_base: payload.as_mut_ptr().cast(),
                iov_len: payload.len(),
            },
        ]);
        Ok(Queue {
            qid,
            fuse,
            entry: Mutex::new(Entry {
                ring,
                headers,
                payload,
                iov,
                registered: false,
                current: None,
                replied: false,
            }),
        })
    }

    /// The ring's descriptor (the sandbox admits `io_uring_enter` on it).
    pub fn ring_fd(&self) -> RawFd {
        self.lock().ring.as_raw_fd()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entry> {
        self.entry.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn command(&self, e: &Entry, op: u32, commit_id: u64) -> squeue::Entry128 {
        let req = u::CmdReq {
            commit_id,
            qid: self.qid,
            ..Default::default()
        };
        let mut cmd = [0u8; 80];
        cmd[..req.as_bytes().len()].copy_from_slice(req.as_bytes());
        let sqe = opcode::UringCmd80::new(types::Fd(self.fuse.fd().as_raw_fd()), op)
            .cmd(cmd)
            .addr(Some(e.iov.as_ptr() as u64))
            .build();
        with_len(sqe, u::IOV_SEGS)
    }

    /// Submit `sqe` and wait for its completion: the next request (0), or
    /// why there is none.
    fn round_trip(e: &mut Entry, sqe: &squeue::Entry128) -> io::Result<i32> {
        // SAFETY: the buffers the command names live in `e`, which stays
        // locked (and in place) until the completion is taken.
        unsafe { e.ring.submission().push(sqe) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        loop {
            match e.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(err) if err.raw_os_error() == Some(libc::EINTR) => continue,
                Err(err) => return Err(err),
            }
            if let Some(cqe) = e.ring.completion().next() {
                return Ok(cqe.result());
            }
        }
    }
}

/// `UringCmd80` sets no `len`; `REGISTER` needs it (the iovec count).
fn with_len(sqe: squeue::Entry128, len: u32) -> squeue::Entry128 {
    // The 128-byte SQE is `struct io_uring_sqe` (its `len` at byte 24)
    // followed by 64 bytes of command; `Entry128` is `repr(C)` over it.
    const _: () = assert!(core::mem::size_of::<squeue::Entry128>() == 128);
    // SAFETY: same size, and every bit pattern is a valid byte array and
    // (the kernel's ABI) a valid SQE.
    let mut raw: [u8; 128] = unsafe { core::mem::transmute(sqe) };
    raw[24..28].copy_from_slice(&len.to_ne_bytes());
    unsafe { core::mem::transmute(raw) }
}

/// Pin the calling thread to `cpu`: its queue's requests come from there.
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET bounds-checks `cpu`.
    unsafe {
        let mut set: libc::cpu_set_t = core::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        // Best effort: a CPU taken offline only costs locality.
        libc::sched_setaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

impl Channel for Queue {
    fn receive(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut e = self.lock();
        loop {
            let registering = !e.registered;
            let sqe = if registering {
                pin_to(usize::from(self.qid));
                e.registered = true;
                self.command(&e, u::CMD_REGISTER, 0)
            } else {
                let id = e.current.take().unwrap_or(0);
                if !e.replied {
                    // Every request fetched must be committed: one the
                    // handlers did not answer fails.
                    let h = OutHeader {
                        len: OUT_HEADER as u32,
                        error: -libc::EIO,
                        unique: id,
                    };
                    e.headers.in_out[..OUT_HEADER].copy_from_slice(h.as_bytes());
                    e.headers.ent.payload_sz = 0;
                }
                self.command(&e, u::CMD_COMMIT_AND_FETCH, id)
            };
            match Self::round_trip(&mut e, &sqe)? {
                0 => break,
                // The connection ended (unmount, abort) or the ring was torn down.
                r if [
                    libc::ENOTCONN,
                    libc::ECANCELED,
                    libc::ENODEV,
                    libc::ECONNABORTED,
                ]
                .contains(&-r) =>
                {
                    return Ok(0)
                }
                r if registering => return Err(io::Error::from_raw_os_error(-r)),
                r => {
                    // The kernel kept this entry (a commit it could not
                    // match): hand it a fresh one, or this CPU's requests
                    // would wait for an entry forever.
                    crate::log::error(format_args!(
                        "io_uring queue {}: commit failed ({}); registering again",
                        self.qid,
                        io::Error::from_raw_os_error(-r)
                    ));
                    e.registered = false;
                }
            }
        }
        let e = &mut *e;
        let header = InHeader::read_from_prefix(&e.headers.in_out[..])
            .map_err(|_| io::Error::other("in header"))?
            .0;
        let payload = (e.headers.ent.payload_sz as usize).min(e.payload.len());
        // The request's own header (`op_in`) is whatever the total length
        // leaves; a request that does not add up is passed on cut, and
        // the session answers it EINVAL (its length disagrees).
        let total = header.len as usize;
        let op_in = total.saturating_sub(IN_HEADER + payload).min(u::OP_IN_SIZE);
        let parts: [&[u8]; 3] = [
            &e.headers.in_out[..IN_HEADER],
            &e.headers.op_in[..op_in],
            &e.payload[..payload],
        ];
        let mut at = 0;
        for p in parts {
            let n = p.len().min(buf.len() - at);
            buf[at..at + n].copy_from_slice(&p[..n]);
            at += n;
        }
        e.current = Some(e.headers.ent.commit_id);
        e.replied = false;
        let laid_out = IN_HEADER + op_in + payload;
        Ok(if total == laid_out { total } else { laid_out })
    }

    fn send(&self, parts: &[IoSlice<'_>]) -> io::Result<()> {
        let first = parts.first().map(|p| &p[..]).unwrap_or(&[]);
        let unique = OutHeader::read_from_prefix(first)
            .map(|(h, _)| h.unique)
            .map_err(|_| io::Error::other("a reply must start with its whole header"))?;
        if unique == 0 {
            // Notifications go through /dev/fuse (the ring carries replies only).
            return self.fuse.send(parts);
        }
        let mut e = self.lock();
        if e.current != Some(unique) {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        let e = &mut *e;
        let mut body = 0usize;
        let mut header_at = 0usize;
        for p in parts {
            let mut p: &[u8] = p;
            if header_at < OUT_HEADER {
                let n = p.len().min(OUT_HEADER - header_at);
                e.headers.in_out[header_at..header_at + n].copy_from_slice(&p[..n]);
                header_at += n;
                p = &p[n..];
            }
            let room = e.payload.len() - body;
            if p.len() > room {
                return Err(io::Error::other(
                    "reply larger than the ring's payload buffer",
                ));
            }
            e.payload[body..body + p.len()].copy_from_slice(p);
            body += p.len();
        }
        e.headers.ent.payload_sz = body as u32;
        e.replied = true;
        Ok(())
    }

    fn worker(&self) -> io::Result<Arc<dyn Channel>> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a ring queue is served by its own thread",
        ))
    }
}

/// The size of each entry's payload buffer for a session that agreed on
/// `max_write` (the kernel refuses a buffer smaller than its largest
/// request or reply).
pub fn payload_size(max_write: usize) -> usize {
    max_write.max(abi::MIN_READ_BUFFER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_sqe_carries_the_iovec_count() {
        let sqe = opcode::UringCmd80::new(types::Fd(3), u::CMD_REGISTER)
            .addr(Some(0x1000))
            .build();
        let raw: [u8; 128] = unsafe { core::mem::transmute(with_len(sqe, 2)) };
        assert_eq!(raw[0], io_uring::opcode::UringCmd80::CODE);
        assert_eq!(u32::from_ne_bytes(raw[24..28].try_into().unwrap()), 2);
        assert_eq!(u64::from_ne_bytes(raw[16..24].try_into().unwrap()), 0x1000);
        assert_eq!(i32::from_ne_bytes(raw[4..8].try_into().unwrap()), 3);
    }

    #[test]
    fn cpu_count_is_the_highest_possible_cpu_plus_one() {
        assert!(possible_cpus().unwrap() >= 1);
    }
}
