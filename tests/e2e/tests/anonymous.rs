//! With `allow_anonymous`, generic MQTT clients use Lotus like a plain broker outside the device
//! namespaces: retained messages, wills, QoS 0/1/2, persistent sessions, overlapping subscriptions.

use std::process::Command;
use std::time::Duration;

use lotus_test_harness::mqtt::Client;
use lotus_test_harness::node::{LotusNode, NodeOptions};
use rumqttc::{LastWill, MqttOptions, QoS, SubscribeReasonCode};

fn anon(node: &LotusNode, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, node.mqtt.ip().to_string(), node.mqtt.port());
    o.set_keep_alive(Duration::from_secs(5));
    o
}

async fn node() -> anyhow::Result<LotusNode> {
    LotusNode::start(NodeOptions {
        allow_anonymous: true,
        ..Default::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_qos_levels_and_overlapping_subscriptions() -> anyhow::Result<()> {
    let node = node().await?;
    let publisher = Client::connected(anon(&node, "pub")).await?;
    publisher
        .client
        .publish("city/district-1/status", QoS::AtLeastOnce, true, "green")
        .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut sub = Client::connected(anon(&node, "sub")).await?;
    assert_eq!(
        sub.subscribe("city/+/status", QoS::ExactlyOnce).await?,
        SubscribeReasonCode::Success(QoS::ExactlyOnce)
    );
    assert_eq!(
        &sub.expect_publish("city/district-1/status").await?[..],
        b"green"
    );
    // Overlapping subscription: still one copy per message.
    sub.subscribe("city/#", QoS::AtLeastOnce).await?;
    let _retained_again = sub.expect_publish("city/district-1/status").await?;
    for (qos, body) in [
        (QoS::AtMostOnce, "q0"),
        (QoS::AtLeastOnce, "q1"),
        (QoS::ExactlyOnce, "q2"),
    ] {
        publisher
            .publish("city/district-2/status", qos, body)
            .await?;
        assert_eq!(
            &sub.expect_publish("city/district-2/status").await?[..],
            body.as_bytes()
        );
    }
    sub.expect_no_publish(Duration::from_millis(300)).await?;

    // Clearing the retained message.
    publisher
        .client
        .publish(
            "city/district-1/status",
            QoS::AtLeastOnce,
            true,
            Vec::<u8>::new(),
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut late = Client::connected(anon(&node, "late")).await?;
    late.subscribe("city/district-1/status", QoS::AtLeastOnce)
        .await?;
    late.expect_no_publish(Duration::from_millis(300)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wills_persistent_sessions_and_reserved_topics() -> anyhow::Result<()> {
    let node = node().await?;
    let mut watcher = Client::connected(anon(&node, "watcher")).await?;
    watcher.subscribe("gw/+/state", QoS::AtLeastOnce).await?;

    let mut o = anon(&node, "gw-1");
    o.set_last_will(LastWill::new(
        "gw/gw-1/state",
        "lost",
        QoS::AtLeastOnce,
        false,
    ));
    let gw = Client::connected(o).await?;
    gw.abort();
    assert_eq!(&watcher.expect_publish("gw/gw-1/state").await?[..], b"lost");
    // A clean DISCONNECT does not fire the will.
    let mut o = anon(&node, "gw-2");
    o.set_last_will(LastWill::new(
        "gw/gw-2/state",
        "lost",
        QoS::AtLeastOnce,
        false,
    ));
    Client::connected(o).await?.disconnect().await;
    watcher
        .expect_no_publish(Duration::from_millis(500))
        .await?;

    // Persistent session: QoS 1 messages published while away are delivered on return.
    let mut o = anon(&node, "persistent");
    o.set_clean_session(false);
    let mut p = Client::connected(o.clone()).await?;
    p.subscribe("jobs/#", QoS::AtLeastOnce).await?;
    p.disconnect().await;
    let publisher = Client::connected(anon(&node, "jobs-pub")).await?;
    publisher
        .publish("jobs/42", QoS::AtLeastOnce, "queued")
        .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut p = Client::connected(o).await?;
    assert_eq!(&p.expect_publish("jobs/42").await?[..], b"queued");

    // Device namespaces and $-topics are closed to anonymous clients.
    let mut spy = Client::connected(anon(&node, "spy")).await?;
    assert_eq!(
        spy.subscribe("/sys/+/+/thing/service/property/set", QoS::AtLeastOnce)
            .await?,
        SubscribeReasonCode::Failure
    );
    spy.subscribe("#", QoS::AtLeastOnce).await?;
    publisher
        .publish("$SYS/broker/uptime", QoS::AtLeastOnce, "0")
        .await?;
    publisher
        .publish(
            "/sys/a1xxx/dev/thing/event/property/post",
            QoS::AtLeastOnce,
            "{}",
        )
        .await?;
    spy.expect_no_publish(Duration::from_millis(500)).await?;
    Ok(())
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_interoperate() -> anyhow::Result<()> {
    assert!(
        have("mosquitto_pub") && have("mosquitto_sub"),
        "install Debian's mosquitto-clients package (the README's test command does)"
    );
    let node = node().await?;
    let port = node.mqtt.port().to_string();
    for version in ["mqttv311", "mqttv5"] {
        let sub = tokio::process::Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-V",
                version,
                "-t",
                "plain/topic",
                "-C",
                "1",
                "-W",
                "10",
                "-q",
                "1",
            ])
            .output();
        let publish = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Command::new("mosquitto_pub")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-V",
                    version,
                    "-t",
                    "plain/topic",
                    "-m",
                    "hello",
                    "-q",
                    "2",
                ])
                .status()
        };
        let (out, status) = tokio::join!(sub, publish);
        assert!(status?.success());
        let out = out?;
        assert!(
            out.status.success(),
            "mosquitto_sub ({version}) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello");
    }
    Ok(())
}
