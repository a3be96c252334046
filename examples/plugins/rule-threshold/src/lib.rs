//! A rule that raises an alarm when a property crosses a threshold and clears it on return.

mod threshold;

use lotus_plugin_sdk::host::{kv, log};
use lotus_plugin_sdk::types::{Action, DeviceRef};
use lotus_plugin_sdk::{Rule, Trigger, actions, export_rule, message_values};

use threshold::Change;

struct ThresholdRule;

/// The host de-duplicates alarms while active, but this rule must know whether it raised one
/// to clear it once, so it keeps that per device and alarm type.
fn active_key(device: &DeviceRef, alarm: &str) -> String {
    format!(
        "active/{}/{}/{alarm}",
        device.product_key, device.device_name
    )
}

impl Rule for ThresholdRule {
    fn evaluate(trigger: Trigger) -> Result<Vec<Action>, String> {
        let Trigger::Message(message) = trigger else {
            return Ok(Vec::new());
        };
        if message.method != "thing.event.property.post" {
            return Ok(Vec::new());
        }
        let Some(config) = kv::get_string("thresholds")
            .map_err(|e| format!("kv `thresholds`: {err}", err = e.describe()))?
        else {
            log::warn("no thresholds configured in kv `thresholds`; nothing to check");
            return Ok(Vec::new());
        };
        let thresholds = threshold::parse_thresholds(&config)?;
        let values = message_values(&message)?;
        let device = DeviceRef {
            product_key: message.context.product_key.clone(),
            device_name: message.context.device_name.clone(),
        };
        let changes = threshold::evaluate(&thresholds, &values, |alarm| {
            matches!(kv::get(&active_key(&device, alarm)), Ok(Some(_)))
        });
        let mut out = Vec::with_capacity(changes.len());
        for (i, change) in changes {
            let t = &thresholds[i];
            let key = active_key(&device, &t.alarm);
            match change {
                Change::Raise { message } => {
                    kv::set(&key, b"1").map_err(|e| {
                        format!("remembering alarm {}: {err}", t.alarm, err = e.describe())
                    })?;
                    out.push(actions::raise_alarm(
                        device.clone(),
                        t.alarm.clone(),
                        t.severity,
                        message,
                    ));
                }
                Change::Clear => {
                    kv::delete(&key).map_err(|e| {
                        format!("forgetting alarm {}: {err}", t.alarm, err = e.describe())
                    })?;
                    out.push(actions::clear_alarm(device.clone(), t.alarm.clone()));
                }
            }
        }
        Ok(out)
    }
}

export_rule!(ThresholdRule);

#[cfg(test)]
mod tests {
    use super::threshold::{self, Change, Threshold};
    use lotus_plugin_sdk::serde_json::json;

    const CONFIG: &str = r#"[
        {"property": "WaterTemperature", "above": 60, "alarm": "overheat", "severity": 3, "hysteresis": 2},
        {"property": "BatteryLevel", "below": 10, "alarm": "low-battery"}
    ]"#;

    fn thresholds() -> Vec<Threshold> {
        threshold::parse_thresholds(CONFIG).unwrap()
    }

    #[test]
    fn raises_once_when_crossing_and_clears_after_hysteresis() {
        let t = &thresholds()[0];
        assert_eq!(
            threshold::check(t, 61.0, false),
            Some(Change::Raise {
                message: "WaterTemperature is 61, above 60".into()
            })
        );
        assert_eq!(threshold::check(t, 65.0, true), None, "already raised");
        assert_eq!(
            threshold::check(t, 59.0, true),
            None,
            "inside the hysteresis band"
        );
        assert_eq!(threshold::check(t, 58.0, true), Some(Change::Clear));
        assert_eq!(threshold::check(t, 58.0, false), None);
    }

    #[test]
    fn below_threshold_and_unrelated_properties() {
        let values = json!({"BatteryLevel": 7, "Flow": 1.0});
        let changes = threshold::evaluate(&thresholds(), values.as_object().unwrap(), |_| false);
        assert_eq!(
            changes,
            vec![(
                1,
                Change::Raise {
                    message: "BatteryLevel is 7, below 10".into()
                }
            )]
        );
        assert_eq!(thresholds()[1].severity, 2);
    }

    #[test]
    fn config_errors_name_the_entry() {
        assert_eq!(
            threshold::parse_thresholds(r#"[{"property":"A","alarm":"x"}]"#).unwrap_err(),
            "thresholds[0] needs `above` or `below`"
        );
        assert_eq!(
            threshold::parse_thresholds(r#"[{"property":"A","alarm":"x","above":"hot"}]"#)
                .unwrap_err(),
            "thresholds[0].above must be a number"
        );
        assert!(threshold::parse_thresholds("{}").is_err());
    }
}
