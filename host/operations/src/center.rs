//! The event center: events come in (from rules or operators), are classified against their
//! type (merged into an open event, closed at once, isolated, or dispatched), and dispatched
//! events start their disposal workflow, whose effects become tasks, messages and event
//! state changes.

use std::sync::Arc;

use lotus_storage::{
    EVENT_CLOSED, EVENT_PROCESSING, EventRow, EventWrites, MESSAGE_NOTIFICATION, NewMessage,
    NewTask, StorageError, Store, TaskRow, UserRow, WORKFLOW_RUNNING,
};
use lotus_workflow::{
    Action, Effect, EventDraft, EventType, GeoPoint, Instance, Level, OpenEvent, ResolvedAssignee,
    WorkflowDefinition,
};
use serde_json::{Value, json};

use crate::center_writer::{Prepared, StartingWorkflow, Writer};
use crate::inbox;
use crate::platform::{Announcer, PlatformEvent};
use crate::recipient::Recipient;

/// Why an event or a task action was refused.
#[derive(Debug, thiserror::Error)]
pub enum CenterError {
    /// The request is wrong; the text says how.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// Someone else changed it first (two approvers at once); reload and retry.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What happened to a submitted event.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum Submitted {
    /// A new event; `workflow` names the disposal workflow started, if one applies.
    Created {
        event: i64,
        number: String,
        workflow: Option<String>,
    },
    /// Merged into an open event of the same type nearby.
    Merged { event: i64, number: String },
    /// Recorded and closed at once (its level is at or below the type's `autoClose`).
    AutoClosed { event: i64, number: String },
    /// Recorded but not dispatched (its level is at or below the type's `isolate`).
    Isolated { event: i64, number: String },
}

impl Submitted {
    pub fn event_id(&self) -> i64 {
        match self {
            Submitted::Created { event, .. }
            | Submitted::Merged { event, .. }
            | Submitted::AutoClosed { event, .. }
            | Submitted::Isolated { event, .. } => *event,
        }
    }
}

/// An event to submit, with where it came from.
#[derive(Debug, Clone)]
pub struct Submission {
    pub draft: EventDraft,
    pub org: String,
    pub rule_id: Option<String>,
    pub alarm_id: Option<i64>,
    /// Who created it: a username, or `rule:<id>`.
    pub actor: String,
}

#[derive(Clone)]
pub struct EventCenter {
    store: Store,
    /// Where created and closed events are announced to plugins; none in a center that only
    /// records (tests, tools).
    platform: Option<Announcer>,
    /// Creates submitted events, many per transaction.
    writer: Arc<Writer>,
}

/// Events of a type that are older than this are never merge candidates, whatever the type says.
const MAX_MERGE_WINDOW_MS: i64 = 7 * 24 * 3600 * 1000;

impl EventCenter {
    pub fn new(store: Store) -> Arc<EventCenter> {
        Arc::new(EventCenter {
            writer: Arc::new(Writer::new(store.clone(), None)),
            store,
            platform: None,
        })
    }

    /// A center that announces created and closed events (and, through the executor, alarms)
    /// on the returned receiver, which `Operations::start` passes to the plugins.
    pub fn announcing(
        store: Store,
    ) -> (
        Arc<EventCenter>,
        tokio::sync::mpsc::UnboundedReceiver<PlatformEvent>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let center = Arc::new(EventCenter {
            writer: Arc::new(Writer::new(store.clone(), Some(tx.clone()))),
            store,
            platform: Some(tx),
        });
        (center, rx)
    }

    /// Tells the plugins about a platform event (nothing when no one listens).
    pub fn announce(&self, event: PlatformEvent) {
        if let Some(tx) = &self.platform
            && tx.send(event).is_err()
        {
            tracing::warn!("platform events are no longer dispatched to plugins");
        }
    }

    fn announce_event(&self, kind: &str, row: &EventRow, at: i64) {
        announce_event(self.platform.as_ref(), kind, row, at);
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The stored event type `code`.
    pub async fn event_type(&self, code: &str) -> Result<EventType, CenterError> {
        let def = self.store.get_event_type(code).await?.ok_or_else(|| {
            CenterError::Invalid(format!(
                "event type `{code}` does not exist: create it with PUT /api/v1/event-types/{code}"
            ))
        })?;
        serde_json::from_value(def).map_err(|e| {
            CenterError::Invalid(format!("stored event type `{code}` cannot be read: {e}"))
        })
    }

    /// Classifies and records an event, and starts its workflow when it is dispatched.
    ///
    /// The event, its workflow, tasks, messages and timeline are written by the center's
    /// writer together with other events submitted meanwhile, in one transaction: this returns
    /// once that transaction has committed (or with the error that stopped it, for the caller
    /// to retry — nothing of the event is then stored).
    pub async fn submit(&self, s: Submission) -> Result<Submitted, CenterError> {
        let prepared = self.prepare(s).await?;
        self.writer.submit(prepared).await
    }

    /// Checks a submission against its type and picks the workflow it would start: the reads
    /// and checks that need no part of the writer's transaction.
    pub(crate) async fn prepare(&self, s: Submission) -> Result<Prepared, CenterError> {
        let draft = &s.draft;
        draft
            .validate()
            .map_err(|e| CenterError::Invalid(e.to_string()))?;
        let ty = self.event_type(&draft.type_code).await?;
        if let Err(errors) = ty.check_fields(draft) {
            let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            return Err(CenterError::Invalid(format!(
                "event fields do not match type `{}`: {}",
                ty.code,
                text.join("; ")
            )));
        }
        let level = ty.level_of(draft);
        let merge_window_ms = ty
            .merge
            .as_ref()
            .map(|m| (m.window_secs as i64).saturating_mul(1000))
            .unwrap_or(0)
            .min(MAX_MERGE_WINDOW_MS);
        let workflow = self.workflow_for(&ty.code, level).await?;
        Ok(Prepared {
            submission: s,
            ty,
            level,
            merge_window_ms,
            workflow,
        })
    }

    /// The first enabled workflow that applies to events of the type at the level.
    async fn workflow_for(
        &self,
        type_code: &str,
        level: Level,
    ) -> Result<Option<StartingWorkflow>, CenterError> {
        for row in self.store.workflow_definitions_for(type_code).await? {
            let definition: WorkflowDefinition = match serde_json::from_value(row.definition) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(workflow = %row.id, error = %e, "stored workflow definition cannot be read");
                    continue;
                }
            };
            if definition.applies(type_code, level) {
                return Ok(Some(StartingWorkflow {
                    id: row.id,
                    version: row.version,
                    definition,
                }));
            }
        }
        Ok(None)
    }

    /// An event by its id or its number (`EV…`).
    pub async fn find(&self, key: &str) -> Result<EventRow, CenterError> {
        let row = match key.parse::<i64>() {
            Ok(id) => self.store.get_event(id).await?,
            Err(_) => self.store.get_event_by_number(key).await?,
        };
        row.ok_or_else(|| CenterError::NotFound(format!("event {key} not found")))
    }

    /// Moves an event (by id or number) to `processing` or `closed` on behalf of `actor` (an
    /// event-handler plugin, say) and records it with `note` in the timeline. An event whose
    /// disposal workflow is still running is closed by that workflow, not from outside: its
    /// open tasks would be left behind.
    pub async fn update_state(
        &self,
        key: &str,
        state: &str,
        note: &str,
        actor: &str,
        at: i64,
    ) -> Result<EventRow, CenterError> {
        if ![EVENT_PROCESSING, EVENT_CLOSED].contains(&state) {
            return Err(CenterError::Invalid(format!(
                "an event can be moved to processing or closed, not `{state}`"
            )));
        }
        let event = self.find(key).await?;
        if event.state == EVENT_CLOSED {
            return Err(CenterError::Conflict(format!(
                "event {} is already closed",
                event.number
            )));
        }
        if state == EVENT_CLOSED
            && let Some(w) = self.store.workflow_instance(event.id).await?
            && w.state == WORKFLOW_RUNNING
        {
            return Err(CenterError::Conflict(format!(
                "event {} has a disposal workflow in progress ({}): its tasks close it",
                event.number, w.definition_id
            )));
        }
        let outcome = (state == EVENT_CLOSED && !note.is_empty()).then_some(note);
        let mut w = self.store.begin_event_writes().await?;
        let row = w.set_event_state(event.id, state, outcome, at).await?;
        w.append_timeline(
            event.id,
            at,
            Some(actor),
            state,
            &json!({"from": event.state, "note": note}),
        )
        .await?;
        w.commit().await?;
        if state == EVENT_CLOSED {
            self.announce_event("event.closed", &row, at);
        }
        Ok(row)
    }

    /// Acts on a task (approve, reject, transfer, feed back). Whether `actor` may is the
    /// caller's policy decision; this checks what the workflow allows.
    pub async fn act(
        &self,
        task_id: &str,
        actor: &str,
        action: Action,
        at: i64,
    ) -> Result<TaskRow, CenterError> {
        let task = self
            .store
            .get_task(task_id)
            .await?
            .ok_or_else(|| CenterError::NotFound(format!("task `{task_id}` not found")))?;
        let event =
            self.store.get_event(task.event_id).await?.ok_or_else(|| {
                CenterError::NotFound(format!("event {} not found", task.event_id))
            })?;
        let row = self
            .store
            .workflow_instance(task.event_id)
            .await?
            .ok_or_else(|| {
                CenterError::NotFound(format!("event {} has no workflow", task.event_id))
            })?;
        let def = self
            .definition(&row.definition_id, row.definition_version)
            .await?;
        let mut instance: Instance = serde_json::from_value(row.instance.clone())
            .map_err(|e| CenterError::Invalid(format!("stored workflow cannot be read: {e}")))?;
        let comment = action_comment(&action);
        let effects = instance
            .act(&def, task_id, actor, action, at)
            .map_err(|e| CenterError::Invalid(e.to_string()))?;
        // The instance, the tasks it closes and opens, their messages and the timeline change
        // together: a reader never sees a decision half carried out.
        let mut recipients = Recipients::new(&self.store);
        recipients.load_for(&effects).await?;
        let mut w = self.store.begin_event_writes().await?;
        save(&mut w, &row, &instance).await?;
        let closed = apply(
            &mut w,
            &mut recipients,
            &event,
            &effects,
            Some((task_id, actor, comment.as_deref())),
            at,
        )
        .await?;
        w.commit().await?;
        for row in closed {
            self.announce_event("event.closed", &row, at);
        }
        self.store
            .get_task(task_id)
            .await?
            .ok_or_else(|| CenterError::NotFound(format!("task `{task_id}` not found")))
    }

    /// Escalates overdue tasks of every workflow whose deadline passed.
    pub async fn tick(&self, now: i64) -> Result<usize, CenterError> {
        let due = self.store.due_workflow_instances(now, 100).await?;
        let mut n = 0;
        for row in due {
            let Some(event) = self.store.get_event(row.event_id).await? else {
                continue;
            };
            let def = self
                .definition(&row.definition_id, row.definition_version)
                .await?;
            let mut instance: Instance = match serde_json::from_value(row.instance.clone()) {
                Ok(i) => i,
                Err(e) => {
                    tracing::error!(event = row.event_id, error = %e, "stored workflow cannot be read");
                    continue;
                }
            };
            let effects = instance
                .tick(&def, now)
                .map_err(|e| CenterError::Invalid(e.to_string()))?;
            let mut recipients = Recipients::new(&self.store);
            recipients.load_for(&effects).await?;
            let mut w = self.store.begin_event_writes().await?;
            match save(&mut w, &row, &instance).await {
                Ok(()) => {}
                // An approver acted meanwhile; the next tick sees the new state.
                Err(CenterError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
            let closed = apply(&mut w, &mut recipients, &event, &effects, None, now).await?;
            w.commit().await?;
            for row in closed {
                self.announce_event("event.closed", &row, now);
            }
            n += effects.len();
        }
        Ok(n)
    }

    async fn definition(&self, id: &str, version: i64) -> Result<WorkflowDefinition, CenterError> {
        let row = self
            .store
            .workflow_definition(id, Some(version))
            .await?
            .ok_or_else(|| {
                CenterError::NotFound(format!("workflow `{id}` v{version} not found"))
            })?;
        serde_json::from_value(row.definition).map_err(|e| {
            CenterError::Invalid(format!("stored workflow `{id}` cannot be read: {e}"))
        })
    }
}

/// Stores the instance's new state in `w` if no one changed it since it was read.
async fn save(
    w: &mut EventWrites,
    row: &lotus_storage::WorkflowInstanceRow,
    instance: &Instance,
) -> Result<(), CenterError> {
    let state = match instance.state() {
        lotus_workflow::InstanceState::Running => "running",
        _ => "completed",
    };
    let value = serde_json::to_value(instance).unwrap_or(Value::Null);
    match w
        .update_workflow_instance(
            row.event_id,
            row.revision,
            state,
            &value,
            instance.next_deadline(),
        )
        .await
    {
        Ok(()) => Ok(()),
        Err(StorageError::Conflict(m)) => Err(CenterError::Conflict(format!(
            "the task changed while you were acting on it ({m}); reload and try again"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// The users in-app messages go to, with the user list read at most once per transaction
/// (a batch of events assigned to the same role reads it once).
pub(crate) struct Recipients<'s> {
    store: &'s Store,
    users: Option<Vec<UserRow>>,
}

impl<'s> Recipients<'s> {
    pub(crate) fn new(store: &'s Store) -> Self {
        Recipients { store, users: None }
    }

    /// Reads the users now, before a transaction begins: on a store whose reads share the one
    /// writer connection (an in-memory SQLite database) a read inside the transaction would
    /// wait for the transaction itself.
    pub(crate) async fn load(&mut self) -> Result<(), CenterError> {
        if self.users.is_none() {
            self.users = Some(self.store.list_users().await?);
        }
        Ok(())
    }

    /// Loads the users when one of `effects` is for a role's holders.
    async fn load_for(&mut self, effects: &[Effect]) -> Result<(), CenterError> {
        let for_role = effects.iter().any(|e| {
            matches!(
                e,
                Effect::CreateTask {
                    assignee: ResolvedAssignee::Role { .. },
                    ..
                } | Effect::Notify {
                    assignee: ResolvedAssignee::Role { .. },
                    ..
                }
            )
        });
        if for_role { self.load().await } else { Ok(()) }
    }

    /// The usernames an assignee stands for (see [`inbox::resolve`]).
    async fn usernames(&mut self, assignee: &ResolvedAssignee) -> Result<Vec<String>, CenterError> {
        match Recipient::from(assignee) {
            Recipient::User(u) => Ok(vec![u]),
            Recipient::Address(_) => Ok(Vec::new()),
            Recipient::Role { role, region } => {
                self.load().await?;
                let users = self.users.as_deref().unwrap_or_default();
                Ok(inbox::role_holders(users, &role, &region))
            }
        }
    }

    /// Puts a notification about `event` in the message center of everyone `assignee` stands
    /// for, with `w`.
    async fn notify(
        &mut self,
        w: &mut EventWrites,
        assignee: &ResolvedAssignee,
        event: &EventRow,
        (title, body): (&str, &str),
        link: Option<&str>,
        at: i64,
    ) -> Result<(), CenterError> {
        for username in self.usernames(assignee).await? {
            w.add_message(&NewMessage {
                username: &username,
                kind: MESSAGE_NOTIFICATION,
                title,
                body,
                level: Some(event.level),
                link,
                sender: None,
                at,
            })?;
        }
        Ok(())
    }
}

/// What an effect is called in the event's timeline.
pub(crate) fn timeline_action(effect: &Effect) -> &'static str {
    match effect {
        Effect::EventProcessing => "processing",
        Effect::CreateTask { .. } => "task_created",
        Effect::CloseTask { .. } => "task_closed",
        Effect::Notify { .. } => "notified",
        Effect::Escalated { .. } => "escalated",
        Effect::EventClosed { .. } => "closed",
    }
}

/// Carries out a workflow's effects on a stored event with `w`, each also written to the
/// event's timeline. `acted` is the task a person acted on, who, and their comment. Returns the
/// event as closed when an effect closed it, to announce once committed.
async fn apply(
    w: &mut EventWrites,
    recipients: &mut Recipients<'_>,
    event: &EventRow,
    effects: &[Effect],
    acted: Option<(&str, &str, Option<&str>)>,
    at: i64,
) -> Result<Vec<EventRow>, CenterError> {
    let actor = acted.map(|(_, who, _)| who);
    let mut closed = Vec::new();
    for effect in effects {
        match effect {
            Effect::EventProcessing => {
                w.set_event_state(event.id, EVENT_PROCESSING, None, at)
                    .await?;
            }
            Effect::EventClosed { outcome } => {
                closed.push(
                    w.set_event_state(event.id, EVENT_CLOSED, Some(outcome), at)
                        .await?,
                );
            }
            _ => apply_to_others(w, recipients, event, effect, acted, at).await?,
        }
        let detail = serde_json::to_value(effect).unwrap_or(Value::Null);
        w.append_timeline(event.id, at, actor, timeline_action(effect), &detail)
            .await?;
    }
    Ok(closed)
}

/// Carries out what an effect does beyond the event's own row and timeline: the tasks it opens
/// or closes and the messages it sends.
pub(crate) async fn apply_to_others(
    w: &mut EventWrites,
    recipients: &mut Recipients<'_>,
    event: &EventRow,
    effect: &Effect,
    acted: Option<(&str, &str, Option<&str>)>,
    at: i64,
) -> Result<(), CenterError> {
    match effect {
        Effect::EventProcessing | Effect::EventClosed { .. } => {}
        Effect::CreateTask {
            task_id,
            step_id,
            step_name,
            assignee,
            due_ms,
        } => {
            let (kind, role, org, region, user) = match assignee {
                ResolvedAssignee::Role { role, org, region } => (
                    "role",
                    Some(role.as_str()),
                    org.as_deref(),
                    Some(region.as_str()),
                    None,
                ),
                ResolvedAssignee::User { username } => {
                    ("user", None, None, None, Some(username.as_str()))
                }
            };
            let title = format!("{} — {} {}", step_name, event.number, event.title);
            w.add_task(&NewTask {
                id: task_id,
                event_id: event.id,
                kind: "disposal",
                step_id,
                step_name,
                title: &title,
                assignee_kind: kind,
                assignee_role: role,
                assignee_org: org,
                assignee_region: region,
                assignee_user: user,
                due_at: *due_ms,
                at,
            })?;
            let link = format!("task:{task_id}");
            let body = format!(
                "Event {} ({}, level {}) in {} needs: {}.",
                event.number, event.type_code, event.level, event.region, step_name
            );
            recipients
                .notify(
                    w,
                    assignee,
                    event,
                    (&format!("New task: {title}"), &body),
                    Some(&link),
                    at,
                )
                .await?;
        }
        Effect::CloseTask { task_id, outcome } => {
            let state = serde_json::to_value(outcome)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| "cancelled".into());
            let comment = acted
                .filter(|(acted_on, _, _)| acted_on == task_id)
                .and_then(|(_, _, c)| c);
            let actor = acted.map(|(_, who, _)| who);
            w.close_task(task_id, &state, actor, comment, at).await?;
        }
        Effect::Notify {
            assignee,
            subject_key,
            task_id,
        } => {
            let (title, body) = match subject_key.as_str() {
                lotus_workflow::SUBJECT_TASK_OVERDUE => (
                    format!("Task overdue: event {}", event.number),
                    format!(
                        "A task of event {} ({}) is past its deadline.",
                        event.number, event.title
                    ),
                ),
                lotus_workflow::SUBJECT_TASK_ESCALATED => (
                    format!("Escalated to you: event {}", event.number),
                    format!(
                        "An overdue task of event {} ({}) was escalated to you.",
                        event.number, event.title
                    ),
                ),
                other => (
                    format!("{other}: event {}", event.number),
                    event.title.clone(),
                ),
            };
            let link = task_id.as_ref().map(|t| format!("task:{t}"));
            recipients
                .notify(w, assignee, event, (&title, &body), link.as_deref(), at)
                .await?;
        }
        Effect::Escalated { task_id, .. } => w.mark_task_overdue(task_id).await?,
    }
    Ok(())
}

/// Tells the plugins about a created or closed event (nothing when no one listens).
pub(crate) fn announce_event(platform: Option<&Announcer>, kind: &str, row: &EventRow, at: i64) {
    let Some(platform) = platform else {
        return;
    };
    let device = &row.source["device"];
    let device = match (device["productKey"].as_str(), device["deviceName"].as_str()) {
        (Some(pk), Some(dn)) => Some((pk.to_string(), dn.to_string())),
        _ => None,
    };
    let event = PlatformEvent {
        id: row.number.clone(),
        kind: kind.to_string(),
        event_type: row.type_code.clone(),
        severity: row.level.clamp(1, 4) as u8,
        device,
        fields: row.fields.clone(),
        at_ms: at,
        caused_by: PlatformEvent::cause_of(&row.source).or_else(|| {
            // An event a plugin raised through its `event` host interface.
            row.source["plugin"].as_str().map(|p| (p.to_string(), 1))
        }),
    };
    if platform.send(event).is_err() {
        tracing::warn!("platform events are no longer dispatched to plugins");
    }
}

fn action_comment(a: &Action) -> Option<String> {
    match a {
        Action::Approve { comment } | Action::Transfer { comment, .. } => comment.clone(),
        Action::Reject { comment } | Action::FeedBack { comment } => Some(comment.clone()),
    }
}

/// An open event as classification sees it.
pub(crate) fn open_event(e: &EventRow) -> OpenEvent {
    OpenEvent {
        id: e.id.to_string(),
        type_code: e.type_code.clone(),
        location: match (e.lat, e.lon) {
            (Some(lat), Some(lon)) => Some(GeoPoint { lat, lon }),
            _ => None,
        },
        region: e.region.clone(),
        created_ms: e.created_at,
        last_ms: e.last_at,
    }
}
