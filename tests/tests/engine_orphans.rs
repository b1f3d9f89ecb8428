//! Orphans: an inode whose last name goes while a frontend holds it stays
//! (on the orphan list, or in the orphan file) until released; a crash
//! leaves it there, and e2fsck, the next read-write open of the engine and
//! the kernel's mount each clean it up. Truncations that take many
//! handles are crash-safe the same way. Crashes are device snapshots taken
//! between commits, without closing.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::{Arc, Mutex};

use ext4_engine::IoError;
use ext4_engine::{BlockDevice, MemDevice};
use ext4_engine::{Cred, Error, InodeNo, OpenFiles};
use ext4_engine::{OpenOptions, Volume};
use ext4_tests::oracle::{tempfile_path, KernelMount};
use ext4_tests::util::{require_e2fsprogs, require_kernel_ext4};
use ext4_tests::writes::{
    check_fsck, image, open_rw, rw_options, write_sparse, Profile, EXT4_1K, EXT4_DEFAULT,
    EXT4_ORPHAN_FILE,
};

/// What the "frontend" holds open.
#[derive(Default, Clone)]
struct Held(Arc<Mutex<BTreeSet<InodeNo>>>);

impl OpenFiles for Held {
    fn is_open(&self, ino: InodeNo) -> bool {
        self.0.lock().unwrap().contains(&ino)
    }
}

fn open_held(bytes: Vec<u8>) -> (Volume<Arc<MemDevice>>, Arc<MemDevice>, Held) {
    let dev = Arc::new(MemDevice::from_vec(bytes));
    let mut vol = Volume::open(dev.clone(), &rw_options()).expect("open read-write");
    let held = Held::default();
    vol.set_open_files(Box::new(held.clone()));
    (vol, dev, held)
}

/// `e2fsck` with `args` on a copy of `bytes`: (exit code, output).
fn e2fsck_on(bytes: &[u8], args: &[&str]) -> (i32, String) {
    let img = tempfile_path("orphan-fsck").with_extension("img");
    write_sparse(&img, bytes).unwrap();
    let out = Command::new("e2fsck")
        .args(args)
        .arg(&img)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&img);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// `bytes` with its journal replayed (by the engine's `recover`, which,
/// unlike `e2fsck -E journal_only`, leaves the orphans alone).
fn journal_replayed(bytes: &[u8]) -> Vec<u8> {
    let dev = MemDevice::from_vec(bytes.to_vec());
    ext4_engine::journal::recover(
        &dev,
        None,
        ext4_engine::journal::Policy::Kernel,
        ext4_engine::DEFAULT_REPLAY_BUDGET,
    )
    .unwrap()
    .expect("the crash left a journal to replay");
    dev.snapshot()
}

/// The orphans `e2fsck -fp` clears in a copy of `bytes`, which must be all
/// it finds to do; the image must be clean after (`e2fsck -fn`). One
/// more line is accepted: e2fsck 1.47 reports the orphan file block it
/// just processed as "not clean" and clears it again; it does the same on
/// the kernel's own crashed images too (checked by hand with a kernel
/// mount copied while it held an unlinked file open).
fn fsck_clears(bytes: &[u8]) -> Vec<u32> {
    let img = tempfile_path("orphan-fsck").with_extension("img");
    write_sparse(&img, bytes).unwrap();
    let out = Command::new("e2fsck")
        .arg("-fp")
        .arg(&img)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "e2fsck -fp:\n{text}"
    );
    let mut cleared = Vec::new();
    for l in text.lines() {
        if let Some(rest) = l.split("Clearing orphaned inode ").nth(1) {
            cleared.push(rest.split_whitespace().next().unwrap().parse().unwrap());
        } else if l.contains("Truncating orphaned inode ") {
            // A truncation the crash interrupted: finished by e2fsck.
        } else {
            let fine = l.trim().is_empty()
                // The crash left committed transactions in the journal.
                || l.ends_with("recovering journal")
                || l.contains(" files (")
                || l.starts_with("e2fsck ")
                || (l.contains("Orphan file (inode") && l.contains("is not clean"))
                || l.trim() == "CLEARED."
                // Layout hints, not errors (e2fsck -fn exits 0 with them).
                || l.contains("could be shorter")
                || l.contains("could be narrower");
            assert!(
                fine,
                "e2fsck -fp found more than orphans to clear: {l}\n{text}"
            );
        }
    }
    let r = check_fsck(&img);
    let _ = std::fs::remove_file(&img);
    r.unwrap();
    cleared
}

fn free_counts<D: BlockDevice>(v: &Volume<D>) -> (u64, u64) {
    let s = v.statfs();
    (s.blocks_free, s.inodes_free)
}

/// Unlink a file while it is held; it stays readable and writable by
/// number; a crash (a device copy between commits) leaves it on the
/// orphan list or in the orphan file: `e2fsck -fp` clears exactly it and
/// nothing else is wrong; the engine's next read-write open frees it;
/// the kernel's mount frees it too. Released normally, it is freed then.
fn unlink_while_held(p: &Profile) {
    let (vol, dev, held) = open_held(image(p));
    let root = InodeNo::ROOT;
    let before = free_counts(&vol);
    let mut files = Vec::new();
    for i in 0..3 {
        let a = vol
            .create(root, format!("open-{i}").as_bytes(), 0o644, &Cred::ROOT)
            .unwrap();
        // Several extents: interleaved writes.
        for k in 0..8u64 {
            vol.write(a.ino, k * 300_000, &vec![i as u8 + 1; 70_000], &Cred::ROOT)
                .unwrap();
        }
        files.push(a.ino);
    }
    let linked = vol.create(root, b"stays", 0o644, &Cred::ROOT).unwrap();
    for &f in &files {
        held.0.lock().unwrap().insert(f);
    }
    for i in 0..3 {
        vol.unlink(root, format!("open-{i}").as_bytes()).unwrap();
    }
    // Held: still there by number, with no links.
    let a = vol.getattr(files[0]).unwrap();
    assert_eq!(a.nlink, 0);
    let mut buf = vec![0u8; 10];
    assert_eq!(vol.read(files[0], 300_000, &mut buf).unwrap(), 10);
    assert_eq!(buf, vec![1u8; 10]);
    vol.write(files[1], 0, b"still writable", &Cred::ROOT)
        .unwrap();
    assert!(matches!(
        vol.lookup_ino(InodeNo::ROOT, b"open-0"),
        Err(Error::NotFound)
    ));
    // Not held: gone at once (ESTALE by number, as the kernel answers).
    vol.unlink(root, b"stays").unwrap();
    assert_eq!(vol.getattr(linked.ino), Err(Error::Stale));
    vol.commit().unwrap();
    let crashed = dev.snapshot();

    // e2fsck: with -n it does not process the orphan list (it reports the
    // orphans as deleted inodes with a zero dtime) — nor replay the
    // journal, so it reads the journal-replayed image; -p clears exactly
    // ours.
    let (code, text) = e2fsck_on(&journal_replayed(&crashed), &["-fn"]);
    assert_ne!(code, 0, "e2fsck -fn does not process orphans:\n{text}");
    let mut cleared = fsck_clears(&crashed);
    cleared.sort();
    let want: Vec<u32> = files.iter().map(|f| f.0).collect();
    assert_eq!(cleared, want, "e2fsck -fp clears exactly the held orphans");

    // The engine's next read-write open frees them.
    {
        let (v2, d2) = open_rw(crashed.clone(), &rw_options());
        for &f in &files {
            assert_eq!(v2.getattr(f), Err(Error::Stale), "orphan {f} freed at open");
        }
        v2.close().unwrap();
        drop(v2);
        let img = tempfile_path("orphan-reopened").with_extension("img");
        write_sparse(&img, &d2.snapshot()).unwrap();
        let r = check_fsck(&img);
        let reopened =
            Volume::open(MemDevice::from_vec(d2.snapshot()), &OpenOptions::default()).unwrap();
        assert_eq!(
            free_counts(&reopened),
            before,
            "every block and inode came back"
        );
        assert_eq!(reopened.sb().last_orphan, 0);
        let _ = std::fs::remove_file(&img);
        r.unwrap();
    }

    // The kernel's read-write mount frees them too.
    if require_kernel_ext4() {
        let img = tempfile_path("orphan-kernel").with_extension("img");
        write_sparse(&img, &crashed).unwrap();
        let m = KernelMount::mount(&img, false, "").unwrap();
        m.unmount().unwrap();
        let r = check_fsck(&img);
        let after = Volume::open(
            MemDevice::from_vec(std::fs::read(&img).unwrap()),
            &OpenOptions::default(),
        )
        .unwrap();
        assert_eq!(free_counts(&after), before, "the kernel freed the orphans");
        let _ = std::fs::remove_file(&img);
        r.unwrap();
    }

    // Released: freed now; a clean close leaves no orphan behind.
    vol.release(files[0]).unwrap();
    assert_eq!(vol.getattr(files[0]), Err(Error::Stale));
    vol.release(files[1]).unwrap();
    // files[2] is still held at close: the close frees it (the kernel
    // evicts every inode at unmount).
    vol.close().unwrap();
    drop(vol);
    let bytes = dev.snapshot();
    let img = tempfile_path("orphan-closed").with_extension("img");
    write_sparse(&img, &bytes).unwrap();
    let r = check_fsck(&img);
    let _ = std::fs::remove_file(&img);
    r.unwrap();
    let v = Volume::open(MemDevice::from_vec(bytes), &OpenOptions::default()).unwrap();
    assert_eq!(free_counts(&v), before);
    assert_eq!(v.sb().last_orphan, 0);
    assert_eq!(
        v.sb().ro_compat & ext4_engine::features::ro_compat::ORPHAN_PRESENT,
        0,
        "orphan_present is cleared at a clean close"
    );
}

#[test]
fn unlink_while_held_orphan_list() {
    if !require_e2fsprogs() {
        return;
    }
    unlink_while_held(&EXT4_DEFAULT);
}

#[test]
fn unlink_while_held_orphan_file() {
    if !require_e2fsprogs() {
        return;
    }
    unlink_while_held(&EXT4_ORPHAN_FILE);
    // While mounted read-write the orphan file is marked present.
    let (vol, dev, _held) = open_held(image(&EXT4_ORPHAN_FILE));
    let ro = Volume::open(MemDevice::from_vec(dev.snapshot()), &OpenOptions::default()).unwrap();
    assert_ne!(
        ro.sb().ro_compat & ext4_engine::features::ro_compat::ORPHAN_PRESENT,
        0
    );
    vol.close().unwrap();
}

/// A directory removed while held stays an orphan the same way.
#[test]
fn rmdir_while_held() {
    if !require_e2fsprogs() {
        return;
    }
    let (vol, dev, held) = open_held(image(&EXT4_1K));
    let root = InodeNo::ROOT;
    let before = free_counts(&vol);
    let d = vol.mkdir(root, b"cwd", 0o755, &Cred::ROOT).unwrap();
    held.0.lock().unwrap().insert(d.ino);
    vol.rmdir(root, b"cwd").unwrap();
    let a = vol.getattr(d.ino).unwrap();
    assert_eq!(
        (a.nlink, a.size),
        (0, 0),
        "a removed directory is empty and unlinked"
    );
    assert!(matches!(
        vol.create(d.ino, b"x", 0o644, &Cred::ROOT),
        Err(Error::NotFound)
    ));
    vol.commit().unwrap();
    let crashed = dev.snapshot();
    assert_eq!(fsck_clears(&crashed), vec![d.ino.0]);
    let (v2, _) = open_rw(crashed, &rw_options());
    assert_eq!(free_counts(&v2), before);
    v2.close().unwrap();
    vol.release(d.ino).unwrap();
    assert_eq!(free_counts(&vol), before);
    vol.close().unwrap();
}

/// A device that keeps a copy of itself at every flush (each commit
/// flushes): the crash points of a long operation.
struct Recording {
    inner: MemDevice,
    copies: Mutex<Vec<Vec<u8>>>,
}

impl BlockDevice for Recording {
    fn read_at(&self, o: u64, b: &mut [u8]) -> Result<(), IoError> {
        self.inner.read_at(o, b)
    }
    fn write_at(&self, o: u64, b: &[u8]) -> Result<(), IoError> {
        self.inner.write_at(o, b)
    }
    fn flush(&self) -> Result<(), IoError> {
        self.copies.lock().unwrap().push(self.inner.snapshot());
        Ok(())
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_only(&self) -> bool {
        false
    }
}

/// Truncating a file of many extents takes many handles and several
/// commits (a small cache): at every crash point in between the file is
/// on the orphan list with its new size, e2fsck -fp finishes the job
/// without finding anything else wrong, and the engine's next read-write
/// open does the same (e2fsck -fn clean after).
#[test]
fn truncate_is_crash_safe() {
    if !require_e2fsprogs() {
        return;
    }
    let dev = Arc::new(Recording {
        inner: MemDevice::from_vec(image(&EXT4_1K)),
        copies: Mutex::new(Vec::new()),
    });
    // The smallest cache a read-write volume takes: 64 blocks per
    // transaction, so the truncate below commits on its way.
    let opts = OpenOptions {
        cache_bytes: 256 << 10,
        ..rw_options()
    };
    let vol = Volume::open(dev.clone(), &opts).unwrap();
    let a = vol
        .create(InodeNo::ROOT, b"big", 0o644, &Cred::ROOT)
        .unwrap();
    let ino = a.ino;
    // 9,000 one-block extents (every other block): some 110 leaves.
    for k in 0..9000u64 {
        vol.write(ino, k * 2048, &[7u8; 1024], &Cred::ROOT).unwrap();
    }
    vol.commit().unwrap();
    let whole = vol.getattr(ino).unwrap();
    let first = dev.copies.lock().unwrap().len();
    vol.truncate(ino, 5000).unwrap();
    vol.commit().unwrap();
    let copies = dev.copies.lock().unwrap().clone();
    let points = &copies[first..];
    assert!(
        points.len() >= 4,
        "the truncate committed in steps ({} flushes)",
        points.len()
    );
    let mut mid_orphans = 0;
    let n = points.len();
    let mut picks: Vec<usize> = (0..5).map(|k| k * (n - 1) / 4).collect();
    picks.dedup();
    for k in picks {
        let bytes = points[k].clone();
        let cleared = fsck_clears(&bytes);
        assert!(
            cleared.is_empty(),
            "a linked file is truncated, not cleared"
        );
        let ro = Volume::open(MemDevice::from_vec(bytes.clone()), &OpenOptions::default()).unwrap();
        let orphan = ro.sb().last_orphan == ino.0;
        let size = ro.getattr(ino).unwrap().size;
        if orphan {
            mid_orphans += 1;
            assert_eq!(size, 5000, "the new size is set first");
        }
        let (v2, d2) = open_rw(bytes, &rw_options());
        let got = v2.getattr(ino).unwrap();
        // Before the truncate's first commit: the whole old file; else the
        // new size with the blocks past it freed (by the open, if the
        // crash came mid-way).
        if size == 5000 {
            assert_eq!(got.size, 5000);
            assert!(
                got.blocks <= 2 * 6,
                "blocks past the size were freed at open: {}",
                got.blocks
            );
        } else {
            assert_eq!((got.size, got.blocks), (whole.size, whole.blocks));
        }
        v2.close().unwrap();
        drop(v2);
        let img = tempfile_path("truncate-crash").with_extension("img");
        write_sparse(&img, &d2.snapshot()).unwrap();
        let r = check_fsck(&img);
        let _ = std::fs::remove_file(&img);
        r.unwrap();
    }
    assert!(
        mid_orphans >= 1,
        "the file was on the orphan list mid-truncate"
    );
    vol.close().unwrap();
}

/// The kernel crashes (the image copied while mounted, after sync) with a
/// file unlinked but open, on the orphan list or in the orphan file: the
/// engine's read-write open replays the journal and frees the orphan;
/// e2fsck -fn is clean after our close.
#[test]
fn kernel_crash_orphans_cleaned_at_open() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    for features in ["", "orphan_file"] {
        let img = tempfile_path("kernel-orphan").with_extension("img");
        ext4_tests::kwimage::kw_mkfs(&img, 4096, features, "64M");
        let crashed;
        let ino;
        {
            let m = KernelMount::mount(&img, false, "").unwrap();
            let p = m.path().join("held");
            std::fs::write(&p, vec![5u8; 3 << 20]).unwrap();
            let f = std::fs::File::open(&p).unwrap();
            ino = InodeNo(std::os::unix::fs::MetadataExt::ino(&f.metadata().unwrap()) as u32);
            std::fs::remove_file(&p).unwrap();
            Command::new("sync").status().unwrap();
            crashed = std::fs::read(&img).unwrap();
            drop(f);
            m.unmount().unwrap();
        }
        let _ = std::fs::remove_file(&img);
        let (vol, dev) = open_rw(crashed, &rw_options());
        assert!(
            matches!(
                vol.getattr(ino),
                Err(Error::Stale) | Err(Error::Corrupt { .. })
            ),
            "{features}: the kernel's orphan {ino} was freed at open"
        );
        let free = vol.statfs().blocks_free;
        vol.close().unwrap();
        drop(vol);
        let out = tempfile_path("kernel-orphan-after").with_extension("img");
        write_sparse(&out, &dev.snapshot()).unwrap();
        let r = check_fsck(&out);
        let _ = std::fs::remove_file(&out);
        r.unwrap_or_else(|e| panic!("{features}: {e}"));
        // Its 3 MiB are free again.
        let v = Volume::open(MemDevice::from_vec(dev.snapshot()), &OpenOptions::default()).unwrap();
        assert_eq!(v.statfs().blocks_free, free);
        assert!(
            free > (60 << 20) / 4096 - 3000,
            "{features}: blocks free {free}"
        );
    }
}

/// `O_TMPFILE` (`Volume::tmpfile`): an inode with no links, on the orphan
/// list or in the orphan file from the start; a crash leaves it there for
/// `e2fsck -fp` (which clears exactly it) and for the engine's next open
/// (which frees it); `link` gives one a name and takes it off the list;
/// released, the other is freed and every block and inode comes back.
fn tmpfile_orphans(p: &Profile) {
    let (vol, dev, _held) = open_held(image(p));
    let root = InodeNo::ROOT;
    let before = free_counts(&vol);
    let unnamed = vol.tmpfile(root, 0o600, &Cred::ROOT).unwrap();
    let named = vol.tmpfile(root, 0o640, &Cred::ROOT).unwrap();
    assert_eq!((unnamed.nlink, named.nlink), (0, 0));
    for a in [&unnamed, &named] {
        vol.write(a.ino, 0, &vec![7u8; 300_000], &Cred::ROOT)
            .unwrap();
    }
    vol.link(named.ino, root, b"named", &Cred::ROOT).unwrap();
    assert_eq!(vol.getattr(named.ino).unwrap().nlink, 1);
    vol.commit().unwrap();
    let crashed = dev.snapshot();
    assert_eq!(fsck_clears(&crashed), vec![unnamed.ino.0], "{}", p.name);
    {
        let (v2, d2) = open_rw(crashed, &rw_options());
        assert_eq!(v2.getattr(unnamed.ino), Err(Error::Stale), "{}", p.name);
        let mut buf = vec![0u8; 300_000];
        assert_eq!(v2.read(named.ino, 0, &mut buf).unwrap(), 300_000);
        assert!(buf.iter().all(|&b| b == 7));
        v2.close().unwrap();
        drop(v2);
        let img = tempfile_path("tmpfile-reopened").with_extension("img");
        write_sparse(&img, &d2.snapshot()).unwrap();
        let r = check_fsck(&img);
        let _ = std::fs::remove_file(&img);
        r.unwrap();
    }
    vol.release(unnamed.ino).unwrap();
    assert_eq!(vol.getattr(unnamed.ino), Err(Error::Stale));
    vol.unlink(root, b"named").unwrap();
    vol.close().unwrap();
    drop(vol);
    let v = Volume::open(MemDevice::from_vec(dev.snapshot()), &OpenOptions::default()).unwrap();
    assert_eq!(free_counts(&v), before, "{}", p.name);
    assert_eq!(v.sb().last_orphan, 0);
}

#[test]
fn tmpfile_orphan_list_and_file() {
    if !require_e2fsprogs() {
        return;
    }
    for p in [&EXT4_DEFAULT, &EXT4_ORPHAN_FILE] {
        tmpfile_orphans(p);
    }
}
