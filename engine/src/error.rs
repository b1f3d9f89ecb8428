//! Errors of the engine. A corrupt object is an error for that object only:
//! the error names it so a log line can say what is wrong and where.

use core::fmt;

use crate::numbers::{FileBlock, InodeNo, PhysBlock};

/// The on-disk object an error concerns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Object {
    Superblock,
    GroupDesc(u32),
    Inode(InodeNo),
    Block(PhysBlock),
    /// A directory entry inside directory inode `dir`, in its logical block `lblk`.
    DirBlock {
        dir: InodeNo,
        lblk: FileBlock,
    },
    Device,
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Object::Superblock => write!(f, "superblock"),
            Object::GroupDesc(g) => write!(f, "group descriptor {g}"),
            Object::Inode(i) => write!(f, "inode {i}"),
            Object::Block(b) => write!(f, "block {b}"),
            Object::DirBlock { dir, lblk } => write!(f, "directory inode {dir} block {lblk}"),
            Object::Device => write!(f, "device"),
        }
    }
}

/// A device-level I/O failure, carried as an errno value so frontends can
/// hand it straight back to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoError {
    pub errno: i32,
}

impl IoError {
    pub const EIO: IoError = IoError { errno: errno::EIO };
}

/// errno values (Linux numbering; FreeBSD agrees on every one used here
/// except where the frontend maps them).
pub mod errno {
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const EIO: i32 = 5;
    pub const E2BIG: i32 = 7;
    pub const ENOMEM: i32 = 12;
    pub const EACCES: i32 = 13;
    pub const EEXIST: i32 = 17;
    pub const ENOTDIR: i32 = 20;
    pub const EISDIR: i32 = 21;
    pub const EINVAL: i32 = 22;
    pub const EFBIG: i32 = 27;
    pub const ENOSPC: i32 = 28;
    pub const EROFS: i32 = 30;
    pub const ERANGE: i32 = 34;
    pub const ENAMETOOLONG: i32 = 36;
    pub const ENOSYS: i32 = 38;
    pub const ENOTEMPTY: i32 = 39;
    pub const ELOOP: i32 = 40;
    pub const ENODATA: i32 = 61;
    pub const EBADMSG: i32 = 74;
    pub const EOVERFLOW: i32 = 75;
    pub const EOPNOTSUPP: i32 = 95;
    pub const ESTALE: i32 = 116;
    pub const EUCLEAN: i32 = 117;
    pub const ENXIO: i32 = 6;
    pub const EMLINK: i32 = 31;
    pub const ENODEV: i32 = 19;
    pub const ESPIPE: i32 = 29;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The device failed.
    Io(IoError),
    /// An on-disk structure is inconsistent: `what` says which field or rule.
    Corrupt {
        object: Object,
        what: &'static str,
    },
    /// A checksum did not match (and checksums are not ignored).
    Checksum {
        object: Object,
    },
    /// The filesystem uses something this engine does not implement.
    Unsupported {
        what: &'static str,
    },
    /// An incompat feature bit this engine does not know.
    UnknownIncompat {
        bits: u32,
    },
    NotFound,
    /// The caller may not do this (EACCES).
    PermissionDenied,
    /// Only a privileged caller may do this, or the inode forbids it
    /// (immutable, append-only), or this kind of object (a hard link to a
    /// directory, `user.` attributes on a device node): EPERM.
    NotPermitted,
    NotDir,
    IsDir,
    NotSymlink,
    NameTooLong,
    /// No such extended attribute.
    NoData,
    /// The caller's buffer is too small.
    Range,
    /// More than the interface can pass at all (E2BIG): an extended
    /// attribute value over 64 KiB.
    TooBig,
    InvalidArgument,
    ReadOnly,
    /// SEEK_DATA/SEEK_HOLE found nothing at or after the offset (ENXIO).
    NoSuchOffset,
    /// The image is not an ext2/3/4 filesystem at all.
    NotExt4,
    /// The device is shorter than the filesystem its superblock describes
    /// (a truncated image or a wrong partition size): `device` of
    /// `filesystem` bytes.
    Truncated {
        device: u64,
        filesystem: u64,
    },
    /// The journal cannot be replayed (or the journal policy refuses to).
    Journal(crate::journal::JournalError),
    /// No free blocks or inodes (for this caller).
    NoSpace,
    /// The name already exists.
    Exists,
    /// The directory is not empty.
    NotEmpty,
    /// The file would pass the largest size the filesystem allows.
    FileTooBig,
    /// The operation makes no sense on a pipe (ESPIPE).
    IllegalSeek,
    /// The operation needs a regular file (ENODEV, as `fallocate` on a
    /// device node).
    NoDevice,
    /// A read-write open refused: the filesystem uses `feature`, which the
    /// engine cannot yet keep consistent (`why`).
    NotWritable {
        feature: &'static str,
        why: &'static str,
    },
    /// The inode was deleted (no links left, not held open): a stale
    /// handle (ESTALE, as the kernel answers for a deleted inode number).
    Stale,
    /// The inode would pass the most links the filesystem keeps (EMLINK).
    TooManyLinks,
}

pub type Result<T, E = Error> = core::result::Result<T, E>;

impl Error {
    pub fn corrupt(object: Object, what: &'static str) -> Error {
        Error::Corrupt { object, what }
    }

    /// The errno the kernel's ext4 answers with for this error (Linux
    /// numbering): `EBADMSG` for a checksum (its `EFSBADCRC`), `EUCLEAN`
    /// for corruption (`EFSCORRUPTED`). What a particular request makes of
    /// it is [`crate::policy::errno_for`].
    pub fn errno(&self) -> i32 {
        use errno::*;
        match self {
            Error::Io(e) => e.errno,
            Error::Corrupt { .. } => EUCLEAN,
            Error::Checksum { .. } => EBADMSG,
            Error::PermissionDenied => EACCES,
            Error::NotPermitted => EPERM,
            Error::Unsupported { .. } | Error::UnknownIncompat { .. } => EOPNOTSUPP,
            Error::NotFound => ENOENT,
            Error::NotDir => ENOTDIR,
            Error::IsDir => EISDIR,
            Error::NotSymlink => EINVAL,
            Error::NameTooLong => ENAMETOOLONG,
            Error::NoData => ENODATA,
            Error::Range => ERANGE,
            Error::TooBig => E2BIG,
            Error::InvalidArgument => EINVAL,
            Error::ReadOnly => EROFS,
            Error::NotExt4 => EINVAL,
            // The kernel's mount: "block count exceeds size of device".
            Error::Truncated { .. } => EINVAL,
            Error::NoSuchOffset => ENXIO,
            Error::Journal(j) => j.errno(),
            Error::NoSpace => ENOSPC,
            Error::Exists => EEXIST,
            Error::NotEmpty => ENOTEMPTY,
            Error::FileTooBig => EFBIG,
            Error::IllegalSeek => ESPIPE,
            Error::NoDevice => ENODEV,
            Error::NotWritable { .. } => EROFS,
            Error::Stale => ESTALE,
            Error::TooManyLinks => EMLINK,
        }
    }

    /// Whether this error means the on-disk data is damaged.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            Error::Corrupt { .. } | Error::Checksum { .. } | Error::Truncated { .. }
        )
    }
}

impl From<crate::journal::JournalError> for Error {
    fn from(e: crate::journal::JournalError) -> Self {
        Error::Journal(e)
    }
}

impl From<IoError> for Error {
    fn from(e: IoError) -> Self {
        Error::Io(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "I/O error (errno {})", e.errno),
            Error::Corrupt { object, what } => write!(f, "{object} is corrupt: {what}"),
            Error::Checksum { object } => write!(f, "{object}: checksum does not match"),
            Error::Unsupported { what } => write!(f, "unsupported: {what}"),
            Error::UnknownIncompat { bits } => {
                write!(
                    f,
                    "unknown incompatible feature bits {bits:#x}; refusing to open"
                )
            }
            Error::NotFound => write!(f, "no such file or directory"),
            Error::PermissionDenied => write!(f, "permission denied"),
            Error::NotPermitted => write!(f, "operation not permitted"),
            Error::NotDir => write!(f, "not a directory"),
            Error::IsDir => write!(f, "is a directory"),
            Error::NotSymlink => write!(f, "not a symbolic link"),
            Error::NameTooLong => write!(f, "file name too long"),
            Error::NoData => write!(f, "no such extended attribute"),
            Error::Range => write!(f, "buffer too small"),
            Error::TooBig => write!(f, "argument list too long (an extended attribute value over 64 KiB)"),
            Error::InvalidArgument => write!(f, "invalid argument"),
            Error::ReadOnly => write!(f, "read-only filesystem"),
            Error::NoSuchOffset => write!(f, "no data or hole past this offset"),
            Error::NotExt4 => write!(f, "not an ext2/ext3/ext4 filesystem (bad superblock magic)"),
            Error::Truncated { device, filesystem } => write!(
                f,
                "image is shorter than the filesystem ({device} of {filesystem} bytes)"
            ),
            Error::Journal(j) => j.fmt(f),
            Error::NoSpace => write!(f, "no space left on the filesystem"),
            Error::Exists => write!(f, "file exists"),
            Error::NotEmpty => write!(f, "directory not empty"),
            Error::FileTooBig => write!(f, "file too large for this filesystem"),
            Error::IllegalSeek => write!(f, "illegal seek (a pipe)"),
            Error::NoDevice => write!(f, "not a regular file"),
            Error::NotWritable { feature, why } => write!(
                f,
                "cannot open read-write: the filesystem uses {feature}, which this engine cannot write yet ({why}); open it read-only"
            ),
            Error::Stale => write!(f, "stale file handle (the inode was deleted)"),
            Error::TooManyLinks => write!(f, "too many links"),
        }
    }
}
