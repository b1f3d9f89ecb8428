//! Hard links: the first name of a multiply-linked inode is extracted, the
//! others are linked to it, now or once it is made.

use super::*;

impl Extraction<'_> {
    /// For an inode with several names: whether this name is to be
    /// extracted (the first one met); otherwise it is linked to the first,
    /// now or, if that is still being made, when it is done.
    pub(super) fn first_name(
        &self,
        dir: &Arc<DirNode>,
        cn: &CStr,
        path: &[u8],
        ino: InodeNo,
    ) -> bool {
        let mut links = lock(&self.links);
        match links.get_mut(&ino) {
            None => {
                links.insert(ino, Link::Busy(Vec::new()));
                true
            }
            Some(Link::Busy(waiting)) => {
                // The directory stays unfinished until the link is in.
                dir.pending.fetch_add(1, Ordering::AcqRel);
                waiting.push(Waiter {
                    dir: dir.clone(),
                    name: cn.to_owned(),
                    path: path.to_vec(),
                });
                false
            }
            Some(Link::Done(first)) => {
                let first = first.clone();
                drop(links);
                self.link(&first, dir.fd(), cn, path);
                false
            }
        }
    }

    /// The first name of a multiply-linked inode was made (`ok`) or not:
    /// link the names that waited for it, or let the next of them be made
    /// in its place (as a later name would have been).
    pub(super) fn link_done(
        &self,
        w: &mut Worker,
        mut dir: Arc<DirNode>,
        mut cn: CString,
        mut ok: bool,
        attr: &Attr,
    ) {
        loop {
            let mut links = lock(&self.links);
            let waiting = match links.remove(&attr.ino) {
                Some(Link::Busy(v)) => v,
                Some(done) => {
                    links.insert(attr.ino, done);
                    return;
                }
                None => return,
            };
            if ok {
                let first = dir.rel(cn.to_bytes());
                links.insert(attr.ino, Link::Done(first.clone()));
                drop(links);
                for wt in waiting {
                    self.link(&first, wt.dir.fd(), &wt.name, &wt.path);
                    self.release(wt.dir);
                }
                return;
            }
            let mut waiting = waiting.into_iter();
            let Some(next) = waiting.next() else { return };
            links.insert(attr.ino, Link::Busy(waiting.collect()));
            drop(links);
            ok = self.make(w, &next.dir, &next.name, &next.path, attr);
            let d = next.dir.clone();
            (dir, cn) = (next.dir, next.name);
            self.release(d);
        }
    }

    pub(super) fn link(&self, first: &[Vec<u8>], dfd: RawFd, name: &CStr, path: &[u8]) {
        if let Err(err) = self.hardlink(first, dfd, name) {
            self.error(
                path,
                format_args!(
                    "cannot hard-link to {}: {}",
                    show(&first.join(&b'/')),
                    io_msg(&err)
                ),
            );
        }
    }

    pub(super) fn hardlink(&self, first: &[Vec<u8>], dfd: RawFd, name: &CStr) -> io::Result<()> {
        let (last, parents) = first
            .split_last()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        let mut cur: Option<OwnedFd> = None;
        for c in parents {
            let at = cur.as_ref().map_or(self.root, |f| f.as_raw_fd());
            let fd = openat(
                at,
                &cname(c)?,
                libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            )?;
            cur = Some(fd);
        }
        let at = cur.as_ref().map_or(self.root, |f| f.as_raw_fd());
        let last = cname(last)?;
        replace(dfd, name, || linkat(at, &last, dfd, name))
    }
}
