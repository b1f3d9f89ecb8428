//! `inline_data` inodes: the first 60 bytes live in `i_block`, the rest in
//! the `system.data` extended attribute of the inode body.

use alloc::vec::Vec;

use crate::device::BlockDevice;
use crate::dir::{search_block, Entries};
use crate::error::{Error, Object, Result};
use crate::inode::{flags, Inode};
use crate::numbers::InodeNo;
use crate::volume::{DirEntry, Volume};
use crate::xattr::{self, XattrValue};

/// `system.` name index and the name of the inline-data attribute.
pub(crate) const SYSTEM_INDEX: u8 = 7;
pub(crate) const DATA_NAME: &[u8] = b"data";
/// Directory cookies: 1 after ".", 2 after "..", then 3 + byte offset.
const COOKIE_BASE: u64 = 3;

impl<D: BlockDevice> Volume<D> {
    /// The part of the inline data kept in `system.data`.
    fn inline_tail(&self, inode: &Inode) -> Result<Vec<u8>> {
        let entries = xattr::parse_ibody(inode.ibody(), inode.ino)?;
        for e in &entries {
            if e.index == SYSTEM_INDEX && e.name == DATA_NAME {
                return match e.value {
                    XattrValue::Inline(v) => Ok(v.to_vec()),
                    XattrValue::EaInode { .. } => Err(Error::corrupt(
                        Object::Inode(inode.ino),
                        "inline data stored in an EA inode",
                    )),
                };
            }
        }
        Ok(Vec::new())
    }

    /// All inline bytes (i_block followed by `system.data`).
    fn inline_bytes(&self, inode: &Inode) -> Result<Vec<u8>> {
        let mut all = inode.block.to_vec();
        all.extend_from_slice(&self.inline_tail(inode)?);
        Ok(all)
    }

    pub(crate) fn inline_read(&self, inode: &Inode, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let all = self.inline_bytes(inode)?;
        if inode.size > all.len() as u64 {
            return Err(Error::corrupt(
                Object::Inode(inode.ino),
                "inline data is shorter than the file size",
            ));
        }
        let start = offset as usize;
        let n = buf.len().min(all.len().saturating_sub(start));
        buf[..n].copy_from_slice(&all[start..start + n]);
        Ok(n)
    }

    /// The directory areas of an inline directory: parent inode number,
    /// then entries in i_block[4..60] and in `system.data`.
    pub(crate) fn inline_dir(&self, inode: &Inode) -> Result<(InodeNo, Vec<u8>, Vec<u8>)> {
        let parent = InodeNo(inode.block_word(0));
        Ok((parent, inode.block[4..].to_vec(), self.inline_tail(inode)?))
    }

    pub(crate) fn inline_readdir(
        &self,
        inode: &Inode,
        cookie: u64,
        f: &mut dyn FnMut(&DirEntry<'_>) -> bool,
    ) -> Result<()> {
        let (parent, head, tail) = self.inline_dir(inode)?;
        let ft = |k: crate::attr::FileType| Some(k);
        if cookie == 0
            && !f(&DirEntry {
                ino: inode.ino,
                name: b".",
                kind: ft(crate::attr::FileType::Directory),
                next: 1,
            })
        {
            return Ok(());
        }
        if cookie <= 1
            && !f(&DirEntry {
                ino: parent,
                name: b"..",
                kind: ft(crate::attr::FileType::Directory),
                next: 2,
            })
        {
            return Ok(());
        }
        let from = cookie.saturating_sub(COOKIE_BASE) as usize;
        let obj = Object::Inode(inode.ino);
        for (base, area) in [(0usize, &head[..]), (head.len(), &tail[..])] {
            for e in Entries::new(area, 0, self.sb().inodes_count, obj) {
                let e = match e {
                    Ok(e) => e,
                    Err(err) => {
                        self.report(err);
                        break;
                    }
                };
                if base + e.offset < from || e.inode == 0 {
                    continue;
                }
                let next = COOKIE_BASE + (base + e.offset + e.rec_len) as u64;
                let de = DirEntry {
                    ino: InodeNo(e.inode),
                    name: e.name,
                    kind: self.dirent_kind(e.file_type),
                    next,
                };
                if !f(&de) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    pub(crate) fn inline_lookup(&self, inode: &Inode, name: &[u8]) -> Result<InodeNo> {
        let (parent, head, tail) = self.inline_dir(inode)?;
        if name == b"." {
            return Ok(inode.ino);
        }
        if name == b".." {
            return Ok(parent);
        }
        let fold = inode.has_flag(flags::CASEFOLD);
        let obj = Object::Inode(inode.ino);
        for area in [&head[..], &tail[..]] {
            let (found, passed) = search_block(area, name, fold, self.sb().inodes_count, obj)?;
            if let Some(e) = passed {
                self.report(e);
            }
            if let Some(ino) = found {
                return Ok(ino);
            }
        }
        Err(Error::NotFound)
    }

    /// Parse every entry of an inline directory; the first damage found.
    pub(crate) fn inline_check(&self, inode: &Inode) -> Result<()> {
        let (_, head, tail) = self.inline_dir(inode)?;
        let obj = Object::Inode(inode.ino);
        for area in [&head[..], &tail[..]] {
            for e in Entries::new(area, 0, self.sb().inodes_count, obj) {
                e?;
            }
        }
        Ok(())
    }
}
