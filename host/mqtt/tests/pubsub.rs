//! Publish / subscribe with real clients of both protocol versions.

mod common;

use bytes::Bytes;
use common::{V4, V5, start, start_with, v4_options, v5_options, v5c};
use lotus_mqtt::{BrokerConfig, QoS};
use rumqttc::mqttbytes::v4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_0_1_2_round_trips_v311() {
    let b = start().await;
    let mut sub = V4::connected(v4_options("sub", Some("alice"), b.tcp)).await;
    let mut publ = V4::connected(v4_options("pub", Some("bob"), b.tcp)).await;
    for qos in [
        rumqttc::QoS::AtMostOnce,
        rumqttc::QoS::AtLeastOnce,
        rumqttc::QoS::ExactlyOnce,
    ] {
        let topic = format!("city/qos{}", qos as u8);
        assert_eq!(
            sub.subscribe(&topic, qos).await,
            v4::SubscribeReasonCode::Success(qos)
        );
        publ.publish_acked(&topic, qos, b"hello").await;
        let got = sub.expect_publish().await;
        assert_eq!(
            (got.topic.as_str(), &got.payload[..], got.qos),
            (topic.as_str(), &b"hello"[..], qos)
        );
        assert!(!got.retain);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_0_1_2_round_trips_v5() {
    let b = start().await;
    let mut sub = V5::connected(v5_options("sub", Some("alice"), b.tcp)).await;
    let mut publ = V5::connected(v5_options("pub", Some("bob"), b.tcp)).await;
    for qos in [
        v5c::QoS::AtMostOnce,
        v5c::QoS::AtLeastOnce,
        v5c::QoS::ExactlyOnce,
    ] {
        let topic = format!("city/qos{}", qos as u8);
        assert_eq!(
            sub.subscribe(&topic, qos).await,
            v5c::SubscribeReasonCode::Success(qos)
        );
        publ.publish(&topic, qos, b"hello").await;
        match qos {
            v5c::QoS::AtMostOnce => {}
            v5c::QoS::AtLeastOnce => assert_eq!(
                publ.expect_puback().await.reason,
                v5c::PubAckReason::Success
            ),
            v5c::QoS::ExactlyOnce => {
                publ.expect("PUBCOMP", |p| {
                    matches!(p, v5c::Packet::PubComp(_)).then_some(())
                })
                .await
            }
        }
        let got = sub.expect_publish().await;
        assert_eq!(
            (&got.topic[..], &got.payload[..], got.qos),
            (topic.as_bytes(), &b"hello"[..], qos)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_message_reaches_late_subscriber_until_cleared() {
    let b = start().await;
    let mut publ = V4::connected(v4_options("pub", Some("alice"), b.tcp)).await;
    publ.publish_retained("lights/1", b"on").await;
    publ.expect("PUBACK", |p| {
        matches!(p, v4::Packet::PubAck(_)).then_some(())
    })
    .await;

    let mut late = V4::connected(v4_options("late", Some("bob"), b.tcp)).await;
    late.subscribe("lights/+", rumqttc::QoS::AtLeastOnce).await;
    let got = late.expect_publish().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..], got.retain),
        ("lights/1", &b"on"[..], true)
    );

    // An empty retained payload clears it.
    publ.publish_retained("lights/1", b"").await;
    publ.expect("PUBACK", |p| {
        matches!(p, v4::Packet::PubAck(_)).then_some(())
    })
    .await;
    // The live subscriber gets the clearing message itself, without the RETAIN flag.
    let cleared = late.expect_publish().await;
    assert!(cleared.payload.is_empty() && !cleared.retain);

    let mut later = V4::connected(v4_options("later", Some("bob"), b.tcp)).await;
    later.subscribe("lights/+", rumqttc::QoS::AtLeastOnce).await;
    publ.publish_acked("lights/marker", rumqttc::QoS::AtLeastOnce, b"m")
        .await;
    assert_eq!(
        later.expect_publish().await.topic,
        "lights/marker",
        "nothing retained any more"
    );

    // The platform's own retained publish is delivered the same way.
    b.broker
        .publish(
            "lights/2",
            Bytes::from_static(b"off"),
            QoS::AtMostOnce,
            true,
        )
        .await;
    let mut v5 = V5::connected(v5_options("v5", Some("bob"), b.tcp)).await;
    v5.subscribe("lights/2", v5c::QoS::AtLeastOnce).await;
    let got = v5.expect_publish().await;
    assert!(got.retain);
    assert_eq!(&got.payload[..], b"off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_subscriptions_deliver_once_at_the_highest_qos() {
    let b = start().await;
    let mut sub = V4::connected(v4_options("sub", Some("alice"), b.tcp)).await;
    sub.subscribe("a/#", rumqttc::QoS::AtMostOnce).await;
    sub.subscribe("a/+", rumqttc::QoS::AtLeastOnce).await;
    sub.subscribe("a/b", rumqttc::QoS::AtMostOnce).await;
    let mut publ = V4::connected(v4_options("pub", Some("bob"), b.tcp)).await;
    publ.publish_acked("a/b", rumqttc::QoS::AtLeastOnce, b"1")
        .await;
    publ.publish_acked("a/c", rumqttc::QoS::AtLeastOnce, b"2")
        .await;
    let first = sub.expect_publish().await;
    assert_eq!(
        (first.topic.as_str(), first.qos),
        ("a/b", rumqttc::QoS::AtLeastOnce)
    );
    // Had "a/b" been delivered twice, the copy would arrive before the next message.
    assert_eq!(sub.expect_publish().await.topic, "a/c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_properties_pass_through_and_v311_sees_the_payload() {
    let b = start().await;
    let mut v5sub = V5::connected(v5_options("v5sub", Some("alice"), b.tcp)).await;
    v5sub.subscribe("rpc/#", v5c::QoS::AtLeastOnce).await;
    let mut v4sub = V4::connected(v4_options("v4sub", Some("alice"), b.tcp)).await;
    v4sub.subscribe("rpc/#", rumqttc::QoS::AtLeastOnce).await;

    let publ = V5::connected(v5_options("pub", Some("bob"), b.tcp)).await;
    let props = v5c::PublishProperties {
        response_topic: Some("rpc/reply/1".into()),
        correlation_data: Some(Bytes::from_static(b"corr-7")),
        user_properties: vec![("trace".into(), "abc".into())],
        content_type: Some("application/json".into()),
        message_expiry_interval: Some(3600),
        ..Default::default()
    };
    publ.client
        .publish_with_properties("rpc/call", v5c::QoS::AtLeastOnce, false, "{}", props)
        .await
        .unwrap();

    let got = v5sub.expect_publish().await;
    let p = got.properties.expect("properties forwarded");
    assert_eq!(p.response_topic.as_deref(), Some("rpc/reply/1"));
    assert_eq!(p.correlation_data.as_deref(), Some(&b"corr-7"[..]));
    assert_eq!(
        p.user_properties,
        vec![("trace".to_string(), "abc".to_string())]
    );
    assert_eq!(p.content_type.as_deref(), Some("application/json"));
    assert!(
        p.message_expiry_interval
            .is_some_and(|e| e > 3500 && e <= 3600)
    );
    assert_eq!(&v4sub.expect_publish().await.payload[..], b"{}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_no_local_skips_own_messages() {
    let b = start().await;
    let mut me = V5::connected(v5_options("me", Some("alice"), b.tcp)).await;
    let mut filter = v5c::Filter::new("chat/#", v5c::QoS::AtLeastOnce);
    filter.nolocal = true;
    me.client.subscribe_many(vec![filter]).await.unwrap();
    me.expect_suback().await;
    me.publish("chat/1", v5c::QoS::AtLeastOnce, b"mine").await;
    me.expect_puback().await;
    let other = V5::connected(v5_options("other", Some("bob"), b.tcp)).await;
    other
        .publish("chat/2", v5c::QoS::AtLeastOnce, b"theirs")
        .await;
    assert_eq!(&me.expect_publish().await.payload[..], b"theirs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_takes_turns() {
    let b = start().await;
    let mut w1 = V5::connected(v5_options("w1", Some("alice"), b.tcp)).await;
    let mut w2 = V5::connected(v5_options("w2", Some("alice"), b.tcp)).await;
    w1.subscribe("$share/workers/jobs/+", v5c::QoS::AtLeastOnce)
        .await;
    w2.subscribe("$share/workers/jobs/+", v5c::QoS::AtLeastOnce)
        .await;
    for i in 0..4 {
        let n = b
            .broker
            .publish(
                &format!("jobs/{i}"),
                Bytes::from_static(b"j"),
                QoS::AtLeastOnce,
                false,
            )
            .await;
        assert_eq!(n, 1, "one member of the group per message");
    }
    for w in [&mut w1, &mut w2] {
        w.expect_publish().await;
        w.expect_publish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_platform_acknowledgement_still_completes() {
    let b = start().await;
    let mut sub = V4::connected(v4_options("sub", Some("alice"), b.tcp)).await;
    sub.subscribe("slow/#", rumqttc::QoS::AtLeastOnce).await;
    let mut publ = V4::connected(v4_options("pub", Some("bob"), b.tcp)).await;
    publ.publish_acked("slow/1", rumqttc::QoS::AtLeastOnce, b"x")
        .await;
    publ.publish_acked("slow/2", rumqttc::QoS::ExactlyOnce, b"y")
        .await;
    assert_eq!(sub.expect_publish().await.topic, "slow/1");
    assert_eq!(sub.expect_publish().await.topic, "slow/2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_pressure_loses_nothing_with_tiny_windows_and_queues() {
    let b = start_with(BrokerConfig {
        max_inflight: 2,
        session_queue_limit: 4,
        ..BrokerConfig::default()
    })
    .await;
    let mut sub = V4::connected(v4_options("sub", Some("alice"), b.tcp)).await;
    sub.subscribe("bulk/#", rumqttc::QoS::AtLeastOnce).await;
    let publ = V4::connected(v4_options("pub", Some("bob"), b.tcp)).await;
    const N: usize = 300;
    let publisher = tokio::spawn(async move {
        for i in 0..N {
            publ.publish(
                "bulk/x",
                rumqttc::QoS::AtLeastOnce,
                i.to_string().as_bytes(),
            )
            .await;
        }
        publ
    });
    for i in 0..N {
        let got = sub.expect_publish().await;
        assert_eq!(
            got.payload,
            i.to_string().as_bytes(),
            "in order and complete"
        );
    }
    let _publ = publisher.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_publish_counts_sessions() {
    let b = start().await;
    assert_eq!(
        b.broker
            .publish("nobody/here", Bytes::new(), QoS::AtMostOnce, false)
            .await,
        0
    );
    let mut a = V4::connected(v4_options("a", Some("alice"), b.tcp)).await;
    a.subscribe("down/#", rumqttc::QoS::AtLeastOnce).await;
    a.subscribe("down/1", rumqttc::QoS::AtMostOnce).await;
    let mut c = V5::connected(v5_options("c", Some("bob"), b.tcp)).await;
    c.subscribe("down/+", v5c::QoS::ExactlyOnce).await;
    let n = b
        .broker
        .publish(
            "down/1",
            Bytes::from_static(b"cmd"),
            QoS::ExactlyOnce,
            false,
        )
        .await;
    assert_eq!(n, 2);
    assert_eq!(a.expect_publish().await.qos, rumqttc::QoS::AtLeastOnce);
    assert_eq!(c.expect_publish().await.qos, v5c::QoS::ExactlyOnce);
    assert_eq!(
        b.broker
            .publish("bad/+", Bytes::new(), QoS::AtMostOnce, false)
            .await,
        0
    );
}
