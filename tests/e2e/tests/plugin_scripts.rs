//! A device vendor's JavaScript data-parsing script, uploaded as it is over the API, decodes the
//! real device's raw uplinks and encodes its downlinks: the node runs it in its script runner
//! (`plugins.script_runner`). Upgrading to another vendor script and rolling back swap the
//! script with the version; what is wrong with an upload is said before anything is stored.

use lotus_e2e::{Fixture, sys};
use lotus_test_harness::device::mqtt_options;
use lotus_test_harness::mqtt::Client;
use lotus_test_harness::node::{LotusNode, NodeOptions};
use reqwest::Method;
use rumqttc::QoS;
use serde_json::{Value, json};

const SCRIPTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/plugins/codec-js"
);
/// PM2.5 35, PM10 80, 21.7 °C, 55 %.
const FRAME: [u8; 7] = [0x00, 0x23, 0x00, 0x50, 0x00, 0xd9, 0x37];

fn air_quality_tsl() -> Value {
    let property = |id: &str, access: &str, data_type: Value| json!({"identifier": id, "name": id, "accessMode": access, "required": false, "dataType": data_type});
    let int = |max: &str| json!({"type": "int", "specs": {"min": "0", "max": max, "step": "1"}});
    json!({
        "schema": "https://iotx-tsl.oss-ap-southeast-1.aliyuncs.com/schema.json",
        "profile": {"version": "1.0", "productKey": "placeholder"},
        "properties": [
            property("PM25", "r", int("65535")),
            property("PM10", "r", int("65535")),
            property("Temperature", "r", json!({"type": "float", "specs": {"min": "-40", "max": "85", "step": "0.1"}})),
            property("Humidity", "r", int("100")),
            property("ReportInterval", "rw", int("86400")),
        ],
        "events": [],
        "services": []
    })
}

fn manifest(version: &str, product_key: &str) -> String {
    format!(
        "id = \"aq-vendor\"\nversion = \"{version}\"\nworld = \"codec\"\n\
         description = \"the vendor's air-quality script\"\n\
         capabilities = [\"log\", \"kv\", \"clock\"]\nproducts = [\"{product_key}\"]\n\
         [limits]\nmemory_mib = 64\ncall_timeout_ms = 2000\n"
    )
}

async fn upload(
    node: &LotusNode,
    method: Method,
    path: &str,
    manifest: String,
    script: &[u8],
) -> anyhow::Result<(u16, Value)> {
    lotus_e2e::upload_plugin(node, method, path, &manifest, "script", script.to_vec()).await
}

/// Sends the frame on `up_raw` and returns the stored PM2.5 once the reply came back.
async fn report(c: &mut Client, f: &Fixture, frame: &[u8]) -> anyhow::Result<Value> {
    let d = &f.devices[0];
    c.publish(
        &sys(d, "thing/model/up_raw"),
        QoS::AtLeastOnce,
        frame.to_vec(),
    )
    .await?;
    c.expect_json(&sys(d, "thing/model/up_raw_reply")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vendor_scripts_uploaded_as_they_are_decode_and_encode() -> anyhow::Result<()> {
    let components = lotus_plugin_artifacts::script_components();
    let runner = components.join("script_runner.wasm");
    let options = NodeOptions {
        extra_env: vec![(
            "LOTUS_PLUGINS__SCRIPT_RUNNER".into(),
            runner.display().to_string(),
        )],
        ..NodeOptions::default()
    };
    let f = Fixture::start_with(options, 1, json!({"dataFormat": "custom"})).await?;
    let pk = f.product_key.clone();
    f.node
        .expect(
            Method::PUT,
            &format!("/api/v1/products/{pk}/thing-model"),
            Some(air_quality_tsl()),
            200,
        )
        .await?;
    let alibaba = std::fs::read(format!("{SCRIPTS}/alibaba-script.js"))?;
    let chirpstack = std::fs::read(format!("{SCRIPTS}/chirpstack-script.js"))?;

    // Refused before anything is stored, each saying what to fix.
    let (status, p) = upload(
        &f.node,
        Method::POST,
        "/api/v1/plugins",
        manifest("1.0.0", &pk),
        b"function parse(b) { return b; }",
    )
    .await?;
    assert_eq!(status, 422, "{p}");
    assert!(
        p["detail"].as_str().unwrap().contains("rawDataToProtocol"),
        "{p}"
    );
    let (status, p) = upload(
        &f.node,
        Method::POST,
        "/api/v1/plugins",
        manifest("1.0.0", &pk),
        &[0xff, 0xfe, 0x00],
    )
    .await?;
    assert_eq!(status, 422, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("UTF-8"), "{p}");
    let (status, p) = upload(
        &f.node,
        Method::POST,
        "/api/v1/plugins",
        manifest("1.0.0", &pk).replace("\"kv\", ", ""),
        &alibaba,
    )
    .await?;
    assert_eq!(status, 422, "the runner reads its script through kv: {p}");
    let (status, _) = f
        .node
        .api(Method::GET, "/api/v1/plugins/aq-vendor", None)
        .await?;
    assert_eq!(status.as_u16(), 404);

    // The Alibaba script, byte for byte as the vendor wrote it.
    let (status, p) = upload(
        &f.node,
        Method::POST,
        "/api/v1/plugins",
        manifest("1.0.0", &pk),
        &alibaba,
    )
    .await?;
    assert_eq!(status, 201, "{p}");
    f.node
        .expect(
            Method::PUT,
            &format!("/api/v1/products/{pk}/codec"),
            Some(json!({"plugin": "aq-vendor"})),
            200,
        )
        .await?;

    let d = f.devices[0].clone();
    let mut c = Client::connected(mqtt_options(&d, f.node.mqtt)).await?;
    c.subscribe(&sys(&d, "thing/model/up_raw_reply"), QoS::AtLeastOnce)
        .await?;
    c.subscribe(&sys(&d, "thing/model/down_raw"), QoS::AtLeastOnce)
        .await?;
    let reply = report(&mut c, &f, &FRAME).await?;
    assert_eq!(reply["code"], 200, "{reply}");
    let props = f.latest_properties(0).await?;
    let text = props.to_string();
    assert!(text.contains("PM25") && text.contains("21.7"), "{props}");

    // A frame the script throws on: the device's reply carries the script's own message.
    let reply = report(&mut c, &f, &FRAME[..3]).await?;
    assert_ne!(reply["code"], 200, "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("rawDataToProtocol: frame length 3, expected 7"),
        "{reply}"
    );

    // Downlink: the script's protocolToRawData encodes the property set.
    f.node
        .expect(
            Method::POST,
            &format!("{}/properties:set", f.device_path(0)),
            Some(json!({"params": {"ReportInterval": 300}})),
            202,
        )
        .await?;
    let down = c.expect_publish(&sys(&d, "thing/model/down_raw")).await?;
    assert_eq!(down.as_ref(), &[0xa1, 0, 0, 0x01, 0x2c]);

    // Upgrade to the ChirpStack script: same device, new script.
    let (status, p) = upload(
        &f.node,
        Method::PUT,
        "/api/v1/plugins/aq-vendor",
        manifest("2.0.0", &pk),
        &chirpstack,
    )
    .await?;
    assert_eq!(status, 200, "{p}");
    let reply = report(&mut c, &f, &FRAME[..3]).await?;
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("decodeUplink: expected 7 bytes, got 3"),
        "the new script serves: {reply}"
    );
    assert_eq!(report(&mut c, &f, &FRAME).await?["code"], 200);

    // Roll back: the Alibaba script serves again.
    let back = f
        .node
        .expect(
            Method::POST,
            "/api/v1/plugins/aq-vendor/rollback",
            None,
            200,
        )
        .await?;
    assert_eq!(back["activeVersion"], "1.0.0");
    let reply = report(&mut c, &f, &[0x01]).await?;
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("rawDataToProtocol: frame length 1, expected 7"),
        "the rolled-back script serves: {reply}"
    );
    assert_eq!(report(&mut c, &f, &FRAME).await?["code"], 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_script_runner_says_how_to_get_one() -> anyhow::Result<()> {
    let f = Fixture::start_with(NodeOptions::default(), 0, json!({"dataFormat": "custom"})).await?;
    let alibaba = std::fs::read(format!("{SCRIPTS}/alibaba-script.js"))?;
    let (status, p) = upload(
        &f.node,
        Method::POST,
        "/api/v1/plugins",
        manifest("1.0.0", &f.product_key),
        &alibaba,
    )
    .await?;
    assert_eq!(status, 422, "{p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("plugins.script_runner"),
        "{p}"
    );
    Ok(())
}
