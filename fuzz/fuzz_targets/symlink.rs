//! Symlinks: readlink of fast, slow and inline targets, and path
//! resolution through chains and loops (bounded as the VFS bounds it).
#![no_main]
use ext4_engine::FileType;
use ext4_fuzz::mutate::Kind;
use ext4_fuzz::walk::{self, Limits, Stats};
use libfuzzer_sys::fuzz_target;

ext4_fuzz::image_mutator!(&[
    (Kind::IBlock, 40),
    (Kind::InodeTable, 20),
    (Kind::Dir, 10),
    (Kind::Extent, 5)
]);

fuzz_target!(|data: &[u8]| {
    let lim = Limits::default();
    ext4_fuzz::both(data, |v| {
        let mut st = Stats::default();
        for ino in ext4_fuzz::inode_numbers(v) {
            let Ok(a) = v.getattr(ino) else { continue };
            if a.kind == FileType::Symlink {
                if let Ok(t) = v.readlink(ino) {
                    assert!(t.len() <= 4095 && !t.contains(&0));
                }
            }
        }
        for p in [
            &b"chain1"[..],
            b"loop_a",
            b"dir_link",
            b"fast_link",
            b"slow_link",
            b"abs_link",
            b"l",
        ] {
            walk::resolve(v, ext4_engine::InodeNo::ROOT, p, &lim, &mut st);
        }
    });
});
