//! Disposal tasks over HTTP: the caller's own tasks, and acting on one (approve, reject,
//! transfer, feed back).
//!
//! A task is the policy's `task.read`/`task.write` on a resource that names its assignee and,
//! for role tasks, its region: holding the role in another district is not enough to act.

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use lotus_storage::{TaskAssigneeFilter, TaskRow};
use lotus_workflow::{Action, ResolvedAssignee};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::ApiState;
use crate::auth::Authenticated;
use crate::events::{center_error, operations, stored};
use crate::problem::{ApiError, ApiResult, Json, Path, Query};
use crate::products::{PageQuery, Paged};

/// Who a task is for.
#[derive(Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum TaskAssignee {
    /// One user.
    User { username: String },
    /// Whoever holds `role` (in `org`, if given) for `region` or above it.
    Role {
        role: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        org: Option<String>,
        /// None is the whole city.
        #[serde(skip_serializing_if = "Option::is_none")]
        region: Option<String>,
    },
}

/// A disposal task.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub id: String,
    pub event_id: i64,
    /// disposal or approval.
    pub kind: String,
    pub step_id: String,
    pub step_name: String,
    pub title: String,
    pub assignee: TaskAssignee,
    /// open, approved, rejected, transferred or cancelled.
    pub state: String,
    /// Its deadline has passed.
    pub overdue: bool,
    pub due_at: Option<i64>,
    pub created_at: i64,
    pub closed_at: Option<i64>,
    pub closed_by: Option<String>,
    pub comment: Option<String>,
}

impl From<TaskRow> for Task {
    fn from(t: TaskRow) -> Self {
        let assignee = match t.assignee_user {
            Some(username) if t.assignee_kind == "user" => TaskAssignee::User { username },
            _ => TaskAssignee::Role {
                role: t.assignee_role.unwrap_or_default(),
                org: t.assignee_org,
                region: t.assignee_region,
            },
        };
        Task {
            id: t.id,
            event_id: t.event_id,
            kind: t.kind,
            step_id: t.step_id,
            step_name: t.step_name,
            title: t.title,
            assignee,
            state: t.state,
            overdue: t.overdue,
            due_at: t.due_at,
            created_at: t.created_at,
            closed_at: t.closed_at,
            closed_by: t.closed_by,
            comment: t.comment,
        }
    }
}

/// A task as the policy sees it: its organisation (none unless the role task names one), its
/// region (role tasks only) and its assignee.
pub fn task_resource(t: &TaskRow) -> Value {
    let mut r = json!({
        "kind": "task",
        "id": t.id,
        "org": t.assignee_org.clone().unwrap_or_default(),
    });
    if t.assignee_kind == "user" {
        r["assignee"] = json!({"user": t.assignee_user});
    } else {
        r["assignee"] = json!({"role": t.assignee_role});
        if let Some(region) = &t.assignee_region {
            r["region"] = json!(region);
        }
    }
    r
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct TaskQuery {
    /// open, approved, rejected, transferred or cancelled; all when absent.
    pub state: Option<String>,
    pub page: Option<i64>,
    pub page_size: Option<i64>,
}

const TASK_STATES: [&str; 5] = ["open", "approved", "rejected", "transferred", "cancelled"];

/// Your tasks, the newest first: those assigned to you by name, and those assigned to a role
/// you hold in your organisation and region (or below it).
#[utoipa::path(get, path = "/api/v1/tasks", tag = "tasks", security(("bearer" = [])),
    params(TaskQuery), responses((status = 200, body = Paged<Task>)))]
pub async fn list_tasks(
    State(state): State<ApiState>,
    user: Authenticated,
    Query(q): Query<TaskQuery>,
) -> ApiResult<Json<Paged<Task>>> {
    let ops = operations(&state)?;
    // The collection resource has no id: "my tasks", whoever asks.
    crate::authz::check(&state, &user, "task.read", json!({"kind": "task"}))?;
    if let Some(s) = &q.state
        && !TASK_STATES.contains(&s.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "state must be one of {}",
            TASK_STATES.join(", ")
        )));
    }
    let (page, number, size) = PageQuery {
        page: q.page,
        page_size: q.page_size,
    }
    .page()?;
    let me = &user.user;
    let (rows, total) = ops
        .store
        .list_tasks_for(&TaskAssigneeFilter {
            username: &me.username,
            roles: &me.roles,
            org: &me.scope.org,
            region: &me.scope.region,
            state: q.state.as_deref(),
            limit: page.limit,
            offset: page.offset,
        })
        .await
        .map_err(stored)?;
    let items = rows
        .into_iter()
        .filter(|t| crate::authz::allows(&state, &user, "task.read", task_resource(t)))
        .map(Task::from)
        .collect();
    Ok(Json(Paged {
        items,
        total,
        page: number,
        page_size: size,
    }))
}

async fn task_or_404(state: &ApiState, id: &str) -> ApiResult<TaskRow> {
    operations(state)?
        .store
        .get_task(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("task `{id}` not found")))
}

/// A task.
#[utoipa::path(get, path = "/api/v1/tasks/{id}", tag = "tasks", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Task), (status = 403, body = crate::problem::Problem),
        (status = 404, body = crate::problem::Problem)))]
pub async fn get_task(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Json<Task>> {
    let task = task_or_404(&state, &id).await?;
    crate::authz::check(&state, &user, "task.read", task_resource(&task))?;
    Ok(Json(task.into()))
}

/// What to do with a task.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskAction {
    /// approve, reject, transfer or feedback.
    pub action: String,
    /// A remark; required for reject (why) and feedback (the progress report).
    pub comment: Option<String>,
    /// For transfer: `{kind: "user", username}` or `{kind: "role", role, region, org?}`.
    #[schema(value_type = Option<Object>)]
    pub to: Option<ResolvedAssignee>,
}

impl TaskAction {
    fn into_action(self) -> ApiResult<Action> {
        let comment = self.comment.filter(|c| !c.trim().is_empty());
        let required =
            |what: &str| ApiError::unprocessable(format!("comment: {what} needs a comment"));
        if self.to.is_some() && self.action != "transfer" {
            return Err(ApiError::unprocessable(format!(
                "to: only a transfer names a new assignee, not {}",
                self.action
            )));
        }
        Ok(match self.action.as_str() {
            "approve" => Action::Approve { comment },
            "reject" => Action::Reject {
                comment: comment.ok_or_else(|| required("a rejection (the reason)"))?,
            },
            "feedback" => Action::FeedBack {
                comment: comment.ok_or_else(|| required("feedback (the progress report)"))?,
            },
            "transfer" => Action::Transfer {
                to: self.to.ok_or_else(|| {
                    ApiError::unprocessable(
                        "to: a transfer names the new assignee, {\"kind\": \"user\", \"username\": …} \
                         or {\"kind\": \"role\", \"role\": …, \"region\": …}",
                    )
                })?,
                comment,
            },
            other => {
                return Err(ApiError::unprocessable(format!(
                    "action `{other}`: use approve, reject, transfer or feedback"
                )));
            }
        })
    }
}

/// Act on a task assigned to you (or to a role you hold for its region): approve it, reject
/// it (with the reason), transfer it, or report progress. 409 when someone else decided
/// first: reload the task.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/actions", tag = "tasks", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = TaskAction,
    responses((status = 200, body = Task), (status = 403, body = crate::problem::Problem),
        (status = 404, body = crate::problem::Problem), (status = 409, body = crate::problem::Problem),
        (status = 422, body = crate::problem::Problem)))]
pub async fn act(
    State(state): State<ApiState>,
    user: Authenticated,
    Path(id): Path<String>,
    Json(req): Json<TaskAction>,
) -> ApiResult<Json<Task>> {
    let ops = operations(&state)?;
    let task = task_or_404(&state, &id).await?;
    crate::authz::check(&state, &user, "task.write", task_resource(&task))?;
    let verb = req.action.clone();
    let action = req.into_action()?;
    let row = ops
        .center
        .act(&id, &user.user.username, action, lotus_device::now_ms())
        .await
        .map_err(center_error)?;
    tracing::info!(task = %id, action = %verb, by = %user.user.username, "task acted on");
    Ok(Json(row.into()))
}

pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/tasks", get(list_tasks))
        .route("/api/v1/tasks/{id}", get(get_task))
        .route("/api/v1/tasks/{id}/actions", post(act))
}

#[derive(OpenApi)]
#[openapi(paths(list_tasks, get_task, act))]
pub(crate) struct TasksDoc;

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: &str) -> TaskRow {
        TaskRow {
            id: "E1-t1".into(),
            event_id: 1,
            kind: "disposal".into(),
            step_id: "dispatch".into(),
            step_name: "Dispatch".into(),
            title: "Dispatch — E1".into(),
            assignee_kind: kind.into(),
            assignee_role: (kind == "role").then(|| "dispatcher".into()),
            assignee_org: None,
            assignee_region: (kind == "role").then(|| "/hz/xihu".into()),
            assignee_user: (kind == "user").then(|| "chen".into()),
            state: "open".into(),
            overdue: false,
            due_at: None,
            created_at: 1,
            closed_at: None,
            closed_by: None,
            comment: None,
        }
    }

    #[test]
    fn resources_name_the_assignee() {
        let r = task_resource(&row("role"));
        assert_eq!(r["assignee"], json!({"role": "dispatcher"}));
        assert_eq!(r["region"], "/hz/xihu");
        assert_eq!(r["org"], "");
        let u = task_resource(&row("user"));
        assert_eq!(u["assignee"], json!({"user": "chen"}));
        assert!(
            u.get("region").is_none(),
            "a user's task has no region: {u}"
        );
    }

    #[test]
    fn actions_need_what_they_need() {
        let act = |v: Value| {
            serde_json::from_value::<TaskAction>(v)
                .unwrap()
                .into_action()
        };
        assert!(matches!(
            act(json!({"action": "approve"})),
            Ok(Action::Approve { comment: None })
        ));
        assert_eq!(act(json!({"action": "reject"})).unwrap_err().status, 422);
        assert_eq!(
            act(json!({"action": "feedback", "comment": " "}))
                .unwrap_err()
                .status,
            422
        );
        assert_eq!(act(json!({"action": "transfer"})).unwrap_err().status, 422);
        assert_eq!(act(json!({"action": "escalate"})).unwrap_err().status, 422);
        let t =
            act(json!({"action": "transfer", "to": {"kind": "user", "username": "li"}})).unwrap();
        assert!(matches!(
            t,
            Action::Transfer {
                to: ResolvedAssignee::User { .. },
                ..
            }
        ));
        let to_role = act(json!({"action": "transfer",
            "to": {"kind": "role", "role": "patrol", "region": "/hz/xihu"}}));
        assert!(to_role.is_ok());
    }
}
