//! Per-peer message-layer state: the duplicate-detection cache (RFC 7252 §4.5) and block-wise
//! transfers in progress. Every part is bounded: entries per peer, bytes per body, peers in all.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::block::{Download, Upload};

/// RFC 7252 EXCHANGE_LIFETIME: how long a retransmission of a message can still arrive.
pub const EXCHANGE_LIFETIME: Duration = Duration::from_secs(247);

/// Answers remembered per peer; a device retransmits only its latest few messages.
const DEDUP_ENTRIES: usize = 16;

/// What the cache knows about a message id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// First time: process it.
    New,
    /// Still being processed: drop the duplicate, the answer follows.
    InFlight,
    /// Already answered: send this again without processing.
    Answered(Vec<u8>),
}

#[derive(Debug)]
enum Entry {
    InFlight,
    Answered(Vec<u8>),
}

#[derive(Debug)]
struct Peer {
    last_seen: Instant,
    recent: VecDeque<(u16, Instant, Entry)>,
    upload: Option<Upload>,
    download: Option<Download>,
}

impl Peer {
    fn new(now: Instant) -> Self {
        Peer {
            last_seen: now,
            recent: VecDeque::new(),
            upload: None,
            download: None,
        }
    }
}

/// The state of every peer heard from within [`EXCHANGE_LIFETIME`], up to a limit.
pub struct PeerTable {
    peers: Mutex<HashMap<SocketAddr, Peer>>,
    max_peers: usize,
}

impl PeerTable {
    pub fn new(max_peers: usize) -> Self {
        PeerTable {
            peers: Mutex::new(HashMap::new()),
            max_peers: max_peers.max(1),
        }
    }

    /// Runs `f` on the peer's state, creating it if there is room. `None` when the table is
    /// full of live peers: the caller then serves the message statelessly.
    fn with_peer<R>(&self, peer: SocketAddr, f: impl FnOnce(&mut Peer) -> R) -> Option<R> {
        let now = Instant::now();
        let mut peers = self.peers.lock();
        if !peers.contains_key(&peer) && peers.len() >= self.max_peers {
            peers.retain(|_, p| now.duration_since(p.last_seen) < EXCHANGE_LIFETIME);
            if peers.len() >= self.max_peers {
                return None;
            }
        }
        let state = peers.entry(peer).or_insert_with(|| Peer::new(now));
        state.last_seen = now;
        Some(f(state))
    }

    /// Records message `mid` from `peer` and says whether it was seen before.
    pub fn check(&self, peer: SocketAddr, mid: u16) -> Seen {
        let now = Instant::now();
        self.with_peer(peer, |p| {
            p.recent
                .retain(|(_, at, _)| now.duration_since(*at) < EXCHANGE_LIFETIME);
            if let Some((_, _, e)) = p.recent.iter().find(|(m, _, _)| *m == mid) {
                return match e {
                    Entry::InFlight => Seen::InFlight,
                    Entry::Answered(bytes) => Seen::Answered(bytes.clone()),
                };
            }
            if p.recent.len() >= DEDUP_ENTRIES {
                p.recent.pop_front();
            }
            p.recent.push_back((mid, now, Entry::InFlight));
            Seen::New
        })
        .unwrap_or(Seen::New)
    }

    /// Stores the answer to `mid` for retransmissions.
    pub fn answered(&self, peer: SocketAddr, mid: u16, answer: &[u8]) {
        self.with_peer(peer, |p| {
            if let Some((_, _, e)) = p.recent.iter_mut().find(|(m, _, _)| *m == mid) {
                *e = Entry::Answered(answer.to_vec());
            }
        });
    }

    /// Forgets `mid` (processing failed without an answer; a retransmission may try again).
    pub fn forget(&self, peer: SocketAddr, mid: u16) {
        self.with_peer(peer, |p| p.recent.retain(|(m, _, _)| *m != mid));
    }

    /// Runs `f` on the peer's Block1 upload slot.
    pub fn upload<R>(
        &self,
        peer: SocketAddr,
        f: impl FnOnce(&mut Option<Upload>) -> R,
    ) -> Option<R> {
        self.with_peer(peer, |p| f(&mut p.upload))
    }

    /// Runs `f` on the peer's Block2 download slot.
    pub fn download<R>(
        &self,
        peer: SocketAddr,
        f: impl FnOnce(&mut Option<Download>) -> R,
    ) -> Option<R> {
        self.with_peer(peer, |p| f(&mut p.download))
    }

    /// Drops peers silent for longer than [`EXCHANGE_LIFETIME`].
    pub fn sweep(&self) {
        let now = Instant::now();
        self.peers
            .lock()
            .retain(|_, p| now.duration_since(p.last_seen) < EXCHANGE_LIFETIME);
    }

    pub fn len(&self) -> usize {
        self.peers.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn duplicates_are_answered_from_the_cache() {
        let t = PeerTable::new(10);
        assert_eq!(t.check(addr(1), 7), Seen::New);
        assert_eq!(t.check(addr(1), 7), Seen::InFlight);
        t.answered(addr(1), 7, b"answer");
        assert_eq!(t.check(addr(1), 7), Seen::Answered(b"answer".to_vec()));
        assert_eq!(t.check(addr(2), 7), Seen::New, "message ids are per peer");
        t.forget(addr(2), 7);
        assert_eq!(t.check(addr(2), 7), Seen::New);
    }

    #[test]
    fn memory_per_peer_and_peers_are_bounded() {
        let t = PeerTable::new(3);
        for mid in 0..1000 {
            t.check(addr(1), mid);
            t.answered(addr(1), mid, &[0; 100]);
        }
        assert_eq!(t.check(addr(1), 0), Seen::New, "old entries are evicted");
        for port in 2..10 {
            t.check(addr(port), 1);
        }
        assert_eq!(t.len(), 3);
        // A peer that does not fit is served without state, never refused.
        assert_eq!(t.check(addr(50), 1), Seen::New);
        assert_eq!(t.check(addr(50), 1), Seen::New);
    }
}
