//! The smallest useful `event-handler`: acknowledges raised alarms through the `event`
//! capability and asks for an SMS.
wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "event-handler" });

use lotus::plugin::event;
use lotus::plugin::types::Notification;

struct MinimalEventHandler;

impl Guest for MinimalEventHandler {
    fn handle(event: PlatformEvent) -> Result<Vec<Action>, String> {
        if event.kind != "alarm.raised" {
            return Ok(Vec::new());
        }
        event::update(
            &event.id,
            "processing",
            "acknowledged by minimal-event-handler",
        )
        .map_err(|e| format!("cannot update event {}: {e:?}", event.id))?;
        Ok(vec![Action::Notify(Notification {
            channel: "sms".to_string(),
            recipients: vec!["duty-officer".to_string()],
            subject: format!("{} (severity {})", event.event_type, event.severity),
            body: event.fields,
        })])
    }
}

export!(MinimalEventHandler);
