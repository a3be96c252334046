//! The event operations center at run time: rules on the bus, alarms, events, disposal
//! workflows, tasks, messages and notifications.
//!
//! The logic lives in I/O-free crates — `lotus-rules` (SQL statements, scenes, schedules),
//! `lotus-workflow` (event types, classification, workflow state machines) and `lotus-notify`
//! (templates, SMTP) — and this crate runs it against storage and the bus:
//!
//! ```text
//! bus device.> ─► message::RuleMessage ─► engine::RuleEngine::evaluate ─► bounded queue
//!   ─► action workers ─► action::Executor (alarm, event, webhook, republish, device, notify)
//!         └─ failure ─► outbox (retry with back-off, then dead letter)
//! event action / API / plugin ─► center::EventCenter::submit ─► center_writer (many events per
//!   transaction) ─► classify ─► workflow start ─► effects: tasks, in-app messages, event state,
//!   timeline ─► commit ─► answer each submitter
//! alarm raised/cleared, event created/closed ─► platform::dispatch ─► platform rules (to the
//!   same queue), event-handler plugins (their actions run through the executor), app plugins
//! every second: scene holds and cron schedules (engine.tick), workflow deadlines (center.tick),
//!   the outbox, notification deliveries, rule counters
//! ```

pub mod action;
pub mod center;
mod center_writer;
pub mod delivery;
pub mod engine;
pub mod inbox;
pub mod message;
pub mod platform;
pub mod recipient;
pub mod rule;

use std::sync::Arc;
use std::time::Duration;

use lotus_bus::{Bus, Received};
use lotus_storage::Store;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use action::{DeviceCommands, Executor};
pub use center::{CenterError, EventCenter, Submission, Submitted};
pub use delivery::ChannelPlugins;
pub use engine::RuleEngine;
pub use message::RuleMessage;
pub use platform::{
    Listener, ListenerWorld, NoPlugins, PlatformEvent, PluginAction, RuleTrigger, WorldPlugins,
};
pub use rule::{RuleDefinition, RuleError, check_rule_id, compile};

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Matches waiting for their actions. When full, the bus subscriber waits: evaluation slows
/// rather than dropping what rules decided (the bus counts what a slow subscriber misses).
const FIRING_QUEUE: usize = 10_000;
/// Concurrent action workers (actions of one firing run in order). An `event` action waits
/// for the event center's group commit; with many workers waiting on the same commit, one
/// commit carries many events (4 workers gave about 350 events/s, 64 about 3,500).
const ACTION_WORKERS: usize = 64;

/// Tunables of the operations center (`[operations]` in the node's configuration).
#[derive(Debug, Clone, Copy)]
pub struct OperationsConfig {
    /// The first retry of a failed action or notification waits this long; each later one
    /// twice as long as the one before.
    pub retry_base: Duration,
}

impl Default for OperationsConfig {
    fn default() -> Self {
        OperationsConfig {
            retry_base: Duration::from_secs(2),
        }
    }
}

/// What the operations center works with besides storage and the bus.
pub struct Services {
    pub devices: Arc<dyn DeviceCommands>,
    pub channels: Arc<dyn ChannelPlugins>,
    pub plugins: Arc<dyn WorldPlugins>,
    /// The event center and its platform events (`EventCenter::announcing`), made before the
    /// operations center so plugins can raise events through the same center.
    pub center: (
        Arc<EventCenter>,
        mpsc::UnboundedReceiver<platform::PlatformEvent>,
    ),
}

/// The running operations center.
#[derive(Clone)]
pub struct Operations {
    pub store: Store,
    pub engine: Arc<RuleEngine>,
    pub center: Arc<EventCenter>,
    pub executor: Arc<Executor>,
}

impl Operations {
    /// Loads the rules and starts the bus subscriber, the action workers and the ticker.
    pub async fn start(
        store: Store,
        bus: Arc<dyn Bus>,
        services: Services,
        config: OperationsConfig,
    ) -> Result<(Operations, Vec<JoinHandle<()>>), lotus_storage::StorageError> {
        let Services {
            devices,
            channels,
            plugins,
            center: (center, platform_events),
        } = services;
        let engine = RuleEngine::new();
        let loaded = engine.reload(&store).await?;
        tracing::info!(rules = loaded, "rule engine started");
        let executor = Arc::new(Executor::new(
            store.clone(),
            center.clone(),
            devices,
            plugins.clone(),
            config.retry_base,
        ));
        let ops = Operations {
            store: store.clone(),
            engine: engine.clone(),
            center,
            executor: executor.clone(),
        };
        let (tx, rx) = mpsc::channel::<engine::Firing>(FIRING_QUEUE);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let mut tasks = vec![tokio::spawn(platform::dispatch(
            platform_events,
            plugins,
            executor.clone(),
            engine.clone(),
            tx.clone(),
        ))];

        let mut sub = bus.subscribe("device.>");
        let (eng, txb) = (engine.clone(), tx.clone());
        tasks.push(tokio::spawn(async move {
            let mut firings = Vec::new();
            loop {
                match sub.recv().await {
                    Received::Message(env) => {
                        let Some(msg) = RuleMessage::from_envelope(&env) else {
                            continue;
                        };
                        eng.evaluate(&msg, now_ms(), &mut firings);
                        for f in firings.drain(..) {
                            eng.count(&f.rule.id, f.matched(), 0, 0, None);
                            if txb.send(f).await.is_err() {
                                return;
                            }
                        }
                    }
                    Received::Lagged(n) => {
                        tracing::warn!(missed = n, "rule engine fell behind the bus");
                    }
                    Received::Closed => return,
                }
            }
        }));

        for _ in 0..ACTION_WORKERS {
            let (rx, exec, eng) = (rx.clone(), executor.clone(), engine.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let Some(f) = rx.lock().await.recv().await else {
                        return;
                    };
                    let (ok, failed, error) = if f.left {
                        clear_scene_alarms(&exec, &f).await
                    } else {
                        eng.act(&exec, &f).await
                    };
                    eng.count(&f.rule.id, 0, ok, failed, error);
                }
            }));
        }

        let (eng, ops2) = (engine.clone(), ops.clone());
        tasks.push(tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_secs(1));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut firings = Vec::new();
            let mut ticks = 0u64;
            loop {
                interval.tick().await;
                ticks += 1;
                if ticks.is_multiple_of(engine::SCOPE_REFRESH_TICKS)
                    && let Err(e) = eng.refresh_scopes(&ops2.store).await
                {
                    tracing::warn!(error = %e, "scoped scene members not refreshed");
                }
                let now = now_ms();
                eng.tick(now, &mut firings);
                for f in firings.drain(..) {
                    eng.count(&f.rule.id, f.matched(), 0, 0, None);
                    if tx.send(f).await.is_err() {
                        return;
                    }
                }
                if let Err(e) = ops2.center.tick(now).await {
                    tracing::warn!(error = %e, "workflow deadlines not checked");
                }
                ops2.executor.drain_outbox(now).await;
                delivery::drain(&ops2.store, channels.as_ref(), config.retry_base, now).await;
                eng.flush_counters(&ops2.store).await;
            }
        }));
        Ok((ops, tasks))
    }

    /// Re-reads the rules after an API change.
    pub async fn reload_rules(&self) -> Result<usize, lotus_storage::StorageError> {
        self.engine.reload(&self.store).await
    }
}

async fn clear_scene_alarms(exec: &Executor, f: &engine::Firing) -> (u64, u64, Option<String>) {
    let device = &f.context["device"];
    let (Some(pk), Some(dn)) = (device["productKey"].as_str(), device["deviceName"].as_str())
    else {
        return (0, 0, None);
    };
    let (mut ok, mut failed, mut error) = (0, 0, None);
    for alarm_type in engine::raised_alarm_types(&f.rule) {
        match exec
            .store
            .clear_open_alarm(
                pk,
                dn,
                &alarm_type,
                &format!("rule:{}", f.rule.id),
                now_ms(),
            )
            .await
        {
            Ok(_) => ok += 1,
            Err(e) => {
                failed += 1;
                error = Some(format!("clear alarm {alarm_type}: {e}"));
            }
        }
    }
    (ok, failed, error)
}
