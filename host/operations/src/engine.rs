//! The rule engine: the enabled rules in memory, evaluated against every device message on the
//! bus; matches go to a bounded queue the action workers drain, so a slow webhook never slows
//! evaluation. Counters are kept in memory and written to storage once a second.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use lotus_rules::{RuleInput, SceneTransition};
use lotus_storage::{RuleStatsDelta, Store};
use parking_lot::{Mutex, RwLock};
use serde_json::{Value, json};

use crate::message::RuleMessage;
use crate::rule::{ActionSpec, CompiledRule, CompiledTrigger, compile};

/// A rule that fired, with what it matched.
pub struct Firing {
    pub rule: Arc<CompiledRule>,
    pub context: Value,
    /// A scene episode ended: clear the alarms the rule raised instead of running the actions.
    pub left: bool,
}

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
        Ok(n)
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
                        });
                    }
                }
                CompiledTrigger::Scene {
                    product_key,
                    tracker,
                } => {
                    if !property_post || *product_key != msg.product_key {
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
                CompiledTrigger::Schedule(_) => {}
            }
        }
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
                    let key = (rule.id.clone(), rule.version);
                    let next_after = |t: i64| {
                        chrono::DateTime::from_timestamp_millis(t)
                            .and_then(|d| schedule.next_after(d))
                            .map(|d| d.timestamp_millis())
                    };
                    let due = match schedules.get(&key) {
                        Some(due) => *due,
                        None => match next_after(now) {
                            Some(t) => {
                                schedules.insert(key.clone(), t);
                                t
                            }
                            None => continue,
                        },
                    };
                    if now >= due {
                        out.push(Firing {
                            context: context(rule, None, json!({"scheduledAt": due}), now),
                            rule: rule.clone(),
                            left: false,
                        });
                        match next_after(now) {
                            Some(t) => {
                                schedules.insert(key, t);
                            }
                            None => {
                                schedules.remove(&key);
                            }
                        }
                    }
                }
                CompiledTrigger::Sql(_) => {}
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
}
