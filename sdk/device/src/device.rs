//! The device API, the same over MQTT and CoAP.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lotus_model::alink::Reply;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::buffer::{BufferStats, OfflineBuffer, Queued};
use crate::coap::CoapLink;
use crate::config::{Credentials, DeviceConfig, Transport};
use crate::error::{Error, Result};
use crate::handlers::{HandlerResult, Handlers};
use crate::login::now_ms;
use crate::mqtt::MqttLink;
use crate::shadow::{self, ShadowDelta, ShadowState};
use crate::topics::Topics;

/// How an uplink post ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Posted {
    /// The platform stored it; the reply's `data`.
    Accepted(Value),
    /// The platform could not be reached: the message is in the offline buffer and is sent
    /// when the link is back. Its eventual rejection, if any, is only logged.
    Queued,
}

enum Link {
    Mqtt(MqttLink),
    Coap(CoapLink),
}

impl Link {
    async fn request(
        &self,
        topic: &str,
        payload: Vec<u8>,
        reply_topic: &str,
        id: &str,
        timeout: Duration,
    ) -> Result<Vec<u8>> {
        match self {
            Link::Mqtt(m) => m.request(topic, payload, reply_topic, id, timeout).await,
            Link::Coap(c) => tokio::time::timeout(timeout, c.request(topic, payload))
                .await
                .map_err(|_| Error::Timeout(timeout))?,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Link::Mqtt(_) => "MQTT",
            Link::Coap(_) => "CoAP",
        }
    }
}

struct Inner {
    topics: Topics,
    link: Link,
    handlers: Arc<Handlers>,
    buffer: Mutex<OfflineBuffer>,
    buffered: Notify,
    next_id: AtomicU64,
    reply_timeout: Duration,
    backoff: Backoff,
    /// Raw and shadow replies carry no usable id: one such request at a time.
    raw_lock: tokio::sync::Mutex<()>,
    shadow_lock: tokio::sync::Mutex<()>,
}

/// A connected device. Dropping it stops reconnecting; [`Device::close`] also says goodbye.
pub struct Device {
    inner: Arc<Inner>,
    credentials: Credentials,
    flusher: JoinHandle<()>,
}

impl Drop for Device {
    fn drop(&mut self) {
        self.flusher.abort();
    }
}

fn parse_reply(bytes: &[u8]) -> Result<Value> {
    let reply: Reply = serde_json::from_slice(bytes)?;
    if reply.code == lotus_model::alink::code::SUCCESS {
        Ok(reply.data)
    } else {
        Err(Error::Rejected {
            code: reply.code,
            message: reply.message.unwrap_or_default(),
        })
    }
}

impl Device {
    /// Logs in (MQTT: signed CONNECT, subscriptions; CoAP: `/auth`) and returns once the
    /// device can talk. A first failure is returned; later drops are reconnected with back-off.
    pub async fn connect(config: DeviceConfig) -> Result<Device> {
        let creds = config.credentials.clone();
        let topics = Topics::new(&creds.product_key, &creds.device_name);
        let handlers = Arc::new(Handlers::default());
        let link = match config.transport {
            Transport::Mqtt(m) => Link::Mqtt(
                MqttLink::connect(
                    creds.clone(),
                    m,
                    config.backoff,
                    topics.clone(),
                    handlers.clone(),
                )
                .await?,
            ),
            Transport::Coap(c) => Link::Coap(CoapLink::connect(creds.clone(), c).await?),
        };
        let inner = Arc::new(Inner {
            topics,
            link,
            handlers,
            buffer: Mutex::new(OfflineBuffer::new(config.offline_buffer)),
            buffered: Notify::new(),
            // Ids only need to differ from recent ones; starting at the clock avoids reusing
            // those of a previous run whose replies may still be in flight.
            next_id: AtomicU64::new(now_ms() as u64),
            reply_timeout: config.reply_timeout,
            backoff: config.backoff,
            raw_lock: Default::default(),
            shadow_lock: Default::default(),
        });
        let flusher = tokio::spawn(flush(inner.clone()));
        Ok(Device {
            inner,
            credentials: creds,
            flusher,
        })
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// The transport in use: `"MQTT"` or `"CoAP"`.
    pub fn transport(&self) -> &'static str {
        self.inner.link.name()
    }

    /// Whether the MQTT connection is up (CoAP has no connection: always `true`).
    pub fn is_connected(&self) -> bool {
        match &self.inner.link {
            Link::Mqtt(m) => m.is_connected(),
            Link::Coap(_) => true,
        }
    }

    /// Waits until the MQTT connection is up again (at once for CoAP).
    pub async fn wait_connected(&self) {
        if let Link::Mqtt(m) = &self.inner.link {
            m.wait_connected().await;
        }
    }

    pub fn buffer_stats(&self) -> BufferStats {
        self.inner.buffer.lock().stats()
    }

    fn next_id(&self) -> String {
        self.inner
            .next_id
            .fetch_add(1, Ordering::Relaxed)
            .to_string()
    }

    /// Posts properties (`{"Brightness": 50}` or `{"Brightness": {"value": 50, "time": ms}}`)
    /// and waits for the platform's reply. A rejection (e.g. 460, with a message naming the
    /// field) is [`Error::Rejected`]; while the platform cannot be reached the post is
    /// buffered and [`Posted::Queued`] returned.
    pub async fn post_properties(&self, params: Value) -> Result<Posted> {
        let topic = self.inner.topics.property_post.clone();
        self.post(topic, params, "thing.event.property.post".into())
            .await
    }

    /// Posts event `identifier` with its output values, stamped now.
    pub async fn post_event(&self, identifier: &str, value: Value) -> Result<Posted> {
        let topic = self.inner.topics.event_post(identifier);
        self.post(
            topic,
            json!({"value": value, "time": now_ms()}),
            format!("thing.event.{identifier}.post"),
        )
        .await
    }

    async fn post(&self, topic: String, params: Value, method: String) -> Result<Posted> {
        let id = self.next_id();
        let payload = serde_json::to_vec(
            &json!({"id": id, "version": "1.0", "params": params, "method": method}),
        )?;
        let item = Queued {
            reply_topic: format!("{topic}_reply"),
            topic,
            id,
            payload,
        };
        // Behind a non-empty buffer, a new post waits its turn so that order is kept.
        if !self.inner.buffer.lock().is_empty() {
            self.enqueue(item);
            return Ok(Posted::Queued);
        }
        match self
            .inner
            .link
            .request(
                &item.topic,
                item.payload.clone(),
                &item.reply_topic,
                &item.id,
                self.inner.reply_timeout,
            )
            .await
        {
            Ok(bytes) => parse_reply(&bytes).map(Posted::Accepted),
            Err(Error::NotConnected) => {
                self.enqueue(item);
                Ok(Posted::Queued)
            }
            Err(e) => Err(e),
        }
    }

    fn enqueue(&self, item: Queued) {
        if let Some(dropped) = self.inner.buffer.lock().push(item) {
            tracing::warn!(topic = %dropped.topic, id = %dropped.id, "offline buffer full: dropped the oldest message");
        }
        self.inner.buffered.notify_one();
    }

    /// Sends raw bytes for the product's codec plugin (`thing/model/up_raw`) and returns the
    /// raw reply. Not buffered: raw protocols usually carry their own sequencing.
    pub async fn post_raw(&self, bytes: Vec<u8>) -> Result<Vec<u8>> {
        let _one = self.inner.raw_lock.lock().await;
        let t = &self.inner.topics;
        let reply = self
            .inner
            .link
            .request(
                &t.up_raw,
                bytes,
                &t.up_raw_reply,
                "",
                self.inner.reply_timeout,
            )
            .await?;
        // Without a codec the platform answers in Alink JSON; surface its error as such.
        if let Ok(r) = serde_json::from_slice::<Reply>(&reply)
            && r.code != lotus_model::alink::code::SUCCESS
        {
            return Err(Error::Rejected {
                code: r.code,
                message: r.message.unwrap_or_default(),
            });
        }
        Ok(reply)
    }

    async fn shadow_request(&self, payload: Vec<u8>) -> Result<Vec<u8>> {
        let _one = self.inner.shadow_lock.lock().await;
        let t = &self.inner.topics;
        self.inner
            .link
            .request(
                &t.shadow_update,
                payload,
                &t.shadow_get,
                "",
                self.inner.reply_timeout,
            )
            .await
    }

    /// The shadow as the platform holds it (desired, reported, delta, version).
    pub async fn shadow_get(&self) -> Result<ShadowState> {
        let s = shadow::parse_get_reply(&self.shadow_request(shadow::get_request()).await?)?;
        self.inner.handlers.note_shadow_version(s.version);
        Ok(s)
    }

    /// Reports state to the shadow; returns the new version. The version sent is one above
    /// the newest the device has seen; on a version conflict (409) the SDK reads the shadow
    /// and tries once more.
    pub async fn shadow_report(&self, reported: Value) -> Result<i64> {
        for attempt in 0..2 {
            let version = self.inner.handlers.shadow_version.load(Ordering::SeqCst) + 1;
            let bytes = self
                .shadow_request(shadow::update_request(&reported, version))
                .await?;
            match shadow::parse_update_reply(&bytes) {
                Ok(v) => {
                    self.inner.handlers.note_shadow_version(v.max(version));
                    return Ok(v.max(version));
                }
                Err(e) if e.code() == Some(409) && attempt == 0 => {
                    self.shadow_get().await?;
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the loop returns")
    }

    fn downlink_supported(&self, what: &'static str) -> Result<()> {
        match self.inner.link {
            Link::Mqtt(_) => Ok(()),
            Link::Coap(_) => Err(Error::Unsupported {
                what,
                transport: "CoAP",
            }),
        }
    }

    /// Handles property set requests; `Ok` replies 200, `Err((code, message))` replies that.
    pub fn on_property_set<F>(&self, f: F) -> Result<()>
    where
        F: Fn(Value) -> Result<(), (i64, String)> + Send + Sync + 'static,
    {
        self.downlink_supported("property set")?;
        *self.inner.handlers.property_set.write() =
            Some(Arc::new(move |p| f(p).map(|_| json!({}))));
        Ok(())
    }

    /// Handles service `identifier`, called asynchronously (`thing/service/{id}`) or
    /// synchronously over RRPC; the returned value is the reply's `data`.
    pub fn on_service<F>(&self, identifier: &str, f: F) -> Result<()>
    where
        F: Fn(Value) -> HandlerResult + Send + Sync + 'static,
    {
        self.downlink_supported("service calls")?;
        self.inner
            .handlers
            .services
            .write()
            .insert(identifier.to_string(), Arc::new(f));
        Ok(())
    }

    /// Handles RRPC requests that do not name a service (custom payloads): receives the
    /// message id and the payload, returns the response payload.
    pub fn on_rrpc<F>(&self, f: F) -> Result<()>
    where
        F: Fn(String, Vec<u8>) -> Vec<u8> + Send + Sync + 'static,
    {
        self.downlink_supported("RRPC")?;
        *self.inner.handlers.rrpc.write() = Some(Arc::new(f));
        Ok(())
    }

    /// Handles raw downlink (`thing/model/down_raw`); a returned payload is sent on
    /// `down_raw_reply`.
    pub fn on_raw_down<F>(&self, f: F) -> Result<()>
    where
        F: Fn(Vec<u8>) -> Option<Vec<u8>> + Send + Sync + 'static,
    {
        self.downlink_supported("raw downlink")?;
        *self.inner.handlers.raw_down.write() = Some(Arc::new(f));
        Ok(())
    }

    /// Called with the shadow (its `delta` is what to apply) when an operator sets desired
    /// values, and after each reconnect while a delta is pending.
    pub fn on_shadow_delta<F>(&self, f: F) -> Result<()>
    where
        F: Fn(ShadowDelta) + Send + Sync + 'static,
    {
        self.downlink_supported("shadow delta")?;
        *self.inner.handlers.shadow_delta.write() = Some(Arc::new(f));
        Ok(())
    }

    /// Says goodbye (MQTT DISCONNECT) and stops reconnecting. Buffered messages not yet sent
    /// are lost; check [`Device::buffer_stats`] first if that matters.
    pub async fn close(self) {
        self.flusher.abort();
        if let Link::Mqtt(m) = &self.inner.link {
            m.close().await;
        }
    }
}

/// Sends the offline buffer, oldest first, whenever there is something in it and the link is
/// up. A message leaves the buffer only once the platform answered it, so a drop during the
/// flush loses nothing (it may be sent twice: at-least-once).
async fn flush(inner: Arc<Inner>) {
    loop {
        inner.buffered.notified().await;
        let mut attempt = 0u32;
        loop {
            let Some(item) = inner.buffer.lock().front() else {
                break;
            };
            if let Link::Mqtt(m) = &inner.link {
                m.wait_connected().await;
            }
            match inner
                .link
                .request(
                    &item.topic,
                    item.payload.clone(),
                    &item.reply_topic,
                    &item.id,
                    inner.reply_timeout,
                )
                .await
            {
                Ok(bytes) => {
                    if let Err(e) = parse_reply(&bytes) {
                        tracing::warn!(topic = %item.topic, id = %item.id, error = %e, "the platform rejected a buffered message");
                    }
                    inner.buffer.lock().done(&item);
                    attempt = 0;
                }
                Err(Error::NotConnected | Error::Timeout(_) | Error::Transport(_)) => {
                    tokio::time::sleep(inner.backoff.delay(attempt)).await;
                    attempt = attempt.saturating_add(1);
                }
                Err(e) => {
                    tracing::warn!(topic = %item.topic, id = %item.id, error = %e, "dropping a buffered message that cannot be sent");
                    inner.buffer.lock().done(&item);
                }
            }
        }
    }
}
