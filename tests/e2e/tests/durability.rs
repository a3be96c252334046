//! A PUBACK means "stored": killing the node with SIGKILL loses no acknowledged message.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use lotus_e2e::{Fixture, sys};
use lotus_test_harness::device::mqtt_options;
use lotus_test_harness::node::{LotusNode, NodeOptions};
use reqwest::Method;
use rumqttc::{AsyncClient, Event, Outgoing, Packet, QoS};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_qos1_stream_loses_no_acknowledged_post() -> anyhow::Result<()> {
    let mut f = Fixture::start(1).await?;
    let d = f.devices[0].clone();
    let topic = sys(&d, "thing/event/property/post");
    let mut opts = mqtt_options(&d, f.node.mqtt);
    opts.set_inflight(100);
    let (client, mut eventloop) = AsyncClient::new(opts, 1000);
    let base = 1_700_000_000_000i64;
    const TOTAL: i64 = 20_000;

    let publisher = {
        let client = client.clone();
        let topic = topic.clone();
        tokio::spawn(async move {
            for i in 0..TOTAL {
                let msg = json!({"id": i.to_string(), "params": {"Current": {"value": 1.5, "time": base + i}}, "sys": {"ack": 0}});
                if client
                    .publish(&topic, QoS::AtLeastOnce, false, msg.to_string())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        })
    };

    // Map packet ids to message numbers as they go out; record which were acknowledged.
    let mut in_flight: HashMap<u16, i64> = HashMap::new();
    let mut sent = 0i64;
    let mut acked: HashSet<i64> = HashSet::new();
    let mut killed = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ev = match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Err(_) => anyhow::bail!("the stream did not progress within 60 s"),
            Ok(Err(_)) if killed => break,
            Ok(Err(e)) => anyhow::bail!("connection failed before the kill: {e}"),
            Ok(Ok(ev)) => ev,
        };
        match ev {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                in_flight.insert(pkid, sent);
                sent += 1;
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                if let Some(i) = in_flight.remove(&ack.pkid) {
                    acked.insert(i);
                }
                if acked.len() == 3000 && !killed {
                    f.node.kill9();
                    killed = true;
                }
            }
            _ => {}
        }
    }
    publisher.abort();
    assert!(
        killed && acked.len() >= 3000,
        "acknowledged {} before the kill",
        acked.len()
    );

    // Restart on the same data and check every acknowledged post is there.
    let device_path = f.device_path(0);
    let (data_dir, temp) = f.node.into_data_dir();
    let mut node = LotusNode::start(NodeOptions {
        data_dir: Some(data_dir),
        ..Default::default()
    })
    .await?;
    node.login().await?;
    // Post i has time base + i: read the history in windows of 10,000 ms (the page limit).
    let mut stored: HashSet<i64> = HashSet::new();
    for window in (0..TOTAL).step_by(10_000) {
        let page = node
            .expect(
                Method::GET,
                &format!(
                    "{device_path}/properties/Current/history?from={}&to={}&limit=10000",
                    base + window,
                    base + window + 9_999
                ),
                None,
                200,
            )
            .await?;
        stored.extend(
            page["points"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["time"].as_i64().unwrap() - base),
        );
    }
    let lost: Vec<&i64> = acked
        .iter()
        .filter(|i| !stored.contains(i))
        .take(10)
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged posts lost, e.g. {lost:?} (acked {}, stored {})",
        acked.iter().filter(|i| !stored.contains(i)).count(),
        acked.len(),
        stored.len()
    );
    drop(temp);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_flushes_and_marks_devices_offline() -> anyhow::Result<()> {
    let mut f = Fixture::start(1).await?;
    let d = f.devices[0].clone();
    let mut c = lotus_test_harness::mqtt::Client::connected(mqtt_options(&d, f.node.mqtt)).await?;
    for i in 0..200 {
        let msg = json!({"id": i.to_string(), "params": {"Brightness": {"value": i % 100, "time": 1_700_000_000_000i64 + i}}});
        c.publish(
            &sys(&d, "thing/event/property/post"),
            QoS::AtLeastOnce,
            msg.to_string(),
        )
        .await?;
    }
    c.wait_pubacks(200).await?;
    let status = f.node.stop()?;
    assert!(status.success(), "lotus exited with {status}");
    let device_path = f.device_path(0);
    let (dir, temp) = f.node.into_data_dir();
    let mut node = LotusNode::start(NodeOptions {
        data_dir: Some(dir),
        ..Default::default()
    })
    .await?;
    node.login().await?;
    let h = node
        .expect(
            Method::GET,
            &format!("{device_path}/properties/Brightness/history?from=0&limit=1000"),
            None,
            200,
        )
        .await?;
    assert_eq!(h["points"].as_array().unwrap().len(), 200);
    let dev = node.expect(Method::GET, &device_path, None, 200).await?;
    assert_eq!(dev["status"], "offline");
    drop(temp);
    Ok(())
}
