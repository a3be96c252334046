//! Gateways and sub-devices: topology signed by each sub-device's secret, sub-device sessions
//! on the gateway's connection, and a gateway that speaks only for its own sub-devices.

use std::time::Duration;

use lotus_e2e::{street_light_tsl, sys};
use lotus_model::alink::{SignMethod, connect_sign_content};
use lotus_test_harness::device::{DeviceCredentials, mqtt_options};
use lotus_test_harness::mqtt::Client;
use lotus_test_harness::node::{LotusNode, NodeOptions};
use reqwest::Method;
use rumqttc::{QoS, SubscribeReasonCode};
use serde_json::{Value, json};

async fn product(node: &LotusNode, node_type: &str) -> anyhow::Result<String> {
    let p = node
        .expect(
            Method::POST,
            "/api/v1/products",
            Some(json!({"name": format!("{node_type} product"), "nodeType": node_type, "dataFormat": "alink"})),
            201,
        )
        .await?;
    Ok(p["productKey"].as_str().unwrap().to_string())
}

async fn devices(
    node: &LotusNode,
    pk: &str,
    names: &[&str],
) -> anyhow::Result<Vec<DeviceCredentials>> {
    let out = node
        .expect(
            Method::POST,
            &format!("/api/v1/products/{pk}/devices:batch"),
            Some(json!({"deviceNames": names})),
            201,
        )
        .await?;
    Ok(out["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| DeviceCredentials {
            product_key: pk.to_string(),
            device_name: d["deviceName"].as_str().unwrap().to_string(),
            device_secret: d["deviceSecret"].as_str().unwrap().to_string(),
        })
        .collect())
}

/// A sub-device's signed identity, as the gateway forwards it.
fn signed(sub: &DeviceCredentials, secret: &str) -> Value {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    let client_id = format!("{}&{}", sub.device_name, sub.product_key);
    let sign = SignMethod::HmacSha256.sign(
        secret.as_bytes(),
        &connect_sign_content(&client_id, &sub.device_name, &sub.product_key, Some(&ts)),
    );
    json!({"productKey": sub.product_key, "deviceName": sub.device_name, "clientId": client_id,
           "timestamp": ts, "signmethod": "hmacsha256", "sign": sign})
}

async fn request(c: &mut Client, topic: &str, id: &str, params: Value) -> anyhow::Result<Value> {
    let body = json!({"id": id, "version": "1.0", "params": params});
    c.publish(topic, QoS::AtLeastOnce, body.to_string()).await?;
    c.expect_json(&format!("{topic}_reply")).await
}

async fn status_reasons(node: &LotusNode, d: &DeviceCredentials) -> anyhow::Result<Vec<String>> {
    let log = node
        .expect(
            Method::GET,
            &format!(
                "/api/v1/products/{}/devices/{}/status-log",
                d.product_key, d.device_name
            ),
            None,
            200,
        )
        .await?;
    Ok(log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap().to_string())
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_carries_only_its_own_logged_in_sub_devices() -> anyhow::Result<()> {
    let mut node = LotusNode::start(NodeOptions::default()).await?;
    node.login().await?;
    let gpk = product(&node, "gateway").await?;
    let spk = product(&node, "subdevice").await?;
    node.expect(
        Method::PUT,
        &format!("/api/v1/products/{spk}/thing-model"),
        Some(street_light_tsl()),
        200,
    )
    .await?;
    let gateways = devices(&node, &gpk, &["gw-north", "gw-south"]).await?;
    let subs = devices(&node, &spk, &["lora-0001", "lora-0002", "lora-0003"]).await?;
    let (g1, g2) = (&gateways[0], &gateways[1]);
    let (s1, s2, s3) = (&subs[0], &subs[1], &subs[2]);

    let mut gw = Client::connected(mqtt_options(g1, node.mqtt)).await?;
    for t in ["add", "delete", "get"] {
        gw.subscribe(&sys(g1, &format!("thing/topo/{t}_reply")), QoS::AtLeastOnce)
            .await?;
    }
    let session = format!("/ext/session/{gpk}/{}/combine", g1.device_name);
    for t in ["login", "logout"] {
        gw.subscribe(&format!("{session}/{t}_reply"), QoS::AtLeastOnce)
            .await?;
    }

    // A sub-device the gateway cannot sign for is refused, and nothing is attached.
    let add = sys(g1, "thing/topo/add");
    let r = request(
        &mut gw,
        &add,
        "1",
        json!([signed(s1, &s1.device_secret), signed(s3, "guessed")]),
    )
    .await?;
    assert_eq!(r["code"], 6403, "{r}");
    assert!(r["message"].as_str().unwrap().contains("params[1]"), "{r}");
    let r = request(&mut gw, &sys(g1, "thing/topo/get"), "2", json!({})).await?;
    assert_eq!(r["data"], json!([]), "{r}");

    let r = request(
        &mut gw,
        &add,
        "3",
        json!([signed(s1, &s1.device_secret), signed(s2, &s2.device_secret)]),
    )
    .await?;
    assert_eq!(r["code"], 200, "{r}");
    assert_eq!(r["data"].as_array().unwrap().len(), 2);

    // The gateway may subscribe to its sub-devices' topics; another gateway may not.
    let set = sys(s1, "thing/service/property/set");
    assert_eq!(
        gw.subscribe(&set, QoS::AtLeastOnce).await?,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );
    gw.subscribe(
        &sys(s1, "thing/event/property/post_reply"),
        QoS::AtLeastOnce,
    )
    .await?;
    let mut other = Client::connected(mqtt_options(g2, node.mqtt)).await?;
    assert_eq!(
        other.subscribe(&set, QoS::AtLeastOnce).await?,
        SubscribeReasonCode::Failure
    );
    assert_eq!(
        gw.subscribe(&sys(s3, "thing/service/property/set"), QoS::AtLeastOnce)
            .await?,
        SubscribeReasonCode::Failure
    );

    // Before login, the gateway cannot post for the sub-device.
    let post = sys(s1, "thing/event/property/post");
    gw.publish(
        &post,
        QoS::AtLeastOnce,
        json!({"id": "early", "params": {"Brightness": 1}}).to_string(),
    )
    .await?;
    gw.expect_no_publish(Duration::from_millis(300)).await?;

    // Login with the sub-device's signature; it is online while the gateway is.
    let r = request(
        &mut gw,
        &format!("{session}/login"),
        "4",
        signed(s1, &s1.device_secret),
    )
    .await?;
    assert_eq!(r["code"], 200, "{r}");
    let path = format!("/api/v1/products/{spk}/devices/{}", s1.device_name);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while node.expect(Method::GET, &path, None, 200).await?["status"] != "online" {
        anyhow::ensure!(std::time::Instant::now() < deadline, "s1 never came online");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Its data goes through the full pipeline under its own identity.
    let r = request(&mut gw, &post, "5", json!({"Brightness": 64})).await?;
    assert_eq!(r["code"], 200, "{r}");
    let r = request(&mut gw, &post, "6", json!({"Brightness": 640})).await?;
    assert_eq!(r["code"], 460, "{r}");
    // A device outside the topology stays out of reach.
    gw.publish(
        &sys(s3, "thing/event/property/post"),
        QoS::AtLeastOnce,
        json!({"id": "x", "params": {"Brightness": 3}}).to_string(),
    )
    .await?;
    let history = node
        .expect(
            Method::GET,
            &format!("{path}/properties/Brightness/history"),
            None,
            200,
        )
        .await?;
    let values: Vec<&Value> = history["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["value"])
        .collect();
    assert_eq!(values, [&json!(64)], "{history}");

    // Downlinks to the sub-device arrive on the gateway's connection.
    node.expect(
        Method::POST,
        &format!("{path}/properties:set"),
        Some(json!({"params": {"Brightness": 10}})),
        202,
    )
    .await?;
    let down = gw.expect_json(&set).await?;
    assert_eq!(down["params"]["Brightness"], 10, "{down}");

    // The API lists the topology with each sub-device's state.
    let listed = node
        .expect(
            Method::GET,
            &format!(
                "/api/v1/products/{gpk}/devices/{}/sub-devices",
                g1.device_name
            ),
            None,
            200,
        )
        .await?;
    let online: Vec<(&str, bool)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["deviceName"].as_str().unwrap(),
                s["online"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        online,
        [("lora-0001", true), ("lora-0002", false)],
        "{listed}"
    );

    // The gateway goes away: its sub-devices go offline with it.
    gw.abort();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reasons = status_reasons(&node, s1).await?;
        if reasons.iter().any(|r| r == "gateway_offline") {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no gateway_offline in {reasons:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    other.disconnect().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_gateways_manage_topology_and_removal_ends_the_session() -> anyhow::Result<()> {
    let mut node = LotusNode::start(NodeOptions::default()).await?;
    node.login().await?;
    let gpk = product(&node, "gateway").await?;
    let spk = product(&node, "subdevice").await?;
    let dpk = product(&node, "direct").await?;
    let g = devices(&node, &gpk, &["gw-1"]).await?.remove(0);
    let s = devices(&node, &spk, &["modbus-1"]).await?.remove(0);
    let d = devices(&node, &dpk, &["meter-1"]).await?.remove(0);

    // A directly connected device has no topology topics at all.
    let mut direct = Client::connected(mqtt_options(&d, node.mqtt)).await?;
    assert_eq!(
        direct
            .subscribe(&sys(&d, "thing/topo/add_reply"), QoS::AtLeastOnce)
            .await?,
        SubscribeReasonCode::Failure
    );
    direct.disconnect().await;

    let mut gw = Client::connected(mqtt_options(&g, node.mqtt)).await?;
    for t in ["topo/add_reply", "topo/delete_reply"] {
        gw.subscribe(&sys(&g, &format!("thing/{t}")), QoS::AtLeastOnce)
            .await?;
    }
    let session = format!("/ext/session/{gpk}/{}/combine", g.device_name);
    gw.subscribe(&format!("{session}/login_reply"), QoS::AtLeastOnce)
        .await?;
    // A direct device is not a sub-device.
    let r = request(
        &mut gw,
        &sys(&g, "thing/topo/add"),
        "1",
        json!([signed(&d, &d.device_secret)]),
    )
    .await?;
    assert_eq!(r["code"], 6402, "{r}");
    // Login before the topology has it.
    let r = request(
        &mut gw,
        &format!("{session}/login"),
        "2",
        signed(&s, &s.device_secret),
    )
    .await?;
    assert_eq!(r["code"], 6401, "{r}");
    let r = request(
        &mut gw,
        &sys(&g, "thing/topo/add"),
        "3",
        json!([signed(&s, &s.device_secret)]),
    )
    .await?;
    assert_eq!(r["code"], 200, "{r}");
    let r = request(
        &mut gw,
        &format!("{session}/login"),
        "4",
        signed(&s, &s.device_secret),
    )
    .await?;
    assert_eq!(r["code"], 200, "{r}");
    let r = request(
        &mut gw,
        &sys(&g, "thing/topo/delete"),
        "5",
        json!([{"productKey": spk, "deviceName": "modbus-1"}]),
    )
    .await?;
    assert_eq!(r["code"], 200, "{r}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !status_reasons(&node, &s)
        .await?
        .iter()
        .any(|r| r == "removed_from_topology")
    {
        anyhow::ensure!(std::time::Instant::now() < deadline, "no removal recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And its topics are out of the gateway's reach again.
    assert_eq!(
        gw.subscribe(&sys(&s, "thing/service/property/set"), QoS::AtLeastOnce)
            .await?,
        SubscribeReasonCode::Failure
    );
    gw.disconnect().await;
    Ok(())
}
