//! Memory of a big build: `ext4-image mkfs --from-tar -` of a generated
//! 2 GiB tree (big files, a 128 MiB one, 10,000 small ones in 40
//! directories) with `--cache-size 64m` must stay within the engine's
//! budgets fixed at open (block cache 64 MiB, mapping cache 32 MiB, inode
//! cache, name indexes, journal buffer) plus a fixed allowance for the
//! program: the peak RSS (the kernel's `ru_maxrss` of the child). A build
//! of the same shape 16 times smaller is measured beside it, and the
//! numbers printed. The image passes `e2fsck -fn`.

mod common;

use std::io::{self, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::{cmd, scratch};
use ext4_tests::util::{built_binary, require_e2fsprogs};

const MIB: u64 = 1 << 20;
/// What the engine may hold with `--cache-size 64m`: block cache, mapping
/// cache (half), inode cache, name indexes and journal log buffer at
/// their defaults (engine `OpenOptions`).
const BUDGET: u64 = (64 + 32 + 4 + 8 + 8) * MIB;
/// The program besides the engine's caches: code, the allocator's slack,
/// the 1 MiB copy and read buffers, the tar reader.
const ALLOWANCE: u64 = 48 * MIB;

/// File contents: a fixed pseudo-random pattern (not zeros, which a
/// writer could treat as holes), `left` bytes of it.
struct Pattern {
    left: u64,
    pos: usize,
    buf: &'static [u8],
}

impl Read for Pattern {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = (out.len() as u64).min(self.left) as usize;
        for b in out[..n].iter_mut() {
            *b = self.buf[self.pos];
            self.pos = (self.pos + 1) % self.buf.len();
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn pattern() -> &'static [u8] {
    static P: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..(1 << 20) + 7)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    })
}

/// Write the tree, `1/scale` of the full size, as a tar stream; its
/// bytes of file data.
fn tree(out: impl Write, scale: u64) -> io::Result<u64> {
    let mut b = tar::Builder::new(out);
    let mut total = 0;
    let mut file = |b: &mut tar::Builder<_>, name: &str, len: u64| -> io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_size(len);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        total += len;
        b.append_data(
            &mut h,
            name,
            Pattern {
                left: len,
                pos: len as usize % 4096,
                buf: pattern(),
            },
        )
    };
    file(&mut b, "huge", 128 * MIB / scale)?;
    for i in 0..480 {
        file(&mut b, &format!("big/{:03}/f{i}", i % 16), 4 * MIB / scale)?;
    }
    for d in 0..40 {
        for i in 0..250 / scale.min(16) {
            file(&mut b, &format!("small/d{d}/file-{i:04}"), 4096 + i)?;
        }
    }
    b.finish()?;
    Ok(total)
}

/// Build `img` of `size` from the tree at `1/scale`; the data bytes, the
/// child's peak RSS in bytes and the seconds it took.
// The child is waited for with wait4 (for its rusage), not Child::wait.
#[allow(clippy::zombie_processes)]
fn build(img: &Path, size: &str, scale: u64) -> (u64, u64, f64) {
    let t0 = Instant::now();
    let mut child = Command::new(built_binary("ext4-image", "ext4-image"))
        .arg("mkfs")
        .arg(img)
        .arg(size)
        .args([
            "--cache-size",
            "64m",
            "-q",
            "--timestamp",
            "0",
            "--from-tar",
            "-",
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let written = tree(io::BufWriter::with_capacity(1 << 20, stdin), scale);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, once; std's Child is not waited on.
    let r = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    assert_eq!(
        r,
        child.id() as i32,
        "wait4: {}",
        io::Error::last_os_error()
    );
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "ext4-image mkfs --from-tar: status {status}: {err}"
    );
    let bytes = written.expect("writing the tar stream");
    (
        bytes,
        ru.ru_maxrss as u64 * 1024,
        t0.elapsed().as_secs_f64(),
    )
}

#[test]
fn a_2gib_build_stays_within_its_cache_budget() {
    if !require_e2fsprogs() {
        return;
    }
    let dir = scratch("mkfs-memory");
    let small = dir.join("small.img");
    let (sb, speak, ssecs) = build(&small, "256m", 16);
    let _ = std::fs::remove_file(&small);
    let big = dir.join("big.img");
    let (bb, bpeak, bsecs) = build(&big, "3g", 1);
    let o = cmd("e2fsck").arg("-fn").arg(&big).output().unwrap();
    let _ = std::fs::remove_file(&big);
    eprintln!(
        "mkfs --from-tar --cache-size 64m: {} MiB of data: peak RSS {:.1} MiB ({bsecs:.1} s); \
         {} MiB: {:.1} MiB ({ssecs:.1} s); engine budgets {} MiB + allowance {} MiB",
        bb / MIB,
        bpeak as f64 / MIB as f64,
        sb / MIB,
        speak as f64 / MIB as f64,
        BUDGET / MIB,
        ALLOWANCE / MIB
    );
    assert!(
        o.status.success(),
        "e2fsck -fn of the 2 GiB build: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(bb >= 2 << 30, "the tree holds {bb} bytes, not 2 GiB");
    assert!(
        bpeak <= BUDGET + ALLOWANCE,
        "peak RSS {bpeak} bytes passes the budgets ({BUDGET}) plus the allowance ({ALLOWANCE})"
    );
}
