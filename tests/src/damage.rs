//! Random damage to valid on-disk regions, for tests that the engine's
//! parsers survive it: any answer but a panic, and whatever they return
//! stays inside the bytes they were given.

use ext4_engine::test_support::{full_name, parse_block, parse_ibody, XattrValue};
use ext4_engine::{InodeNo, PhysBlock};

use crate::rng::Rng;

/// Damage `rounds` copies of an xattr region (an xattr block when
/// `is_block`, else an in-inode area) at one to four bytes each, mostly
/// in the entry table and headers where offsets live, and parse each.
pub fn xattr_flips(region: &[u8], is_block: bool, rounds: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut buf = region.to_vec();
    for _ in 0..rounds {
        buf.copy_from_slice(region);
        let hot = buf.len().min(128);
        for _ in 0..1 + rng.below(4) {
            let r = rng.next_u64() as usize;
            let at = if r & 3 == 0 {
                r / 4 % buf.len()
            } else {
                r / 4 % hot
            };
            buf[at] = match rng.below(3) {
                0 => buf[at] ^ (1 << rng.below(8)),
                1 => rng.next_u64() as u8,
                _ => *rng.pick(&[0, 0xff, 0x80, 0x7f]),
            };
        }
        let r = if is_block {
            parse_block(&buf, PhysBlock(3))
        } else {
            parse_ibody(&buf, InodeNo(3))
        };
        match r {
            Ok(entries) => {
                for e in entries {
                    if let XattrValue::Inline(v) = e.value {
                        if !v.is_empty() {
                            let start = v.as_ptr() as usize - buf.as_ptr() as usize;
                            assert!(start + v.len() <= buf.len());
                        }
                    }
                    let _ = full_name(e.index, e.name);
                }
            }
            Err(e) => assert!(e.is_corruption()),
        }
    }
}
