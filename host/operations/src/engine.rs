//! The rule engine: the enabled rules in memory, evaluated against every device message on the
//! bus and every platform event; matches go to a bounded queue the action workers drain, so a
//! slow webhook never slows evaluation. A rule decided by a `rule` plugin goes to the queue for
//! each input it wants, and the worker calls the plugin. Counters are kept in memory and
//! written to storage once a second.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use lotus_rules::{RuleInput, SceneTransition};
use lotus_storage::{RuleStatsDelta, Store};
use parking_lot::{Mutex, RwLock};
use serde_json::{Value, json};

use crate::action::Executor;
use crate::message::RuleMessage;
use crate::platform::{MAX_CHAIN, PlatformEvent, RuleTrigger};
use crate::rule::{ActionSpec, CompiledRule, CompiledTrigger, compile, compile_action};

/// A rule that fired, with what it matched.
pub struct Firing {
    pub rule: Arc<CompiledRule>,
    pub context: Value,
    /// A scene episode ended: clear the alarms the rule raised instead of running the actions.
    pub left: bool,
    /// For a rule a plugin decides: what to call the plugin with. Whether it matched is the
    /// plugin's answer.
    pub trigger: Option<RuleTrigger>,
}

impl Firing {
    /// How many matches the firing counts as when queued: a plugin's input counts only when
    /// the plugin answers with actions.
    pub fn matched(&self) -> u64 {
        u64::from(self.trigger.is_none())
    }
}

/// How often the members of scoped scenes are re-read from storage, in engine ticks (seconds):
/// devices move between regions and groups while a rule runs.
pub const SCOPE_REFRESH_TICKS: u64 = 30;

/// Devices read per query when refreshing a scoped scene's members.
const SCOPE_PAGE: i64 = 1_000;

#[derive(Default, Clone, Copy)]
struct Counters {
    matched: u64,
    ok: u64,
    failed: u64,
}

pub struct RuleEngine {
    rules: RwLock<Arc<Vec<Arc<CompiledRule>>>>,
    counters: Mutex<HashMap<String, (Counters, Option<String>)>>,
    /// Next firing time of each schedule rule, by rule id and version.
    schedules: Mutex<HashMap<(String, i64), i64>>,
    /// Device messages evaluated since start (for metrics and benchmarks).
    evaluated: AtomicU64,
}

impl Default for RuleEngine {
    fn default() -> Self {
        RuleEngine {
            rules: RwLock::new(Arc::new(Vec::new())),
            counters: Mutex::new(HashMap::new()),
            schedules: Mutex::new(HashMap::new()),
            evaluated: AtomicU64::new(0),
        }
    }
}

/// The template context of a match.
pub fn context(rule: &CompiledRule, device: Option<(&str, &str)>, data: Value, at: i64) -> Value {
    let device = match device {
        Some((pk, dn)) => json!({"productKey": pk, "deviceName": dn}),
        None => Value::Null,
    };
    json!({
        "rule": {"id": rule.id, "name": rule.name, "version": rule.version, "region": rule.region, "org": rule.org},
        "device": device,
        "data": data,
        "at": at,
    })
}

impl RuleEngine {
    pub fn new() -> Arc<RuleEngine> {
        Arc::new(RuleEngine::default())
    }

    /// Loads the enabled rules from storage. A stored rule that no longer compiles is skipped
    /// and its error recorded as the rule's last error. Scene state of unchanged rules is kept.
    pub async fn reload(&self, store: &Store) -> Result<usize, lotus_storage::StorageError> {
        let rows = store.list_rules().await?;
        let current = self.rules.read().clone();
        let mut next = Vec::new();
        for row in rows.into_iter().filter(|r| r.enabled) {
            if let Some(same) = current
                .iter()
                .find(|r| r.id == row.id && r.version == row.version)
            {
                next.push(same.clone());
                continue;
            }
            match compile(
                &row.id,
                &row.name,
                row.version,
                &row.org,
                &row.region,
                &row.definition,
            ) {
                Ok(rule) => next.push(Arc::new(rule)),
                Err(e) => {
                    tracing::error!(rule = %row.id, error = %e, "stored rule does not compile; it is not running");
                    let msg = format!("does not compile: {e}");
                    let _ = store
                        .add_rule_stats(
                            &row.id,
                            &RuleStatsDelta {
                                matched: 0,
                                actions_ok: 0,
                                actions_failed: 0,
                                last_error: Some(&msg),
                                at: crate::now_ms(),
                            },
                        )
                        .await;
                }
            }
        }
        let n = next.len();
        *self.rules.write() = Arc::new(next);
        self.refresh_scopes(store).await?;
        Ok(n)
    }

    /// Re-reads which devices of their product the scoped scenes watch.
    pub async fn refresh_scopes(&self, store: &Store) -> Result<(), lotus_storage::StorageError> {
        let rules = self.rules.read().clone();
        for rule in rules.iter() {
            let CompiledTrigger::Scene {
                product_key,
                scope: Some(scoped),
                ..
            } = &rule.trigger
            else {
                continue;
            };
            let Some(product) = store.get_product(product_key).await? else {
                scoped.set_members(HashSet::new());
                continue;
            };
            let mut members = HashSet::new();
            let filter = lotus_storage::DeviceFilter {
                product_key: Some(product_key.clone()),
                ..Default::default()
            };
            let mut offset = 0;
            loop {
                let page = lotus_storage::Page {
                    offset,
                    limit: SCOPE_PAGE,
                };
                let (rows, _) = store.list_devices(&filter, page).await?;
                for d in &rows {
                    let region = d.region.as_deref().unwrap_or(&product.scope.region);
                    if scoped.scope.covers(region, &d.tags) {
                        members.insert(d.device_name.clone());
                    }
                }
                if (rows.len() as i64) < SCOPE_PAGE {
                    break;
                }
                offset += SCOPE_PAGE;
            }
            scoped.set_members(members);
        }
        Ok(())
    }

    pub fn rules(&self) -> Arc<Vec<Arc<CompiledRule>>> {
        self.rules.read().clone()
    }

    /// Device messages evaluated since start.
    pub fn evaluated(&self) -> u64 {
        self.evaluated.load(Ordering::Relaxed)
    }

    /// Evaluates every rule against one device message.
    pub fn evaluate(&self, msg: &RuleMessage, now: i64, out: &mut Vec<Firing>) {
        self.evaluated.fetch_add(1, Ordering::Relaxed);
        let rules = self.rules.read().clone();
        let property_post = msg.topic.ends_with("/thing/event/property/post");
        for rule in rules.iter() {
            match &rule.trigger {
                CompiledTrigger::Sql(statement) => {
                    if !statement.matches_topic(&msg.topic) {
                        continue;
                    }
                    let input = RuleInput {
                        topic: &msg.topic,
                        product_key: &msg.product_key,
                        device_name: &msg.device_name,
                        message_id: None,
                        payload: &msg.payload,
                        timestamp_ms: msg.at,
                        now_ms: now,
                    };
                    if let Some(data) = statement.evaluate(&input) {
                        out.push(Firing {
                            context: context(
                                rule,
                                Some((&msg.product_key, &msg.device_name)),
                                Value::Object(data),
                                msg.at,
                            ),
                            rule: rule.clone(),
                            left: false,
                            trigger: None,
                        });
                    }
                }
                CompiledTrigger::Scene {
                    product_key,
                    scope,
                    tracker,
                } => {
                    if !property_post || *product_key != msg.product_key {
                        continue;
                    }
                    if scope
                        .as_ref()
                        .is_some_and(|s| !s.contains(&msg.device_name))
                    {
                        continue;
                    }
                    let transition =
                        tracker
                            .lock()
                            .observe_payload(&msg.device_name, &msg.payload, msg.at);
                    if let Some(t) = transition {
                        out.push(scene_firing(rule, product_key, t, &msg.payload));
                    }
                }
                CompiledTrigger::Offline {
                    product_key,
                    tracker,
                } => {
                    if *product_key != msg.product_key || !msg.topic.starts_with("/as/mqtt/status/")
                    {
                        continue;
                    }
                    let offline = match msg.payload["status"].as_str() {
                        Some("offline") => 1.0,
                        Some("online") => 0.0,
                        _ => continue,
                    };
                    let transition =
                        tracker
                            .lock()
                            .observe(&msg.device_name, Some(offline), msg.at);
                    if let Some(t) = transition {
                        out.push(scene_firing(rule, product_key, t, &msg.payload));
                    }
                }
                CompiledTrigger::Plugin { product_key, .. } => {
                    if product_key
                        .as_ref()
                        .is_some_and(|pk| *pk != msg.product_key)
                    {
                        continue;
                    }
                    let Some(trigger) = plugin_input(msg) else {
                        continue;
                    };
                    let mut ctx = context(
                        rule,
                        Some((&msg.product_key, &msg.device_name)),
                        msg.payload["params"].clone(),
                        msg.at,
                    );
                    ctx["topic"] = Value::String(msg.topic.clone());
                    out.push(Firing {
                        context: ctx,
                        rule: rule.clone(),
                        left: false,
                        trigger: Some(trigger),
                    });
                }
                CompiledTrigger::Schedule(_) | CompiledTrigger::Platform(_) => {}
            }
        }
    }

    /// Every rule that wants this platform event. What rules do because of a platform event
    /// carries the cause (`rule:<id>` and the chain depth), so a rule is not triggered by what
    /// it caused itself and a chain of rules and plugins answering each other stops at
    /// [`MAX_CHAIN`].
    pub fn evaluate_event(&self, event: &PlatformEvent, out: &mut Vec<Firing>) {
        let depth = event.caused_by.as_ref().map_or(0, |(_, d)| *d);
        let rules = self.rules.read().clone();
        for rule in rules.iter() {
            let (filter, plugin) = match &rule.trigger {
                CompiledTrigger::Platform(filter) => (filter, false),
                CompiledTrigger::Plugin {
                    events: Some(filter),
                    ..
                } => (filter, true),
                _ => continue,
            };
            if !filter.matches(event) {
                continue;
            }
            let source = format!("rule:{}", rule.id);
            if event.caused_by.as_ref().is_some_and(|(p, _)| *p == source) {
                continue;
            }
            if depth >= MAX_CHAIN {
                tracing::warn!(rule = %rule.id, kind = %event.kind, id = %event.id,
                    "platform event not passed to the rule: actions already {depth} deep");
                continue;
            }
            let device = event
                .device
                .as_ref()
                .map(|(pk, dn)| (pk.as_str(), dn.as_str()));
            let mut ctx = context(rule, device, event.fields.clone(), event.at_ms);
            ctx["event"] = serde_json::to_value(event).unwrap_or(Value::Null);
            ctx["cause"] = json!({"plugin": source, "depth": depth + 1});
            out.push(Firing {
                context: ctx,
                rule: rule.clone(),
                left: false,
                trigger: plugin.then(|| RuleTrigger::Event(event.clone())),
            });
        }
    }

    /// Carries out a firing (not a scene's end): the rule's actions, or for a rule a plugin
    /// decides, the plugin's call and then the actions it returned and the rule's own. Returns
    /// (ok, failed, last error); a plugin's match is counted here.
    pub async fn act(&self, exec: &Executor, f: &Firing) -> (u64, u64, Option<String>) {
        let Some(trigger) = &f.trigger else {
            return exec.fire(&f.rule.id, &f.rule.actions, &f.context).await;
        };
        let CompiledTrigger::Plugin { plugin, .. } = &f.rule.trigger else {
            return (0, 0, None);
        };
        let answered = match exec.plugins.evaluate(plugin, trigger).await {
            Ok(actions) => actions,
            Err(e) => return (0, 1, Some(format!("plugin {plugin}: {e}"))),
        };
        if answered.is_empty() {
            return (0, 0, None);
        }
        self.count(&f.rule.id, 1, 0, 0, None);
        let (mut ok, mut failed, mut error) = (0, 0, None);
        let source = format!("plugin:{plugin}");
        for (i, action) in answered.into_iter().enumerate() {
            let compiled = match compile_action(&source, i, action.spec) {
                Ok(c) => c,
                Err(e) => {
                    failed += 1;
                    error = Some(format!(
                        "plugin {plugin} returned an action that cannot run: {e}"
                    ));
                    continue;
                }
            };
            let mut ctx = f.context.clone();
            if let Some((pk, dn)) = &action.device {
                ctx["device"] = json!({"productKey": pk, "deviceName": dn});
            }
            let (o, x, e) = exec
                .fire(&f.rule.id, std::slice::from_ref(&compiled), &ctx)
                .await;
            ok += o;
            failed += x;
            error = e.or(error);
        }
        let (o, x, e) = exec.fire(&f.rule.id, &f.rule.actions, &f.context).await;
        (ok + o, failed + x, e.or(error))
    }

    /// Scene conditions that have now held long enough, and schedules that are due.
    pub fn tick(&self, now: i64, out: &mut Vec<Firing>) {
        let rules = self.rules.read().clone();
        let mut schedules = self.schedules.lock();
        schedules.retain(|(id, v), _| rules.iter().any(|r| &r.id == id && r.version == *v));
        for rule in rules.iter() {
            match &rule.trigger {
                CompiledTrigger::Scene {
                    product_key,
                    tracker,
                    ..
                }
                | CompiledTrigger::Offline {
                    product_key,
                    tracker,
                } => {
                    for t in tracker.lock().tick(now) {
                        out.push(scene_firing(rule, product_key, t, &Value::Null));
                    }
                }
                CompiledTrigger::Schedule(schedule) => {
                    if let Some(due) = schedule_due(&mut schedules, rule, schedule, now) {
                        out.push(Firing {
                            context: context(rule, None, json!({"scheduledAt": due}), now),
                            rule: rule.clone(),
                            left: false,
                            trigger: None,
                        });
                    }
                }
                CompiledTrigger::Plugin {
                    schedule: Some(schedule),
                    ..
                } => {
                    if let Some(due) = schedule_due(&mut schedules, rule, schedule, now) {
                        out.push(Firing {
                            context: context(rule, None, json!({"scheduledAt": due}), now),
                            rule: rule.clone(),
                            left: false,
                            trigger: Some(RuleTrigger::Timer(rule.id.clone())),
                        });
                    }
                }
                CompiledTrigger::Sql(_)
                | CompiledTrigger::Platform(_)
                | CompiledTrigger::Plugin { .. } => {}
            }
        }
    }

    pub fn count(&self, rule_id: &str, matched: u64, ok: u64, failed: u64, error: Option<String>) {
        let mut counters = self.counters.lock();
        let entry = counters.entry(rule_id.to_string()).or_default();
        entry.0.matched += matched;
        entry.0.ok += ok;
        entry.0.failed += failed;
        if error.is_some() {
            entry.1 = error;
        }
    }

    /// Writes the counters gathered since the last flush.
    pub async fn flush_counters(&self, store: &Store) {
        let taken: Vec<(String, (Counters, Option<String>))> =
            self.counters.lock().drain().collect();
        let at = crate::now_ms();
        for (rule, (c, error)) in taken {
            let delta = RuleStatsDelta {
                matched: c.matched as i64,
                actions_ok: c.ok as i64,
                actions_failed: c.failed as i64,
                last_error: error.as_deref(),
                at,
            };
            if let Err(e) = store.add_rule_stats(&rule, &delta).await {
                tracing::debug!(rule, error = %e, "rule counters not written (rule deleted?)");
            }
        }
    }
}

/// When a schedule of `rule` is due at `now`, the time it was due (and the next one is noted).
fn schedule_due(
    schedules: &mut HashMap<(String, i64), i64>,
    rule: &CompiledRule,
    schedule: &lotus_rules::Schedule,
    now: i64,
) -> Option<i64> {
    let key = (rule.id.clone(), rule.version);
    let next_after = |t: i64| {
        chrono::DateTime::from_timestamp_millis(t)
            .and_then(|d| schedule.next_after(d))
            .map(|d| d.timestamp_millis())
    };
    let due = match schedules.get(&key) {
        Some(due) => *due,
        None => {
            let t = next_after(now)?;
            schedules.insert(key.clone(), t);
            t
        }
    };
    if now < due {
        return None;
    }
    match next_after(now) {
        Some(t) => schedules.insert(key, t),
        None => schedules.remove(&key),
    };
    Some(due)
}

/// What a `rule` plugin is called with for a device message: property and event posts and
/// status changes (lifecycle messages are not in the WIT trigger).
fn plugin_input(msg: &RuleMessage) -> Option<RuleTrigger> {
    if msg.topic.starts_with("/as/mqtt/status/") {
        let online = match msg.payload["status"].as_str()? {
            "online" => true,
            "offline" => false,
            _ => return None,
        };
        return Some(RuleTrigger::Status {
            product_key: msg.product_key.clone(),
            device_name: msg.device_name.clone(),
            online,
            reason: msg.payload["reason"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            at_ms: msg.at,
        });
    }
    let method = if msg.topic.ends_with("/thing/event/property/post") {
        "thing.event.property.post".to_string()
    } else if msg.topic.ends_with("/post") && msg.topic.contains("/thing/event/") {
        format!("thing.event.{}.post", msg.payload["identifier"].as_str()?)
    } else {
        return None;
    };
    // Only a message a plugin is called with pays for these copies.
    Some(RuleTrigger::Message {
        product_key: msg.product_key.clone(),
        device_name: msg.device_name.clone(),
        topic: msg.topic.clone(),
        method,
        params: msg.payload["params"].clone(),
        at_ms: msg.at,
    })
}

fn scene_firing(
    rule: &Arc<CompiledRule>,
    product_key: &str,
    t: SceneTransition,
    payload: &Value,
) -> Firing {
    match t {
        SceneTransition::Entered { device, since_ms } => {
            let value = payload["params"].clone();
            Firing {
                context: context(
                    rule,
                    Some((product_key, &device)),
                    json!({"since": since_ms, "params": value}),
                    crate::now_ms(),
                ),
                rule: rule.clone(),
                left: false,
                trigger: None,
            }
        }
        SceneTransition::Left { device, at_ms } => Firing {
            context: context(
                rule,
                Some((product_key, &device)),
                json!({"left": at_ms}),
                at_ms,
            ),
            rule: rule.clone(),
            left: true,
            trigger: None,
        },
    }
}

/// The alarm types a rule raises (cleared when a scene episode ends).
pub fn raised_alarm_types(rule: &CompiledRule) -> Vec<String> {
    rule.actions
        .iter()
        .filter_map(|a| match &a.spec {
            ActionSpec::Alarm { alarm_type, .. } => Some(alarm_type.clone()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(pk: &str, dn: &str, status: &str, at: i64) -> RuleMessage {
        RuleMessage {
            topic: format!("/as/mqtt/status/{pk}/{dn}"),
            product_key: pk.into(),
            device_name: dn.into(),
            payload: json!({"productKey": pk, "deviceName": dn, "time": at, "status": status}),
            at,
        }
    }

    #[test]
    fn an_outage_longer_than_the_limit_fires_once_and_ends_when_the_device_is_back() {
        let rule = compile(
            "lamp-offline",
            "Lamp offline for a minute",
            1,
            "",
            "/",
            &json!({"trigger": {"kind": "offline", "productKey": "pk1", "offlineForSecs": 60},
                "actions": [{"kind": "alarm", "alarmType": "offline-too-long", "level": 2}]}),
        )
        .unwrap();
        let engine = RuleEngine::default();
        *engine.rules.write() = Arc::new(vec![Arc::new(rule)]);
        let mut out = Vec::new();
        engine.evaluate(&status("pk1", "a", "offline", 1_000), 1_000, &mut out);
        engine.evaluate(&status("pk1", "b", "offline", 1_000), 1_000, &mut out);
        engine.evaluate(&status("pk2", "c", "offline", 1_000), 1_000, &mut out);
        // b is back within the limit: no alarm for it.
        engine.evaluate(&status("pk1", "b", "online", 30_000), 30_000, &mut out);
        engine.tick(60_000, &mut out);
        assert!(out.is_empty(), "nothing before the limit");
        engine.tick(61_000, &mut out);
        assert_eq!(out.len(), 1);
        assert!(!out[0].left);
        assert_eq!(out[0].context["device"]["deviceName"], "a");
        assert_eq!(out[0].context["data"]["since"], 1_000);
        out.clear();
        engine.tick(600_000, &mut out);
        assert!(out.is_empty(), "once per outage");
        engine.evaluate(&status("pk1", "a", "online", 700_000), 700_000, &mut out);
        assert_eq!(out.len(), 1);
        assert!(
            out[0].left,
            "back online ends the outage: its alarms are cleared"
        );
        assert_eq!(
            raised_alarm_types(&out[0].rule),
            vec!["offline-too-long".to_string()]
        );
    }

    #[test]
    fn offline_rules_say_what_to_fix() {
        for (definition, field) in [
            (
                json!({"kind": "offline", "productKey": "", "offlineForSecs": 60}),
                "trigger.productKey",
            ),
            (
                json!({"kind": "offline", "productKey": "pk1", "offlineForSecs": 0}),
                "trigger.offlineForSecs",
            ),
            (
                json!({"kind": "offline", "productKey": "pk1", "offlineForSecs": 700_000}),
                "trigger.offlineForSecs",
            ),
        ] {
            let e = compile(
                "r",
                "r",
                1,
                "",
                "/",
                &json!({"trigger": definition, "actions": [{"kind": "clearAlarm", "alarmType": "x"}]}),
            )
            .err()
            .unwrap();
            assert_eq!(e.field, field, "{e}");
        }
    }

    fn engine_with(id: &str, definition: Value) -> RuleEngine {
        let rule = compile(id, id, 1, "", "/", &definition).unwrap();
        let engine = RuleEngine::default();
        *engine.rules.write() = Arc::new(vec![Arc::new(rule)]);
        engine
    }

    fn alarm_raised(pk: &str, alarm_type: &str, caused_by: Option<(&str, u8)>) -> PlatformEvent {
        PlatformEvent {
            id: "17".into(),
            kind: "alarm.raised".into(),
            event_type: alarm_type.into(),
            severity: 2,
            device: Some((pk.into(), "lamp-1".into())),
            fields: json!({"message": "current 12.5 A"}),
            at_ms: 5_000,
            caused_by: caused_by.map(|(p, d)| (p.to_string(), d)),
        }
    }

    #[test]
    fn platform_events_fire_matching_rules_with_the_event_in_the_context() {
        let engine = engine_with(
            "escalate",
            json!({"trigger": {"kind": "platform", "events": ["alarm.raised"], "productKey": "pk1", "eventType": "over-current"},
                "actions": [{"kind": "notify", "channel": "inapp", "to": ["user:chen"],
                    "subject": "{{ event.eventType }} on {{ device.deviceName }} (level {{ event.severity }})"}]}),
        );
        let mut out = Vec::new();
        engine.evaluate_event(&alarm_raised("pk1", "over-current", None), &mut out);
        assert_eq!(out.len(), 1);
        let f = &out[0];
        assert!(f.trigger.is_none() && !f.left);
        assert_eq!(f.matched(), 1);
        assert_eq!(
            f.rule.actions[0].render("subject", &f.context).unwrap(),
            "over-current on lamp-1 (level 2)"
        );
        assert_eq!(f.context["data"]["message"], "current 12.5 A");
        assert_eq!(
            f.context["cause"],
            json!({"plugin": "rule:escalate", "depth": 1})
        );
        out.clear();
        // Another product, another type, another kind: not this rule's.
        engine.evaluate_event(&alarm_raised("pk2", "over-current", None), &mut out);
        engine.evaluate_event(&alarm_raised("pk1", "offline", None), &mut out);
        let mut cleared = alarm_raised("pk1", "over-current", None);
        cleared.kind = "alarm.cleared".into();
        engine.evaluate_event(&cleared, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn platform_rules_do_not_loop() {
        let engine = engine_with(
            "echo",
            json!({"trigger": {"kind": "platform", "events": ["alarm.raised", "event.created"]},
                "actions": [{"kind": "event", "eventType": "echo", "title": "echo"}]}),
        );
        let mut out = Vec::new();
        // What the rule caused itself does not trigger it again.
        engine.evaluate_event(&alarm_raised("pk1", "x", Some(("rule:echo", 1))), &mut out);
        assert!(out.is_empty());
        // Another rule's or plugin's consequence does, until the chain is MAX_CHAIN deep.
        engine.evaluate_event(&alarm_raised("pk1", "x", Some(("rule:other", 2))), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].context["cause"]["depth"], 3);
        out.clear();
        engine.evaluate_event(
            &alarm_raised("pk1", "x", Some(("plugin:relay", MAX_CHAIN))),
            &mut out,
        );
        assert!(out.is_empty(), "the chain stops at MAX_CHAIN");
        // And the cause travels on: an alarm raised by the firing names it.
        engine.evaluate_event(&alarm_raised("pk1", "x", None), &mut out);
        assert_eq!(
            PlatformEvent::cause_of(&out[0].context),
            Some(("rule:echo".to_string(), 1))
        );
    }

    #[test]
    fn platform_triggers_say_what_to_fix() {
        for (trigger, field) in [
            (json!({"kind": "platform", "events": []}), "trigger.events"),
            (
                json!({"kind": "platform", "events": ["alarm.exploded"]}),
                "trigger.events",
            ),
            (
                json!({"kind": "platform", "events": ["event.created"], "eventType": "a b"}),
                "trigger.eventType",
            ),
            (
                json!({"kind": "plugin", "plugin": "x", "events": ["nope"]}),
                "trigger.events",
            ),
            (
                json!({"kind": "plugin", "plugin": "x", "cron": "not cron"}),
                "trigger.cron",
            ),
            (json!({"kind": "plugin", "plugin": ""}), "trigger.plugin"),
        ] {
            let e = compile(
                "r",
                "r",
                1,
                "",
                "/",
                &json!({"trigger": trigger, "actions": [{"kind": "clearAlarm", "alarmType": "x"}]}),
            )
            .err()
            .unwrap();
            assert_eq!(e.field, field, "{e}");
        }
        let e = compile(
            "r",
            "r",
            1,
            "",
            "/",
            &json!({"trigger": {"kind": "sql", "sql": "SELECT * FROM 'a'"},
                "actions": [{"kind": "notify", "channel": "inapp", "to": ["user:a"], "subject": "s", "level": 5}]}),
        )
        .err()
        .unwrap();
        assert_eq!(e.field, "actions[0].level");
    }

    fn post(pk: &str, dn: &str, t: f64, at: i64) -> RuleMessage {
        RuleMessage {
            topic: format!("/sys/{pk}/{dn}/thing/event/property/post"),
            product_key: pk.into(),
            device_name: dn.into(),
            payload: json!({"params": {"t": t}}),
            at,
        }
    }

    #[test]
    fn a_plugin_rule_gets_the_messages_events_and_ticks_it_asks_for() {
        let engine = engine_with(
            "by-plugin",
            json!({"trigger": {"kind": "plugin", "plugin": "acme-threshold", "productKey": "pk1",
                "events": ["alarm.raised"], "cron": "* * * * * *"}}),
        );
        let mut out = Vec::new();
        engine.evaluate(&post("pk1", "a", 31.0, 1_000), 1_000, &mut out);
        engine.evaluate(&post("pk2", "b", 31.0, 1_000), 1_000, &mut out);
        engine.evaluate(&status("pk1", "a", "offline", 2_000), 2_000, &mut out);
        assert_eq!(out.len(), 2, "the product's post and status change");
        assert_eq!(out[0].matched(), 0, "the plugin's answer decides a match");
        match &out[0].trigger {
            Some(RuleTrigger::Message { method, params, .. }) => {
                assert_eq!(method, "thing.event.property.post");
                assert_eq!(params["t"], 31.0);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            &out[1].trigger,
            Some(RuleTrigger::Status { online: false, .. })
        ));
        out.clear();
        engine.evaluate_event(&alarm_raised("pk1", "x", None), &mut out);
        assert!(matches!(&out[0].trigger, Some(RuleTrigger::Event(e)) if e.id == "17"));
        out.clear();
        engine.tick(10_000, &mut out);
        engine.tick(12_000, &mut out);
        assert!(
            matches!(&out[..], [f] if f.trigger == Some(RuleTrigger::Timer("by-plugin".into())))
        );
    }

    #[test]
    fn a_scoped_scene_watches_only_the_devices_in_its_scope() {
        let engine = engine_with(
            "xihu-hot",
            json!({"trigger": {"kind": "scene", "productKey": "pk1", "scope": {"region": "/hz/xihu"},
                "condition": {"property": "t", "op": ">", "threshold": 30, "holdForSecs": 0}},
                "actions": [{"kind": "alarm", "alarmType": "hot"}]}),
        );
        let mut out = Vec::new();
        engine.evaluate(&post("pk1", "in", 31.0, 1_000), 1_000, &mut out);
        assert!(
            out.is_empty(),
            "no device is in scope before the members are read"
        );
        let rules = engine.rules();
        let CompiledTrigger::Scene {
            scope: Some(scoped),
            ..
        } = &rules[0].trigger
        else {
            panic!("a scoped scene");
        };
        scoped.set_members(["in".to_string()].into_iter().collect());
        engine.evaluate(&post("pk1", "in", 31.0, 2_000), 2_000, &mut out);
        engine.evaluate(&post("pk1", "out", 31.0, 2_000), 2_000, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].context["device"]["deviceName"], "in");
        let bad = compile(
            "r",
            "r",
            1,
            "",
            "/",
            &json!({"trigger": {"kind": "scene", "productKey": "pk1", "scope": {"group": ""},
                "condition": {"property": "t", "op": ">", "threshold": 30}},
                "actions": [{"kind": "alarm", "alarmType": "hot"}]}),
        )
        .err()
        .unwrap();
        assert_eq!(bad.field, "trigger.scope");
    }
}
