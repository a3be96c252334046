//! The city mix without a node: its thing models load, and every payload and downlink the
//! simulator generates passes the platform's own validation of those models.

use lotus_loadgen::city::{self, CITY, Kind, Mix, SimDevice};
use lotus_model::thing_model::ThingModel;
use lotus_test_harness::device::DeviceCredentials;
use serde_json::Value;

fn device(kind: Kind, key_property: &'static str, index: u64) -> SimDevice {
    let (lat, lon) = city::coordinates(index);
    SimDevice {
        creds: DeviceCredentials {
            product_key: "a1pk".into(),
            device_name: format!("dev-{index}"),
            device_secret: "s".into(),
        },
        kind,
        key_property,
        index,
        lat,
        lon,
    }
}

#[test]
fn city_models_are_valid_and_payloads_pass_them() {
    for spec in Mix::City
        .products()
        .iter()
        .chain(Mix::StreetLight.products())
    {
        let tsl: Value = serde_json::from_str(spec.tsl).unwrap();
        let model = ThingModel::parse(&tsl).unwrap_or_else(|e| panic!("{}: {e}", spec.name));
        let compiled = model.compile();
        assert!(model.property(spec.key_property).is_some(), "{}", spec.name);
        for index in 0..20 {
            let d = device(spec.kind, spec.key_property, index);
            for seq in [0, 1, 49, 1234, 99_999] {
                let post: Value =
                    serde_json::from_str(&d.property_post(seq, 1_700_000_000_000)).unwrap();
                assert!(post["params"][spec.key_property]["time"].is_i64());
                compiled
                    .validate_property_post(&post["params"])
                    .unwrap_or_else(|e| panic!("{} post {seq}: {e} in {post}", spec.name));
                if let Some((id, event)) = d.event(seq, 1_700_000_000_000) {
                    let event: Value = serde_json::from_str(&event).unwrap();
                    compiled
                        .validate_event_post(id, &event["params"]["value"])
                        .unwrap_or_else(|e| panic!("{} event {id}: {e}", spec.name));
                }
                let (path, body) = d.downlink(seq);
                if path == "/properties:set" {
                    compiled
                        .validate_property_set(&body["params"])
                        .unwrap_or_else(|e| panic!("{} set: {e} in {body}", spec.name));
                } else {
                    let service = path
                        .strip_prefix("/services/")
                        .and_then(|p| p.strip_suffix(":invoke"))
                        .unwrap();
                    compiled
                        .validate_service_input(service, &body["params"])
                        .unwrap_or_else(|e| panic!("{} {service}: {e} in {body}", spec.name));
                    // The device's answer passes the service's output check too, whether
                    // the call came as an asynchronous request or over RRPC.
                    let topic = format!("/sys/a1pk/dev/thing/service/{service}");
                    let request = format!(
                        r#"{{"id":"7","params":{},"method":"thing.service.{service}"}}"#,
                        body["params"]
                    );
                    let rrpc = "/sys/a1pk/dev/rrpc/request/7".to_string();
                    for (topic, expected) in [
                        (topic.clone(), format!("{topic}_reply")),
                        (rrpc, "/sys/a1pk/dev/rrpc/response/7".to_string()),
                    ] {
                        let (reply_topic, reply) =
                            city::answer(&topic, request.as_bytes()).unwrap();
                        assert_eq!(reply_topic, expected);
                        let reply: Value = serde_json::from_str(&reply).unwrap();
                        assert_eq!(reply["id"], "7");
                        compiled
                            .validate_service_output(service, &reply["data"])
                            .unwrap_or_else(|e| panic!("{} {service} reply: {e}", spec.name));
                    }
                }
            }
        }
    }
}

#[test]
fn devices_spread_over_the_mix_and_the_city() {
    let counts = city::split(100, &CITY);
    assert_eq!(counts.iter().sum::<usize>(), 100);
    assert_eq!(counts, vec![40, 30, 10, 20]);
    let small = city::split(5, &CITY);
    assert_eq!(small.iter().sum::<usize>(), 5);
    assert!(small.iter().all(|&c| c >= 1), "{small:?}");
    assert_eq!(city::split(2, &CITY).iter().sum::<usize>(), 2);
    for i in 0..1000 {
        let (lat, lon) = city::coordinates(i);
        assert!((city::LAT.0..city::LAT.1).contains(&lat), "{lat}");
        assert!((city::LON.0..city::LON.1).contains(&lon), "{lon}");
        let d = city::district(lat, lon);
        let n: u32 = d[1..].parse().unwrap();
        assert!((1..=16).contains(&n), "{d}");
    }
}

#[test]
fn devices_answer_only_requests() {
    let set = "/sys/a1pk/d1/thing/service/property/set";
    let (topic, reply) = city::answer(set, br#"{"id":"42","params":{"Brightness":10}}"#).unwrap();
    assert_eq!(topic, format!("{set}_reply"));
    assert!(reply.contains(r#""id":"42""#) && reply.contains(r#""code":200"#));
    assert!(city::answer("/sys/a1pk/d1/thing/service/Reboot_reply", b"{}").is_none());
    assert!(city::answer("/sys/a1pk/d1/thing/event/property/post_reply", b"{}").is_none());
    assert!(city::answer(set, b"not json").is_none());
}
