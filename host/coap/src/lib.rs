//! CoAP device access, compatible with Alibaba Cloud IoT's Alink over CoAP.
//!
//! Three listeners feed the same device pipeline as MQTT:
//! - plain UDP (5683): `POST /auth` with the Alink sign returns a token; `POST /topic/{MQTT
//!   topic}` carries it in option 2088;
//! - DTLS 1.2 (5684, [`dtls`]): PSK derived from the device secret; the session is the device;
//! - symmetric-encrypted UDP (5682, [`encrypted`]): AES-128-GCM payloads for devices without DTLS.
//!
//! [`endpoint`] is the message layer all three share (ACKs, duplicate detection in [`peer`],
//! block-wise transfer in [`block`], the resources); [`server`] runs the UDP sockets;
//! [`access`] is the seam to the device plane.

pub mod access;
pub mod block;
pub mod dtls;
pub mod encrypted;
pub mod endpoint;
pub mod peer;
pub mod server;

pub use access::{AccessError, DeviceAccess, DeviceToken, Plane, TokenRequest};
pub use encrypted::SEQ_OPTION;
pub use endpoint::{Endpoint, Limits, Mode, TOKEN_OPTION};
pub use server::bind_udp;
