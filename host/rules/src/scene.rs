//! Scene linkage: "property P of a device crosses threshold Z and holds for T seconds".
//!
//! A [`SceneCondition`] names a property of the Alink property-post payload, a comparison and
//! a hold time. A [`SceneTracker`] (one per rule) follows every device's readings and reports a
//! [`SceneTransition::Entered`] once per episode, when the condition has held continuously for
//! the hold time, and a [`SceneTransition::Left`] when it stops holding afterwards.
//!
//! The property is a dotted path inside the payload's `params` object: `"temperature"` reads
//! `params.temperature`, `"room.temperature"` reads `params.room.temperature`. The value there
//! is either a number or an object `{ "value": number, "time": ms }` as Alink posts it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The longest hold time a condition may ask for: 7 days.
pub const MAX_HOLD_SECS: u64 = 7 * 24 * 60 * 60;

/// How many devices a tracker follows unless told otherwise.
pub const DEFAULT_MAX_DEVICES: usize = 100_000;

/// A comparison between a reading and the threshold; serialized as its symbol (`">"`), and
/// also read from the names `gt`, `ge`, `lt`, `le`, `eq`, `ne`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CompareOp {
    /// `>`
    #[serde(rename = ">", alias = "gt")]
    Gt,
    /// `>=`
    #[serde(rename = ">=", alias = "ge")]
    Ge,
    /// `<`
    #[serde(rename = "<", alias = "lt")]
    Lt,
    /// `<=`
    #[serde(rename = "<=", alias = "le")]
    Le,
    /// `=`: exact equality, meant for integer-valued readings such as states and counts.
    #[serde(rename = "=", alias = "eq", alias = "==")]
    Eq,
    /// `!=`
    #[serde(rename = "!=", alias = "ne", alias = "<>")]
    Ne,
}

impl CompareOp {
    /// Whether `value op threshold` holds.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            CompareOp::Gt => value > threshold,
            CompareOp::Ge => value >= threshold,
            CompareOp::Lt => value < threshold,
            CompareOp::Le => value <= threshold,
            CompareOp::Eq => value == threshold,
            CompareOp::Ne => value != threshold,
        }
    }

    /// The operator's symbol, e.g. `">="`.
    pub fn symbol(self) -> &'static str {
        match self {
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Eq => "=",
            CompareOp::Ne => "!=",
        }
    }
}

impl fmt::Display for CompareOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

impl FromStr for CompareOp {
    type Err = SceneError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text.trim() {
            ">" | "gt" => CompareOp::Gt,
            ">=" | "ge" => CompareOp::Ge,
            "<" | "lt" => CompareOp::Lt,
            "<=" | "le" => CompareOp::Le,
            "=" | "==" | "eq" => CompareOp::Eq,
            "!=" | "<>" | "ne" => CompareOp::Ne,
            _ => return Err(SceneError::UnknownOperator(text.to_owned())),
        })
    }
}

/// Why a scene condition or tracker setting is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SceneError {
    /// The property path is empty.
    #[error("the property must not be empty; give its identifier, e.g. \"temperature\"")]
    EmptyProperty,
    /// The property path has an empty name between dots.
    #[error(
        "the property '{0}' has an empty name between dots; write names separated by single dots, e.g. \"room.temperature\""
    )]
    EmptyPropertySegment(String),
    /// The threshold is NaN or infinite.
    #[error("the threshold must be a finite number")]
    NonFiniteThreshold,
    /// The hold time exceeds [`MAX_HOLD_SECS`].
    #[error("holdForSecs is {0} s, more than the maximum of 604800 s (7 days)")]
    HoldTooLong(u64),
    /// The comparison is not one of the supported operators.
    #[error("unknown comparison '{0}'; use one of >, >=, <, <=, =, !=")]
    UnknownOperator(String),
    /// The tracker was asked to follow no devices at all.
    #[error("the device limit must be at least 1")]
    ZeroDeviceLimit,
}

/// "`property` `op` `threshold` for at least `hold_for_secs` seconds".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "RawSceneCondition")]
pub struct SceneCondition {
    /// Dotted path inside the property post's `params`, e.g. `"temperature"`.
    pub property: String,
    /// How the reading is compared with the threshold.
    pub op: CompareOp,
    /// The value the reading is compared with; finite.
    pub threshold: f64,
    /// How long the condition must hold before the scene is entered; 0 enters at once, at
    /// most [`MAX_HOLD_SECS`].
    pub hold_for_secs: u64,
}

/// The unchecked wire form; deserializing goes through [`SceneCondition::validate`].
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSceneCondition {
    property: String,
    op: CompareOp,
    threshold: f64,
    #[serde(default)]
    hold_for_secs: u64,
}

impl TryFrom<RawSceneCondition> for SceneCondition {
    type Error = SceneError;

    fn try_from(raw: RawSceneCondition) -> Result<Self, Self::Error> {
        SceneCondition::new(raw.property, raw.op, raw.threshold, raw.hold_for_secs)
    }
}

impl SceneCondition {
    /// A validated condition.
    pub fn new(
        property: impl Into<String>,
        op: CompareOp,
        threshold: f64,
        hold_for_secs: u64,
    ) -> Result<Self, SceneError> {
        let condition = SceneCondition {
            property: property.into(),
            op,
            threshold,
            hold_for_secs,
        };
        condition.validate()?;
        Ok(condition)
    }

    /// Checks the property path, the threshold and the hold time.
    pub fn validate(&self) -> Result<(), SceneError> {
        if self.property.trim().is_empty() {
            return Err(SceneError::EmptyProperty);
        }
        if self.property.split('.').any(str::is_empty) {
            return Err(SceneError::EmptyPropertySegment(self.property.clone()));
        }
        if !self.threshold.is_finite() {
            return Err(SceneError::NonFiniteThreshold);
        }
        if self.hold_for_secs > MAX_HOLD_SECS {
            return Err(SceneError::HoldTooLong(self.hold_for_secs));
        }
        Ok(())
    }

    /// Whether a reading satisfies the comparison (ignoring the hold time).
    pub fn holds(&self, value: f64) -> bool {
        self.op.holds(value, self.threshold)
    }
}

/// A change of a device's scene state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum SceneTransition {
    /// The condition has held for the hold time; `since_ms` is when it started holding.
    Entered {
        /// The device id as given to [`SceneTracker::observe`].
        device: String,
        /// When the condition started to hold, ms since the Unix epoch.
        since_ms: i64,
    },
    /// The condition stopped holding after the scene was entered.
    Left {
        /// The device id as given to [`SceneTracker::observe`].
        device: String,
        /// Time of the reading that ended the episode, ms since the Unix epoch.
        at_ms: i64,
    },
}

#[derive(Debug, Clone)]
struct Episode {
    since_ms: i64,
    last_at_ms: i64,
    entered: bool,
    /// Position in the update order, for evicting the device updated longest ago.
    updated: u64,
}

/// Follows one scene condition across devices.
///
/// Memory is bounded: only devices whose condition currently holds are tracked (a reading
/// that does not satisfy the condition ends the episode and drops the device), and at most
/// `max_devices` are tracked at once. When a new device would exceed the limit, the device
/// whose last reading is oldest is evicted silently: its episode is forgotten and no `Left`
/// is reported for it. [`SceneTracker::forget`] drops a device explicitly, e.g. when it is
/// deleted.
///
/// Readings older than the last one accepted for a device are ignored, so that a late
/// message cannot end or extend an episode out of order.
#[derive(Debug, Clone)]
pub struct SceneTracker {
    condition: SceneCondition,
    path: Vec<Box<str>>,
    hold_ms: i64,
    max_devices: usize,
    episodes: HashMap<Arc<str>, Episode>,
    update_order: BTreeMap<u64, Arc<str>>,
    /// Devices holding but not yet entered, by the time they are due to enter.
    due: BTreeSet<(i64, Arc<str>)>,
    next_update: u64,
}

impl SceneTracker {
    /// A tracker for `condition` following at most [`DEFAULT_MAX_DEVICES`] devices.
    pub fn new(condition: SceneCondition) -> Result<Self, SceneError> {
        Self::with_max_devices(condition, DEFAULT_MAX_DEVICES)
    }

    /// A tracker following at most `max_devices` devices at once (at least 1).
    pub fn with_max_devices(
        condition: SceneCondition,
        max_devices: usize,
    ) -> Result<Self, SceneError> {
        condition.validate()?;
        if max_devices == 0 {
            return Err(SceneError::ZeroDeviceLimit);
        }
        Ok(SceneTracker {
            path: condition.property.split('.').map(Box::from).collect(),
            hold_ms: (condition.hold_for_secs * 1000) as i64,
            condition,
            max_devices,
            episodes: HashMap::new(),
            update_order: BTreeMap::new(),
            due: BTreeSet::new(),
            next_update: 0,
        })
    }

    /// The condition being tracked.
    pub fn condition(&self) -> &SceneCondition {
        &self.condition
    }

    /// The device limit.
    pub fn max_devices(&self) -> usize {
        self.max_devices
    }

    /// How many devices are currently tracked (their condition holds).
    pub fn tracked_devices(&self) -> usize {
        self.episodes.len()
    }

    /// Whether the device is in an entered episode.
    pub fn is_entered(&self, device: &str) -> bool {
        self.episodes.get(device).is_some_and(|e| e.entered)
    }

    /// Since when the device's condition has held, if it does.
    pub fn holding_since(&self, device: &str) -> Option<i64> {
        self.episodes.get(device).map(|e| e.since_ms)
    }

    /// Reads the condition's property from an Alink property-post payload:
    /// `params.<property>` as a number, or the `value` of a `{ "value": .., "time": .. }`
    /// object. Anything else (missing, string, boolean) is `None`.
    pub fn extract(&self, payload: &Value) -> Option<f64> {
        let found = self
            .path
            .iter()
            .try_fold(payload.get("params")?, |value, key| value.get(key.as_ref()))?;
        match found {
            Value::Number(n) => n.as_f64(),
            Value::Object(fields) => fields.get("value")?.as_f64(),
            _ => None,
        }
    }

    /// Feeds one reading of `device` taken at `at_ms`. `None` (a missing or non-numeric
    /// reading) changes nothing. Returns `Entered` when this reading completes the hold time
    /// (at once when it is 0), `Left` when it ends an entered episode.
    pub fn observe(
        &mut self,
        device: &str,
        value: Option<f64>,
        at_ms: i64,
    ) -> Option<SceneTransition> {
        let value = value.filter(|v| v.is_finite())?;
        let holds = self.condition.holds(value);
        let Some((key, episode)) = self.episodes.get_key_value(device) else {
            if holds {
                return self.start(device, at_ms);
            }
            return None;
        };
        if at_ms < episode.last_at_ms {
            return None;
        }
        let key = Arc::clone(key);
        let (entered, previous) = (episode.entered, episode.updated);
        if !holds {
            self.remove(&key);
            return entered.then(|| SceneTransition::Left {
                device: device.to_owned(),
                at_ms,
            });
        }
        let updated = self.touch(&key, previous);
        let episode = self.episodes.get_mut(device)?;
        episode.last_at_ms = at_ms;
        episode.updated = updated;
        if !episode.entered && at_ms.saturating_sub(episode.since_ms) >= self.hold_ms {
            episode.entered = true;
            let since_ms = episode.since_ms;
            let due_at = self.due_at(since_ms);
            self.due.remove(&(due_at, key));
            return Some(SceneTransition::Entered {
                device: device.to_owned(),
                since_ms,
            });
        }
        None
    }

    /// [`observe`](Self::observe) with the reading taken from a property-post payload.
    pub fn observe_payload(
        &mut self,
        device: &str,
        payload: &Value,
        at_ms: i64,
    ) -> Option<SceneTransition> {
        let value = self.extract(payload);
        self.observe(device, value, at_ms)
    }

    /// Enters the scene for every device whose condition has held for the hold time by
    /// `now_ms` without a newer reading (devices may report rarely), in the order they came due.
    pub fn tick(&mut self, now_ms: i64) -> Vec<SceneTransition> {
        let mut entered = Vec::new();
        while let Some((due_at, _)) = self.due.first() {
            if *due_at > now_ms {
                break;
            }
            let Some((_, device)) = self.due.pop_first() else {
                break;
            };
            if let Some(episode) = self.episodes.get_mut(&device) {
                episode.entered = true;
                entered.push(SceneTransition::Entered {
                    device: device.to_string(),
                    since_ms: episode.since_ms,
                });
            }
        }
        entered
    }

    /// Stops tracking `device`; returns whether it was tracked. No transition is reported.
    pub fn forget(&mut self, device: &str) -> bool {
        match self.episodes.get_key_value(device) {
            Some((key, _)) => {
                let key = Arc::clone(key);
                self.remove(&key);
                true
            }
            None => false,
        }
    }

    fn start(&mut self, device: &str, at_ms: i64) -> Option<SceneTransition> {
        if self.episodes.len() >= self.max_devices
            && let Some((_, oldest)) = self.update_order.first_key_value()
        {
            let oldest = Arc::clone(oldest);
            self.remove(&oldest);
        }
        let key: Arc<str> = Arc::from(device);
        let updated = self.next_update;
        self.next_update += 1;
        self.update_order.insert(updated, Arc::clone(&key));
        let entered = self.hold_ms == 0;
        if !entered {
            self.due.insert((self.due_at(at_ms), Arc::clone(&key)));
        }
        self.episodes.insert(
            key,
            Episode {
                since_ms: at_ms,
                last_at_ms: at_ms,
                entered,
                updated,
            },
        );
        entered.then(|| SceneTransition::Entered {
            device: device.to_owned(),
            since_ms: at_ms,
        })
    }

    /// When an episode that started at `since_ms` has held long enough.
    fn due_at(&self, since_ms: i64) -> i64 {
        since_ms.saturating_add(self.hold_ms)
    }

    /// Moves `key` to the newest position of the update order.
    fn touch(&mut self, key: &Arc<str>, previous: u64) -> u64 {
        self.update_order.remove(&previous);
        let updated = self.next_update;
        self.next_update += 1;
        self.update_order.insert(updated, Arc::clone(key));
        updated
    }

    fn remove(&mut self, key: &Arc<str>) {
        if let Some(episode) = self.episodes.remove(key) {
            self.update_order.remove(&episode.updated);
            if !episode.entered {
                let due_at = self.due_at(episode.since_ms);
                self.due.remove(&(due_at, Arc::clone(key)));
            }
        }
    }
}

/// Which devices of a product a scene watches, besides the product itself: those in an
/// administrative region (the device's own region, or its product's) or below it, or those in a
/// device group. Lotus has no separate group object: a device's group is its `group` tag
/// (`{"group": "lakeside-lamps"}`), which devices and operators already set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum SceneScope {
    /// `{"region": "/hz/xihu"}`: devices whose region is `/hz/xihu` or below it.
    Region(String),
    /// `{"group": "lakeside-lamps"}`: devices whose `group` tag is this name.
    Group(String),
}

/// The device tag that names a device's group.
pub const GROUP_TAG: &str = "group";

impl SceneScope {
    /// Checks the region path or group name; the text says what to write instead.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            SceneScope::Region(region) => lotus_model::scope::parse_region(region)
                .map(|_| ())
                .map_err(|e| format!("region: {e}")),
            SceneScope::Group(name) if name.trim().is_empty() => Err(
                "group: name the device group (the devices' `group` tag), e.g. \"lakeside-lamps\""
                    .to_string(),
            ),
            SceneScope::Group(_) => Ok(()),
        }
    }

    /// Whether a device with this region (its own or its product's) and these tags is in scope.
    pub fn covers(&self, region: &str, tags: &Value) -> bool {
        match self {
            SceneScope::Region(outer) => lotus_model::scope::region_covers(outer, region),
            SceneScope::Group(name) => tags.get(GROUP_TAG).and_then(Value::as_str) == Some(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const MINUTE: i64 = 60_000;

    fn tracker(op: CompareOp, threshold: f64, hold_for_secs: u64) -> SceneTracker {
        SceneTracker::new(SceneCondition::new("temperature", op, threshold, hold_for_secs).unwrap())
            .unwrap()
    }

    fn entered(device: &str, since_ms: i64) -> Option<SceneTransition> {
        Some(SceneTransition::Entered {
            device: device.into(),
            since_ms,
        })
    }

    fn left(device: &str, at_ms: i64) -> Option<SceneTransition> {
        Some(SceneTransition::Left {
            device: device.into(),
            at_ms,
        })
    }

    #[test]
    fn condition_serde_uses_camel_case_and_symbols() {
        let condition: SceneCondition = serde_json::from_value(json!({
            "property": "items.temperature",
            "op": ">=",
            "threshold": 30.5,
            "holdForSecs": 120
        }))
        .unwrap();
        assert_eq!(
            condition,
            SceneCondition::new("items.temperature", CompareOp::Ge, 30.5, 120).unwrap()
        );
        assert_eq!(
            serde_json::to_value(&condition).unwrap(),
            json!({"property": "items.temperature", "op": ">=", "threshold": 30.5, "holdForSecs": 120})
        );
        let aliased: SceneCondition =
            serde_json::from_value(json!({"property": "t", "op": "ne", "threshold": 0})).unwrap();
        assert_eq!(aliased.op, CompareOp::Ne);
        assert_eq!(aliased.hold_for_secs, 0, "hold defaults to 0");
    }

    #[test]
    fn condition_validation() {
        let bad = |value: serde_json::Value| {
            serde_json::from_value::<SceneCondition>(value)
                .unwrap_err()
                .to_string()
        };
        assert!(
            bad(json!({"property": "", "op": ">", "threshold": 1})).contains("must not be empty")
        );
        assert!(bad(json!({"property": "a..b", "op": ">", "threshold": 1})).contains("empty name"));
        assert!(
            bad(json!({"property": "t", "op": ">", "threshold": 1, "holdForSecs": 604801}))
                .contains("604801 s, more than the maximum")
        );
        assert!(
            bad(json!({"property": "t", "op": "~", "threshold": 1})).contains("unknown variant")
        );
        assert!(
            bad(json!({"property": "t", "op": ">", "threshold": 1, "holdSecs": 5}))
                .contains("unknown field")
        );
        assert_eq!(
            SceneCondition::new("t", CompareOp::Gt, f64::NAN, 0),
            Err(SceneError::NonFiniteThreshold)
        );
        assert!(SceneCondition::new("t", CompareOp::Gt, 1.0, MAX_HOLD_SECS).is_ok());
        let direct = SceneCondition {
            property: ".x".into(),
            op: CompareOp::Gt,
            threshold: 1.0,
            hold_for_secs: 0,
        };
        assert!(matches!(
            SceneTracker::new(direct),
            Err(SceneError::EmptyPropertySegment(_))
        ));
        let ok = SceneCondition::new("t", CompareOp::Gt, 1.0, 0).unwrap();
        assert_eq!(
            SceneTracker::with_max_devices(ok, 0).unwrap_err(),
            SceneError::ZeroDeviceLimit
        );
    }

    #[test]
    fn operators() {
        let cases = [
            (CompareOp::Gt, [false, false, true]),
            (CompareOp::Ge, [false, true, true]),
            (CompareOp::Lt, [true, false, false]),
            (CompareOp::Le, [true, true, false]),
            (CompareOp::Eq, [false, true, false]),
            (CompareOp::Ne, [true, false, true]),
        ];
        for (op, expected) in cases {
            let got = [29.0, 30.0, 31.0].map(|v| op.holds(v, 30.0));
            assert_eq!(got, expected, "{op}");
            assert_eq!(op.symbol().parse::<CompareOp>().unwrap(), op);
        }
        assert!(
            "=>".parse::<CompareOp>()
                .unwrap_err()
                .to_string()
                .contains("use one of")
        );
    }

    #[test]
    fn episode_enters_after_hold_and_leaves() {
        let mut t = tracker(CompareOp::Gt, 30.0, 60);
        assert_eq!(t.observe("d1", Some(31.0), 0), None);
        assert_eq!(t.holding_since("d1"), Some(0));
        assert_eq!(t.observe("d1", Some(32.0), MINUTE / 2), None);
        assert_eq!(t.observe("d1", Some(33.0), MINUTE), entered("d1", 0));
        assert!(t.is_entered("d1"));
        assert_eq!(
            t.observe("d1", Some(34.0), 2 * MINUTE),
            None,
            "once per episode"
        );
        assert_eq!(
            t.tick(2 * MINUTE),
            vec![],
            "entered by a reading, not again by tick"
        );
        assert_eq!(
            t.observe("d1", Some(30.0), 3 * MINUTE),
            left("d1", 3 * MINUTE)
        );
        assert!(!t.is_entered("d1"));
        assert_eq!(t.tracked_devices(), 0);
        // A new episode starts its own hold time.
        assert_eq!(t.observe("d1", Some(31.0), 4 * MINUTE), None);
        assert_eq!(t.observe("d1", Some(31.0), 5 * MINUTE - 1), None);
        assert_eq!(
            t.observe("d1", Some(31.0), 5 * MINUTE),
            entered("d1", 4 * MINUTE)
        );
    }

    #[test]
    fn interrupted_hold_restarts() {
        let mut t = tracker(CompareOp::Gt, 30.0, 60);
        assert_eq!(t.observe("d1", Some(31.0), 0), None);
        assert_eq!(
            t.observe("d1", Some(29.0), MINUTE / 2),
            None,
            "no Left without Entered"
        );
        assert_eq!(t.observe("d1", Some(31.0), MINUTE), None);
        assert_eq!(t.tick(MINUTE + MINUTE / 2), vec![]);
        assert_eq!(
            t.observe("d1", Some(31.0), 2 * MINUTE),
            entered("d1", MINUTE)
        );
    }

    #[test]
    fn zero_hold_enters_immediately() {
        let mut t = tracker(CompareOp::Le, 10.0, 0);
        assert_eq!(t.observe("d", Some(11.0), 5), None);
        assert_eq!(t.observe("d", Some(10.0), 6), entered("d", 6));
        assert_eq!(t.observe("d", Some(9.0), 7), None);
        assert_eq!(t.tick(1_000_000), vec![]);
        assert_eq!(t.observe("d", Some(10.5), 8), left("d", 8));
    }

    #[test]
    fn missing_values_change_nothing() {
        let mut t = tracker(CompareOp::Gt, 30.0, 60);
        assert_eq!(t.observe("d", None, 0), None);
        assert_eq!(t.tracked_devices(), 0);
        assert_eq!(t.observe("d", Some(31.0), 0), None);
        assert_eq!(t.observe("d", None, MINUTE / 2), None);
        assert_eq!(t.observe("d", Some(f64::NAN), MINUTE / 2), None);
        assert_eq!(t.holding_since("d"), Some(0));
        assert_eq!(t.observe("d", Some(31.0), MINUTE), entered("d", 0));
        assert_eq!(t.observe("d", None, 2 * MINUTE), None);
        assert!(t.is_entered("d"));
    }

    #[test]
    fn tick_enters_quiet_devices_in_due_order() {
        let mut t = tracker(CompareOp::Gt, 30.0, 60);
        t.observe("late", Some(40.0), 10_000);
        t.observe("early", Some(40.0), 0);
        t.observe("cool", Some(20.0), 0);
        assert_eq!(t.tick(MINUTE - 1), vec![]);
        assert_eq!(t.tick(MINUTE), vec![entered("early", 0).unwrap()]);
        assert_eq!(t.tick(10 * MINUTE), vec![entered("late", 10_000).unwrap()]);
        assert_eq!(t.tick(20 * MINUTE), vec![], "entered once");
        assert_eq!(t.observe("early", Some(41.0), 11 * MINUTE), None);
        assert_eq!(
            t.observe("early", Some(1.0), 12 * MINUTE),
            left("early", 12 * MINUTE)
        );
        assert!(t.is_entered("late"));
    }

    #[test]
    fn stale_readings_are_ignored() {
        let mut t = tracker(CompareOp::Gt, 30.0, 60);
        t.observe("d", Some(31.0), 10 * MINUTE);
        assert_eq!(t.observe("d", Some(1.0), 9 * MINUTE), None);
        assert_eq!(t.holding_since("d"), Some(10 * MINUTE));
        assert_eq!(
            t.observe("d", Some(31.0), 11 * MINUTE),
            entered("d", 10 * MINUTE)
        );
        assert_eq!(
            t.observe("d", Some(1.0), 10 * MINUTE),
            None,
            "late message cannot end it"
        );
        assert!(t.is_entered("d"));
    }

    #[test]
    fn forget_drops_state_and_pending_entry() {
        let mut t = tracker(CompareOp::Gt, 30.0, 60);
        t.observe("d", Some(31.0), 0);
        assert!(t.forget("d"));
        assert!(!t.forget("d"));
        assert_eq!(t.tick(MINUTE), vec![]);
        assert_eq!(
            t.observe("d", Some(10.0), MINUTE),
            None,
            "no Left after forget"
        );
    }

    #[test]
    fn device_limit_evicts_oldest_updated() {
        let condition = SceneCondition::new("temperature", CompareOp::Gt, 30.0, 60).unwrap();
        let mut t = SceneTracker::with_max_devices(condition, 2).unwrap();
        t.observe("a", Some(31.0), 0);
        t.observe("b", Some(31.0), 1);
        t.observe("a", Some(31.0), 2);
        t.observe("c", Some(31.0), 3);
        assert_eq!(t.tracked_devices(), 2);
        assert_eq!(t.holding_since("b"), None, "b was updated longest ago");
        assert_eq!(t.holding_since("a"), Some(0));
        assert_eq!(t.holding_since("c"), Some(3));
        // The evicted device's pending entry is gone too.
        assert_eq!(
            t.tick(2 * MINUTE),
            vec![entered("a", 0).unwrap(), entered("c", 3).unwrap()]
        );
        t.observe("d", Some(31.0), 4);
        assert_eq!(t.tracked_devices(), 2);
        assert!(
            !t.is_entered("a"),
            "a (last update at 2) was evicted before c (3)"
        );
        assert!(t.is_entered("c"));
    }

    #[test]
    fn extract_reads_alink_params() {
        let t = tracker(CompareOp::Gt, 30.0, 0);
        let plain = json!({"params": {"temperature": 31.5}});
        let timed =
            json!({"params": {"temperature": {"value": 28, "time": 1_700_000_000_000_i64}}});
        assert_eq!(t.extract(&plain), Some(31.5));
        assert_eq!(t.extract(&timed), Some(28.0));
        assert_eq!(t.extract(&json!({"params": {"temperature": "31"}})), None);
        assert_eq!(
            t.extract(&json!({"params": {"temperature": {"time": 1}}})),
            None
        );
        assert_eq!(t.extract(&json!({"params": {}})), None);
        assert_eq!(
            t.extract(&json!({"temperature": 31})),
            None,
            "only inside params"
        );

        let nested = SceneTracker::new(
            SceneCondition::new("room.temperature", CompareOp::Gt, 30.0, 0).unwrap(),
        )
        .unwrap();
        assert_eq!(
            nested.extract(&json!({"params": {"room": {"temperature": {"value": 35}}}})),
            Some(35.0)
        );

        let mut t = t;
        assert_eq!(t.observe_payload("d", &plain, 1), entered("d", 1));
        assert_eq!(t.observe_payload("d", &timed, 2), left("d", 2));
    }

    #[test]
    fn transitions_serialize_with_type_tag() {
        assert_eq!(
            serde_json::to_value(entered("d", 5).unwrap()).unwrap(),
            json!({"type": "entered", "device": "d", "sinceMs": 5})
        );
        assert_eq!(
            serde_json::to_value(left("d", 6).unwrap()).unwrap(),
            json!({"type": "left", "device": "d", "atMs": 6})
        );
    }

    #[test]
    fn scopes_cover_regions_below_and_group_tags() {
        let xihu = SceneScope::Region("/hz/xihu".into());
        assert!(xihu.covers("/hz/xihu", &json!({})));
        assert!(xihu.covers("/hz/xihu/lingyin", &json!({})));
        assert!(!xihu.covers("/hz/xihuan", &json!({})));
        assert!(!xihu.covers("/hz", &json!({})));
        let group = SceneScope::Group("lakeside".into());
        assert!(group.covers("/", &json!({"group": "lakeside"})));
        assert!(!group.covers("/", &json!({"group": "harbour"})));
        assert!(!group.covers("/", &json!({})));
        let parsed: SceneScope = serde_json::from_value(json!({"region": "/hz/xihu"})).unwrap();
        assert_eq!(parsed, xihu);
        assert!(serde_json::from_value::<SceneScope>(json!({"tag": "x"})).is_err());
        assert!(SceneScope::Region("hz/../x".into()).validate().is_err());
        assert!(SceneScope::Group(" ".into()).validate().is_err());
        assert!(group.validate().is_ok());
    }
}
