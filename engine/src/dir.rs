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
use crate::numbers::{FileBlock, InodeNo};
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
    /// The inode named (0: an unused record), checked against the
    /// filesystem's inode count.
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
        if let Err(what) = check_entry(self.block, self.pos, self.inodes_count) {
            self.done = true;
            return Some(Err(Error::corrupt(self.obj, what)));
        }
        let Ok((h, _)) = RawDirent::read_from_prefix(&self.block[self.pos..]) else {
            return None;
        };
        let rec_len = rec_len_from_disk(h.rec_len.get(), self.block.len().max(1024));
        let name_len = h.name_len as usize;
        let inode = h.inode.get();
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

/// What is wrong with the entry at `pos` of `block`, if anything: the
/// checks of the kernel's `ext4_check_dir_entry` (record length, name
/// length, bounds, inode number).
fn check_entry(
    block: &[u8],
    pos: usize,
    inodes_count: u32,
) -> core::result::Result<(), &'static str> {
    let Ok((h, _)) = RawDirent::read_from_prefix(&block[pos..]) else {
        return Err("directory entry truncated");
    };
    let rec_len = rec_len_from_disk(h.rec_len.get(), block.len().max(1024));
    let name_len = h.name_len as usize;
    if rec_len < 12 && !(rec_len == 8 && name_len == 0 && pos + 8 == block.len()) {
        return Err("directory entry record length is too small");
    }
    if !rec_len.is_multiple_of(4) {
        return Err("directory entry record length is not a multiple of 4");
    }
    if HEADER_LEN + name_len > rec_len {
        return Err("directory entry name is longer than its record");
    }
    if pos + rec_len > block.len() {
        return Err("directory entry runs past the end of the block");
    }
    if h.inode.get() > inodes_count {
        return Err("directory entry refers to an inode number out of range");
    }
    Ok(())
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

    /// Whether the kernel's ext4 lists `dir` through its hash tree code
    /// (`is_dx_dir`: with `dir_index`, an indexed directory or one of a
    /// single block), which fails the listing on a block whose checksum is
    /// wrong where the linear listing skips it.
    fn kernel_lists_as_htree(&self, dir: &Inode) -> bool {
        self.sb().has_compat(compat::DIR_INDEX)
            && (dir.has_flag(flags::INDEX) || dir.size == self.sb().block_size as u64)
    }

    pub(crate) fn dir_inode(&self, ino: InodeNo) -> Result<alloc::sync::Arc<Inode>> {
        let inode = self.live_inode(ino)?;
        if inode.kind != Some(FileType::Directory) {
            return Err(Error::NotDir);
        }
        Ok(inode)
    }

    /// Check a leaf block's checksum, as the kernel does before using it.
    pub(crate) fn check_leaf(&self, dir: &Inode, block: &[u8], lblk: FileBlock) -> Result<()> {
        if self.sb().metadata_csum()
            && self.check_csums()
            && !leaf_checksum_ok(block, dir.csum_seed)
        {
            return Err(Error::Checksum {
                object: Object::DirBlock { dir: dir.ino, lblk },
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
        lblk: FileBlock,
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
        // Directory sizes are checked below 2^32 blocks before any scan.
        self.check_leaf_once(dir, block, FileBlock(lblk as u32), mark)?;
        Ok(Some(entry_area(block)))
    }

    /// List directory `dir` from `cookie` (0 = start). `f` returns `false`
    /// to stop; the entry it refused is not consumed. A damaged block is
    /// reported through [`Volume::report`] and skipped, except that with
    /// [`crate::OnDamage::AsKernel`] a block failing its checksum fails the
    /// listing where the kernel's does (see `kernel_lists_as_htree`).
    pub fn readdir(
        &self,
        dir: InodeNo,
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
        let fail_on_checksum = self.fails_as_kernel() && self.kernel_lists_as_htree(&inode);
        while lblk < nblocks {
            let run = match self.map_block_at(&inode, lblk) {
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
                // Below `nblocks`, which the loop keeps under 2^32 blocks.
                let fl = FileBlock(l as u32);
                let stop = self.cache_read_marked(pblk + i, |block, mark| -> Result<bool> {
                    let Some(area) = self.scan_area(&inode, dx, block, l, mark)? else {
                        return Ok(false);
                    };
                    let obj = Object::DirBlock { dir, lblk: fl };
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
                            ino: InodeNo(e.inode),
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
                    Ok(Err(e @ Error::Checksum { .. })) if fail_on_checksum => return Err(e),
                    Ok(Err(e)) | Err(e) => self.report(e),
                }
                start = 0;
            }
            lblk += len;
        }
        Ok(())
    }

    /// Look `name` up in directory `dir`; returns the child's attributes.
    pub fn lookup(&self, dir: InodeNo, name: &[u8]) -> Result<Attr> {
        let ino = self.lookup_ino(dir, name)?;
        match self.getattr(ino) {
            // A name for a deleted inode is a damaged directory, as the
            // kernel's lookup says ("deleted inode referenced").
            Err(Error::Stale) => Err(Error::corrupt(
                Object::Inode(dir),
                "directory entry refers to a deleted inode",
            )),
            r => r,
        }
    }

    /// Look `name` up in directory `dir`; returns the child's inode number.
    pub fn lookup_ino(&self, dir: InodeNo, name: &[u8]) -> Result<InodeNo> {
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
                // A block failing its checksum fails the lookup in the
                // kernel (only a malformed index sends it to a linear scan).
                Err(e @ Error::Checksum { .. }) if self.fails_as_kernel() => return Err(e),
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

    /// Search logical blocks `from..to` of `dir` for `name`. Damage the
    /// search passes over is reported (see [`search_block`]); a block failing
    /// its checksum, or a damaged entry bearing the name, is reported and
    /// skipped, or with [`crate::OnDamage::AsKernel`] fails the search, as
    /// the kernel's does.
    pub(crate) fn linear_lookup(
        &self,
        dir: &Inode,
        name: &[u8],
        from: u64,
        to: u64,
    ) -> Result<Option<InodeNo>> {
        Ok(self.linear_find(dir, name, from, to)?.map(|(ino, _)| ino))
    }

    /// [`Volume::linear_lookup`], also saying which block held the name.
    pub(crate) fn linear_find(
        &self,
        dir: &Inode,
        name: &[u8],
        from: u64,
        to: u64,
    ) -> Result<Option<(InodeNo, u64)>> {
        let dx = self.is_dx(dir);
        let fold = dir.has_flag(flags::CASEFOLD);
        let mut lblk = from;
        while lblk < to {
            let (pblk, len) = match self.map_block_at(dir, lblk)? {
                Run::Hole { len } => {
                    lblk += len;
                    continue;
                }
                Run::Mapped { pblk, len, .. } => (pblk, len.min(to - lblk)),
            };
            for i in 0..len {
                let l = lblk + i;
                let fl = FileBlock(l as u32);
                let found = self.cache_read_marked(pblk + i, |block, mark| -> Result<Searched> {
                    let Some(area) = self.scan_area(dir, dx, block, l, mark)? else {
                        return Ok((None, None));
                    };
                    let obj = Object::DirBlock {
                        dir: dir.ino,
                        lblk: fl,
                    };
                    search_block(area, name, fold, self.sb().inodes_count, obj)
                });
                match found {
                    Ok(Ok((ino, passed))) => {
                        if let Some(e) = passed {
                            self.report(e);
                        }
                        if let Some(ino) = ino {
                            return Ok(Some((ino, l)));
                        }
                    }
                    Ok(Err(e)) if e.is_corruption() && self.fails_as_kernel() => return Err(e),
                    // A bad block hides only its own entries.
                    Ok(Err(e)) | Err(e) => self.report(e),
                }
            }
            lblk += len;
        }
        Ok(None)
    }
}

/// What a search of one block found: the entry's inode, and the first
/// damage passed over on the way (to report; it did not stop the search).
pub(crate) type Searched = (Option<InodeNo>, Option<Error>);

/// Find `name` in one block's entries (or an inline-data area) the way the
/// kernel's lookup does: entries are stepped over by their record lengths
/// and only the entry whose name matches must be sound, so a damaged entry
/// elsewhere hides no name (it is returned, to report). A damaged matching
/// entry, or a zero record length the walk cannot pass, is an error.
pub(crate) fn search_block(
    area: &[u8],
    name: &[u8],
    fold: bool,
    inodes_count: u32,
    obj: Object,
) -> Result<Searched> {
    let mut passed = None;
    let mut pos = 0;
    while pos + HEADER_LEN < area.len() {
        let problem = check_entry(area, pos, inodes_count).err();
        let inode = u32::from_le_bytes([area[pos], area[pos + 1], area[pos + 2], area[pos + 3]]);
        let end = pos + HEADER_LEN + area[pos + 6] as usize;
        if inode != 0 && end <= area.len() && names_equal(&area[pos + HEADER_LEN..end], name, fold)
        {
            return match problem {
                Some(what) => Err(Error::corrupt(obj, what)),
                None => Ok((Some(InodeNo(inode)), passed)),
            };
        }
        if let (Some(what), None) = (problem, &passed) {
            passed = Some(Error::corrupt(obj, what));
        }
        let rec_len = rec_len_from_disk(
            u16::from_le_bytes([area[pos + 4], area[pos + 5]]),
            area.len().max(1024),
        );
        if rec_len == 0 {
            return Err(Error::corrupt(obj, "directory entry record length is zero"));
        }
        pos += rec_len;
    }
    if pos < area.len() && passed.is_none() {
        passed = check_entry(area, pos, inodes_count)
            .err()
            .map(|what| Error::corrupt(obj, what));
    }
    Ok((None, passed))
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
        let v: alloc::vec::Vec<_> = Entries::new(&b, 0, 100, Object::Inode(InodeNo(2))).collect();
        assert_eq!(v.len(), 2);
        assert!(v[0].is_ok());
        assert!(v[1].is_err());
    }

    /// One entry: inode, record length, name.
    fn put(b: &mut [u8], at: usize, ino: u32, rec_len: u16, name: &[u8]) {
        b[at..at + 4].copy_from_slice(&ino.to_le_bytes());
        b[at + 4..at + 6].copy_from_slice(&rec_len.to_le_bytes());
        b[at + 6] = name.len() as u8;
        b[at + 8..at + 8 + name.len()].copy_from_slice(name);
    }

    #[test]
    fn search_block_checks_only_the_entry_it_returns() {
        let obj = Object::Inode(InodeNo(2));
        let mut b = [0u8; 64];
        put(&mut b, 0, 999, 12, b"a"); // inode out of range
        put(&mut b, 12, 7, 52, b"b");
        let (found, passed) = search_block(&b, b"b", false, 100, obj).unwrap();
        assert_eq!(found, Some(InodeNo(7)));
        assert!(passed.is_some_and(|e| e.is_corruption()));
        assert!(search_block(&b, b"a", false, 100, obj).is_err());
        let (found, passed) = search_block(&b, b"c", false, 100, obj).unwrap();
        assert!(found.is_none() && passed.is_some());
        // A zero record length cannot be stepped over.
        put(&mut b, 12, 7, 0, b"b");
        assert!(search_block(&b, b"c", false, 100, obj).is_err());
        put(&mut b, 0, 5, 12, b"a");
        put(&mut b, 12, 7, 52, b"b");
        assert_eq!(
            search_block(&b, b"c", false, 100, obj).unwrap(),
            (None, None)
        );
    }
}
