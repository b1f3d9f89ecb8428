//! The same file operations through the kernel's ext4 (a read-write loop
//! mount of one copy of an image) and through the engine (another copy):
//! every call's outcome (bytes written, or the errno) must agree, and at
//! the end each file's size, bytes and holes (FIEMAP against the engine's
//! map, block by block: mapped or not), and whether it is inline; then
//! `e2fsck -fn` is clean on both images. The kernel is the oracle for what
//! `write`, `truncate` and every `fallocate` mode (errnos included) do.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions as FsOpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ext4_engine::{falloc, inode_flags, Cred, Error, FileBlock, InodeNo, Run};
use ext4_tests::kwimage::{kernel_fiemap, FIEMAP_EXTENT_DATA_INLINE};
use ext4_tests::oracle::{tempfile_path, KernelMount};
use ext4_tests::util::{require_e2fsprogs, require_kernel_ext4};
use ext4_tests::writes::{
    bytes_of, check_fsck, image, open_rw, rw_options, write_sparse, MemVolume, Profile, EXT2, EXT3,
    EXT4_1K, EXT4_BIGALLOC_16K, EXT4_DEFAULT, EXT4_INLINE, EXT4_NO_EXTENT,
};
use proptest::prelude::*;

/// Files every run works on (created first on both sides).
const FILES: usize = 3;

#[derive(Clone, Debug)]
enum FOp {
    Write {
        file: u8,
        off: u32,
        len: u32,
        seed: u8,
    },
    Truncate {
        file: u8,
        size: u32,
    },
    Fallocate {
        file: u8,
        mode: u32,
        off: u32,
        len: u32,
    },
}

/// Outcome of one call: bytes written (or 0), or an errno.
type Outcome = Result<usize, i32>;

fn name(i: u8) -> String {
    format!("ops-{}", i as usize % FILES)
}

struct Kernel {
    root: PathBuf,
}

impl Kernel {
    fn path(&self, i: u8) -> PathBuf {
        self.root.join(name(i))
    }

    fn open(&self, i: u8) -> File {
        FsOpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path(i))
            .unwrap()
    }

    fn apply(&self, op: &FOp) -> Outcome {
        let errno = |e: std::io::Error| e.raw_os_error().unwrap_or(-1);
        match *op {
            FOp::Write {
                file,
                off,
                len,
                seed,
            } => {
                let data = bytes_of(seed, off, len as usize);
                self.open(file).write_at(&data, off as u64).map_err(errno)
            }
            FOp::Truncate { file, size } => self
                .open(file)
                .set_len(size as u64)
                .map(|_| 0)
                .map_err(errno),
            FOp::Fallocate {
                file,
                mode,
                off,
                len,
            } => {
                let f = self.open(file);
                // SAFETY: a plain syscall on an open descriptor.
                let r =
                    unsafe { libc::fallocate(f.as_raw_fd(), mode as i32, off as i64, len as i64) };
                if r == 0 {
                    Ok(0)
                } else {
                    Err(errno(std::io::Error::last_os_error()))
                }
            }
        }
    }
}

fn engine_apply(vol: &MemVolume, inos: &[InodeNo], op: &FOp) -> Outcome {
    let cred = Cred::ROOT;
    let ino = |i: u8| inos[i as usize % FILES];
    let r = match *op {
        FOp::Write {
            file,
            off,
            len,
            seed,
        } => vol.write(
            ino(file),
            off as u64,
            &bytes_of(seed, off, len as usize),
            &cred,
        ),
        FOp::Truncate { file, size } => vol.truncate(ino(file), size as u64).map(|_| 0),
        FOp::Fallocate {
            file,
            mode,
            off,
            len,
        } => vol
            .fallocate(ino(file), mode, off as u64, len as u64, &cred)
            .map(|_| 0),
    };
    r.map_err(|e: Error| e.errno())
}

/// Which blocks of a file are mapped, from FIEMAP.
fn kernel_mapped(path: &Path, bs: u64) -> Result<(Vec<bool>, bool), String> {
    let f = File::open(path).map_err(|e| e.to_string())?;
    let exts = kernel_fiemap(&f)?;
    let inline = exts
        .iter()
        .any(|e| e.fe_flags & FIEMAP_EXTENT_DATA_INLINE != 0);
    let mut map = Vec::new();
    if !inline {
        for e in &exts {
            let (a, b) = (e.fe_logical / bs, (e.fe_logical + e.fe_length).div_ceil(bs));
            if map.len() < b as usize {
                map.resize(b as usize, false);
            }
            map[a as usize..b as usize].fill(true);
        }
    }
    Ok((map, inline))
}

fn engine_mapped(vol: &MemVolume, ino: InodeNo) -> Result<(Vec<bool>, bool), String> {
    let inode = vol.inode(ino).map_err(|e| e.to_string())?;
    if inode.has_flag(inode_flags::INLINE_DATA) {
        return Ok((Vec::new(), true));
    }
    let mut map = Vec::new();
    let mut l = 0u64;
    // Far enough for every range the operations touch.
    while l < 1 << 16 {
        let r = vol
            .map_block(&inode, FileBlock(l as u32))
            .map_err(|e| e.to_string())?;
        if let Run::Mapped { len, .. } = r {
            let b = (l + len) as usize;
            if map.len() < b {
                map.resize(b, false);
            }
            map[l as usize..b].fill(true);
        }
        l += r.len().max(1);
    }
    Ok((map, false))
}

fn trim(mut v: Vec<bool>) -> Vec<bool> {
    while v.last() == Some(&false) {
        v.pop();
    }
    v
}

/// Run `ops` on both sides of profile `p` and compare.
fn run(p: &Profile, ops: &[FOp]) -> Result<(), String> {
    let bytes = image(p);
    // The kernel's copy.
    let kimg = tempfile_path(&format!("fileops-k-{}", p.name)).with_extension("img");
    write_sparse(&kimg, &bytes).map_err(|e| e.to_string())?;
    let mnt = KernelMount::mount(&kimg, false, "").map_err(|e| e.to_string())?;
    let k = Kernel {
        root: mnt.path().to_path_buf(),
    };
    // The engine's copy.
    let (vol, dev) = open_rw(bytes, &rw_options());
    let bs = vol.sb().block_size as u64;
    let mut inos = Vec::new();
    for i in 0..FILES as u8 {
        File::create(k.path(i)).map_err(|e| e.to_string())?;
        let a = vol
            .create(InodeNo(2), name(i).as_bytes(), 0o644, &Cred::ROOT)
            .map_err(|e| format!("create: {e}"))?;
        inos.push(a.ino);
    }
    let mut result = Ok(());
    for (n, op) in ops.iter().enumerate() {
        let want = k.apply(op);
        let got = engine_apply(&vol, &inos, op);
        // ENOSPC is the one outcome free space decides (the kernel
        // reserves differently); none of these runs comes near it.
        if want != got {
            result = Err(format!("step {n} {op:?}: kernel {want:?}, engine {got:?}"));
            break;
        }
    }
    if result.is_ok() {
        for i in 0..FILES as u8 {
            let kd = std::fs::read(k.path(i)).map_err(|e| e.to_string())?;
            let a = vol.getattr(inos[i as usize]).map_err(|e| e.to_string())?;
            let mut ed = vec![0u8; a.size as usize];
            vol.read(inos[i as usize], 0, &mut ed)
                .map_err(|e| e.to_string())?;
            if kd != ed {
                let at = kd.iter().zip(&ed).position(|(a, b)| a != b);
                result = Err(format!(
                    "{}: kernel has {} bytes, engine {} (first difference at {at:?})",
                    name(i),
                    kd.len(),
                    ed.len()
                ));
                break;
            }
            let (km, kin) = kernel_mapped(&k.path(i), bs)?;
            let (em, ein) = engine_mapped(&vol, inos[i as usize])?;
            if kin != ein {
                result = Err(format!("{}: inline kernel {kin}, engine {ein}", name(i)));
                break;
            }
            let (km, em) = (trim(km), trim(em));
            if km != em {
                let at = (0..km.len().max(em.len())).find(|&b| {
                    km.get(b).copied().unwrap_or(false) != em.get(b).copied().unwrap_or(false)
                });
                result = Err(format!(
                    "{}: mapped blocks differ first at block {at:?} (kernel {} blocks, engine {})",
                    name(i),
                    km.len(),
                    em.len()
                ));
                break;
            }
        }
    }
    mnt.unmount().map_err(|e| e.to_string())?;
    vol.close().map_err(|e| e.to_string())?;
    drop(vol);
    let eimg = tempfile_path(&format!("fileops-e-{}", p.name)).with_extension("img");
    write_sparse(&eimg, &dev.snapshot()).map_err(|e| e.to_string())?;
    let r = result
        .and_then(|_| check_fsck(&kimg).map_err(|e| format!("kernel image: {e}")))
        .and_then(|_| check_fsck(&eimg).map_err(|e| format!("engine image: {e}")));
    let _ = std::fs::remove_file(&kimg);
    let _ = std::fs::remove_file(&eimg);
    r
}

fn fop() -> impl Strategy<Value = FOp> {
    let modes = prop::sample::select(vec![
        0,
        falloc::KEEP_SIZE,
        falloc::PUNCH_HOLE | falloc::KEEP_SIZE,
        falloc::ZERO_RANGE,
        falloc::ZERO_RANGE | falloc::KEEP_SIZE,
        falloc::COLLAPSE_RANGE,
        falloc::INSERT_RANGE,
        falloc::PUNCH_HOLE,
        falloc::INSERT_RANGE | falloc::KEEP_SIZE,
    ]);
    let off = prop_oneof![3 => 0u32..(256 << 10), 1 => 0u32..(4 << 20)];
    let len = prop_oneof![3 => 1u32..(128 << 10), 1 => 0u32..(2 << 20)];
    let align = |v: u32, a: bool| if a { v / 65536 * 65536 } else { v };
    prop_oneof![
        4 => (any::<u8>(), off.clone(), len.clone(), any::<u8>())
            .prop_map(|(file, off, len, seed)| FOp::Write { file, off, len, seed }),
        1 => (any::<u8>(), 0u32..(1 << 20)).prop_map(|(file, size)| FOp::Truncate { file, size }),
        5 => (any::<u8>(), modes, off, len, any::<bool>())
            .prop_map(move |(file, mode, off, len, a)| FOp::Fallocate { file, mode, off: align(off, a), len: align(len, a) }),
    ]
}

fn cases() -> u32 {
    std::env::var("EXT4_WRITE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
}

fn random(p: &Profile, ops: &[FOp]) -> Result<(), TestCaseError> {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return Ok(());
    }
    run(p, ops).map_err(TestCaseError::fail)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn same_as_kernel_ext4(ops in prop::collection::vec(fop(), 1..40)) { random(&EXT4_DEFAULT, &ops)?; }

    #[test]
    fn same_as_kernel_ext4_1k(ops in prop::collection::vec(fop(), 1..40)) { random(&EXT4_1K, &ops)?; }

    #[test]
    fn same_as_kernel_bigalloc(ops in prop::collection::vec(fop(), 1..40)) { random(&EXT4_BIGALLOC_16K, &ops)?; }

    #[test]
    fn same_as_kernel_ext2(ops in prop::collection::vec(fop(), 1..40)) { random(&EXT2, &ops)?; }

    #[test]
    fn same_as_kernel_ext3(ops in prop::collection::vec(fop(), 1..40)) { random(&EXT3, &ops)?; }

    #[test]
    fn same_as_kernel_noextent(ops in prop::collection::vec(fop(), 1..40)) { random(&EXT4_NO_EXTENT, &ops)?; }

    #[test]
    fn same_as_kernel_inline(ops in prop::collection::vec(fop(), 1..40)) { random(&EXT4_INLINE, &ops)?; }
}

/// The errno table of `fallocate` (every mode and combination, the
/// kernel's alignment and EOF rules, bad ranges) on an extent file, a
/// block-mapped file and an inline file, kernel against engine.
#[test]
fn fallocate_errnos_as_the_kernel() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    use falloc::*;
    let size = 48 * 1024u32;
    let cases: &[(u32, u32, u32)] = &[
        (0, 0, 4096),
        (KEEP_SIZE, 0, 4096),
        (PUNCH_HOLE, 0, 4096),
        (PUNCH_HOLE | KEEP_SIZE, 0, 4096),
        (ZERO_RANGE, 0, 4096),
        (ZERO_RANGE | KEEP_SIZE, 0, 4096),
        (COLLAPSE_RANGE, 65536, 65536),
        (COLLAPSE_RANGE, 4096, 4096),
        (COLLAPSE_RANGE | KEEP_SIZE, 4096, 4096),
        (INSERT_RANGE, 4096, 4096),
        (INSERT_RANGE | KEEP_SIZE, 4096, 4096),
        (PUNCH_HOLE | ZERO_RANGE | KEEP_SIZE, 0, 4096),
        (COLLAPSE_RANGE | ZERO_RANGE, 4096, 4096),
        (COLLAPSE_RANGE, 100, 4096),
        (COLLAPSE_RANGE, 4096, size),
        (COLLAPSE_RANGE, 4096, size - 4096),
        (INSERT_RANGE, 4096, 100),
        (INSERT_RANGE, size, 4096),
        (INSERT_RANGE, size + 4096, 4096),
        (UNSHARE_RANGE, 0, 4096),
        (UNSHARE_RANGE | KEEP_SIZE, 0, 4096),
        (NO_HIDE_STALE, 0, 4096),
        (NO_HIDE_STALE | PUNCH_HOLE | KEEP_SIZE, 0, 4096),
        (WRITE_ZEROES, 0, 4096),
        (WRITE_ZEROES | KEEP_SIZE, 0, 4096),
        (0, 0, 0),
        (INSERT_RANGE | PUNCH_HOLE | KEEP_SIZE, 0, 4096),
        (0x100, 0, 4096),
    ];
    for p in [EXT4_DEFAULT, EXT4_1K, EXT3, EXT4_INLINE] {
        // Each case on a fresh file of `size` bytes (written, so it is
        // not inline but for the inline profile's small variant below).
        let mut ops = Vec::new();
        for &(mode, off, len) in cases {
            ops.push(FOp::Truncate { file: 0, size: 0 });
            ops.push(FOp::Write {
                file: 0,
                off: 0,
                len: size,
                seed: 3,
            });
            ops.push(FOp::Fallocate {
                file: 0,
                mode,
                off,
                len,
            });
            // The same on a small file (inline where the filesystem has
            // inline data).
            ops.push(FOp::Truncate { file: 1, size: 0 });
            ops.push(FOp::Write {
                file: 1,
                off: 0,
                len: 40,
                seed: 4,
            });
            ops.push(FOp::Fallocate {
                file: 1,
                mode,
                off,
                len,
            });
        }
        if let Err(e) = run(&p, &ops) {
            panic!("{}: {e}", p.name);
        }
    }
    let _ = OsStr::from_bytes(b"");
}

/// Writes and truncates at the edges of the largest file size (extent and
/// block-mapped files, with and without `huge_file`), and past 2 GiB on a
/// filesystem without `large_file` (the engine sets the feature, as the
/// kernel does): outcomes, sizes, bytes and features as the kernel's.
#[test]
fn size_limits_as_the_kernel() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    let profiles = [
        Profile {
            name: "limits-ext4",
            mkfs: &["-t", "ext4", "-b", "4096"],
            size_mib: 32,
            tune: &[],
            debugfs: &[],
        },
        Profile {
            name: "limits-ext4-1k-nohuge",
            mkfs: &["-t", "ext4", "-b", "1024", "-O", "^huge_file"],
            size_mib: 32,
            tune: &[],
            debugfs: &[],
        },
        Profile {
            name: "limits-ext3",
            mkfs: &["-t", "ext3", "-b", "4096"],
            size_mib: 32,
            tune: &[],
            debugfs: &[],
        },
        Profile {
            name: "limits-ext2-1k-nolarge",
            mkfs: &["-t", "ext2", "-b", "1024", "-O", "^large_file"],
            size_mib: 32,
            tune: &[],
            debugfs: &[],
        },
    ];
    for p in profiles {
        let bytes = image(&p);
        let kimg = tempfile_path(&format!("limits-k-{}", p.name)).with_extension("img");
        write_sparse(&kimg, &bytes).unwrap();
        let mnt = KernelMount::mount(&kimg, false, "").unwrap();
        let (vol, dev) = open_rw(bytes, &rw_options());
        let extents = vol
            .sb()
            .has_incompat(ext4_engine::features::incompat::EXTENTS);
        let max = vol.sb().max_file_size(extents);
        let cred = Cred::ROOT;
        let errno = |e: std::io::Error| e.raw_os_error().unwrap_or(-1);
        let mut steps: Vec<(u64, usize, bool)> = vec![
            // (offset, length, truncate instead of write)
            (3 << 30, 10, false),
            (max - 1, 1, false),
            (max, 1, false),
            (max - 10, 100, false),
            (max + 1, 0, true),
            (max, 0, true),
            (1 << 40, 1, false),
            (5 << 20, 0, true),
        ];
        steps.retain(|s| s.0 < u64::MAX / 2);
        for (k, &(off, len, trunc)) in steps.iter().enumerate() {
            let path = mnt.path().join(format!("limit-{k}"));
            let f = FsOpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .unwrap();
            let a = vol
                .create(InodeNo(2), format!("limit-{k}").as_bytes(), 0o644, &cred)
                .unwrap();
            let data = vec![0x5au8; len];
            let (want, got) = if trunc {
                (
                    f.set_len(off).map(|_| 0).map_err(errno),
                    vol.truncate(a.ino, off).map(|_| 0).map_err(|e| e.errno()),
                )
            } else {
                (
                    f.write_at(&data, off).map_err(errno),
                    vol.write(a.ino, off, &data, &cred).map_err(|e| e.errno()),
                )
            };
            assert_eq!(
                want, got,
                "{}: step {k} ({off}, {len}, truncate {trunc}): kernel {want:?}, engine {got:?}",
                p.name
            );
            let ks = f.metadata().unwrap().len();
            let es = vol.getattr(a.ino).unwrap().size;
            assert_eq!(ks, es, "{}: step {k}: sizes", p.name);
        }
        mnt.unmount().unwrap();
        vol.close().unwrap();
        drop(vol);
        let eimg = tempfile_path(&format!("limits-e-{}", p.name)).with_extension("img");
        write_sparse(&eimg, &dev.snapshot()).unwrap();
        check_fsck(&kimg).unwrap();
        check_fsck(&eimg).unwrap();
        let ro_compat = |img: &Path| {
            ext4_tests::open_engine(img).unwrap().sb().ro_compat
                & ext4_engine::features::ro_compat::LARGE_FILE
        };
        assert_eq!(
            ro_compat(&kimg),
            ro_compat(&eimg),
            "{}: large_file as the kernel left it",
            p.name
        );
        assert_ne!(
            ro_compat(&eimg),
            0,
            "{}: a file past 2 GiB sets large_file",
            p.name
        );
        let _ = std::fs::remove_file(&kimg);
        let _ = std::fs::remove_file(&eimg);
    }
}
