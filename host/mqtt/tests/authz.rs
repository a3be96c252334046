//! Every PUBLISH, SUBSCRIBE and delivery goes through the platform's decision.

mod common;

use bytes::Bytes;
use common::{HookEvent, V4, V5, start, v4_options, v5_options, v5c};
use lotus_mqtt::QoS;
use rumqttc::mqttbytes::v4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_subscription_gets_0x80_on_v311_and_0x87_on_v5() {
    let b = start().await;
    let mut c4 = V4::connected(v4_options("a4", Some("alice"), b.tcp)).await;
    assert_eq!(
        c4.subscribe("private/bob/#", rumqttc::QoS::AtLeastOnce)
            .await,
        v4::SubscribeReasonCode::Failure
    );
    assert_eq!(
        c4.subscribe("private/alice/#", rumqttc::QoS::AtLeastOnce)
            .await,
        v4::SubscribeReasonCode::Success(rumqttc::QoS::AtLeastOnce)
    );
    assert_eq!(
        c4.subscribe("$share/no-filter", rumqttc::QoS::AtMostOnce)
            .await,
        v4::SubscribeReasonCode::Failure
    );

    let mut c5 = V5::connected(v5_options("a5", Some("alice"), b.tcp)).await;
    assert_eq!(
        c5.subscribe("private/bob/#", v5c::QoS::AtLeastOnce).await,
        v5c::SubscribeReasonCode::NotAuthorized
    );
    assert_eq!(
        c5.subscribe("nul\0level", v5c::QoS::AtLeastOnce).await,
        v5c::SubscribeReasonCode::TopicFilterInvalid
    );
    // Nothing published on the refused filter reaches the client.
    b.broker
        .publish(
            "private/bob/secret",
            Bytes::from_static(b"s"),
            QoS::AtLeastOnce,
            false,
        )
        .await;
    b.broker
        .publish(
            "private/alice/mine",
            Bytes::from_static(b"m"),
            QoS::AtLeastOnce,
            false,
        )
        .await;
    assert_eq!(c4.expect_publish().await.topic, "private/alice/mine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_publish_is_acknowledged_but_never_routed() {
    let b = start().await;
    let mut bob = V4::connected(v4_options("bob", Some("bob"), b.tcp)).await;
    bob.subscribe("#", rumqttc::QoS::AtLeastOnce).await;

    // v3.1.1: a normal PUBACK (so the client does not retry), and nothing routed.
    let mut alice = V4::connected(v4_options("alice4", Some("alice"), b.tcp)).await;
    alice
        .publish_acked("private/bob/inbox", rumqttc::QoS::AtLeastOnce, b"forged")
        .await;
    alice
        .publish_acked("private/bob/inbox", rumqttc::QoS::ExactlyOnce, b"forged2")
        .await;
    // v5: PUBACK 0x87.
    let mut alice5 = V5::connected(v5_options("alice5", Some("alice"), b.tcp)).await;
    alice5
        .publish("private/bob/inbox", v5c::QoS::AtLeastOnce, b"forged3")
        .await;
    assert_eq!(
        alice5.expect_puback().await.reason,
        v5c::PubAckReason::NotAuthorized
    );
    alice5
        .publish("private/bob/inbox", v5c::QoS::AtMostOnce, b"forged4")
        .await;

    alice
        .publish_acked("public/news", rumqttc::QoS::AtLeastOnce, b"ok")
        .await;
    let got = bob.expect_publish().await;
    assert_eq!(
        got.topic, "public/news",
        "the refused publishes were not delivered"
    );
    // The platform never saw them either.
    assert!(
        !b.hooks.events().iter().any(
            |e| matches!(e, HookEvent::Published { topic, .. } if topic.starts_with("private/"))
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_subscriber_does_not_receive_another_users_private_topic() {
    let b = start().await;
    let mut bob = V5::connected(v5_options("bob", Some("bob"), b.tcp)).await;
    bob.subscribe("#", v5c::QoS::AtLeastOnce).await;
    let mut alice = V4::connected(v4_options("alice", Some("alice"), b.tcp)).await;
    alice
        .subscribe("private/alice/#", rumqttc::QoS::AtLeastOnce)
        .await;

    alice
        .publish_acked(
            "private/alice/diary",
            rumqttc::QoS::AtLeastOnce,
            b"dear diary",
        )
        .await;
    assert_eq!(
        alice.expect_publish().await.topic,
        "private/alice/diary",
        "the owner gets it"
    );
    let n = b
        .broker
        .publish(
            "private/alice/note",
            Bytes::from_static(b"n"),
            QoS::AtLeastOnce,
            false,
        )
        .await;
    assert_eq!(n, 1, "only alice's session passes the Deliver check");

    alice
        .publish_acked("public/x", rumqttc::QoS::AtLeastOnce, b"x")
        .await;
    assert_eq!(&bob.expect_publish().await.topic[..], b"public/x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_refusal_reaches_v5_as_its_reason_code() {
    let b = start().await;
    let mut watcher = V4::connected(v4_options("watcher", Some("bob"), b.tcp)).await;
    watcher.subscribe("#", rumqttc::QoS::AtLeastOnce).await;
    let mut c5 = V5::connected(v5_options("c5", Some("alice"), b.tcp)).await;
    c5.publish("refuse/me", v5c::QoS::AtLeastOnce, b"not json")
        .await;
    let ack = c5.expect_puback().await;
    assert_eq!(ack.reason, v5c::PubAckReason::PayloadFormatInvalid);
    assert_eq!(
        ack.properties.and_then(|p| p.reason_string).as_deref(),
        Some("payload format invalid")
    );
    // v3.1.1 gets a plain PUBACK.
    let mut c4 = V4::connected(v4_options("c4", Some("alice"), b.tcp)).await;
    c4.publish_acked("refuse/me", rumqttc::QoS::AtLeastOnce, b"x")
        .await;
    c4.publish_acked("fine/1", rumqttc::QoS::AtLeastOnce, b"ok")
        .await;
    assert_eq!(watcher.expect_publish().await.topic, "fine/1");
}
