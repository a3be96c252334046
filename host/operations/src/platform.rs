//! Platform events (alarm raised or cleared, event created or closed) and what reacts to them:
//! rules with a platform trigger (or a `rule` plugin asking for events) fire; `event-handler`
//! plugins answer with actions, which run like a rule's (retried, then dead-lettered), and `app`
//! plugins are told. Rules reach `app` plugins through their `app` action.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::action::Executor;
use crate::engine::{Firing, RuleEngine};
use crate::rule::{ActionSpec, compile_action};

/// Plugin or rule actions that raise platform events that reach plugins or rules, which act
/// again …: a chain stops at this depth, so two handlers (or two platform rules) answering each
/// other cannot loop.
pub const MAX_CHAIN: u8 = 3;

/// Something that happened on the platform.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlatformEvent {
    /// The event's number, or the alarm's id.
    pub id: String,
    /// `alarm.raised`, `alarm.cleared`, `event.created`, `event.closed`.
    pub kind: String,
    /// The event type's code, or the alarm's type.
    pub event_type: String,
    /// 1 (most severe) to 4.
    pub severity: u8,
    /// `(product key, device name)` when it concerns a device.
    pub device: Option<(String, String)>,
    /// The event's fields, or the alarm's details.
    pub fields: Value,
    pub at_ms: i64,
    /// The plugin whose action led to it, and how many plugin actions deep that chain is.
    pub caused_by: Option<(String, u8)>,
}

impl PlatformEvent {
    /// The cause recorded in an event's or action's `source`/`context` as `cause`.
    pub fn cause_of(value: &Value) -> Option<(String, u8)> {
        let cause = value.get("cause")?;
        let plugin = cause.get("plugin")?.as_str()?.to_string();
        let depth = cause.get("depth").and_then(Value::as_u64).unwrap_or(1);
        Some((plugin, depth.min(u64::from(u8::MAX)) as u8))
    }
}

/// The plugin worlds a platform event can reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerWorld {
    EventHandler,
    App,
}

/// A running plugin that wants a platform event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub plugin: String,
    pub world: ListenerWorld,
}

/// One action a plugin returned, checked against its grants, with the device it concerns.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginAction {
    pub spec: ActionSpec,
    /// The device the action names (alarm, event), for its scope and context.
    pub device: Option<(String, String)>,
}

/// What a `rule` plugin is called with (the WIT `trigger`).
#[derive(Debug, Clone, PartialEq)]
pub enum RuleTrigger {
    /// A property or event post: `method` is `thing.event.property.post` or
    /// `thing.event.{identifier}.post`, `params` its Alink params.
    Message {
        product_key: String,
        device_name: String,
        topic: String,
        method: String,
        params: Value,
        at_ms: i64,
    },
    Status {
        product_key: String,
        device_name: String,
        online: bool,
        reason: String,
        at_ms: i64,
    },
    Event(PlatformEvent),
    /// A schedule tick, named after the rule.
    Timer(String),
}

/// What the node's plugin runtime offers the operations center.
#[async_trait]
pub trait WorldPlugins: Send + Sync + 'static {
    /// Calls a `rule` plugin; its actions, each already checked against its grants.
    async fn evaluate(
        &self,
        plugin: &str,
        _trigger: &RuleTrigger,
    ) -> Result<Vec<PluginAction>, String> {
        Err(format!("plugin `{plugin}` is not a running rule plugin"))
    }
    /// The running `event-handler` and `app` plugins that want `event`: those bound to the
    /// device's product, or to no product.
    fn listeners(&self, event: &PlatformEvent) -> Vec<Listener>;
    /// Calls an event handler; its actions, each already checked against its grants.
    async fn handle(
        &self,
        plugin: &str,
        event: &PlatformEvent,
    ) -> Result<Vec<PluginAction>, String>;
    /// Tells an app plugin about a platform event.
    async fn app_event(&self, plugin: &str, event: &PlatformEvent) -> Result<(), String>;
    /// Hands an app plugin the device message a rule matched (`context`: `device`, `data`,
    /// `topic`, `at`).
    async fn app_message(&self, plugin: &str, context: &Value) -> Result<(), String>;
}

/// A node without plugins.
pub struct NoPlugins;

#[async_trait]
impl WorldPlugins for NoPlugins {
    fn listeners(&self, _: &PlatformEvent) -> Vec<Listener> {
        Vec::new()
    }
    async fn handle(&self, plugin: &str, _: &PlatformEvent) -> Result<Vec<PluginAction>, String> {
        Err(format!("plugin `{plugin}` is not running"))
    }
    async fn app_event(&self, plugin: &str, _: &PlatformEvent) -> Result<(), String> {
        Err(format!("plugin `{plugin}` is not running"))
    }
    async fn app_message(&self, plugin: &str, _: &Value) -> Result<(), String> {
        Err(format!("plugin `{plugin}` is not running"))
    }
}

/// Where platform events are announced. Unbounded on purpose: handlers' actions announce
/// events themselves, so a bounded queue could wait on its own consumer; the chain limit and
/// the rate events are created at bound it in practice.
pub type Announcer = mpsc::UnboundedSender<PlatformEvent>;

/// Sends every announced platform event to the rules and then the plugins that want it, in
/// order. Rules' firings go to the action workers' queue (`firings`).
pub async fn dispatch(
    mut events: mpsc::UnboundedReceiver<PlatformEvent>,
    plugins: Arc<dyn WorldPlugins>,
    executor: Arc<Executor>,
    engine: Arc<RuleEngine>,
    firings: mpsc::Sender<Firing>,
) {
    let mut fired = Vec::new();
    while let Some(event) = events.recv().await {
        engine.evaluate_event(&event, &mut fired);
        for f in fired.drain(..) {
            engine.count(&f.rule.id, f.matched(), 0, 0, None);
            if firings.send(f).await.is_err() {
                return;
            }
        }
        let depth = event.caused_by.as_ref().map_or(0, |(_, d)| *d);
        for listener in plugins.listeners(&event) {
            // A plugin is not told about what it caused itself.
            if event
                .caused_by
                .as_ref()
                .is_some_and(|(p, _)| *p == listener.plugin)
            {
                continue;
            }
            if depth >= MAX_CHAIN {
                tracing::warn!(plugin = %listener.plugin, kind = %event.kind, id = %event.id,
                    "platform event not passed on: plugin actions already {depth} deep");
                continue;
            }
            let result = match listener.world {
                ListenerWorld::App => plugins.app_event(&listener.plugin, &event).await,
                ListenerWorld::EventHandler => {
                    match plugins.handle(&listener.plugin, &event).await {
                        Ok(actions) => {
                            run_actions(&executor, &listener.plugin, &event, depth, actions).await;
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            if let Err(e) = result {
                metrics::counter!("lotus_platform_event_failures_total", "plugin" => listener.plugin.clone())
                    .increment(1);
                tracing::warn!(plugin = %listener.plugin, kind = %event.kind, id = %event.id,
                    error = %e, "plugin did not take a platform event");
            }
        }
    }
}

/// Runs a handler's actions through the executor, so failures are retried and dead-lettered
/// under `plugin:<id>` like a rule's.
async fn run_actions(
    executor: &Executor,
    plugin: &str,
    event: &PlatformEvent,
    depth: u8,
    actions: Vec<PluginAction>,
) {
    let source = format!("plugin:{plugin}");
    for (i, action) in actions.into_iter().enumerate() {
        let compiled = match compile_action(&source, i, action.spec) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(plugin, error = %e, "plugin returned an action that cannot run");
                metrics::counter!("lotus_platform_event_failures_total", "plugin" => plugin.to_string())
                    .increment(1);
                continue;
            }
        };
        let device = action.device.as_ref().or(event.device.as_ref());
        let context = json!({
            "rule": {"id": source},
            "device": device.map(|(pk, dn)| json!({"productKey": pk, "deviceName": dn})),
            "data": event.fields,
            "event": event,
            "at": crate::now_ms(),
            "cause": {"plugin": plugin, "depth": depth + 1},
        });
        let (_, failed, error) = executor
            .fire(&source, std::slice::from_ref(&compiled), &context)
            .await;
        if failed > 0 {
            tracing::warn!(plugin, error = ?error, "a plugin action failed; it is in the outbox");
        }
    }
}

/// Text a plugin returned, for a field that is a template: rendered as itself.
pub fn literal(text: &str) -> String {
    if text.contains("{{") || text.contains("{%") || text.contains("{#") {
        format!("{{% raw %}}{text}{{% endraw %}}")
    } else {
        text.to_string()
    }
}
