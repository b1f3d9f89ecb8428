//! A deliberately plain model of one fork (a `BTreeMap` keyed by offset,
//! same merge rules), the oracle of the property tests and the baseline
//! of the benchmarks. Not for production use.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::ops::Bound::{Excluded, Unbounded};

use super::record::{BadRecord, Mapping, OFFSET_LIMIT};

#[derive(Clone, Default, Debug, PartialEq, Eq)]
pub struct ModelFork {
    pub map: BTreeMap<u64, Mapping>,
}

impl ModelFork {
    pub fn new() -> Self {
        ModelFork::default()
    }

    pub fn records(&self) -> Vec<Mapping> {
        self.map.values().copied().collect()
    }

    /// (record covering `off`, first record starting after `off`).
    pub fn lookup(&self, off: u64) -> (Option<Mapping>, Option<Mapping>) {
        let hit = self
            .map
            .range(..=off)
            .next_back()
            .map(|(_, m)| *m)
            .filter(|m| m.covers(off));
        let next = self
            .map
            .range((Excluded(off), Unbounded))
            .next()
            .map(|(_, m)| *m);
        (hit, next)
    }

    pub fn add(&mut self, rec: Mapping) -> Result<(), BadRecord> {
        if rec.length == 0 {
            return Ok(());
        }
        rec.validate()?;
        let pred = self.map.range(..rec.offset).next_back().map(|(_, m)| *m);
        let succ = self.map.range(rec.offset..).next().map(|(_, m)| *m);
        if pred.is_some_and(|p| p.end() > rec.offset) || succ.is_some_and(|s| s.offset < rec.end())
        {
            return Err(BadRecord("mapping overlaps a cached mapping"));
        }
        let mut new = rec;
        let both = match (pred, succ) {
            (Some(p), Some(s)) => {
                p.can_merge(&rec)
                    && rec.can_merge(&s)
                    && s.length as u128 + p.length as u128 + rec.length as u128 <= 1 << 63
            }
            _ => false,
        };
        let left = pred.is_some_and(|p| p.can_merge(&rec));
        if both || left {
            let p = pred.unwrap_or(rec);
            self.map.remove(&p.offset);
            new = Mapping {
                length: p.length + new.length,
                ..p
            };
        }
        if both || (!left && succ.is_some_and(|s| rec.can_merge(&s))) {
            let s = succ.unwrap_or(rec);
            self.map.remove(&s.offset);
            new.length += s.length;
        }
        self.map.insert(new.offset, new);
        Ok(())
    }

    pub fn remove(&mut self, off: u64, len: u64) {
        if len == 0 {
            return;
        }
        let end = off.saturating_add(len);
        // Ends ascend like offsets, so the overlapping records are a run
        // ending just before `end`.
        let hit: Vec<Mapping> = self
            .map
            .range(..end)
            .rev()
            .map(|(_, m)| *m)
            .take_while(|m| m.end() > off)
            .collect();
        let (mut left, mut right) = (None, None);
        for r in hit {
            self.map.remove(&r.offset);
            if r.offset < off {
                let l = Mapping {
                    length: off - r.offset,
                    ..r
                };
                self.map.insert(l.offset, l);
                left = Some(l);
            }
            if r.end() > end && end < OFFSET_LIMIT {
                let skip = end - r.offset;
                let addr = if r.kind.has_addr() {
                    r.addr + skip
                } else {
                    r.addr
                };
                let t = Mapping {
                    offset: end,
                    length: r.end() - end,
                    addr,
                    ..r
                };
                self.map.insert(t.offset, t);
                right = Some(t);
            }
        }
        // Shortened pieces may now merge with their outer neighbours.
        if let Some(t) = right {
            if let Some(s) = self.map.range(t.end()..).next().map(|(_, m)| *m) {
                self.join(t, s);
            }
        }
        if let Some(l) = left {
            if let Some(p) = self.map.range(..l.offset).next_back().map(|(_, m)| *m) {
                self.join(p, l);
            }
        }
    }

    /// Merge stored neighbours `a` and `b` (in that order) if they may be
    /// one record.
    fn join(&mut self, a: Mapping, b: Mapping) {
        if a.can_merge(&b) {
            self.map.remove(&b.offset);
            self.map.insert(
                a.offset,
                Mapping {
                    length: a.length + b.length,
                    ..a
                },
            );
        }
    }

    pub fn upsert(&mut self, rec: Mapping) -> Result<(), BadRecord> {
        if rec.length == 0 {
            return Ok(());
        }
        rec.validate()?;
        self.remove(rec.offset, rec.length);
        self.add(rec)
    }
}
