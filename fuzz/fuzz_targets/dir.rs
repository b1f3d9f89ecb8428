//! Directory blocks: the entry parser on every block, readdir with cookies,
//! linear and hash-tree lookups (present and absent names, colliding
//! hashes), and the dx hash itself.
#![no_main]
use ext4_engine::test_support::{
    dx_hash, entry_area, is_dx_node, leaf_checksum_ok, Entries, HashVersion,
};
use ext4_engine::{FileType, Object, PhysBlock};
use ext4_fuzz::mutate::Kind;
use libfuzzer_sys::fuzz_target;

ext4_fuzz::image_mutator!(&[
    (Kind::Dir, 40),
    (Kind::DxNode, 40),
    (Kind::IBlock, 10),
    (Kind::InodeTable, 5)
]);

fuzz_target!(|data: &[u8]| {
    for bs in [1024usize, 4096] {
        for chunk in data.chunks(bs).take(512) {
            for e in Entries::new(entry_area(chunk), 0, u32::MAX, Object::Block(PhysBlock(0))) {
                if e.is_err() {
                    break;
                }
            }
            let _ = leaf_checksum_ok(chunk, 0);
            let _ = is_dx_node(chunk, 1);
        }
    }
    if let Some(name) = data.get(1100..1100 + 40) {
        for v in 0..6u8 {
            if let Some(h) = HashVersion::from_disk(v) {
                let _ = dx_hash(name, h, [1, 2, 3, 4]);
                let _ = dx_hash(name, h.with_unsigned(true), [0; 4]);
            }
        }
    }
    ext4_fuzz::both(data, |v| {
        for ino in ext4_fuzz::inode_numbers(v) {
            let Ok(a) = v.getattr(ino) else { continue };
            if a.kind != FileType::Directory {
                continue;
            }
            let mut names = Vec::new();
            let mut cookies = Vec::new();
            let _ = v.readdir(ino, 0, &mut |e| {
                names.push(e.name.to_vec());
                cookies.push(e.next);
                names.len() < 4000
            });
            for c in cookies.iter().step_by(7) {
                let mut n = 0;
                let _ = v.readdir(ino, *c, &mut |_| {
                    n += 1;
                    n < 16
                });
            }
            let _ = v.readdir(ino, u64::MAX, &mut |_| true);
            for n in names.iter().take(1000) {
                let _ = v.lookup_ino(ino, n);
                // A neighbour name: same hash bucket often, absent.
                let mut m = n.clone();
                m.push(b'~');
                let _ = v.lookup_ino(ino, &m);
            }
            for n in [&b"absent"[..], b".", b"..", &[b'a'; 255], &[b'a'; 256], b""] {
                let _ = v.lookup_ino(ino, n);
            }
            let _ = v.take_reports();
        }
    });
});
