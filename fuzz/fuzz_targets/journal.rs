//! Journal recovery on hostile logs: the in-memory replay of `Volume::open`
//! (then a bounded walk of what it reads), `journal_info`, and `recover`
//! onto a copy under both policies (then the recovered copy opened and
//! walked). Inputs are images whose journal needs recovery; the mutator
//! damages the journal superblock and the live log (headers, tags, revoke
//! counts, commit blocks, repeated blocks), putting checksums right half
//! the time.
#![no_main]
use ext4_engine::journal::{self, Policy};
use ext4_engine::MemDevice;
use ext4_fuzz::walk::{self, Limits, REPLAY_BUDGET};
use libfuzzer_sys::fuzz_target;

libfuzzer_sys::fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    ext4_fuzz::mutate_journal_image(data, size, max_size, seed)
});

fuzz_target!(|data: &[u8]| {
    let lim = Limits {
        read_bytes: 4096,
        mappings: 64,
        check: false,
        ..Limits::default()
    };
    ext4_fuzz::both(data, |v| {
        let _ = v.journal_info(None).map(|j| j.map(|j| j.feature_names()));
        walk::walk(v, &lim);
    });
    for policy in [Policy::Kernel, Policy::E2fsck] {
        let dev = MemDevice::from_vec(data.to_vec());
        match journal::recover(&dev, None, policy, REPLAY_BUDGET) {
            Ok(r) => {
                let _ = format!("{r:?}");
            }
            Err(e) => {
                let _ = (format!("{e}"), e.errno());
            }
        }
        if let Some(v) = ext4_fuzz::open(&dev.into_vec(), false) {
            walk::walk(&v, &lim);
        }
    }
});
