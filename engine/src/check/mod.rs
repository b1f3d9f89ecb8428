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

mod global;
pub(crate) mod layout;
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
use crate::volume::Volume;

use global::{Claimer, Ctx};
use tally::f;

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

/// The bad blocks inode.
const BAD_BLOCKS_INO: u32 = 1;

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

    fn report(&self, g: u32, gd: &crate::group_desc::GroupDesc, ipg: u32, sink: &mut Sink<'_>) {
        if self.plus.0 > 0 {
            sink.put(Error::corrupt(
                Object::Inode(self.plus.1),
                "in use (nonzero link count) but marked free in the inode bitmap",
            ));
        }
        if self.minus.0 > 0 {
            sink.put(Error::corrupt(
                Object::Inode(self.minus.1),
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

struct Sink<'a> {
    problem: &'a mut dyn FnMut(&Error),
    count: u64,
}

impl Sink<'_> {
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
    pub fn check(
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
        sink: &mut Sink<'_>,
        sum: &mut CheckSummary,
        cx: &Ctx<'_>,
    ) {
        let sb = self.sb();
        let Some((gd, csum_ok)) = sink.res(self.group_desc_unchecked(g)) else {
            cx.t.lose_claims();
            cx.t.lose_dirs();
            return;
        };
        if !csum_ok && sb.metadata_csum() {
            sink.put(Error::Checksum {
                object: Object::GroupDesc(g),
            });
        }
        if sink.res(gd.validate(sb, g)).is_none() {
            cx.t.lose_claims();
            cx.t.lose_dirs();
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
            if cx.first && layout::uninit_flags_apply(sb) {
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
            cx.t.lose_claims();
            cx.t.lose_dirs();
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
            let at = gd.inode_table * bs + first as u64 * isz as u64;
            if let Err(e) = self.read_device(at, buf) {
                sink.put(Error::Io(e));
                cx.t.lose_claims();
                cx.t.lose_dirs();
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
                    self.check_inode(ino, bytes, opts, sink, sum, cx);
                } else if live {
                    // Not walked: its blocks and entries are unknown.
                    if let Some(t) = &cx.t.inodes {
                        t.found(ino, links, f::USED | f::BAD);
                    }
                    cx.t.lose_claims();
                    cx.t.lose_dirs();
                }
            }
            first += n;
        }
        for idx in used..ipg {
            inuse.note(g * ipg + idx + 1, false, marked(idx), false);
        }
        if cx.first && !inuse.unknown {
            inuse.report(g, &gd, ipg, sink);
        }
    }

    fn check_inode(
        &self,
        ino: u32,
        bytes: &[u8],
        opts: &CheckOptions,
        sink: &mut Sink<'_>,
        sum: &mut CheckSummary,
        cx: &Ctx<'_>,
    ) {
        let sb = self.sb();
        let mode = u16::from_le_bytes([bytes[0], bytes[1]]);
        let links = u16::from_le_bytes([bytes[26], bytes[27]]);
        let note = |fl: u8| {
            if let Some(t) = &cx.t.inodes {
                t.found(ino, links, fl | f::MARKED);
            }
        };
        let lost = || {
            note(f::BAD);
            cx.t.lose_claims();
            cx.t.lose_dirs();
        };
        // Reserved inodes that are not in use keep mode 0 (bad blocks inode).
        if ino < sb.first_ino && mode == 0 {
            if ino != crate::volume::ROOT_INO {
                note(f::USED | f::HIDDEN);
            }
            if ino == BAD_BLOCKS_INO {
                self.claim_bad_blocks(bytes, sink, cx);
            }
            return;
        }
        sum.inodes += 1;
        if self.check_csums() && !inode::checksum_ok(sb, ino, bytes) {
            sink.put(Error::Checksum {
                object: Object::Inode(ino),
            });
            return lost();
        }
        let Some(inode) = sink.res(Inode::parse(sb, ino, bytes)) else {
            return lost();
        };
        if inode.links_count == 0 {
            // Deleted or orphaned: e2fsck handles it through the orphan list.
            return note(0);
        }
        let Some(kind) = inode.kind else {
            sink.put(Error::corrupt(
                Object::Inode(ino),
                "unknown file type in i_mode",
            ));
            return lost();
        };
        let mut fl = f::USED;
        if kind == FileType::Directory {
            fl |= f::DIR;
        }
        if cx.hidden(ino, inode.flags) {
            fl |= f::HIDDEN;
        }
        note(fl);
        // Later passes only gather: what reports nothing new is skipped.
        if cx.first {
            self.check_inode_rules(&inode, kind, sink);
            self.check_xattrs(&inode, sink);
        }
        let has_map = match kind {
            FileType::Regular | FileType::Directory => true,
            FileType::Symlink => !self.is_fast_symlink(&inode),
            _ => false,
        };
        let before = sink.count;
        let mut cl = cx.claimer(ino);
        if inode.file_acl != 0 {
            cl.xattr(inode.file_acl);
        }
        if inode.has_flag(flags::INLINE_DATA) {
            let mut buf = vec![0u8; inode.size.min(sb.block_size as u64) as usize];
            sink.res(self.read_inode(&inode, 0, &mut buf));
        } else if has_map {
            if inode.has_flag(flags::EXTENTS) {
                self.check_extent_tree(&inode, sink, &mut cl);
            } else if self.is_resize_inode(&inode) {
                // Only its double-indirect block is its own: the blocks
                // under it are the reserved descriptor blocks, claimed as
                // metadata.
                let mut none = cx.claimer_none();
                self.check_block_map(&inode, sink, &mut none);
                cl.blocks(inode.block_word(13) as u64, 1);
            } else {
                self.check_block_map(&inode, sink, &mut cl);
            }
        }
        if sink.count != before {
            cx.t.lose_claims();
        } else if has_map || inode.file_acl != 0 || inode.has_flag(flags::INLINE_DATA) {
            // e2fsck counts what the inode maps, its xattr block included
            // (with ea_inode also the value inodes' blocks: not checked).
            if !self.is_resize_inode(&inode)
                && !sb.has_incompat(crate::features::incompat::EA_INODE)
                && inode.blocks_512 != cl.sectors()
            {
                sink.put(Error::corrupt(
                    Object::Inode(ino),
                    "i_blocks does not match the blocks the inode maps",
                ));
            }
            if has_map && !inode.has_flag(flags::INLINE_DATA) && !self.is_resize_inode(&inode) {
                if let Some(what) = self.size_problem(&inode, kind, &cl, cx) {
                    sink.put(Error::corrupt(Object::Inode(ino), what));
                }
            }
        }
        cl.finish(ino, sink);
        match kind {
            FileType::Directory => {
                sum.directories += 1;
                self.check_dir(&inode, sink, cx);
            }
            FileType::Regular => {
                sum.regular_files += 1;
                if opts.data && ino >= sb.first_ino && !inode.has_flag(flags::ENCRYPT) {
                    sum.data_bytes += self.check_data(&inode, sink);
                }
            }
            FileType::Symlink if cx.first => {
                // e2fsck wants exactly i_size bytes of target: a NUL
                // inside it (where readers stop) makes the link invalid.
                if let Some(t) = sink.res(self.readlink(ino)) {
                    // (An encrypted target is ciphertext, NULs and all.)
                    if t.len() as u64 != inode.size && !inode.has_flag(flags::ENCRYPT) {
                        sink.put(Error::corrupt(
                            Object::Inode(ino),
                            "symlink target holds a NUL before its end (i_size)",
                        ));
                    }
                }
            }
            _ => {}
        }
    }

    /// `i_size` against the blocks mapped, by `e2fsck`'s rules: a
    /// directory's size is a whole number of blocks ending at its last
    /// block; other files hold no initialized block past their size.
    fn size_problem(
        &self,
        inode: &Inode,
        kind: FileType,
        cl: &Claimer<'_>,
        cx: &Ctx<'_>,
    ) -> Option<&'static str> {
        let bs = self.sb().block_size as u64;
        if kind == FileType::Directory {
            let nblock = inode.size / bs;
            let end = cl.last.map_or(0, |l| l + 1);
            if !inode.size.is_multiple_of(bs) {
                Some("directory size is not a whole number of blocks")
            } else if nblock > end {
                Some("directory size runs past its last block")
            } else if end - nblock > cx.prealloc_dir_blocks {
                Some("directory has blocks past its size")
            } else {
                None
            }
        } else {
            let last = cl.last_init?;
            (!inode.has_flag(flags::VERITY) && inode.size < last * bs)
                .then_some("i_size is smaller than the initialized blocks the inode maps")
        }
    }

    /// Field rules `e2fsck` enforces on a single inode.
    fn check_inode_rules(&self, inode: &Inode, kind: FileType, sink: &mut Sink<'_>) {
        let sb = self.sb();
        let obj = Object::Inode(inode.ino);
        // On a live inode dtime is either 0 or, for an orphan, the next
        // orphan's inode number.
        if inode.dtime != 0 && (sb.last_orphan == 0 || inode.dtime > sb.inodes_count) {
            sink.put(Error::corrupt(
                obj,
                "inode is in use but has a deletion time",
            ));
        }
        if inode.has_flag(flags::INLINE_DATA)
            && !sb.has_incompat(crate::features::incompat::INLINE_DATA)
        {
            sink.put(Error::corrupt(
                obj,
                "inline-data flag set on a filesystem without inline_data",
            ));
        }
        if inode.has_flag(flags::EXTENTS) && !sb.has_incompat(crate::features::incompat::EXTENTS) {
            sink.put(Error::corrupt(
                obj,
                "extents flag set on a filesystem without extents",
            ));
        }
        let special = !matches!(kind, FileType::Regular | FileType::Directory);
        if special && inode.has_flag(flags::IMMUTABLE | flags::APPEND) {
            sink.put(Error::corrupt(
                obj,
                "special file or symlink has the immutable or append-only flag",
            ));
        }
        if matches!(
            kind,
            FileType::CharDevice | FileType::BlockDevice | FileType::Fifo | FileType::Socket
        ) && inode.size != 0
        {
            sink.put(Error::corrupt(
                obj,
                "device, FIFO or socket inode has a nonzero size",
            ));
        }
        if kind == FileType::Symlink
            && inode.has_flag(flags::EXTENTS)
            && self.is_fast_symlink(inode)
        {
            sink.put(Error::corrupt(obj, "fast symlink has the extents flag set"));
        }
        if inode.ino == crate::volume::ROOT_INO && kind != FileType::Directory {
            sink.put(Error::corrupt(obj, "root inode is not a directory"));
        }
    }

    fn check_xattrs(&self, inode: &Inode, sink: &mut Sink<'_>) {
        // No xattr block and no in-inode entries (no magic): nothing to
        // list, and listxattr would only load and verify the inode again.
        if inode.file_acl == 0
            && crate::xattr::parse_ibody(inode.ibody(), inode.ino).is_ok_and(|v| v.is_empty())
        {
            return;
        }
        // listxattr parses both areas (and verifies the block checksum);
        // reading each value checks EA inodes and ACLs too.
        if let Some(names) = sink.res(self.listxattr(inode.ino)) {
            for n in names {
                sink.res(self.getxattr(inode.ino, &n));
            }
        }
    }

    /// Visit every node of an extent tree, checking headers, checksums,
    /// key order, bounds and that children stay inside their parent's range.
    fn check_extent_tree(&self, inode: &Inode, sink: &mut Sink<'_>, cl: &mut Claimer<'_>) {
        let ino = inode.ino;
        let Some(root) = sink.res(Node::parse(&inode.block, None, Object::Inode(ino))) else {
            return;
        };
        // (block, expected depth, low key, high key) — the stack holds at
        // most one pending child list per level.
        let mut stack: Vec<(u64, u16, u64, u64)> = Vec::new();
        self.check_node(
            &root,
            Object::Inode(ino),
            0,
            crate::blockmap::MAX_LBLK,
            &mut stack,
            sink,
            cl,
        );
        stack.reverse();
        let mut visited = 0u64;
        let limit = self.sb().blocks_count;
        while let Some((blk, depth, lo, hi)) = stack.pop() {
            visited += 1;
            if visited > limit {
                sink.put(Error::corrupt(
                    Object::Inode(ino),
                    "extent tree has more nodes than the filesystem has blocks",
                ));
                return;
            }
            cl.blocks(blk, 1);
            let seed = inode.csum_seed;
            let check = self.sb().metadata_csum() && self.check_csums();
            let r = self.cache_read_with(blk, |b| -> Result<()> {
                if check && !extent::checksum_ok(b, seed) {
                    return Err(Error::Checksum {
                        object: Object::Block(blk),
                    });
                }
                let node = Node::parse(b, Some(depth), Object::Block(blk))?;
                if node.entries == 0 {
                    return Err(Error::corrupt(
                        Object::Block(blk),
                        "extent tree block has no entries",
                    ));
                }
                // The index entry above names the first logical block
                // under it; the kernel keeps the two equal (and searches
                // by the index key), e2fsck requires it.
                if node.key(0) as u64 != lo {
                    return Err(Error::corrupt(
                        Object::Block(blk),
                        "extent tree block does not start at the logical block its index entry names",
                    ));
                }
                let mut inner: Vec<(u64, u16, u64, u64)> = Vec::new();
                let mut tmp = Sink {
                    problem: sink.problem,
                    count: 0,
                };
                self.check_node(&node, Object::Block(blk), lo, hi, &mut inner, &mut tmp, cl);
                sink.count += tmp.count;
                // Children pop in logical order, so under bigalloc a
                // cluster shared by neighbouring extents is met twice in a
                // row (and counted once).
                stack.extend(inner.into_iter().rev());
                Ok(())
            });
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) | Err(e) => sink.put(e),
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check_node(
        &self,
        node: &Node<'_>,
        obj: Object,
        lo: u64,
        hi: u64,
        children: &mut Vec<(u64, u16, u64, u64)>,
        sink: &mut Sink<'_>,
        cl: &mut Claimer<'_>,
    ) {
        let mut prev_end = lo;
        for i in 0..node.entries {
            let key = node.key(i) as u64;
            if key < prev_end || key >= hi {
                sink.put(Error::corrupt(
                    obj,
                    "extent entries out of order or outside their parent's range",
                ));
                return;
            }
            if node.depth == 0 {
                let e = node.extent(i);
                if let Err(err) = self.check_extent(&e, obj) {
                    sink.put(err);
                    return;
                }
                if e.end() > hi {
                    sink.put(Error::corrupt(obj, "extent runs past its parent's range"));
                    return;
                }
                cl.blocks(e.pblk.0, e.len as u64);
                cl.mapped(e.end() - 1, !e.unwritten);
                prev_end = e.end();
            } else {
                let (_, child) = node.index(i);
                if !self.blocks_in_fs(child, 1) {
                    sink.put(Error::corrupt(
                        obj,
                        "extent index points outside the filesystem",
                    ));
                    return;
                }
                let next = if i + 1 < node.entries {
                    node.key(i + 1) as u64
                } else {
                    hi
                };
                children.push((child, node.depth - 1, key, next));
                prev_end = key + 1;
            }
        }
    }

    /// Indirect map: every pointer block and pointer lies inside the
    /// filesystem; all of them are claimed, past `i_size` too (they are
    /// allocated all the same).
    fn check_block_map(&self, inode: &Inode, sink: &mut Sink<'_>, cl: &mut Claimer<'_>) {
        // Pointer blocks reused under many slots can map far more blocks
        // than exist: stop once the file claims more than the filesystem
        // has, which no valid file does.
        let mut left = self.sb().blocks_count;
        let mut run = (0u64, 0u64);
        for i in 0..12 {
            let p = inode.block_word(i) as u64;
            if p != 0 {
                cl.mapped(i as u64, true);
                if self
                    .map_ptr(inode.ino, p, &mut left, &mut run, sink, cl)
                    .is_err()
                {
                    return;
                }
            }
        }
        if run.1 > 0 {
            cl.blocks(run.0, run.1);
        }
        // First logical block under each of the three trees.
        let per = (self.sb().block_size / 4) as u64;
        let bases = [12, 12 + per, 12 + per + per * per];
        for (i, depth) in [(12, 1), (13, 2), (14, 3)] {
            let p = inode.block_word(i) as u64;
            let base = bases[i - 12];
            if p != 0
                && self
                    .map_tree(inode.ino, p, depth, base, &mut left, sink, cl)
                    .is_err()
            {
                return;
            }
        }
    }

    /// One data pointer, merged into the current run of contiguous blocks.
    fn map_ptr(
        &self,
        ino: u32,
        p: u64,
        left: &mut u64,
        run: &mut (u64, u64),
        sink: &mut Sink<'_>,
        cl: &mut Claimer<'_>,
    ) -> core::result::Result<(), ()> {
        if !self.blocks_in_fs(p, 1) {
            sink.put(Error::corrupt(
                Object::Inode(ino),
                "block pointer points outside the filesystem",
            ));
            return Err(());
        }
        if *left == 0 {
            sink.put(Error::corrupt(
                Object::Inode(ino),
                "block map maps more blocks than the filesystem has",
            ));
            return Err(());
        }
        *left -= 1;
        if run.1 > 0 && run.0 + run.1 == p {
            run.1 += 1;
        } else {
            if run.1 > 0 {
                cl.blocks(run.0, run.1);
            }
            *run = (p, 1);
        }
        Ok(())
    }

    /// A pointer block `depth` levels above the data, and all under it
    /// (logical blocks from `base`).
    #[allow(clippy::too_many_arguments)]
    fn map_tree(
        &self,
        ino: u32,
        p: u64,
        depth: u32,
        base: u64,
        left: &mut u64,
        sink: &mut Sink<'_>,
        cl: &mut Claimer<'_>,
    ) -> core::result::Result<(), ()> {
        let mut run = (0u64, 0u64);
        self.map_ptr(ino, p, left, &mut run, sink, cl)?;
        cl.blocks(p, 1);
        let ptrs: Vec<u32> = match self.cache_read_with(p, |b| {
            b.chunks_exact(4)
                .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
                .collect()
        }) {
            Ok(v) => v,
            Err(e) => {
                sink.put(e);
                return Err(());
            }
        };
        let mut run = (0u64, 0u64);
        let span = ((self.sb().block_size / 4) as u64).pow(depth - 1);
        for (k, q) in ptrs.into_iter().enumerate().filter(|&(_, q)| q != 0) {
            let lblk = base + k as u64 * span;
            if depth == 1 {
                cl.mapped(lblk, true);
                self.map_ptr(ino, q as u64, left, &mut run, sink, cl)?;
            } else {
                self.map_tree(ino, q as u64, depth - 1, lblk, left, sink, cl)?;
            }
        }
        if run.1 > 0 {
            cl.blocks(run.0, run.1);
        }
        Ok(())
    }

    /// The bad blocks inode (mode 0, no links) owns the blocks in its map.
    fn claim_bad_blocks(&self, bytes: &[u8], sink: &mut Sink<'_>, cx: &Ctx<'_>) {
        let Ok(inode) = Inode::parse(self.sb(), BAD_BLOCKS_INO, bytes) else {
            return;
        };
        if (0..15).all(|i| inode.block_word(i) == 0) {
            return;
        }
        let mut cl = cx.claimer(BAD_BLOCKS_INO);
        let before = sink.count;
        self.check_block_map(&inode, sink, &mut cl);
        if sink.count != before {
            cx.t.lose_claims();
        }
        cl.finish(BAD_BLOCKS_INO, sink);
    }

    fn check_dir(&self, dir: &Inode, sink: &mut Sink<'_>, cx: &Ctx<'_>) {
        if dir.has_flag(flags::INLINE_DATA) {
            if sink.res(self.inline_check(dir)).is_none() {
                return cx.t.lose_dirs();
            }
            if let Some(t) = &cx.t.inodes {
                // Entries in order: ".", "..", then the names.
                let mut n = 0u8;
                let r = self.inline_readdir(dir, 0, &mut |e| {
                    t.entry(dir.ino, e.ino, n);
                    n = (n + 1).min(2);
                    true
                });
                if r.is_err() {
                    cx.t.lose_dirs();
                }
            }
            return;
        }
        let bs = self.sb().block_size as u64;
        let nblocks = dir.size.div_ceil(bs);
        let dx = self.is_dx(dir);
        let encrypted = dir.has_flag(flags::ENCRYPT);
        let mut lblk = 0u64;
        while lblk < nblocks {
            let run = match self.map_block(dir, lblk) {
                Ok(r) => r,
                Err(e) => {
                    cx.t.lose_dirs();
                    return sink.put(e);
                }
            };
            let (pblk, len) = match run {
                Run::Hole { len } => {
                    // e2fsck allocates every missing block below i_size.
                    sink.put(Error::corrupt(
                        Object::DirBlock {
                            dir: dir.ino,
                            lblk: lblk as u32,
                        },
                        "directory block is not allocated (a hole below the directory's size)",
                    ));
                    lblk += len;
                    continue;
                }
                Run::Mapped { pblk, len, .. } => (pblk, len.min(nblocks - lblk)),
            };
            for i in 0..len {
                let l = lblk + i;
                let obj = Object::DirBlock {
                    dir: dir.ino,
                    lblk: l as u32,
                };
                let r =
                    self.cache_read_with(pblk + i, |b| -> (HVec<Error, 4>, Vec<Target>, bool) {
                        let mut errs = HVec::new();
                        let mut broken = false;
                        let mut targets = Vec::new();
                        let node = dx && dir::is_dx_node(b, l);
                        if !node {
                            if let Err(e) = self.check_leaf(dir, b, l) {
                                let _ = errs.push(e);
                            }
                        }
                        // Index nodes are checked by the tree walk below; the
                        // root still starts with "." and "..".
                        let (area, take) = match (node, l) {
                            (true, 0) => (b, 2),
                            (true, _) => (&b[..0], 0),
                            (false, _) => (dir::entry_area(b), usize::MAX),
                        };
                        let mut names: Vec<&[u8]> = Vec::new();
                        for (n, e) in Entries::new(area, 0, self.sb().inodes_count, obj)
                            .take(take)
                            .enumerate()
                        {
                            match e {
                                Ok(e) => {
                                    if e.inode != 0 {
                                        names.push(e.name);
                                    }
                                    if encrypted
                                        && e.inode != 0
                                        && e.name != b"."
                                        && e.name != b".."
                                        && e.name.len() < dir::CRYPTO_BLOCK
                                    {
                                        let _ = errs.push(Error::corrupt(
                                            obj,
                                            "entry of an encrypted directory is shorter than one cipher block",
                                        ));
                                    }
                                    if l == 0 && n < 2 {
                                        let (want, ok_ino) = if n == 0 {
                                            (&b"."[..], e.inode == dir.ino)
                                        } else {
                                            (&b".."[..], e.inode != 0)
                                        };
                                        if e.name != want || !ok_ino {
                                            let _ = errs.push(Error::corrupt(
                                            obj,
                                            "directory does not start with '.' and '..' entries",
                                        ));
                                        }
                                    }
                                    if (l > 0 || n >= 2) && (e.name == b"." || e.name == b"..") {
                                        let _ = errs.push(Error::corrupt(
                                            obj,
                                            "entry named '.' or '..' past the first two entries",
                                        ));
                                    }
                                    if e.inode != 0 {
                                        targets.push(Target {
                                            ino: e.inode,
                                            file_type: e.file_type,
                                            which: if l == 0 { n.min(2) as u8 } else { 2 },
                                        });
                                    }
                                }
                                Err(e) => {
                                    let _ = errs.push(e);
                                    broken = true;
                                    break;
                                }
                            }
                        }
                        // Like e2fsck, names are compared within each block.
                        names.sort_unstable();
                        if names.windows(2).any(|w| w[0] == w[1]) {
                            let _ = errs.push(Error::corrupt(
                                obj,
                                "the same name appears twice in a directory block",
                            ));
                        }
                        (errs, targets, broken)
                    });
                match r {
                    Ok((errs, targets, broken)) => {
                        if broken {
                            cx.t.lose_dirs();
                        }
                        errs.into_iter().for_each(|e| sink.put(e));
                        for t in targets {
                            if let Some(tally) = &cx.t.inodes {
                                tally.entry(dir.ino, t.ino, t.which);
                            }
                            // Only the first pass reports; the entries were
                            // checked then.
                            if !cx.first {
                                continue;
                            }
                            if let Err(what) = self.check_target(t) {
                                sink.put(Error::corrupt(obj, what));
                            }
                        }
                    }
                    Err(e) => {
                        cx.t.lose_dirs();
                        sink.put(e)
                    }
                }
            }
            lblk += len;
        }
        if dx && cx.first {
            self.check_dx_tree(dir, sink);
        }
    }

    /// A directory entry's inode must be in use, and its file type byte
    /// must agree with the inode's mode.
    fn check_target(&self, t: Target) -> core::result::Result<(), &'static str> {
        let sb = self.sb();
        let g = (t.ino - 1) / sb.inodes_per_group;
        let idx = (t.ino - 1) % sb.inodes_per_group;
        let Ok(gd) = self.group_desc(g) else {
            return Ok(());
        };
        if gd.flags & BG_INODE_UNINIT != 0 {
            return Err("entry refers to an inode in a group with no inodes in use");
        }
        if (sb.has_ro_compat(crate::features::ro_compat::GDT_CSUM) || sb.metadata_csum())
            && idx >= sb.inodes_per_group.saturating_sub(gd.itable_unused)
        {
            return Err("entry refers to an inode in its group's never-used area");
        }
        let used = self.cache_read_with(gd.inode_bitmap, |b| {
            b[(idx / 8) as usize] & (1 << (idx % 8)) != 0
        });
        if used == Ok(false) {
            return Err("entry refers to an inode that is not in use");
        }
        if sb.has_incompat(crate::features::incompat::FILETYPE) {
            // The target's record was (or will be) verified when its group
            // is walked; decoding it again for every entry (checksum, seed,
            // xattr area) was a third of the check's time. The raw mode and
            // link count say whether there is anything to report; only then
            // is it decoded as before, so a record that fails to decode
            // still reports nothing here.
            let isz = sb.inode_size as u64;
            let bs = sb.block_size as u64;
            let byte = idx as u64 * isz;
            let (blk, off) = (gd.inode_table + byte / bs, (byte % bs) as usize);
            let suspect = self.cache_read_with(blk, |b| {
                let r = &b[off..off + 28];
                let mode = u16::from_le_bytes([r[0], r[1]]);
                let links = u16::from_le_bytes([r[26], r[27]]);
                let kind = FileType::from_mode(mode);
                (links == 0 && mode == 0)
                    || (kind.is_some() && FileType::from_dirent(t.file_type) != kind)
            });
            if suspect == Ok(false) {
                return Ok(());
            }
            if let Ok(inode) = self.inode(t.ino) {
                if inode.links_count == 0 && inode.mode == 0 {
                    return Err("entry refers to a deleted inode");
                }
                if inode.kind.is_some() && FileType::from_dirent(t.file_type) != inode.kind {
                    return Err("entry's file type does not match its inode");
                }
            }
        }
        Ok(())
    }

    /// Walk the hash tree's index nodes (the leaves' entries were checked
    /// above), and, as e2fsck does, require every name in a leaf to hash
    /// within the range its index entry gives it.
    fn check_dx_tree(&self, dir: &Inode, sink: &mut Sink<'_>) {
        // Casefolded and encrypted names hash in forms not kept here.
        let version = if dir.has_flag(flags::CASEFOLD | flags::ENCRYPT) {
            None
        } else {
            self.dx_hash_version(dir).ok()
        };
        let seed = self.sb().hash_seed;
        let inodes = self.sb().inodes_count;
        let mut leaf = |lblk: u32, lo: u32, hi: u32| {
            let Some(version) = version else {
                return;
            };
            let Ok(pblk) = self.dir_pblk(dir, lblk) else {
                return;
            };
            let obj = Object::DirBlock { dir: dir.ino, lblk };
            let range = self.cache_read_with(pblk, |b| {
                let mut range = (u32::MAX, 0u32);
                for e in Entries::new(dir::entry_area(b), 0, inodes, obj).map_while(|e| e.ok()) {
                    if e.inode != 0 {
                        let h = dx_hash(e.name, version, seed).0;
                        range = (range.0.min(h), range.1.max(h));
                    }
                }
                range
            });
            if let Ok((min, max)) = range {
                if min < lo {
                    sink.put(Error::corrupt(
                        obj,
                        "a name in this hash tree leaf hashes below its index entry's range",
                    ));
                }
                if max > hi {
                    sink.put(Error::corrupt(
                        obj,
                        "a name in this hash tree leaf hashes above its index entry's range",
                    ));
                }
            }
        };
        if let Err(e) = self.dx_walk(dir, &mut leaf) {
            sink.put(e);
        }
    }

    /// Read every file byte, so unreadable mappings show up.
    fn check_data(&self, inode: &Inode, sink: &mut Sink<'_>) -> u64 {
        if inode.has_flag(flags::INLINE_DATA) {
            let mut buf = vec![0u8; inode.size.min(self.sb().block_size as u64) as usize];
            return match self.read_inode(inode, 0, &mut buf) {
                Ok(n) => n as u64,
                Err(e) => {
                    sink.put(e);
                    0
                }
            };
        }
        // Walk runs rather than bytes: holes cost nothing whatever size the
        // inode claims, and a map that reads more blocks (or yields more
        // runs) than the filesystem has is reported instead of followed.
        let bs = self.sb().block_size as u64;
        let limit = self.sb().blocks_count;
        let end = inode.size.div_ceil(bs).min(crate::blockmap::MAX_LBLK);
        let mut buf = vec![0u8; (1usize << 20).max(bs as usize)];
        let chunk = buf.len() as u64 / bs;
        let (mut lblk, mut read, mut runs) = (0u64, 0u64, 0u64);
        while lblk < end {
            let run = match self.map_block(inode, lblk) {
                Ok(r) => r,
                Err(e) => {
                    sink.put(e);
                    break;
                }
            };
            let len = run.len().max(1).min(end - lblk);
            runs += 1;
            if let Run::Mapped {
                pblk,
                unwritten: false,
                ..
            } = run
            {
                read += len;
                if read > limit || runs > limit {
                    sink.put(Error::corrupt(
                        Object::Inode(inode.ino),
                        "file maps more blocks than the filesystem has",
                    ));
                    break;
                }
                let mut done = 0;
                while done < len {
                    let n = chunk.min(len - done);
                    let dst = &mut buf[..(n * bs) as usize];
                    if let Err(e) = self.read_device((pblk + done) * bs, dst) {
                        sink.put(Error::Io(e));
                        return read * bs;
                    }
                    done += n;
                }
            }
            lblk += len;
        }
        read * bs
    }
}
