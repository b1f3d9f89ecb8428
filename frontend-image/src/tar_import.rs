//! `ext4-image mkfs --from-tar FILE|-`: fill a new image from a tar stream
//! through the engine's write API, keeping what an ordinary user could not
//! recreate by extracting it: owners, modes, nanosecond times (PAX
//! `mtime`/`atime`), xattrs (`SCHILY.xattr.*`), POSIX ACLs
//! (`SCHILY.acl.access`/`default`, GNU tar's text), device nodes, FIFOs,
//! hard links and sparse files (GNU sparse 1.0, as GNU tar `-S
//! --format=posix` and `ext4-image tar` write them). Members are taken in
//! stream order; directories missing from the stream are made (0755,
//! root's), and every directory gets its attributes after the last member.
//! Sizes and numbers as PAX records give them, else as the header does
//! (octal, or GNU's base-256). `estimate` reads a stream once for SIZE
//! auto.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use ext4_engine::{
    FileDevice, InodeNo, Timestamp, Volume, ACL_GROUP, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER,
    ACL_USER, ACL_USER_OBJ,
};
use tar::{EntryType, Header};

use crate::populate::{
    at, engine, entry_bytes, set_meta, set_size, write_all, Copied, Estimate, Meta, Progress, CRED,
    R,
};

const S_IFCHR: u16 = 0o020000;
const S_IFBLK: u16 = 0o060000;
const S_IFIFO: u16 = 0o010000;
/// The most an extended header, long name or sparse map may take.
const HEADER_MAX: u64 = 16 << 20;

struct Import<'a> {
    vol: &'a Volume<FileDevice>,
    now: Timestamp,
    /// Directories by path (components joined by `/`, "" the root).
    dirs: HashMap<Vec<u8>, InodeNo>,
    /// Other objects by path (hard link targets).
    files: HashMap<Vec<u8>, InodeNo>,
    /// Directories' attributes, applied after the last member.
    later: Vec<(InodeNo, Meta, PathBuf)>,
    done: Copied,
    buf: Vec<u8>,
}

/// Fill the volume from the tar stream `input`.
pub fn run(
    vol: &Volume<FileDevice>,
    input: impl Read,
    root_owner: Option<(u32, u32)>,
    now: i64,
    progress: Progress<'_>,
) -> R<Copied> {
    let mut im = Import {
        vol,
        now: Timestamp { sec: now, nsec: 0 },
        dirs: HashMap::from([(Vec::new(), InodeNo::ROOT)]),
        files: HashMap::new(),
        later: Vec::new(),
        done: Copied::default(),
        buf: vec![0u8; 1 << 20],
    };
    let mut tr = TarReader::new(input);
    while let Some((h, pending)) = tr.next()? {
        im.member(&h, &mut tr.body, pending)?;
        progress(&im.done);
    }
    for (ino, mut m, path) in std::mem::take(&mut im.later).into_iter().rev() {
        if ino == InodeNo::ROOT {
            if let Some((u, g)) = root_owner {
                (m.uid, m.gid) = (u, g);
            }
        }
        set_meta(vol, ino, &m, im.now, &path)?;
    }
    let st = vol.statfs();
    im.done.free_blocks = st.blocks_free;
    im.done.free_inodes = st.inodes_free;
    Ok(im.done)
}

/// A member's path as components joined by `/` ("" for the root): `./`,
/// leading and doubled slashes and `.` dropped; `..` refused.
fn normalize(p: &[u8]) -> Option<Vec<u8>> {
    let mut out: Vec<u8> = Vec::new();
    for c in p.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return None,
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Some(out)
}

fn split(p: &[u8]) -> (&[u8], &[u8]) {
    match p.iter().rposition(|&b| b == b'/') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => (&b""[..], p),
    }
}

/// A PAX time (`-1.25` is second -2 and 750 ms).
fn pax_time(v: &[u8]) -> Option<Timestamp> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let whole: i64 = whole.parse().ok()?;
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nsec: u32 = digits.parse().ok()?;
    Some(match (neg, nsec) {
        (false, n) => Timestamp {
            sec: whole,
            nsec: n,
        },
        (true, 0) => Timestamp {
            sec: -whole,
            nsec: 0,
        },
        (true, n) => Timestamp {
            sec: -whole - 1,
            nsec: 1_000_000_000 - n,
        },
    })
}

/// An ACL in GNU tar's text (entries separated by commas or newlines,
/// numeric ids or names) in its `system.posix_acl_*` xattr form.
fn acl_xattr(text: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(text).ok()?;
    let mut entries: Vec<(u16, u16, u32)> = Vec::new();
    for e in text
        .split([',', '\n'])
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.starts_with('#'))
    {
        let mut f = e.split(':');
        let (tag, qual, perm) = (f.next()?, f.next()?, f.next()?);
        let id = |kind: &str| -> Option<u32> { qual.parse().ok().or_else(|| name_id(kind, qual)) };
        let (t, id) = match (tag, qual.is_empty()) {
            ("user" | "u", true) => (ACL_USER_OBJ, u32::MAX),
            ("user" | "u", false) => (ACL_USER, id("user")?),
            ("group" | "g", true) => (ACL_GROUP_OBJ, u32::MAX),
            ("group" | "g", false) => (ACL_GROUP, id("group")?),
            ("mask" | "m", _) => (ACL_MASK, u32::MAX),
            ("other" | "o", _) => (ACL_OTHER, u32::MAX),
            _ => return None,
        };
        let mut p = 0u16;
        for c in perm.chars() {
            p |= match c {
                'r' => 4,
                'w' => 2,
                'x' => 1,
                '-' => 0,
                _ => return None,
            };
        }
        entries.push((t, p, id));
    }
    entries.sort_by_key(|&(t, _, id)| (t, id));
    let mut v = 2u32.to_le_bytes().to_vec();
    for (t, p, id) in entries {
        v.extend_from_slice(&t.to_le_bytes());
        v.extend_from_slice(&p.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    Some(v)
}

/// A user or group name's id from this machine's databases.
fn name_id(kind: &str, name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: c is NUL-terminated; the returned record is read at once.
    unsafe {
        if kind == "user" {
            let p = libc::getpwnam(c.as_ptr());
            (!p.is_null()).then(|| (*p).pw_uid)
        } else {
            let g = libc::getgrnam(c.as_ptr());
            (!g.is_null()).then(|| (*g).gr_gid)
        }
    }
}

/// What extended headers said about the next member.
#[derive(Default)]
struct Pending {
    pax: HashMap<String, Vec<u8>>,
    name: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
}

/// PAX records: `LENGTH KEY=VALUE\n`, LENGTH counting the whole record.
fn pax_records(mut d: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    while !d.is_empty() && d[0] != 0 {
        let sp = d.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&d[..sp]).ok()?.parse().ok()?;
        if len <= sp + 1 || len > d.len() || d[len - 1] != b'\n' {
            return None;
        }
        let rec = &d[sp + 1..len - 1];
        let eq = rec.iter().position(|&b| b == b'=')?;
        out.push((
            String::from_utf8_lossy(&rec[..eq]).into_owned(),
            rec[eq + 1..].to_vec(),
        ));
        d = &d[len..];
    }
    Some(out)
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

fn number(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

impl Import<'_> {
    fn member(&mut self, h: &Header, e: &mut impl Read, pending: Pending) -> R<()> {
        let pax = pending.pax;
        let kind = h.entry_type();
        let raw = match (pax.get("GNU.sparse.name"), pax.get("path"), pending.name) {
            (Some(n), _, _) | (None, Some(n), _) => n.clone(),
            (None, None, Some(n)) => n,
            (None, None, None) => h.path_bytes().into_owned(),
        };
        let show = PathBuf::from(String::from_utf8_lossy(&raw).into_owned());
        let path = normalize(&raw).ok_or_else(|| at(&show, "a member name with `..`"))?;
        let bad = |what: &str| at(&show, format!("bad tar header: {what}"));
        let num = |key: &str, hv: io::Result<u64>| -> R<u64> {
            match pax.get(key) {
                Some(v) => number(v).ok_or_else(|| bad(key)),
                None => hv.map_err(|_| bad(key)),
            }
        };
        let uid = num("uid", h.uid())? as u32;
        let gid = num("gid", h.gid())? as u32;
        let perm = (h.mode().map_err(|_| bad("mode"))? & 0o7777) as u16;
        let mtime = match pax.get("mtime") {
            Some(v) => pax_time(v).ok_or_else(|| bad("mtime"))?,
            None => Timestamp {
                sec: h.mtime().map_err(|_| bad("mtime"))? as i64,
                nsec: 0,
            },
        };
        let atime = match pax.get("atime") {
            Some(v) => pax_time(v).ok_or_else(|| bad("atime"))?,
            None => mtime,
        };
        let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for (k, v) in &pax {
            if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                xattrs.push((name.as_bytes().to_vec(), v.clone()));
            }
        }
        for (key, name) in [
            ("SCHILY.acl.access", b"system.posix_acl_access".as_slice()),
            ("SCHILY.acl.default", b"system.posix_acl_default".as_slice()),
        ] {
            if let Some(t) = pax.get(key) {
                let v = acl_xattr(t).ok_or_else(|| bad(key))?;
                xattrs.retain(|(n, _)| n != name);
                xattrs.push((name.to_vec(), v));
            }
        }
        xattrs.sort();
        let meta = Meta {
            uid,
            gid,
            perm,
            atime,
            mtime,
            is_link: kind == EntryType::Symlink,
            xattrs,
        };
        let (dir, name) = split(&path);
        let vol = self.vol;
        if kind == EntryType::Directory {
            let ino = match self.dirs.get(&path) {
                Some(&i) => i,
                None => {
                    let parent = self.parent(dir, &show)?;
                    let ino = if parent == InodeNo::ROOT && name == b"lost+found" {
                        vol.lookup_ino(parent, name)
                            .map_err(|x| engine(&show, "lookup", x))?
                    } else {
                        vol.mkdir(parent, name, perm, &CRED)
                            .map_err(|x| engine(&show, "mkdir", x))?
                            .ino
                    };
                    self.dirs.insert(path.clone(), ino);
                    ino
                }
            };
            self.later.push((ino, meta, show));
            self.done.entries += 1;
            return Ok(());
        }
        if path.is_empty() {
            return Err(at(&show, "the root is not a directory in this stream"));
        }
        let parent = self.parent(dir, &show)?;
        let link_target = || -> R<Vec<u8>> {
            let l = pax
                .get("linkpath")
                .cloned()
                .or_else(|| pending.link.clone())
                .or_else(|| h.link_name_bytes().map(|l| l.into_owned()))
                .ok_or_else(|| bad("no link name"))?;
            Ok(l)
        };
        let ino = match kind {
            EntryType::Link => {
                let target = normalize(&link_target()?).ok_or_else(|| bad("link name"))?;
                let &ino = self.files.get(&target).ok_or_else(|| {
                    at(&show, "a hard link to a name not in the stream before it")
                })?;
                vol.link(ino, parent, name, &CRED)
                    .map_err(|x| engine(&show, "link", x))?;
                self.done.entries += 1;
                return Ok(());
            }
            EntryType::Symlink => {
                let target = link_target()?;
                vol.symlink(parent, name, &target, &CRED)
                    .map_err(|x| engine(&show, "symlink", x))?
                    .ino
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let (major, minor) = if kind == EntryType::Fifo {
                    (0, 0)
                } else {
                    let hmaj = h.device_major().map(|d| d.unwrap_or(0) as u64);
                    let hmin = h.device_minor().map(|d| d.unwrap_or(0) as u64);
                    (num("SCHILY.devmajor", hmaj)?, num("SCHILY.devminor", hmin)?)
                };
                let t = match kind {
                    EntryType::Char => S_IFCHR,
                    EntryType::Block => S_IFBLK,
                    _ => S_IFIFO,
                };
                vol.mknod(parent, name, t | perm, (major as u32, minor as u32), &CRED)
                    .map_err(|x| engine(&show, "mknod", x))?
                    .ino
            }
            EntryType::Regular | EntryType::Continuous => {
                let ino = vol
                    .create(parent, name, perm, &CRED)
                    .map_err(|x| engine(&show, "create", x))?
                    .ino;
                let sparse = pax.get("GNU.sparse.major").map(|v| v.as_slice()) == Some(b"1");
                let size = if sparse {
                    let real = pax
                        .get("GNU.sparse.realsize")
                        .and_then(|v| number(v))
                        .ok_or_else(|| bad("GNU.sparse.realsize"))?;
                    self.sparse_data(e, ino, &show)?;
                    real
                } else {
                    self.data(e, ino, &show)?
                };
                set_size(vol, ino, size, &show)?;
                ino
            }
            k => return Err(at(&show, format!("tar member type {k:?} is not supported"))),
        };
        set_meta(vol, ino, &meta, self.now, &show)?;
        self.files.insert(path, ino);
        self.done.entries += 1;
        Ok(())
    }

    /// The directory `dir`, made (0755, root's) with its parents if the
    /// stream has not named it yet. Iterative: a path may have any number
    /// of components.
    fn parent(&mut self, dir: &[u8], show: &Path) -> R<InodeNo> {
        let mut missing = Vec::new();
        let mut at_dir = dir;
        let mut ino = loop {
            if let Some(&i) = self.dirs.get(at_dir) {
                break i;
            }
            missing.push(at_dir);
            at_dir = split(at_dir).0;
        };
        for d in missing.into_iter().rev() {
            let name = split(d).1;
            ino = if ino == InodeNo::ROOT && name == b"lost+found" {
                self.vol
                    .lookup_ino(ino, name)
                    .map_err(|x| engine(show, "lookup", x))?
            } else {
                self.vol
                    .mkdir(ino, name, 0o755, &CRED)
                    .map_err(|x| engine(show, "mkdir", x))?
                    .ino
            };
            self.dirs.insert(d.to_vec(), ino);
        }
        Ok(ino)
    }

    /// A plain member's bytes, in order; returns their number. Runs of
    /// 4 KiB of zeros (at 4 KiB offsets) are left as holes, as `mke2fs
    /// -d` leaves zero blocks: the new file reads zeros there anyway.
    fn data(&mut self, r: &mut impl Read, ino: InodeNo, show: &Path) -> R<u64> {
        const Z: usize = 4096;
        static ZEROS: [u8; Z] = [0; Z];
        let mut off = 0u64;
        loop {
            let n = read_full(r, &mut self.buf).map_err(|x| at(show, x))?;
            if n == 0 {
                return Ok(off);
            }
            // self.buf is a multiple of Z long, so chunks stay aligned
            // until the member's last, short read.
            let mut run: Option<usize> = None;
            for (i, c) in self.buf[..n].chunks(Z).enumerate() {
                let zero = c == &ZEROS[..c.len()];
                match (zero, run) {
                    (false, None) => run = Some(i * Z),
                    (true, Some(s)) => {
                        write_all(self.vol, ino, off + s as u64, &self.buf[s..i * Z], show)?;
                        run = None;
                    }
                    _ => {}
                }
            }
            if let Some(s) = run {
                write_all(self.vol, ino, off + s as u64, &self.buf[s..n], show)?;
            }
            off += n as u64;
            self.done.bytes += n as u64;
        }
    }

    /// A GNU sparse 1.0 member: the map (region count, then offset and
    /// length of each, one decimal per line, padded to 512 bytes), then
    /// the regions' bytes.
    fn sparse_data(&mut self, r: &mut impl Read, ino: InodeNo, show: &Path) -> R<()> {
        let bad = || at(show, "malformed GNU sparse map");
        // Read 512-byte blocks until the map's 1 + 2n lines are complete,
        // counting newlines as they come (no rescans), within HEADER_MAX.
        let mut head: Vec<u8> = Vec::new();
        let mut block = [0u8; 512];
        let mut lines = 0u64;
        let mut want: Option<u64> = None;
        loop {
            r.read_exact(&mut block).map_err(|x| at(show, x))?;
            head.extend_from_slice(&block);
            lines += block.iter().filter(|&&b| b == b'\n').count() as u64;
            if want.is_none() && lines > 0 {
                let first = head.split(|&b| b == b'\n').next().unwrap_or(&[]);
                let n = number(first).ok_or_else(bad)?;
                // Each region takes at least 4 bytes of the map.
                if n > HEADER_MAX / 4 {
                    return Err(bad());
                }
                want = Some(1 + 2 * n);
            }
            if want.is_some_and(|w| lines >= w) {
                break;
            }
            if head.len() as u64 > HEADER_MAX {
                return Err(bad());
            }
        }
        let n = want.unwrap_or(1) as usize - 1;
        let numbers: Vec<u64> = head
            .split(|&b| b == b'\n')
            .skip(1)
            .take(n)
            .map(number)
            .collect::<Option<_>>()
            .ok_or_else(bad)?;
        for pair in numbers.chunks_exact(2) {
            let (mut off, mut len) = (pair[0], pair[1]);
            while len > 0 {
                let n = (len as usize).min(self.buf.len());
                r.read_exact(&mut self.buf[..n]).map_err(|x| at(show, x))?;
                write_all(self.vol, ino, off, &self.buf[..n], show)?;
                self.done.bytes += n as u64;
                off += n as u64;
                len -= n as u64;
            }
        }
        Ok(())
    }
}

/// Where errors in the stream itself are reported.
const STREAM: &str = "(tar stream)";

/// The stream's members, one at a time, framed here (the tar crate's raw
/// mode takes a member's size from its header, and its own PAX reader
/// splits records at newlines, which ACL texts and binary xattr values
/// contain): extended headers and long names gathered into the member's
/// [`Pending`], its bytes read from `body`.
struct TarReader<Rd: Read> {
    /// The stream, limited to the current member's bytes.
    body: io::Take<Rd>,
    /// Padding after the current member's bytes.
    pad: u64,
}

impl<Rd: Read> TarReader<Rd> {
    fn new(input: Rd) -> TarReader<Rd> {
        TarReader {
            body: input.take(0),
            pad: 0,
        }
    }

    /// The next member, `None` at the end of the stream. What the last
    /// one's reader left unread is skipped.
    fn next(&mut self) -> R<Option<(Header, Pending)>> {
        let stream = Path::new(STREAM);
        let io_err = |e: io::Error| at(stream, format!("reading the tar stream: {e}"));
        let mut pending = Pending::default();
        loop {
            io::copy(&mut self.body, &mut io::sink()).map_err(io_err)?;
            let short = self.body.limit();
            self.body.set_limit(self.pad);
            io::copy(&mut self.body, &mut io::sink()).map_err(io_err)?;
            if short + self.body.limit() > 0 {
                // A member cut short: its bytes so far were taken, the
                // rest is missing.
                return Err(at(stream, "the stream ends inside a member (truncated)"));
            }
            let Some(h) = next_header(self.body.get_mut()).map_err(io_err)? else {
                return Ok(None);
            };
            let kind = h.entry_type();
            let extension = matches!(
                kind,
                EntryType::XHeader
                    | EntryType::XGlobalHeader
                    | EntryType::GNULongName
                    | EntryType::GNULongLink
            );
            // A member's PAX `size` overrides its header's (members of
            // 8 GiB and more: GNU tar writes 0 there); the header's may
            // be octal or base-256 (GNU).
            let size = match pending.pax.get("size").filter(|_| !extension) {
                Some(v) => number(v),
                None => h.entry_size().ok(),
            }
            .ok_or_else(|| at(stream, "a member with a malformed size"))?;
            self.body.set_limit(size);
            self.pad = (512 - size % 512) % 512;
            if !extension {
                return Ok(Some((h, pending)));
            }
            // Extended headers and long names are read whole: bounded, so
            // a stream claiming a huge one fails instead of exhausting
            // memory.
            if size > HEADER_MAX {
                return Err(at(stream, "an extended header or long name over 16 MiB"));
            }
            let mut v = Vec::new();
            self.body.read_to_end(&mut v).map_err(io_err)?;
            match kind {
                EntryType::XHeader => pending.pax.extend(
                    pax_records(&v).ok_or_else(|| at(stream, "a malformed PAX extended header"))?,
                ),
                EntryType::GNULongName => pending.name = Some(trim_nul(v)),
                EntryType::GNULongLink => pending.link = Some(trim_nul(v)),
                _ => {}
            }
        }
    }
}

/// What the tar stream `input` needs in an image with blocks of
/// `block_size` bytes (SIZE auto): its members read once, their bytes
/// skipped.
pub fn estimate(input: impl Read, block_size: u32) -> R<Estimate> {
    let mut e = Estimate::new(block_size);
    // Entry bytes per directory ("" the root).
    let mut dirs: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut tr = TarReader::new(input);
    while let Some((h, pending)) = tr.next()? {
        let raw = match (pending.pax.get("GNU.sparse.name"), pending.pax.get("path")) {
            (Some(n), _) | (None, Some(n)) => n.clone(),
            (None, None) => pending.name.unwrap_or_else(|| h.path_bytes().into_owned()),
        };
        let show = PathBuf::from(String::from_utf8_lossy(&raw).into_owned());
        let path = normalize(&raw).ok_or_else(|| at(&show, "a member name with `..`"))?;
        if path.is_empty() {
            continue;
        }
        let (dir, name) = split(&path);
        *dirs.entry(dir.to_vec()).or_default() += entry_bytes(name.len());
        let kind = h.entry_type();
        if kind == EntryType::Directory {
            dirs.entry(path.clone()).or_default();
        }
        if kind == EntryType::Link {
            continue;
        }
        e.inodes += 1;
        match kind {
            EntryType::Regular | EntryType::Continuous => {
                let real = pending
                    .pax
                    .get("GNU.sparse.realsize")
                    .and_then(|v| number(v));
                let stored = tr.body.limit();
                e.file(real.unwrap_or(stored), stored);
            }
            EntryType::Symlink => {
                let l = pending.pax.get("linkpath").cloned().or(pending.link);
                let len = l.map_or_else(|| h.link_name_bytes().map_or(0, |l| l.len()), |l| l.len());
                e.symlink(len as u64);
            }
            _ => {}
        }
        let xattrs = pending
            .pax
            .iter()
            .filter(|(k, _)| k.starts_with("SCHILY.xattr.") || k.starts_with("SCHILY.acl."))
            .map(|(k, v)| (k.len(), v.len()));
        e.xattrs(xattrs);
    }
    for bytes in dirs.values() {
        e.dir(*bytes);
    }
    Ok(e)
}

/// The next header of the stream, checked; `None` at its end (a zero
/// block, or nothing more at a header's place).
fn next_header(r: &mut impl Read) -> io::Result<Option<Header>> {
    let mut h = Header::new_old();
    let n = read_full(r, h.as_mut_bytes())?;
    if n == 0 || h.as_bytes().iter().all(|&b| b == 0) {
        return Ok(None);
    }
    if n < 512 {
        return Err(io::Error::other("the stream ends inside a header"));
    }
    // The checksum field counts as spaces.
    let b = h.as_bytes();
    let sum: u32 = b[..148]
        .iter()
        .chain(&b[156..])
        .map(|&x| x as u32)
        .sum::<u32>()
        + 8 * 32;
    if h.cksum().ok() != Some(sum) {
        return Err(io::Error::other(
            "a header with a wrong checksum (not a tar stream, or a damaged one)",
        ));
    }
    Ok(Some(h))
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_times_acls() {
        assert_eq!(normalize(b"./a//b/./c/").unwrap(), b"a/b/c");
        assert_eq!(normalize(b"./").unwrap(), b"");
        assert!(normalize(b"a/../b").is_none());
        assert_eq!(
            pax_time(b"-1.25"),
            Some(Timestamp {
                sec: -2,
                nsec: 750_000_000
            })
        );
        assert_eq!(
            pax_time(b"12.000000001"),
            Some(Timestamp { sec: 12, nsec: 1 })
        );
        let v = acl_xattr(b"user::rwx,user:7:r--\ngroup::r-x\nmask::r-x\nother::---").unwrap();
        let back = ext4_engine::acl_entries(&v).unwrap();
        assert_eq!(back.len(), 5);
        assert_eq!(back[1], (ACL_USER, 4, 7));
        let recs = pax_records(b"29 SCHILY.acl.access=u::rw\nx\n11 mtime=1\n\0\0").unwrap();
        assert_eq!(recs[0].1, b"u::rw\nx");
        assert_eq!(recs[1], ("mtime".to_string(), b"1".to_vec()));
        assert!(pax_records(b"99 a=b\n").is_none());
    }
}
