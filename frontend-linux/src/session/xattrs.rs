//! Handlers of the extended attribute requests: `GETXATTR`, `LISTXATTR`.

use zerocopy::IntoBytes;

use super::{ReplyBuf, Request, Session};
use crate::abi;
use crate::backend::Backend;
use ext4_engine::errno;
use ext4_engine::policy::{self, XattrReply};

impl<B: Backend> Session<B> {
    /// The engine's size-0 probe / ERANGE protocol, into the reply.
    pub(super) fn xattr_reply(out: &mut ReplyBuf, data: &[u8], size: u32) -> Result<(), i32> {
        match policy::xattr_reply(data, size).map_err(|e| e.errno())? {
            XattrReply::Size(n) => {
                out.push(
                    abi::GetxattrOut {
                        size: n,
                        padding: 0,
                    }
                    .as_bytes(),
                );
            }
            XattrReply::Data(d) => {
                if !out.push(d) {
                    return Err(errno::E2BIG);
                }
            }
        }
        Ok(())
    }

    pub(super) fn do_getxattr(&self, req: &Request<'_>, out: &mut ReplyBuf) -> Result<(), i32> {
        let ino = req.ino()?;
        let args: abi::GetxattrIn = req.arg()?;
        let name = req.name_at(core::mem::size_of::<abi::GetxattrIn>())?;
        let value = policy::check_getxattr(name, &req.caller())
            .and_then(|()| self.backend.getxattr(ino, name))
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
        Self::xattr_reply(out, &policy::xattr_list(&names, &req.caller()), args.size)
    }
}
