//! Extent-tree and indirect-map walks: map_block/map_leaf over each file's
//! logical range, reads, SEEK_DATA/SEEK_HOLE, iomap answers (checked
//! against the kernel's rules) and whole-file mappings.
#![no_main]
use ext4_engine::test_support::ExtentNode as Node;
use ext4_engine::{FileBlock, FileType, Object, PhysBlock};
use ext4_fuzz::mutate::Kind;
use ext4_fuzz::walk::{self, Limits, Stats};
use libfuzzer_sys::fuzz_target;

ext4_fuzz::image_mutator!(&[
    (Kind::Extent, 40),
    (Kind::IBlock, 40),
    (Kind::Indirect, 30),
    (Kind::InodeTable, 5)
]);

fuzz_target!(|data: &[u8]| {
    // The node parser alone, on every block-aligned slice that starts with
    // the extent magic.
    for chunk in data.chunks(1024) {
        if chunk.len() >= 12 && chunk[0] == 0x0a && chunk[1] == 0xf3 {
            if let Ok(n) = Node::parse(chunk, None, Object::Block(PhysBlock(0))) {
                for i in 0..n.entries {
                    let _ = (n.extent(i), n.index(i), n.key(i));
                }
                let _ = n.search(FileBlock(0));
                let _ = n.search(FileBlock(u32::MAX));
            }
        }
    }
    let lim = Limits {
        read_bytes: 8192,
        mappings: 256,
        ..Limits::default()
    };
    ext4_fuzz::both(data, |v| {
        let mut st = Stats::default();
        for ino in ext4_fuzz::inode_numbers(v) {
            let Ok(inode) = v.inode(ino) else { continue };
            let Ok(a) = v.getattr(ino) else { continue };
            if !matches!(
                a.kind,
                FileType::Regular | FileType::Directory | FileType::Symlink
            ) {
                continue;
            }
            // Walk the map run by run, at most 512 runs.
            let mut lblk = 0u64;
            for _ in 0..512 {
                let Some(l) = FileBlock::at(lblk) else {
                    break;
                };
                match v.map_block(&inode, l) {
                    Ok(r) => {
                        assert!(r.len() > 0, "map_block returned an empty run");
                        lblk += r.len();
                    }
                    Err(_) => break,
                }
            }
            for l in [0, 1, 12, 13, 268, 269, 65548, u32::MAX].map(FileBlock) {
                if let Ok((start, runs)) = v.map_leaf(&inode, l) {
                    let total: u64 = runs.iter().map(|r| r.len()).sum();
                    assert!(
                        start <= l && l.get() < start.get() + total.max(1),
                        "map_leaf misses its block"
                    );
                }
            }
            if a.kind == FileType::Regular {
                walk::resolve(v, ext4_engine::InodeNo::ROOT, b"x", &lim, &mut st);
            }
        }
        // Reads, seeks and mappings per file through the walk's helpers.
        let _ = walk::walk(
            v,
            &Limits {
                check: false,
                max_entries: 2000,
                ..lim
            },
        );
    });
});
