//! Many clients at once in one tree of each FUSE server, for a bounded
//! time: writers creating, overwriting, appending, truncating, renaming
//! (across shared directories, over their own files) and deleting files,
//! making and removing directories, each checking its own files as it
//! reads them back, while listers walk the shared directories. Then
//! unmount: `e2fsck -fn` must pass and the kernel's ext4, mounting the
//! image, must read exactly the tree the clients believe they made
//! (names, sizes, bytes, and nothing else).
//!
//! `EXT4_FUSE_CONC_SECS` (default 12) sets how long the clients run;
//! `scripts/soak-fuse-concurrency.sh` runs them for minutes.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ext4_tests::fuse::FuseServer;
use ext4_tests::oracle::{e2fsck_check, mke2fs, KernelMount, Scratch};
use ext4_tests::rng::Rng;
use ext4_tests::util::{built_binary, require_e2fsprogs, require_fuse, require_kernel_ext4};

const WRITERS: u64 = 4;
const LISTERS: u64 = 1;
/// Directories every writer works in.
const SHARED: [&str; 3] = ["a", "b", "c/deep"];

/// What one writer believes it made: file path (relative to the mount)
/// to contents, and its own directories.
#[derive(Default)]
struct Model {
    files: BTreeMap<String, Vec<u8>>,
    dirs: Vec<String>,
}

fn bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    v
}

/// A size: mostly small, sometimes past a few blocks, rarely big.
fn size(rng: &mut Rng) -> usize {
    match rng.below(10) {
        0 => rng.below(600_000) as usize,
        1..=3 => rng.below(40_000) as usize,
        _ => rng.below(5_000) as usize,
    }
}

/// One writer: random operations on its own names in the shared
/// directories until `stop`, checking every read against its model.
fn writer(root: &Path, id: u64, stop: &AtomicBool, ops: &AtomicU64) -> Result<Model, String> {
    let mut rng = Rng::new(0xc0c0 + id);
    let mut m = Model::default();
    let p = |rel: &str| root.join(rel);
    let err = |what: &str, rel: &str, e: std::io::Error| format!("writer {id}: {what} {rel}: {e}");
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        ops.fetch_add(1, Ordering::Relaxed);
        let names: Vec<String> = m.files.keys().cloned().collect();
        let mut dirs: Vec<String> = SHARED.iter().map(|s| s.to_string()).collect();
        dirs.extend(m.dirs.iter().cloned());
        let new_name = |rng: &mut Rng| format!("{}/w{id}-{n}-{}", rng.pick(&dirs), rng.below(4));
        match rng.below(100) {
            // Create (or replace) a file.
            0..=24 => {
                let rel = new_name(&mut rng);
                let len = size(&mut rng);
                let data = bytes(&mut rng, len);
                let mut f = File::create(p(&rel)).map_err(|e| err("create", &rel, e))?;
                f.write_all(&data).map_err(|e| err("write", &rel, e))?;
                if rng.chance(1, 10) {
                    f.sync_all().map_err(|e| err("fsync", &rel, e))?;
                }
                m.files.insert(rel, data);
            }
            // Overwrite inside or past the end.
            25..=39 if !names.is_empty() => {
                let rel = rng.pick(&names).clone();
                let cur = m.files.get_mut(&rel).unwrap();
                let at = rng.below(cur.len() as u64 + 10_000) as usize;
                let len = size(&mut rng).min(100_000);
                let data = bytes(&mut rng, len);
                let f = OpenOptions::new()
                    .write(true)
                    .open(p(&rel))
                    .map_err(|e| err("open", &rel, e))?;
                f.write_all_at(&data, at as u64)
                    .map_err(|e| err("pwrite", &rel, e))?;
                if cur.len() < at + len {
                    cur.resize(at + len, 0);
                }
                cur[at..at + len].copy_from_slice(&data);
            }
            // Append.
            40..=49 if !names.is_empty() => {
                let rel = rng.pick(&names).clone();
                let len = size(&mut rng).min(50_000);
                let data = bytes(&mut rng, len);
                let mut f = OpenOptions::new()
                    .append(true)
                    .open(p(&rel))
                    .map_err(|e| err("open", &rel, e))?;
                f.write_all(&data).map_err(|e| err("append", &rel, e))?;
                m.files.get_mut(&rel).unwrap().extend_from_slice(&data);
            }
            // Truncate, shorter or longer.
            50..=56 if !names.is_empty() => {
                let rel = rng.pick(&names).clone();
                let cur = m.files.get_mut(&rel).unwrap();
                let len = rng.below(cur.len() as u64 * 2 + 8192) as usize;
                let f = OpenOptions::new()
                    .write(true)
                    .open(p(&rel))
                    .map_err(|e| err("open", &rel, e))?;
                f.set_len(len as u64)
                    .map_err(|e| err("truncate", &rel, e))?;
                cur.resize(len, 0);
            }
            // Rename to a new name, or over one of its own files.
            57..=69 if !names.is_empty() => {
                let from = rng.pick(&names).clone();
                let to = if rng.chance(1, 3) {
                    rng.pick(&names).clone()
                } else {
                    new_name(&mut rng)
                };
                fs::rename(p(&from), p(&to)).map_err(|e| err("rename", &from, e))?;
                let data = m.files.remove(&from).unwrap();
                m.files.insert(to, data);
            }
            // Delete.
            70..=79 if !names.is_empty() => {
                let rel = rng.pick(&names).clone();
                fs::remove_file(p(&rel)).map_err(|e| err("unlink", &rel, e))?;
                m.files.remove(&rel);
            }
            // Read back and check.
            80..=92 if !names.is_empty() => {
                let rel = rng.pick(&names).clone();
                let mut got = Vec::new();
                File::open(p(&rel))
                    .and_then(|mut f| f.read_to_end(&mut got))
                    .map_err(|e| err("read", &rel, e))?;
                let want = &m.files[&rel];
                if &got != want {
                    return Err(format!(
                        "writer {id}: {rel} reads {} bytes, not the {} it holds (first difference at {:?})",
                        got.len(),
                        want.len(),
                        got.iter().zip(want.iter()).position(|(a, b)| a != b)
                    ));
                }
            }
            // A directory of its own in a shared one, or one removed.
            93..=96 => {
                let d = format!("{}/dir-w{id}-{n}", rng.pick(&SHARED));
                fs::create_dir(p(&d)).map_err(|e| err("mkdir", &d, e))?;
                m.dirs.push(d);
            }
            97..=99 if !m.dirs.is_empty() => {
                let i = rng.index(m.dirs.len());
                let d = m.dirs[i].clone();
                let inside: Vec<String> = m
                    .files
                    .keys()
                    .filter(|f| f.starts_with(&format!("{d}/")))
                    .cloned()
                    .collect();
                for f in &inside {
                    fs::remove_file(p(f)).map_err(|e| err("unlink", f, e))?;
                    m.files.remove(f);
                }
                fs::remove_dir(p(&d)).map_err(|e| err("rmdir", &d, e))?;
                m.dirs.remove(i);
            }
            _ => {}
        }
    }
    Ok(m)
}

/// A lister: walks the shared directories and stats what it finds until
/// `stop`; names may vanish under it (ENOENT), nothing else may fail.
fn lister(root: &Path, stop: &AtomicBool) -> Result<u64, String> {
    let mut walks = 0;
    while !stop.load(Ordering::Relaxed) {
        for d in SHARED {
            let rd = match fs::read_dir(root.join(d)) {
                Ok(rd) => rd,
                Err(e) => return Err(format!("lister: readdir {d}: {e}")),
            };
            for e in rd {
                let e = e.map_err(|e| format!("lister: readdir {d}: {e}"))?;
                match fs::symlink_metadata(e.path()) {
                    Ok(_) => {}
                    Err(x) if x.kind() == std::io::ErrorKind::NotFound => {}
                    Err(x) => return Err(format!("lister: stat {}: {x}", e.path().display())),
                }
            }
        }
        walks += 1;
    }
    Ok(walks)
}

/// Every file under `root` (relative path to contents) and every
/// directory, as whoever serves `root` shows them.
fn tree(root: &Path) -> (BTreeMap<String, Vec<u8>>, Vec<String>) {
    fn walk(root: &Path, rel: &str, files: &mut BTreeMap<String, Vec<u8>>, dirs: &mut Vec<String>) {
        for e in fs::read_dir(root.join(rel)).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let r = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if e.file_type().unwrap().is_dir() {
                dirs.push(r.clone());
                walk(root, &r, files, dirs);
            } else {
                files.insert(r.clone(), fs::read(root.join(&r)).unwrap());
            }
        }
    }
    let (mut files, mut dirs) = (BTreeMap::new(), Vec::new());
    walk(root, "", &mut files, &mut dirs);
    dirs.sort();
    (files, dirs)
}

/// The clients on a fresh image served by `bin` for `secs`; then the
/// checks. `Err` says what went wrong.
fn run(bin: &Path, dir: &Path, secs: u64) -> Result<String, String> {
    let img = dir.join("conc.img");
    mke2fs(&img, &["-t", "ext4", "-b", "4096"], None, "512M");
    let s = FuseServer::mount_rw(bin, &img, "")?;
    let root = s.path().to_path_buf();
    for d in SHARED {
        fs::create_dir_all(root.join(d)).map_err(|e| e.to_string())?;
    }
    let stop = AtomicBool::new(false);
    let ops = AtomicU64::new(0);
    let t = Instant::now();
    let (models, walks) = std::thread::scope(|sc| {
        let (root, stop, ops) = (&root, &stop, &ops);
        let ws: Vec<_> = (0..WRITERS)
            .map(|id| sc.spawn(move || writer(root, id, stop, ops)))
            .collect();
        let ls: Vec<_> = (0..LISTERS)
            .map(|_| sc.spawn(move || lister(root, stop)))
            .collect();
        // Stop everyone at the deadline, or as soon as one client failed.
        while t.elapsed() < Duration::from_secs(secs)
            && !ws.iter().any(|h| h.is_finished())
            && !ls.iter().any(|h| h.is_finished())
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        stop.store(true, Ordering::Relaxed);
        let models: Vec<Result<Model, String>> =
            ws.into_iter().map(|h| h.join().unwrap()).collect();
        let walks: Vec<Result<u64, String>> = ls.into_iter().map(|h| h.join().unwrap()).collect();
        (models, walks)
    });
    let (st, err) = s.unmount()?;
    let mut models_ok = Vec::new();
    for m in models {
        models_ok.push(m?);
    }
    let mut walked = 0;
    for w in walks {
        walked += w?;
    }
    if !st.success() {
        return Err(format!("server: {st} {err}"));
    }
    let (code, out) = e2fsck_check(&img);
    if code != 0 {
        return Err(format!("e2fsck -fn:\n{out}"));
    }
    // What the clients believe: their files and directories, and the
    // shared directories (with their parents).
    let mut want_files = BTreeMap::new();
    let mut want_dirs: Vec<String> = vec!["a".into(), "b".into(), "c".into(), "c/deep".into()];
    want_dirs.push("lost+found".into());
    for m in models_ok {
        want_files.extend(m.files);
        want_dirs.extend(m.dirs);
    }
    want_dirs.sort();
    let k = KernelMount::ro(&img).map_err(|e| e.to_string())?;
    let (files, dirs) = tree(k.path());
    k.unmount().map_err(|e| e.to_string())?;
    if dirs != want_dirs {
        return Err(format!(
            "directories: the kernel reads {dirs:?}, the clients made {want_dirs:?}"
        ));
    }
    let extra: Vec<&String> = files
        .keys()
        .filter(|f| !want_files.contains_key(*f))
        .collect();
    let missing: Vec<&String> = want_files
        .keys()
        .filter(|f| !files.contains_key(*f))
        .collect();
    let differ: Vec<String> = want_files
        .iter()
        .filter_map(|(f, w)| {
            let g = files.get(f)?;
            (g != w).then(|| format!("{f} ({} bytes, believed {})", g.len(), w.len()))
        })
        .collect();
    if !(extra.is_empty() && missing.is_empty() && differ.is_empty()) {
        return Err(format!(
            "the kernel reads another tree: extra {extra:?}, missing {missing:?}, different {differ:?}"
        ));
    }
    Ok(format!(
        "{} operations in {:.1?}, {walked} listings, {} files and {} directories at the end",
        ops.load(Ordering::Relaxed),
        t.elapsed(),
        files.len(),
        dirs.len()
    ))
}

#[test]
fn clients_in_parallel_make_the_tree_they_believe() {
    if !(require_e2fsprogs() && require_kernel_ext4() && require_fuse()) {
        return;
    }
    let secs = std::env::var("EXT4_FUSE_CONC_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let servers: [(&str, PathBuf); 2] = [
        ("ext4-fuse", built_binary("ext4-fuse", "ext4-fuse")),
        (
            "ext4-fuse-bsd",
            built_binary("ext4-fuse-bsd", "ext4-fuse-bsd"),
        ),
    ];
    let results: Vec<(&str, Result<String, String>)> = std::thread::scope(|sc| {
        let hs: Vec<_> = servers
            .iter()
            .map(|(name, bin)| {
                sc.spawn(move || {
                    let dir = Scratch::new(&format!("fuse-conc-{name}"));
                    (*name, run(bin, dir.path(), secs))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut failed = Vec::new();
    for (name, r) in results {
        match r {
            Ok(s) => eprintln!("{name}: {s}"),
            Err(e) => failed.push(format!("{name}: {e}")),
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
