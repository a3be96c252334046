//! Full device pipeline: signed devices post properties (and, in the city mix, events); the
//! node validates and stores them; an operator task sends downlinks that the devices answer;
//! at the end every device's stored history is read back through the API and counted.

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

use crate::city::{Mix, SimDevice};
use crate::water_meter::{CodecPlugin, Format};
use crate::{Latency, histogram, own_cpu_time, per_sec, process_cpu_time, secs};

/// An event follows every this many property posts of a device (city mix).
pub const EVENT_EVERY: u64 = 25;

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
    pub mix: Mix,
    /// Downlinks (property sets and service calls through the API) per second; 0 = none.
    pub downlink_rate: f64,
    /// The server's PID, to report its CPU beside the generator's.
    pub server_pid: Option<u32>,
    /// Alink JSON, or raw frames decoded by `codec` (only with `Mix::WaterMeter`, which raw
    /// implies: one water-meter product with `dataFormat: custom`).
    pub format: Format,
    /// The codec plugin for `Format::Raw`.
    pub codec: Option<CodecPlugin>,
}

impl Config {
    /// The defaults of the command line for the given target.
    pub fn new(api: String, mqtt: SocketAddr, password: String) -> Config {
        Config {
            api,
            mqtt,
            user: "admin".into(),
            password,
            devices: 100,
            rate: 1000,
            duration: Duration::from_secs(10),
            qos: 1,
            mix: Mix::StreetLight,
            downlink_rate: 0.0,
            server_pid: None,
            format: Format::Alink,
            codec: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub mix: String,
    /// `alink` (JSON property posts) or `raw` (frames decoded by a codec plugin).
    pub format: String,
    /// The codec plugin installed and bound for `raw`.
    pub codec_plugin: Option<String>,
    pub devices: usize,
    /// Devices per product name.
    pub products: HashMap<String, usize>,
    pub qos: u8,
    pub target_rate: u64,
    pub duration_s: f64,
    /// From the first post to the last PUBACK: above the sustainable rate it outgrows `duration_s`.
    pub ack_window_s: f64,
    /// Property posts and events sent.
    pub sent: u64,
    /// Of which events.
    pub events_sent: u64,
    /// PUBACKed messages at QoS 1; messages written to the socket at QoS 0.
    pub acked: u64,
    /// Stored property points (of each device's key property) and events, read back through
    /// the API after the run.
    pub stored: u64,
    /// `acked − stored` (never negative).
    pub lost: u64,
    pub errors: u64,
    pub sent_per_s: f64,
    pub acked_per_s: f64,
    pub stored_per_s: f64,
    /// PUBACK latency (QoS 1 only).
    pub latency: Latency,
    /// Downlinks the API accepted (property sets and service calls).
    pub downlinks_sent: u64,
    /// Downlink requests the devices received and answered.
    pub downlinks_answered: u64,
    /// Synchronous service calls whose reply came back through the API with code 200.
    pub downlinks_confirmed: u64,
    pub downlink_errors: u64,
    pub generator_cpu_s: f64,
    /// Generator CPU as a share of one core from the first post to the last PUBACK.
    pub generator_cpu_pct: f64,
    pub server_cpu_s: Option<f64>,
    pub server_cpu_pct: Option<f64>,
}

impl Report {
    pub fn print(&self) {
        let mut products: Vec<_> = self.products.iter().collect();
        products.sort();
        let server = match (self.server_cpu_s, self.server_cpu_pct) {
            (Some(s), Some(p)) => format!("{s:.2} s ({p:.0}% of a core)"),
            _ => "n/a (pass --server-pid)".into(),
        };
        crate::print_table(
            "pipeline",
            &[
                ("mix", self.mix.clone()),
                (
                    "format",
                    match &self.codec_plugin {
                        Some(p) => format!("{} (codec plugin {p})", self.format),
                        None => self.format.clone(),
                    },
                ),
                (
                    "devices",
                    format!(
                        "{} ({})",
                        self.devices,
                        products
                            .iter()
                            .map(|(k, v)| format!("{k}: {v}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
                ("qos", self.qos.to_string()),
                ("target rate (msg/s)", self.target_rate.to_string()),
                ("duration (s)", format!("{:.2}", self.duration_s)),
                (
                    "first post → last PUBACK (s)",
                    format!("{:.2}", self.ack_window_s),
                ),
                (
                    "sent",
                    format!(
                        "{} ({:.0} msg/s; {} events)",
                        self.sent, self.sent_per_s, self.events_sent
                    ),
                ),
                (
                    "acked",
                    format!("{} ({:.0} msg/s)", self.acked, self.acked_per_s),
                ),
                (
                    "stored (verified via API)",
                    format!("{} ({:.0} msg/s)", self.stored, self.stored_per_s),
                ),
                ("lost (acked − stored)", self.lost.to_string()),
                ("errors", self.errors.to_string()),
                (
                    "PUBACK latency p50/p90/p99/p99.9/max (ms)",
                    self.latency.summary(),
                ),
                (
                    "downlinks sent / answered / confirmed",
                    format!(
                        "{} / {} / {} ({} errors)",
                        self.downlinks_sent,
                        self.downlinks_answered,
                        self.downlinks_confirmed,
                        self.downlink_errors
                    ),
                ),
                (
                    "generator CPU",
                    format!(
                        "{:.2} s ({:.0}% of a core)",
                        self.generator_cpu_s, self.generator_cpu_pct
                    ),
                ),
                ("server CPU", server),
            ],
        );
    }
}

/// A logged-in API client.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
    pub token: String,
}

impl Api {
    /// Creates the named devices of a product (1,000 per batch call) and returns their
    /// credentials in the order of `names`.
    pub async fn create_devices(
        &self,
        product_key: &str,
        names: &[String],
    ) -> anyhow::Result<Vec<DeviceCredentials>> {
        let mut devices = Vec::with_capacity(names.len());
        for chunk in names.chunks(1000) {
            let out = self
                .call(
                    reqwest::Method::POST,
                    &format!("/api/v1/products/{product_key}/devices:batch"),
                    Some(json!({ "deviceNames": chunk })),
                )
                .await?;
            for d in out["devices"].as_array().context("no devices in reply")? {
                devices.push(DeviceCredentials {
                    product_key: product_key.to_string(),
                    device_name: d["deviceName"].as_str().context("deviceName")?.to_string(),
                    device_secret: d["deviceSecret"]
                        .as_str()
                        .context("deviceSecret")?
                        .to_string(),
                });
            }
        }
        Ok(devices)
    }

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

    /// Calls the API; fails unless the status is a success. `(status, body)`.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
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
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        };
        Ok((status.as_u16(), value))
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        Ok(self.request(method, path, body).await?.1)
    }
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    events: AtomicU64,
    acked: AtomicU64,
    errors: AtomicU64,
    answered: AtomicU64,
    downlinks_sent: AtomicU64,
    confirmed: AtomicU64,
    downlink_errors: AtomicU64,
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
    let raw = config.format == Format::Raw;
    // The water meter posts what its frames carry, in either format; raw implies it.
    let meter = raw || config.mix == Mix::WaterMeter;
    if meter && config.downlink_rate > 0.0 {
        bail!("--downlink-rate is not supported with the water-meter mix");
    }
    let api = Api::login(&config.api, &config.user, &config.password).await?;
    let (devices, codec_plugin) = if meter {
        let plugin = if raw {
            Some(
                config
                    .codec
                    .as_ref()
                    .context("--format raw needs --codec-wasm and --codec-manifest")?,
            )
        } else {
            None
        };
        crate::water_meter::provision(&api, config.devices, plugin).await?
    } else {
        (
            crate::city::provision(&api, config.devices, config.mix).await?,
            None,
        )
    };
    let mut products: HashMap<String, usize> = HashMap::new();
    for d in &devices {
        *products.entry(format!("{:?}", d.kind)).or_default() += 1;
    }

    // Connect every device, subscribe it to its downlinks and wait for the SUBACK.
    let counters = Arc::new(Counters::default());
    let mut clients = Vec::with_capacity(devices.len());
    let mut loops = Vec::with_capacity(devices.len());
    let mut ready = Vec::with_capacity(devices.len());
    for d in &devices {
        let mut opts = mqtt_options(&d.creds, config.mqtt);
        opts.set_inflight(1000);
        opts.set_keep_alive(Duration::from_secs(60));
        let (client, el) = crate::mqtt_client(opts, 1024);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
        loops.push(tokio::spawn(device_loop(
            client.clone(),
            el,
            d.downlink_filters(),
            ready_tx,
            counters.clone(),
        )));
        clients.push(client);
        ready.push(ready_rx);
    }
    for (i, r) in ready.into_iter().enumerate() {
        match tokio::time::timeout(Duration::from_secs(60), r).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => bail!(
                "device {} did not connect: {e}",
                devices[i].creds.device_name
            ),
            _ => bail!(
                "device {} did not connect in time",
                devices[i].creds.device_name
            ),
        }
    }

    // Each device posts at rate/N, staggered so the total is spread evenly.
    let n = clients.len() as u64;
    let period = Duration::from_secs_f64(n as f64 / config.rate as f64);
    // Times lie in the past, one millisecond apart per device, so that they are unique.
    let base_ms = lotus_test_harness::now_ms() - 3600 * 1000;
    // Raw frames, and the meter's Alink posts that mirror them, carry no time: the node stores
    // them at their arrival (its clock, the same machine's), so they are counted in a window
    // around the run.
    let wall_from = lotus_test_harness::now_ms() - 1000;
    let server_cpu0 = config.server_pid.and_then(process_cpu_time);
    let cpu0 = own_cpu_time();
    let start = Instant::now();
    let deadline = start + config.duration;
    let posts = Posts::of(raw, meter);
    let mut senders = Vec::with_capacity(clients.len());
    for (i, client) in clients.iter().enumerate() {
        let client = client.clone();
        let device = devices[i].clone();
        let topic = if raw {
            format!(
                "/sys/{}/{}/thing/model/up_raw",
                device.creds.product_key, device.creds.device_name
            )
        } else {
            format!(
                "/sys/{}/{}/thing/event/property/post",
                device.creds.product_key, device.creds.device_name
            )
        };
        let counters = counters.clone();
        let offset = period.mul_f64(i as f64 / n as f64);
        senders.push(tokio::spawn(async move {
            let mut seq: u64 = 0;
            let mut events: u64 = 0;
            loop {
                let due = start + offset + period.mul_f64(seq as f64);
                if due >= deadline {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                let time = base_ms + seq as i64;
                let payload = posts.property_post(&device, seq, time);
                if client.publish(&topic, qos, false, payload).await.is_err() {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                counters.sent.fetch_add(1, Ordering::Relaxed);
                if (seq + 1).is_multiple_of(EVENT_EVERY)
                    && let Some((topic, payload)) = event_message(&device, posts, &topic, seq, time)
                {
                    if client.publish(&topic, qos, false, payload).await.is_err() {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                    counters.events.fetch_add(1, Ordering::Relaxed);
                    events += 1;
                }
                seq += 1;
            }
            (seq, events)
        }));
    }
    let api = Arc::new(api);
    let operator = (config.downlink_rate > 0.0).then(|| {
        tokio::spawn(operator(
            api.clone(),
            devices.clone(),
            config.downlink_rate,
            start,
            deadline,
            counters.clone(),
        ))
    });
    let mut per_device = Vec::with_capacity(senders.len());
    for s in senders {
        per_device.push(s.await?);
    }
    let send_elapsed = start.elapsed();
    if let Some(op) = operator {
        op.await?;
    }
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
    let server_cpu = match (server_cpu0, config.server_pid.and_then(process_cpu_time)) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
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
    let verify_deadline = Instant::now() + Duration::from_secs(30);
    let mut stored;
    loop {
        let window = if meter {
            Window::Wall {
                from: wall_from,
                to: lotus_test_harness::now_ms() + 1000,
            }
        } else {
            Window::Synthetic { base_ms }
        };
        stored = count_stored(&api, &devices, &per_device, window).await?;
        if stored >= acked || Instant::now() > verify_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let errors = counters.errors.load(Ordering::Relaxed);
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    Ok(Report {
        mix: match (config.format, config.mix) {
            (Format::Raw, _) | (Format::Alink, Mix::WaterMeter) => "water-meter".into(),
            (Format::Alink, Mix::StreetLight) => "street-light".into(),
            (Format::Alink, Mix::City) => "city".into(),
        },
        format: config.format.as_str().into(),
        codec_plugin,
        devices: devices.len(),
        products,
        qos: config.qos,
        target_rate: config.rate,
        duration_s: secs(send_elapsed),
        ack_window_s: secs(ack_elapsed),
        sent,
        events_sent: load(&counters.events),
        acked,
        stored,
        lost: acked.saturating_sub(stored),
        errors,
        sent_per_s: per_sec(sent, send_elapsed),
        acked_per_s: per_sec(acked, ack_elapsed),
        stored_per_s: per_sec(stored, ack_elapsed),
        latency: Latency::from_histogram(&hist),
        downlinks_sent: load(&counters.downlinks_sent),
        downlinks_answered: load(&counters.answered),
        downlinks_confirmed: load(&counters.confirmed),
        downlink_errors: load(&counters.downlink_errors),
        generator_cpu_s: secs(cpu),
        generator_cpu_pct: 100.0 * secs(cpu) / secs(ack_elapsed).max(1e-9),
        server_cpu_s: server_cpu.map(secs),
        server_cpu_pct: server_cpu.map(|c| 100.0 * secs(c) / secs(ack_elapsed).max(1e-9)),
    })
}

/// What a device posts.
#[derive(Debug, Clone, Copy)]
enum Posts {
    /// The city simulator's Alink posts.
    City,
    /// The water meter's frames on `up_raw`.
    MeterFrames,
    /// The water meter's Alink posts, mirroring its frames.
    MeterAlink,
}

impl Posts {
    fn of(raw: bool, meter: bool) -> Posts {
        match (raw, meter) {
            (true, _) => Posts::MeterFrames,
            (false, true) => Posts::MeterAlink,
            (false, false) => Posts::City,
        }
    }

    /// The property post of device `seq`.
    fn property_post(self, device: &SimDevice, seq: u64, time: i64) -> Vec<u8> {
        match self {
            Posts::MeterFrames => crate::water_meter::data_frame(device, seq),
            Posts::MeterAlink => crate::water_meter::alink_post(device, seq).into_bytes(),
            Posts::City => device.property_post(seq, time).into_bytes(),
        }
    }
}

/// The event that follows post `seq`: `(topic, payload)`. Water meters send a `Leakage` alarm:
/// a frame on their `up_raw` topic, or its Alink event post.
fn event_message(
    device: &SimDevice,
    posts: Posts,
    post_topic: &str,
    seq: u64,
    time: i64,
) -> Option<(String, Vec<u8>)> {
    let event_topic = |id: &str| {
        format!(
            "/sys/{}/{}/thing/event/{id}/post",
            device.creds.product_key, device.creds.device_name
        )
    };
    match posts {
        Posts::MeterFrames => {
            return Some((
                post_topic.to_string(),
                crate::water_meter::leakage_frame(device, seq),
            ));
        }
        Posts::MeterAlink => {
            return Some((
                event_topic("Leakage"),
                crate::water_meter::alink_leakage(device, seq).into_bytes(),
            ));
        }
        Posts::City => {}
    }
    let (id, payload) = device.event(seq, time)?;
    Some((event_topic(id), payload.into_bytes()))
}

/// Where the stored points of a run lie in time.
#[derive(Debug, Clone, Copy)]
enum Window {
    /// Alink posts carry `base_ms + seq`.
    Synthetic { base_ms: i64 },
    /// Raw frames are stored at their arrival, between `from` and `to` (inclusive).
    Wall { from: i64, to: i64 },
}

/// One device's MQTT event loop: subscribes to its downlinks once connected, answers them,
/// counts acknowledgements and records PUBACK latency.
async fn device_loop(
    client: AsyncClient,
    mut el: rumqttc::EventLoop,
    downlinks: Vec<String>,
    ready_tx: tokio::sync::oneshot::Sender<anyhow::Result<()>>,
    counters: Arc<Counters>,
) -> Histogram<u64> {
    let mut ready_tx = Some(ready_tx);
    let mut sent_at: HashMap<u16, Instant> = HashMap::new();
    let mut hist = histogram();
    // Replies are QoS 0: their writes are not telemetry acknowledgements.
    let mut replies_pending: u64 = 0;
    loop {
        match el.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                let filters = downlinks
                    .iter()
                    .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                if client.try_subscribe_many(filters).is_err()
                    && let Some(tx) = ready_tx.take()
                {
                    let _ = tx.send(Err(anyhow::anyhow!("cannot subscribe to downlinks")));
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if let Some(tx) = ready_tx.take() {
                    let refused = ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure));
                    let _ = tx.send(if refused {
                        Err(anyhow::anyhow!("the downlink subscription was refused"))
                    } else {
                        Ok(())
                    });
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if let Some((topic, payload)) = crate::city::answer(&p.topic, &p.payload) {
                    // Never await inside the event loop: a full request queue would deadlock.
                    if client
                        .try_publish(topic, QoS::AtMostOnce, false, payload)
                        .is_ok()
                    {
                        replies_pending += 1;
                        counters.answered.fetch_add(1, Ordering::Relaxed);
                    } else {
                        counters.downlink_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                if pkid == 0 {
                    if replies_pending > 0 {
                        replies_pending -= 1;
                    } else {
                        // QoS 0: written is all the acknowledgement there is.
                        counters.acked.fetch_add(1, Ordering::Relaxed);
                    }
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
}

/// The operator: sends downlinks through the API at `rate` per second, round-robin over the
/// devices, alternating property sets and service calls; waits for the calls it started.
async fn operator(
    api: Arc<Api>,
    devices: Vec<SimDevice>,
    rate: f64,
    start: Instant,
    deadline: Instant,
    counters: Arc<Counters>,
) {
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut calls = Vec::new();
    // Start a little into the run so that every device is posting.
    let mut k: u64 = 0;
    loop {
        let due = start + period.mul_f64(k as f64 + 0.5);
        // Leave time for the answer before the run ends.
        if due + Duration::from_millis(200) >= deadline {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let device = &devices[(k as usize * 7919) % devices.len()];
        let (suffix, body) = device.downlink(k / devices.len() as u64 + k);
        let path = format!(
            "/api/v1/products/{}/devices/{}{suffix}",
            device.creds.product_key, device.creds.device_name
        );
        let (api, counters) = (api.clone(), counters.clone());
        calls.push(tokio::spawn(async move {
            match api.request(reqwest::Method::POST, &path, Some(body)).await {
                Ok((status, reply)) => {
                    counters.downlinks_sent.fetch_add(1, Ordering::Relaxed);
                    if status == 200 && reply["code"] == 200 {
                        counters.confirmed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    eprintln!("downlink failed: {e:#}");
                    counters.downlink_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
        k += 1;
    }
    for c in calls {
        let _ = c.await;
    }
}

/// Sums each device's stored key-property points (windows of 10,000 ms, the page limit) and
/// its stored events.
async fn count_stored(
    api: &Arc<Api>,
    devices: &[SimDevice],
    per_device: &[(u64, u64)],
    window: Window,
) -> anyhow::Result<u64> {
    let total = Arc::new(AtomicU64::new(0));
    let jobs: Vec<(String, &'static str, u64, u64)> = devices
        .iter()
        .zip(per_device)
        .map(|(d, &(posts, events))| {
            (
                format!(
                    "/api/v1/products/{}/devices/{}",
                    d.creds.product_key, d.creds.device_name
                ),
                d.key_property,
                posts,
                events,
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
                let Some((path, key, posts, events)) = jobs.get(i) else {
                    return Ok::<_, anyhow::Error>(());
                };
                // Windows of 10,000 ms: the page limit is 10,000 points.
                let (ranges, events_range): (Vec<(i64, i64)>, (i64, i64)) = match window {
                    Window::Synthetic { base_ms } => (
                        (0..posts.div_ceil(10_000))
                            .map(|k| {
                                let from = base_ms + k as i64 * 10_000;
                                (from, from + 9_999)
                            })
                            .collect(),
                        (base_ms - 1, base_ms + *posts as i64 + 1),
                    ),
                    Window::Wall { from, to } => (
                        (from..=to)
                            .step_by(10_000)
                            .map(|f| (f, (f + 9_999).min(to)))
                            .collect(),
                        (from, to),
                    ),
                };
                for (from, to) in ranges {
                    let page = api
                        .call(
                            reqwest::Method::GET,
                            &format!(
                                "{path}/properties/{key}/history?from={from}&to={to}&limit=10000"
                            ),
                            None,
                        )
                        .await?;
                    let points = page["points"].as_array().map_or(0, Vec::len) as u64;
                    if points >= 10_000 && matches!(window, Window::Wall { .. }) {
                        bail!("{path}: 10,000 points or more in 10 s, too many to count");
                    }
                    total.fetch_add(points, Ordering::Relaxed);
                }
                if *events > 0 {
                    let list = api
                        .call(
                            reqwest::Method::GET,
                            &format!(
                                "{path}/events?from={}&to={}&limit=10000",
                                events_range.0, events_range.1
                            ),
                            None,
                        )
                        .await?;
                    total.fetch_add(
                        list.as_array().map_or(0, Vec::len) as u64,
                        Ordering::Relaxed,
                    );
                }
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    Ok(total.load(Ordering::Relaxed))
}
