//! Symlinks and special files, and what every new object gets last:
//! owner, xattrs, mode and times.

use super::*;

impl Extraction<'_> {
    /// Make a non-directory; whether it was made.
    pub(super) fn make(
        &self,
        w: &mut Worker,
        dir: &DirNode,
        cn: &CStr,
        path: &[u8],
        attr: &Attr,
    ) -> bool {
        let dfd = dir.fd();
        match attr.kind {
            FileType::Regular => self.file(w, dir, cn, path, attr),
            FileType::Symlink => self.symlink(dfd, cn, path, attr),
            FileType::Fifo | FileType::CharDevice | FileType::BlockDevice => {
                self.node(dfd, cn, path, attr)
            }
            FileType::Socket => {
                self.note(format_args!("{}: socket ignored", show(path)));
                false
            }
            FileType::Directory => false,
        }
    }

    pub(super) fn symlink(&self, dfd: RawFd, cn: &CStr, path: &[u8], attr: &Attr) -> bool {
        let target = match self.vol.readlink(attr.ino).map(|t| cname(&t)) {
            Ok(Ok(t)) if t.as_bytes().is_empty() => {
                self.error(path, "symlink target is empty; not created");
                return false;
            }
            Ok(Ok(t)) => t,
            Ok(Err(_)) => {
                self.error(path, "symlink target contains a NUL byte");
                return false;
            }
            Err(e) => {
                self.error(path, format_args!("cannot read link: {e}"));
                return false;
            }
        };
        if let Err(e) = replace(dfd, cn, || symlinkat(&target, dfd, cn)) {
            self.error(path, format_args!("cannot create: {}", io_msg(&e)));
            return false;
        }
        self.finish(Target::At(dfd, cn), path, attr, None);
        true
    }

    pub(super) fn node(&self, dfd: RawFd, cn: &CStr, path: &[u8], attr: &Attr) -> bool {
        let (ty, dev) = match attr.kind {
            FileType::CharDevice => (
                libc::S_IFCHR,
                libc::makedev(attr.rdev_major, attr.rdev_minor),
            ),
            FileType::BlockDevice => (
                libc::S_IFBLK,
                libc::makedev(attr.rdev_major, attr.rdev_minor),
            ),
            _ => (libc::S_IFIFO, 0),
        };
        if ty != libc::S_IFIFO && !self.as_root {
            if !self.warned_dev.swap(true, Ordering::Relaxed) {
                self.note("device nodes are skipped: creating them needs root");
            }
            return false;
        }
        if let Err(e) = replace(dfd, cn, || mknodat(dfd, cn, ty | 0o600, dev)) {
            self.error(path, format_args!("cannot create: {}", io_msg(&e)));
            return false;
        }
        self.finish(Target::At(dfd, cn), path, attr, None);
        true
    }

    /// Ownership, xattrs, mode, times — in that order: chown clears setuid
    /// bits and file capabilities, and times must come after everything
    /// that touches the inode. `made` is what a regular file this run just
    /// created got at creation (fstat, so umask, setgid directories and
    /// default ACLs are accounted for): owner and mode are then set only
    /// where they differ, which for most files saves two inode updates.
    pub(super) fn finish(
        &self,
        t: Target<'_>,
        path: &[u8],
        attr: &Attr,
        made: Option<&std::fs::Metadata>,
    ) {
        if self.as_root && made.is_none_or(|m| m.uid() != attr.uid || m.gid() != attr.gid) {
            if let Err(e) = t.chown(attr.uid, attr.gid) {
                self.error(path, format_args!("cannot set owner: {}", io_msg(&e)));
            }
        }
        // An ACL written as an xattr rewrites the mode's group bits; a new
        // file was made without setuid/setgid/sticky bits, so a chown
        // cleared none.
        let had_xattrs = self.xattrs(t, path, attr.ino);
        let mode_differs = made.is_none_or(|m| m.mode() & 0o7777 != attr.mode & 0o7777);
        if attr.kind != FileType::Symlink && (had_xattrs || mode_differs) {
            if let Err(e) = t.chmod(attr.mode & 0o7777) {
                self.error(path, format_args!("cannot set mode: {}", io_msg(&e)));
            }
        }
        if let Err(e) = t.times(attr) {
            self.error(path, format_args!("cannot set times: {}", io_msg(&e)));
        }
    }

    /// Copy the inode's xattrs; whether it has any (some may have failed).
    pub(super) fn xattrs(&self, t: Target<'_>, path: &[u8], ino: InodeNo) -> bool {
        let names = match self.vol.listxattr(ino) {
            Ok(n) => n,
            Err(e) => {
                self.error(path, format_args!("cannot list xattrs: {e}"));
                return true;
            }
        };
        let any = !names.is_empty();
        for n in names {
            let value = match self.vol.getxattr(ino, &n) {
                Ok(v) => v,
                Err(e) => {
                    self.error(path, format_args!("cannot read xattr {}: {e}", show(&n)));
                    continue;
                }
            };
            let Ok(cn) = cname(&n) else { continue };
            if let Err(e) = t.setxattr(&cn, &value) {
                let ns = n.split(|&b| b == b'.').next().unwrap_or(&[]).to_vec();
                match e.raw_os_error() {
                    Some(libc::EPERM) | Some(libc::EOPNOTSUPP) | Some(libc::EACCES) => {
                        if lock(&self.warned_ns).insert(ns.clone()) {
                            self.note(format_args!(
                                "the destination does not accept {}.* attributes ({}); they are skipped",
                                show(&ns),
                                io_msg(&e)
                            ));
                        }
                    }
                    Some(libc::ENOSPC) | Some(libc::E2BIG) | Some(libc::ERANGE) => self.error(
                        path,
                        format_args!(
                            "the destination cannot store xattr {} ({} bytes): {}",
                            show(&n),
                            value.len(),
                            io_msg(&e)
                        ),
                    ),
                    _ => self.error(
                        path,
                        format_args!("cannot set xattr {}: {}", show(&n), io_msg(&e)),
                    ),
                }
            }
        }
        any
    }
}
