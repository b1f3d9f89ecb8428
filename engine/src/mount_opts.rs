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

/// Generic VFS flags, kept in the order given (the last one wins).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VfsFlag {
    Dev,
    NoDev,
    Suid,
    NoSuid,
    Exec,
    NoExec,
    Atime,
    NoAtime,
}

impl VfsFlag {
    fn from_name(s: &str) -> Option<VfsFlag> {
        Some(match s {
            "dev" => VfsFlag::Dev,
            "nodev" => VfsFlag::NoDev,
            "suid" => VfsFlag::Suid,
            "nosuid" => VfsFlag::NoSuid,
            "exec" => VfsFlag::Exec,
            "noexec" => VfsFlag::NoExec,
            "atime" => VfsFlag::Atime,
            "noatime" => VfsFlag::NoAtime,
            _ => return None,
        })
    }
}

/// What the common options say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountOptions {
    pub allow_other: bool,
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
    /// `errors=`: what a write that finds the filesystem damaged does
    /// (default: the superblock's `s_errors`, as the kernel).
    pub errors: Option<OnError>,
}

/// `errors=`: what happens when a request finds the filesystem damaged
/// while it is mounted read-write (the kernel's `ext4_error`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    /// Report the error to the caller and go on.
    Continue,
    /// Stop writing: the mount turns read-only.
    RemountRo,
    /// Stop the server (the kernel panics; a FUSE server exits, and the
    /// mount fails every request with ENOTCONN).
    Panic,
}

impl OnError {
    /// The superblock's `s_errors` (1 continue, 2 remount-ro, 3 panic;
    /// anything else is the kernel's default, continue).
    pub fn from_superblock(s_errors: u16) -> OnError {
        match s_errors {
            2 => OnError::RemountRo,
            3 => OnError::Panic,
            _ => OnError::Continue,
        }
    }
}

/// The kernel's default commit interval (`JBD2_DEFAULT_MAX_COMMIT_AGE`).
pub const DEFAULT_COMMIT_SECS: u32 = 5;

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
    "name_index_size",
    "commit",
    "errors",
];

/// Accepted and ignored: read only by mount(8) and fstab tools, or
/// choices the kernel's FUSE makes for the server (atime updates).
const IGNORED: &[&str] = &[
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "diratime",
    "nodiratime",
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
                "replay_budget" => {
                    let n = parse_size(v).map_err(|e| {
                        OptionError(alloc::format!("mount option replay_budget={v}: {e}"))
                    })?;
                    self.replay_budget = Some(n);
                }
                "commit" => {
                    let n: u32 = number(name, v)?;
                    self.commit_secs = Some(if n == 0 { DEFAULT_COMMIT_SECS } else { n });
                }
                "errors" => {
                    self.errors = Some(match v {
                        "continue" => OnError::Continue,
                        "remount-ro" => OnError::RemountRo,
                        "panic" => OnError::Panic,
                        _ => {
                            return refuse(alloc::format!(
                                "mount option errors={v}: use errors=continue, errors=remount-ro or errors=panic"
                            ))
                        }
                    });
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
            // Permissions are always checked: both servers mount with
            // `default_permissions` (and accept POSIX ACLs where the
            // kernel offers them), so the kernel checks every request,
            // with or without this option.
            "default_permissions" => {
                let mut always = true;
                flag(&mut always)
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

    /// Set-uid bits are ignored unless `suid` is given: the image is
    /// untrusted (libfuse's default for user mounts, applied to all).
    pub fn nosuid(&self) -> bool {
        self.last(VfsFlag::NoSuid, VfsFlag::Suid, true)
    }
    /// Device nodes are inert unless `dev` is given, for the same reason.
    pub fn nodev(&self) -> bool {
        self.last(VfsFlag::NoDev, VfsFlag::Dev, true)
    }
    pub fn noexec(&self) -> bool {
        self.last(VfsFlag::NoExec, VfsFlag::Exec, false)
    }
    pub fn noatime(&self) -> bool {
        self.last(VfsFlag::NoAtime, VfsFlag::Atime, false)
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
    pub fn on_error<D: BlockDevice>(&self, vol: &Volume<D>) -> OnError {
        self.errors
            .unwrap_or_else(|| OnError::from_superblock(vol.sb().errors))
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
        assert!(o.noexec() && !o.nosuid() && o.nodev() && !o.noatime());
        assert_eq!(rest, vec!["threads".to_string()]);
        let (o, _) = parse("nosuid,suid,nosuid,noload,debug,noatime").unwrap();
        assert!(o.nosuid() && o.norecovery && o.debug && o.noatime());
        assert!(!o.read_only && !o.sync);
        let (o, _) = parse("ro,sync,dirsync,commit=30,errors=remount-ro").unwrap();
        assert!(o.read_only && o.sync && o.dirsync);
        assert_eq!(
            (o.commit_secs, o.errors),
            (Some(30), Some(OnError::RemountRo))
        );
        let (o, _) = parse("ro,rw,sync,async,commit=0").unwrap();
        assert!(!o.read_only && !o.sync);
        assert_eq!(o.commit_secs, Some(DEFAULT_COMMIT_SECS));
    }

    #[test]
    fn refusals_name_the_option() {
        let e = |l: &str| parse(l).unwrap_err().0;
        assert!(e("errors=sometimes").contains("errors=continue"));
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
