//! A `channel` that posts the notification to a webhook (the first recipient is its URL) with a
//! bearer token read from the `webhook-token` secret.
wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "channel" });

use lotus::plugin::http::{self, Request};
use lotus::plugin::secrets;

struct MinimalChannel;

impl Guest for MinimalChannel {
    fn deliver(notification: Notification) -> Result<Delivery, String> {
        let url = notification.recipients.first().ok_or("no recipient")?;
        let token = secrets::get("webhook-token").map_err(|e| format!("secret: {e:?}"))?;
        let body =
            serde_json::json!({ "subject": notification.subject, "body": notification.body });
        let response = http::send(&Request {
            method: "POST".to_string(),
            url: url.clone(),
            headers: vec![("authorization".to_string(), format!("Bearer {token}"))],
            body: Some(body.to_string().into_bytes()),
            timeout_ms: Some(2_000),
        })
        .map_err(|e| format!("http: {e:?}"))?;
        Ok(match response.status {
            200 => Delivery {
                status: DeliveryStatus::Delivered,
                provider_id: Some(String::from_utf8_lossy(&response.body).into_owned()),
                detail: "webhook answered 200".to_string(),
            },
            202 => Delivery {
                status: DeliveryStatus::Accepted,
                provider_id: None,
                detail: "queued".to_string(),
            },
            other => Delivery {
                status: DeliveryStatus::Failed,
                provider_id: None,
                detail: format!("status {other}"),
            },
        })
    }
}

export!(MinimalChannel);
