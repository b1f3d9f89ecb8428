//! The engine's write path against the real thing: images made by
//! `mke2fs` (per profile of the feature matrix), loaded into a
//! [`MemDevice`]; random operation sequences applied through the engine
//! and to a model of the tree (names, modes, owners, sizes, contents, link
//! counts, explicitly set times); then the image must pass `e2fsck -fn`,
//! and the kernel's ext4 (a read-only loop mount) and the engine reopened
//! read-only must both show exactly the model.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use ext4_engine::attr::Timestamp;
use ext4_engine::device::{BlockDevice, MemDevice};
use ext4_engine::volume::{OpenOptions, Volume};
use ext4_engine::{Cred, Error, InodeNo, SetAttr, SetTime};

use crate::oracle::{e2fsck_check, tempfile_path, KernelMount};
use crate::util::{cache_dir, run_ok};

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

pub const PROFILES: &[Profile] = &[EXT4_DEFAULT, EXT4_1K, EXT4_NO_CSUM, EXT4_128, EXT4_SMALL];

/// The directories every image starts with (besides the root).
pub const DIRS: &[&str] = &["", "d1", "d2"];
/// A file every image starts with, and its contents.
pub const SEED_FILE: &str = "seed";

pub fn seed_contents() -> Vec<u8> {
    (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect()
}

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

/// A fixed clock (nanoseconds included), so the model knows every time.
pub fn fixed_now() -> Timestamp {
    Timestamp {
        sec: 1_700_000_000,
        nsec: 123_456_789,
    }
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

/// A file of the model.
#[derive(Clone, Debug)]
pub struct FileModel {
    pub dir: usize,
    pub name: Vec<u8>,
    pub ino: u32,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub data: Vec<u8>,
    pub atime: Option<Timestamp>,
    pub mtime: Option<Timestamp>,
}

/// What the tree must look like.
#[derive(Clone, Debug, Default)]
pub struct Model {
    /// Inode numbers of [`DIRS`].
    pub dirs: Vec<u32>,
    pub files: Vec<FileModel>,
}

impl Model {
    /// The starting tree of [`image`], as the engine finds it.
    pub fn load<D: BlockDevice>(vol: &Volume<D>) -> Model {
        let mut dirs = Vec::new();
        for d in DIRS {
            let ino = if d.is_empty() {
                2
            } else {
                vol.lookup_ino(2, d.as_bytes()).expect("starting directory")
            };
            dirs.push(ino);
        }
        let ino = vol.lookup_ino(2, SEED_FILE.as_bytes()).unwrap();
        let a = vol.getattr(ino).unwrap();
        let files = vec![FileModel {
            dir: 0,
            name: SEED_FILE.as_bytes().to_vec(),
            ino,
            mode: (a.mode & 0o7777) as u16,
            uid: a.uid,
            gid: a.gid,
            data: seed_contents(),
            atime: None,
            mtime: None,
        }];
        Model { dirs, files }
    }
}

/// One step of a random sequence. Indices are taken modulo what exists.
#[derive(Clone, Debug)]
pub enum Op {
    Create {
        dir: u8,
        name: u16,
        pad: u8,
        mode: u16,
    },
    Write {
        file: u16,
        off: u32,
        len: u32,
        seed: u8,
    },
    Truncate {
        file: u16,
        size: u32,
    },
    Unlink {
        file: u16,
    },
    Chmod {
        file: u16,
        mode: u16,
    },
    Chown {
        file: u16,
        uid: u16,
        gid: u16,
    },
    Utimes {
        file: u16,
        atime: i32,
        mtime: i32,
        nsec: u32,
    },
    Commit,
}

pub fn bytes_of(seed: u8, off: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (seed as u32)
                .wrapping_mul(31)
                .wrapping_add((off as usize + i) as u32 * 13) as u8
                | 1
        })
        .collect()
}

fn name_of(name: u16, pad: u8) -> Vec<u8> {
    let mut n = format!("f{name}");
    while n.len() < pad as usize % 200 + 1 {
        n.push('x');
    }
    n.into_bytes()
}

/// Apply `op` to the engine and the model. Outcomes the model cannot
/// predict exactly (ENOSPC on a full filesystem, a full hash-tree leaf)
/// are accepted when the engine reports them and the model stays as the
/// engine says.
pub fn apply<D: BlockDevice>(vol: &Volume<D>, m: &mut Model, op: &Op) -> Result<(), String> {
    let cred = Cred::ROOT;
    let pick = |f: u16| (!m.files.is_empty()).then(|| f as usize % m.files.len());
    match *op {
        Op::Create {
            dir,
            name,
            pad,
            mode,
        } => {
            let d = dir as usize % m.dirs.len();
            let name = name_of(name, pad);
            let mode = mode & 0o7777;
            let exists = m.files.iter().any(|f| f.dir == d && f.name == name)
                || (d == 0 && DIRS.iter().any(|x| x.as_bytes() == name.as_slice()));
            match vol.create(InodeNo(m.dirs[d]), &name, mode, &cred) {
                Ok(a) => {
                    if exists {
                        return Err(format!("create {name:?}: succeeded over an existing name"));
                    }
                    m.files.push(FileModel {
                        dir: d,
                        name,
                        ino: a.ino,
                        mode,
                        uid: 0,
                        gid: 0,
                        data: Vec::new(),
                        atime: Some(fixed_now()),
                        mtime: Some(fixed_now()),
                    });
                }
                Err(Error::Exists) if exists => {}
                Err(Error::NoSpace) | Err(Error::Unsupported { .. }) if !exists => {}
                Err(e) => return Err(format!("create {name:?}: {e}")),
            }
        }
        Op::Write {
            file,
            off,
            len,
            seed,
        } => {
            let Some(i) = pick(file) else { return Ok(()) };
            let data = bytes_of(seed, off, len as usize);
            let f = &mut m.files[i];
            let n = match vol.write(InodeNo(f.ino), off as u64, &data, &cred) {
                Ok(n) => n,
                Err(Error::NoSpace) => 0,
                Err(e) => return Err(format!("write {:?} at {off}+{len}: {e}", f.name)),
            };
            if n > 0 {
                let end = off as usize + n;
                if f.data.len() < end {
                    f.data.resize(end, 0);
                }
                f.data[off as usize..end].copy_from_slice(&data[..n]);
                f.mtime = Some(fixed_now());
            } else if n < data.len() && !data.is_empty() {
                // Nothing written (full): nothing changed.
            }
        }
        Op::Truncate { file, size } => {
            let Some(i) = pick(file) else { return Ok(()) };
            let f = &mut m.files[i];
            vol.truncate(InodeNo(f.ino), size as u64)
                .map_err(|e| format!("truncate {:?} to {size}: {e}", f.name))?;
            if size as usize != f.data.len() {
                f.mtime = Some(fixed_now());
            }
            f.data.resize(size as usize, 0);
        }
        Op::Unlink { file } => {
            let Some(i) = pick(file) else { return Ok(()) };
            let f = m.files.remove(i);
            vol.unlink(InodeNo(m.dirs[f.dir]), &f.name)
                .map_err(|e| format!("unlink {:?}: {e}", f.name))?;
        }
        Op::Chmod { file, mode } => {
            let Some(i) = pick(file) else { return Ok(()) };
            let f = &mut m.files[i];
            let set = SetAttr {
                mode: Some(mode & 0o7777),
                ..SetAttr::default()
            };
            vol.setattr(InodeNo(f.ino), &set)
                .map_err(|e| format!("chmod {:?}: {e}", f.name))?;
            f.mode = mode & 0o7777;
        }
        Op::Chown { file, uid, gid } => {
            let Some(i) = pick(file) else { return Ok(()) };
            let f = &mut m.files[i];
            let (uid, gid) = (uid as u32 * 1000 + 7, gid as u32 * 999 + 70000);
            let set = SetAttr {
                uid: Some(uid),
                gid: Some(gid),
                ..SetAttr::default()
            };
            vol.setattr(InodeNo(f.ino), &set)
                .map_err(|e| format!("chown {:?}: {e}", f.name))?;
            f.uid = uid;
            f.gid = gid;
        }
        Op::Utimes {
            file,
            atime,
            mtime,
            nsec,
        } => {
            let Some(i) = pick(file) else { return Ok(()) };
            let f = &mut m.files[i];
            let t = |s: i32| Timestamp {
                sec: s as i64,
                nsec: nsec % 1_000_000_000,
            };
            let set = SetAttr {
                atime: Some(SetTime::At(t(atime))),
                mtime: Some(SetTime::At(t(mtime))),
                ..SetAttr::default()
            };
            vol.setattr(InodeNo(f.ino), &set)
                .map_err(|e| format!("utimes {:?}: {e}", f.name))?;
            f.atime = Some(t(atime));
            f.mtime = Some(t(mtime));
        }
        Op::Commit => vol.commit().map_err(|e| format!("commit: {e}"))?,
    }
    Ok(())
}

/// Whether a listed name of directory `d` is the model's business (not
/// `.`, `..`, `lost+found` or a starting directory).
pub fn modelled(d: usize, n: &[u8]) -> bool {
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
pub fn stored(t: Timestamp, large: bool) -> Timestamp {
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
    let large = {
        let vol = Volume::open(
            MemDevice::from_vec(std::fs::read(img).map_err(|e| e.to_string())?),
            &OpenOptions::default(),
        )
        .map_err(|e| e.to_string())?;
        vol.sb().inode_size > 128
    };
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
    }
    mnt.unmount().map_err(|e| format!("unmount: {e}"))?;
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
