//! `ext4-fuse-mount SOURCE MOUNTPOINT [-o OPTIONS]`: the privileged half of
//! a mount. Run as root (also as `mount.fuse.ext4-fuse`, which mount(8)
//! calls for `-t fuse.ext4-fuse`), it opens the source read-only, checks it
//! holds an ext2/3/4 filesystem, opens /dev/fuse and mounts it, then starts
//! `ext4-fuse /dev/fd/M /dev/fd/N` as the unprivileged user (`-o setuid=`,
//! default nobody) with no capabilities — or only CAP_SYS_RAWIO when the
//! kernel offers iomap. The server then confines itself further.
//!
//! The helper waits for the server's start-up process: it exits once the
//! server is serving (status 0), or unmounts again when it failed. With
//! `-f` it waits for the server to end, and unmounts if it died.
//!
//! Called as `mount.*` it follows mount(8)'s helper conventions instead:
//! `-f` is "fake" (check everything, mount nothing), and `-n`, `-s`, `-v`,
//! `-t TYPE` are accepted.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use ext4_engine::mount_opts::MountOptions;
use ext4_fuse::inherited::{self, io_msg};
use ext4_fuse::iomap_setup::{self, BackingDevice, IomapMode};
use ext4_fuse::mount::{self, MountSpec, Mounted};
use ext4_fuse::options;
use ext4_fuse::sandbox;
use ext4_fuse_common::{cli, os};

const NAME: &str = "ext4-fuse-mount";
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, User};

const USAGE: &str = "usage: ext4-fuse-mount SOURCE MOUNTPOINT [-o OPTIONS] [-f] [-d]

Mount an ext2/ext3/ext4 image or block device read-only through FUSE as
root, and serve it with ext4-fuse running unprivileged and confined.
Options are those of ext4-fuse (see ext4-fuse --help), including
setuid=NAME (default nobody) and nosandbox.
  -f             keep the server in the foreground; the helper waits for it
  -d             debug: the server logs every request (implies -f)
  -h, --help     this text
  -V, --version  the version
Installed as mount.fuse.ext4-fuse, mount(8)'s helper flags apply instead:
-f fakes the mount; -n, -s, -v and -t TYPE are accepted.

Exit status: 0 mounted (and, with -f, unmounted cleanly), 1 mounting or
serving failed, 2 a bad argument or option.";

enum Parsed {
    Run(Box<Args>),
    Help,
    Version,
}

struct Args {
    source: PathBuf,
    mountpoint: PathBuf,
    options: Vec<String>,
    foreground: bool,
    debug: bool,
    fake: bool,
    opts: options::Options,
}

fn parse_args() -> Result<Parsed, String> {
    let mut pos: Vec<OsString> = Vec::new();
    let mut a = Args {
        source: PathBuf::new(),
        mountpoint: PathBuf::new(),
        options: Vec::new(),
        foreground: false,
        debug: false,
        fake: false,
        opts: options::Options::default(),
    };
    let mut it = std::env::args_os();
    // As mount.fuse.ext4-fuse, mount(8) passes -f for a fake mount.
    let as_mount_helper = it
        .next()
        .and_then(|a0| {
            Path::new(&a0)
                .file_name()
                .map(|n| n.to_string_lossy().starts_with("mount."))
        })
        .unwrap_or(false);
    while let Some(arg) = it.next() {
        match arg.to_str() {
            Some("-h" | "--help") => return Ok(Parsed::Help),
            Some("-V" | "--version") => return Ok(Parsed::Version),
            Some("-o") => {
                let v = it.next().ok_or("-o needs a value")?;
                a.options
                    .push(v.into_string().map_err(|_| "-o: options must be UTF-8")?);
            }
            Some(s) if s.starts_with("-o") && s.len() > 2 => a.options.push(s[2..].to_string()),
            Some("-t") if as_mount_helper => {
                it.next().ok_or("-t needs a value")?;
            }
            Some("-d") => a.debug = true,
            Some("-f") if as_mount_helper => a.fake = true,
            Some("-f" | "--foreground") => a.foreground = true,
            Some("-n" | "-s" | "-v") if as_mount_helper => {}
            Some("-N") => return Err("-N (mount namespaces) is not supported".into()),
            Some(s) if s.starts_with('-') && s.len() > 1 => {
                return Err(format!("unknown argument '{s}' (see --help)"))
            }
            _ => pos.push(arg),
        }
    }
    if pos.len() != 2 {
        return Err("expected SOURCE and MOUNTPOINT (see --help)".into());
    }
    a.mountpoint = pos.pop().unwrap_or_default().into();
    a.source = pos.pop().unwrap_or_default().into();
    // The same option checks as the server, before touching anything.
    let mut cl = vec![
        a.source.to_string_lossy().into_owned(),
        a.mountpoint.to_string_lossy().into_owned(),
    ];
    for o in &a.options {
        cl.push("-o".into());
        cl.push(o.clone());
    }
    a.opts = options::parse(cl).map_err(|e| cli::one_line(&e))?;
    Ok(Parsed::Run(Box::new(a)))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Parsed::Run(a)) => *a,
        Ok(Parsed::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Version) => {
            println!("ext4-fuse-mount {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => return cli::usage_error(NAME, &e),
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("{NAME}: {e}");
            }
            ExitCode::from(cli::EXIT_FAILURE)
        }
    }
}

/// The server binary: next to this one, else `ext4-fuse` on PATH.
fn server_path() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("ext4-fuse")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("ext4-fuse"))
}

fn run(args: Args) -> Result<(), String> {
    let opts = &args.opts;
    if !nix::unistd::geteuid().is_root() {
        return Err("must run as root (ext4-fuse mounts as an ordinary user itself)".into());
    }
    let user_name = opts.user.as_deref().unwrap_or(sandbox::DEFAULT_USER);
    let user = User::from_name(user_name)
        .map_err(|e| format!("looking up user {user_name}: {e}"))?
        .ok_or_else(|| format!("no such user: {user_name} (see -o setuid=)"))?;

    let src = args.source.display().to_string();
    let source = inherited::open_source(&args.source, opts.common.read_only)
        .map_err(|e| format!("{src}: {}", io_msg(&e)))?;
    // Refuse a non-ext source before anything is mounted (read-only: the
    // check must not count as a mount of the filesystem).
    let clone = source
        .try_clone()
        .map_err(|e| format!("{src}: {}", io_msg(&e)))?;
    let check = MountOptions {
        read_only: true,
        ..opts.common.clone()
    };
    let block_size = inherited::open_volume(clone, &src, &check)?.sb().block_size;
    let mountpoint = mount::check_mountpoint(&args.mountpoint)?;
    // The kernel offers iomap only to a server holding CAP_SYS_RAWIO, and
    // does file I/O on a block device: an image file gets a loop device
    // (attached here, as only root can), which the server is handed
    // instead of the file. Autoclear detaches it once the server is gone.
    // Read-write, the server writes its metadata through the same
    // (writable) loop device as the kernel writes file data.
    let read_only = inherited::mounts_read_only(&source, &opts.common);
    let keep_rawio = iomap_setup::mode_for_source(opts.iomap, &opts.common)? != IomapMode::Off
        && iomap_setup::kernel_supports_iomap();
    if args.fake {
        return Ok(());
    }
    let backing = if keep_rawio && source.metadata().is_ok_and(|m| m.is_file()) {
        Some(
            BackingDevice::open_as(&args.source, block_size, !read_only)
                .map_err(|e| format!("{src}: attaching a loop device: {}", io_msg(&e)))?,
        )
    } else {
        None
    };
    let source = match &backing {
        Some(b) => b
            .file()
            .try_clone()
            .map_err(|e| format!("{}: {}", b.path().display(), io_msg(&e)))?,
        None => source,
    };

    let fsname = opts
        .common
        .fsname
        .clone()
        .unwrap_or_else(|| os::default_fsname(&args.source));
    let spec = MountSpec::new(
        &opts.common,
        fsname.clone(),
        mountpoint,
        ext4_fuse::SUBTYPE,
        read_only,
    );
    let (fuse, mounted) = mount::mount(&spec).map_err(|e| e.to_string())?;

    let mut cmd = Command::new(server_path());
    cmd.arg(format!("/dev/fd/{}", source.as_raw_fd()))
        .arg(format!("/dev/fd/{}", fuse.as_raw_fd()));
    for o in &args.options {
        cmd.arg("-o").arg(o);
    }
    // Names the mount in the server's messages and its command line.
    if opts.common.fsname.is_none() {
        cmd.arg("-o")
            .arg(format!("fsname={}", fsname.replace(',', "\\,")));
    }
    if args.debug {
        cmd.arg("-d");
    } else if args.foreground {
        cmd.arg("-f");
    }

    // SAFETY: single-threaded; the child only sets up and execs.
    let child = match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Child) => {
            let e = start_server(
                cmd,
                source.as_fd(),
                fuse.as_fd(),
                &user,
                keep_rawio,
                opts.nosandbox,
            );
            eprintln!("ext4-fuse-mount: {e}");
            // SAFETY: leave without running the parent's exit handlers.
            unsafe { libc::_exit(1) }
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => {
            let _ = mounted.unmount();
            return Err(format!("fork: {e}"));
        }
    };
    // Only the server may hold the connection: were this process to keep
    // it, a dead server would leave a hanging mount instead of a broken one.
    drop(fuse);
    drop(source);
    // The server's descriptor is the loop device's only opener now (it
    // shares our open file): detaching here would pull the device from
    // under it. Autoclear takes it when the server closes it.
    if let Some(b) = backing {
        b.leave_to_autoclear();
    }
    let status = loop {
        match waitpid(child, None) {
            Err(nix::Error::EINTR) => continue,
            other => break other,
        }
    };
    match status {
        Ok(WaitStatus::Exited(_, 0)) => Ok(()),
        // The server (or the child before exec) said why on stderr.
        Ok(WaitStatus::Exited(_, _)) => {
            undo(&mounted);
            Err(String::new())
        }
        Ok(WaitStatus::Signaled(_, sig, _)) => {
            undo(&mounted);
            Err(format!("the server was killed by {sig}; unmounted"))
        }
        other => {
            undo(&mounted);
            Err(format!("waiting for the server: {other:?}"))
        }
    }
}

/// Unmount unless someone already did (an `umount` racing a dying
/// server) or mounted something over it.
fn undo(m: &Mounted) {
    let _ = m.unmount();
}

/// In the child: hand both descriptors over, drop to the server's user and
/// capabilities, exec. Returns only on failure.
fn start_server(
    mut cmd: Command,
    source: BorrowedFd<'_>,
    fuse: BorrowedFd<'_>,
    user: &User,
    keep_rawio: bool,
    nosandbox: bool,
) -> String {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    // Whatever else our caller left open stays behind: the server gets
    // stdio and the two descriptors, nothing more.
    // SAFETY: close_range takes plain numbers and a flag.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    for fd in [source, fuse] {
        if let Err(e) = fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::empty())) {
            return format!("fcntl: {e}");
        }
    }
    if !nosandbox {
        let keep = sandbox::kept(keep_rawio);
        let step = sandbox::drop_bounding(&keep, true)
            .and_then(|()| sandbox::switch_user(user.uid, user.gid, &keep, true))
            .and_then(|()| sandbox::no_new_privs());
        if let Err(e) = step {
            return format!("dropping privileges for the server: {e}");
        }
    }
    let prog = cmd.get_program().to_owned();
    let e = cmd.exec();
    format!("cannot run {}: {}", Path::new(&prog).display(), io_msg(&e))
}
