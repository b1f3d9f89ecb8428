//! Journals written by the tests, with the engine's on-disk format
//! ([`ext4_engine::test_support::journal_format`]), into an image made by mke2fs: the
//! cases the kernel of this machine does not write — checksums v1 and v2,
//! transaction ids wrapping past 2^32, async commit, damaged commit and
//! revoke blocks, descriptors without a last tag. What each case means is
//! decided by the kernel (mounting a copy) and e2fsck, not here.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use ext4_engine::test_support::journal_format::{
    self as format, blocktype, feature, tag_flag, CommitHeader, Header, JournalSuperblock,
    LogFormat, RevokeHeader, HEADER_SIZE, REVOKE_HEADER_SIZE, TAG_UUID_SIZE,
};
use ext4_engine::PhysBlock;
use zerocopy::{FromBytes, IntoBytes};

use crate::util::run_ok;

/// How a transaction ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commit {
    /// A commit block with the right checksum (v1 crc32 or v2/v3 crc32c).
    Good,
    /// A commit block whose checksum is wrong.
    BadChecksum,
    /// No commit block (a transaction cut short).
    None,
}

/// One transaction to log.
#[derive(Clone, Debug, Default)]
pub struct Transaction {
    /// (filesystem block, new contents).
    pub blocks: Vec<(u64, Vec<u8>)>,
    /// Blocks revoked (logged before the descriptors).
    pub revokes: Vec<u64>,
    /// Tags per descriptor block (0: as many as fit).
    pub tags_per_descriptor: usize,
    /// Leave LAST_TAG off the last descriptor's last tag.
    pub no_last_tag: bool,
    /// A revoke block whose count claims more than the block.
    pub bad_revoke_count: bool,
    /// The copy of the first block fails its tag checksum.
    pub bad_tag_checksum: bool,
    pub commit_time: u64,
}

/// A journal being written into `img`.
pub struct JournalWriter {
    img: PathBuf,
    file: File,
    bs: usize,
    /// (first log block, first device block, length) of the journal inode.
    runs: Vec<(u64, u64, u64)>,
    pub sb: JournalSuperblock,
    pub fmt: LogFormat,
    /// Next log block to write, next transaction id.
    pub next: u64,
    pub tid: u32,
}

/// The journal inode's extents, from `debugfs ex <8>`.
fn journal_runs(img: &Path) -> Vec<(u64, u64, u64)> {
    let out = run_ok(
        Command::new("debugfs")
            .env("DEBUGFS_PAGER", "__none__")
            .args(["-R", "ex <8>"])
            .arg(img),
    );
    let mut runs = Vec::new();
    for l in out.lines().skip(1) {
        // " 0/ 0   1/  3     0 -     9    11 -    20     10 "
        let f: Vec<&str> = l.split_whitespace().collect();
        let dashes: Vec<usize> = (0..f.len()).filter(|&i| f[i] == "-").collect();
        if let [i1, i2] = dashes[..] {
            let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
            if let (Some(lo), Some(p), Some(n)) = (get(i1 - 1), get(i2 - 1), get(i2 + 2)) {
                runs.push((lo, p, n));
            }
        }
    }
    assert!(!runs.is_empty(), "no extents for the journal inode:\n{out}");
    runs
}

impl JournalWriter {
    /// The journal of `img` (an unmounted, clean filesystem of
    /// `block_size` blocks), its superblock rewritten with
    /// `compat`/`incompat` features.
    pub fn open(img: &Path, block_size: u32, compat: u32, incompat: u32) -> JournalWriter {
        let file = OpenOptions::new().read(true).write(true).open(img).unwrap();
        let runs = journal_runs(img);
        let mut w = JournalWriter {
            img: img.to_path_buf(),
            file,
            bs: block_size as usize,
            runs,
            sb: JournalSuperblock::read_from_bytes(&[0u8; format::SIZE]).unwrap(),
            fmt: LogFormat::new(0, 0, [0; 16]),
            next: 0,
            tid: 0,
        };
        let mut raw = [0u8; format::SIZE];
        w.file.read_exact_at(&mut raw, w.location(0)).unwrap();
        let mut sb = JournalSuperblock::read_from_bytes(&raw).unwrap();
        assert_eq!(sb.blocksize.get(), block_size);
        sb.feature_compat = compat.into();
        sb.feature_incompat = incompat.into();
        sb.checksum_type =
            if incompat & (feature::INCOMPAT_CSUM_V2 | feature::INCOMPAT_CSUM_V3) != 0 {
                format::CSUM_CRC32C
            } else {
                0
            };
        w.fmt = LogFormat::new(compat, incompat, sb.uuid);
        w.next = sb.first.get() as u64;
        w.sb = sb;
        w
    }

    pub fn block_size(&self) -> usize {
        self.bs
    }

    fn location(&self, n: u64) -> u64 {
        let bs = self.bs as u64;
        let &(lo, p, _) = self
            .runs
            .iter()
            .find(|&&(lo, _, len)| n >= lo && n < lo + len)
            .unwrap_or_else(|| panic!("log block {n} is not in the journal"));
        (p + n - lo) * bs
    }

    fn write_log(&mut self, block: &[u8]) {
        let at = self.location(self.next);
        self.file.write_all_at(block, at).unwrap();
        self.next += 1;
        if self.next >= self.sb.maxlen.get() as u64 {
            self.next = self.sb.first.get() as u64;
        }
    }

    /// Start the log at log block `start` with transaction `tid`.
    pub fn start_at(&mut self, start: u64, tid: u32) {
        self.next = start;
        self.tid = tid;
        self.sb.start = (start as u32).into();
        self.sb.sequence = tid.into();
    }

    /// Log `t` as the next transaction.
    pub fn log(&mut self, t: &Transaction) {
        let bs = self.bs;
        let tid = self.tid;
        let mut crc = !0u32;
        if !t.revokes.is_empty() || t.bad_revoke_count {
            let mut b = vec![0u8; bs];
            let rec = self.fmt.revoke_record_bytes();
            let mut at = REVOKE_HEADER_SIZE;
            for &r in &t.revokes {
                if rec == 8 {
                    b[at..at + 8].copy_from_slice(&r.to_be_bytes());
                } else {
                    b[at..at + 4].copy_from_slice(&(r as u32).to_be_bytes());
                }
                at += rec;
            }
            let count = if t.bad_revoke_count {
                bs as u32 + 4
            } else {
                at as u32
            };
            let h = RevokeHeader {
                header: Header::new(blocktype::REVOKE, tid),
                count: count.into(),
            };
            b[..REVOKE_HEADER_SIZE].copy_from_slice(h.as_bytes());
            if self.fmt.csum_v2_or_v3() {
                self.fmt.set_tail(&mut b);
            }
            self.write_log(&b);
        }
        let per = if t.tags_per_descriptor == 0 {
            (bs - HEADER_SIZE - TAG_UUID_SIZE - self.fmt.tail_bytes()) / self.fmt.tag_bytes()
        } else {
            t.tags_per_descriptor
        };
        let chunks: Vec<&[(u64, Vec<u8>)]> = t.blocks.chunks(per.max(1)).collect();
        for (ci, chunk) in chunks.iter().enumerate() {
            let mut d = vec![0u8; bs];
            d[..HEADER_SIZE].copy_from_slice(Header::new(blocktype::DESCRIPTOR, tid).as_bytes());
            let mut at = HEADER_SIZE;
            let mut data = Vec::new();
            for (i, (target, contents)) in chunk.iter().enumerate() {
                let mut block = contents.clone();
                block.resize(bs, 0);
                let mut flags = if i == 0 { 0 } else { tag_flag::SAME_UUID };
                if block[..4] == format::MAGIC.to_be_bytes() {
                    flags |= tag_flag::ESCAPE;
                }
                let last = i == chunk.len() - 1;
                if last && !(t.no_last_tag && ci == chunks.len() - 1) {
                    flags |= tag_flag::LAST_TAG;
                }
                let mut csum = self.fmt.block_checksum(tid, &{
                    let mut b = block.clone();
                    if flags & tag_flag::ESCAPE != 0 {
                        b[..4].fill(0);
                    }
                    b
                });
                if t.bad_tag_checksum && ci == 0 && i == 0 {
                    csum ^= 0x5a5a;
                }
                let n = self.fmt.tag_bytes();
                self.fmt
                    .write_tag(&mut d[at..at + n], PhysBlock(*target), flags, csum);
                at += n;
                if i == 0 {
                    d[at..at + TAG_UUID_SIZE].copy_from_slice(&self.sb.uuid);
                    at += TAG_UUID_SIZE;
                }
                if flags & tag_flag::ESCAPE != 0 {
                    block[..4].fill(0);
                }
                data.push(block);
            }
            if self.fmt.csum_v2_or_v3() {
                self.fmt.set_tail(&mut d);
            }
            crc = format::v1_update(crc, &d);
            self.write_log(&d);
            for b in &data {
                crc = format::v1_update(crc, b);
                self.write_log(b);
            }
        }
        if t.commit_time == u64::MAX {
            return;
        }
        let mut c = vec![0u8; bs];
        let mut h = CommitHeader::read_from_bytes(&[0u8; format::COMMIT_HEADER_SIZE]).unwrap();
        h.header = Header::new(blocktype::COMMIT, tid);
        h.commit_sec = t.commit_time.into();
        if self.fmt.csum_v1 {
            h.chksum_type = format::csum_type::CRC32;
            h.chksum_size = format::CRC32_CHKSUM_SIZE;
            h.chksum[0] = crc.into();
        }
        c[..format::COMMIT_HEADER_SIZE].copy_from_slice(h.as_bytes());
        if self.fmt.csum_v2_or_v3() {
            self.fmt.set_commit_checksum(&mut c);
        }
        self.tid = tid.wrapping_add(1);
        self.write_log(&c);
    }

    /// Log `t`, ending it as `commit` says.
    pub fn log_with(&mut self, t: &Transaction, commit: Commit) {
        match commit {
            Commit::Good => self.log(t),
            Commit::None => self.log(&Transaction {
                commit_time: u64::MAX,
                ..t.clone()
            }),
            Commit::BadChecksum => {
                self.log(t);
                // The commit block is the last one written: spoil its
                // checksum field.
                let at = self.location(if self.next == self.sb.first.get() as u64 {
                    self.sb.maxlen.get() as u64 - 1
                } else {
                    self.next - 1
                });
                let mut b = [0u8; 4];
                self.file.read_exact_at(&mut b, at + 16).unwrap();
                b[0] ^= 0xff;
                self.file.write_all_at(&b, at + 16).unwrap();
            }
        }
    }

    /// Write the journal superblock and mark the filesystem as needing
    /// recovery.
    pub fn finish(mut self) {
        if self.fmt.csum_v2_or_v3() {
            self.sb.checksum = 0.into();
            let raw: [u8; format::SIZE] = self.sb.as_bytes().try_into().unwrap();
            self.sb.checksum = format::checksum(&raw).into();
        }
        let at = self.location(0);
        self.file.write_all_at(self.sb.as_bytes(), at).unwrap();
        self.file.sync_all().unwrap();
        drop(self.file);
        run_ok(
            Command::new("debugfs")
                .args(["-w", "-R", "feature needs_recovery"])
                .arg(&self.img),
        );
    }
}

/// Physical blocks of `path` in `img` (`debugfs bmap`), `n` of them.
pub fn file_blocks(img: &Path, path: &str, n: u64) -> Vec<u64> {
    (0..n)
        .map(|i| {
            let out = run_ok(
                Command::new("debugfs")
                    .env("DEBUGFS_PAGER", "__none__")
                    .args(["-R", &format!("bmap {path} {i}")])
                    .arg(img),
            );
            out.trim()
                .parse()
                .unwrap_or_else(|_| panic!("bmap {path} {i}: {out}"))
        })
        .collect()
}

/// A fresh filesystem at `img` holding `/a` and `/b`, `blocks` blocks of
/// `'a'` and `'b'` each, made by `mke2fs -d` with `features`.
pub fn base_image(img: &Path, block_size: u32, features: &str, blocks: usize) {
    let src = img.with_extension("src");
    let _ = fs::remove_dir_all(&src);
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), vec![b'a'; blocks * block_size as usize]).unwrap();
    fs::write(src.join("b"), vec![b'b'; blocks * block_size as usize]).unwrap();
    run_ok(
        Command::new("mke2fs")
            .args([
                "-F",
                "-q",
                "-t",
                "ext4",
                "-b",
                &block_size.to_string(),
                "-O",
                features,
            ])
            .args(["-E", "lazy_itable_init=0,lazy_journal_init=0", "-d"])
            .arg(&src)
            .arg(img)
            .arg("16M"),
    );
    let _ = fs::remove_dir_all(&src);
}
