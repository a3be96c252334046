//! Host bindings of the WIT packages, one module per version so later versions are served side by
//! side with older plugins.

/// `lotus:plugin@0.1.0` (wit/v0.1.0).
pub mod v0_1_0 {
    /// `app` imports every host interface, so its bindings define the interfaces once and the
    /// other worlds reuse them through `with`.
    pub mod app {
        wasmtime::component::bindgen!({
            path: "../../wit/v0.1.0",
            world: "app",
        });
    }

    pub mod codec {
        wasmtime::component::bindgen!({
            path: "../../wit/v0.1.0",
            world: "codec",
            with: {
                "lotus:plugin/types": super::app::lotus::plugin::types,
                "lotus:plugin/log": super::app::lotus::plugin::log,
                "lotus:plugin/kv": super::app::lotus::plugin::kv,
                "lotus:plugin/clock": super::app::lotus::plugin::clock,
            },
        });
    }

    pub mod rule {
        wasmtime::component::bindgen!({
            path: "../../wit/v0.1.0",
            world: "rule",
            with: {
                "lotus:plugin/types": super::app::lotus::plugin::types,
                "lotus:plugin/log": super::app::lotus::plugin::log,
                "lotus:plugin/kv": super::app::lotus::plugin::kv,
                "lotus:plugin/clock": super::app::lotus::plugin::clock,
                "lotus:plugin/device": super::app::lotus::plugin::device,
            },
        });
    }

    pub mod event_handler {
        wasmtime::component::bindgen!({
            path: "../../wit/v0.1.0",
            world: "event-handler",
            with: {
                "lotus:plugin/types": super::app::lotus::plugin::types,
                "lotus:plugin/log": super::app::lotus::plugin::log,
                "lotus:plugin/kv": super::app::lotus::plugin::kv,
                "lotus:plugin/clock": super::app::lotus::plugin::clock,
                "lotus:plugin/device": super::app::lotus::plugin::device,
                "lotus:plugin/event": super::app::lotus::plugin::event,
            },
        });
    }

    pub mod channel {
        wasmtime::component::bindgen!({
            path: "../../wit/v0.1.0",
            world: "channel",
            with: {
                "lotus:plugin/types": super::app::lotus::plugin::types,
                "lotus:plugin/log": super::app::lotus::plugin::log,
                "lotus:plugin/kv": super::app::lotus::plugin::kv,
                "lotus:plugin/clock": super::app::lotus::plugin::clock,
                "lotus:plugin/http": super::app::lotus::plugin::http,
                "lotus:plugin/secrets": super::app::lotus::plugin::secrets,
            },
        });
    }

    /// The shared record and variant types (`lotus:plugin/types`).
    pub use app::lotus::plugin::types;
    pub use channel::{Delivery, DeliveryStatus};
    pub use rule::Trigger;

    /// The WIT package version these bindings serve.
    pub const VERSION: &str = "0.1.0";
}
