//! The MQTT transport: one supervisor task that logs in (fresh signature each time), restores
//! the subscriptions, dispatches downlink and reconnects with back-off when the link drops.
//!
//! Each connection gets its own rumqttc event loop: rumqttc would otherwise reconnect with the
//! first connection's timestamp and replay its own in-flight queue, while the SDK wants a
//! fresh signature and its own offline buffer (which survives any number of reconnects).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Packet,
    Publish, QoS, SubscribeFilter, SubscribeReasonCode, TlsConfiguration,
};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_rustls::rustls;

use crate::backoff::Backoff;
use crate::config::{Credentials, MqttConfig, TlsConfig};
use crate::error::{Error, Result};
use crate::handlers::{Downlink, Handlers, classify};
use crate::login::{mqtt_login, now_ms};
use crate::topics::Topics;

/// Largest packet accepted either way (rumqttc's default of 10 KiB is too small for a
/// thing-model-sized property post).
const MAX_PACKET: usize = 1 << 20;

type PendingKey = (String, String);

struct Shared {
    topics: Topics,
    handlers: Arc<Handlers>,
    /// The live connection's client; `None` while disconnected.
    client: Mutex<Option<AsyncClient>>,
    connected: watch::Sender<bool>,
    /// Requests waiting for their reply, by (reply topic, id). Cleared (senders dropped) when
    /// a connection ends, which tells the waiters that their request may not have arrived.
    pending: Mutex<HashMap<PendingKey, oneshot::Sender<Vec<u8>>>>,
}

pub(crate) struct MqttLink {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// rumqttc TLS settings with an explicit crypto provider: a process may link more than one
/// rustls provider, and then rustls refuses to pick a default.
pub(crate) fn tls_configuration(tls: &TlsConfig) -> Result<TlsConfiguration> {
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca_pem {
        Some(pem) => {
            for cert in rustls_pemfile::certs(&mut &pem[..]) {
                let cert = cert.map_err(|e| Error::Tls(format!("CA PEM: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| Error::Tls(format!("CA certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(Error::Tls("the CA PEM holds no certificate".into()));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Tls(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(TlsConfiguration::Rustls(Arc::new(config)))
}

fn options(creds: &Credentials, cfg: &MqttConfig) -> Result<MqttOptions> {
    let id = cfg.client_id.as_deref().unwrap_or(&creds.device_name);
    let login = mqtt_login(creds, id, cfg.sign_method, cfg.tls.is_some(), now_ms());
    let mut o = MqttOptions::new(login.client_id, cfg.host.clone(), cfg.port);
    o.set_credentials(login.username, login.password);
    o.set_keep_alive(cfg.keep_alive);
    o.set_max_packet_size(MAX_PACKET, MAX_PACKET);
    o.set_clean_session(true);
    if let Some(tls) = &cfg.tls {
        o.set_transport(rumqttc::Transport::tls_with_config(tls_configuration(tls)?));
    }
    Ok(o)
}

impl MqttLink {
    /// Connects once; returns when the first connection is up and subscribed, or with the
    /// reason it failed. Afterwards the link reconnects by itself.
    pub async fn connect(
        creds: Credentials,
        cfg: MqttConfig,
        backoff: Backoff,
        topics: Topics,
        handlers: Arc<Handlers>,
    ) -> Result<MqttLink> {
        let shared = Arc::new(Shared {
            topics,
            handlers,
            client: Mutex::new(None),
            connected: watch::channel(false).0,
            pending: Mutex::new(HashMap::new()),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (first_tx, first_rx) = oneshot::channel();
        let task = tokio::spawn(supervise(
            shared.clone(),
            creds,
            cfg,
            backoff,
            first_tx,
            shutdown_rx,
        ));
        match first_rx.await {
            Ok(Ok(())) => Ok(MqttLink {
                shared,
                shutdown,
                task: Mutex::new(Some(task)),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Transport("the connection task ended".into())),
        }
    }

    pub fn is_connected(&self) -> bool {
        *self.shared.connected.borrow()
    }

    pub async fn wait_connected(&self) {
        let mut rx = self.shared.connected.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Publishes `payload` on `topic` (QoS 1) and waits for the message on `reply_topic`
    /// carrying `id`. `Err(NotConnected)` when there is no connection or it dropped before
    /// the reply (the request may or may not have arrived).
    pub async fn request(
        &self,
        topic: &str,
        payload: Vec<u8>,
        reply_topic: &str,
        id: &str,
        timeout: Duration,
    ) -> Result<Vec<u8>> {
        let client = self
            .shared
            .client
            .lock()
            .clone()
            .ok_or(Error::NotConnected)?;
        let key = (reply_topic.to_string(), id.to_string());
        let (tx, rx) = oneshot::channel();
        self.shared.pending.lock().insert(key.clone(), tx);
        if client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .is_err()
        {
            self.shared.pending.lock().remove(&key);
            return Err(Error::NotConnected);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(_)) => Err(Error::NotConnected),
            Err(_) => {
                self.shared.pending.lock().remove(&key);
                Err(Error::Timeout(timeout))
            }
        }
    }

    /// Sends DISCONNECT and stops reconnecting.
    pub async fn close(&self) {
        let _ = self.shutdown.send(true);
        let task = self.task.lock().take();
        if let Some(t) = task {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
    }
}

impl Drop for MqttLink {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().take() {
            t.abort();
        }
    }
}

/// Why one connection ended, and whether it had come up first.
struct Ended {
    was_up: bool,
    error: Error,
}

async fn supervise(
    shared: Arc<Shared>,
    creds: Credentials,
    cfg: MqttConfig,
    backoff: Backoff,
    first: oneshot::Sender<Result<()>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut first = Some(first);
    let mut attempt = 0u32;
    loop {
        let opts = match options(&creds, &cfg) {
            Ok(o) => o,
            Err(e) => {
                if let Some(f) = first.take() {
                    let _ = f.send(Err(e));
                }
                return;
            }
        };
        let (client, mut event_loop) = AsyncClient::new(opts, 64);
        // Replies and small posts should leave at once, not wait for the peer's delayed ACK.
        let mut network = event_loop.network_options();
        network.set_tcp_nodelay(true);
        event_loop.set_network_options(network);
        let ended = tokio::select! {
            ended = session(&shared, &client, &mut event_loop, &mut first) => ended,
            _ = stopped(&mut shutdown) => {
                mark_down(&shared);
                let _ = client.try_disconnect();
                // Let the event loop write the DISCONNECT.
                let _ = tokio::time::timeout(Duration::from_millis(500), async {
                    while event_loop.poll().await.is_ok() {}
                })
                .await;
                return;
            }
        };
        mark_down(&shared);
        if let Some(f) = first.take() {
            // The caller of `connect` decides what to do about a first failure.
            let _ = f.send(Err(ended.error));
            return;
        }
        if ended.was_up {
            attempt = 0;
        }
        let delay = backoff.delay(attempt);
        attempt = attempt.saturating_add(1);
        tracing::warn!(error = %ended.error, ?delay, "MQTT connection lost; reconnecting");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped(&mut shutdown) => return,
        }
    }
}

/// Resolves once shutdown was asked for (the watch guard must not live across awaits).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

fn mark_down(shared: &Shared) {
    *shared.client.lock() = None;
    shared.connected.send_replace(false);
    shared.pending.lock().clear();
}

fn connection_error(e: ConnectionError) -> Error {
    match e {
        ConnectionError::ConnectionRefused(code) => Error::Refused(format!("{code:?}")),
        other => Error::Transport(other.to_string()),
    }
}

/// One connection: CONNACK, SUBSCRIBE/SUBACK, then dispatch until it ends.
async fn session(
    shared: &Arc<Shared>,
    client: &AsyncClient,
    event_loop: &mut EventLoop,
    first: &mut Option<oneshot::Sender<Result<()>>>,
) -> Ended {
    let down = |error| Ended {
        was_up: false,
        error,
    };
    loop {
        match event_loop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                if ack.code != ConnectReturnCode::Success {
                    return down(Error::Refused(format!("{:?}", ack.code)));
                }
                break;
            }
            Ok(_) => {}
            Err(e) => return down(connection_error(e)),
        }
    }
    let filters = shared
        .topics
        .subscriptions()
        .into_iter()
        .map(|f| SubscribeFilter::new(f, QoS::AtLeastOnce));
    if client.try_subscribe_many(filters).is_err() {
        return down(Error::Transport("could not queue SUBSCRIBE".into()));
    }
    // Replies and downlink must be routed before any request goes out.
    loop {
        match event_loop.poll().await {
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let subs = shared.topics.subscriptions();
                for (f, c) in subs.iter().zip(&ack.return_codes) {
                    if *c == SubscribeReasonCode::Failure {
                        tracing::warn!(filter = %f, "the platform refused a subscription");
                    }
                }
                break;
            }
            Ok(Event::Incoming(Packet::Publish(p))) => dispatch(shared, client, p),
            Ok(_) => {}
            Err(e) => return down(connection_error(e)),
        }
    }
    *shared.client.lock() = Some(client.clone());
    shared.connected.send_replace(true);
    tracing::info!("MQTT connected");
    if let Some(f) = first.take() {
        let _ = f.send(Ok(()));
    }
    loop {
        match event_loop.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => dispatch(shared, client, p),
            Ok(_) => {}
            Err(e) => {
                return Ended {
                    was_up: true,
                    error: connection_error(e),
                };
            }
        }
    }
}

fn dispatch(shared: &Arc<Shared>, client: &AsyncClient, p: Publish) {
    match classify(&shared.topics, &p.topic, &p.payload) {
        Downlink::Reply(topic, id, bytes) => {
            if let Some(tx) = shared.pending.lock().remove(&(topic, id)) {
                let _ = tx.send(bytes);
            }
        }
        Downlink::ShadowReply(bytes) => {
            let key = (shared.topics.shadow_get.clone(), String::new());
            if let Some(tx) = shared.pending.lock().remove(&key) {
                let _ = tx.send(bytes);
            }
        }
        Downlink::ShadowControl(delta) => {
            shared.handlers.note_shadow_version(delta.version);
            if let Some(h) = shared.handlers.shadow_delta.read().clone() {
                tokio::task::spawn_blocking(move || h(delta));
            }
        }
        Downlink::Request(answer) => {
            let handlers = shared.handlers.clone();
            let client = client.clone();
            tokio::spawn(async move {
                let out = tokio::task::spawn_blocking(move || answer(&handlers)).await;
                if let Ok(Some(o)) = out
                    && let Err(e) = client
                        .publish(o.topic, QoS::AtLeastOnce, false, o.payload)
                        .await
                {
                    tracing::warn!(error = %e, "could not send a reply: the connection is gone");
                }
            });
        }
        Downlink::Ignore => {}
    }
}
