//! Session life: persistence, takeover, wills, keep-alive, kicks and odd CONNECTs.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Raw, V4, V5, raw_connect, start, user_principal, v4_options, v5_options, v5c};
use lotus_mqtt::{DisconnectReason, QoS};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, DisconnectReasonCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_receives_what_was_published_while_away() {
    let b = start().await;
    let mut opts = v4_options("keeper", Some("alice"), b.tcp);
    opts.set_clean_session(false);
    let mut c = V4::connected(opts.clone()).await;
    c.subscribe("news/#", rumqttc::QoS::AtLeastOnce).await;
    c.disconnect().await;
    assert_eq!(
        b.hooks.disconnected("keeper").await,
        DisconnectReason::ClientDisconnect
    );
    drop(c);

    let mut publ = V4::connected(v4_options("pub", Some("bob"), b.tcp)).await;
    for i in 0..3 {
        publ.publish_acked(
            "news/today",
            rumqttc::QoS::AtLeastOnce,
            format!("n{i}").as_bytes(),
        )
        .await;
    }
    // QoS 0 is not kept for an absent client. (The acknowledged publish after it proves
    // that the broker has handled it: one connection's packets are handled in order.)
    publ.publish_acked("news/today", rumqttc::QoS::AtMostOnce, b"lost")
        .await;
    publ.publish_acked("fence", rumqttc::QoS::AtLeastOnce, b"")
        .await;

    let (mut c, ack) = V4::connect(opts).await.unwrap();
    assert!(ack.session_present);
    for i in 0..3 {
        assert_eq!(c.expect_publish().await.payload, format!("n{i}").as_bytes());
    }
    // The subscription survived too.
    publ.publish_acked("news/later", rumqttc::QoS::AtLeastOnce, b"live")
        .await;
    assert_eq!(c.expect_publish().await.payload, &b"live"[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_delivery_is_resent_with_dup_on_resume() {
    let b = start().await;
    let mut opts = v4_options("forgetful", Some("alice"), b.tcp);
    opts.set_clean_session(false);
    opts.set_manual_acks(true);
    let mut c = V4::connected(opts.clone()).await;
    c.subscribe("retry/#", rumqttc::QoS::AtLeastOnce).await;
    b.broker
        .publish(
            "retry/1",
            Bytes::from_static(b"again"),
            QoS::AtLeastOnce,
            false,
        )
        .await;
    let first = c.expect_publish().await;
    assert!(!first.dup);
    // Gone without acknowledging.
    drop(c);
    b.hooks.disconnected("forgetful").await;

    opts.set_manual_acks(false);
    let (mut c, ack) = V4::connect(opts).await.unwrap();
    assert!(ack.session_present);
    let again = c.expect_publish().await;
    assert!(again.dup);
    assert_eq!(
        (again.pkid, &again.payload[..]),
        (first.pkid, &b"again"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_session_expiry_keeps_the_session_and_clean_start_drops_it() {
    let b = start().await;
    let mut opts = v5_options("v5keeper", Some("alice"), b.tcp);
    opts.set_clean_start(false);
    opts.set_session_expiry_interval(Some(300));
    let mut c = V5::connected(opts.clone()).await;
    c.subscribe("news/#", v5c::QoS::ExactlyOnce).await;
    drop(c);
    b.hooks.disconnected("v5keeper").await;

    assert_eq!(
        b.broker
            .publish(
                "news/x",
                Bytes::from_static(b"queued"),
                QoS::ExactlyOnce,
                false
            )
            .await,
        1
    );
    let (mut c, ack) = V5::connect(opts.clone()).await.unwrap();
    assert!(ack.session_present);
    let got = c.expect_publish().await;
    assert_eq!(
        (&got.payload[..], got.qos),
        (&b"queued"[..], v5c::QoS::ExactlyOnce)
    );
    drop(c);
    b.hooks.disconnections("v5keeper", 2).await;

    opts.set_clean_start(true);
    let (_c, ack) = V5::connect(opts).await.unwrap();
    assert!(!ack.session_present);
    assert_eq!(
        b.broker
            .publish("news/y", Bytes::new(), QoS::AtLeastOnce, false)
            .await,
        0,
        "clean start removed the old subscriptions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_is_published_on_abrupt_close_but_not_on_disconnect() {
    let b = start().await;
    let mut watcher = V4::connected(v4_options("watcher", Some("bob"), b.tcp)).await;
    watcher
        .subscribe("status/#", rumqttc::QoS::AtLeastOnce)
        .await;

    // Clean DISCONNECT: no will.
    let mut opts = v4_options("polite", Some("alice"), b.tcp);
    opts.set_last_will(rumqttc::LastWill::new(
        "status/polite",
        "gone",
        rumqttc::QoS::AtLeastOnce,
        false,
    ));
    let mut polite = V4::connected(opts).await;
    polite.disconnect().await;
    assert_eq!(
        b.hooks.disconnected("polite").await,
        DisconnectReason::ClientDisconnect
    );
    // A will would have been routed before the hook heard of the disconnection.
    b.broker
        .publish(
            "status/marker",
            Bytes::from_static(b"m"),
            QoS::AtLeastOnce,
            false,
        )
        .await;
    assert_eq!(watcher.expect_publish().await.topic, "status/marker");

    // Dropped TCP connection: the will goes out.
    let mut opts = v4_options("rude", Some("alice"), b.tcp);
    opts.set_last_will(rumqttc::LastWill::new(
        "status/rude",
        "gone",
        rumqttc::QoS::AtLeastOnce,
        false,
    ));
    let rude = V4::connected(opts).await;
    drop(rude);
    let will = watcher.expect_publish().await;
    assert_eq!(
        (will.topic.as_str(), &will.payload[..]),
        ("status/rude", &b"gone"[..])
    );
    assert_eq!(
        b.hooks.disconnected("rude").await,
        DisconnectReason::TransportClosed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_topic_must_be_authorised_at_connect() {
    let b = start().await;
    let mut opts = v4_options("sneaky", Some("alice"), b.tcp);
    opts.set_last_will(rumqttc::LastWill::new(
        "private/bob/x",
        "boo",
        rumqttc::QoS::AtMostOnce,
        false,
    ));
    match V4::connect(opts).await {
        Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, v4::ConnectReturnCode::NotAuthorized)
        }
        Err(e) => panic!("unexpected error {e:?}"),
        Ok(_) => panic!("CONNECT with a foreign will topic was accepted"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_timeout_closes_and_is_reported() {
    let b = start().await;
    let mut raw = Raw::connect(b.tcp, raw_connect("sleepy", "alice", 1)).await;
    // Say nothing: after 1.5 s the broker gives up.
    assert!(raw.closed().await.is_empty());
    assert_eq!(
        b.hooks.disconnected("sleepy").await,
        DisconnectReason::KeepAliveTimeout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_keeps_a_connection_alive() {
    let b = start().await;
    // Keep-alive 2 s (the broker allows 3 s of silence); a ping every 0.5 s for 2 s.
    let mut raw = Raw::connect(b.tcp, raw_connect("pinger", "alice", 2)).await;
    for _ in 0..4 {
        raw.send(v4::Packet::PingReq).await;
        assert_eq!(raw.recv().await, Some(v4::Packet::PingResp));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(b.broker.is_connected(&user_principal("alice")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_kicks_the_first_connection() {
    let b = start().await;
    let mut first = V5::connected(v5_options("same", Some("alice"), b.tcp)).await;
    b.hooks.connected("same").await;
    let _second = V5::connected(v5_options("same", Some("alice"), b.tcp)).await;
    assert_eq!(
        first.server_disconnect().await,
        DisconnectReasonCode::SessionTakenOver
    );
    assert_eq!(
        b.hooks.disconnected("same").await,
        DisconnectReason::SessionTakenOver
    );
    assert_eq!(b.broker.connection_count(), 1);

    let mut old = V4::connected(v4_options("same4", Some("bob"), b.tcp)).await;
    let _new = V4::connected(v4_options("same4", Some("bob"), b.tcp)).await;
    old.closed().await;
    assert_eq!(
        b.hooks.disconnected("same4").await,
        DisconnectReason::SessionTakenOver
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_by_principal_kicks_every_connection() {
    let b = start().await;
    let mut c1 = V4::connected(v4_options("k1", Some("alice"), b.tcp)).await;
    let mut c2 = V5::connected(v5_options("k2", Some("alice"), b.tcp)).await;
    let _bob = V4::connected(v4_options("k3", Some("bob"), b.tcp)).await;
    let alice = user_principal("alice");
    assert!(b.broker.is_connected(&alice));
    assert_eq!(
        b.broker
            .disconnect(&alice, DisconnectReason::Kicked("device disabled".into())),
        2
    );
    c1.closed().await;
    assert_eq!(
        c2.server_disconnect().await,
        DisconnectReasonCode::AdministrativeAction
    );
    for id in ["k1", "k2"] {
        assert_eq!(
            b.hooks.disconnected(id).await,
            DisconnectReason::Kicked("device disabled".into())
        );
    }
    assert!(!b.broker.is_connected(&alice));
    assert!(b.broker.is_connected(&user_principal("bob")));
    assert_eq!(
        b.broker
            .disconnect(&alice, DisconnectReason::CredentialRevoked),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_and_close_sends_one_message_then_closes() {
    let b = start().await;
    let mut raw = Raw::open(b.tcp).await;
    let mut connect = v4::Connect::new("pk.dev1|securemode=2,authType=register|");
    connect.set_login("register", "sign");
    raw.send(v4::Packet::Connect(connect)).await;
    let got = raw.closed().await;
    assert!(matches!(&got[0], v4::Packet::ConnAck(a) if a.code == v4::ConnectReturnCode::Success));
    assert!(
        matches!(&got[1], v4::Packet::Publish(p) if p.topic == "/ext/register" && p.payload.starts_with(b"{\"deviceSecret\""))
    );
    assert_eq!(got.len(), 2);
    assert_eq!(b.broker.connection_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connects_get_the_versions_codes() {
    let b = start().await;
    let mut wrong = v4_options("w", None, b.tcp);
    wrong.set_credentials("alice", "nope");
    assert!(matches!(
        V4::connect(wrong).await.err(),
        Some(rumqttc::ConnectionError::ConnectionRefused(
            v4::ConnectReturnCode::BadUserNamePassword
        ))
    ));
    assert!(matches!(
        V4::connect(v4_options("anon", None, b.tcp)).await.err(),
        Some(rumqttc::ConnectionError::ConnectionRefused(
            v4::ConnectReturnCode::NotAuthorized
        ))
    ));
    // rumqttc will not send an empty client id without clean session; send it raw.
    let mut raw = Raw::open(b.tcp).await;
    let mut no_id = raw_connect("", "alice", 30);
    no_id.clean_session = false;
    raw.send(v4::Packet::Connect(no_id)).await;
    assert!(matches!(
        &raw.closed().await[..],
        [v4::Packet::ConnAck(a)] if a.code == v4::ConnectReturnCode::BadClientId
    ));
    let mut wrong5 = v5_options("w5", None, b.tcp);
    wrong5.set_credentials("bob", "nope");
    assert!(matches!(
        V5::connect(wrong5).await.err(),
        Some(v5c::ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadUserNamePassword
        ))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_empty_client_id_is_assigned_and_keep_alive_capped() {
    let b = start().await;
    let mut opts = v5_options("", Some("alice"), b.tcp);
    opts.set_keep_alive(Duration::from_secs(3600));
    let (_c, ack) = V5::connect(opts).await.unwrap();
    let props = ack.properties.expect("CONNACK properties");
    let assigned = props
        .assigned_client_identifier
        .expect("an assigned client id");
    assert!(assigned.starts_with("lotus-"));
    assert_eq!(props.server_keep_alive, Some(1200));
    b.hooks.connected(&assigned).await;
}
