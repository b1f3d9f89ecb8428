//! `ls`, and the batched directory walk the other commands share.

use std::collections::HashSet;
use std::io::Write;
use std::process::ExitCode;

use ext4_engine::{Attr, Error, FileType, InodeNo};
use serde_json::json;

use crate::util::{human_size, kind_name, mode_string, short_time, ts_json};
use crate::{drain_reports, out_err, resolve, show, warn, CmdResult, Fail, Vol};

/// A directory entry copied out of the engine's callback.
pub struct Ent {
    pub ino: InodeNo,
    pub name: Vec<u8>,
}

/// Entries fetched per `readdir` call. The callback must not call back into
/// the volume (it runs while the engine holds a directory block), so
/// entries are copied out in bounded batches and handled between calls.
const BATCH: usize = 256;

/// Call `f` for every entry of directory `dir`, "." and ".." included.
/// `f` returning `Err` stops the walk with that error.
pub fn for_each_child<E>(
    vol: &Vol,
    dir: InodeNo,
    mut f: impl FnMut(Ent) -> Result<(), E>,
) -> Result<Result<(), E>, Error> {
    let mut cookie = 0u64;
    loop {
        let mut batch: Vec<Ent> = Vec::with_capacity(BATCH);
        let mut next = cookie;
        vol.readdir(dir, cookie, &mut |e| {
            if batch.len() == BATCH {
                return false;
            }
            batch.push(Ent {
                ino: e.ino,
                name: e.name.to_vec(),
            });
            next = e.next;
            true
        })?;
        let full = batch.len() == BATCH;
        for e in batch {
            if let Err(x) = f(e) {
                return Ok(Err(x));
            }
        }
        // A cookie that does not move forward would repeat the batch forever.
        if !full || next <= cookie {
            return Ok(Ok(()));
        }
        cookie = next;
    }
}

pub struct Opts {
    pub long: bool,
    pub human: bool,
    pub recursive: bool,
    pub all: bool,
    pub inode: bool,
    pub json: bool,
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    if !p.ends_with(b"/") {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

struct Lister<'a, W: Write> {
    vol: &'a Vol,
    o: &'a Opts,
    out: W,
    /// Entries written so far in JSON mode (for the separators).
    json_count: u64,
    problems: u64,
}

impl<W: Write> Lister<'_, W> {
    fn entry(&mut self, dir: &[u8], name: &[u8], attr: &Attr) -> Result<(), Fail> {
        let path = join(dir, name);
        let target = if attr.kind == FileType::Symlink && (self.o.long || self.o.json) {
            match self.vol.readlink(attr.ino) {
                Ok(t) => Some(t),
                Err(e) => {
                    self.problems += 1;
                    warn(format_args!("{}: cannot read link: {e}", show(&path)));
                    None
                }
            }
        } else {
            None
        };
        if self.o.json {
            let mut v = json!({
                "path": show(&path),
                "name": show(name),
                "ino": attr.ino.0,
                "type": kind_name(attr.kind),
                "mode": attr.mode,
                "nlink": attr.nlink,
                "uid": attr.uid,
                "gid": attr.gid,
                "size": attr.size,
                "mtime": ts_json(attr.mtime),
            });
            if let Some(t) = &target {
                v["target"] = json!(show(t));
            }
            if matches!(attr.kind, FileType::CharDevice | FileType::BlockDevice) {
                v["rdev"] = json!({"major": attr.rdev_major, "minor": attr.rdev_minor});
            }
            let sep = if self.json_count == 0 { "\n" } else { ",\n" };
            self.json_count += 1;
            write!(self.out, "{sep}{v}").map_err(out_err)?;
            return Ok(());
        }
        let mut line = Vec::new();
        if self.o.inode {
            line.extend_from_slice(format!("{:>8} ", attr.ino).as_bytes());
        }
        if self.o.long {
            let size = match attr.kind {
                FileType::CharDevice | FileType::BlockDevice => {
                    format!("{:>4}, {:>4}", attr.rdev_major, attr.rdev_minor)
                }
                _ if self.o.human => human_size(attr.size),
                _ => attr.size.to_string(),
            };
            let acl = if has_acl(self.vol, attr) { "+" } else { " " };
            line.extend_from_slice(
                format!(
                    "{}{acl}{:>3} {:>5} {:>5} {:>10} {} ",
                    mode_string(attr.kind, attr.mode),
                    attr.nlink,
                    attr.uid,
                    attr.gid,
                    size,
                    short_time(attr.mtime.sec)
                )
                .as_bytes(),
            );
        }
        line.extend_from_slice(name);
        if let Some(t) = &target {
            line.extend_from_slice(b" -> ");
            line.extend_from_slice(t);
        }
        line.push(b'\n');
        self.out.write_all(&line).map_err(out_err)
    }

    /// List one directory; returns its subdirectories (for -R).
    fn dir(&mut self, path: &[u8], ino: InodeNo) -> Result<Vec<(Vec<u8>, InodeNo)>, Fail> {
        let mut subdirs = Vec::new();
        let vol = self.vol;
        match for_each_child(vol, ino, |e| self.one(path, e, &mut subdirs)) {
            Ok(Ok(())) => {}
            Ok(Err(f)) => return Err(f),
            Err(e) => {
                self.problems += 1;
                warn(format_args!("{}: {e}", show(path)));
            }
        }
        self.problems += drain_reports(self.vol, &show(path));
        Ok(subdirs)
    }

    fn one(
        &mut self,
        path: &[u8],
        e: Ent,
        subdirs: &mut Vec<(Vec<u8>, InodeNo)>,
    ) -> Result<(), Fail> {
        let dot = e.name == b"." || e.name == b"..";
        if dot && !self.o.all {
            return Ok(());
        }
        match self.vol.getattr(e.ino) {
            Ok(a) => {
                if a.kind == FileType::Directory && !dot {
                    subdirs.push((join(path, &e.name), e.ino));
                }
                self.entry(path, &e.name, &a)
            }
            Err(err) => {
                self.problems += 1;
                warn(format_args!("{}: {err}", show(&join(path, &e.name))));
                Ok(())
            }
        }
    }
}

/// Whether `ls -l` marks the object with `+`: GNU ls does for an access ACL
/// beyond the three entries the mode bits already say (owner, group,
/// other), and for any default ACL. In the xattr form an ACL is a 4-byte
/// header and 8 bytes per entry.
fn has_acl(vol: &Vol, attr: &Attr) -> bool {
    const BASE: usize = 4 + 3 * 8;
    let access = vol.getxattr(attr.ino, b"system.posix_acl_access");
    if access.is_ok_and(|v| v.len() > BASE) {
        return true;
    }
    attr.kind == FileType::Directory && vol.getxattr(attr.ino, b"system.posix_acl_default").is_ok()
}

pub fn run(vol: &Vol, path: &[u8], o: &Opts) -> CmdResult {
    let ino = resolve(vol, path)?;
    let attr = vol
        .getattr(ino)
        .map_err(|e| Fail::Problem(format!("{}: {e}", show(path))))?;
    let out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut l = Lister {
        vol,
        o,
        out,
        json_count: 0,
        problems: 0,
    };
    if o.json {
        write!(l.out, "[").map_err(out_err)?;
    }
    if attr.kind != FileType::Directory {
        // Like ls: a non-directory is listed by itself, under the given path.
        let (dir, name) = match path.iter().rposition(|&b| b == b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (&b""[..], path),
        };
        l.entry(if o.json { dir } else { b"" }, name, &attr)?;
    } else {
        // Depth first, each directory's subdirectories in listing order.
        let mut stack = vec![(path.to_vec(), ino)];
        let mut seen = HashSet::new();
        let mut first = true;
        while let Some((p, d)) = stack.pop() {
            if !seen.insert(d) {
                l.problems += 1;
                warn(format_args!(
                    "{}: directory inode {d} already listed (directory loop)",
                    show(&p)
                ));
                continue;
            }
            if o.recursive && !o.json {
                let sep = if first { "" } else { "\n" };
                writeln!(l.out, "{sep}{}:", show(&p)).map_err(out_err)?;
            }
            first = false;
            let subs = l.dir(&p, d)?;
            if o.recursive {
                stack.extend(subs.into_iter().rev());
            }
        }
    }
    if o.json {
        writeln!(l.out, "\n]").map_err(out_err)?;
    }
    l.out.flush().map_err(out_err)?;
    Ok(if l.problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
