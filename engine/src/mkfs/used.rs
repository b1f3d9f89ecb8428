//! Which blocks a filesystem being laid out uses, as ranges, and the
//! searches `libext2fs` makes over its block bitmap
//! (`ext2fs_get_free_blocks2`, `ext2fs_new_block2`), so that tables, the
//! root directory and the journal land where mke2fs puts them. Memory
//! grows with the number of used ranges (a few per group), not with the
//! filesystem's size.

use alloc::collections::BTreeMap;

pub(super) struct Used {
    /// start -> end (exclusive); ranges never touch or overlap.
    ranges: BTreeMap<u64, u64>,
    /// Blocks in the filesystem.
    pub blocks: u64,
    pub first_data_block: u64,
}

impl Used {
    pub fn new(blocks: u64, first_data_block: u64) -> Used {
        Used {
            ranges: BTreeMap::new(),
            blocks,
            first_data_block,
        }
    }

    /// Mark `n` blocks from `b` used.
    pub fn mark(&mut self, b: u64, n: u64) {
        if n == 0 {
            return;
        }
        let (mut s, mut e) = (b, b + n);
        // Absorb every range that touches or overlaps [s, e).
        while let Some((&rs, &re)) = self.ranges.range(..=e).next_back() {
            if re < s {
                break;
            }
            self.ranges.remove(&rs);
            s = s.min(rs);
            e = e.max(re);
        }
        self.ranges.insert(s, e);
    }

    /// The end of a used range overlapping `[b, b + n)`, if any.
    fn blocked_until(&self, b: u64, n: u64) -> Option<u64> {
        let (_, &e) = self.ranges.range(..b + n).next_back()?;
        (e > b).then_some(e)
    }

    /// `ext2fs_get_free_blocks2`: the first `num` free blocks in a row
    /// starting in `[start, finish)`, wrapping to the first data block when
    /// `finish <= start` (0 means "the first data block" for `start` and
    /// "`start`" for `finish`).
    pub fn get_free(&self, start: u64, finish: u64, num: u64) -> Option<u64> {
        let num = num.max(1);
        let mut b = if start == 0 {
            self.first_data_block
        } else {
            start
        };
        let finish = if finish == 0 { start } else { finish };
        let wraps = finish <= start;
        let mut wrapped = false;
        loop {
            if b + num > self.blocks {
                if !wraps || wrapped {
                    return None;
                }
                b = self.first_data_block;
                wrapped = true;
            }
            if (!wraps || wrapped) && b >= finish {
                return None;
            }
            match self.blocked_until(b, num) {
                None => return Some(b),
                Some(e) => b = e.max(b + 1),
            }
        }
    }

    /// `ext2fs_new_block2`: the first free block at or after `goal`,
    /// wrapping around.
    pub fn new_block(&self, goal: u64) -> Option<u64> {
        let goal = if goal < self.first_data_block || goal >= self.blocks {
            self.first_data_block
        } else {
            goal
        };
        self.get_free(goal, goal, 1)
    }

    /// Free blocks in a row from the free block `b` (to the end of the
    /// filesystem at most).
    pub fn free_run(&self, b: u64) -> u64 {
        let end = self
            .ranges
            .range(b..)
            .next()
            .map_or(self.blocks, |(&s, _)| s);
        end.min(self.blocks).saturating_sub(b)
    }

    /// Used blocks in `[from, to)`.
    pub fn count(&self, from: u64, to: u64) -> u64 {
        self.each(from, to).map(|(s, e)| e - s).sum()
    }

    /// The used ranges, clipped to `[from, to)`.
    pub fn each(&self, from: u64, to: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let before = self
            .ranges
            .range(..from)
            .next_back()
            .filter(|&(_, &e)| e > from)
            .map(|(&s, &e)| (s, e));
        before
            .into_iter()
            .chain(self.ranges.range(from..to).map(|(&s, &e)| (s, e)))
            .map(move |(s, e)| (s.max(from), e.min(to)))
            .filter(|(s, e)| s < e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_merge_and_searches_skip() {
        let mut u = Used::new(100, 1);
        u.mark(1, 3);
        u.mark(10, 5);
        u.mark(4, 2); // touches 1..4
        assert_eq!(
            u.each(0, 100).collect::<alloc::vec::Vec<_>>(),
            [(1, 6), (10, 15)]
        );
        assert_eq!(u.count(3, 12), 5);
        assert_eq!(u.get_free(1, 99, 4), Some(6));
        assert_eq!(u.get_free(1, 99, 5), Some(15));
        assert_eq!(u.get_free(11, 14, 1), None);
        assert_eq!(u.get_free(98, 98, 4), Some(6), "wraps to the start");
        assert_eq!(u.new_block(12), Some(15));
        assert_eq!(u.new_block(0), Some(6));
    }
}
