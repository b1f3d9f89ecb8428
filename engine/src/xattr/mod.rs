//! Extended attributes: the on-disk format of the in-inode area and of
//! xattr blocks ([`format`]), and the Volume's operations on them
//! ([`read`]: `getxattr`, `listxattr`). Writes will get their own room.

mod format;
mod read;

pub use format::*;
