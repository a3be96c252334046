//! The traits a plugin implements, one per world, and the glue behind the `export_*!` macros.

use serde_json::{Map, Value};

#[cfg(any(feature = "event-handler", feature = "app"))]
use crate::types::PlatformEvent;
#[cfg(feature = "app")]
use crate::types::StatusChange;
use crate::types::{Action, Alarm, DeviceMessage, DeviceRef, EventInput, Notification};
#[cfg(feature = "codec")]
use crate::{AlinkMessage, CodecError, Downlink, types::MessageContext};

#[cfg(feature = "channel")]
pub use crate::bindings::channel::{Delivery, DeliveryStatus};
#[cfg(feature = "rule")]
pub use crate::bindings::rule::Trigger;

#[cfg(feature = "codec")]
/// World `codec`: a device's raw bytes ↔ Alink JSON. Export with [`export_codec!`](crate::export_codec).
pub trait Codec {
    /// Raw uplink bytes (`…/thing/model/up_raw` or a custom topic) → an Alink request or reply.
    fn decode(
        topic: &str,
        payload: &[u8],
        context: &MessageContext,
    ) -> Result<AlinkMessage, CodecError>;

    /// An Alink downlink (property set, service call, reply) → the bytes for the device.
    fn encode(message: &Downlink, context: &MessageContext) -> Result<Vec<u8>, CodecError>;
}

#[cfg(feature = "rule")]
/// World `rule`: turns a trigger into actions. Export with [`export_rule!`](crate::export_rule).
pub trait Rule {
    fn evaluate(trigger: Trigger) -> Result<Vec<Action>, String>;
}

#[cfg(feature = "event-handler")]
/// World `event-handler`. Export with [`export_event_handler!`](crate::export_event_handler).
pub trait EventHandler {
    fn handle(event: PlatformEvent) -> Result<Vec<Action>, String>;
}

#[cfg(feature = "app")]
/// World `app`: receives what it subscribed to. Every callback defaults to doing nothing, so an
/// app implements only those it subscribes to. Export with [`export_app!`](crate::export_app).
pub trait App {
    fn on_message(message: DeviceMessage) -> Result<(), String> {
        let _ = message;
        Ok(())
    }

    fn on_status(change: StatusChange) -> Result<(), String> {
        let _ = change;
        Ok(())
    }

    fn on_event(event: PlatformEvent) -> Result<(), String> {
        let _ = event;
        Ok(())
    }
}

#[cfg(feature = "channel")]
/// World `channel`: delivers a notification. Export with [`export_channel!`](crate::export_channel).
pub trait Channel {
    fn deliver(notification: Notification) -> Result<Delivery, String>;
}

/// The property values of a device message's `params`, whether sent as `{"Id": v}` or as
/// `{"Id": {"value": v, "time": ms}}`.
pub fn message_values(message: &DeviceMessage) -> Result<Map<String, Value>, String> {
    let params: Value = serde_json::from_str(&message.params)
        .map_err(|e| format!("message params are not JSON: {e}"))?;
    let Value::Object(params) = params else {
        return Err("message params are not a JSON object".to_owned());
    };
    Ok(params
        .into_iter()
        .map(|(k, v)| match v {
            Value::Object(mut o) if o.contains_key("value") && o.len() <= 2 => {
                (k, o.remove("value").unwrap_or(Value::Null))
            }
            v => (k, v),
        })
        .collect())
}

/// Builders for the actions rules and handlers return.
pub mod actions {
    use super::*;
    use crate::types::{AlarmRef, PropertySet};

    pub fn raise_alarm(
        device: DeviceRef,
        alarm_type: impl Into<String>,
        severity: u8,
        message: impl Into<String>,
    ) -> Action {
        Action::RaiseAlarm(Alarm {
            device,
            alarm_type: alarm_type.into(),
            severity,
            message: message.into(),
        })
    }

    pub fn clear_alarm(device: DeviceRef, alarm_type: impl Into<String>) -> Action {
        Action::ClearAlarm(AlarmRef {
            device,
            alarm_type: alarm_type.into(),
        })
    }

    /// `fields` is serialised as the event's JSON object of fields.
    pub fn create_event(
        event_type: impl Into<String>,
        severity: u8,
        device: Option<DeviceRef>,
        title: impl Into<String>,
        fields: &Value,
    ) -> Action {
        Action::CreateEvent(EventInput {
            event_type: event_type.into(),
            severity,
            device,
            title: title.into(),
            fields: fields.to_string(),
        })
    }

    pub fn set_property(device: DeviceRef, params: &Value) -> Action {
        Action::SetProperty(PropertySet {
            device,
            params: params.to_string(),
        })
    }

    pub fn notify(
        channel: impl Into<String>,
        recipients: Vec<String>,
        subject: impl Into<String>,
        body: impl Into<String>,
    ) -> Action {
        Action::Notify(Notification {
            channel: channel.into(),
            recipients,
            subject: subject.into(),
            body: body.into(),
        })
    }
}

/// Adapters from the SDK traits to the generated bindings; used by the export macros.
#[cfg(feature = "codec")]
#[doc(hidden)]
pub mod glue {
    use super::*;

    pub fn decode<C: Codec>(
        topic: String,
        payload: Vec<u8>,
        context: MessageContext,
    ) -> Result<String, crate::bindings::codec::CodecError> {
        C::decode(&topic, &payload, &context)
            .map(|m| m.to_json())
            .map_err(Into::into)
    }

    pub fn encode<C: Codec>(
        message: String,
        context: MessageContext,
    ) -> Result<Vec<u8>, crate::bindings::codec::CodecError> {
        let downlink = Downlink::parse(&message)?;
        C::encode(&downlink, &context).map_err(Into::into)
    }
}

#[cfg(feature = "codec")]
/// Exports a [`Codec`] as the component's `codec` world.
///
/// ```ignore
/// struct MyCodec;
/// impl lotus_plugin_sdk::Codec for MyCodec { /* decode, encode */ }
/// lotus_plugin_sdk::export_codec!(MyCodec);
/// ```
#[macro_export]
macro_rules! export_codec {
    ($codec:ty) => {
        const _: () = {
            struct LotusCodecExport;

            impl $crate::bindings::codec::Guest for LotusCodecExport {
                fn decode(
                    topic: ::std::string::String,
                    payload: ::std::vec::Vec<u8>,
                    context: $crate::types::MessageContext,
                ) -> ::core::result::Result<::std::string::String, $crate::bindings::codec::CodecError>
                {
                    $crate::worlds::glue::decode::<$codec>(topic, payload, context)
                }

                fn encode(
                    message: ::std::string::String,
                    context: $crate::types::MessageContext,
                ) -> ::core::result::Result<::std::vec::Vec<u8>, $crate::bindings::codec::CodecError>
                {
                    $crate::worlds::glue::encode::<$codec>(message, context)
                }
            }

            // Native builds (unit tests) export nothing; this keeps the plugin's type in use
            // there, as the wasm export does, so it is not reported as dead code.
            #[cfg(not(target_arch = "wasm32"))]
            const _: () = {
                let _ = <LotusCodecExport as $crate::bindings::codec::Guest>::decode;
                let _ = <LotusCodecExport as $crate::bindings::codec::Guest>::encode;
            };

            #[cfg(target_arch = "wasm32")]
            $crate::bindings::codec::__export_codec_world!(
                LotusCodecExport with_types_in $crate::bindings::codec
            );
        };
    };
}

#[cfg(feature = "rule")]
/// Exports a [`Rule`] as the component's `rule` world.
#[macro_export]
macro_rules! export_rule {
    ($rule:ty) => {
        const _: () = {
            struct LotusRuleExport;

            impl $crate::bindings::rule::Guest for LotusRuleExport {
                fn evaluate(
                    trigger: $crate::worlds::Trigger,
                ) -> ::core::result::Result<
                    ::std::vec::Vec<$crate::types::Action>,
                    ::std::string::String,
                > {
                    <$rule as $crate::Rule>::evaluate(trigger)
                }
            }

            // Native builds (unit tests) export nothing; this keeps the plugin's type in use
            // there, as the wasm export does, so it is not reported as dead code.
            #[cfg(not(target_arch = "wasm32"))]
            const _: () = {
                let _ = <LotusRuleExport as $crate::bindings::rule::Guest>::evaluate;
            };

            #[cfg(target_arch = "wasm32")]
            $crate::bindings::rule::__export_rule_world!(
                LotusRuleExport with_types_in $crate::bindings::rule
            );
        };
    };
}

#[cfg(feature = "event-handler")]
/// Exports an [`EventHandler`] as the component's `event-handler` world.
#[macro_export]
macro_rules! export_event_handler {
    ($handler:ty) => {
        const _: () = {
            struct LotusEventHandlerExport;

            impl $crate::bindings::event_handler::Guest for LotusEventHandlerExport {
                fn handle(
                    event: $crate::types::PlatformEvent,
                ) -> ::core::result::Result<
                    ::std::vec::Vec<$crate::types::Action>,
                    ::std::string::String,
                > {
                    <$handler as $crate::EventHandler>::handle(event)
                }
            }

            // Native builds (unit tests) export nothing; this keeps the plugin's type in use
            // there, as the wasm export does, so it is not reported as dead code.
            #[cfg(not(target_arch = "wasm32"))]
            const _: () = {
                let _ = <LotusEventHandlerExport as $crate::bindings::event_handler::Guest>::handle;
            };

            #[cfg(target_arch = "wasm32")]
            $crate::bindings::event_handler::__export_event_handler_world!(
                LotusEventHandlerExport with_types_in $crate::bindings::event_handler
            );
        };
    };
}

#[cfg(feature = "app")]
/// Exports an [`App`] as the component's `app` world.
#[macro_export]
macro_rules! export_app {
    ($app:ty) => {
        const _: () = {
            struct LotusAppExport;

            impl $crate::bindings::app::Guest for LotusAppExport {
                fn on_message(
                    message: $crate::types::DeviceMessage,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    <$app as $crate::App>::on_message(message)
                }

                fn on_status(
                    change: $crate::types::StatusChange,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    <$app as $crate::App>::on_status(change)
                }

                fn on_event(
                    event: $crate::types::PlatformEvent,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    <$app as $crate::App>::on_event(event)
                }
            }

            // Native builds (unit tests) export nothing; this keeps the plugin's type in use
            // there, as the wasm export does, so it is not reported as dead code.
            #[cfg(not(target_arch = "wasm32"))]
            const _: () = {
                let _ = <LotusAppExport as $crate::bindings::app::Guest>::on_message;
                let _ = <LotusAppExport as $crate::bindings::app::Guest>::on_status;
                let _ = <LotusAppExport as $crate::bindings::app::Guest>::on_event;
            };

            #[cfg(target_arch = "wasm32")]
            $crate::bindings::app::__export_app_world!(
                LotusAppExport with_types_in $crate::bindings::app
            );
        };
    };
}

#[cfg(feature = "channel")]
/// Exports a [`Channel`] as the component's `channel` world.
#[macro_export]
macro_rules! export_channel {
    ($channel:ty) => {
        const _: () = {
            struct LotusChannelExport;

            impl $crate::bindings::channel::Guest for LotusChannelExport {
                fn deliver(
                    notification: $crate::types::Notification,
                ) -> ::core::result::Result<$crate::worlds::Delivery, ::std::string::String>
                {
                    <$channel as $crate::Channel>::deliver(notification)
                }
            }

            // Native builds (unit tests) export nothing; this keeps the plugin's type in use
            // there, as the wasm export does, so it is not reported as dead code.
            #[cfg(not(target_arch = "wasm32"))]
            const _: () = {
                let _ = <LotusChannelExport as $crate::bindings::channel::Guest>::deliver;
            };

            #[cfg(target_arch = "wasm32")]
            $crate::bindings::channel::__export_channel_world!(
                LotusChannelExport with_types_in $crate::bindings::channel
            );
        };
    };
}

/// Without the `codec` feature the world's bindings are not generated; say so plainly.
#[cfg(not(feature = "codec"))]
#[macro_export]
macro_rules! export_codec {
    ($($any:tt)*) => {
        compile_error!("export_codec! needs the `codec` feature: lotus-plugin-sdk = { ..., features = [\"codec\"] }");
    };
}

/// Without the `rule` feature the world's bindings are not generated; say so plainly.
#[cfg(not(feature = "rule"))]
#[macro_export]
macro_rules! export_rule {
    ($($any:tt)*) => {
        compile_error!("export_rule! needs the `rule` feature: lotus-plugin-sdk = { ..., features = [\"rule\"] }");
    };
}

/// Without the `event-handler` feature the world's bindings are not generated; say so plainly.
#[cfg(not(feature = "event-handler"))]
#[macro_export]
macro_rules! export_event_handler {
    ($($any:tt)*) => {
        compile_error!("export_event_handler! needs the `event-handler` feature: lotus-plugin-sdk = { ..., features = [\"event-handler\"] }");
    };
}

/// Without the `app` feature the world's bindings are not generated; say so plainly.
#[cfg(not(feature = "app"))]
#[macro_export]
macro_rules! export_app {
    ($($any:tt)*) => {
        compile_error!(
            "export_app! needs the `app` feature: lotus-plugin-sdk = { ..., features = [\"app\"] }"
        );
    };
}

/// Without the `channel` feature the world's bindings are not generated; say so plainly.
#[cfg(not(feature = "channel"))]
#[macro_export]
macro_rules! export_channel {
    ($($any:tt)*) => {
        compile_error!("export_channel! needs the `channel` feature: lotus-plugin-sdk = { ..., features = [\"channel\"] }");
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(params: &str) -> DeviceMessage {
        DeviceMessage {
            context: crate::types::MessageContext {
                product_key: "pk".into(),
                device_name: "dn".into(),
                topic: "/sys/pk/dn/thing/event/property/post".into(),
                at_ms: 0,
            },
            method: "thing.event.property.post".into(),
            params: params.into(),
        }
    }

    #[test]
    fn message_values_unwraps_timed_values() {
        let values =
            message_values(&message(r#"{"A":1,"B":{"value":2,"time":5},"C":{"x":1}}"#)).unwrap();
        assert_eq!(
            Value::Object(values),
            serde_json::json!({"A":1,"B":2,"C":{"x":1}})
        );
        assert!(message_values(&message("[1]")).is_err());
    }

    #[cfg(feature = "codec")]
    struct Echo;

    #[cfg(feature = "codec")]
    impl Codec for Echo {
        fn decode(
            _topic: &str,
            payload: &[u8],
            context: &MessageContext,
        ) -> Result<AlinkMessage, CodecError> {
            Ok(
                crate::AlinkRequest::property_post(context.at_ms.to_string())
                    .property("Len", payload.len())
                    .into(),
            )
        }

        fn encode(message: &Downlink, _context: &MessageContext) -> Result<Vec<u8>, CodecError> {
            Ok(message.id().as_bytes().to_vec())
        }
    }

    #[cfg(feature = "codec")]
    crate::export_codec!(Echo);

    #[cfg(feature = "codec")]
    #[test]
    fn codec_glue_serialises_and_parses() {
        let ctx = message("{}").context;
        let json = glue::decode::<Echo>("t".into(), vec![1, 2], ctx.clone()).unwrap();
        assert_eq!(
            json,
            r#"{"id":"0","version":"1.0","method":"thing.event.property.post","params":{"Len":2}}"#
        );
        assert_eq!(
            glue::encode::<Echo>(
                r#"{"id":"9","method":"thing.service.X"}"#.into(),
                ctx.clone()
            )
            .unwrap(),
            b"9"
        );
        let e = glue::encode::<Echo>("nope".into(), ctx).unwrap_err();
        // serde_json stops at the first byte that cannot continue `null`.
        assert_eq!(e.offset, Some(1));
    }
}
