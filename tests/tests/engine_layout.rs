//! Where the engine puts what it writes, against the kernel's ext4 doing
//! the same: a 50,000-entry tree (directories two levels deep, files from
//! empty to 256 KiB) written in the same order onto copies of one empty
//! `mke2fs` image, by the engine and by the kernel's mount. Judged by
//! `e2fsck -fn`'s non-contiguous percentage and by the fragments FIEMAP
//! reports through the kernel's read-only mount of each image: ours must
//! be no worse than the kernel's.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use ext4_engine::{Cred, FileDevice, InodeNo, OpenOptions, Volume};
use ext4_tests::kwimage::kernel_fiemap;
use ext4_tests::oracle::{e2fsck_check, tempfile_path, KernelMount};
use ext4_tests::rng::Rng;
use ext4_tests::util::{require_e2fsprogs, require_kernel_ext4};

const ENTRIES: usize = 50_000;
const PIECE: usize = 1 << 20;

enum Entry {
    Dir {
        parent: usize,
        name: String,
    },
    File {
        parent: usize,
        name: String,
        size: usize,
    },
}

/// The tree, in creation order; entry 0 is the root. Sizes: most files
/// small, as in a source tree, a few up to 256 KiB.
fn tree() -> Vec<Entry> {
    let mut rng = Rng::new(50_000);
    let mut out = vec![Entry::Dir {
        parent: 0,
        name: String::new(),
    }];
    let mut dirs = vec![0usize];
    while out.len() < ENTRIES {
        let k = out.len();
        if k % 20 == 0 {
            // A new directory under the root or a first-level one.
            let parent = dirs[rng.below(dirs.len().min(60) as u64) as usize];
            out.push(Entry::Dir {
                parent,
                name: format!("dir{k}"),
            });
            dirs.push(k);
        } else {
            let parent = *dirs.last().unwrap();
            let size = match rng.below(100) {
                0..=84 => rng.below(4096) as usize,
                85..=98 => 4096 + rng.below(28 * 1024) as usize,
                _ => 32 * 1024 + rng.below(224 * 1024) as usize,
            };
            out.push(Entry::File {
                parent,
                name: format!("file{k}.dat"),
                size,
            });
        }
    }
    out
}

fn contents(size: usize, seed: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 31 + seed) as u8 | 1).collect()
}

fn write_ours(img: &Path, tree: &[Entry]) {
    let dev = FileDevice::open(img, false).unwrap();
    let opts = OpenOptions {
        read_only: false,
        ..OpenOptions::default()
    };
    let vol = Volume::open(dev, &opts).unwrap();
    let cred = Cred::ROOT;
    let mut ino = vec![InodeNo::ROOT; tree.len()];
    for (k, e) in tree.iter().enumerate().skip(1) {
        match e {
            Entry::Dir { parent, name } => {
                ino[k] = vol
                    .mkdir(ino[*parent], name.as_bytes(), 0o755, &cred)
                    .unwrap()
                    .ino;
            }
            Entry::File { parent, name, size } => {
                let f = vol
                    .create(ino[*parent], name.as_bytes(), 0o644, &cred)
                    .unwrap()
                    .ino;
                let data = contents(*size, k);
                for (i, piece) in data.chunks(PIECE).enumerate() {
                    vol.write(f, (i * PIECE) as u64, piece, &cred).unwrap();
                }
            }
        }
    }
    vol.commit().unwrap();
    vol.close().unwrap();
}

fn write_kernel(img: &Path, tree: &[Entry]) {
    let m = KernelMount::mount(img, false, "").unwrap();
    let mut path = vec![m.path().to_path_buf(); tree.len()];
    for (k, e) in tree.iter().enumerate().skip(1) {
        match e {
            Entry::Dir { parent, name } => {
                path[k] = path[*parent].join(name);
                std::fs::create_dir(&path[k]).unwrap();
            }
            Entry::File { parent, name, size } => {
                let mut f = File::create(path[*parent].join(name)).unwrap();
                for piece in contents(*size, k).chunks(PIECE) {
                    f.write_all(piece).unwrap();
                }
            }
        }
    }
    m.unmount().unwrap();
}

/// e2fsck's "N/M files (X% non-contiguous)", in tenths of a percent.
fn noncontiguous(img: &Path) -> u32 {
    let (code, text) = e2fsck_check(img);
    assert_eq!(code, 0, "{}: e2fsck -fn:\n{text}", img.display());
    let pct = text
        .split_once("% non-contiguous")
        .and_then(|(before, _)| before.rsplit_once('('))
        .map(|(_, pct)| pct)
        .unwrap_or_else(|| panic!("no non-contiguous figure in:\n{text}"));
    (pct.trim().parse::<f64>().unwrap() * 10.0).round() as u32
}

/// Fragments of every file (FIEMAP extents not physically after the one
/// before), summed, as the kernel's read-only mount of `img` reports them;
/// and the files in more than one piece.
fn fragments(img: &Path) -> (u64, Vec<String>) {
    let m = KernelMount::mount(img, true, "").unwrap();
    let (mut total, mut split) = (0, Vec::new());
    let mut stack = vec![m.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                let ext = kernel_fiemap(&File::open(e.path()).unwrap()).unwrap();
                let (mut end, mut n) = (None, 0);
                for x in &ext {
                    if end != Some(x.fe_physical) {
                        n += 1;
                    }
                    end = Some(x.fe_physical + x.fe_length);
                }
                total += n;
                if n > 1 {
                    let pieces: Vec<_> = ext
                        .iter()
                        .map(|x| (x.fe_logical, x.fe_physical, x.fe_length))
                        .collect();
                    split.push(format!("{}: {pieces:?}", e.file_name().to_string_lossy()));
                }
            }
        }
    }
    m.unmount().unwrap();
    (total, split)
}

#[test]
fn tree_layout_no_worse_than_the_kernel() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    let tree = tree();
    let empty = tempfile_path("layout-empty").with_extension("img");
    let st = std::process::Command::new("mke2fs")
        .args(["-F", "-q", "-t", "ext4", "-N", "80000"])
        .arg(&empty)
        .arg("1200M")
        .output()
        .unwrap();
    assert!(st.status.success(), "mke2fs: {st:?}");
    let ours = tempfile_path("layout-ours").with_extension("img");
    let theirs = tempfile_path("layout-kernel").with_extension("img");
    std::fs::copy(&empty, &ours).unwrap();
    std::fs::rename(&empty, &theirs).unwrap();
    write_ours(&ours, &tree);
    write_kernel(&theirs, &tree);
    let (nc_ours, nc_kernel) = (noncontiguous(&ours), noncontiguous(&theirs));
    let ((fr_ours, split), (fr_kernel, _)) = (fragments(&ours), fragments(&theirs));
    eprintln!(
        "non-contiguous: ours {:.1}%, kernel {:.1}%; fragments: ours {fr_ours}, kernel {fr_kernel}",
        nc_ours as f64 / 10.0,
        nc_kernel as f64 / 10.0
    );
    let _ = std::fs::remove_file(&ours);
    let _ = std::fs::remove_file(&theirs);
    assert!(
        nc_ours <= nc_kernel && fr_ours <= fr_kernel,
        "ours more fragmented than the kernel's: non-contiguous {nc_ours} vs {nc_kernel} (tenths of %), \
         fragments {fr_ours} vs {fr_kernel}; our files in pieces (logical, physical, length):\n{}",
        split.join("\n")
    );
}
