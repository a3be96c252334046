//! The device plane: what the platform does with device connections and messages.
//!
//! Modules follow a message's path: [`connect`] authenticates a CONNECT (Alink signing,
//! dynamic registration), [`uplink`] handles what devices publish (validation against the
//! thing model, replies), [`writer`] group-commits telemetry, [`downlink`] sends property sets
//! and service calls and correlates their replies, [`shadow`] keeps desired/reported state and
//! [`status`] tracks online/offline. [`registry`] caches products so that the hot path never
//! waits on storage for metadata. [`access`] lets devices on request/response transports
//! (CoAP, HTTP) authenticate for a token and publish into the same pipeline. [`codec`] decodes
//! raw data of `dataFormat: custom` products through their codec plugin into that same path.

pub mod access;
pub mod application;
pub mod codec;
pub mod connect;
pub mod downlink;
pub mod gateway;
pub mod hooks;
pub mod registry;
pub mod shadow;
pub mod status;
pub mod uplink;
pub mod writer;

mod plane;

pub use plane::{DevicePlane, PlaneConfig, PlaneError};

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
