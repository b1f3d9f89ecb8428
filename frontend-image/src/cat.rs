//! `cat` and `getfattr`.

use std::io::Write;
use std::process::ExitCode;

use ext4_engine::FileType;

use crate::util::hex;
use crate::{drain_reports, out_err, resolve, show, CmdResult, Fail, Vol};

/// Bytes read from the image per request.
pub const CHUNK: usize = 1 << 20;

pub fn cat(vol: &Vol, path: &[u8]) -> CmdResult {
    let p = show(path);
    let ino = resolve(vol, path)?;
    let attr = vol
        .getattr(ino)
        .map_err(|e| Fail::Problem(format!("{p}: {e}")))?;
    match attr.kind {
        FileType::Regular => {}
        FileType::Directory => return Err(Fail::Problem(format!("{p}: is a directory"))),
        FileType::Symlink => {
            let t = vol.readlink(ino).map(|t| show(&t)).unwrap_or_default();
            return Err(Fail::Problem(format!(
                "{p}: is a symbolic link (to '{t}'); links are not followed, cat the target's path"
            )));
        }
        _ => return Err(Fail::Problem(format!("{p}: not a regular file"))),
    }
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0u64;
    while off < attr.size {
        let n = vol
            .read(ino, off, &mut buf)
            .map_err(|e| Fail::Problem(format!("{p}: read at byte {off}: {e}")))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).map_err(out_err)?;
        off += n as u64;
    }
    out.flush().map_err(out_err)?;
    Ok(if drain_reports(vol, &p) == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub fn getfattr(vol: &Vol, path: &[u8]) -> CmdResult {
    let p = show(path);
    let ino = resolve(vol, path)?;
    let names = vol
        .listxattr(ino)
        .map_err(|e| Fail::Problem(format!("{p}: {e}")))?;
    let mut problems = 0;
    let mut text = String::new();
    if !names.is_empty() {
        // getfattr prints paths without their leading slash.
        let shown = p.trim_start_matches('/');
        text += &format!("# file: {}\n", if shown.is_empty() { "." } else { shown });
        for n in &names {
            match vol.getxattr(ino, n) {
                Ok(v) => text += &format!("{}=0x{}\n", show(n), hex(&v)),
                Err(e) => {
                    problems += 1;
                    crate::warn(format_args!("{p}: {}: {e}", show(n)));
                }
            }
        }
        text.push('\n');
    }
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).map_err(out_err)?;
    out.flush().map_err(out_err)?;
    problems += drain_reports(vol, &p);
    Ok(if problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
