//! Inode decoding: the record parser and checksum on every inode-sized
//! slice of the inode tables, and getattr through the volume.
#![no_main]
use ext4_engine::test_support::inode_checksum_ok;
use ext4_engine::Inode;
use ext4_fuzz::mutate::Kind;
use libfuzzer_sys::fuzz_target;

ext4_fuzz::image_mutator!(&[
    (Kind::InodeTable, 30),
    (Kind::IBlock, 20),
    (Kind::IBody, 10),
    (Kind::Super, 2)
]);

fuzz_target!(|data: &[u8]| {
    ext4_fuzz::both(data, |v| {
        let sb = v.sb().clone();
        for ino in ext4_fuzz::inode_numbers(v) {
            if let Ok(bytes) = v.inode_bytes(ino) {
                let _ = inode_checksum_ok(&sb, ino, &bytes);
                // Short and odd-length records too.
                for cut in [bytes.len(), 128, 129, 100, 0] {
                    if let Some(b) = bytes.get(..cut) {
                        if let Ok(i) = Inode::parse(&sb, ino, b) {
                            let _ = i.attr(&sb);
                            let _ = i.rdev();
                            let _ = i.ibody().len();
                        }
                    }
                }
            }
            match v.getattr(ino) {
                Ok(a) => {
                    let _ = a.rdev_linux();
                }
                Err(e) => {
                    let _ = format!("{e}");
                }
            }
        }
    });
});
