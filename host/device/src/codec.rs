//! Codec plugins on the device path: raw uplinks (`…/thing/model/up_raw`, custom topics of a
//! `dataFormat: custom` product) are decoded into Alink JSON and then take exactly the path an
//! Alink JSON message takes (thing-model validation, group commit, `_reply`); downlinks to such
//! devices are encoded and sent on `…/thing/model/down_raw`.
//!
//! The plane knows plugins only through [`CodecHost`], implemented by the binary over the Wasm
//! runtime, so this crate builds without wasmtime. A frame the codec itself rejects is answered
//! to the device with the byte offset and field the codec named; any other failure (timeout,
//! trap, fuel, garbage output, plugin missing) keeps the message in the dead-letter store with
//! the reason, so nothing the device sent is dropped silently.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use lotus_model::alink::{Reply, Request, code, downlink_topic};
use lotus_model::authz::DeviceId;
use lotus_model::product::DataFormat;
use lotus_mqtt::{InboundPublish, PublishVerdict};
use lotus_storage::{NewDeadLetter, StorageError};
use parking_lot::RwLock;
use serde_json::json;

use crate::uplink::Answer;

/// The method of a decoded request; every other member is skipped without being built.
#[derive(serde::Deserialize)]
struct DecodedMethod {
    #[serde(default)]
    method: Option<String>,
}
use crate::{DevicePlane, PlaneError};

/// What a codec call knows about the message besides its bytes.
#[derive(Debug, Clone)]
pub struct CodecContext {
    pub product_key: String,
    pub device_name: String,
    pub topic: String,
    pub at_ms: i64,
}

/// Why a codec call produced nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecFailure {
    /// The codec ran and refused the input: the sender is told what to fix.
    Rejected {
        message: String,
        /// Byte offset in the frame where decoding failed.
        offset: Option<u32>,
        /// The field the codec was reading or writing.
        field: Option<String>,
    },
    /// The call failed for a reason that is not the input's fault as far as the sender can
    /// tell (bound hit, trap, invalid output, plugin missing or suspended).
    Failed {
        /// A short code for the dead letter (`timeout`, `out-of-fuel`, `trap`, …).
        reason: String,
        detail: String,
    },
}

impl CodecFailure {
    pub fn failed(reason: impl Into<String>, detail: impl Into<String>) -> Self {
        CodecFailure::Failed {
            reason: reason.into(),
            detail: detail.into(),
        }
    }
}

/// The codec plugins as the device plane calls them. Calls are synchronous and bounded by the
/// runtime (fuel, deadline, memory, output size); an implementation that runs them on the
/// calling thread must let the async runtime know (`block_in_place`).
pub trait CodecHost: Send + Sync + 'static {
    /// Raw bytes → the Alink JSON request text they stand for.
    fn decode(
        &self,
        plugin: &str,
        topic: &str,
        payload: &[u8],
        ctx: &CodecContext,
    ) -> Result<String, CodecFailure>;

    /// An Alink JSON request → the bytes the device understands.
    fn encode(
        &self,
        plugin: &str,
        message: &str,
        ctx: &CodecContext,
    ) -> Result<Vec<u8>, CodecFailure>;
}

/// The codec host and which plugin decodes each product; kept in memory like the registry, so
/// the hot path never waits on storage to find a product's codec.
#[derive(Default)]
pub struct Codecs {
    host: OnceLock<Arc<dyn CodecHost>>,
    bindings: RwLock<HashMap<String, String>>,
}

impl Codecs {
    /// The plugin bound to a product, if any.
    pub fn plugin_for(&self, product_key: &str) -> Option<String> {
        self.bindings.read().get(product_key).cloned()
    }

    /// Records a binding change the API has just stored (`None` removes it).
    pub fn set_binding(&self, product_key: &str, plugin: Option<&str>) {
        let mut bindings = self.bindings.write();
        match plugin {
            Some(plugin) => bindings.insert(product_key.to_string(), plugin.to_string()),
            None => bindings.remove(product_key),
        };
    }

    fn host(&self) -> Option<&Arc<dyn CodecHost>> {
        self.host.get()
    }
}

/// What to do with a custom-topic message: decoded by the product's codec, or passed on as it is.
pub(crate) enum CustomTopic {
    Handled(PublishVerdict),
    NoCodec,
}

impl DevicePlane {
    /// Installs the codec host and loads the product bindings (once, at start).
    pub async fn attach_codecs(&self, host: Arc<dyn CodecHost>) -> Result<(), StorageError> {
        let bindings: HashMap<String, String> =
            self.store.all_product_codecs().await?.into_iter().collect();
        *self.codecs.bindings.write() = bindings;
        let _ = self.codecs.host.set(host);
        Ok(())
    }

    /// The codec plugin to use for a product's raw data: bound, and the product is custom.
    fn codec_of(&self, product_key: &str) -> Option<(String, Arc<dyn CodecHost>)> {
        let product = self.registry.get(product_key)?;
        if product.data_format != DataFormat::Custom {
            return None;
        }
        let plugin = self.codecs.plugin_for(product_key)?;
        let host = self.codecs.host()?.clone();
        Some((plugin, host))
    }

    /// `…/thing/model/up_raw`: decode, then handle as the Alink message it stands for.
    pub(crate) async fn raw_uplink(
        self: &Arc<Self>,
        device: &DeviceId,
        publish: &InboundPublish,
        answer: &Answer,
    ) -> PublishVerdict {
        const METHOD: &str = "thing.model.up_raw";
        let Some((plugin, host)) = self.codec_of(&device.product_key) else {
            let reply = Reply::error(
                "",
                code::METHOD_NOT_FOUND,
                format!(
                    "product '{}' has no codec plugin to decode raw data: give it dataFormat \
                     custom and bind a codec plugin to it",
                    device.product_key
                ),
                Some(METHOD),
            );
            self.reply_now(&publish.topic, &reply, answer).await;
            return PublishVerdict::Refuse {
                code: crate::uplink::IMPLEMENTATION_SPECIFIC_ERROR,
                reason: "no codec plugin bound to this product".into(),
            };
        };
        self.decode_and_handle(device, publish, answer, &plugin, host.as_ref(), METHOD)
            .await
    }

    /// A custom topic of a product with a codec: decoded like `up_raw`.
    pub(crate) async fn custom_uplink(
        self: &Arc<Self>,
        device: &DeviceId,
        publish: &InboundPublish,
        answer: &Answer,
    ) -> CustomTopic {
        let Some((plugin, host)) = self.codec_of(&device.product_key) else {
            return CustomTopic::NoCodec;
        };
        CustomTopic::Handled(
            self.decode_and_handle(device, publish, answer, &plugin, host.as_ref(), "")
                .await,
        )
    }

    async fn decode_and_handle(
        self: &Arc<Self>,
        device: &DeviceId,
        publish: &InboundPublish,
        answer: &Answer,
        plugin: &str,
        host: &dyn CodecHost,
        method: &str,
    ) -> PublishVerdict {
        let ctx = context(device, &publish.topic);
        let decoded = host.decode(plugin, &publish.topic, &publish.payload, &ctx);
        let text = match decoded {
            Ok(text) => text,
            Err(CodecFailure::Rejected {
                message,
                offset,
                field,
            }) => {
                metrics::counter!("lotus_codec_rejected_total", "plugin" => plugin.to_string())
                    .increment(1);
                let mut reply = Reply::error(
                    "",
                    code::REQUEST_ERROR,
                    rejection_text(plugin, &message, offset, field.as_deref()),
                    Some(method).filter(|m| !m.is_empty()),
                );
                reply.data = json!({ "offset": offset, "field": field });
                self.reply_now(&publish.topic, &reply, answer).await;
                return PublishVerdict::Refuse {
                    code: crate::uplink::PAYLOAD_FORMAT_INVALID,
                    reason: message,
                };
            }
            Err(CodecFailure::Failed { reason, detail }) => {
                return self
                    .dead_letter_uplink(device, publish, answer, plugin, &reason, &detail, method)
                    .await;
            }
        };
        // Only the method decides where the decoded request goes; the handler it goes to
        // parses the whole request itself, so building its tree here too would parse it twice.
        let request: DecodedMethod = match serde_json::from_str(&text) {
            Ok(r) => r,
            Err(e) => {
                let detail = format!("decode returned text that is not an Alink request: {e}");
                return self
                    .dead_letter_uplink(
                        device,
                        publish,
                        answer,
                        plugin,
                        "invalid-output",
                        &detail,
                        method,
                    )
                    .await;
            }
        };
        let decoded_method = request.method.unwrap_or_default();
        let decoded_publish = InboundPublish {
            topic: publish.topic.clone(),
            payload: Bytes::from(text.into_bytes()),
            qos: publish.qos,
            retain: false,
            properties: None,
        };
        if decoded_method == "thing.event.property.post" {
            return self.property_post(device, &decoded_publish, answer).await;
        }
        if let Some(identifier) = decoded_method
            .strip_prefix("thing.event.")
            .and_then(|m| m.strip_suffix(".post"))
            .filter(|i| !i.is_empty() && !i.contains('.'))
        {
            return self
                .event_post(device, identifier, &decoded_publish, answer)
                .await;
        }
        let detail = format!(
            "decode returned method '{decoded_method}'; a codec may return \
             thing.event.property.post or thing.event.{{identifier}}.post"
        );
        self.dead_letter_uplink(
            device,
            publish,
            answer,
            plugin,
            "invalid-output",
            &detail,
            method,
        )
        .await
    }

    /// Keeps a message the codec failed on and tells the device it was kept, not processed.
    #[allow(clippy::too_many_arguments)]
    async fn dead_letter_uplink(
        &self,
        device: &DeviceId,
        publish: &InboundPublish,
        answer: &Answer,
        plugin: &str,
        reason: &str,
        detail: &str,
        method: &str,
    ) -> PublishVerdict {
        let kept = self
            .dead_letter(
                device,
                plugin,
                &publish.topic,
                &publish.payload,
                reason,
                detail,
            )
            .await;
        let (message, verdict) = match kept {
            Ok(id) => (
                format!(
                    "the codec plugin '{plugin}' failed ({reason}); the message is kept as dead \
                     letter {id} for the operator"
                ),
                // Stored: acknowledging it is truthful, and a retry would only fail again.
                PublishVerdict::Route { ack: None },
            ),
            Err(e) => {
                tracing::error!(device = %device, plugin, error = %e,
                    "storing a dead letter failed");
                (
                    format!("the codec plugin '{plugin}' failed ({reason}); retry later"),
                    PublishVerdict::Refuse {
                        code: crate::uplink::IMPLEMENTATION_SPECIFIC_ERROR,
                        reason: "codec failed and the message could not be stored".into(),
                    },
                )
            }
        };
        let reply = Reply::error(
            "",
            code::SERVER_ERROR,
            message,
            Some(method).filter(|m| !m.is_empty()),
        );
        self.reply_now(&publish.topic, &reply, answer).await;
        verdict
    }

    async fn dead_letter(
        &self,
        device: &DeviceId,
        plugin: &str,
        topic: &str,
        payload: &[u8],
        reason: &str,
        detail: &str,
    ) -> Result<i64, StorageError> {
        metrics::counter!("lotus_codec_dead_letters_total",
            "plugin" => plugin.to_string(), "reason" => reason.to_string())
        .increment(1);
        tracing::warn!(device = %device, plugin, reason, detail, topic,
            "codec failed; message kept as a dead letter");
        self.store
            .insert_dead_letter(&NewDeadLetter {
                plugin_id: plugin,
                product_key: &device.product_key,
                device_name: &device.device_name,
                topic,
                payload,
                reason,
                detail,
            })
            .await
    }

    /// `…/thing/model/down_raw_reply`: the device's raw answer to a raw downlink. `None` when
    /// the product has no codec, so the reply is read as Alink JSON.
    pub(crate) async fn raw_down_reply(
        self: &Arc<Self>,
        device: &DeviceId,
        publish: &InboundPublish,
    ) -> Option<PublishVerdict> {
        let (plugin, host) = self.codec_of(&device.product_key)?;
        let ctx = context(device, &publish.topic);
        let failure = match host.decode(&plugin, &publish.topic, &publish.payload, &ctx) {
            Ok(text) => match serde_json::from_str::<Reply>(&text) {
                Ok(reply) => {
                    let plane = self.clone();
                    let device = device.clone();
                    let message_id = reply.id.clone();
                    tokio::spawn(
                        async move { plane.complete_call(&device, &message_id, reply).await },
                    );
                    return Some(PublishVerdict::Route { ack: None });
                }
                Err(e) => (
                    "invalid-output".to_string(),
                    format!("decode of a down_raw reply returned no Alink reply: {e}"),
                ),
            },
            Err(CodecFailure::Rejected {
                message,
                offset,
                field,
            }) => (
                "rejected".to_string(),
                rejection_text(&plugin, &message, offset, field.as_deref()),
            ),
            Err(CodecFailure::Failed { reason, detail }) => (reason, detail),
        };
        // Nobody to answer: a reply to a reply would loop. Keep it for the operator.
        Some(
            match self
                .dead_letter(
                    device,
                    &plugin,
                    &publish.topic,
                    &publish.payload,
                    &failure.0,
                    &failure.1,
                )
                .await
            {
                Ok(_) => PublishVerdict::Route { ack: None },
                Err(e) => PublishVerdict::Refuse {
                    code: crate::uplink::IMPLEMENTATION_SPECIFIC_ERROR,
                    reason: e.to_string(),
                },
            },
        )
    }

    /// For a downlink to a device of a custom product with a codec: the `down_raw` topic and
    /// the encoded request. `None` when the product speaks Alink JSON (or has no codec bound,
    /// in which case the request goes out as JSON as before).
    pub(crate) async fn encode_downlink(
        &self,
        device: &DeviceId,
        request: &Request,
    ) -> Result<Option<(String, Bytes)>, PlaneError> {
        let Some((plugin, host)) = self.codec_of(&device.product_key) else {
            return Ok(None);
        };
        let topic = downlink_topic::raw_down(&device.product_key, &device.device_name);
        let message = serde_json::to_string(request).expect("requests serialise");
        let ctx = context(device, &topic);
        match host.encode(&plugin, &message, &ctx) {
            Ok(bytes) => Ok(Some((topic, Bytes::from(bytes)))),
            Err(CodecFailure::Rejected {
                message,
                offset,
                field,
            }) => Err(PlaneError::Invalid(format!(
                "the codec plugin '{plugin}' cannot encode this request: {}",
                rejection_text(&plugin, &message, offset, field.as_deref())
            ))),
            Err(CodecFailure::Failed { reason, detail }) => {
                let kept = self
                    .dead_letter(
                        device,
                        &plugin,
                        &topic,
                        message.as_bytes(),
                        &reason,
                        &detail,
                    )
                    .await?;
                Err(PlaneError::Invalid(format!(
                    "the codec plugin '{plugin}' failed to encode the request ({reason}: \
                     {detail}); nothing was sent, the request is kept as dead letter {kept}"
                )))
            }
        }
    }
}

fn context(device: &DeviceId, topic: &str) -> CodecContext {
    CodecContext {
        product_key: device.product_key.to_string(),
        device_name: device.device_name.to_string(),
        topic: topic.to_string(),
        at_ms: crate::now_ms(),
    }
}

/// "codec 'x' rejected the frame at byte 3 (field crc): checksum mismatch".
fn rejection_text(plugin: &str, message: &str, offset: Option<u32>, field: Option<&str>) -> String {
    let mut text = format!("codec '{plugin}' rejected the data");
    if let Some(offset) = offset {
        text.push_str(&format!(" at byte {offset}"));
    }
    if let Some(field) = field {
        text.push_str(&format!(" (field {field})"));
    }
    text.push_str(": ");
    text.push_str(message);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_names_offset_and_field() {
        assert_eq!(
            rejection_text("meter", "checksum mismatch", Some(7), Some("crc")),
            "codec 'meter' rejected the data at byte 7 (field crc): checksum mismatch"
        );
        assert_eq!(
            rejection_text("meter", "too short", None, None),
            "codec 'meter' rejected the data: too short"
        );
    }

    #[test]
    fn bindings_follow_changes() {
        let codecs = Codecs::default();
        assert_eq!(codecs.plugin_for("pk"), None);
        codecs.set_binding("pk", Some("meter"));
        assert_eq!(codecs.plugin_for("pk").as_deref(), Some("meter"));
        codecs.set_binding("pk", None);
        assert_eq!(codecs.plugin_for("pk"), None);
    }
}
