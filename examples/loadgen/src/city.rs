//! The city simulator's devices: a product mix (street lights, water meters, air-quality
//! stations, manhole covers), each with a realistic Alink thing model from
//! `examples/loadgen/products/`, placed at coordinates inside a city bounding box, posting
//! plausible values and answering downlinks (property sets and service calls).

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use lotus_test_harness::device::DeviceCredentials;
use reqwest::Method;
use serde_json::{Value, json};

use crate::pipeline::Api;

/// The city's bounding box (Shanghai-sized): latitude and longitude ranges.
pub const LAT: (f64, f64) = (31.1, 31.4);
pub const LON: (f64, f64) = (121.3, 121.7);

/// What to provision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mix {
    /// One "Loadgen street light" product with the end-to-end tests' thing model (the mix the
    /// first benchmark figures were measured with).
    #[default]
    StreetLight,
    /// Street lights, water meters, air-quality stations and manhole covers.
    City,
    /// One NB-IoT water-meter product whose posts are exactly what its binary frames carry
    /// (`crate::water_meter`): Alink JSON, or with `--format raw` the frames themselves through
    /// the codec plugin, for a like-for-like comparison of the two paths.
    WaterMeter,
}

impl FromStr for Mix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "street-light" => Ok(Mix::StreetLight),
            "city" => Ok(Mix::City),
            "water-meter" => Ok(Mix::WaterMeter),
            other => Err(format!(
                "unknown mix '{other}': use street-light, city or water-meter"
            )),
        }
    }
}

/// The kinds of device the simulator knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The end-to-end tests' street light (legacy mix).
    LegacyLight,
    StreetLight,
    WaterMeter,
    AirQuality,
    ManholeCover,
}

/// A product of the mix.
pub struct ProductSpec {
    pub kind: Kind,
    pub name: &'static str,
    pub tsl: &'static str,
    /// Share of the devices, in parts of the total weight.
    pub weight: u32,
    /// Posted with a unique time in every property post: stored points are counted on it.
    pub key_property: &'static str,
    /// Device name prefix.
    pub prefix: &'static str,
}

pub const LEGACY: [ProductSpec; 1] = [ProductSpec {
    kind: Kind::LegacyLight,
    name: "Loadgen street light",
    tsl: include_str!("../../../tests/e2e/fixtures/street-light.tsl.json"),
    weight: 1,
    key_property: "Brightness",
    prefix: "lg",
}];

pub const CITY: [ProductSpec; 4] = [
    ProductSpec {
        kind: Kind::StreetLight,
        name: "City street light",
        tsl: include_str!("../products/street-light.tsl.json"),
        weight: 40,
        key_property: "Brightness",
        prefix: "light",
    },
    ProductSpec {
        kind: Kind::WaterMeter,
        name: "City water meter",
        tsl: include_str!("../products/water-meter.tsl.json"),
        weight: 30,
        key_property: "CumulativeFlow",
        prefix: "water",
    },
    ProductSpec {
        kind: Kind::AirQuality,
        name: "City air-quality station",
        tsl: include_str!("../products/air-quality.tsl.json"),
        weight: 10,
        key_property: "PM2_5",
        prefix: "air",
    },
    ProductSpec {
        kind: Kind::ManholeCover,
        name: "City manhole cover",
        tsl: include_str!("../products/manhole-cover.tsl.json"),
        weight: 20,
        key_property: "TiltAngle",
        prefix: "manhole",
    },
];

impl Mix {
    /// The products of the city simulator's mixes; none for `WaterMeter`, whose one product
    /// `crate::water_meter` provisions.
    pub fn products(self) -> &'static [ProductSpec] {
        match self {
            Mix::StreetLight => &LEGACY,
            Mix::City => &CITY,
            Mix::WaterMeter => &[],
        }
    }
}

/// How many of `n` devices each product gets: proportional to the weights, every product at
/// least one when `n` allows, the total exactly `n`.
pub fn split(n: usize, specs: &[ProductSpec]) -> Vec<usize> {
    let total: u64 = specs.iter().map(|s| u64::from(s.weight)).sum();
    let mut counts: Vec<usize> = specs
        .iter()
        .map(|s| (n as u64 * u64::from(s.weight) / total) as usize)
        .collect();
    if n >= specs.len() {
        for c in counts.iter_mut() {
            *c = (*c).max(1);
        }
    }
    // Hand out (or take back) the rounding difference, largest product first.
    let mut i = 0;
    while counts.iter().sum::<usize>() < n {
        counts[i % specs.len()] += 1;
        i += 1;
    }
    while counts.iter().sum::<usize>() > n {
        let max = (0..counts.len()).max_by_key(|&j| counts[j]).unwrap_or(0);
        counts[max] -= 1;
    }
    counts
}

/// A simulated device.
#[derive(Debug, Clone)]
pub struct SimDevice {
    pub creds: DeviceCredentials,
    pub kind: Kind,
    pub key_property: &'static str,
    /// Index of the device in the run (seeds its values).
    pub index: u64,
    pub lat: f64,
    pub lon: f64,
}

/// SplitMix64: cheap, deterministic pseudo-random numbers from (device, sequence).
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A uniform value in `[lo, hi)` drawn from `seed`.
fn uniform(seed: u64, lo: f64, hi: f64) -> f64 {
    lo + (mix64(seed) >> 11) as f64 / (1u64 << 53) as f64 * (hi - lo)
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// Coordinates of device `index`: spread over the bounding box.
pub fn coordinates(index: u64) -> (f64, f64) {
    (
        round(uniform(index.wrapping_mul(2), LAT.0, LAT.1), 6),
        round(uniform(index.wrapping_mul(2) + 1, LON.0, LON.1), 6),
    )
}

impl SimDevice {
    fn seed(&self, seq: u64, salt: u64) -> u64 {
        mix64(self.index) ^ mix64(seq.wrapping_mul(31).wrapping_add(salt))
    }

    fn r(&self, seq: u64, salt: u64, lo: f64, hi: f64) -> f64 {
        uniform(self.seed(seq, salt), lo, hi)
    }

    /// The property values of post `seq`, plausible for the kind of device.
    pub fn properties(&self, seq: u64) -> Value {
        let r = |salt, lo, hi| self.r(seq, salt, lo, hi);
        match self.kind {
            Kind::LegacyLight => json!({"Brightness": seq % 101}),
            Kind::StreetLight => {
                let brightness = (r(1, 30.0, 100.0)).round();
                let voltage = round(r(2, 214.0, 232.0), 1);
                let power = round(brightness * 1.2 + r(3, 0.0, 4.0), 1);
                json!({
                    "LightSwitch": 1,
                    "Brightness": brightness as i64,
                    "Voltage": voltage,
                    "Power": power,
                    "Current": round(power / voltage, 2),
                    "Energy": round(1000.0 + self.index as f64 % 500.0 + seq as f64 * 0.01, 2),
                    "WorkMode": 0,
                })
            }
            Kind::WaterMeter => json!({
                "CumulativeFlow": round(100.0 + (self.index % 1000) as f64 + seq as f64 * 0.005, 3),
                "InstantFlow": round(r(1, 0.0, 2.5), 3),
                "Pressure": round(r(2, 0.25, 0.45), 3),
                "WaterTemperature": round(r(3, 12.0, 22.0), 1),
                "BatteryLevel": (100 - (seq / 1000).min(40) as i64 - (self.index % 20) as i64),
                "ValveState": 1,
            }),
            Kind::AirQuality => {
                let pm25 = r(1, 8.0, 120.0);
                json!({
                    "PM2_5": pm25.round() as i64,
                    "PM10": (pm25 * r(2, 1.3, 1.9)).round() as i64,
                    "NO2": r(3, 10.0, 90.0).round() as i64,
                    "O3": r(4, 20.0, 160.0).round() as i64,
                    "Temperature": round(r(5, 5.0, 32.0), 1),
                    "Humidity": round(r(6, 30.0, 90.0), 1),
                })
            }
            Kind::ManholeCover => json!({
                "TiltAngle": round(r(1, 0.0, 2.0), 1),
                "WaterLevel": r(2, 80.0, 300.0).round() as i64,
                "CoverState": 0,
                "Battery": (100 - (self.index % 50) as i64),
            }),
        }
    }

    /// A `thing.event.property.post` whose values all carry `time` (unique per device).
    pub fn property_post(&self, seq: u64, time: i64) -> String {
        let mut params = serde_json::Map::new();
        if let Value::Object(values) = self.properties(seq) {
            for (k, v) in values {
                params.insert(k, json!({"value": v, "time": time}));
            }
        }
        json!({
            "id": seq.to_string(),
            "version": "1.0",
            "params": params,
            "sys": {"ack": 0},
            "method": "thing.event.property.post",
        })
        .to_string()
    }

    /// Every `EVENT_EVERY`th post is followed by an event: `(identifier, payload)`.
    pub fn event(&self, seq: u64, time: i64) -> Option<(&'static str, String)> {
        let r = |salt, lo, hi| self.r(seq, salt, lo, hi);
        let (id, value) = match self.kind {
            Kind::LegacyLight => return None,
            Kind::StreetLight => ("LampFault", json!({"ErrorCode": r(9, 1.0, 255.0) as i64})),
            Kind::WaterMeter => ("Leakage", json!({"InstantFlow": round(r(9, 0.05, 0.5), 3)})),
            Kind::AirQuality => (
                "PollutionAlarm",
                json!({"Pollutant": 0, "Value": r(9, 75.0, 300.0) as i64}),
            ),
            Kind::ManholeCover => ("Overflow", json!({"WaterLevel": r(9, 10.0, 30.0) as i64})),
        };
        Some((
            id,
            json!({
                "id": format!("e{seq}"),
                "version": "1.0",
                "params": {"value": value, "time": time},
                "method": format!("thing.event.{id}.post"),
            })
            .to_string(),
        ))
    }

    /// A downlink the operator might send this device: `(API path suffix, body)`, alternating
    /// between a property set and a service call.
    pub fn downlink(&self, n: u64) -> (String, Value) {
        let set = |params: Value| ("/properties:set".to_string(), json!({"params": params}));
        let call = |service: &str, params: Value| {
            (
                format!("/services/{service}:invoke"),
                json!({"params": params, "timeoutMs": 5000}),
            )
        };
        let service = n % 2 == 1;
        match (self.kind, service) {
            (Kind::LegacyLight, false) => set(json!({"Brightness": n % 101})),
            (Kind::LegacyLight, true) => call("Reboot", json!({"DelaySeconds": 0})),
            (Kind::StreetLight, false) => set(json!({"Brightness": 20 + n % 80})),
            (Kind::StreetLight, true) => call(
                "SetSchedule",
                json!({"OnHour": 18, "OffHour": 6, "NightBrightness": 40}),
            ),
            (Kind::WaterMeter, false) => set(json!({"ValveState": 1})),
            (Kind::WaterMeter, true) => call("ControlValve", json!({"Open": 1})),
            (Kind::AirQuality, false) => set(json!({"ReportInterval": 60 + n % 240})),
            (Kind::AirQuality, true) => call("Calibrate", json!({})),
            (Kind::ManholeCover, _) => set(json!({"AlarmThreshold": 10.0 + (n % 20) as f64})),
        }
    }

    /// The downlink filters the device subscribes to: property sets, asynchronous service calls
    /// and synchronous ones (RRPC).
    pub fn downlink_filters(&self) -> Vec<String> {
        let base = format!(
            "/sys/{}/{}/thing/service",
            self.creds.product_key, self.creds.device_name
        );
        let rrpc = format!(
            "/sys/{}/{}/rrpc/request/+",
            self.creds.product_key, self.creds.device_name
        );
        vec![format!("{base}/property/set"), format!("{base}/+"), rrpc]
    }
}

/// The answer a device gives to a downlink it received on `topic`: `(reply topic, payload)`;
/// `None` for anything that is not a request (its own replies, for instance). Asynchronous
/// services and property sets arrive on `…/thing/service/{id}` and are answered on `…_reply`;
/// synchronous services arrive over RRPC (`…/rrpc/request/{messageId}`) and are answered on
/// `…/rrpc/response/{messageId}`.
pub fn answer(topic: &str, payload: &[u8]) -> Option<(String, String)> {
    let request: Value = serde_json::from_slice(payload).ok()?;
    let (reply_topic, service) = match topic.split_once("/rrpc/request/") {
        Some((base, message_id)) => (
            format!("{base}/rrpc/response/{message_id}"),
            request
                .get("method")?
                .as_str()?
                .strip_prefix("thing.service.")?
                .to_string(),
        ),
        None => {
            let (_, last) = topic.rsplit_once('/')?;
            if last.ends_with("_reply") || !topic.contains("/thing/service/") {
                return None;
            }
            (format!("{topic}_reply"), last.to_string())
        }
    };
    let id = request.get("id")?.as_str().unwrap_or("0").to_string();
    let data = match service.as_str() {
        "SetSchedule" | "ControlValve" | "Reboot" => json!({"Accepted": 1}),
        _ => json!({}),
    };
    Some((
        reply_topic,
        json!({"id": id, "code": 200, "data": data}).to_string(),
    ))
}

/// Creates the mix's products (with their thing models) and `n` devices spread over them,
/// each tagged with its coordinates, kind and district.
pub async fn provision(api: &Api, n: usize, mix: Mix) -> anyhow::Result<Vec<SimDevice>> {
    if mix == Mix::WaterMeter {
        return Ok(crate::water_meter::provision(api, n, None).await?.0);
    }
    let specs = mix.products();
    let counts = split(n, specs);
    let mut devices = Vec::with_capacity(n);
    let run = std::process::id();
    for (spec, count) in specs.iter().zip(counts) {
        if count == 0 {
            continue;
        }
        let product = api
            .call(
                Method::POST,
                "/api/v1/products",
                Some(json!({"name": spec.name, "nodeType": "direct", "dataFormat": "alink"})),
            )
            .await?;
        let pk = product["productKey"]
            .as_str()
            .context("no productKey")?
            .to_string();
        let tsl: Value = serde_json::from_str(spec.tsl)?;
        api.call(
            Method::PUT,
            &format!("/api/v1/products/{pk}/thing-model"),
            Some(tsl),
        )
        .await
        .with_context(|| format!("uploading the thing model of {}", spec.name))?;
        let names: Vec<String> = (0..count)
            .map(|i| format!("{}-{run}-{i:06}", spec.prefix))
            .collect();
        for creds in api.create_devices(&pk, &names).await? {
            let index = devices.len() as u64;
            let (lat, lon) = coordinates(index);
            devices.push(SimDevice {
                creds,
                kind: spec.kind,
                key_property: spec.key_property,
                index,
                lat,
                lon,
            });
        }
    }
    if mix == Mix::City {
        tag_locations(api, &devices).await?;
    }
    Ok(devices)
}

/// Which of 4 × 4 districts over the bounding box a point lies in (`D1` … `D16`).
pub fn district(lat: f64, lon: f64) -> String {
    let row = (((lat - LAT.0) / (LAT.1 - LAT.0)) * 4.0).clamp(0.0, 3.0) as u32;
    let col = (((lon - LON.0) / (LON.1 - LON.0)) * 4.0).clamp(0.0, 3.0) as u32;
    format!("D{}", row * 4 + col + 1)
}

/// Sets every device's location tags (16 requests in flight).
async fn tag_locations(api: &Api, devices: &[SimDevice]) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let jobs: Arc<Vec<(String, Value)>> = Arc::new(
        devices
            .iter()
            .map(|d| {
                (
                    format!(
                        "/api/v1/products/{}/devices/{}",
                        d.creds.product_key, d.creds.device_name
                    ),
                    json!({"tags": {
                        "lat": d.lat,
                        "lon": d.lon,
                        "district": district(d.lat, d.lon),
                        "kind": format!("{:?}", d.kind),
                    }}),
                )
            })
            .collect(),
    );
    let api = Arc::new(api.clone());
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (api, jobs, next) = (api.clone(), jobs.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some((path, body)) = jobs.get(i) else {
                    return Ok::<_, anyhow::Error>(());
                };
                api.call(Method::PATCH, path, Some(body.clone())).await?;
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    Ok(())
}
