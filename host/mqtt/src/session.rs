//! A session: the state that belongs to a client identity rather than to one TCP connection.
//!
//! Its outgoing queue is the back-pressure point of the broker. While the client is connected
//! the queue is bounded: a QoS ≥ 1 publisher waits for room (it is slowed, nothing is lost),
//! a QoS 0 message is dropped when there is none (MQTT allows that). While a persistent
//! session's client is away the queue keeps QoS ≥ 1 messages up to the same limit and then
//! drops the oldest — the only place where the broker loses QoS ≥ 1 messages, and it counts
//! them.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};
use tokio::sync::Notify;

use crate::connection::ConnControl;
use crate::hooks::{ClientContext, QoS};
use crate::message::Delivery;
use crate::metrics::Metrics;
use crate::router::SubOptions;

/// An outgoing QoS ≥ 1 message the client has not finished acknowledging.
#[derive(Debug)]
pub(crate) struct Inflight {
    pub pkid: u16,
    pub stage: Stage,
}

#[derive(Debug)]
pub(crate) enum Stage {
    /// PUBLISH sent; waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Sent(Delivery),
    /// PUBREL sent; waiting for PUBCOMP.
    Released,
}

/// What a connection hands back to its session when it ends, and gets when it resumes.
#[derive(Debug, Default)]
pub(crate) struct Resumable {
    pub inflight: VecDeque<Inflight>,
    /// Inbound QoS 2 packet ids whose PUBREC was sent (a retransmission is not routed again).
    pub qos2_in: Vec<u16>,
    pub next_pkid: u16,
}

pub(crate) struct SessionState {
    /// The client as last seen; deliveries are authorised against it, even while away.
    pub ctx: Arc<ClientContext>,
    /// The connection currently attached.
    pub control: Option<Arc<ConnControl>>,
    pub queue: VecDeque<Delivery>,
    /// Filter as the client wrote it (including any `$share/…` prefix) → options.
    pub subscriptions: HashMap<Arc<str>, SubOptions>,
    pub resumable: Resumable,
    /// How long the session outlives its connection; zero ends it with the connection.
    pub expiry: Duration,
    /// Set once the session is gone from the registry; a late CONNECT must create a new one.
    pub ended: bool,
    /// Incremented on every attach: a delayed will or expiry that finds a newer generation
    /// knows that the client came back.
    pub generation: u64,
    /// Messages dropped since the client went away (reported when it comes back).
    pub dropped_while_away: u64,
}

/// What a publisher's attempt to queue a delivery did.
#[derive(Debug)]
pub(crate) enum Enqueue {
    Queued,
    /// Not queued, and it never will be (QoS 0 overflow, offline clean session, denied).
    Dropped,
    /// The online queue is full; the QoS ≥ 1 delivery is handed back to wait for room.
    Full(Delivery),
}

pub(crate) struct Session {
    /// Unique for the life of the process (a key can be reused by a later session).
    pub id: u64,
    pub key: Arc<str>,
    online: AtomicBool,
    state: Mutex<SessionState>,
    /// Wakes the attached connection when its queue stops being empty.
    readable: Notify,
    /// Wakes publishers waiting for room in the queue.
    writable: Notify,
}

impl Session {
    pub fn new(id: u64, key: Arc<str>, ctx: Arc<ClientContext>) -> Self {
        Self {
            id,
            key,
            online: AtomicBool::new(false),
            state: Mutex::new(SessionState {
                ctx,
                control: None,
                queue: VecDeque::new(),
                subscriptions: HashMap::new(),
                resumable: Resumable::default(),
                expiry: Duration::ZERO,
                ended: false,
                generation: 0,
                dropped_while_away: 0,
            }),
            readable: Notify::new(),
            writable: Notify::new(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, SessionState> {
        self.state.lock()
    }

    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Relaxed)
    }

    pub fn readable(&self) -> &Notify {
        &self.readable
    }

    /// Marks a connection as attached; called with the state lock held.
    pub fn set_online(&self, st: &mut SessionState, control: Option<Arc<ConnControl>>) {
        self.online.store(control.is_some(), Ordering::Relaxed);
        st.control = control;
    }

    /// Wakes publishers so that they re-evaluate (room appeared, or the client went away and
    /// offline rules apply, or the session ended).
    pub fn wake_writers(&self) {
        self.writable.notify_waiters();
    }

    /// Queues a delivery without waiting. `may_deliver` is the subscriber's `Deliver` check.
    pub fn try_enqueue(
        &self,
        d: Delivery,
        limit: usize,
        metrics: &Metrics,
        may_deliver: impl FnOnce(&ClientContext) -> bool,
    ) -> Enqueue {
        let mut st = self.state.lock();
        if st.ended || !may_deliver(&st.ctx) {
            return Enqueue::Dropped;
        }
        if st.control.is_none() {
            // Offline: only a persistent session keeps messages, and only QoS ≥ 1 ones.
            if st.expiry.is_zero() || d.qos == QoS::AtMostOnce {
                return Enqueue::Dropped;
            }
            if st.queue.len() >= limit {
                st.queue.pop_front();
                st.dropped_while_away += 1;
                metrics.session_queue_dropped.increment(1);
                if st.dropped_while_away == 1 {
                    tracing::warn!(
                        session = %self.key,
                        limit,
                        "offline session queue is full: dropping its oldest messages"
                    );
                }
            }
            st.queue.push_back(d);
            return Enqueue::Queued;
        }
        if st.queue.len() < limit {
            let was_empty = st.queue.is_empty();
            st.queue.push_back(d);
            drop(st);
            if was_empty {
                self.readable.notify_one();
            }
            return Enqueue::Queued;
        }
        if d.qos == QoS::AtMostOnce {
            metrics.qos0_dropped.increment(1);
            return Enqueue::Dropped;
        }
        Enqueue::Full(d)
    }

    /// Queues a delivery, waiting for room while the client is online and its queue is full.
    pub async fn enqueue(
        &self,
        mut d: Delivery,
        limit: usize,
        metrics: &Metrics,
        may_deliver: impl Fn(&ClientContext) -> bool,
    ) -> bool {
        loop {
            // Register for the wake-up before looking, so that room made in between is seen.
            let room = self.writable.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_enqueue(d, limit, metrics, &may_deliver) {
                Enqueue::Queued => return true,
                Enqueue::Dropped => return false,
                Enqueue::Full(back) => d = back,
            }
            room.await;
        }
    }

    /// Queues a delivery past the limit. For retained messages sent in answer to the
    /// connection's own SUBSCRIBE: waiting there would have the connection wait on itself.
    pub fn push_unbounded(&self, d: Delivery) {
        let mut st = self.state.lock();
        let was_empty = st.queue.is_empty();
        st.queue.push_back(d);
        drop(st);
        if was_empty {
            self.readable.notify_one();
        }
    }

    /// Takes up to `max` deliveries, at most `qos_room` of them QoS ≥ 1 (the inflight window).
    /// Returns whether deliveries remain that the window would allow.
    pub fn pop_batch(
        &self,
        out: &mut Vec<Delivery>,
        max: usize,
        mut qos_room: usize,
        limit: usize,
    ) -> bool {
        let mut st = self.state.lock();
        let before = st.queue.len();
        while out.len() < max {
            match st.queue.front() {
                None => break,
                Some(d) if d.qos != QoS::AtMostOnce => {
                    if qos_room == 0 {
                        break;
                    }
                    qos_room -= 1;
                }
                Some(_) => {}
            }
            out.extend(st.queue.pop_front());
        }
        let more = out.len() == max && !st.queue.is_empty();
        if st.queue.is_empty() && st.queue.capacity() > 64 {
            // Give a burst's memory back: most sessions are idle most of the time.
            st.queue = VecDeque::new();
        }
        drop(st);
        if before >= limit && !out.is_empty() {
            self.writable.notify_waiters();
        }
        more
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::hooks::{MqttVersion, Transport};
    use crate::message::Message;
    use bytes::Bytes;
    use lotus_model::authz::Principal;

    pub(crate) fn session(id: u64) -> Arc<Session> {
        let ctx = Arc::new(ClientContext {
            connection_id: id,
            client_id: format!("c{id}").into(),
            session_key: format!("s{id}").into(),
            principal: Principal::Platform,
            protocol: MqttVersion::V311,
            transport: Transport::Tcp,
            peer: "127.0.0.1:1".parse().unwrap(),
        });
        Arc::new(Session::new(id, format!("s{id}").into(), ctx))
    }

    fn delivery(qos: QoS) -> Delivery {
        Delivery {
            msg: Arc::new(Message::new("t".into(), Bytes::new(), qos, false)),
            qos,
            retain: false,
            sub_id: None,
        }
    }

    fn attach(s: &Session) {
        let mut st = s.lock();
        s.set_online(&mut st, Some(Arc::new(ConnControl::new(1))));
    }

    #[test]
    fn online_queue_drops_qos0_and_hands_back_qos1_when_full() {
        let (s, m) = (session(1), Metrics::new());
        attach(&s);
        assert!(matches!(
            s.try_enqueue(delivery(QoS::AtLeastOnce), 1, &m, |_| true),
            Enqueue::Queued
        ));
        assert!(matches!(
            s.try_enqueue(delivery(QoS::AtMostOnce), 1, &m, |_| true),
            Enqueue::Dropped
        ));
        assert!(matches!(
            s.try_enqueue(delivery(QoS::AtLeastOnce), 1, &m, |_| true),
            Enqueue::Full(_)
        ));
        assert!(matches!(
            s.try_enqueue(delivery(QoS::AtLeastOnce), 5, &m, |_| false),
            Enqueue::Dropped
        ));
    }

    #[test]
    fn offline_persistent_queue_drops_oldest() {
        let (s, m) = (session(1), Metrics::new());
        s.lock().expiry = Duration::from_secs(60);
        for _ in 0..3 {
            assert!(matches!(
                s.try_enqueue(delivery(QoS::AtLeastOnce), 2, &m, |_| true),
                Enqueue::Queued
            ));
        }
        assert!(matches!(
            s.try_enqueue(delivery(QoS::AtMostOnce), 2, &m, |_| true),
            Enqueue::Dropped
        ));
        assert_eq!(s.lock().queue.len(), 2);
        assert_eq!(s.lock().dropped_while_away, 1);
    }

    #[test]
    fn pop_batch_respects_the_inflight_window() {
        let (s, m) = (session(1), Metrics::new());
        attach(&s);
        for q in [
            QoS::AtMostOnce,
            QoS::AtLeastOnce,
            QoS::AtLeastOnce,
            QoS::AtMostOnce,
        ] {
            s.try_enqueue(delivery(q), 10, &m, |_| true);
        }
        let mut out = Vec::new();
        s.pop_batch(&mut out, 10, 1, 10);
        assert_eq!(out.len(), 2, "stops at the second QoS 1 message");
        out.clear();
        s.pop_batch(&mut out, 10, 5, 10);
        assert_eq!(out.len(), 2);
    }

    #[tokio::test]
    async fn a_waiting_publisher_gets_room() {
        let (s, m) = (session(1), Arc::new(Metrics::new()));
        attach(&s);
        assert!(s.enqueue(delivery(QoS::AtLeastOnce), 1, &m, |_| true).await);
        let waiter = {
            let (s, m) = (s.clone(), m.clone());
            tokio::spawn(
                async move { s.enqueue(delivery(QoS::AtLeastOnce), 1, &m, |_| true).await },
            )
        };
        // The publisher cannot finish until the connection takes a message.
        tokio::task::yield_now().await;
        let mut out = Vec::new();
        s.pop_batch(&mut out, 10, 10, 1);
        assert!(
            tokio::time::timeout(Duration::from_secs(10), waiter)
                .await
                .unwrap()
                .unwrap()
        );
        assert_eq!(s.lock().queue.len(), 1);
    }
}
