//! A notification channel that sends each recipient an SMS through the ACME SMS gateway.

mod gateway;

use lotus_plugin_sdk::host::{http, kv, secrets};
use lotus_plugin_sdk::types::Notification;
use lotus_plugin_sdk::{Channel, Delivery, DeliveryStatus, export_channel};

struct Sms;

impl Channel for Sms {
    fn deliver(notification: Notification) -> Result<Delivery, String> {
        let config = kv::get_string("sms")
            .map_err(|e| format!("kv `sms`: {err}", err = e.describe()))?
            .ok_or("no gateway configured in kv `sms`")?;
        let config = gateway::parse_config(&config)?;
        let token = secrets::get(&config.token_secret)
            .map_err(|e| format!("secret {}: {err}", config.token_secret, err = e.describe()))?;
        let text = gateway::text(&notification.subject, &notification.body);
        // One request per recipient: the gateway takes one number per message, and one
        // unreachable number must not hide the others' outcomes.
        let outcomes: Vec<gateway::Outcome> = notification
            .recipients
            .iter()
            .map(
                |to| match http::send(&gateway::request(&config, &token, to, &text)) {
                    Ok(response) => gateway::outcome(to, response.status, &response.body),
                    Err(e) => gateway::Outcome {
                        recipient: to.clone(),
                        status: DeliveryStatus::Failed,
                        provider_id: None,
                        detail: format!("gateway not reached: {err}", err = e.describe()),
                    },
                },
            )
            .collect();
        Ok(gateway::combine(&outcomes))
    }
}

export_channel!(Sms);

#[cfg(test)]
mod tests {
    use super::gateway::{self, Config};
    use lotus_plugin_sdk::DeliveryStatus;
    use lotus_plugin_sdk::serde_json::{Value, json};

    fn config() -> Config {
        gateway::parse_config(
            r#"{"endpoint":"https://sms.acme.example/v1/messages","tokenSecret":"acme-sms-token"}"#,
        )
        .unwrap()
    }

    #[test]
    fn request_is_bearer_authenticated_json() {
        let r = gateway::request(&config(), "tok", "+8613800000001", "Manhole open: MH-0042");
        assert_eq!(
            (r.method.as_str(), r.url.as_str()),
            ("POST", "https://sms.acme.example/v1/messages")
        );
        assert!(
            r.headers
                .contains(&("authorization".into(), "Bearer tok".into()))
        );
        let body: Value =
            lotus_plugin_sdk::serde_json::from_slice(r.body.as_ref().unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"to": "+8613800000001", "text": "Manhole open: MH-0042"})
        );
        assert_eq!(gateway::text("", "body"), "body");
    }

    #[test]
    fn gateway_answers_map_to_statuses() {
        let delivered = gateway::outcome("a", 200, br#"{"id":"m1","status":"delivered"}"#);
        assert_eq!(
            (delivered.status, delivered.provider_id.as_deref()),
            (DeliveryStatus::Delivered, Some("m1"))
        );
        assert_eq!(
            gateway::outcome("b", 202, br#"{"id":"m2","status":"queued"}"#).status,
            DeliveryStatus::Accepted
        );
        let refused = gateway::outcome("c", 400, br#"{"error":"invalid number"}"#);
        assert_eq!(
            (refused.status, refused.detail.as_str()),
            (DeliveryStatus::Failed, "HTTP 400: invalid number")
        );
        assert_eq!(
            gateway::outcome("d", 502, b"Bad Gateway").detail,
            "HTTP 502: Bad Gateway"
        );
    }

    #[test]
    fn one_failure_fails_the_notification() {
        let ok = gateway::outcome("a", 200, br#"{"id":"m1","status":"delivered"}"#);
        let queued = gateway::outcome("b", 202, br#"{"id":"m2","status":"queued"}"#);
        let failed = gateway::outcome("c", 400, br#"{"error":"invalid number"}"#);

        let d = gateway::combine(&[ok.clone(), queued.clone()]);
        assert_eq!(
            (d.status, d.provider_id.as_deref()),
            (DeliveryStatus::Accepted, Some("m1,m2"))
        );
        assert_eq!(
            gateway::combine(std::slice::from_ref(&ok)).status,
            DeliveryStatus::Delivered
        );
        let d = gateway::combine(&[ok, failed]);
        assert_eq!(d.status, DeliveryStatus::Failed);
        assert!(
            d.detail.contains("c: HTTP 400: invalid number"),
            "{}",
            d.detail
        );
        assert_eq!(gateway::combine(&[]).status, DeliveryStatus::Failed);
    }
}
