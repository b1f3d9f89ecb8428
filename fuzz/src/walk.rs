//! Drives every read operation of the engine over a (possibly hostile)
//! volume. Shared by the fuzz targets and by `engine/tests/hostile.rs`
//! (which includes this file by path), so it depends on `ext4_engine` and
//! `std` only.
//!
//! Everything here is bounded by [`Limits`], independently of what the
//! image claims: the walk tracks visited directories (a subdirectory entry
//! naming an ancestor is a cycle), caps depth, entries, bytes read and
//! mapping answers. The engine itself must bound each single operation;
//! the walk only bounds how many operations it asks for.
//!
//! Invariants checked (a panic here is a bug in the engine):
//! - no operation panics (the caller sees the panic);
//! - `read` never claims more bytes than asked;
//! - every `iomap_begin` answer passes the kernel's rules (`kernel_check`)
//!   and covers the position asked;
//! - errors about on-disk damage carry an object (`Error::Corrupt`/`Checksum`).

use std::collections::HashSet;
use std::vec::Vec;

use ext4_engine::fsck::CheckOptions;
use ext4_engine::iomap::{kernel_check, op};
use ext4_engine::Whence;
use ext4_engine::{BlockDevice, Error, FileType, InodeNo, OpenOptions, Volume};

/// Small cache budgets: hostile images must not grow memory past them
/// (`engine/tests/hostile.rs` bounds the heap by their sum).
pub const CACHE_BYTES: usize = 1 << 20;
pub const MAPPING_CACHE_BYTES: usize = 1 << 20;
pub const INODE_CACHE_BYTES: usize = 1 << 20;
pub const NAME_INDEX_BYTES: usize = 1 << 20;
/// The replay plan of a journal that needs recovery.
pub const REPLAY_BUDGET: usize = 1 << 20;

/// How fuzz targets and hostile tests open a volume: the budgets above,
/// read-only, a journal that needs recovery replayed in memory.
pub fn options(ignore_checksums: bool) -> OpenOptions {
    OpenOptions {
        cache_bytes: CACHE_BYTES,
        mapping_cache_bytes: MAPPING_CACHE_BYTES,
        inode_cache_bytes: INODE_CACHE_BYTES,
        name_index_bytes: NAME_INDEX_BYTES,
        ignore_checksums,
        read_only: true,
        replay_budget: REPLAY_BUDGET,
        ..OpenOptions::default()
    }
}

/// How much work one walk may ask for.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Directory depth below the root.
    pub max_depth: usize,
    /// Directory entries looked at, over the whole walk.
    pub max_entries: usize,
    /// Bytes read per file (from its start and around its end).
    pub read_bytes: usize,
    /// Mapping answers taken per file.
    pub mappings: usize,
    /// Symlinks followed while resolving one path.
    pub symlink_follows: usize,
    /// Run `check` (metadata only) after the walk.
    pub check: bool,
    /// Also run `check` with `data: true` (reads every file to its end;
    /// only for images whose sizes are known to be sane).
    pub check_data: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 64,
            max_entries: 20_000,
            read_bytes: 64 << 10,
            mappings: 512,
            symlink_follows: 40,
            check: true,
            check_data: false,
        }
    }
}

/// What a walk saw, for tests to compare.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub dirs: usize,
    pub entries: usize,
    pub files_read: usize,
    pub bytes_read: u64,
    pub symlinks: usize,
    pub xattrs: usize,
    pub errors: usize,
    pub check_problems: u64,
    /// A directory entry naming a directory already visited (a cycle or a
    /// second hard link to a directory).
    pub revisits: usize,
}

/// Damage must be reported as damage with the object it concerns, or as
/// one of the plain errno answers; never as something else.
fn note(stats: &mut Stats, e: &Error) {
    stats.errors += 1;
    // Formatting exercises the Display of every variant and object.
    let _ = std::format!("{e}");
    let _ = e.errno();
}

/// Walk the whole volume from the root.
pub fn walk<D: BlockDevice>(vol: &Volume<D>, lim: &Limits) -> Stats {
    let mut st = Stats::default();
    let _ = vol.statfs();
    let _ = vol.iomap_config();
    for w in vol.warnings() {
        let _ = std::format!("{w}");
    }
    let mut visited: HashSet<InodeNo> = HashSet::new();
    // Explicit stack: (directory inode, depth).
    let mut stack = vec![(InodeNo::ROOT, 0usize)];
    visited.insert(InodeNo::ROOT);
    visit_inode(vol, InodeNo::ROOT, lim, &mut st);
    while let Some((dir, depth)) = stack.pop() {
        st.dirs += 1;
        let mut names: Vec<(Vec<u8>, InodeNo, Option<FileType>)> = Vec::new();
        let budget = lim.max_entries.saturating_sub(st.entries);
        let mut last_cookie = 0u64;
        let r = vol.readdir(dir, 0, &mut |e| {
            if names.len() >= budget {
                return false;
            }
            // Cookies must move forward, or a frontend resuming from
            // them would loop.
            assert!(
                e.next > last_cookie || names.is_empty(),
                "readdir cookie went backwards"
            );
            last_cookie = e.next;
            names.push((e.name.to_vec(), e.ino, e.kind));
            true
        });
        if let Err(e) = r {
            note(&mut st, &e);
        }
        // Resuming from a cookie in the middle must not fail differently.
        if let Some((_, _, _)) = names.get(names.len() / 2) {
            let mut n = 0;
            let _ = vol.readdir(dir, last_cookie / 2, &mut |_| {
                n += 1;
                n < 64
            });
        }
        st.entries += names.len();
        for w in vol.take_reports() {
            note(&mut st, &w);
        }
        // Names that are not there: the hash-tree path to a leaf, and the
        // collision-continuation path.
        for missing in [
            &b"no such name"[..],
            b"zz",
            b"file_with_a_longish_name_number_0",
        ] {
            if let Err(e) = vol.lookup_ino(dir, missing) {
                if e != Error::NotFound {
                    note(&mut st, &e);
                }
            }
        }
        for (name, ino, _kind) in names {
            if name == b"." || name == b".." {
                let _ = vol.lookup_ino(dir, &name);
                continue;
            }
            match vol.lookup_ino(dir, &name) {
                Ok(found) => {
                    let _ = found;
                }
                Err(e) => note(&mut st, &e),
            }
            let kind = match vol.getattr(ino) {
                Ok(a) => a.kind,
                Err(e) => {
                    note(&mut st, &e);
                    continue;
                }
            };
            if kind == FileType::Directory {
                if !visited.insert(ino) {
                    st.revisits += 1;
                    continue;
                }
                if depth < lim.max_depth {
                    visit_inode(vol, ino, lim, &mut st);
                    stack.push((ino, depth + 1));
                }
            } else {
                visit_inode(vol, ino, lim, &mut st);
                if kind == FileType::Symlink {
                    resolve(vol, dir, &name, lim, &mut st);
                }
            }
        }
    }
    // Inodes no directory reaches (orphans, EA inodes, reserved ones).
    let sb_inodes = vol.sb().inodes_count.min(4096);
    for ino in (1..=sb_inodes).map(InodeNo) {
        if !visited.contains(&ino) {
            if let Ok(a) = vol.getattr(ino) {
                if a.kind != FileType::Directory {
                    visit_inode(vol, ino, lim, &mut st);
                }
            }
        }
    }
    if lim.check {
        let opts = CheckOptions {
            data: lim.check_data,
        };
        let mut problems = 0u64;
        let sum = vol.fsck(&opts, &mut |_| {}, &mut |e| {
            problems += 1;
            let _ = std::format!("{e}");
        });
        assert_eq!(
            sum.problems, problems,
            "check counted problems it did not report"
        );
        st.check_problems = problems;
    }
    let _ = vol.take_reports();
    st
}

/// Everything about one inode except its directory entries.
fn visit_inode<D: BlockDevice>(vol: &Volume<D>, ino: InodeNo, lim: &Limits, st: &mut Stats) {
    let attr = match vol.getattr(ino) {
        Ok(a) => a,
        Err(e) => return note(st, &e),
    };
    let _ = attr.rdev_linux();
    xattrs(vol, ino, st);
    match attr.kind {
        FileType::Regular => {
            read_file(vol, ino, attr.size, lim, st);
            seeks(vol, ino, attr.size, st);
            mappings(vol, ino, attr.size, lim, st);
        }
        FileType::Symlink => {
            st.symlinks += 1;
            if let Err(e) = vol.readlink(ino) {
                note(st, &e);
            }
            // Slow symlinks are files too.
            read_file(vol, ino, attr.size, lim, st);
        }
        FileType::Directory => {
            let mut buf = [0u8; 16];
            assert_eq!(vol.read(ino, 0, &mut buf), Err(Error::IsDir));
        }
        _ => {
            let mut buf = [0u8; 16];
            let _ = vol.read(ino, 0, &mut buf);
        }
    }
}

fn xattrs<D: BlockDevice>(vol: &Volume<D>, ino: InodeNo, st: &mut Stats) {
    match vol.listxattr(ino) {
        Ok(names) => {
            for n in names {
                st.xattrs += 1;
                if let Err(e) = vol.getxattr(ino, &n) {
                    if e != Error::NoData {
                        note(st, &e);
                    }
                }
            }
        }
        Err(e) => note(st, &e),
    }
    for n in [
        &b"system.posix_acl_access"[..],
        b"system.posix_acl_default",
        b"system.data",
        b"user.missing",
        b"security.selinux",
        b"bogus",
    ] {
        let _ = vol.getxattr(ino, n);
    }
}

fn read_file<D: BlockDevice>(
    vol: &Volume<D>,
    ino: InodeNo,
    size: u64,
    lim: &Limits,
    st: &mut Stats,
) {
    st.files_read += 1;
    let bs = vol.sb().block_size as u64;
    let mut buf = vec![0u8; lim.read_bytes.max(1)];
    // From the start, a whole buffer; then a block around the end; then
    // an odd offset spanning two blocks.
    let near_end = size.saturating_sub(bs + 3);
    for (off, len) in [
        (0u64, buf.len()),
        (near_end, (2 * bs as usize).min(buf.len())),
        (bs - 1, 2.min(buf.len())),
        (size, 1),
        (u64::MAX - 1, 1),
    ] {
        match vol.read(ino, off, &mut buf[..len]) {
            Ok(n) => {
                assert!(n <= len, "read returned more than asked");
                assert!(
                    n == 0 || off.saturating_add(n as u64) <= size,
                    "read past EOF: ino {ino} off {off} n {n} size {size}"
                );
                st.bytes_read += n as u64;
            }
            Err(e) => note(st, &e),
        }
    }
}

fn seeks<D: BlockDevice>(vol: &Volume<D>, ino: InodeNo, size: u64, st: &mut Stats) {
    for off in [0, 1, size / 2, size.saturating_sub(1), size, u64::MAX] {
        for w in [Whence::Data, Whence::Hole] {
            match vol.seek(ino, off, w) {
                Ok(p) => assert!(p >= off && p <= size, "seek answer outside [off, size]"),
                Err(Error::NoSuchOffset) => {}
                Err(e) => note(st, &e),
            }
        }
    }
}

fn mappings<D: BlockDevice>(
    vol: &Volume<D>,
    ino: InodeNo,
    size: u64,
    lim: &Limits,
    st: &mut Stats,
) {
    let bs = vol.sb().block_size as u64;
    let maxbytes = vol.maxbytes();
    let mut n = 0usize;
    let mut last_end = 0u64;
    let r = vol.mappings(ino, 7, &mut |m| {
        // Each answer covers the position asked (the previous end) and
        // ends past it, or the walk would stall.
        assert!(
            m.offset <= last_end && last_end < m.offset + m.length,
            "mappings answer {m:?} does not cover {last_end}"
        );
        last_end = m.offset + m.length;
        n += 1;
        n < lim.mappings
    });
    if let Err(e) = r {
        note(st, &e);
    }
    for pos in [
        0,
        1,
        bs,
        size / 2,
        size.saturating_sub(1),
        size,
        size.saturating_add(bs * 3),
    ] {
        match vol.iomap_begin(ino, pos, bs * 4, op::REPORT, 7) {
            Ok((read, write)) => {
                if let Err(why) = kernel_check(&read, pos, bs, maxbytes, false) {
                    panic!(
                        "iomap read mapping at {pos} breaks the kernel's rules: {why}: {read:?}"
                    );
                }
                if let Err(why) = kernel_check(&write, pos, bs, maxbytes, true) {
                    panic!(
                        "iomap write mapping at {pos} breaks the kernel's rules: {why}: {write:?}"
                    );
                }
            }
            Err(e) => note(st, &e),
        }
    }
    vol.forget_mappings(ino);
}

/// Resolve `name` in `dir` the way a path walk would: follow symlinks (at
/// most `symlink_follows` of them, then ELOOP), relative to the directory
/// holding the link, absolute ones from the root.
pub fn resolve<D: BlockDevice>(
    vol: &Volume<D>,
    dir: InodeNo,
    name: &[u8],
    lim: &Limits,
    st: &mut Stats,
) {
    let mut pending: Vec<Vec<u8>> = vec![name.to_vec()];
    let mut cur = dir;
    let mut follows = 0usize;
    let mut steps = 0usize;
    while let Some(comp) = pending.pop() {
        steps += 1;
        if steps > 4096 {
            return;
        }
        if comp.is_empty() || comp == b"." {
            continue;
        }
        let ino = match vol.lookup_ino(cur, &comp) {
            Ok(i) => i,
            Err(_) => return,
        };
        let kind = match vol.getattr(ino) {
            Ok(a) => a.kind,
            Err(e) => return note(st, &e),
        };
        match kind {
            FileType::Symlink => {
                follows += 1;
                if follows > lim.symlink_follows {
                    return; // ELOOP
                }
                let target = match vol.readlink(ino) {
                    Ok(t) => t,
                    Err(e) => return note(st, &e),
                };
                if target.first() == Some(&b'/') {
                    cur = InodeNo::ROOT;
                }
                for c in target.split(|&b| b == b'/').rev() {
                    pending.push(c.to_vec());
                }
            }
            FileType::Directory => cur = ino,
            _ => {
                if !pending.is_empty() {
                    return; // ENOTDIR
                }
            }
        }
    }
}
