//! The host's own MQTT 3.1.1 / 5 broker.
//!
//! City devices must be isolated from each other, so the host terminates every connection
//! itself and routes every message itself: each PUBLISH, SUBSCRIBE filter and delivery goes
//! through [`BrokerHooks`], which the device plane implements. Packet codecs come from
//! `rumqttc`; sessions, routing, retained messages and flow control live here.
//!
//! Layout: `listener` accepts (TCP, TLS, WebSocket via `websocket`) and hands each socket to
//! `connection`, one task per client, which talks to its `session` (subscriptions, outgoing
//! queue, unacknowledged messages). `broker` routes through the `router` trie and the
//! `retained` store; `codec` maps wire bytes to packets.

mod broker;
mod codec;
mod config;
mod connection;
mod hooks;
mod listener;
mod message;
mod metrics;
mod retained;
mod router;
mod session;
mod websocket;

pub use broker::Broker;
pub use config::BrokerConfig;
pub use hooks::{
    AckWaiter, AuthOutcome, BrokerHooks, ClientContext, ConnectRejection, ConnectRequest,
    DisconnectReason, InboundPublish, MqttVersion, PublishProperties, PublishVerdict, QoS,
    Transport,
};
pub use listener::{TlsConfigError, bind_tcp, load_tls_config};
