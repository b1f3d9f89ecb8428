//! The journal against crashes: random operation sequences of the write
//! harness ([`crate::writes`]) with `fsync`s (commits) at random points,
//! run on a [`CrashDevice`], then crashed at every flush boundary and at
//! points between (keeping all, none or a random reordered part of the
//! unflushed writes). Each crash image is recovered three ways — by the
//! engine (a read-write open), by `e2fsck -E journal_only` and by the
//! kernel's mount — and after each the image must pass `e2fsck -fn`, and
//! what it holds must be a state the sequence went through from the last
//! `fsync` that completed before the crash on:
//!
//! - a file fsynced and not touched since is exactly as fsynced;
//! - a file touched since (or created) is, field by field and byte by
//!   byte, what one of its inode's states since holds (under any name): a
//!   byte is a byte some such state has at that offset, or zero past the
//!   end of one (never stale data of a freed block); its size lies
//!   between those states' sizes;
//! - no path appears that no such state has, and every path all of them
//!   have is there (the whole tree: directories, links, symlinks, device
//!   nodes, with their type, owner, mode, link count and mtime).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::collections::BTreeMap;

use ext4_engine::FileType;
use ext4_engine::{BlockDevice, InodeNo, MemDevice};
use ext4_engine::{OpenOptions, Volume};

use crate::crashdev::{CrashDevice, CrashPoint, Keep};
use crate::oracle::{e2fsck_check, tempfile_path, KernelMount};
use crate::rng::Rng;
use crate::tree::Time;
use crate::util::{cache_dir, run};
use crate::writes::{apply, clock, image, rw_options, stored, write_sparse, Model, Op, Profile};

/// A recorded run: the model after each step and where each step ended
/// in the device's record.
pub struct Run {
    pub profile: Profile,
    pub dev: Arc<CrashDevice>,
    /// The model before the first op (after the open), then after each
    /// op; the last entry is after the close when the run closed.
    pub states: Vec<Model>,
    /// Events recorded when each state was reached (`ends[0]`: the open).
    pub ends: Vec<usize>,
    /// Whether each state was made durable by its step (the open, an
    /// `Op::Commit`, the close).
    pub durable: Vec<bool>,
    pub ops: Vec<Op>,
    /// Events of the run (without the close when it crashes instead:
    /// what dropping the volume writes after is not part of it).
    pub limit: usize,
}

/// Run `ops` on a fresh image of `p` on a recording device, closing
/// cleanly at the end when `close`.
pub fn record(p: &Profile, ops: &[Op], close: bool, opts: &OpenOptions) -> Result<Run, String> {
    let dev = Arc::new(CrashDevice::new(image(p)));
    clock::set(0);
    let vol = Volume::open(dev.clone(), opts).map_err(|e| format!("open: {e}"))?;
    let mut m = Model::load(&vol);
    let mut run = Run {
        profile: *p,
        dev: dev.clone(),
        states: vec![m.clone()],
        ends: vec![dev.len()],
        durable: vec![true],
        ops: ops.to_vec(),
        limit: 0,
    };
    for (k, op) in ops.iter().enumerate() {
        apply(&vol, &mut m, op, k as u64 + 1).map_err(|e| format!("step {k} {op:?}: {e}"))?;
        run.states.push(m.clone());
        run.ends.push(dev.len());
        run.durable.push(matches!(op, Op::Commit));
    }
    if close {
        clock::set(ops.len() as u64 + 1);
        vol.close().map_err(|e| format!("close: {e}"))?;
        run.states.push(m.clone());
        run.ends.push(dev.len());
        run.durable.push(true);
    }
    run.limit = dev.len();
    Ok(run)
}

impl Run {
    /// The states a crash after `at` events may leave: from the last one
    /// made durable before it to the one its step in progress reaches.
    pub fn allowed(&self, at: usize) -> &[Model] {
        let from = (0..self.states.len())
            .rev()
            .find(|&i| self.durable[i] && self.ends[i] <= at)
            .unwrap_or(0);
        let to = (0..self.states.len())
            .find(|&i| self.ends[i] >= at)
            .unwrap_or(self.states.len() - 1);
        &self.states[from..=to.max(from)]
    }

    /// Crash points: every flush (keeping none, all, or a random part of
    /// the writes before it, in turn) and `between` random points between
    /// flushes; in increasing order.
    pub fn crash_points(&self, between: usize, seed: u64) -> Vec<CrashPoint> {
        let mut rng = Rng::new(seed);
        let flushes = self.dev.flushes();
        let mut pts = Vec::new();
        for (k, &f) in flushes.iter().filter(|&&f| f < self.limit).enumerate() {
            let keep = match k % 3 {
                0 => Keep::None,
                1 => Keep::All,
                _ => Keep::Some(rng.next_u64()),
            };
            pts.push(CrashPoint { at: f, keep });
        }
        pts.push(CrashPoint {
            at: self.limit,
            keep: Keep::All,
        });
        for _ in 0..between {
            let at = rng.below(self.limit as u64 + 1) as usize;
            pts.push(CrashPoint {
                at,
                keep: Keep::Some(rng.next_u64()),
            });
        }
        pts.sort_by_key(|p| p.at);
        pts.dedup();
        pts
    }
}

/// What a reader of the recovered image shows of one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub ino: InodeNo,
    pub kind: FileType,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u64,
    pub mtime: Time,
    /// A regular file's bytes, a symlink's target.
    pub data: Vec<u8>,
}

/// A reader of a recovered image: the engine or a kernel mount.
pub trait View {
    /// Every path below the root (`/a`, `/a/b`), with what it shows.
    fn walk(&self) -> Result<Vec<(Vec<u8>, Seen)>, String>;
}

/// The engine's read-only view of an image.
pub struct EngineView<D: BlockDevice>(pub Volume<D>);

impl<D: BlockDevice> EngineView<D> {
    pub fn open(dev: D) -> Result<EngineView<D>, String> {
        let vol = Volume::open(dev, &OpenOptions::default()).map_err(|e| format!("open: {e}"))?;
        Ok(EngineView(vol))
    }

    fn seen(&self, ino: InodeNo) -> Result<Seen, String> {
        let v = &self.0;
        let a = v.getattr(ino).map_err(|e| format!("getattr: {e}"))?;
        let data = match a.kind {
            FileType::Regular => {
                let mut d = vec![0u8; a.size as usize];
                let n = v.read(ino, 0, &mut d).map_err(|e| format!("read: {e}"))?;
                d.truncate(n);
                d
            }
            FileType::Symlink => v.readlink(ino).map_err(|e| format!("readlink: {e}"))?,
            _ => Vec::new(),
        };
        Ok(Seen {
            ino,
            kind: a.kind,
            mode: (a.mode & 0o7777) as u16,
            uid: a.uid,
            gid: a.gid,
            nlink: a.nlink as u64,
            mtime: Time {
                sec: a.mtime.sec,
                nsec: a.mtime.nsec,
            },
            data,
        })
    }
}

impl<D: BlockDevice> View for EngineView<D> {
    fn walk(&self) -> Result<Vec<(Vec<u8>, Seen)>, String> {
        let mut out = Vec::new();
        let mut queue = vec![(Vec::new(), InodeNo::ROOT)];
        while let Some((path, dir)) = queue.pop() {
            let mut names = Vec::new();
            self.0
                .readdir(dir, 0, &mut |e| {
                    if e.name != b"." && e.name != b".." {
                        names.push((e.name.to_vec(), e.ino));
                    }
                    true
                })
                .map_err(|e| format!("readdir {}: {e}", String::from_utf8_lossy(&path)))?;
            for (name, ino) in names {
                let mut p = path.clone();
                p.push(b'/');
                p.extend_from_slice(&name);
                let seen = self
                    .seen(ino)
                    .map_err(|e| format!("{}: {e}", String::from_utf8_lossy(&p)))?;
                if seen.kind == FileType::Directory {
                    queue.push((p.clone(), ino));
                }
                out.push((p, seen));
            }
        }
        Ok(out)
    }
}

/// The kernel's view through a mount.
pub struct MountView<'a>(pub &'a Path);

impl View for MountView<'_> {
    fn walk(&self) -> Result<Vec<(Vec<u8>, Seen)>, String> {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::MetadataExt;
        let mut out = Vec::new();
        let mut queue = vec![Vec::<u8>::new()];
        while let Some(rel) = queue.pop() {
            let dir = self.0.join(std::ffi::OsStr::from_bytes(
                rel.strip_prefix(b"/").unwrap_or(&rel),
            ));
            for e in std::fs::read_dir(&dir).map_err(|e| format!("readdir {dir:?}: {e}"))? {
                let e = e.map_err(|e| e.to_string())?;
                let mut p = rel.clone();
                p.push(b'/');
                p.extend_from_slice(e.file_name().as_bytes());
                let host = e.path();
                let md =
                    std::fs::symlink_metadata(&host).map_err(|e| format!("stat {host:?}: {e}"))?;
                let ft = md.file_type();
                let kind = if ft.is_dir() {
                    FileType::Directory
                } else if ft.is_symlink() {
                    FileType::Symlink
                } else if ft.is_file() {
                    FileType::Regular
                } else {
                    FileType::from_mode(md.mode() as u16).unwrap_or(FileType::Fifo)
                };
                let data = match kind {
                    FileType::Regular => {
                        std::fs::read(&host).map_err(|e| format!("read {host:?}: {e}"))?
                    }
                    FileType::Symlink => std::fs::read_link(&host)
                        .map_err(|e| format!("readlink {host:?}: {e}"))?
                        .as_os_str()
                        .as_bytes()
                        .to_vec(),
                    _ => Vec::new(),
                };
                if kind == FileType::Directory {
                    queue.push(p.clone());
                }
                out.push((
                    p,
                    Seen {
                        ino: InodeNo(md.ino() as u32),
                        kind,
                        mode: (md.mode() & 0o7777) as u16,
                        uid: md.uid(),
                        gid: md.gid(),
                        nlink: md.nlink(),
                        mtime: Time {
                            sec: md.mtime(),
                            nsec: md.mtime_nsec() as u32,
                        },
                        data,
                    },
                ));
            }
        }
        Ok(out)
    }
}

/// Whether what `view` shows is allowed by `states` (see the module's
/// doc). `large`: inodes keep nanoseconds and the epoch bits.
pub fn check_view(view: &dyn View, states: &[Model], large: bool) -> Result<(), String> {
    let paths: Vec<BTreeMap<Vec<u8>, InodeNo>> = states.iter().map(|m| m.paths()).collect();
    let seen = view.walk()?;
    for (p, seen) in &seen {
        let shown = String::from_utf8_lossy(p);
        // The path must name the inode it names in some state; what the
        // inode holds is judged against every state of that inode, under
        // whatever name (a rename and a truncate both lost by the crash
        // leave the old name over the truncate's zeroed tail, as the
        // kernel's ordered-mode writeback can).
        let named: Vec<InodeNo> = paths.iter().filter_map(|ps| ps.get(p).copied()).collect();
        if named.is_empty() {
            return Err(format!("{shown}: a path no state since the last fsync has"));
        }
        if !named.contains(&seen.ino) {
            return Err(format!(
                "{shown}: names inode {:?}, which no state since the last fsync has there ({named:?})",
                seen.ino
            ));
        }
        // (inode, node, link count) of the inode in each state that has it.
        let versions: Vec<_> = states
            .iter()
            .filter_map(|m| {
                m.nodes
                    .get(&seen.ino)
                    .map(|n| (seen.ino, n, m.nlink(seen.ino)))
            })
            .collect();
        let bad = |what: &str| {
            Err(format!(
                "{shown}: {what} is none of its states' (seen {:?}, {} bytes; states {:?})",
                (seen.ino, seen.kind, seen.mode, seen.uid, seen.gid, seen.nlink, seen.mtime),
                seen.data.len(),
                versions
                    .iter()
                    .map(|(i, n, l)| (i, n.kind(), n.mode, n.uid, n.gid, l, n.data().len()))
                    .collect::<Vec<_>>()
            ))
        };
        if !versions.iter().any(|v| v.1.kind() == seen.kind) {
            return bad("the type");
        }
        if !versions.iter().any(|v| v.2 == seen.nlink) {
            return bad("the link count");
        }
        if !versions.iter().any(|v| v.1.mode == seen.mode) {
            return bad("the mode");
        }
        if !versions
            .iter()
            .any(|v| (v.1.uid, v.1.gid) == (seen.uid, seen.gid))
        {
            return bad("the owner");
        }
        if !versions
            .iter()
            .any(|v| stored(v.1.mtime, large) == seen.mtime)
        {
            return bad("the mtime");
        }
        let data = |n: &crate::writes::Node| -> Vec<u8> {
            match &n.body {
                crate::writes::Body::File(d) | crate::writes::Body::Symlink(d) => d.clone(),
                _ => Vec::new(),
            }
        };
        let datas: Vec<Vec<u8>> = versions.iter().map(|v| data(v.1)).collect();
        if seen.kind == FileType::Symlink {
            if !datas.contains(&seen.data) {
                return bad("the symlink target");
            }
            continue;
        }
        let lo = datas.iter().map(|d| d.len()).min().unwrap_or(0);
        let hi = datas.iter().map(|d| d.len()).max().unwrap_or(0);
        if seen.data.len() < lo || seen.data.len() > hi {
            return bad("the size");
        }
        for (o, &b) in seen.data.iter().enumerate() {
            let ok = datas.iter().any(|d| match d.get(o) {
                Some(&v) => v == b,
                None => b == 0,
            });
            if !ok {
                return Err(format!(
                    "{shown}: byte {o} is {b:#x}, which no state since the last fsync has \
                     there ({:?})",
                    datas.iter().map(|d| d.get(o).copied()).collect::<Vec<_>>()
                ));
            }
        }
    }
    // Every path all the states have is there.
    if let Some(first) = paths.first() {
        let shown: std::collections::BTreeSet<&Vec<u8>> = seen.iter().map(|(p, _)| p).collect();
        for p in first.keys() {
            if paths.iter().all(|ps| ps.contains_key(p)) && !shown.contains(p) {
                return Err(format!(
                    "{}: in every state since the last fsync, but missing",
                    String::from_utf8_lossy(p)
                ));
            }
        }
    }
    Ok(())
}

/// Which recoveries to run on a crash image.
#[derive(Clone, Copy, Debug)]
pub struct Oracles {
    pub engine: bool,
    pub e2fsck: bool,
    pub kernel: bool,
}

fn fsck_clean(img: &Path, who: &str) -> Result<(), String> {
    let (code, text) = e2fsck_check(img);
    if code != 0 && !(who == "e2fsck" && only_orphan_present(&text)) {
        return Err(format!(
            "e2fsck -fn after {who}'s recovery exited {code}:\n{text}"
        ));
    }
    Ok(())
}

/// Whether the only problem `e2fsck -fn` reports is `orphan_present` set
/// over a clean orphan file. `e2fsck -E journal_only` leaves it so after
/// any crash of a filesystem mounted with the orphan file (the kernel
/// sets the feature at mount and clears it at unmount); the kernel's own
/// crashed images come out the same (checked by hand: an image copied
/// while mounted after `sync`, then `e2fsck -E journal_only`, `-fn`).
fn only_orphan_present(text: &str) -> bool {
    let mut seen = false;
    for l in text.lines().map(str::trim) {
        if l == "Feature orphan_present is set but orphan file is clean." {
            seen = true;
        } else if !(l.is_empty()
            || l.starts_with("Pass ")
            || l.starts_with("e2fsck ")
            || l == "Clear? no"
            || l.contains("WARNING: Filesystem still has errors")
            || l.contains(" files (")
            || l.contains("could be shorter")
            || l.contains("could be narrower"))
        {
            return false;
        }
    }
    seen
}

/// A scratch image file, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Recover `img` as `oracles` say and check each result against `states`.
pub fn check_crash(img: &[u8], states: &[Model], oracles: Oracles) -> Result<(), String> {
    let large = {
        let v = Volume::open(
            MemDevice::from_vec(img.to_vec()),
            &OpenOptions {
                recovery: ext4_engine::Recovery::Skip,
                ..OpenOptions::default()
            },
        )
        .map_err(|e| format!("crash image: {e}"))?;
        v.sb().inode_size > 128
    };
    if oracles.engine {
        // A read-write open replays onto the device; close writes the
        // clean state.
        let dev = Arc::new(MemDevice::from_vec(img.to_vec()));
        let vol = Volume::open(dev.clone(), &rw_options())
            .map_err(|e| format!("engine: read-write open: {e}"))?;
        vol.close().map_err(|e| format!("engine: close: {e}"))?;
        drop(vol);
        let bytes = dev.snapshot();
        let f = Scratch(tempfile_path("crash-engine").with_extension("img"));
        write_sparse(&f.0, &bytes).map_err(|e| e.to_string())?;
        fsck_clean(&f.0, "the engine")?;
        let v = EngineView::open(MemDevice::from_vec(bytes))?;
        check_view(&v, states, large).map_err(|e| format!("engine's recovery: {e}"))?;
    }
    if oracles.e2fsck {
        let f = Scratch(tempfile_path("crash-e2fsck").with_extension("img"));
        write_sparse(&f.0, img).map_err(|e| e.to_string())?;
        let out = run(std::process::Command::new("e2fsck")
            .args(["-y", "-E", "journal_only"])
            .arg(&f.0));
        let code = out.status.code().unwrap_or(-1);
        if code > 1 {
            return Err(format!(
                "e2fsck -E journal_only exited {code}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        fsck_clean(&f.0, "e2fsck")?;
        let bytes = std::fs::read(&f.0).map_err(|e| e.to_string())?;
        let v = EngineView::open(MemDevice::from_vec(bytes))?;
        check_view(&v, states, large).map_err(|e| format!("e2fsck's recovery: {e}"))?;
    }
    if oracles.kernel {
        let f = Scratch(tempfile_path("crash-kernel").with_extension("img"));
        write_sparse(&f.0, img).map_err(|e| e.to_string())?;
        let m = KernelMount::mount(&f.0, false, "")
            .map_err(|e| format!("kernel: mount (which recovers): {e}"))?;
        let r = check_view(&MountView(m.path()), states, large)
            .map_err(|e| format!("kernel's recovery: {e}"));
        m.unmount().map_err(|e| format!("kernel: unmount: {e}"))?;
        r?;
        fsck_clean(&f.0, "the kernel")?;
    }
    Ok(())
}

/// Crash `run` at `points` and check every recovery; the first failure
/// keeps its crash image for a look.
pub fn check_run(
    run: &Run,
    points: &[CrashPoint],
    oracles: &dyn Fn(usize) -> Oracles,
) -> Result<usize, String> {
    let images = run.dev.crash_images(points);
    for (k, (p, img)) in points.iter().zip(&images).enumerate() {
        let states = run.allowed(p.at);
        if let Err(e) = check_crash(img, states, oracles(k)) {
            let keep = cache_dir().join(format!("failed-crash-{}.img", run.profile.name));
            let _ = write_sparse(&keep, img);
            return Err(format!(
                "{}: crash after {} of {} events ({:?}): {e}\n(crash image kept at {})",
                run.profile.name,
                p.at,
                run.limit,
                p.keep,
                keep.display()
            ));
        }
    }
    Ok(images.len())
}
