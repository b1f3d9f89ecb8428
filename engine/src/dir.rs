//! Directories: entry blocks, listing with resumable cookies, and name
//! lookup (through the hash tree when the directory has one).

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::attr::{Attr, FileType};
use crate::block_cache::Mark;
use crate::blockmap::Run;
use crate::checksum::crc32c;
use crate::device::BlockDevice;
use crate::error::{Error, Object, Result};
use crate::features::{compat, incompat};
use crate::inode::{flags, Inode};
use crate::volume::{DirEntry, Volume};

/// `struct ext4_dir_entry_2` without the name.
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawDirent {
    pub inode: U32,
    pub rec_len: U16,
    pub name_len: u8,
    pub file_type: u8,
}

pub const HEADER_LEN: usize = 8;
/// The checksum tail of a leaf block is a fake 12-byte entry.
pub const TAIL_LEN: usize = 12;
/// Encrypted names are padded to whole cipher blocks of this many bytes
/// (fscrypt's minimum), so no stored encrypted name is shorter.
pub const CRYPTO_BLOCK: usize = 16;
const TAIL_FILE_TYPE: u8 = 0xDE;

/// `rec_len` as stored; 64 KiB blocks need the extra encoding.
pub fn rec_len_from_disk(v: u16, block_size: usize) -> usize {
    let len = v as usize;
    if block_size < 65536 {
        return len;
    }
    if len == 65535 || len == 0 {
        return block_size;
    }
    (len & 65532) | ((len & 3) << 16)
}

/// One entry of a directory block, checked against the block.
#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    pub offset: usize,
    pub rec_len: usize,
    pub inode: u32,
    pub name: &'a [u8],
    pub file_type: u8,
}

/// Iterate the entries of one directory block (or an inline-data area).
/// Yields `Err` once at the first malformed entry and stops.
pub struct Entries<'a> {
    block: &'a [u8],
    pos: usize,
    inodes_count: u32,
    obj: Object,
    done: bool,
}

impl<'a> Entries<'a> {
    pub fn new(block: &'a [u8], start: usize, inodes_count: u32, obj: Object) -> Self {
        Entries {
            block,
            pos: start,
            inodes_count,
            obj,
            done: false,
        }
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<Entry<'a>>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.pos + HEADER_LEN > self.block.len() {
            if !self.done && self.pos != self.block.len() {
                self.done = true;
                return Some(Err(Error::corrupt(
                    self.obj,
                    "directory entry runs past the end of the block",
                )));
            }
            return None;
        }
        let fail = |s: &mut Self, what| {
            s.done = true;
            Some(Err(Error::corrupt(s.obj, what)))
        };
        let Ok((h, _)) = RawDirent::read_from_prefix(&self.block[self.pos..]) else {
            return fail(self, "directory entry truncated");
        };
        let rec_len = rec_len_from_disk(h.rec_len.get(), self.block.len().max(1024));
        let name_len = h.name_len as usize;
        if rec_len < 12 && !(rec_len == 8 && name_len == 0 && self.pos + 8 == self.block.len()) {
            return fail(self, "directory entry record length is too small");
        }
        if !rec_len.is_multiple_of(4) {
            return fail(self, "directory entry record length is not a multiple of 4");
        }
        if HEADER_LEN + name_len > rec_len {
            return fail(self, "directory entry name is longer than its record");
        }
        if self.pos + rec_len > self.block.len() {
            return fail(self, "directory entry runs past the end of the block");
        }
        let inode = h.inode.get();
        if inode > self.inodes_count {
            return fail(
                self,
                "directory entry refers to an inode number out of range",
            );
        }
        let offset = self.pos;
        self.pos += rec_len;
        let name = &self.block[offset + HEADER_LEN..offset + HEADER_LEN + name_len];
        Some(Ok(Entry {
            offset,
            rec_len,
            inode,
            name,
            file_type: h.file_type,
        }))
    }
}

/// Whether `block` ends with the checksum tail entry.
pub fn has_tail(block: &[u8]) -> bool {
    let n = block.len();
    n >= TAIL_LEN
        && block[n - 12..n - 8] == [0; 4]
        && u16::from_le_bytes([block[n - 8], block[n - 7]]) == 12
        && block[n - 6] == 0
        && block[n - 5] == TAIL_FILE_TYPE
}

/// Whether a leaf block's tail checksum matches (`seed`: the inode's).
pub fn leaf_checksum_ok(block: &[u8], seed: u32) -> bool {
    if !has_tail(block) {
        return false;
    }
    let n = block.len();
    let stored = u32::from_le_bytes([block[n - 4], block[n - 3], block[n - 2], block[n - 1]]);
    crc32c(seed, &block[..n - TAIL_LEN]) == stored
}

/// The part of a leaf block that holds entries (without the tail).
pub fn entry_area(block: &[u8]) -> &[u8] {
    if has_tail(block) {
        &block[..block.len() - TAIL_LEN]
    } else {
        block
    }
}

/// Whether a block of a hashed directory is an index node: the root
/// (logical block 0) or an interior node, which starts with an empty entry
/// spanning the whole block.
pub fn is_dx_node(block: &[u8], lblk: u64) -> bool {
    if lblk == 0 {
        return true;
    }
    block.len() >= 8
        && block[0..4] == [0; 4]
        && rec_len_from_disk(u16::from_le_bytes([block[4], block[5]]), block.len()) == block.len()
}

impl<D: BlockDevice> Volume<D> {
    pub(crate) fn dirent_kind(&self, ft: u8) -> Option<FileType> {
        if self.sb().has_incompat(incompat::FILETYPE) {
            FileType::from_dirent(ft)
        } else {
            None
        }
    }

    /// Whether `dir` uses a hash tree for lookups.
    pub(crate) fn is_dx(&self, dir: &Inode) -> bool {
        self.sb().has_compat(compat::DIR_INDEX) && dir.has_flag(flags::INDEX)
    }

    pub(crate) fn dir_inode(&self, ino: u32) -> Result<alloc::sync::Arc<Inode>> {
        let inode = self.live_inode(ino)?;
        if inode.kind != Some(FileType::Directory) {
            return Err(Error::NotDir);
        }
        Ok(inode)
    }

    /// Check a leaf block's checksum, as the kernel does before using it.
    pub(crate) fn check_leaf(&self, dir: &Inode, block: &[u8], lblk: u64) -> Result<()> {
        if self.sb().metadata_csum()
            && self.check_csums()
            && !leaf_checksum_ok(block, dir.csum_seed)
        {
            return Err(Error::Checksum {
                object: Object::DirBlock {
                    dir: dir.ino,
                    lblk: lblk as u32,
                },
            });
        }
        Ok(())
    }

    /// [`Volume::check_leaf`] once per cached copy of the block: skipped
    /// when these bytes already passed it under this directory's seed (a
    /// block read again from the device, or rewritten, is checked again).
    pub(crate) fn check_leaf_once(
        &self,
        dir: &Inode,
        block: &[u8],
        lblk: u64,
        mark: &Mark,
    ) -> Result<()> {
        // The seed decides the result; the high bit keeps the tag nonzero.
        let tag = 1 << 32 | dir.csum_seed as u64;
        if mark.is(tag) {
            return Ok(());
        }
        self.check_leaf(dir, block, lblk)?;
        mark.set(tag);
        Ok(())
    }

    /// The entries of block `lblk` of `dir` as a scan sees them: `None` for
    /// an interior node of a hash tree (`dx`), the whole block for its root
    /// (the index hides in the ".." record), otherwise the leaf's entry
    /// area after its checksum passed (once per cached copy).
    pub(crate) fn scan_area<'b>(
        &self,
        dir: &Inode,
        dx: bool,
        block: &'b [u8],
        lblk: u64,
        mark: &Mark,
    ) -> Result<Option<&'b [u8]>> {
        if dx && lblk == 0 {
            return Ok(Some(block));
        }
        if dx && is_dx_node(block, lblk) {
            return Ok(None);
        }
        self.check_leaf_once(dir, block, lblk, mark)?;
        Ok(Some(entry_area(block)))
    }

    /// List directory `dir` from `cookie` (0 = start). `f` returns `false`
    /// to stop; the entry it refused is not consumed. A damaged block is
    /// reported through [`Volume::report`] and skipped, as the kernel does.
    pub fn readdir(
        &self,
        dir: u32,
        cookie: u64,
        f: &mut dyn FnMut(&DirEntry<'_>) -> bool,
    ) -> Result<()> {
        let inode = self.dir_inode(dir)?;
        if inode.has_flag(flags::INLINE_DATA) {
            return self.inline_readdir(&inode, cookie, f);
        }
        let bs = self.sb().block_size as u64;
        let nblocks = inode.size.div_ceil(bs);
        let mut lblk = cookie / bs;
        let mut start = (cookie % bs) as usize;
        let dx = self.is_dx(&inode);
        while lblk < nblocks {
            let run = match self.map_block(&inode, lblk) {
                Ok(r) => r,
                Err(e) => {
                    // Without a map there is no way to find further blocks.
                    self.report(e);
                    return Ok(());
                }
            };
            let (pblk, len) = match run {
                Run::Hole { len } => {
                    lblk += len;
                    start = 0;
                    continue;
                }
                Run::Mapped { pblk, len, .. } => (pblk, len.min(nblocks - lblk)),
            };
            for i in 0..len {
                let l = lblk + i;
                let stop = self.cache_read_marked(pblk + i, |block, mark| -> Result<bool> {
                    let Some(area) = self.scan_area(&inode, dx, block, l, mark)? else {
                        return Ok(false);
                    };
                    let obj = Object::DirBlock {
                        dir,
                        lblk: l as u32,
                    };
                    for e in Entries::new(area, 0, self.sb().inodes_count, obj) {
                        let e = e?;
                        if e.offset < start || e.inode == 0 {
                            continue;
                        }
                        let next_off = e.offset + e.rec_len;
                        let next = if next_off >= area.len() {
                            (l + 1) * bs
                        } else {
                            l * bs + next_off as u64
                        };
                        let de = DirEntry {
                            ino: e.inode,
                            name: e.name,
                            kind: self.dirent_kind(e.file_type),
                            next,
                        };
                        if !f(&de) {
                            return Ok(true);
                        }
                    }
                    Ok(false)
                });
                match stop {
                    Ok(Ok(true)) => return Ok(()),
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) | Err(e) => self.report(e),
                }
                start = 0;
            }
            lblk += len;
        }
        Ok(())
    }

    /// Look `name` up in directory `dir`; returns the child's attributes.
    pub fn lookup(&self, dir: u32, name: &[u8]) -> Result<Attr> {
        let ino = self.lookup_ino(dir, name)?;
        self.getattr(ino)
    }

    /// Look `name` up in directory `dir`; returns the child's inode number.
    pub fn lookup_ino(&self, dir: u32, name: &[u8]) -> Result<u32> {
        if name.len() > 255 {
            return Err(Error::NameTooLong);
        }
        if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
            return Err(Error::NotFound);
        }
        let inode = self.dir_inode(dir)?;
        if inode.has_flag(flags::INLINE_DATA) {
            return self.inline_lookup(&inode, name);
        }
        let dot = name == b"." || name == b"..";
        // A hash tree that was found damaged or full of colliding names
        // has a name index instead (built by the scan that followed).
        if self.is_dx(&inode)
            && !dot
            && !inode.has_flag(flags::CASEFOLD)
            && !self.name_indexes().has_index(inode.ino)
        {
            match self.dx_lookup(&inode, name) {
                Ok(found) => return found.ok_or(Error::NotFound),
                // A damaged tree: fall back to a linear scan, as the kernel does.
                Err(e) if e.is_corruption() => self.report(e),
                Err(e) => return Err(e),
            }
        }
        let found = if dot {
            self.linear_lookup(&inode, name, 0, 1)?
        } else {
            self.scan_lookup(&inode, name)?
        };
        found.ok_or(Error::NotFound)
    }

    /// Search logical blocks `from..to` of `dir` for `name`.
    pub(crate) fn linear_lookup(
        &self,
        dir: &Inode,
        name: &[u8],
        from: u64,
        to: u64,
    ) -> Result<Option<u32>> {
        Ok(self.linear_find(dir, name, from, to)?.map(|(ino, _)| ino))
    }

    /// [`Volume::linear_lookup`], also saying which block held the name.
    pub(crate) fn linear_find(
        &self,
        dir: &Inode,
        name: &[u8],
        from: u64,
        to: u64,
    ) -> Result<Option<(u32, u64)>> {
        let dx = self.is_dx(dir);
        let fold = dir.has_flag(flags::CASEFOLD);
        let mut lblk = from;
        while lblk < to {
            let (pblk, len) = match self.map_block(dir, lblk)? {
                Run::Hole { len } => {
                    lblk += len;
                    continue;
                }
                Run::Mapped { pblk, len, .. } => (pblk, len.min(to - lblk)),
            };
            for i in 0..len {
                let l = lblk + i;
                let found =
                    self.cache_read_marked(pblk + i, |block, mark| -> Result<Option<u32>> {
                        let Some(area) = self.scan_area(dir, dx, block, l, mark)? else {
                            return Ok(None);
                        };
                        let obj = Object::DirBlock {
                            dir: dir.ino,
                            lblk: l as u32,
                        };
                        for e in Entries::new(area, 0, self.sb().inodes_count, obj) {
                            let e = e?;
                            if e.inode != 0 && names_equal(e.name, name, fold) {
                                return Ok(Some(e.inode));
                            }
                        }
                        Ok(None)
                    });
                match found {
                    Ok(Ok(Some(ino))) => return Ok(Some((ino, l))),
                    Ok(Ok(None)) => {}
                    // A bad block hides only its own entries.
                    Ok(Err(e)) | Err(e) => self.report(e),
                }
            }
            lblk += len;
        }
        Ok(None)
    }
}

/// Name comparison; case-insensitive directories compare ASCII letters
/// without case (full Unicode casefolding is not implemented).
pub(crate) fn names_equal(a: &[u8], b: &[u8], fold: bool) -> bool {
    if fold {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rec_len_encoding_for_64k_blocks() {
        assert_eq!(rec_len_from_disk(12, 4096), 12);
        assert_eq!(rec_len_from_disk(0, 65536), 65536);
        assert_eq!(rec_len_from_disk(65535, 65536), 65536);
        assert_eq!(rec_len_from_disk(0xFFFC, 65536), 0xFFFC);
    }

    #[test]
    fn entries_reject_bad_records() {
        let mut b = [0u8; 64];
        b[0..4].copy_from_slice(&5u32.to_le_bytes());
        b[4..6].copy_from_slice(&12u16.to_le_bytes());
        b[6] = 1;
        b[8] = b'a';
        b[12..16].copy_from_slice(&6u32.to_le_bytes());
        b[16..18].copy_from_slice(&100u16.to_le_bytes()); // runs past the block
        let v: alloc::vec::Vec<_> = Entries::new(&b, 0, 100, Object::Inode(2)).collect();
        assert_eq!(v.len(), 2);
        assert!(v[0].is_ok());
        assert!(v[1].is_err());
    }
}
