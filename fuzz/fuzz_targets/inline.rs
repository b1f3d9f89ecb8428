//! inline_data: reads of inline files, listing and lookups in inline
//! directories (entries in i_block and in system.data), iomap answers.
#![no_main]
use ext4_engine::inode_flags as flags;
use ext4_engine::iomap::op;
use ext4_engine::FileType;
use ext4_fuzz::mutate::Kind;
use libfuzzer_sys::fuzz_target;

ext4_fuzz::image_mutator!(&[
    (Kind::IBlock, 40),
    (Kind::IBody, 40),
    (Kind::InodeTable, 10)
]);

fuzz_target!(|data: &[u8]| {
    ext4_fuzz::both(data, |v| {
        for ino in ext4_fuzz::inode_numbers(v) {
            let Ok(inode) = v.inode(ino) else { continue };
            if !inode.has_flag(flags::INLINE_DATA) {
                continue;
            }
            let mut buf = [0u8; 256];
            for off in [0u64, 1, 59, 60, 61, 200, u64::MAX] {
                if let Ok(n) = v.read(ino, off, &mut buf) {
                    assert!(n <= buf.len());
                }
            }
            let _ = v.seek(ino, 0, ext4_engine::Whence::Hole);
            let _ = v.iomap_begin(ino, 0, 4096, op::REPORT, 1);
            let _ = v.readlink(ino);
            if inode.kind == Some(FileType::Directory) {
                let mut names = Vec::new();
                let mut cookies = Vec::new();
                let _ = v.readdir(ino, 0, &mut |e| {
                    names.push(e.name.to_vec());
                    cookies.push(e.next);
                    names.len() < 1000
                });
                for c in cookies {
                    let _ = v.readdir(ino, c, &mut |_| false);
                }
                for n in names {
                    let _ = v.lookup_ino(ino, &n);
                }
                let _ = v.lookup_ino(ino, b"absent");
            }
            let _ = v.listxattr(ino);
            let _ = v.getxattr(ino, b"system.data");
        }
        let _ = v.take_reports();
    });
});
