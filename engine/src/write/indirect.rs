//! Block-mapped (ext2/ext3, `^extent`) files: the block map's edits.
//! Twelve direct pointers in `i_block`, then single, double and triple
//! indirect tables of `block_size / 4` pointers. New tables are allocated
//! right before the data they map (as the kernel's `ext4_alloc_branch`
//! does, so a sequential file stays contiguous for `e2fsck`), created
//! zeroed in the block cache; tables left all-zero by a removal are freed
//! and unlinked up to `i_block`. Pointers are 32-bit: blocks for these
//! files come from below 2^32. Every pointer read is checked to lie in
//! the filesystem before it is followed.

use alloc::vec::Vec;

use crate::device::BlockDevice;
use crate::error::{Error, Object, Result};
use crate::inode::Inode;
use crate::numbers::PhysBlock;
use crate::txn::Handle;
use crate::volume::Volume;
use crate::writable::Cred;

use super::extent::Progress;

/// Blocks a block-mapped file may use: pointers are 32 bits.
pub const BLOCK_LIMIT: u64 = 1 << 32;
/// Most separate runs of data blocks one removal step frees (each may
/// touch two groups' bitmaps and descriptors).
const RUNS_PER_STEP: usize = 8;

/// Credits of one allocation ([`Volume::ind_alloc`]): up to three new
/// tables and the data run (bitmaps and descriptors of two groups each),
/// the tables and their parents, and the inode.
pub const ALLOC_STEP_CREDITS: usize = 4 * 4 + 4 + 1;
/// Credits of one removal step: the freed runs, the table and up to three
/// ancestors freed with their allocation, and the inode.
pub const REMOVE_STEP_CREDITS: usize = RUNS_PER_STEP * 4 + 4 * 3 + 1;
/// Credits of undoing one [`Volume::ind_alloc`] in the same handle: one
/// run in one table, and the tables it emptied.
pub const UNDO_ALLOC_CREDITS: usize = 4 + 4 * 3 + 1;

fn regular(inode: &Inode) -> bool {
    inode.kind == Some(crate::attr::FileType::Regular)
}

fn word(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i * 4], b[i * 4 + 1], b[i * 4 + 2], b[i * 4 + 3]])
}
fn set_word(b: &mut [u8], i: usize, v: u32) {
    b[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
}

/// Where a logical block's pointer lives: the `i_block` slot, then the
/// index in each table below it (0 to 3 of them).
#[derive(Clone, Copy, Debug)]
struct Route {
    slot: usize,
    idx: [usize; 3],
    levels: usize,
}

/// The pointer tables and blocks on the way to one logical block: `tables[k]`
/// is the table at level `k + 1` (`None`: missing).
#[derive(Clone, Copy, Debug)]
struct Walk {
    route: Route,
    tables: [Option<u64>; 3],
}

impl<D: BlockDevice> Volume<D> {
    fn ptrs(&self) -> u64 {
        (self.sb().block_size / 4) as u64
    }

    /// The route to logical block `l`, or EFBIG past what the map reaches.
    fn route(&self, l: u64) -> Result<Route> {
        let p = self.ptrs();
        if l < 12 {
            return Ok(Route {
                slot: l as usize,
                idx: [0; 3],
                levels: 0,
            });
        }
        let mut rel = l - 12;
        let mut span = p;
        for (slot, levels) in [(12usize, 1usize), (13, 2), (14, 3)] {
            if rel < span {
                let mut idx = [0usize; 3];
                let mut unit = span / p;
                for (k, x) in idx.iter_mut().enumerate().take(levels) {
                    *x = (rel / unit) as usize;
                    rel %= unit;
                    if k + 1 < levels {
                        unit /= p;
                    }
                }
                return Ok(Route { slot, idx, levels });
            }
            rel -= span;
            span *= p;
        }
        Err(Error::FileTooBig)
    }

    /// The first logical block the table at `level` (1-based) of `route`
    /// maps, and how many blocks it spans.
    fn table_range(&self, route: &Route, level: usize) -> (u64, u64) {
        let p = self.ptrs();
        let base = match route.slot {
            12 => 12,
            13 => 12 + p,
            _ => 12 + p + p * p,
        };
        let mut start = base;
        let mut span = p.pow(route.levels as u32);
        for k in 0..level - 1 {
            span /= p;
            start += route.idx[k] as u64 * span;
        }
        (start, span)
    }

    /// A table pointer read from disk, checked.
    fn table_ptr(&self, v: u32, obj: Object) -> Result<Option<u64>> {
        if v == 0 {
            return Ok(None);
        }
        if !self.blocks_in_fs(PhysBlock(v as u64), 1) {
            return Err(Error::corrupt(
                obj,
                "indirect block pointer points outside the filesystem",
            ));
        }
        Ok(Some(v as u64))
    }

    /// Follow the route to `l` as far as tables exist.
    fn walk(&self, inode: &Inode, l: u64) -> Result<Walk> {
        let route = self.route(l)?;
        let mut tables = [None; 3];
        let mut ptr = inode.block_word(route.slot);
        let mut obj = Object::Inode(inode.ino);
        for (k, slot) in tables.iter_mut().enumerate().take(route.levels) {
            let Some(t) = self.table_ptr(ptr, obj)? else {
                break;
            };
            *slot = Some(t);
            if k + 1 < route.levels {
                let i = route.idx[k];
                ptr = self.cache_read_with(PhysBlock(t), |b| word(b, i))?;
                obj = Object::Block(PhysBlock(t));
            }
        }
        Ok(Walk { route, tables })
    }

    /// Where data for logical block `l` should go (the kernel's
    /// `ext4_find_near`): the nearest mapped block before it in its
    /// pointer table, else the table itself, else the inode's group.
    pub(crate) fn ind_goal(&self, inode: &Inode, l: u64) -> Result<PhysBlock> {
        let w = self.walk(inode, l)?;
        let r = &w.route;
        if r.levels == 0 || w.tables[r.levels - 1].is_some() {
            let (prev, table) = if r.levels == 0 {
                (
                    (0..r.slot)
                        .rev()
                        .map(|i| inode.block_word(i))
                        .find(|&v| v != 0),
                    None,
                )
            } else {
                let t = w.tables[r.levels - 1].unwrap_or(0);
                let i = r.idx[r.levels - 1];
                let v = self.cache_read_with(PhysBlock(t), |b| {
                    (0..i).rev().map(|j| word(b, j)).find(|&v| v != 0)
                })?;
                (v, Some(t))
            };
            if let Some(v) = prev {
                return Ok(PhysBlock(v as u64));
            }
            if let Some(t) = table {
                return Ok(PhysBlock(t));
            }
            return Ok(self.inode_goal(inode.ino, regular(inode)));
        }
        // Tables are missing: the deepest existing one, or the pointers
        // before the route's slot in `i_block`.
        if let Some(t) = w.tables.iter().rev().flatten().next() {
            return Ok(PhysBlock(*t));
        }
        let prev = (0..r.slot)
            .rev()
            .map(|i| inode.block_word(i))
            .find(|&v| v != 0);
        Ok(match prev {
            Some(v) => PhysBlock(v as u64),
            None => self.inode_goal(inode.ino, regular(inode)),
        })
    }

    /// Map up to `want` blocks of a hole starting at logical block `l`
    /// (all inside one pointer table): the missing tables on the way are
    /// allocated first, then the data run right after them, first fit from
    /// the kernel's goal, below 2^32. Returns the data run (at least one
    /// block). The caller writes the data blocks' contents before the
    /// transaction commits. ENOSPC changes nothing. `i_blocks` counts the
    /// tables and the data. [`ALLOC_STEP_CREDITS`].
    pub(crate) fn ind_alloc(
        &self,
        h: &mut Handle<'_, D>,
        inode: &mut Inode,
        l: u64,
        want: u32,
        cred: &Cred,
    ) -> Result<(PhysBlock, u32)> {
        let w = self.walk(inode, l)?;
        let r = w.route;
        // Pointers left in the last table (or the direct slots).
        let room = if r.levels == 0 {
            12 - r.slot as u64
        } else {
            self.ptrs() - r.idx[r.levels - 1] as u64
        };
        let want = (want as u64).min(room).max(1) as u32;
        let missing = (0..r.levels).filter(|&k| w.tables[k].is_none()).count();
        let mut goal = self.ind_goal(inode, l)?;
        let mut new_tables: Vec<u64> = Vec::with_capacity(missing);
        let undo = |h: &mut Handle<'_, D>, t: &[u64]| -> Result<()> {
            for &b in t {
                self.free_blocks(h, PhysBlock(b), 1)?;
            }
            Ok(())
        };
        for _ in 0..missing {
            match self.alloc_clusters(h, goal, 1, cred, true, BLOCK_LIMIT) {
                Ok((b, _)) => {
                    goal = PhysBlock(b.0 + 1);
                    new_tables.push(b.0);
                }
                Err(e) => {
                    undo(h, &new_tables)?;
                    return Err(e);
                }
            }
        }
        let (data, n) = match self.alloc_clusters(h, goal, want, cred, false, BLOCK_LIMIT) {
            Ok(x) => x,
            Err(e) => {
                undo(h, &new_tables)?;
                return Err(e);
            }
        };
        // Link: fresh tables are zeroed, then each gets its pointer.
        let mut tables = w.tables;
        let mut fresh = new_tables.iter();
        for t in tables.iter_mut().take(r.levels) {
            if t.is_none() {
                let b = *fresh.next().ok_or(Error::corrupt(
                    Object::Inode(inode.ino),
                    "indirect map changed during an allocation",
                ))?;
                h.create(PhysBlock(b), |_| ())?;
                *t = Some(b);
            }
        }
        for k in 0..r.levels {
            let t = tables[k].unwrap_or(0) as u32;
            if w.tables[k].is_none() {
                if k == 0 {
                    set_word(&mut inode.block, r.slot, t);
                } else {
                    let parent = tables[k - 1].unwrap_or(0);
                    let i = r.idx[k - 1];
                    h.modify(PhysBlock(parent), |b| set_word(b, i, t))?;
                }
            }
        }
        if r.levels == 0 {
            for j in 0..n as usize {
                set_word(&mut inode.block, r.slot + j, (data.0 + j as u64) as u32);
            }
        } else {
            let t = tables[r.levels - 1].unwrap_or(0);
            let i = r.idx[r.levels - 1];
            h.modify(PhysBlock(t), |b| {
                for j in 0..n as usize {
                    set_word(b, i + j, (data.0 + j as u64) as u32);
                }
            })?;
        }
        let unit = self.sb().block_size as u64 / 512;
        inode.blocks_512 += (new_tables.len() as u64 + n as u64) * unit;
        Ok((data, n))
    }

    /// The last logical block below `to` and at or past `from` that `inode`
    /// maps, searching the tables from the end (subtrees without pointers
    /// are skipped whole).
    fn ind_last_mapped(&self, inode: &Inode, from: u64, to: u64) -> Result<Option<u64>> {
        let p = self.ptrs();
        let top = [
            (12usize, 12u64, p),
            (13, 12 + p, p * p),
            (14, 12 + p + p * p, p * p * p),
        ];
        for &(slot, base, span) in top.iter().rev() {
            if base >= to || base + span <= from {
                continue;
            }
            let ptr = self.table_ptr(inode.block_word(slot), Object::Inode(inode.ino))?;
            if let Some(t) = ptr {
                if let Some(l) = self.table_last(t, base, span, from, to)? {
                    return Ok(Some(l));
                }
            }
        }
        for slot in (0..12usize).rev() {
            let l = slot as u64;
            if l >= from && l < to && inode.block_word(slot) != 0 {
                return Ok(Some(l));
            }
        }
        Ok(None)
    }

    /// The last mapped logical block in `from..to` under table `t`, which
    /// maps `span` blocks from `base`.
    fn table_last(&self, t: u64, base: u64, span: u64, from: u64, to: u64) -> Result<Option<u64>> {
        let p = self.ptrs();
        let unit = span / p;
        let hi = ((to.min(base + span) - base - 1) / unit) as usize;
        let lo = (from.saturating_sub(base) / unit) as usize;
        let ptrs: Vec<u32> =
            self.cache_read_with(PhysBlock(t), |b| (lo..=hi).map(|i| word(b, i)).collect())?;
        for (k, &v) in ptrs.iter().enumerate().rev() {
            if v == 0 {
                continue;
            }
            let i = lo + k;
            let start = base + i as u64 * unit;
            if unit == 1 {
                return Ok(Some(start));
            }
            let child = self.table_ptr(v, Object::Block(PhysBlock(t)))?.unwrap_or(0);
            if let Some(l) = self.table_last(child, start, unit, from, to)? {
                return Ok(Some(l));
            }
        }
        Ok(None)
    }

    /// One step of removing what block-mapped `inode` maps in logical
    /// blocks `from..to`, from the end: the pointers of the last mapped
    /// piece's table (at most [`RUNS_PER_STEP`] runs of blocks) are
    /// cleared and the blocks freed; tables left without pointers are freed
    /// and unlinked up to `i_block`. Returns where to continue.
    /// [`REMOVE_STEP_CREDITS`].
    pub(crate) fn ind_remove_step(
        &self,
        h: &mut Handle<'_, D>,
        inode: &mut Inode,
        from: u64,
        to: u64,
    ) -> Result<Progress> {
        let Some(last) = self.ind_last_mapped(inode, from, to)? else {
            return Ok(Progress::Done);
        };
        let w = self.walk(inode, last)?;
        let r = w.route;
        let unit = self.sb().block_size as u64 / 512;
        // The pointers to clear: from `last` down within its table, to
        // `from`, stopping after RUNS_PER_STEP runs.
        let (tstart, _) = if r.levels == 0 {
            (0, 12)
        } else {
            self.table_range(&r, r.levels)
        };
        let lo_l = from.max(tstart);
        let hi_i = (last - tstart) as usize;
        let lo_i = (lo_l - tstart) as usize;
        let read = |i: usize| -> Result<u32> {
            if r.levels == 0 {
                Ok(inode.block_word(i))
            } else {
                let t = w.tables[r.levels - 1].unwrap_or(0);
                self.cache_read_with(PhysBlock(t), |b| word(b, i))
            }
        };
        let obj = match r.levels {
            0 => Object::Inode(inode.ino),
            n => Object::Block(PhysBlock(w.tables[n - 1].unwrap_or(0))),
        };
        let mut runs: Vec<(u64, u64)> = Vec::with_capacity(RUNS_PER_STEP);
        let mut stop = lo_i;
        let mut i = hi_i + 1;
        while i > lo_i {
            i -= 1;
            let v = read(i)? as u64;
            if v == 0 {
                continue;
            }
            if !self.blocks_in_fs(PhysBlock(v), 1) {
                return Err(Error::corrupt(
                    obj,
                    "block pointer points outside the filesystem",
                ));
            }
            if let Some(run) = runs.last_mut().filter(|r| r.0 == v + 1) {
                run.0 = v;
                run.1 += 1;
            } else if runs.len() == RUNS_PER_STEP {
                stop = i + 1;
                break;
            } else {
                runs.push((v, 1));
            }
        }
        // Clear, then free.
        if r.levels == 0 {
            for j in stop..=hi_i {
                set_word(&mut inode.block, j, 0);
            }
        } else {
            let t = w.tables[r.levels - 1].unwrap_or(0);
            h.modify(PhysBlock(t), |b| {
                for j in stop..=hi_i {
                    set_word(b, j, 0);
                }
            })?;
        }
        for &(b, n) in &runs {
            self.free_blocks(h, PhysBlock(b), n)?;
            inode.blocks_512 = inode.blocks_512.saturating_sub(n * unit);
        }
        // Tables left empty go, from the deepest up.
        for k in (0..r.levels).rev() {
            let t = w.tables[k].unwrap_or(0);
            let empty =
                self.cache_read_with(PhysBlock(t), |b| (0..b.len() / 4).all(|i| word(b, i) == 0))?;
            if !empty {
                break;
            }
            if k == 0 {
                set_word(&mut inode.block, r.slot, 0);
            } else {
                let parent = w.tables[k - 1].unwrap_or(0);
                let i = r.idx[k - 1];
                h.modify(PhysBlock(parent), |b| set_word(b, i, 0))?;
            }
            self.free_blocks(h, PhysBlock(t), 1)?;
            inode.blocks_512 = inode.blocks_512.saturating_sub(unit);
        }
        let resume = tstart + stop as u64;
        Ok(if resume > from {
            Progress::At(resume)
        } else {
            Progress::At(from)
        })
    }
}
