//! The event center through the real binary: an event reported in one district is dispatched
//! by its YAML workflow to that district's dispatcher only (task and message), the other
//! district's dispatcher can neither see nor act on it, approval closes the event with a
//! timeline; repeated reports nearby merge; statistics count by type; invalid workflows are
//! refused with every problem named; messages are only ever the caller's own; the `lotus
//! event` / `lotus task` commands reach the same API; and a step past its deadline is escalated
//! to the person the workflow names, who can then close it.

use lotus_test_harness::node::{LotusNode, NodeOptions};
use reqwest::Method;
use serde_json::{Value, json};

use lotus_e2e::{Session, create_user as user};

/// POSTs a workflow as YAML; the status and the answer.
async fn post_yaml_workflow(node: &LotusNode, yaml: &str) -> anyhow::Result<(u16, Value)> {
    let resp = node
        .client
        .post(format!("{}/api/v1/workflows", node.http))
        .bearer_auth(node.token.as_deref().unwrap())
        .header("content-type", "application/yaml")
        .body(yaml.to_string())
        .send()
        .await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// Runs `lotus <args>` against the node with `token`; its standard output as JSON.
fn cli(node: &LotusNode, token: &str, args: &[&str]) -> anyhow::Result<Value> {
    let out = std::process::Command::new(lotus_test_harness::node::binary())
        .args(args)
        .env("LOTUS_URL", &node.http)
        .env("LOTUS_TOKEN", token)
        .env("HOME", &node.data_dir)
        .env_remove("XDG_CONFIG_HOME")
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "lotus {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

const DISPATCH_YAML: &str = "\
id: manhole-dispatch
name: Manhole cover opened
version: 1
appliesTo: { eventType: manhole.cover_open }
start: dispatch
steps:
  - id: dispatch
    name: District dispatcher sends a patrol
    assignee: { role: dispatcher, region: event }
    deadlineSecs: 3600
    next: end
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_dispatched_to_their_district_and_closed_by_approval() -> anyhow::Result<()> {
    let mut node = LotusNode::start(NodeOptions::default()).await?;
    node.login().await?;

    let ty =
        json!({"code": "manhole.cover_open", "name": "Manhole cover opened", "defaultLevel": 3});
    node.expect(
        Method::PUT,
        "/api/v1/event-types/manhole.cover_open",
        Some(ty.clone()),
        201,
    )
    .await?;
    node.expect(
        Method::PUT,
        "/api/v1/event-types/manhole.cover_open",
        Some(ty),
        200,
    )
    .await?;
    let mismatch = json!({"code": "other", "name": "x", "defaultLevel": 3});
    let (status, body) = node
        .api(
            Method::PUT,
            "/api/v1/event-types/manhole.cover_open",
            Some(mismatch),
        )
        .await?;
    assert_eq!(status, 422, "{body}");

    let (status, wf) = post_yaml_workflow(&node, DISPATCH_YAML).await?;
    assert_eq!(status, 201, "{wf}");
    assert_eq!(wf["id"], "manhole-dispatch");
    assert_eq!(wf["version"], 1);
    assert_eq!(wf["enabled"], true);

    user(&node, "disp-xihu", &["dispatcher"], "/hz/xihu").await?;
    user(&node, "disp-binjiang", &["dispatcher"], "/hz/binjiang").await?;
    let xihu = Session::login(&node, "disp-xihu").await?;
    let binjiang = Session::login(&node, "disp-binjiang").await?;

    let reported = node
        .expect(
            Method::POST,
            "/api/v1/events",
            Some(json!({
                "type": "manhole.cover_open", "title": "Cover open at Lingyin Rd",
                "region": "/hz/xihu/lingyin", "location": {"lat": 30.2431, "lon": 120.1012},
            })),
            201,
        )
        .await?;
    assert_eq!(reported["outcome"], "created", "{reported}");
    assert_eq!(reported["workflow"], "manhole-dispatch", "{reported}");
    let event_id = reported["event"].as_i64().unwrap();
    let number = reported["number"].as_str().unwrap().to_string();
    assert!(number.starts_with('E'), "{number}");

    // The xihu dispatcher has the task and was told about it.
    let tasks = xihu
        .expect(Method::GET, "/api/v1/tasks?state=open", None, 200)
        .await?;
    let items = tasks["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{tasks}");
    assert_eq!(items[0]["eventId"], event_id);
    assert_eq!(items[0]["assignee"]["kind"], "role");
    assert_eq!(items[0]["assignee"]["region"], "/hz/xihu/lingyin");
    let task_id = items[0]["id"].as_str().unwrap().to_string();
    xihu.expect(Method::GET, &format!("/api/v1/tasks/{task_id}"), None, 200)
        .await?;
    let messages = xihu
        .expect(Method::GET, "/api/v1/messages", None, 200)
        .await?;
    assert_eq!(messages["unread"], 1, "{messages}");
    assert_eq!(
        messages["items"][0]["link"],
        format!("task:{task_id}"),
        "{messages}"
    );
    let message_id = messages["items"][0]["id"].as_i64().unwrap();
    xihu.expect(
        Method::GET,
        &format!("/api/v1/events/{event_id}"),
        None,
        200,
    )
    .await?;

    // The binjiang dispatcher sees none of it and cannot act.
    let theirs = binjiang
        .expect(Method::GET, "/api/v1/tasks", None, 200)
        .await?;
    assert_eq!(theirs["items"], json!([]), "{theirs}");
    assert_eq!(theirs["total"], 0);
    let theirs = binjiang
        .expect(Method::GET, "/api/v1/messages", None, 200)
        .await?;
    assert_eq!(theirs["items"], json!([]), "{theirs}");
    let listed = binjiang
        .expect(Method::GET, "/api/v1/events", None, 200)
        .await?;
    assert_eq!(listed["items"], json!([]), "{listed}");
    binjiang
        .expect(
            Method::GET,
            &format!("/api/v1/events/{event_id}"),
            None,
            403,
        )
        .await?;
    binjiang
        .expect(Method::GET, &format!("/api/v1/events/{number}"), None, 403)
        .await?;
    binjiang
        .expect(Method::GET, &format!("/api/v1/tasks/{task_id}"), None, 403)
        .await?;
    binjiang
        .expect(
            Method::POST,
            &format!("/api/v1/tasks/{task_id}/actions"),
            Some(json!({"action": "approve"})),
            403,
        )
        .await?;
    // Nor may they report into another district.
    binjiang
        .expect(
            Method::POST,
            "/api/v1/events",
            Some(json!({"type": "manhole.cover_open", "title": "x", "region": "/hz/xihu"})),
            403,
        )
        .await?;

    // A rejection needs its reason.
    xihu.expect(
        Method::POST,
        &format!("/api/v1/tasks/{task_id}/actions"),
        Some(json!({"action": "reject"})),
        422,
    )
    .await?;

    // The CLI lists the same task for the same user.
    let listed = cli(&node, &xihu.token, &["task", "list"])?;
    assert_eq!(listed["items"][0]["id"], task_id.as_str(), "{listed}");

    let done = xihu
        .expect(
            Method::POST,
            &format!("/api/v1/tasks/{task_id}/actions"),
            Some(json!({"action": "approve", "comment": "patrol replaced the cover"})),
            200,
        )
        .await?;
    assert_eq!(done["state"], "approved", "{done}");
    assert_eq!(done["closedBy"], "disp-xihu", "{done}");
    let (status, again) = xihu
        .call(
            Method::POST,
            &format!("/api/v1/tasks/{task_id}/actions"),
            Some(json!({"action": "approve"})),
        )
        .await?;
    assert!(status == 409 || status == 422, "{status} {again}");

    let detail = node
        .expect(
            Method::GET,
            &format!("/api/v1/events/{event_id}"),
            None,
            200,
        )
        .await?;
    assert_eq!(detail["state"], "closed", "{detail}");
    assert_eq!(detail["outcome"], "resolved", "{detail}");
    assert!(detail["closedAt"].is_i64(), "{detail}");
    let actions: Vec<&str> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for expected in [
        "created",
        "workflow_started",
        "task_created",
        "task_closed",
        "closed",
    ] {
        assert!(
            actions.contains(&expected),
            "{expected} missing from {actions:?}"
        );
    }
    assert_eq!(detail["tasks"][0]["state"], "approved", "{detail}");
    assert_eq!(detail["workflow"]["state"], "completed", "{detail}");
    assert!(
        !detail["workflow"]["trail"].as_array().unwrap().is_empty(),
        "{detail}"
    );
    let open = xihu
        .expect(Method::GET, "/api/v1/tasks?state=open", None, 200)
        .await?;
    assert_eq!(open["total"], 0, "{open}");

    // Messages: others' ids change nothing; the owner marks and deletes.
    let changed = binjiang
        .expect(
            Method::POST,
            "/api/v1/messages/read",
            Some(json!({"ids": [message_id]})),
            200,
        )
        .await?;
    assert_eq!(changed["changed"], 0);
    let changed = binjiang
        .expect(
            Method::POST,
            "/api/v1/messages/delete",
            Some(json!({"ids": [message_id]})),
            200,
        )
        .await?;
    assert_eq!(changed["changed"], 0);
    let still = xihu
        .expect(Method::GET, "/api/v1/messages?unread=true", None, 200)
        .await?;
    assert_eq!(still["total"], 1, "{still}");
    xihu.expect(
        Method::POST,
        "/api/v1/messages/read",
        Some(json!({"ids": [], "all": true})),
        422,
    )
    .await?;
    let changed = xihu
        .expect(
            Method::POST,
            "/api/v1/messages/read",
            Some(json!({"ids": [message_id]})),
            200,
        )
        .await?;
    assert_eq!(changed["changed"], 1);
    let read = xihu
        .expect(Method::GET, "/api/v1/messages", None, 200)
        .await?;
    assert_eq!(read["unread"], 0, "{read}");
    assert!(read["items"][0]["readAt"].is_i64(), "{read}");
    let changed = xihu
        .expect(
            Method::POST,
            "/api/v1/messages/delete",
            Some(json!({"ids": [message_id]})),
            200,
        )
        .await?;
    assert_eq!(changed["changed"], 1);
    let gone = xihu
        .expect(Method::GET, "/api/v1/messages", None, 200)
        .await?;
    assert_eq!(gone["total"], 0, "{gone}");

    // Disabling the workflow leaves later events undispatched.
    node.expect(
        Method::POST,
        "/api/v1/workflows/manhole-dispatch/disable",
        None,
        200,
    )
    .await?;
    let later = node
        .expect(
            Method::POST,
            "/api/v1/events",
            Some(json!({"type": "manhole.cover_open", "title": "Cover open again", "region": "/hz/xihu"})),
            201,
        )
        .await?;
    assert_eq!(later["outcome"], "created");
    assert!(later.get("workflow").is_none(), "{later}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_merge_statistics_count_and_bad_workflows_are_named() -> anyhow::Result<()> {
    let mut node = LotusNode::start(NodeOptions::default()).await?;
    node.login().await?;

    node.expect(
        Method::PUT,
        "/api/v1/event-types/water.leak",
        Some(
            json!({"code": "water.leak", "name": "Water leak", "defaultLevel": 3,
            "merge": {"windowSecs": 600, "radiusMeters": 200}}),
        ),
        201,
    )
    .await?;
    node.expect(
        Method::PUT,
        "/api/v1/event-types/light.out",
        Some(json!({"code": "light.out", "name": "Street light out", "defaultLevel": 4, "autoClose": 4})),
        201,
    )
    .await?;
    let (status, body) = node
        .api(
            Method::PUT,
            "/api/v1/event-types/bad",
            Some(json!({"code": "bad", "name": "", "defaultLevel": 3,
                "merge": {"windowSecs": 0, "radiusMeters": -1}})),
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["errors"].as_array().is_some_and(|e| !e.is_empty()),
        "{body}"
    );

    // Two reports 50 m apart (0.00045° of latitude) within the window are one event.
    let first = node
        .expect(
            Method::POST,
            "/api/v1/events",
            Some(
                json!({"type": "water.leak", "title": "Leak at Wensan Rd", "region": "/hz/xihu",
                "location": {"lat": 30.27800, "lon": 120.13000}}),
            ),
            201,
        )
        .await?;
    assert_eq!(first["outcome"], "created", "{first}");
    let second = node
        .expect(
            Method::POST,
            "/api/v1/events",
            Some(
                json!({"type": "water.leak", "title": "Water on the road", "region": "/hz/xihu",
                "location": {"lat": 30.27845, "lon": 120.13000}}),
            ),
            201,
        )
        .await?;
    assert_eq!(second["outcome"], "merged", "{second}");
    assert_eq!(second["event"], first["event"]);
    let far = node
        .expect(
            Method::POST,
            "/api/v1/events",
            Some(
                json!({"type": "water.leak", "title": "Leak far away", "region": "/hz/xihu",
                "location": {"lat": 30.30000, "lon": 120.13000}}),
            ),
            201,
        )
        .await?;
    assert_eq!(far["outcome"], "created", "{far}");
    let merged = node
        .expect(
            Method::GET,
            &format!("/api/v1/events/{}", first["event"]),
            None,
            200,
        )
        .await?;
    assert_eq!(merged["mergedCount"], 1, "{merged}");

    for title in ["Light 17 out", "Light 18 out"] {
        let out = node
            .expect(
                Method::POST,
                "/api/v1/events",
                Some(json!({"type": "light.out", "title": title, "region": "/hz/binjiang"})),
                201,
            )
            .await?;
        assert_eq!(out["outcome"], "autoClosed", "{out}");
    }

    let stats = node
        .expect(Method::GET, "/api/v1/events/stats?groupBy=type", None, 200)
        .await?;
    assert_eq!(
        stats["groups"],
        json!([{"key": "light.out", "count": 2}, {"key": "water.leak", "count": 2}]),
        "{stats}"
    );
    assert_eq!(stats["timeToClose"]["count"], 2, "{stats}");
    assert_eq!(stats["timeToClose"]["p50"], 0, "{stats}");
    let by_state = node
        .expect(
            Method::GET,
            "/api/v1/events/stats?groupBy=state&region=/hz/xihu",
            None,
            200,
        )
        .await?;
    assert_eq!(
        by_state["groups"],
        json!([{"key": "new", "count": 2}]),
        "{by_state}"
    );
    node.expect(
        Method::GET,
        "/api/v1/events/stats?groupBy=colour",
        None,
        400,
    )
    .await?;

    let search = node
        .expect(
            Method::GET,
            "/api/v1/events?type=water.leak&title=FAR",
            None,
            200,
        )
        .await?;
    assert_eq!(search["total"], 1, "{search}");
    assert_eq!(search["items"][0]["id"], far["event"], "{search}");

    // The CLI counts the same.
    let token = node.token.clone().unwrap();
    let cli_stats = cli(&node, &token, &["event", "stats", "--group-by", "type"])?;
    assert_eq!(cli_stats["groups"], stats["groups"]);

    // An unknown event type says how to create it.
    let (status, body) = node
        .api(
            Method::POST,
            "/api/v1/events",
            Some(json!({"type": "no.such", "title": "x"})),
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("PUT /api/v1/event-types/no.such"),
        "{body}"
    );

    // A workflow with mistakes: every one is named, with its step and field.
    let bad = "\
id: leak-dispatch
name: Leak dispatch
version: 1
appliesTo: { eventType: water.leak }
start: check
steps:
  - id: check
    name: Check the leak
    assignee: { role: dispatcher }
    next: nowhere
";
    let (status, body) = post_yaml_workflow(&node, bad).await?;
    assert_eq!(status, 422, "{body}");
    let errors = body["errors"].as_array().expect("errors listed");
    assert!(
        errors
            .iter()
            .any(|e| e["step"] == "check" && e["field"] == "next"),
        "{body}"
    );
    assert!(
        body["detail"].as_str().unwrap().contains("step `check`"),
        "{body}"
    );
    let (status, body) = post_yaml_workflow(&node, "id: [unclosed").await?;
    assert_eq!(status, 422, "{body}");
    let (status, body) = post_yaml_workflow(
        &node,
        &DISPATCH_YAML.replace("manhole.cover_open", "no.such"),
    )
    .await?;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("appliesTo.eventType"),
        "{body}"
    );
    node.expect(Method::GET, "/api/v1/workflows/leak-dispatch", None, 404)
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notification_settings_keep_secrets_and_check_what_they_store() -> anyhow::Result<()> {
    let mut node = LotusNode::start(NodeOptions::default()).await?;
    node.login().await?;

    let smtp = json!({"kind": "email", "config": {"host": "smtp.example.org", "port": 587,
        "username": "lotus", "from": "Lotus <alerts@example.org>"}, "secret": "s3cret-password"});
    let ch = node
        .expect(Method::PUT, "/api/v1/channels/mail", Some(smtp), 201)
        .await?;
    assert_eq!(ch["hasSecret"], true, "{ch}");
    assert!(!ch.to_string().contains("s3cret-password"), "{ch}");
    // Replacing without a secret keeps the stored one.
    let again = json!({"kind": "email", "config": {"host": "smtp2.example.org", "port": 587,
        "username": "lotus", "from": "alerts@example.org"}});
    let ch = node
        .expect(Method::PUT, "/api/v1/channels/mail", Some(again), 200)
        .await?;
    assert_eq!(ch["hasSecret"], true, "{ch}");
    let listed = node
        .expect(Method::GET, "/api/v1/channels", None, 200)
        .await?;
    assert!(!listed.to_string().contains("s3cret-password"), "{listed}");
    let (status, body) = node
        .api(
            Method::PUT,
            "/api/v1/channels/mail2",
            Some(
                json!({"kind": "email", "config": {"host": "smtp.example.org", "port": 587,
                "from": "a@example.org", "password": "inline"}}),
            ),
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    let (status, body) = node
        .api(
            Method::PUT,
            "/api/v1/channels/sms",
            Some(json!({"kind": "sms"})),
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("pluginId"),
        "{body}"
    );
    node.expect(Method::DELETE, "/api/v1/channels/mail", None, 204)
        .await?;
    node.expect(Method::GET, "/api/v1/channels/mail", None, 404)
        .await?;

    node.expect(
        Method::PUT,
        "/api/v1/templates/event-new",
        Some(json!({"subject": "Event {{ event.number }}", "body": "{{ event.title }}"})),
        201,
    )
    .await?;
    let (status, body) = node
        .api(
            Method::PUT,
            "/api/v1/templates/broken",
            Some(json!({"subject": "Event {{ event.number", "body": ""})),
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    node.expect(Method::GET, "/api/v1/templates/broken", None, 404)
        .await?;

    let deliveries = node
        .expect(Method::GET, "/api/v1/deliveries?state=dead", None, 200)
        .await?;
    assert_eq!(deliveries["total"], 0, "{deliveries}");
    node.expect(Method::GET, "/api/v1/deliveries?state=lost", None, 400)
        .await?;

    let prefs = node
        .expect(Method::GET, "/api/v1/me/preferences", None, 200)
        .await?;
    assert!(prefs["channels"].as_array().is_some(), "{prefs}");
    node.expect(
        Method::PUT,
        "/api/v1/me/preferences",
        Some(json!({"channels": ["inapp", "sms"], "minLevel": 2,
            "quietHours": {"start": "22:00", "end": "07:00", "utcOffsetMinutes": 480}})),
        200,
    )
    .await?;
    let prefs = node
        .expect(Method::GET, "/api/v1/me/preferences", None, 200)
        .await?;
    assert_eq!(prefs["minLevel"], 2, "{prefs}");
    let (status, body) = node
        .api(
            Method::PUT,
            "/api/v1/me/preferences",
            Some(json!({"minLevel": 9})),
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("minLevel"),
        "{body}"
    );
    Ok(())
}

const ESCALATING_YAML: &str = "\
id: manhole-escalating
name: Manhole cover opened, escalated when late
version: 1
appliesTo: { eventType: manhole.cover_open }
start: dispatch
steps:
  - id: dispatch
    name: District dispatcher sends a patrol
    assignee: { role: dispatcher, region: event }
    deadlineSecs: 1
    escalation: { to: { user: chief-hz }, notify: true }
    next: end
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_past_its_deadline_is_escalated_and_the_escalation_can_close_it()
-> anyhow::Result<()> {
    let mut node = LotusNode::start(NodeOptions::default()).await?;
    node.login().await?;
    node.expect(
        Method::PUT,
        "/api/v1/event-types/manhole.cover_open",
        Some(json!({"code": "manhole.cover_open", "name": "Manhole cover opened", "defaultLevel": 3})),
        201,
    )
    .await?;
    let (status, wf) = post_yaml_workflow(&node, ESCALATING_YAML).await?;
    assert_eq!(status, 201, "{wf}");
    user(&node, "disp-xihu", &["dispatcher"], "/hz/xihu").await?;
    // Not a dispatcher: the step's role task is not theirs until it is escalated to them.
    node.expect(
        Method::POST,
        "/api/v1/roles",
        Some(
            json!({"name": "chief", "description": "District chief: decides escalated events",
                    "permissions": ["event.read", "event.write"]}),
        ),
        201,
    )
    .await?;
    user(&node, "chief-hz", &["chief"], "/hz").await?;
    let xihu = Session::login(&node, "disp-xihu").await?;
    let chief = Session::login(&node, "chief-hz").await?;

    let reported = node
        .expect(
            Method::POST,
            "/api/v1/events",
            Some(
                json!({"type": "manhole.cover_open", "title": "Cover open at Lingyin Rd",
                "region": "/hz/xihu/lingyin"}),
            ),
            201,
        )
        .await?;
    let event_id = reported["event"].as_i64().unwrap();

    // Nobody acts within the second: the chief gets a task for the same step, and a message.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let escalated = loop {
        let tasks = chief
            .expect(Method::GET, "/api/v1/tasks?state=open", None, 200)
            .await?;
        if let Some(t) = tasks["items"].as_array().and_then(|a| a.first()) {
            break t.clone();
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no escalation within 15 s; log:\n{}",
            node.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(escalated["eventId"], event_id, "{escalated}");
    let messages = chief
        .expect(Method::GET, "/api/v1/messages", None, 200)
        .await?;
    assert!(
        messages["unread"].as_i64().unwrap() >= 1,
        "the chief is told: {messages}"
    );
    // The dispatcher's task stays open, marked overdue.
    let theirs = xihu
        .expect(Method::GET, "/api/v1/tasks?state=open", None, 200)
        .await?;
    let original = &theirs["items"][0];
    assert_eq!(original["overdue"], true, "{theirs}");

    // The chief decides; the dispatcher's task is cancelled and the event closes.
    let escalated_id = escalated["id"].as_str().unwrap();
    chief
        .expect(
            Method::POST,
            &format!("/api/v1/tasks/{escalated_id}/actions"),
            Some(json!({"action": "approve", "comment": "sent the night patrol"})),
            200,
        )
        .await?;
    let original = xihu
        .expect(
            Method::GET,
            &format!("/api/v1/tasks/{}", original["id"].as_str().unwrap()),
            None,
            200,
        )
        .await?;
    assert_ne!(original["state"], "open", "{original}");
    let event = node
        .expect(
            Method::GET,
            &format!("/api/v1/events/{event_id}"),
            None,
            200,
        )
        .await?;
    assert_eq!(event["state"], "closed", "{event}");
    let trail = event.to_string();
    assert!(
        trail.contains("escalat"),
        "the timeline shows the escalation: {event}"
    );
    Ok(())
}
