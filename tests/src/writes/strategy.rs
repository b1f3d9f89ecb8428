//! Random operation sequences for the write tests (proptest strategies
//! over [`Op`]): file operations, the namespace, xattrs and ACLs.

use proptest::prelude::*;

use super::Op;

/// File operations (create, write, truncate, attributes, fallocate, commit).
pub fn file_op() -> impl Strategy<Value = Op> {
    let len = prop_oneof![8 => 0u32..20_000, 2 => 0u32..(2 << 20)];
    let off = prop_oneof![8 => 0u32..(1 << 20), 1 => 0u32..(64 << 20)];
    prop_oneof![
        3 => (0u8..6, 0u16..64, any::<u8>(), 0u16..0o10000, any::<bool>())
            .prop_map(|(dir, name, pad, mode, umask)| Op::Create { dir, name, pad, mode, umask }),
        5 => (any::<u16>(), off, len, any::<u8>())
            .prop_map(|(file, off, len, seed)| Op::Write { file, off, len, seed }),
        1 => (any::<u16>(), 0u32..(3 << 20)).prop_map(|(file, size)| Op::Truncate { file, size }),
        1 => (any::<u16>(), 0u16..0o10000).prop_map(|(node, mode)| Op::Chmod { node, mode }),
        1 => (any::<u16>(), 0u16..100, 0u16..100).prop_map(|(node, uid, gid)| Op::Chown { node, uid, gid }),
        1 => (any::<u16>(), any::<i32>(), any::<i32>(), 0u32..1_000_000_000)
            .prop_map(|(node, atime, mtime, nsec)| Op::Utimes { node, atime, mtime, nsec }),
        4 => (
            any::<u16>(),
            any::<u8>(),
            prop_oneof![4 => 0u32..(64 << 10), 2 => 0u32..(1 << 20), 1 => 0u32..(4 << 20)],
            prop_oneof![4 => 1u32..(64 << 10), 2 => 1u32..(1 << 20), 1 => 0u32..(8 << 20)],
            any::<bool>(),
        )
            .prop_map(|(file, mode, off, len, aligned)| Op::Fallocate { file, mode, off, len, aligned }),
        1 => Just(Op::Commit),
    ]
}

/// The namespace (mkdir, mknod, symlink, link, unlink, rmdir, rename,
/// bursts and prunes of names).
pub fn namespace_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..6, 0u16..24, 0u16..0o10000, any::<bool>())
            .prop_map(|(dir, name, mode, umask)| Op::Mkdir { dir, name, mode, umask }),
        2 => (0u8..6, 0u16..64, any::<u8>(), any::<u16>(), any::<u32>())
            .prop_map(|(dir, name, kind, major, minor)| Op::Mknod { dir, name, kind, major, minor }),
        2 => (0u8..6, 0u16..64, any::<u16>(), any::<u8>())
            .prop_map(|(dir, name, len, seed)| Op::Symlink { dir, name, len, seed }),
        2 => (any::<u16>(), 0u8..6, 0u16..64).prop_map(|(node, dir, name)| Op::Link { node, dir, name }),
        2 => any::<u16>().prop_map(|entry| Op::Unlink { entry }),
        2 => any::<u16>().prop_map(|entry| Op::Rmdir { entry }),
        4 => (any::<u16>(), 0u8..6, 0u16..24, 0u8..3)
            .prop_map(|(entry, dir, name, flags)| Op::Rename { entry, dir, name, flags }),
        1 => (0u8..6, 0u16..400, any::<u8>()).prop_map(|(dir, count, prefix)| Op::Many { dir, count, prefix }),
        1 => (0u8..6, any::<u8>()).prop_map(|(dir, step)| Op::Prune { dir, step }),
    ]
}

/// Extended attributes and ACLs.
pub fn xattr_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<u16>(), any::<u8>(), any::<u8>(), any::<u16>(), any::<u8>(), any::<u8>())
            .prop_map(|(node, ns, name, len, seed, flags)| Op::SetXattr { node, ns, name, len, seed, flags }),
        2 => (any::<u16>(), any::<u8>(), any::<u8>()).prop_map(|(node, ns, name)| Op::RemoveXattr { node, ns, name }),
        2 => (any::<u16>(), any::<bool>(), any::<u8>()).prop_map(|(node, default, seed)| Op::SetAcl { node, default, seed }),
    ]
}

/// Any operation: files, the namespace, xattrs.
pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![3 => file_op(), 4 => namespace_op(), 2 => xattr_op()]
}
