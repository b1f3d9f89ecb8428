//! Directories: opening, listing, and handing out their entries
//! (subdirectories queued, files batched, the rest made at once).

use super::*;

impl Extraction<'_> {
    /// Open directory `name` in `parent` (made there by its lister) and list it.
    pub(super) fn open_dir(
        &self,
        w: &mut Worker,
        parent: Arc<DirNode>,
        cn: &CStr,
        path: Vec<u8>,
        attr: Attr,
        made: bool,
    ) {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        let fd = match openat(parent.fd(), cn, flags, 0) {
            Ok(fd) => fd,
            Err(e) => {
                let why = match e.raw_os_error() {
                    Some(libc::ELOOP) | Some(libc::ENOTDIR) => {
                        "exists in the destination and is not a directory (not followed)".into()
                    }
                    _ => io_msg(&e),
                };
                self.error(&path, format_args!("cannot open: {why}"));
                return self.release(parent);
            }
        };
        let node = Arc::new(DirNode {
            fd,
            ino: attr.ino,
            name: cn.to_bytes().to_vec(),
            depth: parent.depth + 1,
            private: made || parent.private,
            parent: Some(parent),
            path,
            attr: Some(attr),
            pending: AtomicUsize::new(1),
        });
        self.fill_dir(w, &node);
        self.release(node);
    }

    /// Extract the children of `node`: subdirectories and batches of
    /// files are queued, everything else is made here.
    pub(super) fn fill_dir(&self, w: &mut Worker, node: &Arc<DirNode>) {
        let mut l = Listing::default();
        let r = for_each_child(self.vol, node.ino, |e| -> Result<(), ()> {
            self.entry(w, node, e, &node.path, &mut l);
            Ok(())
        });
        self.flush(w, node, &mut l.batch);
        // Newest first off the stack: queued last to first, the
        // subdirectories are walked in listing order, which for images
        // made by mke2fs -d is the order of their data on disk.
        if !l.subdirs.is_empty() {
            let mut q = lock(&self.queue);
            q.tasks.extend(l.subdirs.into_iter().rev());
            drop(q);
            self.wake.notify_all();
        }
        if let Err(e) = r {
            self.error(&node.path, e);
        }
        self.reports(&node.path);
    }

    pub(super) fn entry(
        &self,
        w: &mut Worker,
        dir: &Arc<DirNode>,
        e: Ent,
        ipath: &[u8],
        l: &mut Listing,
    ) {
        let name = &e.name[..];
        if name == b"." || name == b".." {
            return;
        }
        let path = join(ipath, name);
        if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
            self.error(
                &path,
                format_args!(
                    "refusing an entry named {:?} in {}: such a name could write outside the destination",
                    show(name),
                    show(ipath)
                ),
            );
            return;
        }
        let attr = match self.vol.getattr(e.ino) {
            Ok(a) => a,
            Err(err) => return self.error(&path, err),
        };
        self.tick();
        let Ok(cn) = cname(name) else { return };
        let linked = attr.kind != FileType::Directory && attr.nlink > 1;
        if linked && !self.first_name(dir, &cn, &path, e.ino) {
            return;
        }
        match attr.kind {
            FileType::Directory => self.subdir(dir, cn, path, attr, &mut l.subdirs),
            FileType::Regular => {
                let batch = &mut l.batch;
                batch.push(FileJob {
                    name: cn,
                    path,
                    attr,
                    linked,
                });
                // Saturating: sizes come from the image (near 2^64 on a
                // damaged one).
                let bytes = batch
                    .iter()
                    .fold(0u64, |a, f| a.saturating_add(f.attr.size));
                if batch.len() >= BATCH_FILES || bytes >= BATCH_BYTES {
                    self.flush(w, dir, batch);
                }
            }
            _ => {
                let ok = self.make(w, dir, &cn, &path, &attr);
                if linked {
                    self.link_done(w, dir.clone(), cn, ok, &attr);
                }
            }
        }
    }

    /// Hand a batch of files to the pool, or do it now when the pool has
    /// plenty queued.
    pub(super) fn flush(&self, w: &mut Worker, dir: &Arc<DirNode>, batch: &mut Vec<FileJob>) {
        if batch.is_empty() {
            return;
        }
        let files = std::mem::take(batch);
        dir.pending.fetch_add(1, Ordering::AcqRel);
        if self.saturated() {
            self.files(w, dir.clone(), files);
        } else {
            self.push(Task::Files(dir.clone(), files));
        }
    }

    pub(super) fn files(&self, w: &mut Worker, dir: Arc<DirNode>, files: Vec<FileJob>) {
        for f in files {
            let ok = self.file(w, &dir, &f.name, &f.path, &f.attr);
            if f.linked {
                self.link_done(w, dir.clone(), f.name, ok, &f.attr);
            }
        }
        self.release(dir);
    }

    /// Make directory `cn` in `dir` and queue its listing.
    pub(super) fn subdir(
        &self,
        dir: &Arc<DirNode>,
        cn: CString,
        path: Vec<u8>,
        attr: Attr,
        out: &mut Vec<Task>,
    ) {
        if dir.depth >= MAX_DEPTH {
            return self.error(&path, "directories nested too deep; not extracted");
        }
        if !lock(&self.dirs_seen).insert(attr.ino) {
            return self.error(
                &path,
                format_args!(
                    "directory inode {} was already extracted (directory loop)",
                    attr.ino
                ),
            );
        }
        // Owner-only until the contents are in; the real mode comes last.
        let made = match mkdirat(dir.fd(), &cn, 0o700) {
            Ok(()) => true,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => false,
            Err(e) => return self.error(&path, format_args!("cannot create: {}", io_msg(&e))),
        };
        dir.pending.fetch_add(1, Ordering::AcqRel);
        out.push(Task::Dir {
            parent: dir.clone(),
            name: cn,
            path,
            attr,
            made,
        });
    }
}
