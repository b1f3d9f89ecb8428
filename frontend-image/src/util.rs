//! Formatting helpers shared by the commands.

use ext4_engine::{FileType, Timestamp};
use serde_json::{json, Value};

/// Sizes: bytes with an optional k/m/g/t suffix (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix("ib")
        .or_else(|| t.strip_suffix('b'))
        .unwrap_or(&t);
    let (num, shift) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 10),
        Some('m') => (&t[..t.len() - 1], 20),
        Some('g') => (&t[..t.len() - 1], 30),
        Some('t') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a size (examples: 65536, 512k, 64m, 1g)"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// Names of the incompat bits in `bits`, for a refusal message.
pub fn incompat_list(bits: u32) -> String {
    let mut parts = Vec::new();
    for i in 0..32 {
        let bit = 1u32 << i;
        if bits & bit != 0 {
            let name = ext4_engine::features::incompat_name(bit);
            parts.push(format!("{name} ({bit:#x})"));
        }
    }
    parts.join(", ")
}

pub fn uuid(b: &[u8; 16]) -> String {
    let h: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

pub fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// Broken-down local time: (year, month 0-11, day, hour, min, sec, weekday 0-6).
fn local(sec: i64) -> Option<(i64, usize, u32, u32, u32, u32, usize)> {
    #[allow(clippy::useless_conversion)] // time_t is 32 bits on some targets
    let t: libc::time_t = sec.try_into().ok()?;
    // SAFETY: localtime_r only reads `t` and writes the `tm` we own.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::localtime_r(&t, &mut tm) };
    if r.is_null() {
        return None;
    }
    Some((
        tm.tm_year as i64 + 1900,
        tm.tm_mon.clamp(0, 11) as usize,
        tm.tm_mday as u32,
        tm.tm_hour as u32,
        tm.tm_min as u32,
        tm.tm_sec as u32,
        tm.tm_wday.clamp(0, 6) as usize,
    ))
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

/// `ctime(3)` style, as dumpe2fs and debugfs print times.
pub fn ctime(sec: i64) -> String {
    match local(sec) {
        Some((y, mo, d, h, mi, s, wd)) => format!(
            "{} {} {d:2} {h:02}:{mi:02}:{s:02} {y}",
            DAYS[wd], MONTHS[mo]
        ),
        None => format!("@{sec}"),
    }
}

/// `YYYY-MM-DD HH:MM` in local time, for `ls -l`.
pub fn short_time(sec: i64) -> String {
    match local(sec) {
        Some((y, mo, d, h, mi, _, _)) => format!("{y:04}-{:02}-{d:02} {h:02}:{mi:02}", mo + 1),
        None => format!("@{sec}"),
    }
}

pub fn ts_json(t: Timestamp) -> Value {
    json!({"sec": t.sec, "nsec": t.nsec})
}

pub fn kind_name(k: FileType) -> &'static str {
    match k {
        FileType::Regular => "regular",
        FileType::Directory => "directory",
        FileType::Symlink => "symlink",
        FileType::CharDevice => "char",
        FileType::BlockDevice => "block",
        FileType::Fifo => "fifo",
        FileType::Socket => "socket",
    }
}

/// `ls -l` mode string, e.g. `-rwsr-xr-x`.
pub fn mode_string(kind: FileType, mode: u32) -> String {
    let t = match kind {
        FileType::Regular => '-',
        FileType::Directory => 'd',
        FileType::Symlink => 'l',
        FileType::CharDevice => 'c',
        FileType::BlockDevice => 'b',
        FileType::Fifo => 'p',
        FileType::Socket => 's',
    };
    let mut s = String::with_capacity(10);
    s.push(t);
    let bit = |m: u32, c: char| if mode & m != 0 { c } else { '-' };
    let special = |x: u32, sp: u32, on: char, off: char| match (mode & x != 0, mode & sp != 0) {
        (true, true) => on,
        (false, true) => off,
        (true, false) => 'x',
        (false, false) => '-',
    };
    s.push(bit(0o400, 'r'));
    s.push(bit(0o200, 'w'));
    s.push(special(0o100, 0o4000, 's', 'S'));
    s.push(bit(0o040, 'r'));
    s.push(bit(0o020, 'w'));
    s.push(special(0o010, 0o2000, 's', 'S'));
    s.push(bit(0o004, 'r'));
    s.push(bit(0o002, 'w'));
    s.push(special(0o001, 0o1000, 't', 'T'));
    s
}

/// ext4 inode flags by name (as `lsattr`/e2fsprogs call them).
pub fn flag_names(flags: u32) -> Vec<String> {
    const NAMES: &[(u32, &str)] = &[
        (0x1, "secrm"),
        (0x2, "unrm"),
        (0x4, "compr"),
        (0x8, "sync"),
        (0x10, "immutable"),
        (0x20, "append"),
        (0x40, "nodump"),
        (0x80, "noatime"),
        (0x100, "dirty"),
        (0x200, "comprblk"),
        (0x400, "nocompr"),
        (0x800, "encrypt"),
        (0x1000, "index"),
        (0x2000, "imagic"),
        (0x4000, "journal_data"),
        (0x8000, "notail"),
        (0x10000, "dirsync"),
        (0x20000, "topdir"),
        (0x40000, "huge_file"),
        (0x80000, "extents"),
        (0x100000, "verity"),
        (0x200000, "ea_inode"),
        (0x2000000, "dax"),
        (0x10000000, "inline_data"),
        (0x20000000, "projinherit"),
        (0x40000000, "casefold"),
    ];
    let mut out = Vec::new();
    let mut known = 0;
    for &(bit, name) in NAMES {
        known |= bit;
        if flags & bit != 0 {
            out.push(name.to_string());
        }
    }
    if flags & !known != 0 {
        out.push(format!("{:#x}", flags & !known));
    }
    out
}

/// A JSON description of an engine error, with the object it concerns.
pub fn error_json(e: &ext4_engine::Error) -> Value {
    use ext4_engine::{Error, Object};
    let obj = |o: &Object| match *o {
        Object::Superblock => json!({"type": "superblock"}),
        Object::GroupDesc(g) => json!({"type": "group", "group": g}),
        Object::Inode(i) => json!({"type": "inode", "inode": i.0}),
        Object::Block(b) => json!({"type": "block", "block": b.0}),
        Object::DirBlock { dir, lblk } => {
            json!({"type": "dir_block", "inode": dir.0, "lblk": lblk.0})
        }
        Object::Device => json!({"type": "device"}),
    };
    let msg = e.to_string();
    match e {
        Error::Corrupt { object, what } => {
            json!({"kind": "corrupt", "object": obj(object), "what": what, "message": msg})
        }
        Error::Checksum { object } => {
            json!({"kind": "checksum", "object": obj(object), "message": msg})
        }
        Error::Io(io) => json!({"kind": "io", "errno": io.errno, "message": msg}),
        _ => json!({"kind": "other", "message": msg}),
    }
}

/// What a journal replay did, in words.
pub fn replay_text(s: &ext4_engine::journal::ReplayStats) -> String {
    format!(
        "{} transaction{} ({}..{}): {} blocks replayed from {} logged, {} copies revoked{}",
        s.transactions,
        if s.transactions == 1 { "" } else { "s" },
        s.first_tid,
        s.end_tid,
        s.blocks,
        s.logged,
        s.revoked,
        if s.wrapped {
            ", the log wrapping around"
        } else {
            ""
        }
    )
}

/// What a journal replay did, for `--json` (`info`'s `journal.replay`,
/// `recover`).
pub fn replay_json(s: &ext4_engine::journal::ReplayStats) -> serde_json::Value {
    serde_json::json!({
        "transactions": s.transactions,
        "first_transaction": s.first_tid,
        "end_transaction": s.end_tid,
        "logged_blocks": s.logged,
        "replayed_blocks": s.blocks,
        "revoke_records": s.revoke_records,
        "revoked_copies": s.revoked,
        "wrapped": s.wrapped,
        "log_blocks": s.log_blocks,
    })
}

/// A size as `ls -lh` prints it: powers of 1024, rounded up, one decimal
/// below 10 (`2.9M`, `12K`, `1023`).
pub fn human_size(n: u64) -> String {
    const UNITS: &[u8] = b"KMGTPE";
    if n < 1024 {
        return n.to_string();
    }
    let n = u128::from(n);
    let mut unit = 0;
    let mut div: u128 = 1024;
    while n >= div * 1024 && unit + 1 < UNITS.len() {
        div *= 1024;
        unit += 1;
    }
    let tenths = n.saturating_mul(10).div_ceil(div);
    if tenths < 100 {
        return format!("{}.{}{}", tenths / 10, tenths % 10, UNITS[unit] as char);
    }
    let whole = n.div_ceil(div);
    if whole >= 1024 && unit + 1 < UNITS.len() {
        return format!("1.0{}", UNITS[unit + 1] as char);
    }
    format!("{whole}{}", UNITS[unit] as char)
}

/// `--cache-size`: the block cache gets `size` bytes, the extent mapping
/// cache half as much.
pub fn cache_budget(opts: &mut ext4_engine::OpenOptions, size: Option<u64>) {
    if let Some(size) = size {
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        opts.cache_bytes = size;
        opts.mapping_cache_bytes = size / 2;
    }
}

/// Progress of a long copy (`mkfs --from`, `put`) on a terminal: a spinner
/// on standard error with the entries and bytes so far; nothing when
/// standard error is not a terminal or `quiet`.
pub struct Bar {
    bar: Option<indicatif::ProgressBar>,
    what: String,
}

impl Bar {
    pub fn new(quiet: bool, what: &std::path::Path) -> Bar {
        use std::io::IsTerminal;
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            b
        });
        Bar {
            bar,
            what: what.display().to_string(),
        }
    }

    pub fn tick(&self, c: &crate::populate::Copied) {
        if let Some(b) = &self.bar {
            if c.entries.is_multiple_of(64) {
                b.set_message(format!(
                    "copying {}: {} entries, {}",
                    self.what,
                    c.entries,
                    human_size(c.bytes)
                ));
            }
        }
    }

    pub fn finish(self) {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert!(parse_size("x").is_err());
        assert!(parse_size("99999999999999g").is_err());
    }

    #[test]
    fn modes() {
        assert_eq!(mode_string(FileType::Regular, 0o104755), "-rwsr-xr-x");
        assert_eq!(mode_string(FileType::Directory, 0o41777), "drwxrwxrwt");
        assert_eq!(mode_string(FileType::Regular, 0o2644), "-rw-r-Sr--");
        assert_eq!(mode_string(FileType::Symlink, 0o777), "lrwxrwxrwx");
    }

    #[test]
    fn uuids() {
        let b = [
            0xd8, 0xce, 0x20, 0xa4, 0x48, 0x67, 0x46, 0x46, 0x9c, 0x1a, 0x4e, 0xd3, 0x8e, 0xe9,
            0x7f, 0x61,
        ];
        assert_eq!(uuid(&b), "d8ce20a4-4867-4646-9c1a-4ed38ee97f61");
    }
}
