//! MQTT relay: P publishers → one subscriber. Each payload carries its publisher, sequence
//! number and send time, so the subscriber counts deliveries and end-to-end latency.
//!
//! Two shapes, so that Lotus and a plain broker (mosquitto) run with the same generator:
//! - **anonymous** (any MQTT 3.1.1 broker that accepts anonymous clients): publishers on
//!   `bench/{i}`, the subscriber on `bench/#`;
//! - **application** (Lotus, given its API): the generator creates a product with P devices and
//!   an application credential granted `/{pk}/+/user/update`; the devices publish on their
//!   `/{pk}/{dn}/user/update` and the subscriber logs in with the credential, as a city
//!   dashboard would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::BufMut;
use hdrhistogram::Histogram;
use rumqttc::{Event, MqttOptions, Packet, QoS};
use serde::Serialize;

use lotus_model::alink::SignMethod;
use lotus_test_harness::device::{DeviceCredentials, signed_login};
use serde_json::json;

use crate::pipeline::Api;
use crate::publisher::{BATCH, Publisher};
use crate::{Latency, histogram, own_cpu_time, per_sec, process_cpu_time, secs};

/// publisher (4 bytes) + sequence (8) + send time in ns since the run's epoch (8).
const HEADER: usize = 20;

/// QoS 1 publishes a publisher may have unacknowledged.
const INFLIGHT: usize = 1000;

#[derive(Debug, Clone)]
pub struct Config {
    pub mqtt: SocketAddr,
    pub publishers: usize,
    /// Payload size in bytes (at least 20).
    pub payload: usize,
    pub qos: u8,
    pub duration: Duration,
    /// Total messages per second over all publishers; `None` = as fast as the broker allows.
    pub rate: Option<u64>,
    /// The broker's PID, to report its CPU use.
    pub broker_pid: Option<u32>,
    /// Lotus's API and an administrator's log-in: relay between signed devices and an
    /// application credential instead of anonymous clients.
    pub lotus: Option<LotusTarget>,
}

#[derive(Debug, Clone)]
pub struct LotusTarget {
    pub api: String,
    pub user: String,
    pub password: String,
}

/// What the application shape sets up through the API.
struct AppSetup {
    product_key: String,
    devices: Vec<DeviceCredentials>,
    username: String,
    secret: String,
}

/// A product for the publishers, its devices and an application credential for the subscriber.
async fn setup_application(target: &LotusTarget, publishers: usize) -> anyhow::Result<AppSetup> {
    use anyhow::Context;
    use reqwest::Method;
    let api = Api::login(&target.api, &target.user, &target.password).await?;
    let product = api
        .call(
            Method::POST,
            "/api/v1/products",
            Some(json!({"name": "Loadgen relay", "nodeType": "direct", "dataFormat": "alink"})),
        )
        .await?;
    let pk = product["productKey"]
        .as_str()
        .context("no productKey")?
        .to_string();
    let names: Vec<String> = (0..publishers)
        .map(|i| format!("relay-{}-{i:04}", std::process::id()))
        .collect();
    let devices = api.create_devices(&pk, &names).await?;
    let credential = api
        .call(
            Method::POST,
            "/api/v1/app-credentials",
            Some(json!({
                "name": "Loadgen relay subscriber",
                "grants": [{"filter": format!("/{pk}/+/user/update"), "actions": ["subscribe"]}],
            })),
        )
        .await?;
    Ok(AppSetup {
        product_key: pk,
        devices,
        username: credential["username"]
            .as_str()
            .context("no username")?
            .to_string(),
        secret: credential["secret"]
            .as_str()
            .context("no secret")?
            .to_string(),
    })
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// `anonymous` or `application` (signed devices → an application credential).
    pub mode: String,
    pub publishers: usize,
    pub payload: usize,
    pub qos: u8,
    pub duration_s: f64,
    pub published: u64,
    /// PUBACKed publishes (QoS 1; 0 at QoS 0).
    pub acked: u64,
    pub delivered: u64,
    /// QoS 1: acknowledged publishes that never reached the subscriber.
    pub lost_acked: u64,
    pub published_per_s: f64,
    pub delivered_per_s: f64,
    pub loss_pct: f64,
    pub out_of_order: u64,
    pub latency: Latency,
    pub generator_cpu_s: f64,
    pub generator_cpu_pct: f64,
    pub broker_cpu_s: Option<f64>,
    pub broker_cpu_pct: Option<f64>,
}

impl Report {
    pub fn print(&self) {
        let broker = match (self.broker_cpu_s, self.broker_cpu_pct) {
            (Some(s), Some(p)) => format!("{s:.2} s ({p:.0}% of a core)"),
            _ => "n/a (pass --broker-pid)".into(),
        };
        crate::print_table(
            "relay",
            &[
                ("mode", self.mode.clone()),
                (
                    "publishers → subscribers",
                    format!("{} → 1", self.publishers),
                ),
                ("payload (B)", self.payload.to_string()),
                ("qos", self.qos.to_string()),
                ("duration (s)", format!("{:.2}", self.duration_s)),
                (
                    "published",
                    format!("{} ({:.0} msg/s)", self.published, self.published_per_s),
                ),
                (
                    "delivered",
                    format!("{} ({:.0} msg/s)", self.delivered, self.delivered_per_s),
                ),
                ("acked (QoS 1)", self.acked.to_string()),
                ("loss (of published)", format!("{:.3}%", self.loss_pct)),
                ("lost after PUBACK (QoS 1)", self.lost_acked.to_string()),
                ("out of order", self.out_of_order.to_string()),
                ("latency p50/p90/p99/p99.9/max (ms)", self.latency.summary()),
                (
                    "generator CPU",
                    format!(
                        "{:.2} s ({:.0}% of a core)",
                        self.generator_cpu_s, self.generator_cpu_pct
                    ),
                ),
                ("broker CPU", broker),
            ],
        );
    }
}

fn options(id: &str, addr: SocketAddr) -> MqttOptions {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(60));
    o.set_inflight(1000);
    o.set_max_packet_size(1 << 20, 1 << 20);
    o
}

struct SubResult {
    delivered: u64,
    out_of_order: u64,
    hist: Histogram<u64>,
}

pub async fn run(config: Config) -> anyhow::Result<Report> {
    if !config.mqtt.ip().is_loopback() {
        bail!("refusing non-loopback MQTT target {}", config.mqtt);
    }
    let qos = match config.qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        q => bail!("unsupported QoS {q} (0 or 1)"),
    };
    if config.publishers == 0 {
        bail!("--publishers must be positive");
    }
    let payload_len = config.payload.max(HEADER);
    let epoch = Instant::now();
    let tag = std::process::id();

    let app = match &config.lotus {
        Some(target) => Some(setup_application(target, config.publishers).await?),
        None => None,
    };

    // Subscriber first; it reports deliveries through a shared counter so the end can be seen.
    let delivered = Arc::new(AtomicU64::new(0));
    let mut sub_options = options(&format!("lg-sub-{tag}"), config.mqtt);
    let filter = match &app {
        Some(a) => {
            sub_options.set_credentials(a.username.clone(), a.secret.clone());
            format!("/{}/+/user/update", a.product_key)
        }
        None => "bench/#".to_string(),
    };
    let (sub, mut sub_el) = crate::mqtt_client(sub_options, 1024);
    let (subacked_tx, subacked_rx) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
    sub.subscribe(&filter, qos).await?;
    let sub_task = {
        let delivered = delivered.clone();
        let publishers = config.publishers;
        tokio::spawn(async move {
            let mut subacked_tx = Some(subacked_tx);
            let mut last_seq = vec![None::<u64>; publishers];
            let mut res = SubResult {
                delivered: 0,
                out_of_order: 0,
                hist: histogram(),
            };
            loop {
                match sub_el.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        if let Some(tx) = subacked_tx.take() {
                            let refused = ack
                                .return_codes
                                .iter()
                                .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure));
                            let _ = tx.send(if refused {
                                Err(anyhow::anyhow!("the broker refused the subscription"))
                            } else {
                                Ok(())
                            });
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let b = &p.payload;
                        if b.len() < HEADER {
                            continue;
                        }
                        let publisher = u32::from_be_bytes(b[0..4].try_into().unwrap()) as usize;
                        let seq = u64::from_be_bytes(b[4..12].try_into().unwrap());
                        let sent_ns = u64::from_be_bytes(b[12..20].try_into().unwrap());
                        let now_ns = epoch.elapsed().as_nanos() as u64;
                        let _ = res
                            .hist
                            .record((now_ns.saturating_sub(sent_ns) / 1000).max(1));
                        if let Some(last) = last_seq.get_mut(publisher) {
                            if last.is_some_and(|l| seq <= l) {
                                res.out_of_order += 1;
                            }
                            *last = Some(seq);
                        }
                        res.delivered += 1;
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                    Ok(_) => {}
                    Err(e) => {
                        if let Some(tx) = subacked_tx.take() {
                            let _ = tx.send(Err(anyhow::anyhow!("subscriber: {e}")));
                        }
                        break;
                    }
                }
            }
            res
        })
    };
    match tokio::time::timeout(Duration::from_secs(10), subacked_rx).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(e),
        _ => bail!("the subscription was not acknowledged within 10 s"),
    }

    // Publishers.
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let mut pubs = Vec::with_capacity(config.publishers);
    for i in 0..config.publishers {
        let (client_id, login, topic) = match &app {
            Some(a) => {
                let d = &a.devices[i];
                let ts = lotus_test_harness::now_ms().to_string();
                let (id, user, pass) =
                    signed_login(d, &d.device_name, SignMethod::HmacSha256, Some(&ts));
                let topic = format!("/{}/{}/user/update", a.product_key, d.device_name);
                (id, Some((user, pass)), topic)
            }
            None => (format!("lg-pub-{tag}-{i}"), None, format!("bench/{i}")),
        };
        let login = login.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
        let publisher = Publisher::connect(
            config.mqtt,
            &client_id,
            login,
            &topic,
            config.qos,
            INFLIGHT,
            acked.clone(),
        )
        .await
        .with_context(|| format!("publisher {i}"))?;
        pubs.push(publisher);
    }

    let broker_cpu0 = config.broker_pid.and_then(process_cpu_time);
    let cpu0 = own_cpu_time();
    let start = Instant::now();
    let deadline = start + config.duration;
    let period = config
        .rate
        .map(|r| Duration::from_secs_f64(config.publishers as f64 / r.max(1) as f64));
    let mut senders = Vec::new();
    for (i, mut publisher) in pubs.into_iter().enumerate() {
        let (stop, published) = (stop.clone(), published.clone());
        let offset = period.map(|p| p.mul_f64(i as f64 / config.publishers as f64));
        senders.push(tokio::spawn(async move {
            let mut seq: u64 = 0;
            loop {
                let now = Instant::now();
                if now >= deadline || stop.load(Ordering::Relaxed) {
                    break;
                }
                // Everything due by now goes out in one write.
                let due = match (period, offset) {
                    (Some(period), Some(offset)) => {
                        let elapsed = now.saturating_duration_since(start + offset);
                        let until = (elapsed.as_secs_f64() / period.as_secs_f64()) as u64 + 1;
                        let due = until.saturating_sub(seq) as usize;
                        if due == 0 {
                            let next = start + offset + period.mul_f64(seq as f64);
                            tokio::time::sleep_until(next.min(deadline).into()).await;
                            continue;
                        }
                        due
                    }
                    _ => BATCH,
                };
                let sent_ns = epoch.elapsed().as_nanos() as u64;
                let encoded = publisher
                    .encode(due, payload_len, |buf| {
                        buf.put_u32(i as u32);
                        buf.put_u64(seq);
                        buf.put_u64(sent_ns);
                        buf.put_bytes(b'x', payload_len - HEADER);
                        seq += 1;
                    })
                    .await;
                if publisher.flush().await.is_err() {
                    break;
                }
                published.fetch_add(encoded as u64, Ordering::Relaxed);
            }
            publisher
        }));
    }
    let mut pubs = Vec::with_capacity(senders.len());
    for s in senders {
        pubs.push(s.await?);
    }
    stop.store(true, Ordering::Relaxed);
    let send_elapsed = start.elapsed();
    // QoS 1: let outstanding PUBACKs arrive (bounded) before disconnecting.
    if config.qos == 1 {
        let target = published.load(Ordering::Relaxed);
        let until = Instant::now() + Duration::from_secs(10);
        while acked.load(Ordering::Relaxed) < target && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    for p in pubs {
        p.disconnect().await;
    }
    // Wait until everything arrived, or nothing has arrived for a second.
    let published = published.load(Ordering::Relaxed);
    let mut last = delivered.load(Ordering::Relaxed);
    let mut idle_since = Instant::now();
    loop {
        let now = delivered.load(Ordering::Relaxed);
        if now >= published {
            break;
        }
        if now != last {
            last = now;
            idle_since = Instant::now();
        } else if idle_since.elapsed() > Duration::from_secs(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let total_elapsed = start.elapsed();
    let cpu = own_cpu_time() - cpu0;
    let broker_cpu = match (broker_cpu0, config.broker_pid.and_then(process_cpu_time)) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let _ = sub.disconnect().await;
    let res = match tokio::time::timeout(Duration::from_secs(10), sub_task).await {
        Ok(Ok(r)) => r,
        _ => bail!("the subscriber did not finish"),
    };
    let loss = published.saturating_sub(res.delivered);
    let acked = acked.load(Ordering::Relaxed);
    Ok(Report {
        mode: if app.is_some() {
            "application".into()
        } else {
            "anonymous".into()
        },
        publishers: config.publishers,
        payload: payload_len,
        qos: config.qos,
        duration_s: secs(send_elapsed),
        published,
        acked,
        delivered: res.delivered,
        lost_acked: acked.saturating_sub(res.delivered),
        published_per_s: per_sec(published, send_elapsed),
        delivered_per_s: per_sec(res.delivered, total_elapsed),
        loss_pct: if published == 0 {
            0.0
        } else {
            100.0 * loss as f64 / published as f64
        },
        out_of_order: res.out_of_order,
        latency: Latency::from_histogram(&res.hist),
        generator_cpu_s: secs(cpu),
        generator_cpu_pct: 100.0 * secs(cpu) / secs(total_elapsed).max(1e-9),
        broker_cpu_s: broker_cpu.map(secs),
        broker_cpu_pct: broker_cpu.map(|c| 100.0 * secs(c) / secs(total_elapsed).max(1e-9)),
    })
}
