//! The write path beside the kernel's ext4, same work, same run: creating
//! 100,000 empty files in one new directory (a hash tree on both sides once
//! it outgrows its first block), writing a 1 GiB file in 1 MiB pieces, and
//! deleting both (the files and the directory; the big file) — each phase
//! ending with everything durable (our commit; the kernel's `syncfs`).
//! Ours runs on an in-memory device; the kernel's on a loop device over an
//! image in tmpfs (root needed; without it only our column is printed).
//! Not criterion: each phase runs once on a fresh image (a second run
//! would measure a different, fuller directory).

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ext4_engine::{Cred, InodeNo, MemDevice, OpenOptions, Volume};

const FILES: usize = 100_000;
const BIG: usize = 1 << 30;
const PIECE: usize = 1 << 20;
const IMAGE: &str = "2G";
const MKFS: &[&str] = &["-F", "-q", "-t", "ext4", "-N", "200000"];

fn run(c: &mut Command) {
    let out = c.output().expect("run a tool");
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn name(i: usize) -> String {
    format!("file-{i:06}")
}

/// An empty image made by mke2fs, as bytes.
fn image_bytes(dir: &Path) -> Vec<u8> {
    let img = dir.join("ours.img");
    run(Command::new("mke2fs").args(MKFS).arg(&img).arg(IMAGE));
    let b = std::fs::read(&img).expect("read image");
    let _ = std::fs::remove_file(&img);
    b
}

fn ours(dir: &Path) -> [Duration; 3] {
    let dev = Arc::new(MemDevice::from_vec(image_bytes(dir)));
    let opts = OpenOptions {
        read_only: false,
        ..OpenOptions::default()
    };
    let vol = Volume::open(dev.clone(), &opts).expect("open read-write");
    let cred = Cred::ROOT;
    let root = InodeNo::ROOT;
    let t = Instant::now();
    let d = vol.mkdir(root, b"d", 0o755, &cred).expect("mkdir").ino;
    for i in 0..FILES {
        vol.create(d, name(i).as_bytes(), 0o644, &cred)
            .expect("create");
    }
    vol.commit().expect("commit");
    let create = t.elapsed();
    let piece = vec![0xa5u8; PIECE];
    let big = vol
        .create(root, b"big", 0o644, &cred)
        .expect("create big")
        .ino;
    let t = Instant::now();
    for k in 0..BIG / PIECE {
        vol.write(big, (k * PIECE) as u64, &piece, &cred)
            .expect("write");
    }
    vol.commit().expect("commit");
    let write = t.elapsed();
    let t = Instant::now();
    for i in 0..FILES {
        vol.unlink(d, name(i).as_bytes()).expect("unlink");
    }
    vol.rmdir(root, b"d").expect("rmdir");
    vol.unlink(root, b"big").expect("unlink big");
    vol.commit().expect("commit");
    let delete = t.elapsed();
    vol.close().expect("close");
    [create, write, delete]
}

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name: utime is the 12th,
    // stime the 13th (in clock ticks, 100 per second on Linux).
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// Two threads creating files in two directories, against one thread
/// doing the same creates: how much the allocator and transaction locks
/// serialise. Returns (wall, CPU seconds) for one thread, then two: CPU
/// that grows with the threads is spinning on a lock; wall that does not
/// shrink while CPU stays flat is a busy machine.
fn parallel(dir: &Path) -> [(Duration, f64); 2] {
    const EACH: usize = 10_000;
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("a")).expect("src");
    std::fs::create_dir_all(src.join("b")).expect("src");
    let img = dir.join("par.img");
    run(Command::new("mke2fs")
        .args(MKFS)
        .arg("-d")
        .arg(&src)
        .arg(&img)
        .arg("1G"));
    let bytes = std::fs::read(&img).expect("read image");
    let _ = std::fs::remove_file(&img);
    let opts = OpenOptions {
        read_only: false,
        ..OpenOptions::default()
    };
    let mut out = [(Duration::ZERO, 0.0); 2];
    for (k, threads) in [1usize, 2].into_iter().enumerate() {
        let vol = Volume::open(Arc::new(MemDevice::from_vec(bytes.clone())), &opts).expect("open");
        let dirs = [
            vol.lookup_ino(InodeNo::ROOT, b"a").expect("a"),
            vol.lookup_ino(InodeNo::ROOT, b"b").expect("b"),
        ];
        let t = Instant::now();
        let c = cpu_seconds();
        std::thread::scope(|s| {
            for w in 0..threads {
                let vol = &vol;
                s.spawn(move || {
                    for d in (0..2).filter(|d| d % threads == w) {
                        for i in 0..EACH {
                            vol.create(dirs[d], name(i).as_bytes(), 0o644, &Cred::ROOT)
                                .expect("create");
                        }
                    }
                });
            }
        });
        vol.commit().expect("commit");
        out[k] = (t.elapsed(), cpu_seconds() - c);
        vol.close().expect("close");
    }
    out
}

fn syncfs(p: &Path) {
    let f = std::fs::File::open(p).expect("open mount");
    // SAFETY: plain syscall on a descriptor we own.
    assert_eq!(unsafe { libc_syncfs(f.as_raw_fd()) }, 0, "syncfs");
}

extern "C" {
    #[link_name = "syncfs"]
    fn libc_syncfs(fd: i32) -> i32;
}

fn kernel(dir: &Path) -> Option<[Duration; 3]> {
    // SAFETY: no preconditions.
    if unsafe { geteuid() } != 0 {
        return None;
    }
    let tmpfs = dir.join("tmpfs");
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&tmpfs).ok()?;
    std::fs::create_dir_all(&mnt).ok()?;
    run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3G", "tmpfs"])
        .arg(&tmpfs));
    let img = tmpfs.join("k.img");
    run(Command::new("mke2fs").args(MKFS).arg(&img).arg(IMAGE));
    let out = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&img)
        .output()
        .ok()?;
    let lo = String::from_utf8_lossy(&out.stdout).trim().to_string();
    run(Command::new("mount")
        .args(["-t", "ext4"])
        .arg(&lo)
        .arg(&mnt));
    let t = Instant::now();
    let d = mnt.join("d");
    std::fs::create_dir(&d).expect("mkdir");
    for i in 0..FILES {
        std::fs::File::create(d.join(name(i))).expect("create");
    }
    syncfs(&mnt);
    let create = t.elapsed();
    let piece = vec![0xa5u8; PIECE];
    let t = Instant::now();
    {
        use std::io::Write;
        let mut f = std::fs::File::create(mnt.join("big")).expect("create big");
        for _ in 0..BIG / PIECE {
            f.write_all(&piece).expect("write");
        }
    }
    syncfs(&mnt);
    let write = t.elapsed();
    let t = Instant::now();
    for i in 0..FILES {
        std::fs::remove_file(d.join(name(i))).expect("unlink");
    }
    std::fs::remove_dir(&d).expect("rmdir");
    std::fs::remove_file(mnt.join("big")).expect("unlink big");
    syncfs(&mnt);
    let delete = t.elapsed();
    run(Command::new("umount").arg(&mnt));
    run(Command::new("losetup").arg("-d").arg(&lo));
    run(Command::new("umount").arg(&tmpfs));
    Some([create, write, delete])
}

extern "C" {
    fn geteuid() -> u32;
}

fn main() {
    // `cargo bench` passes --bench; a filter that names nothing here skips.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if !args.is_empty() && !args.iter().any(|a| "writes".contains(a.as_str())) {
        return;
    }
    let dir: PathBuf =
        std::env::temp_dir().join(format!("ext4-bench-writes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    // WRITES_ONLY=engine: our three phases only, no kernel (for profiling).
    if std::env::var("WRITES_ONLY").is_ok_and(|v| v == "engine") {
        let o = ours(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        println!(
            "engine: create {:.3}s, write {:.3}s, delete {:.3}s",
            o[0].as_secs_f64(),
            o[1].as_secs_f64(),
            o[2].as_secs_f64()
        );
        return;
    }
    let [one, two] = parallel(&dir);
    println!(
        "\nengine: 2 x 10,000 creates in two directories: one thread {:.3}s ({:.2} CPU-s), two threads {:.3}s ({:.2} CPU-s): {:.2}x",
        one.0.as_secs_f64(),
        one.1,
        two.0.as_secs_f64(),
        two.1,
        one.0.as_secs_f64() / two.0.as_secs_f64()
    );
    // WRITES_ONLY=parallel: just that (for profiling the locks).
    if std::env::var("WRITES_ONLY").is_ok_and(|v| v == "parallel") {
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let o = ours(&dir);
    let k = kernel(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    println!("\nwrites: engine (MemDevice) vs kernel ext4 (loop on tmpfs), same run");
    println!(
        "{:<44} {:>12} {:>12} {:>8}",
        "phase", "engine", "kernel", "ratio"
    );
    let names = [
        "create 100,000 files in one directory",
        "write 1 GiB in 1 MiB pieces",
        "delete them all",
    ];
    for (i, n) in names.iter().enumerate() {
        let e = o[i].as_secs_f64();
        match k {
            Some(k) => {
                let kk = k[i].as_secs_f64();
                println!("{n:<44} {e:>11.3}s {kk:>11.3}s {:>7.2}x", e / kk);
            }
            None => println!("{n:<44} {e:>11.3}s {:>12} {:>8}", "(not root)", "-"),
        }
    }
}
