//! Routing alarms to actions, without host calls so it tests natively.

use lotus_plugin_sdk::actions;
use lotus_plugin_sdk::serde_json::{self, Value, json};
use lotus_plugin_sdk::types::{Action, PlatformEvent};

/// One route from kv `routes`.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// The alarm's event type, or `*` for any.
    pub event_type: String,
    pub min_severity: u8,
    /// The event type of the work event to open, if any.
    pub create_event: Option<String>,
    pub channel: Option<String>,
    pub recipients: Vec<String>,
}

pub fn parse_routes(text: &str) -> Result<Vec<Route>, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("kv `routes` is not JSON: {e}"))?;
    let items = value.as_array().ok_or("kv `routes` must be a JSON array")?;
    items
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let text = |name: &str| -> Result<Option<String>, String> {
                match r.get(name) {
                    None => Ok(None),
                    Some(Value::String(s)) => Ok(Some(s.clone())),
                    Some(_) => Err(format!("routes[{i}].{name} must be a string")),
                }
            };
            let route = Route {
                event_type: text("eventType")?
                    .ok_or(format!("routes[{i}].eventType is missing"))?,
                min_severity: match r.get("minSeverity") {
                    None => 0,
                    Some(v) => v
                        .as_u64()
                        .and_then(|s| u8::try_from(s).ok())
                        .ok_or(format!("routes[{i}].minSeverity must be 0..=255"))?,
                },
                create_event: text("createEvent")?,
                channel: text("channel")?,
                recipients: match r.get("recipients") {
                    None => Vec::new(),
                    Some(v) => serde_json::from_value(v.clone()).map_err(|_| {
                        format!("routes[{i}].recipients must be an array of strings")
                    })?,
                },
            };
            if route.channel.is_some() && route.recipients.is_empty() {
                return Err(format!("routes[{i}] names a channel but no recipients"));
            }
            Ok(route)
        })
        .collect()
}

/// The actions for an event: those of the first route that matches a raised alarm.
pub fn dispatch(event: &PlatformEvent, routes: &[Route]) -> Vec<Action> {
    if event.kind != "alarm.raised" {
        return Vec::new();
    }
    let Some(route) = routes.iter().find(|r| {
        (r.event_type == "*" || r.event_type == event.event_type)
            && event.severity >= r.min_severity
    }) else {
        return Vec::new();
    };
    let device = event.device.as_ref().map_or_else(
        || "the platform".to_owned(),
        |d| format!("{}/{}", d.product_key, d.device_name),
    );
    let title = format!("{} on {device}", event.event_type);
    let mut out = Vec::new();
    if let Some(event_type) = &route.create_event {
        // The work event links back to the alarm and carries its fields for the crew.
        let fields = serde_json::from_str::<Value>(&event.fields).unwrap_or(Value::Null);
        let fields = json!({ "alarmId": event.id, "alarmFields": fields });
        out.push(actions::create_event(
            event_type.clone(),
            event.severity,
            event.device.clone(),
            title.clone(),
            &fields,
        ));
    }
    if let Some(channel) = &route.channel {
        let body = format!(
            "Severity {}: {title}. Alarm {}. Details: {}",
            event.severity, event.id, event.fields
        );
        out.push(actions::notify(
            channel.clone(),
            route.recipients.clone(),
            title,
            body,
        ));
    }
    out
}
