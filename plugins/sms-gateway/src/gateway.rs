//! The SMS gateway API (README.md), without host calls so it tests natively.

use lotus_plugin_sdk::host::http::Request;
use lotus_plugin_sdk::serde_json::{Value, json};
use lotus_plugin_sdk::{Delivery, DeliveryStatus};

/// The longest text sent; longer ones are cut with `…`, since gateways refuse or bill
/// by the segment, and the full text stays in the in-app message and the delivery record.
pub const MAX_TEXT_CHARS: usize = 480;

/// Where and as whom to send: from the plugin secrets `gateway-url`, `gateway-token` and
/// (optional) `gateway-sender`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `https://sms.example` — the API is under `{base}/v1/`.
    pub base_url: String,
    pub token: String,
    pub sender: Option<String>,
}

impl Config {
    /// Checks the base URL; the error says what to set.
    pub fn new(base_url: &str, token: &str, sender: Option<&str>) -> Result<Config, String> {
        let base_url = base_url.trim().trim_end_matches('/');
        if !(base_url.starts_with("https://") || base_url.starts_with("http://"))
            || base_url.len() <= "https://".len()
        {
            return Err(format!(
                "secret gateway-url must be the gateway's base URL, e.g. https://sms.example, not `{base_url}`"
            ));
        }
        if token.trim().is_empty() {
            return Err("secret gateway-token is empty; set the gateway's API token".to_owned());
        }
        Ok(Config {
            base_url: base_url.to_owned(),
            token: token.trim().to_owned(),
            sender: sender
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        })
    }

    pub fn messages_url(&self) -> String {
        format!("{}/v1/messages", self.base_url)
    }
}

/// SMS has no subject line; it leads the text so the recipient sees it first.
pub fn text(subject: &str, body: &str) -> String {
    let full = match (subject.is_empty(), body.is_empty()) {
        (true, _) => body.to_owned(),
        (false, true) => subject.to_owned(),
        (false, false) => format!("{subject}: {body}"),
    };
    if full.chars().count() <= MAX_TEXT_CHARS {
        full
    } else {
        let mut cut: String = full.chars().take(MAX_TEXT_CHARS - 1).collect();
        cut.push('…');
        cut
    }
}

/// A phone number as gateways take it: E.164 (`+8613800000001`), or national digits. A
/// `tel:` prefix is dropped; spaces and dashes people write are removed.
pub fn phone_number(recipient: &str) -> Result<String, String> {
    let raw = recipient.strip_prefix("tel:").unwrap_or(recipient);
    let number: String = raw.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    let digits = number.strip_prefix('+').unwrap_or(&number);
    if (5..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(number)
    } else {
        Err(format!(
            "`{recipient}` is not a phone number (write +8613800000001)"
        ))
    }
}

/// The same message to the same number always gets the same reference, so a gateway can
/// recognise the platform's retry of a message it already took (FNV-1a, 64 bits).
pub fn reference(to: &str, text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in to.bytes().chain([0]).chain(text.bytes()) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("lotus-{hash:016x}")
}

pub fn request(config: &Config, to: &str, text: &str) -> Request {
    let mut body = json!({"to": to, "text": text, "reference": reference(to, text)});
    if let Some(sender) = &config.sender {
        body["sender"] = Value::String(sender.clone());
    }
    lotus_plugin_sdk::host::http::post_json(
        &config.messages_url(),
        vec![(
            "authorization".to_owned(),
            format!("Bearer {}", config.token),
        )],
        body.to_string().into_bytes(),
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

impl Outcome {
    pub fn failed(recipient: &str, detail: String) -> Outcome {
        Outcome {
            recipient: recipient.to_owned(),
            status: DeliveryStatus::Failed,
            provider_id: None,
            detail,
        }
    }
}

/// Reads the gateway's answer (README.md, "Responses").
pub fn outcome(recipient: &str, status: u16, body: &[u8]) -> Outcome {
    let json: Value = lotus_plugin_sdk::serde_json::from_slice(body).unwrap_or(Value::Null);
    let provider_id = json.get("id").and_then(Value::as_str).map(str::to_owned);
    let reported = json.get("status").and_then(Value::as_str);
    let (status, detail) = match (status, reported) {
        (200..=299, Some("delivered")) => (DeliveryStatus::Delivered, "delivered".to_owned()),
        (200..=299, Some("failed")) => (
            DeliveryStatus::Failed,
            format!("the gateway could not send it: {}", error_text(&json, body)),
        ),
        (200..=299, Some(s @ ("queued" | "sent"))) => {
            (DeliveryStatus::Accepted, format!("accepted ({s})"))
        }
        (200..=299, other) => (
            DeliveryStatus::Failed,
            format!(
                "the gateway answered {status} with status {} (expected queued, sent, delivered or failed)",
                other.map_or("(none)".to_owned(), |s| format!("`{s}`"))
            ),
        ),
        (401 | 403, _) => (
            DeliveryStatus::Failed,
            format!(
                "HTTP {status}: the gateway refused the token (check secret gateway-token): {}",
                error_text(&json, body)
            ),
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

/// The gateway's own words: `{"error": {"code", "message"}}`, else the body's start.
fn error_text(json: &Value, body: &[u8]) -> String {
    let error = &json["error"];
    match (
        error.get("code").and_then(Value::as_str),
        error.get("message").and_then(Value::as_str),
    ) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (None, Some(message)) => message.to_owned(),
        _ => match error.as_str() {
            Some(text) => text.to_owned(),
            None => String::from_utf8_lossy(body).chars().take(200).collect(),
        },
    }
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
