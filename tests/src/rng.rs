//! The project's one deterministic PRNG (SplitMix64), for every test,
//! benchmark and fuzz mutator that wants repeatable randomness. The tree
//! generator must produce byte-identical trees on every run so cached
//! images stay valid; an own generator keeps that independent of any
//! crate's version changes.

#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`); the modulo bias is irrelevant here.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        self.next_u64() % n
    }

    /// Uniform in `0..n`, and 0 for an empty range (an index into a slice
    /// that may be empty).
    pub fn index(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            self.below(n as u64) as usize
        }
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        assert!(lo <= hi);
        let span = (hi as i128 - lo as i128 + 1) as u128;
        (lo as i128 + (self.next_u64() as u128 % span) as i128) as i64
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// The bytes of a data segment, regenerated from its seed on demand: byte
/// `pos` of the segment depends only on `(seed, pos / 8)`, so any sub-range
/// can be produced without producing what precedes it.
pub fn segment_bytes(seed: u64, start: u64, out: &mut [u8]) {
    let word = |w: u64| {
        Rng::new(seed ^ w.wrapping_mul(0x2545_f491_4f6c_dd1d))
            .next_u64()
            .to_le_bytes()
    };
    let mut pos = start;
    let mut k = 0;
    while k < out.len() {
        let bytes = word(pos / 8);
        let within = (pos % 8) as usize;
        let n = (8 - within).min(out.len() - k);
        out[k..k + n].copy_from_slice(&bytes[within..within + n]);
        k += n;
        pos += n as u64;
    }
}
