use lotus_plugin_sdk::Downlink;
use lotus_plugin_sdk::serde_json::{Value, json};

use crate::remap::{self, Mapping};

/// An environment sensor vendor's uplink, as its cloud forwards it.
const PAYLOAD: &str = r#"{"devId":"ENV-0042","msgNo":9876,"ts":1700000000000,
  "data":{"temp":215,"hum":48.5,"co2 ppm":612,"flags":[false,true]}}"#;

const MAPPING: &str = r#"{
    "$id": "$.msgNo",
    "$time": "$.ts",
    "Temperature": {"path": "$.data.temp", "scale": 0.1},
    "Humidity": "$.data.hum",
    "CO2": "$.data['co2 ppm']",
    "Alarm": "$.data.flags[1]",
    "Pressure": "$.data.press"
}"#;

fn post(payload: &str, mapping: &Mapping) -> Value {
    let request = remap::decode(payload.as_bytes(), mapping, "1".into()).unwrap();
    lotus_plugin_sdk::serde_json::from_str(&request.to_json()).unwrap()
}

#[test]
fn maps_paths_to_identifiers() {
    let mapping = Mapping::parse(MAPPING).unwrap();
    assert_eq!(
        post(PAYLOAD, &mapping),
        json!({
            "id": "9876",
            "version": "1.0",
            "method": "thing.event.property.post",
            "params": {
                "Temperature": {"value": 21.5, "time": 1700000000000_i64},
                "Humidity": {"value": 48.5, "time": 1700000000000_i64},
                "CO2": {"value": 612, "time": 1700000000000_i64},
                "Alarm": {"value": true, "time": 1700000000000_i64}
            }
        })
    );
}

#[test]
fn default_passes_top_level_values_through() {
    let out = post(
        r#"{"Temperature":21.5,"Online":true,"nested":{"x":1}}"#,
        &Mapping::default(),
    );
    assert_eq!(out["params"], json!({"Temperature": 21.5, "Online": true}));
    assert_eq!(out["id"], "1");
}

#[test]
fn decode_errors_say_where() {
    let mapping = Mapping::parse(MAPPING).unwrap();
    let e = remap::decode(b"{\"data\":\n {\"temp\": 2x}}", &mapping, "1".into()).unwrap_err();
    assert_eq!((e.offset, e.field.as_deref()), (Some(20), Some("payload")));

    let e = remap::decode(br#"{"other":1}"#, &mapping, "1".into()).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("mapping"));

    let e = remap::decode(br#"{"data":{"temp":"hot"}}"#, &mapping, "1".into()).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("Temperature"));

    let e = remap::decode(b"[1,2]", &Mapping::default(), "1".into()).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("payload"));
}

#[test]
fn mapping_errors_name_the_identifier() {
    let e = Mapping::parse(r#"{"Temperature": "data.temp"}"#).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("mapping.Temperature"));
    assert!(e.message.contains("at character 0"), "{}", e.message);
    let e = Mapping::parse(r#"{"Humidity": {"path": "$.h", "scale": 0}}"#).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("mapping.Humidity"));
    assert_eq!(
        Mapping::parse("[]").unwrap_err().field.as_deref(),
        Some("mapping")
    );
}

#[test]
fn encodes_property_set_at_the_paths() {
    let mapping = Mapping::parse(
        r#"{"$id": "$.msgNo", "TargetTemperature": {"path": "$.cmd.setpoint", "scale": 0.1}, "Fan": "$.cmd.fan[0]"}"#,
    )
    .unwrap();
    let set = Downlink::parse(
        r#"{"id":"77","method":"thing.service.property.set","params":{"TargetTemperature":22.5,"Fan":true}}"#,
    )
    .unwrap();
    let out: Value =
        lotus_plugin_sdk::serde_json::from_slice(&remap::encode(&set, &mapping).unwrap()).unwrap();
    assert_eq!(
        out,
        json!({"msgNo": "77", "cmd": {"setpoint": 225.0, "fan": [true]}})
    );
}

#[test]
fn encode_errors_name_the_identifier() {
    let mapping = Mapping::parse(r#"{"A": "$.a", "B": "$.a.b"}"#).unwrap();
    let set = |params: &str| {
        Downlink::parse(&format!(
            r#"{{"id":"1","method":"thing.service.property.set","params":{params}}}"#
        ))
        .unwrap()
    };
    assert_eq!(
        remap::encode(&set(r#"{"C":1}"#), &mapping)
            .unwrap_err()
            .field
            .as_deref(),
        Some("C")
    );
    assert_eq!(
        remap::encode(&set(r#"{"A":1,"B":2}"#), &mapping)
            .unwrap_err()
            .field
            .as_deref(),
        Some("B")
    );
    let call =
        Downlink::parse(r#"{"id":"1","method":"thing.service.Reboot","params":{}}"#).unwrap();
    assert_eq!(
        remap::encode(&call, &mapping).unwrap_err().field.as_deref(),
        Some("method")
    );
    // Without a mapping, a property set passes through unchanged.
    assert_eq!(
        remap::encode(&set(r#"{"C":1}"#), &Mapping::default()).unwrap(),
        br#"{"C":1}"#
    );
}
