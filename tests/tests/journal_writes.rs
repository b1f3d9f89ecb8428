//! The journal writer against crashes and against the real thing: see
//! `ext4_tests::crash_writes`.

use std::collections::BTreeSet;

use ext4_engine::{FileBlock, InodeNo, MemDevice, OpenOptions, Run, Volume};
use ext4_tests::crash_writes::{check_run, record, Oracles};
use ext4_tests::crashdev::{CrashPoint, Keep};
use ext4_tests::oracle::{debugfs, tempfile_path};
use ext4_tests::util::{require_e2fsprogs, require_kernel_ext4};
use ext4_tests::writes::{rw_options, write_sparse, Op, EXT4_DEFAULT};

fn fixed_ops() -> Vec<Op> {
    let mut ops = vec![];
    for i in 0..12u16 {
        ops.push(Op::Create {
            dir: (i % 3) as u8,
            name: i,
            pad: (i * 7) as u8,
            mode: 0o644,
            umask: false,
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
    ops.push(Op::Unlink { entry: 2 });
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
/// over that data (the test fails so with the revoke records turned off).
/// The files live in `lost+found` (directory index 1 of the model).
fn reuse_ops() -> Vec<Op> {
    let mut ops = vec![Op::Create {
        dir: 1,
        name: 1,
        pad: 0,
        mode: 0o644,
        umask: false,
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
            umask: false,
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

/// The device as `run` left it (dropping the volume closed it after).
fn end_image(run: &ext4_tests::crash_writes::Run) -> Vec<u8> {
    run.dev
        .crash_images(&[CrashPoint {
            at: run.limit,
            keep: Keep::All,
        }])
        .remove(0)
}

/// The blocks the live log of `img` revokes, as e2fsprogs' `logdump`
/// reads them.
fn revoked(img: &[u8]) -> BTreeSet<u64> {
    let f = tempfile_path("revoke-reuse").with_extension("img");
    write_sparse(&f, img).unwrap();
    let dump = debugfs(&f, "logdump -a").unwrap();
    let _ = std::fs::remove_file(&f);
    dump.lines()
        .filter_map(|l| l.trim().strip_prefix("Revoke FS block "))
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Every block the files (`dirs`: directories) of `img`, replayed in
/// memory, map.
fn mapped(img: Vec<u8>, dirs: bool) -> BTreeSet<u64> {
    use ext4_engine::FileType;
    let view = Volume::open(MemDevice::from_vec(img), &OpenOptions::default()).unwrap();
    let mut out = BTreeSet::new();
    let mut queue = vec![InodeNo::ROOT];
    while let Some(d) = queue.pop() {
        let mut children = Vec::new();
        view.readdir(d, 0, &mut |e| {
            if e.name != b"." && e.name != b".." {
                children.push(e.ino);
            }
            true
        })
        .unwrap();
        for ino in std::iter::once(d).chain(children) {
            let a = view.getattr(ino).unwrap();
            if a.kind == FileType::Directory && ino != d {
                queue.push(ino);
                continue;
            }
            if (a.kind == FileType::Directory) != dirs || a.kind == FileType::Symlink {
                continue;
            }
            let inode = view.inode(ino).unwrap();
            let end = a.size.div_ceil(view.sb().block_size as u64);
            let mut l = 0;
            while l < end {
                let r = view.map_block(&inode, FileBlock(l as u32)).unwrap();
                if let Run::Mapped { pblk, len, .. } = r {
                    out.extend(pblk.0..pblk.0 + len);
                }
                l += r.len().max(1);
            }
        }
    }
    out
}

/// Crash `run` at every flush and check the three recoveries.
fn crash_all(run: &ext4_tests::crash_writes::Run) {
    let kernel = require_kernel_ext4();
    let pts = run.crash_points(0, 2);
    check_run(run, &pts, &|_| Oracles {
        engine: true,
        e2fsck: true,
        kernel,
    })
    .unwrap();
}

#[test]
fn freed_metadata_reused_as_data() {
    if !require_e2fsprogs() {
        return;
    }
    let run = record(&EXT4_DEFAULT, &reuse_ops(), false, &rw_options()).unwrap();
    // The case happened: a block the journal revokes holds one of the new
    // files' data.
    let end = end_image(&run);
    let revoked = revoked(&end);
    let data = mapped(end, false);
    assert!(
        revoked.iter().any(|b| data.contains(b)),
        "no revoked block was reused for data: revoked {revoked:?}"
    );
    crash_all(&run);
}

/// An extent leaf freed with its file and its block reused as the leaf of
/// a file made the same way (logged again, by a later transaction than
/// its revoke record's): replay must write the new leaf, not skip it, nor
/// the old one.
#[test]
fn freed_metadata_reused_as_metadata() {
    if !require_e2fsprogs() {
        return;
    }
    let mut ops: Vec<Op> = reuse_ops().into_iter().take(10).collect();
    assert!(matches!(ops.last(), Some(Op::Commit)));
    // `lost+found/f1`, the second name in the model's order after `/seed`.
    ops.push(Op::Unlink { entry: 1 });
    ops.push(Op::Commit);
    let again: Vec<Op> = reuse_ops()
        .into_iter()
        .take(9)
        .map(|op| match op {
            Op::Create {
                dir,
                pad,
                mode,
                umask,
                ..
            } => Op::Create {
                dir,
                name: 2,
                pad,
                mode,
                umask,
            },
            Op::Write { off, len, seed, .. } => Op::Write {
                file: 1,
                off,
                len,
                seed: seed + 50,
            },
            op => op,
        })
        .collect();
    ops.extend(again);
    ops.push(Op::Commit);
    let run = record(&EXT4_DEFAULT, &ops, false, &rw_options()).unwrap();
    let end = end_image(&run);
    let revoked = revoked(&end);
    let view = Volume::open(MemDevice::from_vec(end), &OpenOptions::default()).unwrap();
    let lf = view.lookup_ino(InodeNo::ROOT, b"lost+found").unwrap();
    let f2 = view.inode(view.lookup_ino(lf, b"f2").unwrap()).unwrap();
    // The extent root in i_block: a depth-1 tree's index entries name the
    // leaves.
    let b = &f2.block;
    let le16 = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let le32 = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    assert_eq!(
        (le16(0), le16(6)),
        (0xF30A, 1),
        "a tree with one level of leaves"
    );
    let leaf: Vec<u64> = (0..le16(2) as usize)
        .map(|k| le32(12 + 12 * k + 4) as u64 | (le16(12 + 12 * k + 8) as u64) << 32)
        .collect();
    assert!(
        leaf.iter().any(|b| revoked.contains(b)),
        "the new leaf {leaf:?} is not the revoked block {revoked:?}"
    );
    crash_all(&run);
}

// ------------------------------------------------------------ random crashes

use ext4_tests::writes::strategy::op;
use ext4_tests::writes::{Profile, EXT3, EXT4_ORPHAN_FILE};
use proptest::prelude::*;

/// Sequences per profile: `EXT4_CRASH_CASES` (scripts/soak-crash.sh
/// raises it).
fn cases() -> u32 {
    std::env::var("EXT4_CRASH_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

/// Crash points checked per sequence: `EXT4_CRASH_POINTS` (the soak: all
/// of them, every flush and as many between).
fn max_points() -> usize {
    std::env::var("EXT4_CRASH_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
}

/// A random sequence (files, the namespace, xattrs, fsyncs) crashed at
/// flushes and between, each crash recovered by the engine, and in turn
/// by e2fsck and the kernel.
fn random_crashes(p: &Profile, ops: &[Op], seed: u64) -> Result<(), TestCaseError> {
    if !require_e2fsprogs() {
        return Ok(());
    }
    let run = record(p, ops, false, &rw_options()).map_err(TestCaseError::fail)?;
    let all = run.crash_points(ops.len() / 4 + 1, seed);
    let max = max_points().max(1);
    // An even spread of them, the last (everything written) included.
    let pts: Vec<_> = if all.len() <= max {
        all
    } else {
        (0..max)
            .map(|k| all[(k * (all.len() - 1)).div_ceil(max - 1).min(all.len() - 1)])
            .collect()
    };
    let kernel = require_kernel_ext4();
    check_run(&run, &pts, &|k| Oracles {
        engine: true,
        e2fsck: k % 2 == 0,
        kernel: kernel && k % 3 == 1,
    })
    .map(|_| ())
    .map_err(TestCaseError::fail)
}

fn crash_ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(prop_oneof![6 => op(), 1 => Just(Op::Commit)], 1..30)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_crashes_ext4(ops in crash_ops(), seed in any::<u64>()) {
        random_crashes(&EXT4_DEFAULT, &ops, seed)?;
    }

    #[test]
    fn random_crashes_ext3(ops in crash_ops(), seed in any::<u64>()) {
        random_crashes(&EXT3, &ops, seed)?;
    }

    #[test]
    fn random_crashes_orphan_file(ops in crash_ops(), seed in any::<u64>()) {
        random_crashes(&EXT4_ORPHAN_FILE, &ops, seed)?;
    }
}

/// A rename and a truncate lost together by a crash: the truncate's
/// zeroed tail (written with the data, before the commit, as the kernel's
/// ordered-mode writeback may write it) shows under the old name and
/// size. Found by `random_crashes_ext4`; the crash check judges a file's
/// bytes by its inode's states under any name.
#[test]
fn rename_and_truncate_lost_together() {
    if !require_e2fsprogs() {
        return;
    }
    let ops = vec![
        // `/seed` (the third name the model may rename, after d1 and d2).
        Op::Rename {
            entry: 2,
            dir: 0,
            name: 21,
            flags: 0,
        },
        Op::Truncate {
            file: 0,
            size: 2573,
        },
        Op::Commit,
    ];
    let run = record(&EXT4_DEFAULT, &ops, false, &rw_options()).unwrap();
    crash_all(&run);
}

/// A journal of the smallest size mke2fs makes (1,024 blocks of 1 KiB):
/// many small fsynced transactions make the log wrap around its end
/// several times, with checkpoints freeing room as it fills (a full
/// journal forces a checkpoint, never an error). Crashes spread over the
/// run are recovered by the engine, e2fsck and the kernel.
#[test]
fn small_journal_wraps_under_crashes() {
    use ext4_tests::writes::Profile;
    const SMALL_JOURNAL: Profile = Profile {
        name: "ext4-journal-1m",
        mkfs: &["-t", "ext4", "-b", "1024", "-J", "size=1"],
        size_mib: 32,
        tune: &[],
        debugfs: &[],
    };
    if !require_e2fsprogs() {
        return;
    }
    let kernel = require_kernel_ext4();
    let mut ops = Vec::new();
    for i in 0..300u16 {
        ops.push(Op::Create {
            dir: (i % 3) as u8,
            name: i,
            pad: (i % 50) as u8,
            mode: 0o644,
            umask: false,
        });
        ops.push(Op::Write {
            file: i,
            off: 0,
            len: 1500 + (i as u32 % 7) * 700,
            seed: i as u8,
        });
        ops.push(Op::Commit);
    }
    let run = record(&SMALL_JOURNAL, &ops, true, &rw_options()).unwrap();

    // Where the journal lives, and the order the run wrote its blocks in.
    let start = Volume::open(
        MemDevice::from_vec(
            run.dev
                .crash_images(&[CrashPoint {
                    at: 0,
                    keep: Keep::All,
                }])
                .remove(0),
        ),
        &OpenOptions::default(),
    )
    .unwrap();
    let bs = start.sb().block_size as u64;
    let jnl = start.inode(InodeNo(start.sb().journal_inum)).unwrap();
    let len = start
        .getattr(InodeNo(start.sb().journal_inum))
        .unwrap()
        .size
        / bs;
    let mut log_of = std::collections::BTreeMap::new();
    let mut l = 0;
    while l < len {
        let r = start.map_block(&jnl, FileBlock(l as u32)).unwrap();
        if let Run::Mapped { pblk, len: n, .. } = r {
            for k in 0..n {
                log_of.insert(pblk.0 + k, l + k);
            }
        }
        l += r.len().max(1);
    }
    let positions: Vec<u64> = run
        .dev
        .write_offsets()
        .iter()
        .filter_map(|o| log_of.get(&(o / bs)).copied())
        .filter(|&p| p != 0) // the journal superblock
        .collect();
    let wraps = positions
        .windows(2)
        .filter(|w| w[1] + len / 2 < w[0])
        .count();
    assert!(
        wraps >= 2,
        "the log wrapped {wraps} times over {len} blocks"
    );

    // Every 12th flush, plus the end and a few points between.
    let pts: Vec<CrashPoint> = run
        .crash_points(6, 3)
        .into_iter()
        .enumerate()
        .filter(|(k, p)| k % 12 == 0 || p.at == run.limit)
        .map(|(_, p)| p)
        .collect();
    let n = check_run(&run, &pts, &|_| Oracles {
        engine: true,
        e2fsck: true,
        kernel,
    })
    .unwrap();
    eprintln!("{wraps} wraps, {n} crash points");
}
