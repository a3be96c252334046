//! What the operations center reaches outside itself on this node: the device plane (property
//! sets, service calls, MQTT publishes for rule actions) and `channel` plugins (SMS, IM).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lotus_device::DevicePlane;
use lotus_device::downlink::CallOutcome;
use lotus_model::authz::DeviceId;
use lotus_operations::{ChannelPlugins, DeviceCommands};
use lotus_plugin::PluginRuntime;
use lotus_plugin::wit::v0_1_0::{DeliveryStatus, types};
use serde_json::{Value, json};

/// How long a rule waits for a device to answer a synchronous service call.
const SERVICE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct PlaneCommands(pub Arc<DevicePlane>);

#[async_trait]
impl DeviceCommands for PlaneCommands {
    async fn set_properties(
        &self,
        product_key: &str,
        device_name: &str,
        params: Value,
    ) -> Result<String, String> {
        self.0
            .set_properties(&DeviceId::new(product_key, device_name), params)
            .await
            .map_err(|e| e.to_string())
    }

    async fn invoke_service(
        &self,
        product_key: &str,
        device_name: &str,
        identifier: &str,
        params: Value,
    ) -> Result<Value, String> {
        let outcome = self
            .0
            .invoke_service(
                &DeviceId::new(product_key, device_name),
                identifier,
                params,
                SERVICE_TIMEOUT,
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(match outcome {
            CallOutcome::Replied { message_id, reply } => {
                json!({"messageId": message_id, "code": reply.code, "data": reply.data})
            }
            CallOutcome::Sent { message_id } => json!({"messageId": message_id}),
        })
    }

    async fn publish(&self, topic: &str, payload: Vec<u8>, qos: u8) -> Result<usize, String> {
        let qos = match qos {
            0 => lotus_mqtt::QoS::AtMostOnce,
            _ => lotus_mqtt::QoS::AtLeastOnce,
        };
        Ok(self
            .0
            .broker()
            .publish(topic, payload.into(), qos, false)
            .await)
    }
}

pub struct PluginChannels(pub PluginRuntime);

#[async_trait]
impl ChannelPlugins for PluginChannels {
    async fn deliver(
        &self,
        plugin_id: &str,
        recipient: &str,
        subject: &str,
        body: &str,
    ) -> Result<Option<String>, (String, bool)> {
        let channel = self.0.channel(plugin_id).ok_or_else(|| {
            (
                format!("plugin `{plugin_id}` is not a running channel plugin"),
                true,
            )
        })?;
        let notification = types::Notification {
            channel: plugin_id.to_string(),
            recipients: vec![recipient.to_string()],
            subject: subject.to_string(),
            body: body.to_string(),
        };
        // A channel plugin makes blocking HTTP calls through the host.
        let delivery = tokio::task::spawn_blocking(move || channel.deliver(&notification))
            .await
            .map_err(|e| (format!("channel plugin `{plugin_id}` panicked: {e}"), true))?
            .map_err(|e| (e.to_string(), true))?;
        match delivery.status {
            DeliveryStatus::Delivered | DeliveryStatus::Accepted => Ok(delivery.provider_id),
            DeliveryStatus::Failed => Err((
                format!(
                    "channel plugin `{plugin_id}` could not deliver: {}",
                    delivery.detail
                ),
                true,
            )),
        }
    }
}
