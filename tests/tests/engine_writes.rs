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
