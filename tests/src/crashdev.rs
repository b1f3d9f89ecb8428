//! A [`BlockDevice`] that records every write and flush and can "crash"
//! at any point: what was flushed stays, what was written since the last
//! flush is kept whole, dropped, or kept in part and in another order (a
//! disk cache may reorder writes between flushes, as redb's crash tests
//! model it).
//!
//! Reads see every write so far, as a running system does. The record is
//! the start image plus every write's bytes, so keep the images small and
//! the writes few (tens of MiB in all).

use std::sync::Mutex;

use ext4_engine::BlockDevice;
use ext4_engine::IoError;

use crate::rng::Rng;

/// One recorded request.
#[derive(Clone, Debug)]
pub enum Event {
    Write { offset: u64, data: Vec<u8> },
    Flush,
}

struct Inner {
    /// What reads see: the start image with every write applied.
    current: Vec<u8>,
    events: Vec<Event>,
}

pub struct CrashDevice {
    start: Vec<u8>,
    inner: Mutex<Inner>,
}

/// What survives of the writes made since the last flush before a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// None of them (the crash came before any reached the disk).
    None,
    /// All of them, in order (the crash came just before the flush).
    All,
    /// A random subset, applied in a random order (seeded).
    Some(u64),
}

/// A crash after the first `at` events, keeping what `keep` says of the
/// writes since the last flush among them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrashPoint {
    pub at: usize,
    pub keep: Keep,
}

impl CrashDevice {
    pub fn new(image: Vec<u8>) -> CrashDevice {
        CrashDevice {
            inner: Mutex::new(Inner {
                current: image.clone(),
                events: Vec::new(),
            }),
            start: image,
        }
    }

    /// Events recorded so far.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap().events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The event indices of the flushes so far.
    pub fn flushes(&self) -> Vec<usize> {
        let inner = self.inner.lock().unwrap();
        inner
            .events
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e, Event::Flush))
            .map(|(i, _)| i)
            .collect()
    }

    /// The byte offsets of the writes so far, in order.
    pub fn write_offsets(&self) -> Vec<u64> {
        let inner = self.inner.lock().unwrap();
        inner
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Write { offset, .. } => Some(*offset),
                Event::Flush => None,
            })
            .collect()
    }

    /// The image with every write applied (no crash).
    pub fn current(&self) -> Vec<u8> {
        self.inner.lock().unwrap().current.clone()
    }

    /// The images the crash points leave, in the order given (which must
    /// be by increasing `at`): the durable image is carried forward from
    /// one point to the next, so the record is applied once.
    pub fn crash_images(&self, points: &[CrashPoint]) -> Vec<Vec<u8>> {
        let inner = self.inner.lock().unwrap();
        let events = &inner.events;
        let mut durable = self.start.clone();
        // Events applied to `durable`: up to and including a flush.
        let mut done = 0usize;
        let mut out = Vec::with_capacity(points.len());
        for p in points {
            assert!(p.at <= events.len(), "crash point past the record");
            assert!(p.at >= done, "crash points out of order");
            // The last flush before the crash: everything up to it stays.
            let last_flush = events[done..p.at]
                .iter()
                .rposition(|e| matches!(e, Event::Flush))
                .map(|i| done + i + 1);
            if let Some(f) = last_flush {
                for e in &events[done..f] {
                    apply(&mut durable, e);
                }
                done = f;
            }
            let mut img = durable.clone();
            let pending: Vec<&Event> = events[done..p.at].iter().collect();
            match p.keep {
                Keep::None => {}
                Keep::All => pending.iter().for_each(|e| apply(&mut img, e)),
                Keep::Some(seed) => {
                    let mut rng = Rng::new(seed);
                    let mut kept: Vec<&Event> =
                        pending.into_iter().filter(|_| rng.chance(1, 2)).collect();
                    // Fisher-Yates: the disk's order, not ours.
                    for i in (1..kept.len()).rev() {
                        let j = rng.below(i as u64 + 1) as usize;
                        kept.swap(i, j);
                    }
                    kept.iter().for_each(|e| apply(&mut img, e));
                }
            }
            out.push(img);
        }
        out
    }
}

fn apply(img: &mut [u8], e: &Event) {
    if let Event::Write { offset, data } = e {
        let o = *offset as usize;
        img[o..o + data.len()].copy_from_slice(data);
    }
}

impl BlockDevice for CrashDevice {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let inner = self.inner.lock().unwrap();
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= inner.current.len() as u64)
            .ok_or(IoError::EIO)?;
        buf.copy_from_slice(&inner.current[offset as usize..end as usize]);
        Ok(())
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), IoError> {
        let mut inner = self.inner.lock().unwrap();
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= inner.current.len() as u64)
            .ok_or(IoError::EIO)?;
        inner.current[offset as usize..end as usize].copy_from_slice(buf);
        inner.events.push(Event::Write {
            offset,
            data: buf.to_vec(),
        });
        Ok(())
    }
    fn flush(&self) -> Result<(), IoError> {
        self.inner.lock().unwrap().events.push(Event::Flush);
        Ok(())
    }
    fn size(&self) -> u64 {
        self.start.len() as u64
    }
    fn read_only(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flushed writes always survive; unflushed ones survive as `keep`
    /// says, overlapping ones in the order the crash picks.
    #[test]
    fn crashes_keep_what_was_flushed() {
        let d = CrashDevice::new(vec![0u8; 16]);
        d.write_at(0, &[1, 1]).unwrap();
        d.flush().unwrap();
        d.write_at(2, &[2]).unwrap();
        d.write_at(3, &[3]).unwrap();
        d.flush().unwrap();
        d.write_at(4, &[4]).unwrap();
        d.write_at(4, &[5]).unwrap();
        assert_eq!(d.flushes(), [1, 4]);
        let pts = [
            CrashPoint {
                at: 1,
                keep: Keep::None,
            },
            CrashPoint {
                at: 3,
                keep: Keep::None,
            },
            CrashPoint {
                at: 3,
                keep: Keep::All,
            },
            CrashPoint {
                at: 7,
                keep: Keep::All,
            },
        ];
        let imgs = d.crash_images(&pts);
        assert_eq!(&imgs[0][..5], [0, 0, 0, 0, 0]);
        assert_eq!(&imgs[1][..5], [1, 1, 0, 0, 0]);
        assert_eq!(&imgs[2][..5], [1, 1, 2, 0, 0]);
        assert_eq!(&imgs[3][..5], [1, 1, 2, 3, 5]);
        // A random keep of the last two overlapping writes leaves either,
        // or neither, and over many seeds each of those.
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let img = &d.crash_images(&[CrashPoint {
                at: 7,
                keep: Keep::Some(seed),
            }])[0];
            assert_eq!(&img[..4], [1, 1, 2, 3]);
            seen.insert(img[4]);
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), [0, 4, 5]);
    }
}
