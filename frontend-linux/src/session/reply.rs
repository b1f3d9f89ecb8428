//! The reply being built: a fixed buffer with room for the header in
//! front, filled in place by the handlers.

use zerocopy::IntoBytes;

use super::OUT_HEADER;
use crate::abi::{self, OutHeader};

/// The reply being built: a fixed buffer with room for the header in front.
pub struct ReplyBuf {
    buf: Vec<u8>,
    len: usize,
}

impl ReplyBuf {
    pub fn new(payload_capacity: usize) -> ReplyBuf {
        ReplyBuf {
            buf: vec![0; OUT_HEADER + payload_capacity],
            len: OUT_HEADER,
        }
    }
    pub(super) fn reset(&mut self) {
        self.len = OUT_HEADER;
    }
    /// Space left for payload.
    pub fn room(&self) -> usize {
        self.buf.len() - self.len
    }
    pub fn payload_len(&self) -> usize {
        self.len - OUT_HEADER
    }
    /// Append `bytes`; `false` (and nothing appended) if they do not fit.
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        if bytes.len() > self.room() {
            return false;
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
        true
    }
    /// Append `n` zero bytes (record padding).
    pub(super) fn pad(&mut self, n: usize) -> bool {
        if n > self.room() {
            return false;
        }
        self.buf[self.len..self.len + n].fill(0);
        self.len += n;
        true
    }
    /// The free space after the payload, to be filled in place and then
    /// committed with [`ReplyBuf::commit`].
    pub fn tail(&mut self, n: usize) -> &mut [u8] {
        let end = (self.len + n).min(self.buf.len());
        &mut self.buf[self.len..end]
    }
    /// The payload written so far, for filling in place.
    pub(super) fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buf[OUT_HEADER..self.len]
    }
    pub fn commit(&mut self, n: usize) {
        self.len = (self.len + n).min(self.buf.len());
    }
    pub(super) fn finish(&mut self, unique: u64, error: i32) -> &[u8] {
        if error != 0 {
            self.len = OUT_HEADER;
        }
        let h = OutHeader {
            len: self.len as u32,
            error: -error,
            unique,
        };
        self.buf[..OUT_HEADER].copy_from_slice(h.as_bytes());
        &self.buf[..self.len]
    }
}

/// Append one directory record (`head`, `name`, padding to 8 bytes) if the
/// payload stays within `limit`; `false` (nothing appended) otherwise.
pub(super) fn push_record(out: &mut ReplyBuf, head: &[u8], name: &[u8], limit: usize) -> bool {
    let rec = abi::rec_align(head.len() + name.len());
    if out.payload_len() + rec > limit {
        return false;
    }
    out.push(head);
    out.push(name);
    out.pad(rec - head.len() - name.len());
    true
}
