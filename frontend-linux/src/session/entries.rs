//! Handlers of the requests about directory entries: `LOOKUP`, `READDIR`,
//! `READDIRPLUS`.

use zerocopy::{FromBytes, IntoBytes};

use super::reply::push_record;
use super::{ino_to_nodeid, ReplyBuf, Request, Session, ESTALE};
use crate::abi;
use crate::backend::Backend;
use ext4_engine::{Attr, Error, InodeNo};

impl<B: Backend> Session<B> {
    pub(super) fn entry_out(&self, a: &Attr) -> Result<abi::EntryOut, Error> {
        let (secs, nsecs) = self.valid();
        Ok(abi::EntryOut {
            nodeid: ino_to_nodeid(a.ino)?,
            generation: a.generation as u64,
            entry_valid: secs,
            attr_valid: secs,
            entry_valid_nsec: nsecs,
            attr_valid_nsec: nsecs,
            attr: self.fuse_attr(a),
        })
    }

    pub(super) fn do_lookup(&self, req: &Request<'_>, out: &mut ReplyBuf) -> Result<(), i32> {
        let dir = req.ino()?;
        let name = req.name_at(0)?;
        // "." only comes from NFS export (decoding a file handle): it asks
        // whether node `dir` still exists.
        let found = if name == b"." {
            self.backend.getattr(dir).and_then(|a| {
                if a.nlink == 0 {
                    Err(Error::NotFound)
                } else {
                    Ok(a)
                }
            })
        } else {
            self.backend.lookup(dir, name)
        };
        match found.and_then(|a| self.entry_out(&a)) {
            Ok(e) => {
                out.push(e.as_bytes());
                Ok(())
            }
            Err(Error::NotFound) if name != b"." => {
                // Node id 0 with a timeout: the kernel caches the negative entry.
                let (secs, nsecs) = self.valid();
                let e = abi::EntryOut {
                    entry_valid: secs,
                    entry_valid_nsec: nsecs,
                    ..Default::default()
                };
                out.push(e.as_bytes());
                Ok(())
            }
            Err(Error::NotFound) => Err(ESTALE),
            Err(e) => Err(self.fail("lookup", dir, e)),
        }
    }

    pub(super) fn do_readdir(
        &self,
        req: &Request<'_>,
        out: &mut ReplyBuf,
        plus: bool,
    ) -> Result<(), i32> {
        let dir = req.ino()?;
        let args: abi::ReadIn = req.arg()?;
        let size = (args.size as usize).min(out.room());
        let base = out.payload_len();
        let limit = base + size;
        if !plus {
            let result = self.backend.readdir(dir, args.offset, &mut |e| {
                let d = abi::Dirent {
                    ino: u64::from(e.ino.0),
                    off: e.next,
                    namelen: e.name.len() as u32,
                    typ: e.kind.map_or(0, |k| k.dtype() as u32),
                };
                push_record(out, d.as_bytes(), e.name, limit)
            });
            result.map_err(|e| self.fail("readdir", dir, e))?;
            self.backend.accessed(dir);
            return Ok(());
        }

        // READDIRPLUS: write the records with blank attributes first, then
        // look each entry up and fill its attributes in place, so that no
        // engine call runs inside another one's callback and nothing is
        // allocated per entry.
        self.backend
            .readdir(dir, args.offset, &mut |e| {
                let d = abi::DirentPlus {
                    entry_out: abi::EntryOut::default(),
                    dirent: abi::Dirent {
                        ino: u64::from(e.ino.0),
                        off: e.next,
                        namelen: e.name.len() as u32,
                        typ: e.kind.map_or(0, |k| k.dtype() as u32),
                    },
                };
                push_record(out, d.as_bytes(), e.name, limit)
            })
            .map_err(|e| self.fail("readdirplus", dir, e))?;
        self.backend.accessed(dir);
        const HEAD: usize = core::mem::size_of::<abi::DirentPlus>();
        let mut at = base;
        while let Some(rec) = out.payload_mut().get_mut(at..) {
            let Ok((d, rest)) = abi::DirentPlus::read_from_prefix(rec) else {
                break;
            };
            let name_len = d.dirent.namelen as usize;
            at += abi::rec_align(HEAD + name_len);
            let Some(name) = rest.get(..name_len) else {
                break;
            };
            // The kernel takes no reference on "." and "..", and an entry
            // whose inode cannot be read is listed without attributes (the
            // error then surfaces on its own lookup, for that file only).
            if name == b"." || name == b".." {
                continue;
            }
            let ino = InodeNo(d.dirent.ino as u32);
            match self.backend.getattr(ino).and_then(|a| self.entry_out(&a)) {
                Ok(e) => rec[..core::mem::size_of::<abi::EntryOut>()].copy_from_slice(e.as_bytes()),
                Err(e) => {
                    self.fail("readdirplus", ino, e);
                }
            }
        }
        Ok(())
    }
}
