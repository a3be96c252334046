//! A street light: connects to Lotus, posts its state every few seconds and answers the
//! `SetLight` service and property sets (the thing model is `tests/fixtures/street-light.tsl.json`).
//!
//! ```sh
//! LOTUS_HOST=127.0.0.1 LOTUS_MQTT_PORT=1883 \
//! LOTUS_PRODUCT_KEY=a1B2c3 LOTUS_DEVICE_NAME=lamp-0001 LOTUS_DEVICE_SECRET=… \
//! cargo run -p lotus-device-sdk --example street_light
//! ```
//!
//! With `LOTUS_PRODUCT_SECRET` (and `LOTUS_API=http://127.0.0.1:8080`) instead of the device
//! secret, the light registers itself first (one-product-one-secret) and prints the secret to
//! keep. `LOTUS_COAP=host:5683` (or `LOTUS_COAP_DTLS=host:5684`) uses CoAP (uplink only)
//! instead of MQTT. `LOTUS_POSTS=n` stops
//! after n posts (default: run until Ctrl-C).

use std::sync::Arc;
use std::time::Duration;

use lotus_device_sdk::register::{ProductCredentials, register_https};
use lotus_device_sdk::{Credentials, Device, DeviceConfig, Error, Posted};
use parking_lot::Mutex;
use serde_json::{Value, json};

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn need(name: &str) -> Result<String, Box<dyn std::error::Error>> {
    env(name).ok_or_else(|| format!("set {name}").into())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let product_key = need("LOTUS_PRODUCT_KEY")?;
    let device_name = need("LOTUS_DEVICE_NAME")?;
    let creds = match (env("LOTUS_DEVICE_SECRET"), env("LOTUS_PRODUCT_SECRET")) {
        (Some(secret), _) => Credentials::new(product_key, device_name, secret),
        (None, Some(product_secret)) => {
            let api = env("LOTUS_API").unwrap_or_else(|| "http://127.0.0.1:8080".into());
            let creds = register_https(
                &api,
                &ProductCredentials {
                    product_key,
                    product_secret,
                    device_name,
                },
                None,
            )
            .await?;
            // The platform hands the secret out once: a real device writes it to flash here.
            println!(
                "registered; keep LOTUS_DEVICE_SECRET={}",
                creds.device_secret
            );
            creds
        }
        (None, None) => return Err("set LOTUS_DEVICE_SECRET or LOTUS_PRODUCT_SECRET".into()),
    };
    let config = match (env("LOTUS_COAP"), env("LOTUS_COAP_DTLS")) {
        (Some(addr), _) => DeviceConfig::coap(creds, addr),
        (None, Some(addr)) => DeviceConfig::coap_dtls(creds, addr),
        (None, None) => {
            let host = env("LOTUS_HOST").unwrap_or_else(|| "127.0.0.1".into());
            let port = env("LOTUS_MQTT_PORT").map_or(Ok(1883), |p| p.parse())?;
            DeviceConfig::mqtt(creds, host, port)
        }
    };
    let device = Device::connect(config).await?;
    println!("connected over {}", device.transport());

    // The lamp's state, shared by the handlers and the reporting loop.
    let lamp = Arc::new(Mutex::new(json!({"Power": 1, "Brightness": 60, "Mode": 0})));
    let l = lamp.clone();
    let setup = device.on_service("SetLight", move |params: Value| {
        let brightness = params["Brightness"].as_i64().unwrap_or(100);
        if !(0..=100).contains(&brightness) {
            return Err((460, format!("Brightness {brightness} is outside 0..100")));
        }
        let mut s = l.lock();
        s["Power"] = params.get("Power").cloned().unwrap_or(json!(1));
        s["Brightness"] = json!(brightness);
        println!("SetLight → {s}");
        Ok(json!({"Brightness": brightness}))
    });
    match setup {
        Err(Error::Unsupported { .. }) => println!("CoAP: no downlink, only reporting"),
        other => other?,
    }
    if device.transport() == "MQTT" {
        let l = lamp.clone();
        device.on_property_set(move |params| {
            let mut s = l.lock();
            for (k, v) in params.as_object().into_iter().flatten() {
                s[k] = v.clone();
            }
            println!("property set → {s}");
            Ok(())
        })?;
    }

    let posts: Option<u64> = env("LOTUS_POSTS").map(|n| n.parse()).transpose()?;
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut sent = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        let mut state = lamp.lock().clone();
        // A lamp draws current in proportion to its brightness.
        let on = state["Power"] == 1;
        state["Current"] = json!(if on {
            state["Brightness"].as_f64().unwrap_or(0.0) * 0.05
        } else {
            0.0
        });
        match device.post_properties(state).await {
            Ok(Posted::Accepted(_)) => println!("posted"),
            Ok(Posted::Queued) => println!("offline: queued ({:?})", device.buffer_stats()),
            Err(e) => eprintln!("post failed: {e}"),
        }
        sent += 1;
        if posts.is_some_and(|n| sent >= n) {
            break;
        }
    }
    device.close().await;
    Ok(())
}
