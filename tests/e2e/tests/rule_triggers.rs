//! Rule triggers beyond device messages, through the real binary: an alarm raised by one rule
//! triggers a platform rule that posts to a local HTTP receiver (and a rule that answers its own
//! events does not loop); a `rule` plugin decides which posts raise an alarm, and a rule whose
//! plugin stops running reports it; a scene scoped to a region watches only the devices there.

use std::time::{Duration, Instant};

use lotus_e2e::receiver::Receiver;
use lotus_e2e::{sys, upload_plugin};
use lotus_plugin_artifacts as artifacts;
use lotus_test_harness::device::{DeviceCredentials, mqtt_options};
use lotus_test_harness::mqtt::Client;
use lotus_test_harness::node::{LotusNode, NodeOptions};
use reqwest::Method;
use rumqttc::QoS;
use serde_json::{Value, json};

/// Polls `path` until `found` picks something from its answer (15 s).
async fn wait_for(
    node: &LotusNode,
    path: &str,
    found: impl Fn(&Value) -> Option<Value>,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = node.expect(Method::GET, path, None, 200).await?;
        if let Some(v) = found(&answer) {
            return Ok(v);
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "nothing at {path} within 15 s: {answer}\nlog:\n{}",
                node.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A node with a product in `/hz` whose devices report `temperature` and `Current`.
async fn node_with_product() -> anyhow::Result<(LotusNode, String)> {
    let mut node = LotusNode::start(NodeOptions {
        extra_env: vec![("LOTUS_OPERATIONS__RETRY_BASE_MS".into(), "100".into())],
        ..NodeOptions::default()
    })
    .await?;
    node.login().await?;
    let p = node
        .expect(
            Method::POST,
            "/api/v1/products",
            Some(json!({"name": "Lamp", "nodeType": "direct", "dataFormat": "alink", "region": "/hz"})),
            201,
        )
        .await?;
    let pk = p["productKey"].as_str().unwrap().to_string();
    let float = |id: &str| {
        json!({"identifier": id, "name": id, "accessMode": "r",
            "dataType": {"type": "float", "specs": {"min": "-50", "max": "200", "step": "0.1"}}})
    };
    node.expect(
        Method::PUT,
        &format!("/api/v1/products/{pk}/thing-model"),
        Some(json!({"properties": [float("temperature"), float("Current")], "events": [], "services": []})),
        200,
    )
    .await?;
    Ok((node, pk))
}

async fn device(
    node: &LotusNode,
    pk: &str,
    name: &str,
    region: Option<&str>,
) -> anyhow::Result<DeviceCredentials> {
    let mut body = json!({"deviceName": name});
    if let Some(r) = region {
        body["region"] = json!(r);
    }
    let d = node
        .expect(
            Method::POST,
            &format!("/api/v1/products/{pk}/devices"),
            Some(body),
            201,
        )
        .await?;
    Ok(DeviceCredentials {
        product_key: pk.to_string(),
        device_name: name.to_string(),
        device_secret: d["deviceSecret"].as_str().unwrap().to_string(),
    })
}

/// Connects the device and posts `params` as a property post; returns once it is committed.
async fn post(node: &LotusNode, d: &DeviceCredentials, params: Value) -> anyhow::Result<()> {
    let mut c = Client::connected(mqtt_options(d, node.mqtt)).await?;
    let reply = sys(d, "thing/event/property/post_reply");
    c.subscribe(&reply, QoS::AtLeastOnce).await?;
    let msg = json!({"id": "1", "version": "1.0", "params": params,
        "method": "thing.event.property.post"});
    c.publish(
        &sys(d, "thing/event/property/post"),
        QoS::AtLeastOnce,
        msg.to_string(),
    )
    .await?;
    let answer = c.expect_json(&reply).await?;
    anyhow::ensure!(answer["code"] == 200, "post refused: {answer}");
    Ok(())
}

fn active_alarm(list: &Value, device: &str, alarm_type: &str) -> Option<Value> {
    list["items"]
        .as_array()?
        .iter()
        .find(|a| {
            a["deviceName"] == device && (a["alarmType"] == alarm_type || a["type"] == alarm_type)
        })
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_triggers_a_platform_rule_that_posts_to_a_local_receiver() -> anyhow::Result<()> {
    let receiver = Receiver::start(vec![200]).await?;
    let addr = receiver.addr;
    let (node, pk) = node_with_product().await?;
    let lamp = device(&node, &pk, "lamp-1", None).await?;
    let (status, created) = node
        .api(
            Method::PUT,
            "/api/v1/channels/ops-hook",
            Some(json!({"kind": "webhook", "config": {"url": format!("http://{addr}/hook")}, "enabled": true})),
        )
        .await?;
    assert!(matches!(status.as_u16(), 200 | 201), "{status} {created}");
    let channel = node
        .expect(Method::GET, "/api/v1/channels/ops-hook", None, 200)
        .await?;
    assert_eq!(channel["kind"], "webhook", "{channel}");
    node.expect(
        Method::PUT,
        "/api/v1/event-types/echo.test",
        Some(json!({"code": "echo.test", "name": "echo", "defaultLevel": 4, "fields": []})),
        201,
    )
    .await?;
    for (id, definition) in [
        (
            "over-current",
            json!({"trigger": {"kind": "sql", "sql": format!(
                    "SELECT items.Current.value AS current FROM '/sys/{pk}/+/thing/event/property/post' WHERE items.Current.value > 10")},
                "actions": [{"kind": "alarm", "alarmType": "over-current", "level": 2,
                    "message": "current {{ data.current }} A"}]}),
        ),
        (
            "escalate",
            json!({"trigger": {"kind": "platform", "events": ["alarm.raised"], "productKey": pk,
                    "eventType": "over-current"},
                "actions": [{"kind": "webhook", "channel": "ops-hook"}]}),
        ),
        // Creates an event for every alarm and every event created: without the guard, its own
        // events would trigger it again and again.
        (
            "echo",
            json!({"trigger": {"kind": "platform", "events": ["alarm.raised", "event.created"]},
                "actions": [{"kind": "event", "eventType": "echo.test",
                    "title": "echo of {{ event.kind }} {{ event.id }}"}]}),
        ),
        // Another product's alarms only.
        (
            "elsewhere",
            json!({"trigger": {"kind": "platform", "events": ["alarm.raised"], "productKey": "otherProduct"},
                "actions": [{"kind": "webhook", "channel": "ops-hook"}]}),
        ),
    ] {
        node.expect(
            Method::POST,
            "/api/v1/rules",
            Some(json!({"id": id, "name": id, "definition": definition})),
            201,
        )
        .await?;
    }
    let (status, refused) = node
        .api(
            Method::POST,
            "/api/v1/rules",
            Some(json!({"id": "bad", "name": "bad", "definition": {
                "trigger": {"kind": "platform", "events": ["alarm.exploded"]},
                "actions": [{"kind": "webhook", "channel": "ops-hook"}]}})),
        )
        .await?;
    assert_eq!(status.as_u16(), 422, "{refused}");
    assert!(refused.to_string().contains("trigger.events"), "{refused}");

    post(&node, &lamp, json!({"Current": 12.5})).await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while receiver.count() == 0 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the receiver got nothing\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (head, body) = receiver.requests.lock().unwrap()[0].clone();
    assert!(head.starts_with("post /hook"), "{head}");
    assert!(head.contains("x-lotus-rule: escalate"), "{head}");
    let body: Value = serde_json::from_slice(&body)?;
    assert_eq!(body["rule"], "escalate", "{body}");
    assert_eq!(body["device"]["deviceName"], "lamp-1", "{body}");
    assert_eq!(body["data"]["message"], "current 12.5 A", "{body}");

    let echo = wait_for(&node, "/api/v1/events?type=echo.test", |l| {
        l["items"].as_array()?.first().cloned()
    })
    .await?;
    assert!(
        echo["title"]
            .as_str()
            .unwrap()
            .starts_with("echo of alarm.raised"),
        "{echo}"
    );
    // Time for a loop to show, were there one; and for the counters to be written.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let events = node
        .expect(Method::GET, "/api/v1/events?type=echo.test", None, 200)
        .await?;
    assert_eq!(
        events["total"], 1,
        "the rule's own event does not trigger it: {events}"
    );
    assert_eq!(receiver.count(), 1, "only `escalate` posts");
    let stats = node
        .expect(Method::GET, "/api/v1/rules/escalate/stats", None, 200)
        .await?;
    assert_eq!(stats["matched"], 1, "{stats}");
    assert_eq!(stats["actionsOk"], 1, "{stats}");
    let stats = node
        .expect(Method::GET, "/api/v1/rules/elsewhere/stats", None, 200)
        .await?;
    assert_eq!(stats["matched"], 0, "{stats}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_plugin_decides_and_a_rule_whose_plugin_stops_says_so() -> anyhow::Result<()> {
    let (node, pk) = node_with_product().await?;
    let cool = device(&node, &pk, "cool-lamp", None).await?;
    let hot = device(&node, &pk, "hot-lamp", None).await?;
    // The minimal rule raises `overheat` above 30 °C on the device that reported it.
    let manifest = "id = \"hot-rule\"\nversion = \"0.1.0\"\nworld = \"rule\"\n\
                    capabilities = [\"log\", \"clock\"]\nproducts = []\n";
    let (status, body) = upload_plugin(
        &node,
        Method::POST,
        "/api/v1/plugins",
        manifest,
        "wasm",
        std::fs::read(artifacts::MINIMAL_RULE)?,
    )
    .await?;
    assert_eq!(status, 201, "{body}");
    node.expect(
        Method::POST,
        "/api/v1/rules",
        Some(
            json!({"id": "by-plugin", "name": "Overheat by plugin", "definition": {
            "trigger": {"kind": "plugin", "plugin": "hot-rule", "productKey": pk}}}),
        ),
        201,
    )
    .await?;

    post(&node, &cool, json!({"temperature": 21.5})).await?;
    post(&node, &hot, json!({"temperature": 35.0})).await?;
    let alarm = wait_for(
        &node,
        &format!("/api/v1/alarms?productKey={pk}&state=active"),
        |l| active_alarm(l, "hot-lamp", "overheat"),
    )
    .await?;
    assert_eq!(alarm["level"], 2, "{alarm}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let alarms = node
        .expect(
            Method::GET,
            &format!("/api/v1/alarms?productKey={pk}&state=active"),
            None,
            200,
        )
        .await?;
    assert!(
        active_alarm(&alarms, "cool-lamp", "overheat").is_none(),
        "{alarms}"
    );
    let stats = node
        .expect(Method::GET, "/api/v1/rules/by-plugin/stats", None, 200)
        .await?;
    assert_eq!(
        stats["matched"], 1,
        "only the plugin's match counts: {stats}"
    );
    assert_eq!(stats["actionsOk"], 1, "{stats}");

    // The plugin stops running: the rule reports it in its counters and last error.
    node.expect(Method::POST, "/api/v1/plugins/hot-rule/disable", None, 200)
        .await?;
    post(&node, &hot, json!({"temperature": 36.0})).await?;
    let stats = wait_for(&node, "/api/v1/rules/by-plugin/stats", |s| {
        (s["actionsFailed"].as_i64()? >= 1).then(|| s.clone())
    })
    .await?;
    assert!(
        stats["lastError"]
            .as_str()
            .unwrap_or_default()
            .contains("hot-rule"),
        "{stats}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scene_scoped_to_a_region_watches_only_the_devices_there() -> anyhow::Result<()> {
    let (node, pk) = node_with_product().await?;
    let lingyin = device(&node, &pk, "lingyin-1", Some("/hz/xihu/lingyin")).await?;
    let binjiang = device(&node, &pk, "binjiang-1", Some("/hz/binjiang")).await?;
    // In the product's region (/hz), not in /hz/xihu.
    let plain = device(&node, &pk, "plain-1", None).await?;
    node.expect(
        Method::POST,
        "/api/v1/rules",
        Some(json!({"id": "xihu-hot", "name": "Hot lamps in Xihu", "definition": {
            "trigger": {"kind": "scene", "productKey": pk, "scope": {"region": "/hz/xihu"},
                "condition": {"property": "temperature", "op": ">", "threshold": 30, "holdForSecs": 0}},
            "actions": [{"kind": "alarm", "alarmType": "hot", "level": 3,
                "message": "{{ device.deviceName }} is hot"}]}})),
        201,
    )
    .await?;
    let (status, refused) = node
        .api(
            Method::POST,
            "/api/v1/rules",
            Some(json!({"id": "bad-scope", "name": "bad", "definition": {
                "trigger": {"kind": "scene", "productKey": pk, "scope": {"region": "hz/../x"},
                    "condition": {"property": "temperature", "op": ">", "threshold": 30}},
                "actions": [{"kind": "alarm", "alarmType": "hot"}]}})),
        )
        .await?;
    assert_eq!(status.as_u16(), 422, "{refused}");
    assert!(refused.to_string().contains("trigger.scope"), "{refused}");

    for d in [&binjiang, &plain, &lingyin] {
        post(&node, d, json!({"temperature": 35.0})).await?;
    }
    wait_for(
        &node,
        &format!("/api/v1/alarms?productKey={pk}&state=active"),
        |l| active_alarm(l, "lingyin-1", "hot"),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let alarms = node
        .expect(
            Method::GET,
            &format!("/api/v1/alarms?productKey={pk}&state=active"),
            None,
            200,
        )
        .await?;
    assert_eq!(
        alarms["items"].as_array().map(Vec::len),
        Some(1),
        "only the device in /hz/xihu: {alarms}"
    );
    Ok(())
}
