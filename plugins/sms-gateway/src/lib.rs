//! Lotus channel plugin that sends each recipient a text message through an HTTP SMS gateway;
//! the gateway API and the configuration are in README.md.

mod gateway;
#[cfg(test)]
mod tests;

use lotus_plugin_sdk::host::{http, log, secrets};
use lotus_plugin_sdk::types::Notification;
use lotus_plugin_sdk::{Channel, Delivery, export_channel};

struct SmsGateway;

fn secret(name: &str) -> Result<Option<String>, String> {
    match secrets::get(name) {
        Ok(value) => Ok(Some(value)),
        Err(lotus_plugin_sdk::types::HostError::NotFound(_)) => Ok(None),
        Err(e) => Err(format!("secret {name}: {err}", err = e.describe())),
    }
}

fn config() -> Result<gateway::Config, String> {
    let required = |name: &str| {
        secret(name)?.ok_or_else(|| {
            format!("secret {name} is not set (PUT /api/v1/plugins/<id>/secrets/{name})")
        })
    };
    let url = required("gateway-url")?;
    let token = required("gateway-token")?;
    let sender = secret("gateway-sender")?;
    gateway::Config::new(&url, &token, sender.as_deref())
}

impl Channel for SmsGateway {
    fn deliver(notification: Notification) -> Result<Delivery, String> {
        let config = config()?;
        let text = gateway::text(&notification.subject, &notification.body);
        // One request per recipient: the API takes one number per message, and one unreachable
        // number must not hide the others' outcomes.
        let outcomes: Vec<gateway::Outcome> = notification
            .recipients
            .iter()
            .map(|to| {
                let number = match gateway::phone_number(to) {
                    Ok(n) => n,
                    Err(e) => return gateway::Outcome::failed(to, e),
                };
                match http::send(&gateway::request(&config, &number, &text)) {
                    Ok(response) => gateway::outcome(to, response.status, &response.body),
                    Err(e) => gateway::Outcome::failed(
                        to,
                        format!(
                            "gateway {} not reached: {err}",
                            config.base_url,
                            err = e.describe()
                        ),
                    ),
                }
            })
            .collect();
        let delivery = gateway::combine(&outcomes);
        if delivery.status == lotus_plugin_sdk::DeliveryStatus::Failed {
            log::warn(&delivery.detail);
        }
        Ok(delivery)
    }
}

export_channel!(SmsGateway);
