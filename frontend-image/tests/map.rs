//! `ext4-image map` against outside oracles, on images built by
//! `mke2fs -d` (ext4, block-mapped ext4, bigalloc, 1 KiB blocks,
//! inline_data) and written by the kernel's ext4 (fragmented files,
//! fallocated and punched ranges, extents past EOF, data past 4 GiB):
//!
//! - `map --physical` on every regular file and directory equals, byte for
//!   byte, `filefrag -v` on the same names on a `mount -o loop,ro` of the
//!   image: extent rows (logical and physical ranges, lengths, the
//!   `expected` column, every flag including `last`, `eof`, `merged`,
//!   `unwritten`, `inline`), header lines and extent counts. The kernel's
//!   FIEMAP reports extents from its extent status cache, which merges
//!   neighbours once it has read them, so filefrag runs once before the
//!   compared run (and again if an eviction split an extent meanwhile);
//! - `map --json` on every regular file: the rows, cut at the position each
//!   answers, tile the file from 0 without gaps, pass the kernel's rules
//!   (`kernel_check`), and once merged equal the kernel's `FS_IOC_FIEMAP`
//!   extents; the image's bytes at every MAPPED address are the bytes the
//!   kernel reads from the file; holes and unwritten ranges read as zeros;
//! - the e2fsprogs corpus: `map` (text rows as JSON, and `--physical`) on
//!   every regular file and directory never panics or hangs, always prints
//!   a valid JSON array, and every row it prints passes `kernel_check`.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use ext4_engine::iomap::kernel_check;
use ext4_engine::mapping_cache::{MapType, Mapping, DEV_NULL, NULL_ADDR};
use ext4_engine::FileDevice;
use ext4_engine::{OpenOptions, Volume};
use ext4_tests::image::{build_image, matrix_spec};
use ext4_tests::kwimage::{
    engine_segs, kernel_fiemap, kernel_segs, kw_image, merge, segs_differ, KW_1K, KW_4K,
};
use ext4_tests::oracle::{debugfs_damage, mke2fs, tempfile_path, KernelMount};
use ext4_tests::util::{corpus_dir, have_tool, require_e2fsprogs, require_kernel_ext4, skip};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ext4-image");

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn have_filefrag() -> bool {
    let ok = have_tool("filefrag");
    if !ok {
        skip("filefrag (e2fsprogs) not found");
    }
    ok
}

/// Relative paths of every regular file and directory under `root`
/// (not `root` itself), sorted.
fn tree(root: &Path) -> (Vec<String>, Vec<String>) {
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let md = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if md.is_dir() {
                stack.push(p);
                dirs.push(rel);
            } else if md.is_file() {
                files.push(rel);
            }
        }
    }
    files.sort();
    dirs.sort();
    (files, dirs)
}

fn map_cmd(img: &Path, args: &[&str], paths: &[String]) -> Output {
    Command::new(BIN)
        .arg(img)
        .arg("map")
        .args(args)
        .args(paths)
        .output()
        .expect("run ext4-image")
}

// ------------------------------------------------------------ --physical

/// `map --physical` against `filefrag -v`, run in the mount with the same
/// relative names, so whole outputs compare. Twice: with the default
/// mapping cache, and with none (`--cache-size 512`), when the engine
/// answers from disk one on-disk extent at a time and `map` must merge
/// contiguous neighbours itself.
fn check_physical(img: &Path, mnt: &Path, paths: &[String]) -> Result<usize, String> {
    let mut outputs = Vec::new();
    for cache in ["64m", "512"] {
        let o = Command::new(BIN)
            .arg("--cache-size")
            .arg(cache)
            .arg(img)
            .args(["map", "--physical"])
            .args(paths)
            .output()
            .expect("run ext4-image");
        if !o.status.success() || !o.stderr.is_empty() {
            return Err(format!(
                "map --physical (cache {cache}): {:?}: {}",
                o.status,
                stderr(&o)
            ));
        }
        outputs.push((cache, String::from_utf8_lossy(&o.stdout).into_owned()));
    }
    let mut last = String::new();
    // Run 0 warms the kernel's extent status cache.
    for run in 0..4 {
        let f = Command::new("filefrag")
            .arg("-v")
            .args(paths)
            .current_dir(mnt)
            .output()
            .expect("run filefrag");
        if !f.status.success() {
            return Err(format!("filefrag: {:?}: {}", f.status, stderr(&f)));
        }
        let theirs = String::from_utf8_lossy(&f.stdout).into_owned();
        if run > 0 && outputs.iter().all(|(_, mine)| *mine == theirs) {
            if run > 1 {
                eprintln!("note: filefrag matched on run {run} (kernel cache state changed)");
            }
            return Ok(theirs.lines().count());
        }
        last = theirs;
    }
    let (cache, mine) = outputs
        .iter()
        .find(|(_, mine)| *mine != last)
        .expect("a differing output");
    Err(format!(
        "cache size {cache}: {}",
        first_difference(&last, mine)
    ))
}

/// The first differing line with the file it belongs to and context.
fn first_difference(theirs: &str, mine: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (theirs.lines().collect(), mine.lines().collect());
    let i = a
        .iter()
        .zip(&b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let file = b[..i.min(b.len())]
        .iter()
        .rev()
        .find(|l| l.starts_with("File size of "))
        .copied()
        .unwrap_or("?");
    let ctx = |v: &[&str]| {
        v[i.saturating_sub(3)..(i + 3).min(v.len())]
            .iter()
            .map(|l| format!("\n      |{l}"))
            .collect::<String>()
    };
    format!(
        "filefrag -v and map --physical differ at line {} ({} vs {} lines), in \"{file}\":\n    filefrag:{}\n    map:{}",
        i + 1,
        a.len(),
        b.len(),
        ctx(&a),
        ctx(&b)
    )
}

// ------------------------------------------------------------ --json

/// One `--json` row.
struct Row {
    pos: u64,
    m: Mapping,
    past_eof: bool,
}

fn map_type(name: &str) -> Option<MapType> {
    Some(match name {
        "HOLE" => MapType::Hole,
        "DELALLOC" => MapType::Delalloc,
        "MAPPED" => MapType::Mapped,
        "UNWRITTEN" => MapType::Unwritten,
        "INLINE" => MapType::Inline,
        "RETRY_CACHE" => MapType::RetryCache,
        "NOCACHE" => MapType::NoCache,
        "PURE_OVERWRITE" => MapType::PureOverwrite,
        _ => return None,
    })
}

fn row(v: &Value) -> Result<(String, Row), String> {
    let n = |k: &str| v[k].as_u64().ok_or_else(|| format!("row without {k}: {v}"));
    let kind = v["type"]
        .as_str()
        .and_then(map_type)
        .ok_or_else(|| format!("row with a bad type: {v}"))?;
    let addr = match &v["addr"] {
        Value::Null => NULL_ADDR,
        a => a.as_u64().ok_or_else(|| format!("bad addr: {v}"))?,
    };
    let m = Mapping {
        offset: n("offset")?,
        length: n("length")?,
        addr,
        kind,
        flags: u16::try_from(n("flags")?).map_err(|_| format!("bad flags: {v}"))?,
        dev: u32::try_from(n("dev")?).map_err(|_| format!("bad dev: {v}"))?,
    };
    let path = v["path"].as_str().ok_or("row without path")?.to_string();
    let past_eof = v["past_eof"].as_bool().ok_or("row without past_eof")?;
    Ok((
        path,
        Row {
            pos: n("pos")?,
            m,
            past_eof,
        },
    ))
}

/// Parse `map --json` output into rows per path, in order.
fn parse_rows(out: &[u8]) -> Result<BTreeMap<String, Vec<Row>>, String> {
    let v: Value = serde_json::from_slice(out).map_err(|e| format!("output is not JSON: {e}"))?;
    let arr = v.as_array().ok_or("output is not a JSON array")?;
    let mut by_path: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for r in arr {
        let (p, r) = row(r)?;
        by_path.entry(p).or_default().push(r);
    }
    Ok(by_path)
}

/// The part of a row's mapping from its position on (what the kernel uses).
fn from_pos(r: &Row) -> Mapping {
    if r.m.offset < r.pos && r.m.covers(r.pos) {
        r.m.tail_from(r.pos)
    } else {
        r.m
    }
}

/// Every row by the kernel's rules.
fn rules(rows: &[Row], bs: u64, maxbytes: u64) -> Result<(), String> {
    for r in rows {
        kernel_check(&r.m, r.pos, bs, maxbytes, false)
            .map_err(|e| format!("row {:?} at pos {}: {e}", r.m, r.pos))?;
        let null_ok = if r.m.kind.has_addr() {
            r.m.dev != DEV_NULL
        } else {
            r.m.dev == DEV_NULL
        };
        if !null_ok {
            return Err(format!("row {:?}: device cookie", r.m));
        }
    }
    Ok(())
}

#[derive(Default, Debug)]
struct Stats {
    files: usize,
    rows: usize,
    kernel_extents: usize,
    mapped_bytes: u64,
    zero_checked: u64,
}

fn read_at(f: &File, off: u64, len: usize) -> Result<Vec<u8>, String> {
    let mut v = vec![0u8; len];
    f.read_exact_at(&mut v, off)
        .map_err(|e| format!("read {len} bytes at {off}: {e}"))?;
    Ok(v)
}

/// One file's `--json` rows against the kernel.
fn check_json_file(
    image: &File,
    host: &Path,
    rows: &[Row],
    bs: u64,
    maxbytes: u64,
    st: &mut Stats,
) -> Result<(), String> {
    rules(rows, bs, maxbytes)?;
    let f = File::open(host).map_err(|e| format!("open: {e}"))?;
    let size = f.metadata().unwrap().len();
    let eof = size.div_ceil(bs) * bs;
    // The walk asks at 0, then where each answer ended, through EOF.
    let mut pos = 0;
    for r in rows {
        if r.pos != pos {
            return Err(format!("row {:?} asked at {}, want {pos}", r.m, r.pos));
        }
        if r.past_eof != (r.pos >= eof) {
            return Err(format!("row at {} says past_eof {}", r.pos, r.past_eof));
        }
        pos = r.m.end();
    }
    if pos < eof {
        return Err(format!("rows end at {pos}, before EOF {eof}"));
    }
    let maps: Vec<Mapping> = rows.iter().map(from_pos).collect();
    let kexts = kernel_fiemap(&f)?;
    st.kernel_extents += kexts.len();
    let want = merge(&kernel_segs(&kexts, bs));
    let got = merge(&engine_segs(&maps));
    if let Some(d) = segs_differ(&want, &got) {
        return Err(format!("FIEMAP vs map --json: {d}"));
    }
    const CH: u64 = 1 << 20;
    for m in &maps {
        let end = m.end().min(size);
        let mut off = m.offset;
        match m.kind {
            MapType::Mapped => {
                while off < end {
                    let n = (end - off).min(CH) as usize;
                    let disk = read_at(image, m.addr + (off - m.offset), n)?;
                    let want = read_at(&f, off, n)?;
                    if disk != want {
                        let i = disk.iter().zip(&want).position(|(a, b)| a != b).unwrap();
                        return Err(format!(
                            "image byte at {} (row {m:?}) differs from the file's byte {}",
                            m.addr + (off - m.offset) + i as u64,
                            off + i as u64
                        ));
                    }
                    st.mapped_bytes += n as u64;
                    off += n as u64;
                }
            }
            MapType::Hole | MapType::Unwritten if off < end => {
                // The first and last 64 KiB of each (holes run to GiBs).
                let n = (end - off).min(64 << 10);
                for at in [off, end - n] {
                    let v = read_at(&f, at, n as usize)?;
                    if let Some(i) = v.iter().position(|&b| b != 0) {
                        return Err(format!(
                            "row {m:?}, but byte {} is {:#x}",
                            at + i as u64,
                            v[i]
                        ));
                    }
                    st.zero_checked += n;
                }
            }
            _ => {}
        }
    }
    st.rows += rows.len();
    st.files += 1;
    Ok(())
}

fn check_json(img: &Path, mnt: &Path, files: &[String]) -> Result<Stats, Vec<String>> {
    let vol = ext4_tests::open_engine(img).map_err(|e| vec![e])?;
    let (bs, maxbytes) = (vol.sb().block_size as u64, vol.maxbytes());
    let o = map_cmd(img, &["--json"], files);
    if !o.status.success() || !o.stderr.is_empty() {
        return Err(vec![format!("map --json: {:?}: {}", o.status, stderr(&o))]);
    }
    let by_path = parse_rows(&o.stdout).map_err(|e| vec![e])?;
    let image = File::open(img).unwrap();
    let mut st = Stats::default();
    let mut errs = Vec::new();
    for p in files {
        let rows = by_path.get(p).map_or(&[][..], |v| &v[..]);
        if let Err(e) = check_json_file(&image, &mnt.join(p), rows, bs, maxbytes, &mut st) {
            errs.push(format!("{p}: {e}"));
        }
    }
    if errs.is_empty() {
        Ok(st)
    } else {
        Err(errs)
    }
}

// ------------------------------------------------------------ the images

fn check_image(name: &str, img: &Path) {
    let t = Instant::now();
    let m = KernelMount::ro(img).expect("kernel mount");
    let (files, dirs) = tree(m.path());
    let mut all = files.clone();
    all.extend(dirs);
    all.sort();
    let mut errs = Vec::new();
    match check_physical(img, m.path(), &all) {
        Ok(lines) => eprintln!(
            "{name}: map --physical = filefrag -v on {} paths ({lines} lines)",
            all.len()
        ),
        Err(e) => errs.push(e),
    }
    match check_json(img, m.path(), &files) {
        Ok(st) => eprintln!("{name}: map --json vs FIEMAP and bytes: {st:?}"),
        Err(e) => errs.extend(e),
    }
    drop(m);
    eprintln!("{name}: {:.1?}", t.elapsed());
    assert!(
        errs.is_empty(),
        "{name}: {} problems:\n  {}",
        errs.len(),
        errs.iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  ")
    );
}

fn matrix_image(name: &str) {
    if !require_e2fsprogs() || !require_kernel_ext4() || !have_filefrag() {
        return;
    }
    let img = build_image(matrix_spec(name));
    check_image(name, &img.path);
}

#[test]
fn ext4() {
    matrix_image("ext4");
}

#[test]
fn ext4_noextent() {
    matrix_image("ext4-noextent");
}

#[test]
fn ext4_bigalloc() {
    matrix_image("ext4-bigalloc");
}

#[test]
fn ext4_1k() {
    matrix_image("ext4-1k");
}

#[test]
fn ext4_inline() {
    matrix_image("ext4-inline");
}

#[test]
fn kernel_written_4k() {
    if !require_e2fsprogs() || !require_kernel_ext4() || !have_filefrag() {
        return;
    }
    check_image("kernel-written 4k", &kw_image(&KW_4K));
}

#[test]
fn kernel_written_1k() {
    if !require_e2fsprogs() || !require_kernel_ext4() || !have_filefrag() {
        return;
    }
    check_image("kernel-written 1k", &kw_image(&KW_1K));
}

/// Extents the kernel reports merged although the extent tree stores them
/// apart: fallocate makes unwritten extents of at most 32,767 blocks, which
/// lie back to back; and a written file split by a punched hole.
#[test]
fn contiguous_extents() {
    if !require_e2fsprogs() || !require_kernel_ext4() || !have_filefrag() {
        return;
    }
    let img = tempfile_path("map-contiguous").with_extension("img");
    let _rm = RemoveOnDrop(img.clone());
    mke2fs(&img, &["-t", "ext4", "-b", "4096"], None, "1G");
    let m = KernelMount::mount(&img, false, "").expect("mount rw");
    let sh = |args: &[&str]| {
        let o = Command::new("fallocate")
            .args(args)
            .current_dir(m.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "fallocate {args:?}: {}", stderr(&o));
    };
    sh(&["-l", "200M", "unwritten-200m"]);
    sh(&["-l", "300M", "unwritten-300m"]);
    sh(&["-l", "8M", "punched"]);
    sh(&["-p", "-o", "1M", "-l", "64K", "punched"]);
    sh(&["-n", "-o", "16M", "-l", "150M", "punched"]);
    m.unmount().expect("unmount");
    check_image("contiguous extents", &img);
}

/// A block-mapped (^extent) file whose size was cut short on disk, so its
/// blocks run on past EOF (indirect trees included): the kernel's FIEMAP
/// reports them, and `map` must too.
#[test]
fn block_map_past_eof() {
    if !require_e2fsprogs() || !require_kernel_ext4() || !have_filefrag() {
        return;
    }
    let img = tempfile_path("map-past-eof").with_extension("img");
    let _rm = RemoveOnDrop(img.clone());
    let src = tempfile_path("map-past-eof-src");
    fs::create_dir_all(&src).unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(src.join("f"), &data).unwrap();
    mke2fs(
        &img,
        &["-t", "ext4", "-O", "^extent,^64bit", "-b", "1024"],
        Some(&src),
        "64M",
    );
    let _ = fs::remove_dir_all(&src);
    debugfs_damage(&img, &["sif /f size 1000".into()]);
    check_image("block map past EOF", &img);
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// A path that is missing or not a file or directory costs one line on
/// stderr and exit status 1, without stopping the other paths; the help
/// explains the columns.
#[test]
fn errors_and_help() {
    if !require_e2fsprogs() {
        return;
    }
    let img = build_image(matrix_spec("ext4")).path;
    let one_line = |paths: &[&str], want: &str| {
        let paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
        let o = map_cmd(&img, &[], &paths);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{paths:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{paths:?}: {err}");
        assert!(err.contains(want), "{paths:?}: {err}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    one_line(&["/no/such"], "no such file or directory: /no/such");
    one_line(
        &["/links/to-file"],
        "not a regular file or directory (a symlink)",
    );
    one_line(
        &["/special/fifo"],
        "not a regular file or directory (a fifo)",
    );
    one_line(
        &["/special/char-big"],
        "not a regular file or directory (a char)",
    );
    let out = one_line(&["/files/size-1", "/nope", "/files/size-0"], "/nope");
    assert!(
        out.contains("/files/size-1: regular file") && out.contains("/files/size-0: regular file")
    );
    let o = map_cmd(&img, &["--json", "--physical"], &["/".into()]);
    assert_eq!(o.status.code(), Some(2), "--json with --physical");
    let o = map_cmd(&img, &["--help"], &[]);
    let help = String::from_utf8_lossy(&o.stdout);
    for word in [
        "POS",
        "UNWRITTEN",
        "logical_offset",
        "expected",
        "merged",
        "eof",
    ] {
        assert!(
            help.contains(word),
            "--help does not explain {word}:\n{help}"
        );
    }
}

// ------------------------------------------------------------ corpus

/// Seconds one `map` run over a corpus image may take.
const CORPUS_LIMIT: &str = "20";

/// The first lines of what a run printed on stderr.
fn stderr_head(o: &Output) -> String {
    stderr(o).lines().take(4).collect::<Vec<_>>().join(" | ")
}

/// Run `ext4-image` under `timeout`; Err says how it broke.
fn bounded(img: &Path, args: &[&str], paths: &[String]) -> Result<Output, String> {
    let o = Command::new("timeout")
        .args(["-s", "KILL", CORPUS_LIMIT, BIN])
        .arg(img)
        .args(args)
        .args(paths)
        .output()
        .expect("run timeout");
    match o.status.code() {
        Some(137) | None => Err(format!("{args:?} timed out or was killed: {:?}", o.status)),
        Some(101) => Err(format!("{args:?} panicked: {}", stderr_head(&o))),
        Some(c) if c > 2 => Err(format!("{args:?} exited {c}: {}", stderr_head(&o))),
        _ if stderr(&o).contains("panicked") => Err(format!("{args:?}: {}", stderr_head(&o))),
        _ => Ok(o),
    }
}

fn open_like_the_tool(img: &Path) -> Option<Volume<FileDevice>> {
    let dev = FileDevice::open(img, true).ok()?;
    let opts = OpenOptions {
        read_only: true,
        ..OpenOptions::default()
    };
    Volume::open(dev, &opts).ok()
}

#[test]
fn corpus_never_panics_and_follows_kernel_rules() {
    let Some(corpus) = corpus_dir() else {
        return;
    };
    let manifest = fs::read_to_string(corpus.join("MANIFEST.tsv")).unwrap();
    let work =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("map-{}", std::process::id()));
    fs::create_dir_all(&work).unwrap();
    let t = Instant::now();
    let files: Vec<&str> = manifest
        .lines()
        .skip(1)
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    // Two workers: most of the time goes to starting processes.
    let results: Vec<(&str, Outcome)> = std::thread::scope(|s| {
        let workers: Vec<_> = files
            .chunks(files.len().div_ceil(2).max(1))
            .map(|chunk| {
                let (corpus, work) = (&corpus, &work);
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|&file| {
                            let img = work.join(file.trim_end_matches(".gz"));
                            let gz = File::open(corpus.join(file)).unwrap();
                            let o = Command::new("gunzip").arg("-c").stdin(gz).output().unwrap();
                            fs::write(&img, &o.stdout).unwrap();
                            let r = corpus_image(&img);
                            let _ = fs::remove_file(&img);
                            (file, r)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let (mut images, mut paths_mapped, mut rows_checked, mut unopened) = (0, 0, 0, 0);
    let mut failures = Vec::new();
    for (file, r) in results {
        match r {
            Ok(Some((p, r))) => {
                images += 1;
                paths_mapped += p;
                rows_checked += r;
            }
            Ok(None) => unopened += 1,
            Err(e) => failures.push(format!("{file}: {e}")),
        }
    }
    let _ = fs::remove_dir_all(&work);
    eprintln!(
        "corpus: {images} images mapped ({unopened} not opened), {paths_mapped} paths, {rows_checked} rows checked, {:.1?}",
        t.elapsed()
    );
    assert!(images > 50, "only {images} corpus images could be mapped");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What one corpus image gave: (paths mapped, rows checked), `None` when
/// the tool refuses to open the image, or how the tool broke.
type Outcome = Result<Option<(usize, usize)>, String>;

/// Map every regular file and directory of one corpus image.
fn corpus_image(img: &Path) -> Outcome {
    let ls = bounded(img, &["ls", "-R", "--json"], &["/".to_string()])?;
    if ls.status.code() == Some(2) {
        return Ok(None);
    }
    let Some(vol) = open_like_the_tool(img) else {
        return Err("the tool opened it but the engine does not".into());
    };
    let (bs, maxbytes) = (vol.sb().block_size as u64, vol.maxbytes());
    // A damaged directory may cut the listing short; map what it gave,
    // plus the root.
    let listed: Vec<Value> = serde_json::from_slice::<Value>(&ls.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default();
    let mut list = vec!["/".to_string()];
    for e in &listed {
        if matches!(e["type"].as_str(), Some("regular" | "directory")) {
            if let Some(p) = e["path"].as_str() {
                list.push(p.to_string());
            }
        }
    }
    list.truncate(5000);
    let o = bounded(img, &["map", "--json"], &list)?;
    let by_path = parse_rows(&o.stdout).map_err(|e| format!("map --json: {e}"))?;
    let mut rows = 0;
    for (p, rs) in &by_path {
        rules(rs, bs, maxbytes).map_err(|e| format!("{p}: {e}"))?;
        rows += rs.len();
    }
    bounded(img, &["map", "--physical"], &list)?;
    Ok(Some((list.len(), rows)))
}
