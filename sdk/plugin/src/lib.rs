//! The Lotus plugin SDK: write plugins for `lotus:plugin@0.1.0` in Rust.
//!
//! A plugin is a WebAssembly component built for `wasm32-wasip2`. Enable the cargo feature of
//! one world, implement its trait and export it with its macro:
//!
//! | world (feature) | trait | macro |
//! |---|---|---|
//! | `codec` | [`Codec`] | [`export_codec!`] |
//! | `rule` | [`Rule`] | [`export_rule!`] |
//! | `event-handler` | [`EventHandler`] | [`export_event_handler!`] |
//! | `app` | [`App`] | [`export_app!`] |
//! | `channel` | [`Channel`] | [`export_channel!`] |
//!
//! The bindings are generated inside this crate, so plugins do not run wit-bindgen. The pure
//! helpers ([`AlinkRequest`], [`Downlink`], [`ByteReader`], [`crc`], [`hex`]) work in native
//! unit tests; the [`host`] functions only inside the Lotus host. See `docs/plugins.md`.

pub mod alink;
// Generated code: its ABI shims take one argument per flattened WIT value.
#[allow(clippy::all)]
pub mod bindings;
pub mod crc;
mod error;
pub mod hex;
pub mod host;
mod reader;
pub mod worlds;

pub use alink::{AlinkMessage, AlinkReply, AlinkRequest, Downlink, ParamsExt, fixed_point, scaled};
pub use error::CodecError;
pub use reader::ByteReader;
#[cfg(feature = "app")]
pub use worlds::App;
#[cfg(feature = "codec")]
pub use worlds::Codec;
#[cfg(feature = "event-handler")]
pub use worlds::EventHandler;
#[cfg(feature = "channel")]
pub use worlds::{Channel, Delivery, DeliveryStatus};
#[cfg(feature = "rule")]
pub use worlds::{Rule, Trigger};
pub use worlds::{actions, message_values};

/// The records and variants shared by the worlds and host interfaces.
pub mod types {
    pub use crate::bindings::types::*;
}

/// Re-exported so plugins build JSON with the same version the SDK uses.
pub use serde_json;
