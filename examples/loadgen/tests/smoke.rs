//! The pipeline and relay modes against real nodes, briefly and without throughput assertions.

use std::time::Duration;

use lotus_loadgen::city::Mix;
use lotus_loadgen::water_meter::{CodecPlugin, Format};
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
        mix: Mix::StreetLight,
        downlink_rate: 0.0,
        server_pid: node.pid(),
        format: Format::Alink,
        codec: None,
    })
    .await?;
    assert_eq!(report.format, "alink", "{report:?}");
    assert!(report.acked > 0, "{report:?}");
    assert_eq!(report.lost, 0, "{report:?}");
    assert_eq!(report.stored, report.acked, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_frames_through_the_water_meter_codec_are_all_stored() -> anyhow::Result<()> {
    let node = LotusNode::start(NodeOptions::default()).await?;
    let codec = CodecPlugin {
        wasm: lotus_plugin_artifacts::WATER_METER_CODEC.into(),
        manifest: concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../plugins/water-meter-codec/lotus-plugin.toml"
        )
        .into(),
    };
    let config = pipeline::Config {
        // 40 data frames per meter, each 25th followed by a Leakage alarm frame.
        devices: 10,
        rate: 200,
        duration: Duration::from_secs(2),
        server_pid: node.pid(),
        format: Format::Raw,
        codec: Some(codec),
        ..pipeline::Config::new(node.http.clone(), node.mqtt, ADMIN_PASSWORD.into())
    };
    let report = pipeline::run(config.clone()).await?;
    eprintln!("{}", serde_json::to_string_pretty(&report)?);
    assert_eq!(report.format, "raw", "{report:?}");
    assert_eq!(
        report.codec_plugin.as_deref(),
        Some("lotus-water-meter"),
        "{report:?}"
    );
    assert!(report.acked > 0 && report.events_sent > 0, "{report:?}");
    assert_eq!(report.sent, report.acked, "{report:?}");
    assert_eq!(report.lost, 0, "{report:?}");
    assert_eq!(report.stored, report.acked, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");

    // A second run on the same node finds the plugin id taken and installs a copy for its
    // own product.
    let again = pipeline::run(pipeline::Config {
        devices: 2,
        duration: Duration::from_secs(1),
        ..config
    })
    .await?;
    let id = again.codec_plugin.clone().unwrap_or_default();
    assert!(id.starts_with("lotus-water-meter-"), "{again:?}");
    assert!(again.acked > 0, "{again:?}");
    assert_eq!(again.stored, again.acked, "{again:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_water_meter_posts_as_alink_json_are_all_stored() -> anyhow::Result<()> {
    let node = LotusNode::start(NodeOptions::default()).await?;
    let report = pipeline::run(pipeline::Config {
        devices: 10,
        rate: 200,
        duration: Duration::from_secs(2),
        mix: Mix::WaterMeter,
        server_pid: node.pid(),
        ..pipeline::Config::new(node.http.clone(), node.mqtt, ADMIN_PASSWORD.into())
    })
    .await?;
    eprintln!("{}", serde_json::to_string_pretty(&report)?);
    assert_eq!(
        (report.mix.as_str(), report.format.as_str()),
        ("water-meter", "alink"),
        "{report:?}"
    );
    assert_eq!(report.codec_plugin, None, "{report:?}");
    assert!(report.acked > 0 && report.events_sent > 0, "{report:?}");
    assert_eq!(report.sent, report.acked, "{report:?}");
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
        lotus: None,
    })
    .await?;
    assert!(report.published > 0, "{report:?}");
    assert_eq!(report.delivered, report.published, "{report:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn city_run_loses_nothing_and_answers_downlinks() -> anyhow::Result<()> {
    let node = LotusNode::start(NodeOptions::default()).await?;
    let report = pipeline::run(pipeline::Config {
        devices: 24,
        rate: 240,
        duration: Duration::from_secs(3),
        mix: Mix::City,
        downlink_rate: 5.0,
        server_pid: node.pid(),
        ..pipeline::Config::new(node.http.clone(), node.mqtt, ADMIN_PASSWORD.into())
    })
    .await?;
    eprintln!("{}", serde_json::to_string_pretty(&report)?);
    assert_eq!(report.products.len(), 4, "{report:?}");
    assert!(report.acked > 0 && report.events_sent > 0, "{report:?}");
    assert_eq!(report.sent, report.acked, "{report:?}");
    assert_eq!(report.lost, 0, "{report:?}");
    assert_eq!(report.stored, report.acked, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    assert!(report.latency.samples > 0, "{report:?}");
    assert!(report.downlinks_sent >= 5, "{report:?}");
    assert_eq!(report.downlink_errors, 0, "{report:?}");
    assert_eq!(
        report.downlinks_answered, report.downlinks_sent,
        "{report:?}"
    );
    assert!(report.downlinks_confirmed > 0, "{report:?}");
    assert!(report.server_cpu_s.is_some(), "{report:?}");

    // The devices carry their coordinates for the city map.
    let mut node = node;
    node.login().await?;
    let page = node
        .expect(
            reqwest::Method::GET,
            "/api/v1/devices?pageSize=500",
            None,
            200,
        )
        .await?;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 24);
    for d in items {
        let (lat, lon) = (
            d["tags"]["lat"].as_f64().unwrap(),
            d["tags"]["lon"].as_f64().unwrap(),
        );
        assert!(
            (31.1..31.4).contains(&lat) && (121.3..121.7).contains(&lon),
            "{d}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_to_an_application_credential() -> anyhow::Result<()> {
    // No anonymous clients: devices publish, the subscriber is an application.
    let node = LotusNode::start(NodeOptions::default()).await?;
    let report = relay::run(relay::Config {
        mqtt: node.mqtt,
        publishers: 3,
        payload: 100,
        qos: 1,
        duration: Duration::from_secs(1),
        rate: Some(300),
        broker_pid: node.pid(),
        lotus: Some(relay::LotusTarget {
            api: node.http.clone(),
            user: "admin".into(),
            password: ADMIN_PASSWORD.into(),
        }),
    })
    .await?;
    assert_eq!(report.mode, "application");
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
