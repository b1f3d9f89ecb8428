//! What the engine tells frontends about an inode, in OS-neutral terms.

use crate::numbers::InodeNo;

/// Seconds since the epoch (may be negative or past 2038) plus nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp {
    pub sec: i64,
    pub nsec: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileType {
    Regular,
    Directory,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

impl FileType {
    /// From the `S_IFMT` bits of an ext4 `i_mode`.
    pub fn from_mode(mode: u16) -> Option<FileType> {
        Some(match mode & 0xF000 {
            0x8000 => FileType::Regular,
            0x4000 => FileType::Directory,
            0xA000 => FileType::Symlink,
            0x2000 => FileType::CharDevice,
            0x6000 => FileType::BlockDevice,
            0x1000 => FileType::Fifo,
            0xC000 => FileType::Socket,
            _ => return None,
        })
    }

    /// From the `file_type` byte of a directory entry (`filetype` feature).
    pub fn from_dirent(ft: u8) -> Option<FileType> {
        Some(match ft {
            1 => FileType::Regular,
            2 => FileType::Directory,
            3 => FileType::CharDevice,
            4 => FileType::BlockDevice,
            5 => FileType::Fifo,
            6 => FileType::Socket,
            7 => FileType::Symlink,
            _ => return None,
        })
    }

    /// The `d_type` value (`DT_*`), the same on Linux and FreeBSD.
    pub fn dtype(self) -> u8 {
        match self {
            FileType::Fifo => 1,
            FileType::CharDevice => 2,
            FileType::Directory => 4,
            FileType::BlockDevice => 6,
            FileType::Regular => 8,
            FileType::Symlink => 10,
            FileType::Socket => 12,
        }
    }

    /// The `S_IFMT` bits.
    pub fn mode_bits(self) -> u32 {
        match self {
            FileType::Fifo => 0o010000,
            FileType::CharDevice => 0o020000,
            FileType::Directory => 0o040000,
            FileType::BlockDevice => 0o060000,
            FileType::Regular => 0o100000,
            FileType::Symlink => 0o120000,
            FileType::Socket => 0o140000,
        }
    }
}

/// The attributes of an inode, as `stat`/`statx` report them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: InodeNo,
    pub kind: FileType,
    /// Full `st_mode`: type bits and permission bits.
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Allocated space in 512-byte units, as `st_blocks`.
    pub blocks: u64,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    /// Creation time, when the inode is large enough to record it.
    pub crtime: Option<Timestamp>,
    /// Device number of a character or block device, split.
    pub rdev_major: u32,
    pub rdev_minor: u32,
    /// ext4 inode flags (`EXT4_*_FL`).
    pub flags: u32,
    pub generation: u32,
    /// Preferred I/O size: the filesystem block size.
    pub blksize: u32,
}

impl Attr {
    /// Linux `st_rdev` encoding (`makedev`).
    pub fn rdev_linux(&self) -> u64 {
        let (ma, mi) = (self.rdev_major as u64, self.rdev_minor as u64);
        ((ma & 0xfffff000) << 32) | ((ma & 0xfff) << 8) | ((mi & 0xffffff00) << 12) | (mi & 0xff)
    }
}

/// `statfs` answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatFs {
    pub block_size: u32,
    pub blocks: u64,
    pub blocks_free: u64,
    /// Free blocks available to unprivileged users (free minus reserved).
    pub blocks_available: u64,
    pub inodes: u64,
    pub inodes_free: u64,
    pub name_max: u32,
    /// Filesystem id, folded from the UUID the way the kernel's ext4 does.
    pub fsid: u64,
}
