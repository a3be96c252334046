//! The platform goes away (SIGKILL) and comes back on the same data and port: the SDK
//! reconnects by itself, restores its subscriptions and flushes what it buffered meanwhile.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Fixture, eventually};
use lotus_device_sdk::{Device, Posted};
use lotus_test_harness::node::{LotusNode, NodeOptions};
use parking_lot::Mutex;
use reqwest::Method;
use serde_json::json;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_and_flushes_the_offline_buffer() -> anyhow::Result<()> {
    // A fixed MQTT port (besides the harness's own) so the device finds the restarted node.
    let port = free_port();
    let options = NodeOptions {
        extra_args: vec!["--mqtt-listen".into(), format!("127.0.0.1:{port}")],
        ..Default::default()
    };
    let f = Fixture::start_with(options.clone(), 1, json!({})).await?;
    let mut cfg = f.mqtt_config(0);
    if let lotus_device_sdk::Transport::Mqtt(m) = &mut cfg.transport {
        m.port = port;
    }
    let device = Device::connect(cfg).await?;
    let set = Arc::new(Mutex::new(Vec::new()));
    let s = set.clone();
    device.on_property_set(move |p| {
        s.lock().push(p);
        Ok(())
    })?;
    let base = lotus_test_harness::now_ms() - 60_000;
    let post = |i: i64| json!({"Brightness": {"value": i, "time": base + i * 1000}});
    assert!(matches!(
        device.post_properties(post(1)).await?,
        Posted::Accepted(_)
    ));

    // The node dies; the device notices and buffers.
    let Fixture {
        node,
        product_key,
        product_secret,
        devices,
    } = f;
    let (data_dir, temp) = node.into_data_dir();
    eventually("the SDK to notice the drop", || !device.is_connected()).await?;
    for i in 2..=6 {
        assert_eq!(device.post_properties(post(i)).await?, Posted::Queued);
    }
    assert_eq!(device.buffer_stats().queued, 5);

    // Back on the same data dir and port.
    let mut node = LotusNode::start(NodeOptions {
        data_dir: Some(data_dir),
        ..options
    })
    .await?;
    node.login().await?;
    let f = Fixture {
        node,
        product_key,
        product_secret,
        devices,
    };
    tokio::time::timeout(Duration::from_secs(15), device.wait_connected()).await?;
    eventually("the buffer to drain", || {
        let s = device.buffer_stats();
        s.queued == 0 && s.flushed == 5
    })
    .await?;
    assert_eq!(device.buffer_stats().dropped, 0);

    // Nothing lost: all six readings are in the history, in order.
    let history = f
        .node
        .expect(
            Method::GET,
            &format!(
                "{}/properties/Brightness/history?from={base}&to={}",
                f.device_path(0),
                base + 60_000
            ),
            None,
            200,
        )
        .await?;
    let values: Vec<i64> = history["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].as_i64().unwrap())
        .collect();
    assert_eq!(values, [1, 2, 3, 4, 5, 6], "{history}");

    // Subscriptions were restored: downlink reaches the handler again.
    f.node
        .expect(
            Method::POST,
            &format!("{}/properties:set", f.device_path(0)),
            Some(json!({"params": {"Brightness": 9}})),
            202,
        )
        .await?;
    eventually("the property set after reconnect", || {
        set.lock().iter().any(|p| p["Brightness"] == 9)
    })
    .await?;
    device.close().await;
    drop(temp);
    Ok(())
}
