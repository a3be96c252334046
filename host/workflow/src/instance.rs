//! One running workflow for one event: the state machine and the effects it asks the host to
//! carry out.
//!
//! The host stores an [`Instance`] as JSON next to its event, and calls [`Instance::act`] when
//! an assignee acts on a task and [`Instance::tick`] when [`Instance::next_deadline`] has passed.
//! Each call returns [`Effect`]s — tasks to create and close, notifications to send, event status
//! changes — and leaves the instance ready to be stored again. A call that fails changes nothing.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::definition::{
    ActionKind, Assignee, Join, Next, REJECTED, RESOLVED, RegionRule, Step, Target,
    WorkflowDefinition,
};
use crate::event::Level;
use crate::region::{REGION_FORMAT, is_region, parent_region};
use crate::validation::ValidationErrors;

/// Notification subject: a task's deadline passed; sent to whoever holds it.
pub const SUBJECT_TASK_OVERDUE: &str = "workflow.task.overdue";
/// Notification subject: an overdue task was escalated to you (escalations with `notify: true`).
pub const SUBJECT_TASK_ESCALATED: &str = "workflow.task.escalated";

/// What a workflow needs to know about its event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventFacts {
    /// The event's id; task ids are derived from it.
    pub id: String,
    /// Its type code.
    pub type_code: String,
    /// Its level (after defaulting).
    pub level: Level,
    /// Its region path; role assignees resolve against it.
    pub region: String,
    /// Its field values; branch conditions read them.
    #[serde(default)]
    pub fields: Map<String, Value>,
}

/// An assignee with the region worked out: who a task is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum ResolvedAssignee {
    /// Holders of `role` (in `org`, if given) responsible for `region`.
    Role {
        /// The role.
        role: String,
        /// The organisation; none means any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        org: Option<String>,
        /// The region path.
        region: String,
    },
    /// One user.
    User {
        /// The username.
        username: String,
    },
}

impl ResolvedAssignee {
    fn resolve(a: &Assignee, event: &EventFacts) -> Option<ResolvedAssignee> {
        match a {
            Assignee::Role { role, org, region } => Some(ResolvedAssignee::Role {
                role: role.clone(),
                org: org.clone(),
                region: match region {
                    RegionRule::Event => event.region.clone(),
                    RegionRule::Parent => parent_region(&event.region),
                    RegionRule::Fixed(path) => path.clone(),
                },
            }),
            Assignee::User { user } => Some(ResolvedAssignee::User {
                username: user.clone(),
            }),
            Assignee::All { .. } => None,
        }
    }

    fn problem(&self) -> Option<String> {
        match self {
            ResolvedAssignee::Role { role, org, region } => {
                if role.trim().is_empty() {
                    Some("`role` must name a role".into())
                } else if org.as_deref().is_some_and(|o| o.trim().is_empty()) {
                    Some("`org` must name an organisation; omit it for any".into())
                } else if !is_region(region) {
                    Some(format!(
                        "region {region:?} is not a region path: use {REGION_FORMAT}"
                    ))
                } else {
                    None
                }
            }
            ResolvedAssignee::User { username } => username
                .trim()
                .is_empty()
                .then(|| "`username` must name a user".into()),
        }
    }
}

/// Where a workflow is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "camelCase")]
pub enum InstanceState {
    /// Tasks are open.
    Running,
    /// The workflow ended and the event is closed.
    Completed {
        /// `resolved`, `rejected` or an outcome named by the definition.
        outcome: String,
    },
}

/// How a task came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TaskOrigin {
    /// Opened when its step started.
    Assigned,
    /// Opened by a transfer from another task of the same step.
    Transferred,
    /// Opened because the step's deadline passed.
    Escalated,
}

/// An open task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// `<event id>-t<n>`; unique for the event.
    pub id: String,
    /// The step it belongs to.
    pub step_id: String,
    /// Which member of a parallel step it is for (0 for a single-assignee step).
    pub slot: usize,
    /// Who it is for.
    pub assignee: ResolvedAssignee,
    /// When it was opened.
    pub created_ms: i64,
    /// When it is due; transfers keep the step's deadline, escalation tasks have none.
    pub due_ms: Option<i64>,
    /// Has the deadline passed?
    pub overdue: bool,
    /// How it came to be.
    pub origin: TaskOrigin,
}

/// How a task was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TaskOutcome {
    /// Its assignee approved.
    Approved,
    /// Its assignee rejected.
    Rejected,
    /// Its assignee handed it on.
    Transferred,
    /// Someone else decided first (the other task of an escalation, the rest of a parallel
    /// step) or the step ended another way.
    Cancelled,
}

/// What happened, in the event's trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrailAction {
    /// A step started.
    Started,
    /// A task was opened for `to`.
    Assigned,
    /// A task was approved.
    Approved,
    /// A task was rejected.
    Rejected,
    /// A task was handed to `to`.
    Transferred,
    /// Progress was reported.
    FedBack,
    /// An overdue task was escalated to `to`.
    Escalated,
    /// A task's deadline passed.
    Overdue,
    /// A task was closed because the step was decided otherwise.
    Cancelled,
    /// The workflow ended with `outcome`.
    Completed,
}

/// One line of the event's trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrailEntry {
    /// When.
    pub at_ms: i64,
    /// In which step.
    pub step_id: String,
    /// On which task, if it concerns one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Who acted; none for what the workflow did by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// What happened.
    pub action: TrailAction,
    /// The actor's comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The new assignee, for `assigned`, `transferred` and `escalated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<ResolvedAssignee>,
    /// The event's outcome, for `completed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// What an assignee does with a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "action",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Action {
    /// Done or agreed.
    Approve {
        /// Optional remark.
        #[serde(default)]
        comment: Option<String>,
    },
    /// Refused; the reason is required.
    Reject {
        /// Why.
        comment: String,
    },
    /// Hand the task to someone else in the same step.
    Transfer {
        /// The new assignee.
        to: ResolvedAssignee,
        /// Optional remark.
        #[serde(default)]
        comment: Option<String>,
    },
    /// Report progress without deciding; the report is required.
    #[serde(rename = "feedback")]
    FeedBack {
        /// The report.
        comment: String,
    },
}

impl Action {
    /// Which kind of action this is, to check against the step's `actions`.
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::Approve { .. } => ActionKind::Approve,
            Action::Reject { .. } => ActionKind::Reject,
            Action::Transfer { .. } => ActionKind::Transfer,
            Action::FeedBack { .. } => ActionKind::Feedback,
        }
    }
}

/// Something the host carries out after a state change, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "effect",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Effect {
    /// Set the event's status to "processing": its workflow started.
    EventProcessing,
    /// Put a task in the assignee's inbox.
    CreateTask {
        /// The task's id (primary key).
        task_id: String,
        /// Its step.
        step_id: String,
        /// The step's name, as the task title.
        step_name: String,
        /// Who it is for.
        assignee: ResolvedAssignee,
        /// When it is due.
        due_ms: Option<i64>,
    },
    /// Close a task.
    CloseTask {
        /// The task's id.
        task_id: String,
        /// Why.
        outcome: TaskOutcome,
    },
    /// Send a message (template `subject_key`) to an assignee.
    Notify {
        /// Recipient(s).
        assignee: ResolvedAssignee,
        /// Message template key, such as [`SUBJECT_TASK_OVERDUE`].
        subject_key: String,
        /// The task it is about.
        task_id: Option<String>,
    },
    /// An overdue task was escalated; for the event's timeline and statistics.
    Escalated {
        /// The overdue task (it stays open).
        task_id: String,
        /// Who it was escalated to.
        to: ResolvedAssignee,
    },
    /// Close the event.
    EventClosed {
        /// `resolved`, `rejected` or an outcome named by the definition.
        outcome: String,
    },
}

/// Why a workflow call was refused; nothing was changed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WorkflowError {
    /// The definition does not pass [`WorkflowDefinition::validate`].
    #[error("workflow definition is invalid: {0}")]
    InvalidDefinition(ValidationErrors),
    /// The definition is not for this event.
    #[error(
        "workflow `{definition_id}` does not apply to events of type `{event_type}` at level {level}"
    )]
    NotApplicable {
        /// The definition.
        definition_id: String,
        /// The event's type.
        event_type: String,
        /// The event's level.
        level: Level,
    },
    /// The event's region is malformed, so assignees cannot be resolved.
    #[error("event region {region:?} is not a region path: use {REGION_FORMAT}")]
    InvalidEventRegion {
        /// The region given.
        region: String,
    },
    /// The instance was started with another definition or revision.
    #[error(
        "this workflow runs `{expected_id}` version {expected_version}, but `{got_id}` version {got_version} was given; load the revision the instance started with"
    )]
    DefinitionMismatch {
        /// The instance's definition.
        expected_id: String,
        /// The instance's revision.
        expected_version: u32,
        /// The definition given.
        got_id: String,
        /// Its revision.
        got_version: u32,
    },
    /// The definition lacks a step the instance is in (it was changed without a new version).
    #[error(
        "step `{step_id}` is not in the workflow definition; it was changed without raising its version"
    )]
    StepMissing {
        /// The step.
        step_id: String,
    },
    /// The workflow already ended.
    #[error("the workflow has ended with outcome `{outcome}`; its tasks can no longer be acted on")]
    Completed {
        /// Its outcome.
        outcome: String,
    },
    /// No task with this id was ever opened by this workflow.
    #[error("task `{task_id}` does not belong to this workflow")]
    UnknownTask {
        /// The id given.
        task_id: String,
    },
    /// The task was already closed.
    #[error("task `{task_id}` is already closed")]
    TaskClosed {
        /// The task.
        task_id: String,
    },
    /// The step does not offer the action.
    #[error("step `{step_id}` does not offer `{action}`; it offers {}", offered.iter().map(|a| a.name()).collect::<Vec<_>>().join(", "))]
    ActionNotOffered {
        /// The step.
        step_id: String,
        /// The action tried.
        action: ActionKind,
        /// The actions it offers.
        offered: Vec<ActionKind>,
    },
    /// The action needs a comment.
    #[error("`{action}` needs a comment: {why}")]
    CommentRequired {
        /// The action.
        action: ActionKind,
        /// What the comment is for.
        why: &'static str,
    },
    /// No actor was named.
    #[error("the actor must be the username of whoever acts")]
    MissingActor,
    /// The transfer target is malformed.
    #[error("cannot transfer task `{task_id}`: {problem}")]
    InvalidTransfer {
        /// The task.
        task_id: String,
        /// What is wrong with the target.
        problem: String,
    },
}

/// Deadlines and decisions of one member of the current step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Slot {
    due_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    decision: Option<Decision>,
    /// Set when the deadline passed, so overdue handling and escalation happen once.
    overdue: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum Decision {
    Approved,
    Rejected,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StepRun {
    step_id: String,
    started_ms: i64,
    slots: Vec<Slot>,
}

/// A workflow running (or finished) for one event; serialise it to store it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    definition_id: String,
    definition_version: u32,
    event: EventFacts,
    state: InstanceState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    step: Option<StepRun>,
    tasks: Vec<Task>,
    trail: Vec<TrailEntry>,
    /// Number of tasks opened so far; the next task id uses it plus one.
    tasks_opened: u64,
}

impl Instance {
    /// Starts `def` for an event: the event becomes "processing" and the start step's tasks are
    /// created.
    ///
    /// Fails when the definition is invalid, does not apply to the event's type and level, or
    /// the event's region is malformed.
    pub fn start(
        def: &WorkflowDefinition,
        event: &EventFacts,
        now_ms: i64,
    ) -> Result<(Instance, Vec<Effect>), WorkflowError> {
        def.validate().map_err(WorkflowError::InvalidDefinition)?;
        if !def.applies(&event.type_code, event.level) {
            return Err(WorkflowError::NotApplicable {
                definition_id: def.id.clone(),
                event_type: event.type_code.clone(),
                level: event.level,
            });
        }
        if !is_region(&event.region) {
            return Err(WorkflowError::InvalidEventRegion {
                region: event.region.clone(),
            });
        }
        let mut inst = Instance {
            definition_id: def.id.clone(),
            definition_version: def.version,
            event: event.clone(),
            state: InstanceState::Running,
            step: None,
            tasks: Vec::new(),
            trail: Vec::new(),
            tasks_opened: 0,
        };
        let mut effects = vec![Effect::EventProcessing];
        let start = def
            .step(&def.start)
            .ok_or_else(|| WorkflowError::StepMissing {
                step_id: def.start.clone(),
            })?;
        inst.enter(start, now_ms, &mut effects);
        Ok((inst, effects))
    }

    /// Id of the definition the instance runs.
    pub fn definition_id(&self) -> &str {
        &self.definition_id
    }

    /// Revision of the definition the instance runs.
    pub fn definition_version(&self) -> u32 {
        self.definition_version
    }

    /// Id of the event.
    pub fn event_id(&self) -> &str {
        &self.event.id
    }

    /// What the workflow knows about the event.
    pub fn event(&self) -> &EventFacts {
        &self.event
    }

    /// Running or completed.
    pub fn state(&self) -> &InstanceState {
        &self.state
    }

    /// The step being worked on, while running.
    pub fn current_step(&self) -> Option<&str> {
        self.step.as_ref().map(|s| s.step_id.as_str())
    }

    /// The open tasks, oldest first.
    pub fn open_tasks(&self) -> &[Task] {
        &self.tasks
    }

    /// Everything that happened, oldest first.
    pub fn trail(&self) -> &[TrailEntry] {
        &self.trail
    }

    /// The earliest deadline still to be handled by [`Instance::tick`]; none when nothing is
    /// waiting for a deadline.
    pub fn next_deadline(&self) -> Option<i64> {
        if self.state != InstanceState::Running {
            return None;
        }
        self.step
            .as_ref()?
            .slots
            .iter()
            .filter(|s| s.decision.is_none() && !s.overdue)
            .filter_map(|s| s.due_ms)
            .min()
    }

    /// An assignee acts on an open task.
    ///
    /// Whether `actor` may act on the task (role membership, region) is the host's decision,
    /// made before calling. Approval moves the step on once its join rule is met; rejection
    /// follows the step's `onReject` (or ends the workflow `rejected`); a transfer closes the
    /// task and opens one for the new assignee on the same step and deadline; feedback is only
    /// recorded. Reject and feedback need a comment.
    pub fn act(
        &mut self,
        def: &WorkflowDefinition,
        task_id: &str,
        actor: &str,
        action: Action,
        now_ms: i64,
    ) -> Result<Vec<Effect>, WorkflowError> {
        self.check_definition(def)?;
        if let InstanceState::Completed { outcome } = &self.state {
            return Err(WorkflowError::Completed {
                outcome: outcome.clone(),
            });
        }
        if actor.trim().is_empty() {
            return Err(WorkflowError::MissingActor);
        }
        let Some(index) = self.tasks.iter().position(|t| t.id == task_id) else {
            let issued = self
                .trail
                .iter()
                .any(|e| e.task_id.as_deref() == Some(task_id));
            return Err(if issued {
                WorkflowError::TaskClosed {
                    task_id: task_id.to_owned(),
                }
            } else {
                WorkflowError::UnknownTask {
                    task_id: task_id.to_owned(),
                }
            });
        };
        let step =
            def.step(&self.tasks[index].step_id)
                .ok_or_else(|| WorkflowError::StepMissing {
                    step_id: self.tasks[index].step_id.clone(),
                })?;
        let kind = action.kind();
        if !step.offers(kind) {
            return Err(WorkflowError::ActionNotOffered {
                step_id: step.id.clone(),
                action: kind,
                offered: step.actions.clone(),
            });
        }
        // Work on a copy so that a failure half-way (a definition edited without a new
        // version) leaves the stored instance as it was.
        let mut work = self.clone();
        let mut effects = Vec::new();
        work.apply(step, def, index, actor, action, now_ms, &mut effects)?;
        *self = work;
        Ok(effects)
    }

    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        step: &Step,
        def: &WorkflowDefinition,
        index: usize,
        actor: &str,
        action: Action,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) -> Result<(), WorkflowError> {
        let kind = action.kind();
        let task_id = self.tasks[index].id.clone();
        match action {
            Action::Approve { comment } => {
                let task = self.close(index, TaskOutcome::Approved, effects);
                self.record(
                    now_ms,
                    &task,
                    Some(actor),
                    TrailAction::Approved,
                    comment,
                    None,
                );
                self.decide(step, &task, Decision::Approved, def, now_ms, effects)?;
            }
            Action::Reject { comment } => {
                if comment.trim().is_empty() {
                    return Err(WorkflowError::CommentRequired {
                        action: kind,
                        why: "say why the task is rejected; it is shown in the event's trail",
                    });
                }
                let task = self.close(index, TaskOutcome::Rejected, effects);
                self.record(
                    now_ms,
                    &task,
                    Some(actor),
                    TrailAction::Rejected,
                    Some(comment),
                    None,
                );
                self.decide(step, &task, Decision::Rejected, def, now_ms, effects)?;
            }
            Action::Transfer { to, comment } => {
                if let Some(problem) = to.problem() {
                    return Err(WorkflowError::InvalidTransfer {
                        task_id: task_id.clone(),
                        problem,
                    });
                }
                if to == self.tasks[index].assignee {
                    return Err(WorkflowError::InvalidTransfer {
                        task_id: task_id.clone(),
                        problem: "the task is already assigned there; choose another assignee"
                            .into(),
                    });
                }
                let old = self.close(index, TaskOutcome::Transferred, effects);
                self.record(
                    now_ms,
                    &old,
                    Some(actor),
                    TrailAction::Transferred,
                    comment,
                    Some(to.clone()),
                );
                // The deadline belongs to the step, not to whoever holds the task: handing the
                // task on does not buy time.
                self.open(
                    step,
                    old.slot,
                    to,
                    old.due_ms,
                    old.overdue,
                    TaskOrigin::Transferred,
                    now_ms,
                    effects,
                );
            }
            Action::FeedBack { comment } => {
                if comment.trim().is_empty() {
                    return Err(WorkflowError::CommentRequired {
                        action: kind,
                        why: "describe the progress being reported",
                    });
                }
                let task = self.tasks[index].clone();
                self.record(
                    now_ms,
                    &task,
                    Some(actor),
                    TrailAction::FedBack,
                    Some(comment),
                    None,
                );
            }
        }
        Ok(())
    }

    /// Handles deadlines that have passed by `now_ms`: each open task of a member whose deadline
    /// passed is marked overdue (its holder is notified) and, if the step escalates, a task goes
    /// to the escalation assignee. Each deadline is handled once; calling again does nothing new.
    pub fn tick(
        &mut self,
        def: &WorkflowDefinition,
        now_ms: i64,
    ) -> Result<Vec<Effect>, WorkflowError> {
        self.check_definition(def)?;
        let mut effects = Vec::new();
        let Some(run) = &self.step else {
            return Ok(effects);
        };
        let step = def
            .step(&run.step_id)
            .ok_or_else(|| WorkflowError::StepMissing {
                step_id: run.step_id.clone(),
            })?;
        let due: Vec<usize> = run
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.decision.is_none() && !s.overdue && s.due_ms.is_some_and(|d| d <= now_ms)
            })
            .map(|(i, _)| i)
            .collect();
        for slot in due {
            if let Some(run) = &mut self.step {
                run.slots[slot].overdue = true;
            }
            let mut holders = Vec::new();
            for task in self.tasks.iter_mut().filter(|t| t.slot == slot) {
                task.overdue = true;
                holders.push(task.clone());
            }
            for task in &holders {
                self.record(now_ms, task, None, TrailAction::Overdue, None, None);
                effects.push(Effect::Notify {
                    assignee: task.assignee.clone(),
                    subject_key: SUBJECT_TASK_OVERDUE.into(),
                    task_id: Some(task.id.clone()),
                });
            }
            let (Some(escalation), Some(original)) = (&step.escalation, holders.first()) else {
                continue;
            };
            let Some(to) = ResolvedAssignee::resolve(&escalation.to, &self.event) else {
                // validate() refuses parallel escalation targets; nothing to resolve otherwise.
                continue;
            };
            self.record(
                now_ms,
                original,
                None,
                TrailAction::Escalated,
                None,
                Some(to.clone()),
            );
            effects.push(Effect::Escalated {
                task_id: original.id.clone(),
                to: to.clone(),
            });
            // The step's deadline has already passed; the escalation task gets none of its own
            // and is never escalated again.
            let id = self.open(
                step,
                slot,
                to.clone(),
                None,
                false,
                TaskOrigin::Escalated,
                now_ms,
                &mut effects,
            );
            if escalation.notify {
                effects.push(Effect::Notify {
                    assignee: to,
                    subject_key: SUBJECT_TASK_ESCALATED.into(),
                    task_id: Some(id),
                });
            }
        }
        Ok(effects)
    }

    fn check_definition(&self, def: &WorkflowDefinition) -> Result<(), WorkflowError> {
        if def.id == self.definition_id && def.version == self.definition_version {
            Ok(())
        } else {
            Err(WorkflowError::DefinitionMismatch {
                expected_id: self.definition_id.clone(),
                expected_version: self.definition_version,
                got_id: def.id.clone(),
                got_version: def.version,
            })
        }
    }

    fn record(
        &mut self,
        at_ms: i64,
        task: &Task,
        actor: Option<&str>,
        action: TrailAction,
        comment: Option<String>,
        to: Option<ResolvedAssignee>,
    ) {
        self.trail.push(TrailEntry {
            at_ms,
            step_id: task.step_id.clone(),
            task_id: Some(task.id.clone()),
            actor: actor.map(str::to_owned),
            action,
            comment: comment.filter(|c| !c.trim().is_empty()),
            to,
            outcome: None,
        });
    }

    /// Starts a step: one task per member, all with the step's deadline.
    fn enter(&mut self, step: &Step, now_ms: i64, effects: &mut Vec<Effect>) {
        let members: Vec<&Assignee> = match &step.assignee {
            Assignee::All { all, .. } => all.iter().collect(),
            single => vec![single],
        };
        let due_ms = step.deadline_secs.map(|secs| {
            now_ms.saturating_add(i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000))
        });
        self.step = Some(StepRun {
            step_id: step.id.clone(),
            started_ms: now_ms,
            slots: vec![
                Slot {
                    due_ms,
                    decision: None,
                    overdue: false,
                };
                members.len()
            ],
        });
        self.trail.push(TrailEntry {
            at_ms: now_ms,
            step_id: step.id.clone(),
            task_id: None,
            actor: None,
            action: TrailAction::Started,
            comment: None,
            to: None,
            outcome: None,
        });
        for (slot, member) in members.into_iter().enumerate() {
            if let Some(to) = ResolvedAssignee::resolve(member, &self.event) {
                self.open(
                    step,
                    slot,
                    to,
                    due_ms,
                    false,
                    TaskOrigin::Assigned,
                    now_ms,
                    effects,
                );
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn open(
        &mut self,
        step: &Step,
        slot: usize,
        assignee: ResolvedAssignee,
        due_ms: Option<i64>,
        overdue: bool,
        origin: TaskOrigin,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) -> String {
        self.tasks_opened += 1;
        let task = Task {
            id: format!("{}-t{}", self.event.id, self.tasks_opened),
            step_id: step.id.clone(),
            slot,
            assignee: assignee.clone(),
            created_ms: now_ms,
            due_ms,
            overdue,
            origin,
        };
        self.record(
            now_ms,
            &task,
            None,
            TrailAction::Assigned,
            None,
            Some(assignee.clone()),
        );
        effects.push(Effect::CreateTask {
            task_id: task.id.clone(),
            step_id: step.id.clone(),
            step_name: step.name.clone(),
            assignee,
            due_ms,
        });
        let id = task.id.clone();
        self.tasks.push(task);
        id
    }

    fn close(&mut self, index: usize, outcome: TaskOutcome, effects: &mut Vec<Effect>) -> Task {
        let task = self.tasks.remove(index);
        effects.push(Effect::CloseTask {
            task_id: task.id.clone(),
            outcome,
        });
        task
    }

    /// Cancels open tasks matching `which`, recording each in the trail.
    fn cancel(&mut self, which: impl Fn(&Task) -> bool, now_ms: i64, effects: &mut Vec<Effect>) {
        let (cancelled, kept): (Vec<Task>, Vec<Task>) = std::mem::take(&mut self.tasks)
            .into_iter()
            .partition(|t| which(t));
        self.tasks = kept;
        for task in cancelled {
            effects.push(Effect::CloseTask {
                task_id: task.id.clone(),
                outcome: TaskOutcome::Cancelled,
            });
            self.record(now_ms, &task, None, TrailAction::Cancelled, None, None);
        }
    }

    /// Records a member's decision and moves the step on when its join rule is met.
    fn decide(
        &mut self,
        step: &Step,
        task: &Task,
        decision: Decision,
        def: &WorkflowDefinition,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) -> Result<(), WorkflowError> {
        // The member is decided: its other task (the escalation's, or the overdue original) is
        // no longer needed.
        self.cancel(|t| t.slot == task.slot, now_ms, effects);
        let Some(run) = &mut self.step else {
            return Ok(());
        };
        run.slots[task.slot].decision = Some(decision);
        let join = match &step.assignee {
            Assignee::All { join, .. } => *join,
            _ => Join::All,
        };
        let decided = |d: Decision| run.slots.iter().filter(|s| s.decision == Some(d)).count();
        let (approved, rejected, total) = (
            decided(Decision::Approved),
            decided(Decision::Rejected),
            run.slots.len(),
        );
        let route = match (join, decision) {
            (Join::All, Decision::Approved) if approved == total => {
                Some((self.next_target(step), RESOLVED))
            }
            (Join::Any, Decision::Approved) => Some((self.next_target(step), RESOLVED)),
            (Join::All, Decision::Rejected) => Some((reject_target(step), REJECTED)),
            (Join::Any, Decision::Rejected) if rejected == total => {
                Some((reject_target(step), REJECTED))
            }
            _ => None,
        };
        let Some((target, default_outcome)) = route else {
            return Ok(());
        };
        self.cancel(|_| true, now_ms, effects);
        match target {
            Target::End { outcome } => {
                let outcome = outcome.unwrap_or_else(|| default_outcome.to_owned());
                self.trail.push(TrailEntry {
                    at_ms: now_ms,
                    step_id: step.id.clone(),
                    task_id: None,
                    actor: None,
                    action: TrailAction::Completed,
                    comment: None,
                    to: None,
                    outcome: Some(outcome.clone()),
                });
                self.step = None;
                self.state = InstanceState::Completed {
                    outcome: outcome.clone(),
                };
                effects.push(Effect::EventClosed { outcome });
            }
            Target::Step(id) => {
                let next = def
                    .step(&id)
                    .ok_or(WorkflowError::StepMissing { step_id: id })?;
                self.enter(next, now_ms, effects);
            }
        }
        Ok(())
    }

    fn next_target(&self, step: &Step) -> Target {
        match &step.next {
            Next::Go(t) => t.clone(),
            Next::Branches {
                branches,
                otherwise,
            } => branches
                .iter()
                .find(|b| b.when.holds(self.event.level, &self.event.fields))
                .map_or_else(|| otherwise.clone(), |b| b.to.clone()),
        }
    }
}

fn reject_target(step: &Step) -> Target {
    step.on_reject
        .clone()
        .unwrap_or(Target::End { outcome: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const EXAMPLE: &str = include_str!("../examples/water-main-burst.yaml");
    const T0: i64 = 1_750_000_000_000;
    const MIN: i64 = 60_000;

    fn def() -> WorkflowDefinition {
        WorkflowDefinition::from_yaml(EXAMPLE).unwrap()
    }

    fn facts(level: Level, fields: Value) -> EventFacts {
        EventFacts {
            id: "ev-7".into(),
            type_code: "water.main_burst".into(),
            level,
            region: "/hz/xihu/lingyin".into(),
            fields: fields.as_object().unwrap().clone(),
        }
    }

    fn role(role: &str, org: &str, region: &str) -> ResolvedAssignee {
        ResolvedAssignee::Role {
            role: role.into(),
            org: Some(org.into()),
            region: region.into(),
        }
    }

    fn approve() -> Action {
        Action::Approve { comment: None }
    }

    fn reject(why: &str) -> Action {
        Action::Reject {
            comment: why.into(),
        }
    }

    fn start(def: &WorkflowDefinition, level: Level, fields: Value) -> (Instance, Vec<Effect>) {
        Instance::start(def, &facts(level, fields), T0).unwrap()
    }

    /// Ids of the tasks a batch of effects creates, in order.
    fn created(effects: &[Effect]) -> Vec<String> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::CreateTask { task_id, .. } => Some(task_id.clone()),
                _ => None,
            })
            .collect()
    }

    fn open_ids(inst: &Instance) -> Vec<&str> {
        inst.open_tasks().iter().map(|t| t.id.as_str()).collect()
    }

    fn trail_actions(inst: &Instance) -> Vec<TrailAction> {
        inst.trail().iter().map(|e| e.action).collect()
    }

    #[test]
    fn start_creates_the_first_task() {
        let def = def();
        let (inst, effects) = start(&def, Level::Serious, json!({}));
        assert_eq!(
            effects,
            vec![
                Effect::EventProcessing,
                Effect::CreateTask {
                    task_id: "ev-7-t1".into(),
                    step_id: "dispatch".into(),
                    step_name: "Confirm the burst and dispatch repair".into(),
                    assignee: role("dispatcher", "eoc", "/hz/xihu/lingyin"),
                    due_ms: Some(T0 + 15 * MIN),
                },
            ]
        );
        assert_eq!(inst.state(), &InstanceState::Running);
        assert_eq!(inst.current_step(), Some("dispatch"));
        assert_eq!(inst.next_deadline(), Some(T0 + 15 * MIN));
        assert_eq!(
            trail_actions(&inst),
            [TrailAction::Started, TrailAction::Assigned]
        );
        assert_eq!(
            (inst.definition_id(), inst.definition_version()),
            ("water-main-burst", 1)
        );
        assert_eq!(inst.event_id(), "ev-7");
    }

    #[test]
    fn start_refuses_what_it_cannot_run() {
        let def = def();
        let err = Instance::start(&def, &facts(Level::General, json!({})), T0).unwrap_err();
        assert!(matches!(err, WorkflowError::NotApplicable { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "workflow `water-main-burst` does not apply to events of type `water.main_burst` at level 4 (general)"
        );
        let mut bad_region = facts(Level::Major, json!({}));
        bad_region.region = "xihu".into();
        assert!(matches!(
            Instance::start(&def, &bad_region, T0),
            Err(WorkflowError::InvalidEventRegion { .. })
        ));
        let mut invalid = def.clone();
        invalid.start = "nowhere".into();
        let err = Instance::start(&invalid, &facts(Level::Major, json!({})), T0).unwrap_err();
        assert!(
            err.to_string()
                .contains("`start`: no step has the id `nowhere`"),
            "{err}"
        );
    }

    #[test]
    fn approval_path_to_the_end() {
        let def = def();
        let (mut inst, _) = start(&def, Level::Serious, json!({ "trafficImpact": false }));
        let fx = inst
            .act(&def, "ev-7-t1", "zhao", approve(), T0 + MIN)
            .unwrap();
        assert_eq!(
            fx,
            vec![
                Effect::CloseTask {
                    task_id: "ev-7-t1".into(),
                    outcome: TaskOutcome::Approved
                },
                Effect::CreateTask {
                    task_id: "ev-7-t2".into(),
                    step_id: "repair".into(),
                    step_name: "Repair the main".into(),
                    assignee: role("repair-crew", "water-co", "/hz/xihu/lingyin"),
                    due_ms: Some(T0 + MIN + 240 * MIN),
                },
            ]
        );
        let fx = inst
            .act(&def, "ev-7-t2", "qian", approve(), T0 + 2 * MIN)
            .unwrap();
        assert_eq!(created(&fx), ["ev-7-t3"]);
        // The review goes to the district above the street.
        assert_eq!(
            inst.open_tasks()[0].assignee,
            role("reviewer", "eoc", "/hz/xihu")
        );
        let fx = inst
            .act(
                &def,
                "ev-7-t3",
                "sun",
                Action::Approve {
                    comment: Some("pipe replaced".into()),
                },
                T0 + 3 * MIN,
            )
            .unwrap();
        assert_eq!(
            fx,
            vec![
                Effect::CloseTask {
                    task_id: "ev-7-t3".into(),
                    outcome: TaskOutcome::Approved
                },
                Effect::EventClosed {
                    outcome: "resolved".into()
                },
            ]
        );
        assert_eq!(
            inst.state(),
            &InstanceState::Completed {
                outcome: "resolved".into()
            }
        );
        assert!(inst.open_tasks().is_empty());
        assert_eq!(inst.next_deadline(), None);
        let last = inst.trail().last().unwrap();
        assert_eq!(
            (last.action, last.outcome.as_deref()),
            (TrailAction::Completed, Some("resolved"))
        );
        let approval = &inst.trail()[inst.trail().len() - 2];
        assert_eq!(approval.actor.as_deref(), Some("sun"));
        assert_eq!(approval.comment.as_deref(), Some("pipe replaced"));

        let err = inst
            .act(&def, "ev-7-t3", "sun", approve(), T0 + 4 * MIN)
            .unwrap_err();
        assert_eq!(
            err,
            WorkflowError::Completed {
                outcome: "resolved".into()
            }
        );
        assert_eq!(inst.tick(&def, T0 + 1000 * MIN).unwrap(), vec![]);
    }

    #[test]
    fn branches_on_level_and_fields() {
        let def = def();
        let first_step = |level, fields| {
            let (mut inst, _) = start(&def, level, fields);
            inst.act(&def, "ev-7-t1", "zhao", approve(), T0).unwrap();
            inst.current_step().unwrap().to_owned()
        };
        assert_eq!(first_step(Level::Major, json!({})), "joint-repair");
        assert_eq!(
            first_step(Level::Critical, json!({ "trafficImpact": false })),
            "joint-repair"
        );
        assert_eq!(
            first_step(Level::Serious, json!({ "trafficImpact": true })),
            "joint-repair"
        );
        assert_eq!(
            first_step(Level::Serious, json!({ "trafficImpact": false })),
            "repair"
        );
        assert_eq!(first_step(Level::Serious, json!({})), "repair");
    }

    #[test]
    fn rejection_follows_on_reject() {
        let def = def();
        let (mut inst, _) = start(&def, Level::Serious, json!({}));
        let before = inst.clone();
        let err = inst
            .act(&def, "ev-7-t1", "zhao", reject("  "), T0)
            .unwrap_err();
        assert!(matches!(
            err,
            WorkflowError::CommentRequired {
                action: ActionKind::Reject,
                ..
            }
        ));
        assert_eq!(inst, before, "a refused call changes nothing");

        let fx = inst
            .act(
                &def,
                "ev-7-t1",
                "zhao",
                reject("sprinkler test, not a burst"),
                T0,
            )
            .unwrap();
        assert_eq!(
            fx.last(),
            Some(&Effect::EventClosed {
                outcome: "false-alarm".into()
            })
        );
        let rejected = &inst.trail()[inst.trail().len() - 2];
        assert_eq!(rejected.action, TrailAction::Rejected);
        assert_eq!(
            rejected.comment.as_deref(),
            Some("sprinkler test, not a burst")
        );

        // The review sends a job back to repair.
        let (mut inst, _) = start(&def, Level::Serious, json!({}));
        inst.act(&def, "ev-7-t1", "zhao", approve(), T0).unwrap();
        inst.act(&def, "ev-7-t2", "qian", approve(), T0).unwrap();
        let fx = inst
            .act(
                &def,
                "ev-7-t3",
                "sun",
                reject("road surface not restored"),
                T0,
            )
            .unwrap();
        assert_eq!(created(&fx), ["ev-7-t4"]);
        assert_eq!(inst.current_step(), Some("repair"));
        assert_eq!(inst.state(), &InstanceState::Running);
    }

    #[test]
    fn rejection_without_on_reject_ends_rejected() {
        let mut def = def();
        def.steps[0].on_reject = None;
        let (mut inst, _) = start(&def, Level::Serious, json!({}));
        let fx = inst
            .act(&def, "ev-7-t1", "zhao", reject("duplicate"), T0)
            .unwrap();
        assert_eq!(
            fx.last(),
            Some(&Effect::EventClosed {
                outcome: "rejected".into()
            })
        );
    }

    #[test]
    fn transfer_keeps_the_step_and_its_deadline() {
        let def = def();
        let (mut inst, _) = start(&def, Level::Serious, json!({}));
        let li = ResolvedAssignee::User {
            username: "li.si".into(),
        };
        let fx = inst
            .act(
                &def,
                "ev-7-t1",
                "zhao",
                Action::Transfer {
                    to: li.clone(),
                    comment: Some("Li covers Lingyin tonight".into()),
                },
                T0 + 5 * MIN,
            )
            .unwrap();
        assert_eq!(
            fx,
            vec![
                Effect::CloseTask {
                    task_id: "ev-7-t1".into(),
                    outcome: TaskOutcome::Transferred
                },
                Effect::CreateTask {
                    task_id: "ev-7-t2".into(),
                    step_id: "dispatch".into(),
                    step_name: "Confirm the burst and dispatch repair".into(),
                    assignee: li.clone(),
                    due_ms: Some(T0 + 15 * MIN),
                },
            ]
        );
        assert_eq!(inst.current_step(), Some("dispatch"));
        assert_eq!(inst.open_tasks()[0].origin, TaskOrigin::Transferred);
        assert_eq!(inst.next_deadline(), Some(T0 + 15 * MIN));
        let transferred = inst
            .trail()
            .iter()
            .find(|e| e.action == TrailAction::Transferred)
            .unwrap();
        assert_eq!(transferred.to.as_ref(), Some(&li));
        assert_eq!(transferred.actor.as_deref(), Some("zhao"));

        assert_eq!(
            inst.act(&def, "ev-7-t1", "zhao", approve(), T0)
                .unwrap_err(),
            WorkflowError::TaskClosed {
                task_id: "ev-7-t1".into()
            }
        );
        assert_eq!(
            inst.act(&def, "ev-9-t1", "zhao", approve(), T0)
                .unwrap_err(),
            WorkflowError::UnknownTask {
                task_id: "ev-9-t1".into()
            }
        );
        let same = inst
            .act(
                &def,
                "ev-7-t2",
                "li.si",
                Action::Transfer {
                    to: li,
                    comment: None,
                },
                T0,
            )
            .unwrap_err();
        assert!(
            same.to_string().contains("already assigned there"),
            "{same}"
        );
        let bad = inst
            .act(
                &def,
                "ev-7-t2",
                "li.si",
                Action::Transfer {
                    to: role("dispatcher", "eoc", "xihu"),
                    comment: None,
                },
                T0,
            )
            .unwrap_err();
        assert!(
            bad.to_string().contains("\"xihu\" is not a region path"),
            "{bad}"
        );
    }

    #[test]
    fn feedback_records_progress_only() {
        let def = def();
        let (mut inst, _) = start(&def, Level::Serious, json!({}));
        let tasks = inst.open_tasks().to_vec();
        let fx = inst
            .act(
                &def,
                "ev-7-t1",
                "zhao",
                Action::FeedBack {
                    comment: "crew on the way".into(),
                },
                T0 + MIN,
            )
            .unwrap();
        assert!(fx.is_empty());
        assert_eq!(inst.open_tasks(), tasks.as_slice());
        let last = inst.trail().last().unwrap();
        assert_eq!(
            (
                last.action,
                last.comment.as_deref(),
                last.actor.as_deref(),
                last.task_id.as_deref()
            ),
            (
                TrailAction::FedBack,
                Some("crew on the way"),
                Some("zhao"),
                Some("ev-7-t1")
            )
        );
        assert!(matches!(
            inst.act(
                &def,
                "ev-7-t1",
                "zhao",
                Action::FeedBack {
                    comment: String::new()
                },
                T0
            ),
            Err(WorkflowError::CommentRequired { .. })
        ));
        assert!(matches!(
            inst.act(&def, "ev-7-t1", " ", approve(), T0),
            Err(WorkflowError::MissingActor)
        ));
    }

    #[test]
    fn actions_the_step_does_not_offer_are_refused() {
        let def = def();
        let (mut inst, _) = start(&def, Level::Serious, json!({}));
        inst.act(&def, "ev-7-t1", "zhao", approve(), T0).unwrap();
        inst.act(&def, "ev-7-t2", "qian", approve(), T0).unwrap();
        let err = inst
            .act(
                &def,
                "ev-7-t3",
                "sun",
                Action::Transfer {
                    to: ResolvedAssignee::User {
                        username: "x".into(),
                    },
                    comment: None,
                },
                T0,
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "step `review` does not offer `transfer`; it offers approve, reject, feedback"
        );
    }

    #[test]
    fn parallel_join_all() {
        let def = def();
        let (mut inst, _) = start(&def, Level::Major, json!({}));
        let fx = inst.act(&def, "ev-7-t1", "zhao", approve(), T0).unwrap();
        assert_eq!(created(&fx), ["ev-7-t2", "ev-7-t3"]);
        assert_eq!(
            inst.open_tasks()[0].assignee,
            role("repair-crew", "water-co", "/hz/xihu/lingyin")
        );
        assert_eq!(
            inst.open_tasks()[1].assignee,
            role("traffic-duty", "traffic-police", "/hz/xihu/lingyin")
        );

        let fx = inst
            .act(&def, "ev-7-t3", "police-1", approve(), T0 + MIN)
            .unwrap();
        assert_eq!(
            fx,
            vec![Effect::CloseTask {
                task_id: "ev-7-t3".into(),
                outcome: TaskOutcome::Approved
            }]
        );
        assert_eq!(inst.current_step(), Some("joint-repair"));
        // The approved member no longer waits for a deadline; the other still does.
        assert_eq!(inst.next_deadline(), Some(T0 + 240 * MIN));
        let fx = inst
            .act(&def, "ev-7-t2", "crew-1", approve(), T0 + 2 * MIN)
            .unwrap();
        assert_eq!(created(&fx), ["ev-7-t4"]);
        assert_eq!(inst.current_step(), Some("review"));
    }

    #[test]
    fn parallel_join_all_one_rejection_rejects_the_step() {
        let def = def();
        let (mut inst, _) = start(&def, Level::Major, json!({}));
        inst.act(&def, "ev-7-t1", "zhao", approve(), T0).unwrap();
        let fx = inst
            .act(
                &def,
                "ev-7-t2",
                "crew-1",
                reject("valve is the gas company's"),
                T0,
            )
            .unwrap();
        assert_eq!(
            fx[..2],
            [
                Effect::CloseTask {
                    task_id: "ev-7-t2".into(),
                    outcome: TaskOutcome::Rejected
                },
                Effect::CloseTask {
                    task_id: "ev-7-t3".into(),
                    outcome: TaskOutcome::Cancelled
                },
            ]
        );
        // onReject: back to the dispatcher.
        assert_eq!(created(&fx), ["ev-7-t4"]);
        assert_eq!(inst.current_step(), Some("dispatch"));
        assert_eq!(open_ids(&inst), ["ev-7-t4"]);
        assert!(
            inst.trail()
                .iter()
                .any(|e| e.action == TrailAction::Cancelled
                    && e.task_id.as_deref() == Some("ev-7-t3"))
        );
    }

    fn any_def() -> WorkflowDefinition {
        let mut def = def();
        let joint = def
            .steps
            .iter_mut()
            .find(|s| s.id == "joint-repair")
            .unwrap();
        let Assignee::All { join, .. } = &mut joint.assignee else {
            panic!("joint-repair is parallel")
        };
        *join = Join::Any;
        def.validate().unwrap();
        def
    }

    #[test]
    fn parallel_join_any() {
        let def = any_def();
        let (mut inst, _) = start(&def, Level::Major, json!({}));
        inst.act(&def, "ev-7-t1", "zhao", approve(), T0).unwrap();
        let fx = inst
            .act(&def, "ev-7-t3", "police-1", approve(), T0)
            .unwrap();
        assert_eq!(
            fx[..2],
            [
                Effect::CloseTask {
                    task_id: "ev-7-t3".into(),
                    outcome: TaskOutcome::Approved
                },
                Effect::CloseTask {
                    task_id: "ev-7-t2".into(),
                    outcome: TaskOutcome::Cancelled
                },
            ]
        );
        assert_eq!(created(&fx), ["ev-7-t4"]);
        assert_eq!(inst.current_step(), Some("review"));
    }

    #[test]
    fn parallel_join_any_rejects_only_when_everyone_rejects() {
        let def = any_def();
        let (mut inst, _) = start(&def, Level::Major, json!({}));
        inst.act(&def, "ev-7-t1", "zhao", approve(), T0).unwrap();
        let fx = inst
            .act(&def, "ev-7-t2", "crew-1", reject("no crew free"), T0)
            .unwrap();
        assert_eq!(fx.len(), 1);
        assert_eq!(inst.current_step(), Some("joint-repair"));
        assert_eq!(open_ids(&inst), ["ev-7-t3"]);
        let fx = inst
            .act(&def, "ev-7-t3", "police-1", reject("not our road"), T0)
            .unwrap();
        assert_eq!(created(&fx), ["ev-7-t4"]);
        assert_eq!(inst.current_step(), Some("dispatch"));
    }

    #[test]
    fn escalation_on_tick_happens_once() {
        let def = def();
        let (mut inst, _) = start(&def, Level::Serious, json!({}));
        let due = T0 + 15 * MIN;
        assert_eq!(inst.tick(&def, due - 1).unwrap(), vec![]);
        let fx = inst.tick(&def, due).unwrap();
        let chief = role("duty-chief", "eoc", "/hz/xihu");
        assert_eq!(
            fx,
            vec![
                Effect::Notify {
                    assignee: role("dispatcher", "eoc", "/hz/xihu/lingyin"),
                    subject_key: SUBJECT_TASK_OVERDUE.into(),
                    task_id: Some("ev-7-t1".into()),
                },
                Effect::Escalated {
                    task_id: "ev-7-t1".into(),
                    to: chief.clone()
                },
                Effect::CreateTask {
                    task_id: "ev-7-t2".into(),
                    step_id: "dispatch".into(),
                    step_name: "Confirm the burst and dispatch repair".into(),
                    assignee: chief.clone(),
                    due_ms: None,
                },
                Effect::Notify {
                    assignee: chief,
                    subject_key: SUBJECT_TASK_ESCALATED.into(),
                    task_id: Some("ev-7-t2".into()),
                },
            ]
        );
        // The original stays open, flagged overdue, next to the escalation task.
        assert_eq!(open_ids(&inst), ["ev-7-t1", "ev-7-t2"]);
        assert!(inst.open_tasks()[0].overdue);
        assert_eq!(inst.open_tasks()[1].origin, TaskOrigin::Escalated);
        assert_eq!(inst.next_deadline(), None);
        assert_eq!(inst.tick(&def, due + 1).unwrap(), vec![]);
        assert_eq!(inst.tick(&def, due + 10_000 * MIN).unwrap(), vec![]);
        let overdue = inst
            .trail()
            .iter()
            .filter(|e| e.action == TrailAction::Overdue)
            .count();
        let escalated = inst
            .trail()
            .iter()
            .filter(|e| e.action == TrailAction::Escalated)
            .count();
        assert_eq!((overdue, escalated), (1, 1));

        // Whoever decides first wins; the other task is cancelled.
        let fx = inst
            .act(&def, "ev-7-t2", "chief-wu", approve(), due + MIN)
            .unwrap();
        assert_eq!(
            fx[..2],
            [
                Effect::CloseTask {
                    task_id: "ev-7-t2".into(),
                    outcome: TaskOutcome::Approved
                },
                Effect::CloseTask {
                    task_id: "ev-7-t1".into(),
                    outcome: TaskOutcome::Cancelled
                },
            ]
        );
        assert_eq!(inst.current_step(), Some("repair"));
        assert_eq!(
            inst.act(&def, "ev-7-t1", "zhao", approve(), due + MIN)
                .unwrap_err(),
            WorkflowError::TaskClosed {
                task_id: "ev-7-t1".into()
            }
        );
    }

    #[test]
    fn overdue_without_escalation_only_notifies() {
        let def = def();
        let (mut inst, _) = start(&def, Level::Serious, json!({}));
        inst.act(&def, "ev-7-t1", "zhao", approve(), T0).unwrap();
        let due = inst.next_deadline().unwrap();
        assert_eq!(due, T0 + 240 * MIN);
        let fx = inst.tick(&def, due + 5).unwrap();
        assert_eq!(
            fx,
            vec![Effect::Notify {
                assignee: role("repair-crew", "water-co", "/hz/xihu/lingyin"),
                subject_key: SUBJECT_TASK_OVERDUE.into(),
                task_id: Some("ev-7-t2".into()),
            }]
        );
        assert_eq!(inst.tick(&def, due + 10).unwrap(), vec![]);
        // Still actionable once overdue.
        inst.act(&def, "ev-7-t2", "qian", approve(), due + 20)
            .unwrap();
        assert_eq!(inst.current_step(), Some("review"));
    }

    #[test]
    fn parallel_escalation_per_member() {
        let def = def();
        let (mut inst, _) = start(&def, Level::Major, json!({}));
        inst.act(&def, "ev-7-t1", "zhao", approve(), T0).unwrap();
        inst.act(&def, "ev-7-t3", "police-1", approve(), T0 + MIN)
            .unwrap();
        let fx = inst.tick(&def, T0 + 240 * MIN).unwrap();
        // Only the repair crew is late; the police already approved.
        let manager = role("duty-manager", "water-co", "/hz");
        assert!(fx.contains(&Effect::Escalated {
            task_id: "ev-7-t2".into(),
            to: manager
        }));
        assert_eq!(created(&fx), ["ev-7-t4"]);
        // The escalation task decides the crew's part, which completes the step.
        let fx = inst
            .act(&def, "ev-7-t4", "manager-he", approve(), T0 + 250 * MIN)
            .unwrap();
        assert!(fx.contains(&Effect::CloseTask {
            task_id: "ev-7-t2".into(),
            outcome: TaskOutcome::Cancelled
        }));
        assert_eq!(inst.current_step(), Some("review"));
    }

    #[test]
    fn transfer_of_an_overdue_task_stays_overdue_and_is_not_escalated_again() {
        let def = def();
        let (mut inst, _) = start(&def, Level::Serious, json!({}));
        inst.tick(&def, T0 + 15 * MIN).unwrap();
        let fx = inst
            .act(
                &def,
                "ev-7-t1",
                "zhao",
                Action::Transfer {
                    to: ResolvedAssignee::User {
                        username: "li.si".into(),
                    },
                    comment: None,
                },
                T0 + 16 * MIN,
            )
            .unwrap();
        assert_eq!(created(&fx), ["ev-7-t3"]);
        assert!(
            inst.open_tasks()
                .iter()
                .find(|t| t.id == "ev-7-t3")
                .unwrap()
                .overdue
        );
        assert_eq!(inst.tick(&def, T0 + 100 * MIN).unwrap(), vec![]);
    }

    #[test]
    fn calls_with_another_definition_are_refused() {
        let def = def();
        let (mut inst, _) = start(&def, Level::Serious, json!({}));
        let mut v2 = def.clone();
        v2.version = 2;
        let err = inst.act(&v2, "ev-7-t1", "zhao", approve(), T0).unwrap_err();
        assert!(matches!(
            err,
            WorkflowError::DefinitionMismatch {
                expected_version: 1,
                got_version: 2,
                ..
            }
        ));
        assert!(inst.tick(&v2, T0).is_err());
    }

    #[test]
    fn failure_half_way_changes_nothing() {
        let def = def();
        let (mut inst, _) = start(&def, Level::Serious, json!({}));
        // Edited in place without a new version: `repair` is gone.
        let mut edited = def.clone();
        edited.steps.retain(|s| s.id != "repair");
        let before = inst.clone();
        let err = inst
            .act(&edited, "ev-7-t1", "zhao", approve(), T0)
            .unwrap_err();
        assert_eq!(
            err,
            WorkflowError::StepMissing {
                step_id: "repair".into()
            }
        );
        assert_eq!(inst, before);
    }

    #[test]
    fn instance_survives_storage_between_calls() {
        let def = def();
        let (inst, _) = start(&def, Level::Major, json!({ "pressureKpa": 80 }));
        let stored = serde_json::to_string(&inst).unwrap();
        let mut inst: Instance = serde_json::from_str(&stored).unwrap();
        inst.act(&def, "ev-7-t1", "zhao", approve(), T0).unwrap();
        let stored = serde_json::to_value(&inst).unwrap();
        assert_eq!(stored["state"], json!({ "status": "running" }));
        assert_eq!(stored["tasks"][1]["assignee"]["kind"], json!("role"));
        let mut inst: Instance = serde_json::from_value(stored).unwrap();
        inst.act(&def, "ev-7-t2", "crew", approve(), T0).unwrap();
        let fx = inst.act(&def, "ev-7-t3", "police", approve(), T0).unwrap();
        // Task ids keep counting across storage.
        assert_eq!(created(&fx), ["ev-7-t4"]);
    }

    #[test]
    fn effects_and_actions_as_json() {
        let effect = Effect::CreateTask {
            task_id: "ev-7-t1".into(),
            step_id: "dispatch".into(),
            step_name: "Dispatch".into(),
            assignee: ResolvedAssignee::User {
                username: "li.si".into(),
            },
            due_ms: Some(5),
        };
        assert_eq!(
            serde_json::to_value(&effect).unwrap(),
            json!({
                "effect": "createTask", "taskId": "ev-7-t1", "stepId": "dispatch",
                "stepName": "Dispatch", "assignee": { "kind": "user", "username": "li.si" }, "dueMs": 5
            })
        );
        let action: Action = serde_json::from_value(json!({
            "action": "transfer",
            "to": { "kind": "role", "role": "dispatcher", "region": "/hz/xihu" },
            "comment": "wrong district"
        }))
        .unwrap();
        assert_eq!(action.kind(), ActionKind::Transfer);
        let feedback: Action =
            serde_json::from_value(json!({ "action": "feedback", "comment": "on site" })).unwrap();
        assert_eq!(
            feedback,
            Action::FeedBack {
                comment: "on site".into()
            }
        );
        assert_eq!(
            serde_json::to_value(TrailAction::FedBack).unwrap(),
            json!("fed_back")
        );
    }
}
