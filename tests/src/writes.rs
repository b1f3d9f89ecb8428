//! The engine's write path against the real thing: images made by
//! `mke2fs` (per profile of the feature matrix), loaded into a
//! [`MemDevice`]; random operation sequences applied through the engine
//! and to a model of the tree ([`model`]: names, types, modes, owners,
//! times, sizes, contents, link counts, symlink targets, device numbers,
//! xattrs and ACLs, and per file which blocks are holes, written or
//! unwritten); then the image must pass `e2fsck -fn`, and the kernel's
//! ext4 (a read-only loop mount, walked with statx and llistxattr; FIEMAP
//! and `st_blocks` against `debugfs`' `i_blocks`) and the engine reopened
//! read-only must both show exactly the model.

pub mod model;
pub mod strategy;

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use ext4_engine::{InodeNo, MemDevice, OpenOptions, Run, Timestamp, Volume};

use crate::kwimage::{kernel_fiemap, FIEMAP_EXTENT_DATA_INLINE, FIEMAP_EXTENT_UNWRITTEN};
use crate::oracle::{debugfs_script, e2fsck_check, parse_stat, tempfile_path, KernelMount};
use crate::snapshot::{
    diff, engine_snapshot, format_diffs, host_snapshot, Compare, Difference, Entry, Field, Kind,
    Snapshot, WalkOptions,
};
use crate::tree::Time;
use crate::util::{cache_dir, run_ok};
use crate::util::{ContentHasher, CHUNK};

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
    /// `tune2fs` arguments applied after `mke2fs` (e.g. `-E hash_alg=`).
    pub tune: &'static [&'static str],
    /// `debugfs -w` requests applied last (e.g. `ssv flags 2`: names
    /// hash unsigned).
    pub debugfs: &'static [&'static str],
}

pub const EXT4_DEFAULT: Profile = Profile {
    name: "ext4",
    mkfs: &["-t", "ext4", "-b", "4096", "-g", "8192"],
    size_mib: 128,
    tune: &[],
    debugfs: &[],
};
pub const EXT4_1K: Profile = Profile {
    name: "ext4-1k",
    mkfs: &["-t", "ext4", "-b", "1024"],
    size_mib: 32,
    tune: &[],
    debugfs: &[],
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
    tune: &[],
    debugfs: &[],
};
pub const EXT4_128: Profile = Profile {
    name: "ext4-128-inodes",
    mkfs: &["-t", "ext4", "-b", "4096", "-g", "8192", "-I", "128"],
    size_mib: 32,
    tune: &[],
    debugfs: &[],
};
/// Small enough to fill: 4 MiB, 1 KiB blocks, few inodes.
pub const EXT4_SMALL: Profile = Profile {
    name: "ext4-small",
    mkfs: &["-t", "ext4", "-b", "1024", "-N", "128"],
    size_mib: 4,
    tune: &[],
    debugfs: &[],
};

/// Three-level hash trees (`large_dir`), 1 KiB blocks: deep trees soon.
pub const EXT4_LARGE_DIR: Profile = Profile {
    name: "ext4-large_dir",
    mkfs: &["-t", "ext4", "-b", "1024", "-O", "large_dir"],
    size_mib: 32,
    tune: &[],
    debugfs: &[],
};
/// Orphans in the orphan file (`orphan_file`).
pub const EXT4_ORPHAN_FILE: Profile = Profile {
    name: "ext4-orphan_file",
    mkfs: &[
        "-t",
        "ext4",
        "-b",
        "4096",
        "-g",
        "8192",
        "-O",
        "orphan_file",
    ],
    size_mib: 64,
    tune: &[],
    debugfs: &[],
};
/// Many names per directory with the TEA hash (hash-tree splits).
pub const EXT4_HTREE_TEA: Profile = Profile {
    name: "ext4-htree-tea",
    mkfs: &["-t", "ext4", "-b", "1024", "-N", "16384"],
    size_mib: 48,
    tune: &["-E", "hash_alg=tea"],
    debugfs: &[],
};
/// The legacy hash, unsigned (`s_flags`), no checksums.
pub const EXT4_HTREE_LEGACY: Profile = Profile {
    name: "ext4-htree-legacy",
    mkfs: &[
        "-t",
        "ext4",
        "-b",
        "1024",
        "-O",
        "^metadata_csum",
        "-N",
        "16384",
    ],
    size_mib: 48,
    tune: &["-E", "hash_alg=legacy"],
    debugfs: &["ssv flags 2"],
};

/// ext2: block-mapped files, no journal; 1 KiB blocks, so double and
/// triple indirect blocks come early (256 pointers a block).
pub const EXT2: Profile = Profile {
    name: "ext2",
    mkfs: &["-t", "ext2", "-b", "1024"],
    size_mib: 32,
    tune: &[],
    debugfs: &[],
};
/// ext3's defaults: block-mapped files and a journal.
pub const EXT3: Profile = Profile {
    name: "ext3",
    mkfs: &["-t", "ext3", "-b", "4096", "-g", "8192"],
    size_mib: 64,
    tune: &[],
    debugfs: &[],
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
    tune: &[],
    debugfs: &[],
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
    tune: &[],
    debugfs: &[],
};
/// 16 KiB clusters of 1 KiB blocks, 1024 clusters a group (`-g` counts
/// clusters under bigalloc).
pub const EXT4_BIGALLOC_16K: Profile = Profile {
    name: "ext4-bigalloc16k",
    mkfs: &[
        "-t", "ext4", "-O", "bigalloc", "-b", "1024", "-C", "16384", "-g", "1024",
    ],
    size_mib: 64,
    tune: &[],
    debugfs: &[],
};
/// 64 KiB clusters of 4 KiB blocks, 256 clusters a group.
pub const EXT4_BIGALLOC_64K: Profile = Profile {
    name: "ext4-bigalloc64k",
    mkfs: &[
        "-t", "ext4", "-O", "bigalloc", "-b", "4096", "-C", "65536", "-g", "256",
    ],
    size_mib: 128,
    tune: &[],
    debugfs: &[],
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
    tune: &[],
    debugfs: &[],
};

pub const PROFILES: &[Profile] = &[
    EXT4_DEFAULT,
    EXT4_1K,
    EXT4_NO_CSUM,
    EXT4_128,
    EXT4_SMALL,
    EXT4_LARGE_DIR,
    EXT4_ORPHAN_FILE,
    EXT4_HTREE_TEA,
    EXT4_HTREE_LEGACY,
    EXT2,
    EXT3,
    EXT4_NO_EXTENT,
    EXT4_INLINE,
    EXT4_BIGALLOC_16K,
    EXT4_BIGALLOC_64K,
    EXT4_META_BG,
];

pub use model::{seed_contents, DIRS, SEED_FILE};

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
    if !p.tune.is_empty() {
        run_ok(Command::new("tune2fs").args(p.tune).arg(&img));
    }
    if !p.debugfs.is_empty() {
        let reqs: Vec<String> = p.debugfs.iter().map(|r| r.to_string()).collect();
        crate::oracle::debugfs_script(&img, &reqs, true).unwrap();
    }
    let bytes = std::fs::read(&img).unwrap();
    let _ = std::fs::remove_file(&img);
    let _ = std::fs::remove_dir_all(&src);
    cache.lock().unwrap().insert(p.name, bytes.clone());
    bytes
}

/// The engine's clock in these tests: a tick set by the test before each
/// operation (per thread), so the model knows every time the engine sets.
pub mod clock {
    use std::cell::Cell;

    use ext4_engine::Timestamp;

    thread_local! {
        static STEP: Cell<u64> = const { Cell::new(0) };
    }

    /// The time of tick `step` (nanoseconds included).
    pub fn at(step: u64) -> Timestamp {
        Timestamp {
            sec: 1_700_000_000 + step as i64,
            nsec: ((123_456_789 + step * 1_000_003) % 1_000_000_000) as u32,
        }
    }

    /// Let the engine's clock (in this thread) read tick `step`.
    pub fn set(step: u64) {
        STEP.with(|s| s.set(step));
    }

    pub fn now() -> Timestamp {
        at(STEP.with(|s| s.get()))
    }
}

/// The engine's clock of the tests ([`clock`]): tick 0 unless a test set
/// another.
pub fn fixed_now() -> Timestamp {
    clock::now()
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

pub use model::{
    apply, bytes_of, falloc_expect, Body, Geometry, Model, Node, Op, St, FALLOC_MODES,
};

/// Stored as the inode keeps it: 128-byte inodes have whole seconds in
/// 32 bits.
pub fn stored(t: Timestamp, large: bool) -> Time {
    if large {
        Time {
            sec: t.sec,
            nsec: t.nsec,
        }
    } else {
        Time {
            sec: t.sec as i32 as i64,
            nsec: 0,
        }
    }
}

/// What the model says every path looks like, as a [`Snapshot`].
pub fn model_snapshot(m: &Model) -> Snapshot {
    let mut snap = Snapshot::default();
    let mut queue = vec![(b"/".to_vec(), model::ROOT)];
    while let Some((path, ino)) = queue.pop() {
        snap.entries.insert(path.clone(), model_entry(m, ino));
        if let Some(names) = m.dirs.get(&ino) {
            for (name, &child) in names {
                let mut p = path.clone();
                if p != b"/" {
                    p.push(b'/');
                }
                p.extend_from_slice(name);
                if m.nodes[&child].is_dir() {
                    queue.push((p, child));
                } else {
                    snap.entries.insert(p, model_entry(m, child));
                }
            }
        }
    }
    snap
}

fn model_entry(m: &Model, ino: InodeNo) -> Entry {
    let n = &m.nodes[&ino];
    let large = m.large_inodes;
    let (kind, ftype, size, rdev, link, content) = match &n.body {
        Body::File(d) => {
            let mut h = ContentHasher::new();
            for (i, c) in d.chunks(CHUNK).enumerate() {
                h.chunk(i as u64, c);
            }
            (
                Kind::File,
                0o100000,
                d.len() as u64,
                (0, 0),
                None,
                Some(Ok(h.finish(d.len() as u64))),
            )
        }
        Body::Dir => (Kind::Dir, 0o040000, 0, (0, 0), None, None),
        Body::Symlink(t) => (
            Kind::Symlink,
            0o120000,
            t.len() as u64,
            (0, 0),
            Some(Ok(t.clone())),
            None,
        ),
        Body::Char(a, b) => (Kind::Char, 0o020000, 0, (*a, *b), None, None),
        Body::Block(a, b) => (Kind::Block, 0o060000, 0, (*a, *b), None, None),
        Body::Fifo => (Kind::Fifo, 0o010000, 0, (0, 0), None, None),
        Body::Socket => (Kind::Socket, 0o140000, 0, (0, 0), None, None),
    };
    Entry {
        kind,
        mode: ftype | n.mode as u32,
        nlink: m.nlink(ino),
        uid: n.uid,
        gid: n.gid,
        size,
        blocks: 0,
        blksize: 0,
        atime: stored(n.atime, large),
        mtime: stored(n.mtime, large),
        ctime: stored(n.ctime, large),
        btime: n.crtime.map(|t| stored(t, large)),
        rdev,
        ino: ino.0 as u64,
        generation: None,
        flags: None,
        link,
        xattrs: Ok(n.xattrs.clone()),
        content,
        data_map: None,
    }
}

/// What the model knows of every path (directory sizes are layout).
pub const MODEL_FIELDS: &[Field] = &[
    Field::Kind,
    Field::Mode,
    Field::Nlink,
    Field::Uid,
    Field::Gid,
    Field::Size,
    Field::Atime,
    Field::Mtime,
    Field::Ctime,
    Field::Btime,
    Field::Rdev,
    Field::Ino,
    Field::Link,
    Field::Xattrs,
    Field::Content,
];

const MODEL_COMPARE: Compare<'static> = Compare {
    fields: MODEL_FIELDS,
    ignore_dir_size: true,
    ignore_paths: &[],
};

const WALK: WalkOptions = WalkOptions {
    content: true,
    data_map: false,
    ioctls: false,
};

/// The engine's view (a fresh read-only open of the same bytes) equals
/// the model, ".." of every directory included.
pub fn check_engine(bytes: Vec<u8>, m: &Model) -> Result<(), String> {
    let vol = Volume::open(MemDevice::from_vec(bytes), &OpenOptions::default())
        .map_err(|e| format!("reopen: {e}"))?;
    let got = engine_snapshot(&vol, WALK);
    let d = diff(&model_snapshot(m), &got, &MODEL_COMPARE);
    if !d.is_empty() {
        return Err(format_diffs("engine (reopened) vs model", &d, 20));
    }
    if m.geo.inline {
        // Which files are inline is the kernel's choice as much as ours.
        return Ok(());
    }
    for ino in m.files() {
        let n = &m.nodes[&ino];
        let inode = vol
            .inode(ino)
            .map_err(|e| format!("engine inode {ino}: {e}"))?;
        let mut runs = Vec::new();
        let mut l = 0u64;
        while l < state_limit(n, m.geo.bs) {
            let r = vol
                .map_block(&inode, ext4_engine::FileBlock(l as u32))
                .map_err(|e| format!("engine map {ino} block {l}: {e}"))?;
            if let Run::Mapped { len, unwritten, .. } = r {
                let st = if unwritten { St::Unwritten } else { St::Data };
                runs.push((l, len, st));
            }
            l += r.len().max(1);
        }
        check_states("engine", ino, n, &runs)?;
    }
    Ok(())
}

/// How far block states are compared: the model's blocks and the size.
fn state_limit(n: &Node, bs: u64) -> u64 {
    (n.blocks.len() as u64)
        .max(n.size().div_ceil(bs))
        .min(1 << 22)
}

/// `runs` (first block, blocks, state; holes left out) of file `ino`
/// agree with the model's block states.
fn check_states(who: &str, ino: InodeNo, n: &Node, runs: &[(u64, u64, St)]) -> Result<(), String> {
    // Past the model's blocks everything must be a hole.
    let end = runs
        .iter()
        .map(|r| r.0 + r.1)
        .max()
        .unwrap_or(0)
        .max(n.blocks.len() as u64)
        .min(1 << 22);
    let mut got = vec![St::Hole; end as usize];
    for &(start, len, st) in runs {
        for b in start..(start + len).min(end) {
            got[b as usize] = st;
        }
    }
    for (b, &g) in got.iter().enumerate() {
        let want = n.st(b as u64);
        if !want.admits(g) {
            return Err(format!(
                "{who}: inode {ino} block {b} is {g:?}, the model says {want:?}"
            ));
        }
    }
    Ok(())
}

/// One path of every inode of the model.
fn model_paths(m: &Model) -> BTreeMap<InodeNo, PathBuf> {
    let mut out = BTreeMap::new();
    let mut queue = vec![(PathBuf::new(), model::ROOT)];
    out.insert(model::ROOT, PathBuf::new());
    while let Some((path, d)) = queue.pop() {
        for (name, &child) in &m.dirs[&d] {
            let p = path.join(std::ffi::OsStr::from_bytes(name));
            if out.insert(child, p.clone()).is_none() && m.nodes[&child].is_dir() {
                queue.push((p, child));
            }
        }
    }
    out
}

/// `e2fsck -fn` exits 0 on the image file.
pub fn check_fsck(img: &Path) -> Result<(), String> {
    let (code, text) = e2fsck_check(img);
    if code != 0 {
        return Err(format!("e2fsck -fn exited {code}:\n{text}"));
    }
    Ok(())
}

/// The kernel's read-only mount of the image shows the model: every
/// path (statx, llistxattr/getxattr, contents, symlink targets), and
/// every directory's ".." names its parent.
pub fn check_kernel(img: &Path, m: &Model) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let mnt = KernelMount::ro(img).map_err(|e| format!("kernel mount: {e}"))?;
    let got = host_snapshot(mnt.path(), WALK);
    let mut d = diff(&model_snapshot(m), &got, &MODEL_COMPARE);
    for (p, e) in &got.entries {
        if e.kind != Kind::Dir {
            continue;
        }
        let rel = String::from_utf8_lossy(p)
            .trim_start_matches('/')
            .to_string();
        let host = mnt.path().join(&rel).join("..");
        let parent = std::fs::symlink_metadata(&host).map(|x| x.ino());
        let want = m.parent.get(&InodeNo(e.ino as u32)).map(|&x| x.0 as u64);
        let ok = if rel.is_empty() {
            true
        } else {
            parent.as_ref().ok() == want.as_ref()
        };
        if !ok {
            d.push(Difference {
                path: String::from_utf8_lossy(p).into_owned(),
                field: "..".into(),
                expected: format!("{want:?}"),
                got: format!("{parent:?}"),
            });
        }
    }
    let states = kernel_states(mnt.path(), m);
    mnt.unmount().map_err(|e| format!("unmount: {e}"))?;
    if !d.is_empty() {
        return Err(format_diffs("kernel vs model", &d, 20));
    }
    states?;
    // st_blocks of every path as the engine counts it.
    let vol = crate::open_engine(img)?;
    let blocks = Compare {
        fields: &[Field::Blocks],
        ignore_dir_size: false,
        ignore_paths: &[],
    };
    let d = diff(&got, &engine_snapshot(&vol, WALK), &blocks);
    if !d.is_empty() {
        return Err(format_diffs("kernel vs engine (st_blocks)", &d, 20));
    }
    check_i_blocks(img, m, &vol)
}

/// Holes, written and unwritten blocks of every file as the kernel's
/// mount shows them (FIEMAP) are what the model says.
fn kernel_states(root: &Path, m: &Model) -> Result<(), String> {
    for (ino, rel) in model_paths(m) {
        let p = root.join(&rel);
        let n = &m.nodes[&ino];
        if !matches!(n.body, Body::File(_)) || m.geo.inline {
            continue;
        }
        let file = std::fs::File::open(&p).map_err(|e| format!("open {p:?}: {e}"))?;
        let exts = kernel_fiemap(&file)?;
        if exts
            .iter()
            .any(|e| e.fe_flags & FIEMAP_EXTENT_DATA_INLINE != 0)
        {
            continue;
        }
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
        check_states("kernel", ino, n, &runs)?;
    }
    Ok(())
}

/// Every inode's `i_blocks` as e2fsprogs reads it (`debugfs stat`)
/// equals the engine's.
fn check_i_blocks<D: ext4_engine::BlockDevice>(
    img: &Path,
    m: &Model,
    vol: &Volume<D>,
) -> Result<(), String> {
    let inos: Vec<InodeNo> = m.nodes.keys().copied().collect();
    let reqs: Vec<String> = inos.iter().map(|i| format!("stat <{i}>")).collect();
    let outs = debugfs_script(img, &reqs, false)?;
    for (&ino, out) in inos.iter().zip(&outs) {
        let st = parse_stat(out)?;
        let raw = vol
            .inode(ino)
            .map_err(|e| format!("engine inode {ino}: {e}"))?
            .blocks_512;
        if st.blockcount != raw {
            return Err(format!(
                "debugfs: inode {ino} Blockcount {}, engine i_blocks {raw}",
                st.blockcount
            ));
        }
    }
    Ok(())
}

/// Run `ops` on a fresh image of `p`, close, and check the result with
/// every oracle (`kernel`: also the kernel's mount).
pub fn run_sequence(p: &Profile, ops: &[Op], kernel: bool) -> Result<(), String> {
    clock::set(0);
    let (vol, dev) = open_rw(image(p), &rw_options());
    let mut m = Model::load(&vol);
    for (k, op) in ops.iter().enumerate() {
        apply(&vol, &mut m, op, k as u64 + 1).map_err(|e| format!("step {k} {op:?}: {e}"))?;
    }
    clock::set(ops.len() as u64 + 1);
    vol.close().map_err(|e| format!("close: {e}"))?;
    drop(vol);
    check_image(p, dev.snapshot(), &m, kernel)
}

/// Check image `bytes` against the model with every oracle; a failing
/// image is kept for a look.
pub fn check_image(p: &Profile, bytes: Vec<u8>, m: &Model, kernel: bool) -> Result<(), String> {
    check_engine(bytes.clone(), m)?;
    let img = tempfile_path(&format!("writes-{}", p.name)).with_extension("img");
    write_sparse(&img, &bytes).map_err(|e| e.to_string())?;
    let r = check_fsck(&img).and_then(|_| {
        if kernel {
            check_kernel(&img, m)
        } else {
            Ok(())
        }
    });
    if r.is_err() {
        let keep = cache_dir().join(format!("failed-writes-{}.img", p.name));
        let _ = std::fs::rename(&img, &keep);
        return r.map_err(|e| format!("{e}\n(image kept at {})", keep.display()));
    }
    let _ = std::fs::remove_file(&img);
    Ok(())
}
