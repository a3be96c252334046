//! `cargo bench -p lotus-rules --bench sql_eval`: one parsed statement evaluated against an
//! Alink property post, for a message that matches (and is projected) and for ones that do
//! not (WHERE fails, or the topic is filtered out first). Parsing is measured separately.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use lotus_rules::sql::{RuleInput, Statement};
use serde_json::{Value, json};

const RULE: &str = "SELECT deviceName() AS device, items.temperature.value AS t \
    FROM '/sys/+/+/thing/event/property/post' \
    WHERE items.temperature.value > 30 AND deviceName() LIKE 'light-%'";

const TOPIC: &str = "/sys/a1B2c3D4e5F/light-0042/thing/event/property/post";

/// A property post as the platform forwards it: several properties, each with value and time.
fn payload(temperature: f64) -> Value {
    json!({
        "id": "1626948134445",
        "version": "1.0",
        "method": "thing.event.property.post",
        "deviceType": "StreetLight",
        "iotId": "l2ZNX7pZqq3VhF4cr8fd000000",
        "gmtCreate": 1_626_948_134_445_i64,
        "items": {
            "LightSwitch": { "value": 1, "time": 1_626_948_134_319_i64 },
            "Brightness": { "value": 80, "time": 1_626_948_134_319_i64 },
            "temperature": { "value": temperature, "time": 1_626_948_134_319_i64 },
            "Humidity": { "value": 56.2, "time": 1_626_948_134_319_i64 },
            "GeoLocation": {
                "value": { "Longitude": 120.1, "Latitude": 30.2, "Altitude": 12.0, "CoordinateSystem": 1 },
                "time": 1_626_948_134_319_i64
            },
            "PowerConsumption": { "value": 1234.5, "time": 1_626_948_134_319_i64 }
        }
    })
}

fn input<'a>(topic: &'a str, device: &'a str, payload: &'a Value) -> RuleInput<'a> {
    RuleInput {
        topic,
        product_key: "a1B2c3D4e5F",
        device_name: device,
        message_id: Some("1626948134445"),
        payload,
        timestamp_ms: 1_626_948_134_445,
        now_ms: 1_626_948_134_500,
    }
}

fn sql_eval(c: &mut Criterion) {
    let statement = Statement::parse(RULE).expect("benchmark rule parses");
    let hot = payload(36.5);
    let cool = payload(22.0);

    let matching = input(TOPIC, "light-0042", &hot);
    assert!(statement.evaluate(&matching).is_some());
    c.bench_function("evaluate/matching", |b| {
        b.iter(|| statement.evaluate(black_box(&matching)))
    });

    let below_threshold = input(TOPIC, "light-0042", &cool);
    assert!(statement.evaluate(&below_threshold).is_none());
    c.bench_function("evaluate/where_false_threshold", |b| {
        b.iter(|| statement.evaluate(black_box(&below_threshold)))
    });

    let other_device = input(TOPIC, "pump-0007", &hot);
    assert!(statement.evaluate(&other_device).is_none());
    c.bench_function("evaluate/where_false_like", |b| {
        b.iter(|| statement.evaluate(black_box(&other_device)))
    });

    let other_topic = "/sys/a1B2c3D4e5F/light-0042/thing/event/property/post_reply";
    let wrong_topic = input(other_topic, "light-0042", &hot);
    assert!(statement.evaluate(&wrong_topic).is_none());
    c.bench_function("evaluate/topic_mismatch", |b| {
        b.iter(|| statement.evaluate(black_box(&wrong_topic)))
    });

    c.bench_function("parse", |b| b.iter(|| Statement::parse(black_box(RULE))));
}

criterion_group!(benches, sql_eval);
criterion_main!(benches);
