//! The telemetry writer: property values and device events are group-committed.
//!
//! Connections hand items to a bounded queue; one task takes whatever has accumulated (up to a
//! batch limit), writes it in one transaction, and only then acknowledges: the device's PUBACK,
//! its `_reply` and the bus message all mean "stored". A full queue makes the sender wait, which
//! stops the connection reading — back-pressure reaches the device instead of a silent drop.
//! A failed commit is retried with back-off; nothing is acknowledged until it succeeds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lotus_bus::{Bus, Envelope};
use lotus_storage::{EventRecord, PropertyRecord, Store, TelemetryBatch};
use tokio::sync::{mpsc, oneshot};

/// One uplink's worth of writes and what to do once they are durable.
#[derive(Default)]
pub struct WriteItem {
    pub properties: Vec<PropertyRecord>,
    pub events: Vec<EventRecord>,
    /// Resolves the broker's PUBACK.
    pub ack: Option<oneshot::Sender<Result<(), String>>>,
    /// The `_reply` to publish to the device after commit.
    pub reply: Option<(String, Bytes)>,
    /// What to announce on the bus after commit.
    pub announce: Vec<Envelope>,
}

enum Command {
    Write(WriteItem),
    /// Everything queued before this is committed when it is answered.
    Flush(oneshot::Sender<()>),
}

/// Sends replies once their data is committed (the broker lives above this crate's writer).
pub type ReplySink = mpsc::Sender<(String, Bytes)>;

#[derive(Clone)]
pub struct TelemetryWriter {
    tx: mpsc::Sender<Command>,
}

#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub queue_capacity: usize,
    /// Rows (properties + events) per transaction.
    pub max_batch_rows: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            queue_capacity: 20_000,
            max_batch_rows: 16_000,
        }
    }
}

impl TelemetryWriter {
    pub fn start(
        store: Store,
        bus: Arc<dyn Bus>,
        replies: ReplySink,
        config: WriterConfig,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let task = tokio::spawn(run(store, bus, replies, rx, config));
        (TelemetryWriter { tx }, task)
    }

    /// Queues an item, waiting while the queue is full.
    pub async fn write(&self, item: WriteItem) -> Result<(), String> {
        metrics::gauge!("lotus_writer_queue_depth")
            .set((self.tx.max_capacity() - self.tx.capacity()) as f64);
        self.tx
            .send(Command::Write(item))
            .await
            .map_err(|_| "the telemetry writer has stopped".to_string())
    }

    /// Returns once everything queued so far is committed.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

async fn run(
    store: Store,
    bus: Arc<dyn Bus>,
    replies: ReplySink,
    mut rx: mpsc::Receiver<Command>,
    config: WriterConfig,
) {
    let mut items: Vec<WriteItem> = Vec::new();
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut rows = 0;
        let mut take = |cmd: Command, items: &mut Vec<WriteItem>, rows: &mut usize| match cmd {
            Command::Write(item) => {
                *rows += item.properties.len() + item.events.len();
                items.push(item);
            }
            Command::Flush(done) => flushes.push(done),
        };
        take(first, &mut items, &mut rows);
        while rows < config.max_batch_rows {
            match rx.try_recv() {
                Ok(cmd) => take(cmd, &mut items, &mut rows),
                Err(_) => break,
            }
        }
        commit(&store, &mut items).await;
        for item in items.drain(..) {
            if let Some(ack) = item.ack {
                let _ = ack.send(Ok(()));
            }
            for env in item.announce {
                bus.publish(env);
            }
            if let Some(reply) = item.reply {
                // The replier only stops at shutdown, after the broker: nothing to answer then.
                let _ = replies.send(reply).await;
            }
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Writes the batch, retrying until it succeeds: acknowledging before that would lose data.
async fn commit(store: &Store, items: &mut [WriteItem]) {
    let batch = TelemetryBatch {
        properties: items
            .iter_mut()
            .flat_map(|i| i.properties.drain(..))
            .collect(),
        events: items.iter_mut().flat_map(|i| i.events.drain(..)).collect(),
    };
    if batch.properties.is_empty() && batch.events.is_empty() {
        return;
    }
    metrics::histogram!("lotus_writer_batch_rows")
        .record((batch.properties.len() + batch.events.len()) as f64);
    let mut backoff = Duration::from_millis(50);
    loop {
        let started = Instant::now();
        match store.write_batch(&batch).await {
            Ok(()) => {
                metrics::histogram!("lotus_writer_commit_seconds")
                    .record(started.elapsed().as_secs_f64());
                metrics::counter!("lotus_writer_rows_total")
                    .increment((batch.properties.len() + batch.events.len()) as u64);
                return;
            }
            Err(e) => {
                metrics::counter!("lotus_writer_commit_failures_total").increment(1);
                tracing::error!(error = %e, rows = batch.properties.len() + batch.events.len(), retry_in_ms = backoff.as_millis() as u64, "telemetry commit failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
