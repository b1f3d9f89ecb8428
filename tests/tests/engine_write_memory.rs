//! The engine's write path stays within the memory budgets fixed at open
//! whatever the sizes involved: a 10 GiB `fallocate` and a hole punched in
//! every other MiB of it, a byte written at 1 TiB (a depth of extent tree
//! or a triple-indirect chain) and truncated away again, on a 16 GiB sparse
//! image file. A counting allocator measures the heap's peak during each
//! operation against the budgets; `e2fsck -fn` and the kernel check the
//! result.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use ext4_engine::falloc;
use ext4_engine::FileDevice;
use ext4_engine::{Cred, InodeNo};
use ext4_engine::{OpenOptions, Volume, Whence};
use ext4_tests::oracle::{tempfile_path, KernelMount};
use ext4_tests::util::{require_e2fsprogs, require_kernel_ext4, run_ok};
use ext4_tests::writes::{check_fsck, fixed_now};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        CURRENT.fetch_sub(l.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const CACHE: usize = 4 << 20;
const MAPS: usize = 1 << 20;
const INODES: usize = 1 << 20;
/// The journal writer's log buffer (ext4 has a journal): a quarter of the
/// block cache, as the default is.
const JOURNAL: usize = CACHE / 4;
/// Room for everything that is not a budgeted cache: per-operation
/// buffers (1 MiB data pieces, a block or two), paths, the busy list.
const SLACK: usize = 4 << 20;

/// Run `f` and return the heap's growth over its start at its peak.
fn peak_of<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let r = f();
    (r, PEAK.load(Ordering::Relaxed) - base)
}

fn big_image(img: &Path, kind: &str) {
    run_ok(
        Command::new("mke2fs")
            .args(["-F", "-q", "-t", kind, "-b", "4096", "-E", "root_owner=0:0"])
            .arg(img)
            .arg("16G"),
    );
}

fn open(img: &Path) -> Volume<FileDevice> {
    let dev = FileDevice::open(img, false).unwrap();
    Volume::open(
        dev,
        &OpenOptions {
            cache_bytes: CACHE,
            mapping_cache_bytes: MAPS,
            inode_cache_bytes: INODES,
            journal_buffer_bytes: JOURNAL,
            read_only: false,
            now: fixed_now,
            ..OpenOptions::default()
        },
    )
    .unwrap()
}

fn within(what: &str, used: usize) {
    let budget = CACHE + MAPS + INODES + JOURNAL + SLACK;
    assert!(
        used <= budget,
        "{what}: the heap grew by {used} bytes, over the budgets ({budget})"
    );
    eprintln!("{what}: heap peak +{} KiB", used >> 10);
}

#[test]
fn big_files_stay_within_the_budgets() {
    if !require_e2fsprogs() {
        return;
    }
    for kind in ["ext4", "ext2"] {
        let img = tempfile_path(&format!("memory-{kind}")).with_extension("img");
        big_image(&img, kind);
        let cred = Cred::ROOT;
        let (vol, used) = peak_of(|| open(&img));
        within(&format!("{kind}: open"), used);
        let extents = kind == "ext4";
        let a = vol.create(InodeNo(2), b"huge", 0o644, &cred).unwrap();
        let huge = a.ino;
        if extents {
            let (r, used) = peak_of(|| vol.fallocate(huge, 0, 0, 10 << 30, &cred));
            r.unwrap();
            within(&format!("{kind}: fallocate 10 GiB"), used);
            let at = vol.getattr(a.ino).unwrap();
            assert_eq!(at.size, 10 << 30);
            assert!(
                at.blocks >= (10 << 30) / 512,
                "10 GiB allocated: {}",
                at.blocks
            );
            let (r, used) = peak_of(|| {
                for k in (0..(10u64 << 10)).step_by(2) {
                    vol.fallocate(
                        huge,
                        falloc::PUNCH_HOLE | falloc::KEEP_SIZE,
                        k << 20,
                        1 << 20,
                        &cred,
                    )?;
                }
                Ok::<(), ext4_engine::Error>(())
            });
            r.unwrap();
            within(&format!("{kind}: punch every other MiB of 10 GiB"), used);
        } else {
            // Block-mapped: no preallocation; a big write instead.
            let piece = vec![7u8; 1 << 20];
            let (r, used) = peak_of(|| {
                for k in 0..64u64 {
                    vol.write(huge, k << 20, &piece, &cred)?;
                }
                Ok::<(), ext4_engine::Error>(())
            });
            r.unwrap();
            within(&format!("{kind}: write 64 MiB"), used);
        }
        // A byte at 1 TiB.
        let b = vol.create(InodeNo(2), b"sparse", 0o644, &cred).unwrap();
        let sparse = b.ino;
        let (r, used) = peak_of(|| vol.write(sparse, (1 << 40) - 1, b"!", &cred));
        assert_eq!(r.unwrap(), 1);
        within(&format!("{kind}: a byte at 1 TiB"), used);
        let (r, used) = peak_of(|| vol.seek(b.ino, 0, Whence::Data));
        assert_eq!(r.unwrap(), ((1u64 << 40) - 1) / 4096 * 4096);
        within(&format!("{kind}: SEEK_DATA over 1 TiB"), used);
        let mut one = [0u8; 1];
        vol.read(b.ino, (1 << 40) - 1, &mut one).unwrap();
        assert_eq!(&one, b"!");
        vol.commit().unwrap();
        let (r, used) = peak_of(|| vol.truncate(sparse, 4096));
        r.unwrap();
        within(&format!("{kind}: truncate 1 TiB to 4 KiB"), used);
        assert_eq!(vol.getattr(b.ino).unwrap().blocks, 0);
        let (r, used) = peak_of(|| vol.truncate(huge, 12345));
        r.unwrap();
        within(&format!("{kind}: truncate the big file"), used);
        vol.close().unwrap();
        drop(vol);
        check_fsck(&img).unwrap_or_else(|e| panic!("{kind}: {e}"));
        if require_kernel_ext4() {
            let m = KernelMount::ro(&img).unwrap();
            assert_eq!(
                std::fs::metadata(m.path().join("sparse")).unwrap().len(),
                4096
            );
            assert_eq!(
                std::fs::metadata(m.path().join("huge")).unwrap().len(),
                12345
            );
            m.unmount().unwrap();
        }
        let _ = std::fs::remove_file(&img);
    }
}
