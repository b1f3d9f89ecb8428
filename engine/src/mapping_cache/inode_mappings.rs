//! One inode's mapping cache: a read fork, an optional write fork, and the
//! sequence counter that tells a caller whether a mapping it holds is stale.

use alloc::format;
use alloc::string::String;

use super::btree::{Find, ForkTree};
use super::record::{BadRecord, MapType, Mapping};
use super::{Fork, Lookup};

/// The two forks of one inode. A missing write fork means "all writes are
/// pure overwrites" (lookups answer [`Lookup::NoFork`]).
#[derive(Clone, Default)]
pub struct InodeMappings {
    read: ForkTree,
    write: Option<ForkTree>,
    seq: u64,
}

impl InodeMappings {
    pub fn new() -> InodeMappings {
        InodeMappings::default()
    }

    /// A cache whose counter starts at `seq` (so that a re-created inode
    /// never hands out a cookie an earlier incarnation already used).
    pub fn with_seq(seq: u64) -> InodeMappings {
        InodeMappings {
            seq,
            ..InodeMappings::default()
        }
    }

    /// The sequence counter: changes on every change of either fork.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    fn bump(&mut self) {
        self.seq = self.seq.wrapping_add(1);
    }

    pub fn fork(&self, fork: Fork) -> Option<&ForkTree> {
        match fork {
            Fork::Read => Some(&self.read),
            Fork::Write => self.write.as_ref(),
        }
    }

    /// Whether nothing at all is cached (the write fork absent or empty).
    pub fn is_empty(&self) -> bool {
        self.read.is_empty() && self.write.as_ref().is_none_or(|w| w.is_empty())
    }

    /// Heap bytes of both forks.
    pub fn memory_bytes(&self) -> usize {
        self.read.memory_bytes() + self.write.as_ref().map_or(0, |w| w.memory_bytes())
    }

    #[inline]
    pub fn lookup(&self, fork: Fork, off: u64) -> Lookup {
        let Some(t) = self.fork(fork) else {
            return Lookup::NoFork;
        };
        match t.find(off) {
            Find::Hit(m) => Lookup::Hit(m, self.seq),
            Find::Miss { next } => Lookup::Miss { next },
        }
    }

    /// Checks `rec` and finds the fork it goes to; `None` when storing it
    /// is a deliberate no-op (empty record, pure overwrite while the write
    /// fork is absent). Creates the write fork for any other write mapping.
    fn target(&mut self, fork: Fork, rec: &Mapping) -> Result<Option<&mut ForkTree>, BadRecord> {
        if rec.length == 0 {
            return Ok(None);
        }
        rec.validate()?;
        match fork {
            Fork::Read if rec.kind == MapType::PureOverwrite => {
                Err(BadRecord("pure-overwrite mapping in the read fork"))
            }
            Fork::Read => Ok(Some(&mut self.read)),
            Fork::Write if self.write.is_none() && rec.kind == MapType::PureOverwrite => Ok(None),
            Fork::Write => Ok(Some(self.write.get_or_insert_with(ForkTree::new))),
        }
    }

    /// Adds into a hole (overlap is an error and changes nothing).
    pub fn add(&mut self, fork: Fork, rec: Mapping) -> Result<(), BadRecord> {
        let Some(t) = self.target(fork, &rec)? else {
            return Ok(());
        };
        if t.add(rec)? {
            self.bump();
        }
        Ok(())
    }

    /// Removes a file range from one fork. Removing everything keeps a
    /// write fork present (empty): dropping it would claim "pure overwrite"
    /// for writes nobody said anything about.
    pub fn remove(&mut self, fork: Fork, off: u64, len: u64) -> bool {
        let t = match fork {
            Fork::Read => &mut self.read,
            Fork::Write => match &mut self.write {
                Some(t) => t,
                None => return false,
            },
        };
        let changed = t.remove(off, len);
        if changed {
            self.bump();
        }
        changed
    }

    /// Replaces whatever covers `rec`'s range with `rec`.
    pub fn upsert(&mut self, fork: Fork, rec: Mapping) -> Result<(), BadRecord> {
        let Some(t) = self.target(fork, &rec)? else {
            return Ok(());
        };
        if t.upsert(rec)? {
            self.bump();
        }
        Ok(())
    }

    pub fn check_invariants(&self) -> Result<(), String> {
        self.read
            .check_invariants()
            .map_err(|e| format!("read fork: {e}"))?;
        if let Some(w) = &self.write {
            w.check_invariants()
                .map_err(|e| format!("write fork: {e}"))?;
        }
        if self.read.iter().any(|m| m.kind == MapType::PureOverwrite) {
            return Err(String::from("read fork holds a pure-overwrite mapping"));
        }
        Ok(())
    }
}
