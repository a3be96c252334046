//! Rules and alarms through the real binary: rules refused when they do not compile (with the
//! line and column of the SQL), dry runs, versions and rollback, enable and disable, operators
//! confined to their region by the policy, the CLI, and a device whose property post crosses a
//! rule's threshold raising an alarm that an operator acknowledges and clears.

use std::time::{Duration, Instant};

use lotus_e2e::{Fixture, sys};
use lotus_test_harness::device::mqtt_options;
use lotus_test_harness::mqtt::Client;
use lotus_test_harness::node::{ADMIN_PASSWORD, LotusNode, NodeOptions, binary};
use reqwest::Method;
use rumqttc::QoS;
use serde_json::{Value, json};

use lotus_e2e::{Session, create_user as user};

/// A node whose administrator is logged in.
async fn node() -> anyhow::Result<LotusNode> {
    let mut node = LotusNode::start(NodeOptions::default()).await?;
    node.login().await?;
    Ok(node)
}

/// Low water pressure on any device: an alarm and an event.
fn pressure_definition(threshold: f64) -> Value {
    json!({
        "trigger": {"kind": "sql", "sql": format!(
            "SELECT items.pressure.value AS p FROM '/sys/+/+/thing/event/property/post' WHERE items.pressure.value < {threshold}"
        )},
        "actions": [
            {"kind": "alarm", "alarmType": "pressure-low", "level": 2,
             "message": "pressure {{ data.p }} MPa at {{ device.deviceName }}"},
            {"kind": "event", "eventType": "water.pressure_low",
             "title": "Low pressure at {{ device.deviceName }} ({{ rule.name }})"}
        ]
    })
}

fn pressure_message(pressure: f64) -> Value {
    json!({
        "topic": "/sys/pk-water/pump-7/thing/event/property/post",
        "productKey": "pk-water",
        "deviceName": "pump-7",
        "payload": {
            "productKey": "pk-water", "deviceName": "pump-7",
            "items": {"pressure": {"value": pressure, "time": 1000}},
            "params": {"pressure": pressure}
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_compile_dry_run_version_and_switch() -> anyhow::Result<()> {
    let node = node().await?;

    // A statement without FROM: refused, with the field and the position of the error.
    let (status, problem) = node
        .api(
            Method::POST,
            "/api/v1/rules",
            Some(json!({"id": "broken", "name": "Broken", "definition": {
                "trigger": {"kind": "sql", "sql": "SELECT * WHERE pressure > 1"},
                "actions": [{"kind": "clearAlarm", "alarmType": "x"}]
            }})),
        )
        .await?;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["field"], "trigger.sql", "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("trigger.sql") && detail.contains("line 1, column"),
        "{detail}"
    );
    node.expect(Method::GET, "/api/v1/rules/broken", None, 404)
        .await?;
    // A bad id is named too.
    let (status, problem) = node
        .api(
            Method::POST,
            "/api/v1/rules",
            Some(
                json!({"id": "Low Pressure", "name": "x", "definition": pressure_definition(0.2)}),
            ),
        )
        .await?;
    assert_eq!(status, 422);
    assert!(problem["detail"].as_str().unwrap().starts_with("id:"));

    let created = node
        .expect(
            Method::POST,
            "/api/v1/rules",
            Some(
                json!({"id": "low-pressure", "name": "Low pressure", "description": "mains",
                "definition": pressure_definition(0.2), "region": "/hz/xihu"}),
            ),
            201,
        )
        .await?;
    assert_eq!(created["version"], 1);
    assert_eq!(created["enabled"], true);
    assert_eq!(created["region"], "/hz/xihu");
    assert_eq!(created["createdBy"], "admin");
    assert_eq!(created["stats"]["matched"], 0);
    let (status, dup) = node
        .api(
            Method::POST,
            "/api/v1/rules",
            Some(json!({"id": "low-pressure", "name": "Again", "definition": pressure_definition(0.2)})),
        )
        .await?;
    assert_eq!(status, 409, "{dup}");

    // Dry runs: the trigger is evaluated and the texts rendered; nothing runs.
    let run = node
        .expect(
            Method::POST,
            "/api/v1/rules/low-pressure/dry-run",
            Some(json!({"message": pressure_message(0.1)})),
            200,
        )
        .await?;
    assert_eq!(run["matched"], true, "{run}");
    assert_eq!(run["output"], json!({"p": 0.1}));
    assert_eq!(run["actions"][0]["kind"], "alarm");
    assert_eq!(
        run["actions"][0]["rendered"]["message"],
        "pressure 0.1 MPa at pump-7"
    );
    assert_eq!(
        run["actions"][1]["rendered"]["title"],
        "Low pressure at pump-7 (Low pressure)"
    );
    let run = node
        .expect(
            Method::POST,
            "/api/v1/rules/low-pressure/dry-run",
            Some(json!({"message": pressure_message(0.35)})),
            200,
        )
        .await?;
    assert_eq!(run["matched"], false, "{run}");
    assert_eq!(run["actions"], json!([]));
    assert!(run["note"].as_str().unwrap().contains("WHERE"));
    // Nothing ran: no alarm was raised by the dry runs.
    let alarms = node
        .expect(Method::GET, "/api/v1/alarms?productKey=pk-water", None, 200)
        .await?;
    assert_eq!(alarms["total"], 0, "{alarms}");
    // A definition tried before it is saved, with a looser threshold.
    let run = node
        .expect(
            Method::POST,
            "/api/v1/rules:dry-run",
            Some(json!({"definition": pressure_definition(0.5), "message": pressure_message(0.35), "name": "Draft"})),
            200,
        )
        .await?;
    assert_eq!(run["matched"], true, "{run}");
    assert_eq!(
        run["actions"][1]["rendered"]["title"],
        "Low pressure at pump-7 (Draft)"
    );
    let (status, problem) = node
        .api(
            Method::POST,
            "/api/v1/rules:dry-run",
            Some(
                json!({"definition": {"trigger": {"kind": "sql", "sql": "SELECT * FROM 'a/#'"},
                "actions": [{"kind": "alarm", "alarmType": "bad type!"}]},
                "message": pressure_message(0.1)}),
            ),
        )
        .await?;
    assert_eq!(status, 422);
    assert_eq!(problem["field"], "actions[0].alarmType");

    // A new version, its history, and a rollback that is itself a new version.
    let updated = node
        .expect(
            Method::PUT,
            "/api/v1/rules/low-pressure",
            Some(json!({"name": "Low pressure (0.3)", "description": "mains",
                "definition": pressure_definition(0.3)})),
            200,
        )
        .await?;
    assert_eq!(updated["version"], 2);
    assert_eq!(updated["name"], "Low pressure (0.3)");
    let (status, problem) = node
        .api(
            Method::PUT,
            "/api/v1/rules/low-pressure",
            Some(json!({"name": "x", "definition": {"trigger": {"kind": "schedule", "cron": "61 * * * *"},
                "actions": [{"kind": "clearAlarm", "alarmType": "x"}]}})),
        )
        .await?;
    assert_eq!(status, 422);
    assert_eq!(problem["field"], "trigger.cron");
    let versions = node
        .expect(
            Method::GET,
            "/api/v1/rules/low-pressure/versions",
            None,
            200,
        )
        .await?;
    let items = versions["items"].as_array().unwrap();
    assert_eq!(
        items.len(),
        2,
        "a refused edit stores no version: {versions}"
    );
    assert_eq!(items[0]["definition"], pressure_definition(0.2));
    assert_eq!(items[1]["definition"], pressure_definition(0.3));
    let run = node
        .expect(
            Method::POST,
            "/api/v1/rules/low-pressure/dry-run",
            Some(json!({"message": pressure_message(0.25)})),
            200,
        )
        .await?;
    assert_eq!(run["matched"], true, "version 2 runs: {run}");
    let rolled = node
        .expect(
            Method::POST,
            "/api/v1/rules/low-pressure/rollback",
            Some(json!({"version": 1})),
            200,
        )
        .await?;
    assert_eq!(rolled["version"], 3);
    assert_eq!(rolled["definition"], pressure_definition(0.2));
    let run = node
        .expect(
            Method::POST,
            "/api/v1/rules/low-pressure/dry-run",
            Some(json!({"message": pressure_message(0.25)})),
            200,
        )
        .await?;
    assert_eq!(run["matched"], false, "version 1 is back: {run}");
    let (status, problem) = node
        .api(
            Method::POST,
            "/api/v1/rules/low-pressure/rollback",
            Some(json!({"version": 42})),
        )
        .await?;
    assert_eq!(status, 404);
    assert!(problem["detail"].as_str().unwrap().contains("versions"));

    // Enable and disable.
    let off = node
        .expect(
            Method::POST,
            "/api/v1/rules/low-pressure/disable",
            None,
            200,
        )
        .await?;
    assert_eq!(off["enabled"], false);
    assert_eq!(off["version"], 3, "switching is not a new version");
    let got = node
        .expect(Method::GET, "/api/v1/rules/low-pressure", None, 200)
        .await?;
    assert_eq!(got["enabled"], false);
    let on = node
        .expect(Method::POST, "/api/v1/rules/low-pressure/enable", None, 200)
        .await?;
    assert_eq!(on["enabled"], true);

    let stats = node
        .expect(Method::GET, "/api/v1/rules/low-pressure/stats", None, 200)
        .await?;
    assert_eq!(stats["matched"], 0, "dry runs are not counted: {stats}");
    let list = node
        .expect(Method::GET, "/api/v1/rules?pageSize=10", None, 200)
        .await?;
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(list["items"][0]["id"], "low-pressure");
    assert_eq!(list["items"][0]["stats"]["actionsFailed"], 0);
    let dead = node
        .expect(
            Method::GET,
            "/api/v1/rule-dead-letters?ruleId=low-pressure",
            None,
            200,
        )
        .await?;
    assert_eq!(dead["items"], json!([]));
    assert_eq!(dead["hasMore"], false);
    node.expect(
        Method::POST,
        "/api/v1/rule-dead-letters/12345/retry",
        None,
        404,
    )
    .await?;

    node.expect(Method::DELETE, "/api/v1/rules/low-pressure", None, 204)
        .await?;
    node.expect(Method::GET, "/api/v1/rules/low-pressure", None, 404)
        .await?;
    node.expect(Method::DELETE, "/api/v1/rules/low-pressure", None, 404)
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_cannot_touch_rules_of_another_region() -> anyhow::Result<()> {
    let node = node().await?;
    node.expect(
        Method::POST,
        "/api/v1/rules",
        Some(
            json!({"id": "binjiang-pressure", "name": "Binjiang pressure",
            "definition": pressure_definition(0.2), "region": "/hz/binjiang"}),
        ),
        201,
    )
    .await?;
    user(&node, "ops-xihu", &["operator"], "/hz/xihu").await?;
    user(&node, "viewer-xihu", &["viewer"], "/hz/xihu").await?;
    user(&node, "dispatcher-xihu", &["dispatcher"], "/hz/xihu").await?;
    let ops = Session::login(&node, "ops-xihu").await?;

    let rule = "/api/v1/rules/binjiang-pressure";
    let update = json!({"name": "mine now", "definition": pressure_definition(0.9)});
    let calls: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, rule.to_string(), None),
        (Method::PUT, rule.to_string(), Some(update)),
        (Method::DELETE, rule.to_string(), None),
        (Method::POST, format!("{rule}/disable"), None),
        (Method::POST, format!("{rule}/enable"), None),
        (Method::GET, format!("{rule}/versions"), None),
        (
            Method::POST,
            format!("{rule}/rollback"),
            Some(json!({"version": 1})),
        ),
        (Method::GET, format!("{rule}/stats"), None),
        (
            Method::POST,
            format!("{rule}/dry-run"),
            Some(json!({"message": pressure_message(0.1)})),
        ),
    ];
    for (method, path, body) in calls {
        let (status, problem) = ops.call(method.clone(), &path, body).await?;
        assert_eq!(status, 403, "{method} {path}: {problem}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains("lotus.api") && detail.contains("/hz/binjiang"),
            "{method} {path}: {detail}"
        );
    }
    // Nothing changed.
    let same = node.expect(Method::GET, rule, None, 200).await?;
    assert_eq!(same["version"], 1);
    assert_eq!(same["enabled"], true);

    // Creating in another region is refused; in one's own, allowed (the region defaults to it).
    let (status, _) = ops
        .call(
            Method::POST,
            "/api/v1/rules",
            Some(
                json!({"id": "sneaky", "name": "Sneaky", "definition": pressure_definition(0.2),
                "region": "/hz/binjiang"}),
            ),
        )
        .await?;
    assert_eq!(status, 403);
    let (status, own) = ops
        .call(
            Method::POST,
            "/api/v1/rules",
            Some(json!({"id": "xihu-pressure", "name": "Xihu pressure", "definition": pressure_definition(0.2)})),
        )
        .await?;
    assert_eq!(status, 201, "{own}");
    assert_eq!(own["region"], "/hz/xihu");
    let (status, list) = ops.call(Method::GET, "/api/v1/rules", None).await?;
    assert_eq!(status, 200);
    let ids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["xihu-pressure"], "{list}");
    assert_eq!(list["total"], 1);
    let (status, all) = node
        .api(Method::GET, "/api/v1/rules", None)
        .await
        .map(|(s, v)| (s.as_u16(), v))?;
    assert_eq!(status, 200);
    assert_eq!(all["total"], 2, "{all}");

    // A viewer reads the rules of its region but changes none; a dispatcher has no rules.
    let viewer = Session::login(&node, "viewer-xihu").await?;
    let (status, _) = viewer
        .call(Method::GET, "/api/v1/rules/xihu-pressure", None)
        .await?;
    assert_eq!(status, 200);
    let (status, _) = viewer
        .call(Method::POST, "/api/v1/rules/xihu-pressure/disable", None)
        .await?;
    assert_eq!(status, 403);
    let dispatcher = Session::login(&node, "dispatcher-xihu").await?;
    let (status, problem) = dispatcher.call(Method::GET, "/api/v1/rules", None).await?;
    assert_eq!(status, 403, "{problem}");
    // …but lists alarms.
    let (status, alarms) = dispatcher.call(Method::GET, "/api/v1/alarms", None).await?;
    assert_eq!(status, 200, "{alarms}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarm_routes_on_an_empty_node() -> anyhow::Result<()> {
    let node = node().await?;
    let empty = node
        .expect(
            Method::GET,
            "/api/v1/alarms?state=active&productKey=pk1&deviceName=d1&alarmType=hot&region=/hz/xihu&from=0&to=4102444800000&page=1&pageSize=10",
            None,
            200,
        )
        .await?;
    assert_eq!(
        empty,
        json!({"items": [], "total": 0, "page": 1, "pageSize": 10})
    );
    for bad in [
        "/api/v1/alarms?state=open",
        "/api/v1/alarms?region=hz",
        "/api/v1/alarms?from=10&to=5",
        "/api/v1/alarms?pageSize=501",
    ] {
        let (status, problem) = node.api(Method::GET, bad, None).await?;
        assert_eq!(status, 400, "{bad}: {problem}");
    }
    for path in [
        "/api/v1/alarms/999",
        "/api/v1/alarms/999/acknowledge",
        "/api/v1/alarms/999/clear",
    ] {
        let method = if path.ends_with("999") {
            Method::GET
        } else {
            Method::POST
        };
        let (status, problem) = node.api(method, path, None).await?;
        assert_eq!(status, 404, "{path}: {problem}");
        assert_eq!(problem["detail"], "alarm 999 not found");
    }
    let (status, _) = node
        .api(Method::POST, "/api/v1/alarms/abc/acknowledge", None)
        .await?;
    assert_eq!(status, 400);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_creates_and_lists_rules() -> anyhow::Result<()> {
    let node = node().await?;
    let home = tempfile::tempdir()?;
    let run = |args: &[&str]| {
        std::process::Command::new(binary())
            .args(args)
            .env("XDG_CONFIG_HOME", home.path())
            .env("LOTUS_URL", &node.http)
            .env_remove("LOTUS_TOKEN")
            .output()
    };
    let ok = |out: &std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(&run(&[
        "login",
        "--username",
        "admin",
        "--password",
        ADMIN_PASSWORD,
    ])?);

    let rule_file = home.path().join("rule.json");
    std::fs::write(
        &rule_file,
        json!({"id": "cli-pressure", "name": "From the CLI", "description": "made by lotus rule create",
            "definition": pressure_definition(0.2)})
        .to_string(),
    )?;
    let out = run(&["rule", "create", "--file", rule_file.to_str().unwrap()])?;
    ok(&out);
    let created: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(created["id"], "cli-pressure");
    assert_eq!(created["version"], 1);

    let out = run(&["rule", "list"])?;
    ok(&out);
    let list: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(list["total"], 1);
    assert_eq!(list["items"][0]["name"], "From the CLI");

    let message_file = home.path().join("msg.json");
    std::fs::write(&message_file, pressure_message(0.1).to_string())?;
    let out = run(&[
        "rule",
        "dry-run",
        "cli-pressure",
        "--message",
        message_file.to_str().unwrap(),
    ])?;
    ok(&out);
    let dry: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(dry["matched"], true, "{dry}");

    let out = run(&["rule", "disable", "cli-pressure"])?;
    ok(&out);
    let off: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(off["enabled"], false);

    // A rule that does not compile: the CLI fails with the part to fix.
    std::fs::write(
        &rule_file,
        json!({"id": "cli-broken", "name": "Broken", "definition": {
            "trigger": {"kind": "sql", "sql": "SELECT FROM 'x'"},
            "actions": [{"kind": "clearAlarm", "alarmType": "x"}]}})
        .to_string(),
    )?;
    let out = run(&["rule", "create", "--file", rule_file.to_str().unwrap()])?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("422") && err.contains("trigger.sql"), "{err}");

    let out = run(&["alarm", "list", "--state", "active"])?;
    ok(&out);
    let alarms: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(alarms["total"], 0);
    let out = run(&["alarm", "ack", "77"])?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("alarm 77 not found"));
    Ok(())
}

/// Polls the alarms of a product until one is there (bounded by 10 s).
async fn wait_alarm(node: &LotusNode, pk: &str) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = node
            .expect(
                Method::GET,
                &format!("/api/v1/alarms?productKey={pk}&state=active"),
                None,
                200,
            )
            .await?;
        if let Some(alarm) = list["items"].as_array().and_then(|a| a.first()) {
            return Ok(alarm.clone());
        }
        if Instant::now() > deadline {
            anyhow::bail!("no alarm within 10 s; log:\n{}", node.log());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_crossing_a_threshold_raises_an_alarm() -> anyhow::Result<()> {
    let f = Fixture::start(1).await?;
    let (node, pk, d) = (&f.node, &f.product_key, &f.devices[0]);
    node.expect(
        Method::POST,
        "/api/v1/rules",
        Some(json!({"id": "over-current", "name": "Lamp over-current", "definition": {
            "trigger": {"kind": "sql", "sql": format!(
                "SELECT items.Current.value AS current FROM '/sys/{pk}/+/thing/event/property/post' WHERE items.Current.value > 10"
            )},
            "actions": [{"kind": "alarm", "alarmType": "over-current", "level": 1,
                "message": "current {{ data.current }} A at {{ device.deviceName }}"}]
        }})),
        201,
    )
    .await?;

    let mut c = Client::connected(mqtt_options(d, node.mqtt)).await?;
    let post = sys(d, "thing/event/property/post");
    let reply = sys(d, "thing/event/property/post_reply");
    c.subscribe(&reply, QoS::AtLeastOnce).await?;
    // Below the threshold first: no alarm.
    for (id, current) in [("1", 3.5), ("2", 12.5)] {
        let msg = json!({"id": id, "version": "1.0", "params": {"Current": current},
            "method": "thing.event.property.post"});
        c.publish(&post, QoS::AtLeastOnce, msg.to_string()).await?;
        let r = c.expect_json(&reply).await?;
        assert_eq!(r["code"], 200, "{r}");
    }

    let alarm = wait_alarm(node, pk).await?;
    assert_eq!(alarm["alarmType"], "over-current");
    assert_eq!(alarm["deviceName"], d.device_name);
    assert_eq!(alarm["ruleId"], "over-current");
    assert_eq!(alarm["level"], 1);
    assert_eq!(
        alarm["message"],
        format!("current 12.5 A at {}", d.device_name)
    );
    let list = node
        .expect(
            Method::GET,
            &format!("/api/v1/alarms?productKey={pk}"),
            None,
            200,
        )
        .await?;
    assert_eq!(list["total"], 1, "only the reading over 10 A: {list}");
    let id = alarm["id"].as_i64().unwrap();
    let got = node
        .expect(Method::GET, &format!("/api/v1/alarms/{id}"), None, 200)
        .await?;
    assert_eq!(got["state"], "active");

    let acked = node
        .expect(
            Method::POST,
            &format!("/api/v1/alarms/{id}/acknowledge"),
            None,
            200,
        )
        .await?;
    assert_eq!(acked["state"], "acknowledged");
    assert_eq!(acked["acknowledgedBy"], "admin");
    let cleared = node
        .expect(
            Method::POST,
            &format!("/api/v1/alarms/{id}/clear"),
            None,
            200,
        )
        .await?;
    assert_eq!(cleared["state"], "cleared");
    assert_eq!(cleared["clearedBy"], "admin");
    let (status, problem) = node
        .api(
            Method::POST,
            &format!("/api/v1/alarms/{id}/acknowledge"),
            None,
        )
        .await?;
    assert_eq!(status, 409, "{problem}");
    let active = node
        .expect(
            Method::GET,
            &format!("/api/v1/alarms?productKey={pk}&state=active"),
            None,
            200,
        )
        .await?;
    assert_eq!(active["total"], 0);

    // The engine's counters reach storage within a few seconds.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = node
            .expect(Method::GET, "/api/v1/rules/over-current/stats", None, 200)
            .await?;
        if stats["matched"] == 1 && stats["actionsOk"] == 1 {
            assert!(stats["lastMatchedAt"].as_i64().is_some());
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "counters: {stats}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.disconnect().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_offline_for_longer_than_the_limit_raises_an_alarm_cleared_when_it_returns()
-> anyhow::Result<()> {
    let f = Fixture::start(1).await?;
    let (node, pk, d) = (&f.node, &f.product_key, &f.devices[0]);
    node.expect(
        Method::POST,
        "/api/v1/rules",
        Some(
            json!({"id": "lamp-offline", "name": "Lamp offline", "definition": {
                "trigger": {"kind": "offline", "productKey": pk, "offlineForSecs": 1},
                "actions": [{"kind": "alarm", "alarmType": "offline-too-long", "level": 2,
                    "message": "{{ device.deviceName }} offline since {{ data.since }}"}]
            }}),
        ),
        201,
    )
    .await?;
    let c = Client::connected(mqtt_options(d, node.mqtt)).await?;
    f.wait_status(0, "online").await?;
    c.disconnect().await;
    f.wait_status(0, "offline").await?;

    let alarm = wait_alarm(node, pk).await?;
    assert_eq!(alarm["alarmType"], "offline-too-long", "{alarm}");
    assert_eq!(alarm["deviceName"], d.device_name, "{alarm}");
    assert_eq!(alarm["ruleId"], "lamp-offline", "{alarm}");

    // Back online: the outage is over and the alarm is cleared by the rule.
    let _c = Client::connected(mqtt_options(d, node.mqtt)).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = node
            .expect(
                Method::GET,
                &format!("/api/v1/alarms/{}", alarm["id"]),
                None,
                200,
            )
            .await?;
        if a["state"] == "cleared" {
            assert_eq!(a["clearedBy"], "rule:lamp-offline", "{a}");
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "alarm not cleared: {a}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
