//! The smallest useful `rule`: raises an overheat alarm above 30 °C and an offline alarm when a
//! device drops; timer ticks only log.
wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "rule" });

use lotus::plugin::log::{Level, log};
use lotus::plugin::types::{Alarm, DeviceStatus};

struct MinimalRule;

impl Guest for MinimalRule {
    fn evaluate(trigger: Trigger) -> Result<Vec<Action>, String> {
        match trigger {
            Trigger::Message(message) => {
                let params: serde_json::Value = serde_json::from_str(&message.params)
                    .map_err(|e| format!("params is not JSON: {e}"))?;
                let temperature = params
                    .get("temperature")
                    .and_then(serde_json::Value::as_f64);
                Ok(match temperature {
                    Some(t) if t > 30.0 => vec![Action::RaiseAlarm(Alarm {
                        device: lotus::plugin::types::DeviceRef {
                            product_key: message.context.product_key,
                            device_name: message.context.device_name,
                        },
                        alarm_type: "overheat".to_string(),
                        severity: 2,
                        message: format!("temperature {t} above 30"),
                    })],
                    _ => Vec::new(),
                })
            }
            Trigger::Status(change) if change.status == DeviceStatus::Offline => {
                Ok(vec![Action::RaiseAlarm(Alarm {
                    device: change.device,
                    alarm_type: "offline".to_string(),
                    severity: 1,
                    message: format!("offline: {}", change.reason),
                })])
            }
            Trigger::Status(_) | Trigger::Event(_) => Ok(Vec::new()),
            Trigger::Timer(name) => {
                log(
                    Level::Info,
                    &format!("tick {name} at {}", lotus::plugin::clock::now_ms()),
                );
                Ok(Vec::new())
            }
        }
    }
}

export!(MinimalRule);
