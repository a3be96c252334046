//! The same node on PostgreSQL.

use lotus_e2e::{Fixture, sys};
use lotus_test_harness::device::mqtt_options;
use lotus_test_harness::mqtt::Client;
use lotus_test_harness::node::NodeOptions;
use lotus_test_harness::postgres::TestPostgres;
use reqwest::Method;
use rumqttc::QoS;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_plane_on_postgres() -> anyhow::Result<()> {
    let pg = TestPostgres::start()?;
    let options = NodeOptions {
        database_url: Some(pg.url.clone()),
        ..Default::default()
    };
    let f = Fixture::start_with(options, 2, json!({})).await?;
    let d = &f.devices[0];
    let mut c = Client::connected(mqtt_options(d, f.node.mqtt)).await?;
    c.subscribe(&sys(d, "thing/event/property/post_reply"), QoS::AtLeastOnce)
        .await?;
    for i in 0..50 {
        let msg = json!({"id": i.to_string(), "params": {"Brightness": {"value": i, "time": 1_700_000_000_000i64 + i * 1000}}});
        c.publish(
            &sys(d, "thing/event/property/post"),
            QoS::AtLeastOnce,
            msg.to_string(),
        )
        .await?;
        assert_eq!(
            c.expect_json(&sys(d, "thing/event/property/post_reply"))
                .await?["code"],
            200
        );
    }
    let agg = f
        .node
        .expect(
            Method::GET,
            &format!("{}/properties/Brightness/history?from=1700000000000&to=1700000100000&interval=100s&agg=max", f.device_path(0)),
            None,
            200,
        )
        .await?;
    assert_eq!(agg["points"][0]["value"].as_f64(), Some(49.0));
    f.wait_status(0, "online").await?;
    c.disconnect().await;
    f.wait_status(0, "offline").await?;
    Ok(())
}
