//! Where the log lives and how its blocks are read: the journal inode of
//! the filesystem (mapped through its extents or block map) or an external
//! journal device, with the journal superblock checked as the kernel's
//! jbd2 checks it before it recovers anything.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};

use zerocopy::{FromBytes, FromZeros};

use super::format::{self, feature, JournalSuperblock, LogFormat};
use super::JournalError;
use crate::attr::FileType;
use crate::blockmap::Run;
use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::features::{compat, incompat, ro_compat};
use crate::inode::{flags, Inode};
use crate::numbers::{FileBlock, InodeNo, PhysBlock};
use crate::superblock::{RawSuperblock, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE};
use crate::volume::Volume;

/// Where the journal's blocks are.
enum Place<'a, D: BlockDevice> {
    /// In the journal inode of the filesystem on `vol`'s device.
    Inode {
        vol: &'a Volume<D>,
        inode: Box<Inode>,
    },
    /// On an external device, where log block `n` is device block `n`
    /// (the journal superblock is at `sb_block`, after the device's own
    /// ext4 superblock; `s_first` points past it).
    External {
        dev: &'a dyn BlockDevice,
        sb_block: u64,
    },
}

/// An open journal: its superblock, geometry and log format.
pub struct Log<'a, D: BlockDevice> {
    pub sb: JournalSuperblock,
    pub fmt: LogFormat,
    pub block_size: usize,
    /// First log block (`s_first`) and the end of the ring (exclusive): the
    /// log wraps from `last` back to `first`.
    pub first: u32,
    pub last: u32,
    /// Journal blocks that exist (`j_total_len`): the journal's length,
    /// at most `s_maxlen`.
    pub total_len: u32,
    /// The fast-commit area (`j_fc_first..=j_fc_last`), if the journal
    /// has the feature.
    pub fc: Option<(u32, u32)>,
    /// Whether the journal is on an external device.
    pub external: bool,
    place: Place<'a, D>,
    /// The last run of the journal inode looked up: (log block, device
    /// block, length). The log is read mostly in order.
    run: Cell<(u32, u64, u32)>,
    window: RefCell<Window>,
}

/// Bytes of log read ahead at once.
pub const READ_AHEAD: usize = 256 << 10;

/// Log blocks read ahead: `len` bytes of the journal's device from byte
/// `start`, in a buffer allocated once.
struct Window {
    /// Whether reads go through the window: only where the log is read
    /// densely (its data blocks too); where only headers are read, a
    /// window would copy the data in between for nothing.
    on: bool,
    start: u64,
    len: usize,
    data: Vec<u8>,
}

fn bad<T>(what: &'static str) -> Result<T> {
    Err(JournalError::Superblock(what).into())
}

impl<'a, D: BlockDevice> Log<'a, D> {
    /// Find and check the journal of the filesystem on `vol` (opened
    /// without replay). `external` is the journal device when the journal
    /// is not in an inode.
    pub fn open(vol: &'a Volume<D>, external: Option<&'a dyn BlockDevice>) -> Result<Self> {
        let sb = vol.sb();
        let bs = sb.block_size;
        if !sb.has_compat(compat::HAS_JOURNAL) {
            return bad("the filesystem has no journal (has_journal is not set)");
        }
        let ino = sb.journal_inum;
        let (place, total) = if ino != 0 {
            if external.is_some() {
                return bad(
                    "the journal is in an inode of the filesystem, not on an external device",
                );
            }
            let inode = vol.inode(InodeNo(ino))?;
            if inode.links_count == 0 {
                return bad("the journal inode is deleted (link count 0)");
            }
            if inode.kind != Some(FileType::Regular) || inode.has_flag(flags::ENCRYPT) {
                return bad("the journal inode is not a regular file");
            }
            let total = inode.size / bs as u64;
            (
                Place::Inode {
                    vol,
                    inode: Box::new(inode),
                },
                total,
            )
        } else {
            let Some(dev) = external else {
                return Err(JournalError::ExternalNeeded {
                    uuid: sb.journal_uuid,
                    dev: sb.journal_dev,
                }
                .into());
            };
            let (sb_block, total) = external_geometry(dev, bs, &sb.journal_uuid)?;
            (Place::External { dev, sb_block }, total)
        };
        let total = u32::try_from(total).unwrap_or(u32::MAX);
        let mut log = Log {
            sb: JournalSuperblock::new_zeroed(),
            fmt: LogFormat::new(0, 0, [0; 16]),
            block_size: bs as usize,
            first: 0,
            last: 0,
            total_len: total,
            fc: None,
            external: matches!(place, Place::External { .. }),
            place,
            run: Cell::new((0, 0, 0)),
            window: RefCell::new(Window {
                on: false,
                start: 0,
                len: 0,
                data: vec![0u8; READ_AHEAD.max(bs as usize) / bs as usize * bs as usize],
            }),
        };
        if total == 0 {
            return bad("the journal is empty (its inode or device has no blocks)");
        }
        let mut block = vec![0u8; bs as usize];
        let at = log.superblock_location()?;
        log.device()
            .read_at(at, &mut block)
            .map_err(|err| JournalError::Io { block: 0, err })?;
        let raw: &[u8; format::SIZE] = block[..format::SIZE]
            .try_into()
            .map_err(|_| JournalError::Superblock("journal block too small"))?;
        let jsb = JournalSuperblock::read_from_bytes(raw)
            .map_err(|_| JournalError::Superblock("journal block too small"))?;
        check_superblock(&jsb, raw, bs, total)?;
        if log.external && jsb.nr_users.get() != 1 {
            return bad(
                "the external journal has more than one user (unsupported, as in the kernel)",
            );
        }
        let maxlen = jsb.maxlen.get();
        log.total_len = total.min(maxlen);
        log.first = jsb.first.get();
        log.last = maxlen;
        if jsb.incompat() & feature::INCOMPAT_FAST_COMMIT != 0 {
            log.last = maxlen - num_fc_blocks(&jsb);
            log.fc = Some((log.last + 1, maxlen));
        }
        log.fmt = jsb.log_format();
        log.sb = jsb;
        Ok(log)
    }

    /// The ring's length in blocks.
    pub fn ring_len(&self) -> u64 {
        (self.last as u64).saturating_sub(self.first as u64)
    }

    /// The log block after `n`, wrapped as the kernel wraps it: from
    /// `last` back to `first` (once; a value still out of range fails
    /// when read).
    pub fn next(&self, n: u64) -> u64 {
        let n = n + 1;
        if n >= self.last as u64 {
            n.wrapping_sub(self.last as u64 - self.first as u64)
        } else {
            n
        }
    }

    /// `n` blocks after log block `at`, wrapped once as the kernel wraps.
    pub fn advance(&self, at: u64, n: u64) -> u64 {
        let v = at.saturating_add(n);
        if v >= self.last as u64 {
            v.wrapping_sub(self.last as u64 - self.first as u64)
        } else {
            v
        }
    }

    /// Byte offset of log block `n` on the journal's device.
    pub fn location(&self, n: u64) -> Result<u64> {
        let bad = JournalError::BadLogBlock {
            block: n.min(u32::MAX as u64) as u32,
        };
        if n >= self.total_len as u64 {
            return Err(bad.into());
        }
        let n32 = n as u32;
        let bs = self.block_size as u64;
        let pblk = match &self.place {
            Place::External { .. } => n,
            Place::Inode { vol, inode } => {
                let (lo, p, len) = self.run.get();
                if n32 >= lo && n32 - lo < len {
                    p + (n32 - lo) as u64
                } else {
                    match vol.map_block(inode, FileBlock(n32)) {
                        Ok(Run::Mapped {
                            pblk,
                            len,
                            unwritten: false,
                        }) => {
                            let len = len.min(u32::MAX as u64) as u32;
                            self.run.set((n32, pblk.0, len));
                            pblk.0
                        }
                        // A hole or an unwritten extent: the kernel's bmap
                        // finds no block there.
                        Ok(_) => return Err(bad.into()),
                        Err(e) => return Err(e),
                    }
                }
            }
        };
        pblk.checked_mul(bs).ok_or_else(|| bad.into())
    }

    /// Byte offset of the journal superblock on the journal's device.
    pub fn superblock_location(&self) -> Result<u64> {
        match &self.place {
            Place::External { sb_block, .. } => Ok(sb_block * self.block_size as u64),
            Place::Inode { .. } => self.location(0),
        }
    }

    /// The device the journal's blocks are on.
    pub fn device(&self) -> &dyn BlockDevice {
        match &self.place {
            Place::External { dev, .. } => *dev,
            Place::Inode { vol, .. } => vol.device(),
        }
    }

    /// Read log block `n` (`jread`). The log is read mostly in order:
    /// blocks come from a read-ahead window of up to [`READ_AHEAD`] bytes,
    /// refilled with one device read of the blocks that follow on the
    /// device (as the kernel reads 128 KiB ahead).
    pub fn read(&self, n: u64, buf: &mut [u8]) -> Result<()> {
        let bs = self.block_size;
        let at = self.location(n)?;
        let io = |err| {
            Error::Journal(JournalError::Io {
                block: n.min(u32::MAX as u64) as u32,
                err,
            })
        };
        let mut w = self.window.borrow_mut();
        if buf.len() != bs || !w.on {
            return self.device().read_at(at, buf).map_err(io);
        }
        if !(at >= w.start && at + bs as u64 <= w.start + w.len as u64) {
            // The blocks after `n` that follow it on the device too.
            let mut len = bs;
            while len < w.data.len() {
                let k = n + (len / bs) as u64;
                if k >= self.total_len as u64 || self.location(k).ok() != Some(at + len as u64) {
                    break;
                }
                len += bs;
            }
            w.len = 0;
            self.device().read_at(at, &mut w.data[..len]).map_err(io)?;
            w.start = at;
            w.len = len;
        }
        let off = (at - w.start) as usize;
        buf.copy_from_slice(&w.data[off..off + bs]);
        Ok(())
    }

    /// Read ahead (or not) from now on.
    pub fn set_read_ahead(&self, on: bool) {
        let mut w = self.window.borrow_mut();
        w.on = on;
        w.len = 0;
    }

    /// The device block of log block `n`, for messages.
    #[allow(dead_code)]
    pub fn physical(&self, n: u64) -> Option<PhysBlock> {
        self.location(n)
            .ok()
            .map(|b| PhysBlock(b / self.block_size as u64))
    }
}

/// Fast-commit blocks of a journal with the feature.
fn num_fc_blocks(jsb: &JournalSuperblock) -> u32 {
    match jsb.num_fc_blks.get() {
        0 => format::DEFAULT_FAST_COMMIT_BLOCKS,
        n => n,
    }
}

/// The kernel's `journal_check_superblock`.
fn check_superblock(
    jsb: &JournalSuperblock,
    raw: &[u8; format::SIZE],
    block_size: u32,
    total: u32,
) -> Result<()> {
    if jsb.magic.get() != format::MAGIC {
        return bad("no journal superblock (bad magic number)");
    }
    if jsb.blocksize.get() != block_size {
        return bad("the journal's block size differs from the filesystem's");
    }
    if !matches!(
        jsb.blocktype.get(),
        format::SUPERBLOCK_V1 | format::SUPERBLOCK_V2
    ) {
        return bad("unknown journal superblock version");
    }
    let maxlen = jsb.maxlen.get();
    if maxlen > total {
        return bad("the journal superblock says the journal is longer than it is");
    }
    let first = jsb.first.get();
    if first == 0 || first >= total {
        return bad("the journal's first log block lies outside the journal");
    }
    if !jsb.is_v2() {
        return Ok(());
    }
    let inc = jsb.incompat();
    let ro = jsb.ro_compat();
    if inc & !feature::KNOWN_INCOMPAT != 0 || ro != 0 {
        return Err(JournalError::UnknownFeatures {
            incompat: inc & !feature::KNOWN_INCOMPAT,
            ro_compat: ro,
        }
        .into());
    }
    let fc = if inc & feature::INCOMPAT_FAST_COMMIT != 0 {
        num_fc_blocks(jsb)
    } else {
        0
    };
    if maxlen < format::MIN_JOURNAL_BLOCKS || maxlen - format::MIN_JOURNAL_BLOCKS < fc {
        return bad("the journal is shorter than 1024 blocks (plus its fast-commit area)");
    }
    if inc & feature::INCOMPAT_CSUM_V2 != 0 && inc & feature::INCOMPAT_CSUM_V3 != 0 {
        return bad("the journal claims checksums v2 and v3 at once");
    }
    if jsb.has_csum() {
        if jsb.compat() & feature::COMPAT_CHECKSUM != 0 {
            return bad("the journal claims checksums v1 and v2/v3 at once");
        }
        if jsb.checksum_type != format::CSUM_CRC32C {
            return bad("unknown journal checksum type");
        }
        if jsb.checksum.get() != format::checksum(raw) {
            return bad("the journal superblock checksum does not match");
        }
    }
    Ok(())
}

/// Check the ext4 superblock of an external journal device and return the
/// block of its journal superblock and how many blocks the device has, as
/// the kernel's `ext4_get_journal_blkdev` does.
fn external_geometry(
    dev: &dyn BlockDevice,
    block_size: u32,
    uuid: &[u8; 16],
) -> Result<(u64, u64)> {
    let bad = |w| Err(JournalError::WrongExternal(w).into());
    let mut bytes = vec![0u8; SUPERBLOCK_SIZE];
    if dev.size() < SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE as u64 {
        return bad("the device is too small to hold a journal");
    }
    dev.read_at(SUPERBLOCK_OFFSET, &mut bytes)?;
    let Ok(raw) = RawSuperblock::read_from_bytes(&bytes) else {
        return bad("no superblock");
    };
    if raw.magic.get() != crate::superblock::MAGIC
        || raw.feature_incompat.get() & incompat::JOURNAL_DEV == 0
    {
        return bad("not an external journal device (no journal_dev superblock)");
    }
    if raw.feature_ro_compat.get() & ro_compat::METADATA_CSUM != 0
        && crate::checksum::crc32c(!0, &bytes[..SUPERBLOCK_SIZE - 4]) != raw.checksum.get()
    {
        return bad("its superblock checksum does not match");
    }
    if &raw.uuid != uuid {
        return bad("its UUID is not the journal UUID the filesystem names");
    }
    let sb_block = SUPERBLOCK_OFFSET / block_size as u64;
    let blocks = raw.blocks_count_lo.get() as u64
        | if raw.feature_incompat.get() & incompat::BIT64 != 0 {
            (raw.blocks_count_hi.get() as u64) << 32
        } else {
            0
        };
    if blocks.saturating_mul(block_size as u64) > dev.size() {
        return bad("the journal runs past the end of its device");
    }
    Ok((sb_block + 1, blocks))
}
