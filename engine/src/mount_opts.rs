//! `-o` mount options both FUSE frontends share, in the style of mount(8)
//! and fuse2fs, so `/etc/fstab` lines read the same on Linux and FreeBSD.
//!
//! A frontend feeds each option through [`MountOptions::apply`]; the names
//! only it knows come back to it (`Ok(Some(..))`), and it refuses what it
//! does not know either, so a typo never mounts silently with defaults.

use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use crate::device::BlockDevice;
use crate::volume::{OnDamage, OpenOptions, Recovery, Volume};
use crate::write::{AtimeMode, AtimeRule};

/// A refused option, as the one line to print.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptionError(pub String);

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for OptionError {}

fn refuse<T>(msg: String) -> Result<T, OptionError> {
    Err(OptionError(msg))
}

/// Generic VFS flags, kept in the order given (the last one wins). There
/// is no `Suid` or `Dev`: see [`MountOptions::nosuid`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VfsFlag {
    NoDev,
    NoSuid,
    Exec,
    NoExec,
    Atime,
    NoAtime,
}

impl VfsFlag {
    fn from_name(s: &str) -> Option<VfsFlag> {
        Some(match s {
            "nodev" => VfsFlag::NoDev,
            "nosuid" => VfsFlag::NoSuid,
            "exec" => VfsFlag::Exec,
            "noexec" => VfsFlag::NoExec,
            "atime" => VfsFlag::Atime,
            "noatime" => VfsFlag::NoAtime,
            _ => return None,
        })
    }
}

/// `errors=`: what to do when damage is found (the kernel's
/// `ext4_error`). `continue`: the damaged object fails alone; `remount-ro`:
/// a read-write mount stops writing (a read-only one goes on); `panic`:
/// the server stops at the first damage, as fuse2fs' `errors=panic` does
/// (the kernel panics). Without the option, the superblock's `s_errors`
/// decides ([`MountOptions::on_error`]), as with the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnErrors {
    #[default]
    Continue,
    RemountRo,
    Panic,
}

impl OnErrors {
    /// The superblock's `s_errors` (1 continue, 2 remount-ro, 3 panic;
    /// anything else is the kernel's default, continue).
    pub fn from_superblock(s_errors: u16) -> OnErrors {
        match s_errors {
            2 => OnErrors::RemountRo,
            3 => OnErrors::Panic,
            _ => OnErrors::Continue,
        }
    }
}

/// The kernel's default commit interval (`JBD2_DEFAULT_MAX_COMMIT_AGE`).
pub const DEFAULT_COMMIT_SECS: u32 = 5;

/// What the common options say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountOptions {
    /// `allow_other` as given; see [`MountOptions::allow_other`].
    pub allow_other: bool,
    /// fuse2fs' `kernel`: act as the kernel's ext4 would — every user
    /// admitted, set-uid bits and device nodes live.
    pub kernel: bool,
    /// fuse2fs' `fakeroot`: the user running the server gets an owner's
    /// rights to every file (files are shown as theirs, unless `uid=`/
    /// `gid=` say otherwise); set-uid and devices stay off.
    pub fakeroot: bool,
    /// `errors=` as given (see [`MountOptions::on_error`]).
    pub errors: Option<OnErrors>,
    /// `statfs` without subtracting the metadata overhead (`minixdf`).
    pub minixdf: bool,
    /// Largest read request the kernel may send (`max_read=`).
    pub max_read: Option<u32>,
    /// Where the filesystem starts in SOURCE (`offset=BYTES`).
    pub offset: Option<u64>,
    /// The partition of a whole-disk image holding the filesystem
    /// (`partition=N`, numbered as the partition table numbers them).
    pub partition: Option<u32>,
    /// Source name shown in the mount table.
    pub fsname: Option<String>,
    pub subtype: Option<String>,
    /// Report every file as owned by this user / group.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Metadata cache budget in bytes.
    pub cache_size: Option<usize>,
    /// Budget of the name indexes of big unindexed directories, in bytes
    /// (0: scan them).
    pub name_index_size: Option<usize>,
    /// Ignore a journal that needs recovery, as the kernel's
    /// `norecovery`: the filesystem as the device holds it, without the
    /// journal's newest changes. Without it the journal is replayed in
    /// memory (the image is not written).
    pub norecovery: bool,
    /// The external journal device, for a filesystem whose journal is not
    /// in an inode (the kernel's `journal_path=`).
    pub journal_path: Option<String>,
    /// Budget of the replay plan (`replay_budget=`); see
    /// [`OpenOptions::replay_budget`].
    pub replay_budget: Option<usize>,
    /// Log every request; implies foreground.
    pub debug: bool,
    /// Append log lines to this file instead of stderr or syslog (for
    /// machines with neither a terminal nor a log daemon).
    pub logfile: Option<String>,
    pub vfs_flags: Vec<VfsFlag>,
    /// `ro`: never write. Read-write is the default, as with fuse2fs and
    /// mount(8); a volume that cannot be written mounts read-only anyway
    /// ([`MountOptions::open_volume`] says why).
    pub read_only: bool,
    /// `sync`: every change is durable before its request is answered.
    pub sync: bool,
    /// `dirsync`: changes to directories are durable before their
    /// request is answered.
    pub dirsync: bool,
    /// `commit=N`: commit what is pending every N seconds (the kernel's
    /// default 5; 0 means the default).
    pub commit_secs: Option<u32>,
    /// `strictatime`/`norelatime` (`true`) or `relatime`/`nostrictatime`
    /// (`false`, the default), the last one given; see
    /// [`MountOptions::atime_rule`].
    pub strictatime: bool,
    /// `nodiratime` (or `diratime`, the default), the last one given.
    pub nodiratime: bool,
}

/// `--help`'s list of the options every FUSE frontend takes; each adds
/// its own after it.
pub const HELP: &str = "\
Mount options (-o, comma-separated), in the style of mount(8) and fuse2fs:
  ro, rw               read-only, or read-write (the default, as with fuse2fs
                       and mount(8)); a filesystem with a feature that cannot
                       be written, or a device without write access, mounts
                       read-only with a warning
  sync, async          every change is on disk before the call returns (sync),
                       or once committed (async, the default)
  dirsync              every change to a directory is on disk before the call
                       returns
  commit=SECONDS       commit pending changes at least this often (default 5)
  allow_other          let other users use the mount
  default_permissions  accepted: permissions (and POSIX ACLs) are always
                       checked, by the kernel, for every user
  fsname=NAME          source shown in /proc/mounts (default: SOURCE made absolute)
  subtype=NAME         the mount's type is fuse.NAME (default: the program's name)
  uid=N, gid=N         report every file as owned by this uid / gid
  cache_size=N[k|m|g]  metadata cache budget (default 32m, at least 64k)
  name_index_size=N[k|m|g]  memory for name indexes of big directories that
                       have no hash tree (default 8m; 0: scan them per lookup)
  offset=BYTES         the filesystem starts this far into SOURCE
  partition=N          the filesystem is partition N of a whole-disk image
                       (MBR or GPT; without it such an image is refused with a
                       list of its ext2/3/4 partitions)
  norecovery, noload   ignore a journal that needs recovery (as the kernel's
                       norecovery): the filesystem without the journal's newest
                       changes; forces read-only. Without it the journal is
                       replayed: onto the image read-write, in memory with ro
                       (the image itself left unchanged)
  journal_path=PATH    the external journal device of a filesystem whose
                       journal is not in an inode (read to replay it)
  replay_budget=N[k|m|g]  memory for the plan of a journal replayed in memory,
                       32 bytes per logged block (default 32m)
  logfile=PATH         append log lines (damage found, failures) to PATH
                       instead of stderr, or syslog once detached
  errors=continue|remount-ro|panic  on damage: go on, the damaged object
                       failing alone (continue), stop writing (remount-ro),
                       or stop the server (panic, as fuse2fs: the mount goes
                       away); default: the superblock's setting
  max_read=N[k|m]      largest read the kernel may ask for (at least 4k)
  minixdf, bsddf       statfs counts all blocks (minixdf, as the kernel's
                       option) or leaves out metadata overhead (bsddf, default)
  kernel               as fuse2fs: act as the kernel would, allow_other with
                       set-uid files and device nodes working (trusted images)
  fakeroot             as fuse2fs, for images of files owned by others: every
                       file is shown as owned by the user running the server
                       (unless uid=/gid= say otherwise); never suid or dev
  nosuid, nodev        always on unless kernel is given: the image is untrusted.
                       suid and dev are accepted but do nothing: mount(8) and
                       mount.fuse3 add them to every helper's options by
                       themselves, so they never say what was asked
  noexec, exec         mount flags
  relatime, strictatime, noatime
                       when reads, listings and readlinks that reach the
                       server update access times, as the kernel's options:
                       relatime (default: when the atime is not after the
                       mtime or ctime, or a day old), strictatime (always),
                       noatime (never); also norelatime, nostrictatime,
                       atime, nodiratime, diratime. chattr +A files never
  debug                log every request (implies -f)
  Accepted with no effect: the fstab options (auto, noauto, user, users,
  nofail, _netdev, defaults, x-*, comment=), lazytime (atimes are committed
  with everything else, within commit= seconds), and fuse2fs/libfuse habits
  whose effect is always on:
  kernel_cache (the page cache is kept), auto_unmount (no dead mount is left
  when the server ends), nonempty (any directory can be mounted on),
  no_default_opts (there are no libfuse defaults to drop).
";

/// The smallest `cache_size=` accepted: below it every lookup would miss.
pub const MIN_CACHE_SIZE: usize = 64 << 10;

/// Options with a value; the rest of the common ones are flags.
const VALUED: &[&str] = &[
    "fsname",
    "subtype",
    "uid",
    "gid",
    "cache_size",
    "journal_path",
    "journal_dev",
    "replay_budget",
    "logfile",
    "errors",
    "max_read",
    "offset",
    "partition",
    "name_index_size",
    "commit",
];

/// Accepted and ignored: meaningless on a read-only mount, or read only by
/// mount(8) and fstab tools.
const IGNORED: &[&str] = &[
    // Atime updates are journaled as any change, committed within
    // commit= seconds: lazytime's at most.
    "lazytime",
    "nolazytime",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "owner",
    "group",
    "_netdev",
    "nofail",
    "defaults",
    "loop",
    // fuse2fs and libfuse habits whose effect is always ours: the page
    // cache is kept (kernel_cache), nothing is left mounted by a dead
    // server (auto_unmount), fuse3 mounts over non-empty directories
    // (nonempty), and there are no libfuse defaults to drop
    // (no_default_opts).
    "kernel_cache",
    "auto_unmount",
    "nonempty",
    "no_default_opts",
    // Set-uid bits and device nodes stay off unless `kernel` asks: mount(8)
    // drops `suid`/`dev` from what the administrator wrote (they are its
    // defaults) and, like mount.fuse3, adds them to a helper's options by
    // itself, so in an option list they never say what anyone wanted.
    "suid",
    "dev",
];

impl MountOptions {
    /// Apply one option (`name` or `name=value`). A name this module does
    /// not know comes back as `Ok(Some((name, value)))` for the frontend.
    pub fn apply<'a>(
        &mut self,
        opt: &'a str,
    ) -> Result<Option<(&'a str, Option<&'a str>)>, OptionError> {
        let (name, value) = match opt.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (opt, None),
        };
        let flag = |set: &mut bool| match value {
            None => {
                *set = true;
                Ok(None)
            }
            Some(_) => refuse(alloc::format!("mount option {name} takes no value")),
        };
        if VALUED.contains(&name) {
            let Some(v) = value else {
                return refuse(alloc::format!(
                    "mount option {name} needs a value ({name}=...)"
                ));
            };
            match name {
                "fsname" => self.fsname = Some(nonempty(name, v)?),
                "subtype" => self.subtype = Some(nonempty(name, v)?),
                "logfile" => self.logfile = Some(nonempty(name, v)?),
                "uid" => self.uid = Some(number(name, v)?),
                "gid" => self.gid = Some(number(name, v)?),
                "journal_path" => self.journal_path = Some(nonempty(name, v)?),
                "journal_dev" => {
                    return refuse(alloc::format!(
                        "mount option journal_dev={v}: a device number cannot be opened from \
                         user space; give the journal device's path with journal_path=PATH"
                    ))
                }
                "errors" => {
                    self.errors = Some(match v {
                        "continue" => OnErrors::Continue,
                        "remount-ro" => OnErrors::RemountRo,
                        "panic" => OnErrors::Panic,
                        _ => {
                            return refuse(alloc::format!(
                                "mount option errors={v}: must be continue, remount-ro or panic"
                            ))
                        }
                    })
                }
                "commit" => {
                    let n: u32 = number(name, v)?;
                    self.commit_secs = Some(if n == 0 { DEFAULT_COMMIT_SECS } else { n });
                }
                "max_read" => {
                    let n = parse_size(v)?;
                    let n = u32::try_from(n)
                        .ok()
                        .filter(|&n| n >= 4096)
                        .ok_or_else(|| {
                            OptionError(alloc::format!("mount option max_read={v}: must be 4k..4g"))
                        })?;
                    self.max_read = Some(n);
                }
                "offset" => {
                    let n = parse_size(v)
                        .map_err(|e| OptionError(alloc::format!("mount option offset={v}: {e}")))?;
                    self.offset = Some(n as u64);
                }
                "partition" => {
                    let n: u32 = number(name, v)?;
                    if n == 0 {
                        return refuse(
                            "mount option partition=0: partitions are numbered from 1".to_string(),
                        );
                    }
                    self.partition = Some(n);
                }
                "replay_budget" => {
                    let n = parse_size(v).map_err(|e| {
                        OptionError(alloc::format!("mount option replay_budget={v}: {e}"))
                    })?;
                    self.replay_budget = Some(n);
                }
                "name_index_size" => {
                    let n = parse_size(v).map_err(|e| {
                        OptionError(alloc::format!("mount option name_index_size={v}: {e}"))
                    })?;
                    self.name_index_size = Some(n);
                }
                _ => {
                    let n = parse_size(v).map_err(|e| {
                        OptionError(alloc::format!("mount option cache_size={v}: {e}"))
                    })?;
                    if n < MIN_CACHE_SIZE {
                        return refuse(alloc::format!(
                            "mount option cache_size={v}: below the minimum of 64k"
                        ));
                    }
                    self.cache_size = Some(n);
                }
            }
            return Ok(None);
        }
        match name {
            "ro" => flag(&mut self.read_only),
            "rw" => {
                let mut rw = false;
                flag(&mut rw)?;
                self.read_only = false;
                Ok(None)
            }
            "sync" => flag(&mut self.sync),
            "async" => {
                let mut seen = false;
                flag(&mut seen)?;
                self.sync = false;
                Ok(None)
            }
            "dirsync" => flag(&mut self.dirsync),
            "allow_other" => flag(&mut self.allow_other),
            "kernel" => flag(&mut self.kernel),
            "fakeroot" => flag(&mut self.fakeroot),
            "minixdf" => flag(&mut self.minixdf),
            "bsddf" => {
                let mut bsd = true;
                flag(&mut bsd)?;
                self.minixdf = false;
                Ok(None)
            }
            "user" if value.is_some() => refuse(
                "mount option user=NAME: mount(8) reads it as its own 'user' option (that user \
                 may then unmount, and mount(8) turns suid and dev on); name the user the \
                 server runs as with setuid=NAME"
                    .to_string(),
            ),
            // Permissions are always checked: both servers mount with
            // `default_permissions` (and accept POSIX ACLs where the
            // kernel offers them), so the kernel checks every request,
            // with or without this option.
            "default_permissions" => {
                let mut always = true;
                flag(&mut always)
            }
            "strictatime" | "norelatime" | "relatime" | "nostrictatime" => {
                let mut strict = false;
                flag(&mut strict)?;
                self.strictatime = matches!(name, "strictatime" | "norelatime");
                Ok(None)
            }
            "nodiratime" | "diratime" => {
                let mut seen = false;
                flag(&mut seen)?;
                self.nodiratime = name == "nodiratime";
                Ok(None)
            }
            "norecovery" | "noload" => flag(&mut self.norecovery),
            "debug" => flag(&mut self.debug),
            _ if VfsFlag::from_name(name).is_some() => {
                let mut seen = false;
                flag(&mut seen)?;
                self.vfs_flags.extend(VfsFlag::from_name(name));
                Ok(None)
            }
            _ if IGNORED.contains(&name) || name.starts_with("x-") || name == "comment" => Ok(None),
            _ => Ok(Some((name, value))),
        }
    }

    /// Whether users other than the one mounting are admitted
    /// (`allow_other`, or fuse2fs' `kernel`).
    pub fn allow_other(&self) -> bool {
        self.allow_other || self.kernel
    }

    /// The owner and group every file is shown with, if any (`uid=`,
    /// `gid=`, or `fakeroot`'s: the user running the server, `me`).
    pub fn shown_ids(&self, me: (u32, u32)) -> (Option<u32>, Option<u32>) {
        if self.fakeroot {
            (self.uid.or(Some(me.0)), self.gid.or(Some(me.1)))
        } else {
            (self.uid, self.gid)
        }
    }

    /// The last of `a`/`b` given wins; `default` when neither was.
    fn last(&self, on: VfsFlag, off: VfsFlag, default: bool) -> bool {
        self.vfs_flags
            .iter()
            .rev()
            .find_map(|f| {
                if *f == on {
                    Some(true)
                } else if *f == off {
                    Some(false)
                } else {
                    None
                }
            })
            .unwrap_or(default)
    }

    /// Set-uid bits are ignored unless `kernel` is given (and no later
    /// `nosuid`): the image is untrusted (libfuse's default for user
    /// mounts, applied to all). A plain `suid` does not count; see
    /// [`IGNORED`].
    pub fn nosuid(&self) -> bool {
        !self.kernel || self.fakeroot || self.vfs_flags.contains(&VfsFlag::NoSuid)
    }
    /// Device nodes are inert unless `kernel` is given, for the same reason.
    pub fn nodev(&self) -> bool {
        !self.kernel || self.fakeroot || self.vfs_flags.contains(&VfsFlag::NoDev)
    }
    pub fn noexec(&self) -> bool {
        self.last(VfsFlag::NoExec, VfsFlag::Exec, false)
    }
    pub fn noatime(&self) -> bool {
        self.last(VfsFlag::NoAtime, VfsFlag::Atime, false)
    }
    /// When reads, listings and readlinks update atimes, as the kernel's
    /// options say: `noatime` wins, then `strictatime` or `relatime` (the
    /// default), and `nodiratime`.
    pub fn atime_rule(&self) -> AtimeRule {
        let mode = if self.noatime() {
            AtimeMode::Never
        } else if self.strictatime {
            AtimeMode::Strict
        } else {
            AtimeMode::Relative
        };
        AtimeRule {
            mode,
            nodiratime: self.nodiratime,
        }
    }

    /// Where in `dev` the filesystem lies (`offset=`, `partition=`, or all
    /// of it); on a whole-disk image without either, the error lists the
    /// partitions holding ext2/3/4. See [`crate::partitions::locate`].
    pub fn locate<D: BlockDevice + ?Sized>(&self, dev: &D) -> Result<Option<(u64, u64)>, String> {
        crate::partitions::locate(dev, self.offset, self.partition, |s| {
            alloc::format!("-o {s}={}", if s == "offset" { "BYTES" } else { "N" })
        })
    }

    /// Open `dev` for a mount with these options: read-write unless `ro`
    /// or `norecovery` (the kernel allows it only read-only), with the
    /// `cache_size` budget, failing on damage as the kernel does, a
    /// journal that needs recovery replayed (onto the device read-write,
    /// in memory read-only) unless `norecovery` (then ignored), its
    /// external device opened by `open_journal` from `journal_path=`. A
    /// device without write access or a feature the engine cannot write
    /// mounts read-only, saying why ([`Opened::read_only_because`]), as
    /// the kernel mounts write-protected media. `Err` is the one line to
    /// print.
    pub fn open_volume<D: BlockDevice>(
        &self,
        dev: D,
        open_journal: impl FnOnce(&str) -> Result<Box<dyn BlockDevice>, String>,
    ) -> Result<Opened<D>, String> {
        let read_only_because = self.read_only_because(&dev)?;
        let read_only = self.read_only || read_only_because.is_some();
        let mut o = OpenOptions {
            read_only,
            // A mounted filesystem answers as the kernel's ext4 does.
            on_damage: OnDamage::AsKernel,
            ..OpenOptions::default()
        };
        if let Some(n) = self.cache_size {
            o.cache_bytes = n;
        }
        if let Some(n) = self.replay_budget {
            o.replay_budget = n;
        }
        if let Some(n) = self.name_index_size {
            o.name_index_bytes = n;
        }
        if self.norecovery {
            o.recovery = Recovery::Skip;
        }
        o.minixdf = self.minixdf;
        let journal = match &self.journal_path {
            Some(p) => Some(open_journal(p).map_err(|e| alloc::format!("journal_path={p}: {e}"))?),
            None => None,
        };
        let volume = Volume::open_with_journal(dev, journal, &o).map_err(|e| match e {
            crate::Error::Journal(j) if !self.norecovery => alloc::format!(
                "{j} (mount with -o norecovery to see the filesystem without the journal's changes)"
            ),
            crate::Error::Unsupported { what } if !read_only => alloc::format!(
                "{what} (a read-write mount needs cache_size= of at least 256 blocks; or mount with -o ro)"
            ),
            e => e.to_string(),
        })?;
        Ok(Opened {
            volume,
            read_only_because,
        })
    }

    /// Why a mount of `dev` that these options want read-write must be
    /// read-only (`None`: it can be written, or `ro` was asked for).
    pub fn read_only_because<D: BlockDevice>(&self, dev: &D) -> Result<Option<String>, String> {
        if self.read_only {
            return Ok(None);
        }
        if self.norecovery {
            return Ok(Some(String::from(
                "norecovery: the journal is not replayed, so nothing may be written",
            )));
        }
        Ok(crate::writable::device_refusal(dev)
            .map_err(|e| e.to_string())?
            .map(|e| match e {
                crate::Error::ReadOnly => {
                    String::from("the device or image cannot be opened for writing")
                }
                e => e.to_string(),
            }))
    }

    /// The `errors=` behaviour for `vol`: the option, else the
    /// superblock's, as the kernel decides.
    pub fn on_error<D: BlockDevice>(&self, vol: &Volume<D>) -> OnErrors {
        self.errors
            .unwrap_or_else(|| OnErrors::from_superblock(vol.sb().errors))
    }
}

/// A volume opened for a mount.
pub struct Opened<D: BlockDevice> {
    pub volume: Volume<D>,
    /// Why a mount that was to be read-write is read-only (one line for
    /// the user), if it is.
    pub read_only_because: Option<String>,
}

/// Split an `-o` list on commas, honouring `\,` escapes as libfuse does.
pub fn split_list(list: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = list.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.extend(chars.next()),
            ',' => out.push(core::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out.retain(|s| !s.is_empty());
    out
}

/// A byte count with an optional `k`, `m` or `g` suffix (powers of 1024).
pub fn parse_size(s: &str) -> Result<usize, OptionError> {
    let t = s.trim();
    let (digits, shift) = match t.as_bytes().last().map(u8::to_ascii_lowercase) {
        Some(b'k') => (&t[..t.len() - 1], 10),
        Some(b'm') => (&t[..t.len() - 1], 20),
        Some(b'g') => (&t[..t.len() - 1], 30),
        _ => (t, 0),
    };
    let n: u64 = digits.parse().map_err(|_| {
        OptionError(alloc::format!(
            "'{s}' is not a size (a number with k, m or g, such as 64m)"
        ))
    })?;
    n.checked_mul(1u64 << shift)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| OptionError(alloc::format!("size '{s}' is too large")))
}

/// A decimal option value.
pub fn number<T: core::str::FromStr>(name: &str, v: &str) -> Result<T, OptionError> {
    v.parse()
        .map_err(|_| OptionError(alloc::format!("mount option {name}={v}: not a number")))
}

fn nonempty(name: &str, v: &str) -> Result<String, OptionError> {
    if v.is_empty() {
        return refuse(alloc::format!(
            "mount option {name}= needs a non-empty value"
        ));
    }
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn parse(list: &str) -> Result<(MountOptions, Vec<String>), OptionError> {
        let mut o = MountOptions::default();
        let mut rest = Vec::new();
        for opt in split_list(list) {
            if let Some((n, _)) = o.apply(&opt)? {
                rest.push(n.to_string());
            }
        }
        Ok((o, rest))
    }

    #[test]
    fn atime_options_last_one_wins() {
        for (list, mode, nodiratime) in [
            ("", AtimeMode::Relative, false),
            ("strictatime", AtimeMode::Strict, false),
            ("strictatime,relatime", AtimeMode::Relative, false),
            ("norelatime,nodiratime", AtimeMode::Strict, true),
            (
                "nodiratime,diratime,nostrictatime",
                AtimeMode::Relative,
                false,
            ),
            ("strictatime,noatime", AtimeMode::Never, false),
            ("noatime,atime,lazytime", AtimeMode::Relative, false),
        ] {
            let (o, rest) = parse(list).unwrap();
            assert!(rest.is_empty(), "{list}");
            assert_eq!(o.atime_rule(), AtimeRule { mode, nodiratime }, "{list}");
        }
        assert!(parse("relatime=1").is_err());
    }

    #[test]
    fn common_options() {
        let (o, rest) = parse(
            "ro,allow_other,uid=1000,gid=50,cache_size=8m,name_index_size=0,fsname=my\\,disk,noexec,suid,threads=4,x-systemd.automount,relatime",
        )
        .unwrap();
        assert!(o.allow_other && !o.debug);
        assert_eq!(
            (o.uid, o.gid, o.cache_size),
            (Some(1000), Some(50), Some(8 << 20))
        );
        assert_eq!(o.fsname.as_deref(), Some("my,disk"));
        // `suid` in a list is mount(8)'s or mount.fuse3's, never honoured.
        assert!(o.noexec() && o.nosuid() && o.nodev() && !o.noatime());
        assert_eq!(rest, vec!["threads".to_string()]);
        let (o, _) = parse("ro,dev,suid").unwrap();
        assert!(o.nosuid() && o.nodev() && !o.allow_other());
        let (o, _) = parse("kernel").unwrap();
        assert!(!o.nosuid() && !o.nodev() && o.allow_other());
        let (o, _) = parse("kernel,nodev").unwrap();
        assert!(!o.nosuid() && o.nodev());
        let (o, _) = parse("kernel,fakeroot").unwrap();
        assert!(o.nosuid() && o.nodev());
        let (o, _) = parse("nosuid,suid,nosuid,noload,debug,noatime").unwrap();
        assert!(o.nosuid() && o.norecovery && o.debug && o.noatime());
        assert!(!o.read_only && !o.sync);
        let (o, _) = parse("ro,sync,dirsync,commit=30,errors=remount-ro").unwrap();
        assert!(o.read_only && o.sync && o.dirsync);
        assert_eq!(
            (o.commit_secs, o.errors),
            (Some(30), Some(OnErrors::RemountRo))
        );
        let (o, _) = parse("ro,rw,sync,async,commit=0").unwrap();
        assert!(!o.read_only && !o.sync);
        assert_eq!(o.commit_secs, Some(DEFAULT_COMMIT_SECS));
    }

    #[test]
    fn refusals_name_the_option() {
        let e = |l: &str| parse(l).unwrap_err().0;
        assert!(e("commit=soon").contains("not a number"));
        assert!(e("uid=bob").contains("uid=bob: not a number"));
        assert!(e("uid").contains("needs a value"));
        assert!(e("ro=1").contains("takes no value"));
        assert!(e("nosuid=1").contains("takes no value"));
        assert!(e("cache_size=lots").contains("cache_size=lots"));
        assert!(e("cache_size=1k").contains("minimum"));
        assert!(e("name_index_size=x").contains("name_index_size=x"));
        assert!(e("fsname=").contains("non-empty"));
    }

    #[test]
    fn fuse2fs_options() {
        let (o, rest) = parse(
            "fakeroot,errors=panic,minixdf,no_default_opts,auto_unmount,kernel_cache,max_read=64k,nonempty,offset=1048576,partition=2",
        )
        .unwrap();
        assert!(rest.is_empty(), "{rest:?}");
        assert!(o.fakeroot && o.minixdf);
        assert_eq!(o.errors, Some(OnErrors::Panic));
        assert_eq!(
            (o.max_read, o.offset, o.partition),
            (Some(65536), Some(1 << 20), Some(2))
        );
        assert_eq!(o.shown_ids((1000, 100)), (Some(1000), Some(100)));
        let (o, _) = parse("fakeroot,uid=5,minixdf,bsddf,errors=remount-ro").unwrap();
        assert_eq!(o.shown_ids((1000, 100)), (Some(5), Some(100)));
        assert!(!o.minixdf && o.errors == Some(OnErrors::RemountRo));
        let e = |l: &str| parse(l).unwrap_err().0;
        assert!(e("errors=explode").contains("continue, remount-ro or panic"));
        assert!(e("max_read=12").contains("4k..4g"));
        assert!(e("partition=0").contains("from 1"));
        assert!(e("offset=x").contains("offset=x"));
        assert!(e("user=nobody").contains("setuid=NAME"));
        assert!(parse("user,users,nouser").is_ok());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64k").unwrap(), 64 << 10);
        assert_eq!(parse_size("32M").unwrap(), 32 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        for bad in ["", "k", "-1m", "99999999999999999999g", "17179869184g"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn journal_options() {
        let (o, _) = parse("journal_path=/dev/sdb1,replay_budget=64m,norecovery").unwrap();
        assert_eq!(o.journal_path.as_deref(), Some("/dev/sdb1"));
        assert_eq!(o.replay_budget, Some(64 << 20));
        assert!(o.norecovery);
        let e = |l: &str| parse(l).unwrap_err().0;
        assert!(e("journal_dev=2065").contains("journal_path="));
        assert!(e("journal_path=").contains("non-empty"));
        assert!(e("replay_budget=lots").contains("replay_budget=lots"));
    }
}
