//! # Lotus device SDK
//!
//! Connects a device to Lotus — or to any platform speaking Alibaba Cloud IoT's **Alink**
//! protocol — over **MQTT** (TCP or TLS) or **CoAP** (UDP, or DTLS with the device-secret PSK),
//! with the same API:
//!
//! - **Login**: one-device-one-secret (signed MQTT CONNECT or CoAP `/auth`), or
//!   one-product-one-secret via [`register::register_https`] / [`register::register_mqtt`],
//!   which return the device's own secret — persist it, the platform hands it out only once.
//! - **Uplink**: [`Device::post_properties`], [`Device::post_event`], [`Device::post_raw`],
//!   each waiting for the platform's `_reply`; a rejection (e.g. `460` naming the field that
//!   does not fit the thing model) is [`Error::Rejected`] with its code and message, a
//!   missing reply [`Error::Timeout`].
//! - **Downlink** (MQTT only): typed handlers [`Device::on_property_set`],
//!   [`Device::on_service`] (asynchronous calls and synchronous RRPC calls alike),
//!   [`Device::on_rrpc`] for custom RRPC payloads, [`Device::on_raw_down`]; the SDK sends the
//!   replies. Over CoAP these return [`Error::Unsupported`]: CoAP here carries uplink only.
//! - **Shadow**: [`Device::shadow_get`], [`Device::shadow_report`] and
//!   [`Device::on_shadow_delta`] for desired values set by an operator.
//! - **Resilience**: a dropped MQTT connection is re-established with jittered, capped
//!   exponential back-off ([`Backoff`]), re-signed and re-subscribed. Posts made while the
//!   platform is unreachable go to a bounded **offline buffer** ([`DeviceConfig::offline_buffer`]
//!   messages; when full the *oldest* is dropped and counted in [`Device::buffer_stats`]) and
//!   are sent in order once the link is back. A message leaves the buffer only when the
//!   platform answered it, so delivery is at-least-once.
//!
//! ```no_run
//! use lotus_device_sdk::{Credentials, Device, DeviceConfig};
//! use serde_json::json;
//!
//! # async fn run() -> Result<(), lotus_device_sdk::Error> {
//! let creds = Credentials::new("a1B2c3", "lamp-0001", "device-secret");
//! let device = Device::connect(DeviceConfig::mqtt(creds, "lotus.example.org", 1883)).await?;
//! device.on_service("Reboot", |params| {
//!     let delay = params["DelaySeconds"].as_i64().unwrap_or(0);
//!     if delay > 60 {
//!         return Err((460, "DelaySeconds must be at most 60".into()));
//!     }
//!     Ok(json!({"Accepted": 1}))
//! })?;
//! device.post_properties(json!({"Brightness": 80, "Power": 1})).await?;
//! # Ok(()) }
//! ```
//!
//! See `examples/street_light.rs` for a complete device and `docs/devices.md` ("Device SDK").

mod backoff;
mod buffer;
mod coap;
mod config;
mod device;
mod error;
mod handlers;
mod login;
mod mqtt;
pub mod register;
mod shadow;
mod topics;

pub use backoff::Backoff;
pub use buffer::BufferStats;
pub use config::{CoapConfig, Credentials, DeviceConfig, MqttConfig, TlsConfig, Transport};
pub use device::{Device, Posted};
pub use error::{Error, Result};
pub use handlers::HandlerResult;
pub use login::{MqttLogin, coap_auth_body, mqtt_login};
pub use lotus_model::alink::SignMethod;
pub use shadow::{ShadowDelta, ShadowState};

/// The Alink CoAP option number that carries the auth token.
pub const COAP_TOKEN_OPTION: u16 = coap::TOKEN_OPTION;
pub use coap::dtls_psk;
