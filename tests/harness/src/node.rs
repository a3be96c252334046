//! Starts the real `lotus` binary on free loopback ports in a temp dir and talks to its API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::{Method, StatusCode};
use serde_json::Value;

pub const ADMIN_PASSWORD: &str = "Lotus-test-admin-1";

/// Newest modification time of the host's sources (and the lock file).
fn sources_mtime() -> Option<std::time::SystemTime> {
    fn walk(dir: &Path, newest: &mut Option<std::time::SystemTime>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, newest);
            } else if let Ok(m) = e.metadata().and_then(|m| m.modified()) {
                *newest = (*newest).max(Some(m));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut newest = std::fs::metadata(root.join("Cargo.lock"))
        .and_then(|m| m.modified())
        .ok();
    walk(&root.join("host"), &mut newest);
    newest
}

/// The `lotus` binary: `LOTUS_BIN`, else the one in this test executable's target dir — built
/// with cargo first when it is missing or older than the host's sources. (The README's test
/// command builds it beforehand, together with the tests, so no build happens here in CI.)
pub fn binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("LOTUS_BIN") {
            return PathBuf::from(p);
        }
        // target/<profile>/deps/<test-exe> → target/<profile>/lotus
        let exe = std::env::current_exe().expect("the test knows its own path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("tests run from target/<profile>/deps");
        let bin = profile_dir.join("lotus");
        let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
        if built.is_some() && built >= sources_mtime() {
            return bin;
        }
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "lotus", "--bin", "lotus"])
            .args(if profile_dir.ends_with("release") {
                &["--release"][..]
            } else {
                &[][..]
            })
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the lotus binary failed");
        bin
    })
    .clone()
}

#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// Another database than a fresh SQLite file (e.g. a TestPostgres URL).
    pub database_url: Option<String>,
    pub allow_anonymous: bool,
    /// Reuse this data directory (to restart a node on the same data).
    pub data_dir: Option<PathBuf>,
    /// (certificate PEM, key PEM) to serve MQTT over TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub extra_env: Vec<(String, String)>,
    /// More `lotus serve` flags (e.g. a second `--mqtt-listen`).
    pub extra_args: Vec<String>,
}

pub struct LotusNode {
    child: Option<Child>,
    /// Everything the node reported as bound, by listener kind.
    pub listening: Value,
    pub http: String,
    pub mqtt: SocketAddr,
    pub mqtt_ws: SocketAddr,
    pub mqtt_tls: Option<SocketAddr>,
    /// HTTPS (API and HTTP device access) when the node was given a certificate.
    pub https: Option<SocketAddr>,
    /// CoAP over UDP, over DTLS, and the symmetric-encrypted channel.
    pub coap: Option<SocketAddr>,
    pub coap_dtls: Option<SocketAddr>,
    pub coap_encrypted: Option<SocketAddr>,
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    pub client: reqwest::Client,
    pub token: Option<String>,
    pub options: NodeOptions,
}

fn first_addr(v: &Value, key: &str) -> Option<SocketAddr> {
    v[key].as_array()?.first()?.as_str()?.parse().ok()
}

impl LotusNode {
    pub async fn start(options: NodeOptions) -> anyhow::Result<LotusNode> {
        let (temp, data_dir) = match &options.data_dir {
            Some(d) => (None, d.clone()),
            None => {
                let t = tempfile::Builder::new().prefix("lotus-node-").tempdir()?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let ready = data_dir.join("ready.json");
        let _ = std::fs::remove_file(&ready);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join("lotus.log"))?;
        let mut cmd = Command::new(binary());
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&data_dir)
            .args([
                "--http-listen",
                "127.0.0.1:0",
                "--mqtt-listen",
                "127.0.0.1:0",
                "--mqtt-ws-listen",
                "127.0.0.1:0",
                "--coap-listen",
                "127.0.0.1:0",
                "--coap-dtls-listen",
                "127.0.0.1:0",
                "--coap-encrypted-listen",
                "127.0.0.1:0",
            ])
            .args([
                "--log-format",
                "text",
                "--log-level",
                "info,lotus_mqtt=debug",
            ])
            .arg("--ready-file")
            .arg(&ready)
            .env("LOTUS_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env_remove("LOTUS_CONFIG")
            // The harness's own variable, not a node setting (the node refuses unknown keys).
            .env_remove("LOTUS_BIN")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(url) = &options.database_url {
            cmd.arg("--database-url").arg(url);
        }
        if options.allow_anonymous {
            cmd.arg("--allow-anonymous");
        }
        if let Some((cert, key)) = &options.tls {
            cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
            cmd.args(["--mqtt-tls-listen", "127.0.0.1:0"]);
            cmd.args(["--https-listen", "127.0.0.1:0"]);
        }
        cmd.args(&options.extra_args);
        for (k, v) in &options.extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().context("starting lotus")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let info: Value = loop {
            if let Ok(text) = std::fs::read_to_string(&ready)
                && let Ok(v) = serde_json::from_str(&text)
            {
                break v;
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "lotus exited with {status} before it was ready; log:\n{}",
                    std::fs::read_to_string(data_dir.join("lotus.log")).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("lotus was not ready within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let http: SocketAddr =
            first_addr(&info, "http").context("no HTTP address in the ready file")?;
        Ok(LotusNode {
            listening: info.clone(),
            child: Some(child),
            http: format!("http://{http}"),
            mqtt: first_addr(&info, "mqtt").context("no MQTT address")?,
            mqtt_ws: first_addr(&info, "mqttWs").context("no MQTT WebSocket address")?,
            mqtt_tls: first_addr(&info, "mqttTls"),
            https: first_addr(&info, "https"),
            coap: first_addr(&info, "coap"),
            coap_dtls: first_addr(&info, "coapDtls"),
            coap_encrypted: first_addr(&info, "coapEncrypted"),
            data_dir,
            _temp: temp,
            client: reqwest::Client::new(),
            token: None,
            options,
        })
    }

    /// Logs in as the administrator and keeps the token for [`Self::api`].
    pub async fn login(&mut self) -> anyhow::Result<()> {
        let (status, body) = self
            .api(
                Method::POST,
                "/api/v1/auth/login",
                Some(serde_json::json!({"username": "admin", "password": ADMIN_PASSWORD})),
            )
            .await?;
        if status != StatusCode::OK {
            bail!("log-in failed: {status} {body}");
        }
        self.token = Some(body["token"].as_str().context("no token")?.to_string());
        Ok(())
    }

    pub async fn api(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut req = self.client.request(method, format!("{}{path}", self.http));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, value))
    }

    /// Like [`Self::api`] but fails unless the status is the expected one.
    pub async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        expected: u16,
    ) -> anyhow::Result<Value> {
        let (status, value) = self.api(method.clone(), path, body).await?;
        if status.as_u16() != expected {
            bail!("{method} {path}: expected {expected}, got {status}: {value}");
        }
        Ok(value)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("lotus.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a graceful exit.
    pub fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut c = self.child.take().context("already stopped")?;
        let pid = c.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = c.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                bail!("lotus did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Keeps the data directory so that a new node can start on it.
    pub fn into_data_dir(mut self) -> (PathBuf, Option<tempfile::TempDir>) {
        self.kill9();
        (self.data_dir.clone(), self._temp.take())
    }
}

impl Drop for LotusNode {
    fn drop(&mut self) {
        self.kill9();
    }
}
