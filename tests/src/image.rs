//! Images built with `mke2fs -d` from generated trees, across the feature
//! matrix, cached under `target/ext4-test-images/` and shared by every test
//! (a file lock per tree and per image keeps parallel test processes and
//! threads from racing; the cache key covers the spec, the generator
//! version and the mke2fs version, so a change rebuilds).
//!
//! Build steps per image, each one an outside tool:
//! 1. `mke2fs -F -q -t FS -O FEATURES -b BS [-C CS] -I ISZ -N INODES -d SRC`;
//! 2. `e2fsck -fyD` where the spec asks for htree directories (mke2fs -d
//!    makes linear ones);
//! 3. a kernel read-write mount creating the late nodes and setting the
//!    large xattrs (debugfs `ea_set` where the kernel cannot mount the
//!    block size);
//! 4. `debugfs -w sif` setting every planned atime/mtime to the nanosecond
//!    (mke2fs -d keeps 32-bit seconds only);
//! 5. `e2fsck -fn` must be clean.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use crate::oracle::{
    assert_fsck_clean, debugfs_script, dq, e2fsck_index_dirs, mke2fs_version, KernelMount,
};
use crate::snapshot::{host_snapshot, Snapshot, WalkOptions};
use crate::tree::{
    self, apply_nodes, materialize, NodeKind, Plan, Profile, Time, TreeParams, GENERATOR_VERSION,
};
use crate::util::{cache_dir, fnv64, is_build_of, page_size, run_ok, FileLock};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageSpec {
    pub name: &'static str,
    /// `-t`: ext2, ext3 or ext4.
    pub fs_type: &'static str,
    /// `-O` list, empty for the defaults of `fs_type`.
    pub features: &'static str,
    pub block_size: u32,
    /// `-C` for bigalloc.
    pub cluster_size: Option<u32>,
    pub inode_size: u32,
    pub size_mib: u64,
    pub profile: Profile,
    /// Rebuild directories as htrees with `e2fsck -fyD` after mke2fs.
    pub rehash_dirs: bool,
}

const fn spec(
    name: &'static str,
    fs_type: &'static str,
    features: &'static str,
    block_size: u32,
) -> ImageSpec {
    ImageSpec {
        name,
        fs_type,
        features,
        block_size,
        cluster_size: None,
        inode_size: 256,
        size_mib: 256,
        profile: Profile::Small,
        rehash_dirs: true,
    }
}

/// The feature matrix (small profile).
pub const MATRIX: &[ImageSpec] = &[
    spec("ext2", "ext2", "", 4096),
    ImageSpec {
        inode_size: 128,
        rehash_dirs: false,
        ..spec("ext2-1k-128", "ext2", "", 1024)
    },
    spec("ext3", "ext3", "", 4096),
    spec("ext4", "ext4", "", 4096),
    spec("ext4-64bit-csum", "ext4", "64bit,metadata_csum", 4096),
    spec(
        "ext4-legacy",
        "ext4",
        "^64bit,^metadata_csum,uninit_bg",
        4096,
    ),
    spec("ext4-inline", "ext4", "inline_data", 4096),
    ImageSpec {
        cluster_size: Some(16384),
        ..spec("ext4-bigalloc", "ext4", "bigalloc", 4096)
    },
    ImageSpec {
        rehash_dirs: false,
        ..spec("ext4-noextent", "ext4", "^extent,^64bit", 4096)
    },
    spec("ext4-1k", "ext4", "", 1024),
    ImageSpec {
        size_mib: 512,
        ..spec("ext4-64k", "ext4", "", 65536)
    },
    spec("ext4-largedir", "ext4", "large_dir", 4096),
];

/// The big-profile image: 50,000-entry directory, 20 MiB file.
pub const BIG: ImageSpec = ImageSpec {
    profile: Profile::Big,
    size_mib: 1024,
    ..spec("ext4-big", "ext4", "", 4096)
};

/// Calls `$callback! { module => "image name", ... }` with every image of
/// [`MATRIX`] and [`BIG`], so per-image test lists stay in step with them.
#[macro_export]
macro_rules! with_matrix_images {
    ($callback:ident) => {
        $callback! {
            ext2 => "ext2",
            ext2_1k_128 => "ext2-1k-128",
            ext3 => "ext3",
            ext4 => "ext4",
            ext4_64bit_csum => "ext4-64bit-csum",
            ext4_legacy => "ext4-legacy",
            ext4_inline => "ext4-inline",
            ext4_bigalloc => "ext4-bigalloc",
            ext4_noextent => "ext4-noextent",
            ext4_1k => "ext4-1k",
            ext4_64k => "ext4-64k",
            ext4_largedir => "ext4-largedir",
            ext4_big => "ext4-big",
        }
    };
}

pub fn matrix_spec(name: &str) -> &'static ImageSpec {
    MATRIX
        .iter()
        .chain(std::iter::once(&BIG))
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no image spec {name}"))
}

impl ImageSpec {
    pub fn tree_params(&self) -> TreeParams {
        let mut p = TreeParams::new(self.profile, self.block_size);
        // mke2fs 1.47.0 -d with inline_data drops a file's trailing hole
        // (the size is cut back to the last data block), so such a tree
        // would not be the image's content.
        p.trailing_holes = !self.features.split(',').any(|f| f == "inline_data");
        p
    }

    /// `mke2fs -F -q` making this spec's filesystem with `inodes` inodes
    /// (the caller adds the rest: `-d`, the image, its size).
    pub fn mke2fs(&self, inodes: u64) -> Command {
        let mut c = Command::new("mke2fs");
        c.args(["-F", "-q", "-t", self.fs_type]);
        if !self.features.is_empty() {
            c.arg("-O").arg(self.features);
        }
        c.arg("-b").arg(self.block_size.to_string());
        if let Some(cs) = self.cluster_size {
            c.arg("-C").arg(cs.to_string());
        }
        c.arg("-I").arg(self.inode_size.to_string());
        c.arg("-N").arg(inodes.to_string());
        c
    }

    /// Whether the running kernel's ext4 can mount this block size.
    pub fn kernel_mountable(&self) -> bool {
        self.block_size <= page_size()
    }

    /// Whether inodes have room for nanoseconds, epoch bits and crtime.
    pub fn has_extra_times(&self) -> bool {
        self.inode_size > 128
    }

    /// A planned time as this image can hold it: 128-byte inodes keep only
    /// the signed 32-bit seconds.
    pub fn stored_time(&self, t: Time) -> Time {
        if self.has_extra_times() {
            t
        } else {
            Time {
                sec: t.sec as i32 as i64,
                nsec: 0,
            }
        }
    }
}

/// A generated tree on the host.
pub struct SourceTree {
    pub plan: Plan,
    /// Early nodes (what mke2fs -d copies).
    pub src: PathBuf,
    /// Late nodes, at their plan paths (what the builder adds later).
    pub late: PathBuf,
    /// Things the host refused while generating (printed loudly).
    pub notes: Vec<String>,
}

impl SourceTree {
    /// What an image built from this tree must contain: the host's view of
    /// `src`, the late nodes from `late`, the large xattrs, and every
    /// planned atime/mtime as `spec` can store it. The root directory is
    /// left out (mke2fs does not copy its attributes).
    pub fn expected(&self, spec: &ImageSpec, opts: WalkOptions) -> Snapshot {
        let opts = WalkOptions {
            data_map: false,
            ioctls: false,
            ..opts
        };
        let mut snap = host_snapshot(&self.src, opts);
        let late = host_snapshot(&self.late, opts);
        snap.errors.extend(late.errors);
        for n in self.plan.nodes.iter().filter(|n| n.late) {
            let key = format!("/{}", n.path).into_bytes();
            match late.entries.get(&key) {
                Some(e) => {
                    snap.entries.insert(key, e.clone());
                }
                None => snap
                    .errors
                    .push(format!("late node {} missing from the host tree", n.path)),
            }
        }
        for n in &self.plan.nodes {
            let owner = self.plan.inode_node(n);
            if let Some(e) = snap.entries.get_mut(format!("/{}", n.path).as_bytes()) {
                e.atime = spec.stored_time(owner.atime);
                e.mtime = spec.stored_time(owner.mtime);
            }
        }
        for x in &self.plan.big_xattrs {
            let node = self.plan.node(&x.path).expect("big xattr path in plan");
            for n in &self.plan.nodes {
                if std::ptr::eq(self.plan.inode_node(n), node) {
                    if let Some(Ok(map)) = snap
                        .entries
                        .get_mut(format!("/{}", n.path).as_bytes())
                        .map(|e| e.xattrs.as_mut())
                    {
                        map.insert(x.name.as_bytes().to_vec(), x.value.clone());
                    }
                }
            }
        }
        snap.entries.remove(b"/".as_slice());
        snap
    }
}

fn trees() -> &'static Mutex<HashMap<TreeParams, Arc<SourceTree>>> {
    static T: OnceLock<Mutex<HashMap<TreeParams, Arc<SourceTree>>>> = OnceLock::new();
    T.get_or_init(Default::default)
}

/// The generated tree for `params`, from the cache or built now.
pub fn source_tree(params: &TreeParams) -> Arc<SourceTree> {
    let mut map = trees().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(t) = map.get(params) {
        return t.clone();
    }
    let plan = tree::plan(params);
    let key = fnv64(format!("{GENERATOR_VERSION}|{params:?}").as_bytes());
    let dir = cache_dir().join(format!("tree-{key:016x}"));
    let _lock =
        FileLock::acquire(&cache_dir().join(format!(".lock-tree-{key:016x}"))).expect("lock tree");
    let (src, late, done) = (dir.join("src"), dir.join("late"), dir.join("DONE"));
    let notes_file = dir.join("NOTES");
    let notes = if done.exists() {
        std::fs::read_to_string(&notes_file)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    } else {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).expect("remove partial tree");
        }
        std::fs::create_dir_all(&dir).expect("create tree dir");
        let t = std::time::Instant::now();
        let notes = materialize(&plan, &src, &late)
            .unwrap_or_else(|e| panic!("generating tree {params:?}: {e}"));
        std::fs::write(&notes_file, notes.join("\n")).expect("write notes");
        std::fs::write(&done, "").expect("write DONE");
        eprintln!("generated tree {params:?} in {:.1?}", t.elapsed());
        notes
    };
    for n in &notes {
        eprintln!("*** {n}");
    }
    let t = Arc::new(SourceTree {
        plan,
        src,
        late,
        notes,
    });
    map.insert(params.clone(), t.clone());
    t
}

/// A built image and the tree it was built from.
pub struct BuiltImage {
    pub spec: ImageSpec,
    pub path: PathBuf,
    pub tree: Arc<SourceTree>,
}

type BuildLocks = Mutex<HashMap<&'static str, Arc<Mutex<()>>>>;

fn images() -> &'static BuildLocks {
    static I: OnceLock<BuildLocks> = OnceLock::new();
    I.get_or_init(Default::default)
}

/// Build (or fetch from the cache) the image for `spec`. Panics with the
/// failing tool's output if any build step fails.
pub fn build_image(spec: &ImageSpec) -> BuiltImage {
    let tree = source_tree(&spec.tree_params());
    let key = fnv64(
        format!(
            "{GENERATOR_VERSION}|{spec:?}|{:?}|{}",
            spec.tree_params(),
            mke2fs_version()
        )
        .as_bytes(),
    );
    let cache = cache_dir();
    let dir = cache.join(format!("img-{}-{key:016x}", spec.name));
    let path = dir.join("image.img");
    // In-process mutex first (cheap), then the cross-process file lock.
    let m = images()
        .lock()
        .unwrap()
        .entry(spec.name)
        .or_default()
        .clone();
    let _g = m.lock().unwrap_or_else(|e| e.into_inner());
    let _lock =
        FileLock::acquire(&cache.join(format!(".lock-img-{}", spec.name))).expect("lock image");
    if !dir.join("DONE").exists() {
        // Older builds of this spec are stale now.
        if let Ok(rd) = std::fs::read_dir(&cache) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if is_build_of(&n, &format!("img-{}", spec.name)) && e.path() != dir {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let t = std::time::Instant::now();
        build_into(spec, &tree, &dir);
        eprintln!("built image {} in {:.1?}", spec.name, t.elapsed());
    }
    BuiltImage {
        spec: spec.clone(),
        path,
        tree,
    }
}

fn build_into(spec: &ImageSpec, tree: &SourceTree, dir: &Path) {
    if dir.exists() {
        std::fs::remove_dir_all(dir).expect("remove partial image dir");
    }
    std::fs::create_dir_all(dir).expect("create image dir");
    let tmp = dir.join("image.tmp");
    let plan = &tree.plan;
    let inodes = plan.inode_count() + 256;

    let mut c = spec.mke2fs(inodes);
    c.arg("-E").arg("lazy_itable_init=0,lazy_journal_init=0");
    c.arg("-d")
        .arg(&tree.src)
        .arg(&tmp)
        .arg(format!("{}M", spec.size_mib));
    run_ok(&mut c);

    if spec.rehash_dirs {
        e2fsck_index_dirs(&tmp);
    }

    let late: Vec<_> = plan.nodes.iter().filter(|n| n.late).collect();
    if spec.kernel_mountable() {
        let m = KernelMount::mount(&tmp, false, "")
            .unwrap_or_else(|e| panic!("build {}: {e}", spec.name));
        let notes = apply_nodes(late.iter().copied(), m.path())
            .unwrap_or_else(|e| panic!("build {}: late nodes: {e}", spec.name));
        for n in notes {
            eprintln!("*** {}: {n}", spec.name);
        }
        for x in &plan.big_xattrs {
            tree::set_xattr(&m.path().join(&x.path), &x.name, &x.value)
                .unwrap_or_else(|e| panic!("build {}: {e}", spec.name));
        }
        m.unmount()
            .unwrap_or_else(|e| panic!("build {}: {e}", spec.name));
    } else {
        assert!(
            late.is_empty(),
            "{}: late nodes need a kernel mount, block size {} is not mountable",
            spec.name,
            spec.block_size
        );
        let mut reqs = Vec::new();
        let mut files = Vec::new();
        for (i, x) in plan.big_xattrs.iter().enumerate() {
            let f = dir.join(format!("xattr-value-{i}"));
            std::fs::write(&f, &x.value).expect("write xattr value");
            reqs.push(format!(
                "ea_set -f {} {} {}",
                f.display(),
                dq(&format!("/{}", x.path)),
                x.name
            ));
            files.push(f);
        }
        debugfs_script(&tmp, &reqs, true).unwrap_or_else(|e| panic!("build {}: {e}", spec.name));
        for f in files {
            let _ = std::fs::remove_file(f);
        }
    }

    // Exact times, for every inode (hard links share their target's).
    let mut reqs = Vec::new();
    for n in &plan.nodes {
        // Late nodes got exact times from the kernel already (and debugfs'
        // linear lookups in a 50,000-entry directory would be slow).
        if n.late || matches!(n.kind, NodeKind::HardLink { .. }) {
            continue;
        }
        let p = dq(&format!("/{}", n.path));
        for (field, t) in [("atime", n.atime), ("mtime", n.mtime)] {
            // The low word as debugfs takes it (a non-negative number),
            // then the extra word (epoch bits, nanoseconds << 2) verbatim.
            let lo = t.sec as u32;
            reqs.push(format!("sif {p} {field} @{lo}"));
            if spec.has_extra_times() {
                let epoch = ((t.sec - (t.sec as i32 as i64)) >> 32) as u32 & 3;
                reqs.push(format!(
                    "sif {p} {field}_extra {:#x}",
                    (t.nsec << 2) | epoch
                ));
            }
        }
    }
    debugfs_script(&tmp, &reqs, true)
        .unwrap_or_else(|e| panic!("build {}: setting times: {e}", spec.name));

    assert_fsck_clean(&tmp);
    std::fs::rename(&tmp, dir.join("image.img")).expect("rename image");
    std::fs::write(dir.join("DONE"), "").expect("write DONE");
}
