//! The per-message work of the device plane: CONNECT signature checks, topic ACL decisions and
//! thing-model validation. `cargo bench -p lotus-model`.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use lotus_model::alink::{ClientIdParams, SignMethod, connect_sign_content, parse_uplink_topic};
use lotus_model::authz::{DeviceId, Principal, TopicAction, TopicAuthorizer};
use lotus_model::thing_model::ThingModel;
use lotus_model::topic::{
    TopicClass, TopicClassAuthorizer, TopicClassSource, default_custom_topic_classes,
    system_topic_classes,
};
use serde_json::json;

struct Products(HashMap<String, Arc<[TopicClass]>>);

impl TopicClassSource for Products {
    fn topic_classes(&self, product_key: &str) -> Option<Arc<[TopicClass]>> {
        self.0.get(product_key).cloned()
    }
}

fn sign_check(c: &mut Criterion) {
    let secret = b"y7tPq3b8LxWm2Zr5Kc9Vd1Hs6Gf4Ja0N";
    let client_id =
        "lamp-0001|securemode=3,signmethod=hmacsha256,timestamp=1700000000000,_v=sdk-c-4.1.0|";
    let content = connect_sign_content(
        "lamp-0001",
        "lamp-0001",
        "a1B2c3D4e5F",
        Some("1700000000000"),
    );
    let password = SignMethod::HmacSha256.sign(secret, &content);
    c.bench_function("connect: parse client id + verify hmacsha256", |b| {
        b.iter(|| {
            let p = ClientIdParams::parse(black_box(client_id)).unwrap();
            let content =
                connect_sign_content(&p.id, "lamp-0001", "a1B2c3D4e5F", p.timestamp.as_deref());
            assert!(
                p.sign_method
                    .unwrap()
                    .verify(secret, &content, black_box(&password))
            );
        })
    });
}

fn topic_acl(c: &mut Criterion) {
    let mut classes = system_topic_classes();
    for (i, (t, op, d)) in default_custom_topic_classes().into_iter().enumerate() {
        classes.push(TopicClass::custom(i.to_string(), t, op, d).unwrap());
    }
    let authorizer = TopicClassAuthorizer::new(Products(HashMap::from([(
        "a1B2c3D4e5F".to_string(),
        classes.into(),
    )])));
    let device = Principal::Device(DeviceId::new("a1B2c3D4e5F", "lamp-0001"));
    c.bench_function("acl: publish property post (allowed)", |b| {
        b.iter(|| {
            authorizer.authorize_topic(
                &device,
                TopicAction::Publish,
                black_box("/sys/a1B2c3D4e5F/lamp-0001/thing/event/property/post"),
            )
        })
    });
    c.bench_function("acl: publish into another device (denied)", |b| {
        b.iter(|| {
            authorizer.authorize_topic(
                &device,
                TopicAction::Publish,
                black_box("/sys/a1B2c3D4e5F/lamp-0002/thing/event/property/post"),
            )
        })
    });
    c.bench_function("uplink: classify topic", |b| {
        b.iter(|| {
            parse_uplink_topic(black_box(
                "/sys/a1B2c3D4e5F/lamp-0001/thing/event/property/post",
            ))
        })
    });
}

fn validation(c: &mut Criterion) {
    let tsl: serde_json::Value = serde_json::from_str(include_str!(
        "../../../tests/e2e/fixtures/street-light.tsl.json"
    ))
    .unwrap();
    let compiled = ThingModel::parse(&tsl).unwrap().compile();
    let good = json!({"Power": 1, "Brightness": {"value": 80, "time": 1_700_000_000_000i64}, "Current": 1.25, "Mode": 0});
    let bad = json!({"Brightness": 120});
    c.bench_function("thing model: validate a 4-property post", |b| {
        b.iter(|| compiled.validate_property_post(black_box(&good)).unwrap())
    });
    c.bench_function("thing model: reject an out-of-range post", |b| {
        b.iter(|| {
            compiled
                .validate_property_post(black_box(&bad))
                .unwrap_err()
        })
    });
}

criterion_group!(benches, sign_check, topic_acl, validation);
criterion_main!(benches);
