//! Application credentials: an application logs in with the credential an operator created
//! and is confined to its granted topic filters; deleting the credential disconnects it.

use std::time::Duration;

use lotus_e2e::{Fixture, sys};
use lotus_test_harness::device::{DeviceCredentials, mqtt_options};
use lotus_test_harness::mqtt::{Client, Refused};
use reqwest::Method;
use rumqttc::{ConnectReturnCode, MqttOptions, QoS, SubscribeReasonCode};
use serde_json::{Value, json};

fn app_options(f: &Fixture, client_id: &str, username: &str, secret: &str) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, f.node.mqtt.ip().to_string(), f.node.mqtt.port());
    o.set_credentials(username, secret);
    o.set_keep_alive(Duration::from_secs(30));
    o
}

fn user_update(d: &DeviceCredentials) -> String {
    format!("/{}/{}/user/update", d.product_key, d.device_name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_receives_its_grants_only_and_is_kicked_on_delete() -> anyhow::Result<()> {
    let f = Fixture::start(2).await?;
    let pk = &f.product_key;
    let other = f
        .node
        .expect(
            Method::POST,
            "/api/v1/products",
            Some(json!({"name": "Water meter", "nodeType": "direct", "dataFormat": "alink"})),
            201,
        )
        .await?;
    let other_pk = other["productKey"].as_str().unwrap().to_string();

    // Creation: the secret is shown once.
    let created = f
        .node
        .expect(
            Method::POST,
            "/api/v1/app-credentials",
            Some(json!({
                "name": "City dashboard",
                "grants": [{"filter": format!("/{pk}/+/user/update"), "actions": ["subscribe"]}],
            })),
            201,
        )
        .await?;
    let id = created["id"].as_i64().unwrap();
    let username = created["username"].as_str().unwrap().to_string();
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(username.starts_with("app."), "{created}");
    assert_eq!(secret.len(), 32);
    let shown = f
        .node
        .expect(
            Method::GET,
            &format!("/api/v1/app-credentials/{id}"),
            None,
            200,
        )
        .await?;
    assert!(shown.get("secret").is_none(), "{shown}");
    assert_eq!(shown["grants"], created["grants"]);
    let listed = f
        .node
        .expect(Method::GET, "/api/v1/app-credentials", None, 200)
        .await?;
    assert_eq!(listed["total"], 1);
    assert!(listed["items"][0].get("secret").is_none());

    // The app subscribes within its grant; everything else is refused.
    let mut app = Client::connected(app_options(&f, "dashboard-1", &username, &secret)).await?;
    assert_eq!(
        app.subscribe(&format!("/{pk}/+/user/update"), QoS::AtLeastOnce)
            .await?,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );
    for filter in [
        "#".to_string(),
        "/#".to_string(),
        format!("/{pk}/#"),
        format!("/{other_pk}/+/user/update"),
        format!("/sys/{other_pk}/+/thing/event/property/post"),
        format!("/sys/{pk}/+/thing/service/property/set"),
    ] {
        assert_eq!(
            app.subscribe(&filter, QoS::AtLeastOnce).await?,
            SubscribeReasonCode::Failure,
            "subscribing to {filter} must be refused"
        );
    }

    // Two devices publish; the app receives both.
    let d0 = Client::connected(mqtt_options(&f.devices[0], f.node.mqtt)).await?;
    let d1 = Client::connected(mqtt_options(&f.devices[1], f.node.mqtt)).await?;
    d0.publish(&user_update(&f.devices[0]), QoS::AtLeastOnce, "from-0")
        .await?;
    assert_eq!(
        &app.expect_publish(&user_update(&f.devices[0])).await?[..],
        b"from-0"
    );
    d1.publish(&user_update(&f.devices[1]), QoS::AtLeastOnce, "from-1")
        .await?;
    assert_eq!(
        &app.expect_publish(&user_update(&f.devices[1])).await?[..],
        b"from-1"
    );

    // Without a publish grant the app cannot post as a device: nothing is stored.
    app.publish(
        &sys(&f.devices[0], "thing/event/property/post"),
        QoS::AtLeastOnce,
        json!({"id": "1", "params": {"Brightness": 42}}).to_string(),
    )
    .await?;
    app.expect_no_publish(Duration::from_millis(300)).await?;
    let latest = f.latest_properties(0).await?;
    assert_eq!(latest, json!([]));

    // A device cannot log in with the app credential, nor the app with a device's.
    let mut as_device = mqtt_options(&f.devices[0], f.node.mqtt);
    as_device.set_credentials(
        format!("{}&{}", f.devices[0].device_name, pk),
        secret.clone(),
    );
    assert!(
        Client::connect(as_device).await?.is_err(),
        "the app secret must not work as a device password"
    );
    let (_, _, device_password) = lotus_test_harness::device::signed_login(
        &f.devices[0],
        &f.devices[0].device_name,
        lotus_model::alink::SignMethod::HmacSha256,
        None,
    );
    for password in [
        device_password.as_str(),
        f.devices[0].device_secret.as_str(),
    ] {
        match Client::connect(app_options(&f, "thief", &username, password)).await? {
            Err(Refused::Code(ConnectReturnCode::BadUserNamePassword)) => {}
            Err(other) => anyhow::bail!("expected bad credentials, got {other:?}"),
            Ok(_) => anyhow::bail!("a device's credentials opened the application login"),
        }
    }

    // Deleting the credential disconnects the app and it cannot come back.
    f.node
        .expect(
            Method::DELETE,
            &format!("/api/v1/app-credentials/{id}"),
            None,
            204,
        )
        .await?;
    app.expect_closed().await?;
    assert!(matches!(
        Client::connect(app_options(&f, "dashboard-1", &username, &secret)).await?,
        Err(Refused::Code(ConnectReturnCode::BadUserNamePassword))
    ));
    f.node
        .expect(
            Method::GET,
            &format!("/api/v1/app-credentials/{id}"),
            None,
            404,
        )
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_are_validated_and_changes_apply_at_once() -> anyhow::Result<()> {
    let f = Fixture::start(1).await?;
    let pk = f.product_key.clone();
    let create = |grants: Value| {
        f.node.api(
            Method::POST,
            "/api/v1/app-credentials",
            Some(json!({"name": "x", "grants": grants})),
        )
    };
    for (grants, field) in [
        (json!([{"filter": format!("/{pk}/a#")}]), "grants[0].filter"),
        (json!([{"filter": "#"}]), "grants[0].filter"),
        (
            json!([{"filter": format!("/{pk}/+/user/update")}, {"filter": "/nope/+/user/update"}]),
            "grants[1].filter: unknown product 'nope'",
        ),
        (
            json!([{"filter": "/sys/+/+/thing/event/property/post"}]),
            "grants[0].filter",
        ),
        (
            json!([{"filter": format!("/{pk}/+/user/get"), "actions": ["listen"]}]),
            "grants[0].actions[0]",
        ),
        (
            json!([{"filter": format!("/sys/{pk}/+/thing/service/property/set"), "actions": ["publish"]}]),
            "grants[0].filter",
        ),
        (json!([]), "grants"),
    ] {
        let (status, body) = create(grants.clone()).await?;
        assert_eq!(status.as_u16(), 422, "{grants}: {body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(field), "{grants}: {detail}");
    }

    // Publish grant: the app may send what devices receive (`user/get`), nothing else.
    let created = f
        .node
        .expect(
            Method::POST,
            "/api/v1/app-credentials",
            Some(json!({"name": "Operator app", "grants": [
                {"filter": format!("/{pk}/+/user/get"), "actions": ["publish"]},
                {"filter": format!("/{pk}/+/user/update"), "actions": ["subscribe", "publish"]},
            ]})),
            201,
        )
        .await?;
    let id = created["id"].as_i64().unwrap();
    let (username, secret) = (
        created["username"].as_str().unwrap(),
        created["secret"].as_str().unwrap(),
    );
    let dev = &f.devices[0];
    let mut device = Client::connected(mqtt_options(dev, f.node.mqtt)).await?;
    let get_topic = format!("/{pk}/{}/user/get", dev.device_name);
    device.subscribe(&get_topic, QoS::AtLeastOnce).await?;
    let mut app = Client::connected(app_options(&f, "ops", username, secret)).await?;
    app.subscribe(&user_update(dev), QoS::AtLeastOnce).await?;
    app.publish(&get_topic, QoS::AtLeastOnce, "hello device")
        .await?;
    assert_eq!(
        &device.expect_publish(&get_topic).await?[..],
        b"hello device"
    );
    // Forging the device's uplink is refused even with a publish grant.
    app.publish(&user_update(dev), QoS::AtLeastOnce, "forged")
        .await?;
    app.expect_no_publish(Duration::from_millis(300)).await?;

    // Disabling disconnects; the disabled credential is refused; enabling lets it back in.
    f.node
        .expect(
            Method::PATCH,
            &format!("/api/v1/app-credentials/{id}"),
            Some(json!({"enabled": false})),
            200,
        )
        .await?;
    app.expect_closed().await?;
    assert!(matches!(
        Client::connect(app_options(&f, "ops", username, secret)).await?,
        Err(Refused::Code(ConnectReturnCode::NotAuthorized))
    ));
    let patched = f
        .node
        .expect(
            Method::PATCH,
            &format!("/api/v1/app-credentials/{id}"),
            Some(json!({"enabled": true, "name": "Renamed"})),
            200,
        )
        .await?;
    assert_eq!(patched["name"], "Renamed");
    assert!(patched.get("secret").is_none());
    let mut app = Client::connected(app_options(&f, "ops", username, secret)).await?;

    // Narrowing the grants disconnects, and the new grants apply on reconnection.
    f.node
        .expect(
            Method::PATCH,
            &format!("/api/v1/app-credentials/{id}"),
            Some(json!({"grants": [{"filter": format!("/{pk}/+/user/update/error")}]})),
            200,
        )
        .await?;
    app.expect_closed().await?;
    let mut app = Client::connected(app_options(&f, "ops", username, secret)).await?;
    assert_eq!(
        app.subscribe(&user_update(dev), QoS::AtLeastOnce).await?,
        SubscribeReasonCode::Failure
    );
    Ok(())
}
