//! `cargo bench -p lotus-policy --bench decide`: decisions on the real policies — uncached
//! `decide` calls, and the broker's topic ACL through `PolicyTopicAuthorizer` (cached) beside
//! the built-in `TopicClassAuthorizer` it replaced.
//!
//! With the allocator the `lotus` binary uses (mimalloc): decisions allocate and free many small
//! values, so the system allocator would measure something the node does not run.

use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use lotus_model::authz::{DeviceId, Principal, TopicAction, TopicAuthorizer};
use lotus_model::topic::{
    TopicClass, TopicClassAuthorizer, TopicClassSource, default_custom_topic_classes,
    system_topic_classes,
};
use lotus_policy::PolicyEngine;
use lotus_policy::topic::PolicyTopicAuthorizer;
use serde_json::json;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PK: &str = "a1B2c3D4e5F";

struct Products(HashMap<String, Arc<[TopicClass]>>);

impl TopicClassSource for Products {
    fn topic_classes(&self, product_key: &str) -> Option<Arc<[TopicClass]>> {
        self.0.get(product_key).cloned()
    }
}

fn products() -> Products {
    let mut classes = system_topic_classes();
    for (i, (t, op, d)) in default_custom_topic_classes().into_iter().enumerate() {
        classes.push(TopicClass::custom(i.to_string(), t, op, d).unwrap());
    }
    Products(HashMap::from([(PK.to_string(), classes.into())]))
}

fn decide(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    let engine = PolicyEngine::from_dir(&dir).expect("policies load");
    let source = products();
    let classes: Vec<_> = source.0[PK]
        .iter()
        .map(|c| {
            json!({
                "id": c.id, "template": c.template, "operation": c.operation.as_str(),
                "system": c.system, "matches": c.id == "sys.property.post",
            })
        })
        .collect();
    let topic_allow = json!({
        "principal": {"kind": "device", "product_key": PK},
        "action": "publish", "relation": "self", "product_key": PK, "classes": classes
    });
    let mut topic_deny = topic_allow.clone();
    topic_deny["action"] = json!("subscribe");
    let api = |region: &str| {
        json!({
            "principal": {"kind": "user", "id": "7", "username": "ops", "org": "city", "region": "/hz/xihu", "roles": ["operator"]},
            "action": "device.write",
            "resource": {"kind": "device", "id": "pk/dn", "org": "city", "region": region}
        })
    };
    let (api_allow, api_deny) = (api("/hz/xihu/lingyin"), api("/hz/binjiang"));
    assert!(
        engine
            .decide("lotus.device.topic", &topic_allow)
            .unwrap()
            .allow
    );
    assert!(
        !engine
            .decide("lotus.device.topic", &topic_deny)
            .unwrap()
            .allow
    );
    assert!(engine.decide("lotus.api", &api_allow).unwrap().allow);
    assert!(!engine.decide("lotus.api", &api_deny).unwrap().allow);

    c.bench_function("decide lotus.device.topic allow (uncached)", |b| {
        b.iter(|| engine.decide("lotus.device.topic", &topic_allow).unwrap())
    });
    c.bench_function("decide lotus.device.topic deny (uncached)", |b| {
        b.iter(|| engine.decide("lotus.device.topic", &topic_deny).unwrap())
    });
    c.bench_function("decide lotus.api allow (uncached)", |b| {
        b.iter(|| engine.decide("lotus.api", &api_allow).unwrap())
    });
    c.bench_function("decide lotus.api deny (uncached)", |b| {
        b.iter(|| engine.decide("lotus.api", &api_deny).unwrap())
    });

    // The broker's check per PUBLISH: the policy (cached after the first message of a product)
    // beside the built-in matcher it replaced.
    let policy = PolicyTopicAuthorizer::new(engine.clone(), products());
    let builtin = TopicClassAuthorizer::new(products());
    let device = Principal::Device(DeviceId::new(PK, "lamp-0001"));
    let topic = format!("/sys/{PK}/lamp-0001/thing/event/property/post");
    assert!(
        policy
            .authorize_topic(&device, TopicAction::Publish, &topic)
            .is_allowed()
    );
    c.bench_function("acl: publish property post, policy (cached)", |b| {
        b.iter(|| policy.authorize_topic(&device, TopicAction::Publish, black_box(&topic)))
    });
    c.bench_function("acl: publish property post, built-in", |b| {
        b.iter(|| builtin.authorize_topic(&device, TopicAction::Publish, black_box(&topic)))
    });

    // What the broker pays when its cache misses: the input built from the product's classes,
    // then the policy (allow, or deny with its reason).
    let uncached = PolicyTopicAuthorizer::uncached(engine.clone(), products());
    let other = format!("/sys/{PK}/lamp-0002/thing/event/property/post");
    assert!(
        uncached
            .authorize_topic(&device, TopicAction::Publish, &topic)
            .is_allowed()
    );
    assert!(
        !uncached
            .authorize_topic(&device, TopicAction::Subscribe, &topic)
            .is_allowed()
    );
    c.bench_function("acl: publish property post, policy (uncached)", |b| {
        b.iter(|| uncached.authorize_topic(&device, TopicAction::Publish, black_box(&topic)))
    });
    c.bench_function(
        "acl: subscribe to a publish-only topic, policy (uncached)",
        |b| b.iter(|| uncached.authorize_topic(&device, TopicAction::Subscribe, black_box(&topic))),
    );
    c.bench_function(
        "acl: publish to another device's topic, policy (uncached)",
        |b| b.iter(|| uncached.authorize_topic(&device, TopicAction::Publish, black_box(&other))),
    );
}

criterion_group!(benches, decide);
criterion_main!(benches);
