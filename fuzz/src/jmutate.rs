//! A journal-aware mutator: it finds the journal of an image (inode 8's
//! first extent, by a cheap parse of its own) and damages what recovery
//! reads — the journal superblock's start, sequence, geometry and
//! features; the headers, tags, revoke counts and commit blocks of the
//! live log; whole blocks copied elsewhere in the log (cycles) — and,
//! half the time, puts the checksums right again (with the engine's own
//! format helpers), so that checksum-enabled logs are not all stopped by
//! their first checksum. The image keeps its size.

use ext4_engine::test_support::journal_format::{
    self as format, blocktype, feature, tag_flag, JournalSuperblock, HEADER_SIZE,
    REVOKE_HEADER_SIZE,
};
use zerocopy::FromBytes;

use crate::mutate::{le16, le32, Rng};

/// Where the journal of an image lies.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    pub block_size: usize,
    /// Byte offset of log block 0 (the journal superblock).
    pub base: usize,
    /// Log blocks present contiguously from `base`.
    pub blocks: usize,
}

fn be32(d: &[u8], o: usize) -> u32 {
    d.get(o..o + 4)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}
fn put_be32(d: &mut [u8], o: usize, v: u32) {
    if let Some(s) = d.get_mut(o..o + 4) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

/// The journal inode's first extent (the journal is contiguous in small
/// images), found without the engine.
pub fn geometry(d: &[u8]) -> Option<Geometry> {
    let sb = d.get(1024..2048)?;
    let bs = 1024usize << le32(sb, 0x18).min(6);
    if le32(sb, 0x5C) & 0x4 == 0 || le32(sb, 0xE0) != 8 {
        return None;
    }
    let isz = if le32(sb, 0x4C) == 0 {
        128
    } else {
        (le16(sb, 0x58) as usize).clamp(128, bs)
    };
    let bit64 = le32(sb, 0x60) & 0x80 != 0;
    let gdt = if bs == 1024 { 2 } else { 1 } * bs;
    let mut it = le32(d, gdt + 8);
    if bit64 && le16(sb, 0xFE) >= 64 {
        it |= le32(d, gdt + 0x28) << 32;
    }
    let ino = (it as usize).checked_mul(bs)?.checked_add(7 * isz)?;
    let iblock = d.get(ino + 0x28..ino + 0x28 + 60)?;
    // An extent leaf in i_block: header, then the first extent.
    if le16(iblock, 0) != 0xF30A || le16(iblock, 6) != 0 || le16(iblock, 2) == 0 {
        return None;
    }
    let len = (le16(iblock, 12 + 4) & 0x7FFF) as usize;
    let start = (le32(iblock, 12 + 8) | le16(iblock, 12 + 6) << 32) as usize;
    let base = start.checked_mul(bs)?;
    let blocks = len.min(d.len().saturating_sub(base) / bs);
    (blocks > 1).then_some(Geometry {
        block_size: bs,
        base,
        blocks,
    })
}

const INTERESTING: [u32; 10] = [
    0,
    1,
    2,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffe,
    0xffff_ffff,
    1023,
    1024,
    1025,
];

/// Damage the journal of `d` in place; `false` if it has none found.
pub fn mutate_journal(d: &mut [u8], seed: u64) -> bool {
    let Some(g) = geometry(d) else { return false };
    let mut rng = Rng::new(seed);
    let bs = g.block_size;
    let Ok(jsb) = JournalSuperblock::read_from_bytes(&d[g.base..g.base + format::SIZE]) else {
        return false;
    };
    let fmt = jsb.log_format();
    let start = (jsb.start.get() as usize).max(1);
    let rounds = 1 + rng.index(3);
    for _ in 0..rounds {
        // A live block near the start of the log (most of the action),
        // or anywhere in the journal.
        let n = if rng.index(4) == 0 {
            rng.index(g.blocks)
        } else {
            (start + rng.index(64)) % g.blocks
        };
        let o = g.base + n * bs;
        let pick = |rng: &mut Rng| -> u32 {
            if rng.index(2) == 0 {
                INTERESTING[rng.index(INTERESTING.len())]
            } else {
                rng.next_u64() as u32
            }
        };
        match rng.index(10) {
            // The journal superblock.
            0 | 1 => {
                let field = [0x0C, 0x10, 0x14, 0x18, 0x1C, 0x20, 0x24, 0x28, 0x54][rng.index(9)];
                let v = match field {
                    // Sequence: near the log's, or wrapping.
                    0x18 => jsb
                        .sequence
                        .get()
                        .wrapping_add(rng.index(5) as u32)
                        .wrapping_sub(2),
                    0x1C => (rng.index(g.blocks + 3)) as u32,
                    0x28 => jsb.feature_incompat.get() ^ (1 << rng.index(6)),
                    _ => pick(&mut rng),
                };
                put_be32(d, g.base + field, v);
            }
            // A header: magic, block type, sequence.
            2 => {
                let f = [0, 4, 8][rng.index(3)];
                let v = match f {
                    4 => 1 + rng.index(6) as u32,
                    8 => be32(d, o + 8)
                        .wrapping_add(rng.index(3) as u32)
                        .wrapping_sub(1),
                    _ => pick(&mut rng),
                };
                put_be32(d, o + f, v);
            }
            // A descriptor's tags: flags, block numbers, a tag count that
            // runs to the end of the block.
            3 | 4 => {
                if be32(d, o + 4) != blocktype::DESCRIPTOR {
                    continue;
                }
                let tb = fmt.tag_bytes();
                let t = o + HEADER_SIZE + rng.index(8) * tb;
                match rng.index(4) {
                    0 => {
                        let flags = tag_flag::LAST_TAG | tag_flag::SAME_UUID | tag_flag::ESCAPE;
                        if let Some(b) = d.get_mut(t + 6..t + 8) {
                            let f =
                                u16::from_be_bytes([b[0], b[1]]) ^ (flags & (1 << rng.index(4)));
                            b.copy_from_slice(&f.to_be_bytes());
                        }
                    }
                    1 => put_be32(d, t, pick(&mut rng)),
                    2 => put_be32(d, t + 8, pick(&mut rng)),
                    _ => {
                        // Every tag "SAME_UUID", none last.
                        let mut at = o + HEADER_SIZE;
                        while at + tb <= o + bs {
                            if let Some(b) = d.get_mut(at + 6..at + 8) {
                                b.copy_from_slice(&tag_flag::SAME_UUID.to_be_bytes());
                            }
                            at += tb;
                        }
                    }
                }
            }
            // A revoke block's count and records.
            5 => {
                if be32(d, o + 4) != blocktype::REVOKE {
                    continue;
                }
                if rng.index(2) == 0 {
                    put_be32(d, o + 12, pick(&mut rng));
                } else {
                    put_be32(d, o + REVOKE_HEADER_SIZE + 4 * rng.index(8), pick(&mut rng));
                }
            }
            // A commit block: its checksum fields and time.
            6 => {
                if be32(d, o + 4) != blocktype::COMMIT {
                    continue;
                }
                match rng.index(3) {
                    0 => d[o + 12] = rng.index(5) as u8,
                    1 => put_be32(d, o + 16, pick(&mut rng)),
                    _ => put_be32(d, o + 52, pick(&mut rng)),
                }
            }
            // A block copied over another: a log that repeats itself.
            7 => {
                let m = (start + rng.index(64)) % g.blocks;
                let src = g.base + m * bs;
                if m != n && m != 0 && n != 0 {
                    d.copy_within(src..src + bs, o);
                }
            }
            // Bits flipped anywhere in the block.
            _ => {
                for _ in 0..1 + rng.index(4) {
                    let i = o + rng.index(bs);
                    d[i] ^= 1 << rng.index(8);
                }
            }
        }
        // Put the checksums right again, half the time.
        if rng.index(2) == 0 && fmt.csum_v2_or_v3() && n != 0 {
            let blk = &mut d[o..o + bs];
            match be32(blk, 4) {
                blocktype::DESCRIPTOR | blocktype::REVOKE => fmt.set_tail(blk),
                blocktype::COMMIT => fmt.set_commit_checksum(blk),
                _ => {}
            }
        }
    }
    // The journal superblock's own checksum, half the time.
    if rng.index(2) == 0 {
        if let Ok(mut j) = JournalSuperblock::read_from_bytes(&d[g.base..g.base + format::SIZE]) {
            if j.incompat() & (feature::INCOMPAT_CSUM_V2 | feature::INCOMPAT_CSUM_V3) != 0 {
                j.checksum = 0.into();
                let raw: [u8; format::SIZE] = zerocopy::IntoBytes::as_bytes(&j)
                    .try_into()
                    .unwrap_or([0; format::SIZE]);
                let c = format::checksum(&raw);
                put_be32(d, g.base + format::CHECKSUM_OFFSET, c);
            }
        }
    }
    true
}
