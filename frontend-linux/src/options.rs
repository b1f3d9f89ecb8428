//! Command line and `-o` mount options, in the style of fuse2fs and mount(8),
//! so `ext4-fuse` works from /etc/fstab through `mount.fuse3`.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "ext4-fuse",
    version,
    about = "Mount an ext2/ext3/ext4 filesystem (image file or block device) read-only through FUSE",
    after_help = "Mount options (-o, comma-separated):\n  \
        ro                   read-only (the only mode for now; rw is refused)\n  \
        allow_other          let other users access the mount\n  \
        default_permissions  let the kernel check permissions (and POSIX ACLs)\n  \
        fsname=NAME          source name shown in /proc/mounts\n  \
        uid=N, gid=N         report every file as owned by this uid / gid\n  \
        cache_size=N[k|m|g]  metadata cache budget (default 32m)\n  \
        threads=N            FUSE worker threads\n  \
        norecovery           do not replay the journal\n  \
        debug                log every request (implies -f)\n  \
        nosuid, nodev, noexec and their opposites, atime options, and fstab-only\n  \
        options (auto, noauto, user, nofail, _netdev, x-*) are accepted too."
)]
struct Cli {
    /// Image file or block device holding the filesystem.
    source: PathBuf,
    /// Directory to mount it on.
    mountpoint: PathBuf,
    /// Mount options.
    #[arg(short = 'o', value_name = "OPTIONS", action = clap::ArgAction::Append)]
    options: Vec<String>,
    /// Stay in the foreground.
    #[arg(short = 'f')]
    foreground: bool,
    /// Debug: log every request; implies -f.
    #[arg(short = 'd')]
    debug: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub source: PathBuf,
    pub mountpoint: PathBuf,
    pub foreground: bool,
    pub debug: bool,
    pub allow_other: bool,
    pub default_permissions: bool,
    pub fsname: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub cache_size: Option<usize>,
    pub threads: Option<usize>,
    pub norecovery: bool,
    pub nosuid: bool,
    pub nodev: bool,
    pub noexec: bool,
}

/// Parse the command line (`args` without the program name). `Err` carries
/// the one line to print; clap's help/version come back as `Err` too, and
/// [`is_help`] tells them apart.
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Options, clap::Error> {
    let cli = Cli::try_parse_from(std::iter::once("ext4-fuse".to_string()).chain(args))?;
    let mut o = Options {
        source: cli.source,
        mountpoint: cli.mountpoint,
        foreground: cli.foreground || cli.debug,
        debug: cli.debug,
        // Like libfuse: setuid binaries and device nodes are off unless asked.
        nosuid: true,
        nodev: true,
        ..Default::default()
    };
    for list in &cli.options {
        for opt in split_options(list) {
            apply(&mut o, &opt).map_err(|msg| {
                clap::Error::raw(clap::error::ErrorKind::InvalidValue, format!("{msg}\n"))
            })?;
        }
    }
    Ok(o)
}

pub fn is_help(e: &clap::Error) -> bool {
    matches!(
        e.kind(),
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
    )
}

/// Split on commas, honouring `\,` escapes (as libfuse does).
fn split_options(list: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = list.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    out.last_mut().unwrap().push(n);
                }
            }
            ',' => out.push(String::new()),
            c => out.last_mut().unwrap().push(c),
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("mount option {key}={value}: not a number"))
}

/// `N`, `Nk`, `Nm`, `Ng` (binary multiples) to bytes.
pub fn parse_size(value: &str) -> Option<usize> {
    let (digits, shift) = match value.chars().last()? {
        'k' | 'K' => (&value[..value.len() - 1], 10),
        'm' | 'M' => (&value[..value.len() - 1], 20),
        'g' | 'G' => (&value[..value.len() - 1], 30),
        _ => (value, 0),
    };
    let n: usize = digits.parse().ok()?;
    n.checked_mul(1usize.checked_shl(shift)?)
}

fn apply(o: &mut Options, opt: &str) -> Result<(), String> {
    let (key, value) = match opt.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (opt, None),
    };
    let need = || value.ok_or_else(|| format!("mount option {key} needs a value ({key}=...)"));
    match key {
        "ro" => {}
        "rw" => {
            return Err("read-write mounts are not supported yet: mount with -o ro".into());
        }
        "allow_other" => o.allow_other = true,
        "default_permissions" => o.default_permissions = true,
        "debug" => {
            o.debug = true;
            o.foreground = true;
        }
        "norecovery" | "noload" => o.norecovery = true,
        "fsname" => o.fsname = Some(need()?.to_string()),
        "uid" => o.uid = Some(number(key, need()?)?),
        "gid" => o.gid = Some(number(key, need()?)?),
        "threads" => {
            let n: usize = number(key, need()?)?;
            if n == 0 || n > 256 {
                return Err(format!("mount option threads={n}: must be 1..256"));
            }
            o.threads = Some(n);
        }
        "cache_size" => {
            let v = need()?;
            o.cache_size = Some(parse_size(v).ok_or_else(|| {
                format!("mount option cache_size={v}: expected a size such as 64m")
            })?);
        }
        "suid" => o.nosuid = false,
        "nosuid" => o.nosuid = true,
        "dev" => o.nodev = false,
        "nodev" => o.nodev = true,
        "exec" => o.noexec = false,
        "noexec" => o.noexec = true,
        // Meaningless on a read-only mount, or for mount(8)/fstab only.
        "atime" | "noatime" | "relatime" | "norelatime" | "strictatime" | "nostrictatime"
        | "diratime" | "nodiratime" | "lazytime" | "nolazytime" | "async" | "sync" | "auto"
        | "noauto" | "user" | "nouser" | "users" | "owner" | "group" | "_netdev" | "nofail"
        | "defaults" | "loop" => {}
        k if k.starts_with("x-") || k == "comment" => {}
        _ => return Err(format!("unknown mount option '{opt}'")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Options, String> {
        parse(args.iter().map(|s| s.to_string())).map_err(|e| e.to_string())
    }

    #[test]
    fn basic_and_options() {
        let o = p(&[
            "disk.img",
            "/mnt",
            "-o",
            "ro,allow_other",
            "-o",
            "uid=1000,gid=100,cache_size=64m",
            "-f",
        ])
        .unwrap();
        assert_eq!(o.source, PathBuf::from("disk.img"));
        assert_eq!(o.mountpoint, PathBuf::from("/mnt"));
        assert!(o.allow_other && o.foreground && !o.debug && !o.default_permissions);
        assert_eq!(
            (o.uid, o.gid, o.cache_size),
            (Some(1000), Some(100), Some(64 << 20))
        );
        assert!(o.nosuid && o.nodev && !o.noexec);

        let o = p(&["-oro,default_permissions,fsname=my\\,disk,suid,dev,noexec,norecovery,noatime,x-systemd.automount", "/dev/sdb1", "/m"]).unwrap();
        assert_eq!(o.fsname.as_deref(), Some("my,disk"));
        assert!(o.default_permissions && o.norecovery && !o.nosuid && !o.nodev && o.noexec);

        let o = p(&["a", "b", "-d"]).unwrap();
        assert!(o.debug && o.foreground);
        let o = p(&["a", "b", "-o", "debug"]).unwrap();
        assert!(o.debug && o.foreground);
    }

    #[test]
    fn errors_are_clear() {
        assert!(p(&["a", "b", "-o", "rw"])
            .unwrap_err()
            .contains("read-write mounts are not supported"));
        assert!(p(&["a", "b", "-o", "frobnicate"])
            .unwrap_err()
            .contains("unknown mount option 'frobnicate'"));
        assert!(p(&["a", "b", "-o", "uid=bob"])
            .unwrap_err()
            .contains("uid=bob: not a number"));
        assert!(p(&["a", "b", "-o", "uid"])
            .unwrap_err()
            .contains("needs a value"));
        assert!(p(&["a", "b", "-o", "cache_size=lots"])
            .unwrap_err()
            .contains("cache_size=lots"));
        assert!(p(&["a"]).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("8k"), Some(8192));
        assert_eq!(parse_size("32M"), Some(32 << 20));
        assert_eq!(parse_size("2g"), Some(2 << 30));
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("m"), None);
        assert_eq!(parse_size("99999999999999999999g"), None);
        assert_eq!(parse_size("17179869184g"), None);
    }
}
