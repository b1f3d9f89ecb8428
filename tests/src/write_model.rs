//! The model the engine's write tests compare against: the tree (names,
//! modes, owners, contents, explicitly set times) and, per file, what each
//! block should be (hole, written, unwritten, allocated either way, or not
//! known), with the operations of a random sequence applied to it as the
//! kernel's ext4 would apply them — `fallocate`'s modes with the kernel's
//! errnos included (the table is checked against the running kernel by
//! `tests/tests/engine_fallocate.rs`).

use ext4_engine::attr::Timestamp;
use ext4_engine::device::BlockDevice;
use ext4_engine::error::errno;
use ext4_engine::volume::Volume;
use ext4_engine::write::falloc;
use ext4_engine::{Cred, Error, InodeNo, SetAttr, SetTime};

/// The directories every image starts with (besides the root).
pub const DIRS: &[&str] = &["", "d1", "d2"];
/// A file every image starts with, and its contents.
pub const SEED_FILE: &str = "seed";

pub fn seed_contents() -> Vec<u8> {
    (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect()
}

/// A fixed clock (nanoseconds included), so the model knows every time.
pub fn fixed_now() -> Timestamp {
    Timestamp {
        sec: 1_700_000_000,
        nsec: 123_456_789,
    }
}

/// What a block of a file should be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum St {
    Hole,
    /// Written (FIEMAP without `UNWRITTEN`).
    Data,
    /// Allocated, reading as zeros (FIEMAP `UNWRITTEN`).
    Unwritten,
    /// Allocated, written or unwritten (the kernel and the engine may
    /// differ, e.g. the partial edge blocks of a zero range).
    Alloc,
    /// Not known (after ENOSPC, inline data).
    Any,
}

impl St {
    /// Whether `got` (hole, data or unwritten) agrees with this.
    pub fn admits(self, got: St) -> bool {
        match self {
            St::Any => true,
            St::Alloc => got != St::Hole,
            s => s == got,
        }
    }
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
    /// Block states by logical block (past the end: holes).
    pub blocks: Vec<St>,
    /// Mapped by indirect blocks (no unwritten state, no fallocate but
    /// punch).
    pub blockmapped: bool,
    pub atime: Option<Timestamp>,
    pub mtime: Option<Timestamp>,
}

impl FileModel {
    pub fn st(&self, b: u64) -> St {
        self.blocks.get(b as usize).copied().unwrap_or(St::Hole)
    }

    /// Set blocks `from..to` with `f(old)`.
    fn map(&mut self, from: u64, to: u64, f: impl Fn(St) -> St) {
        if to > self.blocks.len() as u64 {
            self.blocks.resize(to as usize, St::Hole);
        }
        for b in from..to {
            let s = &mut self.blocks[b as usize];
            *s = f(*s);
        }
    }

    fn set(&mut self, from: u64, to: u64, st: St) {
        self.map(from, to, |_| st);
    }
}

/// What the model needs to know of the filesystem.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    pub bs: u64,
    pub cluster: u64,
    /// New files are extent-mapped.
    pub extents: bool,
    /// `inline_data`: small files live in their inode (no blocks).
    pub inline: bool,
    /// The largest size (`s_maxbytes`, extent files).
    pub max_size: u64,
}

/// What the tree must look like.
#[derive(Clone, Debug)]
pub struct Model {
    /// Inode numbers of [`DIRS`].
    pub dirs: Vec<u32>,
    pub files: Vec<FileModel>,
    pub geo: Geometry,
}

impl Model {
    /// The starting tree of the profile's image, as the engine finds it.
    pub fn load<D: BlockDevice>(vol: &Volume<D>) -> Model {
        let sb = vol.sb();
        let geo = Geometry {
            bs: sb.block_size as u64,
            cluster: sb.cluster_size as u64,
            extents: sb.has_incompat(ext4_engine::features::incompat::EXTENTS),
            inline: sb.has_incompat(ext4_engine::features::incompat::INLINE_DATA),
            max_size: sb.max_file_size(true),
        };
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
        let data = seed_contents();
        let nblocks = (data.len() as u64).div_ceil(geo.bs);
        let files = vec![FileModel {
            dir: 0,
            name: SEED_FILE.as_bytes().to_vec(),
            ino,
            mode: (a.mode & 0o7777) as u16,
            uid: a.uid,
            gid: a.gid,
            data,
            blocks: vec![St::Data; nblocks as usize],
            blockmapped: !geo.extents,
            atime: None,
            mtime: None,
        }];
        Model { dirs, files, geo }
    }
}

/// `fallocate` modes a random sequence picks from: the supported ones
/// mostly, and some the kernel refuses.
pub const FALLOC_MODES: &[u32] = &[
    0,
    falloc::KEEP_SIZE,
    falloc::PUNCH_HOLE | falloc::KEEP_SIZE,
    falloc::PUNCH_HOLE | falloc::KEEP_SIZE,
    falloc::ZERO_RANGE,
    falloc::ZERO_RANGE | falloc::KEEP_SIZE,
    falloc::COLLAPSE_RANGE,
    falloc::INSERT_RANGE,
    falloc::PUNCH_HOLE,
    falloc::COLLAPSE_RANGE | falloc::KEEP_SIZE,
    falloc::UNSHARE_RANGE | falloc::KEEP_SIZE,
];

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
    /// `fallocate` with `FALLOC_MODES[mode % len]`; `aligned` rounds the
    /// offset and length down to the cluster (collapse and insert need it).
    Fallocate {
        file: u16,
        mode: u8,
        off: u32,
        len: u32,
        aligned: bool,
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

/// The errno the kernel answers `fallocate(mode, off, len)` on `f` with,
/// and whether the times change (every mode that passes the VFS's checks
/// sets mtime and ctime, even when ext4 then refuses it).
pub fn falloc_expect(f: &FileModel, geo: &Geometry, mode: u32, off: u64, len: u64) -> (i32, bool) {
    use falloc::*;
    if len == 0 || off > i64::MAX as u64 || len > i64::MAX as u64 {
        return (errno::EINVAL, false);
    }
    if mode & !KNOWN != 0 {
        return (errno::EOPNOTSUPP, false);
    }
    let keep = mode & KEEP_SIZE != 0;
    let op = mode & !KEEP_SIZE;
    let ok_combo = match op {
        0 | UNSHARE_RANGE | ZERO_RANGE => true,
        PUNCH_HOLE => keep,
        COLLAPSE_RANGE | INSERT_RANGE | WRITE_ZEROES => !keep,
        _ => false,
    };
    if !ok_combo {
        return (errno::EOPNOTSUPP, false);
    }
    if off + len > geo.max_size {
        return (errno::EFBIG, false);
    }
    if op == UNSHARE_RANGE || op == WRITE_ZEROES {
        return (errno::EOPNOTSUPP, false);
    }
    let size = f.data.len() as u64;
    if f.blockmapped && op != PUNCH_HOLE {
        return (errno::EOPNOTSUPP, true);
    }
    let aligned = (off | len).is_multiple_of(geo.cluster);
    match op {
        COLLAPSE_RANGE if !aligned || off + len >= size => (errno::EINVAL, true),
        INSERT_RANGE if !aligned => (errno::EINVAL, true),
        INSERT_RANGE if len > geo.max_size - size => (errno::EFBIG, true),
        INSERT_RANGE if off >= size => (errno::EINVAL, true),
        _ => (0, true),
    }
}

/// Apply a successful `fallocate` to the model, as the kernel's ext4 does.
fn falloc_apply(f: &mut FileModel, geo: &Geometry, mode: u32, off: u64, len: u64) {
    use falloc::*;
    let bs = geo.bs;
    let keep = mode & KEEP_SIZE != 0;
    let op = mode & !KEEP_SIZE;
    let end = off + len;
    let size = f.data.len() as u64;
    let grow = |f: &mut FileModel| {
        if !keep && end > f.data.len() as u64 {
            f.data.resize(end as usize, 0);
        }
    };
    match op {
        0 => {
            f.map(off / bs, end.div_ceil(bs), |s| match s {
                St::Hole => St::Unwritten,
                s => s,
            });
            grow(f);
        }
        PUNCH_HOLE => {
            if off >= size {
                return;
            }
            let end = end.min(size.div_ceil(4096) * 4096);
            let zero_to = end.min(size) as usize;
            f.data[off as usize..zero_to].fill(0);
            let (first, stop) = (off.div_ceil(bs), end / bs);
            if first < stop {
                f.set(first, stop, St::Hole);
            }
        }
        ZERO_RANGE => {
            let zero_to = end.min(size) as usize;
            if (off as usize) < zero_to {
                f.data[off as usize..zero_to].fill(0);
            }
            let (first, stop) = (off.div_ceil(bs), end / bs);
            // Partial edge blocks: allocated, and the kernel may write
            // them while zeroing.
            f.map(off / bs, end.div_ceil(bs), |s| match s {
                St::Hole | St::Unwritten => St::Alloc,
                s => s,
            });
            if first < stop {
                f.set(first, stop, St::Unwritten);
            }
            grow(f);
        }
        COLLAPSE_RANGE => {
            f.data.drain(off as usize..end as usize);
            let (a, b) = ((off / bs) as usize, (end / bs) as usize);
            if f.blocks.len() > a {
                let b = b.min(f.blocks.len());
                f.blocks.drain(a..b);
            }
        }
        INSERT_RANGE => {
            let at = off as usize;
            f.data
                .splice(at..at, std::iter::repeat_n(0u8, len as usize));
            let a = (off / bs) as usize;
            if f.blocks.len() > a {
                let n = (len / bs) as usize;
                f.blocks.splice(a..a, std::iter::repeat_n(St::Hole, n));
            }
        }
        _ => {}
    }
}

/// After an outcome the model cannot predict (ENOSPC part-way): take the
/// file's size and bytes from the engine, and forget the states of blocks
/// `from..to`.
fn resync<D: BlockDevice>(
    vol: &Volume<D>,
    f: &mut FileModel,
    from: u64,
    to: u64,
) -> Result<(), String> {
    let a = vol.getattr(f.ino).map_err(|e| format!("getattr: {e}"))?;
    let mut buf = vec![0u8; a.size as usize];
    let n = vol
        .read(f.ino, 0, &mut buf)
        .map_err(|e| format!("read: {e}"))?;
    buf.truncate(n);
    f.data = buf;
    f.map(from, to, |_| St::Any);
    Ok(())
}

/// Apply `op` to the engine and the model. Outcomes the model cannot
/// predict exactly (ENOSPC on a full filesystem, a full hash-tree leaf)
/// are accepted when the engine reports them and the model follows what
/// the engine then shows.
pub fn apply<D: BlockDevice>(vol: &Volume<D>, m: &mut Model, op: &Op) -> Result<(), String> {
    let cred = Cred::ROOT;
    let geo = m.geo;
    let bs = geo.bs;
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
                        blocks: Vec::new(),
                        blockmapped: !geo.extents,
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
                Err(Error::NoSpace) => {
                    // Nothing was written, or inline data moved out: the
                    // engine says what is there now.
                    let size = f.data.len() as u64;
                    resync(vol, f, 0, size.div_ceil(bs))?;
                    0
                }
                Err(e) => return Err(format!("write {:?} at {off}+{len}: {e}", f.name)),
            };
            if n > 0 {
                let end = off as usize + n;
                if f.data.len() < end {
                    f.data.resize(end, 0);
                }
                f.data[off as usize..end].copy_from_slice(&data[..n]);
                f.set(off as u64 / bs, (end as u64).div_ceil(bs), St::Data);
                f.mtime = Some(fixed_now());
            }
        }
        Op::Truncate { file, size } => {
            let Some(i) = pick(file) else { return Ok(()) };
            let f = &mut m.files[i];
            match vol.truncate(InodeNo(f.ino), size as u64) {
                Ok(()) => {}
                Err(Error::NoSpace) => {
                    // Inline data that had to move into a block.
                    let old = f.data.len() as u64;
                    resync(vol, f, 0, old.div_ceil(bs))?;
                    return Ok(());
                }
                Err(e) => return Err(format!("truncate {:?} to {size}: {e}", f.name)),
            }
            if size as usize != f.data.len() {
                f.mtime = Some(fixed_now());
            }
            if (size as usize) < f.data.len() {
                let from = (size as u64).div_ceil(bs);
                let to = f.blocks.len() as u64;
                if from < to {
                    f.set(from, to, St::Hole);
                }
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
        Op::Fallocate {
            file,
            mode,
            off,
            len,
            aligned,
        } => {
            let Some(i) = pick(file) else { return Ok(()) };
            let mode = FALLOC_MODES[mode as usize % FALLOC_MODES.len()];
            let (mut off, mut len) = (off as u64, len as u64);
            if aligned {
                off = off / geo.cluster * geo.cluster;
                len = len / geo.cluster * geo.cluster;
            }
            let f = &mut m.files[i];
            let (want, times) = falloc_expect(f, &geo, mode, off, len);
            let r = vol.fallocate(InodeNo(f.ino), mode, off, len, &cred);
            let what = format!("fallocate {:?} mode {mode:#x} {off}+{len}", f.name);
            match r {
                Ok(()) if want == 0 => falloc_apply(f, &geo, mode, off, len),
                Err(Error::NoSpace) if want == 0 => {
                    let to = (off + len).max(f.data.len() as u64).div_ceil(bs);
                    let from = (off / bs).min(f.data.len() as u64 / bs);
                    resync(vol, f, from, to.max(f.blocks.len() as u64))?;
                }
                Err(e) if e.errno() == want => {}
                Ok(()) => {
                    return Err(format!(
                        "{what}: succeeded, the kernel answers errno {want}"
                    ))
                }
                Err(e) => {
                    return Err(format!(
                        "{what}: {e} (errno {}), the kernel answers errno {want}",
                        e.errno()
                    ))
                }
            }
            if times {
                f.mtime = Some(fixed_now());
            }
        }
        Op::Commit => vol.commit().map_err(|e| format!("commit: {e}"))?,
    }
    Ok(())
}
