//! The broker's metrics.
//!
//! Handles are resolved once when the broker is created (the recorder is installed before
//! that), so counting on the message path is an atomic add, not a registry lookup.

use metrics::{Counter, Gauge, counter, describe_counter, describe_gauge, gauge};

pub(crate) const CONNECTIONS: &str = "lotus_mqtt_connections";
pub(crate) const CONNECTS: &str = "lotus_mqtt_connects_total";
const RECEIVED: &str = "lotus_mqtt_messages_received_total";
const SENT: &str = "lotus_mqtt_messages_sent_total";
const PUBLISH_REFUSED: &str = "lotus_mqtt_publish_refused_total";
const SUBSCRIBE_REFUSED: &str = "lotus_mqtt_subscribe_refused_total";
const QOS0_DROPPED: &str = "lotus_mqtt_qos0_dropped_total";
const SESSION_QUEUE_DROPPED: &str = "lotus_mqtt_session_queue_dropped_total";

pub(crate) struct Metrics {
    pub connections: Gauge,
    pub received: Counter,
    pub sent: Counter,
    pub publish_refused: Counter,
    pub subscribe_refused: Counter,
    pub qos0_dropped: Counter,
    pub session_queue_dropped: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        describe_gauge!(CONNECTIONS, "Established MQTT connections");
        describe_counter!(CONNECTS, "MQTT CONNECT attempts by result");
        describe_counter!(RECEIVED, "PUBLISH packets received from clients");
        describe_counter!(SENT, "PUBLISH packets sent to clients");
        describe_counter!(
            PUBLISH_REFUSED,
            "PUBLISH packets refused by authorisation or the platform"
        );
        describe_counter!(SUBSCRIBE_REFUSED, "Subscription filters refused");
        describe_counter!(
            QOS0_DROPPED,
            "QoS 0 deliveries dropped because a subscriber's queue was full"
        );
        describe_counter!(
            SESSION_QUEUE_DROPPED,
            "Messages dropped from full queues of offline persistent sessions"
        );
        Self {
            connections: gauge!(CONNECTIONS),
            received: counter!(RECEIVED),
            sent: counter!(SENT),
            publish_refused: counter!(PUBLISH_REFUSED),
            subscribe_refused: counter!(SUBSCRIBE_REFUSED),
            qos0_dropped: counter!(QOS0_DROPPED),
            session_queue_dropped: counter!(SESSION_QUEUE_DROPPED),
        }
    }

    /// Counts a CONNECT outcome: `accepted`, `reply_and_close`, a refusal
    /// (`bad_credentials`, `not_authorized`, `client_id_not_valid`, `server_unavailable`,
    /// `banned`, `bad_authentication_method`, `unsupported_protocol`), or a failure before
    /// CONNECT (`protocol_error`, `timeout`, `tls_error`, `websocket_error`).
    pub fn connect(&self, result: &'static str) {
        counter!(CONNECTS, "result" => result).increment(1);
    }
}
