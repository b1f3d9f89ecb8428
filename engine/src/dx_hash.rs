//! The hashes of ext4's hashed directory index (htree).
//!
//! A directory's `dx_root` names one of three algorithms (legacy, half-MD4,
//! TEA). Each comes in a "signed" and an "unsigned" flavour, differing only
//! in whether name bytes >= 0x80 are sign-extended before mixing (the
//! original code used `char`, whose signedness depends on the CPU). The
//! superblock's `s_flags` says which flavour the filesystem was made with;
//! [`HashVersion::with_unsigned`] applies it to the version read from
//! `dx_root`, as the kernel does.
//!
//! API:
//! - [`HashVersion`]: the six on-disk versions 0..=5 (SipHash, 6, is used only
//!   by encrypted+casefolded directories and is not implemented);
//! - [`dx_hash`]: `(major, minor)` of a name, major with bit 0 cleared and the
//!   end-of-directory value remapped, exactly what the kernel compares
//!   against index entries.

/// Hash algorithm of an htree directory, as stored in `dx_root.info.hash_version`
/// (or `s_def_hash_version`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashVersion {
    Legacy,
    HalfMd4,
    Tea,
    LegacyUnsigned,
    HalfMd4Unsigned,
    TeaUnsigned,
}

impl HashVersion {
    /// The version with on-disk number `v`; `None` for unknown numbers
    /// (including 6, SipHash).
    pub fn from_disk(v: u8) -> Option<Self> {
        Some(match v {
            0 => HashVersion::Legacy,
            1 => HashVersion::HalfMd4,
            2 => HashVersion::Tea,
            3 => HashVersion::LegacyUnsigned,
            4 => HashVersion::HalfMd4Unsigned,
            5 => HashVersion::TeaUnsigned,
            _ => return None,
        })
    }

    /// The on-disk number of this version.
    pub fn to_disk(self) -> u8 {
        match self {
            HashVersion::Legacy => 0,
            HashVersion::HalfMd4 => 1,
            HashVersion::Tea => 2,
            HashVersion::LegacyUnsigned => 3,
            HashVersion::HalfMd4Unsigned => 4,
            HashVersion::TeaUnsigned => 5,
        }
    }

    /// Applies the superblock's `EXT2_FLAGS_UNSIGNED_HASH`: a signed version
    /// read from `dx_root` becomes its unsigned twin when the filesystem says
    /// so. Versions already unsigned are left alone, and `unsigned == false`
    /// changes nothing (the kernel only ever adds 3 to versions 0..=2).
    pub fn with_unsigned(self, unsigned: bool) -> Self {
        if !unsigned {
            return self;
        }
        match self {
            HashVersion::Legacy => HashVersion::LegacyUnsigned,
            HashVersion::HalfMd4 => HashVersion::HalfMd4Unsigned,
            HashVersion::Tea => HashVersion::TeaUnsigned,
            other => other,
        }
    }

    fn is_unsigned(self) -> bool {
        matches!(
            self,
            HashVersion::LegacyUnsigned | HashVersion::HalfMd4Unsigned | HashVersion::TeaUnsigned
        )
    }
}

/// The kernel's end-of-directory marker for 32-bit hashes; `EOF << 1` is
/// never returned as a real major hash (readdir cookies use it).
const HTREE_EOF_32BIT: u32 = 0x7fff_ffff;

/// The seed used when `s_hash_seed` is all zero (MD4's initial state).
const DEFAULT_SEED: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// Hash of `name` under `version`, keyed by `seed` (`s_hash_seed` as four
/// little-endian u32s; all zero selects the default seed).
///
/// Returns `(major, minor)`. `major` has bit 0 cleared (the index uses it as
/// a collision flag) and `0xffff_fffe` is replaced by `0xffff_fffc`, as the
/// kernel does so that no name hashes to the end-of-directory position.
/// Legacy hashes have no minor hash and return 0 for it.
pub fn dx_hash(name: &[u8], version: HashVersion, seed: [u32; 4]) -> (u32, u32) {
    let (major, minor) = raw_hash(name, version, seed);
    (finish_major(major), minor)
}

/// Bit 0 cleared, then the reserved EOF value moved one step down.
fn finish_major(hash: u32) -> u32 {
    let hash = hash & !1;
    if hash == HTREE_EOF_32BIT << 1 {
        (HTREE_EOF_32BIT - 1) << 1
    } else {
        hash
    }
}

/// The hashes as e2fsprogs' `ext2fs_dirhash` computes them, before the
/// final masking (kept separate so tests can compare with debugfs, which does
/// not remap the EOF value).
fn raw_hash(name: &[u8], version: HashVersion, seed: [u32; 4]) -> (u32, u32) {
    let unsigned = version.is_unsigned();
    let mut buf = if seed == [0; 4] { DEFAULT_SEED } else { seed };
    match version {
        HashVersion::Legacy | HashVersion::LegacyUnsigned => (legacy(name, unsigned), 0),
        HashVersion::HalfMd4 | HashVersion::HalfMd4Unsigned => {
            // 32-byte chunks; an empty name leaves the seed untouched.
            for (i, chunk) in name.chunks(32).enumerate() {
                // The padding is derived from the bytes left from here on,
                // not from the chunk or the whole name.
                let left = name.len() - i * 32;
                let mut words = [0u32; 8];
                pack(chunk, left, unsigned, &mut words);
                half_md4(&mut buf, &words);
            }
            (buf[1], buf[2])
        }
        HashVersion::Tea | HashVersion::TeaUnsigned => {
            for (i, chunk) in name.chunks(16).enumerate() {
                let left = name.len() - i * 16;
                let mut words = [0u32; 4];
                pack(chunk, left, unsigned, &mut words);
                tea(&mut buf, &words);
            }
            (buf[0], buf[1])
        }
    }
}

/// A name byte widened the way the chosen flavour does it.
fn widen(b: u8, unsigned: bool) -> u32 {
    if unsigned {
        u32::from(b)
    } else {
        b as i8 as i32 as u32
    }
}

/// The legacy ("dx_hack") hash.
fn legacy(name: &[u8], unsigned: bool) -> u32 {
    let (mut h0, mut h1) = (0x12a3_fe2d_u32, 0x37ab_e8f9_u32);
    for &b in name {
        let mut h = h1.wrapping_add(h0 ^ widen(b, unsigned).wrapping_mul(7_152_373));
        if h & 0x8000_0000 != 0 {
            h = h.wrapping_sub(0x7fff_ffff);
        }
        h1 = h0;
        h0 = h;
    }
    h0 << 1
}

/// Packs up to `4 * words.len()` name bytes into words, first byte most
/// significant, on top of a pad pattern built from the remaining length
/// `left` (`left | left << 8`, doubled into the high half); unused words are
/// pure pad.
fn pack(chunk: &[u8], left: usize, unsigned: bool, words: &mut [u32]) {
    let l = left as u32;
    let mut pad = l | (l << 8);
    pad |= pad << 16;
    words.fill(pad);
    for (word, bytes) in words.iter_mut().zip(chunk.chunks(4)) {
        let mut val = pad;
        for &b in bytes {
            val = widen(b, unsigned).wrapping_add(val << 8);
        }
        *word = val;
    }
}

/// Davies-Meyer over 16 rounds of TEA, updating the first two state words.
fn tea(buf: &mut [u32; 4], input: &[u32; 4]) {
    const DELTA: u32 = 0x9e37_79b9;
    let (mut b0, mut b1) = (buf[0], buf[1]);
    let [a, b, c, d] = *input;
    let mut sum = 0u32;
    for _ in 0..16 {
        sum = sum.wrapping_add(DELTA);
        b0 = b0.wrapping_add(
            (b1 << 4).wrapping_add(a) ^ b1.wrapping_add(sum) ^ (b1 >> 5).wrapping_add(b),
        );
        b1 = b1.wrapping_add(
            (b0 << 4).wrapping_add(c) ^ b0.wrapping_add(sum) ^ (b0 >> 5).wrapping_add(d),
        );
    }
    buf[0] = buf[0].wrapping_add(b0);
    buf[1] = buf[1].wrapping_add(b1);
}

/// The reduced MD4 compression (three rounds of eight steps).
fn half_md4(buf: &mut [u32; 4], x: &[u32; 8]) {
    const K2: u32 = 0x5a82_7999;
    const K3: u32 = 0x6ed9_eba1;
    let f = |x: u32, y: u32, z: u32| z ^ (x & (y ^ z));
    let g = |x: u32, y: u32, z: u32| (x & y).wrapping_add((x ^ y) & z);
    let h = |x: u32, y: u32, z: u32| x ^ y ^ z;
    let [mut a, mut b, mut c, mut d] = *buf;

    // Each round: the step function, the word order, the rotations.
    type Step = fn(u32, u32, u32) -> u32;
    let rounds: [(Step, u32, [usize; 8], [u32; 4]); 3] = [
        (f, 0, [0, 1, 2, 3, 4, 5, 6, 7], [3, 7, 11, 19]),
        (g, K2, [1, 3, 5, 7, 0, 2, 4, 6], [3, 5, 9, 13]),
        (h, K3, [3, 7, 2, 6, 1, 5, 0, 4], [3, 9, 11, 15]),
    ];
    for (func, k, order, rot) in rounds {
        for (i, &w) in order.iter().enumerate() {
            let add = x[w].wrapping_add(k);
            // The registers rotate roles a, d, c, b from step to step.
            match i % 4 {
                0 => {
                    a = a
                        .wrapping_add(func(b, c, d))
                        .wrapping_add(add)
                        .rotate_left(rot[0])
                }
                1 => {
                    d = d
                        .wrapping_add(func(a, b, c))
                        .wrapping_add(add)
                        .rotate_left(rot[1])
                }
                2 => {
                    c = c
                        .wrapping_add(func(d, a, b))
                        .wrapping_add(add)
                        .rotate_left(rot[2])
                }
                _ => {
                    b = b
                        .wrapping_add(func(c, d, a))
                        .wrapping_add(add)
                        .rotate_left(rot[3])
                }
            }
        }
    }
    buf[0] = buf[0].wrapping_add(a);
    buf[1] = buf[1].wrapping_add(b);
    buf[2] = buf[2].wrapping_add(c);
    buf[3] = buf[3].wrapping_add(d);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ext4_tests::oracle::debugfs_raw_script;
    use ext4_tests::rng::Rng;
    use ext4_tests::util::require_e2fsprogs;
    use std::string::String;
    use std::vec::Vec;
    use std::{format, vec};

    /// Bytes debugfs's command parser passes through untouched: no NUL, no
    /// whitespace, no quotes or backslashes; no leading '-' (getopt).
    fn random_name(rng: &mut Rng, len: usize) -> Vec<u8> {
        let mut name = Vec::with_capacity(len);
        while name.len() < len {
            let b = match rng.below(3) {
                0 => 0x80 + rng.below(0x80) as u8,
                _ => 0x21 + rng.below(0x5e) as u8,
            };
            if b == b'"' || b == b'\\' || b == b'\'' || (name.is_empty() && b == b'-') {
                continue;
            }
            name.push(b);
        }
        name
    }

    fn uuid_of(seed: [u32; 4]) -> String {
        let mut b = [0u8; 16];
        for (i, w) in seed.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
        }
        let h: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            h[0..4].concat(),
            h[4..6].concat(),
            h[6..8].concat(),
            h[8..10].concat(),
            h[10..16].concat()
        )
    }

    fn parse_hex(s: &[u8]) -> u32 {
        let s = std::str::from_utf8(s).unwrap();
        u32::from_str_radix(s.trim_start_matches("0x"), 16).unwrap()
    }

    /// Hashes many random names with every algorithm and several seeds, in
    /// one debugfs run, and compares with ours.
    #[test]
    fn matches_debugfs_dx_hash() {
        if !require_e2fsprogs() {
            return;
        }
        let mut rng = Rng::new(0x005e_ed0f_d1c7);
        let mut seeds = vec![[0u32; 4], [1, 0, 0, 0]];
        for _ in 0..3 {
            seeds.push([
                rng.next_u64() as u32,
                rng.next_u64() as u32,
                rng.next_u64() as u32,
                rng.next_u64() as u32,
            ]);
        }
        let mut names: Vec<Vec<u8>> = (1..=255).map(|len| random_name(&mut rng, len)).collect();
        for _ in 0..200 {
            let len = 1 + rng.below(40) as usize;
            names.push(random_name(&mut rng, len));
        }

        let mut cmds = Vec::new();
        let mut expected = Vec::new();
        for seed in &seeds {
            for v in 0..=5u8 {
                let version = HashVersion::from_disk(v).unwrap();
                for name in &names {
                    cmds.extend_from_slice(
                        format!("dx_hash -h {v} -s {} ", uuid_of(*seed)).as_bytes(),
                    );
                    cmds.extend_from_slice(name);
                    cmds.push(b'\n');
                    expected.push((name.clone(), version, *seed, raw_hash(name, version, *seed)));
                }
            }
        }
        let stdout = debugfs_raw_script(&cmds);
        let got: Vec<&[u8]> = stdout
            .split(|&b| b == b'\n')
            .filter(|l| l.starts_with(b"Hash of "))
            .collect();
        assert_eq!(
            got.len(),
            expected.len(),
            "debugfs answered a different number of lines"
        );
        let mut signed_unsigned_differ = 0;
        for (line, (name, version, seed, ours)) in got.iter().zip(&expected) {
            // "Hash of NAME is 0xMAJOR (minor 0xMINOR)"; NAME may hold anything.
            let marker = b" is 0x";
            let at = line
                .windows(marker.len())
                .rposition(|w| w == marker)
                .unwrap();
            assert_eq!(&line[8..at], &name[..], "debugfs mangled the name");
            let rest = &line[at + 4..];
            let sp = rest.iter().position(|&b| b == b' ').unwrap();
            let major = parse_hex(&rest[..sp]);
            let minor = parse_hex(&rest[sp + 8..rest.len() - 1]);
            assert_eq!(
                (major, minor),
                (ours.0 & !1, ours.1),
                "{version:?} seed {seed:x?} name {name:x?}"
            );
            let public = dx_hash(name, *version, *seed);
            assert_eq!(public, (finish_major(major), minor));
            if !version.is_unsigned() {
                let u = raw_hash(name, version.with_unsigned(true), *seed);
                if u != *ours {
                    signed_unsigned_differ += 1;
                }
            }
        }
        // The oracle run must really tell the two flavours apart.
        assert!(signed_unsigned_differ > 1000, "{signed_unsigned_differ}");
    }

    #[test]
    fn eof_hash_is_remapped() {
        assert_eq!(finish_major(0xffff_ffff), 0xffff_fffc);
        assert_eq!(finish_major(0xffff_fffe), 0xffff_fffc);
        assert_eq!(finish_major(0xffff_fffd), 0xffff_fffc);
        assert_eq!(finish_major(0x1234_5679), 0x1234_5678);
    }

    #[test]
    fn versions_round_trip() {
        for v in 0..=5u8 {
            let h = HashVersion::from_disk(v).unwrap();
            assert_eq!(h.to_disk(), v);
            let u = h.with_unsigned(true);
            assert_eq!(u.to_disk(), if v <= 2 { v + 3 } else { v });
            assert_eq!(h.with_unsigned(false), h);
        }
        assert_eq!(HashVersion::from_disk(6), None);
        assert_eq!(HashVersion::from_disk(255), None);
    }

    #[test]
    fn empty_name_does_not_panic() {
        for v in 0..=5u8 {
            let _ = dx_hash(b"", HashVersion::from_disk(v).unwrap(), [0; 4]);
        }
    }
}
