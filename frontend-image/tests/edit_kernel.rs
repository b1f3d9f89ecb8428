//! The edit commands against the kernel: seeded random edit sequences
//! (mkdir, put, rm, mv, ln, chmod, chown, touch, truncate, setfattr,
//! setfacl, write) applied by `ext4-image` to one copy of an image and by
//! the shell tools (coreutils, cp -a, setfattr, setfacl) on the kernel's
//! mount of another copy. Then `e2fsck -fn` must pass on ours, and the two
//! trees, both read through the kernel, must agree: names, types, modes,
//! owners, sizes, bytes, symlink targets, xattrs and ACLs, link counts,
//! and the times the sequence set explicitly (touch -d, put). Bases: an
//! image fresh from `mke2fs`, and one the kernel wrote a tree into.
//!
//! `EDIT_SEEDS=a,b,c EDIT_OPS=n` runs other sequences (a longer soak).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{cmd, fsck_clean, scratch};
use ext4_tests::oracle::{kernel_snapshot, kernel_write, mke2fs, KernelMount};
use ext4_tests::rng::Rng;
use ext4_tests::snapshot::{diff, format_diffs, Compare, Field, Kind, Snapshot, WalkOptions};
use ext4_tests::util::{built_binary, require_e2fsprogs, require_kernel_ext4, require_tool, sh};

const FIELDS: &[Field] = &[
    Field::Kind,
    Field::Mode,
    Field::Nlink,
    Field::Uid,
    Field::Gid,
    Field::Size,
    Field::Rdev,
    Field::Link,
    Field::Xattrs,
    Field::Content,
];

/// What the model knows of an inode.
#[derive(Clone, Debug)]
struct Node {
    kind: Kind,
    /// Times set explicitly and not changed since (compared).
    atime: Option<i64>,
    mtime: Option<i64>,
    xattrs: BTreeSet<String>,
}

/// The tree as the sequence made it: paths relative to the root ("" is
/// the root) to nodes.
#[derive(Default)]
struct Model {
    paths: BTreeMap<String, usize>,
    nodes: Vec<Node>,
}

fn parent_of(p: &str) -> &str {
    p.rfind('/').map_or("", |i| &p[..i])
}

fn join(d: &str, n: &str) -> String {
    if d.is_empty() {
        n.to_string()
    } else {
        format!("{d}/{n}")
    }
}

impl Model {
    /// The tree seen through a mount, all times unknown.
    fn load(snap: &Snapshot) -> Model {
        let mut m = Model::default();
        let mut by_ino = HashMap::new();
        for (p, e) in &snap.entries {
            let p = String::from_utf8_lossy(p)
                .trim_start_matches('/')
                .to_string();
            let id = *by_ino.entry(e.ino).or_insert_with(|| {
                m.nodes.push(Node {
                    kind: e.kind,
                    atime: None,
                    mtime: None,
                    xattrs: e
                        .xattrs
                        .as_ref()
                        .map(|x| {
                            x.keys()
                                .map(|k| String::from_utf8_lossy(k).into_owned())
                                .filter(|k| k.starts_with("user."))
                                .collect()
                        })
                        .unwrap_or_default(),
                });
                m.nodes.len() - 1
            });
            m.paths.insert(p, id);
        }
        m
    }

    fn kind(&self, p: &str) -> Option<Kind> {
        self.paths.get(p).map(|&i| self.nodes[i].kind)
    }

    fn node(&mut self, p: &str) -> &mut Node {
        let i = self.paths[p];
        &mut self.nodes[i]
    }

    fn dirs(&self) -> Vec<String> {
        self.paths
            .iter()
            .filter(|(p, &i)| self.nodes[i].kind == Kind::Dir && !p.starts_with("lost+found"))
            .map(|(p, _)| p.clone())
            .collect()
    }

    fn of_kind(&self, kinds: &[Kind]) -> Vec<String> {
        self.paths
            .iter()
            .filter(|(p, &i)| {
                kinds.contains(&self.nodes[i].kind) && !p.is_empty() && !p.starts_with("lost+found")
            })
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// A directory's entries changed: its mtime is now.
    fn touched_dir(&mut self, d: &str) {
        self.node(d).mtime = None;
    }

    fn add(&mut self, p: &str, node: Node) {
        self.touched_dir(parent_of(p));
        self.nodes.push(node);
        self.paths.insert(p.to_string(), self.nodes.len() - 1);
    }

    fn remove_tree(&mut self, p: &str) {
        self.touched_dir(parent_of(p));
        let prefix = format!("{p}/");
        self.paths.retain(|q, _| q != p && !q.starts_with(&prefix));
    }

    fn rename(&mut self, from: &str, to: &str) {
        self.remove_tree_keep(to);
        let prefix = format!("{from}/");
        let moved: Vec<(String, usize)> = self
            .paths
            .iter()
            .filter(|(q, _)| *q == from || q.starts_with(&prefix))
            .map(|(q, &i)| (q.clone(), i))
            .collect();
        for (q, i) in moved {
            self.paths.remove(&q);
            self.paths.insert(format!("{to}{}", &q[from.len()..]), i);
        }
        self.touched_dir(parent_of(from));
        self.touched_dir(parent_of(to));
        if self.kind(to) == Some(Kind::Dir) {
            // Its ".." entry changed.
            self.touched_dir(to);
        }
    }

    fn remove_tree_keep(&mut self, p: &str) {
        let prefix = format!("{p}/");
        self.paths.retain(|q, _| q != p && !q.starts_with(&prefix));
    }

    /// A file to write: a new one in `dir` (one time in `one_in`, or when
    /// there is none) or one of `files`, whose mtime the write then sets.
    fn new_or_existing_file(
        &mut self,
        rng: &mut Rng,
        dir: &str,
        files: &[String],
        one_in: u64,
    ) -> String {
        if rng.below(one_in) == 0 || files.is_empty() {
            let p = self.fresh_name(rng, dir);
            self.add(
                &p,
                Node {
                    kind: Kind::File,
                    atime: None,
                    mtime: None,
                    xattrs: BTreeSet::new(),
                },
            );
            p
        } else {
            let p = files[rng.index(files.len())].clone();
            self.node(&p).mtime = None;
            p
        }
    }

    fn fresh_name(&self, rng: &mut Rng, dir: &str) -> String {
        const A: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789_-.";
        loop {
            let len = if rng.below(20) == 0 {
                100 + rng.below(156) as usize
            } else {
                1 + rng.below(12) as usize
            };
            let mut n: String = (0..len).map(|_| A[rng.index(A.len())] as char).collect();
            if n.starts_with('-') || n.starts_with('.') {
                n.insert(0, 'x');
                n.truncate(255);
            }
            let p = join(dir, &n);
            if !self.paths.contains_key(&p) {
                return p;
            }
        }
    }
}

/// One edit, as both sides spell it.
struct Op {
    /// Arguments of `ext4-image IMAGE ...`.
    ours: Vec<String>,
    /// A shell command run in the mount's root.
    shell: String,
    /// Standard input of both (`write`).
    stdin: Option<PathBuf>,
    /// Put: reset the source's times first (reading it changes atimes).
    put: bool,
}

fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The host tree `put` copies, with a script that resets its times.
fn put_source(dir: &Path) -> (PathBuf, Vec<String>) {
    let src = dir.join("src");
    let _ = fs::remove_dir_all(&src);
    sh(dir, "umask 022; mkdir -p src/sub/deep; printf 'one\\n' > src/f1; \
        dd if=/dev/urandom of=src/f2 bs=4096 seek=256 count=1 status=none; \
        head -c 70000 /dev/urandom > src/sub/big; ln src/f1 src/sub/link; ln -s ../f1 src/sub/sl; \
        ln -s a-long-target-name-that-does-not-fit-in-the-inode-0123456789-0123456789 src/lsl; \
        mkfifo src/sub/fifo; chmod 640 src/f1; chmod 2755 src/sub; chmod 4711 src/sub/big; \
        chown 1234:5678 src/f1 src/sub/deep; setfattr -n user.s -v 1 src/f1; \
        setfattr -n user.big -v 0x$(head -c 300 /dev/zero | od -v -An -tx1 | tr -d ' \\n') src/sub/big; \
        setfacl -m u:1000:rx,g:100:r src/sub/big; setfacl -m d:u:1000:rwx,u:1001:rwx src/sub/deep");
    let mut reset = Vec::new();
    let mut paths = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(p) = stack.pop() {
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
        paths.push(p);
    }
    // Deepest first, so a directory's times are set after its entries'.
    paths.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in paths.iter().enumerate() {
        reset.push(format!(
            "touch -h -a -d @{} {q}; touch -h -m -d @{} {q}",
            1_600_000_000 + i as i64 * 7,
            1_500_000_000 + i as i64 * 11,
            q = q(p.to_str().unwrap())
        ));
    }
    (src, reset)
}

fn reset_times(reset: &[String]) {
    sh(Path::new("/"), &reset.join("\n"));
}

/// A random sequence of `n` edits that all succeed on both sides, with the
/// model following along.
fn sequence(
    rng: &mut Rng,
    m: &mut Model,
    n: usize,
    src: &Path,
    data: &Path,
    reset: &[String],
) -> Vec<Op> {
    let mut ops = Vec::new();
    let ids = [0u32, 1000, 1234, 65534];
    while ops.len() < n {
        let dirs = m.dirs();
        let files = m.of_kind(&[Kind::File]);
        let any = m.of_kind(&[Kind::File, Kind::Dir, Kind::Symlink, Kind::Fifo]);
        let d = dirs[rng.index(dirs.len())].clone();
        let abs = |p: &str| format!("/{p}");
        let rel = |p: &str| q(&format!("./{p}"));
        let op = match rng.below(21) {
            0 => {
                let p = m.fresh_name(rng, &d);
                if rng.below(3) == 0 {
                    let p2 = m.fresh_name(rng, &p);
                    m.add(
                        &p,
                        Node {
                            kind: Kind::Dir,
                            atime: None,
                            mtime: None,
                            xattrs: BTreeSet::new(),
                        },
                    );
                    m.add(
                        &p2,
                        Node {
                            kind: Kind::Dir,
                            atime: None,
                            mtime: None,
                            xattrs: BTreeSet::new(),
                        },
                    );
                    Op::new(
                        vec!["mkdir".into(), "-p".into(), abs(&p2)],
                        format!("mkdir -p {}", rel(&p2)),
                    )
                } else {
                    m.add(
                        &p,
                        Node {
                            kind: Kind::Dir,
                            atime: None,
                            mtime: None,
                            xattrs: BTreeSet::new(),
                        },
                    );
                    Op::new(vec!["mkdir".into(), abs(&p)], format!("mkdir {}", rel(&p)))
                }
            }
            1 | 2 => {
                // put: the whole tree or one of its objects.
                let choices = ["", "f1", "f2", "sub", "sub/big", "lsl", "sub/deep"];
                let pick = choices[rng.index(choices.len())];
                let from = if pick.is_empty() {
                    src.to_path_buf()
                } else {
                    src.join(pick)
                };
                let p = m.fresh_name(rng, &d);
                reset_times(reset);
                let dirs = add_host_tree(m, &from, &p);
                let f = from.to_str().unwrap().to_string();
                // cp -a keeps a setgid bit a copied directory inherits from
                // its new parent (it sets the source's ACL, not its mode);
                // put gives the source's mode exactly, as mkfs --from does:
                // the shell side sets the copied directories' modes after.
                let fix: String = dirs
                    .iter()
                    .map(|(d, mode)| format!("; chmod 0{mode:04o} {}", rel(d)))
                    .collect();
                let mut o = Op::new(
                    vec!["put".into(), "-q".into(), f.clone(), abs(&p)],
                    format!("cp -a {} {}{fix}", q(&f), rel(&p)),
                );
                o.put = true;
                o
            }
            3 if !any.is_empty() => {
                let p = any[rng.index(any.len())].clone();
                if m.kind(&p) == Some(Kind::Dir) {
                    m.remove_tree(&p);
                    Op::new(
                        vec!["rm".into(), "-r".into(), abs(&p)],
                        format!("rm -r {}", rel(&p)),
                    )
                } else {
                    m.remove_tree(&p);
                    Op::new(vec!["rm".into(), abs(&p)], format!("rm {}", rel(&p)))
                }
            }
            4 if !any.is_empty() => {
                let from = any[rng.index(any.len())].clone();
                // Never into itself.
                if d == from || d.starts_with(&format!("{from}/")) {
                    continue;
                }
                let to = if rng.below(4) == 0
                    && m.kind(&from) == Some(Kind::File)
                    && !files.is_empty()
                {
                    // Over an existing file.
                    let t = files[rng.index(files.len())].clone();
                    // Not over itself or another of its names (mv(1)
                    // refuses, rename(2) does nothing).
                    if t == from || m.paths[&t] == m.paths[&from] {
                        continue;
                    }
                    t
                } else {
                    m.fresh_name(rng, &d)
                };
                m.rename(&from, &to);
                Op::new(
                    vec!["mv".into(), abs(&from), abs(&to)],
                    format!("mv -T {} {}", rel(&from), rel(&to)),
                )
            }
            5 if !files.is_empty() => {
                let t = files[rng.index(files.len())].clone();
                let p = m.fresh_name(rng, &d);
                let id = m.paths[&t];
                m.touched_dir(parent_of(&p));
                m.paths.insert(p.clone(), id);
                Op::new(
                    vec!["ln".into(), abs(&t), abs(&p)],
                    format!("ln -P {} {}", rel(&t), rel(&p)),
                )
            }
            6 => {
                let p = m.fresh_name(rng, &d);
                let target = if rng.below(3) == 0 {
                    "t".repeat(1 + rng.below(200) as usize)
                } else {
                    format!("../x{}", rng.below(100))
                };
                m.add(
                    &p,
                    Node {
                        kind: Kind::Symlink,
                        atime: None,
                        mtime: None,
                        xattrs: BTreeSet::new(),
                    },
                );
                Op::new(
                    vec!["ln".into(), "-s".into(), target.clone(), abs(&p)],
                    format!("ln -s {} {}", q(&target), rel(&p)),
                )
            }
            7 | 17 | 18 => {
                let cands = m.of_kind(&[Kind::File, Kind::Dir]);
                if cands.is_empty() {
                    continue;
                }
                let p = cands[rng.index(cands.len())].clone();
                const MODES: &[&str] = &[
                    "755",
                    "644",
                    "4755",
                    "2755",
                    "6711",
                    "1777",
                    "2644",
                    "0600",
                    "00750",
                    "u+s",
                    "g+s",
                    "u-x,g+w",
                    "o=rX",
                    "a-w",
                    "+t",
                    "g-s",
                    "ug=rwx,o=",
                    "=r",
                ];
                let mode = MODES[rng.index(MODES.len())];
                if rng.below(2) == 0 {
                    // chmod(1) -R passes over the symlinks in the tree (a
                    // file is a tree of one).
                    Op::new(
                        vec!["chmod".into(), "-R".into(), mode.into(), abs(&p)],
                        format!("chmod -R {mode} {}", rel(&p)),
                    )
                } else {
                    Op::new(
                        vec!["chmod".into(), mode.into(), abs(&p)],
                        format!("chmod {mode} {}", rel(&p)),
                    )
                }
            }
            8 | 19 | 20 if !any.is_empty() => {
                let p = any[rng.index(any.len())].clone();
                let (u, g) = (ids[rng.index(4)], ids[rng.index(4)]);
                let owner = match rng.below(3) {
                    0 => format!("{u}"),
                    1 => format!(":{g}"),
                    _ => format!("{u}:{g}"),
                };
                if m.kind(&p) != Some(Kind::Symlink) && rng.below(2) == 0 {
                    Op::new(
                        vec!["chown".into(), "-R".into(), owner.clone(), abs(&p)],
                        format!("chown -R {owner} {}", rel(&p)),
                    )
                } else {
                    Op::new(
                        vec!["chown".into(), owner.clone(), abs(&p)],
                        format!("chown -h {owner} {}", rel(&p)),
                    )
                }
            }
            9 | 10 => {
                // touch: an existing object (with a time) or new files.
                // Now and then a time past what the records hold (before
                // 1901, after 2446): the kernel clamps it.
                let t = match rng.below(8) {
                    0 => 20_000_000_000,
                    1 => -3_000_000_000,
                    _ => 1_000_000_000 + rng.below(1_000_000_000) as i64,
                };
                let cands = m.of_kind(&[Kind::File, Kind::Dir, Kind::Symlink]);
                if rng.below(2) == 0 && !cands.is_empty() {
                    let p = cands[rng.index(cands.len())].clone();
                    let which = ["", "-a", "-m"][rng.index(3)];
                    // Now and then the times of another object (touch -r;
                    // -h: the reference is not followed either).
                    let reference = (rng.below(4) == 0)
                        .then(|| cands[rng.index(cands.len())].clone())
                        .filter(|r| *r != p);
                    let (ta, tm) = match &reference {
                        Some(r) => {
                            let n = m.node(r);
                            (n.atime, n.mtime)
                        }
                        None => (Some(t), Some(t)),
                    };
                    let node = m.node(&p);
                    if which != "-m" {
                        node.atime = ta;
                    }
                    if which != "-a" {
                        node.mtime = tm;
                    }
                    let h = if m.kind(&p) == Some(Kind::Symlink) || reference.is_some() {
                        "-h "
                    } else {
                        ""
                    };
                    let mut ours = vec!["touch".to_string()];
                    if !which.is_empty() {
                        ours.push(which.into());
                    }
                    let (when_ours, when_shell) = match &reference {
                        Some(r) => (vec!["-r".into(), abs(r)], format!("-r {}", rel(r))),
                        None => (vec!["-d".into(), format!("@{t}")], format!("-d @{t}")),
                    };
                    ours.extend(when_ours);
                    ours.push(abs(&p));
                    Op::new(ours, format!("touch {h}{which} {when_shell} {}", rel(&p)))
                } else {
                    // Many new files in one directory (a directory of
                    // several blocks, a hash tree).
                    let count = if rng.below(4) == 0 {
                        150
                    } else {
                        1 + rng.below(5) as usize
                    };
                    let mut ps = Vec::new();
                    for _ in 0..count {
                        let p = m.fresh_name(rng, &d);
                        m.add(
                            &p,
                            Node {
                                kind: Kind::File,
                                atime: Some(t),
                                mtime: Some(t),
                                xattrs: BTreeSet::new(),
                            },
                        );
                        ps.push(p);
                    }
                    let mut ours = vec!["touch".to_string(), "--timestamp".into(), t.to_string()];
                    ours.extend(ps.iter().map(|p| abs(p)));
                    let shell = format!(
                        "touch -d @{t} {}",
                        ps.iter().map(|p| rel(p)).collect::<Vec<_>>().join(" ")
                    );
                    Op::new(ours, shell)
                }
            }
            11 => {
                let n =
                    [0u64, 1, 4095, 4096, 10_000, 1 << 20, 3 << 20][rng.index(7)] + rng.below(3);
                // truncate(1)'s relative sizes now and then.
                let size = match rng.below(10) {
                    0 => format!("+{n}"),
                    1 => format!("-{n}"),
                    2 => format!("<{n}"),
                    3 => format!(">{n}"),
                    4 => format!("/{}", n.max(1)),
                    5 => format!("%{}", n.max(1)),
                    _ => n.to_string(),
                };
                let p = m.new_or_existing_file(rng, &d, &files, 3);
                Op::new(
                    vec!["truncate".into(), "-s".into(), size.clone(), abs(&p)],
                    format!("truncate -s '{size}' {}", rel(&p)),
                )
            }
            12 | 13 => {
                let cands = m.of_kind(&[Kind::File, Kind::Dir]);
                if cands.is_empty() {
                    continue;
                }
                let p = cands[rng.index(cands.len())].clone();
                let have: Vec<String> = m.node(&p).xattrs.iter().cloned().collect();
                if !have.is_empty() && rng.below(3) == 0 {
                    let n = have[rng.index(have.len())].clone();
                    m.node(&p).xattrs.remove(&n);
                    Op::new(
                        vec!["setfattr".into(), "-x".into(), n.clone(), abs(&p)],
                        format!("setfattr -x {n} {}", rel(&p)),
                    )
                } else {
                    // Small enough for a 1 KiB block holding them all.
                    let n = format!("user.k{}", rng.below(3));
                    let v = if rng.below(4) == 0 {
                        format!("0x{}", "ab".repeat(1 + rng.below(150) as usize))
                    } else {
                        format!("v{}", rng.below(1000))
                    };
                    m.node(&p).xattrs.insert(n.clone());
                    Op::new(
                        vec![
                            "setfattr".into(),
                            "-n".into(),
                            n.clone(),
                            "-v".into(),
                            v.clone(),
                            abs(&p),
                        ],
                        format!("setfattr -n {n} -v {v} {}", rel(&p)),
                    )
                }
            }
            14 | 15 => {
                let cands = m.of_kind(&[Kind::File, Kind::Dir]);
                if cands.is_empty() {
                    continue;
                }
                let p = cands[rng.index(cands.len())].clone();
                let dir = m.kind(&p) == Some(Kind::Dir);
                let id = [1000u32, 1001, 100, 2000][rng.index(4)];
                let perm = ["rwx", "r-x", "r--", "-w-", "---", "6"][rng.index(6)];
                let args: Vec<String> = match rng.below(if dir { 8 } else { 5 }) {
                    0 | 1 => vec!["-m".into(), format!("u:{id}:{perm}")],
                    2 => vec!["-m".into(), format!("g:{id}:{perm},u::rwx")],
                    3 => vec!["-x".into(), format!("u:{id}")],
                    4 => vec!["-b".into()],
                    5 => vec!["-m".into(), format!("d:u:{id}:{perm},d:g::r-x")],
                    6 => vec!["-k".into()],
                    _ => vec!["-m".into(), format!("m::{perm}")],
                };
                let mut ours = vec!["setfacl".to_string()];
                ours.extend(args.iter().cloned());
                ours.push(abs(&p));
                Op::new(ours, format!("setfacl {} {}", args.join(" "), rel(&p)))
            }
            _ => {
                // write: new or existing file, from a data file.
                let len = [0usize, 5, 4096, 60_000, 300_000][rng.index(5)] + rng.index(100);
                let mut bytes = vec![0u8; len];
                for b in bytes.iter_mut() {
                    *b = rng.next_u64() as u8;
                }
                let f = data.join(format!("w{}", ops.len()));
                fs::write(&f, &bytes).unwrap();
                let p = m.new_or_existing_file(rng, &d, &files, 2);
                let mut o = Op::new(vec!["write".into(), abs(&p)], format!("cat > {}", rel(&p)));
                o.stdin = Some(f);
                o
            }
        };
        ops.push(op);
    }
    ops
}

impl Op {
    fn new(ours: Vec<String>, shell: String) -> Op {
        Op {
            ours,
            shell,
            stdin: None,
            put: false,
        }
    }
}

/// The model's view of a host tree put at `p`: every object with its
/// times (those of the reset script), hard links within it kept.
fn add_host_tree(m: &mut Model, from: &Path, p: &str) -> Vec<(String, u32)> {
    let mut dirs = Vec::new();
    m.touched_dir(parent_of(p));
    let mut seen: HashMap<(u64, u64), usize> = HashMap::new();
    let mut stack = vec![(from.to_path_buf(), p.to_string())];
    while let Some((h, at)) = stack.pop() {
        let md = fs::symlink_metadata(&h).unwrap();
        let kind = Kind::from_mode(md.mode());
        if kind == Kind::Dir {
            dirs.push((at.clone(), md.mode() & 0o7777));
            for e in fs::read_dir(&h).unwrap() {
                let e = e.unwrap();
                stack.push((e.path(), join(&at, &e.file_name().to_string_lossy())));
            }
        }
        let key = (md.dev(), md.ino());
        let id = match seen.get(&key) {
            Some(&i) if kind != Kind::Dir => i,
            _ => {
                m.nodes.push(Node {
                    kind,
                    atime: Some(md.atime()),
                    mtime: Some(md.mtime()),
                    // The user xattrs of the source, by name.
                    xattrs: list_user_xattrs(&h),
                });
                seen.insert(key, m.nodes.len() - 1);
                m.nodes.len() - 1
            }
        };
        m.paths.insert(at, id);
    }
    dirs
}

fn list_user_xattrs(p: &Path) -> BTreeSet<String> {
    let o = Command::new("getfattr")
        .args(["-h", "--absolute-names", "-m", "^user\\."])
        .arg(p)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.starts_with("user."))
        .map(|l| l.split('=').next().unwrap().to_string())
        .collect()
}

fn umask022(c: &mut Command) {
    // SAFETY: umask is async-signal-safe.
    unsafe {
        c.pre_exec(|| {
            libc::umask(0o022);
            Ok(())
        });
    }
}

fn snapshot(img: &Path) -> Snapshot {
    let opts = WalkOptions {
        content: true,
        data_map: false,
        ioctls: false,
    };
    kernel_snapshot(img, opts)
}

/// Run one sequence from `base`; the differences found, if any.
fn run_sequence(
    base: &Path,
    label: &str,
    seed: u64,
    n: usize,
    dir: &Path,
    src: &Path,
    reset: &[String],
) -> Option<String> {
    let ours = dir.join(format!("{label}-{seed}-ours.img"));
    let theirs = dir.join(format!("{label}-{seed}-kernel.img"));
    let data = dir.join(format!("{label}-{seed}-data"));
    fs::create_dir_all(&data).unwrap();
    for img in [&ours, &theirs] {
        assert!(cmd("cp")
            .arg("--sparse=always")
            .arg(base)
            .arg(img)
            .status()
            .unwrap()
            .success());
    }
    let mut model = Model::load(&snapshot(base));
    let mut rng = Rng::new(seed);
    let ops = sequence(&mut rng, &mut model, n, src, &data, reset);
    let log: String = ops
        .iter()
        .enumerate()
        .map(|(i, o)| format!("{i}: ext4-image {:?}\n{i}: $ {}\n", o.ours, o.shell))
        .collect();
    let log_path = dir.join(format!("{label}-{seed}-ops.txt"));
    fs::write(&log_path, log).unwrap();
    let bin = built_binary("ext4-image", "ext4-image");
    for (i, op) in ops.iter().enumerate() {
        if op.put {
            reset_times(reset);
        }
        let mut c = Command::new(&bin);
        c.arg(&ours).args(&op.ours);
        run_step(
            c,
            op.stdin.as_deref(),
            format_args!("{label} seed {seed} op {i}: ext4-image {:?}", op.ours),
        );
    }
    fsck_clean(
        &ours,
        &format!(
            "{label} seed {seed} after {} edits by ext4-image",
            ops.len()
        ),
    );
    {
        let m = KernelMount::mount(&theirs, false, "noatime").expect("kernel mount rw");
        for (i, op) in ops.iter().enumerate() {
            if op.put {
                reset_times(reset);
            }
            let mut c = Command::new("sh");
            c.arg("-ec").arg(&op.shell).current_dir(m.path());
            run_step(
                c,
                op.stdin.as_deref(),
                format_args!("{label} seed {seed} op {i}: kernel side `{}`", op.shell),
            );
        }
        m.unmount().expect("unmount");
    }
    fsck_clean(&theirs, &format!("{label} seed {seed}: the kernel's copy"));
    let a = snapshot(&theirs);
    let b = snapshot(&ours);
    let cmp = Compare {
        fields: FIELDS,
        ignore_dir_size: true,
        ignore_paths: &[],
    };
    let mut d = diff(&a, &b, &cmp);
    // The times the sequence set and nothing changed since; the kernel
    // clamps one the records cannot hold (to 2038 with 128-byte inodes,
    // else to 2446; to 1901).
    let set_as = |sec: i64, t: i64| {
        sec == t
            || (t < i32::MIN as i64 && sec == i32::MIN as i64)
            || (t > i32::MAX as i64
                && [i32::MAX as i64, (1 << 34) - 1 + i32::MIN as i64].contains(&sec))
    };
    let mut times = Vec::new();
    let mut checked = 0;
    for (p, &i) in &model.paths {
        let node = &model.nodes[i];
        let key = format!("/{p}");
        let key = if p.is_empty() { "/".to_string() } else { key };
        let (Some(ka), Some(ea)) = (a.get(&key), b.get(&key)) else {
            continue;
        };
        if let Some(t) = node.mtime {
            checked += 1;
            if !set_as(ka.mtime.sec, t) || ea.mtime != ka.mtime {
                times.push(format!(
                    "{key}: mtime set to {t}: kernel {} ext4-image {}",
                    ka.mtime, ea.mtime
                ));
            }
        }
        if let Some(t) = node.atime {
            checked += 1;
            if !set_as(ka.atime.sec, t) || ea.atime != ka.atime {
                times.push(format!(
                    "{key}: atime set to {t}: kernel {} ext4-image {}",
                    ka.atime, ea.atime
                ));
            }
        }
    }
    let _ = fs::remove_dir_all(&data);
    eprintln!(
        "{label} seed {seed}: {} edits, {} paths, {checked} explicit times compared",
        ops.len(),
        a.entries.len()
    );
    if d.is_empty() && times.is_empty() {
        let _ = fs::remove_file(&ours);
        let _ = fs::remove_file(&theirs);
        return None;
    }
    d.truncate(40);
    Some(format!(
        "{}{}\n(images kept: {} {}; the edits: {})",
        format_diffs(
            &format!("{label} seed {seed}: kernel (expected) vs ext4-image"),
            &d,
            40
        ),
        times.join("\n"),
        theirs.display(),
        ours.display(),
        log_path.display()
    ))
}

fn seeds() -> (Vec<u64>, usize) {
    let seeds = std::env::var("EDIT_SEEDS")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2, 3]);
    let n = std::env::var("EDIT_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(70);
    (seeds, n)
}

fn require() -> bool {
    require_e2fsprogs()
        && require_kernel_ext4()
        && require_tool("setfacl", "acl")
        && require_tool("setfattr", "attr")
}

#[test]
fn edits_on_a_mke2fs_image_as_on_the_kernel() {
    if !require() {
        return;
    }
    let dir = scratch("edit-kernel").join("mke2fs");
    fs::create_dir_all(&dir).unwrap();
    let (src, reset) = put_source(&dir);
    let (seeds, n) = seeds();
    let mut fails = Vec::new();
    // ext4 with every seed; the other rows (inline data in 1 KiB blocks,
    // ext2 without a journal, ext3) with one seed of their own each.
    for (k, (row, args, first_only)) in [
        ("ext4", &["-t", "ext4", "-b", "4096"][..], false),
        (
            "ext4-inline",
            &["-t", "ext4", "-b", "1024", "-O", "inline_data"][..],
            true,
        ),
        ("ext2", &["-t", "ext2", "-b", "4096"][..], true),
        ("ext3", &["-t", "ext3", "-b", "1024"][..], true),
    ]
    .into_iter()
    .enumerate()
    {
        let base = dir.join(format!("{row}.img"));
        let o = cmd("mke2fs")
            .args(["-q", "-F", "-E", "root_owner=0:0"])
            .args(args)
            .arg(&base)
            .arg("96M")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "mke2fs: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let seeds = if first_only { &seeds[..1] } else { &seeds[..] };
        for &s in seeds {
            // A seed of the row's own.
            let seed = s + 10 * k as u64;
            fails.extend(run_sequence(&base, row, seed, n, &dir, &src, &reset));
        }
        let _ = fs::remove_file(&base);
    }
    assert!(fails.is_empty(), "{}", fails.join("\n\n"));
}

#[test]
fn edits_on_a_kernel_written_image_as_on_the_kernel() {
    if !require() {
        return;
    }
    let dir = scratch("edit-kernel").join("kernel");
    fs::create_dir_all(&dir).unwrap();
    let (src, reset) = put_source(&dir);
    let base = dir.join("base.img");
    // 1 KiB blocks, a tree the kernel wrote: directories of several
    // blocks, xattrs, ACLs, hard links, a big file.
    mke2fs(&base, &["-t", "ext4", "-b", "1024"], None, "96M");
    kernel_write(
        &base,
        "umask 022; mkdir -p etc/conf.d usr/lib home/u; \
         for i in $(seq 1 120); do echo $i > etc/conf.d/file$i; done; \
         head -c 2000000 /dev/urandom > usr/lib/big; ln usr/lib/big home/u/big; \
         ln -s ../usr/lib/big home/u/sl; setfattr -n user.a -v 1 etc/conf.d/file7; \
         setfacl -m u:1000:rwx,d:u:1000:rx home/u; chmod 2775 home/u; chown -R 1000:1000 home/u; \
         touch -d @1234567890 etc/conf.d/file9",
    );
    let (seeds, n) = seeds();
    let fails: Vec<String> = seeds
        .iter()
        .filter_map(|&s| run_sequence(&base, "kernel-written", s + 100, n, &dir, &src, &reset))
        .collect();
    assert!(fails.is_empty(), "{}", fails.join("\n\n"));
}

/// Run one edit step (standard input from `stdin`, umask 022); it must
/// succeed.
fn run_step(mut c: Command, stdin: Option<&std::path::Path>, what: std::fmt::Arguments<'_>) {
    c.stdin(match stdin {
        Some(f) => Stdio::from(fs::File::open(f).unwrap()),
        None => Stdio::null(),
    });
    umask022(&mut c);
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}
