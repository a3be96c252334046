//! Codec plugins through the real binary: install over the API, bind to a `dataFormat: custom`
//! product, raw uplinks decoded into stored properties, downlinks encoded onto `down_raw`,
//! upgrade and rollback, a bad frame answered with its byte offset, a looping component's
//! message kept as a dead letter, and the CLI.

use std::time::Duration;

use lotus_e2e::{Fixture, sys};
use lotus_plugin_artifacts as artifacts;
use lotus_test_harness::device::mqtt_options;
use lotus_test_harness::mqtt::Client;
use lotus_test_harness::node::{ADMIN_PASSWORD, NodeOptions, binary};
use reqwest::Method;
use rumqttc::QoS;
use serde_json::{Value, json};

/// Matches the test codec's frames: temperature (tenths of °C), humidity, report interval.
fn sensor_tsl() -> Value {
    let property = |id: &str, access: &str, data_type: Value| json!({"identifier": id, "name": id, "accessMode": access, "required": false, "dataType": data_type});
    json!({
        "schema": "https://iotx-tsl.oss-ap-southeast-1.aliyuncs.com/schema.json",
        "profile": {"version": "1.0", "productKey": "placeholder"},
        "properties": [
            property("temperature", "r", json!({"type": "float", "specs": {"min": "-100", "max": "100", "step": "0.1"}})),
            property("humidity", "r", json!({"type": "int", "specs": {"min": "0", "max": "100", "step": "1"}})),
            property("frames", "r", json!({"type": "int", "specs": {"min": "0", "max": "1000000", "step": "1"}})),
            property("interval", "rw", json!({"type": "int", "specs": {"min": "1", "max": "65535", "step": "1"}})),
        ],
        "events": [],
        "services": []
    })
}

fn codec_manifest(id: &str, version: &str, product_key: &str) -> String {
    format!(
        "id = \"{id}\"\nversion = \"{version}\"\nworld = \"codec\"\n\
         description = \"test codec\"\ncapabilities = [\"log\"]\nproducts = [\"{product_key}\"]\n"
    )
}

/// A custom-format product with the sensor thing model and one device.
async fn sensor_fixture() -> anyhow::Result<Fixture> {
    sensor_fixture_with(NodeOptions::default()).await
}

async fn sensor_fixture_with(options: NodeOptions) -> anyhow::Result<Fixture> {
    let f = Fixture::start_with(options, 1, json!({"dataFormat": "custom"})).await?;
    f.node
        .expect(
            Method::PUT,
            &format!("/api/v1/products/{}/thing-model", f.product_key),
            Some(sensor_tsl()),
            200,
        )
        .await?;
    Ok(f)
}

async fn upload(
    f: &Fixture,
    method: Method,
    path: &str,
    manifest: &str,
    wasm_path: &str,
) -> anyhow::Result<(u16, Value)> {
    lotus_e2e::upload_plugin(
        &f.node,
        method,
        path,
        manifest,
        "wasm",
        std::fs::read(wasm_path)?,
    )
    .await
}

async fn bind(f: &Fixture, plugin: &str) -> anyhow::Result<()> {
    f.node
        .expect(
            Method::PUT,
            &format!("/api/v1/products/{}/codec", f.product_key),
            Some(json!({"plugin": plugin})),
            200,
        )
        .await?;
    Ok(())
}

/// Publishes a raw frame and returns the platform's `up_raw_reply`.
async fn raw_report(c: &mut Client, f: &Fixture, frame: &[u8]) -> anyhow::Result<Value> {
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
async fn codec_decodes_uplinks_encodes_downlinks_and_upgrades() -> anyhow::Result<()> {
    let f = sensor_fixture().await?;
    let d = f.devices[0].clone();

    // Validation happens before anything is stored, and names what to fix.
    let (status, p) = upload(
        &f,
        Method::POST,
        "/api/v1/plugins",
        "version = \"1\"\nworld = \"codec\"\n",
        artifacts::GOOD_CODEC,
    )
    .await?;
    assert_eq!(status, 422, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("manifest"), "{p}");
    let (status, p) = upload(
        &f,
        Method::POST,
        "/api/v1/plugins",
        &codec_manifest("thermo", "1.0.0", &f.product_key).replace("codec\"", "rule\""),
        artifacts::GOOD_CODEC,
    )
    .await?;
    assert_eq!(status, 422, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("wasm"), "{p}");

    let (status, installed) = upload(
        &f,
        Method::POST,
        "/api/v1/plugins",
        &codec_manifest("thermo", "1.0.0", &f.product_key),
        artifacts::GOOD_CODEC,
    )
    .await?;
    assert_eq!(status, 201, "{installed}");
    assert_eq!(installed["activeVersion"], "1.0.0");
    assert_eq!(
        installed["versions"][0]["sha256"].as_str().unwrap().len(),
        64
    );
    // A codec scoped to other products is not bound to this one.
    let (status, p) = upload(
        &f,
        Method::POST,
        "/api/v1/plugins",
        &codec_manifest("elsewhere", "1", "otherProduct"),
        artifacts::GOOD_CODEC,
    )
    .await?;
    assert_eq!(status, 201, "{p}");
    let p = f
        .node
        .expect(
            Method::PUT,
            &format!("/api/v1/products/{}/codec", f.product_key),
            Some(json!({"plugin": "elsewhere"})),
            422,
        )
        .await?;
    assert!(p["detail"].as_str().unwrap().contains("products"), "{p}");
    let (status, _) = upload(
        &f,
        Method::POST,
        "/api/v1/plugins",
        &codec_manifest("thermo", "1.0.0", &f.product_key),
        artifacts::GOOD_CODEC,
    )
    .await?;
    assert_eq!(status, 409);
    bind(&f, "thermo").await?;

    let mut c = Client::connected(mqtt_options(&d, f.node.mqtt)).await?;
    c.subscribe(&sys(&d, "thing/model/up_raw_reply"), QoS::AtLeastOnce)
        .await?;
    c.subscribe(&sys(&d, "thing/model/down_raw"), QoS::AtLeastOnce)
        .await?;
    f.wait_status(0, "online").await?;

    // 21.5 °C, 55 %: decoded, validated and stored like an Alink property post.
    let reply = raw_report(&mut c, &f, &[0x01, 0x00, 0xd7, 55]).await?;
    assert_eq!(reply["code"], 200, "{reply}");
    assert_eq!(reply["id"], "1", "version 1 decoded it");
    let props = f.latest_properties(0).await?;
    let text = props.to_string();
    assert!(
        text.contains("temperature") && text.contains("21.5"),
        "{props}"
    );
    assert!(text.contains("humidity") && text.contains("55"), "{props}");

    // A frame the codec rejects: the device learns which byte and field.
    let reply = raw_report(&mut c, &f, &[0x01, 0x00]).await?;
    assert_eq!(reply["code"], 400, "{reply}");
    assert_eq!(reply["data"]["offset"], 2, "{reply}");
    assert_eq!(reply["data"]["field"], "temperature", "{reply}");
    assert!(
        reply["message"].as_str().unwrap().contains("byte 2"),
        "{reply}"
    );

    // A property set goes out encoded on down_raw.
    let accepted = f
        .node
        .expect(
            Method::POST,
            &format!("{}/properties:set", f.device_path(0)),
            Some(json!({"params": {"interval": 300}})),
            202,
        )
        .await?;
    assert!(accepted["messageId"].is_string());
    let frame = c.expect_publish(&sys(&d, "thing/model/down_raw")).await?;
    assert_eq!(frame.as_ref(), &[0x02, 0x01, 0x2c]);

    // Upgrade: the new version answers; rollback: the old one again.
    let (status, up) = upload(
        &f,
        Method::PUT,
        "/api/v1/plugins/thermo",
        &codec_manifest("thermo", "2.0.0", &f.product_key),
        artifacts::GOOD_CODEC_V2,
    )
    .await?;
    assert_eq!(status, 200, "{up}");
    assert_eq!(up["activeVersion"], "2.0.0");
    let (status, p) = upload(
        &f,
        Method::PUT,
        "/api/v1/plugins/thermo",
        &codec_manifest("other", "3.0.0", &f.product_key),
        artifacts::GOOD_CODEC_V2,
    )
    .await?;
    assert_eq!(status, 422, "{p}");
    assert_eq!(
        raw_report(&mut c, &f, &[0x01, 0x00, 0xd7, 55]).await?["id"],
        "2"
    );
    let back = f
        .node
        .expect(Method::POST, "/api/v1/plugins/thermo/rollback", None, 200)
        .await?;
    assert_eq!(back["activeVersion"], "1.0.0");
    assert_eq!(back["versions"].as_array().unwrap().len(), 2);
    assert_eq!(
        raw_report(&mut c, &f, &[0x01, 0x00, 0xd7, 55]).await?["id"],
        "1"
    );
    let p = f
        .node
        .expect(Method::POST, "/api/v1/plugins/thermo/rollback", None, 409)
        .await?;
    assert!(
        p["detail"].as_str().unwrap().contains("no version older"),
        "{p}"
    );

    // A bound codec cannot be removed.
    f.node
        .expect(Method::DELETE, "/api/v1/plugins/thermo", None, 409)
        .await?;
    let list = f
        .node
        .expect(Method::GET, "/api/v1/plugins", None, 200)
        .await?;
    let ids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    assert_eq!(ids, ["elsewhere", "thermo"], "listed by id");
    c.disconnect().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_codec_keeps_the_message_as_a_dead_letter() -> anyhow::Result<()> {
    let f = sensor_fixture_with(NodeOptions {
        extra_env: vec![("LOTUS_PLUGINS__SUSPEND_AFTER_FAILURES".into(), "2".into())],
        ..Default::default()
    })
    .await?;
    let d = f.devices[0].clone();
    let (status, p) = upload(
        &f,
        Method::POST,
        "/api/v1/plugins",
        &codec_manifest("looper", "1", &f.product_key),
        artifacts::LOOP_CODEC,
    )
    .await?;
    assert_eq!(status, 201, "{p}");
    bind(&f, "looper").await?;
    let mut c = Client::connected(mqtt_options(&d, f.node.mqtt)).await?;
    c.subscribe(&sys(&d, "thing/model/up_raw_reply"), QoS::AtLeastOnce)
        .await?;
    f.wait_status(0, "online").await?;

    let reply = raw_report(&mut c, &f, &[0x01, 0x02, 0x03]).await?;
    assert_eq!(reply["code"], 500, "{reply}");
    assert!(
        reply["message"].as_str().unwrap().contains("dead letter"),
        "{reply}"
    );

    let letters = f
        .node
        .expect(Method::GET, "/api/v1/dead-letters?plugin=looper", None, 200)
        .await?;
    let letter = &letters["items"][0];
    assert_eq!(letter["payloadHex"], "010203", "{letters}");
    assert_eq!(letter["deviceName"], d.device_name.as_str());
    let reason = letter["reason"].as_str().unwrap();
    assert!(reason == "timeout" || reason == "out_of_fuel", "{letters}");

    // The node keeps serving: the plugin's log says what happened.
    let logs = f
        .node
        .expect(
            Method::GET,
            "/api/v1/plugins/looper/logs?limit=10",
            None,
            200,
        )
        .await?;
    assert!(logs["items"].is_array(), "{logs}");
    f.node
        .expect(Method::GET, "/api/v1/dead-letters?limit=0", None, 400)
        .await?;

    // The second consecutive failure suspends it: recorded, and later messages are kept too.
    let reply = raw_report(&mut c, &f, &[0x04]).await?;
    assert_eq!(reply["code"], 500, "{reply}");
    let mut plugin = Value::Null;
    for _ in 0..100 {
        plugin = f
            .node
            .expect(Method::GET, "/api/v1/plugins/looper", None, 200)
            .await?;
        if plugin["status"] == "suspended" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(plugin["status"], "suspended", "{plugin}");
    let reply = raw_report(&mut c, &f, &[0x05]).await?;
    assert_eq!(reply["code"], 500, "{reply}");
    let letters = f
        .node
        .expect(Method::GET, "/api/v1/dead-letters?plugin=looper", None, 200)
        .await?;
    assert_eq!(letters["items"].as_array().unwrap().len(), 3, "{letters}");
    assert_eq!(letters["items"][0]["reason"], "suspended", "{letters}");
    // Operators see the suspension in their alarm list until they resume the plugin.
    let suspended_alarms = "/api/v1/alarms?alarmType=plugin.suspended.looper";
    let mut alarms = Value::Null;
    for _ in 0..100 {
        alarms = f
            .node
            .expect(Method::GET, suspended_alarms, None, 200)
            .await?;
        if alarms["total"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let alarm = &alarms["items"][0];
    assert_eq!(alarm["state"], "active", "{alarms}");
    assert_eq!(alarm["level"], 2, "{alarms}");
    assert!(
        alarm["message"]
            .as_str()
            .unwrap()
            .starts_with("plugin 'looper' suspended after repeated failures"),
        "{alarms}"
    );
    let resumed = f
        .node
        .expect(Method::POST, "/api/v1/plugins/looper/resume", None, 200)
        .await?;
    assert_eq!(resumed["status"], "active", "{resumed}");
    let alarms = f
        .node
        .expect(Method::GET, suspended_alarms, None, 200)
        .await?;
    assert_eq!(alarms["items"][0]["state"], "cleared", "{alarms}");
    assert_eq!(alarms["items"][0]["clearedBy"], "admin", "{alarms}");

    // Uploads past the limit are refused with a problem, not a dropped connection.
    let big = tempfile::NamedTempFile::new()?;
    std::fs::write(big.path(), vec![0u8; 33 * 1024 * 1024])?;
    let (status, p) = upload(
        &f,
        Method::POST,
        "/api/v1/plugins",
        &codec_manifest("big", "1", &f.product_key),
        big.path().to_str().unwrap(),
    )
    .await?;
    assert_eq!(status, 413, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("larger than"), "{p}");
    c.disconnect().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_installs_and_lists_plugins() -> anyhow::Result<()> {
    let f = sensor_fixture().await?;
    let home = tempfile::tempdir()?;
    let manifest = home.path().join("lotus-plugin.toml");
    std::fs::write(
        &manifest,
        codec_manifest("cli-codec", "1.0.0", &f.product_key),
    )?;
    let run = |args: &[&str]| {
        std::process::Command::new(binary())
            .args(args)
            .env("XDG_CONFIG_HOME", home.path())
            .env("LOTUS_URL", &f.node.http)
            .env_remove("LOTUS_TOKEN")
            .output()
    };
    let out = run(&["login", "--username", "admin", "--password", ADMIN_PASSWORD])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest_arg = manifest.to_str().unwrap();
    let out = run(&[
        "plugin",
        "install",
        "--manifest",
        manifest_arg,
        "--wasm",
        artifacts::GOOD_CODEC,
    ])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let installed: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(installed["id"], "cli-codec");
    let out = run(&["plugin", "list"])?;
    assert!(String::from_utf8_lossy(&out.stdout).contains("cli-codec"));
    let out = run(&[
        "plugin",
        "install",
        "--manifest",
        "/nonexistent.toml",
        "--wasm",
        artifacts::GOOD_CODEC,
    ])?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--manifest"));
    let out = run(&["plugin", "bind-codec", &f.product_key, "cli-codec"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["plugin", "remove", "cli-codec"])?;
    assert!(!out.status.success(), "a bound codec is not removed");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unbind"));
    let out = run(&["plugin", "logs", "cli-codec"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_runs_the_active_versions_again() -> anyhow::Result<()> {
    let mut f = sensor_fixture().await?;
    let (status, p) = upload(
        &f,
        Method::POST,
        "/api/v1/plugins",
        &codec_manifest("thermo", "1.0.0", &f.product_key),
        artifacts::GOOD_CODEC,
    )
    .await?;
    assert_eq!(status, 201, "{p}");
    let (status, p) = upload(
        &f,
        Method::PUT,
        "/api/v1/plugins/thermo",
        &codec_manifest("thermo", "2.0.0", &f.product_key),
        artifacts::GOOD_CODEC_V2,
    )
    .await?;
    assert_eq!(status, 200, "{p}");
    bind(&f, "thermo").await?;

    let status = f.node.stop()?;
    assert!(status.success(), "lotus exited with {status}");
    let Fixture {
        node,
        product_key,
        product_secret,
        devices,
    } = f;
    let (data_dir, _temp) = node.into_data_dir();
    let mut node = lotus_test_harness::node::LotusNode::start(NodeOptions {
        data_dir: Some(data_dir),
        ..Default::default()
    })
    .await?;
    node.login().await?;
    let f = Fixture {
        node,
        product_key,
        product_secret,
        devices,
    };

    let d = f.devices[0].clone();
    let mut c = Client::connected(mqtt_options(&d, f.node.mqtt)).await?;
    c.subscribe(&sys(&d, "thing/model/up_raw_reply"), QoS::AtLeastOnce)
        .await?;
    f.wait_status(0, "online").await?;
    let reply = raw_report(&mut c, &f, &[0x01, 0x00, 0xd7, 55]).await?;
    assert_eq!(reply["code"], 200, "{reply}");
    assert_eq!(reply["id"], "2", "the active version was reloaded");
    let plugin = f
        .node
        .expect(Method::GET, "/api/v1/plugins/thermo", None, 200)
        .await?;
    assert_eq!(plugin["runtime"]["version"], "2.0.0", "{plugin}");
    c.disconnect().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codec_keeps_state_through_the_kv_host_service() -> anyhow::Result<()> {
    let f = sensor_fixture().await?;
    let d = f.devices[0].clone();
    let manifest = codec_manifest("counter", "1", &f.product_key)
        .replace("capabilities = [\"log\"]", "capabilities = [\"kv\"]");
    let (status, p) = upload(
        &f,
        Method::POST,
        "/api/v1/plugins",
        &manifest,
        artifacts::KV_CODEC,
    )
    .await?;
    assert_eq!(status, 201, "{p}");
    bind(&f, "counter").await?;
    let mut c = Client::connected(mqtt_options(&d, f.node.mqtt)).await?;
    c.subscribe(&sys(&d, "thing/model/up_raw_reply"), QoS::AtLeastOnce)
        .await?;
    f.wait_status(0, "online").await?;
    // The count lives in the node's storage, read and written from inside the decode call.
    for expected in ["1", "2", "3"] {
        let reply = raw_report(&mut c, &f, &[0x00]).await?;
        assert_eq!(reply["code"], 200, "{reply}");
        assert_eq!(reply["id"], expected, "{reply}");
    }
    c.disconnect().await;
    Ok(())
}
