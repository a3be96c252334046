//! Rule definitions as operators write them (JSON), and their compiled form.
//!
//! A rule is a trigger and a list of actions. The trigger is a SQL-like statement over device
//! messages, a scene-linkage condition ("temperature > 30 for 60 s" of a product's devices,
//! optionally only those in a region or device group), a device offline for longer than a time,
//! a cron schedule, a platform event (alarm raised or cleared, event created or closed), or a
//! `rule` plugin that decides itself and answers with the actions to run.
//! Every text an action sends (alarm message, event title, topic) is a template over the match:
//! `{{ device.deviceName }}`, `{{ data.t }}`, `{{ rule.name }}`.

use lotus_notify::MessageTemplate;
use std::collections::HashSet;

use lotus_rules::{CompareOp, SceneCondition, SceneScope, SceneTracker, Schedule, Statement};

/// The reading an offline trigger's tracker follows: 1 while offline, 0 while online.
pub const OFFLINE_READING: &str = "offline";
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The stored definition of a rule (the `definition` of `/api/v1/rules`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleDefinition {
    pub trigger: Trigger,
    #[serde(default)]
    pub actions: Vec<ActionSpec>,
}

/// What makes a rule fire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum Trigger {
    /// `SELECT … FROM '<topic filter>' WHERE …` over device messages (see [`crate::message`] for
    /// the topics and payloads rules see).
    Sql { sql: String },
    /// A property of a product's devices crossing a threshold and holding for a while. Fires
    /// once per episode; when the condition stops holding, the alarms the rule raised for that
    /// device are cleared.
    Scene {
        product_key: String,
        /// Only the product's devices in this region (or below it) or device group.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<SceneScope>,
        condition: SceneCondition,
    },
    /// A device of the product offline for at least `offline_for_secs` (DMC-5's "offline longer
    /// than T"): fires once per outage, typically with an alarm action; when the device comes
    /// back online, the alarms the rule raised for it are cleared.
    Offline {
        product_key: String,
        offline_for_secs: u64,
    },
    /// A cron expression (5 fields, or the 6/7-field form with seconds) in a time zone.
    Schedule {
        cron: String,
        #[serde(default = "default_time_zone")]
        time_zone: String,
    },
    /// Platform events: `alarm.raised`, `alarm.cleared`, `event.created`, `event.closed`,
    /// optionally only of one product's devices or of one alarm or event type. The event is in
    /// the templates as `event` (`event.kind`, `event.eventType`, `event.severity`, `event.id`,
    /// `event.fields`), its fields also as `data`.
    Platform {
        events: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        product_key: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_type: Option<String>,
    },
    /// A `rule` plugin decides: it is called with the device messages and status changes of
    /// `product_key` (every product's when absent), the platform events named in `events`, and a
    /// timer tick (named after the rule) at the times of `cron`; the actions it returns run,
    /// each checked against the plugin's grants, followed by the rule's own actions if any.
    Plugin {
        plugin: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        product_key: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        events: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cron: Option<String>,
        #[serde(default = "default_time_zone")]
        time_zone: String,
    },
}

/// The platform events a rule can be triggered by.
pub const PLATFORM_EVENT_KINDS: [&str; 4] = [
    "alarm.raised",
    "alarm.cleared",
    "event.created",
    "event.closed",
];

fn default_time_zone() -> String {
    "Asia/Shanghai".into()
}

/// What a rule does when it fires. Text fields are templates over the match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum ActionSpec {
    /// Raise an alarm on the device (one active alarm per device and type; repeats count).
    Alarm {
        alarm_type: String,
        #[serde(default = "default_level")]
        level: u8,
        #[serde(default)]
        message: String,
    },
    /// Clear the device's active alarm of this type.
    ClearAlarm { alarm_type: String },
    /// Create an event in the event center (classified, merged, dispatched to its workflow).
    Event {
        event_type: String,
        title: String,
        #[serde(default)]
        level: Option<u8>,
        /// Field values; string values are templates.
        #[serde(default)]
        fields: Map<String, Value>,
    },
    /// POST the match as JSON to a webhook channel's URL, signed with the channel's secret.
    Webhook { channel: String },
    /// Publish the match's data as JSON (or the `payload` template) to an MQTT topic.
    Republish {
        topic: String,
        #[serde(default)]
        qos: u8,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payload: Option<String>,
    },
    /// Hand the matched device message to an `app` plugin (an ISV integration).
    App { plugin: String },
    /// Set properties on a device.
    SetProperty {
        product_key: String,
        device_name: String,
        params: Value,
    },
    /// Invoke a service on a device.
    InvokeService {
        product_key: String,
        device_name: String,
        identifier: String,
        #[serde(default = "empty_object")]
        params: Value,
    },
    /// Send a notification through a configured channel (`inapp` is always there).
    Notify {
        channel: String,
        /// Recipients: `user:<name>` or `role:<role>@<region>`.
        to: Vec<String>,
        subject: String,
        #[serde(default)]
        body: String,
        /// 1 (most severe) to 4, the scale of alarms and events; when absent, the level of the
        /// alarm or event that triggered the rule, if any. People whose `minLevel` is less
        /// severe get it only as an in-app message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        level: Option<u8>,
    },
}

fn default_level() -> u8 {
    3
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

impl ActionSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            ActionSpec::Alarm { .. } => "alarm",
            ActionSpec::ClearAlarm { .. } => "clearAlarm",
            ActionSpec::Event { .. } => "event",
            ActionSpec::Webhook { .. } => "webhook",
            ActionSpec::Republish { .. } => "republish",
            ActionSpec::SetProperty { .. } => "setProperty",
            ActionSpec::InvokeService { .. } => "invokeService",
            ActionSpec::Notify { .. } => "notify",
            ActionSpec::App { .. } => "app",
        }
    }
}

/// A rule that cannot be compiled; the text says where and what to fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RuleError {
    /// JSON-pointer-like path of the offending part, e.g. `trigger.sql`, `actions[1].title`.
    pub field: String,
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> RuleError {
    RuleError {
        field: field.into(),
        message: message.into(),
    }
}

/// A rule ready to evaluate.
pub struct CompiledRule {
    pub id: String,
    pub name: String,
    pub version: i64,
    pub org: String,
    pub region: String,
    pub trigger: CompiledTrigger,
    pub actions: Vec<CompiledAction>,
}

pub enum CompiledTrigger {
    Sql(Statement),
    Scene {
        product_key: String,
        /// The devices of the product the scene watches when it has a scope.
        scope: Option<ScopedDevices>,
        tracker: Mutex<SceneTracker>,
    },
    /// An outage is a scene whose reading is 1 while the device is offline, held for the time.
    Offline {
        product_key: String,
        tracker: Mutex<SceneTracker>,
    },
    Schedule(Schedule),
    Platform(PlatformFilter),
    Plugin {
        plugin: String,
        product_key: Option<String>,
        /// `None` when the plugin is not called for platform events.
        events: Option<PlatformFilter>,
        schedule: Option<Schedule>,
    },
}

/// Which platform events a rule wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformFilter {
    pub kinds: Vec<String>,
    pub product_key: Option<String>,
    pub event_type: Option<String>,
}

impl PlatformFilter {
    pub fn matches(&self, event: &crate::platform::PlatformEvent) -> bool {
        self.kinds.contains(&event.kind)
            && self
                .product_key
                .as_ref()
                .is_none_or(|pk| event.device.as_ref().is_some_and(|(p, _)| p == pk))
            && self
                .event_type
                .as_ref()
                .is_none_or(|t| *t == event.event_type)
    }
}

/// The devices a scoped scene watches: its scope, and the names of the product's devices in
/// it, refreshed from storage by the engine (devices move between regions and groups while
/// the rule runs). Until the first refresh no device is in scope.
pub struct ScopedDevices {
    pub scope: SceneScope,
    members: RwLock<Option<HashSet<String>>>,
}

impl ScopedDevices {
    pub fn new(scope: SceneScope) -> ScopedDevices {
        ScopedDevices {
            scope,
            members: RwLock::new(None),
        }
    }

    /// Whether the device (of the rule's product) is in scope.
    pub fn contains(&self, device_name: &str) -> bool {
        self.members
            .read()
            .as_ref()
            .is_some_and(|m| m.contains(device_name))
    }

    /// Replaces the members with a fresh reading from storage.
    pub fn set_members(&self, members: HashSet<String>) {
        *self.members.write() = Some(members);
    }
}

/// An action with its templates compiled.
pub struct CompiledAction {
    pub spec: ActionSpec,
    /// Templates by field name (`message`, `title`, `topic`, `subject`, `body`, `fields.<name>`).
    pub templates: Vec<(String, MessageTemplate)>,
}

impl CompiledAction {
    /// Renders the template named `field` with `context`.
    pub fn render(&self, field: &str, context: &Value) -> Result<String, String> {
        match self.templates.iter().find(|(f, _)| f == field) {
            Some((_, t)) => t
                .render(context)
                .map(|r| r.subject)
                .map_err(|e| e.to_string()),
            None => Ok(String::new()),
        }
    }
}

const MAX_ACTIONS: usize = 16;

/// Parses and compiles a definition. `id` and `name` are only used in messages and templates.
pub fn compile(
    id: &str,
    name: &str,
    version: i64,
    org: &str,
    region: &str,
    definition: &Value,
) -> Result<CompiledRule, RuleError> {
    let def: RuleDefinition = serde_json::from_value(definition.clone())
        .map_err(|e| err("definition", format!("{e}")))?;
    let trigger = match &def.trigger {
        Trigger::Sql { sql } => CompiledTrigger::Sql(
            Statement::parse(sql).map_err(|e| err("trigger.sql", e.to_string()))?,
        ),
        Trigger::Scene {
            product_key,
            scope,
            condition,
        } => {
            condition
                .validate()
                .map_err(|e| err("trigger.condition", e.to_string()))?;
            if product_key.trim().is_empty() {
                return Err(err(
                    "trigger.productKey",
                    "name the product whose devices the condition watches",
                ));
            }
            if let Some(scope) = scope {
                scope.validate().map_err(|m| err("trigger.scope", m))?;
            }
            CompiledTrigger::Scene {
                product_key: product_key.clone(),
                scope: scope.clone().map(ScopedDevices::new),
                tracker: Mutex::new(
                    SceneTracker::new(condition.clone())
                        .map_err(|e| err("trigger.condition", e.to_string()))?,
                ),
            }
        }
        Trigger::Offline {
            product_key,
            offline_for_secs,
        } => {
            if product_key.trim().is_empty() {
                return Err(err(
                    "trigger.productKey",
                    "name the product whose devices are watched",
                ));
            }
            if *offline_for_secs == 0 {
                return Err(err(
                    "trigger.offlineForSecs",
                    "give the outage length in seconds that raises it (at least 1)",
                ));
            }
            let condition =
                SceneCondition::new(OFFLINE_READING, CompareOp::Eq, 1.0, *offline_for_secs)
                    .map_err(|e| {
                        err(
                            "trigger.offlineForSecs",
                            e.to_string().replace("holdForSecs", "offlineForSecs"),
                        )
                    })?;
            CompiledTrigger::Offline {
                product_key: product_key.clone(),
                tracker: Mutex::new(
                    SceneTracker::new(condition)
                        .map_err(|e| err("trigger.offlineForSecs", e.to_string()))?,
                ),
            }
        }
        Trigger::Schedule { cron, time_zone } => CompiledTrigger::Schedule(
            Schedule::parse(cron, time_zone).map_err(|e| err("trigger.cron", e.to_string()))?,
        ),
        Trigger::Platform {
            events,
            product_key,
            event_type,
        } => {
            if events.is_empty() {
                return Err(err(
                    "trigger.events",
                    format!(
                        "name the platform events that trigger the rule: {}",
                        PLATFORM_EVENT_KINDS.join(", ")
                    ),
                ));
            }
            CompiledTrigger::Platform(platform_filter("trigger", events, product_key, event_type)?)
        }
        Trigger::Plugin {
            plugin,
            product_key,
            events,
            cron,
            time_zone,
        } => {
            check_code(plugin).map_err(|m| err("trigger.plugin", m))?;
            if let Some(pk) = product_key
                && pk.trim().is_empty()
            {
                return Err(err(
                    "trigger.productKey",
                    "name a product, or leave productKey out for every product's devices",
                ));
            }
            CompiledTrigger::Plugin {
                plugin: plugin.clone(),
                product_key: product_key.clone(),
                events: if events.is_empty() {
                    None
                } else {
                    Some(platform_filter("trigger", events, product_key, &None)?)
                },
                schedule: cron
                    .as_ref()
                    .map(|c| Schedule::parse(c, time_zone))
                    .transpose()
                    .map_err(|e| err("trigger.cron", e.to_string()))?,
            }
        }
    };
    // A plugin answers with the actions itself; the rule's own are optional then.
    let plugin_decides = matches!(def.trigger, Trigger::Plugin { .. });
    if def.actions.is_empty() && !plugin_decides {
        return Err(err(
            "actions",
            "a rule needs at least one action (alarm, clearAlarm, event, webhook, republish, setProperty, invokeService, notify, app)",
        ));
    }
    if def.actions.len() > MAX_ACTIONS {
        return Err(err(
            "actions",
            format!("at most {MAX_ACTIONS} actions per rule"),
        ));
    }
    let mut actions = Vec::with_capacity(def.actions.len());
    for (i, spec) in def.actions.into_iter().enumerate() {
        actions.push(compile_action(id, i, spec)?);
    }
    Ok(CompiledRule {
        id: id.to_string(),
        name: name.to_string(),
        version,
        org: org.to_string(),
        region: region.to_string(),
        trigger,
        actions,
    })
}

fn platform_filter(
    at: &str,
    events: &[String],
    product_key: &Option<String>,
    event_type: &Option<String>,
) -> Result<PlatformFilter, RuleError> {
    for e in events {
        if !PLATFORM_EVENT_KINDS.contains(&e.as_str()) {
            return Err(err(
                format!("{at}.events"),
                format!(
                    "`{e}` is not a platform event; use {}",
                    PLATFORM_EVENT_KINDS.join(", ")
                ),
            ));
        }
    }
    if let Some(t) = event_type {
        check_code(t).map_err(|m| err(format!("{at}.eventType"), m))?;
    }
    if product_key.as_ref().is_some_and(|pk| pk.trim().is_empty()) {
        return Err(err(
            format!("{at}.productKey"),
            "name a product, or leave productKey out for events of every product",
        ));
    }
    Ok(PlatformFilter {
        kinds: events.to_vec(),
        product_key: product_key.clone(),
        event_type: event_type.clone(),
    })
}

/// Checks one action and compiles its templates; `i` is its index, for messages.
pub fn compile_action(id: &str, i: usize, spec: ActionSpec) -> Result<CompiledAction, RuleError> {
    let at = |f: &str| format!("actions[{i}].{f}");
    let mut texts: Vec<(String, String)> = Vec::new();
    match &spec {
        ActionSpec::Alarm {
            alarm_type,
            level,
            message,
        } => {
            check_code(alarm_type).map_err(|m| err(at("alarmType"), m))?;
            if !(1..=4).contains(level) {
                return Err(err(at("level"), "level is 1 (most severe) to 4"));
            }
            texts.push(("message".into(), message.clone()));
        }
        ActionSpec::ClearAlarm { alarm_type } => {
            check_code(alarm_type).map_err(|m| err(at("alarmType"), m))?
        }
        ActionSpec::Event {
            event_type,
            title,
            level,
            fields,
        } => {
            check_code(event_type).map_err(|m| err(at("eventType"), m))?;
            if title.trim().is_empty() {
                return Err(err(at("title"), "an event needs a title"));
            }
            if let Some(l) = level
                && !(1..=4).contains(l)
            {
                return Err(err(at("level"), "level is 1 (most severe) to 4"));
            }
            texts.push(("title".into(), title.clone()));
            for (k, v) in fields {
                if let Value::String(s) = v {
                    texts.push((format!("fields.{k}"), s.clone()));
                }
            }
        }
        ActionSpec::Webhook { channel } => {
            check_code(channel).map_err(|m| err(at("channel"), m))?
        }
        ActionSpec::Republish {
            topic,
            qos,
            payload,
        } => {
            if topic.is_empty() {
                return Err(err(at("topic"), "name the topic to publish to"));
            }
            if *qos > 1 {
                return Err(err(at("qos"), "qos is 0 or 1"));
            }
            texts.push(("topic".into(), topic.clone()));
            if let Some(p) = payload {
                texts.push(("payload".into(), p.clone()));
            }
        }
        ActionSpec::App { plugin } => check_code(plugin).map_err(|m| err(at("plugin"), m))?,
        ActionSpec::SetProperty {
            product_key,
            device_name,
            params,
        } => {
            if !params.is_object() {
                return Err(err(at("params"), "params is an object of property values"));
            }
            texts.push(("productKey".into(), product_key.clone()));
            texts.push(("deviceName".into(), device_name.clone()));
        }
        ActionSpec::InvokeService {
            product_key,
            device_name,
            identifier,
            params,
        } => {
            if identifier.is_empty() {
                return Err(err(at("identifier"), "name the service"));
            }
            if !params.is_object() {
                return Err(err(at("params"), "params is an object of input values"));
            }
            texts.push(("productKey".into(), product_key.clone()));
            texts.push(("deviceName".into(), device_name.clone()));
        }
        ActionSpec::Notify {
            channel,
            to,
            subject,
            body,
            level,
        } => {
            check_code(channel).map_err(|m| err(at("channel"), m))?;
            if let Some(l) = level
                && !(1..=4).contains(l)
            {
                return Err(err(at("level"), "level is 1 (most severe) to 4"));
            }
            if to.is_empty() {
                return Err(err(at("to"), "name at least one recipient"));
            }
            for r in to {
                crate::recipient::Recipient::parse(r).map_err(|m| err(at("to"), m))?;
            }
            texts.push(("subject".into(), subject.clone()));
            texts.push(("body".into(), body.clone()));
        }
    }
    let mut templates = Vec::with_capacity(texts.len());
    for (field, text) in texts {
        let t = MessageTemplate::compile(&format!("{id}/actions[{i}].{field}"), &text, "")
            .map_err(|e| err(at(&field), e.to_string()))?;
        templates.push((field, t));
    }
    Ok(CompiledAction { spec, templates })
}

/// Alarm types, event types and channel ids: short codes that appear in URLs and filters.
fn check_code(code: &str) -> Result<(), String> {
    let ok = !code.is_empty()
        && code.len() <= 64
        && code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{code}` is not a valid code: 1–64 letters, digits, `-`, `_` or `.`"
        ))
    }
}

/// Checks a rule id: it appears in URLs and as the key of counters.
pub fn check_rule_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "rule id `{id}` is not valid: 1–64 lowercase letters, digits, `-` or `_`, starting with a letter or digit"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn compiles_a_threshold_rule() {
        let def = json!({
            "trigger": {"kind": "sql", "sql": "SELECT items.pressure.value AS p FROM '/sys/+/+/thing/event/property/post' WHERE items.pressure.value < 0.2"},
            "actions": [
                {"kind": "alarm", "alarmType": "pressure-low", "level": 2, "message": "pressure {{ data.p }} MPa at {{ device.deviceName }}"},
                {"kind": "event", "eventType": "water.pressure_low", "title": "Low pressure at {{ device.deviceName }}"}
            ]
        });
        let rule = compile("low-pressure", "Low pressure", 1, "", "/", &def).unwrap();
        assert_eq!(rule.actions.len(), 2);
        let ctx = json!({"data": {"p": 0.1}, "device": {"deviceName": "pump-7"}});
        assert_eq!(
            rule.actions[0].render("message", &ctx).unwrap(),
            "pressure 0.1 MPa at pump-7"
        );
    }

    #[test]
    fn errors_name_the_part_to_fix() {
        let bad_sql = json!({"trigger": {"kind": "sql", "sql": "SELECT * WHERE x > 1"}, "actions": [{"kind": "clearAlarm", "alarmType": "x"}]});
        let e = compile("r", "r", 1, "", "/", &bad_sql).err().unwrap();
        assert_eq!(e.field, "trigger.sql");
        assert!(e.message.contains("FROM"), "{e}");

        let no_actions = json!({"trigger": {"kind": "schedule", "cron": "0 8 * * *"}});
        assert_eq!(
            compile("r", "r", 1, "", "/", &no_actions)
                .err()
                .unwrap()
                .field,
            "actions"
        );

        let bad_level = json!({"trigger": {"kind": "schedule", "cron": "0 8 * * *"}, "actions": [{"kind": "alarm", "alarmType": "a", "level": 9}]});
        assert_eq!(
            compile("r", "r", 1, "", "/", &bad_level)
                .err()
                .unwrap()
                .field,
            "actions[0].level"
        );

        let bad_template = json!({"trigger": {"kind": "schedule", "cron": "0 8 * * *"}, "actions": [{"kind": "event", "eventType": "e", "title": "{{ data. }}"}]});
        assert_eq!(
            compile("r", "r", 1, "", "/", &bad_template)
                .err()
                .unwrap()
                .field,
            "actions[0].title"
        );

        let unknown = json!({"trigger": {"kind": "sql", "sql": "SELECT * FROM 'a'"}, "actions": [{"kind": "explode"}]});
        assert_eq!(
            compile("r", "r", 1, "", "/", &unknown).err().unwrap().field,
            "definition"
        );
    }

    #[test]
    fn rule_ids() {
        assert!(check_rule_id("low-pressure_2").is_ok());
        assert!(check_rule_id("Low").is_err());
        assert!(check_rule_id("-x").is_err());
        assert!(check_rule_id("").is_err());
    }
}
