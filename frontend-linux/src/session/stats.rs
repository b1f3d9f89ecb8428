//! Requests and the server's CPU time per opcode (`Config::measure`).

use std::sync::atomic::{AtomicU64, Ordering};

use super::Session;
use crate::backend::Backend;

/// Requests and server CPU time per opcode class, when
/// [`Config::measure`] is on.
pub(super) struct RequestStats {
    pub(super) count: [AtomicU64; STAT_SLOTS],
    pub(super) cpu_ns: [AtomicU64; STAT_SLOTS],
}

impl Default for RequestStats {
    fn default() -> Self {
        RequestStats {
            count: std::array::from_fn(|_| AtomicU64::new(0)),
            cpu_ns: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

pub(super) const STAT_SLOTS: usize = 64;

/// Slot of an opcode: plain opcodes by number, the iomap series above 54.
pub(super) fn stat_slot(op: u32) -> usize {
    match op {
        0..=54 => op as usize,
        4089..=4095 => 55 + (op - 4089) as usize,
        _ => STAT_SLOTS - 1,
    }
}

/// Per-opcode request counts and server CPU time (thread time spent in
/// the handler, reply included).
#[derive(Clone, Debug, Default)]
pub struct OpStats {
    pub opcode: u32,
    pub count: u64,
    pub cpu_ns: u64,
}

pub(super) fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl<B: Backend> Session<B> {
    /// Requests served so far per opcode, with the server's CPU time
    /// ([`Config::measure`] must be on).
    pub fn request_stats(&self) -> Vec<OpStats> {
        let mut v = Vec::new();
        for op in (0..=54).chain(4089..=4095) {
            let i = stat_slot(op);
            let count = self.stats.count[i].load(Ordering::Relaxed);
            if count > 0 {
                v.push(OpStats {
                    opcode: op,
                    count,
                    cpu_ns: self.stats.cpu_ns[i].load(Ordering::Relaxed),
                });
            }
        }
        v
    }

    /// [`Session::request_stats`] as a table: per opcode the requests, the
    /// server's CPU time for them and per request, most requests first;
    /// then the totals.
    pub fn stats_table(&self) -> String {
        let mut v = self.request_stats();
        v.sort_by_key(|s| core::cmp::Reverse(s.count));
        let mut t = format!(
            "{:<16} {:>10} {:>10} {:>8}\n",
            "request", "count", "cpu ms", "us/req"
        );
        let per = |ns: u64, n: u64| ns as f64 / 1e3 / n.max(1) as f64;
        for s in &v {
            t += &format!(
                "{:<16} {:>10} {:>10.1} {:>8.1}\n",
                super::opcode_name(s.opcode),
                s.count,
                s.cpu_ns as f64 / 1e6,
                per(s.cpu_ns, s.count)
            );
        }
        let (n, ns) = v
            .iter()
            .fold((0, 0), |(n, ns), s| (n + s.count, ns + s.cpu_ns));
        t += &format!(
            "{:<16} {:>10} {:>10.1} {:>8.1}\n",
            "total",
            n,
            ns as f64 / 1e6,
            per(ns, n)
        );
        t
    }
}
