//! Directories: every block's entries on their own, each entry against
//! the inode it names, and the hash tree's index.

use super::*;

impl<D: BlockDevice> Volume<D> {
    pub(super) fn check_dir(&self, dir: &Inode, sink: &mut ProblemSink<'_>, walk: &WalkState<'_>) {
        if dir.has_flag(flags::INLINE_DATA) {
            return self.check_inline_dir(dir, sink, walk);
        }
        let bs = self.sb().block_size as u64;
        let nblocks = dir.size.div_ceil(bs);
        let dx = self.is_dx(dir);
        let mut lblk = 0u64;
        while lblk < nblocks {
            let run = match self.map_block_at(dir, lblk) {
                Ok(r) => r,
                Err(e) => {
                    walk.tally.lose_dirs();
                    return sink.put(e);
                }
            };
            let (pblk, len) = match run {
                Run::Hole { len } => {
                    // e2fsck allocates every missing block below i_size.
                    sink.put(Error::corrupt(
                        Object::DirBlock {
                            dir: dir.ino,
                            lblk: FileBlock(lblk as u32),
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
                    lblk: FileBlock(l as u32),
                };
                match self.cache_read_with(pblk + i, |b| self.check_dir_block(dir, b, l, obj)) {
                    Ok(found) => self.record_dir_block(dir, obj, found, sink, walk),
                    Err(e) => {
                        walk.tally.lose_dirs();
                        sink.put(e)
                    }
                }
            }
            lblk += len;
        }
        if dx && walk.first {
            self.check_dx_tree(dir, sink);
        }
    }

    /// An inline-data directory: its entries parse, and are tallied.
    pub(super) fn check_inline_dir(
        &self,
        dir: &Inode,
        sink: &mut ProblemSink<'_>,
        walk: &WalkState<'_>,
    ) {
        if sink.res(self.inline_check(dir)).is_none() {
            return walk.tally.lose_dirs();
        }
        if let Some(t) = &walk.tally.inodes {
            // Entries in order: ".", "..", then the names.
            let mut n = 0u8;
            let r = self.inline_readdir(dir, 0, &mut |e| {
                t.entry(dir.ino.0, e.ino.0, n);
                n = (n + 1).min(2);
                true
            });
            if r.is_err() {
                walk.tally.lose_dirs();
            }
        }
    }

    /// What one block of directory `dir` (its logical block `l`) says on
    /// its own: checksum, entries, "." and "..", names repeated within the
    /// block; and the entries to check against the inodes they name.
    pub(super) fn check_dir_block(
        &self,
        dir: &Inode,
        b: &[u8],
        l: u64,
        obj: Object,
    ) -> DirBlockFindings {
        let mut found = DirBlockFindings {
            errs: HVec::new(),
            targets: Vec::new(),
            broken: false,
        };
        let errs = &mut found.errs;
        let encrypted = dir.has_flag(flags::ENCRYPT);
        let node = self.is_dx(dir) && dir::is_dx_node(b, l);
        if !node {
            if let Err(e) = self.check_leaf(dir, b, FileBlock(l as u32)) {
                let _ = errs.push(e);
            }
        }
        // Index nodes are checked by the tree walk; the root still starts
        // with "." and "..".
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
            let e = match e {
                Ok(e) => e,
                Err(e) => {
                    let _ = errs.push(e);
                    found.broken = true;
                    break;
                }
            };
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
                    (&b"."[..], e.inode == dir.ino.0)
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
                found.targets.push(Target {
                    ino: e.inode,
                    file_type: e.file_type,
                    which: if l == 0 { n.min(2) as u8 } else { 2 },
                });
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
        found
    }

    /// Report what a directory block said and tally its entries (checked
    /// against their inodes in the first pass only).
    pub(super) fn record_dir_block(
        &self,
        dir: &Inode,
        obj: Object,
        found: DirBlockFindings,
        sink: &mut ProblemSink<'_>,
        walk: &WalkState<'_>,
    ) {
        if found.broken {
            walk.tally.lose_dirs();
        }
        found.errs.into_iter().for_each(|e| sink.put(e));
        for t in found.targets {
            if let Some(tally) = &walk.tally.inodes {
                tally.entry(dir.ino.0, t.ino, t.which);
            }
            if !walk.first {
                continue;
            }
            if let Err(what) = self.check_target(t) {
                sink.put(Error::corrupt(obj, what));
            }
        }
    }

    pub(super) fn check_target(&self, t: Target) -> core::result::Result<(), &'static str> {
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
        if !sb.has_incompat(crate::features::incompat::FILETYPE) {
            // The byte is the name length's high half in the oldest layout,
            // zero for every name ext2 allows; e2fsck clears it.
            if t.file_type != 0 {
                return Err("entry has a file type set without the filetype feature");
            }
            return Ok(());
        }
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
        if let Ok(inode) = self.inode(InodeNo(t.ino)) {
            if inode.links_count == 0 && inode.mode == 0 {
                return Err("entry refers to a deleted inode");
            }
            if inode.kind.is_some() && FileType::from_dirent(t.file_type) != inode.kind {
                return Err("entry's file type does not match its inode");
            }
        }
        Ok(())
    }

    /// Walk the hash tree's index nodes (the leaves' entries were checked
    /// above), and, as e2fsck does, require every name in a leaf to hash
    /// within the range its index entry gives it.
    pub(super) fn check_dx_tree(&self, dir: &Inode, sink: &mut ProblemSink<'_>) {
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
            let obj = Object::DirBlock {
                dir: dir.ino,
                lblk: FileBlock(lblk),
            };
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
}
