//! An ISV integration: every message, status change and event it is subscribed to is POSTed to
//! the ISV's backend as JSON, signed so the backend can tell it came from this city's Lotus.

mod webhook;

use lotus_plugin_sdk::host::{clock, http, kv, secrets};
use lotus_plugin_sdk::serde_json::Value;
use lotus_plugin_sdk::types::{DeviceMessage, PlatformEvent, StatusChange};
use lotus_plugin_sdk::{App, export_app};

struct Webhook;

/// Posts one body; a non-2xx answer is an error so the host records and retries the delivery.
fn forward(body: Value) -> Result<(), String> {
    let config = kv::get_string("webhook")
        .map_err(|e| format!("kv `webhook`: {err}", err = e.describe()))?
        .ok_or("no endpoint configured in kv `webhook`")?;
    let config = webhook::parse_config(&config)?;
    let key = secrets::get(&config.secret)
        .map_err(|e| format!("secret {}: {err}", config.secret, err = e.describe()))?;
    let response = http::send(&webhook::request(
        &config,
        key.as_bytes(),
        clock::now_ms(),
        body,
    ))
    .map_err(|e| format!("POST {}: {err}", config.url, err = e.describe()))?;
    if !response.is_success() {
        let detail = String::from_utf8_lossy(&response.body);
        return Err(format!(
            "POST {} answered {}: {}",
            config.url,
            response.status,
            detail.chars().take(200).collect::<String>()
        ));
    }
    Ok(())
}

impl App for Webhook {
    fn on_message(message: DeviceMessage) -> Result<(), String> {
        forward(webhook::message_body(&message))
    }

    fn on_status(change: StatusChange) -> Result<(), String> {
        forward(webhook::status_body(&change))
    }

    fn on_event(event: PlatformEvent) -> Result<(), String> {
        forward(webhook::event_body(&event))
    }
}

export_app!(Webhook);

#[cfg(test)]
mod tests {
    use super::webhook::{self, Config};
    use lotus_plugin_sdk::serde_json::{Value, json};
    use lotus_plugin_sdk::types::{
        DeviceMessage, DeviceRef, DeviceStatus, MessageContext, StatusChange,
    };

    #[test]
    fn hmac_matches_rfc_4231() {
        // RFC 4231 test case 2 proves the HMAC-SHA256 primitive this plugin links.
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            lotus_plugin_sdk::hex::encode(&mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // The same primitive over "{timestamp}.{body}".
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"k").unwrap();
        mac.update(b"1700000000000.{}");
        assert_eq!(
            webhook::sign(b"k", 1_700_000_000_000, b"{}"),
            lotus_plugin_sdk::hex::encode(&mac.finalize().into_bytes())
        );
    }

    #[test]
    fn request_carries_signature_and_timestamp() {
        let config = Config {
            url: "https://hooks.acme.example/lotus".into(),
            secret: "acme-webhook-key".into(),
        };
        let request = webhook::request(
            &config,
            b"s3cret",
            1_700_000_000_000,
            json!({"type": "message"}),
        );
        assert_eq!(request.method, "POST");
        let body = request.body.clone().unwrap();
        let header = |name: &str| {
            request
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            header(webhook::TIMESTAMP_HEADER).as_deref(),
            Some("1700000000000")
        );
        assert_eq!(
            header(webhook::SIGNATURE_HEADER),
            Some(format!(
                "sha256={}",
                webhook::sign(b"s3cret", 1_700_000_000_000, &body)
            ))
        );
        assert_eq!(header("content-type").as_deref(), Some("application/json"));
    }

    #[test]
    fn bodies_carry_parsed_params() {
        let m = DeviceMessage {
            context: MessageContext {
                product_key: "a1Water".into(),
                device_name: "WM-1".into(),
                topic: "/sys/a1Water/WM-1/thing/event/property/post".into(),
                at_ms: 5,
            },
            method: "thing.event.property.post".into(),
            params: r#"{"CumulativeFlow":12.5}"#.into(),
        };
        let body = webhook::message_body(&m);
        assert_eq!(body["params"], json!({"CumulativeFlow": 12.5}));
        let s = StatusChange {
            device: DeviceRef {
                product_key: "a1Water".into(),
                device_name: "WM-1".into(),
            },
            status: DeviceStatus::Offline,
            reason: "keepalive_timeout".into(),
            at_ms: 6,
        };
        assert_eq!(webhook::status_body(&s)["status"], Value::from("offline"));
    }

    #[test]
    fn config_must_be_https() {
        assert!(webhook::parse_config(r#"{"url":"http://x","secret":"s"}"#).is_err());
        assert_eq!(
            webhook::parse_config(r#"{"url":"https://x/y","secret":"s"}"#).unwrap(),
            Config {
                url: "https://x/y".into(),
                secret: "s".into()
            }
        );
    }
}
