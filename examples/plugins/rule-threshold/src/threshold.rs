//! Threshold crossing, without host calls so it tests natively.

use lotus_plugin_sdk::serde_json::{self, Map, Value};

/// One threshold from kv `thresholds`:
/// `{"property": "WaterTemperature", "above": 60, "alarm": "overheat", "severity": 3}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub property: String,
    pub above: Option<f64>,
    pub below: Option<f64>,
    /// The alarm type, the de-duplication key per device.
    pub alarm: String,
    pub severity: u8,
    /// How far back across the threshold the value must come before the alarm clears, so a
    /// value hovering at the threshold does not raise and clear on every report.
    pub hysteresis: f64,
}

pub fn parse_thresholds(text: &str) -> Result<Vec<Threshold>, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("kv `thresholds` is not JSON: {e}"))?;
    let Value::Array(items) = value else {
        return Err("kv `thresholds` must be a JSON array".to_owned());
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let field = |name: &str| item.get(name);
            let number = |name: &str| match field(name) {
                None => Ok(None),
                Some(v) => v
                    .as_f64()
                    .map(Some)
                    .ok_or_else(|| format!("thresholds[{i}].{name} must be a number")),
            };
            let text = |name: &str| {
                field(name)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| format!("thresholds[{i}].{name} must be a string"))
            };
            let threshold = Threshold {
                property: text("property")?,
                above: number("above")?,
                below: number("below")?,
                alarm: text("alarm")?,
                severity: number("severity")?.map_or(Ok(2), |s| {
                    u8::try_from(s as i64)
                        .map_err(|_| format!("thresholds[{i}].severity must be 0..=255"))
                })?,
                hysteresis: number("hysteresis")?.unwrap_or(0.0),
            };
            if threshold.above.is_none() && threshold.below.is_none() {
                return Err(format!("thresholds[{i}] needs `above` or `below`"));
            }
            Ok(threshold)
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Raise { message: String },
    Clear,
}

/// What a new value means for an alarm that is (`active`) or is not raised.
pub fn check(threshold: &Threshold, value: f64, active: bool) -> Option<Change> {
    let beyond = threshold.above.is_some_and(|limit| value > limit)
        || threshold.below.is_some_and(|limit| value < limit);
    let back = threshold
        .above
        .is_none_or(|limit| value <= limit - threshold.hysteresis)
        && threshold
            .below
            .is_none_or(|limit| value >= limit + threshold.hysteresis);
    match (active, beyond) {
        (false, true) => {
            let bound = match (threshold.above, threshold.below) {
                (Some(limit), _) if value > limit => format!("above {limit}"),
                (_, Some(limit)) => format!("below {limit}"),
                _ => unreachable!("beyond means one limit is crossed"),
            };
            Some(Change::Raise {
                message: format!("{} is {value}, {bound}", threshold.property),
            })
        }
        (true, false) if back => Some(Change::Clear),
        _ => None,
    }
}

/// The changes a property post causes. `active` says whether an alarm type is raised now.
pub fn evaluate(
    thresholds: &[Threshold],
    values: &Map<String, Value>,
    active: impl Fn(&str) -> bool,
) -> Vec<(usize, Change)> {
    thresholds
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let value = values.get(&t.property)?.as_f64()?;
            check(t, value, active(&t.alarm)).map(|change| (i, change))
        })
        .collect()
}
