//! Codec for the ACME SL-200 street-light controller; the frame is described in README.md.

mod frame;

use lotus_plugin_sdk::host::{kv, log};
use lotus_plugin_sdk::types::MessageContext;
use lotus_plugin_sdk::{AlinkMessage, Codec, CodecError, Downlink, export_codec};

struct StreetLight;

/// The controller acknowledges by sequence number only, so remember which Alink id it stood for.
fn pending_key(context: &MessageContext, sequence: u16) -> String {
    format!(
        "pending/{}/{}/{sequence}",
        context.product_key, context.device_name
    )
}

impl Codec for StreetLight {
    fn decode(
        _topic: &str,
        payload: &[u8],
        context: &MessageContext,
    ) -> Result<AlinkMessage, CodecError> {
        let uplink = frame::parse(payload)?;
        let acked_id = match &uplink {
            frame::Uplink::Ack { sequence, .. } => {
                let key = pending_key(context, *sequence);
                let id = kv::get_string(&key).unwrap_or_else(|e| {
                    log::warn(&format!("ack {sequence}: {err}", err = e.describe()));
                    None
                });
                if id.is_some()
                    && let Err(e) = kv::delete(&key)
                {
                    log::warn(&format!(
                        "ack {sequence}: could not forget {key}: {err}",
                        err = e.describe()
                    ));
                }
                id
            }
            _ => None,
        };
        Ok(frame::to_alink(uplink, acked_id))
    }

    fn encode(message: &Downlink, context: &MessageContext) -> Result<Vec<u8>, CodecError> {
        let id: u64 = message
            .id()
            .parse()
            .map_err(|_| CodecError::new("must be a decimal number").field("id"))?;
        let sequence = (id & 0xFFFF) as u16;
        let bytes = frame::encode(message, sequence)?;
        if let Err(e) = kv::set_string(&pending_key(context, sequence), message.id()) {
            log::warn(&format!(
                "command {sequence}: its ack will not name the id: {err}",
                err = e.describe()
            ));
        }
        Ok(bytes)
    }
}

export_codec!(StreetLight);

#[cfg(test)]
mod tests {
    use super::frame::{self, Uplink};
    use lotus_plugin_sdk::serde_json::{Value, json};
    use lotus_plugin_sdk::{Downlink, hex};

    // A status frame laid out per README.md; its CRC-8 was computed independently of this crate.
    const STATUS: &str = "a5 01 00 07 0d 01 50 08 fc 00 5e 01 45 00 01 e2 40 00 36";

    fn json_of(uplink: Uplink) -> Value {
        lotus_plugin_sdk::serde_json::from_str(&frame::to_alink(uplink, None).to_json()).unwrap()
    }

    #[test]
    fn status_frame_becomes_property_post() {
        let uplink = frame::parse(&hex::decode(STATUS).unwrap()).unwrap();
        assert_eq!(
            json_of(uplink)["params"],
            json!({"LightSwitch": 1, "Brightness": 80, "Voltage": 230.0, "Current": 0.94,
                   "Power": 32.5, "Energy": 1234.56, "WorkMode": 0})
        );
    }

    #[test]
    fn fault_frame_becomes_event() {
        let mut bytes = vec![0xA5, 0x02, 0x00, 0x08, 0x01, 0x03];
        bytes.push(lotus_plugin_sdk::crc::crc8(&bytes[1..]));
        let out = json_of(frame::parse(&bytes).unwrap());
        assert_eq!(out["method"], "thing.event.LampFault.post");
        assert_eq!(out["params"]["value"], json!({"ErrorCode": 3}));
    }

    #[test]
    fn ack_names_the_command() {
        let mut bytes = vec![0xA5, 0x03, 0x12, 0x34, 0x01, 0x00];
        bytes.push(lotus_plugin_sdk::crc::crc8(&bytes[1..]));
        let uplink = frame::parse(&bytes).unwrap();
        let reply = frame::to_alink(uplink, Some("1700000000004660".into())).to_json();
        let reply: Value = lotus_plugin_sdk::serde_json::from_str(&reply).unwrap();
        assert_eq!(
            (reply["id"].as_str(), reply["code"].as_u64()),
            (Some("1700000000004660"), Some(200))
        );
    }

    #[test]
    fn errors_name_byte_and_field() {
        let mut bytes = hex::decode(STATUS).unwrap();
        bytes[6] = 0x51;
        let e = frame::parse(&bytes).unwrap_err();
        assert_eq!((e.offset, e.field.as_deref()), (Some(18), Some("crc")));

        let e = frame::parse(&hex::decode(STATUS).unwrap()[..10]).unwrap_err();
        assert_eq!((e.offset, e.field.as_deref()), (Some(5), Some("body")));

        // A status body one byte short: WorkMode is missing.
        let mut short = vec![
            0xA5, 0x01, 0x00, 0x07, 0x0c, 0x01, 0x50, 0x08, 0xfc, 0x00, 0x5e, 0x01, 0x45, 0x00,
            0x01, 0xe2, 0x40,
        ];
        short.push(lotus_plugin_sdk::crc::crc8(&short[1..]));
        let e = frame::parse(&short).unwrap_err();
        assert_eq!((e.offset, e.field.as_deref()), (Some(17), Some("WorkMode")));
    }

    #[test]
    fn property_set_becomes_set_frame() {
        let set = Downlink::parse(
            r#"{"id":"4660","method":"thing.service.property.set","params":{"LightSwitch":1,"Brightness":60}}"#,
        )
        .unwrap();
        assert_eq!(
            hex::encode(&frame::encode(&set, 0x1234).unwrap()),
            "a5101234040101023c30"
        );

        let bad = Downlink::parse(
            r#"{"id":"1","method":"thing.service.property.set","params":{"Brightness":101}}"#,
        )
        .unwrap();
        assert_eq!(
            frame::encode(&bad, 1).unwrap_err().field.as_deref(),
            Some("Brightness")
        );
        let bad = Downlink::parse(
            r#"{"id":"1","method":"thing.service.property.set","params":{"Power":1}}"#,
        )
        .unwrap();
        assert_eq!(
            frame::encode(&bad, 1).unwrap_err().field.as_deref(),
            Some("Power")
        );
    }
}
