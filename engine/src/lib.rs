//! A portable ext4 engine: `#![no_std]` + `alloc`, every cache bounded by a
//! budget fixed when a volume is opened, every on-disk value checked before
//! use. Frontends talk to it through [`volume::Volume`], keyed by inode number.

#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

pub mod acl;
pub mod allocator;
pub mod attr;
pub mod block_cache;
pub mod blockmap;
pub mod check;
pub mod checksum;
pub mod device;
pub mod dir;
pub mod dx_hash;
pub mod ea;
pub mod error;
pub mod extent;
pub mod features;
pub mod file;
#[cfg(feature = "std")]
pub mod file_device;
pub mod group_desc;
pub mod htree;
pub mod inline;
pub mod inode;
pub mod inode_cache;
pub mod iomap;
pub mod journal;
pub mod mapping_cache;
pub mod mmp;
pub mod mount_opts;
pub mod name_index;
pub mod numbers;
pub mod superblock;
pub mod txn;
pub mod volume;
pub mod writable;
pub mod write;
pub mod xattr;

pub use attr::{Attr, FileType, StatFs, Timestamp};
pub use device::{BlockDevice, MemDevice};
pub use error::{Error, IoError, Object, Result};
pub use numbers::{FileBlock, InodeNo, PhysBlock};
pub use volume::{DirEntry, OpenOptions, Recovery, Volume, Whence, ROOT_INO};
pub use writable::Cred;
pub use write::{SetAttr, SetTime};
