//! Platform events reach plugins through the real binary: a device crosses a rule's threshold,
//! the alarm it raises reaches an `event-handler` plugin, which raises one event through its
//! `event` host interface (and moves it to processing) and returns a `create-event` action for
//! another; both land in the event center with the plugin as their source. A handler bound to
//! another product is not told. (A suspended plugin's operator alarm is tested in `plugins.rs`.)

use std::time::{Duration, Instant};

use lotus_e2e::{Fixture, sys, upload_plugin};
use lotus_plugin_artifacts as artifacts;
use lotus_test_harness::device::mqtt_options;
use lotus_test_harness::mqtt::Client;
use lotus_test_harness::node::LotusNode;
use reqwest::Method;
use rumqttc::QoS;
use serde_json::{Value, json};

/// Polls `path` until `found` picks something from its answer (10 s).
async fn wait_for(
    node: &LotusNode,
    path: &str,
    found: impl Fn(&Value) -> Option<Value>,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = node.expect(Method::GET, path, None, 200).await?;
        if let Some(v) = found(&answer) {
            return Ok(v);
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "nothing at {path} within 10 s: {answer}\nlog:\n{}",
                node.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn event_of_type(list: &Value, code: &str) -> Option<Value> {
    list["items"]
        .as_array()?
        .iter()
        .find(|e| e["type"] == code || e["typeCode"] == code)
        .cloned()
}

/// A node with the `relay` event handler installed for `bound_to`, the event types it raises,
/// and a rule that raises an `over-current` alarm; one device has posted a current over the
/// limit, so the alarm is raised.
async fn relay_scenario(bound_to: Option<&str>) -> anyhow::Result<Fixture> {
    let f = Fixture::start(1).await?;
    let (node, pk, d) = (&f.node, f.product_key.clone(), &f.devices[0]);
    for code in ["relay.raised", "relay.followup"] {
        node.expect(
            Method::PUT,
            &format!("/api/v1/event-types/{code}"),
            Some(json!({"code": code, "name": code, "defaultLevel": 4,
                "fields": [{"name": "alarmId", "label": "Alarm", "kind": "string"}]})),
            201,
        )
        .await?;
    }
    let manifest = format!(
        "id = \"relay\"\nversion = \"0.1.0\"\nworld = \"event-handler\"\n\
         capabilities = [\"log\", \"event\"]\nproducts = [\"{}\"]\n",
        bound_to.unwrap_or(&pk)
    );
    let (status, body) = upload_plugin(
        node,
        Method::POST,
        "/api/v1/plugins",
        &manifest,
        "wasm",
        std::fs::read(artifacts::RELAY_EVENT_HANDLER)?,
    )
    .await?;
    assert_eq!(status, 201, "{body}");
    node.expect(
        Method::POST,
        "/api/v1/rules",
        Some(json!({"id": "over-current", "name": "Lamp over-current", "definition": {
            "trigger": {"kind": "sql", "sql": format!(
                "SELECT items.Current.value AS current FROM '/sys/{pk}/+/thing/event/property/post' WHERE items.Current.value > 10"
            )},
            "actions": [{"kind": "alarm", "alarmType": "over-current", "level": 2,
                "message": "current {{ data.current }} A"}]
        }})),
        201,
    )
    .await?;
    let mut c = Client::connected(mqtt_options(d, node.mqtt)).await?;
    let reply = sys(d, "thing/event/property/post_reply");
    c.subscribe(&reply, QoS::AtLeastOnce).await?;
    let msg = json!({"id": "1", "version": "1.0", "params": {"Current": 12.5},
        "method": "thing.event.property.post"});
    c.publish(
        &sys(d, "thing/event/property/post"),
        QoS::AtLeastOnce,
        msg.to_string(),
    )
    .await?;
    assert_eq!(c.expect_json(&reply).await?["code"], 200);
    wait_for(
        node,
        &format!("/api/v1/alarms?productKey={pk}&state=active"),
        |l| l["items"].as_array()?.first().cloned(),
    )
    .await?;
    Ok(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_reaches_an_event_handler_whose_events_reach_the_event_center()
-> anyhow::Result<()> {
    let f = relay_scenario(None).await?;
    let (node, d) = (&f.node, &f.devices[0]);

    // Through the `event` host interface: created, then moved to processing by the plugin.
    let raised = wait_for(node, "/api/v1/events?type=relay.raised", |l| {
        event_of_type(l, "relay.raised").filter(|e| e["state"] == "processing")
    })
    .await?;
    let number = raised["number"].as_str().unwrap().to_string();
    let detail = node
        .expect(Method::GET, &format!("/api/v1/events/{number}"), None, 200)
        .await?;
    let text = detail.to_string();
    assert!(text.contains("plugin:relay"), "{detail}");
    assert!(text.contains("taken by relay-event-handler"), "{detail}");
    assert!(text.contains(&d.device_name), "{detail}");

    // Through the returned `create-event` action; its title is taken literally, not as a
    // template.
    let followup = wait_for(node, "/api/v1/events?type=relay.followup", |l| {
        event_of_type(l, "relay.followup")
    })
    .await?;
    assert_eq!(followup["level"], 3, "{followup}");
    assert_eq!(
        followup["title"],
        format!("follow-up of {number} {{{{ not a template }}}}"),
        "{followup}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_bound_to_another_product_is_not_told() -> anyhow::Result<()> {
    // Bound to another product: the alarm of this product's device is not its business.
    let f = relay_scenario(Some("someOtherProduct")).await?;
    // Give the dispatcher time, then check nothing was created.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let events = f
        .node
        .expect(Method::GET, "/api/v1/events", None, 200)
        .await?;
    assert_eq!(events["total"], 0, "{events}");
    Ok(())
}
