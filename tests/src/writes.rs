//! The engine's write path against the real thing: images made by
//! `mke2fs` (per profile of the feature matrix), loaded into a
//! [`MemDevice`]; random operation sequences applied through the engine
//! and to a model of the tree ([`crate::write_model`]: names, modes,
//! owners, sizes, contents, link counts, explicitly set times, which
//! blocks are holes, written or unwritten); then the image must pass
//! `e2fsck -fn`, and the kernel's ext4 (a read-only loop mount: contents,
//! sizes, FIEMAP, `st_blocks` against `debugfs`' `i_blocks`) and the
//! engine reopened read-only must both show exactly the model.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use ext4_engine::attr::Timestamp;
use ext4_engine::blockmap::Run;
use ext4_engine::device::MemDevice;
use ext4_engine::volume::{OpenOptions, Volume};

use crate::kwimage::{kernel_fiemap, FIEMAP_EXTENT_DATA_INLINE, FIEMAP_EXTENT_UNWRITTEN};
use crate::oracle::{debugfs_script, e2fsck_check, parse_stat, tempfile_path, KernelMount};
use crate::util::{cache_dir, run_ok};

pub use crate::write_model::{
    apply, bytes_of, falloc_expect, fixed_now, seed_contents, FileModel, Geometry, Model, Op, St,
    DIRS, FALLOC_MODES, SEED_FILE,
};

/// Write an image to `path` as a sparse file (all-zero 64 KiB pieces
/// skipped): images are mostly empty, and the oracles read files.
pub fn write_sparse(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path)?;
    f.set_len(bytes.len() as u64)?;
    for (k, piece) in bytes.chunks(64 << 10).enumerate() {
        if piece.iter().any(|&b| b != 0) {
            f.write_all_at(piece, (k * (64 << 10)) as u64)?;
        }
    }
    Ok(())
}

/// One row of the feature matrix (4 KiB profiles use 8192-block groups,
/// so a small image still has several groups, `BLOCK_UNINIT` ones among
/// them).
#[derive(Clone, Copy, Debug)]
pub struct Profile {
    pub name: &'static str,
    /// `mke2fs` arguments after `-F -q` (features, block and inode size).
    pub mkfs: &'static [&'static str],
    pub size_mib: u32,
}

pub const EXT4_DEFAULT: Profile = Profile {
    name: "ext4",
    mkfs: &["-t", "ext4", "-b", "4096", "-g", "8192"],
    size_mib: 128,
};
pub const EXT4_1K: Profile = Profile {
    name: "ext4-1k",
    mkfs: &["-t", "ext4", "-b", "1024"],
    size_mib: 32,
};
pub const EXT4_NO_CSUM: Profile = Profile {
    name: "ext4-uninit_bg",
    mkfs: &[
        "-t",
        "ext4",
        "-b",
        "4096",
        "-g",
        "8192",
        "-O",
        "^metadata_csum,uninit_bg",
    ],
    size_mib: 32,
};
pub const EXT4_128: Profile = Profile {
    name: "ext4-128-inodes",
    mkfs: &["-t", "ext4", "-b", "4096", "-g", "8192", "-I", "128"],
    size_mib: 32,
};
/// Small enough to fill: 4 MiB, 1 KiB blocks, few inodes.
pub const EXT4_SMALL: Profile = Profile {
    name: "ext4-small",
    mkfs: &["-t", "ext4", "-b", "1024", "-N", "128"],
    size_mib: 4,
};

/// ext2: block-mapped files, no journal; 1 KiB blocks, so double and
/// triple indirect blocks come early (256 pointers a block).
pub const EXT2: Profile = Profile {
    name: "ext2",
    mkfs: &["-t", "ext2", "-b", "1024"],
    size_mib: 32,
};
/// ext3's defaults: block-mapped files and a journal (kept empty).
pub const EXT3: Profile = Profile {
    name: "ext3",
    mkfs: &["-t", "ext3", "-b", "4096", "-g", "8192"],
    size_mib: 64,
};
/// ext4 without extents: block maps with `metadata_csum`, `flex_bg`,
/// `huge_file`.
pub const EXT4_NO_EXTENT: Profile = Profile {
    name: "ext4-noextent",
    mkfs: &[
        "-t",
        "ext4",
        "-O",
        "^extent,^64bit",
        "-b",
        "4096",
        "-g",
        "8192",
    ],
    size_mib: 64,
};
/// Inline data (256-byte inodes: up to 128 bytes in the inode).
pub const EXT4_INLINE: Profile = Profile {
    name: "ext4-inline",
    mkfs: &[
        "-t",
        "ext4",
        "-O",
        "inline_data",
        "-b",
        "4096",
        "-g",
        "8192",
    ],
    size_mib: 64,
};
/// 16 KiB clusters of 1 KiB blocks, 1024 clusters a group (`-g` counts
/// clusters under bigalloc).
pub const EXT4_BIGALLOC_16K: Profile = Profile {
    name: "ext4-bigalloc16k",
    mkfs: &[
        "-t", "ext4", "-O", "bigalloc", "-b", "1024", "-C", "16384", "-g", "1024",
    ],
    size_mib: 64,
};
/// 64 KiB clusters of 4 KiB blocks, 256 clusters a group.
pub const EXT4_BIGALLOC_64K: Profile = Profile {
    name: "ext4-bigalloc64k",
    mkfs: &[
        "-t", "ext4", "-O", "bigalloc", "-b", "4096", "-C", "65536", "-g", "256",
    ],
    size_mib: 128,
};
/// meta_bg: 64 groups of 1024 1 KiB blocks, descriptors in each meta group.
pub const EXT4_META_BG: Profile = Profile {
    name: "ext4-meta_bg",
    mkfs: &[
        "-t",
        "ext4",
        "-O",
        "meta_bg,^resize_inode",
        "-b",
        "1024",
        "-g",
        "1024",
    ],
    size_mib: 64,
};

pub const PROFILES: &[Profile] = &[
    EXT4_DEFAULT,
    EXT4_1K,
    EXT4_NO_CSUM,
    EXT4_128,
    EXT4_SMALL,
    EXT2,
    EXT3,
    EXT4_NO_EXTENT,
    EXT4_INLINE,
    EXT4_BIGALLOC_16K,
    EXT4_BIGALLOC_64K,
    EXT4_META_BG,
];

/// The image of `p`, made once per process by `mke2fs -d` from a small
/// source tree (the directories of [`DIRS`] and [`SEED_FILE`]).
pub fn image(p: &Profile) -> Vec<u8> {
    static CACHE: OnceLock<Mutex<BTreeMap<&'static str, Vec<u8>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(BTreeMap::new()));
    if let Some(b) = cache.lock().unwrap().get(p.name) {
        return b.clone();
    }
    let src = tempfile_path("writes-src");
    std::fs::create_dir_all(&src).unwrap();
    for d in DIRS.iter().filter(|d| !d.is_empty()) {
        std::fs::create_dir_all(src.join(d)).unwrap();
    }
    std::fs::write(src.join(SEED_FILE), seed_contents()).unwrap();
    let img = tempfile_path("writes-img");
    let mut c = Command::new("mke2fs");
    c.args(["-F", "-q", "-E", "root_owner=0:0"])
        .args(p.mkfs)
        .arg("-d")
        .arg(&src)
        .arg(&img)
        .arg(format!("{}M", p.size_mib));
    run_ok(&mut c);
    let bytes = std::fs::read(&img).unwrap();
    let _ = std::fs::remove_file(&img);
    let _ = std::fs::remove_dir_all(&src);
    cache.lock().unwrap().insert(p.name, bytes.clone());
    bytes
}

pub fn rw_options() -> OpenOptions {
    OpenOptions {
        read_only: false,
        now: fixed_now,
        ..OpenOptions::default()
    }
}

pub type MemVolume = Volume<Arc<MemDevice>>;

/// Open `bytes` read-write on a memory device.
pub fn open_rw(bytes: Vec<u8>, opts: &OpenOptions) -> (MemVolume, Arc<MemDevice>) {
    let dev = Arc::new(MemDevice::from_vec(bytes));
    let vol = Volume::open(dev.clone(), opts).expect("open read-write");
    (vol, dev)
}

/// Whether a listed name of directory `d` is the model's business (not
/// `.`, `..`, `lost+found` or a starting directory).
fn modelled(d: usize, n: &[u8]) -> bool {
    n != b"."
        && n != b".."
        && n != b"lost+found"
        && !(d == 0 && DIRS.iter().any(|x| !x.is_empty() && x.as_bytes() == n))
}

/// The names the model has in directory `d`, sorted.
fn model_names(m: &Model, d: usize) -> Vec<Vec<u8>> {
    let mut want: Vec<Vec<u8>> = m
        .files
        .iter()
        .filter(|f| f.dir == d)
        .map(|f| f.name.clone())
        .collect();
    want.sort();
    want
}

/// Whether the image has 256-byte (or larger) inodes: times keep
/// nanoseconds and the epoch bits only there.
fn stored(t: Timestamp, large: bool) -> Timestamp {
    if large {
        t
    } else {
        Timestamp {
            sec: t.sec as i32 as i64,
            nsec: 0,
        }
    }
}

/// The engine's view (a fresh read-only open of the same bytes) equals
/// the model.
pub fn check_engine(bytes: Vec<u8>, m: &Model) -> Result<(), String> {
    let vol = Volume::open(MemDevice::from_vec(bytes), &OpenOptions::default())
        .map_err(|e| format!("reopen: {e}"))?;
    let large = vol.sb().inode_size > 128;
    for (d, &dino) in m.dirs.iter().enumerate() {
        let mut names = Vec::new();
        vol.readdir(dino, 0, &mut |e| {
            names.push(e.name.to_vec());
            true
        })
        .map_err(|e| format!("readdir {}: {e}", DIRS[d]))?;
        names.retain(|n| modelled(d, n));
        names.sort();
        let want = model_names(m, d);
        if names != want {
            return Err(format!(
                "engine: directory {:?} lists {} names, model {}",
                DIRS[d],
                names.len(),
                want.len()
            ));
        }
    }
    for f in &m.files {
        let a = vol
            .getattr(f.ino)
            .map_err(|e| format!("engine getattr {:?}: {e}", f.name))?;
        if (a.mode & 0o7777) as u16 != f.mode
            || a.uid != f.uid
            || a.gid != f.gid
            || a.size != f.data.len() as u64
            || a.nlink != 1
        {
            return Err(format!(
                "engine: {:?} attributes {a:?} differ from the model",
                f.name
            ));
        }
        if let Some(t) = f.mtime {
            if a.mtime != stored(t, large) {
                return Err(format!(
                    "engine: {:?} mtime {:?}, model {:?}",
                    f.name, a.mtime, t
                ));
            }
        }
        let mut buf = vec![0u8; f.data.len()];
        let n = vol
            .read(f.ino, 0, &mut buf)
            .map_err(|e| format!("engine read {:?}: {e}", f.name))?;
        if n != f.data.len() || buf != f.data {
            return Err(format!(
                "engine: {:?} contents differ from the model",
                f.name
            ));
        }
        if !m.geo.inline {
            let inode = vol
                .inode(f.ino)
                .map_err(|e| format!("engine inode {:?}: {e}", f.name))?;
            let limit = state_limit(f, m.geo.bs);
            let mut runs = Vec::new();
            let mut l = 0u64;
            while l < limit {
                let r = vol
                    .map_block(&inode, l)
                    .map_err(|e| format!("engine map {:?} block {l}: {e}", f.name))?;
                match r {
                    Run::Mapped { len, unwritten, .. } => {
                        runs.push((l, len, if unwritten { St::Unwritten } else { St::Data }))
                    }
                    Run::Hole { .. } => {}
                }
                l += r.len().max(1);
            }
            check_states("engine", f, &runs)?;
        }
    }
    Ok(())
}

/// How far block states are compared: the model's blocks and the size.
fn state_limit(f: &FileModel, bs: u64) -> u64 {
    (f.blocks.len() as u64)
        .max((f.data.len() as u64).div_ceil(bs))
        .min(1 << 22)
}

/// `runs` (first block, blocks, state; holes left out) agree with the
/// model's block states.
fn check_states(who: &str, f: &FileModel, runs: &[(u64, u64, St)]) -> Result<(), String> {
    // Past the model's blocks everything must be a hole.
    let end = runs
        .iter()
        .map(|r| r.0 + r.1)
        .max()
        .unwrap_or(0)
        .max(f.blocks.len() as u64)
        .min(1 << 22);
    let mut got = vec![St::Hole; end as usize];
    for &(start, len, st) in runs {
        for b in start..(start + len).min(end) {
            got[b as usize] = st;
        }
    }
    for (b, &g) in got.iter().enumerate() {
        let want = f.st(b as u64);
        if !want.admits(g) {
            return Err(format!(
                "{who}: {:?} block {b} is {g:?}, the model says {want:?}",
                String::from_utf8_lossy(&f.name)
            ));
        }
    }
    Ok(())
}

/// `e2fsck -fn` exits 0 on the image file.
pub fn check_fsck(img: &Path) -> Result<(), String> {
    let (code, text) = e2fsck_check(img);
    if code != 0 {
        return Err(format!("e2fsck -fn exited {code}:\n{text}"));
    }
    Ok(())
}

/// The kernel's read-only mount of the image shows the model.
pub fn check_kernel(img: &Path, m: &Model) -> Result<(), String> {
    let mnt = KernelMount::ro(img).map_err(|e| format!("kernel mount: {e}"))?;
    let root = mnt.path().to_path_buf();
    let vol = Volume::open(
        MemDevice::from_vec(std::fs::read(img).map_err(|e| e.to_string())?),
        &OpenOptions::default(),
    )
    .map_err(|e| e.to_string())?;
    let large = vol.sb().inode_size > 128;
    for (d, dir) in DIRS.iter().enumerate() {
        let p = root.join(dir);
        let mut names: Vec<Vec<u8>> = std::fs::read_dir(&p)
            .map_err(|e| format!("kernel readdir {dir:?}: {e}"))?
            .map(|e| {
                use std::os::unix::ffi::OsStrExt;
                e.unwrap().file_name().as_bytes().to_vec()
            })
            .filter(|n| modelled(d, n))
            .collect();
        names.sort();
        let want = model_names(m, d);
        if names != want {
            return Err(format!(
                "kernel: directory {dir:?} lists {:?}, model {:?}",
                names
                    .iter()
                    .map(|n| String::from_utf8_lossy(n).into_owned())
                    .collect::<Vec<_>>(),
                want.iter()
                    .map(|n| String::from_utf8_lossy(n).into_owned())
                    .collect::<Vec<_>>()
            ));
        }
    }
    for f in &m.files {
        use std::os::unix::ffi::OsStrExt;
        let p: PathBuf = root
            .join(DIRS[f.dir])
            .join(std::ffi::OsStr::from_bytes(&f.name));
        let md = std::fs::symlink_metadata(&p).map_err(|e| format!("kernel stat {p:?}: {e}"))?;
        let got = (
            md.mode() & 0o7777,
            md.uid(),
            md.gid(),
            md.len(),
            md.nlink(),
            md.ino(),
        );
        let want = (
            f.mode as u32,
            f.uid,
            f.gid,
            f.data.len() as u64,
            1,
            f.ino as u64,
        );
        if got != want {
            return Err(format!(
                "kernel: {:?} (mode, uid, gid, size, nlink, ino) {got:?}, model {want:?}",
                String::from_utf8_lossy(&f.name)
            ));
        }
        if let Some(t) = f.mtime {
            let t = stored(t, large);
            if (md.mtime(), md.mtime_nsec() as u32) != (t.sec, t.nsec) {
                return Err(format!(
                    "kernel: {:?} mtime {}.{}, model {:?}",
                    f.name,
                    md.mtime(),
                    md.mtime_nsec(),
                    t
                ));
            }
        }
        if let Some(t) = f.atime {
            let t = stored(t, large);
            if (md.atime(), md.atime_nsec() as u32) != (t.sec, t.nsec) {
                return Err(format!(
                    "kernel: {:?} atime {}.{}, model {:?}",
                    f.name,
                    md.atime(),
                    md.atime_nsec(),
                    t
                ));
            }
        }
        let data = std::fs::read(&p).map_err(|e| format!("kernel read {p:?}: {e}"))?;
        if data != f.data {
            let at = data.iter().zip(&f.data).position(|(a, b)| a != b);
            return Err(format!(
                "kernel: {:?} contents differ (len {} vs {}, first difference at {at:?})",
                f.name,
                data.len(),
                f.data.len()
            ));
        }
        // st_blocks as the engine reports it.
        let ea = vol
            .getattr(f.ino)
            .map_err(|e| format!("engine getattr {:?}: {e}", f.name))?;
        if md.blocks() != ea.blocks {
            return Err(format!(
                "kernel: {:?} st_blocks {}, engine {}",
                String::from_utf8_lossy(&f.name),
                md.blocks(),
                ea.blocks
            ));
        }
        // Holes, written and unwritten blocks as the model says.
        let file = std::fs::File::open(&p).map_err(|e| format!("open {p:?}: {e}"))?;
        let exts = kernel_fiemap(&file)?;
        if !exts
            .iter()
            .any(|e| e.fe_flags & FIEMAP_EXTENT_DATA_INLINE != 0)
            && !m.geo.inline
        {
            let bs = m.geo.bs;
            let runs: Vec<(u64, u64, St)> = exts
                .iter()
                .map(|e| {
                    let st = if e.fe_flags & FIEMAP_EXTENT_UNWRITTEN != 0 {
                        St::Unwritten
                    } else {
                        St::Data
                    };
                    (e.fe_logical / bs, e.fe_length.div_ceil(bs), st)
                })
                .collect();
            check_states("kernel", f, &runs)?;
        }
    }
    mnt.unmount().map_err(|e| format!("unmount: {e}"))?;
    // i_blocks as e2fsprogs reads it.
    let reqs: Vec<String> = m
        .files
        .iter()
        .map(|f| format!("stat <{}>", f.ino))
        .collect();
    let outs = debugfs_script(img, &reqs, false)?;
    for (f, out) in m.files.iter().zip(&outs) {
        let st = parse_stat(out)?;
        let raw = vol
            .inode(f.ino)
            .map_err(|e| format!("engine inode {:?}: {e}", f.name))?
            .blocks_512;
        if st.blockcount != raw {
            return Err(format!(
                "debugfs: {:?} Blockcount {}, engine i_blocks {raw}",
                String::from_utf8_lossy(&f.name),
                st.blockcount
            ));
        }
    }
    Ok(())
}

/// Run `ops` on a fresh image of `p`, close, and check the result with
/// every oracle (`kernel`: also the kernel's mount).
pub fn run_sequence(p: &Profile, ops: &[Op], kernel: bool) -> Result<(), String> {
    let (vol, dev) = open_rw(image(p), &rw_options());
    let mut m = Model::load(&vol);
    for (k, op) in ops.iter().enumerate() {
        apply(&vol, &mut m, op).map_err(|e| format!("step {k} {op:?}: {e}"))?;
    }
    vol.close().map_err(|e| format!("close: {e}"))?;
    drop(vol);
    let bytes = dev.snapshot();
    check_engine(bytes.clone(), &m)?;
    let img = tempfile_path(&format!("writes-{}", p.name)).with_extension("img");
    write_sparse(&img, &bytes).map_err(|e| e.to_string())?;
    let r = check_fsck(&img).and_then(|_| {
        if kernel {
            check_kernel(&img, &m)
        } else {
            Ok(())
        }
    });
    if r.is_err() {
        // Keep the image for a look.
        let keep = cache_dir().join(format!("failed-writes-{}.img", p.name));
        let _ = std::fs::rename(&img, &keep);
        return r.map_err(|e| format!("{e}\n(image kept at {})", keep.display()));
    }
    let _ = std::fs::remove_file(&img);
    Ok(())
}
