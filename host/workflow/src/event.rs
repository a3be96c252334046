//! Event types, levels, field checks and the classification of an incoming event.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::region::{REGION_FORMAT, is_region};
use crate::validation::{CODE_FORMAT, Problems, ValidationErrors, is_code};

/// How severe an event is; serialised as its number, 1 (most severe) to 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// 1 — 特别重大, critical.
    Critical,
    /// 2 — 重大, major.
    Major,
    /// 3 — 较大, serious.
    Serious,
    /// 4 — 一般, general.
    General,
}

impl Level {
    /// All levels, most severe first.
    pub const ALL: [Level; 4] = [
        Level::Critical,
        Level::Major,
        Level::Serious,
        Level::General,
    ];

    /// The level's number: 1 for critical to 4 for general.
    pub fn number(self) -> u8 {
        match self {
            Level::Critical => 1,
            Level::Major => 2,
            Level::Serious => 3,
            Level::General => 4,
        }
    }

    /// The level with this number, if it is 1..=4.
    pub fn from_number(n: u64) -> Option<Level> {
        match n {
            1 => Some(Level::Critical),
            2 => Some(Level::Major),
            3 => Some(Level::Serious),
            4 => Some(Level::General),
            _ => None,
        }
    }

    /// Is this level as severe as `other` or more severe? (`Major.is_at_least(Serious)`.)
    pub fn is_at_least(self, other: Level) -> bool {
        self.number() <= other.number()
    }

    /// Is this level strictly more severe than `other`?
    pub fn is_more_severe_than(self, other: Level) -> bool {
        self.number() < other.number()
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Level::Critical => "critical",
            Level::Major => "major",
            Level::Serious => "serious",
            Level::General => "general",
        };
        write!(f, "{} ({name})", self.number())
    }
}

impl Serialize for Level {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.number())
    }
}

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u64::deserialize(d).map_err(|_| {
            serde::de::Error::custom("a level is a number from 1 (critical) to 4 (general)")
        })?;
        Level::from_number(n).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "level {n} does not exist: use 1 (critical), 2 (major), 3 (serious) or 4 (general)"
            ))
        })
    }
}

/// A point on the map (WGS 84 degrees).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoPoint {
    /// Latitude, -90 to 90.
    pub lat: f64,
    /// Longitude, -180 to 180.
    pub lon: f64,
}

impl GeoPoint {
    /// Mean Earth radius in metres (IUGG).
    const EARTH_RADIUS_M: f64 = 6_371_008.8;

    /// The point named by an object's `lat`/`lon` (or `latitude`/`longitude`) numbers, when
    /// both are there and valid: how device data and event fields carry a place.
    pub fn from_fields(fields: &Map<String, Value>) -> Option<GeoPoint> {
        let num = |a: &str, b: &str| fields.get(a).or_else(|| fields.get(b))?.as_f64();
        let p = GeoPoint {
            lat: num("lat", "latitude")?,
            lon: num("lon", "longitude")?,
        };
        p.is_valid().then_some(p)
    }

    /// Great-circle distance in metres (haversine; within 0.5 % of the ellipsoid, which is far
    /// below the accuracy of reported incident locations).
    pub fn distance_m(&self, other: &GeoPoint) -> f64 {
        let (lat1, lat2) = (self.lat.to_radians(), other.lat.to_radians());
        let dlat = lat2 - lat1;
        let dlon = (other.lon - self.lon).to_radians();
        let a = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
        2.0 * Self::EARTH_RADIUS_M * a.sqrt().min(1.0).asin()
    }

    /// Are both coordinates finite and in range?
    pub fn is_valid(&self) -> bool {
        self.lat.is_finite()
            && self.lon.is_finite()
            && (-90.0..=90.0).contains(&self.lat)
            && (-180.0..=180.0).contains(&self.lon)
    }
}

/// What values a field of an event accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldKind {
    /// Any JSON string.
    String,
    /// Any JSON number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// One of the listed strings.
    Enum {
        /// The accepted values.
        options: Vec<String>,
    },
}

impl FieldKind {
    /// The kind's name as written in documents.
    pub fn name(&self) -> &'static str {
        match self {
            FieldKind::String => "string",
            FieldKind::Number => "number",
            FieldKind::Boolean => "boolean",
            FieldKind::Enum { .. } => "enum",
        }
    }
}

/// One field an event of a type carries (`pressureKpa`, `trafficImpact`).
///
/// Written flat: `{ name, label, kind: string|number|boolean|enum, options: [..], required }`,
/// with `options` only for `kind: enum`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawFieldSpec", into = "RawFieldSpec")]
pub struct FieldSpec {
    /// Key in the event's `fields`; letters, digits and `_`, not starting with a digit.
    pub name: String,
    /// What operators see.
    pub label: String,
    /// Accepted values.
    pub kind: FieldKind,
    /// Must every event of the type carry it?
    pub required: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawFieldSpec {
    name: String,
    #[serde(default)]
    label: String,
    kind: RawKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    options: Option<Vec<String>>,
    #[serde(default)]
    required: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawKind {
    String,
    Number,
    Boolean,
    Enum,
}

impl TryFrom<RawFieldSpec> for FieldSpec {
    type Error = String;

    fn try_from(raw: RawFieldSpec) -> Result<Self, String> {
        let kind = match (raw.kind, raw.options) {
            (RawKind::Enum, options) => FieldKind::Enum {
                options: options.unwrap_or_default(),
            },
            (_, Some(_)) => {
                return Err(format!(
                    "field `{}`: `options` only apply to `kind: enum`",
                    raw.name
                ));
            }
            (RawKind::String, None) => FieldKind::String,
            (RawKind::Number, None) => FieldKind::Number,
            (RawKind::Boolean, None) => FieldKind::Boolean,
        };
        Ok(FieldSpec {
            name: raw.name,
            label: raw.label,
            kind,
            required: raw.required,
        })
    }
}

impl From<FieldSpec> for RawFieldSpec {
    fn from(f: FieldSpec) -> Self {
        let (kind, options) = match f.kind {
            FieldKind::String => (RawKind::String, None),
            FieldKind::Number => (RawKind::Number, None),
            FieldKind::Boolean => (RawKind::Boolean, None),
            FieldKind::Enum { options } => (RawKind::Enum, Some(options)),
        };
        RawFieldSpec {
            name: f.name,
            label: f.label,
            kind,
            options,
            required: f.required,
        }
    }
}

/// When a new event counts as another report of an event that is still open.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MergeSpec {
    /// How long after an open event's last report a new one still merges into it.
    pub window_secs: u64,
    /// How far apart the two locations may be.
    pub radius_meters: f64,
}

/// A kind of event the operations center handles (`water.main_burst`, `manhole.cover_open`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventType {
    /// Identifier, `[a-z0-9_.-]{1,64}`.
    pub code: String,
    /// What operators see.
    pub name: String,
    /// Longer explanation.
    #[serde(default)]
    pub description: String,
    /// Level of events that do not state one.
    pub default_level: Level,
    /// Fields events of this type carry.
    #[serde(default)]
    pub fields: Vec<FieldSpec>,
    /// Merging of repeated reports; none means every report is its own event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<MergeSpec>,
    /// Events of this level or less severe are closed at once with outcome `auto-closed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_close: Option<Level>,
    /// Events of this level or less severe are kept but not dispatched to a workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolate: Option<Level>,
}

/// Outcome recorded for events closed by [`EventType::auto_close`].
pub const AUTO_CLOSED: &str = "auto-closed";

/// Longest merge window accepted: a week; beyond that, "the same incident" stops being true.
const MAX_MERGE_WINDOW_SECS: u64 = 7 * 24 * 3600;

impl EventType {
    /// Parses an event type from JSON (not validated; call [`EventType::validate`]).
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// Parses an event type from YAML (not validated; call [`EventType::validate`]).
    pub fn from_yaml(yaml: &str) -> Result<Self, serde_norway::Error> {
        serde_norway::from_str(yaml)
    }

    /// Checks everything serde cannot: formats, uniqueness, and settings that contradict each
    /// other. Returns every problem found.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut p = Problems::default();
        if !is_code(&self.code) {
            p.push(
                None,
                "code",
                format!("{:?} is not a type code: use {CODE_FORMAT}", self.code),
            );
        }
        if self.name.trim().is_empty() {
            p.push(None, "name", "must not be empty: it is what operators see");
        }
        for (i, f) in self.fields.iter().enumerate() {
            let at = |k: &str| format!("fields[{i}].{k}");
            if !is_field_name(&f.name) {
                p.push(
                    None,
                    at("name"),
                    format!(
                        "{:?} is not a field name: use 1 to 64 letters, digits and '_', not starting with a digit",
                        f.name
                    ),
                );
            } else if let Some(j) = self.fields[..i].iter().position(|g| g.name == f.name) {
                p.push(
                    None,
                    at("name"),
                    format!("`{}` is already defined by fields[{j}]", f.name),
                );
            }
            if f.label.trim().is_empty() {
                p.push(
                    None,
                    at("label"),
                    "must not be empty: it is what operators see",
                );
            }
            if let FieldKind::Enum { options } = &f.kind {
                if options.is_empty() {
                    p.push(
                        None,
                        at("options"),
                        "`kind: enum` needs at least one option",
                    );
                }
                for (k, o) in options.iter().enumerate() {
                    if o.is_empty() {
                        p.push(
                            None,
                            format!("fields[{i}].options[{k}]"),
                            "must not be empty",
                        );
                    } else if options[..k].contains(o) {
                        p.push(
                            None,
                            format!("fields[{i}].options[{k}]"),
                            format!("{o:?} is listed twice"),
                        );
                    }
                }
            }
        }
        if let Some(m) = &self.merge {
            if m.window_secs == 0 || m.window_secs > MAX_MERGE_WINDOW_SECS {
                p.push(
                    None,
                    "merge.windowSecs",
                    format!(
                        "must be 1 to {MAX_MERGE_WINDOW_SECS} seconds (7 days), got {}",
                        m.window_secs
                    ),
                );
            }
            if !(m.radius_meters.is_finite() && m.radius_meters >= 0.0) {
                p.push(
                    None,
                    "merge.radiusMeters",
                    format!(
                        "must be a distance of 0 metres or more, got {}",
                        m.radius_meters
                    ),
                );
            }
        }
        if let (Some(close), Some(isolate)) = (self.auto_close, self.isolate)
            && !isolate.is_more_severe_than(close)
        {
            p.push(
                None,
                "isolate",
                format!(
                    "level {isolate} never applies because `autoClose` already closes level {close} \
                     and less severe events; set `isolate` more severe than `autoClose` or drop it"
                ),
            );
        }
        p.into_result()
    }

    /// The level of a draft: its own, else the type's default.
    pub fn level_of(&self, draft: &EventDraft) -> Level {
        draft.level.unwrap_or(self.default_level)
    }

    /// Checks a draft's fields against the type: required fields present (a `null` counts as
    /// absent), values of the right kind, enum values among the options, no unknown fields.
    pub fn check_fields(&self, draft: &EventDraft) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        for spec in &self.fields {
            match draft.fields.get(&spec.name) {
                None | Some(Value::Null) => {
                    if spec.required {
                        errors.push(FieldError::Missing {
                            field: spec.name.clone(),
                        });
                    }
                }
                Some(v) => {
                    let ok = match &spec.kind {
                        FieldKind::String => v.is_string(),
                        FieldKind::Number => v.is_number(),
                        FieldKind::Boolean => v.is_boolean(),
                        FieldKind::Enum { options } => match v.as_str() {
                            Some(s) if options.iter().any(|o| o == s) => true,
                            Some(s) => {
                                errors.push(FieldError::NotAnOption {
                                    field: spec.name.clone(),
                                    value: s.to_owned(),
                                    options: options.clone(),
                                });
                                continue;
                            }
                            None => false,
                        },
                    };
                    if !ok {
                        errors.push(FieldError::WrongKind {
                            field: spec.name.clone(),
                            expected: spec.kind.name(),
                            got: json_kind(v),
                        });
                    }
                }
            }
        }
        for name in draft.fields.keys() {
            if !self.fields.iter().any(|f| &f.name == name) {
                errors.push(FieldError::Unknown {
                    field: name.clone(),
                    type_code: self.code.clone(),
                });
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

fn is_field_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Why a field of an event draft was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(
    tag = "problem",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum FieldError {
    /// A required field is absent or `null`.
    #[error("field `{field}` is required")]
    Missing {
        /// The field.
        field: String,
    },
    /// The value has the wrong JSON kind.
    #[error("field `{field}` must be a {expected}, got a {got}")]
    WrongKind {
        /// The field.
        field: String,
        /// Kind the type asks for.
        expected: &'static str,
        /// Kind received.
        got: &'static str,
    },
    /// An enum field's value is not among its options.
    #[error("field `{field}`: {value:?} is not one of {}", options.join(", "))]
    NotAnOption {
        /// The field.
        field: String,
        /// The value received.
        value: String,
        /// The accepted values.
        options: Vec<String>,
    },
    /// The type does not define the field.
    #[error("field `{field}` is not defined by event type `{type_code}`")]
    Unknown {
        /// The field.
        field: String,
        /// The event type.
        type_code: String,
    },
}

/// An event as reported, before it is classified and stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventDraft {
    /// Code of the [`EventType`].
    pub type_code: String,
    /// One-line summary ("Water main pressure low at Wensan Rd").
    pub title: String,
    /// Stated level; none takes the type's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<Level>,
    /// Where it happened, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<GeoPoint>,
    /// Administrative region path (`/hz/xihu/lingyin`).
    pub region: String,
    /// Values of the type's fields.
    #[serde(default)]
    pub fields: Map<String, Value>,
    /// Who reported it: the rule and device, or the operator; kept as given.
    #[serde(default)]
    pub source: Value,
    /// When it was reported.
    pub at_ms: i64,
}

impl EventDraft {
    /// Checks the parts of a draft that do not depend on its type: region and location.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut p = Problems::default();
        if self.title.trim().is_empty() {
            p.push(
                None,
                "title",
                "must not be empty: it is what operators see first",
            );
        }
        if !is_region(&self.region) {
            p.push(
                None,
                "region",
                format!(
                    "{:?} is not a region path: use {REGION_FORMAT}",
                    self.region
                ),
            );
        }
        if let Some(loc) = &self.location
            && !loc.is_valid()
        {
            p.push(
                None,
                "location",
                format!(
                    "({}, {}) is not a point: latitude must be -90..90 and longitude -180..180",
                    loc.lat, loc.lon
                ),
            );
        }
        p.into_result()
    }
}

/// An event that is still open, as a merge candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenEvent {
    /// The stored event's id.
    pub id: String,
    /// Its type.
    pub type_code: String,
    /// Its location, if known.
    #[serde(default)]
    pub location: Option<GeoPoint>,
    /// Its region path.
    pub region: String,
    /// When it was first reported.
    pub created_ms: i64,
    /// When the latest report merged into it arrived.
    pub last_ms: i64,
}

/// What to do with a new event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Classification {
    /// Another report of an open event: attach it there instead of opening a new one.
    Merge {
        /// The open event's id.
        into: String,
    },
    /// Store it closed with outcome [`AUTO_CLOSED`].
    AutoClose,
    /// Store it open, but start no workflow.
    Isolate,
    /// Store it and start the workflow that applies to its type and level.
    Dispatch,
}

/// Decides what happens to `draft`, an event of type `ty`, given the events still open.
///
/// Merging comes first, whatever the draft's level: a repeated report of an incident that is
/// already being handled belongs to that incident's trail, even if on its own it would be
/// closed or isolated. A draft merges into an open event of the same type when
///
/// * the draft's time is within `windowSecs` of the open event's span (from its first report to
///   its latest), so a long-running incident keeps absorbing reports as long as they keep coming;
/// * and both have locations no more than `radiusMeters` apart (haversine), **or** neither has a
///   location and their regions are equal. With one location known and the other not, nothing
///   says they are the same place, so they stay apart.
///
/// Among several candidates the nearest wins, then the most recently active, then the smallest
/// id, so the result does not depend on the order of `open`. Without a merge, the level (the
/// draft's, else the type's default) decides: auto-close, isolate, or dispatch.
pub fn classify(ty: &EventType, draft: &EventDraft, open: &[OpenEvent]) -> Classification {
    if let Some(merge) = &ty.merge {
        let window_ms = i128::from(merge.window_secs) * 1000;
        let at = i128::from(draft.at_ms);
        let mut best: Option<(f64, &OpenEvent)> = None;
        for ev in open.iter().filter(|e| e.type_code == ty.code) {
            let (first, last) = (
                i128::from(ev.created_ms),
                i128::from(ev.last_ms.max(ev.created_ms)),
            );
            let gap = if at < first {
                first - at
            } else if at > last {
                at - last
            } else {
                0
            };
            if gap > window_ms {
                continue;
            }
            let distance = match (&draft.location, &ev.location) {
                (Some(a), Some(b)) => a.distance_m(b),
                (None, None) if draft.region == ev.region => 0.0,
                _ => continue,
            };
            if distance > merge.radius_meters {
                continue;
            }
            let better = match best {
                None => true,
                Some((d, b)) => distance
                    .total_cmp(&d)
                    .then(b.last_ms.cmp(&ev.last_ms))
                    .then(ev.id.cmp(&b.id))
                    .is_lt(),
            };
            if better {
                best = Some((distance, ev));
            }
        }
        if let Some((_, ev)) = best {
            return Classification::Merge {
                into: ev.id.clone(),
            };
        }
    }
    let level = ty.level_of(draft);
    if ty.auto_close.is_some_and(|l| !level.is_more_severe_than(l)) {
        Classification::AutoClose
    } else if ty.isolate.is_some_and(|l| !level.is_more_severe_than(l)) {
        Classification::Isolate
    } else {
        Classification::Dispatch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const BURST: &str = r#"
code: water.main_burst
name: Water main burst
defaultLevel: 3
fields:
  - { name: pressureKpa, label: Pressure (kPa), kind: number, required: true }
  - { name: trafficImpact, label: Affects traffic, kind: boolean }
  - { name: pipe, label: Pipe material, kind: enum, options: [cast-iron, steel, pe] }
  - { name: note, label: Note, kind: string }
merge: { windowSecs: 1800, radiusMeters: 200 }
autoClose: 4
"#;

    fn burst() -> EventType {
        let ty = EventType::from_yaml(BURST).unwrap();
        ty.validate().unwrap();
        ty
    }

    fn draft(level: Option<Level>, location: Option<GeoPoint>, at_ms: i64) -> EventDraft {
        EventDraft {
            type_code: "water.main_burst".into(),
            title: "Pressure drop on Wensan Rd".into(),
            level,
            location,
            region: "/hz/xihu/lingyin".into(),
            fields: json!({ "pressureKpa": 120 }).as_object().unwrap().clone(),
            source: json!({ "rule": "pressure-low" }),
            at_ms,
        }
    }

    fn open(id: &str, location: Option<GeoPoint>, created_ms: i64, last_ms: i64) -> OpenEvent {
        OpenEvent {
            id: id.into(),
            type_code: "water.main_burst".into(),
            location,
            region: "/hz/xihu/lingyin".into(),
            created_ms,
            last_ms,
        }
    }

    /// A point `metres` north of `p` (1° of latitude is 111 195 m on the mean sphere).
    fn north(p: GeoPoint, metres: f64) -> GeoPoint {
        GeoPoint {
            lat: p.lat + metres / 111_195.08,
            lon: p.lon,
        }
    }

    const WEST_LAKE: GeoPoint = GeoPoint {
        lat: 30.2437,
        lon: 120.1484,
    };
    const MIN: i64 = 60_000;

    #[test]
    fn levels_are_numbers_and_compare_by_severity() {
        for l in Level::ALL {
            let json = serde_json::to_string(&l).unwrap();
            assert_eq!(json, l.number().to_string());
            assert_eq!(serde_json::from_str::<Level>(&json).unwrap(), l);
        }
        let err = serde_json::from_str::<Level>("5").unwrap_err().to_string();
        assert!(err.contains("level 5 does not exist"), "{err}");
        assert!(serde_json::from_str::<Level>("\"major\"").is_err());
        assert!(Level::Critical.is_at_least(Level::Major));
        assert!(Level::Major.is_at_least(Level::Major));
        assert!(!Level::General.is_at_least(Level::Serious));
        assert!(Level::Major.is_more_severe_than(Level::Serious));
        assert!(!Level::Major.is_more_severe_than(Level::Major));
    }

    #[test]
    fn points_from_fields() {
        let of = |v: Value| GeoPoint::from_fields(v.as_object().unwrap());
        assert_eq!(
            of(serde_json::json!({"lat": 30.25, "lon": 120.1, "depth": 2})),
            Some(GeoPoint {
                lat: 30.25,
                lon: 120.1
            })
        );
        assert_eq!(
            of(serde_json::json!({"latitude": 30.25, "longitude": 120.1})),
            Some(GeoPoint {
                lat: 30.25,
                lon: 120.1
            })
        );
        assert_eq!(of(serde_json::json!({"lat": 30.25})), None);
        assert_eq!(of(serde_json::json!({"lat": 95.0, "lon": 1.0})), None);
        assert_eq!(of(serde_json::json!({"lat": "30", "lon": 1.0})), None);
    }

    #[test]
    fn haversine_distance() {
        let a = GeoPoint {
            lat: 30.0,
            lon: 120.0,
        };
        let b = GeoPoint {
            lat: 31.0,
            lon: 120.0,
        };
        assert!(
            (a.distance_m(&b) - 111_195.08).abs() < 1.0,
            "{}",
            a.distance_m(&b)
        );
        // Along a parallel the distance shrinks with cos(latitude).
        let c = GeoPoint {
            lat: 60.0,
            lon: 0.0,
        };
        let d = GeoPoint {
            lat: 60.0,
            lon: 0.01,
        };
        assert!(
            (c.distance_m(&d) - 555.98).abs() < 0.5,
            "{}",
            c.distance_m(&d)
        );
        assert_eq!(a.distance_m(&a), 0.0);
    }

    #[test]
    fn event_type_reads_yaml_and_json_alike() {
        let ty = burst();
        assert_eq!(ty.default_level, Level::Serious);
        assert_eq!(
            ty.fields[2].kind,
            FieldKind::Enum {
                options: vec!["cast-iron".into(), "steel".into(), "pe".into()]
            }
        );
        let json = serde_json::to_string(&ty).unwrap();
        assert!(
            json.contains(r#""kind":"enum","options":["cast-iron","steel","pe"]"#),
            "{json}"
        );
        assert_eq!(EventType::from_json(&json).unwrap(), ty);
    }

    #[test]
    fn event_type_validation_names_each_problem() {
        let ty = EventType::from_json(
            r#"{"code":"Water Burst","name":" ","defaultLevel":2,
                "fields":[{"name":"a","label":"A","kind":"number"},
                          {"name":"a","label":"","kind":"enum"},
                          {"name":"9x","label":"X","kind":"enum","options":["p","p"]}],
                "merge":{"windowSecs":0,"radiusMeters":-5},
                "autoClose":3,"isolate":3}"#,
        )
        .unwrap();
        let errs = ty.validate().unwrap_err();
        for field in [
            "code",
            "name",
            "fields[1].name",
            "fields[1].label",
            "fields[1].options",
            "fields[2].name",
            "fields[2].options[1]",
            "merge.windowSecs",
            "merge.radiusMeters",
            "isolate",
        ] {
            assert!(errs.has(None, field), "no problem at {field}: {errs}");
        }
        assert_eq!(errs.0.len(), 10, "{errs}");
        let text = errs.to_string();
        assert!(
            text.contains("`fields[1].name`: `a` is already defined by fields[0]"),
            "{text}"
        );
    }

    #[test]
    fn event_type_refuses_unknown_keys_and_misplaced_options() {
        let err = EventType::from_yaml("code: x\nname: X\ndefaultLevel: 4\nautoclose: 4\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("autoclose"), "{err}");
        let err = EventType::from_yaml(
            "code: x\nname: X\ndefaultLevel: 4\nfields: [{name: a, label: A, kind: string, options: [x]}]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`options` only apply to `kind: enum`"),
            "{err}"
        );
    }

    #[test]
    fn field_checks() {
        let ty = burst();
        let mut d = draft(None, None, 0);
        assert_eq!(ty.check_fields(&d), Ok(()));

        d.fields = json!({
            "pressureKpa": "low",
            "trafficImpact": null,
            "pipe": "copper",
            "note": 5,
            "colour": "red"
        })
        .as_object()
        .unwrap()
        .clone();
        let errs = ty.check_fields(&d).unwrap_err();
        assert_eq!(
            errs,
            vec![
                FieldError::WrongKind {
                    field: "pressureKpa".into(),
                    expected: "number",
                    got: "string"
                },
                FieldError::NotAnOption {
                    field: "pipe".into(),
                    value: "copper".into(),
                    options: vec!["cast-iron".into(), "steel".into(), "pe".into()]
                },
                FieldError::WrongKind {
                    field: "note".into(),
                    expected: "string",
                    got: "number"
                },
                FieldError::Unknown {
                    field: "colour".into(),
                    type_code: "water.main_burst".into()
                },
            ]
        );
        assert_eq!(
            errs[1].to_string(),
            "field `pipe`: \"copper\" is not one of cast-iron, steel, pe"
        );

        d.fields = json!({ "pressureKpa": null, "pipe": 3 })
            .as_object()
            .unwrap()
            .clone();
        let errs = ty.check_fields(&d).unwrap_err();
        assert_eq!(
            errs,
            vec![
                FieldError::Missing {
                    field: "pressureKpa".into()
                },
                FieldError::WrongKind {
                    field: "pipe".into(),
                    expected: "enum",
                    got: "number"
                },
            ]
        );
    }

    #[test]
    fn draft_validation() {
        let mut d = draft(
            None,
            Some(GeoPoint {
                lat: 95.0,
                lon: 0.0,
            }),
            0,
        );
        d.region = "hz/xihu".into();
        let errs = d.validate().unwrap_err();
        assert!(
            errs.has(None, "region") && errs.has(None, "location"),
            "{errs}"
        );
        assert!(draft(None, Some(WEST_LAKE), 0).validate().is_ok());
    }

    #[test]
    fn merges_within_radius_and_window() {
        let ty = burst();
        let open = [open("ev-1", Some(WEST_LAKE), 0, 10 * MIN)];
        let near = north(WEST_LAKE, 150.0);
        let into = Classification::Merge {
            into: "ev-1".into(),
        };
        // During the open event's span, and up to the window after its latest report.
        assert_eq!(
            classify(&ty, &draft(None, Some(near), 5 * MIN), &open),
            into
        );
        assert_eq!(
            classify(&ty, &draft(None, Some(near), 40 * MIN), &open),
            into
        );
        // Just past the window, or too far away: a new event.
        assert_eq!(
            classify(&ty, &draft(None, Some(near), 40 * MIN + 1), &open),
            Classification::Dispatch
        );
        let far = north(WEST_LAKE, 250.0);
        assert_eq!(
            classify(&ty, &draft(None, Some(far), 5 * MIN), &open),
            Classification::Dispatch
        );
    }

    #[test]
    fn merge_picks_the_nearest_and_ignores_other_types() {
        let ty = burst();
        let mut other_type = open("ev-0", Some(WEST_LAKE), 0, 0);
        other_type.type_code = "manhole.cover_open".into();
        let open = [
            other_type,
            open("ev-far", Some(north(WEST_LAKE, 180.0)), 0, 0),
            open("ev-near", Some(north(WEST_LAKE, 60.0)), 0, 0),
        ];
        let d = draft(None, Some(WEST_LAKE), MIN);
        assert_eq!(
            classify(&ty, &d, &open),
            Classification::Merge {
                into: "ev-near".into()
            }
        );
        let reversed: Vec<OpenEvent> = open.iter().rev().cloned().collect();
        assert_eq!(
            classify(&ty, &d, &reversed),
            Classification::Merge {
                into: "ev-near".into()
            }
        );
    }

    #[test]
    fn merge_without_locations_needs_equal_regions() {
        let ty = burst();
        let open = [open("ev-1", None, 0, 0)];
        assert_eq!(
            classify(&ty, &draft(None, None, MIN), &open),
            Classification::Merge {
                into: "ev-1".into()
            }
        );
        let mut elsewhere = draft(None, None, MIN);
        elsewhere.region = "/hz/xihu/beishan".into();
        assert_eq!(classify(&ty, &elsewhere, &open), Classification::Dispatch);
        // One location known, the other not: nothing says it is the same place.
        assert_eq!(
            classify(&ty, &draft(None, Some(WEST_LAKE), MIN), &open),
            Classification::Dispatch
        );
    }

    #[test]
    fn auto_close_and_isolate_by_level() {
        let mut ty = burst();
        ty.isolate = Some(Level::Serious);
        ty.validate().unwrap();
        let at = |level| classify(&ty, &draft(level, None, 0), &[]);
        assert_eq!(at(Some(Level::General)), Classification::AutoClose);
        assert_eq!(at(Some(Level::Serious)), Classification::Isolate);
        // No level stated: the type's default (serious) applies.
        assert_eq!(at(None), Classification::Isolate);
        assert_eq!(at(Some(Level::Major)), Classification::Dispatch);
        assert_eq!(at(Some(Level::Critical)), Classification::Dispatch);
        // A repeated report merges even at a level that would be closed on its own.
        let open = [open("ev-1", None, 0, 0)];
        assert_eq!(
            classify(&ty, &draft(Some(Level::General), None, 0), &open),
            Classification::Merge {
                into: "ev-1".into()
            }
        );
    }

    #[test]
    fn without_merge_spec_every_report_is_new() {
        let mut ty = burst();
        ty.merge = None;
        let open = [open("ev-1", None, 0, 0)];
        assert_eq!(
            classify(&ty, &draft(Some(Level::Major), None, 0), &open),
            Classification::Dispatch
        );
    }
}
