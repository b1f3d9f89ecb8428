//! Block mappings: extent trees and indirect maps walked node by node,
//! every block claimed; and file data read to its end (`--data`).

use super::*;

impl<D: BlockDevice> Volume<D> {
    /// Visit every node of an extent tree, checking headers, checksums,
    /// key order, bounds and that children stay inside their parent's range.
    pub(super) fn check_extent_tree(
        &self,
        inode: &Inode,
        sink: &mut ProblemSink<'_>,
        claims: &mut BlockClaims<'_>,
    ) {
        let ino = inode.ino;
        let Some(root) = sink.res(Node::parse(&inode.block, None, Object::Inode(ino))) else {
            return;
        };
        // (block, expected depth, low key, high key) — the stack holds at
        // most one pending child list per level.
        let mut stack: Vec<(PhysBlock, u16, u64, u64)> = Vec::new();
        self.check_node(
            &root,
            Object::Inode(ino),
            0,
            crate::numbers::FileBlock::COUNT,
            &mut stack,
            sink,
            claims,
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
            claims.blocks(blk, 1);
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
                if node.key(0).get() != lo {
                    return Err(Error::corrupt(
                        Object::Block(blk),
                        "extent tree block does not start at the logical block its index entry names",
                    ));
                }
                let mut inner: Vec<(PhysBlock, u16, u64, u64)> = Vec::new();
                let mut tmp = ProblemSink {
                    problem: sink.problem,
                    count: 0,
                };
                self.check_node(&node, Object::Block(blk), lo, hi, &mut inner, &mut tmp, claims);
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
    pub(super) fn check_node(
        &self,
        node: &Node<'_>,
        obj: Object,
        lo: u64,
        hi: u64,
        children: &mut Vec<(PhysBlock, u16, u64, u64)>,
        sink: &mut ProblemSink<'_>,
        claims: &mut BlockClaims<'_>,
    ) {
        let mut prev_end = lo;
        for i in 0..node.entries {
            let key = node.key(i).get();
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
                claims.blocks(e.pblk, e.len as u64);
                claims.mapped(e.end() - 1, !e.unwritten);
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
                    node.key(i + 1).get()
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
    pub(super) fn check_block_map(
        &self,
        inode: &Inode,
        sink: &mut ProblemSink<'_>,
        claims: &mut BlockClaims<'_>,
    ) {
        // Pointer blocks reused under many slots can map far more blocks
        // than exist: stop once the file claims more than the filesystem
        // has, which no valid file does.
        let mut left = self.sb().blocks_count;
        let mut run = (PhysBlock(0), 0u64);
        for i in 0..12 {
            let p = PhysBlock(inode.block_word(i) as u64);
            if p.0 != 0 {
                claims.mapped(i as u64, true);
                if self
                    .map_ptr(inode.ino, p, &mut left, &mut run, sink, claims)
                    .is_err()
                {
                    return;
                }
            }
        }
        if run.1 > 0 {
            claims.blocks(run.0, run.1);
        }
        // First logical block under each of the three trees.
        let per = (self.sb().block_size / 4) as u64;
        let bases = [12, 12 + per, 12 + per + per * per];
        for (i, depth) in [(12, 1), (13, 2), (14, 3)] {
            let p = PhysBlock(inode.block_word(i) as u64);
            let base = bases[i - 12];
            if p.0 != 0
                && self
                    .map_tree(inode.ino, p, depth, base, &mut left, sink, claims)
                    .is_err()
            {
                return;
            }
        }
    }

    /// One data pointer, merged into the current run of contiguous blocks.
    pub(super) fn map_ptr(
        &self,
        ino: InodeNo,
        p: PhysBlock,
        left: &mut u64,
        run: &mut (PhysBlock, u64),
        sink: &mut ProblemSink<'_>,
        claims: &mut BlockClaims<'_>,
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
                claims.blocks(run.0, run.1);
            }
            *run = (p, 1);
        }
        Ok(())
    }

    /// A pointer block `depth` levels above the data, and all under it
    /// (logical blocks from `base`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn map_tree(
        &self,
        ino: InodeNo,
        p: PhysBlock,
        depth: u32,
        base: u64,
        left: &mut u64,
        sink: &mut ProblemSink<'_>,
        claims: &mut BlockClaims<'_>,
    ) -> core::result::Result<(), ()> {
        let mut run = (PhysBlock(0), 0u64);
        self.map_ptr(ino, p, left, &mut run, sink, claims)?;
        claims.blocks(p, 1);
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
        let mut run = (PhysBlock(0), 0u64);
        let span = ((self.sb().block_size / 4) as u64).pow(depth - 1);
        for (k, q) in ptrs.into_iter().enumerate().filter(|&(_, q)| q != 0) {
            let lblk = base + k as u64 * span;
            if depth == 1 {
                claims.mapped(lblk, true);
                self.map_ptr(ino, PhysBlock(q as u64), left, &mut run, sink, claims)?;
            } else {
                self.map_tree(
                    ino,
                    PhysBlock(q as u64),
                    depth - 1,
                    lblk,
                    left,
                    sink,
                    claims,
                )?;
            }
        }
        if run.1 > 0 {
            claims.blocks(run.0, run.1);
        }
        Ok(())
    }

    /// The bad blocks inode (mode 0, no links) owns the blocks in its map.
    pub(super) fn claim_bad_blocks(
        &self,
        bytes: &[u8],
        sink: &mut ProblemSink<'_>,
        walk: &WalkState<'_>,
    ) {
        let Ok(inode) = Inode::parse(self.sb(), InodeNo(BAD_BLOCKS_INO), bytes) else {
            return;
        };
        if (0..15).all(|i| inode.block_word(i) == 0) {
            return;
        }
        let mut claims = walk.claims(BAD_BLOCKS_INO);
        let before = sink.count;
        self.check_block_map(&inode, sink, &mut claims);
        if sink.count != before {
            walk.tally.lose_claims();
        }
        claims.finish(BAD_BLOCKS_INO, sink);
    }

    /// Read every file byte, so unreadable mappings show up.
    pub(super) fn check_data(&self, inode: &Inode, sink: &mut ProblemSink<'_>) -> u64 {
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
        let end = inode
            .size
            .div_ceil(bs)
            .min(crate::numbers::FileBlock::COUNT);
        let mut buf = vec![0u8; (1usize << 20).max(bs as usize)];
        let chunk = buf.len() as u64 / bs;
        let (mut lblk, mut read, mut runs) = (0u64, 0u64, 0u64);
        while lblk < end {
            let run = match self.map_block_at(inode, lblk) {
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
                    if let Err(e) = self.read_device((pblk + done).0 * bs, dst) {
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
