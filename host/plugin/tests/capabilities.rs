//! Grants: ungranted capabilities are denied, scopes (http allow-list, topics, secrets) hold,
//! `prepare` refuses components that import more than the manifest requests or implement
//! another world, and each world binds and runs.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lotus_plugin::wit::v0_1_0::types::{
    Action, DeviceMessage, DeviceRef, DeviceStatus, MessageContext as WitContext, Notification,
    PlatformEvent, StatusChange,
};
use lotus_plugin::wit::v0_1_0::{DeliveryStatus, Trigger};
use lotus_plugin::{
    CallError, Capability, CapabilityCheck, CapabilityRequest, Manifest, ManifestCapabilityCheck,
    PluginRuntime, PrepareError, RuntimeConfig, World,
};
use lotus_plugin_artifacts as artifacts;
use support::{RecordingHost, TestServer, codec_manifest, context, install, runtime, wasm};

fn manifest(text: &str) -> Manifest {
    Manifest::from_toml(text).unwrap_or_else(|e| panic!("{e}"))
}

fn device_message(params: &str) -> DeviceMessage {
    DeviceMessage {
        context: WitContext {
            product_key: "pk1".into(),
            device_name: "dev1".into(),
            topic: "/sys/pk1/dev1/x".into(),
            at_ms: 1,
        },
        method: "thing.event.property.post".into(),
        params: params.into(),
    }
}

#[test]
fn granted_kv_works_and_is_scoped_to_the_plugin() {
    let (runtime, host) = runtime(RuntimeConfig::default());
    install(
        &runtime,
        codec_manifest("counter", "capabilities = [\"kv\"]"),
        artifacts::KV_CODEC,
    );
    let codec = runtime.codec("counter").unwrap();
    for expected in 1..=3 {
        let json = codec.decode("t", b"", &context()).unwrap();
        assert!(json.contains(&format!("\"frames\":{expected}")), "{json}");
    }
    assert!(
        host.kv
            .lock()
            .contains_key(&("counter".to_string(), "count/pk1/dev1".to_string()))
    );
}

/// Denies one capability whatever the manifest says: an operator who has not granted it.
struct Deny(Capability);

impl CapabilityCheck for Deny {
    fn check(&self, manifest: &Manifest, request: &CapabilityRequest<'_>) -> Result<(), String> {
        if request.capability() == self.0 {
            return Err(format!("{} is not granted by the operator", self.0));
        }
        ManifestCapabilityCheck.check(manifest, request)
    }
}

#[test]
fn ungranted_capability_is_denied_to_the_guest_and_logged() {
    let host = Arc::new(RecordingHost::default());
    let runtime = PluginRuntime::with_capability_check(
        RuntimeConfig::default(),
        host.clone(),
        Arc::new(Deny(Capability::Kv)),
    )
    .unwrap();
    install(
        &runtime,
        codec_manifest("counter", "capabilities = [\"kv\"]"),
        artifacts::KV_CODEC,
    );
    match runtime
        .codec("counter")
        .unwrap()
        .decode("t", b"", &context())
    {
        Err(CallError::Codec { message, .. }) => assert!(
            message.starts_with("denied: kv is not granted"),
            "{message}"
        ),
        other => panic!("expected the guest to see a denial, got {other:?}"),
    }
    assert!(
        host.kv.lock().is_empty(),
        "the host service was never reached"
    );
    assert!(
        runtime
            .logs("counter", 10)
            .iter()
            .any(|l| l.message.contains("denied kv key"))
    );
}

#[test]
fn prepare_refuses_an_import_the_manifest_does_not_request() {
    let (runtime, _host) = runtime(RuntimeConfig::default());
    let error = runtime
        .prepare(codec_manifest("counter", ""), &wasm(artifacts::KV_CODEC))
        .err()
        .expect("refused");
    assert!(
        matches!(&error, PrepareError::ForbiddenImport { import, .. } if import == "lotus:plugin/kv@0.1.0"),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(text.contains("add \"kv\" to `capabilities`"), "{text}");
}

#[test]
fn prepare_refuses_a_component_of_another_world() {
    let (runtime, _host) = runtime(RuntimeConfig::default());
    let error = runtime
        .prepare(
            codec_manifest("not-a-codec", "capabilities = [\"log\", \"clock\"]"),
            &wasm(artifacts::MINIMAL_RULE),
        )
        .err()
        .expect("refused");
    match &error {
        PrepareError::WrongWorld {
            expected: World::Codec,
            missing,
            looks_like: Some(World::Rule),
            ..
        } => {
            assert_eq!(missing, &["decode", "encode"]);
        }
        other => panic!("expected wrong world, got {other:?}"),
    }
    let text = error.to_string();
    assert!(
        text.contains("does not implement the codec world") && text.contains("world = \"rule\""),
        "{text}"
    );
}

#[test]
fn prepare_refuses_bytes_that_are_not_a_component() {
    let (runtime, _host) = runtime(RuntimeConfig::default());
    let error = runtime
        .prepare(codec_manifest("junk", ""), b"definitely not wasm")
        .err()
        .expect("refused");
    assert!(matches!(error, PrepareError::Invalid(_)), "{error:?}");
    let tiny = RuntimeConfig {
        max_component_bytes: 1024,
        cache_dir: None,
        ..RuntimeConfig::default()
    };
    let (runtime, _host) = support::runtime(tiny);
    let error = runtime
        .prepare(codec_manifest("big", ""), &wasm(artifacts::GOOD_CODEC))
        .err()
        .expect("refused");
    assert!(
        matches!(error, PrepareError::TooLarge { limit: 1024, .. }),
        "{error:?}"
    );
}

fn app_manifest(allow: &str, extra: &str) -> Manifest {
    manifest(&format!(
        "id = \"forwarder\"\nversion = \"1\"\nworld = \"app\"\ncapabilities = [\"http\", \"publish\"]\nhttp_allow = [{allow}]\ntopics = [\"app/status/#\"]\n{extra}"
    ))
}

#[test]
fn http_reaches_allow_listed_hosts_only() {
    let server = TestServer::start(200, "ok", Duration::ZERO);
    let (runtime, _host) = runtime(RuntimeConfig::default());
    install(
        &runtime,
        app_manifest(&format!("\"127.0.0.1:{}\"", server.addr.port()), ""),
        artifacts::HTTP_APP,
    );
    let app = runtime.app("forwarder").unwrap();

    let params = format!(r#"{{"url":"{}","temperature":21.5}}"#, server.url());
    app.on_message(&device_message(&params))
        .expect("allow-listed call succeeds");
    let seen = server.seen.lock().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].request_line, "POST /hook HTTP/1.1");
    assert_eq!(String::from_utf8_lossy(&seen[0].body), params);

    // Same host, another port: not on the list.
    let other = TestServer::start(200, "ok", Duration::ZERO);
    match app.on_message(&device_message(&format!(r#"{{"url":"{}"}}"#, other.url()))) {
        Err(CallError::Plugin(message)) => assert!(
            message.contains("Denied") && message.contains("allow-list"),
            "{message}"
        ),
        other => panic!("expected a denial, got {other:?}"),
    }
    assert!(
        other.seen.lock().is_empty(),
        "the forbidden server was never contacted"
    );
}

#[test]
fn slow_http_is_bounded_by_the_call_timeout() {
    let server = TestServer::start(200, "late", Duration::from_secs(5));
    let (runtime, _host) = runtime(RuntimeConfig::default());
    install(
        &runtime,
        app_manifest("\"127.0.0.1\"", "[limits]\ncall_timeout_ms = 500"),
        artifacts::HTTP_APP,
    );
    let started = Instant::now();
    let error = runtime
        .app("forwarder")
        .unwrap()
        .on_message(&device_message(&format!(r#"{{"url":"{}"}}"#, server.url())))
        .unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "took {took:?}");
    // Either the guest got `limit` from the timed-out request or the deadline stopped it after.
    match &error {
        CallError::Plugin(message) => assert!(
            message.contains("Limit") && message.contains("timed out"),
            "{message}"
        ),
        CallError::Timeout => {}
        other => panic!("expected a bounded http failure, got {other:?}"),
    }
}

#[test]
fn publish_is_limited_to_the_manifest_topics() {
    let (runtime, host) = runtime(RuntimeConfig::default());
    install(
        &runtime,
        app_manifest("\"127.0.0.1\"", ""),
        artifacts::HTTP_APP,
    );
    let app = runtime.app("forwarder").unwrap();
    let change = StatusChange {
        device: DeviceRef {
            product_key: "pk1".into(),
            device_name: "dev1".into(),
        },
        status: DeviceStatus::Offline,
        reason: "keepalive_timeout".into(),
        at_ms: 1,
    };
    app.on_status(&change).unwrap();
    assert_eq!(host.published.lock()[0].1, "app/status/pk1/dev1");
    assert_eq!(host.published.lock()[0].2, b"offline");

    install(
        &runtime,
        manifest(
            "id = \"forwarder\"\nversion = \"2\"\nworld = \"app\"\ncapabilities = [\"http\", \"publish\"]\ntopics = [\"elsewhere/#\"]",
        ),
        artifacts::HTTP_APP,
    );
    match app.on_status(&change) {
        Err(CallError::Plugin(message)) => assert!(
            message.contains("Denied") && message.contains("outside the topics"),
            "{message}"
        ),
        other => panic!("expected a denial, got {other:?}"),
    }
    assert_eq!(host.published.lock().len(), 1);
    app.on_event(&platform_event("event.created")).unwrap();
}

fn platform_event(kind: &str) -> PlatformEvent {
    PlatformEvent {
        id: "ev-7".into(),
        kind: kind.into(),
        event_type: "manhole.open".into(),
        severity: 3,
        device: None,
        fields: r#"{"depth":2}"#.into(),
        at_ms: 1,
    }
}

#[test]
fn rule_world_binds_and_returns_actions() {
    let (runtime, _host) = runtime(RuntimeConfig::default());
    install(
        &runtime,
        manifest(
            "id = \"overheat\"\nversion = \"1\"\nworld = \"rule\"\ncapabilities = [\"log\", \"clock\"]",
        ),
        artifacts::MINIMAL_RULE,
    );
    let rule = runtime.rule("overheat").unwrap();
    let actions = rule
        .evaluate(&Trigger::Message(device_message(r#"{"temperature":31.5}"#)))
        .unwrap();
    match actions.as_slice() {
        [Action::RaiseAlarm(alarm)] => {
            assert_eq!(alarm.alarm_type, "overheat");
            assert_eq!(alarm.device.device_name, "dev1");
        }
        other => panic!("expected one alarm, got {other:?}"),
    }
    assert!(
        rule.evaluate(&Trigger::Message(device_message(r#"{"temperature":20}"#)))
            .unwrap()
            .is_empty()
    );
    assert!(
        rule.evaluate(&Trigger::Timer("nightly".into()))
            .unwrap()
            .is_empty()
    );
    assert!(
        runtime
            .logs("overheat", 5)
            .iter()
            .any(|l| l.message.starts_with("tick nightly at "))
    );
    match rule.evaluate(&Trigger::Message(device_message("not json"))) {
        Err(CallError::Plugin(message)) => {
            assert!(message.contains("params is not JSON"), "{message}")
        }
        other => panic!("expected the rule's own error, got {other:?}"),
    }
}

#[test]
fn event_handler_world_binds_and_uses_the_event_capability() {
    let (runtime, host) = runtime(RuntimeConfig::default());
    install(
        &runtime,
        manifest(
            "id = \"ack\"\nversion = \"1\"\nworld = \"event-handler\"\ncapabilities = [\"event\"]",
        ),
        artifacts::MINIMAL_EVENT_HANDLER,
    );
    let handler = runtime.event_handler("ack").unwrap();
    let actions = handler.handle(&platform_event("alarm.raised")).unwrap();
    assert!(
        matches!(actions.as_slice(), [Action::Notify(n)] if n.channel == "sms" && n.body == r#"{"depth":2}"#)
    );
    assert_eq!(
        host.updated.lock()[0],
        (
            "ack".into(),
            "ev-7".into(),
            "processing".into(),
            "acknowledged by minimal-event-handler".into()
        )
    );
    assert!(
        handler
            .handle(&platform_event("ota.step"))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn channel_world_binds_and_uses_secrets_and_http() {
    let server = TestServer::start(200, "provider-42", Duration::ZERO);
    let (runtime, host) = runtime(RuntimeConfig::default());
    host.secrets
        .lock()
        .insert("webhook-token".into(), "s3cret".into());
    install(
        &runtime,
        manifest(&format!(
            "id = \"hook\"\nversion = \"1\"\nworld = \"channel\"\ncapabilities = [\"http\", \"secrets\"]\nhttp_allow = [\"127.0.0.1:{}\"]\nsecrets = [\"webhook-token\"]",
            server.addr.port()
        )),
        artifacts::MINIMAL_CHANNEL,
    );
    let notification = Notification {
        channel: "hook".into(),
        recipients: vec![server.url()],
        subject: "Manhole open".into(),
        body: "Main St".into(),
    };
    let delivery = runtime
        .channel("hook")
        .unwrap()
        .deliver(&notification)
        .unwrap();
    assert_eq!(delivery.status, DeliveryStatus::Delivered);
    assert_eq!(delivery.provider_id.as_deref(), Some("provider-42"));
    let seen = server.seen.lock().clone();
    assert!(
        seen[0]
            .headers
            .contains(&("authorization".into(), "Bearer s3cret".into())),
        "{:?}",
        seen[0].headers
    );

    // A secret the manifest does not list is denied.
    install(
        &runtime,
        manifest(&format!(
            "id = \"hook\"\nversion = \"2\"\nworld = \"channel\"\ncapabilities = [\"http\", \"secrets\"]\nhttp_allow = [\"127.0.0.1:{}\"]\nsecrets = [\"other\"]",
            server.addr.port()
        )),
        artifacts::MINIMAL_CHANNEL,
    );
    match runtime.channel("hook").unwrap().deliver(&notification) {
        Err(CallError::Plugin(message)) => assert!(
            message.contains("Denied") && message.contains("webhook-token"),
            "{message}"
        ),
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[test]
fn handles_only_exist_for_the_right_world() {
    let (runtime, _host) = runtime(RuntimeConfig::default());
    install(
        &runtime,
        manifest(
            "id = \"overheat\"\nversion = \"1\"\nworld = \"rule\"\ncapabilities = [\"log\", \"clock\"]",
        ),
        artifacts::MINIMAL_RULE,
    );
    assert!(runtime.codec("overheat").is_none());
    assert!(runtime.app("overheat").is_none());
    assert!(runtime.rule("missing").is_none());
    assert!(runtime.deactivate("overheat"));
    assert!(runtime.rule("overheat").is_none());
    assert!(!runtime.deactivate("overheat"));
}
