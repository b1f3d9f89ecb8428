//! The objects the superblock points at that no inode walk reaches: the
//! journal's own superblock, the MMP block, the quota inode numbers and
//! the orphan file's contents.
//! Each rule is one `e2fsck` enforces before its passes (a journal
//! superblock it calls corrupt, an MMP block with a bad magic number, a
//! quota inode number it calls invalid), and nothing it lets pass.

use zerocopy::FromBytes;

use super::ProblemSink;
use crate::blockmap::Run;
use crate::device::BlockDevice;
use crate::error::{Error, Object};
use crate::features::{compat, incompat, ro_compat};
use crate::journal::format::{self as journal, JournalSuperblock};
use crate::mmp::{self, RawMmp};
use crate::numbers::{FileBlock, InodeNo, PhysBlock};
use crate::volume::Volume;

/// Inode numbers `e2fsck` refuses as quota files: the reserved ones that
/// have another job (3 and 4 are the user and group quota inodes).
const NOT_QUOTA: [u32; 8] = [1, 2, 5, 6, 7, 8, 9, 10];

impl<D: BlockDevice> Volume<D> {
    pub(super) fn check_special(&self, sink: &mut ProblemSink<'_>) {
        let sb = self.sb();
        let quota = sb.has_ro_compat(ro_compat::QUOTA);
        for (inum, which) in sb.quota_inums.into_iter().zip([
            "superblock names an invalid user quota inode",
            "superblock names an invalid group quota inode",
            "superblock names an invalid project quota inode",
        ]) {
            if quota && inum != 0 && (inum > sb.inodes_count || NOT_QUOTA.contains(&inum)) {
                sink.put(Error::corrupt(Object::Superblock, which));
            }
        }
        if sb.has_incompat(incompat::MMP) {
            self.check_mmp(sb.mmp_block, sink);
        }
        if sb.has_compat(compat::HAS_JOURNAL) && sb.journal_inum != 0 {
            self.check_journal_sb(sb.journal_inum, sink);
        }
        if sb.has_ro_compat(ro_compat::ORPHAN_PRESENT) {
            self.check_orphans_present(sb.orphan_file_inum, sink);
        }
    }

    /// `orphan_present` says the orphan file lists inodes; e2fsck calls
    /// the flag wrong when the file is empty (or missing).
    fn check_orphans_present(&self, ino: u32, sink: &mut ProblemSink<'_>) {
        let sb = self.sb();
        if !sb.has_compat(compat::ORPHAN_FILE) || ino == 0 {
            return sink.put(Error::corrupt(
                Object::Superblock,
                "orphan_present is set but there is no orphan file",
            ));
        }
        // A broken orphan file inode is reported by the inode walk.
        let Ok(inode) = self.inode(InodeNo(ino)) else {
            return;
        };
        let bs = sb.block_size as u64;
        // Each block: inode numbers, then an 8-byte tail (magic, checksum).
        let slots = (bs as usize - 8) / 4;
        let nblocks = (inode.size / bs).min(sb.blocks_count);
        for lblk in 0..nblocks {
            let Ok(Run::Mapped { pblk, .. }) = self.map_block_at(&inode, lblk) else {
                return;
            };
            let listed = self.cache_read_with(pblk, |b| {
                b[..slots * 4].chunks_exact(4).any(|w| w != [0; 4])
            });
            match listed {
                Ok(false) => {}
                Ok(true) => return,
                Err(e) => return sink.put(e),
            }
        }
        sink.put(Error::corrupt(
            Object::Superblock,
            "orphan_present is set but the orphan file lists no inode",
        ));
    }

    fn check_mmp(&self, blk: u64, sink: &mut ProblemSink<'_>) {
        let blk = PhysBlock(blk);
        if !self.blocks_in_fs(blk, 1) || blk.0 == 0 {
            return sink.put(Error::corrupt(
                Object::Superblock,
                "MMP block number lies outside the filesystem",
            ));
        }
        let r = self.cache_read_with(blk, |b| {
            let m = RawMmp::read_from_prefix(b).ok()?.0;
            Some((
                m.magic.get(),
                m.checksum.get(),
                mmp::checksum(self.sb().csum_seed, b),
            ))
        });
        match r {
            Err(e) => sink.put(e),
            Ok(None) => {}
            Ok(Some((magic, stored, computed))) => {
                if magic != mmp::MAGIC {
                    sink.put(Error::corrupt(
                        Object::Block(blk),
                        "MMP block has a bad magic number",
                    ));
                } else if self.sb().metadata_csum() && self.check_csums() && stored != computed {
                    sink.put(Error::Checksum {
                        object: Object::Block(blk),
                    });
                }
            }
        }
    }

    /// The rules `e2fsck` applies when it loads an internal journal.
    fn check_journal_sb(&self, ino: u32, sink: &mut ProblemSink<'_>) {
        let obj = Object::Inode(InodeNo(ino));
        // A broken journal inode is reported by the inode walk.
        let Ok(inode) = self.inode(InodeNo(ino)) else {
            return;
        };
        let bs = self.sb().block_size as u64;
        let Ok(Run::Mapped { pblk, .. }) = self.map_block(&inode, FileBlock(0)) else {
            return;
        };
        let r = self.cache_read_with(pblk, |b| -> Option<&'static str> {
            let raw: &[u8; journal::SIZE] = b.get(..journal::SIZE)?.try_into().ok()?;
            let j = JournalSuperblock::ref_from_bytes(raw).ok()?;
            if j.magic.get() != journal::MAGIC {
                return Some("journal superblock has a bad magic number");
            }
            match j.blocktype.get() {
                // e2fsck clears stray version 2 fields of a version 1
                // superblock without calling it damage.
                journal::SUPERBLOCK_V1 => {}
                journal::SUPERBLOCK_V2 => {
                    if j.nr_users.get() > 1 {
                        return Some("internal journal names more than one filesystem as its user");
                    }
                    if j.has_csum()
                        && (j.checksum_type != journal::CSUM_CRC32C
                            || j.checksum.get() != journal::checksum(raw))
                    {
                        return Some("journal superblock checksum does not match");
                    }
                }
                _ => return Some("journal superblock has an unknown version"),
            }
            let total = inode.size / bs;
            if j.blocksize.get() as u64 != bs {
                return Some("journal block size differs from the filesystem's");
            }
            if j.maxlen.get() as u64 > total {
                return Some("journal superblock says the journal is longer than its inode");
            }
            // s_first outside the journal: the kernel refuses to load it,
            // but e2fsck -n lets it pass, so it is not reported here.
            None
        });
        match r {
            Ok(Some(what)) => sink.put(Error::corrupt(obj, what)),
            Ok(None) => {}
            Err(e) => sink.put(e),
        }
    }
}
