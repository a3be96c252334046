//! Property and event posts: validated against the thing model, stored, queryable.

use lotus_e2e::{Fixture, sys};
use lotus_test_harness::device::mqtt_options;
use lotus_test_harness::mqtt::Client;
use reqwest::Method;
use rumqttc::QoS;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn property_post_is_validated_stored_and_aggregated() -> anyhow::Result<()> {
    let f = Fixture::start(1).await?;
    let d = &f.devices[0];
    let mut c = Client::connected(mqtt_options(d, f.node.mqtt)).await?;
    let post = sys(d, "thing/event/property/post");
    let reply = sys(d, "thing/event/property/post_reply");
    c.subscribe(&reply, QoS::AtLeastOnce).await?;

    // Six readings one minute apart, in both Alink value forms.
    // Aligned to a 3-minute bucket boundary (buckets start at multiples of the interval).
    let base = 1_699_999_920_000i64;
    for (i, current) in [1.0, 2.0, 3.0, 4.0, 5.5, 6.5].iter().enumerate() {
        let ts = base + i as i64 * 60_000;
        let params = if i % 2 == 0 {
            json!({"Current": {"value": current, "time": ts}, "Brightness": {"value": 10 * i, "time": ts}})
        } else {
            json!({"Current": {"value": current, "time": ts}, "Brightness": {"value": 10 * i, "time": ts}, "Power": 1})
        };
        let msg = json!({"id": format!("{i}"), "version": "1.0", "params": params, "method": "thing.event.property.post"});
        c.publish(&post, QoS::AtLeastOnce, msg.to_string()).await?;
        let r = c.expect_json(&reply).await?;
        assert_eq!(r["code"], 200, "{r}");
        assert_eq!(r["id"], format!("{i}"));
    }

    let latest = f.latest_properties(0).await?;
    let current = latest
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["identifier"] == "Current")
        .unwrap();
    assert_eq!(current["value"], 6.5);
    assert_eq!(current["time"], base + 5 * 60_000);

    let path = |q: &str| {
        format!(
            "{}/properties/Current/history?from={base}&to={}{q}",
            f.device_path(0),
            base + 3_600_000
        )
    };
    let raw = f.node.expect(Method::GET, &path(""), None, 200).await?;
    assert_eq!(raw["points"].as_array().unwrap().len(), 6);

    // Three-minute buckets: [1,2,3] and [4,5.5,6.5].
    let avg = f
        .node
        .expect(Method::GET, &path("&interval=3m&agg=avg"), None, 200)
        .await?;
    let values: Vec<f64> = avg["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].as_f64().unwrap())
        .collect();
    assert_eq!(values, [2.0, 16.0 / 3.0]);
    let max = f
        .node
        .expect(Method::GET, &path("&interval=3m&agg=max"), None, 200)
        .await?;
    assert_eq!(max["points"][1]["value"], 6.5);
    let min = f
        .node
        .expect(Method::GET, &path("&interval=3m&agg=min"), None, 200)
        .await?;
    assert_eq!(min["points"][0]["value"], 1.0);
    let count = f
        .node
        .expect(Method::GET, &path("&interval=1h&agg=count"), None, 200)
        .await?;
    assert_eq!(count["points"][0]["value"].as_f64(), Some(6.0));
    let last = f
        .node
        .expect(Method::GET, &path("&interval=3m&agg=last"), None, 200)
        .await?;
    assert_eq!(last["points"][0]["value"], 3.0);

    let bad = f
        .node
        .expect(Method::GET, &path("&interval=3m&agg=median"), None, 400)
        .await?;
    assert!(bad["detail"].as_str().unwrap().contains("median"));
    c.disconnect().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_posts_get_an_error_reply_naming_the_field_and_the_connection_stays()
-> anyhow::Result<()> {
    let f = Fixture::start(1).await?;
    let d = &f.devices[0];
    let mut c = Client::connected(mqtt_options(d, f.node.mqtt)).await?;
    let post = sys(d, "thing/event/property/post");
    let reply = sys(d, "thing/event/property/post_reply");
    c.subscribe(&reply, QoS::AtLeastOnce).await?;

    let cases = [
        (json!({"Brightness": 120}), "Brightness"),
        (json!({"Brightness": "bright"}), "Brightness"),
        (json!({"Mode": 7}), "Mode"),
        (json!({"Colour": 1}), "Colour"),
    ];
    for (i, (params, field)) in cases.iter().enumerate() {
        let msg = json!({"id": format!("bad{i}"), "version": "1.0", "params": params, "method": "thing.event.property.post"});
        c.publish(&post, QoS::AtLeastOnce, msg.to_string()).await?;
        let r = c.expect_json(&reply).await?;
        assert_ne!(r["code"], 200, "{r}");
        assert_eq!(r["id"], format!("bad{i}"));
        assert!(
            r["message"].as_str().unwrap().contains(field),
            "{r} should name {field}"
        );
    }
    // Not JSON at all.
    c.publish(&post, QoS::AtLeastOnce, "not json").await?;
    let r = c.expect_json(&reply).await?;
    assert_eq!(r["code"], 400);

    // Still connected and nothing invalid was stored.
    let ok = json!({"id": "ok", "params": {"Brightness": 50}});
    c.publish(&post, QoS::AtLeastOnce, ok.to_string()).await?;
    assert_eq!(c.expect_json(&reply).await?["code"], 200);
    let latest = f.latest_properties(0).await?;
    assert_eq!(latest.as_array().unwrap().len(), 1);
    assert_eq!(latest[0]["value"], 50);
    c.disconnect().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_validated_stored_and_filtered() -> anyhow::Result<()> {
    let f = Fixture::start(1).await?;
    let d = &f.devices[0];
    let mut c = Client::connected(mqtt_options(d, f.node.mqtt)).await?;
    let topic = sys(d, "thing/event/LampFault/post");
    let reply = sys(d, "thing/event/LampFault/post_reply");
    c.subscribe(&reply, QoS::AtLeastOnce).await?;
    let msg =
        json!({"id": "1", "params": {"value": {"ErrorCode": 17}, "time": 1_700_000_000_000i64}});
    c.publish(&topic, QoS::AtLeastOnce, msg.to_string()).await?;
    assert_eq!(c.expect_json(&reply).await?["code"], 200);
    let msg = json!({"id": "2", "params": {"value": {"ErrorCode": 999}}});
    c.publish(&topic, QoS::AtLeastOnce, msg.to_string()).await?;
    let r = c.expect_json(&reply).await?;
    assert_ne!(r["code"], 200);
    assert!(r["message"].as_str().unwrap().contains("ErrorCode"));

    let unknown = sys(d, "thing/event/Nope/post");
    c.subscribe(&sys(d, "thing/event/Nope/post_reply"), QoS::AtLeastOnce)
        .await?;
    c.publish(
        &unknown,
        QoS::AtLeastOnce,
        json!({"id": "3", "params": {}}).to_string(),
    )
    .await?;
    let r = c
        .expect_json(&sys(d, "thing/event/Nope/post_reply"))
        .await?;
    assert!(r["message"].as_str().unwrap().contains("Nope"));

    let events = f
        .node
        .expect(
            Method::GET,
            &format!("{}/events?from=0&identifier=LampFault", f.device_path(0)),
            None,
            200,
        )
        .await?;
    let events = events.as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["params"]["ErrorCode"], 17);
    assert_eq!(events[0]["eventType"], "alert");
    c.disconnect().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_tags_and_raw_data_without_codec() -> anyhow::Result<()> {
    let f = Fixture::start(1).await?;
    let d = &f.devices[0];
    let mut c = Client::connected(mqtt_options(d, f.node.mqtt)).await?;
    let topic = sys(d, "thing/deviceinfo/update");
    c.subscribe(&sys(d, "thing/deviceinfo/update_reply"), QoS::AtLeastOnce)
        .await?;
    let msg = json!({"id": "1", "params": [{"attrKey": "street", "attrValue": "Lotus Road 8"}, {"attrKey": "pole", "attrValue": "P-17"}]});
    c.publish(&topic, QoS::AtLeastOnce, msg.to_string()).await?;
    assert_eq!(
        c.expect_json(&sys(d, "thing/deviceinfo/update_reply"))
            .await?["code"],
        200
    );
    let dev = f
        .node
        .expect(Method::GET, &f.device_path(0), None, 200)
        .await?;
    assert_eq!(dev["tags"]["street"], "Lotus Road 8");

    // Raw data needs a codec plugin; the device is told so and stays connected.
    c.subscribe(&sys(d, "thing/model/up_raw_reply"), QoS::AtLeastOnce)
        .await?;
    c.publish(
        &sys(d, "thing/model/up_raw"),
        QoS::AtLeastOnce,
        vec![0x01u8, 0x02],
    )
    .await?;
    let r = c.expect_json(&sys(d, "thing/model/up_raw_reply")).await?;
    assert!(r["message"].as_str().unwrap().contains("codec"));
    c.disconnect().await;
    Ok(())
}
