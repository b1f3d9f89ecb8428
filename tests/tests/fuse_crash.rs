//! kill -9 of a FUSE server while a tree is being unpacked into its
//! mount, with fsyncs at random points: every file whose `fsync`
//! returned must be intact (its size and bytes) after the journal is
//! replayed, by the kernel's ext4 (a loop mount of a copy of the crashed
//! image) and by the same server's next mount, and `e2fsck -fn` must pass
//! after each. Both servers, a few rounds each here;
//! `scripts/soak-fuse-crash.sh` runs many, with a random seed.
//!
//! `EXT4_FUSE_CRASH_ROUNDS` (default 2) and `EXT4_FUSE_CRASH_SEED` set the
//! rounds per server and the first seed.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ext4_tests::fuse::{is_mounted, FuseServer};
use ext4_tests::oracle::{e2fsck_check, mke2fs, KernelMount, Scratch};
use ext4_tests::rng::{segment_bytes, Rng};
use ext4_tests::util::{built_binary, require_e2fsprogs, require_fuse, require_kernel_ext4};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A file whose `fsync` returned: where, and what it holds (regenerated
/// from `seed`).
#[derive(Clone, Debug)]
struct Synced {
    path: String,
    seed: u64,
    len: usize,
}

fn contents(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    segment_bytes(seed, 0, &mut v);
    v
}

/// Unpack a made-up tree into `root` as tar would (directories, then
/// files written front to back in 64 KiB pieces and closed), fsyncing a
/// quarter of the files and now and then a directory, until a write
/// fails (the server is gone) or `stop`. What was fsynced goes to
/// `synced` once its `fsync` returned.
fn untar(root: &Path, seed: u64, stop: &AtomicBool, synced: &Mutex<Vec<Synced>>) {
    let mut rng = Rng::new(seed);
    let mut dirs = vec![String::new()];
    for i in 0u64.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if rng.chance(1, 8) {
            let parent = rng.pick(&dirs).clone();
            let d = format!("{parent}d{i}/");
            if fs::create_dir(root.join(&d)).is_err() {
                return;
            }
            dirs.push(d);
            continue;
        }
        let dir = rng.pick(&dirs).clone();
        let path = format!("{dir}f{i}");
        // Mostly small files, some of a few hundred KiB, a few of MiBs.
        let len = match rng.below(20) {
            0 => rng.below(3 << 20),
            1..=4 => rng.below(400_000),
            _ => rng.below(20_000),
        } as usize;
        let fseed = seed.wrapping_mul(1_000_003).wrapping_add(i);
        let data = contents(fseed, len);
        let Ok(mut f) = File::create(root.join(&path)) else {
            return;
        };
        for piece in data.chunks(64 << 10) {
            if f.write_all(piece).is_err() {
                return;
            }
        }
        if rng.chance(1, 4) {
            if f.sync_all().is_err() {
                return;
            }
            synced.lock().unwrap().push(Synced {
                path,
                seed: fseed,
                len,
            });
        }
        drop(f);
        if rng.chance(1, 20) {
            let d = root.join(rng.pick(&dirs));
            if File::open(d).and_then(|d| d.sync_all()).is_err() {
                return;
            }
        }
    }
}

/// The fsynced files that are not intact under `root`, described.
fn damaged(root: &Path, synced: &[Synced]) -> Vec<String> {
    let mut bad = Vec::new();
    for s in synced {
        let mut got = Vec::new();
        match File::open(root.join(&s.path)).and_then(|mut f| f.read_to_end(&mut got)) {
            Err(e) => bad.push(format!("{}: {e}", s.path)),
            Ok(_) if got.len() != s.len => bad.push(format!(
                "{}: {} bytes, fsynced {}",
                s.path,
                got.len(),
                s.len
            )),
            Ok(_) if got != contents(s.seed, s.len) => {
                bad.push(format!("{}: other bytes than fsynced", s.path))
            }
            Ok(_) => {}
        }
    }
    bad
}

/// One round: unpack into a fresh image through `bin`, kill -9 the server
/// at a random moment after the first fsyncs, then check the crashed
/// image as replayed by the kernel and by the server. `Err` says what
/// went wrong.
fn round(bin: &Path, dir: &Path, seed: u64) -> Result<usize, String> {
    let img = dir.join("crash.img");
    let _ = fs::remove_file(&img);
    mke2fs(&img, &["-t", "ext4", "-b", "4096"], None, "256M");
    let mut s = FuseServer::mount_rw(bin, &img, "")?;
    let root = s.path().to_path_buf();
    let pid = s.pid().ok_or("no server pid")?;
    let stop = AtomicBool::new(false);
    let synced = Mutex::new(Vec::new());
    let mut rng = Rng::new(seed ^ 0xdead);
    std::thread::scope(|sc| {
        let w = sc.spawn(|| untar(&root, seed, &stop, &synced));
        // Some fsyncs first (or a while), then a random moment.
        let t = Instant::now();
        while synced.lock().unwrap().len() < 3 && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(rng.below(1500)));
        // SAFETY: plain syscall on our own child.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        stop.store(true, Ordering::Relaxed);
        w.join().unwrap();
    });
    s.wait_exit();
    // The dead mount: its watcher unmounts it; whatever is left, the drop
    // detaches (umount -l).
    drop(s);
    if is_mounted(&root) {
        return Err(format!("{} still mounted", root.display()));
    }
    let synced = synced.into_inner().unwrap();
    if synced.is_empty() {
        return Err("no fsync returned before the kill".into());
    }

    // The kernel replays a copy.
    let kimg = dir.join("kernel.img");
    fs::copy(&img, &kimg).map_err(|e| e.to_string())?;
    let k = KernelMount::mount(&kimg, false, "").map_err(|e| e.to_string())?;
    let bad = damaged(k.path(), &synced);
    k.unmount().map_err(|e| e.to_string())?;
    if !bad.is_empty() {
        return Err(format!("after the kernel's replay: {bad:?}"));
    }
    let (code, out) = e2fsck_check(&kimg);
    if code != 0 {
        return Err(format!("e2fsck -fn after the kernel's replay:\n{out}"));
    }
    let _ = fs::remove_file(&kimg);

    // The server replays the image itself.
    let s = FuseServer::mount_rw(bin, &img, "")?;
    let bad = damaged(s.path(), &synced);
    let (st, err) = s.unmount()?;
    if !bad.is_empty() {
        return Err(format!("after the server's replay: {bad:?}"));
    }
    if !st.success() {
        return Err(format!("the remounted server: {st} {err}"));
    }
    let (code, out) = e2fsck_check(&img);
    if code != 0 {
        return Err(format!("e2fsck -fn after the server's replay:\n{out}"));
    }
    Ok(synced.len())
}

#[test]
fn kill_9_during_untar_loses_nothing_fsynced() {
    if !(require_e2fsprogs() && require_kernel_ext4() && require_fuse()) {
        return;
    }
    let rounds = env_u64("EXT4_FUSE_CRASH_ROUNDS", 2);
    let first = env_u64("EXT4_FUSE_CRASH_SEED", 1);
    let servers: [(&str, PathBuf); 2] = [
        ("ext4-fuse", built_binary("ext4-fuse", "ext4-fuse")),
        (
            "ext4-fuse-bsd",
            built_binary("ext4-fuse-bsd", "ext4-fuse-bsd"),
        ),
    ];
    // Both servers at once, each its own rounds.
    std::thread::scope(|sc| {
        let handles: Vec<_> = servers
            .iter()
            .map(|(name, bin)| {
                sc.spawn(move || {
                    let dir = Scratch::new(&format!("fuse-crash-{name}"));
                    for seed in first..first + rounds {
                        match round(bin, dir.path(), seed) {
                            Ok(n) => eprintln!("{name}: seed {seed}: {n} fsynced files intact"),
                            Err(e) => panic!("{name}: seed {seed}: {e}"),
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
}
