//! Fixtures shared by the end-to-end tests.

pub mod receiver;
pub mod relying_party;

use lotus_test_harness::device::DeviceCredentials;
use lotus_test_harness::node::{LotusNode, NodeOptions};
use reqwest::Method;
use serde_json::{Value, json};

/// A street-light controller as a vendor would model it on Alibaba's platform
/// (`fixtures/street-light.tsl.json`, also used in the README).
pub fn street_light_tsl() -> Value {
    serde_json::from_str(include_str!("../fixtures/street-light.tsl.json"))
        .expect("the fixture is JSON")
}

/// A node with one street-light product (thing model uploaded) and `devices` devices.
pub struct Fixture {
    pub node: LotusNode,
    pub product_key: String,
    pub product_secret: String,
    pub devices: Vec<DeviceCredentials>,
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
                creds.push(DeviceCredentials {
                    product_key: pk.clone(),
                    device_name: d["deviceName"].as_str().unwrap().to_string(),
                    device_secret: d["deviceSecret"].as_str().unwrap().to_string(),
                });
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

    /// The latest property values stored for device `i` (`[]` when none).
    pub async fn latest_properties(&self, i: usize) -> anyhow::Result<Value> {
        self.node
            .expect(
                Method::GET,
                &format!("{}/properties", self.device_path(i)),
                None,
                200,
            )
            .await
    }

    /// Polls the device until its status is `status` (bounded).
    pub async fn wait_status(&self, i: usize, status: &str) -> anyhow::Result<Value> {
        self.wait_device(i, |d| d["status"] == status).await
    }

    /// Polls the device until `ready` holds for it (bounded).
    pub async fn wait_device(
        &self,
        i: usize,
        ready: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let d = self
                .node
                .expect(Method::GET, &self.device_path(i), None, 200)
                .await?;
            if ready(&d) {
                return Ok(d);
            }
            if std::time::Instant::now() > deadline {
                anyhow::bail!(
                    "device {} did not reach the expected state: {d}",
                    self.devices[i].device_name
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// The password of every user the tests create besides the administrator.
pub const PASSWORD: &str = "correct-horse-battery";

/// A logged-in user other than the administrator.
pub struct Session<'a> {
    pub node: &'a LotusNode,
    pub token: String,
}

impl<'a> Session<'a> {
    pub async fn login(node: &'a LotusNode, username: &str) -> anyhow::Result<Session<'a>> {
        let resp = node
            .client
            .post(format!("{}/api/v1/auth/login", node.http))
            .json(&json!({"username": username, "password": PASSWORD}))
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "login of {username} failed");
        let body: Value = resp.json().await?;
        Ok(Session {
            node,
            token: body["token"].as_str().unwrap().to_string(),
        })
    }

    /// One API call as this user: the status and the JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .node
            .client
            .request(method, format!("{}{path}", self.node.http))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }
}

impl Session<'_> {
    /// Like [`Session::call`] but fails unless the status is the expected one.
    pub async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        expected: u16,
    ) -> anyhow::Result<Value> {
        let (status, value) = self.call(method.clone(), path, body).await?;
        anyhow::ensure!(
            status == expected,
            "{method} {path}: expected {expected}, got {status}: {value}"
        );
        Ok(value)
    }
}

/// Creates a user with roles in a region (password [`PASSWORD`]).
pub async fn create_user(
    node: &LotusNode,
    name: &str,
    roles: &[&str],
    region: &str,
) -> anyhow::Result<()> {
    node.expect(
        Method::POST,
        "/api/v1/users",
        Some(json!({"username": name, "password": PASSWORD, "roles": roles, "region": region})),
        201,
    )
    .await?;
    Ok(())
}

/// Topic helpers.
pub fn sys(creds: &DeviceCredentials, tail: &str) -> String {
    format!("/sys/{}/{}/{tail}", creds.product_key, creds.device_name)
}

/// A plugin upload as an administrator sends it: multipart parts `manifest` and `part` (`wasm`
/// or `script`) to `path` (`POST /api/v1/plugins`, `PUT /api/v1/plugins/{id}`). Returns the
/// status and the JSON answer (a string when the body is not JSON).
pub async fn upload_plugin(
    node: &LotusNode,
    method: Method,
    path: &str,
    manifest: &str,
    part: &str,
    bytes: Vec<u8>,
) -> anyhow::Result<(u16, Value)> {
    let file_name = if part == "script" {
        "script.js"
    } else {
        "plugin.wasm"
    };
    let form = reqwest::multipart::Form::new()
        .text("manifest", manifest.to_string())
        .part(
            part.to_string(),
            reqwest::multipart::Part::bytes(bytes).file_name(file_name),
        );
    let resp = node
        .client
        .request(method, format!("{}{path}", node.http))
        .bearer_auth(node.token.as_deref().unwrap_or_default())
        .multipart(form)
        .send()
        .await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// Approves a plugin waiting for approval (one that calls out over `http`) the way a city's
/// security administrator does: as a second person holding `security_admin` (created on first
/// use). Returns the approved plugin.
pub async fn approve_plugin(node: &LotusNode, id: &str) -> anyhow::Result<Value> {
    const APPROVER: &str = "security-officer";
    let (status, body) = node
        .api(
            Method::POST,
            "/api/v1/users",
            Some(json!({"username": APPROVER, "password": PASSWORD,
                "roles": ["security_admin"], "region": "/"})),
        )
        .await?;
    anyhow::ensure!(
        status == 201 || status == 409,
        "creating {APPROVER}: {status} {body}"
    );
    let approver = Session::login(node, APPROVER).await?;
    approver
        .expect(
            Method::POST,
            &format!("/api/v1/plugins/{id}/approve"),
            None,
            200,
        )
        .await
}
