//! `map`: where a file's bytes live on the device.
//!
//! By default, and with `--json`, the answers the engine gives the kernel's
//! `FUSE_IOMAP_BEGIN` (opflags `REPORT`) when it walks a file from offset 0
//! to its end and on past EOF through any blocks allocated there, as FIEMAP
//! in iomap mode would. `--physical` turns the same answers into the
//! extents `filefrag -v` prints for a kernel mount of the image: same
//! columns, block units, flags and neighbour merging, so the two diff clean.

use std::io::Write;
use std::process::ExitCode;

use ext4_engine::features::incompat;
use ext4_engine::iomap::{kernel_check, mflags, op};
use ext4_engine::mapping_cache::{MapType, Mapping, DEV_NULL, NULL_ADDR};
use ext4_engine::Run;
use ext4_engine::{inode_flags as flags, Inode};
use ext4_engine::{FileBlock, FileType, InodeNo};
use serde_json::json;

use crate::util::kind_name;
use crate::{drain_reports, out_err, resolve, show, warn, CmdResult, Fail, Vol};

/// The device cookie put in mapped answers: the backing id a FUSE server
/// gets for its first device (0 means "no device").
pub const DEV: u32 = 1;
/// Answers gathered per file at most (about 48 MiB of them): a damaged
/// image may claim billions of tiny extents, and memory must stay bounded.
const MAX_ANSWERS: usize = 1 << 20;
/// `offsetof(struct ext4_inode, i_block)`: FIEMAP's address of inline data.
const I_BLOCK_OFFSET: u64 = 40;

pub const HELP: &str = "\
Default output: one row per FUSE_IOMAP_BEGIN answer (opflags REPORT) of a
walk from offset 0 to the end of the file's last block, then on past EOF
through any blocks allocated there (fallocate --keep-size):
  POS     the file offset asked about (where the previous answer ended)
  OFFSET  file offset of the mapping, in bytes; it may start before POS
          when the engine's cache merged it with what came before
  LENGTH  length of the mapping, in bytes (a multiple of the block size)
  ADDR    device offset of OFFSET, in bytes; '-' for none (NULL_ADDR)
  TYPE    MAPPED (written data), UNWRITTEN (allocated, reads as zeros),
          HOLE (nothing allocated, reads as zeros), INLINE (bytes kept in
          the inode, served by the FUSE server), DELALLOC
  FLAGS   mapping flags (NEW, DIRTY, SHARED, MERGED, BOUNDARY, ...); '-'
  DEV     device cookie: 1 (the server's first backing device), 0 for none
Rows past the file size end in 'past EOF'. A directory's rows come
straight from its block map, in the same form (the kernel never asks
iomap about directories).

--json: the same rows as one JSON array of objects with path, ino, source
('iomap' or 'block_map'), pos, offset, length, addr (null for none), type,
flags, flag_names, dev, past_eof.

--physical: what `filefrag -v FILE` prints on a kernel mount of the image
(the path is the one given here), from the same answers:
  ext              extent number
  logical_offset   first..last file block of the extent
  physical_offset  first..last device block
  length           blocks
  expected         the device block where the extent would have started
                   if it followed the previous one; blank if it does
  flags            last (the file's last extent), unwritten, merged (the
                   filesystem has no extents feature, so the kernel built
                   the extent from the block map), inline and not_aligned
                   (data inside the inode: offsets and length in bytes,
                   physical offset = byte address of i_block), eof (the
                   extent reaches the file size)
Neighbours contiguous in the file and on the device, of one type, are
merged into one extent, as the kernel's extent status cache merges them.
The last line counts extents the way filefrag does (only discontiguous
ones). With several paths, header lines and column widths carry over from
file to file as in one `filefrag -v` call with those files.

A file with more than 1,048,576 answers is cut short with a warning.";

pub struct Opts {
    pub json: bool,
    pub physical: bool,
}

/// One answer as the kernel would receive it, with the position asked.
struct Answer {
    pos: u64,
    m: Mapping,
    past_eof: bool,
    /// Read from the block map, not asked of iomap.
    block_map: bool,
}

/// Everything `map` learned about one file.
struct Walk {
    ino: InodeNo,
    kind: FileType,
    size: u64,
    /// The inode has `EXTENTS_FL` (filefrag's test for an "ext2" file).
    extents_fl: bool,
    /// Inline data: the byte address of `i_block`, as FIEMAP reports it.
    inline_addr: Option<u64>,
    answers: Vec<Answer>,
    /// The walk went all the way (to maxbytes), so its last extent is the
    /// file's last.
    complete: bool,
    /// Why the walk stopped early.
    error: Option<String>,
    /// Answers the kernel would reject.
    broken: Vec<String>,
}

impl Walk {
    /// Record an iomap answer, checked against the kernel's rules.
    fn push(&mut self, pos: u64, m: Mapping, past_eof: bool, bs: u64, maxbytes: u64) {
        if let Err(e) = kernel_check(&m, pos, bs, maxbytes, false) {
            self.broken
                .push(format!("answer {} for pos {pos}: {e}", describe(&m)));
        }
        self.answers.push(Answer {
            pos,
            m,
            past_eof,
            block_map: false,
        });
    }

    fn full(&self) -> bool {
        self.answers.len() >= MAX_ANSWERS
    }
}

fn describe(m: &Mapping) -> String {
    format!(
        "{} {}+{} addr {} flags {:#x} dev {}",
        type_name(m.kind),
        m.offset,
        m.length,
        addr_text(m.addr),
        m.flags,
        m.dev
    )
}

fn type_name(k: MapType) -> &'static str {
    match k {
        MapType::Hole => "HOLE",
        MapType::Delalloc => "DELALLOC",
        MapType::Mapped => "MAPPED",
        MapType::Unwritten => "UNWRITTEN",
        MapType::Inline => "INLINE",
        MapType::RetryCache => "RETRY_CACHE",
        MapType::NoCache => "NOCACHE",
        MapType::PureOverwrite => "PURE_OVERWRITE",
    }
}

fn addr_text(a: u64) -> String {
    if a == NULL_ADDR {
        "-".into()
    } else {
        a.to_string()
    }
}

/// Names of the mapping flags in `f`; unknown bits in hex.
fn flag_names(f: u16) -> Vec<String> {
    const NAMES: [(u16, &str); 8] = [
        (mflags::NEW, "NEW"),
        (mflags::DIRTY, "DIRTY"),
        (mflags::SHARED, "SHARED"),
        (mflags::MERGED, "MERGED"),
        (mflags::BOUNDARY, "BOUNDARY"),
        (mflags::ANON_WRITE, "ANON_WRITE"),
        (mflags::ATOMIC_BIO, "ATOMIC_BIO"),
        (mflags::WANT_IOMAP_END, "WANT_IOMAP_END"),
    ];
    let mut out: Vec<String> = NAMES
        .iter()
        .filter(|(b, _)| f & b != 0)
        .map(|(_, n)| n.to_string())
        .collect();
    let rest = f & !mflags::KNOWN;
    if rest != 0 {
        out.push(format!("{rest:#x}"));
    }
    out
}

/// Walk a regular file or a directory. `Err` when `ino` is neither or
/// cannot be read at all.
fn walk(vol: &Vol, ino: InodeNo) -> Result<Walk, String> {
    let inode = vol.inode(ino).map_err(|e| e.to_string())?;
    let kind = match inode.kind {
        Some(k @ (FileType::Regular | FileType::Directory)) => k,
        Some(k) => {
            return Err(format!(
                "not a regular file or directory (a {})",
                kind_name(k)
            ))
        }
        None => return Err("not a regular file or directory (unknown inode type)".into()),
    };
    let bs = vol.sb().block_size as u64;
    let inline = inode.has_flag(flags::INLINE_DATA);
    let inline_addr = if inline {
        let (blk, off) = vol.inode_location(ino).map_err(|e| e.to_string())?;
        Some(
            blk.0
                .saturating_mul(bs)
                .saturating_add(off as u64 + I_BLOCK_OFFSET),
        )
    } else {
        None
    };
    let mut w = Walk {
        ino,
        kind,
        size: inode.size,
        extents_fl: inode.has_flag(flags::EXTENTS),
        inline_addr,
        answers: Vec::new(),
        complete: false,
        error: None,
        broken: Vec::new(),
    };
    if kind == FileType::Regular {
        walk_iomap(vol, &mut w);
    } else if inline {
        walk_inline_dir(vol, &mut w);
    } else {
        walk_block_map(vol, &inode, &mut w);
    }
    Ok(w)
}

/// A regular file, through the engine's iomap answers.
fn walk_iomap(vol: &Vol, w: &mut Walk) {
    let bs = vol.sb().block_size as u64;
    let maxbytes = vol.maxbytes();
    let eof = w.size.div_ceil(bs).saturating_mul(bs);
    let r = vol.mappings(w.ino, DEV, &mut |m| {
        // `mappings` asks each time where the previous answer ended.
        let pos = w.answers.last().map_or(0, |a| a.m.end());
        w.push(pos, *m, false, bs, maxbytes);
        !w.full()
    });
    if let Err(e) = r {
        let pos = w.answers.last().map_or(0, |a| a.m.end());
        w.error = Some(format!("at offset {pos}: {e}"));
        return;
    }
    if w.full() {
        w.error = Some(format!("stopped after {MAX_ANSWERS} answers"));
        return;
    }
    if w.inline_addr.is_some() {
        // Inline data never extends past EOF.
        w.complete = true;
        return;
    }
    // Past EOF, up to maxbytes as FIEMAP asks: blocks allocated there
    // (fallocate --keep-size, or damage in a block-mapped file) are
    // reported too. The engine answers a whole hole at once, so this takes
    // few answers even for an indirect map.
    let start = w.answers.len();
    let mut pos = w.answers.last().map_or(0, |a| a.m.end()).max(eof);
    w.complete = true;
    while pos < maxbytes {
        if w.full() {
            w.error = Some(format!("stopped after {MAX_ANSWERS} answers"));
            w.complete = false;
            break;
        }
        match vol.iomap_begin(w.ino, pos, maxbytes - pos, op::REPORT, DEV) {
            Ok((m, _)) => {
                w.push(pos, m, true, bs, maxbytes);
                if m.end() <= pos {
                    // Already reported as broken; do not loop on it.
                    w.error = Some(format!("answer at offset {pos} does not move forward"));
                    w.complete = false;
                    break;
                }
                pos = m.end();
            }
            Err(e) => {
                w.error = Some(format!("at offset {pos}: {e}"));
                w.complete = false;
                break;
            }
        }
    }
    trim_final_hole(w, start);
}

/// The final hole up to maxbytes tells a reader nothing.
fn trim_final_hole(w: &mut Walk, start: usize) {
    while w.answers.len() > start && w.answers.last().is_some_and(|a| a.m.kind == MapType::Hole) {
        w.answers.pop();
    }
}

/// An inline-data directory: one record for the bytes in the inode.
fn walk_inline_dir(vol: &Vol, w: &mut Walk) {
    let bs = vol.sb().block_size as u64;
    if w.size > 0 {
        let m = Mapping {
            offset: 0,
            length: w.size.div_ceil(bs).saturating_mul(bs),
            addr: NULL_ADDR,
            kind: MapType::Inline,
            flags: 0,
            dev: DEV_NULL,
        };
        w.answers.push(Answer {
            pos: 0,
            m,
            past_eof: false,
            block_map: true,
        });
    }
    w.complete = true;
}

/// A directory, straight from its block map up to maxbytes (the kernel
/// never asks iomap about directories), as records of the same form.
fn walk_block_map(vol: &Vol, inode: &Inode, w: &mut Walk) {
    let bs = vol.sb().block_size as u64;
    let eof = w.size.div_ceil(bs).saturating_mul(bs);
    let end = (vol.maxbytes() / bs).min(FileBlock::COUNT);
    let start = w.answers.len();
    let mut lblk = 0;
    while lblk < end {
        if w.full() {
            w.error = Some(format!("stopped after {MAX_ANSWERS} answers"));
            return;
        }
        let run = match vol.map_block(inode, FileBlock(lblk as u32)) {
            Ok(r) => r,
            Err(e) => {
                w.error = Some(format!("at block {lblk}: {e}"));
                return;
            }
        };
        let mut len = run.len().min(end - lblk);
        if len == 0 {
            w.error = Some(format!("empty block run at block {lblk}"));
            return;
        }
        let (kind, addr, dev) = match run {
            Run::Mapped {
                pblk, unwritten, ..
            } => {
                let kind = if unwritten {
                    MapType::Unwritten
                } else {
                    MapType::Mapped
                };
                (kind, pblk.0.saturating_mul(bs), DEV)
            }
            Run::Hole { .. } => {
                // A hole ends at EOF, as iomap's do.
                let eof_blk = eof / bs;
                if lblk < eof_blk {
                    len = len.min(eof_blk - lblk);
                }
                (MapType::Hole, NULL_ADDR, DEV_NULL)
            }
        };
        let offset = lblk * bs;
        let m = Mapping {
            offset,
            length: len * bs,
            addr,
            kind,
            flags: 0,
            dev,
        };
        w.answers.push(Answer {
            pos: offset,
            m,
            past_eof: offset >= eof,
            block_map: true,
        });
        lblk += len;
    }
    w.complete = true;
    let first_past = w.answers[start..]
        .iter()
        .position(|a| a.past_eof)
        .map_or(w.answers.len(), |i| start + i);
    trim_final_hole(w, first_past);
}

/// The part of an answer from its position on: what the kernel uses.
fn from_pos(a: &Answer) -> Mapping {
    if a.m.offset < a.pos && a.m.covers(a.pos) {
        a.m.tail_from(a.pos)
    } else {
        a.m
    }
}

// ------------------------------------------------------------ --physical

/// `FIEMAP_EXTENT_*` flags filefrag names (those this tool can produce).
mod fe {
    pub const LAST: u32 = 0x1;
    pub const UNKNOWN: u32 = 0x2;
    pub const DELALLOC: u32 = 0x4;
    pub const NOT_ALIGNED: u32 = 0x100;
    pub const DATA_INLINE: u32 = 0x200;
    pub const UNWRITTEN: u32 = 0x800;
    pub const MERGED: u32 = 0x1000;
    /// In the order filefrag prints them, with its names.
    pub const NAMES: [(u32, &str); 7] = [
        (LAST, "last"),
        (UNKNOWN, "unknown_loc"),
        (DELALLOC, "delalloc"),
        (NOT_ALIGNED, "not_aligned"),
        (DATA_INLINE, "inline"),
        (UNWRITTEN, "unwritten"),
        (MERGED, "merged"),
    ];
}

/// One FIEMAP extent, in bytes.
#[derive(Clone, Copy)]
struct Extent {
    logical: u64,
    physical: u64,
    length: u64,
    flags: u32,
}

/// The extents the kernel's FIEMAP reports for the walk: holes dropped,
/// neighbours contiguous in the file and on the device with the same flags
/// merged (the extent status cache does this before FIEMAP reads it).
fn extents(w: &Walk, no_extents_feature: bool) -> Vec<Extent> {
    let mut out: Vec<Extent> = Vec::new();
    for a in &w.answers {
        let m = from_pos(a);
        let (physical, flags) = match m.kind {
            MapType::Hole => continue,
            // Without the extents feature the kernel marks what it
            // assembles from the block map as merged.
            MapType::Mapped if no_extents_feature => (m.addr, fe::MERGED),
            MapType::Mapped => (m.addr, 0),
            MapType::Unwritten => (m.addr, fe::UNWRITTEN),
            MapType::Delalloc => (0, fe::DELALLOC | fe::UNKNOWN),
            MapType::Inline => {
                // FIEMAP reports the inline bytes themselves, in bytes.
                out.push(Extent {
                    logical: 0,
                    physical: w.inline_addr.unwrap_or(0),
                    length: w.size,
                    flags: fe::DATA_INLINE | fe::NOT_ALIGNED,
                });
                continue;
            }
            _ => (0, fe::UNKNOWN),
        };
        if let Some(p) = out.last_mut() {
            if p.flags == flags
                && flags & (fe::UNKNOWN | fe::DATA_INLINE) == 0
                && p.logical + p.length == m.offset
                && p.physical.checked_add(p.length) == Some(physical)
            {
                p.length += m.length;
                continue;
            }
        }
        out.push(Extent {
            logical: m.offset,
            physical,
            length: m.length,
            flags,
        });
    }
    if w.complete {
        if let Some(l) = out.last_mut() {
            l.flags |= fe::LAST;
        }
    }
    out
}

/// filefrag's state that carries from one file to the next.
struct Filefrag {
    first: bool,
    logical_width: usize,
    physical_width: usize,
}

impl Filefrag {
    fn new() -> Filefrag {
        Filefrag {
            first: true,
            logical_width: 8,
            physical_width: 10,
        }
    }
}

/// Digits minus one, as filefrag sizes its columns.
fn log10(mut n: u64) -> usize {
    let mut l = 0;
    n /= 10;
    while n != 0 {
        l += 1;
        n /= 10;
    }
    l
}

fn physical_text(st: &mut Filefrag, vol: &Vol, name: &str, w: &Walk) -> String {
    let bs = vol.sb().block_size as u64;
    let shift = bs.trailing_zeros();
    let f_blocks = vol.statfs().blocks;
    let mut s = String::new();
    if st.first {
        // ext2, ext3 and ext4 all report EXT4_SUPER_MAGIC from statfs.
        s += "Filesystem type is: ef53\n";
        if !w.extents_fl {
            // filefrag truncates to unsigned int here.
            let groups = (f_blocks as u32).div_ceil(bs as u32 * 8);
            s += &format!("Filesystem cylinder groups approximately {groups}\n");
        }
        st.first = false;
    }
    st.physical_width = st.physical_width.max(log10(f_blocks));
    let numblocks = w.size.div_ceil(bs);
    st.logical_width = st.logical_width.max(log10(numblocks));
    let (lw, pw) = (st.logical_width, st.physical_width);
    s += &format!(
        "File size of {name} is {} ({numblocks} block{} of {bs} bytes)\n",
        w.size,
        if numblocks == 1 { "" } else { "s" }
    );
    let exts = extents(w, !vol.sb().has_incompat(incompat::EXTENTS));
    if !exts.is_empty() {
        s += &format!(
            " ext: {:>a$} {:>b$} length: {:>c$} flags:\n",
            "logical_offset:",
            "physical_offset:",
            "expected:",
            a = lw * 2 + 3,
            b = pw * 2 + 3,
            c = pw + 1
        );
    }
    // filefrag's count: the first extent, then each one that neither
    // continues the previous one's device range nor sits where the
    // previous one's logical-to-physical offset would put it.
    let mut prev = Extent {
        logical: 0,
        physical: 0,
        length: 0,
        flags: 0,
    };
    let mut count = 0u64;
    for (i, e) in exts.iter().enumerate() {
        let dense = prev.physical.wrapping_add(prev.length);
        let mut expected = prev
            .physical
            .wrapping_add(e.logical)
            .wrapping_sub(prev.logical);
        if e.logical != 0 && e.physical != expected && e.physical != dense {
            count += 1;
        } else {
            expected = 0;
            count = count.max(1);
        }
        s += &extent_row(e, i, expected, shift, w.size, lw, pw);
        s.push('\n');
        prev = *e;
    }
    s += &format!(
        "{name}: {count} extent{} found\n",
        if count == 1 { "" } else { "s" }
    );
    s
}

/// One row of `filefrag -v`.
fn extent_row(
    e: &Extent,
    i: usize,
    expected: u64,
    shift: u32,
    size: u64,
    lw: usize,
    pw: usize,
) -> String {
    // Inline data is shown in bytes.
    let shift = if e.flags & fe::DATA_INLINE != 0 {
        0
    } else {
        shift
    };
    let unknown = e.flags & fe::UNKNOWN != 0;
    let logical = e.logical >> shift;
    let span = e.length.saturating_sub(1) >> shift;
    let physical = if unknown { 0 } else { e.physical >> shift };
    let (len, pspan) = if unknown {
        (0, 0)
    } else {
        (e.length >> shift, span)
    };
    let mut flags = if expected != 0 && !unknown {
        format!("{:>pw$}: ", expected >> shift)
    } else {
        " ".repeat(pw.min(19) + 2)
    };
    for (bit, name) in fe::NAMES {
        if e.flags & bit != 0 {
            flags += name;
            flags.push(',');
        }
    }
    // filefrag (1.47) drops the last character, the trailing comma (or one
    // of the blanks when there are no flags), before it adds ",eof".
    flags.pop();
    if e.logical.saturating_add(e.length) >= size {
        flags += ",eof";
    }
    format!(
        "{i:4}: {logical:>lw$}..{:>lw$}: {physical:>pw$}..{:>pw$}: {len:6}: {flags}",
        logical + span,
        physical + pspan
    )
}

// ------------------------------------------------------------ the rest

fn text(vol: &Vol, name: &str, w: &Walk) -> String {
    let bs = vol.sb().block_size;
    let source = match w.kind {
        FileType::Directory => "directory, rows from its block map (not served through iomap)",
        _ => "regular file",
    };
    let mut s = format!(
        "{name}: {source}, inode {}, size {}, block size {bs}\n",
        w.ino, w.size
    );
    s += &format!(
        "{:>14} {:>14} {:>14} {:>20}  {:<10} {:<8} {:>3}\n",
        "POS", "OFFSET", "LENGTH", "ADDR", "TYPE", "FLAGS", "DEV"
    );
    for a in &w.answers {
        let m = &a.m;
        let names = flag_names(m.flags);
        s += &format!(
            "{:>14} {:>14} {:>14} {:>20}  {:<10} {:<8} {:>3}{}\n",
            a.pos,
            m.offset,
            m.length,
            addr_text(m.addr),
            type_name(m.kind),
            if names.is_empty() {
                "-".to_string()
            } else {
                names.join(",")
            },
            m.dev,
            if a.past_eof { "  past EOF" } else { "" }
        );
    }
    s
}

fn json_rows(name: &str, w: &Walk) -> Vec<serde_json::Value> {
    w.answers
        .iter()
        .map(|a| {
            let m = &a.m;
            let source = if a.block_map { "block_map" } else { "iomap" };
            json!({
                "path": name,
                "ino": w.ino.0,
                "source": source,
                "pos": a.pos,
                "offset": m.offset,
                "length": m.length,
                "addr": if m.addr == NULL_ADDR { None } else { Some(m.addr) },
                "type": type_name(m.kind),
                "flags": m.flags,
                "flag_names": flag_names(m.flags),
                "dev": m.dev,
                "past_eof": a.past_eof,
            })
        })
        .collect()
}

pub fn run(vol: &Vol, paths: &[&[u8]], o: &Opts) -> CmdResult {
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut problems = 0u64;
    let mut ff = Filefrag::new();
    let mut json_count = 0u64;
    if o.json {
        write!(out, "[").map_err(out_err)?;
    }
    for (i, path) in paths.iter().enumerate() {
        let name = show(path);
        let w = match resolve(vol, path) {
            Ok(ino) => walk(vol, ino).map_err(|e| format!("{name}: {e}")),
            Err(Fail::Problem(m)) => Err(m),
            Err(f) => return Err(f),
        };
        let w = match w {
            Ok(w) => w,
            Err(m) => {
                out.flush().map_err(out_err)?;
                warn(m);
                problems += 1 + drain_reports(vol, &name);
                continue;
            }
        };
        if o.json {
            for v in json_rows(&name, &w) {
                let sep = if json_count == 0 { "\n" } else { ",\n" };
                json_count += 1;
                write!(out, "{sep}{v}").map_err(out_err)?;
            }
        } else if o.physical {
            out.write_all(physical_text(&mut ff, vol, &name, &w).as_bytes())
                .map_err(out_err)?;
        } else {
            let sep = if i == 0 { "" } else { "\n" };
            write!(out, "{sep}{}", text(vol, &name, &w)).map_err(out_err)?;
        }
        // Messages go after this file's rows.
        out.flush().map_err(out_err)?;
        for b in w.broken.iter().take(10) {
            warn(format_args!("{name}: the kernel would reject {b}"));
        }
        if let Some(e) = &w.error {
            warn(format_args!("{name}: walk stopped {e}"));
        }
        problems += w.broken.len() as u64 + u64::from(w.error.is_some());
        problems += drain_reports(vol, &name);
    }
    if o.json {
        writeln!(out, "\n]").map_err(out_err)?;
    }
    out.flush().map_err(out_err)?;
    Ok(if problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
