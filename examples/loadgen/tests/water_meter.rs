//! The water meter's two formats without a node: the README's example frame, increasing
//! readings, the thing model's identifiers, the manifest rewrite, and the Alink posts equal to
//! what the real codec decodes from the frames (the comparison's "like for like").

use lotus_loadgen::city::{Kind, SimDevice};
use lotus_loadgen::water_meter::{self as raw, Format};
use lotus_model::thing_model::ThingModel;
use lotus_test_harness::device::DeviceCredentials;
use serde_json::Value;

fn meter(index: u64) -> SimDevice {
    SimDevice {
        creds: DeviceCredentials {
            product_key: "a1pk".into(),
            device_name: format!("{:014}", 20231115000000 + index),
            device_secret: "s".into(),
        },
        kind: Kind::WaterMeter,
        key_property: raw::KEY_PROPERTY,
        index,
        lat: 0.0,
        lon: 0.0,
    }
}

#[test]
fn the_readme_example_frame_is_reproduced() {
    let hex = "68 01 01 01 02 20 23 11 15 00 00 42 0f 00 bc 61 4e 04 e2 0e 10 01 00 7d 00 00 00 3c f0 fa 16";
    let expected: Vec<u8> = hex
        .split(' ')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    let payload = &expected[13..28];
    let frame = raw::frame(
        raw::TYPE_DATA,
        0x0102,
        raw::serial_bytes("20231115000042"),
        payload,
    );
    assert_eq!(frame, expected);
    assert_eq!(raw::serial_bytes("not-a-serial"), [0xAA; 7]);
}

#[test]
fn data_frames_are_well_formed_and_flow_increases() {
    for index in 0..20 {
        let d = meter(index);
        let mut last = 0u32;
        for seq in 0..300 {
            let f = raw::data_frame(&d, seq);
            assert_eq!(f.len(), 13 + 15 + 3);
            assert_eq!((f[0], f[1], f[2], f[12], f[30]), (0x68, 1, 1, 15, 0x16));
            let crc = raw::crc16_modbus(&f[..28]).to_le_bytes();
            assert_eq!(&f[28..30], &crc);
            let flow = u32::from_be_bytes(f[13..17].try_into().unwrap());
            assert!(flow > last, "meter {index} post {seq}: {flow} after {last}");
            last = flow;
            let alarm = raw::leakage_frame(&d, seq);
            assert_eq!((alarm[2], alarm[12], alarm[13]), (2, 11, 1));
            let n = alarm.len();
            let crc = raw::crc16_modbus(&alarm[..n - 3]).to_le_bytes();
            assert_eq!(&alarm[n - 3..n - 1], &crc);
        }
    }
}

#[test]
fn the_thing_model_accepts_what_the_codec_emits() {
    let tsl: Value = serde_json::from_str(raw::TSL).unwrap();
    let compiled = ThingModel::parse(&tsl).unwrap().compile();
    // The README's decoded example, and the extremes of a data frame.
    let post = serde_json::json!({"CumulativeFlow":12345.678,"InstantFlow":1.25,"BatteryVoltage":3.6,
        "ValveState":1,"WaterTemperature":12.5,"StatusBits":0,"ReportInterval":60});
    compiled.validate_property_post(&post).unwrap();
    let extremes = serde_json::json!({"CumulativeFlow":4294967.295,"InstantFlow":65.535,
        "BatteryVoltage":0.0,"ValveState":2,"WaterTemperature":-3276.8,"StatusBits":65535,
        "ReportInterval":0});
    compiled.validate_property_post(&extremes).unwrap();
    compiled
        .validate_event_post(
            "Leakage",
            &serde_json::json!({"InstantFlow": 0.25, "CumulativeFlow": 100.5}),
        )
        .unwrap();
    compiled
        .validate_event_post("Tamper", &serde_json::json!({"StatusBits": 8}))
        .unwrap();
}

#[test]
fn the_manifest_is_scoped_to_the_product() {
    let text = "id = \"lotus-water-meter\"\nworld = \"codec\"\nproducts = []\n\n[limits]\nmemory_mib = 16\n";
    let out = raw::manifest_for(text, "a1B2", None);
    assert!(out.contains("products = [\"a1B2\"]\n"), "{out}");
    assert_eq!(out.matches("products").count(), 1, "{out}");
    let out = raw::manifest_for(
        "id = \"x\"\nworld = \"codec\"\n[limits]\n",
        "pk",
        Some("x-pk"),
    );
    assert_eq!(
        out,
        "id = \"x-pk\"\nworld = \"codec\"\nproducts = [\"pk\"]\n[limits]\n"
    );
    assert_eq!("raw".parse::<Format>(), Ok(Format::Raw));
    assert!("json".parse::<Format>().is_err());
}

#[test]
fn alink_posts_are_what_the_codec_decodes_from_the_frames() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../plugins/water-meter-codec"
    );
    let harness = lotus_plugin_test::Harness::load(
        std::path::Path::new(&format!("{dir}/lotus-plugin.toml")),
        std::path::Path::new(lotus_plugin_artifacts::WATER_METER_CODEC),
    )
    .unwrap();
    for index in [0, 7, 123] {
        let d = meter(index);
        let topic = format!("/sys/a1pk/{}/thing/model/up_raw", d.creds.device_name);
        let ctx = harness.context(&topic);
        for seq in [0, 1, 24, 999, 70_000] {
            let decoded = harness
                .decode(&topic, &raw::data_frame(&d, seq), &ctx)
                .unwrap();
            let alink: Value = serde_json::from_str(&raw::alink_post(&d, seq)).unwrap();
            assert_eq!(decoded, alink, "meter {index} post {seq}");
            let decoded = harness
                .decode(&topic, &raw::leakage_frame(&d, seq), &ctx)
                .unwrap();
            let alink: Value = serde_json::from_str(&raw::alink_leakage(&d, seq)).unwrap();
            assert_eq!(decoded, alink, "meter {index} leakage after {seq}");
        }
    }
}
