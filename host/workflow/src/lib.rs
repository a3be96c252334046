//! Events and disposal workflows.
//!
//! The I/O-free core of the event operations center: event types and how an incoming event is
//! classified (merged into an open event, closed at once, isolated or dispatched), workflow
//! definitions as data (JSON or YAML), and the state machine that runs one definition for one
//! event. Nothing here reads the clock, touches storage or sends messages: callers pass times in
//! milliseconds since the epoch, and every state change answers with [`Effect`]s the host turns
//! into tasks, messages and event status changes.
//!
//! ```
//! use lotus_workflow::{Action, Effect, EventFacts, Instance, Level, WorkflowDefinition};
//!
//! let def = WorkflowDefinition::from_yaml(
//!     "id: manhole-open\n\
//!      name: Manhole cover opened\n\
//!      version: 1\n\
//!      appliesTo: { eventType: manhole.cover_open }\n\
//!      start: check\n\
//!      steps:\n\
//!        - { id: check, name: Patrol checks the cover, assignee: { role: patrol, org: roads },\n\
//!            deadlineSecs: 1800, next: end }\n",
//! )?;
//! def.validate()?;
//! let event = EventFacts {
//!     id: "ev-1".into(),
//!     type_code: "manhole.cover_open".into(),
//!     level: Level::General,
//!     region: "/hz/xihu".into(),
//!     fields: Default::default(),
//! };
//! let now = 1_750_000_000_000;
//! let (mut run, effects) = Instance::start(&def, &event, now)?;
//! assert!(matches!(&effects[1], Effect::CreateTask { task_id, .. } if task_id == "ev-1-t1"));
//! assert_eq!(run.next_deadline(), Some(now + 1_800_000));
//!
//! let effects = run.act(&def, "ev-1-t1", "patrol.chen", Action::Approve { comment: None }, now + 60_000)?;
//! assert_eq!(effects.last(), Some(&Effect::EventClosed { outcome: "resolved".into() }));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod definition;
pub mod event;
pub mod instance;
pub mod region;
pub mod validation;

pub use definition::{
    ActionKind, AppliesTo, Assignee, Branch, CompareOp, Condition, END, Escalation, Join,
    MAX_DEADLINE_SECS, Next, REJECTED, RESOLVED, RegionRule, Step, Target, WorkflowDefinition,
};
pub use event::{
    AUTO_CLOSED, Classification, EventDraft, EventType, FieldError, FieldKind, FieldSpec, GeoPoint,
    Level, MergeSpec, OpenEvent, classify,
};
pub use instance::{
    Action, Effect, EventFacts, Instance, InstanceState, ResolvedAssignee, SUBJECT_TASK_ESCALATED,
    SUBJECT_TASK_OVERDUE, Task, TaskOrigin, TaskOutcome, TrailAction, TrailEntry, WorkflowError,
};
pub use validation::{ValidationError, ValidationErrors};
