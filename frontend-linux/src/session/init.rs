//! `FUSE_INIT`: agreeing on the protocol version and the flags (both
//! words) with the kernel.

use zerocopy::{FromBytes, IntoBytes};

use super::{Config, ReplyBuf, Request, Session, EPROTO, MAX_IO, MAX_PAGES};
use crate::abi::{self, init_flags as flag};
use crate::backend::Backend;
use crate::log;
use ext4_engine::errno;

/// What `FUSE_INIT` settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub minor: u32,
    /// Granted flags, both words.
    pub flags: u64,
    pub max_readahead: u32,
}

/// Answer a `FUSE_INIT`. `body_len` is how much of `fuse_init_in` the kernel
/// sent (older kernels send 16 bytes, without `flags2`). Returns the reply
/// and, unless the kernel must retry with a lower major, what was agreed.
pub fn negotiate(
    init: &abi::InitIn,
    body_len: usize,
    cfg: &Config,
) -> Result<(abi::InitOut, Option<Negotiated>), i32> {
    let mut out = abi::InitOut {
        major: abi::KERNEL_VERSION,
        minor: abi::KERNEL_MINOR_VERSION,
        ..Default::default()
    };
    if init.major > abi::KERNEL_VERSION {
        // The kernel retries INIT with our major after this answer.
        return Ok((out, None));
    }
    if init.major < abi::KERNEL_VERSION || init.minor < abi::MIN_MINOR_VERSION {
        return Err(EPROTO);
    }
    let mut offered = init.flags as u64;
    if offered & flag::INIT_EXT != 0 && body_len >= 20 {
        offered |= (init.flags2 as u64) << 32;
    }
    let granted = offered & cfg.wanted_flags();
    out.minor = if granted & flag::IOMAP != 0 {
        // A kernel offering iomap speaks the series' protocol version.
        init.minor.min(abi::IOMAP_MINOR_VERSION)
    } else {
        init.minor.min(abi::KERNEL_MINOR_VERSION)
    };
    out.max_readahead = init.max_readahead;
    out.flags = granted as u32;
    out.flags2 = (granted >> 32) as u32;
    out.max_background = cfg.max_background;
    out.congestion_threshold = cfg.max_background / 4 * 3;
    out.max_write = MAX_IO as u32;
    out.time_gran = 1;
    if granted & flag::MAX_PAGES != 0 {
        out.max_pages = MAX_PAGES;
    }
    Ok((
        out,
        Some(Negotiated {
            minor: out.minor,
            flags: granted,
            max_readahead: out.max_readahead,
        }),
    ))
}

impl<B: Backend> Session<B> {
    pub(super) fn do_init(&self, req: &Request<'_>, out: &mut ReplyBuf) -> Result<(), i32> {
        if req.body.len() < abi::INIT_IN_COMPAT_SIZE {
            return Err(errno::EINVAL);
        }
        if self.init.get().is_some() {
            return Err(errno::EIO);
        }
        let mut raw = [0u8; core::mem::size_of::<abi::InitIn>()];
        let len = req.body.len().min(raw.len());
        raw[..len].copy_from_slice(&req.body[..len]);
        let init = abi::InitIn::read_from_bytes(&raw[..]).map_err(|_| errno::EINVAL)?;
        let (reply, agreed) = negotiate(&init, req.body.len(), &self.config)?;
        // Before 7.23 the kernel expects the short (24-byte) init reply.
        let size = if reply.minor < 23 && agreed.is_some() {
            24
        } else {
            core::mem::size_of::<abi::InitOut>()
        };
        out.push(&reply.as_bytes()[..size]);
        if let Some(agreed) = agreed {
            let _ = self.init.set(agreed);
            log::debug(format_args!(
                "INIT: kernel 7.{} flags {:#x}, granted {:#x}",
                init.minor,
                init.flags as u64 | (init.flags2 as u64) << 32,
                agreed.flags
            ));
        }
        Ok(())
    }
}
