//! `-o` mount options: the names `ext4-fuse` uses, plus the ones FreeBSD's
//! `mount_fusefs` knows. Anything else is refused, so a typo never silently
//! mounts with defaults.

use std::fmt;

/// Everything `-o` can say, after parsing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountOpts {
    pub allow_other: bool,
    pub default_permissions: bool,
    pub fsname: Option<String>,
    pub subtype: Option<String>,
    /// Report every file as owned by this user / group.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Metadata block cache budget in bytes.
    pub cache_size: Option<usize>,
    /// Mount even though the journal needs recovery (which is not replayed).
    pub norecovery: bool,
    /// Log every request; implies foreground.
    pub debug: bool,
    /// Prefix absolute symlink targets with the mount point.
    pub push_symlinks_in: bool,
    /// Let signals interrupt requests waiting on the server (FreeBSD).
    pub intr: bool,
    /// Largest read request the kernel may send.
    pub max_read: Option<u32>,
    /// Generic VFS flags passed through to the mount (`nosuid`, `noatime`, ...).
    pub vfs_flags: Vec<VfsFlag>,
    /// `mount_fusefs` options that only mean something on FreeBSD
    /// (`private`, `noprivate`, `neglect_shares`); ignored elsewhere.
    pub bsd_only: Vec<String>,
}

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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptError(pub String);

impl fmt::Display for OptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OptError {}

fn err<T>(msg: String) -> Result<T, OptError> {
    Err(OptError(msg))
}

/// A byte count with an optional `k`, `m` or `g` suffix (powers of 1024).
pub fn parse_size(s: &str) -> Result<usize, OptError> {
    let t = s.trim();
    let (digits, shift) = match t.as_bytes().last().map(u8::to_ascii_lowercase) {
        Some(b'k') => (&t[..t.len() - 1], 10),
        Some(b'm') => (&t[..t.len() - 1], 20),
        Some(b'g') => (&t[..t.len() - 1], 30),
        _ => (t, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| OptError(format!("'{s}' is not a size (a number with k, m or g)")))?;
    n.checked_mul(1u64 << shift)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| OptError(format!("size '{s}' is too large")))
}

fn parse_id(name: &str, v: &str) -> Result<u32, OptError> {
    v.parse()
        .map_err(|_| OptError(format!("{name}= wants a number, got '{v}'")))
}

fn nonempty(name: &str, v: &str) -> Result<String, OptError> {
    if v.is_empty() || v.contains(',') {
        return err(format!("{name}= wants a non-empty value"));
    }
    Ok(v.to_string())
}

impl MountOpts {
    /// Apply one `-o` argument (comma-separated options).
    pub fn parse(&mut self, list: &str) -> Result<(), OptError> {
        for opt in list.split(',').filter(|o| !o.is_empty()) {
            self.parse_one(opt)?;
        }
        Ok(())
    }

    fn parse_one(&mut self, opt: &str) -> Result<(), OptError> {
        let (name, value) = match opt.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (opt, None),
        };
        match (name, value) {
            ("ro", None) => {}
            ("rw", None) => {
                return err(
                    "'rw' is not supported: ext4-fuse-bsd mounts read-only (writes are not implemented yet)"
                        .into(),
                )
            }
            ("allow_other", None) => self.allow_other = true,
            ("default_permissions", None) => self.default_permissions = true,
            ("norecovery", None) | ("noload", None) => self.norecovery = true,
            ("debug", None) => self.debug = true,
            ("push_symlinks_in", None) => self.push_symlinks_in = true,
            ("intr", None) => self.intr = true,
            ("fsname", Some(v)) => self.fsname = Some(nonempty(name, v)?),
            ("subtype", Some(v)) => self.subtype = Some(nonempty(name, v)?),
            ("uid", Some(v)) => self.uid = Some(parse_id(name, v)?),
            ("gid", Some(v)) => self.gid = Some(parse_id(name, v)?),
            ("cache_size", Some(v)) => {
                let n = parse_size(v)?;
                if n < 64 << 10 {
                    return err(format!("cache_size={v} is below the minimum of 64k"));
                }
                self.cache_size = Some(n);
            }
            ("max_read", Some(v)) => {
                let n = parse_size(v)?;
                let n = u32::try_from(n)
                    .ok()
                    .filter(|&n| n >= 4096)
                    .ok_or_else(|| OptError(format!("max_read={v} must be 4k..4g")))?;
                self.max_read = Some(n);
            }
            ("private", None) | ("noprivate", None) | ("neglect_shares", None) => {
                self.bsd_only.push(name.to_string())
            }
            (f, None) if vfs_flag(f).is_some() => self.vfs_flags.extend(vfs_flag(f)),
            (_, Some(_)) if KNOWN_FLAGS.contains(&name) => {
                return err(format!("option '{name}' takes no value"))
            }
            (_, None) if KNOWN_VALUED.contains(&name) => {
                return err(format!("option '{name}' needs a value ({name}=...)"))
            }
            _ => return err(format!("unknown mount option '{opt}'")),
        }
        Ok(())
    }
}

const KNOWN_FLAGS: &[&str] = &[
    "ro",
    "rw",
    "allow_other",
    "default_permissions",
    "norecovery",
    "noload",
    "debug",
    "push_symlinks_in",
    "intr",
    "private",
    "noprivate",
    "neglect_shares",
];
const KNOWN_VALUED: &[&str] = &["fsname", "subtype", "uid", "gid", "cache_size", "max_read"];

fn vfs_flag(s: &str) -> Option<VfsFlag> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<MountOpts, OptError> {
        let mut o = MountOpts::default();
        o.parse(s)?;
        Ok(o)
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64k").unwrap(), 64 << 10);
        assert_eq!(parse_size("32M").unwrap(), 32 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert!(parse_size("").is_err());
        assert!(parse_size("k").is_err());
        assert!(parse_size("-1m").is_err());
        assert!(parse_size("99999999999999999999g").is_err());
    }

    #[test]
    fn options() {
        let o = parse("ro,allow_other,uid=1000,gid=50,cache_size=8m,fsname=/dev/ada0p2").unwrap();
        assert!(o.allow_other);
        assert_eq!(o.uid, Some(1000));
        assert_eq!(o.gid, Some(50));
        assert_eq!(o.cache_size, Some(8 << 20));
        assert_eq!(o.fsname.as_deref(), Some("/dev/ada0p2"));
        let o = parse("push_symlinks_in,intr,max_read=65536,nosuid,private").unwrap();
        assert!(o.push_symlinks_in && o.intr);
        assert_eq!(o.max_read, Some(65536));
        assert_eq!(o.vfs_flags, vec![VfsFlag::NoSuid]);
        assert_eq!(o.bsd_only, vec!["private".to_string()]);
    }

    #[test]
    fn refusals() {
        assert!(parse("rw").unwrap_err().0.contains("read-only"));
        assert!(parse("bogus").unwrap_err().0.contains("unknown"));
        assert!(parse("uid=x").is_err());
        assert!(parse("uid").unwrap_err().0.contains("needs a value"));
        assert!(parse("ro=1").unwrap_err().0.contains("no value"));
        assert!(parse("cache_size=1k").is_err());
        assert!(parse("max_read=12").is_err());
        assert!(parse("fsname=").is_err());
    }
}
