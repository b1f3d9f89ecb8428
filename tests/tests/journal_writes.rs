//! The journal writer against crashes and against the real thing: see
//! `ext4_tests::crash_writes`.

use ext4_tests::crash_writes::{check_run, record, Oracles};
use ext4_tests::util::{require_e2fsprogs, require_kernel_ext4};
use ext4_tests::writes::{rw_options, Op, EXT4_DEFAULT};

fn fixed_ops() -> Vec<Op> {
    let mut ops = vec![];
    for i in 0..12u16 {
        ops.push(Op::Create {
            dir: (i % 3) as u8,
            name: i,
            pad: (i * 7) as u8,
            mode: 0o644,
        });
        ops.push(Op::Write {
            file: i,
            off: i as u32 * 1000,
            len: 3000 + i as u32 * 300,
            seed: i as u8,
        });
        if i % 4 == 3 {
            ops.push(Op::Commit);
        }
    }
    ops.push(Op::Unlink { file: 2 });
    ops.push(Op::Truncate { file: 3, size: 10 });
    ops.push(Op::Commit);
    ops.push(Op::Write {
        file: 5,
        off: 0,
        len: 200_000,
        seed: 77,
    });
    ops
}

#[test]
fn fixed_sequence_crashes() {
    if !require_e2fsprogs() {
        return;
    }
    let kernel = require_kernel_ext4();
    let run = record(&EXT4_DEFAULT, &fixed_ops(), true, &rw_options()).unwrap();
    let pts = run.crash_points(4, 1);
    let t = std::time::Instant::now();
    let n = check_run(&run, &pts, &|_| Oracles {
        engine: true,
        e2fsck: true,
        kernel,
    })
    .unwrap();
    eprintln!("{n} crash points in {:?}", t.elapsed());
}

/// An extent leaf freed by a truncate and its block reused for another
/// file's data: without a revoke record, replay would write the old leaf
/// over that data.
fn reuse_ops() -> Vec<Op> {
    let mut ops = vec![Op::Create {
        dir: 1,
        name: 1,
        pad: 0,
        mode: 0o644,
    }];
    // Pieces with holes between: one extent each, more than the inode's
    // four, so the tree gets a leaf block.
    for k in 0..8u32 {
        ops.push(Op::Write {
            file: 1,
            off: k * (64 << 10),
            len: 4096,
            seed: k as u8,
        });
    }
    ops.push(Op::Commit);
    ops.push(Op::Truncate { file: 1, size: 0 });
    ops.push(Op::Commit);
    for k in 0..4u16 {
        ops.push(Op::Create {
            dir: 1,
            name: 10 + k,
            pad: 0,
            mode: 0o600,
        });
        ops.push(Op::Write {
            file: 2 + k,
            off: 0,
            len: 200_000,
            seed: 100 + k as u8,
        });
    }
    ops.push(Op::Commit);
    ops
}

#[test]
fn freed_metadata_reused_as_data() {
    if !require_e2fsprogs() {
        return;
    }
    let kernel = require_kernel_ext4();
    let run = record(&EXT4_DEFAULT, &reuse_ops(), false, &rw_options()).unwrap();
    let pts = run.crash_points(0, 2);
    check_run(&run, &pts, &|_| Oracles {
        engine: true,
        e2fsck: true,
        kernel,
    })
    .unwrap();
}
