//! What rules see of the bus: each device envelope as an Alink topic and a JSON payload, in
//! the shapes users know from Alibaba Cloud IoT's rule engine, so their statements carry over.
//!
//! | bus | topic | payload |
//! |---|---|---|
//! | property post | `/sys/{pk}/{dn}/thing/event/property/post` | `{"productKey","deviceName","time","items":{"p":{"value","time"}},"params":{"p":v}}` |
//! | event post | `/sys/{pk}/{dn}/thing/event/{identifier}/post` | `{"productKey","deviceName","time","identifier","type","value":{…},"params":{…}}` |
//! | online / offline | `/as/mqtt/status/{pk}/{dn}` | `{"productKey","deviceName","time","status":"online"/"offline","reason"}` |
//! | lifecycle | `/sys/{pk}/{dn}/thing/lifecycle` | `{"productKey","deviceName","time","action"}` |
//!
//! Replies, shadow changes and custom-topic messages are not offered to rules.

use lotus_bus::{DeviceEvent, Envelope};
use serde_json::{Map, Value, json};

/// A device message as rules see it.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleMessage {
    pub topic: String,
    pub product_key: String,
    pub device_name: String,
    pub payload: Value,
    pub at: i64,
}

impl RuleMessage {
    pub fn from_envelope(env: &Envelope) -> Option<RuleMessage> {
        let (pk, dn, at) = (&env.product_key, &env.device_name, env.at);
        let (topic, payload) = match &env.event {
            DeviceEvent::Properties { values } => {
                let items: Map<String, Value> = values
                    .iter()
                    .map(|(k, v)| (k.clone(), json!({"value": v, "time": at})))
                    .collect();
                (
                    format!("/sys/{pk}/{dn}/thing/event/property/post"),
                    json!({"productKey": pk, "deviceName": dn, "time": at, "items": items, "params": values}),
                )
            }
            DeviceEvent::Event {
                identifier,
                event_type,
                params,
            } => (
                format!("/sys/{pk}/{dn}/thing/event/{identifier}/post"),
                json!({"productKey": pk, "deviceName": dn, "time": at, "identifier": identifier,
                       "type": event_type, "value": params, "params": params}),
            ),
            DeviceEvent::Status { online, reason } => (
                format!("/as/mqtt/status/{pk}/{dn}"),
                json!({"productKey": pk, "deviceName": dn, "time": at,
                       "status": if *online { "online" } else { "offline" }, "reason": reason}),
            ),
            DeviceEvent::Lifecycle { action } => (
                format!("/sys/{pk}/{dn}/thing/lifecycle"),
                json!({"productKey": pk, "deviceName": dn, "time": at, "action": action}),
            ),
            DeviceEvent::Reply { .. } | DeviceEvent::Shadow { .. } | DeviceEvent::Custom { .. } => {
                return None;
            }
        };
        Some(RuleMessage {
            topic,
            product_key: pk.clone(),
            device_name: dn.clone(),
            payload,
            at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn property_post_has_items_and_params() {
        let mut values = Map::new();
        values.insert("pressure".into(), json!(0.12));
        let env = Envelope::device("pk1", "pump-7", 1000, DeviceEvent::Properties { values });
        let m = RuleMessage::from_envelope(&env).unwrap();
        assert_eq!(m.topic, "/sys/pk1/pump-7/thing/event/property/post");
        assert_eq!(m.payload["items"]["pressure"]["value"], json!(0.12));
        assert_eq!(m.payload["params"]["pressure"], json!(0.12));
    }

    #[test]
    fn status_and_skipped_kinds() {
        let env = Envelope::device(
            "pk1",
            "d",
            5,
            DeviceEvent::Status {
                online: false,
                reason: "keepalive".into(),
            },
        );
        let m = RuleMessage::from_envelope(&env).unwrap();
        assert_eq!(m.topic, "/as/mqtt/status/pk1/d");
        assert_eq!(m.payload["status"], "offline");
        let env = Envelope::device(
            "pk1",
            "d",
            5,
            DeviceEvent::Custom {
                topic: "/pk1/d/user/x".into(),
                payload: "{}".into(),
            },
        );
        assert!(RuleMessage::from_envelope(&env).is_none());
    }
}
