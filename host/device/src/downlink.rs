//! Property sets and service calls to devices, correlated with their replies by message id.
//!
//! Synchronous services go over RRPC (`/sys/{pk}/{dn}/rrpc/request/{messageId}`) and the caller
//! waits for the answer; asynchronous ones go to `/thing/service/{identifier}` and the caller
//! gets a message id whose reply is stored when it arrives.

use std::sync::Arc;
use std::time::Duration;

use lotus_bus::{DeviceEvent, Envelope};
use lotus_model::alink::{Reply, Request, downlink_topic};
use lotus_model::authz::DeviceId;
use lotus_model::thing_model::CallType;
use lotus_mqtt::QoS;
use lotus_storage::DownlinkRow;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::{DevicePlane, PlaneError};

/// The outcome of a service call.
pub enum CallOutcome {
    /// A synchronous service answered.
    Replied { message_id: String, reply: Reply },
    /// An asynchronous call was sent; its reply is stored under this id.
    Sent { message_id: String },
}

impl DevicePlane {
    fn model_of(
        &self,
        device: &DeviceId,
    ) -> Result<Arc<crate::registry::ThingModelEntry>, PlaneError> {
        let product = self.registry.get(&device.product_key).ok_or_else(|| {
            PlaneError::NotFound(format!("product '{}' not found", device.product_key))
        })?;
        product.thing_model.clone().ok_or_else(|| {
            PlaneError::Invalid(format!(
                "product '{}' has no thing model",
                device.product_key
            ))
        })
    }

    async fn ensure_device(&self, device: &DeviceId) -> Result<(), PlaneError> {
        if self
            .store
            .get_device(&device.product_key, &device.device_name)
            .await?
            .is_none()
        {
            return Err(PlaneError::NotFound(format!("device '{device}' not found")));
        }
        if !self.is_online(device) {
            return Err(PlaneError::NotConnected(device.clone()));
        }
        Ok(())
    }

    async fn send_request(
        &self,
        device: &DeviceId,
        topic: String,
        method: String,
        params: Value,
        message_id: String,
    ) -> Result<(), PlaneError> {
        let row = DownlinkRow {
            message_id: message_id.clone(),
            product_key: device.product_key.to_string(),
            device_name: device.device_name.to_string(),
            method: method.clone(),
            params: params.clone(),
            status: "sent".into(),
            reply_code: None,
            reply_data: None,
            reply_message: None,
            created_at: crate::now_ms(),
            replied_at: None,
        };
        self.store.insert_downlink(&row).await?;
        let request = Request {
            id: message_id.clone(),
            version: "1.0".into(),
            params,
            method: Some(method),
            sys: None,
        };
        let (topic, payload, class) = match self.encode_downlink(device, &request).await {
            Ok(Some((raw_topic, raw))) => (raw_topic, raw, "raw"),
            Ok(None) => {
                let payload = serde_json::to_vec(&request).expect("requests serialise");
                let class = if topic.contains("/rrpc/request/") {
                    "rrpc"
                } else if request.method.as_deref() == Some("thing.service.property.set") {
                    "property_set"
                } else {
                    "service"
                };
                (topic, payload.into(), class)
            }
            Err(e) => {
                self.store
                    .complete_downlink(
                        &device.product_key,
                        &device.device_name,
                        &message_id,
                        "failed",
                        None,
                        None,
                        Some(&e.to_string()),
                        crate::now_ms(),
                    )
                    .await?;
                return Err(e);
            }
        };
        let delivered = self
            .send_to_device(&topic, payload, QoS::AtLeastOnce, class)
            .await;
        if delivered == 0 {
            self.store
                .complete_downlink(
                    &device.product_key,
                    &device.device_name,
                    &message_id,
                    "failed",
                    None,
                    None,
                    Some("the device is not subscribed to the topic"),
                    crate::now_ms(),
                )
                .await?;
            return Err(PlaneError::NotConnected(device.clone()));
        }
        Ok(())
    }

    /// Sets read-write properties (asynchronous: the reply is stored under the message id).
    pub async fn set_properties(
        &self,
        device: &DeviceId,
        params: Value,
    ) -> Result<String, PlaneError> {
        let model = self.model_of(device)?;
        model.compiled.validate_property_set(&params)?;
        self.ensure_device(device).await?;
        let message_id = self.next_message_id();
        self.send_request(
            device,
            downlink_topic::property_set(&device.product_key, &device.device_name),
            "thing.service.property.set".into(),
            params,
            message_id.clone(),
        )
        .await?;
        Ok(message_id)
    }

    /// Invokes a service. Synchronous services wait up to `timeout` for the device's answer.
    pub async fn invoke_service(
        &self,
        device: &DeviceId,
        identifier: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<CallOutcome, PlaneError> {
        let model = self.model_of(device)?;
        let service = model.model.service(identifier).ok_or_else(|| {
            PlaneError::NotFound(format!("service '{identifier}' is not in the thing model"))
        })?;
        model.compiled.validate_service_input(identifier, &params)?;
        let sync = service.call_type == CallType::Sync;
        self.ensure_device(device).await?;
        let message_id = self.next_message_id();
        let method = format!("thing.service.{identifier}");
        if !sync {
            self.send_request(
                device,
                downlink_topic::service(&device.product_key, &device.device_name, identifier),
                method,
                params,
                message_id.clone(),
            )
            .await?;
            return Ok(CallOutcome::Sent { message_id });
        }
        let (tx, rx) = oneshot::channel();
        self.pending.insert(message_id.clone(), tx);
        if let Err(e) = self
            .send_request(
                device,
                downlink_topic::rrpc_request(&device.product_key, &device.device_name, &message_id),
                method,
                params,
                message_id.clone(),
            )
            .await
        {
            self.pending.remove(&message_id);
            return Err(e);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(CallOutcome::Replied { message_id, reply }),
            _ => {
                self.pending.remove(&message_id);
                self.store
                    .complete_downlink(
                        &device.product_key,
                        &device.device_name,
                        &message_id,
                        "timeout",
                        None,
                        None,
                        Some("no reply within the timeout"),
                        crate::now_ms(),
                    )
                    .await?;
                Err(PlaneError::Timeout(Self::timeout_ms(timeout)))
            }
        }
    }

    /// A reply arrived from the device.
    pub(crate) async fn complete_call(&self, device: &DeviceId, message_id: &str, reply: Reply) {
        let status = if reply.code == lotus_model::alink::code::SUCCESS {
            "replied"
        } else {
            "failed"
        };
        match self
            .store
            .complete_downlink(
                &device.product_key,
                &device.device_name,
                message_id,
                status,
                Some(reply.code),
                Some(&reply.data),
                reply.message.as_deref(),
                crate::now_ms(),
            )
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(device = %device, message_id, "reply to an unknown message")
            }
            Err(e) => {
                tracing::error!(device = %device, error = %e, "storing a device reply failed")
            }
        }
        let method = reply.method.clone().unwrap_or_default();
        self.bus.publish(Envelope::device(
            &device.product_key,
            &device.device_name,
            crate::now_ms(),
            DeviceEvent::Reply {
                message_id: message_id.to_string(),
                method,
                code: reply.code,
                data: reply.data.clone(),
            },
        ));
        if let Some((_, waiter)) = self.pending.remove(message_id) {
            let _ = waiter.send(reply);
        }
    }
}
