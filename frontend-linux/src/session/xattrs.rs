//! Handlers of the extended attribute requests: `GETXATTR`, `LISTXATTR`.

use zerocopy::IntoBytes;

use super::{ReplyBuf, Request, Session};
use crate::abi;
use crate::backend::Backend;
use ext4_engine::errno;

impl<B: Backend> Session<B> {
    /// The size-0 probe / ERANGE protocol shared by getxattr and listxattr.
    pub(super) fn xattr_reply(out: &mut ReplyBuf, data: &[u8], size: u32) -> Result<(), i32> {
        if size == 0 {
            out.push(
                abi::GetxattrOut {
                    size: data.len() as u32,
                    padding: 0,
                }
                .as_bytes(),
            );
            return Ok(());
        }
        if data.len() > size as usize {
            return Err(errno::ERANGE);
        }
        if !out.push(data) {
            return Err(errno::E2BIG);
        }
        Ok(())
    }

    pub(super) fn do_getxattr(&self, req: &Request<'_>, out: &mut ReplyBuf) -> Result<(), i32> {
        let ino = req.ino()?;
        let args: abi::GetxattrIn = req.arg()?;
        let name = req.name_at(core::mem::size_of::<abi::GetxattrIn>())?;
        let value = self
            .backend
            .getxattr(ino, name)
            .map_err(|e| self.fail("getxattr", ino, e))?;
        Self::xattr_reply(out, &value, args.size)
    }

    pub(super) fn do_listxattr(&self, req: &Request<'_>, out: &mut ReplyBuf) -> Result<(), i32> {
        let ino = req.ino()?;
        let args: abi::GetxattrIn = req.arg()?;
        let names = self
            .backend
            .listxattr(ino)
            .map_err(|e| self.fail("listxattr", ino, e))?;
        let mut list = Vec::new();
        for n in names {
            // ext4 lists trusted.* only to CAP_SYS_ADMIN; uid 0 stands in for it.
            if req.header.uid != 0 && n.starts_with(b"trusted.") {
                continue;
            }
            list.extend_from_slice(&n);
            list.push(0);
        }
        Self::xattr_reply(out, &list, args.size)
    }
}
