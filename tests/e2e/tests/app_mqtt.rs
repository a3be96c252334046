//! Registered apps on MQTT: an app of the app registry logs in to the broker with its client id
//! and secret and is confined to its `resources.topics` grants, as an application credential is
//! to its grants; taking it offline, changing its grants, rotating its secret or deleting it
//! ends its sessions, and so does moving a product its grants name out of (or back into) its
//! scope. `lotus app` grants topics to subscribe and to publish.

use std::time::Duration;

use lotus_e2e::{Fixture, sys};
use lotus_test_harness::device::{DeviceCredentials, mqtt_options};
use lotus_test_harness::mqtt::{Client, Refused};
use lotus_test_harness::node::binary;
use reqwest::Method;
use rumqttc::{ConnectReturnCode, MqttOptions, QoS, SubscribeReasonCode};
use serde_json::{Value, json};

fn app_options(f: &Fixture, mqtt_client_id: &str, client_id: &str, secret: &str) -> MqttOptions {
    let mut o = MqttOptions::new(
        mqtt_client_id,
        f.node.mqtt.ip().to_string(),
        f.node.mqtt.port(),
    );
    o.set_credentials(client_id, secret);
    o.set_keep_alive(Duration::from_secs(30));
    o
}

fn user_update(d: &DeviceCredentials) -> String {
    format!("/{}/{}/user/update", d.product_key, d.device_name)
}

fn user_get(d: &DeviceCredentials) -> String {
    format!("/{}/{}/user/get", d.product_key, d.device_name)
}

/// Registers an app with these topic grants; returns (client id, secret, the answer).
async fn register(f: &Fixture, extra: Value) -> anyhow::Result<(String, String, Value)> {
    let mut body = json!({"name": "Lighting dashboard", "type": "dashboard"});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    let app = f
        .node
        .expect(Method::POST, "/api/v1/apps", Some(body), 201)
        .await?;
    Ok((
        app["clientId"].as_str().unwrap().to_string(),
        app["secret"].as_str().unwrap().to_string(),
        app,
    ))
}

async fn create_product(f: &Fixture, name: &str, extra: Value) -> anyhow::Result<String> {
    let mut body = json!({"name": name, "nodeType": "direct", "dataFormat": "alink"});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    let p = f
        .node
        .expect(Method::POST, "/api/v1/products", Some(body), 201)
        .await?;
    Ok(p["productKey"].as_str().unwrap().to_string())
}

async fn refused(options: MqttOptions) -> anyhow::Result<ConnectReturnCode> {
    match Client::connect(options).await? {
        Err(Refused::Code(code)) => Ok(code),
        Err(other) => anyhow::bail!("expected a refusing CONNACK, got {other:?}"),
        Ok(_) => anyhow::bail!("the broker accepted the connection"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_subscribes_and_publishes_within_its_topic_grants() -> anyhow::Result<()> {
    let f = Fixture::start(1).await?;
    let pk = f.product_key.clone();
    let dev = &f.devices[0];
    let other_pk = create_product(&f, "Water meter", json!({})).await?;
    let (client_id, secret, app) = register(
        &f,
        json!({"resources": {"topics": [
            format!("/{pk}/+/user/update"),
            {"filter": format!("/{pk}/+/user/get"), "actions": ["publish"]},
            {"filter": format!("/{pk}/+/user/update"), "actions": ["subscribe"]},
        ]}}),
    )
    .await?;
    // One spelling per grant: a subscribe-only grant is its bare filter; duplicates dropped.
    assert_eq!(
        app["resources"]["topics"],
        json!([format!("/{pk}/+/user/update"),
               {"filter": format!("/{pk}/+/user/get"), "actions": ["publish"]}]),
        "{app}"
    );

    let mut app = Client::connected(app_options(&f, "dashboard-1", &client_id, &secret)).await?;
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
        format!("/sys/{pk}/+/thing/event/property/post"),
        // A publish grant does not let the app listen.
        format!("/{pk}/+/user/get"),
    ] {
        assert_eq!(
            app.subscribe(&filter, QoS::AtLeastOnce).await?,
            SubscribeReasonCode::Failure,
            "subscribing to {filter} must be refused"
        );
    }

    // The device publishes with its own credentials; the app receives it.
    let mut device = Client::connected(mqtt_options(dev, f.node.mqtt)).await?;
    device
        .publish(&user_update(dev), QoS::AtLeastOnce, "from the lamp")
        .await?;
    assert_eq!(
        &app.expect_publish(&user_update(dev)).await?[..],
        b"from the lamp"
    );

    // The app never speaks as the device: its uplinks are dropped (v3.1.1 has no negative
    // PUBACK, so the broker acknowledges and drops), nothing reaches subscribers or storage.
    app.publish(&user_update(dev), QoS::AtLeastOnce, "forged")
        .await?;
    app.publish(
        &sys(dev, "thing/event/property/post"),
        QoS::AtLeastOnce,
        json!({"id": "1", "params": {"Brightness": 42}}).to_string(),
    )
    .await?;
    app.expect_no_publish(Duration::from_millis(300)).await?;
    let latest = f.latest_properties(0).await?;
    assert_eq!(latest, json!([]));
    assert!(
        f.node.log().contains("publish not authorised"),
        "refused publishes are logged"
    );

    // Its publish grant reaches the device on a topic devices receive.
    device.subscribe(&user_get(dev), QoS::AtLeastOnce).await?;
    app.publish(&user_get(dev), QoS::AtLeastOnce, "dim to 40")
        .await?;
    assert_eq!(
        &device.expect_publish(&user_get(dev)).await?[..],
        b"dim to 40"
    );

    // Bad credentials: wrong secret, unknown app, the device's secret.
    assert_eq!(
        refused(app_options(&f, "dashboard-2", &client_id, "not-the-secret")).await?,
        ConnectReturnCode::BadUserNamePassword
    );
    assert_eq!(
        refused(app_options(
            &f,
            "dashboard-2",
            "app_aaaaaaaaaaaaaaaaaaaa",
            &secret
        ))
        .await?,
        ConnectReturnCode::BadUserNamePassword
    );
    assert_eq!(
        refused(app_options(
            &f,
            "dashboard-2",
            &client_id,
            &dev.device_secret
        ))
        .await?,
        ConnectReturnCode::BadUserNamePassword
    );
    let log = f.node.log();
    assert!(
        log.contains("connection refused")
            && log.contains(&format!("wrong secret for app '{client_id}'")),
        "a refused app login is logged with its reason"
    );
    // The app's secret does not open a device login.
    let mut as_device = mqtt_options(dev, f.node.mqtt);
    as_device.set_credentials(format!("{}&{pk}", dev.device_name), secret.clone());
    assert!(Client::connect(as_device).await?.is_err());

    // A second instance of the app, with its own MQTT client id, connects alongside.
    let mut second = Client::connected(app_options(&f, "dashboard-2", &client_id, &secret)).await?;
    assert_eq!(
        second
            .subscribe(&format!("/{pk}/+/user/update"), QoS::AtMostOnce)
            .await?,
        SubscribeReasonCode::Success(QoS::AtMostOnce)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_connects_and_subscribes_over_mqtt_5() -> anyhow::Result<()> {
    use rumqttc::v5::mqttbytes::QoS as V5QoS;
    use rumqttc::v5::mqttbytes::v5::{
        ConnectReturnCode as V5Code, Packet, PubAckReason, SubscribeReasonCode as V5Sub,
    };
    use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions as V5Options};

    let f = Fixture::start(1).await?;
    let pk = f.product_key.clone();
    let dev = &f.devices[0];
    let (client_id, secret, _) = register(
        &f,
        json!({"resources": {"topics": [format!("/{pk}/+/user/update")]}}),
    )
    .await?;
    let options = |password: &str| {
        let mut o = V5Options::new(
            "dashboard-v5",
            f.node.mqtt.ip().to_string(),
            f.node.mqtt.port(),
        );
        o.set_credentials(client_id.clone(), password);
        o.set_keep_alive(Duration::from_secs(30));
        o
    };
    // What the event loop yields: packets, then how it ended.
    let start = |o: V5Options| {
        let (client, mut eventloop) = AsyncClient::new(o, 64);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let ev = eventloop.poll().await;
                let end = ev.is_err();
                if tx.send(ev).is_err() || end {
                    break;
                }
            }
        });
        (client, rx, task)
    };
    type Rx = tokio::sync::mpsc::UnboundedReceiver<Result<Event, ConnectionError>>;
    async fn next(rx: &mut Rx) -> anyhow::Result<Result<Packet, ConnectionError>> {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await? {
                Some(Ok(Event::Incoming(p))) if !matches!(p, Packet::PingResp(_)) => {
                    return Ok(Ok(p));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Ok(Err(e)),
                None => anyhow::bail!("event loop ended"),
            }
        }
    }

    // Wrong secret: CONNACK 0x86.
    let (_c, mut rx, task) = start(options("not-the-secret"));
    match next(&mut rx).await? {
        Err(ConnectionError::ConnectionRefused(V5Code::BadUserNamePassword)) => {}
        other => anyhow::bail!("expected CONNACK bad user name or password, got {other:?}"),
    }
    task.abort();

    let (client, mut rx, task) = start(options(&secret));
    assert!(matches!(next(&mut rx).await?, Ok(Packet::ConnAck(_))));
    client
        .subscribe(format!("/{pk}/+/user/update"), V5QoS::AtLeastOnce)
        .await?;
    match next(&mut rx).await? {
        Ok(Packet::SubAck(ack)) => {
            assert_eq!(ack.return_codes, vec![V5Sub::Success(V5QoS::AtLeastOnce)])
        }
        p => anyhow::bail!("expected SUBACK, got {p:?}"),
    }
    client.subscribe("#", V5QoS::AtLeastOnce).await?;
    match next(&mut rx).await? {
        Ok(Packet::SubAck(ack)) => assert_eq!(ack.return_codes, vec![V5Sub::NotAuthorized]),
        p => anyhow::bail!("expected SUBACK, got {p:?}"),
    }
    // A device uplink from the app: PUBACK "not authorized".
    client
        .publish(user_update(dev), V5QoS::AtLeastOnce, false, "forged")
        .await?;
    match next(&mut rx).await? {
        Ok(Packet::PubAck(ack)) => assert_eq!(ack.reason, PubAckReason::NotAuthorized),
        p => anyhow::bail!("expected PUBACK, got {p:?}"),
    }
    let device = Client::connected(mqtt_options(dev, f.node.mqtt)).await?;
    device
        .publish(&user_update(dev), QoS::AtLeastOnce, "v5 hello")
        .await?;
    match next(&mut rx).await? {
        Ok(Packet::Publish(p)) => {
            assert_eq!(p.topic, user_update(dev).as_bytes());
            assert_eq!(&p.payload[..], b"v5 hello");
        }
        p => anyhow::bail!("expected the device's message, got {p:?}"),
    }
    task.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_changes_end_its_mqtt_sessions() -> anyhow::Result<()> {
    let f = Fixture::start(1).await?;
    let pk = f.product_key.clone();
    let dev = &f.devices[0];
    let (client_id, secret, _) = register(
        &f,
        json!({"resources": {"topics": [format!("/{pk}/+/user/update")]}}),
    )
    .await?;
    let path = format!("/api/v1/apps/{client_id}");
    let connect = |secret: &str| app_options(&f, "ops", &client_id, secret);
    let mut app = Client::connected(connect(&secret)).await?;

    // A change that leaves its MQTT rights alone keeps the session.
    f.node
        .expect(
            Method::PATCH,
            &path,
            Some(json!({"description": "Street lighting", "scopes": ["device.read"]})),
            200,
        )
        .await?;
    assert_eq!(
        app.subscribe(&user_update(dev), QoS::AtLeastOnce).await?,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );

    // Offline: the session is dropped and the app is refused until it is back online.
    f.node
        .expect(
            Method::PATCH,
            &path,
            Some(json!({"status": "offline"})),
            200,
        )
        .await?;
    app.expect_closed().await?;
    assert_eq!(
        refused(connect(&secret)).await?,
        ConnectReturnCode::NotAuthorized
    );
    f.node
        .expect(Method::PATCH, &path, Some(json!({"status": "online"})), 200)
        .await?;
    let mut app = Client::connected(connect(&secret)).await?;

    // New grants: disconnected, and on reconnection only the new grant applies.
    f.node
        .expect(
            Method::PATCH,
            &path,
            Some(json!({"resources": {"topics": [format!("/{pk}/+/user/update/error")]}})),
            200,
        )
        .await?;
    app.expect_closed().await?;
    let mut app = Client::connected(connect(&secret)).await?;
    assert_eq!(
        app.subscribe(&user_update(dev), QoS::AtLeastOnce).await?,
        SubscribeReasonCode::Failure
    );
    let error_topic = format!("{}/error", user_update(dev));
    assert_eq!(
        app.subscribe(&error_topic, QoS::AtLeastOnce).await?,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );

    // A rotated secret ends the session; the old secret no longer opens one.
    let rotated = f
        .node
        .expect(Method::POST, &format!("{path}/secret"), None, 200)
        .await?;
    let new_secret = rotated["secret"].as_str().unwrap().to_string();
    app.expect_closed().await?;
    assert_eq!(
        refused(connect(&secret)).await?,
        ConnectReturnCode::BadUserNamePassword
    );
    let mut app = Client::connected(connect(&new_secret)).await?;

    // Deleted: dropped, and its client id opens nothing.
    f.node.expect(Method::DELETE, &path, None, 204).await?;
    app.expect_closed().await?;
    assert_eq!(
        refused(connect(&new_secret)).await?,
        ConnectReturnCode::BadUserNamePassword
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_grants_are_validated_and_confined_to_the_apps_organisation() -> anyhow::Result<()> {
    let f = Fixture::start(1).await?;
    let pk = f.product_key.clone();
    let water = create_product(&f, "Water meter", json!({"org": "water"})).await?;
    let lights = create_product(&f, "Lamp", json!({"org": "lighting"})).await?;
    let create = |topics: Value| {
        f.node.api(
            Method::POST,
            "/api/v1/apps",
            Some(json!({"name": "x", "type": "service", "org": "lighting", "resources": {"topics": topics}})),
        )
    };
    let too_many: Vec<String> = (0..65).map(|i| format!("/{pk}/+/user/t{i}")).collect();
    for (topics, expected) in [
        (
            json!(["#"]),
            "resources.topics[0]: a granted filter must name one product",
        ),
        (json!([format!("/{pk}/a#")]), "resources.topics[0]"),
        (
            json!([format!("/{pk}/+/user/update"), "/nope/+/user/update"]),
            "resources.topics[1]: unknown product 'nope'",
        ),
        (
            json!(["/sys/+/+/thing/event/property/post"]),
            "resources.topics[0]: the product segment",
        ),
        (
            json!([{"filter": format!("/{pk}/+/user/get"), "actions": ["listen"]}]),
            "resources.topics[0].actions[0]: unknown action \"listen\"",
        ),
        (
            json!([{"filter": format!("/{pk}/+/user/get"), "actions": []}]),
            "resources.topics[0].actions: give subscribe and/or publish",
        ),
        (
            json!([{"filter": format!("/sys/{pk}/+/thing/service/property/set"), "actions": ["publish"]}]),
            "resources.topics[0]: publish cannot be granted in a device namespace",
        ),
        (
            json!([{"filter": format!("/{pk}/+/user/get"), "action": "publish"}]),
            "resources.topics[0]: unknown field 'action'",
        ),
        (json!([42]), "resources.topics[0]: give a topic filter"),
        (
            json!([{"actions": ["subscribe"]}]),
            "resources.topics[0].filter",
        ),
        (json!(too_many), "resources.topics: at most 64"),
        (
            json!([format!("/{water}/+/user/update")]),
            "resources.topics[0]: product",
        ),
    ] {
        let (status, body) = create(topics.clone()).await?;
        assert_eq!(status.as_u16(), 422, "{topics}: {body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(expected), "{topics}: {detail}");
    }
    let (_, body) = create(json!([format!("/{water}/+/user/update")])).await?;
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("organisation 'water', not the app's ('lighting')"),
        "{body}"
    );

    // Its own organisation's products, and products of no organisation, are fine.
    let (client_id, secret, _) = register(
        &f,
        json!({"org": "lighting", "resources": {"topics": [
            format!("/{lights}/+/user/update"), format!("/{pk}/+/user/update"),
        ]}}),
    )
    .await?;
    // A product moved out of the app's organisation later loses the grant from the next
    // connection on.
    f.node
        .expect(
            Method::PATCH,
            &format!("/api/v1/products/{pk}"),
            Some(json!({"org": "water"})),
            200,
        )
        .await?;
    let mut app = Client::connected(app_options(&f, "x", &client_id, &secret)).await?;
    assert_eq!(
        app.subscribe(&format!("/{pk}/+/user/update"), QoS::AtLeastOnce)
            .await?,
        SubscribeReasonCode::Failure
    );
    assert_eq!(
        app.subscribe(&format!("/{lights}/+/user/update"), QoS::AtLeastOnce)
            .await?,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );
    assert!(f.node.log().contains("topic grant of the app ignored"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_a_product_out_of_the_apps_organisation_drops_its_session() -> anyhow::Result<()> {
    let f = Fixture::start(1).await?;
    // The fixture's product has no organisation: in every app's scope.
    let pk = f.product_key.clone();
    let dev = &f.devices[0];
    let lights = create_product(&f, "Lamp", json!({"org": "lighting"})).await?;
    let lights_dev = f
        .node
        .expect(
            Method::POST,
            &format!("/api/v1/products/{lights}/devices"),
            Some(json!({"deviceName": "lamp-1"})),
            201,
        )
        .await?;
    let lamp = DeviceCredentials {
        product_key: lights.clone(),
        device_name: "lamp-1".into(),
        device_secret: lights_dev["deviceSecret"].as_str().unwrap().to_string(),
    };
    let on = |pk: &str| json!([format!("/{pk}/+/user/update")]);
    // Grants on the product: one app of the organisation it leaves, one of the one it joins;
    // a third app's grant names another product.
    let (leaving, leaving_secret, _) = register(
        &f,
        json!({"org": "lighting", "resources": {"topics": on(&pk)}}),
    )
    .await?;
    let (joining, joining_secret, _) = register(
        &f,
        json!({"org": "water", "resources": {"topics": on(&pk)}}),
    )
    .await?;
    let (bystander, bystander_secret, _) = register(
        &f,
        json!({"org": "lighting", "resources": {"topics": on(&lights)}}),
    )
    .await?;
    let connect = |name: &'static str, id: &str, secret: &str| {
        Client::connected(app_options(&f, name, id, secret))
    };
    let mut a = connect("leaving", &leaving, &leaving_secret).await?;
    let mut w = connect("joining", &joining, &joining_secret).await?;
    let mut b = connect("bystander", &bystander, &bystander_secret).await?;
    for (c, filter) in [
        (&mut a, user_update(dev)),
        (&mut w, user_update(dev)),
        (&mut b, user_update(&lamp)),
    ] {
        assert_eq!(
            c.subscribe(&filter, QoS::AtLeastOnce).await?,
            SubscribeReasonCode::Success(QoS::AtLeastOnce)
        );
    }
    let device = Client::connected(mqtt_options(dev, f.node.mqtt)).await?;
    device
        .publish(&user_update(dev), QoS::AtLeastOnce, "before the move")
        .await?;
    a.expect_publish(&user_update(dev)).await?;
    w.expect_publish(&user_update(dev)).await?;

    // Out of the app's organisation: its session is dropped at once.
    let product_path = format!("/api/v1/products/{pk}");
    f.node
        .expect(
            Method::PATCH,
            &product_path,
            Some(json!({"org": "water"})),
            200,
        )
        .await?;
    a.expect_closed().await?;
    // The app of the organisation it joined, and the app with no grant on it, keep theirs.
    device
        .publish(&user_update(dev), QoS::AtLeastOnce, "after the move")
        .await?;
    assert_eq!(
        &w.expect_publish(&user_update(dev)).await?[..],
        b"after the move"
    );
    let lamp_client = Client::connected(mqtt_options(&lamp, f.node.mqtt)).await?;
    lamp_client
        .publish(&user_update(&lamp), QoS::AtLeastOnce, "lamp")
        .await?;
    assert_eq!(&b.expect_publish(&user_update(&lamp)).await?[..], b"lamp");
    assert!(
        f.node
            .log()
            .contains("product moved: the app's MQTT connections closed"),
        "the closing is logged"
    );

    // Reconnected, the app no longer holds the grant; the refusal names the app.
    let mut a = connect("leaving", &leaving, &leaving_secret).await?;
    assert_eq!(
        a.subscribe(&user_update(dev), QoS::AtLeastOnce).await?,
        SubscribeReasonCode::Failure
    );
    let log = f.node.log();
    assert!(
        log.contains(&format!(
            "no subscribe grant of app {leaving} covers this filter"
        )),
        "the refusal names the app: {}",
        log.lines()
            .filter(|l| l.contains("subscription not authorised"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Into the first app's organisation: the app that loses the grant is dropped, and so is the
    // one that regains it, which then holds it again on its next session.
    f.node
        .expect(
            Method::PATCH,
            &product_path,
            Some(json!({"org": "lighting"})),
            200,
        )
        .await?;
    w.expect_closed().await?;
    a.expect_closed().await?;
    let mut a = connect("leaving", &leaving, &leaving_secret).await?;
    assert_eq!(
        a.subscribe(&user_update(dev), QoS::AtLeastOnce).await?,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );
    assert_eq!(
        b.subscribe(&user_update(&lamp), QoS::AtMostOnce).await?,
        SubscribeReasonCode::Success(QoS::AtMostOnce),
        "an app with no grant on the product keeps its session"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_grants_topics_to_subscribe_and_to_publish() -> anyhow::Result<()> {
    let f = Fixture::start(1).await?;
    let pk = f.product_key.clone();
    let dev = &f.devices[0];
    let token = f.node.token.clone().expect("the fixture logs in");
    let cli = |args: &[&str]| -> anyhow::Result<Value> {
        let out = std::process::Command::new(binary())
            .arg("app")
            .args(args)
            .env("LOTUS_URL", &f.node.http)
            .env("LOTUS_TOKEN", &token)
            .env("HOME", f.node.data_dir.as_os_str())
            .env_remove("XDG_CONFIG_HOME")
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "lotus app {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
    };
    let help = std::process::Command::new(binary())
        .args(["app", "grant", "--help"])
        .output()?;
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--publish-topic <FILTER>") && help.contains("--topic <FILTER>"),
        "{help}"
    );

    let update = format!("/{pk}/+/user/update");
    let get = format!("/{pk}/+/user/get");
    let created = cli(&[
        "create",
        "--name",
        "Lighting control",
        "--type",
        "service",
        "--topic",
        &update,
        "--publish-topic",
        &get,
        "--redirect-uri",
        "https://control.city.example/cb",
        "--post-logout-redirect-uri",
        "https://control.city.example/bye",
    ])?;
    assert_eq!(
        created["resources"]["topics"],
        json!([update, {"filter": get, "actions": ["publish"]}]),
        "{created}"
    );
    assert_eq!(
        created["postLogoutRedirectUris"],
        json!(["https://control.city.example/bye"]),
        "{created}"
    );
    let client_id = created["clientId"].as_str().unwrap().to_string();
    let secret = created["secret"].as_str().unwrap().to_string();

    // The publish grant works on the broker: the device receives the app's message.
    let mut device = Client::connected(mqtt_options(dev, f.node.mqtt)).await?;
    device.subscribe(&user_get(dev), QoS::AtLeastOnce).await?;
    let mut app = Client::connected(app_options(&f, "control-1", &client_id, &secret)).await?;
    app.publish(&user_get(dev), QoS::AtLeastOnce, "on").await?;
    assert_eq!(&device.expect_publish(&user_get(dev)).await?[..], b"on");
    assert_eq!(
        app.subscribe(&user_get(dev), QoS::AtLeastOnce).await?,
        SubscribeReasonCode::Failure,
        "publish only"
    );

    // The same filter to both flags grants both; the new grants end the session.
    let granted = cli(&[
        "grant",
        &client_id,
        "--topic",
        &get,
        "--publish-topic",
        &get,
    ])?;
    assert_eq!(
        granted["resources"]["topics"],
        json!([{"filter": get, "actions": ["subscribe", "publish"]}]),
        "{granted}"
    );
    app.expect_closed().await?;
    let mut app = Client::connected(app_options(&f, "control-1", &client_id, &secret)).await?;
    assert_eq!(
        app.subscribe(&user_get(dev), QoS::AtLeastOnce).await?,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );
    assert_eq!(
        app.subscribe(&user_update(dev), QoS::AtLeastOnce).await?,
        SubscribeReasonCode::Failure
    );
    let got = cli(&["get", &client_id])?;
    assert_eq!(got["resources"]["topics"], granted["resources"]["topics"]);
    Ok(())
}
