//! Idle connections: N raw-TCP MQTT 3.1.1 clients (a hand-encoded CONNECT and PINGREQ each, no
//! MQTT library), opened at a given rate and held; reports the accept rate and, given the
//! broker's PID, its resident memory per connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use lotus_model::alink::SignMethod;
use lotus_test_harness::device::{DeviceCredentials, signed_login};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{Latency, histogram, own_cpu_time, per_sec, process_rss_kb, secs};

#[derive(Debug, Clone)]
pub struct Config {
    pub mqtt: SocketAddr,
    pub count: usize,
    /// New connections per second.
    pub rate: u64,
    pub hold: Duration,
    pub target_pid: Option<u32>,
    /// With credentials: connect as signed devices (created through the API) instead of anonymously.
    pub api: Option<(String, String, String)>,
    /// The products the signed devices belong to.
    pub mix: crate::city::Mix,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub count: usize,
    pub signed: bool,
    pub target_rate: u64,
    pub accepted: u64,
    pub refused: u64,
    pub failed: u64,
    /// Accepted connections over the time from the first attempt to the last CONNACK.
    pub accepted_per_s: f64,
    pub connect_latency: Latency,
    /// Connections still open at the end of the hold.
    pub alive_at_end: u64,
    pub rss_before_kb: Option<u64>,
    pub rss_after_kb: Option<u64>,
    pub kb_per_connection: Option<f64>,
    pub generator_cpu_s: f64,
}

impl Report {
    pub fn print(&self) {
        let opt = |v: Option<u64>| v.map_or("n/a".to_string(), |v| v.to_string());
        crate::print_table(
            "connections",
            &[
                ("connections", self.count.to_string()),
                ("signed devices", self.signed.to_string()),
                ("target rate (conn/s)", self.target_rate.to_string()),
                ("accepted", self.accepted.to_string()),
                ("refused (CONNACK ≠ 0)", self.refused.to_string()),
                ("failed (I/O, timeout)", self.failed.to_string()),
                ("accepted/s", format!("{:.0}", self.accepted_per_s)),
                (
                    "CONNACK latency p50/p90/p99/p99.9/max (ms)",
                    self.connect_latency.summary(),
                ),
                ("alive at end of hold", self.alive_at_end.to_string()),
                ("target RSS before (KiB)", opt(self.rss_before_kb)),
                ("target RSS after (KiB)", opt(self.rss_after_kb)),
                (
                    "KiB per connection",
                    self.kb_per_connection
                        .map_or("n/a".into(), |v| format!("{v:.2}")),
                ),
                ("generator CPU (s)", format!("{:.2}", self.generator_cpu_s)),
            ],
        );
    }
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u16).to_be_bytes());
    buf.extend_from_slice(s.as_bytes());
}

/// An MQTT 3.1.1 CONNECT packet (clean session).
pub fn encode_connect(client_id: &str, login: Option<(&str, &str)>, keep_alive: u16) -> Vec<u8> {
    let mut body = Vec::with_capacity(64 + client_id.len());
    put_str(&mut body, "MQTT");
    body.push(4); // protocol level 3.1.1
    let mut flags = 0x02; // clean session
    if login.is_some() {
        flags |= 0x80 | 0x40;
    }
    body.push(flags);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    put_str(&mut body, client_id);
    if let Some((user, pass)) = login {
        put_str(&mut body, user);
        put_str(&mut body, pass);
    }
    let mut packet = vec![0x10];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if len == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    packet
}

const PINGREQ: [u8; 2] = [0xC0, 0x00];
const KEEP_ALIVE: u16 = 60;

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
    alive: AtomicU64,
}

pub async fn run(config: Config) -> anyhow::Result<Report> {
    if !config.mqtt.ip().is_loopback() {
        bail!("refusing non-loopback MQTT target {}", config.mqtt);
    }
    if config.rate == 0 {
        bail!("--rate must be positive");
    }
    let devices: Option<Vec<DeviceCredentials>> = match &config.api {
        Some((api, user, password)) => {
            let api = crate::pipeline::Api::login(api, user, password).await?;
            let devices = crate::city::provision(&api, config.count, config.mix).await?;
            Some(devices.into_iter().map(|d| d.creds).collect())
        }
        None => None,
    };
    let rss_before = config.target_pid.and_then(process_rss_kb);
    let counters = Arc::new(Counters::default());
    let cpu0 = own_cpu_time();
    let start = Instant::now();
    let period = Duration::from_secs_f64(1.0 / config.rate as f64);
    let tag = std::process::id();
    // All connections are released together, after the last one has had its hold.
    let release = start + period.mul_f64(config.count as f64) + config.hold;
    let mut tasks = Vec::with_capacity(config.count);
    for i in 0..config.count {
        let due = start + period.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let packet = match &devices {
            Some(d) => {
                let ts = lotus_test_harness::now_ms().to_string();
                let (id, user, pass) =
                    signed_login(&d[i], &d[i].device_name, SignMethod::HmacSha256, Some(&ts));
                encode_connect(&id, Some((&user, &pass)), KEEP_ALIVE)
            }
            None => encode_connect(&format!("lg-idle-{tag}-{i}"), None, KEEP_ALIVE),
        };
        let counters = counters.clone();
        let addr = config.mqtt;
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let connect = async {
                let mut s = TcpStream::connect(addr).await?;
                s.write_all(&packet).await?;
                let mut ack = [0u8; 4];
                s.read_exact(&mut ack).await?;
                Ok::<_, std::io::Error>((s, ack))
            };
            let (mut stream, ack) =
                match tokio::time::timeout(Duration::from_secs(30), connect).await {
                    Ok(Ok(v)) => v,
                    _ => {
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                        return None;
                    }
                };
            if ack[0] != 0x20 || ack[3] != 0 {
                counters.refused.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            let latency = t0.elapsed();
            let connected_at = Instant::now();
            counters.accepted.fetch_add(1, Ordering::Relaxed);
            // Hold: ping every half keep-alive; any error or EOF ends the connection.
            let mut buf = [0u8; 64];
            let mut alive = true;
            while Instant::now() < release {
                let next_ping =
                    (Instant::now() + Duration::from_secs(u64::from(KEEP_ALIVE) / 2)).min(release);
                match tokio::time::timeout_at(next_ping.into(), stream.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => {
                        alive = false;
                        break;
                    }
                    Ok(Ok(_)) => {}
                    Err(_) => {
                        if Instant::now() < release && stream.write_all(&PINGREQ).await.is_err() {
                            alive = false;
                            break;
                        }
                    }
                }
            }
            if alive {
                counters.alive.fetch_add(1, Ordering::Relaxed);
            }
            Some((latency, connected_at))
        }));
    }
    // Memory once every connection is up and has settled.
    let connect_deadline = Instant::now() + Duration::from_secs(30);
    while counters.accepted.load(Ordering::Relaxed)
        + counters.refused.load(Ordering::Relaxed)
        + counters.failed.load(Ordering::Relaxed)
        < config.count as u64
        && Instant::now() < connect_deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let storm_end = start.elapsed();
    let settle = Duration::from_secs(2).min(config.hold);
    tokio::time::sleep(settle).await;
    let rss_after = config.target_pid.and_then(process_rss_kb);
    let mut hist = histogram();
    let mut last_connect = Duration::ZERO;
    for t in tasks {
        if let Ok(Some((lat, at))) = t.await {
            let _ = hist.record(lat.as_micros().max(1) as u64);
            last_connect = last_connect.max(at.duration_since(start));
        }
    }
    let accepted = counters.accepted.load(Ordering::Relaxed);
    let storm = if last_connect.is_zero() {
        storm_end
    } else {
        last_connect
    };
    Ok(Report {
        count: config.count,
        signed: devices.is_some(),
        target_rate: config.rate,
        accepted,
        refused: counters.refused.load(Ordering::Relaxed),
        failed: counters.failed.load(Ordering::Relaxed),
        accepted_per_s: per_sec(accepted, storm),
        connect_latency: Latency::from_histogram(&hist),
        alive_at_end: counters.alive.load(Ordering::Relaxed),
        rss_before_kb: rss_before,
        rss_after_kb: rss_after,
        kb_per_connection: match (rss_before, rss_after) {
            (Some(b), Some(a)) if accepted > 0 => Some((a as f64 - b as f64) / accepted as f64),
            _ => None,
        },
        generator_cpu_s: secs(own_cpu_time() - cpu0),
    })
}
