//! A portable ext4 engine: `#![no_std]` + `alloc`, every cache bounded by a
//! budget fixed when a volume is opened, every on-disk value checked before
//! use. Frontends talk to it through [`Volume`], keyed by [`InodeNo`].
//!
//! The public API is what a frontend needs: the [`Volume`] and what its
//! methods take and return; the decoded on-disk structures an inspection
//! tool shows ([`Inode`], [`Superblock`], [`GroupDesc`], [`Run`]); the
//! write operations' vocabulary ([`Cred`], [`SetAttr`], [`falloc`], the
//! rename and xattr flags, [`OpenFiles`], the iomap write calls'
//! [`WriteMap`]); the
//! consistency check ([`fsck`]); the FUSE iomap vocabulary ([`iomap`],
//! [`mapping_cache`]); the request policy every frontend applies
//! ([`policy`]); and the mount options both FUSE frontends share
//! ([`mount_opts`]). Everything else is private; the parsers that fuzz
//! targets and benchmarks drive directly are in the hidden
//! [`test_support`] module. The project's `docs/architecture.md` draws the
//! layers.

#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

mod acl;
mod allocator;
mod attr;
mod block_cache;
mod blockmap;
mod checksum;
mod device;
mod dir;
mod dx_hash;
mod error;
mod extent;
mod file;
#[cfg(feature = "std")]
mod file_device;
mod group_desc;
mod htree;
mod inline;
mod inode;
mod inode_cache;
mod layout;
mod mmp;
mod numbers;
mod superblock;
mod txn;
mod volume;
mod writable;
mod write;
mod xattr;

pub mod features;
pub mod fsck;
pub mod iomap;
pub mod journal;
pub mod mapping_cache;
pub mod mkfs;
pub mod mount_opts;
pub mod name_index;
pub mod partitions;
pub mod policy;

/// POSIX ACLs in their xattr form (`system.posix_acl_*`), decoded.
pub use acl::{
    xattr_entries as acl_entries, ACL_GROUP, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER, ACL_USER,
    ACL_USER_OBJ,
};
pub use attr::{Attr, FileType, StatFs, Timestamp};
pub use block_cache::CacheStats;
pub use blockmap::Run;
pub use device::{BlockDevice, MemDevice};
pub use error::{errno, Error, IoError, Object, Result};
pub use file::{FilePiece, FilePieces};
#[cfg(feature = "std")]
pub use file_device::FileDevice;
pub use group_desc::GroupDesc;
pub use inode::{flags as inode_flags, Inode};
pub use inode_cache::InodeCacheStats;
pub use numbers::{FileBlock, InodeNo, PhysBlock};
pub use superblock::{RawSuperblock, Superblock, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE};
pub use volume::{
    DirEntry, OnDamage, OpenOptions, Recovery, Volume, Warning, Whence, DEFAULT_COMMIT_INTERVAL,
    DEFAULT_REPLAY_BUDGET,
};
pub use writable::Cred;
pub use write::chattr;
pub use write::namespace::{RENAME_EXCHANGE, RENAME_NOREPLACE, RENAME_WHITEOUT};
pub use write::orphan::OpenFiles;
pub use write::xattr::{XATTR_CREATE, XATTR_REPLACE};
pub use write::{
    falloc, AtimeMode, AtimeRule, Edges, SetAttr, SetTime, WriteMap, WriteRun, MAX_WRITE_RUNS,
};

/// Internals that the fuzz targets, benchmarks and tests drive directly
/// (the on-disk parsers, the caches on their own). Not an API: it changes
/// whenever the engine does.
#[doc(hidden)]
pub mod test_support {
    pub use crate::acl::{disk_to_xattr, xattr_to_disk};
    pub use crate::block_cache::BlockCache;
    pub use crate::checksum::crc32c;
    pub use crate::dir::{entry_area, is_dx_node, leaf_checksum_ok, Entries};
    pub use crate::dx_hash::{dx_hash, HashVersion};
    pub use crate::extent::Node as ExtentNode;
    pub use crate::inode::checksum_ok as inode_checksum_ok;
    pub use crate::inode_cache::{InodeCache, WAYS as INODE_CACHE_WAYS};
    /// The jbd2 on-disk format, for tests and fuzz targets that write
    /// journals of their own.
    pub use crate::journal::format as journal_format;
    pub use crate::superblock::{FLAG_UNSIGNED_HASH, SUPERBLOCK_SIZE};
    pub use crate::xattr::{
        block_hash, block_header, entry_hash, full_name, parse_block, parse_ibody, split_name,
        verify_block_checksum, XattrEntry, XattrValue,
    };
}
