//! `ext4-image tar`: the tree as a PAX tar stream on standard output, with
//! what an ordinary user cannot recreate by `extract`: owners, modes,
//! nanosecond times, xattrs (`SCHILY.xattr.*`), POSIX ACLs
//! (`SCHILY.acl.access`/`default`, the text GNU tar writes), device nodes,
//! FIFOs, symlinks, hard links (second and later names as links) and
//! sparse files (GNU sparse format 1.0, holes from the engine's file map).
//!
//! Records are written as GNU tar 1.34 writes them for
//! `tar --format=posix --xattrs --acls -S`, so `tar -x` (as root) rebuilds
//! the tree and `tar -tvv` lists it as it lists its own archives.

use std::collections::{HashMap, HashSet};
use std::io::{self, BufWriter, Read, Write};

use ext4_engine::{
    Attr, FilePiece, FileType, InodeNo, Timestamp, ACL_GROUP, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER,
    ACL_USER, ACL_USER_OBJ,
};
use tar::{Builder, EntryType, Header};

use crate::{drain_reports, out_err, resolve, show, warn, CmdResult, Fail, Vol};

const ACL_ACCESS: &[u8] = b"system.posix_acl_access";
const ACL_DEFAULT: &[u8] = b"system.posix_acl_default";

/// Ustar's numeric fields: 7 octal digits for ids, 11 for sizes.
const USTAR_ID_MAX: u32 = 0o7_777_777;
const USTAR_SIZE_MAX: u64 = 0o77_777_777_777;

struct Export<'v, W: Write> {
    vol: &'v Vol,
    out: Builder<W>,
    /// First name of each inode with more than one link.
    links: HashMap<InodeNo, Vec<u8>>,
    /// Directories already written (a damaged image may link one twice).
    dirs: HashSet<InodeNo>,
    failed: bool,
}

pub fn run(vol: &Vol, path: &[u8]) -> CmdResult {
    let ino = resolve(vol, path)?;
    let attr = vol
        .getattr(ino)
        .map_err(|e| Fail::Problem(format!("cannot read {}: {e}", show(path))))?;
    let stdout = io::stdout().lock();
    let mut builder = Builder::new(BufWriter::with_capacity(1 << 20, stdout));
    builder.mode(tar::HeaderMode::Complete);
    let mut ex = Export {
        vol,
        out: builder,
        links: HashMap::new(),
        dirs: HashSet::new(),
        failed: false,
    };
    if attr.kind == FileType::Directory {
        ex.tree(ino, attr).map_err(out_err)?;
    } else {
        let name = path.rsplit(|&b| b == b'/').find(|c| !c.is_empty());
        ex.entry(name.unwrap_or(b"."), &attr).map_err(out_err)?;
    }
    let mut w = ex.out.into_inner().map_err(out_err)?;
    w.flush().map_err(out_err)?;
    if ex.failed {
        Err(Fail::Reported)
    } else {
        Ok(std::process::ExitCode::SUCCESS)
    }
}

impl<'v, W: Write> Export<'v, W> {
    /// A directory and everything below it, as `tar -C DIR .` names them
    /// (`./`, `./a`, `./a/b`), in on-disk order, depth first.
    fn tree(&mut self, root: InodeNo, attr: Attr) -> io::Result<()> {
        self.dirs.insert(root);
        self.entry(b".", &attr)?;
        // Explicit stack: a deep image must not exhaust ours.
        let mut stack = vec![(b".".to_vec(), self.children(root, b"."), 0usize)];
        while let Some((prefix, kids, i)) = stack.last_mut() {
            let Some((ino, name)) = kids.get(*i).cloned() else {
                stack.pop();
                continue;
            };
            *i += 1;
            let mut path = prefix.clone();
            path.push(b'/');
            path.extend_from_slice(&name);
            let attr = match self.vol.getattr(ino) {
                Ok(a) => a,
                Err(e) => {
                    self.fail(&path, format_args!("cannot read inode {ino}: {e}"));
                    continue;
                }
            };
            if attr.kind == FileType::Directory && !self.dirs.insert(ino) {
                self.fail(
                    &path,
                    format_args!("directory inode {ino} is linked twice; skipped"),
                );
                continue;
            }
            self.entry(&path, &attr)?;
            if attr.kind == FileType::Directory {
                let kids = self.children(ino, &path);
                stack.push((path, kids, 0));
            }
        }
        Ok(())
    }

    /// A directory's entries but `.` and `..`, in on-disk order.
    fn children(&mut self, dir: InodeNo, path: &[u8]) -> Vec<(InodeNo, Vec<u8>)> {
        let mut kids = Vec::new();
        let r = self.vol.readdir(dir, 0, &mut |e| {
            if e.name != b"." && e.name != b".." {
                kids.push((e.ino, e.name.to_vec()));
            }
            true
        });
        if let Err(e) = r {
            self.fail(path, format_args!("cannot list the directory: {e}"));
        }
        if drain_reports(self.vol, &show(path)) > 0 {
            self.failed = true;
        }
        kids
    }

    fn fail(&mut self, path: &[u8], msg: std::fmt::Arguments<'_>) {
        warn(format_args!("{}: {msg}", show(path)));
        self.failed = true;
    }

    /// One member: its PAX records, its header, its data.
    fn entry(&mut self, path: &[u8], attr: &Attr) -> io::Result<()> {
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        let mut header = Header::new_ustar();
        let mut name = path.to_vec();
        if attr.kind == FileType::Directory && name.last() != Some(&b'/') {
            name.push(b'/');
        }
        if attr.kind == FileType::Socket {
            // As GNU tar: sockets are not archived (nor become the target
            // of a later name's link).
            warn(format_args!("{}: socket ignored", show(path)));
            return Ok(());
        }
        // Hard links: the second and later names point at the first.
        if attr.kind != FileType::Directory && attr.nlink > 1 {
            if let Some(first) = self.links.get(&attr.ino) {
                let first = first.clone();
                header.set_entry_type(EntryType::Link);
                set_name(&mut header, &mut pax, &name, &first);
                // As GNU tar: a link member carries no xattrs or ACLs
                // (the first name's member has them).
                self.common(&mut header, &mut pax, attr, path, false);
                header.set_size(0);
                return self.write(header, pax, io::empty());
            }
            self.links.insert(attr.ino, name.clone());
        }
        let mut link = Vec::new();
        let mut data: Option<Contents> = None;
        let mut size = 0u64;
        match attr.kind {
            FileType::Directory => header.set_entry_type(EntryType::Directory),
            FileType::Symlink => {
                header.set_entry_type(EntryType::Symlink);
                match self.vol.readlink(attr.ino) {
                    Ok(t) => link = t,
                    Err(e) => self.fail(path, format_args!("cannot read the link target: {e}")),
                }
            }
            FileType::CharDevice | FileType::BlockDevice => {
                header.set_entry_type(if attr.kind == FileType::CharDevice {
                    EntryType::Char
                } else {
                    EntryType::Block
                });
                set_device(&mut header, &mut pax, attr);
            }
            FileType::Fifo => header.set_entry_type(EntryType::Fifo),
            // Left out before anything else (below).
            FileType::Socket => return Ok(()),
            FileType::Regular => {
                header.set_entry_type(EntryType::Regular);
                let c = self.contents(path, attr);
                size = c.stored_len();
                if c.sparse_map.is_some() {
                    pax.push(("GNU.sparse.major".into(), b"1".to_vec()));
                    pax.push(("GNU.sparse.minor".into(), b"0".to_vec()));
                    pax.push(("GNU.sparse.name".into(), name.clone()));
                    pax.push(("GNU.sparse.realsize".into(), attr.size.to_string().into()));
                    name = sparse_member_name(&name);
                }
                data = Some(c);
            }
        }
        set_name(&mut header, &mut pax, &name, &link);
        header.set_size(size.min(USTAR_SIZE_MAX));
        if size > USTAR_SIZE_MAX {
            pax.push(("size".into(), size.to_string().into()));
        }
        self.common(&mut header, &mut pax, attr, path, true);
        match data {
            Some(mut c) => {
                self.write(header, pax, &mut c)?;
                self.failed |= c.failed;
                Ok(())
            }
            None => self.write(header, pax, io::empty()),
        }
    }

    /// Mode, owner, times, xattrs and ACLs: the same for every kind.
    fn common(
        &mut self,
        header: &mut Header,
        pax: &mut Vec<(String, Vec<u8>)>,
        attr: &Attr,
        path: &[u8],
        xattrs: bool,
    ) {
        header.set_mode(attr.mode & 0o7777);
        header.set_uid(attr.uid.min(USTAR_ID_MAX) as u64);
        header.set_gid(attr.gid.min(USTAR_ID_MAX) as u64);
        if attr.uid > USTAR_ID_MAX {
            pax.push(("uid".into(), attr.uid.to_string().into()));
        }
        if attr.gid > USTAR_ID_MAX {
            pax.push(("gid".into(), attr.gid.to_string().into()));
        }
        header.set_mtime(attr.mtime.sec.clamp(0, 0o77_777_777_777) as u64);
        pax.push(("mtime".into(), pax_time(attr.mtime).into()));
        pax.push(("atime".into(), pax_time(attr.atime).into()));
        pax.push(("ctime".into(), pax_time(attr.ctime).into()));
        if xattrs {
            self.xattrs(pax, attr, path);
        }
    }

    fn xattrs(&mut self, pax: &mut Vec<(String, Vec<u8>)>, attr: &Attr, path: &[u8]) {
        let names = match self.vol.listxattr(attr.ino) {
            Ok(n) => n,
            Err(e) => {
                self.fail(path, format_args!("cannot list xattrs: {e}"));
                return;
            }
        };
        let mut values = Vec::new();
        for n in names {
            match self.vol.getxattr(attr.ino, &n) {
                Ok(v) => values.push((n, v)),
                Err(e) => self.fail(path, format_args!("cannot read xattr {}: {e}", show(&n))),
            }
        }
        let get = |want: &[u8]| values.iter().find(|(n, _)| n == want).map(|(_, v)| v);
        let (access, default) = (get(ACL_ACCESS), get(ACL_DEFAULT));
        // GNU tar stores the access ACL (from the mode bits if there is no
        // xattr) whenever the file has any ACL, then the default ACL.
        if access.is_some() || default.is_some() {
            let text = match access {
                Some(v) => acl_text(v),
                None => Some(mode_acl_text(attr.mode)),
            };
            match text {
                Some(t) => pax.push(("SCHILY.acl.access".into(), t.into())),
                None => self.fail(path, format_args!("malformed access ACL")),
            }
        }
        if let Some(v) = default {
            match acl_text(v) {
                Some(t) => pax.push(("SCHILY.acl.default".into(), t.into())),
                None => self.fail(path, format_args!("malformed default ACL")),
            }
        }
        for (n, v) in values {
            let key = format!("SCHILY.xattr.{}", String::from_utf8_lossy(&n));
            if key.as_bytes()[13..] != n[..] || n.contains(&b'=') {
                self.fail(
                    path,
                    format_args!("xattr name {} cannot be archived", show(&n)),
                );
                continue;
            }
            pax.push((key, v));
        }
    }

    fn write(
        &mut self,
        mut header: Header,
        pax: Vec<(String, Vec<u8>)>,
        data: impl Read,
    ) -> io::Result<()> {
        self.out
            .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        header.set_cksum();
        self.out.append(&header, data)
    }

    /// Where a regular file's bytes are: data runs, and the GNU sparse map
    /// when the file has holes (or unwritten extents, which read as zeros).
    fn contents(&mut self, path: &[u8], attr: &Attr) -> Contents<'v> {
        let mut runs: Vec<(u64, u64, bool)> = Vec::new();
        let mut holes = false;
        if attr.size > 0 {
            match self.vol.file_pieces(attr.ino) {
                Ok(mut pieces) => loop {
                    let at = pieces.offset();
                    let Some(p) = pieces.next() else { break };
                    match p {
                        Ok(FilePiece::Zeros { .. }) => holes = true,
                        Ok(FilePiece::Device { offset, len, .. })
                        | Ok(FilePiece::Engine { offset, len }) => push_run(&mut runs, offset, len),
                        Err(e) => {
                            warn(format_args!("{}: mapping byte {at}: {e}", show(path)));
                            self.failed = true;
                            // What is left is archived as zeros.
                            push_run(&mut runs, at, attr.size - at);
                            break;
                        }
                    }
                },
                Err(e) => {
                    self.fail(path, format_args!("cannot read the inode: {e}"));
                    push_run(&mut runs, 0, attr.size);
                }
            }
        }
        let sparse_map = holes.then(|| sparse_map(&runs, attr.size));
        Contents {
            vol: self.vol,
            ino: attr.ino,
            path: path.to_vec(),
            runs: runs.into_iter().map(|(o, l, _)| (o, l)).collect(),
            sparse_map,
            map_pos: 0,
            run: 0,
            in_run: 0,
            failed: false,
        }
    }
}

fn push_run(runs: &mut Vec<(u64, u64, bool)>, offset: u64, len: u64) {
    if let Some(last) = runs.last_mut() {
        if last.0 + last.1 == offset {
            last.1 += len;
            return;
        }
    }
    runs.push((offset, len, true));
}

/// The GNU sparse 1.0 map that starts a sparse member's data: the number
/// of regions, then offset and length of each, one decimal per line,
/// padded with NULs to a 512-byte boundary. A file ending in a hole gets
/// a last, empty region at its size (as GNU tar writes it).
fn sparse_map(runs: &[(u64, u64, bool)], size: u64) -> Vec<u8> {
    let mut regions: Vec<(u64, u64)> = runs.iter().map(|&(o, l, _)| (o, l)).collect();
    if regions.last().is_none_or(|&(o, l)| o + l < size) {
        regions.push((size, 0));
    }
    let mut s = format!("{}\n", regions.len());
    for (o, l) in regions {
        s.push_str(&format!("{o}\n{l}\n"));
    }
    let mut v = s.into_bytes();
    v.resize(v.len().div_ceil(512) * 512, 0);
    v
}

/// The member name GNU tar gives a sparse file's data
/// (`DIR/GNUSparseFile.0/NAME`; the real name is in `GNU.sparse.name`).
fn sparse_member_name(name: &[u8]) -> Vec<u8> {
    let (dir, base) = match name.iter().rposition(|&b| b == b'/') {
        Some(i) => (&name[..=i], &name[i + 1..]),
        None => (&b""[..], name),
    };
    let mut v = dir.to_vec();
    v.extend_from_slice(b"GNUSparseFile.0/");
    v.extend_from_slice(base);
    v
}

/// Name and link target into the header, or into PAX records (with the
/// header's fields cut short) when they do not fit ustar's 100 bytes.
fn set_name(header: &mut Header, pax: &mut Vec<(String, Vec<u8>)>, name: &[u8], link: &[u8]) {
    let old = header.as_old_mut();
    let n = name.len().min(old.name.len());
    old.name[..n].copy_from_slice(&name[..n]);
    if name.len() > old.name.len() {
        pax.push(("path".into(), name.to_vec()));
    }
    let n = link.len().min(old.linkname.len());
    old.linkname[..n].copy_from_slice(&link[..n]);
    if link.len() > old.linkname.len() {
        pax.push(("linkpath".into(), link.to_vec()));
    }
}

fn set_device(header: &mut Header, pax: &mut Vec<(String, Vec<u8>)>, attr: &Attr) {
    let (ma, mi) = (attr.rdev_major, attr.rdev_minor);
    // Ustar holds 7 octal digits; bigger numbers go in PAX records.
    if let Some(u) = header.as_ustar_mut() {
        u.set_device_major(ma.min(USTAR_ID_MAX));
        u.set_device_minor(mi.min(USTAR_ID_MAX));
    }
    if ma > USTAR_ID_MAX {
        pax.push(("SCHILY.devmajor".into(), ma.to_string().into()));
    }
    if mi > USTAR_ID_MAX {
        pax.push(("SCHILY.devminor".into(), mi.to_string().into()));
    }
}

/// A PAX time: seconds, and the fraction without trailing zeros.
fn pax_time(t: Timestamp) -> String {
    let nsec = t.nsec.min(999_999_999);
    if nsec == 0 {
        return t.sec.to_string();
    }
    // A negative time with a fraction: -1.25 is sec -2, nsec 750000000.
    let (sign, whole, frac) = if t.sec < 0 {
        ("-", (t.sec + 1).unsigned_abs(), 1_000_000_000 - nsec)
    } else {
        ("", t.sec as u64, nsec)
    };
    let f = format!("{frac:09}");
    format!("{sign}{whole}.{}", f.trim_end_matches('0'))
}

/// An ACL in the text GNU tar stores (acl_to_text's long form, one entry
/// per line, numeric ids), from its `system.posix_acl_*` xattr value.
fn acl_text(v: &[u8]) -> Option<String> {
    let mut s = String::new();
    for (tag, perm, id) in ext4_engine::acl_entries(v).ok()? {
        let (kind, qual) = match tag {
            ACL_USER_OBJ => ("user", None),
            ACL_USER => ("user", Some(id)),
            ACL_GROUP_OBJ => ("group", None),
            ACL_GROUP => ("group", Some(id)),
            ACL_MASK => ("mask", None),
            ACL_OTHER => ("other", None),
            _ => return None,
        };
        s.push_str(kind);
        s.push(':');
        if let Some(q) = qual {
            s.push_str(&q.to_string());
        }
        s.push(':');
        s.push_str(&rwx(perm));
        s.push('\n');
    }
    Some(s)
}

/// The access ACL the mode bits mean (a file with only a default ACL).
fn mode_acl_text(mode: u32) -> String {
    let p = |shift: u32| rwx(((mode >> shift) & 7) as u16);
    format!("user::{}\ngroup::{}\nother::{}\n", p(6), p(3), p(0))
}

fn rwx(perm: u16) -> String {
    let bit = |b: u16, c: char| if perm & b != 0 { c } else { '-' };
    [bit(4, 'r'), bit(2, 'w'), bit(1, 'x')].iter().collect()
}

/// A regular file's member data: the sparse map (if any), then the bytes
/// of each data run, read through the engine.
struct Contents<'a> {
    vol: &'a Vol,
    ino: InodeNo,
    path: Vec<u8>,
    runs: Vec<(u64, u64)>,
    sparse_map: Option<Vec<u8>>,
    map_pos: usize,
    run: usize,
    in_run: u64,
    /// Some bytes could not be read (archived as zeros).
    failed: bool,
}

impl Contents<'_> {
    /// Bytes the member holds: the map and the data runs.
    fn stored_len(&self) -> u64 {
        let map = self.sparse_map.as_ref().map_or(0, |m| m.len() as u64);
        map + self.runs.iter().map(|r| r.1).sum::<u64>()
    }
}

impl Read for Contents<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if let Some(map) = &self.sparse_map {
            if self.map_pos < map.len() {
                let n = buf.len().min(map.len() - self.map_pos);
                buf[..n].copy_from_slice(&map[self.map_pos..self.map_pos + n]);
                self.map_pos += n;
                return Ok(n);
            }
        }
        let Some(&(offset, len)) = self.runs.get(self.run) else {
            return Ok(0);
        };
        let want = (buf.len() as u64).min(len - self.in_run) as usize;
        let at = offset + self.in_run;
        let n = match self.vol.read(self.ino, at, &mut buf[..want]) {
            Ok(0) | Err(_) => {
                // The member's size is written already: archive zeros and
                // say so (the exit status is 1).
                if !self.failed {
                    warn(format_args!(
                        "{}: cannot read bytes from {at}: archived as zeros",
                        show(&self.path)
                    ));
                }
                self.failed = true;
                buf[..want].fill(0);
                want
            }
            Ok(n) => n,
        };
        self.in_run += n as u64;
        if self.in_run == len {
            self.run += 1;
            self.in_run = 0;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        let t = |sec, nsec| pax_time(Timestamp { sec, nsec });
        assert_eq!(t(5, 0), "5");
        assert_eq!(t(1796567763, 422805390), "1796567763.42280539");
        assert_eq!(t(-2, 750_000_000), "-1.25");
        assert_eq!(t(-1, 0), "-1");
    }

    #[test]
    fn sparse_maps() {
        let m = sparse_map(&[(0, 4096, true), (8192, 100, true)], 1 << 20);
        assert_eq!(&m[..28], b"3\n0\n4096\n8192\n100\n1048576\n0\n");
        assert_eq!(m.len(), 512);
        assert!(m[28..].iter().all(|&b| b == 0));
    }
}
