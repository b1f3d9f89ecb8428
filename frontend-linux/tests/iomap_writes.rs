//! iomap writes through the kernel model (`kmodel`, `kmodel/write.rs`):
//! the model plays the kernel's write side against the real session loop
//! on a read-write image (allocation at `IOMAP_BEGIN`, conversion at
//! `IOEND`, metadata-only truncate and fallocate) and does the data I/O
//! itself at the answered addresses.
//!
//! - `fsx_*`: random writes (buffered, short, direct, through mmap),
//!   truncates, punches, zero ranges, fallocates, collapse and insert
//!   ranges, reads, writebacks,
//!   fsyncs and evictions against an in-memory copy of the file; every
//!   read compared with it, every reply checked; after the run `e2fsck
//!   -fn` must be clean and the kernel's ext4 (loop mount, read-only) must
//!   read exactly the in-memory bytes. `scripts/soak-iomap-fsx.sh` runs
//!   the same for many more operations and seeds.
//! - Single answers: a hole under `WRITE` is allocated `UNWRITTEN|NEW`,
//!   `ZERO` over a hole allocates nothing, `EFBIG` past the largest size,
//!   `ENOSPC` when full, a short write's allocation past the size given
//!   back, a failed `IOEND` leaves zeros.

mod kmodel;

use std::path::{Path, PathBuf};
use std::time::Instant;

use ext4_engine::falloc;
use std::sync::Arc;

use ext4_engine::iomap::{ioend, op};
use ext4_engine::mapping_cache::MapType;
use ext4_engine::mount_opts::MountOptions;
use ext4_engine::{BlockDevice, FileDevice};
use ext4_fuse::abi::opcode;
use ext4_fuse::iomap_setup::{self as fiomap, BackingDevice, IomapMode};
use ext4_fuse::loopdev::devices_backed_by;
use ext4_fuse::session::Config;
use ext4_tests::crashdev::{CrashDevice, CrashPoint, Keep};
use ext4_tests::oracle::{e2fsck_check, mke2fs, KernelMount, Scratch};
use ext4_tests::rng::Rng;
use ext4_tests::util::{require_e2fsprogs, require_kernel_ext4};
use kmodel::write::KFile;
use kmodel::{DevIo, Model};
use zerocopy::IntoBytes;

/// An image of `kind` (`ext4`, `ext3`) with block size `bs` holding one
/// file `/f` of `initial` bytes.
fn image(dir: &Path, kind: &str, bs: u32, size: &str, initial: &[u8]) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), initial).unwrap();
    let img = dir.join(format!("{kind}-{bs}.img"));
    let b = bs.to_string();
    mke2fs(&img, &["-t", kind, "-b", &b], Some(&src), size);
    img
}

/// The kernel's ext4 reads `/f` of `img`.
fn kernel_bytes(img: &Path) -> Vec<u8> {
    let km = KernelMount::ro(img).expect("kernel mount");
    std::fs::read(km.path().join("f")).unwrap()
}

/// First difference of two byte strings, described.
fn differ(got: &[u8], want: &[u8]) -> Option<String> {
    if got == want {
        return None;
    }
    let i = got.iter().zip(want).position(|(a, b)| a != b);
    Some(match i {
        Some(i) => format!(
            "byte {i} differs: {:#04x} vs {:#04x} (lengths {} and {})",
            got[i],
            want[i],
            got.len(),
            want.len()
        ),
        None => format!("lengths {} and {}", got.len(), want.len()),
    })
}

/// The fsx run's knobs.
#[derive(Clone, Copy, Debug)]
pub struct FsxParams {
    pub kind: &'static str,
    pub bs: u32,
    pub seed: u64,
    pub ops: u64,
    /// Largest file size.
    pub max_len: u64,
    /// Largest single write, read or range.
    pub max_op: u64,
    /// Serve on the writable loop device a read-write iomap mount
    /// attaches (`iomap_setup::writable_backing`), the model doing its
    /// data I/O through it too, instead of on the image file.
    pub on_loop: bool,
}

struct Fsx {
    m: Model,
    f: KFile,
    want: Vec<u8>,
    rng: Rng,
    p: FsxParams,
    log: Vec<String>,
    counts: [u64; 14],
    /// Compare the whole file after every operation (`IOMAP_FSX_PARANOID`,
    /// to find the operation that broke it).
    paranoid: bool,
}

impl Fsx {
    fn note(&mut self, s: String) {
        if self.log.len() >= 30 {
            self.log.remove(0);
        }
        self.log.push(s);
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "{:?}: {what}\nlast operations:\n  {}\nviolations: {:?}",
            self.p,
            self.log.join("\n  "),
            &self.m.violations[..self.m.violations.len().min(10)]
        );
    }

    fn ok<T>(&self, r: Result<T, i32>, what: &str) -> T {
        match r {
            Ok(t) => t,
            Err(e) => self.fail(&format!("{what}: errno {e}")),
        }
    }

    fn data(&mut self, n: u64) -> Vec<u8> {
        let mut d = vec![0u8; n as usize];
        self.rng.fill(&mut d);
        d
    }

    fn check_range(&mut self, off: u64, len: u64) {
        let r = self.m.read_file(&self.f, off, len);
        let got = self.ok(r, "read");
        let end = (off + len).min(self.want.len() as u64);
        let want = if off < end {
            &self.want[off as usize..end as usize]
        } else {
            &[][..]
        };
        if let Some(d) = differ(&got, want) {
            self.fail(&format!("read {off}+{len}: {d}"));
        }
    }

    fn put(&mut self, off: u64, data: &[u8]) {
        let end = off as usize + data.len();
        if self.want.len() < end {
            self.want.resize(end, 0);
        }
        self.want[off as usize..end].copy_from_slice(data);
    }

    fn zero(&mut self, off: u64, end: u64) {
        let end = (end as usize).min(self.want.len());
        if (off as usize) < end {
            self.want[off as usize..end].fill(0);
        }
    }

    fn step(&mut self) {
        let bs = self.m.bs;
        let size = self.f.size;
        let p = self.p;
        let off = self.rng.below(p.max_len);
        let len = (1 + self.rng.below(p.max_op)).min(p.max_len - off).max(1);
        match self.rng.below(100) {
            0..=21 => {
                let d = self.data(len);
                self.note(format!("write {off}+{len} (size {size})"));
                let r = self.m.buffered_write(&mut self.f, off, &d, None);
                let n = self.ok(r, "write");
                assert_eq!(n, len);
                self.put(off, &d);
                self.counts[0] += 1;
            }
            22..=24 => {
                let short = self.rng.below(len);
                let d = self.data(len);
                self.note(format!(
                    "short write {off}+{len} stops at {short} (size {size})"
                ));
                let r = self.m.buffered_write(&mut self.f, off, &d, Some(short));
                let n = self.ok(r, "short write");
                self.put(off, &d[..n as usize]);
                self.counts[1] += 1;
            }
            25..=31 => {
                let off = off / bs * bs;
                let len = (len.div_ceil(bs) * bs).min(p.max_len - off).max(bs);
                let d = self.data(len);
                self.note(format!("direct write {off}+{len} (size {size})"));
                let r = self.m.direct_write(&mut self.f, off, &d);
                self.ok(r, "direct write");
                self.put(off, &d);
                self.counts[2] += 1;
            }
            32..=38 if size > 0 => {
                let off = self.rng.below(size);
                let blk_end = (off / bs + 1) * bs;
                let len = (1 + self.rng.below(bs)).min(blk_end - off).min(size - off);
                let d = self.data(len);
                self.note(format!("mmap write {off}+{len} (size {size})"));
                let r = self.m.mmap_write(&mut self.f, off, &d);
                self.ok(r, "mmap write");
                self.put(off, &d);
                self.counts[3] += 1;
            }
            39..=55 => {
                self.note(format!("read {off}+{len} (size {size})"));
                self.check_range(off, len);
                self.counts[4] += 1;
            }
            56..=63 => {
                let new = self.rng.below(p.max_len);
                self.note(format!("truncate {new} (size {size})"));
                let r = self.m.truncate(&mut self.f, new);
                self.ok(r, "truncate");
                self.want.resize(new as usize, 0);
                self.counts[5] += 1;
            }
            64..=68 => {
                let mode = falloc::PUNCH_HOLE | falloc::KEEP_SIZE;
                self.fallocate(mode, off, len, 6);
            }
            69..=73 => {
                let keep = if self.rng.chance(1, 2) {
                    falloc::KEEP_SIZE
                } else {
                    0
                };
                self.fallocate(falloc::ZERO_RANGE | keep, off, len, 7);
            }
            74..=76 => {
                let keep = if self.rng.chance(1, 2) {
                    falloc::KEEP_SIZE
                } else {
                    0
                };
                self.fallocate(keep, off, len, 8);
            }
            77..=78 => {
                let bs = u64::from(self.p.bs);
                let (off, len) = (off / bs * bs, len.div_ceil(bs) * bs);
                let mode = if self.rng.chance(1, 2) {
                    falloc::COLLAPSE_RANGE
                } else {
                    falloc::INSERT_RANGE
                };
                self.shift(mode, off, len);
            }
            79..=85 => {
                self.note(format!("writeback {off}+{len}"));
                let r = self.m.writeback(&mut self.f, off, off + len);
                self.ok(r, "writeback");
                self.counts[9] += 1;
            }
            86..=89 => {
                self.note("fsync".into());
                let r = self.m.fsync(&mut self.f);
                self.ok(r, "fsync");
                self.counts[10] += 1;
            }
            90..=94 => {
                self.note("evict".into());
                let r = self.m.evict(&mut self.f);
                self.ok(r, "evict");
                self.counts[11] += 1;
            }
            _ => {
                self.note(format!("read all (size {size})"));
                self.check_range(0, size);
            }
        }
        if self.f.size != self.want.len() as u64 {
            self.fail(&format!(
                "size {} but the model's file is {}",
                self.f.size,
                self.want.len()
            ));
        }
        if !self.m.violations.is_empty() {
            self.fail("protocol violations");
        }
        if self.paranoid {
            let size = self.f.size;
            self.check_range(0, size);
        }
    }

    /// Collapse or insert range: refused unless inside the file (and,
    /// inserting, within the largest size), as the kernel's ext4 refuses.
    fn shift(&mut self, mode: u32, off: u64, len: u64) {
        let size = self.f.size;
        let collapse = mode == falloc::COLLAPSE_RANGE;
        self.note(format!(
            "{} {off}+{len} (size {size})",
            if collapse { "collapse" } else { "insert" }
        ));
        let fits = if collapse {
            off + len < size
        } else {
            off < size && size + len <= self.p.max_len
        };
        if !fits {
            if collapse || off >= size {
                let r = self.m.fallocate(&mut self.f, mode, off, len);
                if r != Err(libc::EINVAL) {
                    self.fail(&format!("{mode:#x} outside the file: {r:?}"));
                }
            }
            return;
        }
        match self.m.fallocate(&mut self.f, mode, off, len) {
            Ok(()) => {}
            // Block-mapped files cannot shift (the kernel's ext4 answers so).
            Err(e) if e == libc::EOPNOTSUPP && self.p.kind != "ext4" => return,
            Err(e) => self.fail(&format!("{mode:#x}: errno {e}")),
        }
        let (o, l) = (off as usize, len as usize);
        if collapse {
            self.want.drain(o..o + l);
            self.counts[12] += 1;
        } else {
            self.want.splice(o..o, std::iter::repeat_n(0u8, l));
            self.counts[13] += 1;
        }
    }

    fn fallocate(&mut self, mode: u32, off: u64, len: u64, slot: usize) {
        let size = self.f.size;
        self.note(format!(
            "fallocate mode {mode:#x} {off}+{len} (size {size})"
        ));
        match self.m.fallocate(&mut self.f, mode, off, len) {
            Ok(()) => {}
            // Block-mapped files have no unwritten extents (as the
            // kernel's ext4 answers).
            Err(e) if e == libc::EOPNOTSUPP && self.p.kind != "ext4" => return,
            Err(e) => self.fail(&format!("fallocate: errno {e}")),
        }
        let end = off + len;
        if mode & falloc::KEEP_SIZE == 0 && end > self.want.len() as u64 {
            self.want.resize(end as usize, 0);
        }
        if mode & (falloc::PUNCH_HOLE | falloc::ZERO_RANGE) != 0 {
            self.zero(off, end);
        }
        self.counts[slot] += 1;
    }
}

/// One fsx run; returns the model for its counters.
pub fn fsx(p: FsxParams) {
    let dir = Scratch::new("iomap-fsx");
    let mut rng = Rng::new(p.seed);
    let mut initial = vec![0u8; rng.below(p.max_len) as usize];
    rng.fill(&mut initial);
    let img = image(dir.path(), p.kind, p.bs, "64M", &initial);
    let backing = p.on_loop.then(|| writable_loop(&img));
    let mut m = match &backing {
        Some(b) => {
            let dev = FileDevice::from_file(b.reopen_writable().unwrap(), false).unwrap();
            let size = dev.size();
            let data = b.file().try_clone().unwrap();
            Model::start_rw_on(Box::new(dev), Box::new(data), size, Config::default())
        }
        None => Model::start_rw(&img, Config::default()),
    };
    let f = m.open_rw("f");
    let mut x = Fsx {
        m,
        f,
        want: initial,
        rng,
        p,
        log: Vec::new(),
        counts: [0; 14],
        paranoid: std::env::var_os("IOMAP_FSX_PARANOID").is_some(),
    };
    let t = Instant::now();
    for _ in 0..p.ops {
        x.step();
    }
    let size = x.f.size;
    x.check_range(0, size);
    let r = x.m.fsync(&mut x.f);
    x.ok(r, "final fsync");
    let Fsx {
        mut m,
        want,
        counts,
        ..
    } = x;
    eprintln!(
        "fsx {p:?}: {:.1?}; ops write {} short {} direct {} mmap {} read {} truncate {} punch {} zero {} falloc {} writeback {} fsync {} evict {} collapse {} insert {}; \
         upcalls: begin {} (write {} zero {} writeback {} direct {}), cache write hits {}, end {}, ioend {}, data {} KiB",
        t.elapsed(),
        counts[0], counts[1], counts[2], counts[3], counts[4], counts[5], counts[6], counts[7], counts[8], counts[9], counts[10], counts[11], counts[12], counts[13],
        m.counters.begin,
        m.wc.write_begins,
        m.wc.zero_begins,
        m.wc.writeback_begins,
        m.wc.direct_begins,
        m.wc.write_hits,
        m.wc.ends,
        m.wc.ioends,
        m.wc.data_bytes >> 10,
    );
    m.unmount();
    m.assert_clean("fsx");
    m.finish();
    if let Some(b) = backing {
        // The server's close flushed the loop device (its page cache
        // into the image); no loop device outlives the mount.
        let name = b.loop_device().unwrap().name();
        b.close().unwrap();
        wait_detached(&img, &name);
    }
    let (code, out) = e2fsck_check(&img);
    assert_eq!(code, 0, "{p:?}: e2fsck -fn exited {code}:\n{out}");
    if require_kernel_ext4() {
        let k = kernel_bytes(&img);
        if let Some(d) = differ(&k, &want) {
            panic!("{p:?}: the kernel's ext4 reads /f differently: {d}");
        }
        eprintln!(
            "fsx {}: e2fsck -fn clean; the kernel's ext4 reads the model's {} bytes",
            p.kind,
            k.len()
        );
    }
}

fn fsx_ops() -> u64 {
    std::env::var("IOMAP_FSX_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6_000)
}

fn fsx_seed(default: u64) -> u64 {
    std::env::var("IOMAP_FSX_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// One fsx run of the test command (`IOMAP_FSX_OPS`, `IOMAP_FSX_SEED`
/// change its length and seed).
fn fsx_run(kind: &'static str, bs: u32, seed: u64, max_len: u64) {
    if !require_e2fsprogs() {
        return;
    }
    fsx(FsxParams {
        kind,
        bs,
        seed: fsx_seed(seed),
        ops: fsx_ops(),
        max_len,
        max_op: max_len / 8,
        on_loop: false,
    });
}

/// The writable loop device a read-write iomap mount of `img` attaches
/// (the probe forced: this kernel has no FUSE iomap), checked: writable,
/// autoclear, the filesystem's block size.
fn writable_loop(img: &Path) -> BackingDevice {
    std::env::set_var(fiomap::PROBE_OVERRIDE_ENV, "assume");
    let b = fiomap::writable_backing(IomapMode::Auto, img, &MountOptions::default())
        .unwrap()
        .expect("a writable loop device");
    let name = b.loop_device().expect("a loop device").name();
    let sys = PathBuf::from("/sys/block").join(&name);
    let read = |p: &str| {
        std::fs::read_to_string(sys.join(p))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(read("ro"), "0", "{name} is read-only");
    assert_eq!(read("loop/autoclear"), "1");
    assert_eq!(devices_backed_by(img), vec![name]);
    b
}

/// The kernel detaches an autoclear loop device a moment after its last
/// close.
fn wait_detached(img: &Path, name: &str) {
    let start = Instant::now();
    while !devices_backed_by(img).is_empty() && start.elapsed().as_secs() < 5 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(devices_backed_by(img).is_empty(), "{name} leaked");
}

/// fsx with the server and the model both on the writable loop device of
/// a read-write iomap mount: the server's metadata and the model's file
/// data through one block device (one page cache); after the close and
/// the detach, `e2fsck -fn` and the kernel's ext4 read the model's bytes
/// from the image file.
#[test]
fn fsx_on_the_writable_loop_device() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    fsx(FsxParams {
        kind: "ext4",
        bs: 4096,
        seed: fsx_seed(4),
        ops: fsx_ops() / 2,
        max_len: 2 << 20,
        max_op: 256 << 10,
        on_loop: true,
    });
}

/// Which read-write mounts get iomap: one on a block device the volume is
/// open on; an image file only through the writable loop device, on which
/// the volume opens read-write; never an image at an offset, a read-only
/// request or `iomap=off`.
#[test]
fn read_write_iomap_decisions() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    use ext4_fuse::options::AutoOnOff::*;
    assert_eq!(fiomap::mode_for_writes(Auto, false, false), Ok(Off));
    assert!(fiomap::mode_for_writes(On, false, false)
        .unwrap_err()
        .contains("iomap=on"));
    assert_eq!(fiomap::mode_for_writes(Auto, false, true), Ok(Auto));
    assert_eq!(fiomap::mode_for_writes(On, true, false), Ok(On));
    let at = MountOptions {
        offset: Some(1 << 20),
        ..Default::default()
    };
    assert_eq!(fiomap::mode_for_source(Auto, &at), Ok(Off));
    assert!(fiomap::mode_for_source(On, &at).is_err());
    assert_eq!(
        fiomap::mode_for_source(On, &MountOptions::default()),
        Ok(On)
    );

    let dir = Scratch::new("iomap-rw-setup");
    let img = image(dir.path(), "ext4", 1024, "16M", b"data");
    std::env::set_var(fiomap::PROBE_OVERRIDE_ENV, "assume");
    let ro = MountOptions {
        read_only: true,
        ..Default::default()
    };
    for (mode, o) in [
        (Off, MountOptions::default()),
        (Auto, ro),
        (Auto, at.clone()),
    ] {
        assert!(fiomap::writable_backing(mode, &img, &o).unwrap().is_none());
    }
    assert!(fiomap::writable_backing(On, &img, &at).is_err());
    assert!(devices_backed_by(&img).is_empty());

    let b = writable_loop(&img);
    let name = b.loop_device().unwrap().name();
    let sys = PathBuf::from("/sys/block").join(&name);
    assert_eq!(
        std::fs::read_to_string(sys.join("queue/logical_block_size"))
            .unwrap()
            .trim(),
        "1024"
    );
    // The volume opens read-write on the loop device itself.
    let on_loop = || {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l == b.path()))
            .count()
    };
    let before = on_loop();
    let file = b.reopen_writable().unwrap();
    let vol = ext4_fuse::inherited::open_volume(file, "img", &MountOptions::default()).unwrap();
    assert!(!vol.read_only());
    assert_eq!(on_loop(), before + 1);
    // Detached (iomap declined after all) while the volume still uses
    // it: it stays until the volume lets go.
    b.close().unwrap();
    assert_eq!(devices_backed_by(&img), vec![name.clone()]);
    let mut sb = [0u8; 1024];
    vol.device().read_at(1024, &mut sb).unwrap();
    vol.close().unwrap();
    drop(vol);
    wait_detached(&img, &name);
    let (code, out) = e2fsck_check(&img);
    assert_eq!(code, 0, "e2fsck -fn exited {code}:\n{out}");
}

#[test]
fn fsx_ext4_4k() {
    fsx_run("ext4", 4096, 1, 2 << 20);
}

#[test]
fn fsx_ext4_1k() {
    fsx_run("ext4", 1024, 2, 1 << 20);
}

#[test]
fn fsx_ext3_indirect() {
    fsx_run("ext3", 4096, 3, 2 << 20);
}

/// Single answers of the write side, checked one by one.
#[test]
fn write_answers() {
    if !require_e2fsprogs() {
        return;
    }
    let dir = Scratch::new("iomap-answers");
    let img = image(dir.path(), "ext4", 4096, "16M", &[7u8; 10000]);
    let mut m = Model::start_rw(&img, Config::default());
    let f = m.open_rw("f");
    let node = f.node;
    // Over the written blocks: MAPPED, not new.
    let (r, w) = m.begin(&node, 0, 4096, op::WRITE).unwrap();
    assert_eq!(
        (r.kind, r.flags, w.kind),
        (MapType::Mapped, 0, MapType::PureOverwrite)
    );
    // ZERO over a hole: a hole, nothing allocated.
    let free = statfs_free(&mut m);
    let (r, _) = m.begin(&node, 1 << 20, 4096, op::ZERO).unwrap();
    assert_eq!(r.kind, MapType::Hole);
    assert_eq!(statfs_free(&mut m), free, "ZERO over a hole allocated");
    // WRITE over a hole: unwritten and new, allocated.
    let (r, _) = m.begin(&node, 1 << 20, 8192, op::WRITE).unwrap();
    assert_eq!((r.kind, r.flags), (MapType::Unwritten, 1));
    assert_eq!(r.offset, 1 << 20);
    assert!(statfs_free(&mut m) < free);
    // A short write that reached nothing gives its blocks back.
    let args = ext4_fuse::abi::IomapEndIn {
        opflags: op::WRITE,
        attr_ino: node.attr.ino,
        pos: 1 << 20,
        count: r.length,
        written: 0,
        map: kmodel::encode(&r),
        ..Default::default()
    };
    let (e, _) = m.call(
        ext4_fuse::abi::opcode::IOMAP_END,
        node.nodeid,
        zerocopy::IntoBytes::as_bytes(&args),
    );
    assert_eq!(e, 0);
    assert_eq!(statfs_free(&mut m), free, "IOMAP_END did not give back");
    // Past the largest file size: EFBIG.
    let max = m.maxbytes;
    assert_eq!(
        m.begin(&node, max, 4096, op::WRITE).err(),
        Some(libc::EFBIG)
    );
    // Freed blocks leave the kernel's cache of the device: truncating the
    // file to nothing sends DEV_INVAL over every block it had.
    let blocks: Vec<(u64, u64)> = m
        .report_walk(&node)
        .unwrap()
        .iter()
        .filter(|r| r.kind.has_addr())
        .map(|r| (r.addr, r.length))
        .collect();
    assert!(!blocks.is_empty());
    let mut f = f;
    m.dev_invals.clear();
    m.truncate(&mut f, 0).unwrap();
    for (addr, len) in blocks {
        let covered = (addr..addr + len).step_by(4096).all(|b| {
            m.dev_invals
                .iter()
                .any(|&(o, l)| o <= b && b + 4096 <= o + l)
        });
        assert!(
            covered,
            "freed {addr}+{len} not in DEV_INVAL {:?}",
            m.dev_invals
        );
    }
    // A failed write stays unwritten: zeros, not the bytes that reached
    // the device; the same I/O completed reads as data.
    m.truncate(&mut f, 2 << 20).unwrap();
    let (r, _) = m.begin(&node, 1 << 20, 4096, op::WRITE).unwrap();
    assert_eq!(r.kind, MapType::Unwritten);
    m.dev_file.write_all_at(&[0xab; 4096], r.addr).unwrap();
    let cookie = m.dev_cookie;
    let ioend = |error: i32| ext4_fuse::abi::IomapIoendIn {
        flags: ioend::UNWRITTEN | ioend::WRITEBACK,
        error,
        attr_ino: node.attr.ino,
        pos: 1 << 20,
        new_addr: u64::MAX,
        written: 4096,
        dev: cookie,
        pad: 0,
    };
    let (e, out) = m.call(
        opcode::IOMAP_IOEND,
        node.nodeid,
        ioend(-libc::EIO).as_bytes(),
    );
    assert_eq!((e, out.len()), (0, 8));
    m.evict(&mut f).unwrap();
    let got = m.read_file(&f, 1 << 20, 4096).unwrap();
    assert!(
        got.iter().all(|&b| b == 0),
        "a failed IOEND exposed the bytes of the failed write"
    );
    let (e, _) = m.call(opcode::IOMAP_IOEND, node.nodeid, ioend(0).as_bytes());
    assert_eq!(e, 0);
    m.evict(&mut f).unwrap();
    let got = m.read_file(&f, 1 << 20, 4096).unwrap();
    assert!(
        got.iter().all(|&b| b == 0xab),
        "a completed IOEND did not make the bytes data"
    );
    // Full: ENOSPC at IOMAP_BEGIN.
    let mut at = 2u64 << 20;
    let err = loop {
        match m.begin(&node, at, 1 << 20, op::WRITE) {
            Ok((r, _)) => at = r.offset + r.length,
            Err(e) => break e,
        }
        assert!(at < 64 << 20, "16 MiB image never full");
    };
    assert_eq!(err, libc::ENOSPC);
    m.assert_clean("answers");
    m.unmount();
    m.finish();
    let (code, out) = e2fsck_check(&img);
    assert_eq!(code, 0, "e2fsck -fn exited {code}:\n{out}");
}

fn statfs_free(m: &mut Model) -> u64 {
    let (e, out) = m.call(ext4_fuse::abi::opcode::STATFS, 1, &[]);
    assert_eq!(e, 0);
    // fuse_kstatfs: blocks, bfree, ...
    u64::from_le_bytes(out[8..16].try_into().unwrap())
}

/// Upcalls per MiB written through the model (`bench/iomap_writes.sh`):
/// sequential 128 KiB writes into a new file, random 4 KiB overwrites of
/// a written file, 4 KiB appends, each written back every 8 MiB and at
/// the end, with the server's mapping-cache pushes on and off; and the
/// server's CPU per `IOEND`.
#[test]
#[ignore]
fn bench_write_upcalls_per_mib() {
    if !require_e2fsprogs() {
        return;
    }
    println!(
        "\n{:<26} {:>8} {:>11} {:>10} {:>9} {:>10} {:>10} {:>11} {:>15}",
        "case",
        "MiB",
        "upcalls/MiB",
        "BEGIN/MiB",
        "END/MiB",
        "IOEND/MiB",
        "cache hits",
        "invals/MiB",
        "server us/IOEND"
    );
    const TOTAL: u64 = 64 << 20;
    for push in [true, false] {
        for case in ["sequential 128K", "random overwrite 4K", "append 4K"] {
            let dir = Scratch::new("iomap-bench");
            let initial = if case.starts_with("random") {
                vec![0x5au8; TOTAL as usize]
            } else {
                Vec::new()
            };
            let img = image(dir.path(), "ext4", 4096, "512M", &initial);
            let cfg = Config {
                iomap_push_window: if push { 1 << 16 } else { 0 },
                ..Config::default()
            };
            let mut m = Model::start_rw(&img, cfg);
            let mut f = m.open_rw("f");
            let mut rng = Rng::new(9);
            let before = m.server_stats();
            let (reqs0, begin0) = (m.counters.requests.clone(), m.counters.begin);
            let step = if case.starts_with("sequential") {
                128 << 10
            } else {
                4096
            };
            let data = vec![0xc3u8; step as usize];
            let mut done = 0u64;
            let t = Instant::now();
            while done < TOTAL {
                let off = match case {
                    "random overwrite 4K" => rng.below(TOTAL / 4096) * 4096,
                    _ => done,
                };
                m.buffered_write(&mut f, off, &data, None).unwrap();
                done += step;
                if done.is_multiple_of(8 << 20) {
                    m.writeback(&mut f, 0, u64::MAX).unwrap();
                }
            }
            m.fsync(&mut f).unwrap();
            let wall = t.elapsed();
            let after = m.server_stats();
            let count = |op: u32| {
                m.counters.requests.get(&op).copied().unwrap_or(0)
                    - reqs0.get(&op).copied().unwrap_or(0)
            };
            let (ends, ioends) = (count(opcode::IOMAP_END), count(opcode::IOMAP_IOEND));
            let begins = m.counters.begin - begin0;
            let (mut icount, mut icpu) = (0u64, 0u64);
            for s in after.iter().filter(|s| s.opcode == opcode::IOMAP_IOEND) {
                let b = before.iter().find(|x| x.opcode == s.opcode);
                icount = s.count - b.map_or(0, |x| x.count);
                icpu = s.cpu_ns - b.map_or(0, |x| x.cpu_ns);
            }
            let mib = (TOTAL >> 20) as f64;
            println!(
                "{:<26} {:>8.0} {:>11.2} {:>10.2} {:>9.2} {:>10.2} {:>10} {:>11.2} {:>15.2}   ({wall:.1?})",
                format!("{case} {}", if push { "push" } else { "no push" }),
                mib,
                (begins + ends + ioends) as f64 / mib,
                begins as f64 / mib,
                ends as f64 / mib,
                ioends as f64 / mib,
                m.wc.write_hits,
                m.counters.invals as f64 / mib,
                icpu as f64 / 1000.0 / icount.max(1) as f64,
            );
            m.unmount();
            m.assert_clean("bench");
            m.finish();
            let (code, out) = e2fsck_check(&img);
            assert_eq!(code, 0, "e2fsck -fn exited {code}:\n{out}");
        }
    }
}

/// What an operation between two fsyncs may have left in the file.
enum Touch {
    /// These bytes written here.
    Data(u64, Vec<u8>),
    /// Zeros here (punch, zero range, or a truncate's cut).
    Zero(u64, u64),
    /// The size the file had after the operation.
    Size(u64),
}

/// Whether `got` (the file after a crash and replay) can follow from the
/// file `base` as its last fsync left it and the operations `touches`
/// since: each byte is the fsynced one, one written since, or zero where
/// zeros could appear (a hole, an unwritten extent, a cut or punch);
/// never anything else (a stale block exposed).
fn crash_allowed(got: &[u8], base: &[u8], touches: &[Touch]) -> Result<(), String> {
    let mut lo = base.len() as u64;
    let mut hi = lo;
    for t in touches {
        if let Touch::Size(s) = t {
            lo = lo.min(*s);
            hi = hi.max(*s);
        }
    }
    let len = got.len() as u64;
    if len < lo || len > hi {
        return Err(format!("size {len} outside {lo}..={hi}"));
    }
    for (i, &b) in got.iter().enumerate() {
        let i64_ = i as u64;
        if base.get(i) == Some(&b) {
            continue;
        }
        let zero_ok = i >= base.len()
            || base[i] == 0
            || touches.iter().any(|t| match t {
                Touch::Zero(o, e) => (*o..*e).contains(&i64_),
                // A size below `i` cut it; a later extension reads zeros.
                Touch::Size(s) => *s <= i64_,
                Touch::Data(..) => false,
            });
        if b == 0 && zero_ok {
            continue;
        }
        let written = touches.iter().any(|t| match t {
            Touch::Data(o, d) => {
                (*o..*o + d.len() as u64).contains(&i64_) && d[(i64_ - o) as usize] == b
            }
            _ => false,
        });
        if !written {
            return Err(format!(
                "byte {i} is {b:#04x}: neither the fsynced {:?} nor written since (stale data)",
                base.get(i)
            ));
        }
    }
    Ok(())
}

/// Crash through the model: the server's writes and the model's data
/// writes go to one recording device (`ext4_tests::crashdev`); random
/// buffered and direct writes, truncates, punches and writebacks with
/// fsyncs between, then crashes at fsync returns (the file must be
/// exactly what the fsync saw) and at random points between (kept,
/// dropped or reordered unflushed writes: every byte as `crash_allowed`
/// says). Each crashed image is recovered by the kernel's ext4 (a
/// read-write loop mount replays the journal), read, and must pass
/// `e2fsck -fn` after.
fn crash_run(kind: &'static str, seed: u64) {
    let dir = Scratch::new("iomap-crash");
    let mut rng = Rng::new(seed);
    let mut initial = vec![0u8; 100_000];
    rng.fill(&mut initial);
    // Free blocks hold garbage (mke2fs leaves them as they are): a block
    // exposed before its data landed shows it.
    let img = dir.path().join(format!("{kind}-crash.img"));
    std::fs::write(&img, vec![0xeeu8; 16 << 20]).unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), &initial).unwrap();
    mke2fs(
        &img,
        &["-t", kind, "-b", "4096", "-E", "nodiscard"],
        Some(&src),
        "16M",
    );
    let dev = Arc::new(CrashDevice::new(std::fs::read(&img).unwrap()));
    let size = dev.size();
    let mut m = Model::start_rw_on(
        Box::new(dev.clone()),
        Box::new(DevIo(dev.clone())),
        size,
        Config::default(),
    );
    let mut f = m.open_rw("f");
    let bs = m.bs;
    let max = 512u64 << 10;
    let mut want = initial.clone();
    // (events recorded when an fsync returned, the file it saw); the
    // operations after each.
    let mut synced = vec![(0usize, initial)];
    let mut touches: Vec<Vec<Touch>> = vec![Vec::new()];
    for _ in 0..150 {
        let off = rng.below(max);
        let len = (1 + rng.below(64 << 10)).min(max - off);
        let t = touches.last_mut().unwrap();
        match rng.below(10) {
            0..=5 => {
                let mut d = vec![0u8; len as usize];
                rng.fill(&mut d);
                m.buffered_write(&mut f, off, &d, None).unwrap();
                put(&mut want, off, &d);
                t.push(Touch::Data(off, d));
            }
            6 => {
                let off = off / bs * bs;
                let len = len.div_ceil(bs) * bs;
                let mut d = vec![0u8; len as usize];
                rng.fill(&mut d);
                m.direct_write(&mut f, off, &d).unwrap();
                put(&mut want, off, &d);
                t.push(Touch::Data(off, d));
            }
            7 => {
                let new = rng.below(max);
                let old = want.len() as u64;
                m.truncate(&mut f, new).unwrap();
                want.resize(new as usize, 0);
                t.push(Touch::Zero(new, old.max(new)));
            }
            8 => {
                let mode = falloc::PUNCH_HOLE | falloc::KEEP_SIZE;
                if m.fallocate(&mut f, mode, off, len).is_ok() {
                    let end = ((off + len) as usize).min(want.len());
                    if (off as usize) < end {
                        want[off as usize..end].fill(0);
                    }
                    t.push(Touch::Zero(off, off + len));
                }
            }
            _ => m.writeback(&mut f, off, off + len).unwrap(),
        }
        t.push(Touch::Size(f.size));
        if rng.chance(1, 5) {
            m.fsync(&mut f).unwrap();
            synced.push((dev.len(), want.clone()));
            touches.push(Vec::new());
        }
    }
    m.fsync(&mut f).unwrap();
    synced.push((dev.len(), want.clone()));
    m.unmount();
    m.assert_clean("crash run");
    m.finish();
    // Crash points: at fsync returns, and between.
    let mut points: Vec<(CrashPoint, usize)> = Vec::new();
    for _ in 0..8 {
        let k = 1 + rng.index(synced.len() - 1);
        points.push((
            CrashPoint {
                at: synced[k].0,
                keep: Keep::None,
            },
            k,
        ));
        let k = rng.index(synced.len() - 1);
        let (a, b) = (synced[k].0, synced[k + 1].0);
        let at = a + rng.below((b - a) as u64) as usize;
        let keep = *rng.pick(&[Keep::None, Keep::All, Keep::Some(rng_seed(seed, at))]);
        points.push((CrashPoint { at, keep }, k));
    }
    // Just before flushes (the writes since the one before kept in part,
    // in any order): where the order of data, log and commit matters.
    let flushes = dev.flushes();
    for _ in 0..8 {
        let at = *rng.pick(&flushes);
        let k = synced.iter().rposition(|(e, _)| *e <= at).unwrap();
        if k + 1 < synced.len() {
            let keep = Keep::Some(rng_seed(seed, at));
            points.push((CrashPoint { at, keep }, k));
        }
    }
    points.sort_by_key(|(p, _)| p.at);
    let images = dev.crash_images(&points.iter().map(|(p, _)| *p).collect::<Vec<_>>());
    for ((p, k), bytes) in points.iter().zip(images) {
        let path = dir.path().join("crashed.img");
        std::fs::write(&path, &bytes).unwrap();
        let km = KernelMount::mount(&path, false, "").expect("kernel mount (recovery)");
        let got = std::fs::read(km.path().join("f")).unwrap();
        km.unmount().unwrap();
        let (code, out) = e2fsck_check(&path);
        assert_eq!(
            code, 0,
            "{kind} crash {p:?}: e2fsck -fn exited {code}:\n{out}"
        );
        let exact = p.at == synced[*k].0;
        let r = if exact {
            match differ(&got, &synced[*k].1) {
                None => Ok(()),
                Some(d) => Err(format!("the file fsync {k} saw is not there: {d}")),
            }
        } else {
            crash_allowed(&got, &synced[*k].1, &touches[*k])
        };
        if let Err(e) = r {
            panic!("{kind} seed {seed}: crash {p:?} after fsync {k}: {e}");
        }
    }
    eprintln!(
        "crash {kind}: {} fsyncs, {} events, {} crash points recovered by the kernel's ext4 and checked",
        synced.len() - 1,
        dev.len(),
        points.len()
    );
}

fn rng_seed(seed: u64, at: usize) -> u64 {
    seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ at as u64
}

fn put(want: &mut Vec<u8>, off: u64, d: &[u8]) {
    let end = off as usize + d.len();
    if want.len() < end {
        want.resize(end, 0);
    }
    want[off as usize..end].copy_from_slice(d);
}

#[test]
fn crash_through_the_model() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    crash_run("ext4", fsx_seed(11));
    crash_run("ext3", fsx_seed(12));
}

/// The kernel's ext4 after recovering (a read-write mount replays the
/// journal) a copy of `img`: `/f`'s bytes, and whether `/held` exists;
/// then `e2fsck -fn` of the recovered copy must be clean.
fn recovered(img: &Path, what: &str) -> (Vec<u8>, bool) {
    let copy = img.with_extension("copy");
    std::fs::copy(img, &copy).unwrap();
    let km = KernelMount::mount(&copy, false, "").expect("kernel mount (recovery)");
    let got = std::fs::read(km.path().join("f")).unwrap();
    let held = km.path().join("held").exists();
    km.unmount().unwrap();
    let (code, out) = e2fsck_check(&copy);
    assert_eq!(code, 0, "{what}: e2fsck -fn exited {code}:\n{out}");
    std::fs::remove_file(&copy).unwrap();
    (got, held)
}

/// `FREEZE_FS` commits what the kernel wrote back (an image copied while
/// frozen, recovered by the kernel's ext4, holds it and passes `e2fsck
/// -fn`), leaves the image untouched while frozen and holds a change
/// (`MKDIR`) until `UNFREEZE_FS` while other requests are served.
/// `SHUTDOWN_FS` writes nothing more: an append written back but not
/// fsynced is not on the image (the running transaction is dropped), every
/// later request fails with `EIO`, and the journal recovers to exactly the
/// last fsync's file.
#[test]
fn freeze_and_shutdown() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    let dir = Scratch::new("iomap-freeze");
    let mut rng = Rng::new(7);
    let mut want = vec![0u8; 100_000];
    rng.fill(&mut want);
    let img = image(dir.path(), "ext4", 4096, "32M", &want);
    let mut m = Model::start_rw(&img, Config::default());
    let mut f = m.open_rw("f");
    let mut d = vec![0u8; 150_000];
    rng.fill(&mut d);
    m.buffered_write(&mut f, 60_000, &d, None).unwrap();
    put(&mut want, 60_000, &d);
    m.writeback(&mut f, 0, u64::MAX).unwrap();

    assert_eq!(m.call(opcode::FREEZE_FS, 0, &[0u8; 8]).0, 0);
    let frozen = std::fs::read(&img).unwrap();
    // As the kernel's ext4 freezes: the image as it stands is clean, with
    // no journal to recover (e2fsck -n would report one).
    {
        let copy = img.with_extension("frozen");
        std::fs::write(&copy, &frozen).unwrap();
        let (code, out) = e2fsck_check(&copy);
        assert_eq!(code, 0, "frozen image: e2fsck -fn exited {code}:\n{out}");
        let dump = std::process::Command::new("dumpe2fs")
            .arg("-h")
            .arg(&copy)
            .output()
            .unwrap();
        let dump = String::from_utf8_lossy(&dump.stdout);
        assert!(
            !dump.contains("needs_recovery"),
            "frozen image still needs recovery"
        );
        std::fs::remove_file(&copy).unwrap();
    }
    let (got, held) = recovered(&img, "frozen");
    if let Some(d) = differ(&got, &want) {
        panic!("the image frozen lacks what was written back: {d}");
    }
    assert!(!held);
    // A change waits for the thaw; lookups are served meanwhile.
    let mut body = ext4_fuse::abi::MkdirIn {
        mode: 0o755,
        umask: 0,
    }
    .as_bytes()
    .to_vec();
    body.extend_from_slice(b"held\0");
    let mkdir = m.request(opcode::MKDIR, ext4_fuse::abi::ROOT_ID, &body);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(m.lookup_path("held").err(), Some(libc::ENOENT));
    assert!(
        std::fs::read(&img).unwrap() == frozen,
        "written while frozen"
    );
    let thaw = m.request(opcode::UNFREEZE_FS, 0, &[]);
    let (first, (err, _)) = m.reply_to(&[mkdir, thaw]);
    assert_eq!(err, 0);
    let other = if first == mkdir { thaw } else { mkdir };
    assert_eq!(m.reply(other).0, 0);
    assert!(m.lookup_path("held").is_ok());
    // A freeze waits for a change under way to end.
    let fs = m.session.backend();
    fs.begin_change();
    let froze = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|t| {
        let waiter = t.spawn(|| {
            let r = fs.freeze();
            froze.store(true, std::sync::atomic::Ordering::Release);
            r
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(
            !froze.load(std::sync::atomic::Ordering::Acquire),
            "frozen with a change under way"
        );
        fs.end_change();
        waiter.join().unwrap().unwrap();
    });
    fs.thaw();

    // Journaled again after the thaw (needs_recovery set before the
    // journal is used): an append fsynced now is replayed below.
    let end = f.size;
    let mut d = vec![0u8; 50_000];
    rng.fill(&mut d);
    m.buffered_write(&mut f, end, &d, None).unwrap();
    m.writeback(&mut f, 0, u64::MAX).unwrap();
    put(&mut want, end, &d);

    // Shutdown: the last fsync's file survives, nothing after it.
    m.fsync(&mut f).unwrap();
    let synced = want.clone();
    let end = f.size;
    let mut d = vec![0u8; 80_000];
    rng.fill(&mut d);
    m.buffered_write(&mut f, end, &d, None).unwrap();
    m.writeback(&mut f, 0, u64::MAX).unwrap();
    assert_eq!(m.call(opcode::SHUTDOWN_FS, 0, &[0u8; 8]).0, 0);
    assert_eq!(
        m.call(opcode::MKDIR, ext4_fuse::abi::ROOT_ID, &body).0,
        libc::EIO
    );
    assert_eq!(m.fsync(&mut f).err(), Some(libc::EIO));
    assert!(m.session.backend().close().is_err(), "closed as if clean");
    m.assert_clean("freeze and shutdown");
    m.finish();
    let (got, _) = recovered(&img, "shut down");
    if let Some(d) = differ(&got, &synced) {
        panic!("after shutdown and recovery /f is not the last fsync's: {d}");
    }
}

/// Atomic writes offered (`Session::allow_atomic_writes`): an
/// extent-mapped file carries `FUSE_ATTR_ATOMIC`; an atomic
/// `IOMAP_BEGIN` of one aligned block is answered with one mapping
/// covering the whole block (`MAPPED` over written data, `UNWRITTEN|NEW`
/// over a hole); anything larger or unaligned is refused; an
/// indirect-mapped file is never atomic. The image stays `e2fsck -fn`
/// clean and the kernel's ext4 reads the model's bytes.
#[test]
fn atomic_single_block_writes() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    use ext4_fuse::abi::attr_flags;
    let atomic = op::WRITE | op::DIRECT | op::ATOMIC;
    let dir = Scratch::new("iomap-atomic");
    let mut rng = Rng::new(11);
    let mut want = vec![0u8; 64 << 10];
    rng.fill(&mut want);
    let img = image(dir.path(), "ext4", 4096, "16M", &want);
    let mut m = Model::start_rw(&img, Config::default());
    m.session.allow_atomic_writes();
    m.atomic = true;
    let mut f = m.open_rw("f");
    assert_ne!(
        f.node.attr.flags & attr_flags::ATOMIC,
        0,
        "no FUSE_ATTR_ATOMIC"
    );
    let covers = |mp: &ext4_engine::mapping_cache::Mapping, pos: u64| {
        mp.offset <= pos && pos + 4096 <= mp.offset + mp.length
    };
    let (read, _) = m.begin(&f.node, 4096, 4096, atomic).unwrap();
    assert_eq!(read.kind, MapType::Mapped);
    assert!(covers(&read, 4096), "{read:?}");
    let mode = falloc::PUNCH_HOLE | falloc::KEEP_SIZE;
    m.fallocate(&mut f, mode, 12288, 4096).unwrap();
    want[12288..16384].fill(0);
    let (read, _) = m.begin(&f.node, 12288, 4096, atomic).unwrap();
    assert_eq!(read.kind, MapType::Unwritten, "{read:?}");
    assert!(covers(&read, 12288), "{read:?}");
    let mut d = vec![0u8; 4096];
    rng.fill(&mut d);
    m.direct_write(&mut f, 12288, &d).unwrap();
    put(&mut want, 12288, &d);
    for (pos, count) in [(0, 8192), (100, 4096), (4096, 2048)] {
        assert_eq!(
            m.begin(&f.node, pos, count, atomic).err(),
            Some(libc::EINVAL),
            "atomic {pos}+{count}"
        );
    }
    m.fsync(&mut f).unwrap();
    unmount_and_check(m, &img, &want, "atomic");

    // Block-mapped (ext3): no atomic writes.
    let img = image(dir.path(), "ext3", 4096, "16M", &want);
    let mut m = Model::start_rw(&img, Config::default());
    m.session.allow_atomic_writes();
    m.atomic = true;
    let f = m.open_rw("f");
    assert_eq!(f.node.attr.flags & attr_flags::ATOMIC, 0);
    assert_eq!(
        m.begin(&f.node, 4096, 4096, atomic).err(),
        Some(libc::EINVAL)
    );
    m.assert_clean("atomic ext3");
    m.finish();
}

/// Inline-data files through the model: a write to a file whose bytes
/// live in its inode is answered `INLINE` and the bytes go to the server
/// as `FUSE_WRITE` by node id (no file handle); reads come back through
/// `FUSE_READ`; a write past what the inode holds moves the file out to a
/// block (then `MAPPED`/`UNWRITTEN` answers and the kernel's own I/O),
/// its earlier bytes kept. `e2fsck -fn` and the kernel's ext4 read the
/// model's bytes.
#[test]
fn inline_data_writes() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    let dir = Scratch::new("iomap-inline");
    let mut want = b"small inline file\n".to_vec();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), &want).unwrap();
    let img = dir.path().join("inline.img");
    mke2fs(
        &img,
        &["-t", "ext4", "-b", "4096", "-I", "256", "-O", "inline_data"],
        Some(&src),
        "16M",
    );
    let mut m = Model::start_rw(&img, Config::default());
    let mut f = m.open_rw("f");
    let (read, _) = m.begin(&f.node, 0, 8, op::WRITE).unwrap();
    assert_eq!(read.kind, MapType::Inline, "{read:?}");
    // Inside the inode.
    let d = b"-- and more --";
    let r = m.buffered_write(&mut f, 6, d, None);
    assert_eq!(r, Ok(d.len() as u64), "violations {:?}", m.violations);
    put(&mut want, 6, d);
    let end = f.size;
    m.buffered_write(&mut f, end, b"tail", None).unwrap();
    put(&mut want, end, b"tail");
    assert_eq!(m.wc.inline_writes, 2);
    let got = m.read_file(&f, 0, f.size).unwrap();
    if let Some(d) = differ(&got, &want) {
        panic!("inline read back: {d}");
    }
    assert!(m.counters.inline_reads > 0);
    // Past what the inode holds: out to a block, the kernel writing.
    let mut big = vec![0u8; 10_000];
    Rng::new(5).fill(&mut big);
    m.buffered_write(&mut f, 100, &big, None).unwrap();
    put(&mut want, 100, &big);
    assert_eq!(m.wc.inline_writes, 2, "a block-sized write went inline");
    m.fsync(&mut f).unwrap();
    let got = m.read_file(&f, 0, f.size).unwrap();
    if let Some(d) = differ(&got, &want) {
        panic!("after leaving the inode: {d}");
    }
    unmount_and_check(m, &img, &want, "inline");
}

/// Unmount the model (no violations), then `e2fsck -fn` must be clean and
/// the kernel's ext4 must read `want` as `/f`.
fn unmount_and_check(mut m: Model, img: &Path, want: &[u8], what: &str) {
    m.unmount();
    m.assert_clean(what);
    m.finish();
    let (code, out) = e2fsck_check(img);
    assert_eq!(code, 0, "{what}: e2fsck -fn exited {code}:\n{out}");
    if let Some(d) = differ(&kernel_bytes(img), want) {
        panic!("{what}: the kernel's ext4 reads /f differently: {d}");
    }
}
