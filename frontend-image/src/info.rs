//! `info`: the superblock as `dumpe2fs -h` shows it, the journal's state,
//! plus the engine's warnings.

use std::io::Write;
use std::process::ExitCode;

use ext4_engine::features::{compat, incompat, ro_compat};
use ext4_engine::{
    BlockDevice, Error, RawSuperblock, Superblock, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE,
};
use serde_json::{json, Map, Value};
use zerocopy::FromBytes;

use crate::util::{ctime, uuid};
use crate::{out_err, Cli, CmdResult, Vol};

/// Text lines and JSON fields built side by side so they cannot drift.
struct Fields {
    lines: Vec<(String, String)>,
    json: Map<String, Value>,
}

impl Fields {
    fn add(&mut self, label: &str, text: impl Into<String>, key: &str, v: Value) {
        self.lines.push((label.to_string(), text.into()));
        self.json.insert(key.to_string(), v);
    }
    fn num(&mut self, label: &str, key: &str, n: impl Into<u64> + Copy + ToString) {
        self.add(label, n.to_string(), key, json!(n.into()));
    }
    fn time(&mut self, label: &str, key: &str, t: i64, zero_na: bool) {
        let text = if t == 0 && zero_na {
            "n/a".to_string()
        } else {
            ctime(t)
        };
        self.add(label, text, key, json!({"sec": t, "nsec": 0}));
    }
}

fn cstr(b: &[u8]) -> String {
    let n = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..n]).into_owned()
}

fn default_mount_opts(v: u32) -> Vec<&'static str> {
    const N: &[(u32, &str)] = &[
        (0x1, "debug"),
        (0x2, "bsdgroups"),
        (0x4, "user_xattr"),
        (0x8, "acl"),
        (0x10, "uid16"),
        (0x100, "nobarrier"),
        (0x200, "block_validity"),
        (0x400, "discard"),
        (0x800, "nodelalloc"),
    ];
    let mut out: Vec<&str> = Vec::new();
    match v & 0x60 {
        0x20 => out.push("journal_data"),
        0x40 => out.push("journal_data_ordered"),
        0x60 => out.push("journal_data_writeback"),
        _ => {}
    }
    for &(b, n) in N {
        if v & b != 0 {
            out.push(n);
        }
    }
    out
}

/// Name, UUID, revision, features, flags, state, error policy, creator.
fn identity(f: &mut Fields, sb: &Superblock) {
    let label = String::from_utf8_lossy(sb.label()).into_owned();
    f.add(
        "Filesystem volume name",
        if label.is_empty() {
            "<none>".to_string()
        } else {
            label.clone()
        },
        "volume_name",
        json!(label),
    );
    let lm = cstr(&sb.last_mounted);
    f.add(
        "Last mounted on",
        if lm.is_empty() {
            "<not available>".to_string()
        } else {
            lm.clone()
        },
        "last_mounted_on",
        json!(lm),
    );
    f.add(
        "Filesystem UUID",
        uuid(&sb.uuid),
        "uuid",
        json!(uuid(&sb.uuid)),
    );
    f.add("Filesystem magic number", "0xEF53", "magic", json!(0xEF53));
    f.add(
        "Filesystem revision #",
        format!(
            "{} ({})",
            sb.rev_level,
            if sb.rev_level == 0 {
                "original"
            } else {
                "dynamic"
            }
        ),
        "revision",
        json!(sb.rev_level),
    );
    let feats = ext4_engine::features::names(sb.compat, sb.incompat, sb.ro_compat);
    f.add(
        "Filesystem features",
        if feats.is_empty() {
            "(none)".to_string()
        } else {
            feats.join(" ")
        },
        "features",
        json!(feats),
    );
    f.json.insert(
        "feature_bits".into(),
        json!({"compat": sb.compat, "incompat": sb.incompat, "ro_compat": sb.ro_compat}),
    );
    let mut fl = Vec::new();
    if sb.flags & 1 != 0 {
        fl.push("signed_directory_hash");
    }
    if sb.flags & 2 != 0 {
        fl.push("unsigned_directory_hash");
    }
    if sb.flags & 4 != 0 {
        fl.push("test_filesystem");
    }
    f.add("Filesystem flags", fl.join(" "), "flags", json!(fl));
    let mo = default_mount_opts(sb.default_mount_opts);
    f.add(
        "Default mount options",
        if mo.is_empty() {
            "(none)".to_string()
        } else {
            mo.join(" ")
        },
        "default_mount_options",
        json!(mo),
    );
    let mut state = if sb.state & 1 != 0 {
        "clean".to_string()
    } else {
        "not clean".to_string()
    };
    if sb.state & 2 != 0 {
        state.push_str(" with errors");
    }
    f.add("Filesystem state", state.clone(), "state", json!(state));
    let errors = match sb.errors {
        1 => "Continue",
        2 => "Remount read-only",
        3 => "Panic",
        _ => "Unknown (continue)",
    };
    f.add("Errors behavior", errors, "errors_behavior", json!(errors));
    let os = match sb.creator_os {
        0 => "Linux",
        1 => "Hurd",
        2 => "Masix",
        3 => "FreeBSD",
        4 => "Lites",
        _ => "(unknown os)",
    };
    f.add("Filesystem OS type", os, "os_type", json!(os));
}

/// Inode and block counts, sizes and the group layout.
fn counts(f: &mut Fields, sb: &Superblock) {
    f.num("Inode count", "inode_count", sb.inodes_count);
    f.num("Block count", "block_count", sb.blocks_count);
    f.num(
        "Reserved block count",
        "reserved_block_count",
        sb.r_blocks_count,
    );
    if sb.overhead_clusters != 0 {
        f.num(
            "Overhead clusters",
            "overhead_clusters",
            sb.overhead_clusters,
        );
    }
    f.num("Free blocks", "free_blocks", sb.free_blocks_count);
    f.num("Free inodes", "free_inodes", sb.free_inodes_count);
    f.num("First block", "first_block", sb.first_data_block);
    f.num("Block size", "block_size", sb.block_size);
    let bigalloc = sb.has_ro_compat(ro_compat::BIGALLOC);
    f.num(
        if bigalloc {
            "Cluster size"
        } else {
            "Fragment size"
        },
        "cluster_size",
        sb.cluster_size,
    );
    if sb.has_incompat(incompat::BIT64) {
        f.num("Group descriptor size", "desc_size", sb.desc_size);
    }
    if sb.reserved_gdt_blocks != 0 {
        f.num(
            "Reserved GDT blocks",
            "reserved_gdt_blocks",
            sb.reserved_gdt_blocks,
        );
    }
    f.num("Blocks per group", "blocks_per_group", sb.blocks_per_group);
    f.num(
        if bigalloc {
            "Clusters per group"
        } else {
            "Fragments per group"
        },
        "clusters_per_group",
        sb.clusters_per_group,
    );
    f.num("Inodes per group", "inodes_per_group", sb.inodes_per_group);
    f.num(
        "Inode blocks per group",
        "inode_blocks_per_group",
        (sb.inodes_per_group as u64 * sb.inode_size as u64).div_ceil(sb.block_size as u64),
    );
    f.num("Group count", "group_count", sb.group_count);
    if sb.has_incompat(incompat::FLEX_BG) && sb.log_groups_per_flex < 32 {
        f.num(
            "Flex block group size",
            "flex_bg_size",
            1u64 << sb.log_groups_per_flex,
        );
    }
    if sb.has_incompat(incompat::META_BG) {
        f.num("First meta block group", "first_meta_bg", sb.first_meta_bg);
    }
}

/// Times, mount count and check interval, lifetime writes.
fn times(f: &mut Fields, sb: &Superblock, r: &RawSuperblock) {
    f.time("Filesystem created", "created", sb.mkfs_time, true);
    f.time("Last mount time", "last_mount_time", sb.mtime, true);
    f.time("Last write time", "last_write_time", sb.wtime, false);
    f.num("Mount count", "mount_count", sb.mnt_count);
    f.add(
        "Maximum mount count",
        sb.max_mnt_count.to_string(),
        "max_mount_count",
        json!(sb.max_mnt_count),
    );
    f.time("Last checked", "last_checked", sb.lastcheck, false);
    let ci = r.checkinterval.get();
    f.add(
        "Check interval",
        if ci == 0 {
            "0 (<none>)".to_string()
        } else {
            format!("{ci} seconds")
        },
        "check_interval",
        json!(ci),
    );
    let kb = r.kbytes_written.get();
    if kb != 0 {
        let text = if kb < 8192 {
            format!("{kb} kB")
        } else if kb < 8192 << 10 {
            format!("{} MB", kb.div_ceil(1024))
        } else if kb < 8192 << 20 {
            format!("{} GB", kb.div_ceil(1 << 20))
        } else {
            format!("{} TB", kb.div_ceil(1 << 30))
        };
        f.add("Lifetime writes", text, "lifetime_writes_kb", json!(kb));
    }
}

/// Reserved blocks' owner, inode size and extra fields, journal and orphans.
fn inodes(f: &mut Fields, sb: &Superblock) {
    f.num("Reserved blocks uid", "reserved_blocks_uid", sb.def_resuid);
    f.num("Reserved blocks gid", "reserved_blocks_gid", sb.def_resgid);
    f.num("First inode", "first_inode", sb.first_ino);
    f.num("Inode size", "inode_size", sb.inode_size);
    if sb.inode_size > 128 {
        f.num(
            "Required extra isize",
            "required_extra_isize",
            sb.min_extra_isize,
        );
        f.num(
            "Desired extra isize",
            "desired_extra_isize",
            sb.want_extra_isize,
        );
    }
    if sb.journal_uuid != [0; 16] {
        f.add(
            "Journal UUID",
            uuid(&sb.journal_uuid),
            "journal_uuid",
            json!(uuid(&sb.journal_uuid)),
        );
    }
    if sb.has_compat(compat::HAS_JOURNAL) {
        f.num("Journal inode", "journal_inode", sb.journal_inum);
    }
    if sb.last_orphan != 0 {
        f.num("First orphan inode", "first_orphan_inode", sb.last_orphan);
    }
}

/// Directory hashing, the character encoding, checksums.
fn hashes(f: &mut Fields, sb: &Superblock) {
    let hash = match sb.def_hash_version {
        0 => "legacy",
        1 => "half_md4",
        2 => "tea",
        3 => "legacy_unsigned",
        4 => "half_md4_unsigned",
        5 => "tea_unsigned",
        6 => "siphash",
        _ => "unknown",
    };
    f.add(
        "Default directory hash",
        hash,
        "default_directory_hash",
        json!(hash),
    );
    let mut seed = [0u8; 16];
    for (i, w) in sb.hash_seed.iter().enumerate() {
        seed[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
    }
    f.add(
        "Directory Hash Seed",
        uuid(&seed),
        "directory_hash_seed",
        json!(uuid(&seed)),
    );
    if sb.has_incompat(incompat::CASEFOLD) {
        let enc = if sb.encoding == 1 {
            "utf8-12.1".to_string()
        } else {
            format!("unknown ({})", sb.encoding)
        };
        f.add("Character encoding", enc.clone(), "encoding", json!(enc));
    }
    if sb.metadata_csum() {
        let ct = if sb.checksum_type == 1 {
            "crc32c".to_string()
        } else {
            format!("unknown ({})", sb.checksum_type)
        };
        f.add("Checksum type", ct.clone(), "checksum_type", json!(ct));
        f.add(
            "Checksum",
            format!("{:#010x}", sb.stored_checksum),
            "checksum",
            json!(sb.stored_checksum),
        );
        f.add(
            "Checksum seed",
            format!("{:#010x}", sb.csum_seed),
            "checksum_seed",
            json!(sb.csum_seed),
        );
        f.add(
            "Superblock checksum",
            if sb.checksum_ok { "ok" } else { "MISMATCH" },
            "superblock_checksum_ok",
            json!(sb.checksum_ok),
        );
    }
}

/// The first and last recorded errors, and default mount options.
fn errors(f: &mut Fields, r: &RawSuperblock) {
    let n = r.error_count.get();
    if n != 0 {
        f.num("FS Error count", "error_count", n);
        let t = r.first_error_time.get() as i64 | (r.first_error_time_hi as i64) << 32;
        f.time("First error time", "first_error_time", t, true);
        f.add(
            "First error function",
            cstr(&r.first_error_func),
            "first_error_function",
            json!(cstr(&r.first_error_func)),
        );
        f.num(
            "First error line #",
            "first_error_line",
            r.first_error_line.get(),
        );
        f.num(
            "First error inode #",
            "first_error_inode",
            r.first_error_ino.get(),
        );
        f.num(
            "First error block #",
            "first_error_block",
            r.first_error_block.get(),
        );
        let t = r.last_error_time.get() as i64 | (r.last_error_time_hi as i64) << 32;
        f.time("Last error time", "last_error_time", t, true);
    }
    let mo = cstr(&r.mount_opts);
    if !mo.is_empty() {
        f.add("Mount options", mo.clone(), "mount_options", json!(mo));
    }
}

pub fn run(vol: &Vol, cli: &Cli, json_out: bool) -> CmdResult {
    let r = &vol
        .raw_superblock()
        .map_err(|e| crate::Fail::Problem(format!("cannot read the superblock: {e}")))?;
    let mut f = superblock_fields(vol.sb(), r);
    journal(vol, cli, &mut f);
    let warnings: Vec<String> = vol.warnings().iter().map(|w| w.to_string()).collect();
    print(f, &warnings, json_out)
}

/// `info` of an image shorter than its filesystem, which the engine will
/// not open: the superblock is still shown, as `dumpe2fs -h` shows it,
/// with the truncation as a warning. `None` when the image is not such a
/// one (the caller reports why it could not be opened).
pub fn truncated(cli: &Cli, json_out: bool) -> Option<CmdResult> {
    let dev = crate::open_device(cli, false).ok()?;
    let mut bytes = vec![0u8; SUPERBLOCK_SIZE];
    dev.read_at(SUPERBLOCK_OFFSET, &mut bytes).ok()?;
    let raw = RawSuperblock::read_from_bytes(&bytes).ok()?;
    let short = match Superblock::parse(&raw, &bytes, dev.size()) {
        Err(e @ Error::Truncated { .. }) => e,
        _ => return None,
    };
    // Parsed again as if the device were long enough, to show the rest.
    let sb = Superblock::parse(&raw, &bytes, u64::MAX).ok()?;
    let mut f = superblock_fields(&sb, &raw);
    if sb.has_compat(compat::HAS_JOURNAL) {
        f.add(
            "Journal",
            "not read (the image is truncated)",
            "journal",
            Value::Null,
        );
    }
    Some(print(f, &[short.to_string()], json_out))
}

fn superblock_fields(sb: &Superblock, r: &RawSuperblock) -> Fields {
    let mut f = Fields {
        lines: Vec::new(),
        json: Map::new(),
    };
    identity(&mut f, sb);
    counts(&mut f, sb);
    times(&mut f, sb, r);
    inodes(&mut f, sb);
    hashes(&mut f, sb);
    errors(&mut f, r);
    f
}

fn print(mut f: Fields, warnings: &[String], json_out: bool) -> CmdResult {
    f.json.insert("warnings".into(), json!(warnings));
    let mut out = std::io::stdout().lock();
    if json_out {
        serde_json::to_writer_pretty(&mut out, &Value::Object(f.json))
            .map_err(|e| crate::Fail::Problem(format!("cannot write to standard output: {e}")))?;
        writeln!(out).map_err(out_err)?;
    } else {
        for (l, v) in &f.lines {
            writeln!(out, "{:<26}{v}", format!("{l}:")).map_err(out_err)?;
        }
        for w in warnings {
            writeln!(out, "Warning: {w}").map_err(out_err)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The journal's superblock, as `dumpe2fs -h` prints it, and its state:
/// whether it needs recovery and what recovery did for this view.
fn journal(vol: &Vol, cli: &Cli, f: &mut Fields) {
    if !vol.sb().has_compat(compat::HAS_JOURNAL) {
        return;
    }
    // An external journal that cannot be opened shows as unreadable.
    let ext = crate::open_journal(cli, false).unwrap_or_default();
    let j = match vol.journal_info(ext.as_ref().map(|d| d as &dyn BlockDevice)) {
        Ok(Some(j)) => j,
        Ok(None) => return,
        Err(e) => {
            let msg = e.to_string();
            f.add(
                "Journal state",
                format!("cannot be read: {msg}"),
                "journal",
                json!({"error": msg}),
            );
            return;
        }
    };
    let feats = j.feature_names();
    let mut lines: Vec<(&str, String)> = vec![
        (
            "Journal location",
            if j.external {
                "external device".into()
            } else {
                format!("inode {}", vol.sb().journal_inum)
            },
        ),
        (
            "Journal features",
            if feats.is_empty() {
                "(none)".into()
            } else {
                feats.join(" ")
            },
        ),
        (
            "Total journal size",
            format!("{}k", j.blocks as u64 * j.block_size as u64 / 1024),
        ),
        ("Total journal blocks", j.blocks.to_string()),
        ("Journal first block", j.first.to_string()),
        ("Journal sequence", format!("{:#010x}", j.sequence)),
        ("Journal start", j.start.to_string()),
    ];
    if let Some(n) = j.fast_commit_blocks {
        lines.push(("Journal fast commit blocks", n.to_string()));
    }
    if let Some(c) = j.checksum {
        lines.push(("Journal checksum type", "crc32c".into()));
        lines.push(("Journal checksum", format!("{c:#010x}")));
    }
    if j.errno != 0 {
        lines.push(("Journal errno", j.errno.to_string()));
    }
    let state = match (&j.replay, j.needs_recovery) {
        (Some(r), _) => {
            let what = crate::util::replay_text(&r.stats);
            if r.in_memory {
                format!("needs recovery: {what}; replayed in memory for this view, the image is unchanged (`recover` writes it)")
            } else {
                format!("recovered at open: {what}")
            }
        }
        (None, true) => {
            "needs recovery, ignored (--norecovery): this view lacks the journal's newest changes"
                .into()
        }
        (None, false) => "clean (nothing to replay)".into(),
    };
    lines.push(("Journal state", state));
    for (l, v) in lines {
        f.lines.push((l.to_string(), v));
    }
    let replay = j.replay.map(|r| {
        let mut v = crate::util::replay_json(&r.stats);
        v["in_memory"] = json!(r.in_memory);
        v
    });
    f.json.insert(
        "journal".into(),
        json!({
            "location": if j.external { "external" } else { "inode" },
            "inode": (!j.external).then_some(vol.sb().journal_inum),
            "features": feats,
            "feature_bits": {"compat": j.compat, "incompat": j.incompat, "ro_compat": j.ro_compat},
            "block_size": j.block_size,
            "blocks": j.blocks,
            "first": j.first,
            "sequence": j.sequence,
            "start": j.start,
            "errno": j.errno,
            "checksum": j.checksum,
            "fast_commit_blocks": j.fast_commit_blocks,
            "needs_recovery": j.needs_recovery,
            "replay": replay,
        }),
    );
}
