//! The event operations center end to end, through the real binary: a device's property post
//! crosses a rule's threshold → alarm + event → disposal workflow → a task for the dispatcher of
//! the device's district (not another district's) → approve → event closed; a repeat merges
//! into the open event; a webhook that fails is retried until it succeeds, one that keeps
//! failing is dead-lettered; an e-mail reaches a real local SMTP server; a cron rule fires.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use lotus_e2e::receiver::Receiver;
use lotus_e2e::{Session, create_user, sys};
use lotus_test_harness::device::{DeviceCredentials, mqtt_options};
use lotus_test_harness::mqtt::Client;
use lotus_test_harness::node::{LotusNode, NodeOptions};
use reqwest::Method;
use rumqttc::QoS;
use serde_json::{Value, json};
use sha2::Sha256;

/// Each request a receiver got: its lower-cased head and its body.
/// Debian's aiosmtpd on a free loopback port, writing each message it accepts to a file.
struct SmtpServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl SmtpServer {
    fn start() -> anyhow::Result<SmtpServer> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let script = r#"
import os, sys, time
from aiosmtpd.controller import Controller
out = sys.argv[2]
class Keep:
    async def handle_DATA(self, server, session, envelope):
        name = os.path.join(out, "%d.eml" % len(os.listdir(out)))
        with open(name + ".tmp", "wb") as f:
            f.write(envelope.content)
        os.rename(name + ".tmp", name)
        return "250 OK"
c = Controller(Keep(), hostname="127.0.0.1", port=int(sys.argv[1]))
c.start()
while True:
    time.sleep(3600)
"#;
        // Debian's python3 has aiosmtpd (`apt-get install python3-aiosmtpd`, done by the test
        // command); a python3 earlier on PATH may not.
        let python = ["/usr/bin/python3", "python3"]
            .into_iter()
            .find(|p| {
                Command::new(p)
                    .args(["-c", "import aiosmtpd"])
                    .status()
                    .is_ok_and(|s| s.success())
            })
            .ok_or_else(|| {
                anyhow::anyhow!("no python3 with aiosmtpd: apt-get install python3-aiosmtpd")
            })?;
        let child = Command::new(python)
            .args(["-c", script, &port.to_string()])
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "aiosmtpd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(SmtpServer { child, port, dir })
    }

    fn messages(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e == "eml"));
        files.sort();
        files.iter().map(|p: &PathBuf| read(p)).collect()
    }
}

fn read(p: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned()
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it returns `Some` (bounded).
async fn eventually<T, F, Fut>(what: &str, secs: u64, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const WORKFLOW: &str = r#"
id: pressure-dispatch
name: Low water pressure
version: 1
appliesTo: { eventType: water.pressure_low }
start: dispatch
steps:
  - id: dispatch
    name: District dispatcher sends a crew
    assignee: { role: dispatcher }
    deadlineSecs: 3600
    next: end
"#;

async fn device(
    node: &LotusNode,
    pk: &str,
    name: &str,
    region: &str,
) -> anyhow::Result<DeviceCredentials> {
    let d = node
        .expect(
            Method::POST,
            &format!("/api/v1/products/{pk}/devices"),
            Some(json!({"deviceName": name, "region": region})),
            201,
        )
        .await?;
    Ok(DeviceCredentials {
        product_key: pk.to_string(),
        device_name: name.to_string(),
        device_secret: d["deviceSecret"].as_str().unwrap().to_string(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threshold_to_alarm_event_workflow_task_and_closure() -> anyhow::Result<()> {
    let smtp = SmtpServer::start()?;
    let flaky = Receiver::start(vec![500, 503, 200]).await?;
    let down = Receiver::start(vec![503]).await?;
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
            Some(json!({"name": "Water mains", "nodeType": "direct", "dataFormat": "alink", "region": "/hz"})),
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
    let pump = device(&node, &pk, "pump-7", "/hz/xihu/lingyin").await?;
    create_user(&node, "dispatch-xihu", &["dispatcher"], "/hz/xihu").await?;
    create_user(&node, "dispatch-binjiang", &["dispatcher"], "/hz/binjiang").await?;

    put(
        &node,
        "/api/v1/event-types/water.pressure_low",
        json!({"code": "water.pressure_low", "name": "Low water pressure", "description": "",
            "defaultLevel": 2, "fields": [], "merge": {"windowSecs": 600, "radiusMeters": 200}}),
    )
    .await?;
    let resp = node
        .client
        .post(format!("{}/api/v1/workflows", node.http))
        .bearer_auth(node.token.as_ref().unwrap())
        .header("content-type", "application/yaml")
        .body(WORKFLOW)
        .send()
        .await?;
    anyhow::ensure!(
        resp.status().as_u16() == 201,
        "workflow: {}",
        resp.text().await?
    );

    for (id, url) in [("hook-flaky", flaky.addr), ("hook-down", down.addr)] {
        put(
            &node,
            &format!("/api/v1/channels/{id}"),
            json!({"kind": "webhook", "config": {"url": format!("http://{url}/hook")}, "secret": "s3cret", "enabled": true}),
        )
        .await?;
    }
    put(
        &node,
        "/api/v1/channels/duty-mail",
        json!({"kind": "email", "enabled": true, "config": {"host": "127.0.0.1", "port": smtp.port,
            "security": "none", "from": "lotus@city.example"}}),
    )
    .await?;

    node.expect(
        Method::POST,
        "/api/v1/rules",
        Some(json!({
            "id": "pressure-low", "name": "Water pressure below 0.2 MPa",
            "definition": {
                "trigger": {"kind": "sql", "sql": "SELECT items.pressure.value AS p FROM '/sys/+/+/thing/event/property/post' WHERE items.pressure.value < 0.2"},
                "actions": [
                    {"kind": "alarm", "alarmType": "pressure-low", "level": 2, "message": "{{ data.p }} MPa at {{ device.deviceName }}"},
                    {"kind": "event", "eventType": "water.pressure_low", "title": "Low pressure at {{ device.deviceName }}"},
                    {"kind": "webhook", "channel": "hook-flaky"},
                    {"kind": "webhook", "channel": "hook-down"},
                    {"kind": "notify", "channel": "duty-mail", "to": ["mailto:duty@city.example"],
                     "subject": "泵站压力低: {{ device.deviceName }}", "body": "pressure {{ data.p }} MPa"}
                ]
            }
        })),
        201,
    )
    .await?;

    // The device posts a pressure below the threshold over MQTT.
    let mqtt = Client::connected(mqtt_options(&pump, node.mqtt)).await?;
    let post = |v: f64| json!({"id": "1", "version": "1.0", "params": {"pressure": v}, "method": "thing.event.property.post"});
    mqtt.publish(
        &sys(&pump, "thing/event/property/post"),
        QoS::AtLeastOnce,
        post(0.12).to_string(),
    )
    .await?;

    let alarm = eventually("the alarm", 10, || async {
        let a = node
            .expect(Method::GET, "/api/v1/alarms?state=active", None, 200)
            .await?;
        Ok(a["items"].as_array().and_then(|i| i.first()).cloned())
    })
    .await?;
    assert_eq!(alarm["deviceName"], "pump-7");
    assert_eq!(alarm["alarmType"], "pressure-low");
    assert_eq!(alarm["message"], "0.12 MPa at pump-7");

    let event = eventually("the event", 10, || async {
        let e = node
            .expect(Method::GET, "/api/v1/events", None, 200)
            .await?;
        // Listed as soon as it is stored; "processing" once its workflow has started.
        Ok(e["items"]
            .as_array()
            .and_then(|i| i.first())
            .filter(|e| e["state"] == "processing")
            .cloned())
    })
    .await?;
    assert_eq!(event["title"], "Low pressure at pump-7");
    assert_eq!(event["region"], "/hz/xihu/lingyin");
    assert_eq!(event["state"], "processing");
    let event_id = event["id"].to_string();

    // The task went to the dispatcher of the device's district only.
    let xihu = Session::login(&node, "dispatch-xihu").await?;
    let binjiang = Session::login(&node, "dispatch-binjiang").await?;
    // The task is created just after the event turns "processing".
    let task = eventually("the dispatcher's task", 10, || async {
        let tasks = xihu
            .expect(Method::GET, "/api/v1/tasks?state=open", None, 200)
            .await?;
        Ok(tasks["items"].as_array().and_then(|i| i.first()).cloned())
    })
    .await?;
    assert_eq!(task["stepId"], "dispatch", "{task}");
    let task_id = task["id"].as_str().unwrap().to_string();
    let (_, messages) = xihu.call(Method::GET, "/api/v1/messages", None).await?;
    assert!(messages["unread"].as_i64().unwrap_or(0) >= 1, "{messages}");
    let (_, other) = binjiang
        .call(Method::GET, "/api/v1/tasks?state=open", None)
        .await?;
    assert_eq!(other["items"].as_array().map(Vec::len), Some(0), "{other}");
    let (status, _) = binjiang
        .call(Method::GET, &format!("/api/v1/events/{event_id}"), None)
        .await?;
    assert_eq!(status, 403);
    let (status, _) = binjiang
        .call(
            Method::POST,
            &format!("/api/v1/tasks/{task_id}/actions"),
            Some(json!({"action": "approve"})),
        )
        .await?;
    assert_eq!(status, 403);

    // A second low reading: the alarm counts it, the event absorbs it.
    mqtt.publish(
        &sys(&pump, "thing/event/property/post"),
        QoS::AtLeastOnce,
        post(0.1).to_string(),
    )
    .await?;
    eventually("the merge", 10, || async {
        let e = node
            .expect(
                Method::GET,
                &format!("/api/v1/events/{event_id}"),
                None,
                200,
            )
            .await?;
        let merged = e["mergedCount"]
            .as_i64()
            .or(e["event"]["mergedCount"].as_i64());
        Ok((merged == Some(1)).then_some(()))
    })
    .await?;
    let alarms = node
        .expect(Method::GET, "/api/v1/alarms?state=active", None, 200)
        .await?;
    assert_eq!(alarms["items"].as_array().unwrap().len(), 1);
    assert_eq!(alarms["items"][0]["occurrences"], 2);

    // The flaky webhook was retried until it answered 200, signed every time.
    eventually("the webhook retries", 15, || async {
        Ok((flaky.count() >= 3).then_some(()))
    })
    .await?;
    {
        let reqs = flaky.requests.lock().unwrap();
        let (head, body) = &reqs[2];
        let sig = head
            .lines()
            .find_map(|l| l.strip_prefix("x-lotus-signature:"))
            .expect("signed")
            .trim()
            .to_string();
        let (t, v1) = sig.split_once(",v1=").unwrap();
        let t = t.strip_prefix("t=").unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        assert_eq!(v1, hex_encode(&mac.finalize().into_bytes()));
        let payload: Value = serde_json::from_slice(body)?;
        assert_eq!(payload["rule"], "pressure-low");
        assert_eq!(payload["device"]["deviceName"], "pump-7");
    }
    // The webhook that stays down ends as dead letters (one per firing), nothing dropped.
    let dead = eventually("the dead letters", 30, || async {
        let d = node
            .expect(
                Method::GET,
                "/api/v1/rule-dead-letters?ruleId=pressure-low",
                None,
                200,
            )
            .await?;
        let n = d["items"].as_array().map(Vec::len).unwrap_or(0);
        Ok((n == 2).then_some(d))
    })
    .await?;
    assert!(
        dead["items"][0]["lastError"]
            .as_str()
            .unwrap_or_default()
            .contains("503"),
        "{dead}"
    );
    assert_eq!(down.count(), 10, "5 attempts for each of the 2 firings");

    // The e-mail reached the SMTP server, Chinese subject intact.
    let mails = eventually("the e-mail", 10, || async {
        let m = smtp.messages();
        Ok((m.len() >= 2).then_some(m))
    })
    .await?;
    assert!(mails[0].contains("duty@city.example"), "{}", mails[0]);
    assert!(mails[0].contains("pressure 0.12 MPa"), "{}", mails[0]);

    // The dispatcher approves: the event closes as resolved, with its trail.
    let (status, acted) = xihu
        .call(
            Method::POST,
            &format!("/api/v1/tasks/{task_id}/actions"),
            Some(json!({"action": "approve", "comment": "crew fixed the valve"})),
        )
        .await?;
    assert_eq!(status, 200, "{acted}");
    let detail = node
        .expect(
            Method::GET,
            &format!("/api/v1/events/{event_id}"),
            None,
            200,
        )
        .await?;
    let ev = if detail["event"].is_object() {
        &detail["event"]
    } else {
        &detail
    };
    assert_eq!(ev["state"], "closed", "{detail}");
    assert_eq!(ev["outcome"], "resolved", "{detail}");
    let timeline = detail["timeline"].as_array().expect("a timeline");
    for action in ["created", "merged", "task_created", "task_closed", "closed"] {
        assert!(
            timeline.iter().any(|t| t["action"] == action),
            "{action} missing: {detail}"
        );
    }

    // Counters of the rule.
    let stats = node
        .expect(Method::GET, "/api/v1/rules/pressure-low/stats", None, 200)
        .await?;
    assert_eq!(stats["matched"], 2, "{stats}");
    mqtt.disconnect().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_rule_fires_on_schedule() -> anyhow::Result<()> {
    let mut node = LotusNode::start(NodeOptions::default()).await?;
    node.login().await?;
    node.expect(
        Method::POST,
        "/api/v1/rules",
        Some(json!({
            "id": "every-second", "name": "Heartbeat",
            "definition": {
                "trigger": {"kind": "schedule", "cron": "* * * * * *", "timeZone": "Asia/Shanghai"},
                "actions": [{"kind": "notify", "channel": "inapp", "to": ["user:admin"], "subject": "tick at {{ at }}"}]
            }
        })),
        201,
    )
    .await?;
    let messages = eventually("two cron firings", 10, || async {
        let m = node
            .expect(Method::GET, "/api/v1/messages", None, 200)
            .await?;
        let n = m["items"].as_array().map(Vec::len).unwrap_or(0);
        Ok((n >= 2).then_some(m))
    })
    .await?;
    assert!(
        messages["items"][0]["title"]
            .as_str()
            .unwrap()
            .starts_with("tick at ")
    );
    node.expect(
        Method::POST,
        "/api/v1/rules/every-second/disable",
        None,
        200,
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = node
        .expect(Method::GET, "/api/v1/messages", None, 200)
        .await?["total"]
        .clone();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = node
        .expect(Method::GET, "/api/v1/messages", None, 200)
        .await?["total"]
        .clone();
    assert_eq!(before, after, "a disabled schedule does not fire");
    Ok(())
}

/// A PUT that creates (201) or replaces (200).
async fn put(node: &LotusNode, path: &str, body: Value) -> anyhow::Result<Value> {
    let (status, v) = node.api(Method::PUT, path, Some(body)).await?;
    anyhow::ensure!(
        matches!(status.as_u16(), 200 | 201),
        "PUT {path}: {status} {v}"
    );
    Ok(v)
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_are_notified_at_their_own_address_as_their_preferences_allow() -> anyhow::Result<()>
{
    let smtp = SmtpServer::start()?;
    let mut node = LotusNode::start(NodeOptions::default()).await?;
    node.login().await?;
    for (name, email) in [
        ("chen", "chen@city.example"),
        ("quiet", "quiet@city.example"),
    ] {
        node.expect(
            Method::POST,
            "/api/v1/users",
            Some(
                json!({"username": name, "password": lotus_e2e::PASSWORD, "roles": ["operator"],
                "region": "/hz", "email": email}),
            ),
            201,
        )
        .await?;
    }
    // quiet wants nothing outside the app.
    let quiet = lotus_e2e::Session::login(&node, "quiet").await?;
    quiet
        .expect(
            Method::PUT,
            "/api/v1/me/preferences",
            Some(json!({"channels": ["inapp"]})),
            200,
        )
        .await?;
    put(
        &node,
        "/api/v1/channels/duty-mail",
        json!({"kind": "email", "enabled": true, "config": {"host": "127.0.0.1", "port": smtp.port,
            "security": "none", "from": "lotus@city.example"}}),
    )
    .await?;
    node.expect(
        Method::POST,
        "/api/v1/rules",
        Some(json!({"id": "shift-report", "name": "Shift report", "definition": {
            "trigger": {"kind": "schedule", "cron": "* * * * * *", "timeZone": "Asia/Shanghai"},
            "actions": [{"kind": "notify", "channel": "duty-mail", "to": ["user:chen", "user:quiet"],
                "subject": "Shift report", "body": "all quiet"}]
        }})),
        201,
    )
    .await?;

    let mails = eventually("the e-mail to chen", 15, || async {
        let m = smtp.messages();
        Ok((!m.is_empty()).then_some(m))
    })
    .await?;
    assert!(mails[0].contains("chen@city.example"), "{}", mails[0]);
    let messages = eventually("quiet's in-app message", 15, || async {
        let (_, m) = quiet.call(Method::GET, "/api/v1/messages", None).await?;
        Ok((m["unread"].as_i64().unwrap_or(0) >= 1).then_some(m))
    })
    .await?;
    assert_eq!(messages["items"][0]["title"], "Shift report", "{messages}");
    node.expect(
        Method::POST,
        "/api/v1/rules/shift-report/disable",
        None,
        200,
    )
    .await?;
    assert!(
        smtp.messages()
            .iter()
            .all(|m| !m.contains("quiet@city.example")),
        "quiet gets no e-mail"
    );
    Ok(())
}
