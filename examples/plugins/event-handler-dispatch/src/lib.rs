//! An event handler that opens a work event and notifies people when an alarm is raised.

mod dispatch;

use lotus_plugin_sdk::host::{kv, log};
use lotus_plugin_sdk::types::{Action, PlatformEvent};
use lotus_plugin_sdk::{EventHandler, export_event_handler};

struct Dispatch;

impl EventHandler for Dispatch {
    fn handle(event: PlatformEvent) -> Result<Vec<Action>, String> {
        let Some(routes) = kv::get_string("routes")
            .map_err(|e| format!("kv `routes`: {err}", err = e.describe()))?
        else {
            log::warn("no routes configured in kv `routes`; alarm not dispatched");
            return Ok(Vec::new());
        };
        let actions = dispatch::dispatch(&event, &dispatch::parse_routes(&routes)?);
        if actions.is_empty() && event.kind == "alarm.raised" {
            log::info(&format!(
                "no route for {} (severity {})",
                event.event_type, event.severity
            ));
        }
        Ok(actions)
    }
}

export_event_handler!(Dispatch);

#[cfg(test)]
mod tests {
    use super::dispatch::{self, Route};
    use lotus_plugin_sdk::serde_json::{Value, json};
    use lotus_plugin_sdk::types::{Action, DeviceRef, PlatformEvent};

    const ROUTES: &str = r#"[
        {"eventType": "manhole.open", "minSeverity": 2, "createEvent": "manhole.inspection",
         "channel": "sms", "recipients": ["+8613800000001"]},
        {"eventType": "*", "minSeverity": 4, "channel": "ops-mail", "recipients": ["ops@city.example"]}
    ]"#;

    fn routes() -> Vec<Route> {
        dispatch::parse_routes(ROUTES).unwrap()
    }

    fn alarm(event_type: &str, severity: u8) -> PlatformEvent {
        PlatformEvent {
            id: "alm-17".into(),
            kind: "alarm.raised".into(),
            event_type: event_type.into(),
            severity,
            device: Some(DeviceRef {
                product_key: "a1Manhole".into(),
                device_name: "MH-0042".into(),
            }),
            fields: r#"{"TiltAngle":35}"#.into(),
            at_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn manhole_alarm_opens_inspection_and_texts_the_crew() {
        let actions = dispatch::dispatch(&alarm("manhole.open", 3), &routes());
        let [Action::CreateEvent(event), Action::Notify(sms)] = actions.as_slice() else {
            panic!("{actions:?}")
        };
        assert_eq!(event.event_type, "manhole.inspection");
        assert_eq!(event.title, "manhole.open on a1Manhole/MH-0042");
        let fields: Value = lotus_plugin_sdk::serde_json::from_str(&event.fields).unwrap();
        assert_eq!(
            fields,
            json!({"alarmId": "alm-17", "alarmFields": {"TiltAngle": 35}})
        );
        assert_eq!(
            (sms.channel.as_str(), sms.recipients.as_slice()),
            ("sms", &["+8613800000001".to_owned()][..])
        );
        assert!(sms.body.contains("alm-17"), "{}", sms.body);
    }

    #[test]
    fn severity_and_kind_filter() {
        // Too mild for the manhole route and for the catch-all.
        assert!(dispatch::dispatch(&alarm("manhole.open", 1), &routes()).is_empty());
        // Severe alarms of any type reach ops by mail only.
        let actions = dispatch::dispatch(&alarm("pump.fault", 4), &routes());
        assert!(matches!(actions.as_slice(), [Action::Notify(n)] if n.channel == "ops-mail"));
        let mut step = alarm("manhole.open", 5);
        step.kind = "ota.step".into();
        assert!(dispatch::dispatch(&step, &routes()).is_empty());
    }

    #[test]
    fn route_errors_name_the_entry() {
        assert_eq!(
            dispatch::parse_routes(r#"[{"eventType":"x","channel":"sms"}]"#).unwrap_err(),
            "routes[0] names a channel but no recipients"
        );
        assert_eq!(
            dispatch::parse_routes(r#"[{"channel":"sms"}]"#).unwrap_err(),
            "routes[0].eventType is missing"
        );
    }
}
