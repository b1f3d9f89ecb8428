//! Orphans: inodes whose last name went while something still holds them
//! open, and inodes in the middle of a truncation that takes several
//! handles. The kernel keeps both kinds on disk so that a crash cannot
//! leak their blocks, and so do we:
//!
//! - the orphan list: `s_last_orphan` names the newest orphan, each
//!   orphan's `i_dtime` the next one;
//! - the orphan file (`orphan_file` feature): blocks of inode numbers,
//!   each block ending in `{magic 0x0b10ca04, checksum}`; used first while
//!   it has a free slot, and `ORPHAN_PRESENT` is set in `ro_compat` while
//!   the volume is mounted read-write.
//!
//! An orphan is added in the handle that takes its last link (or begins
//! the truncation) and removed in the handle that frees it (or ends the
//! truncation). A read-write open first cleans up what a crash left:
//! orphans without links are freed, the others truncated to their size.
//!
//! Memory: only orphans of this session are remembered (a prefix of the
//! on-disk list, the orphan file slots used, the inodes kept open), one
//! word each; a crash's list is walked from its head, one inode at a time.

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::blockmap::Run;
use crate::device::BlockDevice;
use crate::error::{Error, Object, Result};
use crate::features::{compat, ro_compat};
use crate::group_desc::BG_INODE_UNINIT;
use crate::inode::{self, Inode};
use crate::numbers::{FileBlock, InodeNo, PhysBlock};
use crate::txn::Handle;
use crate::volume::Volume;
use crate::writable::Cred;

/// Magic of an orphan file block's tail.
pub const ORPHAN_BLOCK_MAGIC: u32 = 0x0b10_ca04;
/// Bytes of an orphan file block's tail (magic, checksum).
const TAIL: usize = 8;
/// Offset of `i_dtime` in the inode record.
const DTIME: usize = 0x14;
/// Credits of adding or removing one orphan: the orphan file block or the
/// previous orphan's record, and the orphan's own record.
pub const ORPHAN_CREDITS: usize = 2;

/// What the frontends hold open, asked when an inode's last name goes
/// ([`Volume::set_open_files`]). An inode held open stays, on the orphan
/// list, until [`Volume::release`].
pub trait OpenFiles: Send + Sync {
    /// Whether `ino` is still open or otherwise referenced by the frontend
    /// (an open file, a kernel reference it must be able to answer for).
    fn is_open(&self, ino: InodeNo) -> bool;
}

/// The orphan file, as found at a read-write open.
#[derive(Clone)]
struct OrphanFile {
    inode: Inode,
    blocks: u32,
    /// Inode numbers per block.
    per_block: u32,
}

#[derive(Default)]
struct State {
    /// The head of the on-disk orphan list and as much of it as this
    /// session knows, newest first: `s_last_orphan` is `list[0]`, and the
    /// list continues on disk through the last one's `i_dtime`.
    list: Vec<InodeNo>,
    /// Orphans in the orphan file: (inode, slot).
    in_file: Vec<(InodeNo, u32)>,
    /// Orphans without links that a frontend still holds.
    kept: Vec<InodeNo>,
    /// The orphan file block to look for a free slot first.
    hint: u32,
}

/// Orphan bookkeeping of a volume.
#[derive(Default)]
pub(crate) struct Orphans {
    state: spin::Mutex<State>,
    file: Option<OrphanFile>,
    open_files: Option<Box<dyn OpenFiles>>,
}

impl Orphans {
    /// Whether `ino` is an orphan kept for a frontend that holds it.
    pub(crate) fn is_kept(&self, ino: InodeNo) -> bool {
        self.state.lock().kept.contains(&ino)
    }

    /// `s_last_orphan` as the running transaction leaves it.
    pub(crate) fn head(&self) -> u32 {
        self.state.lock().list.first().map_or(0, |i| i.0)
    }

    fn has_orphans(&self) -> bool {
        let st = self.state.lock();
        !st.list.is_empty() || !st.in_file.is_empty()
    }
}

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

impl<D: BlockDevice> Volume<D> {
    /// Install what the frontends hold open (before the volume is shared).
    /// Without it nothing is held: an inode is freed with its last name.
    pub fn set_open_files(&mut self, f: Box<dyn OpenFiles>) {
        self.orphans_mut().open_files = Some(f);
    }

    /// Hook: the last name of `ino` is gone. Returns whether a frontend
    /// still holds it ([`OpenFiles`]); then it stays, on the orphan list,
    /// until [`Volume::release`].
    pub fn last_link_gone(&self, ino: InodeNo) -> bool {
        let o = self.orphans();
        let held = o.open_files.as_ref().is_some_and(|f| f.is_open(ino));
        if held {
            self.keep_orphan(ino);
        }
        held
    }

    /// Keep orphan `ino` until [`Volume::release`] (an `O_TMPFILE` file,
    /// which its creator holds).
    pub(crate) fn keep_orphan(&self, ino: InodeNo) {
        let mut st = self.orphans().state.lock();
        if !st.kept.contains(&ino) {
            st.kept.push(ino);
        }
    }

    /// Orphan `ino` got a name again ([`Volume::link`]): nothing to free
    /// at its release.
    pub(crate) fn unkeep_orphan(&self, ino: InodeNo) {
        self.orphans().state.lock().kept.retain(|&k| k != ino);
    }

    /// A frontend holds `ino` no more (its last open file closed, its
    /// last reference forgotten): an inode whose last name went while it
    /// was held is freed now. Anything else: nothing to do.
    pub fn release(&self, ino: InodeNo) -> Result<()> {
        {
            let mut st = self.orphans().state.lock();
            let Some(i) = st.kept.iter().position(|&k| k == ino) else {
                return Ok(());
            };
            st.kept.swap_remove(i);
        }
        let _locks = self.inode_locks().lock(&[ino]);
        let mut inode = self.inode(ino)?;
        if inode.links_count != 0 {
            return Ok(());
        }
        self.free_inode_now(&mut inode)
    }

    /// Whether `ino` is on the orphan list or in the orphan file.
    pub(crate) fn is_orphan(&self, ino: InodeNo) -> bool {
        let st = self.orphans().state.lock();
        st.list.contains(&ino) || st.in_file.iter().any(|&(i, _)| i == ino)
    }

    /// Set `i_dtime` of `ino` in place (the orphan list's link, or the
    /// deletion time), with the record's checksum. One credit.
    pub(crate) fn patch_dtime(&self, h: &mut Handle<'_, D>, ino: InodeNo, v: u32) -> Result<()> {
        let (blk, off) = self.inode_location(ino)?;
        let size = self.sb().inode_size as usize;
        let sb = self.sb();
        h.modify(blk, |b| {
            let rec = &mut b[off..off + size];
            rec[DTIME..DTIME + 4].copy_from_slice(&v.to_le_bytes());
            if let Some((c, hi)) = inode::expected_checksum(sb, ino, rec) {
                rec[0x7C..0x7E].copy_from_slice(&(c as u16).to_le_bytes());
                if hi {
                    rec[0x82..0x84].copy_from_slice(&((c >> 16) as u16).to_le_bytes());
                }
            }
        })?;
        self.invalidate_inode(ino);
        Ok(())
    }

    /// `i_dtime` of `ino` as the block cache has it.
    fn dtime_of(&self, ino: InodeNo) -> Result<u32> {
        let (blk, off) = self.inode_location(ino)?;
        self.cache_read_with(blk, |b| le32(b, off + DTIME))
    }

    /// Put `ino` on the orphan list (or in the orphan file while it has
    /// room). Nothing if it already is. [`ORPHAN_CREDITS`].
    pub(crate) fn orphan_add(&self, h: &mut Handle<'_, D>, ino: InodeNo) -> Result<()> {
        let o = self.orphans();
        let mut st = o.state.lock();
        if st.list.contains(&ino) || st.in_file.iter().any(|&(i, _)| i == ino) {
            return Ok(());
        }
        if let Some(f) = &o.file {
            if let Some(slot) = self.orphan_file_add(h, f, &mut st, ino)? {
                st.in_file.push((ino, slot));
                return Ok(());
            }
        }
        let next = st.list.first().map_or(0, |i| i.0);
        self.patch_dtime(h, ino, next)?;
        st.list.insert(0, ino);
        Ok(())
    }

    /// Take `ino` off the orphan list or out of the orphan file; its
    /// `i_dtime` becomes 0. Nothing if it is not an orphan.
    /// [`ORPHAN_CREDITS`].
    pub(crate) fn orphan_del(&self, h: &mut Handle<'_, D>, ino: InodeNo) -> Result<()> {
        let o = self.orphans();
        let mut st = o.state.lock();
        if let Some(k) = st.in_file.iter().position(|&(i, _)| i == ino) {
            let (_, slot) = st.in_file[k];
            if let Some(f) = &o.file {
                self.orphan_file_set(h, f, slot, 0)?;
            }
            st.in_file.swap_remove(k);
            return Ok(());
        }
        let Some(i) = st.list.iter().position(|&x| x == ino) else {
            return Ok(());
        };
        let mut next = self.dtime_of(ino)?;
        if next == ino.0 || next > self.sb().inodes_count {
            next = 0;
        }
        if i > 0 {
            self.patch_dtime(h, st.list[i - 1], next)?;
        }
        self.patch_dtime(h, ino, 0)?;
        st.list.remove(i);
        // The list continues on disk past its last known member.
        if i == st.list.len() && next != 0 {
            st.list.push(InodeNo(next));
        }
        Ok(())
    }

    /// A free slot of the orphan file, taken for `ino`; `None` when full.
    fn orphan_file_add(
        &self,
        h: &mut Handle<'_, D>,
        f: &OrphanFile,
        st: &mut State,
        ino: InodeNo,
    ) -> Result<Option<u32>> {
        for k in 0..f.blocks {
            let b = (st.hint + k) % f.blocks;
            let pblk = self.orphan_block(f, b)?;
            let free = self.cache_read_with(pblk, |x| {
                (0..f.per_block).find(|&j| le32(x, j as usize * 4) == 0)
            })?;
            if let Some(j) = free {
                st.hint = b;
                let slot = b * f.per_block + j;
                self.orphan_file_set(h, f, slot, ino.0)?;
                return Ok(Some(slot));
            }
        }
        Ok(None)
    }

    /// Physical block of orphan file block `b`.
    fn orphan_block(&self, f: &OrphanFile, b: u32) -> Result<PhysBlock> {
        match self.map_block(&f.inode, FileBlock(b))? {
            Run::Mapped {
                pblk,
                unwritten: false,
                ..
            } => Ok(pblk),
            _ => Err(Error::corrupt(
                Object::Inode(f.inode.ino),
                "orphan file has a hole or an unwritten block",
            )),
        }
    }

    /// Write `v` into orphan file slot `slot`, with the block's checksum.
    fn orphan_file_set(
        &self,
        h: &mut Handle<'_, D>,
        f: &OrphanFile,
        slot: u32,
        v: u32,
    ) -> Result<()> {
        let (b, j) = (slot / f.per_block, (slot % f.per_block) as usize);
        let pblk = self.orphan_block(f, b)?;
        let csum = self.sb().metadata_csum();
        let seed = f.inode.csum_seed;
        let n = f.per_block as usize * 4;
        h.modify(pblk, |x| {
            x[j * 4..j * 4 + 4].copy_from_slice(&v.to_le_bytes());
            if csum {
                let c = orphan_block_checksum(seed, pblk.0, &x[..n]);
                let t = x.len() - 4;
                x[t..].copy_from_slice(&c.to_le_bytes());
            }
        })?;
        Ok(())
    }

    /// At a read-write open: find the orphan file and check it (its
    /// blocks' magic and checksums), then clean up the orphans a crash
    /// left, on the list and in the file, as the kernel does
    /// (`ext4_orphan_cleanup`): inodes without links are freed, others
    /// truncated to their size. A damaged list ends the list (reported).
    pub(crate) fn orphan_setup(&mut self) -> Result<()> {
        if self.sb().has_compat(compat::ORPHAN_FILE) {
            let f = self.find_orphan_file()?;
            self.orphans_mut().file = Some(f);
        }
        let head = self.sb().last_orphan;
        if head != 0 {
            self.orphans_mut().state.get_mut().list.push(InodeNo(head));
        }
        Ok(())
    }

    fn find_orphan_file(&self) -> Result<OrphanFile> {
        let sb = self.sb();
        let ino = InodeNo(sb.orphan_file_inum);
        let bad = |what| Error::corrupt(Object::Inode(ino), what);
        if ino.0 == 0 || ino.0 > sb.inodes_count {
            return Err(bad("orphan file inode number out of range"));
        }
        let inode = self.inode(ino)?;
        let bs = sb.block_size as u64;
        if inode.size == 0 || !inode.size.is_multiple_of(bs) || inode.size / bs > u32::MAX as u64 {
            return Err(bad("orphan file size is not a whole number of blocks"));
        }
        let f = OrphanFile {
            blocks: (inode.size / bs) as u32,
            per_block: ((bs as usize - TAIL) / 4) as u32,
            inode,
        };
        let csum = sb.metadata_csum() && self.check_csums();
        let n = f.per_block as usize * 4;
        for b in 0..f.blocks {
            let pblk = self.orphan_block(&f, b)?;
            self.cache_read_with(pblk, |x| {
                let t = x.len() - TAIL;
                if le32(x, t) != ORPHAN_BLOCK_MAGIC {
                    return Err(Error::corrupt(
                        Object::Block(pblk),
                        "orphan file block has a bad magic",
                    ));
                }
                if csum
                    && le32(x, t + 4) != orphan_block_checksum(f.inode.csum_seed, pblk.0, &x[..n])
                {
                    return Err(Error::Checksum {
                        object: Object::Block(pblk),
                    });
                }
                Ok(())
            })??;
        }
        Ok(f)
    }

    /// Clean up the orphans found at open (after [`Volume::orphan_setup`]
    /// and the mount's first commit).
    pub(crate) fn orphan_cleanup(&self) -> Result<()> {
        let limit = self.sb().inodes_count as u64 + 1;
        let mut steps = 0u64;
        loop {
            let Some(head) = self.orphans().state.lock().list.first().copied() else {
                break;
            };
            steps += 1;
            let r = if steps > limit {
                Err(Error::corrupt(
                    Object::Superblock,
                    "orphan list is longer than the inode table",
                ))
            } else {
                self.process_orphan(head)
            };
            match r {
                Ok(()) => {}
                Err(e) if e.is_corruption() || e == Error::Stale => {
                    // As the kernel: a list that cannot be trusted ends.
                    self.report(e);
                    self.orphans().state.lock().list.clear();
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        // The superblock's `s_last_orphan` as the cleanup left it.
        self.write_super_counts()?;
        self.commit()?;
        let Some(f) = self.orphans().file.clone() else {
            return Ok(());
        };
        for b in 0..f.blocks {
            let pblk = self.orphan_block(&f, b)?;
            for j in 0..f.per_block {
                let ino = self.cache_read_with(pblk, |x| le32(x, j as usize * 4))?;
                if ino == 0 {
                    continue;
                }
                let slot = b * f.per_block + j;
                self.orphans()
                    .state
                    .lock()
                    .in_file
                    .push((InodeNo(ino), slot));
                match self.process_orphan(InodeNo(ino)) {
                    Ok(()) => {}
                    Err(e) if e.is_corruption() || e == Error::Stale => {
                        self.report(e);
                        let mut h = self.begin(ORPHAN_CREDITS)?;
                        let r = self.orphan_del(&mut h, InodeNo(ino));
                        if let Err(e) = r {
                            return Err(h.abort(e));
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Whether inode `ino` is marked in use in its group's bitmap.
    fn inode_in_use(&self, ino: InodeNo) -> Result<bool> {
        let sb = self.sb();
        let g = (ino.0 - 1) / sb.inodes_per_group;
        let idx = (ino.0 - 1) % sb.inodes_per_group;
        let gd = self.group_desc(g)?;
        let uninit_applies = sb.metadata_csum() || sb.has_ro_compat(ro_compat::GDT_CSUM);
        if uninit_applies && gd.flags & BG_INODE_UNINIT != 0 {
            return Ok(false);
        }
        self.cache_read_with(gd.inode_bitmap, |b| {
            b[(idx / 8) as usize] & (1 << (idx % 8)) != 0
        })
    }

    /// One orphan found at open: freed without links, else truncated to
    /// its size; off the list either way. A number that is no orphan (out
    /// of range, not in use, no file type) is corruption.
    fn process_orphan(&self, ino: InodeNo) -> Result<()> {
        let sb = self.sb();
        if ino.0 < sb.first_ino || ino.0 > sb.inodes_count {
            return Err(Error::corrupt(
                Object::Inode(ino),
                "orphan list names a reserved or out-of-range inode",
            ));
        }
        if !self.inode_in_use(ino)? {
            return Err(Error::corrupt(
                Object::Inode(ino),
                "orphan list names an inode that is not in use",
            ));
        }
        let _locks = self.inode_locks().lock(&[ino]);
        let mut inode = self.inode(ino)?;
        if inode.kind.is_none() {
            return Err(Error::corrupt(
                Object::Inode(ino),
                "orphan has no file type",
            ));
        }
        if inode.links_count == 0 {
            return self.free_inode_now(&mut inode);
        }
        let from = inode.size.div_ceil(sb.block_size as u64);
        self.unmap_range(&mut inode, from, FileBlock::COUNT, &Cred::ROOT)?;
        let mut h = self.begin(ORPHAN_CREDITS + 1)?;
        let r = self
            .orphan_del(&mut h, ino)
            .and_then(|_| self.write_inode(&mut h, &mut inode, false));
        if let Err(e) = r {
            return Err(h.abort(e));
        }
        Ok(())
    }

    /// At close: free the orphans frontends never released (the kernel
    /// evicts every inode at unmount). Returns whether orphans remain.
    pub(crate) fn orphans_at_close(&self) -> Result<bool> {
        loop {
            let next = self.orphans().state.lock().kept.pop();
            let Some(ino) = next else { break };
            let _locks = self.inode_locks().lock(&[ino]);
            let mut inode = self.inode(ino)?;
            if inode.links_count == 0 {
                self.free_inode_now(&mut inode)?;
            }
        }
        Ok(self.orphans().has_orphans())
    }
}

/// Checksum of an orphan file block (`metadata_csum`): crc32c seeded with
/// the orphan file inode's seed, over the little-endian 64-bit block
/// number, then the inode-number slots (not the tail).
pub fn orphan_block_checksum(seed: u32, pblk: u64, slots: &[u8]) -> u32 {
    let c = crate::checksum::crc32c(seed, &pblk.to_le_bytes());
    crate::checksum::crc32c(c, slots)
}
