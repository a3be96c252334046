//! Carrying out rule actions, with retries: an action that fails is put in the outbox and
//! retried with back-off; after the last attempt it stays there as a dead letter an operator can
//! inspect and requeue. Nothing a rule decided is dropped silently.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use lotus_notify::{ChannelKind, Preferences};
use lotus_storage::{NewAlarm, NewDelivery, RuleStatsDelta, Store};
use lotus_workflow::{EventDraft, GeoPoint};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::center::{EventCenter, Submission};
use crate::inbox;
use crate::platform::{PlatformEvent, WorldPlugins};
use crate::recipient::Recipient;
use crate::rule::{ActionSpec, CompiledAction};

/// What the device plane offers rules (implemented by the node over its broker and downlink).
#[async_trait]
pub trait DeviceCommands: Send + Sync + 'static {
    /// Sets properties; returns the downlink's message id.
    async fn set_properties(
        &self,
        product_key: &str,
        device_name: &str,
        params: Value,
    ) -> Result<String, String>;
    /// Invokes a service; returns the device's answer (or the message id of an async call).
    async fn invoke_service(
        &self,
        product_key: &str,
        device_name: &str,
        identifier: &str,
        params: Value,
    ) -> Result<Value, String>;
    /// Publishes to an MQTT topic; returns how many subscribers it reached.
    async fn publish(&self, topic: &str, payload: Vec<u8>, qos: u8) -> Result<usize, String>;
}

/// Why an action failed, and whether trying again may help.
#[derive(Debug, Clone)]
pub struct ActionFailure {
    pub message: String,
    pub transient: bool,
}

impl ActionFailure {
    fn permanent(message: impl Into<String>) -> ActionFailure {
        ActionFailure {
            message: message.into(),
            transient: false,
        }
    }
    fn transient(message: impl Into<String>) -> ActionFailure {
        ActionFailure {
            message: message.into(),
            transient: true,
        }
    }
}

/// Attempts before an action or a notification is dead-lettered.
pub const MAX_ATTEMPTS: i64 = 5;

/// The wait before attempt `attempt + 1`: `base` doubled per attempt. With the default base of
/// 2 s that is 2, 4, 8, 16 s, so a webhook receiver that restarts is back before the last try.
pub fn backoff(base: Duration, attempt: i64) -> Duration {
    base.saturating_mul(1u32 << (attempt.clamp(1, 10) as u32 - 1))
}

pub struct Executor {
    pub store: Store,
    pub center: Arc<EventCenter>,
    pub devices: Arc<dyn DeviceCommands>,
    pub plugins: Arc<dyn WorldPlugins>,
    http: reqwest::Client,
    retry_base: Duration,
}

type HmacSha256 = Hmac<Sha256>;

impl Executor {
    pub fn new(
        store: Store,
        center: Arc<EventCenter>,
        devices: Arc<dyn DeviceCommands>,
        plugins: Arc<dyn WorldPlugins>,
        retry_base: Duration,
    ) -> Executor {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Executor {
            store,
            center,
            devices,
            plugins,
            http,
            retry_base,
        }
    }

    /// Runs one action with the match `context` (`rule`, `device`, `data`, `at`).
    pub async fn run(
        &self,
        rule_id: &str,
        action: &CompiledAction,
        context: &Value,
    ) -> Result<Value, ActionFailure> {
        let at = context["at"].as_i64().unwrap_or_else(crate::now_ms);
        let device = &context["device"];
        let pk = device["productKey"].as_str();
        let dn = device["deviceName"].as_str();
        let render = |field: &str| {
            action
                .render(field, context)
                .map_err(|e| ActionFailure::permanent(format!("template {field}: {e}")))
        };
        match &action.spec {
            ActionSpec::Alarm {
                alarm_type, level, ..
            } => {
                let (Some(pk), Some(dn)) = (pk, dn) else {
                    return Err(ActionFailure::permanent(
                        "an alarm needs a device: use it with a device-message or scene trigger",
                    ));
                };
                let scope = self.device_scope(pk, dn).await?;
                let message = render("message")?;
                let (row, new) = self
                    .store
                    .raise_alarm(&NewAlarm {
                        product_key: pk,
                        device_name: dn,
                        alarm_type,
                        rule_id: Some(rule_id),
                        level: *level as i64,
                        message: &message,
                        details: &context["data"],
                        region: &scope.region,
                        org: &scope.org,
                        at,
                    })
                    .await
                    .map_err(|e| ActionFailure::transient(e.to_string()))?;
                if new {
                    self.center.announce(PlatformEvent {
                        id: row.id.to_string(),
                        kind: "alarm.raised".into(),
                        event_type: alarm_type.clone(),
                        severity: *level,
                        device: Some((pk.to_string(), dn.to_string())),
                        fields: json!({"message": message, "data": context["data"]}),
                        at_ms: at,
                        caused_by: PlatformEvent::cause_of(context),
                    });
                }
                Ok(json!({"alarm": row.id, "new": new}))
            }
            ActionSpec::ClearAlarm { alarm_type } => {
                let (Some(pk), Some(dn)) = (pk, dn) else {
                    return Err(ActionFailure::permanent("clearing an alarm needs a device"));
                };
                let cleared = self
                    .store
                    .clear_open_alarm(pk, dn, alarm_type, &format!("rule:{rule_id}"), at)
                    .await
                    .map_err(|e| ActionFailure::transient(e.to_string()))?;
                if let Some(alarm) = &cleared {
                    self.center.announce(PlatformEvent {
                        id: alarm.id.to_string(),
                        kind: "alarm.cleared".into(),
                        event_type: alarm_type.clone(),
                        severity: alarm.level.clamp(1, 4) as u8,
                        device: Some((pk.to_string(), dn.to_string())),
                        fields: alarm.details.clone(),
                        at_ms: at,
                        caused_by: PlatformEvent::cause_of(context),
                    });
                }
                Ok(json!({"cleared": cleared.map(|a| a.id)}))
            }
            ActionSpec::Event {
                event_type,
                level,
                fields,
                ..
            } => {
                let title = render("title")?;
                let mut values = fields.clone();
                for (k, v) in values.iter_mut() {
                    if v.is_string() {
                        *v = Value::String(render(&format!("fields.{k}"))?);
                    }
                }
                let (region, org) = match (pk, dn) {
                    (Some(pk), Some(dn)) => {
                        let s = self.device_scope(pk, dn).await?;
                        (s.region, s.org)
                    }
                    _ => (
                        context["rule"]["region"]
                            .as_str()
                            .unwrap_or("/")
                            .to_string(),
                        context["rule"]["org"].as_str().unwrap_or("").to_string(),
                    ),
                };
                let location = context["data"].as_object().and_then(GeoPoint::from_fields);
                let draft = EventDraft {
                    type_code: event_type.clone(),
                    title,
                    level: level.and_then(|l| lotus_workflow::Level::from_number(l as u64)),
                    location,
                    region,
                    fields: values,
                    source: match context.get("cause") {
                        Some(cause) => json!({"rule": rule_id, "device": device,
                            "data": context["data"], "cause": cause}),
                        None => json!({"rule": rule_id, "device": device, "data": context["data"]}),
                    },
                    at_ms: at,
                };
                let submitted = self
                    .center
                    .submit(Submission {
                        draft,
                        org,
                        rule_id: Some(rule_id.to_string()),
                        alarm_id: None,
                        actor: format!("rule:{rule_id}"),
                    })
                    .await
                    .map_err(|e| match e {
                        crate::center::CenterError::Storage(e) => {
                            ActionFailure::transient(e.to_string())
                        }
                        e => ActionFailure::permanent(e.to_string()),
                    })?;
                Ok(serde_json::to_value(submitted).unwrap_or(Value::Null))
            }
            ActionSpec::Webhook { channel } => self.webhook(channel, rule_id, context).await,
            ActionSpec::Republish { qos, payload, .. } => {
                let topic = render("topic")?;
                let payload = match payload {
                    Some(_) => render("payload")?.into_bytes(),
                    None => serde_json::to_vec(&context["data"]).unwrap_or_default(),
                };
                let n = self
                    .devices
                    .publish(&topic, payload, *qos)
                    .await
                    .map_err(ActionFailure::permanent)?;
                Ok(json!({"subscribers": n}))
            }
            ActionSpec::SetProperty { params, .. } => {
                let (pk, dn) = (render("productKey")?, render("deviceName")?);
                let id = self
                    .devices
                    .set_properties(&pk, &dn, params.clone())
                    .await
                    .map_err(ActionFailure::transient)?;
                Ok(json!({"messageId": id}))
            }
            ActionSpec::InvokeService {
                identifier, params, ..
            } => {
                let (pk, dn) = (render("productKey")?, render("deviceName")?);
                self.devices
                    .invoke_service(&pk, &dn, identifier, params.clone())
                    .await
                    .map_err(ActionFailure::transient)
            }
            ActionSpec::App { plugin } => {
                self.plugins
                    .app_message(plugin, context)
                    .await
                    .map_err(ActionFailure::transient)?;
                Ok(json!({"app": plugin}))
            }
            ActionSpec::Notify {
                channel, to, level, ..
            } => {
                let subject = render("subject")?;
                let body = render("body")?;
                let recipients: Vec<Recipient> =
                    to.iter().filter_map(|r| Recipient::parse(r).ok()).collect();
                // Without its own level, a notification is as severe as the alarm or event
                // that triggered the rule.
                let level = level.or_else(|| {
                    context["event"]["severity"]
                        .as_u64()
                        .filter(|l| (1..=4).contains(l))
                        .map(|l| l as u8)
                });
                self.notify(channel, &recipients, &subject, &body, rule_id, at, level)
                    .await
            }
        }
    }

    async fn device_scope(
        &self,
        pk: &str,
        dn: &str,
    ) -> Result<lotus_model::scope::Scope, ActionFailure> {
        self.store
            .device_scope(pk, dn)
            .await
            .map_err(|e| ActionFailure::transient(e.to_string()))?
            .ok_or_else(|| ActionFailure::permanent(format!("device {pk}/{dn} no longer exists")))
    }

    /// POSTs the match to the channel's URL with `X-Lotus-Signature: t=<ms>,v1=<hex HMAC-SHA256
    /// of "<ms>.<body>">` keyed by the channel's secret, so the receiver can check origin and
    /// freshness.
    async fn webhook(
        &self,
        channel: &str,
        rule_id: &str,
        context: &Value,
    ) -> Result<Value, ActionFailure> {
        let ch = self
            .store
            .get_channel(channel)
            .await
            .map_err(|e| ActionFailure::transient(e.to_string()))?
            .ok_or_else(|| {
                ActionFailure::permanent(format!("channel `{channel}` does not exist"))
            })?;
        if ch.kind != "webhook" {
            return Err(ActionFailure::permanent(format!(
                "channel `{channel}` is a {} channel, not a webhook",
                ch.kind
            )));
        }
        if !ch.enabled {
            return Err(ActionFailure::transient(format!(
                "channel `{channel}` is disabled"
            )));
        }
        let url = ch.config["url"]
            .as_str()
            .ok_or_else(|| ActionFailure::permanent(format!("channel `{channel}` has no url")))?;
        let body = serde_json::to_vec(&json!({
            "rule": rule_id, "device": context["device"], "data": context["data"], "at": context["at"],
        }))
        .unwrap_or_default();
        let t = crate::now_ms();
        let mut req = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("x-lotus-rule", rule_id);
        if let Some(secret) = self
            .store
            .channel_secret(channel)
            .await
            .map_err(|e| ActionFailure::transient(e.to_string()))?
        {
            let mut mac = HmacSha256::new_from_slice(secret.expose().as_bytes())
                .map_err(|e| ActionFailure::permanent(e.to_string()))?;
            mac.update(format!("{t}.").as_bytes());
            mac.update(&body);
            let sig = hex::encode(mac.finalize().into_bytes());
            req = req.header("x-lotus-signature", format!("t={t},v1={sig}"));
        }
        let resp = req
            .body(body)
            .send()
            .await
            .map_err(|e| ActionFailure::transient(format!("POST {url}: {e}")))?;
        let status = resp.status();
        if status.is_success() {
            Ok(json!({"status": status.as_u16()}))
        } else if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
            Err(ActionFailure::transient(format!(
                "POST {url}: HTTP {status}"
            )))
        } else {
            Err(ActionFailure::permanent(format!(
                "POST {url}: HTTP {status}"
            )))
        }
    }

    /// In-app messages are written at once; other channels get a delivery record the
    /// notification worker sends (with its own retries).
    pub fn retry_base(&self) -> Duration {
        self.retry_base
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn notify(
        &self,
        channel: &str,
        recipients: &[Recipient],
        subject: &str,
        body: &str,
        reference: &str,
        at: i64,
        level: Option<u8>,
    ) -> Result<Value, ActionFailure> {
        if channel == "inapp" {
            let n = inbox::deliver(&self.store, recipients, subject, body, None, None, at)
                .await
                .map_err(ActionFailure::transient)?;
            return Ok(json!({"messages": n}));
        }
        let ch = self
            .store
            .get_channel(channel)
            .await
            .map_err(|e| ActionFailure::transient(e.to_string()))?
            .ok_or_else(|| {
                ActionFailure::permanent(format!("channel `{channel}` does not exist"))
            })?;
        let kind = match ch.kind.as_str() {
            "email" => Some(ChannelKind::Email),
            "sms" => Some(ChannelKind::Sms),
            "im" => Some(ChannelKind::Im),
            _ => None,
        };
        let (mut ids, mut in_app) = (Vec::new(), Vec::new());
        for r in recipients {
            let addresses = match r {
                Recipient::Address(address) => vec![address.clone()],
                // People are reached at their own address on this channel, when their
                // preferences allow it now; otherwise the message waits in their message center.
                person => {
                    let Some(kind) = kind else {
                        return Err(ActionFailure::permanent(format!(
                            "channel `{channel}` ({}) does not reach people: name an address",
                            ch.kind
                        )));
                    };
                    let mut addresses = Vec::new();
                    for username in inbox::resolve(&self.store, person)
                        .await
                        .map_err(ActionFailure::transient)?
                    {
                        match self.address_of(&username, kind, level).await? {
                            Some(address) => addresses.push(address),
                            None => in_app.push(Recipient::User(username)),
                        }
                    }
                    addresses
                }
            };
            for address in addresses {
                let id = self
                    .store
                    .enqueue_delivery(&NewDelivery {
                        channel_id: &ch.id,
                        recipient: &address,
                        subject,
                        body,
                        reference: Some(reference),
                        at,
                    })
                    .await
                    .map_err(|e| ActionFailure::transient(e.to_string()))?;
                ids.push(id);
            }
        }
        let kept_in_app = if in_app.is_empty() {
            0
        } else {
            inbox::deliver(&self.store, &in_app, subject, body, None, None, at)
                .await
                .map_err(ActionFailure::transient)?
        };
        Ok(json!({"deliveries": ids, "inAppInstead": kept_in_app}))
    }

    /// Where `username` is reached on a channel of `kind` now for a notification of `level`:
    /// their e-mail address or phone number, when they have one and their preferences
    /// (channels, minimum level, quiet hours) allow it.
    async fn address_of(
        &self,
        username: &str,
        kind: ChannelKind,
        level: Option<u8>,
    ) -> Result<Option<String>, ActionFailure> {
        let transient = |e: lotus_storage::StorageError| ActionFailure::transient(e.to_string());
        let Some(user) = self.store.user_by_name(username).await.map_err(transient)? else {
            return Ok(None);
        };
        let preferences: Preferences =
            match self.store.preferences(username).await.map_err(transient)? {
                Some(v) => serde_json::from_value(v).unwrap_or_default(),
                None => Preferences::default(),
            };
        if !preferences
            .channels_at(level, std::time::SystemTime::now())
            .contains(&kind)
        {
            return Ok(None);
        }
        Ok(match kind {
            ChannelKind::Email => user.profile.email,
            ChannelKind::Sms => user.profile.phone,
            ChannelKind::Im => Some(user.username),
            ChannelKind::InApp => None,
        })
    }

    /// Runs a rule's actions for one match; failures go to the outbox. Returns (ok, failed).
    pub async fn fire(
        &self,
        rule_id: &str,
        actions: &[CompiledAction],
        context: &Value,
    ) -> (u64, u64, Option<String>) {
        let (mut ok, mut failed, mut last_error) = (0, 0, None);
        for action in actions {
            match self.run(rule_id, action, context).await {
                Ok(_) => ok += 1,
                Err(f) => {
                    failed += 1;
                    last_error = Some(format!("{}: {}", action.spec.kind(), f.message));
                    self.park(rule_id, &action.spec, context, &f, 1).await;
                }
            }
        }
        (ok, failed, last_error)
    }

    /// Puts a failed action in the outbox: to retry when it may succeed later, else dead.
    async fn park(
        &self,
        rule_id: &str,
        spec: &ActionSpec,
        context: &Value,
        failure: &ActionFailure,
        attempt: i64,
    ) {
        let action = serde_json::to_value(spec).unwrap_or(Value::Null);
        let now = crate::now_ms();
        let next = now + backoff(self.retry_base, attempt).as_millis() as i64;
        let result = match self
            .store
            .enqueue_action(rule_id, &action, context, next)
            .await
        {
            Ok(id) if !failure.transient => self.store.action_dead(id, &failure.message).await,
            Ok(id) => self.store.action_retry(id, next, &failure.message).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::error!(rule = rule_id, error = %e, failure = %failure.message, "could not park a failed rule action");
        }
    }

    /// Retries due outbox entries once each; returns how many were attempted.
    pub async fn drain_outbox(&self, now: i64) -> usize {
        let due = match self.store.due_actions(now, 64).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "rule action outbox unreadable");
                return 0;
            }
        };
        let n = due.len();
        for row in due {
            let spec: ActionSpec = match serde_json::from_value(row.action.clone()) {
                Ok(s) => s,
                Err(e) => {
                    let _ = self
                        .store
                        .action_dead(row.id, &format!("unreadable action: {e}"))
                        .await;
                    continue;
                }
            };
            let compiled = match crate::rule::compile_action(&row.rule_id, 0, spec) {
                Ok(c) => c,
                Err(e) => {
                    let _ = self.store.action_dead(row.id, &e.to_string()).await;
                    continue;
                }
            };
            let outcome = self.run(&row.rule_id, &compiled, &row.payload).await;
            let stats = match &outcome {
                Ok(_) => RuleStatsDelta {
                    matched: 0,
                    actions_ok: 1,
                    actions_failed: 0,
                    last_error: None,
                    at: now,
                },
                Err(f) => RuleStatsDelta {
                    matched: 0,
                    actions_ok: 0,
                    actions_failed: 1,
                    last_error: Some(&f.message),
                    at: now,
                },
            };
            let _ = self.store.add_rule_stats(&row.rule_id, &stats).await;
            let result = match outcome {
                Ok(_) => self.store.action_done(row.id).await,
                Err(f) if f.transient && row.attempts + 1 < MAX_ATTEMPTS => {
                    let next = now + backoff(self.retry_base, row.attempts + 1).as_millis() as i64;
                    self.store.action_retry(row.id, next, &f.message).await
                }
                Err(f) => self.store.action_dead(row.id, &f.message).await,
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "rule action outbox update failed");
            }
        }
        n
    }
}
