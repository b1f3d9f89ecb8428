//! A structure-aware mutator for ext2/3/4 images: it finds the metadata of
//! the image in hand (superblock, group descriptors, inode tables, extent
//! blocks, directory blocks, hash-tree nodes, xattr blocks, indirect
//! blocks) with a cheap parse of its own, and damages those regions
//! rather than file data. The image keeps its size: offsets stay valid.
//!
//! Mutations are the kinds that make hostile images: flipped bits, fields
//! set to boundary values, pointers redirected at other metadata (which
//! makes trees point at themselves or at their ancestors), directory
//! entries redirected at ancestors (cycles), counts and lengths raised.

use std::vec::Vec;

/// What kind of metadata a region holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Super,
    GroupDescs,
    InodeTable,
    /// The 60-byte `i_block` of one in-use inode.
    IBlock,
    /// The in-inode xattr area of one inode.
    IBody,
    Extent,
    Dir,
    DxNode,
    Xattr,
    Indirect,
}

/// Which regions a target cares about most (weights per kind).
pub type Focus = &'static [(Kind, u32)];

#[derive(Clone, Copy, Debug)]
pub struct Region {
    pub kind: Kind,
    pub start: usize,
    pub len: usize,
    /// Block number of the region's block (for pointer redirection).
    pub block: u64,
}

pub fn le16(d: &[u8], o: usize) -> u64 {
    d.get(o..o + 2)
        .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]) as u64)
}
pub fn le32(d: &[u8], o: usize) -> u64 {
    d.get(o..o + 4)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64)
}

/// The project's generator, seeded by libFuzzer's seed.
pub use ext4_tests::rng::Rng;

/// Find the metadata regions of `d`. Never fails: a damaged image just
/// yields fewer regions (the superblock area is always one).
pub fn regions(d: &[u8]) -> Vec<Region> {
    let mut out = Vec::new();
    if d.len() < 2048 {
        out.push(Region {
            kind: Kind::Super,
            start: 0,
            len: d.len(),
            block: 0,
        });
        return out;
    }
    out.push(Region {
        kind: Kind::Super,
        start: 1024,
        len: 1024,
        block: 0,
    });
    let sb = &d[1024..2048];
    let log = le32(sb, 0x18).min(6);
    let bs = 1024usize << log;
    let nblocks = d.len() / bs;
    let first_data = le32(sb, 0x14);
    let bpg = le32(sb, 0x20).max(1);
    let ipg = le32(sb, 0x28);
    let isz = if le32(sb, 0x4C) == 0 {
        128
    } else {
        le16(sb, 0x58) as usize
    }
    .clamp(128, bs);
    let incompat = le32(sb, 0x60);
    let bit64 = incompat & 0x80 != 0;
    let dsz = if bit64 {
        (le16(sb, 0xFE) as usize).clamp(32, 1024)
    } else {
        32
    };
    let blocks = le32(sb, 0x04).min(nblocks as u64);
    let groups = (blocks.saturating_sub(first_data)).div_ceil(bpg).min(4096) as usize;
    let gdt_block = if bs == 1024 { 2 } else { 1 };
    let gdt_start = gdt_block * bs;
    let gdt_len = (groups * dsz).min(d.len().saturating_sub(gdt_start));
    if gdt_len > 0 {
        out.push(Region {
            kind: Kind::GroupDescs,
            start: gdt_start,
            len: gdt_len,
            block: gdt_block as u64,
        });
    }
    let mut itables = Vec::new();
    for g in 0..groups {
        let o = gdt_start + g * dsz;
        let mut it = le32(d, o + 8);
        if bit64 && dsz >= 64 {
            it |= le32(d, o + 0x28) << 32;
        }
        let start = (it as usize).saturating_mul(bs);
        let len = (ipg as usize).saturating_mul(isz);
        if it == 0 || start >= d.len() || len == 0 {
            continue;
        }
        let len = len.min(d.len() - start);
        itables.push((start, len));
        out.push(Region {
            kind: Kind::InodeTable,
            start,
            len,
            block: it,
        });
    }
    // In-use inodes: their i_block, their xattr area, and the indirect
    // blocks the non-extent ones name.
    let mut seen_inodes = 0;
    for &(start, len) in &itables {
        for i in 0..len / isz {
            let o = start + i * isz;
            let mode = le16(d, o);
            if mode == 0 || le16(d, o + 0x1A) == 0 {
                continue;
            }
            seen_inodes += 1;
            if seen_inodes > 2048 {
                break;
            }
            out.push(Region {
                kind: Kind::IBlock,
                start: o + 0x28,
                len: 60,
                block: (o / bs) as u64,
            });
            if isz > 128 {
                let extra = le16(d, o + 0x80) as usize;
                if 128 + extra < isz {
                    out.push(Region {
                        kind: Kind::IBody,
                        start: o + 128 + extra,
                        len: isz - 128 - extra,
                        block: (o / bs) as u64,
                    });
                }
            }
            let flags = le32(d, o + 0x20);
            if flags & 0x10080000 == 0 {
                for w in 12..15 {
                    let b = le32(d, o + 0x28 + w * 4) as usize;
                    if b != 0 && b < nblocks {
                        out.push(Region {
                            kind: Kind::Indirect,
                            start: b * bs,
                            len: bs,
                            block: b as u64,
                        });
                    }
                }
            }
            let acl = le32(d, o + 0x68) as usize;
            if acl != 0 && acl < nblocks {
                out.push(Region {
                    kind: Kind::Xattr,
                    start: acl * bs,
                    len: bs,
                    block: acl as u64,
                });
            }
        }
    }
    // Blocks recognised by their contents.
    for b in 1..nblocks {
        let o = b * bs;
        let blk = &d[o..o + bs];
        let kind = if le16(blk, 0) == 0xF30A {
            Some(Kind::Extent)
        } else if le32(blk, 0) == 0xEA02_0000 {
            Some(Kind::Xattr)
        } else if le32(blk, 0) == 0 && le16(blk, 4) as usize == bs && le16(blk, 8) != 0 {
            Some(Kind::DxNode)
        } else if looks_like_dir(blk) {
            // A root of a hash tree has its info after "." and "..".
            if blk.len() > 32 && blk[24 + 5] == 8 && le32(blk, 24) == 0 && le16(blk, 4) == 12 {
                Some(Kind::DxNode)
            } else {
                Some(Kind::Dir)
            }
        } else {
            None
        };
        if let Some(kind) = kind {
            out.push(Region {
                kind,
                start: o,
                len: bs,
                block: b as u64,
            });
        }
    }
    out
}

/// Whether a block's records chain exactly to its end, as a directory
/// block's do.
fn looks_like_dir(b: &[u8]) -> bool {
    let mut pos = 0usize;
    let mut n = 0;
    while pos + 8 <= b.len() {
        let rec = le16(b, pos + 4) as usize;
        let nl = b[pos + 6] as usize;
        if rec < 8 || !rec.is_multiple_of(4) || 8 + nl > rec || (le32(b, pos) != 0 && nl == 0) {
            return false;
        }
        pos += rec;
        n += 1;
    }
    pos == b.len() && n > 0 && le32(b, 0) != 0
}

const INTERESTING32: [u32; 14] = [
    0,
    1,
    2,
    11,
    0x7f,
    0xff,
    0x100,
    0x7fff,
    0x8000,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffe,
    0xffff_ffff,
];

/// Damage `data` (an image) in place, preferring the focus kinds. Returns
/// how many bytes changed hands (always `data.len()`: the size is kept).
pub fn mutate(data: &mut [u8], seed: u32, focus: Focus) -> usize {
    let mut rng = Rng::new(seed as u64);
    if data.is_empty() {
        return 0;
    }
    let regs = regions(data);
    let rounds = 1 + rng.index(3) + if rng.index(8) == 0 { rng.index(8) } else { 0 };
    for _ in 0..rounds {
        let r = pick(&regs, focus, &mut rng);
        mutate_region(data, &r, &regs, &mut rng);
    }
    data.len()
}

fn pick(regs: &[Region], focus: Focus, rng: &mut Rng) -> Region {
    // Weight each region by its kind's focus weight (1 for unfocused kinds).
    let w = |k: Kind| focus.iter().find(|(f, _)| *f == k).map_or(1, |(_, w)| *w) as u64;
    let total: u64 = regs.iter().map(|r| w(r.kind)).sum();
    let mut x = rng.next_u64() % total.max(1);
    for r in regs {
        let rw = w(r.kind);
        if x < rw {
            return *r;
        }
        x -= rw;
    }
    regs[0]
}

fn put32(data: &mut [u8], at: usize, v: u32) {
    if let Some(s) = data.get_mut(at..at + 4) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}
fn put16(data: &mut [u8], at: usize, v: u16) {
    if let Some(s) = data.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

fn mutate_region(data: &mut [u8], r: &Region, all: &[Region], rng: &mut Rng) {
    let len = r.len.min(data.len().saturating_sub(r.start));
    if len == 0 {
        return;
    }
    let base = r.start;
    // Header fields matter most: bias positions toward the region's start.
    let at = if rng.index(2) == 0 {
        base + rng.index(len.min(64))
    } else {
        base + rng.index(len)
    };
    let at4 = at & !3;
    let at2 = at & !1;
    match rng.index(10) {
        0 => data[at] ^= 1 << rng.index(8),
        1 => data[at] = rng.next_u64() as u8,
        2 => put32(data, at4, INTERESTING32[rng.index(INTERESTING32.len())]),
        3 => put16(
            data,
            at2,
            INTERESTING32[rng.index(INTERESTING32.len())] as u16,
        ),
        4 => {
            // Point a word at another metadata block (or this one): trees
            // that point at themselves, indirect blocks aimed at metadata.
            let t = all[rng.index(all.len())];
            let v = if rng.index(4) == 0 { r.block } else { t.block };
            put32(data, at4, v as u32);
        }
        5 => {
            // An inode number of a small, likely-directory inode (the root,
            // lost+found, the first files): makes directory cycles.
            put32(data, at4, [2u32, 11, 12, 13, 14, 15][rng.index(6)]);
        }
        6 => {
            // Add or subtract a little: off-by-one lengths and counts.
            let d = [1i32, -1, 4, -4, 8, 12, -12, 0x100][rng.index(8)];
            let v = (data[at2] as u16 | (data.get(at2 + 1).copied().unwrap_or(0) as u16) << 8)
                .wrapping_add(d as u16);
            put16(data, at2, v);
        }
        7 => {
            // Copy a chunk from another region of the same kind (mixes
            // valid-looking structure into new places).
            let same: Vec<&Region> = all.iter().filter(|x| x.kind == r.kind).collect();
            let src = same[rng.index(same.len())];
            let n = (4 << rng.index(5)).min(len).min(src.len);
            let so = src.start + rng.index(src.len - n + 1);
            let dof = base + rng.index(len - n + 1);
            if so + n <= data.len() && dof + n <= data.len() {
                data.copy_within(so..so + n, dof);
            }
        }
        8 => {
            // Zero or fill a short span.
            let n = (1 + rng.index(16)).min(base + len - at);
            let v = if rng.index(2) == 0 { 0 } else { 0xff };
            data[at..at + n].fill(v);
        }
        _ => {
            // Swap two words of the region (reorders keys and entries).
            let a = base + (rng.index(len) & !3);
            let b = base + (rng.index(len) & !3);
            if a + 4 <= data.len() && b + 4 <= data.len() {
                let (x, y) = (le32(data, a) as u32, le32(data, b) as u32);
                put32(data, a, y);
                put32(data, b, x);
            }
        }
    }
}
