//! The internal bus: everything that happens to a device is published here once, for rules,
//! apps, the portal's live views and (later) other nodes.
//!
//! Messages are plain serialisable values and subjects are hierarchical, NATS-style
//! (`device.{productKey}.{deviceName}.property`), so a JetStream implementation of [`Bus`] can
//! replace the in-process one without touching publishers or subscribers.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;

/// What happened to a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DeviceEvent {
    /// Came online or went offline.
    Status { online: bool, reason: String },
    /// Property values that were validated and committed to storage.
    Properties {
        values: serde_json::Map<String, Value>,
    },
    /// A thing-model event the device posted.
    Event {
        identifier: String,
        event_type: String,
        params: Value,
    },
    /// A device answered a downlink (property set, service call, RRPC).
    Reply {
        message_id: String,
        method: String,
        code: i64,
        data: Value,
    },
    /// The shadow changed (desired by the platform or reported by the device).
    Shadow {
        desired: Value,
        reported: Value,
        version: i64,
    },
    /// A message on one of the product's custom topics (payload as UTF-8 when it is text).
    Custom { topic: String, payload: String },
    /// Created, enabled, disabled or deleted through the API.
    Lifecycle { action: String },
}

impl DeviceEvent {
    /// The last subject token, which subscribers filter on.
    pub fn kind(&self) -> &'static str {
        match self {
            DeviceEvent::Status { .. } => "status",
            DeviceEvent::Properties { .. } => "property",
            DeviceEvent::Event { .. } => "event",
            DeviceEvent::Reply { .. } => "reply",
            DeviceEvent::Shadow { .. } => "shadow",
            DeviceEvent::Custom { .. } => "custom",
            DeviceEvent::Lifecycle { .. } => "lifecycle",
        }
    }
}

/// One message on the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub subject: String,
    pub product_key: String,
    pub device_name: String,
    /// Unix milliseconds when the platform observed it.
    pub at: i64,
    pub event: DeviceEvent,
}

impl Envelope {
    pub fn device(product_key: &str, device_name: &str, at: i64, event: DeviceEvent) -> Self {
        Envelope {
            subject: device_subject(product_key, device_name, event.kind()),
            product_key: product_key.to_string(),
            device_name: device_name.to_string(),
            at,
            event,
        }
    }
}

/// Device names may contain `.`, which separates subject tokens; such tokens are
/// percent-encoded so subjects stay unambiguous.
pub fn subject_token(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['.', '*', '>', ' ', '%']) {
        let mut out = String::with_capacity(s.len() + 8);
        for c in s.chars() {
            match c {
                '.' => out.push_str("%2E"),
                '*' => out.push_str("%2A"),
                '>' => out.push_str("%3E"),
                ' ' => out.push_str("%20"),
                '%' => out.push_str("%25"),
                c => out.push(c),
            }
        }
        out.into()
    } else {
        s.into()
    }
}

pub fn device_subject(product_key: &str, device_name: &str, kind: &str) -> String {
    format!(
        "device.{}.{}.{kind}",
        subject_token(product_key),
        subject_token(device_name)
    )
}

/// NATS subject matching: `*` is one token, `>` one or more trailing tokens.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Publish/subscribe between the parts of a node (and, with a distributed implementation,
/// between nodes).
pub trait Bus: Send + Sync + 'static {
    fn publish(&self, envelope: Envelope);
    /// Receives every later message whose subject matches `pattern`.
    fn subscribe(&self, pattern: &str) -> Subscription;
}

/// A stream of matching messages. A subscriber that falls more than the bus capacity behind
/// is told how many it missed (never silently): see [`Received::Lagged`].
pub struct Subscription {
    pattern: String,
    rx: broadcast::Receiver<Arc<Envelope>>,
}

pub enum Received {
    Message(Arc<Envelope>),
    /// The subscriber was too slow and this many messages were skipped.
    Lagged(u64),
    Closed,
}

impl Subscription {
    pub async fn recv(&mut self) -> Received {
        loop {
            match self.rx.recv().await {
                Ok(env) if subject_matches(&self.pattern, &env.subject) => {
                    return Received::Message(env);
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    metrics::counter!("lotus_bus_lagged_total").increment(n);
                    tracing::warn!(pattern = %self.pattern, missed = n, "bus subscriber fell behind");
                    return Received::Lagged(n);
                }
                Err(broadcast::error::RecvError::Closed) => return Received::Closed,
            }
        }
    }
}

/// The single-node bus: one broadcast channel.
pub struct LocalBus {
    tx: broadcast::Sender<Arc<Envelope>>,
}

impl LocalBus {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity);
        LocalBus { tx }
    }
}

impl Bus for LocalBus {
    fn publish(&self, envelope: Envelope) {
        metrics::counter!("lotus_bus_published_total").increment(1);
        // No receivers is not an error: nobody is listening yet.
        let _ = self.tx.send(Arc::new(envelope));
    }

    fn subscribe(&self, pattern: &str) -> Subscription {
        Subscription {
            pattern: pattern.to_string(),
            rx: self.tx.subscribe(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects() {
        assert_eq!(
            device_subject("pk", "a.b", "status"),
            "device.pk.a%2Eb.status"
        );
        assert!(subject_matches("device.*.*.status", "device.pk.d.status"));
        assert!(subject_matches("device.>", "device.pk.d.status"));
        assert!(!subject_matches("device.*.status", "device.pk.d.status"));
    }

    #[tokio::test]
    async fn delivers_matching_only() {
        let bus = LocalBus::new(16);
        let mut sub = bus.subscribe("device.*.*.status");
        bus.publish(Envelope::device(
            "pk",
            "d",
            1,
            DeviceEvent::Lifecycle {
                action: "created".into(),
            },
        ));
        bus.publish(Envelope::device(
            "pk",
            "d",
            2,
            DeviceEvent::Status {
                online: true,
                reason: "connected".into(),
            },
        ));
        match sub.recv().await {
            Received::Message(m) => assert_eq!(m.at, 2),
            _ => panic!("expected a message"),
        }
    }
}
