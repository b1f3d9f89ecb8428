//! The settings of a session, fixed at mount time, and the `FUSE_INIT`
//! flags they ask for.

use std::time::Duration;

use crate::abi::init_flags as flag;

/// Settings of a session, fixed at mount time.
#[derive(Clone, Debug)]
pub struct Config {
    /// Entry and attribute cache timeout (the engine's policy by default).
    /// Nothing but this server can change
    /// a read-only mount, so it can be long.
    pub timeout: Duration,
    /// Report every inode as owned by this uid / gid.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Offer `FUSE_EXPORT_SUPPORT` (NFS export: lookups of "." and "..").
    pub export_support: bool,
    /// Offer `FUSE_POSIX_ACL`, so the kernel enforces ACLs with
    /// `default_permissions`.
    pub posix_acl: bool,
    /// Kernel's limit of background (readahead) requests in flight.
    pub max_background: u16,
    /// Accept `FUSE_IOMAP` when the kernel offers it. The data path only
    /// switches once [`Session::activate_iomap`] names the device.
    pub iomap: bool,
    /// Largest mapping cache the kernel is asked to keep (`cache_maxbytes`
    /// of `IOMAP_CONFIG`; the kernel's own limit wins if smaller).
    pub iomap_cache_bytes: u32,
    /// Most mappings pushed into the kernel's cache by one `IOMAP_BEGIN`
    /// (0: no pushes at all, every miss is an upcall).
    pub iomap_push_window: usize,
    /// Mappings pushed when an iomap file is opened.
    pub iomap_open_push: usize,
    /// `s_id` for `IOMAP_CONFIG` (the device name, as the kernel shows it).
    pub iomap_sid: String,
    /// Count requests and the server's CPU time per opcode
    /// ([`Session::request_stats`]).
    pub measure: bool,
    /// When the kernel asks for directory listings with attributes.
    pub readdirplus: ReaddirPlus,
    /// Ask for `FUSE_WRITEBACK_CACHE` (a writable mount only). Off by
    /// default: measured with bench/fuse.sh's write rows (same run, see
    /// frontend-linux/README.md), it made a 1 GiB write + fsync 2x slower
    /// (the kernel throttles a FUSE file's dirty pages to its write-back)
    /// and 4 KiB random writes no faster, an untar 19% faster; and it
    /// hands mtime and ctime to the kernel's clock. `-o writeback_cache`
    /// turns it on.
    pub writeback_cache: bool,
    /// Accept `FUSE_OVER_IO_URING` when the kernel offers it: requests
    /// then come through per-CPU rings ([`crate::uring`]).
    pub uring: bool,
}

/// `-o readdirplus=`: which listings carry each entry's attributes
/// (`READDIRPLUS`), saving the kernel a `LOOKUP` per entry it then uses.
/// `Auto` is the kernel's adaptive mode (the first chunk of a listing, and
/// the next ones only after an entry was looked up or stat'ed since); `On`
/// every listing; `Off` none (a `LOOKUP` per entry the client uses).
pub type ReaddirPlus = crate::options::AutoOnOff;

impl Default for Config {
    fn default() -> Self {
        Config {
            timeout: ext4_engine::policy::timeouts(true).attr,
            uid: None,
            gid: None,
            export_support: true,
            posix_acl: true,
            max_background: 64,
            iomap: false,
            iomap_cache_bytes: 4 << 20,
            iomap_push_window: 1 << 16,
            iomap_open_push: 8,
            iomap_sid: String::from("ext4-fuse"),
            measure: false,
            readdirplus: ReaddirPlus::Auto,
            writeback_cache: false,
            uring: false,
        }
    }
}

impl Config {
    /// The `FUSE_INIT` flags this server would like, both words.
    pub fn wanted_flags(&self) -> u64 {
        // BIG_WRITES: without it the kernel sends every buffered write
        // one page per request (fuse_fill_write_pages), whatever
        // max_write says: a 1 GiB write took 262,144 round trips.
        // DONT_MASK: the kernel leaves the umask to us (it sends it with
        // the request), so that under a directory with a default ACL the
        // umask is ignored as the kernel's ext4 ignores it.
        // HANDLE_KILLPRIV_V2: the server drops set-ID bits and
        // security.capability on write, truncation and chown (the shared
        // policy's rule, as the kernel's VFS), sparing the GETXATTR
        // security.capability the kernel otherwise asks before every write.
        let mut want = flag::ASYNC_READ
            | flag::HANDLE_KILLPRIV_V2
            | flag::BIG_WRITES
            | flag::DONT_MASK
            | flag::PARALLEL_DIROPS
            | flag::CACHE_SYMLINKS
            | flag::MAX_PAGES
            | flag::ASYNC_DIO
            | flag::NO_OPEN_SUPPORT
            | flag::NO_OPENDIR_SUPPORT
            | flag::INIT_EXT;
        want |= match self.readdirplus {
            ReaddirPlus::Auto => flag::DO_READDIRPLUS | flag::READDIRPLUS_AUTO,
            ReaddirPlus::On => flag::DO_READDIRPLUS,
            ReaddirPlus::Off => 0,
        };
        if self.posix_acl {
            want |= flag::POSIX_ACL;
        }
        if self.export_support {
            want |= flag::EXPORT_SUPPORT;
        }
        if self.iomap {
            want |= flag::IOMAP;
        }
        if self.writeback_cache {
            want |= flag::WRITEBACK_CACHE;
        }
        if self.uring {
            want |= flag::OVER_IO_URING;
        }
        want
    }
}
