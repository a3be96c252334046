//! An `app` that forwards device messages to its own system over HTTP (the URL comes from the
//! message's params so tests can point it at allowed, forbidden and slow servers) and publishes
//! status changes.
wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "app" });

use lotus::plugin::http::{self, Request};
use lotus::plugin::publish::publish;
use lotus::plugin::types::DeviceStatus;

struct HttpApp;

impl Guest for HttpApp {
    fn on_message(message: DeviceMessage) -> Result<(), String> {
        let params: serde_json::Value = serde_json::from_str(&message.params)
            .map_err(|e| format!("params is not JSON: {e}"))?;
        let url = params
            .get("url")
            .and_then(serde_json::Value::as_str)
            .ok_or("params.url missing")?;
        let response = http::send(&Request {
            method: "POST".to_string(),
            url: url.to_string(),
            headers: vec![("content-type".to_string(), "application/json".to_string())],
            body: Some(message.params.clone().into_bytes()),
            timeout_ms: None,
        })
        .map_err(|e| format!("http: {e:?}"))?;
        if !(200..300).contains(&response.status) {
            return Err(format!("http status {}", response.status));
        }
        Ok(())
    }

    fn on_status(change: StatusChange) -> Result<(), String> {
        let state = if change.status == DeviceStatus::Online {
            "online"
        } else {
            "offline"
        };
        let topic = format!(
            "app/status/{}/{}",
            change.device.product_key, change.device.device_name
        );
        publish(&topic, state.as_bytes(), 1).map_err(|e| format!("publish: {e:?}"))
    }

    fn on_event(_event: PlatformEvent) -> Result<(), String> {
        Ok(())
    }
}

export!(HttpApp);
