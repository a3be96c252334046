//! A real Lotus node with a street-light product (thing model with a `SetLight` sync service)
//! and devices provisioned through the API.

#![allow(dead_code)]

use std::time::Duration;

use lotus_device_sdk::{Backoff, Credentials, DeviceConfig};
use lotus_test_harness::node::{LotusNode, NodeOptions};
use reqwest::Method;
use serde_json::{Value, json};

pub fn street_light_tsl() -> Value {
    serde_json::from_str(include_str!("../fixtures/street-light.tsl.json")).expect("JSON fixture")
}

pub struct Fixture {
    pub node: LotusNode,
    pub product_key: String,
    pub product_secret: String,
    pub devices: Vec<Credentials>,
}

impl Fixture {
    pub async fn start(devices: usize) -> anyhow::Result<Fixture> {
        Self::start_with(NodeOptions::default(), devices, json!({})).await
    }

    pub async fn start_with(
        options: NodeOptions,
        devices: usize,
        product_extra: Value,
    ) -> anyhow::Result<Fixture> {
        let mut node = LotusNode::start(options).await?;
        node.login().await?;
        Self::provision(node, devices, product_extra).await
    }

    pub async fn provision(
        node: LotusNode,
        devices: usize,
        product_extra: Value,
    ) -> anyhow::Result<Fixture> {
        let mut body = json!({"name": "Street light", "nodeType": "direct", "dataFormat": "alink"});
        if let (Some(b), Some(extra)) = (body.as_object_mut(), product_extra.as_object()) {
            b.extend(extra.clone());
        }
        let product = node
            .expect(Method::POST, "/api/v1/products", Some(body), 201)
            .await?;
        let pk = product["productKey"].as_str().unwrap().to_string();
        let secret = product["productSecret"].as_str().unwrap().to_string();
        node.expect(
            Method::PUT,
            &format!("/api/v1/products/{pk}/thing-model"),
            Some(street_light_tsl()),
            200,
        )
        .await?;
        let mut creds = Vec::new();
        if devices > 0 {
            let names: Vec<String> = (0..devices).map(|i| format!("lamp-{i:04}")).collect();
            let out = node
                .expect(
                    Method::POST,
                    &format!("/api/v1/products/{pk}/devices:batch"),
                    Some(json!({"deviceNames": names})),
                    201,
                )
                .await?;
            for d in out["devices"].as_array().unwrap() {
                creds.push(Credentials::new(
                    pk.clone(),
                    d["deviceName"].as_str().unwrap(),
                    d["deviceSecret"].as_str().unwrap(),
                ));
            }
        }
        Ok(Fixture {
            node,
            product_key: pk,
            product_secret: secret,
            devices: creds,
        })
    }

    pub fn device_path(&self, i: usize) -> String {
        format!(
            "/api/v1/products/{}/devices/{}",
            self.product_key, self.devices[i].device_name
        )
    }

    /// SDK settings for device `i` on this node's MQTT listener, with short test timings.
    pub fn mqtt_config(&self, i: usize) -> DeviceConfig {
        DeviceConfig::mqtt(
            self.devices[i].clone(),
            self.node.mqtt.ip().to_string(),
            self.node.mqtt.port(),
        )
        .reply_timeout(Duration::from_secs(5))
        .backoff(Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(1),
        ))
    }

    /// Polls `GET path` until `ready` holds (bounded).
    pub async fn wait_for(
        &self,
        path: &str,
        ready: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.node.expect(Method::GET, path, None, 200).await?;
            if ready(&v) {
                return Ok(v);
            }
            if std::time::Instant::now() > deadline {
                anyhow::bail!("{path} did not reach the expected state: {v}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The latest value of property `id` as the API reports it.
    pub async fn latest(&self, i: usize, id: &str) -> anyhow::Result<Value> {
        let all = self
            .node
            .expect(
                Method::GET,
                &format!("{}/properties", self.device_path(i)),
                None,
                200,
            )
            .await?;
        Ok(all
            .as_array()
            .and_then(|a| a.iter().find(|p| p["identifier"] == id))
            .map(|p| p["value"].clone())
            .unwrap_or(Value::Null))
    }
}

/// Polls a condition (bounded).
pub async fn eventually(what: &str, f: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        if std::time::Instant::now() > deadline {
            anyhow::bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
