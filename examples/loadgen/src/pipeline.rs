//! Full device pipeline: signed devices post properties; the node validates and stores them;
//! at the end every device's history is read back and counted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use lotus_test_harness::device::{DeviceCredentials, mqtt_options};
use rumqttc::{AsyncClient, Event, Outgoing, Packet, QoS};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{Latency, histogram, own_cpu_time, per_sec, secs};

/// The thing model of the devices the generator creates.
pub const STREET_LIGHT_TSL: &str =
    include_str!("../../../tests/e2e/fixtures/street-light.tsl.json");

#[derive(Debug, Clone)]
pub struct Config {
    /// API base URL, e.g. `http://127.0.0.1:8080` (loopback only).
    pub api: String,
    pub mqtt: SocketAddr,
    pub user: String,
    pub password: String,
    pub devices: usize,
    /// Target property posts per second over all devices.
    pub rate: u64,
    pub duration: Duration,
    /// 0 or 1.
    pub qos: u8,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub devices: usize,
    pub qos: u8,
    pub target_rate: u64,
    pub duration_s: f64,
    /// From the first post to the last PUBACK: above the sustainable rate it outgrows `duration_s`.
    pub ack_window_s: f64,
    pub sent: u64,
    /// PUBACKed posts at QoS 1; posts written to the socket at QoS 0.
    pub acked: u64,
    pub stored: u64,
    /// `acked − stored` (never negative).
    pub lost: u64,
    pub errors: u64,
    pub sent_per_s: f64,
    pub acked_per_s: f64,
    pub stored_per_s: f64,
    /// PUBACK latency (QoS 1 only).
    pub latency: Latency,
    pub generator_cpu_s: f64,
    /// Generator CPU as a share of one core during the send phase.
    pub generator_cpu_pct: f64,
}

impl Report {
    pub fn print(&self) {
        crate::print_table(
            "pipeline",
            &[
                ("devices", self.devices.to_string()),
                ("qos", self.qos.to_string()),
                ("target rate (msg/s)", self.target_rate.to_string()),
                ("duration (s)", format!("{:.2}", self.duration_s)),
                (
                    "first post → last PUBACK (s)",
                    format!("{:.2}", self.ack_window_s),
                ),
                (
                    "sent",
                    format!("{} ({:.0} msg/s)", self.sent, self.sent_per_s),
                ),
                (
                    "acked",
                    format!("{} ({:.0} msg/s)", self.acked, self.acked_per_s),
                ),
                (
                    "stored",
                    format!("{} ({:.0} msg/s)", self.stored, self.stored_per_s),
                ),
                ("lost (acked − stored)", self.lost.to_string()),
                ("errors", self.errors.to_string()),
                (
                    "PUBACK latency p50/p99/max (ms)",
                    format!(
                        "{:.2} / {:.2} / {:.2}",
                        self.latency.p50_ms, self.latency.p99_ms, self.latency.max_ms
                    ),
                ),
                (
                    "generator CPU",
                    format!(
                        "{:.2} s ({:.0}% of a core)",
                        self.generator_cpu_s, self.generator_cpu_pct
                    ),
                ),
            ],
        );
    }
}

/// A logged-in API client.
pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
    pub token: String,
}

impl Api {
    pub async fn login(base: &str, user: &str, password: &str) -> anyhow::Result<Api> {
        let base = crate::loopback_url(base)?;
        let client = reqwest::Client::new();
        let resp = client
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"username": user, "password": password}))
            .send()
            .await
            .with_context(|| format!("logging in at {base}"))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("log-in failed: {status} {body}");
        }
        let token = body["token"].as_str().context("no token")?.to_string();
        Ok(Api {
            base,
            client,
            token,
        })
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .client
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!("{method} {path}: {status} {text}");
        }
        Ok(if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        })
    }
}

/// Creates a "Loadgen street light" product with the street-light thing model and `n` devices.
pub async fn provision(api: &Api, n: usize) -> anyhow::Result<Vec<DeviceCredentials>> {
    use reqwest::Method;
    let product = api
        .call(
            Method::POST,
            "/api/v1/products",
            Some(json!({"name": "Loadgen street light", "nodeType": "direct", "dataFormat": "alink"})),
        )
        .await?;
    let pk = product["productKey"]
        .as_str()
        .context("no productKey")?
        .to_string();
    let tsl: Value = serde_json::from_str(STREET_LIGHT_TSL)?;
    api.call(
        Method::PUT,
        &format!("/api/v1/products/{pk}/thing-model"),
        Some(tsl),
    )
    .await?;
    let mut creds = Vec::with_capacity(n);
    let names: Vec<String> = (0..n).map(|i| format!("lg-{i:06}")).collect();
    for chunk in names.chunks(1000) {
        let out = api
            .call(
                Method::POST,
                &format!("/api/v1/products/{pk}/devices:batch"),
                Some(json!({ "deviceNames": chunk })),
            )
            .await?;
        for d in out["devices"].as_array().context("no devices in reply")? {
            creds.push(DeviceCredentials {
                product_key: pk.clone(),
                device_name: d["deviceName"].as_str().context("deviceName")?.to_string(),
                device_secret: d["deviceSecret"]
                    .as_str()
                    .context("deviceSecret")?
                    .to_string(),
            });
        }
    }
    Ok(creds)
}

struct Counters {
    sent: AtomicU64,
    acked: AtomicU64,
    errors: AtomicU64,
}

/// Runs the pipeline load and verifies storage.
pub async fn run(config: Config) -> anyhow::Result<Report> {
    if !config.mqtt.ip().is_loopback() {
        bail!("refusing non-loopback MQTT target {}", config.mqtt);
    }
    if config.devices == 0 || config.rate == 0 {
        bail!("--devices and --rate must be positive");
    }
    let qos = match config.qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        q => bail!("unsupported QoS {q} (0 or 1)"),
    };
    let api = Api::login(&config.api, &config.user, &config.password).await?;
    let creds = provision(&api, config.devices).await?;

    // Connect every device and wait for its CONNACK.
    let counters = Arc::new(Counters {
        sent: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let mut clients = Vec::with_capacity(creds.len());
    let mut loops = Vec::with_capacity(creds.len());
    let mut ready = Vec::with_capacity(creds.len());
    for c in &creds {
        let mut opts = mqtt_options(c, config.mqtt);
        opts.set_inflight(1000);
        opts.set_keep_alive(Duration::from_secs(60));
        let (client, mut el) = AsyncClient::new(opts, 1024);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
        let counters = counters.clone();
        loops.push(tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            let mut sent_at: HashMap<u16, Instant> = HashMap::new();
            let mut hist = histogram();
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(Ok(()));
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        if pkid == 0 {
                            // QoS 0: written is all the acknowledgement there is.
                            counters.acked.fetch_add(1, Ordering::Relaxed);
                        } else {
                            sent_at.insert(pkid, Instant::now());
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        counters.acked.fetch_add(1, Ordering::Relaxed);
                        if let Some(t) = sent_at.remove(&ack.pkid) {
                            let _ = hist.record(t.elapsed().as_micros().max(1) as u64);
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                    Ok(_) => {}
                    Err(e) => {
                        match ready_tx.take() {
                            Some(tx) => {
                                let _ = tx.send(Err(anyhow::anyhow!("connect: {e}")));
                            }
                            None => {
                                counters.errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        break;
                    }
                }
            }
            hist
        }));
        clients.push(client);
        ready.push(ready_rx);
    }
    for (i, r) in ready.into_iter().enumerate() {
        match tokio::time::timeout(Duration::from_secs(60), r).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => bail!("device {} did not connect: {e}", creds[i].device_name),
            _ => bail!("device {} did not connect in time", creds[i].device_name),
        }
    }

    // Each device posts at rate/N, staggered so the total is spread evenly.
    let n = clients.len() as u64;
    let period = Duration::from_secs_f64(n as f64 / config.rate as f64);
    // Property times lie in the past, one millisecond apart per device, so that they are unique.
    let base_ms = lotus_test_harness::now_ms() - 3600 * 1000;
    let cpu0 = own_cpu_time();
    let start = Instant::now();
    let deadline = start + config.duration;
    let mut senders = Vec::with_capacity(clients.len());
    for (i, client) in clients.iter().enumerate() {
        let client = client.clone();
        let topic = format!(
            "/sys/{}/{}/thing/event/property/post",
            creds[i].product_key, creds[i].device_name
        );
        let counters = counters.clone();
        let offset = period.mul_f64(i as f64 / n as f64);
        senders.push(tokio::spawn(async move {
            let mut seq: u64 = 0;
            loop {
                let due = start + offset + period.mul_f64(seq as f64);
                if due >= deadline {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                let payload = format!(
                    r#"{{"id":"{seq}","version":"1.0","params":{{"Brightness":{{"value":{},"time":{}}}}},"sys":{{"ack":0}},"method":"thing.event.property.post"}}"#,
                    seq % 101,
                    base_ms + seq as i64
                );
                if client.publish(&topic, qos, false, payload).await.is_err() {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                counters.sent.fetch_add(1, Ordering::Relaxed);
                seq += 1;
            }
            seq
        }));
    }
    let mut per_device = Vec::with_capacity(senders.len());
    for s in senders {
        per_device.push(s.await?);
    }
    let send_elapsed = start.elapsed();
    // Let outstanding PUBACKs arrive (bounded).
    let sent = counters.sent.load(Ordering::Relaxed);
    let drain_deadline = Instant::now() + Duration::from_secs(10);
    while counters.acked.load(Ordering::Relaxed) + counters.errors.load(Ordering::Relaxed) < sent
        && Instant::now() < drain_deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // From the first post to the last acknowledgement (or the drain timeout).
    let ack_elapsed = start.elapsed();
    let cpu = own_cpu_time() - cpu0;
    for c in &clients {
        let _ = c.try_disconnect();
    }
    let mut hist: Histogram<u64> = histogram();
    for l in loops {
        if let Ok(Ok(h)) = tokio::time::timeout(Duration::from_secs(10), l).await {
            hist.add(h).ok();
        }
    }
    let acked = counters.acked.load(Ordering::Relaxed);

    // Read back what was stored; storage may lag a little behind the PUBACKs.
    let api = Arc::new(api);
    let verify_deadline = Instant::now() + Duration::from_secs(30);
    let mut stored;
    loop {
        stored = count_stored(&api, &creds, &per_device, base_ms).await?;
        if stored >= acked || Instant::now() > verify_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let errors = counters.errors.load(Ordering::Relaxed);
    Ok(Report {
        devices: creds.len(),
        qos: config.qos,
        target_rate: config.rate,
        duration_s: secs(send_elapsed),
        ack_window_s: secs(ack_elapsed),
        sent,
        acked,
        stored,
        lost: acked.saturating_sub(stored),
        errors,
        sent_per_s: per_sec(sent, send_elapsed),
        acked_per_s: per_sec(acked, ack_elapsed),
        stored_per_s: per_sec(stored, ack_elapsed),
        latency: Latency::from_histogram(&hist),
        generator_cpu_s: secs(cpu),
        generator_cpu_pct: 100.0 * secs(cpu) / secs(send_elapsed).max(1e-9),
    })
}

/// Sums the stored Brightness points of every device, in windows of 10,000 ms (the page limit).
async fn count_stored(
    api: &Arc<Api>,
    creds: &[DeviceCredentials],
    per_device: &[u64],
    base_ms: i64,
) -> anyhow::Result<u64> {
    let total = Arc::new(AtomicU64::new(0));
    let jobs: Vec<(String, u64)> = creds
        .iter()
        .zip(per_device)
        .map(|(c, &n)| {
            (
                format!(
                    "/api/v1/products/{}/devices/{}/properties/Brightness/history",
                    c.product_key, c.device_name
                ),
                n,
            )
        })
        .collect();
    let jobs = Arc::new(jobs);
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (api, jobs, next, total) = (api.clone(), jobs.clone(), next.clone(), total.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some((path, n)) = jobs.get(i) else {
                    return Ok::<_, anyhow::Error>(());
                };
                let mut window = 0u64;
                while window < *n {
                    let from = base_ms + window as i64;
                    let page = api
                        .call(
                            reqwest::Method::GET,
                            &format!("{path}?from={from}&to={}&limit=10000", from + 9_999),
                            None,
                        )
                        .await?;
                    let points = page["points"].as_array().map_or(0, Vec::len) as u64;
                    total.fetch_add(points, Ordering::Relaxed);
                    window += 10_000;
                }
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    Ok(total.load(Ordering::Relaxed))
}
