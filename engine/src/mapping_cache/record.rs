//! The mapping record (the 32-byte `fuse_iomap_io` of the FUSE iomap
//! protocol) and the rules that decide whether two records may be merged.

/// `FUSE_IOMAP_NULL_ADDR`: the device address of a mapping that has none.
pub const NULL_ADDR: u64 = u64::MAX;
/// `FUSE_IOMAP_DEV_NULL`: the device cookie of a mapping that has none.
pub const DEV_NULL: u32 = 0;
/// Largest length a merge may produce, and the first file offset a record
/// may not start at: the B+tree uses `1 << 63` as its "unused key" marker.
pub const MAX_LENGTH: u64 = 1 << 63;
/// Records must start below this offset (see [`MAX_LENGTH`]).
pub const OFFSET_LIMIT: u64 = 1 << 63;

/// Mapping types of the iomap protocol.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MapType {
    Hole = 0,
    Delalloc = 1,
    Mapped = 2,
    Unwritten = 3,
    Inline = 4,
    /// FUSE-only: "mappings were pushed into the kernel cache; look again".
    RetryCache = 254,
    /// FUSE-only: "do not cache this mapping".
    NoCache = 253,
    /// FUSE-only, write mapping only: "writes go where the read mapping points".
    PureOverwrite = 255,
}

impl MapType {
    /// Decodes the wire value; `None` for a type the protocol does not define.
    pub fn from_u16(v: u16) -> Option<MapType> {
        Some(match v {
            0 => MapType::Hole,
            1 => MapType::Delalloc,
            2 => MapType::Mapped,
            3 => MapType::Unwritten,
            4 => MapType::Inline,
            254 => MapType::RetryCache,
            253 => MapType::NoCache,
            255 => MapType::PureOverwrite,
            _ => return None,
        })
    }

    /// Whether records of this type carry a device address.
    pub fn has_addr(self) -> bool {
        matches!(self, MapType::Mapped | MapType::Unwritten)
    }
}

/// The 32-byte mapping record of the FUSE iomap protocol (`fuse_iomap_io`
/// semantics): file range `offset..offset+length` maps to device range
/// `addr..addr+length` on device `dev` (for `Mapped`/`Unwritten`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mapping {
    pub offset: u64,
    pub length: u64,
    pub addr: u64,
    pub kind: MapType,
    pub flags: u16,
    pub dev: u32,
}

/// Why a record cannot go into the cache (the cache turns it into
/// `Error::Corrupt` naming the inode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadRecord(pub &'static str);

impl Mapping {
    /// Size of the wire encoding.
    pub const WIRE_SIZE: usize = 32;

    /// One past the last byte of the file range. Saturates so that a
    /// record that was never validated cannot make this panic.
    #[inline]
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.length)
    }

    /// Whether `off` lies inside the file range.
    #[inline]
    pub fn covers(&self, off: u64) -> bool {
        self.offset <= off && off < self.end()
    }

    /// The rules every cached record obeys (length 0 is the caller's
    /// business: it means "nothing" and is never stored).
    pub fn validate(&self) -> Result<(), BadRecord> {
        if self.offset >= OFFSET_LIMIT {
            return Err(BadRecord("mapping starts at or beyond 2^63"));
        }
        if self.length > MAX_LENGTH {
            return Err(BadRecord("mapping longer than 2^63"));
        }
        if self.offset.checked_add(self.length).is_none() {
            return Err(BadRecord("mapping file range overflows"));
        }
        if self.kind.has_addr() {
            if self.addr == NULL_ADDR {
                return Err(BadRecord("mapped extent without a device address"));
            }
            if self.addr.checked_add(self.length).is_none() {
                return Err(BadRecord("mapping device range overflows"));
            }
        } else if self.addr != NULL_ADDR {
            return Err(BadRecord("unmapped extent carries a device address"));
        }
        Ok(())
    }

    /// Whether `self` followed by `next` could be one record: same device,
    /// type and flags, touching file ranges, touching device ranges (or both
    /// null), and a merged length of at most 2^63.
    #[inline]
    pub fn can_merge(&self, next: &Mapping) -> bool {
        if self.dev != next.dev || self.kind != next.kind || self.flags != next.flags {
            return false;
        }
        if self.offset.checked_add(self.length) != Some(next.offset) {
            return false;
        }
        let addr_ok = if self.kind.has_addr() {
            self.addr.checked_add(self.length) == Some(next.addr)
        } else {
            self.addr == NULL_ADDR && next.addr == NULL_ADDR
        };
        addr_ok && matches!(self.length.checked_add(next.length), Some(l) if l <= MAX_LENGTH)
    }

    /// `self` extended by `next` (caller checked [`Mapping::can_merge`]).
    #[inline]
    pub(crate) fn merged(&self, next: &Mapping) -> Mapping {
        Mapping {
            length: self.length + next.length,
            ..*self
        }
    }

    /// The part of `self` from `off` on (`offset < off < end`): the device
    /// address moves with the file offset for types that have one.
    #[inline]
    pub fn tail_from(&self, off: u64) -> Mapping {
        let skip = off - self.offset;
        Mapping {
            offset: off,
            length: self.length - skip,
            addr: if self.kind.has_addr() {
                self.addr + skip
            } else {
                self.addr
            },
            ..*self
        }
    }

    /// The part of `self` before `off` (`offset < off < end`).
    #[inline]
    pub(crate) fn head_until(&self, off: u64) -> Mapping {
        Mapping {
            length: off - self.offset,
            ..*self
        }
    }

    /// Little-endian wire encoding (`fuse_iomap_io` layout).
    pub fn to_le_bytes(&self) -> [u8; Self::WIRE_SIZE] {
        let mut b = [0u8; Self::WIRE_SIZE];
        b[0..8].copy_from_slice(&self.offset.to_le_bytes());
        b[8..16].copy_from_slice(&self.length.to_le_bytes());
        b[16..24].copy_from_slice(&self.addr.to_le_bytes());
        b[24..26].copy_from_slice(&(self.kind as u16).to_le_bytes());
        b[26..28].copy_from_slice(&self.flags.to_le_bytes());
        b[28..32].copy_from_slice(&self.dev.to_le_bytes());
        b
    }

    /// Decodes the wire encoding; an unknown type is an error.
    pub fn from_le_bytes(b: &[u8; Self::WIRE_SIZE]) -> Result<Mapping, BadRecord> {
        let u64_at = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(w)
        };
        let kind = MapType::from_u16(u16::from_le_bytes([b[24], b[25]]))
            .ok_or(BadRecord("unknown mapping type"))?;
        Ok(Mapping {
            offset: u64_at(0),
            length: u64_at(8),
            addr: u64_at(16),
            kind,
            flags: u16::from_le_bytes([b[26], b[27]]),
            dev: u32::from_le_bytes([b[28], b[29], b[30], b[31]]),
        })
    }
}

// The record is the wire record: keep it exactly 32 bytes.
const _: () = assert!(core::mem::size_of::<Mapping>() == Mapping::WIRE_SIZE);
