//! JSON ↔ the WIT records of `lotus:plugin@0.1.0`, for case files and readable results.
//!
//! Output uses the WIT names (`product-key`, `alarm-type`, a variant as a one-key object such as
//! `{"raise-alarm": {…}}`); input accepts the WIT name, snake_case or camelCase for every field.
//! JSON carried as text in the WIT (`params`, `fields`) is parsed on output and may be given as a
//! table or as text on input.

use lotus_plugin::MessageContext;
use lotus_plugin::wit::v0_1_0::types::{
    Action, DeviceMessage, DeviceRef, DeviceStatus, MessageContext as WitContext, Notification,
    PlatformEvent, StatusChange,
};
use lotus_plugin::wit::v0_1_0::{Delivery, DeliveryStatus, Trigger};
use serde_json::{Map, Value, json};

/// Looks a field up by its WIT name, also accepting snake_case and camelCase spellings.
pub(crate) fn field<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    let want = normalise(name);
    object
        .iter()
        .find(|(key, _)| normalise(key) == want)
        .map(|(_, value)| value)
}

fn normalise(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '-' && *c != '_')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn object<'a>(value: &'a Value, what: &str) -> Result<&'a Map<String, Value>, String> {
    value
        .as_object()
        .ok_or_else(|| format!("{what} must be a table (JSON object), got {value}"))
}

fn text(object: &Map<String, Value>, name: &str, what: &str) -> Result<Option<String>, String> {
    match field(object, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("{what}.{name} must be a string, got {other}")),
    }
}

fn required_text(object: &Map<String, Value>, name: &str, what: &str) -> Result<String, String> {
    text(object, name, what)?.ok_or_else(|| format!("{what}.{name} is missing"))
}

fn integer(object: &Map<String, Value>, name: &str, what: &str) -> Result<Option<i64>, String> {
    match field(object, name) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| format!("{what}.{name} must be an integer, got {v}")),
    }
}

fn severity(object: &Map<String, Value>, what: &str) -> Result<u8, String> {
    match integer(object, "severity", what)? {
        None => Ok(0),
        Some(s) => u8::try_from(s).map_err(|_| format!("{what}.severity must be 0..=255, got {s}")),
    }
}

/// JSON given as a table or as text → the text the WIT carries.
fn json_text(object: &Map<String, Value>, name: &str, default: &str) -> String {
    match field(object, name) {
        None | Some(Value::Null) => default.to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Text the WIT carries → JSON if it parses, else the text itself.
fn parsed(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

fn device_ref(value: &Value, what: &str) -> Result<DeviceRef, String> {
    match value {
        Value::String(s) => match s.split_once('/') {
            Some((pk, dn)) => Ok(DeviceRef {
                product_key: pk.to_owned(),
                device_name: dn.to_owned(),
            }),
            None => Err(format!(
                "{what} must be \"productKey/deviceName\" or a table, got {s:?}"
            )),
        },
        other => {
            let o = object(other, what)?;
            Ok(DeviceRef {
                product_key: required_text(o, "product-key", what)?,
                device_name: required_text(o, "device-name", what)?,
            })
        }
    }
}

/// The record's own device, else the case's.
fn device_or(
    object: &Map<String, Value>,
    ctx: &MessageContext,
    what: &str,
) -> Result<DeviceRef, String> {
    match field(object, "device") {
        Some(v) => device_ref(v, &format!("{what}.device")),
        None => Ok(DeviceRef {
            product_key: text(object, "product-key", what)?
                .unwrap_or_else(|| ctx.product_key.clone()),
            device_name: text(object, "device-name", what)?
                .unwrap_or_else(|| ctx.device_name.clone()),
        }),
    }
}

/// `{method, params, topic?, product-key?, device-name?, at-ms?}`; missing context fields come
/// from `ctx`.
pub fn device_message(value: &Value, ctx: &MessageContext) -> Result<DeviceMessage, String> {
    let what = "message";
    let o = object(value, what)?;
    let device = device_or(o, ctx, what)?;
    Ok(DeviceMessage {
        context: WitContext {
            topic: text(o, "topic", what)?.unwrap_or_else(|| ctx.topic.clone()),
            at_ms: integer(o, "at-ms", what)?.unwrap_or(ctx.at_ms),
            product_key: device.product_key,
            device_name: device.device_name,
        },
        method: text(o, "method", what)?.unwrap_or_else(|| "thing.event.property.post".to_owned()),
        params: json_text(o, "params", "{}"),
    })
}

/// `{status = "online" | "offline", reason?, device?, at-ms?}`.
pub fn status_change(value: &Value, ctx: &MessageContext) -> Result<StatusChange, String> {
    let what = "status";
    let o = object(value, what)?;
    let status = match required_text(o, "status", what)?.as_str() {
        "online" => DeviceStatus::Online,
        "offline" => DeviceStatus::Offline,
        other => {
            return Err(format!(
                "status.status must be online or offline, got {other:?}"
            ));
        }
    };
    Ok(StatusChange {
        device: device_or(o, ctx, what)?,
        status,
        reason: text(o, "reason", what)?.unwrap_or_default(),
        at_ms: integer(o, "at-ms", what)?.unwrap_or(ctx.at_ms),
    })
}

/// `{id?, kind?, event-type, severity?, device?, fields?, at-ms?}`; `kind` defaults to
/// `alarm.raised`, `device` to none.
pub fn platform_event(value: &Value, ctx: &MessageContext) -> Result<PlatformEvent, String> {
    let what = "event";
    let o = object(value, what)?;
    Ok(PlatformEvent {
        id: text(o, "id", what)?.unwrap_or_else(|| "event-1".to_owned()),
        kind: text(o, "kind", what)?.unwrap_or_else(|| "alarm.raised".to_owned()),
        event_type: required_text(o, "event-type", what)?,
        severity: severity(o, what)?,
        device: match field(o, "device") {
            None | Some(Value::Null) => None,
            Some(v) => Some(device_ref(v, "event.device")?),
        },
        fields: json_text(o, "fields", "{}"),
        at_ms: integer(o, "at-ms", what)?.unwrap_or(ctx.at_ms),
    })
}

/// One of `{message = {…}}`, `{status = {…}}`, `{event = {…}}`, `{timer = "name"}`.
pub fn trigger(value: &Value, ctx: &MessageContext) -> Result<Trigger, String> {
    let o = object(value, "rule input")?;
    if o.len() != 1 {
        return Err(
            "rule input must have exactly one of `message`, `status`, `event`, `timer`".to_owned(),
        );
    }
    let (kind, inner) = o.iter().next().expect("one entry");
    match kind.as_str() {
        "message" => Ok(Trigger::Message(device_message(inner, ctx)?)),
        "status" => Ok(Trigger::Status(status_change(inner, ctx)?)),
        "event" => Ok(Trigger::Event(platform_event(inner, ctx)?)),
        "timer" => match inner {
            Value::String(name) => Ok(Trigger::Timer(name.clone())),
            other => Err(format!(
                "rule input timer must be the schedule's name, got {other}"
            )),
        },
        other => Err(format!(
            "rule input {other:?} is not one of `message`, `status`, `event`, `timer`"
        )),
    }
}

/// `{channel?, recipients, subject?, body?}`.
pub fn notification(value: &Value) -> Result<Notification, String> {
    let what = "notification";
    let o = object(value, what)?;
    let recipients = match field(o, "recipients") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("notification.recipients must be strings, got {v}"))
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(format!(
                "notification.recipients must be an array, got {other}"
            ));
        }
    };
    Ok(Notification {
        channel: text(o, "channel", what)?.unwrap_or_default(),
        recipients,
        subject: text(o, "subject", what)?.unwrap_or_default(),
        body: text(o, "body", what)?.unwrap_or_default(),
    })
}

fn device_json(device: &DeviceRef) -> Value {
    json!({"product-key": device.product_key, "device-name": device.device_name})
}

/// Bytes as text when they are UTF-8, else `null`; always also as hex.
pub(crate) fn payload_json(payload: &[u8]) -> (Value, Value) {
    let text = match std::str::from_utf8(payload) {
        Ok(s) => Value::String(s.to_owned()),
        Err(_) => Value::Null,
    };
    (text, Value::String(hex::encode(payload)))
}

pub fn action_json(action: &Action) -> Value {
    match action {
        Action::RaiseAlarm(a) => json!({"raise-alarm": {
            "device": device_json(&a.device), "alarm-type": a.alarm_type,
            "severity": a.severity, "message": a.message,
        }}),
        Action::ClearAlarm(a) => json!({"clear-alarm": {
            "device": device_json(&a.device), "alarm-type": a.alarm_type,
        }}),
        Action::CreateEvent(e) => json!({"create-event": {
            "event-type": e.event_type, "severity": e.severity,
            "device": e.device.as_ref().map(device_json), "title": e.title,
            "fields": parsed(&e.fields),
        }}),
        Action::SetProperty(p) => json!({"set-property": {
            "device": device_json(&p.device), "params": parsed(&p.params),
        }}),
        Action::InvokeService(s) => json!({"invoke-service": {
            "device": device_json(&s.device), "identifier": s.identifier,
            "params": parsed(&s.params),
        }}),
        Action::Republish(r) => {
            let (payload, payload_hex) = payload_json(&r.payload);
            json!({"republish": {
                "topic": r.topic, "payload": payload, "payload-hex": payload_hex, "qos": r.qos,
            }})
        }
        Action::Notify(n) => json!({"notify": {
            "channel": n.channel, "recipients": n.recipients, "subject": n.subject, "body": n.body,
        }}),
    }
}

pub fn actions_json(actions: &[Action]) -> Value {
    Value::Array(actions.iter().map(action_json).collect())
}

pub fn delivery_json(delivery: &Delivery) -> Value {
    let status = match delivery.status {
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::Accepted => "accepted",
        DeliveryStatus::Failed => "failed",
    };
    json!({"status": status, "provider-id": delivery.provider_id, "detail": delivery.detail})
}

pub(crate) fn event_input_json(event: &lotus_plugin::EventInput) -> Value {
    json!({
        "event-type": event.event_type,
        "severity": event.severity,
        "device": event.device.as_ref().map(|(pk, dn)| json!({"product-key": pk, "device-name": dn})),
        "title": event.title,
        "fields": parsed(&event.fields),
    })
}

pub(crate) fn parsed_json(text: &str) -> Value {
    parsed(text)
}
