//! The extent mapping cache (`docs/mapping-cache.md`): per inode, an
//! in-memory index of the file's mappings (file range -> device range, type,
//! flags) in a read fork and an optional write fork, following the rules of
//! the Linux kernel's FUSE iomap mapping cache so the server knows exactly
//! what the kernel may hold.
//!
//! - [`record`]: the 32-byte [`Mapping`] record and the merge rules.
//! - [`btree`]: [`ForkTree`], one fork's records in a B+tree.
//! - [`inode_mappings`]: [`InodeMappings`], two forks and a sequence counter.
//! - [`cache`]: [`MappingCache`], all inodes under a byte budget, LRU.

mod btree;
mod cache;
mod inode_mappings;
#[doc(hidden)]
pub mod model;
mod record;

#[cfg(test)]
mod tests;

pub use btree::{Cursor, Find, ForkTree, Iter, Shape};
pub use cache::{MappingCache, INODE_OVERHEAD};
pub use inode_mappings::InodeMappings;
pub use record::{BadRecord, MapType, Mapping, DEV_NULL, MAX_LENGTH, NULL_ADDR, OFFSET_LIMIT};

/// Which of an inode's two mapping forks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fork {
    /// Where reads (and pure overwrites) go.
    Read,
    /// Where out-of-place writes go; absent means "all writes are pure
    /// overwrites".
    Write,
}

/// Answer of a cache lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A cached mapping covers the offset; the `u64` is the inode's
    /// sequence counter at the time, a cookie to revalidate the mapping
    /// with [`MappingCache::seq`] before trusting it again.
    Hit(Mapping, u64),
    /// Nothing cached covers the offset; `next` is the first cached mapping
    /// starting after it, if any.
    Miss { next: Option<Mapping> },
    /// The write fork is absent: all writes are pure overwrites.
    NoFork,
}
