//! The kernel's side of a session, for tests: the server runs in a thread
//! over a `SOCK_SEQPACKET` pair with two workers sharing the socket (as
//! cloned `/dev/fuse` descriptors do), and requests are framed as the
//! kernel frames them. The session's unit tests and the iomap model
//! (`tests/kmodel`) both drive it; not an API.

use std::io::{self, IoSlice};
use std::sync::Arc;
use std::thread::JoinHandle;

use zerocopy::FromBytes;

use super::{Session, IN_BUF_SIZE, OUT_HEADER};
use crate::abi::{InHeader, OutHeader};
use crate::backend::Backend;
use crate::channel::{Channel, SeqPacket};

pub struct TestKernel {
    ch: SeqPacket,
    server: Option<JoinHandle<io::Result<()>>>,
    unique: u64,
    /// The caller every request says it comes from.
    uid: u32,
    gid: u32,
}

impl TestKernel {
    /// Start serving `session`; requests come from `uid`/`gid`.
    pub fn start<B: Backend + 'static>(session: Arc<Session<B>>, uid: u32, gid: u32) -> Self {
        let (k, s) = SeqPacket::pair().unwrap();
        let server = std::thread::spawn(move || {
            let other = s.worker()?;
            let chans: Vec<Arc<dyn Channel>> = vec![Arc::new(s), other];
            session.run(&chans)
        });
        TestKernel {
            ch: k,
            server: Some(server),
            unique: 0,
            uid,
            gid,
        }
    }

    pub fn send_raw(&self, bytes: &[u8]) {
        self.ch.send(&[IoSlice::new(bytes)]).unwrap();
    }

    /// Send a request; returns its unique.
    pub fn request(&mut self, op: u32, nodeid: u64, body: &[u8]) -> u64 {
        self.unique += 2;
        let msg = InHeader {
            opcode: op,
            unique: self.unique,
            nodeid,
            uid: self.uid,
            gid: self.gid,
            pid: 1,
            ..Default::default()
        }
        .frame(body);
        self.send_raw(&msg);
        self.unique
    }

    /// The next message from the server: its header, its body, and the
    /// message's length (for checking the header's).
    pub fn receive(&self) -> (OutHeader, Vec<u8>, usize) {
        let mut buf = vec![0u8; IN_BUF_SIZE];
        let n = self.ch.receive(&mut buf).unwrap();
        assert!(
            n >= OUT_HEADER && n <= buf.len(),
            "message of {n} bytes from the server"
        );
        let (h, rest) = OutHeader::read_from_prefix(&buf[..n]).unwrap();
        (h, rest.to_vec(), n)
    }

    /// End the connection and join the server (its panic or error fails
    /// the test).
    pub fn finish(mut self) {
        self.join();
    }

    fn join(&mut self) {
        self.ch.shutdown();
        if let Some(s) = self.server.take() {
            s.join()
                .expect("server thread panicked")
                .expect("server returned an error");
        }
    }
}

impl Drop for TestKernel {
    fn drop(&mut self) {
        // A panic in the server must fail the test, not vanish; while
        // unwinding from another failure, only shut the connection.
        if std::thread::panicking() {
            self.ch.shutdown();
        } else {
            self.join();
        }
    }
}
