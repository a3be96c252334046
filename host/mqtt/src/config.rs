//! Broker limits and timeouts.

use std::time::Duration;

/// Limits and timeouts of the broker. `Default` gives production values.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Largest packet accepted from a client, in bytes (whole packet); announced to v5 clients.
    pub max_packet_size: usize,
    /// Longest keep-alive a v5 client may use; a longer (or zero) one is replaced through
    /// Server Keep Alive. v3.1.1 has no way to tell the client, so its own value is enforced.
    pub max_keep_alive: u16,
    /// Messages waiting per session: an online session's queue makes QoS ≥ 1 publishers wait
    /// when it is full; an offline persistent session keeps this many and drops the oldest.
    pub session_queue_limit: usize,
    /// Unacknowledged QoS ≥ 1 messages per direction and connection (v5 Receive Maximum).
    pub max_inflight: u16,
    /// Number of retained topics kept; beyond it new retained topics are not stored.
    pub retained_limit: usize,
    /// Time a new connection has to send its CONNECT (and finish TLS / WebSocket handshakes).
    pub connect_timeout: Duration,
    /// Time the authenticator has to answer a CONNECT.
    pub auth_timeout: Duration,
    /// A write that makes no progress for this long closes the connection, so that a client
    /// that stops reading cannot stall its publishers forever.
    pub write_timeout: Duration,
    /// Upper bound of a session's life while its client is away (v5 Session Expiry is clamped
    /// to it; a v3.1.1 `clean_session=false` session lasts this long).
    pub max_session_expiry: Duration,
    /// How long `shutdown` waits for connections to deliver pending acknowledgements.
    pub shutdown_timeout: Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            max_packet_size: 256 * 1024,
            max_keep_alive: 1200,
            session_queue_limit: 1000,
            max_inflight: 32,
            retained_limit: 100_000,
            connect_timeout: Duration::from_secs(10),
            auth_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            max_session_expiry: Duration::from_secs(7 * 24 * 3600),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}
