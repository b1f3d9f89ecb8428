//! The in-inode extended attribute region (the bytes after
//! `128 + i_extra_isize`), rewritten with one entry set or removed: every
//! other entry kept as it was, laid out as the kernel lays it out (magic,
//! entries from the start, a 4-byte terminator, values packed at the end,
//! each padded to 4 bytes; value offsets counted from the first entry), so
//! the region passes the same checks the reader applies (and `e2fsck`'s).
//! Used for inline data's `system.data`; general enough for any in-inode
//! attribute.

use alloc::vec;
use alloc::vec::Vec;

use crate::error::Result;
use crate::xattr::{self, XattrValue, XATTR_MAGIC};

const ENTRY_LEN: usize = 16;

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

fn entry_len(name: &[u8]) -> usize {
    pad4(ENTRY_LEN + name.len())
}

/// An entry, owned, as it will be written.
struct Owned {
    index: u8,
    name: Vec<u8>,
    /// The value bytes (inline), or an `ea_inode` reference with its size.
    value: Vec<u8>,
    inum: u32,
    size: u32,
    hash: u32,
}

fn entries(region: &[u8], ino: u32) -> Result<Vec<Owned>> {
    Ok(xattr::parse_ibody(region, ino)?
        .into_iter()
        .map(|e| match e.value {
            XattrValue::Inline(v) => Owned {
                index: e.index,
                name: e.name.to_vec(),
                value: v.to_vec(),
                inum: 0,
                size: v.len() as u32,
                hash: e.hash,
            },
            XattrValue::EaInode { ino, size } => Owned {
                index: e.index,
                name: e.name.to_vec(),
                value: Vec::new(),
                inum: ino,
                size,
                hash: e.hash,
            },
        })
        .collect())
}

/// Bytes the entries take in a region: magic, table, terminator, values.
fn used(list: &[Owned]) -> usize {
    4 + list.iter().map(|e| entry_len(&e.name)).sum::<usize>()
        + 4
        + list.iter().map(|e| pad4(e.value.len())).sum::<usize>()
}

/// The largest value attribute `index`+`name` could have in `region` (the
/// room the other entries leave, its own entry included), as the kernel's
/// `get_max_inline_xattr_value_size` counts it. 0 when even the entry
/// does not fit.
pub fn room(region: &[u8], ino: u32, index: u8, name: &[u8]) -> Result<usize> {
    let mut list = entries(region, ino)?;
    list.retain(|e| !(e.index == index && e.name == name));
    let need = used(&list) + entry_len(name);
    Ok(region.len().saturating_sub(need) & !3)
}

/// The value of attribute `index`+`name` in `region`, if present and
/// stored in the region.
pub fn get(region: &[u8], ino: u32, index: u8, name: &[u8]) -> Result<Option<Vec<u8>>> {
    Ok(entries(region, ino)?
        .into_iter()
        .find(|e| e.index == index && e.name == name && e.inum == 0)
        .map(|e| e.value))
}

/// `region` with attribute `index`+`name` set to `value` (`None`:
/// removed), every other entry kept. `None` when it does not fit (the
/// caller's region is unchanged).
pub fn set(
    region: &[u8],
    ino: u32,
    index: u8,
    name: &[u8],
    value: Option<&[u8]>,
) -> Result<Option<Vec<u8>>> {
    let mut list = entries(region, ino)?;
    let at = list.iter().position(|e| e.index == index && e.name == name);
    match (at, value) {
        (Some(i), None) => {
            list.remove(i);
        }
        (None, None) => return Ok(Some(region.to_vec())),
        (at, Some(v)) => {
            let e = Owned {
                index,
                name: name.to_vec(),
                value: v.to_vec(),
                inum: 0,
                size: v.len() as u32,
                hash: xattr::entry_hash(name, v),
            };
            match at {
                Some(i) => list[i] = e,
                None => list.push(e),
            }
        }
    }
    if used(&list) > region.len() {
        return Ok(None);
    }
    let mut out = vec![0u8; region.len()];
    if list.is_empty() {
        // No attributes: the kernel clears the magic too.
        return Ok(Some(out));
    }
    out[0..4].copy_from_slice(&XATTR_MAGIC.to_le_bytes());
    // Offsets count from the first entry (just after the magic).
    let base = 4;
    let mut table = base;
    let mut value_end = region.len();
    for e in &list {
        let voff = if e.inum == 0 && !e.value.is_empty() {
            value_end -= pad4(e.value.len());
            out[value_end..value_end + e.value.len()].copy_from_slice(&e.value);
            value_end - base
        } else {
            0
        };
        let t = &mut out[table..table + ENTRY_LEN];
        t[0] = e.name.len() as u8;
        t[1] = e.index;
        t[2..4].copy_from_slice(&(voff as u16).to_le_bytes());
        t[4..8].copy_from_slice(&e.inum.to_le_bytes());
        t[8..12].copy_from_slice(&e.size.to_le_bytes());
        t[12..16].copy_from_slice(&e.hash.to_le_bytes());
        out[table + ENTRY_LEN..table + ENTRY_LEN + e.name.len()].copy_from_slice(&e.name);
        table += entry_len(&e.name);
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_remove_round_trip() {
        let region = vec![0u8; 96];
        // 96 - magic 4 - entry 20 - terminator 4 = 68, as the kernel's
        // 128-byte inline limit in 256-byte inodes says.
        assert_eq!(room(&region, 12, 7, b"data").unwrap(), 68);
        let r = set(&region, 12, 7, b"data", Some(&[])).unwrap().unwrap();
        assert_eq!(get(&r, 12, 7, b"data").unwrap(), Some(vec![]));
        let r = set(&r, 12, 1, b"user.x", Some(b"hello")).unwrap().unwrap();
        let r = set(&r, 12, 7, b"data", Some(&[9u8; 30])).unwrap().unwrap();
        assert_eq!(get(&r, 12, 7, b"data").unwrap(), Some(vec![9u8; 30]));
        assert_eq!(get(&r, 12, 1, b"user.x").unwrap(), Some(b"hello".to_vec()));
        // The reader accepts what was written.
        let parsed = xattr::parse_ibody(&r, 12).unwrap();
        assert_eq!(parsed.len(), 2);
        assert!(set(&r, 12, 7, b"data", Some(&[1u8; 60])).unwrap().is_none());
        let r = set(&r, 12, 7, b"data", None).unwrap().unwrap();
        assert_eq!(get(&r, 12, 7, b"data").unwrap(), None);
        assert_eq!(get(&r, 12, 1, b"user.x").unwrap(), Some(b"hello".to_vec()));
    }
}
