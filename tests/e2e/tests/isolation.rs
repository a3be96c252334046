//! Per-device topic isolation: a device can use only its own topics, on MQTT 3.1.1 and 5.

use std::time::Duration;

use lotus_e2e::{Fixture, sys};
use lotus_test_harness::device::{mqtt_options, mqtt5_options};
use lotus_test_harness::mqtt::Client;
use reqwest::Method;
use rumqttc::{QoS, SubscribeReasonCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_device_cannot_reach_another_devices_topics() -> anyhow::Result<()> {
    let f = Fixture::start(2).await?;
    let (a, b) = (&f.devices[0], &f.devices[1]);
    let mut victim = Client::connected(mqtt_options(b, f.node.mqtt)).await?;
    assert_eq!(
        victim
            .subscribe(&sys(b, "thing/service/property/set"), QoS::AtLeastOnce)
            .await?,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );
    let mut attacker = Client::connected(mqtt_options(a, f.node.mqtt)).await?;

    for filter in [
        "#".to_string(),
        "/sys/#".to_string(),
        format!("/sys/{}/+/thing/service/property/set", a.product_key),
        "/sys/+/+/thing/event/property/post".to_string(),
        sys(b, "thing/service/property/set"),
        sys(b, "thing/event/property/post_reply"),
        format!("/{}/{}/user/get", b.product_key, b.device_name),
        sys(a, "thing/event/property/post"),
    ] {
        let code = attacker.subscribe(&filter, QoS::AtLeastOnce).await?;
        assert_eq!(
            code,
            SubscribeReasonCode::Failure,
            "subscribing to {filter} must be refused"
        );
    }
    // Its own topics are fine.
    assert_eq!(
        attacker
            .subscribe(&sys(a, "thing/service/property/set"), QoS::AtLeastOnce)
            .await?,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );

    // Publishing into the victim's topics is not delivered and not stored.
    let forged = json!({"id": "1", "params": {"Brightness": 99}});
    attacker
        .publish(
            &sys(b, "thing/event/property/post"),
            QoS::AtLeastOnce,
            forged.to_string(),
        )
        .await?;
    attacker
        .publish(
            &sys(b, "thing/service/property/set"),
            QoS::AtLeastOnce,
            forged.to_string(),
        )
        .await?;
    attacker
        .publish(
            &format!("/{}/{}/user/get", b.product_key, b.device_name),
            QoS::AtLeastOnce,
            "x",
        )
        .await?;
    victim.expect_no_publish(Duration::from_millis(500)).await?;
    let latest = f.latest_properties(1).await?;
    assert_eq!(latest, json!([]));
    assert!(
        f.node.log().contains("publish not authorised"),
        "refusals are logged"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_refusals_carry_not_authorized() -> anyhow::Result<()> {
    use rumqttc::v5::mqttbytes::QoS as V5QoS;
    use rumqttc::v5::mqttbytes::v5::{Packet, SubscribeReasonCode as V5Sub};
    use rumqttc::v5::{AsyncClient, Event};
    let f = Fixture::start(2).await?;
    let (a, b) = (&f.devices[0], &f.devices[1]);
    let (client, mut eventloop) = AsyncClient::new(mqtt5_options(a, f.node.mqtt), 64);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Ok(ev) = eventloop.poll().await {
            if tx.send(ev).is_err() {
                break;
            }
        }
    });
    let mut next = async || -> anyhow::Result<Packet> {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await? {
                Some(Event::Incoming(p)) if !matches!(p, Packet::PingResp(_)) => return Ok(p),
                Some(_) => continue,
                None => anyhow::bail!("connection ended"),
            }
        }
    };
    assert!(matches!(next().await?, Packet::ConnAck(_)));
    client.subscribe("#", V5QoS::AtLeastOnce).await?;
    match next().await? {
        Packet::SubAck(ack) => assert_eq!(ack.return_codes, vec![V5Sub::NotAuthorized]),
        p => anyhow::bail!("expected SUBACK, got {p:?}"),
    }
    client
        .subscribe(sys(b, "thing/service/property/set"), V5QoS::AtLeastOnce)
        .await?;
    match next().await? {
        Packet::SubAck(ack) => assert_eq!(ack.return_codes, vec![V5Sub::NotAuthorized]),
        p => anyhow::bail!("expected SUBACK, got {p:?}"),
    }
    client
        .publish(
            sys(b, "thing/event/property/post"),
            V5QoS::AtLeastOnce,
            false,
            json!({"id":"1","params":{"Power":1}}).to_string(),
        )
        .await?;
    match next().await? {
        Packet::PubAck(ack) => assert_eq!(
            ack.reason,
            rumqttc::v5::mqttbytes::v5::PubAckReason::NotAuthorized
        ),
        p => anyhow::bail!("expected PUBACK, got {p:?}"),
    }
    // Its own topic is accepted.
    client
        .publish(
            sys(a, "thing/event/property/post"),
            V5QoS::AtLeastOnce,
            false,
            json!({"id":"2","params":{"Power":1}}).to_string(),
        )
        .await?;
    match next().await? {
        Packet::PubAck(ack) => assert_eq!(
            ack.reason,
            rumqttc::v5::mqttbytes::v5::PubAckReason::Success
        ),
        p => anyhow::bail!("expected PUBACK, got {p:?}"),
    }
    task.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_class_changes_apply_to_connected_devices_at_once() -> anyhow::Result<()> {
    let f = Fixture::start(2).await?;
    let (a, b) = (&f.devices[0], &f.devices[1]);
    let alarm_a = format!("/{}/{}/user/alarm", a.product_key, a.device_name);
    let alarm_b = format!("/{}/{}/user/alarm", b.product_key, b.device_name);
    let mut sub = Client::connected(mqtt_options(b, f.node.mqtt)).await?;
    let mut dev = Client::connected(mqtt_options(a, f.node.mqtt)).await?;

    // No class yet: the device may not subscribe.
    assert_eq!(
        dev.subscribe(&alarm_a, QoS::AtLeastOnce).await?,
        SubscribeReasonCode::Failure
    );

    let classes = format!("/api/v1/products/{}/topic-classes", f.product_key);
    let class = f
        .node
        .expect(Method::POST, &classes, Some(json!({"template": "/${productKey}/${deviceName}/user/alarm", "operation": "all", "description": "alarms"})), 201)
        .await?;
    let id = class["id"].as_str().unwrap().to_string();
    assert_eq!(
        dev.subscribe(&alarm_a, QoS::AtLeastOnce).await?,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );
    assert_eq!(
        sub.subscribe(&alarm_b, QoS::AtLeastOnce).await?,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );
    // Still only its own instance of the class.
    assert_eq!(
        dev.subscribe(&alarm_b, QoS::AtLeastOnce).await?,
        SubscribeReasonCode::Failure
    );

    // Device b publishes to its own alarm topic; a's subscription does not see it, b's own does.
    sub.publish(&alarm_b, QoS::AtLeastOnce, "fire").await?;
    assert_eq!(&sub.expect_publish(&alarm_b).await?[..], b"fire");
    dev.expect_no_publish(Duration::from_millis(300)).await?;

    // Make the class publish-only: the existing subscription stops receiving at once.
    f.node
        .expect(
            Method::PUT,
            &format!("{classes}/{id}"),
            Some(json!({"operation": "pub"})),
            200,
        )
        .await?;
    sub.publish(&alarm_b, QoS::AtLeastOnce, "smoke").await?;
    sub.expect_no_publish(Duration::from_millis(500)).await?;

    // Delete it: publishing is refused too (nothing is delivered to an anonymous-free broker).
    f.node
        .expect(Method::DELETE, &format!("{classes}/{id}"), None, 204)
        .await?;
    assert_eq!(
        sub.subscribe(&alarm_b, QoS::AtLeastOnce).await?,
        SubscribeReasonCode::Failure
    );

    // System classes are read-only.
    let p = f
        .node
        .expect(
            Method::DELETE,
            &format!("{classes}/sys.property.post"),
            None,
            403,
        )
        .await?;
    assert!(p["detail"].as_str().unwrap().contains("read-only"));
    // Custom classes must stay in the device's user namespace.
    f.node
        .expect(
            Method::POST,
            &classes,
            Some(json!({"template": "/sys/${productKey}/+/x", "operation": "sub"})),
            422,
        )
        .await?;
    Ok(())
}
