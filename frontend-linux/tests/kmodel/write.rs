//! The kernel's write side of FUSE iomap, for the model
//! (`iomap-protocol.md`, "Writes"): a page cache of dirty blocks over the
//! image, buffered writes (`ZERO` over `[i_size, pos)` first, `WRITE`
//! begins, `IOMAP_END` on a size change or a short write), page faults
//! (`WRITE|FAULT`), writeback (`WRITEBACK` begins, the data written at the
//! answered address, then `IOEND`), direct writes (`WRITE|DIRECT` and
//! `IOEND`), truncate and fallocate in the kernel's order of steps, and
//! `fsync`. Every reply is checked against the kernel's rules: a write
//! answer must be `MAPPED` or `UNWRITTEN` with a pure-overwrite write
//! mapping, a writeback answer must start at the requested offset and is
//! never `HOLE` or `INLINE`, an `IOEND` answers the size the kernel
//! expects. Clean blocks are not kept: every read of data not dirty in
//! the cache goes through the mappings, so unwritten ranges read as zeros
//! and stale blocks would show.

use std::collections::BTreeMap;

use ext4_engine::falloc;
use ext4_engine::iomap::{ioend, mflags, op};
use ext4_engine::mapping_cache::{Fork, Lookup, MapType, Mapping, NULL_ADDR};
use ext4_fuse::abi::{self, opcode};
use zerocopy::{FromBytes, IntoBytes};

use super::{node_key, Model, Node};

/// A regular file as the kernel holds it.
pub struct KFile {
    pub node: Node,
    /// `i_size`: what the kernel's VFS says the size is.
    pub size: u64,
    /// The on-disk size as the kernel records it from `IOEND` answers.
    pub disk_size: u64,
    /// Dirty blocks, by block index.
    pages: BTreeMap<u64, Vec<u8>>,
}

impl KFile {
    pub fn dirty_blocks(&self) -> usize {
        self.pages.len()
    }
}

/// What the write side sent.
#[derive(Clone, Debug, Default)]
pub struct WriteCounters {
    pub write_begins: u64,
    pub zero_begins: u64,
    pub writeback_begins: u64,
    pub direct_begins: u64,
    pub write_hits: u64,
    pub ends: u64,
    pub ioends: u64,
    /// `FUSE_WRITE`s of inline data.
    pub inline_writes: u64,
    /// File data bytes the model wrote to the device.
    pub data_bytes: u64,
}

impl Model {
    /// Look up `path` and open it read-write.
    pub fn open_rw(&mut self, path: &str) -> KFile {
        let node = self.lookup_path(path).expect("lookup");
        let args = abi::OpenIn {
            flags: libc::O_RDWR as u32,
            open_flags: 0,
        };
        let (err, _) = self.call(opcode::OPEN, node.nodeid, args.as_bytes());
        assert_eq!(err, 0, "OPEN O_RDWR");
        KFile {
            node,
            size: node.attr.size,
            disk_size: node.attr.size,
            pages: BTreeMap::new(),
        }
    }

    /// An `IOMAP_BEGIN` for a write with the write side's rules applied;
    /// the mapping the data goes to (or comes from, for `ZERO`).
    fn write_begin(
        &mut self,
        f: &KFile,
        pos: u64,
        count: u64,
        opflags: u32,
    ) -> Result<Mapping, i32> {
        match opflags {
            o if o & op::WRITEBACK != 0 => self.wc.writeback_begins += 1,
            o if o & op::DIRECT != 0 => self.wc.direct_begins += 1,
            o if o & op::ZERO != 0 => self.wc.zero_begins += 1,
            _ => self.wc.write_begins += 1,
        }
        let (read, write) = self.begin(&f.node, pos, count, opflags)?;
        let what = format!(
            "inode {} IOMAP_BEGIN({pos}, {count}, {opflags:#x})",
            f.node.attr.ino
        );
        if write.kind != MapType::PureOverwrite {
            self.violation(format!(
                "{what}: write mapping {write:?} (the model only takes pure overwrites)"
            ));
            return Err(libc::EIO);
        }
        if (write.offset, write.length) != (read.offset, read.length) {
            self.violation(format!(
                "{what}: write mapping {write:?} is not the read mapping's range {read:?}"
            ));
        }
        let ok = match read.kind {
            MapType::Mapped | MapType::Unwritten => true,
            MapType::Hole => opflags & op::ZERO != 0,
            // Served by the server (FUSE_WRITE); never written back.
            MapType::Inline => opflags & (op::WRITEBACK | op::DIRECT) == 0,
            _ => false,
        };
        if !ok {
            let why = if opflags & op::WRITEBACK != 0 {
                "writeback data would not be written"
            } else {
                "not a place to write"
            };
            self.violation(format!("{what}: answered {read:?}: {why}"));
            return Err(libc::EIO);
        }
        if opflags & op::WRITEBACK != 0 && read.offset > pos {
            self.violation(format!(
                "{what}: writeback mapping {read:?} starts after the request: data lost"
            ));
            return Err(libc::EIO);
        }
        if read.flags & mflags::NEW != 0
            && read.kind != MapType::Unwritten
            && read.kind != MapType::Mapped
        {
            self.violation(format!("{what}: NEW on {read:?}"));
        }
        Ok(read)
    }

    /// A cached mapping that answers a write with no upcall: `MAPPED` or
    /// `UNWRITTEN` covering `pos` (a cached hole never answers a write).
    fn write_hit(&mut self, f: &KFile, pos: u64) -> Option<Mapping> {
        match self.cache.lookup(node_key(f.node.nodeid), Fork::Read, pos) {
            Lookup::Hit(m, _) if matches!(m.kind, MapType::Mapped | MapType::Unwritten) => {
                self.wc.write_hits += 1;
                Some(m)
            }
            _ => None,
        }
    }

    /// Block `blk` as the source of a partial write under `m`: the device
    /// for `MAPPED`, zeros otherwise; nothing past `i_size`.
    fn block_from(&mut self, f: &KFile, blk: u64, m: &Mapping) -> Vec<u8> {
        let bs = self.bs;
        let mut b = vec![0u8; bs as usize];
        let start = blk * bs;
        if m.kind == MapType::Mapped && start < f.size {
            let addr = m.addr + (start - m.offset);
            if let Err(e) = self.dev_file.read_exact_at(&mut b, addr) {
                self.violation(format!("device read at {addr}: {e}"));
            }
            let valid = (f.size - start).min(bs) as usize;
            b[valid..].fill(0);
        }
        b
    }

    /// `IOMAP_END` for a write under `m`.
    fn write_end(
        &mut self,
        f: &KFile,
        pos: u64,
        count: u64,
        written: u64,
        m: &Mapping,
        size_changed: bool,
    ) {
        self.wc.ends += 1;
        let mut map = super::encode(m);
        if size_changed {
            map.flags |= 1 << 8;
        }
        let args = abi::IomapEndIn {
            opflags: op::WRITE,
            reserved: 0,
            attr_ino: f.node.attr.ino,
            pos,
            count,
            written: written as i64,
            map,
        };
        let (err, out) = self.call(opcode::IOMAP_END, f.node.nodeid, args.as_bytes());
        if err != 0 && err != libc::ENOSYS {
            self.violation(format!("IOMAP_END({pos}, {count}, {written}): errno {err}"));
        }
        if !out.is_empty() {
            self.violation(format!("IOMAP_END reply carries {} bytes", out.len()));
        }
    }

    /// A buffered `write(2)` of `data` at `off`; `short` makes the first
    /// mapping's copy stop after that many bytes (a fault in the user's
    /// buffer), as the kernel's iomap reports with `written < count`.
    /// Returns the bytes written.
    pub fn buffered_write(
        &mut self,
        f: &mut KFile,
        off: u64,
        data: &[u8],
        short: Option<u64>,
    ) -> Result<u64, i32> {
        let bs = self.bs;
        let end = off + data.len() as u64;
        if off > f.size {
            self.zero_range(f, f.size, off)?;
        }
        let mut pos = off;
        while pos < end {
            let (m, asked) = match self.write_hit(f, pos) {
                Some(m) => (m, false),
                None => (self.write_begin(f, pos, end - pos, op::WRITE)?, true),
            };
            if m.kind == MapType::Inline {
                // Inline data: the server writes it (FUSE_WRITE resolved
                // by node id, no file handle); the kernel then drops the
                // file's cached mappings.
                let d = &data[(pos - off) as usize..];
                let n = self.inline_write(f, pos, d)?;
                return Ok(pos + n - off);
            }
            let seg = m.end().min(end) - pos;
            let written = match short {
                Some(s) if pos == off => seg.min(s),
                _ => seg,
            };
            let mut p = pos;
            while p < pos + written {
                let blk = p / bs;
                let bstart = blk * bs;
                let upto = (bstart + bs).min(pos + written);
                if !f.pages.contains_key(&blk) {
                    let whole = p == bstart && upto == bstart + bs;
                    let b = if whole {
                        vec![0u8; bs as usize]
                    } else {
                        self.block_from(f, blk, &m)
                    };
                    f.pages.insert(blk, b);
                }
                let page = f.pages.get_mut(&blk).unwrap();
                page[(p - bstart) as usize..(upto - bstart) as usize]
                    .copy_from_slice(&data[(p - off) as usize..(upto - off) as usize]);
                p = upto;
            }
            let old = f.size;
            f.size = f.size.max(pos + written);
            if asked && (f.size != old || written < seg || m.flags & mflags::WANT_IOMAP_END != 0) {
                self.write_end(f, pos, seg, written, &m, f.size != old);
            }
            pos += written;
            if written < seg {
                break;
            }
        }
        Ok(pos - off)
    }

    /// `FUSE_WRITE` of `data` at `pos` to an inline-data file, without a
    /// file handle (the kernel sends inline writes by node id): the bytes
    /// the server took.
    fn inline_write(&mut self, f: &mut KFile, pos: u64, data: &[u8]) -> Result<u64, i32> {
        self.wc.inline_writes += 1;
        let mut body = abi::WriteIn {
            offset: pos,
            size: data.len() as u32,
            ..Default::default()
        }
        .as_bytes()
        .to_vec();
        body.extend_from_slice(data);
        let (err, out) = self.call(opcode::WRITE, f.node.nodeid, &body);
        self.cache.forget_inode(node_key(f.node.nodeid));
        if err != 0 {
            return Err(err);
        }
        let n = abi::WriteOut::read_from_bytes(&out)
            .map(|w| u64::from(w.size))
            .unwrap_or_else(|_| {
                self.violation(format!("WRITE reply of {} bytes", out.len()));
                0
            });
        if n != data.len() as u64 {
            self.violation(format!("inline WRITE took {n} of {} bytes", data.len()));
        }
        f.size = f.size.max(pos + n);
        f.disk_size = f.size;
        Ok(n)
    }

    /// A store through a shared mapping into block `blk` (inside the
    /// file): the fault asks `WRITE|FAULT` for the block, then the page is
    /// changed in the cache.
    pub fn mmap_write(&mut self, f: &mut KFile, off: u64, data: &[u8]) -> Result<(), i32> {
        let bs = self.bs;
        let blk = off / bs;
        assert!(off + data.len() as u64 <= (blk + 1) * bs && off + data.len() as u64 <= f.size);
        if !f.pages.contains_key(&blk) {
            let m = match self.write_hit(f, blk * bs) {
                Some(m) => m,
                None => self.write_begin(f, blk * bs, bs, op::WRITE | op::FAULT)?,
            };
            let b = self.block_from(f, blk, &m);
            f.pages.insert(blk, b);
        }
        let page = f.pages.get_mut(&blk).unwrap();
        let s = (off - blk * bs) as usize;
        page[s..s + data.len()].copy_from_slice(data);
        Ok(())
    }

    /// The kernel's `iomap_zero_range(from, to)`: dirty blocks are zeroed
    /// in the cache, `MAPPED` ones read, zeroed and dirtied; holes and
    /// unwritten ranges already read as zeros.
    pub fn zero_range(&mut self, f: &mut KFile, from: u64, to: u64) -> Result<(), i32> {
        let bs = self.bs;
        let mut pos = from;
        while pos < to {
            let cached = match self.cache.lookup(node_key(f.node.nodeid), Fork::Read, pos) {
                Lookup::Hit(m, _)
                    if matches!(m.kind, MapType::Mapped | MapType::Unwritten | MapType::Hole) =>
                {
                    Some(m)
                }
                _ => None,
            };
            let m = match cached {
                Some(m) => m,
                None => self.write_begin(f, pos, to - pos, op::ZERO)?,
            };
            let seg_end = m.end().min(to);
            let mut p = pos;
            while p < seg_end {
                let blk = p / bs;
                let bstart = blk * bs;
                let upto = (bstart + bs).min(seg_end);
                if !f.pages.contains_key(&blk) && m.kind == MapType::Mapped {
                    let b = self.block_from(f, blk, &m);
                    f.pages.insert(blk, b);
                }
                if let Some(page) = f.pages.get_mut(&blk) {
                    page[(p - bstart) as usize..(upto - bstart) as usize].fill(0);
                }
                p = upto;
            }
            pos = seg_end;
        }
        Ok(())
    }

    /// Write back the dirty blocks in `from..to` (bytes).
    pub fn writeback(&mut self, f: &mut KFile, from: u64, to: u64) -> Result<(), i32> {
        let bs = self.bs;
        let blocks: Vec<u64> = f
            .pages
            .range(from / bs..to.div_ceil(bs))
            .map(|(b, _)| *b)
            .collect();
        let mut i = 0;
        while i < blocks.len() {
            // A run of contiguous dirty blocks.
            let mut j = i + 1;
            while j < blocks.len() && blocks[j] == blocks[j - 1] + 1 {
                j += 1;
            }
            let (b0, b1) = (blocks[i], blocks[j - 1] + 1);
            let mut b = b0;
            while b < b1 {
                let pos = b * bs;
                let m = match self.write_hit(f, pos) {
                    Some(m) => m,
                    None => self.write_begin(f, pos, (b1 - b) * bs, op::WRITEBACK)?,
                };
                let stop = (m.end() / bs).min(b1);
                if std::env::var_os("KMODEL_TRACE").is_some() {
                    eprintln!("writeback {b}..{stop} via {m:?}");
                }
                for blk in b..stop {
                    let page = f.pages.remove(&blk).unwrap();
                    let addr = m.addr + (blk * bs - m.offset);
                    if let Err(e) = self.dev_file.write_all_at(&page, addr) {
                        self.violation(format!("device write at {addr}: {e}"));
                    }
                    self.wc.data_bytes += bs;
                }
                let written = (stop * bs).min(f.size).saturating_sub(pos);
                let mut flags = ioend::WRITEBACK;
                if m.kind == MapType::Unwritten {
                    flags |= ioend::UNWRITTEN;
                }
                if pos + written > f.disk_size {
                    flags |= ioend::APPEND;
                }
                if flags != ioend::WRITEBACK && written > 0 {
                    self.io_end(f, flags, pos, written)?;
                }
                b = stop;
            }
            i = j;
        }
        Ok(())
    }

    /// `IOMAP_IOEND` after the model's data reached the device.
    fn io_end(&mut self, f: &mut KFile, flags: u32, pos: u64, written: u64) -> Result<(), i32> {
        self.wc.ioends += 1;
        let args = abi::IomapIoendIn {
            flags,
            error: 0,
            attr_ino: f.node.attr.ino,
            pos,
            new_addr: NULL_ADDR,
            written,
            dev: self.dev_cookie,
            pad: 0,
        };
        let (err, out) = self.call(opcode::IOMAP_IOEND, f.node.nodeid, args.as_bytes());
        if err != 0 {
            self.violation(format!(
                "inode {} IOEND({pos}, {written}, {flags:#x}): errno {err}",
                f.node.attr.ino
            ));
            return Err(err);
        }
        let Ok(o) = abi::IomapIoendOut::read_from_bytes(&out) else {
            self.violation(format!("IOEND reply of {} bytes", out.len()));
            return Err(libc::EIO);
        };
        let want = if flags & ioend::APPEND != 0 {
            f.disk_size.max(pos + written)
        } else {
            f.disk_size
        };
        if o.newsize != want {
            self.violation(format!(
                "inode {} IOEND({pos}, {written}, {flags:#x}): newsize {}, expected {want}",
                f.node.attr.ino, o.newsize
            ));
        }
        f.disk_size = o.newsize;
        // The kernel drops its cached mappings of the range after an ioend.
        let bs = self.bs;
        let start = pos / bs * bs;
        let end = (pos + written).div_ceil(bs) * bs;
        self.cache
            .remove(node_key(f.node.nodeid), Fork::Read, start, end - start);
        Ok(())
    }

    /// An `O_DIRECT` write of whole blocks at `off`.
    pub fn direct_write(&mut self, f: &mut KFile, off: u64, data: &[u8]) -> Result<(), i32> {
        let bs = self.bs;
        let end = off + data.len() as u64;
        assert!(off.is_multiple_of(bs) && end.is_multiple_of(bs));
        // The page cache over the range is written back and dropped.
        self.writeback(f, off, end)?;
        if off > f.size {
            self.zero_range(f, f.size, off)?;
        }
        let mut pos = off;
        while pos < end {
            let m = match self.write_begin(f, pos, end - pos, op::WRITE | op::DIRECT) {
                Ok(m) => m,
                Err(e) if e == libc::ENOTBLK || e == libc::ENOSYS => {
                    // The kernel falls back to a buffered write.
                    let rest = data[(pos - off) as usize..].to_vec();
                    self.buffered_write(f, pos, &rest, None)?;
                    return self.writeback(f, pos, end);
                }
                Err(e) => return Err(e),
            };
            let seg_end = m.end().min(end);
            let addr = m.addr + (pos - m.offset);
            let bytes = &data[(pos - off) as usize..(seg_end - off) as usize];
            if let Err(e) = self.dev_file.write_all_at(bytes, addr) {
                self.violation(format!("device write at {addr}: {e}"));
            }
            self.wc.data_bytes += bytes.len() as u64;
            let mut flags = ioend::DIRECT;
            if m.kind == MapType::Unwritten {
                flags |= ioend::UNWRITTEN;
            }
            if seg_end > f.disk_size {
                flags |= ioend::APPEND;
            }
            f.size = f.size.max(seg_end);
            if flags != ioend::DIRECT {
                self.io_end(f, flags, pos, seg_end - pos)?;
            }
            pos = seg_end;
        }
        Ok(())
    }

    /// `truncate(2)` as the kernel does it: the partial block at the new
    /// (or old, growing) end zeroed through `ZERO`, the page cache cut,
    /// the file written back, then `SETATTR`.
    pub fn truncate(&mut self, f: &mut KFile, size: u64) -> Result<(), i32> {
        let bs = self.bs;
        let edge = size.min(f.size);
        let upto = edge.div_ceil(bs) * bs;
        if !edge.is_multiple_of(bs) {
            self.zero_range(f, edge, upto.min(size.max(f.size)))?;
        }
        let keep = size.div_ceil(bs);
        f.pages.retain(|b, _| *b < keep);
        self.writeback(f, 0, u64::MAX)?;
        let args = abi::SetattrIn {
            valid: abi::fattr::SIZE,
            size,
            ..Default::default()
        };
        let (err, out) = self.call(opcode::SETATTR, f.node.nodeid, args.as_bytes());
        if err != 0 {
            return Err(err);
        }
        let a = abi::AttrOut::read_from_bytes(&out)
            .expect("attr reply")
            .attr;
        if a.size != size {
            self.violation(format!("SETATTR size {size} answered size {}", a.size));
        }
        f.size = size;
        f.disk_size = size;
        // The kernel drops the file's cached mappings on truncate.
        self.cache.forget_inode(node_key(f.node.nodeid));
        Ok(())
    }

    /// `fallocate(2)` as the kernel does it: the file written back and the
    /// range dropped from the cache, `FALLOCATE`, then the partial blocks
    /// at the edges of a punch or zero range zeroed by the kernel.
    pub fn fallocate(&mut self, f: &mut KFile, mode: u32, off: u64, len: u64) -> Result<(), i32> {
        if mode & (falloc::COLLAPSE_RANGE | falloc::INSERT_RANGE) != 0 {
            return self.shift_range(f, mode, off, len);
        }
        let bs = self.bs;
        let end = off + len;
        let grows = mode & falloc::KEEP_SIZE == 0 && end > f.size;
        if grows && !f.size.is_multiple_of(bs) {
            // The old last block's tail must read as zeros once inside.
            let old = f.size;
            self.zero_range(f, old, (old.div_ceil(bs) * bs).min(end))?;
        }
        self.send_fallocate(f, mode, off, len)?;
        if grows {
            f.size = end;
            f.disk_size = end;
        }
        if mode & (falloc::PUNCH_HOLE | falloc::ZERO_RANGE) != 0 {
            let lim = end.min(f.size);
            let head_end = (off.div_ceil(bs) * bs).min(lim);
            if !off.is_multiple_of(bs) && off < head_end {
                self.zero_range(f, off, head_end)?;
            }
            let tail = (lim / bs * bs).max(head_end);
            if !lim.is_multiple_of(bs) && tail < lim {
                self.zero_range(f, tail, lim)?;
            }
        }
        Ok(())
    }

    /// The file written back, `FALLOCATE`, the file's cached mappings
    /// dropped (the kernel's steps around the request).
    fn send_fallocate(&mut self, f: &mut KFile, mode: u32, off: u64, len: u64) -> Result<(), i32> {
        self.writeback(f, 0, u64::MAX)?;
        let args = abi::FallocateIn {
            fh: 0,
            offset: off,
            length: len,
            mode,
            padding: 0,
        };
        let (err, _) = self.call(opcode::FALLOCATE, f.node.nodeid, args.as_bytes());
        self.cache.forget_inode(node_key(f.node.nodeid));
        if err != 0 {
            return Err(err);
        }
        Ok(())
    }

    /// `fallocate(2)` collapse or insert range as the kernel's ext4 does
    /// it: block-aligned ranges only, inside the file (`EINVAL`
    /// otherwise); the file written back and its page cache dropped from
    /// `off` (all clean here: the model keeps no clean blocks), then
    /// `FALLOCATE`; the size moves by `len`.
    fn shift_range(&mut self, f: &mut KFile, mode: u32, off: u64, len: u64) -> Result<(), i32> {
        let bs = self.bs;
        let collapse = mode & falloc::COLLAPSE_RANGE != 0;
        let aligned = off.is_multiple_of(bs) && len.is_multiple_of(bs) && len > 0;
        let inside = if collapse {
            off + len < f.size
        } else {
            off < f.size
        };
        if !aligned || !inside {
            return Err(libc::EINVAL);
        }
        self.send_fallocate(f, mode, off, len)?;
        f.size = if collapse { f.size - len } else { f.size + len };
        f.disk_size = f.size;
        Ok(())
    }

    /// `fsync(2)`: write back, then `FSYNC`.
    pub fn fsync(&mut self, f: &mut KFile) -> Result<(), i32> {
        self.writeback(f, 0, u64::MAX)?;
        let (err, _) = self.call(
            opcode::FSYNC,
            f.node.nodeid,
            abi::FsyncIn::default().as_bytes(),
        );
        if err != 0 {
            return Err(err);
        }
        Ok(())
    }

    /// A buffered read of `off..off+len` (cut at `i_size`): dirty blocks
    /// from the cache, the rest through the read mappings.
    pub fn read_file(&mut self, f: &KFile, off: u64, len: u64) -> Result<Vec<u8>, i32> {
        let bs = self.bs;
        let end = off.saturating_add(len).min(f.size);
        if off >= end {
            return Ok(Vec::new());
        }
        let start = off / bs * bs;
        let stop = end.div_ceil(bs) * bs;
        let mut out = Vec::with_capacity((stop - start) as usize);
        let mut pos = start;
        while pos < stop {
            let blk = pos / bs;
            if let Some(p) = f.pages.get(&blk) {
                out.extend_from_slice(p);
                pos += bs;
                continue;
            }
            let m = self.cached_mapping(&f.node, pos, stop - pos, 0)?;
            if !m.covers(pos) {
                self.violation(format!("mapping {m:?} does not cover {pos}"));
                return Err(libc::EIO);
            }
            // Up to the mapping's end or the next dirty block.
            let mut upto = m.end().min(stop);
            if let Some((b, _)) = f.pages.range(blk..upto.div_ceil(bs)).next() {
                upto = upto.min(b * bs);
            }
            let n = (upto - pos) as usize;
            if !matches!(
                m.kind,
                MapType::Mapped | MapType::Hole | MapType::Unwritten | MapType::Inline
            ) {
                self.violation(format!("read through a {:?} mapping", m.kind));
                return Err(libc::EIO);
            }
            // Inline bytes through FUSE_READ, the rest from the device.
            let buf = self.data(&f.node, &m, pos, n, f.size);
            out.extend_from_slice(&buf);
            pos = upto;
        }
        Ok(out[(off - start) as usize..(end - start) as usize].to_vec())
    }

    /// Drop every clean page and the file's cached mappings (memory
    /// pressure): later reads go back to the server.
    pub fn evict(&mut self, f: &mut KFile) -> Result<(), i32> {
        self.writeback(f, 0, u64::MAX)?;
        self.cache.forget_inode(node_key(f.node.nodeid));
        Ok(())
    }

    /// `SYNCFS` then `DESTROY`, as an unmount.
    pub fn unmount(&mut self) {
        let (err, _) = self.call(opcode::SYNCFS, 0, &[0u8; 8]);
        assert_eq!(err, 0, "SYNCFS");
        let (err, _) = self.call(opcode::DESTROY, 0, &[]);
        assert_eq!(err, 0, "DESTROY");
    }
}
