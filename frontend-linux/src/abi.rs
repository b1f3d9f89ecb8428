//! The FUSE wire protocol (Linux `include/uapi/linux/fuse.h`), written out as
//! `#[repr(C)]` zerocopy structs. Every struct's size and field offsets are
//! pinned by the unit tests at the bottom: the kernel reads these bytes
//! blindly, so a layout slip would be silent corruption.
//!
//! Requests are parsed with `read_from_prefix` (a copy of a few dozen bytes),
//! so the request buffer needs no particular alignment.

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// The protocol major version this server speaks.
pub const KERNEL_VERSION: u32 = 7;
/// The highest minor version this server knows on the plain path. 7.39
/// brought `FUSE_STATX`.
pub const KERNEL_MINOR_VERSION: u32 = 40;
/// The smallest request buffer the kernel accepts (`FUSE_MIN_READ_BUFFER`).
pub const MIN_READ_BUFFER: usize = 8192;
/// The minor version of the experimental iomap series
/// (`docs/iomap.md`): answered only when `FUSE_IOMAP` is
/// granted, since a kernel offering it speaks that protocol.
pub const IOMAP_MINOR_VERSION: u32 = 99;
/// Oldest minor we accept: 7.12 fixed the sizes of entry/attr replies that
/// the handlers below write unconditionally.
pub const MIN_MINOR_VERSION: u32 = 12;

/// FUSE's node id of the root directory.
pub const ROOT_ID: u64 = 1;

/// Opcodes (`enum fuse_opcode`).
pub mod opcode {
    pub const LOOKUP: u32 = 1;
    pub const FORGET: u32 = 2;
    pub const GETATTR: u32 = 3;
    pub const SETATTR: u32 = 4;
    pub const READLINK: u32 = 5;
    pub const SYMLINK: u32 = 6;
    pub const MKNOD: u32 = 8;
    pub const MKDIR: u32 = 9;
    pub const UNLINK: u32 = 10;
    pub const RMDIR: u32 = 11;
    pub const RENAME: u32 = 12;
    pub const LINK: u32 = 13;
    pub const OPEN: u32 = 14;
    pub const READ: u32 = 15;
    pub const WRITE: u32 = 16;
    pub const STATFS: u32 = 17;
    pub const RELEASE: u32 = 18;
    pub const FSYNC: u32 = 20;
    pub const SETXATTR: u32 = 21;
    pub const GETXATTR: u32 = 22;
    pub const LISTXATTR: u32 = 23;
    pub const REMOVEXATTR: u32 = 24;
    pub const FLUSH: u32 = 25;
    pub const INIT: u32 = 26;
    pub const OPENDIR: u32 = 27;
    pub const READDIR: u32 = 28;
    pub const RELEASEDIR: u32 = 29;
    pub const FSYNCDIR: u32 = 30;
    pub const GETLK: u32 = 31;
    pub const SETLK: u32 = 32;
    pub const SETLKW: u32 = 33;
    pub const ACCESS: u32 = 34;
    pub const CREATE: u32 = 35;
    pub const INTERRUPT: u32 = 36;
    pub const BMAP: u32 = 37;
    pub const DESTROY: u32 = 38;
    pub const IOCTL: u32 = 39;
    pub const POLL: u32 = 40;
    pub const NOTIFY_REPLY: u32 = 41;
    pub const BATCH_FORGET: u32 = 42;
    pub const FALLOCATE: u32 = 43;
    pub const READDIRPLUS: u32 = 44;
    pub const RENAME2: u32 = 45;
    pub const LSEEK: u32 = 46;
    pub const COPY_FILE_RANGE: u32 = 47;
    pub const SETUPMAPPING: u32 = 48;
    pub const REMOVEMAPPING: u32 = 49;
    pub const SYNCFS: u32 = 50;
    pub const TMPFILE: u32 = 51;
    pub const STATX: u32 = 52;
    // The iomap series.
    pub const FREEZE_FS: u32 = 4089;
    pub const UNFREEZE_FS: u32 = 4090;
    pub const SHUTDOWN_FS: u32 = 4091;
    pub const IOMAP_CONFIG: u32 = 4092;
    pub const IOMAP_IOEND: u32 = 4093;
    pub const IOMAP_BEGIN: u32 = 4094;
    pub const IOMAP_END: u32 = 4095;
}

/// Notification codes (server to kernel: `unique` 0, `error` = the code).
pub mod notify_code {
    pub const INVAL_INODE: i32 = 2;
    pub const IOMAP_DEV_INVAL: i32 = 99;
    pub const IOMAP_UPSERT_MAPPINGS: i32 = 100;
    pub const IOMAP_INVAL_MAPPINGS: i32 = 101;
}

/// `fuse_notify_inval_inode_out`: forget `ino`'s cached attributes, and
/// its pages from `off` for `len` bytes (`off` < 0: the attributes only).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct NotifyInvalInode {
    pub ino: u64,
    pub off: i64,
    pub len: i64,
}

/// `fuse_attr.flags` bits.
pub mod attr_flags {
    /// Only this mount modifies the file: cached attributes can be trusted.
    pub const EXCLUSIVE: u32 = 1 << 2;
    /// The kernel does this file's I/O itself through iomap.
    pub const IOMAP: u32 = 1 << 3;
    pub const ATOMIC: u32 = 1 << 4;
    /// ext4's `S`, `i` and `a` inode flags, enforced by the VFS.
    pub const SYNC: u32 = 1 << 5;
    pub const IMMUTABLE: u32 = 1 << 6;
    pub const APPEND: u32 = 1 << 7;
}

/// `FUSE_INIT` flags, as one 64-bit word: bits 0..31 travel in
/// `flags`, bits 32..63 in `flags2` (only when `INIT_EXT` is set).
pub mod init_flags {
    pub const ASYNC_READ: u64 = 1 << 0;
    pub const POSIX_LOCKS: u64 = 1 << 1;
    pub const ATOMIC_O_TRUNC: u64 = 1 << 3;
    pub const EXPORT_SUPPORT: u64 = 1 << 4;
    pub const BIG_WRITES: u64 = 1 << 5;
    pub const DONT_MASK: u64 = 1 << 6;
    pub const SPLICE_WRITE: u64 = 1 << 7;
    pub const SPLICE_MOVE: u64 = 1 << 8;
    pub const SPLICE_READ: u64 = 1 << 9;
    pub const FLOCK_LOCKS: u64 = 1 << 10;
    pub const HAS_IOCTL_DIR: u64 = 1 << 11;
    pub const AUTO_INVAL_DATA: u64 = 1 << 12;
    pub const DO_READDIRPLUS: u64 = 1 << 13;
    pub const READDIRPLUS_AUTO: u64 = 1 << 14;
    pub const ASYNC_DIO: u64 = 1 << 15;
    pub const WRITEBACK_CACHE: u64 = 1 << 16;
    pub const NO_OPEN_SUPPORT: u64 = 1 << 17;
    pub const PARALLEL_DIROPS: u64 = 1 << 18;
    pub const HANDLE_KILLPRIV: u64 = 1 << 19;
    pub const POSIX_ACL: u64 = 1 << 20;
    pub const ABORT_ERROR: u64 = 1 << 21;
    pub const MAX_PAGES: u64 = 1 << 22;
    pub const CACHE_SYMLINKS: u64 = 1 << 23;
    pub const NO_OPENDIR_SUPPORT: u64 = 1 << 24;
    pub const EXPLICIT_INVAL_DATA: u64 = 1 << 25;
    pub const MAP_ALIGNMENT: u64 = 1 << 26;
    pub const SUBMOUNTS: u64 = 1 << 27;
    pub const HANDLE_KILLPRIV_V2: u64 = 1 << 28;
    pub const SETXATTR_EXT: u64 = 1 << 29;
    pub const INIT_EXT: u64 = 1 << 30;
    pub const INIT_RESERVED: u64 = 1 << 31;
    pub const SECURITY_CTX: u64 = 1 << 32;
    pub const HAS_INODE_DAX: u64 = 1 << 33;
    pub const CREATE_SUPP_GROUP: u64 = 1 << 34;
    pub const HAS_EXPIRE_ONLY: u64 = 1 << 35;
    pub const DIRECT_IO_ALLOW_MMAP: u64 = 1 << 36;
    pub const PASSTHROUGH: u64 = 1 << 37;
    pub const NO_EXPORT_SUPPORT: u64 = 1 << 38;
    pub const HAS_RESEND: u64 = 1 << 39;
    pub const ALLOW_IDMAP: u64 = 1 << 40;
    pub const OVER_IO_URING: u64 = 1 << 41;
    pub const REQUEST_TIMEOUT: u64 = 1 << 42;
    /// The experimental iomap series (see docs/iomap.md).
    pub const IOMAP: u64 = 1 << 43;
}

/// `fuse_open_out.open_flags`.
pub mod fopen {
    pub const DIRECT_IO: u32 = 1 << 0;
    pub const KEEP_CACHE: u32 = 1 << 1;
    pub const NONSEEKABLE: u32 = 1 << 2;
    pub const CACHE_DIR: u32 = 1 << 3;
    pub const STREAM: u32 = 1 << 4;
    pub const NOFLUSH: u32 = 1 << 5;
}

/// `fuse_getattr_in.getattr_flags`: `fh` is valid.
pub const GETATTR_FH: u32 = 1 << 0;

/// `statx` mask bits and attribute bits the server fills.
pub mod statx {
    pub const BASIC_STATS: u32 = 0x7ff;
    pub const BTIME: u32 = 0x800;
    pub const ATTR_COMPRESSED: u64 = 0x4;
    pub const ATTR_IMMUTABLE: u64 = 0x10;
    pub const ATTR_APPEND: u64 = 0x20;
    pub const ATTR_NODUMP: u64 = 0x40;
    pub const ATTR_ENCRYPTED: u64 = 0x800;
    pub const ATTR_VERITY: u64 = 0x100000;
    pub const ATTR_DAX: u64 = 0x200000;
}

/// `FUSE_DEV_IOC_CLONE = _IOR(229, 0, uint32_t)`: attach a new `/dev/fuse`
/// descriptor to an existing connection, so each worker has its own queue end.
pub const FUSE_DEV_IOC_MAGIC: u8 = 229;

/// `fuse_backing_map.flags`: the backing type.
pub const BACKING_TYPE_PASSTHROUGH: u32 = 0;
pub const BACKING_TYPE_IOMAP: u32 = 1;

/// `fuse_iomap_support.flags`.
pub const IOMAP_SUPPORT_FILEIO: u64 = 1 << 0;
pub const IOMAP_SUPPORT_ATOMIC: u64 = 1 << 1;

/// `fuse_iomap_io.addr` of a mapping without a device address.
pub const IOMAP_NULL_ADDR: u64 = u64::MAX;
/// `fuse_iomap_io.dev` of a mapping without a device.
pub const IOMAP_DEV_NULL: u32 = 0;
/// `fuse_range.length` meaning "to the end of the file".
pub const IOMAP_INVAL_TO_EOF: u64 = u64::MAX;

/// `fuse_iomap_config_{in,out}.flags`: which fields are set.
pub mod iomap_config {
    pub const SID: u64 = 1 << 0;
    pub const UUID: u64 = 1 << 1;
    pub const BLOCKSIZE: u64 = 1 << 2;
    pub const MAX_LINKS: u64 = 1 << 3;
    pub const TIME: u64 = 1 << 4;
    pub const MAXBYTES: u64 = 1 << 5;
    pub const CACHE_MAXBYTES: u64 = 1 << 6;
    pub const ALL: u64 = (1 << 7) - 1;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct InHeader {
    pub len: u32,
    pub opcode: u32,
    pub unique: u64,
    pub nodeid: u64,
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    pub total_extlen: u16,
    pub padding: u16,
}

impl InHeader {
    /// A whole request as the kernel frames it: this header, with `len`
    /// set, followed by `body`. For the stand-ins that drive a session
    /// over a socket in tests.
    pub fn frame(mut self, body: &[u8]) -> Vec<u8> {
        self.len = (core::mem::size_of::<InHeader>() + body.len()) as u32;
        let mut msg = self.as_bytes().to_vec();
        msg.extend_from_slice(body);
        msg
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct OutHeader {
    pub len: u32,
    /// Zero or a negated errno.
    pub error: i32,
    pub unique: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct InitIn {
    pub major: u32,
    pub minor: u32,
    pub max_readahead: u32,
    pub flags: u32,
    pub flags2: u32,
    pub unused: [u32; 11],
}

/// The part of `fuse_init_in` every kernel since 7.6 sends.
pub const INIT_IN_COMPAT_SIZE: usize = 16;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct InitOut {
    pub major: u32,
    pub minor: u32,
    pub max_readahead: u32,
    pub flags: u32,
    pub max_background: u16,
    pub congestion_threshold: u16,
    pub max_write: u32,
    pub time_gran: u32,
    pub max_pages: u16,
    pub map_alignment: u16,
    pub flags2: u32,
    pub max_stack_depth: u32,
    pub unused: [u32; 6],
}

#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct Attr {
    pub ino: u64,
    pub size: u64,
    pub blocks: u64,
    /// Seconds; the kernel reads these as signed (pre-1970 times work).
    pub atime: u64,
    pub mtime: u64,
    pub ctime: u64,
    pub atimensec: u32,
    pub mtimensec: u32,
    pub ctimensec: u32,
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    /// `new_encode_dev` form (the kernel decodes it with `new_decode_dev`).
    pub rdev: u32,
    pub blksize: u32,
    pub flags: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct EntryOut {
    /// 0 with a nonzero `entry_valid` is a cacheable negative entry.
    pub nodeid: u64,
    pub generation: u64,
    pub entry_valid: u64,
    pub attr_valid: u64,
    pub entry_valid_nsec: u32,
    pub attr_valid_nsec: u32,
    pub attr: Attr,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ForgetIn {
    pub nlookup: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct BatchForgetIn {
    pub count: u32,
    pub dummy: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ForgetOne {
    pub nodeid: u64,
    pub nlookup: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct GetattrIn {
    pub getattr_flags: u32,
    pub dummy: u32,
    pub fh: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct AttrOut {
    pub attr_valid: u64,
    pub attr_valid_nsec: u32,
    pub dummy: u32,
    pub attr: Attr,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct OpenIn {
    pub flags: u32,
    pub open_flags: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct OpenOut {
    pub fh: u64,
    pub open_flags: u32,
    pub backing_id: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ReleaseIn {
    pub fh: u64,
    pub flags: u32,
    pub release_flags: u32,
    pub lock_owner: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct FlushIn {
    pub fh: u64,
    pub unused: u32,
    pub padding: u32,
    pub lock_owner: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ReadIn {
    pub fh: u64,
    pub offset: u64,
    pub size: u32,
    pub read_flags: u32,
    pub lock_owner: u64,
    pub flags: u32,
    pub padding: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Kstatfs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
    pub padding: u32,
    pub spare: [u32; 6],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct GetxattrIn {
    pub size: u32,
    pub padding: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct GetxattrOut {
    pub size: u32,
    pub padding: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct AccessIn {
    pub mask: u32,
    pub padding: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct InterruptIn {
    pub unique: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct LseekIn {
    pub fh: u64,
    pub offset: u64,
    pub whence: u32,
    pub padding: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct LseekOut {
    pub offset: u64,
}

/// Header of one `READDIR` record; the name follows, padded to 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Dirent {
    pub ino: u64,
    pub off: u64,
    pub namelen: u32,
    pub typ: u32,
}

/// Header of one `READDIRPLUS` record: an entry, then a `Dirent` and name.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct DirentPlus {
    pub entry_out: EntryOut,
    pub dirent: Dirent,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct StatxIn {
    pub getattr_flags: u32,
    pub reserved: u32,
    pub fh: u64,
    pub sx_flags: u32,
    pub sx_mask: u32,
}

#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct SxTime {
    pub tv_sec: i64,
    pub tv_nsec: u32,
    pub reserved: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Statx {
    pub mask: u32,
    pub blksize: u32,
    pub attributes: u64,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub mode: u16,
    pub spare0: u16,
    pub ino: u64,
    pub size: u64,
    pub blocks: u64,
    pub attributes_mask: u64,
    pub atime: SxTime,
    pub btime: SxTime,
    pub ctime: SxTime,
    pub mtime: SxTime,
    pub rdev_major: u32,
    pub rdev_minor: u32,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub spare2: [u64; 14],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct StatxOut {
    pub attr_valid: u64,
    pub attr_valid_nsec: u32,
    pub flags: u32,
    pub spare: [u64; 2],
    pub stat: Statx,
}

/// `fuse_iomap_io`: one mapping (file range -> device range).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct IomapIo {
    pub offset: u64,
    pub length: u64,
    pub addr: u64,
    pub typ: u16,
    pub flags: u16,
    pub dev: u32,
}

impl IomapIo {
    pub fn from_mapping(m: &ext4_engine::mapping_cache::Mapping) -> IomapIo {
        IomapIo {
            offset: m.offset,
            length: m.length,
            addr: m.addr,
            typ: m.kind as u16,
            flags: m.flags,
            dev: m.dev,
        }
    }

    /// The mapping this record says; `None` for an unknown type.
    pub fn mapping(&self) -> Option<ext4_engine::mapping_cache::Mapping> {
        Some(ext4_engine::mapping_cache::Mapping {
            offset: self.offset,
            length: self.length,
            addr: self.addr,
            kind: ext4_engine::mapping_cache::MapType::from_u16(self.typ)?,
            flags: self.flags,
            dev: self.dev,
        })
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IomapBeginIn {
    pub opflags: u32,
    pub reserved: u32,
    pub attr_ino: u64,
    pub pos: u64,
    pub count: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IomapBeginOut {
    pub read: IomapIo,
    pub write: IomapIo,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IomapEndIn {
    pub opflags: u32,
    pub reserved: u32,
    pub attr_ino: u64,
    pub pos: u64,
    pub count: u64,
    pub written: i64,
    pub map: IomapIo,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IomapIoendIn {
    pub flags: u32,
    /// Negative errno, or 0.
    pub error: i32,
    pub attr_ino: u64,
    pub pos: u64,
    pub new_addr: u64,
    pub written: u64,
    pub dev: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IomapIoendOut {
    pub newsize: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IomapConfigIn {
    /// Config fields the kernel understands.
    pub flags: u64,
    pub maxbytes: i64,
    pub cache_maxbytes: u32,
    pub zero: u32,
    pub padding: [u64; 5],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IomapConfigOut {
    /// Which fields are set.
    pub flags: u64,
    pub s_id: [u8; 32],
    pub s_uuid: [u8; 16],
    pub s_uuid_len: u8,
    pub s_pad: [u8; 3],
    pub s_blocksize: u32,
    pub s_max_links: u32,
    /// Timestamp granularity, ns.
    pub s_time_gran: u32,
    pub s_time_min: i64,
    pub s_time_max: i64,
    pub s_maxbytes: i64,
    pub cache_maxbytes: u32,
    /// The C struct's tail padding, written out so every byte is defined.
    pub tail: u32,
}

impl Default for IomapConfigOut {
    fn default() -> Self {
        Self::new_zeroed()
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IomapUpsertMappingsOut {
    pub nodeid: u64,
    pub attr_ino: u64,
    pub read: IomapIo,
    pub write: IomapIo,
}

#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct FuseRange {
    pub offset: u64,
    /// 0: leave this fork alone; `IOMAP_INVAL_TO_EOF`: to end of file.
    pub length: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IomapInvalMappingsOut {
    pub nodeid: u64,
    pub attr_ino: u64,
    pub read: FuseRange,
    pub write: FuseRange,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IomapDevInvalOut {
    pub dev: u32,
    pub reserved: u32,
    pub range: FuseRange,
}

/// Argument of `FUSE_DEV_IOC_BACKING_OPEN`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct BackingMap {
    pub fd: i32,
    /// Backing type (`BACKING_TYPE_*`).
    pub flags: u32,
    pub padding: u64,
}

/// Argument of `FUSE_DEV_IOC_IOMAP_SUPPORT`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IomapSupport {
    pub flags: u64,
    pub padding: u64,
}

/// Body of `FUSE_SYNCFS`, `FUSE_FREEZE_FS` (`unlinked`) and
/// `FUSE_SHUTDOWN_FS` (`flags`): one u64.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct U64In {
    pub value: u64,
}

/// Round a directory record length up to the 8-byte boundary the kernel
/// expects between records.
pub const fn rec_align(len: usize) -> usize {
    (len + 7) & !7
}

/// The kernel's `new_encode_dev`: the 32-bit device number `fuse_attr.rdev`
/// carries (12-bit major, 20-bit minor, minor's low byte first).
pub fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

// The write requests (fuse.h, protocol 7.40).

/// `fuse_setattr_in.valid` bits.
pub mod fattr {
    pub const MODE: u32 = 1 << 0;
    pub const UID: u32 = 1 << 1;
    pub const GID: u32 = 1 << 2;
    pub const SIZE: u32 = 1 << 3;
    pub const ATIME: u32 = 1 << 4;
    pub const MTIME: u32 = 1 << 5;
    pub const FH: u32 = 1 << 6;
    pub const ATIME_NOW: u32 = 1 << 7;
    pub const MTIME_NOW: u32 = 1 << 8;
    pub const LOCKOWNER: u32 = 1 << 9;
    pub const CTIME: u32 = 1 << 10;
    pub const KILL_SUIDGID: u32 = 1 << 11;
}

/// `fuse_write_in.write_flags` bits.
pub mod write_flags {
    /// Drop the set-ID bits and capabilities first
    /// (`FUSE_HANDLE_KILLPRIV_V2`; the kernel sets it when the writer
    /// lacks `CAP_FSETID`).
    pub const KILL_SUIDGID: u32 = 1 << 2;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct SetattrIn {
    pub valid: u32,
    pub padding: u32,
    pub fh: u64,
    pub size: u64,
    pub lock_owner: u64,
    pub atime: u64,
    pub mtime: u64,
    pub ctime: u64,
    pub atimensec: u32,
    pub mtimensec: u32,
    pub ctimensec: u32,
    pub mode: u32,
    pub unused4: u32,
    pub uid: u32,
    pub gid: u32,
    pub unused5: u32,
}

/// `CREATE` and `TMPFILE` (the name follows, for `CREATE`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct CreateIn {
    pub flags: u32,
    pub mode: u32,
    pub umask: u32,
    pub open_flags: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct MknodIn {
    pub mode: u32,
    pub rdev: u32,
    pub umask: u32,
    pub padding: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct MkdirIn {
    pub mode: u32,
    pub umask: u32,
}

/// `RENAME` (the old and new names follow).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct RenameIn {
    pub newdir: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Rename2In {
    pub newdir: u64,
    pub flags: u32,
    pub padding: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct LinkIn {
    pub oldnodeid: u64,
}

/// `WRITE` (the data follows).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct WriteIn {
    pub fh: u64,
    pub offset: u64,
    pub size: u32,
    pub write_flags: u32,
    pub lock_owner: u64,
    pub flags: u32,
    pub padding: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct WriteOut {
    pub size: u32,
    pub padding: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct FsyncIn {
    pub fh: u64,
    pub fsync_flags: u32,
    pub padding: u32,
}

/// `SETXATTR` without `FUSE_SETXATTR_EXT` (the name and value follow).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct SetxattrIn {
    pub size: u32,
    pub flags: u32,
}

/// `IOCTL`: the command and its argument; `in_size` bytes of input
/// follow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IoctlIn {
    pub fh: u64,
    pub flags: u32,
    pub cmd: u32,
    pub arg: u64,
    pub in_size: u32,
    pub out_size: u32,
}

/// The `IOCTL` answer; its output bytes follow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IoctlOut {
    pub result: i32,
    pub flags: u32,
    pub in_iovs: u32,
    pub out_iovs: u32,
}

/// The `chattr`/`lsattr` commands (both widths of their argument, as the
/// kernel's FUSE passes 4 bytes either way).
pub mod ioctl {
    pub const FS_IOC_GETFLAGS: u32 = 0x8008_6601;
    pub const FS_IOC_SETFLAGS: u32 = 0x4008_6602;
    pub const FS_IOC32_GETFLAGS: u32 = 0x8004_6601;
    pub const FS_IOC32_SETFLAGS: u32 = 0x4004_6602;
    /// `struct fsxattr` in or out (28 bytes): what the kernel's FUSE
    /// asks before it changes flags for `chattr`.
    pub const FS_IOC_FSGETXATTR: u32 = 0x801C_581F;
    pub const FS_IOC_FSSETXATTR: u32 = 0x401C_5820;
}

/// `struct fsxattr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Fsxattr {
    pub xflags: u32,
    pub extsize: u32,
    pub nextents: u32,
    pub projid: u32,
    pub cowextsize: u32,
    pub pad: [u8; 8],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct FallocateIn {
    pub fh: u64,
    pub offset: u64,
    pub length: u64,
    pub mode: u32,
    pub padding: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct CopyFileRangeIn {
    pub fh_in: u64,
    pub off_in: u64,
    pub nodeid_out: u64,
    pub fh_out: u64,
    pub off_out: u64,
    pub len: u64,
    pub flags: u64,
}

/// FUSE over io_uring (kernel 6.14+): the `IORING_OP_URING_CMD` commands
/// on `/dev/fuse` and the buffers one ring entry shares with the kernel.
pub mod uring {
    use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

    /// `cmd_op`: hand the kernel an entry's buffers for queue `qid`.
    pub const CMD_REGISTER: u32 = 1;
    /// `cmd_op`: the reply to `commit_id` is in the entry; wait for the next request.
    pub const CMD_COMMIT_AND_FETCH: u32 = 2;
    /// The two buffers of an entry (`iovec`s of a `REGISTER`): headers, payload.
    pub const IOV_SEGS: u32 = 2;
    /// Room for the operation's own header (`op_in`) in [`ReqHeader`].
    pub const OP_IN_SIZE: usize = 128;

    /// `fuse_uring_ent_in_out`: the kernel's `commit_id` (the request's
    /// `unique`) and how many payload bytes each direction carries.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
    pub struct EntInOut {
        pub flags: u64,
        pub commit_id: u64,
        pub payload_sz: u32,
        pub padding: u32,
        pub reserved: u64,
    }

    /// `fuse_uring_req_header`: the entry's header buffer. `in_out` holds
    /// the `fuse_in_header` of a request and the `fuse_out_header` of its
    /// reply; `op_in` the operation's first argument (its fixed header).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
    pub struct ReqHeader {
        pub in_out: [u8; 128],
        pub op_in: [u8; OP_IN_SIZE],
        pub ent: EntInOut,
    }

    /// `fuse_uring_cmd_req`: the command area of the 128-byte SQE.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
    pub struct CmdReq {
        pub flags: u64,
        pub commit_id: u64,
        pub qid: u16,
        pub padding: [u8; 6],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn uring_layouts() {
        use uring::*;
        assert_eq!(size_of::<EntInOut>(), 32);
        assert_eq!(offset_of!(EntInOut, commit_id), 8);
        assert_eq!(offset_of!(EntInOut, payload_sz), 16);
        assert_eq!(offset_of!(EntInOut, reserved), 24);
        assert_eq!(size_of::<ReqHeader>(), 288);
        assert_eq!(offset_of!(ReqHeader, op_in), 128);
        assert_eq!(offset_of!(ReqHeader, ent), 256);
        assert_eq!(size_of::<CmdReq>(), 24);
        assert_eq!(offset_of!(CmdReq, commit_id), 8);
        assert_eq!(offset_of!(CmdReq, qid), 16);
    }

    #[test]
    fn header_layouts() {
        assert_eq!(size_of::<InHeader>(), 40);
        assert_eq!(offset_of!(InHeader, opcode), 4);
        assert_eq!(offset_of!(InHeader, unique), 8);
        assert_eq!(offset_of!(InHeader, nodeid), 16);
        assert_eq!(offset_of!(InHeader, uid), 24);
        assert_eq!(offset_of!(InHeader, gid), 28);
        assert_eq!(offset_of!(InHeader, pid), 32);
        assert_eq!(offset_of!(InHeader, total_extlen), 36);
        assert_eq!(size_of::<OutHeader>(), 16);
        assert_eq!(offset_of!(OutHeader, error), 4);
        assert_eq!(offset_of!(OutHeader, unique), 8);
    }

    #[test]
    fn init_layouts() {
        assert_eq!(size_of::<InitIn>(), 64);
        assert_eq!(offset_of!(InitIn, max_readahead), 8);
        assert_eq!(offset_of!(InitIn, flags), 12);
        assert_eq!(offset_of!(InitIn, flags2), 16);
        assert_eq!(size_of::<InitOut>(), 64);
        assert_eq!(offset_of!(InitOut, flags), 12);
        assert_eq!(offset_of!(InitOut, max_background), 16);
        assert_eq!(offset_of!(InitOut, congestion_threshold), 18);
        assert_eq!(offset_of!(InitOut, max_write), 20);
        assert_eq!(offset_of!(InitOut, time_gran), 24);
        assert_eq!(offset_of!(InitOut, max_pages), 28);
        assert_eq!(offset_of!(InitOut, map_alignment), 30);
        assert_eq!(offset_of!(InitOut, flags2), 32);
        assert_eq!(offset_of!(InitOut, max_stack_depth), 36);
    }

    #[test]
    fn attr_and_entry_layouts() {
        assert_eq!(size_of::<Attr>(), 88);
        assert_eq!(offset_of!(Attr, size), 8);
        assert_eq!(offset_of!(Attr, blocks), 16);
        assert_eq!(offset_of!(Attr, atime), 24);
        assert_eq!(offset_of!(Attr, mtime), 32);
        assert_eq!(offset_of!(Attr, ctime), 40);
        assert_eq!(offset_of!(Attr, atimensec), 48);
        assert_eq!(offset_of!(Attr, mtimensec), 52);
        assert_eq!(offset_of!(Attr, ctimensec), 56);
        assert_eq!(offset_of!(Attr, mode), 60);
        assert_eq!(offset_of!(Attr, nlink), 64);
        assert_eq!(offset_of!(Attr, uid), 68);
        assert_eq!(offset_of!(Attr, gid), 72);
        assert_eq!(offset_of!(Attr, rdev), 76);
        assert_eq!(offset_of!(Attr, blksize), 80);
        assert_eq!(offset_of!(Attr, flags), 84);
        assert_eq!(size_of::<EntryOut>(), 128);
        assert_eq!(offset_of!(EntryOut, generation), 8);
        assert_eq!(offset_of!(EntryOut, entry_valid), 16);
        assert_eq!(offset_of!(EntryOut, attr_valid), 24);
        assert_eq!(offset_of!(EntryOut, entry_valid_nsec), 32);
        assert_eq!(offset_of!(EntryOut, attr_valid_nsec), 36);
        assert_eq!(offset_of!(EntryOut, attr), 40);
        assert_eq!(size_of::<AttrOut>(), 104);
        assert_eq!(offset_of!(AttrOut, attr_valid_nsec), 8);
        assert_eq!(offset_of!(AttrOut, attr), 16);
        assert_eq!(size_of::<GetattrIn>(), 16);
        assert_eq!(offset_of!(GetattrIn, fh), 8);
    }

    #[test]
    fn small_request_layouts() {
        assert_eq!(size_of::<ForgetIn>(), 8);
        assert_eq!(size_of::<BatchForgetIn>(), 8);
        assert_eq!(size_of::<ForgetOne>(), 16);
        assert_eq!(offset_of!(ForgetOne, nlookup), 8);
        assert_eq!(size_of::<OpenIn>(), 8);
        assert_eq!(offset_of!(OpenIn, open_flags), 4);
        assert_eq!(size_of::<OpenOut>(), 16);
        assert_eq!(offset_of!(OpenOut, open_flags), 8);
        assert_eq!(offset_of!(OpenOut, backing_id), 12);
        assert_eq!(size_of::<ReleaseIn>(), 24);
        assert_eq!(offset_of!(ReleaseIn, flags), 8);
        assert_eq!(offset_of!(ReleaseIn, release_flags), 12);
        assert_eq!(offset_of!(ReleaseIn, lock_owner), 16);
        assert_eq!(size_of::<FlushIn>(), 24);
        assert_eq!(offset_of!(FlushIn, lock_owner), 16);
        assert_eq!(size_of::<ReadIn>(), 40);
        assert_eq!(offset_of!(ReadIn, offset), 8);
        assert_eq!(offset_of!(ReadIn, size), 16);
        assert_eq!(offset_of!(ReadIn, read_flags), 20);
        assert_eq!(offset_of!(ReadIn, lock_owner), 24);
        assert_eq!(offset_of!(ReadIn, flags), 32);
        assert_eq!(size_of::<GetxattrIn>(), 8);
        assert_eq!(size_of::<GetxattrOut>(), 8);
        assert_eq!(size_of::<AccessIn>(), 8);
        assert_eq!(size_of::<InterruptIn>(), 8);
        assert_eq!(size_of::<LseekIn>(), 24);
        assert_eq!(offset_of!(LseekIn, offset), 8);
        assert_eq!(offset_of!(LseekIn, whence), 16);
        assert_eq!(size_of::<LseekOut>(), 8);
    }

    #[test]
    fn statfs_and_dirent_layouts() {
        assert_eq!(size_of::<Kstatfs>(), 80);
        // The write requests, as fuse.h lays them out.
        assert_eq!(size_of::<SetattrIn>(), 88);
        assert_eq!(core::mem::offset_of!(SetattrIn, mode), 68);
        assert_eq!(core::mem::offset_of!(SetattrIn, uid), 76);
        assert_eq!(size_of::<CreateIn>(), 16);
        assert_eq!(size_of::<MknodIn>(), 16);
        assert_eq!(size_of::<MkdirIn>(), 8);
        assert_eq!(size_of::<RenameIn>(), 8);
        assert_eq!(size_of::<Rename2In>(), 16);
        assert_eq!(size_of::<LinkIn>(), 8);
        assert_eq!(size_of::<WriteIn>(), 40);
        assert_eq!(size_of::<WriteOut>(), 8);
        assert_eq!(size_of::<FsyncIn>(), 16);
        assert_eq!(size_of::<SetxattrIn>(), 8);
        assert_eq!(size_of::<FallocateIn>(), 32);
        assert_eq!(size_of::<IoctlIn>(), 32);
        assert_eq!(offset_of!(IoctlIn, in_size), 24);
        assert_eq!(size_of::<IoctlOut>(), 16);
        assert_eq!(size_of::<Fsxattr>(), 28);
        assert_eq!(offset_of!(Fsxattr, projid), 12);
        assert_eq!(size_of::<CopyFileRangeIn>(), 56);
        assert_eq!(offset_of!(Kstatfs, bfree), 8);
        assert_eq!(offset_of!(Kstatfs, bavail), 16);
        assert_eq!(offset_of!(Kstatfs, files), 24);
        assert_eq!(offset_of!(Kstatfs, ffree), 32);
        assert_eq!(offset_of!(Kstatfs, bsize), 40);
        assert_eq!(offset_of!(Kstatfs, namelen), 44);
        assert_eq!(offset_of!(Kstatfs, frsize), 48);
        assert_eq!(offset_of!(Kstatfs, spare), 56);
        assert_eq!(size_of::<Dirent>(), 24);
        assert_eq!(offset_of!(Dirent, off), 8);
        assert_eq!(offset_of!(Dirent, namelen), 16);
        assert_eq!(offset_of!(Dirent, typ), 20);
        assert_eq!(size_of::<DirentPlus>(), 152);
        assert_eq!(offset_of!(DirentPlus, dirent), 128);
    }

    #[test]
    fn statx_layouts() {
        assert_eq!(size_of::<StatxIn>(), 24);
        assert_eq!(offset_of!(StatxIn, fh), 8);
        assert_eq!(offset_of!(StatxIn, sx_flags), 16);
        assert_eq!(offset_of!(StatxIn, sx_mask), 20);
        assert_eq!(size_of::<SxTime>(), 16);
        assert_eq!(offset_of!(SxTime, tv_nsec), 8);
        assert_eq!(size_of::<Statx>(), 256);
        assert_eq!(offset_of!(Statx, blksize), 4);
        assert_eq!(offset_of!(Statx, attributes), 8);
        assert_eq!(offset_of!(Statx, nlink), 16);
        assert_eq!(offset_of!(Statx, uid), 20);
        assert_eq!(offset_of!(Statx, gid), 24);
        assert_eq!(offset_of!(Statx, mode), 28);
        assert_eq!(offset_of!(Statx, ino), 32);
        assert_eq!(offset_of!(Statx, size), 40);
        assert_eq!(offset_of!(Statx, blocks), 48);
        assert_eq!(offset_of!(Statx, attributes_mask), 56);
        assert_eq!(offset_of!(Statx, atime), 64);
        assert_eq!(offset_of!(Statx, btime), 80);
        assert_eq!(offset_of!(Statx, ctime), 96);
        assert_eq!(offset_of!(Statx, mtime), 112);
        assert_eq!(offset_of!(Statx, rdev_major), 128);
        assert_eq!(offset_of!(Statx, rdev_minor), 132);
        assert_eq!(offset_of!(Statx, dev_major), 136);
        assert_eq!(offset_of!(Statx, dev_minor), 140);
        assert_eq!(offset_of!(Statx, spare2), 144);
        assert_eq!(size_of::<StatxOut>(), 288);
        assert_eq!(offset_of!(StatxOut, flags), 12);
        assert_eq!(offset_of!(StatxOut, stat), 32);
    }

    #[test]
    fn iomap_layouts() {
        assert_eq!(size_of::<IomapIo>(), 32);
        assert_eq!(offset_of!(IomapIo, length), 8);
        assert_eq!(offset_of!(IomapIo, addr), 16);
        assert_eq!(offset_of!(IomapIo, typ), 24);
        assert_eq!(offset_of!(IomapIo, flags), 26);
        assert_eq!(offset_of!(IomapIo, dev), 28);
        assert_eq!(size_of::<IomapBeginIn>(), 32);
        assert_eq!(offset_of!(IomapBeginIn, reserved), 4);
        assert_eq!(offset_of!(IomapBeginIn, attr_ino), 8);
        assert_eq!(offset_of!(IomapBeginIn, pos), 16);
        assert_eq!(offset_of!(IomapBeginIn, count), 24);
        assert_eq!(size_of::<IomapBeginOut>(), 64);
        assert_eq!(offset_of!(IomapBeginOut, write), 32);
        assert_eq!(size_of::<IomapEndIn>(), 72);
        assert_eq!(offset_of!(IomapEndIn, attr_ino), 8);
        assert_eq!(offset_of!(IomapEndIn, pos), 16);
        assert_eq!(offset_of!(IomapEndIn, count), 24);
        assert_eq!(offset_of!(IomapEndIn, written), 32);
        assert_eq!(offset_of!(IomapEndIn, map), 40);
        assert_eq!(size_of::<IomapIoendIn>(), 48);
        assert_eq!(offset_of!(IomapIoendIn, error), 4);
        assert_eq!(offset_of!(IomapIoendIn, attr_ino), 8);
        assert_eq!(offset_of!(IomapIoendIn, pos), 16);
        assert_eq!(offset_of!(IomapIoendIn, new_addr), 24);
        assert_eq!(offset_of!(IomapIoendIn, written), 32);
        assert_eq!(offset_of!(IomapIoendIn, dev), 40);
        assert_eq!(size_of::<IomapIoendOut>(), 8);
        assert_eq!(size_of::<IomapConfigIn>(), 64);
        assert_eq!(offset_of!(IomapConfigIn, maxbytes), 8);
        assert_eq!(offset_of!(IomapConfigIn, cache_maxbytes), 16);
        assert_eq!(offset_of!(IomapConfigIn, zero), 20);
        assert_eq!(offset_of!(IomapConfigIn, padding), 24);
        assert_eq!(size_of::<IomapConfigOut>(), 104);
        assert_eq!(offset_of!(IomapConfigOut, s_id), 8);
        assert_eq!(offset_of!(IomapConfigOut, s_uuid), 40);
        assert_eq!(offset_of!(IomapConfigOut, s_uuid_len), 56);
        assert_eq!(offset_of!(IomapConfigOut, s_pad), 57);
        assert_eq!(offset_of!(IomapConfigOut, s_blocksize), 60);
        assert_eq!(offset_of!(IomapConfigOut, s_max_links), 64);
        assert_eq!(offset_of!(IomapConfigOut, s_time_gran), 68);
        assert_eq!(offset_of!(IomapConfigOut, s_time_min), 72);
        assert_eq!(offset_of!(IomapConfigOut, s_time_max), 80);
        assert_eq!(offset_of!(IomapConfigOut, s_maxbytes), 88);
        assert_eq!(offset_of!(IomapConfigOut, cache_maxbytes), 96);
        assert_eq!(size_of::<IomapUpsertMappingsOut>(), 80);
        assert_eq!(offset_of!(IomapUpsertMappingsOut, attr_ino), 8);
        assert_eq!(offset_of!(IomapUpsertMappingsOut, read), 16);
        assert_eq!(offset_of!(IomapUpsertMappingsOut, write), 48);
        assert_eq!(size_of::<FuseRange>(), 16);
        assert_eq!(size_of::<IomapInvalMappingsOut>(), 48);
        assert_eq!(offset_of!(IomapInvalMappingsOut, read), 16);
        assert_eq!(offset_of!(IomapInvalMappingsOut, write), 32);
        assert_eq!(size_of::<IomapDevInvalOut>(), 24);
        assert_eq!(offset_of!(IomapDevInvalOut, range), 8);
        assert_eq!(size_of::<BackingMap>(), 16);
        assert_eq!(offset_of!(BackingMap, flags), 4);
        assert_eq!(size_of::<IomapSupport>(), 16);
    }

    #[test]
    fn iomap_constants() {
        assert_eq!(init_flags::IOMAP >> 32, 1 << 11);
        assert_eq!(opcode::FREEZE_FS, 4089);
        assert_eq!(opcode::IOMAP_END, 4095);
        assert_eq!(attr_flags::IOMAP, 8);
        assert_eq!(attr_flags::APPEND, 0x80);
    }

    #[test]
    fn dev_encoding_matches_kernel() {
        // new_encode_dev(MKDEV(8, 1)) == 0x801; a wide minor spills above bit 20.
        assert_eq!(encode_dev(8, 1), 0x801);
        assert_eq!(encode_dev(1, 3), 0x103);
        assert_eq!(encode_dev(259, 0x12345), 0x12310345);
        assert_eq!(rec_align(24 + 1), 32);
        assert_eq!(rec_align(32), 32);
    }
}
