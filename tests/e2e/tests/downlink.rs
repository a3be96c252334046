//! Property set, synchronous (RRPC) and asynchronous service calls, and the shadow.

use std::time::Duration;

use lotus_e2e::{Fixture, sys};
use lotus_test_harness::device::mqtt_options;
use lotus_test_harness::mqtt::Client;
use reqwest::Method;
use rumqttc::QoS;
use serde_json::{Value, json};

async fn wait_message(f: &Fixture, id: &str, status: &str) -> anyhow::Result<Value> {
    let path = format!("{}/messages/{id}", f.device_path(0));
    for _ in 0..100 {
        let m = f.node.expect(Method::GET, &path, None, 200).await?;
        if m["status"] == status {
            return Ok(m);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("message {id} never reached {status}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn property_set_round_trip() -> anyhow::Result<()> {
    let f = Fixture::start(1).await?;
    let d = &f.devices[0];
    let set_path = format!("{}/properties:set", f.device_path(0));

    // Offline devices cannot be set.
    let p = f
        .node
        .expect(
            Method::POST,
            &set_path,
            Some(json!({"params": {"Brightness": 30}})),
            409,
        )
        .await?;
    assert!(p["detail"].as_str().unwrap().contains("not connected"));

    let mut c = Client::connected(mqtt_options(d, f.node.mqtt)).await?;
    let set_topic = sys(d, "thing/service/property/set");
    c.subscribe(&set_topic, QoS::AtLeastOnce).await?;
    f.wait_status(0, "online").await?;

    // Read-only and out-of-range values are refused before anything is sent.
    let p = f
        .node
        .expect(
            Method::POST,
            &set_path,
            Some(json!({"params": {"Current": 3.0}})),
            422,
        )
        .await?;
    assert!(p["detail"].as_str().unwrap().contains("Current"));
    f.node
        .expect(
            Method::POST,
            &set_path,
            Some(json!({"params": {"Brightness": 300}})),
            422,
        )
        .await?;

    let accepted = f
        .node
        .expect(
            Method::POST,
            &set_path,
            Some(json!({"params": {"Brightness": 30}})),
            202,
        )
        .await?;
    let id = accepted["messageId"].as_str().unwrap().to_string();
    let req = c.expect_json(&set_topic).await?;
    assert_eq!(req["id"], id.as_str());
    assert_eq!(req["method"], "thing.service.property.set");
    assert_eq!(req["params"]["Brightness"], 30);
    assert_eq!(
        wait_message(&f, &id, "sent").await?["params"]["Brightness"],
        30
    );

    let reply = json!({"id": id, "code": 200, "data": {}});
    c.publish(
        &sys(d, "thing/service/property/set_reply"),
        QoS::AtLeastOnce,
        reply.to_string(),
    )
    .await?;
    let m = wait_message(&f, &id, "replied").await?;
    assert_eq!(m["replyCode"], 200);
    let metrics = reqwest::get(format!("{}/metrics", f.node.http))
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("lotus_downlink_messages_total{class=\"property_set\"} 1"),
        "{metrics}"
    );
    c.disconnect().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_service_over_rrpc_and_async_service() -> anyhow::Result<()> {
    let f = Fixture::start(1).await?;
    let d = f.devices[0].clone();
    let mut c = Client::connected(mqtt_options(&d, f.node.mqtt)).await?;
    c.subscribe(&sys(&d, "rrpc/request/+"), QoS::AtLeastOnce)
        .await?;
    c.subscribe(&sys(&d, "thing/service/Calibrate"), QoS::AtLeastOnce)
        .await?;
    f.wait_status(0, "online").await?;

    // The device answers the synchronous call on the RRPC response topic.
    let responder = c.client.clone();
    let invoke = {
        let path = format!("{}/services/Reboot:invoke", f.device_path(0));
        let node_http = f.node.http.clone();
        let token = f.node.token.clone().unwrap();
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{node_http}{path}"))
                .bearer_auth(token)
                .json(&json!({"params": {"DelaySeconds": 5}, "timeoutMs": 5000}))
                .send()
                .await
        })
    };
    let (topic, body) = c.expect_publish_prefix(&sys(&d, "rrpc/request/")).await?;
    let message_id = topic.rsplit('/').next().unwrap().to_string();
    assert_eq!(body["method"], "thing.service.Reboot");
    assert_eq!(body["params"]["DelaySeconds"], 5);
    responder
        .publish(
            sys(&d, &format!("rrpc/response/{message_id}")),
            QoS::AtLeastOnce,
            false,
            json!({"id": body["id"], "code": 200, "data": {"Accepted": 1}}).to_string(),
        )
        .await?;
    let resp = invoke.await??;
    assert_eq!(resp.status(), 200);
    let out: Value = resp.json().await?;
    assert_eq!(out["code"], 200);
    assert_eq!(out["data"]["Accepted"], 1);

    // A device that does not answer: 504 with a clear message.
    let resp = f
        .node
        .expect(
            Method::POST,
            &format!("{}/services/Reboot:invoke", f.device_path(0)),
            Some(json!({"params": {"DelaySeconds": 1}, "timeoutMs": 300})),
            504,
        )
        .await?;
    assert!(resp["detail"].as_str().unwrap().contains("did not answer"));

    // Asynchronous: a message id now, the reply later.
    let accepted = f
        .node
        .expect(
            Method::POST,
            &format!("{}/services/Calibrate:invoke", f.device_path(0)),
            Some(json!({})),
            202,
        )
        .await?;
    let id = accepted["messageId"].as_str().unwrap().to_string();
    let req = c.expect_json(&sys(&d, "thing/service/Calibrate")).await?;
    assert_eq!(req["id"], id.as_str());
    c.publish(
        &sys(&d, "thing/service/Calibrate_reply"),
        QoS::AtLeastOnce,
        json!({"id": id, "code": 200, "data": {}}).to_string(),
    )
    .await?;
    let m = wait_message(&f, &id, "replied").await?;
    assert_eq!(m["method"], "thing.service.Calibrate");

    // Unknown services and bad input.
    f.node
        .expect(
            Method::POST,
            &format!("{}/services/Fly:invoke", f.device_path(0)),
            Some(json!({})),
            404,
        )
        .await?;
    f.node
        .expect(
            Method::POST,
            &format!("{}/services/Reboot:invoke", f.device_path(0)),
            Some(json!({"params": {"DelaySeconds": 100}})),
            422,
        )
        .await?;
    c.disconnect().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_delta_reaches_a_reconnecting_device() -> anyhow::Result<()> {
    let f = Fixture::start(1).await?;
    let d = &f.devices[0];
    let shadow = format!("{}/shadow", f.device_path(0));
    let get_topic = format!("/shadow/get/{}/{}", d.product_key, d.device_name);
    let update_topic = format!("/shadow/update/{}/{}", d.product_key, d.device_name);

    // The device reports its state.
    let mut c = Client::connected(mqtt_options(d, f.node.mqtt)).await?;
    c.subscribe(&get_topic, QoS::AtLeastOnce).await?;
    let report = json!({"method": "update", "state": {"reported": {"Brightness": 10, "Power": 1}}, "version": 1});
    c.publish(&update_topic, QoS::AtLeastOnce, report.to_string())
        .await?;
    let r = c.expect_json(&get_topic).await?;
    assert_eq!(r["payload"]["status"], "success", "{r}");
    // An old version is refused.
    c.publish(&update_topic, QoS::AtLeastOnce, report.to_string())
        .await?;
    let r = c.expect_json(&get_topic).await?;
    assert_eq!(r["payload"]["status"], "error");
    assert_eq!(r["payload"]["content"]["errorcode"], "409");
    c.disconnect().await;
    f.wait_status(0, "offline").await?;

    // While it is offline, the operator sets a desired value.
    let s = f
        .node
        .expect(
            Method::PUT,
            &shadow,
            Some(json!({"desired": {"Brightness": 80}})),
            200,
        )
        .await?;
    assert_eq!(s["delta"], json!({"Brightness": 80}));
    let version = s["version"].as_i64().unwrap();
    // A stale version is refused.
    f.node
        .expect(
            Method::PUT,
            &shadow,
            Some(json!({"desired": {"Brightness": 70}, "version": version - 1})),
            422,
        )
        .await?;

    // On reconnect (subscribing to its shadow topic) the device receives the delta.
    let mut c = Client::connected(mqtt_options(d, f.node.mqtt)).await?;
    c.subscribe(&get_topic, QoS::AtLeastOnce).await?;
    let control = c.expect_json(&get_topic).await?;
    assert_eq!(control["method"], "control");
    assert_eq!(
        control["payload"]["state"]["delta"],
        json!({"Brightness": 80})
    );

    // And asking with get returns it too.
    c.publish(
        &update_topic,
        QoS::AtLeastOnce,
        json!({"method": "get"}).to_string(),
    )
    .await?;
    let got = c.expect_json(&get_topic).await?;
    assert_eq!(got["payload"]["state"]["delta"], json!({"Brightness": 80}));
    assert_eq!(got["payload"]["state"]["reported"]["Power"], 1);

    // Once the device reports the desired value, the delta is empty.
    let report = json!({"method": "update", "state": {"reported": {"Brightness": 80}}, "version": version + 1});
    c.publish(&update_topic, QoS::AtLeastOnce, report.to_string())
        .await?;
    assert_eq!(
        c.expect_json(&get_topic).await?["payload"]["status"],
        "success"
    );
    let s = f.node.expect(Method::GET, &shadow, None, 200).await?;
    assert_eq!(s["delta"], json!({}));
    assert_eq!(s["reported"]["Brightness"], 80);
    c.disconnect().await;
    Ok(())
}
