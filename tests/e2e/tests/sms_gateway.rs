//! The first-party SMS channel plugin (`plugins/sms-gateway`) through the real binary, against
//! a gateway written here that speaks the API of its README on a loopback port: a rule's
//! notification reaches the gateway with the documented body and bearer token, at the level of
//! the alarm that triggered it; a notification below the recipient's `minLevel` stays in the
//! app; a gateway error is a failed delivery with the gateway's message, retried until it is
//! sent.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lotus_e2e::receiver::Receiver;
use lotus_e2e::{Session, approve_plugin, sys, upload_plugin};
use lotus_plugin_artifacts as artifacts;
use lotus_test_harness::device::{DeviceCredentials, mqtt_options};
use lotus_test_harness::mqtt::Client;
use lotus_test_harness::node::{LotusNode, NodeOptions};
use reqwest::Method;
use rumqttc::QoS;
use serde_json::{Value, json};

const PLUGIN: &str = "lotus-sms-gateway";
const TOKEN: &str = "tok-sms-7f3e";

/// What the gateway got: the request line and headers (lower-cased) and the JSON body.
/// An SMS gateway on loopback: answers the n-th request with the n-th status of `statuses` (the
/// last repeats), `{"id": "gw-n", "status": "queued"}` on success and
/// `{"error": {"code": "unavailable", "message": "carrier link down"}}` otherwise.
async fn gateway(statuses: Vec<u16>) -> anyhow::Result<Receiver> {
    Receiver::answering(move |n| {
        let status = statuses[(n - 1).min(statuses.len() - 1)];
        let body = if status < 300 {
            json!({"id": format!("gw-{n}"), "status": "queued"})
        } else {
            json!({"error": {"code": "unavailable", "message": "carrier link down"}})
        };
        (status, body.to_string())
    })
    .await
}

async fn eventually<T>(
    what: &str,
    node: &LotusNode,
    mut f: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn put(node: &LotusNode, path: &str, body: Value) -> anyhow::Result<Value> {
    let (status, v) = node.api(Method::PUT, path, Some(body)).await?;
    anyhow::ensure!(
        matches!(status.as_u16(), 200 | 201),
        "PUT {path}: {status} {v}"
    );
    Ok(v)
}

/// A node (retries `retry_ms` apart at first) with the SMS plugin installed, approved and
/// pointed at the gateway, and an `sms` channel through it.
async fn node_with_sms(addr: SocketAddr, retry_ms: u64) -> anyhow::Result<LotusNode> {
    let mut node = LotusNode::start(NodeOptions {
        extra_env: vec![(
            "LOTUS_OPERATIONS__RETRY_BASE_MS".into(),
            retry_ms.to_string(),
        )],
        ..NodeOptions::default()
    })
    .await?;
    node.login().await?;
    // The manifest the plugin ships with, allowed to reach this gateway only.
    let manifest = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../plugins/sms-gateway/lotus-plugin.toml"),
    )?
    .replace(
        "http_allow = [\"sms-gateway.example:443\"]",
        &format!("http_allow = [\"127.0.0.1:{}\"]", addr.port()),
    );
    assert!(manifest.contains("127.0.0.1"), "{manifest}");
    let (status, body) = upload_plugin(
        &node,
        Method::POST,
        "/api/v1/plugins",
        &manifest,
        "wasm",
        std::fs::read(artifacts::SMS_GATEWAY)?,
    )
    .await?;
    assert_eq!(
        status, 202,
        "it calls out over http, so it waits for approval: {body}"
    );
    approve_plugin(&node, PLUGIN).await?;
    for (name, value) in [
        ("gateway-url", format!("http://{addr}")),
        ("gateway-token", TOKEN.to_string()),
        ("gateway-sender", "LOTUS".to_string()),
    ] {
        put(
            &node,
            &format!("/api/v1/plugins/{PLUGIN}/secrets/{name}"),
            json!({"value": value}),
        )
        .await?;
    }
    put(
        &node,
        "/api/v1/channels/sms",
        json!({"kind": "sms", "pluginId": PLUGIN, "enabled": true, "config": {}}),
    )
    .await?;
    Ok(node)
}

/// A product in `/hz` with one device reporting `pressure`.
async fn pump(node: &LotusNode) -> anyhow::Result<DeviceCredentials> {
    let p = node
        .expect(
            Method::POST,
            "/api/v1/products",
            Some(json!({"name": "Pump", "nodeType": "direct", "dataFormat": "alink", "region": "/hz"})),
            201,
        )
        .await?;
    let pk = p["productKey"].as_str().unwrap().to_string();
    node.expect(
        Method::PUT,
        &format!("/api/v1/products/{pk}/thing-model"),
        Some(
            json!({"properties": [{"identifier": "pressure", "name": "pressure", "accessMode": "r",
            "dataType": {"type": "float", "specs": {"min": "0", "max": "10", "step": "0.01"}}}],
            "events": [], "services": []}),
        ),
        200,
    )
    .await?;
    let d = node
        .expect(
            Method::POST,
            &format!("/api/v1/products/{pk}/devices"),
            Some(json!({"deviceName": "pump-1"})),
            201,
        )
        .await?;
    Ok(DeviceCredentials {
        product_key: pk,
        device_name: "pump-1".into(),
        device_secret: d["deviceSecret"].as_str().unwrap().to_string(),
    })
}

async fn post_pressure(node: &LotusNode, d: &DeviceCredentials, p: f64) -> anyhow::Result<()> {
    let mut c = Client::connected(mqtt_options(d, node.mqtt)).await?;
    let reply = sys(d, "thing/event/property/post_reply");
    c.subscribe(&reply, QoS::AtLeastOnce).await?;
    let msg = json!({"id": "1", "version": "1.0", "params": {"pressure": p},
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_notifies_by_sms_at_its_level_and_minor_news_stays_in_the_app()
-> anyhow::Result<()> {
    let gateway = gateway(vec![202]).await?;
    let addr = gateway.addr;
    let node = node_with_sms(addr, 100).await?;
    let pump = pump(&node).await?;
    node.expect(
        Method::POST,
        "/api/v1/users",
        Some(
            json!({"username": "chen", "password": lotus_e2e::PASSWORD, "roles": ["operator"],
            "region": "/hz", "phone": "+8613800000001"}),
        ),
        201,
    )
    .await?;
    // chen takes text messages, but only for level 2 or more severe.
    let chen = Session::login(&node, "chen").await?;
    chen.expect(
        Method::PUT,
        "/api/v1/me/preferences",
        Some(json!({"channels": ["inapp", "sms"], "minLevel": 2})),
        200,
    )
    .await?;
    let pk = &pump.product_key;
    node.expect(
        Method::POST,
        "/api/v1/rules",
        Some(json!({"id": "pressure-low", "name": "Pressure low", "definition": {
            "trigger": {"kind": "sql", "sql": format!(
                "SELECT items.pressure.value AS p FROM '/sys/{pk}/+/thing/event/property/post' WHERE items.pressure.value < 0.2")},
            "actions": [{"kind": "alarm", "alarmType": "pressure-low", "level": 2,
                "message": "pressure {{ data.p }} MPa"}]}})),
        201,
    )
    .await?;
    node.expect(
        Method::POST,
        "/api/v1/rules",
        Some(
            json!({"id": "tell-duty", "name": "Tell the duty officer", "definition": {
            "trigger": {"kind": "platform", "events": ["alarm.raised"], "productKey": pk},
            "actions": [
                // No level: the alarm's (2), severe enough for chen's phone.
                {"kind": "notify", "channel": "sms", "to": ["user:chen"],
                 "subject": "泵站压力低 {{ device.deviceName }}", "body": "{{ data.message }}"},
                // Level 3 is below chen's minLevel: in the app only.
                {"kind": "notify", "channel": "sms", "to": ["user:chen"], "level": 3,
                 "subject": "FYI {{ device.deviceName }}", "body": "logged"}
            ]}}),
        ),
        201,
    )
    .await?;

    post_pressure(&node, &pump, 0.1).await?;
    eventually("the gateway's request", &node, || {
        (gateway.count() > 0).then_some(())
    })
    .await?;
    let (head, body) = gateway.json_requests()[0].clone();
    assert!(head.starts_with("post /v1/messages "), "{head}");
    assert!(
        head.contains(&format!("authorization: bearer {}", TOKEN.to_lowercase())),
        "{head}"
    );
    assert!(head.contains("content-type: application/json"), "{head}");
    assert_eq!(body["to"], "+8613800000001", "{body}");
    assert_eq!(
        body["text"], "泵站压力低 pump-1: pressure 0.1 MPa",
        "{body}"
    );
    assert_eq!(body["sender"], "LOTUS", "{body}");
    assert!(
        body["reference"].as_str().unwrap().starts_with("lotus-"),
        "{body}"
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    let sent = loop {
        let list = node
            .expect(Method::GET, "/api/v1/deliveries", None, 200)
            .await?;
        if let Some(d) = list["items"]
            .as_array()
            .and_then(|i| i.iter().find(|d| d["state"] == "sent"))
        {
            break d.clone();
        }
        anyhow::ensure!(Instant::now() < deadline, "no sent delivery: {list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(sent["recipient"], "+8613800000001", "{sent}");
    assert_eq!(sent["messageId"], "gw-1", "{sent}");

    let deadline = Instant::now() + Duration::from_secs(10);
    let inbox = loop {
        let (_, m) = chen.call(Method::GET, "/api/v1/messages", None).await?;
        if m.to_string().contains("FYI pump-1") {
            break m;
        }
        anyhow::ensure!(Instant::now() < deadline, "no in-app message: {m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(inbox.to_string().contains("FYI pump-1"), "{inbox}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let texts = gateway.json_requests();
    assert_eq!(
        texts.len(),
        1,
        "the level-3 notice is not texted: {texts:?}"
    );
    let deliveries = node
        .expect(Method::GET, "/api/v1/deliveries", None, 200)
        .await?;
    assert!(
        !deliveries.to_string().contains("FYI pump-1"),
        "{deliveries}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_error_is_a_failed_delivery_that_is_retried_until_sent() -> anyhow::Result<()> {
    let gateway = gateway(vec![500, 500, 202]).await?;
    let addr = gateway.addr;
    // Retries 1 s, then 2 s apart: long enough to see the failed state between them.
    let node = node_with_sms(addr, 1000).await?;
    let pump = pump(&node).await?;
    node.expect(
        Method::POST,
        "/api/v1/rules",
        Some(json!({"id": "pressure-low", "name": "Pressure low", "definition": {
            "trigger": {"kind": "sql", "sql": format!(
                "SELECT items.pressure.value AS p FROM '/sys/{}/+/thing/event/property/post' WHERE items.pressure.value < 0.2",
                pump.product_key)},
            "actions": [{"kind": "notify", "channel": "sms", "to": ["tel:+8613800000002"],
                "subject": "pressure low", "body": "{{ data.p }} MPa"}]}})),
        201,
    )
    .await?;
    post_pressure(&node, &pump, 0.15).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let failed = loop {
        let list = node
            .expect(Method::GET, "/api/v1/deliveries", None, 200)
            .await?;
        if let Some(d) = list["items"]
            .as_array()
            .and_then(|i| i.iter().find(|d| d["state"] == "failed"))
        {
            break d.clone();
        }
        anyhow::ensure!(Instant::now() < deadline, "no failed delivery: {list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let error = failed["lastError"].as_str().unwrap_or_default();
    assert!(error.contains("HTTP 500"), "{failed}");
    assert!(error.contains("carrier link down"), "{failed}");
    let id = failed["id"].clone();

    let deadline = Instant::now() + Duration::from_secs(15);
    let sent = loop {
        let list = node
            .expect(Method::GET, "/api/v1/deliveries", None, 200)
            .await?;
        let d = list["items"]
            .as_array()
            .and_then(|i| i.iter().find(|d| d["id"] == id))
            .cloned()
            .unwrap_or(Value::Null);
        if d["state"] == "sent" {
            break d;
        }
        anyhow::ensure!(Instant::now() < deadline, "not sent after retries: {d}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(sent["attempts"], 3, "{sent}");
    assert_eq!(sent["messageId"], "gw-3", "{sent}");
    let seen = gateway.json_requests();
    let of_this: Vec<&Value> = seen
        .iter()
        .map(|(_, b)| b)
        .filter(|b| b["to"] == "+8613800000002")
        .collect();
    assert!(of_this.len() >= 3, "{seen:?}");
    assert!(
        of_this
            .iter()
            .all(|b| b["reference"] == of_this[0]["reference"]),
        "a retry carries the same reference: {seen:?}"
    );
    Ok(())
}
