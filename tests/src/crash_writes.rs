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
//!   byte, what one of its states since holds: a byte is a byte some such
//!   state has at that offset, or zero past the end of one (never stale
//!   data of a freed block); its size lies between those states' sizes;
//! - no name appears that no such state has, and every name all of them
//!   have is there.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ext4_engine::attr::Timestamp;
use ext4_engine::device::{BlockDevice, MemDevice};
use ext4_engine::volume::{OpenOptions, Volume};

use crate::crashdev::{CrashDevice, CrashPoint, Keep};
use crate::oracle::{e2fsck_check, tempfile_path, KernelMount};
use crate::rng::Rng;
use crate::util::{cache_dir, run};
use crate::writes::{
    apply, image, modelled, rw_options, stored, write_sparse, Model, Op, Profile, DIRS,
};

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
        apply(&vol, &mut m, op).map_err(|e| format!("step {k} {op:?}: {e}"))?;
        run.states.push(m.clone());
        run.ends.push(dev.len());
        run.durable.push(matches!(op, Op::Commit));
    }
    if close {
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

/// What a reader of the recovered image shows of one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub ino: u32,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: Timestamp,
    pub data: Vec<u8>,
}

/// A reader of a recovered image: the engine or a kernel mount.
pub trait View {
    /// The modelled names of directory `DIRS[d]`.
    fn names(&self, d: usize) -> Result<Vec<Vec<u8>>, String>;
    fn file(&self, d: usize, name: &[u8]) -> Result<Seen, String>;
}

/// The engine's read-only view of an image.
pub struct EngineView<D: BlockDevice>(pub Volume<D>, pub Vec<u32>);

impl<D: BlockDevice> EngineView<D> {
    pub fn open(dev: D) -> Result<EngineView<D>, String> {
        let vol = Volume::open(dev, &OpenOptions::default()).map_err(|e| format!("open: {e}"))?;
        let mut dirs = Vec::new();
        for d in DIRS {
            dirs.push(if d.is_empty() {
                2
            } else {
                vol.lookup_ino(2, d.as_bytes())
                    .map_err(|e| format!("lookup {d}: {e}"))?
            });
        }
        Ok(EngineView(vol, dirs))
    }
}

impl<D: BlockDevice> View for EngineView<D> {
    fn names(&self, d: usize) -> Result<Vec<Vec<u8>>, String> {
        let mut names = Vec::new();
        self.0
            .readdir(self.1[d], 0, &mut |e| {
                names.push(e.name.to_vec());
                true
            })
            .map_err(|e| format!("readdir {}: {e}", DIRS[d]))?;
        names.retain(|n| modelled(d, n));
        Ok(names)
    }
    fn file(&self, d: usize, name: &[u8]) -> Result<Seen, String> {
        let ino = self
            .0
            .lookup_ino(self.1[d], name)
            .map_err(|e| format!("lookup: {e}"))?;
        let a = self.0.getattr(ino).map_err(|e| format!("getattr: {e}"))?;
        let mut data = vec![0u8; a.size as usize];
        let n = self
            .0
            .read(ino, 0, &mut data)
            .map_err(|e| format!("read: {e}"))?;
        data.truncate(n);
        Ok(Seen {
            ino,
            mode: (a.mode & 0o7777) as u16,
            uid: a.uid,
            gid: a.gid,
            nlink: a.nlink,
            mtime: a.mtime,
            data,
        })
    }
}

/// The kernel's view through a mount.
pub struct MountView<'a>(pub &'a Path);

impl View for MountView<'_> {
    fn names(&self, d: usize) -> Result<Vec<Vec<u8>>, String> {
        use std::os::unix::ffi::OsStrExt;
        let p = self.0.join(DIRS[d]);
        let mut names = Vec::new();
        for e in std::fs::read_dir(&p).map_err(|e| format!("readdir {p:?}: {e}"))? {
            let e = e.map_err(|e| e.to_string())?;
            names.push(e.file_name().as_bytes().to_vec());
        }
        names.retain(|n| modelled(d, n));
        Ok(names)
    }
    fn file(&self, d: usize, name: &[u8]) -> Result<Seen, String> {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::MetadataExt;
        let p = self.0.join(DIRS[d]).join(std::ffi::OsStr::from_bytes(name));
        let md = std::fs::symlink_metadata(&p).map_err(|e| format!("stat: {e}"))?;
        let data = std::fs::read(&p).map_err(|e| format!("read: {e}"))?;
        Ok(Seen {
            ino: md.ino() as u32,
            mode: (md.mode() & 0o7777) as u16,
            uid: md.uid(),
            gid: md.gid(),
            nlink: md.nlink() as u32,
            mtime: Timestamp {
                sec: md.mtime(),
                nsec: md.mtime_nsec() as u32,
            },
            data,
        })
    }
}

/// Whether what `view` shows is allowed by `states` (see the module's
/// doc). `large`: inodes keep nanoseconds and the epoch bits.
pub fn check_view(view: &dyn View, states: &[Model], large: bool) -> Result<(), String> {
    for (d, dir) in DIRS.iter().enumerate() {
        let names = view.names(d)?;
        for name in &names {
            let shown = String::from_utf8_lossy(name);
            let versions: Vec<_> = states
                .iter()
                .filter_map(|m| m.files.iter().find(|f| f.dir == d && &f.name == name))
                .collect();
            if versions.is_empty() {
                return Err(format!(
                    "{}/{shown}: a name no state since the last fsync has",
                    dir
                ));
            }
            let seen = view
                .file(d, name)
                .map_err(|e| format!("{}/{shown}: {e}", dir))?;
            let bad = |what: &str| {
                Err(format!(
                    "{}/{shown}: {what} is none of its states' (seen {:?}, {} bytes; states {:?})",
                    dir,
                    (seen.ino, seen.mode, seen.uid, seen.gid, seen.mtime),
                    seen.data.len(),
                    versions
                        .iter()
                        .map(|f| (f.ino, f.mode, f.uid, f.gid, f.data.len()))
                        .collect::<Vec<_>>()
                ))
            };
            if !versions.iter().any(|f| f.ino == seen.ino) {
                return bad("the inode number");
            }
            if seen.nlink != 1 {
                return bad("the link count");
            }
            if !versions.iter().any(|f| f.mode == seen.mode) {
                return bad("the mode");
            }
            if !versions
                .iter()
                .any(|f| (f.uid, f.gid) == (seen.uid, seen.gid))
            {
                return bad("the owner");
            }
            if !versions
                .iter()
                .any(|f| f.mtime.is_none_or(|t| stored(t, large) == seen.mtime))
            {
                return bad("the mtime");
            }
            let lo = versions.iter().map(|f| f.data.len()).min().unwrap_or(0);
            let hi = versions.iter().map(|f| f.data.len()).max().unwrap_or(0);
            if seen.data.len() < lo || seen.data.len() > hi {
                return bad("the size");
            }
            for (o, &b) in seen.data.iter().enumerate() {
                let ok = versions.iter().any(|f| match f.data.get(o) {
                    Some(&v) => v == b,
                    None => b == 0,
                });
                if !ok {
                    return Err(format!(
                        "{}/{shown}: byte {o} is {b:#x}, which no state since the last fsync \
                         has there ({:?})",
                        dir,
                        versions
                            .iter()
                            .map(|f| f.data.get(o).copied())
                            .collect::<Vec<_>>()
                    ));
                }
            }
        }
        // Every name all the states have is there.
        if let Some(first) = states.first() {
            for f in first.files.iter().filter(|f| f.dir == d) {
                let always = states
                    .iter()
                    .all(|m| m.files.iter().any(|g| g.dir == d && g.name == f.name));
                if always && !names.contains(&f.name) {
                    return Err(format!(
                        "{}/{}: fsynced and never unlinked since, but missing",
                        dir,
                        String::from_utf8_lossy(&f.name)
                    ));
                }
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
    if code != 0 {
        return Err(format!(
            "e2fsck -fn after {who}'s recovery exited {code}:\n{text}"
        ));
    }
    Ok(())
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
