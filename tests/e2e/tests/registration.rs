//! One-product-one-secret dynamic registration, over HTTPS and over MQTT (TLS).

use lotus_e2e::Fixture;
use lotus_model::alink::{SignMethod, register_sign_content};
use lotus_test_harness::device::{DeviceCredentials, mqtt_options};
use lotus_test_harness::mqtt::Client;
use lotus_test_harness::node::NodeOptions;
use reqwest::Method;
use rumqttc::{Event, MqttOptions, Packet, TlsConfiguration, Transport};
use serde_json::{Value, json};

async fn register_https(f: &Fixture, dn: &str, secret: &str) -> anyhow::Result<(u16, Value)> {
    let random = "8yT2kNs";
    let sign = SignMethod::HmacSha256.sign(
        secret.as_bytes(),
        &register_sign_content(dn, &f.product_key, random),
    );
    let resp = reqwest::Client::new()
        .post(format!("{}/auth/register/device", f.node.http))
        .form(&[
            ("productKey", f.product_key.as_str()),
            ("deviceName", dn),
            ("random", random),
            ("sign", &sign),
            ("signMethod", "hmacsha256"),
        ])
        .send()
        .await?;
    Ok((resp.status().as_u16(), resp.json().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_registration_issues_the_secret_once() -> anyhow::Result<()> {
    let f = Fixture::start_with(
        NodeOptions::default(),
        0,
        json!({"dynamicRegistration": true}),
    )
    .await?;
    f.node
        .expect(
            Method::POST,
            &format!("/api/v1/products/{}/devices", f.product_key),
            Some(json!({"deviceName": "meter-0001"})),
            201,
        )
        .await?;
    let (status, wrong) = register_https(&f, "meter-0001", "wrong-secret").await?;
    assert_eq!(status, 403);
    assert!(wrong["message"].as_str().unwrap().contains("sign"));

    let (status, body) = register_https(&f, "meter-0001", &f.product_secret).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["code"], 200);
    let creds = DeviceCredentials {
        product_key: f.product_key.clone(),
        device_name: "meter-0001".into(),
        device_secret: body["data"]["deviceSecret"].as_str().unwrap().to_string(),
    };
    Client::connected(mqtt_options(&creds, f.node.mqtt))
        .await?
        .disconnect()
        .await;
    // Activated: the secret is not handed out again.
    let (status, again) = register_https(&f, "meter-0001", &f.product_secret).await?;
    assert_eq!(status, 403);
    assert!(again["message"].as_str().unwrap().contains("activated"));
    // Not pre-created.
    let (status, _) = register_https(&f, "meter-9999", &f.product_secret).await?;
    assert_eq!(status, 403);
    Ok(())
}

fn self_signed() -> anyhow::Result<(
    tempfile::TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
    Vec<u8>,
)> {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    let dir = tempfile::tempdir()?;
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem())?;
    std::fs::write(&key_path, cert.signing_key.serialize_pem())?;
    Ok((dir, cert_path, key_path, cert.cert.pem().into_bytes()))
}

/// Connects over TLS and returns what the platform publishes before it closes the connection.
async fn mqtt_register(
    addr: std::net::SocketAddr,
    ca: &[u8],
    client_id: &str,
    user: &str,
    pass: &str,
) -> anyhow::Result<Value> {
    let mut o = MqttOptions::new(client_id, "127.0.0.1", addr.port());
    o.set_credentials(user, pass);
    o.set_transport(Transport::Tls(TlsConfiguration::Simple {
        ca: ca.to_vec(),
        alpn: None,
        client_auth: None,
    }));
    let (_client, mut el) = rumqttc::AsyncClient::new(o, 10);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, el.poll()).await? {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                assert_eq!(p.topic, "/ext/register");
                return Ok(serde_json::from_slice(&p.payload)?);
            }
            Ok(_) => continue,
            Err(e) => anyhow::bail!("connection ended before the registration reply: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_registration_over_tls_with_and_without_pre_creation() -> anyhow::Result<()> {
    // The test process links rustls with more than one crypto provider; pick one.
    let _ = rumqttc::tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let (_dir, cert, key, ca) = self_signed()?;
    let options = NodeOptions {
        tls: Some((cert, key)),
        ..Default::default()
    };
    let f = Fixture::start_with(
        options,
        0,
        json!({"dynamicRegistration": true, "allowUnregistered": true}),
    )
    .await?;
    let tls = f.node.mqtt_tls.expect("TLS listener");
    let pk = &f.product_key;
    f.node
        .expect(
            Method::POST,
            &format!("/api/v1/products/{pk}/devices"),
            Some(json!({"deviceName": "meter-0002"})),
            201,
        )
        .await?;

    // authType=register: the pre-created device's secret.
    let random = "a1b2c3";
    let sign = SignMethod::HmacSha256.sign(
        f.product_secret.as_bytes(),
        &register_sign_content("meter-0002", pk, random),
    );
    let id = format!(
        "meter-0002.{pk}|random={random},authType=register,securemode=2,signmethod=hmacsha256|"
    );
    let reply = mqtt_register(tls, &ca, &id, &format!("meter-0002&{pk}"), &sign).await?;
    assert_eq!(reply["deviceName"], "meter-0002");
    let creds = DeviceCredentials {
        product_key: pk.clone(),
        device_name: "meter-0002".into(),
        device_secret: reply["deviceSecret"].as_str().unwrap().to_string(),
    };
    Client::connected(mqtt_options(&creds, f.node.mqtt))
        .await?
        .disconnect()
        .await;

    // securemode=2 over plain TCP is refused: the device believes it is encrypted.
    let r = Client::connect({
        let mut o = MqttOptions::new(id.clone(), f.node.mqtt.ip().to_string(), f.node.mqtt.port());
        o.set_credentials(format!("meter-0002&{pk}"), sign.clone());
        o
    })
    .await?;
    assert!(r.is_err());

    // authType=regnwl: a device that was never created gets a client id and token.
    let sign = SignMethod::HmacSha256.sign(
        f.product_secret.as_bytes(),
        &register_sign_content("meter-0003", pk, random),
    );
    let id = format!(
        "meter-0003.{pk}|random={random},authType=regnwl,securemode=-2,signmethod=hmacsha256,instanceId=x|"
    );
    let reply = mqtt_register(tls, &ca, &id, &format!("meter-0003&{pk}"), &sign).await?;
    let client_id = reply["clientId"].as_str().unwrap().to_string();
    let token = reply["deviceToken"].as_str().unwrap().to_string();
    let mut o = MqttOptions::new(client_id, f.node.mqtt.ip().to_string(), f.node.mqtt.port());
    o.set_credentials(format!("meter-0003&{pk}"), token);
    Client::connected(o).await?.disconnect().await;
    let dev = f
        .node
        .expect(
            Method::GET,
            &format!("/api/v1/products/{pk}/devices/meter-0003"),
            None,
            200,
        )
        .await?;
    assert_ne!(dev["status"], "inactive");
    Ok(())
}
