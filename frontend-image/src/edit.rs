//! Editing an existing image: `put`, `mkdir`, `rm`, `mv`, `ln`, `chmod`,
//! `chown`, `touch`, `truncate`, `setfattr`, `setfacl`, `write`.
//!
//! Each command opens the image read-write through the engine's `Volume`
//! (a journal that needs recovery is replayed first, as a mount does),
//! makes its change with the same operations the FUSE servers call (each
//! one journaled, in handles), and closes the volume (commit, checkpoint,
//! clean state). A crash at any moment leaves the image as before or after
//! each engine operation. The caller acts as root in the image: new
//! objects are owned by 0:0 and take the process umask (or the parent's
//! default ACL), as the same shell command run by root on a mount would.
//! Where the kernel's VFS adds a rule of its own (chown clearing set-id
//! bits and file capabilities), it is applied here.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use ext4_engine::{
    acl_entries, Cred, Error, FileType, InodeNo, SetAttr, SetTime, Timestamp, ACL_GROUP,
    ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER, ACL_USER, ACL_USER_OBJ,
};
use serde_json::{json, Value};

use crate::{populate, resolve, show, Cli, CmdResult, Fail, Vol};

const ACL_ACCESS: &[u8] = b"system.posix_acl_access";
const ACL_DEFAULT: &[u8] = b"system.posix_acl_default";
const CAPABILITY: &[u8] = b"security.capability";
/// id of ACL entries that have none (owner, owning group, mask, other).
const ACL_UNDEFINED_ID: u32 = u32::MAX;

#[derive(Subcommand)]
pub enum Edit {
    /// Copy a file or a directory tree from this machine into the image,
    /// keeping what `mkfs --from` keeps: types, modes, owners, nanosecond
    /// times, xattrs and ACLs, symlinks, hard links (within SRC), device
    /// nodes, holes. DEST is the new name, or an existing directory to put
    /// SRC into under its own name (as cp does). An existing DEST is an
    /// error unless --force.
    ///
    /// Example: ext4-image disk.img put ./etc /etc
    Put {
        /// Replace existing files and merge into existing directories.
        #[arg(short = 'f', long)]
        force: bool,
        /// Print no progress on a terminal.
        #[arg(short = 'q')]
        quiet: bool,
        #[arg(long, help = JSON)]
        json: bool,
        /// File or directory on this machine.
        src: PathBuf,
        /// Path in the image.
        dest: OsString,
    },
    /// Make directories (mode 0777 less the umask, or the parent's default
    /// ACL; owner 0:0).
    ///
    /// Example: ext4-image disk.img mkdir -p /srv/www/static
    Mkdir {
        /// Make missing parents too, and accept an existing directory.
        #[arg(short = 'p', long)]
        parents: bool,
        /// Mode of the new directories (octal or symbolic as chmod),
        /// set as given, without the umask.
        #[arg(short = 'm', long, value_parser = parse_mode)]
        mode: Option<ModeSpec>,
        #[arg(long, help = JSON)]
        json: bool,
        /// Directories in the image.
        #[arg(required = true)]
        paths: Vec<OsString>,
    },
    /// Remove files, symlinks, special files and (with -r, or empty with
    /// -d) directories. An inode whose last link goes is freed at once.
    ///
    /// Example: ext4-image disk.img rm -r /var/cache/apt
    Rm {
        /// Remove directories and everything in them.
        #[arg(short = 'r', short_alias = 'R', long)]
        recursive: bool,
        /// Remove empty directories too.
        #[arg(short = 'd', long)]
        dir: bool,
        /// A missing path is no error.
        #[arg(short = 'f', long)]
        force: bool,
        #[arg(long, help = JSON)]
        json: bool,
        /// Paths in the image.
        #[arg(required = true)]
        paths: Vec<OsString>,
    },
    /// Rename or move SRC to DEST; into DEST when that is a directory (as
    /// mv does). A file moved over a file replaces it, a directory over an
    /// empty directory too.
    ///
    /// Example: ext4-image disk.img mv /etc/motd.new /etc/motd
    Mv {
        #[arg(long, help = JSON)]
        json: bool,
        /// Path in the image.
        src: OsString,
        /// New path, or an existing directory.
        dest: OsString,
    },
    /// Make a hard link to TARGET (a path in the image), or with -s a
    /// symbolic link holding TARGET as its text; into LINK when that is a
    /// directory (as ln does).
    ///
    /// Example: ext4-image disk.img ln -s ../share/zoneinfo/UTC /etc/localtime
    Ln {
        /// Make a symbolic link.
        #[arg(short = 's', long)]
        symbolic: bool,
        #[arg(long, help = JSON)]
        json: bool,
        /// What to link to.
        target: OsString,
        /// The new name.
        link: OsString,
    },
    /// Change permission, set-id and sticky bits: octal (2755) or
    /// symbolic as chmod(1) takes them (u+x,g-w,o=r,a+X). An access ACL
    /// follows, as on the kernel's ext4. A symlink's mode cannot change
    /// (with -R, symlinks in the trees are passed over, as chmod(1) does).
    ///
    /// Example: ext4-image disk.img chmod 4755 /usr/bin/sudo
    Chmod {
        /// Whole trees.
        #[arg(short = 'R', long)]
        recursive: bool,
        #[arg(long, help = JSON)]
        json: bool,
        /// The mode.
        #[arg(value_parser = parse_mode)]
        mode: ModeSpec,
        /// Paths in the image.
        #[arg(required = true)]
        paths: Vec<OsString>,
    },
    /// Change the owner and/or group: USER, USER:GROUP, USER: (the user's
    /// login group) or :GROUP, as numbers or as names looked up in the
    /// image's own /etc/passwd and /etc/group (never the host's).
    /// As the kernel does for any chown, a non-directory loses its setuid
    /// bit, its setgid bit if group-executable, and its file capabilities
    /// (security.capability). A symlink itself is changed (chown -h).
    ///
    /// Example: ext4-image disk.img chown -R 1000:1000 /home/user
    Chown {
        /// Whole trees.
        #[arg(short = 'R', long)]
        recursive: bool,
        #[arg(long, help = JSON)]
        json: bool,
        /// USER[:GROUP], USER: or :GROUP; numbers or names from the
        /// image's /etc/passwd and /etc/group.
        #[arg(value_parser = parse_owner)]
        owner: Owner,
        /// Paths in the image.
        #[arg(required = true)]
        paths: Vec<OsString>,
    },
    /// Set access and modification times (to now, or to -d/-t/--timestamp)
    /// and create missing files (empty, mode 0666 less the umask).
    ///
    /// Example: ext4-image disk.img touch -d 2024-01-01T00:00:00Z /etc/stamp
    Touch {
        /// Only the access time.
        #[arg(short = 'a')]
        atime: bool,
        /// Only the modification time.
        #[arg(short = 'm')]
        mtime: bool,
        /// Create no file that is missing.
        #[arg(short = 'c', long = "no-create")]
        no_create: bool,
        /// The time: @SECONDS[.FRACTION], or YYYY-MM-DD[THH:MM[:SS[.FRACTION]]][Z|+HH:MM]
        /// (UTC without a zone).
        #[arg(short = 'd', long = "date", value_parser = parse_date, conflicts_with_all = ["stamp", "timestamp", "reference"])]
        date: Option<Timestamp>,
        /// The times of this file in the image (its access time and its
        /// modification time), as touch -r.
        #[arg(short = 'r', long, conflicts_with_all = ["stamp", "timestamp"])]
        reference: Option<OsString>,
        /// The time as [[CC]YY]MMDDhhmm[.ss], UTC.
        #[arg(short = 't', value_parser = parse_stamp, conflicts_with = "timestamp")]
        stamp: Option<Timestamp>,
        /// The time in seconds since the epoch.
        #[arg(long, allow_hyphen_values = true)]
        timestamp: Option<i64>,
        #[arg(long, help = JSON)]
        json: bool,
        /// Paths in the image.
        #[arg(required = true)]
        paths: Vec<OsString>,
    },
    /// Shrink or extend regular files to SIZE (extending leaves a hole);
    /// missing files are created (mode 0666 less the umask).
    ///
    /// Example: ext4-image disk.img truncate -s 0 /var/log/syslog
    Truncate {
        /// The new size: bytes, or with a suffix k, m, g; as truncate(1),
        /// relative with a prefix: +N longer by, -N shorter by, <N at
        /// most, >N at least, /N down to a multiple of, %N up to a
        /// multiple of.
        #[arg(short = 's', long, value_parser = parse_truncate_size, allow_hyphen_values = true)]
        size: TruncateSize,
        /// Create no file that is missing.
        #[arg(short = 'c', long = "no-create")]
        no_create: bool,
        #[arg(long, help = JSON)]
        json: bool,
        /// Paths in the image.
        #[arg(required = true)]
        paths: Vec<OsString>,
    },
    /// Set (-n NAME -v VALUE) or remove (-x NAME) an extended attribute,
    /// as setfattr(1): a VALUE starting 0x is hex, 0s base64, "quoted" a
    /// string, anything else the bytes as given. Names in the user,
    /// trusted, security and system.posix_acl_* namespaces.
    ///
    /// Example: ext4-image disk.img setfattr -n user.origin -v build42 /opt/app
    Setfattr {
        /// The attribute to set.
        #[arg(
            short = 'n',
            long,
            required_unless_present = "remove",
            conflicts_with = "remove"
        )]
        name: Option<String>,
        /// Its value (empty when not given).
        #[arg(short = 'v', long, requires = "name", allow_hyphen_values = true)]
        value: Option<String>,
        /// The attribute to remove.
        #[arg(short = 'x', long)]
        remove: Option<String>,
        #[arg(long, help = JSON)]
        json: bool,
        /// Paths in the image.
        #[arg(required = true)]
        paths: Vec<OsString>,
    },
    /// Change POSIX ACLs as setfacl(1) does: -m adds or changes entries,
    /// -x removes them, -b removes all but the base entries (and the
    /// default ACL), -k the default ACL, --set replaces the ACL. Entries:
    /// [d[efault]:]u[ser]:[UID]:PERMS, g[roup]:[GID]:PERMS, m[ask]::PERMS,
    /// o[ther]::PERMS, comma-separated; PERMS as rwx- letters or an octal
    /// digit; ids are numbers or names from the image's own /etc/passwd and
    /// /etc/group. The mask is recomputed unless one is given.
    ///
    /// Example: ext4-image disk.img setfacl -m u:1000:rwx,d:g:100:rx /srv
    Setfacl {
        /// Add or change these entries.
        #[arg(short = 'm', long = "modify")]
        modify: Option<String>,
        /// Remove these entries (without PERMS).
        #[arg(short = 'x', long = "remove")]
        remove: Option<String>,
        /// Remove all extended entries and the default ACL.
        #[arg(short = 'b', long = "remove-all")]
        remove_all: bool,
        /// Remove the default ACL.
        #[arg(short = 'k', long = "remove-default")]
        remove_default: bool,
        /// Replace the ACL with these entries.
        #[arg(long = "set", conflicts_with_all = ["modify", "remove"])]
        set: Option<String>,
        /// -m, -x and --set act on the default ACL.
        #[arg(short = 'd', long = "default")]
        default: bool,
        #[arg(long, help = JSON)]
        json: bool,
        /// Paths in the image.
        #[arg(required = true)]
        paths: Vec<OsString>,
    },
    /// Write standard input to a file: created if missing (mode 0666 less
    /// the umask), else replaced in place (same inode, mode and owner).
    ///
    /// Example: echo myhost | ext4-image disk.img write /etc/hostname
    Write {
        /// Append instead of replacing.
        #[arg(short = 'a', long)]
        append: bool,
        #[arg(long, help = JSON)]
        json: bool,
        /// Path in the image.
        dest: OsString,
    },
}

const JSON: &str = "Print a one-line JSON object with the result (and the error, if any).";

impl Edit {
    fn name(&self) -> &'static str {
        match self {
            Edit::Put { .. } => "put",
            Edit::Mkdir { .. } => "mkdir",
            Edit::Rm { .. } => "rm",
            Edit::Mv { .. } => "mv",
            Edit::Ln { .. } => "ln",
            Edit::Chmod { .. } => "chmod",
            Edit::Chown { .. } => "chown",
            Edit::Touch { .. } => "touch",
            Edit::Truncate { .. } => "truncate",
            Edit::Setfattr { .. } => "setfattr",
            Edit::Setfacl { .. } => "setfacl",
            Edit::Write { .. } => "write",
        }
    }

    fn json(&self) -> bool {
        match self {
            Edit::Put { json, .. }
            | Edit::Mkdir { json, .. }
            | Edit::Rm { json, .. }
            | Edit::Mv { json, .. }
            | Edit::Ln { json, .. }
            | Edit::Chmod { json, .. }
            | Edit::Chown { json, .. }
            | Edit::Touch { json, .. }
            | Edit::Truncate { json, .. }
            | Edit::Setfattr { json, .. }
            | Edit::Setfacl { json, .. }
            | Edit::Write { json, .. } => *json,
        }
    }
}

/// Open read-write, edit, close; the result as text or JSON.
pub fn run(cli: &Cli, cmd: &Edit) -> CmdResult {
    let vol = crate::open_vol(cli, true)?;
    for w in vol.warnings() {
        crate::warn(format_args!("warning: {w}"));
    }
    let mut ed = Editor {
        vol: &vol,
        umask: process_umask(),
        done: Vec::new(),
        passwd: Default::default(),
        group: Default::default(),
    };
    let r = ed.edit(cli, cmd);
    // What was done is kept even when a later step failed: close commits
    // it and leaves the image clean.
    let closed = vol.close().map_err(|e| {
        Fail::Problem(format!(
            "{}: writing the changes failed: {e} (the image keeps its last committed state; \
             run e2fsck -f on it)",
            cli.image.display()
        ))
    });
    let r = r.and_then(|extra| closed.map(|()| extra));
    if cmd.json() {
        let mut v = json!({
            "command": cmd.name(),
            "ok": r.is_ok(),
            "done": ed.done,
        });
        if let Ok(Some(extra)) = &r {
            v["result"] = extra.clone();
        }
        if let Err(Fail::Problem(m) | Fail::Open(m)) = &r {
            v["error"] = json!(m);
        }
        println!("{v}");
    }
    r.map(|_| ExitCode::SUCCESS)
}

struct Editor<'a> {
    vol: &'a Vol,
    umask: u16,
    /// The paths changed so far (for --json).
    done: Vec<Value>,
    /// The image's /etc/passwd and /etc/group, once read (names).
    passwd: std::cell::OnceCell<Vec<u8>>,
    group: std::cell::OnceCell<Vec<u8>>,
}

/// The caller as root, with the process umask for new objects.
fn cred(umask: u16) -> Cred {
    Cred::ROOT.with_umask(umask)
}

fn process_umask() -> u16 {
    // SAFETY: umask only swaps the process's mask; it is put back at once,
    // before any thread exists.
    unsafe {
        let m = libc::umask(0o022);
        libc::umask(m);
        m as u16 & 0o777
    }
}

/// The failure of `op` on `path` with the engine's error, saying what to do.
fn fail(op: &str, path: &[u8], e: Error) -> Fail {
    let p = show(path);
    let why = match e {
        Error::NotFound => "no such file or directory".to_string(),
        Error::Exists => "it already exists (remove it first with rm)".into(),
        Error::NotEmpty => "the directory is not empty (rm -r removes a tree)".into(),
        Error::IsDir => "it is a directory".into(),
        Error::NotDir => "not a directory".into(),
        Error::NoSpace => {
            "no space left in the image (remove files, or make a bigger image)".into()
        }
        Error::NameTooLong => "a name is longer than 255 bytes".into(),
        Error::NotPermitted => "not permitted on this object".into(),
        e => e.to_string(),
    };
    Fail::Problem(format!("{op} {p}: {why}"))
}

/// `path` split into its parent directory and last name.
fn split(path: &[u8]) -> Result<(&[u8], &[u8]), Fail> {
    let trimmed = {
        let mut end = path.len();
        while end > 1 && path[end - 1] == b'/' {
            end -= 1;
        }
        &path[..end]
    };
    let (parent, name) = match trimmed.iter().rposition(|&b| b == b'/') {
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => (&b""[..], trimmed),
    };
    if name.is_empty() || name == b"." || name == b".." {
        return Err(Fail::Problem(format!(
            "{}: give a path that ends in a name (not /, . or ..)",
            show(path)
        )));
    }
    Ok((parent, name))
}

fn last_name(path: &[u8]) -> &[u8] {
    path.split(|&b| b == b'/')
        .rfind(|c| !c.is_empty())
        .unwrap_or(b"")
}

impl Editor<'_> {
    fn note(&mut self, path: &[u8], ino: InodeNo) {
        self.done.push(json!({"path": show(path), "ino": ino.0}));
    }

    fn attr(&self, ino: InodeNo, path: &[u8]) -> Result<ext4_engine::Attr, Fail> {
        self.vol.getattr(ino).map_err(|e| fail("stat", path, e))
    }

    /// The parent directory's inode and the name of `path`.
    fn parent(&self, path: &[u8]) -> Result<(InodeNo, Vec<u8>), Fail> {
        let (parent, name) = split(path)?;
        let dir = resolve(self.vol, parent)?;
        Ok((dir, name.to_vec()))
    }

    /// Where a new object named after `src_name` goes for DEST: into DEST
    /// when it is an existing directory, else DEST itself.
    fn destination(&self, dest: &[u8], src_name: &[u8]) -> Result<(InodeNo, Vec<u8>), Fail> {
        if let Ok(ino) = resolve(self.vol, dest) {
            if self.attr(ino, dest)?.kind == FileType::Directory {
                if src_name.is_empty() {
                    return Err(Fail::Problem(format!(
                        "{}: the source has no name to use inside that directory",
                        show(dest)
                    )));
                }
                return Ok((ino, src_name.to_vec()));
            }
        }
        self.parent(dest)
    }

    fn edit(&mut self, cli: &Cli, cmd: &Edit) -> Result<Option<Value>, Fail> {
        match cmd {
            Edit::Put {
                force,
                quiet,
                src,
                dest,
                ..
            } => self
                .put(cli, src, dest.as_bytes(), *force, *quiet)
                .map(Some),
            Edit::Mkdir {
                parents,
                mode,
                paths,
                ..
            } => {
                for p in paths {
                    self.mkdir(p.as_bytes(), *parents, mode.as_ref())?;
                }
                Ok(None)
            }
            Edit::Rm {
                recursive,
                dir,
                force,
                paths,
                ..
            } => {
                for p in paths {
                    self.rm(p.as_bytes(), *recursive, *dir, *force)?;
                }
                Ok(None)
            }
            Edit::Mv { src, dest, .. } => self.mv(src.as_bytes(), dest.as_bytes()).map(|_| None),
            Edit::Ln {
                symbolic,
                target,
                link,
                ..
            } => self
                .ln(target.as_bytes(), link.as_bytes(), *symbolic)
                .map(|_| None),
            Edit::Chmod {
                recursive,
                mode,
                paths,
                ..
            } => {
                self.each(paths, *recursive, |e, ino, p, in_tree| {
                    e.chmod(ino, p, mode, in_tree)
                })?;
                Ok(None)
            }
            Edit::Chown {
                recursive,
                owner,
                paths,
                ..
            } => {
                let ids = self.owner_ids(owner)?;
                self.each(paths, *recursive, |e, ino, p, _| e.chown(ino, p, ids))?;
                Ok(None)
            }
            Edit::Touch {
                atime,
                mtime,
                no_create,
                date,
                stamp,
                timestamp,
                reference,
                paths,
                ..
            } => {
                let when = date
                    .or(*stamp)
                    .or(timestamp.map(|s| Timestamp { sec: s, nsec: 0 }));
                let t = when.map_or(SetTime::Now, SetTime::At);
                let (ta, tm) = match reference {
                    Some(r) => {
                        let r = r.as_bytes();
                        let a = self.attr(resolve(self.vol, r)?, r)?;
                        (SetTime::At(a.atime), SetTime::At(a.mtime))
                    }
                    None => (t, t),
                };
                // Neither -a nor -m: both.
                let (a, m) = if *atime || *mtime {
                    (*atime, *mtime)
                } else {
                    (true, true)
                };
                for p in paths {
                    self.touch(p.as_bytes(), a.then_some(ta), m.then_some(tm), *no_create)?;
                }
                Ok(None)
            }
            Edit::Truncate {
                size,
                no_create,
                paths,
                ..
            } => {
                for p in paths {
                    self.truncate(p.as_bytes(), *size, *no_create)?;
                }
                Ok(None)
            }
            Edit::Setfattr {
                name,
                value,
                remove,
                paths,
                ..
            } => {
                for p in paths {
                    let path = p.as_bytes();
                    let ino = resolve(self.vol, path)?;
                    if let Some(n) = remove {
                        self.vol
                            .removexattr(ino, n.as_bytes())
                            .map_err(|e| fail(&format!("setfattr -x {n}"), path, e))?;
                    } else if let Some(n) = name {
                        let v = decode_value(value.as_deref().unwrap_or(""))
                            .map_err(|m| Fail::Problem(format!("setfattr -v: {m}")))?;
                        self.vol
                            .setxattr(ino, n.as_bytes(), &v, 0, &cred(self.umask))
                            .map_err(|e| fail(&format!("setfattr -n {n}"), path, e))?;
                    }
                    self.note(path, ino);
                }
                Ok(None)
            }
            Edit::Setfacl {
                modify,
                remove,
                remove_all,
                remove_default,
                set,
                default,
                paths,
                ..
            } => {
                // Names from the image's own /etc/passwd and /etc/group.
                let name_id = |name: &str, group: bool| -> Result<u32, String> {
                    match self.name_to_id(name, group) {
                        Ok((id, _)) => Ok(id),
                        Err(Fail::Problem(m) | Fail::Open(m)) => Err(m),
                        Err(Fail::Reported) => Err(format!("{name}: not found")),
                    }
                };
                let parse = |s: &Option<String>, perms: bool| -> Result<Vec<Spec>, Fail> {
                    match s {
                        None => Ok(Vec::new()),
                        Some(s) => parse_acl(s, perms, *default, &name_id)
                            .map_err(|m| Fail::Open(format!("setfacl: {s}: {m}"))),
                    }
                };
                let op = AclOp {
                    modify: parse(modify, true)?,
                    remove: parse(remove, false)?,
                    set: set.as_ref().map(|_| parse(set, true)).transpose()?,
                    remove_all: *remove_all,
                    remove_default: *remove_default,
                };
                for p in paths {
                    self.setfacl(p.as_bytes(), &op)?;
                }
                Ok(None)
            }
            Edit::Write { append, dest, .. } => self.write(dest.as_bytes(), *append).map(Some),
        }
    }

    fn put(
        &mut self,
        cli: &Cli,
        src: &std::path::Path,
        dest: &[u8],
        force: bool,
        quiet: bool,
    ) -> Result<Value, Fail> {
        let src_name = src
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_default();
        let (dir, name) = self.destination(dest, &src_name)?;
        let now = self.vol.now().sec;
        let bar = crate::util::Bar::new(quiet, src);
        let vol = self.vol;
        let mut commit_failed = None;
        let mut tick = |c: &populate::Copied| {
            bar.tick(c);
            // As a mount's commit thread: what was copied is durable
            // every --commit seconds.
            if let Err(e) = vol.commit_if_due() {
                commit_failed.get_or_insert(e);
            }
        };
        let r = populate::Populate::new(self.vol, None, now)
            .merging(force)
            .put(src, dir, &name, &mut tick);
        bar.finish();
        if let Some(e) = commit_failed {
            return Err(fail("put (commit)", dest, e));
        }
        let c = r.map_err(|e| {
            let hint = if e.what.to_lowercase().contains("file exists") {
                " (--force replaces files and merges directories)"
            } else {
                ""
            };
            Fail::Problem(format!(
                "{}: put {}: {}{hint} (what was copied before stays in the image)",
                cli.image.display(),
                e.path.display(),
                e.what
            ))
        })?;
        let ino = self
            .vol
            .lookup_ino(dir, &name)
            .map_err(|e| fail("put", dest, e))?;
        self.note(dest, ino);
        Ok(json!({"entries": c.entries, "bytes": c.bytes}))
    }

    fn mkdir(&mut self, path: &[u8], parents: bool, mode: Option<&ModeSpec>) -> Result<(), Fail> {
        // -m sets the mode as given; otherwise 0777 less the umask.
        let (perm, umask) = match mode {
            Some(m) => (m.apply(0o777, true, self.umask), 0),
            None => (0o777, self.umask),
        };
        if !parents {
            let (dir, name) = self.parent(path)?;
            let a = self
                .vol
                .mkdir(dir, &name, perm, &cred(umask))
                .map_err(|e| fail("mkdir", path, e))?;
            self.after_mkdir(a.ino, perm, mode.is_some(), path)?;
            return Ok(());
        }
        let mut ino = InodeNo::ROOT;
        let comps: Vec<&[u8]> = path
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .collect();
        let mut walked = Vec::new();
        for (i, c) in comps.iter().enumerate() {
            walked.push(b'/');
            walked.extend_from_slice(c);
            let last = i + 1 == comps.len();
            ino = match self.vol.lookup_ino(ino, c) {
                Ok(found) => {
                    if self.attr(found, &walked)?.kind != FileType::Directory {
                        return Err(fail("mkdir -p", &walked, Error::NotDir));
                    }
                    found
                }
                Err(Error::NotFound) => {
                    // Parents as GNU mkdir -p makes them: the umask's mode
                    // with u+wx, so the rest can be made.
                    let (p, u) = if last {
                        (perm, umask)
                    } else {
                        (0o777, self.umask)
                    };
                    let a = self
                        .vol
                        .mkdir(ino, c, p, &cred(u))
                        .map_err(|e| fail("mkdir", &walked, e))?;
                    if last {
                        self.after_mkdir(a.ino, perm, mode.is_some(), &walked)?;
                    } else {
                        let m = a.mode as u16 & 0o7777;
                        if m & 0o300 != 0o300 {
                            self.setattr(a.ino, &walked, mode_set(m | 0o300))?;
                        }
                        self.note(&walked, a.ino);
                    }
                    a.ino
                }
                Err(e) => return Err(fail("mkdir", &walked, e)),
            };
        }
        Ok(())
    }

    /// With -m, special bits as given (mkdir(2) keeps only the sticky bit).
    fn after_mkdir(
        &mut self,
        ino: InodeNo,
        perm: u16,
        explicit: bool,
        path: &[u8],
    ) -> Result<(), Fail> {
        if explicit && perm & 0o7000 != 0 {
            self.setattr(ino, path, mode_set(perm))?;
        }
        self.note(path, ino);
        Ok(())
    }

    fn setattr(&self, ino: InodeNo, path: &[u8], set: SetAttr) -> Result<ext4_engine::Attr, Fail> {
        self.vol
            .setattr(ino, &set)
            .map_err(|e| fail("setattr", path, e))
    }

    fn rm(
        &mut self,
        path: &[u8],
        recursive: bool,
        empty_dirs: bool,
        force: bool,
    ) -> Result<(), Fail> {
        let (dir, name) = self.parent(path)?;
        let ino = match self.vol.lookup_ino(dir, &name) {
            Ok(i) => i,
            Err(Error::NotFound) if force => return Ok(()),
            Err(e) => return Err(fail("rm", path, e)),
        };
        let is_dir = self.attr(ino, path)?.kind == FileType::Directory;
        if !is_dir {
            self.vol
                .unlink(dir, &name)
                .map_err(|e| fail("rm", path, e))?;
        } else if recursive {
            self.remove_tree(dir, name, ino, path)?;
        } else if empty_dirs {
            self.vol
                .rmdir(dir, &name)
                .map_err(|e| fail("rm -d", path, e))?;
        } else {
            return Err(Fail::Problem(format!(
                "rm {}: it is a directory (rm -r removes it and its contents, rm -d an empty one)",
                show(path)
            )));
        }
        self.note(path, ino);
        Ok(())
    }

    /// The entries of directory `ino` but `.` and `..`: names, inodes and
    /// whether each is a directory.
    fn children(&self, ino: InodeNo, path: &[u8]) -> Result<Vec<(Vec<u8>, InodeNo, bool)>, Fail> {
        let mut out = Vec::new();
        let mut err = None;
        self.vol
            .readdir(ino, 0, &mut |e| {
                if e.name != b"." && e.name != b".." {
                    out.push((e.name.to_vec(), e.ino, e.kind));
                }
                true
            })
            .map_err(|e| fail("list", path, e))?;
        let mut res = Vec::with_capacity(out.len());
        for (name, ino, kind) in out {
            let is_dir = match kind {
                Some(k) => k == FileType::Directory,
                None => match self.vol.getattr(ino) {
                    Ok(a) => a.kind == FileType::Directory,
                    Err(e) => {
                        err = Some(fail("stat", &join(path, &name), e));
                        break;
                    }
                },
            };
            res.push((name, ino, is_dir));
        }
        match err {
            Some(e) => Err(e),
            None => Ok(res),
        }
    }

    /// Remove directory `name` in `parent` and everything below it, depth
    /// first without recursion (a deep tree needs no deep stack).
    fn remove_tree(
        &mut self,
        parent: InodeNo,
        name: Vec<u8>,
        ino: InodeNo,
        path: &[u8],
    ) -> Result<(), Fail> {
        struct Frame {
            parent: InodeNo,
            name: Vec<u8>,
            ino: InodeNo,
            path: Vec<u8>,
            left: Vec<(Vec<u8>, InodeNo, bool)>,
        }
        let left = self.children(ino, path)?;
        let mut stack = vec![Frame {
            parent,
            name,
            ino,
            path: path.to_vec(),
            left,
        }];
        while let Some(top) = stack.last_mut() {
            match top.left.pop() {
                Some((n, child, true)) => {
                    let p = join(&top.path, &n);
                    let left = self.children(child, &p)?;
                    let parent = top.ino;
                    stack.push(Frame {
                        parent,
                        name: n,
                        ino: child,
                        path: p,
                        left,
                    });
                }
                Some((n, _, false)) => {
                    self.vol
                        .unlink(top.ino, &n)
                        .map_err(|e| fail("rm", &join(&top.path, &n), e))?;
                }
                None => {
                    self.vol
                        .rmdir(top.parent, &top.name)
                        .map_err(|e| fail("rm", &top.path, e))?;
                    stack.pop();
                }
            }
        }
        Ok(())
    }

    /// `f(self, inode, path, in_tree)` for each of `paths`, or with
    /// `recursive` for every inode of their trees (`in_tree` for those met
    /// on the way, not named).
    fn each(
        &mut self,
        paths: &[OsString],
        recursive: bool,
        mut f: impl FnMut(&mut Self, InodeNo, &[u8], bool) -> Result<(), Fail>,
    ) -> Result<(), Fail> {
        for p in paths {
            let path = p.as_bytes();
            let ino = resolve(self.vol, path)?;
            if !recursive {
                f(self, ino, path, false)?;
                continue;
            }
            let mut all = Vec::new();
            self.walk(ino, path.to_vec(), &mut all)?;
            for (i, (ino, p)) in all.into_iter().enumerate() {
                // The first is the named path itself.
                f(self, ino, &p, i > 0)?;
            }
        }
        Ok(())
    }

    /// Every inode of the tree at `ino` with its path (directories before
    /// their contents).
    fn walk(
        &self,
        ino: InodeNo,
        path: Vec<u8>,
        out: &mut Vec<(InodeNo, Vec<u8>)>,
    ) -> Result<(), Fail> {
        // A file or symlink named with -R is a tree of one.
        let is_dir = self.attr(ino, &path)?.kind == FileType::Directory;
        let mut stack = vec![(ino, path, is_dir)];
        while let Some((ino, path, is_dir)) = stack.pop() {
            if is_dir {
                for (n, child, d) in self.children(ino, &path)? {
                    stack.push((child, join(&path, &n), d));
                }
            }
            out.push((ino, path));
        }
        Ok(())
    }

    fn mv(&mut self, src: &[u8], dest: &[u8]) -> Result<(), Fail> {
        let (from_dir, from_name) = self.parent(src)?;
        let ino = self
            .vol
            .lookup_ino(from_dir, &from_name)
            .map_err(|e| fail("mv", src, e))?;
        let (to_dir, to_name) = self.destination(dest, &from_name)?;
        self.vol
            .rename(from_dir, &from_name, to_dir, &to_name, 0, &cred(self.umask))
            .map_err(|e| match e {
                Error::InvalidArgument => Fail::Problem(format!(
                    "mv {} {}: a directory cannot move into itself",
                    show(src),
                    show(dest)
                )),
                e => fail(&format!("mv {}", show(src)), dest, e),
            })?;
        self.note(dest, ino);
        Ok(())
    }

    fn ln(&mut self, target: &[u8], link: &[u8], symbolic: bool) -> Result<(), Fail> {
        let (dir, name) = self.destination(link, last_name(target))?;
        let a = if symbolic {
            self.vol
                .symlink(dir, &name, target, &cred(self.umask))
                .map_err(|e| fail("ln -s", link, e))?
        } else {
            let ino = resolve(self.vol, target)?;
            self.vol
                .link(ino, dir, &name, &cred(self.umask))
                .map_err(|e| match e {
                    Error::NotPermitted => Fail::Problem(format!(
                        "ln {}: a directory cannot have hard links (ln -s makes a symbolic one)",
                        show(target)
                    )),
                    e => fail("ln", link, e),
                })?
        };
        self.note(link, a.ino);
        Ok(())
    }

    /// `in_tree`: met walking a tree (-R), where a symlink is passed over.
    fn chmod(
        &mut self,
        ino: InodeNo,
        path: &[u8],
        mode: &ModeSpec,
        in_tree: bool,
    ) -> Result<(), Fail> {
        let a = self.attr(ino, path)?;
        if a.kind == FileType::Symlink {
            if in_tree {
                return Ok(());
            }
            return Err(Fail::Problem(format!(
                "chmod {}: a symbolic link has no mode of its own to change (chmod its target's path)",
                show(path)
            )));
        }
        let new = mode.apply(
            a.mode as u16 & 0o7777,
            a.kind == FileType::Directory,
            self.umask,
        );
        self.setattr(ino, path, mode_set(new))?;
        self.note(path, ino);
        Ok(())
    }

    /// The numbers `owner` names, names looked up in the image.
    fn owner_ids(&self, owner: &Owner) -> Result<(Option<u32>, Option<u32>), Fail> {
        let (uid, login) = match &owner.uid {
            None => (None, None),
            Some(Id::Num(n)) => (Some(*n), None),
            Some(Id::Name(n)) => {
                let (u, g) = self.name_to_id(n, false)?;
                (Some(u), g)
            }
        };
        let gid = match &owner.gid {
            Some(Id::Num(n)) => Some(*n),
            Some(Id::Name(n)) => Some(self.name_to_id(n, true)?.0),
            None if owner.login_group => match (&owner.uid, login) {
                (_, Some(g)) => Some(g),
                (Some(Id::Num(n)), None) => {
                    return Err(Fail::Problem(format!(
                        "chown {n}:: a number has no login group (give USER:GROUP)"
                    )))
                }
                _ => None,
            },
            None => None,
        };
        Ok((uid, gid))
    }

    /// The number of the user (or with `group`, the group) `name` in the
    /// image's own /etc/passwd (/etc/group), and a user's login group.
    fn name_to_id(&self, name: &str, group: bool) -> Result<(u32, Option<u32>), Fail> {
        let (file, what, cell) = if group {
            ("/etc/group", "group", &self.group)
        } else {
            ("/etc/passwd", "user", &self.passwd)
        };
        // Read once per run, however many names a command gives.
        if cell.get().is_none() {
            let text = self.etc_file(file).map_err(|e| match e {
                Fail::Problem(m) => Fail::Problem(format!(
                    "looking up {what} {name} in the image: {m} (or give a number)"
                )),
                e => e,
            })?;
            let _ = cell.set(text);
        }
        let text = cell.get().map_or(&[][..], Vec::as_slice);
        etc_lookup(text, name).ok_or_else(|| {
            Fail::Problem(format!(
                "no {what} {name} in the image's {file} (give a number)"
            ))
        })
    }

    /// The bytes of `path` in the image (a regular file of at most
    /// [`ETC_FILE_MAX`] bytes).
    fn etc_file(&self, path: &str) -> Result<Vec<u8>, Fail> {
        let ino = resolve(self.vol, path.as_bytes())?;
        let a = self.attr(ino, path.as_bytes())?;
        if a.kind != FileType::Regular || a.size > ETC_FILE_MAX {
            return Err(Fail::Problem(format!(
                "the image's {path} is not a regular file of at most {ETC_FILE_MAX} bytes"
            )));
        }
        let mut buf = vec![0u8; a.size as usize];
        let mut at = 0;
        while at < buf.len() {
            match self.vol.read(ino, at as u64, &mut buf[at..]) {
                Ok(0) => break,
                Ok(n) => at += n,
                Err(e) => return Err(fail("read", path.as_bytes(), e)),
            }
        }
        buf.truncate(at);
        Ok(buf)
    }

    fn chown(
        &mut self,
        ino: InodeNo,
        path: &[u8],
        (uid, gid): (Option<u32>, Option<u32>),
    ) -> Result<(), Fail> {
        let a = self.attr(ino, path)?;
        let mut set = SetAttr {
            uid,
            gid,
            ..SetAttr::default()
        };
        // The VFS's chown: set-id bits of a non-directory go (setgid only
        // with group execute), by the rule the FUSE servers share.
        let root = ext4_engine::policy::Caller {
            uid: 0,
            gid: 0,
            groups: &[],
        };
        let subject = ext4_engine::policy::Subject::new(&a, None);
        set.mode = ext4_engine::policy::mode_without_setid(&root, &subject);
        if a.kind != FileType::Directory {
            match self.vol.removexattr(ino, CAPABILITY) {
                Ok(()) | Err(Error::NoData) | Err(Error::Unsupported { .. }) => {}
                Err(e) => return Err(fail("chown (dropping file capabilities)", path, e)),
            }
        }
        self.setattr(ino, path, set)?;
        self.note(path, ino);
        Ok(())
    }

    /// `path`'s inode, or a new empty regular file there.
    fn open_or_create(
        &mut self,
        path: &[u8],
        create: bool,
        op: &str,
    ) -> Result<Option<InodeNo>, Fail> {
        let (dir, name) = self.parent(path)?;
        match self.vol.lookup_ino(dir, &name) {
            Ok(i) => Ok(Some(i)),
            Err(Error::NotFound) if !create => Ok(None),
            Err(Error::NotFound) => self
                .vol
                .create(dir, &name, 0o666, &cred(self.umask))
                .map(|a| Some(a.ino))
                .map_err(|e| fail(op, path, e)),
            Err(e) => Err(fail(op, path, e)),
        }
    }

    fn touch(
        &mut self,
        path: &[u8],
        atime: Option<SetTime>,
        mtime: Option<SetTime>,
        no_create: bool,
    ) -> Result<(), Fail> {
        let Some(ino) = self.open_or_create(path, !no_create, "touch")? else {
            return Ok(());
        };
        let set = SetAttr {
            atime,
            mtime,
            ..SetAttr::default()
        };
        self.setattr(ino, path, set)?;
        self.note(path, ino);
        Ok(())
    }

    fn truncate(&mut self, path: &[u8], size: TruncateSize, no_create: bool) -> Result<(), Fail> {
        let Some(ino) = self.open_or_create(path, !no_create, "truncate")? else {
            return Ok(());
        };
        let a = self.attr(ino, path)?;
        if a.kind != FileType::Regular {
            return Err(Fail::Problem(format!(
                "truncate {}: not a regular file",
                show(path)
            )));
        }
        let size = size
            .of(a.size)
            .ok_or_else(|| Fail::Problem(format!("truncate {}: the size overflows", show(path))))?;
        self.kill_priv(ino, path)?;
        let set = SetAttr {
            size: Some(size),
            // The kernel's truncate(2) sets both even for the same size.
            mtime: Some(SetTime::Now),
            ..SetAttr::default()
        };
        self.setattr(ino, path, set)?;
        self.note(path, ino);
        Ok(())
    }

    /// A write or truncate drops file capabilities, as the kernel's
    /// `file_remove_privs` does even for root (set-id bits stay: root has
    /// CAP_FSETID).
    fn kill_priv(&self, ino: InodeNo, path: &[u8]) -> Result<(), Fail> {
        match self.vol.removexattr(ino, CAPABILITY) {
            Ok(()) | Err(Error::NoData) | Err(Error::Unsupported { .. }) => Ok(()),
            Err(e) => Err(fail("dropping file capabilities of", path, e)),
        }
    }

    fn write(&mut self, path: &[u8], append: bool) -> Result<Value, Fail> {
        let ino = self.open_or_create(path, true, "write")?.expect("created");
        let a = self.attr(ino, path)?;
        if a.kind != FileType::Regular {
            return Err(Fail::Problem(format!(
                "write {}: not a regular file",
                show(path)
            )));
        }
        self.kill_priv(ino, path)?;
        let mut off = if append { a.size } else { 0 };
        if !append && a.size > 0 {
            self.setattr(
                ino,
                path,
                SetAttr {
                    size: Some(0),
                    ..SetAttr::default()
                },
            )?;
        }
        let shown = PathBuf::from(OsString::from_vec(path.to_vec()));
        let mut buf = vec![0u8; 1 << 20];
        let mut input = std::io::stdin().lock();
        let mut total = 0u64;
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Fail::Problem(format!(
                        "write {}: reading standard input: {} ({total} bytes written before)",
                        show(path),
                        crate::io_msg(&e)
                    )))
                }
            };
            populate::write_all(self.vol, ino, off, &buf[..n], &shown).map_err(|e| {
                Fail::Problem(format!(
                    "write {}: {} ({total} bytes written before)",
                    show(path),
                    e.what
                ))
            })?;
            off += n as u64;
            total += n as u64;
            self.vol
                .commit_if_due()
                .map_err(|e| fail("write (commit)", path, e))?;
        }
        let _ = std::io::stdout().flush();
        self.note(path, ino);
        Ok(json!({"bytes": total}))
    }

    fn setfacl(&mut self, path: &[u8], op: &AclOp) -> Result<(), Fail> {
        let ino = resolve(self.vol, path)?;
        let a = self.attr(ino, path)?;
        let is_dir = a.kind == FileType::Directory;
        let mode = a.mode as u16 & 0o777;
        let get = |name: &[u8]| -> Result<Option<Vec<Entry>>, Fail> {
            match self.vol.getxattr(ino, name) {
                Ok(v) => acl_entries(&v)
                    .map(|es| {
                        Some(
                            es.into_iter()
                                .map(|(tag, perm, id)| Entry { tag, perm, id })
                                .collect(),
                        )
                    })
                    .map_err(|e| fail("setfacl (reading the ACL)", path, e)),
                Err(Error::NoData) => Ok(None),
                Err(e) => Err(fail("setfacl (reading the ACL)", path, e)),
            }
        };
        let base_of_mode = vec![
            Entry::new(ACL_USER_OBJ, mode >> 6 & 7),
            Entry::new(ACL_GROUP_OBJ, mode >> 3 & 7),
            Entry::new(ACL_OTHER, mode & 7),
        ];
        let access_now = get(ACL_ACCESS)?;
        let default_now = get(ACL_DEFAULT)?;
        let access = access_now.clone().unwrap_or_else(|| base_of_mode.clone());
        let mut new_access = access.clone();
        // A default ACL to be made starts from the access ACL's base entries.
        let mut new_default = default_now.clone();
        let touches_default = op
            .modify
            .iter()
            .chain(op.remove.iter())
            .chain(op.set.iter().flatten())
            .any(|s| s.default);
        if touches_default && !is_dir {
            return Err(Fail::Problem(format!(
                "setfacl {}: only a directory has a default ACL",
                show(path)
            )));
        }
        if op.remove_all {
            // As setfacl -b: the owning group keeps what the mask let it have.
            let mask = new_access
                .iter()
                .find(|e| e.tag == ACL_MASK)
                .map(|e| e.perm);
            new_access.retain(|e| matches!(e.tag, ACL_USER_OBJ | ACL_GROUP_OBJ | ACL_OTHER));
            if let Some(m) = mask {
                for e in new_access.iter_mut().filter(|e| e.tag == ACL_GROUP_OBJ) {
                    e.perm &= m;
                }
            }
            new_default = None;
        }
        if op.remove_default {
            new_default = None;
        }
        if let Some(set) = &op.set {
            let (d, acc): (Vec<&Spec>, Vec<&Spec>) = set.iter().partition(|s| s.default);
            if !acc.is_empty() {
                new_access = acc.iter().map(|s| s.entry()).collect();
            }
            if !d.is_empty() {
                new_default = Some(d.iter().map(|s| s.entry()).collect());
            }
        }
        let start_default = || {
            access
                .iter()
                .filter(|e| matches!(e.tag, ACL_USER_OBJ | ACL_GROUP_OBJ | ACL_OTHER))
                .copied()
                .collect::<Vec<_>>()
        };
        let mut mask_given = (false, false);
        for s in &op.modify {
            let list = if s.default {
                new_default.get_or_insert_with(start_default)
            } else {
                &mut new_access
            };
            if s.tag == ACL_MASK {
                if s.default {
                    mask_given.1 = true;
                } else {
                    mask_given.0 = true;
                }
            }
            match list.iter_mut().find(|e| e.tag == s.tag && e.id == s.id) {
                Some(e) => e.perm = s.perm,
                None => list.push(s.entry()),
            }
        }
        for s in &op.remove {
            let list = if s.default {
                match new_default.as_mut() {
                    Some(l) => l,
                    None => continue,
                }
            } else {
                &mut new_access
            };
            list.retain(|e| !(e.tag == s.tag && e.id == s.id));
        }
        let changed_access = !op.modify.iter().all(|s| s.default)
            || !op.remove.iter().all(|s| s.default)
            || op.remove_all
            || op
                .set
                .as_ref()
                .is_some_and(|s| s.iter().any(|e| !e.default));
        let changed_default = touches_default || op.remove_all || op.remove_default;
        if changed_access {
            let explicit = mask_given.0 || op.set.is_some();
            let v = finish_acl(&mut new_access, explicit)
                .map_err(|m| Fail::Problem(format!("setfacl {}: {m}", show(path))))?;
            self.vol
                .setxattr(ino, ACL_ACCESS, &v, 0, &cred(self.umask))
                .map_err(|e| fail("setfacl", path, e))?;
        }
        if changed_default {
            match new_default {
                Some(mut d) => {
                    let explicit = mask_given.1 || op.set.is_some();
                    let v = finish_acl(&mut d, explicit).map_err(|m| {
                        Fail::Problem(format!("setfacl {} (default ACL): {m}", show(path)))
                    })?;
                    self.vol
                        .setxattr(ino, ACL_DEFAULT, &v, 0, &cred(self.umask))
                        .map_err(|e| fail("setfacl -d", path, e))?;
                }
                None if default_now.is_some() => match self.vol.removexattr(ino, ACL_DEFAULT) {
                    Ok(()) | Err(Error::NoData) => {}
                    Err(e) => return Err(fail("setfacl -k", path, e)),
                },
                None => {}
            }
        }
        self.note(path, ino);
        Ok(())
    }
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    if !p.ends_with(b"/") {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

fn mode_set(m: u16) -> SetAttr {
    SetAttr {
        mode: Some(m),
        ..SetAttr::default()
    }
}

/// A chmod mode: octal, or symbolic clauses.
#[derive(Clone, Debug)]
pub enum ModeSpec {
    /// The bits, and whether a directory keeps set-id bits the digits
    /// leave out.
    Octal(u16, bool),
    Symbolic(Vec<Clause>),
}

#[derive(Clone, Debug)]
pub struct Clause {
    /// The bits of u, g, o chosen (0 = none given: all, less the umask).
    who: u16,
    actions: Vec<(u8, String)>,
}

/// chmod's MODE: up to four octal digits, or clauses like u+x,go-w,a=rX.
pub fn parse_mode(s: &str) -> Result<ModeSpec, String> {
    if !s.is_empty() && s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        // As GNU chmod: a directory keeps its set-id bits unless the mode
        // has five digits or more (00755) or sets them.
        let keep = s.len() < 5;
        return u16::from_str_radix(s, 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .map(|m| ModeSpec::Octal(m, keep))
            .ok_or_else(|| format!("{s}: an octal mode is at most 7777"));
    }
    let mut clauses = Vec::new();
    for part in s.split(',') {
        let b = part.as_bytes();
        let mut i = 0;
        let mut who = 0u16;
        while i < b.len() && b"ugoa".contains(&b[i]) {
            who |= match b[i] {
                b'u' => 0o4700,
                b'g' => 0o2070,
                b'o' => 0o1007,
                _ => 0o7777,
            };
            i += 1;
        }
        let mut actions = Vec::new();
        while i < b.len() {
            let op = b[i];
            if !b"+-=".contains(&op) {
                return Err(format!(
                    "{s}: not a mode (octal like 0755, or symbolic like u+x,go-w)"
                ));
            }
            i += 1;
            let start = i;
            while i < b.len() && b"rwxXstugo".contains(&b[i]) {
                i += 1;
            }
            actions.push((op, part[start..i].to_string()));
        }
        if actions.is_empty() {
            return Err(format!(
                "{s}: not a mode (octal like 0755, or symbolic like u+x,go-w)"
            ));
        }
        clauses.push(Clause { who, actions });
    }
    Ok(ModeSpec::Symbolic(clauses))
}

impl ModeSpec {
    /// The new mode of an object with mode `cur`, as chmod(1) computes it.
    pub fn apply(&self, cur: u16, is_dir: bool, umask: u16) -> u16 {
        let clauses = match self {
            ModeSpec::Octal(m, keep) if *keep && is_dir => return *m | (cur & 0o6000),
            ModeSpec::Octal(m, _) => return *m,
            ModeSpec::Symbolic(c) => c,
        };
        let mut mode = cur;
        for c in clauses {
            let (who, mask) = if c.who == 0 {
                (0o7777, !umask & 0o7777)
            } else {
                (c.who, 0o7777)
            };
            for (op, perms) in &c.actions {
                let mut bits = 0u16;
                for p in perms.bytes() {
                    bits |= match p {
                        b'r' => 0o444,
                        b'w' => 0o222,
                        b'x' => 0o111,
                        b'X' if is_dir || mode & 0o111 != 0 => 0o111,
                        b'X' => 0,
                        b's' => 0o6000,
                        b't' => 0o1000,
                        // Copy another class's bits to every class.
                        b'u' => (mode >> 6 & 7) * 0o111,
                        b'g' => (mode >> 3 & 7) * 0o111,
                        b'o' => (mode & 7) * 0o111,
                        _ => 0,
                    };
                }
                let bits = bits & who;
                mode = match op {
                    b'+' => mode | (bits & mask),
                    b'-' => mode & !(bits & mask),
                    _ => {
                        // '=' clears the class's rwx (and its special bit),
                        // keeping a directory's set-id bits unless named.
                        let mut clear = who & 0o777;
                        clear |= who & 0o1000;
                        if !is_dir {
                            clear |= who & 0o6000;
                        }
                        (mode & !clear) | (bits & mask)
                    }
                };
            }
        }
        mode
    }
}

/// chown's OWNER.
#[derive(Clone, Debug)]
pub struct Owner {
    uid: Option<Id>,
    gid: Option<Id>,
    /// `USER:`: the group is the user's login group (chown(1)).
    login_group: bool,
}

/// A user or group as given: a number, or a name looked up in the
/// image's own `/etc/passwd` or `/etc/group` (as a container build's
/// `COPY --chown` does), never the host's.
#[derive(Clone, Debug)]
pub enum Id {
    Num(u32),
    Name(String),
}

pub fn parse_owner(s: &str) -> Result<Owner, String> {
    let id = |x: &str| -> Result<Option<Id>, String> {
        if x.is_empty() {
            return Ok(None);
        }
        if let Ok(n) = x.parse::<u32>() {
            return Ok(Some(Id::Num(n)));
        }
        if x.contains(['/', ' ', '\n']) {
            return Err(format!("{x}: not a user or group name"));
        }
        Ok(Some(Id::Name(x.to_string())))
    };
    // USER.GROUP, the old form, for numbers only (names may hold dots).
    let split = s.split_once(':').or_else(|| {
        s.split_once('.')
            .filter(|(u, g)| u.parse::<u32>().is_ok() && g.parse::<u32>().is_ok())
    });
    let (u, g, login_group) = match split {
        Some((u, g)) => (id(u)?, id(g)?, g.is_empty()),
        None => (id(s)?, None, false),
    };
    if u.is_none() && g.is_none() {
        return Err(format!("{s}: USER, USER:GROUP, USER: or :GROUP"));
    }
    Ok(Owner {
        uid: u,
        gid: g,
        login_group: login_group && s.contains(':'),
    })
}

/// The most of `/etc/passwd` or `/etc/group` read from an image.
const ETC_FILE_MAX: u64 = 16 << 20;

/// In `/etc/passwd` or `/etc/group` text: the line for `name`, as its
/// number (field 3) and, for passwd, the login group (field 4).
fn etc_lookup(text: &[u8], name: &str) -> Option<(u32, Option<u32>)> {
    let num = |b: &[u8]| std::str::from_utf8(b).ok()?.trim().parse::<u32>().ok();
    text.split(|&b| b == b'\n').find_map(|line| {
        let mut f = line.split(|&b| b == b':');
        if f.next()? != name.as_bytes() {
            return None;
        }
        let id = num(f.nth(1)?)?;
        Some((id, f.next().and_then(num)))
    })
}

/// truncate(1)'s SIZE: an absolute size, or one relative to each file's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TruncateSize {
    Set(u64),
    Extend(u64),
    Reduce(u64),
    AtMost(u64),
    AtLeast(u64),
    RoundDown(u64),
    RoundUp(u64),
}

pub fn parse_truncate_size(s: &str) -> Result<TruncateSize, String> {
    let (rest, make): (&str, fn(u64) -> TruncateSize) = match s.as_bytes().first() {
        Some(b'+') => (&s[1..], TruncateSize::Extend),
        Some(b'-') => (&s[1..], TruncateSize::Reduce),
        Some(b'<') => (&s[1..], TruncateSize::AtMost),
        Some(b'>') => (&s[1..], TruncateSize::AtLeast),
        Some(b'/') => (&s[1..], TruncateSize::RoundDown),
        Some(b'%') => (&s[1..], TruncateSize::RoundUp),
        _ => (s, TruncateSize::Set),
    };
    let n = crate::util::parse_size(rest)?;
    let size = make(n);
    if matches!(size, TruncateSize::RoundDown(0) | TruncateSize::RoundUp(0)) {
        return Err(format!("{s}: division by zero"));
    }
    Ok(size)
}

impl TruncateSize {
    /// The new size of a file of `old` bytes (`None`: past 2^64).
    fn of(self, old: u64) -> Option<u64> {
        Some(match self {
            TruncateSize::Set(n) => n,
            TruncateSize::Extend(n) => old.checked_add(n)?,
            TruncateSize::Reduce(n) => old.saturating_sub(n),
            TruncateSize::AtMost(n) => old.min(n),
            TruncateSize::AtLeast(n) => old.max(n),
            TruncateSize::RoundDown(n) => old / n * n,
            TruncateSize::RoundUp(n) => old.checked_next_multiple_of(n)?,
        })
    }
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Seconds and a fraction ".123" as nanoseconds.
fn frac_ns(f: &str) -> Result<u32, String> {
    if f.is_empty() || f.len() > 9 || !f.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(".{f}: up to 9 digits of a second"));
    }
    Ok(format!("{f:0<9}").parse().unwrap_or(0))
}

/// touch -d: @SECONDS[.FRACTION] or an ISO 8601 date and time.
pub fn parse_date(s: &str) -> Result<Timestamp, String> {
    let bad =
        || format!("{s}: @SECONDS[.FRACTION] or YYYY-MM-DD[THH:MM[:SS[.FRACTION]]][Z|+HH:MM]");
    if let Some(n) = s.strip_prefix('@') {
        let (sec, f) = n.split_once('.').unwrap_or((n, ""));
        let sec: i64 = sec.parse().map_err(|_| bad())?;
        let nsec = if f.is_empty() { 0 } else { frac_ns(f)? };
        return Ok(Timestamp { sec, nsec });
    }
    let num = |x: &str| x.parse::<i64>().map_err(|_| bad());
    let (date, rest) = match s.find(['T', ' ']) {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    };
    let d: Vec<&str> = date.split('-').collect();
    if d.len() != 3 {
        return Err(bad());
    }
    let (y, mo, da) = (num(d[0])?, num(d[1])?, num(d[2])?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) {
        return Err(bad());
    }
    let (time, zone) = match rest.find(['Z', 'z', '+', '-']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (mut secs, mut nsec) = (0i64, 0u32);
    if !time.is_empty() {
        let (hms, f) = time.split_once('.').unwrap_or((time, ""));
        let t: Vec<&str> = hms.split(':').collect();
        if t.len() < 2 || t.len() > 3 {
            return Err(bad());
        }
        let (h, mi) = (num(t[0])?, num(t[1])?);
        let sec = if t.len() == 3 { num(t[2])? } else { 0 };
        if h > 23 || mi > 59 || sec > 60 {
            return Err(bad());
        }
        secs = h * 3600 + mi * 60 + sec;
        if !f.is_empty() {
            nsec = frac_ns(f)?;
        }
    }
    let offset = match zone {
        "" | "Z" | "z" => 0,
        z => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let (h, m) = z[1..].split_once(':').unwrap_or((&z[1..], "0"));
            sign * (num(h)? * 3600 + num(m)? * 60)
        }
    };
    Ok(Timestamp {
        sec: days_from_civil(y, mo, da) * 86_400 + secs - offset,
        nsec,
    })
}

/// touch -t: [[CC]YY]MMDDhhmm[.ss], UTC.
pub fn parse_stamp(s: &str) -> Result<Timestamp, String> {
    let bad = || format!("{s}: [[CC]YY]MMDDhhmm[.ss]");
    let (main, ss) = s.split_once('.').unwrap_or((s, "00"));
    if !main.bytes().all(|b| b.is_ascii_digit()) || ss.len() != 2 {
        return Err(bad());
    }
    let n = |x: &str| x.parse::<i64>().map_err(|_| bad());
    let year = match main.len() {
        8 => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            1970 + now / 31_556_952
        }
        10 => {
            let yy = n(&main[..2])?;
            if yy < 69 {
                2000 + yy
            } else {
                1900 + yy
            }
        }
        12 => n(&main[..4])?,
        _ => return Err(bad()),
    };
    let r = &main[main.len() - 8..];
    let (mo, d, h, mi) = (n(&r[..2])?, n(&r[2..4])?, n(&r[4..6])?, n(&r[6..8])?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 {
        return Err(bad());
    }
    let sec = n(ss)?;
    Ok(Timestamp {
        sec: days_from_civil(year, mo, d) * 86_400 + h * 3600 + mi * 60 + sec,
        nsec: 0,
    })
}

/// setfattr's value: 0x hex, 0s base64, "quoted" text, else the bytes.
fn decode_value(v: &str) -> Result<Vec<u8>, String> {
    if let Some(h) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        if h.len() % 2 != 0 {
            return Err(format!("{v}: an odd number of hex digits"));
        }
        return (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).map_err(|_| format!("{v}: not hex")))
            .collect();
    }
    if let Some(b) = v.strip_prefix("0s").or_else(|| v.strip_prefix("0S")) {
        return base64(b).ok_or_else(|| format!("{v}: not base64"));
    }
    if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
        return Ok(v.as_bytes()[1..v.len() - 1].to_vec());
    }
    Ok(v.as_bytes().to_vec())
}

fn base64(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim_end_matches('=');
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        acc = acc << 6 | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// One ACL entry (tag, permission bits, id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    tag: u16,
    perm: u16,
    id: u32,
}

impl Entry {
    fn new(tag: u16, perm: u16) -> Entry {
        Entry {
            tag,
            perm,
            id: ACL_UNDEFINED_ID,
        }
    }
}

/// An entry of setfacl's command line.
#[derive(Clone, Debug)]
struct Spec {
    default: bool,
    tag: u16,
    id: u32,
    perm: u16,
}

impl Spec {
    fn entry(&self) -> Entry {
        Entry {
            tag: self.tag,
            perm: self.perm,
            id: self.id,
        }
    }
}

struct AclOp {
    modify: Vec<Spec>,
    remove: Vec<Spec>,
    set: Option<Vec<Spec>>,
    remove_all: bool,
    remove_default: bool,
}

/// setfacl's ACL text: entries separated by commas (or newlines).
/// `name_id(name, group)`: the number of a user (or group) named in an
/// entry.
fn parse_acl(
    s: &str,
    perms: bool,
    all_default: bool,
    name_id: &dyn Fn(&str, bool) -> Result<u32, String>,
) -> Result<Vec<Spec>, String> {
    let mut out = Vec::new();
    for raw in s
        .split([',', '\n'])
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let mut parts: Vec<&str> = raw.split(':').collect();
        let mut default = all_default;
        if matches!(parts[0], "d" | "default") {
            default = true;
            parts.remove(0);
        }
        let want = if perms { 3 } else { 2 };
        // "m:rwx" and "o:r" may leave out the empty id.
        if parts.len() == want - 1 && matches!(parts[0], "m" | "mask" | "o" | "other") {
            parts.insert(1, "");
        }
        // -x accepts an entry with its permissions too.
        let fits = parts.len() == want || (!perms && parts.len() == 3);
        if !fits {
            return Err(format!(
                "{raw}: an entry is [d:]u|g|m|o:[ID]{}",
                if perms { ":PERMS" } else { "" }
            ));
        }
        let id = parts[1];
        let tag = match (parts[0], id.is_empty()) {
            ("u" | "user", true) => ACL_USER_OBJ,
            ("u" | "user", false) => ACL_USER,
            ("g" | "group", true) => ACL_GROUP_OBJ,
            ("g" | "group", false) => ACL_GROUP,
            ("m" | "mask", true) => ACL_MASK,
            ("o" | "other", true) => ACL_OTHER,
            _ => {
                return Err(format!(
                    "{raw}: the type is u, g, m or o (m and o take no id)"
                ))
            }
        };
        let id = if id.is_empty() {
            ACL_UNDEFINED_ID
        } else {
            match id.parse::<u32>() {
                Ok(n) => n,
                Err(_) => name_id(id, tag == ACL_GROUP).map_err(|m| format!("{raw}: {m}"))?,
            }
        };
        let perm = if perms {
            parse_perms(parts[2])
                .ok_or_else(|| format!("{raw}: permissions are rwx- letters or one octal digit"))?
        } else {
            0
        };
        out.push(Spec {
            default,
            tag,
            id,
            perm,
        });
    }
    Ok(out)
}

fn parse_perms(p: &str) -> Option<u16> {
    if p.len() == 1 && p.as_bytes()[0].is_ascii_digit() {
        return p.parse::<u16>().ok().filter(|v| *v <= 7);
    }
    let mut v = 0;
    for c in p.bytes() {
        v |= match c {
            b'r' => 4,
            b'w' => 2,
            b'x' | b'X' => 1,
            b'-' => 0,
            _ => return None,
        };
    }
    Some(v)
}

/// Sort `acl` as the kernel wants it, add or recompute the mask (unless
/// one was given explicitly), and encode it in the xattr form.
fn finish_acl(acl: &mut Vec<Entry>, explicit_mask: bool) -> Result<Vec<u8>, String> {
    let rank = |t: u16| match t {
        ACL_USER_OBJ => 0,
        ACL_USER => 1,
        ACL_GROUP_OBJ => 2,
        ACL_GROUP => 3,
        ACL_MASK => 4,
        _ => 5,
    };
    acl.sort_by_key(|e| (rank(e.tag), e.id));
    acl.dedup_by_key(|e| (e.tag, e.id));
    for need in [ACL_USER_OBJ, ACL_GROUP_OBJ, ACL_OTHER] {
        if !acl.iter().any(|e| e.tag == need) {
            return Err("the ACL lacks a u::, g:: or o:: entry".into());
        }
    }
    let named = acl.iter().any(|e| matches!(e.tag, ACL_USER | ACL_GROUP));
    let has_mask = acl.iter().any(|e| e.tag == ACL_MASK);
    // A mask is recomputed whenever there is one (or one is needed), as
    // setfacl does without -n, unless the command gave one.
    if (named || has_mask) && !(has_mask && explicit_mask) {
        let m = acl
            .iter()
            .filter(|e| matches!(e.tag, ACL_USER | ACL_GROUP_OBJ | ACL_GROUP))
            .fold(0, |m, e| m | e.perm);
        acl.retain(|e| e.tag != ACL_MASK);
        let at = acl
            .iter()
            .position(|e| e.tag == ACL_OTHER)
            .unwrap_or(acl.len());
        acl.insert(at, Entry::new(ACL_MASK, m));
    }
    let mut v = 2u32.to_le_bytes().to_vec();
    for e in acl.iter() {
        v.extend_from_slice(&e.tag.to_le_bytes());
        v.extend_from_slice(&e.perm.to_le_bytes());
        v.extend_from_slice(&e.id.to_le_bytes());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        let m = |s: &str, cur: u16, dir: bool| parse_mode(s).unwrap().apply(cur, dir, 0o022);
        assert_eq!(m("755", 0o644, false), 0o755);
        assert_eq!(m("755", 0o2700, true), 0o2755);
        assert_eq!(m("00755", 0o2700, true), 0o755);
        assert_eq!(m("u+x", 0o644, false), 0o744);
        assert_eq!(m("go-r", 0o644, false), 0o600);
        assert_eq!(m("a=rX", 0o700, true), 0o555);
        assert_eq!(m("a=rX", 0o600, false), 0o444);
        assert_eq!(m("+w", 0o444, false), 0o644);
        assert_eq!(m("g+s,o+t", 0o755, true), 0o3755);
        assert_eq!(m("u=g", 0o654, false), 0o554);
        assert!(parse_mode("u+q").is_err());
        assert!(parse_mode("17777").is_err());
    }

    #[test]
    fn dates() {
        assert_eq!(
            parse_date("@5.5").unwrap(),
            Timestamp {
                sec: 5,
                nsec: 500_000_000
            }
        );
        assert_eq!(parse_date("1970-01-02").unwrap().sec, 86_400);
        assert_eq!(
            parse_date("2024-02-29T12:00:00Z").unwrap().sec,
            1_709_208_000
        );
        assert_eq!(
            parse_date("2024-02-29T13:00:00+01:00").unwrap().sec,
            1_709_208_000
        );
        assert_eq!(parse_stamp("202402291200.00").unwrap().sec, 1_709_208_000);
        assert!(parse_date("yesterday").is_err());
    }

    #[test]
    fn values_and_acls() {
        assert_eq!(decode_value("0x41ff").unwrap(), vec![0x41, 0xff]);
        assert_eq!(decode_value("0sQUJD").unwrap(), b"ABC");
        assert_eq!(decode_value("\"a b\"").unwrap(), b"a b");
        let names = |n: &str, group: bool| match (n, group) {
            ("web", false) => Ok(33),
            ("staff", true) => Ok(50),
            _ => Err(format!("no {n}")),
        };
        let s = parse_acl("u:1000:rwx,d:g::r-x,m::5,o:r", true, false, &names).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!((s[0].tag, s[0].id, s[0].perm), (ACL_USER, 1000, 7));
        assert!(s[1].default && s[1].tag == ACL_GROUP_OBJ && s[1].perm == 5);
        let s = parse_acl("u:web:r,g:staff:w", true, false, &names).unwrap();
        assert_eq!((s[0].id, s[1].id), (33, 50));
        assert!(parse_acl("g:web:r", true, false, &names)
            .unwrap_err()
            .contains("no web"));
        let mut acl = vec![
            Entry::new(ACL_OTHER, 4),
            Entry {
                tag: ACL_USER,
                perm: 6,
                id: 7,
            },
            Entry::new(ACL_USER_OBJ, 7),
            Entry::new(ACL_GROUP_OBJ, 1),
        ];
        let v = finish_acl(&mut acl, false).unwrap();
        let es = acl_entries(&v).unwrap();
        assert_eq!(es[3], (ACL_MASK, 7, ACL_UNDEFINED_ID));
    }
}
