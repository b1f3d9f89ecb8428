//! Shared pieces of the fuzz targets: opening an input as a volume (with
//! and without checksum enforcement), the structure-aware mutator, and the
//! bounded whole-volume walk (also used by `engine/tests/hostile.rs`).

pub mod jmutate;
pub mod mutate;
pub mod walk;

use ext4_engine::{InodeNo, MemDevice, Volume};

use walk::options;

pub fn open(data: &[u8], ignore_checksums: bool) -> Option<Volume<MemDevice>> {
    match Volume::open(
        MemDevice::from_vec(data.to_vec()),
        &options(ignore_checksums),
    ) {
        Ok(v) => Some(v),
        Err(e) => {
            // Every refusal formats and maps to an errno.
            let _ = format!("{e}");
            let _ = e.errno();
            None
        }
    }
}

/// Run `f` on the volume opened with checksums enforced, then ignored (so
/// the parsers behind the checksums see the damage too). With checksums
/// enforced most damage to a `metadata_csum` image stops at the checksum.
pub fn both(data: &[u8], mut f: impl FnMut(&Volume<MemDevice>)) {
    if let Some(v) = open(data, false) {
        f(&v);
    }
    if let Some(v) = open(data, true) {
        f(&v);
    }
}

/// Inode numbers worth visiting one by one (bounded).
pub fn inode_numbers(vol: &Volume<MemDevice>) -> impl Iterator<Item = InodeNo> {
    (1..=vol.sb().inodes_count.min(1024)).map(InodeNo)
}

/// The custom mutator: mostly structure-aware damage to metadata, sometimes
/// libFuzzer's own byte mutations on a small window (kept in place so the
/// image keeps its layout). Inputs too small to be images get libFuzzer's
/// mutations alone.
pub fn mutate_image(
    data: &mut [u8],
    size: usize,
    max_size: usize,
    seed: u32,
    focus: mutate::Focus,
) -> usize {
    if size < 4096 {
        return libfuzzer_sys::fuzzer_mutate(data, size, max_size);
    }
    let mut rng = mutate::Rng::new(seed as u64 ^ 0xabcdef);
    if rng.index(8) == 0 {
        let regs = mutate::regions(&data[..size]);
        let r = regs[rng.index(regs.len())];
        let w = 64.min(r.len).min(size.saturating_sub(r.start));
        if w > 0 {
            let off = r.start + rng.index(r.len.min(size - r.start) - w + 1);
            let mut win = data[off..off + w].to_vec();
            let n = libfuzzer_sys::fuzzer_mutate(&mut win, w, w);
            data[off..off + n.min(w)].copy_from_slice(&win[..n.min(w)]);
        }
        return size;
    }
    mutate::mutate(&mut data[..size], seed, focus)
}

/// The journal target's mutator: journal-aware damage
/// ([`jmutate::mutate_journal`]) most of the time, libFuzzer's own byte
/// mutations on a small window otherwise (or when no journal is found).
pub fn mutate_journal_image(data: &mut [u8], size: usize, max_size: usize, seed: u32) -> usize {
    if size < 4096 {
        return libfuzzer_sys::fuzzer_mutate(data, size, max_size);
    }
    let mut rng = mutate::Rng::new(seed as u64 ^ 0x10_6a11);
    if rng.below(8) != 0 && jmutate::mutate_journal(&mut data[..size], seed as u64) {
        return size;
    }
    mutate_image(data, size, max_size, seed, &[(mutate::Kind::Super, 1)])
}

#[macro_export]
macro_rules! image_mutator {
    ($focus:expr) => {
        libfuzzer_sys::fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
            $crate::mutate_image(data, size, max_size, seed, $focus)
        });
    };
}
