//! A PUBACK means "durably stored": it waits for the platform's acknowledgement.

mod common;

use common::{Raw, V4, V5, publish_packet, raw_connect, start, v4_options, v5_options, v5c};
use lotus_mqtt::DisconnectReason;
use rumqttc::mqttbytes::v4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puback_is_sent_only_after_the_platform_acknowledges() {
    let b = start().await;
    let mut sub = V4::connected(v4_options("sub", Some("bob"), b.tcp)).await;
    sub.subscribe("held/#", rumqttc::QoS::AtLeastOnce).await;

    let mut raw = Raw::connect(b.tcp, raw_connect("dev", "alice", 30)).await;
    raw.send(publish_packet(
        "held/telemetry",
        rumqttc::QoS::AtLeastOnce,
        11,
        b"t=21",
    ))
    .await;
    let ack = b.hooks.take_held().await;
    // The message is routed already; only the acknowledgement waits.
    assert_eq!(sub.expect_publish().await.topic, "held/telemetry");
    // Packets are answered in order on one connection: a PUBACK sent early would come
    // before this PINGRESP.
    raw.send(v4::Packet::PingReq).await;
    assert_eq!(raw.recv().await, Some(v4::Packet::PingResp));
    ack.send(Ok(())).unwrap();
    assert_eq!(
        raw.recv().await,
        Some(v4::Packet::PubAck(v4::PubAck::new(11)))
    );

    // QoS 2: PUBREC waits the same way, and a retransmission is not routed twice.
    raw.send(publish_packet(
        "held/q2",
        rumqttc::QoS::ExactlyOnce,
        12,
        b"once",
    ))
    .await;
    let ack = b.hooks.take_held().await;
    let mut dup = v4::Publish::new("held/q2", rumqttc::QoS::ExactlyOnce, &b"once"[..]);
    dup.pkid = 12;
    dup.dup = true;
    raw.send(v4::Packet::Publish(dup)).await;
    raw.send(v4::Packet::PingReq).await;
    assert_eq!(raw.recv().await, Some(v4::Packet::PingResp));
    ack.send(Ok(())).unwrap();
    assert_eq!(
        raw.recv().await,
        Some(v4::Packet::PubRec(v4::PubRec::new(12)))
    );
    assert_eq!(
        raw.recv().await,
        Some(v4::Packet::PubRec(v4::PubRec::new(12)))
    );
    raw.send(v4::Packet::PubRel(v4::PubRel::new(12))).await;
    assert_eq!(
        raw.recv().await,
        Some(v4::Packet::PubComp(v4::PubComp::new(12)))
    );
    assert_eq!(&sub.expect_publish().await.payload[..], b"once");
    raw.send(publish_packet(
        "held/marker",
        rumqttc::QoS::AtMostOnce,
        0,
        b"m",
    ))
    .await;
    assert_eq!(
        sub.expect_publish().await.topic,
        "held/marker",
        "the duplicate was not routed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_store_gives_v5_reason_0x80() {
    let b = start().await;
    let mut c = V5::connected(v5_options("dev5", Some("alice"), b.tcp)).await;
    c.publish("held/x", v5c::QoS::AtLeastOnce, b"x").await;
    b.hooks
        .take_held()
        .await
        .send(Err("disk full".into()))
        .unwrap();
    let ack = c.expect_puback().await;
    assert_eq!(ack.reason, v5c::PubAckReason::UnspecifiedError);
    assert_eq!(
        ack.properties.and_then(|p| p.reason_string).as_deref(),
        Some("disk full")
    );
    // The connection carries on.
    c.publish("other/y", v5c::QoS::AtLeastOnce, b"y").await;
    assert_eq!(c.expect_puback().await.reason, v5c::PubAckReason::Success);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_store_closes_a_v311_connection_unacknowledged() {
    let b = start().await;
    let mut raw = Raw::connect(b.tcp, raw_connect("dev4", "alice", 30)).await;
    raw.send(publish_packet("held/x", rumqttc::QoS::AtLeastOnce, 5, b"x"))
        .await;
    b.hooks
        .take_held()
        .await
        .send(Err("disk full".into()))
        .unwrap();
    assert!(
        raw.closed().await.is_empty(),
        "no PUBACK: the client must send it again"
    );
    assert_eq!(
        b.hooks.disconnected("dev4").await,
        DisconnectReason::ServerError("disk full".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgements_keep_the_order_of_the_publishes() {
    let b = start().await;
    let mut raw = Raw::connect(b.tcp, raw_connect("dev", "alice", 30)).await;
    raw.send(publish_packet("held/1", rumqttc::QoS::AtLeastOnce, 1, b"1"))
        .await;
    let first = b.hooks.take_held().await;
    // Not waiting on the platform, but it must not overtake the first.
    raw.send(publish_packet("fast/2", rumqttc::QoS::AtLeastOnce, 2, b"2"))
        .await;
    raw.send(v4::Packet::PingReq).await;
    assert_eq!(raw.recv().await, Some(v4::Packet::PingResp));
    first.send(Ok(())).unwrap();
    assert_eq!(
        raw.recv().await,
        Some(v4::Packet::PubAck(v4::PubAck::new(1)))
    );
    assert_eq!(
        raw.recv().await,
        Some(v4::Packet::PubAck(v4::PubAck::new(2)))
    );
}
