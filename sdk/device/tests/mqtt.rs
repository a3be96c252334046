//! The SDK over MQTT against the real `lotus` binary: uplink with typed replies, downlink
//! handlers (property set, sync service over RRPC, async service), shadow delta.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Fixture;
use lotus_device_sdk::{Device, DeviceConfig, Error, Posted};
use parking_lot::Mutex;
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_are_stored_and_rejections_are_typed() -> anyhow::Result<()> {
    let f = Fixture::start(1).await?;
    let device = Device::connect(f.mqtt_config(0)).await?;
    assert!(device.is_connected());
    assert_eq!(device.transport(), "MQTT");

    let r = device
        .post_properties(json!({"Brightness": 42, "Power": 1}))
        .await?;
    assert!(matches!(r, Posted::Accepted(_)), "{r:?}");
    assert_eq!(f.latest(0, "Brightness").await?, 42);

    // Out of range: 460 with the field named, and the connection stays usable.
    let e = device
        .post_properties(json!({"Brightness": 300}))
        .await
        .unwrap_err();
    let Error::Rejected { code, message } = &e else {
        panic!("expected a rejection, got {e}")
    };
    assert_eq!(*code, 460);
    assert!(message.contains("Brightness"), "{message}");
    let e = device
        .post_event("NoSuchEvent", json!({}))
        .await
        .unwrap_err();
    assert!(e.code().is_some_and(|c| c != 200), "{e}");

    let r = device
        .post_event("LampFault", json!({"ErrorCode": 7}))
        .await?;
    assert!(matches!(r, Posted::Accepted(_)));
    let events = f
        .wait_for(&format!("{}/events", f.device_path(0)), |v| {
            v.to_string().contains("LampFault")
        })
        .await?;
    assert!(events.to_string().contains('7'), "{events}");

    // Raw uplink without a codec plugin: a typed rejection, not a hang.
    let e = device.post_raw(vec![1, 2, 3]).await.unwrap_err();
    assert!(e.code().is_some(), "{e}");
    device.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_is_refused_at_connect() -> anyhow::Result<()> {
    let f = Fixture::start(1).await?;
    let mut creds = f.devices[0].clone();
    creds.device_secret = "not-the-secret".into();
    let cfg = DeviceConfig::mqtt(creds, f.node.mqtt.ip().to_string(), f.node.mqtt.port());
    let e = Device::connect(cfg).await.err().expect("refused");
    assert!(matches!(e, Error::Refused(_)), "{e}");
    Ok(())
}

async fn wait_message(f: &Fixture, id: &str, status: &str) -> anyhow::Result<Value> {
    f.wait_for(&format!("{}/messages/{id}", f.device_path(0)), |m| {
        m["status"] == status
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_answer_property_set_and_services() -> anyhow::Result<()> {
    let f = Fixture::start(1).await?;
    let device = Device::connect(f.mqtt_config(0)).await?;
    let light = Arc::new(Mutex::new(json!({"Brightness": 0, "Power": 0})));

    let l = light.clone();
    device.on_property_set(move |params| {
        if params.get("Mode") == Some(&json!(2)) {
            return Err((460, "maintenance mode cannot be set remotely".into()));
        }
        let mut s = l.lock();
        for (k, v) in params.as_object().into_iter().flatten() {
            s[k] = v.clone();
        }
        Ok(())
    })?;
    let l = light.clone();
    device.on_service("SetLight", move |params| {
        let mut s = l.lock();
        s["Power"] = params["Power"].clone();
        s["Brightness"] = params["Brightness"].clone();
        Ok(json!({"Brightness": s["Brightness"]}))
    })?;
    device.on_service("Reboot", |params| {
        if params["DelaySeconds"] == 13 {
            Err((6813, "unlucky delay".into()))
        } else {
            Ok(json!({"Accepted": 1}))
        }
    })?;
    let calibrated = Arc::new(Mutex::new(false));
    let c = calibrated.clone();
    device.on_service("Calibrate", move |_| {
        *c.lock() = true;
        Ok(json!({}))
    })?;

    // Property set through the API: the handler runs and the SDK replies 200.
    let accepted = f
        .node
        .expect(
            Method::POST,
            &format!("{}/properties:set", f.device_path(0)),
            Some(json!({"params": {"Brightness": 30}})),
            202,
        )
        .await?;
    let id = accepted["messageId"].as_str().unwrap();
    let m = wait_message(&f, id, "replied").await?;
    assert_eq!(m["replyCode"], 200, "{m}");
    assert_eq!(light.lock()["Brightness"], 30);

    // A handler's refusal reaches the platform with its code.
    let accepted = f
        .node
        .expect(
            Method::POST,
            &format!("{}/properties:set", f.device_path(0)),
            Some(json!({"params": {"Mode": 2}})),
            202,
        )
        .await?;
    let m = wait_message(&f, accepted["messageId"].as_str().unwrap(), "failed").await?;
    assert_eq!(m["replyCode"], 460, "{m}");
    assert_eq!(m["replyMessage"], "maintenance mode cannot be set remotely");

    // Synchronous services travel over RRPC; the caller gets the handler's output.
    let out = f
        .node
        .expect(
            Method::POST,
            &format!("{}/services/SetLight:invoke", f.device_path(0)),
            Some(json!({"params": {"Power": 1, "Brightness": 75}, "timeoutMs": 5000})),
            200,
        )
        .await?;
    assert_eq!(out["code"], 200, "{out}");
    assert_eq!(out["data"]["Brightness"], 75);
    assert_eq!(light.lock()["Power"], 1);
    let out = f
        .node
        .expect(
            Method::POST,
            &format!("{}/services/Reboot:invoke", f.device_path(0)),
            Some(json!({"params": {"DelaySeconds": 13}, "timeoutMs": 5000})),
            200,
        )
        .await?;
    assert_eq!(out["code"], 6813, "{out}");

    // Asynchronous service: the reply arrives later on the service's _reply topic.
    let accepted = f
        .node
        .expect(
            Method::POST,
            &format!("{}/services/Calibrate:invoke", f.device_path(0)),
            Some(json!({})),
            202,
        )
        .await?;
    let m = wait_message(&f, accepted["messageId"].as_str().unwrap(), "replied").await?;
    assert_eq!(m["replyCode"], 200, "{m}");
    assert!(*calibrated.lock());
    device.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_delta_reaches_the_callback() -> anyhow::Result<()> {
    let f = Fixture::start(1).await?;
    let device = Device::connect(f.mqtt_config(0)).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    device.on_shadow_delta(move |d| {
        let _ = tx.send(d);
    })?;

    let v1 = device
        .shadow_report(json!({"Brightness": 10, "Power": 1}))
        .await?;
    assert!(v1 >= 1);
    let shadow_path = format!("{}/shadow", f.device_path(0));
    let s = f.node.expect(Method::GET, &shadow_path, None, 200).await?;
    assert_eq!(s["reported"]["Brightness"], 10);

    f.node
        .expect(
            Method::PUT,
            &shadow_path,
            Some(json!({"desired": {"Brightness": 80}})),
            200,
        )
        .await?;
    let delta = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await?
        .expect("a delta");
    assert_eq!(delta.delta, json!({"Brightness": 80}));
    assert_eq!(delta.reported["Power"], 1);

    // The device applies it and reports: the version follows the platform's, the delta empties.
    let got = device.shadow_get().await?;
    assert_eq!(got.delta, json!({"Brightness": 80}));
    device.shadow_report(json!({"Brightness": 80})).await?;
    let s = f.node.expect(Method::GET, &shadow_path, None, 200).await?;
    assert_eq!(s["delta"], json!({}), "{s}");
    device.close().await;
    Ok(())
}
