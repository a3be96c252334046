//! Disposal workflows: versioned definitions, one running instance per event (updated with
//! optimistic concurrency), and the tasks the instances hand to people.

use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use sqlx::AnyConnection;

use crate::error::{Result, StorageError};
use crate::events::EventWrites;
use crate::sql::{Sql, below_region_pattern, flag, insert_rows, json, to_json};
use crate::{Backend, Store, now_ms};

/// Workflow instance states.
pub const WORKFLOW_RUNNING: &str = "running";
pub const WORKFLOW_COMPLETED: &str = "completed";

/// Task states: waiting for its assignee, then how it ended.
pub const TASK_OPEN: &str = "open";
pub const TASK_APPROVED: &str = "approved";
pub const TASK_REJECTED: &str = "rejected";
pub const TASK_TRANSFERRED: &str = "transferred";
pub const TASK_CANCELLED: &str = "cancelled";

/// One version of a workflow definition.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowDefinitionRow {
    pub id: String,
    pub version: i64,
    /// The event type it disposes of.
    pub event_type: String,
    pub definition: Value,
    /// Whether new events start it; shared by all versions of the id.
    pub enabled: bool,
    pub created_by: String,
    pub created_at: i64,
}

/// The state of the workflow disposing of one event.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowInstanceRow {
    pub event_id: i64,
    pub definition_id: String,
    pub definition_version: i64,
    /// [`WORKFLOW_RUNNING`] or [`WORKFLOW_COMPLETED`].
    pub state: String,
    /// The runtime's state of the instance (current steps, variables, …).
    pub instance: Value,
    /// The earliest step deadline, when a step has one.
    pub next_deadline: Option<i64>,
    /// 1 at creation, bumped by every update; an update names the revision it read.
    pub revision: i64,
    pub updated_at: i64,
}

/// A task to create, open.
#[derive(Debug, Clone)]
pub struct NewTask<'a> {
    /// Chosen by the workflow runtime (e.g. the event number and a step suffix).
    pub id: &'a str,
    pub event_id: i64,
    /// `disposal` or `approval`.
    pub kind: &'a str,
    pub step_id: &'a str,
    pub step_name: &'a str,
    pub title: &'a str,
    /// `role` (with `assignee_role`, optionally confined to an org and region) or `user`
    /// (with `assignee_user`).
    pub assignee_kind: &'a str,
    pub assignee_role: Option<&'a str>,
    pub assignee_org: Option<&'a str>,
    /// `None` is the whole city.
    pub assignee_region: Option<&'a str>,
    pub assignee_user: Option<&'a str>,
    pub due_at: Option<i64>,
    pub at: i64,
}

/// A stored task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRow {
    pub id: String,
    pub event_id: i64,
    pub kind: String,
    pub step_id: String,
    pub step_name: String,
    pub title: String,
    pub assignee_kind: String,
    pub assignee_role: Option<String>,
    pub assignee_org: Option<String>,
    pub assignee_region: Option<String>,
    pub assignee_user: Option<String>,
    /// [`TASK_OPEN`], [`TASK_APPROVED`], [`TASK_REJECTED`], [`TASK_TRANSFERRED`] or
    /// [`TASK_CANCELLED`].
    pub state: String,
    pub overdue: bool,
    pub due_at: Option<i64>,
    pub created_at: i64,
    pub closed_at: Option<i64>,
    pub closed_by: Option<String>,
    pub comment: Option<String>,
}

/// Whose tasks to list: the user's own, and those of the user's roles within the user's
/// organisation and region.
#[derive(Debug, Clone)]
pub struct TaskAssigneeFilter<'a> {
    pub username: &'a str,
    pub roles: &'a [String],
    /// The user's organisation; a role task with an organisation is only for its members.
    pub org: &'a str,
    /// The user's region; role tasks in it or below it are the user's (`/` takes in all).
    pub region: &'a str,
    pub state: Option<&'a str>,
    pub limit: i64,
    pub offset: i64,
}

const DEFINITION_COLUMNS: &str =
    "id, version, event_type, definition, enabled, created_by, created_at";
const INSTANCE_COLUMNS: &str = "event_id, definition_id, definition_version, state, instance, \
     next_deadline, revision, updated_at";
const TASK_COLUMNS: &str = "id, event_id, kind, step_id, step_name, title, assignee_kind, \
     assignee_role, assignee_org, assignee_region, assignee_user, state, overdue, due_at, \
     created_at, closed_at, closed_by, comment";

/// Rows of the latest version of each definition id.
const LATEST_DEFINITIONS: &str = "version = (SELECT MAX(l.version) FROM workflow_definitions l \
     WHERE l.id = workflow_definitions.id)";

fn definition_row(r: &AnyRow) -> Result<WorkflowDefinitionRow> {
    Ok(WorkflowDefinitionRow {
        id: r.try_get("id")?,
        version: r.try_get("version")?,
        event_type: r.try_get("event_type")?,
        definition: json(r, "definition")?,
        enabled: flag(r, "enabled")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
    })
}

fn instance_row(r: &AnyRow) -> Result<WorkflowInstanceRow> {
    Ok(WorkflowInstanceRow {
        event_id: r.try_get("event_id")?,
        definition_id: r.try_get("definition_id")?,
        definition_version: r.try_get("definition_version")?,
        state: r.try_get("state")?,
        instance: json(r, "instance")?,
        next_deadline: r.try_get("next_deadline")?,
        revision: r.try_get("revision")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn task_row(r: &AnyRow) -> Result<TaskRow> {
    Ok(TaskRow {
        id: r.try_get("id")?,
        event_id: r.try_get("event_id")?,
        kind: r.try_get("kind")?,
        step_id: r.try_get("step_id")?,
        step_name: r.try_get("step_name")?,
        title: r.try_get("title")?,
        assignee_kind: r.try_get("assignee_kind")?,
        assignee_role: r.try_get("assignee_role")?,
        assignee_org: r.try_get("assignee_org")?,
        assignee_region: r.try_get("assignee_region")?,
        assignee_user: r.try_get("assignee_user")?,
        state: r.try_get("state")?,
        overdue: flag(r, "overdue")?,
        due_at: r.try_get("due_at")?,
        created_at: r.try_get("created_at")?,
        closed_at: r.try_get("closed_at")?,
        closed_by: r.try_get("closed_by")?,
        comment: r.try_get("comment")?,
    })
}

fn task_not_found(id: &str) -> StorageError {
    StorageError::NotFound(format!("task '{id}' not found"))
}

fn check_workflow_state(state: &str) -> Result<()> {
    if state == WORKFLOW_RUNNING || state == WORKFLOW_COMPLETED {
        Ok(())
    } else {
        Err(StorageError::Invalid(format!(
            "unknown workflow state '{state}': use running or completed"
        )))
    }
}

fn check_task_state(state: &str) -> Result<()> {
    if [
        TASK_OPEN,
        TASK_APPROVED,
        TASK_REJECTED,
        TASK_TRANSFERRED,
        TASK_CANCELLED,
    ]
    .contains(&state)
    {
        Ok(())
    } else {
        Err(StorageError::Invalid(format!(
            "unknown task state '{state}': use open, approved, rejected, transferred or cancelled"
        )))
    }
}

fn check_new_task(t: &NewTask<'_>) -> Result<()> {
    if t.kind != "disposal" && t.kind != "approval" {
        return Err(StorageError::Invalid(format!(
            "unknown task kind '{}': use disposal or approval",
            t.kind
        )));
    }
    match t.assignee_kind {
        "user" if t.assignee_user.is_some_and(|u| !u.is_empty()) => Ok(()),
        "role" if t.assignee_role.is_some_and(|r| !r.is_empty()) => Ok(()),
        "user" => Err(StorageError::Invalid(format!(
            "task '{}' is assigned to a user but names none: set assignee_user",
            t.id
        ))),
        "role" => Err(StorageError::Invalid(format!(
            "task '{}' is assigned to a role but names none: set assignee_role",
            t.id
        ))),
        other => Err(StorageError::Invalid(format!(
            "unknown task assignee kind '{other}': use role or user"
        ))),
    }
}

impl Store {
    /// Stores a new version of a workflow definition (1 for a new id) and returns it. The new
    /// version inherits whether the id is enabled; a new id starts enabled.
    pub async fn put_workflow_definition(
        &self,
        id: &str,
        event_type: &str,
        definition: &Value,
        created_by: &str,
    ) -> Result<i64> {
        let mut tx = self.write().begin().await?;
        let latest = sqlx::query(
            "SELECT version, enabled FROM workflow_definitions WHERE id = $1 \
             ORDER BY version DESC LIMIT 1",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let (version, enabled) = match latest {
            Some(r) => (r.try_get::<i64, _>("version")? + 1, flag(&r, "enabled")?),
            None => (1, true),
        };
        sqlx::query(
            "INSERT INTO workflow_definitions (id, version, event_type, definition, enabled, \
             created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(version)
        .bind(event_type)
        .bind(to_json(definition))
        .bind(i64::from(enabled))
        .bind(created_by)
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if StorageError::is_unique_violation(&e) {
                StorageError::Conflict(format!(
                    "workflow '{id}' was changed by someone else at the same time: reload it \
                     and save again"
                ))
            } else {
                e.into()
            }
        })?;
        tx.commit().await?;
        Ok(version)
    }

    /// The latest version of every workflow, by id.
    pub async fn latest_workflow_definitions(&self) -> Result<Vec<WorkflowDefinitionRow>> {
        sqlx::query(&format!(
            "SELECT {DEFINITION_COLUMNS} FROM workflow_definitions WHERE {LATEST_DEFINITIONS} \
             ORDER BY id"
        ))
        .fetch_all(self.read())
        .await?
        .iter()
        .map(definition_row)
        .collect()
    }

    /// One version of a workflow, or its latest with `None`.
    pub async fn workflow_definition(
        &self,
        id: &str,
        version: Option<i64>,
    ) -> Result<Option<WorkflowDefinitionRow>> {
        let row = match version {
            Some(v) => {
                sqlx::query(&format!(
                    "SELECT {DEFINITION_COLUMNS} FROM workflow_definitions \
                     WHERE id = $1 AND version = $2"
                ))
                .bind(id)
                .bind(v)
                .fetch_optional(self.read())
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {DEFINITION_COLUMNS} FROM workflow_definitions WHERE id = $1 \
                     ORDER BY version DESC LIMIT 1"
                ))
                .bind(id)
                .fetch_optional(self.read())
                .await?
            }
        };
        row.as_ref().map(definition_row).transpose()
    }

    /// Turns a workflow (all its versions) on or off for new events; running instances go on.
    /// `NotFound` for an unknown workflow.
    pub async fn set_workflow_enabled(&self, id: &str, enabled: bool) -> Result<()> {
        let done = sqlx::query("UPDATE workflow_definitions SET enabled = $1 WHERE id = $2")
            .bind(i64::from(enabled))
            .bind(id)
            .execute(self.write())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound(format!("workflow '{id}' not found")));
        }
        Ok(())
    }

    /// The latest versions of the enabled workflows for an event type, by id.
    pub async fn workflow_definitions_for(
        &self,
        event_type: &str,
    ) -> Result<Vec<WorkflowDefinitionRow>> {
        sqlx::query(&format!(
            "SELECT {DEFINITION_COLUMNS} FROM workflow_definitions WHERE {LATEST_DEFINITIONS} \
             AND event_type = $1 AND enabled = 1 ORDER BY id"
        ))
        .bind(event_type)
        .fetch_all(self.read())
        .await?
        .iter()
        .map(definition_row)
        .collect()
    }

    /// Starts the instance of an event, running, at revision 1. `Conflict` when the event has
    /// one, `NotFound` when the event does not exist.
    pub async fn create_workflow_instance(
        &self,
        event_id: i64,
        definition_id: &str,
        version: i64,
        instance: &Value,
        next_deadline: Option<i64>,
    ) -> Result<()> {
        let record = InstanceRecord::new(event_id, definition_id, version, instance, next_deadline);
        let mut conn = self.write().acquire().await?;
        insert_instances(&mut conn, self.backend(), &[record]).await
    }

    pub async fn workflow_instance(&self, event_id: i64) -> Result<Option<WorkflowInstanceRow>> {
        sqlx::query(&format!(
            "SELECT {INSTANCE_COLUMNS} FROM workflow_instances WHERE event_id = $1"
        ))
        .bind(event_id)
        .fetch_optional(self.read())
        .await?
        .as_ref()
        .map(instance_row)
        .transpose()
    }

    /// Replaces an instance's state if it is still at `expected_revision`; the new revision is
    /// `expected_revision + 1`. `Conflict` when another update came first (reload and decide
    /// again), `NotFound` when the event has no workflow.
    pub async fn update_workflow_instance(
        &self,
        event_id: i64,
        expected_revision: i64,
        state: &str,
        instance: &Value,
        next_deadline: Option<i64>,
    ) -> Result<()> {
        let mut conn = self.write().acquire().await?;
        update_workflow_instance(
            &mut conn,
            event_id,
            expected_revision,
            state,
            instance,
            next_deadline,
        )
        .await
    }

    /// Running instances whose next deadline has passed at `now`, the most overdue first.
    pub async fn due_workflow_instances(
        &self,
        now: i64,
        limit: i64,
    ) -> Result<Vec<WorkflowInstanceRow>> {
        sqlx::query(&format!(
            "SELECT {INSTANCE_COLUMNS} FROM workflow_instances WHERE state = $1 \
             AND next_deadline IS NOT NULL AND next_deadline <= $2 \
             ORDER BY next_deadline, event_id LIMIT $3"
        ))
        .bind(WORKFLOW_RUNNING)
        .bind(now)
        .bind(limit.max(0))
        .fetch_all(self.read())
        .await?
        .iter()
        .map(instance_row)
        .collect()
    }

    /// Creates an open task. `Conflict` when the id is taken, `NotFound` when the event does
    /// not exist, `Invalid` for an unknown kind or an assignee that names nobody.
    pub async fn create_task(&self, t: &NewTask<'_>) -> Result<()> {
        let record = TaskRecord::new(t)?;
        let mut conn = self.write().acquire().await?;
        insert_tasks(&mut conn, self.backend(), &[record]).await
    }

    /// Closes an open task as approved, rejected, transferred or cancelled. `NotFound` for an
    /// unknown task, `Conflict` when it is already closed (someone else decided first).
    pub async fn close_task(
        &self,
        id: &str,
        state: &str,
        by: Option<&str>,
        comment: Option<&str>,
        at: i64,
    ) -> Result<TaskRow> {
        let mut conn = self.write().acquire().await?;
        close_task(&mut conn, id, state, by, comment, at).await
    }

    /// Flags a task as past its due time. `NotFound` for an unknown task.
    pub async fn mark_task_overdue(&self, id: &str) -> Result<()> {
        let mut conn = self.write().acquire().await?;
        mark_task_overdue(&mut conn, id).await
    }

    pub async fn get_task(&self, id: &str) -> Result<Option<TaskRow>> {
        sqlx::query(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.read())
            .await?
            .as_ref()
            .map(task_row)
            .transpose()
    }

    /// An event's tasks, oldest first.
    pub async fn tasks_of_event(&self, event_id: i64) -> Result<Vec<TaskRow>> {
        sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE event_id = $1 ORDER BY created_at, id"
        ))
        .bind(event_id)
        .fetch_all(self.read())
        .await?
        .iter()
        .map(task_row)
        .collect()
    }

    /// One page of a user's tasks, newest first, and how many there are: those assigned to
    /// the user by name, and those assigned to one of the user's roles whose organisation is
    /// none or the user's and whose region (none meaning the whole city) is the user's region
    /// or below it.
    pub async fn list_tasks_for(&self, f: &TaskAssigneeFilter<'_>) -> Result<(Vec<TaskRow>, i64)> {
        if let Some(state) = f.state {
            check_task_state(state)?;
        }
        let build = |head: &str| {
            let mut sql = Sql::new(self.backend(), head);
            sql.push(" WHERE ((assignee_kind = 'user' AND assignee_user = ")
                .push_arg(f.username.to_string())
                .push(")");
            if !f.roles.is_empty() {
                sql.push(" OR (assignee_kind = 'role' AND assignee_role IN (");
                for (i, role) in f.roles.iter().enumerate() {
                    if i > 0 {
                        sql.push(", ");
                    }
                    sql.push_arg(role.clone());
                }
                sql.push(") AND (COALESCE(assignee_org, '') = '' OR assignee_org = ")
                    .push_arg(f.org.to_string())
                    .push(")");
                if f.region != "/" {
                    sql.push(" AND (COALESCE(assignee_region, '/') = ")
                        .push_arg(f.region.to_string())
                        .push(" OR assignee_region LIKE ")
                        .push_arg(below_region_pattern(f.region))
                        .push(" ESCAPE '\\')");
                }
                sql.push(")");
            }
            sql.push(")");
            if let Some(state) = f.state {
                sql.push(" AND state = ").push_arg(state.to_string());
            }
            sql
        };
        self.page(
            "tasks",
            TASK_COLUMNS,
            "created_at DESC, id DESC",
            (f.limit, f.offset),
            |head| Ok(build(head)),
            task_row,
        )
        .await
    }
}

/// A workflow instance to insert, running, at revision 1.
pub(crate) struct InstanceRecord {
    event_id: i64,
    definition_id: String,
    version: i64,
    instance: String,
    next_deadline: Option<i64>,
    at: i64,
}

impl InstanceRecord {
    fn new(
        event_id: i64,
        definition_id: &str,
        version: i64,
        instance: &Value,
        next_deadline: Option<i64>,
    ) -> Self {
        InstanceRecord {
            event_id,
            definition_id: definition_id.to_string(),
            version,
            instance: to_json(instance),
            next_deadline,
            at: now_ms(),
        }
    }
}

/// An open task to insert, checked.
pub(crate) struct TaskRecord {
    id: String,
    event_id: i64,
    kind: String,
    step_id: String,
    step_name: String,
    title: String,
    assignee_kind: String,
    assignee_role: Option<String>,
    assignee_org: Option<String>,
    assignee_region: Option<String>,
    assignee_user: Option<String>,
    due_at: Option<i64>,
    at: i64,
}

impl TaskRecord {
    fn new(t: &NewTask<'_>) -> Result<Self> {
        check_new_task(t)?;
        Ok(TaskRecord {
            id: t.id.to_string(),
            event_id: t.event_id,
            kind: t.kind.to_string(),
            step_id: t.step_id.to_string(),
            step_name: t.step_name.to_string(),
            title: t.title.to_string(),
            assignee_kind: t.assignee_kind.to_string(),
            assignee_role: t.assignee_role.map(str::to_string),
            assignee_org: t.assignee_org.map(str::to_string),
            assignee_region: t.assignee_region.map(str::to_string),
            assignee_user: t.assignee_user.map(str::to_string),
            due_at: t.due_at,
            at: t.at,
        })
    }
}

/// Inserts instances; `Conflict` when an event has one already, `NotFound` when an event does
/// not exist (named when there is one row, as a single creation has).
async fn insert_instances(
    conn: &mut AnyConnection,
    backend: Backend,
    rows: &[InstanceRecord],
) -> Result<()> {
    insert_rows(
        conn,
        backend,
        "INSERT INTO workflow_instances (event_id, definition_id, definition_version, state, \
         instance, next_deadline, revision, updated_at) VALUES",
        8,
        "",
        rows,
        |b, r| {
            b.bind(r.event_id)
                .bind(r.definition_id.as_str())
                .bind(r.version)
                .bind(WORKFLOW_RUNNING)
                .bind(r.instance.as_str())
                .bind(r.next_deadline)
                .bind(1i64)
                .bind(r.at);
        },
    )
    .await
    .map_err(|e| {
        let event = match rows {
            [one] => format!("event {}", one.event_id),
            _ => "an event of the batch".to_string(),
        };
        match e {
            StorageError::Database(e) if StorageError::is_unique_violation(&e) => {
                StorageError::Conflict(format!("{event} already has a workflow"))
            }
            StorageError::Database(e) if StorageError::is_foreign_key_violation(&e) => {
                StorageError::NotFound(format!("{event} not found"))
            }
            e => e,
        }
    })?;
    Ok(())
}

/// Inserts open tasks; `Conflict` when an id is taken, `NotFound` when an event does not exist
/// (both named when there is one row, as a single creation has).
async fn insert_tasks(
    conn: &mut AnyConnection,
    backend: Backend,
    rows: &[TaskRecord],
) -> Result<()> {
    insert_rows(
        conn,
        backend,
        "INSERT INTO tasks (id, event_id, kind, step_id, step_name, title, assignee_kind, \
         assignee_role, assignee_org, assignee_region, assignee_user, state, overdue, due_at, \
         created_at) VALUES",
        15,
        "",
        rows,
        |b, t| {
            b.bind(t.id.as_str())
                .bind(t.event_id)
                .bind(t.kind.as_str())
                .bind(t.step_id.as_str())
                .bind(t.step_name.as_str())
                .bind(t.title.as_str())
                .bind(t.assignee_kind.as_str())
                .bind(t.assignee_role.as_deref())
                .bind(t.assignee_org.as_deref())
                .bind(t.assignee_region.as_deref())
                .bind(t.assignee_user.as_deref())
                .bind(TASK_OPEN)
                .bind(0i64)
                .bind(t.due_at)
                .bind(t.at);
        },
    )
    .await
    .map_err(|e| match e {
        StorageError::Database(e) if StorageError::is_unique_violation(&e) => {
            StorageError::Conflict(match rows {
                [one] => format!("a task with id '{}' already exists", one.id),
                _ => "a task id of the batch already exists".to_string(),
            })
        }
        StorageError::Database(e) if StorageError::is_foreign_key_violation(&e) => {
            StorageError::NotFound(match rows {
                [one] => format!("event {} not found", one.event_id),
                _ => "an event of the batch's tasks was not found".to_string(),
            })
        }
        e => e,
    })?;
    Ok(())
}

async fn update_workflow_instance(
    conn: &mut AnyConnection,
    event_id: i64,
    expected_revision: i64,
    state: &str,
    instance: &Value,
    next_deadline: Option<i64>,
) -> Result<()> {
    check_workflow_state(state)?;
    let done = sqlx::query(
        "UPDATE workflow_instances SET state = $1, instance = $2, next_deadline = $3, \
         revision = revision + 1, updated_at = $4 WHERE event_id = $5 AND revision = $6",
    )
    .bind(state)
    .bind(to_json(instance))
    .bind(next_deadline)
    .bind(now_ms())
    .bind(event_id)
    .bind(expected_revision)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() > 0 {
        return Ok(());
    }
    let current: Option<i64> =
        sqlx::query_scalar("SELECT revision FROM workflow_instances WHERE event_id = $1")
            .bind(event_id)
            .fetch_optional(&mut *conn)
            .await?;
    Err(match current {
        Some(current) => StorageError::Conflict(format!(
            "the workflow of event {event_id} was changed by someone else (revision \
             {current}, expected {expected_revision}): reload it and try again"
        )),
        None => StorageError::NotFound(format!("event {event_id} has no workflow")),
    })
}

async fn close_task(
    conn: &mut AnyConnection,
    id: &str,
    state: &str,
    by: Option<&str>,
    comment: Option<&str>,
    at: i64,
) -> Result<TaskRow> {
    check_task_state(state)?;
    if state == TASK_OPEN {
        return Err(StorageError::Invalid(format!(
            "a task is closed as approved, rejected, transferred or cancelled, not as \
             '{state}'"
        )));
    }
    let row = sqlx::query(&format!(
        "UPDATE tasks SET state = $1, closed_by = $2, comment = $3, closed_at = $4 \
         WHERE id = $5 AND state = $6 RETURNING {TASK_COLUMNS}"
    ))
    .bind(state)
    .bind(by)
    .bind(comment)
    .bind(at)
    .bind(id)
    .bind(TASK_OPEN)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(r) = row {
        return task_row(&r);
    }
    let current: Option<String> = sqlx::query_scalar("SELECT state FROM tasks WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    Err(match current {
        Some(current) => StorageError::Conflict(format!(
            "task '{id}' is already {current}; only an open task can be closed"
        )),
        None => task_not_found(id),
    })
}

async fn mark_task_overdue(conn: &mut AnyConnection, id: &str) -> Result<()> {
    let done = sqlx::query("UPDATE tasks SET overdue = 1 WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    if done.rows_affected() == 0 {
        return Err(task_not_found(id));
    }
    Ok(())
}

impl EventWrites {
    /// Starts the workflow instance of an event written in this transaction (or before),
    /// running, at revision 1; inserted at commit, where `Conflict` and `NotFound` are as for
    /// [`Store::create_workflow_instance`].
    pub fn add_workflow_instance(
        &mut self,
        event_id: i64,
        definition_id: &str,
        version: i64,
        instance: &Value,
        next_deadline: Option<i64>,
    ) {
        self.instances.push(InstanceRecord::new(
            event_id,
            definition_id,
            version,
            instance,
            next_deadline,
        ));
    }

    /// Creates an open task, inserted at commit (`Invalid` at once for an unknown kind or an
    /// assignee that names nobody; `Conflict` and `NotFound` at commit).
    pub fn add_task(&mut self, t: &NewTask<'_>) -> Result<()> {
        self.tasks.push(TaskRecord::new(t)?);
        Ok(())
    }

    /// [`Store::update_workflow_instance`] in this transaction.
    pub async fn update_workflow_instance(
        &mut self,
        event_id: i64,
        expected_revision: i64,
        state: &str,
        instance: &Value,
        next_deadline: Option<i64>,
    ) -> Result<()> {
        self.flush_instances().await?;
        update_workflow_instance(
            self.conn(),
            event_id,
            expected_revision,
            state,
            instance,
            next_deadline,
        )
        .await
    }

    /// [`Store::close_task`] in this transaction (tasks added before included).
    pub async fn close_task(
        &mut self,
        id: &str,
        state: &str,
        by: Option<&str>,
        comment: Option<&str>,
        at: i64,
    ) -> Result<TaskRow> {
        self.flush_tasks().await?;
        close_task(self.conn(), id, state, by, comment, at).await
    }

    /// [`Store::mark_task_overdue`] in this transaction (tasks added before included).
    pub async fn mark_task_overdue(&mut self, id: &str) -> Result<()> {
        self.flush_tasks().await?;
        mark_task_overdue(self.conn(), id).await
    }

    pub(crate) async fn flush_instances(&mut self) -> Result<()> {
        let rows = std::mem::take(&mut self.instances);
        let backend = self.backend;
        insert_instances(self.conn(), backend, &rows).await
    }

    pub(crate) async fn flush_tasks(&mut self) -> Result<()> {
        let rows = std::mem::take(&mut self.tasks);
        let backend = self.backend;
        insert_tasks(self.conn(), backend, &rows).await
    }
}
