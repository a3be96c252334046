//! The bounded offline buffer: uplink messages made while the platform cannot be reached.
//!
//! When full, the **oldest** message is dropped (and counted): for telemetry the newest
//! reading is worth more than the oldest, and a device must never block its control loop
//! on a dead link. [`crate::Device::buffer_stats`] shows how many were dropped.

use std::collections::VecDeque;

/// One uplink request waiting to be sent.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Queued {
    pub topic: String,
    pub reply_topic: String,
    /// The Alink request id the reply will carry.
    pub id: String,
    pub payload: Vec<u8>,
}

/// Counters of the offline buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BufferStats {
    /// Messages waiting now.
    pub queued: usize,
    /// Messages dropped because the buffer was full (oldest first).
    pub dropped: u64,
    /// Messages sent from the buffer and answered by the platform.
    pub flushed: u64,
}

#[derive(Debug)]
pub(crate) struct OfflineBuffer {
    items: VecDeque<Queued>,
    capacity: usize,
    dropped: u64,
    flushed: u64,
}

impl OfflineBuffer {
    pub fn new(capacity: usize) -> Self {
        OfflineBuffer {
            items: VecDeque::new(),
            capacity,
            dropped: 0,
            flushed: 0,
        }
    }

    /// Appends; returns the message dropped to make room, if any. A zero capacity buffers
    /// nothing (the new message itself is dropped).
    pub fn push(&mut self, item: Queued) -> Option<Queued> {
        if self.capacity == 0 {
            self.dropped += 1;
            return Some(item);
        }
        let dropped = if self.items.len() >= self.capacity {
            self.dropped += 1;
            self.items.pop_front()
        } else {
            None
        };
        self.items.push_back(item);
        dropped
    }

    /// The oldest message, left in place until [`Self::done`] so that a failed send loses
    /// nothing.
    pub fn front(&self) -> Option<Queued> {
        self.items.front().cloned()
    }

    /// Removes the front message once the platform answered it (if it is still the front:
    /// it may have been dropped for room meanwhile).
    pub fn done(&mut self, item: &Queued) {
        if self.items.front() == Some(item) {
            self.items.pop_front();
            self.flushed += 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn stats(&self) -> BufferStats {
        BufferStats {
            queued: self.items.len(),
            dropped: self.dropped,
            flushed: self.flushed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(id: &str) -> Queued {
        Queued {
            topic: "t".into(),
            reply_topic: "t_reply".into(),
            id: id.into(),
            payload: vec![],
        }
    }

    #[test]
    fn drops_oldest_when_full_and_keeps_order() {
        let mut b = OfflineBuffer::new(2);
        assert!(b.push(q("1")).is_none());
        assert!(b.push(q("2")).is_none());
        assert_eq!(b.push(q("3")).unwrap().id, "1");
        let f = b.front().unwrap();
        assert_eq!(f.id, "2");
        b.done(&f);
        assert_eq!(b.front().unwrap().id, "3");
        assert_eq!(
            b.stats(),
            BufferStats {
                queued: 1,
                dropped: 1,
                flushed: 1
            }
        );
        // A front that was dropped meanwhile is not popped twice.
        b.done(&f);
        assert_eq!(b.stats().queued, 1);
        let mut none = OfflineBuffer::new(0);
        assert!(none.push(q("x")).is_some());
        assert!(none.is_empty());
    }
}
