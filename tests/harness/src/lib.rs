//! Test support: real Lotus nodes, real PostgreSQL servers and real MQTT clients.

pub mod device;
pub mod mqtt;
pub mod node;
pub mod postgres;

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
