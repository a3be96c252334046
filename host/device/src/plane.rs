use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use lotus_bus::Bus;
use lotus_model::alink::Reply;
use lotus_model::authz::{DeviceId, Principal, TopicAuthorizer};
use lotus_model::thing_model::ValidationError;
use lotus_mqtt::{Broker, DisconnectReason, QoS};
use lotus_storage::{StorageError, Store};
use tokio::sync::{mpsc, oneshot};

use crate::access::TokenTable;
use crate::hooks::PlaneHooks;
use crate::registry::Registry;
use crate::status::StatusTracker;
use crate::writer::{TelemetryWriter, WriterConfig};

#[derive(Debug, Clone)]
pub struct PlaneConfig {
    pub writer: WriterConfig,
    /// Admit MQTT clients without device credentials to topics outside the device namespaces.
    pub allow_anonymous: bool,
    /// How long a CoAP/HTTP device token is valid.
    pub token_ttl: Duration,
}

impl Default for PlaneConfig {
    fn default() -> Self {
        PlaneConfig {
            writer: WriterConfig::default(),
            allow_anonymous: false,
            token_ttl: crate::access::DEFAULT_TOKEN_TTL,
        }
    }
}

/// Errors the API maps to HTTP problems.
#[derive(Debug, thiserror::Error)]
pub enum PlaneError {
    #[error("{0}")]
    NotFound(String),
    #[error("device {0} is not connected")]
    NotConnected(DeviceId),
    #[error("{0}")]
    Invalid(String),
    #[error("the device did not answer within {0} ms")]
    Timeout(u64),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<ValidationError> for PlaneError {
    fn from(e: ValidationError) -> Self {
        PlaneError::Invalid(e.to_string())
    }
}

/// Everything the device plane shares between connections, the API and background tasks.
pub struct DevicePlane {
    pub store: Store,
    pub registry: Arc<Registry>,
    pub bus: Arc<dyn Bus>,
    pub config: PlaneConfig,
    /// The single permission interface for topics; a policy engine replaces this line.
    pub(crate) authorizer: Box<dyn TopicAuthorizer>,
    pub(crate) writer: TelemetryWriter,
    pub(crate) status: StatusTracker,
    /// Tokens of devices on request/response transports (CoAP, HTTP).
    pub(crate) tokens: TokenTable,
    /// Codec plugins for `dataFormat: custom` products and which product uses which.
    pub codecs: crate::codec::Codecs,
    broker: OnceLock<Broker<PlaneHooks>>,
    /// Synchronous calls waiting for the device's answer, by message id.
    pub(crate) pending: DashMap<String, oneshot::Sender<Reply>>,
    replies_rx: parking_lot::Mutex<Option<mpsc::Receiver<(String, Bytes)>>>,
    next_id: AtomicU64,
}

/// The background tasks a node waits for at shutdown.
pub struct PlaneTasks {
    pub writer: tokio::task::JoinHandle<()>,
    pub status: tokio::task::JoinHandle<()>,
}

impl DevicePlane {
    /// Starts the plane. `authorizer` builds the topic ACL over the product registry (the node
    /// passes the `lotus.device.topic` policy).
    pub async fn start(
        store: Store,
        bus: Arc<dyn Bus>,
        config: PlaneConfig,
        authorizer: impl FnOnce(Arc<Registry>) -> Box<dyn TopicAuthorizer>,
    ) -> Result<(Arc<Self>, PlaneTasks), StorageError> {
        let registry = Registry::load(&store).await?;
        let (replies_tx, replies_rx) = mpsc::channel(4096);
        let (writer, writer_task) = TelemetryWriter::start(
            store.clone(),
            bus.clone(),
            replies_tx,
            config.writer.clone(),
        );
        let (status, status_task) = StatusTracker::start(store.clone(), bus.clone());
        // Devices left "online" by a crash are offline until they reconnect.
        let stale = store
            .mark_all_offline("node_restart", crate::now_ms())
            .await?;
        if stale > 0 {
            tracing::info!(devices = stale, "marked devices offline after restart");
        }
        let plane = Arc::new(DevicePlane {
            authorizer: authorizer(registry.clone()),
            registry,
            store,
            bus,
            config,
            writer,
            status,
            tokens: TokenTable::default(),
            codecs: Default::default(),
            broker: OnceLock::new(),
            pending: DashMap::new(),
            replies_rx: parking_lot::Mutex::new(Some(replies_rx)),
            next_id: AtomicU64::new(
                // Unique across restarts without coordination: start from the clock.
                (crate::now_ms() as u64).saturating_mul(1000),
            ),
        });
        Ok((
            plane,
            PlaneTasks {
                writer: writer_task,
                status: status_task,
            },
        ))
    }

    /// Connects the plane to the broker that serves its devices (they refer to each other).
    pub fn attach_broker(
        self: &Arc<Self>,
        broker: Broker<PlaneHooks>,
    ) -> tokio::task::JoinHandle<()> {
        let _ = self.broker.set(broker.clone());
        let mut rx = self
            .replies_rx
            .lock()
            .take()
            .expect("attach_broker is called once");
        tokio::spawn(async move {
            while let Some((topic, payload)) = rx.recv().await {
                broker
                    .publish(&topic, payload, QoS::AtMostOnce, false)
                    .await;
            }
        })
    }

    pub fn broker(&self) -> &Broker<PlaneHooks> {
        self.broker.get().expect("the broker is attached at start")
    }

    /// A fresh numeric message id (Alink ids are decimal strings).
    pub fn next_message_id(&self) -> String {
        self.next_id.fetch_add(1, Ordering::Relaxed).to_string()
    }

    /// Publishes to a device's topic; returns how many sessions received it. `class` names
    /// the kind of downlink for the per-class metrics.
    pub(crate) async fn send_to_device(
        &self,
        topic: &str,
        payload: Bytes,
        qos: QoS,
        class: &'static str,
    ) -> usize {
        metrics::counter!("lotus_downlink_messages_total", "class" => class).increment(1);
        self.broker().publish(topic, payload, qos, false).await
    }

    pub fn is_online(&self, device: &DeviceId) -> bool {
        self.status.is_online(device)
    }

    /// Closes a device's connections and forgets its tokens (device deleted or disabled,
    /// secret revoked).
    pub fn kick(&self, device: &DeviceId, reason: DisconnectReason) -> usize {
        self.tokens.revoke(device);
        self.end_sub_device_session(device, reason.as_str());
        self.broker()
            .disconnect(&Principal::Device(device.clone()), reason)
    }

    /// Waits until everything accepted so far is durable (graceful shutdown).
    pub async fn flush(&self) {
        self.writer.flush().await;
        self.status.flush().await;
    }

    pub(crate) fn timeout_ms(d: Duration) -> u64 {
        d.as_millis() as u64
    }
}
