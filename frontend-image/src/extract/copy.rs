//! Regular files: creating them and copying their data where the engine
//! says it lives (in the kernel with `copy_file_range` or `sendfile`, else
//! through the engine), leaving holes unwritten.

use super::*;

/// How mapped file data is copied from the image: in the kernel
/// (`copy_file_range`, else `sendfile`: no copy through our memory, and on
/// filesystems that share extents no copy at all), else read + write.
pub(super) const COPY_RANGE: u8 = 0;

pub(super) const SENDFILE: u8 = 1;

pub(super) const READ_WRITE: u8 = 2;

/// Mapped runs shorter than this go through the read + write path: for a
/// few KiB the kernel's splice set-up costs more than the copy it saves.
pub(super) const KERNEL_COPY_MIN: u64 = 64 << 10;

impl Extraction<'_> {
    pub(super) fn file(
        &self,
        w: &mut Worker,
        dir: &DirNode,
        cn: &CStr,
        path: &[u8],
        attr: &Attr,
    ) -> bool {
        let dfd = dir.fd();
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        // Where nobody else can look yet, the file starts with its final
        // permission bits (so it usually needs no chmod); elsewhere it
        // starts owner-only, as its contents are not its owner's yet.
        let mode = if dir.private {
            attr.mode & 0o777
        } else {
            0o600
        };
        let fd = match replace(dfd, cn, || openat(dfd, cn, flags, mode as libc::mode_t)) {
            Ok(fd) => fd,
            Err(e) => {
                self.error(path, format_args!("cannot create: {}", io_msg(&e)));
                return false;
            }
        };
        let file = File::from(fd);
        if let Err(msg) = self.copy(w, &file, attr) {
            self.error(path, msg);
            self.reports(path);
            return false;
        }
        self.reports(path);
        self.finish(
            Target::Fd(file.as_raw_fd()),
            path,
            attr,
            file.metadata().ok().as_ref(),
        );
        true
    }

    /// Copy the file's data, leaving its holes (and unwritten extents,
    /// which read as zeros) unwritten.
    pub(super) fn copy(&self, w: &mut Worker, file: &File, attr: &Attr) -> Result<(), String> {
        let size = attr.size;
        if size == 0 {
            return Ok(());
        }
        let mut pieces = self
            .vol
            .file_pieces(attr.ino)
            .map_err(|e| format!("cannot read the inode: {e}"))?;
        // End of the last byte written: the length needs setting only when
        // the file ends in a hole (saves a syscall per small file).
        let mut end = 0u64;
        loop {
            let at = pieces.offset();
            let Some(piece) = pieces.next() else { break };
            match piece.map_err(|e| format!("mapping byte {at}: {e}"))? {
                FilePiece::Device {
                    offset,
                    len,
                    device_offset,
                } => {
                    end =
                        self.copy_mapped(w, file, attr.ino, device_offset, offset, offset + len)?;
                }
                // No block map (inline data) or none the engine can copy
                // from: it reads the bytes, or says why it cannot.
                FilePiece::Engine { offset, len } => {
                    end = self.copy_read(w, file, attr.ino, offset, offset + len)?;
                }
                FilePiece::Zeros { .. } => {}
            }
        }
        if end != size {
            file.set_len(size)
                .map_err(|e| format!("cannot set the length: {}", io_msg(&e)))?;
        }
        Ok(())
    }

    /// Copy file bytes `from..to`, which live at byte `src` of the image
    /// onwards; returns where the copy ended.
    pub(super) fn copy_mapped(
        &self,
        w: &mut Worker,
        file: &File,
        ino: InodeNo,
        src: u64,
        from: u64,
        to: u64,
    ) -> Result<u64, String> {
        // A run past the end of the image (a damaged map) goes through the
        // engine, which says what is wrong; the kernel would only return
        // short, or EINVAL for offsets past i64, and make us give up on
        // copying in the kernel for every later file.
        let src = src
            .checked_add(to - from)
            .is_some_and(|e| e <= self.image_size)
            .then_some(src);
        let small = to - from < KERNEL_COPY_MIN;
        let (Some(src), false) = (
            src,
            small || self.copy_mode.load(Ordering::Relaxed) == READ_WRITE,
        ) else {
            return self.copy_read(w, file, ino, from, to);
        };
        let src = src + self.image_base;
        let dst = file.as_raw_fd();
        let mut pos = from;
        while pos < to {
            let mode = self.copy_mode.load(Ordering::Relaxed);
            let want = (to - pos).min(1 << 30) as usize;
            let r = match mode {
                COPY_RANGE => copy_file_range(self.image, src + (pos - from), dst, pos, want),
                SENDFILE => sendfile(self.image, src + (pos - from), dst, pos, want),
                _ => break,
            };
            match r {
                Ok(0) => break,
                Ok(n) => {
                    pos += n as u64;
                    self.bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if unsupported(&e) => {
                    let _ = self.copy_mode.compare_exchange(
                        mode,
                        mode + 1,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
                // The engine's read path below says what is wrong (a
                // short image, a read error) or meets the same write error.
                Err(_) => break,
            }
        }
        if pos < to {
            return self.copy_read(w, file, ino, pos, to);
        }
        Ok(to)
    }

    /// Copy file bytes `from..to` through the engine and our buffer;
    /// returns where the copy ended.
    pub(super) fn copy_read(
        &self,
        w: &mut Worker,
        file: &File,
        ino: InodeNo,
        from: u64,
        to: u64,
    ) -> Result<u64, String> {
        let mut pos = from;
        while pos < to {
            let want = (to - pos).min(w.buf.len() as u64) as usize;
            let n = self
                .vol
                .read(ino, pos, &mut w.buf[..want])
                .map_err(|e| format!("read at byte {pos}: {e}"))?;
            if n == 0 {
                break;
            }
            file.write_all_at(&w.buf[..n], pos)
                .map_err(|e| format!("write at byte {pos}: {}", io_msg(&e)))?;
            pos += n as u64;
            self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(pos)
    }
}
