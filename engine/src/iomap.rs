//! The iomap questions: where bytes of a file live on the device, in the
//! FUSE iomap protocol's terms, answered from the mapping cache and filled
//! from disk one on-disk leaf at a time. Also the kernel's rules for an
//! answer, checked in one place for every test and the frontends' debug mode.

use crate::attr::FileType;
use crate::blockmap::Run;
use crate::device::BlockDevice;
use crate::error::{Error, Object, Result};
use crate::features::incompat;
use crate::inode::{flags, Inode};
use crate::mapping_cache::{Fork, Lookup, MapType, Mapping, DEV_NULL, NULL_ADDR};
use crate::numbers::{FileBlock, InodeNo};
use crate::volume::Volume;

/// Operation flags of `FUSE_IOMAP_BEGIN` (`opflags`).
pub mod op {
    pub const WRITE: u32 = 1 << 0;
    pub const ZERO: u32 = 1 << 1;
    pub const REPORT: u32 = 1 << 2;
    pub const FAULT: u32 = 1 << 3;
    pub const DIRECT: u32 = 1 << 4;
    pub const NOWAIT: u32 = 1 << 5;
    pub const OVERWRITE_ONLY: u32 = 1 << 6;
    pub const UNSHARE: u32 = 1 << 7;
    pub const DAX: u32 = 1 << 8;
    pub const ATOMIC: u32 = 1 << 9;
    pub const DONTCACHE: u32 = 1 << 10;
    pub const SWAPFILE: u32 = 1 << 30;
    pub const WRITEBACK: u32 = 1 << 31;
    /// Operations that change the file.
    pub const WRITES: u32 = WRITE | ZERO | UNSHARE;
}

/// Mapping flags (`fuse_iomap_io.flags`).
/// `fuse_iomap_ioend_in.flags`.
pub mod ioend {
    /// Out-of-place write (`new_addr` holds the new location).
    pub const SHARED: u32 = 1 << 0;
    /// The I/O went to an unwritten mapping.
    pub const UNWRITTEN: u32 = 1 << 1;
    pub const BOUNDARY: u32 = 1 << 2;
    pub const DIRECT: u32 = 1 << 3;
    /// The I/O ends past the on-disk size.
    pub const APPEND: u32 = 1 << 4;
    pub const WRITEBACK: u32 = 1 << 5;
    pub const SWAPOFF: u32 = 1 << 6;
}

pub mod mflags {
    pub const NEW: u16 = 1 << 0;
    pub const DIRTY: u16 = 1 << 1;
    pub const SHARED: u16 = 1 << 2;
    pub const MERGED: u16 = 1 << 3;
    pub const BOUNDARY: u16 = 1 << 4;
    pub const ANON_WRITE: u16 = 1 << 5;
    pub const ATOMIC_BIO: u16 = 1 << 6;
    pub const WANT_IOMAP_END: u16 = 1 << 7;
    /// Every flag a server may set in a `begin` reply.
    pub const KNOWN: u16 = 0xff;
}

/// What `FUSE_IOMAP_CONFIG` answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IomapConfig {
    pub block_size: u32,
    pub max_links: u32,
    /// Timestamp granularity in nanoseconds.
    pub time_gran: u32,
    pub time_min: i64,
    pub time_max: i64,
    pub maxbytes: u64,
    pub uuid: [u8; 16],
}

/// The kernel's ext4 link limit (`EXT4_LINK_MAX`).
const EXT4_LINK_MAX: u32 = 65000;

impl<D: BlockDevice> Volume<D> {
    /// Filesystem-wide answers for `FUSE_IOMAP_CONFIG`.
    pub fn iomap_config(&self) -> IomapConfig {
        let sb = self.sb();
        // Large inodes carry nanoseconds and two epoch bits (to 2446);
        // 128-byte inodes only signed 32-bit seconds.
        let extra = sb.inode_size > 128;
        IomapConfig {
            block_size: sb.block_size,
            max_links: EXT4_LINK_MAX,
            time_gran: if extra { 1 } else { 1_000_000_000 },
            time_min: i32::MIN as i64,
            time_max: if extra {
                (1i64 << 34) - 1 + i32::MIN as i64
            } else {
                i32::MAX as i64
            },
            maxbytes: self.maxbytes(),
            uuid: sb.uuid,
        }
    }

    /// Largest file size for this filesystem's features.
    pub fn maxbytes(&self) -> u64 {
        self.sb()
            .max_file_size(self.sb().has_incompat(incompat::EXTENTS))
    }

    /// `FUSE_IOMAP_BEGIN`: the read mapping covering `pos` and the write
    /// mapping (a pure overwrite: this volume is read-only). `dev` is the
    /// device cookie to put in mapped answers.
    pub fn iomap_begin(
        &self,
        ino: InodeNo,
        pos: u64,
        count: u64,
        opflags: u32,
        dev: u32,
    ) -> Result<(Mapping, Mapping)> {
        if opflags & op::WRITES != 0 {
            return Err(Error::ReadOnly);
        }
        let inode = self.live_inode(ino)?;
        if inode.kind != Some(FileType::Regular) {
            return Err(Error::InvalidArgument);
        }
        if pos >= self.maxbytes() {
            return Err(Error::InvalidArgument);
        }
        let read = self.read_mapping(&inode, pos, count)?;
        let read = with_dev(read, dev);
        let write = Mapping {
            offset: read.offset,
            length: read.length,
            addr: NULL_ADDR,
            kind: MapType::PureOverwrite,
            flags: 0,
            dev: DEV_NULL,
        };
        Ok((read, write))
    }

    /// The read mapping covering `pos`, before the device cookie is set.
    fn read_mapping(&self, inode: &Inode, pos: u64, count: u64) -> Result<Mapping> {
        let bs = self.sb().block_size as u64;
        let eof = inode.size.div_ceil(bs).saturating_mul(bs);
        if inode.has_flag(flags::INLINE_DATA) {
            if pos >= eof.max(bs) {
                // Past the inline bytes: a hole covering `pos`, since an
                // answer must cover the position asked.
                return Ok(Mapping {
                    offset: pos / bs * bs,
                    length: bs,
                    addr: NULL_ADDR,
                    kind: MapType::Hole,
                    flags: 0,
                    dev: DEV_NULL,
                });
            }
            // Inline bytes live in the inode: the server serves them.
            return Ok(Mapping {
                offset: 0,
                length: eof.max(bs),
                addr: NULL_ADDR,
                kind: MapType::Inline,
                flags: 0,
                dev: DEV_NULL,
            });
        }
        if inode.has_flag(flags::ENCRYPT) {
            return Err(Error::Unsupported {
                what: "iomap of encrypted files",
            });
        }
        let ino = inode.ino;
        let m = match self.mapcache().lookup(ino, Fork::Read, pos) {
            Lookup::Hit(m, _) => m,
            _ => {
                self.fill_mappings(inode, pos / bs)?;
                match self.mapcache().lookup(ino, Fork::Read, pos) {
                    Lookup::Hit(m, _) => m,
                    // Not cached (budget too small): answer from disk.
                    _ => self.mapping_from_disk(inode, pos)?,
                }
            }
        };
        Ok(clip_hole(m, pos, count, eof, bs))
    }

    /// Load the runs of the on-disk leaf holding logical block `lblk`.
    fn fill_mappings(&self, inode: &Inode, lblk: u64) -> Result<()> {
        let (start, runs) = match FileBlock::at(lblk) {
            Some(l) => self.map_leaf(inode, l)?,
            None => (FileBlock(0), alloc::vec![]),
        };
        let bs = self.sb().block_size as u64;
        let mut l = start.get();
        for run in runs {
            let m = run_mapping(run, l, bs);
            l += run.len();
            if m.length == 0 {
                continue;
            }
            self.mapcache().upsert(inode.ino, Fork::Read, m)?;
        }
        Ok(())
    }

    fn mapping_from_disk(&self, inode: &Inode, pos: u64) -> Result<Mapping> {
        let bs = self.sb().block_size as u64;
        let lblk = pos / bs;
        let run = self.map_block_at(inode, lblk)?;
        let m = run_mapping(run, lblk, bs);
        if m.length == 0 {
            return Err(Error::corrupt(Object::Inode(inode.ino), "empty mapping"));
        }
        Ok(m)
    }

    /// Every read mapping of a file in order, as `FIEMAP` would walk it,
    /// from offset 0 to the end of the last block of the file.
    pub fn mappings(
        &self,
        ino: InodeNo,
        dev: u32,
        f: &mut dyn FnMut(&Mapping) -> bool,
    ) -> Result<()> {
        let attr = self.getattr(ino)?;
        let bs = self.sb().block_size as u64;
        let eof = attr.size.div_ceil(bs).saturating_mul(bs);
        let mut pos = 0;
        while pos < eof {
            let (m, _) = self.iomap_begin(ino, pos, eof - pos, op::REPORT, dev)?;
            if !f(&m) {
                break;
            }
            // Every answer covers pos and ends past it.
            pos = m.offset + m.length;
        }
        Ok(())
    }

    /// Forget the cached mappings of an inode (the frontend's kernel
    /// invalidation goes with it).
    pub fn forget_mappings(&self, ino: InodeNo) {
        self.mapcache().forget_inode(ino);
    }
}

/// A run starting at logical block `lblk` as a mapping record (no device
/// cookie yet: the cache keeps one form whatever the frontend's device):
/// where block numbers become the protocol's byte offsets.
fn run_mapping(run: Run, lblk: u64, bs: u64) -> Mapping {
    let (kind, addr) = match run {
        Run::Mapped {
            pblk,
            unwritten: false,
            ..
        } => (MapType::Mapped, pblk.0 * bs),
        Run::Mapped {
            pblk,
            unwritten: true,
            ..
        } => (MapType::Unwritten, pblk.0 * bs),
        Run::Hole { .. } => (MapType::Hole, NULL_ADDR),
    };
    Mapping {
        offset: lblk * bs,
        length: run.len() * bs,
        addr,
        kind,
        flags: 0,
        dev: DEV_NULL,
    }
}

/// A hole runs to the next extent or to the end of the file's last block;
/// past that, a hole just covers the request.
fn clip_hole(m: Mapping, pos: u64, count: u64, eof: u64, bs: u64) -> Mapping {
    if m.kind != MapType::Hole {
        return m;
    }
    if pos < eof {
        return Mapping {
            length: m.end().min(eof) - m.offset,
            ..m
        };
    }
    let start = pos / bs * bs;
    let end = pos
        .saturating_add(count.max(1))
        .div_ceil(bs)
        .saturating_mul(bs)
        .min(m.end());
    Mapping {
        offset: start,
        length: end.max(start + bs).min(m.end()) - start,
        ..m
    }
}

fn with_dev(m: Mapping, dev: u32) -> Mapping {
    if m.kind.has_addr() {
        Mapping { dev, ..m }
    } else {
        m
    }
}

/// The kernel's checks on one mapping of a `begin` reply ("What the kernel
/// checks" in the protocol notes `docs/iomap.md` points to). `write` says
/// which half of the reply this is.
pub fn kernel_check(
    m: &Mapping,
    pos: u64,
    block_size: u64,
    maxbytes: u64,
    write: bool,
) -> core::result::Result<(), &'static str> {
    if m.flags & !mflags::KNOWN != 0 {
        return Err("unknown mapping flags");
    }
    if m.length == 0 {
        return Err("zero-length mapping");
    }
    if !m.offset.is_multiple_of(block_size) || !m.length.is_multiple_of(block_size) {
        return Err("mapping not aligned to the block size");
    }
    let Some(end) = m.offset.checked_add(m.length) else {
        return Err("mapping range overflows");
    };
    if m.offset >= maxbytes {
        return Err("mapping starts past maxbytes");
    }
    match m.kind {
        MapType::Mapped | MapType::Unwritten => {
            if m.dev == DEV_NULL || m.addr == NULL_ADDR {
                return Err("mapped extent without device or address");
            }
            if m.addr.checked_add(m.length).is_none() {
                return Err("device range overflows");
            }
        }
        MapType::Hole | MapType::Delalloc | MapType::Inline => {
            if m.dev != DEV_NULL || m.addr != NULL_ADDR {
                return Err("unmapped extent with a device or address");
            }
        }
        MapType::PureOverwrite if !write => return Err("pure overwrite in the read mapping"),
        MapType::PureOverwrite | MapType::RetryCache | MapType::NoCache => {}
    }
    if !(m.offset <= pos && pos < end) {
        return Err("mapping does not cover the request");
    }
    Ok(())
}
