//! The broker: registries of sessions and connections, and message routing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use lotus_model::authz::{Decision, Principal, TopicAction};
use lotus_model::topic::validate_topic_name;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_rustls::rustls::ServerConfig;
use tokio_util::sync::CancellationToken;

use crate::config::BrokerConfig;
use crate::connection::ConnControl;
use crate::hooks::{
    AckWaiter, BrokerHooks, ClientContext, DisconnectReason, InboundPublish, PublishVerdict, QoS,
};
use crate::listener;
use crate::message::{Delivery, Message};
use crate::metrics::Metrics;
use crate::retained::{RetainedStore, StoreOutcome};
use crate::router::{Router, Target};
use crate::session::{Enqueue, Session};

/// What became of an inbound PUBLISH once the platform had its say.
pub(crate) enum PublishResult {
    Routed(Option<AckWaiter>),
    Refused { code: u8, reason: String },
}

/// State shared by all connections and the public [`Broker`] handle.
pub(crate) struct Inner<H> {
    pub config: BrokerConfig,
    pub hooks: Arc<H>,
    pub sessions: DashMap<Arc<str>, Arc<Session>>,
    /// Established connections by principal (for `disconnect` and `is_connected`).
    pub connections: DashMap<Principal, Vec<Arc<ConnControl>>>,
    pub router: Router,
    pub retained: RetainedStore,
    pub metrics: Metrics,
    next_id: AtomicU64,
    established: AtomicUsize,
    all_closed: Notify,
    /// Cancelled when the listeners must stop accepting.
    pub stop_accepting: CancellationToken,
    pub shutting_down: AtomicBool,
}

impl<H: BrokerHooks> Inner<H> {
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The subscriber's `Deliver` check.
    pub fn may_deliver(&self, subscriber: &ClientContext, topic: &str) -> bool {
        match self
            .hooks
            .authorize(subscriber, TopicAction::Deliver, topic)
        {
            Decision::Allow => true,
            Decision::Deny(reason) => {
                tracing::debug!(
                    client_id = %subscriber.client_id,
                    principal = %subscriber.principal,
                    topic,
                    %reason,
                    "delivery denied"
                );
                false
            }
        }
    }

    /// Stores a retained message if it is one, then routes it. Returns how many sessions it
    /// was queued for.
    pub async fn publish_message(&self, msg: Message, origin: Option<u64>) -> usize {
        if msg.retain && self.retained.store(&msg) == StoreOutcome::Full {
            tracing::warn!(
                topic = %msg.topic,
                limit = self.config.retained_limit,
                "retained store is full: message routed but not retained"
            );
        }
        self.route(Arc::new(msg), origin).await
    }

    /// Queues `msg` for every matching session, once per session. `origin` is the publishing
    /// session (for v5 No Local).
    async fn route(&self, msg: Arc<Message>, origin: Option<u64>) -> usize {
        let mut targets = Vec::new();
        self.router.collect(&msg.topic, &mut targets);
        if targets.is_empty() {
            return 0;
        }
        merge_targets(&mut targets, origin);
        let limit = self.config.session_queue_limit;
        let may_deliver = |ctx: &ClientContext| self.may_deliver(ctx, &msg.topic);
        let mut queued = 0;
        // Fill every queue that has room first, so that one slow subscriber does not delay
        // the others; then wait for the full ones.
        let mut full = Vec::new();
        for t in targets {
            let d = Delivery {
                msg: msg.clone(),
                qos: msg.qos.min(t.opts.qos),
                retain: msg.retain && t.opts.retain_as_published,
                sub_id: t.opts.sub_id,
            };
            match t.session.try_enqueue(d, limit, &self.metrics, may_deliver) {
                Enqueue::Queued => queued += 1,
                Enqueue::Dropped => {}
                Enqueue::Full(d) => full.push((t.session, d)),
            }
        }
        for (session, d) in full {
            if session.enqueue(d, limit, &self.metrics, may_deliver).await {
                queued += 1;
            }
        }
        queued
    }

    /// Runs an authorised inbound PUBLISH (or a will) through the platform and routes it.
    pub async fn process_publish(
        &self,
        ctx: &ClientContext,
        origin: u64,
        publish: InboundPublish,
    ) -> PublishResult {
        match self.hooks.on_publish(ctx, &publish).await {
            PublishVerdict::Route { ack } => {
                let msg = Message::new(publish.topic, publish.payload, publish.qos, publish.retain)
                    .with_properties(publish.properties.as_ref());
                self.publish_message(msg, Some(origin)).await;
                PublishResult::Routed(ack)
            }
            PublishVerdict::Refuse { code, reason } => {
                self.metrics.publish_refused.increment(1);
                tracing::info!(
                    client_id = %ctx.client_id,
                    principal = %ctx.principal,
                    topic = %publish.topic,
                    code,
                    %reason,
                    "publish refused by the platform"
                );
                PublishResult::Refused { code, reason }
            }
        }
    }

    pub fn register(&self, ctx: &ClientContext, control: &Arc<ConnControl>) {
        self.connections
            .entry(ctx.principal.clone())
            .or_default()
            .push(control.clone());
        self.established.fetch_add(1, Ordering::Relaxed);
        self.metrics.connections.increment(1.0);
    }

    pub fn unregister(&self, ctx: &ClientContext, control: &Arc<ConnControl>) {
        self.connections.remove_if_mut(&ctx.principal, |_, list| {
            list.retain(|c| c.id != control.id);
            list.is_empty()
        });
        self.metrics.connections.decrement(1.0);
        if self.established.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.all_closed.notify_waiters();
        }
    }

    /// Ends a session that has no connection: forgets its subscriptions and messages.
    pub fn end_session(&self, session: &Arc<Session>) {
        let subscriptions = {
            let mut st = session.lock();
            if st.ended || st.control.is_some() {
                return;
            }
            st.ended = true;
            st.queue = Default::default();
            st.resumable = Default::default();
            std::mem::take(&mut st.subscriptions)
        };
        self.sessions
            .remove_if(&session.key, |_, s| Arc::ptr_eq(s, session));
        for filter in subscriptions.keys() {
            if let Ok(f) = crate::router::parse_filter(filter) {
                self.router.unsubscribe(&f, session.id);
            }
        }
        session.wake_writers();
    }
}

impl<H: BrokerHooks> Inner<H> {
    /// Ends a persistent session once it has been away for `after`, unless its client came
    /// back in the meantime.
    pub fn expire_later(self: &Arc<Self>, session: Arc<Session>, generation: u64, after: Duration) {
        let inner = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let expired = {
                let st = session.lock();
                st.generation == generation && st.control.is_none()
            };
            if expired {
                tracing::debug!(session = %session.key, "session expired");
                inner.end_session(&session);
            }
        });
    }
}

/// Leaves out the publisher's own No Local subscriptions and merges overlapping subscriptions
/// of one session into one delivery at the highest granted QoS. Shared-subscription picks
/// stay separate: MQTT 5 delivers those in addition.
fn merge_targets(targets: &mut Vec<Target>, origin: Option<u64>) {
    if let Some(origin) = origin {
        targets.retain(|t| !(t.opts.no_local && t.session.id == origin));
    }
    if targets.len() < 2 {
        return;
    }
    targets.sort_unstable_by_key(|t| (t.shared, t.session.id));
    targets.dedup_by(|later, kept| {
        if later.shared || kept.shared || later.session.id != kept.session.id {
            return false;
        }
        kept.opts.qos = kept.opts.qos.max(later.opts.qos);
        kept.opts.retain_as_published |= later.opts.retain_as_published;
        kept.opts.sub_id = kept.opts.sub_id.or(later.opts.sub_id);
        true
    });
}

/// The host's MQTT broker. Cheap to clone; every clone drives the same broker.
pub struct Broker<H> {
    inner: Arc<Inner<H>>,
}

impl<H> Clone for Broker<H> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<H: BrokerHooks> Broker<H> {
    pub fn new(config: BrokerConfig, hooks: Arc<H>) -> Self {
        let retained = RetainedStore::new(config.retained_limit);
        Self {
            inner: Arc::new(Inner {
                config,
                hooks,
                sessions: DashMap::new(),
                connections: DashMap::new(),
                router: Router::default(),
                retained,
                metrics: Metrics::new(),
                next_id: AtomicU64::new(1),
                established: AtomicUsize::new(0),
                all_closed: Notify::new(),
                stop_accepting: CancellationToken::new(),
                shutting_down: AtomicBool::new(false),
            }),
        }
    }

    #[cfg(test)]
    pub(crate) fn inner(&self) -> &Arc<Inner<H>> {
        &self.inner
    }

    /// Serves MQTT over TCP on a bound listener until shutdown.
    pub fn serve_tcp(&self, listener: TcpListener) -> JoinHandle<()> {
        tokio::spawn(listener::serve_tcp(self.inner.clone(), listener))
    }

    /// Serves MQTT over WebSocket (any path, subprotocol `mqtt` or `mqttv3.1`) until shutdown.
    pub fn serve_websocket(&self, listener: TcpListener) -> JoinHandle<()> {
        tokio::spawn(listener::serve_websocket(self.inner.clone(), listener))
    }

    /// Serves MQTT over TLS until shutdown.
    pub fn serve_tls(&self, listener: TcpListener, tls: Arc<ServerConfig>) -> JoinHandle<()> {
        tokio::spawn(listener::serve_tls(self.inner.clone(), listener, tls))
    }

    /// Publishes from the platform. Each matching subscriber still passes its `Deliver` check.
    /// QoS ≥ 1 waits while an online subscriber's queue is full. Returns how many sessions
    /// the message was queued for (online or offline persistent).
    pub async fn publish(&self, topic: &str, payload: Bytes, qos: QoS, retain: bool) -> usize {
        if let Err(e) = validate_topic_name(topic) {
            tracing::warn!(topic, error = %e, "platform publish to an invalid topic ignored");
            return 0;
        }
        let msg = Message::new(topic.into(), payload, qos, retain);
        self.inner.publish_message(msg, None).await
    }

    /// Closes every connection of `principal`; returns how many.
    pub fn disconnect(&self, principal: &Principal, reason: DisconnectReason) -> usize {
        let Some(list) = self.inner.connections.get(principal) else {
            return 0;
        };
        for c in list.iter() {
            c.kick(reason.clone());
        }
        list.len()
    }

    pub fn is_connected(&self, principal: &Principal) -> bool {
        self.inner.connections.contains_key(principal)
    }

    /// Established connections.
    pub fn connection_count(&self) -> usize {
        self.inner.established.load(Ordering::Relaxed)
    }

    /// Stops accepting, lets every connection deliver the acknowledgements it owes (bounded
    /// by `shutdown_timeout`), sends v5 clients DISCONNECT 0x8B and closes. Wills are not
    /// published: the clients did nothing wrong.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.shutting_down.store(true, Ordering::SeqCst);
        inner.stop_accepting.cancel();
        let closed = inner.all_closed.notified();
        tokio::pin!(closed);
        closed.as_mut().enable();
        for entry in inner.connections.iter() {
            for c in entry.value() {
                c.kick(DisconnectReason::ServerShutdown);
            }
        }
        if self.connection_count() > 0 {
            // Each connection bounds its own drain by shutdown_timeout; allow for the close.
            let bound = inner.config.shutdown_timeout + Duration::from_secs(2);
            if tokio::time::timeout(bound, closed).await.is_err() {
                tracing::warn!(
                    remaining = self.connection_count(),
                    "connections did not close in time"
                );
            }
        }
        tracing::info!("MQTT broker stopped");
    }
}
