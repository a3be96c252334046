//! The NB-IoT water meter of `plugins/water-meter-codec`, in both formats, so that the codec
//! path can be compared like for like with Alink JSON (`loadgen pipeline --mix water-meter`):
//! - `--format raw`: a `dataFormat: custom` product, the codec plugin installed and bound to it
//!   through the API, and meters that publish binary frames (the layout of
//!   `plugins/water-meter-codec/README.md`) on `/sys/{pk}/{dn}/thing/model/up_raw`;
//! - `--format alink`: the same thing model on an Alink product, and meters that post exactly
//!   what the codec would have decoded from their frames, as Alink JSON without times (frames
//!   carry none, so both are stored at their arrival).

use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::{Value, json};

use crate::city::{Kind, SimDevice, mix64};
use crate::pipeline::Api;

/// How devices post their properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Alink JSON on `…/thing/event/property/post`.
    #[default]
    Alink,
    /// Binary frames on `…/thing/model/up_raw`, decoded by a codec plugin.
    Raw,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Alink => "alink",
            Format::Raw => "raw",
        }
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "alink" => Ok(Format::Alink),
            "raw" => Ok(Format::Raw),
            other => Err(format!("unknown format '{other}': use alink or raw")),
        }
    }
}

/// A codec plugin to install: the component and its `lotus-plugin.toml`.
#[derive(Debug, Clone)]
pub struct CodecPlugin {
    pub wasm: PathBuf,
    pub manifest: PathBuf,
}

/// The water-meter thing model whose identifiers are exactly those the codec emits.
pub const TSL: &str = include_str!("../products/water-meter-raw.tsl.json");
/// The property whose stored history is counted.
pub const KEY_PROPERTY: &str = "CumulativeFlow";
pub const PRODUCT_NAME: &str = "Loadgen raw water meter";
pub const ALINK_PRODUCT_NAME: &str = "Loadgen water meter (Alink)";

/// The manifest with its top-level `products` replaced by `[pk]` (added when absent) and, when
/// `id` is given, its top-level `id` replaced.
pub fn manifest_for(text: &str, pk: &str, id: Option<&str>) -> String {
    let mut out = Vec::new();
    let mut top_level = true;
    let mut products_set = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if top_level && trimmed.starts_with('[') {
            if !products_set {
                out.push(format!("products = [\"{pk}\"]"));
                products_set = true;
            }
            top_level = false;
        }
        let key = trimmed
            .split_once('=')
            .map(|(k, _)| k.trim())
            .unwrap_or_default();
        if top_level && key == "products" {
            out.push(format!("products = [\"{pk}\"]"));
            products_set = true;
            continue;
        }
        if top_level
            && key == "id"
            && let Some(id) = id
        {
            out.push(format!("id = \"{id}\""));
            continue;
        }
        out.push(line.to_string());
    }
    if !products_set {
        out.push(format!("products = [\"{pk}\"]"));
    }
    out.join("\n") + "\n"
}

/// The top-level `id` of a manifest.
fn manifest_id(text: &str) -> anyhow::Result<String> {
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            break;
        }
        if let Some((k, v)) = trimmed.split_once('=')
            && k.trim() == "id"
        {
            return Ok(v.trim().trim_matches('"').to_string());
        }
    }
    bail!("the manifest has no top-level id")
}

/// `POST /api/v1/plugins` (multipart `manifest` + `wasm`): `Ok(None)` on 409 (the id exists).
async fn upload(api: &Api, manifest: String, wasm: Vec<u8>) -> anyhow::Result<Option<Value>> {
    let form = reqwest::multipart::Form::new()
        .text("manifest", manifest)
        .part(
            "wasm",
            reqwest::multipart::Part::bytes(wasm)
                .file_name("plugin.wasm")
                .mime_str("application/wasm")?,
        );
    let resp = api
        .client
        .post(format!("{}/api/v1/plugins", api.base))
        .bearer_auth(&api.token)
        .multipart(form)
        .send()
        .await
        .context("installing the codec plugin")?;
    let status = resp.status();
    let text = resp.text().await?;
    if status == reqwest::StatusCode::CONFLICT {
        return Ok(None);
    }
    if !status.is_success() {
        bail!("POST /api/v1/plugins: {status} {text}");
    }
    Ok(Some(serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// Installs the codec for product `pk` and binds it; returns the plugin id.
///
/// The manifest's `products` becomes `[pk]`. When a plugin with the manifest's id is already
/// installed (409), it is left alone (upgrading it would change the scope of the products bound
/// to it) and the codec is installed again under the id `{id}-{pk}` (lower-cased), unique per
/// product.
pub async fn install_codec(api: &Api, plugin: &CodecPlugin, pk: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(&plugin.manifest)
        .with_context(|| format!("reading {}", plugin.manifest.display()))?;
    let wasm = std::fs::read(&plugin.wasm)
        .with_context(|| format!("reading {}", plugin.wasm.display()))?;
    let mut id = manifest_id(&text)?;
    if upload(api, manifest_for(&text, pk, None), wasm.clone())
        .await?
        .is_none()
    {
        let mut unique = format!("{id}-{}", pk.to_lowercase());
        unique.truncate(64);
        upload(api, manifest_for(&text, pk, Some(&unique)), wasm)
            .await?
            .with_context(|| format!("plugin '{unique}' is already installed"))?;
        id = unique;
    }
    api.call(
        Method::PUT,
        &format!("/api/v1/products/{pk}/codec"),
        Some(json!({ "plugin": id })),
    )
    .await
    .with_context(|| format!("binding codec '{id}' to {pk}"))?;
    Ok(id)
}

/// Creates the water-meter product and `n` devices named by 14-digit meter serials. With a
/// codec the product is `dataFormat: custom` and the codec is installed and bound to it;
/// without, it is an Alink product with the same thing model. Returns the devices and the
/// plugin id.
pub async fn provision(
    api: &Api,
    n: usize,
    plugin: Option<&CodecPlugin>,
) -> anyhow::Result<(Vec<SimDevice>, Option<String>)> {
    let body = match plugin {
        Some(_) => json!({"name": PRODUCT_NAME, "nodeType": "direct", "dataFormat": "custom"}),
        None => json!({"name": ALINK_PRODUCT_NAME, "nodeType": "direct", "dataFormat": "alink"}),
    };
    let product = api
        .call(Method::POST, "/api/v1/products", Some(body))
        .await?;
    let pk = product["productKey"]
        .as_str()
        .context("no productKey")?
        .to_string();
    let tsl: Value = serde_json::from_str(TSL)?;
    api.call(
        Method::PUT,
        &format!("/api/v1/products/{pk}/thing-model"),
        Some(tsl),
    )
    .await
    .context("uploading the water-meter thing model")?;
    let plugin_id = match plugin {
        Some(plugin) => Some(install_codec(api, plugin, &pk).await?),
        None => None,
    };
    // 14 BCD digits: the run (process id) then the device's index.
    let run = u64::from(std::process::id()) % 10_000_000;
    let names: Vec<String> = (0..n as u64).map(|i| format!("{run:07}{i:07}")).collect();
    let mut devices = Vec::with_capacity(n);
    for creds in api.create_devices(&pk, &names).await? {
        let index = devices.len() as u64;
        let (lat, lon) = crate::city::coordinates(index);
        devices.push(SimDevice {
            creds,
            kind: Kind::WaterMeter,
            key_property: KEY_PROPERTY,
            index,
            lat,
            lon,
        });
    }
    Ok((devices, plugin_id))
}

pub const START: u8 = 0x68;
pub const END: u8 = 0x16;
pub const VERSION: u8 = 0x01;
pub const TYPE_DATA: u8 = 0x01;
pub const TYPE_ALARM: u8 = 0x02;
/// Alarm code of `Leakage`.
pub const ALARM_LEAKAGE: u8 = 0x01;

/// CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF).
pub fn crc16_modbus(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in bytes {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// The 7 BCD bytes of a 14-digit serial; `AA…AA` (any meter) otherwise.
pub fn serial_bytes(device_name: &str) -> [u8; 7] {
    let digits = device_name.as_bytes();
    if digits.len() != 14 || !digits.iter().all(u8::is_ascii_digit) {
        return [0xAA; 7];
    }
    let mut out = [0u8; 7];
    for (i, pair) in digits.chunks(2).enumerate() {
        out[i] = ((pair[0] - b'0') << 4) | (pair[1] - b'0');
    }
    out
}

/// A complete uplink frame around `payload`, with its CRC (low byte first) and end byte.
pub fn frame(frame_type: u8, sequence: u16, serial: [u8; 7], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + payload.len());
    out.extend([START, VERSION, frame_type]);
    out.extend(sequence.to_be_bytes());
    out.extend(serial);
    out.push(payload.len() as u8);
    out.extend(payload);
    out.extend(crc16_modbus(&out).to_le_bytes());
    out.push(END);
    out
}

fn uniform(seed: u64, lo: u64, hi: u64) -> u64 {
    lo + mix64(seed) % (hi - lo)
}

/// Cumulative flow in litres (0.001 m³) of post `seq`: a starting reading per meter, then a
/// few litres more every report.
pub fn cumulative_litres(device: &SimDevice, seq: u64) -> u32 {
    let start = 100_000 + (device.index % 1000) * 1_000 + mix64(device.index) % 1000;
    // About 5 litres per report, strictly increasing.
    let used = seq * 5 + mix64(device.index ^ seq.wrapping_mul(0x9E37)) % 5;
    (start + used) as u32
}

/// One data report in the meter's own units, the values both formats carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    pub cumulative_litres: u32,
    pub instant_litres_per_hour: u16,
    pub battery_mv: u16,
    pub valve: u8,
    pub temperature_decidegrees: i16,
    pub status: u16,
    pub report_interval_minutes: u16,
}

/// The reading of post `seq`: increasing cumulative flow, plausible flow, battery, valve open,
/// water temperature, no status bits, hourly reporting.
pub fn reading(device: &SimDevice, seq: u64) -> Reading {
    let seed = mix64(device.index) ^ mix64(seq);
    Reading {
        cumulative_litres: cumulative_litres(device, seq),
        instant_litres_per_hour: uniform(seed, 0, 2_500) as u16, // 0 … 2.5 m³/h
        battery_mv: 3_600 - (device.index % 200) as u16,         // 3.4 … 3.6 V
        valve: 1,
        temperature_decidegrees: uniform(seed ^ 1, 120, 220) as i16, // 12.0 … 22.0 °C
        status: 0,
        report_interval_minutes: 60,
    }
}

/// The data report (type `0x01`) of post `seq`.
pub fn data_frame(device: &SimDevice, seq: u64) -> Vec<u8> {
    let r = reading(device, seq);
    let mut p = Vec::with_capacity(15);
    p.extend(r.cumulative_litres.to_be_bytes());
    p.extend(r.instant_litres_per_hour.to_be_bytes());
    p.extend(r.battery_mv.to_be_bytes());
    p.push(r.valve);
    p.extend(r.temperature_decidegrees.to_be_bytes());
    p.extend(r.status.to_be_bytes());
    p.extend(r.report_interval_minutes.to_be_bytes());
    frame(
        TYPE_DATA,
        seq as u16,
        serial_bytes(&device.creds.device_name),
        &p,
    )
}

/// `raw / 10^decimals`, printed as the codec prints it.
fn fixed(raw: i64, decimals: i32) -> f64 {
    raw as f64 / 10f64.powi(decimals)
}

/// The Alink property post the codec decodes from `data_frame(device, seq)`.
pub fn alink_post(device: &SimDevice, seq: u64) -> String {
    let r = reading(device, seq);
    json!({
        "id": (seq as u16).to_string(),
        "version": "1.0",
        "method": "thing.event.property.post",
        "params": {
            "CumulativeFlow": fixed(r.cumulative_litres.into(), 3),
            "InstantFlow": fixed(r.instant_litres_per_hour.into(), 3),
            "BatteryVoltage": fixed(r.battery_mv.into(), 3),
            "ValveState": r.valve,
            "WaterTemperature": fixed(r.temperature_decidegrees.into(), 1),
            "StatusBits": r.status,
            "ReportInterval": r.report_interval_minutes,
        },
    })
    .to_string()
}

/// The reading a `Leakage` alarm after post `seq` reports.
fn leakage(device: &SimDevice, seq: u64) -> (u32, u16, u16) {
    let seed = mix64(device.index) ^ mix64(seq) ^ 9;
    (
        cumulative_litres(device, seq),
        uniform(seed, 50, 500) as u16,
        3_600 - (device.index % 200) as u16,
    )
}

/// A `Leakage` alarm (type `0x02`) after post `seq`.
pub fn leakage_frame(device: &SimDevice, seq: u64) -> Vec<u8> {
    let (cumulative, instant, battery) = leakage(device, seq);
    let mut p = Vec::with_capacity(11);
    p.push(ALARM_LEAKAGE);
    p.extend(0b10u16.to_be_bytes());
    p.extend(cumulative.to_be_bytes());
    p.extend(instant.to_be_bytes());
    p.extend(battery.to_be_bytes());
    frame(
        TYPE_ALARM,
        seq as u16,
        serial_bytes(&device.creds.device_name),
        &p,
    )
}

/// The Alink event post the codec decodes from `leakage_frame(device, seq)`.
pub fn alink_leakage(device: &SimDevice, seq: u64) -> String {
    let (cumulative, instant, _) = leakage(device, seq);
    json!({
        "id": (seq as u16).to_string(),
        "version": "1.0",
        "method": "thing.event.Leakage.post",
        "params": {"value": {
            "InstantFlow": fixed(instant.into(), 3),
            "CumulativeFlow": fixed(cumulative.into(), 3),
        }},
    })
    .to_string()
}
