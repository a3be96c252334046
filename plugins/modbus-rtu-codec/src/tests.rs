use lotus_plugin_sdk::serde_json::{Value, json};
use lotus_plugin_sdk::{Downlink, hex};

use crate::map::RegisterMap;
use crate::rtu::{self, Response};

/// A power meter's map, as an operator would store it in kv under `registers`.
const MAP: &str = r#"{
    "slave": 1,
    "start": 0,
    "registers": [
        {"identifier": "Voltage", "address": 0, "type": "u16", "scale": 0.1},
        {"identifier": "Temperature", "address": 1, "type": "i16", "scale": 0.1},
        {"identifier": "Energy", "address": 2, "type": "u32", "scale": 0.01, "wordOrder": "little"},
        {"identifier": "Power", "address": 4, "type": "f32"},
        {"identifier": "Setpoint", "address": 10, "type": "u16", "writable": true},
        {"identifier": "Limit", "address": 11, "type": "u32", "writable": true},
        {"identifier": "Offset", "address": 20, "type": "i16", "scale": 0.5, "writable": true}
    ]
}"#;

/// Frames with CRCs computed independently of this crate.
const READ_RESPONSE: &str = "01 03 0c 09 01 ff cc e2 40 00 01 3f c0 00 00 44 db";
const EXCEPTION_ILLEGAL_ADDRESS: &str = "01 83 02 c0 f1";
const WRITE_SINGLE_ECHO: &str = "01 06 00 0a 00 64 a8 23";

fn map() -> RegisterMap {
    RegisterMap::parse(MAP).unwrap()
}

fn alink(hex_frame: &str) -> Value {
    let map = map();
    let response = rtu::parse(&hex::decode(hex_frame).unwrap(), &map).unwrap();
    let message = rtu::to_alink(&response, &map, "7".into()).unwrap();
    lotus_plugin_sdk::serde_json::from_str(&message.to_json()).unwrap()
}

#[test]
fn read_response_becomes_properties() {
    assert_eq!(
        alink(READ_RESPONSE)["params"],
        json!({"Voltage": 230.5, "Temperature": -5.2, "Energy": 1234.56, "Power": 1.5})
    );
}

#[test]
fn input_register_response_and_partial_poll() {
    // Function 04 reading only the first two registers: the rest of the map is absent.
    let frame = rtu::frame(1, rtu::READ_INPUT, &[4, 0x09, 0x01, 0x00, 0x7B]);
    let map = map();
    let response = rtu::parse(&frame, &map).unwrap();
    assert_eq!(response, Response::Registers(vec![2305, 123]));
    let post = rtu::properties(&[2305, 123], &map, "1".into()).unwrap();
    assert_eq!(
        post.params(),
        json!({"Voltage": 230.5, "Temperature": 12.3})
    );
}

#[test]
fn write_confirmation_becomes_reply() {
    let reply = alink(WRITE_SINGLE_ECHO);
    assert_eq!(reply["code"], 200);
    assert_eq!(reply["method"], "thing.service.property.set");
}

#[test]
fn exception_names_the_exception() {
    let e = rtu::parse(&hex::decode(EXCEPTION_ILLEGAL_ADDRESS).unwrap(), &map()).unwrap_err();
    assert_eq!(
        (e.offset, e.field.as_deref()),
        (Some(2), Some("exception code"))
    );
    assert_eq!(
        e.message,
        "Modbus exception 0x02 ILLEGAL DATA ADDRESS to function 0x03"
    );
}

#[test]
fn bad_crc_and_short_frames_say_where() {
    let mut bytes = hex::decode(READ_RESPONSE).unwrap();
    bytes[5] ^= 0xFF;
    let e = rtu::parse(&bytes, &map()).unwrap_err();
    assert_eq!((e.offset, e.field.as_deref()), (Some(15), Some("crc")));

    // A byte count promising more registers than the frame holds.
    let truncated = rtu::frame(1, rtu::READ_HOLDING, &[4, 0x09, 0x01]);
    let e = rtu::parse(&truncated, &map()).unwrap_err();
    assert_eq!(
        (e.offset, e.field.as_deref()),
        (Some(5), Some("register data"))
    );

    let e = rtu::parse(&[0x01, 0x03], &map()).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("frame"));

    let odd = rtu::frame(1, rtu::READ_HOLDING, &[3, 0, 0, 0]);
    assert_eq!(
        rtu::parse(&odd, &map()).unwrap_err().field.as_deref(),
        Some("byte count")
    );

    let other_slave = rtu::frame(2, rtu::READ_HOLDING, &[2, 0, 0]);
    let e = rtu::parse(&other_slave, &map()).unwrap_err();
    assert_eq!(
        (e.offset, e.field.as_deref()),
        (Some(0), Some("slave address"))
    );
}

#[test]
fn nan_register_is_refused_with_its_identifier() {
    let map =
        RegisterMap::parse(r#"[{"identifier": "Flow", "address": 0, "type": "f32"}]"#).unwrap();
    let e = rtu::properties(&[0x7FC0, 0x0000], &map, "1".into()).unwrap_err();
    assert_eq!((e.offset, e.field.as_deref()), (Some(3), Some("Flow")));
}

fn encode(json: &str) -> Result<Vec<u8>, lotus_plugin_sdk::CodecError> {
    rtu::encode(&Downlink::parse(json).unwrap(), &map())
}

#[test]
fn single_register_set_is_function_06() {
    let frame =
        encode(r#"{"id":"1","method":"thing.service.property.set","params":{"Setpoint":100}}"#)
            .unwrap();
    assert_eq!(hex::encode(&frame), WRITE_SINGLE_ECHO.replace(' ', ""));
}

#[test]
fn contiguous_set_is_function_16() {
    let frame =
        encode(r#"{"id":"1","method":"thing.service.property.set","params":{"Limit":12345,"Setpoint":100}}"#).unwrap();
    assert_eq!(hex::encode(&frame), "0110000a000306006400003039637a");
}

#[test]
fn scaled_signed_write() {
    let frame =
        encode(r#"{"id":"1","method":"thing.service.property.set","params":{"Offset":-1.5}}"#)
            .unwrap();
    // -1.5 / 0.5 = -3 → 0xFFFD.
    assert_eq!(&frame[..6], &[0x01, 0x06, 0x00, 0x14, 0xFF, 0xFD]);
}

#[test]
fn property_get_is_a_read_from_start() {
    let frame =
        encode(r#"{"id":"1","method":"thing.service.property.get","params":["Voltage","Power"]}"#)
            .unwrap();
    assert_eq!(hex::encode(&frame), "010300000006c5c8");
}

#[test]
fn write_errors_name_the_identifier() {
    let field = |json: &str| encode(json).unwrap_err().field;
    let set = |params: &str| {
        format!(r#"{{"id":"1","method":"thing.service.property.set","params":{params}}}"#)
    };
    assert_eq!(
        field(&set(r#"{"Voltage":230}"#)).as_deref(),
        Some("Voltage")
    );
    assert_eq!(field(&set(r#"{"Unknown":1}"#)).as_deref(), Some("Unknown"));
    assert_eq!(
        field(&set(r#"{"Setpoint":70000}"#)).as_deref(),
        Some("Setpoint")
    );
    assert_eq!(
        field(&set(r#"{"Setpoint":1,"Offset":2}"#)).as_deref(),
        Some("Offset")
    );
    assert_eq!(
        field(r#"{"id":"1","method":"thing.service.Reset","params":{}}"#).as_deref(),
        Some("Reset")
    );
}

#[test]
fn map_errors_name_the_entry() {
    let e = RegisterMap::parse(r#"[{"identifier":"A","address":0,"type":"u8"}]"#).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("registers"));
    let e = RegisterMap::parse(r#"[{"identifier":"A","address":0,"type":"u16","scale":0}]"#)
        .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("registers[0].scale"));
    let e = RegisterMap::parse(
        r#"[{"identifier":"A","address":0,"type":"u16"},{"identifier":"A","address":1,"type":"u16"}]"#,
    )
    .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("registers[1].identifier"));
}
