//! A routed message and one delivery of it to one session.

use std::num::NonZeroU32;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::time::Instant;

use crate::codec;
use crate::hooks::{PublishProperties, QoS};

/// A message on its way to subscribers. Shared by every delivery (`Arc`), so topic and payload
/// are never copied per subscriber.
#[derive(Debug)]
pub(crate) struct Message {
    pub topic: Arc<str>,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// MQTT 5 properties passed on to v5 subscribers, encoded once. Message Expiry and
    /// Subscription Identifiers differ per delivery and are written by the encoder.
    pub properties: Option<Bytes>,
    /// When the message expires (v5 Message Expiry Interval).
    pub expires_at: Option<Instant>,
}

impl Message {
    pub fn new(topic: Arc<str>, payload: Bytes, qos: QoS, retain: bool) -> Self {
        Self {
            topic,
            payload,
            qos,
            retain,
            properties: None,
            expires_at: None,
        }
    }

    pub fn with_properties(mut self, props: Option<&PublishProperties>) -> Self {
        if let Some(p) = props {
            self.properties = encode_forwarded(p);
            self.expires_at = p
                .message_expiry_interval
                .map(|s| Instant::now() + std::time::Duration::from_secs(u64::from(s)));
        }
        self
    }

    /// A copy for the retained store: its payload no longer pins the connection's read buffer
    /// that it was sliced from.
    pub fn detached(&self) -> Self {
        Self {
            topic: self.topic.clone(),
            payload: Bytes::copy_from_slice(&self.payload),
            qos: self.qos,
            retain: true,
            properties: self.properties.clone(),
            expires_at: self.expires_at,
        }
    }

    /// Seconds left before expiry: `None` for no expiry, `Some(0)` once expired.
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|at| {
            let left = at.saturating_duration_since(now);
            if left.is_zero() {
                0
            } else {
                // Round up so that a message is never announced as already expired.
                u32::try_from(left.as_secs() + u64::from(left.subsec_nanos() > 0))
                    .unwrap_or(u32::MAX)
            }
        })
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        self.remaining_expiry(now) == Some(0)
    }
}

/// One message queued for one session.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub msg: Arc<Message>,
    /// min(publish QoS, granted QoS).
    pub qos: QoS,
    /// The RETAIN flag to send.
    pub retain: bool,
    /// v5 Subscription Identifier of the matching subscription.
    pub sub_id: Option<NonZeroU32>,
}

/// Encodes the properties a broker forwards unchanged (MQTT 5 §3.3.2.3): payload format,
/// content type, response topic, correlation data and user properties.
fn encode_forwarded(p: &PublishProperties) -> Option<Bytes> {
    let mut b = BytesMut::new();
    if let Some(pfi) = p.payload_format_indicator {
        b.put_u8(0x01);
        b.put_u8(pfi);
    }
    if let Some(ct) = &p.content_type {
        b.put_u8(0x03);
        codec::put_str(&mut b, ct);
    }
    if let Some(rt) = &p.response_topic {
        b.put_u8(0x08);
        codec::put_str(&mut b, rt);
    }
    if let Some(cd) = &p.correlation_data {
        b.put_u8(0x09);
        codec::put_bin(&mut b, cd);
    }
    for (k, v) in &p.user_properties {
        b.put_u8(0x26);
        codec::put_str(&mut b, k);
        codec::put_str(&mut b, v);
    }
    (!b.is_empty()).then(|| b.freeze())
}
