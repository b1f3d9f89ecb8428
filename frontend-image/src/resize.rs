//! `ext4-image resize IMAGE SIZE`: grow the filesystem (and an image file
//! with it) offline, through the engine's `mkfs::grow`.

use std::io::Write;
use std::process::ExitCode;

use ext4_engine::mkfs::grow::{grow, Refusal};
use serde_json::json;

use crate::{io_msg, out_err, Cli, CmdResult, Fail};

pub fn run(cli: &Cli, size: u64, json_out: bool) -> CmdResult {
    let img = cli.image.display();
    let meta = std::fs::metadata(&cli.image)
        .map_err(|e| Fail::Open(format!("cannot open {img}: {}", io_msg(&e))))?;
    // An image file grows with the filesystem (sparsely); a device or a
    // partition must already be big enough.
    let extend =
        meta.is_file() && cli.offset.is_none() && cli.partition.is_none() && meta.len() < size;
    if extend {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&cli.image)
            .and_then(|f| f.set_len(size))
            .map_err(|e| {
                Fail::Open(format!(
                    "cannot extend {img} to {size} bytes: {}",
                    io_msg(&e)
                ))
            })?;
    }
    let dev = crate::open_device(cli, true)?;
    let g = match grow(&dev, size) {
        Ok(Ok(g)) => g,
        Ok(Err(r)) => {
            // Nothing was written: the file gets its old length back.
            if extend {
                let _ = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&cli.image)
                    .and_then(|f| f.set_len(meta.len()));
            }
            let why = match r {
                Refusal::Feature(f) => format!(
                    "it has {f}, which this resize does not handle (use resize2fs)"
                ),
                Refusal::NotClean => "its journal needs recovery or it has errors (run `ext4-image IMAGE recover` or e2fsck first)".to_string(),
                Refusal::NotBigger => format!("{size} bytes is not bigger than the filesystem (only growing is supported)"),
                Refusal::TooBig { max_bytes, reserved } => format!(
                    "its group descriptor blocks{} have room for groups up to {max_bytes} bytes \
                     ({}); more needs blocks moved (resize2fs)",
                    if reserved { ", the reserved ones too," } else { "" },
                    crate::util::human_size(max_bytes),
                ),
            };
            return Err(Fail::Problem(format!("cannot resize {img}: {why}")));
        }
        Err(e) => return Err(crate::open_error(cli, e)),
    };
    let mut out = std::io::stdout().lock();
    if json_out {
        let v = json!({
            "old_blocks": g.old_blocks, "new_blocks": g.new_blocks,
            "old_groups": g.old_groups, "new_groups": g.new_groups,
            "free_blocks": g.free_blocks, "free_inodes": g.free_inodes,
        });
        writeln!(out, "{v}").map_err(out_err)?;
    } else {
        writeln!(
            out,
            "{img}: grown from {} to {} blocks ({} to {} groups); {} blocks and {} inodes free",
            g.old_blocks, g.new_blocks, g.old_groups, g.new_groups, g.free_blocks, g.free_inodes
        )
        .map_err(out_err)?;
    }
    Ok(ExitCode::SUCCESS)
}
