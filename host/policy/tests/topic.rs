//! The broker's topic ACL through `lotus.device.topic` (`PolicyTopicAuthorizer`) with the real
//! policies and real topic classes: the host's classification plus the policy's decision give
//! the isolation the device plane promises, and the cache stays per product, not per device.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use lotus_model::authz::{
    Application, DeviceId, Grant, GrantAction, Principal, TopicAction, TopicAuthorizer,
};
use lotus_model::topic::{
    AppGrant, SubDeviceLink, TopicClass, TopicClassSource, default_custom_topic_classes,
    system_topic_classes,
};
use lotus_policy::PolicyEngine;
use lotus_policy::topic::PolicyTopicAuthorizer;

#[derive(Default)]
struct Source {
    products: HashMap<String, Arc<[TopicClass]>>,
    links: HashMap<(String, String), SubDeviceLink>,
    generation: AtomicU64,
}

/// The registry as the device plane shares it: changed by the API while the broker reads it.
#[derive(Clone, Default)]
struct Shared(Arc<std::sync::RwLock<Source>>);

impl Shared {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Source> {
        self.0.read().unwrap()
    }
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Source> {
        self.0.write().unwrap()
    }
}

impl TopicClassSource for Shared {
    fn topic_classes(&self, pk: &str) -> Option<Arc<[TopicClass]>> {
        self.read().products.get(pk).cloned()
    }
    fn sub_device(&self, pk: &str, dn: &str) -> Option<SubDeviceLink> {
        self.read()
            .links
            .get(&(pk.to_string(), dn.to_string()))
            .cloned()
    }
    fn generation(&self) -> u64 {
        self.read().generation.load(Ordering::Acquire)
    }
}

fn classes() -> Arc<[TopicClass]> {
    let mut classes = system_topic_classes();
    for (i, (t, op, d)) in default_custom_topic_classes().into_iter().enumerate() {
        classes.push(TopicClass::custom(i.to_string(), t, op, d).unwrap());
    }
    classes.into()
}

fn setup() -> (PolicyTopicAuthorizer<Shared>, Shared) {
    let engine =
        PolicyEngine::from_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies"))
            .unwrap();
    setup_with(engine)
}

fn setup_with(engine: PolicyEngine) -> (PolicyTopicAuthorizer<Shared>, Shared) {
    let mut source = Source::default();
    source.products.insert("a1".into(), classes());
    source.products.insert("s1".into(), classes());
    source.links.insert(
        ("s1".into(), "sensor".into()),
        SubDeviceLink {
            gateway: DeviceId::new("a1", "gw"),
            online: true,
        },
    );
    source.links.insert(
        ("s1".into(), "asleep".into()),
        SubDeviceLink {
            gateway: DeviceId::new("a1", "gw"),
            online: false,
        },
    );
    let source = Shared(Arc::new(std::sync::RwLock::new(source)));
    (PolicyTopicAuthorizer::new(engine, source.clone()), source)
}

fn device(dn: &str) -> Principal {
    Principal::Device(DeviceId::new("a1", dn))
}

#[test]
fn devices_reach_only_their_own_topics() {
    let (acl, _) = setup();
    let d1 = device("d1");
    let allowed =
        |p: &Principal, a: TopicAction, t: &str| acl.authorize_topic(p, a, t).is_allowed();
    assert!(allowed(
        &d1,
        TopicAction::Publish,
        "/sys/a1/d1/thing/event/property/post"
    ));
    assert!(allowed(
        &d1,
        TopicAction::Publish,
        "/sys/a1/d1/thing/event/alarm/post"
    ));
    assert!(allowed(
        &d1,
        TopicAction::Subscribe,
        "/sys/a1/d1/thing/service/property/set"
    ));
    assert!(allowed(&d1, TopicAction::Subscribe, "/a1/d1/user/get"));
    assert!(!allowed(
        &d1,
        TopicAction::Subscribe,
        "/sys/a1/d1/thing/event/property/post"
    ));
    // Other devices, wildcards over devices, the whole tree.
    for filter in [
        "#",
        "/sys/a1/+/thing/service/property/set",
        "/sys/a1/d1/#",
        "/+/+/user/get",
        "/sys/#",
    ] {
        assert!(!allowed(&d1, TopicAction::Subscribe, filter), "{filter}");
    }
    let denied = acl.authorize_topic(
        &d1,
        TopicAction::Publish,
        "/sys/a1/d2/thing/event/property/post",
    );
    let lotus_model::authz::Decision::Deny(reason) = denied else {
        panic!("publishing as another device was allowed");
    };
    assert!(reason.contains("own topics"), "{reason}");
    assert!(!allowed(&d1, TopicAction::Subscribe, "/a1/d2/user/get"));
    assert!(!allowed(&d1, TopicAction::Deliver, "/a1/d2/user/get"));
    // A product that is gone.
    assert!(!allowed(
        &Principal::Device(DeviceId::new("gone", "d")),
        TopicAction::Publish,
        "/sys/gone/d/thing/event/property/post"
    ));
}

#[test]
fn gateways_speak_for_their_logged_in_sub_devices() {
    let (acl, _) = setup();
    let gw = device("gw");
    let other_gw = device("gw2");
    let topic = "/sys/s1/sensor/thing/event/property/post";
    assert!(
        acl.authorize_topic(&gw, TopicAction::Publish, topic)
            .is_allowed()
    );
    assert!(
        !acl.authorize_topic(&other_gw, TopicAction::Publish, topic)
            .is_allowed()
    );
    let asleep = acl.authorize_topic(
        &gw,
        TopicAction::Publish,
        "/sys/s1/asleep/thing/event/property/post",
    );
    assert!(!asleep.is_allowed());
    assert!(
        acl.authorize_topic(
            &gw,
            TopicAction::Subscribe,
            "/sys/s1/asleep/thing/service/property/set"
        )
        .is_allowed()
    );
}

#[test]
fn one_cached_decision_serves_every_device_of_a_product() {
    let (acl, source) = setup();
    for i in 0..2_000 {
        let topic = format!("/sys/a1/lamp-{i}/thing/event/property/post");
        assert!(
            acl.authorize_topic(&device(&format!("lamp-{i}")), TopicAction::Publish, &topic)
                .is_allowed()
        );
    }
    assert_eq!(acl.cached(), 1, "one entry for 2000 devices");
    // A change of any product's topic classes drops the cache.
    source.write().generation.fetch_add(1, Ordering::AcqRel);
    assert!(
        acl.authorize_topic(
            &device("lamp-0"),
            TopicAction::Publish,
            "/sys/a1/lamp-0/thing/event/property/post"
        )
        .is_allowed()
    );
    assert_eq!(acl.cached(), 1);
    // Removing the classes that allowed it takes effect at the next message.
    {
        let mut s = source.write();
        let kept: Vec<TopicClass> = classes()
            .iter()
            .filter(|c| !c.template.contains("/thing/event/"))
            .cloned()
            .collect();
        s.products.insert("a1".into(), kept.into());
        s.generation.fetch_add(1, Ordering::AcqRel);
    }
    assert!(
        !acl.authorize_topic(
            &device("lamp-0"),
            TopicAction::Publish,
            "/sys/a1/lamp-0/thing/event/property/post"
        )
        .is_allowed()
    );
}

#[test]
fn cached_decisions_reach_the_decision_log_like_computed_ones() {
    let engine =
        PolicyEngine::from_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies"))
            .unwrap();
    let log = Arc::new(
        lotus_policy::DecisionLog::new(lotus_policy::DecisionLogConfig {
            sample_allows: 0.25,
            capacity: 1000,
            jsonl_path: None,
        })
        .unwrap(),
    );
    engine.set_decision_log(Some(log.clone()));
    let (acl, _source) = setup_with(engine);
    // 100 allows, all but the first served from the cache: a quarter of them is kept.
    for i in 0..100 {
        let topic = format!("/sys/a1/lamp-{i}/thing/event/property/post");
        assert!(
            acl.authorize_topic(&device(&format!("lamp-{i}")), TopicAction::Publish, &topic)
                .is_allowed()
        );
    }
    let kept = log.query(&lotus_policy::DecisionFilter::default());
    assert_eq!(kept.len(), 25, "{kept:?}");
    assert!(kept.iter().all(|r| r.allow));
    let cached = kept.iter().filter(|r| r.latency_us == 0).count();
    assert!(cached >= 24, "cached allows are sampled too: {kept:?}");
    // Every deny is kept, the cached ones too.
    for _ in 0..3 {
        assert!(
            !acl.authorize_topic(&device("lamp-1"), TopicAction::Subscribe, "#")
                .is_allowed()
        );
    }
    let denies = log.query(&lotus_policy::DecisionFilter {
        allow: Some(false),
        ..Default::default()
    });
    assert_eq!(denies.len(), 3, "{denies:?}");
}

#[test]
fn applications_and_anonymous_clients_follow_their_facts() {
    let (acl, _) = setup();
    let grant = AppGrant::compile(&Grant {
        filter: "/a1/+/user/#".into(),
        actions: vec![GrantAction::Subscribe],
    })
    .unwrap();
    let app = Principal::Application(Application::new("app-1", vec![grant]));
    assert!(
        acl.authorize_topic(&app, TopicAction::Subscribe, "/a1/+/user/get")
            .is_allowed()
    );
    assert!(
        acl.authorize_topic(&app, TopicAction::Deliver, "/a1/d1/user/get")
            .is_allowed()
    );
    assert!(
        !acl.authorize_topic(&app, TopicAction::Subscribe, "#")
            .is_allowed()
    );
    assert!(
        !acl.authorize_topic(&app, TopicAction::Publish, "/a1/d1/user/get")
            .is_allowed()
    );
    // The same grants on a registered app's login: the same decisions; the refusal names the
    // app where a credential's speaks of the credential.
    let registered = Principal::Application(Application::registered(
        "app_j5kx2qmzrtw7vhbn3dpa",
        app_grants(&app),
    ));
    assert!(
        acl.authorize_topic(&registered, TopicAction::Subscribe, "/a1/+/user/get")
            .is_allowed()
    );
    let lotus_model::authz::Decision::Deny(reason) =
        acl.authorize_topic(&registered, TopicAction::Subscribe, "#")
    else {
        panic!("a registered app subscribing to # must be refused");
    };
    assert_eq!(
        &*reason,
        "no subscribe grant of app app_j5kx2qmzrtw7vhbn3dpa covers this filter (its resources.topics)"
    );
    let lotus_model::authz::Decision::Deny(reason) =
        acl.authorize_topic(&app, TopicAction::Subscribe, "#")
    else {
        panic!("a credential subscribing to # must be refused");
    };
    assert_eq!(
        &*reason,
        "no subscribe grant of the application credential covers this filter"
    );
    let anon = Principal::Anonymous {
        client_id: "c".into(),
    };
    assert!(
        acl.authorize_topic(&anon, TopicAction::Publish, "city/weather")
            .is_allowed()
    );
    assert!(
        !acl.authorize_topic(
            &anon,
            TopicAction::Publish,
            "/sys/a1/d1/thing/event/property/post"
        )
        .is_allowed()
    );
    assert!(
        !acl.authorize_topic(&anon, TopicAction::Deliver, "/a1/d1/user/get")
            .is_allowed()
    );
    assert!(
        acl.authorize_topic(&anon, TopicAction::Subscribe, "#")
            .is_allowed()
    );
}

/// The grants a principal was admitted with.
fn app_grants(p: &Principal) -> Vec<AppGrant> {
    match p {
        Principal::Application(a) => a.grants.to_vec(),
        _ => Vec::new(),
    }
}
