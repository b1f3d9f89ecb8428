//! `ext4-image mkfs IMAGE SIZE`: a new, empty filesystem in a file, laid
//! out by the engine as mke2fs lays it out (`ext4_engine::mkfs`).

use std::fs::OpenOptions;
use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use ext4_engine::mkfs::{mkfs, seed_from_uuid, FsType, Made, MkfsOptions};
use std::sync::atomic::{AtomicI64, Ordering};

use ext4_engine::features::incompat;
use ext4_engine::{Error, FileDevice, OpenOptions as VolOptions, Timestamp, Volume};

use crate::{io_msg, populate, tar_import, CmdResult, Fail};

#[derive(Clone, Copy)]
pub struct Args<'a> {
    pub image: &'a Path,
    /// `None`: auto.
    pub size: Option<u64>,
    pub margin: u32,
    pub fs_type: &'a str,
    pub features: &'a [String],
    pub block_size: Option<u32>,
    pub label: Option<&'a str>,
    pub uuid: Option<&'a str>,
    pub inodes: Option<u64>,
    pub inode_size: Option<u16>,
    pub timestamp: Option<i64>,
    pub quiet: bool,
    pub from: Option<&'a Path>,
    pub from_tar: Option<&'a Path>,
    pub root_owner: Option<(u32, u32)>,
    /// `--cache-size`: the block cache's budget while filling (the
    /// mapping cache gets half).
    pub cache_size: Option<u64>,
}

/// SIZE: bytes, or `None` for auto.
#[derive(Clone, Copy, Debug)]
pub struct SizeArg(pub Option<u64>);

/// A size, or `auto`.
pub fn parse_size_or_auto(s: &str) -> Result<SizeArg, String> {
    if s == "auto" {
        return Ok(SizeArg(None));
    }
    crate::util::parse_size(s).map(|n| SizeArg(Some(n)))
}

/// `UID:GID`, as mke2fs's `-E root_owner=`.
pub fn parse_owner(s: &str) -> Result<(u32, u32), String> {
    let (u, g) = s
        .split_once(':')
        .ok_or_else(|| format!("{s}: UID:GID, numbers"))?;
    let n = |x: &str| x.parse::<u32>().map_err(|_| format!("{x}: not a number"));
    Ok((n(u)?, n(g)?))
}

/// The build's clock: every time the engine sets is this one (reproducible
/// images).
static NOW: AtomicI64 = AtomicI64::new(0);

fn build_now() -> Timestamp {
    Timestamp {
        sec: NOW.load(Ordering::Relaxed),
        nsec: 0,
    }
}

pub fn run(a: &Args<'_>) -> CmdResult {
    let bad = |m: String| Fail::Open(m);
    let fs_type = FsType::parse(a.fs_type)
        .ok_or_else(|| bad(format!("-t {}: ext2, ext3 or ext4", a.fs_type)))?;
    let time = match a.timestamp {
        Some(t) => t,
        None => match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) => v.trim().parse().map_err(|_| {
                bad(format!(
                    "SOURCE_DATE_EPOCH={v:?} is not a number of seconds"
                ))
            })?,
            Err(_) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        },
    };
    // A fixed UUID fixes the hash seed too (reproducible images).
    let (uuid, hash_seed) = match a.uuid {
        Some(u) => {
            let uuid = parse_uuid(u).ok_or_else(|| {
                bad(format!(
                    "-U {u}: not a UUID (32 hex digits, dashes allowed)"
                ))
            })?;
            (uuid, seed_from_uuid(&uuid))
        }
        None => (random_uuid()?, random_uuid()?),
    };
    let (size, made, copied) = match a.size {
        Some(size) => {
            let (made, copied) =
                build(a, fs_type, size, uuid, hash_seed, time, None).map_err(|e| e.fail)?;
            (size, made, copied)
        }
        None => {
            let src = match (a.from, a.from_tar) {
                (Some(d), _) => Source::Dir(d),
                (None, Some(t)) if t != Path::new("-") => Source::Tar(t),
                _ => {
                    return Err(bad(
                        "SIZE auto needs --from DIR or --from-tar FILE (standard \
                         input is read once: save the stream to a file, or give a size)"
                            .into(),
                    ))
                }
            };
            auto_size(a, src, fs_type, uuid, hash_seed, time)?
        }
    };
    let img = a.image.display();
    if a.size.is_none() && !a.quiet {
        println!("{img}: SIZE auto: {size} bytes");
    }
    // As mke2fs, a last group too small for its tables is left out of
    // the filesystem but not cut off the file.
    let g = made.geometry;
    if !a.quiet {
        println!(
            "{img}: {}, {} blocks of {} bytes, {} inodes, {} groups{}; {} blocks and {} inodes free",
            fs_type.name(),
            g.blocks_count,
            g.block_size,
            g.groups as u64 * g.inodes_per_group as u64,
            g.groups,
            if made.journal_blocks > 0 {
                format!(", a journal of {} blocks", made.journal_blocks)
            } else {
                String::new()
            },
            copied.as_ref().map_or(made.free_blocks, |c| c.free_blocks),
            copied.as_ref().map_or(made.free_inodes, |c| c.free_inodes),
        );
    }
    if let (Some(c), false) = (copied, a.quiet) {
        println!(
            "{img}: copied {} entries, {} bytes of file data",
            c.entries, c.bytes
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Why a build failed; `no_space` when a bigger size would do.
struct BuildError {
    fail: Fail,
    no_space: bool,
}

impl From<Fail> for BuildError {
    fn from(fail: Fail) -> BuildError {
        BuildError {
            fail,
            no_space: false,
        }
    }
}

/// Make the filesystem in `a.image` with `size` bytes and fill it.
/// `inodes` overrides -N (SIZE auto).
fn build(
    a: &Args<'_>,
    fs_type: FsType,
    size: u64,
    uuid: [u8; 16],
    hash_seed: [u8; 16],
    time: i64,
    inodes: Option<u64>,
) -> Result<(Made, Option<populate::Copied>), BuildError> {
    let bad = |m: String| Fail::Open(m);
    let mut o = MkfsOptions::new(fs_type, size, uuid, time);
    if let Some(owner) = a.root_owner {
        o.root_owner = owner;
    }
    o.hash_seed = hash_seed;
    for list in a.features {
        o.features
            .edit(list)
            .map_err(|e| bad(format!("-O {list}: {e}")))?;
    }
    o.features = o.features.settle().map_err(|e| bad(format!("-O: {e}")))?;
    if let Some(bs) = a.block_size {
        o.block_size = bs;
    }
    if let Some(n) = a.inode_size {
        o.inode_size = n;
    }
    o.inodes = a.inodes.or(inodes);
    if let Some(l) = a.label {
        if l.len() > 16 {
            return Err(bad(format!("-L {l}: a label is at most 16 bytes")).into());
        }
        o.label[..l.len()].copy_from_slice(l.as_bytes());
    }
    let img = a.image.display();
    if let Ok(m) = std::fs::metadata(a.image) {
        if !m.is_file() {
            return Err(bad(format!(
                "{img} is not a regular file (mkfs writes image files only)"
            ))
            .into());
        }
    }
    // What mke2fs refuses is refused before the file is made.
    if let Err(e) = ext4_engine::mkfs::geometry(&o) {
        let no_space = e == Error::NoSpace;
        let fail = cannot_make(&o, size, e);
        return Err(BuildError { fail, no_space });
    }
    // A fresh, sparse file: it reads as zeros, which the layout relies on.
    let existed = std::fs::symlink_metadata(a.image).is_ok();
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(a.image)
        .map_err(|e| bad(format!("cannot create {img}: {}", io_msg(&e))))?;
    f.set_len(size).map_err(|e| {
        // A file made only to fail (the host's filesystem cannot hold the
        // size) is not left behind.
        if !existed {
            let _ = std::fs::remove_file(a.image);
        }
        bad(format!("cannot size {img}: {}", io_msg(&e)))
    })?;
    drop(f);
    let dev = FileDevice::open(a.image, false)
        .map_err(|e| bad(format!("cannot open {img}: {}", io_msg(&e))))?;
    let mut no_space = false;
    let made = mkfs(&dev, &o).map_err(|e| {
        no_space = e == Error::NoSpace;
        cannot_make(&o, size, e)
    });
    let made = made.map_err(|fail| BuildError { fail, no_space })?;
    let copied = match a.from {
        Some(src) => Some(fill(a, Source::Dir(src), time, dev)?),
        None => match a.from_tar {
            Some(t) => Some(fill(a, Source::Tar(t), time, dev)?),
            None => None,
        },
    };
    Ok((made, copied))
}

/// Why a filesystem of `size` bytes with options `o` cannot be made.
fn cannot_make(o: &MkfsOptions, size: u64, e: Error) -> Fail {
    let why = match e {
        Error::NoSpace => "too small for the filesystem's tables (a bigger SIZE)".to_string(),
        Error::InvalidArgument => {
            "too many inodes for this size (fewer with -N, or a bigger SIZE)".to_string()
        }
        Error::TooBig if o.features.incompat & incompat::BIT64 == 0 => format!(
            "{} blocks do not fit 32-bit block numbers (-O 64bit, as ext4 has by \
             default, or bigger blocks with -b), as mke2fs refuses",
            size / o.block_size as u64
        ),
        Error::TooBig => format!(
            "{} blocks are more groups than 32-bit group numbers count (bigger \
             blocks with -b), as mke2fs refuses",
            size / o.block_size as u64
        ),
        Error::FileTooBig => "the journal does not fit its block map (-O ^has_journal)".to_string(),
        e => e.to_string(),
    };
    Fail::Problem(format!(
        "cannot make a filesystem of {} bytes with {}-byte blocks and {}-byte inodes: {why}",
        size, o.block_size, o.inode_size
    ))
}

/// SIZE auto: the estimate of what the tree needs plus the margin, made
/// bigger until the tree fits (an estimate can fall short: directory
/// blocks, extent tree blocks, xattr blocks shared or not).
#[allow(clippy::type_complexity)]
fn auto_size(
    a: &Args<'_>,
    src: Source<'_>,
    fs_type: FsType,
    uuid: [u8; 16],
    hash_seed: [u8; 16],
    time: i64,
) -> Result<(u64, Made, Option<populate::Copied>), Fail> {
    let m = 100 + a.margin as u64;
    let isz = a.inode_size.unwrap_or(256) as u64;
    let mut inodes = 0;
    let longest_symlink = std::cell::Cell::new(0);
    let mut guess = |bs: u32| -> Result<u64, Fail> {
        let need = match src {
            Source::Dir(d) => populate::estimate(d, bs),
            Source::Tar(t) => std::fs::File::open(t)
                .map_err(|e| populate::at(t, e))
                .and_then(|f| {
                    tar_import::estimate(std::io::BufReader::with_capacity(1 << 20, f), bs)
                }),
        }
        .map_err(|e| Fail::Open(format!("{}: {}", e.path.display(), e.what)))?;
        inodes = (need.inodes + 16) * m / 100;
        longest_symlink.set(need.longest_symlink);
        let bs = bs as u64;
        let mut size = (need.bytes + inodes * isz) * m / 100;
        // The journal mke2fs would give a filesystem of that size, and
        // per group the bitmaps and a superblock copy.
        if fs_type != FsType::Ext2 {
            let j = ext4_engine::mkfs::default_journal_blocks(size / bs).unwrap_or(0);
            size += j as u64 * bs;
        }
        size += size / (bs * bs * 8) * 4 * bs + (256 << 10);
        Ok(size.next_multiple_of(1 << 16))
    };
    let mut size = guess(a.block_size.unwrap_or(4096))?;
    let mut chosen_bs = None;
    if a.block_size.is_none() {
        // The block size mke2fs.conf picks for that size, but big enough
        // for the longest symlink target and its NUL (the kernel's rule).
        let mut bs = ext4_engine::mkfs::default_block_size(size);
        while (bs as u64) <= longest_symlink.get() && bs < 4096 {
            bs *= 2;
        }
        if bs != 4096 {
            size = guess(bs)?;
        }
        chosen_bs = Some(bs);
    }
    let a = &Args {
        block_size: a.block_size.or(chosen_bs),
        ..*a
    };
    for _ in 0..12 {
        match build(a, fs_type, size, uuid, hash_seed, time, Some(inodes)) {
            Ok((made, copied)) => return Ok((size, made, copied)),
            Err(e) if e.no_space => size += (size / 8).max(1 << 20),
            Err(e) => return Err(e.fail),
        }
    }
    Err(Fail::Problem(format!(
        "{}: SIZE auto found no size up to {size} bytes that holds the tree",
        a.image.display()
    )))
}

/// Where the tree comes from.
#[derive(Clone, Copy)]
enum Source<'a> {
    Dir(&'a Path),
    /// A tar file, `-` for standard input.
    Tar(&'a Path),
}

/// Copy `src` into the new filesystem on `dev` through the engine, with
/// the build's time as the clock; progress on a terminal.
fn fill(
    a: &Args<'_>,
    src: Source<'_>,
    time: i64,
    dev: FileDevice,
) -> Result<populate::Copied, BuildError> {
    let img = a.image.display();
    let shown = match src {
        Source::Dir(p) | Source::Tar(p) => p,
    };
    NOW.store(time, Ordering::Relaxed);
    let mut opts = VolOptions {
        read_only: false,
        now: build_now,
        ..VolOptions::default()
    };
    crate::util::cache_budget(&mut opts, a.cache_size);
    let vol = Volume::open(dev, &opts)
        .map_err(|e| Fail::Problem(format!("cannot open the new {img} to fill it: {e}")))?;
    let bar = crate::util::Bar::new(a.quiet, shown);
    let mut tick = |c: &populate::Copied| bar.tick(c);
    let r = match src {
        Source::Dir(d) => populate::Populate::new(&vol, a.root_owner, time).run(d, &mut tick),
        Source::Tar(t) if t == Path::new("-") => {
            let input = std::io::BufReader::with_capacity(1 << 20, std::io::stdin().lock());
            tar_import::run(&vol, input, a.root_owner, time, &mut tick)
        }
        Source::Tar(t) => match std::fs::File::open(t) {
            Ok(f) => {
                let input = std::io::BufReader::with_capacity(1 << 20, f);
                tar_import::run(&vol, input, a.root_owner, time, &mut tick)
            }
            Err(e) => Err(populate::at(t, e)),
        },
    };
    bar.finish();
    let closed = vol.close();
    let copied = r.map_err(|e| BuildError {
        fail: Fail::Problem(format!(
            "{img}: copying {}: {} (the image is incomplete)",
            e.path.display(),
            e.what
        )),
        no_space: e.no_space,
    })?;
    closed.map_err(|e| Fail::Problem(format!("{img}: closing after the copy: {e}")))?;
    Ok(copied)
}

fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = s.bytes().filter(|&b| b != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// A random (version 4) UUID from the kernel's generator.
fn random_uuid() -> Result<[u8; 16], Fail> {
    let mut u = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut u))
        .map_err(|e| Fail::Open(format!("cannot read /dev/urandom: {}", io_msg(&e))))?;
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    Ok(u)
}

#[cfg(test)]
mod tests {
    #[test]
    fn uuids() {
        assert_eq!(
            super::parse_uuid("01234567-89ab-cdef-0123-456789ABCDEF"),
            Some([
                0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
                0xcd, 0xef
            ])
        );
        assert_eq!(super::parse_uuid("0123"), None);
        assert_eq!(
            super::parse_uuid("g1234567-89ab-cdef-0123-456789abcdef"),
            None
        );
    }
}
