//! A consistency check that reads every group, every in-use inode and
//! everything they point to, verifying every checksum and structural rule
//! the engine knows. Problems are reported one by one; the walk goes on.
//!
//! It flags only what the kernel's ext4 or `e2fsck` would also call damage,
//! so an image `e2fsck -fn` passes checks clean.

use alloc::vec;
use alloc::vec::Vec;

use heapless::Vec as HVec;

use crate::attr::FileType;
use crate::blockmap::Run;
use crate::checksum::crc32c;
use crate::device::BlockDevice;
use crate::dir::{self, Entries};
use crate::error::{Error, Object, Result};
use crate::extent::{self, Node};
use crate::group_desc::{BG_BLOCK_UNINIT, BG_INODE_UNINIT};
use crate::inode::{self, flags, Inode};
use crate::volume::Volume;

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
    fn add(&mut self, o: &CheckSummary) {
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
    /// Check the whole volume, group by group.
    pub fn check(
        &self,
        opts: &CheckOptions,
        progress: &mut dyn FnMut(Progress),
        problem: &mut dyn FnMut(&Error),
    ) -> CheckSummary {
        let mut sum = self.check_volume(problem);
        let total = self.sb().group_count;
        for g in 0..total {
            let s = self.check_group(g, opts, problem);
            sum.add(&s);
            progress(Progress::Groups { done: g + 1, total });
        }
        sum
    }

    /// Volume-wide checks (superblock). Groups are checked separately so a
    /// caller can spread them over threads.
    pub fn check_volume(&self, problem: &mut dyn FnMut(&Error)) -> CheckSummary {
        let mut sink = Sink { problem, count: 0 };
        if !self.sb().checksum_ok {
            sink.put(Error::Checksum {
                object: Object::Superblock,
            });
        }
        CheckSummary {
            problems: sink.count,
            ..Default::default()
        }
    }

    /// Check group `g`: its descriptor, bitmaps and every in-use inode.
    pub fn check_group(
        &self,
        g: u32,
        opts: &CheckOptions,
        problem: &mut dyn FnMut(&Error),
    ) -> CheckSummary {
        let mut sink = Sink { problem, count: 0 };
        let mut sum = CheckSummary {
            groups: 1,
            ..Default::default()
        };
        self.check_group_inner(g, opts, &mut sink, &mut sum);
        sum.problems = sink.count;
        sum
    }

    fn check_group_inner(
        &self,
        g: u32,
        opts: &CheckOptions,
        sink: &mut Sink<'_>,
        sum: &mut CheckSummary,
    ) {
        let sb = self.sb();
        let Some((gd, csum_ok)) = sink.res(self.group_desc_unchecked(g)) else {
            return;
        };
        if !csum_ok && sb.metadata_csum() {
            sink.put(Error::Checksum {
                object: Object::GroupDesc(g),
            });
        }
        if sink.res(gd.validate(sb, g)).is_none() {
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
        if gd.flags & BG_INODE_UNINIT != 0 {
            return;
        }
        let ipg = sb.inodes_per_group;
        let Some(bitmap) = sink.res(self.cache_read_with(gd.inode_bitmap, |b| {
            b[..(ipg as usize).div_ceil(8)].to_vec()
        })) else {
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
        let mut first = 0u32;
        while first < used {
            let n = per_chunk.min(used - first);
            let buf = &mut chunk[..n as usize * isz];
            let at = gd.inode_table * bs + first as u64 * isz as u64;
            if let Err(e) = self.device().read_at(at, buf) {
                sink.put(Error::Io(e));
                first += n;
                continue;
            }
            for i in 0..n {
                let idx = first + i;
                if bitmap[(idx / 8) as usize] & (1 << (idx % 8)) == 0 {
                    continue;
                }
                let ino = g * ipg + idx + 1;
                let bytes = &buf[i as usize * isz..(i as usize + 1) * isz];
                self.check_inode(ino, bytes, opts, sink, sum);
            }
            first += n;
        }
    }

    fn check_inode(
        &self,
        ino: u32,
        bytes: &[u8],
        opts: &CheckOptions,
        sink: &mut Sink<'_>,
        sum: &mut CheckSummary,
    ) {
        let sb = self.sb();
        let mode = u16::from_le_bytes([bytes[0], bytes[1]]);
        // Reserved inodes that are not in use keep mode 0 (bad blocks inode).
        if ino < sb.first_ino && mode == 0 {
            return;
        }
        sum.inodes += 1;
        if self.check_csums() && !inode::checksum_ok(sb, ino, bytes) {
            sink.put(Error::Checksum {
                object: Object::Inode(ino),
            });
            return;
        }
        let Some(inode) = sink.res(Inode::parse(sb, ino, bytes)) else {
            return;
        };
        if inode.links_count == 0 {
            // Deleted or orphaned: e2fsck handles it through the orphan list.
            return;
        }
        let Some(kind) = inode.kind else {
            sink.put(Error::corrupt(
                Object::Inode(ino),
                "unknown file type in i_mode",
            ));
            return;
        };
        self.check_inode_rules(&inode, kind, sink);
        self.check_xattrs(&inode, sink);
        let has_map = match kind {
            FileType::Regular | FileType::Directory => true,
            FileType::Symlink => !self.is_fast_symlink(&inode),
            _ => false,
        };
        if inode.has_flag(flags::INLINE_DATA) {
            let mut buf = vec![0u8; inode.size.min(sb.block_size as u64) as usize];
            sink.res(self.read_inode(&inode, 0, &mut buf));
        } else if has_map {
            if inode.has_flag(flags::EXTENTS) {
                self.check_extent_tree(&inode, sink);
            } else {
                self.check_block_map(&inode, sink);
            }
        }
        match kind {
            FileType::Directory => {
                sum.directories += 1;
                self.check_dir(&inode, sink);
            }
            FileType::Regular => {
                sum.regular_files += 1;
                if opts.data && ino >= sb.first_ino && !inode.has_flag(flags::ENCRYPT) {
                    sum.data_bytes += self.check_data(&inode, sink);
                }
            }
            FileType::Symlink => {
                sink.res(self.readlink(ino));
            }
            _ => {}
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
        if inode.ibody().is_empty() && inode.file_acl == 0 {
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
    fn check_extent_tree(&self, inode: &Inode, sink: &mut Sink<'_>) {
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
        );
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
                let mut inner: Vec<(u64, u16, u64, u64)> = Vec::new();
                let mut tmp = Sink {
                    problem: sink.problem,
                    count: 0,
                };
                self.check_node(&node, Object::Block(blk), lo, hi, &mut inner, &mut tmp);
                sink.count += tmp.count;
                stack.extend(inner);
                Ok(())
            });
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) | Err(e) => sink.put(e),
            }
        }
    }

    fn check_node(
        &self,
        node: &Node<'_>,
        obj: Object,
        lo: u64,
        hi: u64,
        children: &mut Vec<(u64, u16, u64, u64)>,
        sink: &mut Sink<'_>,
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
    /// filesystem (walking runs visits each pointer block once per run).
    fn check_block_map(&self, inode: &Inode, sink: &mut Sink<'_>) {
        let bs = self.sb().block_size as u64;
        let end = inode.size.div_ceil(bs).min(crate::blockmap::MAX_LBLK);
        let mut lblk = 0u64;
        // Pointer blocks reused under many slots can map far more blocks
        // than exist, one at a time: stop once the file claims more than
        // the filesystem has, which no valid file does.
        let mut mapped = 0u64;
        while lblk < end {
            match self.map_block(inode, lblk) {
                Ok(run) => {
                    if let Run::Mapped { len, .. } = run {
                        mapped += len;
                        if mapped > self.sb().blocks_count {
                            sink.put(Error::corrupt(
                                Object::Inode(inode.ino),
                                "block map maps more blocks than the filesystem has",
                            ));
                            return;
                        }
                    }
                    lblk += run.len().max(1)
                }
                Err(e) => {
                    sink.put(e);
                    return;
                }
            }
        }
    }

    fn check_dir(&self, dir: &Inode, sink: &mut Sink<'_>) {
        if dir.has_flag(flags::INLINE_DATA) {
            sink.res(self.inline_check(dir));
            return;
        }
        let bs = self.sb().block_size as u64;
        let nblocks = dir.size.div_ceil(bs);
        let dx = self.is_dx(dir);
        let mut lblk = 0u64;
        while lblk < nblocks {
            let run = match self.map_block(dir, lblk) {
                Ok(r) => r,
                Err(e) => return sink.put(e),
            };
            let (pblk, len) = match run {
                Run::Hole { len } => {
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
                let r = self.cache_read_with(pblk + i, |b| -> (HVec<Error, 2>, Vec<Target>) {
                    let mut errs = HVec::new();
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
                    for (n, e) in Entries::new(area, 0, self.sb().inodes_count, obj)
                        .take(take)
                        .enumerate()
                    {
                        match e {
                            Ok(e) => {
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
                                if e.inode != 0 {
                                    targets.push(Target {
                                        ino: e.inode,
                                        file_type: e.file_type,
                                    });
                                }
                            }
                            Err(e) => {
                                let _ = errs.push(e);
                                break;
                            }
                        }
                    }
                    (errs, targets)
                });
                match r {
                    Ok((errs, targets)) => {
                        errs.into_iter().for_each(|e| sink.put(e));
                        for t in targets {
                            if let Err(what) = self.check_target(t) {
                                sink.put(Error::corrupt(obj, what));
                            }
                        }
                    }
                    Err(e) => sink.put(e),
                }
            }
            lblk += len;
        }
        if dx {
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

    /// Walk the hash tree's index nodes (not the leaves, done above).
    fn check_dx_tree(&self, dir: &Inode, sink: &mut Sink<'_>) {
        if let Err(e) = self.dx_walk(dir, &mut |_| {}) {
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
                    if let Err(e) = self.device().read_at((pblk + done) * bs, dst) {
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
