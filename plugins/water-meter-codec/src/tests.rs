use lotus_plugin_sdk::serde_json::{Value, json};
use lotus_plugin_sdk::{Downlink, hex};

use crate::frame::{self, Pending};

/// Complete frames in the layout of README.md, CRCs computed independently of this crate.
const DATA: &str =
    "68 01 01 01 02 20 23 11 15 00 00 42 0f 00 bc 61 4e 04 e2 0e 10 01 00 7d 00 00 00 3c f0 fa 16";
const DATA_FREEZING: &str =
    "68 01 01 01 03 20 23 11 15 00 00 42 0f 00 bc 61 4e 04 e2 0e 10 01 ff dd 00 00 00 3c 39 79 16";
/// Without CRC and end byte; [`with_crc`] completes it.
const ALARM_LOW_BATTERY_BODY: &str =
    "68 01 02 01 04 20 23 11 15 00 00 42 0b 02 00 02 00 bc 61 4e 04 e2 0e 10";
const REPLY_OK: &str = "68 01 03 12 34 20 23 11 15 00 00 42 01 00 a3 f2 16";

fn decode(hex_frame: &str, pending: Option<Pending>) -> Value {
    let frame = frame::parse(&hex::decode(hex_frame).unwrap()).unwrap();
    lotus_plugin_sdk::serde_json::from_str(&frame::to_alink(&frame, pending).to_json()).unwrap()
}

fn with_crc(mut frame: Vec<u8>) -> Vec<u8> {
    let crc = lotus_plugin_sdk::crc::crc16_modbus(&frame);
    frame.extend(crc.to_le_bytes());
    frame.push(frame::END);
    frame
}

#[test]
fn data_frame_becomes_property_post() {
    assert_eq!(
        decode(DATA, None),
        json!({
            "id": "258",
            "version": "1.0",
            "method": "thing.event.property.post",
            "params": {
                "CumulativeFlow": 12345.678,
                "InstantFlow": 1.25,
                "BatteryVoltage": 3.6,
                "ValveState": 1,
                "WaterTemperature": 12.5,
                "StatusBits": 0,
                "ReportInterval": 60
            }
        })
    );
    let frame = frame::parse(&hex::decode(DATA).unwrap()).unwrap();
    assert_eq!(frame.serial, "20231115000042");
}

#[test]
fn negative_temperature_is_signed() {
    assert_eq!(
        decode(DATA_FREEZING, None)["params"]["WaterTemperature"],
        json!(-3.5)
    );
}

#[test]
fn alarm_frame_becomes_event_post() {
    let frame = with_crc(hex::decode(ALARM_LOW_BATTERY_BODY).unwrap());
    let parsed = frame::parse(&frame).unwrap();
    let alink: Value =
        lotus_plugin_sdk::serde_json::from_str(&frame::to_alink(&parsed, None).to_json()).unwrap();
    assert_eq!(alink["method"], "thing.event.LowBattery.post");
    assert_eq!(alink["params"], json!({"value": {"BatteryVoltage": 3.6}}));
}

#[test]
fn reply_names_the_pending_command() {
    let pending = Pending {
        id: "1700000000004660".into(),
        method: "thing.service.ControlValve".into(),
    };
    assert_eq!(
        decode(REPLY_OK, Some(pending)),
        json!({"id": "1700000000004660", "version": "1.0", "code": 200, "method": "thing.service.ControlValve", "data": {}})
    );
    // Without the kv entry the sequence number stands in for the id.
    assert_eq!(decode(REPLY_OK, None)["id"], "4660");
}

#[test]
fn bad_crc_names_offset_and_field() {
    let mut bytes = hex::decode(DATA).unwrap();
    bytes[14] ^= 0x01;
    let e = frame::parse(&bytes).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("crc"));
    assert_eq!(e.offset, Some(28));
    assert!(e.message.contains("CRC mismatch"), "{}", e.message);
}

#[test]
fn short_frame_names_offset_and_field() {
    let bytes = hex::decode(DATA).unwrap();
    let e = frame::parse(&bytes[..20]).unwrap_err();
    assert_eq!((e.offset, e.field.as_deref()), (Some(13), Some("payload")));
    let e = frame::parse(&bytes[..4]).unwrap_err();
    assert_eq!((e.offset, e.field.as_deref()), (Some(3), Some("sequence")));
}

#[test]
fn short_payload_points_into_the_payload() {
    // Length byte says 3, so the cumulative flow (4 bytes) cannot be read.
    let mut bytes = hex::decode("68 01 01 00 01 20 23 11 15 00 00 42 03 00 00 01").unwrap();
    bytes = with_crc(bytes);
    let e = frame::parse(&bytes).unwrap_err();
    assert_eq!(
        (e.offset, e.field.as_deref()),
        (Some(13), Some("cumulative flow"))
    );
}

#[test]
fn other_errors_point_at_their_byte() {
    let mut bytes = hex::decode(DATA).unwrap();
    bytes[0] = 0x69;
    assert_eq!(frame::parse(&bytes).unwrap_err().offset, Some(0));

    let unknown_type = with_crc(hex::decode("68 01 07 00 01 20 23 11 15 00 00 42 00").unwrap());
    let e = frame::parse(&unknown_type).unwrap_err();
    assert_eq!(
        (e.offset, e.field.as_deref()),
        (Some(2), Some("frame type"))
    );

    let bad_serial = with_crc(hex::decode("68 01 03 00 01 20 23 1a 15 00 00 42 01 00").unwrap());
    let e = frame::parse(&bad_serial).unwrap_err();
    assert_eq!((e.offset, e.field.as_deref()), (Some(7), Some("serial")));

    let unknown_alarm = with_crc(
        hex::decode("68 01 02 00 01 20 23 11 15 00 00 42 0b 09 00 00 00 00 00 00 00 00 00 00")
            .unwrap(),
    );
    let e = frame::parse(&unknown_alarm).unwrap_err();
    assert_eq!(
        (e.offset, e.field.as_deref()),
        (Some(13), Some("alarm code"))
    );

    let mut trailing = hex::decode(DATA).unwrap();
    trailing.push(0);
    assert_eq!(frame::parse(&trailing).unwrap_err().offset, Some(31));
}

#[test]
fn valve_close_becomes_command_frame() {
    let set = Downlink::parse(
        r#"{"id":"4660","method":"thing.service.property.set","params":{"ValveState":0}}"#,
    )
    .unwrap();
    let sequence = frame::sequence_for(set.id()).unwrap();
    let bytes = frame::command(&set, sequence, frame::serial_bytes("20231115000042")).unwrap();
    assert_eq!(
        hex::encode(&bytes),
        "6801811234202311150000420301010 02a1f16".replace(' ', "")
    );
}

#[test]
fn valve_and_interval_in_one_command() {
    let set = Downlink::parse(
        r#"{"id":"4661","method":"thing.service.property.set","params":{"ValveState":1,"ReportInterval":30}}"#,
    )
    .unwrap();
    let bytes = frame::command(
        &set,
        frame::sequence_for(set.id()).unwrap(),
        frame::serial_bytes("20231115000042"),
    )
    .unwrap();
    assert_eq!(
        hex::encode(&bytes),
        "68018112352023111500004207010101020200 1ee40d16".replace(' ', "")
    );
}

#[test]
fn control_valve_service_and_broadcast_address() {
    let call =
        Downlink::parse(r#"{"id":"1","method":"thing.service.ControlValve","params":{"Open":1}}"#)
            .unwrap();
    let bytes = frame::command(&call, 1, frame::serial_bytes("meter-7")).unwrap();
    assert_eq!(&bytes[5..12], &frame::BROADCAST_SERIAL);
    assert_eq!(&bytes[13..16], &[frame::TAG_VALVE, 1, 1]);
    assert_eq!(frame::reply_method(&call), "thing.service.ControlValve");
    // The meter parses what we send: same header, CRC and end byte rules.
    assert_eq!(bytes[bytes.len() - 1], frame::END);
}

#[test]
fn command_errors_name_the_identifier() {
    let bad = |json: &str| {
        frame::command(&Downlink::parse(json).unwrap(), 1, frame::BROADCAST_SERIAL).unwrap_err()
    };
    let e =
        bad(r#"{"id":"1","method":"thing.service.property.set","params":{"ReportInterval":0}}"#);
    assert_eq!(e.field.as_deref(), Some("ReportInterval"));
    let e = bad(r#"{"id":"1","method":"thing.service.property.set","params":{"ValveState":2}}"#);
    assert_eq!(e.field.as_deref(), Some("ValveState"));
    let e =
        bad(r#"{"id":"1","method":"thing.service.property.set","params":{"CumulativeFlow":0}}"#);
    assert_eq!(e.field.as_deref(), Some("CumulativeFlow"));
    let e = bad(r#"{"id":"1","method":"thing.service.Reboot","params":{}}"#);
    assert_eq!(e.field.as_deref(), Some("Reboot"));
    let e = frame::sequence_for("abc").unwrap_err();
    assert_eq!(e.field.as_deref(), Some("id"));
}

#[test]
fn pending_round_trips() {
    let p = Pending {
        id: "9".into(),
        method: "thing.service.property.set".into(),
    };
    assert_eq!(
        frame::pending_from_json(&frame::pending_to_json(&p)),
        Some(p)
    );
}
