//! The iomap data path's set-up (`docs/iomap.md`): probing
//! the kernel, the block device the kernel will do file I/O on (the source
//! itself, or a loop device over an image file), registering it with the
//! FUSE connection, and the `-o iomap=` policy. The per-request side lives
//! in the session (`session/mappings.rs`).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::abi::{self, FUSE_DEV_IOC_MAGIC};
use crate::backend::Backend;
use crate::channel::DevFuse;
use crate::log;
use crate::loopdev::LoopDevice;
use crate::session::Session;
use ext4_engine::mount_opts::MountOptions;

/// `-o iomap=`: whether file data goes through the kernel's iomap layer.
/// `Auto`: when the kernel offers it, the plain data path otherwise; `On`:
/// fail the mount unless iomap can be used; `Off`: always the plain path.
pub type IomapMode = crate::options::AutoOnOff;

const FUSE_DEV_IOC_BACKING_OPEN: libc::c_ulong = nix::request_code_write!(
    FUSE_DEV_IOC_MAGIC,
    1,
    core::mem::size_of::<abi::BackingMap>()
) as libc::c_ulong;
const FUSE_DEV_IOC_BACKING_CLOSE: libc::c_ulong =
    nix::request_code_write!(FUSE_DEV_IOC_MAGIC, 2, core::mem::size_of::<u32>()) as libc::c_ulong;
const FUSE_DEV_IOC_IOMAP_SUPPORT: libc::c_ulong = nix::request_code_read!(
    FUSE_DEV_IOC_MAGIC,
    99,
    core::mem::size_of::<abi::IomapSupport>()
) as libc::c_ulong;
const FUSE_DEV_IOC_SET_NOFS: libc::c_ulong =
    nix::request_code_write!(FUSE_DEV_IOC_MAGIC, 100, core::mem::size_of::<u32>()) as libc::c_ulong;

/// Environment variable, for tests only: `assume` makes the probe report
/// iomap support without asking the kernel, so the set-up and its failure
/// paths (loop device attached, then refused by a kernel without iomap)
/// can be exercised on kernels that lack the extension.
pub const PROBE_OVERRIDE_ENV: &str = "EXT4_FUSE_TEST_ASSUME_IOMAP";

/// `FUSE_DEV_IOC_IOMAP_SUPPORT` on a `/dev/fuse` descriptor: `Some(flags)`
/// (`abi::IOMAP_SUPPORT_*`) when the kernel has iomap, `None` when the
/// ioctl is unknown (`ENOTTY`/`EINVAL`: no iomap).
pub fn probe_fd(fd: BorrowedFd<'_>) -> io::Result<Option<u64>> {
    if std::env::var_os(PROBE_OVERRIDE_ENV).is_some_and(|v| v == "assume") {
        return Ok(Some(abi::IOMAP_SUPPORT_FILEIO));
    }
    let mut s = abi::IomapSupport::default();
    // SAFETY: the ioctl writes one `fuse_iomap_support` into `s`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), FUSE_DEV_IOC_IOMAP_SUPPORT as _, &mut s) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOTTY) | Some(libc::EINVAL) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(s.flags))
}

/// Why a probe's answer rules the iomap data path out, if it does.
fn lacks_iomap(probe: &io::Result<Option<u64>>) -> Option<String> {
    match probe {
        Ok(Some(flags)) if flags & abi::IOMAP_SUPPORT_FILEIO != 0 => None,
        Ok(Some(_)) => Some("this kernel's FUSE iomap cannot do file I/O".to_string()),
        Ok(None) => Some("this kernel's FUSE has no iomap support".to_string()),
        Err(e) => Some(format!("probing FUSE iomap support: {e}")),
    }
}

/// `-o iomap=on` on a kernel without the iomap data path: refused before
/// mount(2), from a probe of a fresh `/dev/fuse` (`prepare` asks the
/// mounted connection again).
pub fn refuse_early(mode: IomapMode) -> Result<(), String> {
    if mode != IomapMode::On {
        return Ok(());
    }
    let probe = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/fuse")
        .and_then(|f| probe_fd(f.as_fd()));
    match lacks_iomap(&probe) {
        Some(why) => decline(mode, &why, true),
        None => Ok(()),
    }
}

/// Whether this kernel's FUSE offers the iomap data path (opens
/// `/dev/fuse` to ask). Any error opening or probing counts as "no".
/// The sandbox uses this to decide whether `CAP_SYS_RAWIO` (which the
/// kernel requires of an iomap server) must be kept.
pub fn kernel_supports_iomap() -> bool {
    let Ok(f) = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/fuse")
    else {
        return false;
    };
    matches!(probe_fd(f.as_fd()), Ok(Some(flags)) if flags & abi::IOMAP_SUPPORT_FILEIO != 0)
}

/// `FUSE_DEV_IOC_BACKING_OPEN` with backing type iomap: returns the
/// backing id, which is the `dev` cookie of mappings on that device.
pub fn backing_open(fuse: BorrowedFd<'_>, dev: BorrowedFd<'_>) -> io::Result<u32> {
    let map = abi::BackingMap {
        fd: dev.as_raw_fd(),
        flags: abi::BACKING_TYPE_IOMAP,
        padding: 0,
    };
    // SAFETY: the ioctl reads one `fuse_backing_map`.
    let r = unsafe { libc::ioctl(fuse.as_raw_fd(), FUSE_DEV_IOC_BACKING_OPEN as _, &map) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // Id 0 is `FUSE_IOMAP_DEV_NULL`; a kernel never hands it out.
    u32::try_from(r)
        .ok()
        .filter(|&id| id != abi::IOMAP_DEV_NULL)
        .ok_or_else(|| io::Error::other(format!("FUSE_DEV_IOC_BACKING_OPEN returned id {r}")))
}

/// `FUSE_DEV_IOC_BACKING_CLOSE`.
pub fn backing_close(fuse: BorrowedFd<'_>, id: u32) -> io::Result<()> {
    // SAFETY: the ioctl reads one u32.
    let r = unsafe { libc::ioctl(fuse.as_raw_fd(), FUSE_DEV_IOC_BACKING_CLOSE as _, &id) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `FUSE_DEV_IOC_SET_NOFS`: keep this server out of filesystem memory
/// reclaim (which could wait on writeback that waits on this server).
/// `Ok(false)`: the kernel does not know the ioctl (`ENOTTY`, `EINVAL`),
/// which is no error.
pub fn set_nofs(fuse: BorrowedFd<'_>) -> io::Result<bool> {
    let on: u32 = 1;
    // SAFETY: the ioctl reads one u32.
    let r = unsafe { libc::ioctl(fuse.as_raw_fd(), FUSE_DEV_IOC_SET_NOFS as _, &on) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOTTY) | Some(libc::EINVAL) => Ok(false),
            _ => Err(e),
        };
    }
    Ok(true)
}

/// The block device the kernel does file I/O on: the source itself when it
/// is a block device, else a loop device over the image (detached when
/// this is dropped).
#[derive(Debug)]
pub struct BackingDevice {
    file: File,
    path: PathBuf,
    loop_dev: Option<LoopDevice>,
}

impl BackingDevice {
    /// Open `source` for iomap: a block device is opened read-only, a
    /// regular file is attached to a loop device with logical block size
    /// `block_size` (the filesystem's).
    pub fn open(source: &Path, block_size: u32) -> io::Result<BackingDevice> {
        Self::open_as(source, block_size, false)
    }

    /// [`BackingDevice::open`], read-write when `writable` (the kernel
    /// writes file data through it; a loop device opened only for reading
    /// is read-only).
    pub fn open_as(source: &Path, block_size: u32, writable: bool) -> io::Result<BackingDevice> {
        let meta = std::fs::metadata(source)?;
        if meta.file_type().is_block_device() {
            let file = OpenOptions::new()
                .read(true)
                .write(writable)
                .custom_flags(libc::O_CLOEXEC)
                .open(source)?;
            return Ok(BackingDevice {
                file,
                path: source.to_path_buf(),
                loop_dev: None,
            });
        }
        if !meta.is_file() {
            return Err(io::Error::other(
                "neither a block device nor a regular file",
            ));
        }
        let lo = LoopDevice::attach_as(source, block_size, writable)?;
        let file = lo.file().try_clone()?;
        Ok(BackingDevice {
            file,
            path: lo.path().to_path_buf(),
            loop_dev: Some(lo),
        })
    }

    /// An already-open source (a helper's descriptor): only a block
    /// device will do, since a server without privileges cannot attach a
    /// loop device (the helper attaches one for an image).
    pub fn from_file(file: File, path: PathBuf) -> io::Result<BackingDevice> {
        if !file.metadata()?.file_type().is_block_device() {
            return Err(io::Error::other(
                "an inherited source must be a block device for iomap (the mount helper attaches a loop device for an image)",
            ));
        }
        Ok(BackingDevice {
            file,
            path,
            loop_dev: None,
        })
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// The device opened anew, read-write (not a duplicate of
    /// [`BackingDevice::file`]): the volume's own opener, so that
    /// detaching the loop device while the volume still uses it only
    /// marks it to go at the last close (the kernel counts openers, not
    /// descriptors).
    pub fn reopen_writable(&self) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&self.path)
    }

    /// `/dev/sdb1`, or `/dev/loop3` for an image.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn loop_device(&self) -> Option<&LoopDevice> {
        self.loop_dev.as_ref()
    }

    /// Short device name for `s_id` (`loop3`, `sdb1`).
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// One line for the log: which device, and how a loop device is set up.
    pub fn describe(&self) -> String {
        match &self.loop_dev {
            Some(l) => format!(
                "{} (loop device, {}-byte blocks, direct I/O {})",
                l.path().display(),
                l.block_size(),
                if l.direct_io() { "on" } else { "off" }
            ),
            None => self.path.display().to_string(),
        }
    }

    /// Close our descriptors and leave a loop device attached until its
    /// last opener (a server handed a descriptor of it) closes it: the
    /// kernel counts open files, not descriptors, so detaching while the
    /// server shares our open file would detach it at once.
    pub fn leave_to_autoclear(self) {
        let BackingDevice { file, loop_dev, .. } = self;
        drop(file);
        if let Some(l) = loop_dev {
            l.leave_to_autoclear();
        }
    }

    /// Close our descriptors and detach a loop device now, reporting a
    /// failure to detach (drop only logs it).
    pub fn close(self) -> io::Result<()> {
        let BackingDevice { file, loop_dev, .. } = self;
        drop(file);
        match loop_dev {
            Some(l) => l.detach(),
            None => Ok(()),
        }
    }
}

/// Set up before mounting for the iomap path: the kernel said yes to the
/// probe and the device is open (a loop device attached for an image).
#[derive(Debug)]
pub struct Prepared {
    mode: IomapMode,
    backing: BackingDevice,
    /// What the kernel's probe said it can do (`abi::IOMAP_SUPPORT_*`).
    support: u64,
}

impl Prepared {
    /// `s_id` to report in `IOMAP_CONFIG`.
    pub fn sid(&self) -> String {
        self.backing.name()
    }
}

/// iomap in use: keep this until the session ends; dropping it detaches a
/// loop device.
#[derive(Debug)]
pub struct Active {
    pub backing: BackingDevice,
    /// The device cookie (backing id).
    pub dev: u32,
}

/// Why iomap is not used: fatal with `-o iomap=on`, a log line otherwise
/// (a debug line when the kernel simply lacks iomap, which is the usual
/// case and no news; an error line when set-up failed on a kernel that
/// has it).
fn decline(mode: IomapMode, why: &str, expected: bool) -> Result<(), String> {
    if mode == IomapMode::On {
        return Err(format!("-o iomap=on: {why}"));
    }
    if expected {
        log::debug(format_args!("{why}; data path: plain FUSE"));
    } else {
        log::error(format_args!("{why}; using the plain FUSE data path"));
    }
    Ok(())
}

/// The iomap mode for a volume whose journal was replayed in memory
/// (`replayed` blocks read from the log, not from the device): off, since
/// under iomap the kernel reads file data from the device itself and would
/// miss a replayed block holding file data (data=journal). `Err` when
/// `-o iomap=on` asks for it anyway.
pub fn mode_after_replay(mode: IomapMode, replayed: usize) -> Result<IomapMode, String> {
    if replayed == 0 || mode == IomapMode::Off {
        return Ok(mode);
    }
    decline(
        mode,
        &format!(
            "the journal was replayed in memory ({replayed} blocks the device does not hold), \
             and under iomap the kernel would read file data from the device"
        ),
        true,
    )?;
    Ok(IomapMode::Off)
}

/// The iomap mode for a volume the options place at an offset in its
/// source (`offset=`, `partition=`): off, since mapping addresses count
/// from the volume's start while the kernel's block device (the source,
/// or a loop device over all of it) starts at the source's. `Err` when
/// `-o iomap=on` asks for it anyway.
pub fn mode_for_source(mode: IomapMode, common: &MountOptions) -> Result<IomapMode, String> {
    if mode == IomapMode::Off || (common.offset.is_none() && common.partition.is_none()) {
        return Ok(mode);
    }
    decline(
        mode,
        "the filesystem starts inside its source (offset= or partition=), and iomap \
         addresses would count from the source's start",
        true,
    )?;
    Ok(IomapMode::Off)
}

/// The iomap mode for a volume: under iomap the kernel writes file data
/// through its block device while the server writes metadata, so a
/// read-write volume may use iomap only when the server does its own I/O
/// on that same block device (`one_device`: one page cache, one flush
/// that covers both): a block device source, or the writable loop device
/// of [`writable_backing`]. `Err` when `-o iomap=on` asks for it anyway.
pub fn mode_for_writes(
    mode: IomapMode,
    read_only: bool,
    one_device: bool,
) -> Result<IomapMode, String> {
    if read_only || one_device || mode == IomapMode::Off {
        return Ok(mode);
    }
    decline(
        mode,
        "the mount is read-write and the volume is not open on the block device the kernel \
         would write file data through",
        true,
    )?;
    Ok(IomapMode::Off)
}

/// A read-write iomap mount of an image file: attach a writable loop
/// device, on which the caller opens the volume
/// ([`BackingDevice::reopen_writable`]) and which [`prepare`] then
/// registers, so the server's metadata and the kernel's file data go
/// through one block device. `Ok(None)` when that
/// is not the case (iomap off, read-only, not an image file, a kernel
/// without iomap, an image that opens read-only): the caller opens the
/// source itself and the usual checks decide. `Err`: `-o iomap=on` cannot
/// be honoured.
pub fn writable_backing(
    mode: IomapMode,
    source: &Path,
    common: &MountOptions,
) -> Result<Option<BackingDevice>, String> {
    if mode == IomapMode::Off || common.read_only || mode_for_source(mode, common)? != mode {
        return Ok(None);
    }
    if !std::fs::metadata(source).is_ok_and(|m| m.is_file()) || !kernel_supports_iomap() {
        return Ok(None);
    }
    // What the volume's own open would find: refusals are its to report.
    let Ok(file) = crate::inherited::open_source(source, false) else {
        return Ok(None);
    };
    if crate::inherited::mounts_read_only(&file, common) {
        return Ok(None);
    }
    let Some(block_size) = block_size_of(&file) else {
        return Ok(None);
    };
    drop(file);
    match BackingDevice::open_as(source, block_size, true) {
        Ok(b) => Ok(Some(b)),
        Err(e) => {
            decline(
                mode,
                &format!(
                    "{}: cannot attach a writable loop device for iomap: {e}",
                    source.display()
                ),
                false,
            )?;
            Ok(None)
        }
    }
}

/// The block size in the superblock of the image `file`, if it has one.
fn block_size_of(file: &File) -> Option<u32> {
    use std::os::unix::fs::FileExt;
    use zerocopy::FromBytes;
    let mut raw = vec![0u8; ext4_engine::SUPERBLOCK_SIZE];
    file.read_exact_at(&mut raw, ext4_engine::SUPERBLOCK_OFFSET)
        .ok()?;
    let sb = ext4_engine::RawSuperblock::ref_from_bytes(&raw).ok()?;
    let size = file.metadata().ok()?.len();
    ext4_engine::Superblock::parse(sb, &raw, size)
        .ok()
        .map(|s| s.block_size)
}

/// Whether files may offer untorn single-block writes: the kernel's iomap
/// does atomic writes (`support` from the probe) and the block device
/// `dev` writes one filesystem block of `block_size` bytes atomically
/// (its atomic write unit range, from sysfs, holds it; a loop device has
/// none).
pub fn atomic_writes(support: u64, dev: &File, block_size: u32) -> bool {
    if support & abi::IOMAP_SUPPORT_ATOMIC == 0 {
        return false;
    }
    let Ok(meta) = dev.metadata() else {
        return false;
    };
    use std::os::unix::fs::MetadataExt;
    let rdev = meta.rdev();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let unit = |what: &str| {
        std::fs::read_to_string(format!(
            "/sys/dev/block/{major}:{minor}/queue/atomic_write_unit_{what}_bytes"
        ))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0)
    };
    atomic_unit_fits(unit("min"), unit("max"), block_size)
}

/// A device whose atomic writes are `min..=max` bytes can write one block
/// of `block_size` bytes untorn.
pub fn atomic_unit_fits(min: u64, max: u64, block_size: u32) -> bool {
    let bs = u64::from(block_size);
    min > 0 && min <= bs && bs <= max
}

/// Where [`prepare`] finds the block device.
#[derive(Debug)]
pub enum Given {
    /// The source's path: the device itself, or a read-only loop device
    /// attached over the image.
    Path,
    /// The source a helper passed already open (it must be a block
    /// device).
    Inherited(File),
    /// Set up already: [`writable_backing`]'s loop device, on which the
    /// volume is open.
    Ready(BackingDevice),
}

/// Before the mount: probe the kernel and open the device it would do I/O
/// on. `Ok(None)`: use the plain data path (the reason is logged);
/// `Err`: `-o iomap=on` cannot be honoured (one line, nothing left
/// attached).
/// `fuse` is the session's own descriptor (asked rather than a fresh
/// `/dev/fuse`, which a server on inherited descriptors may not open);
/// `given` says how to find the device.
pub fn prepare(
    mode: IomapMode,
    fuse: BorrowedFd<'_>,
    source: &Path,
    given: Given,
    block_size: u32,
) -> Result<Option<Prepared>, String> {
    if mode == IomapMode::Off {
        log::debug(format_args!("data path: plain FUSE (-o iomap=off)"));
        return Ok(None);
    }
    let probe = probe_fd(fuse);
    let support = match probe {
        Ok(Some(flags)) => flags,
        _ => 0,
    };
    if let Some(why) = lacks_iomap(&probe) {
        decline(mode, &why, true)?;
        return Ok(None);
    }
    let backing = match given {
        Given::Inherited(file) => {
            // The device's own name (for s_id), not /dev/fd/M.
            let path = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
                .unwrap_or_else(|_| source.to_path_buf());
            BackingDevice::from_file(file, path)
        }
        Given::Ready(b) => Ok(b),
        Given::Path => BackingDevice::open(source, block_size),
    };
    match backing {
        Ok(backing) => {
            log::debug(format_args!("iomap set-up: {}", backing.describe()));
            Ok(Some(Prepared {
                mode,
                backing,
                support,
            }))
        }
        Err(e) => {
            decline(
                mode,
                &format!(
                    "{}: cannot set up a block device for iomap: {e}",
                    source.display()
                ),
                false,
            )?;
            Ok(None)
        }
    }
}

/// After `FUSE_INIT`: register the device with the connection and switch
/// the session to iomap. `Ok(None)`: plain data path (logged; a loop
/// device is detached at once). `Err`: `-o iomap=on` failed (the loop
/// device is detached before returning).
pub fn activate<B: Backend>(
    prepared: Option<Prepared>,
    session: &Session<B>,
    fuse: &DevFuse,
) -> Result<Option<Active>, String> {
    let Some(Prepared {
        mode,
        backing,
        support,
    }) = prepared
    else {
        log::debug(format_args!("data path: plain FUSE"));
        return Ok(None);
    };
    let granted = session
        .negotiated()
        .is_some_and(|n| n.flags & abi::init_flags::IOMAP != 0);
    if !granted {
        drop(backing);
        decline(
            mode,
            "the kernel did not offer FUSE_IOMAP in FUSE_INIT (it needs its enable_iomap \
             parameter and CAP_SYS_RAWIO)",
            false,
        )?;
        return Ok(None);
    }
    let dev = match backing_open(fuse.fd(), backing.file().as_fd()) {
        Ok(id) => id,
        Err(e) => {
            let what = backing.describe();
            drop(backing);
            decline(mode, &format!("registering {what} with FUSE: {e}"), false)?;
            return Ok(None);
        }
    };
    match set_nofs(fuse.fd()) {
        Ok(true) => {}
        Ok(false) => log::debug(format_args!(
            "FUSE_DEV_IOC_SET_NOFS: not known to this kernel (continuing)"
        )),
        Err(e) => log::error(format_args!("FUSE_DEV_IOC_SET_NOFS: {e} (continuing)")),
    }
    if let Err(e) = session.activate_iomap(dev) {
        let _ = backing_close(fuse.fd(), dev);
        drop(backing);
        decline(mode, e, false)?;
        return Ok(None);
    }
    let bs = session.backend().iomap_config().map_or(0, |c| c.block_size);
    if atomic_writes(support, backing.file(), bs) {
        session.allow_atomic_writes();
    }
    log::error(format_args!(
        "data path: iomap on {} (device cookie {dev}; atomic writes {})",
        backing.describe(),
        if session.atomic_writes_allowed() {
            "on"
        } else {
            "off"
        }
    ));
    Ok(Some(Active { backing, dev }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_replayed_in_memory_turns_iomap_off() {
        use crate::options::AutoOnOff::*;
        assert_eq!(mode_after_replay(Auto, 0), Ok(Auto));
        assert_eq!(mode_after_replay(On, 0), Ok(On));
        assert_eq!(mode_after_replay(Auto, 3), Ok(Off));
        assert_eq!(mode_after_replay(Off, 3), Ok(Off));
        assert!(mode_after_replay(On, 3).unwrap_err().contains("iomap=on"));
    }

    #[test]
    fn ioctl_numbers() {
        // _IOW(229, 1, 16 bytes), _IOW(229, 2, 4), _IOR(229, 99, 16), _IOW(229, 100, 4)
        assert_eq!(FUSE_DEV_IOC_BACKING_OPEN, 0x4010_e501);
        assert_eq!(FUSE_DEV_IOC_BACKING_CLOSE, 0x4004_e502);
        assert_eq!(FUSE_DEV_IOC_IOMAP_SUPPORT, 0x8010_e563);
        assert_eq!(FUSE_DEV_IOC_SET_NOFS, 0x4004_e564);
    }

    /// On a real `/dev/fuse` descriptor: set, or unknown to this kernel
    /// (no iomap series here: `ENOTTY`); never an error.
    #[test]
    fn set_nofs_tolerates_a_kernel_without_it() {
        let Ok(f) = OpenOptions::new().read(true).write(true).open("/dev/fuse") else {
            eprintln!("no /dev/fuse: skipped");
            return;
        };
        let known = set_nofs(f.as_fd()).expect("SET_NOFS must not fail");
        assert_eq!(known, kernel_supports_iomap() || known);
        eprintln!("FUSE_DEV_IOC_SET_NOFS known to this kernel: {known}");
    }

    #[test]
    fn atomic_write_units() {
        assert!(atomic_unit_fits(512, 65536, 4096));
        assert!(atomic_unit_fits(4096, 4096, 4096));
        assert!(!atomic_unit_fits(0, 0, 4096));
        assert!(!atomic_unit_fits(512, 2048, 4096));
        assert!(!atomic_unit_fits(8192, 65536, 4096));
        // Not a block device, or the kernel cannot: never.
        let f = File::open("/dev/null").unwrap();
        assert!(!atomic_writes(abi::IOMAP_SUPPORT_ATOMIC, &f, 4096));
        assert!(!atomic_writes(abi::IOMAP_SUPPORT_FILEIO, &f, 4096));
    }

    #[test]
    fn modes() {
        assert_eq!(IomapMode::parse("auto"), Some(IomapMode::Auto));
        assert_eq!(IomapMode::parse("on"), Some(IomapMode::On));
        assert_eq!(IomapMode::parse("off"), Some(IomapMode::Off));
        assert_eq!(IomapMode::parse("maybe"), None);
    }
}
