//! An event handler that exercises both ways a plugin creates events on a node: on
//! `alarm.raised` it raises one through the `event` host interface and moves it to
//! `processing`, and returns a `create-event` action for another. Node tests check that both
//! reach the event center.
wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "event-handler" });

use lotus::plugin::event;
use lotus::plugin::types::EventInput;

struct RelayEventHandler;

impl Guest for RelayEventHandler {
    fn handle(alarm: PlatformEvent) -> Result<Vec<Action>, String> {
        if alarm.kind != "alarm.raised" {
            return Ok(Vec::new());
        }
        let fields = format!("{{\"alarmId\":\"{}\"}}", alarm.id);
        let number = event::raise(&EventInput {
            event_type: "relay.raised".to_string(),
            severity: 0,
            device: alarm.device.clone(),
            title: format!("raised by relay for alarm {}", alarm.id),
            fields: fields.clone(),
        })
        .map_err(|e| format!("cannot raise an event: {e:?}"))?;
        event::update(&number, "processing", "taken by relay-event-handler")
            .map_err(|e| format!("cannot update event {number}: {e:?}"))?;
        Ok(vec![Action::CreateEvent(EventInput {
            event_type: "relay.followup".to_string(),
            severity: 3,
            device: alarm.device,
            title: format!("follow-up of {number} {{{{ not a template }}}}"),
            fields,
        })])
    }
}

export!(RelayEventHandler);
