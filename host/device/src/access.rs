//! Device access over request/response transports (CoAP, HTTP).
//!
//! Devices that wake up, send and sleep do not keep a connection: they prove their secret once
//! (`/auth`, the same Alink signature as an MQTT login) and get a token, then publish to topics
//! with it. Every publish goes through the same ACL and uplink pipeline as an MQTT publish and
//! is answered after the commit, with the reply an MQTT device would get on its `_reply` topic.
//!
//! Tokens live in memory: a restart or a revoked device makes them unknown, and the device's
//! next request is told to authenticate again, which it must handle for expiry anyway.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use lotus_model::alink::SignMethod;
use lotus_model::authz::{Decision, DeviceId, Principal, TopicAction};
use lotus_mqtt::{InboundPublish, PublishVerdict, QoS};
use serde::Deserialize;
use serde_json::Value;

use crate::DevicePlane;
use crate::connect::{LoginRefusal, Proof};
use crate::uplink::Answer;

/// How long a token is valid unless the node is configured otherwise (Alibaba's 48 hours).
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(48 * 3600);

/// The body of `POST /auth`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRequest {
    pub product_key: String,
    pub device_name: String,
    pub client_id: String,
    #[serde(default, deserialize_with = "string_or_number")]
    pub timestamp: Option<String>,
    #[serde(default, rename = "signmethod", alias = "signMethod")]
    pub sign_method: Option<String>,
    pub sign: String,
}

/// Alink devices send the timestamp as a string or as a number.
fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::Null) | None => None,
        Some(other) => {
            return Err(serde::de::Error::custom(format!(
                "timestamp must be a string or a number, not {other}"
            )));
        }
    })
}

/// A token handed to a device.
#[derive(Debug, Clone)]
pub struct DeviceToken {
    pub token: String,
    pub device: DeviceId,
    pub expires_at_ms: i64,
}

/// Why a request from a device was not carried out. Each transport maps these to its own
/// codes (CoAP 4.00/4.01/4.03/5.03, HTTP 400/401/403/503).
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The request itself is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// No valid credential or token: authenticate (again).
    #[error("{0}")]
    Unauthorized(String),
    /// The token was valid and has run out: authenticate again. Firmware tells this apart from
    /// a wrong token (Alibaba's code 20001), so it re-authenticates instead of giving up.
    #[error("{0}")]
    TokenExpired(String),
    /// The device may not do this (ACL, disabled device).
    #[error("{0}")]
    Forbidden(String),
    /// The platform refused the message and answered as it would on the reply topic (the
    /// body names the offending field).
    #[error("rejected: {0}")]
    Rejected(Value),
    /// Storage or the writer is not available; retry later.
    #[error("{0}")]
    Unavailable(String),
}

struct TokenEntry {
    device: DeviceId,
    expires_at_ms: i64,
}

/// Tokens by value, and the current token of each (device, transport) so that a device that
/// authenticates every time it wakes does not pile up tokens.
#[derive(Default)]
pub(crate) struct TokenTable {
    by_token: DashMap<Arc<str>, TokenEntry>,
    by_device: DashMap<(DeviceId, &'static str), Arc<str>>,
}

impl TokenTable {
    fn insert(&self, device: &DeviceId, transport: &'static str, ttl: Duration) -> DeviceToken {
        let token: Arc<str> = crate::connect::generate_secret().into();
        let expires_at_ms = crate::now_ms().saturating_add(ttl.as_millis() as i64);
        self.by_token.insert(
            token.clone(),
            TokenEntry {
                device: device.clone(),
                expires_at_ms,
            },
        );
        if let Some(old) = self
            .by_device
            .insert((device.clone(), transport), token.clone())
        {
            self.by_token.remove(&old);
        }
        DeviceToken {
            token: token.to_string(),
            device: device.clone(),
            expires_at_ms,
        }
    }

    fn lookup(&self, token: &str) -> Result<DeviceId, AccessError> {
        let Some(entry) = self.by_token.get(token) else {
            return Err(AccessError::Unauthorized(
                "unknown token: POST /auth to get a new one".into(),
            ));
        };
        if entry.expires_at_ms <= crate::now_ms() {
            drop(entry);
            self.by_token.remove(token);
            return Err(AccessError::TokenExpired(
                "the token has expired: POST /auth to get a new one".into(),
            ));
        }
        Ok(entry.device.clone())
    }

    /// Forgets every token of a device (deleted, disabled, secret changed).
    pub(crate) fn revoke(&self, device: &DeviceId) {
        self.by_device.retain(|(d, _), token| {
            if d == device {
                self.by_token.remove(token);
                false
            } else {
                true
            }
        });
    }
}

impl DevicePlane {
    /// Checks a device's `/auth` request and issues a token for `transport` ("coap", "http", …).
    pub async fn issue_token(
        &self,
        req: &TokenRequest,
        transport: &'static str,
    ) -> Result<DeviceToken, AccessError> {
        let method = match req.sign_method.as_deref() {
            None => SignMethod::HmacMd5,
            Some(name) => SignMethod::parse(name).ok_or_else(|| {
                AccessError::BadRequest(format!(
                    "signmethod '{name}' is not supported: use hmacsha256, hmacsha1 or hmacmd5"
                ))
            })?,
        };
        let proof = Proof::Sign {
            method,
            client_id: &req.client_id,
            timestamp: req.timestamp.as_deref(),
            sign: &req.sign,
        };
        let device = self
            .check_device_login(&req.product_key, &req.device_name, proof)
            .await
            .map_err(|refusal| match refusal {
                LoginRefusal::BadCredentials(m) => AccessError::Unauthorized(m),
                LoginRefusal::NotAuthorized(m) => AccessError::Forbidden(m),
                LoginRefusal::Unavailable => {
                    AccessError::Unavailable("storage unavailable; retry later".into())
                }
            })?;
        metrics::counter!("lotus_device_tokens_issued_total", "transport" => transport)
            .increment(1);
        Ok(self
            .tokens
            .insert(&device, transport, self.config.token_ttl))
    }

    /// The device a token was issued to.
    pub fn token_device(&self, token: &str) -> Result<DeviceId, AccessError> {
        self.tokens.lookup(token)
    }

    /// A device's secret, for transports that derive keys from it (DTLS PSK, payload
    /// encryption). Unknown and disabled devices get no key.
    pub async fn device_secret(
        &self,
        product_key: &str,
        device_name: &str,
    ) -> Result<String, AccessError> {
        match self.store.device_secret(product_key, device_name).await {
            Ok(Some((secret, true))) => Ok(secret.expose().to_string()),
            Ok(Some((_, false))) => Err(AccessError::Forbidden("the device is disabled".into())),
            Ok(None) => Err(AccessError::Unauthorized(format!(
                "unknown device '{device_name}' of product '{product_key}'"
            ))),
            Err(e) => {
                tracing::error!(error = %e, "device lookup failed");
                Err(AccessError::Unavailable(
                    "storage unavailable; retry later".into(),
                ))
            }
        }
    }

    /// Publishes on behalf of an authenticated device, exactly as an MQTT QoS 1 publish: ACL,
    /// validation, commit, then routing to subscribers. Returns the platform's answer (the
    /// `_reply` body, or the shadow's reply) once the data is durable.
    pub async fn publish_from_device(
        self: &Arc<Self>,
        device: &DeviceId,
        topic: &str,
        payload: Bytes,
    ) -> Result<Option<Value>, AccessError> {
        if topic.is_empty() || topic.contains(['+', '#', '\0']) || topic.len() > 65_535 {
            return Err(AccessError::BadRequest(format!(
                "'{topic}' is not a topic name: it must be non-empty, without wildcards"
            )));
        }
        let principal = Principal::Device(device.clone());
        if let Decision::Deny(reason) =
            self.authorizer
                .authorize_topic(&principal, TopicAction::Publish, topic)
        {
            return Err(AccessError::Forbidden(format!(
                "device {device} may not publish to '{topic}': {reason}"
            )));
        }
        let publish = InboundPublish {
            topic: topic.into(),
            payload,
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: None,
        };
        let answer = Answer::caller();
        match self.uplink_answering(device, &publish, &answer).await {
            PublishVerdict::Route { ack } => {
                if let Some(ack) = ack {
                    match ack.await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Err(AccessError::Unavailable(e)),
                        Err(_) => {
                            return Err(AccessError::Unavailable(
                                "the telemetry writer has stopped".into(),
                            ));
                        }
                    }
                }
                // Subscribers (applications, rules) see it as if the device had published
                // over MQTT.
                self.broker()
                    .publish(topic, publish.payload, QoS::AtLeastOnce, false)
                    .await;
                Ok(answer.take())
            }
            PublishVerdict::Refuse { reason, .. } => Err(match answer.take() {
                Some(body) => AccessError::Rejected(body),
                None => AccessError::BadRequest(reason),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_token_replaces_the_old_one_of_the_same_transport() {
        let table = TokenTable::default();
        let device = DeviceId::new("pk", "dn");
        let first = table.insert(&device, "coap", Duration::from_secs(60));
        let http = table.insert(&device, "http", Duration::from_secs(60));
        let second = table.insert(&device, "coap", Duration::from_secs(60));
        assert!(table.lookup(&first.token).is_err());
        assert_eq!(table.lookup(&second.token).unwrap(), device);
        assert_eq!(table.lookup(&http.token).unwrap(), device);
        table.revoke(&device);
        assert!(table.lookup(&second.token).is_err());
        assert!(table.lookup(&http.token).is_err());
    }

    #[test]
    fn an_expired_token_is_refused_with_a_hint() {
        let table = TokenTable::default();
        let token = table.insert(&DeviceId::new("pk", "dn"), "http", Duration::ZERO);
        let err = table.lookup(&token.token).unwrap_err();
        assert!(err.to_string().contains("POST /auth"), "{err}");
    }

    #[test]
    fn timestamps_are_accepted_as_numbers_or_strings() {
        let r: TokenRequest = serde_json::from_str(
            r#"{"productKey":"pk","deviceName":"dn","clientId":"c","timestamp":1700000000000,"signmethod":"hmacsha256","sign":"ab"}"#,
        )
        .unwrap();
        assert_eq!(r.timestamp.as_deref(), Some("1700000000000"));
        assert_eq!(r.sign_method.as_deref(), Some("hmacsha256"));
    }
}
