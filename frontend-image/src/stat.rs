//! `stat`: one inode in detail.

use std::io::Write;
use std::process::ExitCode;

use ext4_engine::Run;
use ext4_engine::{inode_flags as flags, Inode};
use ext4_engine::{FileBlock, FileType, PhysBlock, Timestamp};
use serde_json::{json, Value};

use crate::util::{ctime, flag_names, kind_name, mode_string, ts_json};
use crate::{drain_reports, out_err, resolve, show, CmdResult, Fail, Vol};

/// Physical runs shown individually; the rest are only counted.
const SHOW_RUNS: usize = 8;
/// Map lookups made for the summary before it gives up (a pathological
/// indirect-mapped file could otherwise take very long).
const MAX_STEPS: u64 = 1 << 22;

struct Mapped {
    lblk: u64,
    len: u64,
    pblk: PhysBlock,
    unwritten: bool,
}

struct Mapping {
    kind: &'static str,
    runs: u64,
    holes: u64,
    first: Vec<Mapped>,
    truncated: bool,
    error: Option<String>,
}

fn mapping(vol: &Vol, inode: &Inode) -> Mapping {
    let mut m = Mapping {
        kind: "none",
        runs: 0,
        holes: 0,
        first: Vec::new(),
        truncated: false,
        error: None,
    };
    let kind = inode.kind;
    if inode.has_flag(flags::INLINE_DATA) {
        m.kind = "inline";
        return m;
    }
    let has_map = match kind {
        Some(FileType::Regular) | Some(FileType::Directory) => true,
        Some(FileType::Symlink) => {
            // As the kernel decides: a fast symlink owns no blocks beyond
            // its xattr block.
            let ea = if inode.file_acl != 0 {
                (vol.sb().cluster_size / 512) as u64
            } else {
                0
            };
            inode.blocks_512.saturating_sub(ea) != 0
        }
        _ => false,
    };
    if !has_map {
        if kind == Some(FileType::Symlink) {
            m.kind = "fast_symlink";
        }
        return m;
    }
    m.kind = if inode.has_flag(flags::EXTENTS) {
        "extents"
    } else {
        "blockmap"
    };
    let bs = vol.sb().block_size as u64;
    let end = inode.size.div_ceil(bs);
    let mut lblk = 0u64;
    let mut steps = 0u64;
    while lblk < end {
        steps += 1;
        if steps > MAX_STEPS {
            m.truncated = true;
            break;
        }
        // Past the last logical block a file is a hole.
        let run = match FileBlock::at(lblk) {
            Some(l) => vol.map_block(inode, l),
            None => Ok(Run::Hole { len: 1 }),
        };
        match run {
            Ok(Run::Hole { len }) => {
                m.holes += 1;
                lblk += len.max(1);
            }
            Ok(Run::Mapped {
                pblk,
                len,
                unwritten,
            }) => {
                let len = len.max(1).min(end - lblk);
                // Adjacent pieces of one physical run are shown as one.
                match m.first.last_mut() {
                    Some(last)
                        if last.lblk + last.len == lblk
                            && last.pblk + last.len == pblk
                            && last.unwritten == unwritten =>
                    {
                        last.len += len
                    }
                    _ => {
                        m.runs += 1;
                        if m.first.len() < SHOW_RUNS {
                            m.first.push(Mapped {
                                lblk,
                                len,
                                pblk,
                                unwritten,
                            });
                        }
                    }
                }
                lblk += len;
            }
            Err(e) => {
                m.error = Some(e.to_string());
                break;
            }
        }
    }
    m
}

fn time_text(t: Timestamp) -> String {
    format!("{}.{:09} -- {}", t.sec, t.nsec, ctime(t.sec))
}

pub fn run(vol: &Vol, path: &[u8], json_out: bool) -> CmdResult {
    let ino = resolve(vol, path)?;
    let p = show(path);
    let inode = vol
        .inode(ino)
        .map_err(|e| Fail::Problem(format!("{p}: {e}")))?;
    let attr = vol
        .getattr(ino)
        .map_err(|e| Fail::Problem(format!("{p}: {e}")))?;
    let mut problems = 0u64;
    let target = if attr.kind == FileType::Symlink {
        match vol.readlink(ino) {
            Ok(t) => Some(show(&t)),
            Err(e) => {
                problems += 1;
                crate::warn(format_args!("{p}: cannot read link: {e}"));
                None
            }
        }
    } else {
        None
    };
    let xattrs: Vec<String> = match vol.listxattr(ino) {
        Ok(v) => v.iter().map(|n| show(n)).collect(),
        Err(e) => {
            problems += 1;
            crate::warn(format_args!("{p}: cannot list xattrs: {e}"));
            Vec::new()
        }
    };
    let map = mapping(vol, &inode);
    if let Some(e) = &map.error {
        problems += 1;
        crate::warn(format_args!("{p}: block map: {e}"));
    }
    problems += drain_reports(vol, &p);
    let flag_list = flag_names(attr.flags);
    let dev = matches!(attr.kind, FileType::CharDevice | FileType::BlockDevice);
    let mut out = std::io::stdout().lock();
    if json_out {
        let first: Vec<Value> = map
            .first
            .iter()
            .map(
                |r| json!({"lblk": r.lblk, "len": r.len, "pblk": r.pblk.0, "unwritten": r.unwritten}),
            )
            .collect();
        let v = json!({
            "path": p,
            "ino": ino.0,
            "type": kind_name(attr.kind),
            "mode": attr.mode,
            "permissions": attr.mode & 0o7777,
            "flags": attr.flags,
            "flag_names": flag_list,
            "generation": attr.generation,
            "uid": attr.uid,
            "gid": attr.gid,
            "projid": inode.projid,
            "size": attr.size,
            "nlink": attr.nlink,
            "blocks": inode.blocks_512,
            "file_acl": inode.file_acl,
            "atime": ts_json(attr.atime),
            "ctime": ts_json(attr.ctime),
            "mtime": ts_json(attr.mtime),
            "crtime": attr.crtime.map(ts_json),
            "dtime": inode.dtime,
            "extra_isize": inode.extra_isize,
            "rdev": if dev { json!({"major": attr.rdev_major, "minor": attr.rdev_minor}) } else { Value::Null },
            "target": target,
            "mapping": {
                "kind": map.kind,
                "runs": map.runs,
                "holes": map.holes,
                "first": first,
                "truncated": map.truncated,
                "error": map.error,
            },
            "xattrs": xattrs,
        });
        serde_json::to_writer_pretty(&mut out, &v)
            .map_err(|e| Fail::Problem(format!("cannot write to standard output: {e}")))?;
        writeln!(out).map_err(out_err)?;
    } else {
        let mut s = String::new();
        s += &format!(
            "Inode: {ino}   Type: {}   Mode: {:04o} ({})   Flags: {:#x}{}\n",
            kind_name(attr.kind),
            attr.mode & 0o7777,
            mode_string(attr.kind, attr.mode),
            attr.flags,
            if flag_list.is_empty() {
                String::new()
            } else {
                format!(" ({})", flag_list.join(" "))
            }
        );
        s += &format!("Generation: {}\n", attr.generation);
        s += &format!(
            "User: {}   Group: {}   Project: {}   Size: {}\n",
            attr.uid, attr.gid, inode.projid, attr.size
        );
        s += &format!(
            "Links: {}   Blockcount: {}   File ACL: {}\n",
            attr.nlink, inode.blocks_512, inode.file_acl
        );
        s += &format!(" ctime: {}\n", time_text(attr.ctime));
        s += &format!(" atime: {}\n", time_text(attr.atime));
        s += &format!(" mtime: {}\n", time_text(attr.mtime));
        if let Some(c) = attr.crtime {
            s += &format!("crtime: {}\n", time_text(c));
        }
        if inode.dtime != 0 {
            s += &format!(" dtime: {}\n", inode.dtime);
        }
        if vol.sb().inode_size > 128 {
            s += &format!("Size of extra inode fields: {}\n", inode.extra_isize);
        }
        if dev {
            s += &format!("Device: {}, {}\n", attr.rdev_major, attr.rdev_minor);
        }
        if let Some(t) = &target {
            s += &format!("Link target: \"{t}\"\n");
        }
        s += &format!(
            "Extended attributes: {}\n",
            if xattrs.is_empty() {
                "(none)".to_string()
            } else {
                xattrs.join(", ")
            }
        );
        match map.kind {
            "extents" | "blockmap" => {
                s += &format!(
                    "Mapping: {}, {} run{}, {} hole{}{}\n",
                    map.kind,
                    map.runs,
                    if map.runs == 1 { "" } else { "s" },
                    map.holes,
                    if map.holes == 1 { "" } else { "s" },
                    if map.truncated {
                        " (summary cut short)"
                    } else {
                        ""
                    }
                );
                for r in &map.first {
                    let lr = if r.len == 1 {
                        format!("{}", r.lblk)
                    } else {
                        format!("{}-{}", r.lblk, r.lblk + r.len - 1)
                    };
                    let pr = if r.len == 1 {
                        format!("{}", r.pblk)
                    } else {
                        format!("{}-{}", r.pblk, r.pblk.0 + r.len - 1)
                    };
                    let u = if r.unwritten { " [uninit]" } else { "" };
                    s += &format!("  ({lr}):{pr}{u}\n");
                }
                if map.runs > map.first.len() as u64 {
                    s += &format!("  ... {} more\n", map.runs - map.first.len() as u64);
                }
            }
            "inline" => s += &format!("Mapping: inline data ({} bytes)\n", attr.size),
            "fast_symlink" => s += "Mapping: none (fast symlink)\n",
            _ => s += "Mapping: none\n",
        }
        out.write_all(s.as_bytes()).map_err(out_err)?;
    }
    Ok(if problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
