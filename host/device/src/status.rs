//! Online/offline tracking.
//!
//! A device may reconnect before its old connection is noticed as gone, so only the newest
//! connection of a device decides its status: a disconnect of an older one is ignored. Changes
//! are written in arrival order by one task (so "online" never overtakes the "offline" before
//! it) and announced on the bus after they are stored.

use std::sync::Arc;

use dashmap::DashMap;
use lotus_bus::{Bus, DeviceEvent, Envelope};
use lotus_model::authz::DeviceId;
use lotus_storage::{StorageError, Store};
use tokio::sync::{mpsc, oneshot};

enum Change {
    Status {
        device: DeviceId,
        online: bool,
        reason: String,
        at: i64,
    },
    Flush(oneshot::Sender<()>),
}

pub struct StatusTracker {
    /// Device → id of its current connection.
    current: DashMap<DeviceId, u64>,
    tx: mpsc::UnboundedSender<Change>,
}

impl StatusTracker {
    pub fn start(store: Store, bus: Arc<dyn Bus>) -> (Self, tokio::task::JoinHandle<()>) {
        // Unbounded: one entry per connect/disconnect, already bounded by the connection limit,
        // and a disconnect must never wait.
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Some(change) = rx.recv().await {
                match change {
                    Change::Status {
                        device,
                        online,
                        reason,
                        at,
                    } => {
                        let mut attempt = 0;
                        loop {
                            match store
                                .record_status(
                                    &device.product_key,
                                    &device.device_name,
                                    online,
                                    &reason,
                                    at,
                                )
                                .await
                            {
                                Ok(()) => break,
                                // The database is unreachable: keep the change until it is back.
                                Err(e @ StorageError::Database(_)) => {
                                    attempt += 1;
                                    tracing::error!(device = %device, error = %e, attempt, "could not store a status change; retrying");
                                    tokio::time::sleep(std::time::Duration::from_millis(
                                        200 * attempt.min(25),
                                    ))
                                    .await;
                                }
                                Err(e) => {
                                    tracing::warn!(device = %device, error = %e, "status change not stored");
                                    break;
                                }
                            }
                        }
                        bus.publish(Envelope::device(
                            &device.product_key,
                            &device.device_name,
                            at,
                            DeviceEvent::Status { online, reason },
                        ));
                    }
                    Change::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        (
            StatusTracker {
                current: DashMap::new(),
                tx,
            },
            task,
        )
    }

    pub fn connected(&self, device: &DeviceId, connection_id: u64) {
        self.current.insert(device.clone(), connection_id);
        metrics::gauge!("lotus_devices_online").set(self.current.len() as f64);
        let _ = self.tx.send(Change::Status {
            device: device.clone(),
            online: true,
            reason: "connected".into(),
            at: crate::now_ms(),
        });
    }

    pub fn disconnected(&self, device: &DeviceId, connection_id: u64, reason: &str) {
        if self
            .current
            .remove_if(device, |_, current| *current == connection_id)
            .is_none()
        {
            return;
        }
        metrics::gauge!("lotus_devices_online").set(self.current.len() as f64);
        let _ = self.tx.send(Change::Status {
            device: device.clone(),
            online: false,
            reason: reason.to_string(),
            at: crate::now_ms(),
        });
    }

    pub fn is_online(&self, device: &DeviceId) -> bool {
        self.current.contains_key(device)
    }

    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Change::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}
