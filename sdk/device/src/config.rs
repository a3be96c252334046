//! What a device needs to know to connect: its credentials, the endpoint and the transport.

use std::time::Duration;

use lotus_model::alink::SignMethod;

use crate::backoff::Backoff;

/// One-device-one-secret credentials (the triple printed on the device label).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub product_key: String,
    pub device_name: String,
    pub device_secret: String,
}

impl Credentials {
    pub fn new(
        product_key: impl Into<String>,
        device_name: impl Into<String>,
        device_secret: impl Into<String>,
    ) -> Self {
        Credentials {
            product_key: product_key.into(),
            device_name: device_name.into(),
            device_secret: device_secret.into(),
        }
    }
}

// The secret never goes to logs.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("product_key", &self.product_key)
            .field("device_name", &self.device_name)
            .field("device_secret", &"***")
            .finish()
    }
}

/// TLS for MQTT (`securemode=2`). Without a CA the platform's certificate is checked against
/// the operating system's roots.
#[derive(Debug, Clone, Default)]
pub struct TlsConfig {
    /// PEM of the CA (or self-signed certificate) the server's certificate must chain to.
    pub ca_pem: Option<Vec<u8>>,
}

/// MQTT endpoint.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    pub tls: Option<TlsConfig>,
    pub keep_alive: Duration,
    pub sign_method: SignMethod,
    /// The `{id}` part of the client id; the device name when `None`.
    pub client_id: Option<String>,
}

impl MqttConfig {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        MqttConfig {
            host: host.into(),
            port,
            tls: None,
            keep_alive: Duration::from_secs(60),
            sign_method: SignMethod::HmacSha256,
            client_id: None,
        }
    }
}

/// CoAP endpoint (Alink CoAP: `POST /auth`, then `POST /topic/…`), over plain UDP (5683) or
/// DTLS with a PSK derived from the device secret (5684).
#[derive(Debug, Clone)]
pub struct CoapConfig {
    /// `host:port`, resolved on every (re-)authentication.
    pub address: String,
    pub sign_method: SignMethod,
    /// RFC 7252 ACK_TIMEOUT: the first retransmission waits a random time in
    /// `[ACK_TIMEOUT, ACK_TIMEOUT·1.5]`, doubling after each.
    pub ack_timeout: Duration,
    /// RFC 7252 MAX_RETRANSMIT.
    pub max_retransmit: u32,
    /// DTLS 1.2 with PSK instead of plain UDP (then no `/auth` token is needed).
    pub dtls: bool,
}

impl CoapConfig {
    pub fn new(address: impl Into<String>) -> Self {
        CoapConfig {
            address: address.into(),
            sign_method: SignMethod::HmacSha256,
            ack_timeout: Duration::from_secs(2),
            max_retransmit: 4,
            dtls: false,
        }
    }

    /// CoAP over DTLS (PSK identity `{pk}&{dn}`), usually port 5684.
    pub fn dtls(address: impl Into<String>) -> Self {
        CoapConfig {
            dtls: true,
            ..Self::new(address)
        }
    }
}

/// The transport a [`crate::Device`] talks over. The device API is the same for both; CoAP
/// carries uplink only.
#[derive(Debug, Clone)]
pub enum Transport {
    Mqtt(MqttConfig),
    Coap(CoapConfig),
}

impl Transport {
    pub fn name(&self) -> &'static str {
        match self {
            Transport::Mqtt(_) => "MQTT",
            Transport::Coap(_) => "CoAP",
        }
    }
}

/// Everything [`crate::Device::connect`] needs.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    pub credentials: Credentials,
    pub transport: Transport,
    /// How long a post waits for the platform's `_reply`.
    pub reply_timeout: Duration,
    /// Reconnect back-off (MQTT) and flush retry back-off (both).
    pub backoff: Backoff,
    /// Capacity of the offline buffer, in messages (oldest dropped when full).
    pub offline_buffer: usize,
}

impl DeviceConfig {
    pub fn mqtt(credentials: Credentials, host: impl Into<String>, port: u16) -> Self {
        Self::with_transport(credentials, Transport::Mqtt(MqttConfig::new(host, port)))
    }

    pub fn coap(credentials: Credentials, address: impl Into<String>) -> Self {
        Self::with_transport(credentials, Transport::Coap(CoapConfig::new(address)))
    }

    /// CoAP over DTLS with the device-secret-derived PSK.
    pub fn coap_dtls(credentials: Credentials, address: impl Into<String>) -> Self {
        Self::with_transport(credentials, Transport::Coap(CoapConfig::dtls(address)))
    }

    pub fn with_transport(credentials: Credentials, transport: Transport) -> Self {
        DeviceConfig {
            credentials,
            transport,
            reply_timeout: Duration::from_secs(10),
            backoff: Backoff::default(),
            offline_buffer: 1000,
        }
    }

    /// Turns on TLS for MQTT (ignored for CoAP).
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        if let Transport::Mqtt(m) = &mut self.transport {
            m.tls = Some(tls);
        }
        self
    }

    pub fn reply_timeout(mut self, timeout: Duration) -> Self {
        self.reply_timeout = timeout;
        self
    }

    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    pub fn offline_buffer(mut self, capacity: usize) -> Self {
        self.offline_buffer = capacity;
        self
    }
}
