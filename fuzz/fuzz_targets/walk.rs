//! The whole volume: every directory, file, xattr and symlink reachable
//! from the root (cycles tracked), every other inode, then check and
//! mappings; with checksums enforced and ignored.
#![no_main]
use ext4_fuzz::mutate::Kind;
use ext4_fuzz::walk::{self, Limits};
use libfuzzer_sys::fuzz_target;

ext4_fuzz::image_mutator!(&[
    (Kind::Super, 5),
    (Kind::GroupDescs, 5),
    (Kind::InodeTable, 10),
    (Kind::IBlock, 20),
    (Kind::IBody, 10),
    (Kind::Extent, 20),
    (Kind::Dir, 20),
    (Kind::DxNode, 20),
    (Kind::Xattr, 20),
    (Kind::Indirect, 20)
]);

fuzz_target!(|data: &[u8]| {
    let lim = Limits {
        read_bytes: 16 << 10,
        max_entries: 5000,
        ..Limits::default()
    };
    ext4_fuzz::both(data, |v| {
        walk::walk(v, &lim);
    });
});
