//! WebSocket and TLS listeners, hostile bytes, binding, and shutdown.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use common::{Raw, V4, V5, start, v4_options, v5_options, v5c};
use lotus_mqtt::{DisconnectReason, QoS, bind_tcp, load_tls_config};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5::DisconnectReasonCode;
use tokio_rustls::rustls;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_client_round_trip() {
    let b = start().await;
    let url = format!("ws://127.0.0.1:{}/mqtt", b.ws.port());
    let mut opts = rumqttc::MqttOptions::new("ws-client", url, b.ws.port());
    opts.set_transport(rumqttc::Transport::Ws);
    opts.set_credentials("alice", "pw");
    let mut ws = V4::connected(opts).await;
    ws.subscribe("ws/#", rumqttc::QoS::AtLeastOnce).await;
    // Large enough to span several reads.
    let payload = vec![b'x'; 6000];
    ws.publish_acked("ws/echo", rumqttc::QoS::AtLeastOnce, &payload)
        .await;
    assert_eq!(ws.expect_publish().await.payload.len(), 6000);
    b.hooks.connected("ws-client").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_round_trip() {
    let b = start().await;
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let dir = std::env::temp_dir().join(format!("lotus-mqtt-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let server = load_tls_config(&cert_path, &key_path).unwrap();
    assert!(
        load_tls_config(&key_path, &key_path).is_err(),
        "a key is not a certificate"
    );

    let listener = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    b.broker.serve_tls(listener, server);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut opts = v5_options("tls-client", Some("bob"), addr);
    opts.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(Arc::new(client)),
    ));
    let mut c = V5::connected(opts).await;
    c.subscribe("secure/#", v5c::QoS::ExactlyOnce).await;
    c.publish("secure/1", v5c::QoS::ExactlyOnce, b"sealed")
        .await;
    assert_eq!(&c.expect_publish().await.payload[..], b"sealed");
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bytes_close_only_that_connection() {
    let b = start().await;
    let mut good = V4::connected(v4_options("good", Some("alice"), b.tcp)).await;
    good.subscribe("still/#", rumqttc::QoS::AtLeastOnce).await;

    // Garbage instead of CONNECT.
    let mut raw = Raw::open(b.tcp).await;
    raw.send_bytes(&[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x02])
        .await;
    assert!(raw.closed().await.is_empty());

    // Garbage after a good CONNECT: a PUBLISH whose topic runs past the packet.
    let mut raw = Raw::connect(b.tcp, common::raw_connect("evil", "bob", 30)).await;
    raw.send_bytes(&[0x30, 0x03, 0x00, 0x09, b'a']).await;
    assert!(raw.closed().await.is_empty());
    assert!(matches!(
        b.hooks.disconnected("evil").await,
        DisconnectReason::ProtocolError(_)
    ));

    // A packet over the size limit.
    let mut raw = Raw::connect(b.tcp, common::raw_connect("big", "bob", 30)).await;
    raw.send_bytes(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F]).await;
    assert!(raw.closed().await.is_empty());

    // An invalid topic name (NUL); v5 is told why.
    let mut v5 = V5::connected(v5_options("wild", Some("bob"), b.tcp)).await;
    v5.publish("still/\0", v5c::QoS::AtMostOnce, b"x").await;
    assert_eq!(
        v5.server_disconnect().await,
        DisconnectReasonCode::TopicNameInvalid
    );

    // MQTT 3.1 is refused with "unacceptable protocol version".
    let mut raw = Raw::open(b.tcp).await;
    raw.send_bytes(&[
        0x10, 0x0C, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 60,
    ])
    .await;
    let got = raw.closed().await;
    assert!(
        matches!(&got[..], [v4::Packet::ConnAck(a)] if a.code == v4::ConnectReturnCode::RefusedProtocolVersion)
    );

    b.broker
        .publish(
            "still/alive",
            Bytes::from_static(b"y"),
            QoS::AtLeastOnce,
            false,
        )
        .await;
    assert_eq!(good.expect_publish().await.topic, "still/alive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_and_ipv6_listeners_share_a_port() {
    let v6 = match bind_tcp("[::1]:0".parse().unwrap()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("IPv6 is not available here ({e}); nothing to check");
            return;
        }
    };
    let port = v6.local_addr().unwrap().port();
    let v4addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let v4 = bind_tcp(v4addr).expect("the IPv6 socket is IPv6-only");
    assert_eq!(v4.local_addr().unwrap().port(), port);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_tells_v5_clients_and_stops_accepting() {
    let b = start().await;
    let mut c5 = V5::connected(v5_options("c5", Some("alice"), b.tcp)).await;
    let mut c4 = V4::connected(v4_options("c4", Some("bob"), b.tcp)).await;
    b.broker.shutdown().await;
    assert_eq!(
        c5.server_disconnect().await,
        DisconnectReasonCode::ServerShuttingDown
    );
    c4.closed().await;
    assert_eq!(b.broker.connection_count(), 0);
    assert_eq!(
        b.hooks.disconnected("c4").await,
        DisconnectReason::ServerShutdown
    );
    assert!(
        V4::connect(v4_options("late", Some("alice"), b.tcp))
            .await
            .is_err()
    );
}
