//! Permissions decided by the Rego policies in the real binary: operators confined to their
//! region on every device and product route (IDOR), data fields masked by permission level, the
//! broker's topic ACL and plugin capabilities decided by policy and written to the decision
//! log, and policy changes that are refused (old version keeps serving), accepted, rolled back
//! and hot-reloaded from the policy directory.

use std::time::{Duration, Instant};

use lotus_e2e::{Session, create_user as user, sys};
use lotus_test_harness::device::{DeviceCredentials, mqtt_options};
use lotus_test_harness::mqtt::Client;
use lotus_test_harness::node::{LotusNode, NodeOptions};
use reqwest::Method;
use rumqttc::{QoS, SubscribeReasonCode};
use serde_json::{Value, json};

async fn product(node: &LotusNode, name: &str, region: &str) -> anyhow::Result<String> {
    let p = node
        .expect(
            Method::POST,
            "/api/v1/products",
            Some(json!({"name": name, "nodeType": "direct", "dataFormat": "alink", "region": region})),
            201,
        )
        .await?;
    assert_eq!(p["region"], region);
    Ok(p["productKey"].as_str().unwrap().to_string())
}

async fn device(
    node: &LotusNode,
    pk: &str,
    name: &str,
    region: Option<&str>,
) -> anyhow::Result<DeviceCredentials> {
    let mut body = json!({"deviceName": name});
    if let Some(r) = region {
        body["region"] = r.into();
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

fn water_tsl() -> Value {
    let text = |id: &str, sensitivity: &str| json!({"identifier": id, "name": id, "accessMode": "r", "sensitivity": sensitivity, "dataType": {"type": "text", "specs": {"length": "64"}}});
    json!({
        "properties": [
            {"identifier": "flow", "name": "flow", "accessMode": "r", "dataType": {"type": "int", "specs": {"min": "0", "max": "100000", "step": "1"}}},
            text("owner_phone", "personal"),
            text("valve_key", "secret"),
        ],
        "events": [], "services": []
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_are_confined_to_their_region_on_every_route() -> anyhow::Result<()> {
    let mut node = LotusNode::start(NodeOptions::default()).await?;
    node.login().await?;
    let xihu = product(&node, "Xihu lights", "/hz/xihu").await?;
    let binjiang = product(&node, "Binjiang lights", "/hz/binjiang").await?;
    device(&node, &xihu, "lamp-x1", None).await?;
    // A device of an in-scope product standing in another district is out of scope too.
    device(&node, &xihu, "lamp-x2", Some("/hz/binjiang/riverside")).await?;
    device(&node, &binjiang, "lamp-b1", None).await?;
    user(&node, "ops-xihu", &["operator"], "/hz/xihu").await?;
    user(&node, "viewer-xihu", &["viewer"], "/hz/xihu").await?;
    let ops = Session::login(&node, "ops-xihu").await?;

    // Every device route, on a device outside the operator's region: 403 with the reason.
    for (pk, dn) in [(&binjiang, "lamp-b1"), (&xihu, "lamp-x2")] {
        let dev = format!("/api/v1/products/{pk}/devices/{dn}");
        let routes: Vec<(Method, String, Option<Value>)> = vec![
            (Method::GET, dev.clone(), None),
            (
                Method::PATCH,
                dev.clone(),
                Some(json!({"nickname": "mine now"})),
            ),
            (Method::DELETE, dev.clone(), None),
            (Method::POST, format!("{dev}/enable"), None),
            (Method::POST, format!("{dev}/disable"), None),
            (Method::GET, format!("{dev}/status-log"), None),
            (Method::GET, format!("{dev}/sub-devices"), None),
            (Method::GET, format!("{dev}/properties"), None),
            (Method::GET, format!("{dev}/properties/flow/history"), None),
            (Method::GET, format!("{dev}/events"), None),
            (
                Method::POST,
                format!("{dev}/properties:set"),
                Some(json!({"params": {"x": 1}})),
            ),
            (
                Method::POST,
                format!("{dev}/services/reboot"),
                Some(json!({"params": {}})),
            ),
            (Method::GET, format!("{dev}/messages/1"), None),
            (Method::GET, format!("{dev}/shadow"), None),
            (
                Method::PUT,
                format!("{dev}/shadow"),
                Some(json!({"desired": {"x": 1}})),
            ),
        ];
        for (method, path, body) in routes {
            let (status, p) = ops.call(method.clone(), &path, body).await?;
            assert_eq!(status, 403, "{method} {path}: {p}");
            assert!(
                p["detail"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("outside your region /hz/xihu"),
                "{method} {path}: {p}"
            );
        }
    }
    // Every product route on the other district's product.
    let prod = format!("/api/v1/products/{binjiang}");
    for (method, path, body) in [
        (Method::GET, prod.clone(), None),
        (Method::PATCH, prod.clone(), Some(json!({"name": "taken"}))),
        (Method::DELETE, prod.clone(), None),
        (Method::GET, format!("{prod}/devices"), None),
        (
            Method::POST,
            format!("{prod}/devices"),
            Some(json!({"deviceName": "planted"})),
        ),
        (Method::GET, format!("{prod}/thing-model"), None),
        (
            Method::PUT,
            format!("{prod}/thing-model"),
            Some(water_tsl()),
        ),
        (Method::GET, format!("{prod}/thing-model/versions"), None),
        (Method::GET, format!("{prod}/topic-classes"), None),
        (
            Method::POST,
            format!("{prod}/topic-classes"),
            Some(json!({"template": "/${productKey}/${deviceName}/user/x", "operation": "pub"})),
        ),
        (Method::GET, format!("{prod}/codec"), None),
        (Method::GET, format!("{prod}/data-grants"), None),
    ] {
        let (status, p) = ops.call(method.clone(), &path, body).await?;
        assert_eq!(status, 403, "{method} {path}: {p}");
    }
    // Nothing changed behind the refusals.
    let b1 = node
        .expect(Method::GET, &format!("{prod}/devices/lamp-b1"), None, 200)
        .await?;
    assert!(b1["nickname"].is_null());

    // In scope: reads and writes work.
    let own = format!("/api/v1/products/{xihu}/devices/lamp-x1");
    assert_eq!(ops.call(Method::GET, &own, None).await?.0, 200);
    assert_eq!(
        ops.call(Method::PATCH, &own, Some(json!({"nickname": "west gate"})))
            .await?
            .0,
        200
    );
    // Creating in scope, including below the region; not outside it; not moving out.
    let (status, p) = ops
        .call(
            Method::POST,
            &format!("/api/v1/products/{xihu}/devices"),
            Some(json!({"deviceName": "lamp-x3", "region": "/hz/xihu/lingyin"})),
        )
        .await?;
    assert_eq!(status, 201, "{p}");
    let (status, _) = ops
        .call(
            Method::POST,
            &format!("/api/v1/products/{xihu}/devices"),
            Some(json!({"deviceName": "lamp-x4", "region": "/hz/binjiang"})),
        )
        .await?;
    assert_eq!(status, 403);
    let (status, _) = ops
        .call(Method::PATCH, &own, Some(json!({"region": "/hz/binjiang"})))
        .await?;
    assert_eq!(status, 403, "moving a device out of the region");
    let (status, _) = ops
        .call(Method::POST, "/api/v1/products", Some(json!({"name": "elsewhere", "nodeType": "direct", "dataFormat": "alink", "region": "/sh"})))
        .await?;
    assert_eq!(status, 403);

    // Lists show only what is in scope.
    let (_, all) = ops
        .call(Method::GET, "/api/v1/devices?pageSize=100", None)
        .await?;
    let names: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["deviceName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["lamp-x1", "lamp-x3"], "{all}");
    assert_eq!(all["total"], 2);
    let (_, products) = ops.call(Method::GET, "/api/v1/products", None).await?;
    let keys: Vec<&str> = products["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["productKey"].as_str().unwrap())
        .collect();
    assert_eq!(keys, [xihu.as_str()]);

    // A viewer reads but does not write; nobody but admins manages plugins, users, policies.
    let viewer = Session::login(&node, "viewer-xihu").await?;
    assert_eq!(viewer.call(Method::GET, &own, None).await?.0, 200);
    let (status, p) = viewer
        .call(Method::PATCH, &own, Some(json!({"nickname": "x"})))
        .await?;
    assert_eq!(status, 403);
    assert!(
        p["detail"].as_str().unwrap().contains("none of your roles"),
        "{p}"
    );
    assert_eq!(ops.call(Method::GET, "/api/v1/plugins", None).await?.0, 200);
    assert_eq!(
        ops.call(Method::DELETE, "/api/v1/plugins/any", None)
            .await?
            .0,
        403
    );
    assert_eq!(ops.call(Method::GET, "/api/v1/users", None).await?.0, 403);
    assert_eq!(
        ops.call(Method::GET, "/api/v1/policies", None).await?.0,
        403
    );
    assert_eq!(
        ops.call(Method::GET, "/api/v1/decisions", None).await?.0,
        403
    );

    // The administrator sees every one of those denies in the decision log.
    let log = node
        .expect(
            Method::GET,
            "/api/v1/decisions?point=lotus.api&allow=false&principal=ops-xihu&limit=1000",
            None,
            200,
        )
        .await?;
    let denies = log["items"].as_array().unwrap();
    assert!(denies.len() >= 40, "{} denies logged", denies.len());
    let one = &denies[0];
    assert_eq!(one["allow"], false);
    assert!(one["version"].as_u64().unwrap() >= 1);
    assert!(
        one["reason"].is_string() && one["action"].is_string(),
        "{one}"
    );
    let lines = node
        .client
        .get(format!(
            "{}/api/v1/decisions?allow=false&format=jsonl&limit=5",
            node.http
        ))
        .bearer_auth(node.token.as_deref().unwrap())
        .send()
        .await?
        .text()
        .await?;
    assert_eq!(lines.lines().count(), 5);
    for line in lines.lines() {
        let record: Value = serde_json::from_str(line)?;
        assert_eq!(record["allow"], false);
    }
    node.stop()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_fields_are_masked_by_permission_level() -> anyhow::Result<()> {
    let mut node = LotusNode::start(NodeOptions::default()).await?;
    node.login().await?;
    let pk = product(&node, "Water meters", "/hz/xihu").await?;
    node.expect(
        Method::PUT,
        &format!("/api/v1/products/{pk}/thing-model"),
        Some(water_tsl()),
        200,
    )
    .await?;
    let d = device(&node, &pk, "meter-1", None).await?;
    let mut c = Client::connected(mqtt_options(&d, node.mqtt)).await?;
    c.subscribe(
        &sys(&d, "thing/event/property/post_reply"),
        QoS::AtLeastOnce,
    )
    .await?;
    c.publish(
        &sys(&d, "thing/event/property/post"),
        QoS::AtLeastOnce,
        json!({"id": "1", "version": "1.0", "params": {"flow": 420, "owner_phone": "13812345678", "valve_key": "k-9f2c"}, "method": "thing.event.property.post"}).to_string(),
    )
    .await?;
    assert_eq!(
        c.expect_json(&sys(&d, "thing/event/property/post_reply"))
            .await?["code"],
        200
    );

    user(&node, "ops", &["operator"], "/hz").await?;
    user(&node, "analyst", &["viewer"], "/hz").await?;
    user(&node, "auditor", &["auditor"], "/").await?;
    let props = |v: &Value| -> serde_json::Map<String, Value> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["identifier"].as_str().unwrap().to_string(),
                    p["value"].clone(),
                )
            })
            .collect()
    };
    let path = format!("/api/v1/products/{pk}/devices/meter-1/properties");

    // Administrator: everything in clear.
    let all = props(&node.expect(Method::GET, &path, None, 200).await?);
    assert_eq!(all["owner_phone"], "13812345678");
    assert_eq!(all["valve_key"], "k-9f2c");

    // An operator without a grant reads at read_only: personal masked, secrets removed.
    let ops = Session::login(&node, "ops").await?;
    let (status, body) = ops.call(Method::GET, &path, None).await?;
    assert_eq!(status, 200, "{body}");
    let seen = props(&body);
    assert_eq!(seen["flow"], 420);
    assert_eq!(seen["owner_phone"], "138******78");
    assert!(!seen.contains_key("valve_key"), "{body}");
    let (status, _) = ops
        .call(
            Method::GET,
            &format!("/api/v1/products/{pk}/devices/meter-1/properties/valve_key/history"),
            None,
        )
        .await?;
    assert_eq!(status, 403, "a removed field has no history either");
    let (_, history) = ops
        .call(
            Method::GET,
            &format!("/api/v1/products/{pk}/devices/meter-1/properties/owner_phone/history"),
            None,
        )
        .await?;
    assert_eq!(history["points"][0]["value"], "138******78", "{history}");

    // read_write: secrets hashed. data_admin: all in clear. Expired: denied.
    node.expect(
        Method::PUT,
        &format!("/api/v1/products/{pk}/data-grants/ops"),
        Some(json!({"level": "read_write"})),
        200,
    )
    .await?;
    let seen = props(&ops.call(Method::GET, &path, None).await?.1);
    assert!(
        seen["valve_key"].as_str().unwrap().starts_with("sha256:"),
        "{seen:?}"
    );
    assert_eq!(seen["owner_phone"], "138******78");
    node.expect(
        Method::PUT,
        &format!("/api/v1/products/{pk}/data-grants/ops"),
        Some(json!({"level": "data_admin"})),
        200,
    )
    .await?;
    let seen = props(&ops.call(Method::GET, &path, None).await?.1);
    assert_eq!(seen["valve_key"], "k-9f2c");
    let soon = lotus_test_harness::now_ms() + 1_500;
    node.expect(
        Method::PUT,
        &format!("/api/v1/products/{pk}/data-grants/ops"),
        Some(json!({"level": "data_admin", "expiresAt": soon})),
        200,
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(1_700)).await;
    let (status, p) = ops.call(Method::GET, &path, None).await?;
    assert_eq!(status, 403, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("expired"), "{p}");
    // `none` closes the data to an operator who otherwise reads at read_only.
    node.expect(
        Method::PUT,
        &format!("/api/v1/products/{pk}/data-grants/analyst"),
        Some(json!({"level": "none"})),
        200,
    )
    .await?;
    let analyst = Session::login(&node, "analyst").await?;
    assert_eq!(analyst.call(Method::GET, &path, None).await?.0, 403);
    // An auditor has no data permission at all.
    let auditor = Session::login(&node, "auditor").await?;
    let (status, _) = auditor.call(Method::GET, &path, None).await?;
    assert_eq!(status, 403);
    // Granting is for administrators (and data administrators in scope).
    let (status, _) = ops
        .call(
            Method::PUT,
            &format!("/api/v1/products/{pk}/data-grants/ops"),
            Some(json!({"level": "model_admin"})),
        )
        .await?;
    assert_eq!(status, 403);
    let grants = node
        .expect(
            Method::GET,
            &format!("/api/v1/products/{pk}/data-grants"),
            None,
            200,
        )
        .await?;
    assert_eq!(grants["items"].as_array().unwrap().len(), 2);
    node.stop()?;
    Ok(())
}

/// The api.rego served by the node, and the same with one more rule (which breaks no test).
async fn api_policy(node: &LotusNode) -> anyhow::Result<(String, String)> {
    let package = node
        .expect(Method::GET, "/api/v1/policies/lotus.api", None, 200)
        .await?;
    let source = package["source"].as_str().unwrap().to_string();
    let extended = format!(
        "{source}\n# Night-shift staff read devices everywhere.\nscoped if {{\n\thas_role(\"night_shift\")\n\tkind == \"device\"\n\tverb == \"read\"\n}}\n"
    );
    Ok((source, extended))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_changes_are_gated_by_their_tests_versioned_and_hot_reloaded() -> anyhow::Result<()>
{
    let mut node = LotusNode::start(NodeOptions::default()).await?;
    node.login().await?;
    let pk = product(&node, "Lights", "/hz/xihu").await?;
    device(&node, &pk, "lamp-1", None).await?;
    // The role is registered so it can be assigned; what it may do is the policy's to say.
    node.expect(
        Method::POST,
        "/api/v1/roles",
        Some(json!({"name": "night_shift", "description": "Rights given by lotus.api", "permissions": []})),
        201,
    )
    .await?;
    user(&node, "night", &["night_shift"], "/").await?;
    let night = Session::login(&node, "night").await?;
    let lamp = format!("/api/v1/products/{pk}/devices/lamp-1");
    assert_eq!(night.call(Method::GET, &lamp, None).await?.0, 403);

    let before = node
        .expect(Method::GET, "/api/v1/policies/lotus.api", None, 200)
        .await?;
    let v1 = before["version"].as_u64().unwrap();
    let put = |body: String| {
        node.client
            .put(format!("{}/api/v1/policies/lotus.api", node.http))
            .bearer_auth(node.token.as_deref().unwrap())
            .header("content-type", "text/plain")
            .body(body)
            .send()
    };

    // A broken policy: refused with the parser's line and column; the old one keeps serving.
    let resp = put("package lotus.api\n\nallow if {\n\tinput.x ==\n}\n".into()).await?;
    assert_eq!(resp.status().as_u16(), 422);
    let p: Value = resp.json().await?;
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.contains("api.rego:"), "{detail}");
    assert!(
        detail.contains("previous version keeps serving"),
        "{detail}"
    );
    // A policy that parses but fails the package's tests (everyone may do everything).
    let resp = put("package lotus.api\n\nallow := true\n".into()).await?;
    assert_eq!(resp.status().as_u16(), 422);
    let p: Value = resp.json().await?;
    assert!(p["detail"].as_str().unwrap().contains("test"), "{p}");
    let after = node
        .expect(Method::GET, "/api/v1/policies/lotus.api", None, 200)
        .await?;
    assert_eq!(after["version"].as_u64().unwrap(), v1);
    assert_eq!(after["source"], before["source"]);
    assert_eq!(night.call(Method::GET, &lamp, None).await?.0, 403);
    // Requests kept being decided all along.
    assert_eq!(node.api(Method::GET, &lamp, None).await?.0.as_u16(), 200);

    // An accepted change serves at once, as a new version, and is written to the directory.
    let (original, extended) = api_policy(&node).await?;
    let resp = put(extended.clone()).await?;
    assert_eq!(resp.status().as_u16(), 200, "{}", resp.text().await?);
    assert_eq!(night.call(Method::GET, &lamp, None).await?.0, 200);
    assert_eq!(night.call(Method::DELETE, &lamp, None).await?.0, 403);
    let on_disk = std::fs::read_to_string(node.data_dir.join("policies/api.rego"))?;
    assert_eq!(on_disk, extended);
    let v2 = node
        .expect(Method::GET, "/api/v1/policies/lotus.api", None, 200)
        .await?["version"]
        .as_u64()
        .unwrap();
    assert!(v2 > v1);

    // Roll back: the original serves again.
    let back = node
        .expect(
            Method::POST,
            "/api/v1/policies/lotus.api/rollback",
            None,
            200,
        )
        .await?;
    assert_eq!(back["source"].as_str().unwrap(), original);
    assert_eq!(night.call(Method::GET, &lamp, None).await?.0, 403);

    // Hot reload: a security engineer edits the file; it serves once its tests pass.
    std::fs::write(node.data_dir.join("policies/api.rego"), &extended)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while night.call(Method::GET, &lamp, None).await?.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "the edited file was not loaded within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A broken edit on disk is refused and the last good version keeps serving.
    std::fs::write(
        node.data_dir.join("policies/api.rego"),
        "package lotus.api\nallow if {",
    )?;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(night.call(Method::GET, &lamp, None).await?.0, 200);
    assert!(node.log().contains("api.rego"), "the refusal is logged");
    node.stop()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_acl_is_the_policy_and_its_denies_are_logged() -> anyhow::Result<()> {
    let mut node = LotusNode::start(NodeOptions::default()).await?;
    node.login().await?;
    let pk = product(&node, "Lights", "/").await?;
    let a = device(&node, &pk, "lamp-a", None).await?;
    device(&node, &pk, "lamp-b", None).await?;
    let mut c = Client::connected(mqtt_options(&a, node.mqtt)).await?;
    // Another device's topic and the whole tree: refused.
    let refused = c
        .subscribe(
            &format!("/sys/{pk}/lamp-b/thing/service/property/set"),
            QoS::AtLeastOnce,
        )
        .await?;
    assert_eq!(
        refused,
        SubscribeReasonCode::Failure,
        "subscribing to another device's topic"
    );
    assert_eq!(
        c.subscribe("#", QoS::AtLeastOnce).await?,
        SubscribeReasonCode::Failure,
        "subscribing to #"
    );
    assert_ne!(
        c.subscribe(&sys(&a, "thing/service/property/set"), QoS::AtLeastOnce)
            .await?,
        SubscribeReasonCode::Failure
    );
    let log = node
        .expect(
            Method::GET,
            "/api/v1/decisions?point=lotus.device.topic&allow=false",
            None,
            200,
        )
        .await?;
    let items = log["items"].as_array().unwrap();
    let resources: Vec<&str> = items
        .iter()
        .map(|d| d["resource"]["id"].as_str().unwrap())
        .collect();
    assert!(resources.contains(&"#"), "{log}");
    assert!(resources.iter().any(|r| r.contains("lamp-b")), "{log}");
    assert!(
        items
            .iter()
            .all(|d| d["principal"]["device_name"] == "lamp-a"),
        "{log}"
    );
    assert!(
        items
            .iter()
            .any(|d| d["reason"].as_str().unwrap().contains("own topics")),
        "{log}"
    );
    node.stop()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_http_outside_its_allow_list_is_denied_by_policy() -> anyhow::Result<()> {
    let mut node = LotusNode::start(NodeOptions::default()).await?;
    node.login().await?;
    // The plugin may call port 9 only; the notification asks it to call elsewhere.
    let manifest = "id = \"ops-webhook\"\nversion = \"1.0.0\"\nworld = \"channel\"\n\
         capabilities = [\"http\", \"secrets\"]\nhttp_allow = [\"127.0.0.1:9\"]\n\
         secrets = [\"webhook-token\"]\n";
    let (status, body) = lotus_e2e::upload_plugin(
        &node,
        Method::POST,
        "/api/v1/plugins",
        manifest,
        "wasm",
        std::fs::read(lotus_plugin_artifacts::MINIMAL_CHANNEL)?,
    )
    .await?;
    assert_eq!(status, 202, "{body}");
    lotus_e2e::approve_plugin(&node, "ops-webhook").await?;
    node.expect(
        Method::PUT,
        "/api/v1/plugins/ops-webhook/secrets/webhook-token",
        Some(json!({"value": "t"})),
        200,
    )
    .await?;
    let (status, p) = node
        .api(
            Method::POST,
            "/api/v1/plugins/ops-webhook/deliver",
            Some(json!({"recipients": ["http://127.0.0.1:8/hook"], "subject": "s", "body": "b"})),
        )
        .await?;
    assert_eq!(status.as_u16(), 502, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("allow-list"), "{p}");
    let log = node
        .expect(
            Method::GET,
            "/api/v1/decisions?point=lotus.plugin.capability&allow=false",
            None,
            200,
        )
        .await?;
    let deny = &log["items"][0];
    assert_eq!(deny["action"], "http", "{log}");
    assert_eq!(deny["principal"]["id"], "ops-webhook", "{log}");
    assert!(
        deny["reason"].as_str().unwrap().contains("allow-list"),
        "{log}"
    );
    let logs = node
        .expect(Method::GET, "/api/v1/plugins/ops-webhook/logs", None, 200)
        .await?;
    assert!(logs.to_string().contains("allow-list"), "{logs}");
    node.stop()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prebuilt_opa_wasm_bundle_serves_a_decision_point() -> anyhow::Result<()> {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../host/policy/tests/fixtures/opa-wasm"
    );
    let config = tempfile::NamedTempFile::new()?;
    // The third-party bundle allows only `GET /` in its own input shape, so serving lotus.api it
    // refuses every API question: proof that it, not api.rego, decides.
    std::fs::write(
        config.path(),
        format!(
            "[[policy.wasm]]\npackage = \"lotus.api\"\npath = \"{fixture}/policy.wasm\"\nentrypoint = \"example\"\n"
        ),
    )?;
    let mut node = LotusNode::start(NodeOptions {
        extra_args: vec!["--config".into(), config.path().display().to_string()],
        ..NodeOptions::default()
    })
    .await?;
    node.login().await?;
    let (status, p) = node.api(Method::GET, "/api/v1/plugins", None).await?;
    assert_eq!(status.as_u16(), 403, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("lotus.api"), "{p}");
    let (status, _) = node
        .api(
            Method::POST,
            "/api/v1/products",
            Some(json!({"name": "x", "nodeType": "direct", "dataFormat": "alink"})),
        )
        .await?;
    assert_eq!(status.as_u16(), 403);
    node.stop()?;

    // The CLI evaluates the same bundle offline.
    let eval = |input: &str| {
        std::process::Command::new(lotus_test_harness::node::binary())
            .args([
                "policy",
                "eval",
                "--wasm",
                &format!("{fixture}/policy.wasm"),
                "--package",
                "example",
                "--input",
                input,
            ])
            .output()
    };
    let out = eval(&format!("{fixture}/input.json"))?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(result[0]["result"]["allow"], true);
    let mut post: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{fixture}/input.json"))?)?;
    post["attributes"]["request"]["http"]["method"] = "POST".into();
    let post_file = tempfile::NamedTempFile::new()?;
    std::fs::write(post_file.path(), post.to_string())?;
    let out = eval(post_file.path().to_str().unwrap())?;
    let result: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(result[0]["result"]["allow"], false);
    Ok(())
}
