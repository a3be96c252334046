//! HTTP device access: devices that wake up, authenticate for a token, post and sleep.

use lotus_e2e::{Fixture, sys};
use lotus_model::alink::{SignMethod, connect_sign_content};
use lotus_test_harness::device::DeviceCredentials;
use lotus_test_harness::node::NodeOptions;
use reqwest::Method;
use serde_json::{Value, json};

fn auth_body(creds: &DeviceCredentials, secret: &str) -> Value {
    let client_id = format!("{}.{}", creds.product_key, creds.device_name);
    let timestamp = now_ms().to_string();
    let sign = SignMethod::HmacSha256.sign(
        secret.as_bytes(),
        &connect_sign_content(
            &client_id,
            &creds.device_name,
            &creds.product_key,
            Some(&timestamp),
        ),
    );
    json!({
        "productKey": creds.product_key, "deviceName": creds.device_name,
        "clientId": client_id, "timestamp": timestamp, "signmethod": "hmacsha256", "sign": sign,
    })
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

async fn post_json(
    http: &reqwest::Client,
    url: String,
    body: &Value,
) -> anyhow::Result<(u16, Value)> {
    let r = http.post(url).json(body).send().await?;
    Ok((r.status().as_u16(), r.json().await?))
}

async fn post_topic(
    http: &reqwest::Client,
    base: &str,
    topic: &str,
    token: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> anyhow::Result<(u16, String)> {
    let mut req = http
        .post(format!("{base}/topic{topic}"))
        .header("content-type", "application/octet-stream")
        .body(body);
    if let Some(t) = token {
        req = req.header("password", t);
    }
    let r = req.send().await?;
    Ok((r.status().as_u16(), r.text().await?))
}

fn property_post(id: &str, params: Value) -> String {
    json!({"id": id, "version": "1.0", "params": params, "method": "thing.event.property.post"})
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_posts_over_http_with_a_token_through_the_same_pipeline_and_acl()
-> anyhow::Result<()> {
    let f = Fixture::start(2).await?;
    let http = reqwest::Client::new();
    let base = f.node.http.clone();
    let (lamp, other) = (&f.devices[0], &f.devices[1]);

    // A wrong signature is refused with Alibaba's auth code.
    let (status, body) = post_json(
        &http,
        format!("{base}/auth"),
        &auth_body(lamp, "not-the-secret"),
    )
    .await?;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], 20000);
    assert!(
        body["detail"].as_str().unwrap().contains("signature"),
        "{body}"
    );

    // Malformed JSON says what the body must contain.
    let r = http
        .post(format!("{base}/auth"))
        .body("{not json")
        .send()
        .await?;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await?;
    assert!(
        body["detail"].as_str().unwrap().contains("productKey"),
        "{body}"
    );

    let (status, body) = post_json(
        &http,
        format!("{base}/auth"),
        &auth_body(lamp, &lamp.device_secret),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["code"], 0);
    let token = body["info"]["token"].as_str().unwrap().to_string();

    // A valid post is stored before the answer, which carries the Alink reply.
    let topic = sys(lamp, "thing/event/property/post");
    let (status, text) = post_topic(
        &http,
        &base,
        &topic,
        Some(&token),
        property_post("7", json!({"Brightness": 42, "Power": 1})),
    )
    .await?;
    assert_eq!(status, 200, "{text}");
    let body: Value = serde_json::from_str(&text)?;
    assert_eq!(body["code"], 0);
    assert_eq!(body["info"]["reply"]["code"], 200);
    assert_eq!(body["info"]["reply"]["id"], "7");
    let props = f.latest_properties(0).await?;
    let brightness = props
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["identifier"] == "Brightness")
        .cloned();
    assert_eq!(brightness.unwrap()["value"], 42, "{props}");

    // An invalid value is refused with the reply an MQTT device would get, naming the field.
    let (status, text) = post_topic(
        &http,
        &base,
        &topic,
        Some(&token),
        property_post("8", json!({"Brightness": 150})),
    )
    .await?;
    assert_eq!(status, 400, "{text}");
    let body: Value = serde_json::from_str(&text)?;
    assert_eq!(body["reply"]["code"], 460, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("Brightness"),
        "{body}"
    );

    // The ACL is the MQTT one: another device's topic is forbidden.
    let (status, text) = post_topic(
        &http,
        &base,
        &sys(other, "thing/event/property/post"),
        Some(&token),
        property_post("9", json!({"Brightness": 1})),
    )
    .await?;
    assert_eq!(status, 403, "{text}");

    // No token, or a made-up one: authenticate (again).
    let (status, text) = post_topic(&http, &base, &topic, None, "{}").await?;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("20002") && text.contains("/auth"), "{text}");
    let (status, text) = post_topic(&http, &base, &topic, Some("forged"), "{}").await?;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("20003"), "{text}");

    // A device message is bounded like an MQTT packet.
    let (status, _) =
        post_topic(&http, &base, &topic, Some(&token), vec![b' '; 300 * 1024]).await?;
    assert_eq!(status, 413);

    // Disabling the device revokes its token at once.
    f.node
        .expect(
            Method::POST,
            &format!("{}/disable", f.device_path(0)),
            None,
            200,
        )
        .await?;
    let (status, text) = post_topic(
        &http,
        &base,
        &topic,
        Some(&token),
        property_post("10", json!({"Brightness": 5})),
    )
    .await?;
    assert_eq!(status, 401, "{text}");
    let (status, body) = post_json(
        &http,
        format!("{base}/auth"),
        &auth_body(lamp, &lamp.device_secret),
    )
    .await?;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("disabled"),
        "{body}"
    );

    // Nothing accepted was lost: exactly the one valid post is in the history.
    let history = f
        .node
        .expect(
            Method::GET,
            &format!("{}/properties/Brightness/history", f.device_path(0)),
            None,
            200,
        )
        .await?;
    assert_eq!(history["points"].as_array().unwrap().len(), 1, "{history}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_access_works_over_tls() -> anyhow::Result<()> {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    let dir = tempfile::tempdir()?;
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem())?;
    std::fs::write(&key_path, cert.signing_key.serialize_pem())?;
    let options = NodeOptions {
        tls: Some((cert_path, key_path)),
        ..Default::default()
    };
    let f = Fixture::start_with(options, 1, json!({})).await?;
    let https = f.node.https.expect("an HTTPS listener");
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes())?)
        .build()?;
    let base = format!("https://localhost:{}", https.port());
    let lamp = &f.devices[0];
    let (status, body) = post_json(
        &http,
        format!("{base}/auth"),
        &auth_body(lamp, &lamp.device_secret),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    let token = body["info"]["token"].as_str().unwrap();
    let (status, text) = post_topic(
        &http,
        &base,
        &sys(lamp, "thing/event/property/post"),
        Some(token),
        property_post("1", json!({"Current": 1.5})),
    )
    .await?;
    assert_eq!(status, 200, "{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refused_until_the_device_authenticates_again() -> anyhow::Result<()> {
    let options = NodeOptions {
        extra_env: vec![(
            "LOTUS_AUTH__DEVICE_TOKEN_TTL_SECS".to_string(),
            "1".to_string(),
        )],
        ..Default::default()
    };
    let f = Fixture::start_with(options, 1, json!({})).await?;
    let http = reqwest::Client::new();
    let base = f.node.http.clone();
    let lamp = &f.devices[0];
    let topic = sys(lamp, "thing/event/property/post");
    let token = |body: &Value| body["info"]["token"].as_str().unwrap().to_string();

    let (_, body) = post_json(
        &http,
        format!("{base}/auth"),
        &auth_body(lamp, &lamp.device_secret),
    )
    .await?;
    let old = token(&body);
    let (status, text) = post_topic(
        &http,
        &base,
        &topic,
        Some(&old),
        property_post("1", json!({"Brightness": 10})),
    )
    .await?;
    assert_eq!(status, 200, "{text}");

    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (status, text) = post_topic(
        &http,
        &base,
        &topic,
        Some(&old),
        property_post("2", json!({"Brightness": 20})),
    )
    .await?;
    assert_eq!(status, 401, "{text}");
    let body: Value = serde_json::from_str(&text)?;
    assert_eq!(body["code"], 20001, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("POST /auth"),
        "{body}"
    );

    let (_, body) = post_json(
        &http,
        format!("{base}/auth"),
        &auth_body(lamp, &lamp.device_secret),
    )
    .await?;
    let fresh = token(&body);
    assert_ne!(fresh, old);
    let (status, text) = post_topic(
        &http,
        &base,
        &topic,
        Some(&fresh),
        property_post("3", json!({"Brightness": 30})),
    )
    .await?;
    assert_eq!(status, 200, "{text}");
    Ok(())
}
