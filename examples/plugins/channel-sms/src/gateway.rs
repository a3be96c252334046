//! The SMS gateway API (README.md), without host calls so it tests natively.

use lotus_plugin_sdk::host::http::Request;
use lotus_plugin_sdk::serde_json::{self, Value, json};
use lotus_plugin_sdk::{Delivery, DeliveryStatus};

/// kv `sms`: `{"endpoint": "https://sms.acme.example/v1/messages", "tokenSecret": "acme-sms-token"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub endpoint: String,
    pub token_secret: String,
}

pub fn parse_config(text: &str) -> Result<Config, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("kv `sms` is not JSON: {e}"))?;
    let field = |name: &str| {
        v.get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or(format!("kv `sms`.{name} must be a string"))
    };
    Ok(Config {
        endpoint: field("endpoint")?,
        token_secret: field("tokenSecret")?,
    })
}

/// SMS has no subject line; it leads the text so the recipient sees it first.
pub fn text(subject: &str, body: &str) -> String {
    match (subject.is_empty(), body.is_empty()) {
        (true, _) => body.to_owned(),
        (false, true) => subject.to_owned(),
        (false, false) => format!("{subject}: {body}"),
    }
}

pub fn request(config: &Config, token: &str, to: &str, text: &str) -> Request {
    let body = json!({ "to": to, "text": text }).to_string().into_bytes();
    lotus_plugin_sdk::host::http::post_json(
        &config.endpoint,
        vec![("authorization".to_owned(), format!("Bearer {token}"))],
        body,
    )
}

/// What the gateway said about one recipient.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub recipient: String,
    pub status: DeliveryStatus,
    pub provider_id: Option<String>,
    pub detail: String,
}

/// Reads the gateway's answer: 200 `{"id","status":"delivered"}`, 202 `{"id","status":"queued"}`,
/// otherwise `{"error"}`.
pub fn outcome(recipient: &str, status: u16, body: &[u8]) -> Outcome {
    let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let provider_id = json.get("id").and_then(Value::as_str).map(str::to_owned);
    let reported = json.get("status").and_then(Value::as_str);
    let (status, detail) = match (status, reported) {
        (200..=299, Some("delivered")) => (DeliveryStatus::Delivered, "delivered".to_owned()),
        (200..=299, Some("failed")) => (DeliveryStatus::Failed, error_text(&json, body)),
        (200..=299, _) => (
            DeliveryStatus::Accepted,
            format!("accepted ({})", reported.unwrap_or("no status")),
        ),
        (code, _) => (
            DeliveryStatus::Failed,
            format!("HTTP {code}: {}", error_text(&json, body)),
        ),
    };
    Outcome {
        recipient: recipient.to_owned(),
        status,
        provider_id,
        detail,
    }
}

fn error_text(json: &Value, body: &[u8]) -> String {
    json.get("error")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect())
}

/// One status for the notification: failed if any recipient failed (someone was not reached),
/// else accepted if any is still pending, else delivered.
pub fn combine(outcomes: &[Outcome]) -> Delivery {
    let any = |s: DeliveryStatus| outcomes.iter().any(|o| o.status == s);
    let status = if outcomes.is_empty() || any(DeliveryStatus::Failed) {
        DeliveryStatus::Failed
    } else if any(DeliveryStatus::Accepted) {
        DeliveryStatus::Accepted
    } else {
        DeliveryStatus::Delivered
    };
    let ids: Vec<&str> = outcomes
        .iter()
        .filter_map(|o| o.provider_id.as_deref())
        .collect();
    let detail = if outcomes.is_empty() {
        "no recipients".to_owned()
    } else {
        outcomes
            .iter()
            .map(|o| format!("{}: {}", o.recipient, o.detail))
            .collect::<Vec<_>>()
            .join("; ")
    };
    Delivery {
        status,
        provider_id: (!ids.is_empty()).then(|| ids.join(",")),
        detail,
    }
}
