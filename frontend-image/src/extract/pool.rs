//! The worker pool: a stack of tasks shared by `-j` threads, taken newest
//! first, and the counting that finishes a directory once everything under
//! it is done.

use super::*;

#[derive(Default)]
pub(super) struct Queue {
    pub(super) tasks: Vec<Task>,
    /// Workers running a task (which may queue more).
    busy: usize,
}

/// Marks the end of a task when dropped, also while unwinding.
pub(super) struct Done<'c, 'v>(&'c Extraction<'v>);

impl Drop for Done<'_, '_> {
    fn drop(&mut self) {
        self.0.task_done();
    }
}

/// Per worker: one buffer, reused for every file.
pub(super) struct Worker {
    pub(super) buf: Vec<u8>,
}

impl Extraction<'_> {
    pub(super) fn push(&self, t: Task) {
        lock(&self.queue).tasks.push(t);
        self.wake.notify_one();
    }

    /// Whether work queued for other workers is plentiful enough that a
    /// batch is better done at once by whoever made it (bounds the queue).
    pub(super) fn saturated(&self) -> bool {
        self.jobs == 1 || lock(&self.queue).tasks.len() >= 2 * self.jobs
    }

    /// Take tasks until none is queued and no worker can queue more. Tasks
    /// are taken newest first, so the walk stays depth-first and the
    /// directories open at once stay few.
    pub(super) fn work(&self) {
        let mut w = Worker {
            buf: vec![0u8; CHUNK],
        };
        loop {
            let task = {
                let mut q = lock(&self.queue);
                loop {
                    if let Some(t) = q.tasks.pop() {
                        q.busy += 1;
                        break t;
                    }
                    if q.busy == 0 {
                        self.wake.notify_all();
                        return;
                    }
                    q = self.wake.wait(q).unwrap_or_else(|p| p.into_inner());
                }
            };
            let done = Done(self);
            self.run_task(&mut w, task);
            drop(done);
        }
    }

    /// A task ended (returned or panicked). A panic drops the queued work,
    /// so the other workers stop instead of waiting forever for this one.
    pub(super) fn task_done(&self) {
        let mut q = lock(&self.queue);
        q.busy -= 1;
        if std::thread::panicking() {
            q.tasks.clear();
        }
        if q.busy == 0 && q.tasks.is_empty() {
            self.wake.notify_all();
        }
    }

    pub(super) fn run_task(&self, w: &mut Worker, t: Task) {
        match t {
            Task::Fill(node) => {
                self.fill_dir(w, &node);
                self.release(node);
            }
            Task::Dir {
                parent,
                name,
                path,
                attr,
                made,
            } => self.open_dir(w, parent, &name, path, attr, made),
            Task::Files(dir, files) => self.files(w, dir, files),
            Task::Entry(dir, e, ipath) => {
                let mut l = Listing::default();
                self.entry(w, &dir, e, &ipath, &mut l);
                self.flush(w, &dir, &mut l.batch);
                self.release(dir);
            }
        }
    }

    /// One piece of work under `node` is done; when it was the last, the
    /// directory gets its attributes and its parent is told, and so on up.
    pub(super) fn release(&self, mut node: Arc<DirNode>) {
        loop {
            if node.pending.fetch_sub(1, Ordering::AcqRel) != 1 {
                return;
            }
            if let Some(a) = &node.attr {
                self.finish(Target::Fd(node.fd()), &node.path, a, None);
            }
            match node.parent.clone() {
                Some(p) => node = p,
                None => return,
            }
        }
    }
}
