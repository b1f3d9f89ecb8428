//! The engine's write path (files, the namespace, xattrs and ACLs)
//! against e2fsck -fn, the kernel's ext4 and the engine's own reader: fixed
//! sequences first, then random ones (proptest) on every profile of the
//! feature matrix. See `ext4_tests::writes`.

use ext4_tests::util::{require_e2fsprogs, require_kernel_ext4};
use ext4_tests::writes::{
    run_sequence, Op, EXT2, EXT3, EXT4_128, EXT4_1K, EXT4_BIGALLOC_16K, EXT4_BIGALLOC_64K,
    EXT4_DEFAULT, EXT4_HTREE_LEGACY, EXT4_HTREE_TEA, EXT4_INLINE, EXT4_LARGE_DIR, EXT4_META_BG,
    EXT4_NO_CSUM, EXT4_NO_EXTENT, EXT4_ORPHAN_FILE, EXT4_SMALL, PROFILES,
};

fn basic_ops() -> Vec<Op> {
    let mut ops = vec![];
    for i in 0..40u16 {
        ops.push(Op::Create {
            dir: (i % 3) as u8,
            name: i,
            pad: (i * 7) as u8,
            mode: 0o644,
            umask: false,
        });
    }
    for i in 0..40u16 {
        ops.push(Op::Write {
            file: i,
            off: i as u32 * 1000,
            len: 5000 + i as u32 * 300,
            seed: i as u8,
        });
    }
    ops.push(Op::Write {
        file: 3,
        off: 0,
        len: 3 << 20,
        seed: 9,
    });
    ops.push(Op::Truncate {
        file: 3,
        size: 100_000,
    });
    ops.push(Op::Truncate {
        file: 4,
        size: 1 << 20,
    });
    ops.push(Op::Chmod {
        node: 5,
        mode: 0o4755,
    });
    ops.push(Op::Chown {
        node: 6,
        uid: 3,
        gid: 4,
    });
    ops.push(Op::Utimes {
        node: 7,
        atime: -5,
        mtime: 2_000_000_000,
        nsec: 999_999_999,
    });
    ops.push(Op::Commit);
    // fallocate in every mode the sequences use, on files 8..20.
    for (k, i) in (8..20u16).enumerate() {
        ops.push(Op::Fallocate {
            file: i,
            mode: k as u8,
            off: 1000 + k as u32 * 7000,
            len: 70_000,
            aligned: k % 2 == 0,
        });
    }
    for i in 0..10u16 {
        ops.push(Op::Unlink { entry: i * 3 });
    }
    ops
}

#[test]
fn fixed_sequence_on_every_profile() {
    if !require_e2fsprogs() {
        return;
    }
    let kernel = require_kernel_ext4();
    for p in PROFILES {
        if let Err(e) = run_sequence(p, &basic_ops(), kernel) {
            panic!("{}: {e}", p.name);
        }
    }
}

// ------------------------------------------------------------ random sequences

use ext4_tests::writes::strategy::{namespace_op, op};
use proptest::prelude::*;

/// Cases per profile: `EXT4_WRITE_CASES` (the soak script raises it).
fn cases() -> u32 {
    std::env::var("EXT4_WRITE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
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

    #[test]
    fn random_ext4_large_dir(ops in prop::collection::vec(op(), 1..50)) { random(&EXT4_LARGE_DIR, &ops)?; }

    #[test]
    fn random_ext4_orphan_file(ops in prop::collection::vec(op(), 1..50)) { random(&EXT4_ORPHAN_FILE, &ops)?; }

    #[test]
    fn random_htree_tea(ops in prop::collection::vec(prop_oneof![1 => op(), 1 => namespace_op()], 1..50)) {
        random(&EXT4_HTREE_TEA, &ops)?;
    }

    #[test]
    fn random_htree_legacy(ops in prop::collection::vec(prop_oneof![1 => op(), 1 => namespace_op()], 1..50)) {
        random(&EXT4_HTREE_LEGACY, &ops)?;
    }

    #[test]
    fn random_ext2(ops in prop::collection::vec(op(), 1..50)) { random(&EXT2, &ops)?; }

    #[test]
    fn random_ext3(ops in prop::collection::vec(op(), 1..50)) { random(&EXT3, &ops)?; }

    #[test]
    fn random_ext4_noextent(ops in prop::collection::vec(op(), 1..50)) { random(&EXT4_NO_EXTENT, &ops)?; }

    #[test]
    fn random_ext4_inline(ops in prop::collection::vec(op(), 1..50)) { random(&EXT4_INLINE, &ops)?; }

    #[test]
    fn random_ext4_bigalloc16k(ops in prop::collection::vec(op(), 1..50)) { random(&EXT4_BIGALLOC_16K, &ops)?; }

    #[test]
    fn random_ext4_bigalloc64k(ops in prop::collection::vec(op(), 1..50)) { random(&EXT4_BIGALLOC_64K, &ops)?; }

    #[test]
    fn random_ext4_meta_bg(ops in prop::collection::vec(op(), 1..50)) { random(&EXT4_META_BG, &ops)?; }
}

// ------------------------------------------------------------ full, failing

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ext4_engine::{BlockDevice, Cred, Error, InodeNo, IoError, MemDevice, Volume};
use ext4_tests::oracle::{tempfile_path, KernelMount};
use ext4_tests::writes::model::name_of;
use ext4_tests::writes::{
    apply, check_engine, check_fsck, check_kernel, clock, image, open_rw, rw_options, Model,
};

/// Fill the small filesystem until ENOSPC as an ordinary user (the root
/// reserve stays free), then as root (the reserve goes), free some, write
/// again: every step consistent.
#[test]
fn fill_until_enospc() {
    if !require_e2fsprogs() {
        return;
    }
    let (vol, dev) = open_rw(image(&EXT4_SMALL), &rw_options());
    let mut m = Model::load(&vol);
    let user = Cred::user(1000, 1000);
    let reserve = vol.sb().r_blocks_count;
    assert!(reserve > 0, "mke2fs reserves 5% by default");
    let mut k = 0u16;
    let chunk = vec![0x5au8; 256 << 10];
    let mut full = false;
    let mut step = 0;
    let mut tick = || {
        step += 1;
        step
    };
    let mut last = InodeNo::ROOT;
    while !full {
        let op = Op::Create {
            dir: (k % 3) as u8,
            name: k,
            pad: 0,
            mode: 0o600,
            umask: false,
        };
        let d = m.dir_at((k % 3) as u8);
        apply(&vol, &mut m, &op, tick()).unwrap();
        last = m.dirs[&d][&name_of(k, 0)];
        clock::set(tick());
        match vol.write(last, 0, &chunk, &user) {
            Ok(n) => {
                *m.data_mut(last) = chunk[..n].to_vec();
                let bs = m.geo.bs;
                let node = m.nodes.get_mut(&last).unwrap();
                node.note_written(0, n as u64, bs);
                node.mtime = clock::now();
                node.ctime = clock::now();
                full = n < chunk.len();
            }
            Err(Error::NoSpace) => full = true,
            Err(e) => panic!("write: {e}"),
        }
        k += 1;
    }
    // Only the reserve (and the extent reserve) is left for root.
    let free_user = vol.statfs().blocks_available;
    assert_eq!(free_user, 0, "an ordinary user got everything it may have");
    assert!(
        vol.statfs().blocks_free >= reserve,
        "the root reserve was kept back"
    );
    clock::set(tick());
    let len = m.data_mut(last).len();
    let got = vol.write(last, len as u64, &chunk, &Cred::ROOT).unwrap();
    assert!(got > 0, "root may use the reserve");
    m.data_mut(last).extend_from_slice(&chunk[..got]);
    let bs = m.geo.bs;
    let node = m.nodes.get_mut(&last).unwrap();
    node.note_written(len as u64, (len + got) as u64, bs);
    node.mtime = clock::now();
    node.ctime = clock::now();
    // Free a few files and write again.
    for _ in 0..3 {
        apply(&vol, &mut m, &Op::Unlink { entry: 1 }, tick()).unwrap();
    }
    apply(
        &vol,
        &mut m,
        &Op::Write {
            file: 2,
            off: 0,
            len: 100_000,
            seed: 3,
        },
        tick(),
    )
    .unwrap();
    vol.close().unwrap();
    drop(vol);
    let bytes = dev.snapshot();
    check_engine(bytes.clone(), &m).unwrap();
    let img = tempfile_path("writes-full").with_extension("img");
    std::fs::write(&img, &bytes).unwrap();
    check_fsck(&img).unwrap();
    if require_kernel_ext4() {
        check_kernel(&img, &m).unwrap();
    }
    let _ = std::fs::remove_file(&img);
}

/// A memory device that refuses writes (and flushes) once told to.
struct Failing {
    inner: MemDevice,
    fail: AtomicBool,
}

impl BlockDevice for Failing {
    fn read_at(&self, o: u64, b: &mut [u8]) -> Result<(), IoError> {
        self.inner.read_at(o, b)
    }
    fn write_at(&self, o: u64, b: &[u8]) -> Result<(), IoError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(IoError::EIO);
        }
        self.inner.write_at(o, b)
    }
    fn flush(&self) -> Result<(), IoError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(IoError::EIO);
        }
        Ok(())
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_only(&self) -> bool {
        false
    }
}

/// The device fails after a commit: the failing operations and commit
/// report errors, the volume turns read-only, and the device still holds
/// everything committed before (e2fsck clean, the engine reads the model
/// as it was at that commit).
#[test]
fn failing_device_loses_nothing_committed() {
    if !require_e2fsprogs() {
        return;
    }
    let dev = Arc::new(Failing {
        inner: MemDevice::from_vec(image(&EXT4_DEFAULT)),
        fail: AtomicBool::new(false),
    });
    let vol = Volume::open(dev.clone(), &rw_options()).unwrap();
    let mut m = Model::load(&vol);
    let mut step = 0;
    for i in 0..10u16 {
        step += 1;
        apply(
            &vol,
            &mut m,
            &Op::Create {
                dir: 1,
                name: i,
                pad: 3,
                mode: 0o640,
                umask: false,
            },
            step,
        )
        .unwrap();
        step += 1;
        apply(
            &vol,
            &mut m,
            &Op::Write {
                file: i + 1,
                off: 0,
                len: 30_000,
                seed: i as u8,
            },
            step,
        )
        .unwrap();
    }
    vol.commit().unwrap();
    let committed = m.clone();
    apply(
        &vol,
        &mut m,
        &Op::Create {
            dir: 2,
            name: 99,
            pad: 0,
            mode: 0o600,
            umask: false,
        },
        step + 1,
    )
    .unwrap();
    dev.fail.store(true, Ordering::SeqCst);
    let ino = m.dirs[&m.dir_at(2)][&name_of(99, 0)];
    let e = vol.write(ino, 0, &[1u8; 5000], &Cred::ROOT).unwrap_err();
    assert!(
        matches!(e, Error::Io(_)),
        "a failed data write is reported: {e}"
    );
    let e = vol.commit().unwrap_err();
    assert!(
        matches!(e, Error::Io(_)),
        "a failed commit is reported: {e}"
    );
    assert!(vol.read_only(), "the volume turned read-only");
    assert!(matches!(
        vol.create(InodeNo(2), b"late", 0o600, &Cred::ROOT),
        Err(Error::ReadOnly)
    ));
    assert!(vol.close().is_err(), "close reports the earlier failure");
    drop(vol);
    let bytes = dev.inner.snapshot();
    check_engine(bytes.clone(), &committed).unwrap();
    let img = tempfile_path("writes-failing").with_extension("img");
    std::fs::write(&img, &bytes).unwrap();
    // Not marked clean (the close could not write): e2fsck checks anyway.
    check_fsck(&img).unwrap();
    let _ = std::fs::remove_file(&img);
}

// ------------------------------------------------------------ with the kernel

/// The kernel writes an image (files, a hash-tree directory), the engine
/// changes it (creates in both kinds of directory, writes, truncates,
/// unlinks kernel files), the kernel reads it exactly as the engine does;
/// then the kernel writes more into it, and e2fsck -fn stays clean.
#[test]
fn both_directions_with_the_kernel() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    use ext4_tests::snapshot::{
        diff, engine_snapshot, format_diffs, host_snapshot, Compare, WalkOptions, ALL_FIELDS,
    };
    let img = tempfile_path("writes-kernel").with_extension("img");
    ext4_tests::kwimage::kw_mkfs(&img, 4096, "", "64M");
    {
        let m = KernelMount::mount(&img, false, "").unwrap();
        let r = m.path();
        std::fs::create_dir(r.join("h")).unwrap();
        for i in 0..400 {
            std::fs::write(
                r.join("h").join(format!("kernel-file-{i:04}")),
                vec![i as u8; i * 10],
            )
            .unwrap();
        }
        std::fs::write(r.join("big"), vec![7u8; 5 << 20]).unwrap();
        std::fs::write(r.join("small"), b"kernel").unwrap();
        m.unmount().unwrap();
    }
    check_fsck(&img).unwrap();
    // The engine changes it.
    let bytes = std::fs::read(&img).unwrap();
    let (vol, dev) = open_rw(bytes, &rw_options());
    let h = vol.lookup_ino(InodeNo::ROOT, b"h").unwrap();
    assert!(
        vol.inode(h)
            .unwrap()
            .has_flag(ext4_engine::inode_flags::INDEX),
        "the kernel indexed h"
    );
    let cred = Cred::ROOT;
    for i in 0..50 {
        let a = vol
            .create(h, format!("ours-{i}").as_bytes(), 0o644, &cred)
            .unwrap_or_else(|e| panic!("create in a hash-tree directory: {e}"));
        vol.write(a.ino, 0, &vec![i as u8 + 1; 3000], &cred)
            .unwrap();
    }
    for i in (0..400).step_by(7) {
        vol.unlink(h, format!("kernel-file-{i:04}").as_bytes())
            .unwrap();
    }
    let big = vol.lookup_ino(InodeNo::ROOT, b"big").unwrap();
    vol.truncate(big, 1_234_567).unwrap();
    vol.write(big, 3 << 20, b"appended by the engine", &cred)
        .unwrap();
    let small = vol.lookup_ino(InodeNo::ROOT, b"small").unwrap();
    vol.unlink(InodeNo(2), b"small").unwrap();
    let _ = small;
    for i in 0..30 {
        let a = vol
            .create(InodeNo(2), format!("root-{i}").as_bytes(), 0o600, &cred)
            .unwrap();
        vol.write(a.ino, (i * 4096) as u64, b"x", &cred).unwrap();
    }
    vol.close().unwrap();
    drop(vol);
    std::fs::write(&img, dev.snapshot()).unwrap();
    check_fsck(&img).unwrap();
    {
        let m = KernelMount::ro(&img).unwrap();
        let k = host_snapshot(m.path(), WalkOptions::default());
        let vol = ext4_tests::open_engine(&img).unwrap();
        let e = engine_snapshot(&vol, WalkOptions::default());
        let cmp = Compare {
            fields: ALL_FIELDS,
            ignore_dir_size: false,
            ignore_paths: &[],
        };
        let d = diff(&k, &e, &cmp);
        assert!(
            d.is_empty(),
            "{}",
            format_diffs("kernel vs engine after engine writes", &d, 20)
        );
        m.unmount().unwrap();
    }
    // The kernel writes more into the engine's image.
    {
        let m = KernelMount::mount(&img, false, "").unwrap();
        let r = m.path();
        for i in 0..200 {
            std::fs::write(r.join("h").join(format!("again-{i}")), vec![3u8; 5000]).unwrap();
        }
        std::fs::write(r.join("root-3"), vec![9u8; 1 << 20]).unwrap();
        std::fs::remove_file(r.join("root-4")).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(r.join("big"))
            .unwrap();
        std::io::Write::write_all(&mut f, &[5u8; 100_000]).unwrap();
        drop(f);
        m.unmount().unwrap();
    }
    check_fsck(&img).unwrap();
    let _ = std::fs::remove_file(&img);
}

/// Many extents in one file (every other block written, in an order that
/// is neither ascending nor descending): leaf splits, a root that grows to
/// depth 2 (1 KiB blocks: 4 root entries, 84 per block), merges, then
/// truncation back through every level. e2fsck, the kernel, the engine.
#[test]
fn deep_extent_trees() {
    if !require_e2fsprogs() {
        return;
    }
    let mut ops = vec![Op::Create {
        dir: 1,
        name: 1,
        pad: 0,
        mode: 0o644,
        umask: false,
    }];
    // The file is number 1 (the seed file is 0). Blocks 2k, k in a
    // scrambled order, then some odd blocks that merge neighbours.
    for j in 0..900u32 {
        let k = (j * 397) % 900;
        ops.push(Op::Write {
            file: 1,
            off: 2 * k * 1024,
            len: 1024,
            seed: (k % 200) as u8,
        });
    }
    for k in (1..300u32).step_by(3) {
        ops.push(Op::Write {
            file: 1,
            off: (2 * k + 1) * 1024,
            len: 1024,
            seed: 9,
        });
    }
    let mid = ops.len();
    ops.push(Op::Commit);
    ops.push(Op::Truncate {
        file: 1,
        size: 700 * 1024 + 17,
    });
    ops.push(Op::Truncate {
        file: 1,
        size: 90 * 1024,
    });
    // The tree really is two levels deep before the truncates.
    {
        let (vol, _dev) = open_rw(image(&EXT4_1K), &rw_options());
        let mut m = Model::load(&vol);
        for (k, op) in ops[..mid].iter().enumerate() {
            apply(&vol, &mut m, op, k as u64 + 1).unwrap();
        }
        let ino = m.files()[1];
        let depth = vol.extent_depth(&vol.inode(ino).unwrap()).unwrap();
        assert_eq!(depth, 2, "900 extents in 1 KiB blocks make a depth-2 tree");
        vol.close().unwrap();
    }
    let kernel = require_kernel_ext4();
    run_sequence(&EXT4_1K, &ops[..mid], kernel).unwrap();
    run_sequence(&EXT4_1K, &ops, kernel).unwrap();
    let mut all = ops.clone();
    all.push(Op::Truncate { file: 1, size: 0 });
    all.push(Op::Write {
        file: 1,
        off: 5 << 20,
        len: 3000,
        seed: 1,
    });
    run_sequence(&EXT4_1K, &all, kernel).unwrap();
}

/// The API's contracts around the operations: refusals, errors that change
/// nothing, statfs following every change, the superblock's mount state.
#[test]
fn contracts() {
    if !require_e2fsprogs() {
        return;
    }
    use ext4_engine::OpenOptions;
    let bytes = image(&EXT4_DEFAULT);
    // A read-only device refuses a read-write open.
    let ro = Volume::open(
        MemDevice::from_vec(bytes.clone()).read_only(),
        &rw_options(),
    );
    assert!(matches!(ro.err(), Some(Error::ReadOnly)));
    // Too small a cache for transactions.
    let small = OpenOptions {
        cache_bytes: 64 << 10,
        ..rw_options()
    };
    assert!(matches!(
        Volume::open(MemDevice::from_vec(bytes.clone()), &small).err(),
        Some(Error::Unsupported { .. })
    ));
    // A feature outside the allow-list is named.
    let img = tempfile_path("writes-quota").with_extension("img");
    std::fs::write(&img, &bytes).unwrap();
    let out = std::process::Command::new("tune2fs")
        .args(["-O", "quota"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tune2fs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let q = Volume::open(
        MemDevice::from_vec(std::fs::read(&img).unwrap()),
        &rw_options(),
    );
    match q.err() {
        Some(
            e @ Error::NotWritable {
                feature: "quota", ..
            },
        ) => assert!(e.to_string().contains("quota")),
        other => panic!("quota volume opened read-write: {other:?}"),
    }
    // A journal that needs recovery is replayed onto the device first, as
    // the kernel does at a read-write mount (here the flag alone: nothing
    // to replay); with norecovery it refuses, naming it.
    std::fs::write(&img, &bytes).unwrap();
    ext4_tests::oracle::debugfs_script(&img, &["feature needs_recovery".to_string()], true)
        .unwrap();
    let dirty = std::fs::read(&img).unwrap();
    let skip = OpenOptions {
        recovery: ext4_engine::Recovery::Skip,
        ..rw_options()
    };
    let r = Volume::open(MemDevice::from_vec(dirty.clone()), &skip);
    assert!(
        matches!(
            r.err(),
            Some(Error::NotWritable {
                feature: "needs_recovery",
                ..
            })
        ),
        "norecovery on a journal needing recovery refuses a read-write open"
    );
    let (v, dev) = open_rw(dirty, &rw_options());
    assert!(
        v.replay().is_some_and(|r| !r.in_memory) && !v.read_only(),
        "a journal needing recovery is replayed by a read-write open"
    );
    drop(v);
    let after = Volume::open(MemDevice::from_vec(dev.snapshot()), &OpenOptions::default()).unwrap();
    assert!(!after.sb().needs_recovery() && after.replay().is_none());
    let _ = std::fs::remove_file(&img);

    let (vol, dev) = open_rw(bytes, &rw_options());
    // Mounted, as the kernel's ext4_setup_super leaves the superblock: with
    // a journal `needs_recovery` (s_state stays clean), one more mount, on
    // the device already.
    {
        let raw = dev.snapshot();
        let le16 = |o: usize| u16::from_le_bytes([raw[1024 + o], raw[1024 + o + 1]]);
        let incompat = u32::from_le_bytes(raw[1024 + 0x60..1024 + 0x64].try_into().unwrap());
        assert_eq!(
            le16(0x3A) & 1,
            1,
            "s_state clean: the journal covers writes"
        );
        assert_ne!(
            incompat & ext4_engine::features::incompat::RECOVER,
            0,
            "needs_recovery while mounted read-write"
        );
        let ro =
            Volume::open(MemDevice::from_vec(dev.snapshot()), &OpenOptions::default()).unwrap();
        assert_eq!(ro.sb().mtime, 1_700_000_000, "s_mtime is the mount time");
        // Without a journal: "not clean" until a clean close.
        let (v2, d2) = open_rw(image(&EXT2), &rw_options());
        assert_eq!(
            d2.snapshot()[1024 + 0x3A] & 1,
            0,
            "s_state not clean while mounted read-write without a journal"
        );
        v2.close().unwrap();
        assert_eq!(d2.snapshot()[1024 + 0x3A] & 1, 1, "clean after close");
    }
    let before = vol.statfs();
    let root = InodeNo(2);
    let a = vol.create(root, b"x", 0o600, &Cred::ROOT).unwrap();
    assert!(matches!(
        vol.create(root, b"x", 0o600, &Cred::ROOT),
        Err(Error::Exists)
    ));
    assert!(matches!(
        vol.create(root, b"a/b", 0o600, &Cred::ROOT),
        Err(Error::InvalidArgument)
    ));
    assert!(matches!(
        vol.create(root, &[b'n'; 256], 0o600, &Cred::ROOT),
        Err(Error::NameTooLong)
    ));
    assert!(matches!(vol.unlink(root, b"nope"), Err(Error::NotFound)));
    assert!(matches!(vol.unlink(root, b"lost+found"), Err(Error::IsDir)));
    assert_eq!(vol.statfs().inodes_free, before.inodes_free - 1);
    assert_eq!(vol.sb().block_size, 4096);
    vol.write(a.ino, 0, &[1u8; 40960], &Cred::ROOT).unwrap();
    assert_eq!(vol.statfs().blocks_free, before.blocks_free - 10);
    assert_eq!(vol.getattr(a.ino).unwrap().blocks, 80);
    vol.unlink(root, b"x").unwrap();
    assert_eq!(vol.statfs().inodes_free, before.inodes_free);
    assert_eq!(vol.statfs().blocks_free, before.blocks_free);
    assert!(matches!(
        vol.lookup_ino(InodeNo::ROOT, b"x"),
        Err(Error::NotFound)
    ));
    let dead = vol.inode(a.ino).unwrap();
    assert_eq!((dead.links_count, dead.size, dead.blocks_512), (0, 0, 0));
    assert_ne!(
        dead.dtime, 0,
        "a freed inode has its deletion time, as the kernel leaves it"
    );
    vol.close().unwrap();
    assert!(vol.read_only(), "closed volumes are read-only");
    let ro = Volume::open(MemDevice::from_vec(dev.snapshot()), &OpenOptions::default()).unwrap();
    assert_eq!(ro.sb().state & 1, 1, "clean after close");
    assert_eq!(
        ro.statfs().blocks_free,
        before.blocks_free,
        "superblock counts written"
    );
    assert_eq!(ro.sb().free_inodes_count as u64, before.inodes_free);
}

/// Inode placement as the kernel's: a file's inode in its directory's
/// group, a new top-level directory's in another group with few
/// directories (Orlov), a file's first data block in its inode's group,
/// a sequentially written file contiguous (one extent). Without flex_bg,
/// so each group is its own unit.
#[test]
fn placement() {
    if !require_e2fsprogs() {
        return;
    }
    let p = ext4_tests::writes::Profile {
        name: "ext4-noflex",
        mkfs: &["-t", "ext4", "-b", "1024", "-O", "^flex_bg"],
        size_mib: 32,
        tune: &[],
        debugfs: &[],
    };
    let (vol, dev) = open_rw(image(&p), &rw_options());
    let ipg = vol.sb().inodes_per_group;
    let group = |ino: InodeNo| (ino.0 - 1) / ipg;
    let d1 = vol.lookup_ino(InodeNo::ROOT, b"d1").unwrap();
    assert!(vol.sb().group_count >= 4);
    {
        let mut h = vol.begin(16).unwrap();
        let top = vol.alloc_inode(&mut h, InodeNo(2), true).unwrap();
        assert_ne!(
            group(top),
            group(InodeNo::ROOT),
            "a top-level directory goes to a group with fewer directories"
        );
        let file = vol.alloc_inode(&mut h, d1, false).unwrap();
        assert_eq!(
            group(file),
            group(d1),
            "a file goes to its directory's group"
        );
        // Undo: nothing of this reaches the image.
        vol.free_inode(&mut h, top, true).unwrap();
        vol.free_inode(&mut h, file, false).unwrap();
    }
    let a = vol.create(d1, b"seq", 0o644, &Cred::ROOT).unwrap();
    let piece = vec![7u8; 64 << 10];
    for k in 0..16u64 {
        vol.write(a.ino, k * piece.len() as u64, &piece, &Cred::ROOT)
            .unwrap();
    }
    let inode = vol.inode(a.ino).unwrap();
    let e = vol.last_extent(&inode).unwrap().unwrap();
    assert_eq!(
        (e.lblk.0, e.len),
        (0, 1024),
        "1 MiB written in 64 KiB pieces is one extent"
    );
    let bpg = vol.sb().blocks_per_group as u64;
    assert_eq!(
        (e.pblk.0 - vol.sb().first_data_block as u64) / bpg,
        group(a.ino) as u64,
        "data starts in the inode's group"
    );
    vol.close().unwrap();
    drop(vol);
    let img = tempfile_path("writes-placement").with_extension("img");
    std::fs::write(&img, dev.snapshot()).unwrap();
    check_fsck(&img).unwrap();
    let _ = std::fs::remove_file(&img);
}

/// Blocks freed by the running transaction are not handed out again
/// before it commits (busy extents); after the commit they may be.
#[test]
fn freed_blocks_stay_busy_until_commit() {
    if !require_e2fsprogs() {
        return;
    }
    let (vol, _dev) = open_rw(image(&EXT4_1K), &rw_options());
    let root = InodeNo(2);
    let a = vol.create(root, b"a", 0o644, &Cred::ROOT).unwrap();
    vol.write(a.ino, 0, &vec![1u8; 64 << 10], &Cred::ROOT)
        .unwrap();
    vol.commit().unwrap();
    let old = vol
        .last_extent(&vol.inode(a.ino).unwrap())
        .unwrap()
        .unwrap();
    vol.unlink(root, b"a").unwrap();
    let b = vol.create(root, b"b", 0o644, &Cred::ROOT).unwrap();
    // Same goal as a's: its group's first free blocks are a's old ones.
    vol.write(b.ino, 0, &vec![2u8; 64 << 10], &Cred::ROOT)
        .unwrap();
    let new = vol
        .last_extent(&vol.inode(b.ino).unwrap())
        .unwrap()
        .unwrap();
    let overlap =
        new.pblk.0 < old.pblk.0 + old.len as u64 && old.pblk.0 < new.pblk.0 + new.len as u64;
    assert!(
        !overlap,
        "b got blocks a freed in the same transaction: {old:?} {new:?}"
    );
    vol.commit().unwrap();
    let c = vol.create(root, b"c", 0o644, &Cred::ROOT).unwrap();
    vol.write(c.ino, 0, &vec![3u8; 64 << 10], &Cred::ROOT)
        .unwrap();
    let reused = vol
        .last_extent(&vol.inode(c.ino).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(
        reused.pblk, old.pblk,
        "after the commit the freed blocks are free again"
    );
    vol.close().unwrap();
}

// ------------------------------------------------- every feature, both ways

/// For each new writable feature (ext2, ext3, ext4 without extents,
/// inline data, bigalloc, meta_bg, 1 KiB blocks): the kernel writes an
/// image (a hash-tree directory of small and larger files, preallocated
/// and punched files), the engine changes it (creates, unlinks, writes
/// into unwritten extents and inline files, truncates, fallocate modes),
/// the kernel reads exactly what the engine reads; then the kernel writes
/// more into it, and `e2fsck -fn` stays clean throughout.
#[test]
fn both_directions_every_feature() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    use ext4_engine::falloc;
    use ext4_tests::snapshot::{
        diff, engine_snapshot, format_diffs, host_snapshot, Compare, WalkOptions, ALL_FIELDS,
    };
    use ext4_tests::writes::write_sparse;
    let fa = |p: &std::path::Path, mode: i32, off: i64, len: i64| {
        let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        // SAFETY: a plain syscall on an open descriptor.
        let r = unsafe { libc::fallocate(std::os::fd::AsRawFd::as_raw_fd(&f), mode, off, len) };
        r == 0
    };
    for p in [
        EXT2,
        EXT3,
        EXT4_NO_EXTENT,
        EXT4_INLINE,
        EXT4_BIGALLOC_16K,
        EXT4_BIGALLOC_64K,
        EXT4_META_BG,
        EXT4_1K,
    ] {
        let img = tempfile_path(&format!("both-{}", p.name)).with_extension("img");
        write_sparse(&img, &image(&p)).unwrap();
        {
            let m = KernelMount::mount(&img, false, "").unwrap();
            let r = m.path();
            std::fs::create_dir(r.join("h")).unwrap();
            for i in 0..300 {
                std::fs::write(
                    r.join("h").join(format!("kernel-file-{i:04}")),
                    vec![i as u8 | 1; i * 10],
                )
                .unwrap();
            }
            std::fs::write(r.join("big"), vec![7u8; 3 << 20]).unwrap();
            std::fs::write(r.join("small"), b"kernel wrote this").unwrap();
            std::fs::write(r.join("prealloc"), vec![5u8; 100_000]).unwrap();
            fa(&r.join("prealloc"), falloc::KEEP_SIZE as i32, 0, 1 << 20);
            std::fs::write(r.join("holey"), vec![6u8; 2 << 20]).unwrap();
            fa(
                &r.join("holey"),
                (falloc::PUNCH_HOLE | falloc::KEEP_SIZE) as i32,
                300_000,
                500_000,
            );
            m.unmount().unwrap();
        }
        check_fsck(&img).unwrap_or_else(|e| panic!("{}: kernel-written: {e}", p.name));
        let (vol, dev) = open_rw(std::fs::read(&img).unwrap(), &rw_options());
        let cred = Cred::ROOT;
        let h = vol.lookup_ino(InodeNo::ROOT, b"h").unwrap();
        for i in 0..40 {
            let a = vol
                .create(h, format!("ours-{i}").as_bytes(), 0o644, &cred)
                .unwrap_or_else(|e| panic!("{}: create in h: {e}", p.name));
            vol.write(a.ino, 0, &vec![i as u8 + 1; 50 * i], &cred)
                .unwrap();
        }
        for i in (0..300).step_by(7) {
            vol.unlink(h, format!("kernel-file-{i:04}").as_bytes())
                .unwrap();
        }
        let ino = |n: &[u8]| vol.lookup_ino(InodeNo::ROOT, n).unwrap();
        // Inline files grow in place and out of the inode.
        let k3 = vol.lookup_ino(h, b"kernel-file-0003").unwrap();
        vol.write(k3, 25, &[9u8; 70], &cred).unwrap();
        let k5 = vol.lookup_ino(h, b"kernel-file-0005").unwrap();
        vol.write(k5, 40, &[8u8; 300], &cred).unwrap();
        let big = ino(b"big");
        vol.truncate(big, 1_234_567).unwrap();
        vol.write(big, 3 << 20, b"appended by the engine", &cred)
            .unwrap();
        // Into the kernel's unwritten extents.
        let pre = ino(b"prealloc");
        vol.write(pre, 300_000, &[4u8; 65_536], &cred).unwrap();
        let extents = vol
            .sb()
            .has_incompat(ext4_engine::features::incompat::EXTENTS);
        let holey = ino(b"holey");
        vol.fallocate(
            holey,
            falloc::PUNCH_HOLE | falloc::KEEP_SIZE,
            100_000,
            150_000,
            &cred,
        )
        .unwrap();
        let c = vol.sb().cluster_size as u64;
        let try_fa = |i: InodeNo, mode: u32, off: u64, len: u64| match vol
            .fallocate(i, mode, off, len, &cred)
        {
            Ok(()) => {}
            Err(Error::Unsupported { .. }) if !extents => {}
            Err(e) => panic!("{}: fallocate {mode:#x} {off}+{len}: {e}", p.name),
        };
        try_fa(big, falloc::ZERO_RANGE, 10_000, 40_000);
        try_fa(big, falloc::COLLAPSE_RANGE, c * 2, c);
        try_fa(pre, falloc::INSERT_RANGE, 0, c);
        try_fa(holey, 0, 4 << 20, 100_000);
        let small = ino(b"small");
        vol.write(small, 100, b" and the engine this", &cred)
            .unwrap();
        for i in 0..20 {
            let a = vol
                .create(InodeNo(2), format!("root-{i}").as_bytes(), 0o600, &cred)
                .unwrap();
            vol.write(a.ino, (i * 4096) as u64, &vec![3u8; i * 999 + 1], &cred)
                .unwrap();
        }
        vol.close().unwrap();
        drop(vol);
        write_sparse(&img, &dev.snapshot()).unwrap();
        check_fsck(&img).unwrap_or_else(|e| panic!("{}: engine-written: {e}", p.name));
        {
            let m = KernelMount::ro(&img).unwrap();
            let k = host_snapshot(m.path(), WalkOptions::default());
            let vol = ext4_tests::open_engine(&img).unwrap();
            let e = engine_snapshot(&vol, WalkOptions::default());
            let cmp = Compare {
                fields: ALL_FIELDS,
                ignore_dir_size: false,
                ignore_paths: &[],
            };
            let d = diff(&k, &e, &cmp);
            assert!(
                d.is_empty(),
                "{}",
                format_diffs(
                    &format!("{}: kernel vs engine after engine writes", p.name),
                    &d,
                    20
                )
            );
            m.unmount().unwrap();
        }
        {
            let m = KernelMount::mount(&img, false, "").unwrap();
            let r = m.path();
            for i in 0..100 {
                std::fs::write(r.join("h").join(format!("again-{i}")), vec![3u8; 5000]).unwrap();
            }
            std::fs::write(r.join("root-3"), vec![9u8; 1 << 20]).unwrap();
            std::fs::remove_file(r.join("root-4")).unwrap();
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(r.join("big"))
                .unwrap();
            std::io::Write::write_all(&mut f, &[5u8; 100_000]).unwrap();
            drop(f);
            fa(
                &r.join("prealloc"),
                (falloc::PUNCH_HOLE | falloc::KEEP_SIZE) as i32,
                0,
                50_000,
            );
            std::fs::OpenOptions::new()
                .write(true)
                .open(r.join("holey"))
                .unwrap()
                .set_len(123_456)
                .unwrap();
            m.unmount().unwrap();
        }
        check_fsck(&img).unwrap_or_else(|e| panic!("{}: kernel-written again: {e}", p.name));
        let _ = std::fs::remove_file(&img);
    }
}

/// Block-mapped files across every level of the indirect map (1 KiB
/// blocks: 12 direct, 256 single, 65,536 double, then triple-indirect
/// blocks): writes on each side of each boundary, holes between, then
/// truncation back through every level. `i_blocks` (indirect blocks
/// included) is checked by e2fsck and against debugfs and the kernel's
/// `st_blocks` in `run_sequence`.
#[test]
fn indirect_boundaries() {
    if !require_e2fsprogs() {
        return;
    }
    let kb = 1024u32;
    let edges = [
        12u32,
        12 + 256,
        12 + 256 + 65_536,
        12 + 256 + 65_536 + 65_536 * 3,
    ];
    let mut ops = vec![Op::Create {
        dir: 1,
        name: 1,
        pad: 0,
        mode: 0o644,
        umask: false,
    }];
    for (k, &e) in edges.iter().enumerate() {
        ops.push(Op::Write {
            file: 1,
            off: (e - 2) * kb + 100,
            len: 3 * kb,
            seed: k as u8,
        });
    }
    // A run across the double-to-triple boundary, then holes punched in it.
    ops.push(Op::Write {
        file: 1,
        off: (edges[2] - 300) * kb,
        len: 600 * kb,
        seed: 9,
    });
    ops.push(Op::Fallocate {
        file: 1,
        mode: 2,
        off: (edges[2] - 100) * kb,
        len: 200 * kb,
        aligned: false,
    });
    let kernel = require_kernel_ext4();
    run_sequence(&EXT2, &ops, kernel).unwrap();
    for &e in edges.iter().rev() {
        ops.push(Op::Truncate {
            file: 1,
            size: e * kb + 7,
        });
        ops.push(Op::Commit);
    }
    run_sequence(&EXT2, &ops, kernel).unwrap();
    ops.push(Op::Truncate { file: 1, size: 0 });
    run_sequence(&EXT2, &ops, kernel).unwrap();
}
