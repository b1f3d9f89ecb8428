//! One inode: its record (checksum, fields, flags), its size against its
//! mapping, its xattrs; then what its kind calls for.

use super::*;

impl<D: BlockDevice> Volume<D> {
    pub(super) fn check_inode(
        &self,
        ino: u32,
        bytes: &[u8],
        opts: &CheckOptions,
        sink: &mut ProblemSink<'_>,
        sum: &mut CheckSummary,
        walk: &WalkState<'_>,
    ) {
        let sb = self.sb();
        let id = InodeNo(ino);
        let mode = u16::from_le_bytes([bytes[0], bytes[1]]);
        let links = u16::from_le_bytes([bytes[26], bytes[27]]);
        let note = |fl: u8| {
            if let Some(t) = &walk.tally.inodes {
                t.found(ino, links, fl | flag::MARKED);
            }
        };
        let lost = || {
            note(flag::BAD);
            walk.tally.lose_claims();
            walk.tally.lose_dirs();
        };
        // Reserved inodes that are not in use keep mode 0 (bad blocks inode).
        if ino < sb.first_ino && mode == 0 {
            if ino != ROOT_INO {
                note(flag::USED | flag::HIDDEN);
            }
            if ino == BAD_BLOCKS_INO {
                self.claim_bad_blocks(bytes, sink, walk);
            }
            return;
        }
        sum.inodes += 1;
        if self.check_csums() && !inode::checksum_ok(sb, id, bytes) {
            sink.put(Error::Checksum {
                object: Object::Inode(id),
            });
            return lost();
        }
        let Some(inode) = sink.res(Inode::parse(sb, id, bytes)) else {
            return lost();
        };
        if inode.links_count == 0 {
            // Deleted or orphaned: e2fsck handles it through the orphan list.
            return note(0);
        }
        let Some(kind) = inode.kind else {
            sink.put(Error::corrupt(
                Object::Inode(id),
                "unknown file type in i_mode",
            ));
            return lost();
        };
        let mut fl = flag::USED;
        if kind == FileType::Directory {
            fl |= flag::DIR;
        }
        if walk.hidden(ino, inode.flags) {
            fl |= flag::HIDDEN;
        }
        note(fl);
        // Later passes only gather: what reports nothing new is skipped.
        if walk.first {
            self.check_inode_rules(&inode, kind, sink);
            self.check_xattrs(&inode, sink);
        }
        let has_map = match kind {
            FileType::Regular | FileType::Directory => true,
            FileType::Symlink => !self.is_fast_symlink(&inode),
            _ => false,
        };
        let before = sink.count;
        let mut claims = walk.claims(ino);
        if inode.file_acl != 0 {
            claims.xattr(PhysBlock(inode.file_acl));
        }
        if inode.has_flag(flags::INLINE_DATA) {
            let mut buf = vec![0u8; inode.size.min(sb.block_size as u64) as usize];
            sink.res(self.read_inode(&inode, 0, &mut buf));
        } else if has_map {
            if inode.has_flag(flags::EXTENTS) {
                self.check_extent_tree(&inode, sink, &mut claims);
            } else if self.is_resize_inode(&inode) {
                // Only its double-indirect block is its own: the blocks
                // under it are the reserved descriptor blocks, claimed as
                // metadata.
                let mut none = walk.no_claims();
                self.check_block_map(&inode, sink, &mut none);
                claims.blocks(PhysBlock(inode.block_word(13) as u64), 1);
            } else {
                self.check_block_map(&inode, sink, &mut claims);
            }
        }
        if sink.count != before {
            walk.tally.lose_claims();
        } else if has_map || inode.file_acl != 0 || inode.has_flag(flags::INLINE_DATA) {
            // e2fsck counts what the inode maps, its xattr block included
            // (with EA inodes also their blocks: not checked, whether or
            // not the ea_inode feature is set, as e2fsck counts them).
            if !self.is_resize_inode(&inode)
                && !sb.has_incompat(crate::features::incompat::EA_INODE)
                && !self.refers_to_ea_inodes(&inode)
                && inode.blocks_512 != claims.sectors()
            {
                sink.put(Error::corrupt(
                    Object::Inode(id),
                    "i_blocks does not match the blocks the inode maps",
                ));
            }
            if has_map && !inode.has_flag(flags::INLINE_DATA) && !self.is_resize_inode(&inode) {
                if let Some(what) = self.size_problem(&inode, kind, &claims, walk) {
                    sink.put(Error::corrupt(Object::Inode(id), what));
                }
            }
        }
        claims.finish(ino, sink);
        match kind {
            FileType::Directory => {
                sum.directories += 1;
                self.check_dir(&inode, sink, walk);
            }
            FileType::Regular => {
                sum.regular_files += 1;
                if opts.data && ino >= sb.first_ino && !inode.has_flag(flags::ENCRYPT) {
                    sum.data_bytes += self.check_data(&inode, sink);
                }
            }
            FileType::Symlink if walk.first => {
                // e2fsck wants exactly i_size bytes of target: a NUL
                // inside it (where readers stop) makes the link invalid.
                if let Some(t) = sink.res(self.readlink(id)) {
                    // (An encrypted target is ciphertext, NULs and all.)
                    if t.len() as u64 != inode.size && !inode.has_flag(flags::ENCRYPT) {
                        sink.put(Error::corrupt(
                            Object::Inode(id),
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
    pub(super) fn size_problem(
        &self,
        inode: &Inode,
        kind: FileType,
        claims: &BlockClaims<'_>,
        walk: &WalkState<'_>,
    ) -> Option<&'static str> {
        let bs = self.sb().block_size as u64;
        if kind == FileType::Directory {
            let nblock = inode.size / bs;
            let end = claims.last.map_or(0, |l| l + 1);
            if !inode.size.is_multiple_of(bs) {
                Some("directory size is not a whole number of blocks")
            } else if nblock > end {
                Some("directory size runs past its last block")
            } else if end - nblock > walk.prealloc_dir_blocks {
                Some("directory has blocks past its size")
            } else {
                None
            }
        } else {
            let last = claims.last_init?;
            (!inode.has_flag(flags::VERITY) && inode.size < last * bs)
                .then_some("i_size is smaller than the initialized blocks the inode maps")
        }
    }

    /// Field rules `e2fsck` enforces on a single inode.
    pub(super) fn check_inode_rules(
        &self,
        inode: &Inode,
        kind: FileType,
        sink: &mut ProblemSink<'_>,
    ) {
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
        if inode.ino == InodeNo::ROOT && kind != FileType::Directory {
            sink.put(Error::corrupt(obj, "root inode is not a directory"));
        }
    }

    pub(super) fn check_xattrs(&self, inode: &Inode, sink: &mut ProblemSink<'_>) {
        // No xattr block and no in-inode entries (no magic): nothing to
        // list, and listxattr would only load and verify the inode again.
        if inode.file_acl == 0
            && crate::xattr::parse_ibody(inode.ibody(), inode.ino).is_ok_and(|v| v.is_empty())
        {
            return;
        }
        // Both areas parsed (the block's checksum verified), inline values
        // and ACLs decoded, EA inode references held to e2fsck's rules.
        sink.res(self.check_xattr_values(inode));
    }
}
