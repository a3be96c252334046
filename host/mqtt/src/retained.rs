//! Retained messages, in memory.

use std::sync::Arc;

use dashmap::DashMap;
use lotus_model::topic::filter_matches;
use tokio::time::Instant;

use crate::message::Message;

/// The last retained message of each topic, bounded by a number of topics.
pub(crate) struct RetainedStore {
    messages: DashMap<Arc<str>, Arc<Message>>,
    limit: usize,
}

/// What storing a retained message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreOutcome {
    Stored,
    Cleared,
    /// The store holds `limit` topics already.
    Full,
}

impl RetainedStore {
    pub fn new(limit: usize) -> Self {
        Self {
            messages: DashMap::new(),
            limit,
        }
    }

    /// Stores (or, for an empty payload, clears) the retained message of `msg.topic`.
    pub fn store(&self, msg: &Message) -> StoreOutcome {
        if msg.payload.is_empty() {
            self.messages.remove(&msg.topic);
            return StoreOutcome::Cleared;
        }
        let copy = Arc::new(msg.detached());
        if let Some(mut existing) = self.messages.get_mut(&msg.topic) {
            *existing = copy;
            return StoreOutcome::Stored;
        }
        if self.messages.len() >= self.limit {
            return StoreOutcome::Full;
        }
        self.messages.insert(msg.topic.clone(), copy);
        StoreOutcome::Stored
    }

    /// Retained messages matching a filter, leaving out (and forgetting) expired ones.
    pub fn matching(&self, filter: &str, out: &mut Vec<Arc<Message>>) {
        let now = Instant::now();
        let start = out.len();
        if filter.contains(['+', '#']) {
            out.extend(
                self.messages
                    .iter()
                    .filter(|e| filter_matches(filter, e.key()))
                    .map(|e| e.value().clone()),
            );
        } else if let Some(m) = self.messages.get(filter) {
            out.push(m.clone());
        }
        let mut i = start;
        while i < out.len() {
            if out[i].is_expired(now) {
                let gone = out.swap_remove(i);
                self.messages
                    .remove_if(&gone.topic, |_, m| Arc::ptr_eq(m, &gone));
            } else {
                i += 1;
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.messages.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::QoS;
    use bytes::Bytes;

    fn msg(topic: &str, payload: &'static [u8]) -> Message {
        Message::new(
            topic.into(),
            Bytes::from_static(payload),
            QoS::AtLeastOnce,
            true,
        )
    }

    #[test]
    fn store_clear_and_limit() {
        let s = RetainedStore::new(2);
        assert_eq!(s.store(&msg("a/1", b"x")), StoreOutcome::Stored);
        assert_eq!(s.store(&msg("a/2", b"y")), StoreOutcome::Stored);
        assert_eq!(s.store(&msg("a/3", b"z")), StoreOutcome::Full);
        assert_eq!(
            s.store(&msg("a/2", b"y2")),
            StoreOutcome::Stored,
            "replacing is always allowed"
        );
        let mut out = Vec::new();
        s.matching("a/+", &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(s.store(&msg("a/1", b"")), StoreOutcome::Cleared);
        out.clear();
        s.matching("a/1", &mut out);
        assert!(out.is_empty());
        assert_eq!(s.len(), 1);
    }
}
