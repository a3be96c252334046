//! Sending queued notifications: e-mail over SMTP from here, SMS and IM through the channel's
//! `channel` plugin. Each delivery is retried with back-off on errors that may pass, then
//! marked dead with the reason; its state is what `/api/v1/deliveries` shows.

use async_trait::async_trait;
use lotus_notify::{Email, SmtpChannel, SmtpConfig};
use lotus_storage::{DeliveryRow, Store};

use crate::action::{MAX_ATTEMPTS, backoff};

/// Delivery through a `channel` plugin (implemented by the node over the plugin runtime).
#[async_trait]
pub trait ChannelPlugins: Send + Sync + 'static {
    /// Delivers one message; `Err((reason, transient))` when it failed.
    async fn deliver(
        &self,
        plugin_id: &str,
        recipient: &str,
        subject: &str,
        body: &str,
    ) -> Result<Option<String>, (String, bool)>;
}

/// Sends the deliveries that are due; returns how many were attempted.
pub async fn drain(
    store: &Store,
    plugins: &dyn ChannelPlugins,
    retry_base: std::time::Duration,
    now: i64,
) -> usize {
    let due = match store.due_deliveries(now, 32).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "notification queue unreadable");
            return 0;
        }
    };
    let n = due.len();
    for d in due {
        let outcome = send(store, plugins, &d).await;
        let at = crate::now_ms();
        let result = match outcome {
            Ok(message_id) => store.delivery_sent(d.id, message_id.as_deref(), at).await,
            Err((reason, true)) if d.attempts + 1 < MAX_ATTEMPTS => {
                let next = at + backoff(retry_base, d.attempts + 1).as_millis() as i64;
                store.delivery_retry(d.id, next, &reason, at).await
            }
            Err((reason, _)) => store.delivery_dead(d.id, &reason, at).await,
        };
        if let Err(e) = result {
            tracing::warn!(delivery = d.id, error = %e, "delivery state not recorded");
        }
    }
    n
}

async fn send(
    store: &Store,
    plugins: &dyn ChannelPlugins,
    d: &DeliveryRow,
) -> Result<Option<String>, (String, bool)> {
    let channel = store
        .get_channel(&d.channel_id)
        .await
        .map_err(|e| (e.to_string(), true))?
        .ok_or_else(|| (format!("channel `{}` was deleted", d.channel_id), false))?;
    if !channel.enabled {
        return Err((format!("channel `{}` is disabled", channel.id), true));
    }
    match channel.kind.as_str() {
        "email" => {
            let mut config: SmtpConfig = serde_json::from_value(channel.config.clone())
                .map_err(|e| (format!("channel `{}`: {e}", channel.id), false))?;
            if let Some(secret) = store
                .channel_secret(&channel.id)
                .await
                .map_err(|e| (e.to_string(), true))?
            {
                config.password = Some(secret.expose().to_string());
            }
            let smtp = SmtpChannel::new(config).map_err(|e| (e.to_string(), false))?;
            let mail = Email {
                to: vec![d.recipient.clone()],
                subject: d.subject.clone(),
                body_text: d.body.clone(),
                body_html: None,
            };
            smtp.send(&mail)
                .await
                .map(|delivery| Some(delivery.message_id))
                .map_err(|e| (e.to_string(), e.is_transient()))
        }
        "sms" | "im" => {
            let plugin = channel.plugin_id.as_deref().ok_or_else(|| {
                (
                    format!("channel `{}` names no channel plugin", channel.id),
                    false,
                )
            })?;
            plugins
                .deliver(plugin, &d.recipient, &d.subject, &d.body)
                .await
        }
        other => Err((
            format!(
                "channel `{}` of kind {other} cannot send deliveries",
                channel.id
            ),
            false,
        )),
    }
}
