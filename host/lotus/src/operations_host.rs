//! What the operations center reaches outside itself on this node: the device plane (property
//! sets, service calls, MQTT publishes for rule actions), `channel` plugins (SMS, IM), `rule`
//! plugins (rules they decide), and `event-handler` and `app` plugins (platform events, the
//! rules' `app` action).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lotus_device::DevicePlane;
use lotus_device::downlink::CallOutcome;
use lotus_model::authz::DeviceId;
use lotus_operations::platform::literal;
use lotus_operations::rule::ActionSpec;
use lotus_operations::{
    ChannelPlugins, DeviceCommands, Listener, ListenerWorld, PlatformEvent, PluginAction,
    RuleTrigger, WorldPlugins,
};
use lotus_plugin::wit::v0_1_0::{DeliveryStatus, Trigger, types};
use lotus_plugin::{PluginRuntime, World};
use serde_json::{Value, json};

/// How long a rule waits for a device to answer a synchronous service call.
const SERVICE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct PlaneCommands(pub Arc<DevicePlane>);

#[async_trait]
impl DeviceCommands for PlaneCommands {
    async fn set_properties(
        &self,
        product_key: &str,
        device_name: &str,
        params: Value,
    ) -> Result<String, String> {
        self.0
            .set_properties(&DeviceId::new(product_key, device_name), params)
            .await
            .map_err(|e| e.to_string())
    }

    async fn invoke_service(
        &self,
        product_key: &str,
        device_name: &str,
        identifier: &str,
        params: Value,
    ) -> Result<Value, String> {
        let outcome = self
            .0
            .invoke_service(
                &DeviceId::new(product_key, device_name),
                identifier,
                params,
                SERVICE_TIMEOUT,
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(match outcome {
            CallOutcome::Replied { message_id, reply } => {
                json!({"messageId": message_id, "code": reply.code, "data": reply.data})
            }
            CallOutcome::Sent { message_id } => json!({"messageId": message_id}),
        })
    }

    async fn publish(&self, topic: &str, payload: Vec<u8>, qos: u8) -> Result<usize, String> {
        let qos = match qos {
            0 => lotus_mqtt::QoS::AtMostOnce,
            _ => lotus_mqtt::QoS::AtLeastOnce,
        };
        Ok(self
            .0
            .broker()
            .publish(topic, payload.into(), qos, false)
            .await)
    }
}

pub struct PluginChannels(pub PluginRuntime);

#[async_trait]
impl ChannelPlugins for PluginChannels {
    async fn deliver(
        &self,
        plugin_id: &str,
        recipient: &str,
        subject: &str,
        body: &str,
    ) -> Result<Option<String>, (String, bool)> {
        let channel = self.0.channel(plugin_id).ok_or_else(|| {
            (
                format!("plugin `{plugin_id}` is not a running channel plugin"),
                true,
            )
        })?;
        let notification = types::Notification {
            channel: plugin_id.to_string(),
            recipients: vec![recipient.to_string()],
            subject: subject.to_string(),
            body: body.to_string(),
        };
        // A channel plugin makes blocking HTTP calls through the host.
        let delivery = tokio::task::spawn_blocking(move || channel.deliver(&notification))
            .await
            .map_err(|e| (format!("channel plugin `{plugin_id}` panicked: {e}"), true))?
            .map_err(|e| (e.to_string(), true))?;
        match delivery.status {
            DeliveryStatus::Delivered | DeliveryStatus::Accepted => Ok(delivery.provider_id),
            DeliveryStatus::Failed => Err((
                format!(
                    "channel plugin `{plugin_id}` could not deliver: {}",
                    delivery.detail
                ),
                true,
            )),
        }
    }
}

/// `event-handler` and `app` plugins for the operations center.
pub struct RuntimeWorlds(pub PluginRuntime);

fn device_ref((pk, dn): &(String, String)) -> types::DeviceRef {
    types::DeviceRef {
        product_key: pk.clone(),
        device_name: dn.clone(),
    }
}

fn wit_event(event: &PlatformEvent) -> types::PlatformEvent {
    types::PlatformEvent {
        id: event.id.clone(),
        kind: event.kind.clone(),
        event_type: event.event_type.clone(),
        severity: event.severity,
        device: event.device.as_ref().map(device_ref),
        fields: event.fields.to_string(),
        at_ms: event.at_ms,
    }
}

/// A recipient as a channel plugin writes it (`+86…`, `ops@city.example`, `chen`) as the
/// operations center's recipient syntax.
fn recipient(r: &str) -> String {
    if ["user:", "role:", "mailto:", "tel:"]
        .iter()
        .any(|p| r.starts_with(p))
    {
        r.to_string()
    } else if r.starts_with('+') || r.chars().all(|c| c.is_ascii_digit()) {
        format!("tel:{r}")
    } else if r.contains('@') {
        format!("mailto:{r}")
    } else {
        format!("user:{r}")
    }
}

/// A rule's input as the WIT `trigger` of the `rule` world.
fn wit_trigger(trigger: &RuleTrigger) -> Trigger {
    match trigger {
        RuleTrigger::Message {
            product_key,
            device_name,
            topic,
            method,
            params,
            at_ms,
        } => Trigger::Message(types::DeviceMessage {
            context: types::MessageContext {
                product_key: product_key.clone(),
                device_name: device_name.clone(),
                topic: topic.clone(),
                at_ms: *at_ms,
            },
            method: method.clone(),
            params: params.to_string(),
        }),
        RuleTrigger::Status {
            product_key,
            device_name,
            online,
            reason,
            at_ms,
        } => Trigger::Status(types::StatusChange {
            device: types::DeviceRef {
                product_key: product_key.clone(),
                device_name: device_name.clone(),
            },
            status: if *online {
                types::DeviceStatus::Online
            } else {
                types::DeviceStatus::Offline
            },
            reason: reason.clone(),
            at_ms: *at_ms,
        }),
        RuleTrigger::Event(event) => Trigger::Event(wit_event(event)),
        RuleTrigger::Timer(name) => Trigger::Timer(name.clone()),
    }
}

fn json_object(text: &str, what: &str) -> Result<Value, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(format!("{what} must be a JSON object")),
    }
}

impl RuntimeWorlds {
    /// A handler's or rule plugin's action as an operations action, after the same capability
    /// decision its host calls get: device actions only on its products, republish only on its
    /// topics, events and alarms only with the `event` capability. A `rule` plugin's world has
    /// no `event` capability, since alarms and events are what it answers with: it may raise
    /// them on the device that triggered it (`rule_device`) or on devices of its products.
    fn action(
        &self,
        plugin: &str,
        action: types::Action,
        rule_device: Option<Option<(&str, &str)>>,
    ) -> Result<PluginAction, String> {
        use lotus_plugin::{CapabilityRequest, DeviceCall};
        let authorize = |request: CapabilityRequest<'_>| match (rule_device, &request) {
            (Some(trigger), CapabilityRequest::RaiseEvent { event_type, device }) => {
                let products = self
                    .0
                    .manifest(plugin)
                    .map(|m| m.products)
                    .unwrap_or_default();
                let allowed = match device {
                    Some((pk, dn)) => {
                        trigger == Some((*pk, *dn)) || products.iter().any(|p| p == pk)
                    }
                    None => true,
                };
                if allowed {
                    Ok(())
                } else {
                    Err(format!(
                        "rule plugin {plugin} may raise {event_type:?} only on the device that triggered it or on devices of its products"
                    ))
                }
            }
            _ => self.0.authorize(plugin, &request),
        };
        let pair = |d: &types::DeviceRef| (d.product_key.clone(), d.device_name.clone());
        Ok(match action {
            types::Action::RaiseAlarm(a) => {
                authorize(CapabilityRequest::RaiseEvent {
                    event_type: &a.alarm_type,
                    device: Some((&a.device.product_key, &a.device.device_name)),
                })?;
                PluginAction {
                    device: Some(pair(&a.device)),
                    spec: ActionSpec::Alarm {
                        alarm_type: a.alarm_type,
                        level: a.severity,
                        message: literal(&a.message),
                    },
                }
            }
            types::Action::ClearAlarm(a) => {
                authorize(CapabilityRequest::RaiseEvent {
                    event_type: &a.alarm_type,
                    device: Some((&a.device.product_key, &a.device.device_name)),
                })?;
                PluginAction {
                    device: Some(pair(&a.device)),
                    spec: ActionSpec::ClearAlarm {
                        alarm_type: a.alarm_type,
                    },
                }
            }
            types::Action::CreateEvent(e) => {
                authorize(CapabilityRequest::RaiseEvent {
                    event_type: &e.event_type,
                    device: e
                        .device
                        .as_ref()
                        .map(|d| (d.product_key.as_str(), d.device_name.as_str())),
                })?;
                let fields = if e.fields.trim().is_empty() {
                    serde_json::Map::new()
                } else {
                    match json_object(&e.fields, "event fields")? {
                        Value::Object(map) => map,
                        _ => unreachable!("json_object returns objects"),
                    }
                };
                // Field values are templates in a rule; a plugin's are meant literally.
                let fields = fields
                    .into_iter()
                    .map(|(k, v)| match v {
                        Value::String(s) => (k, Value::String(literal(&s))),
                        v => (k, v),
                    })
                    .collect();
                PluginAction {
                    device: e.device.as_ref().map(pair),
                    spec: ActionSpec::Event {
                        event_type: e.event_type,
                        title: literal(&e.title),
                        level: (e.severity != 0).then_some(e.severity),
                        fields,
                    },
                }
            }
            types::Action::SetProperty(p) => {
                authorize(CapabilityRequest::Device {
                    product_key: &p.device.product_key,
                    device_name: &p.device.device_name,
                    operation: DeviceCall::SetProperty,
                })?;
                PluginAction {
                    device: Some(pair(&p.device)),
                    spec: ActionSpec::SetProperty {
                        product_key: literal(&p.device.product_key),
                        device_name: literal(&p.device.device_name),
                        params: json_object(&p.params, "property-set params")?,
                    },
                }
            }
            types::Action::InvokeService(c) => {
                authorize(CapabilityRequest::Device {
                    product_key: &c.device.product_key,
                    device_name: &c.device.device_name,
                    operation: DeviceCall::InvokeService {
                        identifier: &c.identifier,
                    },
                })?;
                PluginAction {
                    device: Some(pair(&c.device)),
                    spec: ActionSpec::InvokeService {
                        product_key: literal(&c.device.product_key),
                        device_name: literal(&c.device.device_name),
                        identifier: c.identifier,
                        params: json_object(&c.params, "service-call params")?,
                    },
                }
            }
            types::Action::Republish(r) => {
                authorize(CapabilityRequest::Publish { topic: &r.topic })?;
                PluginAction {
                    device: None,
                    spec: ActionSpec::Republish {
                        topic: literal(&r.topic),
                        qos: r.qos,
                        payload: Some(literal(&String::from_utf8_lossy(&r.payload))),
                    },
                }
            }
            types::Action::Notify(n) => PluginAction {
                device: None,
                spec: ActionSpec::Notify {
                    channel: n.channel,
                    to: n.recipients.iter().map(|r| recipient(r)).collect(),
                    subject: literal(&n.subject),
                    body: literal(&n.body),
                    level: None,
                },
            },
        })
    }
}

#[async_trait]
impl WorldPlugins for RuntimeWorlds {
    async fn evaluate(
        &self,
        plugin: &str,
        trigger: &RuleTrigger,
    ) -> Result<Vec<PluginAction>, String> {
        let rule = self
            .0
            .rule(plugin)
            .ok_or_else(|| format!("plugin `{plugin}` is not a running rule plugin"))?;
        let input = wit_trigger(trigger);
        let rule_device = match trigger {
            RuleTrigger::Message {
                product_key,
                device_name,
                ..
            }
            | RuleTrigger::Status {
                product_key,
                device_name,
                ..
            } => Some((product_key.as_str(), device_name.as_str())),
            RuleTrigger::Event(e) => e.device.as_ref().map(|(p, d)| (p.as_str(), d.as_str())),
            RuleTrigger::Timer(_) => None,
        };
        let actions = tokio::task::spawn_blocking(move || rule.evaluate(&input))
            .await
            .map_err(|e| format!("rule plugin `{plugin}` panicked: {e}"))?
            .map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(actions.len());
        let mut refused = Vec::new();
        for action in actions {
            match self.action(plugin, action, Some(rule_device)) {
                Ok(a) => out.push(a),
                Err(e) => refused.push(e),
            }
        }
        // Refused actions do not cancel the others; with nothing left, the rule reports why.
        if out.is_empty() && !refused.is_empty() {
            return Err(format!("every action was refused: {}", refused.join("; ")));
        }
        for e in refused {
            tracing::warn!(plugin, error = %e, "rule plugin action refused");
        }
        Ok(out)
    }

    fn listeners(&self, event: &PlatformEvent) -> Vec<Listener> {
        self.0
            .list()
            .into_iter()
            .filter(|p| p.is_active())
            .filter_map(|p| {
                let world = match p.world {
                    World::EventHandler => ListenerWorld::EventHandler,
                    World::App => ListenerWorld::App,
                    _ => return None,
                };
                let products = self.0.manifest(&p.id)?.products;
                let wanted = match &event.device {
                    Some((pk, _)) => products.is_empty() || products.contains(pk),
                    None => true,
                };
                wanted.then_some(Listener {
                    plugin: p.id,
                    world,
                })
            })
            .collect()
    }

    async fn handle(
        &self,
        plugin: &str,
        event: &PlatformEvent,
    ) -> Result<Vec<PluginAction>, String> {
        let handler = self
            .0
            .event_handler(plugin)
            .ok_or_else(|| format!("plugin `{plugin}` is not a running event handler"))?;
        let input = wit_event(event);
        let actions = tokio::task::spawn_blocking(move || handler.handle(&input))
            .await
            .map_err(|e| format!("event handler `{plugin}` panicked: {e}"))?
            .map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(actions.len());
        for action in actions {
            match self.action(plugin, action, None) {
                Ok(a) => out.push(a),
                Err(e) => {
                    // One refused action does not cancel the others the handler asked for.
                    tracing::warn!(plugin, error = %e, "event handler action refused");
                }
            }
        }
        Ok(out)
    }

    async fn app_event(&self, plugin: &str, event: &PlatformEvent) -> Result<(), String> {
        let app = self
            .0
            .app(plugin)
            .ok_or_else(|| format!("plugin `{plugin}` is not a running app"))?;
        let input = wit_event(event);
        tokio::task::spawn_blocking(move || app.on_event(&input))
            .await
            .map_err(|e| format!("app `{plugin}` panicked: {e}"))?
            .map_err(|e| e.to_string())
    }

    async fn app_message(&self, plugin: &str, context: &Value) -> Result<(), String> {
        let app = self
            .0
            .app(plugin)
            .ok_or_else(|| format!("plugin `{plugin}` is not a running app"))?;
        let device = &context["device"];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let message = types::DeviceMessage {
            context: types::MessageContext {
                product_key: text(&device["productKey"]),
                device_name: text(&device["deviceName"]),
                topic: text(&context["topic"]),
                at_ms: context["at"].as_i64().unwrap_or_default(),
            },
            method: text(&context["method"]),
            params: context["data"].to_string(),
        };
        tokio::task::spawn_blocking(move || app.on_message(&message))
            .await
            .map_err(|e| format!("app `{plugin}` panicked: {e}"))?
            .map_err(|e| e.to_string())
    }
}
