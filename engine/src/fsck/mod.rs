//! A consistency check that reads every group, every in-use inode and
//! everything they point to, verifying every checksum and structural rule
//! the engine knows. Problems are reported one by one; the walk goes on.
//!
//! It flags only what the kernel's ext4 or `e2fsck` would also call damage,
//! so an image `e2fsck -fn` passes checks clean.
//!
//! Besides each object on its own, the walk gathers what `e2fsck`'s passes
//! compare globally (see [`global`]): link counts against directory
//! entries, directory connectivity, and the bitmaps and free counts against
//! what inodes and metadata really use.
//!
//! Rooms: this file walks the groups (bitmaps, descriptors, inode tables);
//! [`inodes`] checks one inode, [`block_maps`] its extent tree or block map
//! (and its data with `--data`), [`dirs`] a directory's blocks, entries and
//! hash tree, [`special`] the journal, MMP and orphan file, [`global`] the
//! cross-object passes over the [`tally`], with the geometry in `crate::layout`.

mod block_maps;
mod dirs;
mod global;
mod inodes;
mod special;
mod tally;

pub use global::{Checker, DEFAULT_MEMORY};

use alloc::vec;
use alloc::vec::Vec;

use heapless::Vec as HVec;

use crate::attr::FileType;
use crate::blockmap::Run;
use crate::checksum::crc32c;
use crate::device::BlockDevice;
use crate::dir::{self, Entries};
use crate::dx_hash::dx_hash;
use crate::error::{Error, Object, Result};
use crate::extent::{self, Node};
use crate::group_desc::{BG_BLOCK_UNINIT, BG_INODE_UNINIT};
use crate::inode::{self, flags, Inode};
use crate::numbers::{FileBlock, InodeNo, PhysBlock};
use crate::volume::Volume;

use global::{BlockClaims, WalkState};
use tally::flag;

#[derive(Clone, Copy, Debug, Default)]
pub struct CheckOptions {
    /// Also read every file to its end, so unreadable data is found.
    pub data: bool,
}

/// How far the check has got, for a progress bar.
#[derive(Clone, Copy, Debug)]
pub enum Progress {
    /// `done` of `total` groups have had their inodes checked.
    Groups { done: u32, total: u32 },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckSummary {
    pub groups: u32,
    pub inodes: u64,
    pub directories: u64,
    pub regular_files: u64,
    pub data_bytes: u64,
    pub problems: u64,
}

impl CheckSummary {
    /// Sum of the counts (per-group or per-thread summaries into one).
    pub fn add(&mut self, o: &CheckSummary) {
        self.groups += o.groups;
        self.inodes += o.inodes;
        self.directories += o.directories;
        self.regular_files += o.regular_files;
        self.data_bytes += o.data_bytes;
        self.problems += o.problems;
    }
}

/// A directory entry to check against the inode it names.
#[derive(Clone, Copy)]
struct Target {
    ino: u32,
    file_type: u8,
    /// `.` (0), `..` (1) or a name (2).
    which: u8,
}

/// What one directory block says on its own ([`Volume::check_dir_block`]).
struct DirBlockFindings {
    errs: HVec<Error, 4>,
    /// Entries to check against the inodes they name.
    targets: Vec<Target>,
    /// An entry could not be parsed: the rest of the block is unknown.
    broken: bool,
}

/// The bad blocks inode.
const BAD_BLOCKS_INO: u32 = 1;
/// The root directory's inode number, as the tallies index inodes.
const ROOT_INO: u32 = InodeNo::ROOT.0;

/// One group's inodes as `e2fsck` counts them, against its bitmap and
/// descriptor.
#[derive(Default)]
struct Counted {
    used: u32,
    dirs: u32,
    /// In use but marked free: how many, the first.
    plus: (u32, u32),
    /// Marked in use but not in use.
    minus: (u32, u32),
    /// Part of the table could not be read.
    unknown: bool,
}

impl Counted {
    fn note(&mut self, ino: u32, live: bool, marked: bool, dir: bool) {
        if live {
            self.used += 1;
            self.dirs += dir as u32;
        }
        let d = match (live, marked) {
            (true, false) => &mut self.plus,
            (false, true) => &mut self.minus,
            _ => return,
        };
        if d.0 == 0 {
            d.1 = ino;
        }
        d.0 += 1;
    }

    fn report(
        &self,
        g: u32,
        gd: &crate::group_desc::GroupDesc,
        ipg: u32,
        sink: &mut ProblemSink<'_>,
    ) {
        if self.plus.0 > 0 {
            sink.put(Error::corrupt(
                Object::Inode(InodeNo(self.plus.1)),
                "in use (nonzero link count) but marked free in the inode bitmap",
            ));
        }
        if self.minus.0 > 0 {
            sink.put(Error::corrupt(
                Object::Inode(InodeNo(self.minus.1)),
                "marked in use in the inode bitmap but not in use (link count 0)",
            ));
        }
        if self.plus.0 > 1 || self.minus.0 > 1 {
            sink.put(Error::corrupt(
                Object::GroupDesc(g),
                "more inodes of the group differ from its inode bitmap (not listed)",
            ));
        }
        if gd.free_inodes != ipg - self.used.min(ipg) {
            sink.put(Error::corrupt(
                Object::GroupDesc(g),
                "free inodes count does not match the inodes in use",
            ));
        }
        if gd.used_dirs != self.dirs {
            sink.put(Error::corrupt(
                Object::GroupDesc(g),
                "directories count does not match the directories in use",
            ));
        }
    }
}

/// Bytes of inode table read per device request.
const ITABLE_CHUNK: usize = 1 << 20;

struct ProblemSink<'a> {
    problem: &'a mut dyn FnMut(&Error),
    count: u64,
}

impl ProblemSink<'_> {
    fn put(&mut self, e: Error) {
        self.count += 1;
        (self.problem)(&e);
    }
    fn res<T>(&mut self, r: Result<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.put(e);
                None
            }
        }
    }
}

impl<D: BlockDevice> Volume<D> {
    /// Check the whole volume: every group, then the global comparisons,
    /// with the default memory budget.
    pub fn fsck(
        &self,
        opts: &CheckOptions,
        progress: &mut dyn FnMut(Progress),
        problem: &mut dyn FnMut(&Error),
    ) -> CheckSummary {
        let mut c = Checker::new(self, opts, DEFAULT_MEMORY);
        let mut sum = CheckSummary::default();
        let total = self.sb().group_count;
        while let Some(s) = c.begin_pass(problem) {
            sum.add(&s);
            let (pass, passes) = (c.pass(), c.passes());
            for g in 0..total {
                sum.add(&c.check_group(g, problem));
                progress(Progress::Groups {
                    done: pass * total + g + 1,
                    total: passes * total,
                });
            }
            sum.add(&c.end_pass(problem));
        }
        sum
    }

    fn check_group_inner(
        &self,
        g: u32,
        opts: &CheckOptions,
        sink: &mut ProblemSink<'_>,
        sum: &mut CheckSummary,
        walk: &WalkState<'_>,
    ) {
        let sb = self.sb();
        let Some((gd, csum_ok)) = sink.res(self.group_desc_unchecked(g)) else {
            walk.tally.lose_claims();
            walk.tally.lose_dirs();
            return;
        };
        if !csum_ok && sb.metadata_csum() {
            sink.put(Error::Checksum {
                object: Object::GroupDesc(g),
            });
        }
        if sink.res(gd.validate(sb, g)).is_none() {
            walk.tally.lose_claims();
            walk.tally.lose_dirs();
            return;
        }
        let wide = sb.desc_size >= 64;
        if sb.metadata_csum() && gd.flags & BG_BLOCK_UNINIT == 0 {
            let n = (sb.clusters_per_group / 8) as usize;
            let blk = gd.block_bitmap;
            if let Some(c) =
                sink.res(self.cache_read_with(blk, |b| crc32c(sb.csum_seed, &b[..n.min(b.len())])))
            {
                let c = if wide { c } else { c & 0xffff };
                if c != gd.block_bitmap_csum {
                    sink.put(Error::corrupt(
                        Object::GroupDesc(g),
                        "block bitmap checksum does not match",
                    ));
                }
            }
        }
        let ipg = sb.inodes_per_group;
        if gd.flags & BG_INODE_UNINIT != 0 {
            if walk.first && crate::layout::uninit_flags_apply(sb) {
                if gd.free_inodes != ipg {
                    sink.put(Error::corrupt(
                        Object::GroupDesc(g),
                        "free inodes count does not match the inodes in use",
                    ));
                }
                if gd.used_dirs != 0 {
                    sink.put(Error::corrupt(
                        Object::GroupDesc(g),
                        "directories count does not match the directories in use",
                    ));
                }
            }
            return;
        }
        let Some(bitmap) = sink.res(self.cache_read_with(gd.inode_bitmap, |b| {
            b[..(ipg as usize).div_ceil(8)].to_vec()
        })) else {
            walk.tally.lose_claims();
            walk.tally.lose_dirs();
            return;
        };
        if sb.metadata_csum() {
            let c = crc32c(sb.csum_seed, &bitmap[..(ipg / 8) as usize]);
            let c = if wide { c } else { c & 0xffff };
            if c != gd.inode_bitmap_csum {
                sink.put(Error::corrupt(
                    Object::GroupDesc(g),
                    "inode bitmap checksum does not match",
                ));
            }
        }
        // With uninit_bg/metadata_csum the tail of the table is never used.
        let used = if sb.has_ro_compat(crate::features::ro_compat::GDT_CSUM) || sb.metadata_csum() {
            ipg.saturating_sub(gd.itable_unused)
        } else {
            ipg
        };
        let isz = sb.inode_size as usize;
        let bs = sb.block_size as u64;
        let mut chunk = vec![0u8; ITABLE_CHUNK.max(isz)];
        let per_chunk = (chunk.len() / isz) as u32;
        let marked = |idx: u32| bitmap[(idx / 8) as usize] & (1 << (idx % 8)) != 0;
        // What e2fsck counts: in use = reserved or a nonzero link count.
        let mut inuse = Counted::default();
        let mut first = 0u32;
        while first < used {
            let n = per_chunk.min(used - first);
            let buf = &mut chunk[..n as usize * isz];
            let at = gd.inode_table.0 * bs + first as u64 * isz as u64;
            if let Err(e) = self.read_device(at, buf) {
                sink.put(Error::Io(e));
                walk.tally.lose_claims();
                walk.tally.lose_dirs();
                inuse.unknown = true;
                first += n;
                continue;
            }
            for i in 0..n {
                let idx = first + i;
                let ino = g * ipg + idx + 1;
                let bytes = &buf[i as usize * isz..(i as usize + 1) * isz];
                let links = u16::from_le_bytes([bytes[26], bytes[27]]);
                let mode = u16::from_le_bytes([bytes[0], bytes[1]]);
                let live = ino < sb.first_ino || links > 0;
                inuse.note(ino, live, marked(idx), mode & 0xF000 == 0x4000);
                if marked(idx) {
                    self.check_inode(ino, bytes, opts, sink, sum, walk);
                } else if live {
                    // Not walked: its blocks and entries are unknown.
                    if let Some(t) = &walk.tally.inodes {
                        t.found(ino, links, flag::USED | flag::BAD);
                    }
                    walk.tally.lose_claims();
                    walk.tally.lose_dirs();
                }
            }
            first += n;
        }
        for idx in used..ipg {
            inuse.note(g * ipg + idx + 1, false, marked(idx), false);
        }
        if walk.first && !inuse.unknown {
            inuse.report(g, &gd, ipg, sink);
        }
    }
}
