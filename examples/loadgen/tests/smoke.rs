//! The pipeline and relay modes against real nodes, briefly and without throughput assertions.

use std::time::Duration;

use lotus_loadgen::{pipeline, relay};
use lotus_test_harness::node::{ADMIN_PASSWORD, LotusNode, NodeOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_stores_every_acknowledged_post() -> anyhow::Result<()> {
    let node = LotusNode::start(NodeOptions::default()).await?;
    let report = pipeline::run(pipeline::Config {
        api: node.http.clone(),
        mqtt: node.mqtt,
        user: "admin".into(),
        password: ADMIN_PASSWORD.into(),
        devices: 20,
        rate: 200,
        duration: Duration::from_secs(2),
        qos: 1,
    })
    .await?;
    assert!(report.acked > 0, "{report:?}");
    assert_eq!(report.lost, 0, "{report:?}");
    assert_eq!(report.stored, report.acked, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_delivers_everything_at_qos1() -> anyhow::Result<()> {
    let node = LotusNode::start(NodeOptions {
        allow_anonymous: true,
        ..Default::default()
    })
    .await?;
    let report = relay::run(relay::Config {
        mqtt: node.mqtt,
        publishers: 3,
        payload: 100,
        qos: 1,
        duration: Duration::from_secs(1),
        rate: Some(500),
        broker_pid: node.pid(),
    })
    .await?;
    assert!(report.published > 0, "{report:?}");
    assert_eq!(report.delivered, report.published, "{report:?}");
    Ok(())
}

#[test]
fn non_loopback_targets_are_refused() {
    assert!(lotus_loadgen::loopback_addr("127.0.0.1:1883").is_ok());
    assert!(lotus_loadgen::loopback_addr("10.1.2.3:1883").is_err());
    assert!(lotus_loadgen::loopback_url("http://127.0.0.1:8080").is_ok());
    assert!(lotus_loadgen::loopback_url("http://192.0.2.1:8080").is_err());
}
