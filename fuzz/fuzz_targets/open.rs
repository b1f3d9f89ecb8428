//! Opening: superblock validation, descriptor reads and checks, the
//! open-time counters, feature handling; and the pure superblock parser on
//! the raw bytes against device sizes around the image's.
#![no_main]
use ext4_engine::test_support::SUPERBLOCK_SIZE;
use ext4_engine::{RawSuperblock, Superblock};
use ext4_fuzz::mutate::Kind;
use libfuzzer_sys::fuzz_target;
use zerocopy::FromBytes;

ext4_fuzz::image_mutator!(&[
    (Kind::Super, 40),
    (Kind::GroupDescs, 40),
    (Kind::InodeTable, 2)
]);

fuzz_target!(|data: &[u8]| {
    if let Some(bytes) = data.get(1024..1024 + SUPERBLOCK_SIZE) {
        if let Ok(raw) = RawSuperblock::read_from_bytes(bytes) {
            for size in [0, data.len() as u64, u64::MAX] {
                if let Ok(sb) = Superblock::parse(&raw, bytes, size) {
                    for g in [0, 1, sb.group_count.saturating_sub(1)] {
                        let _ = sb.group_has_super(g);
                        let _ = sb.desc_block(g);
                    }
                    let _ = sb.max_file_size(true);
                    let _ = sb.max_file_size(false);
                }
            }
        }
    }
    ext4_fuzz::both(data, |v| {
        let _ = v.statfs();
        let _ = v.iomap_config();
        let _ = v.maxbytes();
        for w in v.warnings() {
            let _ = format!("{w}");
        }
        for g in 0..v.sb().group_count.min(4096) {
            let _ = v.group_desc(g);
        }
        let _ = v.getattr(ext4_engine::InodeNo::ROOT);
        let _ = v.lookup_ino(ext4_engine::InodeNo::ROOT, b"lost+found");
    });
});
