//! What the live part of the log holds, for the journal writer: which
//! filesystem blocks have copies there (and from which transaction), the
//! transactions between the tail and the head, and the running
//! transaction's revoke records.
//!
//! Two questions need it:
//! - a block being freed: does the log hold a copy that replay would write
//!   over whatever the block holds next? Then it gets a revoke record.
//! - a checkpoint: up to which transaction are the logged blocks home, so
//!   the tail may move past them? A block is home once its buffer has been
//!   seen clean after its last logging (written back or evicted, which
//!   writes back); the checkpoint flushes the device before it moves the
//!   tail, so "seen clean" then means durable.
//!
//! Memory: [`Live::cap`] entries and [`Live::txn_cap`] transactions,
//! allocated at open and never grown: the writer checkpoints (or commits)
//! before it would need more.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use hashbrown::HashMap;

use super::format::tid_gt;
use crate::block_cache::BlockCache;
use crate::device::BlockDevice;

/// One block with a copy in the live log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    /// The newest transaction that logged it.
    tid: u32,
    /// Its home location holds what that transaction logged.
    home: bool,
    /// Freed by the running transaction: its revoke record is pending.
    freed: bool,
    /// Freed by the committing transaction: its revoke record is being
    /// written.
    revoking: bool,
}

/// One durable transaction of the live log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveTxn {
    pub tid: u32,
    /// First log position and length in blocks.
    pub start: u32,
    pub len: u32,
}

pub struct Live {
    map: HashMap<u64, Entry>,
    cap: usize,
    txns: VecDeque<LiveTxn>,
    txn_cap: usize,
    /// Revoke records of the running transaction.
    revokes: Vec<u64>,
}

impl Live {
    /// Room for `cap` blocks and `txn_cap` transactions.
    pub fn new(cap: usize, txn_cap: usize) -> Live {
        Live {
            map: HashMap::with_capacity(cap),
            cap,
            txns: VecDeque::with_capacity(txn_cap),
            txn_cap,
            revokes: Vec::with_capacity(cap),
        }
    }

    /// Blocks with copies in the live log (or revokes pending).
    pub fn blocks(&self) -> usize {
        self.map.len()
    }
    pub fn cap(&self) -> usize {
        self.cap
    }
    pub fn txns(&self) -> usize {
        self.txns.len()
    }
    pub fn txn_cap(&self) -> usize {
        self.txn_cap
    }
    /// Revoke records the running transaction has so far.
    pub fn pending_revokes(&self) -> usize {
        self.revokes.len()
    }

    /// Blocks `start..start+len` are being freed by the running
    /// transaction: those with copies in the live log get a revoke record.
    pub fn forget(&mut self, start: u64, len: u64) {
        let end = start.saturating_add(len);
        let mark = |b: u64, e: &mut Entry, revokes: &mut Vec<u64>| {
            // Freed again before the revoke committed cannot happen (the
            // block stays busy until then); a second free changes nothing.
            if !e.freed && !e.revoking {
                e.freed = true;
                revokes.push(b);
            }
        };
        if len <= self.map.len() as u64 {
            for b in start..end {
                if let Some(e) = self.map.get_mut(&b) {
                    mark(b, e, &mut self.revokes);
                }
            }
        } else {
            for (&b, e) in self.map.iter_mut() {
                if (start..end).contains(&b) {
                    mark(b, e, &mut self.revokes);
                }
            }
        }
    }

    /// The committing transaction takes the running one's revoke records
    /// into `out` (whose room the running transaction gets instead).
    pub fn take_revokes(&mut self, out: &mut Vec<u64>) {
        out.clear();
        core::mem::swap(out, &mut self.revokes);
        for b in out.iter() {
            if let Some(e) = self.map.get_mut(b) {
                e.freed = false;
                e.revoking = true;
            }
        }
    }

    /// Block `b` is logged by transaction `tid` (being committed).
    /// `false` when there is no room (checkpoint first).
    pub fn logged(&mut self, b: u64, tid: u32) -> bool {
        if self.map.len() >= self.cap && !self.map.contains_key(&b) {
            return false;
        }
        self.map.insert(
            b,
            Entry {
                tid,
                home: false,
                freed: false,
                revoking: false,
            },
        );
        true
    }

    /// Transaction `t` is durable: its revoke records (`revoked`, as
    /// taken) cover the older copies of those blocks, which need no more
    /// tracking.
    pub fn committed(&mut self, t: LiveTxn, revoked: &[u64]) {
        for b in revoked {
            if self.map.get(b).is_some_and(|e| e.revoking) {
                self.map.remove(b);
            }
        }
        self.txns.push_back(t);
    }

    /// Whether room for another transaction remains.
    pub fn txn_room(&self) -> bool {
        self.txns.len() < self.txn_cap
    }

    /// The oldest transaction whose logged blocks are not all home, seen
    /// after a write-back: blocks whose buffers are clean now are marked
    /// home. `None`: every logged block is home.
    pub fn hold<D: BlockDevice>(&mut self, cache: &BlockCache<D>) -> Option<u32> {
        let mut hold: Option<u32> = None;
        let mut older = |t: u32| {
            if hold.is_none_or(|h| tid_gt(h, t)) {
                hold = Some(t);
            }
        };
        for (&b, e) in self.map.iter_mut() {
            if e.home {
                continue;
            }
            // A freed block's buffer is gone with what it held: its copy
            // must stay replayable until the revoke record is durable.
            if e.freed || e.revoking || cache.is_dirty(b) {
                older(e.tid);
            } else {
                e.home = true;
            }
        }
        hold
    }

    /// Where transaction `tid` starts, if it is live.
    pub fn start_of(&self, tid: u32) -> Option<u32> {
        self.txns.iter().find(|t| t.tid == tid).map(|t| t.start)
    }

    /// The tail moved to transaction `tid`: forget what is older.
    pub fn prune(&mut self, tid: u32) {
        while self.txns.front().is_some_and(|t| tid_gt(tid, t.tid)) {
            self.txns.pop_front();
        }
        self.map.retain(|_, e| !tid_gt(tid, e.tid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::MemDevice;

    fn cache() -> BlockCache<MemDevice> {
        BlockCache::new(MemDevice::new(1 << 20), 1024, 64 << 10)
    }

    /// Freed blocks with live copies get one revoke record each, looked
    /// up either way round (range or map), and hold the tail until the
    /// revoke is durable.
    #[test]
    fn revokes_cover_live_copies_only() {
        let c = cache();
        let mut l = Live::new(16, 4);
        for b in [3, 7, 9, 500] {
            assert!(l.logged(b, 10));
        }
        l.forget(0, 8); // longer than the map: the map is walked
        l.forget(9, 1); // shorter: the range is walked
        l.forget(9, 1); // twice: one record
        let mut r = Vec::with_capacity(16);
        l.take_revokes(&mut r);
        r.sort();
        assert_eq!(r, [3, 7, 9]);
        // Revoking blocks hold the tail though their buffers are clean.
        assert_eq!(l.hold(&c), Some(10));
        l.committed(
            LiveTxn {
                tid: 11,
                start: 1,
                len: 3,
            },
            &r,
        );
        assert_eq!(l.blocks(), 1);
        assert_eq!(l.hold(&c), None, "500 is clean: home");
    }

    /// A dirty buffer holds the tail at its newest logging; once clean it
    /// is home and stays so; prune drops what the tail passed.
    #[test]
    fn hold_follows_dirty_buffers() {
        let c = cache();
        let mut l = Live::new(16, 4);
        l.logged(5, u32::MAX - 1);
        l.logged(6, u32::MAX);
        l.logged(7, 0);
        c.write(6, &[1u8; 1024]).unwrap();
        c.write(7, &[1u8; 1024]).unwrap();
        // Ids wrap: u32::MAX is older than 0.
        assert_eq!(l.hold(&c), Some(u32::MAX));
        c.flush().unwrap();
        assert_eq!(l.hold(&c), None);
        c.write(6, &[2u8; 1024]).unwrap();
        assert_eq!(l.hold(&c), None, "home already holds what was logged");
        l.prune(0);
        assert_eq!(l.blocks(), 1, "only the copy of transaction 0 is left");
    }

    #[test]
    fn room_is_fixed() {
        let mut l = Live::new(2, 1);
        assert!(l.logged(1, 1) && l.logged(2, 1));
        assert!(!l.logged(3, 1), "full");
        assert!(l.logged(2, 2), "an update needs no room");
        assert!(l.txn_room());
        l.committed(
            LiveTxn {
                tid: 2,
                start: 1,
                len: 2,
            },
            &[],
        );
        assert!(!l.txn_room());
        assert_eq!(l.start_of(2), Some(1));
        l.prune(3);
        assert!(l.txn_room() && l.blocks() == 0);
    }
}
