//! One-product-one-secret: the SDK registers, receives its device secret, then logs in.

mod common;

use common::Fixture;
use lotus_device_sdk::register::{ProductCredentials, register_https, register_mqtt};
use lotus_device_sdk::{Device, DeviceConfig, Error, Posted, TlsConfig};
use lotus_test_harness::node::NodeOptions;
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_registration_then_login() -> anyhow::Result<()> {
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
            Some(json!({"deviceName": "lamp-dyn-1"})),
            201,
        )
        .await?;
    let product = ProductCredentials {
        product_key: f.product_key.clone(),
        product_secret: f.product_secret.clone(),
        device_name: "lamp-dyn-1".into(),
    };
    let wrong = ProductCredentials {
        product_secret: "wrong".into(),
        ..product.clone()
    };
    let e = register_https(&f.node.http, &wrong, None)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Registration(_)), "{e}");

    let creds = register_https(&f.node.http, &product, None).await?;
    assert_eq!(creds.device_name, "lamp-dyn-1");
    assert!(!creds.device_secret.is_empty());
    let device = Device::connect(DeviceConfig::mqtt(
        creds,
        f.node.mqtt.ip().to_string(),
        f.node.mqtt.port(),
    ))
    .await?;
    assert!(matches!(
        device.post_properties(json!({"Power": 1})).await?,
        Posted::Accepted(_)
    ));
    device.close().await;
    // The secret is handed out once.
    let e = register_https(&f.node.http, &product, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("activated"), "{e}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_registration_over_tls_then_tls_login() -> anyhow::Result<()> {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    let dir = tempfile::tempdir()?;
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem())?;
    std::fs::write(&key_path, cert.signing_key.serialize_pem())?;
    let f = Fixture::start_with(
        NodeOptions {
            tls: Some((cert_path, key_path)),
            ..Default::default()
        },
        0,
        json!({"dynamicRegistration": true}),
    )
    .await?;
    let tls_addr = f.node.mqtt_tls.expect("TLS listener");
    f.node
        .expect(
            Method::POST,
            &format!("/api/v1/products/{}/devices", f.product_key),
            Some(json!({"deviceName": "lamp-dyn-2"})),
            201,
        )
        .await?;
    let tls = TlsConfig {
        ca_pem: Some(cert.cert.pem().into_bytes()),
    };
    let creds = register_mqtt(
        "127.0.0.1",
        tls_addr.port(),
        &tls,
        &ProductCredentials {
            product_key: f.product_key.clone(),
            product_secret: f.product_secret.clone(),
            device_name: "lamp-dyn-2".into(),
        },
    )
    .await?;
    // Logs in over TLS (securemode=2) with the secret it received.
    let device =
        Device::connect(DeviceConfig::mqtt(creds, "127.0.0.1", tls_addr.port()).tls(tls)).await?;
    assert!(matches!(
        device.post_properties(json!({"Brightness": 5})).await?,
        Posted::Accepted(_)
    ));
    device.close().await;
    Ok(())
}
