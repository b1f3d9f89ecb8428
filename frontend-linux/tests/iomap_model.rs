//! The iomap data path against a kernel model (`kmodel`): the real session
//! loop over a socket pair, every reply checked against the kernel's rules,
//! file data read by the model itself at the answered addresses through a
//! loop device attached by the frontend's own code, and compared with the
//! kernel's ext4 reading the same image (`mount -o loop,ro`): bytes
//! (buffered, faulting and direct reads), FIEMAP against `REPORT` walks,
//! SEEK_DATA/SEEK_HOLE, hard links. Also: malformed requests, shutdown,
//! the mapping-cache pushes (each one equal to what `IOMAP_BEGIN` answers,
//! `RETRY_CACHE` only when true), the loop device's life cycle, and a
//! benchmark of upcalls per MiB (`--ignored`).

mod kmodel;

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use ext4_engine::iomap::op;
use ext4_engine::mapping_cache::{MapType, Mapping};
use ext4_fuse::abi::{self, opcode};
use ext4_fuse::iomap_setup::{self as fiomap, BackingDevice, IomapMode};
use ext4_fuse::loopdev::devices_backed_by;
use ext4_fuse::session::{Config, Session};
use ext4_tests::image::{build_image, matrix_spec};
use ext4_tests::kwimage::{
    clip, engine_segs, kernel_fiemap, kernel_segs, kw_image, merge, segs_differ, KW_4K,
};
use ext4_tests::oracle::KernelMount;
use ext4_tests::rng::Rng;
use ext4_tests::util::{require_e2fsprogs, require_kernel_ext4};
use kmodel::{Model, Node};
use zerocopy::IntoBytes;

/// Regular files under `root`, relative paths, sorted.
fn regular_files(root: &Path) -> Vec<(String, fs::Metadata)> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(rd) = fs::read_dir(root.join(&rel)) else {
            continue;
        };
        for e in rd.flatten() {
            let r = rel.join(e.file_name());
            let Ok(md) = fs::symlink_metadata(root.join(&r)) else {
                continue;
            };
            if md.is_dir() {
                if r.as_os_str() != "lost+found" {
                    stack.push(r);
                }
            } else if md.is_file() {
                out.push((r.to_string_lossy().into_owned(), md));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn lseek(f: &File, off: u64, whence: i32) -> Option<u64> {
    // SAFETY: plain syscall on an open descriptor.
    let r = unsafe { libc::lseek(f.as_raw_fd(), off as libc::off_t, whence) };
    (r >= 0).then_some(r as u64)
}

/// SEEK_DATA / SEEK_HOLE from a report walk, as ext4 answers them on a
/// clean read-only mount (unwritten extents read as holes).
fn seek_from_walk(maps: &[Mapping], size: u64, off: u64, data: bool) -> Option<u64> {
    if off >= size {
        return None;
    }
    let is_data = |m: &Mapping| matches!(m.kind, MapType::Mapped | MapType::Inline);
    for m in maps.iter().filter(|m| m.end() > off) {
        if is_data(m) == data {
            return Some(m.offset.max(off).min(size));
        }
    }
    if data {
        None
    } else {
        Some(size)
    }
}

/// Bytes the kernel's ext4 reads.
fn kernel_read(f: &File, off: u64, len: u64) -> Vec<u8> {
    let size = f.metadata().unwrap().len();
    let end = off.saturating_add(len).min(size);
    let mut buf = vec![0u8; end.saturating_sub(off) as usize];
    f.read_exact_at(&mut buf, off).unwrap();
    buf
}

const CHUNK: u64 = 1 << 20;
/// Files larger than this are sampled, not read whole.
const WHOLE_LIMIT: u64 = 64 << 20;

/// Everything checked for one file. Returns a mismatch description.
fn check_file(m: &mut Model, kroot: &Path, rel: &str, rng: &mut Rng) -> Vec<String> {
    let mut bad = Vec::new();
    let kpath = kroot.join(rel);
    let kf = File::open(&kpath).unwrap();
    let size = kf.metadata().unwrap().len();
    let node = match m.lookup_path(rel) {
        Ok(n) => n,
        Err(e) => return vec![format!("{rel}: LOOKUP errno {e}")],
    };
    if node.attr.size != size {
        bad.push(format!("{rel}: size {} vs kernel {size}", node.attr.size));
        return bad;
    }
    m.open(&node);

    // REPORT walk vs FIEMAP.
    let maps = match m.report_walk(&node) {
        Ok(x) => x,
        Err(e) => return vec![format!("{rel}: report walk errno {e}")],
    };
    let bs = m.bs;
    let eof = size.div_ceil(bs) * bs;
    if let Ok(kexts) = kernel_fiemap(&kf) {
        let want = merge(&clip(&kernel_segs(&kexts, bs), 0, eof));
        let got = merge(&clip(&engine_segs(&maps), 0, eof));
        if let Some(d) = segs_differ(&want, &got) {
            bad.push(format!("{rel}: FIEMAP vs REPORT walk: {d}"));
        }
    }
    // SEEK_DATA / SEEK_HOLE at block boundaries and random offsets.
    let mut offs = vec![0, size / 2, size.saturating_sub(1)];
    for _ in 0..4 {
        offs.push(rng.below(size.max(1)));
    }
    for off in offs {
        for (whence, data) in [(libc::SEEK_DATA, true), (libc::SEEK_HOLE, false)] {
            let k = lseek(&kf, off, whence);
            let w = seek_from_walk(&maps, size, off, data);
            if k != w {
                bad.push(format!(
                    "{rel}: lseek({off}, {}) kernel {k:?} walk {w:?}",
                    if data { "DATA" } else { "HOLE" }
                ));
            }
        }
    }

    // Buffered reads: the whole file in 1 MiB readahead windows, or
    // samples of a big one.
    let windows: Vec<(u64, u64)> = if size <= WHOLE_LIMIT {
        (0..size.div_ceil(CHUNK))
            .map(|i| (i * CHUNK, CHUNK))
            .collect()
    } else {
        let mut w: Vec<(u64, u64)> = maps
            .iter()
            .filter(|x| x.kind != MapType::Hole && x.offset < size)
            .take(16)
            .map(|x| (x.offset, CHUNK.min(x.length)))
            .collect();
        for _ in 0..8 {
            w.push((rng.below(size), CHUNK));
        }
        w
    };
    for (off, len) in windows {
        match m.read_buffered(&node, off, len, 0) {
            Ok(got) => {
                if got != kernel_read(&kf, off, len) {
                    bad.push(format!(
                        "{rel}: buffered read {off}+{len} differs from the kernel's"
                    ));
                    break;
                }
            }
            Err(e) => {
                bad.push(format!("{rel}: buffered read {off}+{len}: errno {e}"));
                break;
            }
        }
    }
    // Direct reads of arbitrary ranges, and a page fault.
    for _ in 0..4 {
        let off = rng.below(size.max(1));
        let len = 1 + rng.below(300_000);
        match m.read_direct(&node, off, len) {
            Ok(got) if got == kernel_read(&kf, off, len) => {}
            Ok(_) => bad.push(format!("{rel}: direct read {off}+{len} differs")),
            Err(e) => bad.push(format!("{rel}: direct read {off}+{len}: errno {e}")),
        }
    }
    if size > 0 {
        let page = rng.below(size) / 4096 * 4096;
        match m.read_buffered(&node, page, 4096, op::FAULT) {
            Ok(got) if got == kernel_read(&kf, page, 4096) => {}
            Ok(_) => bad.push(format!("{rel}: fault at {page} differs")),
            Err(e) => bad.push(format!("{rel}: fault at {page}: errno {e}")),
        }
    }
    m.release(&node);
    bad
}

/// Hard links: every name of one inode is one node, and reads agree.
fn check_hard_links(m: &mut Model, files: &[(String, fs::Metadata)]) -> (usize, Vec<String>) {
    let mut by_ino: HashMap<u64, Vec<&str>> = HashMap::new();
    for (rel, md) in files {
        if md.nlink() > 1 {
            by_ino.entry(md.ino()).or_default().push(rel);
        }
    }
    let mut bad = Vec::new();
    let mut groups = 0;
    for names in by_ino.values().filter(|n| n.len() > 1) {
        groups += 1;
        let nodes: Vec<Node> = names.iter().map(|n| m.lookup_path(n).unwrap()).collect();
        let first = nodes[0];
        let a = m.read_buffered(&first, 0, first.attr.size, 0);
        for (n, name) in nodes.iter().zip(names) {
            if n.nodeid != first.nodeid {
                bad.push(format!(
                    "{name}: node {} vs {} for {}",
                    n.nodeid, first.nodeid, names[0]
                ));
            }
            if m.read_buffered(n, 0, n.attr.size, 0) != a {
                bad.push(format!("{name}: reads differ from {}", names[0]));
            }
        }
    }
    (groups, bad)
}

/// Run the model over every regular file of `img`, reading data through a
/// loop device attached by the frontend, against the kernel's ext4.
fn model_vs_kernel(img: &Path, title: &str, cfg: Config) -> Model {
    let km = KernelMount::ro(img).expect("kernel mount");
    let vol = kmodel::open_volume(img);
    let bs = vol.sb().block_size;
    drop(vol);
    let backing = BackingDevice::open(img, bs).expect("loop device");
    let mut m = Model::start(img, backing.path(), cfg);
    let files = regular_files(km.path());
    let mut rng = Rng::new(7);
    let mut bad = Vec::new();
    let t = Instant::now();
    for (rel, _) in &files {
        bad.extend(check_file(&mut m, km.path(), rel, &mut rng));
    }
    let (groups, hb) = check_hard_links(&mut m, &files);
    bad.extend(hb);
    m.verify_upserts();
    eprintln!(
        "{title}: {} files, {groups} hard-link groups, {} IOMAP_BEGIN, {} cache hits, {} RETRY_CACHE, {} upserts, {} inline READs in {:.1?} (loop device {})",
        files.len(),
        m.counters.begin,
        m.counters.cache_hits,
        m.counters.retry_cache,
        m.counters.upserts,
        m.counters.inline_reads,
        t.elapsed(),
        backing.describe()
    );
    assert!(
        bad.is_empty(),
        "{title}: {} mismatches:\n  {}",
        bad.len(),
        bad[..bad.len().min(20)].join("\n  ")
    );
    m.assert_clean(title);
    // The server read no file data itself except inline data.
    assert_eq!(m.counters.reads, m.counters.inline_reads);
    m
}

#[test]
fn matrix_images_vs_kernel() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    for name in [
        "ext4",
        "ext4-1k",
        "ext4-inline",
        "ext4-noextent",
        "ext4-bigalloc",
        "ext4-64k",
        "ext3",
        "ext2-1k-128",
    ] {
        let spec = matrix_spec(name);
        if !spec.kernel_mountable() {
            eprintln!("{name}: the kernel cannot mount it here; skipped");
            continue;
        }
        let img = build_image(spec);
        let m = model_vs_kernel(&img.path, name, Config::default());
        if name == "ext4-inline" {
            assert!(m.counters.inline_reads > 0, "no inline file was read");
        }
        assert!(
            m.counters.upserts > 0 || name == "ext4-inline",
            "{name}: nothing was pushed"
        );
        m.finish();
    }
}

#[test]
fn kernel_written_image_vs_kernel() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    let img = kw_image(&KW_4K);
    for (push, title) in [
        (true, "kernel-written, pushes on"),
        (false, "kernel-written, pushes off"),
    ] {
        let cfg = Config {
            iomap_push_window: if push { 1 << 16 } else { 0 },
            ..Config::default()
        };
        let m = model_vs_kernel(&img, title, cfg);
        if push {
            assert!(m.counters.retry_cache > 0 && m.counters.upserts > 0);
        } else {
            assert_eq!((m.counters.upserts, m.counters.retry_cache), (0, 0));
        }
        m.finish();
    }
}

/// A sequential read of a file whose mappings fit the kernel's cache needs
/// one `IOMAP_BEGIN` (the first miss), and every push matches the engine.
#[test]
fn sequential_read_needs_one_upcall_when_pushed() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    let img = kw_image(&KW_4K);
    let mut m = Model::start(&img, &img, Config::default());
    let node = m.lookup_path("frag/f0").unwrap();
    m.open(&node);
    let opened = m.counters.upserts;
    assert!(
        opened > 0 && opened <= 8,
        "{opened} mappings pushed on open"
    );
    let size = node.attr.size;
    let mut off = 0;
    while off < size {
        m.read_buffered(&node, off, CHUNK, 0).unwrap();
        off += CHUNK;
    }
    eprintln!(
        "frag/f0 ({size} bytes): {} IOMAP_BEGIN, {} upserts, {} cache hits",
        m.counters.begin, m.counters.upserts, m.counters.cache_hits
    );
    assert_eq!(m.counters.begin, 1, "sequential read upcalls");
    assert_eq!(m.counters.retry_cache, 1);
    m.verify_upserts();
    m.assert_clean("pushes");
    m.finish();
}

/// Breaking the server's honesty must be caught: a model whose cache
/// budget is far below the server's idea of it loses pushed mappings, and
/// the `RETRY_CACHE` that follows is reported.
#[test]
fn model_catches_a_lying_retry_cache() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    let img = kw_image(&KW_4K);
    let mut m = Model::start(&img, &img, Config::default());
    m.cache = ext4_engine::mapping_cache::MappingCache::new(4096);
    let node = m.lookup_path("frag/f0").unwrap();
    let _ = m.read_buffered(&node, 40 << 20, 4096, 0);
    assert!(
        m.violations.iter().any(|v| v.contains("RETRY_CACHE")),
        "violations: {:?}",
        m.violations
    );
    m.violations.clear();
    m.finish();
}

fn small_image() -> PathBuf {
    build_image(matrix_spec("ext4")).path
}

fn begin_raw(m: &mut Model, nodeid: u64, body: &[u8]) -> i32 {
    m.call(opcode::IOMAP_BEGIN, nodeid, body).0
}

#[test]
fn malformed_requests_get_errors() {
    if !require_e2fsprogs() {
        return;
    }
    let img = small_image();
    let mut m = Model::start(&img, &img, Config::default());
    let km_files = ["files/size-65537", "files/size-4097"];
    let node = km_files
        .iter()
        .find_map(|p| m.lookup_path(p).ok())
        .expect("a regular file");
    let ino = node.attr.ino;
    let good = abi::IomapBeginIn {
        opflags: 0,
        reserved: 0,
        attr_ino: ino,
        pos: 0,
        count: 4096,
    };
    assert_eq!(begin_raw(&mut m, ino, good.as_bytes()), 0);
    // Truncated bodies.
    for n in 0..32 {
        assert_eq!(
            begin_raw(&mut m, ino, &good.as_bytes()[..n]),
            libc::EINVAL,
            "{n}-byte body"
        );
    }
    let with = |f: &dyn Fn(&mut abi::IomapBeginIn)| {
        let mut a = good;
        f(&mut a);
        a
    };
    let cases: Vec<(abi::IomapBeginIn, u64, i32, &str)> = vec![
        (
            with(&|a| a.opflags = 1 << 20),
            ino,
            libc::EINVAL,
            "unknown opflag",
        ),
        (with(&|a| a.reserved = 1), ino, libc::EINVAL, "reserved"),
        (
            with(&|a| a.attr_ino = ino + 1),
            ino,
            libc::EINVAL,
            "wrong attr_ino",
        ),
        (with(&|a| a.attr_ino = 0), ino, libc::EINVAL, "attr_ino 0"),
        (with(&|a| a.opflags = op::WRITE), ino, libc::EROFS, "write"),
        (with(&|a| a.opflags = op::ZERO), ino, libc::EROFS, "zero"),
        (
            with(&|a| a.opflags = op::UNSHARE | op::DIRECT),
            ino,
            libc::EROFS,
            "unshare",
        ),
        (
            with(&|a| a.pos = u64::MAX),
            ino,
            libc::EINVAL,
            "pos past maxbytes",
        ),
        (
            with(&|a| a.attr_ino = 1),
            abi::ROOT_ID,
            libc::EINVAL,
            "root directory",
        ),
        (with(&|a| a.attr_ino = 2), 2, libc::ESTALE, "node id 2"),
        (with(&|a| a.attr_ino = 0), 0, libc::EINVAL, "node id 0"),
        (
            with(&|a| a.attr_ino = 1 << 40),
            1 << 40,
            libc::ESTALE,
            "node id past u32",
        ),
    ];
    for (args, nodeid, want, what) in cases {
        let got = begin_raw(&mut m, nodeid, args.as_bytes());
        assert_eq!(got, want, "{what}");
    }
    // Far past EOF but below maxbytes, with a count that overflows: a hole.
    let far = with(&|a| {
        a.pos = 1 << 40;
        a.count = u64::MAX;
    });
    assert_eq!(begin_raw(&mut m, ino, far.as_bytes()), 0);
    // IOMAP_END, IOEND, CONFIG, FREEZE, SHUTDOWN with short bodies.
    for (op, full) in [
        (opcode::IOMAP_END, 72usize),
        (opcode::IOMAP_IOEND, 48),
        (opcode::IOMAP_CONFIG, 64),
        (opcode::FREEZE_FS, 8),
        (opcode::SHUTDOWN_FS, 8),
    ] {
        for n in [0, 1, full / 2, full - 1] {
            assert_eq!(
                m.call(op, ino, &vec![0u8; n]).0,
                libc::EINVAL,
                "opcode {op}, {n} bytes"
            );
        }
    }
    let end = abi::IomapEndIn {
        attr_ino: ino + 1,
        ..Default::default()
    };
    assert_eq!(
        m.call(opcode::IOMAP_END, ino, end.as_bytes()).0,
        libc::EINVAL
    );
    let end = abi::IomapEndIn {
        attr_ino: ino,
        count: 4096,
        written: 4096,
        ..Default::default()
    };
    assert_eq!(m.call(opcode::IOMAP_END, ino, end.as_bytes()).0, 0);
    let ioend = abi::IomapIoendIn {
        attr_ino: ino,
        written: 4096,
        ..Default::default()
    };
    assert_eq!(
        m.call(opcode::IOMAP_IOEND, ino, ioend.as_bytes()).0,
        libc::EROFS
    );
    // READ of an iomap file: the kernel never sends it; refused.
    let r = abi::ReadIn {
        size: 4096,
        ..Default::default()
    };
    assert_eq!(m.call(opcode::READ, ino, r.as_bytes()).0, libc::EIO);
    // Random bodies for every iomap opcode: an answer each, never a crash.
    let mut rng = Rng::new(11);
    for i in 0..3000u64 {
        let op = 4089 + (i % 7) as u32;
        let len = rng.below(120) as usize;
        let mut body = vec![0u8; len];
        rng.fill(&mut body);
        if op == opcode::SHUTDOWN_FS {
            continue;
        }
        let nodeid = if i % 3 == 0 { rng.below(40) } else { ino };
        let (err, _) = m.call(op, nodeid, &body);
        assert!((0..4096).contains(&err));
    }
    // Still serving.
    assert_eq!(begin_raw(&mut m, ino, good.as_bytes()), 0);
    m.violations.retain(|v| !v.contains("unknown type"));
    m.assert_clean("malformed");
    m.finish();
}

#[test]
fn syncfs_freeze_shutdown() {
    if !require_e2fsprogs() {
        return;
    }
    let img = small_image();
    let mut m = Model::start(&img, &img, Config::default());
    let node = m.lookup_path("files/size-65537").unwrap();
    assert_eq!(m.call(opcode::SYNCFS, 0, &[0u8; 8]).0, 0);
    assert_eq!(m.call(opcode::FREEZE_FS, 0, &[0u8; 8]).0, 0);
    assert_eq!(m.call(opcode::UNFREEZE_FS, 0, &[]).0, 0);
    assert!(m.read_buffered(&node, 0, 4096, 0).is_ok());
    assert_eq!(m.call(opcode::SHUTDOWN_FS, 0, &[0u8; 8]).0, 0);
    m.cache.forget_inode(kmodel::node_key(node.nodeid));
    assert_eq!(m.read_buffered(&node, 0, 4096, 0), Err(libc::EIO));
    assert_eq!(m.lookup_path("files").err(), Some(libc::EIO));
    assert_eq!(m.call(opcode::STATFS, 1, &[]).0, libc::EIO);
    assert_eq!(m.call(opcode::IOMAP_CONFIG, 0, &[0u8; 64]).0, libc::EIO);
    assert_eq!(m.call(opcode::GETATTR, 1, &[0u8; 16]).0, libc::EIO);
    m.assert_clean("shutdown");
    m.finish();
}

/// A kernel without iomap in INIT: nothing granted, no attr flag, the
/// series' opcodes answer ENOSYS, and activation is refused.
#[test]
fn no_iomap_without_the_kernel_offer() {
    if !require_e2fsprogs() {
        return;
    }
    let img = small_image();
    let session = Session::new(
        kmodel::served(&img),
        Config {
            iomap: true,
            ..Config::default()
        },
    );
    let init = abi::InitIn {
        major: 7,
        minor: 40,
        flags: abi::init_flags::INIT_EXT as u32,
        flags2: 0,
        ..Default::default()
    };
    let (out, agreed) = ext4_fuse::session::negotiate(
        &init,
        64,
        &Config {
            iomap: true,
            ..Config::default()
        },
    )
    .unwrap();
    assert_eq!(out.flags2 as u64 & (abi::init_flags::IOMAP >> 32), 0);
    assert_eq!(out.minor, 40);
    assert_eq!(agreed.unwrap().flags & abi::init_flags::IOMAP, 0);
    // Offered but not wanted (iomap=off): not granted either.
    let offer = abi::InitIn {
        major: 7,
        minor: 99,
        flags: abi::init_flags::INIT_EXT as u32,
        flags2: (abi::init_flags::IOMAP >> 32) as u32,
        ..Default::default()
    };
    let (out, _) = ext4_fuse::session::negotiate(&offer, 64, &Config::default()).unwrap();
    assert_eq!(out.flags2, 0);
    assert_eq!(out.minor, abi::KERNEL_MINOR_VERSION);
    assert!(session.activate_iomap(1).is_err());
    assert!(!session.iomap_active());
}

/// The loop device the frontend attaches: read-only, autoclear, the fs
/// block size, and gone after drop and after a failed set-up (iomap=on on
/// a connection that did not grant it).
#[test]
fn loop_device_life_cycle() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    let src = small_image();
    let dir = ext4_tests::util::target_dir().join("ext4-test-tmp");
    fs::create_dir_all(&dir).unwrap();
    let img = dir.join(format!("iomap-loop-{}.img", std::process::id()));
    fs::copy(&src, &img).unwrap();
    assert!(devices_backed_by(&img).is_empty());

    let b = BackingDevice::open(&img, 4096).unwrap();
    let name = b.loop_device().unwrap().name();
    assert_eq!(devices_backed_by(&img), vec![name.clone()]);
    let sys = PathBuf::from("/sys/block").join(&name);
    let read = |p: &str| fs::read_to_string(sys.join(p)).unwrap().trim().to_string();
    assert_eq!(read("ro"), "1");
    assert_eq!(read("loop/autoclear"), "1");
    assert_eq!(read("queue/logical_block_size"), "4096");
    eprintln!("{} (sysfs dio={})", b.describe(), read("loop/dio"));
    assert_eq!(
        read("loop/dio") == "1",
        b.loop_device().unwrap().direct_io()
    );
    // Reads through it are the image's bytes.
    let mut a = vec![0u8; 8192];
    let mut c = vec![0u8; 8192];
    b.file().read_exact_at(&mut a, 1 << 20).unwrap();
    File::open(&img)
        .unwrap()
        .read_exact_at(&mut c, 1 << 20)
        .unwrap();
    assert_eq!(a, c);
    b.close().unwrap();
    // The kernel detaches an autoclear loop device a moment after its
    // last close, not during it.
    let start = std::time::Instant::now();
    while !devices_backed_by(&img).is_empty() && start.elapsed().as_secs() < 5 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(devices_backed_by(&img).is_empty(), "leaked after close");

    // Failure path: prepared for iomap=on (probe forced), then the kernel
    // does not grant FUSE_IOMAP: the set-up fails and detaches.
    std::env::set_var(fiomap::PROBE_OVERRIDE_ENV, "assume");
    for mode in [IomapMode::On, IomapMode::Auto] {
        let fuse = ext4_fuse::channel::DevFuse::open().unwrap();
        let prep = fiomap::prepare(mode, fuse.fd(), &img, fiomap::Given::Path, 4096)
            .unwrap()
            .expect("prepared");
        assert_eq!(devices_backed_by(&img).len(), 1);
        let session = Session::new(
            kmodel::served(&img),
            Config {
                iomap: true,
                ..Config::default()
            },
        );
        let r = fiomap::activate(Some(prep), &session, &fuse);
        match mode {
            IomapMode::On => {
                let e = r.unwrap_err();
                assert!(e.contains("iomap=on") && e.contains("FUSE_IOMAP"), "{e}");
            }
            _ => assert!(r.unwrap().is_none()),
        }
        assert!(
            devices_backed_by(&img).is_empty(),
            "{mode:?}: loop device leaked"
        );
    }
    std::env::remove_var(fiomap::PROBE_OVERRIDE_ENV);
    fs::remove_file(&img).unwrap();
}

/// Upcalls per MiB and server CPU per request on a 10,000-extent file,
/// sequential and random 128 KiB reads, pushes on and off. Not a test:
/// `cargo test --test iomap_model -- --ignored --nocapture bench`.
#[test]
#[ignore]
fn bench_upcalls_per_mib() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    let img = kw_image(&KW_4K);
    println!(
        "\n{:<22} {:>10} {:>12} {:>12} {:>12} {:>14} {:>16}",
        "case",
        "MiB read",
        "BEGIN/MiB",
        "upserts/MiB",
        "cache hits",
        "server us/req",
        "server us/BEGIN"
    );
    for push in [true, false] {
        for random in [false, true] {
            let cfg = Config {
                iomap_push_window: if push { 1 << 16 } else { 0 },
                ..Config::default()
            };
            let mut m = Model::start(&img, &img, cfg);
            let node = m.lookup_path("frag/f0").unwrap();
            m.open(&node);
            let size = node.attr.size;
            let req = 128 << 10;
            let mut rng = Rng::new(3);
            let mut total = 0u64;
            let before = m.server_stats();
            let t = Instant::now();
            let n = size / req;
            for i in 0..n {
                let off = if random { rng.below(n) * req } else { i * req };
                total += m.read_buffered(&node, off, req, 0).unwrap().len() as u64;
            }
            let wall = t.elapsed();
            let after = m.server_stats();
            let (mut reqs, mut cpu, mut bcount, mut bcpu) = (0u64, 0u64, 0u64, 0u64);
            for s in &after {
                let b = before.iter().find(|x| x.opcode == s.opcode);
                let c = s.count - b.map_or(0, |x| x.count);
                let ns = s.cpu_ns - b.map_or(0, |x| x.cpu_ns);
                reqs += c;
                cpu += ns;
                if s.opcode == opcode::IOMAP_BEGIN {
                    bcount = c;
                    bcpu = ns;
                }
            }
            let mib = total as f64 / (1 << 20) as f64;
            println!(
                "{:<22} {:>10.1} {:>12.2} {:>12.2} {:>12} {:>14.2} {:>16.2}   ({wall:.1?})",
                format!(
                    "{} {}",
                    if random { "random" } else { "sequential" },
                    if push { "push" } else { "no push" }
                ),
                mib,
                m.counters.begin as f64 / mib,
                m.counters.upserts as f64 / mib,
                m.counters.cache_hits,
                cpu as f64 / 1000.0 / reqs.max(1) as f64,
                bcpu as f64 / 1000.0 / bcount.max(1) as f64,
            );
            m.assert_clean("bench");
            m.finish();
        }
    }
}
