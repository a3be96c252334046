//! What happens to a message a device publishes.
//!
//! Alink topics are classified, JSON is parsed and checked against the product's thing model,
//! and valid data goes to the group-commit writer. The device's `_reply` (and its PUBACK) follow
//! the commit. An invalid message gets a `_reply` with a non-200 code that names the offending
//! field; the connection stays up.

use std::sync::Arc;

use bytes::Bytes;
use lotus_bus::{DeviceEvent, Envelope};
use lotus_model::alink::{Reply, Request, UplinkTopic, code, parse_uplink_topic};
use lotus_model::authz::DeviceId;
use lotus_model::thing_model::{numeric_value, property_post_values};
use lotus_mqtt::{InboundPublish, PublishVerdict};
use lotus_storage::{EventRecord, PropertyRecord};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::DevicePlane;
use crate::codec::CustomTopic;
use crate::writer::WriteItem;

/// Where the platform's answer to a device message goes. An MQTT device gets it on a reply
/// topic it subscribed to; a request/response transport (CoAP, HTTP) has no subscription and
/// returns it in the response to the very request, so it is kept for the caller.
pub(crate) enum Answer {
    /// Publish it to the device's reply topic; the request came on this MQTT connection.
    Topic {
        connection_id: u64,
    },
    Caller(parking_lot::Mutex<Option<Value>>),
}

impl Answer {
    pub(crate) fn caller() -> Self {
        Answer::Caller(parking_lot::Mutex::new(None))
    }

    pub(crate) fn take(&self) -> Option<Value> {
        match self {
            Answer::Topic { .. } => None,
            Answer::Caller(slot) => slot.lock().take(),
        }
    }

    fn is_caller(&self) -> bool {
        matches!(self, Answer::Caller(_))
    }
}

/// v5 PUBACK reason for a payload the platform cannot accept.
pub(crate) const PAYLOAD_FORMAT_INVALID: u8 = 0x99;
pub(crate) const IMPLEMENTATION_SPECIFIC_ERROR: u8 = 0x83;

fn refuse(reason: impl Into<String>) -> PublishVerdict {
    PublishVerdict::Refuse {
        code: PAYLOAD_FORMAT_INVALID,
        reason: reason.into(),
    }
}

impl DevicePlane {
    /// Handles one publish from an authenticated device (already authorised for the topic).
    pub async fn uplink(
        self: &Arc<Self>,
        device: &DeviceId,
        connection_id: u64,
        publish: &InboundPublish,
    ) -> PublishVerdict {
        self.uplink_answering(device, publish, &Answer::Topic { connection_id })
            .await
    }

    pub(crate) async fn uplink_answering(
        self: &Arc<Self>,
        device: &DeviceId,
        publish: &InboundPublish,
        answer: &Answer,
    ) -> PublishVerdict {
        let Some((pk, dn, kind)) = parse_uplink_topic(&publish.topic) else {
            metrics::counter!("lotus_uplink_messages_total", "class" => "other").increment(1);
            return PublishVerdict::Route { ack: None };
        };
        metrics::counter!("lotus_uplink_messages_total", "class" => kind.class()).increment(1);
        // The ACL lets a device use only its own topics, or a gateway its sub-devices': the
        // message is then the sub-device's own.
        let sub_device;
        let device = if *device.product_key == *pk && *device.device_name == *dn {
            device
        } else if let Some(sub) = self.sub_device_of(device, pk, dn) {
            sub_device = sub;
            &sub_device
        } else {
            return PublishVerdict::Route { ack: None };
        };
        match kind {
            UplinkTopic::TopoAdd
            | UplinkTopic::TopoDelete
            | UplinkTopic::TopoGet
            | UplinkTopic::SubDeviceLogin
            | UplinkTopic::SubDeviceLogout => {
                self.gateway_request(device, kind, publish, answer).await
            }
            UplinkTopic::PropertyPost => self.property_post(device, publish, answer).await,
            UplinkTopic::EventPost { identifier } => {
                self.event_post(device, identifier, publish, answer).await
            }
            UplinkTopic::PropertySetReply
            | UplinkTopic::PropertyGetReply
            | UplinkTopic::ServiceReply { .. } => self.device_reply(device, None, publish),
            UplinkTopic::RawDownReply => match self.raw_down_reply(device, publish).await {
                Some(verdict) => verdict,
                None => self.device_reply(device, None, publish),
            },
            UplinkTopic::RrpcResponse { message_id } => {
                self.device_reply(device, Some(message_id), publish)
            }
            UplinkTopic::ShadowUpdate => {
                self.shadow_from_device(device, &publish.payload, answer)
                    .await
            }
            UplinkTopic::DeviceInfoUpdate | UplinkTopic::DeviceInfoDelete => {
                let update = kind == UplinkTopic::DeviceInfoUpdate;
                self.device_info(device, update, publish, answer).await
            }
            UplinkTopic::RawUp => self.raw_uplink(device, publish, answer).await,
            UplinkTopic::Custom { .. } => {
                if let CustomTopic::Handled(verdict) =
                    self.custom_uplink(device, publish, answer).await
                {
                    return verdict;
                }
                self.bus.publish(Envelope::device(
                    pk,
                    dn,
                    crate::now_ms(),
                    DeviceEvent::Custom {
                        topic: publish.topic.to_string(),
                        payload: String::from_utf8_lossy(&publish.payload).into_owned(),
                    },
                ));
                PublishVerdict::Route { ack: None }
            }
        }
    }

    /// Answers at once (used for errors, which are not stored).
    pub(crate) async fn reply_now(&self, request_topic: &str, reply: &Reply, answer: &Answer) {
        let topic = lotus_model::alink::downlink_topic::reply(request_topic);
        let body = serde_json::to_value(reply).expect("replies serialise");
        self.answer(answer, &topic, body, lotus_mqtt::QoS::AtMostOnce, "reply")
            .await;
    }

    /// Sends an answer the way the device's transport expects it.
    pub(crate) async fn answer(
        &self,
        answer: &Answer,
        topic: &str,
        body: Value,
        qos: lotus_mqtt::QoS,
        class: &'static str,
    ) {
        match answer {
            Answer::Topic { .. } => {
                let payload = serde_json::to_vec(&body).expect("JSON values serialise");
                self.send_to_device(topic, payload.into(), qos, class).await;
            }
            Answer::Caller(slot) => *slot.lock() = Some(body),
        }
    }

    /// Answers the device with an error on the request's `_reply` topic and refuses the
    /// publish, so it is neither stored nor routed.
    async fn reply_error(
        &self,
        (publish, answer): (&InboundPublish, &Answer),
        id: &str,
        code: i64,
        message: impl std::fmt::Display,
        method: &str,
    ) -> PublishVerdict {
        let message = message.to_string();
        let reply = Reply::error(id, code, &message, Some(method));
        self.reply_now(&publish.topic, &reply, answer).await;
        refuse(message)
    }

    async fn parse_request(
        &self,
        to: (&InboundPublish, &Answer),
        method: &str,
    ) -> Result<Request, PublishVerdict> {
        match serde_json::from_slice::<Request>(&to.0.payload) {
            Ok(r) => Ok(r),
            Err(e) => {
                let msg = format!("payload is not an Alink JSON request: {e}");
                Err(self
                    .reply_error(to, "", code::REQUEST_ERROR, msg, method)
                    .await)
            }
        }
    }

    pub(crate) async fn property_post(
        self: &Arc<Self>,
        device: &DeviceId,
        publish: &InboundPublish,
        answer: &Answer,
    ) -> PublishVerdict {
        const METHOD: &str = "thing.event.property.post";
        let to = (publish, answer);
        let request = match self.parse_request(to, METHOD).await {
            Ok(r) => r,
            Err(v) => return v,
        };
        let model = self
            .registry
            .get(&device.product_key)
            .and_then(|p| p.thing_model.clone());
        let Some(model) = model else {
            let msg = format!(
                "product '{}' has no thing model: upload one before devices post properties",
                device.product_key
            );
            return self
                .reply_error(to, &request.id, code::NO_THING_MODEL, msg, METHOD)
                .await;
        };
        if let Err(e) = model.compiled.validate_property_post(&request.params) {
            metrics::counter!("lotus_uplink_invalid_total").increment(1);
            return self
                .reply_error(to, &request.id, code::PARAM_ERROR, e, METHOD)
                .await;
        }
        let now = crate::now_ms();
        let mut values = serde_json::Map::new();
        let properties: Vec<PropertyRecord> = property_post_values(&request.params)
            .into_iter()
            .map(|(identifier, value, time)| {
                values.insert(identifier.clone(), value.clone());
                PropertyRecord {
                    product_key: device.product_key.to_string(),
                    device_name: device.device_name.to_string(),
                    num: numeric_value(&value),
                    identifier,
                    value,
                    ts: time.unwrap_or(now),
                }
            })
            .collect();
        let announce = vec![Envelope::device(
            &device.product_key,
            &device.device_name,
            now,
            DeviceEvent::Properties { values },
        )];
        self.commit_then_reply(to, &request, METHOD, properties, Vec::new(), announce)
            .await
    }

    pub(crate) async fn event_post(
        self: &Arc<Self>,
        device: &DeviceId,
        identifier: &str,
        publish: &InboundPublish,
        answer: &Answer,
    ) -> PublishVerdict {
        let method = format!("thing.event.{identifier}.post");
        let to = (publish, answer);
        let request = match self.parse_request(to, &method).await {
            Ok(r) => r,
            Err(v) => return v,
        };
        let model = self
            .registry
            .get(&device.product_key)
            .and_then(|p| p.thing_model.clone());
        let Some(model) = model else {
            let msg = format!("product '{}' has no thing model", device.product_key);
            return self
                .reply_error(to, &request.id, code::NO_THING_MODEL, msg, &method)
                .await;
        };
        let Some(event) = model.model.event(identifier) else {
            let msg = format!("event '{identifier}' is not in the thing model");
            return self
                .reply_error(to, &request.id, code::METHOD_NOT_FOUND, msg, &method)
                .await;
        };
        // Events carry their output parameters in params.value (Alink), or directly in params.
        let params = request
            .params
            .get("value")
            .cloned()
            .unwrap_or_else(|| request.params.clone());
        if let Err(e) = model.compiled.validate_event_post(identifier, &params) {
            metrics::counter!("lotus_uplink_invalid_total").increment(1);
            return self
                .reply_error(to, &request.id, code::PARAM_ERROR, e, &method)
                .await;
        }
        let ts = request
            .params
            .get("time")
            .and_then(|t| t.as_i64())
            .unwrap_or_else(crate::now_ms);
        let event_type = event.event_type.as_str().to_string();
        let record = EventRecord {
            product_key: device.product_key.to_string(),
            device_name: device.device_name.to_string(),
            identifier: identifier.to_string(),
            event_type: event_type.clone(),
            params: params.clone(),
            ts,
        };
        let announce = vec![Envelope::device(
            &device.product_key,
            &device.device_name,
            ts,
            DeviceEvent::Event {
                identifier: identifier.to_string(),
                event_type,
                params,
            },
        )];
        self.commit_then_reply(to, &request, &method, Vec::new(), vec![record], announce)
            .await
    }

    /// Hands writes to the group-commit writer; PUBACK, `_reply` and bus follow the commit.
    async fn commit_then_reply(
        &self,
        (publish, answer): (&InboundPublish, &Answer),
        request: &Request,
        method: &str,
        properties: Vec<PropertyRecord>,
        events: Vec<EventRecord>,
        announce: Vec<Envelope>,
    ) -> PublishVerdict {
        let success = Reply::success(&request.id, serde_json::json!({}), Some(method));
        let mut reply = None;
        match answer {
            // The caller waits for the commit (`ack`) and then returns this in its response.
            Answer::Caller(slot) => {
                *slot.lock() = Some(serde_json::to_value(&success).expect("replies serialise"))
            }
            Answer::Topic { .. } if request.wants_reply() => {
                reply = Some((
                    lotus_model::alink::downlink_topic::reply(&publish.topic),
                    Bytes::from(serde_json::to_vec(&success).expect("replies serialise")),
                ))
            }
            Answer::Topic { .. } => {}
        }
        let (ack, waiter) = if publish.qos != lotus_mqtt::QoS::AtMostOnce || answer.is_caller() {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let item = WriteItem {
            properties,
            events,
            ack,
            reply,
            announce,
        };
        match self.writer.write(item).await {
            Ok(()) => PublishVerdict::Route { ack: waiter },
            Err(e) => PublishVerdict::Refuse {
                code: IMPLEMENTATION_SPECIFIC_ERROR,
                reason: e,
            },
        }
    }

    /// A device answers a downlink: complete the waiting call and record the reply.
    fn device_reply(
        self: &Arc<Self>,
        device: &DeviceId,
        rrpc_id: Option<&str>,
        publish: &InboundPublish,
    ) -> PublishVerdict {
        let reply: Reply = match serde_json::from_slice(&publish.payload) {
            Ok(r) => r,
            Err(e) => return refuse(format!("reply is not Alink JSON: {e}")),
        };
        let message_id = rrpc_id
            .map(str::to_string)
            .unwrap_or_else(|| reply.id.clone());
        let plane = self.clone();
        let device = device.clone();
        // Recording the reply is not on the device's critical path.
        tokio::spawn(async move { plane.complete_call(&device, &message_id, reply).await });
        PublishVerdict::Route { ack: None }
    }

    async fn device_info(
        self: &Arc<Self>,
        device: &DeviceId,
        update: bool,
        publish: &InboundPublish,
        answer: &Answer,
    ) -> PublishVerdict {
        let to = (publish, answer);
        let method = if update {
            "thing.deviceinfo.update"
        } else {
            "thing.deviceinfo.delete"
        };
        let request = match self.parse_request(to, method).await {
            Ok(r) => r,
            Err(v) => return v,
        };
        // params: [{"attrKey": "k", "attrValue": "v"}, …] (delete: attrKey only)
        let Some(items) = request.params.as_array() else {
            let msg = "params must be an array of {attrKey, attrValue}";
            return self
                .reply_error(to, &request.id, code::PARAM_ERROR, msg, method)
                .await;
        };
        let mut tags = serde_json::Map::new();
        let mut keys = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Some(key) = item.get("attrKey").and_then(|k| k.as_str()) else {
                let msg = format!("params[{i}].attrKey: required string");
                return self
                    .reply_error(to, &request.id, code::PARAM_ERROR, msg, method)
                    .await;
            };
            keys.push(key.to_string());
            tags.insert(
                key.to_string(),
                item.get("attrValue").cloned().unwrap_or_default(),
            );
        }
        let result = if update {
            self.store
                .merge_device_tags(&device.product_key, &device.device_name, &tags)
                .await
        } else {
            self.store
                .delete_device_tags(&device.product_key, &device.device_name, &keys)
                .await
        };
        let reply = match result {
            Ok(()) => Reply::success(&request.id, serde_json::json!({}), Some(method)),
            Err(e) => {
                tracing::error!(device = %device, error = %e, "storing device tags failed");
                Reply::error(
                    &request.id,
                    code::SERVER_ERROR,
                    "could not store tags",
                    Some(method),
                )
            }
        };
        if request.wants_reply() || answer.is_caller() {
            self.reply_now(&publish.topic, &reply, answer).await;
        }
        PublishVerdict::Route { ack: None }
    }
}
