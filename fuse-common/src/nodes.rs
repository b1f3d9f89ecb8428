//! FUSE node ids and ext4 inode numbers. Node ids are inode numbers,
//! except that FUSE's root id 1 stands for ext4's root inode 2; node id 2
//! is therefore never handed out, and a directory entry naming inode 1
//! (the bad-blocks inode) or 0 is damage. A hard-linked file is one node
//! whatever name reaches it, so there is no node table to keep.

use ext4_engine::{errno, Error, InodeNo, Object};

/// FUSE's id of the root directory.
pub const ROOT_ID: u64 = 1;

/// The inode a request's node id names; `EINVAL` for 0, `ESTALE` for an
/// id no reply ever handed out (2, or past 32 bits). Linux numbering.
pub fn nodeid_to_ino(nodeid: u64) -> Result<InodeNo, i32> {
    match nodeid {
        ROOT_ID => Ok(InodeNo::ROOT),
        0 => Err(errno::EINVAL),
        n if n == u64::from(InodeNo::ROOT.0) => Err(errno::ESTALE),
        n => u32::try_from(n).map(InodeNo).map_err(|_| errno::ESTALE),
    }
}

/// The node id an inode is handed out as; reserved inodes 0 and 1 (which
/// would alias FUSE's root) are corruption of the entry naming them.
pub fn ino_to_nodeid(ino: InodeNo) -> Result<u64, Error> {
    match ino {
        InodeNo::ROOT => Ok(ROOT_ID),
        InodeNo(0 | 1) => Err(Error::corrupt(
            Object::Inode(ino),
            "directory entry names a reserved inode",
        )),
        n => Ok(u64::from(n.0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_reserved_ids() {
        assert_eq!(nodeid_to_ino(1), Ok(InodeNo(2)));
        assert_eq!(nodeid_to_ino(2), Err(errno::ESTALE));
        assert_eq!(nodeid_to_ino(0), Err(errno::EINVAL));
        assert_eq!(nodeid_to_ino(12), Ok(InodeNo(12)));
        assert_eq!(nodeid_to_ino(1 << 40), Err(errno::ESTALE));
        assert_eq!(ino_to_nodeid(InodeNo(2)).unwrap(), 1);
        assert_eq!(ino_to_nodeid(InodeNo(12)).unwrap(), 12);
        assert!(ino_to_nodeid(InodeNo(1)).unwrap_err().is_corruption());
    }
}
