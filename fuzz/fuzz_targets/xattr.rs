//! Extended attributes: the in-inode and block parsers on raw regions, ACL
//! translation of every value, and listxattr/getxattr through the volume
//! (xattr blocks, EA inodes).
#![no_main]
use ext4_engine::test_support::{self as xattr, disk_to_xattr, xattr_to_disk};
use ext4_engine::{InodeNo, PhysBlock};
use ext4_fuzz::mutate::Kind;
use libfuzzer_sys::fuzz_target;

ext4_fuzz::image_mutator!(&[(Kind::Xattr, 40), (Kind::IBody, 40), (Kind::InodeTable, 5)]);

fn values(entries: &[xattr::XattrEntry<'_>]) {
    for e in entries {
        if let xattr::XattrValue::Inline(v) = e.value {
            let _ = disk_to_xattr(v, InodeNo(1));
        }
        let _ = xattr::full_name(e.index, e.name);
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4096 {
        // Small inputs: the parsers alone.
        if let Ok(e) = xattr::parse_block(data, PhysBlock(1)) {
            values(&e);
        }
        if let Ok(e) = xattr::parse_ibody(data, InodeNo(1)) {
            values(&e);
        }
        let _ = disk_to_xattr(data, InodeNo(1));
        if let Ok(x) = disk_to_xattr(data, InodeNo(1)) {
            if !x.is_empty() {
                // What we translate out must translate back.
                xattr_to_disk(&x).ok();
            }
        }
        return;
    }
    for chunk in data.chunks(1024).take(1024) {
        if chunk[..4] == 0xEA02_0000u32.to_le_bytes() {
            if let Ok(e) = xattr::parse_block(chunk, PhysBlock(1)) {
                values(&e);
            }
            let _ = xattr::verify_block_checksum(chunk, PhysBlock(1), 0);
        }
    }
    ext4_fuzz::both(data, |v| {
        for ino in ext4_fuzz::inode_numbers(v) {
            if let Ok(inode) = v.inode(ino) {
                if let Ok(e) = xattr::parse_ibody(inode.ibody(), ino) {
                    values(&e);
                }
            }
            if let Ok(names) = v.listxattr(ino) {
                for n in names {
                    let _ = v.getxattr(ino, &n);
                }
            }
            let _ = v.getxattr(ino, b"system.posix_acl_access");
            let _ = v.getxattr(ino, b"system.posix_acl_default");
            let _ = v.getxattr(ino, b"user.huge");
        }
    });
});
