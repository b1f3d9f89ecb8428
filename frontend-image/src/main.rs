//! `ext4-image`: read an ext2/ext3/ext4 image without mounting it.
//!
//! Every command opens the image read-only through the engine's `Volume`.
//! Paths inside the image are resolved like `debugfs` does: component by
//! component from the root, with no symbolic link followed anywhere.

mod cat;
mod check;
mod edit;
mod extract;
mod info;
mod list;
mod map;
mod mkfs;
mod populate;
mod recover;
mod resize;
mod stat;
mod tar_export;
mod tar_import;
mod util;

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ext4_engine::{BlockDevice, Error, FileDevice, InodeNo, OpenOptions, Recovery, Volume};

pub type Vol = Volume<FileDevice>;

const AFTER_HELP: &str = "\
Paths inside the image are absolute or relative to its root and are resolved
like debugfs does: no symbolic link is followed, not even in the middle of a
path (ls and stat show a link itself; cat refuses one).

An image whose journal needs recovery (a disk of a machine that crashed or
lost power) reads as recovered: the journal is replayed in memory, the image
itself is not written. --norecovery shows it as the device holds it instead;
`recover` replays the journal into the image.

Exit status: 0 success, 1 problems found, a path not found or an edit
refused, 2 the image cannot be opened or the command line is wrong.

Examples:
  ext4-image disk.img info
  ext4-image disk.img ls -l /etc
  ext4-image disk.img cat /etc/hostname
  ext4-image disk.img extract / ./rootfs
  ext4-image disk.img map --physical /var/log/syslog
  ext4-image --ignore-checksums disk.img check --data
  ext4-image crashed.img recover
  ext4-image tar disk.img /etc > etc.tar
  ext4-image disk.img put ./etc /etc
  echo myhost | ext4-image disk.img write /etc/hostname
  ext4-image disk.img rm -r /var/cache/apt

Edits (put, mkdir, rm, mv, ln, chmod, chown, touch, truncate, setfattr,
setfacl, write) open the image read-write and are journaled as a mount's
writes are; they act as root in the image and follow no symbolic link.
Do not edit an image that is mounted.

`ext4-image tar IMAGE [PATH]` is the same as `ext4-image IMAGE tar [PATH]`,
and `ext4-image mkfs|resize IMAGE SIZE` as `ext4-image IMAGE mkfs|resize SIZE`.";

#[derive(Parser)]
#[command(
    name = "ext4-image",
    version,
    about = "Inspect, extract, check, make and edit ext2/ext3/ext4 images without mounting them",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// Byte budget of the metadata block cache (suffixes k, m, g); the
    /// extent mapping cache gets half as much.
    #[arg(long, global = true, value_name = "SIZE", value_parser = util::parse_size)]
    cache_size: Option<u64>,
    /// Edits: commit the running transaction at least every SECONDS seconds
    /// while the command runs, as the kernel's commit= (a crash loses at
    /// most that much of a long put or write; default 5).
    #[arg(long, global = true, value_name = "SECONDS")]
    commit: Option<u32>,
    /// Accept metadata whose checksum does not match (to salvage damaged images).
    #[arg(long, global = true)]
    ignore_checksums: bool,
    /// Ignore a journal that needs recovery (like the kernel's norecovery):
    /// show the filesystem as the device holds it, without the journal's
    /// newest changes. Without it the journal is replayed in memory.
    #[arg(long, global = true)]
    norecovery: bool,
    /// Memory for the plan of a journal replayed in memory or by `recover`
    /// (32 bytes per logged block; suffixes k, m, g; default 32m).
    #[arg(long, global = true, value_name = "SIZE", value_parser = util::parse_size)]
    replay_budget: Option<u64>,
    /// The external journal device of a filesystem whose journal is not in
    /// an inode (the kernel's journal_path=).
    #[arg(long, global = true, value_name = "PATH")]
    journal: Option<PathBuf>,
    /// The filesystem starts this many bytes into IMAGE (fuse2fs' and
    /// mount's offset=; suffixes k, m, g).
    #[arg(long, global = true, value_name = "BYTES", value_parser = util::parse_size)]
    offset: Option<u64>,
    /// The filesystem is partition N of a whole-disk image (MBR or GPT,
    /// numbered as Linux numbers them). Without it such an image is refused
    /// with the list of its ext2/3/4 partitions.
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    partition: Option<u32>,
    /// The image file or block device.
    pub image: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show the superblock and features, like `dumpe2fs -h`, plus what the
    /// engine warns about.
    ///
    /// Example: ext4-image disk.img info --json
    Info {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List a directory (in on-disk order; "." and ".." only with -a).
    ///
    /// Example: ext4-image disk.img ls -lhR /etc
    // -h is "human sizes", as in ls(1); only --help prints the help.
    #[command(disable_help_flag = true)]
    Ls {
        /// Long format: mode, links, uid, gid, size, mtime, name, link target.
        #[arg(short = 'l')]
        long: bool,
        /// With -l, sizes as ls -lh prints them (1K = 1024, rounded up: 2.9M).
        #[arg(short = 'h', long = "human-readable")]
        human: bool,
        /// Print help.
        #[arg(long, action = clap::ArgAction::Help)]
        help: Option<bool>,
        /// Recurse into subdirectories.
        #[arg(short = 'R')]
        recursive: bool,
        /// Include "." and "..".
        #[arg(short = 'a')]
        all: bool,
        /// Show inode numbers.
        #[arg(short = 'i')]
        inode: bool,
        /// Print a JSON array of entries (all attributes, whatever -l says).
        #[arg(long)]
        json: bool,
        /// Directory (or file) inside the image.
        #[arg(default_value = "/")]
        path: OsString,
    },
    /// Show an inode: fields, flags by name, all four times with
    /// nanoseconds, a summary of its block mapping and its xattr names.
    ///
    /// Example: ext4-image disk.img stat /bin/ls
    Stat {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// File, directory or other object inside the image (a symbolic
        /// link is shown itself).
        path: OsString,
    },
    /// Write a file's contents to standard output.
    ///
    /// Example: ext4-image disk.img cat /etc/passwd | head
    Cat {
        /// Regular file inside the image.
        path: OsString,
    },
    /// Dump all extended attributes with hex values, like
    /// `getfattr -d -m - -e hex`.
    ///
    /// Example: ext4-image disk.img getfattr /usr/bin/ping
    Getfattr {
        /// Object inside the image (a symbolic link's own attributes).
        path: OsString,
    },
    /// Copy a file or a tree out of the image.
    ///
    /// A directory's contents go into DEST (created if missing; it receives
    /// the directory's own mode, owner, times and xattrs only if created
    /// here). A non-directory becomes DEST, or DEST/NAME if DEST is a
    /// directory. Type, mode, ownership (as root), atime/mtime, symlinks,
    /// hard links, xattrs, FIFOs, device nodes (as root) and holes are kept;
    /// sockets are skipped. Names that could escape DEST are refused and no
    /// symlink is ever followed while writing. Existing non-directories in
    /// DEST are replaced.
    ///
    /// Example: ext4-image disk.img extract /home ./home-copy
    Extract {
        /// Worker threads (default: the number of CPUs).
        #[arg(long, short = 'j', value_parser = clap::value_parser!(u64).range(1..=extract::MAX_JOBS as u64))]
        jobs: Option<u64>,
        /// What to copy: a directory's contents or one object, inside the image.
        path: OsString,
        /// Where to put it on this machine.
        dest: PathBuf,
    },
    /// Check the whole filesystem's consistency, read-only, by e2fsck's
    /// rules: checksums, bitmaps and free counts, inodes, extent trees,
    /// directories and hash trees, link counts, xattrs, and the journal
    /// superblock, MMP block and quota inode numbers. Exit 0 clean, 1
    /// problems found, 2 cannot open.
    ///
    /// Example: ext4-image disk.img check --data
    Check {
        /// Also read every file's data, so unreadable blocks are found.
        #[arg(long)]
        data: bool,
        /// Worker threads (default: the number of CPUs, at most 4).
        #[arg(long, short = 'j')]
        jobs: Option<usize>,
        /// Print the problems and the summary as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Replay the journal into the image (like `e2fsck -E journal_only`):
    /// the logged blocks written home, the journal emptied,
    /// needs_recovery cleared. The image is written: work on a copy if the
    /// original matters. Damage in the journal is handled as e2fsck does:
    /// what is intact is replayed and the filesystem is marked for a full
    /// check (exit 1; run e2fsck -f). Exit 0: recovered, or nothing to do.
    ///
    /// Example: ext4-image crashed.img recover
    Recover {
        /// Print what was replayed as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Write the tree at PATH (default: the root) to standard output as a
    /// PAX tar stream, as GNU tar's `--format=posix --xattrs --acls -S`
    /// writes it: owners, modes, nanosecond times, xattrs, POSIX ACLs,
    /// device nodes, FIFOs, symlinks, hard links and sparse files (holes
    /// from the image's block map, never read). Names start with `./` for
    /// a directory. Sockets are left out, as GNU tar does. Restore as root
    /// with: tar -x --xattrs --xattrs-include='*' --acls --numeric-owner -S
    ///
    /// Example: ext4-image tar disk.img / | tar -tvv --xattrs --acls
    Tar {
        /// The directory (its whole tree) or file to archive; names in the
        /// stream are relative to it.
        #[arg(default_value = "/")]
        path: OsString,
    },
    /// Make a new, empty filesystem in IMAGE (created, or emptied), laid out
    /// as mke2fs lays it out with the same options: ext2, ext3 or ext4
    /// (the default) with mke2fs.conf's features for the type, the resize
    /// inode included (descriptor blocks reserved so that `resize` and the
    /// kernel's online resize can grow it to 1024 times its size); -O adds
    /// or removes features.
    ///
    /// Times: --timestamp, else $SOURCE_DATE_EPOCH, else now. With -U the
    /// directory hash seed follows from the UUID: the same options give a
    /// byte-identical image on every run.
    ///
    /// Example: ext4-image mkfs disk.img 1g -t ext3 -L data
    Mkfs {
        /// Size of the image: bytes, or with a suffix k, m, g, t; or `auto`
        /// with --from DIR or --from-tar FILE (read once to size it, then
        /// again to build; not standard input): the smallest that holds
        /// the tree plus --margin.
        #[arg(value_parser = mkfs::parse_size_or_auto)]
        size: mkfs::SizeArg,
        /// With SIZE auto: percent of room to leave beyond what the tree
        /// needs (free blocks and inodes).
        #[arg(long, default_value_t = 10, value_name = "PERCENT")]
        margin: u32,
        /// Filesystem type: ext2, ext3 or ext4, with mke2fs.conf's features for it.
        #[arg(short = 't', default_value = "ext4", value_parser = ["ext2", "ext3", "ext4"])]
        fs_type: String,
        /// Fill the new filesystem with this directory's tree: names in byte
        /// order, types, modes, owners, bytes (holes kept), xattrs, ACLs,
        /// hard links, symlinks, device nodes, nanosecond times.
        #[arg(long, value_name = "DIR", conflicts_with = "from_tar")]
        from: Option<PathBuf>,
        /// Fill it from a tar stream instead (FILE, or - for standard
        /// input): owners, modes, times, xattrs and ACLs (GNU tar's
        /// SCHILY records), devices, hard links and sparse files kept,
        /// no root needed. PAX, ustar and GNU headers (members of any
        /// size); 4 KiB runs of zeros in a member stay holes.
        #[arg(long, value_name = "FILE")]
        from_tar: Option<PathBuf>,
        /// Owner of the root directory, UID:GID (default: the --from
        /// directory's, or 0:0).
        #[arg(long, value_name = "UID:GID", value_parser = mkfs::parse_owner)]
        root_owner: Option<(u32, u32)>,
        /// Features to add or (with ^) remove, as mke2fs -O: e.g. ^has_journal,inline_data.
        #[arg(short = 'O', value_name = "FEATURES")]
        features: Vec<String>,
        /// Block size in bytes (default: 1024 below 512 MiB, else 4096, as mke2fs.conf says).
        #[arg(short = 'b', value_parser = ["1024", "2048", "4096", "8192", "16384", "32768", "65536"])]
        block_size: Option<String>,
        /// Volume label (at most 16 bytes).
        #[arg(short = 'L')]
        label: Option<String>,
        /// Filesystem UUID (default: random).
        #[arg(short = 'U')]
        uuid: Option<String>,
        /// Number of inodes wanted (rounded up to fill inode table blocks).
        #[arg(short = 'N')]
        inodes: Option<u64>,
        /// Inode size in bytes (default 256).
        #[arg(short = 'I', value_parser = ["128", "256", "512", "1024"])]
        inode_size: Option<String>,
        /// Seconds since the epoch for every time the filesystem records.
        #[arg(long, allow_hyphen_values = true)]
        timestamp: Option<i64>,
        /// Print nothing on success.
        #[arg(short = 'q')]
        quiet: bool,
    },
    /// Show where a file's bytes live on the device: the answers the
    /// kernel gets from FUSE_IOMAP_BEGIN, or (--physical) the extents as
    /// `filefrag -v` prints them. Works on directories too.
    ///
    /// Example: ext4-image disk.img map --physical /var/log/syslog
    #[command(after_help = map::HELP)]
    Map {
        /// Print one JSON array of the rows (of all PATHs).
        #[arg(long, conflicts_with = "physical")]
        json: bool,
        /// Print extents in the format of `filefrag -v`.
        #[arg(long)]
        physical: bool,
        /// Regular files or directories inside the image.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<OsString>,
    },
    /// Grow the filesystem to SIZE (an image file is extended, sparsely):
    /// more blocks in the last group and new groups with their own
    /// bitmaps and inode tables, as far as the group descriptor blocks in
    /// place hold descriptors: with resize_inode (mke2fs's default) the
    /// reserved descriptor blocks become descriptor blocks as needed and
    /// the resize inode is laid out anew, as resize2fs does; past that
    /// (or without it) resize2fs moves blocks to make room. Offline only:
    /// not on a mounted image. Shrinking is not supported.
    ///
    /// Example: ext4-image disk.img resize 4g
    Resize {
        /// The new size: bytes, or with a suffix k, m, g, t.
        #[arg(value_parser = util::parse_size)]
        size: u64,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
    },
    #[command(flatten)]
    Edit(edit::Edit),
}

/// Why a command failed; the exit status follows from the kind.
pub enum Fail {
    /// The image cannot be opened (exit 2).
    Open(String),
    /// A path or an object in the image is missing or damaged (exit 1).
    Problem(String),
    /// The problem was already printed (exit 1).
    Reported,
}

pub type CmdResult = Result<ExitCode, Fail>;

/// Set once a message about a checksum mismatch has been printed, so the
/// run ends with the way past it (`--ignore-checksums`).
static CHECKSUM_SEEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn warn(msg: impl std::fmt::Display) {
    let msg = msg.to_string();
    // The engine's Error::Checksum, however it was wrapped on the way here.
    if msg.contains("checksum does not match") && !msg.contains("--ignore-checksums") {
        CHECKSUM_SEEN.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    eprintln!("ext4-image: {msg}");
}

/// The closing hint after checksum errors, for commands that read through
/// the engine (`recover` replays the journal itself and has no such mode).
fn checksum_hint(cli: &Cli) {
    if CHECKSUM_SEEN.load(std::sync::atomic::Ordering::Relaxed)
        && !cli.ignore_checksums
        && !matches!(cli.cmd, Cmd::Recover { .. })
    {
        warn("metadata failed its checksum: --ignore-checksums reads it anyway (to salvage what it can; run e2fsck to repair)");
    }
}

/// `io::Error` text without Rust's " (os error N)" suffix.
pub fn io_msg(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn open(cli: &Cli) -> Result<Vol, Fail> {
    open_vol(cli, false)
}

/// Open the image through the engine, read-write when `write` (a journal
/// that needs recovery is then replayed onto it, as a mount does).
pub fn open_vol(cli: &Cli, write: bool) -> Result<Vol, Fail> {
    let img = cli.image.display();
    let cannot = |why: String| Fail::Open(format!("cannot open {img}: {why}"));
    match std::fs::metadata(&cli.image) {
        Ok(m) if m.is_dir() => return Err(cannot("Is a directory".into())),
        Ok(_) => {}
        Err(e) => return Err(cannot(io_msg(&e))),
    }
    let dev = open_device(cli, write)?;
    let mut opts = OpenOptions {
        ignore_checksums: cli.ignore_checksums,
        read_only: !write,
        ..OpenOptions::default()
    };
    util::cache_budget(&mut opts, cli.cache_size);
    if let Some(c) = cli.commit {
        opts.commit_interval = c;
    }
    if let Some(size) = cli.replay_budget {
        opts.replay_budget = usize::try_from(size).unwrap_or(usize::MAX);
    }
    if cli.norecovery {
        opts.recovery = Recovery::Skip;
    }
    let journal = open_journal(cli, write)?.map(|d| Box::new(d) as Box<dyn BlockDevice>);
    Volume::open_with_journal(dev, journal, &opts).map_err(|e| open_error(cli, e))
}

/// IMAGE, or the part of it `--offset`/`--partition` name, read-only
/// unless `write`.
pub fn open_device(cli: &Cli, write: bool) -> Result<FileDevice, Fail> {
    let img = cli.image.display();
    let cannot = |why: String| Fail::Open(format!("cannot open {img}: {why}"));
    let dev = FileDevice::open(&cli.image, !write).map_err(|e| cannot(io_msg(&e)))?;
    let at = ext4_engine::partitions::locate(&dev, cli.offset, cli.partition, |s| {
        format!("--{s} {}", if s == "offset" { "BYTES" } else { "N" })
    })
    .map_err(cannot)?;
    match at {
        Some((start, len)) => dev.window(start, len).map_err(|e| cannot(io_msg(&e))),
        None => Ok(dev),
    }
}

/// The external journal device of `--journal`, if given.
pub fn open_journal(cli: &Cli, write: bool) -> Result<Option<FileDevice>, Fail> {
    let Some(p) = &cli.journal else {
        return Ok(None);
    };
    FileDevice::open(p, !write).map(Some).map_err(|e| {
        Fail::Open(format!(
            "cannot open the journal {}: {}",
            p.display(),
            io_msg(&e)
        ))
    })
}

/// The message for an image that cannot be opened.
pub fn open_error(cli: &Cli, e: Error) -> Fail {
    let img = cli.image.display();
    let cannot = |why: String| Fail::Open(format!("cannot open {img}: {why}"));
    match e {
        Error::NotExt4 => Fail::Open(format!(
            "{img} is not an ext2/ext3/ext4 filesystem (bad superblock magic)"
        )),
        Error::UnknownIncompat { bits } => Fail::Open(format!(
            "cannot open {img}: it uses incompatible features this tool cannot read: {}",
            util::incompat_list(bits)
        )),
        Error::Checksum { .. } if !matches!(cli.cmd, Cmd::Recover { .. }) => {
            cannot(format!("{e} (use --ignore-checksums to open it anyway)"))
        }
        Error::Io(io) => cannot(io_msg(&std::io::Error::from_raw_os_error(io.errno))),
        Error::Journal(j) => cannot(format!(
            "{j} (--norecovery shows the filesystem without the journal's changes)"
        )),
        e => cannot(e.to_string()),
    }
}

/// An image path as the user wrote it, as bytes.
pub fn path_bytes(p: &OsString) -> &[u8] {
    p.as_bytes()
}

pub fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Resolve `path` from the root without following symlinks.
pub fn resolve(vol: &Vol, path: &[u8]) -> Result<InodeNo, Fail> {
    let mut ino = InodeNo::ROOT;
    let mut walked: Vec<u8> = Vec::new();
    for comp in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        let parent = if walked.is_empty() {
            "/".to_string()
        } else {
            show(&walked)
        };
        let full = show(path);
        ino = match vol.lookup_ino(ino, comp) {
            Ok(i) => i,
            Err(Error::NotFound) => {
                return Err(Fail::Problem(format!(
                    "no such file or directory: {full} (no entry '{}' in {parent})",
                    show(comp)
                )))
            }
            Err(Error::NotDir) => {
                return Err(Fail::Problem(format!(
                    "not a directory: {full} ({parent} is not a directory)"
                )))
            }
            Err(Error::NameTooLong) => {
                return Err(Fail::Problem(format!(
                    "file name too long: '{}' in {full}",
                    show(comp)
                )))
            }
            Err(e) => {
                return Err(Fail::Problem(format!(
                    "cannot look up '{}' in {parent}: {e}",
                    show(comp)
                )))
            }
        };
        walked.push(b'/');
        walked.extend_from_slice(comp);
    }
    Ok(ino)
}

/// Print the damage the engine skipped while serving the last requests.
/// Returns how many there were.
pub fn drain_reports(vol: &Vol, context: &str) -> u64 {
    let reports = vol.take_reports();
    for r in &reports {
        warn(format_args!("{context}: damage skipped: {r}"));
    }
    reports.len() as u64
}

fn run(cli: &Cli) -> CmdResult {
    if let Cmd::Recover { json } = cli.cmd {
        return recover::run(cli, json);
    }
    if let Cmd::Mkfs {
        size,
        margin,
        fs_type,
        block_size,
        label,
        uuid,
        inodes,
        inode_size,
        timestamp,
        quiet,
        features,
        from,
        from_tar,
        root_owner,
    } = &cli.cmd
    {
        return mkfs::run(&mkfs::Args {
            from: from.as_deref(),
            from_tar: from_tar.as_deref(),
            root_owner: *root_owner,
            image: &cli.image,
            size: size.0,
            margin: *margin,
            fs_type,
            features,
            block_size: block_size.as_deref().and_then(|b| b.parse().ok()),
            label: label.as_deref(),
            uuid: uuid.as_deref(),
            inodes: *inodes,
            inode_size: inode_size.as_deref().and_then(|b| b.parse().ok()),
            timestamp: *timestamp,
            quiet: *quiet,
            cache_size: cli.cache_size,
        });
    }
    if let Cmd::Resize { size, json } = cli.cmd {
        return resize::run(cli, size, json);
    }
    if let Cmd::Edit(e) = &cli.cmd {
        return edit::run(cli, e);
    }
    let vol = match open(cli) {
        Ok(v) => v,
        Err(f) => {
            // Like dumpe2fs, info still shows the superblock of an image
            // cut short.
            if let Cmd::Info { json } = cli.cmd {
                if let Some(r) = info::truncated(cli, json) {
                    return r;
                }
            }
            return Err(f);
        }
    };
    if !matches!(cli.cmd, Cmd::Info { .. }) {
        for w in vol.warnings() {
            warn(format_args!("warning: {w}"));
        }
    }
    match &cli.cmd {
        Cmd::Info { json } => info::run(&vol, cli, *json),
        Cmd::Ls {
            long,
            human,
            recursive,
            all,
            inode,
            json,
            path,
            ..
        } => list::run(
            &vol,
            path_bytes(path),
            &list::Opts {
                long: *long,
                human: *human,
                recursive: *recursive,
                all: *all,
                inode: *inode,
                json: *json,
            },
        ),
        Cmd::Stat { json, path } => stat::run(&vol, path_bytes(path), *json),
        Cmd::Cat { path } => cat::cat(&vol, path_bytes(path)),
        Cmd::Getfattr { path } => cat::getfattr(&vol, path_bytes(path)),
        Cmd::Extract { jobs, path, dest } => {
            extract::run(&vol, path_bytes(path), dest, jobs.map(|j| j as usize))
        }
        Cmd::Check { data, jobs, json } => check::run(&vol, *data, *jobs, *json),
        Cmd::Map {
            json,
            physical,
            paths,
        } => {
            let paths: Vec<&[u8]> = paths.iter().map(path_bytes).collect();
            let opts = map::Opts {
                json: *json,
                physical: *physical,
            };
            map::run(&vol, &paths, &opts)
        }
        Cmd::Tar { path } => tar_export::run(&vol, path_bytes(path)),
        // Makes the image (run before `open` above).
        Cmd::Mkfs { .. } => unreachable!("mkfs runs before the image is opened"),
        // Opens the image itself, read-write (run before `open` above).
        Cmd::Recover { json } => recover::run(cli, *json),
        Cmd::Edit(_) | Cmd::Resize { .. } => {
            unreachable!("edits open the image read-write themselves")
        }
    }
}

/// The command line with `ext4-image tar|mkfs|resize IMAGE ...` turned
/// into the `ext4-image IMAGE tar|mkfs|resize ...` form the parser knows.
fn command_first(mut args: Vec<OsString>) -> Vec<OsString> {
    if args.len() > 2 && (args[1] == "tar" || args[1] == "mkfs" || args[1] == "resize") {
        args.swap(1, 2);
    }
    args
}

fn main() -> ExitCode {
    // A reader that stops early (`| head`) ends us quietly, as it ends ls
    // and cat: Rust ignores SIGPIPE, and every writer would then have to
    // turn EPIPE into a silent stop itself. Nothing here writes the image
    // after writing to a pipe (`recover` prints once the replay is done).
    // SAFETY: called before any thread starts; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse_from(command_first(std::env::args_os().collect()));
    let code = match run(&cli) {
        Ok(code) => {
            let _ = std::io::stdout().flush();
            code
        }
        Err(Fail::Open(m)) => {
            warn(m);
            ExitCode::from(2)
        }
        Err(Fail::Problem(m)) => {
            warn(m);
            ExitCode::from(1)
        }
        Err(Fail::Reported) => ExitCode::from(1),
    };
    checksum_hint(&cli);
    code
}

/// Write to stdout, turning a closed pipe into a quiet stop.
pub fn out_err(e: std::io::Error) -> Fail {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Fail::Reported
    } else {
        Fail::Problem(format!("cannot write to standard output: {}", io_msg(&e)))
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// `--help` explains every argument and option of every command.
    #[test]
    fn every_argument_has_help() {
        let cli = super::Cli::command();
        let mut missing = Vec::new();
        for c in std::iter::once(&cli).chain(cli.get_subcommands()) {
            for a in c.get_arguments() {
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{} {}", c.get_name(), a.get_id()));
                }
            }
        }
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
    }
}
