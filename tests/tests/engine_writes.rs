//! The engine's write path (create, write, truncate, unlink, setattr)
//! against e2fsck -fn, the kernel's ext4 and the engine's own reader: fixed
//! sequences first, then random ones (proptest) on every profile of the
//! feature matrix. See `ext4_tests::writes`.

use ext4_tests::util::{require_e2fsprogs, require_kernel_ext4};
use ext4_tests::writes::{run_sequence, Op, EXT4_1K, EXT4_DEFAULT, EXT4_NO_CSUM, EXT4_128, EXT4_SMALL};

fn basic_ops() -> Vec<Op> {
    let mut ops = vec![];
    for i in 0..40u16 {
        ops.push(Op::Create { dir: (i % 3) as u8, name: i, pad: (i * 7) as u8, mode: 0o644 });
    }
    for i in 0..40u16 {
        ops.push(Op::Write { file: i, off: i as u32 * 1000, len: 5000 + i as u32 * 300, seed: i as u8 });
    }
    ops.push(Op::Write { file: 3, off: 0, len: 3 << 20, seed: 9 });
    ops.push(Op::Truncate { file: 3, size: 100_000 });
    ops.push(Op::Truncate { file: 4, size: 1 << 20 });
    ops.push(Op::Chmod { file: 5, mode: 0o4755 });
    ops.push(Op::Chown { file: 6, uid: 3, gid: 4 });
    ops.push(Op::Utimes { file: 7, atime: -5, mtime: 2_000_000_000, nsec: 999_999_999 });
    ops.push(Op::Commit);
    for i in 0..10u16 {
        ops.push(Op::Unlink { file: i * 3 });
    }
    ops
}

#[test]
fn fixed_sequence_on_every_profile() {
    if !require_e2fsprogs() {
        return;
    }
    let kernel = require_kernel_ext4();
    for p in [EXT4_DEFAULT, EXT4_1K, EXT4_NO_CSUM, EXT4_128, EXT4_SMALL] {
        if let Err(e) = run_sequence(&p, &basic_ops(), kernel) {
            panic!("{}: {e}", p.name);
        }
    }
}

// ------------------------------------------------------------ random sequences

use proptest::prelude::*;

fn op() -> impl Strategy<Value = Op> {
    let len = prop_oneof![8 => 0u32..20_000, 2 => 0u32..(2 << 20)];
    let off = prop_oneof![8 => 0u32..(1 << 20), 1 => 0u32..(64 << 20)];
    prop_oneof![
        4 => (0u8..3, 0u16..64, any::<u8>(), 0u16..0o10000)
            .prop_map(|(dir, name, pad, mode)| Op::Create { dir, name, pad, mode }),
        5 => (any::<u16>(), off, len, any::<u8>())
            .prop_map(|(file, off, len, seed)| Op::Write { file, off, len, seed }),
        1 => (any::<u16>(), 0u32..(3 << 20)).prop_map(|(file, size)| Op::Truncate { file, size }),
        1 => any::<u16>().prop_map(|file| Op::Unlink { file }),
        1 => (any::<u16>(), 0u16..0o10000).prop_map(|(file, mode)| Op::Chmod { file, mode }),
        1 => (any::<u16>(), 0u16..100, 0u16..100).prop_map(|(file, uid, gid)| Op::Chown { file, uid, gid }),
        1 => (any::<u16>(), any::<i32>(), any::<i32>(), 0u32..1_000_000_000)
            .prop_map(|(file, atime, mtime, nsec)| Op::Utimes { file, atime, mtime, nsec }),
        1 => Just(Op::Commit),
    ]
}

/// Cases per profile: `EXT4_WRITE_CASES` (the soak script raises it).
fn cases() -> u32 {
    std::env::var("EXT4_WRITE_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(6)
}

fn random(p: &ext4_tests::writes::Profile, ops: &[Op]) -> Result<(), TestCaseError> {
    if !require_e2fsprogs() {
        return Ok(());
    }
    let kernel = require_kernel_ext4();
    run_sequence(p, ops, kernel).map_err(TestCaseError::fail)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_ext4(ops in prop::collection::vec(op(), 1..50)) { random(&EXT4_DEFAULT, &ops)?; }

    #[test]
    fn random_ext4_1k(ops in prop::collection::vec(op(), 1..50)) { random(&EXT4_1K, &ops)?; }

    #[test]
    fn random_ext4_uninit_bg(ops in prop::collection::vec(op(), 1..50)) { random(&EXT4_NO_CSUM, &ops)?; }

    #[test]
    fn random_ext4_128_inodes(ops in prop::collection::vec(op(), 1..50)) { random(&EXT4_128, &ops)?; }

    #[test]
    fn random_ext4_small(ops in prop::collection::vec(op(), 1..50)) { random(&EXT4_SMALL, &ops)?; }
}
