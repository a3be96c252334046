//! Workflow definitions: which steps an event of a type and level goes through, who handles
//! each, with what deadline, and where approval, rejection and timeouts lead.
//!
//! Definitions are data, written as JSON or YAML through the API. A minimal one:
//!
//! ```yaml
//! id: manhole-open
//! name: Manhole cover opened
//! version: 1
//! appliesTo: { eventType: manhole.cover_open }
//! start: check
//! steps:
//!   - id: check
//!     name: Patrol checks the cover
//!     assignee: { role: patrol, org: roads, region: event }
//!     deadlineSecs: 1800
//!     next: end
//! ```

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::event::Level;
use crate::region::{REGION_FORMAT, is_region};
use crate::validation::{CODE_FORMAT, Problems, ValidationErrors, is_code};

/// Longest step deadline accepted: 90 days.
pub const MAX_DEADLINE_SECS: u64 = 90 * 24 * 3600;

/// The step id that means "the workflow ends here"; no step may use it.
pub const END: &str = "end";

/// Outcome of a workflow that ends by approval without naming an outcome.
pub const RESOLVED: &str = "resolved";
/// Outcome of a workflow that ends by rejection without naming an outcome.
pub const REJECTED: &str = "rejected";

/// A disposal workflow for events of one type (and some levels).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkflowDefinition {
    /// Identifier, `[a-z0-9_.-]{1,64}`.
    pub id: String,
    /// What operators see.
    pub name: String,
    /// Revision, from 1; running instances keep the revision they started with.
    pub version: u32,
    /// Which events start it.
    pub applies_to: AppliesTo,
    /// The steps, in any order.
    pub steps: Vec<Step>,
    /// Id of the first step.
    pub start: String,
}

/// Which events a definition handles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppliesTo {
    /// Event type code.
    pub event_type: String,
    /// Levels handled; empty means all.
    #[serde(default)]
    pub levels: Vec<Level>,
}

/// One step: a task (or one per department, for a parallel step) with a deadline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Step {
    /// Identifier, unique in the definition; `[a-z0-9_.-]{1,64}`, not `end`.
    pub id: String,
    /// What assignees see as the task title.
    pub name: String,
    /// Who gets the task(s).
    pub assignee: Assignee,
    /// Time allowed from the step's start until the task is overdue; at most 90 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_secs: Option<u64>,
    /// Actions offered to assignees.
    #[serde(default = "ActionKind::all")]
    pub actions: Vec<ActionKind>,
    /// Where approval leads.
    pub next: Next,
    /// Where rejection leads; none ends the workflow with outcome `rejected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_reject: Option<Target>,
    /// Who takes over when the deadline passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<Escalation>,
}

/// An action an assignee can take on a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ActionKind {
    /// Done / agreed: the step moves on (once the join rule is met).
    Approve,
    /// Refused: the step's `onReject` applies.
    Reject,
    /// Hand the task to someone else; the step stays.
    Transfer,
    /// Report progress; the step stays.
    Feedback,
}

impl ActionKind {
    /// All four actions, the default of a step.
    pub fn all() -> Vec<ActionKind> {
        vec![
            ActionKind::Approve,
            ActionKind::Reject,
            ActionKind::Transfer,
            ActionKind::Feedback,
        ]
    }

    /// The action's name as written in documents.
    pub fn name(self) -> &'static str {
        match self {
            ActionKind::Approve => "approve",
            ActionKind::Reject => "reject",
            ActionKind::Transfer => "transfer",
            ActionKind::Feedback => "feedback",
        }
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Who gets a step's task.
///
/// Written as one of
/// * `{ role: dispatcher, org: eoc, region: event }` — whoever holds the role (in the org, if
///   given) for a region; `region` is `event` (default), `parent` or a fixed path like `/hz`;
/// * `{ user: zhang.san }` — one person;
/// * `{ all: [ ... ], join: all|any }` — a parallel step: each member gets its own task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawAssignee", into = "RawAssignee")]
pub enum Assignee {
    /// Holders of a role.
    Role {
        /// The role.
        role: String,
        /// The organisation (department) the role is in; none means any.
        org: Option<String>,
        /// Which region the role is for.
        region: RegionRule,
    },
    /// One user.
    User {
        /// The username.
        user: String,
    },
    /// Several assignees in parallel, typically across departments.
    All {
        /// The members; each gets its own task. Members are roles or users.
        all: Vec<Assignee>,
        /// When the step is done.
        join: Join,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAssignee {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    org: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    region: Option<RegionRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    all: Option<Vec<Assignee>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    join: Option<Join>,
}

impl TryFrom<RawAssignee> for Assignee {
    type Error = String;

    fn try_from(r: RawAssignee) -> Result<Self, String> {
        match (r.role, r.user, r.all) {
            (Some(role), None, None) => {
                if r.join.is_some() {
                    return Err("`join` only applies to a parallel assignee (`all: [...]`)".into());
                }
                Ok(Assignee::Role {
                    role,
                    org: r.org,
                    region: r.region.unwrap_or_default(),
                })
            }
            (None, Some(user), None) => {
                if r.org.is_some() || r.region.is_some() || r.join.is_some() {
                    return Err("a `user` assignee takes no `org`, `region` or `join`: the user is one person".into());
                }
                Ok(Assignee::User { user })
            }
            (None, None, Some(all)) => {
                if r.org.is_some() || r.region.is_some() {
                    return Err("a parallel assignee takes `org` and `region` on each member of `all`, not on itself".into());
                }
                Ok(Assignee::All {
                    all,
                    join: r.join.unwrap_or_default(),
                })
            }
            _ => Err("an assignee needs exactly one of `role`, `user` or `all`".into()),
        }
    }
}

impl From<Assignee> for RawAssignee {
    fn from(a: Assignee) -> Self {
        let mut r = RawAssignee {
            role: None,
            org: None,
            region: None,
            user: None,
            all: None,
            join: None,
        };
        match a {
            Assignee::Role { role, org, region } => {
                r.role = Some(role);
                r.org = org;
                r.region = Some(region);
            }
            Assignee::User { user } => r.user = Some(user),
            Assignee::All { all, join } => {
                r.all = Some(all);
                r.join = Some(join);
            }
        }
        r
    }
}

/// Which region a role assignee is for.
///
/// Written as a string: `event`, `parent`, or a region path such as `/hz/xihu`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RegionRule {
    /// The event's region.
    #[default]
    Event,
    /// The region above the event's (`/hz/xihu` for `/hz/xihu/lingyin`; the city `/` stays `/`).
    Parent,
    /// Always this region.
    Fixed(String),
}

impl Serialize for RegionRule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RegionRule::Event => s.serialize_str("event"),
            RegionRule::Parent => s.serialize_str("parent"),
            RegionRule::Fixed(path) => s.serialize_str(path),
        }
    }
}

impl<'de> Deserialize<'de> for RegionRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "event" => Ok(RegionRule::Event),
            "parent" => Ok(RegionRule::Parent),
            _ if s.starts_with('/') => Ok(RegionRule::Fixed(s)),
            _ => Err(de::Error::custom(format!(
                "region {s:?} is neither `event`, `parent` nor a region path starting with '/'"
            ))),
        }
    }
}

/// How a parallel step completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Join {
    /// Every member approves; one rejection rejects the step.
    #[default]
    All,
    /// The first approval completes the step (the other tasks are cancelled); the step is
    /// rejected only when every member rejects.
    Any,
}

/// Where a step leads on approval.
///
/// Written as a [`Target`] (`end`, a step id, `{ end: outcome }`) or as
/// `{ branches: [{ when: <condition>, to: <target> }, ...], otherwise: <target> }`; the first
/// branch whose condition holds is taken.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Always here.
    Go(Target),
    /// The first matching branch, else `otherwise`.
    Branches {
        /// Tried in order.
        branches: Vec<Branch>,
        /// Taken when no branch matches.
        otherwise: Target,
    },
}

/// One conditional route out of a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Branch {
    /// The condition.
    pub when: Condition,
    /// Where it leads.
    pub to: Target,
}

/// A step to go to, or the end of the workflow.
///
/// Written as a step id, as `end`, or as `{ end: <outcome> }`. A bare `end` means outcome
/// `resolved` when reached by approval and `rejected` when reached through `onReject`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Go to this step.
    Step(String),
    /// End the workflow and close the event.
    End {
        /// The event's outcome; none takes the default of how the end was reached.
        outcome: Option<String>,
    },
}

impl Target {
    fn step(&self) -> Option<&str> {
        match self {
            Target::Step(s) => Some(s),
            Target::End { .. } => None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTargetMap {
    end: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNextMap {
    #[serde(default)]
    end: Option<String>,
    #[serde(default)]
    branches: Option<Vec<Branch>>,
    #[serde(default)]
    otherwise: Option<Target>,
}

fn target_from_str(s: &str) -> Target {
    if s == END {
        Target::End { outcome: None }
    } else {
        Target::Step(s.to_owned())
    }
}

impl Serialize for Target {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Target::Step(id) => s.serialize_str(id),
            Target::End { outcome: None } => s.serialize_str(END),
            Target::End { outcome: Some(o) } => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("end", o)?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Target;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a step id, `end`, or `{ end: <outcome> }`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Target, E> {
                Ok(target_from_str(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Target, A::Error> {
                let raw = RawTargetMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Target::End {
                    outcome: Some(raw.end),
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Next {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Next::Go(t) => t.serialize(s),
            Next::Branches {
                branches,
                otherwise,
            } => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("branches", branches)?;
                m.serialize_entry("otherwise", otherwise)?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Next {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Next;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`end`, a step id, `{ end: <outcome> }` or `{ branches: [...], otherwise: <target> }`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Next, E> {
                Ok(Next::Go(target_from_str(v)))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Next, A::Error> {
                let raw = RawNextMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
                match raw {
                    RawNextMap {
                        end: Some(outcome),
                        branches: None,
                        otherwise: None,
                    } => Ok(Next::Go(Target::End {
                        outcome: Some(outcome),
                    })),
                    RawNextMap {
                        end: None,
                        branches: Some(branches),
                        otherwise: Some(otherwise),
                    } => Ok(Next::Branches {
                        branches,
                        otherwise,
                    }),
                    RawNextMap {
                        end: None,
                        branches: Some(_),
                        otherwise: None,
                    } => Err(de::Error::custom(
                        "`branches` needs `otherwise`: where to go when no branch matches",
                    )),
                    _ => Err(de::Error::custom(
                        "`next` as a map is either `{ end: <outcome> }` or `{ branches: [...], otherwise: <target> }`",
                    )),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A test on the event, for branches: `{ field: level | fields.<name>, op, value }`.
///
/// `level` is compared by its number, so `{ field: level, op: le, value: 2 }` means "major or
/// more severe". A field the event does not carry is `null`: it equals only `null`, and no
/// ordering comparison holds for it. `lt`/`le`/`gt`/`ge` compare numbers only; `in` holds when
/// the value equals one element of the array `value`. Numbers compare by value (`2` equals `2.0`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// `level` or `fields.<name>`.
    pub field: String,
    /// The comparison.
    pub op: CompareOp,
    /// What to compare with.
    pub value: Value,
}

/// A comparison in a [`Condition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompareOp {
    /// Equal.
    Eq,
    /// Not equal.
    Ne,
    /// Less than (numbers).
    Lt,
    /// Less than or equal (numbers).
    Le,
    /// Greater than (numbers).
    Gt,
    /// Greater than or equal (numbers).
    Ge,
    /// Equal to one element of an array.
    In,
}

impl Condition {
    /// Does the condition hold for an event of `level` with `fields`?
    pub fn holds(&self, level: Level, fields: &serde_json::Map<String, Value>) -> bool {
        let level_value;
        let actual = if self.field == "level" {
            level_value = Value::from(level.number());
            &level_value
        } else if let Some(name) = self.field.strip_prefix("fields.") {
            fields.get(name).unwrap_or(&Value::Null)
        } else {
            return false;
        };
        match self.op {
            CompareOp::Eq => json_eq(actual, &self.value),
            CompareOp::Ne => !json_eq(actual, &self.value),
            CompareOp::In => self
                .value
                .as_array()
                .is_some_and(|vs| vs.iter().any(|v| json_eq(actual, v))),
            op => match (actual.as_f64(), self.value.as_f64()) {
                (Some(a), Some(b)) => match op {
                    CompareOp::Lt => a < b,
                    CompareOp::Le => a <= b,
                    CompareOp::Gt => a > b,
                    _ => a >= b,
                },
                _ => false,
            },
        }
    }

    fn check(&self, p: &mut Problems, step: Option<&str>, at: &str) {
        let field_ok = self.field == "level"
            || self
                .field
                .strip_prefix("fields.")
                .is_some_and(|n| !n.is_empty());
        if !field_ok {
            p.push(
                step,
                format!("{at}.field"),
                format!(
                    "{:?} is not testable: use `level` or `fields.<name>`",
                    self.field
                ),
            );
        }
        let value_at = format!("{at}.value");
        match self.op {
            CompareOp::In => {
                if !self.value.is_array() {
                    p.push(step, &value_at, "`op: in` needs an array of values");
                }
            }
            CompareOp::Lt | CompareOp::Le | CompareOp::Gt | CompareOp::Ge => {
                if !self.value.is_number() {
                    p.push(
                        step,
                        &value_at,
                        "`lt`, `le`, `gt` and `ge` compare numbers: give a number",
                    );
                }
            }
            CompareOp::Eq | CompareOp::Ne => {}
        }
        if self.field == "level" {
            let values: Vec<&Value> = match &self.value {
                Value::Array(vs) if self.op == CompareOp::In => vs.iter().collect(),
                v => vec![v],
            };
            for v in values {
                if v.as_u64().and_then(Level::from_number).is_none() {
                    p.push(step, &value_at, format!("{v} is not a level: use 1 to 4"));
                }
            }
        }
    }
}

fn json_eq(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) if a.is_number() && b.is_number() => x == y,
        _ => a == b,
    }
}

/// What happens when a step's deadline passes while a task of it is still open.
///
/// The open task(s) are marked overdue and stay open (the crew on site may still be the ones who
/// finish the job), and `to` gets a task for the same part of the step. Whichever of them acts
/// first decides; the other task is then cancelled. Escalation happens once per task slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Escalation {
    /// Who takes over; a role or a user, not a parallel assignee.
    pub to: Assignee,
    /// Also send `to` an urgent notification, beyond the task itself.
    #[serde(default)]
    pub notify: bool,
}

impl WorkflowDefinition {
    /// Parses a definition from YAML (not validated; call [`WorkflowDefinition::validate`]).
    pub fn from_yaml(yaml: &str) -> Result<Self, serde_norway::Error> {
        serde_norway::from_str(yaml)
    }

    /// Parses a definition from JSON (not validated; call [`WorkflowDefinition::validate`]).
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// The definition as JSON, in the same form it is read.
    pub fn to_json(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string(self).expect("definition serialises")
    }

    /// The step with this id.
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// Does the definition handle events of this type and level?
    pub fn applies(&self, type_code: &str, level: Level) -> bool {
        self.applies_to.event_type == type_code
            && (self.applies_to.levels.is_empty() || self.applies_to.levels.contains(&level))
    }

    /// Checks everything serde cannot and returns every problem found: id formats, unique step
    /// ids, that every referenced step exists, deadlines, assignees, conditions, that every step
    /// is reachable from `start`, and that an end can be reached from every step.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut p = Problems::default();
        if !is_code(&self.id) {
            p.push(
                None,
                "id",
                format!("{:?} is not a definition id: use {CODE_FORMAT}", self.id),
            );
        }
        if self.name.trim().is_empty() {
            p.push(None, "name", "must not be empty: it is what operators see");
        }
        if self.version == 0 {
            p.push(None, "version", "must be 1 or more");
        }
        if !is_code(&self.applies_to.event_type) {
            p.push(
                None,
                "appliesTo.eventType",
                format!(
                    "{:?} is not an event type code: use {CODE_FORMAT}",
                    self.applies_to.event_type
                ),
            );
        }
        for (i, l) in self.applies_to.levels.iter().enumerate() {
            if self.applies_to.levels[..i].contains(l) {
                p.push(
                    None,
                    format!("appliesTo.levels[{i}]"),
                    format!("level {l} is listed twice"),
                );
            }
        }
        if self.steps.is_empty() {
            p.push(None, "steps", "a workflow needs at least one step");
        }
        let mut ids: HashMap<&str, usize> = HashMap::new();
        for (i, s) in self.steps.iter().enumerate() {
            if s.id == END {
                p.push(
                    None,
                    format!("steps[{i}].id"),
                    "`end` is reserved for the end of the workflow: rename the step",
                );
            } else if !is_code(&s.id) {
                p.push(
                    None,
                    format!("steps[{i}].id"),
                    format!("{:?} is not a step id: use {CODE_FORMAT}", s.id),
                );
            } else if let Some(j) = ids.get(s.id.as_str()) {
                p.push(
                    None,
                    format!("steps[{i}].id"),
                    format!("`{}` is already the id of steps[{j}]", s.id),
                );
            } else {
                ids.insert(&s.id, i);
            }
        }
        if self.step(&self.start).is_none() {
            p.push(
                None,
                "start",
                format!("no step has the id `{}`", self.start),
            );
        }
        for (i, s) in self.steps.iter().enumerate() {
            let named = ids.get(s.id.as_str()) == Some(&i);
            self.check_step(i, s, named, &mut p);
        }
        self.check_paths(&ids, &mut p);
        p.into_result()
    }

    fn check_target(&self, p: &mut Problems, step: Option<&str>, at: &str, t: &Target) {
        match t {
            Target::Step(id) if self.step(id).is_none() => {
                p.push(step, at, format!("no step has the id `{id}`"));
            }
            Target::End { outcome: Some(o) } if o.trim().is_empty() => {
                p.push(step, format!("{at}.end"), "the outcome must not be empty");
            }
            _ => {}
        }
    }

    /// Checks one step. A step whose id is unique and well-formed is named by its id;
    /// otherwise by its position (`steps[2].name`), so problems are not pinned on another step
    /// sharing the id.
    fn check_step(&self, index: usize, s: &Step, named: bool, p: &mut Problems) {
        let (step, prefix) = if named {
            (Some(s.id.as_str()), String::new())
        } else {
            (None, format!("steps[{index}]."))
        };
        let at = |field: &str| format!("{prefix}{field}");
        if s.name.trim().is_empty() {
            p.push(
                step,
                at("name"),
                "must not be empty: it is the task title assignees see",
            );
        }
        check_assignee(p, step, &at("assignee"), &s.assignee, true);
        match s.deadline_secs {
            Some(0) => p.push(
                step,
                at("deadlineSecs"),
                "must be at least 1 second (omit it for no deadline)",
            ),
            Some(d) if d > MAX_DEADLINE_SECS => p.push(
                step,
                at("deadlineSecs"),
                format!("must be at most {MAX_DEADLINE_SECS} seconds (90 days), got {d}"),
            ),
            _ => {}
        }
        for (i, a) in s.actions.iter().enumerate() {
            if s.actions[..i].contains(a) {
                p.push(
                    step,
                    at(&format!("actions[{i}]")),
                    format!("`{a}` is listed twice"),
                );
            }
        }
        if !s.actions.contains(&ActionKind::Approve) {
            p.push(
                step,
                at("actions"),
                "must offer `approve`: it is the only way the step moves on to `next`",
            );
        }
        match &s.next {
            Next::Go(t) => self.check_target(p, step, &at("next"), t),
            Next::Branches {
                branches,
                otherwise,
            } => {
                if branches.is_empty() {
                    p.push(
                        step,
                        at("next.branches"),
                        "needs at least one branch (or write the target as a plain `next`)",
                    );
                }
                for (i, b) in branches.iter().enumerate() {
                    b.when
                        .check(p, step, &at(&format!("next.branches[{i}].when")));
                    self.check_target(p, step, &at(&format!("next.branches[{i}].to")), &b.to);
                }
                self.check_target(p, step, &at("next.otherwise"), otherwise);
            }
        }
        if let Some(t) = &s.on_reject {
            self.check_target(p, step, &at("onReject"), t);
            if !s.actions.contains(&ActionKind::Reject) {
                p.push(
                    step,
                    at("onReject"),
                    "is never used because `actions` does not offer `reject`",
                );
            }
        }
        if let Some(e) = &s.escalation {
            if s.deadline_secs.is_none() {
                p.push(
                    step,
                    at("escalation"),
                    "needs `deadlineSecs` on the step: escalation happens when it passes",
                );
            }
            check_assignee(p, step, &at("escalation.to"), &e.to, false);
        }
    }

    /// Reachability: from `start` along every route (approval, branches, rejection), and back
    /// from the ends, so a step that can never finish the workflow is reported.
    fn check_paths(&self, named: &HashMap<&str, usize>, p: &mut Problems) {
        let Some(_) = self.step(&self.start) else {
            return;
        };
        let mut reached = BTreeSet::new();
        let mut todo = vec![self.start.as_str()];
        while let Some(id) = todo.pop() {
            if !reached.insert(id) {
                continue;
            }
            if let Some(s) = self.step(id) {
                todo.extend(s.targets().filter_map(Target::step));
            }
        }
        // A step can end when it has a route to an end, or to a step that can end.
        let mut can_end: BTreeSet<&str> = BTreeSet::new();
        loop {
            let before = can_end.len();
            for s in &self.steps {
                if s.targets()
                    .any(|t| t.step().is_none_or(|id| can_end.contains(id)))
                {
                    can_end.insert(&s.id);
                }
            }
            if can_end.len() == before {
                break;
            }
        }
        // Steps without a usable id were reported above; routes cannot name them anyway.
        for (i, s) in self.steps.iter().enumerate() {
            if named.get(s.id.as_str()) != Some(&i) {
                continue;
            }
            if !reached.contains(s.id.as_str()) {
                p.push(
                    Some(&s.id),
                    "id",
                    format!("the step is not reachable from `start` (`{}`)", self.start),
                );
            } else if !can_end.contains(s.id.as_str()) {
                p.push(
                    Some(&s.id),
                    "next",
                    "no route from this step reaches `end`: events taking it could never be closed",
                );
            }
        }
    }
}

impl Step {
    /// Every route out of the step: approval routes, then rejection (the implicit end, when
    /// `reject` is offered without `onReject`).
    fn targets(&self) -> impl Iterator<Item = &Target> {
        const IMPLICIT_END: Target = Target::End { outcome: None };
        let next: Vec<&Target> = match &self.next {
            Next::Go(t) => vec![t],
            Next::Branches {
                branches,
                otherwise,
            } => branches.iter().map(|b| &b.to).chain([otherwise]).collect(),
        };
        let reject = match &self.on_reject {
            Some(t) => Some(t),
            None if self.actions.contains(&ActionKind::Reject) => Some(&IMPLICIT_END),
            None => None,
        };
        next.into_iter().chain(reject)
    }

    /// Does the step offer this action?
    pub fn offers(&self, action: ActionKind) -> bool {
        self.actions.contains(&action)
    }
}

fn check_assignee(p: &mut Problems, step: Option<&str>, at: &str, a: &Assignee, parallel_ok: bool) {
    match a {
        Assignee::Role { role, org, region } => {
            if role.trim().is_empty() {
                p.push(step, format!("{at}.role"), "must name a role");
            }
            if org.as_deref().is_some_and(|o| o.trim().is_empty()) {
                p.push(
                    step,
                    format!("{at}.org"),
                    "must name an organisation (omit it for any)",
                );
            }
            if let RegionRule::Fixed(path) = region
                && !is_region(path)
            {
                p.push(
                    step,
                    format!("{at}.region"),
                    format!(
                        "{path:?} is not a region path: use `event`, `parent` or {REGION_FORMAT}"
                    ),
                );
            }
        }
        Assignee::User { user } => {
            if user.trim().is_empty() {
                p.push(step, format!("{at}.user"), "must name a user");
            }
        }
        Assignee::All { all, .. } => {
            if !parallel_ok {
                p.push(
                    step,
                    at,
                    "must be a role or a user, not a parallel assignee (`all`)",
                );
                return;
            }
            if all.is_empty() {
                p.push(
                    step,
                    format!("{at}.all"),
                    "a parallel step needs at least one member",
                );
            }
            for (i, m) in all.iter().enumerate() {
                let m_at = format!("{at}.all[{i}]");
                if matches!(m, Assignee::All { .. }) {
                    p.push(
                        step,
                        &m_at,
                        "members must be roles or users; parallel steps do not nest",
                    );
                    continue;
                }
                if let Some(j) = all[..i].iter().position(|o| o == m) {
                    p.push(
                        step,
                        &m_at,
                        format!("is the same assignee as `{at}.all[{j}]`"),
                    );
                }
                check_assignee(p, step, &m_at, m, false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const EXAMPLE: &str = include_str!("../examples/water-main-burst.yaml");

    fn example() -> WorkflowDefinition {
        let def = WorkflowDefinition::from_yaml(EXAMPLE).unwrap();
        def.validate().unwrap();
        def
    }

    fn errors_of(yaml: &str) -> ValidationErrors {
        WorkflowDefinition::from_yaml(yaml)
            .unwrap()
            .validate()
            .unwrap_err()
    }

    #[test]
    fn example_parses_with_every_form() {
        let def = example();
        assert_eq!(def.start, "dispatch");
        let dispatch = def.step("dispatch").unwrap();
        assert_eq!(
            dispatch.assignee,
            Assignee::Role {
                role: "dispatcher".into(),
                org: Some("eoc".into()),
                region: RegionRule::Event
            }
        );
        assert_eq!(
            dispatch.on_reject,
            Some(Target::End {
                outcome: Some("false-alarm".into())
            })
        );
        let Next::Branches {
            branches,
            otherwise,
        } = &dispatch.next
        else {
            panic!("dispatch branches: {:?}", dispatch.next)
        };
        assert_eq!(branches.len(), 2);
        assert_eq!(branches[0].when.op, CompareOp::Le);
        assert_eq!(*otherwise, Target::Step("repair".into()));
        let esc = dispatch.escalation.as_ref().unwrap();
        assert!(esc.notify);
        assert!(matches!(
            &esc.to,
            Assignee::Role {
                region: RegionRule::Parent,
                ..
            }
        ));

        let joint = def.step("joint-repair").unwrap();
        let Assignee::All { all, join } = &joint.assignee else {
            panic!("joint-repair is parallel")
        };
        assert_eq!((all.len(), *join), (2, Join::All));
        assert!(matches!(
            &joint.escalation.as_ref().unwrap().to,
            Assignee::Role { region: RegionRule::Fixed(r), .. } if r == "/hz"
        ));
        // Steps without `actions` offer all four.
        assert_eq!(def.step("repair").unwrap().actions, ActionKind::all());
        assert_eq!(
            def.step("review").unwrap().next,
            Next::Go(Target::End { outcome: None })
        );
    }

    #[test]
    fn json_round_trip_keeps_the_definition() {
        let def = example();
        let json = def.to_json();
        let back = WorkflowDefinition::from_json(&json).unwrap();
        assert_eq!(back, def);
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["steps"][0]["onReject"], json!({ "end": "false-alarm" }));
        assert_eq!(v["steps"][0]["assignee"]["region"], json!("event"));
        assert_eq!(v["steps"][3]["next"], json!("end"));
        assert_eq!(v["steps"][1]["assignee"]["join"], json!("all"));
    }

    #[test]
    fn json_definition() {
        let def = WorkflowDefinition::from_json(
            r#"{
              "id": "manhole-open", "name": "Manhole cover opened", "version": 2,
              "appliesTo": { "eventType": "manhole.cover_open" },
              "start": "check",
              "steps": [
                { "id": "check", "name": "Patrol checks the cover",
                  "assignee": { "user": "wang.wu" }, "deadlineSecs": 1800,
                  "actions": ["approve", "feedback"], "next": { "end": "cover-closed" } }
              ]
            }"#,
        )
        .unwrap();
        def.validate().unwrap();
        assert!(def.applies("manhole.cover_open", Level::General));
        assert!(def.applies("manhole.cover_open", Level::Critical));
        assert!(!def.applies("water.main_burst", Level::Critical));
        assert_eq!(
            def.steps[0].next,
            Next::Go(Target::End {
                outcome: Some("cover-closed".into())
            })
        );
    }

    #[test]
    fn applies_by_type_and_level() {
        let def = example();
        assert!(def.applies("water.main_burst", Level::Critical));
        assert!(def.applies("water.main_burst", Level::Serious));
        assert!(!def.applies("water.main_burst", Level::General));
        assert!(!def.applies("manhole.cover_open", Level::Critical));
    }

    #[test]
    fn parse_errors_say_what_is_expected() {
        let bad_assignee = EXAMPLE.replace(
            "assignee: { role: dispatcher, org: eoc, region: event }",
            "assignee: { role: dispatcher, user: li.si }",
        );
        let err = WorkflowDefinition::from_yaml(&bad_assignee)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("exactly one of `role`, `user` or `all`"),
            "{err}"
        );

        let bad_region = EXAMPLE.replace("region: event }", "region: district }");
        let err = WorkflowDefinition::from_yaml(&bad_region)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("neither `event`, `parent` nor a region path"),
            "{err}"
        );

        let no_otherwise = EXAMPLE.replace("      otherwise: repair\n", "");
        let err = WorkflowDefinition::from_yaml(&no_otherwise)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`branches` needs `otherwise`"), "{err}");

        let typo = EXAMPLE.replace("deadlineSecs: 900", "deadlineSec: 900");
        let err = WorkflowDefinition::from_yaml(&typo)
            .unwrap_err()
            .to_string();
        assert!(err.contains("deadlineSec"), "{err}");

        let bad_op = EXAMPLE.replace("op: le", "op: lessThan");
        assert!(WorkflowDefinition::from_yaml(&bad_op).is_err());
    }

    #[test]
    fn validation_names_step_and_field() {
        let yaml = r#"
id: Bad Id
name: ""
version: 0
appliesTo: { eventType: water.main_burst, levels: [1, 1] }
start: nowhere
steps:
  - id: a
    name: A
    assignee: { all: [] }
    deadlineSecs: 7776001
    actions: [reject, reject]
    next: ghost
    onReject: { end: "" }
    escalation: { to: { all: [ { user: x } ] } }
  - id: a
    name: Duplicate
    assignee: { role: " ", org: "", region: /hz/ }
    deadlineSecs: 0
    actions: [approve]
    next:
      branches:
        - when: { field: colour, op: gt, value: red }
          to: a
        - when: { field: level, op: in, value: [1, 7] }
          to: end
      otherwise: end
    onReject: a
  - id: end
    name: End
    assignee: { user: "" }
    next: end
"#;
        let errs = errors_of(yaml);
        let expect: &[(Option<&str>, &str)] = &[
            (None, "id"),
            (None, "name"),
            (None, "version"),
            (None, "appliesTo.levels[1]"),
            (None, "steps[1].id"),
            (None, "steps[2].id"),
            (None, "start"),
            (Some("a"), "assignee.all"),
            (Some("a"), "deadlineSecs"),
            (Some("a"), "actions[1]"),
            (Some("a"), "actions"),
            (Some("a"), "next"),
            (Some("a"), "onReject.end"),
            (Some("a"), "escalation.to"),
            (None, "steps[1].assignee.role"),
            (None, "steps[1].assignee.org"),
            (None, "steps[1].assignee.region"),
            (None, "steps[1].deadlineSecs"),
            (None, "steps[1].next.branches[0].when.field"),
            (None, "steps[1].next.branches[0].when.value"),
            (None, "steps[1].next.branches[1].when.value"),
            (None, "steps[1].onReject"),
            (None, "steps[2].assignee.user"),
        ];
        assert_eq!(errs.0.len(), expect.len(), "{errs}");
        for (step, field) in expect {
            assert!(
                errs.has(*step, field),
                "no problem at {step:?} {field}:\n{errs}"
            );
        }
        let text = errs.to_string();
        assert!(
            text.contains(
                "step `a`, `deadlineSecs`: must be at most 7776000 seconds (90 days), got 7776001"
            ),
            "{text}"
        );
        assert!(
            text.contains("step `a`, `next`: no step has the id `ghost`"),
            "{text}"
        );
        assert!(
            text.contains(
                "`steps[1].onReject`: is never used because `actions` does not offer `reject`"
            ),
            "{text}"
        );
        assert!(text.contains("7 is not a level"), "{text}");
    }

    #[test]
    fn escalation_needs_a_deadline() {
        let yaml = EXAMPLE.replace("    deadlineSecs: 900            # 15 minutes\n", "");
        let errs = errors_of(&yaml);
        assert!(errs.has(Some("dispatch"), "escalation"), "{errs}");
        assert_eq!(errs.0.len(), 1, "{errs}");
    }

    #[test]
    fn parallel_members_must_be_distinct_and_flat() {
        let yaml = EXAMPLE.replace(
            "        - { role: traffic-duty, org: traffic-police, region: event }",
            "        - { role: repair-crew, org: water-co, region: event }\n        - { all: [ { user: x } ] }",
        );
        let errs = errors_of(&yaml);
        assert!(errs.has(Some("joint-repair"), "assignee.all[1]"), "{errs}");
        assert!(errs.has(Some("joint-repair"), "assignee.all[2]"), "{errs}");
    }

    #[test]
    fn unreachable_steps_and_dead_ends() {
        let yaml = r#"
id: loops
name: Loops
version: 1
appliesTo: { eventType: x }
start: a
steps:
  - { id: a, name: A, assignee: { user: u }, actions: [approve, feedback], next: b }
  - { id: b, name: B, assignee: { user: u }, actions: [approve, transfer], next: a }
  - { id: c, name: C, assignee: { user: u }, next: end }
"#;
        let errs = errors_of(yaml);
        assert!(errs.has(Some("a"), "next"), "{errs}");
        assert!(errs.has(Some("b"), "next"), "{errs}");
        assert!(errs.has(Some("c"), "id"), "{errs}");
        assert_eq!(errs.0.len(), 3, "{errs}");
        // Offering `reject` (ending `rejected` by default) gives the loop a way out.
        let fixed = yaml
            .replace("actions: [approve, transfer]", "actions: [approve, reject]")
            .replace(
                "  - { id: c, name: C, assignee: { user: u }, next: end }\n",
                "",
            );
        WorkflowDefinition::from_yaml(&fixed)
            .unwrap()
            .validate()
            .unwrap();
    }

    #[test]
    fn conditions() {
        let fields = json!({ "trafficImpact": true, "pressureKpa": 80, "pipe": "steel" })
            .as_object()
            .unwrap()
            .clone();
        let c = |field: &str, op: CompareOp, value: Value| Condition {
            field: field.into(),
            op,
            value,
        };
        let holds = |cond: Condition, level| cond.holds(level, &fields);
        assert!(holds(c("level", CompareOp::Le, json!(2)), Level::Major));
        assert!(!holds(c("level", CompareOp::Le, json!(2)), Level::Serious));
        assert!(holds(c("level", CompareOp::Eq, json!(3.0)), Level::Serious));
        assert!(holds(
            c("level", CompareOp::In, json!([1, 3])),
            Level::Serious
        ));
        assert!(holds(
            c("fields.trafficImpact", CompareOp::Eq, json!(true)),
            Level::General
        ));
        assert!(holds(
            c("fields.pressureKpa", CompareOp::Lt, json!(100)),
            Level::General
        ));
        assert!(!holds(
            c("fields.pressureKpa", CompareOp::Ge, json!(100)),
            Level::General
        ));
        assert!(holds(
            c("fields.pipe", CompareOp::Ne, json!("pe")),
            Level::General
        ));
        assert!(holds(
            c("fields.pipe", CompareOp::In, json!(["steel", "pe"])),
            Level::General
        ));
        // Missing fields are null: equal to null only, never ordered.
        assert!(holds(
            c("fields.depth", CompareOp::Eq, Value::Null),
            Level::General
        ));
        assert!(!holds(
            c("fields.depth", CompareOp::Lt, json!(5)),
            Level::General
        ));
        assert!(holds(
            c("fields.depth", CompareOp::Ne, json!(5)),
            Level::General
        ));
        // Strings are not ordered.
        assert!(!holds(
            c("fields.pipe", CompareOp::Gt, json!(1)),
            Level::General
        ));
    }
}
