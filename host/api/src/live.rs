//! The live feed of one device for the portal's device page: Server-Sent Events of what the bus
//! says about the device (properties, status, events, shadow, lifecycle) and a message log of
//! what went up and down, for the debug panel.
//!
//! Each client gets its own bounded queue, filled by a task that reads the bus. The bus never
//! waits for a client: when a client reads too slowly its oldest events are dropped and it is
//! told how many with an `overflow` event. Property values are filtered by the caller's data
//! permissions (`lotus.data.fields`) exactly as the properties endpoint filters them. The
//! session and the policy are asked again every minute, so a feed stops when its session ends or
//! its caller loses the device; every feed ends when the node shuts down (otherwise a graceful
//! shutdown would wait for browsers to go away).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use base64::Engine;
use futures::Stream;
use lotus_bus::{DeviceEvent, Envelope, Received, Subscription, subject_token};
use lotus_model::alink::downlink_topic;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast, watch};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::ApiState;
use crate::auth::Authenticated;
use crate::problem::{ApiError, ApiResult, Path, Query};

/// Events a client may fall behind by before its oldest are dropped.
const CLIENT_QUEUE: usize = 256;
/// Downlinks announced but not yet taken by every feed (all devices together).
const DOWNLINK_CAPACITY: usize = 1024;
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How often an open feed checks that its session and its permission still hold.
const RECHECK: Duration = Duration::from_secs(60);

/// What the live feeds need besides the bus: the downlinks this API sends (the bus carries
/// only their replies) and the signal that ends every feed at shutdown. Cheap to clone.
#[derive(Clone)]
pub struct LiveHub {
    downlinks: broadcast::Sender<Arc<Downlink>>,
    closing: Arc<watch::Sender<bool>>,
}

/// A message sent to a device, as the live message log shows it.
#[derive(Debug)]
struct Downlink {
    product_key: String,
    device_name: String,
    topic: String,
    payload: Vec<u8>,
    at: i64,
}

impl Default for LiveHub {
    fn default() -> Self {
        LiveHub {
            downlinks: broadcast::channel(DOWNLINK_CAPACITY).0,
            closing: Arc::new(watch::channel(false).0),
        }
    }
}

impl LiveHub {
    /// Ends every open feed and refuses new ones.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Shows a message sent to a device in the device's feeds.
    pub(crate) fn downlink(&self, pk: &str, dn: &str, topic: String, payload: Vec<u8>, at: i64) {
        // No receivers is normal: nobody is watching the device.
        let _ = self.downlinks.send(Arc::new(Downlink {
            product_key: pk.to_string(),
            device_name: dn.to_string(),
            topic,
            payload,
            at,
        }));
    }
}

#[derive(Deserialize, IntoParams)]
pub struct LiveQuery {
    /// The session token, for clients that cannot send headers (a browser's `EventSource`);
    /// `Authorization: Bearer` is used when both are given.
    pub access_token: Option<String>,
}

/// The caller of a feed: the bearer header, or `?access_token=` on this route only.
pub struct FeedCaller(Authenticated);

impl FromRequestParts<ApiState> for FeedCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        if parts.headers.contains_key(header::AUTHORIZATION) {
            return Authenticated::from_request_parts(parts, state)
                .await
                .map(FeedCaller);
        }
        let Query(q) = Query::<LiveQuery>::from_request_parts(parts, state).await?;
        let token = q.access_token.filter(|t| !t.is_empty()).ok_or_else(|| {
            ApiError::unauthorized(
                "missing 'Authorization: Bearer <token>' or '?access_token=<token>': log in at POST /api/v1/auth/login",
            )
        })?;
        Authenticated::from_token(state, &token)
            .await
            .map(FeedCaller)
    }
}

/// A message in the live log (SSE event `message`).
#[derive(Serialize, ToSchema)]
pub struct LiveMessage {
    /// `up` (from the device) or `down` (to it).
    pub direction: &'static str,
    pub topic: String,
    /// The payload as UTF-8 text, or base64 when it is not text (see `encoding`).
    pub payload: String,
    /// `utf-8` or `base64`.
    pub encoding: &'static str,
    /// Unix milliseconds.
    pub time: i64,
}

/// Live events of a device (Server-Sent Events).
///
/// Events: `ready` `{productKey, deviceName, status, time}` once at the start; `property`
/// `{identifier, value, time}` for each stored property value the caller may see; `status`
/// `{status: online|offline, reason, time}`; `event` `{identifier, eventType, params, time}`;
/// `shadow` `{desired, reported, version, time}`; `lifecycle` `{action, time}`; `message`
/// (`LiveMessage`: uplinks as the platform decoded them, downlinks sent through this API);
/// `overflow` `{dropped}` when the client read too slowly and that many events were dropped;
/// `end` `{reason}` before the server ends the feed. A comment every 15 s keeps it open.
#[utoipa::path(get, path = "/api/v1/products/{productKey}/devices/{deviceName}/live", tag = "device data",
    security(("bearer" = [])),
    params(("productKey" = String, Path), ("deviceName" = String, Path), LiveQuery),
    responses(
        (status = 200, content_type = "text/event-stream", body = String,
            description = "An endless stream of Server-Sent Events"),
        (status = 401, body = crate::problem::Problem),
        (status = 403, body = crate::problem::Problem),
        (status = 404, body = crate::problem::Problem)))]
pub async fn live(
    State(state): State<ApiState>,
    FeedCaller(user): FeedCaller,
    Path((pk, dn)): Path<(String, String)>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    crate::authz::device(&state, &user, "device", "read", &pk, &dn).await?;
    let closing = state.live.closing.subscribe();
    if *closing.borrow() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the node is shutting down",
        ));
    }
    // A caller who may not read the data at all still sees status, events and messages; only
    // the values are withheld (an empty action list removes every field).
    let fields = crate::authz::data_fields(&state, &user, &pk)
        .await
        .unwrap_or_else(|_| json!({}));
    // Subscribed before answering, so nothing that happens after the answer is missed.
    let bus = state.plane.bus.subscribe(&format!(
        "device.{}.{}.>",
        subject_token(&pk),
        subject_token(&dn)
    ));
    let downlinks = state.live.downlinks.subscribe();
    let feed = Arc::new(Feed::default());
    let device = lotus_model::authz::DeviceId::new(&*pk, &*dn);
    feed.push(event(
        "ready",
        json!({"productKey": pk, "deviceName": dn,
               "status": if state.plane.is_online(&device) { "online" } else { "offline" },
               "time": lotus_device::now_ms()}),
    ));
    let forwarder = Forwarder {
        state: state.clone(),
        session: user.session().to_string(),
        pk,
        dn,
        fields,
        feed: feed.clone(),
    };
    let task = FeedTask::start(forwarder.run(bus, downlinks, closing));
    let stream = futures::stream::unfold((feed, task), |(feed, task)| async move {
        let next = feed.next().await?;
        let sse = Event::default()
            .event(next.name)
            .data(next.data.to_string());
        Some((Ok(sse), (feed, task)))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// One client's queue: bounded, dropping the oldest, counting what it dropped.
#[derive(Default)]
struct Feed {
    queue: Mutex<Queue>,
    ready: Notify,
}

#[derive(Default)]
struct Queue {
    events: VecDeque<Item>,
    dropped: u64,
    closed: bool,
}

impl Feed {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves a queue that is still consistent.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, e: Item) {
        let mut q = self.lock();
        if q.events.len() >= CLIENT_QUEUE {
            q.events.pop_front();
            q.dropped += 1;
            metrics::counter!("lotus_live_dropped_total").increment(1);
        }
        q.events.push_back(e);
        drop(q);
        self.ready.notify_one();
    }

    fn lost(&self, n: u64) {
        self.lock().dropped += n;
        self.ready.notify_one();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// The next event; `None` once the feed is closed and drained. An `overflow` comes before
    /// the events that followed the dropped ones.
    async fn next(&self) -> Option<Item> {
        loop {
            {
                let mut q = self.lock();
                if q.dropped > 0 {
                    let dropped = std::mem::take(&mut q.dropped);
                    return Some(event("overflow", json!({ "dropped": dropped })));
                }
                if let Some(e) = q.events.pop_front() {
                    return Some(e);
                }
                if q.closed {
                    return None;
                }
            }
            // notify_one keeps a permit when nobody waits, so a push between the check above
            // and this wait is not lost.
            self.ready.notified().await;
        }
    }
}

/// A feed's forwarder, stopped when the client goes away (its stream is dropped).
struct FeedTask(tokio::task::JoinHandle<()>);

impl FeedTask {
    fn start(forwarder: impl Future<Output = ()> + Send + 'static) -> Self {
        metrics::gauge!("lotus_live_feeds").increment(1.0);
        FeedTask(tokio::spawn(forwarder))
    }
}

impl Drop for FeedTask {
    fn drop(&mut self) {
        self.0.abort();
        metrics::gauge!("lotus_live_feeds").decrement(1.0);
    }
}

/// An SSE event before it is written: its name and its JSON data.
#[derive(Debug)]
struct Item {
    name: &'static str,
    data: Value,
}

fn event(name: &'static str, data: Value) -> Item {
    Item { name, data }
}

/// Reads the bus and the downlinks for one device into one client's feed.
struct Forwarder {
    state: ApiState,
    session: String,
    pk: String,
    dn: String,
    fields: Value,
    feed: Arc<Feed>,
}

impl Forwarder {
    async fn run(
        self,
        mut bus: Subscription,
        mut downlinks: broadcast::Receiver<Arc<Downlink>>,
        mut closing: watch::Receiver<bool>,
    ) {
        let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + RECHECK, RECHECK);
        let reason = loop {
            tokio::select! {
                received = bus.recv() => match received {
                    Received::Message(env) => {
                        self.envelope(&env);
                        if let DeviceEvent::Lifecycle { action } = &env.event
                            && action == "deleted"
                        {
                            break "the device was deleted";
                        }
                    }
                    Received::Lagged(n) => self.feed.lost(n),
                    Received::Closed => break "the node's bus closed",
                },
                sent = downlinks.recv() => match sent {
                    Ok(d) if d.product_key == self.pk && d.device_name == self.dn => {
                        self.feed.push(message("down", d.topic.clone(), &d.payload, d.at));
                    }
                    Ok(_) => {}
                    // Downlinks to other devices count too: at most this many were this one's.
                    Err(broadcast::error::RecvError::Lagged(n)) => self.feed.lost(n),
                    Err(broadcast::error::RecvError::Closed) => break "the node is shutting down",
                },
                // The guard wait_for returns is not Send, so it is dropped inside.
                _ = async { drop(closing.wait_for(|c| *c).await) } => {
                    break "the node is shutting down"
                }
                _ = recheck.tick() => match self.still_allowed().await.map_err(|e| e.status) {
                    Err(StatusCode::UNAUTHORIZED) => break "the session ended: log in again",
                    Err(StatusCode::FORBIDDEN) => break "you may no longer read this device",
                    Err(StatusCode::NOT_FOUND) => break "the device was deleted",
                    // Storage that does not answer for a moment is no reason to end a feed.
                    _ => {}
                },
            }
        };
        self.feed.push(event("end", json!({ "reason": reason })));
        self.feed.close();
    }

    async fn still_allowed(&self) -> ApiResult<()> {
        let user = Authenticated::from_session(&self.state, self.session.clone()).await?;
        crate::authz::device(&self.state, &user, "device", "read", &self.pk, &self.dn).await?;
        Ok(())
    }

    fn envelope(&self, env: &Envelope) {
        let (pk, dn, at) = (&env.product_key, &env.device_name, env.at);
        match &env.event {
            DeviceEvent::Properties { values } => {
                let mut shown = Value::Object(values.clone());
                lotus_model::mask::apply_field_actions(&mut shown, &self.fields);
                let Value::Object(shown) = shown else {
                    return;
                };
                if shown.is_empty() {
                    return;
                }
                for (identifier, value) in &shown {
                    self.feed.push(event(
                        "property",
                        json!({"identifier": identifier, "value": value, "time": at}),
                    ));
                }
                let payload = json!({"method": "thing.event.property.post", "params": shown});
                self.feed.push(message(
                    "up",
                    format!("/sys/{pk}/{dn}/thing/event/property/post"),
                    payload.to_string().as_bytes(),
                    at,
                ));
            }
            DeviceEvent::Status { online, reason } => self.feed.push(event(
                "status",
                json!({"status": if *online { "online" } else { "offline" },
                       "reason": reason, "time": at}),
            )),
            DeviceEvent::Event {
                identifier,
                event_type,
                params,
            } => {
                self.feed.push(event(
                    "event",
                    json!({"identifier": identifier, "eventType": event_type,
                           "params": params, "time": at}),
                ));
                let payload =
                    json!({"method": format!("thing.event.{identifier}.post"), "params": params});
                self.feed.push(message(
                    "up",
                    format!("/sys/{pk}/{dn}/thing/event/{identifier}/post"),
                    payload.to_string().as_bytes(),
                    at,
                ));
            }
            DeviceEvent::Reply {
                message_id,
                method,
                code,
                data,
            } => {
                // The bus does not say whether a reply came over RRPC; a method names the
                // topic a reply to it has (`thing.service.x` → `…/thing/service/x_reply`).
                let topic = if method.is_empty() {
                    format!("/sys/{pk}/{dn}/rrpc/response/{message_id}")
                } else {
                    downlink_topic::reply(&format!("/sys/{pk}/{dn}/{}", method.replace('.', "/")))
                };
                let payload = json!({"id": message_id, "code": code, "data": data});
                self.feed
                    .push(message("up", topic, payload.to_string().as_bytes(), at));
            }
            DeviceEvent::Shadow {
                desired,
                reported,
                version,
            } => self.feed.push(event(
                "shadow",
                json!({"desired": desired, "reported": reported, "version": version, "time": at}),
            )),
            DeviceEvent::Custom { topic, payload } => {
                self.feed
                    .push(message("up", topic.clone(), payload.as_bytes(), at));
            }
            DeviceEvent::Lifecycle { action } => self
                .feed
                .push(event("lifecycle", json!({"action": action, "time": at}))),
        }
    }
}

fn message(direction: &'static str, topic: String, payload: &[u8], time: i64) -> Item {
    let (payload, encoding) = match std::str::from_utf8(payload) {
        Ok(text) => (text.to_string(), "utf-8"),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(payload),
            "base64",
        ),
    };
    let m = LiveMessage {
        direction,
        topic,
        payload,
        encoding,
        time,
    };
    event(
        "message",
        serde_json::to_value(&m).expect("messages serialise"),
    )
}

/// The URI as logs may show it: a session token given as `access_token` is replaced, since
/// whoever reads the log could otherwise act as that user.
pub(crate) fn redact_token(uri: &axum::http::Uri) -> std::borrow::Cow<'_, str> {
    let Some(query) = uri.query().filter(|q| q.contains("access_token=")) else {
        return uri.to_string().into();
    };
    let query: Vec<&str> = query
        .split('&')
        .map(|pair| {
            if pair.starts_with("access_token=") {
                "access_token=***"
            } else {
                pair
            }
        })
        .collect();
    format!("{}?{}", uri.path(), query.join("&")).into()
}

#[derive(OpenApi)]
#[openapi(paths(live), components(schemas(LiveMessage)))]
pub(crate) struct LiveDoc;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_slow_client_loses_the_oldest_and_is_told() {
        let feed = Feed::default();
        for i in 0..CLIENT_QUEUE + 3 {
            feed.push(event("n", json!(i)));
        }
        feed.close();
        let mut got = Vec::new();
        while let Some(e) = feed.next().await {
            got.push(e);
        }
        // The overflow first, then the newest CLIENT_QUEUE events.
        assert_eq!(got.len(), CLIENT_QUEUE + 1);
        assert_eq!(got[0].name, "overflow");
        assert_eq!(got[0].data, json!({"dropped": 3}));
        assert_eq!(got[1].data, json!(3));
        assert_eq!(got[CLIENT_QUEUE].data, json!(CLIENT_QUEUE + 2));
    }

    #[test]
    fn tokens_stay_out_of_logs() {
        let uri: axum::http::Uri = "/api/v1/products/p/devices/d/live?x=1&access_token=s3cret"
            .parse()
            .unwrap();
        assert_eq!(
            redact_token(&uri),
            "/api/v1/products/p/devices/d/live?x=1&access_token=***"
        );
        let uri: axum::http::Uri = "/api/v1/devices?page=2".parse().unwrap();
        assert_eq!(redact_token(&uri), "/api/v1/devices?page=2");
    }

    #[test]
    fn binary_payloads_are_base64() {
        let m = message("up", "/t".into(), &[0xff, 0x00], 1);
        assert_eq!(m.name, "message");
        assert_eq!(m.data["encoding"], "base64");
        assert_eq!(m.data["payload"], "/wA=");
        let m = message("down", "/t".into(), b"{\"a\":1}", 1);
        assert_eq!(m.data["encoding"], "utf-8");
        assert_eq!(m.data["payload"], "{\"a\":1}");
        assert_eq!(m.data["direction"], "down");
    }
}
