//! The webhook request and its signature, without host calls so they test natively.

use hmac::{Hmac, Mac};
use lotus_plugin_sdk::host::http::Request;
use lotus_plugin_sdk::serde_json::{self, Value, json};
use lotus_plugin_sdk::types::{DeviceMessage, DeviceStatus, PlatformEvent, StatusChange};
use sha2::Sha256;

pub const SIGNATURE_HEADER: &str = "x-lotus-signature";
pub const TIMESTAMP_HEADER: &str = "x-lotus-timestamp";

/// kv `webhook`: `{"url": "https://hooks.acme.example/lotus", "secret": "acme-webhook-key"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub url: String,
    /// The name of the operator-configured secret holding the signing key.
    pub secret: String,
}

pub fn parse_config(text: &str) -> Result<Config, String> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| format!("kv `webhook` is not JSON: {e}"))?;
    let field = |name: &str| {
        v.get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or(format!("kv `webhook`.{name} must be a string"))
    };
    let config = Config {
        url: field("url")?,
        secret: field("secret")?,
    };
    if !config.url.starts_with("https://") {
        return Err("kv `webhook`.url must be https: the body carries city data".to_owned());
    }
    Ok(config)
}

/// Hex HMAC-SHA256 over `{timestamp}.{body}`: binding the timestamp lets the receiver refuse
/// replays of an old, validly signed body.
pub fn sign(key: &[u8], timestamp_ms: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(timestamp_ms.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    lotus_plugin_sdk::hex::encode(&mac.finalize().into_bytes())
}

pub fn request(config: &Config, key: &[u8], timestamp_ms: i64, body: Value) -> Request {
    let body = body.to_string().into_bytes();
    let signature = format!("sha256={}", sign(key, timestamp_ms, &body));
    lotus_plugin_sdk::host::http::post_json(
        &config.url,
        vec![
            (SIGNATURE_HEADER.to_owned(), signature),
            (TIMESTAMP_HEADER.to_owned(), timestamp_ms.to_string()),
        ],
        body,
    )
}

/// Params are JSON text in the WIT; the receiver gets them as JSON, or as text if malformed.
fn json_or_text(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

pub fn message_body(m: &DeviceMessage) -> Value {
    json!({
        "type": "message",
        "productKey": m.context.product_key,
        "deviceName": m.context.device_name,
        "topic": m.context.topic,
        "at": m.context.at_ms,
        "method": m.method,
        "params": json_or_text(&m.params),
    })
}

pub fn status_body(s: &StatusChange) -> Value {
    json!({
        "type": "status",
        "productKey": s.device.product_key,
        "deviceName": s.device.device_name,
        "status": match s.status { DeviceStatus::Online => "online", DeviceStatus::Offline => "offline" },
        "reason": s.reason,
        "at": s.at_ms,
    })
}

pub fn event_body(e: &PlatformEvent) -> Value {
    json!({
        "type": "event",
        "id": e.id,
        "kind": e.kind,
        "eventType": e.event_type,
        "severity": e.severity,
        "productKey": e.device.as_ref().map(|d| d.product_key.clone()),
        "deviceName": e.device.as_ref().map(|d| d.device_name.clone()),
        "fields": json_or_text(&e.fields),
        "at": e.at_ms,
    })
}
