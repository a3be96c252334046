//! The Lotus plugin runtime: runs untrusted WebAssembly components (`lotus:plugin` WIT worlds:
//! codec, rule, event-handler, app, channel) inside the host, each bounded (fuel, epoch
//! deadline, memory, wasm stack, output size) and granted only the capabilities its manifest
//! requests and the [`CapabilityCheck`] allows.
//!
//! This is the only crate of the workspace that links wasmtime.

mod alink;
mod cache;
mod error;
mod guest_output;
mod host;
mod logs;
mod manifest;
mod runtime;
mod store;
pub mod wit;

pub use error::{CallError, PrepareError};
pub use host::{
    CapabilityCheck, CapabilityRequest, DeviceCall, EventInput, HostError, HostServices,
    ManifestCapabilityCheck, http_host_allowed, topic_matches,
};
pub use logs::{LogLevel, LogLine, LogSource};
pub use manifest::{Capability, Limits, Manifest, ManifestError, World};
pub use runtime::{
    App, Channel, Codec, EventHandler, MessageContext, PluginRuntime, PluginStatus, PreparedPlugin,
    Rule, RuntimeConfig,
};
