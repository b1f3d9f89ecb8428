//! Comparisons of a snapshot (the engine's or the kernel's) with debugfs'
//! reading of the same image, and with the kernel's statfs.

use std::collections::BTreeMap;
use std::path::Path;

use crate::oracle::{debugfs_dump, debugfs_ls, debugfs_script, dq, parse_stat, DebugfsStat};
use crate::snapshot::{Difference, Entry, Kind, Snapshot};
use crate::tree::{NodeKind, Plan};

/// Paths to check with debugfs in an image built from `plan`: every kind of
/// node, but not all 50,000 of the big directory.
pub struct Sample {
    pub stat: Vec<String>,
    pub ls: Vec<String>,
    pub dump: Vec<String>,
}

pub fn sample(plan: &Plan) -> Sample {
    let mut stat = vec!["/".to_string(), "/lost+found".to_string()];
    let mut ls = vec!["/".to_string(), "/lost+found".to_string()];
    let mut dump = Vec::new();
    let mut many = 0;
    let mut late = 0;
    for n in &plan.nodes {
        let top = n.path.split('/').next().unwrap_or("");
        let take = match top {
            "many" => {
                many += 1;
                many <= 15
            }
            "big" if n.late => {
                late += 1;
                late <= 10
            }
            "deep" => n.path.matches('/').count() >= 29 || n.path == "deep",
            "files" => !n.path.starts_with("files/random/r1"),
            _ => true,
        };
        if !take {
            continue;
        }
        let p = format!("/{}", n.path);
        stat.push(p.clone());
        match &n.kind {
            NodeKind::Dir => ls.push(p),
            NodeKind::File { size, .. } if *size <= 16 << 20 => dump.push(p),
            _ => {}
        }
    }
    // The big directories are listed whole: that is the point of them.
    for d in ["/many", "/big/dir50k"] {
        if plan.node(&d[1..]).is_some() && !ls.iter().any(|x| x == d) {
            ls.push(d.to_string());
        }
    }
    Sample { stat, ls, dump }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::File => "regular",
        Kind::Dir => "directory",
        Kind::Symlink => "symlink",
        Kind::Char => "character special",
        Kind::Block => "block special",
        Kind::Fifo => "FIFO",
        Kind::Socket => "socket",
        Kind::Unknown => "unknown",
    }
}

/// Reads a file's bytes as the snapshot's side sees them.
pub type ReadFn<'a> = &'a dyn Fn(&str, &Entry) -> Result<Vec<u8>, String>;

/// How the snapshot side reports inode flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagsView {
    /// Raw on-disk flags (the engine): must equal debugfs exactly.
    Raw,
    /// FS_IOC_GETFLAGS (the kernel): a masked subset of debugfs' flags.
    Masked,
}

fn d(path: &str, field: &str, expected: impl ToString, got: impl ToString) -> Difference {
    Difference {
        path: path.to_string(),
        field: field.to_string(),
        expected: expected.to_string(),
        got: got.to_string(),
    }
}

/// Compare `stat` output for one path with a snapshot entry.
pub fn compare_stat(
    path: &str,
    st: &DebugfsStat,
    e: &Entry,
    flags: FlagsView,
    out: &mut Vec<Difference>,
) {
    let mut cmp = |field: &str, a: String, b: String| {
        if a != b {
            out.push(d(path, &format!("debugfs {field}"), a, b));
        }
    };
    cmp("inode", st.ino.to_string(), e.ino.to_string());
    cmp("type", st.kind.clone(), kind_name(e.kind).to_string());
    cmp(
        "mode",
        format!("{:o}", st.perm),
        format!("{:o}", e.mode & 0o7777),
    );
    cmp("uid", st.uid.to_string(), e.uid.to_string());
    cmp("gid", st.gid.to_string(), e.gid.to_string());
    cmp("size", st.size.to_string(), e.size.to_string());
    cmp("links", st.links.to_string(), e.nlink.to_string());
    // st_blocks of an inline-data inode counts the inline bytes too (the
    // kernel adds them), so i_blocks is not comparable there.
    if st.flags & 0x1000_0000 == 0 {
        cmp(
            "blockcount",
            st.blockcount.to_string(),
            e.blocks.to_string(),
        );
    }
    let t = |x: Option<crate::tree::Time>| x.map_or("none".to_string(), |t| t.to_string());
    cmp("atime", t(st.atime), e.atime.to_string());
    cmp("mtime", t(st.mtime), e.mtime.to_string());
    cmp("ctime", t(st.ctime), e.ctime.to_string());
    cmp("crtime", t(st.crtime), t(e.btime));
    if let Some(g) = e.generation {
        cmp("generation", st.generation.to_string(), g.to_string());
    }
    if let Some(f) = e.flags {
        let ok = match flags {
            FlagsView::Raw => f == st.flags,
            FlagsView::Masked => f & !st.flags == 0 && (f ^ st.flags) & 0x705B_DFFF == 0,
        };
        if !ok {
            cmp(
                "flags",
                format!("{:#x}", st.flags),
                format!("{f:#x} ({flags:?})"),
            );
        }
    }
    if matches!(e.kind, Kind::Char | Kind::Block) {
        cmp(
            "device",
            format!("{:?}", st.device),
            format!("{:?}", Some(e.rdev)),
        );
    }
    if let Some(fl) = &st.fast_link {
        let got = e
            .link
            .as_ref()
            .map(|l| l.clone().map(|v| String::from_utf8_lossy(&v).into_owned()));
        cmp(
            "fast link",
            format!(
                "{:?}",
                Some(Ok::<_, String>(String::from_utf8_lossy(fl).into_owned()))
            ),
            format!("{got:?}"),
        );
    }
    // Names (system.data is inline file data, not an attribute), and value
    // lengths where debugfs prints the API's format (not for ACLs, which it
    // prints in ext4's on-disk encoding).
    let want: BTreeMap<&str, usize> = st
        .xattrs
        .iter()
        .filter(|(k, _)| *k != "system.data")
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    match &e.xattrs {
        Err(x) => cmp("xattrs", format!("{want:?}"), format!("ERROR({x})")),
        Ok(got) => {
            let got: BTreeMap<String, usize> = got
                .iter()
                .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v.len()))
                .collect();
            let names_a: Vec<&str> = want.keys().copied().collect();
            let names_b: Vec<&str> = got.keys().map(String::as_str).collect();
            if names_a != names_b {
                cmp(
                    "xattr names",
                    format!("{names_a:?}"),
                    format!("{names_b:?}"),
                );
            } else {
                for (k, len) in &want {
                    if !k.starts_with("system.posix_acl") && got.get(*k) != Some(len) {
                        cmp(
                            &format!("xattr {k} length"),
                            format!("{:?}", Some(len)),
                            format!("{:?}", got.get(*k)),
                        );
                    }
                }
            }
        }
    }
}

/// Children of `dir` in a snapshot, by name.
fn children<'a>(snap: &'a Snapshot, dir: &str) -> BTreeMap<Vec<u8>, &'a Entry> {
    let prefix = if dir == "/" {
        "/".to_string()
    } else {
        format!("{dir}/")
    };
    snap.entries
        .range(prefix.as_bytes().to_vec()..)
        .take_while(|(k, _)| k.starts_with(prefix.as_bytes()))
        .filter(|(k, _)| !k[prefix.len()..].contains(&b'/') && k.len() > prefix.len())
        .map(|(k, e)| (k[prefix.len()..].to_vec(), e))
        .collect()
}

fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// Everything debugfs says about `sample`, against `snap`. `read` gives a
/// file's bytes as the snapshot's side reads them. Returns the differences
/// and the number of checks made.
pub fn debugfs_compare(
    img: &Path,
    snap: &Snapshot,
    sample: &Sample,
    flags: FlagsView,
    read: ReadFn<'_>,
) -> (Vec<Difference>, usize) {
    let mut out = Vec::new();
    let mut checks = 0;
    let mut stats: BTreeMap<&str, DebugfsStat> = BTreeMap::new();
    let reqs: Vec<String> = sample
        .stat
        .iter()
        .map(|p| format!("stat {}", dq(p)))
        .collect();
    match debugfs_script(img, &reqs, false) {
        Err(e) => out.push(d("(debugfs)", "stat script", "success", e)),
        Ok(outputs) => {
            for (p, text) in sample.stat.iter().zip(outputs) {
                let Some(e) = snap.get(p) else {
                    out.push(d(p, "presence", "present (debugfs stat)", "missing"));
                    continue;
                };
                match parse_stat(&text) {
                    Ok(st) => {
                        compare_stat(p, &st, e, flags, &mut out);
                        stats.insert(p.as_str(), st);
                    }
                    Err(x) => out.push(d(p, "debugfs stat parse", "", x)),
                }
                checks += 1;
            }
        }
    }
    for dir in &sample.ls {
        let Some(de) = snap.get(dir) else {
            out.push(d(dir, "presence", "present (debugfs ls)", "missing"));
            continue;
        };
        let listing = match debugfs_ls(img, dir) {
            Ok(l) => l,
            Err(x) => {
                out.push(d(dir, "debugfs ls", "", x));
                continue;
            }
        };
        checks += 1;
        let mut theirs = BTreeMap::new();
        for l in listing {
            match l.name.as_slice() {
                b"." => {
                    if l.ino != de.ino {
                        out.push(d(dir, "debugfs ls '.'", l.ino, de.ino));
                    }
                }
                b".." => {
                    let want = snap.get(parent_of(dir)).map_or(0, |p| p.ino);
                    if l.ino != want {
                        out.push(d(dir, "debugfs ls '..'", l.ino, want));
                    }
                }
                _ => {
                    theirs.insert(l.name.clone(), l);
                }
            }
        }
        let ours = children(snap, dir);
        let a: Vec<_> = theirs.keys().collect();
        let b: Vec<_> = ours.keys().collect();
        if a != b {
            let only_a: Vec<String> = theirs
                .keys()
                .filter(|k| !ours.contains_key(*k))
                .take(5)
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            let only_b: Vec<String> = ours
                .keys()
                .filter(|k| !theirs.contains_key(*k))
                .take(5)
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            out.push(d(
                dir,
                "debugfs ls names",
                format!("{} entries, only here: {only_a:?}", a.len()),
                format!("{} entries, only here: {only_b:?}", b.len()),
            ));
        }
        for (name, l) in &theirs {
            let Some(e) = ours.get(name) else { continue };
            let p = format!(
                "{}/{}",
                dir.trim_end_matches('/'),
                String::from_utf8_lossy(name)
            );
            let dev = matches!(e.kind, Kind::Char | Kind::Block);
            let ls = (l.ino, l.mode, l.uid, l.gid, if dev { 0 } else { l.size });
            let us = (e.ino, e.mode, e.uid, e.gid, if dev { 0 } else { e.size });
            if ls != us {
                out.push(d(
                    &p,
                    "debugfs ls (ino, mode, uid, gid, size)",
                    format!("{ls:?}"),
                    format!("{us:?}"),
                ));
            }
        }
    }
    for p in &sample.dump {
        let Some(e) = snap.get(p) else { continue };
        let want = match debugfs_dump(img, p) {
            // debugfs 1.47.0 dumps an inline-data file's whole inline area,
            // past i_size: only the first i_size bytes are the file.
            Ok(mut w) => {
                if let Some(st) = stats
                    .get(p.as_str())
                    .filter(|st| st.flags & 0x1000_0000 != 0)
                {
                    w.truncate(st.size as usize);
                }
                w
            }
            Err(x) => {
                out.push(d(p, "debugfs dump", "", x));
                continue;
            }
        };
        checks += 1;
        match read(p, e) {
            Err(x) => out.push(d(
                p,
                "bytes vs debugfs dump",
                format!("{} bytes", want.len()),
                format!("ERROR({x})"),
            )),
            Ok(got) if got != want => {
                let at = got
                    .iter()
                    .zip(&want)
                    .position(|(a, b)| a != b)
                    .unwrap_or(got.len().min(want.len()));
                out.push(d(
                    p,
                    "bytes vs debugfs dump",
                    format!("{} bytes", want.len()),
                    format!("{} bytes, first difference at offset {at}", got.len()),
                ));
            }
            Ok(_) => {}
        }
    }
    (out, checks)
}
