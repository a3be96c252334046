//! Devices connect the way Alibaba's Link SDK connects them; wrong credentials are refused.

use lotus_e2e::Fixture;
use lotus_model::alink::SignMethod;
use lotus_test_harness::device::{DeviceCredentials, mqtt_options, signed_login};
use lotus_test_harness::mqtt::{Client, Refused};
use reqwest::Method;
use rumqttc::{ConnectReturnCode, MqttOptions};
use serde_json::json;

fn options(addr: std::net::SocketAddr, id: &str, user: &str, pass: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_credentials(user, pass);
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_connect_with_every_sign_method_and_timestamp_form() -> anyhow::Result<()> {
    let f = Fixture::start(1).await?;
    let d = &f.devices[0];
    for (method, ts) in [
        (SignMethod::HmacSha1, Some("1700000000000")),
        (SignMethod::HmacSha256, Some("1700000000")),
        (SignMethod::HmacMd5, None),
    ] {
        let (id, user, pass) = signed_login(d, "client-1", method, ts);
        let c = Client::connected(options(f.node.mqtt, &id, &user, &pass)).await?;
        c.disconnect().await;
    }
    // Unknown client-id parameters that SDK versions add are ignored.
    let content =
        lotus_model::alink::connect_sign_content("x", &d.device_name, &d.product_key, Some("1"));
    let pass = SignMethod::HmacSha1.sign(d.device_secret.as_bytes(), &content);
    let id = "x|securemode=3,signmethod=hmacsha1,timestamp=1,ext=3,_ss=1,lan=C,_v=4.0.0|";
    let c = Client::connected(options(
        f.node.mqtt,
        id,
        &format!("{}&{}", d.device_name, d.product_key),
        &pass,
    ))
    .await?;
    c.disconnect().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_refused() -> anyhow::Result<()> {
    let f = Fixture::start(2).await?;
    let d = &f.devices[0];

    // Wrong signature.
    let wrong = DeviceCredentials {
        device_secret: "not-the-secret".into(),
        ..d.clone()
    };
    let r = Client::connect(mqtt_options(&wrong, f.node.mqtt)).await?;
    assert_eq!(
        r.err(),
        Some(Refused::Code(ConnectReturnCode::BadUserNamePassword))
    );

    // Unknown device.
    let unknown = DeviceCredentials {
        device_name: "no-such-device".into(),
        ..d.clone()
    };
    let r = Client::connect(mqtt_options(&unknown, f.node.mqtt)).await?;
    assert_eq!(
        r.err(),
        Some(Refused::Code(ConnectReturnCode::BadUserNamePassword))
    );

    // Unknown product.
    let other = DeviceCredentials {
        product_key: "a1NoProduct".into(),
        ..d.clone()
    };
    let r = Client::connect(mqtt_options(&other, f.node.mqtt)).await?;
    assert_eq!(
        r.err(),
        Some(Refused::Code(ConnectReturnCode::NotAuthorized))
    );

    // Disabled device, then enabled again.
    f.node
        .expect(
            Method::POST,
            &format!("{}/disable", f.device_path(1)),
            None,
            200,
        )
        .await?;
    let r = Client::connect(mqtt_options(&f.devices[1], f.node.mqtt)).await?;
    assert_eq!(
        r.err(),
        Some(Refused::Code(ConnectReturnCode::NotAuthorized))
    );
    assert_eq!(
        f.node
            .expect(Method::GET, &f.device_path(1), None, 200)
            .await?["status"],
        "disabled"
    );
    f.node
        .expect(
            Method::POST,
            &format!("{}/enable", f.device_path(1)),
            None,
            200,
        )
        .await?;
    Client::connected(mqtt_options(&f.devices[1], f.node.mqtt))
        .await?
        .disconnect()
        .await;

    // No credentials at all (anonymous is off by default).
    let r = Client::connect(MqttOptions::new(
        "anon",
        f.node.mqtt.ip().to_string(),
        f.node.mqtt.port(),
    ))
    .await?;
    assert_eq!(
        r.err(),
        Some(Refused::Code(ConnectReturnCode::BadUserNamePassword))
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_window_refuses_old_timestamps_when_configured() -> anyhow::Result<()> {
    let f = Fixture::start(1).await?;
    let d = &f.devices[0];
    // Off by default: a constant timestamp from a device without a clock is fine.
    let (id, user, pass) = signed_login(d, "c", SignMethod::HmacSha256, Some("1700000000000"));
    Client::connected(options(f.node.mqtt, &id, &user, &pass))
        .await?
        .disconnect()
        .await;

    f.node
        .expect(
            Method::PATCH,
            &format!("/api/v1/products/{}", f.product_key),
            Some(json!({"replayWindowSecs": 300})),
            200,
        )
        .await?;
    let r = Client::connect(options(f.node.mqtt, &id, &user, &pass)).await?;
    assert_eq!(
        r.err(),
        Some(Refused::Code(ConnectReturnCode::NotAuthorized))
    );
    // A current timestamp, in seconds, is inside the window.
    let now = (lotus_test_harness::now_ms() / 1000).to_string();
    let (id, user, pass) = signed_login(d, "c", SignMethod::HmacSha256, Some(&now));
    Client::connected(options(f.node.mqtt, &id, &user, &pass))
        .await?
        .disconnect()
        .await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_offline_with_reasons() -> anyhow::Result<()> {
    let f = Fixture::start(2).await?;
    let d0 = f
        .node
        .expect(Method::GET, &f.device_path(0), None, 200)
        .await?;
    assert_eq!(d0["status"], "inactive");

    // Clean disconnect.
    let c = Client::connected(mqtt_options(&f.devices[0], f.node.mqtt)).await?;
    let online = f.wait_status(0, "online").await?;
    assert!(online["firstOnlineAt"].as_i64().is_some());
    c.disconnect().await;
    let offline = f.wait_status(0, "offline").await?;
    assert_eq!(offline["lastOfflineReason"], "client_disconnect");

    // Keep-alive timeout: a client that stops talking. rumqttc pings on its own, so use a raw
    // TCP client that sends CONNECT with keep-alive 1 s and then nothing.
    let (id, user, pass) = signed_login(&f.devices[1], "raw", SignMethod::HmacSha256, None);
    let mut connect = rumqttc::mqttbytes::v4::Connect::new(id);
    connect.keep_alive = 1;
    connect.set_login(user, pass);
    let mut buf = bytes::BytesMut::new();
    rumqttc::mqttbytes::v4::Packet::Connect(connect).write(&mut buf, 1 << 20)?;
    let mut sock = tokio::net::TcpStream::connect(f.node.mqtt).await?;
    tokio::io::AsyncWriteExt::write_all(&mut sock, &buf).await?;
    f.wait_status(1, "online").await?;
    let offline = f.wait_status(1, "offline").await?;
    assert_eq!(offline["lastOfflineReason"], "keepalive_timeout");

    // Network drop without DISCONNECT.
    let c = Client::connected(mqtt_options(&f.devices[0], f.node.mqtt)).await?;
    f.wait_status(0, "online").await?;
    c.abort();
    let offline = f.wait_status(0, "offline").await?;
    assert_eq!(offline["lastOfflineReason"], "transport_closed");

    let log = f
        .node
        .expect(
            Method::GET,
            &format!("{}/status-log", f.device_path(0)),
            None,
            200,
        )
        .await?;
    let reasons: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "transport_closed",
            "connected",
            "client_disconnect",
            "connected"
        ]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_or_disabling_a_device_kicks_it() -> anyhow::Result<()> {
    let f = Fixture::start(2).await?;
    let mut c = Client::connected(mqtt_options(&f.devices[0], f.node.mqtt)).await?;
    f.wait_status(0, "online").await?;
    f.node
        .expect(Method::DELETE, &f.device_path(0), None, 204)
        .await?;
    c.expect_closed().await?;
    // The secret is revoked: reconnecting fails.
    let r = Client::connect(mqtt_options(&f.devices[0], f.node.mqtt)).await?;
    assert!(r.is_err());
    f.node
        .expect(Method::GET, &f.device_path(0), None, 404)
        .await?;

    let mut c = Client::connected(mqtt_options(&f.devices[1], f.node.mqtt)).await?;
    f.wait_status(1, "online").await?;
    f.node
        .expect(
            Method::POST,
            &format!("{}/disable", f.device_path(1)),
            None,
            200,
        )
        .await?;
    c.expect_closed().await?;
    let d = f
        .wait_device(1, |d| d["lastOfflineReason"] == "kicked")
        .await?;
    assert_eq!(d["status"], "disabled");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_of_the_same_device_takes_over() -> anyhow::Result<()> {
    let f = Fixture::start(1).await?;
    let mut first = Client::connected(mqtt_options(&f.devices[0], f.node.mqtt)).await?;
    f.wait_status(0, "online").await?;
    let second = Client::connected(mqtt_options(&f.devices[0], f.node.mqtt)).await?;
    first.expect_closed().await?;
    // The takeover must not mark the device offline.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        f.node
            .expect(Method::GET, &f.device_path(0), None, 200)
            .await?["status"],
        "online"
    );
    second.disconnect().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_connect_over_websocket_and_ipv6() -> anyhow::Result<()> {
    let options = lotus_test_harness::node::NodeOptions {
        extra_args: vec![
            "--mqtt-listen".into(),
            "127.0.0.1:0".into(),
            "--mqtt-listen".into(),
            "[::1]:0".into(),
        ],
        ..Default::default()
    };
    let f = Fixture::start_with(options, 2, json!({})).await?;

    // WebSocket: the same signed login inside `ws://host:port/mqtt`.
    let (id, user, pass) = signed_login(&f.devices[0], "ws-1", SignMethod::HmacSha256, None);
    let mut o = MqttOptions::new(
        id,
        format!("ws://{}/mqtt", f.node.mqtt_ws),
        f.node.mqtt_ws.port(),
    );
    o.set_transport(rumqttc::Transport::Ws);
    o.set_credentials(user, pass);
    let ws = Client::connected(o).await?;
    f.wait_status(0, "online").await?;
    ws.disconnect().await;

    // IPv6 loopback.
    let v6: std::net::SocketAddr = f.node.listening["mqtt"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str()?.parse().ok())
        .find(|a: &std::net::SocketAddr| a.is_ipv6())
        .expect("an IPv6 MQTT listener");
    let (id, user, pass) = signed_login(&f.devices[1], "v6", SignMethod::HmacSha256, None);
    let mut o = MqttOptions::new(id, v6.ip().to_string(), v6.port());
    o.set_credentials(user, pass);
    Client::connected(o).await?.disconnect().await;
    f.wait_status(1, "offline").await?;
    Ok(())
}
