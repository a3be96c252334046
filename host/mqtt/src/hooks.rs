//! What the broker asks of the platform, and the values it hands over.
//!
//! The broker owns the protocol; every decision about identity, permission and what a message
//! means belongs to the [`BrokerHooks`] implementation (the device plane).

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use lotus_model::authz::{Decision, Principal, TopicAction};

pub use rumqttc::v5::mqttbytes::v5::PublishProperties;

/// MQTT quality of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum QoS {
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    pub(crate) fn from_u8(n: u8) -> Option<Self> {
        match n {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// The protocol version a connection speaks (chosen from its CONNECT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MqttVersion {
    V311,
    V5,
}

impl MqttVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            MqttVersion::V311 => "3.1.1",
            MqttVersion::V5 => "5",
        }
    }
}

/// How the client reached the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Tcp,
    Tls,
    WebSocket,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::WebSocket => "websocket",
        }
    }
}

/// A CONNECT as the authenticator sees it. Its `Debug` leaves the password out.
#[derive(Clone)]
pub struct ConnectRequest<'a> {
    /// The client identifier; for an empty one the broker assigns an identifier first and this
    /// is the assigned one.
    pub client_id: &'a str,
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
    pub protocol: MqttVersion,
    pub transport: Transport,
    pub peer: SocketAddr,
    pub clean_start: bool,
    pub keep_alive: u16,
}

impl fmt::Debug for ConnectRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectRequest")
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.map(|_| "<redacted>"))
            .field("protocol", &self.protocol)
            .field("transport", &self.transport)
            .field("peer", &self.peer)
            .field("clean_start", &self.clean_start)
            .field("keep_alive", &self.keep_alive)
            .finish()
    }
}

/// Why a CONNECT was refused; mapped to the version's CONNACK code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectRejection {
    /// v3.1.1 0x04, v5 0x86.
    BadCredentials,
    /// v3.1.1 0x05, v5 0x87.
    NotAuthorized,
    /// v3.1.1 0x02, v5 0x85.
    ClientIdNotValid,
    /// v3.1.1 0x03, v5 0x88.
    ServerUnavailable,
    /// v3.1.1 0x05, v5 0x8A.
    Banned,
}

impl ConnectRejection {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectRejection::BadCredentials => "bad_credentials",
            ConnectRejection::NotAuthorized => "not_authorized",
            ConnectRejection::ClientIdNotValid => "client_id_not_valid",
            ConnectRejection::ServerUnavailable => "server_unavailable",
            ConnectRejection::Banned => "banned",
        }
    }

    pub(crate) fn v4_code(self) -> u8 {
        match self {
            ConnectRejection::BadCredentials => 0x04,
            ConnectRejection::NotAuthorized | ConnectRejection::Banned => 0x05,
            ConnectRejection::ClientIdNotValid => 0x02,
            ConnectRejection::ServerUnavailable => 0x03,
        }
    }

    pub(crate) fn v5_code(self) -> u8 {
        match self {
            ConnectRejection::BadCredentials => 0x86,
            ConnectRejection::NotAuthorized => 0x87,
            ConnectRejection::ClientIdNotValid => 0x85,
            ConnectRejection::ServerUnavailable => 0x88,
            ConnectRejection::Banned => 0x8A,
        }
    }
}

/// The authenticator's answer to a CONNECT. Its `Debug` leaves the reply payload out (it
/// carries a device secret).
pub enum AuthOutcome {
    /// Admit the client. `session_key` names the session for takeover and persistence (for
    /// example `device:pk/dn`): a second CONNECT with the same key closes the first connection.
    Accept {
        principal: Principal,
        session_key: Arc<str>,
    },
    /// Refuse with a CONNACK code; `reason` is logged and sent as the v5 Reason String.
    Reject {
        code: ConnectRejection,
        reason: String,
    },
    /// Send a successful CONNACK, then one QoS 0 PUBLISH, then close (dynamic registration
    /// over MQTT hands the device its secret this way).
    ReplyAndClose { topic: String, payload: Bytes },
}

impl fmt::Debug for AuthOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthOutcome::Accept {
                principal,
                session_key,
            } => f
                .debug_struct("Accept")
                .field("principal", principal)
                .field("session_key", session_key)
                .finish(),
            AuthOutcome::Reject { code, reason } => f
                .debug_struct("Reject")
                .field("code", code)
                .field("reason", reason)
                .finish(),
            AuthOutcome::ReplyAndClose { topic, payload } => f
                .debug_struct("ReplyAndClose")
                .field("topic", topic)
                .field("payload_len", &payload.len())
                .finish(),
        }
    }
}

/// Who is on a connection, as every later hook call sees it.
#[derive(Debug, Clone)]
pub struct ClientContext {
    /// Unique per connection for the life of the process.
    pub connection_id: u64,
    pub client_id: Arc<str>,
    pub session_key: Arc<str>,
    pub principal: Principal,
    pub protocol: MqttVersion,
    pub transport: Transport,
    pub peer: SocketAddr,
}

/// An authorised PUBLISH received from a client. Its `Debug` shows the payload's length only.
#[derive(Clone)]
pub struct InboundPublish {
    pub topic: Arc<str>,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// MQTT 5 properties (response topic, correlation data, user properties, content type,
    /// message expiry); they are passed on to MQTT 5 subscribers.
    pub properties: Option<PublishProperties>,
}

impl fmt::Debug for InboundPublish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboundPublish")
            .field("topic", &self.topic)
            .field("payload_len", &self.payload.len())
            .field("qos", &self.qos)
            .field("retain", &self.retain)
            .field("properties", &self.properties.is_some())
            .finish()
    }
}

/// Resolves when the platform has durably stored a message: only then is it acknowledged.
pub type AckWaiter = tokio::sync::oneshot::Receiver<Result<(), String>>;

/// What to do with an inbound PUBLISH.
#[derive(Debug)]
pub enum PublishVerdict {
    /// Route it to subscribers. For QoS ≥ 1 the PUBACK/PUBREC waits for `ack` (when given):
    /// `Ok` acknowledges; `Err` makes a v5 client see reason 0x80 and closes a v3.1.1
    /// connection without acknowledging, so that the client sends the message again.
    Route { ack: Option<AckWaiter> },
    /// Do not route it. A v5 client gets a PUBACK/PUBREC with `code` and `reason`; a v3.1.1
    /// client a normal acknowledgement (the platform reports errors on its own reply topics).
    Refuse { code: u8, reason: String },
}

/// Why a connection ended. [`DisconnectReason::as_str`] names are stable: they are stored and
/// shown to operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client sent DISCONNECT.
    ClientDisconnect,
    /// Nothing was received for 1.5 × the keep-alive.
    KeepAliveTimeout,
    /// EOF or an I/O error without DISCONNECT.
    TransportClosed,
    /// The client broke the protocol (malformed packet, invalid topic, …).
    ProtocolError(String),
    /// An operator or the platform closed the connection.
    Kicked(String),
    /// The client's credentials were revoked.
    CredentialRevoked,
    /// Another connection took the session over.
    SessionTakenOver,
    /// The broker is shutting down.
    ServerShutdown,
    /// The broker could not keep a promise to the client (for example the platform failed to
    /// store a message that a v3.1.1 client needs to send again).
    ServerError(String),
}

impl DisconnectReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            DisconnectReason::ClientDisconnect => "client_disconnect",
            DisconnectReason::KeepAliveTimeout => "keepalive_timeout",
            DisconnectReason::TransportClosed => "transport_closed",
            DisconnectReason::ProtocolError(_) => "protocol_error",
            DisconnectReason::Kicked(_) => "kicked",
            DisconnectReason::CredentialRevoked => "credential_revoked",
            DisconnectReason::SessionTakenOver => "session_taken_over",
            DisconnectReason::ServerShutdown => "server_shutdown",
            DisconnectReason::ServerError(_) => "server_error",
        }
    }

    /// The v5 DISCONNECT reason code the broker sends for a reason it initiated.
    pub(crate) fn v5_code(&self) -> Option<u8> {
        match self {
            DisconnectReason::ClientDisconnect | DisconnectReason::TransportClosed => None,
            DisconnectReason::KeepAliveTimeout => Some(0x8D),
            DisconnectReason::ProtocolError(_) => Some(0x82),
            DisconnectReason::Kicked(_) | DisconnectReason::CredentialRevoked => Some(0x98),
            DisconnectReason::SessionTakenOver => Some(0x8E),
            DisconnectReason::ServerShutdown => Some(0x8B),
            DisconnectReason::ServerError(_) => Some(0x80),
        }
    }

    fn detail(&self) -> Option<&str> {
        match self {
            DisconnectReason::ProtocolError(s)
            | DisconnectReason::Kicked(s)
            | DisconnectReason::ServerError(s) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.detail() {
            Some(d) => write!(f, "{}: {d}", self.as_str()),
            None => f.write_str(self.as_str()),
        }
    }
}

/// The platform's side of the broker. Implemented by the device plane.
pub trait BrokerHooks: Send + Sync + 'static {
    /// Every CONNECT; runs before the CONNACK.
    fn authenticate(&self, req: &ConnectRequest<'_>) -> impl Future<Output = AuthOutcome> + Send;

    /// Every PUBLISH (`Publish`), SUBSCRIBE filter (`Subscribe`) and each delivery to a
    /// subscriber (`Deliver`). Synchronous and on the hot path: must not block, and must not
    /// call back into the broker.
    fn authorize(&self, client: &ClientContext, action: TopicAction, topic: &str) -> Decision;

    /// Every authorised inbound PUBLISH (and every will), before routing. While it runs the
    /// connection reads nothing more, which slows a client down to the platform's pace.
    fn on_publish(
        &self,
        client: &ClientContext,
        publish: &InboundPublish,
    ) -> impl Future<Output = PublishVerdict> + Send;

    fn on_connected(&self, client: &ClientContext);

    /// A subscription was granted (after the filter is in place, so a publish made in response
    /// reaches the client). Lets the platform send state a device asks for by subscribing,
    /// such as its shadow's delta. Must not block.
    fn on_subscribed(&self, _client: &ClientContext, _filter: &str) {}

    fn on_disconnected(&self, client: &ClientContext, reason: &DisconnectReason);
}
