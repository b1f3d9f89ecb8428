//! Whole-disk images: the MBR and GPT partition tables, read far enough
//! to say where each partition lies and which ones hold an ext2/3/4
//! filesystem, so a frontend can open one (`partition=N`) or say which to
//! choose. Numbered as Linux numbers them (`/dev/sdaN`): GPT entries and
//! MBR primaries by slot, MBR logical partitions from 5 on.
//!
//! Everything read is checked: the GPT header and entry array against
//! their CRC32s, sizes and counts against fixed bounds, the MBR's chain of
//! extended boot records against loops and its length, every range
//! against the device's size.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use crc::{Crc, CRC_32_ISO_HDLC};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, KnownLayout};

use crate::device::BlockDevice;

/// One entry of an MBR (or extended boot record) partition table.
#[derive(FromBytes, KnownLayout, Immutable, Clone, Copy, Debug)]
#[repr(C)]
pub struct MbrEntry {
    pub status: u8,
    pub chs_first: [u8; 3],
    pub kind: u8,
    pub chs_last: [u8; 3],
    pub lba_start: U32,
    pub sectors: U32,
}

/// A master (or extended) boot record: 446 bytes of code, four entries,
/// the 0x55 0xAA signature.
#[derive(FromBytes, KnownLayout, Immutable, Clone, Copy)]
#[repr(C)]
pub struct Mbr {
    pub code: [u8; 446],
    pub entries: [MbrEntry; 4],
    pub signature: U16,
}

/// The GPT header (UEFI 2.x, 92 bytes used).
#[derive(FromBytes, KnownLayout, Immutable, Clone, Copy, Debug)]
#[repr(C)]
pub struct GptHeader {
    pub signature: [u8; 8],
    pub revision: U32,
    pub header_size: U32,
    pub header_crc32: U32,
    pub reserved: U32,
    pub current_lba: U64,
    pub backup_lba: U64,
    pub first_usable_lba: U64,
    pub last_usable_lba: U64,
    pub disk_guid: [u8; 16],
    pub entries_lba: U64,
    pub entry_count: U32,
    pub entry_size: U32,
    pub entries_crc32: U32,
}

/// The fixed part of a GPT partition entry (at least 128 bytes each).
#[derive(FromBytes, KnownLayout, Immutable, Clone, Copy, Debug)]
#[repr(C)]
pub struct GptEntry {
    pub type_guid: [u8; 16],
    pub unique_guid: [u8; 16],
    pub first_lba: U64,
    pub last_lba: U64,
    pub attributes: U64,
    pub name: [u8; 72],
}

const MBR_SIGNATURE: u16 = 0xaa55;
const GPT_SIGNATURE: &[u8; 8] = b"EFI PART";
const MBR_PROTECTIVE: u8 = 0xee;
const MBR_EXTENDED: [u8; 3] = [0x05, 0x0f, 0x85];
/// At most this many logical partitions are followed (Linux's own limit
/// of minor numbers is lower).
const MAX_LOGICAL: usize = 128;
/// A GPT entry array larger than this is damage (the usual one is 16 KiB).
const MAX_GPT_ENTRIES_BYTES: u64 = 1 << 20;

/// ext2/3/4's superblock magic, at byte 1024 + 56 of the filesystem.
const EXT_MAGIC_AT: u64 = 1024 + 56;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Mbr,
    Gpt,
}

impl core::fmt::Display for Scheme {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Scheme::Mbr => "MBR",
            Scheme::Gpt => "GPT",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// Linux's number (`sdaN`).
    pub number: u32,
    /// Where it starts and how long it is, in bytes.
    pub start: u64,
    pub len: u64,
    /// It begins with an ext2/3/4 superblock.
    pub ext: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub scheme: Scheme,
    pub partitions: Vec<Partition>,
}

/// Whether an ext2/3/4 superblock magic sits where a filesystem starting
/// at byte `start` would have it.
pub fn has_ext_magic<D: BlockDevice + ?Sized>(dev: &D, start: u64) -> bool {
    let mut m = [0u8; 2];
    start
        .checked_add(EXT_MAGIC_AT + 2)
        .is_some_and(|end| end <= dev.size())
        && dev.read_at(start + EXT_MAGIC_AT, &mut m).is_ok()
        && u16::from_le_bytes(m) == 0xef53
}

fn read<D: BlockDevice + ?Sized>(dev: &D, at: u64, len: usize) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; len];
    match at.checked_add(len as u64) {
        Some(end) if end <= dev.size() => dev.read_at(at, &mut buf).map(|()| buf).map_err(|e| {
            format!(
                "reading the partition table at byte {at}: errno {}",
                e.errno
            )
        }),
        _ => Err(format!(
            "the partition table points past the end of the image (byte {at})"
        )),
    }
}

/// The partition table at the start of `dev`, if it has one. `Err` names
/// what is damaged.
pub fn read_table<D: BlockDevice + ?Sized>(dev: &D) -> Result<Option<Table>, String> {
    if dev.size() < 512 {
        return Ok(None);
    }
    let mbr_bytes = read(dev, 0, 512)?;
    let Ok(mbr) = Mbr::read_from_bytes(&mbr_bytes) else {
        return Ok(None);
    };
    if mbr.signature.get() != MBR_SIGNATURE {
        return Ok(None);
    }
    // An MBR signature is also on FAT boot sectors and many other things;
    // a filesystem at byte 0 wins.
    if has_ext_magic(dev, 0) {
        return Ok(None);
    }
    if mbr.entries.iter().any(|e| e.kind == MBR_PROTECTIVE) {
        for sector in [512u64, 4096] {
            if let Some(t) = read_gpt(dev, sector)? {
                return Ok(Some(t));
            }
        }
        return Err("a protective MBR, but no valid GPT header after it".into());
    }
    let mut parts = Vec::new();
    for (i, e) in mbr.entries.iter().enumerate() {
        if e.kind == 0 || e.sectors.get() == 0 {
            continue;
        }
        let (start, len) = (
            u64::from(e.lba_start.get()) * 512,
            u64::from(e.sectors.get()) * 512,
        );
        if MBR_EXTENDED.contains(&e.kind) {
            read_logical(dev, start, len, &mut parts)?;
            continue;
        }
        parts.push(partition(dev, i as u32 + 1, start, len)?);
    }
    if parts.is_empty() {
        return Ok(None);
    }
    parts.sort_by_key(|p| p.number);
    Ok(Some(Table {
        scheme: Scheme::Mbr,
        partitions: parts,
    }))
}

fn partition<D: BlockDevice + ?Sized>(
    dev: &D,
    number: u32,
    start: u64,
    len: u64,
) -> Result<Partition, String> {
    if start.checked_add(len).is_none_or(|end| end > dev.size()) {
        return Err(format!(
            "partition {number} (bytes {start}..+{len}) runs past the end of the image ({} bytes)",
            dev.size()
        ));
    }
    Ok(Partition {
        number,
        start,
        len,
        ext: has_ext_magic(dev, start),
    })
}

/// The chain of extended boot records: each holds a logical partition
/// (relative to itself) and a link to the next (relative to the extended
/// partition's start).
fn read_logical<D: BlockDevice + ?Sized>(
    dev: &D,
    ext_start: u64,
    ext_len: u64,
    parts: &mut Vec<Partition>,
) -> Result<(), String> {
    let mut ebr = ext_start;
    let mut seen = Vec::new();
    for n in 0..MAX_LOGICAL {
        if seen.contains(&ebr) {
            return Err(format!(
                "the extended partition's chain loops at byte {ebr}"
            ));
        }
        seen.push(ebr);
        let bytes = read(dev, ebr, 512)?;
        let rec = Mbr::read_from_bytes(&bytes).map_err(|_| "short EBR".to_string())?;
        if rec.signature.get() != MBR_SIGNATURE {
            return Err(format!(
                "no boot record signature at byte {ebr} (extended partition)"
            ));
        }
        let [data, link, ..] = rec.entries;
        if data.kind != 0 && data.sectors.get() != 0 {
            let start = ebr + u64::from(data.lba_start.get()) * 512;
            let len = u64::from(data.sectors.get()) * 512;
            parts.push(partition(dev, 5 + n as u32, start, len)?);
        }
        if link.kind == 0 || link.sectors.get() == 0 {
            return Ok(());
        }
        let next = u64::from(link.lba_start.get()) * 512;
        if next >= ext_len {
            return Err(format!(
                "the extended partition's chain leaves it (byte {})",
                ext_start + next
            ));
        }
        ebr = ext_start + next;
    }
    Err(format!(
        "more than {MAX_LOGICAL} logical partitions: the chain is damaged"
    ))
}

/// The GPT whose header is at LBA 1 for sectors of `sector` bytes.
fn read_gpt<D: BlockDevice + ?Sized>(dev: &D, sector: u64) -> Result<Option<Table>, String> {
    if dev.size() < sector * 2 {
        return Ok(None);
    }
    let bytes = read(dev, sector, 512)?;
    let Ok((h, _)) = GptHeader::read_from_prefix(&bytes) else {
        return Ok(None);
    };
    if &h.signature != GPT_SIGNATURE {
        return Ok(None);
    }
    let crc = Crc::<u32>::new(&CRC_32_ISO_HDLC);
    let hsize = h.header_size.get() as usize;
    if !(92..=512).contains(&hsize) {
        return Err(format!("GPT header size {hsize} is not 92..512"));
    }
    let mut copy = bytes[..hsize].to_vec();
    copy[16..20].fill(0);
    if crc.checksum(&copy) != h.header_crc32.get() {
        return Err("the GPT header's checksum does not match".into());
    }
    let (count, size) = (
        u64::from(h.entry_count.get()),
        u64::from(h.entry_size.get()),
    );
    if size < 128 || size % 8 != 0 || count * size > MAX_GPT_ENTRIES_BYTES {
        return Err(format!(
            "GPT entry array of {count} entries of {size} bytes is not plausible"
        ));
    }
    let at = h
        .entries_lba
        .get()
        .checked_mul(sector)
        .ok_or("GPT entry array position overflows")?;
    let array = read(dev, at, (count * size) as usize)?;
    if crc.checksum(&array) != h.entries_crc32.get() {
        return Err("the GPT entry array's checksum does not match".into());
    }
    let mut parts = Vec::new();
    for (i, raw) in array.chunks_exact(size as usize).enumerate() {
        let Ok((e, _)) = GptEntry::read_from_prefix(raw) else {
            continue;
        };
        if e.type_guid == [0; 16] {
            continue;
        }
        let (first, last) = (e.first_lba.get(), e.last_lba.get());
        let number = i as u32 + 1;
        if last < first {
            return Err(format!("GPT partition {number} ends before it starts"));
        }
        let start = first
            .checked_mul(sector)
            .ok_or_else(|| format!("GPT partition {number} starts past any device"))?;
        let len = (last - first + 1)
            .checked_mul(sector)
            .ok_or_else(|| format!("GPT partition {number} is larger than any device"))?;
        parts.push(partition(dev, number, start, len)?);
    }
    Ok(Some(Table {
        scheme: Scheme::Gpt,
        partitions: parts,
    }))
}

/// Where the filesystem to open lies in `dev`: `Ok(None)` for all of it,
/// `Ok(Some((start, len)))` for `offset` or partition `partition`. On a
/// whole-disk image without either, the error says which partitions hold
/// ext2/3/4 and how to choose one: `spell("partition")`/`spell("offset")`
/// give the program's own spelling of those options (`-o partition=N`).
pub fn locate<D: BlockDevice + ?Sized>(
    dev: &D,
    offset: Option<u64>,
    partition: Option<u32>,
    spell: fn(&str) -> String,
) -> Result<Option<(u64, u64)>, String> {
    match (offset, partition) {
        (Some(_), Some(_)) => Err(format!(
            "give {} or {}, not both",
            spell("offset"),
            spell("partition")
        )),
        (Some(off), None) => {
            if off >= dev.size() {
                return Err(format!(
                    "offset {off} is past the end of the image ({} bytes)",
                    dev.size()
                ));
            }
            Ok(Some((off, dev.size() - off)))
        }
        (None, Some(n)) => {
            let t = read_table(dev)?.ok_or("no MBR or GPT partition table")?;
            let p =
                t.partitions.iter().find(|p| p.number == n).ok_or_else(|| {
                    format!("no partition {n} in the {} table{}", t.scheme, list(&t))
                })?;
            if !p.ext {
                return Err(format!(
                    "partition {n} holds no ext2/ext3/ext4 filesystem{}",
                    list(&t)
                ));
            }
            Ok(Some((p.start, p.len)))
        }
        (None, None) => {
            if has_ext_magic(dev, 0) {
                return Ok(None);
            }
            match read_table(dev) {
                Ok(Some(t)) => Err(format!(
                    "a whole-disk image with an {} partition table{}; choose one with {} (or {})",
                    t.scheme,
                    list(&t),
                    spell("partition"),
                    spell("offset")
                )),
                // Not a disk image: the filesystem's own check says what
                // is wrong with it.
                _ => Ok(None),
            }
        }
    }
}

/// ": ext2/3/4 in partition 1 (8 MiB at byte 1048576), ..." or ": none
/// of its N partitions holds ext2/3/4".
fn list(t: &Table) -> String {
    let ext: Vec<String> = t
        .partitions
        .iter()
        .filter(|p| p.ext)
        .map(|p| format!("{} ({} at byte {})", p.number, human(p.len), p.start))
        .collect();
    if ext.is_empty() {
        format!(
            ": none of its {} partitions holds ext2/ext3/ext4",
            t.partitions.len()
        )
    } else {
        format!(": ext2/ext3/ext4 in partition {}", ext.join(", "))
    }
}

/// A size in binary units, one decimal below 10 (no floats: `no_std`).
pub fn human(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut u = 0;
    while u + 1 < UNITS.len() && n >= 1024u64 << (10 * u) {
        u += 1;
    }
    if u == 0 {
        return format!("{n} B");
    }
    let tenths = (u128::from(n) * 10) >> (10 * u);
    if tenths >= 100 || tenths % 10 == 0 {
        format!("{} {}", tenths / 10, UNITS[u])
    } else {
        format!("{}.{} {}", tenths / 10, tenths % 10, UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::MemDevice;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layouts() {
        assert_eq!(size_of::<MbrEntry>(), 16);
        assert_eq!(size_of::<Mbr>(), 512);
        assert_eq!(offset_of!(Mbr, entries), 446);
        assert_eq!(offset_of!(MbrEntry, kind), 4);
        assert_eq!(offset_of!(MbrEntry, lba_start), 8);
        assert_eq!(size_of::<GptHeader>(), 92);
        assert_eq!(offset_of!(GptHeader, header_crc32), 16);
        assert_eq!(offset_of!(GptHeader, entries_lba), 72);
        assert_eq!(offset_of!(GptHeader, entry_count), 80);
        assert_eq!(offset_of!(GptHeader, entries_crc32), 88);
        assert_eq!(size_of::<GptEntry>(), 128);
        assert_eq!(offset_of!(GptEntry, first_lba), 32);
    }

    fn mbr_with(entries: &[(u8, u32, u32)], size: usize) -> MemDevice {
        let mut d = vec![0u8; size];
        for (i, &(kind, lba, n)) in entries.iter().enumerate() {
            let e = 446 + 16 * i;
            d[e + 4] = kind;
            d[e + 8..e + 12].copy_from_slice(&lba.to_le_bytes());
            d[e + 12..e + 16].copy_from_slice(&n.to_le_bytes());
        }
        d[510] = 0x55;
        d[511] = 0xaa;
        MemDevice::from_vec(d)
    }

    #[test]
    fn hostile_tables_are_errors_not_panics() {
        // A partition past the end.
        let d = mbr_with(&[(0x83, 2048, 1 << 30)], 1 << 20);
        assert!(read_table(&d).unwrap_err().contains("past the end"));
        // An extended partition whose chain points at itself.
        let mut d = mbr_with(&[(0x05, 1, 100)], 1 << 16).into_vec();
        let e = 512 + 446 + 16;
        d[512 + 510] = 0x55;
        d[512 + 511] = 0xaa;
        d[e + 4] = 0x05;
        d[e + 8..e + 12].copy_from_slice(&0u32.to_le_bytes());
        d[e + 12..e + 16].copy_from_slice(&1u32.to_le_bytes());
        let d = MemDevice::from_vec(d);
        assert!(read_table(&d).unwrap_err().contains("loops"));
        // A protective MBR without a GPT.
        let d = mbr_with(&[(0xee, 1, 100)], 1 << 16);
        assert!(read_table(&d).unwrap_err().contains("no valid GPT"));
        // No signature: no table, and locate leaves it to the superblock check.
        let d = MemDevice::from_vec(vec![0u8; 4096]);
        assert_eq!(read_table(&d).unwrap(), None);
        assert_eq!(locate(&d, None, None, |s| s.into()).unwrap(), None);
        assert!(locate(&d, Some(5000), None, |s| s.into()).is_err());
        assert!(locate(&d, Some(1), Some(1), |s| s.into())
            .unwrap_err()
            .contains("not both"));
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(8 << 20), "8 MiB");
        assert_eq!(human(15 << 30), "15 GiB");
    }
}
